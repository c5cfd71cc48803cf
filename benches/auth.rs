//! Authentication and authorization throughput.
//!
//! - Tokens per second through [`JwtAuthenticator`] for RS256, ES256, EdDSA
//!   and HS256, against a raw `jsonwebtoken::decode` of the same token with a
//!   key prepared in advance, in the same run (goal: at most 1.2× its cost).
//! - ACL decisions per second with 10, 100 and 1000 rules (goal: ≥ 1 M/s
//!   with 100 rules on one core).
//!
//! `cargo bench --bench auth` (BENCH_ROUNDS=n to change the rounds).

mod harness;

use std::hint::black_box;

use harness::{Case, measure, ratio, report, rounds, timed};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};
use testament::auth::*;
use testament::codec::{Bytes, QoS};
use testament::time::Timestamp;

const NOW: u64 = 1_800_000_000;

struct Signer {
    name: &'static str,
    alg: Algorithm,
    enc: EncodingKey,
}

fn signers() -> Vec<Signer> {
    vec![
        Signer {
            name: "RS256",
            alg: Algorithm::RS256,
            enc: EncodingKey::from_rsa_pem(include_bytes!("../tests/fixtures/keys/rsa-a.pem"))
                .unwrap(),
        },
        Signer {
            name: "ES256",
            alg: Algorithm::ES256,
            enc: EncodingKey::from_ec_pem(include_bytes!("../tests/fixtures/keys/ec-p256.pem"))
                .unwrap(),
        },
        Signer {
            name: "EdDSA",
            alg: Algorithm::EdDSA,
            enc: EncodingKey::from_ed_pem(include_bytes!("../tests/fixtures/keys/ed25519.pem"))
                .unwrap(),
        },
        Signer {
            name: "HS256",
            alg: Algorithm::HS256,
            enc: EncodingKey::from_secret(b"a shared secret of thirty-two b!"),
        },
    ]
}

fn token_cases(s: &Signer, tokens: u64) -> Vec<Case<'static>> {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&s.enc, s.alg).unwrap()).unwrap();
    jwk["kid"] = json!("k1");
    let jwks = json!({ "keys": [jwk.clone()] }).to_string();
    let mut header = Header::new(s.alg);
    header.kid = Some("k1".into());
    let claims = json!({ "sub": "server-17", "exp": NOW + 3600, "iat": NOW, "roles": ["server"] });
    let token = jsonwebtoken::encode(&header, &claims, &s.enc).unwrap();

    let raw_key = DecodingKey::from_jwk(&serde_json::from_value(jwk).unwrap()).unwrap();
    let mut validation = Validation::new(s.alg);
    validation.validate_exp = false;
    let raw_token = token.clone();
    let raw = Case::new("raw jsonwebtoken::decode", tokens, 0, move || {
        timed(|| {
            for _ in 0..tokens {
                let d =
                    jsonwebtoken::decode::<Map<String, Value>>(&raw_token, &raw_key, &validation)
                        .unwrap();
                black_box(d);
            }
        })
    });

    let authn = JwtAuthenticator::new(
        JwtConfig {
            allow_hmac: true,
            ..Default::default()
        },
        KeySet::from_jwks(&jwks, true).unwrap(),
    );
    let creds = Credentials {
        client_id: "srv-17".into(),
        username: Some("server-17".into()),
        password: Some(Bytes::from(token.into_bytes())),
        ..Default::default()
    };
    let ours = Case::new("testament authenticator", tokens, 0, move || {
        timed(|| {
            for _ in 0..tokens {
                black_box(
                    authn
                        .authenticate(&creds, Timestamp::from_secs(NOW))
                        .unwrap(),
                );
            }
        })
    });
    vec![raw, ours]
}

fn identity(principal: &str) -> Identity {
    Identity {
        principal: principal.into(),
        client_id: format!("{principal}-client").into(),
        grants: testament::auth::Grants::new(["server".into()].into(), None, None),
        expires_at: None,
        method: AuthMethod::Password,
        authenticated_at: Timestamp::from_secs(NOW),
        token_digest: None,
    }
}

