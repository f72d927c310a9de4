//! `chime log dump | stats | verify | repair`, run as the real binary on
//! logs written by the service, sound and damaged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use chime::clock::ManualClock;
use chime::datadir::DataDir;
use chime::log::LogOptions;
use chime::record::fixtures::{self, invocation};
use chime::record::{EventCreated, EventId, Record, RetryConf, UnixMicros};
use chime::service::Service;
use chime::testing::{ChildServer, eventually};

/// 2030-01-01T00:00:00Z, in microseconds.
const T0: i64 = 1_893_456_000_000_000;

fn t(seconds: i64) -> UnixMicros {
    UnixMicros(T0 + seconds * 1_000_000)
}

fn id(n: u128) -> EventId {
    EventId::from_u128(0x1000 + n)
}

fn attempt(n: u128) -> EventId {
    EventId::from_u128(0xa000 + n)
}

fn created(n: u128, schedule: i64) -> Record {
    Record::EventCreated(EventCreated {
        payload: format!(r#"{{"n":{n},"price":1.50,"tags":["a","b"]}}"#),
        headers: fixtures::headers(),
        retry_conf: RetryConf {
            num_retries: 1,
            ..RetryConf::default()
        },
        comment: Some(format!("event {n}")),
        created_at: t(n as i64),
        ..fixtures::event(id(n), format!("http://127.0.0.1:9/hook/{n}"), t(schedule))
    })
}

/// What a fixture log holds.
struct Fixture {
    dir: tempfile::TempDir,
    records: u64,
}

impl Fixture {
    fn data(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The log's segments, oldest first.
    fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(self.log())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }
}

/// A new data dir, a runtime to append with, and a service on the data
/// dir's log with `segment_bytes` and a clock at `t(0)`.
fn open_service(segment_bytes: u64) -> (tempfile::TempDir, tokio::runtime::Runtime, Service) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (service, _) = Service::open(
        &dir.path().join("log"),
        &LogOptions::with_segment_bytes(segment_bytes),
        Arc::new(ManualClock::new(t(0))),
    )
    .unwrap();
    (dir, rt, service)
}

/// Writes a log through the service: ten events in single and bulk
/// batches, then attempts, a retry, an interrupt, an expiry and a cancel.
/// With small `segment_bytes` the log spans several segments.
fn fixture(segment_bytes: u64) -> Fixture {
    let (dir, rt, service) = open_service(segment_bytes);
    let mut batches: Vec<Vec<Record>> = vec![];
    for n in 0..4 {
        batches.push(vec![created(n, 100 + n as i64)]);
    }
    // A bulk create: one batch of three.
    batches.push((4..7).map(|n| created(n, 200 + n as i64)).collect());
    for n in 7..10 {
        batches.push(vec![created(n, 300 + n as i64)]);
    }
    for n in 0..3 {
        batches.push(vec![Record::AttemptStarted {
            event_id: id(n),
            attempt_id: attempt(n),
            at: t(100 + n as i64),
        }]);
        batches.push(vec![Record::AttemptSucceeded {
            event_id: id(n),
            attempt_id: attempt(n),
            at: t(101 + n as i64),
            invocation: invocation(Some(200)),
        }]);
    }
    batches.push(vec![Record::AttemptStarted {
        event_id: id(3),
        attempt_id: attempt(3),
        at: t(103),
    }]);
    batches.push(vec![Record::AttemptFailed {
        event_id: id(3),
        attempt_id: attempt(3),
        at: t(104),
        invocation: invocation(None),
        next_retry_at: Some(t(114)),
    }]);
    batches.push(vec![Record::AttemptStarted {
        event_id: id(4),
        attempt_id: attempt(4),
        at: t(204),
    }]);
    batches.push(vec![Record::AttemptInterrupted {
        event_id: id(4),
        attempt_id: attempt(4),
        at: t(205),
        give_up: false,
        reason: "the process stopped during the attempt".into(),
    }]);
    batches.push(vec![Record::EventExpired {
        event_id: id(5),
        at: t(500),
    }]);
    batches.push(vec![Record::EventCancelled {
        event_id: id(6),
        at: t(501),
    }]);
    let mut records = 0;
    for b in &batches {
        rt.block_on(service.append(b.as_slice())).unwrap();
        records += b.len() as u64;
    }
    drop(service);
    Fixture { dir, records }
}

