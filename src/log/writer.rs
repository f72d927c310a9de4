//! The writer thread: the one owner of the active segment.
//!
//! Group commit: the thread takes the first waiting request, then every
//! request that queued up behind it (up to [`GROUP_BYTES`]), writes their
//! frames with one `pwrite` (a *write*, its first frame marked `starts`),
//! makes them durable with one `fdatasync`, and only then answers each
//! appender. While it waits on the disk, new requests
//! queue, so the busier the log the more appenders share one fsync.
//!
//! Once a write is durable the thread runs each of its batches' hooks
//! ([`OnDurable`], from [`Log::append_then`](super::Log::append_then)) one
//! after the other in sequence order, each before its appender is answered:
//! that is how the service applies records in exactly log order, whatever
//! order the appenders' tasks wake in. A refused batch never runs its hook;
//! a hook that panics stops the writer as a failed fsync does.
//!
//! A failed write is cut back (`ftruncate` to the length before it, made
//! durable with an fsync) before the next append, so a later batch never
//! lands behind garbage. A failed fsync is fatal: the thread answers every
//! later request with [`LogError::Poisoned`].

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use tokio::sync::oneshot;

use super::frame::{self, FRAME_HEADER_LEN};
use super::fs::{FileSystem, SegmentIo};
use super::{Appended, Loc, LogError, OnDurable, ReadSegment, Shared, segment};

/// Stop gathering a group once it holds this many bytes, so one fsync does
/// not wait behind an unbounded write.
const GROUP_BYTES: usize = 8 * 1024 * 1024;

/// Where an appender waits for its answer.
pub(super) type Reply = oneshot::Sender<Result<Vec<Appended>, LogError>>;

/// One appender's batch, what to run once it is durable, and where to send
/// the answer.
pub(super) struct Request {
    pub batch: Vec<Vec<u8>>,
    pub on_durable: Option<OnDurable>,
    pub reply: Reply,
}

impl Request {
    fn frame_bytes(&self) -> usize {
        self.batch.iter().map(|p| FRAME_HEADER_LEN + p.len()).sum()
    }
}

/// The active segment, as the writer sees it.
pub(super) struct Active {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub ordinal: u32,
    /// Durable length of the active segment.
    pub len: u64,
    /// Sequence number of the next frame.
    pub next_seq: u64,
    pub segment_bytes: u64,
    pub shared: Arc<Shared>,
    pub fs: Arc<dyn FileSystem>,
}

/// Starts the writer thread for `active`: the queue to it, and the thread
/// to join once the queue is closed (it drains what is queued, then ends).
pub(super) fn spawn(
    active: Active,
) -> Result<(Sender<Request>, std::thread::JoinHandle<()>), LogError> {
    let file = active
        .fs
        .open(&active.path)
        .map_err(|e| LogError::io("open", &active.path, e))?;
    let mut writer = Writer {
        file,
        active,
        poisoned: None,
    };
    // Map the active segment ahead so readers need no new map per batch.
    writer.map_active()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("chime-log-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| LogError::io("spawn writer thread for", &PathBuf::new(), e))?;
    Ok((tx, thread))
}

struct Writer {
    file: Box<dyn SegmentIo>,
    active: Active,
    /// Set after a failed fsync; every later request gets this message.
    poisoned: Option<String>,
}

/// Frames encoded but not yet written, and the appenders waiting on them.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    waiting: Vec<Waiting>,
    frames: u64,
}

/// An appender whose frames are pending: its answer, its hook, and where
/// to send them.
struct Waiting {
    reply: Reply,
    appended: Vec<Appended>,
    on_durable: Option<OnDurable>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut bytes = first.frame_bytes();
            let mut group = vec![first];
            while bytes < GROUP_BYTES {
                match rx.try_recv() {
                    Ok(req) => {
                        bytes += req.frame_bytes();
                        group.push(req);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group, bytes);
        }
    }

