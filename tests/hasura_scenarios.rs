//! Hasura's own scenario tests for one-off scheduled events, ported to
//! real sockets: `server/tests-py/test_scheduled_triggers.py`
//! (`TestScheduledEvent::test_scheduled_events`, Hasura v2) and the
//! missing-environment-variable case of its api-tests. The expectations
//! are Hasura's, written out; where chime answers differently on purpose
//! (docs/architecture.md, "Hasura compatibility") the test says so.
//!
//! Hasura's test reads its database (`hdb_catalog.hdb_scheduled_events`)
//! for the statuses and `created_at`; here the same facts come from the
//! metadata API, which is what a client sees.

use chime::testing::{ChildServer, Receiver, Reply, client_error, only_invocation};
use serde_json::{Value, json};

/// `datetime.utcnow()` as Hasura's test spells it (`%Y-%m-%dT%H:%M:%S.%fZ`).
fn utc_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_scheduled_events_as_hasura_runs_it() {
    let receiver = Receiver::routed(
        vec![("/fail", Reply::status(500).body("fail"))],
        Reply::ok().body("ok"),
    )
    .await;
    let domain = receiver.url("");
    let dir = tempfile::tempdir().expect("tempdir");
    let child = ChildServer::spawn_on(
        dir.path(),
        "127.0.0.1:0",
        &[],
        &[("SCHEDULED_TRIGGERS_WEBHOOK_DOMAIN", domain.as_str())],
    )
    .await;
    let payload = json!({"foo": "baz"});
    let header_conf = json!([{"name": "header-key", "value": "header-value"}]);
    // One `bulk` on /v1/query, as the Python test sends it.
    let (status, resp) = child
        .api
        .query(json!({
            "type": "bulk",
            "args": [
                // Succeeds.
                {"type": "create_scheduled_event", "args": {
                    "webhook": "{{SCHEDULED_TRIGGERS_WEBHOOK_DOMAIN}}/test",
                    "schedule_at": utc_now(),
                    "payload": payload,
                    "headers": header_conf,
                    "comment": "test scheduled event"
                }},
                // Fails at once, with 'dead'.
                {"type": "create_scheduled_event", "args": {
                    "webhook": "{{SCHEDULED_TRIGGERS_WEBHOOK_DOMAIN}}/",
                    "schedule_at": "2020-01-01T00:00:00Z",
                    "payload": payload,
                    "headers": header_conf
                }},
                // Fails on request, trying twice.
                {"type": "create_scheduled_event", "args": {
                    "webhook": format!("{domain}/fail"),
                    "schedule_at": utc_now(),
                    "payload": payload,
                    "headers": header_conf,
                    "retry_conf": {
                        "num_retries": 1,
                        "retry_interval_seconds": 1,
                        "timeout_seconds": 1,
                        "tolerance_seconds": 21600
                    }
                }}
            ]
        }))
        .await;
    assert_eq!(status, 200, "{resp}");
    let answers = resp.as_array().expect("a list, one answer per command");
    assert_eq!(answers.len(), 3, "{resp}");
    assert!(answers.iter().all(|r| r["event_id"].is_string()), "{resp}");
    let ids: Vec<&str> = answers
        .iter()
        .map(|r| r["event_id"].as_str().expect("event_id"))
        .collect();

    // "until_asserts_pass": statuses error (2 tries), delivered (1), dead (0).
    let success = child.api.wait_status(ids[0], "delivered").await;
    let dead = child.api.wait_status(ids[1], "dead").await;
    let failed = child.api.wait_status(ids[2], "error").await;
    assert_eq!(success["tries"], 1);
    assert_eq!(dead["tries"], 0);
    assert_eq!(failed["tries"], 2, "num_retries + 1");

    // The three requests the webhook got: two to /fail, one to /test.
    let mut got = receiver.received();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/fail", "/fail", "/test"]);
    let event_success = &got[2];
    assert_eq!(event_success.header_values("header-key"), ["header-value"]);
    let body = event_success.json();
    assert_eq!(body["payload"], payload);
    // Hasura compares with the row's created_at; the API shows the same.
    assert_eq!(body["created_at"], success["created_at"]);
    for key in ["scheduled_time", "created_at", "id"] {
        assert!(body.get(key).is_some(), "{key} missing from {body}");
    }
    assert_eq!(body["id"], ids[0]);
    // No other request arrived ("is_queue_empty").
    assert_eq!(receiver.count(), 3);
}

/// The api-tests case: a webhook whose `{{VAR}}` is not set. Hasura logs a
/// failed invocation whose `client_error` names the variable and ends the
/// event `error` once its tries are used up; it never calls anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_naming_a_missing_env_var_is_a_logged_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = ChildServer::spawn_on(dir.path(), "127.0.0.1:0", &[], &[]).await;
    let id = child
        .api
        .create(json!({
            "webhook": "{{SCHEDULED_TRIGGERS_NEVER_SET}}/test",
            "schedule_at": utc_now(),
            "payload": {"foo": "baz"}
        }))
        .await;
    let event = child.api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 1);
    let invocation = only_invocation(&child.api, &id).await;
    assert_eq!(invocation["status"], Value::Null);
    assert_eq!(invocation["response"]["type"], "client_error");
    let message = client_error(&invocation);
    assert!(
        message.contains("SCHEDULED_TRIGGERS_NEVER_SET"),
        "{message}"
    );
}
