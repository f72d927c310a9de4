//! Hasura's metadata API for one-off scheduled events, as chime speaks it.
//!
//! This module owns the wire format of `POST /v1/metadata` and `POST /v1/query`:
//! it turns a request body into a validated [`Command`] (or an [`ApiError`]
//! with Hasura's `{"code","error","path"}` shape), and renders events,
//! invocation logs and webhook bodies as the JSON a Hasura client expects.
//!
//! It does no IO and reads no clock: it never touches the log, the network,
//! the environment or the time of day, so every rule here is tested by
//! feeding bytes in and looking at what comes out. Callers pass in ids and
//! times (see [`NewEvent::into_record`]).
//!
//! Choices where Hasura is vague or chime differs on purpose (each one is
//! also noted where it is made):
//! - Unknown keys anywhere (top level, `args`, a header, `retry_conf`) are
//!   refused with `parse-failed` naming the key, so a typo such as
//!   `retry_config` is not silently dropped. Duplicate keys are refused too.
//! - `request_transform` / `response_transform` are refused with
//!   `not-supported` rather than ignored.
//! - `null` for an optional argument means "absent".
//! - `bulk` is accepted on `/v1/query` only; nested bulks are allowed (Hasura
//!   allows them) up to [`MAX_BULK_DEPTH`] levels.
//! - A malformed `event_id` is `parse-failed` at its path, not `not-found`:
//!   the client sent something that is not an id at all.
//! - `retry_conf.timeout_seconds: 0` is `validation-failed`: a call that may
//!   not take any time can never succeed.
//! - An invocation's `status` is the HTTP status of the webhook's answer, and
//!   `null` when there was no answer (`client_error`), as in Hasura v2 where
//!   the column is nullable (older Hasura wrote a made-up 1000 instead).

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::projection::{EventView, InvocationRef, Status};
use crate::record::{
    EventCreated, EventId, HeaderConf, HeaderValue, Invocation, InvocationResponse, Record,
    RetryConf, UnixMicros,
};

/// How deeply `bulk` requests may nest inside each other. Hasura allows
/// nesting; a cap keeps a hostile body from recursing the parser off the stack.
pub const MAX_BULK_DEPTH: usize = 8;

/// How deeply a payload's arrays and objects may nest. The payload is read
/// back into a `serde_json::Value` to be shown, and serde_json refuses to
/// build one deeper than 128 levels; a lower cap keeps every accepted payload
/// showable.
pub const MAX_PAYLOAD_DEPTH: usize = 100;

// ---------------------------------------------------------------------------
// Errors

/// An error answer: Hasura's JSON error body plus the HTTP status to send it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status: 400 bad input, 401 access denied, 404 unknown event,
    /// 413 body too large, 500 bug, 503 the log refuses writes.
    pub status: u16,
    /// Hasura's error code (`parse-failed`, `validation-failed`, ...).
    pub code: &'static str,
    /// A human-readable message.
    pub error: String,
    /// A JSON path into the request (`$`, `$.args.headers[1].name`, ...).
    pub path: String,
}

impl ApiError {
    pub fn new(
        status: u16,
        code: &'static str,
        path: impl Into<String>,
        error: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            error: error.into(),
            path: path.into(),
        }
    }

    /// The body is not the JSON the command needs: syntax, shape, types,
    /// missing or unknown keys.
    pub fn parse_failed(path: impl Into<String>, error: impl Into<String>) -> Self {
        Self::new(400, "parse-failed", path, error)
    }

    /// The JSON is well-formed but a value is not acceptable (a bad URL, a
    /// negative count, an invalid header).
    pub fn validation_failed(path: impl Into<String>, error: impl Into<String>) -> Self {
        Self::new(400, "validation-failed", path, error)
    }

    /// A Hasura feature chime does not implement (cron triggers, transforms).
    pub fn not_supported(path: impl Into<String>, error: impl Into<String>) -> Self {
        Self::new(400, "not-supported", path, error)
    }

    /// The named event does not exist (or was deleted).
    pub fn not_found(path: impl Into<String>, error: impl Into<String>) -> Self {
        Self::new(404, "not-found", path, error)
    }

    /// A missing or wrong admin secret, or a role other than `admin`.
    pub fn access_denied(error: impl Into<String>) -> Self {
        Self::new(401, "access-denied", "$", error)
    }

    /// The request body is over the size limit.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            413,
            "payload-too-large",
            "$",
            format!("the request body is larger than the limit of {limit_bytes} bytes"),
        )
    }

    /// The log cannot accept writes (e.g. the disk is full): try again later.
    pub fn unavailable(error: impl Into<String>) -> Self {
        Self::new(503, "unavailable", "$", error)
    }

    /// Something went wrong inside chime; Hasura's code for that is `unexpected`.
    pub fn unexpected(error: impl Into<String>) -> Self {
        Self::new(500, "unexpected", "$", error)
    }

    /// The JSON error body: `{"code","error","path"}`.
    pub fn to_json(&self) -> Value {
        json!({ "code": self.code, "error": self.error, "path": self.path })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.code, self.path, self.error)
    }
}

