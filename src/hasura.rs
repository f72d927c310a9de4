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
//! - `bulk` is accepted on `/v1/query` only. Nested bulks parse (up to
//!   [`MAX_BULK_DEPTH`] levels, so errors inside them get their paths), but
//!   the API refuses to run one (`not-supported`) before appending anything.
//! - A malformed `event_id` is `parse-failed` at its path, not `not-found`:
//!   the client sent something that is not an id at all.
//! - `retry_conf.timeout_seconds: 0` is `validation-failed`: a call that may
//!   not take any time can never succeed.
//! - `schedule_at` follows the time grammar of aeson, Hasura's JSON library
//!   (spelled out on the private `parse_time`), not all of ISO 8601.
//! - Webhook placeholders are `{{NAME}}` with NAME `[A-Za-z_][A-Za-z0-9_]*`;
//!   [`resolve_webhook`] fills them in with the same grammar at delivery.
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
    /// An error with any status and code; prefer the named constructors.
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
    /// `create_scheduled_event`: answered with [`created`].
    CreateScheduledEvent(NewEvent),
    /// `delete_scheduled_event` (`type: one_off`): answered with [`success`],
    /// or `not-found` for an id that names no live event.
    DeleteScheduledEvent { event_id: EventId },
    /// `get_scheduled_events`: answered with [`events_answer`].
    GetScheduledEvents {
        /// Empty means every status.
        statuses: Vec<Status>,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
    },
    /// `get_scheduled_event_invocations`: answered with [`invocations_answer`].
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
/// so chime accepts what Hasura accepts and hardly more:
/// `YYYY-MM-DD` (`T` | ` `) `HH:MM` [`:SS` [`.fraction`]] [` `] [zone], where
/// zone is `Z`, `±HH`, `±HHMM` or `±HH:MM`, and no zone means UTC. The only
/// extras are lowercase `t` and `z`, which RFC 3339 allows. A hand-written
/// grammar rather than jiff's Temporal parser, because that one also takes
/// forms Hasura refuses (basic `20200101T...`, `[UTC]` annotations, date
/// only). jiff checks the calendar (no February 30th, no leap second) and
/// applies the offset. Digits beyond nanoseconds are dropped; the result is
/// floored to microseconds.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Loc;

    const HOOK: &str = "http://127.0.0.1:9/hook";

    fn parse(body: &str) -> Result<Command, ApiError> {
        parse_request(body.as_bytes(), Endpoint::Metadata)
    }

    fn create_body(args: Value) -> String {
        json!({ "type": "create_scheduled_event", "args": args }).to_string()
    }

    fn minimal_args() -> Value {
        json!({ "webhook": HOOK, "schedule_at": "2020-01-01T15:46:00Z" })
    }

    /// `minimal_args()` with `key` set to `value`.
    fn args_with(key: &str, value: Value) -> Value {
        let mut args = minimal_args();
        args[key] = value;
        args
    }

    fn create_ok(args: Value) -> NewEvent {
        match parse(&create_body(args)) {
            Ok(Command::CreateScheduledEvent(event)) => event,
            other => panic!("expected a create command, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_err(result: Result<Command, ApiError>, status: u16, code: &str, path: &str) {
        match result {
            Err(e) => {
                assert_eq!(
                    (e.status, e.code, e.path.as_str()),
                    (status, code, path),
                    "error was: {e}"
                );
                assert!(!e.error.is_empty());
            }
            Ok(cmd) => panic!("expected {code} at {path}, got {cmd:?}"),
        }
    }

    #[track_caller]
    fn assert_create_err(args: Value, code: &str, path: &str) {
        assert_err(parse(&create_body(args)), 400, code, path);
    }

    fn utc(rfc3339: &str) -> UnixMicros {
        UnixMicros::from_timestamp(rfc3339.parse::<jiff::Timestamp>().unwrap())
    }

    // --- envelope -----------------------------------------------------------

    #[test]
    fn malformed_json_and_non_objects_fail_at_the_root() {
        for body in [
            "",
            "{",
            "{\"type\":",
            "nul",
            "{} x",
            "[]",
            "\"x\"",
            "null",
            "3",
        ] {
            assert_err(parse(body), 400, "parse-failed", "$");
        }
        assert_err(
            parse_request(b"{\"type\":\"\xff\"}", Endpoint::Query),
            400,
            "parse-failed",
            "$",
        );
    }

    #[test]
    fn envelope_keys() {
        assert_err(parse(r#"{"args":{}}"#), 400, "parse-failed", "$.type");
        assert_err(
            parse(r#"{"type":7,"args":{}}"#),
            400,
            "parse-failed",
            "$.type",
        );
        assert_err(
            parse(r#"{"type":"get_scheduled_events","args":{},"source":"default"}"#),
            400,
            "parse-failed",
            "$.source",
        );
        assert_err(
            parse(r#"{"type":"get_scheduled_events","args":{},"args":{}}"#),
            400,
            "parse-failed",
            "$.args",
        );
        // Odd keys are named in Hasura's bracket form.
        assert_err(
            parse(r#"{"type":"get_scheduled_events","a b":1}"#),
            400,
            "parse-failed",
            "$['a b']",
        );
        // version and resource_version are accepted and ignored.
        assert!(matches!(
            parse(r#"{"type":"get_scheduled_events","args":{},"version":2,"resource_version":17}"#),
            Ok(Command::GetScheduledEvents { .. })
        ));
        // create and delete need args.
        assert_err(
            parse(r#"{"type":"create_scheduled_event"}"#),
            400,
            "parse-failed",
            "$.args",
        );
        assert_err(
            parse(r#"{"type":"create_scheduled_event","args":[]}"#),
            400,
            "parse-failed",
            "$.args",
        );
    }

    #[test]
    fn unknown_command() {
        let e = parse(r#"{"type":"frobnicate","args":{}}"#).unwrap_err();
        assert_eq!(
            (e.status, e.code, e.path.as_str()),
            (400, "parse-failed", "$")
        );
        assert_eq!(e.error, r#"unknown metadata command "frobnicate""#);
    }

    #[test]
    fn error_json_shape() {
        let e = ApiError::parse_failed("$.args.x", "bad");
        assert_eq!(
            e.to_json(),
            json!({"code": "parse-failed", "error": "bad", "path": "$.args.x"})
        );
        assert_eq!(ApiError::access_denied("no").status, 401);
        assert_eq!(ApiError::access_denied("no").code, "access-denied");
        assert_eq!(ApiError::not_found("$.args.event_id", "no").status, 404);
        assert_eq!(ApiError::payload_too_large(10).status, 413);
        assert_eq!(ApiError::unavailable("disk full").status, 503);
        assert_eq!(ApiError::not_supported("$", "x").code, "not-supported");
        assert_eq!(
            ApiError::validation_failed("$", "x").code,
            "validation-failed"
        );
    }

    // --- create_scheduled_event ---------------------------------------------

    #[test]
    fn create_minimal_takes_hasura_defaults() {
        let event = create_ok(minimal_args());
        assert_eq!(
            event,
            NewEvent {
                webhook: HOOK.into(),
                schedule_at: utc("2020-01-01T15:46:00Z"),
                payload: "null".into(),
                headers: vec![],
                retry_conf: RetryConf::default(),
                comment: None,
            }
        );
    }

    #[test]
    fn create_full_and_into_record() {
        let body = r#"{"type":"create_scheduled_event","args":{
            "webhook":"https://send-email.com","schedule_at":"2022-06-18T18:45:00Z",
            "payload":{"email":"bob@ross.com"},
            "headers":[{"name":"key","value":"value"},{"name":"X-Secret","value_from_env":"SECRET"}],
            "retry_conf":{"num_retries":3,"timeout_seconds":120,"tolerance_seconds":21675,"retry_interval_seconds":12},
            "comment":"sample scheduled event comment"}}"#;
        let Ok(Command::CreateScheduledEvent(event)) = parse(body) else {
            panic!("expected a create command");
        };
        let id = EventId::from_u128(42);
        let record = event.into_record(id, UnixMicros(5));
        assert_eq!(
            record,
            EventCreated {
                event_id: id,
                webhook: "https://send-email.com".into(),
                schedule_at: utc("2022-06-18T18:45:00Z"),
                payload: r#"{"email":"bob@ross.com"}"#.into(),
                headers: vec![
                    HeaderConf {
                        name: "key".into(),
                        value: HeaderValue::Value("value".into())
                    },
                    HeaderConf {
                        name: "X-Secret".into(),
                        value: HeaderValue::FromEnv("SECRET".into())
                    },
                ],
                retry_conf: RetryConf {
                    num_retries: 3,
                    retry_interval_seconds: 12,
                    timeout_seconds: 120,
                    tolerance_seconds: 21675
                },
                comment: Some("sample scheduled event comment".into()),
                created_at: UnixMicros(5),
            }
        );
    }

    #[test]
    fn create_missing_and_mistyped_args() {
        assert_create_err(
            json!({ "schedule_at": "2020-01-01T15:46Z" }),
            "parse-failed",
            "$.args.webhook",
        );
        assert_create_err(
            json!({ "webhook": HOOK }),
            "parse-failed",
            "$.args.schedule_at",
        );
        assert_create_err(
            args_with("webhook", json!(null)),
            "parse-failed",
            "$.args.webhook",
        );
        assert_create_err(
            args_with("webhook", json!(5)),
            "parse-failed",
            "$.args.webhook",
        );
        assert_create_err(
            args_with("schedule_at", json!(1577893560)),
            "parse-failed",
            "$.args.schedule_at",
        );
        assert_create_err(
            args_with("comment", json!(5)),
            "parse-failed",
            "$.args.comment",
        );
        assert_create_err(
            args_with("headers", json!({})),
            "parse-failed",
            "$.args.headers",
        );
        assert_create_err(
            args_with("retry_conf", json!([])),
            "parse-failed",
            "$.args.retry_conf",
        );
        // null means absent for optional arguments
        let event = create_ok(args_with("comment", json!(null)));
        assert_eq!(event.comment, None);
        assert_eq!(create_ok(args_with("headers", json!(null))).headers, vec![]);
        assert_eq!(
            create_ok(args_with("retry_conf", json!(null))).retry_conf,
            RetryConf::default()
        );
    }

    #[test]
    fn unknown_arg_is_named() {
        let e = parse(&create_body(args_with(
            "retry_config",
            json!({"num_retries": 1}),
        )))
        .unwrap_err();
        assert_eq!(
            (e.status, e.code, e.path.as_str()),
            (400, "parse-failed", "$.args.retry_config")
        );
        assert!(e.error.contains("retry_config"), "{}", e.error);
        assert!(e.error.contains("retry_conf"), "{}", e.error);
    }

    #[test]
    fn duplicate_arg_is_refused() {
        let body = r#"{"type":"create_scheduled_event","args":{"webhook":"http://a/","schedule_at":"2020-01-01T15:46Z","webhook":"http://b/"}}"#;
        assert_err(parse(body), 400, "parse-failed", "$.args.webhook");
    }

    #[test]
    fn transforms_are_not_supported() {
        assert_create_err(
            args_with("request_transform", json!({"method": "PUT"})),
            "not-supported",
            "$.args.request_transform",
        );
        assert_create_err(
            args_with("response_transform", json!({})),
            "not-supported",
            "$.args.response_transform",
        );
    }

    // --- schedule_at --------------------------------------------------------

    #[test]
    fn every_hasura_time_form_is_accepted() {
        let cases = [
            ("2020-01-01T15:46Z", "2020-01-01T15:46:00Z"),
            ("2020-01-01T15:47:00+0000", "2020-01-01T15:47:00Z"),
            ("2020-01-01T15:48:00-05:30", "2020-01-01T21:18:00Z"),
            ("2020-01-01 15:44 Z", "2020-01-01T15:44:00Z"),
            ("2020-01-01T15:45 Z", "2020-01-01T15:45:00Z"),
            ("2020-01-01T15:45:00.123456Z", "2020-01-01T15:45:00.123456Z"),
            ("2020-01-01T15:45:00", "2020-01-01T15:45:00Z"),
            ("2020-01-01T15:45:00+05:30", "2020-01-01T10:15:00Z"),
            // and a few neighbours of those
            ("2020-01-01T15:45:00+05", "2020-01-01T10:45:00Z"),
            ("2020-01-01 15:45:00 +05:30", "2020-01-01T10:15:00Z"),
            ("2019-12-31T23:30:00-01:00", "2020-01-01T00:30:00Z"),
            ("2020-02-29T00:00:00.5Z", "2020-02-29T00:00:00.5Z"),
            (
                "2020-01-01T15:45:00.1234567891Z",
                "2020-01-01T15:45:00.123456Z",
            ),
            ("2020-01-01t15:45:00z", "2020-01-01T15:45:00Z"),
        ];
        for (text, expected) in cases {
            let event = create_ok(args_with("schedule_at", json!(text)));
            assert_eq!(event.schedule_at, utc(expected), "{text}");
        }
        // Spelled out once, independent of jiff's parser:
        // 2020-01-01T00:00:00Z is 1577836800 s; 15:46 adds 56760 s.
        assert_eq!(
            parse_time("2020-01-01T15:46Z"),
            Some(UnixMicros(1_577_893_560_000_000))
        );
        assert_eq!(
            parse_time("2020-01-01T15:45:00.123456Z"),
            Some(UnixMicros(1_577_893_500_123_456))
        );
    }

    #[test]
    fn bad_times_are_parse_failed() {
        for text in [
            "",
            "tomorrow",
            "2020-01-01",
            "2020-01-01T",
            "2020-1-01T15:45Z",
            "2020-01-01T15Z",
            "2020-01-01T15:45:Z",
            "2020-01-01T15:45:00.Z",
            "2020-01-01T15:45:00 ",
            "2020-01-01T15:45:00  Z",
            "2020-01-01T15:45:00+0",
            "2020-01-01T15:45:00+05:3",
            "2020-01-01T15:45:00+24:00",
            "2020-01-01T15:45:00+05:60",
            "2020-01-01T15:45:00Zjunk",
            "2020-02-30T00:00Z",
            "2020-01-01T25:00Z",
            "2020-01-01T15:61Z",
            "2020-01-01T15:45:60Z",
            "2020-01-01T15:45:00[UTC]",
            "20200101T154500Z",
            "2020-01-01T15:45:00+05:30:00",
            "٢٠٢٠-01-01T15:45Z",
        ] {
            assert_create_err(
                args_with("schedule_at", json!(text)),
                "parse-failed",
                "$.args.schedule_at",
            );
        }
    }

    // --- payload ------------------------------------------------------------

    #[test]
    fn payload_raw_text_is_kept_byte_for_byte() {
        for payload in [
            r#"{"b":1,"a":1.50}"#,
            r#"{ "b" : 1 ,  "a":[1e2, -0.0, "\u00e9"] }"#,
            r#""just a string""#,
            "12345678901234567890123",
            "[]",
            "false",
        ] {
            let body = format!(
                r#"{{"type":"create_scheduled_event","args":{{"webhook":"{HOOK}","schedule_at":"2020-01-01T15:46Z","payload":{payload}}}}}"#
            );
            let Ok(Command::CreateScheduledEvent(event)) = parse(&body) else {
                panic!("expected a create command for {payload}");
            };
            assert_eq!(event.payload, payload);
        }
        assert_eq!(create_ok(args_with("payload", json!(null))).payload, "null");
    }

    #[test]
    fn overly_deep_payload_is_refused() {
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_PAYLOAD_DEPTH),
            "]".repeat(MAX_PAYLOAD_DEPTH)
        );
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_PAYLOAD_DEPTH + 1),
            "]".repeat(MAX_PAYLOAD_DEPTH + 1)
        );
        let body = |p: &str| {
            format!(
                r#"{{"type":"create_scheduled_event","args":{{"webhook":"{HOOK}","schedule_at":"2020-01-01T15:46Z","payload":{p}}}}}"#
            )
        };
        let Ok(Command::CreateScheduledEvent(event)) = parse(&body(&ok)) else {
            panic!("expected a create command");
        };
        // every accepted payload can be shown
        assert!(json_or_text(&event.payload).is_array());
        assert_err(
            parse(&body(&deep)),
            400,
            "validation-failed",
            "$.args.payload",
        );
        // brackets inside strings do not count
        assert_eq!(json_depth(r#"["[[[\"[", {"a": "}}"}]"#), 2);
    }

    // --- webhook ------------------------------------------------------------

    #[test]
    fn webhook_must_be_http_or_https_with_a_host() {
        for good in [
            "http://example.com",
            "https://example.com:8443/a/b?c=d#e",
            "http://127.0.0.1:9/hook",
            "http://[::1]:8080/",
        ] {
            assert_eq!(create_ok(args_with("webhook", json!(good))).webhook, good);
        }
        for bad in [
            "",
            "   ",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "mailto:a@example.com",
            "example.com/hook",
            "/relative",
            "http://",
            "not a url",
            "http://exa mple.com/",
        ] {
            assert_create_err(
                args_with("webhook", json!(bad)),
                "validation-failed",
                "$.args.webhook",
            );
        }
    }

    #[test]
    fn webhook_placeholders() {
        for good in [
            "{{BASE}}/x",
            "{{WEBHOOK_BASE}}/path",
            "{{WHOLE_URL}}",
            "http://{{HOST}}/x",
            "https://{{HOST}}:{{PORT}}/x",
            "http://host:{{PORT}}/x",
            "http://example.{{TLD}}/",
            "http://host/{{A}}{{B_2}}?k={{_C}}",
        ] {
            assert_eq!(
                create_ok(args_with("webhook", json!(good))).webhook,
                good,
                "{good}"
            );
        }
        for bad in [
            "http://host/{{BAD",
            "http://host/{{1BAD}}",
            "http://host/{{}}",
            "http://host/{{ SPACED }}",
            "{{BASE}/x",
            "{{BASE-URL}}/x",
            "ftp://{{HOST}}/x",
            "{{",
        ] {
            assert_create_err(
                args_with("webhook", json!(bad)),
                "validation-failed",
                "$.args.webhook",
            );
        }
    }

    #[test]
    fn resolving_webhook_templates() {
        let env = |name: &str| match name {
            "BASE" => Some("http://hooks.local:81".to_owned()),
            "ID" => Some("7".to_owned()),
            _ => None,
        };
        assert_eq!(
            resolve_webhook("{{BASE}}/e/{{ID}}", env).unwrap(),
            "http://hooks.local:81/e/7"
        );
        assert_eq!(
            resolve_webhook("http://plain/", env).unwrap(),
            "http://plain/"
        );
        let missing = resolve_webhook("{{BASE}}/{{NOPE}}", env).unwrap_err();
        assert!(missing.contains("NOPE"), "{missing}");
        assert!(resolve_webhook("{{BASE", env).is_err());
    }

    // --- headers ------------------------------------------------------------

    #[test]
    fn header_errors_have_element_paths() {
        let cases = [
            (
                json!([{"name": "ok", "value": "v"}, {"name": "bad name", "value": "v"}]),
                "validation-failed",
                "$.args.headers[1].name",
            ),
            (
                json!([{"name": "", "value": "v"}]),
                "validation-failed",
                "$.args.headers[0].name",
            ),
            (
                json!([{"name": "x:y", "value": "v"}]),
                "validation-failed",
                "$.args.headers[0].name",
            ),
            (
                json!([{"name": "k", "value": "a\r\nInjected: 1"}]),
                "validation-failed",
                "$.args.headers[0].value",
            ),
            (
                json!([{"name": "k", "value": "a\u{0}b"}]),
                "validation-failed",
                "$.args.headers[0].value",
            ),
            (
                json!([{"name": "k", "value_from_env": ""}]),
                "validation-failed",
                "$.args.headers[0].value_from_env",
            ),
            (
                json!([{"name": "k", "value_from_env": "A=B"}]),
                "validation-failed",
                "$.args.headers[0].value_from_env",
            ),
            (
                json!([{"name": "k", "value": "v", "value_from_env": "E"}]),
                "parse-failed",
                "$.args.headers[0]",
            ),
            (
                json!([{"name": "k"}]),
                "parse-failed",
                "$.args.headers[0].value",
            ),
            (
                json!([{"value": "v"}]),
                "parse-failed",
                "$.args.headers[0].name",
            ),
            (
                json!([{"name": "k", "value": 5}]),
                "parse-failed",
                "$.args.headers[0].value",
            ),
            (
                json!([{"name": "k", "value": "v", "secret": true}]),
                "parse-failed",
                "$.args.headers[0].secret",
            ),
            (json!(["k: v"]), "parse-failed", "$.args.headers[0]"),
        ];
        for (headers, code, path) in cases {
            assert_create_err(args_with("headers", headers), code, path);
        }
    }

    #[test]
    fn header_values_may_be_any_visible_text() {
        let event = create_ok(args_with(
            "headers",
            json!([{"name": "Authorization", "value": "Bearer abc=="}, {"name": "x-note", "value": "café\tok"}]),
        ));
        assert_eq!(event.headers.len(), 2);
        assert_eq!(event.headers[0].name, "Authorization");
    }

    // --- retry_conf ---------------------------------------------------------

    #[test]
    fn retry_conf_values() {
        for field in [
            "num_retries",
            "retry_interval_seconds",
            "timeout_seconds",
            "tolerance_seconds",
        ] {
            let path = format!("$.args.retry_conf.{field}");
            for (value, code) in [
                (json!(-1), "validation-failed"),
                (json!(-1.0), "validation-failed"),
                (json!(1.5), "parse-failed"),
                (json!("3"), "parse-failed"),
                (json!(true), "parse-failed"),
                (json!([1]), "parse-failed"),
                (json!(1e30), "validation-failed"),
            ] {
                assert_create_err(
                    args_with("retry_conf", json!({ field: value })),
                    code,
                    &path,
                );
            }
        }
        for field in ["num_retries", "retry_interval_seconds", "timeout_seconds"] {
            assert_create_err(
                args_with("retry_conf", json!({ field: 4_294_967_296u64 })),
                "validation-failed",
                &format!("$.args.retry_conf.{field}"),
            );
        }
        assert_create_err(
            args_with("retry_conf", json!({"timeout_seconds": 0})),
            "validation-failed",
            "$.args.retry_conf.timeout_seconds",
        );
        assert_create_err(
            args_with("retry_conf", json!({"num_retry": 1})),
            "parse-failed",
            "$.args.retry_conf.num_retry",
        );
    }

    #[test]
    fn retry_conf_partial_keeps_defaults() {
        let conf = create_ok(args_with(
            "retry_conf",
            json!({"num_retries": 1, "retry_interval_seconds": 0, "tolerance_seconds": 10_000_000_000u64}),
        ))
        .retry_conf;
        assert_eq!(
            conf,
            RetryConf {
                num_retries: 1,
                retry_interval_seconds: 0,
                timeout_seconds: 60,
                tolerance_seconds: 10_000_000_000,
            }
        );
        // an integral float is an integer
        let conf = create_ok(args_with(
            "retry_conf",
            json!({"num_retries": 5.0, "timeout_seconds": null}),
        ))
        .retry_conf;
        assert_eq!((conf.num_retries, conf.timeout_seconds), (5, 60));
    }

    // --- delete_scheduled_event ---------------------------------------------

    const ID: &str = "8f4c1a2e-5b7d-4c3e-9a1f-2d6b8e0c4f7a";

    fn delete_body(args: Value) -> String {
        json!({ "type": "delete_scheduled_event", "args": args }).to_string()
    }

    #[test]
    fn delete() {
        assert_eq!(
            parse(&delete_body(json!({"type": "one_off", "event_id": ID}))).unwrap(),
            Command::DeleteScheduledEvent {
                event_id: EventId::parse_str(ID).unwrap()
            }
        );
        let cases = [
            (json!({"event_id": ID}), "parse-failed", "$.args.type"),
            (
                json!({"type": "one_off"}),
                "parse-failed",
                "$.args.event_id",
            ),
            (
                json!({"type": "one_off", "event_id": "nope"}),
                "parse-failed",
                "$.args.event_id",
            ),
            (
                json!({"type": "one_off", "event_id": 5}),
                "parse-failed",
                "$.args.event_id",
            ),
            (
                json!({"type": "cron", "event_id": ID, "trigger_name": "t"}),
                "not-supported",
                "$.args.type",
            ),
            (
                json!({"type": "weekly", "event_id": ID}),
                "parse-failed",
                "$.args.type",
            ),
            (
                json!({"type": "one_off", "event_id": ID, "force": true}),
                "parse-failed",
                "$.args.force",
            ),
        ];
        for (args, code, path) in cases {
            assert_err(parse(&delete_body(args)), 400, code, path);
        }
    }

    // --- get_scheduled_events / get_scheduled_event_invocations --------------

    #[test]
    fn get_events() {
        let defaults = Command::GetScheduledEvents {
            statuses: vec![],
            limit: None,
            offset: 0,
            get_rows_count: false,
        };
        assert_eq!(
            parse(r#"{"type":"get_scheduled_events","args":{"type":"one_off"}}"#).unwrap(),
            defaults
        );
        assert_eq!(
            parse(r#"{"type":"get_scheduled_events","args":{}}"#).unwrap(),
            defaults
        );
        assert_eq!(
            parse(r#"{"type":"get_scheduled_events"}"#).unwrap(),
            defaults
        );
        assert_eq!(
            parse(r#"{"type":"get_scheduled_events","args":{"type":"one_off","limit":10,"offset":20,"status":["scheduled","dead"],"get_rows_count":true}}"#).unwrap(),
            Command::GetScheduledEvents {
                statuses: vec![Status::Scheduled, Status::Dead],
                limit: Some(10),
                offset: 20,
                get_rows_count: true,
            }
        );
        let bad = [
            (
                r#"{"type":"one_off","status":["scheduled","pending"]}"#,
                "parse-failed",
                "$.args.status[1]",
            ),
            (r#"{"status":"scheduled"}"#, "parse-failed", "$.args.status"),
            (r#"{"status":[1]}"#, "parse-failed", "$.args.status[0]"),
            (r#"{"limit":-1}"#, "validation-failed", "$.args.limit"),
            (r#"{"limit":"5"}"#, "parse-failed", "$.args.limit"),
            (r#"{"offset":-3}"#, "validation-failed", "$.args.offset"),
            (r#"{"offset":0.5}"#, "parse-failed", "$.args.offset"),
            (
                r#"{"get_rows_count":"yes"}"#,
                "parse-failed",
                "$.args.get_rows_count",
            ),
            (
                r#"{"type":"cron","trigger_name":"t"}"#,
                "not-supported",
                "$.args.type",
            ),
            (
                r#"{"type":"one_off","trigger_name":"t"}"#,
                "parse-failed",
                "$.args.trigger_name",
            ),
            (r#"[]"#, "parse-failed", "$.args"),
        ];
        for (args, code, path) in bad {
            let body = format!(r#"{{"type":"get_scheduled_events","args":{args}}}"#);
            assert_err(parse(&body), 400, code, path);
        }
    }

    #[test]
    fn get_invocations() {
        assert_eq!(
            parse(r#"{"type":"get_scheduled_event_invocations","args":{"type":"one_off"}}"#)
                .unwrap(),
            Command::GetScheduledEventInvocations {
                event_id: None,
                limit: None,
                offset: 0,
                get_rows_count: false
            }
        );
        let body = format!(
            r#"{{"type":"get_scheduled_event_invocations","args":{{"type":"one_off","event_id":"{ID}","limit":1,"offset":2,"get_rows_count":true}}}}"#
        );
        assert_eq!(
            parse(&body).unwrap(),
            Command::GetScheduledEventInvocations {
                event_id: Some(EventId::parse_str(ID).unwrap()),
                limit: Some(1),
                offset: 2,
                get_rows_count: true
            }
        );
        for (args, code, path) in [
            (r#"{"event_id":"x"}"#, "parse-failed", "$.args.event_id"),
            (r#"{"type":"cron"}"#, "not-supported", "$.args.type"),
            (r#"{"status":[]}"#, "parse-failed", "$.args.status"),
            (r#"{"limit":-1}"#, "validation-failed", "$.args.limit"),
        ] {
            let body = format!(r#"{{"type":"get_scheduled_event_invocations","args":{args}}}"#);
            assert_err(parse(&body), 400, code, path);
        }
    }

    // --- bulk -----------------------------------------------------------------

    fn bulk(items: Vec<Value>) -> String {
        json!({ "type": "bulk", "args": items }).to_string()
    }

    #[test]
    fn bulk_parses_every_item() {
        let body = bulk(vec![
            json!({"type": "create_scheduled_event", "args": minimal_args()}),
            json!({"type": "get_scheduled_events", "args": {}}),
        ]);
        let Ok(Command::Bulk(items)) = parse_request(body.as_bytes(), Endpoint::Query) else {
            panic!("expected a bulk");
        };
        assert_eq!(items.len(), 2);
        assert!(matches!(items[0], Command::CreateScheduledEvent(_)));
        assert_eq!(
            parse_request(br#"{"type":"bulk","args":[]}"#, Endpoint::Query),
            Ok(Command::Bulk(vec![]))
        );
    }

    #[test]
    fn bulk_fails_whole_with_the_sub_request_path() {
        let body = bulk(vec![
            json!({"type": "create_scheduled_event", "args": minimal_args()}),
            json!({"type": "get_scheduled_events", "args": {}}),
            json!({"type": "create_scheduled_event", "args": args_with("schedule_at", json!("soon"))}),
            json!({"type": "nope", "args": {}}),
        ]);
        assert_err(
            parse_request(body.as_bytes(), Endpoint::Query),
            400,
            "parse-failed",
            "$.args[2].args.schedule_at",
        );
        let body = bulk(vec![
            json!({"type": "get_scheduled_events"}),
            json!({"type": "nope", "args": {}}),
        ]);
        let e = parse_request(body.as_bytes(), Endpoint::Query).unwrap_err();
        assert_eq!(e.path, "$.args[1]");
        assert_eq!(e.error, r#"unknown metadata command "nope""#);
        assert_err(
            parse_request(br#"{"type":"bulk","args":{}}"#, Endpoint::Query),
            400,
            "parse-failed",
            "$.args",
        );
        assert_err(
            parse_request(br#"{"type":"bulk","args":[1]}"#, Endpoint::Query),
            400,
            "parse-failed",
            "$.args[0]",
        );
    }

    #[test]
    fn bulk_only_on_query() {
        let body = bulk(vec![json!({"type": "get_scheduled_events", "args": {}})]);
        let e = parse_request(body.as_bytes(), Endpoint::Metadata).unwrap_err();
        assert_eq!(
            (e.status, e.code, e.path.as_str()),
            (400, "parse-failed", "$")
        );
        assert_eq!(e.error, r#"unknown metadata command "bulk""#);
    }

    #[test]
    fn nested_bulk_is_allowed_but_capped() {
        let inner = json!({"type": "bulk", "args": [
            {"type": "get_scheduled_events", "args": {}},
            {"type": "create_scheduled_event", "args": {"schedule_at": "2020-01-01T15:46Z"}},
        ]});
        let body = bulk(vec![inner]);
        assert_err(
            parse_request(body.as_bytes(), Endpoint::Query),
            400,
            "parse-failed",
            "$.args[0].args[1].args.webhook",
        );

        let nest = |levels: usize| {
            let mut cmd = json!({"type": "get_scheduled_events", "args": {}});
            for _ in 0..levels {
                cmd = json!({"type": "bulk", "args": [cmd]});
            }
            cmd.to_string()
        };
        assert!(parse_request(nest(MAX_BULK_DEPTH).as_bytes(), Endpoint::Query).is_ok());
        let e = parse_request(nest(MAX_BULK_DEPTH + 1).as_bytes(), Endpoint::Query).unwrap_err();
        assert_eq!(e.code, "parse-failed");
        assert!(e.path.starts_with("$.args[0]"), "{}", e.path);

        // Far deeper than any recursion limit: refused, no stack overflow.
        let levels = 50_000;
        let hostile = format!(
            "{}{}",
            r#"{"type":"bulk","args":["#.repeat(levels),
            "]}".repeat(levels)
        );
        assert!(parse_request(hostile.as_bytes(), Endpoint::Query).is_err());
    }

    // --- rendering ------------------------------------------------------------

    fn sample_created() -> EventCreated {
        EventCreated {
            event_id: EventId::from_u128(0x1234),
            webhook: "{{BASE}}/hook".into(),
            schedule_at: utc("2020-01-01T15:46:00Z"),
            payload: r#"{"b":1,"a":1.50}"#.into(),
            headers: vec![
                HeaderConf {
                    name: "k".into(),
                    value: HeaderValue::Value("v".into()),
                },
                HeaderConf {
                    name: "s".into(),
                    value: HeaderValue::FromEnv("SECRET".into()),
                },
            ],
            retry_conf: RetryConf::default(),
            comment: None,
            created_at: utc("2020-01-01T15:00:00.5Z"),
        }
    }

    fn sample_view(created: &EventCreated) -> EventView {
        EventView {
            id: created.event_id,
            loc: Loc {
                segment: 0,
                offset: 0,
            },
            schedule_at: created.schedule_at,
            status: Status::Scheduled,
            tries: 0,
            interrupted: 0,
            next_retry_at: None,
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn event_shape() {
        let created = sample_created();
        let view = sample_view(&created);
        let v = render_event(&created, &view);
        assert_eq!(
            v,
            json!({
                "id": "00000000-0000-0000-0000-000000001234",
                "webhook_conf": "{{BASE}}/hook",
                "scheduled_time": "2020-01-01T15:46:00Z",
                "retry_conf": {"num_retries": 0, "retry_interval_seconds": 10, "timeout_seconds": 60, "tolerance_seconds": 21600},
                "payload": {"a": 1.5, "b": 1},
                "header_conf": [{"name": "k", "value": "v"}, {"name": "s", "value_from_env": "SECRET"}],
                "status": "scheduled",
                "tries": 0,
                "created_at": "2020-01-01T15:00:00.5Z",
                "next_retry_at": null,
                "comment": null,
            })
        );
        let view = EventView {
            status: Status::Scheduled,
            tries: 1,
            next_retry_at: Some(utc("2020-01-01T15:46:10Z")),
            ..view
        };
        let created = EventCreated {
            comment: Some("c".into()),
            ..created
        };
        let v = render_event(&created, &view);
        assert_eq!(v["next_retry_at"], "2020-01-01T15:46:10Z");
        assert_eq!(v["comment"], "c");
        assert_eq!(v["tries"], 1);
    }

    fn inv_ref(attempt: u128) -> InvocationRef {
        InvocationRef {
            attempt_id: EventId::from_u128(attempt),
            event_id: EventId::from_u128(0x1234),
            loc: Loc {
                segment: 1,
                offset: 2,
            },
            at: utc("2020-01-01T15:46:01Z"),
        }
    }

    fn invocation(response: InvocationResponse) -> Invocation {
        Invocation {
            request_body: r#"{"id":"x","payload":{"b":1}}"#.into(),
            request_headers: vec![("Content-Type".into(), "application/json".into())],
            response,
        }
    }

    #[test]
    fn invocation_with_webhook_response() {
        let record = Record::AttemptSucceeded {
            event_id: EventId::from_u128(0x1234),
            attempt_id: EventId::from_u128(9),
            at: utc("2020-01-01T15:46:01Z"),
            invocation: invocation(InvocationResponse::Webhook {
                status: 200,
                headers: vec![("x-r".into(), "1".into())],
                body: b"ok \xff".to_vec(),
                truncated: false,
            }),
        };
        let v = render_invocation(&inv_ref(9), &record).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "00000000-0000-0000-0000-000000000009",
                "event_id": "00000000-0000-0000-0000-000000001234",
                "status": 200,
                "request": {
                    "payload": {"id": "x", "payload": {"b": 1}},
                    "headers": [{"name": "Content-Type", "value": "application/json"}],
                    "version": "1",
                },
                "response": {
                    "type": "webhook_response",
                    "data": {"body": "ok \u{fffd}", "headers": [{"name": "x-r", "value": "1"}], "status": 200},
                    "version": "1",
                },
                "created_at": "2020-01-01T15:46:01Z",
            })
        );
    }

    #[test]
    fn invocation_truncated_and_client_error() {
        let failed = |response| Record::AttemptFailed {
            event_id: EventId::from_u128(0x1234),
            attempt_id: EventId::from_u128(9),
            at: utc("2020-01-01T15:46:01Z"),
            invocation: invocation(response),
            next_retry_at: None,
        };
        let v = render_invocation(
            &inv_ref(9),
            &failed(InvocationResponse::Webhook {
                status: 500,
                headers: vec![],
                body: b"partial".to_vec(),
                truncated: true,
            }),
        )
        .unwrap();
        assert_eq!(v["status"], 500);
        assert_eq!(v["response"]["data"]["truncated"], true);

        let v = render_invocation(
            &inv_ref(9),
            &failed(InvocationResponse::ClientError {
                message: "timed out after 60 s".into(),
            }),
        )
        .unwrap();
        assert_eq!(
            keys(&v),
            [
                "created_at",
                "event_id",
                "id",
                "request",
                "response",
                "status"
            ]
        );
        assert_eq!(v["status"], Value::Null);
        assert_eq!(
            v["response"],
            json!({"type": "client_error", "data": {"message": "timed out after 60 s"}, "version": "1"})
        );
    }

    #[test]
    fn invocation_for_give_up_and_non_invocations() {
        let interrupted = |give_up| Record::AttemptInterrupted {
            event_id: EventId::from_u128(0x1234),
            attempt_id: EventId::from_u128(9),
            at: utc("2020-01-01T15:46:01Z"),
            give_up,
            reason: "interrupted 3 times".into(),
        };
        let v = render_invocation(&inv_ref(9), &interrupted(true)).unwrap();
        assert_eq!(v["status"], Value::Null);
        assert_eq!(
            v["request"],
            json!({"payload": null, "headers": [], "version": "1"})
        );
        assert_eq!(
            v["response"],
            json!({"type": "client_error", "data": {"message": "interrupted 3 times"}, "version": "1"})
        );
        assert_eq!(render_invocation(&inv_ref(9), &interrupted(false)), None);
        // the record must be the one the reference names
        assert_eq!(render_invocation(&inv_ref(8), &interrupted(true)), None);
        let created = Record::EventCreated(sample_created());
        assert_eq!(render_invocation(&inv_ref(9), &created), None);
        let started = Record::AttemptStarted {
            event_id: EventId::from_u128(0x1234),
            attempt_id: EventId::from_u128(9),
            at: UnixMicros(0),
        };
        assert_eq!(render_invocation(&inv_ref(9), &started), None);
    }

    #[test]
    fn webhook_body_embeds_raw_payload() {
        let created = sample_created();
        let body = webhook_body(&created);
        assert_eq!(
            body,
            r#"{"id":"00000000-0000-0000-0000-000000001234","scheduled_time":"2020-01-01T15:46:00Z","payload":{"b":1,"a":1.50},"created_at":"2020-01-01T15:00:00.5Z"}"#
        );
        let with_comment = EventCreated {
            comment: Some("say \"hi\"".into()),
            payload: "null".into(),
            ..created.clone()
        };
        let v: Value = serde_json::from_str(&webhook_body(&with_comment)).unwrap();
        assert_eq!(v["comment"], "say \"hi\"");
        assert_eq!(v["payload"], Value::Null);
        // not JSON (never written by chime): still a valid body
        let broken = EventCreated {
            payload: "{oops".into(),
            ..created
        };
        let v: Value = serde_json::from_str(&webhook_body(&broken)).unwrap();
        assert_eq!(v["payload"], "{oops");
    }

    #[test]
    fn simple_answers() {
        assert_eq!(success(), json!({"message": "success"}));
        assert_eq!(
            created(EventId::from_u128(1)),
            json!({"message": "success", "event_id": "00000000-0000-0000-0000-000000000001"})
        );
        assert_eq!(events_answer(vec![], None), json!({"events": []}));
        assert_eq!(
            events_answer(vec![], Some(0)),
            json!({"events": [], "count": 0})
        );
        assert_eq!(
            invocations_answer(vec![json!(1)], Some(3)),
            json!({"invocations": [1], "count": 3})
        );
    }

    // --- never panics -----------------------------------------------------------

    /// JSON values built from the words this module looks for, so random
    /// documents reach deep into the parser rather than failing at the top.
    fn json_strategy() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let words = prop::sample::select(vec![
            "type",
            "args",
            "version",
            "resource_version",
            "bulk",
            "create_scheduled_event",
            "delete_scheduled_event",
            "get_scheduled_events",
            "get_scheduled_event_invocations",
            "webhook",
            "schedule_at",
            "payload",
            "headers",
            "retry_conf",
            "comment",
            "name",
            "value",
            "value_from_env",
            "num_retries",
            "retry_interval_seconds",
            "timeout_seconds",
            "tolerance_seconds",
            "event_id",
            "limit",
            "offset",
            "status",
            "get_rows_count",
            "one_off",
            "cron",
            "scheduled",
            "dead",
            "http://h/{{X}}",
            "{{A}}",
            "{{",
            "",
            "2020-01-01T15:46Z",
            "2020-01-01 15:44 Z",
            ID,
            "request_transform",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            words.clone().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::vec((words.clone(), inner), 0..6).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_request(&bytes, Endpoint::Query);
            let _ = parse_request(&bytes, Endpoint::Metadata);
        }

        #[test]
        fn never_panics_on_json_ish_text(text in r#"[\[\]{}":,. 0-9a-z_\-+eETZ{}\\]{0,200}"#) {
            let _ = parse_request(text.as_bytes(), Endpoint::Query);
        }

        #[test]
        fn never_panics_on_commands(
            ty in proptest::sample::select(vec![
                "create_scheduled_event", "delete_scheduled_event", "get_scheduled_events",
                "get_scheduled_event_invocations", "bulk",
            ]),
            args in json_strategy(),
        ) {
            let body = json!({ "type": ty, "args": args }).to_string();
            if let Ok(Command::CreateScheduledEvent(event)) = parse_request(body.as_bytes(), Endpoint::Query) {
                // whatever is accepted can be shown and sent
                let record = event.into_record(EventId::from_u128(1), UnixMicros(0));
                let sent: Value = serde_json::from_str(&webhook_body(&record)).unwrap();
                proptest::prop_assert!(sent.is_object());
            }
        }

        #[test]
        fn never_panics_on_random_documents(doc in json_strategy()) {
            let _ = parse_request(doc.to_string().as_bytes(), Endpoint::Query);
        }
    }
}
