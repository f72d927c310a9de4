//! Replay benchmark: how fast a restart rebuilds the projection from a log
//! of a realistic mix of records (issue 14: ≥ 2,000,000 records/s through
//! the projection).
//!
//! Run: `cargo bench --bench replay` (`CHIME_BENCH_EVENTS` events, default
//! 300,000 for `replay` and 1,000,000 for `restart`; `CHIME_BENCH_DIR`
//! chooses the disk); `-- replay`, `-- restart` or `-- snapshot` runs one
//! case (`snapshot`: appends while snapshots are written, see [`snapshot`]). The log is written first
//! (not timed), then opened by `Service::open` in this process, which scans
//! and checks every frame and then decodes and applies every record: the
//! line prints the records, the time of open + replay, and records/s.
//!
//! The mix, per event: `EventCreated` (a 60-byte payload, one header), then
//! `AttemptStarted` and `AttemptSucceeded` (with a small invocation) for
//! 80% of them; 10% fail once first (`AttemptStarted`, `AttemptFailed`
//! with a retry, then started and succeeded); 10% stay pending. That is
//! about 3.2 records per event.

use std::sync::Arc;
use std::time::Instant;

use chime::clock::SystemClock;
use chime::log::{Log, LogOptions};
use chime::record::{EventCreated, EventId, Record, UnixMicros, fixtures};
use chime::service::Service;
use chime::testing::bench::{self, bench_dir};

fn events() -> usize {
    std::env::var("CHIME_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000)
}

/// The records of event `n`, in the order they reach the log.
fn records_of(n: usize, at: i64) -> Vec<Record> {
    let id = EventId::from_u128(n as u128 + 1);
    let attempt = |k: u128| EventId::from_u128(((n as u128) << 8) + k);
    let created = Record::EventCreated(EventCreated {
        payload: format!(
            r#"{{"user_id":{n},"plan":"trial","step":"welcome-email-{}"}}"#,
            n % 97
        ),
        headers: fixtures::headers()[..1].to_vec(),
        created_at: UnixMicros(at),
        ..fixtures::event(
            id,
            "https://hooks.example.com/welcome",
            UnixMicros(at + 1_000_000),
        )
    });
    let started = |k, t| Record::AttemptStarted {
        event_id: id,
        attempt_id: attempt(k),
        at: UnixMicros(t),
    };
    let succeeded = |k, t| Record::AttemptSucceeded {
        event_id: id,
        attempt_id: attempt(k),
        at: UnixMicros(t),
        invocation: fixtures::invocation(Some(200)),
    };
    let t = at + 1_000_000;
    match n % 10 {
        0 => vec![created],
        1 => vec![
            created,
            started(1, t),
            Record::AttemptFailed {
                event_id: id,
                attempt_id: attempt(1),
                at: UnixMicros(t + 10),
                invocation: fixtures::invocation(Some(503)),
                next_retry_at: Some(UnixMicros(t + 10_000_000)),
            },
            started(2, t + 10_000_000),
            succeeded(2, t + 10_000_010),
        ],
        _ => vec![created, started(1, t), succeeded(1, t + 10)],
    }
}

fn main() {
    let want = bench::cases();
    if want("replay") {
        replay();
    }
    if want("restart") {
        restart();
    }
    if want("snapshot") {
        snapshot();
    }
}

/// A data dir whose log holds the creates of 1,000,000 pending events
/// (`CHIME_BENCH_EVENTS` overrides), in batches of 1,000; and that number.
fn pending_data_dir() -> (usize, tempfile::TempDir) {
    let n = std::env::var("CHIME_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000usize);
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let (log, _) =
        Log::open(&chime::datadir::log_dir(dir.path()), &LogOptions::default()).expect("open");
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk
            .iter()
            .map(|&i| records_of(i * 10, 1_900_000_000_000_000 + i as i64)[0].encode())
            .collect::<Result<Vec<_>, _>>()
            .expect("encode");
        log.append_blocking(batch).expect("append");
    }
    log.close();
    (n, dir)
}

/// Appends while a snapshot is written: a snapshot's encoding holds the
/// projection's lock, and the log's writer thread takes that lock to apply
/// each durable batch, so every append waits for the encoding to end.
/// Over 1,000,000 pending events (`CHIME_BENCH_EVENTS` overrides), one
/// appender appends one-record batches back to back for about 6 s while
/// three snapshots are written 1.5 s apart; the line gives the snapshots'
/// times and the appends' latency, those that overlapped a snapshot apart
/// from the rest.
fn snapshot() {
    let (n, dir) = pending_data_dir();
    let log_dir = chime::datadir::log_dir(dir.path());
    let (service, _) =
        Service::open(&log_dir, &LogOptions::default(), Arc::new(SystemClock)).expect("open");
    let service = Arc::new(service);
    let store = chime::snapshot::SnapshotStore::open(
        Arc::new(chime::log::fs::StdFs),
        &chime::snapshot::snapshot_dir(dir.path()),
    )
    .expect("snapshot store");
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (service, writing, done) = (service.clone(), writing.clone(), done.clone());
        std::thread::spawn(move || {
            let rt = bench::runtime();
            let (mut during, mut outside) = (Vec::new(), Vec::new());
            let mut k = 0u128;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                k += 1;
                // A cancel of an unknown event: applied as ignored, so
                // the projection does not grow while it is measured.
                let record = Record::EventCancelled {
                    event_id: EventId::from_u128(u128::MAX - k),
                    at: UnixMicros(1_900_000_000_000_000),
                };
                let overlapped_before = writing.load(std::sync::atomic::Ordering::Relaxed);
                let started = Instant::now();
                rt.block_on(service.append([record])).expect("append");
                let took = started.elapsed().as_secs_f64() * 1e3;
                if overlapped_before || writing.load(std::sync::atomic::Ordering::Relaxed) {
                    during.push(took);
                } else {
                    outside.push(took);
                }
            }
            (during, outside)
        })
    };
    let mut writes = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        writing.store(true, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        service.write_snapshot(&store).expect("snapshot");
        writes.push(started.elapsed().as_secs_f64() * 1e3);
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut during, mut outside) = appender.join().expect("appender");
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "snapshot {n} pending events: written in {} ms",
        writes
            .iter()
            .map(|w| format!("{w:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "snapshot appends while a snapshot was written: {} (p50 {:.2} ms, max {:.1} ms); \
         the others: {} (p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms)",
        during.len(),
        pct(&mut during, 0.5),
        pct(&mut during, 1.0),
        outside.len(),
        pct(&mut outside, 0.5),
        pct(&mut outside, 0.99),
        pct(&mut outside, 1.0),
    );
}

