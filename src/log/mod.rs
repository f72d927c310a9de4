//! The segmented append-only log: chime's source of truth.
//!
//! The log knows bytes and sequence numbers, not events: it stores opaque
//! payloads in checksummed frames (`frame`), in segment files named after
//! their first sequence number (`segment`), appended by one writer thread
//! that commits concurrent appenders' batches with a shared fdatasync
//! (`writer`). Readers go through memory maps.
//!
//! Opening a log scans every segment (`scan`), checks every checksum and
//! applies the recovery policy (docs/log-format.md) in exactly one place,
//! [`Log::open`]: a torn tail of the last segment is cut back to its last
//! whole batch, after the bytes cut are copied aside durably
//! ([`repair::keep_torn_tail`]); damage anywhere else refuses to open,
//! naming file and offset.
//! What is a torn tail is decided by one classifier, [`scan::classify`].
//!
//! Tools read the log through [`reader::LogReader`] and mend it with
//! [`repair::Plan`]; they never decode frames themselves.

pub mod compact;
pub mod frame;
pub mod fs;
pub mod reader;
pub mod repair;
pub mod scan;
pub mod segment;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use memmap2::Mmap;
use tokio::sync::oneshot;

use crate::error::IoError;
pub use compact::{Installed, Sealed, Staged};
use frame::{FRAME_HEADER_LEN, HEADER_LEN, MAX_PAYLOAD};
use fs::{FileSystem, StdFs};
pub use scan::{DirScan, PartialScan, ScannedSegment, StoppedScan};

/// Where a record lives in the log: the segment's ordinal (0 for the oldest
/// segment, counting up) and the byte offset of its frame in that segment.
/// Kept small because projections hold one per event.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Loc {
    pub segment: u32,
    pub offset: u32,
}

/// What names a segment's contents: the file (by its base sequence
/// number) and the compactions behind them (0 for none).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SegmentId {
    pub base_seq: u64,
    pub generation: u64,
}

/// The first sequence number of a new log. Sequence numbers start at 1 so
/// that "nothing yet" never needs a wrapped-around 0 - 1.
pub const FIRST_SEQ: u64 = 1;

/// Default size at which the active segment is rolled.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// The smallest `segment_bytes` accepted: a header and one frame of one byte.
pub const MIN_SEGMENT_BYTES: u64 = (HEADER_LEN + FRAME_HEADER_LEN + 1) as u64;

/// Options for opening a log.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Roll the active segment once it would grow past this many bytes. A
    /// batch bigger than this still goes into one segment: batches never
    /// span segments. At most 4 GiB, since a [`Loc`] offset is a `u32`.
    pub segment_bytes: u64,
    /// The file system; tests put a faulty one here.
    pub fs: Arc<dyn FileSystem>,
}

impl LogOptions {
    /// Default options with `segment_bytes`.
    pub fn with_segment_bytes(segment_bytes: u64) -> Self {
        LogOptions {
            segment_bytes,
            ..LogOptions::default()
        }
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fs: Arc::new(StdFs),
        }
    }
}

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Io(IoError),
    /// An fsync failed. The kernel may have dropped the dirty pages, so a
    /// retry could report success for data that is gone: the log accepts no
    /// more writes until the process restarts and recovers from disk.
    #[error("{} {} failed, the log accepts no more writes: {}", .0.op, .0.path.display(), .0.source)]
    Fatal(IoError),
    /// The writer stopped taking writes after a fatal error.
    #[error("the log stopped accepting writes after an earlier failure: {0}")]
    Poisoned(String),
    #[error("corrupt log: {path} at byte {offset}: {reason}")]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("payload of {len} bytes is outside 1..={MAX_PAYLOAD}")]
    BadPayload { len: usize },
    #[error("no record at segment {} offset {}", .0.segment, .0.offset)]
    NoRecord(Loc),
    /// The location was looked up before a compaction that came before the
    /// last one moved records: look it up again.
    #[error("the record at segment {} offset {} was moved by compactions since it was looked up", .0.segment, .0.offset)]
    Moved(Loc),
    #[error("segment_bytes {0} is out of range ({min}..=4294967295)", min = HEADER_LEN + FRAME_HEADER_LEN + 1)]
    BadSegmentBytes(u64),
    /// The writer thread is gone: the log was closed ([`Log::close`]), or
    /// the writer stopped.
    #[error("the log is closed")]
    Closed,
    /// A thread panicked while it held the lock on the segments. What they
    /// say may be half updated, so nothing is read from them: a log that
    /// cannot be read must never look like an empty one.
    #[error("a thread panicked while it held the log's segment list; restart to recover from disk")]
    LockPoisoned,
    /// A compaction refused to go on (nothing of it was installed).
    #[error("compaction stopped: {0}")]
    Compaction(String),
    /// A bug: something the log's own code guarantees did not hold.
    #[error("internal error in the log: {0}")]
    Internal(&'static str),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        LogError::Io(IoError::new(op, path, source))
    }

    pub(crate) fn fatal(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        LogError::Fatal(IoError::new(op, path, source))
    }

    /// Whether the error leaves the log unable to write until a restart.
    pub fn is_fatal(&self) -> bool {
        matches!(self, LogError::Fatal { .. } | LogError::Poisoned(_))
    }
}

