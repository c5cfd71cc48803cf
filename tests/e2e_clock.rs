//! The wall clock steps an hour, forward then back, while the monotonic
//! clock runs on: every driver, real clients. Protocol timers run on the
//! monotonic clock — no connection is closed and no will fires for the
//! step, and a silent client is still cut off on time — while tokens are
//! still judged by the wall clock, stepped.

#![allow(clippy::disallowed_methods)] // real clients run on real time

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::e2e::{Running, V3, token, unix_now};
use common::hub::default_acl;
use common::jwt;
use rumqttc::{LastWill, QoS};
use serde_json::json;
use testament::auth::JwtConfig;
use testament::broker::BrokerConfig;
use testament::codec::{
    Bytes, Connect, Encode, LastWill as Will, MqttString, Packet, ProtocolVersion,
};
use testament::config::DriverKind;
use testament::driver::{Clock, DriverConfig, SystemClock};
use testament::time::{Instant, Now, WallStep};

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

/// The system's clocks, the wall one stepped by what the test says.
#[derive(Debug)]
struct SteppedClock {
    system: SystemClock,
    /// Milliseconds added to the wall clock.
    offset_ms: AtomicI64,
}

impl SteppedClock {
    fn set_offset(&self, offset: WallStep) {
        let ms = match offset {
            WallStep::Forward(d) => d.as_millis() as i64,
            WallStep::Back(d) => -(d.as_millis() as i64),
        };
        self.offset_ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for SteppedClock {
    fn now(&self) -> Now {
        let now = self.system.now();
        let ms = self.offset_ms.load(Ordering::SeqCst);
        let step = if ms >= 0 {
            WallStep::Forward(Duration::from_millis(ms as u64))
        } else {
            WallStep::Back(Duration::from_millis(ms.unsigned_abs()))
        };
        now.with_wall_step(step)
    }

    fn instant_of(&self, at: Instant) -> std::time::Instant {
        self.system.instant_of(at)
    }
}

fn start(kind: DriverKind, clock: Arc<SteppedClock>) -> Running {
    let driver = DriverConfig {
        clock,
        ..DriverConfig::default()
    };
    // The default expiry policy (disconnect at `exp` + leeway) is on: a
    // token the step expired must not close its connection either.
    Running::start_full(
        kind,
        BrokerConfig::default(),
        JwtConfig::default(),
        default_acl(),
        driver,
        None,
    )
}

fn connect(b: &Running, id: &str, claims: serde_json::Value) -> Result<V3, String> {
    let user = claims["sub"].as_str().unwrap().to_owned();
    V3::connect(V3::options(
        b.addr,
        id,
        &user,
        &jwt::mint(&jwt::rsa_a(), &claims),
    ))
}

/// A 3.1.1 client on a raw socket that connects with a keep alive of one
/// second and a will, then never sends another byte.
fn silent_client(b: &Running, name: &str) -> TcpStream {
    let mut c = Connect::new(ProtocolVersion::V311, MqttString::try_from(name).unwrap());
    c.keep_alive = 1;
    c.username = Some(MqttString::try_from(name).unwrap());
    c.password = Some(Bytes::from(token(&jwt::rsa_a(), name, 7200)));
    c.will = Some(Will {
        topic: format!("trusted/{name}/server/state").try_into().unwrap(),
        payload: Bytes::from_static(b"down"),
        qos: testament::codec::QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    let mut s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(5 * SECOND)).unwrap();
    s.write_all(
        &Packet::Connect(Box::new(c))
            .to_vec(ProtocolVersion::V311)
            .unwrap(),
    )
    .unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    s
}

fn wall_steps_fire_nothing_and_tokens_follow_the_wall(kind: DriverKind) {
    let clock = Arc::new(SteppedClock {
        system: SystemClock::new(),
        offset_ms: AtomicI64::new(0),
    });
    let b = start(kind, clock.clone());
    let real = unix_now();
    let monitor = V3::connect(V3::options(
        b.addr,
        "monitor",
        "monitor",
        &token(&jwt::rsa_a(), "monitor", 7200),
    ))
    .unwrap();
    monitor.subscribe("trusted/+/server/state", QoS::AtLeastOnce);
    // A server whose token expires in ten minutes: inside the step.
    let mut o = V3::options(b.addr, "a", "a", &token(&jwt::rsa_a(), "a", 600));
    o.set_keep_alive(Duration::from_secs(5));
    o.set_last_will(LastWill::new(
        "trusted/a/server/state",
        "down",
        QoS::AtLeastOnce,
        false,
    ));
    let a = V3::connect(o).unwrap();

    // The wall clock jumps an hour ahead; the monotonic clock runs on.
    clock.set_offset(WallStep::Forward(HOUR));
    std::thread::sleep(SECOND);
    a.client
        .publish("trusted/a/server/state", QoS::AtLeastOnce, false, "up")
        .unwrap();
    let m = monitor
        .next_message(5 * SECOND)
        .expect("a is still connected");
    assert_eq!(&m.payload[..], b"up", "no will fired for the step");
    // A token the step really expired is judged by the wall clock.
    let half_hour = json!({ "sub": "b", "iat": real, "exp": real + 1800 });
    assert!(
        connect(&b, "b", half_hour).is_err(),
        "a token expired by the stepped wall clock is refused"
    );
    let two_hours = json!({ "sub": "b", "iat": real, "exp": real + 7200 });
    let still_valid = connect(&b, "b", two_hours).expect("a token still valid then");
    still_valid.disconnect();

    // The wall clock goes back two hours: an hour behind the real one.
    clock.set_offset(WallStep::Back(HOUR));
    std::thread::sleep(SECOND);
    a.client
        .publish(
            "trusted/a/server/state",
            QoS::AtLeastOnce,
            false,
            "up again",
        )
        .unwrap();
    let m = monitor
        .next_message(5 * SECOND)
        .expect("a is still connected");
    assert_eq!(
        &m.payload[..],
        b"up again",
        "no will fired for the step back"
    );
    // Not valid before ten minutes ago by the real clock: fifty minutes
    // ahead of the stepped one.
    let not_yet = json!({ "sub": "c", "nbf": real - 600, "exp": real + 7200 });
    assert!(
        connect(&b, "c", not_yet).is_err(),
        "a token not yet valid by the stepped wall clock is refused"
    );
    // Timers did not stall: a silent client is cut off at 1.5 × its keep
    // alive, an hour before the stepped wall clock would say, and its will
    // is the one "down" the monitor sees.
    let mut silent = silent_client(&b, "s");
    let m = monitor
        .next_message(5 * SECOND)
        .expect("the silent client's will");
    assert_eq!(&m.topic[..], "trusted/s/server/state");
    assert_eq!(&m.payload[..], b"down");
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without a word (3.1.1): {rest:?}");
    // And nothing else: a's will never fired.
    assert!(monitor.next_message(2 * SECOND).is_none());
    a.disconnect();
    b.stop();
}

#[test]
fn mio_wall_steps_fire_nothing_and_tokens_follow_the_wall() {
    wall_steps_fire_nothing_and_tokens_follow_the_wall(DriverKind::Mio);
}

#[test]
fn smol_wall_steps_fire_nothing_and_tokens_follow_the_wall() {
    wall_steps_fire_nothing_and_tokens_follow_the_wall(DriverKind::Smol);
}

#[test]
fn blocking_wall_steps_fire_nothing_and_tokens_follow_the_wall() {
    wall_steps_fire_nothing_and_tokens_follow_the_wall(DriverKind::Blocking);
}

/// Deadlines come due while another client floods the broker: a silent
/// client is still cut off at 1.5 × its keep alive — the loop never goes
/// idle, so a driver that ran its timers only when idle would miss it.
fn timers_fire_while_traffic_flows(kind: DriverKind) {
    let b = start(
        kind,
        Arc::new(SteppedClock {
            system: SystemClock::new(),
            offset_ms: AtomicI64::new(0),
        }),
    );
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut flooder = TcpStream::connect(b.addr).unwrap();
    let mut c = Connect::new(ProtocolVersion::V311, MqttString::try_from("f").unwrap());
    c.username = Some(MqttString::try_from("f").unwrap());
    c.password = Some(Bytes::from(token(&jwt::rsa_a(), "f", 7200)));
    flooder
        .write_all(
            &Packet::Connect(Box::new(c))
                .to_vec(ProtocolVersion::V311)
                .unwrap(),
        )
        .unwrap();
    let mut connack = [0u8; 4];
    flooder.read_exact(&mut connack).unwrap();
    let publish = Packet::Publish(testament::codec::Publish::new(
        testament::codec::TopicName::from_static("open/flood"),
        &b"x"[..],
    ))
    .to_vec(ProtocolVersion::V311)
    .unwrap();
    let burst: Vec<u8> = publish
        .iter()
        .copied()
        .cycle()
        .take(publish.len() * 4096)
        .collect();
    let still = flooding.clone();
    let flood = std::thread::spawn(move || {
        let mut sent = 0usize;
        while still.load(Ordering::Relaxed) && flooder.write_all(&burst).is_ok() {
            sent += 4096;
        }
        sent
    });
    std::thread::sleep(SECOND / 2);
    let started = std::time::Instant::now();
    let mut silent = silent_client(&b, "s");
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    let closed_after = started.elapsed();
    flooding.store(false, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert!(sent > 4096, "the flood flowed: {sent} publishes");
    assert!(
        closed_after < 4 * SECOND,
        "cut off after {closed_after:?} (keep alive 1 s) while {sent} publishes flowed"
    );
    b.stop();
}

#[test]
fn mio_timers_fire_while_traffic_flows() {
    timers_fire_while_traffic_flows(DriverKind::Mio);
}

#[test]
fn smol_timers_fire_while_traffic_flows() {
    timers_fire_while_traffic_flows(DriverKind::Smol);
}

#[test]
fn blocking_timers_fire_while_traffic_flows() {
    timers_fire_while_traffic_flows(DriverKind::Blocking);
}
