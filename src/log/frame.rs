//! The byte format of a segment: its header and its frames, and the pure
//! scanner that classifies a segment's bytes. No IO happens here: callers
//! hand in bytes (a memory map, a buffer) and get offsets back.
//!
//! ```text
//! segment   = header frame*
//! header    = magic:"CHIMELOG" version:u32 flags:u32 base_seq:u64
//!             header_crc:u32 reserved:u32                      (32 bytes)
//!             header_crc = crc32(magic ++ version ++ flags ++ base_seq)
//! frame     = len_flags:u32 crc:u32 seq:u64 payload:[u8; len] (16 + len bytes)
//!             len    = len_flags & 0x3fff_ffff, 1 ..= MAX_PAYLOAD
//!             more   = bit 31: 1 when the next frame belongs to the same batch
//!             starts = bit 30: 1 on the first frame of each write (version 2)
//!             crc    = crc32(len_flags ++ seq ++ payload)
//!             seq    = the previous frame's seq + 1 (the first: base_seq)
//! ```
//! All integers little-endian. A *batch* is a run of frames whose last one
//! has `more = 0`; recovery keeps or drops a batch whole. A *write* is what
//! the writer hands the disk with one `pwrite` before one `fdatasync`: whole
//! batches, its first frame marked `starts`. Since a write begins only after
//! the one before it was made durable, a frame marked `starts` vouches that
//! every byte before it was durable: that is how recovery tells damage to
//! acknowledged bytes from a write the disk kept only in part (see
//! docs/log-format.md). Version 1 segments (written before the mark
//! existed) never set bit 30; this build reads both and writes version 2.
//!
//! Version 3 is a *compacted* segment, written whole by compaction and
//! renamed into place (see `log::compact`): after the header comes a
//! compaction block, then the frames compaction kept, with their original
//! sequence numbers (so with gaps):
//!
//! ```text
//! compacted = header(version 3) block frame*
//! block     = magic:"CHIMECMP" generation:u64 end_seq:u64
//!             block_crc:u32 reserved:u32                        (32 bytes)
//!             block_crc = crc32(magic ++ generation ++ end_seq)
//! frame.seq in base_seq .. end_seq, each greater than the one before
//! ```
//! `end_seq` is the first sequence number the segment does not cover: the
//! next segment's base. `generation` counts the compactions behind the
//! file's contents, so that a snapshot taken over other contents of the
//! same file name is refused.

use std::ops::RangeInclusive;

/// The magic bytes that open every segment.
pub const MAGIC: [u8; 8] = *b"CHIMELOG";
/// The segment format version this build writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest segment format version this build reads: version 1 has no
/// `starts` mark (bit 30 of `len_flags` is always 0).
pub const OLDEST_VERSION: u32 = 1;
/// The format version of a compacted segment (see the module docs).
pub const COMPACTED_VERSION: u32 = 3;
/// Length of a segment header.
pub const HEADER_LEN: usize = 32;
/// The magic bytes that open a compacted segment's compaction block.
pub const BLOCK_MAGIC: [u8; 8] = *b"CHIMECMP";
/// Length of a compacted segment's header and compaction block: where its
/// first frame starts.
pub const COMPACTED_HEADER_LEN: usize = HEADER_LEN + 32;
/// Length of a frame header (len_more, crc, seq).
pub const FRAME_HEADER_LEN: usize = 16;
/// The largest payload a frame may carry. Bounds what a damaged length
/// field can make a reader believe.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;
const MORE_BIT: u32 = 1 << 31;
const STARTS_BIT: u32 = 1 << 30;
/// The length bits of `len_flags`. MAX_PAYLOAD < 2^30, so a length fits.
const LEN_MASK: u32 = STARTS_BIT - 1;

/// Encodes a segment header for a segment whose first frame has `base_seq`,
/// in the version this build writes.
pub fn encode_header(base_seq: u64) -> [u8; HEADER_LEN] {
    encode_header_version(base_seq, FORMAT_VERSION)
}

