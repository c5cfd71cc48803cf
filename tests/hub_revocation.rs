//! Revocation reaches the subscriptions already granted, beyond an ACL
//! reload (`hub_carveouts`): after a re-authentication the session's
//! subscriptions are judged with its new identity; at a restart the
//! restored sessions' are judged against the rules the broker starts with;
//! and `OnRevoke::Disconnect` closes the connection that lost one (5.0:
//! DISCONNECT 0x87).

mod common;

use common::hub::{Net, connect_token, messages};
use common::jwt;
use serde_json::json;
use testament::auth::{
    Acl, Effect, FilterTemplate, JwtAuthenticator, JwtConfig, Ops, Rule, Subject,
};
use testament::broker::{BrokerConfig, ConnId, OnRevoke, Persist};
use testament::codec::*;
use testament::driver::storage::MemoryStorage;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V311;

/// Operators (role `ops`) may watch `fleet/#`; anyone authenticated may
/// publish there.
fn ops_acl() -> Acl {
    Acl::new(ops_rules())
}

fn ops_rules() -> Vec<Rule> {
    vec![
        Rule::new(
            Effect::Allow,
            Ops::SUBSCRIBE,
            Subject::Role("ops".into()),
            FilterTemplate::new("fleet/#").unwrap(),
        )
        .named("ops-watch"),
        Rule::new(
            Effect::Allow,
            Ops::PUBLISH,
            Subject::Authenticated,
            FilterTemplate::new("fleet/#").unwrap(),
        )
        .named("fleet-publish"),
    ]
}

fn durable() -> BrokerConfig {
    BrokerConfig {
        durable: true,
        ..BrokerConfig::default()
    }
}

fn net(config: BrokerConfig) -> Net {
    let mut net = Net::new(config, Some(ops_acl()));
    net.authn = JwtAuthenticator::new(
        JwtConfig {
            enhanced_method: Some("JWT".into()),
            ..JwtConfig::default()
        },
        jwt::key_set(&[&jwt::rsa_a()], false),
    );
    net
}

/// A one-hour token for `sub` with `roles`.
fn token(sub: &str, roles: &[&str]) -> String {
    let mut claims = jwt::claims(sub, 3600);
    claims["roles"] = json!(roles);
    jwt::mint(&jwt::rsa_a(), &claims)
}

/// A 5.0 monitor with the `ops` role, authenticated by the JWT method (so
/// that it can re-authenticate), with a persistent session watching
/// `fleet/#`.
fn monitor(net: &mut Net, version: ProtocolVersion) -> ConnId {
    let mut c = connect_token(version, "mon", "mon", &token("mon", &["ops"]));
    c.clean_start = true;
    if version == V5 {
        c.password = None;
        c.properties.authentication_method = Some(MqttString::from_static("JWT"));
        c.properties.authentication_data = Some(Bytes::from(token("mon", &["ops"])));
        c.properties.session_expiry_interval = Some(3600);
    } else {
        c.clean_start = false;
    }
    let (m, _) = net.connect(c);
    let suback = net.subscribe(m, &[("fleet/#", QoS::AtLeastOnce)]);
    assert!(
        matches!(&suback[..], [Packet::SubAck(a)] if a.reason_codes == [SubAckReasonCode::GrantedQoS1]),
        "{suback:?}"
    );
    m
}

fn reauthenticate(net: &mut Net, conn: ConnId, roles: &[&str]) -> Vec<Packet> {
    let mut auth = Auth::new(AuthReasonCode::ReAuthenticate);
    auth.properties.authentication_method = Some(MqttString::from_static("JWT"));
    auth.properties.authentication_data = Some(Bytes::from(token("mon", roles)));
    net.send(conn, Packet::Auth(auth));
    net.take(conn)
}

