//! Records: every action chime takes, as it is written to the log.
//!
//! This module owns the record types and their byte encoding. It is the only
//! place that knows the encoding is postcard: the log below it sees opaque
//! payload bytes, the projections above it see typed [`Record`]s.
//!
//! Encoding: `[schema version: u8] ++ postcard(Record)`. The version byte lets
//! a later release change the record types and still read old logs; a reader
//! refuses a version it does not know instead of guessing. Version 3 adds
//! `retry_conf`'s backoff ([`Backoff`], `max_retry_interval_seconds`);
//! version 2 had neither and is still read ([`v2`], as fixed backoff).
//! Version 2 kept `retry_conf`'s spans as [`Seconds`] (to the microsecond,
//! as Hasura takes `1.5`); version 1 kept whole seconds, and is still read
//! ([`v1`]).
//!
//! JSON supplied by users (the event payload) is kept as its raw text: a
//! `serde_json::Value` does not round-trip through postcard, and keeping the
//! text also keeps the user's key order and number spelling byte for byte.

use serde::{Deserialize, Serialize};

/// The schema version written in front of every record.
pub const SCHEMA_VERSION: u8 = 3;

/// An event's id: a UUID, as Hasura's `event_id`.
pub type EventId = uuid::Uuid;

/// An attempt's id, which is also the id of its invocation log entry.
pub type AttemptId = uuid::Uuid;

/// A point in time as microseconds since the Unix epoch, UTC.
///
/// Microseconds because Hasura accepts and shows fractional seconds down to
/// microseconds; an `i64` of them spans ±292,000 years and encodes compactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixMicros(pub i64);

impl UnixMicros {
    /// Converts from a `jiff` timestamp, dropping sub-microsecond precision.
    pub fn from_timestamp(ts: jiff::Timestamp) -> Self {
        // as_microsecond() floors toward negative infinity and never fails.
        UnixMicros(ts.as_microsecond())
    }

    /// Converts to a `jiff` timestamp; out-of-range values clamp to jiff's limits.
    pub fn to_timestamp(self) -> jiff::Timestamp {
        jiff::Timestamp::from_microsecond(self.0).unwrap_or(if self.0 < 0 {
            jiff::Timestamp::MIN
        } else {
            jiff::Timestamp::MAX
        })
    }

    /// Formats as RFC 3339 in UTC with a `Z`, as Hasura shows times.
    pub fn to_rfc3339(self) -> String {
        // jiff's Display for Timestamp is RFC 3339 with a `Z` and only as
        // many fractional digits as are needed.
        self.to_timestamp().to_string()
    }

    /// Adds a span, saturating.
    pub fn plus(self, span: Seconds) -> Self {
        UnixMicros(self.0.saturating_add(span.as_micros_i64()))
    }
}

/// A span of time as Hasura's `retry_conf` gives it: seconds, which may be
/// fractional (`1.5`), kept to the microsecond (finer digits are cut, as
/// for `schedule_at`). A `u64` of microseconds spans 584,000 years; longer
/// spans saturate, which for a tolerance still means "never too late".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seconds(u64);

impl Seconds {
    /// Whole seconds, saturating.
    pub const fn whole(seconds: u64) -> Seconds {
        Seconds(seconds.saturating_mul(1_000_000))
    }

    pub const fn from_micros(micros: u64) -> Seconds {
        Seconds(micros)
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The span in microseconds as an `i64`, saturating, for time arithmetic.
    pub fn as_micros_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    pub const fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_micros(self.0)
    }

    /// As Hasura shows it in JSON: a whole number when whole (`10`), else a
    /// decimal (`1.5`).
    pub fn to_json(self) -> serde_json::Value {
        if self.0.is_multiple_of(1_000_000) {
            serde_json::Value::from(self.0 / 1_000_000)
        } else {
            // The shortest decimal that reads back as this f64: `0.1` for
            // 100,000 µs. Exact below 2^53 µs (285 years).
            serde_json::Value::from(self.0 as f64 / 1_000_000.0)
        }
    }
}

