//! A durable broker (`[storage] sync = "always"`), the real binary: what
//! was retained, and acknowledged, survives a SIGTERM and a `kill -9`; what
//! was cleared stays cleared; persistent sessions come back with their
//! subscriptions, their offline queues and their messages in flight (with
//! DUP and their packet ids); a store file that is not one stops the broker
//! with its name and exit code 2, never an empty start.

#![allow(clippy::disallowed_methods)] // a real process runs on real time

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::binary::Served;
use common::e2e::V3;
use common::raw::Raw;
use rumqttc::{Packet, QoS};
use testament::codec::{
    Bytes, Connect, ConnectReasonCode, Disconnect, DisconnectReasonCode, LastWill, MqttString,
    Packet as MqttPacket, PacketId, ProtocolVersion, PubAck, PubAckReasonCode, Publish,
    QoS as MqttQoS, Subscribe, Subscription, TopicFilter, TopicName,
};

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

/// The retained messages a new subscriber to `open/#` gets.
fn retained_now(s: &Served, id: &str) -> Vec<String> {
    let sub = s.client(id, "k1").unwrap();
    sub.subscribe("open/#", QoS::AtLeastOnce);
    let mut got = Vec::new();
    while let Some(m) = sub.next_message(Duration::from_secs(1)) {
        got.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    got
}

/// `sync = "interval"`: acknowledgements do not wait for the disk, and a
/// crash loses what was acknowledged since the last flush — documented,
/// and shown here with an hour between flushes; a SIGTERM flushes.
#[test]
fn with_sync_interval_a_crash_loses_what_came_since_the_last_flush_and_a_stop_nothing() {
    let mut s = Served::start(
        "durable-interval-hour",
        "mio",
        "[storage]\nsync = \"interval\"\nsync_interval_ms = 3600000\n",
    );
    let p = s.client("p", "k1").unwrap();
    retain(&p, "open/a", "acknowledged, not flushed");
    drop(p);
    s.restart("KILL");
    assert!(
        s.log().contains(": 0 retained messages"),
        "a crash before the flush loses it: {}",
        s.log()
    );
    let p = s.client("p", "k1").unwrap();
    retain(&p, "open/a", "flushed at the stop");
    drop(p);
    s.restart("TERM");
    assert_eq!(
        retained_now(&s, "sub"),
        ["flushed at the stop"],
        "{}",
        s.log()
    );
}

/// With a short interval the flush comes on its own, no traffic needed:
/// a crash a little later loses nothing.
#[test]
fn with_sync_interval_what_was_flushed_survives_a_crash() {
    let mut s = Served::start(
        "durable-interval-short",
        "smol",
        "[storage]\nsync = \"interval\"\nsync_interval_ms = 100\n",
    );
    let p = s.client("p", "k1").unwrap();
    retain(&p, "open/a", "flushed within 100 ms");
    std::thread::sleep(Duration::from_millis(700));
    s.restart("KILL");
    assert_eq!(
        retained_now(&s, "sub"),
        ["flushed within 100 ms"],
        "{}",
        s.log()
    );
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

/// A durable broker in this process, on the `kind` driver, committing to
/// `store`.
fn durable_in_process(
    kind: testament::config::DriverKind,
    store: Arc<Mutex<dyn testament::driver::storage::Storage>>,
) -> common::e2e::Running {
    let driver = testament::driver::DriverConfig {
        storage: Some(store),
        ..testament::driver::DriverConfig::default()
    };
    let config = testament::broker::BrokerConfig {
        durable: true,
        ..testament::broker::BrokerConfig::default()
    };
    common::e2e::Running::start_full(
        kind,
        config,
        testament::auth::JwtConfig::default(),
        common::hub::default_acl(),
        driver,
        None,
    )
}

/// A commit that fails stops the driver: the PUBACK of what it did not
/// make durable is never sent, the connections are dropped, and `serve`
/// returns the error. (The real disk and a restart are the tests above.)
fn a_failed_commit_stops_the_driver_without_acknowledging(kind: testament::config::DriverKind) {
    use common::e2e::token;
    let b = durable_in_process(kind, Arc::new(Mutex::new(FailingStore)));
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

/// A raw 5.0 client of `s` as `id`: Clean Start `clean`, Session Expiry
/// Interval `expiry`, Receive Maximum `receive_maximum`. Returns it with
/// Session Present.
fn raw_client(
    s: &Served,
    id: &str,
    clean: bool,
    expiry: u32,
    receive_maximum: Option<u16>,
) -> (Raw, bool) {
    let mut raw = Raw::open(s.addr, ProtocolVersion::V5, Duration::from_secs(2));
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::try_from(id).unwrap());
    c.clean_start = clean;
    c.username = Some(MqttString::try_from(id).unwrap());
    c.password = Some(Bytes::from(s.token("k1", id)));
    c.properties.session_expiry_interval = Some(expiry);
    c.properties.receive_maximum = receive_maximum.and_then(std::num::NonZeroU16::new);
    assert!(raw.send(MqttPacket::Connect(Box::new(c))));
    match raw.next() {
        Some(MqttPacket::ConnAck(a)) if a.reason_code == ConnectReasonCode::Success => {
            (raw, a.session_present)
        }
        other => panic!("{id}: {other:?}: {}", s.log()),
    }
}

fn subscribe_raw(c: &mut Raw, filter: &'static str) {
    subscribe_at(c, filter, MqttQoS::AtLeastOnce);
}

/// Subscribes `c` to `filter` at `qos` and waits for the SUBACK.
fn subscribe_at(c: &mut Raw, filter: &'static str, qos: MqttQoS) {
    let mut sub = Subscription {
        filter: TopicFilter::from_static(filter),
        options: Default::default(),
    };
    sub.options.qos = qos;
    assert!(c.send(MqttPacket::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Default::default(),
        subscriptions: vec![sub],
    })));
    assert!(matches!(c.next(), Some(MqttPacket::SubAck(_))));
}

