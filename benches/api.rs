//! API benchmark: creates/s over HTTP (single creates at 64 connections,
//! bulk requests of 1,000), RAM per pending event with 1,000,000
//! pending, RAM per retained finished (delivered) event with 1,000,000 of
//! them, and the server's memory around 8 concurrent unlimited listings
//! of 200,000 events.
//!
//! Run: `cargo bench --bench api` (a filter picks cases: `create`, `bulk`,
//! `ram` (both RAM cases), `ram-finished`, `listing`). `CHIME_BENCH_SECS` sets the time per case (default 5),
//! `CHIME_BENCH_DIR` the disk (default `target/bench-tmp`). Figures go into
//! docs/performance.md.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chime::clock::Clock;
use chime::clock::SystemClock;
use chime::record::{AttemptId, EventCreated, EventId, Record, UnixMicros, fixtures};
use chime::service::Service;
use serde_json::json;

use chime::testing::ChildServer;
use chime::testing::bench::{self, bench_dir};

fn secs() -> f64 {
    bench::secs(5.0)
}

/// Starts the server process on `dir`.
fn start(dir: &Path) -> ChildServer {
    bench::serve(dir, &[])
}

fn create_body(i: u64) -> serde_json::Value {
    json!({
        "type": "create_scheduled_event",
        "args": {
            // Far in the future: this measures the write path, not delivery.
            "webhook": "http://127.0.0.1:9/never",
            "schedule_at": "2099-01-01T00:00:00Z",
            "payload": {"user": i, "email": "bob@ross.com"},
            "headers": [{"name": "x-k", "value": "v"}],
        }
    })
}

fn client() -> reqwest::Client {
    chime::tls::install_crypto_provider();
    // The server is on loopback: never through a proxy of the environment.
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client")
}

async fn run_load(
    url: &str,
    connections: usize,
    make: impl Fn(u64) -> serde_json::Value + Send + Sync + 'static,
    events_per_request: u64,
) -> (u64, f64) {
    let client = client();
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let make = Arc::new(make);
    let start = Instant::now();
    let mut tasks = vec![];
    for c in 0..connections {
        let (client, done, count, make) =
            (client.clone(), done.clone(), count.clone(), make.clone());
        let url = format!("{url}/v1/query");
        tasks.push(tokio::spawn(async move {
            let mut i = c as u64 * 1_000_000_000;
            while !done.load(Ordering::Relaxed) {
                let body = serde_json::to_vec(&make(i)).expect("json");
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("send");
                assert!(resp.status().is_success(), "{}", resp.status());
                resp.bytes().await.expect("body");
                count.fetch_add(events_per_request, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs())).await;
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("task");
    }
    (count.load(Ordering::Relaxed), start.elapsed().as_secs_f64())
}

/// Runs `wrk` (a separate process, so the load generator's CPU is not
/// this process's) posting `body` over `connections` connections; returns
/// requests/s, or None when wrk is not installed.
fn wrk(url: &str, connections: usize, body: &serde_json::Value) -> Option<f64> {
    let dir = tempfile::tempdir().ok()?;
    let script = dir.path().join("post.lua");
    let body = serde_json::to_string(body).expect("json");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [==[{body}]==]\n"
        ),
    )
    .ok()?;
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{}s", secs()),
        ])
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "wrk saw errors:\n{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

fn creates(rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    rt.block_on(async {
        let server = start(dir.path());
        let url = server.api.base.clone();
        let target = format!("{url}/v1/metadata");
        let body = create_body(1);
        match tokio::task::block_in_place(|| wrk(&target, 64, &body)) {
            Some(rate) => println!("create  single creates, 64 connections (wrk): {rate:>9.0} creates/s"),
            None => {
                let (n, s) = run_load(&url, 64, create_body, 1).await;
                println!(
                    "create  single creates, 64 connections (in-process client; install wrk for a fairer figure): {:>9.0} creates/s ({n} in {s:.2}s)",
                    n as f64 / s
                );
            }
        }
    });
}

fn bulk_body(i: u64) -> serde_json::Value {
    let args: Vec<_> = (0..1000).map(|k| create_body(i * 1000 + k)).collect();
    json!({"type": "bulk", "args": args})
}