impl std::error::Error for ApiError {}

// ---------------------------------------------------------------------------
// Commands

/// Which URL the request came in on; only `/v1/query` accepts `bulk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/metadata`
    Metadata,
    /// `POST /v1/query`
    Query,
}

/// A parsed and validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    CreateScheduledEvent(NewEvent),
    DeleteScheduledEvent {
        event_id: EventId,
    },
    GetScheduledEvents {
        /// Empty means every status.
        statuses: Vec<Status>,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
    },
    GetScheduledEventInvocations {
        /// `None` means the invocations of every event.
        event_id: Option<EventId>,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
    },
    /// `bulk` on `/v1/query`: answered with an array, one answer per command.
    Bulk(Vec<Command>),
}

/// The validated arguments of `create_scheduled_event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// The URL template, `{{VAR}}` placeholders left unresolved.
    pub webhook: String,
    pub schedule_at: UnixMicros,
    /// The payload as the exact raw JSON text sent, `null` when absent.
    pub payload: String,
    pub headers: Vec<HeaderConf>,
    pub retry_conf: RetryConf,
    pub comment: Option<String>,
}

impl NewEvent {
    /// The record to append for this event; the id and creation time come
    /// from the caller because this module has no clock and no randomness.
    pub fn into_record(self, event_id: EventId, created_at: UnixMicros) -> EventCreated {
        EventCreated {
            event_id,
            webhook: self.webhook,
            schedule_at: self.schedule_at,
            payload: self.payload,
            headers: self.headers,
            retry_conf: self.retry_conf,
            comment: self.comment,
            created_at,
        }
    }
}

/// Parses and validates a request body sent to `endpoint`.
///
/// The whole request is validated before anything is returned: in a `bulk`
/// the first error in any sub-request fails the request, with a path that
/// points into that sub-request (`$.args[2].args.schedule_at`). Never panics,
/// whatever the bytes.
pub fn parse_request(body: &[u8], endpoint: Endpoint) -> Result<Command, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::parse_failed("$", format!("the body is not UTF-8: {e}")))?;
    // Borrowing the body as raw JSON keeps the payload's exact text and
    // checks the syntax of the whole body up front, so later errors are
    // about meaning only.
    let raw: &RawValue = serde_json::from_str(text)
        .map_err(|e| ApiError::parse_failed("$", format!("invalid JSON: {e}")))?;
    parse_command(raw, "$", endpoint, 0)
}

fn parse_command(
    raw: &RawValue,
    path: &str,
    endpoint: Endpoint,
    depth: usize,
) -> Result<Command, ApiError> {
    let obj = Obj::parse(raw, path, "a request object {\"type\": ..., \"args\": ...}")?;
    // `version` and `resource_version` are Hasura's optimistic-concurrency
    // and API-version fields; chime has no metadata to version, so any value
    // is accepted and ignored.
    obj.check_keys(&["type", "args", "version", "resource_version"], &[])?;
    let ty = string_at(obj.required("type")?, &obj.key_path("type"))?;
    let args_path = obj.key_path("args");
    match ty.as_str() {
        "create_scheduled_event" => {
            parse_create(obj.required("args")?, &args_path).map(Command::CreateScheduledEvent)
        }
        "delete_scheduled_event" => parse_delete(obj.required("args")?, &args_path),
        "get_scheduled_events" => parse_get_events(obj.get("args"), &args_path),
        "get_scheduled_event_invocations" => parse_get_invocations(obj.get("args"), &args_path),
        "bulk" if endpoint == Endpoint::Query => {
            parse_bulk(obj.required("args")?, &args_path, depth)
        }
        other => Err(ApiError::parse_failed(
            path,
            format!("unknown metadata command {}", Value::from(other)),
        )),
    }
}

fn parse_bulk(raw: &RawValue, path: &str, depth: usize) -> Result<Command, ApiError> {
    if depth >= MAX_BULK_DEPTH {
        return Err(ApiError::parse_failed(
            path,
            format!("bulk requests may nest at most {MAX_BULK_DEPTH} levels deep"),
        ));
    }
    let items: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::parse_failed(path, "expected an array of requests"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_command(item, &format!("{path}[{i}]"), Endpoint::Query, depth + 1))
        .collect::<Result<Vec<_>, _>>()
        .map(Command::Bulk)
}

