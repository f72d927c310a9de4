//! EIO and ENOSPC from the file system, injected with the fault file
//! system (`tests/faultfs`): what the appenders are told, what is left on
//! disk, and what a restart or a power loss finds afterwards. First on the
//! log alone, then through the HTTP API.

use std::path::Path;
use std::sync::Arc;

use chime::log::{Appended, Log, LogError, LogOptions};
use chime::record::RecordKind;
use chime::server::ServeConfig;
use chime::testing::TestServer;
use chime::testing::append::{QueuedAppend, answer, queue_append};
use chime::testing::faultfs::{Errno, FaultFs, Op, Times};
use serde_json::{Value, json};

fn record(n: usize, len: usize) -> Vec<u8> {
    let mut p = format!("record {n} ").into_bytes();
    p.resize(len.max(p.len()), b'.');
    p
}

/// Reopens `dir` with the real file system (applying recovery) and
/// returns every record.
fn reopen(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let (log, _) = Log::open(dir, &LogOptions::with_segment_bytes(1 << 20)).expect("reopen");
    let mut out = Vec::new();
    log.replay(|e| {
        out.push((e.seq, e.payload.to_vec()));
        Ok::<(), LogError>(())
    })
    .expect("replay");
    out
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn active_len(dir: &Path) -> u64 {
    let last = files(dir).into_iter().rfind(|n| n.ends_with(".seg"));
    std::fs::metadata(dir.join(last.expect("a segment")))
        .expect("stat")
        .len()
}

/// What the tests expect the log to hold: acknowledged records, in order.
#[derive(Default)]
struct Acked(Vec<(u64, Vec<u8>)>);

impl Acked {
    fn append(&mut self, log: &Log, batch: Vec<Vec<u8>>) -> Vec<Appended> {
        let appended = log.append_blocking(batch.clone()).expect("append");
        let next = self.0.last().map_or(1, |(s, _)| s + 1);
        assert_eq!(appended[0].seq, next, "sequence numbers continue");
        for (a, p) in appended.iter().zip(batch) {
            self.0.push((a.seq, p));
        }
        appended
    }
}

fn io_kind(e: &LogError) -> Option<i32> {
    match e {
        LogError::Io(e) | LogError::Fatal(e) => e.source.raw_os_error(),
        _ => None,
    }
}

/// Holds the writer in the fdatasync of a first batch, queues `batches`
/// behind it (so they form one group commit), runs `arm`, then lets the
/// writer go and returns the answers of the queued batches.
fn group_behind_a_held_sync(
    log: &Log,
    fs: &FaultFs,
    acked: &mut Acked,
    first: Vec<Vec<u8>>,
    batches: Vec<Vec<Vec<u8>>>,
    arm: impl FnOnce(),
) -> Vec<Result<Vec<Appended>, LogError>> {
    fs.hold_next(Op::Sync);
    let held = {
        let log = log.clone();
        let first = first.clone();
        std::thread::spawn(move || log.append_blocking(first))
    };
    fs.wait_held();
    let queued: Vec<QueuedAppend> = batches.into_iter().map(|b| queue_append(log, b)).collect();
    arm();
    fs.release();
    let appended = held.join().expect("held appender").expect("first batch");
    for (a, p) in appended.iter().zip(first) {
        acked.0.push((a.seq, p));
    }
    queued.into_iter().map(answer).collect()
}

// ---------------------------------------------------------------------------
// Writes

#[test]
fn a_failed_write_refuses_its_batch_is_cut_back_and_the_log_goes_on() {
    for (errno, short) in [
        (Errno::Io, false),
        (Errno::NoSpace, false),
        (Errno::Io, true),
        (Errno::NoSpace, true),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let fs = FaultFs::new(7);
        let (log, _) = Log::open(dir, &fs.log_options(1 << 20)).expect("open");
        let mut acked = Acked::default();
        for i in 0..3 {
            acked.append(&log, vec![record(i, 40), record(i, 50)]);
        }
        let before = active_len(dir);
        if short {
            fs.fail_short_write(errno, Times::Once);
        } else {
            fs.fail(Op::Write, errno, Times::Once);
        }
        let err = log
            .append_blocking(vec![record(100, 300), record(101, 300)])
            .expect_err("the write fails");
        assert!(!err.is_fatal(), "a failed write is not fatal: {err}");
        assert!(matches!(err, LogError::Io { .. }), "{err:?}");
        assert_eq!(io_kind(&err), Some(errno.code()), "{err}");
        assert_eq!(active_len(dir), before, "cut back to where it was");

        // Every write failing: every append refused, until healed.
        fs.fail(Op::Write, errno, Times::Always);
        for i in 0..3 {
            let err = log
                .append_blocking(vec![record(200 + i, 10)])
                .expect_err("refused");
            assert!(!err.is_fatal());
        }
        assert_eq!(active_len(dir), before);
        fs.heal();
        for i in 3..6 {
            acked.append(&log, vec![record(i, 20)]);
        }
        drop(log);
        assert_eq!(reopen(dir), acked.0, "{errno:?} short={short}");
    }
}

/// Regression: a failed write was cut back with `set_len` but the cut was
/// not made durable. When the next batch then rolled to a new segment, the
/// old segment was sealed with the cut only in the page cache; a power loss
/// could bring the half-written batch back into a *sealed* segment, and
/// the log refused to open ("damage inside a sealed segment").
#[test]
fn a_refused_write_stays_cut_back_after_a_roll_and_a_power_loss() {
    for seed in 0..32 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let fs = FaultFs::new(seed);
        let (log, _) = Log::open(dir, &fs.log_options(200)).expect("open");
        let mut acked = Acked::default();
        acked.append(&log, vec![record(0, 100)]); // 32 + 116 = 148 bytes
        fs.fail_short_write(Errno::NoSpace, Times::Once);
        log.append_blocking(vec![record(1, 30)]) // would end at 194
            .expect_err("refused");
        acked.append(&log, vec![record(2, 60)]); // does not fit: rolls
        assert_eq!(files(dir).len(), 2, "rolled");
        drop(log);
        fs.crash();
        assert_eq!(reopen(dir), acked.0, "seed {seed}");
    }
}

