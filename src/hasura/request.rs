//! Requests: a body sent to an [`Endpoint`] becomes a validated [`Command`].
//! One parser per command, each reading its `args` with the typed readers
//! of [`super::json`] (the shape of mini-redis's `cmd/`).

use serde_json::Value;
use serde_json::value::RawValue;

use super::error::ApiError;
use super::json::{Field, Obj};
use super::time::parse_time;
use crate::projection::{Order, SortBy, SortColumn, Status};
use crate::record::{Backoff, EventCreated, EventId, HeaderConf, HeaderSource, RetryConf, UnixMicros};
use crate::webhook::{
    EnvPolicy, MAX_EVENT_HEADER_BYTES, MAX_EVENT_HEADERS, check_header_name, check_header_value, validate_template,
    validate_webhook,
};

/// How deeply `bulk` requests may nest inside each other. Hasura allows
/// nesting; a cap keeps a hostile body from recursing the parser off the stack.
pub const MAX_BULK_DEPTH: usize = 8;

/// How deeply a payload's arrays and objects may nest. The payload is read
/// back into a `serde_json::Value` to be shown, and serde_json refuses to
/// build one deeper than 128 levels; a lower cap keeps every accepted payload
/// showable.
pub const MAX_PAYLOAD_DEPTH: usize = 100;

/// Which URL the request came in on: both take `bulk`; only `/v1/metadata`
/// takes `bulk_atomic` and `bulk_keep_going`, as in Hasura.
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
    /// `create_scheduled_event`: answered with [`super::created`].
    CreateScheduledEvent(NewEvent),
    /// `delete_scheduled_event` (`type: one_off`): answered with
    /// [`super::success`], also for an id that names no live event (nothing
    /// is written for it).
    DeleteScheduledEvent { event_id: EventId },
    /// `get_scheduled_events`: answered as [`super::Listing::Events`].
    GetScheduledEvents {
        /// Empty means every status.
        statuses: Vec<Status>,
        /// `order_by`; empty: `scheduled_time` ascending.
        order: Order,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
    },
    /// `get_scheduled_event_invocations`: answered as
    /// [`super::Listing::Invocations`].
    GetScheduledEventInvocations {
        /// Whose invocations: every event's when `event_id` is absent.
        event_id: InvocationsOf,
        /// `order_by`; empty: `created_at` descending (newest first).
        order: Order,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
    },
    /// `bulk` (either endpoint) or `bulk_atomic` (`/v1/metadata`): all or
    /// nothing. Validated as a whole (the first bad command fails the
    /// request), its writes appended as one batch; answered with an array,
    /// one answer per command, a nested bulk's answer a nested array.
    Bulk(Vec<Command>),
    /// `bulk_keep_going` (`/v1/metadata`): each command on its own. A
    /// command that does not parse is kept as its error, answered in its
    /// place in the array; the others run.
    BulkKeepGoing(Vec<Result<Command, ApiError>>),
}

/// Whose invocations `get_scheduled_event_invocations` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvocationsOf {
    /// No `event_id`: every event's.
    Every,
    /// That event's; none when it names no event (never created, or
    /// deleted), which is an empty listing, not an error, as in Hasura.
    Event(EventId),
    /// An `event_id` that is not a UUID: it names no event, so the listing
    /// is empty (Hasura looks it up as text and finds no row).
    NoEvent,
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
/// (or `bulk_atomic`) the first error in any sub-request fails the request,
/// with a path that points into that sub-request
/// (`$.args[2].args.schedule_at`); in a `bulk_keep_going` each sub-request's
/// error is kept in its place. Never panics, whatever the bytes.
pub fn parse_request(body: &[u8], endpoint: Endpoint) -> Result<Command, ApiError> {
    // Not UTF-8 is not JSON either: Hasura answers both `invalid-json`.
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::invalid_json(format!("the body is not UTF-8: {e}")))?;
    // Borrowing the body as raw JSON keeps the payload's exact text and
    // checks the syntax of the whole body up front, so later errors are
    // about meaning only.
    let raw: &RawValue = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid_json(format!("invalid JSON: {e}")))?;
    parse_command(&Field::root(raw), endpoint, 0)
}