fn parse_create(raw: &RawValue, path: &str) -> Result<NewEvent, ApiError> {
    let obj = Obj::parse(raw, path, "an object")?;
    obj.check_keys(
        &[
            "webhook",
            "schedule_at",
            "payload",
            "headers",
            "retry_conf",
            "comment",
        ],
        &["request_transform", "response_transform"],
    )?;

    let webhook_path = obj.key_path("webhook");
    let webhook = string_at(obj.required("webhook")?, &webhook_path)?;
    validate_webhook(&webhook).map_err(|e| ApiError::validation_failed(&webhook_path, e))?;

    let schedule_path = obj.key_path("schedule_at");
    let schedule_text = string_at(obj.required("schedule_at")?, &schedule_path)?;
    let schedule_at = parse_time(&schedule_text).ok_or_else(|| {
        ApiError::parse_failed(
            &schedule_path,
            format!(
                "{} is not an ISO 8601 time; expected e.g. \"2020-01-01T15:46:00Z\"",
                Value::from(schedule_text.as_str())
            ),
        )
    })?;

    let payload = match obj.get("payload") {
        Some(raw) => {
            if json_depth(raw.get()) > MAX_PAYLOAD_DEPTH {
                return Err(ApiError::validation_failed(
                    obj.key_path("payload"),
                    format!("the payload nests more than {MAX_PAYLOAD_DEPTH} levels deep"),
                ));
            }
            raw.get().to_owned()
        }
        None => "null".to_owned(),
    };

    let headers = match obj.get("headers") {
        Some(raw) => parse_headers(raw, &obj.key_path("headers"))?,
        None => Vec::new(),
    };
    let retry_conf = match obj.get("retry_conf") {
        Some(raw) => parse_retry_conf(raw, &obj.key_path("retry_conf"))?,
        None => RetryConf::default(),
    };
    let comment = obj
        .get("comment")
        .map(|raw| string_at(raw, &obj.key_path("comment")))
        .transpose()?;

    Ok(NewEvent {
        webhook,
        schedule_at,
        payload,
        headers,
        retry_conf,
        comment,
    })
}

fn parse_headers(raw: &RawValue, path: &str) -> Result<Vec<HeaderConf>, ApiError> {
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|_| {
        ApiError::parse_failed(
            path,
            "expected an array of {\"name\", \"value\"} or {\"name\", \"value_from_env\"}",
        )
    })?;
    let mut headers = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let obj = Obj::parse(item, &item_path, "a header object")?;
        obj.check_keys(&["name", "value", "value_from_env"], &[])?;

        let name_path = obj.key_path("name");
        let name = string_at(obj.required("name")?, &name_path)?;
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ApiError::validation_failed(
                name_path,
                format!("{} is not a valid HTTP header name", Value::from(name)),
            ));
        }

        let value = match (obj.get("value"), obj.get("value_from_env")) {
            (Some(raw), None) => {
                let value_path = obj.key_path("value");
                let value = string_at(raw, &value_path)?;
                if http::HeaderValue::from_str(&value).is_err() {
                    return Err(ApiError::validation_failed(
                        value_path,
                        "not a valid HTTP header value (control characters are not allowed)",
                    ));
                }
                HeaderValue::Value(value)
            }
            (None, Some(raw)) => {
                let env_path = obj.key_path("value_from_env");
                let var = string_at(raw, &env_path)?;
                // `std::env::var` may panic on a name that is empty or holds
                // `=` or NUL; refusing them here keeps delivery panic-free.
                if var.is_empty() || var.contains(['=', '\0']) {
                    return Err(ApiError::validation_failed(
                        env_path,
                        "expected the name of an environment variable (non-empty, no '=' or NUL)",
                    ));
                }
                HeaderValue::FromEnv(var)
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::parse_failed(
                    item_path,
                    "a header takes either \"value\" or \"value_from_env\", not both",
                ));
            }
            (None, None) => {
                return Err(ApiError::parse_failed(
                    obj.key_path("value"),
                    "missing required key \"value\" (or \"value_from_env\")",
                ));
            }
        };
        headers.push(HeaderConf { name, value });
    }
    Ok(headers)
}