/// Regression: the same, for a group commit whose one write was cut short
/// after the first batch's frames were whole. Without a durable cut-back, a
/// power loss could keep that batch, which its appender had been told was
/// refused.
#[test]
fn a_refused_group_does_not_come_back_after_a_power_loss() {
    for seed in 0..24 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let fs = FaultFs::new(seed);
        let (log, _) = Log::open(dir, &fs.log_options(1 << 20)).expect("open");
        let mut acked = Acked::default();
        acked.append(&log, vec![record(0, 10)]);
        let answers = group_behind_a_held_sync(
            &log,
            &fs,
            &mut acked,
            vec![record(1, 10)],
            vec![vec![record(2, 10)], vec![record(3, 200)]],
            || fs.fail_short_write(Errno::Io, Times::Once),
        );
        for a in &answers {
            let err = a.as_ref().expect_err("the group's write failed");
            assert!(!err.is_fatal(), "{err}");
        }
        drop(log);
        fs.crash();
        assert_eq!(reopen(dir), acked.0, "seed {seed}");
    }
}

#[test]
fn a_failed_cut_back_after_a_failed_write_is_fatal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let fs = FaultFs::new(3);
    let (log, _) = Log::open(dir, &fs.log_options(1 << 20)).expect("open");
    let mut acked = Acked::default();
    acked.append(&log, vec![record(0, 10)]);
    fs.fail_short_write(Errno::Io, Times::Once);
    fs.fail(Op::SetLen, Errno::Io, Times::Once);
    let err = log.append_blocking(vec![record(1, 90)]).expect_err("fails");
    assert!(matches!(err, LogError::Fatal { .. }), "{err:?}");
    fs.heal();
    let err = log
        .append_blocking(vec![record(2, 9)])
        .expect_err("poisoned");
    assert!(matches!(err, LogError::Poisoned(_)), "{err:?}");
    drop(log);
    assert_eq!(reopen(dir), acked.0);
}

// ---------------------------------------------------------------------------
// fsync

