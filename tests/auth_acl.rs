//! The ACL authorizer: every rule kind, first-match order, substitution
//! (hostile principals and client ids included), subscribe containment, the
//! will operation, token claims, and replacement at runtime.

use testament::auth::*;
use testament::codec::QoS;
use testament::time::Timestamp;

fn id(principal: &str, client_id: &str, roles: &[&str]) -> Identity {
    Identity {
        principal: principal.into(),
        client_id: client_id.into(),
        grants: testament::auth::Grants::new(
            roles.iter().map(|&r| r.into()).collect(),
            None,
            Some("KEY-A".into()),
        ),
        expires_at: None,
        method: AuthMethod::Password,
        authenticated_at: Timestamp::from_secs(1),
        token_digest: None,
    }
}

fn rule(effect: Effect, ops: Ops, subject: Subject, filter: &str) -> Rule {
    Rule::new(effect, ops, subject, FilterTemplate::new(filter).unwrap())
}

fn ask(acl: &Acl, identity: &Identity, op: Operation, topic: &str) -> Decision {
    acl.authorize(&AuthzRequest {
        identity,
        op,
        topic,
        qos: QoS::AtLeastOnce,
        retain: false,
    })
}

fn allowed(acl: &Acl, identity: &Identity, op: Operation, topic: &str) -> bool {
    ask(acl, identity, op, topic).is_allowed()
}

use Effect::{Allow, Deny};
use Operation::{Publish, Subscribe, Will};

#[test]
fn no_rule_denies() {
    let acl = Acl::default();
    let d = ask(&acl, &id("alice", "c1", &[]), Publish, "a");
    assert_eq!(d.effect, Deny);
    assert_eq!(d.decided_by, DecidedBy::NoMatch);
    assert_eq!(d.reason(), "no rule or token claim allows it");
}

#[test]
fn first_match_wins() {
    let acl = Acl::new(vec![
        rule(Deny, Ops::PUBLISH, Subject::Anyone, "secret/#").named("no-secrets"),
        rule(Allow, Ops::PUBLISH, Subject::Anyone, "#"),
    ]);
    let alice = id("alice", "c1", &[]);
    let d = ask(&acl, &alice, Publish, "secret/x");
    assert_eq!(d.effect, Deny);
    assert_eq!(
        d.decided_by,
        DecidedBy::Rule {
            index: 0,
            name: Some("no-secrets".into())
        }
    );
    assert_eq!(d.reason(), "deny by rule 0 (no-secrets)");
    let d = ask(&acl, &alice, Publish, "public/x");
    assert_eq!(
        d.decided_by,
        DecidedBy::Rule {
            index: 1,
            name: None
        }
    );
}

#[test]
fn every_subject_kind() {
    let acl = Acl::new(vec![
        rule(Allow, Ops::ALL, Subject::Principal("alice".into()), "p/#"),
        rule(Allow, Ops::ALL, Subject::Role("ops".into()), "r/#"),
        rule(Allow, Ops::ALL, Subject::ClientId("sensor-*".into()), "c/#"),
        rule(Allow, Ops::ALL, Subject::Authenticated, "auth/#"),
        rule(Allow, Ops::ALL, Subject::Anonymous, "anon/#"),
        rule(Allow, Ops::ALL, Subject::Anyone, "any/#"),
    ]);
    let alice = id("alice", "c1", &[]);
    let ops = id("bob", "c2", &["viewer", "ops"]);
    let sensor = id("carol", "sensor-17", &[]);
    let anon = Identity::anonymous("x", Timestamp::EPOCH);
    let cases = [
        (&alice, "p/1", true),
        (&ops, "p/1", false),
        (&ops, "r/1", true),
        (&alice, "r/1", false),
        (&sensor, "c/1", true),
        (&alice, "c/1", false),
        (&alice, "auth/1", true),
        (&anon, "auth/1", false),
        (&anon, "anon/1", true),
        (&alice, "anon/1", false),
        (&anon, "any/1", true),
        (&alice, "any/1", true),
    ];
    for (who, topic, expected) in cases {
        assert_eq!(
            allowed(&acl, who, Publish, topic),
            expected,
            "{} {topic}",
            who.principal
        );
    }
    // An anonymous client cannot pose as a principal named "anonymous".
    let posing = Acl::new(vec![rule(
        Allow,
        Ops::ALL,
        Subject::Principal(ANONYMOUS.into()),
        "#",
    )]);
    assert!(!allowed(&posing, &anon, Publish, "a"));
}