fn chime(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chime"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Flips one byte.
fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

fn broken_files(f: &Fixture) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(f.log())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".broken"))
        .collect();
    v.sort();
    v
}

#[test]
fn dump_prints_every_record_oldest_first_and_filters() {
    let f = fixture(1 << 20);
    let o = chime(&["log", "dump"], f.data());
    assert_exit(&o, 0);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len() as u64, f.records);
    for (i, line) in lines.iter().enumerate() {
        let seq: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(seq, i as u64 + 1, "{line}");
    }
    assert!(
        lines[0].contains("2030-01-01T00:00:00.000000Z"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("event_created"), "{}", lines[0]);
    assert!(lines[0].contains(&id(0).to_string()), "{}", lines[0]);
    assert!(
        lines[0].contains("schedule_at=2030-01-01T00:01:40Z"),
        "{}",
        lines[0]
    );
    assert!(out.contains("status=200"), "{out}");
    assert!(out.contains(r#"error="connection refused""#), "{out}");

    let o = chime(&["log", "dump", "--kind", "attempt_started"], f.data());
    assert_exit(&o, 0);
    assert_eq!(stdout(&o).lines().count(), 5);
    let o = chime(
        &["log", "dump", "--kind", "event_expired,event_cancelled"],
        f.data(),
    );
    assert_eq!(stdout(&o).lines().count(), 2);

    let o = chime(&["log", "dump", "--event", &id(3).to_string()], f.data());
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|l| l.contains(&id(3).to_string())));

    let o = chime(&["log", "dump", "--from", "5", "--limit", "2"], f.data());
    assert_exit(&o, 0);
    let seqs: Vec<String> = stdout(&o)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(seqs, ["5", "6"]);
}

