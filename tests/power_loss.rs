//! Simulated power loss under the log: random batches appended by
//! concurrent appenders on the fault file system (`tests/faultfs`), with
//! small segments so that rolls are frequent; the power cut at random
//! calls (inside a write, an fdatasync, or anywhere in a roll: create,
//! header write, fsync, rename, directory fsync), injected EIO/ENOSPC, and
//! clean restarts in between. After every crash the log is reopened with
//! the real file system (sometimes after a power loss in the middle of an
//! earlier recovery) and checked:
//!
//! - every acknowledged batch is there, at the sequence numbers it was
//!   given, byte for byte;
//! - no batch is there in part (each payload names its batch, its index
//!   and the batch's size);
//! - sequence numbers run from 1 without a gap, and the next append
//!   continues them;
//! - a batch that was refused with a non-fatal error never appears, and
//!   one whose fate was unknown (the power went, or an fsync failed) is
//!   either there whole or gone for good.
//!
//! `PROPTEST_CASES` sets the number of cases (default 64); the figures are
//! printed at the end (`cargo test --test power_loss -- --nocapture`), and
//! the seed at the start: `PROPTEST_RNG_SEED=<seed>` with the same case
//! count replays the same cases.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chime::log::fs::StdFs;
use chime::log::{Log, LogError, LogOptions};
use chime::testing::announce_seed;
use chime::testing::faultfs::{Errno, FaultFs, Op, Times};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// A batch: the sizes of its records' filler.
type Sizes = Vec<usize>;

#[derive(Clone, Debug)]
enum Step {
    /// Batches appended at once, one thread each (so they may share a
    /// group commit).
    Append(Vec<Sizes>),
    /// The power goes out after `calls` more mutating calls, while these
    /// batches are appended; then crash, recover and check.
    CutPower { calls: u64, batches: Vec<Sizes> },
    /// Power loss between appends.
    Crash,
    /// As `CutPower`, and then the power goes out again after
    /// `recovery_calls` calls of the recovery that follows (cutting the
    /// torn tail, removing a `.seg.tmp`), before the recovery that checks.
    CutPowerTwice {
        calls: u64,
        batches: Vec<Sizes>,
        recovery_calls: u64,
    },
    /// Failures injected while these batches are appended, then healed.
    Fault {
        faults: Vec<(Op, Errno, bool)>,
        batches: Vec<Sizes>,
    },
    /// A clean restart: the process stops, the disk keeps everything.
    Restart,
}

fn batches() -> impl Strategy<Value = Vec<Sizes>> {
    prop::collection::vec(prop::collection::vec(0usize..90, 1..5), 1..4)
}

fn fault() -> impl Strategy<Value = (Op, Errno, bool)> {
    (
        prop_oneof![
            Just(Op::Write),
            Just(Op::Sync),
            Just(Op::Create),
            Just(Op::Rename),
            Just(Op::SyncDir),
            Just(Op::SetLen),
            Just(Op::Remove),
            // Maps fail only at a roll here (faults are healed before the
            // next open): the new segment must then not be left in place.
            Just(Op::Map),
        ],
        prop_oneof![Just(Errno::Io), Just(Errno::NoSpace)],
        any::<bool>(),
    )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => batches().prop_map(Step::Append),
        3 => (0u64..24, batches()).prop_map(|(calls, batches)| Step::CutPower { calls, batches }),
        1 => Just(Step::Crash),
        1 => (0u64..24, batches(), 0u64..3).prop_map(|(calls, batches, recovery_calls)| {
            Step::CutPowerTwice { calls, batches, recovery_calls }
        }),
        2 => (prop::collection::vec(fault(), 1..3), batches())
            .prop_map(|(faults, batches)| Step::Fault { faults, batches }),
        1 => Just(Step::Restart),
    ]
}