fn parse_command(field: &Field<'_>, endpoint: Endpoint, depth: usize) -> Result<Command, ApiError> {
    let obj = field.object("a request object {\"type\": ..., \"args\": ...}")?;
    // `version` and `resource_version` are Hasura's optimistic-concurrency
    // and API-version fields; chime has no metadata to version, so any value
    // is accepted and ignored.
    obj.check_keys(&["type", "args", "version", "resource_version"], &[])?;
    let ty = obj.required("type")?.string()?;
    match ty.as_str() {
        "create_scheduled_event" => {
            parse_create(&obj.required("args")?).map(Command::CreateScheduledEvent)
        }
        "delete_scheduled_event" => parse_delete(&obj.required("args")?),
        "get_scheduled_events" => parse_get_events(&obj.object_or_empty("args")?),
        "get_scheduled_event_invocations" => parse_get_invocations(&obj.object_or_empty("args")?),
        "bulk" => parse_atomic(&obj.required("args")?, endpoint, depth),
        "bulk_atomic" if endpoint == Endpoint::Metadata => {
            parse_atomic(&obj.required("args")?, endpoint, depth)
        }
        "bulk_keep_going" if endpoint == Endpoint::Metadata => {
            parse_bulk(&obj.required("args")?, endpoint, depth).map(Command::BulkKeepGoing)
        }
        other => Err(ApiError::parse_failed(
            obj.path(),
            format!("unknown metadata command {}", Value::from(other)),
        )),
    }
}

/// `bulk` or `bulk_atomic`: the first command that does not parse fails
/// the whole request, with its path (`$.args[2].args.schedule_at`).
fn parse_atomic(args: &Field<'_>, endpoint: Endpoint, depth: usize) -> Result<Command, ApiError> {
    parse_bulk(args, endpoint, depth)?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map(Command::Bulk)
}

/// A bulk's commands, each parsed or its error: the array itself must be
/// one, within [`MAX_BULK_DEPTH`]. The commands are those of `endpoint`.
fn parse_bulk(
    args: &Field<'_>,
    endpoint: Endpoint,
    depth: usize,
) -> Result<Vec<Result<Command, ApiError>>, ApiError> {
    if depth >= MAX_BULK_DEPTH {
        return Err(args.parse_failed(format!(
            "bulk requests may nest at most {MAX_BULK_DEPTH} levels deep"
        )));
    }
    Ok(args
        .array("expected an array of requests")?
        .iter()
        .map(|item| parse_command(item, endpoint, depth + 1))
        .collect())
}

fn parse_create(args: &Field<'_>) -> Result<NewEvent, ApiError> {
    let obj = args.object("an object")?;
    obj.check_keys(
        &[
            "webhook",
            "schedule_at",
            "payload",
            "headers",
            "retry_conf",
            "comment",
            "request_transform",
            "response_transform",
        ],
        &[],
    )?;
    // `null` is absent, as Hasura reads it; a transform itself chime does
    // not do, and refuses rather than drop (Hasura drops them silently for
    // one-off events).
    for key in ["request_transform", "response_transform"] {
        if let Some(field) = obj.get(key) {
            return Err(ApiError::not_supported(
                field.path(),
                format!("{} is not supported by chime", Value::from(key)),
            ));
        }
    }

    let webhook_field = obj.required("webhook")?;
    let webhook = webhook_field.string()?;
    validate_webhook(&webhook).map_err(|e| webhook_field.validation_failed(e))?;

    let schedule_field = obj.required("schedule_at")?;
    let schedule_text = schedule_field.string()?;
    let schedule_at = parse_time(&schedule_text).ok_or_else(|| {
        schedule_field.parse_failed(format!(
            "{} is not an ISO 8601 time; expected e.g. \"2020-01-01T15:46:00Z\"",
            Value::from(schedule_text.as_str())
        ))
    })?;

    let payload = match obj.get("payload") {
        Some(field) => {
            if field.depth() > MAX_PAYLOAD_DEPTH {
                return Err(field.validation_failed(format!(
                    "the payload nests more than {MAX_PAYLOAD_DEPTH} levels deep"
                )));
            }
            field.text().to_owned()
        }
        None => "null".to_owned(),
    };

    let headers = match obj.get("headers") {
        Some(field) => parse_headers(&field)?,
        None => Vec::new(),
    };
    let retry_conf = match obj.get("retry_conf") {
        Some(field) => parse_retry_conf(&field)?,
        None => RetryConf::default(),
    };
    let comment = obj.get("comment").map(|f| f.string()).transpose()?;

    Ok(NewEvent {
        webhook,
        schedule_at,
        payload,
        headers,
        retry_conf,
        comment,
    })
}

