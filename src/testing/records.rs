//! What a data directory's log holds, read as `chime log` reads it: for
//! tests that must show how many records of a kind a request wrote (one
//! cancel for three identical deletes, nothing for a refused create).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::datadir;
use crate::log::fs::StdFs;
use crate::log::reader::LogReader;
use crate::record::{Record, RecordKind};

/// How many records of each kind the log in `data_dir` holds, in whole
/// batches. Read-only and lock-free, so it works beside a running server;
/// every acknowledged write is durable, hence counted.
pub fn record_counts(data_dir: &Path) -> BTreeMap<RecordKind, usize> {
    let reader = LogReader::open(Arc::new(StdFs), &datadir::log_dir(data_dir), |_, _| {}).unwrap();
    let mut counts = BTreeMap::new();
    reader
        .for_each(|entry| {
            let record = Record::decode(entry.payload)?;
            *counts.entry(record.kind()).or_insert(0) += 1;
            Ok::<(), crate::record::RecordError>(())
        })
        .unwrap();
    counts
}

/// How many records of `kind` the log in `data_dir` holds.
pub fn record_count(data_dir: &Path, kind: RecordKind) -> usize {
    record_counts(data_dir).get(&kind).copied().unwrap_or(0)
}