#[test]
fn operations_and_the_will() {
    let acl = Acl::new(vec![
        // Wills to status/%u are allowed while ordinary publishes there are not.
        rule(Allow, Ops::WILL, Subject::Authenticated, "status/%u"),
        rule(Deny, Ops::PUBLISH, Subject::Authenticated, "status/#"),
        // The other way round: publishes to logs, never wills.
        rule(Deny, Ops::WILL, Subject::Authenticated, "logs/#"),
        rule(Allow, Ops::PUBLISH, Subject::Authenticated, "logs/#"),
        rule(Allow, Ops::SUBSCRIBE, Subject::Authenticated, "feed/#"),
        rule(
            Allow,
            Ops::PUBLISH.with(Ops::SUBSCRIBE),
            Subject::Authenticated,
            "both/#",
        ),
    ]);
    let alice = id("alice", "c1", &[]);
    assert!(allowed(&acl, &alice, Will, "status/alice"));
    assert!(!allowed(&acl, &alice, Publish, "status/alice"));
    assert!(!allowed(&acl, &alice, Will, "status/bob"));
    assert!(allowed(&acl, &alice, Publish, "logs/x"));
    assert!(!allowed(&acl, &alice, Will, "logs/x"));
    assert!(allowed(&acl, &alice, Subscribe, "feed/#"));
    assert!(!allowed(&acl, &alice, Publish, "feed/x"));
    // A will matches publish rules too.
    assert!(allowed(&acl, &alice, Will, "both/x"));
    assert!(allowed(&acl, &alice, Subscribe, "both/x"));
}

#[test]
fn substitution_of_principal_and_client_id() {
    let acl = Acl::new(vec![
        rule(Allow, Ops::ALL, Subject::Authenticated, "clients/%u/#"),
        rule(Allow, Ops::ALL, Subject::Authenticated, "devices/dev-%c/+"),
    ]);
    let alice = id("alice", "gw1", &[]);
    assert!(allowed(&acl, &alice, Publish, "clients/alice/state"));
    assert!(allowed(&acl, &alice, Publish, "clients/alice"));
    assert!(!allowed(&acl, &alice, Publish, "clients/bob/state"));
    assert!(!allowed(&acl, &alice, Publish, "clients/alicex/state"));
    assert!(allowed(&acl, &alice, Publish, "devices/dev-gw1/temp"));
    assert!(!allowed(&acl, &alice, Publish, "devices/dev-gw2/temp"));
    assert!(!allowed(&acl, &alice, Publish, "devices/gw1/temp"));
}

#[test]
fn hostile_principals_and_client_ids_never_widen_a_rule() {
    let acl = Acl::new(vec![rule(
        Allow,
        Ops::ALL,
        Subject::Authenticated,
        "clients/%u/#",
    )]);
    for hostile in ["#", "+", "a/b", "", "x/#"] {
        let who = id(hostile, "c1", &[]);
        for topic in [
            "clients/a/b/c",
            "clients/x/y",
            "clients/#",
            "clients/+/z",
            "clients//z",
        ] {
            assert!(
                !allowed(&acl, &who, Publish, topic),
                "principal {hostile:?} {topic}"
            );
        }
        assert!(
            !allowed(&acl, &who, Subscribe, "clients/#"),
            "principal {hostile:?}"
        );
    }
    let by_client = Acl::new(vec![rule(
        Allow,
        Ops::ALL,
        Subject::Authenticated,
        "c/%c/#",
    )]);
    let who = id("alice", "#", &[]);
    assert!(!allowed(&by_client, &who, Subscribe, "c/#"));
    assert!(!allowed(&by_client, &who, Publish, "c/x/y"));
    // A deny rule that cannot be substituted denies all of its literal prefix.
    let deny = Acl::new(vec![
        rule(Deny, Ops::ALL, Subject::Authenticated, "private/%u/#"),
        rule(Allow, Ops::ALL, Subject::Authenticated, "#"),
    ]);
    let hostile = id("a/b", "c1", &[]);
    for topic in ["private/a/b/x", "private/other/x", "private"] {
        let d = ask(&deny, &hostile, Publish, topic);
        assert_eq!(d.effect, Deny, "{topic}");
        assert_eq!(
            d.decided_by,
            DecidedBy::Rule {
                index: 0,
                name: None
            }
        );
    }
    assert_eq!(ask(&deny, &hostile, Subscribe, "private/#").effect, Deny);
    assert!(allowed(&deny, &hostile, Publish, "public/x"));
    // A well-formed principal is denied only its own subtree.
    let alice = id("alice", "c1", &[]);
    assert!(!allowed(&deny, &alice, Publish, "private/alice/x"));
    assert!(allowed(&deny, &alice, Publish, "private/bob/x"));
}

