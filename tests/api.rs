//! The HTTP API over real sockets: every command and answer shape, every
//! kind of bad input, auth, TLS, bulk atomicity, restart, the data-dir lock
//! and refused writes.
//!
//! Each test runs its own server on 127.0.0.1:0 with its own temporary data
//! directory. Deliveries go to a local receiver; events that must fire are
//! scheduled in the past (inside the default 6 h tolerance), and their
//! outcome is awaited by bounded polling of the API, never by sleeping.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chime::datadir::DataDirError;
use chime::log::LogOptions;
use chime::server::{ServeConfig, ServeError, Server};
use chime::testing::{Receiver, TestServer, from_now, http_client, read};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

fn ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {events}"))
        .iter()
        .map(|e| e["id"].as_str().expect("id is a string").to_owned())
        .collect()
}

fn event_ids_of(invocations: &Value) -> Vec<String> {
    invocations
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {invocations}"))
        .iter()
        .map(|i| {
            i["event_id"]
                .as_str()
                .expect("event_id is a string")
                .to_owned()
        })
        .collect()
}

async fn start() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServeConfig::new(dir.path())).await;
    (dir, server)
}

/// An event that fires at once (scheduled a minute ago) to `webhook`.
fn due_now(webhook: String) -> Value {
    json!({"webhook": webhook, "schedule_at": from_now(-60)})
}

// ---------------------------------------------------------------------------
// Commands and answer shapes