impl std::fmt::Display for Seconds {
    /// Exact decimal seconds, without trailing zeros: `10`, `1.5`, `0.000001`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, micros) = (self.0 / 1_000_000, self.0 % 1_000_000);
        if micros == 0 {
            return write!(f, "{whole}");
        }
        let fraction = format!("{micros:06}");
        write!(f, "{whole}.{}", fraction.trim_end_matches('0'))
    }
}

/// Every action chime takes is one of these, appended to the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A one-off scheduled event was created (`create_scheduled_event`).
    EventCreated(EventCreated),
    /// An attempt to call the webhook is about to start.
    AttemptStarted {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
    },
    /// The webhook answered 2xx: the event is delivered.
    AttemptSucceeded {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
        invocation: Invocation,
    },
    /// The attempt failed. `next_retry_at` is when to try again, or `None`
    /// when no tries are left and the event ends as `error`.
    AttemptFailed {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
        invocation: Invocation,
        next_retry_at: Option<UnixMicros>,
    },
    /// An attempt was in flight when the process stopped, so its outcome is
    /// unknown. It does not use up one of the event's tries; after
    /// `--max-interrupted-attempts` of them (default
    /// [`MAX_INTERRUPTED_ATTEMPTS`]) the event gives up (`give_up`)
    /// and ends as `error`, with `reason` shown in its invocation log.
    AttemptInterrupted {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
        give_up: bool,
        reason: String,
    },
    /// The event was too late to send (`now - scheduled_time >
    /// tolerance_seconds`): it is `dead`, with no attempt made.
    EventExpired { event_id: EventId, at: UnixMicros },
    /// The event was deleted (`delete_scheduled_event`): it disappears from
    /// every API view and is never sent.
    EventCancelled { event_id: EventId, at: UnixMicros },
    /// Retention (`--retain-finished`): every event that finished
    /// (delivered, error, dead) before `finished_before` leaves every API
    /// view, with its invocation logs. A record, not a clock read during
    /// replay, so that replay stays deterministic. Last in the enum:
    /// postcard numbers variants by position, so existing logs keep
    /// decoding.
    EventsRetired {
        /// An event finished at exactly this time stays.
        finished_before: UnixMicros,
        at: UnixMicros,
    },
}

/// How many interrupted attempts an event survives before it gives up, by
/// default.
pub const MAX_INTERRUPTED_ATTEMPTS: u32 = 3;

/// The arguments of `create_scheduled_event`, resolved and validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCreated {
    pub event_id: EventId,
    /// The webhook URL template; `{{VAR}}` placeholders are resolved from the
    /// server's environment at delivery time, never stored resolved.
    pub webhook: String,
    pub schedule_at: UnixMicros,
    /// The payload as raw JSON text (`null` when absent).
    pub payload: String,
    pub headers: Vec<HeaderConf>,
    pub retry_conf: RetryConf,
    pub comment: Option<String>,
    pub created_at: UnixMicros,
}

/// One configured header: a literal value, or the *name* of an environment
/// variable whose value is read at delivery time (its value is never stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderConf {
    pub name: String,
    pub value: HeaderSource,
}

/// Where a header's value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeaderSource {
    Value(String),
    FromEnv(String),
}

/// Hasura's `retry_conf`, with chime's backoff (`retry_backoff`,
/// `max_retry_interval_seconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryConf {
    pub num_retries: u32,
    pub retry_interval_seconds: Seconds,
    pub timeout_seconds: Seconds,
    pub tolerance_seconds: Seconds,
    pub backoff: Backoff,
    /// The longest an exponential backoff waits.
    pub max_retry_interval_seconds: Seconds,
}

/// How the wait before a retry grows (`retry_conf.retry_backoff`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backoff {
    /// Every retry waits `retry_interval_seconds`: Hasura's behaviour.
    #[default]
    Fixed,
    /// Retry n waits `min(max_retry_interval_seconds,
    /// retry_interval_seconds × 2^(n−1))`, less up to 10% at random.
    Exponential,
}

/// `max_retry_interval_seconds`'s default: an hour.
pub const DEFAULT_MAX_RETRY_INTERVAL: Seconds = Seconds::whole(3_600);

