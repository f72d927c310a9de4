//! The frame decoder and segment scanner on arbitrary bytes: never panic,
//! never read out of bounds, and whatever the scan keeps must decode again.
#![no_main]

use chime::log::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
