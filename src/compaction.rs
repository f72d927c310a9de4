//! Compaction (docs/log-format.md, "Compaction"): which sealed segments to
//! rewrite and which of their records are live, decided from the
//! projection; the byte work and the crash-safe install are the log's
//! (`log::compact`), which never learns what a record means.
//!
//! A record is live while the projection needs it for a replay
//! ([`Projection::is_live`]); it never becomes live again once it is not,
//! so deciding early and installing later only ever keeps too much. Only
//! segments whose every record has been applied are looked at: a record not
//! yet applied names an event the projection does not know yet.
//!
//! The rule, per sealed segment: one with no live record goes whole (merged
//! into a neighbour's run, so that no file is left for it), one with less
//! live than garbage keeps only its live records, any other stays as it is.
//! Neighbouring segments that qualify are merged into one while their live
//! records fit in one segment. So every segment left holds at least as much
//! live as garbage: the log stays within twice its live bytes, plus the
//! active segment.

use std::time::Duration;

use crate::log::{Entry, Loc, LogError, Sealed};
use crate::projection::Projection;
use crate::record::Head;
use crate::service::{Service, ServiceError};
use crate::snapshot::SnapshotStore;

/// `--compaction-interval`'s default.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(60);

/// Events looked up per hold of the projection's lock while deciding what
/// is live: the writer thread takes the same lock for every batch, so the
/// hold is kept to a fraction of a millisecond.
const LOOKUPS_PER_LOCK: usize = 4096;

/// What one compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// Segments rewritten or merged away.
    pub segments_in: usize,
    /// Compacted segments written in their place.
    pub segments_out: usize,
    /// Bytes of the segments rewritten, and of what replaced them.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub records_kept: u64,
    pub records_dropped: u64,
    /// The snapshot written after it, if one was.
    pub snapshot_seq: Option<u64>,
}

impl Compacted {
    /// Bytes the compaction gave back.
    pub fn reclaimed(&self) -> u64 {
        self.bytes_in.saturating_sub(self.bytes_out)
    }
}

/// What liveness is decided from, for one record: its number and head,
/// or `None` for a record that does not decode (always kept). The rule
/// itself is the projection's, the same `chime log stats` counts by.
struct Need {
    seq: u64,
    head: Option<Head>,
}

impl Need {
    fn of(entry: &Entry<'_>) -> Need {
        Need {
            seq: entry.seq,
            head: Head::decode(entry.payload).ok(),
        }
    }

    fn is_live(&self, projection: &Projection) -> bool {
        self.head
            .is_none_or(|head| projection.is_live_head(self.seq, &head))
    }
}

/// A sealed segment with its records' liveness, in record order.
struct Looked {
    segment: Sealed,
    live: Vec<bool>,
    live_bytes: u64,
    garbage_bytes: u64,
}

impl Looked {
    /// Whether the rule rewrites it (see the module docs).
    fn qualifies(&self) -> bool {
        self.live_bytes == 0 || self.live_bytes < self.garbage_bytes
    }
}

/// Compacts `service`'s log once (see the module docs), then, if anything
/// changed and `store` is given, writes a snapshot, so that the next start
/// restores one that fits the compacted segments. Blocking IO: call it
/// from a blocking thread.
pub fn compact(service: &Service, store: Option<&SnapshotStore>) -> Result<Compacted, ServiceError> {
    let log = &service.log;
    let segment_bytes = log.segment_bytes();
    let applied = service.last_applied_seq().unwrap_or(0);
    let sealed: Vec<Sealed> = log
        .sealed()?
        .into_iter()
        .take_while(|s| s.end_seq <= applied + 1)
        .collect();
    let mut report = Compacted::default();
    let mut looked = Vec::with_capacity(sealed.len());
    for segment in sealed {
        looked.push(look(service, segment)?);
    }
    for run in plan(&looked, segment_bytes) {
        let segments: Vec<Sealed> = run.iter().map(|l| l.segment.clone()).collect();
        let mut keep = run.iter().flat_map(|l| l.live.iter().copied());
        let staged = log.stage(&segments, |_| keep.next().unwrap_or(true))?;
        // Every location the projection holds in the run must have been
        // kept; a miss would be a bug in what counts as live, and the
        // rewrite is abandoned before it touches the log.
        let missing = service
            .projection()
            .locs()
            .find(|&loc| staged.covers(loc) && !staged.keeps(loc));
        if let Some(loc) = missing {
            return Err(ServiceError::Log(LogError::Compaction(format!(
                "the projection holds segment {} offset {}, which the rewrite would drop",
                loc.segment, loc.offset
            ))));
        }
        report.segments_in += run.len();
        report.segments_out += 1;
        report.bytes_in += staged.input_bytes;
        report.bytes_out += staged.bytes;
        report.records_kept += staged.kept;
        report.records_dropped += staged.dropped;
        let installed = log.install(staged)?;
        let mut projection = service.projection();
        log.swap_in(installed, |moved: &dyn Fn(Loc) -> Loc| {
            projection.remap_locs(moved)
        })?;
    }
    if report.segments_in > 0
        && let Some(store) = store
    {
        report.snapshot_seq = service.write_snapshot(store)?;
    }
    Ok(report)
}

