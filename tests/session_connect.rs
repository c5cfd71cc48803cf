//! CONNECT to CONNACK: authentication and the will check as pause points,
//! client identifiers, refusals, timeouts, and packets that arrive early
//! (authentication failures and rounds: `session_auth.rs`).

mod common;

use common::session::*;
use common::{V3, V5, hex};
use testament::codec::*;
use testament::session::*;

#[test]
fn v5_connect_pauses_for_authentication_then_open_then_connack() {
    let mut p = Peer::new(V5, SessionConfig::default());
    let a = p.send(Packet::Connect(Box::new(connect(V5, "srv-17", None))));
    assert_eq!(kinds(&a), ["authenticate"]);
    let Action::Authenticate {
        credentials,
        reauthentication,
        ..
    } = &a[0]
    else {
        panic!()
    };
    assert_eq!(&*credentials.client_id, "srv-17");
    assert_eq!(credentials.username.as_deref(), Some("alice"));
    assert_eq!(credentials.password.as_deref(), Some(&b"token"[..]));
    assert!(!reauthentication);
    // Nothing is sent before the decision.
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Success(identity("alice", "srv-17", None)),
    );
    assert_eq!(kinds(&a), ["audit", "open"]);
    let Action::Open {
        client_id,
        clean_start,
        session_expiry_interval,
        ..
    } = &a[1]
    else {
        panic!()
    };
    assert_eq!(
        (&**client_id, *clean_start, *session_expiry_interval),
        ("srv-17", true, 0)
    );
    let a = p.open(open_ticket(&a), false);
    let packets = p.packets(&a);
    let [Packet::ConnAck(ack)] = &packets[..] else {
        panic!("{packets:?}")
    };
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    assert!(!ack.session_present);
    assert_eq!(ack.properties.receive_maximum.map(|r| r.get()), Some(64));
    assert_eq!(
        ack.properties.maximum_packet_size.map(|m| m.get()),
        Some(1024 * 1024)
    );
    assert_eq!(ack.properties.topic_alias_maximum, Some(16));
    assert!(p.session.is_connected());
}

