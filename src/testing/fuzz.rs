//! The properties the fuzz targets check, one function per target, so that
//! libFuzzer (`fuzz/fuzz_targets/`, nightly) and `cargo test`
//! (`tests/fuzz_corpora.rs`, which replays the committed corpora in
//! `fuzz/corpus/`) run the very same checks. Each panics when its property
//! does not hold for `data`.

use crate::hasura::{self, Command, Endpoint};
use crate::log::frame;
use crate::record::{Record, UnixMicros};
use crate::webhook;

/// The frame decoder and segment scanner on arbitrary bytes: never panic,
/// never read out of bounds, and whatever the scan keeps decodes again.
pub fn frame(data: &[u8]) {
    let _ = frame::decode_header(data);
    let mut kept = Vec::new();
    let scan = frame::scan_segment(data, 1, |seq, offset, payload| {
        kept.push((seq, offset, payload.len()));
    });
    assert!(scan.valid_end <= data.len().max(frame::HEADER_LEN));
    for (seq, offset, len) in kept {
        let f = frame::decode_frame(data, offset).expect("a kept frame decodes");
        assert_eq!((f.seq, f.payload.len()), (seq, len));
        assert!(f.end <= scan.valid_end);
    }
    for at in 0..data.len().min(64) {
        let _ = frame::decode_frame(data, at);
    }
}

/// The record decoder on arbitrary bytes: never panic, and a record that
/// decodes encodes back to bytes that decode to it.
pub fn record(data: &[u8]) {
    if let Ok(record) = Record::decode(data) {
        let bytes = record.encode().expect("a decoded record encodes");
        assert_eq!(Record::decode(&bytes).expect("re-decodes"), record);
    }
}

/// The metadata API parser on arbitrary bodies: never panic; every refusal
/// is a well-formed Hasura error; every accepted create renders a webhook
/// body that is JSON.
pub fn api_request(data: &[u8]) {
    for endpoint in [Endpoint::Metadata, Endpoint::Query] {
        match hasura::parse_request(data, endpoint) {
            Ok(Command::CreateScheduledEvent(new)) => {
                let record = new.into_record(uuid::Uuid::nil(), UnixMicros(0));
                let body = webhook::webhook_body(&record);
                // Its syntax only: `Value` would refuse JSON whose object
                // has serde_json's raw-value marker as a key (see
                // `hasura::render::json_or_text`).
                serde_json::from_str::<serde::de::IgnoredAny>(&body).expect("webhook body is JSON");
            }
            Ok(_) => {}
            Err(e) => {
                assert!(e.path.starts_with('$'), "path {:?}", e.path);
                assert!((400..600).contains(&e.status));
            }
        }
    }
}

/// One target's check: panics when its property fails for the input.
pub type Check = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/Cargo.toml` names them.
pub const TARGETS: [(&str, Check); 3] = [
    ("frame", frame),
    ("record", record),
    ("api_request", api_request),
];