    fn commit(&mut self, group: Vec<Request>, bytes: usize) {
        let mut pending = Pending {
            buf: Vec::with_capacity(bytes),
            ..Pending::default()
        };
        for req in group {
            if let Some(why) = &self.poisoned {
                let _ = req.reply.send(Err(LogError::Poisoned(why.clone())));
                continue;
            }
            let size = req.frame_bytes() as u64;
            let used = self.active.len + pending.buf.len() as u64;
            if used + size > self.active.segment_bytes && used > segment::EMPTY_LEN {
                // This batch does not fit: make what is gathered durable in
                // this segment, then start a new one. Batches never span
                // segments, which keeps "all or nothing" a per-file matter.
                self.flush(std::mem::take(&mut pending));
                // That flush may have failed fatally: then nothing more may
                // be written, in a new segment or any other.
                if let Some(why) = &self.poisoned {
                    let _ = req.reply.send(Err(LogError::Poisoned(why.clone())));
                    continue;
                }
                if let Err(e) = self.roll() {
                    // A failed fsync of the new segment or of the directory
                    // is as fatal here as anywhere: without this the writer
                    // would go on in the old segment, past the sequence
                    // number a renamed-in new segment is already named after.
                    if e.is_fatal() {
                        tracing::error!(error = %e, "rolling the log failed fatally; no more writes are accepted");
                        self.poisoned = Some(e.to_string());
                    }
                    let _ = req.reply.send(Err(e));
                    continue;
                }
            }
            self.encode(req, &mut pending);
        }
        self.flush(pending);
    }

    /// Encodes one request's frames into `pending`, numbering them after
    /// what is already pending.
    fn encode(&self, req: Request, pending: &mut Pending) {
        let mut appended = Vec::with_capacity(req.batch.len());
        let last = req.batch.len().saturating_sub(1);
        for (i, payload) in req.batch.iter().enumerate() {
            let seq = self.active.next_seq + pending.frames;
            let offset = self.active.len + pending.buf.len() as u64;
            appended.push(Appended {
                seq,
                loc: Loc {
                    segment: self.active.ordinal,
                    // segment_bytes <= u32::MAX is checked at open; a lone
                    // batch over segment_bytes may pass it, which `roll`
                    // guards against by refusing offsets past u32.
                    offset: offset as u32,
                },
            });
            // The first frame of a write vouches that everything before it
            // is durable: the write before it was fsynced (or the log was
            // opened, which rewrites and fsyncs the last write it finds).
            let flags = frame::Flags {
                more: i < last,
                starts: pending.buf.is_empty(),
            };
            frame::encode_frame(&mut pending.buf, seq, payload, flags);
            pending.frames += 1;
        }
        pending.waiting.push(Waiting {
            reply: req.reply,
            appended,
            on_durable: req.on_durable,
        });
    }

