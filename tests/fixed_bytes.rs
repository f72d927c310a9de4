//! Fixed bytes: logs whose bytes do not come from today's encoder, so a
//! change that alters the encoder and the decoder alike (and so passes
//! every round trip) still fails here instead of silently breaking the data
//! directories already on disk.
//!
//! - `tests/fixtures/v1-datadir/` is a data directory written once, by the
//!   build of 2026-12-02 (segment format 1, record schema 1), holding every
//!   record kind of that schema (in single and multi-record batches, over
//!   several segments). It is decoded here and compared with
//!   [`v1_records`], a hand-written list.
//! - `tests/fixtures/v2-datadir/` is the same for segment format 2 and
//!   record schema 2 (`retry_conf` spans to the microsecond), compared with
//!   [`v2_records`].
//! - `tests/fixtures/v3-datadir/` is the same for record schema 3
//!   (`retry_conf` with backoff), compared with [`v3_records`]. To write
//!   the newest one again, or a new one when a format version changes
//!   (into a new `vN-datadir/`, keeping the old ones): `cargo test --test
//!   fixed_bytes -- --ignored write_the_fixture`.
//! - Every fixture record's [`Head`], as replay decodes it from the bytes,
//!   is the head of the record decoded whole.
//! - Segment headers and frames are built byte by byte from the grammar in
//!   docs/log-format.md (checksums with crc32fast), and records from
//!   postcard's rules, then read by the log and the record decoder.

use std::path::{Path, PathBuf};

use chime::log::{Log, LogOptions};
use chime::record::{
    Backoff, EventCreated, EventId, Head, HeaderConf, HeaderSource, Invocation, InvocationResponse,
    Record, RecordKind, RetryConf, Seconds, UnixMicros,
};
use chime::testing::replay_all;

/// The committed fixture data directory of format version 1.
fn v1_datadir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-datadir")
}

/// The committed fixture data directory of format version 2.
fn v2_datadir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2-datadir")
}

/// The committed fixture data directory of segment format 2 and record
/// schema 3, which this build writes.
fn v3_datadir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3-datadir")
}

/// The record kinds there were when the v1 fixture was written: kinds
/// added since come at the end of `Record` (docs/log-format.md), each
/// checked by hand-built bytes after the fixture's records
/// ([`a_retirement_by_hand_reads_after_the_v1_records`]) and in the v2
/// fixture.
const V1_KINDS: usize = 7;

/// The fixture's segment size: small, so its records span several segments.
const V1_SEGMENT_BYTES: u64 = 512;

/// 2030-01-01T00:00:00Z plus `s` seconds, in microseconds.
fn t(s: i64) -> UnixMicros {
    UnixMicros(1_893_456_000_000_000 + s * 1_000_000)
}

fn id(n: u128) -> EventId {
    EventId::from_u128(0x0e00_0000 + n)
}

fn attempt(n: u128) -> EventId {
    EventId::from_u128(0x0a00_0000 + n)
}

fn created(n: u128, payload: &str, headers: Vec<HeaderConf>, comment: Option<&str>) -> Record {
    Record::EventCreated(EventCreated {
        event_id: id(n),
        webhook: format!("http://127.0.0.1:9/hook/{n}?k={{{{HOOK_KEY}}}}"),
        schedule_at: t(n as i64 * 60),
        payload: payload.into(),
        headers,
        retry_conf: RetryConf {
            num_retries: 2,
            retry_interval_seconds: Seconds::whole(30),
            timeout_seconds: Seconds::whole(5),
            tolerance_seconds: Seconds::whole(3600),
            ..RetryConf::default()
        },
        comment: comment.map(str::to_owned),
        created_at: t(n as i64),
    })
}

fn invocation(response: InvocationResponse) -> Invocation {
    Invocation {
        request_body: r#"{"payload":{"n":1},"comment":null}"#.into(),
        request_headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-literal".into(), "v".into()),
        ],
        response,
    }
}

