//! Scanning a whole log directory, and the one damage classifier.
//!
//! [`DirScan`] maps and scans every segment without changing anything;
//! [`classify`] turns what a segment's scan found into a [`Finding`] with a
//! [`Verdict`]: a torn tail (never acknowledged, recovery cuts it), damage
//! that recovery refuses (valid frames follow it, or it lies in a sealed
//! segment), or a segment that cannot be read at all. Recovery
//! ([`super::Log::open`]), `chime log verify` and `chime log repair` all
//! decide from these verdicts, so what counts as a torn tail is written
//! down once, here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::frame::{self, SegmentScan};
use super::fs::{FileSystem, StdFs};
use super::segment::{self, SegmentFile};
use super::{Entry, Loc, LogError};

/// What a scan of the whole log directory found, without changing anything.
/// `chime log verify` reports it; [`super::Log::open`] decides from it.
#[derive(Debug)]
pub struct DirScan {
    pub segments: Vec<ScannedSegment>,
    /// Files left over from a compaction that merged them into the
    /// compacted segment before them (skipped; see `scan_files`).
    pub superseded: Vec<PathBuf>,
}

/// What [`DirScan::read_partial`] found.
#[derive(Debug)]
pub struct PartialScan {
    /// The segments scanned, oldest first, up to the one that stopped the scan.
    pub scan: DirScan,
    /// Why the scan stopped before the last segment, if it did.
    pub stopped: Option<StoppedScan>,
}

/// A segment that could not be scanned, and every segment after it.
#[derive(Debug)]
pub struct StoppedScan {
    /// What is wrong with the first of `unscanned`.
    pub corruption: Corruption,
    /// The segment named in `corruption`, then every later one, oldest first.
    pub unscanned: Vec<SegmentFile>,
}

/// Bytes that are not what the format says, at a place in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl From<Corruption> for LogError {
    fn from(c: Corruption) -> Self {
        LogError::Corruption {
            path: c.path,
            offset: c.offset,
            reason: c.reason,
        }
    }
}

/// One segment's scan.
#[derive(Debug)]
pub struct ScannedSegment {
    pub file: SegmentFile,
    /// The segment's format version (its header's).
    pub version: u32,
    /// A compacted segment's compaction block.
    pub block: Option<frame::Block>,
    pub file_len: u64,
    pub scan: SegmentScan,
    pub(super) map: Arc<Mmap>,
}

/// The recovery policy's verdict on one damaged place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The last segment ends in `dropped` bytes that hold no whole batch
    /// and were never acknowledged: nothing valid follows the damage, or
    /// (version 2) only frames of the same write, which the disk kept in
    /// part. Recovery cuts the segment back to `keep` bytes.
    TornTail { keep: u64, dropped: u64 },
    /// Damage recovery refuses to mend on its own, for `cause`. Its whole
    /// batches end at `keep`, where a forced repair cuts.
    Refused { keep: u64, cause: Cause },
    /// The segment cannot be scanned at all (a bad header, or a first
    /// sequence number that does not follow on), and the `later` segments
    /// after it went unchecked.
    Unreadable { later: usize },
}

/// Why damage is not a torn tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// In the last segment, but valid frames follow the damage that were
    /// written after it was durable (or, in a version 1 segment, any valid
    /// frame): cutting would throw away acknowledged records.
    ValidFramesFollow,
    /// In a segment that later segments follow.
    SealedSegment,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::ValidFramesFollow => "valid frames follow the damage, so it is not a torn tail",
            Cause::SealedSegment => "the damage is inside a sealed segment",
        })
    }
}

/// A damaged place in the log, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    /// The first byte that is not valid: what an operator is shown.
    pub offset: u64,
    /// What is wrong there.
    pub reason: String,
    pub verdict: Verdict,
}

impl Finding {
    pub fn is_torn_tail(&self) -> bool {
        matches!(self.verdict, Verdict::TornTail { .. })
    }

    /// The error recovery refuses to open the log with, or `None` for a
    /// torn tail, which recovery cuts.
    pub fn refusal(&self) -> Option<LogError> {
        let reason = match &self.verdict {
            Verdict::TornTail { .. } => return None,
            Verdict::Refused { cause, .. } => format!("{}; {cause}", self.reason),
            Verdict::Unreadable { .. } => self.reason.clone(),
        };
        Some(LogError::Corruption {
            path: self.path.clone(),
            offset: self.offset,
            reason,
        })
    }
}

