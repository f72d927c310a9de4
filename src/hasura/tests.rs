//! The wire format end to end: request bodies in, commands or errors out;
//! records in, the JSON a Hasura client reads out.

use serde_json::{Value, json};

use super::json::json_depth;
use super::render::json_or_text;
use super::render::whole::{events_answer, invocations_answer};
use super::time::parse_time;
use super::*;
use crate::log::Loc;
use crate::projection::{EventView, InvocationRef, Order, SortBy, SortColumn, Status};
use crate::record::{
    Backoff, EventCreated, EventId, HeaderConf, HeaderSource, Invocation, InvocationResponse, Record,
    RetryConf, Seconds, UnixMicros,
};
use crate::webhook::webhook_body;

const HOOK: &str = "http://127.0.0.1:9/hook";

fn parse(body: &str) -> Result<Command, ApiError> {
    parse_request(body.as_bytes(), Endpoint::Metadata)
}

fn create_body(args: Value) -> String {
    json!({ "type": "create_scheduled_event", "args": args }).to_string()
}

fn minimal_args() -> Value {
    json!({ "webhook": HOOK, "schedule_at": "2020-01-01T15:46:00Z" })
}

/// `minimal_args()` with `key` set to `value`.
fn args_with(key: &str, value: Value) -> Value {
    let mut args = minimal_args();
    args[key] = value;
    args
}

fn create_ok(args: Value) -> NewEvent {
    match parse(&create_body(args)) {
        Ok(Command::CreateScheduledEvent(event)) => event,
        other => panic!("expected a create command, got {other:?}"),
    }
}

#[track_caller]
fn assert_err(result: Result<Command, ApiError>, status: u16, code: &str, path: &str) {
    match result {
        Err(e) => {
            assert_eq!(
                (e.status, e.code.as_str(), e.path.as_str()),
                (status, code, path),
                "error was: {e}"
            );
            assert!(!e.error.is_empty());
        }
        Ok(cmd) => panic!("expected {code} at {path}, got {cmd:?}"),
    }
}

#[track_caller]
fn assert_create_err(args: Value, code: &str, path: &str) {
    assert_err(parse(&create_body(args)), 400, code, path);
}

fn utc(rfc3339: &str) -> UnixMicros {
    UnixMicros::from_timestamp(rfc3339.parse::<jiff::Timestamp>().unwrap())
}

// --- envelope -----------------------------------------------------------

#[test]
fn malformed_json_and_non_objects_fail_at_the_root() {
    // Not JSON (or not UTF-8): Hasura's `invalid-json`.
    for body in ["", "{", "{\"type\":", "nul", "{} x"] {
        assert_err(parse(body), 400, "invalid-json", "$");
    }
    assert_err(
        parse_request(b"{\"type\":\"\xff\"}", Endpoint::Query),
        400,
        "invalid-json",
        "$",
    );
    // JSON, but not a request object.
    for body in [
        "[]",
        "\"x\"",
        "null",
        "3",
    ] {
        assert_err(parse(body), 400, "parse-failed", "$");
    }
}

