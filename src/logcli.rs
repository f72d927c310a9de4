//! `chime log dump | stats | verify | repair`: reading, checking and mending
//! a data directory's log, as library functions over the log's own types.
//!
//! This module owns the four commands' flags, their output (text and JSON),
//! how damage is explained to an operator, and the repair plan. It reads the
//! log only through [`DirScan`], the same scan recovery decides from, and
//! records only through [`Record::decode`] and [`Projection`]. It never
//! opens a [`crate::log::Log`] and must not grow its own idea of the format:
//! what is damage and what is a torn tail is decided by the scan.
//!
//! `dump`, `stats` and `verify` are read-only and take no lock, so they work
//! while a server runs. `repair` takes the data-dir lock, so it refuses while
//! a server runs, and cuts with [`truncate_segment`], the one truncation
//! recovery uses.
//!
//! Each command writes its report to `out` and warnings to `err`, and
//! returns a [`Status`] (exit 0 or 1) or a [`LogCliError`] (exit 2); [`run`]
//! maps them to the exit code. The binary only parses flags and calls [`run`].

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Serialize;
use serde::ser::Serializer;
use serde_json::value::RawValue;

use crate::datadir::{self, DataDir, DataDirError};
use crate::log::frame::{self, FRAME_HEADER_LEN, HEADER_LEN, MAX_PAYLOAD};
use crate::log::fs::{FileSystem, StdFs};
use crate::log::segment::{self, SegmentFile};
use crate::log::{DirScan, Entry, LogError, PartialScan, truncate_segment};
use crate::projection::{Applied, Projection, Status as EventStatus};
use crate::record::{
    EventId, HeaderValue, Invocation, InvocationResponse, Record, RecordError, RecordKind,
    UnixMicros,
};

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
}

/// The data directory, as `chime serve` takes it.
#[derive(Clone, Debug, Args)]
pub struct DataDirArg {
    /// Data directory; the log lives in DIR/log/.
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Flags of `chime log dump`.
#[derive(Clone, Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Start at this sequence number.
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
    /// Print at most N records (after the other filters).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Only records about this event.
    #[arg(long, value_name = "ID")]
    pub event: Option<EventId>,
    /// Only records of these kinds (repeat the flag, or separate with commas).
    #[arg(long, value_name = "KIND", value_delimiter = ',', value_parser = parse_kind)]
    pub kind: Vec<RecordKind>,
    /// One JSON object per line, payloads as JSON (for jq).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `chime log stats`.
#[derive(Clone, Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `chime log verify`.
#[derive(Clone, Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
}

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

fn parse_kind(name: &str) -> Result<RecordKind, String> {
    RecordKind::parse(name).ok_or_else(|| {
        let known: Vec<&str> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown record kind (known: {})", known.join(", "))
    })
}

/// How a command that ran ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Exit 0: done, nothing wrong found.
    Ok,
    /// Exit 1: the command ran and found a problem (damage, a record that
    /// does not decode, a repair refused).
    Problem,
}

