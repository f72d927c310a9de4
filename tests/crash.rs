//! kill -9 harness: `chime serve` as a child process, SIGKILLed at random
//! moments while clients create events and deliveries are in flight.
//!
//! Checks: every acknowledged event survives with its data; nothing appears
//! that was never sent; the log verifies clean; every due event ends
//! `delivered` (duplicates are counted and reported, never missing).
//!
//! A handful of iterations run by default; `CHIME_CRASH_ITERATIONS=300`
//! runs more. `CHIME_CRASH_SEED` replays a run.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

fn iterations() -> usize {
    std::env::var("CHIME_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// A small deterministic generator (xorshift64*), seeded per run and
/// printed, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("CHIME_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("CHIME_CRASH_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

mod harness;
use harness::ChildServer;

/// The server under test, as a child process (killed on drop).
struct Proc {
    server: ChildServer,
    base: String,
}

impl Proc {
    fn spawn(data_dir: &Path) -> Proc {
        // The give-up rule for events interrupted again and again is tested
        // in tests/delivery.rs; here the kills are ours, not the events'
        // fault, and every due event must end delivered.
        let server = ChildServer::start(
            data_dir,
            &[
                "--segment-bytes",
                "65536",
                "--max-interrupted-attempts",
                "1000000",
            ],
        );
        Proc {
            base: format!("http://{}", server.addr),
            server,
        }
    }

    fn kill9(mut self) {
        self.server.kill();
    }

    async fn stop(mut self) {
        self.server.terminate();
        let status = self.server.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(status.and_then(|s| s.code()), Some(0), "no clean stop");
    }
}

fn client() -> reqwest::Client {
    chime::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn metadata(client: &reqwest::Client, base: &str, body: Value) -> Result<Value, String> {
    let resp = client
        .post(format!("{base}/v1/metadata"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(v)
    } else {
        Err(format!("{status}: {v}"))
    }
}

async fn all_events(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let v = metadata(
        client,
        base,
        json!({"type": "get_scheduled_events", "args": {"type": "one_off"}}),
    )
    .await
    .unwrap();
    v["events"].as_array().unwrap().clone()
}

/// What the clients sent and what the server acknowledged.
#[derive(Clone, Default)]
struct Ledger {
    /// Every marker ever sent, acknowledged or not.
    sent: HashSet<String>,
    /// Acknowledged event id → its marker.
    acked: HashMap<String, String>,
}

/// Runs `clients` tasks creating events until the server dies.
async fn drive_creates(
    base: &str,
    ledger: &Arc<Mutex<Ledger>>,
    iteration: usize,
    webhook: &str,
    schedule_at: impl Fn(u64) -> String + Send + Sync + Clone + 'static,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![];
    for t in 0..8 {
        let (base, ledger, webhook, schedule_at) = (
            base.to_string(),
            ledger.clone(),
            webhook.to_string(),
            schedule_at.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = client();
            for i in 0u64.. {
                let marker = format!("{iteration}-{t}-{i}");
                ledger.lock().unwrap().sent.insert(marker.clone());
                let body = json!({"type": "create_scheduled_event", "args": {
                    "webhook": webhook,
                    "schedule_at": schedule_at(i),
                    "payload": {"marker": marker, "pad": "x".repeat((i % 50) as usize)},
                    "headers": [{"name": "x-marker", "value": marker}],
                }});
                match metadata(&client, &base, body).await {
                    Ok(v) => {
                        let id = v["event_id"].as_str().unwrap().to_string();
                        ledger.lock().unwrap().acked.insert(id, marker);
                    }
                    // The server was killed: this create may or may not
                    // have been written, and was never acknowledged.
                    Err(_) => return,
                }
            }
        }));
    }
    tasks
}

/// Every acknowledged event is there with its data, and every event there
/// was sent by us.
async fn check_survivors(base: &str, ledger: &Ledger) -> usize {
    let events = all_events(&client(), base).await;
    let by_id: HashMap<&str, &Value> = events
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e))
        .collect();
    for (id, marker) in &ledger.acked {
        let e = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("acknowledged event {id} ({marker}) is lost"));
        assert_eq!(e["payload"]["marker"], json!(marker), "event {id} data");
        assert_eq!(e["header_conf"][0]["value"], json!(marker));
    }
    for e in &events {
        let marker = e["payload"]["marker"].as_str().unwrap();
        assert!(ledger.sent.contains(marker), "event {e} was never sent");
    }
    events.len()
}

