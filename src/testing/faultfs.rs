//! A [`FileSystem`] for tests that fails on request and forgets on a power
//! loss, in the manner of raft-engine's fault-injecting file systems.
//!
//! It wraps [`StdFs`] over a real directory, so segments are real files and
//! the log's memory maps keep working; beside the real files it keeps a
//! model of what the disk has made durable.
//!
//! # What is modelled
//!
//! - **File data.** Per file (per inode: a rename moves it), the content as of
//!   its last successful `sync_data`/`sync_all` (the *durable image*, kept in
//!   memory), and the writes and `set_len`s made since, in order (*pending*).
//!   `sync_data` and `sync_all` are the same here: both make the data and
//!   the length durable; neither makes the file's directory entry durable.
//! - **Copies** (`copy`, which only repair makes): a create (or
//!   truncation) of the target and one write of the whole content, pending
//!   like any other; `sync_file` syncs a file by path as `sync_all` does.
//! - **Directory entries.** Per directory, the entries as of its last
//!   `sync_dir`, and the creates, renames and removes made since, in order.
//!   A directory made by `create_dir_all` is such an entry in its parent
//!   (pending until the parent is synced): a crash that drops it takes the
//!   directory and everything in it away.
//! - **Power loss** ([`FaultFs::crash`]): every directory keeps its durable
//!   entries plus a random *prefix* of its pending entry changes (none, some
//!   or all), and every file keeps its durable image plus a random prefix of
//!   its pending operations, where the first operation left out may still
//!   have landed partly: a prefix of its bytes, or (a quarter of the time)
//!   only the length it reached (zeros past the old end: the length reached
//!   the disk, the data did not). A third of the time, when a file's last
//!   pending operation is a write, the file instead keeps every operation
//!   before it and a random subset of that write's pages
//!   ([`FaultFs::set_page_size`], 4096 by default), with a hole where a page
//!   was lost before one that landed ([`FaultFs::crash_keeping_pages`]
//!   always does this): writeback need not keep pages in order. So
//!   a created file can vanish, a rename can be undone, a removed file can
//!   come back, a truncation can be undone, and a file's unsynced tail can
//!   be cut anywhere.
//! - **A failed fsync** (injected) behaves as Linux does: a random prefix
//!   of the pending writes may have reached the disk, the rest is dropped
//!   for good (the kernel marks the pages clean) although the running
//!   process still reads it from the page cache (the real file). A later
//!   successful sync does not bring the dropped writes back.
//! - **A process restart** is reopening with the same `FaultFs` and no
//!   crash: the real files (the page cache) are read, the durable images
//!   stay as they were, so bytes a failed fsync dropped stay missing from
//!   the disk while the restarted process reads them.
//! - **A power cut at an exact point** ([`FaultFs::cut_power_after`]): after
//!   `n` more mutating calls every call fails with EIO and changes nothing,
//!   so [`FaultFs::crash`] afterwards sees the disk exactly as it was at
//!   that call, e.g. between a segment's rename and its directory fsync.
//! - **Injected errors** ([`FaultFs::fail`]): the next N (or every) call of
//!   one kind fails with a chosen errno and no effect; a short write
//!   ([`FaultFs::fail_short_write`]) writes a random strict prefix first.
//!   Memory maps ([`Op::Map`]: `map`, `map_ahead`) can be failed the same
//!   way. [`Stats`] counts the calls refused and those that went through,
//!   per kind, so a test can wait until a fault has struck.
//!
//! # What is not
//!
//! - Out-of-order writeback is modelled only within a file's last pending
//!   write (pages of it) and never across two pending writes; a lost page
//!   reads as its old content or zeros, never as other garbage. Files are
//!   independent of each other and of directories (a file's data can be
//!   durable while its entry is not, as POSIX allows; ext4 would usually
//!   journal both).
//! - A failed directory fsync leaves its changes pending (a later sync may
//!   still make them durable); a failed `sync_dir` never drops them.
//! - Renames across directories are refused (the log never makes one).
//! - Reads (`list`, `open`) never fail unless the power is off; maps fail
//!   only when asked to ([`Op::Map`]).
//! - The real `fsync`s are skipped: durability is the model's business, which
//!   also keeps the tests fast.
//!
//! A directory the `FaultFs` has touched belongs to it: [`FaultFs::crash`]
//! rewrites the real directory from the model. After writing to the same
//! directory with another file system, call [`FaultFs::resync`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::log::fs::{FileSystem, SegmentIo, StdFile, StdFs};
use crate::testing::Rng;
use memmap2::Mmap;