fn parse_retry_conf(raw: &RawValue, path: &str) -> Result<RetryConf, ApiError> {
    let obj = Obj::parse(raw, path, "an object")?;
    obj.check_keys(
        &[
            "num_retries",
            "retry_interval_seconds",
            "timeout_seconds",
            "tolerance_seconds",
        ],
        &[],
    )?;
    let mut conf = RetryConf::default();
    let u32_field = |key: &str| -> Result<Option<u32>, ApiError> {
        obj.get(key)
            .map(|raw| u32_at(raw, &obj.key_path(key)))
            .transpose()
    };
    if let Some(n) = u32_field("num_retries")? {
        conf.num_retries = n;
    }
    if let Some(n) = u32_field("retry_interval_seconds")? {
        conf.retry_interval_seconds = n;
    }
    if let Some(n) = u32_field("timeout_seconds")? {
        // A call that may not take any time can never succeed.
        if n == 0 {
            return Err(ApiError::validation_failed(
                obj.key_path("timeout_seconds"),
                "must be at least 1",
            ));
        }
        conf.timeout_seconds = n;
    }
    if let Some(raw) = obj.get("tolerance_seconds") {
        // The record holds tolerance as u64 so that "practically never too
        // late" can be said; the other fields are u32.
        conf.tolerance_seconds = uint_at(raw, &obj.key_path("tolerance_seconds"))?;
    }
    Ok(conf)
}

fn parse_delete(raw: &RawValue, path: &str) -> Result<Command, ApiError> {
    let obj = Obj::parse(raw, path, "an object")?;
    check_one_off(&obj, true)?;
    obj.check_keys(&["type", "event_id"], &[])?;
    let event_id = uuid_at(obj.required("event_id")?, &obj.key_path("event_id"))?;
    Ok(Command::DeleteScheduledEvent { event_id })
}

fn parse_get_events(raw: Option<&RawValue>, path: &str) -> Result<Command, ApiError> {
    let obj = Obj::parse_optional(raw, path)?;
    check_one_off(&obj, false)?;
    obj.check_keys(
        &["type", "limit", "offset", "status", "get_rows_count"],
        &[],
    )?;
    let (limit, offset, get_rows_count) = paging(&obj)?;
    let mut statuses = Vec::new();
    if let Some(raw) = obj.get("status") {
        let status_path = obj.key_path("status");
        let items: Vec<&RawValue> = serde_json::from_str(raw.get())
            .map_err(|_| ApiError::parse_failed(&status_path, "expected an array of statuses"))?;
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{status_path}[{i}]");
            let name = string_at(item, &item_path)?;
            let status = Status::parse(&name).ok_or_else(|| {
                ApiError::parse_failed(
                    &item_path,
                    format!(
                        "unknown status {}; expected one of scheduled, locked, delivered, error, dead",
                        Value::from(name.as_str())
                    ),
                )
            })?;
            statuses.push(status);
        }
    }
    Ok(Command::GetScheduledEvents {
        statuses,
        limit,
        offset,
        get_rows_count,
    })
}

fn parse_get_invocations(raw: Option<&RawValue>, path: &str) -> Result<Command, ApiError> {
    let obj = Obj::parse_optional(raw, path)?;
    check_one_off(&obj, false)?;
    obj.check_keys(
        &["type", "event_id", "limit", "offset", "get_rows_count"],
        &[],
    )?;
    let event_id = obj
        .get("event_id")
        .map(|raw| uuid_at(raw, &obj.key_path("event_id")))
        .transpose()?;
    let (limit, offset, get_rows_count) = paging(&obj)?;
    Ok(Command::GetScheduledEventInvocations {
        event_id,
        limit,
        offset,
        get_rows_count,
    })
}

/// `limit`, `offset` (default 0) and `get_rows_count` (default false).
fn paging(obj: &Obj<'_>) -> Result<(Option<usize>, usize, bool), ApiError> {
    let limit = obj
        .get("limit")
        .map(|raw| usize_at(raw, &obj.key_path("limit")))
        .transpose()?;
    let offset = obj
        .get("offset")
        .map(|raw| usize_at(raw, &obj.key_path("offset")))
        .transpose()?
        .unwrap_or(0);
    let get_rows_count = obj
        .get("get_rows_count")
        .map(|raw| bool_at(raw, &obj.key_path("get_rows_count")))
        .transpose()?
        .unwrap_or(false);
    Ok((limit, offset, get_rows_count))
}

/// Checks the `type` argument of delete and get commands: `one_off` is the
/// only kind chime has; `cron` is Hasura's other kind, refused as unsupported.
/// Checked before the other keys so that a cron request (which carries
/// cron-only keys like `trigger_name`) is told `not-supported`, not about a key.
fn check_one_off(obj: &Obj<'_>, required: bool) -> Result<(), ApiError> {
    let path = obj.key_path("type");
    let raw = match obj.get("type") {
        Some(raw) => raw,
        None if required => return Err(missing(&path, "type")),
        None => return Ok(()),
    };
    match string_at(raw, &path)?.as_str() {
        "one_off" => Ok(()),
        "cron" => Err(ApiError::not_supported(
            path,
            "cron triggers are not supported by chime; only \"one_off\" events are",
        )),
        other => Err(ApiError::parse_failed(
            path,
            format!("expected \"one_off\", got {}", Value::from(other)),
        )),
    }
}

