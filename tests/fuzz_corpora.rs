//! The committed fuzz corpora (`fuzz/corpus/<target>/`), replayed through
//! the same checks libFuzzer runs (`chime::testing::fuzz`), so that every
//! `cargo test` holds the decoders and the API parser to what fuzzing
//! found, without nightly or libFuzzer.

use std::path::PathBuf;

#[test]
fn every_committed_fuzz_input_passes_its_targets_check() {
    let corpora = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, check) in chime::testing::fuzz::TARGETS {
        let dir = corpora.join(target);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        // An emptied or misnamed corpus would make this test pass on nothing.
        assert!(inputs.len() >= 10, "{target}: only {} inputs", inputs.len());
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails its check",
                input.display()
            );
        }
    }
}