/// Everything `c` receives until it falls silent, each PUBLISH acknowledged
/// when `ack`: (payload, DUP, packet id).
fn drain(c: &mut Raw, ack: bool) -> Vec<(String, bool, PacketId)> {
    let mut got = Vec::new();
    while let Some(p) = c.next() {
        if let MqttPacket::Publish(p) = p {
            let id = p.packet_id.expect("QoS 1");
            got.push((String::from_utf8_lossy(&p.payload).into_owned(), p.dup, id));
            if ack {
                c.send(MqttPacket::PubAck(PubAck::new(id)));
            }
        }
    }
    got
}

/// Every acknowledged message arrived; none twice without DUP.
fn check_delivery(acked: &BTreeSet<String>, got: &[(String, bool, PacketId)], log: &str) {
    let received: BTreeSet<&String> = got.iter().map(|(p, _, _)| p).collect();
    let lost: Vec<&String> = acked.iter().filter(|p| !received.contains(p)).collect();
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}\n{log}");
    let mut fresh = BTreeSet::new();
    for (p, dup, _) in got {
        assert!(*dup || fresh.insert(p), "{p} twice without DUP");
    }
}

/// A QoS 1 stream to a persistent subscriber that is away; the broker is
/// stopped by `signal` in the middle of it. After the restart, the
/// subscriber gets every message whose PUBACK the publisher got, once.
fn an_acknowledged_stream_survives(driver: &str, signal: &str) {
    let mut s = Served::start(
        &format!("durable-stream-{driver}-{signal}"),
        driver,
        DURABLE,
    );
    let (mut sub, _) = raw_client(&s, "sub", true, 300, None);
    subscribe_raw(&mut sub, "open/stream");
    sub.send(MqttPacket::Disconnect(Disconnect::new(
        DisconnectReasonCode::NormalDisconnection,
    )));
    drop(sub);

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let (mut p, _) = raw_client(&s, "p", true, 0, None);
    let publisher = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            // Paced (a message a millisecond, 32 in flight), so that the
            // signal falls in the middle of the stream.
            let mut in_flight = BTreeMap::new();
            for n in 0..900u16 {
                let id = PacketId::new(n + 1).unwrap();
                let mut m = Publish::new(TopicName::from_static("open/stream"), format!("m{n}"));
                m.qos = MqttQoS::AtLeastOnce;
                m.packet_id = Some(id);
                if !p.send(MqttPacket::Publish(m)) {
                    return;
                }
                in_flight.insert(id, format!("m{n}"));
                std::thread::sleep(Duration::from_millis(1));
                while in_flight.len() >= 32 {
                    match p.next() {
                        Some(MqttPacket::PubAck(a)) => {
                            if let Some(m) = in_flight.remove(&a.packet_id) {
                                acked.lock().unwrap().insert(m);
                            }
                        }
                        Some(_) => {}
                        None => return,
                    }
                }
            }
            while let Some(MqttPacket::PubAck(a)) = p.next() {
                if let Some(m) = in_flight.remove(&a.packet_id) {
                    acked.lock().unwrap().insert(m);
                }
            }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 300 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    s.restart(signal);
    publisher.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        (300..900).contains(&acked.len()),
        "the signal fell in the middle of the stream: {} acknowledged",
        acked.len()
    );

    let (mut sub, present) = raw_client(&s, "sub", false, 300, None);
    assert!(present, "{}", s.log());
    let got = drain(&mut sub, true);
    check_delivery(&acked, &got, &s.log());
    assert!(got.iter().all(|(_, dup, _)| !dup), "none was in flight");
}

