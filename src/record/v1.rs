//! Reading records of schema version 1, which kept `retry_conf`'s spans as
//! whole seconds (`u32`, and `u64` for the tolerance). Only `EventCreated`
//! differs from version 2; every other kind has the same bytes in both, so
//! it is read with the current types.

use serde::Deserialize;

use super::{
    EventCreated, EventId, HeaderConf, Record, RecordError, RetryConf, Seconds, UnixMicros,
};

/// postcard's variant index of `Record::EventCreated` (a varint: one byte).
const EVENT_CREATED: u8 = 0;
/// The highest variant index version 1 had (`EventCancelled`).
const LAST_V1_VARIANT: u8 = 6;

/// Decodes the body of a version 1 record (after the version byte),
/// returning the record and the bytes after it.
pub(super) fn take_from_bytes(body: &[u8]) -> Result<(Record, &[u8]), RecordError> {
    match body.first() {
        Some(&EVENT_CREATED) => {
            let (created, rest): (EventCreatedV1, _) =
                postcard::take_from_bytes(&body[1..]).map_err(RecordError::Decode)?;
            Ok((Record::EventCreated(created.into_v2()), rest))
        }
        // Kinds added after version 1 never appear in a version 1 record.
        Some(&variant) if variant > LAST_V1_VARIANT => {
            Err(RecordError::Decode(postcard::Error::DeserializeBadEnum))
        }
        _ => postcard::take_from_bytes(body).map_err(RecordError::Decode),
    }
}

/// `EventCreated` as version 1 wrote it: the same fields, in the same
/// order, with version 1's `retry_conf`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct EventCreatedV1 {
    event_id: EventId,
    webhook: String,
    schedule_at: UnixMicros,
    payload: String,
    headers: Vec<HeaderConf>,
    retry_conf: RetryConfV1,
    comment: Option<String>,
    created_at: UnixMicros,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct RetryConfV1 {
    num_retries: u32,
    retry_interval_seconds: u32,
    timeout_seconds: u32,
    tolerance_seconds: u64,
}

impl EventCreatedV1 {
    fn into_v2(self) -> EventCreated {
        let r = self.retry_conf;
        EventCreated {
            event_id: self.event_id,
            webhook: self.webhook,
            schedule_at: self.schedule_at,
            payload: self.payload,
            headers: self.headers,
            retry_conf: RetryConf {
                num_retries: r.num_retries,
                retry_interval_seconds: Seconds::whole(u64::from(r.retry_interval_seconds)),
                timeout_seconds: Seconds::whole(u64::from(r.timeout_seconds)),
                tolerance_seconds: Seconds::whole(r.tolerance_seconds),
                ..RetryConf::default()
            },
            comment: self.comment,
            created_at: self.created_at,
        }
    }

    /// The version 1 form of a create whose spans are whole seconds that
    /// fit version 1's types, for the tests that write one.
    #[cfg(test)]
    pub(super) fn from_v2(e: &EventCreated) -> EventCreatedV1 {
        let r = e.retry_conf;
        let secs = |s: Seconds| s.as_micros() / 1_000_000;
        EventCreatedV1 {
            event_id: e.event_id,
            webhook: e.webhook.clone(),
            schedule_at: e.schedule_at,
            payload: e.payload.clone(),
            headers: e.headers.clone(),
            retry_conf: RetryConfV1 {
                num_retries: r.num_retries,
                retry_interval_seconds: u32::try_from(secs(r.retry_interval_seconds))
                    .expect("test spans fit"),
                timeout_seconds: u32::try_from(secs(r.timeout_seconds)).expect("test spans fit"),
                tolerance_seconds: secs(r.tolerance_seconds),
            },
            comment: e.comment.clone(),
            created_at: e.created_at,
        }
    }
}
