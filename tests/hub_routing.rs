//! Routing through the hub: wildcards and the `$` rule, overlapping
//! subscriptions, No Local, Retain As Published, QoS downgrade, shared
//! subscriptions, and authorization before anything is routed.

mod common;

use common::hub::{Net, connect, messages, sub};
use testament::auth::{Acl, DecidedBy, Decision, Effect, FilterTemplate, Ops, Rule, Subject};
use testament::broker::{BrokerConfig, ConnId};
use testament::codec::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V311;

fn client(net: &mut Net, version: ProtocolVersion, id: &str) -> ConnId {
    net.connect(connect(version, id, id)).0
}

fn topics(net: &mut Net, conn: ConnId) -> Vec<String> {
    messages(&net.publishes(conn))
        .into_iter()
        .map(|m| m.0)
        .collect()
}

/// Anyone may do anything, `$SYS` included.
fn open_acl() -> Acl {
    Acl::new(vec![
        Rule::new(
            Effect::Allow,
            Ops::ALL,
            Subject::Anyone,
            FilterTemplate::new("#").unwrap(),
        ),
        Rule::new(
            Effect::Allow,
            Ops::ALL,
            Subject::Anyone,
            FilterTemplate::new("$SYS/#").unwrap(),
        ),
    ])
}

#[test]
fn wildcards_route_and_dollar_topics_are_not_matched_by_leading_wildcards() {
    let mut net = Net::new(BrokerConfig::default(), Some(open_acl()));
    let all = client(&mut net, V5, "all");
    net.subscribe(all, &[("#", QoS::AtMostOnce)]);
    let plus = client(&mut net, V3, "plus");
    net.subscribe(plus, &[("+/+/x", QoS::AtMostOnce)]);
    let sys = client(&mut net, V5, "sys");
    net.subscribe(sys, &[("$SYS/#", QoS::AtMostOnce)]);
    let p = client(&mut net, V5, "p");
    for t in ["open/a/x", "open/a/y", "open/a/b/x", "open", "$SYS/a/x"] {
        net.publish(p, t, b"m", QoS::AtMostOnce, false);
    }
    assert_eq!(
        topics(&mut net, all),
        ["open/a/x", "open/a/y", "open/a/b/x", "open"]
    );
    assert_eq!(topics(&mut net, plus), ["open/a/x"], "[MQTT-4.7.2-1]");
    assert_eq!(topics(&mut net, sys), ["$SYS/a/x"]);
}

#[test]
fn overlapping_subscriptions_give_one_delivery_at_the_highest_qos_with_every_identifier() {
    let mut net = Net::standard();
    let s = client(&mut net, V5, "s");
    net.subscribe_with(s, vec![sub("open/#", QoS::AtMostOnce)], Some(1));
    net.subscribe_with(s, vec![sub("open/+/x", QoS::AtLeastOnce)], Some(2));
    net.subscribe_with(s, vec![sub("open/a/x", QoS::ExactlyOnce)], None);
    let p = client(&mut net, V5, "p");
    net.publish(p, "open/a/x", b"m", QoS::AtLeastOnce, false);
    let got = net.publishes(s);
    assert_eq!(got.len(), 1, "one delivery per matching client");
    assert_eq!(
        got[0].qos,
        QoS::AtLeastOnce,
        "min(published, highest granted)"
    );
    let mut ids: Vec<u32> = got[0]
        .properties
        .subscription_identifiers
        .iter()
        .map(|i| i.get())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    // 3.1.1 alike: one delivery.
    let s3 = client(&mut net, V3, "s3");
    net.subscribe(
        s3,
        &[("open/#", QoS::AtMostOnce), ("open/a/x", QoS::AtLeastOnce)],
    );
    net.publish(p, "open/a/x", b"m", QoS::AtLeastOnce, false);
    let got = net.publishes(s3);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
}