#[test]
fn mio_an_acknowledged_stream_survives_kill_9() {
    an_acknowledged_stream_survives("mio", "KILL");
}

#[test]
fn blocking_an_acknowledged_stream_survives_kill_9() {
    an_acknowledged_stream_survives("blocking", "KILL");
}

#[test]
fn smol_an_acknowledged_stream_survives_sigterm() {
    an_acknowledged_stream_survives("smol", "TERM");
}

/// A connected persistent subscriber whose window (Receive Maximum 5) is
/// full and 15 more messages queued behind it; the broker is stopped by
/// `signal`. Back, the subscriber gets the five again with DUP and their
/// packet ids, then the fifteen.
fn in_flight_messages_survive(signal: &str) {
    let mut s = Served::start(&format!("durable-inflight-{signal}"), "mio", DURABLE);
    let (mut sub, _) = raw_client(&s, "sub", true, 300, Some(5));
    subscribe_raw(&mut sub, "open/stream");
    let p = s.client("p", "k1").unwrap();
    let mut acked = BTreeSet::new();
    for n in 0..20 {
        publish_acked(&p, "open/stream", &format!("m{n}"), false);
        acked.insert(format!("m{n}"));
    }
    let before = drain(&mut sub, false);
    assert_eq!(before.len(), 5, "the window");
    s.restart(signal);
    drop((sub, p));

    let (mut sub, present) = raw_client(&s, "sub", false, 300, Some(5));
    assert!(present);
    let got = drain(&mut sub, true);
    assert_eq!(got.len(), 20, "{got:?}\n{}", s.log());
    for (again, first) in got.iter().zip(&before) {
        assert_eq!(
            again,
            &(first.0.clone(), true, first.2),
            "resent with DUP and its id"
        );
    }
    assert!(got[5..].iter().all(|(_, dup, _)| !dup));
    check_delivery(&acked, &got, &s.log());
}

#[test]
fn in_flight_messages_survive_kill_9() {
    in_flight_messages_survive("KILL");
}

#[test]
fn in_flight_messages_survive_sigterm() {
    in_flight_messages_survive("TERM");
}

/// A raw 5.0 client `srv` with a will "down" on `open/srv/state`, Will
/// Delay 3 s, Session Expiry 300 s.
fn server_with_will(s: &Served, clean: bool) -> Raw {
    let mut raw = Raw::open(s.addr, ProtocolVersion::V5, Duration::from_secs(2));
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::from_static("srv"));
    c.clean_start = clean;
    c.username = Some(MqttString::from_static("srv"));
    c.password = Some(Bytes::from(s.token("k1", "srv")));
    c.properties.session_expiry_interval = Some(300);
    let mut will = LastWill {
        topic: TopicName::from_static("open/srv/state"),
        payload: Bytes::from_static(b"down"),
        qos: MqttQoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    will.properties.will_delay_interval = Some(3);
    c.will = Some(will);
    assert!(raw.send(MqttPacket::Connect(Box::new(c))));
    assert!(
        matches!(raw.next(), Some(MqttPacket::ConnAck(a)) if a.reason_code == ConnectReasonCode::Success),
        "{}",
        s.log()
    );
    raw
}

