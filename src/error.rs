//! Error shapes shared across modules.
//!
//! Each module keeps its own `thiserror` enum for what can go wrong there;
//! what they share is the shape of a failed file-system operation, so that
//! every IO error names the operation and the path the same way.

use std::path::{Path, PathBuf};

/// A file-system operation that failed: what was being done, to which
/// path, and the error the OS gave.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct IoError {
    /// The operation, as a verb an operator reads: "open", "fsync", "rename".
    pub op: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl IoError {
    pub fn new(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        IoError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
