//! The dispatcher: fires each event at its time, with retries, timeouts and
//! tolerance, and records every attempt.
//!
//! No polling: the loop sleeps until the earliest due event and is woken
//! by [`Service::due_at`] when an earlier one is created, or when an attempt
//! frees a delivery slot (the shape of mini-redis's expiry loop). Each
//! attempt runs in its own task, bounded by `max_in_flight`:
//!
//! 1. too late (`now - scheduled_time > tolerance_seconds`) → `EventExpired`;
//! 2. otherwise `AttemptStarted` is made durable *before* the call, so a
//!    crash mid-call is seen at restart and the event is sent again (at
//!    least once);
//! 3. the outcome (`AttemptSucceeded` / `AttemptFailed`) is appended after.
//!
//! The rules that decide outcomes are pure functions ([`expired`],
//! [`next_retry_at`], [`retry_after`]) tested with explicit times.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::log::Loc;
use crate::projection::Status;
use crate::record::{
    AttemptId, EventCreated, EventId, Invocation, InvocationResponse, MAX_INTERRUPTED_ATTEMPTS,
    Record, RetryConf, UnixMicros,
};
use crate::service::{Service, ServiceError};
use crate::webhook::{prepare, process_env};

/// The longest the loop sleeps without looking again, so that a step of the
/// wall clock (NTP, a suspended VM) is noticed within this bound.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How the dispatcher calls webhooks.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// Attempts in flight at once.
    pub max_in_flight: usize,
    /// Response bodies are kept up to this many bytes in invocation logs.
    pub response_body_cap: usize,
    /// How long in-flight attempts may run on after a stop is asked for.
    pub shutdown_grace: Duration,
    /// An event whose attempts were cut short by a stop this many times
    /// gives up (`error`), so that an event that crashes the server every
    /// time cannot loop forever.
    pub max_interrupted_attempts: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            max_in_flight: 256,
            response_body_cap: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
            max_interrupted_attempts: MAX_INTERRUPTED_ATTEMPTS,
        }
    }
}

/// Whether an event is too late to send at `now`.
pub fn expired(schedule_at: UnixMicros, retry: &RetryConf, now: UnixMicros) -> bool {
    now.0.saturating_sub(schedule_at.0) > retry_seconds_micros(retry.tolerance_seconds)
}

fn retry_seconds_micros(seconds: u64) -> i64 {
    i64::try_from(seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000)
}

/// When to try again after a failed attempt, or `None` when no tries are
/// left. `tries` counts attempts made including the one that just failed;
/// `retry_after` is a `Retry-After` the webhook sent, which replaces the
/// configured interval.
///
/// A retry never waits past the first instant the event is too late
/// (`schedule_at + tolerance_seconds`, plus a microsecond): by then it
/// would be `dead` at its next try anyway, and a huge `Retry-After` would
/// otherwise park it as `scheduled` for centuries.
pub fn next_retry_at(
    retry: &RetryConf,
    schedule_at: UnixMicros,
    tries: u32,
    now: UnixMicros,
    retry_after: Option<u64>,
) -> Option<UnixMicros> {
    let too_late = UnixMicros(
        schedule_at
            .0
            .saturating_add(retry_seconds_micros(retry.tolerance_seconds))
            .saturating_add(1),
    );
    (tries <= retry.num_retries).then(|| {
        now.plus_seconds(retry_after.unwrap_or(u64::from(retry.retry_interval_seconds)))
            .min(too_late)
    })
}

/// A `Retry-After` value in whole seconds greater than zero; anything else
/// (an HTTP date, zero, garbage) is ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&s| s > 0)
}

/// A stop signal the dispatcher watches.
pub type Shutdown = watch::Receiver<bool>;

/// The dispatcher's shared parts.
struct Inner {
    service: Arc<Service>,
    client: reqwest::Client,
    config: DispatchConfig,
    /// Events picked by the loop whose `AttemptStarted` is not applied yet:
    /// until it is, the projection still lists them as due.
    claimed: Mutex<HashSet<EventId>>,
}

/// Fires due events until `shutdown` turns true, then lets in-flight
/// attempts finish within the grace period.
pub struct Dispatcher {
    inner: Arc<Inner>,
}