/// [`encode_header`] for a chosen format version: for tests of how older
/// segments are read.
pub fn encode_header_version(base_seq: u64, version: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&0u32.to_le_bytes());
    h[16..24].copy_from_slice(&base_seq.to_le_bytes());
    let crc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header is not valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    TooShort(usize),
    BadMagic,
    BadChecksum,
    UnknownVersion(u32),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::TooShort(n) => {
                write!(f, "segment header is {n} bytes, expected {HEADER_LEN}")
            }
            HeaderError::BadMagic => f.write_str("segment does not start with the CHIMELOG magic"),
            HeaderError::BadChecksum => f.write_str("segment header checksum mismatch"),
            HeaderError::UnknownVersion(v) => {
                write!(f, "segment format version {v} is not known to this build")
            }
        }
    }
}

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sequence number of the segment's first frame.
    pub base_seq: u64,
    /// [`OLDEST_VERSION`] ..= [`FORMAT_VERSION`].
    pub version: u32,
}

/// Decodes a segment header.
pub fn decode_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    let h = bytes
        .get(..HEADER_LEN)
        .ok_or(HeaderError::TooShort(bytes.len()))?;
    if h[0..8] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if u32_at(h, 24) != crc32fast::hash(&h[0..24]) {
        return Err(HeaderError::BadChecksum);
    }
    let version = u32_at(h, 8);
    if !(OLDEST_VERSION..=COMPACTED_VERSION).contains(&version) {
        return Err(HeaderError::UnknownVersion(version));
    }
    Ok(Header {
        base_seq: u64_at(h, 16),
        version,
    })
}

/// What a compacted segment's compaction block says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Compactions behind the contents (1 for the first).
    pub generation: u64,
    /// The first sequence number the segment does not cover.
    pub end_seq: u64,
}