#[test]
fn dump_json_is_one_parseable_object_per_line_with_payloads_as_json() {
    let f = fixture(1 << 20);
    let o = chime(&["log", "dump", "--json"], f.data());
    assert_exit(&o, 0);
    let values: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(values.len() as u64, f.records);
    let first = &values[0];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["kind"], "event_created");
    assert_eq!(first["event_id"], id(0).to_string());
    assert_eq!(first["segment"], "00000000000000000001.seg");
    assert_eq!(first["offset"], 32);
    // The payload is JSON, not a string holding JSON; the raw text is kept.
    assert_eq!(first["payload"]["tags"][1], "b");
    assert!(stdout(&o).contains(r#""price":1.50"#));
    assert_eq!(first["headers"][1]["value_from_env"], "HOOK_SECRET");
    let ok = values
        .iter()
        .find(|v| v["kind"] == "attempt_succeeded")
        .unwrap();
    assert_eq!(ok["invocation"]["response"]["status"], 200);
    assert_eq!(ok["invocation"]["response"]["body"]["ok"], true);
    assert_eq!(ok["invocation"]["request"]["body"]["payload"]["n"], 1);
    let failed = values
        .iter()
        .find(|v| v["kind"] == "attempt_failed")
        .unwrap();
    assert_eq!(
        failed["invocation"]["response"]["error"],
        "connection refused"
    );
    assert_eq!(failed["next_retry_at"], "2030-01-01T00:01:54Z");
}

/// Four segments of 1024 bytes: five creates; five more; the cancels of
/// the first five and of three of the second five; five more creates
/// (the active segment). Compaction's rule: a sealed segment with nothing live
/// goes whole, one less than half live loses its garbage, the rest stays.
#[test]
fn stats_counts_garbage_and_what_compaction_would_reclaim() {
    let (dir, rt, service) = open_service(1024);
    let creates = |from: u128, to: u128| -> Vec<Record> {
        (from..to).map(|n| created(n, 100 + n as i64)).collect()
    };
    let cancels: Vec<Record> = (0..8)
        .map(|n| Record::EventCancelled {
            event_id: id(n),
            at: t(50),
        })
        .collect();
    for batch in [
        creates(0, 5),
        creates(5, 10),
        cancels.clone(),
        creates(10, 15),
    ] {
        rt.block_on(service.append(batch.as_slice())).unwrap();
    }
    drop(service);

    let o = chime(&["log", "stats", "--json"], dir.path());
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let segs = v["segments"].as_array().unwrap();
    let field = |i: usize, k: &str| segs[i][k].as_u64().unwrap();
    assert_eq!(
        (0..segs.len())
            .map(|i| field(i, "records"))
            .collect::<Vec<_>>(),
        [5, 5, 8, 5],
        "one batch per segment: {v}"
    );
    let frame = |r: &Record| 16 + r.encode().unwrap().len() as u64;
    let bytes_of = |rs: &[Record]| rs.iter().map(frame).sum::<u64>();
    // The first segment: all five cancelled, the whole file goes.
    assert_eq!(field(0, "garbage_records"), 5);
    assert_eq!(field(0, "garbage_bytes"), bytes_of(&creates(0, 5)));
    assert_eq!(field(0, "reclaimable_bytes"), field(0, "bytes"));
    // The second: three of five cancelled, less than half live.
    assert_eq!(field(1, "garbage_records"), 3);
    assert_eq!(field(1, "garbage_bytes"), bytes_of(&creates(5, 8)));
    assert_eq!(field(1, "reclaimable_bytes"), bytes_of(&creates(5, 8)));
    // The cancels name events no longer in view: garbage, all of them.
    assert_eq!(field(2, "garbage_records"), 8);
    assert_eq!(field(2, "reclaimable_bytes"), field(2, "bytes"));
    // The active segment is never compacted.
    assert_eq!(field(3, "garbage_records"), 0);
    assert_eq!(field(3, "reclaimable_bytes"), 0);
    assert_eq!(v["records"]["garbage"]["records"], 16);
    assert_eq!(
        v["records"]["garbage"]["bytes"],
        bytes_of(&creates(0, 8)) + bytes_of(&cancels)
    );
    assert_eq!(
        v["reclaimable_bytes"],
        field(0, "bytes") + bytes_of(&creates(5, 8)) + field(2, "bytes")
    );

    let o = chime(&["log", "stats"], dir.path());
    assert_exit(&o, 0);
    let out = stdout(&o);
    let line = format!(
        "garbage     16 records, {} bytes (of cancelled or retired events); \
         compaction would reclaim {} bytes",
        v["records"]["garbage"]["bytes"], v["reclaimable_bytes"]
    );
    assert!(out.contains(&line), "{out}");
}

#[test]
fn stats_counts_segments_records_and_events() {
    let f = fixture(1024);
    let segments = f.segments();
    assert!(segments.len() >= 3, "small segments roll");
    let o = chime(&["log", "stats", "--json"], f.data());
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let segs = v["segments"].as_array().unwrap();
    assert_eq!(segs.len(), segments.len());
    assert!(
        segs[..segs.len() - 1]
            .iter()
            .all(|s| s["state"] == "sealed")
    );
    assert_eq!(segs.last().unwrap()["state"], "active");
    assert_eq!(segs[0]["first_seq"], 1);
    assert_eq!(
        segs.iter()
            .map(|s| s["records"].as_u64().unwrap())
            .sum::<u64>(),
        f.records
    );
    assert_eq!(v["records"]["total"], f.records);
    assert_eq!(v["records"]["last_seq"], f.records);
    assert_eq!(v["records"]["by_kind"]["event_created"], 10);
    assert_eq!(v["records"]["by_kind"]["attempt_started"], 5);
    assert_eq!(v["records"]["by_kind"]["attempt_succeeded"], 3);
    let status = &v["events"]["by_status"];
    assert_eq!(status["delivered"], 3);
    assert_eq!(status["dead"], 1);
    assert_eq!(status["scheduled"], 5, "3, 4 (retry, interrupted), 7, 8, 9");
    assert_eq!(v["events"]["cancelled"], 1);
    assert_eq!(v["events"]["total"], 9);
    // Event 3's retry is the earliest due.
    assert_eq!(v["next_due"]["at"], "2030-01-01T00:01:54Z");
    assert_eq!(v["next_due"]["event_id"], id(3).to_string());
    assert_eq!(v["time_span"]["first"], "2030-01-01T00:00:00Z");
    assert_eq!(v["time_span"]["last"], "2030-01-01T00:08:21Z");
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    // Event 6 was cancelled: its create and its cancel are garbage.
    let frame = |r: &Record| 16 + r.encode().unwrap().len() as u64;
    let cancel = Record::EventCancelled {
        event_id: id(6),
        at: t(501),
    };
    assert_eq!(v["records"]["garbage"]["records"], 2);
    assert_eq!(
        v["records"]["garbage"]["bytes"],
        frame(&created(6, 206)) + frame(&cancel)
    );
    assert_eq!(
        segs.iter()
            .map(|s| s["garbage_records"].as_u64().unwrap())
            .sum::<u64>(),
        2
    );

    let o = chime(&["log", "stats"], f.data());
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("00000000000000000001.seg"), "{out}");
    assert!(out.contains("active"), "{out}");
    assert!(out.contains("delivered"), "{out}");
    assert!(out.contains("next due    2030-01-01T00:01:54Z"), "{out}");
}

