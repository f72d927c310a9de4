//! `chime log repair`: says what the log's repair plan would do, and does
//! it for a torn tail (or, with `--force`, for damage anywhere).

use std::io::{self, Write};
use std::sync::Arc;

use clap::Args;

use super::report::{file_name, plural, problem, problems};
use super::{DataDirArg, ExitStatus, LogCliError, lock_data_dir, log_dir_of};
use crate::log::fs::StdFs;
use crate::log::reader::LogReader;
use crate::log::repair::{Frames, Plan, Step};

/// Flags of `chime log repair`.
#[derive(Clone, Debug, Args)]
pub struct RepairArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Also mend damage in the middle of the log: cut the damaged segment at
    /// its last whole batch and set every later segment aside, losing the
    /// records in them.
    #[arg(long)]
    pub force: bool,
}

/// Segments to set aside beyond this many are summed up in one line.
const LIST_ASIDE: usize = 5;

fn describe_frames(frames: &Frames) -> String {
    match frames.seqs {
        Some((first, last)) => format!(
            "{} with valid checksums (sequence numbers {first}..={last})",
            plural(frames.count, "record")
        ),
        None => "no record with a valid checksum".into(),
    }
}

/// What a plan will do, in lines indented by two spaces.
fn describe(plan: &Plan, out: &mut dyn Write) -> io::Result<()> {
    let mut bytes = 0;
    let mut lost = Frames::default();
    if let Some(c) = &plan.cut {
        writeln!(
            out,
            "  cut {} from {} back to {} bytes (its last whole batch{}), dropping {} bytes: {}",
            file_name(&c.path),
            c.len,
            c.keep,
            c.last_kept
                .map_or_else(String::new, |q| format!(" ends at sequence number {q}")),
            c.len - c.keep,
            describe_frames(&c.lost)
        )?;
        bytes += c.len - c.keep;
        lost.add(c.lost);
    }
    let mut aside_bytes = 0;
    let mut aside_frames = Frames::default();
    for a in &plan.aside {
        if plan.aside.len() <= LIST_ASIDE {
            writeln!(
                out,
                "  set aside {} ({} bytes): {}",
                file_name(&a.path),
                a.bytes,
                describe_frames(&a.frames)
            )?;
        }
        aside_bytes += a.bytes;
        aside_frames.add(a.frames);
    }
    if let (Some(first), Some(last)) = (plan.aside.first(), plan.aside.last())
        && plan.aside.len() > LIST_ASIDE
    {
        writeln!(
            out,
            "  set aside {}, {} to {} ({aside_bytes} bytes): {}",
            plural(plan.aside.len() as u64, "segment"),
            file_name(&first.path),
            file_name(&last.path),
            describe_frames(&aside_frames)
        )?;
    }
    bytes += aside_bytes;
    lost.add(aside_frames);
    let first_lost = plan.ends_at.map_or(1, |q| q + 1);
    let what = match lost.seqs {
        Some((_, last)) => {
            let span = last.saturating_sub(first_lost) + 1;
            format!(
                "sequence numbers {first_lost}..={last}: {} of these {span} records have valid checksums, the rest are damaged",
                lost.count
            )
        }
        None => "no record with a valid checksum".into(),
    };
    let end = plan.ends_at.map_or_else(
        || "the log will be empty".to_string(),
        |q| format!("the log will end at sequence number {q}"),
    );
    writeln!(
        out,
        "  in all {bytes} bytes leave the log, holding {what}; {end}"
    )?;
    writeln!(
        out,
        "  every file changed or set aside is kept as <name>.seg.broken (chime ignores these)"
    )
}

/// `chime log repair`: cuts a torn tail, or (with `--force`) damage
/// anywhere, so that the log opens again. Takes the data-dir lock.
pub fn repair(
    args: &RepairArgs,
    out: &mut dyn Write,
    _err: &mut dyn Write,
) -> Result<ExitStatus, LogCliError> {
    let data = lock_data_dir(&args.dir.data_dir)?;
    let log_dir = log_dir_of(data.root())?;
    let read = || LogReader::open(Arc::new(StdFs), &log_dir, |_, _| {});
    let plan = {
        let log = read()?;
        match log.repair_plan()? {
            Some(plan) => plan,
            None => {
                writeln!(
                    out,
                    "nothing to repair: every frame of the {} is whole ({}); `chime log verify` also decodes the records",
                    plural(log.scanned() as u64, "segment"),
                    plural(log.records(), "record")
                )?;
                return Ok(ExitStatus::Ok);
            }
        }
        // The scan's maps are dropped here, before any file changes.
    };
    writeln!(out, "damaged: {}", problem(plan.damage.clone()).headline())?;
    if plan.is_torn_tail() {
        writeln!(
            out,
            "a torn tail (its bytes were never acknowledged); repair will:"
        )?;
        describe(&plan, out)?;
    } else if args.force {
        writeln!(
            out,
            "not a torn tail: acknowledged records will be lost. --force given, so repair will:"
        )?;
        describe(&plan, out)?;
    } else {
        writeln!(
            out,
            "refusing: this is not a torn tail, and mending it loses acknowledged records. `chime log repair --force` would:"
        )?;
        describe(&plan, out)?;
        writeln!(
            out,
            "restore the data dir from a backup if you have one; otherwise run again with --force"
        )?;
        return Ok(ExitStatus::Problem);
    }
    // Say what is about to happen before doing it.
    out.flush()?;
    let aside = plan.aside.len();
    plan.execute(&StdFs, &log_dir, |step| -> Result<(), LogCliError> {
        match step {
            Step::Copied { from, to } => {
                writeln!(out, "copied {} to {}", file_name(from), file_name(to))?;
            }
            Step::SetAside { from, to } if aside <= LIST_ASIDE => {
                writeln!(out, "set aside {} as {}", file_name(from), file_name(to))?;
            }
            Step::SetAside { .. } => {}
            Step::AllSetAside if aside > LIST_ASIDE => {
                writeln!(
                    out,
                    "set aside {} as <name>.seg.broken",
                    plural(aside as u64, "segment")
                )?;
            }
            Step::AllSetAside => {}
            Step::Cut {
                path,
                keep,
                dropped,
            } => {
                writeln!(
                    out,
                    "cut {} to {keep} bytes, dropped {dropped} bytes",
                    file_name(path)
                )?;
            }
        }
        Ok(())
    })?;
    out.flush()?;

    let after = read()?;
    if let Some(p) = problems(&after).first() {
        writeln!(out, "still damaged: {}", p.headline())?;
        writeln!(out, "  run `chime log repair` again to see what remains")?;
        return Ok(ExitStatus::Problem);
    }
    writeln!(
        out,
        "the log is sound: {}, {}",
        plural(after.scanned() as u64, "segment"),
        plural(after.records(), "record")
    )?;
    Ok(ExitStatus::Ok)
}