impl<T> From<PoisonError<T>> for LogError {
    fn from(_: PoisonError<T>) -> Self {
        LogError::LockPoisoned
    }
}

/// An appended record: its sequence number and where it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub loc: Loc,
}

/// Work for the writer thread once a batch is durable, given where each of
/// its records went: [`Log::append_then`] runs it before it answers the
/// appender. Hooks run one at a time on the writer thread, in sequence order
/// (a batch's hook after every earlier batch's), and never for a batch the
/// log refused. The log never looks inside: the service applies its records
/// to the projections here, so that they are applied in log order without
/// the log knowing about events. A hook must be short and must not wait
/// for an append: the thread that makes appends durable runs it. A hook
/// that panics may have done half its work, so the writer then stops as
/// after a failed fsync ([`LogError::Poisoned`] for that batch, durable,
/// and every later one).
pub type OnDurable = Box<dyn FnOnce(&[Appended]) + Send>;

/// One record read back during replay.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub seq: u64,
    pub loc: Loc,
    pub payload: &'a [u8],
}

/// What [`Log::open`] did to recover.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    /// A torn tail that was cut off: the segment and the bytes dropped.
    pub truncated: Option<(PathBuf, u64)>,
    /// Where the bytes of that tail were kept before the cut.
    pub torn_copy: Option<PathBuf>,
    /// The sequence number the next record will get: one past the last
    /// record, or past the range a compacted last segment covers.
    pub next_seq: u64,
}

/// A segment readers can reach, by ordinal. A segment a compaction merged
/// into the one before it stays in the list as a tombstone (`map: None`)
/// until the process ends, so that ordinals, and the writer's, never
/// change while the log is open.
struct ReadSegment {
    base_seq: u64,
    path: PathBuf,
    /// `None`: a tombstone.
    map: Option<Arc<Mmap>>,
    /// Bytes known durable; nothing past this is read.
    durable_len: u64,
    /// 0 for a segment the writer wrote; a compacted segment's generation.
    generation: u64,
    /// A compacted segment's end (see [`frame::Block`]).
    end_seq: Option<u64>,
}

/// How to find records that a compaction moved, for a reader that looked
/// their locations up before it (see [`Log::read_as_of`]).
#[derive(Default)]
struct Moves {
    /// Compactions installed since the log opened.
    epoch: u64,
    /// What the last one moved: ordinals it rewrote (the first holds the
    /// output, the others are tombstones now), and the old and new
    /// location of each record it kept, by old location.
    ordinals: Vec<u32>,
    moved: Vec<(Loc, Loc)>,
}

impl Moves {
    /// Where a record found at `loc` as of `epoch` lives now.
    fn translate(&self, loc: Loc, epoch: u64) -> Result<Loc, LogError> {
        if epoch == self.epoch {
            return Ok(loc);
        }
        if epoch + 1 != self.epoch {
            return Err(LogError::Moved(loc));
        }
        if !self.ordinals.contains(&loc.segment) {
            return Ok(loc);
        }
        match self.moved.binary_search_by_key(&loc, |&(old, _)| old) {
            Ok(i) => Ok(self.moved[i].1),
            // Not kept: it was garbage by the time of the compaction.
            Err(_) => Err(LogError::NoRecord(loc)),
        }
    }
}

/// State shared by the handle, the readers and the writer thread.
struct Shared {
    fs: Arc<dyn FileSystem>,
    /// The log's directory.
    dir: PathBuf,
    /// Every segment, by ordinal. The writer pushes new ones and raises the
    /// active one's `durable_len`; readers take the read lock briefly.
    segments: RwLock<Vec<ReadSegment>>,
    /// Taken before `segments` by whoever takes both: compaction's install
    /// (to write) and [`Log::read_as_of`] (to read).
    moves: RwLock<Moves>,
    /// The size at which the writer rolls; compaction's merged runs fit in it.
    segment_bytes: u64,
}