#[test]
fn envelope_keys() {
    assert_err(parse(r#"{"args":{}}"#), 400, "parse-failed", "$.type");
    assert_err(
        parse(r#"{"type":7,"args":{}}"#),
        400,
        "parse-failed",
        "$.type",
    );
    assert_err(
        parse(r#"{"type":"get_scheduled_events","args":{},"source":"default"}"#),
        400,
        "parse-failed",
        "$.source",
    );
    assert_err(
        parse(r#"{"type":"get_scheduled_events","args":{},"args":{}}"#),
        400,
        "parse-failed",
        "$.args",
    );
    // Odd keys are named in Hasura's bracket form.
    assert_err(
        parse(r#"{"type":"get_scheduled_events","a b":1}"#),
        400,
        "parse-failed",
        "$['a b']",
    );
    // version and resource_version are accepted and ignored.
    assert!(matches!(
        parse(r#"{"type":"get_scheduled_events","args":{},"version":2,"resource_version":17}"#),
        Ok(Command::GetScheduledEvents { .. })
    ));
    // create and delete need args.
    assert_err(
        parse(r#"{"type":"create_scheduled_event"}"#),
        400,
        "parse-failed",
        "$.args",
    );
    assert_err(
        parse(r#"{"type":"create_scheduled_event","args":[]}"#),
        400,
        "parse-failed",
        "$.args",
    );
}

#[test]
fn unknown_command() {
    let e = parse(r#"{"type":"frobnicate","args":{}}"#).unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str(), e.path.as_str()),
        (400, "parse-failed", "$")
    );
    assert_eq!(e.error, r#"unknown metadata command "frobnicate""#);
}

// --- create_scheduled_event ---------------------------------------------

#[test]
fn create_minimal_takes_hasura_defaults() {
    let event = create_ok(minimal_args());
    assert_eq!(
        event,
        NewEvent {
            webhook: HOOK.into(),
            schedule_at: utc("2020-01-01T15:46:00Z"),
            payload: "null".into(),
            headers: vec![],
            retry_conf: RetryConf::default(),
            comment: None,
        }
    );
}

#[test]
fn create_full_and_into_record() {
    let body = r#"{"type":"create_scheduled_event","args":{
        "webhook":"https://send-email.com","schedule_at":"2022-06-18T18:45:00Z",
        "payload":{"email":"bob@ross.com"},
        "headers":[{"name":"key","value":"value"},{"name":"X-Secret","value_from_env":"SECRET"}],
        "retry_conf":{"num_retries":3,"timeout_seconds":120,"tolerance_seconds":21675,"retry_interval_seconds":12},
        "comment":"sample scheduled event comment"}}"#;
    let Ok(Command::CreateScheduledEvent(event)) = parse(body) else {
        panic!("expected a create command");
    };
    let id = EventId::from_u128(42);
    let record = event.into_record(id, UnixMicros(5));
    assert_eq!(
        record,
        EventCreated {
            event_id: id,
            webhook: "https://send-email.com".into(),
            schedule_at: utc("2022-06-18T18:45:00Z"),
            payload: r#"{"email":"bob@ross.com"}"#.into(),
            headers: vec![
                HeaderConf {
                    name: "key".into(),
                    value: HeaderSource::Value("value".into())
                },
                HeaderConf {
                    name: "X-Secret".into(),
                    value: HeaderSource::FromEnv("SECRET".into())
                },
            ],
            retry_conf: RetryConf {
                num_retries: 3,
                retry_interval_seconds: Seconds::whole(12),
                timeout_seconds: Seconds::whole(120),
                tolerance_seconds: Seconds::whole(21675),
                ..RetryConf::default()
            },
            comment: Some("sample scheduled event comment".into()),
            created_at: UnixMicros(5),
        }
    );
}

#[test]
fn create_missing_and_mistyped_args() {
    assert_create_err(
        json!({ "schedule_at": "2020-01-01T15:46Z" }),
        "parse-failed",
        "$.args.webhook",
    );
    assert_create_err(
        json!({ "webhook": HOOK }),
        "parse-failed",
        "$.args.schedule_at",
    );
    assert_create_err(
        args_with("webhook", json!(null)),
        "parse-failed",
        "$.args.webhook",
    );
    assert_create_err(
        args_with("webhook", json!(5)),
        "parse-failed",
        "$.args.webhook",
    );
    assert_create_err(
        args_with("schedule_at", json!(1577893560)),
        "parse-failed",
        "$.args.schedule_at",
    );
    assert_create_err(
        args_with("comment", json!(5)),
        "parse-failed",
        "$.args.comment",
    );
    assert_create_err(
        args_with("headers", json!({})),
        "parse-failed",
        "$.args.headers",
    );
    assert_create_err(
        args_with("retry_conf", json!([])),
        "parse-failed",
        "$.args.retry_conf",
    );
    // null means absent for optional arguments
    let event = create_ok(args_with("comment", json!(null)));
    assert_eq!(event.comment, None);
    assert_eq!(create_ok(args_with("headers", json!(null))).headers, vec![]);
    assert_eq!(
        create_ok(args_with("retry_conf", json!(null))).retry_conf,
        RetryConf::default()
    );
}

#[test]
fn unknown_arg_is_named() {
    let e = parse(&create_body(args_with(
        "retry_config",
        json!({"num_retries": 1}),
    )))
    .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str(), e.path.as_str()),
        (400, "parse-failed", "$.args.retry_config")
    );
    assert!(e.error.contains("retry_config"), "{}", e.error);
    assert!(e.error.contains("retry_conf"), "{}", e.error);
}

#[test]
fn duplicate_arg_is_refused() {
    let body = r#"{"type":"create_scheduled_event","args":{"webhook":"http://a/","schedule_at":"2020-01-01T15:46Z","webhook":"http://b/"}}"#;
    assert_err(parse(body), 400, "parse-failed", "$.args.webhook");
}

#[test]
fn transforms_are_not_supported() {
    assert_create_err(
        args_with("request_transform", json!({"method": "PUT"})),
        "not-supported",
        "$.args.request_transform",
    );
    assert_create_err(
        args_with("response_transform", json!({})),
        "not-supported",
        "$.args.response_transform",
    );
    // `null` is absent, as Hasura reads it.
    let mut args = minimal_args();
    args["request_transform"] = Value::Null;
    args["response_transform"] = Value::Null;
    let body = json!({"type": "create_scheduled_event", "args": args}).to_string();
    assert!(matches!(parse(&body), Ok(Command::CreateScheduledEvent(_))));
}

// --- schedule_at --------------------------------------------------------

#[test]
fn every_hasura_time_form_is_accepted() {
    let cases = [
        ("2020-01-01T15:46Z", "2020-01-01T15:46:00Z"),
        ("2020-01-01T15:47:00+0000", "2020-01-01T15:47:00Z"),
        ("2020-01-01T15:48:00-05:30", "2020-01-01T21:18:00Z"),
        ("2020-01-01 15:44Z", "2020-01-01T15:44:00Z"),
        ("2020-01-01T15:45:00.123456Z", "2020-01-01T15:45:00.123456Z"),
        ("2020-01-01T15:45:00+05:30", "2020-01-01T10:15:00Z"),
        // and a few neighbours of those
        ("2020-01-01T15:45:00+05", "2020-01-01T10:45:00Z"),
        ("2020-01-01 15:45:00+05:30", "2020-01-01T10:15:00Z"),
        ("2019-12-31T23:30:00-01:00", "2020-01-01T00:30:00Z"),
        ("2020-02-29T00:00:00.5Z", "2020-02-29T00:00:00.5Z"),
        // Up to 12 fraction digits, cut to microseconds.
        (
            "2020-01-01T15:45:00.123456789012Z",
            "2020-01-01T15:45:00.123456Z",
        ),
        // Offsets up to ±14:00.
        ("2020-01-01T14:00:00+14:00", "2020-01-01T00:00:00Z"),
        ("2020-01-01T00:00:00-1400", "2020-01-01T14:00:00Z"),
        // A leap second rolls to the next second.
        ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),
        ("2016-12-31T23:59:60.5Z", "2017-01-01T00:00:00.5Z"),
    ];
    for (text, expected) in cases {
        let event = create_ok(args_with("schedule_at", json!(text)));
        assert_eq!(event.schedule_at, utc(expected), "{text}");
    }
    // Spelled out once, independent of jiff's parser:
    // 2020-01-01T00:00:00Z is 1577836800 s; 15:46 adds 56760 s.
    assert_eq!(
        parse_time("2020-01-01T15:46Z"),
        Some(UnixMicros(1_577_893_560_000_000))
    );
    assert_eq!(
        parse_time("2020-01-01T15:45:00.123456Z"),
        Some(UnixMicros(1_577_893_500_123_456))
    );
}

#[test]
fn bad_times_are_parse_failed() {
    for text in [
        "",
        "tomorrow",
        "2020-01-01",
        "2020-01-01T",
        "2020-1-01T15:45Z",
        "2020-01-01T15Z",
        "2020-01-01T15:45:Z",
        "2020-01-01T15:45:00.Z",
        "2020-01-01T15:45:00 ",
        "2020-01-01T15:45:00  Z",
        "2020-01-01T15:45:00+0",
        "2020-01-01T15:45:00+05:3",
        "2020-01-01T15:45:00+24:00",
        "2020-01-01T15:45:00+05:60",
        "2020-01-01T15:45:00Zjunk",
        "2020-02-30T00:00Z",
        "2020-01-01T25:00Z",
        "2020-01-01T15:61Z",
        "2020-01-01T15:45:00[UTC]",
        // No zone, a space before the zone, lower-case `t`/`z`, offsets
        // past ±14:00, 13 fraction digits: Hasura refuses them all.
        "2020-01-01T15:45:00",
        "2020-01-01T15:45",
        "2020-01-01 15:44 Z",
        "2020-01-01T15:45 Z",
        "2020-01-01T15:45:00 +05:30",
        "2020-01-01t15:45:00Z",
        "2020-01-01T15:45:00z",
        "2020-01-01T15:45:00+14:01",
        "2020-01-01T15:45:00-15:00",
        "2020-01-01T15:45:00+1401",
        "2020-01-01T15:45:00.1234567890123Z",
        "2020-01-01T15:45:61Z",
        "20200101T154500Z",
        "2020-01-01T15:45:00+05:30:00",
        "٢٠٢٠-01-01T15:45Z",
    ] {
        assert_create_err(
            args_with("schedule_at", json!(text)),
            "parse-failed",
            "$.args.schedule_at",
        );
    }
}

// --- payload ------------------------------------------------------------

#[test]
fn payload_raw_text_is_kept_byte_for_byte() {
    for payload in [
        r#"{"b":1,"a":1.50}"#,
        r#"{ "b" : 1 ,  "a":[1e2, -0.0, "\u00e9"] }"#,
        r#""just a string""#,
        "12345678901234567890123",
        "[]",
        "false",
    ] {
        let body = format!(
            r#"{{"type":"create_scheduled_event","args":{{"webhook":"{HOOK}","schedule_at":"2020-01-01T15:46Z","payload":{payload}}}}}"#
        );
        let Ok(Command::CreateScheduledEvent(event)) = parse(&body) else {
            panic!("expected a create command for {payload}");
        };
        assert_eq!(event.payload, payload);
    }
    assert_eq!(create_ok(args_with("payload", json!(null))).payload, "null");
}

#[test]
fn overly_deep_payload_is_refused() {
    let ok = format!(
        "{}{}",
        "[".repeat(MAX_PAYLOAD_DEPTH),
        "]".repeat(MAX_PAYLOAD_DEPTH)
    );
    let deep = format!(
        "{}{}",
        "[".repeat(MAX_PAYLOAD_DEPTH + 1),
        "]".repeat(MAX_PAYLOAD_DEPTH + 1)
    );
    let body = |p: &str| {
        format!(
            r#"{{"type":"create_scheduled_event","args":{{"webhook":"{HOOK}","schedule_at":"2020-01-01T15:46Z","payload":{p}}}}}"#
        )
    };
    let Ok(Command::CreateScheduledEvent(event)) = parse(&body(&ok)) else {
        panic!("expected a create command");
    };
    // every accepted payload can be shown
    assert!(json_or_text(&event.payload).is_array());
    assert_err(
        parse(&body(&deep)),
        400,
        "validation-failed",
        "$.args.payload",
    );
    // brackets inside strings do not count
    assert_eq!(json_depth(r#"["[[[\"[", {"a": "}}"}]"#), 2);
}

// --- webhook ------------------------------------------------------------

#[test]
fn webhook_must_be_http_or_https_with_a_host() {
    for good in [
        "http://example.com",
        "https://example.com:8443/a/b?c=d#e",
        "http://127.0.0.1:9/hook",
        "http://[::1]:8080/",
    ] {
        assert_eq!(create_ok(args_with("webhook", json!(good))).webhook, good);
    }
    for bad in [
        "",
        "   ",
        "ftp://example.com/x",
        "file:///etc/passwd",
        "mailto:a@example.com",
        "example.com/hook",
        "/relative",
        "http://",
        "not a url",
        "http://exa mple.com/",
    ] {
        assert_create_err(
            args_with("webhook", json!(bad)),
            "validation-failed",
            "$.args.webhook",
        );
    }
}

#[test]
fn webhook_placeholders() {
    for good in [
        "{{BASE}}/x",
        "{{WEBHOOK_BASE}}/path",
        "{{WHOLE_URL}}",
        "http://{{HOST}}/x",
        "https://{{HOST}}:{{PORT}}/x",
        "http://host:{{PORT}}/x",
        "http://example.{{TLD}}/",
        "http://host/{{A}}{{B_2}}?k={{_C}}",
    ] {
        assert_eq!(
            create_ok(args_with("webhook", json!(good))).webhook,
            good,
            "{good}"
        );
    }
    for bad in [
        "http://host/{{BAD",
        "http://host/{{1BAD}}",
        "http://host/{{}}",
        "http://host/{{ SPACED }}",
        "{{BASE}/x",
        "{{BASE-URL}}/x",
        "ftp://{{HOST}}/x",
        "{{",
    ] {
        assert_create_err(
            args_with("webhook", json!(bad)),
            "validation-failed",
            "$.args.webhook",
        );
    }
}

// --- headers ------------------------------------------------------------

#[test]
fn header_errors_have_element_paths() {
    let cases = [
        (
            json!([{"name": "ok", "value": "v"}, {"name": "bad name", "value": "v"}]),
            "validation-failed",
            "$.args.headers[1].name",
        ),
        (
            json!([{"name": "", "value": "v"}]),
            "validation-failed",
            "$.args.headers[0].name",
        ),
        (
            json!([{"name": "x:y", "value": "v"}]),
            "validation-failed",
            "$.args.headers[0].name",
        ),
        (
            json!([{"name": "k", "value": "a\r\nInjected: 1"}]),
            "validation-failed",
            "$.args.headers[0].value",
        ),
        (
            json!([{"name": "k", "value": "a\u{0}b"}]),
            "validation-failed",
            "$.args.headers[0].value",
        ),
        (
            json!([{"name": "k", "value_from_env": ""}]),
            "validation-failed",
            "$.args.headers[0].value_from_env",
        ),
        (
            json!([{"name": "k", "value_from_env": "A=B"}]),
            "validation-failed",
            "$.args.headers[0].value_from_env",
        ),
        (
            json!([{"name": "k", "value": "v", "value_from_env": "E"}]),
            "parse-failed",
            "$.args.headers[0]",
        ),
        (
            json!([{"name": "k"}]),
            "parse-failed",
            "$.args.headers[0].value",
        ),
        (
            json!([{"value": "v"}]),
            "parse-failed",
            "$.args.headers[0].name",
        ),
        (
            json!([{"name": "k", "value": 5}]),
            "parse-failed",
            "$.args.headers[0].value",
        ),
        (
            json!([{"name": "k", "value": "v", "secret": true}]),
            "parse-failed",
            "$.args.headers[0].secret",
        ),
        (json!(["k: v"]), "parse-failed", "$.args.headers[0]"),
    ];
    for (headers, code, path) in cases {
        assert_create_err(args_with("headers", headers), code, path);
    }
}

#[test]
fn header_values_may_be_any_visible_text() {
    let event = create_ok(args_with(
        "headers",
        json!([{"name": "Authorization", "value": "Bearer abc=="}, {"name": "x-note", "value": "café\tok"}]),
    ));
    assert_eq!(event.headers.len(), 2);
    assert_eq!(event.headers[0].name, "Authorization");
}

// --- retry_conf ---------------------------------------------------------

#[test]
fn retry_conf_values() {
    let spans = ["retry_interval_seconds", "timeout_seconds", "tolerance_seconds"];
    for field in std::iter::once("num_retries").chain(spans) {
        let path = format!("$.args.retry_conf.{field}");
        for value in [json!(-1), json!(-1.0), json!(-0.5), json!("3"), json!(true), json!([1])] {
            // Hasura: a negative value does not parse, nor a non-number.
            assert_create_err(
                args_with("retry_conf", json!({ field: value })),
                "parse-failed",
                &path,
            );
        }
    }
    // A count of retries is an integer that fits.
    let path = "$.args.retry_conf.num_retries";
    for (value, code) in [
        (json!(1.5), "parse-failed"),
        (json!(1e30), "validation-failed"),
        (json!(4_294_967_296u64), "validation-failed"),
    ] {
        assert_create_err(args_with("retry_conf", json!({ "num_retries": value })), code, path);
    }
    // A span is any size; past what 64 bits of microseconds hold it saturates.
    for field in spans {
        for value in [json!(1.5), json!(4_294_967_296u64)] {
            create_ok(args_with("retry_conf", json!({ field: value })));
        }
        let conf = create_ok(args_with("retry_conf", json!({ field: 1e30 }))).retry_conf;
        let span = match field {
            "retry_interval_seconds" => conf.retry_interval_seconds,
            "timeout_seconds" => conf.timeout_seconds,
            _ => conf.tolerance_seconds,
        };
        assert_eq!(span, Seconds::from_micros(u64::MAX), "{field}");
    }
    // 0 is allowed for every field, as in Hasura.
    for field in [
        "num_retries",
        "retry_interval_seconds",
        "timeout_seconds",
        "tolerance_seconds",
    ] {
        create_ok(args_with("retry_conf", json!({ field: 0 })));
    }
    assert_create_err(
        args_with("retry_conf", json!({"num_retry": 1})),
        "parse-failed",
        "$.args.retry_conf.num_retry",
    );
}

#[test]
fn retry_conf_partial_keeps_defaults() {
    let conf = create_ok(args_with(
        "retry_conf",
        json!({"num_retries": 1, "retry_interval_seconds": 0, "tolerance_seconds": 10_000_000_000u64}),
    ))
    .retry_conf;
    assert_eq!(
        conf,
        RetryConf {
            num_retries: 1,
            retry_interval_seconds: Seconds::whole(0),
            timeout_seconds: Seconds::whole(60),
            tolerance_seconds: Seconds::whole(10_000_000_000),
            ..RetryConf::default()
        }
    );
    // chime's backoff: exponential with its cap, fixed by default, and a
    // refusal naming the field for anything else.
    let conf = create_ok(args_with(
        "retry_conf",
        json!({"retry_backoff": "exponential", "max_retry_interval_seconds": 90.5}),
    ))
    .retry_conf;
    assert_eq!(
        (conf.backoff, conf.max_retry_interval_seconds),
        (Backoff::Exponential, Seconds::from_micros(90_500_000))
    );
    let conf = create_ok(args_with("retry_conf", json!({"retry_backoff": "fixed"}))).retry_conf;
    assert_eq!(conf, RetryConf::default());
    for (bad, code, path) in [
        (json!({"retry_backoff": "linear"}), "validation-failed", "$.args.retry_conf.retry_backoff"),
        (json!({"retry_backoff": 2}), "parse-failed", "$.args.retry_conf.retry_backoff"),
        (
            json!({"max_retry_interval_seconds": -1}),
            "parse-failed",
            "$.args.retry_conf.max_retry_interval_seconds",
        ),
    ] {
        assert_err(parse(&create_body(args_with("retry_conf", bad))), 400, code, path);
    }
    // an integral float is an integer
    let conf = create_ok(args_with(
        "retry_conf",
        json!({"num_retries": 5.0, "timeout_seconds": null}),
    ))
    .retry_conf;
    assert_eq!((conf.num_retries, conf.timeout_seconds), (5, Seconds::whole(60)));
}

/// Hasura reads the spans as `DiffTime`: fractional seconds are taken (and
/// kept here to the microsecond), a fractional count of retries is not.
#[test]
fn retry_conf_spans_may_be_fractional() {
    let conf = create_ok(args_with(
        "retry_conf",
        json!({"retry_interval_seconds": 1.5, "timeout_seconds": 0.25, "tolerance_seconds": 2.000001}),
    ))
    .retry_conf;
    assert_eq!(
        (conf.retry_interval_seconds, conf.timeout_seconds, conf.tolerance_seconds),
        (
            Seconds::from_micros(1_500_000),
            Seconds::from_micros(250_000),
            Seconds::from_micros(2_000_001)
        )
    );
    assert_create_err(
        args_with("retry_conf", json!({"timeout_seconds": "1.5"})),
        "parse-failed",
        "$.args.retry_conf.timeout_seconds",
    );
}

// --- delete_scheduled_event ---------------------------------------------

const ID: &str = "8f4c1a2e-5b7d-4c3e-9a1f-2d6b8e0c4f7a";

fn delete_body(args: Value) -> String {
    json!({ "type": "delete_scheduled_event", "args": args }).to_string()
}

#[test]
fn delete() {
    assert_eq!(
        parse(&delete_body(json!({"type": "one_off", "event_id": ID}))).unwrap(),
        Command::DeleteScheduledEvent {
            event_id: EventId::parse_str(ID).unwrap()
        }
    );
    let cases = [
        (json!({"event_id": ID}), "parse-failed", "$.args.type"),
        (
            json!({"type": "one_off"}),
            "parse-failed",
            "$.args.event_id",
        ),
        (
            json!({"type": "one_off", "event_id": "nope"}),
            "parse-failed",
            "$.args.event_id",
        ),
        (
            json!({"type": "one_off", "event_id": 5}),
            "parse-failed",
            "$.args.event_id",
        ),
        (
            json!({"type": "cron", "event_id": ID, "trigger_name": "t"}),
            "not-supported",
            "$.args.type",
        ),
        (
            json!({"type": "weekly", "event_id": ID}),
            "parse-failed",
            "$.args.type",
        ),
        (
            json!({"type": "one_off", "event_id": ID, "force": true}),
            "parse-failed",
            "$.args.force",
        ),
    ];
    for (args, code, path) in cases {
        assert_err(parse(&delete_body(args)), 400, code, path);
    }
}

// --- get_scheduled_events / get_scheduled_event_invocations --------------

#[test]
fn get_events() {
    let defaults = Command::GetScheduledEvents {
        statuses: vec![],
        order: Order::default(),
        limit: None,
        offset: 0,
        get_rows_count: false,
    };
    assert_eq!(
        parse(r#"{"type":"get_scheduled_events","args":{"type":"one_off"}}"#).unwrap(),
        defaults
    );
    assert_eq!(
        parse(r#"{"type":"get_scheduled_events","args":{}}"#).unwrap(),
        defaults
    );
    assert_eq!(
        parse(r#"{"type":"get_scheduled_events"}"#).unwrap(),
        defaults
    );
    assert_eq!(
        parse(r#"{"type":"get_scheduled_events","args":{"type":"one_off","limit":10,"offset":20,"status":["scheduled","dead"],"get_rows_count":true}}"#).unwrap(),
        Command::GetScheduledEvents {
            statuses: vec![Status::Scheduled, Status::Dead],
            order: Order::default(),
            limit: Some(10),
            offset: 20,
            get_rows_count: true,
        }
    );
    let bad = [
        (
            r#"{"type":"one_off","status":["scheduled","pending"]}"#,
            "parse-failed",
            "$.args.status[1]",
        ),
        (r#"{"status":"scheduled"}"#, "parse-failed", "$.args.status"),
        (r#"{"status":[1]}"#, "parse-failed", "$.args.status[0]"),
        (r#"{"limit":-1}"#, "validation-failed", "$.args.limit"),
        (r#"{"limit":"5"}"#, "parse-failed", "$.args.limit"),
        (r#"{"offset":-3}"#, "validation-failed", "$.args.offset"),
        (r#"{"offset":0.5}"#, "parse-failed", "$.args.offset"),
        (
            r#"{"get_rows_count":"yes"}"#,
            "parse-failed",
            "$.args.get_rows_count",
        ),
        (
            r#"{"type":"cron","trigger_name":"t"}"#,
            "not-supported",
            "$.args.type",
        ),
        (
            r#"{"type":"one_off","trigger_name":7}"#,
            "parse-failed",
            "$.args.trigger_name",
        ),
        (r#"{"order_by":{"column":"created_at"}}"#, "parse-failed", "$.args.order_by"),
        (r#"{"order_by":[{"type":"asc"}]}"#, "parse-failed", "$.args.order_by[0].column"),
        (r#"{"order_by":[{"column":"id"}]}"#, "parse-failed", "$.args.order_by[0].column"),
        (
            r#"{"order_by":[{"column":"created_at","type":"up"}]}"#,
            "parse-failed",
            "$.args.order_by[0].type",
        ),
        (
            r#"{"order_by":[{"column":"created_at","nulls":"middle"}]}"#,
            "parse-failed",
            "$.args.order_by[0].nulls",
        ),
        (
            r#"{"order_by":[{"column":"created_at","direction":"asc"}]}"#,
            "parse-failed",
            "$.args.order_by[0].direction",
        ),
        (r#"[]"#, "parse-failed", "$.args"),
    ];
    for (args, code, path) in bad {
        let body = format!(r#"{{"type":"get_scheduled_events","args":{args}}}"#);
        assert_err(parse(&body), 400, code, path);
    }
    // Keys Hasura knows: `trigger_name` (ignored for one_off) and
    // `order_by`, each column once, the first mention winning.
    let body = r#"{"type":"get_scheduled_events","args":{"type":"one_off","trigger_name":"t","order_by":[
        {"column":"created_at","type":"desc","nulls":"last"},
        {"column":"scheduled_time"},
        {"column":"created_at","type":"asc"}]}}"#;
    let Ok(Command::GetScheduledEvents { order, .. }) = parse(body) else {
        panic!("{body} refused");
    };
    assert_eq!(
        order,
        Order::new([
            SortBy { column: SortColumn::CreatedAt, descending: true },
            SortBy { column: SortColumn::ScheduledTime, descending: false },
        ])
    );
    assert_eq!(order.columns().len(), 2);
}

#[test]
fn get_invocations() {
    assert_eq!(
        parse(r#"{"type":"get_scheduled_event_invocations","args":{"type":"one_off"}}"#).unwrap(),
        Command::GetScheduledEventInvocations {
            event_id: InvocationsOf::Every,
            order: Order::default(),
            limit: None,
            offset: 0,
            get_rows_count: false
        }
    );
    let body = format!(
        r#"{{"type":"get_scheduled_event_invocations","args":{{"type":"one_off","event_id":"{ID}","limit":1,"offset":2,"get_rows_count":true}}}}"#
    );
    assert_eq!(
        parse(&body).unwrap(),
        Command::GetScheduledEventInvocations {
            event_id: InvocationsOf::Event(EventId::parse_str(ID).unwrap()),
            order: Order::default(),
            limit: Some(1),
            offset: 2,
            get_rows_count: true
        }
    );
    // An id that is not a UUID names no event: an empty listing, as in
    // Hasura, not an error.
    let body = r#"{"type":"get_scheduled_event_invocations","args":{"event_id":"x"}}"#;
    assert!(matches!(
        parse(body),
        Ok(Command::GetScheduledEventInvocations {
            event_id: InvocationsOf::NoEvent,
            ..
        })
    ));
    for (args, code, path) in [
        (r#"{"event_id":7}"#, "parse-failed", "$.args.event_id"),
        (r#"{"type":"cron"}"#, "not-supported", "$.args.type"),
        (r#"{"status":[]}"#, "parse-failed", "$.args.status"),
        (r#"{"limit":-1}"#, "validation-failed", "$.args.limit"),
    ] {
        let body = format!(r#"{{"type":"get_scheduled_event_invocations","args":{args}}}"#);
        assert_err(parse(&body), 400, code, path);
    }
}

// --- bulk -----------------------------------------------------------------

fn bulk(items: Vec<Value>) -> String {
    json!({ "type": "bulk", "args": items }).to_string()
}

#[test]
fn bulk_parses_every_item() {
    let body = bulk(vec![
        json!({"type": "create_scheduled_event", "args": minimal_args()}),
        json!({"type": "get_scheduled_events", "args": {}}),
    ]);
    let Ok(Command::Bulk(items)) = parse_request(body.as_bytes(), Endpoint::Query) else {
        panic!("expected a bulk");
    };
    assert_eq!(items.len(), 2);
    assert!(matches!(items[0], Command::CreateScheduledEvent(_)));
    assert_eq!(
        parse_request(br#"{"type":"bulk","args":[]}"#, Endpoint::Query),
        Ok(Command::Bulk(vec![]))
    );
}

#[test]
fn bulk_fails_whole_with_the_sub_request_path() {
    let body = bulk(vec![
        json!({"type": "create_scheduled_event", "args": minimal_args()}),
        json!({"type": "get_scheduled_events", "args": {}}),
        json!({"type": "create_scheduled_event", "args": args_with("schedule_at", json!("soon"))}),
        json!({"type": "nope", "args": {}}),
    ]);
    assert_err(
        parse_request(body.as_bytes(), Endpoint::Query),
        400,
        "parse-failed",
        "$.args[2].args.schedule_at",
    );
    let body = bulk(vec![
        json!({"type": "get_scheduled_events"}),
        json!({"type": "nope", "args": {}}),
    ]);
    let e = parse_request(body.as_bytes(), Endpoint::Query).unwrap_err();
    assert_eq!(e.path, "$.args[1]");
    assert_eq!(e.error, r#"unknown metadata command "nope""#);
    assert_err(
        parse_request(br#"{"type":"bulk","args":{}}"#, Endpoint::Query),
        400,
        "parse-failed",
        "$.args",
    );
    assert_err(
        parse_request(br#"{"type":"bulk","args":[1]}"#, Endpoint::Query),
        400,
        "parse-failed",
        "$.args[0]",
    );
}

#[test]
fn bulk_on_both_endpoints_atomic_and_keep_going_on_metadata() {
    let items = vec![json!({"type": "get_scheduled_events", "args": {}})];
    let batch = |ty: &str| json!({"type": ty, "args": items}).to_string();
    for endpoint in [Endpoint::Query, Endpoint::Metadata] {
        assert!(matches!(
            parse_request(batch("bulk").as_bytes(), endpoint),
            Ok(Command::Bulk(_))
        ));
    }
    assert!(matches!(
        parse_request(batch("bulk_atomic").as_bytes(), Endpoint::Metadata),
        Ok(Command::Bulk(_))
    ));
    assert!(matches!(
        parse_request(batch("bulk_keep_going").as_bytes(), Endpoint::Metadata),
        Ok(Command::BulkKeepGoing(_))
    ));
    for ty in ["bulk_atomic", "bulk_keep_going"] {
        let e = parse_request(batch(ty).as_bytes(), Endpoint::Query).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str(), e.path.as_str()),
            (400, "parse-failed", "$")
        );
        assert_eq!(e.error, format!("unknown metadata command \"{ty}\""));
    }
    // Keep going: each bad command is kept as its error, in its place.
    let body = json!({"type": "bulk_keep_going", "args": [
        {"type": "get_scheduled_events", "args": {}},
        {"type": "nope", "args": {}},
        {"type": "create_scheduled_event", "args": args_with("schedule_at", json!("soon"))},
    ]})
    .to_string();
    let Ok(Command::BulkKeepGoing(items)) = parse_request(body.as_bytes(), Endpoint::Metadata)
    else {
        panic!("{body} refused");
    };
    assert!(matches!(items[0], Ok(Command::GetScheduledEvents { .. })));
    assert_eq!(items[1].as_ref().unwrap_err().path, "$.args[1]");
    assert_eq!(items[2].as_ref().unwrap_err().path, "$.args[2].args.schedule_at");
    // The array itself is still required.
    assert_err(
        parse_request(br#"{"type":"bulk_keep_going","args":{}}"#, Endpoint::Metadata),
        400,
        "parse-failed",
        "$.args",
    );
}

#[test]
fn nested_bulk_is_allowed_but_capped() {
    let inner = json!({"type": "bulk", "args": [
        {"type": "get_scheduled_events", "args": {}},
        {"type": "create_scheduled_event", "args": {"schedule_at": "2020-01-01T15:46Z"}},
    ]});
    let body = bulk(vec![inner]);
    assert_err(
        parse_request(body.as_bytes(), Endpoint::Query),
        400,
        "parse-failed",
        "$.args[0].args[1].args.webhook",
    );

    let nest = |levels: usize| {
        let mut cmd = json!({"type": "get_scheduled_events", "args": {}});
        for _ in 0..levels {
            cmd = json!({"type": "bulk", "args": [cmd]});
        }
        cmd.to_string()
    };
    assert!(parse_request(nest(MAX_BULK_DEPTH).as_bytes(), Endpoint::Query).is_ok());
    let e = parse_request(nest(MAX_BULK_DEPTH + 1).as_bytes(), Endpoint::Query).unwrap_err();
    assert_eq!(e.code, "parse-failed");
    assert!(e.path.starts_with("$.args[0]"), "{}", e.path);

    // Far deeper than any recursion limit: refused, no stack overflow.
    let levels = 50_000;
    let hostile = format!(
        "{}{}",
        r#"{"type":"bulk","args":["#.repeat(levels),
        "]}".repeat(levels)
    );
    assert!(parse_request(hostile.as_bytes(), Endpoint::Query).is_err());
}

// --- rendering ------------------------------------------------------------

fn sample_created() -> EventCreated {
    EventCreated {
        event_id: EventId::from_u128(0x1234),
        webhook: "{{BASE}}/hook".into(),
        schedule_at: utc("2020-01-01T15:46:00Z"),
        payload: r#"{"b":1,"a":1.50}"#.into(),
        headers: vec![
            HeaderConf {
                name: "k".into(),
                value: HeaderSource::Value("v".into()),
            },
            HeaderConf {
                name: "s".into(),
                value: HeaderSource::FromEnv("SECRET".into()),
            },
        ],
        retry_conf: RetryConf::default(),
        comment: None,
        created_at: utc("2020-01-01T15:00:00.5Z"),
    }
}

fn sample_view(created: &EventCreated) -> EventView {
    EventView {
        id: created.event_id,
        loc: Loc {
            segment: 0,
            offset: 0,
        },
        schedule_at: created.schedule_at,
        status: Status::Scheduled,
        tries: 0,
        interrupted: 0,
        next_retry_at: None,
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

#[test]
fn event_shape() {
    let created = sample_created();
    let view = sample_view(&created);
    let v = render_event(&created, &view);
    assert_eq!(
        v,
        json!({
            "id": "00000000-0000-0000-0000-000000001234",
            "webhook_conf": "{{BASE}}/hook",
            "scheduled_time": "2020-01-01T15:46:00Z",
            "retry_conf": {"num_retries": 0, "retry_interval_seconds": 10, "timeout_seconds": 60, "tolerance_seconds": 21600},
            "payload": {"a": 1.5, "b": 1},
            "header_conf": [{"name": "k", "value": "v"}, {"name": "s", "value_from_env": "SECRET"}],
            "status": "scheduled",
            "tries": 0,
            "created_at": "2020-01-01T15:00:00.5Z",
            "next_retry_at": null,
            "comment": null,
            "request_transform": null,
            "response_transform": null,
        })
    );
    let view = EventView {
        status: Status::Scheduled,
        tries: 1,
        next_retry_at: Some(utc("2020-01-01T15:46:10Z")),
        ..view
    };
    let created = EventCreated {
        comment: Some("c".into()),
        ..created
    };
    let v = render_event(&created, &view);
    assert_eq!(v["next_retry_at"], "2020-01-01T15:46:10Z");
    assert_eq!(v["comment"], "c");
    assert_eq!(v["tries"], 1);
}

fn inv_ref(attempt: u128) -> InvocationRef {
    InvocationRef {
        attempt_id: EventId::from_u128(attempt),
        event_id: EventId::from_u128(0x1234),
        loc: Loc {
            segment: 1,
            offset: 2,
        },
        at: utc("2020-01-01T15:46:01Z"),
    }
}

fn invocation(response: InvocationResponse) -> Invocation {
    Invocation {
        request_body: r#"{"id":"x","payload":{"b":1}}"#.into(),
        request_headers: vec![("Content-Type".into(), "application/json".into())],
        response,
    }
}

#[test]
fn invocation_with_webhook_response() {
    let record = Record::AttemptSucceeded {
        event_id: EventId::from_u128(0x1234),
        attempt_id: EventId::from_u128(9),
        at: utc("2020-01-01T15:46:01Z"),
        invocation: invocation(InvocationResponse::Webhook {
            status: 200,
            headers: vec![("x-r".into(), "1".into())],
            body: b"ok \xff".to_vec(),
            truncated: false,
        }),
    };
    let v = render_invocation(&inv_ref(9), &record).unwrap();
    assert_eq!(
        v,
        json!({
            "id": "00000000-0000-0000-0000-000000000009",
            "event_id": "00000000-0000-0000-0000-000000001234",
            "status": 200,
            "request": {
                "payload": {"id": "x", "payload": {"b": 1}},
                "headers": [{"name": "Content-Type", "value": "application/json"}],
                "version": "1",
            },
            "response": {
                "type": "webhook_response",
                "data": {"body": "ok \u{fffd}", "headers": [{"name": "x-r", "value": "1"}], "status": 200},
                "version": "1",
            },
            "created_at": "2020-01-01T15:46:01Z",
        })
    );
}

#[test]
fn invocation_truncated_and_client_error() {
    let failed = |response| Record::AttemptFailed {
        event_id: EventId::from_u128(0x1234),
        attempt_id: EventId::from_u128(9),
        at: utc("2020-01-01T15:46:01Z"),
        invocation: invocation(response),
        next_retry_at: None,
    };
    let v = render_invocation(
        &inv_ref(9),
        &failed(InvocationResponse::Webhook {
            status: 500,
            headers: vec![],
            body: b"partial".to_vec(),
            truncated: true,
        }),
    )
    .unwrap();
    assert_eq!(v["status"], 500);
    assert_eq!(v["response"]["data"]["truncated"], true);

    let v = render_invocation(
        &inv_ref(9),
        &failed(InvocationResponse::ClientError {
            message: "timed out after 60 s".into(),
        }),
    )
    .unwrap();
    assert_eq!(
        keys(&v),
        [
            "created_at",
            "event_id",
            "id",
            "request",
            "response",
            "status"
        ]
    );
    assert_eq!(v["status"], Value::Null);
    assert_eq!(
        v["response"],
        json!({"type": "client_error", "data": {"message": "timed out after 60 s"}, "version": "1"})
    );
}

#[test]
fn invocation_for_give_up_and_non_invocations() {
    let interrupted = |give_up| Record::AttemptInterrupted {
        event_id: EventId::from_u128(0x1234),
        attempt_id: EventId::from_u128(9),
        at: utc("2020-01-01T15:46:01Z"),
        give_up,
        reason: "interrupted 3 times".into(),
    };
    let v = render_invocation(&inv_ref(9), &interrupted(true)).unwrap();
    assert_eq!(v["status"], Value::Null);
    assert_eq!(
        v["request"],
        json!({"payload": null, "headers": [], "version": "1"})
    );
    assert_eq!(
        v["response"],
        json!({"type": "client_error", "data": {"message": "interrupted 3 times"}, "version": "1"})
    );
    assert_eq!(render_invocation(&inv_ref(9), &interrupted(false)), None);
    // the record must be the one the reference names
    assert_eq!(render_invocation(&inv_ref(8), &interrupted(true)), None);
    let created = Record::EventCreated(sample_created());
    assert_eq!(render_invocation(&inv_ref(9), &created), None);
    let started = Record::AttemptStarted {
        event_id: EventId::from_u128(0x1234),
        attempt_id: EventId::from_u128(9),
        at: UnixMicros(0),
    };
    assert_eq!(render_invocation(&inv_ref(9), &started), None);
}

#[test]
fn webhook_body_embeds_raw_payload() {
    let created = sample_created();
    let body = webhook_body(&created);
    assert_eq!(
        body,
        r#"{"id":"00000000-0000-0000-0000-000000001234","scheduled_time":"2020-01-01T15:46:00Z","payload":{"b":1,"a":1.50},"created_at":"2020-01-01T15:00:00.5Z"}"#
    );
    let with_comment = EventCreated {
        comment: Some("say \"hi\"".into()),
        payload: "null".into(),
        ..created.clone()
    };
    let v: Value = serde_json::from_str(&webhook_body(&with_comment)).unwrap();
    assert_eq!(v["comment"], "say \"hi\"");
    assert_eq!(v["payload"], Value::Null);
    // not JSON (never written by chime): still a valid body
    let broken = EventCreated {
        payload: "{oops".into(),
        ..created
    };
    let v: Value = serde_json::from_str(&webhook_body(&broken)).unwrap();
    assert_eq!(v["payload"], "{oops");
}

#[test]
fn simple_answers() {
    assert_eq!(success(), json!({"message": "success"}));
    assert_eq!(
        created(EventId::from_u128(1)),
        json!({"message": "success", "event_id": "00000000-0000-0000-0000-000000000001"})
    );
    assert_eq!(events_answer(vec![], None), json!({"events": []}));
    assert_eq!(
        events_answer(vec![], Some(0)),
        json!({"events": [], "count": 0})
    );
    assert_eq!(
        invocations_answer(vec![json!(1)], Some(3)),
        json!({"invocations": [1], "count": 3})
    );
}

/// A listing written piece by piece (as the API streams it) is byte for byte
/// the answer built whole and serialized, with and without `count`.
#[test]
fn listings_written_piece_by_piece_are_the_answers_built_whole() {
    let rows = [json!({"id": "b", "a": [1, 2.5, null]}), json!("x"), json!({})];
    let pieces = |listing: Listing, count: Option<usize>, rows: &[Value]| {
        let mut out = Vec::new();
        listing.head(count, &mut out);
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                out.push(ROW_SEPARATOR);
            }
            serde_json::to_writer(&mut out, row).unwrap();
        }
        out.extend_from_slice(LISTING_TAIL);
        out
    };
    for count in [None, Some(0), Some(12_345)] {
        for rows in [&rows[..], &[]] {
            let whole = serde_json::to_vec(&events_answer(rows.to_vec(), count)).unwrap();
            assert_eq!(pieces(Listing::Events, count, rows), whole, "{count:?}");
            let whole = serde_json::to_vec(&invocations_answer(rows.to_vec(), count)).unwrap();
            assert_eq!(pieces(Listing::Invocations, count, rows), whole, "{count:?}");
        }
    }
}

// --- never panics -----------------------------------------------------------

/// JSON values built from the words this module looks for, so random
/// documents reach deep into the parser rather than failing at the top.
fn json_strategy() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let words = prop::sample::select(vec![
        "type",
        "args",
        "version",
        "resource_version",
        "bulk",
        "create_scheduled_event",
        "delete_scheduled_event",
        "get_scheduled_events",
        "get_scheduled_event_invocations",
        "webhook",
        "schedule_at",
        "payload",
        "headers",
        "retry_conf",
        "comment",
        "name",
        "value",
        "value_from_env",
        "num_retries",
        "retry_interval_seconds",
        "timeout_seconds",
        "tolerance_seconds",
        "event_id",
        "limit",
        "offset",
        "status",
        "get_rows_count",
        "one_off",
        "cron",
        "scheduled",
        "dead",
        "http://h/{{X}}",
        "{{A}}",
        "{{",
        "",
        "2020-01-01T15:46Z",
        "2020-01-01 15:44 Z",
        ID,
        "request_transform",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        words.clone().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec((words.clone(), inner), 0..6).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest::proptest! {
    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = parse_request(&bytes, Endpoint::Query);
        let _ = parse_request(&bytes, Endpoint::Metadata);
    }

    #[test]
    fn never_panics_on_json_ish_text(text in r#"[\[\]{}":,. 0-9a-z_\-+eETZ{}\\]{0,200}"#) {
        let _ = parse_request(text.as_bytes(), Endpoint::Query);
    }

    #[test]
    fn never_panics_on_commands(
        ty in proptest::sample::select(vec![
            "create_scheduled_event", "delete_scheduled_event", "get_scheduled_events",
            "get_scheduled_event_invocations", "bulk",
        ]),
        args in json_strategy(),
    ) {
        let body = json!({ "type": ty, "args": args }).to_string();
        if let Ok(Command::CreateScheduledEvent(event)) = parse_request(body.as_bytes(), Endpoint::Query) {
            // whatever is accepted can be shown and sent
            let record = event.into_record(EventId::from_u128(1), UnixMicros(0));
            let sent: Value = serde_json::from_str(&webhook_body(&record)).unwrap();
            proptest::prop_assert!(sent.is_object());
        }
    }

    #[test]
    fn never_panics_on_random_documents(doc in json_strategy()) {
        let _ = parse_request(doc.to_string().as_bytes(), Endpoint::Query);
    }
}

// --- header value templates ---------------------------------------------

#[test]
fn header_value_templates_are_checked_at_create() {
    let with_value = |value: &str| {
        args_with(
            "headers",
            json!([{"name": "Authorization", "value": value}]),
        )
    };
    let event = create_ok(with_value("Bearer {{TOKEN}}"));
    assert_eq!(
        event.headers[0].value,
        HeaderSource::Value("Bearer {{TOKEN}}".into())
    );
    assert_create_err(
        with_value("Bearer {{TOKEN"),
        "parse-failed",
        "$.args.headers[0].value",
    );
    assert_create_err(
        with_value("Bearer {{1TOKEN}}"),
        "parse-failed",
        "$.args.headers[0].value",
    );
    // Reserved variables are refused in a value's placeholders too.
    let mut command = parse(&create_body(with_value("{{HASURA_GRAPHQL_ADMIN_SECRET}}")))
        .expect("parses");
    let err = super::request::check_env_policy(&mut command, &crate::webhook::EnvPolicy::default())
        .expect_err("reserved");
    assert_eq!(
        (err.code.as_str(), err.path.as_str()),
        ("validation-failed", "$.args.headers[0].value")
    );
}

/// A payload whose object has serde_json's raw-value marker as a key is
/// plain JSON: shown as the object, not as a string (`Value`'s own reader
/// refuses it; the `api_request` fuzz target found it).
#[test]
fn a_payload_with_serde_jsons_marker_key_is_shown_as_its_object() {
    let text = r#"{"$serde_json::private::RawValue":120,"b":[1,-2,"x",null,true,1.5,{"$serde_json::private::RawValue":"y"}],"b":2}"#;
    assert_eq!(
        json_or_text(text),
        json!({"$serde_json::private::RawValue": 120, "b": 2})
    );
    let nested = r#"[{"$serde_json::private::RawValue":"y"},18446744073709551615,-1e3]"#;
    assert_eq!(
        json_or_text(nested),
        json!([{"$serde_json::private::RawValue": "y"}, u64::MAX, -1000.0])
    );
    assert_eq!(json_or_text("{} x"), json!("{} x"));
    assert_eq!(json_or_text("{"), json!("{"));
}