// ---------------------------------------------------------------------------
// Reading JSON with paths

/// A JSON object's members in document order, values left as raw text.
///
/// Document order makes "the first error" well defined, and raw values let a
/// payload keep its exact text. Reading members one by one (rather than into
/// a `serde_json::Map`) is also what lets duplicates be noticed.
struct Obj<'a> {
    path: String,
    fields: Vec<(String, &'a RawValue)>,
}

impl<'a> Obj<'a> {
    fn parse(raw: &'a RawValue, path: &str, what: &str) -> Result<Self, ApiError> {
        let RawFields(fields) = serde_json::from_str(raw.get())
            .map_err(|_| ApiError::parse_failed(path, format!("expected {what}")))?;
        Ok(Obj {
            path: path.to_owned(),
            fields,
        })
    }

    /// Absent `args` of a command whose arguments are all optional.
    fn parse_optional(raw: Option<&'a RawValue>, path: &str) -> Result<Self, ApiError> {
        match raw {
            Some(raw) => Obj::parse(raw, path, "an object"),
            None => Ok(Obj {
                path: path.to_owned(),
                fields: Vec::new(),
            }),
        }
    }

    fn key_path(&self, key: &str) -> String {
        join_key(&self.path, key)
    }

    /// Refuses duplicate keys and keys not in `allowed`; keys in
    /// `unsupported` are Hasura features chime refuses as `not-supported`.
    fn check_keys(&self, allowed: &[&str], unsupported: &[&str]) -> Result<(), ApiError> {
        let mut seen = HashSet::with_capacity(self.fields.len());
        for (key, _) in &self.fields {
            let key_path = self.key_path(key);
            if !seen.insert(key.as_str()) {
                return Err(ApiError::parse_failed(
                    key_path,
                    format!("duplicate key {}", Value::from(key.as_str())),
                ));
            }
            if allowed.contains(&key.as_str()) {
                continue;
            }
            if unsupported.contains(&key.as_str()) {
                return Err(ApiError::not_supported(
                    key_path,
                    format!("{} is not supported by chime", Value::from(key.as_str())),
                ));
            }
            return Err(ApiError::parse_failed(
                key_path,
                format!(
                    "unexpected key {}; expected one of: {}",
                    Value::from(key.as_str()),
                    allowed.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The value of `key`; `null` counts as absent, as Hasura reads optional
    /// arguments.
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| v.get().trim() != "null")
    }

    fn required(&self, key: &str) -> Result<&'a RawValue, ApiError> {
        self.get(key)
            .ok_or_else(|| missing(&self.key_path(key), key))
    }
}

fn missing(path: &str, key: &str) -> ApiError {
    ApiError::parse_failed(path, format!("missing required key {}", Value::from(key)))
}

/// Deserializes a JSON object as its members in order, values unparsed.
struct RawFields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = RawFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    fields.push((key, value));
                }
                Ok(RawFields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// `base.key`, or `base['key']` when the key is not a plain identifier, as
/// Hasura writes paths.
fn join_key(base: &str, key: &str) -> String {
    if is_identifier(key) {
        format!("{base}.{key}")
    } else {
        let escaped = key.replace('\\', "\\\\").replace('\'', "\\'");
        format!("{base}['{escaped}']")
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn string_at(raw: &RawValue, path: &str) -> Result<String, ApiError> {
    serde_json::from_str(raw.get()).map_err(|_| ApiError::parse_failed(path, "expected a string"))
}

fn bool_at(raw: &RawValue, path: &str) -> Result<bool, ApiError> {
    serde_json::from_str(raw.get()).map_err(|_| ApiError::parse_failed(path, "expected a boolean"))
}

fn uuid_at(raw: &RawValue, path: &str) -> Result<EventId, ApiError> {
    let text = string_at(raw, path)?;
    // A string that is not a UUID names no event, but it is the request that
    // is malformed, so this is `parse-failed` rather than `not-found`.
    EventId::parse_str(&text).map_err(|_| {
        ApiError::parse_failed(
            path,
            format!("{} is not a UUID", Value::from(text.as_str())),
        )
    })
}

/// A non-negative integer. Not a number, or a fraction: `parse-failed`.
/// Negative, or too large for u64: `validation-failed`. An integral float
/// such as `5.0` is accepted, as Hasura's Haskell parser accepts it.
fn uint_at(raw: &RawValue, path: &str) -> Result<u64, ApiError> {
    let number: serde_json::Number = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::parse_failed(path, "expected a non-negative integer"))?;
    if let Some(n) = number.as_u64() {
        return Ok(n);
    }
    if number.is_i64() {
        return Err(negative(path, &number));
    }
    // Neither u64 nor i64: serde_json read it as a float.
    let f = number.as_f64().unwrap_or(f64::NAN);
    if !f.is_finite() || f.fract() != 0.0 {
        return Err(ApiError::parse_failed(path, "expected an integer"));
    }
    if f < 0.0 {
        return Err(negative(path, &number));
    }
    // 2^64 is exactly representable; every integral f64 below it fits in u64.
    if f >= 18_446_744_073_709_551_616.0 {
        return Err(ApiError::validation_failed(path, "the number is too large"));
    }
    Ok(f as u64)
}

fn negative(path: &str, number: &serde_json::Number) -> ApiError {
    ApiError::validation_failed(path, format!("must be 0 or more, got {number}"))
}

fn u32_at(raw: &RawValue, path: &str) -> Result<u32, ApiError> {
    let n = uint_at(raw, path)?;
    u32::try_from(n).map_err(|_| {
        ApiError::validation_failed(path, format!("must be at most {}, got {n}", u32::MAX))
    })
}

fn usize_at(raw: &RawValue, path: &str) -> Result<usize, ApiError> {
    let n = uint_at(raw, path)?;
    usize::try_from(n).map_err(|_| ApiError::validation_failed(path, "the number is too large"))
}

/// The nesting depth of valid JSON text: 0 for a scalar, 1 for `[]`, ...
fn json_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

// ---------------------------------------------------------------------------
// Times

/// Parses `schedule_at` into UTC microseconds.
///
/// The grammar is the one Hasura's JSON library (aeson) reads times with,
/// so chime accepts what Hasura accepts and not more:
/// `YYYY-MM-DD` (`T` | ` `) `HH:MM` [`:SS` [`.fraction`]] [` `] [zone], where
/// zone is `Z`, `±HH`, `±HHMM` or `±HH:MM`, and no zone means UTC. jiff
/// checks the calendar (no February 30th) and applies the offset. Digits
/// beyond nanoseconds are dropped; the result is floored to microseconds.
fn parse_time(text: &str) -> Option<UnixMicros> {
    let mut p = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let year = p.digits(4)?;
    p.eat(b'-').then_some(())?;
    let month = p.digits(2)?;
    p.eat(b'-').then_some(())?;
    let day = p.digits(2)?;
    (p.eat(b'T') || p.eat(b't') || p.eat(b' ')).then_some(())?;
    let hour = p.digits(2)?;
    p.eat(b':').then_some(())?;
    let minute = p.digits(2)?;
    let (mut second, mut nanos) = (0, 0);
    if p.eat(b':') {
        second = p.digits(2)?;
        if p.eat(b'.') {
            let start = p.at;
            let mut scale = 100_000_000;
            while let Some(d) = p.digit() {
                nanos += d * scale;
                scale /= 10;
            }
            if p.at == start {
                return None;
            }
        }
    }
    let spaced = p.eat(b' ');
    let offset_seconds = if p.at_end() {
        if spaced {
            return None;
        }
        0
    } else if p.eat(b'Z') || p.eat(b'z') {
        0
    } else {
        let sign = if p.eat(b'+') {
            1
        } else if p.eat(b'-') {
            -1
        } else {
            return None;
        };
        let hours = p.digits(2)?;
        let minutes = if p.eat(b':') {
            p.digits(2)?
        } else if p.at_end() {
            0
        } else {
            p.digits(2)?
        };
        if hours > 23 || minutes > 59 {
            return None;
        }
        sign * (hours * 3600 + minutes * 60)
    };
    if !p.at_end() {
        return None;
    }
    let civil = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        nanos,
    )
    .ok()?;
    let offset = jiff::tz::Offset::from_seconds(offset_seconds).ok()?;
    let instant = offset.to_timestamp(civil).ok()?;
    Some(UnixMicros::from_timestamp(instant))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.bytes.get(self.at) == Some(&b);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn digit(&mut self) -> Option<i32> {
        let b = *self.bytes.get(self.at)?;
        b.is_ascii_digit().then(|| {
            self.at += 1;
            i32::from(b - b'0')
        })
    }

    /// Exactly `n` digits (n ≤ 4, so the value fits an i32).
    fn digits(&mut self, n: usize) -> Option<i32> {
        (0..n).try_fold(0, |acc, _| Some(acc * 10 + self.digit()?))
    }
}

// ---------------------------------------------------------------------------
// Webhook templates

/// A piece of a webhook template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part<'a> {
    Text(&'a str),
    /// `{{NAME}}`: the value of environment variable NAME at delivery.
    Var(&'a str),
}

/// Splits a webhook template into text and `{{NAME}}` placeholders, NAME
/// being `[A-Za-z_][A-Za-z0-9_]*` (which is also what an environment
/// variable can safely be called).
fn split_template(template: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "a \"{{\" placeholder is not closed with \"}}\"".to_owned())?;
        let name = &after[..close];
        if !is_identifier(name) {
            return Err(format!(
                "{} is not a valid placeholder name: expected letters, digits and '_', not starting with a digit",
                Value::from(name)
            ));
        }
        parts.push(Part::Var(name));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest));
    }
    Ok(parts)
}

