//! The service's state: the log, the projections rebuilt from it, and the
//! one path by which records are appended and then applied.
//!
//! The API and the dispatcher both write through [`Service::append`], which
//! answers only after the records are durable *and* applied, so whoever
//! acknowledges a record to a user has already made it visible.
//!
//! # Records are applied in log order
//!
//! The live projection must be the one a replay of the log rebuilds, so it
//! applies records in sequence order, always. Appenders cannot see to that
//! themselves: a group commit answers many of them at once and their tasks
//! wake in any order (a cancel and an `AttemptStarted` of one event could be
//! applied the other way round to the log's). So each append hands the log,
//! with its encoded batch, a hook that owns its records (an `Arc<[Record]>`,
//! not a copy of them), and the log's writer thread runs the hooks of a
//! durable write one after the other, in sequence order, before it answers
//! their appenders ([`Log::append_then`]). The log stays event-agnostic: it
//! runs a closure and never decodes a record.
//!
//! Chosen over a reorder buffer in the service (appenders parking their
//! batches by sequence number, whoever holds the lock draining them in
//! order) because the writer already knows the order and the moment a batch
//! is durable, so there is nothing to reassemble; because an appender whose
//! future is dropped once its batch is in the log's queue (a caller that
//! stops waiting) can neither leave a gap that stalls every later batch nor
//! leave its records unapplied: the hook runs anyway; and because a refused
//! batch simply never runs its hook. A failed write refuses its whole group
//! and the next group reuses those sequence numbers, so nothing later is
//! applied before or without it; a failed fsync stops the writer. Nothing
//! is ever half applied. Group commit is kept: appenders still share one
//! `fdatasync`, and none waits for another's. The cost: the writer thread
//! takes the projection's lock once per batch (about a microsecond per
//! record, next to a write's fsync), so a reader holding that lock long
//! delays the next group commit, not only the appenders.
//!
//! A debug check backs this: the service remembers the last sequence number
//! applied, and counts (and in debug builds asserts against) any record
//! applied that does not come after it ([`Service::apply_order_violations`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::dispatch::Wakeup;
use crate::log::{Appended, Loc, Log, LogError, LogOptions, Recovery, SegmentId};
use crate::projection::{InvocationRef, Projection};
use crate::record::{EventCreated, EventId, Head, Record, RecordError};
use crate::snapshot::{SetAside, SnapshotError, SnapshotStore};

/// How often replay reports its progress, at most: a long replay says it is
/// alive, a short one says nothing.
const REPLAY_PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Records replayed between looks at the clock for a progress report, so
/// that the clock is not read per record.
const REPLAY_PROGRESS_RECORDS: u64 = 65_536;

/// No record applied yet: below [`crate::log::FIRST_SEQ`].
const NONE_APPLIED: u64 = 0;

/// Errors of the service's write and read paths.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("record at segment {} offset {}: {source}", .loc.segment, .loc.offset)]
    Record { loc: Loc, source: RecordError },
    #[error("cannot encode record: {0}")]
    Encode(RecordError),
    #[error("an event's location (segment {} offset {}) holds a {kind} record", .loc.segment, .loc.offset)]
    NotCreation {
        loc: Loc,
        kind: crate::record::RecordKind,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("cannot encode a snapshot: {0}")]
    EncodeSnapshot(postcard::Error),
    #[error("the snapshot writer failed: {0}")]
    SnapshotTask(String),
}

/// The schema of a snapshot's body, written in front of it: a build that
/// does not know it refuses the snapshot (it is set aside and the log is
/// replayed), as a reader refuses a record schema it does not know.
/// Schema 2: segments as [`SegmentId`]s (with compaction generations and
/// tombstones), invocations keyed by sequence number.
pub const SNAPSHOT_SCHEMA: u8 = 2;

/// What a snapshot holds: the projections as of its sequence number, and
/// every segment by ordinal then (`None`: a tombstone a compaction left),
/// because the projections' locations (`Loc`) name segments by ordinal: a
/// snapshot is used only over a log whose first segments are still those,
/// with the same contents.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotBody<P> {
    segments: Vec<Option<SegmentId>>,
    projection: P,
}

