//! The recovery table of docs/log-format.md, row by row, where `tests/log.rs`
//! left a row untested: what `Log::open` (and `chime serve`, through the
//! binary) does with a gap between segments, a bad segment file name, a
//! header that disagrees with its name, an unknown format version, a
//! zero-filled tail, and multi-frame batches cut at every offset.

use std::path::{Path, PathBuf};

use chime::log::frame::encode_header;
use chime::log::{Log, LogError, LogOptions};
use chime::record::{EventId, Record, UnixMicros, fixtures};
use chime::testing::{ChildServer, eventually, replay_all, serve_to_exit};

fn opts(segment_bytes: u64) -> LogOptions {
    LogOptions::with_segment_bytes(segment_bytes)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Every file in `dir` with its bytes: what a refusal must leave as it was.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let p = e.expect("entry").path();
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect();
    v.sort();
    v
}

/// Record `i`, encoded: real records, so that `chime serve` can replay the
/// logs built here. Due in 2100, so nothing is sent.
fn payload(i: usize) -> Vec<u8> {
    let event = fixtures::event(
        EventId::from_u128(i as u128 + 1),
        format!("http://127.0.0.1:9/hook/{i}"),
        UnixMicros(4_102_444_800_000_000),
    );
    Record::EventCreated(event).encode().expect("encode")
}

/// A log in `dir` of 40 single-record batches in segments of 300 bytes
/// (several segments), returning the records.
fn several_segments(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let (log, _) = Log::open(dir, &opts(300)).expect("open");
    for i in 0..40 {
        log.append_blocking(vec![payload(i)]).expect("append");
    }
    let all = replay_all(&log);
    assert!(segments(dir).len() >= 4, "{:?}", segments(dir));
    all
}

/// Opens `dir`, expecting a refusal; checks that it names `path` at
/// `offset` with a reason containing `reason`, and that nothing changed.
fn assert_refused(dir: &Path, path: &Path, offset: u64, reason: &str) {
    let before = snapshot(dir);
    let err = Log::open(dir, &opts(300)).err().expect("must refuse");
    match &err {
        LogError::Corruption {
            path: p,
            offset: o,
            reason: r,
        } => {
            assert_eq!(p, path, "{err}");
            assert_eq!(*o, offset, "{err}");
            assert!(r.contains(reason), "{err}");
        }
        other => panic!("expected a corruption, got {other}"),
    }
    let msg = err.to_string();
    let name = path.file_name().expect("name").to_string_lossy();
    assert!(msg.starts_with("corrupt log: "), "{msg}");
    assert!(msg.contains(&*name), "{msg}");
    assert!(msg.contains(&format!("at byte {offset}")), "{msg}");
    assert_eq!(snapshot(dir), before, "a refusal changes nothing");
}

#[test]
fn a_gap_between_segments_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    several_segments(dir);
    let segs = segments(dir);
    std::fs::remove_file(&segs[1]).expect("remove a middle segment");
    assert_refused(dir, &segs[2], 16, "segment starts at sequence number");
}

#[test]
fn a_segment_file_name_that_is_not_a_20_digit_number_is_refused() {
    for name in [
        "1.seg",
        "0000000000000000000x.seg",
        "000000000000000000001.seg",
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        several_segments(dir);
        let bad = dir.join(name);
        std::fs::write(&bad, encode_header(1)).expect("write");
        assert_refused(
            dir,
            &bad,
            0,
            "segment file name is not a 20-digit sequence number",
        );
    }
}

#[test]
fn a_header_whose_base_disagrees_with_the_file_name_is_refused() {
    for which in [1, usize::MAX] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        several_segments(dir);
        let segs = segments(dir);
        // A sealed segment and the active (last) one.
        let seg = &segs[which.min(segs.len() - 1)];
        let mut bytes = std::fs::read(seg).expect("read");
        // A whole, valid header, for another base.
        bytes[..32].copy_from_slice(&encode_header(999));
        std::fs::write(seg, &bytes).expect("write");
        assert_refused(
            dir,
            seg,
            16,
            "header says base sequence number 999, file name says",
        );
    }
}

#[test]
fn an_unknown_format_version_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    several_segments(dir);
    let segs = segments(dir);
    let seg = segs.last().expect("a segment");
    let mut bytes = std::fs::read(seg).expect("read");
    // Version 4 with a checksum that matches it: only the version is wrong.
    bytes[8..12].copy_from_slice(&4u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(seg, &bytes).expect("write");
    assert_refused(dir, seg, 0, "segment format version 4 is not known");
}

/// Version 3 is a compacted segment, whose header is followed by a
/// compaction block: a segment that says version 3 without one is refused
/// where the block should be.
#[test]
fn a_compacted_segment_without_its_compaction_block_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    several_segments(dir);
    let segs = segments(dir);
    let seg = &segs[1];
    let mut bytes = std::fs::read(seg).expect("read");
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(seg, &bytes).expect("write");
    assert_refused(dir, seg, 32, "compaction block");
}

/// A power loss after the file's length reached the disk but not its data
/// leaves zeros past the last batch: a torn tail, cut and kept aside.
#[test]
fn a_zero_filled_tail_is_cut_through_log_open_and_kept_aside() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let want = several_segments(dir);
    let seg = segments(dir).pop().expect("a segment");
    let len = std::fs::metadata(&seg).expect("stat").len();
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes.extend(std::iter::repeat_n(0u8, 1000));
    std::fs::write(&seg, &bytes).expect("write");

    let (log, recovery) = Log::open(dir, &opts(300)).expect("open");
    assert_eq!(recovery.truncated, Some((seg.clone(), 1000)));
    assert_eq!(recovery.records, want.len() as u64);
    let copy = recovery.torn_copy.clone().expect("kept aside");
    assert_eq!(std::fs::read(&copy).expect("copy"), vec![0u8; 1000]);
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), len);
    assert_eq!(replay_all(&log), want);
    let next = log.append_blocking(vec![b"next".to_vec()]).expect("append");
    assert_eq!(next[0].seq, want.len() as u64 + 1);
}

