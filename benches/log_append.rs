//! Log benchmark: durable appends/s at 1, 16 and 256 concurrent appenders
//! with 256 B and 4 KiB records, and replay throughput.
//!
//! Run: `cargo bench --bench log_append` (set `CHIME_BENCH_SECS` to change
//! the time per case, default 3; `CHIME_BENCH_DIR` to choose the disk,
//! default `target/bench-tmp`). Prints one line per case; figures go into
//! docs/performance.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chime::log::{Log, LogError, LogOptions};

use chime::testing::bench::{self, bench_dir};

fn secs() -> f64 {
    bench::secs(3.0)
}

fn appends(rt: &tokio::runtime::Runtime, appenders: usize, size: usize) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let (log, _) = Log::open(dir.path(), &LogOptions::default()).expect("open");
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = vec![];
        for _ in 0..appenders {
            let (log, done, count) = (log.clone(), done.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let record = vec![0xabu8; size];
                while !done.load(Ordering::Relaxed) {
                    log.append(vec![record.clone()]).await.expect("append");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(secs())).await;
        done.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("task");
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    println!(
        "append  appenders={appenders:<4} record={size:<5}B  {:>10.0} durable appends/s  ({n} in {elapsed:.2}s)",
        n as f64 / elapsed
    );
}

fn replay(records: usize, size: usize) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    {
        let (log, _) = Log::open(dir.path(), &LogOptions::default()).expect("open");
        let record = vec![0x5au8; size];
        // Fill quickly with large batches; the append path is measured above.
        for _ in 0..records / 1000 {
            log.append_blocking(vec![record.clone(); 1000])
                .expect("append");
        }
    }
    let start = Instant::now();
    let (log, recovery) = Log::open(dir.path(), &LogOptions::default()).expect("open");
    let opened = start.elapsed().as_secs_f64();
    let mut n = 0u64;
    let mut bytes = 0u64;
    log.replay(|e| {
        n += 1;
        bytes += e.payload.len() as u64;
        Ok::<(), LogError>(())
    })
    .expect("replay");
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(n, recovery.records);
    println!(
        "replay  records={n} record={size}B  open+verify {opened:.2}s, open+verify+replay {elapsed:.2}s: {:>10.0} records/s, {:.0} MB/s",
        n as f64 / elapsed,
        bytes as f64 / elapsed / 1e6
    );
}

fn main() {
    let want = bench::cases();
    let rt = bench::runtime();
    for size in [256, 4096] {
        for appenders in [1, 16, 256] {
            if want("append") {
                appends(&rt, appenders, size);
            }
        }
    }
    if want("replay") {
        replay(1_000_000, 256);
    }
}
