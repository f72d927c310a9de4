//! Bounded work per event and per request, at create, over real sockets:
//! an event's headers (how many, how many bytes, names and values HTTP
//! refuses, the headers chime or the HTTP layer own) are refused with 400
//! and a path to the offending header, nothing written; a value read from
//! the environment that HTTP refuses is a failed attempt that says why;
//! duplicate deletes (in one bulk, or racing requests) write one cancel.
//!
//! "Nothing written" is read from the log itself (`record_counts`), not
//! only from the API's listing.

use chime::record::RecordKind;
use chime::server::ServeConfig;
use chime::testing::{
    Receiver, TestServer, client_error, in_seconds, only_invocation, record_count, record_counts,
};
use serde_json::{Value, json};

/// A server over a data directory the test keeps, to read its log.
async fn start() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServeConfig::new(dir.path())).await;
    (dir, server)
}

/// A create for the far future with `headers`.
fn create_with_headers(headers: Value) -> Value {
    json!({
        "type": "create_scheduled_event",
        "args": {
            "webhook": "http://example.invalid/hook",
            "schedule_at": "2099-01-01T00:00:00Z",
            "headers": headers,
        },
    })
}

/// `n` distinct, valid headers.
fn headers(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"name": format!("X-H{i}"), "value": "v"}))
        .collect()
}

/// Two headers whose names and values come to exactly `total` bytes.
fn headers_of_bytes(total: usize) -> Value {
    // "X-A" + "a" + "X-B" + the rest.
    let rest = total - 3 - 1 - 3;
    json!([
        {"name": "X-A", "value": "a"},
        {"name": "X-B", "value": "b".repeat(rest)},
    ])
}

fn delete(id: &str) -> Value {
    json!({"type": "delete_scheduled_event", "args": {"type": "one_off", "event_id": id}})
}

