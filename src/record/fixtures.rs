//! Records for tests and benches, written once: an event with plain
//! defaults, headers of both kinds, an invocation. Compiled for the unit
//! tests and with the `testing` feature.
//!
//! Tests change what they care about with struct update syntax:
//! `EventCreated { comment: Some(..), ..fixtures::event(id, url, at) }`.

use super::{
    EventCreated, EventId, HeaderConf, HeaderSource, Invocation, InvocationResponse, RetryConf,
    UnixMicros,
};

/// An event to `webhook` due at `schedule_at`: payload `null`, no headers,
/// Hasura's default `retry_conf`, no comment, created at the epoch.
pub fn event(
    event_id: EventId,
    webhook: impl Into<String>,
    schedule_at: UnixMicros,
) -> EventCreated {
    EventCreated {
        event_id,
        webhook: webhook.into(),
        schedule_at,
        payload: "null".into(),
        headers: vec![],
        retry_conf: RetryConf::default(),
        comment: None,
        created_at: UnixMicros(0),
    }
}

/// One header of each kind: `x-literal: v`, and `x-secret` read from the
/// environment variable `HOOK_SECRET`.
pub fn headers() -> Vec<HeaderConf> {
    vec![
        HeaderConf {
            name: "x-literal".into(),
            value: HeaderSource::Value("v".into()),
        },
        HeaderConf {
            name: "x-secret".into(),
            value: HeaderSource::FromEnv("HOOK_SECRET".into()),
        },
    ]
}

/// An attempt's invocation: the webhook answered `status` with a small JSON
/// body, or (`None`) the connection was refused.
pub fn invocation(status: Option<u16>) -> Invocation {
    Invocation {
        request_body: r#"{"payload":{"n":1},"comment":null}"#.into(),
        request_headers: vec![("content-type".into(), "application/json".into())],
        response: match status {
            Some(status) => InvocationResponse::Webhook {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: br#"{"ok":true}"#.to_vec(),
                truncated: false,
            },
            None => InvocationResponse::ClientError {
                message: "connection refused".into(),
            },
        },
    }
}
