//! Snapshot files under power loss: a power cut at every step of writing a
//! snapshot (create, write, fsync, rename, directory fsync, prune) leaves
//! the store restoring either the new snapshot whole or the one before it,
//! never a damaged or partial one, and never a temporary file.

use std::sync::Arc;

use chime::snapshot::{SnapshotStore, snapshot_dir};
use chime::testing::faultfs::FaultFs;
use chime::testing::{Rng, announce_seed};

#[test]
fn a_power_cut_at_any_step_of_a_snapshot_write_restores_the_old_or_the_new_whole() {
    let seed = announce_seed("CHIME_SNAPSHOT_SEED", "cargo test --test snapshots");
    let mut rng = Rng::new(seed);
    let old: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = (0..30_000u32).map(|i| (i % 241) as u8).collect();
    let mut restored_new = 0;
    let mut restored_old = 0;
    for cut in 0..40u64 {
        for round in 0..4 {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = snapshot_dir(tmp.path());
            let fs = FaultFs::new(rng.below(u64::MAX));
            fs.set_page_size(1024);
            let store = SnapshotStore::open(Arc::new(fs.clone()), &dir).expect("open");
            store.write(10, &old).expect("the old snapshot");
            store.write(5, b"older still").expect("an older one");
            fs.cut_power_after(cut);
            let finished = store.write(20, &new).is_ok() && !fs.is_dead();
            drop(store);
            if round % 2 == 0 {
                fs.crash();
            } else {
                fs.crash_keeping_pages();
            }
            let store = SnapshotStore::open(Arc::new(fs.clone()), &dir).expect("reopen");
            let restored = store
                .restore(|seq, body| Ok((seq, body.to_vec())))
                .expect("restore");
            assert!(
                restored.set_aside.is_empty(),
                "cut {cut}: a snapshot failed its check: {:?}",
                restored.set_aside
            );
            let (seq, (_, body)) = restored.restored.expect("a snapshot is restored");
            match seq {
                20 => {
                    assert_eq!(body, new, "cut {cut}");
                    restored_new += 1;
                }
                10 => {
                    assert!(!finished, "cut {cut}: a finished write was lost");
                    assert_eq!(body, old, "cut {cut}");
                    restored_old += 1;
                }
                other => panic!("cut {cut}: restored seq {other}"),
            }
            let leftovers: Vec<_> = std::fs::read_dir(&dir)
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "cut {cut}: {leftovers:?}");
        }
    }
    // Both outcomes happened, so the cuts reached the write's every step.
    assert!(
        restored_new > 0 && restored_old > 0,
        "new {restored_new}, old {restored_old}"
    );
}

// ---------------------------------------------------------------------------
// Snapshots of a serving chime: written, restored, set aside.

use chime::log::LogOptions;
use chime::projection::Projection;
use chime::server::{ServeConfig, Server};
use chime::service::Service;
use chime::snapshot::SnapshotFile;
use chime::testing::{Receiver, Reply, TestServer, in_seconds};
use serde_json::json;

/// The projection a full replay of `dir`'s log rebuilds, without snapshots.
fn replayed(dir: &std::path::Path) -> (Projection, u64) {
    let (service, startup) = Service::open(
        &chime::datadir::log_dir(dir),
        &LogOptions::default(),
        Arc::new(chime::clock::SystemClock),
    )
    .expect("open the log");
    let projection = service.projection().clone();
    (projection, startup.replayed)
}

fn snapshot_files(dir: &std::path::Path) -> Vec<SnapshotFile> {
    SnapshotStore::open_read_only(Arc::new(chime::log::fs::StdFs), &snapshot_dir(dir))
        .list()
        .expect("list snapshots")
}

/// Events of every fate: delivered, failed for good, dead, still
/// scheduled, cancelled; then waits until the due ones have finished.
async fn a_mixed_history(server: &TestServer, receiver: &Receiver) {
    let api = &server.api;
    let mut finishing = Vec::new();
    for n in 0..6 {
        finishing.push((
            api.create(json!({"webhook": receiver.url(&format!("/ok/{n}")), "schedule_at": in_seconds(0.0).to_string()}))
                .await,
            "delivered",
        ));
    }
    finishing.push((
        api.create(json!({"webhook": receiver.url("/fail"), "schedule_at": in_seconds(0.0).to_string(), "retry_conf": {"num_retries": 1, "retry_interval_seconds": 0.2}}))
            .await,
        "error",
    ));
    finishing.push((
        api.create(
            json!({"webhook": receiver.url("/late"), "schedule_at": "2020-01-01T00:00:00Z"}),
        )
        .await,
        "dead",
    ));
    for n in 0..4 {
        api.create(json!({"webhook": receiver.url(&format!("/later/{n}")), "schedule_at": in_seconds(3600.0).to_string()}))
            .await;
    }
    let gone = api
        .create(json!({"webhook": receiver.url("/gone"), "schedule_at": in_seconds(3600.0).to_string()}))
        .await;
    api.delete(&gone).await;
    for (id, status) in &finishing {
        api.wait_status(id, status).await;
    }
}

/// A data dir where a server ran [`a_mixed_history`] and stopped cleanly
/// (so its stop wrote a snapshot).
async fn stopped_after_a_mixed_history() -> tempfile::TempDir {
    let receiver = receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServeConfig::new(dir.path())).await;
    a_mixed_history(&server, &receiver).await;
    server.stop().await;
    dir
}

async fn receiver() -> Receiver {
    Receiver::routed(vec![("/fail", Reply::status(500))], Reply::ok()).await
}

