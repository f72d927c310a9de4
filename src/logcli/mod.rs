//! `chime log dump | stats | verify | repair`: reading, checking and mending
//! a data directory's log, as library functions over the log's own types.
//!
//! This module owns the four commands' flags and their output (text and
//! JSON): how damage is explained to an operator and how a repair plan is
//! described. It reads the log only through [`LogReader`] and mends it only
//! through [`crate::log::repair::Plan`]; records it reads only through
//! [`crate::record::Record::decode`] and `crate::projection::Projection`.
//! It never opens a [`crate::log::Log`], decodes no frame and does no file
//! IO of its own: what is damage and what is a torn tail is decided by the
//! log's classifier ([`crate::log::scan::classify`]).
//!
//! `dump`, `stats` and `verify` are read-only and take no lock, so they work
//! while a server runs. `repair` takes the data-dir lock, so it refuses while
//! a server runs.
//!
//! Each command writes its report to `out` and warnings to `err`, and
//! returns an [`ExitStatus`] (exit 0 or 1) or a [`LogCliError`] (exit 2);
//! [`run`] maps them to the exit code. The binary only parses flags and
//! calls [`run`].
//!
//! One file per command (`dump`, `stats`, `verify`, `repair`), and
//! `report` for how problems are worded, which they share.

mod compact;
mod dump;
mod repair;
mod report;
mod stats;
mod verify;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::datadir::{self, DataDirError};
use crate::log::LogError;
use crate::log::fs::{self, StdFs};
use crate::log::reader::LogReader;

pub use compact::{CompactArgs, compact};
pub use dump::{DumpArgs, dump};
pub use repair::{RepairArgs, repair};
pub use stats::{StatsArgs, stats};
pub use verify::{VerifyArgs, verify};

/// `chime log`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Print the records, oldest first: one line each (or one JSON object each with --json).
    Dump(DumpArgs),
    /// Segments, record counts by kind, events by status, next due time, time span.
    Stats(StatsArgs),
    /// Check every frame's checksum and decode every record; exit 1 on damage.
    Verify(VerifyArgs),
    /// Cut a damaged tail back to its last whole batch (damage elsewhere needs --force).
    Repair(RepairArgs),
    /// Drop the records of cancelled and retired events from sealed segments (server stopped).
    Compact(CompactArgs),
}

/// The data directory, as `chime serve` takes it.
#[derive(Clone, Debug, Args)]
pub struct DataDirArg {
    /// Data directory; the log lives in DIR/log/.
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Flags of `chime log dump`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exit 0: done, nothing wrong found.
    Ok,
    /// Exit 1: the command ran and found a problem (damage, a record that
    /// does not decode, a repair refused).
    Problem,
}

impl ExitStatus {
    pub fn exit_code(self) -> u8 {
        match self {
            ExitStatus::Ok => 0,
            ExitStatus::Problem => 1,
        }
    }
}

/// Why a command could not run (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum LogCliError {
    #[error("data directory {0} does not exist")]
    NoDataDir(PathBuf),
    #[error(
        "{log} does not exist: {data} is not a chime data directory, or no server has run on it"
    )]
    NoLog { data: PathBuf, log: PathBuf },
    #[error(
        "data directory {0} is locked by another chime process (a running `chime serve`, or a `chime log repair` or `compact`); stop it first"
    )]
    Locked(PathBuf),
    #[error(transparent)]
    DataDir(DataDirError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Service(crate::service::ServiceError),
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

/// Runs a `chime log` command and returns its exit code: 0 ok, 1 a problem
/// found, 2 could not run (with a one-line message on `err`). `progress`
/// allows a progress line on `err` for long runs; the binary sets it when
/// stderr is a terminal.
pub fn run(cmd: &LogCommand, out: &mut dyn Write, err: &mut dyn Write, progress: bool) -> u8 {
    let (name, result) = match cmd {
        LogCommand::Dump(args) => ("dump", dump(args, out, err)),
        LogCommand::Stats(args) => ("stats", stats(args, out, err)),
        LogCommand::Verify(args) => ("verify", verify(args, out, err, progress)),
        LogCommand::Repair(args) => ("repair", repair(args, out, err)),
        LogCommand::Compact(args) => ("compact", compact(args, out, err)),
    };
    let result = result.and_then(|status| {
        out.flush()?;
        Ok(status)
    });
    match result {
        Ok(status) => status.exit_code(),
        // `chime log dump | head`: the reader has what it wanted.
        Err(LogCliError::Output(e))
            if e.kind() == io::ErrorKind::BrokenPipe && matches!(name, "dump" | "stats") =>
        {
            0
        }
        // A file in the log directory that is not a segment at all: the
        // log is damaged, which is a finding, not a failure to run.
        Err(e @ LogCliError::Log(LogError::Corruption { .. })) => {
            let _ = writeln!(err, "chime log {name}: {e}");
            1
        }
        Err(e) => {
            let _ = writeln!(err, "chime log {name}: {e}");
            2
        }
    }
}

/// Takes the lock of an existing data directory, for the commands that
/// write (`repair`, `compact`): refused while a server or another such
/// command holds it.
fn lock_data_dir(data_dir: &Path) -> Result<crate::datadir::DataDir, LogCliError> {
    use crate::datadir::{DataDir, DataDirError};
    match DataDir::lock(data_dir, false) {
        Ok(d) => Ok(d),
        Err(DataDirError::Missing(path)) => Err(LogCliError::NoDataDir(path)),
        Err(DataDirError::Locked { path }) => Err(LogCliError::Locked(path)),
        Err(e) => Err(LogCliError::DataDir(e)),
    }
}

/// The log directory of an existing data directory.
fn log_dir_of(data_dir: &Path) -> Result<PathBuf, LogCliError> {
    if !fs::is_dir(&StdFs, data_dir) {
        return Err(LogCliError::NoDataDir(data_dir.to_path_buf()));
    }
    let log = datadir::log_dir(data_dir);
    if !fs::is_dir(&StdFs, &log) {
        return Err(LogCliError::NoLog {
            data: data_dir.to_path_buf(),
            log,
        });
    }
    Ok(log)
}

/// Reads the log of an existing data directory, calling `progress(done,
/// total)` after each segment.
fn read_log(data_dir: &Path, progress: impl FnMut(usize, usize)) -> Result<LogReader, LogCliError> {
    let log_dir = log_dir_of(data_dir)?;
    Ok(LogReader::open(Arc::new(StdFs), &log_dir, progress)?)
}
