//! What the Eclipse Paho interoperability suites (3.1.1 and 5.0) check,
//! against the `testament` binary started with the README's Paho
//! configuration, with paho-mqtt (and a raw socket where a check needs what
//! paho does not let a client do): `tests/clients/paho_suite.py`. Every
//! check must pass — wildcard subscriptions beside the denied topic,
//! subscribe failure on it, keep alive and Server Keep Alive, server topic
//! aliases, flow control both ways (0x93 seen by the client), overlapping
//! subscriptions, will and will delay, offline queueing, retained messages.

#![allow(clippy::disallowed_methods)] // a real broker and client run on real time

mod common;

use std::process::Command;

use common::binary::Served;
use common::readme_toml_blocks;

/// Each check, for 3.1.1 and 5.0 (`5.0 only` ones for 5.0 alone).
const CHECKS: [&str; 10] = [
    "basic",
    "retained_messages",
    "will_message",
    "zero_length_client_id",
    "offline_message_queueing",
    "overlapping_subscriptions",
    "keepalive",
    "subscribe_failure",
    "wildcards_beside_the_denied_topic",
    "unsubscribe",
];
const CHECKS_5_ONLY: [&str; 5] = [
    "server_keep_alive",
    "will_delay",
    "flow_control_client_receive_maximum",
    "flow_control_receive_maximum_exceeded",
    "server_topic_aliases",
];

#[test]
fn the_paho_suites_checks_pass_with_the_readme_configuration() {
    if !common::paho() {
        return;
    }
    let config = &readme_toml_blocks()[2];
    assert!(
        config.contains("test/nosubscribe"),
        "the Paho block: {config}"
    );
    let b = Served::start_with_config("paho-suite", config);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/paho_suite.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(b.addr.ip().to_string())
        .arg(b.addr.port().to_string())
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    let mut expected: Vec<String> = Vec::new();
    for version in ["3.1.1", "5.0"] {
        for name in CHECKS {
            expected.push(format!("PASS {version} {name}"));
        }
    }
    for name in CHECKS_5_ONLY {
        expected.push(format!("PASS 5.0 {name}"));
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|line| !text.lines().any(|l| l == line.as_str()))
        .collect();
    assert!(
        out.status.success() && missing.is_empty(),
        "not passed: {missing:?}\n{text}\n{err}\nbroker log:\n{}",
        b.log()
    );
}
