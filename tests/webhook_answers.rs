//! Two webhook answers end to end: a `Retry-After` past the event's
//! tolerance ends it `dead` instead of parking it, and a gzip-encoded body
//! is logged as the raw bytes that came (chime never decompresses).

use chime::record::{InvocationResponse, Record};
use chime::server::ServeConfig;
use chime::testing::{
    Receiver, Reply, TestServer, gzip_stored, in_seconds, only_invocation, records_in,
};
use serde_json::json;

/// A 503 asking to come back in an hour, for an event with a 2 s
/// tolerance and a retry left: the retry is set to the first instant the
/// event is too late, where the dispatcher finds it `dead`, without a
/// second call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_past_the_tolerance_ends_dead() {
    let receiver = Receiver::start(vec![], Reply::status(503).header("Retry-After", "3600")).await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/later"),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {"num_retries": 3, "retry_interval_seconds": 1, "tolerance_seconds": 2},
        }))
        .await;
    let event = api.wait_status(&id, "dead").await;
    assert_eq!(event["tries"], 1, "{event}");
    assert_eq!(receiver.count(), 1, "called again past the tolerance");
    server.stop().await;
}

/// The receiver answers gzip bytes with `Content-Encoding: gzip`: the
/// stored body is those bytes, not the text inside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_body_is_logged_raw() {
    let plain = b"plain text inside the gzip";
    let receiver = Receiver::start(vec![], Reply::ok().gzip(plain)).await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(ServeConfig::new(dir.path())).await;
    let id = server
        .api
        .create(json!({"webhook": receiver.url("/gz"), "schedule_at": in_seconds(0.0).to_string()}))
        .await;
    server.api.wait_status(&id, "delivered").await;
    let invocation = only_invocation(&server.api, &id).await;
    let shown = invocation["response"]["data"]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    // The gzip magic (0x1f 0x8b, the second shown as U+FFFD), not the text.
    assert!(
        shown.starts_with("\u{1f}\u{fffd}"),
        "decompressed: {shown:?}"
    );
    server.stop().await;
    let bodies: Vec<Vec<u8>> = records_in(dir.path())
        .into_iter()
        .filter_map(|(_, record)| match record {
            Record::AttemptSucceeded { invocation, .. } => match invocation.response {
                InvocationResponse::Webhook { body, .. } => Some(body),
                InvocationResponse::ClientError { .. } => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(bodies, [gzip_stored(plain)]);
}
