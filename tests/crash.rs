//! kill -9 harness: `chime serve` as a child process, SIGKILLed at random
//! moments while clients create events and deliveries are in flight.
//!
//! Checks: every acknowledged event survives with its data (a counted
//! "lost", asserted 0); nothing appears that was never sent, and nothing
//! twice; a client sees only answers, or connection errors once the kill
//! was sent; `chime log verify` passes on the data dir at the end (every
//! frame and every record decoded); every due event ends `delivered` with
//! the payload and headers it was created with (duplicates are counted and
//! reported, never missing), and kills did land on attempts in flight
//! (`attempt_interrupted` records, asserted on long runs).
//!
//! Compaction is in the mix: the server compacts every 100 ms over small
//! segments while three in four clients of the first test delete each
//! event they create; an event whose delete was acknowledged never comes back,
//! and one whose create was acknowledged and that was not deleted is there
//! whole, however many compactions the kills interrupted.
//!
//! A handful of iterations run by default; `CHIME_CRASH_ITERATIONS=300`
//! runs more. Each test prints its seed; `CHIME_CRASH_SEED=<seed>` replays
//! the same kill delays (the line printed per iteration shows them).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chime::record::RecordKind;
use chime::testing::{
    ApiClient, ChildServer, Receiver, Reply, Rng, announce_seed, is_connection_error, log_verify,
    record_count, records_in,
};
use serde_json::{Value, json};

fn iterations() -> usize {
    std::env::var("CHIME_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// From this many iterations on, some kill is all but sure to land while an
/// attempt is in flight, so a run with no `attempt_interrupted` record
/// means the kills miss what they are meant to hit.
const LONG_RUN: usize = 20;

/// The run's generator, its seed printed with the command that replays it.
fn seeded(test: &str) -> Rng {
    let replay = format!(
        "CHIME_CRASH_ITERATIONS={} cargo test --test crash {test} -- --nocapture",
        iterations()
    );
    Rng::new(announce_seed("CHIME_CRASH_SEED", &replay))
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
            "16384",
            "--compaction-interval",
            "100ms",
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
    /// Events whose delete was acknowledged. An event is taken out of
    /// `acked` when its delete is sent: until it is answered it may be
    /// there or gone.
    deleted: HashSet<String>,
}

/// The payload of the event with `marker` (`ITERATION-CLIENT-I`), so that
/// what is listed or delivered can be checked whole, acknowledged or not.
fn payload_for(marker: &str) -> Value {
    let i: usize = marker
        .rsplit('-')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("{marker:?} is not one of our markers"));
    json!({"marker": marker, "pad": "x".repeat(i % 50)})
}

/// Runs `clients` tasks creating events until the server dies; with
/// `churn`, three clients in four delete each event they created once the
/// create is acknowledged (so most segments hold more garbage than live
/// records, and compaction has work). A client stops at the first connection error
/// once `killed` is set; any other failure, or any answer but 200, fails
/// the test.
async fn drive_creates(
    api: &ApiClient,
    ledger: &Arc<Mutex<Ledger>>,
    killed: &Arc<AtomicBool>,
    iteration: usize,
    webhook: &str,
    schedule_at: impl Fn(u64) -> String + Send + Sync + Clone + 'static,
    churn: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![];
    for t in 0..8 {
        // One client for all, built before the clock starts: building one
        // takes a worker thread for a while (its TLS roots).
        let (api, ledger, killed, webhook, schedule_at) = (
            api.clone(),
            ledger.clone(),
            killed.clone(),
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
                    "payload": payload_for(&marker),
                    "headers": [{"name": "x-marker", "value": marker}],
                }});
                match api.try_post_raw("/v1/metadata", body.to_string()).await {
                    Ok((200, v)) => {
                        let id = v["event_id"].as_str().unwrap().to_string();
                        ledger.lock().unwrap().acked.insert(id.clone(), marker);
                        if churn && t % 4 != 0 {
                            // From here on its fate is unknown until the
                            // delete is answered: there or gone.
                            ledger.lock().unwrap().acked.remove(&id);
                            let body = json!({"type": "delete_scheduled_event",
                                "args": {"type": "one_off", "event_id": id}});
                            match api.try_post_raw("/v1/metadata", body.to_string()).await {
                                Ok((200, _)) => {
                                    ledger.lock().unwrap().deleted.insert(id);
                                }
                                Ok((status, v)) => panic!("delete {id} was answered {status} {v}"),
                                Err(e)
                                    if killed.load(Ordering::SeqCst) && is_connection_error(&e) =>
                                {
                                    return;
                                }
                                Err(e) => panic!("delete {id} failed: {e:?}"),
                            }
                        }
                    }
                    Ok((status, v)) => {
                        panic!("create {marker} was answered {status} {v}; a kill answers nothing")
                    }
                    // The server was killed: this create may or may not
                    // have been written, and was never acknowledged.
                    Err(e) if killed.load(Ordering::SeqCst) && is_connection_error(&e) => return,
                    Err(e) => panic!(
                        "create {marker} failed (kill sent: {}): {e:?}",
                        killed.load(Ordering::SeqCst)
                    ),
                }
            }
        }));
    }
    tasks
}