/// The damage classifier: the verdict on a scanned segment's damage, if it
/// has any. `last` says whether no segment follows it.
pub fn classify(s: &ScannedSegment, last: bool) -> Option<Finding> {
    let damage = s.scan.damage.as_ref()?;
    let keep = damage.offset as u64;
    // In a version 2 segment every write starts with a marked frame, so
    // valid frames after the damage but no mark mean the damage and all of
    // them are one write the disk kept in part (writeback need not keep
    // pages in order): never acknowledged, like any torn tail. Version 1
    // has no mark, so any valid frame after the damage refuses.
    let vouched = if s.version >= 2 {
        damage.write_after
    } else {
        damage.valid_after
    };
    let verdict = match (last, vouched) {
        (true, false) => Verdict::TornTail {
            keep,
            dropped: s.file_len - keep,
        },
        (true, true) => Verdict::Refused {
            keep,
            cause: Cause::ValidFramesFollow,
        },
        (false, _) => Verdict::Refused {
            keep,
            cause: Cause::SealedSegment,
        },
    };
    Some(Finding {
        path: s.file.path.clone(),
        offset: damage.bad_at as u64,
        reason: damage.kind.to_string(),
        verdict,
    })
}

impl DirScan {
    /// Maps and scans every segment in `log_dir`, checking headers, every
    /// frame's checksum and the continuity of sequence numbers. Changes
    /// nothing on disk (leftover temporary files are only removed by
    /// [`super::Log::open`]).
    pub fn read(log_dir: &Path) -> Result<DirScan, LogError> {
        Self::read_with(&StdFs, log_dir, false)
    }

    /// [`DirScan::read`] through `fs`, removing leftover temporary files
    /// when `clean` is set (recovery does).
    pub(super) fn read_with(
        fs: &dyn FileSystem,
        log_dir: &Path,
        clean: bool,
    ) -> Result<DirScan, LogError> {
        let files = segment::list(fs, log_dir, clean)?;
        let partial = Self::scan_files(fs, files, clean, |_, _| {})?;
        match partial.stopped {
            Some(stopped) => Err(stopped.corruption.into()),
            None => Ok(partial.scan),
        }
    }

    /// Like [`DirScan::read`], but a segment that cannot be scanned (a bad
    /// header, or a first sequence number that does not follow on from the
    /// previous segment) does not fail the whole read: the segments before
    /// it come back, with the error and the files left unscanned. Calls
    /// `progress(done, total)` after each segment. For `chime log`, which
    /// reports everything it can read; [`super::Log::open`] refuses such a log.
    pub fn read_partial(
        fs: &dyn FileSystem,
        log_dir: &Path,
        progress: impl FnMut(usize, usize),
    ) -> Result<PartialScan, LogError> {
        Self::scan_files(fs, segment::list(fs, log_dir, false)?, false, progress)
    }

