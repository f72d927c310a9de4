//! The record decoder on arbitrary bytes: never panic, and a record that
//! decodes encodes back to the same bytes.
#![no_main]

use chime::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        let bytes = record.encode().expect("a decoded record encodes");
        assert_eq!(Record::decode(&bytes).expect("re-decodes"), record);
    }
});
