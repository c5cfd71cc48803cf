//! Inbound and outbound publishes: nothing is handed up before its Allow,
//! decisions take effect in arrival order, QoS 1/2 acknowledgements with the
//! right codes, exactly once for QoS 2, Receive Maximum, topic aliases, and
//! the outbound window.

mod common;

use common::session::*;
use common::{V3, V5, pid};
use testament::codec::*;
use testament::session::*;

fn peer(v: ProtocolVersion) -> Peer {
    Peer::alice(v, SessionConfig::default())
}

fn publish(topic: &'static str, qos: QoS, id: Option<u16>) -> Packet {
    let mut p = Publish::new(TopicName::from_static(topic), Bytes::from_static(b"hi"));
    p.qos = qos;
    p.packet_id = id.map(pid);
    Packet::Publish(p)
}

#[test]
fn qos0_is_handed_up_only_after_allow() {
    for v in [V3, V5] {
        let mut p = peer(v);
        let a = p.send(publish("a/b", QoS::AtMostOnce, None));
        assert_eq!(kinds(&a), ["authorize"]);
        let Action::Authorize { query, .. } = &a[0] else {
            panic!()
        };
        assert_eq!((query.topic.as_str(), query.qos), ("a/b", QoS::AtMostOnce));
        let a = p.authorize(authorize_tickets(&a)[0], allow());
        assert_eq!(kinds(&a), ["audit", "publish"]);
        assert_eq!(published(&a)[0].topic.as_str(), "a/b");
        let a = p.send(publish("a/b", QoS::AtMostOnce, None));
        let a = p.authorize(authorize_tickets(&a)[0], deny());
        assert_eq!(kinds(&a), ["audit"]);
    }
}

#[test]
fn qos1_acks_with_success_or_not_authorized() {
    let mut p = peer(V5);
    let a = p.send(publish("a", QoS::AtLeastOnce, Some(7)));
    let a = p.authorize(authorize_tickets(&a)[0], allow());
    assert_eq!(kinds(&a), ["audit", "publish", "send"]);
    assert_eq!(p.packets(&a), [Packet::PubAck(PubAck::new(pid(7)))]);
    let a = p.send(publish("a", QoS::AtLeastOnce, Some(8)));
    let a = p.authorize(authorize_tickets(&a)[0], deny());
    assert_eq!(
        p.packets(&a),
        [Packet::PubAck(PubAck::with_reason(
            pid(8),
            PubAckReasonCode::NotAuthorized
        ))]
    );
    assert!(published(&a).is_empty());
}

#[test]
fn v311_denied_publish_is_acknowledged_or_closes_per_config() {
    // [MQTT-3.3.5-2]
    let mut p = peer(V3);
    let a = p.send(publish("a", QoS::AtLeastOnce, Some(1)));
    let a = p.authorize(authorize_tickets(&a)[0], deny());
    assert_eq!(p.packets(&a), [Packet::PubAck(PubAck::new(pid(1)))]);
    let config = SessionConfig {
        denied_publish_v311: DeniedPublishV311::Close,
        ..Default::default()
    };
    let mut p = Peer::alice(V3, config);
    let a = p.send(publish("a", QoS::AtLeastOnce, Some(1)));
    let a = p.authorize(authorize_tickets(&a)[0], deny());
    assert_eq!(kinds(&a), ["audit", "close"]);
}

#[test]
fn decisions_take_effect_in_arrival_order() {
    let mut p = peer(V5);
    let a1 = p.send(publish("first", QoS::AtLeastOnce, Some(1)));
    let a2 = p.send(publish("second", QoS::AtLeastOnce, Some(2)));
    // The second decision comes first: nothing moves until the first is in.
    let a = p.authorize(authorize_tickets(&a2)[0], allow());
    assert!(a.is_empty());
    let a = p.authorize(authorize_tickets(&a1)[0], allow());
    let topics: Vec<_> = published(&a).iter().map(|m| m.topic.to_string()).collect();
    assert_eq!(topics, ["first", "second"]);
    assert_eq!(
        p.packets(&a),
        [
            Packet::PubAck(PubAck::new(pid(1))),
            Packet::PubAck(PubAck::new(pid(2)))
        ]
    );
}

