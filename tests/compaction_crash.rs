//! Compaction is crash-safe at every step (issue 14, point 4): on the
//! fault file system, a log of small segments holding live events and
//! many cancelled ones is compacted with the process stopped at its n-th
//! file system call, for every n until a compaction runs to its end (and
//! its snapshot is written). Each stop is tried twice, on fresh copies:
//!
//! - as a kill -9: the process ends, the page cache stays; the data
//!   directory is opened again as it is;
//! - as a power cut: the disk keeps only what was made durable, plus any
//!   prefix of what was not ([`FaultFs::crash`]).
//!
//! Either way the reopened service holds every live event, with its
//! creation record byte for byte, and no cancelled one; no sequence number
//! appears twice; the restart restores a snapshot only if it fits (the
//! one written before the compaction, over the segments it rewrote, never
//! does); and a compaction then runs to its end and changes nothing anyone
//! can see.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chime::clock::SystemClock;
use chime::datadir;
use chime::log::LogOptions;
use chime::log::fs::StdFs;
use chime::record::{EventCreated, EventId, Record, UnixMicros, fixtures};
use chime::service::Service;
use chime::snapshot::{SnapshotStore, snapshot_dir};
use chime::testing::faultfs::FaultFs;
use chime::testing::records_in;

const SEGMENT_BYTES: u64 = 2048;
const EVENTS: u128 = 96;

/// Event `n`: in blocks of 12, every event of an even block kept, one in
/// twelve of an odd block; the rest cancelled. So segments of mostly
/// garbage lie between segments that stay, and some are rewritten alone,
/// under their own name.
fn created(n: u128) -> EventCreated {
    let mut e = fixtures::event(
        EventId::from_u128(n + 1),
        "http://127.0.0.1:9/never",
        UnixMicros(4_070_908_800_000_000),
    );
    e.payload = format!(r#"{{"n":{n},"pad":"{}"}}"#, "z".repeat(60));
    e
}

fn kept(n: u128) -> bool {
    (n / 12).is_multiple_of(2) || n.is_multiple_of(12)
}

/// Writes the log (through `fs`) and returns the live events' records.
fn build(dir: &Path, opts: &LogOptions) -> BTreeMap<EventId, EventCreated> {
    let (service, _) =
        Service::open(&datadir::log_dir(dir), opts, Arc::new(SystemClock)).expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut live = BTreeMap::new();
    for n in 0..EVENTS {
        let e = created(n);
        rt.block_on(service.append([Record::EventCreated(e.clone())]))
            .expect("append");
        if kept(n) {
            live.insert(e.event_id, e);
        } else {
            rt.block_on(service.append([Record::EventCancelled {
                event_id: e.event_id,
                at: UnixMicros(1),
            }]))
            .expect("append");
        }
    }
    // A snapshot from before the compaction, as a running server has: a
    // restart after the compaction rewrote segments must refuse it.
    let store = SnapshotStore::open(opts.fs.clone(), &snapshot_dir(dir)).expect("store");
    service.write_snapshot(&store).expect("snapshot");
    service.log.close();
    live
}

/// Opens `dir` with the real file system and checks what it holds.
fn check(dir: &Path, live: &BTreeMap<EventId, EventCreated>, what: &str) {
    let seqs: Vec<u64> = records_in(dir).into_iter().map(|(seq, _)| seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{what}: a sequence number repeats or goes back: {seqs:?}"
    );
    let store = SnapshotStore::open(Arc::new(StdFs), &snapshot_dir(dir)).expect("store");
    let open = |what: &str| {
        let (service, _) = Service::open_restoring(
            &datadir::log_dir(dir),
            &LogOptions::with_segment_bytes(SEGMENT_BYTES),
            Arc::new(SystemClock),
            Some(&store),
        )
        .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        service
    };
    let service = open(what);
    let check_service = |service: &Service, what: &str| {
        assert_eq!(service.projection().len(), live.len(), "{what}");
        for (id, created) in live {
            let read = service.read_created(*id).expect("read");
            assert_eq!(read.as_ref(), Some(created), "{what}: event {id}");
        }
        for n in (0..EVENTS).filter(|&n| !kept(n)) {
            let id = EventId::from_u128(n + 1);
            assert!(service.projection().event(id).is_none(), "{what}: {id}");
        }
    };
    check_service(&service, what);
    // The log is whole: a compaction runs to its end, and nothing changes.
    chime::compaction::compact(&service, Some(&store))
        .unwrap_or_else(|e| panic!("{what}: compaction after recovery: {e}"));
    check_service(&service, &format!("{what}, compacted again"));
    service.log.close();
    drop(service);
    let service = open(what);
    check_service(&service, &format!("{what}, compacted again and reopened"));
    service.log.close();
}

/// Compacts a fresh copy, stopped after `cut` file system calls; whether
/// the compaction ran to its end before the stop.
fn compact_until(cut: u64, power_loss: bool) -> bool {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs = FaultFs::new(cut);
    let opts = fs.log_options(SEGMENT_BYTES);
    let live = build(tmp.path(), &opts);
    let store = SnapshotStore::open(opts.fs.clone(), &snapshot_dir(tmp.path())).expect("store");
    let (service, _) = Service::open_restoring(
        &datadir::log_dir(tmp.path()),
        &opts,
        Arc::new(SystemClock),
        Some(&store),
    )
    .expect("open");
    fs.cut_power_after(cut);
    let done = chime::compaction::compact(&service, Some(&store));
    let finished = !fs.is_dead();
    if finished {
        let done = done.expect("a compaction with the power on");
        assert!(done.records_dropped > 0, "{done:?}");
    }
    service.log.close();
    drop(service);
    drop(store);
    let what = format!(
        "{} after {cut} calls",
        if power_loss { "power cut" } else { "kill -9" }
    );
    if power_loss {
        fs.crash();
    }
    check(tmp.path(), &live, &what);
    finished
}

#[test]
fn a_kill_or_power_cut_at_any_call_of_a_compaction_loses_nothing_and_shows_nothing_twice() {
    let mut cuts = 0;
    for cut in 0.. {
        let killed = compact_until(cut, false);
        let cut_off = compact_until(cut, true);
        assert_eq!(killed, cut_off, "the same calls either way");
        if killed {
            break;
        }
        cuts += 1;
        assert!(cut < 10_000, "a compaction that never ends");
    }
    eprintln!("compaction crash: stopped at each of {cuts} calls, twice (kill -9, power cut)");
    // Renames, removals, fsyncs and the snapshot's files: several steps.
    assert!(cuts >= 8, "only {cuts} calls in a compaction");
}
