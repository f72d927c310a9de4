//! Connection limits over real sockets (issue 11, point 2): a client that
//! sends half a request head is cut off, connections past
//! `--max-connections` wait without breaking the server, and outside
//! connections cannot take the descriptors a delivery needs.
//!
//! The waits that expect nothing to happen are the point of the test they
//! are in; a slow machine can only make them pass, never fail.

use std::time::Duration;

use serde_json::json;

use chime::server::ConnLimits;
use chime::testing::conn::{closed_within, healthz_within, open_idle, send_partial};
use chime::testing::{ChildServer, Receiver, TestServer, WAIT, in_seconds};

/// Limits with a short header timeout and everything else at its default.
fn header_timeout(d: Duration) -> ConnLimits {
    ConnLimits {
        request_header_timeout: d,
        ..ConnLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_head_is_cut_off_after_the_request_header_timeout() {
    let server =
        TestServer::fresh_with(|c| c.conn = header_timeout(Duration::from_millis(200))).await;
    let mut slow = send_partial(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    // Well under the 30 s hyper would otherwise allow.
    assert!(
        closed_within(&mut slow, WAIT).await,
        "a half-sent head still holds its connection"
    );
    // The server itself is fine.
    assert_eq!(healthz_within(server.addr, WAIT).await, Some(200));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_coming_is_cut_off_after_the_idle_timeout() {
    let server = TestServer::fresh_with(|c| {
        c.conn = ConnLimits {
            idle_timeout: Duration::from_millis(200),
            ..ConnLimits::default()
        }
    })
    .await;
    // The head is complete, so only the idle timeout (not the header
    // timeout, 10 s, nor the body timeout, 30 s) can end this.
    let mut stalled = send_partial(
        server.addr,
        b"POST /v1/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":",
    )
    .await;
    assert!(
        closed_within(&mut stalled, Duration::from_secs(5)).await,
        "a stalled body still holds its connection"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_never_finished_is_cut_off_after_the_request_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = chime::testing::self_signed_cert(dir.path());
    let server = TestServer::fresh_with(|c| {
        c.tls = Some((cert, key));
        c.conn = header_timeout(Duration::from_millis(200));
    })
    .await;
    // A TCP connection that never sends its ClientHello; the fixed 10 s
    // handshake timeout would outlast this wait.
    let mut silent = send_partial(server.addr, b"").await;
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "a TLS connection with no handshake still holds its place"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_wait_and_healthz_answers_once_others_close() {
    let server = TestServer::fresh_with(|c| {
        c.conn = ConnLimits {
            max_connections: 4,
            request_header_timeout: Duration::from_secs(60),
            ..ConnLimits::default()
        }
    })
    .await;
    let idle = open_idle(server.addr, 4).await;
    // The fifth waits in the backlog while the four hold every place.
    assert_eq!(
        healthz_within(server.addr, Duration::from_millis(500)).await,
        None,
        "a fifth connection was served past --max-connections 4"
    );
    drop(idle);
    assert_eq!(healthz_within(server.addr, WAIT).await, Some(200));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_take_the_descriptors_a_delivery_needs() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    // 256 descriptors, 8 calls in flight: without a reserve, 400 idle
    // connections take every descriptor and the call fails with EMFILE.
    let child = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || ChildServer::start_with_nofile(&dir, &["--max-in-flight", "8"], 256)
    })
    .await
    .unwrap();
    let id = child
        .api
        .create(json!({
            "webhook": receiver.url("/due"),
            "schedule_at": in_seconds(2.0).to_string(),
            "retry_conf": {"num_retries": 0},
        }))
        .await;
    let idle = open_idle(child.addr, 400).await;
    let calls = receiver.wait_for_within(1, WAIT).await;
    assert_eq!(calls.len(), 1, "stderr:\n{}", child.stderr());
    drop(idle);
    let event = child.api.wait_status(&id, "delivered").await;
    assert_eq!(event["tries"], 1, "{event}");
}