#[test]
fn qos2_is_exactly_once_even_with_dup() {
    for v in [V3, V5] {
        let mut p = peer(v);
        let a = p.send(publish("a", QoS::ExactlyOnce, Some(5)));
        // A DUP while the decision is pending is not asked again.
        let Packet::Publish(mut dup) = publish("a", QoS::ExactlyOnce, Some(5)) else {
            panic!()
        };
        dup.dup = true;
        assert!(p.send(Packet::Publish(dup.clone())).is_empty());
        let a = p.authorize(authorize_tickets(&a)[0], allow());
        assert_eq!(published(&a).len(), 1);
        assert_eq!(p.packets(&a), [Packet::PubRec(PubRec::new(pid(5)))]);
        // A DUP after PUBREC: PUBREC again, not handed up again.
        let a = p.send(Packet::Publish(dup));
        assert_eq!(kinds(&a), ["send"]);
        assert_eq!(p.packets(&a), [Packet::PubRec(PubRec::new(pid(5)))]);
        let a = p.send(Packet::PubRel(PubRel::new(pid(5))));
        assert_eq!(p.packets(&a), [Packet::PubComp(PubComp::new(pid(5)))]);
        // The id is free again: a new message with it is a new message.
        let a = p.send(publish("a", QoS::ExactlyOnce, Some(5)));
        assert_eq!(kinds(&a), ["authorize"]);
    }
    // PUBREL for an unknown id: 0x92 in 5.0.
    let mut p = peer(V5);
    let a = p.send(Packet::PubRel(PubRel::new(pid(9))));
    assert_eq!(
        p.packets(&a),
        [Packet::PubComp(PubComp::with_reason(
            pid(9),
            PubRelReasonCode::PacketIdentifierNotFound
        ))]
    );
}

#[test]
fn receive_maximum_is_enforced_with_0x93() {
    let config = SessionConfig {
        receive_maximum: 2,
        ..Default::default()
    };
    let mut p = Peer::alice(V5, config);
    p.send(publish("a", QoS::AtLeastOnce, Some(1)));
    p.send(publish("a", QoS::ExactlyOnce, Some(2)));
    let a = p.send(publish("a", QoS::AtLeastOnce, Some(3)));
    let packets = p.packets(&a);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::ReceiveMaximumExceeded)
    );
}

#[test]
fn topic_aliases_resolve_and_are_bounded() {
    let mut p = peer(V5);
    let Packet::Publish(mut first) = publish("fleet/srv-17/state", QoS::AtMostOnce, None) else {
        panic!()
    };
    first.properties.topic_alias = std::num::NonZeroU16::new(3);
    let a = p.send(Packet::Publish(first));
    let a = p.authorize(authorize_tickets(&a)[0], allow());
    assert!(published(&a)[0].properties.topic_alias.is_none());
    let mut aliased = Publish::new(TopicName::from_static("x"), Bytes::from_static(b"2"));
    aliased.topic = None;
    aliased.properties.topic_alias = std::num::NonZeroU16::new(3);
    let a = p.send(Packet::Publish(aliased.clone()));
    let Action::Authorize { query, .. } = &a[0] else {
        panic!("{a:?}")
    };
    assert_eq!(query.topic, "fleet/srv-17/state");
    // Beyond Topic Alias Maximum (16): 0x94.
    aliased.properties.topic_alias = std::num::NonZeroU16::new(17);
    let a = p.send(Packet::Publish(aliased));
    let packets = p.packets(&a);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::TopicAliasInvalid)
    );
}

#[test]
fn a_client_may_not_send_subscription_identifiers_or_qos_above_maximum() {
    let mut p = peer(V5);
    let Packet::Publish(mut x) = publish("a", QoS::AtMostOnce, None) else {
        panic!()
    };
    x.properties
        .subscription_identifiers
        .push(SubscriptionId::new(1).unwrap());
    let packets = {
        let a = p.send(Packet::Publish(x));
        p.packets(&a)
    };
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::ProtocolError)
    );
    let config = SessionConfig {
        maximum_qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    let mut p = Peer::alice(V5, config);
    let a = p.send(publish("a", QoS::ExactlyOnce, Some(1)));
    let packets = p.packets(&a);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::QoSNotSupported)
    );
}

fn outbound(qos: QoS) -> OutboundMessage {
    OutboundMessage {
        topic: TopicName::from_static("t"),
        payload: Bytes::from_static(b"m"),
        qos,
        retain: false,
        properties: Default::default(),
        seq: None,
    }
}