/// Encodes a snapshot's body: `[SNAPSHOT_SCHEMA] ++ postcard(SnapshotBody)`.
fn encode_snapshot(
    segments: Vec<Option<SegmentId>>,
    projection: &Projection,
) -> Result<Vec<u8>, ServiceError> {
    let mut out = vec![SNAPSHOT_SCHEMA];
    postcard::to_io(
        &SnapshotBody {
            segments,
            projection,
        },
        &mut out,
    )
    .map_err(ServiceError::EncodeSnapshot)?;
    Ok(out)
}

/// Decodes a snapshot's body: the segments it was taken over, and the
/// projections; `Err` says why it cannot be read.
pub fn decode_snapshot_body(body: &[u8]) -> Result<(Vec<Option<SegmentId>>, Projection), String> {
    let (&schema, rest) = body.split_first().ok_or("an empty body")?;
    if schema != SNAPSHOT_SCHEMA {
        return Err(format!(
            "snapshot schema {schema} is not known to this build (it reads {SNAPSHOT_SCHEMA})"
        ));
    }
    let (decoded, trailing): (SnapshotBody<Projection>, _) =
        postcard::take_from_bytes(rest).map_err(|e| format!("the body does not decode: {e}"))?;
    if !trailing.is_empty() {
        return Err(format!("{} bytes after the body", trailing.len()));
    }
    Ok((decoded.segments, decoded.projection))
}

/// Decodes a snapshot's body taken at `seq` and checks it fits a log whose
/// segments are `log_segments` (by ordinal) and which has reached sequence
/// number `covered_through`; `Err` says why it cannot be used. The
/// snapshot's segments must be the log's first ones, tombstones aside, and
/// its locations are renumbered to the log's ordinals.
pub fn decode_snapshot(
    body: &[u8],
    seq: u64,
    log_segments: &[Option<SegmentId>],
    covered_through: Option<u64>,
) -> Result<Projection, String> {
    let (segments, mut projection) = decode_snapshot_body(body)?;
    if covered_through.is_none_or(|last| last < seq) {
        return Err(format!(
            "it holds records up to {seq} but the log ends at {}",
            covered_through.map_or("nothing".to_owned(), |l| l.to_string())
        ));
    }
    // The log's ordinal of each of the snapshot's ordinals.
    let mut log_present = log_segments
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i as u32, s)));
    let mut ordinal_map: Vec<Option<u32>> = Vec::with_capacity(segments.len());
    for id in &segments {
        match id {
            None => ordinal_map.push(None),
            Some(id) => match log_present.next() {
                Some((ordinal, log_id)) if log_id == *id => ordinal_map.push(Some(ordinal)),
                _ => return Err("the log's segments are not those it was taken over".to_owned()),
            },
        }
    }
    let identity = ordinal_map
        .iter()
        .enumerate()
        .all(|(i, o)| o.is_none_or(|o| o as usize == i));
    let fits = |loc: Loc| {
        ordinal_map
            .get(loc.segment as usize)
            .copied()
            .flatten()
            .is_some()
    };
    if !projection.locs().all(fits) {
        return Err("it points into a segment it does not list".to_owned());
    }
    if !identity {
        projection.remap_locs(&|loc| Loc {
            // Checked above: every location's ordinal maps.
            segment: ordinal_map[loc.segment as usize].unwrap_or(loc.segment),
            offset: loc.offset,
        });
    }
    Ok(projection)
}

/// What opening the service found.
#[derive(Clone, Debug)]
pub struct Startup {
    pub recovery: Recovery,
    /// The sequence number of the snapshot restored, if one was.
    pub snapshot_seq: Option<u64>,
    /// Snapshots that failed their checks and were set aside.
    pub snapshots_set_aside: Vec<SetAside>,
    /// Records replayed (after the snapshot, if one was restored).
    pub replayed: u64,
    /// Restoring and replaying, together.
    pub replay_seconds: f64,
}

/// The log and its projections, shared by the API and the dispatcher.
pub struct Service {
    /// The source of truth.
    pub log: Log,
    /// The projections and what keeps them current, shared with the hooks
    /// the log's writer thread runs (see the module docs).
    applier: Arc<Applier>,
    /// "Now" for the API and the dispatcher.
    pub clock: Arc<dyn Clock>,
    /// Holds one appender's wake-up, for the tests of apply order.
    #[cfg(feature = "testing")]
    wake_hold: crate::testing::wake::WakeHold,
}