#[test]
fn verify_passes_a_sound_log() {
    let f = fixture(1024);
    let o = chime(&["log", "verify"], f.data());
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains(&format!("{} records", f.records)), "{out}");
    assert!(out.contains("ok:"), "{out}");
}

#[test]
fn torn_tail_is_reported_by_verify_and_cut_by_repair() {
    let f = fixture(1 << 20);
    let seg = f.segments().pop().unwrap();
    let full = std::fs::read(&seg).unwrap();
    // Cut five bytes off: the last batch (one record) is torn.
    std::fs::write(&seg, &full[..full.len() - 5]).unwrap();

    let o = chime(&["log", "verify"], f.data());
    assert_exit(&o, 1);
    let out = stdout(&o);
    let seg_name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        out.contains(&format!("damaged: {}", seg.display())),
        "{out}"
    );
    assert!(out.contains("torn tail"), "{out}");
    assert!(out.contains("`chime log repair`"), "{out}");

    // dump and stats show the whole batches and only note the torn tail.
    let o = chime(&["log", "dump"], f.data());
    assert_exit(&o, 0);
    assert_eq!(stdout(&o).lines().count() as u64, f.records - 1);
    assert!(stderr(&o).contains("torn tail"), "{}", stderr(&o));

    let o = chime(&["log", "repair"], f.data());
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("dropping"), "{out}");
    assert!(out.contains("the log is sound"), "{out}");
    assert_eq!(broken_files(&f), [format!("{seg_name}.broken")]);
    assert_eq!(
        std::fs::read(f.log().join(format!("{seg_name}.broken"))).unwrap(),
        &full[..full.len() - 5],
        "the original is kept"
    );
    assert_exit(&chime(&["log", "verify"], f.data()), 0);
    let o = chime(&["log", "stats", "--json"], f.data());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["records"]["total"], f.records - 1);
    // A second repair has nothing to do.
    let o = chime(&["log", "repair"], f.data());
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("nothing to repair"), "{}", stdout(&o));
}

