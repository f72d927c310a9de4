//! Reading records of schema version 2, whose `retry_conf` had no backoff:
//! they read as fixed backoff (Hasura's), with the default
//! `max_retry_interval_seconds`. Only `EventCreated` differs from version
//! 3; every other kind has the same bytes in both, so it is read with the
//! current types.

use serde::Deserialize;

use super::{
    EventCreated, EventId, HeaderConf, Record, RecordError, RetryConf, Seconds, UnixMicros,
};

/// postcard's variant index of `Record::EventCreated` (a varint: one byte).
const EVENT_CREATED: u8 = 0;

/// Decodes the body of a version 2 record (after the version byte),
/// returning the record and the bytes after it.
pub(super) fn take_from_bytes(body: &[u8]) -> Result<(Record, &[u8]), RecordError> {
    match body.first() {
        Some(&EVENT_CREATED) => {
            let (created, rest): (EventCreatedV2, _) =
                postcard::take_from_bytes(&body[1..]).map_err(RecordError::Decode)?;
            Ok((Record::EventCreated(created.into_current()), rest))
        }
        _ => postcard::take_from_bytes(body).map_err(RecordError::Decode),
    }
}

/// `EventCreated` as version 2 wrote it: the same fields, in the same
/// order, with version 2's `retry_conf`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct EventCreatedV2 {
    event_id: EventId,
    webhook: String,
    schedule_at: UnixMicros,
    payload: String,
    headers: Vec<HeaderConf>,
    retry_conf: RetryConfV2,
    comment: Option<String>,
    created_at: UnixMicros,
}

/// Version 2's `retry_conf` (what `record::head` reads a version 2 create
/// with, too).
#[derive(Clone, Copy, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct RetryConfV2 {
    num_retries: u32,
    retry_interval_seconds: Seconds,
    timeout_seconds: Seconds,
    tolerance_seconds: Seconds,
}

impl EventCreatedV2 {
    fn into_current(self) -> EventCreated {
        let r = self.retry_conf;
        EventCreated {
            event_id: self.event_id,
            webhook: self.webhook,
            schedule_at: self.schedule_at,
            payload: self.payload,
            headers: self.headers,
            retry_conf: RetryConf {
                num_retries: r.num_retries,
                retry_interval_seconds: r.retry_interval_seconds,
                timeout_seconds: r.timeout_seconds,
                tolerance_seconds: r.tolerance_seconds,
                ..RetryConf::default()
            },
            comment: self.comment,
            created_at: self.created_at,
        }
    }

    /// The version 2 form of a create with fixed backoff, for the tests
    /// that write one.
    #[cfg(test)]
    pub(crate) fn from_current(e: &EventCreated) -> EventCreatedV2 {
        let r = e.retry_conf;
        EventCreatedV2 {
            event_id: e.event_id,
            webhook: e.webhook.clone(),
            schedule_at: e.schedule_at,
            payload: e.payload.clone(),
            headers: e.headers.clone(),
            retry_conf: RetryConfV2 {
                num_retries: r.num_retries,
                retry_interval_seconds: r.retry_interval_seconds,
                timeout_seconds: r.timeout_seconds,
                tolerance_seconds: r.tolerance_seconds,
            },
            comment: e.comment.clone(),
            created_at: e.created_at,
        }
    }
}