    /// Scans `files`. A file whose first sequence number lies inside the
    /// range a compacted segment before it covers is left over from a
    /// compaction that merged it into that segment and stopped before it
    /// removed it (`log::compact`): it is skipped, and removed when `clean`
    /// is set.
    fn scan_files(
        fs: &dyn FileSystem,
        files: Vec<SegmentFile>,
        clean: bool,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<PartialScan, LogError> {
        let total = files.len();
        let mut segments: Vec<ScannedSegment> = Vec::with_capacity(total);
        let mut superseded = Vec::new();
        let mut files = files.into_iter();
        while let Some(file) = files.next() {
            let covered = segments
                .last()
                .and_then(|prev| prev.block)
                .is_some_and(|b| file.base_seq < b.end_seq);
            if covered {
                if clean {
                    fs.remove_file(&file.path)
                        .map_err(|e| LogError::io("remove", &file.path, e))?;
                }
                superseded.push(file.path);
                progress(segments.len() + superseded.len(), total);
                continue;
            }
            let map = segment::map(fs, &file.path)?;
            let header = segment::check_header(&map, &file);
            // After a damaged segment the next one cannot line up; the
            // damage itself is what the classifier reports.
            let expected = segments
                .last()
                .filter(|prev| prev.scan.damage.is_none())
                .map_or(file.base_seq, |prev| prev.next_seq());
            let lined_up = if file.base_seq == expected {
                Ok(())
            } else {
                Err(Corruption {
                    path: file.path.clone(),
                    offset: 16,
                    reason: format!(
                        "segment starts at sequence number {}, but the previous one ends before {expected}",
                        file.base_seq
                    ),
                })
            };
            let checked = header.and_then(|version| lined_up.map(|()| version));
            let checked = checked.and_then(|version| {
                let block = if version == frame::COMPACTED_VERSION {
                    let block =
                        frame::decode_block(&map, file.base_seq).map_err(|reason| Corruption {
                            path: file.path.clone(),
                            offset: frame::HEADER_LEN as u64,
                            reason,
                        })?;
                    Some(block)
                } else {
                    None
                };
                Ok((version, block))
            });
            let (version, block) = match checked {
                Ok(checked) => checked,
                Err(corruption) => {
                    let unscanned = std::iter::once(file).chain(files).collect();
                    return Ok(PartialScan {
                        scan: DirScan {
                            segments,
                            superseded,
                        },
                        stopped: Some(StoppedScan {
                            corruption,
                            unscanned,
                        }),
                    });
                }
            };
            let scan = frame::scan_segment(&map, file.base_seq, |_, _, _| {});
            segments.push(ScannedSegment {
                version,
                block,
                file_len: map.len() as u64,
                file,
                scan,
                map: Arc::new(map),
            });
            progress(segments.len() + superseded.len(), total);
        }
        Ok(PartialScan {
            scan: DirScan {
                segments,
                superseded,
            },
            stopped: None,
        })
    }

    /// Every damaged segment's finding, oldest first.
    pub fn findings(&self) -> Vec<Finding> {
        let last = self.segments.len().saturating_sub(1);
        self.segments
            .iter()
            .enumerate()
            .filter_map(|(i, s)| classify(s, i == last))
            .collect()
    }

    /// The first damage that the recovery policy refuses to repair on its
    /// own, as a [`LogError::Corruption`]: damage in any segment but the
    /// last, or damage followed by valid frames.
    pub fn refusal(&self) -> Option<LogError> {
        self.findings().iter().find_map(Finding::refusal)
    }

    /// The torn tail recovery would cut off: (segment, keep bytes, drop bytes).
    pub fn torn_tail(&self) -> Option<(&ScannedSegment, u64, u64)> {
        let last = self.segments.last()?;
        match classify(last, true)?.verdict {
            Verdict::TornTail { keep, dropped } => Some((last, keep, dropped)),
            _ => None,
        }
    }

    /// Records in whole batches, over all segments.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.scan.records).sum()
    }

    /// Calls `f` for every record of every whole batch, oldest first.
    pub fn for_each<E>(&self, mut f: impl FnMut(Entry<'_>) -> Result<(), E>) -> Result<(), E> {
        for (i, s) in self.segments.iter().enumerate() {
            visit_segment(&s.map, i as u32, s.file.base_seq, s.scan.valid_end, &mut f)?;
        }
        Ok(())
    }
}

impl PartialScan {
    /// Every damaged place, oldest first: each scanned segment's damage,
    /// then the segment that stopped the scan. A segment is the last only
    /// if no other follows it, scanned or not.
    pub fn findings(&self) -> Vec<Finding> {
        let segments = &self.scan.segments;
        let mut out: Vec<Finding> = segments
            .iter()
            .enumerate()
            .filter_map(|(i, s)| classify(s, i + 1 == segments.len() && self.stopped.is_none()))
            .collect();
        if let Some(stopped) = &self.stopped {
            out.push(Finding {
                path: stopped.corruption.path.clone(),
                offset: stopped.corruption.offset,
                reason: stopped.corruption.reason.clone(),
                verdict: Verdict::Unreadable {
                    later: stopped.unscanned.len().saturating_sub(1),
                },
            });
        }
        out
    }
}

impl ScannedSegment {
    /// The segment's bytes as they were scanned (header included).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The sequence number the next segment must start with: a compacted
    /// segment's end, or the one after the last frame.
    pub fn next_seq(&self) -> u64 {
        match self.block {
            Some(b) => b.end_seq,
            None => self.scan.last_seq.map_or(self.file.base_seq, |s| s + 1),
        }
    }
}

/// Walks the frames of one segment up to `end`, which the caller has
/// already checked.
pub(super) fn visit_segment<E>(
    bytes: &[u8],
    segment: u32,
    base_seq: u64,
    end: usize,
    f: &mut impl FnMut(Entry<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let layout = frame::Layout::of(bytes, base_seq);
    let bytes = &bytes[..end.min(bytes.len())];
    let mut offset = layout.first_frame;
    let mut prev = None;
    // The scan already verified these frames; a decode failure here can
    // only mean the file changed under us, and stopping is the safe answer.
    while let Ok(frame) = frame::decode_frame(bytes, offset) {
        if !layout.follows(prev, frame.seq) {
            break;
        }
        f(Entry {
            seq: frame.seq,
            loc: Loc {
                segment,
                // Segments are at most 4 GiB (checked at open and roll).
                offset: offset as u32,
            },
            payload: frame.payload,
        })?;
        prev = Some(frame.seq);
        offset = frame.end;
    }
    Ok(())
}
