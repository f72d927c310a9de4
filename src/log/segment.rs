//! Segment files on disk: naming, crash-safe creation, listing, memory maps.
//!
//! This is the only module allowed `unsafe`, for the memory map.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::LogError;
use super::frame::{self, HEADER_LEN};

const SUFFIX: &str = ".seg";
const TMP_SUFFIX: &str = ".seg.tmp";

/// The file name of the segment whose first frame has `base_seq`.
pub fn file_name(base_seq: u64) -> String {
    format!("{base_seq:020}{SUFFIX}")
}

/// A segment file found in the log directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub base_seq: u64,
    pub path: PathBuf,
}

/// Lists the segments in `dir`, oldest first. Leftover `.seg.tmp` files (a
/// creation the process did not finish) are removed when `clean` is set:
/// they were never renamed into place, so they hold nothing acknowledged.
pub fn list(dir: &Path, clean: bool) -> Result<Vec<SegmentFile>, LogError> {
    let entries = fs::read_dir(dir).map_err(|e| LogError::io("read directory", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("read directory", dir, e))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) {
            if clean {
                fs::remove_file(&path).map_err(|e| LogError::io("remove", &path, e))?;
            }
            continue;
        }
        let Some(stem) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(base_seq) if stem.len() == 20 => out.push(SegmentFile { base_seq, path }),
            _ => {
                return Err(LogError::Corruption {
                    path,
                    offset: 0,
                    reason: "segment file name is not a 20-digit sequence number".into(),
                });
            }
        }
    }
    out.sort_by_key(|s| s.base_seq);
    Ok(out)
}

/// Creates a new segment crash-safely: the header is written to a
/// temporary file which is fsynced, renamed into place, and then the
/// directory is fsynced. After a crash the segment either exists with a
/// whole header or not at all.
pub fn create(dir: &Path, base_seq: u64) -> Result<(PathBuf, File), LogError> {
    let path = dir.join(file_name(base_seq));
    let tmp = dir.join(format!("{base_seq:020}{TMP_SUFFIX}"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| LogError::io("create", &tmp, e))?;
    file.write_all(&frame::encode_header(base_seq))
        .map_err(|e| LogError::io("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| LogError::fatal("fsync", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| LogError::io("rename", &tmp, e))?;
    sync_dir(dir)?;
    Ok((path, file))
}

/// Fsyncs a directory so that entries created or renamed in it survive a
/// crash.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::fatal("fsync directory", dir, e))
}

/// Maps a segment file read-only.
pub fn map(path: &Path) -> Result<Mmap, LogError> {
    let file = File::open(path).map_err(|e| LogError::io("open", path, e))?;
    map_file(&file, path)
}

/// Maps an open segment file read-only, `len` bytes from its start. `len`
/// may reach past the end of the file: the active segment is mapped ahead
/// so that readers see appended frames without a new map. Only bytes below
/// the durable length, which lie inside the file, are ever read.
pub fn map_ahead(file: &File, path: &Path, len: usize) -> Result<Mmap, LogError> {
    // SAFETY: as for `map_file`; pages past the end of the file are never
    // touched, because readers stop at the durable length.
    unsafe { memmap2::MmapOptions::new().len(len).map(file) }
        .map_err(|e| LogError::io("mmap", path, e))
}

/// Maps an open segment file read-only.
pub fn map_file(file: &File, path: &Path) -> Result<Mmap, LogError> {
    // SAFETY: the map is read-only and chime never rewrites bytes of a
    // segment that a reader can reach: frames are only appended, and the one
    // truncation (recovery of a torn tail, or cutting back a failed write)
    // only removes bytes past what any reader was handed. The data-dir lock
    // keeps other chime processes that write (serve, log repair) out. A
    // process outside chime that truncates the file could still make reads
    // fault; that is documented in docs/log-format.md.
    unsafe { Mmap::map(file) }.map_err(|e| LogError::io("mmap", path, e))
}

/// Checks that a mapped segment has a valid header whose base sequence
/// number matches its file name.
pub fn check_header(bytes: &[u8], seg: &SegmentFile) -> Result<(), LogError> {
    match frame::decode_header(bytes) {
        Ok(base) if base == seg.base_seq => Ok(()),
        Ok(base) => Err(LogError::Corruption {
            path: seg.path.clone(),
            offset: 16,
            reason: format!(
                "header says base sequence number {base}, file name says {}",
                seg.base_seq
            ),
        }),
        Err(e) => Err(LogError::Corruption {
            path: seg.path.clone(),
            offset: 0,
            reason: e.to_string(),
        }),
    }
}

/// Length of a segment with a header and no frames.
pub const EMPTY_LEN: u64 = HEADER_LEN as u64;