#[test]
fn subscribe_is_judged_by_containment() {
    let acl = Acl::new(vec![
        rule(Allow, Ops::SUBSCRIBE, Subject::Anyone, "a/b"),
        rule(Allow, Ops::SUBSCRIBE, Subject::Anyone, "x/+/z"),
        rule(Allow, Ops::SUBSCRIBE, Subject::Anyone, "m/#"),
    ]);
    let alice = id("alice", "c1", &[]);
    let cases = [
        ("a/b", true),
        ("a/#", false), // `a/b` does not cover all of `a/#`
        ("a/+", false),
        ("x/y/z", true),
        ("x/+/z", true),
        ("x/#", false),
        ("x/+/+", false),
        ("m", true), // `m/#` covers its parent
        ("m/#", true),
        ("m/+/q/#", true),
        ("#", false),
        ("+/b", false),
        ("$share/grp/a/b", true), // judged on its inner filter
        ("$share/grp/a/#", false),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            allowed(&acl, &alice, Subscribe, filter),
            expected,
            "{filter}"
        );
    }
}

/// A deny rule that overlaps a subscription without covering it carves its
/// topics out of the grant (checked at each delivery); one that covers it
/// refuses it whole; one that cannot meet it ($ topics) is not carried.
#[test]
fn a_deny_rule_carves_its_topics_out_of_an_overlapping_subscription() {
    let acl = Acl::new(vec![
        rule(Deny, Ops::SUBSCRIBE, Subject::Anyone, "private/#"),
        rule(Deny, Ops::SUBSCRIBE, Subject::Anyone, "$SYS/#"),
        rule(Deny, Ops::SUBSCRIBE, Subject::Anyone, "x/secret"),
        rule(Deny, Ops::PUBLISH, Subject::Anyone, "public/#"),
        rule(Allow, Ops::SUBSCRIBE, Subject::Anyone, "#"),
    ]);
    let alice = id("alice", "c1", &[]);
    let cases: [(&str, bool, &str); 9] = [
        ("#", true, "private/#,x/secret"),
        ("+/#", true, "private/#,x/secret"),
        ("+/secret", true, "private/#,x/secret"),
        ("x/+", true, "x/secret"),
        ("x/#", true, "x/secret"),
        ("x/public", true, ""),
        ("public/#", true, ""),
        ("x/secret/deeper", true, ""),
        ("private/a", false, ""),
    ];
    for (filter, allowed, exclusions) in cases {
        let d = ask(&acl, &alice, Subscribe, filter);
        assert_eq!(
            (d.is_allowed(), d.exclusions.to_string().as_str()),
            (allowed, exclusions),
            "{filter}"
        );
    }
    let d = ask(&acl, &alice, Subscribe, "#");
    assert_eq!(
        d.decided_by,
        DecidedBy::Rule {
            index: 4,
            name: None
        }
    );
    // Covered whole: refused by the rule, no carve-out.
    let d = ask(&acl, &alice, Subscribe, "private/#");
    assert_eq!(
        (d.effect, &d.decided_by, d.exclusions.is_empty()),
        (
            Deny,
            &DecidedBy::Rule {
                index: 0,
                name: None
            },
            true
        )
    );
    // A placeholder filled: `deny clients/%u/secret/#` carves out alice's.
    let acl = Acl::new(vec![
        rule(Deny, Ops::SUBSCRIBE, Subject::Anyone, "clients/%u/secret/#"),
        rule(Allow, Ops::SUBSCRIBE, Subject::Anyone, "clients/#"),
    ]);
    let d = ask(&acl, &alice, Subscribe, "clients/#");
    assert_eq!(d.exclusions.to_string(), "clients/alice/secret/#");
    // One that cannot be filled safely denies all below its prefix: here
    // the whole subscription; below it, a carve-out of the prefix.
    let odd = id("a/b", "c1", &[]);
    assert!(!ask(&acl, &odd, Subscribe, "clients/#").is_allowed());
    let acl = Acl::new(vec![
        rule(Deny, Ops::SUBSCRIBE, Subject::Anyone, "fleet/x/%u/#"),
        rule(Allow, Ops::SUBSCRIBE, Subject::Anyone, "fleet/#"),
    ]);
    let d = ask(&acl, &odd, Subscribe, "fleet/#");
    assert!(d.is_allowed());
    assert_eq!(d.exclusions.to_string(), "fleet/x/#");
}