/// Encodes the header and compaction block of a compacted segment.
pub fn encode_compacted_header(base_seq: u64, block: Block) -> [u8; COMPACTED_HEADER_LEN] {
    let mut h = [0u8; COMPACTED_HEADER_LEN];
    h[..HEADER_LEN].copy_from_slice(&encode_header_version(base_seq, COMPACTED_VERSION));
    let b = &mut h[HEADER_LEN..];
    b[0..8].copy_from_slice(&BLOCK_MAGIC);
    b[8..16].copy_from_slice(&block.generation.to_le_bytes());
    b[16..24].copy_from_slice(&block.end_seq.to_le_bytes());
    let crc = crc32fast::hash(&b[0..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes the compaction block of a compacted segment whose header says
/// `base_seq`; `Err` says what is wrong with it.
pub fn decode_block(bytes: &[u8], base_seq: u64) -> Result<Block, String> {
    let b = bytes
        .get(HEADER_LEN..COMPACTED_HEADER_LEN)
        .ok_or("the compacted segment ends inside its compaction block")?;
    if b[0..8] != BLOCK_MAGIC {
        return Err("the compaction block does not start with CHIMECMP".into());
    }
    if u32_at(b, 24) != crc32fast::hash(&b[0..24]) {
        return Err("compaction block checksum mismatch".into());
    }
    let block = Block {
        generation: u64_at(b, 8),
        end_seq: u64_at(b, 16),
    };
    if block.end_seq < base_seq {
        return Err(format!(
            "the compaction block ends at sequence number {} before the segment's base {base_seq}",
            block.end_seq
        ));
    }
    Ok(block)
}

/// Where a segment's frames start and which sequence numbers they may
/// carry, read from its (already checked) header: a compacted segment's
/// frames follow its block and may skip numbers below its `end_seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub first_frame: usize,
    pub base_seq: u64,
    /// `Some` for a compacted segment.
    pub block: Option<Block>,
}

impl Layout {
    /// The layout of the segment `bytes` (header included) named after
    /// `base_seq`. Bytes without a valid compacted header get the layout
    /// of a segment the writer wrote, whose frames start after the header.
    pub fn of(bytes: &[u8], base_seq: u64) -> Layout {
        let block = match decode_header(bytes) {
            Ok(h) if h.version == COMPACTED_VERSION => decode_block(bytes, h.base_seq).ok(),
            _ => None,
        };
        Layout {
            first_frame: if block.is_some() {
                COMPACTED_HEADER_LEN
            } else {
                HEADER_LEN
            },
            base_seq,
            block,
        }
    }

    /// Whether a frame numbered `seq` may follow one numbered `prev` (the
    /// first frame: `prev` is `None`): the next number in a segment the
    /// writer wrote; any greater one below `end_seq` in a compacted one.
    pub fn follows(&self, prev: Option<u64>, seq: u64) -> bool {
        let next = prev.map_or(self.base_seq, |p| p + 1);
        match self.block {
            None => seq == next,
            Some(b) => seq >= next && seq < b.end_seq,
        }
    }

    /// The sequence number the next frame would have in a segment the
    /// writer wrote (reported as "expected" when a frame does not follow).
    fn expected(&self, prev: Option<u64>) -> u64 {
        prev.map_or(self.base_seq, |p| p + 1)
    }
}

/// How a frame stands among its neighbours (the flag bits of `len_flags`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// The next frame belongs to the same batch.
    pub more: bool,
    /// The first frame of a write: every byte before it was durable when it
    /// was written (version 2 segments only).
    pub starts: bool,
}

/// Appends one frame to `out`. The payload length must be in
/// `1..=MAX_PAYLOAD` (the writer checks before it gets here).
pub fn encode_frame(out: &mut Vec<u8>, seq: u64, payload: &[u8], flags: Flags) {
    debug_assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD);
    let len_more = payload.len() as u32
        | if flags.more { MORE_BIT } else { 0 }
        | if flags.starts { STARTS_BIT } else { 0 };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_more.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    out.extend_from_slice(&len_more.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A frame read from bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub seq: u64,
    pub more: bool,
    /// The `starts` mark: the first frame of a write.
    pub starts: bool,
    pub payload: &'a [u8],
    /// Offset just past the frame.
    pub end: usize,
}

/// Why bytes at an offset are not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than a frame header, or than the length claims:
    /// the frame may have been cut short by a crash.
    Incomplete,
    /// The rest of the segment is zeros (space the file system allocated
    /// but the write never filled).
    ZeroFill,
    /// The length field is 0 or over [`MAX_PAYLOAD`].
    BadLength(u32),
    /// The checksum does not match.
    BadChecksum,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete => f.write_str("incomplete frame"),
            FrameError::ZeroFill => f.write_str("zero-filled bytes"),
            FrameError::BadLength(n) => write!(f, "invalid frame length {n}"),
            FrameError::BadChecksum => f.write_str("frame checksum mismatch"),
        }
    }
}

/// Decodes the frame starting at `offset`. Never panics and never
/// allocates: the payload is a slice of `bytes`.
pub fn decode_frame(bytes: &[u8], offset: usize) -> Result<Frame<'_>, FrameError> {
    let rest = bytes.get(offset..).unwrap_or(&[]);
    if rest.len() < FRAME_HEADER_LEN {
        return Err(if !rest.is_empty() && rest.iter().all(|&b| b == 0) {
            FrameError::ZeroFill
        } else {
            FrameError::Incomplete
        });
    }
    let len_more = u32_at(rest, 0);
    let len = (len_more & LEN_MASK) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        if rest.iter().all(|&b| b == 0) {
            return Err(FrameError::ZeroFill);
        }
        return Err(FrameError::BadLength(len_more & LEN_MASK));
    }
    let Some(payload) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Err(FrameError::Incomplete);
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&rest[0..4]);
    hasher.update(&rest[8..16]);
    hasher.update(payload);
    if hasher.finalize() != u32_at(rest, 4) {
        return Err(FrameError::BadChecksum);
    }
    Ok(Frame {
        seq: u64_at(rest, 8),
        more: len_more & MORE_BIT != 0,
        starts: len_more & STARTS_BIT != 0,
        payload,
        end: offset + FRAME_HEADER_LEN + len,
    })
}

