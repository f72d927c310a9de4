//! Snapshot files: the state rebuilt by replay, written at a sequence
//! number so that a restart restores it and replays only the records
//! after that number.
//!
//! This module owns the files of `DATA/snapshots/` and their format; like
//! the log, it knows bytes and sequence numbers, not what the bytes mean.
//! The caller encodes its state into a body and decodes it back, and says
//! (through the `accept` closure of [`SnapshotStore::restore`]) whether a
//! body that passed the file's own checks is one it can use.
//!
//! A snapshot is written to `<seq>.snap.tmp`, fsynced, renamed to
//! `<seq>.snap`, and the directory fsynced: a crash at any step leaves
//! either the whole new file or none (a leftover `.tmp` is removed at the
//! next open, since it was never renamed and so never trusted). A snapshot
//! that fails its checks is *set aside*, renamed to `<seq>.snap.bad` (or
//! `.bad-2`, …), never deleted, and the next older one is tried; with none
//! left, the caller replays the whole log. Format: docs/log-format.md,
//! "Snapshots".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::IoError;
use crate::log::fs::{FileSystem, create_dir_durably};

/// `magic`, the first bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"CHIMESNP";
/// The file format version this build writes and reads.
pub const VERSION: u32 = 1;
/// `magic version flags seq len body_crc header_crc`.
pub const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 4 + 4;
/// Records applied between two snapshots while serving, by default
/// (`--snapshot-every`): a restart replays at most about this many (under
/// a second at the replay rates of docs/performance.md).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1_000_000;
/// How many valid snapshots are kept: the newest, and one before it in
/// case the newest cannot be used by a later build.
pub const KEEP: usize = 2;

const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".snap.tmp";

/// Errors writing or reading snapshots. A snapshot that fails its checks
/// is not an error: it is set aside (see [`Restored::set_aside`]).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why a snapshot file was not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("shorter than a snapshot header ({0} bytes)")]
    Short(usize),
    #[error("not a snapshot file (bad magic)")]
    Magic,
    #[error("header checksum mismatch")]
    HeaderCrc,
    #[error("format version {0} is not known to this build (it reads {VERSION})")]
    Version(u32),
    #[error("its name says seq {name} but its header says {header}")]
    NameMismatch { name: u64, header: u64 },
    #[error("body is {found} bytes, the header says {expected}")]
    Length { expected: u64, found: u64 },
    #[error("body checksum mismatch")]
    BodyCrc,
    #[error("cannot be read: {0}")]
    Unreadable(String),
    #[error("{0}")]
    Refused(String),
}

/// A snapshot file that was not used and has been renamed out of the way.
#[derive(Clone, Debug)]
pub struct SetAside {
    pub seq: u64,
    pub moved_to: PathBuf,
    pub why: Invalid,
}

/// What [`SnapshotStore::restore`] found.
#[derive(Debug)]
pub struct Restored<T> {
    /// The newest snapshot that passed every check, with the caller's
    /// decoded state, or `None` (replay everything).
    pub restored: Option<(u64, T)>,
    /// Snapshots newer than it that failed a check, newest first.
    pub set_aside: Vec<SetAside>,
}

/// One snapshot file, as `chime log stats` lists them.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

/// The snapshot directory.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
}

/// Where a data directory keeps its snapshots.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