/// Figures over every case, for the report.
static CASES: AtomicU64 = AtomicU64::new(0);
static CRASHES: AtomicU64 = AtomicU64::new(0);
static RESTARTS: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicU64 = AtomicU64::new(0);
static CUTS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];
static ACKED_CHECKED: AtomicU64 = AtomicU64::new(0);
static ACKED_BATCHES: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static UNKNOWN_KEPT: AtomicU64 = AtomicU64::new(0);
static UNKNOWN_GONE: AtomicU64 = AtomicU64::new(0);
static LOST: AtomicU64 = AtomicU64::new(0);
static TORN_TAILS: AtomicU64 = AtomicU64::new(0);
static HOLES: AtomicU64 = AtomicU64::new(0);
static DROPPED_BY_FAILED_SYNCS: AtomicU64 = AtomicU64::new(0);
static RESTARTS_AFTER_FAILED_SYNC: AtomicU64 = AtomicU64::new(0);

/// `id:u32 | index:u16 | count:u16 | filler`
fn payload(id: u32, index: usize, count: usize, filler: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + filler);
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&(index as u16).to_le_bytes());
    p.extend_from_slice(&(count as u16).to_le_bytes());
    p.extend((0..filler).map(|i| (id as usize * 31 + index * 7 + i) as u8));
    p
}

fn parse(p: &[u8]) -> Option<(u32, usize, usize)> {
    Some((
        u32::from_le_bytes(p.get(0..4)?.try_into().ok()?),
        u16::from_le_bytes(p.get(4..6)?.try_into().ok()?) as usize,
        u16::from_le_bytes(p.get(6..8)?.try_into().ok()?) as usize,
    ))
}

/// A batch found in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Found {
    id: u32,
    first_seq: u64,
    payloads: Vec<Vec<u8>>,
}

struct Harness {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    fs: FaultFs,
    segment_bytes: u64,
    log: Option<Log>,
    next_id: u32,
    /// Every batch the log holds for sure, by first sequence number:
    /// acknowledged, or found by a recovery.
    kept: BTreeMap<u64, Found>,
    /// Batches answered with a non-fatal error: never to appear.
    refused: HashMap<u32, String>,
    /// Batches whose fate is unknown until the next recovery.
    unknown: BTreeMap<u32, Vec<Vec<u8>>>,
    /// A fatal error was seen: the log takes no more writes.
    poisoned: bool,
}

impl Harness {
    fn new(seed: u64, segment_bytes: u64) -> Harness {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("log");
        let fs = FaultFs::new(seed);
        // Pages scaled down with the segments (100..400 bytes), so a crash
        // can keep a later page of a write and lose an earlier one.
        fs.set_page_size(32);
        let mut h = Harness {
            _tmp: tmp,
            dir,
            fs,
            segment_bytes,
            log: None,
            next_id: 1,
            kept: BTreeMap::new(),
            refused: HashMap::new(),
            unknown: BTreeMap::new(),
            poisoned: false,
        };
        h.open_faulty();
        h
    }

    fn open_faulty(&mut self) {
        let opts = self.fs.log_options(self.segment_bytes);
        let (log, _) = Log::open(&self.dir, &opts).expect("open on the fault fs");
        self.log = Some(log);
        self.poisoned = false;
    }

