//! A synchronous authorizer installed in the session (the built-in ACL, say)
//! decides on the spot; requests it leaves to the host still pause; the order
//! of effects stays the order of the client's packets.

mod common;

use std::sync::Arc;

use common::session::*;
use common::{V5, pid};
use testament::auth::{
    Acl, AuditRecord, AuthzRequest, Decision, Effect, FilterTemplate, Ops, Rule, Subject,
};
use testament::codec::*;
use testament::session::*;

fn acl() -> Arc<Acl> {
    Arc::new(Acl::new(vec![Rule::new(
        Effect::Allow,
        Ops::ALL,
        Subject::Authenticated,
        FilterTemplate::new("clients/%u/#").unwrap(),
    )]))
}

fn publish(topic: &'static str, id: u16) -> Packet {
    let mut p = Publish::new(TopicName::from_static(topic), Bytes::from_static(b"x"));
    p.qos = QoS::AtLeastOnce;
    p.packet_id = Some(pid(id));
    Packet::Publish(p)
}

#[test]
fn the_acl_decides_inline_and_every_decision_is_audited() {
    let mut p = Peer::alice(V5, SessionConfig::default());
    p.session.set_authorizer(Some(acl()));
    let a = p.send(publish("clients/alice/state", 1));
    assert_eq!(kinds(&a), ["audit", "publish", "send"]);
    let a = p.send(publish("clients/bob/state", 2));
    assert_eq!(kinds(&a), ["audit", "send"]);
    assert!(
        matches!(&a[0], Action::Audit(AuditRecord::Authorization { decision, .. }) if decision.effect == Effect::Deny)
    );
    assert_eq!(
        p.packets(&a),
        [Packet::PubAck(PubAck::with_reason(
            pid(2),
            PubAckReasonCode::NotAuthorized
        ))]
    );
}

#[test]
fn the_will_check_at_connect_uses_it_too() {
    let mut p = Peer::new(V5, SessionConfig::default());
    p.session.set_authorizer(Some(acl()));
    let a = p.send(Packet::Connect(Box::new(connect(
        V5,
        "c1",
        Some(will("elsewhere/w", QoS::AtMostOnce, false)),
    ))));
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Success(identity("alice", "c1", None)),
    );
    assert_eq!(kinds(&a), ["audit", "audit", "send", "close"]);
    let packets = p.packets(&a);
    assert!(
        matches!(&packets[..], [Packet::ConnAck(c)] if c.reason_code == ConnectReasonCode::NotAuthorized)
    );
}

/// Answers `fast/…` itself and leaves everything else to the host.
#[derive(Debug)]
struct Partial;

impl Authorizer for Partial {
    fn authorize(&self, request: &AuthzRequest<'_>) -> Option<Decision> {
        request.topic.starts_with("fast/").then(allow)
    }
}

#[test]
fn inline_decisions_wait_behind_pending_ones() {
    let mut p = Peer::alice(V5, SessionConfig::default());
    p.session.set_authorizer(Some(Arc::new(Partial)));
    let a1 = p.send(publish("slow/1", 1));
    assert_eq!(kinds(&a1), ["authorize"]);
    let a2 = p.send(publish("fast/2", 2));
    assert!(
        a2.is_empty(),
        "decided, but waits for the earlier request: {a2:?}"
    );
    let a = p.authorize(authorize_tickets(&a1)[0], allow());
    let topics: Vec<_> = published(&a).iter().map(|m| m.topic.to_string()).collect();
    assert_eq!(topics, ["slow/1", "fast/2"]);
    assert_eq!(
        p.packets(&a),
        [
            Packet::PubAck(PubAck::new(pid(1))),
            Packet::PubAck(PubAck::new(pid(2)))
        ]
    );
}
