//! Backpressure: a connected subscriber that cannot keep up slows its
//! publishers down (their connection is not read) instead of losing QoS 1/2
//! messages that were acknowledged to them; memory stays bounded (twice the
//! queue's bound, then drops, audited); the publishers are read again once
//! the subscriber caught up or left. Dropping stays a setting.

mod common;

use common::hub::{Net, connect, default_acl};
use testament::auth::{AuditRecord, DropReason};
use testament::broker::{BrokerConfig, ConnId};
use testament::codec::*;
use testament::session::SessionConfig;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A hub whose sessions queue 4 messages behind a window of 1.
fn net(backpressure: bool) -> Net {
    let config = BrokerConfig {
        session: SessionConfig {
            max_outbound_inflight: 1,
            max_outbound_queue: 4,
            backpressure,
            ..SessionConfig::default()
        },
        ..BrokerConfig::default()
    };
    Net::new(config, Some(default_acl()))
}

fn client(net: &mut Net, id: &str, keep_alive: u16) -> ConnId {
    let mut c = connect(V5, id, id);
    c.keep_alive = keep_alive;
    net.connect(c).0
}

fn dropped(net: &Net) -> usize {
    net.audits
        .iter()
        .filter(|r| {
            matches!(
                r,
                AuditRecord::MessageDropped {
                    reason: DropReason::QueueFull,
                    ..
                }
            )
        })
        .count()
}

/// A slow subscriber (it does not acknowledge) and a publisher of `n` QoS 1
/// messages; what the subscriber got.
fn slow_subscriber(net: &mut Net, n: usize) -> (ConnId, ConnId, Vec<Publish>) {
    let s = client(net, "slow", 0);
    net.subscribe(s, &[("open/#", QoS::AtLeastOnce)]);
    let p = client(net, "fast", 10);
    for i in 0..n {
        net.publish(p, &format!("open/{i}"), b"m", QoS::AtLeastOnce, false);
    }
    let got = net.publishes(s);
    (s, p, got)
}

#[test]
fn a_slow_subscriber_pauses_its_publisher_instead_of_dropping() {
    let mut net = net(true);
    let (s, p, got) = slow_subscriber(&mut net, 6);
    assert_eq!(got.len(), 1, "the window");
    assert_eq!(dropped(&net), 0, "nothing acknowledged is lost");
    assert!(net.paused.contains(&p), "the publisher is not read");
    assert!(
        !net.paused.contains(&s),
        "the subscriber must read its acks"
    );

    // Paused for longer than 1.5 × its keep alive (10 s): not its fault.
    net.advance(20);
    assert!(net.closed(p).is_none(), "{:?}", net.closed(p));

    // The subscriber catches up: once its queue is under half its bound,
    // the publisher is read again, and every message arrives.
    let mut all = got;
    while let Some(id) = all.last().and_then(|m| m.packet_id) {
        net.send(s, Packet::PubAck(PubAck::new(id)));
        let more = net.publishes(s);
        if more.is_empty() {
            break;
        }
        all.extend(more);
    }
    assert_eq!(all.len(), 6, "every message, once");
    assert!(net.paused.is_empty(), "read again");
}

#[test]
fn past_twice_its_bound_even_backpressure_drops_audited() {
    let mut net = net(true);
    // A window of 1, a queue of 4 taken up to 8: the tenth is dropped.
    let (_, _, got) = slow_subscriber(&mut net, 10);
    assert_eq!(got.len(), 1);
    assert_eq!(dropped(&net), 1, "memory stays bounded");
}

#[test]
fn the_drop_policy_drops_past_the_bound_and_pauses_nobody() {
    let mut net = net(false);
    let (_, _, _) = slow_subscriber(&mut net, 6);
    assert_eq!(dropped(&net), 1);
    assert!(net.paused.is_empty());
}

#[test]
fn a_slow_subscriber_that_leaves_releases_its_publishers() {
    let mut net = net(true);
    let (s, p, _) = slow_subscriber(&mut net, 6);
    assert!(net.paused.contains(&p));
    net.crash(s);
    assert!(net.paused.is_empty());
}

#[test]
fn a_subscriber_that_takes_nothing_is_disconnected_and_frees_its_publishers() {
    let mut net = net(true);
    let (s, p, got) = slow_subscriber(&mut net, 6);
    // Taking a message is progress: the timeout starts again.
    net.advance(20);
    net.send(s, Packet::PubAck(PubAck::new(got[0].packet_id.unwrap())));
    net.advance(29);
    assert!(net.closed(s).is_none());
    net.advance(1);
    let reason = net
        .closed(s)
        .expect("disconnected after 30 s without progress");
    assert_eq!(reason.code, DisconnectReasonCode::QuotaExceeded);
    assert!(net.paused.is_empty(), "its publishers go on");
    assert!(net.closed(p).is_none());
}