/// Errors starting the dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl Dispatcher {
    /// Builds the dispatcher and its HTTP client.
    pub fn new(service: Arc<Service>, config: DispatchConfig) -> Result<Self, DispatchError> {
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(config.max_in_flight)
            .tcp_nodelay(true)
            .build()?;
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                service,
                client,
                config,
                claimed: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// Marks every attempt that was in flight when the process last
    /// stopped as interrupted, so the event is sent again. An event
    /// interrupted `max_interrupted_attempts` times gives up (`error`),
    /// so one that crashes the server every time cannot loop forever.
    pub async fn recover_interrupted(&self) -> Result<usize, ServiceError> {
        let service = &self.inner.service;
        let now = service.clock.now();
        let max = self.inner.config.max_interrupted_attempts.max(1);
        let records: Vec<Record> = {
            let projection = service.projection();
            projection
                .locked()
                .into_iter()
                .filter_map(|id| Some((projection.event(id)?, projection.in_flight(id)?)))
                .map(|(view, attempt_id)| {
                    let give_up = view.interrupted + 1 >= max;
                    Record::AttemptInterrupted {
                        event_id: view.id,
                        attempt_id,
                        at: now,
                        give_up,
                        reason: if give_up {
                            format!(
                                "delivery was interrupted {max} times by a server stop; giving up"
                            )
                        } else {
                            "the attempt in flight was interrupted by a server stop; it will be sent again".into()
                        },
                    }
                })
                .collect()
        };
        if !records.is_empty() {
            service.append(&records).await?;
            tracing::warn!(
                events = records.len(),
                "attempts were in flight when the server last stopped; they will be sent again"
            );
        }
        Ok(records.len())
    }

    /// Runs the loop until `shutdown` is true.
    pub async fn run(self, mut shutdown: Shutdown) {
        let inner = self.inner;
        let service = inner.service.clone();
        let slots = Arc::new(Semaphore::new(inner.config.max_in_flight.max(1)));
        let mut tasks = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => continue,
            };
            // Anything created from here on wakes us; set before looking so
            // that a create racing with the look is never missed.
            service
                .next_wake
                .store(i64::MAX, std::sync::atomic::Ordering::Release);
            let now = service.clock.now();
            let (pick, next) = {
                let projection = service.projection();
                let mut claimed = inner
                    .claimed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let pick = projection
                    .due(now, claimed.len() + 1)
                    .into_iter()
                    .find(|(_, id)| !claimed.contains(id))
                    .and_then(|(_, id)| projection.event(id).map(|v| (id, v.loc)));
                if let Some((id, _)) = pick {
                    claimed.insert(id);
                }
                let next = projection
                    .next_due()
                    .filter(|(_, id)| !claimed.contains(id))
                    .map(|(due, _)| due);
                (pick, next)
            };
            while tasks.try_join_next().is_some() {}
            if let Some((id, loc)) = pick {
                let inner = inner.clone();
                tasks.spawn(async move {
                    inner.attempt(id, loc).await;
                    drop(permit);
                });
                continue;
            }
            drop(permit);
            let sleep = match next {
                Some(due) => {
                    service
                        .next_wake
                        .store(due.0, std::sync::atomic::Ordering::Release);
                    let micros = u64::try_from(due.0.saturating_sub(now.0)).unwrap_or(0);
                    Duration::from_micros(micros).min(MAX_SLEEP)
                }
                None => MAX_SLEEP,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = service.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Stop: no new attempts; let those in flight finish within the grace.
        let grace = inner.config.shutdown_grace;
        let in_flight = tasks.len();
        if in_flight > 0 {
            tracing::info!(in_flight, ?grace, "waiting for in-flight deliveries");
        }
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "deliveries still in flight after the grace period; they will be sent again after restart"
            );
            tasks.shutdown().await;
        }
    }
}

impl Inner {
    fn release(&self, id: EventId) {
        self.claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        self.service.wake.notify_one();
    }

