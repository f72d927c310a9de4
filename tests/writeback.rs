//! What a disk may keep of writes that were never made durable, beyond the
//! in-order prefix `tests/power_loss.rs` draws most of the time, case by
//! case on the fault file system:
//!
//! - a failed fsync, then a process restart (the page cache still holds the
//!   bytes the disk never got), more acknowledged appends, a power loss;
//! - writeback that kept a later page of the last write and lost an
//!   earlier one (non-prefix persistence);
//! - a new data directory whose entry in its parent is not durable yet.
//!
//! Each loops over seeds of the fault file system and asserts that the
//! case it is about really happened in some of them.

use std::path::Path;

use chime::log::frame::{self, Flags, HEADER_LEN};
use chime::log::{Log, LogError, LogOptions};
use chime::server::ServeConfig;
use chime::testing::faultfs::{Errno, FaultFs, Op, Times};
use chime::testing::{TestServer, replay_all};
use serde_json::json;

fn batch(tag: u8, records: usize) -> Vec<Vec<u8>> {
    (0..records).map(|i| vec![tag, i as u8, 7, 7, 7]).collect()
}

/// The payloads in the log at `dir`, opened with the real file system (as
/// after a reboot).
fn payloads_after_reboot(dir: &Path) -> Vec<Vec<u8>> {
    let (log, _) = Log::open(dir, &LogOptions::with_segment_bytes(1 << 20))
        .unwrap_or_else(|e| panic!("the log does not open after the power loss: {e}"));
    replay_all(&log).into_iter().map(|(_, p)| p).collect()
}

fn contains_batch(found: &[Vec<u8>], want: &[Vec<u8>]) -> bool {
    found.windows(want.len()).any(|w| w == want)
}

/// Appends each of `later` (each must be acknowledged), stops, loses power,
/// and checks that `first` and every one of `later` are in the log after
/// the reboot.
fn append_crash_and_find(
    log: Log,
    fs: &FaultFs,
    dir: &Path,
    seed: u64,
    first: &[Vec<u8>],
    later: &[Vec<Vec<u8>>],
) {
    for b in later {
        log.append_blocking(b.clone())
            .expect("acknowledged after the restart");
    }
    drop(log);
    fs.crash();
    let found = payloads_after_reboot(dir);
    for want in std::iter::once(first).chain(later.iter().map(Vec::as_slice)) {
        assert!(
            contains_batch(&found, want),
            "seed {seed}: batch {} acknowledged but lost; found {found:?}",
            want[0][0]
        );
    }
}

#[test]
fn batches_acknowledged_after_a_restart_that_followed_a_failed_fsync_survive_a_power_loss() {
    let mut dropped_runs = 0;
    for seed in 0..24 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("log");
        let fs = FaultFs::new(seed);
        let (log, _) = Log::open(&dir, &fs.log_options(1 << 20)).expect("open");
        let first = batch(1, 3);
        log.append_blocking(first.clone()).expect("acknowledged");
        fs.fail(Op::Sync, Errno::Io, Times::Once);
        let err = log.append_blocking(batch(2, 40)).expect_err("fsync fails");
        assert!(err.is_fatal(), "{err}");
        drop(log);
        if fs.stats().bytes_dropped_by_failed_syncs > 0 {
            dropped_runs += 1;
        }

        // The process restarts: the page cache (the real file) still reads
        // the dropped write, the disk (the model) does not have it.
        let (log, _) = Log::open(&dir, &fs.log_options(1 << 20)).expect("reopen after the restart");
        append_crash_and_find(log, &fs, &dir, seed, &first, &[batch(3, 2), batch(4, 5)]);
    }
    assert!(
        dropped_runs >= 4,
        "only {dropped_runs} of 24 failed fsyncs dropped bytes"
    );
}

