//! The service's state: the log, the projections rebuilt from it, and the
//! one path by which records are appended and then applied.
//!
//! The API and the dispatcher both write through [`Service::append`], which
//! answers only after the records are durable *and* applied, so whoever
//! acknowledges a record to a user has already made it visible.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::dispatch::Wakeup;
use crate::log::{Appended, Loc, Log, LogError, LogOptions, Recovery};
use crate::projection::Projection;
use crate::record::{Record, RecordError};

/// How often replay reports its progress, at most: a long replay says it is
/// alive, a short one says nothing.
const REPLAY_PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Records replayed between looks at the clock for a progress report, so
/// that the clock is not read per record.
const REPLAY_PROGRESS_RECORDS: u64 = 65_536;

/// Errors of the service's write and read paths.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("record at segment {} offset {}: {source}", .loc.segment, .loc.offset)]
    Record { loc: Loc, source: RecordError },
    #[error("cannot encode record: {0}")]
    Encode(RecordError),
}

/// What opening the service found.
#[derive(Clone, Debug)]
pub struct Startup {
    pub recovery: Recovery,
    pub replayed: u64,
    pub replay_seconds: f64,
}

/// The log and its projections, shared by the API and the dispatcher.
pub struct Service {
    /// The source of truth.
    pub log: Log,
    /// Rebuilt from the log at startup, kept current by `append`. A std
    /// mutex, not Tokio's: it is held for microseconds and never across an
    /// `.await`, so blocking is cheaper than an async lock.
    projection: Mutex<Projection>,
    /// "Now" for the API and the dispatcher.
    pub clock: Arc<dyn Clock>,
    /// The dispatcher's wake-up, signalled by `append` with every batch it
    /// applied, so that no writer has to remember to wake the dispatcher.
    /// Private: only the dispatcher reads it ([`Service::wakeup`]).
    wakeup: Wakeup,
}

impl Service {
    /// Opens the log in `log_dir` and rebuilds the projections by replaying
    /// every record.
    pub fn open(
        log_dir: &std::path::Path,
        opts: &LogOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<(Service, Startup), ServiceError> {
        let (log, recovery) = Log::open(log_dir, opts)?;
        let started = Instant::now();
        let mut projection = Projection::new();
        let mut replayed = 0u64;
        let mut last_report = Instant::now();
        log.replay(|entry| {
            let record = Record::decode(entry.payload).map_err(|source| ServiceError::Record {
                loc: entry.loc,
                source,
            })?;
            projection.apply(entry.loc, &record);
            replayed += 1;
            if replayed.is_multiple_of(REPLAY_PROGRESS_RECORDS)
                && last_report.elapsed() >= REPLAY_PROGRESS_EVERY
            {
                last_report = Instant::now();
                tracing::info!(
                    replayed,
                    of = recovery.records,
                    percent = replayed * 100 / recovery.records.max(1),
                    "replaying the log"
                );
            }
            Ok::<(), ServiceError>(())
        })?;
        let startup = Startup {
            recovery,
            replayed,
            replay_seconds: started.elapsed().as_secs_f64(),
        };
        Ok((
            Service {
                log,
                projection: Mutex::new(projection),
                clock,
                wakeup: Wakeup::default(),
            },
            startup,
        ))
    }

    /// Appends `records` as one all-or-nothing batch, waits until it is
    /// durable, applies it to the projections, wakes the dispatcher if the
    /// batch made an event due sooner than it planned, and returns where
    /// each record lives.
    pub async fn append(&self, records: &[Record]) -> Result<Vec<Appended>, ServiceError> {
        let batch = records
            .iter()
            .map(Record::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ServiceError::Encode)?;
        let appended = self.log.append(batch).await?;
        {
            let mut projection = self.projection();
            for (record, a) in records.iter().zip(&appended) {
                projection.apply(a.loc, record);
            }
        }
        // After applying, never before: the dispatcher looks at the
        // projection after resetting its plan, so a signal sent now is
        // either seen by that look or wakes the loop (see `dispatch::wake`).
        self.wakeup.applied(records);
        Ok(appended)
    }

    /// Reads back the record at `loc`.
    pub fn read(&self, loc: Loc) -> Result<Record, ServiceError> {
        let bytes = self.log.read(loc)?;
        Record::decode(&bytes).map_err(|source| ServiceError::Record { loc, source })
    }

    /// The projections, locked. Keep the guard short and never hold it
    /// across an `.await`.
    pub fn projection(&self) -> MutexGuard<'_, Projection> {
        // A panic while holding the lock cannot leave the projection half
        // updated in a way later readers could trust less than a crash would,
        // and `apply` does not panic; so a poisoned lock is still used.
        self.projection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The dispatcher's wake-up, for the dispatcher alone.
    pub(crate) fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }
}