#[test]
fn outbound_qos1_uses_the_window_and_queues_the_rest() {
    let mut c = connect(V5, "c1", None);
    c.properties.receive_maximum = std::num::NonZeroU16::new(2);
    let mut p = Peer::connected(
        V5,
        SessionConfig::default(),
        c,
        identity("alice", "c1", None),
    );
    for _ in 0..3 {
        assert_eq!(
            p.session.deliver(p.now, outbound(QoS::AtLeastOnce)),
            Delivery::Accepted
        );
    }
    let a = p.drain();
    let ids: Vec<_> = p
        .packets(&a)
        .iter()
        .map(|x| match x {
            Packet::Publish(p) => p.packet_id.unwrap().get(),
            _ => 0,
        })
        .collect();
    assert_eq!(ids, [1, 2], "the third waits for the window");
    let a = p.send(Packet::PubAck(PubAck::new(pid(1))));
    let ids: Vec<_> = p
        .packets(&a)
        .iter()
        .map(|x| match x {
            Packet::Publish(p) => p.packet_id.unwrap().get(),
            _ => 0,
        })
        .collect();
    assert_eq!(ids, [3]);
}

#[test]
fn outbound_qos2_runs_the_four_way_handshake() {
    let mut p = peer(V5);
    assert_eq!(
        p.session.deliver(p.now, outbound(QoS::ExactlyOnce)),
        Delivery::Accepted
    );
    let a = p.drain();
    assert!(matches!(&p.packets(&a)[..], [Packet::Publish(x)] if x.qos == QoS::ExactlyOnce));
    let a = p.send(Packet::PubRec(PubRec::new(pid(1))));
    assert_eq!(p.packets(&a), [Packet::PubRel(PubRel::new(pid(1)))]);
    let a = p.send(Packet::PubComp(PubComp::new(pid(1))));
    assert!(a.is_empty());
}

#[test]
fn outbound_respects_the_client_maximum_packet_size() {
    let mut c = connect(V5, "c1", None);
    c.properties.maximum_packet_size = std::num::NonZeroU32::new(10);
    let mut p = Peer::connected(
        V5,
        SessionConfig::default(),
        c,
        identity("alice", "c1", None),
    );
    let mut big = outbound(QoS::AtMostOnce);
    big.payload = Bytes::from_static(&[0; 20]);
    assert_eq!(p.session.deliver(p.now, big), Delivery::TooLarge);
    assert!(p.drain().is_empty());
    let mut fresh = Peer::new(V5, SessionConfig::default());
    assert_eq!(
        fresh.session.deliver(fresh.now, outbound(QoS::AtMostOnce)),
        Delivery::NotConnected
    );
}

#[test]
fn bytes_the_host_has_not_taken_are_bounded() {
    let config = SessionConfig {
        max_unsent_bytes: 100,
        ..Default::default()
    };
    let mut p = Peer::alice(V5, config);
    let mut accepted = 0;
    // The host does not drain between deliveries: the bound stops growth.
    for _ in 0..50 {
        if p.session.deliver(p.now, outbound(QoS::AtMostOnce)) == Delivery::Accepted {
            accepted += 1;
        }
    }
    assert!(accepted > 5 && accepted < 50, "{accepted}");
    let sent: usize = p
        .drain()
        .iter()
        .map(|a| match a {
            Action::Send(b) => b.len(),
            _ => 0,
        })
        .sum();
    assert!(sent <= 100, "{sent}");
    // Taken by the host: room again.
    assert_eq!(
        p.session.deliver(p.now, outbound(QoS::AtMostOnce)),
        Delivery::Accepted
    );
}

