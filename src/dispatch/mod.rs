//! The dispatcher: fires each event at its time, with retries, timeouts and
//! tolerance, and records every attempt.
//!
//! No polling: the loop sleeps until the earliest due event and is woken
//! through the service's `Wakeup` when a record makes an event due
//! sooner, or when a claim it held is dropped (the shape of mini-redis's
//! expiry loop). Each attempt runs in its own task, bounded by
//! `max_in_flight`:
//!
//! 1. too late (`now - scheduled_time > tolerance_seconds`) → `EventExpired`;
//! 2. otherwise `AttemptStarted` is made durable *before* the call, so a
//!    crash mid-call is seen at restart and the event is sent again (at
//!    least once); once it is applied, an event cancelled meanwhile, or
//!    whose cancel the API has planned and not yet applied, is not sent;
//! 3. the outcome (`AttemptSucceeded` / `AttemptFailed`) is appended after.
//!
//! # Layout
//! - this file: [`DispatchConfig`] and its defaults, [`Dispatcher`], the
//!   loop, recovery of interrupted attempts, and the claims;
//! - `wake`: `Wakeup`, when the loop plans to look next and how it is
//!   woken sooner;
//! - `attempt`: one attempt's lifecycle, from a claim to its outcome record;
//! - `hosts`: each webhook host's share of the slots
//!   (`max_in_flight_per_host`) and the events parked while it is full;
//! - `rules`: the pure rules that decide outcomes ([`expired`],
//!   [`succeeded`], [`next_retry_at`], [`retry_after`]), tested with
//!   explicit times;
//! - `http`: the webhook client, the request and the call.

mod attempt;
mod hosts;
mod http;
mod rules;
mod wake;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use self::hosts::HostSlots;
use self::http::WebhookClient;
use crate::api::CancelsInFlight;
use crate::projection::Status;
use crate::record::{EventId, MAX_INTERRUPTED_ATTEMPTS, Record, UnixMicros};
use crate::service::{Service, ServiceError};

pub(crate) use wake::Wakeup;

/// The longest the loop sleeps without looking again, so that a step of the
/// wall clock (NTP, a suspended VM) is noticed within this bound.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Attempts in flight at once, by default (`--max-in-flight`).
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 256;
/// Bytes of each response body kept in the invocation log, by default
/// (`--response-body-cap`).
pub const DEFAULT_RESPONSE_BODY_CAP: usize = 64 * 1024;
/// How long in-flight attempts may run on after a stop, by default
/// (`--shutdown-grace`).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The shortest wait between a failed attempt and its retry, by default
/// (`--min-retry-interval`).
pub const DEFAULT_MIN_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// The longest one attempt may wait for its webhook, by default, whatever
/// its `timeout_seconds` (`--max-webhook-timeout`).
pub const DEFAULT_MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Attempts in flight at once to one webhook authority (`host:port`), by
/// default (`--max-in-flight-per-host`); never more than `--max-in-flight`.
/// A quarter of the default `--max-in-flight`: most deployments send every
/// event to one host, and a burst to one host drained about 15% slower
/// with 32 than with 64 or more (docs/performance.md).
pub const DEFAULT_MAX_IN_FLIGHT_PER_HOST: u32 = 64;

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
    /// No retry comes sooner than this after a failed attempt, so that
    /// `retry_interval_seconds` 0 cannot become a busy loop.
    pub min_retry_interval: Duration,
    /// Each attempt's timeout is cut down to this, so that a huge
    /// `timeout_seconds` against a silent host cannot hold a slot for ever.
    pub max_webhook_timeout: Duration,
    /// Attempts in flight at once to one webhook authority (`host:port`),
    /// so that a slow host holds only its own slots (at most
    /// `max_in_flight`).
    pub max_in_flight_per_host: usize,
    /// The `User-Agent` every webhook call carries (`--user-agent`;
    /// `chime/<version>` by default).
    pub user_agent: String,
    /// The keys that sign every call (`--signing-secret`); none by
    /// default, and then calls carry no signature headers.
    pub signing: crate::signing::SigningKeys,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            // Widening: a u32 always fits a usize on the targets chime runs on.
            max_in_flight: DEFAULT_MAX_IN_FLIGHT as usize,
            response_body_cap: DEFAULT_RESPONSE_BODY_CAP,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_interrupted_attempts: MAX_INTERRUPTED_ATTEMPTS,
            min_retry_interval: DEFAULT_MIN_RETRY_INTERVAL,
            max_webhook_timeout: DEFAULT_MAX_WEBHOOK_TIMEOUT,
            max_in_flight_per_host: DEFAULT_MAX_IN_FLIGHT_PER_HOST as usize,
            user_agent: crate::webhook::user_agent(),
            signing: crate::signing::SigningKeys::default(),
        }
    }
}

/// A stop signal the dispatcher watches.
pub type Shutdown = watch::Receiver<bool>;