impl Default for RetryConf {
    /// Hasura's defaults, and fixed backoff.
    fn default() -> Self {
        RetryConf {
            num_retries: 0,
            retry_interval_seconds: Seconds::whole(10),
            timeout_seconds: Seconds::whole(60),
            tolerance_seconds: Seconds::whole(21_600),
            backoff: Backoff::Fixed,
            max_retry_interval_seconds: DEFAULT_MAX_RETRY_INTERVAL,
        }
    }
}

/// What an attempt sent and what came back: one invocation log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    /// The request body as sent (raw JSON text).
    pub request_body: String,
    /// The request headers as sent, in order.
    pub request_headers: Vec<(String, String)>,
    pub response: InvocationResponse,
}

/// The outcome of one HTTP call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvocationResponse {
    /// The webhook answered with an HTTP status.
    Webhook {
        status: u16,
        /// The response headers, in order, while they fit in the cap.
        headers: Vec<(String, String)>,
        /// The body, in the room the headers leave of the configured cap;
        /// `truncated` says whether headers or body were cut.
        body: Vec<u8>,
        truncated: bool,
    },
    /// No HTTP answer: timeout, refused connection, TLS failure, missing
    /// environment variable, ...
    ClientError { message: String },
}

impl Record {
    /// The event this record is about; `None` for a record about many
    /// ([`Record::EventsRetired`]).
    pub fn event_id(&self) -> Option<EventId> {
        match self {
            Record::EventCreated(e) => Some(e.event_id),
            Record::AttemptStarted { event_id, .. }
            | Record::AttemptSucceeded { event_id, .. }
            | Record::AttemptFailed { event_id, .. }
            | Record::AttemptInterrupted { event_id, .. }
            | Record::EventExpired { event_id, .. }
            | Record::EventCancelled { event_id, .. } => Some(*event_id),
            Record::EventsRetired { .. } => None,
        }
    }

    /// A short stable name of the record's kind, as `chime log` shows it.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::EventCreated(_) => RecordKind::EventCreated,
            Record::AttemptStarted { .. } => RecordKind::AttemptStarted,
            Record::AttemptSucceeded { .. } => RecordKind::AttemptSucceeded,
            Record::AttemptFailed { .. } => RecordKind::AttemptFailed,
            Record::AttemptInterrupted { .. } => RecordKind::AttemptInterrupted,
            Record::EventExpired { .. } => RecordKind::EventExpired,
            Record::EventCancelled { .. } => RecordKind::EventCancelled,
            Record::EventsRetired { .. } => RecordKind::EventsRetired,
        }
    }

    /// When the action happened.
    pub fn at(&self) -> UnixMicros {
        match self {
            Record::EventCreated(e) => e.created_at,
            Record::AttemptStarted { at, .. }
            | Record::AttemptSucceeded { at, .. }
            | Record::AttemptFailed { at, .. }
            | Record::AttemptInterrupted { at, .. }
            | Record::EventExpired { at, .. }
            | Record::EventCancelled { at, .. }
            | Record::EventsRetired { at, .. } => *at,
        }
    }

    /// Encodes the record as log payload bytes.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = vec![SCHEMA_VERSION];
        postcard::to_io(self, &mut out).map_err(RecordError::Encode)?;
        Ok(out)
    }

    /// Decodes log payload bytes. Never panics; allocations are bounded by
    /// the input's length (postcard reads lengths from the input and fails
    /// when fewer bytes remain than a length claims).
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let (&version, body) = bytes.split_first().ok_or(RecordError::Empty)?;
        let (record, rest) = match version {
            SCHEMA_VERSION => postcard::take_from_bytes(body).map_err(RecordError::Decode)?,
            2 => v2::take_from_bytes(body)?,
            1 => v1::take_from_bytes(body)?,
            _ => return Err(RecordError::UnknownSchema(version)),
        };
        if !rest.is_empty() {
            return Err(RecordError::TrailingBytes(rest.len()));
        }
        Ok(record)
    }
}