impl Status {
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Problem => 1,
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
        "data directory {0} is locked by another chime process (a running `chime serve`, or another repair); stop it first"
    )]
    Locked(PathBuf),
    #[error(transparent)]
    DataDir(DataDirError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

impl LogCliError {
    fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogCliError {
        let path = path.to_path_buf();
        move |source| LogCliError::Io { op, path, source }
    }
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

/// The log directory of an existing data directory.
fn log_dir_of(data_dir: &Path) -> Result<PathBuf, LogCliError> {
    if !data_dir.is_dir() {
        return Err(LogCliError::NoDataDir(data_dir.to_path_buf()));
    }
    let log = datadir::log_dir(data_dir);
    if !log.is_dir() {
        return Err(LogCliError::NoLog {
            data: data_dir.to_path_buf(),
            log,
        });
    }
    Ok(log)
}

// ---------------------------------------------------------------------------
// Problems: damage found by the scan, and records that do not decode.

/// Something wrong with the log, as an operator is told about it.
#[derive(Clone, Debug)]
struct Problem {
    path: PathBuf,
    offset: u64,
    what: String,
    /// A torn tail: `serve` cuts it at open and loses nothing acknowledged.
    torn_tail: bool,
    /// What it means and what to do, one or two sentences.
    advice: String,
}

impl Problem {
    fn headline(&self) -> String {
        format!(
            "{} at byte {}: {}",
            self.path.display(),
            self.offset,
            self.what
        )
    }
}

/// The damage a scan found, first damage first.
fn scan_problems(p: &PartialScan) -> Vec<Problem> {
    let segments = &p.scan.segments;
    let mut out = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        let Some(d) = &s.scan.damage else { continue };
        let last = i + 1 == segments.len() && p.stopped.is_none();
        let torn_tail = last && !d.valid_after;
        let advice = if torn_tail {
            format!(
                "A torn tail: the last {} bytes of the last segment hold no whole batch and nothing valid follows, \
                 so they were never acknowledged. `chime serve` cuts them when it opens the log; `chime log repair` \
                 cuts them now and keeps a copy. (While a server runs, this can also be a batch being written: run verify again.)",
                s.file_len - d.offset as u64
            )
        } else {
            let why = if last {
                "valid frames follow the damage, so it is not a torn tail"
            } else {
                "the damage is inside a sealed segment"
            };
            format!(
                "Not a torn tail: {why}. `chime serve` refuses to open this log. `chime log repair --force` cuts \
                 this segment back to byte {} (its last whole batch) and sets every later segment aside, losing \
                 the records there; run `chime log repair` to see exactly what.",
                d.offset
            )
        };
        out.push(Problem {
            path: s.file.path.clone(),
            offset: d.bad_at as u64,
            what: d.kind.to_string(),
            torn_tail,
            advice,
        });
    }
    if let Some(stopped) = &p.stopped {
        let (path, offset, what) = match &stopped.error {
            LogError::Corruption {
                path,
                offset,
                reason,
            } => (path.clone(), *offset, reason.clone()),
            other => (
                stopped
                    .unscanned
                    .first()
                    .map(|f| f.path.clone())
                    .unwrap_or_default(),
                0,
                other.to_string(),
            ),
        };
        let (unchecked, and_later) = match stopped.unscanned.len().saturating_sub(1) {
            0 => (String::new(), String::new()),
            n => {
                let n = plural(n as u64, "segment");
                (
                    format!(": the {n} after it went unchecked"),
                    format!(" and the {n} after it"),
                )
            }
        };
        out.push(Problem {
            path,
            offset,
            what,
            torn_tail: false,
            advice: format!(
                "The log cannot be read from this segment on{unchecked}. `chime serve` refuses to open this log. \
                 `chime log repair --force` sets this segment{and_later} aside."
            ),
        });
    }
    out
}

fn undecodable(p: &PartialScan, entry: &Entry<'_>, e: &RecordError) -> Problem {
    let path = p
        .scan
        .segments
        .get(entry.loc.segment as usize)
        .map(|s| s.file.path.clone())
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
fn warn(err: &mut dyn Write, problems: &[Problem]) -> Result<Status, LogCliError> {
    let mut status = Status::Ok;
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
            status = Status::Problem;
        }
    }
    Ok(status)
}

// ---------------------------------------------------------------------------
// dump

