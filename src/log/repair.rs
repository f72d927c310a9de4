//! Mending a damaged log: the repair plan and its execution.
//!
//! A [`Plan`] is made from a [`PartialScan`] and the first [`Finding`] in
//! it: cut the damaged segment back to its last whole batch, and set every
//! later segment aside (renamed to `<name>.seg.broken`, which the log
//! ignores). It also counts the records with valid checksums that would
//! leave the log, so an operator sees the cost before agreeing to it.
//! [`Plan::execute`] carries it out through the [`FileSystem`] trait and
//! cuts with [`truncate_segment`], the one truncation recovery uses.
//!
//! Whether to carry out a plan (a torn tail always; anything else only when
//! forced) and how to word it is for the caller (`chime log repair`).
//!
//! Nothing is destroyed: repair copies the segment it cuts whole to
//! `<name>.seg.broken` first, and the torn tail [`super::Log::open`] cuts is
//! first kept in `<name>.seg.torn-<offset>` by [`keep_torn_tail`]. The log
//! ignores both; `chime log stats` and `verify` list the torn ones.

use std::path::{Path, PathBuf};

use super::frame::{self, FRAME_HEADER_LEN, HEADER_LEN};
use super::fs::FileSystem;
use super::scan::{Finding, PartialScan};
use super::segment::{self, SegmentFile};
use super::{LogError, truncate_segment};

/// Frames with valid checksums found in bytes that are about to be dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frames {
    pub count: u64,
    /// The first and last sequence numbers seen.
    pub seqs: Option<(u64, u64)>,
}

impl Frames {
    pub fn add(&mut self, other: Frames) {
        self.count += other.count;
        self.seqs = match (self.seqs, other.seqs) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (a, b) => a.or(b),
        };
    }
}

/// Counts the frames with valid checksums in `bytes[from..]`, resyncing
/// past damage. Only frames whose sequence number is at or after the last
/// one found, and could follow it within the segment, are tried.
fn count_frames(bytes: &[u8], from: usize, mut min_seq: u64) -> Frames {
    let mut found = Frames::default();
    // No more frames fit in the segment than this, so no later sequence
    // number can be further ahead.
    let max_gap = (bytes.len() / (FRAME_HEADER_LEN + 1)) as u64;
    let mut at = from.max(HEADER_LEN);
    while let Some(f) = frame::resync(bytes, at, min_seq..=min_seq.saturating_add(max_gap)) {
        found.add(Frames {
            count: 1,
            seqs: Some((f.seq, f.seq)),
        });
        min_seq = f.seq + 1;
        at = f.end;
    }
    found
}

/// A segment to cut back to its last whole batch before the damage.
#[derive(Debug)]
pub struct Cut {
    pub path: PathBuf,
    /// Bytes kept.
    pub keep: u64,
    /// The segment's length now.
    pub len: u64,
    /// Frames with valid checksums in the part cut off.
    pub lost: Frames,
    /// The last sequence number left in the segment.
    pub last_kept: Option<u64>,
}

/// A segment to set aside whole.
#[derive(Debug)]
pub struct Aside {
    pub path: PathBuf,
    pub bytes: u64,
    pub frames: Frames,
}

/// What a repair will do: cut one segment, set the later ones aside.
#[derive(Debug)]
pub struct Plan {
    /// The first damage, what the plan mends.
    pub damage: Finding,
    pub cut: Option<Cut>,
    pub aside: Vec<Aside>,
    /// Where the log will end, if anything is left.
    pub ends_at: Option<u64>,
}

/// One step of [`Plan::execute`], reported as soon as it is done.
#[derive(Debug)]
pub enum Step<'a> {
    /// The segment to cut was copied to `to`, and the copy is durable.
    Copied { from: &'a Path, to: &'a Path },
    /// A segment was renamed out of the log.
    SetAside { from: &'a Path, to: &'a Path },
    /// Every segment of the plan's `aside` is set aside (none, possibly).
    AllSetAside,
    /// The segment was cut back to `keep` bytes, dropping `dropped`.
    Cut {
        path: &'a Path,
        keep: u64,
        dropped: u64,
    },
}

impl Plan {
    /// The plan for a scan, or `None` when there is no damage.
    pub fn of(p: &PartialScan, fs: &dyn FileSystem) -> Result<Option<Plan>, LogError> {
        let Some(damage) = p.findings().into_iter().next() else {
            return Ok(None);
        };
        let segments = &p.scan.segments;
        let damaged = segments.iter().position(|s| s.scan.damage.is_some());
        let mut cut = None;
        let mut aside = Vec::new();
        let (first_aside, ends_at) = match damaged {
            Some(i) => {
                let s = &segments[i];
                let keep = s
                    .scan
                    .damage
                    .as_ref()
                    .map_or(s.file_len, |d| d.offset as u64);
                let after = s.scan.last_seq.map_or(s.file.base_seq, |q| q + 1);
                cut = Some(Cut {
                    path: s.file.path.clone(),
                    keep,
                    len: s.file_len,
                    lost: count_frames(s.bytes(), keep as usize, after),
                    last_kept: s.scan.last_seq,
                });
                (
                    i + 1,
                    segments[..=i].iter().filter_map(|s| s.scan.last_seq).max(),
                )
            }
            None => (
                segments.len(),
                segments.iter().filter_map(|s| s.scan.last_seq).max(),
            ),
        };
        for s in &segments[first_aside..] {
            aside.push(Aside {
                path: s.file.path.clone(),
                bytes: s.file_len,
                frames: count_frames(s.bytes(), HEADER_LEN, s.file.base_seq),
            });
        }
        for f in p.stopped.iter().flat_map(|s| &s.unscanned) {
            aside.push(aside_of_file(fs, f)?);
        }
        Ok(Some(Plan {
            damage,
            cut,
            aside,
            ends_at,
        }))
    }

