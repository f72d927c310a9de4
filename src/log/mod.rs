//! The segmented append-only log (work in progress).

/// Where a record lives in the log: the segment's ordinal (0 for the oldest
/// segment, counting up) and the byte offset of its frame in that segment.
/// Kept small because projections hold one per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub segment: u32,
    pub offset: u32,
}
