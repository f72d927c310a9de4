//! `chime log verify`: every frame's checksum and the sequence numbers
//! (the log's scan), then every record decoded; exit 1 on any damage.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;

use super::report::{TORN_ADVICE, file_name, plural, problems, undecodable};
use super::{DataDirArg, ExitStatus, LogCliError, read_log};
use crate::projection::Projection;
use crate::record::Record;
use crate::snapshot::{SnapshotFile, SnapshotStore, snapshot_dir};

/// Flags of `chime log verify`.
#[derive(Clone, Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
}

/// A one-line progress report on stderr, redrawn in place with `\r`, shown
/// only when enabled (stderr is a terminal) and only once a run has taken
/// long enough to need one.
struct Progress {
    enabled: bool,
    started: Instant,
    last_drawn: Option<Instant>,
    drawn_width: usize,
}

impl Progress {
    /// Runs shorter than this never show a progress line.
    const DELAY: Duration = Duration::from_millis(500);
    /// Redraw at most this often.
    const EVERY: Duration = Duration::from_millis(100);

    fn new(enabled: bool) -> Self {
        Progress {
            enabled,
            started: Instant::now(),
            last_drawn: None,
            drawn_width: 0,
        }
    }

    fn update(&mut self, err: &mut dyn Write, text: impl FnOnce() -> String) {
        if !self.enabled || self.started.elapsed() < Self::DELAY {
            return;
        }
        if self.last_drawn.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        let text = text();
        let pad = self.drawn_width.saturating_sub(text.chars().count());
        // Progress is a courtesy: a failed write to stderr must not fail the run.
        let _ = write!(err, "\r{text}{:pad$}", "");
        let _ = err.flush();
        self.drawn_width = text.chars().count();
        self.last_drawn = Some(Instant::now());
    }

    fn clear(&mut self, err: &mut dyn Write) {
        if self.drawn_width > 0 {
            let _ = write!(err, "\r{:w$}\r", "", w = self.drawn_width);
            let _ = err.flush();
            self.drawn_width = 0;
        }
    }
}

/// A text bar of `width` cells, `done` of `total` filled.
fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        (done.min(total) as u128 * width as u128 / total as u128) as usize
    };
    format!("[{}{}]", "#".repeat(filled), " ".repeat(width - filled))
}