    /// Whether this is the torn tail recovery would cut on its own.
    pub fn is_torn_tail(&self) -> bool {
        self.damage.is_torn_tail() && self.aside.is_empty()
    }

    /// Carries out the plan in `log_dir`, calling `step` after each step.
    /// Order matters for a crash half way: later segments are set aside
    /// newest first, so what is left is always a run of segments from the
    /// oldest; the cut comes last, after a copy of the segment is durable.
    /// Running repair again after a crash finishes the job. The scan the
    /// plan came from must be dropped first: its maps cover the files.
    pub fn execute<E: From<LogError>>(
        &self,
        fs: &dyn FileSystem,
        log_dir: &Path,
        mut step: impl FnMut(Step<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(c) = &self.cut {
            let copy = broken_name(fs, &c.path);
            fs.copy(&c.path, &copy)
                .map_err(|e| LogError::io("copy", &c.path, e))?;
            fs.sync_file(&copy)
                .map_err(|e| LogError::io("fsync", &copy, e))?;
            step(Step::Copied {
                from: &c.path,
                to: &copy,
            })?;
        }
        for a in self.aside.iter().rev() {
            let to = broken_name(fs, &a.path);
            fs.rename(&a.path, &to)
                .map_err(|e| LogError::io("rename", &a.path, e))?;
            step(Step::SetAside {
                from: &a.path,
                to: &to,
            })?;
        }
        step(Step::AllSetAside)?;
        fs.sync_dir(log_dir)
            .map_err(|e| LogError::io("fsync directory", log_dir, e))?;
        if let Some(c) = &self.cut {
            truncate_segment(fs, &c.path, c.keep)?;
            step(Step::Cut {
                path: &c.path,
                keep: c.keep,
                dropped: c.len - c.keep,
            })?;
        }
        Ok(())
    }
}

/// Copies the bytes about to be cut off a segment's tail, `tail`, which
/// start at byte `offset` of `segment`, to `<segment>.torn-<offset>` (or
/// `.torn-<offset>.N` when a different tail was kept under that name) and
/// makes the copy and its directory entry durable, before anything is cut.
/// A copy already there with the same bytes (a crash after the copy and
/// before the cut) is reused. Returns where the bytes are.
pub fn keep_torn_tail(
    fs: &dyn FileSystem,
    log_dir: &Path,
    segment: &Path,
    offset: u64,
    tail: &[u8],
) -> Result<PathBuf, LogError> {
    let mut base = segment.as_os_str().to_owned();
    base.push(format!("{}{offset}", segment::TORN_INFIX));
    for n in 0u32.. {
        let mut name = base.clone();
        if n > 0 {
            name.push(format!(".{n}"));
        }
        let path = PathBuf::from(name);
        if fs.metadata(&path).is_ok() {
            let same = segment::map(fs, &path).is_ok_and(|m| m[..] == *tail);
            if !same {
                continue;
            }
        } else {
            let mut file = fs
                .create(&path)
                .map_err(|e| LogError::io("create", &path, e))?;
            file.write_all_at(tail, 0)
                .map_err(|e| LogError::io("write", &path, e))?;
            file.sync_all()
                .map_err(|e| LogError::fatal("fsync", &path, e))?;
        }
        fs.sync_dir(log_dir)
            .map_err(|e| LogError::fatal("fsync directory", log_dir, e))?;
        return Ok(path);
    }
    Err(LogError::Internal("no free name for a torn tail's copy"))
}

fn aside_of_file(fs: &dyn FileSystem, f: &SegmentFile) -> Result<Aside, LogError> {
    let bytes = fs
        .metadata(&f.path)
        .map_err(|e| LogError::io("stat", &f.path, e))?
        .len();
    // A segment that cannot even be mapped is still set aside whole; only
    // the count of what is in it is lost.
    let frames = segment::map(fs, &f.path)
        .map(|map| count_frames(&map, HEADER_LEN, f.base_seq))
        .unwrap_or_default();
    Ok(Aside {
        path: f.path.clone(),
        bytes,
        frames,
    })
}

/// `<path>.broken`, or `<path>.broken.N` if that is taken: the name a file
/// is kept under when repair changes or removes it.
fn broken_name(fs: &dyn FileSystem, path: &Path) -> PathBuf {
    let base = path.as_os_str().to_owned();
    (0u32..)
        .map(|n| {
            let mut name = base.clone();
            name.push(".broken");
            if n > 0 {
                name.push(format!(".{n}"));
            }
            PathBuf::from(name)
        })
        .find(|p| fs.metadata(p).is_err())
        .unwrap_or_else(|| path.with_extension("seg.broken"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_frames_resyncs_past_damage_and_zero_fill() {
        let mut bytes = frame::encode_header(5).to_vec();
        for seq in 5..10 {
            frame::encode_frame(&mut bytes, seq, b"payload", frame::Flags::default());
        }
        let clean = count_frames(&bytes, HEADER_LEN, 5);
        assert_eq!(
            clean,
            Frames {
                count: 5,
                seqs: Some((5, 9))
            }
        );
        // Damage the second frame; the other four are still found.
        bytes[HEADER_LEN + 23 + FRAME_HEADER_LEN + 2] ^= 0xff;
        bytes.extend_from_slice(&[0u8; 4096]);
        let damaged = count_frames(&bytes, HEADER_LEN, 5);
        assert_eq!(damaged.count, 4);
        assert_eq!(damaged.seqs, Some((5, 9)));
    }
}