/// The persistent monitor of `open/+/state` (what comes while it is away
/// waits for it).
fn monitor_raw(s: &Served, clean: bool) -> Raw {
    let (mut m, _) = raw_client(s, "mon", clean, 3_600, None);
    if clean {
        subscribe_raw(&mut m, "open/+/state");
    }
    m
}

/// What the monitor receives within `within`, each with when it came.
fn watch(m: &mut Raw, within: Duration) -> Vec<(String, Duration)> {
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < within {
        if let Some(MqttPacket::Publish(p)) = m.next() {
            if let Some(id) = p.packet_id {
                m.send(MqttPacket::PubAck(PubAck::new(id)));
            }
            got.push((
                String::from_utf8_lossy(&p.payload).into_owned(),
                start.elapsed(),
            ));
        }
    }
    got
}

/// A client connected with a will (delay 3 s) when the broker is stopped
/// by `signal`: no "down" at the stop; after the restart, "down" about 3 s
/// later if it stays away, none if it comes back in time.
fn a_will_across_a_restart(signal: &str, comes_back: bool) {
    let name = format!("durable-will-{signal}-{comes_back}");
    let mut s = Served::start(&name, "mio", DURABLE);
    drop(monitor_raw(&s, true));
    let srv = server_with_will(&s, true);
    s.restart(signal);
    drop(srv);
    let mut m = monitor_raw(&s, false);
    if comes_back {
        let mut srv = server_with_will(&s, false);
        // Gone again, this time with DISCONNECT 0x00: no will.
        srv.send(MqttPacket::Disconnect(Disconnect::new(
            DisconnectReasonCode::NormalDisconnection,
        )));
    }
    let got = watch(&mut m, Duration::from_secs(6));
    if comes_back {
        assert!(
            got.is_empty(),
            "back in time, no will: {got:?}\n{}",
            s.log()
        );
    } else {
        assert_eq!(got.len(), 1, "{got:?}\n{}", s.log());
        assert_eq!(got[0].0, "down");
        assert!(
            got[0].1 >= Duration::from_millis(2_000),
            "its delay counts from the restart: {got:?}"
        );
    }
    let trigger = if signal == "KILL" {
        "trigger=server_crashed"
    } else {
        "outcome=paused"
    };
    let log = std::fs::read_to_string(s.dir.join(format!("log-before-{signal}.txt")))
        .unwrap_or_default()
        + &s.log();
    assert!(log.contains(trigger), "{log}");
}

#[test]
fn a_will_of_a_client_connected_at_a_kill_9_comes_its_delay_after_the_restart() {
    a_will_across_a_restart("KILL", false);
}

#[test]
fn a_will_of_a_client_connected_at_a_kill_9_and_back_in_time_never_comes() {
    a_will_across_a_restart("KILL", true);
}

#[test]
fn a_will_paused_by_a_sigterm_comes_its_delay_after_the_restart() {
    a_will_across_a_restart("TERM", false);
}

#[test]
fn a_will_paused_by_a_sigterm_and_its_client_back_in_time_never_comes() {
    a_will_across_a_restart("TERM", true);
}

/// A 3.1.1 client (rumqttc) connected with a will at a `kill -9`: the will
/// is sent at the restart.
#[test]
fn a_311_will_of_a_client_connected_at_a_kill_9_is_sent_at_the_restart() {
    let mut s = Served::start("durable-will-311", "mio", DURABLE);
    drop(monitor_raw(&s, true));
    let mut o = V3::options(s.addr, "srv311", "srv311", &s.token("k1", "srv311"));
    o.set_last_will(rumqttc::LastWill::new(
        "open/srv311/state",
        "down",
        QoS::AtLeastOnce,
        false,
    ));
    let srv = V3::connect(o).unwrap();
    s.restart("KILL");
    drop(srv);
    let mut m = monitor_raw(&s, false);
    let got = watch(&mut m, Duration::from_secs(2));
    assert_eq!(
        got.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["down"],
        "{}",
        s.log()
    );
}

