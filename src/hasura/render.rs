//! What chime answers with, as Hasura shows it: the answers to each
//! command, events as `get_scheduled_events` lists them and invocation logs
//! as `get_scheduled_event_invocations` lists them.

use serde_json::{Value, json};

use crate::projection::{EventView, InvocationRef};
use crate::record::{
    Backoff, EventCreated, EventId, HeaderConf, HeaderSource, Invocation, InvocationResponse, Record,
    RetryConf, UnixMicros,
};

/// `{"message": "success"}`
pub fn success() -> Value {
    json!({ "message": "success" })
}

/// The answer to `create_scheduled_event`: `{"message":"success","event_id":"..."}`.
pub fn created(event_id: EventId) -> Value {
    json!({ "message": "success", "event_id": event_id.to_string() })
}

/// The answer to `get_scheduled_event_invocations` for an `event_id` that
/// is not an id: `{"invocations":[]}`, with `"count":0` when asked for.
pub fn no_invocations(get_rows_count: bool) -> Value {
    if get_rows_count {
        json!({ "count": 0, "invocations": [] })
    } else {
        json!({ "invocations": [] })
    }
}

/// A listing's answer written a piece at a time, for answers too large to
/// build whole: [`Listing::head`], then each row's JSON separated by
/// [`ROW_SEPARATOR`], then [`LISTING_TAIL`]. The bytes are exactly those of
/// the answer built whole as a `Value` and serialized by `serde_json` (as
/// chime did before it streamed listings; a test checks it), whose maps
/// keep keys sorted: `count` (when asked for) comes before the
/// rows, which is also why it can be taken first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// `get_scheduled_events`: `{"count":N,"events":[…]}`.
    Events,
    /// `get_scheduled_event_invocations`: `{"count":N,"invocations":[…]}`.
    Invocations,
}

impl Listing {
    /// Appends the answer's opening, up to the row array's `[`, to `out`.
    pub fn head(self, count: Option<usize>, out: &mut Vec<u8>) {
        let key = match self {
            Listing::Events => "events",
            Listing::Invocations => "invocations",
        };
        out.push(b'{');
        if let Some(count) = count {
            out.extend_from_slice(format!("\"count\":{count},").as_bytes());
        }
        out.extend_from_slice(format!("\"{key}\":[").as_bytes());
    }
}

/// What goes between two rows of a listing written piece by piece.
pub const ROW_SEPARATOR: u8 = b',';

/// What closes a listing written piece by piece.
pub const LISTING_TAIL: &[u8] = b"]}";

/// An event's `retry_conf` as Hasura shows it (spans in seconds, a
/// decimal where fractional), with chime's backoff keys only for an event
/// that asked for exponential backoff: Hasura's shape otherwise.
pub fn render_retry_conf(retry: &RetryConf) -> Value {
    let mut conf = json!({
        "num_retries": retry.num_retries,
        "retry_interval_seconds": retry.retry_interval_seconds.to_json(),
        "timeout_seconds": retry.timeout_seconds.to_json(),
        "tolerance_seconds": retry.tolerance_seconds.to_json(),
    });
    if retry.backoff == Backoff::Exponential {
        conf["retry_backoff"] = json!("exponential");
        conf["max_retry_interval_seconds"] = retry.max_retry_interval_seconds.to_json();
    }
    conf
}

/// One event as `get_scheduled_events` shows it, every key present (null
/// when empty), times in UTC.
///
/// The payload is shown as a JSON value, so its key order and number
/// spelling may differ from what was sent; the webhook gets the exact text
/// (see [`crate::webhook::webhook_body`]).
pub fn render_event(created: &EventCreated, view: &EventView) -> Value {
    json!({
        "id": created.event_id.to_string(),
        "webhook_conf": created.webhook,
        "scheduled_time": created.schedule_at.to_rfc3339(),
        "retry_conf": render_retry_conf(&created.retry_conf),
        "payload": json_or_text(&created.payload),
        "header_conf": created.headers.iter().map(render_header_conf).collect::<Vec<_>>(),
        "status": view.status.as_str(),
        "tries": view.tries,
        "created_at": created.created_at.to_rfc3339(),
        "next_retry_at": view.next_retry_at.map(UnixMicros::to_rfc3339),
        "comment": created.comment,
        // chime runs no transforms (a create naming one is refused), so
        // these are always null, as Hasura shows an event without them.
        "request_transform": null,
        "response_transform": null,
    })
}

