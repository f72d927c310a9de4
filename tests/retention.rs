//! Retention (`--retain-finished`) through the API, with a manual clock:
//! finished events leave every view once finished for long enough, by a
//! record that a restart replays; pending and recently finished events
//! stay; `0` keeps everything.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use chime::clock::ManualClock;
use chime::record::{Record, RecordKind, UnixMicros};
use chime::server::ServeConfig;
use chime::testing::{ApiClient, Receiver, TestServer, chime_binary, eventually, records_in};

const SECOND: i64 = 1_000_000;
const DAY: i64 = 86_400 * SECOND;
/// Where the manual clock starts: 2030-03-17, any fixed time would do.
const T0: i64 = 1_900_000_000 * SECOND;
const RETAIN: Duration = Duration::from_secs(30 * 86_400);

fn at(micros: i64) -> String {
    UnixMicros(micros).to_rfc3339()
}

/// A server over `dir` with the manual `clock`, retaining finished events
/// for `retain`, whose retention looks every 20 ms (not every minute).
async fn serve(dir: &Path, clock: &Arc<ManualClock>, retain: Option<Duration>) -> TestServer {
    let mut config = ServeConfig::new(dir);
    config.retain_finished = retain;
    config.retire_every = Duration::from_millis(20);
    TestServer::start_with_clock(config, clock.clone()).await
}

fn ids_of(rows: &Value, key: &str, id: &str) -> Vec<String> {
    rows[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {rows}"))
        .iter()
        .map(|row| row[id].as_str().expect("an id").to_owned())
        .collect()
}

/// Every view of the API shows exactly the events `shown` (with their
/// statuses) and none of `gone`, nor their invocation logs.
async fn check_views(api: &ApiClient, shown: &[(&str, &str)], gone: &[&str]) {
    let mut listed: Vec<String> = api
        .all_events()
        .await
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_owned())
        .collect();
    listed.sort();
    let mut want: Vec<String> = shown.iter().map(|(id, _)| (*id).to_owned()).collect();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(api.count().await, shown.len() as u64);
    for status in ["scheduled", "locked", "delivered", "error", "dead"] {
        let answer = api
            .events(json!({"type": "one_off", "status": [status], "get_rows_count": true}))
            .await;
        let mut listed = ids_of(&answer, "events", "id");
        listed.sort();
        let mut want: Vec<String> = shown
            .iter()
            .filter(|(_, s)| *s == status)
            .map(|(id, _)| (*id).to_owned())
            .collect();
        want.sort();
        assert_eq!(listed, want, "{status}");
        assert_eq!(answer["count"], want.len(), "{status}");
    }
    for id in gone {
        assert!(api.invocations_of(id).await.is_empty(), "{id}");
        let answer = api
            .invocations(json!({"type": "one_off", "event_id": id, "get_rows_count": true}))
            .await;
        assert_eq!(answer["count"], 0, "{id}: {answer}");
    }
    let every = api
        .invocations(json!({"type": "one_off", "get_rows_count": true}))
        .await;
    let of_events = ids_of(&every, "invocations", "event_id");
    assert!(
        of_events.iter().all(|id| !gone.contains(&id.as_str())),
        "{every}"
    );
    assert_eq!(every["count"], of_events.len());
}

