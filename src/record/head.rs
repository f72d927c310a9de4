//! What the projection reads of a record: its kind, ids and times, and
//! none of its strings. Replay decodes records into a [`Head`] straight
//! from the log's bytes, borrowing what it skips instead of allocating it
//! (payloads, webhooks, headers, response bodies): about a fifth of a full
//! decode's time was the allocator's. Schema 2 reads the same way, with its
//! own `retry_conf`; a record of schema 1 is decoded whole and then reduced.
//!
//! The borrowed views below mirror [`Record`]'s types field for field, in
//! order (postcard is not self-describing); `tests::a_head_decodes_as_the_record_it_reduces`
//! checks the two decodings agree on every kind of record.

use std::marker::PhantomData;

use serde::Deserialize;

use super::v2::RetryConfV2;
use super::{AttemptId, EventId, Record, RecordError, RetryConf, SCHEMA_VERSION, UnixMicros};

/// A record reduced to what the projection reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    Created {
        event_id: EventId,
        schedule_at: UnixMicros,
        created_at: UnixMicros,
    },
    Started {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
    },
    Succeeded {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
    },
    Failed {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
        next_retry_at: Option<UnixMicros>,
    },
    Interrupted {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
        give_up: bool,
    },
    Expired {
        event_id: EventId,
        at: UnixMicros,
    },
    Cancelled {
        event_id: EventId,
        at: UnixMicros,
    },
    Retired {
        finished_before: UnixMicros,
        at: UnixMicros,
    },
}

impl Head {
    /// The head of `record`.
    pub fn of(record: &Record) -> Head {
        match record {
            Record::EventCreated(e) => Head::Created {
                event_id: e.event_id,
                schedule_at: e.schedule_at,
                created_at: e.created_at,
            },
            &Record::AttemptStarted {
                event_id,
                attempt_id,
                at,
            } => Head::Started {
                event_id,
                attempt_id,
                at,
            },
            &Record::AttemptSucceeded {
                event_id,
                attempt_id,
                at,
                ..
            } => Head::Succeeded {
                event_id,
                attempt_id,
                at,
            },
            &Record::AttemptFailed {
                event_id,
                attempt_id,
                at,
                next_retry_at,
                ..
            } => Head::Failed {
                event_id,
                attempt_id,
                at,
                next_retry_at,
            },
            &Record::AttemptInterrupted {
                event_id,
                attempt_id,
                at,
                give_up,
                ..
            } => Head::Interrupted {
                event_id,
                attempt_id,
                at,
                give_up,
            },
            &Record::EventExpired { event_id, at } => Head::Expired { event_id, at },
            &Record::EventCancelled { event_id, at } => Head::Cancelled { event_id, at },
            &Record::EventsRetired {
                finished_before,
                at,
            } => Head::Retired {
                finished_before,
                at,
            },
        }
    }

    /// Decodes the head of the record in log payload bytes: the same
    /// answer as [`Record::decode`] then [`Head::of`], and the same errors.
    pub fn decode(bytes: &[u8]) -> Result<Head, RecordError> {
        let (&version, body) = bytes.split_first().ok_or(RecordError::Empty)?;
        match version {
            SCHEMA_VERSION => take::<RetryConf>(body),
            2 => take::<RetryConfV2>(body),
            _ => Record::decode(bytes).map(|r| Head::of(&r)),
        }
    }

    /// The event this record is about; `None` for a retirement.
    pub fn event_id(&self) -> Option<EventId> {
        match *self {
            Head::Created { event_id, .. }
            | Head::Started { event_id, .. }
            | Head::Succeeded { event_id, .. }
            | Head::Failed { event_id, .. }
            | Head::Interrupted { event_id, .. }
            | Head::Expired { event_id, .. }
            | Head::Cancelled { event_id, .. } => Some(event_id),
            Head::Retired { .. } => None,
        }
    }

    /// When the action happened ([`Record::at`]).
    pub fn at(&self) -> UnixMicros {
        match *self {
            Head::Created { created_at, .. } => created_at,
            Head::Started { at, .. }
            | Head::Succeeded { at, .. }
            | Head::Failed { at, .. }
            | Head::Interrupted { at, .. }
            | Head::Expired { at, .. }
            | Head::Cancelled { at, .. }
            | Head::Retired { at, .. } => at,
        }
    }
}

