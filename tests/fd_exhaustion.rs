//! A delivery that chime cannot make for want of file descriptors is
//! chime's fault, not the webhook's (issue 11, point 2): the attempt is
//! recorded as interrupted, uses up no try, and is sent again.
//!
//! Its own test binary with a single test: it lowers the whole process's
//! `RLIMIT_NOFILE`, which would break any test running beside it.

use serde_json::json;

use chime::testing::conn::NoNewDescriptors;
use chime::testing::{Receiver, TestServer, eventually, in_seconds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_runs_out_of_descriptors_is_interrupted_and_sent_again() {
    let receiver = Receiver::ok().await;
    let server = TestServer::fresh().await;
    let id = server
        .api
        .create(json!({
            "webhook": receiver.url("/hook"),
            "schedule_at": in_seconds(1.0).to_string(),
            // One try: were the shortage counted as the webhook's failure,
            // the event would end `error`.
            "retry_conf": {"num_retries": 0},
        }))
        .await;
    let event_id: chime::record::EventId = id.parse().unwrap();
    let shortage = NoNewDescriptors::take();
    // Watched through the projection: the API would need a descriptor.
    eventually("the attempt is recorded as interrupted", || async {
        let view = server.service.projection().event(event_id)?;
        (view.interrupted >= 1).then_some(())
    })
    .await;
    drop(shortage);
    let event = server.api.wait_status(&id, "delivered").await;
    assert_eq!(event["tries"], 1, "{event}");
    assert_eq!(receiver.count(), 1);
    server.stop().await;
}