/// What the v1 fixture holds, batch by batch: written by hand, never
/// derived from an encoder.
fn v1_records() -> Vec<Vec<Record>> {
    let both_headers = vec![
        HeaderConf {
            name: "x-literal".into(),
            value: HeaderSource::Value("v".into()),
        },
        HeaderConf {
            name: "x-secret".into(),
            value: HeaderSource::FromEnv("HOOK_SECRET".into()),
        },
    ];
    vec![
        vec![created(
            1,
            r#"{"n":1,"price":1.50,"tags":["a","b"],"é":"ü"}"#,
            both_headers,
            Some("first"),
        )],
        // A bulk create: one batch of three.
        vec![
            created(2, "null", vec![], None),
            created(3, "[1,2,3]", vec![], Some("")),
            created(4, r#""just a string""#, vec![], None),
        ],
        vec![Record::AttemptStarted {
            event_id: id(1),
            attempt_id: attempt(1),
            at: t(61),
        }],
        vec![Record::AttemptSucceeded {
            event_id: id(1),
            attempt_id: attempt(1),
            at: t(62),
            invocation: invocation(InvocationResponse::Webhook {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: b"{\"ok\":true}\xff".to_vec(),
                truncated: false,
            }),
        }],
        vec![Record::AttemptStarted {
            event_id: id(2),
            attempt_id: attempt(2),
            at: t(121),
        }],
        vec![Record::AttemptFailed {
            event_id: id(2),
            attempt_id: attempt(2),
            at: t(122),
            invocation: invocation(InvocationResponse::Webhook {
                status: 503,
                headers: vec![("retry-after".into(), "10".into())],
                body: vec![b'x'; 40],
                truncated: true,
            }),
            next_retry_at: Some(t(152)),
        }],
        vec![Record::AttemptStarted {
            event_id: id(2),
            attempt_id: attempt(3),
            at: t(152),
        }],
        vec![Record::AttemptFailed {
            event_id: id(2),
            attempt_id: attempt(3),
            at: t(153),
            invocation: invocation(InvocationResponse::ClientError {
                message: "connection refused".into(),
            }),
            next_retry_at: None,
        }],
        vec![Record::AttemptStarted {
            event_id: id(3),
            attempt_id: attempt(4),
            at: t(181),
        }],
        vec![Record::AttemptInterrupted {
            event_id: id(3),
            attempt_id: attempt(4),
            at: t(190),
            give_up: false,
            reason: "chime stopped during the attempt".into(),
        }],
        vec![Record::AttemptStarted {
            event_id: id(3),
            attempt_id: attempt(5),
            at: t(190),
        }],
        vec![Record::AttemptInterrupted {
            event_id: id(3),
            attempt_id: attempt(5),
            at: t(191),
            give_up: true,
            reason: "interrupted 3 times".into(),
        }],
        vec![Record::EventExpired {
            event_id: id(4),
            at: t(4000),
        }],
        vec![
            created(5, "{}", vec![], None),
            Record::EventCancelled {
                event_id: id(5),
                at: t(-1),
            },
        ],
    ]
}

/// What the v2 fixture holds: the v1 list, with fractional `retry_conf`
/// spans on the first event (which schema 1 could not hold), then a
/// retirement (a kind schema 1 did not have).
fn v2_records() -> Vec<Vec<Record>> {
    let mut batches = v1_records();
    batches.push(vec![Record::EventsRetired {
        finished_before: t(100),
        at: t(5000),
    }]);
    let Record::EventCreated(first) = &mut batches[0][0] else {
        unreachable!("the list starts with a create");
    };
    first.retry_conf = RetryConf {
        num_retries: 2,
        retry_interval_seconds: Seconds::from_micros(1_500_000),
        timeout_seconds: Seconds::from_micros(250_000),
        tolerance_seconds: Seconds::from_micros(3_600_000_001),
        ..RetryConf::default()
    };
    batches
}

/// The v2 records, the first create with exponential backoff (what schema
/// 3 added).
fn v3_records() -> Vec<Vec<Record>> {
    let mut batches = v2_records();
    let Record::EventCreated(first) = &mut batches[0][0] else {
        unreachable!("the list starts with a create");
    };
    first.retry_conf.backoff = Backoff::Exponential;
    first.retry_conf.max_retry_interval_seconds = Seconds::from_micros(90_500_000);
    batches
}

/// Copies the fixture's files into a fresh directory: the committed bytes
/// are never opened for writing.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// `EventsRetired`, added after the fixture: its bytes by postcard's rules
/// (schema 2, variant 7, two zig-zag varints), appended to a copy of the fixture, read
/// back after the fixture's records.
#[test]
fn a_retirement_by_hand_reads_after_the_v1_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&v1_datadir(), tmp.path());
    let log_dir = chime::datadir::log_dir(tmp.path());
    let (log, _) =
        Log::open(&log_dir, &LogOptions::with_segment_bytes(V1_SEGMENT_BYTES)).expect("open");
    // Schema 2 (the kind came with it; a schema 1 record of variant 7 is
    // refused), variant 7, finished_before = -1 (zig-zag 1), at = 64
    // (zig-zag 128: 0x80 0x01).
    log.append_blocking(vec![vec![2, 7, 1, 0x80, 0x01]])
        .expect("append");
    drop(log);
    let found = chime::testing::records_in(tmp.path());
    let want: Vec<Record> = v1_records().into_iter().flatten().collect();
    assert_eq!(found.len(), want.len() + 1);
    assert_eq!(
        found.last().map(|(_, r)| r.clone()),
        Some(Record::EventsRetired {
            finished_before: UnixMicros(-1),
            at: UnixMicros(64),
        })
    );
    assert_eq!(RecordKind::ALL[V1_KINDS], RecordKind::EventsRetired);
}