/// Batches of several frames, the file cut at every byte past the header:
/// recovery keeps exactly the batches wholly before the cut and drops a
/// batch whose later frames are missing, even when its first frames are
/// whole.
#[test]
fn multi_frame_batches_cut_at_every_offset_keep_whole_batches_only() {
    let src = tempfile::tempdir().expect("tempdir");
    let sizes = [1usize, 3, 2, 4, 1, 5];
    let mut batches = vec![];
    let mut ends = vec![];
    {
        let (log, _) = Log::open(src.path(), &opts(1 << 20)).expect("open");
        let mut n = 0;
        for &size in &sizes {
            // Short payloads keep the offsets (each a recovery with its
            // fsyncs) few; the log does not decode them.
            let batch: Vec<Vec<u8>> = (0..size)
                .map(|i| format!("p{}", n + i).into_bytes())
                .collect();
            n += size;
            log.append_blocking(batch.clone()).expect("append");
            let seg = &segments(src.path())[0];
            ends.push(std::fs::metadata(seg).expect("stat").len() as usize);
            batches.push(batch);
        }
    }
    let seg = segments(src.path())[0].clone();
    let name = seg.file_name().expect("name").to_owned();
    let full = std::fs::read(&seg).expect("read");
    assert_eq!(*ends.last().expect("ends"), full.len());
    for cut in 32..=full.len() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join(&name), &full[..cut]).expect("write");
        let (log, recovery) = Log::open(tmp.path(), &opts(1 << 20)).expect("open");
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        let want: Vec<(u64, Vec<u8>)> = batches[..whole]
            .iter()
            .flatten()
            .cloned()
            .enumerate()
            .map(|(i, p)| (i as u64 + 1, p))
            .collect();
        assert_eq!(replay_all(&log), want, "cut at {cut}");
        let kept = if whole == 0 { 32 } else { ends[whole - 1] };
        let dropped = (cut - kept) as u64;
        let expected = (dropped > 0).then(|| (tmp.path().join(&name), dropped));
        assert_eq!(recovery.truncated, expected, "cut at {cut}");
    }
}

/// Writes the log of data directory `data` (40 records, small segments).
fn data_dir_with_log(data: &Path) -> PathBuf {
    let log_dir = chime::datadir::log_dir(data);
    several_segments(&log_dir);
    log_dir
}

/// `chime serve` logs the torn tail it cuts: the segment, how many bytes it
/// dropped, and where they are kept.
#[test]
fn serve_warns_of_a_torn_tail_with_the_bytes_dropped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log_dir = data_dir_with_log(tmp.path());
    let seg = segments(&log_dir).pop().expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let len = bytes.len();
    bytes.extend(std::iter::repeat_n(0u8, 777));
    std::fs::write(&seg, &bytes).expect("write");

    let mut server = ChildServer::start(tmp.path(), &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let warning = rt.block_on(eventually("serve warns of the torn tail", || {
        let err = server.stderr();
        async move {
            err.lines()
                .find(|l| l.contains("cut a torn tail"))
                .map(str::to_owned)
        }
    }));
    server.kill();
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("dropped_bytes=777"), "{warning}");
    assert!(warning.contains(&format!("kept_bytes={len}")), "{warning}");
    assert!(warning.contains(&seg.display().to_string()), "{warning}");
    assert!(warning.contains(&format!(".torn-{len}")), "{warning}");
}

/// `chime serve` on a log recovery refuses: exit status 2 and one line on
/// stderr naming the file and byte, for each kind of refused damage.
#[test]
fn serve_refuses_a_damaged_log_with_exit_2_and_the_place() {
    type Damage = fn(&Path) -> (PathBuf, u64);
    let damages: [(&str, Damage); 4] = [
        ("a flipped byte in a sealed segment", |log| {
            let seg = segments(log)[1].clone();
            let mut bytes = std::fs::read(&seg).expect("read");
            bytes[32 + 16 + 2] ^= 1;
            std::fs::write(&seg, &bytes).expect("write");
            (seg, 32)
        }),
        ("a gap between segments", |log| {
            let segs = segments(log);
            std::fs::remove_file(&segs[1]).expect("remove");
            (segs[2].clone(), 16)
        }),
        ("a bad segment file name", |log| {
            let bad = log.join("7.seg");
            std::fs::write(&bad, encode_header(7)).expect("write");
            (bad, 0)
        }),
        ("a header for another base", |log| {
            let seg = segments(log)[2].clone();
            let mut bytes = std::fs::read(&seg).expect("read");
            bytes[..32].copy_from_slice(&encode_header(999));
            std::fs::write(&seg, &bytes).expect("write");
            (seg, 16)
        }),
    ];
    for (what, damage) in damages {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log_dir = data_dir_with_log(tmp.path());
        let (path, offset) = damage(&log_dir);
        let before = snapshot(&log_dir);
        let (status, stderr) = serve_to_exit(tmp.path(), &[]);
        assert_eq!(status.code(), Some(2), "{what}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("chime serve: "))
            .unwrap_or_else(|| panic!("{what}: no error line in {stderr}"));
        assert!(line.contains("corrupt log: "), "{what}: {line}");
        assert!(
            line.contains(&format!("{} at byte {offset}", path.display())),
            "{what}: {line}"
        );
        assert_eq!(snapshot(&log_dir), before, "{what}: nothing changed");
    }
}