#[test]
fn v311_connack_and_session_present() {
    let mut p = Peer::new(V3, SessionConfig::default());
    let a = p.send(Packet::Connect(Box::new(connect(V3, "srv-17", None))));
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Success(identity("alice", "srv-17", None)),
    );
    let a = p.open(open_ticket(&a), true);
    let sent: Vec<u8> = a
        .iter()
        .filter_map(|x| match x {
            Action::Send(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(sent, hex("20 02 01 00"));
}

#[test]
fn will_denied_at_connect_refuses_with_not_authorized() {
    for (v, code) in [(V5, 0x87u8), (V3, 0x05)] {
        let mut p = Peer::new(v, SessionConfig::default());
        let a = p.send(Packet::Connect(Box::new(connect(
            v,
            "srv-17",
            Some(will("t/w", QoS::AtLeastOnce, true)),
        ))));
        let a = p.authenticate(
            authenticate_ticket(&a),
            AuthnOutcome::Success(identity("alice", "srv-17", None)),
        );
        assert_eq!(kinds(&a), ["audit", "authorize"]);
        let Action::Authorize { query, .. } = &a[1] else {
            panic!()
        };
        assert_eq!(query.op, testament::auth::Operation::Will);
        assert_eq!(query.topic, "t/w");
        assert!(query.retain);
        let a = p.authorize(authorize_tickets(&a)[0], deny());
        let sent: Vec<u8> = a
            .iter()
            .filter_map(|x| match x {
                Action::Send(b) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(sent[3], code, "{v}");
        assert!(closes(&a).len() == 1 && wills(&a).is_empty());
    }
}

#[test]
fn will_check_can_be_turned_off() {
    let config = SessionConfig {
        check_will_at_connect: false,
        ..Default::default()
    };
    let mut p = Peer::new(V5, config);
    let a = p.send(Packet::Connect(Box::new(connect(
        V5,
        "c",
        Some(will("t/w", QoS::AtMostOnce, false)),
    ))));
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Success(identity("alice", "c", None)),
    );
    assert_eq!(kinds(&a), ["audit", "open"]);
}

#[test]
fn empty_client_id_is_assigned_in_v5_and_with_clean_session_in_v311() {
    // [MQTT-3.1.3-6], [MQTT-3.1.3-7]
    let mut p = Peer::new(V5, SessionConfig::default());
    let a = p.send(Packet::Connect(Box::new(connect(V5, "", None))));
    let Action::Authenticate { credentials, .. } = &a[0] else {
        panic!()
    };
    assert_eq!(&*credentials.client_id, "auto-1");
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Success(identity("alice", "auto-1", None)),
    );
    let a = p.open(open_ticket(&a), false);
    let packets = p.packets(&a);
    let [Packet::ConnAck(ack)] = &packets[..] else {
        panic!()
    };
    assert_eq!(
        ack.properties.assigned_client_identifier.as_deref(),
        Some("auto-1")
    );
    // 3.1.1 with Clean Session 0: identifier rejected [MQTT-3.1.3-8].
    let mut p = Peer::new(V3, SessionConfig::default());
    let mut c = connect(V3, "", None);
    c.clean_start = false;
    let a = p.send(Packet::Connect(Box::new(c)));
    assert_eq!(kinds(&a), ["send", "close"]);
    let Action::Send(b) = &a[0] else { panic!() };
    assert_eq!(&b[..], &hex("20 02 00 02")[..]);
}

#[test]
fn client_id_limits() {
    let config = SessionConfig {
        max_client_id_len: 4,
        strict_client_id: true,
        ..Default::default()
    };
    for id in ["toolong", "a-b"] {
        let mut p = Peer::new(V5, config.clone());
        let c = Connect::new(V5, MqttString::try_from(id).unwrap());
        let a = p.send(Packet::Connect(Box::new(c)));
        let packets = p.packets(&a);
        let [Packet::ConnAck(ack)] = &packets[..] else {
            panic!()
        };
        assert_eq!(
            ack.reason_code,
            ConnectReasonCode::ClientIdentifierNotValid,
            "{id}"
        );
    }
}

#[test]
fn will_qos_above_maximum_and_retain_unsupported_are_refused() {
    // [MQTT-3.2.2-12], [MQTT-3.2.2-13]
    let config = SessionConfig {
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        ..Default::default()
    };
    for (w, code) in [
        (
            will("t", QoS::ExactlyOnce, false),
            ConnectReasonCode::QoSNotSupported,
        ),
        (
            will("t", QoS::AtMostOnce, true),
            ConnectReasonCode::RetainNotSupported,
        ),
    ] {
        let mut p = Peer::new(V5, config.clone());
        let a = p.send(Packet::Connect(Box::new(connect(V5, "c", Some(w)))));
        let packets = p.packets(&a);
        let [Packet::ConnAck(ack)] = &packets[..] else {
            panic!()
        };
        assert_eq!(ack.reason_code, code);
    }
}

#[test]
fn unsupported_protocol_gets_the_connack_its_version_reads() {
    let mut p = Peer::new(V3, SessionConfig::default());
    let a = p.bytes(&hex("10 0C 00 04 4D 51 54 54 03 02 00 3C 00 00"));
    let Action::Send(b) = &a[0] else {
        panic!("{a:?}")
    };
    assert_eq!(&b[..], &hex("20 02 00 01")[..]);
    // A level-5 CONNECT with a foreign protocol name: a 5.0 CONNACK 0x84.
    let mut p = Peer::new(V5, SessionConfig::default());
    let a = p.bytes(&hex("10 0D 00 04 4D 51 54 58 05 02 00 3C 00 00 00"));
    assert_eq!(kinds(&a), ["send", "close"]);
    let packets = p.packets(&a);
    let [Packet::ConnAck(ack)] = &packets[..] else {
        panic!("{packets:?}")
    };
    assert_eq!(
        ack.reason_code,
        ConnectReasonCode::UnsupportedProtocolVersion
    );
}

#[test]
fn connect_timeout_closes_without_connack() {
    let mut p = Peer::new(V5, SessionConfig::default());
    assert_eq!(
        p.session.poll_timeout(),
        Some(p.now.mono + std::time::Duration::from_secs(10))
    );
    assert!(p.advance(9_999).is_empty());
    let a = p.advance(1);
    assert_eq!(kinds(&a), ["close"]);
    assert_eq!(p.session.poll_timeout(), None);
    // The same while the authenticator has not answered.
    let mut p = Peer::new(V5, SessionConfig::default());
    p.send(Packet::Connect(Box::new(connect(V5, "c", None))));
    assert_eq!(kinds(&p.advance(10_000)), ["close"]);
}

#[test]
fn packets_before_connack_wait_and_are_processed_after_it() {
    // [MQTT-3.1.4-6]: nothing but AUTH is processed before the CONNACK; a
    // client may pipeline, so its PUBLISH waits rather than failing.
    let mut p = Peer::new(V5, SessionConfig::default());
    let mut bytes = Packet::Connect(Box::new(connect(V5, "c", None)))
        .to_vec(V5)
        .unwrap();
    bytes.extend(
        Packet::Publish(Publish::new(
            TopicName::from_static("a"),
            Bytes::from_static(b"x"),
        ))
        .to_vec(V5)
        .unwrap(),
    );
    let a = p.bytes(&bytes);
    assert_eq!(kinds(&a), ["authenticate"]);
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Success(identity("alice", "c", None)),
    );
    // The CONNACK goes out and the held PUBLISH is decoded at once (its
    // authorization request comes while the CONNACK still batches).
    let a = p.open(open_ticket(&a), false);
    assert_eq!(kinds(&a), ["authorize", "send"]);
    assert!(matches!(&p.packets(&a)[..], [Packet::ConnAck(_)]));
}