/// A handle to an open log. Cheap to clone; the writer thread stops when
/// the last handle is dropped or the log is closed ([`Log::close`]), and
/// either waits for it to end.
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
    writer: Arc<WriterHandle>,
}

/// The queue to the writer thread and the thread itself, shared by every
/// handle. The thread is joined, not left to finish on its own: a writer
/// still draining its queue while the data directory is opened again (an
/// in-process restart) would write into a segment the new writer owns.
struct WriterHandle {
    /// `None` once closed: later appends get [`LogError::Closed`].
    tx: Mutex<Option<std::sync::mpsc::Sender<writer::Request>>>,
    /// Taken by the first close, which joins it.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl WriterHandle {
    fn close(&self) {
        // The lock guards only whether there is a queue or a thread; a
        // panic elsewhere cannot leave either half changed.
        drop(
            self.tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            // With its queue closed the writer answers what is queued and
            // ends; a panic in it has already failed every appender.
            let _ = thread.join();
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.close();
    }
}

impl Log {
    /// Opens (or creates) the log in `log_dir`, applying the recovery
    /// policy, and starts the writer thread.
    pub fn open(log_dir: &Path, opts: &LogOptions) -> Result<(Log, Recovery), LogError> {
        let min = (HEADER_LEN + FRAME_HEADER_LEN + 1) as u64;
        if !(min..=u64::from(u32::MAX)).contains(&opts.segment_bytes) {
            return Err(LogError::BadSegmentBytes(opts.segment_bytes));
        }
        let fs = &*opts.fs;
        // Every directory made here must have a durable entry in its parent,
        // or a power loss soon after the first start could take the whole
        // log with it.
        fs::create_dir_durably(fs, log_dir).map_err(LogError::Io)?;
        let mut scan = DirScan::read_with(fs, log_dir, true)?;
        if let Some(refused) = scan.refusal() {
            return Err(refused);
        }
        let mut recovery = Recovery {
            segments: scan.segments.len(),
            records: scan.records(),
            truncated: None,
            torn_copy: None,
            next_seq: FIRST_SEQ,
        };
        // The one place a torn tail is cut off.
        if let Some((seg, keep, dropped)) = scan.torn_tail() {
            let path = seg.file.path.clone();
            let damage = seg.scan.damage.clone();
            // Nothing is destroyed: a flipped bit in an acknowledged batch
            // looks like a torn tail too, so the bytes are kept before the
            // cut. The tail runs to the end of the file as it was scanned.
            let bytes = seg.bytes();
            let tail = &bytes[(keep as usize).min(bytes.len())..];
            let copy = repair::keep_torn_tail(fs, log_dir, &path, keep, tail)?;
            truncate_segment(fs, &path, keep)?;
            tracing::warn!(
                segment = %path.display(),
                dropped_bytes = dropped,
                kept_bytes = keep,
                ?damage,
                copy = %copy.display(),
                "cut a torn tail off the last segment; the bytes cut are kept in the copy \
                 (inspect it, keep it, or delete it: docs/log-format.md)"
            );
            recovery.truncated = Some((path, dropped));
            recovery.torn_copy = Some(copy);
            // Rescan the cut segment so the maps and lengths match the file.
            scan = DirScan::read_with(fs, log_dir, false)?;
        }
        if scan.segments.is_empty() {
            segment::create(fs, log_dir, FIRST_SEQ)?;
            scan = DirScan::read_with(fs, log_dir, false)?;
            recovery.segments = 1;
        }
        if let Some(last) = scan.segments.last() {
            redo_last_write(fs, last)?;
            if last.version != frame::FORMAT_VERSION {
                // Appends go into a segment of this build's version, whose
                // writes carry the `starts` mark: a new one after the old
                // segment's frames, or, for a segment with no frame yet, a
                // new header over it (the same crash-safe rename). A
                // compacted segment is never appended to either (compaction
                // never rewrites the last segment, but a log may be
                // handed over with one last).
                segment::create(fs, log_dir, last.next_seq())?;
                scan = DirScan::read_with(fs, log_dir, false)?;
                recovery.segments = scan.segments.len();
            }
        }
        // Directory changes an earlier run made but could not make durable
        // (its directory fsync failed, which stopped it) become durable
        // before anything is appended after them; so does the removal of
        // leftover temporary files.
        fs.sync_dir(log_dir)
            .map_err(|e| LogError::fatal("fsync directory", log_dir, e))?;
        let last = scan
            .segments
            .last()
            .ok_or(LogError::Internal("no segment after creating the first"))?;
        let next_seq = last.next_seq();
        recovery.next_seq = next_seq;
        let active_len = last.scan.valid_end as u64;
        let active_path = last.file.path.clone();
        let segments: Vec<ReadSegment> = scan
            .segments
            .into_iter()
            .map(|s| ReadSegment {
                base_seq: s.file.base_seq,
                path: s.file.path,
                durable_len: s.scan.valid_end as u64,
                map: Some(s.map),
                generation: s.block.map_or(0, |b| b.generation),
                end_seq: s.block.map(|b| b.end_seq),
            })
            .collect();
        let active_ordinal = segments.len() as u32 - 1;
        let shared = Arc::new(Shared {
            fs: opts.fs.clone(),
            dir: log_dir.to_path_buf(),
            segments: RwLock::new(segments),
            moves: RwLock::new(Moves::default()),
            segment_bytes: opts.segment_bytes,
        });
        let (tx, thread) = writer::spawn(writer::Active {
            dir: log_dir.to_path_buf(),
            path: active_path,
            ordinal: active_ordinal,
            len: active_len,
            next_seq,
            segment_bytes: opts.segment_bytes,
            shared: shared.clone(),
            fs: opts.fs.clone(),
        })?;
        let writer = Arc::new(WriterHandle {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        });
        Ok((Log { shared, writer }, recovery))
    }

