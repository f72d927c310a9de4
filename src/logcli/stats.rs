//! `chime log stats`: segments, records by kind, events by status, the
//! next due time and the time span, as a table or one JSON object; and the
//! garbage: records of events no longer in view, with the bytes
//! compaction's rule would reclaim (docs/log-format.md, "Garbage").

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use clap::Args;
use serde::Serialize;

use super::report::{TORN_ADVICE, file_name, problems, undecodable, warn};
use super::{DataDirArg, ExitStatus, LogCliError, read_log};
use crate::log::frame::FRAME_HEADER_LEN;
use crate::log::reader::{LogReader, Unreadable};
use crate::projection::{Applied, Projection, Status as EventStatus};
use crate::record::{EventId, Record, RecordKind, UnixMicros};

/// Flags of `chime log stats`.
#[derive(Clone, Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `chime log stats`: segments, records by kind, events by status, the next
/// due time and the time span covered.
pub fn stats(
    args: &StatsArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitStatus, LogCliError> {
    let log = read_log(&args.dir.data_dir, |_, _| {})?;
    let mut problems = problems(&log);
    let mut by_kind = [0u64; RecordKind::ALL.len()];
    let mut projection = Projection::new();
    let mut cancelled = 0u64;
    let mut retired = 0u64;
    let mut ignored = 0u64;
    let mut span: Option<(UnixMicros, UnixMicros)> = None;
    let mut records = 0u64;
    log.for_each(|entry| {
        records += 1;
        let record = match Record::decode(entry.payload) {
            Ok(r) => r,
            Err(e) => {
                problems.push(undecodable(&log, &entry, &e));
                return Ok::<(), ()>(());
            }
        };
        let kind = record.kind();
        if let Some(i) = RecordKind::ALL.iter().position(|&k| k == kind) {
            by_kind[i] += 1;
        }
        let at = record.at();
        span = Some(span.map_or((at, at), |(a, b)| (a.min(at), b.max(at))));
        let before = projection.len();
        match projection.apply(entry.seq, entry.loc, &record) {
            Applied::Changed if kind == RecordKind::EventCancelled => cancelled += 1,
            // A retirement's count is what it took out of view.
            Applied::Changed if kind == RecordKind::EventsRetired => {
                retired += before.saturating_sub(projection.len()) as u64;
            }
            Applied::Changed => {}
            Applied::Ignored(_) => ignored += 1,
        }
        Ok(())
    })
    .ok();
    let garbage = count_garbage(&log, &projection);
    let segments = segment_rows(&log, &garbage);
    let store = crate::snapshot::SnapshotStore::open_read_only(
        std::sync::Arc::new(crate::log::fs::StdFs),
        &crate::snapshot::snapshot_dir(&args.dir.data_dir),
    );
    let snapshots = store
        .list()?
        .into_iter()
        .map(|f| SnapshotRow {
            name: file_name(&f.path),
            seq: f.seq,
            bytes: f.bytes,
        })
        .collect();
    let snapshots_set_aside = store
        .list_set_aside()?
        .iter()
        .map(|p| file_name(p))
        .collect();
    let stats = JsonStats {
        data_dir: &args.dir.data_dir,
        bytes: segments.iter().map(|s| s.bytes).sum(),
        reclaimable_bytes: segments.iter().map(|s| s.reclaimable_bytes).sum(),
        segments,
        records: JsonRecords {
            total: records,
            first_seq: log.first_seq().filter(|_| records > 0),
            last_seq: log.last_seq(),
            by_kind: RecordKind::ALL
                .iter()
                .zip(by_kind)
                .map(|(k, n)| (k.as_str(), n))
                .collect(),
            ignored,
            garbage: JsonGarbage {
                records: garbage.iter().map(|g| g.records).sum(),
                bytes: garbage.iter().map(|g| g.bytes).sum(),
            },
        },
        events: JsonEvents {
            total: projection.len() as u64,
            by_status: EventStatus::ALL
                .iter()
                .zip(projection.counts())
                .map(|(s, n)| (s.as_str(), n as u64))
                .collect(),
            cancelled,
            retired,
        },
        next_due: projection.next_due().map(|(at, event_id)| JsonDue {
            at: at.to_rfc3339(),
            event_id,
        }),
        time_span: span.map(|(first, last)| JsonSpan {
            first: first.to_rfc3339(),
            last: last.to_rfc3339(),
        }),
        problems: problems.iter().map(|p| p.headline()).collect(),
        torn_copies: log
            .torn_copies()
            .iter()
            .map(|(p, bytes)| TornRow {
                name: file_name(p),
                bytes: *bytes,
            })
            .collect(),
        snapshots,
        snapshots_set_aside,
    };
    if args.json {
        serde_json::to_writer(&mut *out, &stats).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        write_stats_table(out, &stats)?;
    }
    out.flush()?;
    warn(err, &problems)
}

#[derive(Serialize)]
struct JsonStats<'a> {
    data_dir: &'a Path,
    bytes: u64,
    /// What compaction's rule would take off the disk (docs/log-format.md,
    /// "Garbage"): the sum of the segments' `reclaimable_bytes`.
    reclaimable_bytes: u64,
    segments: Vec<SegmentRow>,
    records: JsonRecords,
    events: JsonEvents,
    next_due: Option<JsonDue>,
    time_span: Option<JsonSpan>,
    /// Damage found, first first; empty when the log is sound.
    problems: Vec<String>,
    /// Torn tails recovery cut off and kept aside, outside the log.
    torn_copies: Vec<TornRow>,
    /// `DATA/snapshots/*.snap`, oldest first (the newest is restored).
    snapshots: Vec<SnapshotRow>,
    /// Snapshots that failed a check and were set aside (`.snap.bad`).
    snapshots_set_aside: Vec<String>,
}

