//! Bounds: every table has a limit, and exceeding it is a reason code and a
//! close, never growth (malformed input: `session_malformed.rs`).

mod common;

use common::session::*;
use common::{V3, V5, hex, pid};
use testament::codec::*;
use testament::session::*;

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