#[test]
fn a_failed_fsync_is_fatal_and_every_later_append_is_poisoned() {
    for (errno, power_loss) in [
        (Errno::Io, false),
        (Errno::NoSpace, false),
        (Errno::Io, true),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let fs = FaultFs::new(11);
        let (log, _) = Log::open(dir, &fs.log_options(300)).expect("open");
        let mut acked = Acked::default();
        for i in 0..6 {
            acked.append(&log, vec![record(i, 30)]);
        }
        fs.fail(Op::Sync, errno, Times::Once);
        let err = log.append_blocking(vec![record(6, 30)]).expect_err("fsync");
        assert!(matches!(err, LogError::Fatal { .. }), "{err:?}");
        assert!(err.is_fatal());
        assert_eq!(io_kind(&err), Some(errno.code()));
        fs.heal();
        for i in 7..10 {
            let err = log
                .append_blocking(vec![record(i, 30)])
                .expect_err("poisoned");
            assert!(matches!(err, LogError::Poisoned(_)), "{err:?}");
            assert!(err.is_fatal());
        }
        drop(log);
        if power_loss {
            fs.crash();
        }
        let found = reopen(dir);
        // The batch whose fsync failed may or may not be there (it is in
        // the page cache after a plain restart); nothing after it is.
        assert!(
            found.len() == acked.0.len() || found.len() == acked.0.len() + 1,
            "{errno:?} power_loss={power_loss}: {} records",
            found.len()
        );
        assert_eq!(found[..acked.0.len()], acked.0[..]);
    }
}

/// Regression: every appender of a group whose fsync failed is told the
/// error is fatal (the others used to get a plain, non-fatal I/O error,
/// although their records may well be on disk).
#[test]
fn every_appender_of_a_group_whose_fsync_failed_gets_a_fatal_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let fs = FaultFs::new(5);
    let (log, _) = Log::open(dir, &fs.log_options(1 << 20)).expect("open");
    let mut acked = Acked::default();
    let answers = group_behind_a_held_sync(
        &log,
        &fs,
        &mut acked,
        vec![record(0, 10)],
        vec![
            vec![record(1, 10)],
            vec![record(2, 10)],
            vec![record(3, 10)],
        ],
        || fs.fail(Op::Sync, Errno::Io, Times::Once),
    );
    for a in &answers {
        let err = a.as_ref().expect_err("the group's fsync failed");
        assert!(err.is_fatal(), "{err:?}");
    }
    drop(log);
    assert_eq!(reopen(dir)[..1], acked.0[..]);
}

/// Regression: a group commit gathers b1 then b2; b2 does not fit, so the
/// writer makes b1 durable first, and that fdatasync fails. The writer was
/// poisoned, yet it went on to roll and acknowledge b2 in a new segment
/// that starts at b1's sequence number, behind an old segment that still
/// held b1's frames: the log then refused to open.
#[test]
fn a_failed_fsync_before_a_roll_poisons_the_rest_of_the_group() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let fs = FaultFs::new(9);
    let (log, _) = Log::open(dir, &fs.log_options(300)).expect("open");
    let mut acked = Acked::default();
    let answers = group_behind_a_held_sync(
        &log,
        &fs,
        &mut acked,
        vec![record(0, 50)],
        vec![vec![record(1, 50)], vec![record(2, 150)]],
        || fs.fail(Op::Sync, Errno::Io, Times::Once),
    );
    let err = answers[0].as_ref().expect_err("b1's fsync failed");
    assert!(matches!(err, LogError::Fatal { .. }), "{err:?}");
    let err = answers[1]
        .as_ref()
        .expect_err("b2 comes after a fatal error");
    assert!(matches!(err, LogError::Poisoned(_)), "{err:?}");
    let err = log
        .append_blocking(vec![record(3, 5)])
        .expect_err("poisoned");
    assert!(matches!(err, LogError::Poisoned(_)), "{err:?}");
    drop(log);
    for power_loss in [false, true] {
        if power_loss {
            fs.crash();
        }
        let found = reopen(dir);
        assert_eq!(found[..1], acked.0[..], "power_loss={power_loss}");
        assert!(found.len() <= 2, "only b1 may be there: {found:?}");
    }
}