/// Checks a webhook template, as far as it can be checked before delivery.
///
/// Placeholders must be well-formed. A template that starts with one takes
/// its scheme and host from the environment, so nothing more is known.
/// Otherwise, with each placeholder standing in for a plain token, it must be
/// an absolute `http` or `https` URL with a host. The token is `x`, or `1`
/// when `x` does not fit (a placeholder for a port); a template that needs
/// both at once is refused.
fn validate_webhook(template: &str) -> Result<(), String> {
    if template.trim().is_empty() {
        return Err("the webhook URL is empty".to_owned());
    }
    let parts = split_template(template)?;
    if matches!(parts.first(), Some(Part::Var(_))) {
        return Ok(());
    }
    let with_token = |token: &str| -> String {
        parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text,
                Part::Var(_) => token,
            })
            .collect()
    };
    let check = |url: &str| -> Result<(), String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!(
                "the webhook URL must be http or https, not {}",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the webhook URL has no host".to_owned());
        }
        Ok(())
    };
    check(&with_token("x")).or_else(|first| check(&with_token("1")).map_err(|_| first))
}

/// Resolves a webhook template's `{{NAME}}` placeholders with `lookup`
/// (normally the process environment; passed in to keep this module free of
/// IO). Errs with a message for the invocation log when a variable is unset
/// or the template is malformed.
pub fn resolve_webhook(
    template: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for part in split_template(template)? {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Var(name) => match lookup(name) {
                Some(value) => out.push_str(&value),
                None => {
                    return Err(format!(
                        "environment variable {name} (used in the webhook URL) is not set"
                    ));
                }
            },
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Rendering

/// `{"message": "success"}`
pub fn success() -> Value {
    json!({ "message": "success" })
}

/// The answer to `create_scheduled_event`: `{"message":"success","event_id":"..."}`.
pub fn created(event_id: EventId) -> Value {
    json!({ "message": "success", "event_id": event_id.to_string() })
}

/// The answer to `get_scheduled_events`: `{"events": [...]}`, plus `"count"`
/// only when the client asked for it (`get_rows_count`).
pub fn events_answer(events: Vec<Value>, count: Option<usize>) -> Value {
    with_count(json!({ "events": events }), count)
}

/// The answer to `get_scheduled_event_invocations`: `{"invocations": [...]}`
/// plus `"count"` when asked for.
pub fn invocations_answer(invocations: Vec<Value>, count: Option<usize>) -> Value {
    with_count(json!({ "invocations": invocations }), count)
}

fn with_count(mut answer: Value, count: Option<usize>) -> Value {
    if let (Some(count), Some(obj)) = (count, answer.as_object_mut()) {
        obj.insert("count".to_owned(), count.into());
    }
    answer
}

/// One event as `get_scheduled_events` shows it, every key present (null
/// when empty), times in UTC.
///
/// The payload is shown as a JSON value, so its key order and number
/// spelling may differ from what was sent; the webhook gets the exact text
/// (see [`webhook_body`]).
pub fn render_event(created: &EventCreated, view: &EventView) -> Value {
    let retry = &created.retry_conf;
    json!({
        "id": created.event_id.to_string(),
        "webhook_conf": created.webhook,
        "scheduled_time": created.schedule_at.to_rfc3339(),
        "retry_conf": {
            "num_retries": retry.num_retries,
            "retry_interval_seconds": retry.retry_interval_seconds,
            "timeout_seconds": retry.timeout_seconds,
            "tolerance_seconds": retry.tolerance_seconds,
        },
        "payload": json_or_text(&created.payload),
        "header_conf": created.headers.iter().map(render_header_conf).collect::<Vec<_>>(),
        "status": view.status.as_str(),
        "tries": view.tries,
        "created_at": created.created_at.to_rfc3339(),
        "next_retry_at": view.next_retry_at.map(UnixMicros::to_rfc3339),
        "comment": created.comment,
    })
}

fn render_header_conf(header: &HeaderConf) -> Value {
    match &header.value {
        HeaderValue::Value(value) => json!({ "name": header.name, "value": value }),
        HeaderValue::FromEnv(var) => json!({ "name": header.name, "value_from_env": var }),
    }
}

/// One invocation log entry as `get_scheduled_event_invocations` shows it,
/// from the record at `inv.loc`.
///
/// `status` is the webhook's HTTP status, or `null` when there was no HTTP
/// answer (see the module docs). An event that gave up after too many
/// interrupted attempts shows one entry with an empty request and the reason
/// as a `client_error`, so the failure is always visible. A truncated
/// response body is flagged with `"truncated": true` in `data`.
///
/// Returns `None` for records that are not invocations, and when the record
/// is not the one `inv` describes (a wrong location must not show another
/// attempt's data).
pub fn render_invocation(inv: &InvocationRef, record: &Record) -> Option<Value> {
    let (attempt_id, at, status, request, response) = match record {
        Record::AttemptSucceeded {
            attempt_id,
            at,
            invocation,
            ..
        }
        | Record::AttemptFailed {
            attempt_id,
            at,
            invocation,
            ..
        } => (
            *attempt_id,
            *at,
            match invocation.response {
                InvocationResponse::Webhook { status, .. } => Value::from(status),
                InvocationResponse::ClientError { .. } => Value::Null,
            },
            render_request(invocation),
            render_response(&invocation.response),
        ),
        Record::AttemptInterrupted {
            attempt_id,
            at,
            give_up: true,
            reason,
            ..
        } => (
            *attempt_id,
            *at,
            Value::Null,
            json!({ "payload": null, "headers": [], "version": "1" }),
            client_error(reason),
        ),
        _ => return None,
    };
    if attempt_id != inv.attempt_id || record.event_id() != inv.event_id {
        return None;
    }
    Some(json!({
        "id": attempt_id.to_string(),
        "event_id": inv.event_id.to_string(),
        "status": status,
        "request": request,
        "response": response,
        "created_at": at.to_rfc3339(),
    }))
}

fn render_request(invocation: &Invocation) -> Value {
    json!({
        "payload": json_or_text(&invocation.request_body),
        "headers": render_pairs(&invocation.request_headers),
        "version": "1",
    })
}

fn render_response(response: &InvocationResponse) -> Value {
    match response {
        InvocationResponse::Webhook {
            status,
            headers,
            body,
            truncated,
        } => {
            let mut data = json!({
                "body": String::from_utf8_lossy(body),
                "headers": render_pairs(headers),
                "status": status,
            });
            // Only flagged when true, so an ordinary answer has exactly
            // Hasura's shape.
            if let (true, Some(obj)) = (*truncated, data.as_object_mut()) {
                obj.insert("truncated".to_owned(), Value::Bool(true));
            }
            json!({ "type": "webhook_response", "data": data, "version": "1" })
        }
        InvocationResponse::ClientError { message } => client_error(message),
    }
}

fn client_error(message: &str) -> Value {
    json!({ "type": "client_error", "data": { "message": message }, "version": "1" })
}

fn render_pairs(pairs: &[(String, String)]) -> Vec<Value> {
    pairs
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect()
}

/// Stored JSON text as a value. Text that does not parse (which chime never
/// writes) is shown as a string rather than hidden.
fn json_or_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// The JSON body POSTed to the webhook:
/// `{"id","scheduled_time","payload","comment","created_at"}`, `comment`
/// omitted when there is none. The payload is embedded as its exact raw
/// text, so the receiver sees the key order and number spelling it was
/// given.
pub fn webhook_body(created: &EventCreated) -> String {
    // A payload that is not valid JSON (never written by chime, but the log
    // is data from disk) is sent as a string so the body stays valid JSON.
    let payload = if serde_json::from_str::<&RawValue>(&created.payload).is_ok() {
        created.payload.clone()
    } else {
        Value::from(created.payload.as_str()).to_string()
    };
    let mut body = String::with_capacity(payload.len() + 160);
    body.push_str("{\"id\":");
    body.push_str(&Value::from(created.event_id.to_string()).to_string());
    body.push_str(",\"scheduled_time\":");
    body.push_str(&Value::from(created.schedule_at.to_rfc3339()).to_string());
    body.push_str(",\"payload\":");
    body.push_str(&payload);
    if let Some(comment) = &created.comment {
        body.push_str(",\"comment\":");
        body.push_str(&Value::from(comment.as_str()).to_string());
    }
    body.push_str(",\"created_at\":");
    body.push_str(&Value::from(created.created_at.to_rfc3339()).to_string());
    body.push('}');
    body
}