/// Sends SIGKILL to `proc` after `clients` have run for `delay`, and waits
/// for every client to stop.
async fn kill_after(
    mut proc: ChildServer,
    killed: &AtomicBool,
    delay: Duration,
    clients: Vec<tokio::task::JoinHandle<()>>,
) {
    tokio::time::sleep(delay).await;
    // Set before the signal, so every error the kill causes sees it.
    killed.store(true, Ordering::SeqCst);
    proc.kill();
    for t in clients {
        t.await.unwrap();
    }
}

/// What the listing holds against the ledger: the events listed, and the
/// acknowledged ones missing from it.
struct Survivors {
    events: Vec<Value>,
    lost: Vec<(String, String)>,
}

/// Every acknowledged event is there with its data (or counted lost),
/// every event there was sent by us, and none is there twice.
async fn check_survivors(api: &ApiClient, ledger: &Ledger) -> Survivors {
    let events = api.all_events().await;
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    let mut by_marker: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &events {
        let id = e["id"].as_str().unwrap();
        assert!(by_id.insert(id, e).is_none(), "event {id} is listed twice");
        let marker = e["payload"]["marker"].as_str().unwrap();
        assert!(ledger.sent.contains(marker), "event {e} was never sent");
        assert_eq!(e["payload"], payload_for(marker), "event {id} payload");
        assert_eq!(
            e["header_conf"],
            json!([{"name": "x-marker", "value": marker}]),
            "event {id} headers"
        );
        by_marker.entry(marker).or_default().push(id);
    }
    let twice: Vec<_> = by_marker.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "{} markers are in more than one event, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    let mut lost = vec![];
    for id in &ledger.deleted {
        assert!(
            !by_id.contains_key(id.as_str()),
            "event {id} is back after its delete was acknowledged"
        );
    }
    for (id, marker) in &ledger.acked {
        match by_id.get(id.as_str()) {
            Some(e) => assert_eq!(e["payload"]["marker"], json!(marker), "event {id} data"),
            None => lost.push((id.clone(), marker.clone())),
        }
    }
    Survivors { events, lost }
}

/// `chime log verify` (the binary) passes on `data_dir` and has decoded
/// every record the log holds.
fn log_verifies_clean(data_dir: &Path) {
    let (code, out) = log_verify(data_dir);
    assert_eq!(code, Some(0), "chime log verify:\n{out}");
    assert!(out.contains("every record decodes"), "{out}");
    let records = records_in(data_dir).len();
    assert!(
        out.contains(&format!(" {records} records")),
        "{records} records; verify said:\n{out}"
    );
}