/// What applies durable batches, on the log's writer thread.
struct Applier {
    /// Rebuilt from the log at startup, kept current by the hooks of
    /// [`Service::append`]. A std mutex, not Tokio's: it is held for
    /// microseconds and never across an `.await`, so blocking is cheaper
    /// than an async lock.
    projection: Mutex<Projection>,
    /// The dispatcher's wake-up, signalled with every batch applied, so that
    /// no writer has to remember to wake the dispatcher. Only the
    /// dispatcher reads it ([`Service::wakeup`]).
    wakeup: Wakeup,
    /// The sequence number applied last ([`NONE_APPLIED`] before the
    /// first). Written with the projection's lock held.
    last_seq: AtomicU64,
    /// Records applied at or below the one applied before them: out of log
    /// order. Zero, or a bug.
    violations: AtomicU64,
}

impl Applier {
    fn projection(&self) -> MutexGuard<'_, Projection> {
        // A panic while holding the lock cannot leave the projection half
        // updated in a way later readers could trust less than a crash would,
        // and `apply` does not panic; so a poisoned lock is still used.
        self.projection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a durable batch. Run by the log's writer thread, batch after
    /// batch in log order, before the batch's appender is answered.
    fn apply(&self, appended: &[Appended], records: &[Record]) {
        {
            let mut projection = self.projection();
            for (record, a) in records.iter().zip(appended) {
                self.check_order(a.seq);
                projection.apply(a.seq, a.loc, record);
            }
        }
        // After applying, never before: the dispatcher looks at the
        // projection after resetting its plan, so a signal sent now is
        // either seen by that look or wakes the loop (see `dispatch::wake`).
        self.wakeup.applied(records);
    }

    /// Notes that record `seq` is applied next. Call it with the
    /// projection's lock held.
    fn check_order(&self, seq: u64) {
        let last = self.last_seq.swap(seq, Ordering::Relaxed);
        if last != NONE_APPLIED && seq <= last {
            self.violations.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                seq,
                last,
                "a record was applied out of log order; the live state may differ from a replay"
            );
            debug_assert!(false, "record {seq} applied after record {last}");
        }
    }
}