/// `n` allow-publish rules built by `rule(i)`, and a request from `who` to
/// `topic`, which the tests below choose so that only the last rule matches.
fn acl_of(
    n: usize,
    rule: impl Fn(usize) -> (Subject, String),
    who: Identity,
    topic: String,
) -> (Acl, Identity, String) {
    let rules = (0..n)
        .map(|i| {
            let (subject, filter) = rule(i);
            Rule::new(
                Effect::Allow,
                Ops::PUBLISH,
                subject,
                FilterTemplate::new(&filter).unwrap(),
            )
        })
        .collect();
    (Acl::new(rules), who, topic)
}

/// One rule per principal, each owning its own subtree.
fn per_principal(n: usize) -> (Acl, Identity, String) {
    let who = format!("user-{}", n - 1);
    let topic = format!("fleet/{who}/server/state");
    acl_of(
        n,
        |i| {
            (
                Subject::Principal(format!("user-{i}")),
                format!("fleet/user-{i}/#"),
            )
        },
        identity(&who),
        topic,
    )
}

/// One rule per zone for every authenticated client, with `%u`.
fn per_zone(n: usize) -> (Acl, Identity, String) {
    let topic = format!("zone-{}/server-17/dvs/state", n - 1);
    acl_of(
        n,
        |i| (Subject::Authenticated, format!("zone-{i}/%u/+/state")),
        identity("server-17"),
        topic,
    )
}

/// Filters starting with `+`: indexed by their second level.
fn leading_plus(n: usize) -> (Acl, Identity, String) {
    let topic = format!("site/zone-{}/server-17/state", n - 1);
    acl_of(
        n,
        |i| (Subject::Authenticated, format!("+/zone-{i}/#")),
        identity("server-17"),
        topic,
    )
}

/// Filters starting with a placeholder: the index cannot help, every rule is tried.
fn unindexed(n: usize) -> (Acl, Identity, String) {
    let who = identity("server-17");
    let topic = format!("{}-{}/state", who.client_id, n - 1);
    acl_of(
        n,
        |i| (Subject::Authenticated, format!("%c-{i}/#")),
        who,
        topic,
    )
}

fn acl_case(
    name: String,
    (acl, who, topic): (Acl, Identity, String),
    decisions: u64,
) -> Case<'static> {
    Case::new(name, decisions, 0, move || {
        timed(|| {
            for _ in 0..decisions {
                let d = acl.authorize(&AuthzRequest {
                    identity: &who,
                    op: Operation::Publish,
                    topic: &topic,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                });
                assert!(d.is_allowed());
                black_box(d);
            }
        })
    })
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { rounds(9) };
    println!("# auth: median of {rounds} rounds");
    for s in signers() {
        let tokens = match (quick, s.alg) {
            (true, _) => 10,
            (_, Algorithm::HS256) => 20_000,
            _ => 2_000,
        };
        let results = measure(rounds, &mut token_cases(&s, tokens));
        report(
            &format!("authenticate {} ({tokens} tokens)", s.name),
            "tokens",
            &results,
            &["raw jsonwebtoken::decode"],
        );
        println!(
            "\n{} authenticator cost / raw decode cost: {:.2}×",
            s.name,
            1.0 / ratio(
                &results,
                "testament authenticator",
                "raw jsonwebtoken::decode"
            )
        );
    }
    let decisions = if quick { 100 } else { 200_000 };
    let mut cases = Vec::new();
    for n in [10, 100, 1000] {
        cases.push(acl_case(
            format!("{n} rules by principal"),
            per_principal(n),
            decisions,
        ));
        cases.push(acl_case(
            format!("{n} rules by topic, %u"),
            per_zone(n),
            decisions,
        ));
        cases.push(acl_case(
            format!("{n} rules, leading +"),
            leading_plus(n),
            decisions,
        ));
        cases.push(acl_case(
            format!("{n} rules, leading %c (not indexable)"),
            unindexed(n),
            decisions,
        ));
    }
    let results = measure(rounds, &mut cases);
    report(
        "ACL decisions, worst case: the last rule matches",
        "decisions",
        &results,
        &[],
    );
}