fn bulk(rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    rt.block_on(async {
        let server = start(dir.path());
        let url = server.api.base.clone();
        let target = format!("{url}/v1/query");
        let body = bulk_body(0);
        match tokio::task::block_in_place(|| wrk(&target, 4, &body)) {
            Some(rate) => println!(
                "bulk    bulk of 1,000 creates, 4 connections (wrk): {:>9.0} events/s",
                rate * 1000.0
            ),
            None => {
                let (n, s) = run_load(&url, 4, bulk_body, 1000).await;
                println!(
                    "bulk    bulk of 1,000 creates, 4 connections (in-process client): {:>9.0} events/s ({n} in {s:.2}s)",
                    n as f64 / s
                );
            }
        }
    });
}

/// Anonymous resident memory of this process.
fn rss_anon_bytes() -> u64 {
    bench::rss_anon_bytes_of("/proc/self/status")
}

const RAM_EVENTS: u64 = 1_000_000;

fn ram(rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let log_dir = dir.path().join("log");
    rt.block_on(async {
        let (service, _) =
            Service::open(&log_dir, &Default::default(), Arc::new(SystemClock)).expect("open");
        for chunk in 0..RAM_EVENTS / 1000 {
            let records: Vec<Record> = (0..1000)
                .map(|k| {
                    let i = chunk * 1000 + k;
                    Record::EventCreated(EventCreated {
                        payload: format!(r#"{{"user":{i},"email":"bob@ross.com"}}"#),
                        ..fixtures::event(
                            EventId::new_v4(),
                            "http://127.0.0.1:9/never",
                            UnixMicros(4_000_000_000_000_000 + i as i64),
                        )
                    })
                })
                .collect();
            service.append(records).await.expect("append");
        }
    });
    measure_ram(&dir, "pending", &[]);
}

/// RAM per retained finished event: 1,000,000 events, each created,
/// started and delivered (one invocation log entry), finished now, so that
/// retention (left on, at its default) keeps them all.
fn ram_finished(rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let log_dir = dir.path().join("log");
    rt.block_on(async {
        let (service, _) =
            Service::open(&log_dir, &Default::default(), Arc::new(SystemClock)).expect("open");
        let now = SystemClock.now();
        for chunk in 0..RAM_EVENTS / 1000 {
            let mut records = Vec::with_capacity(3_000);
            for k in 0..1000 {
                let i = chunk * 1000 + k;
                let (event_id, attempt_id) = (EventId::new_v4(), AttemptId::new_v4());
                records.push(Record::EventCreated(EventCreated {
                    payload: format!(r#"{{"user":{i},"email":"bob@ross.com"}}"#),
                    ..fixtures::event(event_id, "http://127.0.0.1:9/never", now)
                }));
                records.push(Record::AttemptStarted {
                    event_id,
                    attempt_id,
                    at: now,
                });
                records.push(Record::AttemptSucceeded {
                    event_id,
                    attempt_id,
                    at: now,
                    invocation: fixtures::invocation(Some(200)),
                });
            }
            service.append(records).await.expect("append");
        }
    });
    measure_ram(&dir, "finished", &[]);
}

/// Prints the RAM per event of the events in `dir`'s log: replayed in a
/// fresh process of this bench, and in `chime serve` over an empty server.
fn measure_ram(dir: &tempfile::TempDir, what: &str, serve_flags: &[&str]) {
    let log_dir = dir.path().join("log");
    // Measure the replay in a fresh process, so the writer's freed memory
    // does not count.
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--replay-rss")
        .arg(&log_dir)
        .output()
        .expect("child");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the service itself: `chime serve` over these events against
    // `chime serve` over an empty data dir.
    let empty = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let base = bench::serve(empty.path(), serve_flags).rss_anon_bytes();
    let full = bench::serve(dir.path(), serve_flags).rss_anon_bytes();
    println!(
        "ram     chime serve with {RAM_EVENTS} {what} events: {:.0} B/event anonymous RSS over an empty server ({} MiB vs {} MiB)",
        full.saturating_sub(base) as f64 / RAM_EVENTS as f64,
        full / (1024 * 1024),
        base / (1024 * 1024)
    );
}

const LISTING_EVENTS: u64 = 200_000;
const LISTINGS: usize = 8;

/// `chime serve` with 200,000 events, then 8 concurrent
/// `get_scheduled_events` with no `limit`, each read to its end by a client
/// that keeps none of it: the server's anonymous RSS before, at its highest
/// (sampled every 5 ms) and after, and the growth of its peak RSS (`VmHWM`,
/// which also counts the log's mapped pages the listings read).
fn listing(rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    rt.block_on(async {
        // A listing built whole sends its first byte only once it is all
        // rendered, which can take longer than the idle timeout (it did in
        // a debug build); what is measured is memory, so none is cut.
        let server = bench::serve(dir.path(), &["--idle-timeout", "1h"]);
        let client = client();
        let query = format!("{}/v1/query", server.api.base);
        for i in 0..LISTING_EVENTS / 1000 {
            let resp = client
                .post(&query)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&bulk_body(i)).expect("json"))
                .send()
                .await
                .expect("send");
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.bytes().await.expect("body");
        }
        let status = format!("/proc/{}/status", server.pid());
        let before = bench::rss_anon_bytes_of(&status);
        bench::reset_peak_rss(server.pid());
        let peak_before = bench::peak_rss_bytes_of(&status);
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (sampling, status) = (sampling.clone(), status.clone());
            std::thread::spawn(move || {
                let mut highest = 0;
                while sampling.load(Ordering::Relaxed) {
                    highest = highest.max(bench::rss_anon_bytes_of(&status));
                    std::thread::sleep(Duration::from_millis(5));
                }
                highest
            })
        };
        let start = Instant::now();
        let body = json!({"type": "get_scheduled_events", "args": {"type": "one_off"}});
        let tasks: Vec<_> = (0..LISTINGS)
            .map(|_| {
                let (client, url, body) = (client.clone(), query.clone(), body.to_string());
                tokio::spawn(async move {
                    let mut resp = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("send");
                    assert!(resp.status().is_success(), "{}", resp.status());
                    let mut bytes = 0;
                    while let Some(chunk) = resp.chunk().await.expect("body") {
                        bytes += chunk.len();
                    }
                    bytes
                })
            })
            .collect();
        let mut bytes = 0;
        for task in tasks {
            bytes = task.await.expect("listing");
        }
        let elapsed = start.elapsed().as_secs_f64();
        sampling.store(false, Ordering::Relaxed);
        let highest = sampler.join().expect("sampler");
        let after = bench::rss_anon_bytes_of(&status);
        let peak = bench::peak_rss_bytes_of(&status);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!(
            "listing {LISTINGS} concurrent listings of {LISTING_EVENTS} events ({:.1} MiB each, {elapsed:.1}s): anonymous RSS {:.1} MiB before, {:.1} MiB at most, {:.1} MiB after; peak RSS (VmHWM) +{:.1} MiB",
            mib(bytes as u64),
            mib(before),
            mib(highest),
            mib(after),
            mib(peak.saturating_sub(peak_before)),
        );
    });
}

fn replay_rss(log_dir: &Path) {
    let before = rss_anon_bytes();
    let start = Instant::now();
    let (service, startup) =
        Service::open(log_dir, &Default::default(), Arc::new(SystemClock)).expect("open");
    let elapsed = start.elapsed().as_secs_f64();
    let events = service.projection().len() as u64;
    let [scheduled, locked, delivered, error, dead] = service.projection().counts();
    let after = rss_anon_bytes();
    println!(
        "ram     {events} events ({scheduled} scheduled, {locked} locked, {delivered} delivered, {error} error, {dead} dead): {:.0} B/event anonymous RSS ({} MiB), replay of {} records in {elapsed:.2}s",
        (after - before) as f64 / events.max(1) as f64,
        (after - before) / (1024 * 1024),
        startup.replayed
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--replay-rss") {
        replay_rss(Path::new(&args[i + 1]));
        return;
    }
    let want = bench::cases();
    let rt = bench::runtime();
    if want("create") {
        creates(&rt);
    }
    if want("bulk") {
        bulk(&rt);
    }
    if want("ram") {
        ram(&rt);
    }
    if want("ram-finished") {
        ram_finished(&rt);
    }
    if want("listing") {
        listing(&rt);
    }
}
