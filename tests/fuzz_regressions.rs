//! Replays every input kept under `fuzz/regressions/<target>/` through its
//! fuzz target (`govshare::fuzzing`): crashes `cargo fuzz` once found stay
//! fixed, and the targets themselves stay runnable.

#[test]
fn every_kept_fuzz_input_still_passes_its_target() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (name, target) in govshare::fuzzing::TARGETS {
        let dir = root.join(name);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|_| panic!("{} is missing", dir.display()));
        for e in entries {
            let path = e.unwrap().path();
            target(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    assert!(
        replayed >= govshare::fuzzing::TARGETS.len(),
        "every target has inputs"
    );
}
