//! Retention (`--retain-finished`): the background task that retires
//! finished events once they have been finished for long enough.
//!
//! It owns the decision *when* to retire and nothing else: it reads the
//! clock, asks the projection for its oldest finish time, and appends one
//! [`Record::EventsRetired`] through the service's one write path when
//! something is old enough. What retiring means (which events and
//! invocation logs leave every view) is the projection's, applied from the
//! record with no clock read, so a replay retires exactly what the live
//! server did.
//!
//! A pass appends nothing when nothing would be retired, so an idle server
//! writes no records; at most one record per [`DEFAULT_RETIRE_EVERY`].

use std::sync::Arc;
use std::time::Duration;

use crate::log::LogError;
use crate::record::{Record, UnixMicros};
use crate::service::{Service, ServiceError};

/// How long a delivered, error or dead event stays in view after it
/// finished, by default (`--retain-finished`).
pub const DEFAULT_RETAIN_FINISHED: Duration = Duration::from_secs(30 * 86_400);

/// How often the task looks for events to retire, by default: retention is
/// counted in days, so a minute's lateness does not matter, and a record a
/// minute at most is nothing to the log.
pub const DEFAULT_RETIRE_EVERY: Duration = Duration::from_secs(60);

/// The cut-off of a pass at `now`: events finished before it are retired.
/// Saturates, so an absurd retention keeps everything rather than wrapping.
pub fn cut_off(now: UnixMicros, retain: Duration) -> UnixMicros {
    let retain = i64::try_from(retain.as_micros()).unwrap_or(i64::MAX);
    UnixMicros(now.0.saturating_sub(retain))
}

/// One pass: appends an [`Record::EventsRetired`] if some finished event
/// finished before `now - retain`, and returns its cut-off; `None` when
/// nothing was old enough (nothing is appended then).
pub async fn retire_due(
    service: &Service,
    retain: Duration,
) -> Result<Option<UnixMicros>, ServiceError> {
    let now = service.clock.now();
    let finished_before = cut_off(now, retain);
    let oldest = service.projection().oldest_finished();
    if oldest.is_none_or(|oldest| oldest >= finished_before) {
        return Ok(None);
    }
    let before = service.projection().len();
    service
        .append([Record::EventsRetired {
            finished_before,
            at: now,
        }])
        .await?;
    tracing::info!(
        finished_before = %finished_before.to_rfc3339(),
        // Approximate when other records are applied meanwhile.
        retired = before.saturating_sub(service.projection().len()),
        "retired finished events"
    );
    Ok(Some(finished_before))
}

/// Runs a pass at once and then every `every`, until `stop` turns true (or
/// the log is closed). `retain: None` (`--retain-finished 0`) keeps every
/// event forever and runs nothing.
pub async fn run(
    service: Arc<Service>,
    retain: Option<Duration>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(retain) = retain else {
        return;
    };
    loop {
        if *stop.borrow() {
            return;
        }
        match retire_due(&service, retain).await {
            Ok(_) => {}
            Err(ServiceError::Log(LogError::Closed)) => return,
            // A failed append is retried at the next pass: retiring late
            // only keeps events in view a little longer.
            Err(e) => tracing::warn!(error = %e, "cannot retire finished events"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            // A dropped sender is a stop too.
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_off_is_now_less_the_retention_and_saturates() {
        assert_eq!(cut_off(UnixMicros(5_000_000), Duration::from_secs(2)), UnixMicros(3_000_000));
        assert_eq!(cut_off(UnixMicros(0), Duration::MAX), UnixMicros(-i64::MAX));
        assert_eq!(cut_off(UnixMicros(i64::MIN), Duration::from_secs(1)), UnixMicros(i64::MIN));
    }
}
