//! Projections (work in progress): see the helper's brief.

use crate::log::Loc;
use crate::record::{AttemptId, EventId, UnixMicros};

/// An event's status, with Hasura's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Waiting for its time (or for its next retry).
    Scheduled,
    /// An attempt is in flight.
    Locked,
    /// The webhook answered 2xx.
    Delivered,
    /// Every try failed (or it was interrupted too often).
    Error,
    /// Too late to send (tolerance exceeded).
    Dead,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Scheduled,
        Status::Locked,
        Status::Delivered,
        Status::Error,
        Status::Dead,
    ];

    /// Hasura's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Locked => "locked",
            Status::Delivered => "delivered",
            Status::Error => "error",
            Status::Dead => "dead",
        }
    }

    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// What the projection knows of one event (everything else is read back
/// from its `EventCreated` record at `loc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventView {
    pub id: EventId,
    /// Where the event's `EventCreated` record lives.
    pub loc: Loc,
    pub schedule_at: UnixMicros,
    pub status: Status,
    /// Attempts made that count against `num_retries + 1`.
    pub tries: u32,
    /// Attempts cut short by a process stop (they do not count as tries).
    pub interrupted: u32,
    pub next_retry_at: Option<UnixMicros>,
}

/// One invocation log entry: where its record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvocationRef {
    pub attempt_id: AttemptId,
    pub event_id: EventId,
    /// Where the `AttemptSucceeded` / `AttemptFailed` / `AttemptInterrupted`
    /// (with give_up) record lives.
    pub loc: Loc,
    pub at: UnixMicros,
}