/// The dispatcher's shared parts.
struct Inner {
    /// The log and projections every attempt reads and appends to.
    service: Arc<Service>,
    /// Calls the webhooks.
    webhooks: WebhookClient,
    /// The loop's bounds: slots, grace, interrupted attempts.
    config: DispatchConfig,
    /// Events picked by the loop whose `AttemptStarted` is not applied yet:
    /// until it is, the projection still lists them as due. Events parked
    /// for their host's slots stay claimed.
    claimed: Mutex<HashSet<EventId>>,
    /// Each webhook host's share of the slots, and the events parked for it.
    hosts: HostSlots,
    /// Set once a stop is asked for: parked events are no longer taken up.
    stopping: AtomicBool,
    /// The API's cancels planned and not yet applied. A cancel planned
    /// while the event still showed `scheduled` can reach the log after
    /// this attempt's `AttemptStarted` (the next group commit) and be
    /// applied after the check that follows it; the check waits for such a
    /// cancel, so that it wins (docs/reliability.md, guarantee 4).
    cancels: Arc<CancelsInFlight>,
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
        let webhooks = WebhookClient::new(&config)?;
        let hosts = HostSlots::new(config.max_in_flight_per_host.min(config.max_in_flight));
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                service,
                webhooks,
                config,
                claimed: Mutex::new(HashSet::new()),
                hosts,
                stopping: AtomicBool::new(false),
                cancels: Arc::default(),
            }),
        })
    }

    /// Re-checks every variable an event's template reads against `policy`
    /// at delivery (events in the log may predate the rule).
    pub fn with_env_policy(mut self, policy: crate::webhook::EnvPolicy) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.webhooks.env_policy = policy;
        }
        self
    }

    /// Shares the API's cancels in flight, so that an attempt checks them
    /// before it calls (the server gives both the same set).
    pub fn with_cancels(mut self, cancels: Arc<CancelsInFlight>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.cancels = cancels;
        }
        self
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
        let count = records.len();
        if count > 0 {
            service.append(records).await?;
            tracing::warn!(
                events = count,
                "attempts were in flight when the server last stopped; they will be sent again"
            );
        }
        Ok(count)
    }

    /// Runs the loop until `shutdown` is true.
    pub async fn run(self, mut shutdown: Shutdown) {
        let inner = self.inner;
        let service = inner.service.clone();
        let slots = Arc::new(Semaphore::new(inner.config.max_in_flight.max(1)));
        let mut tasks = JoinSet::new();
        // Where the scan of the due queue resumes: every due event before
        // it was claimed when the loop last looked, unless something was
        // made due before it since (which `looking` reports). Without it,
        // each pick would walk again every event parked for a full host.
        let mut cursor: Option<(UnixMicros, EventId)> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => continue,
            };
            // Anything made due from here on wakes us.
            if let Some(back) = service.wakeup().looking() {
                cursor = cursor.map(|at| at.min((back, EventId::nil())));
            }
            let now = service.clock.now();
            let (pick, next) = {
                let projection = service.projection();
                let mut claimed = inner
                    .claimed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let start = cursor.unwrap_or((UnixMicros(i64::MIN), EventId::nil()));
                let found = projection
                    .due_from(start, now)
                    .find(|(_, id)| !claimed.contains(id));
                // Nothing unclaimed is due up to now: the next scan starts
                // after it.
                let resume = found.unwrap_or((now, EventId::max()));
                cursor = Some(resume);
                let pick = found
                    .map(|(_, id)| id)
                    .filter(|&id| projection.event(id).is_some());
                if let Some(id) = pick {
                    claimed.insert(id);
                }
                // The earliest event not claimed, to sleep until.
                let next = match pick {
                    Some(_) => None,
                    None => projection
                        .due_from(resume, UnixMicros(i64::MAX))
                        .find(|(_, id)| !claimed.contains(id))
                        .map(|(due, _)| due),
                };
                (pick, next)
            };
            while tasks.try_join_next().is_some() {}
            if let Some(id) = pick {
                let inner = inner.clone();
                tasks.spawn(async move {
                    inner.run_claimed(id).await;
                    drop(permit);
                });
                continue;
            }
            drop(permit);
            let sleep = match next {
                Some(due) => {
                    service.wakeup().plan(due);
                    let micros = u64::try_from(due.0.saturating_sub(now.0)).unwrap_or(0);
                    Duration::from_micros(micros).min(MAX_SLEEP)
                }
                None => MAX_SLEEP,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = service.wakeup().notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Stop: no new attempts (parked events stay unsent: they hold no
        // record, so nothing needs recovering); let those in flight finish
        // within the grace.
        inner.stopping.store(true, Ordering::Release);
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
    /// Drops the loop's claim on `id`, once its record is applied (or
    /// the attempt gave up on recording one).
    fn release(&self, id: EventId) {
        self.claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        // The loop skips claimed events when it plans; without their claim
        // one of them may be the next due, and maybe before where the
        // loop's scan resumes. (Taken after the claims' lock is dropped:
        // the loop takes the projection's first.)
        let due = self
            .service
            .projection()
            .event(id)
            .filter(|view| view.status == Status::Scheduled)
            .map(|view| view.due_at());
        self.service.wakeup().claim_dropped(due);
    }
}
