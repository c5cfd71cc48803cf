//! MQTT 5.0 end to end: rumqttc's v5 client for will delay and session
//! expiry, enhanced authentication with a token as Authentication Data, and
//! re-authentication (AUTH 0x19) over a raw socket with our codec.

#![allow(clippy::disallowed_methods)] // real clients run on real time

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::e2e::{Running, token};
use common::hub::default_acl;
use common::jwt;
use common::raw::Raw;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, LastWillProperties, Packet as RPacket};
use rumqttc::v5::{Client, Event, MqttOptions};
use testament::auth::JwtConfig;
use testament::broker::BrokerConfig;
use testament::codec::{
    Auth, AuthReasonCode, Bytes, Connect, DisconnectReasonCode, LastWill as Will, MqttString,
    Packet, ProtocolVersion, QoS as Q, TopicName,
};
use testament::config::DriverKind;

/// Outlasts a connection attempt: rumqttc drops one cut short by it.
const POLL: Duration = Duration::from_millis(250);

struct V5 {
    client: Client,
    events: mpsc::Receiver<Result<Event, String>>,
    stop: mpsc::Sender<()>,
}

impl V5 {
    fn connect(options: MqttOptions) -> Result<Self, String> {
        let (client, mut conn) = Client::new(options, 64);
        let (tx, events) = mpsc::channel();
        let (stop, stopped) = mpsc::channel();
        std::thread::spawn(move || {
            while stopped.try_recv().is_err() {
                match conn.recv_timeout(POLL) {
                    Ok(Ok(ev)) => {
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                    Err(_) => {}
                }
            }
        });
        let me = Self {
            client,
            events,
            stop,
        };
        match me.wait(Duration::from_secs(10), |p| {
            matches!(p, RPacket::ConnAck(_))
        }) {
            Some(_) => Ok(me),
            None => Err("no CONNACK".into()),
        }
    }

    fn wait(&self, timeout: Duration, f: impl Fn(&RPacket) -> bool) -> Option<RPacket> {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Ok(Event::Incoming(p))) if f(&p) => return Some(p),
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    fn payload(&self, timeout: Duration) -> Option<String> {
        match self.wait(timeout, |p| matches!(p, RPacket::Publish(_))) {
            Some(RPacket::Publish(p)) => Some(String::from_utf8_lossy(&p.payload).into_owned()),
            _ => None,
        }
    }

    fn crash(self) {
        let _ = self.stop.send(());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn options(b: &Running, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", b.addr.port());
    o.set_credentials(id, token(&jwt::rsa_a(), id, 3600));
    o.set_keep_alive(Duration::from_secs(30));
    o
}

fn monitor(b: &Running) -> V5 {
    let m = V5::connect(options(b, "mon")).unwrap();
    m.client
        .subscribe("trusted/+/state", QoS::AtLeastOnce)
        .unwrap();
    assert!(
        m.wait(Duration::from_secs(5), |p| matches!(p, RPacket::SubAck(_)))
            .is_some()
    );
    m
}

fn server_with_delayed_will(b: &Running, delay: u32) -> V5 {
    let mut o = options(b, "srv");
    let props = LastWillProperties {
        delay_interval: Some(delay),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };
    o.set_last_will(LastWill::new(
        "trusted/srv/state",
        "down",
        QoS::AtLeastOnce,
        false,
        Some(props),
    ));
    o.set_session_expiry_interval(Some(60));
    V5::connect(o).unwrap()
}

#[test]
fn a_delayed_will_waits_and_a_reconnect_cancels_it() {
    for kind in [DriverKind::Smol, DriverKind::Blocking, DriverKind::Mio] {
        let b = Running::start(
            kind,
            BrokerConfig::default(),
            JwtConfig::default(),
            default_acl(),
        );
        let m = monitor(&b);
        server_with_delayed_will(&b, 2).crash();
        assert_eq!(
            m.payload(Duration::from_millis(1200)),
            None,
            "not before its delay"
        );
        assert_eq!(m.payload(Duration::from_secs(3)).as_deref(), Some("down"));

        // Back within the delay: the will is cancelled.
        server_with_delayed_will(&b, 2).crash();
        std::thread::sleep(Duration::from_millis(500));
        let mut o = options(&b, "srv");
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(60));
        let back = V5::connect(o).unwrap();
        assert_eq!(m.payload(Duration::from_secs(3)), None);
        drop(back);
        b.stop();
    }
}

#[test]
fn enhanced_authentication_carries_the_token() {
    let jwt = JwtConfig {
        enhanced_method: Some("JWT".into()),
        ..JwtConfig::default()
    };
    let b = Running::start(
        DriverKind::Smol,
        BrokerConfig::default(),
        jwt,
        default_acl(),
    );
    let mut o = MqttOptions::new("enh", "127.0.0.1", b.addr.port());
    o.set_credentials("enh", "");
    o.set_authentication_method(Some("JWT".into()));
    o.set_authentication_data(Some(token(&jwt::rsa_a(), "enh", 3600).into_bytes().into()));
    let c = V5::connect(o).unwrap();
    c.client
        .subscribe("trusted/enh/#", QoS::AtMostOnce)
        .unwrap();
    assert!(
        c.wait(Duration::from_secs(5), |p| matches!(p, RPacket::SubAck(_)))
            .is_some()
    );
    b.stop();
}

fn auth(reason: AuthReasonCode, data: &str) -> Packet {
    let mut a = Auth::new(reason);
    a.properties.authentication_method = Some(MqttString::from_static("JWT"));
    a.properties.authentication_data = Some(Bytes::copy_from_slice(data.as_bytes()));
    Packet::Auth(a)
}

#[test]
fn reauthentication_moves_the_identity_and_a_failed_one_disconnects_with_the_will() {
    let jwt = JwtConfig {
        enhanced_method: Some("JWT".into()),
        ..JwtConfig::default()
    };
    let b = Running::start(
        DriverKind::Blocking,
        BrokerConfig::default(),
        jwt,
        default_acl(),
    );
    let m = monitor(&b);
    // A raw 5.0 client: CONNECT with enhanced auth, then AUTH 0x19.
    let mut raw = Raw::open(b.addr, ProtocolVersion::V5, Duration::from_secs(5));
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::from_static("srv"));
    c.username = Some(MqttString::from_static("srv"));
    c.properties.authentication_method = Some(MqttString::from_static("JWT"));
    c.properties.authentication_data = Some(Bytes::from(token(&jwt::rsa_a(), "srv", 60)));
    c.will = Some(Will {
        topic: TopicName::from_static("trusted/srv/state"),
        payload: Bytes::from_static(b"down"),
        qos: Q::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    raw.send(Packet::Connect(Box::new(c)));
    assert!(
        matches!(raw.next(), Some(Packet::ConnAck(a)) if a.reason_code == testament::codec::ConnectReasonCode::Success)
    );

    // A fresh token (signed by the rotated-in key) replaces the identity.
    b.rotate_keys(&[&jwt::rsa_a(), &jwt::rsa_b()]);
    raw.send(auth(
        AuthReasonCode::ReAuthenticate,
        &token(&jwt::rsa_b(), "srv", 3600),
    ));
    assert!(
        matches!(raw.next(), Some(Packet::Auth(a)) if a.reason_code == AuthReasonCode::Success)
    );

    // A bad one: DISCONNECT 0x87, then the will.
    raw.send(auth(AuthReasonCode::ReAuthenticate, "not-a-token"));
    assert!(
        matches!(raw.next(), Some(Packet::Disconnect(d)) if d.reason_code == DisconnectReasonCode::NotAuthorized)
    );
    assert!(raw.next().is_none(), "closed");
    assert_eq!(m.payload(Duration::from_secs(5)).as_deref(), Some("down"));
    b.stop();
}
