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

use chime::testing::{ApiClient, ChildServer, Receiver, Reply, Rng};
use serde_json::{Value, json};

fn iterations() -> usize {
    std::env::var("CHIME_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// The server under test, as a child process (killed on drop).
fn spawn(data_dir: &Path) -> ChildServer {
    // The give-up rule for events interrupted again and again is tested
    // in tests/delivery.rs; here the kills are ours, not the events'
    // fault, and every due event must end delivered.
    ChildServer::start(
        data_dir,
        &[
            "--segment-bytes",
            "65536",
            "--max-interrupted-attempts",
            "1000000",
        ],
    )
}

async fn stop(mut server: ChildServer) {
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "no clean stop");
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
    api: &ApiClient,
    ledger: &Arc<Mutex<Ledger>>,
    iteration: usize,
    webhook: &str,
    schedule_at: impl Fn(u64) -> String + Send + Sync + Clone + 'static,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![];
    for t in 0..8 {
        // One client for all, built before the clock starts: building one
        // takes a worker thread for a while (its TLS roots).
        let (api, ledger, webhook, schedule_at) = (
            api.clone(),
            ledger.clone(),
            webhook.to_string(),
            schedule_at.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let marker = format!("{iteration}-{t}-{i}");
                ledger.lock().unwrap().sent.insert(marker.clone());
                let body = json!({"type": "create_scheduled_event", "args": {
                    "webhook": webhook,
                    "schedule_at": schedule_at(i),
                    "payload": {"marker": marker, "pad": "x".repeat((i % 50) as usize)},
                    "headers": [{"name": "x-marker", "value": marker}],
                }});
                match api.try_post_raw("/v1/metadata", body.to_string()).await {
                    Ok((200, v)) => {
                        let id = v["event_id"].as_str().unwrap().to_string();
                        ledger.lock().unwrap().acked.insert(id, marker);
                    }
                    // The server was killed: this create may or may not
                    // have been written, and was never acknowledged.
                    _ => return,
                }
            }
        }));
    }
    tasks
}

/// Every acknowledged event is there with its data, and every event there
/// was sent by us.
async fn check_survivors(base: &str, ledger: &Ledger) -> usize {
    let events = ApiClient::new(base).all_events().await;
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
    let mut rng = Rng::from_env("CHIME_CRASH_SEED");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for iteration in 0..iterations() {
        let mut proc = spawn(dir.path());
        let snapshot = ledger.lock().unwrap().clone();
        let before = check_survivors(&proc.api.base, &snapshot).await;
        let tasks = drive_creates(
            &proc.api,
            &ledger,
            iteration,
            "http://127.0.0.1:9/never",
            |_| "2099-01-01T00:00:00Z".to_string(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100 + rng.below(300))).await;
        proc.kill();
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
    let proc = spawn(dir.path());
    let l = ledger.lock().unwrap().clone();
    let n = check_survivors(&proc.api.base, &l).await;
    assert!(n >= l.acked.len());
    assert!(!l.acked.is_empty());
    stop(proc).await;
    log_verifies_clean(dir.path());
    eprintln!(
        "{} iterations, {} acknowledged creates checked, {} sent, lost: 0",
        iterations(),
        l.acked.len(),
        l.sent.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_due_event_is_delivered_across_sigkills() {
    // Holds each request a little so that kills land while deliveries
    // are in flight.
    let receiver = Receiver::start(
        vec![],
        Reply::ok().body("ok").after(Duration::from_millis(15)),
    )
    .await;
    let hook = receiver.url("/hook");

    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::from_env("CHIME_CRASH_SEED");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for iteration in 0..iterations() {
        let mut proc = spawn(dir.path());
        // Due from now to 300 ms ahead, so creates, due times and kills mix.
        let tasks = drive_creates(&proc.api, &ledger, iteration, &hook, |i| {
            now_plus_ms((i % 4) as i64 * 100)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50 + rng.below(400))).await;
        proc.kill();
        for t in tasks {
            t.await.unwrap();
        }
    }
    let proc = spawn(dir.path());
    let acked: Vec<String> = ledger.lock().unwrap().acked.keys().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = proc.api.all_events().await;
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
    stop(proc).await;
    log_verifies_clean(dir.path());
    let per_event = receiver.calls_per_event();
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