#[test]
fn leading_wildcards_do_not_reach_dollar_topics() {
    // [MQTT-4.7.2-1] holds in rules too: `#` does not grant `$SYS`.
    let acl = Acl::new(vec![rule(Allow, Ops::ALL, Subject::Anyone, "#")]);
    let alice = id("alice", "c1", &[]);
    assert!(allowed(&acl, &alice, Publish, "a/b"));
    assert!(!allowed(&acl, &alice, Publish, "$SYS/x"));
    assert!(!allowed(&acl, &alice, Subscribe, "$SYS/#"));
    let sys = Acl::new(vec![rule(Allow, Ops::ALL, Subject::Anyone, "$SYS/#")]);
    assert!(allowed(&sys, &alice, Subscribe, "$SYS/#"));
}

#[test]
fn token_claims_allow_only_where_no_rule_decided() {
    let mut alice = id("alice", "c1", &[]);
    std::sync::Arc::make_mut(&mut alice.grants).acl = Some(std::sync::Arc::new(ClaimAcl {
        publish: vec![FilterTemplate::new("fleet/%u/#").unwrap()],
        subscribe: vec![FilterTemplate::new("fleet/+/state").unwrap()],
        all: vec![FilterTemplate::new("shared/#").unwrap()],
    }));
    let acl = Acl::new(vec![rule(
        Deny,
        Ops::ALL,
        Subject::Anyone,
        "fleet/alice/locked",
    )]);
    let d = ask(&acl, &alice, Publish, "fleet/alice/state");
    assert_eq!(d.effect, Allow);
    assert_eq!(
        d.decided_by,
        DecidedBy::Claim {
            list: ClaimList::Publish,
            index: 0
        }
    );
    // A claim publish grant covers the will too.
    assert!(allowed(&acl, &alice, Will, "fleet/alice/state"));
    // The operator's deny rule wins over the token.
    assert!(!allowed(&acl, &alice, Publish, "fleet/alice/locked"));
    assert!(allowed(&acl, &alice, Subscribe, "fleet/+/state"));
    assert!(!allowed(&acl, &alice, Subscribe, "fleet/#"));
    assert!(!allowed(&acl, &alice, Subscribe, "fleet/alice/x"));
    let d = ask(&acl, &alice, Subscribe, "shared/x/#");
    assert_eq!(
        d.decided_by,
        DecidedBy::Claim {
            list: ClaimList::All,
            index: 0
        }
    );
    assert!(!allowed(&acl, &alice, Publish, "fleet/bob/state"));
}

#[test]
fn the_index_keeps_rule_order_across_literal_and_wildcard_rules() {
    let acl = Acl::new(vec![
        rule(Allow, Ops::PUBLISH, Subject::Anyone, "b/x"),
        rule(Deny, Ops::PUBLISH, Subject::Anyone, "+/y"),
        rule(Allow, Ops::PUBLISH, Subject::Anyone, "a/#"),
        rule(Allow, Ops::PUBLISH, Subject::Anyone, "#"),
        rule(Deny, Ops::PUBLISH, Subject::Anyone, "a/z"),
    ]);
    let alice = id("alice", "c1", &[]);
    let by = |topic| ask(&acl, &alice, Publish, topic).decided_by;
    assert_eq!(
        by("b/x"),
        DecidedBy::Rule {
            index: 0,
            name: None
        }
    );
    assert_eq!(
        by("a/y"),
        DecidedBy::Rule {
            index: 1,
            name: None
        }
    );
    assert_eq!(
        by("a/z"),
        DecidedBy::Rule {
            index: 2,
            name: None
        }
    );
    assert_eq!(
        by("c/z"),
        DecidedBy::Rule {
            index: 3,
            name: None
        }
    );
    assert_eq!(
        by("b/q"),
        DecidedBy::Rule {
            index: 3,
            name: None
        }
    );
}

#[test]
fn rules_can_be_replaced_and_decisions_follow() {
    let alice = id("alice", "c1", &[]);
    let mut acl = Acl::new(vec![rule(Allow, Ops::ALL, Subject::Anyone, "a/#")]);
    assert!(allowed(&acl, &alice, Will, "a/x"));
    acl = Acl::new(vec![rule(
        Deny,
        Ops::ALL,
        Subject::Principal("alice".into()),
        "a/#",
    )]);
    assert!(!allowed(&acl, &alice, Will, "a/x"));
}