#[test]
fn a_torn_tail_cut_by_serve_is_kept_and_listed_by_stats_and_verify() {
    let f = fixture(1 << 20);
    let seg = f.segments().pop().unwrap();
    let seg_name = seg.file_name().unwrap().to_str().unwrap().to_owned();
    // The last byte is in the last frame, of an acknowledged batch.
    let mut damaged = std::fs::read(&seg).unwrap();
    *damaged.last_mut().unwrap() ^= 0x01;
    std::fs::write(&seg, &damaged).unwrap();

    let mut server = ChildServer::start(f.data(), &[]);
    let kept = std::fs::metadata(&seg).unwrap().len();
    let copy_name = format!("{seg_name}.torn-{kept}");
    let copy = f.log().join(&copy_name);
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        &damaged[kept as usize..],
        "the cut bytes are kept, byte-identical"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(eventually("serve logs where the cut bytes are", || {
        let err = server.stderr();
        let copy = copy.display().to_string();
        async move { err.contains(&copy).then_some(()) }
    }));
    server.kill();

    let o = chime(&["log", "stats"], f.data());
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains(&format!("torn copy   {copy_name}")),
        "{}",
        stdout(&o)
    );
    let o = chime(&["log", "stats", "--json"], f.data());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["torn_copies"][0]["name"], copy_name.as_str());
    assert_eq!(v["torn_copies"][0]["bytes"], damaged.len() as u64 - kept);
    let o = chime(&["log", "verify"], f.data());
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains(&format!("torn copy: {copy_name}")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn damage_in_a_sealed_segment_is_refused_unless_forced() {
    let f = fixture(1024);
    let segs = f.segments();
    assert!(segs.len() >= 3);
    let sealed = &segs[1];
    // Inside the first frame's payload.
    flip(sealed, 32 + 16 + 3);
    let before: Vec<Vec<u8>> = segs.iter().map(|s| std::fs::read(s).unwrap()).collect();

    let o = chime(&["log", "verify"], f.data());
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("damaged: {} at byte 32", sealed.display())),
        "{out}"
    );
    assert!(out.contains("sealed segment"), "{out}");

    // dump still shows what it can read, and says records may be missing.
    let o = chime(&["log", "dump"], f.data());
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("warning"), "{}", stderr(&o));

    let o = chime(&["log", "repair"], f.data());
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(out.contains("refusing"), "{out}");
    assert!(out.contains("--force"), "{out}");
    assert!(out.contains("set aside"), "{out}");
    let after: Vec<Vec<u8>> = segs.iter().map(|s| std::fs::read(s).unwrap()).collect();
    assert_eq!(before, after, "nothing changed");
    assert!(broken_files(&f).is_empty());

    let o = chime(&["log", "repair", "--force"], f.data());
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("the log is sound"), "{out}");
    assert_eq!(f.segments(), segs[..2], "later segments set aside");
    assert_eq!(
        std::fs::metadata(sealed).unwrap().len(),
        32,
        "cut back to its header: the damage was in its first batch"
    );
    assert_eq!(broken_files(&f).len(), segs.len() - 1);
    assert_exit(&chime(&["log", "verify"], f.data()), 0);
    // The service opens the repaired log and keeps appending after it.
    let first_seg_records = {
        let o = chime(&["log", "stats", "--json"], f.data());
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        v["records"]["total"].as_u64().unwrap()
    };
    let (service, startup) = Service::open(
        &f.log(),
        &LogOptions::with_segment_bytes(1024),
        Arc::new(ManualClock::new(t(0))),
    )
    .unwrap();
    assert_eq!(startup.replayed, first_seg_records);
    assert!(startup.recovery.truncated.is_none());
    drop(service);
}

#[test]
fn damage_followed_by_valid_frames_in_the_last_segment_is_not_a_torn_tail() {
    let f = fixture(1 << 20);
    let seg = f.segments().pop().unwrap();
    // Inside the first record's payload, with every other record after it.
    flip(&seg, 32 + 16 + 3);
    let o = chime(&["log", "verify"], f.data());
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("valid frames follow"), "{}", stdout(&o));
    let o = chime(&["log", "repair"], f.data());
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "{} records with valid checksums (sequence numbers 2..={})",
            f.records - 1,
            f.records
        )),
        "{out}"
    );
    let o = chime(&["log", "repair", "--force"], f.data());
    assert_exit(&o, 0);
    assert_exit(&chime(&["log", "verify"], f.data()), 0);
    let o = chime(&["log", "dump"], f.data());
    assert_eq!(stdout(&o), "");
}