/// The kinds of call that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `write_all_at`.
    Write,
    /// `set_len`.
    SetLen,
    /// `sync_data` and `sync_all`.
    Sync,
    /// `create`.
    Create,
    /// `rename`.
    Rename,
    /// `remove_file`.
    Remove,
    /// `sync_dir`.
    SyncDir,
    /// `map` and `map_ahead`. Not in [`Op::ALL`]: a map changes nothing on
    /// disk, so it is not a mutating call, and power cuts do not count it.
    Map,
}

impl Op {
    /// Every kind of call, mutating or not: what the per-kind counters
    /// ([`Stats::refused`], [`Stats::succeeded`]) are indexed by.
    pub const KINDS: [Op; 8] = [
        Op::Write,
        Op::SetLen,
        Op::Sync,
        Op::Create,
        Op::Rename,
        Op::Remove,
        Op::SyncDir,
        Op::Map,
    ];

    /// The mutating kinds: what a power cut can strike.
    pub const ALL: [Op; 7] = [
        Op::Write,
        Op::SetLen,
        Op::Sync,
        Op::Create,
        Op::Rename,
        Op::Remove,
        Op::SyncDir,
    ];

    fn index(self) -> usize {
        Op::KINDS.iter().position(|&o| o == self).expect("listed")
    }
}

/// The error an injected failure returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    /// EIO (5).
    Io,
    /// ENOSPC (28).
    NoSpace,
    /// Any other raw OS error.
    Raw(i32),
}

impl Errno {
    pub fn code(self) -> i32 {
        match self {
            Errno::Io => 5,
            Errno::NoSpace => 28,
            Errno::Raw(code) => code,
        }
    }

    pub fn error(self) -> io::Error {
        io::Error::from_raw_os_error(self.code())
    }
}

/// How many calls an injected failure applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    Once,
    N(u32),
    /// Until [`FaultFs::heal`].
    Always,
}

/// Counters, for the figures a test reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Mutating calls made (whether they succeeded or not).
    pub calls: u64,
    /// Calls failed by [`FaultFs::fail`] / [`FaultFs::fail_short_write`].
    pub faults_injected: u64,
    /// The same, by the kind of call refused, indexed like [`Op::KINDS`]
    /// (see [`Stats::refused_of`]): lets a test wait until a fault has
    /// really struck before it heals it.
    pub refused: [u64; 8],
    /// Calls that passed the fault checks (no fault, power on), by kind, indexed like
    /// [`Op::KINDS`] (see [`Stats::succeeded_of`]): e.g. how many fsyncs a
    /// group commit shared.
    pub succeeded: [u64; 8],
    /// Calls refused because the power was off.
    pub refused_powerless: u64,
    /// [`FaultFs::crash`] calls.
    pub crashes: u64,
    /// Bytes of file length a crash took away (written, never made durable).
    pub bytes_lost_in_crashes: u64,
    /// Crashes that kept a file's last unsynced write only in part, with a
    /// hole: a page of it dropped while a later page landed.
    pub writes_kept_with_holes: u64,
    /// Bytes of writes a failed fsync dropped for good (the page cache, and
    /// so the running process and a restarted one, still has them).
    pub bytes_dropped_by_failed_syncs: u64,
    /// Directories a crash took away: created, but their entry in the
    /// parent never made durable.
    pub dirs_lost_in_crashes: u64,
    /// Power cuts ([`FaultFs::cut_power_after`]) by the kind of call they
    /// struck, indexed like [`Op::ALL`].
    pub cuts: [u64; 7],
}

impl Stats {
    /// Calls of kind `op` an injected fault refused.
    pub fn refused_of(&self, op: Op) -> u64 {
        self.refused[op.index()]
    }

    /// Calls of kind `op` that went through.
    pub fn succeeded_of(&self, op: Op) -> u64 {
        self.succeeded[op.index()]
    }
}

/// The fault-injecting file system. Clones share one state: keep one to
/// steer the faults while the log owns another.
#[derive(Clone)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
    pause: Arc<PauseGate>,
}

impl std::fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultFs")
    }
}

#[derive(Clone, Debug)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl FileOp {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            FileOp::Write { offset, data } => {
                let start = *offset as usize;
                let end = start + data.len();
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[start..end].copy_from_slice(data);
            }
            FileOp::SetLen(len) => image.resize(*len as usize, 0),
        }
    }
}

#[derive(Debug, Default)]
struct Inode {
    /// The content as of the last successful sync.
    durable: Vec<u8>,
    /// Writes and truncations since, in order.
    pending: Vec<FileOp>,
}