#[test]
fn a_cut_back_whose_fsync_failed_is_not_sealed_into_a_segment_after_the_restart() {
    for seed in 0..24 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("log");
        let fs = FaultFs::new(seed);
        let (log, _) = Log::open(&dir, &fs.log_options(400)).expect("open");
        let first = batch(1, 2);
        log.append_blocking(first.clone()).expect("acknowledged");
        // A short write, cut back, and the cut-back's fsync fails: the
        // page cache is cut, the disk may still hold the refused bytes.
        fs.fail_short_write(Errno::Io, Times::Once);
        fs.fail(Op::Sync, Errno::Io, Times::Once);
        let err = log
            .append_blocking(vec![vec![2; 300]])
            .expect_err("the write fails");
        assert!(err.is_fatal(), "{err}");
        drop(log);

        // Restart; a small batch, then batches that roll the segment, so
        // the one with the cut-back is sealed.
        let (log, _) = Log::open(&dir, &fs.log_options(400)).expect("reopen after the restart");
        // (The second does not fit after the first: it rolls before the
        // refused bytes are written over.)
        let later = [vec![vec![3; 10]], vec![vec![4; 300]], vec![vec![5; 10]]];
        append_crash_and_find(log, &fs, &dir, seed, &first, &later);
    }
}

#[test]
fn a_crash_that_kept_a_later_page_of_the_last_write_but_not_an_earlier_one_is_a_torn_tail() {
    let mut holes = 0;
    for seed in 0..32 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("log");
        let fs = FaultFs::new(seed);
        fs.set_page_size(64);
        let (log, _) = Log::open(&dir, &fs.log_options(1 << 20)).expect("open");
        let acked: Vec<_> = (1..=3).map(|t| batch(t, 2)).collect();
        for b in &acked {
            log.append_blocking(b.clone()).expect("acknowledged");
        }
        // The write of the next batch goes through; the power goes at its
        // fsync, so it is never acknowledged.
        fs.cut_power_after(1);
        let err = log
            .append_blocking(batch(9, 30))
            .expect_err("the power went");
        assert!(err.is_fatal(), "{err}");
        drop(log);
        let before = fs.stats().writes_kept_with_holes;
        fs.crash_keeping_pages();
        if fs.stats().writes_kept_with_holes > before {
            holes += 1;
        }
        // Opens (the damage and what follows it are one write, never
        // acknowledged), keeps every acknowledged batch, and takes appends.
        let found = payloads_after_reboot(&dir);
        for want in &acked {
            assert!(contains_batch(&found, want), "seed {seed}: lost {want:?}");
        }
        let (log, _) = Log::open(&dir, &LogOptions::with_segment_bytes(1 << 20)).expect("reopen");
        log.append_blocking(batch(10, 1)).expect("appends go on");
    }
    assert!(holes >= 8, "only {holes} of 32 crashes left a hole");
}

/// A version 2 segment: `writes` one after the other, each a list of
/// one-frame batches, the first of each marked `starts`. Returns the bytes
/// and where each write begins.
fn v2_segment(writes: &[usize]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = frame::encode_header(1).to_vec();
    let mut starts = Vec::new();
    let mut seq = 1;
    for &frames in writes {
        starts.push(bytes.len());
        for i in 0..frames {
            let flags = Flags {
                more: false,
                starts: i == 0,
            };
            frame::encode_frame(&mut bytes, seq, &[seq as u8; 40], flags);
            seq += 1;
        }
    }
    (bytes, starts)
}