    async fn attempt(&self, id: EventId, loc: Loc) {
        if let Err(e) = self.try_attempt(id, loc).await {
            tracing::error!(event_id = %id, error = %e, "delivery attempt could not be recorded");
            // Without a durable record the event stays due; back off so a
            // broken disk does not turn into a busy loop. The claim is kept
            // through the back-off: released first, the loop would pick the
            // event again at once and the sleep would only hold a slot.
            tokio::time::sleep(Duration::from_secs(1)).await;
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
        let (invocation, retry_after) = self.call(&created).await;
        let at = service.clock.now();
        let succeeded = matches!(
            invocation.response,
            InvocationResponse::Webhook { status, .. } if (200..300).contains(&status)
        );
        let record = if succeeded {
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
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        service.wake.notify_one();
        Ok(())
    }

    /// Makes the HTTP call and describes it as an invocation, with the
    /// `Retry-After` of a non-2xx answer.
    async fn call(&self, created: &EventCreated) -> (Invocation, Option<u64>) {
        let prepared = prepare(created, &process_env);
        if let Some(message) = prepared.problem {
            return (
                Invocation {
                    request_body: prepared.body,
                    request_headers: prepared.logged_headers,
                    response: InvocationResponse::ClientError { message },
                },
                None,
            );
        }
        let timeout = Duration::from_secs(u64::from(created.retry_conf.timeout_seconds));
        let cap = self.config.response_body_cap;
        let request = self
            .client
            .post(&prepared.url)
            .headers(prepared.headers)
            .body(prepared.body.clone());
        let outcome = tokio::time::timeout(timeout, async move {
            let mut response = request.send().await.map_err(|e| error_chain(&e))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let mut body = Vec::new();
            let mut truncated = false;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = cap - body.len();
                        if chunk.len() > room {
                            body.extend_from_slice(&chunk[..room]);
                            truncated = true;
                            break;
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(format!(
                            "the webhook answered {status} but its body could not be read: {}",
                            error_chain(&e)
                        ));
                    }
                }
            }
            Ok((status, headers, body, truncated))
        })
        .await;
        let (response, retry_after) = match outcome {
            Err(_) => (
                InvocationResponse::ClientError {
                    message: format!(
                        "timed out after {} s waiting for the webhook's response",
                        timeout.as_secs()
                    ),
                },
                None,
            ),
            Ok(Err(message)) => (InvocationResponse::ClientError { message }, None),
            Ok(Ok((status, headers, body, truncated))) => {
                let retry = if (200..300).contains(&status) {
                    None
                } else {
                    retry_after(&headers)
                };
                (
                    InvocationResponse::Webhook {
                        status,
                        headers: headers
                            .iter()
                            .map(|(n, v)| {
                                (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect(),
                        body,
                        truncated,
                    },
                    retry,
                )
            }
        };
        (
            Invocation {
                request_body: prepared.body,
                request_headers: prepared.logged_headers,
                response,
            },
            retry_after,
        )
    }
}

/// An error and its causes in one line: reqwest's own message alone says
/// "error sending request" and hides whether it was a refusal or TLS.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue as HttpHeaderValue;

    const S: i64 = 1_000_000;

    fn conf(num_retries: u32) -> RetryConf {
        RetryConf {
            num_retries,
            ..RetryConf::default()
        }
    }

    #[test]
    fn tolerance_is_strictly_greater_than() {
        let retry = RetryConf {
            tolerance_seconds: 60,
            ..RetryConf::default()
        };
        let at = UnixMicros(1000 * S);
        assert!(!expired(at, &retry, UnixMicros(1000 * S)));
        assert!(!expired(at, &retry, UnixMicros(1060 * S)));
        assert!(expired(at, &retry, UnixMicros(1060 * S + 1)));
        // Early is never expired.
        assert!(!expired(at, &retry, UnixMicros(0)));
        // Created in 2020 with the default 6 h tolerance: dead.
        let y2020 = UnixMicros(1_577_836_800 * S);
        assert!(expired(
            y2020,
            &RetryConf::default(),
            UnixMicros(1_800_000_000 * S)
        ));
    }

    #[test]
    fn retries_until_num_retries_plus_one_tries() {
        let now = UnixMicros(50 * S);
        let at = UnixMicros(40 * S);
        // num_retries 1: after the first failure retry in 10 s, after the second give up.
        assert_eq!(
            next_retry_at(&conf(1), at, 1, now, None),
            Some(UnixMicros(60 * S))
        );
        assert_eq!(next_retry_at(&conf(1), at, 2, now, None), None);
        // num_retries 0 (the default): the first failure is final.
        assert_eq!(next_retry_at(&conf(0), at, 1, now, None), None);
        // Retry-After replaces the interval.
        assert_eq!(
            next_retry_at(&conf(3), at, 1, now, Some(7)),
            Some(UnixMicros(57 * S))
        );
    }

    #[test]
    fn a_retry_never_waits_past_the_tolerance() {
        let retry = RetryConf {
            num_retries: 5,
            tolerance_seconds: 60,
            ..RetryConf::default()
        };
        let at = UnixMicros(1000 * S);
        let now = UnixMicros(1050 * S);
        let too_late = UnixMicros(1060 * S + 1);
        // A Retry-After of ~292,000 years is cut to the tolerance...
        let next = next_retry_at(&retry, at, 1, now, Some(9_223_372_036_854)).unwrap();
        assert_eq!(next, too_late);
        // ...where the event is expired, so the next look makes it dead.
        assert!(expired(at, &retry, next));
        assert!(!expired(at, &retry, UnixMicros(next.0 - 1)));
        // Within the tolerance nothing changes.
        assert_eq!(
            next_retry_at(&retry, at, 1, now, Some(5)),
            Some(UnixMicros(1055 * S))
        );
    }

    #[test]
    fn retry_after_takes_positive_integer_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HttpHeaderValue::from_static(" 5 "));
        assert_eq!(retry_after(&h), Some(5));
        h.insert("retry-after", HttpHeaderValue::from_static("0"));
        assert_eq!(retry_after(&h), None);
        h.insert(
            "retry-after",
            HttpHeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

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