#[derive(Serialize)]
struct SnapshotRow {
    name: String,
    seq: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct TornRow {
    name: String,
    bytes: u64,
}

#[derive(Serialize)]
struct SegmentRow {
    name: String,
    bytes: u64,
    /// Records in whole batches.
    records: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// `sealed` or `active`.
    state: &'static str,
    /// Where the damage starts, if any.
    damaged_at: Option<u64>,
    /// Set when the segment could not be read at all.
    unreadable: Option<String>,
    /// Its records of events no longer in view, and their frames' bytes.
    garbage_records: u64,
    garbage_bytes: u64,
    /// What compaction would take off this segment: the whole file when
    /// nothing in it is live, its garbage frames when less than half of its
    /// frame bytes are live, else nothing. Always 0 for the active segment
    /// and for a damaged one.
    reclaimable_bytes: u64,
}

#[derive(Serialize)]
struct JsonRecords {
    total: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Records the projection ignored (e.g. an outcome that lost a race with
    /// a cancel): harmless, counted for the curious.
    ignored: u64,
    /// Records of events no longer in view (cancelled, or retired), which
    /// no view and no replay needs.
    garbage: JsonGarbage,
}

#[derive(Serialize)]
struct JsonGarbage {
    records: u64,
    /// Their frames' bytes (16 + payload each).
    bytes: u64,
}

/// The records of one segment, live and garbage.
#[derive(Clone, Copy, Debug, Default)]
struct SegmentGarbage {
    records: u64,
    bytes: u64,
    live_bytes: u64,
}

/// A second pass over the log, once the projection holds its final state:
/// a record is garbage when the projection says a replay no longer needs
/// it ([`Projection::is_live`]: one of an event no longer in view, or an
/// `events_retired` a later one covers), as compaction decides. Records
/// that cannot be decoded count as live: nothing is known of them. By
/// segment ordinal.
fn count_garbage(log: &LogReader, projection: &Projection) -> Vec<SegmentGarbage> {
    let mut by_segment = vec![SegmentGarbage::default(); log.segments().len()];
    log.for_each(|entry| {
        let bytes = (FRAME_HEADER_LEN + entry.payload.len()) as u64;
        let Some(seg) = by_segment.get_mut(entry.loc.segment as usize) else {
            return Ok::<(), ()>(());
        };
        let gone = Record::decode(entry.payload)
            .is_ok_and(|record| !projection.is_live(entry.seq, &record));
        if gone {
            seg.records += 1;
            seg.bytes += bytes;
        } else {
            seg.live_bytes += bytes;
        }
        Ok(())
    })
    .ok();
    by_segment
}

/// What compaction would reclaim of a sealed, undamaged segment of
/// `file_bytes` (see [`SegmentRow::reclaimable_bytes`]).
fn reclaimable(file_bytes: u64, g: &SegmentGarbage) -> u64 {
    if g.live_bytes == 0 && g.bytes > 0 {
        file_bytes
    } else if g.live_bytes < g.bytes {
        g.bytes
    } else {
        0
    }
}

#[derive(Serialize)]
struct JsonEvents {
    /// Events in view (not cancelled).
    total: u64,
    by_status: std::collections::BTreeMap<&'static str, u64>,
    cancelled: u64,
    /// Finished events taken out of view by retention (`events_retired`).
    retired: u64,
}

#[derive(Serialize)]
struct JsonDue {
    at: String,
    event_id: EventId,
}

#[derive(Serialize)]
struct JsonSpan {
    first: String,
    last: String,
}

fn segment_rows(log: &LogReader, garbage: &[SegmentGarbage]) -> Vec<SegmentRow> {
    log.segments()
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let g = garbage.get(i).copied().unwrap_or_default();
            let sound = s.damaged_at.is_none() && s.unreadable.is_none();
            SegmentRow {
                name: file_name(&s.path),
                bytes: s.bytes,
                records: s.records,
                first_seq: s.first_seq,
                last_seq: s.last_seq,
                state: if s.active { "active" } else { "sealed" },
                damaged_at: s.damaged_at,
                unreadable: s.unreadable.map(|u| match u {
                    Unreadable::Damaged(reason) => reason,
                    Unreadable::NotChecked => {
                        "not checked: an earlier segment cannot be read".into()
                    }
                }),
                garbage_records: g.records,
                garbage_bytes: g.bytes,
                reclaimable_bytes: if s.active || !sound {
                    0
                } else {
                    reclaimable(s.bytes, &g)
                },
            }
        })
        .collect()
}

