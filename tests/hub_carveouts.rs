//! Deny rules carve out, they do not refuse whole subscriptions: an
//! operator who allows a monitor `fleet/#` and denies `fleet/secrets/#`
//! gets `fleet/#` granted and `fleet/secrets/…` never delivered through it
//! — live or retained, before and after a restart — while a subscription
//! the deny rule covers is still refused.

mod common;

use common::hub::{Net, connect, messages};
use testament::auth::{Acl, Effect, FilterTemplate, Ops, Rule, Subject};
use testament::broker::{BrokerConfig, ConnId, Persist};
use testament::codec::*;
use testament::driver::storage::MemoryStorage;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Everyone authenticated may use `fleet/#`, but not subscribe to
/// `fleet/secrets/#`.
fn fleet_acl() -> Acl {
    Acl::new(vec![
        Rule::new(
            Effect::Deny,
            Ops::SUBSCRIBE,
            Subject::Anyone,
            FilterTemplate::new("fleet/secrets/#").unwrap(),
        )
        .named("no-secrets"),
        Rule::new(
            Effect::Allow,
            Ops::ALL,
            Subject::Authenticated,
            FilterTemplate::new("fleet/#").unwrap(),
        )
        .named("fleet"),
    ])
}

fn net(durable: bool) -> Net {
    let config = BrokerConfig {
        durable,
        ..BrokerConfig::default()
    };
    Net::new(config, Some(fleet_acl()))
}

