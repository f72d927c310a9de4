//! One attempt's lifecycle, from a claimed event to its outcome in the log:
//! expired → `EventExpired`; otherwise `AttemptStarted` made durable before
//! the call, the call ([`http`](super::http)), and the outcome
//! (`AttemptSucceeded` / `AttemptFailed`, decided by [`rules`](super::rules))
//! appended after it. A call that chime itself could not make (out of
//! descriptors or memory) ends as `AttemptInterrupted`: no try used, sent
//! again after a pause. An attempt whose records the log refuses backs off
//! or tries again here; the loop never sees its errors.

use std::time::Duration;

use super::Inner;
use super::http::LocalFailure;
use super::rules::{expired, next_retry_at, succeeded};
use crate::log::Loc;
use crate::projection::Status;
use crate::record::{AttemptId, EventId, Record};
use crate::service::ServiceError;

/// How long an attempt waits before it tries again to record something the
/// log refused (a full disk, a read that failed), so that a broken disk
/// does not turn into a busy loop.
const RECORD_BACKOFF: Duration = Duration::from_secs(1);

/// How long an event waits after chime ran short of a local resource
/// before it is sent again, so that exhaustion is not met with a busy loop.
const LOCAL_FAILURE_BACKOFF: Duration = Duration::from_secs(1);

impl Inner {
    /// Runs one attempt at the claimed event `id`, created at `loc`.
    pub(super) async fn attempt(&self, id: EventId, loc: Loc) {
        if let Err(e) = self.try_attempt(id, loc).await {
            tracing::error!(event_id = %id, error = %e, "delivery attempt could not be recorded");
            // Without a durable record the event stays due; back off so a
            // broken disk does not turn into a busy loop. The claim is kept
            // through the back-off: released first, the loop would pick the
            // event again at once and the sleep would only hold a slot.
            tokio::time::sleep(RECORD_BACKOFF).await;
            self.release(id);
        }
    }

    async fn try_attempt(&self, id: EventId, loc: Loc) -> Result<(), ServiceError> {
        let service = &self.service;
        let Record::EventCreated(created) = service.read(loc)? else {
            tracing::error!(event_id = %id, "event's location does not hold its creation record");
            self.release(id);
            return Ok(());
        };
        let now = service.clock.now();
        if expired(created.schedule_at, &created.retry_conf, now) {
            service
                .append(&[Record::EventExpired {
                    event_id: id,
                    at: now,
                }])
                .await?;
            self.release(id);
            return Ok(());
        }
        let attempt_id = AttemptId::new_v4();
        service
            .append(&[Record::AttemptStarted {
                event_id: id,
                attempt_id,
                at: now,
            }])
            .await?;
        self.release(id);
        // A cancel acknowledged before our start was applied wins: the
        // event is gone from the projection, and nothing is sent.
        let tries_before = match service.projection().event(id) {
            Some(view) if view.status == Status::Locked => view.tries,
            _ => return Ok(()),
        };
        let (invocation, retry_after) = match self.webhooks.call(&created).await {
            Ok(called) => called,
            Err(local) => return self.interrupt_for_local_failure(id, attempt_id, local).await,
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
                ),
            }
        };
        // The call happened: its outcome must reach the log, or the event
        // stays `locked` until a restart. A full disk may free up, so keep
        // trying; a fatal error (failed fsync) will not, so give up then
        // and let the restart count the attempt as interrupted.
        let records = [record];
        loop {
            match service.append(&records).await {
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
            .append(&[Record::AttemptInterrupted {
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
        inner.claimed.lock().unwrap().insert(id);
        // No such segment: reading the event fails, as a broken disk would.
        let nowhere = Loc {
            segment: 99,
            offset: 0,
        };
        let task = tokio::spawn({
            let inner = inner.clone();
            async move { inner.attempt(id, nowhere).await }
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
