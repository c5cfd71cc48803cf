//! Retained messages through the hub: store, replace, delete, Retain
//! Handling, expiry, the bounded store.

mod common;

use common::hub::{Net, connect, default_acl, messages, sub};
use testament::auth::AuditRecord;
use testament::broker::{BrokerConfig, ConnId};
use testament::codec::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V311;

fn client(net: &mut Net, version: ProtocolVersion, id: &str) -> ConnId {
    net.connect(connect(version, id, id)).0
}

fn retained_on_subscribe(net: &mut Net, id: &str, filter: &'static str) -> Vec<(String, String)> {
    let c = client(net, V5, id);
    net.subscribe(c, &[(filter, QoS::AtLeastOnce)]);
    let got = net.publishes(c);
    assert!(got.iter().all(|p| p.retain), "[MQTT-3.3.1-9]");
    messages(&got)
}

fn m(topic: &str, payload: &str) -> (String, String) {
    (topic.to_string(), payload.to_string())
}

#[test]
fn retained_messages_are_stored_replaced_and_deleted() {
    let mut net = Net::standard();
    let p = client(&mut net, V5, "p");
    net.publish(p, "open/a", b"1", QoS::AtLeastOnce, true);
    net.publish(p, "open/b", b"2", QoS::AtMostOnce, true);
    net.publish(p, "open/a", b"3", QoS::AtLeastOnce, true);
    net.publish(p, "open/c", b"not retained", QoS::AtMostOnce, false);
    assert_eq!(
        retained_on_subscribe(&mut net, "s1", "open/#"),
        [m("open/a", "3"), m("open/b", "2")]
    );
    // An empty retained payload deletes [MQTT-3.3.1-6].
    net.publish(p, "open/a", b"", QoS::AtMostOnce, true);
    assert_eq!(
        retained_on_subscribe(&mut net, "s2", "open/#"),
        [m("open/b", "2")]
    );
    assert_eq!(
        retained_on_subscribe(&mut net, "s3", "open/b"),
        [m("open/b", "2")]
    );
    assert_eq!(net.hub.retained_messages(), 1);
}

#[test]
fn retain_handling_0_1_2() {
    let mut net = Net::standard();
    let p = client(&mut net, V5, "p");
    net.publish(p, "open/r", b"r", QoS::AtMostOnce, true);
    let s = client(&mut net, V5, "s");
    for (handling, first, again) in [
        (RetainHandling::SendAtSubscribe, 1, 1),
        (RetainHandling::SendAtSubscribeIfNew, 1, 0),
        (RetainHandling::DoNotSend, 0, 0),
    ] {
        let mut x = sub("open/r", QoS::AtMostOnce);
        x.options.retain_handling = handling;
        net.subscribe_with(s, vec![x.clone()], None);
        assert_eq!(net.publishes(s).len(), first, "{handling:?} first");
        net.subscribe_with(s, vec![x], None);
        assert_eq!(net.publishes(s).len(), again, "{handling:?} again");
        net.send(
            s,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: PacketId::new(2).unwrap(),
                properties: Default::default(),
                filters: vec![TopicFilter::from_static("open/r")],
            }),
        );
        net.take(s);
    }
}

#[test]
fn retained_messages_are_delivered_at_the_lower_qos_with_the_subscription_identifier() {
    let mut net = Net::standard();
    let p = client(&mut net, V5, "p");
    net.publish(p, "open/q", b"q", QoS::ExactlyOnce, true);
    let s = client(&mut net, V5, "s");
    net.subscribe_with(s, vec![sub("open/+", QoS::AtLeastOnce)], Some(42));
    let got = net.publishes(s);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert_eq!(
        got[0]
            .properties
            .subscription_identifiers
            .iter()
            .map(|i| i.get())
            .collect::<Vec<_>>(),
        [42]
    );
    // 3.1.1 subscribers get them too.
    let s3 = client(&mut net, V3, "s3");
    net.subscribe(s3, &[("open/q", QoS::AtMostOnce)]);
    let got = net.publishes(s3);
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
}

#[test]
fn no_retained_messages_for_shared_subscriptions() {
    let mut net = Net::standard();
    let p = client(&mut net, V5, "p");
    net.publish(p, "open/r", b"r", QoS::AtMostOnce, true);
    assert!(retained_on_subscribe(&mut net, "s", "$share/g/open/#").is_empty());
}

