//! The data directory: its layout and the exclusive lock that keeps a
//! second writer (another `serve`, or `log repair`) out.
//!
//! ```text
//! DATA/LOCK            held with an exclusive advisory lock while open
//! DATA/log/*.seg       the log's segments
//! ```

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Errors opening the data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {0} does not exist")]
    Missing(PathBuf),
    #[error("data directory {path} is locked by another chime process (serve or log repair)")]
    Locked { path: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
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
    pub fn lock(root: &Path, create: bool) -> Result<DataDir, DataDirError> {
        if create {
            std::fs::create_dir_all(root).map_err(|source| DataDirError::Io {
                op: "create",
                path: root.to_path_buf(),
                source,
            })?;
            // Make the data directory's entry durable: the log's fsyncs
            // cover what is inside it, not the directory itself.
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|source| DataDirError::Io {
                        op: "fsync",
                        path: parent.to_path_buf(),
                        source,
                    })?;
            }
        } else if !root.is_dir() {
            return Err(DataDirError::Missing(root.to_path_buf()));
        }
        let path = root.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| DataDirError::Io {
                op: "open",
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DataDir {
                root: root.to_path_buf(),
                _lock: file,
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(DataDirError::Locked {
                path: root.to_path_buf(),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(DataDirError::Io {
                op: "lock",
                path,
                source,
            }),
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

/// Where the log's segments live under a data directory.
pub fn log_dir(root: &Path) -> PathBuf {
    root.join("log")
}

#[cfg(test)]
mod tests {
    use super::*;

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