// ---------------------------------------------------------------------------
// Rolls

#[test]
fn a_failed_create_or_rename_during_a_roll_refuses_the_batch_and_the_log_goes_on() {
    for op in [Op::Create, Op::Rename, Op::Write] {
        for (errno, also_remove, power_loss) in [
            (Errno::NoSpace, false, false),
            (Errno::Io, true, false),
            (Errno::Io, true, true),
        ] {
            let what =
                format!("{op:?} {errno:?} remove fails: {also_remove}, power loss: {power_loss}");
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = tmp.path();
            let fs = FaultFs::new(13);
            let (log, _) = Log::open(dir, &fs.log_options(200)).expect("open");
            let mut acked = Acked::default();
            acked.append(&log, vec![record(0, 100)]);
            // The next batch rolls; the header write is the only write then.
            fs.fail(op, errno, Times::Once);
            if also_remove {
                fs.fail(Op::Remove, errno, Times::Once);
            }
            let err = log.append_blocking(vec![record(1, 100)]).expect_err(&what);
            assert!(!err.is_fatal(), "{what}: {err}");
            assert_eq!(io_kind(&err), Some(errno.code()), "{what}: {err}");
            let tmp_left = files(dir).iter().any(|n| n.ends_with(".seg.tmp"));
            // A failed create leaves no file to remove.
            let expect_tmp = also_remove && op != Op::Create;
            assert_eq!(tmp_left, expect_tmp, "{what}: {:?}", files(dir));
            fs.heal();
            acked.append(&log, vec![record(2, 100)]);
            acked.append(&log, vec![record(3, 100)]);
            assert!(log.segment_count() >= 3, "{what}: rolled after the heal");
            drop(log);
            if power_loss {
                fs.crash();
            }
            assert_eq!(reopen(dir), acked.0, "{what}");
            assert!(
                !files(dir).iter().any(|n| n.ends_with(".tmp")),
                "{what}: {:?}",
                files(dir)
            );
        }
    }
}

/// Regression: a failed fsync of the directory after the new segment was
/// renamed into place was reported as fatal, but the writer was not
/// poisoned: it went on appending to the old segment, past the sequence
/// number the new (empty) segment is named after, and the log refused to
/// open ("segment starts at sequence number N, but the previous one ends
/// before N+k").
#[test]
fn a_failed_fsync_during_a_roll_poisons_the_log() {
    for (op, power_loss) in [(Op::SyncDir, false), (Op::SyncDir, true), (Op::Sync, false)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let fs = FaultFs::new(17);
        let (log, _) = Log::open(dir, &fs.log_options(200)).expect("open");
        let mut acked = Acked::default();
        acked.append(&log, vec![record(0, 100)]);
        // The roll's first fsync is the new segment's header.
        fs.fail(op, Errno::Io, Times::Once);
        let err = log.append_blocking(vec![record(1, 100)]).expect_err("roll");
        assert!(matches!(err, LogError::Fatal { .. }), "{op:?}: {err:?}");
        fs.heal();
        for i in 2..4 {
            let err = log
                .append_blocking(vec![record(i, 10)])
                .expect_err("poisoned");
            assert!(matches!(err, LogError::Poisoned(_)), "{op:?}: {err:?}");
        }
        drop(log);
        if power_loss {
            fs.crash();
        }
        assert_eq!(reopen(dir), acked.0, "{op:?} power_loss={power_loss}");
        // And the log goes on after the restart.
        let (log, _) = Log::open(dir, &LogOptions::with_segment_bytes(200)).expect("open");
        assert_eq!(
            log.append_blocking(vec![record(9, 9)]).expect("append")[0].seq,
            2
        );
    }
}

