//! Hasura's metadata API for one-off scheduled events, as chime speaks it.
//!
//! This module owns the wire format of `POST /v1/metadata` and `POST /v1/query`:
//! it turns a request body into a validated [`Command`] (or an [`ApiError`]
//! with Hasura's `{"code","error","path"}` shape), and renders events and
//! invocation logs as the JSON a Hasura client expects. Webhook templates
//! and bodies are [`crate::webhook`]'s, shared with the dispatcher.
//!
//! It does no IO and reads no clock: it never touches the log, the network,
//! the environment or the time of day, so every rule here is tested by
//! feeding bytes in and looking at what comes out. Callers pass in ids and
//! times (see [`NewEvent::into_record`]).
//!
//! Choices where Hasura is vague or chime differs on purpose (each one is
//! also noted where it is made):
//! - Unknown keys anywhere (top level, `args`, a header, `retry_conf`,
//!   `order_by`) are refused with `parse-failed` naming the key and listing
//!   the known ones, so a typo such as `retry_config` is not silently
//!   dropped; every key Hasura knows is accepted (`trigger_name` is ignored
//!   for `one_off`). Duplicate keys are refused too.
//! - A non-null `request_transform` / `response_transform` is refused with
//!   `not-supported` rather than dropped (`null` is absent).
//! - A body that is not JSON (or not UTF-8) is `invalid-json` at `$`, as
//!   in Hasura; JSON that is not a request is `parse-failed`.
//! - `null` for an optional argument means "absent".
//! - `bulk` is accepted on both endpoints, `bulk_atomic` and
//!   `bulk_keep_going` on `/v1/metadata`, as in Hasura. Bulks nest up to
//!   [`MAX_BULK_DEPTH`] levels (a cap Hasura does not have; it keeps a
//!   hostile body from recursing the parser off the stack).
//! - A malformed `event_id` of a delete is `parse-failed` at its path: the
//!   client sent something that is not an id at all. Deleting an id that
//!   names no event is `success`, and listing its invocations (or those of
//!   a malformed id) is an empty list, as in Hasura.
//! - `retry_conf`'s spans may be fractional (`1.5`) and `0`, as in Hasura
//!   (a `timeout_seconds` of 0 times out at once); they are kept to the
//!   microsecond.
//! - `schedule_at` follows the time grammar of aeson, Hasura's JSON library
//!   (spelled out on the private `parse_time`), not all of ISO 8601.
//! - Webhook placeholders are `{{NAME}}` with NAME `[A-Za-z_][A-Za-z0-9_]*`;
//!   [`crate::webhook::resolve_webhook`] fills them in with the same grammar at delivery.
//! - An invocation's `status` is the HTTP status of the webhook's answer, and
//!   `null` when there was no answer (`client_error`), as in Hasura v2 where
//!   the column is nullable (older Hasura wrote a made-up 1000 instead).
//!
//! # Layout
//! - `error`: [`ApiError`] and Hasura's error [`Code`]s.
//! - `json`: typed readers over the raw request JSON that carry their path.
//! - `time`: the `schedule_at` grammar.
//! - `request`: [`Endpoint`], [`Command`], [`NewEvent`] and one parser per
//!   command behind [`parse_request`].
//! - `render`: answers, events and invocation logs.

mod error;
mod json;
mod render;
mod request;
mod time;

#[cfg_attr(
    not(feature = "internals"),
    allow(unused_imports, reason = "the module's API; named outside the crate with feature internals")
)]
pub use error::{ApiError, Code};
pub use render::{
    LISTING_TAIL, Listing, ROW_SEPARATOR, created, no_invocations, render_event, render_invocation, render_retry_conf, success,
};
#[cfg_attr(
    not(feature = "internals"),
    allow(unused_imports, reason = "the module's API; named outside the crate with feature internals")
)]
pub use request::{Command, Endpoint, InvocationsOf, MAX_BULK_DEPTH, MAX_PAYLOAD_DEPTH, NewEvent, check_env_policy,
    parse_request,
};

#[cfg(test)]
mod tests;
