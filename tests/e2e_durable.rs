//! A durable broker (`[storage] sync = "always"`), the real binary: what
//! was retained, and acknowledged, survives a SIGTERM and a `kill -9`; what
//! was cleared stays cleared; a store file that is not one stops the broker
//! with its name and exit code 2, never an empty start.

#![allow(clippy::disallowed_methods)] // a real process runs on real time

mod common;

use std::process::Command;
use std::time::Duration;

use common::binary::Served;
use common::e2e::V3;
use rumqttc::{Packet, QoS};

const DURABLE: &str = "[storage]\nsync = \"always\"\n";
const SECONDS: Duration = Duration::from_secs(5);

/// Publishes a retained QoS 1 message and waits for its PUBACK.
fn retain(c: &V3, topic: &str, payload: &str) {
    c.client
        .publish(topic, QoS::AtLeastOnce, true, payload)
        .unwrap();
    assert!(
        c.wait_for(SECONDS, |p| matches!(p, Packet::PubAck(_))),
        "no PUBACK for {topic}"
    );
}

fn retained_survives(driver: &str, signal: &str) {
    let mut s = Served::start(&format!("durable-{driver}-{signal}"), driver, DURABLE);
    let p = s.client("p", "k1").unwrap();
    retain(&p, "open/a/server/state", "up");
    retain(&p, "open/b/server/state", "up");
    retain(&p, "open/b/server/state", "down");
    retain(&p, "open/gone", "soon cleared");
    retain(&p, "open/gone", "");
    s.restart(signal);
    assert!(
        s.log().contains(": 2 retained messages restored"),
        "{}",
        s.log()
    );
    let sub = s.client("sub", "k1").unwrap();
    sub.subscribe("open/#", QoS::AtLeastOnce);
    let mut got = Vec::new();
    while let Some(m) = sub.next_message(Duration::from_secs(1)) {
        assert!(m.retain);
        got.push((
            m.topic.to_string(),
            String::from_utf8_lossy(&m.payload).into_owned(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("open/a/server/state".to_string(), "up".to_string()),
            ("open/b/server/state".to_string(), "down".to_string()),
        ],
        "after {signal}: {}",
        s.log()
    );
}

#[test]
fn mio_retained_messages_survive_kill_9() {
    retained_survives("mio", "KILL");
}

#[test]
fn mio_retained_messages_survive_sigterm() {
    retained_survives("mio", "TERM");
}

#[test]
fn smol_retained_messages_survive_kill_9() {
    retained_survives("smol", "KILL");
}

#[test]
fn blocking_retained_messages_survive_kill_9() {
    retained_survives("blocking", "KILL");
}

#[test]
fn a_store_file_that_is_not_one_stops_the_broker_naming_it() {
    let mut s = Served::start("durable-damaged", "mio", DURABLE);
    let p = s.client("p", "k1").unwrap();
    retain(&p, "open/a", "up");
    assert!(s.stop("TERM").success());
    let store = s.dir.join("data").join("testament.redb");
    assert!(store.exists(), "the store is in data_dir");
    std::fs::write(&store, vec![0xa5; 8192]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_testament"))
        .args(["serve", "--config"])
        .arg(s.dir.join("testament.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&store.display().to_string()), "{err}");
}
