//! Compaction benchmarks (issue 14): what a compaction costs the appends
//! running beside it, how fast a data dir of mostly retired history
//! restarts once compacted, and whether a server left running through many
//! retention periods holds flat disk and RAM.
//!
//! Run: `cargo bench --bench compaction` (all three), or `-- during`,
//! `-- restart`, `-- long`. `CHIME_BENCH_DIR` chooses the disk.
//!
//! - `during`: a log of `CHIME_BENCH_EVENTS` (default 1,500,000) cancelled
//!   events and a ninth as many pending ones, interleaved, so every sealed
//!   segment is mostly garbage. One appender appends one `EventCreated`
//!   per batch back to back for 3 s, then while one compaction runs, then
//!   for 3 s more: the appends' latency during the compaction against the
//!   others, in one run (the issue asks p99 during ≤ 2× p99 without).
//! - `restart`: `CHIME_BENCH_RETIRED` (default 10,000,000) events created,
//!   delivered and retired, and `CHIME_BENCH_PENDING` (default 1,000,000)
//!   pending; `chime log compact` (timed), then `chime serve` from spawn
//!   until it listens (the issue asks ≤ 1.0 s), the log's bytes against
//!   its live bytes, and the server's RSS; then the same start without the
//!   snapshot (a full replay of the compacted log).
//! - `long`: `chime serve --retain-finished 2s --compaction-interval 1s
//!   --segment-bytes 1MiB` takes creates due at once (delivered to a local
//!   receiver) at a steady rate for `CHIME_BENCH_SECS` (default 240 s;
//!   retention looks once a minute, so that is four retention periods); a
//!   line every 10 s gives the events created, the log's bytes and the
//!   server's RSS.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chime::clock::SystemClock;
use chime::log::{Log, LogOptions};
use chime::record::{EventCreated, EventId, Record, UnixMicros, fixtures};
use chime::service::Service;
use chime::testing::bench::{self, bench_dir};
use chime::testing::{Receiver, chime_binary};

const T: i64 = 1_900_000_000_000_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let want = bench::cases();
    if want("during") {
        during();
    }
    if want("restart") {
        restart();
    }
    if want("long") {
        long();
    }
}

/// Event `n`'s creation: a 60-byte payload and one header, as in
/// `benches/replay.rs`.
fn created(n: u128) -> EventCreated {
    EventCreated {
        payload: format!(
            r#"{{"user_id":{n},"plan":"trial","step":"welcome-email-{}"}}"#,
            n % 97
        ),
        headers: fixtures::headers()[..1].to_vec(),
        created_at: UnixMicros(T),
        ..fixtures::event(
            EventId::from_u128(n + 1),
            "https://hooks.example.com/welcome",
            UnixMicros(T + 86_400_000_000),
        )
    }
}