    /// Stops taking appends (they get [`LogError::Closed`], from every
    /// handle), lets the writer make what is already queued durable and
    /// answer it, and waits for the writer thread to end. Blocks for at
    /// most the writer's last group commit. Once this returns, nothing of
    /// this log's writes the segment files again, so the directory may be
    /// opened anew. Closing twice is harmless.
    pub fn close(&self) {
        self.writer.close();
    }

    /// Appends a batch of payloads and returns once the batch is durable.
    /// The batch is all-or-nothing: after a crash either all of it is in
    /// the log or none of it is.
    pub async fn append(&self, batch: Vec<Vec<u8>>) -> Result<Vec<Appended>, LogError> {
        self.submit(batch, None)?
            .await
            .map_err(|_| LogError::Closed)?
    }

    /// [`Log::append`], and once the batch is durable the writer thread runs
    /// `on_durable` with where its records went, before it answers (see
    /// [`OnDurable`]). The hook runs once the batch is in the writer's queue
    /// and durable, even if this future is dropped meanwhile; it is dropped
    /// unrun if the batch is refused.
    pub async fn append_then(
        &self,
        batch: Vec<Vec<u8>>,
        on_durable: OnDurable,
    ) -> Result<Vec<Appended>, LogError> {
        self.submit(batch, Some(on_durable))?
            .await
            .map_err(|_| LogError::Closed)?
    }

    /// [`Log::append`] for callers outside an async runtime.
    pub fn append_blocking(&self, batch: Vec<Vec<u8>>) -> Result<Vec<Appended>, LogError> {
        self.submit(batch, None)?
            .blocking_recv()
            .map_err(|_| LogError::Closed)?
    }

    fn submit(
        &self,
        batch: Vec<Vec<u8>>,
        on_durable: Option<OnDurable>,
    ) -> Result<oneshot::Receiver<Result<Vec<Appended>, LogError>>, LogError> {
        if let Some(bad) = batch.iter().find(|p| p.is_empty() || p.len() > MAX_PAYLOAD) {
            return Err(LogError::BadPayload { len: bad.len() });
        }
        let (reply, rx) = oneshot::channel();
        if batch.is_empty() {
            // Nothing to write; answer at once.
            if let Some(hook) = on_durable {
                hook(&[]);
            }
            let _ = reply.send(Ok(Vec::new()));
            return Ok(rx);
        }
        self.writer
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .ok_or(LogError::Closed)?
            .send(writer::Request {
                batch,
                on_durable,
                reply,
            })
            .map_err(|_| LogError::Closed)?;
        Ok(rx)
    }