/// `chime log dump`: every record, oldest first, filtered.
pub fn dump(
    args: &DumpArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status, LogCliError> {
    let log_dir = log_dir_of(&args.dir.data_dir)?;
    let p = DirScan::read_partial(&log_dir, |_, _| {})?;
    let mut problems = scan_problems(&p);
    let from = args.from.unwrap_or(0);
    let limit = args.limit.unwrap_or(u64::MAX);
    let last_seq = p.scan.segments.iter().filter_map(|s| s.scan.last_seq).max();
    let seq_width = last_seq.unwrap_or(0).to_string().len();
    let mut shown = 0u64;
    let walked = p.scan.for_each(|entry| {
        if entry.seq < from {
            return Ok(());
        }
        if shown >= limit {
            return Err(None);
        }
        let record = match Record::decode(entry.payload) {
            Ok(r) => r,
            Err(e) => {
                problems.push(undecodable(&p, &entry, &e));
                return Ok(());
            }
        };
        if args.event.is_some_and(|id| id != record.event_id())
            || !(args.kind.is_empty() || args.kind.contains(&record.kind()))
        {
            return Ok(());
        }
        shown += 1;
        let line = if args.json {
            let segment = p.scan.segments[entry.loc.segment as usize]
                .file
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("");
            json_line(&entry, segment, &record)
        } else {
            text_line(entry.seq, seq_width, &record)
        };
        writeln!(out, "{line}").map_err(Some)
    });
    match walked {
        Ok(()) | Err(None) => {}
        Err(Some(e)) => return Err(LogCliError::Output(e)),
    }
    out.flush()?;
    warn(err, &problems)
}

/// One record as a line of text: sequence number, time, kind, event id and
/// a short summary.
fn text_line(seq: u64, seq_width: usize, record: &Record) -> String {
    let kind_width = RecordKind::ALL
        .iter()
        .map(|k| k.as_str().len())
        .max()
        .unwrap_or(0);
    // Six fractional digits always, so that the columns line up.
    let mut line = format!(
        "{seq:>seq_width$}  {:.6}  {:<kind_width$}  {}",
        record.at().to_timestamp(),
        record.kind().as_str(),
        record.event_id(),
    );
    let summary = summary(record);
    if !summary.is_empty() {
        line.push_str("  ");
        line.push_str(&summary);
    }
    line
}

/// The gist of a record in one short line.
fn summary(record: &Record) -> String {
    let mut s = String::new();
    match record {
        Record::EventCreated(e) => {
            let _ = write!(
                s,
                "schedule_at={} webhook={} payload={}B num_retries={}",
                e.schedule_at.to_rfc3339(),
                short(&e.webhook, 60),
                e.payload.len(),
                e.retry_conf.num_retries
            );
            if !e.headers.is_empty() {
                let _ = write!(s, " headers={}", e.headers.len());
            }
            if let Some(c) = &e.comment {
                let _ = write!(s, " comment={:?}", short(c, 40));
            }
        }
        Record::AttemptStarted { attempt_id, .. } => {
            let _ = write!(s, "attempt={attempt_id}");
        }
        Record::AttemptSucceeded {
            attempt_id,
            invocation,
            ..
        } => {
            let _ = write!(s, "attempt={attempt_id} {}", response_summary(invocation));
        }
        Record::AttemptFailed {
            attempt_id,
            invocation,
            next_retry_at,
            ..
        } => {
            let _ = write!(s, "attempt={attempt_id} {}", response_summary(invocation));
            match next_retry_at {
                Some(t) => {
                    let _ = write!(s, " next_retry_at={}", t.to_rfc3339());
                }
                None => s.push_str(" no tries left"),
            }
        }
        Record::AttemptInterrupted {
            attempt_id,
            give_up,
            reason,
            ..
        } => {
            let _ = write!(
                s,
                "attempt={attempt_id} give_up={give_up} reason={:?}",
                short(reason, 60)
            );
        }
        Record::EventExpired { .. } | Record::EventCancelled { .. } => {}
    }
    s
}

fn response_summary(invocation: &Invocation) -> String {
    match &invocation.response {
        InvocationResponse::Webhook { status, .. } => format!("status={status}"),
        InvocationResponse::ClientError { message } => format!("error={:?}", short(message, 60)),
    }
}

/// `text` cut to at most `max` characters, with an ellipsis when cut, and
/// with control characters replaced so one record stays one line.
fn short(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// One record as one JSON object.
fn json_line(entry: &Entry<'_>, segment: &str, record: &Record) -> String {
    let line = JsonRecord {
        seq: entry.seq,
        segment,
        offset: entry.loc.offset,
        at: record.at().to_rfc3339(),
        kind: record.kind().as_str(),
        event_id: record.event_id(),
        details: JsonDetails::of(record),
    };
    // Serializing these types to a string cannot fail: every key is a
    // string and every value is plain data or checked JSON text.
    serde_json::to_string(&line)
        .unwrap_or_else(|e| format!(r#"{{"seq":{},"error":{:?}}}"#, entry.seq, e.to_string()))
}

#[derive(Serialize)]
struct JsonRecord<'a> {
    seq: u64,
    segment: &'a str,
    offset: u32,
    at: String,
    kind: &'static str,
    event_id: EventId,
    #[serde(flatten)]
    details: JsonDetails<'a>,
}

/// A record's own fields, flattened into its JSON line.
#[derive(Serialize)]
#[serde(untagged)]
enum JsonDetails<'a> {
    Created {
        schedule_at: String,
        webhook: &'a str,
        payload: JsonText<'a>,
        headers: Vec<JsonHeader<'a>>,
        retry_conf: &'a crate::record::RetryConf,
        comment: Option<&'a str>,
    },
    Started {
        attempt_id: uuid::Uuid,
    },
    Finished {
        attempt_id: uuid::Uuid,
        invocation: JsonInvocation<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_retry_at: Option<Option<String>>,
    },
    Interrupted {
        attempt_id: uuid::Uuid,
        give_up: bool,
        reason: &'a str,
    },
    Nothing {},
}

impl<'a> JsonDetails<'a> {
    fn of(record: &'a Record) -> Self {
        match record {
            Record::EventCreated(e) => JsonDetails::Created {
                schedule_at: e.schedule_at.to_rfc3339(),
                webhook: &e.webhook,
                payload: JsonText(&e.payload),
                headers: e
                    .headers
                    .iter()
                    .map(|h| match &h.value {
                        HeaderValue::Value(v) => JsonHeader {
                            name: &h.name,
                            value: Some(v),
                            value_from_env: None,
                        },
                        HeaderValue::FromEnv(n) => JsonHeader {
                            name: &h.name,
                            value: None,
                            value_from_env: Some(n),
                        },
                    })
                    .collect(),
                retry_conf: &e.retry_conf,
                comment: e.comment.as_deref(),
            },
            Record::AttemptStarted { attempt_id, .. } => JsonDetails::Started {
                attempt_id: *attempt_id,
            },
            Record::AttemptSucceeded {
                attempt_id,
                invocation,
                ..
            } => JsonDetails::Finished {
                attempt_id: *attempt_id,
                invocation: JsonInvocation::of(invocation),
                next_retry_at: None,
            },
            Record::AttemptFailed {
                attempt_id,
                invocation,
                next_retry_at,
                ..
            } => JsonDetails::Finished {
                attempt_id: *attempt_id,
                invocation: JsonInvocation::of(invocation),
                next_retry_at: Some(next_retry_at.map(UnixMicros::to_rfc3339)),
            },
            Record::AttemptInterrupted {
                attempt_id,
                give_up,
                reason,
                ..
            } => JsonDetails::Interrupted {
                attempt_id: *attempt_id,
                give_up: *give_up,
                reason,
            },
            Record::EventExpired { .. } | Record::EventCancelled { .. } => JsonDetails::Nothing {},
        }
    }
}

/// A header as Hasura writes one: a literal `value` or `value_from_env`.
#[derive(Serialize)]
struct JsonHeader<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_from_env: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonInvocation<'a> {
    request: JsonRequest<'a>,
    response: JsonResponse<'a>,
}

#[derive(Serialize)]
struct JsonRequest<'a> {
    body: JsonText<'a>,
    headers: Vec<JsonPair<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum JsonResponse<'a> {
    Webhook {
        status: u16,
        headers: Vec<JsonPair<'a>>,
        body: JsonBody<'a>,
        truncated: bool,
    },
    ClientError {
        error: &'a str,
    },
}