#[tokio::test]
async fn event_headers_past_the_limits_or_refused_by_http_are_refused_and_nothing_is_written() {
    let (dir, server) = start().await;
    let api = &server.api;
    // One event already there, so "nothing written" is not "still empty".
    api.create(create_with_headers(json!([]))["args"].clone())
        .await;

    let owned = [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "CONNECTION",
        "Upgrade",
        "TE",
        "Trailer",
        "Keep-Alive",
        "Proxy-Authorization",
        "proxy-connection",
    ];
    let mut cases: Vec<(String, Value, &str)> = vec![
        (
            "101 headers".into(),
            create_with_headers(Value::Array(headers(101))),
            "$.args.headers[100]",
        ),
        (
            "64 KiB + 1 of names and values".into(),
            create_with_headers(headers_of_bytes(64 * 1024 + 1)),
            "$.args.headers[1]",
        ),
        (
            "a name with a space".into(),
            create_with_headers(
                json!([{"name": "X-A", "value": "a"}, {"name": "X B", "value": "b"}]),
            ),
            "$.args.headers[1].name",
        ),
        (
            "a value with CR LF".into(),
            create_with_headers(
                json!([{"name": "X-A", "value": "a"}, {"name": "X-B", "value": "b\r\nX-Evil: 1"}]),
            ),
            "$.args.headers[1].value",
        ),
        (
            "a value with NUL".into(),
            create_with_headers(json!([{"name": "X-B", "value": "b\u{0}c"}])),
            "$.args.headers[0].value",
        ),
        (
            "an owned header read from the environment".into(),
            create_with_headers(json!([{"name": "Host", "value_from_env": "HOOK_HOST"}])),
            "$.args.headers[0].name",
        ),
    ];
    for name in owned {
        cases.push((
            format!("the owned header {name}"),
            create_with_headers(
                json!([{"name": "X-A", "value": "a"}, {"name": name, "value": "x"}]),
            ),
            "$.args.headers[1].name",
        ));
    }

    let before = record_counts(dir.path());
    for (why, body, path) in &cases {
        let (status, answer) = api.metadata(body.clone()).await;
        assert_eq!(status, 400, "{why}: {answer}");
        assert_eq!(answer["code"], "validation-failed", "{why}: {answer}");
        assert_eq!(answer["path"], *path, "{why}: {answer}");
        assert!(answer["error"].is_string(), "{why}: {answer}");
    }
    // Owned headers are named in the refusal, whatever their case.
    let (_, answer) = api
        .metadata(create_with_headers(
            json!([{"name": "tE", "value": "trailers"}]),
        ))
        .await;
    assert!(
        answer["error"].as_str().unwrap_or("").contains("tE"),
        "{answer}"
    );

    // Inside a bulk the path names the sub-request, and the whole bulk is
    // refused: its valid create is not written either.
    let (status, answer) = api
        .query(json!({"type": "bulk", "args": [
            create_with_headers(json!([])),
            create_with_headers(json!([{"name": "X-A", "value": "a"}, {"name": "Proxy-Authorization", "value": "x"}])),
        ]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["path"], "$.args[1].args.headers[1].name", "{answer}");
    let (status, answer) = api
        .query(json!({"type": "bulk", "args": [
            create_with_headers(json!([])),
            create_with_headers(Value::Array(headers(101))),
        ]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["path"], "$.args[1].args.headers[100]", "{answer}");

    assert_eq!(
        record_counts(dir.path()),
        before,
        "a refused create wrote a record"
    );
    assert_eq!(api.all_events().await.len(), 1);

    // At the limits exactly, creates are taken.
    api.create(create_with_headers(Value::Array(headers(100)))["args"].clone())
        .await;
    api.create(create_with_headers(headers_of_bytes(64 * 1024))["args"].clone())
        .await;
    // Content-Type and User-Agent are not owned: chime's own win at
    // delivery, as before.
    api.create(
        create_with_headers(json!([{"name": "User-Agent", "value": "mine"}]))["args"].clone(),
    )
    .await;
    assert_eq!(api.all_events().await.len(), 4);
    assert_eq!(record_count(dir.path(), RecordKind::EventCreated), 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_from_env_that_http_refuses_is_a_failed_attempt_naming_the_variable() {
    let var = "EVENT_LIMITS_TEST_CRLF_VALUE";
    // SAFETY: the name is unique to this test; std serialises its own
    // environment accesses, and nothing here reads the environment via libc.
    unsafe { std::env::set_var(var, "s3cret\r\nX-Injected: 1") };
    let receiver = Receiver::ok().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    // Only the variable's name is known at create: accepted.
    let id = api
        .create(json!({
            "webhook": receiver.url("/crlf"),
            "schedule_at": in_seconds(0.0).to_string(),
            "headers": [{"name": "X-Token", "value_from_env": var}],
        }))
        .await;
    let event = api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 1, "{event}");
    let invocation = only_invocation(api, &id).await;
    let message = client_error(&invocation);
    assert!(message.contains(var), "names the variable: {message}");
    assert!(message.contains("X-Token"), "names the header: {message}");
    assert!(message.contains("not valid in HTTP"), "{message}");
    let shown = invocation.to_string();
    assert!(
        !shown.contains("s3cret"),
        "the value is never shown: {shown}"
    );
    assert_eq!(receiver.count(), 0, "nothing was sent");
    server.stop().await;
}

#[tokio::test]
async fn duplicate_deletes_in_one_bulk_write_one_cancel_and_each_is_answered() {
    let (dir, server) = start().await;
    let api = &server.api;
    let far = create_with_headers(json!([]))["args"].clone();
    let a = api.create(far.clone()).await;
    let b = api.create(far.clone()).await;
    let kept = api.create(far).await;

    // The same delete three times.
    let (status, answer) = api
        .query(json!({"type": "bulk", "args": [delete(&a), delete(&a), delete(&a)]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!([{"message": "success"}, {"message": "success"}, {"message": "success"}])
    );
    assert_eq!(record_count(dir.path(), RecordKind::EventCancelled), 1);

    // The same event in two sub-requests, with a read between that sees it
    // gone.
    let (status, answer) = api
        .query(json!({"type": "bulk", "args": [
            delete(&b),
            {"type": "get_scheduled_events", "args": {"type": "one_off"}},
            delete(&b),
        ]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0], json!({"message": "success"}));
    assert_eq!(answer[2], json!({"message": "success"}));
    let listed: Vec<&Value> = answer[1]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {answer}"))
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(listed, [&json!(kept)], "{answer}");
    assert_eq!(record_count(dir.path(), RecordKind::EventCancelled), 2);

    // Once applied, a delete of a deleted event is `success` and writes
    // nothing, as in Hasura.
    let (status, answer) = api.metadata(delete(&a)).await;
    assert_eq!((status, &answer), (200, &json!({"message": "success"})));
    assert_eq!(record_count(dir.path(), RecordKind::EventCancelled), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_deletes_of_one_event_write_one_cancel() {
    let (dir, server) = start().await;
    let api = &server.api;
    // Many pairs, so that without the rule some pair surely plans both
    // deletes before either is applied (planning takes microseconds, the
    // append an fsync); with it, every pair writes exactly one cancel.
    const PAIRS: usize = 30;
    let far = create_with_headers(json!([]))["args"].clone();
    let mut ids = Vec::with_capacity(PAIRS);
    for _ in 0..PAIRS {
        ids.push(api.create(far.clone()).await);
    }
    for id in &ids {
        let ((first, a), (second, b)) =
            tokio::join!(api.metadata(delete(id)), api.metadata(delete(id)));
        let mut statuses = [first, second];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 200],
            "both are answered success (the loser writes nothing): {a} {b}"
        );
    }
    assert_eq!(
        record_count(dir.path(), RecordKind::EventCancelled),
        PAIRS,
        "one cancel per event"
    );
    assert!(api.all_events().await.is_empty());
    server.stop().await;
}