/// Decides which records of `segment` are live.
fn look(service: &Service, segment: Sealed) -> Result<Looked, ServiceError> {
    let mut needs: Vec<(Need, u64)> = Vec::new();
    service.log.visit(segment.ordinal, |entry| {
        let bytes = (crate::log::frame::FRAME_HEADER_LEN + entry.payload.len()) as u64;
        needs.push((Need::of(&entry), bytes));
    })?;
    let mut looked = Looked {
        segment,
        live: Vec::with_capacity(needs.len()),
        live_bytes: 0,
        garbage_bytes: 0,
    };
    for chunk in needs.chunks(LOOKUPS_PER_LOCK) {
        let projection = service.projection();
        for (need, bytes) in chunk {
            let live = need.is_live(&projection);
            looked.live.push(live);
            if live {
                looked.live_bytes += bytes;
            } else {
                looked.garbage_bytes += bytes;
            }
        }
    }
    Ok(looked)
}

/// The runs to rewrite: neighbouring segments that qualify, while their
/// live bytes fit in one segment; a run that would change nothing (one
/// segment without garbage) is left out.
fn plan(looked: &[Looked], segment_bytes: u64) -> Vec<&[Looked]> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut live = 0u64;
    for (i, l) in looked.iter().enumerate() {
        let fits = live + l.live_bytes <= segment_bytes;
        if !l.qualifies() || !fits {
            runs.push(&looked[start..i]);
            start = if l.qualifies() { i } else { i + 1 };
            live = if l.qualifies() { l.live_bytes } else { 0 };
            continue;
        }
        live += l.live_bytes;
    }
    runs.push(&looked[start..]);
    runs.into_iter()
        .filter(|run| run.len() > 1 || run.iter().any(|l| l.garbage_bytes > 0))
        .collect()
}

/// A compaction reads every sealed segment, so its cost grows with the
/// log (about 3 million records a second here, `benches/compaction.rs`):
/// the task waits at least this many times as long as the last one took,
/// so that compaction never takes more than about 5% of a core, however
/// long the log, at the price of reclaiming later on a very long one.
const IDLE_PER_BUSY: u32 = 20;

/// The compaction task of `serve`: compacts every `every` (or
/// [`IDLE_PER_BUSY`] times as long as the last compaction took, if that is
/// longer), until `stop` turns true, writing a snapshot after each
/// compaction that changed something. A failed compaction is logged and
/// tried again next time: the log is as it was before it.
pub async fn keep_compacting(
    service: std::sync::Arc<Service>,
    store: SnapshotStore,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let (service, store) = (service.clone(), store.clone());
        let started = std::time::Instant::now();
        let done =
            tokio::task::spawn_blocking(move || compact(&service, Some(&store))).await;
        wait = every.max(started.elapsed() * IDLE_PER_BUSY);
        match done {
            Ok(Ok(c)) if c.segments_in > 0 => tracing::info!(
                segments_in = c.segments_in,
                segments_out = c.segments_out,
                reclaimed_bytes = c.reclaimed(),
                records_dropped = c.records_dropped,
                snapshot_seq = c.snapshot_seq,
                "compacted the log"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "compaction failed; the log is as it was"),
            Err(e) => tracing::error!(error = %e, "the compaction task failed"),
        }
    }
}