#[test]
fn retained_messages_expire() {
    let mut net = Net::standard();
    let p = client(&mut net, V5, "p");
    let mut msg = Publish::new(TopicName::from_static("open/e"), &b"e"[..]);
    msg.retain = true;
    msg.properties.message_expiry_interval = Some(60);
    net.send(p, Packet::Publish(msg));
    net.advance(20);
    let s = client(&mut net, V5, "s");
    net.subscribe(s, &[("open/e", QoS::AtMostOnce)]);
    let got = net.publishes(s);
    assert_eq!(got[0].properties.message_expiry_interval, Some(40));
    net.advance(40);
    assert!(retained_on_subscribe(&mut net, "late", "open/#").is_empty());
    assert_eq!(net.hub.retained_messages(), 0);
}

#[test]
fn a_full_store_refuses_new_topics_but_still_routes_and_replaces() {
    let config = BrokerConfig {
        max_retained_messages: 2,
        max_retained_bytes: 1000,
        ..BrokerConfig::default()
    };
    let mut net = Net::new(config, Some(default_acl()));
    let live = client(&mut net, V5, "live");
    net.subscribe(live, &[("open/#", QoS::AtMostOnce)]);
    let p = client(&mut net, V5, "p");
    net.publish(p, "open/1", b"1", QoS::AtMostOnce, true);
    net.publish(p, "open/2", b"2", QoS::AtMostOnce, true);
    net.publish(p, "open/3", b"3", QoS::AtMostOnce, true);
    net.publish(p, "open/1", b"1b", QoS::AtMostOnce, true);
    net.publish(p, "open/big", &[b'x'; 2000], QoS::AtMostOnce, true);
    assert_eq!(net.publishes(live).len(), 5, "routed all the same");
    let refused: Vec<String> = net
        .audits
        .iter()
        .filter_map(|r| match r {
            AuditRecord::RetainRefused { topic, .. } => Some(topic.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, ["open/3", "open/big"]);
    assert_eq!(
        retained_on_subscribe(&mut net, "s", "open/#"),
        [m("open/1", "1b"), m("open/2", "2")]
    );
}

/// The broker's own `$SYS/…` messages: routed to the subscriptions the ACL
/// granted, retained in memory for the next subscriber, never persisted;
/// another topic is not the broker's to publish.
#[test]
fn system_messages_are_retained_in_memory_and_reach_granted_subscriptions() {
    use testament::auth::{Acl, Effect, FilterTemplate, Ops, Rule, Subject};
    let mut acl = vec![Rule::new(
        Effect::Allow,
        Ops::SUBSCRIBE,
        Subject::Principal("ops".into()),
        FilterTemplate::new("$SYS/#").unwrap(),
    )];
    acl.extend(default_acl().rules().iter().cloned());
    let config = BrokerConfig {
        durable: true,
        ..BrokerConfig::default()
    };
    let mut net = Net::new(config, Some(Acl::new(acl)));
    let ops = client(&mut net, V5, "ops");
    net.subscribe(ops, &[("$SYS/#", QoS::AtMostOnce)]);
    let other = client(&mut net, V5, "other");
    let refused = net.subscribe(other, &[("$SYS/#", QoS::AtMostOnce)]);
    assert!(
        matches!(&refused[..], [Packet::SubAck(a)] if a.reason_codes[0] != SubAckReasonCode::GrantedQoS0),
        "{refused:?}"
    );
    net.persisted.clear();
    let uptime = TopicName::from_static("$SYS/broker/uptime");
    net.hub
        .publish_system(net.now, uptime, Bytes::from_static(b"5 seconds"));
    net.hub.publish_system(
        net.now,
        TopicName::from_static("clients/ops/state"),
        Bytes::from_static(b"not the broker's"),
    );
    net.pump();
    assert_eq!(
        messages(&net.publishes(ops)),
        [m("$SYS/broker/uptime", "5 seconds")]
    );
    assert!(net.publishes(other).is_empty());
    assert!(net.persisted.is_empty(), "{:?}", net.persisted);
    let late = client(&mut net, V5, "ops");
    net.subscribe(late, &[("$SYS/broker/+", QoS::AtMostOnce)]);
    assert_eq!(
        messages(&net.publishes(late)),
        [m("$SYS/broker/uptime", "5 seconds")]
    );
}