#[derive(Clone, Debug)]
enum DirOp {
    Link(OsString, u64),
    Unlink(OsString),
    Rename(OsString, OsString),
    /// A subdirectory made.
    Mkdir(OsString),
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<OsString, u64>, subdirs: &mut BTreeSet<OsString>) {
        match self {
            DirOp::Mkdir(name) => {
                subdirs.insert(name.clone());
            }
            DirOp::Link(name, ino) => {
                entries.insert(name.clone(), *ino);
            }
            DirOp::Unlink(name) => {
                entries.remove(name);
            }
            DirOp::Rename(from, to) => {
                if let Some(ino) = entries.remove(from) {
                    entries.insert(to.clone(), ino);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Dir {
    /// Entries as of the last successful `sync_dir`.
    durable: BTreeMap<OsString, u64>,
    /// Entries now (what `list` shows).
    current: BTreeMap<OsString, u64>,
    /// Changes since the last `sync_dir`, in order.
    pending: Vec<DirOp>,
    /// Subdirectories as of the last `sync_dir`.
    durable_dirs: BTreeSet<OsString>,
    /// Subdirectories now.
    current_dirs: BTreeSet<OsString>,
}

#[derive(Debug)]
struct Fault {
    op: Op,
    errno: Errno,
    /// `None`: until healed.
    left: Option<u32>,
    short: bool,
}

/// What the fault checks decided for one call.
enum Verdict {
    Go,
    /// The power is off: fail, change nothing.
    Dead(io::Error),
    /// An injected failure.
    Fail(io::Error),
    /// An injected short write.
    Short(io::Error),
}

struct State {
    rng: Rng,
    /// Bumped by every crash and resync; handles from an older generation
    /// belong to a "previous boot" and fail.
    generation: u64,
    next_ino: u64,
    inodes: HashMap<u64, Inode>,
    dirs: HashMap<PathBuf, Dir>,
    faults: Vec<Fault>,
    /// Mutating calls that may still succeed before the power goes out.
    power_left: Option<u64>,
    dead: bool,
    stats: Stats,
    /// The granularity of writeback in [`FaultFs::crash`]'s page mode.
    page_size: usize,
}

/// How [`FaultFs::crash`] decides what of a file's unsynced writes lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Landing {
    /// Each file: a random prefix, or (a third of the time, when its last
    /// unsynced operation is a write) all but that write, and of it a
    /// random subset of its pages.
    Random,
    /// Each file whose last unsynced operation is a write: all before it,
    /// and a random subset of that write's pages.
    Pages,
}

/// Lets a test hold one kind of call (after its fault checks passed) until
/// released, to line requests up behind it deterministically.
#[derive(Default)]
struct PauseGate {
    state: Mutex<PauseState>,
    changed: Condvar,
}

#[derive(Default)]
struct PauseState {
    /// The kind of call to hold, once.
    armed: Option<Op>,
    /// A call is being held.
    holding: bool,
    released: bool,
}

fn name_of(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let parent = path.parent().unwrap_or(Path::new("."));
    Ok((normal(parent), name.to_owned()))
}

/// The same directory written two ways is one directory.
fn normal(dir: &Path) -> PathBuf {
    dir.components().collect()
}

fn dead_error() -> io::Error {
    io::Error::other("power is off (FaultFs)")
}

impl State {
    /// The directory's model, adopting the real directory on first touch:
    /// what is already there counts as durable.
    fn dir(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        let key = normal(dir);
        if !self.dirs.contains_key(&key) {
            let mut adopted = Dir::default();
            for entry in std::fs::read_dir(&key)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    adopted.durable_dirs.insert(entry.file_name());
                    adopted.current_dirs.insert(entry.file_name());
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let ino = self.next_ino;
                self.next_ino += 1;
                self.inodes.insert(
                    ino,
                    Inode {
                        durable: std::fs::read(entry.path())?,
                        pending: Vec::new(),
                    },
                );
                adopted.durable.insert(entry.file_name(), ino);
                adopted.current.insert(entry.file_name(), ino);
            }
            self.dirs.insert(key.clone(), adopted);
        }
        Ok(self.dirs.get_mut(&key).expect("just inserted"))
    }

    /// The fault checks every mutating call goes through.
    fn check(&mut self, op: Op) -> Verdict {
        self.stats.calls += 1;
        if self.dead {
            self.stats.refused_powerless += 1;
            return Verdict::Dead(dead_error());
        }
        if let Some(left) = self.power_left.as_mut() {
            if *left == 0 {
                self.dead = true;
                self.stats.cuts[op.index()] += 1;
                self.stats.refused_powerless += 1;
                return Verdict::Dead(dead_error());
            }
            *left -= 1;
        }
        self.injected(op)
    }

    /// The injected faults alone (no power accounting): mutating calls
    /// reach it through [`State::check`], maps directly.
    fn injected(&mut self, op: Op) -> Verdict {
        let Some(i) = self.faults.iter().position(|f| f.op == op) else {
            self.stats.succeeded[op.index()] += 1;
            return Verdict::Go;
        };
        let fault = &mut self.faults[i];
        let (errno, short) = (fault.errno, fault.short);
        if let Some(left) = fault.left.as_mut() {
            *left -= 1;
            if *left == 0 {
                self.faults.remove(i);
            }
        }
        self.stats.faults_injected += 1;
        self.stats.refused[op.index()] += 1;
        if short {
            Verdict::Short(errno.error())
        } else {
            Verdict::Fail(errno.error())
        }
    }

    /// Fails non-mutating calls while the power is off.
    fn alive(&self) -> io::Result<()> {
        if self.dead { Err(dead_error()) } else { Ok(()) }
    }

    /// The checks of a memory map: fails while the power is off or when a
    /// [`Op::Map`] fault is injected; not a mutating call.
    fn check_map(&mut self) -> io::Result<()> {
        self.alive()?;
        match self.injected(Op::Map) {
            Verdict::Go => Ok(()),
            Verdict::Dead(e) | Verdict::Fail(e) | Verdict::Short(e) => Err(e),
        }
    }

    fn new_inode(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::default());
        ino
    }

    /// The inode of file `name` in `dir` opened for writing from empty: an
    /// existing file is truncated (a pending `SetLen(0)`), a new one linked
    /// (a pending `Link` in its directory), as `File::create` does.
    fn truncate_or_link(&mut self, dir: &Path, name: std::ffi::OsString) -> io::Result<u64> {
        let existing = self.dir(dir)?.current.get(&name).copied();
        Ok(match existing {
            Some(ino) => {
                let inode = self.inodes.get_mut(&ino).expect("entry has an inode");
                inode.pending.push(FileOp::SetLen(0));
                ino
            }
            None => {
                let ino = self.new_inode();
                let d = self.dir(dir)?;
                d.current.insert(name.clone(), ino);
                d.pending.push(DirOp::Link(name, ino));
                ino
            }
        })
    }
}

/// Linux after a failed writeback: some prefix of the pending operations
/// may be on disk, the rest is marked clean and never written (the page
/// cache, the real file here, keeps it). Returns the bytes of writes dropped.
fn fail_sync(inode: &mut Inode, rng: &mut Rng) -> u64 {
    let keep = rng.below(inode.pending.len() as u64 + 1) as usize;
    let mut dropped = 0;
    for (i, op) in inode.pending.drain(..).enumerate() {
        if i < keep {
            op.apply(&mut inode.durable);
        } else if let FileOp::Write { data, .. } = op {
            dropped += data.len() as u64;
        }
    }
    dropped
}

/// A file's image after a crash that kept its durable image plus a random
/// prefix of its pending operations, where the first one left out may
/// still have landed partly: a prefix of its bytes, or (a quarter of the
/// time) only the length it reached (zeros past the old end).
fn prefix_image(inode: &Inode, rng: &mut Rng) -> Vec<u8> {
    let mut image = inode.durable.clone();
    let keep = rng.below(inode.pending.len() as u64 + 1) as usize;
    for op in &inode.pending[..keep] {
        op.apply(&mut image);
    }
    if let Some(FileOp::Write { offset, data }) = inode.pending.get(keep)
        && rng.below(2) == 0
    {
        let part = rng.below(data.len() as u64 + 1) as usize;
        if rng.below(4) == 0 {
            // The length reached the disk, the data did not: zeros past
            // the old end; bytes the write would have overwritten keep
            // their old content.
            let end = *offset as usize + part;
            if image.len() < end {
                image.resize(end, 0);
            }
        } else {
            FileOp::Write {
                offset: *offset,
                data: data[..part].to_vec(),
            }
            .apply(&mut image);
        }
    }
    image
}

/// Lands a random subset of the `page`-sized pages (by file offset) that a
/// write of `data` at `offset` covers; a page left out keeps what the image
/// had there (zeros past its end). Half the time the file's length reached
/// the disk whole even so. Returns whether a page was left out before one
/// that landed (or before the end the length reached): a hole.
fn keep_pages(image: &mut Vec<u8>, offset: u64, data: &[u8], page: usize, rng: &mut Rng) -> bool {
    if data.is_empty() {
        return false;
    }
    let start = offset as usize;
    let end = start + data.len();
    let mut dropped_before = false;
    let mut hole = false;
    for p in start / page..=(end - 1) / page {
        let (s, e) = ((p * page).max(start), ((p + 1) * page).min(end));
        if rng.below(2) == 0 {
            if image.len() < e {
                image.resize(e, 0);
            }
            image[s..e].copy_from_slice(&data[s - start..e - start]);
            hole |= dropped_before;
        } else {
            dropped_before = true;
        }
    }
    if rng.below(2) == 0 && image.len() < end {
        image.resize(end, 0);
        hole |= dropped_before;
    }
    hole
}

impl FaultFs {
    /// A fault file system whose crashes follow from `seed`.
    pub fn new(seed: u64) -> FaultFs {
        FaultFs {
            state: Arc::new(Mutex::new(State {
                rng: Rng::new(seed),
                generation: 0,
                next_ino: 1,
                inodes: HashMap::new(),
                dirs: HashMap::new(),
                faults: Vec::new(),
                power_left: None,
                dead: false,
                stats: Stats::default(),
                page_size: 4096,
            })),
            pause: Arc::new(PauseGate::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Log options for a log on this file system, with `segment_bytes`.
    pub fn log_options(&self, segment_bytes: u64) -> crate::log::LogOptions {
        crate::log::LogOptions {
            segment_bytes,
            fs: Arc::new(self.clone()),
        }
    }

    /// Makes the next calls of kind `op` fail with `errno`, changing nothing.
    pub fn fail(&self, op: Op, errno: Errno, times: Times) {
        self.push(op, errno, times, false);
    }

    /// Makes the next writes write a random strict prefix of their buffer
    /// (possibly nothing) and then fail with `errno`.
    pub fn fail_short_write(&self, errno: Errno, times: Times) {
        self.push(Op::Write, errno, times, true);
    }

    fn push(&self, op: Op, errno: Errno, times: Times, short: bool) {
        let left = match times {
            Times::Once => Some(1),
            Times::N(0) => return,
            Times::N(n) => Some(n),
            Times::Always => None,
        };
        self.lock().faults.push(Fault {
            op,
            errno,
            left,
            short,
        });
    }

    /// Clears every injected failure (not a power cut: only
    /// [`FaultFs::crash`] brings the power back).
    pub fn heal(&self) {
        self.lock().faults.clear();
    }

    /// After `calls` more mutating calls succeed (or fail by injection),
    /// the power goes out: every later call fails with EIO and changes
    /// nothing, until [`FaultFs::crash`].
    pub fn cut_power_after(&self, calls: u64) {
        self.lock().power_left = Some(calls);
    }

    /// Whether the power is off.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    /// Simulates a power loss and the next boot: every file and directory
    /// this file system has touched is rewritten on the real disk to a state
    /// the modelled disk could be in (see the module docs), the power comes
    /// back, injected failures are cleared, and handles opened before fail.
    /// Drop the log (or stop the server) first.
    pub fn crash(&self) {
        self.crash_as(Landing::Random);
    }

    /// [`FaultFs::crash`], where every file whose last unsynced operation
    /// is a write keeps all before it and of that write only a random
    /// subset of its pages ([`FaultFs::set_page_size`]): writeback that
    /// kept a later page of a write and lost an earlier one.
    pub fn crash_keeping_pages(&self) {
        self.crash_as(Landing::Pages);
    }

    /// The granularity at which a crash keeps parts of a write (4096 by
    /// default): tests with tiny segments scale it down with them.
    pub fn set_page_size(&self, bytes: usize) {
        self.lock().page_size = bytes.max(1);
    }

    fn crash_as(&self, landing: Landing) {
        let mut st = self.lock();
        let st = &mut *st;
        st.stats.crashes += 1;
        // Sorted, so that a seed replays the same crash (and parents come
        // before their subdirectories).
        let mut dirs: Vec<PathBuf> = st.dirs.keys().cloned().collect();
        dirs.sort();
        // Each directory's entries and subdirectories after the crash.
        let mut kept: BTreeMap<PathBuf, (BTreeMap<OsString, u64>, BTreeSet<OsString>)> =
            BTreeMap::new();
        for key in &dirs {
            let dir = &st.dirs[key];
            let keep = st.rng.below(dir.pending.len() as u64 + 1) as usize;
            let mut entries = dir.durable.clone();
            let mut subdirs = dir.durable_dirs.clone();
            for op in &dir.pending[..keep] {
                op.apply(&mut entries, &mut subdirs);
            }
            kept.insert(key.clone(), (entries, subdirs));
        }
        // A directory whose entry in its (modelled) parent did not survive
        // is gone, with everything in it.
        let gone: Vec<PathBuf> = dirs
            .iter()
            .filter(|key| {
                key.ancestors()
                    .skip(1)
                    .zip(key.ancestors())
                    .any(|(parent, child)| {
                        kept.get(parent).is_some_and(|(_, subdirs)| {
                            child
                                .file_name()
                                .is_some_and(|name| !subdirs.contains(name))
                        })
                    })
            })
            .cloned()
            .collect();
        for key in &gone {
            kept.remove(key);
            st.dirs.remove(key);
            if key.exists() {
                std::fs::remove_dir_all(key).expect("remove a directory lost in a crash");
                st.stats.dirs_lost_in_crashes += 1;
            }
        }
        let page = st.page_size;
        let mut contents: HashMap<u64, Vec<u8>> = HashMap::new();
        for (key, (entries, subdirs)) in kept {
            for &ino in entries.values() {
                if contents.contains_key(&ino) {
                    continue;
                }
                let inode = st.inodes.get(&ino).expect("every entry has an inode");
                let mut full = inode.durable.clone();
                for op in &inode.pending {
                    op.apply(&mut full);
                }
                let last_is_write = matches!(inode.pending.last(), Some(FileOp::Write { .. }));
                let pages = last_is_write
                    && match landing {
                        Landing::Pages => true,
                        Landing::Random => st.rng.below(3) == 0,
                    };
                let image = if pages {
                    let mut image = inode.durable.clone();
                    let (last, before) = inode.pending.split_last().expect("a last write");
                    for op in before {
                        op.apply(&mut image);
                    }
                    let FileOp::Write { offset, data } = last else {
                        unreachable!("checked to be a write")
                    };
                    if keep_pages(&mut image, *offset, data, page, &mut st.rng) {
                        st.stats.writes_kept_with_holes += 1;
                    }
                    image
                } else {
                    prefix_image(inode, &mut st.rng)
                };
                st.stats.bytes_lost_in_crashes += full.len().saturating_sub(image.len()) as u64;
                contents.insert(ino, image);
            }
            // Rewrite the real directory from the model. Fresh files (new
            // inodes), so maps a dropped log still holds see the old ones.
            for entry in std::fs::read_dir(&key).expect("read tracked dir") {
                let entry = entry.expect("dir entry");
                if entry.file_type().expect("file type").is_file() {
                    std::fs::remove_file(entry.path()).expect("remove for crash");
                }
            }
            for (name, ino) in &entries {
                std::fs::write(key.join(name), &contents[ino]).expect("write for crash");
            }
            let dir = st.dirs.get_mut(&key).expect("listed");
            dir.durable = entries.clone();
            dir.current = entries;
            dir.durable_dirs = subdirs.clone();
            dir.current_dirs = subdirs;
            dir.pending.clear();
        }
        st.inodes = contents
            .into_iter()
            .map(|(ino, durable)| {
                (
                    ino,
                    Inode {
                        durable,
                        pending: Vec::new(),
                    },
                )
            })
            .collect();
        st.generation += 1;
        st.dead = false;
        st.power_left = None;
        st.faults.clear();
    }

    /// Forgets the model; the next touch adopts what is on disk as durable.
    /// For when another file system (`StdFs`) wrote to the same directory,
    /// e.g. a recovery run with the real file system between two crashes.
    pub fn resync(&self) {
        let mut st = self.lock();
        st.dirs.clear();
        st.inodes.clear();
        st.generation += 1;
    }

    /// Holds the next call of kind `op` (after its fault checks pass) until
    /// [`FaultFs::release`]. Use [`FaultFs::wait_held`] to know it is held.
    pub fn hold_next(&self, op: Op) {
        let mut p = self.pause.state.lock().expect("pause lock");
        *p = PauseState {
            armed: Some(op),
            holding: false,
            released: false,
        };
    }

    /// Waits (at most 10 s) until a call is held by [`FaultFs::hold_next`].
    pub fn wait_held(&self) {
        let p = self.pause.state.lock().expect("pause lock");
        let (p, timeout) = self
            .pause
            .changed
            .wait_timeout_while(p, Duration::from_secs(10), |p| !p.holding)
            .expect("pause lock");
        assert!(p.holding, "no call was held within 10 s ({timeout:?})");
    }

    /// Lets a held call go on.
    pub fn release(&self) {
        let mut p = self.pause.state.lock().expect("pause lock");
        p.released = true;
        self.pause.changed.notify_all();
    }

    /// Called outside the state lock by calls that can be held.
    fn maybe_hold(&self, op: Op) {
        let mut p = self.pause.state.lock().expect("pause lock");
        if p.armed != Some(op) {
            return;
        }
        p.armed = None;
        p.holding = true;
        self.pause.changed.notify_all();
        let mut p = self
            .pause
            .changed
            .wait_timeout_while(p, Duration::from_secs(10), |p| !p.released)
            .expect("pause lock")
            .0;
        p.holding = false;
    }
}

impl FileSystem for FaultFs {
    // Each directory made is a pending entry in its parent (adopted first,
    // so the new one is not taken for durable), until the parent is synced.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.alive()?;
        for d in crate::log::fs::missing_dirs(dir, |d| d.is_dir()) {
            let (parent, name) = name_of(d)?;
            st.dir(&parent)?;
            match st.check(Op::Create) {
                Verdict::Go => {}
                Verdict::Dead(e) | Verdict::Fail(e) | Verdict::Short(e) => return Err(e),
            }
            StdFs.create_dir_all(d)?;
            let p = st.dir(&parent)?;
            p.current_dirs.insert(name.clone());
            p.pending.push(DirOp::Mkdir(name));
            st.dirs.insert(normal(d), Dir::default());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut st = self.lock();
        st.alive()?;
        let d = st.dir(dir)?;
        Ok(d.current.keys().map(|name| dir.join(name)).collect())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        match st.check(Op::Remove) {
            Verdict::Go => {}
            Verdict::Dead(e) | Verdict::Fail(e) | Verdict::Short(e) => return Err(e),
        }
        let (dir, name) = name_of(path)?;
        let d = st.dir(&dir)?;
        if !d.current.contains_key(&name) {
            return Err(io::ErrorKind::NotFound.into());
        }
        std::fs::remove_file(path)?;
        d.current.remove(&name);
        d.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>> {
        let mut st = self.lock();
        match st.check(Op::Create) {
            Verdict::Go => {}
            Verdict::Dead(e) | Verdict::Fail(e) | Verdict::Short(e) => return Err(e),
        }
        let (dir, name) = name_of(path)?;
        // The same private mode as the real file system's files.
        let file = crate::log::fs::create_private(path)?;
        let ino = st.truncate_or_link(&dir, name)?;
        Ok(Box::new(FaultFile {
            fs: self.clone(),
            ino,
            generation: st.generation,
            file: StdFile(file),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentIo>> {
        let mut st = self.lock();
        st.alive()?;
        let (dir, name) = name_of(path)?;
        let ino = st
            .dir(&dir)?
            .current
            .get(&name)
            .copied()
            .ok_or(io::ErrorKind::NotFound)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Box::new(FaultFile {
            fs: self.clone(),
            ino,
            generation: st.generation,
            file: StdFile(file),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        match st.check(Op::Rename) {
            Verdict::Go => {}
            Verdict::Dead(e) | Verdict::Fail(e) | Verdict::Short(e) => return Err(e),
        }
        let (dir, from_name) = name_of(from)?;
        let (to_dir, to_name) = name_of(to)?;
        if dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "FaultFs does not model renames across directories",
            ));
        }
        let d = st.dir(&dir)?;
        let ino = *d.current.get(&from_name).ok_or(io::ErrorKind::NotFound)?;
        std::fs::rename(from, to)?;
        d.current.remove(&from_name);
        d.current.insert(to_name.clone(), ino);
        d.pending.push(DirOp::Rename(from_name, to_name));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        // A directory the model has not seen (the log directory's parent,
        // synced once at open so the log's own entry is durable) is outside
        // what is modelled: pass it through, without counting it as a call.
        if !st.dirs.contains_key(&normal(dir)) && !st.dead {
            drop(st);
            return StdFs.sync_dir(dir);
        }
        match st.check(Op::SyncDir) {
            Verdict::Go => {}
            // A failed directory fsync leaves the changes pending: a crash
            // may or may not keep them.
            Verdict::Dead(e) | Verdict::Fail(e) | Verdict::Short(e) => return Err(e),
        }
        let d = st.dir(dir)?;
        d.durable = d.current.clone();
        d.durable_dirs = d.current_dirs.clone();
        d.pending.clear();
        Ok(())
    }

    fn map(&self, path: &Path) -> io::Result<Mmap> {
        self.lock().check_map()?;
        StdFs.map(path)
    }

    // Only repair copies (the segment it cuts, kept as `.broken`): a create
    // of `to` (or its truncation) and one write of the whole content, all
    // pending until `sync_file` and a directory fsync.
    fn copy(&self, from: &Path, to: &Path) -> io::Result<u64> {
        let mut st = self.lock();
        match st.check(Op::Create) {
            Verdict::Go => {}
            Verdict::Dead(e) | Verdict::Fail(e) | Verdict::Short(e) => return Err(e),
        }
        let data = std::fs::read(from)?;
        let copied = StdFs.copy(from, to)?;
        let (dir, name) = name_of(to)?;
        let ino = st.truncate_or_link(&dir, name)?;
        st.inodes
            .get_mut(&ino)
            .expect("just found or made")
            .pending
            .push(FileOp::Write { offset: 0, data });
        Ok(copied)
    }

    // An fsync by path: the same model as a handle's `sync_all`.
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut guard = self.lock();
        let verdict = guard.check(Op::Sync);
        let st = &mut *guard;
        let (dir, name) = name_of(path)?;
        let ino = *st
            .dir(&dir)?
            .current
            .get(&name)
            .ok_or(io::ErrorKind::NotFound)?;
        let inode = st.inodes.get_mut(&ino).expect("entry has an inode");
        match verdict {
            Verdict::Go => {
                for op in inode.pending.drain(..) {
                    op.apply(&mut inode.durable);
                }
                Ok(())
            }
            Verdict::Dead(e) => Err(e),
            Verdict::Fail(e) | Verdict::Short(e) => {
                st.stats.bytes_dropped_by_failed_syncs += fail_sync(inode, &mut st.rng);
                Err(e)
            }
        }
    }

    fn metadata(&self, path: &Path) -> io::Result<std::fs::Metadata> {
        self.lock().alive()?;
        StdFs.metadata(path)
    }
}

/// An open file of a [`FaultFs`].
struct FaultFile {
    fs: FaultFs,
    ino: u64,
    /// The boot this handle was opened in.
    generation: u64,
    file: StdFile,
}

impl FaultFile {
    /// Runs the fault checks; a handle from before a crash always fails.
    fn check(&self, st: &mut State, op: Op) -> Verdict {
        if st.generation != self.generation {
            return Verdict::Dead(io::Error::other(
                "file handle from before a crash (FaultFs)",
            ));
        }
        st.check(op)
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut guard = self.fs.lock();
        let verdict = self.check(&mut guard, Op::Sync);
        let st = &mut *guard;
        let inode = st
            .inodes
            .get_mut(&self.ino)
            .expect("open file has an inode");
        match verdict {
            Verdict::Go => {
                for op in inode.pending.drain(..) {
                    op.apply(&mut inode.durable);
                }
            }
            Verdict::Dead(e) => return Err(e),
            Verdict::Fail(e) | Verdict::Short(e) => {
                st.stats.bytes_dropped_by_failed_syncs += fail_sync(inode, &mut st.rng);
                return Err(e);
            }
        }
        drop(guard);
        self.fs.maybe_hold(Op::Sync);
        Ok(())
    }
}

impl SegmentIo for FaultFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.fs.lock();
        let (len, err) = match self.check(&mut st, Op::Write) {
            Verdict::Go => (buf.len(), None),
            Verdict::Dead(e) | Verdict::Fail(e) => return Err(e),
            Verdict::Short(e) => (st.rng.below(buf.len().max(1) as u64) as usize, Some(e)),
        };
        if len > 0 {
            self.file.write_all_at(&buf[..len], offset)?;
            st.inodes
                .get_mut(&self.ino)
                .expect("open file has an inode")
                .pending
                .push(FileOp::Write {
                    offset,
                    data: buf[..len].to_vec(),
                });
        }
        drop(st);
        match err {
            Some(e) => Err(e),
            None => {
                self.fs.maybe_hold(Op::Write);
                Ok(())
            }
        }
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut st = self.fs.lock();
        match self.check(&mut st, Op::SetLen) {
            Verdict::Go => {}
            Verdict::Dead(e) | Verdict::Fail(e) | Verdict::Short(e) => return Err(e),
        }
        self.file.set_len(len)?;
        st.inodes
            .get_mut(&self.ino)
            .expect("open file has an inode")
            .pending
            .push(FileOp::SetLen(len));
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn map_ahead(&self, len: usize) -> io::Result<Mmap> {
        self.fs.lock().check_map()?;
        self.file.map_ahead(len)
    }
}