/// The event's headers: at most [`MAX_EVENT_HEADERS`], at most
/// [`MAX_EVENT_HEADER_BYTES`] of names and values (of variable names, for
/// `value_from_env`) in total, each with a name and value HTTP accepts and
/// no header chime or the HTTP layer own ([`check_header_name`]). Each
/// refusal names the header it is about (`$.args.headers[3].name`).
fn parse_headers(field: &Field<'_>) -> Result<Vec<HeaderConf>, ApiError> {
    let items = field
        .array("expected an array of {\"name\", \"value\"} or {\"name\", \"value_from_env\"}")?;
    if let Some(first_over) = items.get(MAX_EVENT_HEADERS) {
        return Err(first_over.validation_failed(format!(
            "an event may have at most {MAX_EVENT_HEADERS} headers, got {}",
            items.len()
        )));
    }
    let mut headers = Vec::with_capacity(items.len());
    let mut total_bytes = 0usize;
    for item in &items {
        let obj = item.object("a header object")?;
        obj.check_keys(&["name", "value", "value_from_env"], &[])?;

        let name_field = obj.required("name")?;
        let name = name_field.string()?;
        check_header_name(&name).map_err(|e| name_field.validation_failed(e))?;

        let value = match (obj.get("value"), obj.get("value_from_env")) {
            (Some(field), None) => {
                let value = field.string()?;
                check_header_value(&value).map_err(|e| field.validation_failed(e))?;
                // A value is a template, resolved at delivery like the URL.
                validate_template(&value).map_err(|e| field.parse_failed(e))?;
                HeaderSource::Value(value)
            }
            (None, Some(field)) => {
                let var = field.string()?;
                // `std::env::var` may panic on a name that is empty or holds
                // `=` or NUL; refusing them here keeps delivery panic-free.
                // The value itself is only known at delivery, where
                // `webhook::prepare` checks it (a failed attempt).
                if var.is_empty() || var.contains(['=', '\0']) {
                    return Err(field.validation_failed(
                        "expected the name of an environment variable (non-empty, no '=' or NUL)",
                    ));
                }
                HeaderSource::FromEnv(var)
            }
            (Some(_), Some(_)) => {
                return Err(item.parse_failed(
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
        let value_len = match &value {
            HeaderSource::Value(v) | HeaderSource::FromEnv(v) => v.len(),
        };
        total_bytes += name.len() + value_len;
        if total_bytes > MAX_EVENT_HEADER_BYTES {
            return Err(item.validation_failed(format!(
                "the headers' names and values may come to at most {MAX_EVENT_HEADER_BYTES} bytes in total; this header passes that"
            )));
        }
        headers.push(HeaderConf { name, value });
    }
    Ok(headers)
}

fn parse_retry_conf(field: &Field<'_>) -> Result<RetryConf, ApiError> {
    let obj = field.object("an object")?;
    obj.check_keys(
        &[
            "num_retries",
            "retry_interval_seconds",
            "timeout_seconds",
            "tolerance_seconds",
            "retry_backoff",
            "max_retry_interval_seconds",
        ],
        &[],
    )?;
    let mut conf = RetryConf::default();
    // Hasura reads these as non-negative numbers: a negative one does not
    // parse (`parse-failed`), whatever its size.
    let non_negative = |f: &Field<'_>| -> Result<(), ApiError> {
        if f.text().trim_start().starts_with('-') {
            return Err(f.parse_failed("expected a number that is 0 or more"));
        }
        Ok(())
    };
    if let Some(field) = obj.get("num_retries") {
        non_negative(&field)?;
        conf.num_retries = field.u32()?;
    }
    // The spans may be fractional and 0, as in Hasura (a `timeout_seconds`
    // of 0 times out at once).
    if let Some(field) = obj.get("retry_interval_seconds") {
        conf.retry_interval_seconds = field.seconds()?;
    }
    if let Some(field) = obj.get("timeout_seconds") {
        conf.timeout_seconds = field.seconds()?;
    }
    if let Some(field) = obj.get("tolerance_seconds") {
        conf.tolerance_seconds = field.seconds()?;
    }
    // chime's extensions (Hasura has neither): how the wait between
    // retries grows, and its cap.
    if let Some(field) = obj.get("retry_backoff") {
        conf.backoff = match field.string()?.as_str() {
            "fixed" => Backoff::Fixed,
            "exponential" => Backoff::Exponential,
            other => {
                return Err(field.validation_failed(format!(
                    "expected \"fixed\" or \"exponential\", got {other:?}"
                )));
            }
        };
    }
    if let Some(field) = obj.get("max_retry_interval_seconds") {
        conf.max_retry_interval_seconds = field.seconds()?;
    }
    Ok(conf)
}

fn parse_delete(args: &Field<'_>) -> Result<Command, ApiError> {
    let obj = args.object("an object")?;
    check_one_off(&obj, true)?;
    obj.check_keys(&["type", "event_id"], &[])?;
    let event_id = obj.required("event_id")?.uuid()?;
    Ok(Command::DeleteScheduledEvent { event_id })
}

fn parse_get_events(obj: &Obj<'_>) -> Result<Command, ApiError> {
    check_one_off(obj, false)?;
    obj.check_keys(
        &[
            "type",
            "trigger_name",
            "limit",
            "offset",
            "status",
            "get_rows_count",
            "order_by",
        ],
        &[],
    )?;
    check_trigger_name(obj)?;
    let (limit, offset, get_rows_count) = paging(obj)?;
    let order = order_by(obj)?;
    let mut statuses = Vec::new();
    if let Some(field) = obj.get("status") {
        for item in field.array("expected an array of statuses")? {
            let name = item.string()?;
            let status = Status::parse(&name).ok_or_else(|| {
                item.parse_failed(format!(
                    "unknown status {}; expected one of scheduled, locked, delivered, error, dead",
                    Value::from(name.as_str())
                ))
            })?;
            statuses.push(status);
        }
    }
    Ok(Command::GetScheduledEvents {
        statuses,
        order,
        limit,
        offset,
        get_rows_count,
    })
}

fn parse_get_invocations(obj: &Obj<'_>) -> Result<Command, ApiError> {
    check_one_off(obj, false)?;
    obj.check_keys(
        &[
            "type",
            "event_id",
            "trigger_name",
            "limit",
            "offset",
            "get_rows_count",
            "order_by",
        ],
        &[],
    )?;
    check_trigger_name(obj)?;
    let order = order_by(obj)?;
    let event_id = match obj.get("event_id") {
        None => InvocationsOf::Every,
        // Any string is accepted, a UUID or not; anything else is not an id.
        Some(field) => match EventId::parse_str(&field.string()?) {
            Ok(id) => InvocationsOf::Event(id),
            Err(_) => InvocationsOf::NoEvent,
        },
    };
    let (limit, offset, get_rows_count) = paging(obj)?;
    Ok(Command::GetScheduledEventInvocations {
        event_id,
        order,
        limit,
        offset,
        get_rows_count,
    })
}

/// `trigger_name` names a cron trigger; for `one_off` Hasura accepts it
/// and ignores it, so chime only checks that it is text.
fn check_trigger_name(obj: &Obj<'_>) -> Result<(), ApiError> {
    obj.get("trigger_name").map(|f| f.string()).transpose()?;
    Ok(())
}

/// `order_by`: a list of `{"column": "scheduled_time"|"created_at",
/// "type": "asc"|"desc", "nulls": "first"|"last"}`, most significant
/// first; `type` defaults to `asc`. Neither column is ever null, so
/// `nulls` is checked and has no effect.
fn order_by(obj: &Obj<'_>) -> Result<Order, ApiError> {
    let Some(field) = obj.get("order_by") else {
        return Ok(Order::default());
    };
    let mut by = Vec::new();
    for item in field.array("expected an array of {\"column\", \"type\", \"nulls\"}")? {
        let entry = item.object("an object {\"column\", \"type\", \"nulls\"}")?;
        entry.check_keys(&["column", "type", "nulls"], &[])?;
        let one_of = |key: &str, names: &[&str]| -> Result<Option<String>, ApiError> {
            let Some(field) = entry.get(key) else {
                return Ok(None);
            };
            let name = field.string()?;
            if names.contains(&name.as_str()) {
                Ok(Some(name))
            } else {
                Err(field.parse_failed(format!(
                    "unexpected {}; expected one of: {}",
                    Value::from(name.as_str()),
                    names.join(", ")
                )))
            }
        };
        entry.required("column")?;
        let column = match one_of("column", &["scheduled_time", "created_at"])?.as_deref() {
            Some("created_at") => SortColumn::CreatedAt,
            _ => SortColumn::ScheduledTime,
        };
        let descending = one_of("type", &["asc", "desc"])?.is_some_and(|t| t == "desc");
        one_of("nulls", &["first", "last"])?;
        by.push(SortBy { column, descending });
    }
    Ok(Order::new(by))
}

/// `limit`, `offset` (default 0) and `get_rows_count` (default false).
fn paging(obj: &Obj<'_>) -> Result<(Option<usize>, usize, bool), ApiError> {
    let limit = obj.get("limit").map(|f| f.usize()).transpose()?;
    let offset = obj
        .get("offset")
        .map(|f| f.usize())
        .transpose()?
        .unwrap_or(0);
    let get_rows_count = obj
        .get("get_rows_count")
        .map(|f| f.bool())
        .transpose()?
        .unwrap_or(false);
    Ok((limit, offset, get_rows_count))
}

/// Checks the `type` argument of delete and get commands: `one_off` is the
/// only kind chime has; `cron` is Hasura's other kind, refused as unsupported.
/// Checked before the other keys so that a cron request (which carries
/// cron-only keys like `trigger_name`) is told `not-supported`, not about a key.
fn check_one_off(obj: &Obj<'_>, required: bool) -> Result<(), ApiError> {
    let field = if required {
        obj.required("type")?
    } else {
        match obj.get("type") {
            Some(field) => field,
            None => return Ok(()),
        }
    };
    match field.string()?.as_str() {
        "one_off" => Ok(()),
        "cron" => Err(ApiError::not_supported(
            field.path(),
            "cron triggers are not supported by chime; only \"one_off\" events are",
        )),
        other => {
            Err(field.parse_failed(format!("expected \"one_off\", got {}", Value::from(other))))
        }
    }
}

/// Checks every variable the creates in `command` would read at delivery
/// against `policy` (400 `validation-failed`, so nothing is written). Apart
/// from [`parse_request`] because the policy is server configuration and
/// parsing is pure syntax and meaning; the API runs both before any write.
///
/// In a `bulk_keep_going`, a command the policy refuses becomes its error,
/// answered in its place, as one that does not parse.
pub fn check_env_policy(command: &mut Command, policy: &EnvPolicy) -> Result<(), ApiError> {
    check_env_at(command, policy, "$")
}

fn check_env_at(command: &mut Command, policy: &EnvPolicy, path: &str) -> Result<(), ApiError> {
    match command {
        Command::CreateScheduledEvent(event) => {
            policy
                .check_template(&event.webhook)
                .map_err(|e| ApiError::validation_failed(format!("{path}.args.webhook"), e))?;
            for (i, header) in event.headers.iter().enumerate() {
                match &header.value {
                    HeaderSource::FromEnv(var) => policy.check(var).map_err(|e| {
                        ApiError::validation_failed(
                            format!("{path}.args.headers[{i}].value_from_env"),
                            e,
                        )
                    })?,
                    HeaderSource::Value(template) => {
                        policy.check_template(template).map_err(|e| {
                            ApiError::validation_failed(
                                format!("{path}.args.headers[{i}].value"),
                                e,
                            )
                        })?
                    }
                }
            }
            Ok(())
        }
        Command::Bulk(commands) => commands
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, c)| check_env_at(c, policy, &format!("{path}.args[{i}]"))),
        Command::BulkKeepGoing(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                if let Ok(c) = item
                    && let Err(e) = check_env_at(c, policy, &format!("{path}.args[{i}]"))
                {
                    *item = Err(e);
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
