//! How problems are worded for an operator: damage the log's classifier
//! found, and records that do not decode. Shared by every command, with
//! the small formatting helpers they all use.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{ExitStatus, LogCliError};
use crate::log::Entry;
use crate::log::reader::LogReader;
use crate::log::scan::{Finding, Verdict};
use crate::record::RecordError;

/// Something wrong with the log, as an operator is told about it.
#[derive(Clone, Debug)]
pub(super) struct Problem {
    pub path: PathBuf,
    pub offset: u64,
    pub what: String,
    /// A torn tail: `serve` cuts it at open and loses nothing acknowledged.
    pub torn_tail: bool,
    /// What it means and what to do, one or two sentences.
    pub advice: String,
}

impl Problem {
    pub fn headline(&self) -> String {
        format!(
            "{} at byte {}: {}",
            self.path.display(),
            self.offset,
            self.what
        )
    }
}

/// The damage the log's classifier found, first damage first, worded
/// for an operator.
pub(super) fn problems(log: &LogReader) -> Vec<Problem> {
    log.findings().into_iter().map(problem).collect()
}

/// One finding, with what it means and what to do about it.
pub(super) fn problem(f: Finding) -> Problem {
    let advice = match &f.verdict {
        Verdict::TornTail { dropped, .. } => format!(
            "A torn tail: the last {dropped} bytes of the last segment hold no whole batch and no later write follows \
             them, so they were never acknowledged. `chime serve` cuts them when it opens the log, after copying them \
             to `<segment>.torn-<offset>`; `chime log repair` cuts them now and keeps a copy. (While a server runs, \
             this can also be a batch being written: run verify again.)"
        ),
        Verdict::Refused { keep, cause } => format!(
            "Not a torn tail: {cause}. `chime serve` refuses to open this log. `chime log repair --force` cuts \
             this segment back to byte {keep} (its last whole batch) and sets every later segment aside, losing \
             the records there; run `chime log repair` to see exactly what."
        ),
        Verdict::Unreadable { later } => {
            let (unchecked, and_later) = match *later {
                0 => (String::new(), String::new()),
                n => {
                    let n = plural(n as u64, "segment");
                    (
                        format!(": the {n} after it went unchecked"),
                        format!(" and the {n} after it"),
                    )
                }
            };
            format!(
                "The log cannot be read from this segment on{unchecked}. `chime serve` refuses to open this log. \
                 `chime log repair --force` sets this segment{and_later} aside."
            )
        }
    };
    Problem {
        torn_tail: f.is_torn_tail(),
        path: f.path,
        offset: f.offset,
        what: f.reason,
        advice,
    }
}

pub(super) fn undecodable(log: &LogReader, entry: &Entry<'_>, e: &RecordError) -> Problem {
    let path = log
        .segment_path(entry.loc)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Problem {
        path,
        offset: u64::from(entry.loc.offset),
        what: format!("record {} does not decode: {e}", entry.seq),
        torn_tail: false,
        advice: "The frame's checksum matches, so these are the bytes that were written: this build cannot read \
                 them (written by a newer chime?). `chime serve` refuses to open this log; repair cannot mend it."
            .into(),
    }
}

/// Tells `err` about problems found while dumping or reading stats. A torn
/// tail is only noted: its bytes were never acknowledged. Anything else
/// means records may be missing from the output, which is a problem.
pub(super) fn warn(err: &mut dyn Write, problems: &[Problem]) -> Result<ExitStatus, LogCliError> {
    let mut status = ExitStatus::Ok;
    for p in problems {
        if p.torn_tail {
            writeln!(
                err,
                "note: torn tail, not shown: {} (`chime serve` cuts it at open)",
                p.headline()
            )?;
        } else {
            writeln!(
                err,
                "warning: damage, records may be missing: {} (see `chime log verify`)",
                p.headline()
            )?;
            status = ExitStatus::Problem;
        }
    }
    Ok(status)
}

/// `n` and `what`, in the plural unless `n` is 1.
pub(super) fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A file's name, for output that lists segments.
pub(super) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// What an operator does with a torn tail recovery kept aside, for `stats`
/// and `verify`.
pub(super) const TORN_ADVICE: &str = "bytes recovery cut off a torn tail, kept outside the log; \
     inspect them (`chime log dump` cannot read them: `xxd`), keep them, or delete them \
     (docs/log-format.md)";
