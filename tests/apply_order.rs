//! Live state equals replayed state (issue 14, point 1): records are
//! applied to the projection in log order, whatever order their appenders'
//! tasks wake in.
//!
//! - A batch committed in the same group as a later one is applied before
//!   it even while its appender sleeps (a [`WakeHold`] holds that
//!   appender's wake-up, deterministically).
//! - Under a concurrent load of creates, cancels and deliveries the
//!   sequence numbers applied only increase (the service counts any that
//!   does not), and every API view answers the same bytes live and after a
//!   restart on the same data directory (a replay).
//! - A group whose write fails is applied not at all, and the next group,
//!   which takes its sequence numbers, is applied in its place.
//!
//! [`WakeHold`]: chime::testing::wake::WakeHold

use std::sync::Arc;

use chime::clock::SystemClock;
use chime::datadir;
use chime::log::LogOptions;
use chime::log::fs::StdFs;
use chime::record::{EventId, Record, UnixMicros, fixtures};
use chime::server::ServeConfig;
use chime::service::Service;
use chime::testing::append::queue_service_append;
use chime::testing::faultfs::{Errno, FaultFs, Op, Times};
use chime::testing::gate::SyncGate;
use chime::testing::{ApiClient, Receiver, TestServer, eventually, from_now, records_in, ts};
use serde_json::json;

/// An event nobody will call (due in 2099), with id `n`.
fn create(n: u128) -> Record {
    Record::EventCreated(fixtures::event(
        EventId::from_u128(n),
        "http://127.0.0.1:9/never",
        UnixMicros(4_070_908_800_000_000),
    ))
}

