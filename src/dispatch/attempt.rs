//! One attempt's lifecycle, from a claimed event to its outcome in the log:
//! expired → `EventExpired`; otherwise a slot of the webhook's host
//! ([`hosts`](super::hosts): parked while its share is full),
//! `AttemptStarted` made durable before the call, a check that no cancel
//! planned meanwhile wins (`still_to_send`), the call
//! ([`http`](super::http)), and the outcome (`AttemptSucceeded` /
//! `AttemptFailed`, decided by [`rules`](super::rules)) appended after it.
//! A call that chime itself could not make (out of descriptors or memory)
//! ends as `AttemptInterrupted`: no try used, sent again after a pause. A
//! call that panicked ends as `AttemptFailed` with the panic's message, so
//! no event is left `locked`. An attempt whose records the log refuses
//! backs off or tries again here; the loop never sees its errors.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use super::Inner;
use super::http::LocalFailure;
use super::rules::{expired, next_retry_at, succeeded};
use crate::projection::Status;
use crate::record::{AttemptId, EventId, Invocation, InvocationResponse, Record};
use crate::service::ServiceError;

/// How long an attempt waits before it tries again to record something the
/// log refused (a full disk, a read that failed), so that a broken disk
/// does not turn into a busy loop.
const RECORD_BACKOFF: Duration = Duration::from_secs(1);

/// How long an event waits after chime ran short of a local resource
/// before it is sent again, so that exhaustion is not met with a busy loop.
const LOCAL_FAILURE_BACKOFF: Duration = Duration::from_secs(1);

impl Inner {
    /// Runs the attempt at the claimed event `id`, then,
    /// while its host has events parked and no stop is asked for, theirs
    /// one after another: each takes over the host slot and the global slot
    /// of the attempt before it.
    pub(super) async fn run_claimed(&self, id: EventId) {
        let mut next = Some((id, None));
        while let Some((id, held)) = next {
            next = self.attempt(id, held).await.and_then(|host| {
                let hand_over = !self.stopping.load(Ordering::Acquire);
                self.hosts
                    .leave(&host, hand_over)
                    .map(|id| (id, Some(host)))
            });
        }
    }