    /// Appends `batches` at once and sorts the answers into kept, refused
    /// and unknown.
    fn append(&mut self, batches: &[Sizes]) -> Result<(), TestCaseError> {
        let log = self.log.clone().expect("log open");
        let mut jobs = Vec::new();
        for sizes in batches {
            let id = self.next_id;
            self.next_id += 1;
            let payloads: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &filler)| payload(id, i, sizes.len(), filler))
                .collect();
            jobs.push((id, payloads));
        }
        let answers: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(_, payloads)| {
                    let log = log.clone();
                    let payloads = payloads.clone();
                    s.spawn(move || log.append_blocking(payloads))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("appender thread"))
                .collect()
        });
        for ((id, payloads), answer) in jobs.into_iter().zip(answers) {
            match answer {
                Ok(appended) => {
                    let first = appended[0].seq;
                    let seqs: Vec<u64> = appended.iter().map(|a| a.seq).collect();
                    let want: Vec<u64> = (first..first + payloads.len() as u64).collect();
                    prop_assert_eq!(seqs, want, "a batch's sequence numbers are consecutive");
                    prop_assert!(
                        !self.kept.contains_key(&first),
                        "sequence number {first} given twice"
                    );
                    ACKED_BATCHES.fetch_add(1, Ordering::Relaxed);
                    self.kept.insert(
                        first,
                        Found {
                            id,
                            first_seq: first,
                            payloads,
                        },
                    );
                }
                Err(e) if e.is_fatal() || matches!(e, LogError::Closed) => {
                    self.poisoned = true;
                    self.unknown.insert(id, payloads);
                }
                Err(e) => {
                    REFUSED.fetch_add(1, Ordering::Relaxed);
                    self.refused.insert(id, e.to_string());
                }
            }
        }
        // Acknowledged batches in one run never overlap.
        let mut next = 1;
        for (seq, found) in &self.kept {
            prop_assert!(*seq >= next, "batches overlap at sequence number {seq}");
            next = seq + found.payloads.len() as u64;
        }
        Ok(())
    }

    /// Stops the log (after a power loss when `crash`), reopens the
    /// directory with the real file system, checks everything, then goes
    /// on on the fault fs and checks that the next append continues.
    fn recover(&mut self, crash: bool) -> Result<(), TestCaseError> {
        self.log = None;
        if crash {
            self.fs.crash();
            CRASHES.fetch_add(1, Ordering::Relaxed);
        } else {
            RESTARTS.fetch_add(1, Ordering::Relaxed);
        }
        // After a power loss the disk is what the model kept, and the real
        // file system reads it. A restart keeps the page cache, which after
        // a failed fsync holds bytes the disk never got: the model must go
        // on knowing that, so the restart reads through it (no resync).
        let fs: Arc<dyn chime::log::fs::FileSystem> = if crash {
            Arc::new(StdFs)
        } else {
            Arc::new(self.fs.clone())
        };
        let opts = LogOptions {
            segment_bytes: self.segment_bytes,
            fs,
        };
        let (log, recovery) = match Log::open(&self.dir, &opts) {
            Ok(opened) => opened,
            Err(e) => {
                let lost: usize = self.kept.values().map(|f| f.payloads.len()).sum();
                LOST.fetch_add(lost as u64, Ordering::Relaxed);
                return Err(TestCaseError::fail(format!(
                    "the log does not open after {}: {e}",
                    if crash { "a power loss" } else { "a restart" }
                )));
            }
        };
        let mut entries = Vec::new();
        log.replay(|e| {
            entries.push((e.seq, e.payload.to_vec()));
            Ok::<(), LogError>(())
        })
        .expect("replay");
        prop_assert_eq!(entries.len() as u64, recovery.records);
        if recovery.truncated.is_some() {
            TORN_TAILS.fetch_add(1, Ordering::Relaxed);
        }
        drop(log);
        let leftovers: Vec<_> = std::fs::read_dir(&self.dir)
            .expect("read log dir")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        prop_assert!(leftovers.is_empty(), "left after open: {leftovers:?}");

        // Sequence numbers from 1 without a gap.
        for (i, (seq, _)) in entries.iter().enumerate() {
            prop_assert_eq!(*seq, i as u64 + 1, "sequence numbers have a gap");
        }
        // Whole batches only.
        let mut found: BTreeMap<u64, Found> = BTreeMap::new();
        let mut i = 0;
        while i < entries.len() {
            let (seq, p) = &entries[i];
            let Some((id, index, count)) = parse(p) else {
                return Err(TestCaseError::fail(format!("record {seq} is not ours")));
            };
            prop_assert_eq!(index, 0, "record {} starts batch {} in its middle", seq, id);
            prop_assert!(
                i + count <= entries.len(),
                "batch {id} at {seq} is cut short at the end of the log"
            );
            let payloads: Vec<Vec<u8>> =
                entries[i..i + count].iter().map(|e| e.1.clone()).collect();
            for (k, q) in payloads.iter().enumerate() {
                prop_assert_eq!(parse(q), Some((id, k, count)), "batch {} is torn", id);
            }
            found.insert(
                *seq,
                Found {
                    id,
                    first_seq: *seq,
                    payloads,
                },
            );
            i += count;
        }
        // Everything kept is there, where it was.
        let mut lost = 0;
        for (seq, want) in &self.kept {
            ACKED_CHECKED.fetch_add(want.payloads.len() as u64, Ordering::Relaxed);
            if found.get(seq) != Some(want) {
                lost += want.payloads.len();
            }
        }
        LOST.fetch_add(lost as u64, Ordering::Relaxed);
        prop_assert_eq!(
            lost,
            0,
            "acknowledged records lost; found {:?}",
            found.keys()
        );
        // Anything else is a batch whose fate was unknown, now decided.
        for (seq, f) in &found {
            if self.kept.contains_key(seq) {
                continue;
            }
            if let Some(why) = self.refused.get(&f.id) {
                return Err(TestCaseError::fail(format!(
                    "batch {} was refused ({why}) but appears at {seq}",
                    f.id
                )));
            }
            let Some(payloads) = self.unknown.get(&f.id) else {
                return Err(TestCaseError::fail(format!(
                    "batch {} at {seq} was never appended in this run",
                    f.id
                )));
            };
            prop_assert_eq!(payloads, &f.payloads, "batch {} changed", f.id);
            UNKNOWN_KEPT.fetch_add(1, Ordering::Relaxed);
        }
        let found_ids: HashSet<u32> = found.values().map(|f| f.id).collect();
        for id in std::mem::take(&mut self.unknown).into_keys() {
            if !found_ids.contains(&id) {
                UNKNOWN_GONE.fetch_add(1, Ordering::Relaxed);
                self.refused
                    .insert(id, "unknown, and gone after a recovery".into());
            }
        }
        let next = entries.len() as u64 + 1;
        self.kept = found;

        // Appending goes on where the log ends.
        if crash {
            // The real file system wrote (cut a torn tail): adopt the disk.
            self.fs.resync();
        }
        self.open_faulty();
        let id = self.next_id;
        self.next_id += 1;
        let probe = vec![payload(id, 0, 1, 3)];
        let appended = self
            .log
            .as_ref()
            .expect("log open")
            .append_blocking(probe.clone())
            .map_err(|e| TestCaseError::fail(format!("append after recovery: {e}")))?;
        prop_assert_eq!(
            appended[0].seq,
            next,
            "the next append continues the sequence"
        );
        self.kept.insert(
            next,
            Found {
                id,
                first_seq: next,
                payloads: probe,
            },
        );
        Ok(())
    }

    fn run(&mut self, steps: &[Step]) -> Result<(), TestCaseError> {
        for step in steps {
            match step {
                Step::Append(batches) => self.append(batches)?,
                Step::CutPower { calls, batches } => {
                    self.fs.cut_power_after(*calls);
                    self.append(batches)?;
                    self.recover(true)?;
                }
                Step::Crash => self.recover(true)?,
                Step::CutPowerTwice {
                    calls,
                    batches,
                    recovery_calls,
                } => {
                    self.fs.cut_power_after(*calls);
                    self.append(batches)?;
                    self.log = None;
                    self.fs.crash();
                    self.fs.cut_power_after(*recovery_calls);
                    let opts = self.fs.log_options(self.segment_bytes);
                    // It may fail (the power went) or succeed (it needed
                    // fewer calls); either way the power goes again.
                    drop(Log::open(&self.dir, &opts));
                    CRASHES.fetch_add(1, Ordering::Relaxed);
                    self.recover(true)?;
                }
                Step::Fault { faults, batches } => {
                    for &(op, errno, short) in faults {
                        if op == Op::Write && short {
                            self.fs.fail_short_write(errno, Times::Once);
                        } else {
                            self.fs.fail(op, errno, Times::Once);
                        }
                    }
                    self.append(batches)?;
                    self.fs.heal();
                }
                Step::Restart => self.recover(false)?,
            }
            if self.poisoned {
                // A log that took a fatal error waits for a restart.
                if matches!(step, Step::Fault { faults, .. } if faults.iter().any(|f| f.0 == Op::Sync))
                {
                    RESTARTS_AFTER_FAILED_SYNC.fetch_add(1, Ordering::Relaxed);
                }
                self.recover(false)?;
            }
        }
        self.recover(true)?;
        let stats = self.fs.stats();
        FAULTS.fetch_add(stats.faults_injected, Ordering::Relaxed);
        HOLES.fetch_add(stats.writes_kept_with_holes, Ordering::Relaxed);
        DROPPED_BY_FAILED_SYNCS.fetch_add(stats.bytes_dropped_by_failed_syncs, Ordering::Relaxed);
        for (total, n) in CUTS.iter().zip(stats.cuts) {
            total.fetch_add(n, Ordering::Relaxed);
        }
        CASES.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[test]
fn acknowledged_batches_survive_power_loss_whole_and_in_order() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    // Chosen here rather than left to proptest, which draws a random seed
    // and never says which: printed, it replays the same cases.
    let seed = announce_seed(
        "PROPTEST_RNG_SEED",
        &format!("PROPTEST_CASES={cases} cargo test --test power_loss -- --nocapture"),
    );
    let mut runner = TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        any::<u64>(),
        100u64..400,
        prop::collection::vec(step(), 1..16),
    );
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |(seed, segment_bytes, steps)| {
        Harness::new(seed, segment_bytes).run(&steps)
    });
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let cuts: Vec<String> = Op::ALL
        .iter()
        .zip(&CUTS)
        .map(|(op, n)| format!("{op:?} {}", load(n)))
        .collect();
    eprintln!(
        "power loss: {} cases passed in {:.1} s; {} crashes ({} power cuts at a chosen call: {}), \
         {} clean restarts ({} after a failed fsync; {} bytes dropped by failed fsyncs), {} faults injected, \
         {} writes kept with a hole by a crash, {} torn tails cut by recovery; {} batches acknowledged, {} acknowledged-record checks \
         after recovery, lost: {}; {} batches refused (none reappeared); unknown fate: {} kept whole, {} gone",
        load(&CASES),
        started.elapsed().as_secs_f64(),
        load(&CRASHES),
        CUTS.iter().map(load).sum::<u64>(),
        cuts.join(", "),
        load(&RESTARTS),
        load(&RESTARTS_AFTER_FAILED_SYNC),
        load(&DROPPED_BY_FAILED_SYNCS),
        load(&FAULTS),
        load(&HOLES),
        load(&TORN_TAILS),
        load(&ACKED_BATCHES),
        load(&ACKED_CHECKED),
        load(&LOST),
        load(&REFUSED),
        load(&UNKNOWN_KEPT),
        load(&UNKNOWN_GONE),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The modes the run exists for really happened (each is drawn often
    // enough that a default run of 64 cases meets them many times over).
    if cases >= 64 {
        assert!(load(&HOLES) > 0, "no crash kept a write with a hole");
        assert!(
            load(&RESTARTS_AFTER_FAILED_SYNC) > 0 && load(&DROPPED_BY_FAILED_SYNCS) > 0,
            "no restart after a failed fsync that dropped bytes"
        );
    }
}
