//! What an ACL change costs once authorization is live on existing
//! subscriptions: a hub holding `RELOAD_SESSIONS` persistent sessions
//! (100,000) of `RELOAD_SUBS` subscriptions each (10), every one with the
//! identity of its last authentication, judges all of them again
//! ([`Broker::reauthorize_subscriptions`]). The baseline is the least any
//! reload must do, in the same run: the same 1,000,000 decisions asked of
//! the same ACL directly.
//!
//! Cases: nothing changes (the usual SIGHUP after an unrelated edit); a new
//! carve-out reaches 7 of each session's 10 subscriptions (every session's
//! record is written again); a role loses `fleet/#`, revoking 7
//! subscriptions of one session in ten (removed from the tree, audited,
//! records written). The records and audit lines the hub emits are taken
//! (not committed: the store's cost is `benches/commit.rs`'s).
//!
//! `cargo bench --bench reload` (BENCH_ROUNDS=n, RELOAD_SESSIONS=n)
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

mod harness;

use std::sync::Arc;

use harness::{Case, measure, report, rounds, timed};
use testament::auth::{
    Acl, AuthMethod, AuthzQuery, Effect, FilterTemplate, Grants, Identity, Operation, Ops, Rule,
    Subject,
};
use testament::broker::{Broker, BrokerConfig, SessionRecord, StoredSubscription};
use testament::codec::{QoS, SubscriptionOptions, TopicFilter};
use testament::session::{Authorizer, SessionConfig};
use testament::time::{Now, Timestamp};

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rule(effect: Effect, ops: Ops, subject: Subject, filter: &str) -> Rule {
    Rule::new(effect, ops, subject, FilterTemplate::new(filter).unwrap())
}

/// A fleet's rules: operators watch `fleet/#` but not its secrets, everyone
/// owns `clients/%u/#`, reads `status/…`; services publish their own
/// trees. `extra` goes first (a change an operator makes).
fn acl(extra: Vec<Rule>) -> Acl {
    let mut rules = extra;
    rules.push(rule(
        Effect::Deny,
        Ops::SUBSCRIBE,
        Subject::Anyone,
        "fleet/secrets/#",
    ));
    for k in 0..5 {
        rules.push(rule(
            Effect::Allow,
            Ops::PUBLISH,
            Subject::Principal(format!("svc-{k}")),
            &format!("svc/{k}/#"),
        ));
    }
    rules.push(rule(
        Effect::Allow,
        Ops::ALL,
        Subject::Authenticated,
        "clients/%u/#",
    ));
    rules.push(rule(
        Effect::Allow,
        Ops::SUBSCRIBE,
        Subject::Role("ops".into()),
        "fleet/#",
    ));
    rules.push(rule(
        Effect::Allow,
        Ops::SUBSCRIBE,
        Subject::Role("ops-trial".into()),
        "fleet/#",
    ));
    rules.push(rule(
        Effect::Allow,
        Ops::SUBSCRIBE,
        Subject::Authenticated,
        "status/+/state",
    ));
    Acl::new(rules)
}

fn identity(i: usize, now: Timestamp) -> Arc<Identity> {
    let name: Arc<str> = format!("monitor-{i}").into();
    // One monitor in ten is on trial.
    let role: Arc<str> = if i.is_multiple_of(10) {
        "ops-trial"
    } else {
        "ops"
    }
    .into();
    Arc::new(Identity {
        principal: (*name).into(),
        client_id: name,
        grants: Grants::new(Arc::from([role]), None, None),
        expires_at: None,
        method: AuthMethod::Password,
        authenticated_at: now,
        token_digest: None,
    })
}

/// Seven views of the fleet, two of the session's own tree, the status.
fn filters(i: usize) -> Vec<TopicFilter> {
    let mut f: Vec<String> = (0..7)
        .map(|k| format!("fleet/site-{}/+/state", (i + k) % 100))
        .collect();
    f.push(format!("clients/monitor-{i}/inbox/#"));
    f.push(format!("clients/monitor-{i}/cmd"));
    f.push("status/+/state".into());
    f.into_iter()
        .map(|s| TopicFilter::new(s).unwrap())
        .collect()
}

fn records(sessions: usize, subs: usize, now: Timestamp) -> Vec<SessionRecord> {
    (0..sessions)
        .map(|i| SessionRecord {
            client_id: format!("monitor-{i}").into(),
            expiry_interval: 86_400,
            expires_at: None,
            identity: Some(identity(i, now)),
            subscriptions: filters(i)
                .into_iter()
                .take(subs)
                .map(|filter| StoredSubscription {
                    filter,
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubscriptionOptions::default()
                    },
                    id: None,
                    exclusions: Default::default(),
                })
                .collect(),
        })
        .collect()
}

