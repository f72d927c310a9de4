//! Compaction (issue 14, point 4) through a running server, with a manual
//! clock and small segments:
//!
//! - every API view answers the same bytes before and after each
//!   compaction, and after restarts from the snapshot it writes and from a
//!   full replay of the compacted segments;
//! - the log shrinks to within twice its live bytes plus the active
//!   segment, and `chime log stats` then finds nothing left to reclaim;
//! - events pending through compactions are delivered with their payloads
//!   and headers byte for byte;
//! - no record appears twice, and `chime log verify` passes (its snapshot
//!   check included);
//! - `chime log compact` does the same offline and refuses a data
//!   directory a server holds.
//!
//! Crash safety is `tests/compaction_crash.rs`'s.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use chime::clock::ManualClock;
use chime::log::LogOptions;
use chime::log::fs::StdFs;
use chime::record::UnixMicros;
use chime::server::ServeConfig;
use chime::snapshot::{SnapshotStore, snapshot_dir};
use chime::testing::{Receiver, TestServer, chime_binary, eventually, log_verify, records_in};

const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SECOND;
/// Where the manual clock starts; any fixed time would do.
const T0: i64 = 1_900_000_000 * SECOND;
const SEGMENT_BYTES: u64 = 8 * 1024;

fn at(micros: i64) -> String {
    UnixMicros(micros).to_rfc3339()
}

fn config(dir: &Path) -> ServeConfig {
    let mut config = ServeConfig::new(dir);
    config.log = LogOptions::with_segment_bytes(SEGMENT_BYTES);
    config.retain_finished = Some(Duration::from_secs(3_600));
    config.retire_every = Duration::from_millis(20);
    // Driven by the test, one compaction at a time.
    config.compaction_interval = None;
    config
}

/// Runs `chime ARGS --data-dir DIR` and returns its exit code and stdout.
fn chime(args: &[&str], dir: &Path) -> (Option<i32>, String) {
    let output = Command::new(chime_binary())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run chime");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

fn stats(dir: &Path) -> Value {
    let (code, out) = chime(&["log", "stats", "--json"], dir);
    assert_eq!(code, Some(0), "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The bytes of the log's segment files.
fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(chime::datadir::log_dir(dir))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).expect("metadata").len())
        .sum()
}

/// Compacts the server's log once, writing a snapshot as `serve` does.
async fn compact(server: &TestServer, dir: &Path) -> chime::compaction::Compacted {
    let service = server.service.clone();
    let store = SnapshotStore::open(Arc::new(StdFs), &snapshot_dir(dir)).expect("snapshot store");
    tokio::task::spawn_blocking(move || chime::compaction::compact(&service, Some(&store)))
        .await
        .expect("compaction task")
        .expect("compaction")
}

/// The log holds no record twice, in order: sequence numbers only increase.
fn assert_each_record_once(dir: &Path) {
    let seqs: Vec<u64> = records_in(dir).into_iter().map(|(seq, _)| seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers repeat or go back: {seqs:?}"
    );
}

/// Segment bytes within twice the live frame bytes, plus the active segment
/// and every segment's header, as `chime log stats` counts them.
fn assert_within_bound(dir: &Path) {
    let s = stats(dir);
    let segments = s["segments"].as_array().expect("segments");
    let mut files = 0u64;
    let mut live = 0u64;
    let mut active = 0u64;
    for seg in segments {
        let bytes = seg["bytes"].as_u64().expect("bytes");
        files += bytes;
        if seg["state"] == "active" {
            active = bytes;
            continue;
        }
        let header = if seg["records"] == 0 { bytes } else { 64 };
        let frames = bytes.saturating_sub(header);
        live += frames - seg["garbage_bytes"].as_u64().expect("garbage_bytes");
    }
    let headers = 64 * segments.len() as u64;
    assert!(
        files <= 2 * live + active.max(SEGMENT_BYTES) + headers,
        "{files} bytes of segments for {live} live bytes: {s:#}"
    );
    assert_eq!(s["reclaimable_bytes"], 0, "{s:#}");
}

