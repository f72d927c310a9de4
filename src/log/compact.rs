//! Compaction's byte work: rewriting a run of sealed segments into one
//! compacted segment (format version 3, see [`super::frame`]) holding only
//! the records its caller keeps, and installing it crash-safely. The log
//! does not know which records are live: the caller says, record by record
//! ([`Log::stage`]), and remaps its own locations when the new segment is
//! installed ([`Log::install`]).
//!
//! Crash safety rests on two renames' order. The new segment is written
//! whole to a temporary file and fsynced; it is renamed over the run's
//! first segment and the directory fsynced; only then are the run's other
//! segments removed. Until the rename is durable the old segments are the
//! log (a temporary file is removed at the next open). After it, the
//! compacted segment covers the run's whole range (its `end_seq`), so a
//! later segment of the run that a crash left behind starts inside that
//! range and is skipped and removed at the next open (`scan`): no record is
//! ever read twice, and none that was kept is lost.

use std::path::PathBuf;
use std::sync::Arc;

use super::frame::{self, Block, Flags};
use super::segment;
use super::{Entry, Loc, Log, LogError, ReadSegment, scan};

/// A sealed segment (not the active one, and not a tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub ordinal: u32,
    pub base_seq: u64,
    /// The next segment's base: the segment holds records below it.
    pub end_seq: u64,
    pub generation: u64,
    pub file_bytes: u64,
    pub path: PathBuf,
}

/// A compacted segment written and fsynced under a temporary name, not yet
/// part of the log: [`Log::install`] puts it in place, dropping it unused
/// removes nothing (the next open removes the temporary file).
#[derive(Debug)]
pub struct Staged {
    /// The run's ordinals, oldest first; the first gets the new segment.
    ordinals: Vec<u32>,
    base_seq: u64,
    block: Block,
    tmp: PathBuf,
    path: PathBuf,
    /// The run's other files, removed once the new one is in place.
    remove: Vec<PathBuf>,
    /// Old and new location of every record kept, by old location.
    moved: Vec<(Loc, Loc)>,
    /// The new segment's length.
    pub bytes: u64,
    /// The run's files' lengths, together.
    pub input_bytes: u64,
    /// Records kept.
    pub kept: u64,
    /// Records dropped.
    pub dropped: u64,
}

impl Staged {
    /// Whether `loc` is in one of the run's segments.
    pub fn covers(&self, loc: Loc) -> bool {
        self.ordinals.contains(&loc.segment)
    }

    /// Whether the record at `loc` (in the run) was kept.
    pub fn keeps(&self, loc: Loc) -> bool {
        self.moved
            .binary_search_by_key(&loc, |&(old, _)| old)
            .is_ok()
    }
}

