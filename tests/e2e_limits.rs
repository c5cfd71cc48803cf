//! Limits a demanding operator relies on, on a real socket: a client that
//! does not read is dropped (with an audit record) without holding up the
//! others; anonymous clients only where allowed, as `anonymous`.

#![allow(clippy::disallowed_methods)] // real sockets, real time

mod common;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use common::e2e::{Running, V3, token};
use common::hub::default_acl;
use common::jwt;
use rumqttc::QoS;
use testament::auth::{Acl, Effect, FilterTemplate, JwtConfig, Ops, Rule, Subject};
use testament::broker::BrokerConfig;
use testament::codec::{
    Bytes, Connect, Encode, MqttString, Packet, PacketId, ProtocolVersion, Subscribe, Subscription,
    SubscriptionOptions, TopicFilter,
};
use testament::config::{Config, DriverKind};
use testament::driver::DriverConfig;

fn slow_reader(kind: DriverKind) {
    let file = std::env::temp_dir().join(format!(
        "testament-slow-{}-{:?}.jsonl",
        std::process::id(),
        kind as u8
    ));
    let b = Running::start_full(
        kind,
        Config::default().broker_config().unwrap(),
        JwtConfig::default(),
        default_acl(),
        DriverConfig {
            max_output_bytes: 256 * 1024,
            ..DriverConfig::default()
        },
        Some(&file),
    );
    // A raw client that subscribes and then never reads.
    let mut slow = std::net::TcpStream::connect(b.addr).unwrap();
    let v = ProtocolVersion::V311;
    let mut c = Connect::new(v, MqttString::from_static("slow"));
    c.username = Some(MqttString::from_static("slow"));
    c.password = Some(Bytes::from(token(&jwt::rsa_a(), "slow", 3600)));
    c.keep_alive = 0;
    slow.write_all(&Packet::Connect(Box::new(c)).to_vec(v).unwrap())
        .unwrap();
    let sub = Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Default::default(),
        subscriptions: vec![Subscription {
            filter: TopicFilter::from_static("open/#"),
            options: SubscriptionOptions::default(),
        }],
    };
    slow.write_all(&Packet::Subscribe(sub).to_vec(v).unwrap())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let reader = V3::connect(V3::options(
        b.addr,
        "fast",
        "fast",
        &token(&jwt::rsa_a(), "fast", 3600),
    ))
    .unwrap();
    reader.subscribe("open/#", QoS::AtMostOnce);
    let publisher = V3::connect(V3::options(
        b.addr,
        "pub",
        "pub",
        &token(&jwt::rsa_a(), "pub", 3600),
    ))
    .unwrap();
    let payload = vec![b'x'; 16 * 1024];
    let mut received = 0;
    for i in 0..2000 {
        publisher
            .client
            .publish(format!("open/{i}"), QoS::AtMostOnce, false, payload.clone())
            .unwrap();
        // The fast reader keeps up all along.
        if reader.next_message(Duration::from_secs(5)).is_some() {
            received += 1;
        }
    }
    assert_eq!(received, 2000, "the reading client got everything");

    // The slow client was cut off: what it can still read ends.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    let ended = loop {
        match slow.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => total += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break false;
            }
            Err(_) => break true,
        }
    };
    assert!(
        ended,
        "the slow client is disconnected (read {total} bytes)"
    );
    assert!(
        total < 2000 * 16 * 1024,
        "it did not get everything queued for it"
    );
    b.stop();
    let audit: Vec<String> =
        testament::driver::replay(std::io::BufReader::new(std::fs::File::open(&file).unwrap()))
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
    assert!(
        audit
            .iter()
            .any(|l| l.starts_with("event=slow_client") && l.contains("client_id=slow")),
        "{audit:#?}"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn smol_a_client_that_does_not_read_is_dropped_and_audited() {
    slow_reader(DriverKind::Smol);
}

#[test]
fn blocking_a_client_that_does_not_read_is_dropped_and_audited() {
    slow_reader(DriverKind::Blocking);
}

#[test]
fn mio_a_client_that_does_not_read_is_dropped_and_audited() {
    slow_reader(DriverKind::Mio);
}

#[test]
fn anonymous_clients_only_where_allowed_and_named_by_the_acl() {
    let acl = Acl::new(vec![
        Rule::new(
            Effect::Allow,
            Ops::ALL,
            Subject::Anonymous,
            FilterTemplate::new("guests/#").unwrap(),
        ),
        Rule::new(
            Effect::Allow,
            Ops::SUBSCRIBE,
            Subject::Authenticated,
            FilterTemplate::new("#").unwrap(),
        ),
    ]);
    let refused = Running::start(
        DriverKind::Smol,
        BrokerConfig::default(),
        JwtConfig::default(),
        acl.clone(),
    );
    let anon = rumqttc::MqttOptions::new("guest", "127.0.0.1", refused.addr.port());
    assert!(V3::connect(anon).is_err(), "refused by default");
    refused.stop();

    let allowed = Running::start(
        DriverKind::Smol,
        BrokerConfig::default(),
        JwtConfig {
            allow_anonymous: true,
            ..JwtConfig::default()
        },
        acl,
    );
    let watcher = V3::connect(V3::options(
        allowed.addr,
        "watcher",
        "watcher",
        &token(&jwt::rsa_a(), "watcher", 3600),
    ))
    .unwrap();
    watcher.subscribe("#", QoS::AtMostOnce);
    let guest = V3::connect(rumqttc::MqttOptions::new(
        "guest",
        "127.0.0.1",
        allowed.addr.port(),
    ))
    .unwrap();
    guest
        .client
        .publish("members/hello", QoS::AtLeastOnce, false, "denied")
        .unwrap();
    guest
        .client
        .publish("guests/hello", QoS::AtLeastOnce, false, "allowed")
        .unwrap();
    let m = watcher
        .next_message(Duration::from_secs(5))
        .expect("the guest's allowed message");
    assert_eq!(
        &m.topic[..],
        "guests/hello",
        "only what the ACL names for `anonymous`"
    );
    assert!(watcher.next_message(Duration::from_millis(300)).is_none());
    allowed.stop();
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn sockets_are_released(kind: DriverKind) {
    let b = Running::start(
        kind,
        BrokerConfig::default(),
        JwtConfig::default(),
        default_acl(),
    );
    let v = ProtocolVersion::V311;
    let t = token(&jwt::rsa_a(), "many", 3600);
    // Settle what the broker and the test opened once.
    std::thread::sleep(Duration::from_millis(200));
    let before = open_fds();
    for round in 0..3 {
        let socks: Vec<std::net::TcpStream> = (0..100)
            .map(|i| {
                let mut s = std::net::TcpStream::connect(b.addr).unwrap();
                let mut c =
                    Connect::new(v, MqttString::try_from(format!("m-{round}-{i}")).unwrap());
                c.username = Some(MqttString::from_static("many"));
                c.password = Some(Bytes::from(t.clone()));
                s.write_all(&Packet::Connect(Box::new(c)).to_vec(v).unwrap())
                    .unwrap();
                let mut ack = [0u8; 4];
                s.read_exact(&mut ack).unwrap();
                s
            })
            .collect();
        // The clients go away without a word.
        drop(socks);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open_fds() > before + 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        open_fds() <= before + 5,
        "{} descriptors before, {} after 300 clients came and went",
        before,
        open_fds()
    );
    b.stop();
}

#[test]
fn smol_connections_closed_by_their_clients_release_their_sockets() {
    sockets_are_released(DriverKind::Smol);
}

#[test]
fn blocking_connections_closed_by_their_clients_release_their_sockets() {
    sockets_are_released(DriverKind::Blocking);
}

#[test]
fn mio_connections_closed_by_their_clients_release_their_sockets() {
    sockets_are_released(DriverKind::Mio);
}

/// A raw 3.1.1 client `id`, connected.
fn raw(b: &Running, id: &str) -> common::raw::Raw {
    let v = ProtocolVersion::V311;
    let mut c = common::raw::Raw::open(b.addr, v, Duration::from_secs(3));
    let mut connect = Connect::new(v, MqttString::try_from(id).unwrap());
    connect.username = Some(MqttString::try_from(id).unwrap());
    connect.password = Some(Bytes::from(token(&jwt::rsa_a(), id, 3600)));
    connect.keep_alive = 0;
    assert!(c.send(Packet::Connect(Box::new(connect))));
    assert!(matches!(c.next(), Some(Packet::ConnAck(_))));
    c
}

/// A subscriber slower than its publisher, QoS 1 and the default settings:
/// its queue fills past its bound, the publisher is no longer read until it
/// catches up, and not one acknowledged message is lost.
fn a_slow_qos1_subscriber_loses_nothing(kind: DriverKind) {
    const MESSAGES: usize = 4_000;
    let b = Running::start(
        kind,
        Config::default().broker_config().unwrap(),
        JwtConfig::default(),
        default_acl(),
    );
    let mut sub = raw(&b, "slow");
    let options = SubscriptionOptions {
        qos: testament::codec::QoS::AtLeastOnce,
        ..SubscriptionOptions::default()
    };
    assert!(sub.send(Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Default::default(),
        subscriptions: vec![Subscription {
            filter: TopicFilter::from_static("open/stream"),
            options,
        }],
    })));
    assert!(matches!(sub.next(), Some(Packet::SubAck(_))));
    let slow = std::thread::spawn(move || {
        let mut got = Vec::new();
        while let Some(p) = sub.next() {
            if let Packet::Publish(p) = p {
                got.push(p.payload.clone());
                std::thread::sleep(Duration::from_micros(300));
                sub.send(Packet::PubAck(testament::codec::PubAck::new(
                    p.packet_id.unwrap(),
                )));
            }
        }
        got
    });
    // As fast as 64 in flight allow.
    let mut p = raw(&b, "fast");
    let mut in_flight = std::collections::BTreeMap::new();
    let mut acked = std::collections::BTreeSet::new();
    let mut n = 0;
    while acked.len() < MESSAGES {
        while n < MESSAGES && in_flight.len() < 64 {
            let id = PacketId::new(u16::try_from(n % 60_000 + 1).unwrap()).unwrap();
            let mut m = testament::codec::Publish::new(
                testament::codec::TopicName::from_static("open/stream"),
                format!("m{n}"),
            );
            m.qos = testament::codec::QoS::AtLeastOnce;
            m.packet_id = Some(id);
            assert!(p.send(Packet::Publish(m)));
            in_flight.insert(id, format!("m{n}"));
            n += 1;
        }
        match p.next() {
            Some(Packet::PubAck(a)) => {
                if let Some(m) = in_flight.remove(&a.packet_id) {
                    acked.insert(m);
                }
            }
            Some(_) => {}
            None => panic!("the publisher waited 3 s for an acknowledgement"),
        }
    }
    let got = slow.join().unwrap();
    let received: std::collections::BTreeSet<String> = got
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert_eq!(got.len(), MESSAGES, "each once");
    let lost: Vec<_> = acked.difference(&received).collect();
    assert!(
        lost.is_empty(),
        "acknowledged, then lost: {} of them",
        lost.len()
    );
    b.stop();
}

