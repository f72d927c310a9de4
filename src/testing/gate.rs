//! A second hold on fsyncs, for tests that must hold two syncs in turn.
//!
//! [`FaultFs::hold_next`](super::faultfs::FaultFs::hold_next) holds one
//! call at a time, and arming it again while a call is held would clobber
//! that hold. [`SyncGate`] wraps any [`FileSystem`] (a `FaultFs`, say) and
//! holds the next sync (`sync_data` / `sync_all`) that *enters* it after
//! [`SyncGate::hold_next_sync`], before passing it on; a sync already inside
//! the wrapped file system (held there) is not counted. So a test can hold
//! the `FaultFs` at one group commit's fsync and the gate at the next one.
//! Everything else passes straight through.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use memmap2::Mmap;

use crate::log::fs::{FileSystem, SegmentIo};

/// How long a held sync waits for its release, and a test for a hold: a
/// test that forgets to release fails instead of hanging.
const HOLD_LIMIT: Duration = Duration::from_secs(10);

/// A [`FileSystem`] whose syncs can be held, one at a time. Clones share
/// one gate: keep one to steer it while the log owns another.
#[derive(Clone)]
pub struct SyncGate {
    inner: Arc<dyn FileSystem>,
    gate: Arc<Gate>,
}

impl std::fmt::Debug for SyncGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncGate")
    }
}

#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// The next sync to enter is held.
    armed: bool,
    /// A sync is held now.
    holding: bool,
    released: bool,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called by every sync before it reaches the wrapped file system.
    fn enter(&self) {
        let mut st = self.lock();
        if !st.armed {
            return;
        }
        st.armed = false;
        st.holding = true;
        st.released = false;
        self.changed.notify_all();
        let mut st = self
            .changed
            .wait_timeout_while(st, HOLD_LIMIT, |st| !st.released)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
        st.holding = false;
        self.changed.notify_all();
    }
}

impl SyncGate {
    /// Wraps `inner`; nothing is held until [`SyncGate::hold_next_sync`].
    pub fn new(inner: Arc<dyn FileSystem>) -> SyncGate {
        SyncGate {
            inner,
            gate: Arc::new(Gate::default()),
        }
    }

    /// Holds the next sync that enters the gate until [`SyncGate::release`].
    /// Panics if a sync is held already.
    pub fn hold_next_sync(&self) {
        let mut st = self.gate.lock();
        assert!(!st.holding, "a sync is held already");
        st.armed = true;
    }

    /// Waits (at most 10 s) until a sync is held; panics if none is.
    pub fn wait_held(&self) {
        let st = self.gate.lock();
        let st = self
            .gate
            .changed
            .wait_timeout_while(st, HOLD_LIMIT, |st| !st.holding)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
        assert!(st.holding, "no sync was held within {HOLD_LIMIT:?}");
    }

    /// Whether a sync is held now.
    pub fn is_holding(&self) -> bool {
        self.gate.lock().holding
    }

    /// Lets the held sync go on (a no-op when none is held).
    pub fn release(&self) {
        let mut st = self.gate.lock();
        st.armed = false;
        st.released = true;
        self.gate.changed.notify_all();
    }
}

/// An open file of a [`SyncGate`]: its syncs pass the gate first.
struct GatedFile {
    inner: Box<dyn SegmentIo>,
    gate: Arc<Gate>,
}

impl SegmentIo for GatedFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.gate.enter();
        self.inner.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.gate.enter();
        self.inner.sync_all()
    }

    fn map_ahead(&self, len: usize) -> io::Result<Mmap> {
        self.inner.map_ahead(len)
    }
}

impl SyncGate {
    fn gated(&self, inner: Box<dyn SegmentIo>) -> Box<dyn SegmentIo> {
        Box::new(GatedFile {
            inner,
            gate: self.gate.clone(),
        })
    }
}

impl FileSystem for SyncGate {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>> {
        self.inner.create(path).map(|f| self.gated(f))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>> {
        self.inner.open(path).map(|f| self.gated(f))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }

    fn map(&self, path: &Path) -> io::Result<Mmap> {
        self.inner.map(path)
    }

    fn copy(&self, from: &Path, to: &Path) -> io::Result<u64> {
        self.inner.copy(from, to)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_file(path)
    }

    fn metadata(&self, path: &Path) -> io::Result<std::fs::Metadata> {
        self.inner.metadata(path)
    }
}