/// Writes `tests/fixtures/v3-datadir/` with today's build. Ignored: the
/// fixture is written once and committed; see the module docs.
#[test]
#[ignore = "writes the committed fixture; run by hand only"]
fn write_the_fixture() {
    let root = v3_datadir();
    let log_dir = chime::datadir::log_dir(&root);
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir).expect("remove the old fixture");
    }
    let (log, _) =
        Log::open(&log_dir, &LogOptions::with_segment_bytes(V1_SEGMENT_BYTES)).expect("open");
    for batch in v3_records() {
        let payloads = batch.iter().map(|r| r.encode().expect("encode")).collect();
        log.append_blocking(payloads).expect("append");
    }
}

/// Decodes a committed fixture read-only, straight from its files, checks
/// it against `want` (which holds `kinds` record kinds), and returns its
/// segment file names.
fn check_fixture(root: &Path, want: &[Record], kinds: usize) -> Vec<String> {
    let found_kinds: std::collections::BTreeSet<RecordKind> =
        want.iter().map(Record::kind).collect();
    assert_eq!(
        found_kinds.len(),
        kinds,
        "every record kind is in the fixture"
    );

    let found = chime::testing::records_in(root);
    let seqs: Vec<u64> = found.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=want.len() as u64).collect::<Vec<_>>());
    let records: Vec<Record> = found.into_iter().map(|(_, r)| r).collect();
    assert_eq!(records.len(), want.len());
    for (i, (_, bytes)) in read_payloads(root).iter().enumerate() {
        assert_eq!(
            Head::decode(bytes).expect("a head"),
            Head::of(&records[i]),
            "record {}",
            i + 1
        );
    }
    for (i, (got, want)) in records.iter().zip(want).enumerate() {
        assert_eq!(got, want, "record {}", i + 1);
    }

    // The segment files the fixture was written as.
    let log_dir = chime::datadir::log_dir(root);
    let mut names: Vec<String> = std::fs::read_dir(&log_dir)
        .expect("fixture log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 3, "several segments: {names:?}");
    assert_eq!(names[0], "00000000000000000001.seg");
    for name in &names {
        assert!(name.ends_with(".seg") && name.len() == 24, "{name}");
    }
    names
}

