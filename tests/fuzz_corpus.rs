//! Replays every committed fuzz corpus file through the harness function its
//! fuzz target calls, so an input the fuzzer once found stays a regression
//! test in a plain `cargo test`.

use std::fs;
use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for file in files {
        let data = fs::read(&file).expect("readable corpus file");
        // A panic names the file, which is the regression to look at.
        eprintln!("replaying {}", file.display());
        harness(&data);
    }
}

#[test]
fn decode_corpus() {
    replay("decode", testament::fuzzing::decode);
}

#[test]
fn roundtrip_corpus() {
    replay("roundtrip", testament::fuzzing::roundtrip);
}

#[test]
fn session_corpus() {
    replay("session", testament::fuzzing::session);
}

#[test]
fn hub_corpus() {
    replay("hub", testament::fuzzing::hub);
}
