//! The broker on a real socket, each driver, with rumqttc clients: tokens,
//! publish/subscribe at every QoS, retained messages, persistent sessions,
//! takeover, and the story of `DESIGN.md` end to end.

mod common;

use std::time::Duration;

use common::e2e::{Running, V3, token};
use common::hub::default_acl;
use common::jwt;
use rumqttc::{LastWill, QoS};
use testament::auth::{Acl, Effect, FilterTemplate, JwtConfig, Ops, Rule, Subject};
use testament::broker::BrokerConfig;
use testament::config::DriverKind;
use testament::session::{CredentialExpiry, SessionConfig};

const SECOND: Duration = Duration::from_secs(1);

fn start(kind: DriverKind) -> Running {
    let config = BrokerConfig {
        session: SessionConfig {
            credential_expiry: CredentialExpiry::Keep,
            ..SessionConfig::default()
        },
        ..BrokerConfig::default()
    };
    Running::start(kind, config, JwtConfig::default(), default_acl())
}

fn client(b: &Running, id: &str, user: &str) -> V3 {
    V3::connect(V3::options(
        b.addr,
        id,
        user,
        &token(&jwt::rsa_a(), user, 3600),
    ))
    .unwrap()
}

fn pub_sub(kind: DriverKind) {
    let b = start(kind);
    let sub = client(&b, "sub", "sub");
    sub.subscribe("open/#", QoS::ExactlyOnce);
    let publisher = client(&b, "pub", "pub");
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .client
            .publish(format!("open/{i}"), qos, false, format!("m{i}"))
            .unwrap();
        let m = sub.next_message(5 * SECOND).expect("delivered");
        assert_eq!(&m.topic[..], format!("open/{i}").as_str());
        assert_eq!(&m.payload[..], format!("m{i}").as_bytes());
        assert_eq!(m.qos, qos);
    }
    publisher
        .client
        .publish("open/retained", QoS::AtLeastOnce, true, "kept")
        .unwrap();
    assert!(sub.next_message(5 * SECOND).is_some());
    let late = client(&b, "late", "late");
    late.subscribe("open/retained", QoS::AtLeastOnce);
    let m = late.next_message(5 * SECOND).expect("the retained message");
    assert!(m.retain);
    assert_eq!(&m.payload[..], b"kept");
    b.stop();
}

#[test]
fn smol_publish_subscribe_every_qos_and_retained() {
    pub_sub(DriverKind::Smol);
}

#[test]
fn blocking_publish_subscribe_every_qos_and_retained() {
    pub_sub(DriverKind::Blocking);
}

#[test]
fn mio_publish_subscribe_every_qos_and_retained() {
    pub_sub(DriverKind::Mio);
}

fn refusals(kind: DriverKind) {
    let b = start(kind);
    let wrong_key = token(&jwt::rsa_b(), "eve", 3600);
    assert!(V3::connect(V3::options(b.addr, "eve", "eve", &wrong_key)).is_err());
    let expired = token(&jwt::rsa_a(), "old", 0);
    std::thread::sleep(Duration::from_millis(1100));
    // Within the 30 s leeway an expired token still passes; past it not.
    let jwt_config = JwtConfig {
        leeway: Duration::ZERO,
        ..JwtConfig::default()
    };
    let strict = Running::start(kind, BrokerConfig::default(), jwt_config, default_acl());
    assert!(V3::connect(V3::options(strict.addr, "old", "old", &expired)).is_err());
    let other_user = token(&jwt::rsa_a(), "alice", 3600);
    assert!(V3::connect(V3::options(b.addr, "bob", "bob", &other_user)).is_err());
    strict.stop();
    b.stop();
}

#[test]
fn smol_refuses_bad_tokens() {
    refusals(DriverKind::Smol);
}

#[test]
fn blocking_refuses_bad_tokens() {
    refusals(DriverKind::Blocking);
}

#[test]
fn mio_refuses_bad_tokens() {
    refusals(DriverKind::Mio);
}