fn topics(net: &mut Net, c: ConnId) -> Vec<String> {
    messages(&net.publishes(c))
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

fn publisher(net: &mut Net) -> ConnId {
    net.connect(connect_token(V5, "srv", "srv", &token("srv", &[])))
        .0
}

/// A session record as the store would hand it back.
fn stored(net: &Net) -> testament::broker::Restored {
    let mut store = MemoryStorage::default();
    for op in &net.persisted {
        store.apply(op);
    }
    store.load()
}

#[test]
fn a_reauthentication_that_drops_a_role_removes_the_subscriptions_it_granted() {
    let mut net = net(durable());
    let m = monitor(&mut net, V5);
    let p = publisher(&mut net);
    net.publish(p, "fleet/a/state", b"up", QoS::AtLeastOnce, false);
    assert_eq!(topics(&mut net, m), ["fleet/a/state"]);

    // Same principal, fresh token, no `ops` role any more.
    net.persisted.clear();
    let answer = reauthenticate(&mut net, m, &[]);
    assert!(
        matches!(&answer[..], [Packet::Auth(a)] if a.reason_code == AuthReasonCode::Success),
        "{answer:?}"
    );
    let lines = net.audit_lines();
    assert!(
        lines.iter().any(|l| l.contains("op=subscribe")
            && l.contains("client_id=mon")
            && l.contains("topic=fleet/#")
            && l.contains("decision=deny")),
        "{lines:?}"
    );
    net.publish(p, "fleet/a/state", b"up", QoS::AtLeastOnce, false);
    assert!(topics(&mut net, m).is_empty(), "revoked: nothing more");
    assert!(net.closed(m).is_none(), "the default only unsubscribes");

    // The record follows: no subscription, the new identity (no role).
    let sessions = stored(&net).sessions;
    let mon = sessions.iter().find(|s| &*s.client_id == "mon").unwrap();
    assert!(mon.subscriptions.is_empty());
    assert!(mon.identity.as_ref().unwrap().roles().is_empty());

    // Given the role back, it may subscribe again.
    reauthenticate(&mut net, m, &["ops"]);
    net.subscribe(m, &[("fleet/#", QoS::AtLeastOnce)]);
    net.publish(p, "fleet/b/state", b"up", QoS::AtLeastOnce, false);
    assert_eq!(topics(&mut net, m), ["fleet/b/state"]);
}

#[test]
fn a_reauthentication_that_keeps_the_rights_changes_nothing() {
    let mut net = net(BrokerConfig::default());
    let m = monitor(&mut net, V5);
    let p = publisher(&mut net);
    let before = net.audits.len();
    reauthenticate(&mut net, m, &["ops"]);
    assert!(
        !net.audit_lines()[before..]
            .iter()
            .any(|l| l.contains("op=subscribe")),
        "an unchanged grant is not audited again"
    );
    net.publish(p, "fleet/a/state", b"up", QoS::AtLeastOnce, false);
    assert_eq!(topics(&mut net, m), ["fleet/a/state"]);
}

#[test]
fn with_on_revoke_disconnect_a_v5_client_gets_0x87_and_a_v311_client_is_closed() {
    for version in [V5, V3] {
        let mut net = net(BrokerConfig {
            on_revoke: OnRevoke::Disconnect,
            ..BrokerConfig::default()
        });
        let m = monitor(&mut net, version);
        let kept = {
            // Another operator whose rights do not change stays.
            let c = connect_token(V5, "mon2", "mon2", &token("mon2", &["ops"]));
            let (k, _) = net.connect(c);
            net.subscribe(k, &[("fleet/#", QoS::AtLeastOnce)]);
            k
        };
        // The monitor's role is withdrawn by the rules this time: only
        // mon2 keeps `ops`'s right.
        net.set_acl(Acl::new(vec![
            Rule::new(
                Effect::Deny,
                Ops::SUBSCRIBE,
                Subject::Principal("mon".into()),
                FilterTemplate::new("#").unwrap(),
            ),
            Rule::new(
                Effect::Allow,
                Ops::SUBSCRIBE,
                Subject::Role("ops".into()),
                FilterTemplate::new("fleet/#").unwrap(),
            ),
        ]));
        net.hub.reauthorize_subscriptions(net.now);
        net.pump();
        let got = net.take(m);
        match version {
            V5 => assert!(
                matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::NotAuthorized),
                "{got:?}"
            ),
            _ => assert!(
                got.is_empty(),
                "3.1.1 has no DISCONNECT from the server: {got:?}"
            ),
        }
        let reason = net.closed(m).expect("closed");
        assert_eq!(reason.code, DisconnectReasonCode::NotAuthorized);
        assert!(net.closed(kept).is_none(), "{version:?}");
    }
}

