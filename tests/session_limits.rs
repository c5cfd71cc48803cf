//! Bounds and faults: every table has a limit, exceeding it is a reason code
//! and a close; malformed input from a connected client gets the reason code
//! its fault earns, the will, and the close — in that order.

mod common;

use common::session::*;
use common::{V3, V5, hex, pid};
use testament::codec::*;
use testament::session::SessionError;
use testament::session::*;

fn peer(v: ProtocolVersion, config: SessionConfig) -> Peer {
    Peer::connected(
        v,
        config,
        connect(v, "c1", Some(will("w", QoS::AtMostOnce, false))),
        identity("alice", "c1", None),
    )
}

fn disconnect_code(p: &mut Peer, a: &[Action]) -> DisconnectReasonCode {
    match &p.packets(a)[..] {
        [Packet::Disconnect(d)] => d.reason_code,
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_input_gets_its_reason_code_then_the_will_then_the_close() {
    let cases: &[(&str, DisconnectReasonCode)] = &[
        (
            "30 05 00 03 61 2F 2B",
            DisconnectReasonCode::TopicNameInvalid,
        ),
        (
            "30 05 00 03 61 00 62",
            DisconnectReasonCode::MalformedPacket,
        ),
        ("62 02 00 00", DisconnectReasonCode::ProtocolError), // PUBREL with packet identifier 0
        ("82 03 00 01 00", DisconnectReasonCode::ProtocolError),
        ("C1 00", DisconnectReasonCode::MalformedPacket),
        ("30 FF FF FF 7F", DisconnectReasonCode::PacketTooLarge),
    ];
    for (wire, expected) in cases {
        let mut p = peer(V5, SessionConfig::default());
        let a = p.bytes(&hex(wire));
        assert_eq!(disconnect_code(&mut p, &a), *expected, "{wire}");
        assert_eq!(kinds(&a), ["send", "audit", "will", "close"], "{wire}");
    }
    // 3.1.1: no DISCONNECT, the will and the close.
    let mut p = peer(V3, SessionConfig::default());
    let a = p.bytes(&hex("30 05 00 03 61 2F 2B"));
    assert_eq!(kinds(&a), ["audit", "will", "close"]);
}

#[test]
fn server_to_client_packets_from_a_client_are_protocol_errors() {
    for packet in [
        Packet::ConnAck(ConnAck::new(false, ConnectReasonCode::Success)),
        Packet::PingResp,
        Packet::SubAck(SubAck {
            packet_id: pid(1),
            properties: Default::default(),
            reason_codes: vec![SubAckReasonCode::GrantedQoS0],
        }),
    ] {
        let mut p = peer(V5, SessionConfig::default());
        let a = p.send(packet);
        assert_eq!(
            disconnect_code(&mut p, &a),
            DisconnectReasonCode::ProtocolError
        );
    }
}

#[test]
fn pending_authorizations_are_bounded() {
    let config = SessionConfig {
        max_pending_authorizations: 3,
        ..Default::default()
    };
    let mut p = peer(V5, config);
    for _ in 0..3 {
        let a = p.send(Packet::Publish(Publish::new(
            TopicName::from_static("a"),
            Bytes::new(),
        )));
        assert_eq!(kinds(&a), ["authorize"]);
    }
    let a = p.send(Packet::Publish(Publish::new(
        TopicName::from_static("a"),
        Bytes::new(),
    )));
    assert_eq!(
        disconnect_code(&mut p, &a),
        DisconnectReasonCode::MessageRateTooHigh
    );
}

#[test]
fn a_flood_before_connack_is_cut_off_without_a_will() {
    let config = SessionConfig {
        max_packet_size: 64,
        ..Default::default()
    };
    let mut p = Peer::new(V5, config);
    let a = p.send(Packet::Connect(Box::new(connect(
        V5,
        "c1",
        Some(will("w", QoS::AtMostOnce, false)),
    ))));
    assert_eq!(kinds(&a), ["authenticate"]);
    let ping = hex("C0 00");
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.extend_from_slice(&ping);
    }
    let a = p.bytes(&flood);
    assert_eq!(kinds(&a), ["close"]);
    assert!(wills(&a).is_empty());
}

#[test]
fn disconnect_may_not_raise_session_expiry_from_zero() {
    // §3.14.2.2.2
    let mut p = peer(V5, SessionConfig::default());
    let mut d = Disconnect::new(DisconnectReasonCode::NormalDisconnection);
    d.properties.session_expiry_interval = Some(60);
    let a = p.send(Packet::Disconnect(d));
    assert_eq!(
        disconnect_code(&mut p, &a),
        DisconnectReasonCode::ProtocolError
    );
    assert_eq!(
        wills(&a).len(),
        1,
        "a protocol error is not a normal disconnection"
    );
}

#[test]
fn enhanced_authentication_can_take_several_rounds() {
    // [MQTT-4.12.0-2], [MQTT-4.12.0-3]
    let mut p = Peer::new(V5, SessionConfig::default());
    let mut c = connect(V5, "c1", None);
    c.password = None;
    c.properties.authentication_method = Some(MqttString::from_static("JWT"));
    c.properties.authentication_data = Some(Bytes::from_static(b"hello"));
    let a = p.send(Packet::Connect(Box::new(c)));
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Continue(Bytes::from_static(b"challenge")),
    );
    let packets = p.packets(&a);
    let [Packet::Auth(challenge)] = &packets[..] else {
        panic!("{packets:?}")
    };
    assert_eq!(
        challenge.reason_code,
        AuthReasonCode::ContinueAuthentication
    );
    assert_eq!(
        challenge.properties.authentication_data.as_deref(),
        Some(&b"challenge"[..])
    );
    // While the client answers, no ticket is open, not even a made-up one.
    for t in [Ticket(0), Ticket(1)] {
        assert_eq!(
            p.session.handle_authentication(
                p.now,
                t,
                AuthnOutcome::Success(identity("alice", "c1", None))
            ),
            Err(SessionError::UnknownTicket(t))
        );
    }
    let mut answer = Auth::new(AuthReasonCode::ContinueAuthentication);
    answer.properties.authentication_method = Some(MqttString::from_static("JWT"));
    answer.properties.authentication_data = Some(Bytes::from_static(b"response"));
    let a = p.send(Packet::Auth(answer));
    let Action::Authenticate {
        credentials,
        ticket,
        ..
    } = &a[0]
    else {
        panic!("{a:?}")
    };
    assert_eq!(credentials.auth_data.as_deref(), Some(&b"response"[..]));
    let a = p.authenticate(
        *ticket,
        AuthnOutcome::Success(identity("alice", "c1", None)),
    );
    let a = p.open(open_ticket(&a), false);
    let packets = p.packets(&a);
    let [Packet::ConnAck(ack)] = &packets[..] else {
        panic!()
    };
    assert_eq!(ack.properties.authentication_method.as_deref(), Some("JWT"));
    // A 3.1.1 client cannot do more rounds: refused.
    let mut p = Peer::new(V3, SessionConfig::default());
    let a = p.send(Packet::Connect(Box::new(connect(V3, "c1", None))));
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Continue(Bytes::new()),
    );
    assert_eq!(kinds(&a), ["send", "close"]);
}