fn hub(records: &[SessionRecord], acl: &Arc<Acl>, now: Now) -> Broker {
    let mut hub = Broker::new(BrokerConfig {
        durable: true,
        max_sessions: records.len() + 1,
        session: SessionConfig {
            max_subscriptions: 100,
            ..SessionConfig::default()
        },
        ..BrokerConfig::default()
    });
    hub.set_authorizer(Some(acl.clone() as Arc<dyn Authorizer>));
    hub.restore_sessions(now, records.iter().cloned());
    while hub.poll_action().is_some() {}
    hub
}

/// Sets `acl` and judges every subscription again; the actions the hub
/// emits are taken, and counted.
fn reload(hub: &mut Broker, acl: &Arc<Acl>, now: Now) -> usize {
    hub.set_authorizer(Some(acl.clone() as Arc<dyn Authorizer>));
    hub.reauthorize_subscriptions(now);
    std::iter::from_fn(|| hub.poll_action()).count()
}

fn main() {
    let sessions = count("RELOAD_SESSIONS", 100_000);
    let subs = count("RELOAD_SUBS", 10).min(10);
    let now = Now::from_secs(1_800_000_000);
    let records = records(sessions, subs, now.wall);
    let base = Arc::new(acl(Vec::new()));
    // A door sensor's readings are nobody's business: carved out of every
    // fleet subscription that could carry them.
    let carved = Arc::new(acl(vec![rule(
        Effect::Deny,
        Ops::SUBSCRIBE,
        Subject::Anyone,
        "fleet/+/door/#",
    )]));
    let trial_ended = Arc::new(acl(vec![rule(
        Effect::Deny,
        Ops::SUBSCRIBE,
        Subject::Role("ops-trial".into()),
        "fleet/#",
    )]));
    let queries: Vec<AuthzQuery> = records
        .iter()
        .flat_map(|r| {
            let identity = r.identity.clone().unwrap();
            r.subscriptions.iter().map(move |s| AuthzQuery {
                identity: identity.clone(),
                op: Operation::Subscribe,
                topic: s.filter.as_mqtt_str().clone(),
                qos: s.options.qos,
                retain: false,
                will_trigger: None,
            })
        })
        .collect();
    let units = queries.len() as u64;
    println!(
        "reload: {sessions} stored sessions × {subs} subscriptions = {units} judged per reload"
    );

    let mut unchanged = hub(&records, &base, now);
    let mut toggled = hub(&records, &base, now);
    let mut carve_next = true;
    let emitted = std::cell::Cell::new((0usize, 0usize, 0usize));
    let mut cases = vec![
        Case::new("decide only (baseline)", units, 0, || {
            timed(|| {
                let mut allowed = 0usize;
                for q in &queries {
                    if base.authorize(&q.as_request()).is_allowed() {
                        allowed += 1;
                    }
                }
                std::hint::black_box(allowed);
            })
        }),
        Case::new("reload, nothing changes", units, 0, || {
            let mut n = 0;
            let t = timed(|| n = reload(&mut unchanged, &base, now));
            let e = emitted.get();
            emitted.set((n, e.1, e.2));
            t
        }),
        Case::new("reload, a new carve-out", units, 0, || {
            // Every run changes something: carve, then lift, then carve.
            let acl = if carve_next { &carved } else { &base };
            carve_next = !carve_next;
            let mut n = 0;
            let t = timed(|| n = reload(&mut toggled, acl, now));
            let e = emitted.get();
            emitted.set((e.0, n, e.2));
            t
        }),
        Case::new("reload, a role revoked", units, 0, || {
            let mut fresh = hub(&records, &base, now);
            let mut n = 0;
            let t = timed(|| n = reload(&mut fresh, &trial_ended, now));
            let e = emitted.get();
            emitted.set((e.0, e.1, n));
            // Dropping a hub of this size is not the reload's cost.
            drop(fresh);
            t
        }),
    ];
    let results = measure(rounds(5), &mut cases);
    drop(cases);
    report(
        "ACL reload: subscriptions judged again",
        "subscriptions",
        &results,
        &["decide only (baseline)"],
    );
    let (none, carve, revoke) = emitted.get();
    println!(
        "\nactions emitted per reload (records + audit lines): nothing changes {none}, \
         carve-out {carve}, role revoked {revoke}"
    );
}
