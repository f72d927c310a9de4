//! The log: round trips, torn-tail recovery, corruption refusal, group commit.

use std::path::{Path, PathBuf};

use chime::log::{DirScan, Log, LogError, LogOptions};
use chime::testing::replay_all;
use proptest::prelude::*;

fn opts(segment_bytes: u64) -> LogOptions {
    LogOptions::with_segment_bytes(segment_bytes)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn payload(i: usize) -> Vec<u8> {
    format!("record number {i} {}", "x".repeat(i % 7)).into_bytes()
}

/// Writes `n` single-record batches and returns the file offsets at which
/// each frame ends in the (only) segment.
fn write_records(dir: &Path, n: usize) -> Vec<u64> {
    let (log, _) = Log::open(dir, &opts(1 << 20)).unwrap();
    let mut ends = vec![];
    for i in 0..n {
        log.append_blocking(vec![payload(i)]).unwrap();
        ends.push(std::fs::metadata(&segments(dir)[0]).unwrap().len());
    }
    ends
}

#[test]
fn records_survive_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, rec) = Log::open(dir.path(), &opts(1024)).unwrap();
        assert_eq!(rec.records, 0);
        for i in 0..100 {
            let a = log.append_blocking(vec![payload(i)]).unwrap();
            assert_eq!(a[0].seq, i as u64 + 1);
            assert_eq!(log.read(a[0].loc).unwrap(), payload(i));
        }
        assert!(log.segment_count() > 1, "small segments roll");
    }
    let (log, rec) = Log::open(dir.path(), &opts(1024)).unwrap();
    assert_eq!(rec.records, 100);
    assert!(rec.truncated.is_none());
    let all = replay_all(&log);
    assert_eq!(all.len(), 100);
    for (i, (seq, p)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(*p, payload(i));
    }
    let a = log.append_blocking(vec![b"after".to_vec()]).unwrap();
    assert_eq!(a[0].seq, 101);
}

/// `replay_after(S)` gives exactly the records after S, with the same
/// locations as a full replay, at every S across segment boundaries.
#[test]
fn replay_after_a_seq_gives_exactly_the_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), &opts(256)).unwrap();
    for i in 0..40 {
        log.append_blocking(vec![payload(i), payload(i + 100)])
            .unwrap();
    }
    assert!(log.segment_count() > 5, "small segments roll");
    let mut all = Vec::new();
    log.replay(|e| {
        all.push((e.seq, e.loc, e.payload.to_vec()));
        Ok::<(), LogError>(())
    })
    .unwrap();
    for after in 0..=all.len() as u64 + 1 {
        let mut got = Vec::new();
        log.replay_after(after, |e| {
            got.push((e.seq, e.loc, e.payload.to_vec()));
            Ok::<(), LogError>(())
        })
        .unwrap();
        let want: Vec<_> = all.iter().filter(|(s, _, _)| *s > after).cloned().collect();
        assert_eq!(got, want, "after {after}");
    }
}

#[test]
fn cut_at_every_offset_keeps_longest_whole_prefix() {
    let src = tempfile::tempdir().unwrap();
    let ends = write_records(src.path(), 6);
    let seg = segments(src.path())[0].clone();
    let full = std::fs::read(&seg).unwrap();
    // Cut anywhere inside the last three frames.
    let from = ends[2] as usize;
    for cut in from..=full.len() {
        let dir = tempfile::tempdir().unwrap();
        let name = seg.file_name().unwrap();
        std::fs::write(dir.path().join(name), &full[..cut]).unwrap();
        let (log, rec) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
        let whole = ends.iter().filter(|&&e| e as usize <= cut).count();
        assert_eq!(rec.records as usize, whole, "cut at {cut}");
        let kept = replay_all(&log);
        assert_eq!(kept.len(), whole);
        let dropped = cut as u64 - if whole == 0 { 32 } else { ends[whole - 1] };
        match rec.truncated {
            Some((_, d)) => assert_eq!(d, dropped, "cut at {cut}"),
            None => assert_eq!(dropped, 0, "cut at {cut}"),
        }
        // Appending after recovery continues the sequence.
        let a = log.append_blocking(vec![b"next".to_vec()]).unwrap();
        assert_eq!(a[0].seq, whole as u64 + 1);
        drop(log);
        let (log, rec) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
        assert!(rec.truncated.is_none());
        assert_eq!(replay_all(&log).len(), whole + 1);
    }
}

