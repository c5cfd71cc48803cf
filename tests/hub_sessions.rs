//! Sessions in the hub: the client-id registry, takeover, Clean Start,
//! persistent sessions and their expiry, offline queues, redelivery.

mod common;

use common::hub::{Net, connect, default_acl, messages};
use testament::auth::{AuditRecord, DropReason};
use testament::broker::{BrokerConfig, ConnId, OfflineOverflow};
use testament::codec::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V311;

/// A subscriber that keeps its session for an hour (5.0) or persistently
/// (3.1.1 clean session 0), subscribed to `open/#` at QoS 1.
fn persistent(net: &mut Net, version: ProtocolVersion, id: &str, clean: bool) -> (ConnId, bool) {
    let mut c = connect(version, id, id);
    c.clean_start = clean;
    if version == V5 {
        c.properties.session_expiry_interval = Some(3600);
    }
    net.connect(c)
}

fn publisher(net: &mut Net) -> ConnId {
    net.connect(connect(V5, "pub", "pub")).0
}

fn dropped(net: &Net) -> Vec<(String, String, DropReason)> {
    net.audits
        .iter()
        .filter_map(|r| match r {
            AuditRecord::MessageDropped {
                client_id,
                topic,
                reason,
                ..
            } => Some((client_id.clone(), topic.to_string(), *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_persistent_session_keeps_subscriptions_and_queues_while_offline() {
    for version in [V5, V3] {
        let mut net = Net::standard();
        let (sub, present) = persistent(&mut net, version, "sub", false);
        assert!(!present);
        net.subscribe(sub, &[("open/#", QoS::AtLeastOnce)]);
        net.crash(sub);
        let p = publisher(&mut net);
        net.publish(p, "open/1", b"one", QoS::AtLeastOnce, false);
        net.publish(p, "open/0", b"qos0", QoS::AtMostOnce, false);
        net.publish(p, "open/2", b"two", QoS::ExactlyOnce, false);
        let (sub, present) = persistent(&mut net, version, "sub", false);
        assert!(present, "{version}: Session Present");
        let got = net.publishes(sub);
        assert_eq!(
            messages(&got),
            [
                ("open/1".to_string(), "one".to_string()),
                ("open/2".to_string(), "two".to_string())
            ],
            "{version}: QoS 1/2 queued in order, QoS 0 not queued"
        );
        assert_eq!(
            got[1].qos,
            QoS::AtLeastOnce,
            "downgraded to the granted QoS"
        );
        // The subscription is still there.
        net.publish(p, "open/3", b"three", QoS::AtMostOnce, false);
        assert_eq!(net.publishes(sub).len(), 1);
    }
}

#[test]
fn clean_start_discards_the_stored_session() {
    let mut net = Net::standard();
    let (sub, _) = persistent(&mut net, V5, "sub", false);
    net.subscribe(sub, &[("open/#", QoS::AtLeastOnce)]);
    net.crash(sub);
    let p = publisher(&mut net);
    net.publish(p, "open/1", b"one", QoS::AtLeastOnce, false);
    let (sub, present) = persistent(&mut net, V5, "sub", true);
    assert!(!present);
    assert!(net.publishes(sub).is_empty());
    net.publish(p, "open/2", b"two", QoS::AtLeastOnce, false);
    assert!(net.publishes(sub).is_empty(), "no subscription any more");
    assert_eq!(
        dropped(&net),
        [(
            "sub".to_string(),
            "open/1".to_string(),
            DropReason::SessionEnded
        )]
    );
}

#[test]
fn a_session_with_expiry_0_ends_with_its_connection() {
    let mut net = Net::standard();
    let (sub, _) = net.connect(connect(V5, "sub", "sub"));
    net.subscribe(sub, &[("open/#", QoS::AtLeastOnce)]);
    net.crash(sub);
    assert_eq!(net.hub.sessions(), 0);
    let mut c = connect(V5, "sub", "sub");
    c.clean_start = false;
    let (_, present) = net.connect(c);
    assert!(!present);
}

#[test]
fn a_stored_session_expires_after_its_interval() {
    let mut net = Net::standard();
    let (sub, _) = persistent(&mut net, V5, "sub", false);
    net.subscribe(sub, &[("open/#", QoS::AtLeastOnce)]);
    net.crash(sub);
    net.advance(3599);
    assert_eq!(net.hub.sessions(), 1);
    net.advance(1);
    assert_eq!(net.hub.sessions(), 0);
    assert!(
        net.audits.iter().any(
            |r| matches!(r, AuditRecord::SessionExpired { client_id, .. } if client_id == "sub")
        )
    );
    let (_, present) = persistent(&mut net, V5, "sub", false);
    assert!(!present);
}

#[test]
fn the_expiry_set_at_disconnect_is_the_one_that_counts() {
    let mut net = Net::standard();
    let (sub, _) = persistent(&mut net, V5, "sub", false);
    let mut d = Disconnect::new(DisconnectReasonCode::NormalDisconnection);
    d.properties.session_expiry_interval = Some(10);
    net.send(sub, Packet::Disconnect(d));
    net.advance(10);
    assert_eq!(net.hub.sessions(), 0);
}

#[test]
fn unacknowledged_messages_are_redelivered_with_dup_on_resume() {
    let mut net = Net::standard();
    let (sub, _) = persistent(&mut net, V5, "sub", false);
    net.subscribe(sub, &[("open/#", QoS::ExactlyOnce)]);
    let p = publisher(&mut net);
    net.publish(p, "open/a", b"a", QoS::AtLeastOnce, false);
    net.publish(p, "open/b", b"b", QoS::ExactlyOnce, false);
    let first = net.publishes(sub);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|p| !p.dup));
    net.crash(sub);
    let (sub, present) = persistent(&mut net, V5, "sub", false);
    assert!(present);
    let again = net.publishes(sub);
    assert_eq!(messages(&again), messages(&first));
    assert!(again.iter().all(|p| p.dup));
    assert_eq!(
        again.iter().map(|p| p.packet_id).collect::<Vec<_>>(),
        first.iter().map(|p| p.packet_id).collect::<Vec<_>>(),
        "the same packet ids [MQTT-4.4.0-1]"
    );
}

/// Three messages for a subscriber whose offline queue holds two: which one
/// was dropped (audited), and what the subscriber got when it came back.
fn overflow(policy: OfflineOverflow) -> (Vec<(String, String, DropReason)>, Vec<String>) {
    let config = BrokerConfig {
        max_offline_messages: 2,
        offline_overflow: policy,
        ..BrokerConfig::default()
    };
    let mut net = Net::new(config, Some(default_acl()));
    let (sub, _) = persistent(&mut net, V5, "sub", false);
    net.subscribe(sub, &[("open/#", QoS::AtLeastOnce)]);
    net.crash(sub);
    let p = publisher(&mut net);
    for t in ["open/1", "open/2", "open/3"] {
        net.publish(p, t, b"x", QoS::AtLeastOnce, false);
    }
    let (sub, _) = persistent(&mut net, V5, "sub", false);
    let topics = messages(&net.publishes(sub))
        .into_iter()
        .map(|m| m.0)
        .collect();
    (dropped(&net), topics)
}

#[test]
fn a_full_offline_queue_drops_the_newest_and_audits_it() {
    let (dropped, got) = overflow(OfflineOverflow::DropNewest);
    assert_eq!(
        dropped,
        [("sub".into(), "open/3".into(), DropReason::QueueFull)]
    );
    assert_eq!(got, ["open/1", "open/2"]);
}

#[test]
fn a_full_offline_queue_can_drop_the_oldest_instead() {
    let (dropped, got) = overflow(OfflineOverflow::DropOldest);
    assert_eq!(
        dropped,
        [("sub".into(), "open/1".into(), DropReason::QueueFull)]
    );
    assert_eq!(got, ["open/2", "open/3"]);
}

#[test]
fn offline_messages_expire_by_the_time_they_waited() {
    let mut net = Net::standard();
    let (sub, _) = persistent(&mut net, V5, "sub", false);
    net.subscribe(sub, &[("open/#", QoS::AtLeastOnce)]);
    net.crash(sub);
    let p = publisher(&mut net);
    for (topic, expiry) in [("open/short", 5), ("open/long", 100)] {
        let mut m = Publish::new(TopicName::try_from(topic).unwrap(), &b"x"[..]);
        m.qos = QoS::AtLeastOnce;
        m.packet_id = PacketId::new(3);
        m.properties.message_expiry_interval = Some(expiry);
        net.send(p, Packet::Publish(m));
    }
    net.advance(30);
    let (sub, _) = persistent(&mut net, V5, "sub", false);
    let got = net.publishes(sub);
    assert_eq!(got.len(), 1, "the expired message is never delivered");
    assert_eq!(got[0].topic.as_deref(), Some("open/long"));
    assert_eq!(got[0].properties.message_expiry_interval, Some(70));
}

#[test]
fn too_many_sessions_get_quota_exceeded() {
    let config = BrokerConfig {
        max_sessions: 1,
        ..BrokerConfig::default()
    };
    let mut net = Net::new(config, Some(default_acl()));
    net.connect(connect(V5, "one", "one"));
    let two = net.connect_with(connect(V5, "two", "two"));
    assert!(matches!(
        &net.take(two)[..],
        [Packet::ConnAck(a)] if a.reason_code == ConnectReasonCode::QuotaExceeded
    ));
    assert!(net.closed(two).is_some());
    let three = net.connect_with(connect(V3, "three", "three"));
    assert!(matches!(
        &net.take(three)[..],
        [Packet::ConnAck(a)] if a.reason_code == ConnectReasonCode::ServerUnavailable
    ));
    // The same client id is not a new session: takeover is allowed.
    let (_, _) = net.connect(connect(V5, "one", "one"));
}

#[test]
fn the_identity_of_a_session_is_its_latest_authentication() {
    // A resumed session publishes with the identity of the new connection.
    let mut net = Net::standard();
    let (a, _) = persistent(&mut net, V5, "shared-id", false);
    net.crash(a);
    let mut c = connect(V5, "shared-id", "bob");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    let (b, present) = net.connect(c);
    assert!(present);
    let (m, _) = net.connect(connect(V5, "m", "m"));
    net.subscribe(m, &[("trusted/#", QoS::AtMostOnce)]);
    net.publish(b, "trusted/bob/x", b"1", QoS::AtMostOnce, false);
    net.publish(b, "trusted/shared-id/x", b"2", QoS::AtMostOnce, false);
    assert_eq!(
        messages(&net.publishes(m)),
        [("trusted/bob/x".to_string(), "1".to_string())]
    );
}

#[test]
fn a_client_id_taken_over_twice_leaves_one_session() {
    let mut net = Net::standard();
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(persistent(&mut net, V5, "dup", false).0);
    }
    assert!(net.closed(conns[0]).is_some());
    assert!(net.closed(conns[1]).is_some());
    assert!(net.closed(conns[2]).is_none());
    assert_eq!(net.hub.sessions(), 1);
    assert_eq!(net.hub.connections(), 1);
}

/// Server-to-client topic aliases belong to a connection: a client that
/// comes back (its session resumed) is taught them anew, never sent an
/// alias alone that only its old connection knew.
#[test]
fn outbound_topic_aliases_start_anew_with_each_connection() {
    let mut net = Net::standard();
    let mut c = connect(V5, "sub", "sub");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
    c.properties.topic_alias_maximum = Some(4);
    let (s, _) = net.connect(c.clone());
    net.subscribe(s, &[("open/#", QoS::AtMostOnce)]);
    let (p, _) = net.connect(connect(V5, "p", "p"));
    let seen = |net: &mut Net, s: ConnId| -> Vec<(Option<String>, Option<u16>)> {
        net.publishes(s)
            .iter()
            .map(|m| {
                (
                    m.topic.as_ref().map(ToString::to_string),
                    m.properties.topic_alias.map(|a| a.get()),
                )
            })
            .collect()
    };
    net.publish(p, "open/a", b"1", QoS::AtMostOnce, false);
    net.publish(p, "open/a", b"2", QoS::AtMostOnce, false);
    assert_eq!(
        seen(&mut net, s),
        [(Some("open/a".into()), Some(1)), (None, Some(1))]
    );
    net.crash(s);
    let (s, present) = net.connect(c);
    assert!(present);
    net.publish(p, "open/a", b"3", QoS::AtMostOnce, false);
    assert_eq!(
        seen(&mut net, s),
        [(Some("open/a".into()), Some(1))],
        "taught again"
    );
}