#[test]
fn authorization_audit_record_names_rule_and_trigger() {
    let acl = Acl::new(vec![
        rule(Deny, Ops::WILL, Subject::Anyone, "t/#").named("revoked"),
    ]);
    let query = AuthzQuery {
        identity: std::sync::Arc::new(id("alice", "c1", &[])),
        op: Will,
        topic: testament::codec::MqttString::from_static("t/alice"),
        qos: QoS::AtLeastOnce,
        retain: true,
        will_trigger: Some(WillTrigger::KeepAliveTimeout),
    };
    let d = acl.authorize(&query.as_request());
    let line = AuditRecord::authorization(Timestamp::from_secs(5), query, d).to_string();
    assert_eq!(
        line,
        "event=authz at=5.000 op=will principal=alice client_id=c1 topic=t/alice qos=1 retain=true \
         decision=deny by=\"rule 0 (revoked)\" trigger=keep_alive_timeout"
    );
}

mod index_is_transparent {
    //! The indexed ACL decides exactly as a plain first-match scan would: the
    //! oracle asks each rule alone, in order, and takes the first that decides.
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;

    fn filter() -> impl Strategy<Value = String> {
        let level = select(&["a", "b", "+", "%u", "x%c", "$s"][..]);
        (proptest::collection::vec(level, 1..4), any::<bool>()).prop_map(|(levels, hash)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            f
        })
    }

    fn arb_rule() -> impl Strategy<Value = Option<Rule>> {
        let subject = prop_oneof![
            select(&["alice", "bob", "a/b"][..]).prop_map(|p| Subject::Principal(p.into())),
            Just(Subject::Role("ops".into())),
            Just(Subject::ClientId("c*".into())),
            Just(Subject::Authenticated),
            Just(Subject::Anonymous),
            Just(Subject::Anyone),
        ];
        let ops = select(&[Ops::PUBLISH, Ops::SUBSCRIBE, Ops::WILL, Ops::ALL][..]);
        (any::<bool>(), ops, subject, filter()).prop_map(|(allow, ops, subject, f)| {
            let effect = if allow { Allow } else { Deny };
            FilterTemplate::new(&f)
                .ok()
                .map(|t| Rule::new(effect, ops, subject, t))
        })
    }

    /// A topic name, plus where a subscription would put wildcards.
    fn request_topic() -> impl Strategy<Value = (String, Option<usize>, bool)> {
        let level = select(&["a", "b", "alice", "xc1", "$s", "q"][..]);
        (
            proptest::collection::vec(level, 1..4),
            proptest::option::of(0usize..4),
            any::<bool>(),
        )
            .prop_map(|(l, plus, hash)| (l.join("/"), plus, hash))
    }

    fn as_filter(topic: &str, plus: Option<usize>, hash: bool) -> String {
        let mut levels: Vec<&str> = topic.split('/').collect();
        if let Some(i) = plus.filter(|&i| i < levels.len()) {
            levels[i] = "+";
        }
        let mut f = levels.join("/");
        if hash {
            f.push_str("/#");
        }
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn same_decision_as_a_plain_scan(
            rules in proptest::collection::vec(arb_rule(), 0..12),
            who in select(&["alice", "bob", "a/b", "#"][..]),
            anonymous in any::<bool>(),
            op in select(&[Publish, Subscribe, Will][..]),
            (name, plus, hash) in request_topic(),
        ) {
            let rules: Vec<Rule> = rules.into_iter().flatten().collect();
            let topic = if op == Subscribe { as_filter(&name, plus, hash) } else { name };
            let identity = if anonymous {
                Identity::anonymous("c1", Timestamp::EPOCH)
            } else {
                id(who, "c1", &["ops"])
            };
            let req = AuthzRequest { identity: &identity, op, topic: &topic, qos: QoS::AtMostOnce, retain: false };
            let indexed = Acl::new(rules.clone()).authorize(&req);
            let oracle = rules
                .iter()
                .enumerate()
                .find_map(|(i, r)| {
                    let alone = Acl::new(vec![r.clone()]).authorize(&req);
                    matches!(alone.decided_by, DecidedBy::Rule { .. }).then(|| Decision {
                        effect: alone.effect,
                        decided_by: DecidedBy::Rule { index: i, name: None },
                        exclusions: Default::default(),
                    })
                })
                .unwrap_or(Decision { effect: Deny, decided_by: DecidedBy::NoMatch, exclusions: Default::default() });
            // Carve-outs aside (a rule alone carves nothing it does not
            // grant), the index decides as the plain scan does.
            prop_assert_eq!((indexed.effect, indexed.decided_by), (oracle.effect, oracle.decided_by));
        }
    }
}