    /// Runs one attempt at the claimed event `id`, in the
    /// slot of host `held` if it was handed one. Returns the host whose slot
    /// it holds at the end, for the caller to leave.
    async fn attempt(&self, id: EventId, held: Option<String>) -> Option<String> {
        let mut slot = held;
        match CatchUnwind(Box::pin(self.try_attempt(id, &mut slot))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(event_id = %id, error = %e, "delivery attempt could not be recorded");
                // Without a durable record the event stays due; back off so a
                // broken disk does not turn into a busy loop. The claim is kept
                // through the back-off: released first, the loop would pick the
                // event again at once and the sleep would only hold a slot.
                tokio::time::sleep(RECORD_BACKOFF).await;
                self.release(id);
            }
            Err(panic) => {
                // The call itself is caught in `try_attempt` and recorded;
                // this is a panic around it, before its start was recorded
                // or while its outcome was: the event is due again, or (if
                // it is `locked`) sent again after a restart. Back off as
                // for an unrecordable attempt, so a panic that repeats is
                // not a busy loop.
                tracing::error!(event_id = %id, panic = %panic_message(&*panic), "delivery attempt panicked");
                tokio::time::sleep(RECORD_BACKOFF).await;
                self.release(id);
            }
        }
        slot
    }

    async fn try_attempt(
        &self,
        id: EventId,
        slot: &mut Option<String>,
    ) -> Result<(), ServiceError> {
        let service = &self.service;
        // Read by id, not by a location kept since the pick: a compaction
        // may have moved the record since (a parked event waits a while).
        let Some(created) = service.read_created(id)? else {
            // Cancelled (or retired) since it was picked.
            self.release(id);
            return Ok(());
        };
        let now = service.clock.now();
        if slot.is_some() {
            // Taken up after being parked: it may have been cancelled or
            // rescheduled meanwhile, and then it is not this attempt's.
            let due = matches!(
                service.projection().event(id),
                Some(view) if view.status == Status::Scheduled && view.due_at() <= now
            );
            if !due {
                self.release(id);
                return Ok(());
            }
        }
        if expired(created.schedule_at, &created.retry_conf, now) {
            service
                .append([Record::EventExpired {
                    event_id: id,
                    at: now,
                }])
                .await?;
            self.release(id);
            return Ok(());
        }
        if slot.is_none()
            && let Some(host) = self.webhooks.authority(&created)
        {
            if !self.hosts.enter(&host, id) {
                // Parked, still claimed: one of the host's attempts takes
                // it up when it ends (`run_claimed`); this task and its
                // global slot are freed now.
                return Ok(());
            }
            *slot = Some(host);
        }
        let attempt_id = AttemptId::new_v4();
        service
            .append([Record::AttemptStarted {
                event_id: id,
                attempt_id,
                at: now,
            }])
            .await?;
        self.release(id);
        let Some(tries_before) = self.still_to_send(id).await else {
            return Ok(());
        };
        // A panic in the call (a hostile event in the log, a bug) must not
        // leave the event `locked` until a restart: it is a failed attempt
        // like any other, with the panic's message and the normal retry.
        let called = CatchUnwind(Box::pin(self.webhooks.call(&created, service.clock.now()))).await;
        let (invocation, retry_after) = match called {
            Ok(Ok(called)) => called,
            Ok(Err(local)) => return self.interrupt_for_local_failure(id, attempt_id, local).await,
            Err(panic) => {
                let message = format!(
                    "chime failed while making this attempt (it panicked: {}); the attempt counts as failed",
                    panic_message(&*panic)
                );
                tracing::error!(event_id = %id, %message, "delivery attempt panicked");
                (
                    Invocation {
                        request_body: String::new(),
                        request_headers: Vec::new(),
                        response: InvocationResponse::ClientError { message },
                    },
                    None,
                )
            }
        };
        let at = service.clock.now();
        let record = if succeeded(&invocation.response) {
            Record::AttemptSucceeded {
                event_id: id,
                attempt_id,
                at,
                invocation,
            }
        } else {
            Record::AttemptFailed {
                event_id: id,
                attempt_id,
                at,
                invocation,
                next_retry_at: next_retry_at(
                    &created.retry_conf,
                    created.schedule_at,
                    tries_before + 1,
                    at,
                    retry_after,
                    self.config.min_retry_interval,
                    jitter(),
                ),
            }
        };
        // The call happened: its outcome must reach the log, or the event
        // stays `locked` until a restart. A full disk may free up, so keep
        // trying; a fatal error (failed fsync) will not, so give up then
        // and let the restart count the attempt as interrupted.
        // Shared, not copied, with each try's apply hook.
        let records: Arc<[Record]> = Arc::new([record]);
        loop {
            match service.append(records.clone()).await {
                Ok(_) => break,
                Err(ServiceError::Log(e)) if e.is_fatal() => return Err(ServiceError::Log(e)),
                Err(e) => {
                    tracing::warn!(event_id = %id, error = %e, "cannot record the attempt's outcome yet; retrying in 1 s");
                    tokio::time::sleep(RECORD_BACKOFF).await;
                }
            }
        }
        // No wake-up here: the service wakes the loop from `append` if the
        // outcome made the event due again (a retry).
        Ok(())
    }

    /// The event's tries before this attempt, if it is still to be sent
    /// now that its `AttemptStarted` is applied; `None` if a cancel won.
    ///
    /// A cancel applied before this look has removed the event. A cancel
    /// planned before it but not yet applied (the API saw the event
    /// `scheduled`; its record is queued behind ours, or being applied) is
    /// waited for: once applied, the event is gone and nothing is sent; if
    /// the log refused it, the event is still ours. A cancel planned after
    /// this look saw the event `locked` and cannot stop this one attempt.
    /// The wait is bounded by that request's append, which always ends.
    async fn still_to_send(&self, id: EventId) -> Option<u32> {
        loop {
            // Made before looking, so a cancel finishing in between still
            // wakes us (`notify_waiters` reaches futures already made).
            let finished = self.cancels.done();
            {
                let projection = self.service.projection();
                let view = projection.event(id)?;
                if view.status != Status::Locked {
                    return None;
                }
                // Taken after the projection's lock, as the API does.
                if !self.cancels.contains(id) {
                    return Some(view.tries);
                }
            }
            finished.await;
        }
    }

    /// The call failed for want of a local resource: records the attempt as
    /// interrupted (no try used up), and keeps the event claimed through a
    /// pause so that it is not sent again into the same shortage at once.
    async fn interrupt_for_local_failure(
        &self,
        id: EventId,
        attempt_id: AttemptId,
        local: LocalFailure,
    ) -> Result<(), ServiceError> {
        tracing::warn!(event_id = %id, error = %local, "delivery interrupted by a local resource shortage");
        self.claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
        let at = self.service.clock.now();
        let recorded = self
            .service
            .append([Record::AttemptInterrupted {
                event_id: id,
                attempt_id,
                at,
                give_up: false,
                reason: local.to_string(),
            }])
            .await;
        tokio::time::sleep(LOCAL_FAILURE_BACKOFF).await;
        self.release(id);
        // Unrecorded, the event stays locked until a restart counts the
        // attempt as interrupted, which is what it was.
        recorded.map(|_| ())
    }
}