#[test]
fn no_local_keeps_a_clients_own_messages_from_it() {
    let mut net = Net::standard();
    let c = client(&mut net, V5, "c");
    let mut local = sub("open/a", QoS::AtMostOnce);
    local.options.no_local = true;
    net.subscribe_with(c, vec![local], None);
    net.publish(c, "open/a", b"mine", QoS::AtMostOnce, false);
    assert!(net.publishes(c).is_empty());
    let other = client(&mut net, V5, "other");
    net.publish(other, "open/a", b"theirs", QoS::AtMostOnce, false);
    assert_eq!(topics(&mut net, c), ["open/a"]);
    // Without No Local a client gets its own message.
    net.subscribe(other, &[("open/a", QoS::AtMostOnce)]);
    net.publish(other, "open/a", b"again", QoS::AtMostOnce, false);
    assert_eq!(topics(&mut net, other), ["open/a"]);
}

#[test]
fn retain_as_published_keeps_the_flag_on_live_deliveries() {
    let mut net = Net::standard();
    let keep = client(&mut net, V5, "keep");
    let mut rap = sub("open/r", QoS::AtMostOnce);
    rap.options.retain_as_published = true;
    net.subscribe_with(keep, vec![rap], None);
    let plain = client(&mut net, V5, "plain");
    net.subscribe(plain, &[("open/r", QoS::AtMostOnce)]);
    let p = client(&mut net, V5, "p");
    net.publish(p, "open/r", b"m", QoS::AtMostOnce, true);
    assert!(net.publishes(keep)[0].retain);
    assert!(!net.publishes(plain)[0].retain, "[MQTT-3.3.1-12]");
}

#[test]
fn delivery_qos_is_the_lower_of_published_and_granted() {
    let mut net = Net::standard();
    let s = client(&mut net, V5, "s");
    net.subscribe(s, &[("open/q", QoS::AtLeastOnce)]);
    let p = client(&mut net, V5, "p");
    for (qos, expected) in [
        (QoS::AtMostOnce, QoS::AtMostOnce),
        (QoS::AtLeastOnce, QoS::AtLeastOnce),
        (QoS::ExactlyOnce, QoS::AtLeastOnce),
    ] {
        net.publish(p, "open/q", b"m", qos, false);
        let got = net.publishes(s);
        assert_eq!(got[0].qos, expected, "{qos:?}");
        if let Some(id) = got[0].packet_id {
            net.send(s, Packet::PubAck(PubAck::new(id)));
        }
    }
}

#[test]
fn shared_subscriptions_deliver_round_robin_and_skip_disconnected_members() {
    let mut net = Net::standard();
    let members: Vec<ConnId> = ["m1", "m2", "m3"]
        .iter()
        .map(|id| {
            let c = client(&mut net, V5, id);
            net.subscribe(c, &[("$share/g/open/jobs/+", QoS::AtMostOnce)]);
            c
        })
        .collect();
    let p = client(&mut net, V5, "p");
    for i in 0..6 {
        net.publish(p, &format!("open/jobs/{i}"), b"j", QoS::AtMostOnce, false);
    }
    let got: Vec<Vec<String>> = members.iter().map(|m| topics(&mut net, *m)).collect();
    assert_eq!(
        got,
        [
            ["open/jobs/0", "open/jobs/3"],
            ["open/jobs/1", "open/jobs/4"],
            ["open/jobs/2", "open/jobs/5"]
        ]
    );
    net.crash(members[1]);
    for i in 6..10 {
        net.publish(p, &format!("open/jobs/{i}"), b"j", QoS::AtMostOnce, false);
    }
    let n: Vec<usize> = members.iter().map(|m| net.publishes(*m).len()).collect();
    assert_eq!(
        n,
        [2, 0, 2],
        "the crashed member's share goes to the others"
    );
    // A second group gets its own copy; a plain subscriber too.
    let other = client(&mut net, V5, "other");
    net.subscribe(other, &[("$share/h/open/jobs/#", QoS::AtMostOnce)]);
    let plain = client(&mut net, V5, "plain");
    net.subscribe(plain, &[("open/jobs/#", QoS::AtMostOnce)]);
    net.publish(p, "open/jobs/x", b"j", QoS::AtMostOnce, false);
    assert_eq!(topics(&mut net, other), ["open/jobs/x"]);
    assert_eq!(topics(&mut net, plain), ["open/jobs/x"]);
    let n: usize = members.iter().map(|m| net.publishes(*m).len()).sum();
    assert_eq!(n, 1, "one member of group g");
}