/// `chime serve` over 1,000,000 pending events (`CHIME_BENCH_EVENTS`
/// overrides): the time from spawning it until it listens (it binds only
/// once the state is rebuilt), first with a full replay of the log, then,
/// after a SIGTERM that writes a snapshot, restoring that snapshot.
fn restart() {
    let (n, dir) = pending_data_dir();
    let start = |what: &str| {
        let started = Instant::now();
        let child = bench::serve(dir.path(), &[]);
        let secs = started.elapsed().as_secs_f64();
        println!("restart {n} pending events, {what}: listening after {secs:.2}s");
        child
    };
    let rt = bench::runtime();
    let mut child = start("full replay (no snapshot)");
    child.terminate();
    rt.block_on(child.wait_exit(std::time::Duration::from_secs(120)))
        .expect("stops on SIGTERM");
    let snapshots = chime::snapshot::snapshot_dir(dir.path());
    let files: Vec<(String, u64)> = std::fs::read_dir(&snapshots)
        .expect("the snapshot directory")
        .map(|e| {
            let e = e.expect("entry");
            let len = e.metadata().expect("stat").len();
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    assert!(
        files.iter().any(|(name, _)| name.ends_with(".snap")),
        "no snapshot was written at the stop: {files:?}\n{}",
        child.stderr()
    );
    let bytes: u64 = files.iter().map(|(_, len)| len).sum();
    println!(
        "restart snapshot written at the stop: {:.1} MiB",
        bytes as f64 / (1024.0 * 1024.0)
    );
    let mut child = start("restoring the snapshot");
    child.terminate();
    rt.block_on(child.wait_exit(std::time::Duration::from_secs(120)))
        .expect("stops on SIGTERM");
}

fn replay() {
    let n = events();
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let log_dir = dir.path().join("log");
    let mut written = 0u64;
    {
        let (log, _) = Log::open(&log_dir, &LogOptions::default()).expect("open");
        // Batches of about a thousand records: the append path is not
        // what this bench measures.
        let mut batch = Vec::new();
        for i in 0..n {
            for r in records_of(i, 1_800_000_000_000_000 + i as i64 * 1000) {
                batch.push(r.encode().expect("encode"));
            }
            if batch.len() >= 1000 {
                written += batch.len() as u64;
                log.append_blocking(std::mem::take(&mut batch))
                    .expect("append");
            }
        }
        written += batch.len() as u64;
        if !batch.is_empty() {
            log.append_blocking(batch).expect("append");
        }
    }
    let bytes: u64 = std::fs::read_dir(&log_dir)
        .expect("log dir")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum();
    // The parts of a replay, each alone: scanning the frames (checksums),
    // and decoding the records on top of it; the rest of a full replay is
    // the projection's apply.
    let (log, _) = Log::open(&log_dir, &LogOptions::default()).expect("open");
    let timed = |decode: bool| {
        let start = Instant::now();
        let mut seen = 0u64;
        log.replay(|entry| {
            if decode {
                std::hint::black_box(Record::decode(entry.payload).expect("decode"));
            }
            seen += 1;
            Ok::<(), chime::log::LogError>(())
        })
        .expect("replay");
        assert_eq!(seen, written);
        start.elapsed().as_secs_f64()
    };
    let (walk, decode) = (timed(false), timed(true));
    drop(log);
    let start = Instant::now();
    let (service, startup) =
        Service::open(&log_dir, &LogOptions::default(), Arc::new(SystemClock)).expect("open");
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(startup.replayed, written);
    let in_view = service.projection().len();
    println!(
        "parts   walking the frames {walk:.2}s, walking and decoding {decode:.2}s = {:.0} records/s decoded",
        written as f64 / decode
    );
    println!(
        "replay  {n} events, {written} records ({:.0} MiB): open+replay {elapsed:.2}s = {:.0} records/s (replay alone {:.2}s = {:.0} records/s); {in_view} events in view",
        bytes as f64 / (1024.0 * 1024.0),
        written as f64 / elapsed,
        startup.replay_seconds,
        written as f64 / startup.replay_seconds,
    );
}
