//! A durable hub: every change of a retained message leaves as a Persist
//! before anything that follows it (the PUBACK of the publish that made
//! it), and a restart restores what was kept, the expiry counted by the
//! date it ends on.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::hub::{Net, connect, default_acl};
use common::jwt::NOW_SECS;
use testament::broker::{Action, BrokerConfig, ConnId, Persist, RetainedMessage};
use testament::codec::*;
use testament::time::{Instant, Now, Timestamp};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn durable() -> Net {
    let config = BrokerConfig {
        durable: true,
        ..BrokerConfig::default()
    };
    Net::new(config, Some(default_acl()))
}

fn client(net: &mut Net, id: &str) -> ConnId {
    net.connect(connect(V5, id, id)).0
}

fn publish_with_expiry(net: &mut Net, conn: ConnId, topic: &str, payload: &[u8], secs: u32) {
    let mut p = Publish::new(TopicName::try_from(topic).unwrap(), payload.to_vec());
    p.qos = QoS::AtLeastOnce;
    p.retain = true;
    p.packet_id = PacketId::new(9);
    p.properties.message_expiry_interval = Some(secs);
    net.send(conn, Packet::Publish(p));
}

/// A store as a host keeps one: what the Persists say, by topic.
fn apply(store: &mut BTreeMap<String, RetainedMessage>, ops: &[Persist]) {
    for op in ops {
        match op {
            Persist::Retain(m) => {
                store.insert(m.topic.to_string(), m.clone());
            }
            Persist::Unretain(t) => {
                store.remove(t.as_str());
            }
        }
    }
}

/// The retained messages a new subscriber to `filter` gets, with their
/// Message Expiry Interval.
fn retained(net: &mut Net, id: &str, filter: &'static str) -> Vec<(String, String, Option<u32>)> {
    let c = client(net, id);
    net.subscribe(c, &[(filter, QoS::AtLeastOnce)]);
    net.publishes(c)
        .into_iter()
        .map(|p| {
            (
                p.topic.unwrap().to_string(),
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.properties.message_expiry_interval,
            )
        })
        .collect()
}

#[test]
fn every_retained_change_is_persisted_before_its_puback() {
    let mut net = durable();
    let p = client(&mut net, "p");
    let before = net.log.len();
    net.publish(p, "open/a", b"up", QoS::AtLeastOnce, true);
    let turn = &net.log[before..];
    let persist = turn
        .iter()
        .position(
            |a| matches!(a, Action::Persist(Persist::Retain(m)) if m.topic.as_str() == "open/a"),
        )
        .expect("the retained message is persisted");
    let puback = turn
        .iter()
        .position(|a| matches!(a, Action::Send { conn, .. } if *conn == p))
        .expect("the PUBACK is sent");
    assert!(persist < puback, "{turn:?}");
    assert!(matches!(
        &net.take(p)[..],
        [Packet::PubAck(a)] if a.packet_id == PacketId::new(7).unwrap()
    ));
    let Persist::Retain(kept) = &net.persisted[0] else {
        panic!("{:?}", net.persisted)
    };
    assert_eq!(
        (&kept.payload[..], kept.qos, kept.expires_at),
        (&b"up"[..], QoS::AtLeastOnce, None)
    );

    // Cleared by an empty payload [MQTT-3.3.1-6]; not retained: nothing.
    net.publish(p, "open/a", b"", QoS::AtLeastOnce, true);
    net.publish(p, "open/b", b"x", QoS::AtLeastOnce, false);
    assert_eq!(
        net.persisted[1..],
        [Persist::Unretain(TopicName::from_static("open/a"))]
    );

    // The expiry is kept as the date it ends on; found expired, it goes.
    publish_with_expiry(&mut net, p, "open/e", b"soon", 10);
    let Some(Persist::Retain(e)) = net.persisted.last() else {
        panic!("{:?}", net.persisted)
    };
    assert_eq!(e.expires_at, Some(Timestamp::from_secs(NOW_SECS + 10)));
    net.advance(11);
    assert!(retained(&mut net, "late", "open/#").is_empty());
    assert_eq!(
        net.persisted.last(),
        Some(&Persist::Unretain(TopicName::from_static("open/e")))
    );
}

#[test]
fn a_hub_that_is_not_durable_persists_nothing() {
    let mut net = Net::standard();
    let p = client(&mut net, "p");
    net.publish(p, "open/a", b"up", QoS::AtLeastOnce, true);
    net.publish(p, "open/a", b"", QoS::AtLeastOnce, true);
    assert!(net.persisted.is_empty());
}

#[test]
fn a_restart_restores_retained_messages_their_expiry_counted_by_the_date() {
    let mut before = durable();
    let p = client(&mut before, "p");
    before.publish(p, "open/a", b"up", QoS::AtLeastOnce, true);
    publish_with_expiry(&mut before, p, "open/e", b"for a minute", 60);
    let mut store = BTreeMap::new();
    apply(&mut store, &before.persisted);
    assert_eq!(store.len(), 2);

    // Thirty seconds later by the date; a new process, a new monotonic
    // origin.
    let mut after = durable();
    after.now = Now::new(Instant::from_secs(5), Timestamp::from_secs(NOW_SECS + 30));
    after.hub.restore(after.now, store.values().cloned());
    after.pump();
    assert!(after.persisted.is_empty(), "{:?}", after.persisted);
    assert_eq!(after.hub.retained_messages(), 2);
    assert_eq!(
        retained(&mut after, "s", "open/#"),
        [
            ("open/a".into(), "up".into(), None),
            ("open/e".into(), "for a minute".into(), Some(30)),
        ]
    );
    // Its expiry runs on from there.
    after.advance(31);
    assert_eq!(
        retained(&mut after, "s2", "open/#"),
        [("open/a".into(), "up".into(), None)]
    );

    // Down longer than its minute: dropped at restore, and from the store.
    let mut late = durable();
    late.now = Now::new(Instant::from_secs(5), Timestamp::from_secs(NOW_SECS + 61));
    late.hub.restore(late.now, store.values().cloned());
    late.pump();
    assert_eq!(
        late.persisted,
        [Persist::Unretain(TopicName::from_static("open/e"))]
    );
    assert_eq!(
        retained(&mut late, "s", "open/#"),
        [("open/a".into(), "up".into(), None)]
    );
}

#[test]
fn a_restore_is_deterministic() {
    let run = || {
        let mut net = durable();
        let p = client(&mut net, "p");
        net.publish(p, "open/a", b"up", QoS::AtLeastOnce, true);
        publish_with_expiry(&mut net, p, "open/e", b"e", 5);
        let mut store = BTreeMap::new();
        apply(&mut store, &net.persisted);
        let mut next = durable();
        next.now = next.now + Duration::from_secs(3);
        next.hub.restore(next.now, store.into_values());
        let got = retained(&mut next, "s", "open/#");
        (got, next.log)
    };
    assert_eq!(run(), run());
}
