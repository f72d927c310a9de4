//! The data directory: its layout and the exclusive lock that keeps a
//! second writer (another `serve`, or `log repair`) out.
//!
//! ```text
//! DATA/LOCK            held with an exclusive advisory lock while open
//! DATA/log/*.seg       the log's segments
//! DATA/snapshots/      snapshots of the replayed state (crate::snapshot)
//! ```
//!
//! All of it is private to chime's user: the directory is created 0700 and
//! the lock 0600 whatever the umask (the modes of [`crate::log::fs`]); an
//! existing directory that holds nothing of chime's yet (a checkout's
//! `data/` with its `.gitkeep`) is made 0700 when `serve` first takes it,
//! and `serve` opening a used directory that others may read logs a warning.
//!
//! The directory is created and synced through the log's [`FileSystem`];
//! the lock file is opened with `std::fs` directly, because an advisory
//! lock belongs to an open file handle, which the trait does not hand out
//! (and a fault-injecting file system has nothing to add to a lock).

use std::fs::{File, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::IoError;
use crate::log::fs::{self, FILE_MODE, FileSystem, StdFs};

/// Errors opening the data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {0} does not exist")]
    Missing(PathBuf),
    #[error("data directory {path} is locked by another chime process (serve or log repair)")]
    Locked { path: PathBuf },
    #[error(transparent)]
    Io(IoError),
}

/// An open, locked data directory. The lock is released on drop (and by the
/// kernel when the process dies, so a crash never leaves a stale lock).
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    /// Held open for the lock it carries.
    _lock: File,
}

impl DataDir {
    /// Opens `root` (creating it when `create` is set) and takes its lock,
    /// failing at once if another process holds it.
    /// With `create` (the server's open) an existing directory that others
    /// may enter is warned of.
    pub fn lock(root: &Path, create: bool) -> Result<DataDir, DataDirError> {
        Self::lock_on(&StdFs, root, create)
    }

    /// [`DataDir::lock`], creating the directory through `files` (the
    /// log's file system, which tests swap for one that forgets).
    pub fn lock_on(
        files: &dyn FileSystem,
        root: &Path,
        create: bool,
    ) -> Result<DataDir, DataDirError> {
        if let Some(mode) = open_to_others(root).filter(|_| create) {
            if holds_nothing_of_chime(root) {
                // chime is making this directory its own now (a checkout's
                // `data/` holding only a `.gitkeep`, made under the umask):
                // as good as created here, so it gets the created mode.
                std::fs::set_permissions(root, Permissions::from_mode(fs::DIR_MODE))
                    .map_err(|e| DataDirError::Io(IoError::new("chmod", root, e)))?;
            } else {
                // Not refused: the operator may share it on purpose (a group
                // of operators); but the log holds webhook URLs and headers.
                tracing::warn!(
                    data_dir = %root.display(),
                    mode = format!("{mode:04o}"),
                    "the data directory is open to users other than its owner; `chmod 700` it \
                     unless that is intended"
                );
            }
        }
        if create {
            // The data directory's entry (and any parent made for it) is
            // made durable: the log's fsyncs cover what is inside it, not
            // the directory itself.
            fs::create_dir_durably(files, root).map_err(DataDirError::Io)?;
        } else if !fs::is_dir(files, root) {
            return Err(DataDirError::Missing(root.to_path_buf()));
        }
        let path = root.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| DataDirError::Io(IoError::new("open", &path, e)))?;
        // The mode above only applies to a new file and the umask may have
        // taken bits off it; a lock from an older chime is tightened too.
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(|e| DataDirError::Io(IoError::new("chmod", &path, e)))?;
        match file.try_lock() {
            Ok(()) => Ok(DataDir {
                root: root.to_path_buf(),
                _lock: file,
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(DataDirError::Locked {
                path: root.to_path_buf(),
            }),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(DataDirError::Io(IoError::new("lock", &path, e)))
            }
        }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the log's segments live.
    pub fn log_dir(&self) -> PathBuf {
        log_dir(&self.root)
    }
}

/// The permission bits of an existing directory `root` when users other
/// than its owner may read, write or enter it; `None` when it is private
/// or not there.
pub fn open_to_others(root: &Path) -> Option<u32> {
    let mode = StdFs.metadata(root).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Whether `root` holds nothing chime wrote: no lock and no log.
fn holds_nothing_of_chime(root: &Path) -> bool {
    !root.join("LOCK").exists() && !log_dir(root).exists()
}

/// Where the log's segments live under a data directory.
pub fn log_dir(root: &Path) -> PathBuf {
    root.join("log")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// A checkout's `data/` (only a `.gitkeep`, made 0755 under the umask)
    /// is tightened when the server first takes it; a directory that
    /// already holds a log keeps the mode its operator gave it.
    #[test]
    fn an_unused_open_directory_is_made_private_and_a_used_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        std::fs::write(fresh.join(".gitkeep"), b"").unwrap();
        std::fs::set_permissions(&fresh, Permissions::from_mode(0o755)).unwrap();
        drop(DataDir::lock(&fresh, true).unwrap());
        assert_eq!(mode(&fresh), fs::DIR_MODE);

        let used = dir.path().join("used");
        std::fs::create_dir_all(log_dir(&used)).unwrap();
        std::fs::set_permissions(&used, Permissions::from_mode(0o750)).unwrap();
        drop(DataDir::lock(&used, true).unwrap());
        assert_eq!(mode(&used), 0o750);
    }

    #[test]
    fn second_lock_fails_at_once_and_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::lock(dir.path(), false).unwrap();
        let err = DataDir::lock(dir.path(), false).unwrap_err();
        assert!(matches!(err, DataDirError::Locked { .. }), "{err}");
        drop(first);
        DataDir::lock(dir.path(), false).unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            DataDir::lock(&missing, false),
            Err(DataDirError::Missing(_))
        ));
    }
}