fn write_stats_table(out: &mut dyn Write, s: &JsonStats<'_>) -> io::Result<()> {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    writeln!(out, "data dir    {}", s.data_dir.display())?;
    writeln!(out, "segments    {} ({} bytes)", s.segments.len(), s.bytes)?;
    let mut table = vec![vec![
        "name".to_string(),
        "bytes".into(),
        "first".into(),
        "last".into(),
        "records".into(),
        "garbage".into(),
        "state".into(),
    ]];
    for seg in &s.segments {
        let mut state = seg.state.to_string();
        if let Some(at) = seg.damaged_at {
            let _ = write!(state, ", damaged at byte {at}");
        }
        if let Some(why) = &seg.unreadable {
            let _ = write!(state, ", unreadable: {why}");
        }
        table.push(vec![
            seg.name.clone(),
            seg.bytes.to_string(),
            opt(seg.first_seq),
            opt(seg.last_seq),
            seg.records.to_string(),
            seg.garbage_records.to_string(),
            state,
        ]);
    }
    write_table(out, &table, &[false, true, true, true, true, true, false])?;
    let r = &s.records;
    write!(out, "records     {}", r.total)?;
    if let (Some(first), Some(last)) = (r.first_seq, r.last_seq) {
        write!(out, " (sequence numbers {first}..={last})")?;
    }
    if r.ignored > 0 {
        write!(out, ", {} ignored by the projection", r.ignored)?;
    }
    writeln!(out)?;
    let kinds: Vec<Vec<String>> = RecordKind::ALL
        .iter()
        .map(|k| {
            let n = r.by_kind.get(k.as_str()).copied().unwrap_or(0);
            vec![k.as_str().to_string(), n.to_string()]
        })
        .collect();
    write_table(out, &kinds, &[false, true])?;
    writeln!(
        out,
        "garbage     {} records, {} bytes (of cancelled or retired events); \
         compaction would reclaim {} bytes",
        r.garbage.records, r.garbage.bytes, s.reclaimable_bytes
    )?;
    writeln!(
        out,
        "events      {} (and {} cancelled, {} retired)",
        s.events.total, s.events.cancelled, s.events.retired
    )?;
    let statuses: Vec<Vec<String>> = EventStatus::ALL
        .iter()
        .map(|st| {
            let n = s.events.by_status.get(st.as_str()).copied().unwrap_or(0);
            vec![st.as_str().to_string(), n.to_string()]
        })
        .collect();
    write_table(out, &statuses, &[false, true])?;
    match &s.next_due {
        Some(d) => writeln!(out, "next due    {} (event {})", d.at, d.event_id)?,
        None => writeln!(out, "next due    - (nothing scheduled)")?,
    }
    match &s.time_span {
        Some(t) => writeln!(out, "time span   {} .. {}", t.first, t.last)?,
        None => writeln!(out, "time span   - (no records)")?,
    }
    match s.snapshots.last() {
        Some(newest) => writeln!(
            out,
            "snapshots   {} (newest {} at seq {}, {} bytes: a restart replays the records after it)",
            s.snapshots.len(),
            newest.name,
            newest.seq,
            newest.bytes
        )?,
        None => writeln!(out, "snapshots   0 (a restart replays the whole log)")?,
    }
    for name in &s.snapshots_set_aside {
        writeln!(out, "set aside   {name} (a snapshot that failed its check)")?;
    }
    for p in &s.problems {
        writeln!(out, "damage      {p}")?;
    }
    for t in &s.torn_copies {
        writeln!(
            out,
            "torn copy   {} ({} bytes): {TORN_ADVICE}",
            t.name, t.bytes
        )?;
    }
    Ok(())
}

/// Writes rows indented by two spaces, columns padded to their widest cell;
/// `right[i]` aligns column `i` to the right.
fn write_table(out: &mut dyn Write, rows: &[Vec<String>], right: &[bool]) -> io::Result<()> {
    let mut widths = vec![0; right.len()];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::from(" ");
        for ((cell, &w), &r) in row.iter().zip(&widths).zip(right) {
            line.push(' ');
            if r {
                let _ = write!(line, "{cell:>w$}");
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