impl SnapshotStore {
    /// Opens (creating it durably) the snapshot directory `dir`, and
    /// removes temporary files a crash left behind.
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path) -> Result<SnapshotStore, SnapshotError> {
        create_dir_durably(fs.as_ref(), dir)?;
        let store = SnapshotStore {
            fs,
            dir: dir.to_path_buf(),
        };
        for path in store.entries()? {
            if name_of(&path).is_some_and(|n| n.ends_with(TMP_SUFFIX)) {
                store
                    .fs
                    .remove_file(&path)
                    .map_err(|e| IoError::new("remove", &path, e))?;
            }
        }
        Ok(store)
    }

    /// Opens an existing snapshot directory to read it, creating and
    /// removing nothing (for `chime log stats` and `verify`, which may run
    /// beside a server). A missing directory holds no snapshots.
    pub fn open_read_only(fs: Arc<dyn FileSystem>, dir: &Path) -> SnapshotStore {
        SnapshotStore {
            fs,
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `body` as the snapshot at `seq`, durably, then removes all
    /// but the newest [`KEEP`] snapshots. Returns the file's path.
    pub fn write(&self, seq: u64, body: &[u8]) -> Result<PathBuf, SnapshotError> {
        let path = self.dir.join(file_name(seq));
        let tmp = self.dir.join(format!("{seq:020}{TMP_SUFFIX}"));
        let mut bytes = header(seq, body);
        bytes.extend_from_slice(body);
        {
            let mut file = self
                .fs
                .create(&tmp)
                .map_err(|e| IoError::new("create", &tmp, e))?;
            file.write_all_at(&bytes, 0)
                .map_err(|e| IoError::new("write", &tmp, e))?;
            file.sync_all()
                .map_err(|e| IoError::new("fsync", &tmp, e))?;
        }
        self.fs
            .rename(&tmp, &path)
            .map_err(|e| IoError::new("rename", &tmp, e))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| IoError::new("fsync directory", &self.dir, e))?;
        self.prune()?;
        Ok(path)
    }

    /// Every snapshot file (named `<seq>.snap`), oldest first.
    pub fn list(&self) -> Result<Vec<SnapshotFile>, SnapshotError> {
        let mut found = Vec::new();
        for path in self.entries()? {
            let Some(seq) = name_of(&path).and_then(seq_of_name) else {
                continue;
            };
            let bytes = self
                .fs
                .metadata(&path)
                .map_err(|e| IoError::new("stat", &path, e))?
                .len();
            found.push(SnapshotFile { seq, path, bytes });
        }
        found.sort_by_key(|f| f.seq);
        Ok(found)
    }

    /// The snapshots set aside (`<name>.snap.bad`, `.bad-N`), by name.
    pub fn list_set_aside(&self) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut found: Vec<PathBuf> = self
            .entries()?
            .into_iter()
            .filter(|p| name_of(p).is_some_and(|n| n.contains(".snap.bad")))
            .collect();
        found.sort();
        Ok(found)
    }

    /// Checks the snapshot file at `path` and returns its sequence number
    /// and body; reads only.
    pub fn read(&self, file: &SnapshotFile) -> Result<(u64, Vec<u8>), Invalid> {
        let map = self.map(file)?;
        let body = check(&map, file.seq)?;
        Ok((file.seq, body.to_vec()))
    }

    fn map(&self, file: &SnapshotFile) -> Result<memmap2::Mmap, Invalid> {
        self.fs
            .map(&file.path)
            .map_err(|e| Invalid::Unreadable(e.to_string()))
    }

    /// Restores the newest snapshot that passes the file's checks and that
    /// `accept` decodes (`accept` gets the seq and body and returns the
    /// state, or why it cannot use it: an unknown schema, a seq past the
    /// log's end). Each newer one that fails is set aside, then the next
    /// older one is tried.
    pub fn restore<T>(
        &self,
        mut accept: impl FnMut(u64, &[u8]) -> Result<T, String>,
    ) -> Result<Restored<T>, SnapshotError> {
        let mut set_aside = Vec::new();
        for file in self.list()?.into_iter().rev() {
            // Decoded straight from the map: a copy of the body would be
            // freed right after, and the allocator keeps memory so freed.
            let map = self.map(&file);
            let checked = map
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|map| check(map, file.seq).map(|body| (file.seq, body)));
            let why = match checked {
                Ok((seq, body)) => match accept(seq, body) {
                    Ok(state) => {
                        return Ok(Restored {
                            restored: Some((seq, state)),
                            set_aside,
                        });
                    }
                    Err(reason) => Invalid::Refused(reason),
                },
                Err(why) => why,
            };
            let moved_to = self.set_aside(&file.path)?;
            tracing::warn!(
                snapshot = %file.path.display(),
                moved_to = %moved_to.display(),
                reason = %why,
                "a snapshot failed its check and was set aside; trying an older one"
            );
            set_aside.push(SetAside {
                seq: file.seq,
                moved_to,
                why,
            });
        }
        Ok(Restored {
            restored: None,
            set_aside,
        })
    }

    /// Renames a snapshot that failed its check to the first free
    /// `<name>.bad`, `<name>.bad-2`, …, durably.
    fn set_aside(&self, path: &Path) -> Result<PathBuf, SnapshotError> {
        let name = name_of(path).unwrap_or("snapshot").to_owned();
        let taken: Vec<PathBuf> = self.entries()?;
        let free = (1..)
            .map(|n| match n {
                1 => self.dir.join(format!("{name}.bad")),
                n => self.dir.join(format!("{name}.bad-{n}")),
            })
            .find(|candidate| !taken.contains(candidate))
            .unwrap_or_else(|| self.dir.join(format!("{name}.bad")));
        self.fs
            .rename(path, &free)
            .map_err(|e| IoError::new("rename", path, e))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| IoError::new("fsync directory", &self.dir, e))?;
        Ok(free)
    }

    /// Removes valid-looking snapshots beyond the newest [`KEEP`]. Files
    /// set aside are never removed.
    fn prune(&self) -> Result<(), SnapshotError> {
        let files = self.list()?;
        let old = files.len().saturating_sub(KEEP);
        for file in &files[..old] {
            self.fs
                .remove_file(&file.path)
                .map_err(|e| IoError::new("remove", &file.path, e))?;
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<PathBuf>, SnapshotError> {
        match self.fs.list(&self.dir) {
            Ok(paths) => Ok(paths),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(IoError::new("list", &self.dir, e).into()),
        }
    }
}

/// `<seq, 20 digits>.snap`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

fn name_of(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

/// The seq of a file named `<20 digits>.snap`; `None` for any other name
/// (a `.tmp`, a `.bad`, something an operator left).
fn seq_of_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The header of a snapshot of `body` at `seq`.
fn header(seq: u64, body: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN + body.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&seq.to_le_bytes());
    h.extend_from_slice(&(body.len() as u64).to_le_bytes());
    h.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a whole snapshot file named for `named_seq`, returning its body.
pub fn check(bytes: &[u8], named_seq: u64) -> Result<&[u8], Invalid> {
    if bytes.len() < HEADER_LEN {
        return Err(Invalid::Short(bytes.len()));
    }
    let (head, body) = bytes.split_at(HEADER_LEN);
    if &head[..8] != MAGIC {
        return Err(Invalid::Magic);
    }
    let u32_at = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    if crc32fast::hash(&head[..HEADER_LEN - 4]) != u32_at(HEADER_LEN - 4) {
        return Err(Invalid::HeaderCrc);
    }
    let version = u32_at(8);
    if version != VERSION {
        return Err(Invalid::Version(version));
    }
    let seq = u64_at(16);
    if seq != named_seq {
        return Err(Invalid::NameMismatch {
            name: named_seq,
            header: seq,
        });
    }
    let expected = u64_at(24);
    if body.len() as u64 != expected {
        return Err(Invalid::Length {
            expected,
            found: body.len() as u64,
        });
    }
    if crc32fast::hash(body) != u32_at(32) {
        return Err(Invalid::BodyCrc);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fs::StdFs;

    fn store(dir: &Path) -> SnapshotStore {
        SnapshotStore::open(Arc::new(StdFs), &snapshot_dir(dir)).unwrap()
    }

    fn names(store: &SnapshotStore) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    fn accept_all(seq: u64, body: &[u8]) -> Result<(u64, Vec<u8>), String> {
        Ok((seq, body.to_vec()))
    }

    #[test]
    fn writes_restores_the_newest_and_keeps_two() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        assert!(s.restore(accept_all).unwrap().restored.is_none());
        for seq in [10, 20, 30] {
            s.write(seq, format!("state at {seq}").as_bytes()).unwrap();
        }
        assert_eq!(names(&s), [file_name(20), file_name(30)]);
        let r = s.restore(accept_all).unwrap();
        assert_eq!(r.restored.unwrap().1, (30, b"state at 30".to_vec()));
        assert!(r.set_aside.is_empty());
    }

    #[test]
    fn a_damaged_or_refused_snapshot_is_set_aside_and_an_older_one_used() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.write(20, b"older").unwrap();
        let newest = s.write(30, b"newest").unwrap();
        // Flip one byte of the body: the body checksum catches it.
        let mut bytes = std::fs::read(&newest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&newest, &bytes).unwrap();
        let r = s.restore(accept_all).unwrap();
        assert_eq!(r.restored.unwrap().1, (20, b"older".to_vec()));
        assert_eq!(r.set_aside.len(), 1);
        assert_eq!(r.set_aside[0].why, Invalid::BodyCrc);
        assert_eq!(names(&s), [file_name(20), format!("{}.bad", file_name(30))]);

        // The caller refuses the older one too (say, its schema is unknown):
        // set aside beside the first, never deleted; full replay.
        let r = s
            .restore(|_, _| Err::<(), _>("unknown schema 9".to_owned()))
            .unwrap();
        assert!(r.restored.is_none());
        assert_eq!(
            r.set_aside[0].why,
            Invalid::Refused("unknown schema 9".into())
        );
        assert_eq!(
            names(&s),
            [
                format!("{}.bad", file_name(20)),
                format!("{}.bad", file_name(30))
            ]
        );
        // A second bad snapshot of the same seq gets its own name.
        s.write(30, b"again").unwrap();
        std::fs::write(s.dir().join(file_name(30)), b"CHIMESNP").unwrap();
        let r = s.restore(accept_all).unwrap();
        assert!(r.restored.is_none());
        assert!(names(&s).contains(&format!("{}.bad-2", file_name(30))));
    }

    #[test]
    fn every_check_of_the_format_fails_on_its_damage() {
        let body = b"body bytes";
        let mut good = header(7, body);
        good.extend_from_slice(body);
        assert_eq!(check(&good, 7).unwrap(), body);
        assert_eq!(check(&good[..10], 7), Err(Invalid::Short(10)));
        assert_eq!(
            check(&good, 8),
            Err(Invalid::NameMismatch { name: 8, header: 7 })
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(check(&bad, 7), Err(Invalid::Magic));
        let mut bad = good.clone();
        bad[17] ^= 1;
        assert_eq!(check(&bad, 7), Err(Invalid::HeaderCrc));
        assert_eq!(
            check(&good[..good.len() - 1], 7),
            Err(Invalid::Length {
                expected: body.len() as u64,
                found: body.len() as u64 - 1
            })
        );
        let mut bad = good.clone();
        bad[HEADER_LEN] ^= 1;
        assert_eq!(check(&bad, 7), Err(Invalid::BodyCrc));
        // A version this build does not know, with a header checksum that
        // matches it.
        let mut future = good[..HEADER_LEN - 4].to_vec();
        future[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&future);
        future.extend_from_slice(&crc.to_le_bytes());
        future.extend_from_slice(body);
        assert_eq!(check(&future, 7), Err(Invalid::Version(2)));
    }

    #[test]
    fn a_leftover_temporary_file_is_removed_at_open_and_never_restored() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.write(5, b"kept").unwrap();
        std::fs::write(s.dir().join(format!("{:020}{TMP_SUFFIX}", 9)), b"half").unwrap();
        std::fs::write(s.dir().join("notes.txt"), b"an operator's").unwrap();
        let s = store(tmp.path());
        assert_eq!(names(&s), [file_name(5), "notes.txt".to_owned()]);
        assert_eq!(s.restore(accept_all).unwrap().restored.unwrap().0, 5);
    }
}