fn retirements(dir: &Path) -> Vec<Record> {
    records_in(dir)
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.kind() == RecordKind::EventsRetired)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_events_leave_every_view_after_retention_and_stay_gone_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(UnixMicros(T0)));
    let receiver = Receiver::ok_or_fail().await;
    let server = serve(dir.path(), &clock, Some(RETAIN)).await;
    let api = &server.api;
    let create = |path: &str, schedule_at: i64| {
        api.create(json!({"webhook": receiver.url(path), "schedule_at": at(schedule_at)}))
    };
    let delivered = create("/ok", T0).await;
    let error = create("/fail", T0).await;
    // Seven hours late, past the default tolerance of six.
    let dead = create("/ok", T0 - 7 * 3_600 * SECOND).await;
    let pending = create("/ok", T0 + 365 * DAY).await;
    api.wait_status(&delivered, "delivered").await;
    api.wait_status(&error, "error").await;
    api.wait_status(&dead, "dead").await;
    assert_eq!(api.invocations_of(&delivered).await.len(), 1);
    assert_eq!(api.invocations_of(&error).await.len(), 1);

    // Twenty days on, one more finishes; nothing is old enough yet.
    clock.set(UnixMicros(T0 + 20 * DAY));
    let recent = create("/ok", T0 + 20 * DAY).await;
    api.wait_status(&recent, "delivered").await;
    check_views(
        api,
        &[
            (&delivered, "delivered"),
            (&error, "error"),
            (&dead, "dead"),
            (&pending, "scheduled"),
            (&recent, "delivered"),
        ],
        &[],
    )
    .await;

    // Thirty days and a second after the first three finished, they go.
    clock.set(UnixMicros(T0 + 30 * DAY + SECOND));
    eventually("the first three are retired", || async {
        (api.count().await == 2).then_some(())
    })
    .await;
    let shown = [
        (pending.as_str(), "scheduled"),
        (recent.as_str(), "delivered"),
    ];
    let gone = [delivered.as_str(), error.as_str(), dead.as_str()];
    check_views(api, &shown, &gone).await;
    assert_eq!(api.invocations_of(&recent).await.len(), 1);
    // One record did it, cut at now less the retention.
    assert_eq!(
        retirements(dir.path()),
        vec![Record::EventsRetired {
            finished_before: UnixMicros(T0 + SECOND),
            at: UnixMicros(T0 + 30 * DAY + SECOND),
        }]
    );
    server.stop().await;

    // Restarted with retention off: the views are the same, because the
    // record is replayed, not because a pass retired them again.
    let server = serve(dir.path(), &clock, None).await;
    check_views(&server.api, &shown, &gone).await;
    assert_eq!(retirements(dir.path()).len(), 1);
    server.stop().await;

    // `chime log stats` counts them, `dump` shows the record.
    let log = |args: &[&str]| {
        let out = std::process::Command::new(chime_binary())
            .arg("log")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("chime log runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let stats: Value = serde_json::from_str(&log(&["stats", "--json"])).expect("json");
    assert_eq!(stats["events"]["retired"], 3, "{stats}");
    assert_eq!(stats["events"]["total"], 2, "{stats}");
    assert_eq!(stats["records"]["by_kind"]["events_retired"], 1, "{stats}");
    // The retired events' records are garbage: created, started and the
    // outcome of the delivered and the error one, created and expired of
    // the dead one. The retirement record itself is not.
    assert_eq!(stats["records"]["garbage"]["records"], 3 + 3 + 2, "{stats}");
    let dump = log(&["dump", "--kind", "events_retired"]);
    assert!(
        dump.contains(&format!("finished_before={}", at(T0 + SECOND))),
        "{dump}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_finished_0_keeps_finished_events_forever() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(UnixMicros(T0)));
    let receiver = Receiver::ok().await;
    let server = serve(dir.path(), &clock, None).await;
    let api = &server.api;
    let delivered = api
        .create(json!({"webhook": receiver.url("/"), "schedule_at": at(T0)}))
        .await;
    api.wait_status(&delivered, "delivered").await;

    // Ten years on, the task run with `0` ends at once and appends
    // nothing (its stop is never sent).
    clock.set(UnixMicros(T0 + 3_650 * DAY));
    let (_never, stop) = tokio::sync::watch::channel(false);
    tokio::time::timeout(
        Duration::from_secs(10),
        chime::retention::run(server.service.clone(), None, Duration::ZERO, stop),
    )
    .await
    .expect("retention with 0 does nothing");
    server.stop().await;
    let server = serve(dir.path(), &clock, None).await;
    check_views(&server.api, &[(&delivered, "delivered")], &[]).await;
    assert_eq!(server.api.invocations_of(&delivered).await.len(), 1);
    assert!(retirements(dir.path()).is_empty());
    server.stop().await;

    // The same data with a retention retires it: the event was old enough.
    let server = serve(dir.path(), &clock, Some(RETAIN)).await;
    eventually("the event is retired", || async {
        (server.api.count().await == 0).then_some(())
    })
    .await;
    check_views(&server.api, &[], &[&delivered]).await;
    server.stop().await;
}
