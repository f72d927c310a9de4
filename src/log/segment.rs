//! Segment files on disk: naming, crash-safe creation, listing, memory maps.
//! All IO goes through the [`FileSystem`] trait.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::LogError;
use super::frame::{self, HEADER_LEN};
use super::fs::{FileSystem, SegmentIo};
use super::scan::Corruption;

const SUFFIX: &str = ".seg";
const TMP_SUFFIX: &str = ".seg.tmp";
/// What follows a segment's name in the name of a torn tail kept aside:
/// `<segment>.torn-<offset>` (see [`super::repair::keep_torn_tail`]).
pub const TORN_INFIX: &str = ".torn-";

/// The file name of the segment whose first frame has `base_seq`.
pub fn file_name(base_seq: u64) -> String {
    format!("{base_seq:020}{SUFFIX}")
}

/// The temporary name a segment with `base_seq` is written under before
/// it is renamed into place; one left behind is removed at the next open.
pub fn tmp_path(dir: &Path, base_seq: u64) -> PathBuf {
    dir.join(format!("{base_seq:020}{TMP_SUFFIX}"))
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
pub fn list(fs: &dyn FileSystem, dir: &Path, clean: bool) -> Result<Vec<SegmentFile>, LogError> {
    let entries = fs
        .list(dir)
        .map_err(|e| LogError::io("read directory", dir, e))?;
    let mut out = Vec::new();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) {
            if clean {
                fs.remove_file(&path)
                    .map_err(|e| LogError::io("remove", &path, e))?;
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

/// The torn tails kept aside in `dir` (files named `<segment>.torn-<offset>`,
/// which [`list`] skips), by name.
pub fn list_torn(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut out: Vec<PathBuf> = fs
        .list(dir)
        .map_err(|e| LogError::io("read directory", dir, e))?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(&format!("{SUFFIX}{TORN_INFIX}")))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Creates a new segment crash-safely: the header is written to a
/// temporary file which is fsynced, renamed into place, and then the
/// directory is fsynced. After a crash the segment either exists with a
/// whole header or not at all. A failure before the rename leaves at most a
/// temporary file, removed here or at the next open; the log stays as it was.
pub fn create(
    fs: &dyn FileSystem,
    dir: &Path,
    base_seq: u64,
) -> Result<(PathBuf, Box<dyn SegmentIo>), LogError> {
    let (path, file, ()) = create_then(fs, dir, base_seq, |_, _| Ok(()))?;
    Ok((path, file))
}

/// [`create`], with the new segment mapped `map_len` bytes ahead for the
/// readers *before* it is renamed into place: once it is in place the
/// writer must switch to it (a later batch in the old segment would run
/// past the sequence number the new one is named after), so nothing that
/// can fail without being fatal may come after the rename.
pub fn create_mapped(
    fs: &dyn FileSystem,
    dir: &Path,
    base_seq: u64,
    map_len: usize,
) -> Result<(PathBuf, Box<dyn SegmentIo>, Mmap), LogError> {
    create_then(fs, dir, base_seq, |file, tmp| {
        file.map_ahead(map_len)
            .map_err(|e| LogError::io("mmap", tmp, e))
    })
}

/// Creates the segment, running `staged` on the fsynced temporary file
/// before the rename; a failure there is handled like one of the header's.
fn create_then<T>(
    fs: &dyn FileSystem,
    dir: &Path,
    base_seq: u64,
    staged: impl FnOnce(&dyn SegmentIo, &Path) -> Result<T, LogError>,
) -> Result<(PathBuf, Box<dyn SegmentIo>, T), LogError> {
    let path = dir.join(file_name(base_seq));
    let tmp = tmp_path(dir, base_seq);
    let prepared = (|| {
        let mut file = fs
            .create(&tmp)
            .map_err(|e| LogError::io("create", &tmp, e))?;
        file.write_all_at(&frame::encode_header(base_seq), 0)
            .map_err(|e| LogError::io("write", &tmp, e))?;
        file.sync_all()
            .map_err(|e| LogError::fatal("fsync", &tmp, e))?;
        let extra = staged(&*file, &tmp)?;
        Ok::<_, LogError>((file, extra))
    })();
    let (file, extra) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            let _ = fs.remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = fs.rename(&tmp, &path) {
        let _ = fs.remove_file(&tmp);
        return Err(LogError::io("rename", &tmp, e));
    }
    fs.sync_dir(dir)
        .map_err(|e| LogError::fatal("fsync directory", dir, e))?;
    Ok((path, file, extra))
}

/// Maps a segment file read-only.
pub fn map(fs: &dyn FileSystem, path: &Path) -> Result<Mmap, LogError> {
    fs.map(path).map_err(|e| LogError::io("mmap", path, e))
}

/// Checks that a mapped segment has a valid header whose base sequence
/// number matches its file name, and returns its format version.
pub fn check_header(bytes: &[u8], seg: &SegmentFile) -> Result<u32, Corruption> {
    match frame::decode_header(bytes) {
        Ok(h) if h.base_seq == seg.base_seq => Ok(h.version),
        Ok(frame::Header { base_seq: base, .. }) => Err(Corruption {
            path: seg.path.clone(),
            offset: 16,
            reason: format!(
                "header says base sequence number {base}, file name says {}",
                seg.base_seq
            ),
        }),
        Err(e) => Err(Corruption {
            path: seg.path.clone(),
            offset: 0,
            reason: e.to_string(),
        }),
    }
}

/// Length of a segment with a header and no frames.
pub const EMPTY_LEN: u64 = HEADER_LEN as u64;
