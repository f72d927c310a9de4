//! The file system under the log, behind a trait so tests can swap in one
//! that fails or forgets on purpose (see `tests/` for the fault-injecting
//! implementation). Every byte the log writes and every fsync it makes goes
//! through here, repair's copies and renames included; reads go through
//! memory maps of the same files. The data directory (`crate::datadir`)
//! creates and syncs its directory through here too.
//!
//! Everything created here is private to chime's user, whatever the umask:
//! directories [`DIR_MODE`] (0700), files [`FILE_MODE`] (0600). The log
//! holds webhook URLs, headers and payloads, which are nobody else's.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::IoError;

/// The mode of every directory chime creates: its owner's alone.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file chime creates (segments, set-aside copies, the
/// data directory's lock): readable and writable by its owner alone.
pub const FILE_MODE: u32 = 0o600;

/// Creates (or truncates) `path` for reading and writing with
/// [`FILE_MODE`], set explicitly after opening: the mode given to `open`
/// only applies to a new file, and the umask may have taken bits off it.
pub fn create_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// The operations the log needs from a file system.
pub trait FileSystem: Send + Sync + std::fmt::Debug + 'static {
    /// Creates `dir` and its parents, each new one with [`DIR_MODE`].
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The paths of the entries in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Creates (or truncates) a file for reading and writing, with
    /// [`FILE_MODE`] whatever the umask.
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes entries created or renamed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Maps a whole file read-only.
    fn map(&self, path: &Path) -> io::Result<Mmap>;
    /// Copies a file's contents to `to` (created or truncated, with
    /// [`FILE_MODE`]), returning the bytes copied. Not made durable: the
    /// caller syncs the copy.
    fn copy(&self, from: &Path, to: &Path) -> io::Result<u64>;
    /// Makes a file's contents durable (fsync), opening it read-only.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// What `path` is (following symlinks): its length, or whether it is a
    /// directory. An error when nothing is there.
    fn metadata(&self, path: &Path) -> io::Result<std::fs::Metadata>;
}

/// Creates `dir` and any missing parents, and makes each new directory's
/// entry durable by fsyncing its parent: a directory's own fsync covers
/// what is inside it, not its name in its parent, so without this a power
/// loss soon after the first start could take a new data directory, and
/// every acknowledged record in it, away. An existing `dir` is left as it is.
pub fn create_dir_durably(fs: &dyn FileSystem, dir: &Path) -> Result<(), IoError> {
    for d in missing_dirs(dir, |d| is_dir(fs, d)) {
        fs.create_dir_all(d)
            .map_err(|e| IoError::new("create", d, e))?;
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent)
                .map_err(|e| IoError::new("fsync directory", parent, e))?;
        }
    }
    Ok(())
}

/// `dir` and those of its ancestors that are not directories yet
/// (`is_dir` says), the outermost first: the order to create them in.
pub fn missing_dirs(dir: &Path, is_dir: impl Fn(&Path) -> bool) -> Vec<&Path> {
    let mut missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !is_dir(d))
        .collect();
    missing.reverse();
    missing
}

/// Whether `path` is a directory (false when nothing is there).
pub fn is_dir(fs: &dyn FileSystem, path: &Path) -> bool {
    fs.metadata(path).is_ok_and(|m| m.is_dir())
}

/// An open segment file.
pub trait SegmentIo: Send {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// fdatasync.
    fn sync_data(&mut self) -> io::Result<()>;
    /// fsync.
    fn sync_all(&mut self) -> io::Result<()>;
    /// Maps the file read-only, `len` bytes from its start, which may reach
    /// past its end: the active segment is mapped ahead so that readers see
    /// appended frames without a new map.
    fn map_ahead(&self, len: usize) -> io::Result<Mmap>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>> {
        Ok(Box::new(StdFile(create_private(path)?)))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn map(&self, path: &Path) -> io::Result<Mmap> {
        let file = File::open(path)?;
        // SAFETY: the map is read-only and chime never rewrites bytes of a
        // segment that a reader can reach: frames are only appended, and the
        // one truncation (recovery of a torn tail, or cutting back a failed
        // write) only removes bytes past what any reader was handed. The
        // data-dir lock keeps other chime processes that write (serve, log
        // repair) out. A process outside chime that truncates the file could
        // still make reads fault; docs/log-format.md says so.
        unsafe { Mmap::map(&file) }
    }

    fn copy(&self, from: &Path, to: &Path) -> io::Result<u64> {
        // Not std::fs::copy: it gives the copy the source's mode, and a
        // segment written by an older chime may be readable by others.
        let mut source = File::open(from)?;
        let mut copy = create_private(to)?;
        io::copy(&mut source, &mut copy)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn metadata(&self, path: &Path) -> io::Result<std::fs::Metadata> {
        std::fs::metadata(path)
    }
}

/// A real open file.
#[derive(Debug)]
pub struct StdFile(pub File);

impl SegmentIo for StdFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn map_ahead(&self, len: usize) -> io::Result<Mmap> {
        // SAFETY: pages past the end of the file are never touched: readers
        // stop at the durable length, which lies inside the file.
        unsafe { memmap2::MmapOptions::new().len(len).map(&self.0) }
    }
}