#[test]
fn a_resumed_session_redelivers_with_dup_and_original_ids() {
    // [MQTT-4.4.0-1], [MQTT-3.3.1-1]
    let mut c = connect(V5, "c1", None);
    c.clean_start = false;
    let mut p = Peer::connected(
        V5,
        SessionConfig::default(),
        c.clone(),
        identity("alice", "c1", None),
    );
    for qos in [QoS::AtLeastOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        assert_eq!(p.session.deliver(p.now, outbound(qos)), Delivery::Accepted);
    }
    p.drain();
    p.send(Packet::PubAck(PubAck::new(pid(1))));
    p.send(Packet::PubRec(PubRec::new(pid(3))));
    // An inbound QoS 2 acknowledged and waiting for its PUBREL.
    let Packet::Publish(mut q2) = publish("in", QoS::ExactlyOnce, Some(40)) else {
        panic!()
    };
    q2.dup = false;
    let a = p.send(Packet::Publish(q2.clone()));
    p.authorize(authorize_tickets(&a)[0], allow());
    let a = p.send(Packet::Subscribe(Subscribe {
        packet_id: pid(50),
        properties: Default::default(),
        subscriptions: vec![Subscription {
            filter: TopicFilter::from_static("x/#"),
            options: Default::default(),
        }],
    }));
    p.authorize(authorize_tickets(&a)[0], allow());
    p.session.handle_closed(p.now, TransportClosed::Error);
    p.drain();

    let inflight = p.session.take_inflight();
    let ids: Vec<_> = inflight
        .outbound
        .iter()
        .map(|m| (m.packet_id.get(), m.released))
        .collect();
    assert_eq!(ids, [(2, false), (3, true)]);
    assert_eq!(inflight.awaiting_pubrel, [pid(40)]);
    assert_eq!(inflight.subscriptions, [TopicFilter::from_static("x/#")]);

    let mut p = Peer::new(V5, SessionConfig::default());
    let a = p.send(Packet::Connect(Box::new(c)));
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Success(identity("alice", "c1", None)),
    );
    let ticket = open_ticket(&a);
    p.session.handle_resume(p.now, ticket, inflight).unwrap();
    let a = p.drain();
    let packets = p.packets(&a);
    assert!(matches!(&packets[0], Packet::ConnAck(ack) if ack.session_present));
    assert!(matches!(&packets[1], Packet::Publish(x) if x.dup && x.packet_id == Some(pid(2))));
    assert_eq!(packets[2], Packet::PubRel(PubRel::new(pid(3))));
    // The inbound exchange continues where it stopped: exactly once.
    q2.dup = true;
    let a = p.send(Packet::Publish(q2));
    assert_eq!(p.packets(&a), [Packet::PubRec(PubRec::new(pid(40)))]);
    let a = p.send(Packet::PubRel(PubRel::new(pid(40))));
    assert_eq!(p.packets(&a), [Packet::PubComp(PubComp::new(pid(40)))]);
    // And the outbound ones complete.
    assert!(p.send(Packet::PubAck(PubAck::new(pid(2)))).is_empty());
    assert!(p.send(Packet::PubComp(PubComp::new(pid(3)))).is_empty());
    // The subscriptions came back with the session.
    let a = p.send(Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(51),
        properties: Default::default(),
        filters: vec![TopicFilter::from_static("x/#")],
    }));
    assert!(
        matches!(&p.packets(&a)[..], [Packet::UnsubAck(u)] if u.reason_codes == [UnsubAckReasonCode::Success])
    );
    assert_eq!(p.session.take_inflight(), Inflight::default());
}

/// Server-to-client topic aliases (5.0 §3.3.2.3.4): taught with the topic,
/// then used alone; past the client's Topic Alias Maximum (here 2) the
/// oldest alias is given anew, with its topic; never more than the
/// broker's own bound; none for a client that did not ask.
#[test]
fn outbound_topic_aliases_when_accepted() {
    let mut c = connect(V5, "c1", None);
    c.properties.topic_alias_maximum = Some(2);
    let mut p = Peer::connected(
        V5,
        SessionConfig::default(),
        c,
        identity("alice", "c1", None),
    );
    let on = |topic: &'static str| {
        let mut m = outbound(QoS::AtMostOnce);
        m.topic = TopicName::from_static(topic);
        m
    };
    for t in ["a", "a", "b", "b", "c", "a", "c"] {
        assert_eq!(p.session.deliver(p.now, on(t)), Delivery::Accepted);
    }
    let a = p.drain();
    let seen: Vec<_> = p
        .packets(&a)
        .iter()
        .map(|x| match x {
            Packet::Publish(p) => (
                p.topic.as_ref().map(|t| t.to_string()),
                p.properties.topic_alias.map(|a| a.get()),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    let taught = |t: &str, a| (Some(t.to_string()), Some(a));
    assert_eq!(
        seen,
        [
            taught("a", 1),
            (None, Some(1)),
            taught("b", 2),
            (None, Some(2)),
            taught("c", 1), // the oldest, given anew
            taught("a", 2),
            (None, Some(1)),
        ]
    );

    // The broker's bound caps what the client offers.
    let config = SessionConfig {
        max_outbound_topic_aliases: 1,
        ..Default::default()
    };
    let mut c = connect(V5, "c2", None);
    c.properties.topic_alias_maximum = Some(100);
    let mut p = Peer::connected(V5, config, c, identity("alice", "c2", None));
    for t in ["a", "b"] {
        p.session.deliver(p.now, on(t));
    }
    let a = p.drain();
    let aliases: Vec<_> = p
        .packets(&a)
        .iter()
        .map(|x| match x {
            Packet::Publish(p) => p.properties.topic_alias.map(|a| a.get()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(aliases, [Some(1), Some(1)]);

    // Never towards a client that did not ask.
    let mut p = peer(V5);
    p.session.deliver(p.now, outbound(QoS::AtMostOnce));
    let a = p.drain();
    assert!(
        matches!(&p.packets(&a)[..], [Packet::Publish(x)] if x.topic.is_some() && x.properties.topic_alias.is_none())
    );
}
