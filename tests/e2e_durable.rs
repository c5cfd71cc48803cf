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

/// Publishes a QoS 1 message and waits for its PUBACK.
fn publish_acked(c: &V3, topic: &str, payload: &str, retain: bool) {
    c.client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .unwrap();
    assert!(
        c.wait_for(SECONDS, |p| matches!(p, Packet::PubAck(_))),
        "no PUBACK for {topic}"
    );
}

/// Publishes a retained QoS 1 message and waits for its PUBACK.
fn retain(c: &V3, topic: &str, payload: &str) {
    publish_acked(c, topic, payload, true);
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
        s.log()
            .contains(": 2 retained messages, 0 sessions and 0 of their messages restored"),
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

/// A store whose disk is gone: every commit fails.
#[derive(Debug)]
struct FailingStore;

impl testament::driver::storage::Storage for FailingStore {
    fn commit(
        &mut self,
        _: &[testament::broker::Persist],
    ) -> Result<(), testament::driver::storage::StorageError> {
        Err(testament::driver::storage::StorageError::Commit {
            path: "/dev/full".into(),
            reason: "No space left on device".into(),
        })
    }
}

/// A commit that fails stops the driver: the PUBACK of what it did not
/// make durable is never sent, the connections are dropped, and `serve`
/// returns the error. (The real disk and a restart are the tests above.)
fn a_failed_commit_stops_the_driver_without_acknowledging(kind: testament::config::DriverKind) {
    use common::e2e::{Running, token};
    use std::sync::{Arc, Mutex};
    let driver = testament::driver::DriverConfig {
        storage: Some(Arc::new(Mutex::new(FailingStore))),
        ..testament::driver::DriverConfig::default()
    };
    let config = testament::broker::BrokerConfig {
        durable: true,
        ..testament::broker::BrokerConfig::default()
    };
    let b = Running::start_full(
        kind,
        config,
        testament::auth::JwtConfig::default(),
        common::hub::default_acl(),
        driver,
        None,
    );
    let p = V3::connect(V3::options(
        b.addr,
        "p",
        "p",
        &token(&common::jwt::rsa_a(), "p", 3600),
    ))
    .unwrap();
    p.client
        .publish("open/a", QoS::AtLeastOnce, true, "up")
        .unwrap();
    assert!(
        !p.wait_for(Duration::from_secs(2), |pk| matches!(pk, Packet::PubAck(_))),
        "a PUBACK for what was not committed"
    );
    let ended = b
        .ended_within(SECONDS)
        .expect("the driver stopped on its own");
    let e = ended.expect_err("serve returns the failure");
    assert!(e.to_string().contains("No space left on device"), "{e}");
}

#[test]
fn mio_a_failed_commit_stops_the_driver_without_acknowledging() {
    a_failed_commit_stops_the_driver_without_acknowledging(testament::config::DriverKind::Mio);
}

#[test]
fn smol_a_failed_commit_stops_the_driver_without_acknowledging() {
    a_failed_commit_stops_the_driver_without_acknowledging(testament::config::DriverKind::Smol);
}

#[test]
fn blocking_a_failed_commit_stops_the_driver_without_acknowledging() {
    a_failed_commit_stops_the_driver_without_acknowledging(testament::config::DriverKind::Blocking);
}

/// A 3.1.1 persistent session (clean session 0) subscribed at QoS 1: after
/// a restart its subscription is there, what is published while its
/// client is away waits for it, and its client finds the session present.
fn a_persistent_session_survives(signal: &str) {
    let mut s = Served::start(&format!("durable-session-{signal}"), "mio", DURABLE);
    let options = |s: &Served| {
        let mut o = V3::options(s.addr, "sub", "sub", &s.token("k1", "sub"));
        o.set_clean_session(false);
        o
    };
    let sub = V3::connect(options(&s)).unwrap();
    sub.subscribe("open/#", QoS::AtLeastOnce);
    s.restart(signal);
    drop(sub);
    assert!(s.log().contains(", 1 sessions and"), "{}", s.log());
    let p = s.client("p", "k1").unwrap();
    publish_acked(&p, "open/news", "while you were away", false);
    let mut seen = false;
    let (client, mut conn) = rumqttc::Client::new(options(&s), 16);
    for event in conn.iter().take(20) {
        match event {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(a))) => {
                assert!(a.session_present, "Session Present after {signal}");
            }
            Ok(rumqttc::Event::Incoming(Packet::Publish(m))) => {
                assert_eq!(&m.payload[..], b"while you were away");
                seen = true;
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("{e}: {}", s.log()),
        }
    }
    let _ = client.disconnect();
    assert!(seen, "the queued message arrives");
}

#[test]
fn a_persistent_session_survives_kill_9() {
    a_persistent_session_survives("KILL");
}

#[test]
fn a_persistent_session_survives_sigterm() {
    a_persistent_session_survives("TERM");
}