#[test]
fn flipping_any_byte_of_the_last_frame_is_truncated() {
    let src = tempfile::tempdir().unwrap();
    let ends = write_records(src.path(), 4);
    let seg = segments(src.path())[0].clone();
    let full = std::fs::read(&seg).unwrap();
    for at in ends[2] as usize..full.len() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = full.clone();
        bytes[at] ^= 0x5a;
        std::fs::write(dir.path().join(seg.file_name().unwrap()), &bytes).unwrap();
        let (log, rec) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
        assert_eq!(rec.records, 3, "flip at {at}");
        assert_eq!(
            rec.truncated.as_ref().unwrap().1,
            full.len() as u64 - ends[2]
        );
        assert_eq!(replay_all(&log).len(), 3);
    }
}

#[test]
fn damage_inside_a_sealed_segment_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = Log::open(dir.path(), &opts(300)).unwrap();
        for i in 0..20 {
            log.append_blocking(vec![payload(i)]).unwrap();
        }
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let sealed = &segs[1];
    let mut bytes = std::fs::read(sealed).unwrap();
    let at = 32 + 16 + 2; // inside the first frame's payload
    bytes[at] ^= 1;
    std::fs::write(sealed, &bytes).unwrap();
    let err = Log::open(dir.path(), &opts(300))
        .err()
        .expect("must refuse");
    match &err {
        LogError::Corruption { path, offset, .. } => {
            assert_eq!(path, sealed);
            assert_eq!(*offset, 32);
        }
        other => panic!("unexpected {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(sealed.file_name().unwrap().to_str().unwrap()),
        "{msg}"
    );
    assert!(msg.contains("byte 32"), "{msg}");
    // Nothing was changed: the damaged file is as we left it.
    assert_eq!(std::fs::read(sealed).unwrap(), bytes);
}

#[test]
fn a_bad_frame_followed_by_valid_ones_in_the_last_segment_is_refused() {
    let src = tempfile::tempdir().unwrap();
    let ends = write_records(src.path(), 5);
    let seg = segments(src.path())[0].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[ends[1] as usize + 20] ^= 0xff; // inside frame 3, frames 4 and 5 follow
    std::fs::write(&seg, &bytes).unwrap();
    let err = Log::open(src.path(), &opts(1 << 20))
        .err()
        .expect("must refuse");
    assert!(
        matches!(err, LogError::Corruption { offset, .. } if offset == ends[1]),
        "{err}"
    );
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing cut");
    // A read-only scan reports the same without changing anything.
    let scan = DirScan::read(src.path()).unwrap();
    assert!(scan.refusal().is_some());
}

#[test]
fn batches_are_all_or_nothing_across_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
        log.append_blocking(vec![b"solo".to_vec()]).unwrap();
        log.append_blocking((0..5).map(payload).collect()).unwrap();
    }
    let seg = segments(dir.path())[0].clone();
    let full = std::fs::read(&seg).unwrap();
    // Cut one byte short of the end: the batch's last frame is torn, so
    // the whole batch of 5 goes, though its first 4 frames are whole.
    std::fs::write(&seg, &full[..full.len() - 1]).unwrap();
    let (log, rec) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
    assert_eq!(rec.records, 1);
    assert_eq!(replay_all(&log), vec![(1, b"solo".to_vec())]);
}

#[test]
fn leftover_temporary_segment_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    drop(Log::open(dir.path(), &opts(1 << 20)).unwrap());
    let tmp = dir.path().join("00000000000000000099.seg.tmp");
    std::fs::write(&tmp, b"half a header").unwrap();
    let (_log, rec) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
    assert_eq!(rec.segments, 1);
    assert!(!tmp.exists());
}