/// What scanning a segment found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// Offset just past the last frame of the last complete batch.
    pub valid_end: usize,
    /// Sequence number of the first frame kept, if any.
    pub first_seq: Option<u64>,
    /// Sequence number of the last frame kept, if any.
    pub last_seq: Option<u64>,
    /// Frames kept (in complete batches).
    pub records: u64,
    /// Offset of the last kept frame marked `starts`: where the last write
    /// began (`None` in a version 1 segment, or one without frames).
    pub last_write_start: Option<usize>,
    /// The first damage found, if the segment does not end cleanly at
    /// `valid_end`.
    pub damage: Option<Damage>,
}

/// Damage in a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Where the kept part ends: the start of the first batch that is not
    /// whole and valid. A torn tail is cut back to here.
    pub offset: usize,
    /// Offset of the first byte that is not a valid frame (or the end of the
    /// segment, for an unfinished batch): what an operator is shown.
    pub bad_at: usize,
    pub kind: DamageKind,
    /// Whether a valid frame was found after the damage.
    pub valid_after: bool,
    /// Whether a valid frame marked `starts` was found after the damage: a
    /// write that began after the damaged bytes were durable, so they were
    /// acknowledged. Without one, every valid frame after the damage belongs
    /// to the same write as the damage (in a version 2 segment).
    pub write_after: bool,
}

/// The kind of damage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DamageKind {
    Frame(FrameError),
    /// A valid frame whose sequence number is not the expected one.
    SeqGap {
        expected: u64,
        found: u64,
    },
    /// The segment ends inside a batch (its last frame has `more = 1`).
    UnfinishedBatch,
}

impl std::fmt::Display for DamageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DamageKind::Frame(e) => e.fmt(f),
            DamageKind::SeqGap { expected, found } => {
                write!(f, "sequence number {found} where {expected} was expected")
            }
            DamageKind::UnfinishedBatch => f.write_str("segment ends inside a batch"),
        }
    }
}

/// Scans a whole segment (header included), calling `visit(seq, offset,
/// payload)` for every frame of every complete batch, in order. Frames of a
/// batch are held back until the batch's last frame has been read, so a
/// visitor never sees part of a batch.
///
/// The scan is pure and deterministic: recovery, `chime log verify` and
/// replay all decide from its result.
pub fn scan_segment(
    bytes: &[u8],
    base_seq: u64,
    mut visit: impl FnMut(u64, usize, &[u8]),
) -> SegmentScan {
    let layout = Layout::of(bytes, base_seq);
    let mut offset = layout.first_frame;
    // The number of the last frame read, kept or pending.
    let mut prev: Option<u64> = None;
    let mut out = SegmentScan {
        valid_end: layout.first_frame,
        first_seq: None,
        last_seq: None,
        records: 0,
        last_write_start: None,
        damage: None,
    };
    // Frames of the batch being read: (seq, offset, payload range).
    let mut pending: Vec<(u64, usize, usize, usize)> = Vec::new();
    // Where the write of the batch being read began, if it began in it.
    let mut pending_start: Option<usize> = None;
    while offset < bytes.len() {
        let kind = match decode_frame(bytes, offset) {
            Ok(frame) if !layout.follows(prev, frame.seq) => DamageKind::SeqGap {
                expected: layout.expected(prev),
                found: frame.seq,
            },
            Ok(frame) => {
                let start = frame.end - frame.payload.len();
                if frame.starts {
                    pending_start = Some(offset);
                }
                pending.push((frame.seq, offset, start, frame.end));
                prev = Some(frame.seq);
                offset = frame.end;
                if !frame.more {
                    for (seq, at, s, e) in pending.drain(..) {
                        visit(seq, at, &bytes[s..e]);
                        out.records += 1;
                        out.first_seq.get_or_insert(seq);
                        out.last_seq = Some(seq);
                    }
                    out.valid_end = offset;
                    if let Some(at) = pending_start.take() {
                        out.last_write_start = Some(at);
                    }
                }
                continue;
            }
            Err(e) => DamageKind::Frame(e),
        };
        let next_after_kept = out.last_seq.map_or(base_seq, |s| s + 1);
        let (valid_after, write_after) = frames_after(bytes, offset + 1, next_after_kept);
        out.damage = Some(Damage {
            offset: out.valid_end,
            bad_at: offset,
            valid_after,
            write_after,
            kind,
        });
        return out;
    }
    if !pending.is_empty() {
        out.damage = Some(Damage {
            offset: out.valid_end,
            bad_at: offset,
            kind: DamageKind::UnfinishedBatch,
            valid_after: false,
            write_after: false,
        });
    }
    out
}

