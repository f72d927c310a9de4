//! Snapshot files under power loss: a power cut at every step of writing a
//! snapshot (create, write, fsync, rename, directory fsync, prune) leaves
//! the store restoring either the new snapshot whole or the one before it,
//! never a damaged or partial one, and never a temporary file.

use std::sync::Arc;

use chime::snapshot::{SnapshotStore, snapshot_dir};
use chime::testing::faultfs::FaultFs;
use chime::testing::{Rng, announce_seed};

#[test]
fn a_power_cut_at_any_step_of_a_snapshot_write_restores_the_old_or_the_new_whole() {
    let seed = announce_seed("CHIME_SNAPSHOT_SEED", "cargo test --test snapshots");
    let mut rng = Rng::new(seed);
    let old: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = (0..30_000u32).map(|i| (i % 241) as u8).collect();
    let mut restored_new = 0;
    let mut restored_old = 0;
    for cut in 0..40u64 {
        for round in 0..4 {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = snapshot_dir(tmp.path());
            let fs = FaultFs::new(rng.below(u64::MAX));
            fs.set_page_size(1024);
            let store = SnapshotStore::open(Arc::new(fs.clone()), &dir).expect("open");
            store.write(10, &old).expect("the old snapshot");
            store.write(5, b"older still").expect("an older one");
            fs.cut_power_after(cut);
            let finished = store.write(20, &new).is_ok() && !fs.is_dead();
            drop(store);
            if round % 2 == 0 {
                fs.crash();
            } else {
                fs.crash_keeping_pages();
            }
            let store = SnapshotStore::open(Arc::new(fs.clone()), &dir).expect("reopen");
            let restored = store
                .restore(|seq, body| Ok((seq, body.to_vec())))
                .expect("restore");
            assert!(
                restored.set_aside.is_empty(),
                "cut {cut}: a snapshot failed its check: {:?}",
                restored.set_aside
            );
            let (seq, (_, body)) = restored.restored.expect("a snapshot is restored");
            match seq {
                20 => {
                    assert_eq!(body, new, "cut {cut}");
                    restored_new += 1;
                }
                10 => {
                    assert!(!finished, "cut {cut}: a finished write was lost");
                    assert_eq!(body, old, "cut {cut}");
                    restored_old += 1;
                }
                other => panic!("cut {cut}: restored seq {other}"),
            }
            let leftovers: Vec<_> = std::fs::read_dir(&dir)
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "cut {cut}: {leftovers:?}");
        }
    }
    // Both outcomes happened, so the cuts reached the write's every step.
    assert!(
        restored_new > 0 && restored_old > 0,
        "new {restored_new}, old {restored_old}"
    );
}