#[test]
fn bad_payloads_and_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Log::open(dir.path(), &opts(10)),
        Err(LogError::BadSegmentBytes(10))
    ));
    let (log, _) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
    assert!(matches!(
        log.append_blocking(vec![vec![]]),
        Err(LogError::BadPayload { len: 0 })
    ));
    assert_eq!(log.append_blocking(vec![]).unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_are_all_acked_and_replayed_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), &opts(64 * 1024)).unwrap();
    let mut tasks = vec![];
    for t in 0..64u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = vec![];
            for i in 0..50u32 {
                let p = format!("{t}:{i}").into_bytes();
                let a = log.append(vec![p.clone()]).await.unwrap();
                acked.push((a[0].seq, p));
            }
            acked
        }));
    }
    let mut acked = vec![];
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort();
    assert_eq!(acked.len(), 64 * 50);
    drop(log);
    let (log, rec) = Log::open(dir.path(), &opts(64 * 1024)).unwrap();
    assert_eq!(rec.records, 64 * 50);
    let all = replay_all(&log);
    assert_eq!(all, acked, "every ack is in the log at its sequence number");
    for (i, (seq, _)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "no gaps");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn append_replay_round_trip(
        batches in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..600), 1..4), 1..30),
        segment_bytes in 200u64..5000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = vec![];
        {
            let (log, _) = Log::open(dir.path(), &opts(segment_bytes)).unwrap();
            for b in &batches {
                let acked = log.append_blocking(b.clone()).unwrap();
                for (a, p) in acked.iter().zip(b) {
                    prop_assert_eq!(&log.read(a.loc).unwrap(), p);
                    expected.push((a.seq, p.clone()));
                }
            }
        }
        let (log, rec) = Log::open(dir.path(), &opts(segment_bytes)).unwrap();
        prop_assert!(rec.truncated.is_none());
        prop_assert_eq!(replay_all(&log), expected);
    }
}

#[test]
fn a_flipped_bit_in_the_last_acknowledged_batch_is_kept_aside_before_the_cut() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ends = write_records(dir.path(), 5);
    let seg = segments(dir.path()).pop().unwrap();
    let seg_name = seg.file_name().unwrap().to_str().unwrap().to_owned();
    let keep = ends[3];
    // Each round damages the batch last appended at the same offset: a
    // second tail cut there must not overwrite the first one's copy.
    let mut copies = vec![];
    for round in 0..2 {
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = (keep as usize + bytes.len()) / 2;
        // A different bit each round: the same bytes again would reuse
        // the first copy (a crash between copy and cut).
        bytes[at] ^= 1 << round;
        std::fs::write(&seg, &bytes).unwrap();

        let (log, recovery) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
        assert_eq!(
            recovery.truncated,
            Some((seg.clone(), bytes.len() as u64 - keep))
        );
        let copy = recovery.torn_copy.clone().expect("the cut bytes are kept");
        let suffix = if round == 0 {
            String::new()
        } else {
            format!(".{round}")
        };
        assert_eq!(
            copy,
            dir.path().join(format!("{seg_name}.torn-{keep}{suffix}"))
        );
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            &bytes[keep as usize..],
            "byte-identical"
        );
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), keep);
        assert_eq!(replay_all(&log).len(), 4);
        copies.push((copy, bytes[keep as usize..].to_vec()));
        // Append the fifth record again, for the next round to damage.
        log.append_blocking(vec![payload(4)]).unwrap();
    }
    for (copy, bytes) in &copies {
        assert_eq!(&std::fs::read(copy).unwrap(), bytes, "{}", copy.display());
    }
    // The copies are outside the log: it opens whole.
    let (log, recovery) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
    assert_eq!(recovery.truncated, None);
    assert_eq!(replay_all(&log).len(), 5);
}