/// `chime log verify`: checks every frame's checksum and the sequence
/// numbers (the scan), then decodes every record. Exit 1 on any damage,
/// a torn tail included.
pub fn verify(
    args: &VerifyArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    progress: bool,
) -> Result<ExitStatus, LogCliError> {
    let mut bar_line = Progress::new(progress);
    let log = read_log(&args.dir.data_dir, |done, total| {
        bar_line.update(err, || {
            format!(
                "checking frames  {} segment {done} of {total}",
                bar(done as u64, total as u64, 30)
            )
        });
    })?;
    let mut problems = problems(&log);
    let total = log.records();
    let mut decoded = 0u64;
    let mut undecodable_count = 0u64;
    // The newest snapshot is checked against a replay of the records it
    // holds: the replay runs alongside the decoding, up to its seq.
    let store = SnapshotStore::open_read_only(
        std::sync::Arc::new(crate::log::fs::StdFs),
        &snapshot_dir(&args.dir.data_dir),
    );
    let newest: Option<SnapshotFile> = store.list()?.pop();
    let mut replay = newest.as_ref().map(|_| Projection::new());
    log.for_each(|entry| {
        match Record::decode(entry.payload) {
            Err(e) => {
                undecodable_count += 1;
                // Enough to act on; the count says how many in all.
                if undecodable_count <= 10 {
                    problems.push(undecodable(&log, &entry, &e));
                }
            }
            Ok(record) => {
                if let (Some(p), Some(snap)) = (replay.as_mut(), &newest)
                    && entry.seq <= snap.seq
                {
                    p.apply(entry.seq, entry.loc, &record);
                }
            }
        }
        decoded += 1;
        if decoded.is_multiple_of(4096) {
            bar_line.update(err, || {
                format!(
                    "decoding records {} {decoded} of {total}",
                    bar(decoded, total, 30)
                )
            });
        }
        Ok::<(), ()>(())
    })
    .ok();
    bar_line.clear(err);

    let bytes = log.bytes();
    let unscanned = log.unscanned();
    write!(
        out,
        "checked {} ({bytes} bytes): {}",
        plural(log.scanned() as u64, "segment"),
        plural(total, "record")
    )?;
    let first = log.first_seq();
    let last = log.last_seq();
    // Past damage the numbers have gaps, and a range would hide them.
    if let (Some(first), Some(last), true) = (first, last, problems.is_empty()) {
        write!(out, " in whole batches, sequence numbers {first}..={last}")?;
        if log.compacted() {
            write!(out, " (with the gaps compaction left)")?;
        }
    }
    writeln!(out)?;
    if unscanned > 0 {
        writeln!(
            out,
            "could not check {} (see below)",
            plural(unscanned as u64, "segment")
        )?;
    }
    // Listed, not counted as damage: the log itself is whole without them.
    for (path, bytes) in log.torn_copies() {
        writeln!(
            out,
            "torn copy: {} ({bytes} bytes): {TORN_ADVICE}",
            file_name(path)
        )?;
    }
    let snapshot_ok = match (&newest, replay) {
        (Some(snap), Some(replayed)) => check_snapshot(
            &store,
            snap,
            &replayed,
            &log.segment_ids(),
            log.covered_through(),
            out,
        )?,
        _ => true,
    };
    for set_aside in store.list_set_aside()? {
        writeln!(
            out,
            "set-aside snapshot: {} (never read again; delete it once looked at)",
            file_name(&set_aside)
        )?;
    }
    for path in log.superseded() {
        writeln!(
            out,
            "superseded: {} (merged into the compacted segment before it by a compaction that \
             stopped before removing it; skipped, and removed at the next start)",
            file_name(path)
        )?;
    }
    if problems.is_empty() && snapshot_ok {
        let order = if log.compacted() {
            "sequence numbers only increase and every segment's range follows on"
        } else {
            "sequence numbers run without gaps"
        };
        writeln!(
            out,
            "ok: every frame's checksum matches, {order}, every record decodes"
        )?;
        return Ok(ExitStatus::Ok);
    }
    for p in &problems {
        writeln!(out, "damaged: {}", p.headline())?;
        writeln!(out, "  {}", p.advice)?;
    }
    if undecodable_count > 10 {
        writeln!(
            out,
            "{} do not decode in all (the first 10 are shown)",
            plural(undecodable_count, "record")
        )?;
    }
    Ok(ExitStatus::Problem)
}

/// Checks the newest snapshot: its file, its body, that it fits the log,
/// and that it equals `replayed` (the log's records up to its seq). Prints
/// one line; returns whether it passed.
fn check_snapshot(
    store: &SnapshotStore,
    snap: &SnapshotFile,
    replayed: &Projection,
    bases: &[Option<crate::log::SegmentId>],
    last_seq: Option<u64>,
    out: &mut dyn Write,
) -> Result<bool, LogCliError> {
    let name = file_name(&snap.path);
    let verdict = store
        .read(snap)
        .map_err(|e| e.to_string())
        .and_then(|(seq, body)| crate::service::decode_snapshot(&body, seq, bases, last_seq))
        .and_then(|projection| {
            (projection == *replayed)
                .then_some(())
                .ok_or_else(|| "it differs from a replay of the log up to its seq".to_owned())
        });
    match verdict {
        Ok(()) => {
            writeln!(
                out,
                "snapshot: {name} ({} bytes) matches a replay of the log up to seq {}",
                snap.bytes, snap.seq
            )?;
            Ok(true)
        }
        Err(why) => {
            writeln!(out, "damaged: snapshot {name}: {why}")?;
            writeln!(
                out,
                "  serve sets it aside at its next start (renamed to .bad, never deleted) and uses an older one or replays the log"
            )?;
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(bar(0, 10, 4), "[    ]");
        assert_eq!(bar(5, 10, 4), "[##  ]");
        assert_eq!(bar(10, 10, 4), "[####]");
        assert_eq!(bar(0, 0, 2), "[##]");
    }
}
