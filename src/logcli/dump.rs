//! `chime log dump`: every record, oldest first, as a line of text or one
//! JSON object each.

use std::fmt::Write as _;
use std::io::Write;

use clap::Args;
use serde::Serialize;
use serde::ser::Serializer;
use serde_json::value::RawValue;

use super::report::{problems, undecodable, warn};
use super::{DataDirArg, ExitStatus, LogCliError, read_log};
use crate::log::Entry;
use crate::record::{
    EventId, HeaderSource, Invocation, InvocationResponse, Record, RecordKind, UnixMicros,
};

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

fn parse_kind(name: &str) -> Result<RecordKind, String> {
    RecordKind::parse(name).ok_or_else(|| {
        let known: Vec<&str> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown record kind (known: {})", known.join(", "))
    })
}

/// `chime log dump`: every record, oldest first, filtered.
pub fn dump(
    args: &DumpArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitStatus, LogCliError> {
    let log = read_log(&args.dir.data_dir, |_, _| {})?;
    let mut problems = problems(&log);
    let from = args.from.unwrap_or(0);
    let limit = args.limit.unwrap_or(u64::MAX);
    let seq_width = log.last_seq().unwrap_or(0).to_string().len();
    let mut shown = 0u64;
    let walked = log.for_each(|entry| {
        if entry.seq < from {
            return Ok(());
        }
        if shown >= limit {
            return Err(None);
        }
        let record = match Record::decode(entry.payload) {
            Ok(r) => r,
            Err(e) => {
                problems.push(undecodable(&log, &entry, &e));
                return Ok(());
            }
        };
        if args.event.is_some_and(|id| Some(id) != record.event_id())
            || !(args.kind.is_empty() || args.kind.contains(&record.kind()))
        {
            return Ok(());
        }
        shown += 1;
        let line = if args.json {
            let segment = log
                .segment_path(entry.loc)
                .and_then(|p| p.file_name())
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
        // A record about many events (a retirement) has a dash, as wide as
        // an id so that the columns still line up.
        record
            .event_id()
            .map_or_else(|| format!("{:<36}", "-"), |id| id.to_string()),
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
        Record::EventsRetired {
            finished_before, ..
        } => {
            let _ = write!(s, "finished_before={}", finished_before.to_rfc3339());
        }
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
    /// Absent for a record about many events (a retirement).
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<EventId>,
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
        retry_conf: serde_json::Value,
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
    Retired {
        finished_before: String,
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
                        HeaderSource::Value(v) => JsonHeader {
                            name: &h.name,
                            value: Some(v),
                            value_from_env: None,
                        },
                        HeaderSource::FromEnv(n) => JsonHeader {
                            name: &h.name,
                            value: None,
                            value_from_env: Some(n),
                        },
                    })
                    .collect(),
                retry_conf: crate::hasura::render_retry_conf(&e.retry_conf),
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
            Record::EventsRetired {
                finished_before, ..
            } => JsonDetails::Retired {
                finished_before: finished_before.to_rfc3339(),
            },
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
    fn json_text_is_embedded_as_json_or_falls_back_to_a_string() {
        let v = serde_json::to_string(&JsonText(r#"{"b":1.50,"a":2}"#)).unwrap();
        assert_eq!(v, r#"{"b":1.50,"a":2}"#, "kept byte for byte");
        let v = serde_json::to_string(&JsonText("not json")).unwrap();
        assert_eq!(v, r#""not json""#);
        let v = serde_json::to_string(&JsonBody(&[0xff, b'a'])).unwrap();
        assert_eq!(v, "\"\u{fffd}a\"");
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

    /// A retirement names no event: a dash where the id goes, as wide as
    /// one so the columns line up, and no `event_id` in JSON.
    #[test]
    fn a_retirement_shows_its_cut_off_and_no_event() {
        let r = Record::EventsRetired {
            finished_before: UnixMicros(1_500_000),
            at: UnixMicros(2_000_000),
        };
        let expired = Record::EventExpired {
            event_id: uuid::Uuid::from_u128(1),
            at: UnixMicros(2_000_000),
        };
        let line = text_line(7, 1, &r);
        assert!(
            line.ends_with("events_retired       -                                     finished_before=1970-01-01T00:00:01.5Z"),
            "{line}"
        );
        let summary_at = |l: &str| l.find("finished_before").unwrap_or(l.len());
        assert_eq!(summary_at(&line), text_line(7, 1, &expired).len() + 2);
        let entry = Entry {
            seq: 7,
            loc: crate::log::Loc {
                segment: 0,
                offset: 32,
            },
            payload: &[],
        };
        let v: serde_json::Value = serde_json::from_str(&json_line(&entry, "x.seg", &r)).unwrap();
        assert_eq!(v["kind"], "events_retired");
        assert!(v.get("event_id").is_none(), "{v}");
        assert_eq!(v["finished_before"], "1970-01-01T00:00:01.5Z");
    }
}