#[derive(Serialize)]
struct JsonPair<'a> {
    name: &'a str,
    value: &'a str,
}

impl<'a> JsonInvocation<'a> {
    fn of(invocation: &'a Invocation) -> Self {
        let pairs = |headers: &'a [(String, String)]| {
            headers
                .iter()
                .map(|(name, value)| JsonPair { name, value })
                .collect()
        };
        JsonInvocation {
            request: JsonRequest {
                body: JsonText(&invocation.request_body),
                headers: pairs(&invocation.request_headers),
            },
            response: match &invocation.response {
                InvocationResponse::Webhook {
                    status,
                    headers,
                    body,
                    truncated,
                } => JsonResponse::Webhook {
                    status: *status,
                    headers: pairs(headers),
                    body: JsonBody(body),
                    truncated: *truncated,
                },
                InvocationResponse::ClientError { message } => {
                    JsonResponse::ClientError { error: message }
                }
            },
        }
    }
}

/// Text that is JSON (a payload, a request body): written as that JSON,
/// byte for byte, so `jq` sees the user's value and not an escaped string.
/// Falls back to a string if the text is not JSON after all.
struct JsonText<'a>(&'a str);

impl Serialize for JsonText<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&RawValue>(self.0) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_str(self.0),
        }
    }
}

/// A response body: JSON when it is JSON, else text (invalid UTF-8 replaced).
struct JsonBody<'a>(&'a [u8]);

impl Serialize for JsonBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => JsonText(text).serialize(s),
            Err(_) => s.serialize_str(&String::from_utf8_lossy(self.0)),
        }
    }
}

// ---------------------------------------------------------------------------
// stats