#[test]
fn damage_followed_only_by_its_own_write_is_cut_but_a_later_write_after_it_refuses() {
    // Three writes of three frames; a hole inside the last one.
    let (mut bytes, starts) = v2_segment(&[3, 3, 3]);
    let frame_len = 16 + 40;
    let hole = starts[2] + frame_len;
    bytes[hole..hole + frame_len].fill(0);
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("00000000000000000001.seg"), &bytes).expect("write");
    let (log, recovery) = Log::open(tmp.path(), &LogOptions::with_segment_bytes(1 << 20))
        .expect("a hole in the last write is a torn tail");
    assert_eq!(recovery.records, 7);
    assert_eq!(
        recovery.truncated.as_ref().map(|(_, n)| *n),
        Some((bytes.len() - hole) as u64)
    );
    assert!(recovery.torn_copy.is_some(), "the cut bytes are kept aside");
    drop(log);

    // The same hole in the middle write: the last write's mark vouches that
    // it was durable, so it was acknowledged. Refused, nothing changed.
    let (mut bytes, starts) = v2_segment(&[3, 3, 3]);
    let hole = starts[1] + frame_len;
    bytes[hole..hole + frame_len].fill(0);
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("00000000000000000001.seg");
    std::fs::write(&path, &bytes).expect("write");
    let err = Log::open(tmp.path(), &LogOptions::with_segment_bytes(1 << 20))
        .map(|_| ())
        .expect_err("refused");
    assert!(
        matches!(&err, LogError::Corruption { offset, .. } if *offset == hole as u64),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), bytes);

    // A version 1 segment has no marks: any valid frame after damage refuses.
    let (mut bytes, starts) = v2_segment(&[3, 3, 3]);
    bytes[..HEADER_LEN].copy_from_slice(&frame::encode_header_version(1, 1));
    let hole = starts[2] + frame_len;
    bytes[hole..hole + frame_len].fill(0);
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("00000000000000000001.seg"), &bytes).expect("write");
    assert!(Log::open(tmp.path(), &LogOptions::with_segment_bytes(1 << 20)).is_err());
}

#[test]
fn a_log_made_in_new_directories_survives_a_power_loss_right_after_its_first_append() {
    let mut lost_dirs = 0;
    for seed in 0..24 {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Two directories to make: `fresh/` and `fresh/log/`.
        let dir = tmp.path().join("fresh").join("log");
        let fs = FaultFs::new(seed);
        let (log, _) = Log::open(&dir, &fs.log_options(1 << 20)).expect("open");
        let first = batch(1, 2);
        log.append_blocking(first.clone()).expect("acknowledged");
        drop(log);
        // Whatever was left pending may go: a directory made without its
        // parent fsynced among it.
        fs.crash();
        lost_dirs += fs.stats().dirs_lost_in_crashes;
        assert!(
            contains_batch(&payloads_after_reboot(&dir), &first),
            "seed {seed}: the first acknowledged batch is gone"
        );
    }
    // Every directory made was fsynced into its parent, so none is lost.
    assert_eq!(lost_dirs, 0);
}

#[test]
fn a_directory_made_without_an_fsync_of_its_parent_can_vanish_in_a_crash() {
    // The model itself: what the test above relies on being able to fail.
    let mut lost = 0;
    for seed in 0..16 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fs = FaultFs::new(seed);
        let dir = tmp.path().join("a").join("b");
        chime::log::fs::FileSystem::create_dir_all(&fs, &dir).expect("mkdir");
        fs.crash();
        if !dir.exists() {
            lost += 1;
        }
    }
    assert!(lost > 0, "no unsynced directory vanished in 16 crashes");
}

#[tokio::test]
async fn a_new_data_dir_survives_a_power_loss_right_after_the_first_acknowledged_create() {
    for seed in 0..12 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("new").join("data");
        let fs = FaultFs::new(seed);
        let mut config = ServeConfig::new(&data);
        config.log = fs.log_options(1 << 20);
        let server = TestServer::start(config).await;
        let id = server
            .api
            .create(json!({
                "webhook": "http://127.0.0.1:9/hook",
                "schedule_at": "2100-01-01T00:00:00Z",
                "payload": {"seed": seed}
            }))
            .await;
        server.stop().await;
        fs.crash();
        assert_eq!(
            fs.stats().dirs_lost_in_crashes,
            0,
            "seed {seed}: a data directory made by serve vanished"
        );
        let server = TestServer::start(ServeConfig::new(&data)).await;
        let events = server.api.all_events().await;
        assert!(
            events.iter().any(|e| e["id"] == id.as_str()),
            "seed {seed}: {id} lost: {events:?}"
        );
        server.stop().await;
    }
}
