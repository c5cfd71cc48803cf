//! SUBSCRIBE and UNSUBSCRIBE: one authorization per filter, SUBACK codes in
//! order, granted QoS capped, unsupported features refused per filter.

mod common;

use common::session::*;
use common::{V3, V5, filter, pid};
use testament::codec::*;
use testament::session::*;

fn sub(f: &'static str, qos: QoS) -> Subscription {
    Subscription {
        filter: filter(f),
        options: SubscriptionOptions {
            qos,
            ..Default::default()
        },
    }
}

fn subscribe(subs: Vec<Subscription>) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(4),
        properties: Default::default(),
        subscriptions: subs,
    })
}

#[test]
fn one_authorization_per_filter_and_suback_in_order() {
    for v in [V3, V5] {
        let config = SessionConfig {
            maximum_qos: QoS::AtLeastOnce,
            ..Default::default()
        };
        let mut p = Peer::alice(v, config);
        let a = p.send(subscribe(vec![
            sub("a/#", QoS::ExactlyOnce),
            sub("b", QoS::AtMostOnce),
            sub("c", QoS::AtLeastOnce),
        ]));
        assert_eq!(kinds(&a), ["authorize", "authorize", "authorize"]);
        let t = authorize_tickets(&a);
        let Action::Authorize { query, .. } = &a[0] else {
            panic!()
        };
        assert_eq!(
            query.qos,
            QoS::AtLeastOnce,
            "requested QoS 2 is capped at the maximum"
        );
        assert!(p.authorize(t[2], allow()).is_empty());
        assert!(p.authorize(t[0], allow()).is_empty());
        let a = p.authorize(t[1], deny());
        assert_eq!(kinds(&a), ["audit", "audit", "audit", "send", "subscribe"]);
        let packets = p.packets(&a);
        let [Packet::SubAck(ack)] = &packets[..] else {
            panic!()
        };
        let expected = if v == V5 {
            vec![
                SubAckReasonCode::GrantedQoS1,
                SubAckReasonCode::NotAuthorized,
                SubAckReasonCode::GrantedQoS1,
            ]
        } else {
            // 3.1.1 reads every failure as 0x80.
            vec![
                SubAckReasonCode::GrantedQoS1,
                SubAckReasonCode::UnspecifiedError,
                SubAckReasonCode::GrantedQoS1,
            ]
        };
        assert_eq!(ack.reason_codes, expected);
        let Some(Action::Subscribe { granted, .. }) = a.last() else {
            panic!()
        };
        let filters: Vec<_> = granted
            .iter()
            .map(|g| g.subscription.filter.to_string())
            .collect();
        assert_eq!(filters, ["a/#", "c"]);
    }
}

#[test]
fn unsupported_features_are_refused_per_filter_without_asking() {
    let config = SessionConfig {
        shared_subscriptions: false,
        wildcard_subscriptions: false,
        ..Default::default()
    };
    let mut p = Peer::alice(V5, config);
    let a = p.send(subscribe(vec![
        sub("$share/g/a", QoS::AtMostOnce),
        sub("a/+", QoS::AtMostOnce),
        sub("a/b", QoS::AtMostOnce),
    ]));
    assert_eq!(kinds(&a), ["authorize"]);
    let a = p.authorize(authorize_tickets(&a)[0], allow());
    let packets = p.packets(&a);
    let [Packet::SubAck(ack)] = &packets[..] else {
        panic!()
    };
    assert_eq!(
        ack.reason_codes,
        [
            SubAckReasonCode::SharedSubscriptionsNotSupported,
            SubAckReasonCode::WildcardSubscriptionsNotSupported,
            SubAckReasonCode::GrantedQoS0
        ]
    );
}

#[test]
fn unsubscribe_is_acknowledged_per_filter_and_handed_up() {
    let mut p = Peer::alice(V5, SessionConfig::default());
    let a = p.send(subscribe(vec![sub("a/#", QoS::AtMostOnce)]));
    p.authorize(authorize_tickets(&a)[0], allow());
    let a = p.send(Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(9),
        properties: Default::default(),
        filters: vec![filter("a/#"), filter("b")],
    }));
    assert_eq!(kinds(&a), ["send", "unsubscribe"]);
    let packets = p.packets(&a);
    let [Packet::UnsubAck(u)] = &packets[..] else {
        panic!("{packets:?}")
    };
    assert_eq!(u.packet_id, pid(9));
    // 5.0 §3.11.3: 0x11 for a filter the session did not hold.
    assert_eq!(
        u.reason_codes,
        [
            UnsubAckReasonCode::Success,
            UnsubAckReasonCode::NoSubscriptionExisted
        ]
    );
}

#[test]
fn subscriptions_per_session_are_bounded() {
    let config = SessionConfig {
        max_subscriptions: 2,
        ..Default::default()
    };
    let mut p = Peer::alice(V5, config);
    let a = p.send(subscribe(vec![
        sub("a", QoS::AtMostOnce),
        sub("b", QoS::AtMostOnce),
        sub("a", QoS::AtLeastOnce),
        sub("c", QoS::AtMostOnce),
    ]));
    let mut last = Vec::new();
    for t in authorize_tickets(&a) {
        last = p.authorize(t, allow());
    }
    let packets = p.packets(&last);
    let [Packet::SubAck(ack)] = &packets[..] else {
        panic!()
    };
    assert_eq!(
        ack.reason_codes,
        [
            SubAckReasonCode::GrantedQoS0,
            SubAckReasonCode::GrantedQoS0,
            SubAckReasonCode::GrantedQoS1, // the same filter again replaces, no new slot
            SubAckReasonCode::QuotaExceeded,
        ]
    );
}