/// Group commit shares fsyncs: 64 appenders queued behind a held fsync are
/// answered after one more fsync, and 64 free-running appenders make fewer
/// fsyncs than appends (counted by the fault file system, which passes
/// every write through and counts each `sync_data`).
#[test]
fn group_commit_shares_one_fsync_among_queued_appenders() {
    use chime::testing::append::{answer, queue_append};
    use chime::testing::faultfs::{FaultFs, Op};
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new(3);
    let opts = fs.log_options(1 << 20);
    let (log, _) = Log::open(dir.path(), &opts).unwrap();

    // Deterministic: the writer is held in the fsync of a first batch while
    // 64 appenders queue; all 64 then go out in one group.
    fs.hold_next(Op::Sync);
    let first = {
        let log = log.clone();
        std::thread::spawn(move || log.append_blocking(vec![payload(0)]))
    };
    fs.wait_held();
    let queued: Vec<_> = (1..=64)
        .map(|i| queue_append(&log, vec![payload(i)]))
        .collect();
    let syncs_before = fs.stats().succeeded_of(Op::Sync);
    fs.release();
    first.join().unwrap().unwrap();
    let seqs: Vec<u64> = queued
        .into_iter()
        .map(|q| answer(q).unwrap()[0].seq)
        .collect();
    assert_eq!(seqs, (2..=65).collect::<Vec<u64>>());
    assert_eq!(
        fs.stats().succeeded_of(Op::Sync) - syncs_before,
        1,
        "64 queued appends, one fsync"
    );

    // Free-running: 64 threads appending at once share fsyncs too.
    let syncs_before = fs.stats().succeeded_of(Op::Sync);
    let per_thread = 20;
    let threads: Vec<_> = (0..64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    log.append_blocking(vec![payload(100 + t * per_thread + i)])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let appends = 64 * per_thread as u64;
    let syncs = fs.stats().succeeded_of(Op::Sync) - syncs_before;
    assert!(syncs < appends, "{syncs} fsyncs for {appends} appends");
    drop(log);
    let (log, _) = Log::open(dir.path(), &LogOptions::with_segment_bytes(1 << 20)).unwrap();
    assert_eq!(replay_all(&log).len() as u64, 65 + appends);
}

#[test]
fn a_payload_over_the_limit_is_refused_and_nothing_is_written() {
    use chime::log::frame::MAX_PAYLOAD;
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
    log.append_blocking(vec![payload(0)]).unwrap();
    let len = std::fs::metadata(&segments(dir.path())[0]).unwrap().len();
    // Alone, or in a batch with payloads that would fit: the batch is refused whole.
    for batch in [
        vec![vec![b'x'; MAX_PAYLOAD + 1]],
        vec![payload(1), vec![b'x'; MAX_PAYLOAD + 1]],
    ] {
        assert!(matches!(
            log.append_blocking(batch),
            Err(LogError::BadPayload { len }) if len == MAX_PAYLOAD + 1
        ));
    }
    assert_eq!(
        std::fs::metadata(&segments(dir.path())[0]).unwrap().len(),
        len,
        "nothing written"
    );
    assert_eq!(log.append_blocking(vec![payload(1)]).unwrap()[0].seq, 2);
}

/// An in-process restart drops the old log and opens the directory again at
/// once: the old writer must have ended by then, its queue drained, or it
/// would go on writing into the segment the new writer owns.
#[test]
fn dropping_the_last_handle_waits_for_the_writer_so_a_reopen_sees_every_write() {
    use chime::testing::append::queue_append;
    use chime::testing::faultfs::{FaultFs, Op};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new(11);
    let faulty = fs.log_options(1 << 20);
    let (log, _) = Log::open(dir.path(), &faulty).unwrap();
    log.append_blocking(vec![payload(0)]).unwrap();
    // The writer is held in the fdatasync of batch 1 with batches 2..=4
    // queued behind it; every appender then gives up (a request cancelled
    // at a stop), so the handle dropped next is the last one.
    fs.hold_next(Op::Sync);
    let first = queue_append(&log, vec![payload(1)]);
    fs.wait_held();
    let queued: Vec<_> = (2..=4)
        .map(|i| queue_append(&log, vec![payload(i)]))
        .collect();
    drop(first);
    drop(queued);
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
    let dropper = std::thread::spawn(move || {
        drop(log);
        dropped_tx.send(()).unwrap();
    });
    // Not a measure of speed: with the writer held, a drop that returns at
    // all (here within half a second) has left the writer running.
    assert!(
        dropped_rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "the last handle was dropped while its writer was held in an fsync, \
         so the writer was left to finish on its own"
    );
    fs.release();
    dropped_rx
        .recv_timeout(chime::testing::WAIT)
        .expect("the drop returns once the writer has drained its queue");
    dropper.join().unwrap();

    let (log, recovery) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
    assert!(recovery.truncated.is_none(), "{recovery:?}");
    let appended = log.append_blocking(vec![payload(5)]).unwrap();
    assert_eq!(appended[0].seq, 6, "the queued batches were written first");
    let expected: Vec<(u64, Vec<u8>)> = (0..=5).map(|i| (i as u64 + 1, payload(i))).collect();
    assert_eq!(replay_all(&log), expected);
}

/// Closing a log stops every handle's appends and waits for the writer, so
/// the directory can be opened again while an old handle still exists.
#[test]
fn a_closed_log_refuses_appends_and_the_directory_reopens_with_every_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
    let other = log.clone();
    for i in 0..3 {
        log.append_blocking(vec![payload(i)]).unwrap();
    }
    log.close();
    assert!(matches!(
        other.append_blocking(vec![payload(9)]),
        Err(LogError::Closed)
    ));
    log.close();
    let (reopened, _) = Log::open(dir.path(), &opts(1 << 20)).unwrap();
    reopened.append_blocking(vec![payload(3)]).unwrap();
    let expected: Vec<(u64, Vec<u8>)> = (0..=3).map(|i| (i as u64 + 1, payload(i))).collect();
    assert_eq!(replay_all(&reopened), expected);
    // The old handles still read what they had.
    assert_eq!(replay_all(&other).len(), 3);
}
