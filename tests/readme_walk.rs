//! The README's five-minute walk, run as written: its shell block, pasted
//! whole, against the binary (on a free port, in a fresh folder) with the
//! mosquitto clients. The monitor sees "up", then — after the key rotation
//! and the token's expiry — "down", sent for the server's crash and
//! authorized, not re-authenticated.

#![allow(clippy::disallowed_methods)] // a real broker and clients run on real time

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn walk_block() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &text[text.find("## Five minutes").expect("the walk")..];
    let start = section.find("```sh\n").expect("its shell block") + "```sh\n".len();
    section[start..start + section[start..].find("```").unwrap()].to_owned()
}

#[test]
fn the_readme_walk_runs_as_written() {
    if Command::new("mosquitto_sub")
        .arg("--help")
        .output()
        .is_err()
    {
        common::missing("mosquitto_sub and mosquitto_pub (Debian package mosquitto-clients)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("testament-walk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = env!("CARGO_BIN_EXE_testament");
    // The broker as the walk starts it (`cargo run --release`: the default
    // configuration, its data in ./testament-data), on a free port.
    let log = dir.join("broker.log");
    let mut broker = Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("testament listening on")
    {
        assert!(Instant::now() < deadline, "the broker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let script = walk_block()
        .replace("target/release/testament", bin)
        .replace("mosquitto_sub ", &format!("mosquitto_sub -p {port} "))
        .replace("mosquitto_pub ", &format!("mosquitto_pub -p {port} "));
    // The monitor keeps running after the block: stopped here.
    let script = format!("{script}\nsleep 2\nkill $(jobs -p) 2>/dev/null\nwait\n");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = broker.kill();
    let _ = broker.wait();
    let printed = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(printed.contains("clients/srv/state up"), "{printed}\n{log}");
    assert!(
        printed.contains("clients/srv/state down"),
        "{printed}\n{log}"
    );
    let will = log
        .lines()
        .find(|l| l.contains("event=will") && l.contains("outcome=delivered"))
        .unwrap_or_else(|| panic!("no will delivered: {log}"));
    assert!(will.contains("trigger=peer_closed"), "{will}");
    // The key it was signed with was withdrawn and the token had expired.
    assert!(log.contains("reloaded the key set"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