/// Runs a blocking wait of the sync gate off the runtime's threads.
async fn blocking(wait: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(wait)
        .await
        .expect("the wait did not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_applied_before_a_later_one_of_its_group_even_while_its_appender_sleeps() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let gate = SyncGate::new(Arc::new(StdFs));
    let opts = LogOptions {
        segment_bytes: 1 << 20,
        fs: Arc::new(gate.clone()),
    };
    let (service, _) =
        Service::open(&datadir::log_dir(tmp.path()), &opts, Arc::new(SystemClock)).expect("open");
    let service = Arc::new(service);
    let first = service.append([create(1)]).await.expect("append")[0].seq;

    // A group commit held at its fsync, so that the next two appends queue
    // behind it, in this order, and form the next group together.
    gate.hold_next_sync();
    let held = queue_service_append(&service, vec![create(2)]);
    let held = tokio::spawn(held);
    blocking({
        let gate = gate.clone();
        move || gate.wait_held()
    })
    .await;
    // The earlier of the two is held once durable, as a task the runtime
    // is slow to wake.
    service.wake_hold().hold(first + 2);
    let earlier = tokio::spawn(queue_service_append(&service, vec![create(3)]));
    let later = tokio::spawn(queue_service_append(&service, vec![create(4)]));
    gate.release();
    held.await.expect("task").expect("append");
    service.wake_hold().wait_held().await;

    let later = later.await.expect("task").expect("append");
    assert_eq!(
        later[0].seq,
        first + 3,
        "the two formed one group, in order"
    );
    // The later appender has returned while the earlier one sleeps: what
    // the log holds before the later batch must be visible all the same,
    // as a replay of the log would show it.
    let logged: Vec<EventId> = records_in(tmp.path())
        .into_iter()
        .filter_map(|(_, r)| r.event_id())
        .collect();
    assert_eq!(logged.len(), 4, "{logged:?}");
    {
        let projection = service.projection();
        for id in &logged {
            assert!(
                projection.event(*id).is_some(),
                "event {id} is in the log before what was applied, but not applied"
            );
        }
    }
    assert_eq!(service.last_applied_seq(), Some(first + 3));

    service.wake_hold().release();
    earlier.await.expect("task").expect("append");
    assert_eq!(service.apply_order_violations(), 0);
    assert_eq!(service.last_applied_seq(), Some(first + 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_group_is_applied_not_at_all_and_the_next_is_applied_in_its_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs = FaultFs::new(14);
    let (service, _) = Service::open(
        &datadir::log_dir(tmp.path()),
        &fs.log_options(1 << 20),
        Arc::new(SystemClock),
    )
    .expect("open");
    let service = Arc::new(service);
    let first = service.append([create(1)]).await.expect("append")[0].seq;

    // Two batches queued behind a held fsync form the next group; its
    // write fails (a full disk), so both are refused.
    fs.hold_next(Op::Sync);
    let held = tokio::spawn(queue_service_append(&service, vec![create(2)]));
    blocking({
        let fs = fs.clone();
        move || fs.wait_held()
    })
    .await;
    let refused = [
        tokio::spawn(queue_service_append(&service, vec![create(3)])),
        tokio::spawn(queue_service_append(&service, vec![create(4), create(5)])),
    ];
    fs.fail(Op::Write, Errno::NoSpace, Times::Once);
    fs.release();
    held.await.expect("task").expect("append");
    for append in refused {
        let answer = append.await.expect("task");
        assert!(answer.is_err(), "{answer:?}");
    }
    // The next batch takes the refused group's sequence numbers: applied
    // in order, with nothing of the refused group before or beside it.
    let next = service.append([create(6)]).await.expect("append");
    assert_eq!(next[0].seq, first + 2);
    let logged: Vec<EventId> = records_in(tmp.path())
        .into_iter()
        .filter_map(|(_, r)| r.event_id())
        .collect();
    let expected: Vec<EventId> = [1, 2, 6].map(EventId::from_u128).into();
    assert_eq!(logged, expected);
    let projection = service.projection();
    for n in 1..=6 {
        let id = EventId::from_u128(n);
        assert_eq!(
            projection.event(id).is_some(),
            logged.contains(&id),
            "event {n}: applied if and only if the log holds it"
        );
    }
    drop(projection);
    assert_eq!(service.last_applied_seq(), Some(first + 2));
    assert_eq!(service.apply_order_violations(), 0);
}

/// A delete whose answer does not matter: the event may be delivered,
/// failed or in flight by then, which is the race this test wants.
async fn delete(api: &ApiClient, id: &str) {
    let (status, answer) = api
        .metadata(json!({
            "type": "delete_scheduled_event",
            "args": {"type": "one_off", "event_id": id},
        }))
        .await;
    assert!(status < 500, "delete answered {status}: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_concurrent_creates_cancels_and_deliveries_apply_order_holds_and_a_restart_shows_the_same()
 {
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 6;
    let tmp = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::ok_or_fail().await;
    let config = ServeConfig::new(tmp.path());
    let server = TestServer::start(config.clone()).await;

    let mut clients = vec![];
    for c in 0..CLIENTS {
        let api = server.api.clone();
        let (ok, fail) = (receiver.url("/ok"), receiver.url("/fail"));
        clients.push(tokio::spawn(async move {
            for r in 0..ROUNDS {
                let webhook = if (c + r) % 3 == 0 { &fail } else { &ok };
                let due = api
                    .create(json!({
                        "webhook": webhook,
                        "schedule_at": from_now(0),
                        "retry_conf": {"num_retries": 0},
                    }))
                    .await;
                let later = api
                    .create(json!({"webhook": ok, "schedule_at": from_now(3600)}))
                    .await;
                if r % 2 == 0 {
                    delete(&api, &later).await;
                }
                // A cancel racing the event's delivery: its record and
                // the attempt's may share a group commit.
                if (c + r) % 4 == 1 {
                    delete(&api, &due).await;
                }
            }
        }));
    }
    for client in clients {
        client.await.expect("client task");
    }
    // Quiet: nothing in flight, nothing due (what is scheduled is an hour
    // away), so that the restart has nothing to do but replay.
    let soon = ts(&json!(from_now(600)));
    eventually("every due event is finished", || async {
        let events = server.api.all_events().await;
        events
            .iter()
            .all(|e| match e["status"].as_str() {
                Some("scheduled") => ts(&e["scheduled_time"]) > soon,
                Some("locked") => false,
                _ => true,
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        server.service.apply_order_violations(),
        0,
        "a record was applied after one the log holds after it"
    );
    let live = server.api.views().await;
    assert!(
        live.len() > CLIENTS * ROUNDS,
        "every event's invocations are among the views"
    );
    server.stop().await;

    let restarted = TestServer::start(config).await;
    let replayed = restarted.api.views().await;
    assert_eq!(live.len(), replayed.len());
    for ((args, live), (_, replayed)) in live.iter().zip(&replayed) {
        assert_eq!(live, replayed, "view {args} differs after a restart");
    }
    restarted.stop().await;
}