    /// Reads back the payload of the record at `loc`, checking its checksum.
    /// `loc` must be current: looked up after the last compaction was
    /// installed (under the lock its installer holds, the projection's);
    /// else use [`Log::read_as_of`].
    pub fn read(&self, loc: Loc) -> Result<Vec<u8>, LogError> {
        let (map, durable_len, path) = {
            let segments = self.shared.segments.read()?;
            let seg = segments
                .get(loc.segment as usize)
                .ok_or(LogError::NoRecord(loc))?;
            let map = seg.map.clone().ok_or(LogError::NoRecord(loc))?;
            (map, seg.durable_len as usize, seg.path.clone())
        };
        let map = if map.len() < durable_len {
            self.remap(loc.segment, &path)?
        } else {
            map
        };
        let bytes = &map[..durable_len.min(map.len())];
        frame::decode_frame(bytes, loc.offset as usize)
            .map(|f| f.payload.to_vec())
            .map_err(|e| LogError::Corruption {
                path,
                offset: u64::from(loc.offset),
                reason: e.to_string(),
            })
    }

    /// [`Log::read`] of a location looked up when compactions had been
    /// installed `epoch` times ([`Log::epoch`]): a record the last one
    /// moved is read where it lives now. [`LogError::NoRecord`] for a
    /// record the last compaction dropped (it was garbage by then), and
    /// [`LogError::Moved`] if more than one was installed since.
    pub fn read_as_of(&self, loc: Loc, epoch: u64) -> Result<Vec<u8>, LogError> {
        // Held while reading, so that no install comes between the
        // translation and the read.
        let moves = self.shared.moves.read()?;
        let now = moves.translate(loc, epoch)?;
        let read = self.read(now);
        drop(moves);
        read
    }

    /// How many compactions were installed since the log opened: with a
    /// location, what [`Log::read_as_of`] needs to find it later.
    pub fn epoch(&self) -> Result<u64, LogError> {
        Ok(self.shared.moves.read()?.epoch)
    }

    /// Maps a segment again after it grew past its map (a batch larger than
    /// the room mapped ahead).
    fn remap(&self, ordinal: u32, path: &Path) -> Result<Arc<Mmap>, LogError> {
        let map = Arc::new(segment::map(&*self.shared.fs, path)?);
        let mut segments = self.shared.segments.write()?;
        if let Some(seg) = segments.get_mut(ordinal as usize)
            && seg.map.is_some()
        {
            seg.map = Some(map.clone());
        }
        Ok(map)
    }

    /// Calls `f` for every durable record, oldest first. Used at startup to
    /// rebuild projections; it reads through the memory maps. Fails with
    /// [`LogError::LockPoisoned`] rather than replay nothing.
    pub fn replay<E: From<LogError>>(
        &self,
        f: impl FnMut(Entry<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.replay_after(0, f)
    }

    /// [`Log::replay`] of the records after sequence number `after` only
    /// (those a snapshot taken at `after` does not hold). Segments that
    /// end at or before `after` are not read at all.
    pub fn replay_after<E: From<LogError>>(
        &self,
        after: u64,
        mut f: impl FnMut(Entry<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        // (ordinal, map, base, durable length) of every segment not a
        // tombstone.
        let segs: Vec<(u32, Arc<Mmap>, u64, u64)> = self
            .shared
            .segments
            .read()
            .map_err(LogError::from)?
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as u32, s.map.clone()?, s.base_seq, s.durable_len)))
            .collect();
        for (i, (ordinal, map, base_seq, len)) in segs.iter().enumerate() {
            // Every record of this segment precedes the next one's base.
            let next_base = segs.get(i + 1).map_or(u64::MAX, |s| s.2);
            if next_base <= after.saturating_add(1) {
                continue;
            }
            let mut newer = |entry: Entry<'_>| {
                if entry.seq > after { f(entry) } else { Ok(()) }
            };
            scan::visit_segment(map, *ordinal, *base_seq, *len as usize, &mut newer)?;
        }
        Ok(())
    }

    /// Every segment by ordinal (the `segment` of a [`Loc`]), `None` for a
    /// tombstone: a snapshot keeps the list, so that it is used only over a
    /// log whose locations still mean what they meant.
    pub fn segment_ids(&self) -> Result<Vec<Option<SegmentId>>, LogError> {
        Ok(self
            .shared
            .segments
            .read()
            .map_err(LogError::from)?
            .iter()
            .map(|s| {
                s.map.as_ref().map(|_| SegmentId {
                    base_seq: s.base_seq,
                    generation: s.generation,
                })
            })
            .collect())
    }

    /// The size at which the active segment is rolled.
    pub fn segment_bytes(&self) -> u64 {
        self.shared.segment_bytes
    }

    /// The number of segments.
    pub fn segment_count(&self) -> usize {
        // A count cannot be half updated: the writer only pushes whole
        // segments and compaction only turns whole ones into tombstones, so
        // a poisoned lock still gives a true count.
        self.shared
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| s.map.is_some())
            .count()
    }
}

