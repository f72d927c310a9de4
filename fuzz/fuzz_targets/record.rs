//! libFuzzer over `chime::testing::fuzz::record`, whose doc says what it
//! checks; `cargo test` replays this target's corpus through the same
//! function (`tests/fuzz_corpora.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chime::testing::fuzz::record(data));