/// Regression: a roll whose memory map of the new segment failed was
/// refused as a plain (non-fatal) error, but only after the new segment had
/// been renamed into place and its directory fsynced. The writer stayed in
/// the old segment, so a following small batch went there, past the
/// sequence number the new (empty) segment is named after, and the log
/// refused to open. The new segment is now mapped before it is renamed in.
#[test]
fn a_roll_whose_map_fails_is_refused_and_the_log_still_opens_with_every_acknowledged_batch() {
    for power_loss in [false, true] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let fs = FaultFs::new(19);
        let (log, _) = Log::open(dir, &fs.log_options(200)).expect("open");
        let mut acked = Acked::default();
        acked.append(&log, vec![record(0, 100)]);
        // The next batch rolls; mapping the new segment is its only map.
        fs.fail(Op::Map, Errno::NoSpace, Times::Once);
        let err = log.append_blocking(vec![record(1, 100)]).expect_err("roll");
        assert!(!err.is_fatal(), "{err}");
        assert_eq!(fs.stats().refused_of(Op::Map), 1, "the map was refused");
        fs.heal();
        // A small batch still fits in the old segment.
        acked.append(&log, vec![record(2, 10)]);
        // A large one rolls, now that maps work.
        acked.append(&log, vec![record(3, 100)]);
        acked.append(&log, vec![record(4, 10)]);
        assert!(log.segment_count() >= 2, "rolled after the heal");
        drop(log);
        if power_loss {
            fs.crash();
        }
        assert_eq!(reopen(dir), acked.0, "power_loss={power_loss}");
        assert!(
            !files(dir).iter().any(|n| n.ends_with(".tmp")),
            "{:?}",
            files(dir)
        );
    }
}

// ---------------------------------------------------------------------------
// Through the API

fn events_ids(events: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

fn far_future() -> Value {
    json!({"webhook": "http://example.invalid/", "schedule_at": "2099-01-01T00:00:00Z"})
}

async fn refused_create(server: &TestServer, errno: Errno) {
    let (status, err) = server
        .api
        .metadata(json!({"type": "create_scheduled_event", "args": far_future()}))
        .await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["code"], "unavailable", "{err}");
    assert_eq!(err["path"], "$", "{err}");
    let message = err["error"].as_str().expect("error message");
    assert!(
        message.contains(&format!("os error {}", errno.code())),
        "{message}"
    );
}

#[tokio::test]
async fn enospc_on_write_answers_503_reads_go_on_and_nothing_refused_appears() {
    for power_loss in [false, true] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fs = FaultFs::new(23);
        let mut config = ServeConfig::new(tmp.path());
        config.log = fs.log_options(1 << 20);
        let server = TestServer::start(config).await;
        let mut acked = Vec::new();
        for _ in 0..3 {
            acked.push(server.api.create(far_future()).await);
        }

        fs.fail(Op::Write, Errno::NoSpace, Times::Always);
        for _ in 0..3 {
            refused_create(&server, Errno::NoSpace).await;
        }
        let (status, err) = server
            .api
            .query(json!({"type": "bulk", "args": [
                {"type": "create_scheduled_event", "args": far_future()},
                {"type": "create_scheduled_event", "args": far_future()}
            ]}))
            .await;
        assert_eq!((status, err["code"].as_str()), (503, Some("unavailable")));
        let (status, err) = server
            .api
            .metadata(json!({"type": "delete_scheduled_event",
                             "args": {"type": "one_off", "event_id": acked[0]}}))
            .await;
        assert_eq!((status, err["code"].as_str()), (503, Some("unavailable")));
        // Reads are answered from what is durable.
        assert_eq!(server.api.count().await, 3);
        let mut want = acked.clone();
        want.sort();
        assert_eq!(events_ids(&server.api.all_events().await), want);

        // A short write is refused the same way, and cut back.
        fs.heal();
        fs.fail_short_write(Errno::NoSpace, Times::Once);
        refused_create(&server, Errno::NoSpace).await;
        // Once there is room again, creates work.
        for _ in 0..2 {
            acked.push(server.api.create(far_future()).await);
        }
        assert_eq!(server.api.count().await, 5);
        server.stop().await;
        if power_loss {
            fs.crash();
        }

        // After a restart (on the real file system): everything
        // acknowledged, nothing refused.
        let server = TestServer::start(ServeConfig::new(tmp.path())).await;
        let mut want = acked.clone();
        want.sort();
        assert_eq!(
            events_ids(&server.api.all_events().await),
            want,
            "power_loss={power_loss}"
        );
        acked.push(server.api.create(far_future()).await);
        assert_eq!(server.api.count().await, 6);
        server.stop().await;
    }
}