fn topics(net: &mut Net, c: ConnId) -> Vec<String> {
    messages(&net.publishes(c))
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

fn monitor(net: &mut Net, clean: bool) -> (ConnId, Vec<Packet>) {
    let mut c = connect(V5, "mon", "mon");
    c.clean_start = clean;
    c.properties.session_expiry_interval = Some(3600);
    let (m, _) = net.connect(c);
    let suback = if clean {
        net.subscribe(m, &[("fleet/#", QoS::AtLeastOnce)])
    } else {
        Vec::new()
    };
    (m, suback)
}

#[test]
fn a_wildcard_beside_a_deny_rule_is_granted_and_never_delivers_what_it_denies() {
    let mut net = net(false);
    let (m, suback) = monitor(&mut net, true);
    assert!(
        matches!(&suback[..], [Packet::SubAck(a)] if a.reason_codes == [SubAckReasonCode::GrantedQoS1]),
        "{suback:?}"
    );
    assert!(
        net.audit_lines().iter().any(|l| l.contains("op=subscribe")
            && l.contains("decision=allow")
            && l.contains("excluding=fleet/secrets/#")),
        "the grant says what it carves out: {:?}",
        net.audit_lines()
    );
    let (p, _) = net.connect(connect(V5, "srv", "srv"));
    net.publish(p, "fleet/a/state", b"up", QoS::AtLeastOnce, false);
    net.publish(p, "fleet/secrets/key", b"hunter2", QoS::AtLeastOnce, false);
    net.publish(
        p,
        "fleet/secretsX",
        b"not a secret",
        QoS::AtLeastOnce,
        false,
    );
    assert_eq!(topics(&mut net, m), ["fleet/a/state", "fleet/secretsX"]);

    // Covered by the deny rule: refused whole, as before.
    let (other, _) = net.connect(connect(V5, "other", "other"));
    let suback = net.subscribe(other, &[("fleet/secrets/#", QoS::AtLeastOnce)]);
    assert!(
        matches!(&suback[..], [Packet::SubAck(a)] if a.reason_codes == [SubAckReasonCode::NotAuthorized]),
        "{suback:?}"
    );
}

#[test]
fn retained_messages_on_subscribe_honour_the_same_carve_outs() {
    let mut net = net(false);
    let (p, _) = net.connect(connect(V5, "srv", "srv"));
    net.publish(p, "fleet/b/state", b"up", QoS::AtLeastOnce, true);
    net.publish(p, "fleet/secrets/key", b"hunter2", QoS::AtLeastOnce, true);
    let (m, _) = monitor(&mut net, true);
    assert_eq!(topics(&mut net, m), ["fleet/b/state"]);
}

#[test]
fn a_carve_out_is_kept_with_its_session_and_holds_after_a_restart() {
    let mut before = net(true);
    let (m, _) = monitor(&mut before, true);
    before.crash(m);
    let mut store = MemoryStorage::default();
    for op in &before.persisted {
        store.apply(op);
    }
    let stored = store.load();
    let kept = &stored.sessions[0].subscriptions[0];
    assert_eq!(kept.exclusions.to_string(), "fleet/secrets/#");
    assert!(
        before
            .persisted
            .iter()
            .any(|op| matches!(op, Persist::Session(_)))
    );

    let mut after = net(true);
    after.now = testament::time::Now::new(testament::time::Instant::from_secs(1), before.now.wall);
    after.hub.restore_all(after.now, stored);
    after.pump();
    let (p, _) = after.connect(connect(V5, "srv", "srv"));
    after.publish(p, "fleet/secrets/key", b"hunter2", QoS::AtLeastOnce, false);
    after.publish(p, "fleet/c/state", b"up", QoS::AtLeastOnce, false);
    let (m, _) = monitor(&mut after, false);
    assert_eq!(topics(&mut after, m), ["fleet/c/state"]);
}

/// Revocation takes effect on existing subscriptions: after an ACL change,
/// every session's subscriptions — connected or stored — are judged again
/// with its identity. One no longer allowed is removed (audited, the
/// client no longer gets anything through it); one still allowed takes the
/// carve-outs of the new rules.
#[test]
fn an_acl_change_reaches_the_subscriptions_already_granted() {
    let mut net = net(true);
    let (m, _) = monitor(&mut net, true);
    let mut away = connect(V5, "away", "away");
    away.clean_start = true;
    away.properties.session_expiry_interval = Some(3600);
    let (a, _) = net.connect(away.clone());
    net.subscribe(a, &[("fleet/+/state", QoS::AtLeastOnce)]);
    net.crash(a);
    let (p, _) = net.connect(connect(V5, "srv", "srv"));

    // The monitor loses fleet/# outright; everyone loses fleet/b/…
    let revoked = Acl::new(vec![
        Rule::new(
            Effect::Deny,
            Ops::SUBSCRIBE,
            Subject::Principal("mon".into()),
            FilterTemplate::new("fleet/#").unwrap(),
        ),
        Rule::new(
            Effect::Deny,
            Ops::SUBSCRIBE,
            Subject::Anyone,
            FilterTemplate::new("fleet/b/#").unwrap(),
        ),
        Rule::new(
            Effect::Allow,
            Ops::ALL,
            Subject::Authenticated,
            FilterTemplate::new("fleet/#").unwrap(),
        ),
    ]);
    net.hub
        .set_authorizer(Some(std::sync::Arc::new(revoked) as std::sync::Arc<_>));
    net.persisted.clear();
    net.hub.reauthorize_subscriptions(net.now);
    net.pump();
    let lines = net.audit_lines();
    assert!(
        lines.iter().any(|l| l.contains("op=subscribe")
            && l.contains("client_id=mon")
            && l.contains("topic=fleet/#")
            && l.contains("decision=deny")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("client_id=away")
            && l.contains("decision=allow")
            && l.contains("excluding=fleet/b/#")),
        "{lines:?}"
    );
    // Both records follow: the monitor's without fleet/#, the stored one
    // with its new carve-out.
    let mut store = MemoryStorage::default();
    for op in &net.persisted {
        store.apply(op);
    }
    let sessions = store.load().sessions;
    let of = |id: &str| sessions.iter().find(|s| &*s.client_id == id).unwrap();
    assert!(of("mon").subscriptions.is_empty());
    assert_eq!(
        of("away").subscriptions[0].exclusions.to_string(),
        "fleet/b/#"
    );

    net.publish(p, "fleet/a/state", b"up", QoS::AtLeastOnce, false);
    net.publish(p, "fleet/b/state", b"up", QoS::AtLeastOnce, false);
    assert!(topics(&mut net, m).is_empty(), "revoked: nothing more");
    away.clean_start = false;
    let (a, present) = net.connect(away);
    assert!(present);
    assert_eq!(topics(&mut net, a), ["fleet/a/state"]);
}
