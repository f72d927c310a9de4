//! Reading a log for tools (`chime log`), over the log's own types.
//!
//! A [`LogReader`] is a read-only, lock-free scan of a log directory that
//! reports everything it can read: the records of every whole batch, each
//! segment's state, and every damaged place as a classified [`Finding`].
//! Unlike [`super::Log::open`] it neither refuses a damaged log nor cuts a
//! torn tail, so it works on a log a server has open, or one that will not
//! open. Callers decode records; frames, headers and damage stay here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fs::FileSystem;
use super::repair::Plan;
use super::scan::{DirScan, Finding, PartialScan};
use super::segment;
use super::{Entry, Loc, LogError};

/// A scanned log directory, for reading and reporting.
pub struct LogReader {
    fs: Arc<dyn FileSystem>,
    scan: PartialScan,
    /// Torn tails recovery cut off and kept aside: path and length.
    torn: Vec<(PathBuf, u64)>,
}

/// One segment file, as `chime log stats` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub path: std::path::PathBuf,
    pub bytes: u64,
    /// Records in whole batches.
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The newest segment, the one a server appends to.
    pub active: bool,
    /// Where the damage starts, if any.
    pub damaged_at: Option<u64>,
    /// Set when the segment could not be scanned.
    pub unreadable: Option<Unreadable>,
}

/// Why a segment was not scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// The segment itself is damaged, for this reason.
    Damaged(String),
    /// An earlier segment could not be scanned, so this one went unchecked.
    NotChecked,
}

impl LogReader {
    /// Scans every segment in `log_dir` through `fs`, calling
    /// `progress(done, total)` after each. Changes nothing on disk.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        log_dir: &Path,
        progress: impl FnMut(usize, usize),
    ) -> Result<LogReader, LogError> {
        let scan = DirScan::read_partial(&*fs, log_dir, progress)?;
        let torn = segment::list_torn(&*fs, log_dir)?
            .into_iter()
            .map(|p| {
                let len = fs.metadata(&p).map_or(0, |m| m.len());
                (p, len)
            })
            .collect();
        Ok(LogReader { fs, scan, torn })
    }

    /// The torn tails that recovery cut off and kept aside (files
    /// `<segment>.torn-<offset>`, outside the log): path and length.
    pub fn torn_copies(&self) -> &[(PathBuf, u64)] {
        &self.torn
    }

    /// Every damaged place, oldest first.
    pub fn findings(&self) -> Vec<Finding> {
        self.scan.findings()
    }

    /// The plan that would mend the first damage, or `None` for a sound log.
    pub fn repair_plan(&self) -> Result<Option<Plan>, LogError> {
        Plan::of(&self.scan, &*self.fs)
    }

    /// Calls `f` for every record of every whole batch, oldest first.
    pub fn for_each<E>(&self, f: impl FnMut(Entry<'_>) -> Result<(), E>) -> Result<(), E> {
        self.scan.scan.for_each(f)
    }

    /// Records in whole batches.
    pub fn records(&self) -> u64 {
        self.scan.scan.records()
    }

    /// The sequence number of the first record.
    pub fn first_seq(&self) -> Option<u64> {
        self.segments_scanned()
            .iter()
            .find_map(|s| s.scan.first_seq)
    }

    /// Every segment scanned, by ordinal (as
    /// [`crate::log::Log::segment_ids`]).
    pub fn segment_ids(&self) -> Vec<Option<super::SegmentId>> {
        self.segments_scanned()
            .iter()
            .map(|s| {
                Some(super::SegmentId {
                    base_seq: s.file.base_seq,
                    generation: s.block.map_or(0, |b| b.generation),
                })
            })
            .collect()
    }

    /// Whether compaction wrote any of the segments scanned (their
    /// sequence numbers then have gaps).
    pub fn compacted(&self) -> bool {
        self.segments_scanned().iter().any(|s| s.block.is_some())
    }

    /// Files a compaction merged and a crash left behind (skipped; the
    /// next start of `serve` removes them).
    pub fn superseded(&self) -> &[PathBuf] {
        &self.scan.scan.superseded
    }

    /// The last sequence number in a whole batch.
    pub fn last_seq(&self) -> Option<u64> {
        self.segments_scanned()
            .iter()
            .filter_map(|s| s.scan.last_seq)
            .max()
    }

    /// The last sequence number the log has reached, with records or
    /// without: past the last record, a compacted segment's range may run
    /// on over records it dropped. A snapshot up to here fits the log.
    pub fn covered_through(&self) -> Option<u64> {
        let ends = self
            .segments_scanned()
            .iter()
            .filter_map(|s| s.block.and_then(|b| b.end_seq.checked_sub(1)));
        self.last_seq().into_iter().chain(ends).max()
    }

    /// Bytes in the segments scanned.
    pub fn bytes(&self) -> u64 {
        self.segments_scanned().iter().map(|s| s.file_len).sum()
    }

    /// How many segments were scanned.
    pub fn scanned(&self) -> usize {
        self.segments_scanned().len()
    }

    /// How many segments could not be scanned.
    pub fn unscanned(&self) -> usize {
        self.scan.stopped.as_ref().map_or(0, |s| s.unscanned.len())
    }

    /// The file of the segment a record lives in.
    pub fn segment_path(&self, loc: Loc) -> Option<&Path> {
        self.segments_scanned()
            .get(loc.segment as usize)
            .map(|s| s.file.path.as_path())
    }

    /// Every segment file, scanned or not, oldest first.
    pub fn segments(&self) -> Vec<SegmentSummary> {
        let stopped = self.scan.stopped.as_ref();
        let unscanned = stopped.map_or(&[][..], |s| &s.unscanned[..]);
        let total = self.scanned() + unscanned.len();
        let mut rows: Vec<SegmentSummary> = self
            .segments_scanned()
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentSummary {
                path: s.file.path.clone(),
                bytes: s.file_len,
                records: s.scan.records,
                first_seq: s.scan.first_seq,
                last_seq: s.scan.last_seq,
                active: i + 1 == total,
                damaged_at: s.scan.damage.as_ref().map(|d| d.bad_at as u64),
                unreadable: None,
            })
            .collect();
        for (j, f) in unscanned.iter().enumerate() {
            let unreadable = match (j, stopped) {
                (0, Some(s)) => Unreadable::Damaged(s.corruption.reason.clone()),
                _ => Unreadable::NotChecked,
            };
            rows.push(SegmentSummary {
                path: f.path.clone(),
                bytes: self.fs.metadata(&f.path).map_or(0, |m| m.len()),
                records: 0,
                first_seq: None,
                last_seq: None,
                active: self.scanned() + j + 1 == total,
                damaged_at: None,
                unreadable: Some(unreadable),
            });
        }
        rows
    }

    fn segments_scanned(&self) -> &[super::ScannedSegment] {
        &self.scan.scan.segments
    }
}
