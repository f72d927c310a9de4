//! What a data directory's log holds, decoded: for tests that assert on the
//! records written (how many `AttemptSucceeded`, say), not only on what the
//! API shows. Read-only: the log is scanned with [`LogReader`], which
//! neither cuts nor refuses, so it can look at a log a server has open.

use std::path::Path;
use std::sync::Arc;

use crate::log::fs::StdFs;
use crate::log::reader::LogReader;
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

/// How many records of `kind` the log of `data_dir` holds.
pub fn count_records(data_dir: &Path, kind: RecordKind) -> usize {
    records_in(data_dir)
        .iter()
        .filter(|(_, r)| r.kind() == kind)
        .count()
}