/// Every record's payload bytes in the fixture at `root`, read-only.
fn read_payloads(root: &Path) -> Vec<(u64, Vec<u8>)> {
    let scan = chime::log::DirScan::read(&chime::datadir::log_dir(root)).expect("scan");
    let mut out = vec![];
    scan.for_each(|e| {
        out.push((e.seq, e.payload.to_vec()));
        Ok::<(), ()>(())
    })
    .expect("walk");
    out
}

#[test]
fn the_v3_fixture_data_dir_decodes_to_the_hand_written_records() {
    let want: Vec<Record> = v3_records().into_iter().flatten().collect();
    for name in check_fixture(&v3_datadir(), &want, RecordKind::ALL.len()) {
        let bytes = std::fs::read(chime::datadir::log_dir(&v3_datadir()).join(&name))
            .expect("a fixture segment");
        assert_eq!(bytes[8..12], 2u32.to_le_bytes(), "{name} is format 2");
    }
    let payloads = read_payloads(&v3_datadir());
    assert!(payloads.iter().all(|(_, p)| p[0] == 3), "schema 3 records");
}

#[test]
fn the_v2_fixture_data_dir_decodes_to_the_hand_written_records() {
    let want: Vec<Record> = v2_records().into_iter().flatten().collect();
    for name in check_fixture(&v2_datadir(), &want, RecordKind::ALL.len()) {
        let bytes = std::fs::read(chime::datadir::log_dir(&v2_datadir()).join(&name))
            .expect("a fixture segment");
        assert_eq!(bytes[8..12], 2u32.to_le_bytes(), "{name} is format 2");
    }
}

#[test]
fn the_v1_fixture_data_dir_decodes_to_the_hand_written_records() {
    let want: Vec<Record> = v1_records().into_iter().flatten().collect();
    let names = check_fixture(&v1_datadir(), &want, V1_KINDS);

    // A copy opens as a log with nothing to recover and takes appends after.
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&v1_datadir(), tmp.path());
    let (log, recovery) = Log::open(
        &chime::datadir::log_dir(tmp.path()),
        &LogOptions::with_segment_bytes(V1_SEGMENT_BYTES),
    )
    .expect("the fixture opens");
    assert_eq!(recovery.records, want.len() as u64);
    assert_eq!(recovery.truncated, None);
    // Appends go into a new segment of this build's version after the
    // version 1 ones, so that its writes carry the `starts` mark.
    assert_eq!(recovery.segments, names.len() + 1);
    let next = log
        .append_blocking(vec![b"after".to_vec()])
        .expect("append");
    assert_eq!(next[0].seq, want.len() as u64 + 1);
    drop(log);
    let newest = chime::datadir::log_dir(tmp.path()).join(format!("{:020}.seg", want.len() + 1));
    let mut expected = header(2, want.len() as u64 + 1);
    expected.extend(frame(want.len() as u64 + 1, b"after", false, true));
    assert_eq!(std::fs::read(&newest).expect("the new segment"), expected);
}

// ---------------------------------------------------------------------------
// Bytes by hand, from docs/log-format.md's grammar

/// `header = magic:"CHIMELOG" version:u32 flags:u32 base_seq:u64
///           header_crc:u32 reserved:u32`, little-endian.
fn header(version: u32, base_seq: u64) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"CHIMELOG");
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&base_seq.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(h.len(), 32);
    h
}