fn render_header_conf(header: &HeaderConf) -> Value {
    match &header.value {
        HeaderSource::Value(value) => json!({ "name": header.name, "value": value }),
        HeaderSource::FromEnv(var) => json!({ "name": header.name, "value_from_env": var }),
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
    if attempt_id != inv.attempt_id || record.event_id() != Some(inv.event_id) {
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
        "headers": render_request_headers(&invocation.request_headers),
        "version": "1",
    })
}

/// The request's headers as Hasura lists them: `Content-Type` and
/// `User-Agent` first, then the event's headers as configured, a
/// `value_from_env` one as `{"name", "value_from_env"}` (never its value).
/// Done here, not when the attempt is recorded, so that records written
/// before show the same way.
fn render_request_headers(pairs: &[(String, String)]) -> Vec<Value> {
    use crate::webhook::{SERVICE_HEADERS, is_service_header};
    let first = SERVICE_HEADERS.iter().filter_map(|want| {
        pairs
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(want))
    });
    let rest = pairs.iter().filter(|(name, _)| !is_service_header(name));
    first
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .chain(rest.map(|(name, value)| match crate::webhook::from_env_var(value) {
            Some(var) => json!({ "name": name, "value_from_env": var }),
            None => json!({ "name": name, "value": value }),
        }))
        .collect()
}

fn render_response(response: &InvocationResponse) -> Value {
    match response {
        InvocationResponse::Webhook {
            status,
            headers,
            body,
            truncated,
        } => {
            // A 2xx is a `webhook_response`; any other answer is, as in
            // Hasura, a `client_error` whose message is the body (the
            // status is the invocation's), keeping headers and status
            // beside it.
            let success = (200..300).contains(status);
            let text = String::from_utf8_lossy(body);
            let mut data = if success {
                json!({ "body": text, "headers": render_pairs(headers), "status": status })
            } else {
                json!({ "message": text, "headers": render_pairs(headers), "status": status })
            };
            // Only flagged when true, so an ordinary answer has exactly
            // Hasura's shape.
            if let (true, Some(obj)) = (*truncated, data.as_object_mut()) {
                obj.insert("truncated".to_owned(), Value::Bool(true));
            }
            let kind = if success { "webhook_response" } else { "client_error" };
            json!({ "type": kind, "data": data, "version": "1" })
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
///
/// Read by [`PlainValue`], not by `Value`'s own `Deserialize`: with
/// serde_json's `raw_value` feature (which chime needs) that one takes an
/// object whose first key is `$serde_json::private::RawValue` for serde's
/// raw-value marker and refuses it, though the text is plain JSON a client
/// sent (found by the `api_request` fuzz target); such a payload was then
/// shown as a string.
pub(super) fn json_or_text(text: &str) -> Value {
    let mut de = serde_json::Deserializer::from_str(text);
    serde::Deserialize::deserialize(&mut de)
        .and_then(|PlainValue(v)| de.end().map(|()| v))
        .unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A JSON value read with no key treated specially (see [`json_or_text`]).
/// Otherwise as `Value` reads one: numbers as i64, u64 or f64, and of a key
/// given twice the last.
struct PlainValue(Value);

impl<'de> serde::Deserialize<'de> for PlainValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PlainVisitor).map(PlainValue)
    }
}

struct PlainVisitor;

impl<'de> serde::de::Visitor<'de> for PlainVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(PlainValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some((key, PlainValue(v))) = map.next_entry::<String, PlainValue>()? {
            object.insert(key, v);
        }
        Ok(Value::Object(object))
    }
}

/// The listings' answers built whole, as chime answered before it streamed
/// them: the reference [`Listing`]'s pieces are checked against.
#[cfg(test)]
pub(super) mod whole {
    use serde_json::{Value, json};

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
}