/// A store that runs out of space while `full` is set (and commits
/// nothing then), in memory otherwise.
#[derive(Debug)]
struct FullStore {
    kept: testament::driver::storage::MemoryStorage,
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl testament::driver::storage::Storage for FullStore {
    fn commit(
        &mut self,
        ops: &[testament::broker::Persist],
    ) -> Result<(), testament::driver::storage::StorageError> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(testament::driver::storage::StorageError::Full {
                path: "/full".into(),
            });
        }
        self.kept.commit(ops)
    }
}

fn publish_raw(c: &mut Raw, topic: &'static str, qos: MqttQoS, retain: bool, id: u16) {
    let mut m = Publish::new(TopicName::from_static(topic), &b"x"[..]);
    m.qos = qos;
    m.retain = retain;
    m.packet_id = (qos != MqttQoS::AtMostOnce).then(|| PacketId::new(id).unwrap());
    assert!(c.send(MqttPacket::Publish(m)));
}

/// A full disk: what needed it is not acknowledged (nor lost), new QoS 1/2
/// publishes are refused with 0x97, QoS 0 goes on; when space returns the
/// held acknowledgement goes out and QoS 1 is taken again.
fn a_full_disk_refuses_qos_1_serves_qos_0_and_recovers(kind: testament::config::DriverKind) {
    use common::e2e::token;
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = Arc::new(Mutex::new(FullStore {
        kept: Default::default(),
        full: full.clone(),
    }));
    let b = durable_in_process(kind, store.clone());
    let connect = |id: &str| {
        let mut raw = Raw::open(b.addr, ProtocolVersion::V5, Duration::from_secs(1));
        let mut c = Connect::new(ProtocolVersion::V5, MqttString::try_from(id).unwrap());
        c.username = Some(MqttString::try_from(id).unwrap());
        c.password = Some(Bytes::from(token(&common::jwt::rsa_a(), id, 3600)));
        assert!(raw.send(MqttPacket::Connect(Box::new(c))));
        assert!(matches!(raw.next(), Some(MqttPacket::ConnAck(_))));
        raw
    };
    let mut s = connect("s");
    subscribe_at(&mut s, "open/q/#", MqttQoS::AtMostOnce);
    let mut p = connect("p");
    let mut p2 = connect("p2");

    full.store(true, std::sync::atomic::Ordering::SeqCst);
    // A retained QoS 1 message: not on disk, so not acknowledged.
    publish_raw(&mut p, "open/r/1", MqttQoS::AtLeastOnce, true, 1);
    assert!(p.next().is_none(), "no PUBACK for what is not on disk");
    // New QoS 1: refused, at once.
    publish_raw(&mut p2, "open/q/one", MqttQoS::AtLeastOnce, false, 2);
    match p2.next() {
        Some(MqttPacket::PubAck(a)) => assert_eq!(a.reason_code, PubAckReasonCode::QuotaExceeded),
        other => panic!("{other:?}"),
    }
    // QoS 0 goes on.
    publish_raw(&mut p2, "open/q/zero", MqttQoS::AtMostOnce, false, 0);
    assert!(
        matches!(s.next(), Some(MqttPacket::Publish(m)) if m.topic.as_ref().unwrap().as_str() == "open/q/zero")
    );

    // Space returns; the store is tried again every second, traffic or
    // not, and what waited goes out.
    full.store(false, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1_100));
    match p.next() {
        Some(MqttPacket::PubAck(a)) => {
            assert_eq!(
                (a.packet_id.get(), a.reason_code),
                (1, PubAckReasonCode::Success)
            );
        }
        other => panic!("the held PUBACK: {other:?}"),
    }
    publish_raw(&mut p2, "open/q/one", MqttQoS::AtLeastOnce, false, 3);
    loop {
        match p2.next() {
            Some(MqttPacket::PubAck(a)) => {
                assert_eq!(a.reason_code, PubAckReasonCode::Success);
                break;
            }
            Some(_) => {}
            None => panic!("no PUBACK after the recovery"),
        }
    }
    let kept = store.lock().unwrap().kept.load();
    assert_eq!(
        kept.retained.len(),
        1,
        "the acknowledged message is on disk"
    );
    b.stop();
}

