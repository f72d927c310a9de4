//! Delivery benchmark: deliveries/s to a local keep-alive receiver (a
//! burst of 100,000 events due at the same instant), and lateness
//! (arrival at the receiver − scheduled time) with 1,000 events due per
//! second.
//!
//! Run: `cargo bench --bench delivery` (a filter picks `burst` or
//! `lateness`; `CHIME_BENCH_DIR` chooses the disk, default
//! `target/bench-tmp`). Figures go into docs/performance.md.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use chime::clock::SystemClock;
use chime::record::{EventCreated, EventId, Record, UnixMicros, fixtures};
use chime::service::Service;

use chime::testing::bench::{self, bench_dir};

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    /// Lateness of each delivery, in microseconds.
    lateness: Mutex<Vec<i64>>,
}

async fn receive(State(seen): State<Arc<Seen>>, body: Bytes) -> &'static str {
    let now = jiff::Timestamp::now().as_microsecond();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json body");
    let scheduled: jiff::Timestamp = v["scheduled_time"]
        .as_str()
        .expect("scheduled_time")
        .parse()
        .expect("time");
    seen.lateness
        .lock()
        .expect("lock")
        .push(now - scheduled.as_microsecond());
    seen.count.fetch_add(1, Ordering::Relaxed);
    "ok"
}

async fn receiver() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// Writes events straight into the log (before the server starts).
async fn write_events(dir: &Path, url: &str, times: impl Iterator<Item = UnixMicros>) -> u64 {
    let (service, _) =
        Service::open(&dir.join("log"), &Default::default(), Arc::new(SystemClock)).expect("open");
    let mut batch = vec![];
    let mut n = 0;
    for (i, at) in times.enumerate() {
        batch.push(Record::EventCreated(EventCreated {
            payload: format!(r#"{{"n":{i}}}"#),
            created_at: at,
            ..fixtures::event(EventId::new_v4(), url, at)
        }));
        if batch.len() == 1000 {
            n += batch.len() as u64;
            service
                .append(std::mem::take(&mut batch))
                .await
                .expect("append");
        }
    }
    if !batch.is_empty() {
        n += batch.len() as u64;
        service.append(batch).await.expect("append");
    }
    n
}

async fn wait_for(seen: &Seen, n: u64, limit: Duration) {
    let start = Instant::now();
    while seen.count.load(Ordering::Relaxed) < n {
        assert!(
            start.elapsed() < limit,
            "only {} of {n} delivered",
            seen.count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn burst() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let (url, seen) = receiver().await;
    let at = UnixMicros::from_timestamp(jiff::Timestamp::now());
    write_events(dir.path(), &url, (0..N).map(|_| at)).await;
    let start = Instant::now();
    let _server = bench::serve(dir.path(), &[]);
    wait_for(&seen, N, Duration::from_secs(600)).await;
    let s = start.elapsed().as_secs_f64();
    println!(
        "burst     {N} events due at one instant: drained in {s:.2}s = {:.0} deliveries/s (server start and replay included)",
        N as f64 / s
    );
}

async fn lateness() {
    const PER_SECOND: i64 = 1000;
    const SECONDS: i64 = 10;
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let (url, seen) = receiver().await;
    let server = bench::serve(dir.path(), &[]);
    // Created through the API once the server runs, so a slow start cannot
    // make the first events late.
    chime::tls::install_crypto_provider();
    // Loopback: never through a proxy of the environment.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let t0 = jiff::Timestamp::now().as_microsecond() + 2_000_000;
    let n = PER_SECOND * SECONDS;
    for chunk in 0..n / 1000 {
        let args: Vec<serde_json::Value> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| {
                let at = UnixMicros(t0 + i * 1_000_000 / PER_SECOND).to_rfc3339();
                serde_json::json!({"type": "create_scheduled_event",
                    "args": {"webhook": url, "schedule_at": at, "payload": {"n": i}}})
            })
            .collect();
        let body = serde_json::json!({"type": "bulk", "args": args}).to_string();
        let resp = client
            .post(format!("{}/v1/query", server.api.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("bulk create");
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    assert!(
        jiff::Timestamp::now().as_microsecond() < t0,
        "creating the events took longer than the 2 s lead"
    );
    let n = n as u64;
    wait_for(&seen, n, Duration::from_secs(60)).await;
    let mut late = seen.lateness.lock().expect("lock").clone();
    late.sort_unstable();
    println!(
        "lateness  {n} events, {PER_SECOND}/s over {SECONDS}s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, min {:.2} ms",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        percentile(&late, 1.0),
        percentile(&late, 0.0),
    );
}

fn main() {
    let want = bench::cases();
    let rt = bench::runtime();
    rt.block_on(async {
        if want("lateness") {
            lateness().await;
        }
        if want("burst") {
            burst().await;
        }
    });
}