/// A future whose panic is caught and returned as `Err`, as
/// `std::panic::catch_unwind` does for a closure (the shape of
/// `futures::FutureExt::catch_unwind`, without the dependency). The inner
/// future is boxed so that it can be polled without pin projection.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        // Unwind safety: after a panic the future is never polled again and
        // the state it shares (the service, the claims, the host slots) is
        // changed only in steps that a panic cannot leave half done.
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// A random fraction in `0.0..1.0` for a retry's jitter, from the OS's
/// random source (through a v4 UUID, which the dispatcher makes for every
/// attempt anyway).
fn jitter() -> f64 {
    let bits = AttemptId::new_v4().as_u64_pair().0 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// A panic's message, when it has one (`panic!` with a literal or a format).
fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{DispatchConfig, Dispatcher};
    use super::*;
    use crate::record::UnixMicros;
    use crate::service::Service;

    const S: i64 = 1_000_000;

    /// A dispatcher on an empty log in `dir`, with a clock that stands still.
    fn dispatcher(dir: &std::path::Path) -> Dispatcher {
        let clock = Arc::new(crate::clock::ManualClock::new(UnixMicros(1_000 * S)));
        let (service, _) = Service::open(dir, &crate::log::LogOptions::default(), clock).unwrap();
        Dispatcher::new(Arc::new(service), DispatchConfig::default()).unwrap()
    }

    /// An attempt that cannot be recorded leaves its event due; the event
    /// must stay claimed while the attempt backs off, or the loop picks it
    /// again at once and a broken disk becomes a busy loop.
    #[tokio::test(start_paused = true)]
    async fn unrecordable_attempt_keeps_its_claim_while_backing_off() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dispatcher(dir.path()).inner;
        let id = EventId::from_u128(1);
        let created = crate::record::fixtures::event(id, "http://127.0.0.1:1/hook", UnixMicros(S));
        let appended = inner
            .service
            .append([Record::EventCreated(created)])
            .await
            .unwrap();
        inner.claimed.lock().unwrap().insert(id);
        // Reading the event fails, as on a broken disk: one byte of its
        // record changes under the log's memory map.
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[appended[0].loc.offset as usize + 20] ^= 0xff;
        std::fs::write(&segment, bytes).unwrap();
        let task = tokio::spawn({
            let inner = inner.clone();
            async move { inner.attempt(id, None).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!task.is_finished(), "no back-off at all");
        assert!(
            inner.claimed.lock().unwrap().contains(&id),
            "released while backing off"
        );
        task.await.unwrap();
        assert!(!inner.claimed.lock().unwrap().contains(&id));
    }
}