/// Writes the last write of the last segment again, byte for byte as this
/// process reads it, and fsyncs it. A run that stopped after a failed fsync
/// may have left that write in the page cache only: Linux marks the pages
/// clean after a failed writeback, so a restarted process reads bytes the
/// disk never got, and a later fsync would not write them. Appending after
/// them would then put acknowledged frames behind a hole a power loss
/// uncovers. Written again they are dirty and the fsync writes them (or
/// fails, and the log does not open). Everything before the last write was
/// durable when it was written (the `starts` mark's promise); a version 1
/// segment has no mark, so all of it is written again, once, before the
/// log moves on to a version 2 segment.
///
/// The length is set again too: a cut-back after a failed write whose fsync
/// failed may have reached only the page cache, leaving the refused bytes
/// past the end on disk, where a later roll would seal them into the
/// segment (`tests/power_loss.rs` found it).
fn redo_last_write(fs: &dyn FileSystem, seg: &ScannedSegment) -> Result<(), LogError> {
    let end = seg.scan.valid_end;
    let start = seg.scan.last_write_start.unwrap_or(HEADER_LEN).min(end);
    let path = &seg.file.path;
    let mut file = fs.open(path).map_err(|e| LogError::io("open", path, e))?;
    file.set_len(end as u64)
        .map_err(|e| LogError::io("truncate", path, e))?;
    if start < end {
        file.write_all_at(&seg.bytes()[start..end], start as u64)
            .map_err(|e| LogError::io("rewrite the last write of", path, e))?;
    }
    file.sync_all()
        .map_err(|e| LogError::fatal("fsync", path, e))
}

/// Cuts a segment back to `len` bytes and makes that durable. The one
/// truncation of recovery: [`Log::open`] cuts a torn tail with it, and
/// `chime log repair` the damage it was asked to cut.
pub fn truncate_segment(fs: &dyn FileSystem, path: &Path, len: u64) -> Result<(), LogError> {
    let mut file = fs.open(path).map_err(|e| LogError::io("open", path, e))?;
    file.set_len(len)
        .map_err(|e| LogError::io("truncate", path, e))?;
    file.sync_all()
        .map_err(|e| LogError::fatal("fsync", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_run_in_sequence_order_and_one_that_panics_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), &LogOptions::default()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for n in 0..3u8 {
            let seen = seen.clone();
            let hook: OnDurable = Box::new(move |appended| {
                seen.lock().unwrap().extend(appended.iter().map(|a| a.seq))
            });
            rt.block_on(log.append_then(vec![vec![n], vec![n]], hook))
                .unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4, 5, 6]);
        let panics: OnDurable = Box::new(|_| panic!("a hook that panics, on purpose"));
        let answer = rt.block_on(log.append_then(vec![b"durable".to_vec()], panics));
        assert!(matches!(answer, Err(LogError::Poisoned(_))), "{answer:?}");
        let after = log.append_blocking(vec![b"refused".to_vec()]);
        assert!(matches!(after, Err(LogError::Poisoned(_))), "{after:?}");
    }

    #[test]
    fn a_poisoned_segment_lock_fails_replay_instead_of_replaying_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), &LogOptions::default()).unwrap();
        log.append_blocking(vec![b"kept".to_vec()]).unwrap();
        let shared = log.shared.clone();
        // A thread that panics while it holds the write lock poisons it.
        let _ = std::thread::spawn(move || {
            let _held = shared.segments.write().unwrap();
            panic!("poison the segment lock on purpose");
        })
        .join();
        assert!(log.shared.segments.is_poisoned());
        let mut seen = 0;
        let replayed = log.replay(|_| {
            seen += 1;
            Ok::<(), LogError>(())
        });
        assert!(
            matches!(replayed, Err(LogError::LockPoisoned)),
            "{replayed:?}"
        );
        assert_eq!(seen, 0);
        let read = log.read(Loc {
            segment: 0,
            offset: HEADER_LEN as u32,
        });
        assert!(matches!(read, Err(LogError::LockPoisoned)), "{read:?}");
    }
}
