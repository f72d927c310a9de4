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

/// A SIGTERM sent the moment the listening line is out is a graceful stop
/// (exit 0, the stop's snapshot written), not the signal's default action:
/// the handlers are installed before the line is printed. Over a large
/// state, where the server has the most to do after that line, the window
/// was widest (found by `benches/replay.rs -- restart`, where every such
/// stop died by the signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_right_after_the_listening_line_is_a_graceful_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 100,000 events due in an hour, straight into the log (blocking
    // appends, so off the runtime's worker).
    tokio::task::block_in_place(|| {
        let (log, _) = chime::log::Log::open(
            &chime::datadir::log_dir(dir.path()),
            &chime::log::LogOptions::default(),
        )
        .expect("open");
        let at = chime::record::UnixMicros::from_timestamp(in_seconds(3600.0));
        for chunk in 0..100u128 {
            let batch = (0..1000u128)
                .map(|i| {
                    chime::record::Record::EventCreated(chime::record::fixtures::event(
                        chime::record::EventId::from_u128(chunk * 1000 + i + 1),
                        "http://127.0.0.1:9/hook",
                        at,
                    ))
                    .encode()
                    .expect("encode")
                })
                .collect();
            log.append_blocking(batch).expect("append");
        }
    });
    for round in 0..3 {
        let mut child = ChildServer::start_with(dir.path(), &[], "info", Duration::from_secs(120));
        child.terminate();
        let status = child
            .wait_exit(Duration::from_secs(60))
            .await
            .expect("stops");
        assert!(
            status.success(),
            "round {round}: {status:?}\n{}",
            child.stderr()
        );
        // Each round's stop writes no snapshot when nothing changed, so
        // take it away: the next round replays the whole log again.
        let _ = std::fs::remove_dir_all(chime::snapshot::snapshot_dir(dir.path()));
    }
}