fn log_verifies_clean(data_dir: &Path) {
    let scan = chime::log::DirScan::read(&data_dir.join("log")).unwrap();
    assert!(scan.refusal().is_none(), "{:?}", scan.refusal());
    assert!(
        scan.torn_tail().is_none(),
        "a clean stop leaves no torn tail"
    );
}

fn now_plus_ms(ms: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_millis(ms)).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_creates_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for iteration in 0..iterations() {
        let proc = Proc::spawn(dir.path());
        let snapshot = ledger.lock().unwrap().clone();
        let before = check_survivors(&proc.base, &snapshot).await;
        let tasks = drive_creates(
            &proc.base,
            &ledger,
            iteration,
            "http://127.0.0.1:9/never",
            |_| "2099-01-01T00:00:00Z".to_string(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100 + rng.below(300))).await;
        proc.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        let l = ledger.lock().unwrap();
        eprintln!(
            "iteration {iteration}: {before} events before, {} acknowledged in all, {} sent",
            l.acked.len(),
            l.sent.len()
        );
    }
    let proc = Proc::spawn(dir.path());
    let l = ledger.lock().unwrap().clone();
    let n = check_survivors(&proc.base, &l).await;
    assert!(n >= l.acked.len());
    assert!(!l.acked.is_empty());
    proc.stop().await;
    log_verifies_clean(dir.path());
    eprintln!(
        "{} iterations, {} acknowledged creates checked, {} sent, lost: 0",
        iterations(),
        l.acked.len(),
        l.sent.len()
    );
}

/// The receiver: counts deliveries per event id, and holds each request a
/// little so that kills land while deliveries are in flight.
#[derive(Default)]
struct Received {
    per_event: Mutex<HashMap<String, usize>>,
}

async fn receive(State(r): State<Arc<Received>>, body: axum::body::Bytes) -> &'static str {
    tokio::time::sleep(Duration::from_millis(15)).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    *r.per_event.lock().unwrap().entry(id).or_default() += 1;
    "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_due_event_is_delivered_across_sigkills() {
    let received = Arc::new(Received::default());
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for iteration in 0..iterations() {
        let proc = Proc::spawn(dir.path());
        // Due from now to 300 ms ahead, so creates, due times and kills mix.
        let tasks = drive_creates(&proc.base, &ledger, iteration, &hook, |i| {
            now_plus_ms((i % 4) as i64 * 100)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50 + rng.below(400))).await;
        proc.kill9();
        for t in tasks {
            t.await.unwrap();
        }
    }
    let proc = Proc::spawn(dir.path());
    let client = client();
    let acked: Vec<String> = ledger.lock().unwrap().acked.keys().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = all_events(&client, &proc.base).await;
        let delivered: HashSet<&str> = events
            .iter()
            .filter(|e| e["status"] == "delivered")
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        let missing: Vec<_> = acked
            .iter()
            .filter(|id| !delivered.contains(id.as_str()))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events not delivered, e.g. {:?}",
            missing.len(),
            events
                .iter()
                .find(|e| e["id"] == json!(missing[0]))
                .map(|e| e["status"].clone())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proc.stop().await;
    log_verifies_clean(dir.path());
    let per_event = received.per_event.lock().unwrap();
    for id in &acked {
        assert!(
            per_event.get(id).copied().unwrap_or(0) >= 1,
            "{id} never arrived"
        );
    }
    let duplicates: usize = per_event.values().map(|n| n - 1).sum();
    eprintln!(
        "{} iterations, {} acknowledged due events, all delivered; {duplicates} duplicate deliveries (at least once)",
        iterations(),
        acked.len()
    );
}
