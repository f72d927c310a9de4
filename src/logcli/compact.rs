//! `chime log compact`: one compaction of a stopped server's log (the rule
//! and its crash safety are `crate::compaction`'s), then a snapshot over
//! the compacted segments, so that the next start replays nothing.

use std::io::Write;
use std::sync::Arc;

use clap::Args;

use super::{DataDirArg, ExitStatus, LogCliError, lock_data_dir, log_dir_of};
use crate::clock::SystemClock;
use crate::log::LogOptions;
use crate::service::{Service, ServiceError};
use crate::snapshot::{SnapshotStore, snapshot_dir};

/// Flags of `chime log compact`.
#[derive(Clone, Debug, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The server's `--segment-bytes`: merged segments are kept within it.
    #[arg(long, value_name = "N", default_value_t = crate::log::DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
    /// Print what was done as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `chime log compact`: takes the data-dir lock (so no server may run),
/// restores and replays as `serve` does, compacts once, and writes a
/// snapshot if anything changed.
pub fn compact(
    args: &CompactArgs,
    out: &mut dyn Write,
    _err: &mut dyn Write,
) -> Result<ExitStatus, LogCliError> {
    let data = lock_data_dir(&args.dir.data_dir)?;
    let log_dir = log_dir_of(data.root())?;
    let opts = LogOptions::with_segment_bytes(args.segment_bytes);
    let store = SnapshotStore::open(opts.fs.clone(), &snapshot_dir(data.root()))?;
    let (service, _) =
        Service::open_restoring(&log_dir, &opts, Arc::new(SystemClock), Some(&store))?;
    let done = crate::compaction::compact(&service, Some(&store)).map_err(LogCliError::from);
    service.log.close();
    let done = done?;
    if args.json {
        serde_json::to_writer(&mut *out, &done).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else if done.segments_in == 0 {
        writeln!(
            out,
            "nothing to compact: every sealed segment is at least half live"
        )?;
    } else {
        writeln!(
            out,
            "compacted {} segments into {}: {} bytes to {} ({} reclaimed); kept {} records, dropped {}",
            done.segments_in,
            done.segments_out,
            done.bytes_in,
            done.bytes_out,
            done.reclaimed(),
            done.records_kept,
            done.records_dropped
        )?;
        if let Some(seq) = done.snapshot_seq {
            writeln!(out, "snapshot written at seq {seq}")?;
        }
    }
    Ok(ExitStatus::Ok)
}

impl From<ServiceError> for LogCliError {
    fn from(e: ServiceError) -> Self {
        LogCliError::Service(e)
    }
}
