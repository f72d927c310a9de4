//! A cancel that races the dispatcher, put deterministically between the
//! dispatcher's pick of an event and its check after `AttemptStarted`.
//!
//! The `AttemptStarted` group's fsync is held (`FaultFs::hold_next`), so the
//! API still shows the event `scheduled`; a delete is planned then and its
//! record queued for the next group, whose fsync a [`SyncGate`] holds in
//! turn, so that the dispatcher's `AttemptStarted` is applied (the event
//! shows `locked`) while the cancel is planned but neither durable nor
//! applied. Guarantee 4 of docs/reliability.md: once the delete is
//! acknowledged the event is never sent; the cancel, planned while the
//! event was `scheduled`, wins over the attempt whose start was still being
//! made durable.

use std::sync::Arc;

use chime::log::LogOptions;
use chime::projection::Status;
use chime::record::{EventId, Record, RecordKind};
use chime::server::ServeConfig;
use chime::testing::faultfs::{FaultFs, Op};
use chime::testing::gate::SyncGate;
use chime::testing::{Receiver, TestServer, eventually, in_seconds, records_in};
use serde_json::json;

/// The records about `id` in the data directory's log, with their sequence
/// numbers, oldest first.
fn records_of(data_dir: &std::path::Path, id: EventId) -> Vec<(u64, Record)> {
    records_in(data_dir)
        .into_iter()
        .filter(|(_, r)| r.event_id() == Some(id))
        .collect()
}

fn kinds(records: &[(u64, Record)]) -> Vec<RecordKind> {
    records.iter().map(|(_, r)| r.kind()).collect()
}

/// Runs a blocking wait of the file systems' holds off the runtime's
/// threads, which the server needs meanwhile.
async fn blocking(wait: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(wait)
        .await
        .expect("the wait did not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_planned_while_the_attempt_start_is_made_durable_wins_and_nothing_is_sent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs = FaultFs::new(5);
    let gate = SyncGate::new(Arc::new(fs.clone()));
    let mut config = ServeConfig::new(tmp.path());
    config.log = LogOptions {
        segment_bytes: 1 << 20,
        fs: Arc::new(gate.clone()),
    };
    let receiver = Receiver::ok().await;
    let server = TestServer::start(config.clone()).await;

    // Due in 2 s: time to arm the hold once the create is acknowledged, so
    // that the next fsync is the attempt's (checked below from the log).
    let id = server
        .api
        .create(json!({
            "webhook": receiver.url("/hook"),
            "schedule_at": in_seconds(2.0).to_string(),
        }))
        .await;
    let event_id: EventId = id.parse().expect("a uuid");
    fs.hold_next(Op::Sync);
    blocking({
        let fs = fs.clone();
        move || fs.wait_held()
    })
    .await;
    // The held fsync is the `AttemptStarted`'s: written, not yet durable,
    // not yet applied (the API shows the event `scheduled`).
    let before = records_of(tmp.path(), event_id);
    assert_eq!(
        kinds(&before),
        [RecordKind::EventCreated, RecordKind::AttemptStarted],
        "the held fsync is not the attempt's start"
    );
    let status = |server: &TestServer| {
        server
            .service
            .projection()
            .event(event_id)
            .map(|view| view.status)
    };
    assert_eq!(status(&server), Some(Status::Scheduled));

    // The delete is planned now, against `scheduled`, and its record queued
    // behind the held group.
    let delete = tokio::spawn({
        let api = server.api.clone();
        let id = id.clone();
        async move {
            api.metadata(json!({
                "type": "delete_scheduled_event",
                "args": {"type": "one_off", "event_id": id},
            }))
            .await
        }
    });
    eventually("the delete is planned", || async {
        server.cancels.contains(event_id).then_some(())
    })
    .await;

    // Hold the next group (the cancel's) at its fsync, then let the
    // attempt's start through: it is durable and applied, the cancel not.
    gate.hold_next_sync();
    fs.release();
    blocking({
        let gate = gate.clone();
        move || gate.wait_held()
    })
    .await;
    eventually("the attempt's start is applied", || async {
        (status(&server) == Some(Status::Locked)).then_some(())
    })
    .await;
    assert!(
        !delete.is_finished(),
        "the delete was answered before its record was durable"
    );
    gate.release();
    let (code, answer) = delete.await.expect("the delete task");
    assert_eq!(
        (code, answer),
        (200, json!({"message": "success"})),
        "the delete is acknowledged"
    );

    // Acknowledged: gone from every view.
    assert_eq!(status(&server), None);
    assert!(server.api.find_event(&id).await.is_none());
    // A graceful stop waits for an attempt in flight (the default grace is
    // 10 s): whatever the dispatcher was going to do, it has done.
    server.stop().await;
    assert_eq!(
        receiver.calls_for(&id),
        0,
        "the webhook was called for an event whose delete was acknowledged"
    );
    let after = records_of(tmp.path(), event_id);
    assert_eq!(
        kinds(&after),
        [
            RecordKind::EventCreated,
            RecordKind::AttemptStarted,
            RecordKind::EventCancelled
        ],
        "no outcome is recorded for an attempt that was never sent"
    );
    // The cancel really landed after the start, in a later group.
    assert!(after[2].0 > after[1].0);

    // Nothing is sent again after a restart: the attempt's start with no
    // outcome is not an interrupted attempt of a cancelled event. Checked
    // once a control event created after the restart has been delivered,
    // so the restarted dispatcher has run.
    let server = TestServer::start(config).await;
    let control = server
        .api
        .create(json!({
            "webhook": receiver.url("/hook"),
            "schedule_at": in_seconds(0.0).to_string(),
        }))
        .await;
    server.api.wait_status(&control, "delivered").await;
    assert_eq!(receiver.calls_for(&control), 1);
    assert_eq!(receiver.calls_for(&id), 0, "sent after a restart");
    assert!(server.api.find_event(&id).await.is_none());
    // A second delete is answered success, as Hasura answers it, and
    // writes nothing (checked below with the records).
    let (code, answer) = server
        .api
        .metadata(json!({
            "type": "delete_scheduled_event",
            "args": {"type": "one_off", "event_id": id},
        }))
        .await;
    assert_eq!(
        (code, &answer["message"]),
        (200, &json!("success")),
        "{answer}"
    );
    server.stop().await;
    assert_eq!(
        kinds(&records_of(tmp.path(), event_id)),
        kinds(&after),
        "nothing more was recorded about the cancelled event"
    );
}