impl Service {
    /// Opens the log in `log_dir` and rebuilds the projections by replaying
    /// every record.
    pub fn open(
        log_dir: &std::path::Path,
        opts: &LogOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<(Service, Startup), ServiceError> {
        Self::open_restoring(log_dir, opts, clock, None)
    }

    /// [`Service::open`], restoring the newest usable snapshot of
    /// `snapshots` first (one that fails a check is set aside, see
    /// [`crate::snapshot`]) and replaying only the records after it.
    pub fn open_restoring(
        log_dir: &std::path::Path,
        opts: &LogOptions,
        clock: Arc<dyn Clock>,
        snapshots: Option<&SnapshotStore>,
    ) -> Result<(Service, Startup), ServiceError> {
        let (log, recovery) = Log::open(log_dir, opts)?;
        let started = Instant::now();
        let segments = log.segment_ids()?;
        // Past the last record when a compaction dropped the records after it.
        let last_seq = recovery.next_seq.checked_sub(1).filter(|&s| s > 0);
        let (restored, snapshots_set_aside) = match snapshots {
            Some(store) => {
                let found =
                    store.restore(|seq, body| decode_snapshot(body, seq, &segments, last_seq))?;
                (found.restored, found.set_aside)
            }
            None => (None, Vec::new()),
        };
        let snapshot_seq = restored.as_ref().map(|(seq, _)| *seq);
        let applier = Applier {
            projection: Mutex::new(restored.map(|(_, p)| p).unwrap_or_default()),
            wakeup: Wakeup::default(),
            last_seq: AtomicU64::new(snapshot_seq.unwrap_or(NONE_APPLIED)),
            violations: AtomicU64::new(0),
        };
        // For the progress report only.
        let to_replay = match (last_seq, snapshot_seq) {
            (Some(last), Some(seq)) => last - seq,
            _ => recovery.records,
        };
        let mut replayed = 0u64;
        let mut last_report = Instant::now();
        {
            let mut projection = applier.projection();
            log.replay_after(snapshot_seq.unwrap_or(0), |entry| {
                // Only what the projection reads is decoded (`Head`).
                let head = Head::decode(entry.payload).map_err(|source| ServiceError::Record {
                    loc: entry.loc,
                    source,
                })?;
                applier.check_order(entry.seq);
                projection.apply_head(entry.seq, entry.loc, &head);
                replayed += 1;
                if replayed.is_multiple_of(REPLAY_PROGRESS_RECORDS)
                    && last_report.elapsed() >= REPLAY_PROGRESS_EVERY
                {
                    last_report = Instant::now();
                    tracing::info!(
                        replayed,
                        of = to_replay,
                        percent = replayed * 100 / to_replay.max(1),
                        "replaying the log"
                    );
                }
                Ok::<(), ServiceError>(())
            })?;
        }
        let startup = Startup {
            recovery,
            snapshot_seq,
            snapshots_set_aside,
            replayed,
            replay_seconds: started.elapsed().as_secs_f64(),
        };
        Ok((
            Service {
                log,
                applier: Arc::new(applier),
                clock,
                #[cfg(feature = "testing")]
                wake_hold: Default::default(),
            },
            startup,
        ))
    }

    /// Writes a snapshot of the projections as of the record applied last
    /// into `store`, and returns its sequence number (`None`: nothing
    /// applied yet, nothing written). The projections are encoded under
    /// their lock (so the writer thread's next apply waits that long);
    /// the file is written after it is released. Blocking IO: call it from
    /// a blocking thread.
    pub fn write_snapshot(&self, store: &SnapshotStore) -> Result<Option<u64>, ServiceError> {
        let (seq, body) = {
            let projection = self.projection();
            let Some(seq) = self.last_applied_seq() else {
                return Ok(None);
            };
            // Read under the projection's lock, which a compaction holds
            // while it installs: the locations and the segments agree.
            let segments = self.log.segment_ids()?;
            (seq, encode_snapshot(segments, &projection)?)
        };
        store.write(seq, &body)?;
        Ok(Some(seq))
    }

    /// Appends `records` as one all-or-nothing batch, waits until it is
    /// durable and applied to the projections (by the log's writer thread,
    /// in log order: see the module docs), and returns where each record
    /// lives. Applying wakes the dispatcher if the batch made an event due
    /// sooner than it planned.
    ///
    /// The records are shared with the hook that applies them, not copied:
    /// pass an array or a `Vec` (moved), or an `Arc<[Record]>` to keep them
    /// (to append them again after a refusal). Once the batch is in the
    /// log's queue it is applied when durable even if this future is
    /// dropped.
    pub async fn append(
        &self,
        records: impl Into<Arc<[Record]>>,
    ) -> Result<Vec<Appended>, ServiceError> {
        let records: Arc<[Record]> = records.into();
        let batch = records
            .iter()
            .map(Record::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ServiceError::Encode)?;
        let applier = self.applier.clone();
        let apply = Box::new(move |appended: &[Appended]| applier.apply(appended, &records));
        let appended = self.log.append_then(batch, apply).await?;
        #[cfg(feature = "testing")]
        self.wake_hold.pause(&appended).await;
        Ok(appended)
    }

    /// Reads back the record at `loc`, which must have been looked up in
    /// the projection since the last compaction was installed (else use
    /// [`Service::read_as_of`]).
    pub fn read(&self, loc: Loc) -> Result<Record, ServiceError> {
        let bytes = self.log.read(loc)?;
        Record::decode(&bytes).map_err(|source| ServiceError::Record { loc, source })
    }

    /// Reads back the record at `loc`, looked up in the projection when the
    /// log's epoch was `epoch` ([`Service::projection_and_epoch`]), wherever
    /// a compaction since has moved it. `Ok(None)`: a compaction dropped
    /// it (it had left every view) or more than one moved records since;
    /// look it up again.
    pub fn read_as_of(&self, loc: Loc, epoch: u64) -> Result<Option<Record>, ServiceError> {
        match self.log.read_as_of(loc, epoch) {
            Ok(bytes) => Record::decode(&bytes)
                .map(Some)
                .map_err(|source| ServiceError::Record { loc, source }),
            Err(LogError::NoRecord(_) | LogError::Moved(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The `EventCreated` record of the event `id`, if it is in view: looked
    /// up and read under the projection's lock, so no compaction moves it
    /// in between.
    pub fn read_created(&self, id: EventId) -> Result<Option<EventCreated>, ServiceError> {
        let (loc, bytes) = {
            let projection = self.projection();
            let Some(view) = projection.event(id) else {
                return Ok(None);
            };
            // Only the copy out of the map under the lock; decoding (which
            // allocates) after it, so the writer's next apply waits less.
            (view.loc, self.log.read(view.loc)?)
        };
        let record = Record::decode(&bytes).map_err(|source| ServiceError::Record { loc, source })?;
        match record {
            Record::EventCreated(created) => Ok(Some(created)),
            other => Err(ServiceError::NotCreation {
                loc,
                kind: other.kind(),
            }),
        }
    }

    /// The outcome record of the invocation `r` names, if it is still in
    /// view: looked up and read under the projection's lock, as
    /// [`Service::read_created`].
    pub fn read_invocation(&self, r: &InvocationRef) -> Result<Option<Record>, ServiceError> {
        let (loc, bytes) = {
            let projection = self.projection();
            let Some(now) = projection.invocation(r.event_id, r.attempt_id) else {
                return Ok(None);
            };
            (now.loc, self.log.read(now.loc)?)
        };
        Record::decode(&bytes)
            .map(Some)
            .map_err(|source| ServiceError::Record { loc, source })
    }

    /// The projections, locked, and the log's epoch (how many compactions
    /// were installed): what [`Service::read_as_of`] needs to read a
    /// location looked up now, after the guard is dropped.
    pub fn projection_and_epoch(&self) -> Result<(MutexGuard<'_, Projection>, u64), ServiceError> {
        let projection = self.projection();
        // Under the projection's lock, which an install holds while it
        // moves the epoch on.
        let epoch = self.log.epoch()?;
        Ok((projection, epoch))
    }

    /// The projections, locked. Keep the guard short and never hold it
    /// across an `.await`: the log's writer thread takes it to apply every
    /// durable batch.
    pub fn projection(&self) -> MutexGuard<'_, Projection> {
        self.applier.projection()
    }

    /// The sequence number of the record applied last, if any.
    pub fn last_applied_seq(&self) -> Option<u64> {
        let last = self.applier.last_seq.load(Ordering::Relaxed);
        (last != NONE_APPLIED).then_some(last)
    }

    /// How many records were applied out of log order (at or below the
    /// sequence number applied before them) since the service opened:
    /// zero unless there is a bug; the tests assert it.
    pub fn apply_order_violations(&self) -> u64 {
        self.applier.violations.load(Ordering::Relaxed)
    }

    /// The dispatcher's wake-up, for the dispatcher alone.
    pub(crate) fn wakeup(&self) -> &Wakeup {
        &self.applier.wakeup
    }

    /// The hold on one appender's wake-up, for the tests of apply order.
    #[cfg(feature = "testing")]
    pub fn wake_hold(&self) -> &crate::testing::wake::WakeHold {
        &self.wake_hold
    }
}

/// How often [`keep_snapshots`] looks at how many records were applied
/// since its last snapshot.
const SNAPSHOT_LOOK_EVERY: Duration = Duration::from_millis(500);

/// The snapshot task of `serve`: writes a snapshot of `service` into
/// `store` whenever `every` records were applied since the last one (`last`
/// is the one restored at open), and once more when `stop` turns true, if
/// anything was applied since, so that a clean stop leaves nothing to
/// replay. Run it to its end before the log closes. The encoding holds the
/// projection's lock; the file is written on a blocking thread.
pub async fn keep_snapshots(
    service: Arc<Service>,
    store: SnapshotStore,
    every: u64,
    mut last: Option<u64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    let every = every.max(1);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(SNAPSHOT_LOOK_EVERY) => false,
            _ = stop.wait_for(|stop| *stop) => true,
        };
        let applied = service.last_applied_seq();
        let due = match (applied, last) {
            (None, _) => false,
            (Some(a), None) => stopping || a >= every,
            (Some(a), Some(l)) => a > l && (stopping || a - l >= every),
        };
        if due {
            let (service, store) = (service.clone(), store.clone());
            let written = tokio::task::spawn_blocking(move || service.write_snapshot(&store))
                .await
                .map_err(|e| ServiceError::SnapshotTask(e.to_string()))??;
            if let Some(seq) = written {
                tracing::info!(snapshot_seq = seq, "snapshot written");
                last = Some(seq);
            }
        }
        if stopping {
            return Ok(());
        }
    }
}