#[test]
fn a_revocation_by_reauthentication_can_disconnect_too() {
    let mut net = net(BrokerConfig {
        on_revoke: OnRevoke::Disconnect,
        ..BrokerConfig::default()
    });
    let m = monitor(&mut net, V5);
    let got = reauthenticate(&mut net, m, &[]);
    // The AUTH success first (the re-authentication did succeed), then the
    // reason the connection ends.
    assert!(
        matches!(&got[..], [Packet::Auth(a), Packet::Disconnect(d)]
            if a.reason_code == AuthReasonCode::Success
                && d.reason_code == DisconnectReasonCode::NotAuthorized),
        "{got:?}"
    );
    assert!(net.closed(m).is_some());
}

#[test]
fn restored_sessions_are_judged_against_the_rules_the_broker_starts_with() {
    let config = durable();
    let mut before = net(config.clone());
    let m = monitor(&mut before, V5);
    before.crash(m);
    let restored = stored(&before);
    assert_eq!(restored.sessions[0].subscriptions.len(), 1);

    // While the broker was down, `ops`'s `fleet/#` lost the secrets.
    let mut after = net(config.clone());
    after.set_acl(secrets_carved());
    after.now = testament::time::Now::new(testament::time::Instant::from_secs(1), before.now.wall);
    after.hub.restore_all(after.now, restored.clone());
    after.pump();
    assert!(
        after
            .audit_lines()
            .iter()
            .any(|l| l.contains("client_id=mon") && l.contains("excluding=fleet/secrets/#")),
        "{:?}",
        after.audit_lines()
    );
    assert!(
        after.persisted.iter().any(|op| matches!(op,
            Persist::Session(s) if s.subscriptions[0].exclusions.to_string() == "fleet/secrets/#")),
        "the record takes the carve-out"
    );
    let p = publisher(&mut after);
    after.publish(p, "fleet/secrets/key", b"hunter2", QoS::AtLeastOnce, false);
    after.publish(p, "fleet/a/state", b"up", QoS::AtLeastOnce, false);
    let mut again = connect_token(V5, "mon", "mon", &token("mon", &["ops"]));
    again.clean_start = false;
    let (m, present) = after.connect(again);
    assert!(present);
    assert_eq!(topics(&mut after, m), ["fleet/a/state"]);

    // And with no right at all at the restart, the subscription is gone.
    let mut revoked = net(config);
    revoked.set_acl(Acl::new(vec![]));
    revoked.hub.restore_all(revoked.now, restored);
    revoked.pump();
    assert!(
        revoked
            .audit_lines()
            .iter()
            .any(|l| l.contains("client_id=mon") && l.contains("decision=deny")),
        "{:?}",
        revoked.audit_lines()
    );
    assert!(revoked.persisted.iter().any(|op| matches!(op,
            Persist::Session(s) if &*s.client_id == "mon" && s.subscriptions.is_empty())));
}

#[test]
fn a_session_without_a_kept_identity_keeps_its_grants() {
    // A record from before identities were kept is not judged (nothing to
    // judge it with): it keeps what it was granted.
    let mut before = net(durable());
    let m = monitor(&mut before, V5);
    before.crash(m);
    let mut restored = stored(&before);
    restored.sessions[0].identity = None;
    let mut after = net(durable());
    after.set_acl(Acl::new(vec![]));
    after.hub.restore_all(after.now, restored);
    after.pump();
    assert!(
        !after
            .audit_lines()
            .iter()
            .any(|l| l.contains("op=subscribe")),
        "{:?}",
        after.audit_lines()
    );
}

/// `fleet/#` for `ops`, but `fleet/secrets/#` carved out for everyone.
fn secrets_carved() -> Acl {
    let mut rules = vec![Rule::new(
        Effect::Deny,
        Ops::SUBSCRIBE,
        Subject::Anyone,
        FilterTemplate::new("fleet/secrets/#").unwrap(),
    )];
    rules.extend(ops_rules());
    Acl::new(rules)
}

fn dropped_as_revoked(net: &Net) -> Vec<String> {
    net.audit_lines()
        .into_iter()
        .filter(|l| l.contains("reason=revoked"))
        .collect()
}