impl Log {
    /// The sealed segments, oldest first: every segment but the active
    /// (last) one and the tombstones.
    pub fn sealed(&self) -> Result<Vec<Sealed>, LogError> {
        let segments = self.shared.segments.read()?;
        let live: Vec<(u32, &ReadSegment)> = segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.map.is_some())
            .map(|(i, s)| (i as u32, s))
            .collect();
        Ok(live
            .windows(2)
            .map(|pair| {
                let ((ordinal, seg), (_, next)) = (pair[0], pair[1]);
                Sealed {
                    ordinal,
                    base_seq: seg.base_seq,
                    end_seq: next.base_seq,
                    generation: seg.generation,
                    file_bytes: seg.durable_len,
                    path: seg.path.clone(),
                }
            })
            .collect())
    }

    /// Calls `f` for every record of the segment with `ordinal`.
    pub fn visit(&self, ordinal: u32, mut f: impl FnMut(Entry<'_>)) -> Result<(), LogError> {
        let (map, base_seq, len) = {
            let segments = self.shared.segments.read()?;
            let seg = segments
                .get(ordinal as usize)
                .ok_or(LogError::Internal("no segment with that ordinal"))?;
            let map = seg
                .map
                .clone()
                .ok_or(LogError::Internal("a tombstone has no records"))?;
            (map, seg.base_seq, seg.durable_len)
        };
        scan::visit_segment(&map, ordinal, base_seq, len as usize, &mut |e| {
            f(e);
            Ok::<(), LogError>(())
        })
    }

    /// Writes the records of the run `run` (consecutive sealed segments,
    /// as [`Log::sealed`] lists them) for which `keep` says true into a new
    /// compacted segment under a temporary name, fsynced. The payloads and
    /// sequence numbers are copied as they are.
    pub fn stage(
        &self,
        run: &[Sealed],
        mut keep: impl FnMut(&Entry<'_>) -> bool,
    ) -> Result<Staged, LogError> {
        let (first, last) = match (run.first(), run.last()) {
            (Some(first), Some(last)) => (first, last),
            _ => return Err(LogError::Internal("an empty compaction run")),
        };
        let block = Block {
            generation: run.iter().map(|s| s.generation).max().unwrap_or(0) + 1,
            end_seq: last.end_seq,
        };
        let mut out = frame::encode_compacted_header(first.base_seq, block).to_vec();
        let mut moved = Vec::new();
        let (mut kept, mut dropped) = (0u64, 0u64);
        for seg in run {
            self.visit(seg.ordinal, |entry| {
                if !keep(&entry) {
                    dropped += 1;
                    return;
                }
                let new = Loc {
                    segment: first.ordinal,
                    // The output holds less than the run, whose segments
                    // are each under 4 GiB; `plan` keeps runs to one
                    // segment's size.
                    offset: out.len() as u32,
                };
                let flags = Flags {
                    more: false,
                    starts: kept == 0,
                };
                frame::encode_frame(&mut out, entry.seq, entry.payload, flags);
                moved.push((entry.loc, new));
                kept += 1;
            })?;
        }
        if out.len() > u32::MAX as usize {
            return Err(LogError::Internal("a compacted segment over 4 GiB"));
        }
        let fs = &*self.shared.fs;
        let dir = &self.shared.dir;
        let tmp = segment::tmp_path(dir, first.base_seq);
        let written = (|| {
            let mut file = fs
                .create(&tmp)
                .map_err(|e| LogError::io("create", &tmp, e))?;
            file.write_all_at(&out, 0)
                .map_err(|e| LogError::io("write", &tmp, e))?;
            file.sync_all()
                .map_err(|e| LogError::fatal("fsync", &tmp, e))
        })();
        if let Err(e) = written {
            let _ = fs.remove_file(&tmp);
            return Err(e);
        }
        moved.sort_unstable_by_key(|&(old, _)| old);
        Ok(Staged {
            ordinals: run.iter().map(|s| s.ordinal).collect(),
            base_seq: first.base_seq,
            block,
            tmp,
            path: first.path.clone(),
            remove: run[1..].iter().map(|s| s.path.clone()).collect(),
            moved,
            bytes: out.len() as u64,
            input_bytes: run.iter().map(|s| s.file_bytes).sum(),
            kept,
            dropped,
        })
    }

    /// Puts `staged` in place of its run on disk (see the module docs for
    /// the order); readers still read the old segments, whose maps stay
    /// valid, until [`Log::swap_in`]. No lock is taken: the fsyncs here
    /// delay no reader and no appender. A failure before the rename is
    /// durable leaves the log as it was (on disk, the next open finds either
    /// the old segments or the new one, never both).
    pub fn install(&self, staged: Staged) -> Result<Installed, LogError> {
        let fs = &*self.shared.fs;
        let dir = &self.shared.dir;
        if let Err(e) = fs.rename(&staged.tmp, &staged.path) {
            let _ = fs.remove_file(&staged.tmp);
            return Err(LogError::io("rename", &staged.tmp, e));
        }
        // The other files go only once the new one is durably in place.
        fs.sync_dir(dir)
            .map_err(|e| LogError::fatal("fsync directory", dir, e))?;
        let map = Arc::new(segment::map(fs, &staged.path)?);
        for path in &staged.remove {
            // One left behind is skipped and removed at the next open.
            if let Err(e) = fs.remove_file(path) {
                tracing::warn!(segment = %path.display(), error = %e,
                    "could not remove a segment compaction merged; the next start removes it");
            }
        }
        if !staged.remove.is_empty()
            && let Err(e) = fs.sync_dir(dir)
        {
            tracing::warn!(error = %e, "fsync of the log directory after compaction failed; \
                the next start removes what it did not make durable");
        }
        Ok(Installed { staged, map })
    }

    /// Switches readers to an installed compacted segment, calling `remap`
    /// with the function that says where a record of the run lives now
    /// while no reader can read: the caller remaps its own locations there
    /// (under its own lock, which readers of its locations also take).
    pub fn swap_in(
        &self,
        installed: Installed,
        remap: impl FnOnce(&dyn Fn(Loc) -> Loc),
    ) -> Result<(), LogError> {
        let Installed { staged, map } = installed;
        let mut moves = self.shared.moves.write()?;
        let mut segments = self.shared.segments.write()?;
        for (i, &ordinal) in staged.ordinals.iter().enumerate() {
            let seg = segments
                .get_mut(ordinal as usize)
                .ok_or(LogError::Internal("a compaction run names no segment"))?;
            if i == 0 {
                seg.map = Some(map.clone());
                seg.durable_len = staged.bytes;
                seg.generation = staged.block.generation;
                seg.end_seq = Some(staged.block.end_seq);
                seg.base_seq = staged.base_seq;
            } else {
                seg.map = None;
                seg.durable_len = 0;
            }
        }
        moves.epoch += 1;
        moves.ordinals = staged.ordinals;
        moves.moved = staged.moved;
        let moved = &*moves;
        // Every location the caller holds in the run was kept (it checks
        // before installing), so none falls through unchanged.
        remap(&|loc: Loc| moved.translate(loc, moved.epoch - 1).unwrap_or(loc));
        drop(segments);
        drop(moves);
        Ok(())
    }
}

/// A compacted segment in place on disk, mapped, that readers do not read
/// yet ([`Log::swap_in`]).
#[derive(Debug)]
pub struct Installed {
    staged: Staged,
    map: Arc<memmap2::Mmap>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogOptions;

    /// A log of segments of `segment_bytes` holding `n` one-byte-tagged
    /// records, one per batch.
    fn log_with(dir: &std::path::Path, n: u8) -> (Log, Vec<crate::log::Appended>) {
        let (log, _) = Log::open(dir, &LogOptions::with_segment_bytes(200)).unwrap();
        let appended = (0..n)
            .map(|i| log.append_blocking(vec![vec![i; 40]]).unwrap()[0])
            .collect();
        (log, appended)
    }

    #[test]
    fn a_compacted_run_is_read_where_it_moved_and_older_locations_are_translated() {
        let dir = tempfile::tempdir().unwrap();
        let (log, appended) = log_with(dir.path(), 12);
        let sealed = log.sealed().unwrap();
        assert!(sealed.len() >= 3, "{sealed:?}");
        let run = &sealed[..2];
        // Keep the even records.
        let staged = log.stage(run, |e| e.payload[0].is_multiple_of(2)).unwrap();
        assert!(staged.kept > 0 && staged.dropped > 0, "{staged:?}");
        let in_run: Vec<_> = appended.iter().filter(|a| staged.covers(a.loc)).collect();
        for a in &in_run {
            assert_eq!(staged.keeps(a.loc), !a.seq.is_multiple_of(2), "{a:?}");
        }
        let before = log.epoch().unwrap();
        let installed = log.install(staged).unwrap();
        let mut remapped = Vec::new();
        log.swap_in(installed, |f| {
            remapped = appended.iter().map(|a| f(a.loc)).collect();
        })
        .unwrap();
        assert_eq!(log.epoch().unwrap(), before + 1);
        assert_eq!(log.segment_count(), sealed.len() + 1 - 1);
        for (a, now) in appended.iter().zip(&remapped) {
            let tag = (a.seq - 1) as u8;
            let kept = !in_run.iter().any(|r| r.seq == a.seq) || tag.is_multiple_of(2);
            if kept {
                assert_eq!(log.read(*now).unwrap(), vec![tag; 40], "{a:?}");
                // Looked up before the swap: translated.
                assert_eq!(log.read_as_of(a.loc, before).unwrap(), vec![tag; 40]);
            } else {
                assert!(matches!(
                    log.read_as_of(a.loc, before),
                    Err(LogError::NoRecord(_))
                ));
            }
        }
        // The replay sees the kept records once each, in order.
        let mut seqs = vec![];
        log.replay(|e| {
            seqs.push(e.seq);
            Ok::<(), LogError>(())
        })
        .unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        // A second compaction: locations from before the first are stale.
        let sealed = log.sealed().unwrap();
        let staged = log.stage(&sealed[..1], |_| true).unwrap();
        let installed = log.install(staged).unwrap();
        log.swap_in(installed, |_| {}).unwrap();
        let kept = appended.last().unwrap();
        assert!(matches!(
            log.read_as_of(appended[0].loc, before),
            Err(LogError::Moved(_))
        ));
        assert_eq!(log.read_as_of(kept.loc, before + 2).unwrap(), vec![11; 40]);
        log.close();
        // Reopened: the same records, nothing left over.
        let (log, _) = Log::open(dir.path(), &LogOptions::with_segment_bytes(200)).unwrap();
        let mut again = vec![];
        log.replay(|e| {
            again.push(e.seq);
            Ok::<(), LogError>(())
        })
        .unwrap();
        assert_eq!(again, seqs);
    }
}