fn encode(records: &[Record]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(Record::encode)
        .collect::<Result<Vec<_>, _>>()
        .expect("encode")
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn during() {
    let garbage = env_or("CHIME_BENCH_EVENTS", 1_500_000);
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let log_dir = chime::datadir::log_dir(dir.path());
    {
        let (log, _) = Log::open(&log_dir, &LogOptions::default()).expect("open");
        let mut batch = Vec::new();
        for n in 0..garbage as u128 {
            let e = created(n);
            let id = e.event_id;
            batch.push(Record::EventCreated(e));
            if n % 9 != 0 {
                batch.push(Record::EventCancelled {
                    event_id: id,
                    at: UnixMicros(T),
                });
            }
            if batch.len() >= 2000 {
                log.append_blocking(encode(&batch)).expect("append");
                batch.clear();
            }
        }
        log.append_blocking(encode(&batch)).expect("append");
        log.close();
    }
    let log_bytes = dir_bytes(&log_dir);
    let (service, _) =
        Service::open(&log_dir, &LogOptions::default(), Arc::new(SystemClock)).expect("open");
    let service = Arc::new(service);
    let store = chime::snapshot::SnapshotStore::open(
        Arc::new(chime::log::fs::StdFs),
        &chime::snapshot::snapshot_dir(dir.path()),
    )
    .expect("snapshot store");
    let compacting = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let appender = {
        let (service, compacting, done) = (service.clone(), compacting.clone(), done.clone());
        std::thread::spawn(move || {
            let rt = bench::runtime();
            let (mut during, mut outside) = (Vec::new(), Vec::new());
            let mut n = 1u128 << 64;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let record = Record::EventCreated(created(n));
                let overlapped_before = compacting.load(Ordering::Relaxed);
                let started = Instant::now();
                rt.block_on(service.append([record])).expect("append");
                let took = started.elapsed().as_secs_f64() * 1e3;
                if overlapped_before || compacting.load(Ordering::Relaxed) {
                    during.push(took);
                } else {
                    outside.push(took);
                }
            }
            (during, outside)
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    compacting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let report = chime::compaction::compact(&service, Some(&store)).expect("compact");
    let took = started.elapsed().as_secs_f64();
    compacting.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    done.store(true, Ordering::Relaxed);
    let (mut during, mut outside) = appender.join().expect("appender");
    println!(
        "during {garbage} events ({} pending), log {:.0} MiB: compaction {took:.2} s, \
         {} segments into {}, {:.0} MiB to {:.1} MiB, snapshot at {:?}",
        garbage.div_ceil(9),
        mib(log_bytes),
        report.segments_in,
        report.segments_out,
        mib(report.bytes_in),
        mib(report.bytes_out),
        report.snapshot_seq,
    );
    let (p99_during, p99_outside) = (pct(&mut during, 0.99), pct(&mut outside, 0.99));
    println!(
        "during appends while compacting: {} (p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms); \
         the others: {} (p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms); p99 ratio {:.2}",
        during.len(),
        pct(&mut during, 0.5),
        p99_during,
        pct(&mut during, 1.0),
        outside.len(),
        pct(&mut outside, 0.5),
        p99_outside,
        pct(&mut outside, 1.0),
        p99_during / p99_outside,
    );
    service.log.close();
}

fn restart() {
    let retired = env_or("CHIME_BENCH_RETIRED", 10_000_000);
    let pending = env_or("CHIME_BENCH_PENDING", 1_000_000);
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let log_dir = chime::datadir::log_dir(dir.path());
    let built = Instant::now();
    {
        let (log, _) = Log::open(&log_dir, &LogOptions::default()).expect("open");
        let mut batch = Vec::new();
        let total = retired + pending;
        // Pending events spread among the finished ones, as a live
        // service's would be.
        let every = (total / pending.max(1)).max(1);
        for n in 0..total {
            let e = created(n as u128);
            let id = e.event_id;
            batch.push(Record::EventCreated(e));
            if n % every != 0 || n / every >= pending {
                let attempt = EventId::from_u128(u128::MAX - n as u128);
                batch.push(Record::AttemptStarted {
                    event_id: id,
                    attempt_id: attempt,
                    at: UnixMicros(T + 1),
                });
                batch.push(Record::AttemptSucceeded {
                    event_id: id,
                    attempt_id: attempt,
                    at: UnixMicros(T + 2),
                    invocation: fixtures::invocation(Some(200)),
                });
            }
            if batch.len() >= 3000 {
                log.append_blocking(encode(&batch)).expect("append");
                batch.clear();
            }
        }
        batch.push(Record::EventsRetired {
            finished_before: UnixMicros(T + 3),
            at: UnixMicros(T + 3),
        });
        log.append_blocking(encode(&batch)).expect("append");
        log.close();
    }
    let before = dir_bytes(&log_dir);
    println!(
        "restart {retired} retired + {pending} pending: log of {:.0} MiB written in {:.0} s",
        mib(before),
        built.elapsed().as_secs_f64()
    );
    let compacted = Instant::now();
    let output = std::process::Command::new(chime_binary())
        .args(["log", "compact", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("chime log compact");
    assert!(output.status.success(), "{output:?}");
    println!(
        "restart chime log compact: {:.1} s: {}",
        compacted.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stdout).trim()
    );
    let stats = std::process::Command::new(chime_binary())
        .args(["log", "stats", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("chime log stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats json");
    let garbage = stats["records"]["garbage"]["bytes"].as_u64().unwrap_or(0);
    let after = dir_bytes(&log_dir);
    println!(
        "restart log after compaction: {:.1} MiB ({} segments), garbage left {:.1} MiB, \
         reclaimable {}",
        mib(after),
        stats["segments"].as_array().map_or(0, Vec::len),
        mib(garbage),
        stats["reclaimable_bytes"],
    );
    let started = Instant::now();
    let mut child = bench::serve(dir.path(), &[]);
    let secs = started.elapsed().as_secs_f64();
    let rss = bench::rss_anon_bytes_of(&format!("/proc/{}/status", child.pid()));
    println!(
        "restart chime serve: listening after {secs:.2} s, RssAnon {:.0} MiB ({:.0} B per pending event)",
        mib(rss),
        rss as f64 / pending.max(1) as f64
    );
    child.terminate();
    let rt = bench::runtime();
    rt.block_on(child.wait_exit(Duration::from_secs(120)))
        .expect("stops on SIGTERM");
    // The same state built by a full replay of the compacted log instead.
    std::fs::remove_dir_all(chime::snapshot::snapshot_dir(dir.path())).expect("rm snapshots");
    let started = Instant::now();
    let mut child = bench::serve(dir.path(), &[]);
    let secs = started.elapsed().as_secs_f64();
    let rss = bench::rss_anon_bytes_of(&format!("/proc/{}/status", child.pid()));
    println!(
        "restart chime serve without its snapshot (a full replay of the compacted log): \
         listening after {secs:.2} s, RssAnon {:.0} MiB ({:.0} B per pending event)",
        mib(rss),
        rss as f64 / pending.max(1) as f64
    );
    child.terminate();
    rt.block_on(child.wait_exit(Duration::from_secs(120)))
        .expect("stops on SIGTERM");
}

fn long() {
    let secs = bench::secs(240.0);
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let rt = bench::runtime();
    let receiver = rt.block_on(Receiver::ok());
    let child = bench::serve(
        dir.path(),
        &[
            "--retain-finished",
            "2s",
            "--compaction-interval",
            "1s",
            "--segment-bytes",
            "1048576",
        ],
    );
    let api = child.api.clone();
    let log_dir = chime::datadir::log_dir(dir.path());
    let status = format!("/proc/{}/status", child.pid());
    let url = receiver.url("/hook");
    let started = Instant::now();
    let mut created = 0usize;
    let mut next_report = 10.0;
    println!("long t(s) created log(MiB) RssAnon(MiB)");
    rt.block_on(async {
        while started.elapsed().as_secs_f64() < secs {
            // 100 creates a bulk, about 10 bulks a second.
            let args: Vec<serde_json::Value> = (0..100)
                .map(|i| {
                    serde_json::json!({
                        "webhook": url,
                        "schedule_at": jiff::Timestamp::now().to_string(),
                        "payload": {"n": created + i, "pad": "p".repeat(60)},
                    })
                })
                .collect();
            api.create_all(&args).await;
            created += args.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let t = started.elapsed().as_secs_f64();
            if t >= next_report {
                next_report += 10.0;
                println!(
                    "long {t:.0} {created} {:.1} {:.1}",
                    mib(dir_bytes(&log_dir)),
                    mib(bench::rss_anon_bytes_of(&status))
                );
            }
        }
    });
    println!("long receiver got {} calls", receiver.count());
}