/// `chime log stats`: segments, records by kind, events by status, the next
/// due time and the time span covered.
pub fn stats(
    args: &StatsArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status, LogCliError> {
    let log_dir = log_dir_of(&args.dir.data_dir)?;
    let p = DirScan::read_partial(&log_dir, |_, _| {})?;
    let mut problems = scan_problems(&p);
    let mut by_kind = [0u64; RecordKind::ALL.len()];
    let mut projection = Projection::new();
    let mut cancelled = 0u64;
    let mut ignored = 0u64;
    let mut span: Option<(UnixMicros, UnixMicros)> = None;
    let mut records = 0u64;
    p.scan
        .for_each(|entry| {
            records += 1;
            let record = match Record::decode(entry.payload) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(undecodable(&p, &entry, &e));
                    return Ok::<(), ()>(());
                }
            };
            let kind = record.kind();
            if let Some(i) = RecordKind::ALL.iter().position(|&k| k == kind) {
                by_kind[i] += 1;
            }
            let at = record.at();
            span = Some(span.map_or((at, at), |(a, b)| (a.min(at), b.max(at))));
            match projection.apply(entry.loc, &record) {
                Applied::Changed if kind == RecordKind::EventCancelled => cancelled += 1,
                Applied::Changed => {}
                Applied::Ignored(_) => ignored += 1,
            }
            Ok(())
        })
        .ok();
    let segments = segment_rows(&p);
    let stats = JsonStats {
        data_dir: &args.dir.data_dir,
        bytes: segments.iter().map(|s| s.bytes).sum(),
        segments,
        records: JsonRecords {
            total: records,
            first_seq: p
                .scan
                .segments
                .first()
                .map(|s| s.file.base_seq)
                .filter(|_| records > 0),
            last_seq: p.scan.segments.iter().filter_map(|s| s.scan.last_seq).max(),
            by_kind: RecordKind::ALL
                .iter()
                .zip(by_kind)
                .map(|(k, n)| (k.as_str(), n))
                .collect(),
            ignored,
        },
        events: JsonEvents {
            total: projection.len() as u64,
            by_status: EventStatus::ALL
                .iter()
                .zip(projection.counts())
                .map(|(s, n)| (s.as_str(), n as u64))
                .collect(),
            cancelled,
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
    segments: Vec<SegmentRow>,
    records: JsonRecords,
    events: JsonEvents,
    next_due: Option<JsonDue>,
    time_span: Option<JsonSpan>,
    /// Damage found, first first; empty when the log is sound.
    problems: Vec<String>,
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
}

#[derive(Serialize)]
struct JsonEvents {
    /// Events in view (not cancelled).
    total: u64,
    by_status: std::collections::BTreeMap<&'static str, u64>,
    cancelled: u64,
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

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn segment_rows(p: &PartialScan) -> Vec<SegmentRow> {
    let unscanned = p.stopped.as_ref().map_or(&[][..], |s| &s.unscanned[..]);
    let total = p.scan.segments.len() + unscanned.len();
    let state = |i: usize| if i + 1 == total { "active" } else { "sealed" };
    let mut rows: Vec<SegmentRow> = p
        .scan
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| SegmentRow {
            name: file_name(&s.file.path),
            bytes: s.file_len,
            records: s.scan.records,
            first_seq: s.scan.last_seq.map(|_| s.file.base_seq),
            last_seq: s.scan.last_seq,
            state: state(i),
            damaged_at: s.scan.damage.as_ref().map(|d| d.bad_at as u64),
            unreadable: None,
        })
        .collect();
    for (j, f) in unscanned.iter().enumerate() {
        let reason = match (j, p.stopped.as_ref().map(|s| &s.error)) {
            (0, Some(LogError::Corruption { reason, .. })) => reason.clone(),
            _ => "not checked: an earlier segment cannot be read".into(),
        };
        rows.push(SegmentRow {
            name: file_name(&f.path),
            bytes: std::fs::metadata(&f.path).map_or(0, |m| m.len()),
            records: 0,
            first_seq: None,
            last_seq: None,
            state: state(p.scan.segments.len() + j),
            damaged_at: None,
            unreadable: Some(reason),
        });
    }
    rows
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
            state,
        ]);
    }
    write_table(out, &table, &[false, true, true, true, true, false])?;
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
        "events      {} (and {} cancelled)",
        s.events.total, s.events.cancelled
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
    for p in &s.problems {
        writeln!(out, "damage      {p}")?;
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

// ---------------------------------------------------------------------------
// verify

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
) -> Result<Status, LogCliError> {
    let log_dir = log_dir_of(&args.dir.data_dir)?;
    let mut bar_line = Progress::new(progress);
    let p = DirScan::read_partial(&log_dir, |done, total| {
        bar_line.update(err, || {
            format!(
                "checking frames  {} segment {done} of {total}",
                bar(done as u64, total as u64, 30)
            )
        });
    })?;
    let mut problems = scan_problems(&p);
    let total = p.scan.records();
    let mut decoded = 0u64;
    let mut undecodable_count = 0u64;
    p.scan
        .for_each(|entry| {
            if let Err(e) = Record::decode(entry.payload) {
                undecodable_count += 1;
                // Enough to act on; the count says how many in all.
                if undecodable_count <= 10 {
                    problems.push(undecodable(&p, &entry, &e));
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

    let bytes: u64 = p.scan.segments.iter().map(|s| s.file_len).sum();
    let unscanned = p.stopped.as_ref().map_or(0, |s| s.unscanned.len());
    write!(
        out,
        "checked {} ({bytes} bytes): {}",
        plural(p.scan.segments.len() as u64, "segment"),
        plural(total, "record")
    )?;
    let first = p.scan.segments.first().map(|s| s.file.base_seq);
    let last = p.scan.segments.iter().filter_map(|s| s.scan.last_seq).max();
    // Past damage the numbers have gaps, and a range would hide them.
    if let (Some(first), Some(last), true) = (first, last, problems.is_empty()) {
        write!(out, " in whole batches, sequence numbers {first}..={last}")?;
    }
    writeln!(out)?;
    if unscanned > 0 {
        writeln!(
            out,
            "could not check {} (see below)",
            plural(unscanned as u64, "segment")
        )?;
    }
    if problems.is_empty() {
        writeln!(
            out,
            "ok: every frame's checksum matches, sequence numbers run without gaps, every record decodes"
        )?;
        return Ok(Status::Ok);
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
    Ok(Status::Problem)
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

// ---------------------------------------------------------------------------
// repair

/// Frames with valid checksums found in bytes that are about to be dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Frames {
    count: u64,
    /// The first and last sequence numbers seen.
    seqs: Option<(u64, u64)>,
}

impl Frames {
    fn add(&mut self, other: Frames) {
        self.count += other.count;
        self.seqs = match (self.seqs, other.seqs) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (a, b) => a.or(b),
        };
    }

    fn describe(&self) -> String {
        match self.seqs {
            Some((first, last)) => format!(
                "{} with valid checksums (sequence numbers {first}..={last})",
                plural(self.count, "record")
            ),
            None => "no record with a valid checksum".into(),
        }
    }
}

/// Counts the frames with valid checksums in `bytes[from..]`, resyncing byte
/// by byte past damage. Only frames whose sequence number is at or after
/// `min_seq`, and could follow it within the segment, are tried, which
/// keeps the cost linear even across zero fill.
fn count_frames(bytes: &[u8], from: usize, mut min_seq: u64) -> Frames {
    let mut found = Frames::default();
    let max_gap = (bytes.len() / (FRAME_HEADER_LEN + 1)) as u64;
    let mut at = from.max(HEADER_LEN);
    while at + FRAME_HEADER_LEN < bytes.len() {
        let rest = &bytes[at..];
        let len = (u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) & 0x7fff_ffff) as usize;
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&rest[8..16]);
        let seq = u64::from_le_bytes(seq_bytes);
        let plausible = len != 0
            && len <= MAX_PAYLOAD
            && len <= rest.len() - FRAME_HEADER_LEN
            && seq >= min_seq
            && seq - min_seq <= max_gap;
        if plausible && let Ok(f) = frame::decode_frame(bytes, at) {
            found.add(Frames {
                count: 1,
                seqs: Some((f.seq, f.seq)),
            });
            min_seq = f.seq + 1;
            at = f.end;
        } else {
            at += 1;
        }
    }
    found
}

/// A segment to cut back to its last whole batch before the damage.
#[derive(Debug)]
struct Cut {
    path: PathBuf,
    keep: u64,
    len: u64,
    /// Frames with valid checksums in the part cut off.
    lost: Frames,
    /// The last sequence number left in the segment.
    last_kept: Option<u64>,
}

/// A segment to set aside whole.
#[derive(Debug)]
struct Aside {
    path: PathBuf,
    bytes: u64,
    frames: Frames,
}

/// What `repair` will do: cut one segment, set the later ones aside.
#[derive(Debug)]
struct Plan {
    /// The first damage, what the plan mends.
    damage: Problem,
    cut: Option<Cut>,
    aside: Vec<Aside>,
    /// Where the log will end, if anything is left.
    ends_at: Option<u64>,
}

impl Plan {
    /// The plan for a scan, or `None` when there is no frame damage.
    fn of(p: &PartialScan) -> Result<Option<Plan>, LogCliError> {
        let Some(damage) = scan_problems(p).into_iter().next() else {
            return Ok(None);
        };
        let segments = &p.scan.segments;
        let damaged = segments.iter().position(|s| s.scan.damage.is_some());
        let mut cut = None;
        let mut aside = Vec::new();
        let (first_aside, ends_at) = match damaged {
            Some(i) => {
                let s = &segments[i];
                let keep = s
                    .scan
                    .damage
                    .as_ref()
                    .map_or(s.file_len, |d| d.offset as u64);
                let after = s.scan.last_seq.map_or(s.file.base_seq, |q| q + 1);
                cut = Some(Cut {
                    path: s.file.path.clone(),
                    keep,
                    len: s.file_len,
                    lost: count_frames(s.bytes(), keep as usize, after),
                    last_kept: s.scan.last_seq,
                });
                (
                    i + 1,
                    segments[..=i].iter().filter_map(|s| s.scan.last_seq).max(),
                )
            }
            None => (
                segments.len(),
                segments.iter().filter_map(|s| s.scan.last_seq).max(),
            ),
        };
        for s in &segments[first_aside..] {
            aside.push(Aside {
                path: s.file.path.clone(),
                bytes: s.file_len,
                frames: count_frames(s.bytes(), HEADER_LEN, s.file.base_seq),
            });
        }
        for f in p.stopped.iter().flat_map(|s| &s.unscanned) {
            aside.push(aside_of_file(f)?);
        }
        Ok(Some(Plan {
            damage,
            cut,
            aside,
            ends_at,
        }))
    }

    /// Whether this is the torn tail recovery would cut on its own.
    fn is_torn_tail(&self) -> bool {
        self.damage.torn_tail && self.aside.is_empty()
    }

    fn describe(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut bytes = 0;
        let mut lost = Frames::default();
        if let Some(c) = &self.cut {
            writeln!(
                out,
                "  cut {} from {} back to {} bytes (its last whole batch{}), dropping {} bytes: {}",
                file_name(&c.path),
                c.len,
                c.keep,
                c.last_kept
                    .map_or_else(String::new, |q| format!(" ends at sequence number {q}")),
                c.len - c.keep,
                c.lost.describe()
            )?;
            bytes += c.len - c.keep;
            lost.add(c.lost);
        }
        let mut aside_bytes = 0;
        let mut aside_frames = Frames::default();
        for a in &self.aside {
            if self.aside.len() <= Self::LIST_ASIDE {
                writeln!(
                    out,
                    "  set aside {} ({} bytes): {}",
                    file_name(&a.path),
                    a.bytes,
                    a.frames.describe()
                )?;
            }
            aside_bytes += a.bytes;
            aside_frames.add(a.frames);
        }
        if let (Some(first), Some(last)) = (self.aside.first(), self.aside.last())
            && self.aside.len() > Self::LIST_ASIDE
        {
            writeln!(
                out,
                "  set aside {}, {} to {} ({aside_bytes} bytes): {}",
                plural(self.aside.len() as u64, "segment"),
                file_name(&first.path),
                file_name(&last.path),
                aside_frames.describe()
            )?;
        }
        bytes += aside_bytes;
        lost.add(aside_frames);
        let first_lost = self.ends_at.map_or(1, |q| q + 1);
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
        let end = self.ends_at.map_or_else(
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

    /// Segments to set aside beyond this many are summed up in one line.
    const LIST_ASIDE: usize = 5;
}

fn aside_of_file(f: &SegmentFile) -> Result<Aside, LogCliError> {
    let bytes = std::fs::metadata(&f.path)
        .map_err(LogCliError::io("stat", &f.path))?
        .len();
    // A segment that cannot even be mapped is still set aside whole; only
    // the count of what is in it is lost.
    let frames = segment::map(&StdFs, &f.path)
        .map(|map| count_frames(&map, HEADER_LEN, f.base_seq))
        .unwrap_or_default();
    Ok(Aside {
        path: f.path.clone(),
        bytes,
        frames,
    })
}

/// `<path>.broken`, or `<path>.broken.N` if that is taken: the name a file
/// is kept under when repair changes or removes it.
fn broken_name(path: &Path) -> PathBuf {
    let base = path.as_os_str().to_owned();
    (0u32..)
        .map(|n| {
            let mut name = base.clone();
            name.push(".broken");
            if n > 0 {
                name.push(format!(".{n}"));
            }
            PathBuf::from(name)
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| path.with_extension("seg.broken"))
}

/// `chime log repair`: cuts a torn tail, or (with `--force`) damage
/// anywhere, so that the log opens again. Takes the data-dir lock.
pub fn repair(
    args: &RepairArgs,
    out: &mut dyn Write,
    _err: &mut dyn Write,
) -> Result<Status, LogCliError> {
    let data = match DataDir::lock(&args.dir.data_dir, false) {
        Ok(d) => d,
        Err(DataDirError::Missing(path)) => return Err(LogCliError::NoDataDir(path)),
        Err(DataDirError::Locked { path }) => return Err(LogCliError::Locked(path)),
        Err(e) => return Err(LogCliError::DataDir(e)),
    };
    let log_dir = log_dir_of(data.root())?;
    let plan = {
        let p = DirScan::read_partial(&log_dir, |_, _| {})?;
        match Plan::of(&p)? {
            Some(plan) => plan,
            None => {
                writeln!(
                    out,
                    "nothing to repair: every frame of the {} is whole ({}); `chime log verify` also decodes the records",
                    plural(p.scan.segments.len() as u64, "segment"),
                    plural(p.scan.records(), "record")
                )?;
                return Ok(Status::Ok);
            }
        }
        // The scan's maps are dropped here, before any file changes.
    };
    writeln!(out, "damaged: {}", plan.damage.headline())?;
    if plan.is_torn_tail() {
        writeln!(
            out,
            "a torn tail (its bytes were never acknowledged); repair will:"
        )?;
        plan.describe(out)?;
    } else if args.force {
        writeln!(
            out,
            "not a torn tail: acknowledged records will be lost. --force given, so repair will:"
        )?;
        plan.describe(out)?;
    } else {
        writeln!(
            out,
            "refusing: this is not a torn tail, and mending it loses acknowledged records. `chime log repair --force` would:"
        )?;
        plan.describe(out)?;
        writeln!(
            out,
            "restore the data dir from a backup if you have one; otherwise run again with --force"
        )?;
        return Ok(Status::Problem);
    }
    // Say what is about to happen before doing it.
    out.flush()?;
    execute(&plan, &log_dir, out)?;

    let after = DirScan::read_partial(&log_dir, |_, _| {})?;
    let left = scan_problems(&after);
    if let Some(p) = left.first() {
        writeln!(out, "still damaged: {}", p.headline())?;
        writeln!(out, "  run `chime log repair` again to see what remains")?;
        return Ok(Status::Problem);
    }
    writeln!(
        out,
        "the log is sound: {}, {}",
        plural(after.scan.segments.len() as u64, "segment"),
        plural(after.scan.records(), "record")
    )?;
    Ok(Status::Ok)
}

/// Carries out a plan. Order matters for a crash half way: later segments
/// are set aside newest first, so what is left is always a run of segments
/// from the oldest; the cut comes last, after a copy of the segment is
/// durable. Running repair again after a crash finishes the job.
fn execute(plan: &Plan, log_dir: &Path, out: &mut dyn Write) -> Result<(), LogCliError> {
    if let Some(c) = &plan.cut {
        let copy = broken_name(&c.path);
        std::fs::copy(&c.path, &copy).map_err(LogCliError::io("copy", &c.path))?;
        std::fs::File::open(&copy)
            .and_then(|f| f.sync_all())
            .map_err(LogCliError::io("fsync", &copy))?;
        writeln!(out, "copied {} to {}", file_name(&c.path), file_name(&copy))?;
    }
    for a in plan.aside.iter().rev() {
        let to = broken_name(&a.path);
        std::fs::rename(&a.path, &to).map_err(LogCliError::io("rename", &a.path))?;
        if plan.aside.len() <= Plan::LIST_ASIDE {
            writeln!(
                out,
                "set aside {} as {}",
                file_name(&a.path),
                file_name(&to)
            )?;
        }
    }
    if plan.aside.len() > Plan::LIST_ASIDE {
        writeln!(
            out,
            "set aside {} as <name>.seg.broken",
            plural(plan.aside.len() as u64, "segment")
        )?;
    }
    StdFs.sync_dir(log_dir).map_err(|e| LogError::Io {
        op: "fsync directory",
        path: log_dir.to_path_buf(),
        source: e,
    })?;
    if let Some(c) = &plan.cut {
        truncate_segment(&StdFs, &c.path, c.keep)?;
        writeln!(
            out,
            "cut {} to {} bytes, dropped {} bytes",
            file_name(&c.path),
            c.keep,
            c.len - c.keep
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cuts_on_characters_and_keeps_one_line() {
        assert_eq!(short("héllo", 10), "héllo");
        assert_eq!(short("héllo", 2), "hé…");
        assert_eq!(short("a\nb", 5), "a b");
    }

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(bar(0, 10, 4), "[    ]");
        assert_eq!(bar(5, 10, 4), "[##  ]");
        assert_eq!(bar(10, 10, 4), "[####]");
        assert_eq!(bar(0, 0, 2), "[##]");
    }

    #[test]
    fn json_text_is_embedded_as_json_or_falls_back_to_a_string() {
        let v = serde_json::to_string(&JsonText(r#"{"b":1.50,"a":2}"#)).unwrap();
        assert_eq!(v, r#"{"b":1.50,"a":2}"#, "kept byte for byte");
        let v = serde_json::to_string(&JsonText("not json")).unwrap();
        assert_eq!(v, r#""not json""#);
        let v = serde_json::to_string(&JsonBody(&[0xff, b'a'])).unwrap();
        assert_eq!(v, "\"\u{fffd}a\"");
    }

    #[test]
    fn count_frames_resyncs_past_damage_and_zero_fill() {
        let mut bytes = frame::encode_header(5).to_vec();
        for seq in 5..10 {
            frame::encode_frame(&mut bytes, seq, b"payload", false);
        }
        let clean = count_frames(&bytes, HEADER_LEN, 5);
        assert_eq!(
            clean,
            Frames {
                count: 5,
                seqs: Some((5, 9))
            }
        );
        // Damage the second frame; the other four are still found.
        bytes[HEADER_LEN + 23 + FRAME_HEADER_LEN + 2] ^= 0xff;
        bytes.extend_from_slice(&[0u8; 4096]);
        let damaged = count_frames(&bytes, HEADER_LEN, 5);
        assert_eq!(damaged.count, 4);
        assert_eq!(damaged.seqs, Some((5, 9)));
    }

    #[test]
    fn every_record_kind_has_a_json_shape() {
        let id = uuid::Uuid::from_u128(1);
        let at = UnixMicros(0);
        let records = [
            Record::EventExpired { event_id: id, at },
            Record::AttemptStarted {
                event_id: id,
                attempt_id: id,
                at,
            },
        ];
        for r in &records {
            let entry = Entry {
                seq: 1,
                loc: crate::log::Loc {
                    segment: 0,
                    offset: 32,
                },
                payload: &[],
            };
            let line = json_line(&entry, "x.seg", r);
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["kind"], r.kind().as_str());
            assert_eq!(v["event_id"], id.to_string());
        }
    }
}