#[test]
fn auth_without_a_method_at_connect_is_a_protocol_error() {
    // [MQTT-4.12.0-7]
    let mut p = peer(V5, SessionConfig::default());
    let mut auth = Auth::new(AuthReasonCode::ReAuthenticate);
    auth.properties.authentication_method = Some(MqttString::from_static("JWT"));
    let a = p.send(Packet::Auth(auth));
    assert_eq!(
        disconnect_code(&mut p, &a),
        DisconnectReasonCode::ProtocolError
    );
}

#[test]
fn topics_longer_or_deeper_than_allowed_are_refused() {
    let config = SessionConfig {
        max_topic_len: 16,
        max_topic_levels: 3,
        ..SessionConfig::default()
    };
    // A publish: DISCONNECT 0x90 (5.0), the will, the close.
    for topic in ["a/b/c/d", "abcdefghijklmnopq"] {
        let mut p = peer(V5, config.clone());
        let a = p.send(Packet::Publish(Publish::new(
            TopicName::try_from(topic).unwrap(),
            Bytes::from_static(b"x"),
        )));
        assert_eq!(
            disconnect_code(&mut p, &a),
            DisconnectReasonCode::TopicNameInvalid,
            "{topic}"
        );
        assert_eq!(kinds(&a), ["send", "audit", "will", "close"]);
    }
    // Within the limits: handed up for authorization.
    let mut p = peer(V5, config.clone());
    let a = p.send(Packet::Publish(Publish::new(
        TopicName::from_static("a/b/c"),
        Bytes::from_static(b"x"),
    )));
    assert_eq!(kinds(&a), ["authorize"]);
    // A subscription: that filter refused (0x8F; 3.1.1 0x80), the others
    // go on.
    for (v, refused) in [
        (V5, SubAckReasonCode::TopicFilterInvalid),
        (V3, SubAckReasonCode::UnspecifiedError),
    ] {
        let mut p = peer(v, config.clone());
        let a = p.send(Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            subscriptions: vec![
                Subscription {
                    filter: TopicFilter::from_static("a/b/c/#"),
                    options: SubscriptionOptions::default(),
                },
                Subscription {
                    filter: TopicFilter::from_static("a/+"),
                    options: SubscriptionOptions::default(),
                },
            ],
        }));
        let tickets = authorize_tickets(&a);
        assert_eq!(
            tickets.len(),
            1,
            "only the filter within the limits is asked"
        );
        let a = p.authorize(tickets[0], allow());
        let acks: Vec<_> = p
            .packets(&a)
            .into_iter()
            .filter_map(|x| match x {
                Packet::SubAck(s) => Some(s.reason_codes),
                _ => None,
            })
            .collect();
        assert_eq!(acks, [vec![refused, SubAckReasonCode::GrantedQoS0]], "{v}");
    }
}