#[test]
fn nothing_is_routed_before_its_allow() {
    let mut net = Net::new(BrokerConfig::default(), None);
    let allow = Decision {
        effect: Effect::Allow,
        decided_by: DecidedBy::NoMatch,
        exclusions: Default::default(),
    };
    let deny = Decision {
        effect: Effect::Deny,
        decided_by: DecidedBy::NoMatch,
        exclusions: Default::default(),
    };
    let s = net.connect(connect(V5, "s", "s")).0;
    net.subscribe(s, &[("a/#", QoS::AtMostOnce)]);
    let (t, _, _) = net.asked.pop().unwrap();
    net.answer(t, allow.clone());
    let p = net.connect(connect(V5, "p", "p")).0;
    net.publish(p, "a/1", b"1", QoS::AtMostOnce, false);
    net.publish(p, "a/2", b"2", QoS::AtMostOnce, false);
    assert!(net.publishes(s).is_empty(), "nothing before the decisions");
    let asked: Vec<_> = std::mem::take(&mut net.asked);
    assert_eq!(asked.len(), 2);
    net.answer(asked[1].0, deny);
    assert!(
        net.publishes(s).is_empty(),
        "held in order behind the first"
    );
    net.answer(asked[0].0, allow);
    assert_eq!(topics(&mut net, s), ["a/1"]);
}

#[test]
fn a_denied_subscription_gets_no_messages() {
    // Anyone may publish anywhere; subscribing is allowed under `open/#` only.
    let mut net = Net::new(
        BrokerConfig::default(),
        Some(Acl::new(vec![
            Rule::new(
                Effect::Allow,
                Ops::PUBLISH,
                Subject::Anyone,
                FilterTemplate::new("#").unwrap(),
            ),
            Rule::new(
                Effect::Allow,
                Ops::SUBSCRIBE,
                Subject::Anyone,
                FilterTemplate::new("open/#").unwrap(),
            ),
        ])),
    );
    let s = client(&mut net, V5, "s");
    let acks = net.subscribe(
        s,
        &[("secret/#", QoS::AtMostOnce), ("open/#", QoS::AtMostOnce)],
    );
    assert!(matches!(
        &acks[..],
        [Packet::SubAck(a)] if a.reason_codes == [SubAckReasonCode::NotAuthorized, SubAckReasonCode::GrantedQoS0]
    ));
    let other = client(&mut net, V5, "other");
    net.publish(other, "secret/x", b"m", QoS::AtMostOnce, false);
    net.publish(other, "open/x", b"m", QoS::AtMostOnce, false);
    assert_eq!(topics(&mut net, s), ["open/x"]);
}

#[test]
fn unsubscribe_stops_deliveries() {
    let mut net = Net::standard();
    let s = client(&mut net, V5, "s");
    net.subscribe(s, &[("open/#", QoS::AtMostOnce)]);
    net.send(
        s,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: PacketId::new(2).unwrap(),
            properties: Default::default(),
            filters: vec![TopicFilter::from_static("open/#")],
        }),
    );
    assert!(matches!(&net.take(s)[..], [Packet::UnsubAck(_)]));
    let p = client(&mut net, V5, "p");
    net.publish(p, "open/x", b"m", QoS::AtMostOnce, false);
    assert!(net.publishes(s).is_empty());
}

#[test]
fn a_message_too_large_for_one_client_is_dropped_for_that_client_only() {
    let mut net = Net::standard();
    let mut c = connect(V5, "small", "small");
    c.properties.maximum_packet_size = std::num::NonZeroU32::new(64);
    let small = net.connect(c).0;
    net.subscribe(small, &[("open/#", QoS::AtMostOnce)]);
    let big = client(&mut net, V5, "big");
    net.subscribe(big, &[("open/#", QoS::AtMostOnce)]);
    let p = client(&mut net, V5, "p");
    net.publish(p, "open/x", &[0u8; 200], QoS::AtMostOnce, false);
    assert!(net.publishes(small).is_empty());
    assert_eq!(net.publishes(big).len(), 1);
}