/// A clean stop writes a snapshot holding every record; the restart
/// restores it, replays nothing, and has exactly the state a full replay
/// rebuilds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_writes_a_snapshot_that_the_restart_restores_replaying_nothing() {
    let receiver = receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServeConfig::new(dir.path())).await;
    a_mixed_history(&server, &receiver).await;
    let live = server.service.projection().clone();
    let last = server.service.last_applied_seq().expect("records applied");
    server.stop().await;

    let files = snapshot_files(dir.path());
    assert_eq!(files.last().map(|f| f.seq), Some(last), "{files:?}");
    let (full, records) = replayed(dir.path());
    assert_eq!(records, last);
    assert_eq!(full, live, "a replay rebuilds the live state");

    let reopened = Server::open(ServeConfig::new(dir.path())).expect("reopen");
    assert_eq!(reopened.startup.snapshot_seq, Some(last));
    assert_eq!(reopened.startup.replayed, 0);
    assert!(reopened.startup.snapshots_set_aside.is_empty());
    let server = TestServer::serve(reopened, None).await;
    assert_eq!(*server.service.projection(), full);
    // And it goes on from there: a new event is delivered.
    let id = server
        .api
        .create(
            json!({"webhook": receiver.url("/after"), "schedule_at": in_seconds(0.0).to_string()}),
        )
        .await;
    server.api.wait_status(&id, "delivered").await;
    server.stop().await;
}

/// While serving, a snapshot is written every `--snapshot-every` records;
/// restoring one that is not the newest replays the records after it and
/// gives the same state as a full replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_written_every_n_records_and_an_older_one_restores_with_the_rest_replayed() {
    let receiver = receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServeConfig::new(dir.path());
    config.snapshot_every = 10;
    let server = TestServer::start(config.clone()).await;
    a_mixed_history(&server, &receiver).await;
    chime::testing::eventually("a snapshot while serving", || async {
        (!snapshot_files(dir.path()).is_empty()).then_some(())
    })
    .await;
    let last = server.service.last_applied_seq().expect("records applied");
    server.stop().await;

    // Drop the clean stop's snapshot: the one before it is restored.
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 2, "two are kept: {files:?}");
    assert_eq!(files[1].seq, last);
    std::fs::remove_file(&files[1].path).expect("remove the newest");
    let older = files[0].seq;
    assert!(older >= 10 && older < last, "older {older}, last {last}");
    let (full, _) = replayed(dir.path());
    let reopened = Server::open(config).expect("reopen");
    assert_eq!(reopened.startup.snapshot_seq, Some(older));
    assert_eq!(reopened.startup.replayed, last - older);
    let projection = reopened.service().projection().clone();
    assert_eq!(projection, full);
}

/// A snapshot that fails its checksum, or claims more records than the log
/// holds (a log cut back by `repair`, say), is set aside, never deleted,
/// and the state is still exactly a full replay's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_or_one_past_the_logs_end_is_set_aside_and_the_log_replayed() {
    let dir = stopped_after_a_mixed_history().await;
    let (full, records) = replayed(dir.path());

    let files = snapshot_files(dir.path());
    let newest = files.last().expect("the clean stop's snapshot").clone();
    let store = SnapshotStore::open(Arc::new(chime::log::fs::StdFs), &snapshot_dir(dir.path()))
        .expect("open");
    let (_, body) = store.read(&newest).expect("a valid snapshot");
    // The same body as if taken 5 records past the log's end.
    store.write(newest.seq + 5, &body).expect("write");
    // And the real one damaged: one byte of its body flipped.
    let mut bytes = std::fs::read(&newest.path).expect("read");
    let at = bytes.len() - 3;
    bytes[at] ^= 0x40;
    std::fs::write(&newest.path, &bytes).expect("damage");

    let reopened = Server::open(ServeConfig::new(dir.path())).expect("reopen");
    let set_aside: Vec<u64> = reopened
        .startup
        .snapshots_set_aside
        .iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(set_aside, [newest.seq + 5, newest.seq]);
    assert!(
        reopened.startup.snapshots_set_aside[0]
            .why
            .to_string()
            .contains("log ends at")
    );
    for s in &reopened.startup.snapshots_set_aside {
        assert!(s.moved_to.exists(), "{} is kept", s.moved_to.display());
    }
    // Nothing older was left to restore (two are kept, and the forged one
    // pruned the clean stop's predecessor): a full replay.
    assert_eq!(reopened.startup.snapshot_seq, None);
    assert_eq!(reopened.startup.replayed, records);
    assert_eq!(*reopened.service().projection(), full);
}

/// `chime log verify` checks the newest snapshot against a replay of the
/// log up to its seq, and `stats` lists the snapshots: a snapshot whose
/// file and body are sound but whose state is not the log's (here the
/// state at seq N filed as seq N-1) is damage, exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_verify_checks_the_newest_snapshot_against_a_replay_and_stats_lists_them() {
    let dir = stopped_after_a_mixed_history().await;
    let newest = snapshot_files(dir.path()).pop().expect("a snapshot");

    let (code, out) = chime::testing::log_verify(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "matches a replay of the log up to seq {}",
            newest.seq
        )),
        "{out}"
    );
    let stats = std::process::Command::new(chime::testing::chime_binary())
        .args(["log", "stats", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run chime log stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("JSON");
    assert_eq!(stats["snapshots"][0]["seq"], json!(newest.seq), "{stats}");
    assert_eq!(stats["snapshots_set_aside"], json!([]));

    let store = SnapshotStore::open(Arc::new(chime::log::fs::StdFs), &snapshot_dir(dir.path()))
        .expect("open");
    let (_, body) = store.read(&newest).expect("valid");
    std::fs::remove_file(&newest.path).expect("remove");
    store.write(newest.seq - 1, &body).expect("write");
    let (code, out) = chime::testing::log_verify(dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("differs from a replay of the log"), "{out}");
}