fn now_plus_ms(ms: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_millis(ms)).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_creates_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seeded("acknowledged_creates_survive_sigkill");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for iteration in 0..iterations() {
        let proc = spawn(dir.path());
        let snapshot = ledger.lock().unwrap().clone();
        let before = check_survivors(&proc.api, &snapshot).await;
        assert_eq!(
            before.lost.len(),
            0,
            "lost before iteration {iteration}: {:?}",
            before.lost
        );
        let killed = Arc::new(AtomicBool::new(false));
        let clients = drive_creates(
            &proc.api,
            &ledger,
            &killed,
            iteration,
            "http://127.0.0.1:9/never",
            |_| "2099-01-01T00:00:00Z".to_string(),
            true,
        )
        .await;
        let delay = 100 + rng.below(300);
        kill_after(proc, &killed, Duration::from_millis(delay), clients).await;
        let l = ledger.lock().unwrap();
        eprintln!(
            "iteration {iteration}: kill after {delay} ms; {} events before, {} acknowledged in all, {} sent",
            before.events.len(),
            l.acked.len(),
            l.sent.len()
        );
    }
    let proc = spawn(dir.path());
    let l = ledger.lock().unwrap().clone();
    let end = check_survivors(&proc.api, &l).await;
    stop(proc).await;
    log_verifies_clean(dir.path());
    // Compaction was in the mix: some segment is a compacted one (format
    // version 3 in its header).
    let compacted = std::fs::read_dir(chime::datadir::log_dir(dir.path()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .filter(|p| std::fs::read(p).unwrap().get(8..12) == Some(&3u32.to_le_bytes()[..]))
        .count();
    eprintln!("compacted segments at the end: {compacted}");
    assert!(compacted > 0, "no compaction happened");
    let lost = end.lost.len();
    eprintln!(
        "{} iterations, {} acknowledged creates checked, {} listed, {} sent, lost: {lost}",
        iterations(),
        l.acked.len(),
        end.events.len(),
        l.sent.len()
    );
    assert_eq!(
        lost,
        0,
        "acknowledged events lost, e.g. {:?}",
        end.lost.first()
    );
    assert!(!l.acked.is_empty());
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
    let mut rng = seeded("every_due_event_is_delivered_across_sigkills");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for iteration in 0..iterations() {
        let proc = spawn(dir.path());
        let killed = Arc::new(AtomicBool::new(false));
        // Due from now to 300 ms ahead, so creates, due times and kills mix.
        let clients = drive_creates(
            &proc.api,
            &ledger,
            &killed,
            iteration,
            &hook,
            |i| now_plus_ms((i % 4) as i64 * 100),
            false,
        )
        .await;
        let delay = 50 + rng.below(400);
        kill_after(proc, &killed, Duration::from_millis(delay), clients).await;
        eprintln!("iteration {iteration}: kill after {delay} ms");
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
    let l = ledger.lock().unwrap().clone();
    let end = check_survivors(&proc.api, &l).await;
    stop(proc).await;
    log_verifies_clean(dir.path());

    // Every delivery carried the payload and headers of the event it was
    // for, as listed (acknowledged or not, a written event is delivered).
    let listed: HashMap<&str, &str> = end
        .events
        .iter()
        .map(|e| {
            let id = e["id"].as_str().unwrap();
            (id, e["payload"]["marker"].as_str().unwrap())
        })
        .collect();
    for request in receiver.received() {
        let body = request.json();
        let id = body["id"].as_str().unwrap();
        let marker = listed
            .get(id)
            .unwrap_or_else(|| panic!("a delivery for {id}, which is not listed: {body}"));
        assert_eq!(body["payload"], payload_for(marker), "delivery of {id}");
        assert_eq!(
            request.header_values("x-marker"),
            vec![marker.to_string()],
            "delivery of {id}"
        );
    }
    let per_event = receiver.calls_per_event();
    for id in &acked {
        assert!(
            per_event.get(id).copied().unwrap_or(0) >= 1,
            "{id} never arrived"
        );
    }
    let duplicates: usize = per_event.values().map(|n| n - 1).sum();
    let interrupted = record_count(dir.path(), RecordKind::AttemptInterrupted);
    let lost = end.lost.len();
    eprintln!(
        "{} iterations, {} acknowledged due events, all delivered with their data; \
         {duplicates} duplicate deliveries (at least once); {interrupted} attempts interrupted; lost: {lost}",
        iterations(),
        acked.len()
    );
    assert_eq!(
        lost,
        0,
        "acknowledged events lost, e.g. {:?}",
        end.lost.first()
    );
    if iterations() >= LONG_RUN {
        assert!(
            interrupted > 0,
            "{} kills and not one landed on an attempt in flight",
            iterations()
        );
    }
}