fn persistent(kind: DriverKind) {
    let b = start(kind);
    let mut o = V3::options(
        b.addr,
        "keeper",
        "keeper",
        &token(&jwt::rsa_a(), "keeper", 3600),
    );
    o.set_clean_session(false);
    let keeper = V3::connect(o.clone()).unwrap();
    keeper.subscribe("open/q", QoS::AtLeastOnce);
    keeper.crash();
    let publisher = client(&b, "pub", "pub");
    publisher
        .client
        .publish("open/q", QoS::AtLeastOnce, false, "while away")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let keeper = V3::connect(o.clone()).unwrap();
    let m = keeper.next_message(5 * SECOND).expect("queued while away");
    assert_eq!(&m.payload[..], b"while away");
    // A second connection with the same client id takes over.
    let again = V3::connect(o).unwrap();
    assert!(
        keeper.closed_within(5 * SECOND),
        "the old connection is closed"
    );
    drop(again);
    b.stop();
}

#[test]
fn smol_persistent_session_and_takeover() {
    persistent(DriverKind::Smol);
}

#[test]
fn blocking_persistent_session_and_takeover() {
    persistent(DriverKind::Blocking);
}

#[test]
fn mio_persistent_session_and_takeover() {
    persistent(DriverKind::Mio);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    Crash,
    CrashAfterRevocation,
    CleanDisconnect,
}

/// The server logs in with a 2-second token and a retained will, publishes
/// `up`; the monitor watches; the key is rotated out and the token expires;
/// then the server's connection ends as `ending` says. Whether the monitor
/// got `down`.
fn story(kind: DriverKind, ending: Ending) -> bool {
    let b = start(kind);
    let state = "trusted/srv/state";
    let mut o = V3::options(b.addr, "srv", "srv", &token(&jwt::rsa_a(), "srv", 2));
    o.set_last_will(LastWill::new(state, "down", QoS::AtLeastOnce, true));
    o.set_keep_alive(Duration::from_secs(60));
    let server = V3::connect(o).unwrap();
    server
        .client
        .publish(state, QoS::AtLeastOnce, true, "up")
        .unwrap();
    let monitor = client(&b, "monitor", "monitor");
    monitor.subscribe("trusted/+/state", QoS::AtLeastOnce);
    let up = monitor.next_message(5 * SECOND).expect("the retained up");
    assert_eq!(&up.payload[..], b"up");

    b.rotate_keys(&[&jwt::rsa_b()]);
    std::thread::sleep(Duration::from_millis(2500));
    match ending {
        Ending::Crash => server.crash(),
        Ending::CrashAfterRevocation => {
            let mut rules = vec![Rule::new(
                Effect::Deny,
                Ops::WILL,
                Subject::Principal("srv".into()),
                FilterTemplate::new("#").unwrap(),
            )];
            rules.extend(default_acl().rules().iter().cloned());
            b.set_acl(Acl::new(rules));
            std::thread::sleep(Duration::from_millis(200));
            server.crash();
        }
        Ending::CleanDisconnect => server.disconnect(),
    }
    let got = monitor.next_message(3 * SECOND);
    let delivered = got.as_ref().is_some_and(|m| &m.payload[..] == b"down");
    if delivered {
        // A later subscriber with a token of the new key sees it retained.
        let late = V3::connect(V3::options(
            b.addr,
            "late",
            "late",
            &token(&jwt::rsa_b(), "late", 3600),
        ))
        .unwrap();
        late.subscribe("trusted/+/state", QoS::AtLeastOnce);
        let m = late.next_message(5 * SECOND).expect("retained down");
        assert!(m.retain);
        assert_eq!(&m.payload[..], b"down");
    }
    b.stop();
    delivered
}

#[test]
fn smol_story_the_will_survives_rotation_and_expiry() {
    assert!(story(DriverKind::Smol, Ending::Crash));
}

#[test]
fn blocking_story_the_will_survives_rotation_and_expiry() {
    assert!(story(DriverKind::Blocking, Ending::Crash));
}

#[test]
fn mio_story_the_will_survives_rotation_and_expiry() {
    assert!(story(DriverKind::Mio, Ending::Crash));
}

#[test]
fn smol_story_a_revoked_will_is_not_sent() {
    assert!(!story(DriverKind::Smol, Ending::CrashAfterRevocation));
}

#[test]
fn blocking_story_a_clean_disconnect_sends_no_will() {
    assert!(!story(DriverKind::Blocking, Ending::CleanDisconnect));
}

#[test]
fn mio_story_a_clean_disconnect_sends_no_will() {
    assert!(!story(DriverKind::Mio, Ending::CleanDisconnect));
}