#[tokio::test]
async fn a_failed_fsync_answers_503_until_restart_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs = FaultFs::new(29);
    let mut config = ServeConfig::new(tmp.path());
    config.log = fs.log_options(1 << 20);
    let server = TestServer::start(config).await;
    let mut acked = Vec::new();
    for _ in 0..2 {
        acked.push(server.api.create(far_future()).await);
    }
    fs.fail(Op::Sync, Errno::Io, Times::Once);
    refused_create(&server, Errno::Io).await;
    fs.heal();
    // Poisoned until a restart, even with the disk healed.
    let (status, err) = server
        .api
        .metadata(json!({"type": "create_scheduled_event", "args": far_future()}))
        .await;
    assert_eq!((status, err["code"].as_str()), (503, Some("unavailable")));
    assert_eq!(server.api.count().await, 2);
    server.stop().await;
    fs.crash();

    let server = TestServer::start(ServeConfig::new(tmp.path())).await;
    let listed = events_ids(&server.api.all_events().await);
    for id in &acked {
        assert!(listed.contains(id), "{id} lost: {listed:?}");
    }
    // The batch whose fsync failed may be there or not; nothing else is.
    assert!(listed.len() <= 3, "{listed:?}");
    server.api.create(far_future()).await;
    server.stop().await;
}

/// A webhook that reads one request, waits until `answer` fires, then
/// answers 200; later requests are counted and answered at once.
async fn gated_receiver() -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (answer, gate) = tokio::sync::oneshot::channel::<()>();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        let mut gate = Some(gate);
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let gate = gate.take();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                // One read holds the whole small request here.
                let _ = conn.read(&mut buf).await;
                seen.fetch_add(1, Ordering::SeqCst);
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (url, answer, requests)
}

/// The call was made, but the disk is full when its outcome is to be
/// recorded: the dispatcher keeps trying to record it (it does not leave
/// the event `locked` until a restart), and once there is room the event
/// is `delivered` on its one try, without a second call. The heal waits
/// until the full disk has refused the outcome at least twice, so the
/// retry loop has really run (healing at once could beat the first try).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_that_cannot_be_recorded_yet_is_recorded_once_there_is_room() {
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs = FaultFs::new(29);
    let mut config = ServeConfig::new(tmp.path());
    config.log = fs.log_options(1 << 20);
    let server = TestServer::start(config).await;
    let (url, answer, requests) = gated_receiver().await;
    let id = server
        .api
        .create(json!({"webhook": url, "schedule_at": chime::testing::from_now(-1)}))
        .await;
    chime::testing::eventually("the call to reach the webhook", || {
        let requests = requests.clone();
        async move { (requests.load(Ordering::SeqCst) == 1).then_some(()) }
    })
    .await;
    // Nothing else writes now: every refused write is the outcome's.
    let refused_before = fs.stats().refused_of(Op::Write);
    fs.fail(Op::Write, Errno::NoSpace, Times::Always);
    answer.send(()).expect("receiver waiting");
    chime::testing::eventually("the full disk to refuse the outcome twice", || {
        let refused = fs.stats().refused_of(Op::Write) - refused_before;
        async move { (refused >= 2).then_some(()) }
    })
    .await;
    // The outcome cannot be written: the event stays locked meanwhile.
    let event = server.api.event(&id).await;
    assert_eq!(event["status"], "locked", "{event}");
    fs.heal();
    let event = server.api.wait_status(&id, "delivered").await;
    assert_eq!(event["tries"], 1, "{event}");
    assert_eq!(requests.load(Ordering::SeqCst), 1, "not sent again");
    server.stop().await;
    let succeeded = chime::testing::record_count(tmp.path(), RecordKind::AttemptSucceeded);
    assert_eq!(succeeded, 1, "one attempt_succeeded record");
}