#[test]
fn a_segment_with_a_bad_header_is_set_aside_by_force() {
    let f = fixture(1024);
    let segs = f.segments();
    flip(&segs[2], 0);
    let o = chime(&["log", "verify"], f.data());
    assert_exit(&o, 1);
    assert!(
        stdout(&o).contains(&format!("damaged: {} at byte 0", segs[2].display())),
        "{}",
        stdout(&o)
    );
    let o = chime(&["log", "stats"], f.data());
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("unreadable"), "{}", stdout(&o));
    assert_exit(&chime(&["log", "repair"], f.data()), 1);
    assert_exit(&chime(&["log", "repair", "--force"], f.data()), 0);
    assert_eq!(f.segments(), segs[..2]);
    assert_exit(&chime(&["log", "verify"], f.data()), 0);
}

#[test]
fn repair_refuses_while_the_data_dir_is_locked_and_readers_still_work() {
    let f = fixture(1 << 20);
    let seg = f.segments().pop().unwrap();
    let full = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &full[..full.len() - 1]).unwrap();
    let lock = DataDir::lock(f.data(), false).unwrap();
    let o = chime(&["log", "repair"], f.data());
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("locked"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap().len(), full.len() - 1);
    // The read-only commands take no lock.
    assert_exit(&chime(&["log", "dump"], f.data()), 0);
    assert_exit(&chime(&["log", "stats"], f.data()), 0);
    assert_exit(&chime(&["log", "verify"], f.data()), 1);
    drop(lock);
    assert_exit(&chime(&["log", "repair"], f.data()), 0);
}

#[test]
fn bad_usage_and_missing_dirs_exit_2_with_one_line() {
    let f = fixture(1 << 20);
    let missing = f.data().join("nope");
    for cmd in ["dump", "stats", "verify", "repair"] {
        let o = chime(&["log", cmd], &missing);
        assert_exit(&o, 2);
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("does not exist"), "{err}");
    }
    // A directory that is not a data dir.
    let empty = tempfile::tempdir().unwrap();
    let o = chime(&["log", "verify"], empty.path());
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("not a chime data directory"));

    let o = chime(&["log", "dump", "--kind", "nonsense"], f.data());
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("event_created"), "{}", stderr(&o));
    assert_exit(
        &chime(&["log", "dump", "--event", "not-a-uuid"], f.data()),
        2,
    );
    assert_exit(&chime(&["log", "dump", "--limit", "-1"], f.data()), 2);
    assert_exit(&chime(&["log", "verify", "--bogus"], f.data()), 2);
}

#[test]
fn a_record_that_does_not_decode_is_reported_with_its_place() {
    let f = fixture(1 << 20);
    {
        // A frame with a valid checksum whose record is from an unknown schema.
        let (log, _) = chime::log::Log::open(&f.log(), &LogOptions::default()).unwrap();
        log.append_blocking(vec![vec![9, 1, 2, 3]]).unwrap();
    }
    let o = chime(&["log", "verify"], f.data());
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("record {} does not decode", f.records + 1)),
        "{out}"
    );
    assert!(out.contains("schema version 9"), "{out}");
    let o = chime(&["log", "dump"], f.data());
    assert_exit(&o, 1);
    assert_eq!(stdout(&o).lines().count() as u64, f.records);
    // Repair mends frames, not records: nothing for it to cut.
    let o = chime(&["log", "repair"], f.data());
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("nothing to repair"), "{}", stdout(&o));
}

/// Where each batch of segment `bytes` starts (the frames after its
/// header, up to the first that does not decode), and the records in it.
fn batch_starts(bytes: &[u8]) -> Vec<(usize, u64)> {
    let mut batches = Vec::new();
    let mut at = chime::log::frame::HEADER_LEN;
    let mut start = at;
    let mut frames = 0;
    while let Ok(frame) = chime::log::frame::decode_frame(bytes, at) {
        frames += 1;
        at = frame.end;
        if !frame.more {
            batches.push((start, frames));
            start = at;
            frames = 0;
        }
    }
    batches
}