async fn assert_same_views(server: &TestServer, before: &[(String, String)], when: &str) {
    let now = server.api.views().await;
    assert_eq!(now.len(), before.len(), "{when}");
    for ((args, was), (_, is)) in before.iter().zip(&now) {
        assert_eq!(was, is, "view {args} differs {when}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_view_and_pending_events_and_restarts_rebuild_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let clock = Arc::new(ManualClock::new(UnixMicros(T0)));
    let receiver = Receiver::ok_or_fail().await;
    let server = TestServer::start_with_clock(config(dir), clock.clone()).await;
    let api = &server.api;

    // Pending through every compaction below: each with its own payload
    // and headers, which its call must carry unchanged.
    let mut later = vec![];
    for n in 0..20 {
        let payload = json!({"n": n, "text": format!("payload {n} {}", "é".repeat(n))});
        let id = api
            .create(json!({
                "webhook": receiver.url("/ok"),
                "schedule_at": at(T0 + 2 * HOUR),
                "payload": payload,
                "headers": [{"name": "x-n", "value": n.to_string()}],
                "comment": format!("later {n}"),
            }))
            .await;
        later.push((id, payload));
    }
    let mut finished = vec![];
    for n in 0..20 {
        let path = if n % 4 == 0 { "/fail" } else { "/ok" };
        let id = api
            .create(
                json!({"webhook": receiver.url(path), "schedule_at": at(T0), "payload": {"f": n}}),
            )
            .await;
        finished.push(id);
    }
    // Garbage at once: created, then cancelled.
    for n in 0..150 {
        let id = api
            .create(json!({
                "webhook": receiver.url("/ok"),
                "schedule_at": at(T0 + 3 * HOUR),
                "payload": {"cancelled": n, "pad": "x".repeat(200)},
            }))
            .await;
        api.delete(&id).await;
    }
    for (n, id) in finished.iter().enumerate() {
        let status = if n % 4 == 0 { "error" } else { "delivered" };
        api.wait_status(id, status).await;
    }

    // First compaction: the cancelled events' records go.
    let before = api.views().await;
    let bytes_before = log_bytes(dir);
    let done = compact(&server, dir).await;
    assert!(done.segments_in > 0, "{done:?}");
    // All but those in the active segment, which is never rewritten.
    assert!(done.records_dropped >= 200, "{done:?}");
    assert!(done.snapshot_seq.is_some(), "{done:?}");
    assert_same_views(&server, &before, "after the first compaction").await;
    assert!(
        log_bytes(dir) < bytes_before / 2,
        "{} bytes after, {bytes_before} before",
        log_bytes(dir)
    );
    assert_within_bound(dir);
    // Nothing is left to do.
    let again = compact(&server, dir).await;
    assert_eq!(again.segments_in, 0, "{again:?}");

    // An hour on, the finished events are retired; the second compaction
    // takes their records.
    clock.set(UnixMicros(T0 + HOUR + SECOND));
    eventually("the finished events are retired", || async {
        (api.count().await == later.len() as u64).then_some(())
    })
    .await;
    let before = api.views().await;
    let done = compact(&server, dir).await;
    assert!(done.records_dropped > 0, "{done:?}");
    assert_same_views(&server, &before, "after the second compaction").await;
    assert_within_bound(dir);

    // The pending events fire from their compacted records.
    clock.set(UnixMicros(T0 + 2 * HOUR + SECOND));
    // A create due sooner than the dispatcher planned wakes it (it sleeps
    // by the tokio clock; the manual one moving does not).
    api.create(json!({"webhook": receiver.url("/ok"), "schedule_at": at(T0 + HOUR)}))
        .await;
    let calls = receiver.wait_for(finished.len() + later.len() + 1).await;
    for (id, payload) in &later {
        api.wait_status(id, "delivered").await;
        let call = calls
            .iter()
            .find(|c| c.json()["id"] == id.as_str())
            .unwrap_or_else(|| panic!("no call for {id}"));
        assert_eq!(call.json()["payload"], *payload, "{id}");
        let n = payload["n"].to_string();
        assert_eq!(call.header_values("x-n"), [n], "{id}");
        assert_eq!(call.json()["comment"], format!("later {}", payload["n"]));
    }
    let live = api.views().await;
    server.stop().await;
    assert_each_record_once(dir);
    let (code, out) = log_verify(dir);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("snapshot:"), "{out}");
    assert!(out.contains("with the gaps compaction left"), "{out}");
    assert!(out.contains("every segment's range follows on"), "{out}");

    // A restart from the snapshot, then one from a full replay of the
    // compacted segments, show the same.
    let restarted = TestServer::start_with_clock(config(dir), clock.clone()).await;
    assert_same_views(&restarted, &live, "after a restart from the snapshot").await;
    restarted.stop().await;
    std::fs::remove_dir_all(snapshot_dir(dir)).expect("remove snapshots");
    let replayed = TestServer::start_with_clock(config(dir), clock.clone()).await;
    assert_same_views(&replayed, &live, "after a full replay").await;
    replayed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chime_log_compact_compacts_a_stopped_servers_log_and_refuses_a_running_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let clock = Arc::new(ManualClock::new(UnixMicros(T0)));
    let server = TestServer::start_with_clock(config(dir), clock.clone()).await;
    let keep = server
        .api
        .create(json!({"webhook": "http://127.0.0.1:9/never", "schedule_at": at(T0 + HOUR)}))
        .await;
    for n in 0..100 {
        let id = server
            .api
            .create(json!({
                "webhook": "http://127.0.0.1:9/never",
                "schedule_at": at(T0 + HOUR),
                "payload": {"n": n, "pad": "y".repeat(200)},
            }))
            .await;
        server.api.delete(&id).await;
    }
    let (code, out) = chime(&["log", "compact"], dir);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("locked"), "{out}");
    let live = server.api.views().await;
    server.stop().await;

    let bytes_before = log_bytes(dir);
    let (code, out) = chime(
        &[
            "log",
            "compact",
            "--json",
            "--segment-bytes",
            &SEGMENT_BYTES.to_string(),
        ],
        dir,
    );
    assert_eq!(code, Some(0), "{out}");
    let done: Value = serde_json::from_str(out.lines().next().unwrap_or("")).expect(&out);
    // All but those in the active segment, which is never rewritten.
    assert!(done["records_dropped"].as_u64() >= Some(150), "{done}");
    assert!(done["snapshot_seq"].is_u64(), "{done}");
    assert!(log_bytes(dir) < bytes_before / 2, "{done}");
    assert_within_bound(dir);
    let (code, out) = chime(&["log", "compact"], dir);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("nothing to compact"), "{out}");
    let (code, out) = log_verify(dir);
    assert_eq!(code, Some(0), "{out}");
    // `dump` shows every record there is, once each.
    let (code, dumped) = chime(&["log", "dump", "--json"], dir);
    assert_eq!(code, Some(0), "{dumped}");
    assert_eq!(dumped.lines().count(), records_in(dir).len());
    assert_each_record_once(dir);

    let restarted = TestServer::start_with_clock(config(dir), clock).await;
    assert_same_views(&restarted, &live, "after chime log compact").await;
    assert_eq!(restarted.api.event(&keep).await["status"], "scheduled");
    restarted.stop().await;
}