/// Whether any offset at or after `from` holds a valid frame with a
/// sequence number at or after `min_seq`, and whether one of those is
/// marked `starts`. Used only once damage is found, to tell a torn tail
/// (nothing valid after it, or only the rest of the same write) from
/// damage to acknowledged bytes.
fn frames_after(bytes: &[u8], from: usize, min_seq: u64) -> (bool, bool) {
    let mut valid = false;
    let mut at = from;
    while let Some(frame) = resync(bytes, at, min_seq..=u64::MAX) {
        valid = true;
        if frame.starts {
            return (true, true);
        }
        at = frame.end;
    }
    (valid, false)
}

/// The first valid frame at or after `from` whose sequence number is in
/// `seqs`, trying every offset: how a reader finds its footing again past
/// damage (the scan, to tell a torn tail from corruption; repair, to count
/// what it would drop). A narrow `seqs` keeps the cost linear even across
/// zero fill, since few offsets pass the cheap filters to the checksum.
pub fn resync(bytes: &[u8], from: usize, seqs: RangeInclusive<u64>) -> Option<Frame<'_>> {
    let mut at = from;
    while at + FRAME_HEADER_LEN <= bytes.len() {
        // Cheap filters before the checksum: a plausible length that fits,
        // and a sequence number in range.
        let len = (u32_at(&bytes[at..], 0) & LEN_MASK) as usize;
        let seq = u64_at(&bytes[at..], 8);
        if len != 0
            && len <= bytes.len() - at - FRAME_HEADER_LEN
            && seqs.contains(&seq)
            && let Ok(frame) = decode_frame(bytes, at)
        {
            return Some(frame);
        }
        at += 1;
    }
    None
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A segment with one batch per entry of `batches` (each a list of
    /// payloads), each batch its own write.
    fn segment(base: u64, batches: &[Vec<Vec<u8>>]) -> (Vec<u8>, Vec<usize>) {
        let mut out = encode_header(base).to_vec();
        let mut seq = base;
        let mut ends = vec![];
        for batch in batches {
            for (i, p) in batch.iter().enumerate() {
                let flags = Flags {
                    more: i + 1 < batch.len(),
                    starts: i == 0,
                };
                encode_frame(&mut out, seq, p, flags);
                seq += 1;
            }
            ends.push(out.len());
        }
        (out, ends)
    }

    /// One write of `batches` (one frame each) after a segment's header.
    fn one_write(base: u64, payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut out = encode_header(base).to_vec();
        let mut ends = vec![];
        for (i, p) in payloads.iter().enumerate() {
            let flags = Flags {
                more: false,
                starts: i == 0,
            };
            encode_frame(&mut out, base + i as u64, p, flags);
            ends.push(out.len());
        }
        (out, ends)
    }

    /// A compacted segment with frames numbered `seqs`, covering up to `end`.
    fn compacted(base: u64, end: u64, seqs: &[u64]) -> Vec<u8> {
        let block = Block {
            generation: 3,
            end_seq: end,
        };
        let mut out = encode_compacted_header(base, block).to_vec();
        for (i, &seq) in seqs.iter().enumerate() {
            let flags = Flags {
                more: false,
                starts: i == 0,
            };
            encode_frame(&mut out, seq, &[seq as u8; 5], flags);
        }
        out
    }

    #[test]
    fn a_compacted_segment_has_gaps_below_its_end_and_nothing_else() {
        let bytes = compacted(10, 40, &[10, 13, 14, 39]);
        assert_eq!(
            decode_block(&bytes, 10),
            Ok(Block {
                generation: 3,
                end_seq: 40
            })
        );
        let mut seen = vec![];
        let scan = scan_segment(&bytes, 10, |seq, _, _| seen.push(seq));
        assert_eq!(seen, [10, 13, 14, 39]);
        assert_eq!(scan.damage, None);
        assert_eq!((scan.first_seq, scan.last_seq), (Some(10), Some(39)));
        assert_eq!(scan.valid_end, bytes.len());
        // With no frame at all it still covers its range.
        let empty = scan_segment(&compacted(10, 40, &[]), 10, |_, _, _| {});
        assert_eq!((empty.records, empty.damage), (0, None));
        // A number at or past the end, or one that goes back, is damage.
        for seqs in [&[10, 40][..], &[12, 11], &[9]] {
            let scan = scan_segment(&compacted(10, 40, seqs), 10, |_, _, _| {});
            assert!(
                matches!(scan.damage.map(|d| d.kind), Some(DamageKind::SeqGap { .. })),
                "{seqs:?}"
            );
        }
        // A segment the writer wrote allows no gap.
        let mut plain = encode_header(10).to_vec();
        encode_frame(&mut plain, 10, b"a", Flags::default());
        encode_frame(&mut plain, 12, b"b", Flags::default());
        let scan = scan_segment(&plain, 10, |_, _, _| {});
        assert_eq!(
            scan.damage.map(|d| d.kind),
            Some(DamageKind::SeqGap {
                expected: 11,
                found: 12
            })
        );
        // The block is checked.
        let mut bad = compacted(10, 40, &[10]);
        bad[HEADER_LEN + 9] ^= 1;
        assert!(decode_block(&bad, 10).is_err());
        assert!(decode_block(&compacted(10, 5, &[]), 10).is_err());
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(42);
        let header = Header {
            base_seq: 42,
            version: FORMAT_VERSION,
        };
        assert_eq!(decode_header(&h), Ok(header));
        let v1 = encode_header_version(42, 1);
        assert_eq!(decode_header(&v1).map(|h| h.version), Ok(1));
        assert_eq!(
            decode_header(&encode_header_version(42, 4)),
            Err(HeaderError::UnknownVersion(4))
        );
        assert_eq!(decode_header(&h[..10]), Err(HeaderError::TooShort(10)));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(decode_header(&bad), Err(HeaderError::BadChecksum));
        bad = h;
        bad[0] = b'X';
        assert_eq!(decode_header(&bad), Err(HeaderError::BadMagic));
    }

    #[test]
    fn clean_segment_visits_all_in_order() {
        let batches = vec![vec![b"a".to_vec()], vec![b"bb".to_vec(), b"ccc".to_vec()]];
        let (bytes, ends) = segment(10, &batches);
        let mut seen = vec![];
        let scan = scan_segment(&bytes, 10, |seq, _, p| seen.push((seq, p.to_vec())));
        assert_eq!(scan.damage, None);
        assert_eq!(scan.valid_end, *ends.last().unwrap());
        assert_eq!(scan.last_seq, Some(12));
        assert_eq!(
            seen,
            vec![
                (10, b"a".to_vec()),
                (11, b"bb".to_vec()),
                (12, b"ccc".to_vec())
            ]
        );
    }

    #[test]
    fn unfinished_batch_is_not_visited() {
        let (mut bytes, ends) = segment(
            0,
            &[vec![b"a".to_vec()], vec![b"b".to_vec(), b"c".to_vec()]],
        );
        // Cut right after the first frame of the second batch.
        let first_of_second = ends[0] + FRAME_HEADER_LEN + 1;
        bytes.truncate(first_of_second);
        let mut n = 0;
        let scan = scan_segment(&bytes, 0, |_, _, _| n += 1);
        assert_eq!(n, 1);
        assert_eq!(scan.valid_end, ends[0]);
        assert_eq!(
            scan.damage,
            Some(Damage {
                offset: ends[0],
                bad_at: first_of_second,
                kind: DamageKind::UnfinishedBatch,
                valid_after: false,
                write_after: false,
            })
        );
    }

    #[test]
    fn zero_fill_and_seq_gap_are_classified() {
        let (mut bytes, ends) = segment(0, &[vec![b"a".to_vec()]]);
        bytes.extend_from_slice(&[0u8; 100]);
        let scan = scan_segment(&bytes, 0, |_, _, _| {});
        assert_eq!(
            scan.damage.unwrap().kind,
            DamageKind::Frame(FrameError::ZeroFill)
        );
        let (gap, _) = segment(5, &[vec![b"a".to_vec()]]);
        let scan = scan_segment(&gap, 0, |_, _, _| {});
        assert_eq!(
            scan.damage.unwrap().kind,
            DamageKind::SeqGap {
                expected: 0,
                found: 5
            }
        );
        assert_eq!(ends.len(), 1);
    }

    #[test]
    fn damage_followed_by_valid_frames_is_flagged() {
        let batches: Vec<_> = (0..5).map(|i| vec![vec![i as u8; 20]]).collect();
        let (mut bytes, ends) = segment(0, &batches);
        bytes[ends[1] + FRAME_HEADER_LEN + 3] ^= 0xff; // inside frame 2's payload
        let scan = scan_segment(&bytes, 0, |_, _, _| {});
        let damage = scan.damage.unwrap();
        assert_eq!(damage.offset, ends[1]);
        assert!(damage.valid_after);
        // Each batch was its own write: the later writes vouch for it.
        assert!(damage.write_after);
        assert_eq!(scan.records, 2);
    }

    #[test]
    fn damage_followed_only_by_the_rest_of_its_write_has_no_write_after() {
        let payloads: Vec<_> = (0..5).map(|i| vec![i as u8; 20]).collect();
        let (mut bytes, ends) = one_write(0, &payloads);
        let clean = scan_segment(&bytes, 0, |_, _, _| {});
        assert_eq!(clean.last_write_start, Some(HEADER_LEN));
        // A page of the write's middle never reached the disk.
        bytes[ends[1]..ends[2]].fill(0);
        let scan = scan_segment(&bytes, 0, |_, _, _| {});
        let damage = scan.damage.unwrap();
        assert_eq!(damage.offset, ends[1]);
        assert!(damage.valid_after);
        assert!(!damage.write_after);
        assert_eq!(scan.last_write_start, Some(HEADER_LEN));
    }

    #[test]
    fn last_write_start_is_the_last_kept_mark() {
        let batches: Vec<_> = (0..3).map(|i| vec![vec![i as u8; 20]]).collect();
        let (bytes, ends) = segment(0, &batches);
        let scan = scan_segment(&bytes, 0, |_, _, _| {});
        assert_eq!(scan.last_write_start, Some(ends[1]));
        // A write cut short is not kept, nor is its mark.
        let scan = scan_segment(&bytes[..ends[2] - 1], 0, |_, _, _| {});
        assert_eq!(scan.last_write_start, Some(ends[0]));
    }

    #[test]
    fn resync_finds_the_next_frame_in_range_past_damage() {
        let batches: Vec<_> = (0..4).map(|i| vec![vec![i as u8; 20]]).collect();
        let (mut bytes, ends) = segment(0, &batches);
        bytes[ends[0] + FRAME_HEADER_LEN + 3] ^= 0xff; // inside frame 1's payload
        let next = resync(&bytes, ends[0], 0..=u64::MAX).unwrap();
        assert_eq!((next.seq, next.end), (2, ends[2]));
        assert_eq!(resync(&bytes, ends[0], 3..=3).unwrap().seq, 3);
        assert_eq!(resync(&bytes, ends[0], 9..=u64::MAX), None);
    }

    proptest! {
        #[test]
        fn frames_round_trip(payloads in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 1..300), 1..20)) {
            let batches: Vec<_> = payloads.iter().map(|p| vec![p.clone()]).collect();
            let (bytes, _) = segment(7, &batches);
            let mut seen = vec![];
            let scan = scan_segment(&bytes, 7, |_, _, p| seen.push(p.to_vec()));
            prop_assert_eq!(scan.damage, None);
            prop_assert_eq!(seen, payloads);
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048), at in 0usize..2100) {
            let _ = decode_frame(&bytes, at);
            let _ = decode_header(&bytes);
            let _ = scan_segment(&bytes, 0, |_, _, _| {});
        }
    }
}