/// A fixture whose second segment (sealed) is damaged in its last batch,
/// with at least one whole batch before it: the damaged segment, the
/// offset `--force` cuts it to, and the records a forced repair keeps.
fn damaged_in_a_later_batch() -> (Fixture, PathBuf, usize, u64) {
    let f = fixture(1024);
    let segs = f.segments();
    assert!(segs.len() >= 3, "{segs:?}");
    let sealed = segs[1].clone();
    let batches = batch_starts(&std::fs::read(&sealed).unwrap());
    assert!(batches.len() >= 2, "{batches:?}");
    let (last, _) = *batches.last().unwrap();
    let before: u64 = batch_starts(&std::fs::read(&segs[0]).unwrap())
        .iter()
        .chain(&batches[..batches.len() - 1])
        .map(|(_, records)| records)
        .sum();
    // Inside the last batch's first payload.
    flip(&sealed, last + 16 + 3);
    (f, sealed, last, before)
}

fn records_total(f: &Fixture) -> u64 {
    let o = chime(&["log", "stats", "--json"], f.data());
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    v["records"]["total"].as_u64().unwrap()
}

/// Damage in a later batch of a sealed segment: `--force` cuts that
/// segment back to the batch before the damage, so the records before it
/// stay in the log (and the service replays them), the later segments are
/// set aside, and the segment's whole former bytes are in its `.broken`
/// copy.
#[test]
fn a_forced_cut_keeps_the_records_before_the_damage() {
    let (f, sealed, keep, before) = damaged_in_a_later_batch();
    let original = std::fs::read(&sealed).unwrap();
    let o = chime(&["log", "repair", "--force"], f.data());
    assert_exit(&o, 0);
    assert_eq!(std::fs::metadata(&sealed).unwrap().len(), keep as u64);
    assert!(keep > 32, "the cut keeps whole batches");
    assert_exit(&chime(&["log", "verify"], f.data()), 0);
    assert_eq!(records_total(&f), before);
    let mut copy = sealed.as_os_str().to_owned();
    copy.push(".broken");
    assert_eq!(std::fs::read(PathBuf::from(copy)).unwrap(), original);
    let (service, startup) = Service::open(
        &f.log(),
        &LogOptions::with_segment_bytes(1024),
        Arc::new(ManualClock::new(t(0))),
    )
    .unwrap();
    assert_eq!(startup.replayed, before);
    drop(service);
}

/// A forced repair cut short by a power loss after each of its mutating
/// calls in turn (the fault file system keeps only what was made durable,
/// plus a random prefix of the rest): running `chime log repair --force`
/// again always finishes the job with the same records as an uninterrupted
/// repair, and the damaged segment's bytes are never lost (still in the
/// segment, or whole in a `.broken` copy).
#[test]
fn a_forced_repair_cut_by_power_loss_at_any_step_finishes_when_run_again() {
    use chime::log::LogError;
    use chime::log::reader::LogReader;
    use chime::testing::faultfs::FaultFs;
    let mut cuts = 0;
    for calls in 0u64.. {
        let (f, sealed, _, before) = damaged_in_a_later_batch();
        let original = std::fs::read(&sealed).unwrap();
        let fs = FaultFs::new(calls);
        let plan = {
            let reader = LogReader::open(Arc::new(fs.clone()), &f.log(), |_, _| {}).unwrap();
            reader.repair_plan().unwrap().expect("damage to repair")
        };
        fs.cut_power_after(calls);
        let done = plan
            .execute(&fs, &f.log(), |_| Ok::<(), LogError>(()))
            .is_ok()
            && !fs.is_dead();
        fs.crash();
        let kept_somewhere = std::fs::read_dir(f.log())
            .unwrap()
            .map(|e| e.unwrap().path())
            .any(|p| std::fs::read(&p).unwrap() == original);
        assert!(
            kept_somewhere,
            "cut after {calls} calls: the damaged segment's bytes are gone"
        );
        if !done {
            cuts += 1;
            let o = chime(&["log", "repair", "--force"], f.data());
            assert_exit(&o, 0);
        }
        assert_exit(&chime(&["log", "verify"], f.data()), 0);
        assert_eq!(records_total(&f), before, "cut after {calls} calls");
        if done {
            break;
        }
    }
    // copy, sync, a rename per later segment, directory sync, truncate, sync.
    assert!(cuts >= 5, "only {cuts} power cuts struck the repair");
}