/// The kinds of record, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    EventCreated,
    AttemptStarted,
    AttemptSucceeded,
    AttemptFailed,
    AttemptInterrupted,
    EventExpired,
    EventCancelled,
    EventsRetired,
}

impl RecordKind {
    /// Every kind, in a stable order.
    pub const ALL: [RecordKind; 8] = [
        RecordKind::EventCreated,
        RecordKind::AttemptStarted,
        RecordKind::AttemptSucceeded,
        RecordKind::AttemptFailed,
        RecordKind::AttemptInterrupted,
        RecordKind::EventExpired,
        RecordKind::EventCancelled,
        RecordKind::EventsRetired,
    ];

    /// The kind's name as the CLI prints and parses it (`event_created`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::EventCreated => "event_created",
            RecordKind::AttemptStarted => "attempt_started",
            RecordKind::AttemptSucceeded => "attempt_succeeded",
            RecordKind::AttemptFailed => "attempt_failed",
            RecordKind::AttemptInterrupted => "attempt_interrupted",
            RecordKind::EventExpired => "event_expired",
            RecordKind::EventCancelled => "event_cancelled",
            RecordKind::EventsRetired => "events_retired",
        }
    }

    /// Parses a name printed by [`RecordKind::as_str`].
    pub fn parse(name: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("empty record payload")]
    Empty,
    #[error(
        "record schema version {0} is not known to this build (it reads version {SCHEMA_VERSION})"
    )]
    UnknownSchema(u8),
    #[error("record does not decode: {0}")]
    Decode(postcard::Error),
    #[error("record has {0} trailing bytes after its end")]
    TrailingBytes(usize),
    #[error("record does not encode: {0}")]
    Encode(postcard::Error),
}

pub mod head;
mod v1;
mod v2;

pub use head::Head;

