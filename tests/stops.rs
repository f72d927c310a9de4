//! Graceful stops through the binary: a webhook call that finishes inside
//! `--shutdown-grace` after SIGTERM or SIGINT is recorded as delivered
//! before chime exits, so a restart does not send it again. "Not sent
//! again" is only checked once a control event created after the restart
//! has been delivered: that proves the restarted dispatcher ran.

use std::time::Duration;

use chime::testing::{ChildServer, Receiver, Reply, WAIT, in_seconds, only_invocation};
use serde_json::json;

/// How the test asks chime to stop.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Int,
}

/// A call held 2 s by the webhook is in flight when `stop` arrives; with a
/// 10 s grace it finishes, chime exits 0, and after a restart the event
/// is `delivered` on its one try and was called exactly once.
async fn a_call_inside_the_grace_is_delivered_once(stop: Stop) {
    let receiver = Receiver::start(
        vec![Reply::ok().body("done").after(Duration::from_secs(2))],
        Reply::ok(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildServer::spawn(dir.path(), &["--shutdown-grace", "10"]).await;
    let id = child
        .api
        .create(
            json!({"webhook": receiver.url("/slow"), "schedule_at": in_seconds(0.0).to_string()}),
        )
        .await;
    receiver.wait_for(1).await;
    match stop {
        Stop::Term => child.terminate(),
        Stop::Int => child.interrupt(),
    }
    let Some(status) = child.wait_exit(WAIT).await else {
        panic!("{stop:?}: chime did not exit; stderr:\n{}", child.stderr())
    };
    assert!(
        status.success(),
        "{stop:?}: {status}; stderr:\n{}",
        child.stderr()
    );

    let again = ChildServer::spawn(dir.path(), &[]).await;
    let event = again.api.event(&id).await;
    assert_eq!(event["status"], "delivered", "{stop:?}: {event}");
    assert_eq!(event["tries"], 1, "{stop:?}: {event}");
    let invocation = only_invocation(&again.api, &id).await;
    assert_eq!(
        invocation["response"]["data"]["body"], "done",
        "{invocation}"
    );
    let control = again
        .api
        .create(json!({"webhook": receiver.url("/control"), "schedule_at": in_seconds(0.0).to_string()}))
        .await;
    again.api.wait_status(&control, "delivered").await;
    assert_eq!(receiver.calls_for(&control), 1);
    assert_eq!(
        receiver.calls_for(&id),
        1,
        "{stop:?}: sent again after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_call_finish_inside_the_grace_and_it_is_not_sent_again() {
    a_call_inside_the_grace_is_delivered_once(Stop::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_a_call_finish_inside_the_grace_and_it_is_not_sent_again() {
    a_call_inside_the_grace_is_delivered_once(Stop::Int).await;
}