/// The head of a record body whose creates carry a `retry_conf` of type `R`.
fn take<'a, R: Deserialize<'a>>(body: &'a [u8]) -> Result<Head, RecordError> {
    let (view, rest): (View<'a, R>, _) =
        postcard::take_from_bytes(body).map_err(RecordError::Decode)?;
    if !rest.is_empty() {
        return Err(RecordError::TrailingBytes(rest.len()));
    }
    Ok(view.head())
}

/// A sequence read element by element as `T` and dropped: nothing kept,
/// nothing allocated (for `T` that borrows).
struct Skip<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Skip<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = Skip<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Skip<T>, A::Error> {
                while seq.next_element::<T>()?.is_some() {}
                Ok(Skip(PhantomData))
            }
        }
        d.deserialize_seq(Visit(PhantomData))
    }
}

// The views: `Record`'s layout with borrowed strings. Fields the head does
// not keep are read only to move past them.
#[allow(dead_code)]
#[derive(Deserialize)]
enum View<'a, R> {
    EventCreated(#[serde(borrow)] CreatedView<'a, R>),
    AttemptStarted {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
    },
    AttemptSucceeded {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
        #[serde(borrow)]
        invocation: InvocationView<'a>,
    },
    AttemptFailed {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
        #[serde(borrow)]
        invocation: InvocationView<'a>,
        next_retry_at: Option<UnixMicros>,
    },
    AttemptInterrupted {
        event_id: EventId,
        attempt_id: AttemptId,
        at: UnixMicros,
        give_up: bool,
        reason: &'a str,
    },
    EventExpired {
        event_id: EventId,
        at: UnixMicros,
    },
    EventCancelled {
        event_id: EventId,
        at: UnixMicros,
    },
    EventsRetired {
        finished_before: UnixMicros,
        at: UnixMicros,
    },
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct CreatedView<'a, R> {
    event_id: EventId,
    webhook: &'a str,
    schedule_at: UnixMicros,
    payload: &'a str,
    #[serde(borrow)]
    headers: Skip<HeaderView<'a>>,
    retry_conf: R,
    comment: Option<&'a str>,
    created_at: UnixMicros,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct HeaderView<'a> {
    name: &'a str,
    #[serde(borrow)]
    value: SourceView<'a>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
enum SourceView<'a> {
    Value(&'a str),
    FromEnv(&'a str),
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct InvocationView<'a> {
    request_body: &'a str,
    #[serde(borrow)]
    request_headers: Skip<(&'a str, &'a str)>,
    #[serde(borrow)]
    response: ResponseView<'a>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
enum ResponseView<'a> {
    Webhook {
        status: u16,
        #[serde(borrow)]
        headers: Skip<(&'a str, &'a str)>,
        #[serde(borrow)]
        body: &'a [u8],
        truncated: bool,
    },
    ClientError {
        message: &'a str,
    },
}

impl<R> View<'_, R> {
    fn head(self) -> Head {
        match self {
            View::EventCreated(e) => Head::Created {
                event_id: e.event_id,
                schedule_at: e.schedule_at,
                created_at: e.created_at,
            },
            View::AttemptStarted {
                event_id,
                attempt_id,
                at,
            } => Head::Started {
                event_id,
                attempt_id,
                at,
            },
            View::AttemptSucceeded {
                event_id,
                attempt_id,
                at,
                ..
            } => Head::Succeeded {
                event_id,
                attempt_id,
                at,
            },
            View::AttemptFailed {
                event_id,
                attempt_id,
                at,
                next_retry_at,
                ..
            } => Head::Failed {
                event_id,
                attempt_id,
                at,
                next_retry_at,
            },
            View::AttemptInterrupted {
                event_id,
                attempt_id,
                at,
                give_up,
                ..
            } => Head::Interrupted {
                event_id,
                attempt_id,
                at,
                give_up,
            },
            View::EventExpired { event_id, at } => Head::Expired { event_id, at },
            View::EventCancelled { event_id, at } => Head::Cancelled { event_id, at },
            View::EventsRetired {
                finished_before,
                at,
            } => Head::Retired {
                finished_before,
                at,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fixtures;
    use crate::record::{EventCreated, HeaderConf, HeaderSource, Invocation, InvocationResponse};
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-zé\"\\\\{}0-9 ]{0,40}").unwrap()
    }

    fn invocation() -> impl Strategy<Value = Invocation> {
        let pairs = || proptest::collection::vec((text(), text()), 0..4);
        let response = prop_oneof![
            (
                any::<u16>(),
                pairs(),
                proptest::collection::vec(any::<u8>(), 0..300),
                any::<bool>()
            )
                .prop_map(|(status, headers, body, truncated)| {
                    InvocationResponse::Webhook {
                        status,
                        headers,
                        body,
                        truncated,
                    }
                }),
            text().prop_map(|message| InvocationResponse::ClientError { message }),
        ];
        (text(), pairs(), response).prop_map(|(request_body, request_headers, response)| {
            Invocation {
                request_body,
                request_headers,
                response,
            }
        })
    }

    fn record() -> impl Strategy<Value = Record> {
        let id = any::<u128>().prop_map(EventId::from_u128);
        let t = any::<i64>().prop_map(UnixMicros);
        let headers = proptest::collection::vec(
            (text(), text(), any::<bool>()).prop_map(|(name, v, env)| HeaderConf {
                name,
                value: if env {
                    HeaderSource::FromEnv(v)
                } else {
                    HeaderSource::Value(v)
                },
            }),
            0..4,
        );
        prop_oneof![
            (
                id.clone(),
                text(),
                t.clone(),
                text(),
                headers,
                proptest::option::of(text()),
                t.clone()
            )
                .prop_map(
                    |(event_id, webhook, schedule_at, payload, headers, comment, created_at)| {
                        Record::EventCreated(EventCreated {
                            webhook,
                            payload,
                            headers,
                            comment,
                            created_at,
                            ..fixtures::event(event_id, "http://x/", schedule_at)
                        })
                    }
                ),
            (id.clone(), id.clone(), t.clone()).prop_map(|(event_id, attempt_id, at)| {
                Record::AttemptStarted {
                    event_id,
                    attempt_id,
                    at,
                }
            }),
            (id.clone(), id.clone(), t.clone(), invocation()).prop_map(
                |(event_id, attempt_id, at, invocation)| Record::AttemptSucceeded {
                    event_id,
                    attempt_id,
                    at,
                    invocation
                }
            ),
            (
                id.clone(),
                id.clone(),
                t.clone(),
                invocation(),
                proptest::option::of(t.clone())
            )
                .prop_map(|(event_id, attempt_id, at, invocation, next_retry_at)| {
                    Record::AttemptFailed {
                        event_id,
                        attempt_id,
                        at,
                        invocation,
                        next_retry_at,
                    }
                }),
            (id.clone(), id.clone(), t.clone(), any::<bool>(), text()).prop_map(
                |(event_id, attempt_id, at, give_up, reason)| Record::AttemptInterrupted {
                    event_id,
                    attempt_id,
                    at,
                    give_up,
                    reason
                }
            ),
            (id.clone(), t.clone())
                .prop_map(|(event_id, at)| Record::EventExpired { event_id, at }),
            (id, t.clone()).prop_map(|(event_id, at)| Record::EventCancelled { event_id, at }),
            (t.clone(), t).prop_map(|(finished_before, at)| Record::EventsRetired {
                finished_before,
                at
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_head_decodes_as_the_record_it_reduces(r in record()) {
            let bytes = r.encode().unwrap();
            prop_assert_eq!(Head::decode(&bytes).unwrap(), Head::of(&r));
            // Cut short or with a byte more, both decodings refuse it.
            let short = &bytes[..bytes.len() - 1];
            prop_assert!(Head::decode(short).is_err());
            prop_assert!(Record::decode(short).is_err());
            let mut long = bytes.clone();
            long.push(0);
            prop_assert!(Head::decode(&long).is_err());
        }

        #[test]
        fn a_schema_2_create_heads_as_it_decodes(r in record()) {
            if let Record::EventCreated(e) = &r {
                let mut bytes = vec![2];
                bytes.push(0);
                bytes.extend(postcard::to_allocvec(&crate::record::v2::EventCreatedV2::from_current(e)).unwrap());
                let whole = Record::decode(&bytes).unwrap();
                prop_assert_eq!(Head::decode(&bytes).unwrap(), Head::of(&whole));
                prop_assert_eq!(Head::of(&whole), Head::of(&r));
            }
        }

        #[test]
        fn a_head_decodes_whatever_a_record_decodes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = bytes;
            if let Some(first) = bytes.first_mut() {
                *first = SCHEMA_VERSION;
            }
            if let Ok(r) = Record::decode(&bytes) {
                prop_assert_eq!(Head::decode(&bytes).unwrap(), Head::of(&r));
            }
        }
    }
}