/// `frame = len_flags:u32 crc:u32 seq:u64 payload`, with `more` in bit 31,
/// `starts` in bit 30 and `crc = crc32(len_flags ++ seq ++ payload)`.
fn frame(seq: u64, payload: &[u8], more: bool, starts: bool) -> Vec<u8> {
    let len_more =
        payload.len() as u32 | if more { 1 << 31 } else { 0 } | if starts { 1 << 30 } else { 0 };
    let mut covered = Vec::new();
    covered.extend_from_slice(&len_more.to_le_bytes());
    covered.extend_from_slice(&seq.to_le_bytes());
    covered.extend_from_slice(payload);
    let mut f = Vec::new();
    f.extend_from_slice(&len_more.to_le_bytes());
    f.extend_from_slice(&crc32fast::hash(&covered).to_le_bytes());
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// `payload = schema_version:u8 postcard(Record)` for
/// `Record::EventCancelled { event_id, at }`, by postcard's rules: the
/// variant index as a varint (6: the seventh variant), the UUID as a byte
/// string (varint length 16, then its bytes), the microseconds as a
/// zigzag varint.
fn cancelled_payload(event_id: EventId, at: i64) -> Vec<u8> {
    let mut p = vec![1u8, 6, 16];
    p.extend_from_slice(event_id.as_bytes());
    let mut zigzag = ((at << 1) ^ (at >> 63)) as u64;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            p.push(byte);
            break;
        }
        p.push(byte | 0x80);
    }
    p
}

#[test]
fn hand_built_segments_and_frames_are_read_by_the_log_and_the_record_decoder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log_dir = chime::datadir::log_dir(tmp.path());
    std::fs::create_dir_all(&log_dir).expect("mkdir");
    let payloads: Vec<Vec<u8>> = (1..=4)
        .map(|n| cancelled_payload(id(n), 1_893_456_000_000_000 + n as i64))
        .collect();
    // Segment 1, version 1 (no `starts` mark): a batch of one (seq 1), then
    // a batch of two (seq 2 with more = 1, seq 3). Segment 4, version 2: a
    // write of one batch of one (seq 4, marked `starts`).
    let mut first = header(1, 1);
    first.extend(frame(1, &payloads[0], false, false));
    first.extend(frame(2, &payloads[1], true, false));
    first.extend(frame(3, &payloads[2], false, false));
    let mut second = header(2, 4);
    second.extend(frame(4, &payloads[3], false, true));
    std::fs::write(log_dir.join("00000000000000000001.seg"), &first).expect("write");
    std::fs::write(log_dir.join("00000000000000000004.seg"), &second).expect("write");

    let records = chime::testing::records_in(tmp.path());
    let want: Vec<(u64, Record)> = (1..=4)
        .map(|n| {
            (
                n as u64,
                Record::EventCancelled {
                    event_id: id(n),
                    at: UnixMicros(1_893_456_000_000_000 + n as i64),
                },
            )
        })
        .collect();
    assert_eq!(records, want);

    let (log, recovery) = Log::open(&log_dir, &LogOptions::with_segment_bytes(1 << 20))
        .expect("hand-built segments open");
    assert_eq!((recovery.segments, recovery.records), (2, 4));
    assert_eq!(recovery.truncated, None);
    let replayed = replay_all(&log);
    let want: Vec<(u64, Vec<u8>)> = (1..=4).zip(payloads.clone()).collect();
    assert_eq!(replayed, want);
    // The log appends after them, in the grammar's bytes.
    let next = log.append_blocking(vec![b"next".to_vec()]).expect("append");
    assert_eq!(next[0].seq, 5);
    drop(log);
    let written = std::fs::read(log_dir.join("00000000000000000004.seg")).expect("read");
    let mut expected = second.clone();
    expected.extend(frame(5, b"next", false, true));
    assert_eq!(written, expected, "the writer writes the documented bytes");

    // A batch whose last frame still says `more` is torn: the batch of two
    // is dropped whole when its second frame is cut off.
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut torn = header(1, 1);
    torn.extend(frame(1, &payloads[0], false, false));
    torn.extend(frame(2, &payloads[1], true, false));
    std::fs::write(tmp.path().join("00000000000000000001.seg"), &torn).expect("write");
    let (log, recovery) =
        Log::open(tmp.path(), &LogOptions::with_segment_bytes(1 << 20)).expect("open");
    assert_eq!(recovery.records, 1);
    assert_eq!(replay_all(&log), vec![(1, payloads[0].clone())]);
}