/// Records for tests and benches (unit tests, or the `testing` feature).
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record::EventCreated(EventCreated {
            payload: r#"{"b":1,"a":[1.50,"x"]}"#.into(),
            headers: fixtures::headers(),
            comment: Some("c".into()),
            created_at: UnixMicros(1),
            ..fixtures::event(
                uuid::Uuid::from_u128(7),
                "http://127.0.0.1:1/{{HOOK}}",
                UnixMicros(1_600_000_000_123_456),
            )
        })
    }

    #[test]
    fn round_trips_and_keeps_raw_json() {
        let r = sample();
        let bytes = r.encode().unwrap();
        assert_eq!(bytes[0], SCHEMA_VERSION);
        assert_eq!(Record::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn refuses_unknown_schema_and_trailing_bytes() {
        let mut bytes = sample().encode().unwrap();
        bytes.push(0);
        assert!(matches!(
            Record::decode(&bytes),
            Err(RecordError::TrailingBytes(1))
        ));
        bytes[0] = 9;
        assert!(matches!(
            Record::decode(&bytes),
            Err(RecordError::UnknownSchema(9))
        ));
        assert!(matches!(Record::decode(&[]), Err(RecordError::Empty)));
    }

    /// The retirement is the eighth variant (index 7), added last so that
    /// logs written before it keep decoding: its bytes by postcard's rules
    /// (variant varint, then two zig-zag varints).
    #[test]
    fn events_retired_is_variant_7_and_names_no_event() {
        let r = Record::EventsRetired {
            finished_before: UnixMicros(-1),
            at: UnixMicros(64),
        };
        assert_eq!(r.encode().unwrap(), vec![SCHEMA_VERSION, 7, 1, 128, 1]);
        assert_eq!(Record::decode(&[SCHEMA_VERSION, 7, 1, 128, 1]).unwrap(), r);
        assert_eq!(r.event_id(), None);
        assert_eq!(r.at(), UnixMicros(64));
        assert_eq!(r.kind().as_str(), "events_retired");
        assert_eq!(
            RecordKind::parse("events_retired"),
            Some(RecordKind::EventsRetired)
        );
        assert_eq!(*RecordKind::ALL.last().unwrap(), RecordKind::EventsRetired);
    }

    #[test]
    fn times_format_as_utc_with_z() {
        assert_eq!(UnixMicros(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(UnixMicros(1_500_000).to_rfc3339(), "1970-01-01T00:00:01.5Z");
        assert_eq!(UnixMicros(5).plus(Seconds::whole(2)), UnixMicros(2_000_005));
    }

    #[test]
    fn seconds_show_as_hasura_and_as_exact_decimals() {
        let cases = [
            (Seconds::whole(10), "10", serde_json::json!(10)),
            (
                Seconds::from_micros(1_500_000),
                "1.5",
                serde_json::json!(1.5),
            ),
            (Seconds::from_micros(100_000), "0.1", serde_json::json!(0.1)),
            (
                Seconds::from_micros(1),
                "0.000001",
                serde_json::json!(0.000001),
            ),
            (Seconds::whole(0), "0", serde_json::json!(0)),
        ];
        for (span, text, json) in cases {
            assert_eq!((span.to_string(), span.to_json()), (text.to_owned(), json));
        }
        assert_eq!(Seconds::whole(u64::MAX).as_micros(), u64::MAX);
        assert_eq!(Seconds::whole(u64::MAX).as_micros_i64(), i64::MAX);
    }

    /// A version 1 record (whole seconds as u32/u64) reads as the same
    /// record in version 2 terms; other kinds are unchanged by the version.
    #[test]
    fn reads_version_1_records() {
        let created = fixtures::event(
            uuid::Uuid::from_u128(7),
            "http://127.0.0.1:1/hook",
            UnixMicros(5),
        );
        let mut v1 = vec![1u8];
        postcard::to_io(&(0u8, v1::EventCreatedV1::from_v2(&created)), &mut v1).unwrap();
        assert_eq!(
            Record::decode(&v1).unwrap(),
            Record::EventCreated(created.clone())
        );
        let expired = Record::EventExpired {
            event_id: created.event_id,
            at: UnixMicros(9),
        };
        let mut bytes = expired.encode().unwrap();
        bytes[0] = 1;
        assert_eq!(Record::decode(&bytes).unwrap(), expired);
        // Kinds that came after schema 1 are refused in a schema 1 record.
        assert!(Record::decode(&[1, 7, 1, 0x80, 0x01]).is_err());
        assert!(Record::decode(&[2, 7, 1, 0x80, 0x01]).is_ok());
        // The v1 form of a create is not a v2 one, and the other way round.
        let mut as_v2 = v1.clone();
        as_v2[0] = SCHEMA_VERSION;
        assert_ne!(
            Record::decode(&as_v2).ok(),
            Some(Record::EventCreated(created))
        );
    }

    /// A version 2 record (no backoff in `retry_conf`) reads as fixed
    /// backoff with the default cap; other kinds are unchanged.
    #[test]
    fn reads_version_2_records() {
        let mut created = fixtures::event(
            uuid::Uuid::from_u128(8),
            "http://127.0.0.1:1/hook",
            UnixMicros(5),
        );
        created.retry_conf.num_retries = 4;
        let mut v2 = vec![2u8];
        postcard::to_io(&(0u8, v2::EventCreatedV2::from_current(&created)), &mut v2).unwrap();
        let read = Record::decode(&v2).unwrap();
        assert_eq!(read, Record::EventCreated(created.clone()));
        let Record::EventCreated(read) = read else {
            unreachable!()
        };
        assert_eq!(read.retry_conf.backoff, Backoff::Fixed);
        assert_eq!(
            read.retry_conf.max_retry_interval_seconds,
            Seconds::whole(3_600)
        );
        // The current form has two more fields: a v2 create is not a v3 one.
        let mut as_v3 = v2.clone();
        as_v3[0] = SCHEMA_VERSION;
        assert!(Record::decode(&as_v3).is_err());
        let cancelled = Record::EventCancelled {
            event_id: created.event_id,
            at: UnixMicros(9),
        };
        let mut bytes = cancelled.encode().unwrap();
        bytes[0] = 2;
        assert_eq!(Record::decode(&bytes).unwrap(), cancelled);
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Record::decode(&bytes);
        }
    }
}