#[tokio::test]
async fn healthz_answers_200() {
    let (_dir, server) = start().await;
    let response = server
        .api
        .http
        .get(format!("{}/healthz", server.api.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "OK");
    server.stop().await;
}

#[tokio::test]
async fn create_answers_success_and_the_event_shows_every_key() {
    let (_dir, server) = start().await;
    let answer = server
        .api
        .ok(json!({"type": "create_scheduled_event", "args": {
            "webhook": "http://example.invalid/full",
            "schedule_at": "2099-01-01T12:00:00+02:00",
            "payload": {"email": "bob@ross.com", "n": [1, 2]},
            "headers": [
                {"name": "X-Plain", "value": "v"},
                {"name": "X-Secret", "value_from_env": "SOME_VAR"}
            ],
            "retry_conf": {"num_retries": 3, "retry_interval_seconds": 12,
                           "timeout_seconds": 5, "tolerance_seconds": 100},
            "comment": "the full one"
        }}))
        .await;
    assert_eq!(keys(&answer), set(&["message", "event_id"]), "{answer}");
    assert_eq!(answer["message"], "success");
    let full = answer["event_id"].as_str().expect("event_id").to_owned();
    uuid::Uuid::parse_str(&full).expect("event_id is a UUID");

    let minimal = server
        .api
        .create(json!({"webhook": "https://example.invalid/min",
                       "schedule_at": "2099-01-02 03:04Z"}))
        .await;
    assert_ne!(full, minimal);

    let answer = server.api.events(json!({"type": "one_off"})).await;
    assert_eq!(keys(&answer), set(&["events"]), "no count unless asked");
    let events = answer["events"].as_array().expect("events");
    assert_eq!(events.len(), 2);
    for event in events {
        assert_eq!(keys(event), set(&chime::testing::EVENT_KEYS), "{event}");
    }

    let e = &events[0];
    assert_eq!(e["id"], full);
    assert_eq!(e["webhook_conf"], "http://example.invalid/full");
    assert_eq!(e["scheduled_time"], "2099-01-01T10:00:00Z", "shown in UTC");
    assert_eq!(
        e["retry_conf"],
        json!({"num_retries": 3, "retry_interval_seconds": 12,
               "timeout_seconds": 5, "tolerance_seconds": 100})
    );
    assert_eq!(e["payload"], json!({"email": "bob@ross.com", "n": [1, 2]}));
    assert_eq!(
        e["header_conf"],
        json!([{"name": "X-Plain", "value": "v"},
               {"name": "X-Secret", "value_from_env": "SOME_VAR"}])
    );
    assert_eq!(e["status"], "scheduled");
    assert_eq!(e["tries"], 0);
    assert_eq!(e["next_retry_at"], Value::Null);
    assert_eq!(e["comment"], "the full one");
    let created_at: jiff::Timestamp = e["created_at"]
        .as_str()
        .expect("created_at")
        .parse()
        .expect("created_at is a time");
    let age = jiff::Timestamp::now().duration_since(created_at);
    assert!(
        age >= jiff::SignedDuration::ZERO && age < jiff::SignedDuration::from_secs(60),
        "created_at {created_at} is not about now"
    );

    let m = &events[1];
    assert_eq!(m["id"], minimal);
    assert_eq!(m["scheduled_time"], "2099-01-02T03:04:00Z");
    assert_eq!(
        m["retry_conf"],
        json!({"num_retries": 0, "retry_interval_seconds": 10,
               "timeout_seconds": 60, "tolerance_seconds": 21600}),
        "Hasura's defaults"
    );
    assert_eq!(m["payload"], Value::Null);
    assert_eq!(m["header_conf"], json!([]));
    assert_eq!(m["comment"], Value::Null);
    assert_eq!(m["next_retry_at"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn get_scheduled_events_orders_filters_and_pages() {
    let (_dir, server) = start().await;
    let receiver = Receiver::ok_or_fail().await;
    let at = |t: &str| json!({"webhook": "http://example.invalid/", "schedule_at": t});
    let c = server.api.create(at("2099-01-03T00:00:00Z")).await;
    let b1 = server.api.create(at("2099-01-02T00:00:00Z")).await;
    let a = server.api.create(at("2099-01-01T02:00:00+02:00")).await;
    let b2 = server.api.create(at("2099-01-02T00:00:00Z")).await;
    let delivered = server.api.create(due_now(receiver.url("/ok"))).await;
    server.api.wait_status(&delivered, "delivered").await;

    // By scheduled_time, then id (a UUID's bytes order as its lowercase hex).
    let (b_first, b_second) = if b1 < b2 { (&b1, &b2) } else { (&b2, &b1) };
    let order = vec![
        delivered.clone(),
        a.clone(),
        b_first.clone(),
        b_second.clone(),
        c.clone(),
    ];
    let all = server.api.events(json!({"type": "one_off"})).await;
    assert_eq!(ids(&all["events"]), order);
    // `args` may be left out altogether.
    let (status, bare) = server
        .api
        .metadata(json!({"type": "get_scheduled_events"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(bare, all);

    let page = server
        .api
        .events(json!({"type": "one_off", "limit": 2, "offset": 1, "get_rows_count": true}))
        .await;
    assert_eq!(ids(&page["events"]), order[1..3].to_vec());
    assert_eq!(page["count"], 5, "count ignores limit and offset");
    let past_end = server
        .api
        .events(json!({"type": "one_off", "offset": 5, "get_rows_count": true}))
        .await;
    assert_eq!(past_end, json!({"events": [], "count": 5}));
    let unasked = server
        .api
        .events(json!({"type": "one_off", "limit": 1, "get_rows_count": false}))
        .await;
    assert_eq!(keys(&unasked), set(&["events"]));

    let only_delivered = server
        .api
        .events(json!({"type": "one_off", "status": ["delivered"], "get_rows_count": true}))
        .await;
    assert_eq!(ids(&only_delivered["events"]), vec![delivered.clone()]);
    assert_eq!(only_delivered["count"], 1);
    let d = &only_delivered["events"][0];
    assert_eq!(d["tries"], 1);
    assert_eq!(d["next_retry_at"], Value::Null);

    let scheduled = server
        .api
        .events(json!({"type": "one_off", "status": ["scheduled"], "get_rows_count": true}))
        .await;
    assert_eq!(ids(&scheduled["events"]), order[1..].to_vec());
    assert_eq!(scheduled["count"], 4);
    let both = server
        .api
        .events(json!({"type": "one_off", "status": ["delivered", "scheduled"], "limit": 2}))
        .await;
    assert_eq!(ids(&both["events"]), order[..2].to_vec());
    let none = server
        .api
        .events(
            json!({"type": "one_off", "status": ["error", "dead", "locked"],
                       "get_rows_count": true}),
        )
        .await;
    assert_eq!(none, json!({"events": [], "count": 0}));
    let empty_filter = server
        .api
        .events(json!({"type": "one_off", "status": [], "get_rows_count": true}))
        .await;
    assert_eq!(ids(&empty_filter["events"]), order, "[] means every status");
    assert_eq!(empty_filter["count"], 5);
    server.stop().await;
}

#[tokio::test]
async fn invocations_show_the_call_newest_first_and_page() {
    let (_dir, server) = start().await;
    let receiver = Receiver::ok_or_fail().await;
    let first = server
        .api
        .create(json!({
            "webhook": receiver.url("/ok"),
            "schedule_at": from_now(-60),
            "payload": {"k": "v"},
            "headers": [{"name": "X-Test", "value": "1"}],
            "comment": "hello"
        }))
        .await;
    let first_event = server.api.wait_status(&first, "delivered").await;
    let failed = server.api.create(due_now(receiver.url("/fail"))).await;
    let failed_event = server.api.wait_status(&failed, "error").await;
    assert_eq!(failed_event["tries"], 1);
    assert_eq!(failed_event["next_retry_at"], Value::Null);
    let last = server.api.create(due_now(receiver.url("/ok"))).await;
    server.api.wait_status(&last, "delivered").await;
    assert_eq!(receiver.count(), 3);

    // One event's log, and its exact shape.
    let answer = server
        .api
        .invocations(json!({"type": "one_off", "event_id": first}))
        .await;
    assert_eq!(keys(&answer), set(&["invocations"]));
    let list = answer["invocations"].as_array().expect("invocations");
    assert_eq!(list.len(), 1);
    let inv = &list[0];
    assert_eq!(
        keys(inv),
        set(&[
            "id",
            "event_id",
            "status",
            "request",
            "response",
            "created_at"
        ])
    );
    assert_eq!(inv["event_id"], first);
    assert_eq!(inv["status"], 200);
    uuid::Uuid::parse_str(inv["id"].as_str().expect("id")).expect("invocation id is a UUID");
    assert_eq!(inv["request"]["version"], "1");
    assert_eq!(
        inv["request"]["payload"],
        json!({
            "id": first,
            "scheduled_time": first_event["scheduled_time"],
            "payload": {"k": "v"},
            "comment": "hello",
            "created_at": first_event["created_at"],
        })
    );
    // As Hasura lists them: Content-Type and User-Agent first, then the
    // event's own headers as configured.
    let headers = inv["request"]["headers"].as_array().expect("headers");
    assert_eq!(headers.len(), 3, "{headers:?}");
    assert_eq!(
        headers[0],
        json!({"name": "Content-Type", "value": "application/json"})
    );
    assert_eq!(headers[1]["name"], "User-Agent");
    assert!(
        headers[1]["value"]
            .as_str()
            .is_some_and(|v| v.starts_with("chime/")),
        "{headers:?}"
    );
    assert_eq!(headers[2], json!({"name": "X-Test", "value": "1"}));
    assert_eq!(inv["response"]["type"], "webhook_response");
    assert_eq!(inv["response"]["version"], "1");
    assert_eq!(inv["response"]["data"]["status"], 200);
    assert_eq!(inv["response"]["data"]["body"], "ok");
    assert!(inv["response"]["data"]["headers"].is_array());

    let failed_log = server
        .api
        .invocations(json!({"type": "one_off", "event_id": failed, "get_rows_count": true}))
        .await;
    assert_eq!(failed_log["count"], 1);
    // An answer that is not a 2xx is Hasura's client_error: the body is the
    // message, the status is the invocation's (and kept beside it).
    let failed_inv = &failed_log["invocations"][0];
    assert_eq!(failed_inv["status"], 500);
    assert_eq!(failed_inv["response"]["type"], "client_error");
    assert_eq!(failed_inv["response"]["version"], "1");
    assert_eq!(failed_inv["response"]["data"]["message"], "nope");
    assert_eq!(failed_inv["response"]["data"]["status"], 500);

    // Every event's log, newest first, paged.
    let all = server
        .api
        .invocations(json!({"type": "one_off", "get_rows_count": true}))
        .await;
    assert_eq!(all["count"], 3);
    assert_eq!(
        event_ids_of(&all["invocations"]),
        vec![last.clone(), failed.clone(), first.clone()]
    );
    let page = server
        .api
        .invocations(json!({"type": "one_off", "limit": 1, "offset": 1}))
        .await;
    assert_eq!(keys(&page), set(&["invocations"]));
    assert_eq!(event_ids_of(&page["invocations"]), vec![failed.clone()]);
    let (status, bare) = server
        .api
        .metadata(json!({"type": "get_scheduled_event_invocations"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(bare["invocations"], all["invocations"]);
    let past_end = server
        .api
        .invocations(json!({"type": "one_off", "event_id": first, "offset": 1,
                            "get_rows_count": true}))
        .await;
    assert_eq!(past_end, json!({"invocations": [], "count": 1}));
    server.stop().await;
}

#[tokio::test]
async fn delete_removes_the_event_and_its_invocations_from_every_view() {
    let (_dir, server) = start().await;
    let receiver = Receiver::ok_or_fail().await;
    let gone = server.api.create(due_now(receiver.url("/ok"))).await;
    server.api.wait_status(&gone, "delivered").await;
    let kept = server.api.create(due_now(receiver.url("/ok"))).await;
    server.api.wait_status(&kept, "delivered").await;
    let pending = server
        .api
        .create(
            json!({"webhook": "http://example.invalid/", "schedule_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(server.api.count().await, 3);

    let delete = |id: &str| json!({"type": "delete_scheduled_event", "args": {"type": "one_off", "event_id": id}});
    assert_eq!(
        server.api.ok(delete(&gone)).await,
        json!({"message": "success"})
    );
    assert_eq!(
        server.api.ok(delete(&pending)).await,
        json!({"message": "success"})
    );

    assert_eq!(server.api.count().await, 1);
    assert_eq!(
        ids(&server.api.events(json!({"type": "one_off"})).await["events"]),
        vec![kept.clone()]
    );
    let delivered = server
        .api
        .events(json!({"type": "one_off", "status": ["delivered"], "get_rows_count": true}))
        .await;
    assert_eq!(delivered["count"], 1);
    let all = server
        .api
        .invocations(json!({"type": "one_off", "get_rows_count": true}))
        .await;
    assert_eq!(all["count"], 1);
    assert_eq!(event_ids_of(&all["invocations"]), vec![kept.clone()]);
    for id in [&gone, &pending] {
        let (status, err) = server
            .api
            .metadata(json!({"type": "get_scheduled_event_invocations",
                             "args": {"type": "one_off", "event_id": id}}))
            .await;
        // A deleted event has no invocations left, and deleting it again
        // is `success` with nothing written, as in Hasura.
        assert_eq!((status, &err), (200, &json!({"invocations": []})));
        let (status, answer) = server.api.metadata(delete(id)).await;
        assert_eq!(
            (status, &answer),
            (200, &json!({"message": "success"})),
            "deleting twice"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn query_endpoint_takes_the_same_commands_and_bulk_as_metadata() {
    let (_dir, server) = start().await;
    let receiver = Receiver::ok_or_fail().await;
    let (status, created) = server
        .api
        .query(json!({"type": "create_scheduled_event", "args": due_now(receiver.url("/ok"))}))
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(keys(&created), set(&["message", "event_id"]));
    let id = created["event_id"].as_str().expect("event_id").to_owned();
    server.api.wait_status(&id, "delivered").await;

    for body in [
        json!({"type": "get_scheduled_events", "args": {"type": "one_off", "get_rows_count": true}}),
        json!({"type": "get_scheduled_event_invocations",
               "args": {"type": "one_off", "event_id": id, "get_rows_count": true}}),
    ] {
        let (s1, via_query) = server.api.query(body.clone()).await;
        let (s2, via_metadata) = server.api.metadata(body).await;
        assert_eq!((s1, s2), (200, 200));
        assert_eq!(via_query, via_metadata);
        assert_eq!(via_query["count"], 1);
    }

    let bulk = json!({"type": "bulk", "args": [
        {"type": "get_scheduled_events", "args": {"type": "one_off"}}
    ]});
    // `bulk` on both endpoints, as in Hasura.
    let (status, via_metadata) = server.api.metadata(bulk.clone()).await;
    assert_eq!(status, 200, "{via_metadata}");
    let (status, answer) = server.api.query(bulk).await;
    assert_eq!(answer, via_metadata);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(ids(&answer[0]["events"]), vec![id.clone()]);
    assert_eq!(answer.as_array().map(Vec::len), Some(1));

    let (status, deleted) = server
        .api
        .query(json!({"type": "delete_scheduled_event",
                      "args": {"type": "one_off", "event_id": id}}))
        .await;
    assert_eq!((status, deleted), (200, json!({"message": "success"})));
    assert_eq!(server.api.count().await, 0);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Bad input

/// One bad request and the error it must get.
struct Bad {
    why: &'static str,
    endpoint: &'static str,
    body: String,
    status: u16,
    code: &'static str,
    path: &'static str,
}

fn bad(why: &'static str, body: Value, code: &'static str, path: &'static str) -> Bad {
    Bad {
        why,
        endpoint: "/v1/metadata",
        body: body.to_string(),
        status: 400,
        code,
        path,
    }
}

fn create_with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut args = serde_json::Map::new();
    args.insert("webhook".into(), json!("http://example.invalid/hook"));
    args.insert("schedule_at".into(), json!("2099-01-01T00:00:00Z"));
    change(&mut args);
    json!({"type": "create_scheduled_event", "args": args})
}

#[tokio::test]
async fn bad_requests_are_refused_with_code_status_and_path_and_change_nothing() {
    let (_dir, server) = start().await;
    // One event already there, so "nothing changed" is not just "still empty".
    let existing = server.api.create(create_with(|_| {})["args"].clone()).await;
    let retry = |key: &'static str, v: Value| {
        create_with(move |a| {
            a.insert("retry_conf".into(), json!({ key: v }));
        })
    };
    let header = |h: Value| {
        create_with(move |a| {
            a.insert("headers".into(), json!([h]));
        })
    };
    let set_arg = |key: &'static str, v: Value| {
        create_with(move |a| {
            a.insert(key.into(), v);
        })
    };
    let drop_arg = |key: &'static str| {
        create_with(move |a| {
            a.remove(key);
        })
    };

    let cases = vec![
        Bad {
            why: "malformed JSON",
            endpoint: "/v1/metadata",
            body: r#"{"type": "create_scheduled_event", "args": {"#.into(),
            status: 400,
            code: "invalid-json",
            path: "$",
        },
        Bad {
            why: "malformed JSON on /v1/query",
            endpoint: "/v1/query",
            body: "not json".into(),
            status: 400,
            code: "invalid-json",
            path: "$",
        },
        bad("body not an object", json!([]), "parse-failed", "$"),
        bad(
            "missing type",
            json!({"args": {}}),
            "parse-failed",
            "$.type",
        ),
        bad(
            "type not a string",
            json!({"type": 5}),
            "parse-failed",
            "$.type",
        ),
        bad(
            "unknown top-level key",
            json!({"type": "get_scheduled_events", "arg": {}}),
            "parse-failed",
            "$.arg",
        ),
        bad(
            "missing webhook",
            drop_arg("webhook"),
            "parse-failed",
            "$.args.webhook",
        ),
        bad(
            "missing schedule_at",
            drop_arg("schedule_at"),
            "parse-failed",
            "$.args.schedule_at",
        ),
        bad(
            "create without args",
            json!({"type": "create_scheduled_event"}),
            "parse-failed",
            "$.args",
        ),
        bad(
            "args not an object",
            json!({"type": "create_scheduled_event", "args": []}),
            "parse-failed",
            "$.args",
        ),
        bad(
            "webhook not a string",
            set_arg("webhook", json!(5)),
            "parse-failed",
            "$.args.webhook",
        ),
        bad(
            "schedule_at not a string",
            set_arg("schedule_at", json!(1700000000)),
            "parse-failed",
            "$.args.schedule_at",
        ),
        bad(
            "headers not a list",
            set_arg("headers", json!({"X-A": "b"})),
            "parse-failed",
            "$.args.headers",
        ),
        bad(
            "comment not a string",
            set_arg("comment", json!(7)),
            "parse-failed",
            "$.args.comment",
        ),
        bad(
            "num_retries a string",
            retry("num_retries", json!("3")),
            "parse-failed",
            "$.args.retry_conf.num_retries",
        ),
        bad(
            "num_retries a fraction",
            retry("num_retries", json!(1.5)),
            "parse-failed",
            "$.args.retry_conf.num_retries",
        ),
        bad(
            "retry_conf not an object",
            set_arg("retry_conf", json!(3)),
            "parse-failed",
            "$.args.retry_conf",
        ),
        bad(
            "typo retry_config",
            set_arg("retry_config", json!({"num_retries": 3})),
            "parse-failed",
            "$.args.retry_config",
        ),
        bad(
            "typo inside retry_conf",
            retry("num_retry", json!(3)),
            "parse-failed",
            "$.args.retry_conf.num_retry",
        ),
        bad(
            "request_transform",
            set_arg("request_transform", json!({"method": "PUT"})),
            "not-supported",
            "$.args.request_transform",
        ),
        bad(
            "response_transform",
            set_arg("response_transform", json!({})),
            "not-supported",
            "$.args.response_transform",
        ),
        bad(
            "ftp webhook",
            set_arg("webhook", json!("ftp://x")),
            "validation-failed",
            "$.args.webhook",
        ),
        bad(
            "webhook not a URL",
            set_arg("webhook", json!("not a url")),
            "validation-failed",
            "$.args.webhook",
        ),
        bad(
            "empty webhook",
            set_arg("webhook", json!("")),
            "validation-failed",
            "$.args.webhook",
        ),
        bad(
            "schedule_at not a time",
            set_arg("schedule_at", json!("tomorrow at noon")),
            "parse-failed",
            "$.args.schedule_at",
        ),
        bad(
            "schedule_at not a date",
            set_arg("schedule_at", json!("2020-02-30T00:00:00Z")),
            "parse-failed",
            "$.args.schedule_at",
        ),
        bad(
            "negative num_retries",
            retry("num_retries", json!(-1)),
            "parse-failed",
            "$.args.retry_conf.num_retries",
        ),
        bad(
            "negative retry_interval_seconds",
            retry("retry_interval_seconds", json!(-10)),
            "parse-failed",
            "$.args.retry_conf.retry_interval_seconds",
        ),
        bad(
            "negative timeout_seconds",
            retry("timeout_seconds", json!(-1)),
            "parse-failed",
            "$.args.retry_conf.timeout_seconds",
        ),
        bad(
            "negative tolerance_seconds",
            retry("tolerance_seconds", json!(-1)),
            "parse-failed",
            "$.args.retry_conf.tolerance_seconds",
        ),
        bad(
            "invalid header name",
            header(json!({"name": "bad name", "value": "v"})),
            "validation-failed",
            "$.args.headers[0].name",
        ),
        bad(
            "invalid header value",
            header(json!({"name": "X-Ok", "value": "a\nb"})),
            "validation-failed",
            "$.args.headers[0].value",
        ),
        bad(
            "header without a value",
            header(json!({"name": "X-Ok"})),
            "parse-failed",
            "$.args.headers[0].value",
        ),
        bad(
            "unknown status filter",
            json!({"type": "get_scheduled_events", "args": {"status": ["nope"]}}),
            "parse-failed",
            "$.args.status[0]",
        ),
        bad(
            "limit not a number",
            json!({"type": "get_scheduled_events", "args": {"limit": "ten"}}),
            "parse-failed",
            "$.args.limit",
        ),
        bad(
            "get_rows_count not a boolean",
            json!({"type": "get_scheduled_event_invocations", "args": {"get_rows_count": "yes"}}),
            "parse-failed",
            "$.args.get_rows_count",
        ),
        bad(
            "cron events",
            json!({"type": "get_scheduled_events", "args": {"type": "cron"}}),
            "not-supported",
            "$.args.type",
        ),
        bad(
            "event_id not a UUID",
            json!({"type": "delete_scheduled_event",
                   "args": {"type": "one_off", "event_id": "nope"}}),
            "parse-failed",
            "$.args.event_id",
        ),
        bad(
            "delete without event_id",
            json!({"type": "delete_scheduled_event", "args": {"type": "one_off"}}),
            "parse-failed",
            "$.args.event_id",
        ),
    ];
    for case in &cases {
        let (status, err) = server.api.post_raw(case.endpoint, case.body.clone()).await;
        assert_eq!(
            (status, err["code"].as_str(), err["path"].as_str()),
            (case.status, Some(case.code), Some(case.path)),
            "{}: {} answered {err}",
            case.why,
            case.body
        );
        assert_eq!(keys(&err), set(&["code", "error", "path"]), "{}", case.why);
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}: no message in {err}",
            case.why
        );
        assert_eq!(
            server.api.count().await,
            1,
            "{} changed the events",
            case.why
        );
    }

    // The unknown command's message is Hasura's, word for word.
    let (status, err) = server.api.metadata(json!({"type": "X", "args": {}})).await;
    assert_eq!(status, 400);
    assert_eq!(
        err,
        json!({"code": "parse-failed", "path": "$", "error": "unknown metadata command \"X\""})
    );
    assert_eq!(server.api.count().await, 1);

    // A webhook whose scheme and host come from the environment is accepted.
    let templated = server
        .api
        .create(
            create_with(|a| {
                a.insert("webhook".into(), json!("{{BASE}}/x"));
            })["args"]
                .clone(),
        )
        .await;
    assert_eq!(server.api.count().await, 2);
    assert_eq!(
        server.api.event(&templated).await["webhook_conf"],
        "{{BASE}}/x"
    );
    assert_eq!(server.api.event(&existing).await["status"], "scheduled");
    server.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_with_the_json_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServeConfig::new(dir.path());
    config.max_body_bytes = 1024;
    let server = TestServer::start(config).await;
    let big = create_with(|a| {
        a.insert("payload".into(), json!("x".repeat(4096)));
    });
    for endpoint in ["/v1/metadata", "/v1/query"] {
        let (status, err) = server.api.post_raw(endpoint, big.to_string()).await;
        assert_eq!(status, 413, "{endpoint}: {err}");
        assert_eq!(err["code"], "payload-too-large");
        assert_eq!(err["path"], "$");
        assert_eq!(keys(&err), set(&["code", "error", "path"]));
    }
    // Without a Content-Length (chunked), the limit holds while reading.
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let body = big.to_string();
    let request = format!(
        "POST /v1/metadata HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload-too-large""#), "{answer}");
    assert_eq!(server.api.count().await, 0);
    // Under the limit is fine.
    let small = create_with(|_| {});
    assert!(small.to_string().len() < 1024);
    server.api.create(small["args"].clone()).await;
    assert_eq!(server.api.count().await, 1);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Auth

#[tokio::test]
async fn admin_secret_and_role_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServeConfig::new(dir.path());
    config.admin_secret = Some("s3cret".into());
    let server = TestServer::start(config).await;
    let http = http_client();
    let create = create_with(|_| {}).to_string();
    let call = |secret: Option<&str>, role: Option<&str>, body: String| {
        let mut request = http
            .post(format!("{}/v1/metadata", server.api.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(secret) = secret {
            request = request.header("X-Hasura-Admin-Secret", secret);
        }
        if let Some(role) = role {
            request = request.header("X-Hasura-Role", role);
        }
        async move { read(request.send().await.expect("sent")).await }
    };

    for (why, secret, role) in [
        ("no secret", None, None),
        ("wrong secret", Some("s3cre"), None),
        ("longer wrong secret", Some("s3cret!"), None),
        ("empty secret", Some(""), None),
        ("no secret, admin role", None, Some("admin")),
    ] {
        let (status, err) = call(secret, role, create.clone()).await;
        assert_eq!(status, 401, "{why}: {err}");
        assert_eq!(err["code"], "access-denied", "{why}");
        assert_eq!(err["path"], "$", "{why}");
    }
    // A known caller asking for another role: Hasura's 400 at `$.args`.
    let (status, err) = call(Some("s3cret"), Some("user"), create.clone()).await;
    assert_eq!(
        (status, &err),
        (
            400,
            &json!({"code": "access-denied", "error": "restricted access : admin only", "path": "$.args"})
        )
    );
    // Refused before parsing: even a malformed body is access-denied.
    let (status, err) = call(None, None, "{".into()).await;
    assert_eq!((status, err["code"].as_str()), (401, Some("access-denied")));
    // /v1/query is guarded the same way.
    let response = http
        .post(format!("{}/v1/query", server.api.base))
        .body(create.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(read(response).await.0, 401);

    assert_eq!(server.api.count().await, 0, "nothing was created");
    let (status, answer) = call(Some("s3cret"), None, create.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = call(Some("s3cret"), Some("admin"), create).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(server.api.count().await, 2);

    // Health checks need no secret.
    let response = http
        .get(format!("{}/healthz", server.api.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn no_secret_beyond_loopback_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServeConfig::new(dir.path());
    config.listen = "0.0.0.0:0".parse().expect("addr");
    match Server::open(config.clone()) {
        Err(ServeError::Unauthenticated(addr)) => assert_eq!(addr, config.listen),
        Err(other) => panic!("expected Unauthenticated, got {other}"),
        Ok(_) => panic!("opened without a secret on 0.0.0.0"),
    }
    // Refused before touching the data directory: nothing was created.
    assert!(!dir.path().join("LOCK").exists());

    let mut allowed = config.clone();
    allowed.allow_unauthenticated = true;
    drop(Server::open(allowed).expect("allowed explicitly"));

    let mut with_secret = config.clone();
    with_secret.admin_secret = Some("s".into());
    drop(Server::open(with_secret).expect("a secret makes it fine"));

    let mut loopback = config;
    loopback.listen = "127.0.0.1:0".parse().expect("addr");
    drop(Server::open(loopback).expect("loopback needs no secret"));
}

// ---------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_serves_https_and_refuses_plain_http() {
    chime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("generate cert");
    let cert_pem = generated.cert.pem();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &cert_pem).expect("write cert");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write key");

    let mut config = ServeConfig::new(dir.path().join("data"));
    config.tls = Some((cert, key));
    let server = Server::open(config).expect("open");
    let mut running = TestServer::serve(server, None).await;
    let addr = running.addr;
    let port = addr.port();

    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("cert")])
        // "localhost" may resolve to ::1 first; the server is on 127.0.0.1.
        .resolve("localhost", addr)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let base = format!("https://localhost:{port}");
    let response = trusting
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("https healthz");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "OK");

    running.api.http = trusting;
    running.api.base = base;
    let id = running
        .api
        .create(
            json!({"webhook": "http://example.invalid/", "schedule_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        ids(&running.api.events(json!({})).await["events"]),
        vec![id]
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = http_client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // A client that does not trust the certificate is refused.
    let untrusting = http_client()
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(untrusting.is_err(), "untrusted certificate accepted");
    running.stop().await;
}

// ---------------------------------------------------------------------------
// Bulk

#[tokio::test]
async fn bulk_is_all_or_nothing() {
    let (_dir, server) = start().await;
    let good = |n: u32| {
        json!({"type": "create_scheduled_event", "args": {
            "webhook": "http://example.invalid/", "schedule_at": "2099-01-01T00:00:00Z",
            "comment": format!("bulk {n}")
        }})
    };

    // The third is invalid: nothing is created, and the path points into it.
    let (status, err) = server
        .api
        .query(json!({"type": "bulk", "args": [good(1), good(2), {
            "type": "create_scheduled_event",
            "args": {"webhook": "http://example.invalid/", "schedule_at": "someday"}
        }]}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["code"], "parse-failed");
    assert_eq!(err["path"], "$.args[2].args.schedule_at");
    let (status, err) = server
        .api
        .query(json!({"type": "bulk", "args": [good(1), good(2), {
            "type": "create_scheduled_event",
            "args": {"webhook": "ftp://x", "schedule_at": "2099-01-01T00:00:00Z"}
        }]}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        (err["code"].as_str(), err["path"].as_str()),
        (Some("validation-failed"), Some("$.args[2].args.webhook"))
    );
    let (status, err) = server
        .api
        .query(json!({"type": "bulk", "args": [good(1), {"type": "nope"}]}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["path"], "$.args[1]");
    assert_eq!(err["error"], "unknown metadata command \"nope\"");
    assert_eq!(server.api.count().await, 0);
    // A bad command inside a bulk inside a bulk fails the outer one too.
    let (status, err) = server
        .api
        .query(json!({"type": "bulk", "args": [good(1), {"type": "bulk", "args": [good(2), {"type": "nope"}]}]}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        (err["code"].as_str(), err["path"].as_str()),
        (Some("parse-failed"), Some("$.args[1].args[1]"))
    );
    assert_eq!(server.api.count().await, 0, "nothing from the refused bulk");

    // All valid: one answer per request, reads see the writes before them.
    let (status, answers) = server
        .api
        .query(json!({"type": "bulk", "args": [
            good(1),
            good(2),
            {"type": "get_scheduled_events", "args": {"type": "one_off", "get_rows_count": true}}
        ]}))
        .await;
    assert_eq!(status, 200, "{answers}");
    let answers = answers.as_array().expect("an array").clone();
    assert_eq!(answers.len(), 3);
    let created: Vec<String> = answers[..2]
        .iter()
        .map(|a| {
            assert_eq!(keys(a), set(&["message", "event_id"]), "{a}");
            assert_eq!(a["message"], "success");
            a["event_id"].as_str().expect("event_id").to_owned()
        })
        .collect();
    assert_eq!(answers[2]["count"], 2);
    let mut listed = ids(&answers[2]["events"]);
    let mut expected = created.clone();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(server.api.count().await, 2);

    // One bad command fails the whole bulk, creates and deletes included.
    let (status, err) = server
        .api
        .query(json!({"type": "bulk", "args": [
            good(3),
            {"type": "delete_scheduled_event", "args": {"type": "one_off", "event_id": created[0]}},
            {"type": "create_scheduled_event",
             "args": {"webhook": "http://127.0.0.1:1/", "schedule_at": "tomorrow"}},
            good(4)
        ]}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["code"], "parse-failed");
    assert_eq!(err["path"], "$.args[2].args.schedule_at");
    assert_eq!(server.api.count().await, 2);
    let comments: Vec<Value> = server
        .api
        .all_events()
        .await
        .iter()
        .map(|e| e["comment"].clone())
        .collect();
    assert!(!comments.contains(&json!("bulk 3")) && !comments.contains(&json!("bulk 4")));

    // A bulk that deletes and creates applies both.
    let (status, answers) = server
        .api
        .query(json!({"type": "bulk", "args": [
            {"type": "delete_scheduled_event", "args": {"type": "one_off", "event_id": created[0]}},
            good(5)
        ]}))
        .await;
    assert_eq!(status, 200, "{answers}");
    assert_eq!(answers[0], json!({"message": "success"}));
    let ids_now: Vec<String> = server
        .api
        .all_events()
        .await
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids_now.len(), 2);
    assert!(!ids_now.contains(&created[0]));
    assert!(ids_now.contains(&created[1]));
    assert!(ids_now.iter().any(|id| answers[1]["event_id"] == *id));

    // An empty bulk is an empty array.
    let (status, answers) = server.api.query(json!({"type": "bulk", "args": []})).await;
    assert_eq!((status, answers), (200, json!([])));
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Restart, lock, refused writes

/// Everything the API shows, for comparing before and after a restart.
async fn snapshot(server: &TestServer, ids: &[&str]) -> Vec<Value> {
    let mut out = vec![
        server
            .api
            .events(json!({"type": "one_off", "get_rows_count": true}))
            .await,
        server
            .api
            .invocations(json!({"type": "one_off", "get_rows_count": true}))
            .await,
    ];
    for id in ids {
        out.push(
            server
                .api
                .invocations(json!({"type": "one_off", "event_id": id, "get_rows_count": true}))
                .await,
        );
    }
    out
}

#[tokio::test]
async fn a_restart_keeps_every_event_status_and_invocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::ok_or_fail().await;
    let server = TestServer::start(ServeConfig::new(dir.path())).await;

    let retried = server
        .api
        .create(json!({
            "webhook": receiver.url("/fail"),
            "schedule_at": from_now(-60),
            "retry_conf": {"num_retries": 1, "retry_interval_seconds": 1}
        }))
        .await;
    let first = server
        .api
        .create(json!({
            "webhook": receiver.url("/ok"),
            "schedule_at": from_now(-30),
            "payload": {"n": 1},
            "comment": "first",
            "headers": [{"name": "X-A", "value": "a"}]
        }))
        .await;
    let second = server.api.create(due_now(receiver.url("/ok"))).await;
    let dead = server
        .api
        .create(json!({
            "webhook": receiver.url("/ok"),
            "schedule_at": from_now(-7200),
            "retry_conf": {"tolerance_seconds": 60}
        }))
        .await;
    let future = server
        .api
        .create(json!({"webhook": receiver.url("/ok"), "schedule_at": from_now(3600)}))
        .await;
    let deleted = server.api.create(due_now(receiver.url("/ok"))).await;
    server.api.wait_status(&deleted, "delivered").await;
    server
        .api
        .ok(json!({"type": "delete_scheduled_event",
                   "args": {"type": "one_off", "event_id": deleted}}))
        .await;

    server.api.wait_status(&first, "delivered").await;
    server.api.wait_status(&second, "delivered").await;
    let dead_event = server.api.wait_status(&dead, "dead").await;
    assert_eq!(dead_event["tries"], 0);
    let retried_event = server.api.wait_status(&retried, "error").await;
    assert_eq!(
        retried_event["tries"], 2,
        "num_retries 1 means two attempts"
    );
    // As in Hasura, the final failure keeps the last retry's time.
    assert!(
        retried_event["next_retry_at"].is_string(),
        "{retried_event}"
    );
    assert_eq!(server.api.event(&future).await["status"], "scheduled");

    let retried_log = server
        .api
        .invocations(json!({"type": "one_off", "event_id": retried}))
        .await;
    let attempts = retried_log["invocations"].as_array().expect("invocations");
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a["status"] == 500));
    let times: Vec<jiff::Timestamp> = attempts
        .iter()
        .map(|a| {
            a["created_at"]
                .as_str()
                .expect("created_at")
                .parse()
                .expect("time")
        })
        .collect();
    assert!(times[0] > times[1], "newest first: {times:?}");
    assert!(
        times[0].duration_since(times[1]) >= jiff::SignedDuration::from_millis(900),
        "the retry waited retry_interval_seconds: {times:?}"
    );
    let dead_log = server
        .api
        .invocations(json!({"type": "one_off", "event_id": dead, "get_rows_count": true}))
        .await;
    assert_eq!(
        dead_log,
        json!({"invocations": [], "count": 0}),
        "dead: no call"
    );

    let watched = [
        retried.as_str(),
        first.as_str(),
        second.as_str(),
        dead.as_str(),
        future.as_str(),
    ];
    let before = snapshot(&server, &watched).await;
    assert_eq!(before[0]["count"], 5);
    assert_eq!(before[1]["count"], 4, "2 + 1 + 1, the deleted event's gone");
    let hits = receiver.count();
    assert_eq!(hits, 5);
    server.stop().await;

    // Without the snapshot the clean stop wrote, so that the restart
    // rebuilds every view by replaying the log (tests/snapshots.rs restores
    // from snapshots).
    std::fs::remove_dir_all(chime::snapshot::snapshot_dir(dir.path())).expect("no snapshots");
    let reopened = Server::open(ServeConfig::new(dir.path())).expect("reopen");
    assert_eq!(reopened.startup.snapshot_seq, None);
    assert!(reopened.startup.replayed > 0);
    let server = TestServer::serve(reopened, None).await;
    let after = snapshot(&server, &watched).await;
    assert_eq!(before, after);
    let (status, err) = server
        .api
        .metadata(json!({"type": "get_scheduled_event_invocations",
                         "args": {"type": "one_off", "event_id": deleted}}))
        .await;
    assert_eq!((status, &err), (200, &json!({"invocations": []})));
    // Still writable after the restart, and nothing was sent again: a
    // control event due now is delivered first, so the dispatcher has run
    // over the replayed events before the count is compared.
    let control = server
        .api
        .create(json!({"webhook": receiver.url("/ok"), "schedule_at": from_now(0)}))
        .await;
    server.api.wait_status(&control, "delivered").await;
    assert_eq!(server.api.count().await, 6);
    assert_eq!(
        receiver.count(),
        hits + 1,
        "only the control event was sent"
    );
    assert_eq!(receiver.calls_for(&control), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_second_server_on_a_held_data_dir_fails_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServeConfig::new(dir.path())).await;
    let started = Instant::now();
    match Server::open(ServeConfig::new(dir.path())) {
        Err(ServeError::DataDir(DataDirError::Locked { path })) => {
            assert_eq!(path, dir.path());
        }
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second server opened a held data directory"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "did not fail at once"
    );
    // The first one is unharmed.
    server
        .api
        .create(
            json!({"webhook": "http://example.invalid/", "schedule_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    server.stop().await;
    // Once it has stopped, the directory can be opened again.
    drop(Server::open(ServeConfig::new(dir.path())).expect("open after stop"));
}

/// The log refusing a write, without fault injection: with segments smaller
/// than one record, every append after the first rolls to a new segment
/// file, and moving the log directory away makes creating that file fail.
/// The open segments stay readable (they are mapped), so reads keep working.
#[tokio::test]
async fn a_write_the_log_refuses_gets_503_and_reads_keep_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServeConfig::new(dir.path());
    config.log = LogOptions::with_segment_bytes(64);
    let server = TestServer::start(config.clone()).await;
    let args = json!({"webhook": "http://example.invalid/", "schedule_at": "2099-01-01T00:00:00Z"});
    let kept = server.api.create(args.clone()).await;
    // Read it once while the directory is in place: its batch outgrew the
    // tiny segment's map, so the first read maps the file again by path.
    // (Only this test's undersized segments need that.)
    assert_eq!(server.api.event(&kept).await["status"], "scheduled");
    let log_dir = chime::datadir::log_dir(dir.path());
    let away = dir.path().join("log-away");
    std::fs::rename(&log_dir, &away).expect("move the log dir away");

    let body = json!({"type": "create_scheduled_event", "args": args});
    let (status, err) = server.api.metadata(body.clone()).await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["code"], "unavailable");
    assert_eq!(err["path"], "$");
    let (status, err) = server
        .api
        .metadata(json!({"type": "delete_scheduled_event",
                         "args": {"type": "one_off", "event_id": kept}}))
        .await;
    assert_eq!((status, err["code"].as_str()), (503, Some("unavailable")));

    // Reads are answered from what is already durable.
    assert_eq!(server.api.count().await, 1);
    assert_eq!(server.api.event(&kept).await["status"], "scheduled");
    let response = server
        .api
        .http
        .get(format!("{}/healthz", server.api.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), 200);

    // Once the directory is back, writes work again.
    std::fs::rename(&away, &log_dir).expect("move the log dir back");
    let (status, answer) = server.api.metadata(body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(server.api.count().await, 2);
    server.stop().await;

    // The refused writes left nothing behind.
    let server = TestServer::start(config).await;
    assert_eq!(server.api.count().await, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_reading_reserved_or_unlisted_env_vars_are_refused() {
    for (allow, var, ok) in [
        (vec![], "CHIME_ADMIN_SECRET", false),
        (vec![], "HASURA_GRAPHQL_ADMIN_SECRET", false),
        (vec![], "HOOK_TOKEN", true),
        (vec!["HOOK_*".to_owned()], "HOOK_TOKEN", true),
        (vec!["HOOK_*".to_owned()], "OTHER_TOKEN", false),
        (vec!["*".to_owned()], "CHIME_ADMIN_SECRET", false),
    ] {
        let server = TestServer::fresh_with(|c| c.env_policy.allow = allow.clone()).await;
        let api = &server.api;
        let in_webhook = json!({"webhook": format!("http://{{{{{var}}}}}/x"),
            "schedule_at": "2099-01-01T00:00:00Z"});
        let in_header = json!({"webhook": "http://127.0.0.1:1/x",
            "schedule_at": "2099-01-01T00:00:00Z",
            "headers": [{"name": "X-S", "value_from_env": var}]});
        for args in [in_webhook, in_header] {
            let (status, answer) = api
                .metadata(json!({"type": "create_scheduled_event", "args": args}))
                .await;
            if ok {
                assert_eq!(status, 200, "{allow:?} {var}: {answer}");
            } else {
                assert_eq!(status, 400, "{allow:?} {var}: {answer}");
                assert_eq!(answer["code"], "validation-failed", "{answer}");
                assert!(
                    answer["error"].as_str().unwrap_or("").contains(var),
                    "{answer}"
                );
            }
        }
        // Nothing refused was written.
        let expected = if ok { 2 } else { 0 };
        assert_eq!(api.all_events().await.len(), expected, "{allow:?} {var}");
        server.stop().await;
    }
}
