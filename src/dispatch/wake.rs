//! The dispatcher's wake-up: when the loop plans to look at the queue next,
//! and the `Notify` that makes it look sooner.
//!
//! One [`Wakeup`] lives inside the [`Service`](crate::service::Service),
//! private to it (the shape of mini-redis's `background_task: Notify` inside
//! `Shared`). The service signals it from `append`, after the records are
//! applied, with [`Wakeup::applied`]: it is the one path every record takes,
//! so no writer (the API, the dispatcher's own outcomes) has to remember to
//! wake the loop. The dispatcher alone plans ([`Wakeup::looking`],
//! [`Wakeup::plan`]), waits ([`Wakeup::notified`]) and wakes itself when a
//! claim it held is dropped ([`Wakeup::notify`]). Nothing here does IO.
//!
//! The loop resumes its scan of the due queue where it left it (so that
//! hundreds of thousands of events parked for one slow host are not walked
//! again at every pick): the `Wakeup` also keeps how far back it must look,
//! the earliest due time of an event made due since its last look (a
//! record applied, a claim dropped), handed over by `looking`.
//!
//! Why no wake-up is lost: the loop calls `looking` *before* it reads the
//! projection, and the service signals *after* it applied. A record applied
//! after the look therefore finds the planned time at "none yet" (and
//! wakes the loop) or at the time the loop settled on (and wakes it if the
//! record is due sooner). `Notify` keeps one permit when the loop is not
//! waiting yet, so a signal between the look and the wait is not lost
//! either.

use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

use crate::record::{Record, UnixMicros};

/// The planned time when the loop plans no wake-up of its own: every event
/// made due is sooner.
const NONE_PLANNED: i64 = i64::MAX;

/// When the dispatcher plans to wake, and the means to wake it sooner.
#[derive(Debug)]
pub(crate) struct Wakeup {
    /// Wakes the loop: an event due sooner than it planned, or a claim
    /// dropped.
    notify: Notify,
    /// When the loop plans to wake next (unix micros), so that a record
    /// wakes it only if it makes an event due before that.
    planned: AtomicI64,
    /// The earliest due time (unix micros) of an event made due since the
    /// loop last looked, or `NONE_PLANNED`: the loop's scan must go back
    /// this far.
    rewind: AtomicI64,
}

impl Default for Wakeup {
    fn default() -> Self {
        Wakeup {
            notify: Notify::new(),
            planned: AtomicI64::new(NONE_PLANNED),
            rewind: AtomicI64::new(NONE_PLANNED),
        }
    }
}

impl Wakeup {
    /// Called by the service once `records` are applied: wakes the loop if
    /// one of them makes an event due sooner than it planned.
    pub(crate) fn applied(&self, records: &[Record]) {
        if let Some(back) = records.iter().filter_map(rewind_to).min() {
            self.rewind.fetch_min(back.0, Ordering::AcqRel);
        }
        if let Some(due) = records.iter().filter_map(due_from).min() {
            self.due_at(due);
        }
    }

    /// Wakes the loop if an event due at `due` is sooner than it planned.
    fn due_at(&self, due: UnixMicros) {
        if due.0 < self.planned.load(Ordering::Acquire) {
            self.notify.notify_one();
        }
    }

    /// The loop is about to read the queue: anything made due from here on
    /// wakes it. Set before looking so that a record racing with the look
    /// is never missed. Returns the earliest due time of an event made due
    /// since the last look, if any, where the loop's scan must resume at
    /// the latest.
    pub(crate) fn looking(&self) -> Option<UnixMicros> {
        self.planned.store(NONE_PLANNED, Ordering::Release);
        let back = self.rewind.swap(NONE_PLANNED, Ordering::AcqRel);
        (back != NONE_PLANNED).then_some(UnixMicros(back))
    }

    /// The loop will sleep until `due` unless woken sooner.
    pub(crate) fn plan(&self, due: UnixMicros) {
        self.planned.store(due.0, Ordering::Release);
    }

    /// Wakes the loop whatever it planned: a claim it held is dropped, so
    /// the event it skipped may be due (at `due`, when it still is
    /// `scheduled`: the loop's scan goes back there).
    pub(crate) fn claim_dropped(&self, due: Option<UnixMicros>) {
        if let Some(due) = due {
            self.rewind.fetch_min(due.0, Ordering::AcqRel);
        }
        self.notify.notify_one();
    }

    /// Resolves when the loop is woken.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// How far back the loop's scan must go for what `record` made due: where
/// the event now sits in the due queue. An interrupted attempt's event goes
/// back at its old due time, which the record does not carry: the scan
/// starts over.
fn rewind_to(record: &Record) -> Option<UnixMicros> {
    match record {
        Record::AttemptInterrupted { give_up: false, .. } => Some(UnixMicros(i64::MIN)),
        other => due_from(other),
    }
}

/// From when `record` makes an event due, if it does: a new event at its
/// scheduled time, a failed attempt at its retry, an interrupted attempt
/// (to be sent again) at `at`. The interrupted event was due before `at`
/// already; a loop that plans to wake by `at` sees it then, and one that
/// planned later is woken.
fn due_from(record: &Record) -> Option<UnixMicros> {
    match record {
        Record::EventCreated(created) => Some(created.schedule_at),
        Record::AttemptFailed { next_retry_at, .. } => *next_retry_at,
        Record::AttemptInterrupted {
            give_up: false, at, ..
        } => Some(*at),
        Record::AttemptInterrupted { give_up: true, .. }
        | Record::AttemptStarted { .. }
        | Record::AttemptSucceeded { .. }
        | Record::EventExpired { .. }
        | Record::EventCancelled { .. }
        | Record::EventsRetired { .. } => None,
    }
}