#[test]
fn mio_a_full_disk_refuses_qos_1_serves_qos_0_and_recovers() {
    a_full_disk_refuses_qos_1_serves_qos_0_and_recovers(testament::config::DriverKind::Mio);
}

#[test]
fn smol_a_full_disk_refuses_qos_1_serves_qos_0_and_recovers() {
    a_full_disk_refuses_qos_1_serves_qos_0_and_recovers(testament::config::DriverKind::Smol);
}

#[test]
fn blocking_a_full_disk_refuses_qos_1_serves_qos_0_and_recovers() {
    a_full_disk_refuses_qos_1_serves_qos_0_and_recovers(testament::config::DriverKind::Blocking);
}

/// A tmpfs mounted on a folder for as long as it lives.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts one of `size` on `dir`; `None` where this process may not
    /// mount (no CAP_SYS_ADMIN).
    fn mount(dir: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        out.status.success().then(|| Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A v5 client of the binary, connected.
fn raw_v5(s: &Served, id: &str) -> Raw {
    let mut raw = Raw::open(s.addr, ProtocolVersion::V5, Duration::from_secs(2));
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::try_from(id).unwrap());
    c.username = Some(MqttString::try_from(id).unwrap());
    c.password = Some(Bytes::from(s.token("k1", id)));
    assert!(raw.send(MqttPacket::Connect(Box::new(c))));
    assert!(matches!(raw.next(), Some(MqttPacket::ConnAck(_))));
    raw
}

/// A retained QoS 1 message of 60 kB on `open/big/N`.
fn publish_big(c: &mut Raw, n: u16) {
    let topic = TopicName::try_from(format!("open/big/{n}")).unwrap();
    let mut m = Publish::new(topic, vec![b'x'; 60_000]);
    m.qos = MqttQoS::AtLeastOnce;
    m.retain = true;
    m.packet_id = PacketId::new(n);
    assert!(c.send(MqttPacket::Publish(m)));
}

/// The real thing: the store on a 4 MiB tmpfs, filled with retained
/// messages until the disk is full. The publish that needed the last
/// commit is held (no PUBACK, not lost), new QoS 1 publishes are refused
/// with 0x97, QoS 0 goes on; space comes back (a ballast file is deleted)
/// and with no traffic at all the held PUBACK goes out within the retry
/// second, QoS 1 is taken again, and everything acknowledged is there
/// after a `kill -9`.
#[test]
fn a_real_full_disk_holds_refuses_and_recovers_when_space_returns() {
    let mut mounted = None;
    let mut s = Served::start_in("durable-tmpfs", "mio", DURABLE, |dir| {
        mounted = Tmpfs::mount(&dir.join("data"), "4m");
        if mounted.is_some() {
            std::fs::write(dir.join("data").join("ballast"), vec![0u8; 1_500_000]).unwrap();
        }
    });
    let Some(_tmpfs) = mounted else {
        eprintln!(
            "SKIPPED: a tmpfs cannot be mounted here (mount needs CAP_SYS_ADMIN); \
             the full-disk path is covered by the FullStore tests"
        );
        return;
    };
    let mut sub = raw_v5(&s, "watcher");
    subscribe_at(&mut sub, "open/q/#", MqttQoS::AtMostOnce);

    let mut p = raw_v5(&s, "filler");
    let mut acked = Vec::new();
    let mut held = None;
    for n in 1..=60 {
        publish_big(&mut p, n);
        match p.next() {
            Some(MqttPacket::PubAck(a)) if a.reason_code == PubAckReasonCode::Success => {
                acked.push(n);
            }
            None => {
                held = Some(n);
                break;
            }
            other => panic!("publish {n}: {other:?}\n{}", s.log()),
        }
    }
    let held = held.expect("the disk filled up");
    assert!(acked.len() > 5, "{acked:?}");
    assert!(s.log().contains("no space left"), "{}", s.log());

    let mut other = raw_v5(&s, "other");
    publish_big(&mut other, 100);
    match other.next() {
        Some(MqttPacket::PubAck(a)) => assert_eq!(a.reason_code, PubAckReasonCode::QuotaExceeded),
        other => panic!("{other:?}"),
    }
    publish_raw(&mut other, "open/q/zero", MqttQoS::AtMostOnce, false, 0);
    assert!(
        matches!(sub.next(), Some(MqttPacket::Publish(m)) if &m.payload[..] == b"x"),
        "QoS 0 goes on"
    );

    std::fs::remove_file(s.dir.join("data").join("ballast")).unwrap();
    let mut late = None;
    for _ in 0..3 {
        if let Some(packet) = p.next() {
            late = Some(packet);
            break;
        }
    }
    match late {
        Some(MqttPacket::PubAck(a)) => assert_eq!(
            (a.packet_id.get(), a.reason_code),
            (held, PubAckReasonCode::Success)
        ),
        other => panic!("the held PUBACK: {other:?}\n{}", s.log()),
    }
    acked.push(held);
    publish_big(&mut other, 101);
    match other.next() {
        Some(MqttPacket::PubAck(a)) => assert_eq!(a.reason_code, PubAckReasonCode::Success),
        other => panic!("{other:?}"),
    }
    acked.push(101);
    drop((p, other, sub));

    s.restart("KILL");
    let restored = format!(": {} retained messages", acked.len());
    assert!(s.log().contains(&restored), "{restored}: {}", s.log());
}

/// The real binary, its ACL file changed and SIGHUP: a monitor's existing
/// `open/#` subscription loses `open/secret/…` (a carve-out of the new
/// rules) and goes on getting the rest; the log says so.
#[test]
fn an_acl_reload_reaches_a_live_subscription() {
    let s = Served::start("acl-reload", "mio", "");
    let monitor = s.client("mon", "k1").unwrap();
    monitor.subscribe("open/#", QoS::AtLeastOnce);
    let p = s.client("p", "k1").unwrap();
    publish_acked(&p, "open/secret/key", "before", false);
    let m = monitor.next_message(SECONDS).expect("granted whole before");
    assert_eq!(&m.topic[..], "open/secret/key");

    let carved = format!(
        "[[rules]]\neffect = \"deny\"\nops = [\"subscribe\"]\nfilter = \"open/secret/#\"\nname = \"secrets\"\n{}",
        common::binary::OPEN_ACL
    );
    std::fs::write(s.dir.join("acl.toml"), carved).unwrap();
    s.signal("HUP");
    assert!(
        s.wait_log("excluding=open/secret/#", Duration::from_secs(5)),
        "{}",
        s.log()
    );
    publish_acked(&p, "open/secret/key", "after", false);
    publish_acked(&p, "open/plain", "still", false);
    let m = monitor.next_message(SECONDS).expect("the rest still comes");
    assert_eq!(
        (&m.topic[..], &m.payload[..]),
        ("open/plain", &b"still"[..])
    );
    assert!(monitor.next_message(Duration::from_millis(500)).is_none());
}

/// `acl.on_revoke = "disconnect"` on the real binary: the reload that
/// revokes a live subscription closes its client's connection (3.1.1: no
/// reason to give), audited; a client whose rights did not change stays.
#[test]
fn with_on_revoke_disconnect_a_reload_closes_the_client_that_lost_a_subscription() {
    let s = Served::start("acl-revoke", "smol", "on_revoke = \"disconnect\"\n");
    let monitor = s.client("mon", "k1").unwrap();
    monitor.subscribe("open/#", QoS::AtLeastOnce);
    let other = s.client("other", "k1").unwrap();
    other.subscribe("open/#", QoS::AtLeastOnce);
    let revoked = format!(
        "[[rules]]\neffect = \"deny\"\nops = [\"subscribe\"]\nfilter = \"#\"\nprincipal = \"mon\"\n{}",
        common::binary::OPEN_ACL
    );
    std::fs::write(s.dir.join("acl.toml"), revoked).unwrap();
    s.signal("HUP");
    assert!(monitor.closed_within(Duration::from_secs(5)), "{}", s.log());
    assert!(
        s.log().lines().any(|l| l.contains("op=subscribe")
            && l.contains("client_id=mon")
            && l.contains("decision=deny")),
        "{}",
        s.log()
    );
    let p = s.client("p", "k1").unwrap();
    publish_acked(&p, "open/plain", "still", false);
    let m = other.next_message(SECONDS).expect("the other client stays");
    assert_eq!(&m.topic[..], "open/plain");
}
