//! What a data directory's log holds, decoded: for tests that assert on the
//! records written (one cancel for three identical deletes, nothing for a
//! refused create, one `AttemptSucceeded`), not only on what the API shows.
//! Read-only and lock-free: the log is scanned with [`LogReader`], which
//! neither cuts nor refuses, so it can look at a log a server has open;
//! every acknowledged write is durable, hence seen.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::log::fs::StdFs;
use crate::log::reader::LogReader;
use crate::log::{Log, LogError};
use crate::record::{Record, RecordKind};

/// Every record in whole batches of the log of data directory `data_dir`,
/// with its sequence number, oldest first. Panics on a log that cannot be
/// scanned or a record that does not decode: both are the test's failure.
pub fn records_in(data_dir: &Path) -> Vec<(u64, Record)> {
    let log_dir = crate::datadir::log_dir(data_dir);
    let reader = LogReader::open(Arc::new(StdFs), &log_dir, |_, _| {}).expect("scan the log");
    let mut out = Vec::new();
    reader
        .for_each(|entry| {
            let record = Record::decode(entry.payload).expect("every record decodes");
            out.push((entry.seq, record));
            Ok::<(), std::convert::Infallible>(())
        })
        .expect("infallible");
    out
}

/// How many records of each kind the log of `data_dir` holds.
pub fn record_counts(data_dir: &Path) -> BTreeMap<RecordKind, usize> {
    let mut counts = BTreeMap::new();
    for (_, record) in records_in(data_dir) {
        *counts.entry(record.kind()).or_insert(0) += 1;
    }
    counts
}

/// How many records of `kind` the log of `data_dir` holds.
pub fn record_count(data_dir: &Path, kind: RecordKind) -> usize {
    record_counts(data_dir).get(&kind).copied().unwrap_or(0)
}

/// Every entry `log` replays, as sequence number and payload bytes.
pub fn replay_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut out = vec![];
    log.replay(|e| {
        out.push((e.seq, e.payload.to_vec()));
        Ok::<(), LogError>(())
    })
    .expect("replay");
    out
}