    /// Writes and fsyncs what is pending, then runs each batch's hook and
    /// answers its appender, in sequence order.
    fn flush(&mut self, pending: Pending) {
        if pending.waiting.is_empty() {
            return;
        }
        let result = self.write_durably(&pending.buf);
        match result {
            Ok(()) => {
                self.active.len += pending.buf.len() as u64;
                self.active.next_seq += pending.frames;
                self.publish_len();
                for waiting in pending.waiting {
                    self.run_hook_then_answer(waiting);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let fatal = e.is_fatal();
                if fatal {
                    tracing::error!(error = %msg, "log write failed fatally; no more writes are accepted");
                    self.poisoned = Some(msg.clone());
                } else {
                    tracing::error!(error = %msg, "log write failed; the batch was refused");
                }
                // The others of the group get the same kind of error: after
                // a failed fsync their records may be on disk too, so a
                // plain (non-fatal) error would tell them too much.
                // Their hooks are dropped unrun: nothing of a refused group
                // is applied.
                let mut first = Some(e);
                for Waiting { reply, .. } in pending.waiting {
                    let err = first.take().unwrap_or_else(|| {
                        let path = &self.active.path;
                        let source = std::io::Error::other(msg.clone());
                        if fatal {
                            LogError::fatal("append to", path, source)
                        } else {
                            LogError::io("append to", path, source)
                        }
                    });
                    let _ = reply.send(Err(err));
                }
            }
        }
    }

    /// Runs a durable batch's hook, then answers its appender. Called in
    /// sequence order: the service applies the records in the hook, so it
    /// runs before the answer and before any later batch's hook.
    ///
    /// A hook that panics may have done half its work (half a batch
    /// applied), so nothing may follow it: the writer stops as after a
    /// failed fsync, and this batch and every later one are refused (this
    /// one is durable; a restart replays it).
    fn run_hook_then_answer(&mut self, waiting: Waiting) {
        if let Some(why) = &self.poisoned {
            let _ = waiting.reply.send(Err(LogError::Poisoned(why.clone())));
            return;
        }
        if let Some(hook) = waiting.on_durable {
            let appended = &waiting.appended;
            if std::panic::catch_unwind(AssertUnwindSafe(|| hook(appended))).is_err() {
                let why = "a hook run after a durable write panicked; no more writes are accepted \
                           until a restart"
                    .to_string();
                tracing::error!(error = %why, "log write hook failed");
                let _ = waiting.reply.send(Err(LogError::Poisoned(why.clone())));
                self.poisoned = Some(why);
                return;
            }
        }
        let _ = waiting.reply.send(Ok(waiting.appended));
    }

    fn write_durably(&mut self, buf: &[u8]) -> Result<(), LogError> {
        let path = &self.active.path;
        let end = self.active.len + buf.len() as u64;
        if end > u64::from(u32::MAX) {
            return Err(LogError::io(
                "append to",
                path,
                std::io::Error::other("segment would exceed 4 GiB"),
            ));
        }
        if let Err(e) = self.file.write_all_at(buf, self.active.len) {
            // Cut back whatever part of the batch reached the file, so the
            // next append starts at a frame boundary, and make the cut
            // durable: the segment may be sealed by a roll before anything
            // else is synced in it, and a power loss must not bring back
            // frames whose appenders were told they were refused. If either
            // fails the file's tail is unknown: stop writing.
            let cut = self.file.set_len(self.active.len);
            return Err(match cut.and_then(|()| self.file.sync_all()) {
                Ok(()) => LogError::io("write", path, e),
                Err(cut) => LogError::fatal("truncate (and fsync) after a failed write", path, cut),
            });
        }
        self.file
            .sync_data()
            .map_err(|e| LogError::fatal("fdatasync", path, e))
    }

    /// Tells readers how far the active segment is durable. With a
    /// poisoned lock there is nobody to tell: every reader fails with
    /// [`LogError::LockPoisoned`] instead of reading.
    fn publish_len(&self) {
        if let Ok(mut segments) = self.active.shared.segments.write()
            && let Some(seg) = segments.get_mut(self.active.ordinal as usize)
        {
            seg.durable_len = self.active.len;
        }
    }

    /// Seals the active segment (its frames are already durable) and starts
    /// a new one at the next sequence number.
    fn roll(&mut self) -> Result<(), LogError> {
        // The new segment is mapped for the readers before it is renamed
        // into place (`create_mapped`): a map that fails then leaves no new
        // segment, and the writer stays in the old one safely. Mapped after
        // the rename, a failed map left the writer in the old segment past
        // the base the new one is named after, and the next open refused.
        // The new one holds only a header; the next roll replaces it
        // (rename over it), and a restart reads it as an empty last segment.
        let len = self.active.segment_bytes as usize;
        let (path, file, map) = segment::create_mapped(
            &*self.active.fs,
            &self.active.dir,
            self.active.next_seq,
            len,
        )?;
        let map = Arc::new(map);
        // The new segment is in place now: failing to switch to it must stop
        // the writer (see above), so a poisoned segment list is fatal here.
        let mut segments = self.active.shared.segments.write().map_err(|_| {
            LogError::Poisoned("a thread panicked while it held the log's segment list".into())
        })?;
        segments.push(ReadSegment {
            base_seq: self.active.next_seq,
            path: path.clone(),
            map: Some(map),
            durable_len: segment::EMPTY_LEN,
            generation: 0,
            end_seq: None,
        });
        drop(segments);
        self.file = file;
        self.active.path = path;
        self.active.ordinal += 1;
        self.active.len = segment::EMPTY_LEN;
        Ok(())
    }

    /// Maps the active segment up to `segment_bytes` (or its length, if
    /// larger) for the readers.
    fn map_active(&mut self) -> Result<(), LogError> {
        let len = self.active.segment_bytes.max(self.active.len) as usize;
        let map = Arc::new(
            self.file
                .map_ahead(len)
                .map_err(|e| LogError::io("mmap", &self.active.path, e))?,
        );
        let mut segments = self.active.shared.segments.write()?;
        if let Some(seg) = segments.get_mut(self.active.ordinal as usize) {
            seg.map = Some(map);
        }
        Ok(())
    }
}