#[test]
fn mio_a_slow_qos1_subscriber_loses_nothing() {
    a_slow_qos1_subscriber_loses_nothing(DriverKind::Mio);
}

#[test]
fn smol_a_slow_qos1_subscriber_loses_nothing() {
    a_slow_qos1_subscriber_loses_nothing(DriverKind::Smol);
}

#[test]
fn blocking_a_slow_qos1_subscriber_loses_nothing() {
    a_slow_qos1_subscriber_loses_nothing(DriverKind::Blocking);
}

/// A client the broker disconnects while it is still sending (5.0: QoS 2
/// publishes past the Receive Maximum, never released) reads the
/// DISCONNECT 0x93 and its reason, not a reset: the broker half-closes and
/// reads what still comes for a bounded time before it closes (closing a
/// socket with unread input sends RST, which can wipe what the client had
/// not read yet).
fn a_disconnected_client_still_sending_reads_the_reason(kind: DriverKind) {
    let mut config = BrokerConfig::default();
    config.session.receive_maximum = 2;
    let b = Running::start(kind, config, JwtConfig::default(), default_acl());
    let mut s = std::net::TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::try_from("busy").unwrap());
    c.username = Some(MqttString::try_from("busy").unwrap());
    c.password = Some(Bytes::from(token(&jwt::rsa_a(), "busy", 3600)));
    s.write_all(
        &Packet::Connect(Box::new(c))
            .to_vec(ProtocolVersion::V5)
            .unwrap(),
    )
    .unwrap();
    // QoS 2 publishes never released: the third is past the Receive
    // Maximum; far more bytes follow than the broker reads before it
    // decides.
    let mut burst = Vec::new();
    for id in 1..=2_000u16 {
        let mut p = testament::codec::Publish::new(
            testament::codec::TopicName::from_static("open/busy"),
            vec![b'x'; 100],
        );
        p.qos = testament::codec::QoS::ExactlyOnce;
        p.packet_id = PacketId::new(id);
        burst.extend(Packet::Publish(p).to_vec(ProtocolVersion::V5).unwrap());
    }
    let _ = s.write_all(&burst);
    // The broker decided and closed meanwhile. The client, still busy,
    // writes on: the broker still reads (and drops) what comes, so this is
    // no broken pipe — a client library that stops at a failed write never
    // reads the reason.
    std::thread::sleep(Duration::from_millis(300));
    let wrote = s.write_all(&burst[..4096]);
    assert!(wrote.is_ok(), "{kind:?}: {wrote:?}");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        match s.read(&mut chunk) {
            Ok(0) => break "end".to_string(),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => break format!("{:?}", e.kind()),
        }
    };
    let mut d = testament::codec::Decoder::new(1 << 20).with_version(ProtocolVersion::V5);
    d.feed(&got);
    let mut packets = Vec::new();
    while let Ok(Some(p)) = d.decode() {
        packets.push(p);
    }
    assert!(
        packets.iter().any(|p| matches!(p, Packet::Disconnect(d)
            if d.reason_code == testament::codec::DisconnectReasonCode::ReceiveMaximumExceeded)),
        "{kind:?}: read {} bytes ({} packets, the last {:?}) then {end}",
        got.len(),
        packets.len(),
        packets
            .last()
            .map(|p| format!("{p:?}").chars().take(60).collect::<String>())
    );
    b.stop();
}

#[test]
fn mio_a_disconnected_client_still_sending_reads_the_reason() {
    a_disconnected_client_still_sending_reads_the_reason(DriverKind::Mio);
}

#[test]
fn smol_a_disconnected_client_still_sending_reads_the_reason() {
    a_disconnected_client_still_sending_reads_the_reason(DriverKind::Smol);
}

#[test]
fn blocking_a_disconnected_client_still_sending_reads_the_reason() {
    a_disconnected_client_still_sending_reads_the_reason(DriverKind::Blocking);
}
