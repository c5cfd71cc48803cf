//! Hostile clients on loopback, bounded in time: while they misbehave, a
//! well-behaved publisher and subscriber keep exchanging a QoS 1 stream
//! with nothing lost or duplicated. Connection limits answer with their
//! reason code.

#![allow(clippy::disallowed_methods)] // real sockets, real time

mod common;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::e2e::{Running, V3, token};
use common::hub::default_acl;
use common::jwt;
use rumqttc::QoS;
use testament::auth::JwtConfig;
use testament::broker::BrokerConfig;
use testament::codec::{
    Bytes, Connect, ConnectReasonCode, Decoder, Encode, MqttString, Packet, ProtocolVersion,
};
use testament::config::DriverKind;
use testament::driver::DriverConfig;
use testament::session::SessionConfig;

fn start(kind: DriverKind, driver: DriverConfig) -> Running {
    let config = BrokerConfig {
        session: SessionConfig {
            connect_timeout: Duration::from_secs(2),
            ..SessionConfig::default()
        },
        ..BrokerConfig::default()
    };
    Running::start_full(
        kind,
        config,
        JwtConfig::default(),
        default_acl(),
        driver,
        None,
    )
}

/// A publisher and a subscriber exchanging `n` QoS 1 messages while
/// `disturb` runs on another thread; every message arrives exactly once.
fn steady_pair_survives(b: &Running, n: usize, disturb: impl FnOnce() + Send + 'static) {
    let sub = V3::connect(V3::options(
        b.addr,
        "sub",
        "sub",
        &token(&jwt::rsa_a(), "sub", 3600),
    ))
    .unwrap();
    sub.subscribe("open/stream", QoS::AtLeastOnce);
    let publisher = V3::connect(V3::options(
        b.addr,
        "pub",
        "pub",
        &token(&jwt::rsa_a(), "pub", 3600),
    ))
    .unwrap();
    let noise = std::thread::spawn(disturb);
    let mut seen = BTreeSet::new();
    for i in 0..n {
        publisher
            .client
            .publish("open/stream", QoS::AtLeastOnce, false, i.to_string())
            .unwrap();
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    while seen.len() < n {
        let m = sub
            .next_message(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("stream stalled after {} messages", seen.len()));
        let i: usize = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
        assert!(seen.insert(i) || m.dup, "message {i} twice");
    }
    assert!(
        sub.next_message(Duration::from_millis(300)).is_none(),
        "nothing extra"
    );
    noise.join().unwrap();
}

fn connect_bytes(id: &str, token: &str) -> Vec<u8> {
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::try_from(id).unwrap());
    c.username = Some(MqttString::try_from(id).unwrap());
    c.password = Some(Bytes::copy_from_slice(token.as_bytes()));
    Packet::Connect(Box::new(c))
        .to_vec(ProtocolVersion::V5)
        .unwrap()
}

/// The CONNACK code the broker answers `bytes` with, if any.
fn connack(addr: std::net::SocketAddr, bytes: &[u8]) -> Option<ConnectReasonCode> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(bytes).ok()?;
    let mut d = Decoder::new(1 << 16).with_version(ProtocolVersion::V5);
    let mut buf = [0u8; 512];
    loop {
        if let Ok(Some(Packet::ConnAck(a))) = d.decode() {
            return Some(a.reason_code);
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => d.feed(&buf[..n]),
        }
    }
}

#[test]
fn slowloris_connections_are_closed_by_the_connect_timeout() {
    for kind in [DriverKind::Smol, DriverKind::Blocking, DriverKind::Mio] {
        let b = start(kind, DriverConfig::default());
        let addr = b.addr;
        steady_pair_survives(&b, 300, move || {
            let started = Instant::now();
            // 100 silent connections and 100 that dribble a CONNECT.
            let mut socks: Vec<TcpStream> = (0..200)
                .map(|_| TcpStream::connect(addr).unwrap())
                .collect();
            let bytes = connect_bytes("slow", "x");
            for step in 0..3 {
                for s in socks.iter_mut().skip(100) {
                    let _ = s.write_all(&bytes[step..=step]);
                }
                std::thread::sleep(Duration::from_millis(900));
            }
            // By now (> 2 s) the broker closed every one of them.
            for s in &mut socks {
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut buf = [0u8; 64];
                let closed = matches!(s.read(&mut buf), Ok(0) | Err(_));
                assert!(closed, "a slowloris connection is still open");
            }
            assert!(started.elapsed() < Duration::from_secs(10));
        });
        b.stop();
    }
}

#[test]
fn a_garbage_flood_does_not_disturb_the_others() {
    for kind in [DriverKind::Smol, DriverKind::Blocking, DriverKind::Mio] {
        let b = start(kind, DriverConfig::default());
        let addr = b.addr;
        steady_pair_survives(&b, 300, move || {
            let mut seed = 0x2545_f491_4f6c_dd1d_u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for round in 0..200 {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    continue;
                };
                let mut junk: Vec<u8> = (0..256).map(|_| next() as u8).collect();
                if round % 2 == 0 {
                    // A valid CONNECT header, then a malformed body.
                    junk.splice(0..0, [0x10, 0x7f, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05]);
                }
                let _ = s.write_all(&junk);
            }
        });
        b.stop();
    }
}

#[test]
fn a_token_storm_is_rate_limited_without_checking_tokens() {
    let driver = DriverConfig {
        max_authentications_per_address_per_sec: 50,
        ..DriverConfig::default()
    };
    let b = start(DriverKind::Smol, driver);
    let addr = b.addr;
    let bad_key = token(&jwt::rsa_b(), "eve", 3600);
    steady_pair_survives(&b, 300, move || {
        let mut codes = std::collections::BTreeMap::new();
        for i in 0..300 {
            let code = connack(addr, &connect_bytes(&format!("eve-{i}"), &bad_key));
            *codes.entry(format!("{code:?}")).or_insert(0) += 1;
        }
        let rate_limited = codes
            .get(&format!(
                "{:?}",
                Some(ConnectReasonCode::ConnectionRateExceeded)
            ))
            .copied()
            .unwrap_or(0);
        let refused = codes
            .get(&format!(
                "{:?}",
                Some(ConnectReasonCode::BadUserNameOrPassword)
            ))
            .copied()
            .unwrap_or(0);
        assert_eq!(rate_limited + refused, 300, "{codes:?}");
        assert!(rate_limited > 0, "{codes:?}");
    });
    b.stop();
}

#[test]
fn connection_limits_answer_quota_exceeded() {
    let driver = DriverConfig {
        max_connections_per_address: 3,
        ..DriverConfig::default()
    };
    let b = start(DriverKind::Blocking, driver);
    let held: Vec<V3> = (0..3)
        .map(|i| {
            let id = format!("c{i}");
            V3::connect(V3::options(
                b.addr,
                &id,
                &id,
                &token(&jwt::rsa_a(), &id, 3600),
            ))
            .unwrap()
        })
        .collect();
    let t = token(&jwt::rsa_a(), "fourth", 3600);
    assert_eq!(
        connack(b.addr, &connect_bytes("fourth", &t)),
        Some(ConnectReasonCode::QuotaExceeded)
    );
    // One goes; there is room again.
    held.into_iter().next().unwrap().disconnect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        connack(b.addr, &connect_bytes("fourth", &t)),
        Some(ConnectReasonCode::Success)
    );
    b.stop();
}