#[test]
fn messages_queued_for_an_away_session_that_the_change_carves_out_are_not_delivered() {
    let mut net = net(durable());
    let m = monitor(&mut net, V5);
    net.crash(m);
    let p = publisher(&mut net);
    net.publish(p, "fleet/secrets/key", b"hunter2", QoS::AtLeastOnce, false);
    net.publish(p, "fleet/a/state", b"up", QoS::AtLeastOnce, false);

    net.set_acl(secrets_carved());
    net.persisted.clear();
    net.hub.reauthorize_subscriptions(net.now);
    net.pump();
    let dropped = dropped_as_revoked(&net);
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(
        dropped[0].contains("topic=fleet/secrets/key"),
        "{dropped:?}"
    );
    // Its record goes with it: a restart would not bring it back.
    assert!(
        net.persisted
            .iter()
            .any(|op| matches!(op, Persist::MessageDone { .. }))
    );

    let mut again = connect_token(V5, "mon", "mon", &token("mon", &["ops"]));
    again.clean_start = false;
    again.password = None;
    again.properties.authentication_method = Some(MqttString::from_static("JWT"));
    again.properties.authentication_data = Some(Bytes::from(token("mon", &["ops"])));
    let (m, present) = net.connect(again);
    assert!(present);
    assert_eq!(topics(&mut net, m), ["fleet/a/state"]);
}

#[test]
fn messages_waiting_for_a_connected_clients_window_that_the_change_revokes_are_not_sent() {
    let mut net = net(BrokerConfig::default());
    let mut c = connect_token(V5, "mon", "mon", &token("mon", &["ops"]));
    // One message in flight at a time: the others wait for the window.
    c.properties.receive_maximum = Some(std::num::NonZeroU16::new(1).unwrap());
    let (m, _) = net.connect(c);
    net.subscribe(m, &[("fleet/#", QoS::AtLeastOnce)]);
    let p = publisher(&mut net);
    for topic in ["fleet/a/state", "fleet/secrets/key", "fleet/b/state"] {
        net.publish(p, topic, b"x", QoS::AtLeastOnce, false);
    }
    let first = net.publishes(m);
    assert_eq!(messages(&first).len(), 1, "the window holds one");

    net.set_acl(secrets_carved());
    net.hub.reauthorize_subscriptions(net.now);
    net.pump();
    assert_eq!(dropped_as_revoked(&net).len(), 1);
    // The one in flight finishes its exchange; the carved one never comes.
    let mut got = Vec::new();
    let mut next = first;
    while let Some(Packet::Publish(p)) = next.first().map(|p| Packet::Publish(p.clone())) {
        got.push(
            p.topic
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        );
        let id = p.packet_id.expect("QoS 1");
        net.send(m, Packet::PubAck(PubAck::new(id)));
        next = net.publishes(m);
    }
    assert_eq!(got, ["fleet/a/state", "fleet/b/state"]);
}

#[test]
fn messages_kept_across_a_restart_that_the_new_rules_carve_out_are_not_delivered() {
    let config = durable();
    let mut before = net(config.clone());
    let m = monitor(&mut before, V5);
    before.crash(m);
    let p = publisher(&mut before);
    before.publish(p, "fleet/secrets/key", b"hunter2", QoS::AtLeastOnce, false);
    before.publish(p, "fleet/a/state", b"up", QoS::AtLeastOnce, false);
    let restored = stored(&before);
    assert_eq!(restored.messages.len(), 2, "both queued and kept");

    let mut after = net(config);
    after.set_acl(secrets_carved());
    after.now = testament::time::Now::new(testament::time::Instant::from_secs(1), before.now.wall);
    after.hub.restore_all(after.now, restored);
    after.pump();
    let dropped = dropped_as_revoked(&after);
    assert!(
        dropped.len() == 1 && dropped[0].contains("topic=fleet/secrets/key"),
        "{dropped:?}"
    );
    let mut again = connect_token(V5, "mon", "mon", &token("mon", &["ops"]));
    again.clean_start = false;
    let (m, present) = after.connect(again);
    assert!(present);
    assert_eq!(topics(&mut after, m), ["fleet/a/state"]);
}
