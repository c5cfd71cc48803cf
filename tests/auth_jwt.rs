//! JWT authentication: the attack table, claim checks, key selection, and
//! rotation. Every refusal asserts the exact reason and the CONNACK code.

mod common;

use std::time::Duration;

use common::jwt::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use testament::auth::*;
use testament::codec::{Bytes, ConnectReasonCode};
use testament::time::Timestamp;

fn authenticator(keys: &[&TestKey]) -> JwtAuthenticator {
    JwtAuthenticator::new(JwtConfig::default(), key_set(keys, false))
}

fn refused(a: &JwtAuthenticator, creds: &Credentials, at: Timestamp) -> AuthnFailure {
    match a.authenticate(creds, at) {
        Ok(id) => panic!("accepted as {id:?}"),
        Err(f) => f,
    }
}

fn assert_refused(a: &JwtAuthenticator, token: &str, expected: AuthnError) {
    let f = refused(a, &password("c1", "alice", token), now());
    assert_eq!(f.error, expected);
    assert_eq!(f.reason_code(), ConnectReasonCode::BadUserNameOrPassword);
}

/// An identity's roles as text.
fn roles(id: &Identity) -> Vec<&str> {
    id.roles().iter().map(|r| &**r).collect()
}

#[test]
fn identities_from_tokens_without_roles_nor_acl_share_their_keys_grants() {
    let a = authenticator(&[&rsa_a()]);
    let plain = |sub: &str| {
        a.authenticate(
            &password("c1", sub, &mint(&rsa_a(), &claims(sub, 3600))),
            now(),
        )
        .unwrap()
    };
    let (alice, bob) = (plain("alice"), plain("bob"));
    assert!(std::sync::Arc::ptr_eq(&alice.grants, &bob.grants));
    assert_eq!(alice.key_id().map(|k| &**k), Some("KEY-A"));
    assert!(alice.roles().is_empty() && alice.acl().is_none());
    let mut c = claims("carol", 3600);
    c["roles"] = json!(["server"]);
    let carol = a
        .authenticate(&password("c1", "carol", &mint(&rsa_a(), &c)), now())
        .unwrap();
    assert!(!std::sync::Arc::ptr_eq(&alice.grants, &carol.grants));
    assert_eq!(roles(&carol), ["server"]);
    assert_eq!(carol.key_id().map(|k| &**k), Some("KEY-A"));
}

#[test]
fn a_valid_token_gives_the_identity() {
    let a = authenticator(&[&rsa_a()]);
    let mut c = claims("alice", 3600);
    c["roles"] = json!(["server", "fleet"]);
    let token = mint(&rsa_a(), &c);
    let id = a
        .authenticate(&password("c1", "alice", &token), now())
        .unwrap();
    assert_eq!(&*id.principal, "alice");
    assert_eq!(&*id.client_id, "c1");
    assert_eq!(roles(&id), ["server", "fleet"]);
    assert_eq!(id.key_id().map(|k| &**k), Some("KEY-A"));
    assert_eq!(id.expires_at, Some(Timestamp::from_secs(NOW_SECS + 3600)));
    assert_eq!(id.authenticated_at, now());
    assert_eq!(id.method, AuthMethod::Password);
    assert_eq!(id.token_digest, Some(TokenDigest::of(token.as_bytes())));
}

#[test]
fn every_supported_algorithm_verifies() {
    for key in [rsa_a(), rsa_pss(), ec(), ec384(), ed()] {
        let a = authenticator(&[&key]);
        let token = mint(&key, &claims("alice", 60));
        assert!(
            a.authenticate(&password("c", "alice", &token), now())
                .is_ok(),
            "{:?}",
            key.alg
        );
    }
    let hs = hmac();
    let a = JwtAuthenticator::new(JwtConfig::default(), key_set(&[&hs], true));
    let token = mint(&hs, &claims("alice", 60));
    assert!(
        a.authenticate(&password("c", "alice", &token), now())
            .is_ok()
    );
}

#[test]
fn alg_none_is_refused() {
    let a = authenticator(&[&rsa_a()]);
    let header = b64(br#"{"alg":"none","typ":"JWT","kid":"KEY-A"}"#);
    let body = b64(claims("alice", 60).to_string().as_bytes());
    assert_refused(
        &a,
        &format!("{header}.{body}."),
        AuthnError::UnsupportedAlgorithm("none".into()),
    );
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: the attacker signs with HMAC using the public
    // key's bytes and names the RSA key.
    let a = authenticator(&[&rsa_a()]);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("KEY-A".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims("alice", 60),
        &EncodingKey::from_secret(RSA_A_PUBLIC_PEM),
    )
    .unwrap();
    assert_refused(
        &a,
        &token,
        AuthnError::AlgorithmNotAllowed {
            kid: Some("KEY-A".into()),
            alg: "HS256".into(),
        },
    );
    // Even with HMAC enabled, the RSA key never verifies HMAC.
    let a = JwtAuthenticator::new(JwtConfig::default(), key_set(&[&rsa_a(), &hmac()], true));
    assert!(matches!(
        refused(&a, &password("c1", "alice", &token), now()).error,
        AuthnError::AlgorithmNotAllowed { .. }
    ));
}

#[test]
fn unknown_kid_is_refused() {
    let a = authenticator(&[&rsa_a()]);
    let token = mint(&rsa_b(), &claims("alice", 60));
    assert_refused(&a, &token, AuthnError::UnknownKey("KEY-B".into()));
}

#[test]
fn expiry_is_checked_against_the_given_time_with_leeway() {
    let a = authenticator(&[&rsa_a()]); // leeway 30 s
    let expired = mint(&rsa_a(), &claims("alice", -31));
    assert_refused(
        &a,
        &expired,
        AuthnError::Expired {
            exp: Timestamp::from_secs(NOW_SECS - 31),
        },
    );
    let within_leeway = mint(&rsa_a(), &claims("alice", -29));
    assert!(
        a.authenticate(&password("c1", "alice", &within_leeway), now())
            .is_ok()
    );
    // The same token, judged 10 minutes earlier by the caller's clock, is fine:
    // no clock is read inside.
    let earlier = now() - Duration::from_secs(600);
    assert!(
        a.authenticate(&password("c1", "alice", &expired), earlier)
            .is_ok()
    );
}

#[test]
fn missing_exp_is_refused_unless_configured() {
    let c = json!({ "sub": "alice" });
    let a = authenticator(&[&rsa_a()]);
    assert_refused(&a, &mint(&rsa_a(), &c), AuthnError::MissingExpiry);
    let lax = JwtAuthenticator::new(
        JwtConfig {
            require_exp: false,
            ..Default::default()
        },
        key_set(&[&rsa_a()], false),
    );
    let id = lax
        .authenticate(&password("c1", "alice", &mint(&rsa_a(), &c)), now())
        .unwrap();
    assert_eq!(id.expires_at, None);
}

#[test]
fn nbf_in_the_future_is_refused() {
    let mut c = claims("alice", 3600);
    c["nbf"] = json!(NOW_SECS + 120);
    let a = authenticator(&[&rsa_a()]);
    assert_refused(
        &a,
        &mint(&rsa_a(), &c),
        AuthnError::NotYetValid {
            nbf: Timestamp::from_secs(NOW_SECS + 120),
        },
    );
    c["nbf"] = json!(NOW_SECS + 20); // within leeway
    assert!(
        a.authenticate(&password("c1", "alice", &mint(&rsa_a(), &c)), now())
            .is_ok()
    );
}

#[test]
fn wrong_issuer_and_audience_are_refused() {
    let a = JwtAuthenticator::new(
        JwtConfig {
            issuers: vec!["https://idp.example".into()],
            audiences: vec!["mqtt".into()],
            ..Default::default()
        },
        key_set(&[&rsa_a()], false),
    );
    let mut c = claims("alice", 60);
    c["iss"] = json!("https://evil.example");
    c["aud"] = json!("mqtt");
    assert_refused(&a, &mint(&rsa_a(), &c), AuthnError::WrongIssuer);
    c["iss"] = json!("https://idp.example");
    c["aud"] = json!(["web", "api"]);
    assert_refused(&a, &mint(&rsa_a(), &c), AuthnError::WrongAudience);
    c["aud"] = json!(["web", "mqtt"]);
    assert!(
        a.authenticate(&password("c1", "alice", &mint(&rsa_a(), &c)), now())
            .is_ok()
    );
}

#[test]
fn altered_payload_and_signature_are_refused() {
    let a = authenticator(&[&rsa_a()]);
    let token = mint(&rsa_a(), &claims("alice", 60));
    let parts: Vec<&str> = token.split('.').collect();
    let forged_body = b64(claims("admin", 60).to_string().as_bytes());
    let mut c = password(
        "c1",
        "admin",
        &format!("{}.{}.{}", parts[0], forged_body, parts[2]),
    );
    assert_eq!(refused(&a, &c, now()).error, AuthnError::BadSignature);
    c = password("c1", "alice", &resigned(&token));
    assert_eq!(refused(&a, &c, now()).error, AuthnError::BadSignature);
}

#[test]
fn token_for_another_principal_than_the_user_name_is_refused() {
    let a = authenticator(&[&rsa_a()]);
    let token = mint(&rsa_a(), &claims("bob", 60));
    assert_refused(
        &a,
        &token,
        AuthnError::PrincipalMismatch {
            username: "alice".into(),
            principal: "bob".into(),
        },
    );
}

#[test]
fn oversized_token_is_refused_before_parsing() {
    let a = authenticator(&[&rsa_a()]);
    let huge = "x".repeat(8 * 1024 + 1);
    let f = refused(&a, &password("c1", "alice", &huge), now());
    assert_eq!(
        f.error,
        AuthnError::TokenTooLarge {
            len: 8193,
            max: 8192
        }
    );
    // Refused before any parsing: no kid was read.
    assert_eq!(f.key_id, None);
}

#[test]
fn not_a_jwt_and_empty_password_are_refused() {
    let a = authenticator(&[&rsa_a()]);
    assert_refused(&a, "hunter2", AuthnError::NotAJwt);
    assert_refused(&a, "a.b.c", AuthnError::NotAJwt);
    assert_refused(&a, "", AuthnError::EmptyCredentials);
    let mut binary = password("c1", "alice", "");
    binary.password = Some(Bytes::from_static(&[0xff, 0x2e, 0x2e]));
    assert_eq!(refused(&a, &binary, now()).error, AuthnError::NotAJwt);
}

#[test]
fn a_jwk_whose_alg_contradicts_its_kty_is_refused_at_load() {
    let mut jwk = rsa_a().jwk;
    jwk["alg"] = json!("ES256");
    let err = KeySet::from_jwks(&json!({ "keys": [jwk] }).to_string(), false).unwrap_err();
    assert!(
        matches!(&err, KeySetError::Key { index: 0, kid: Some(k), problem } if k == "KEY-A" && problem.contains("contradicts")),
        "{err}"
    );
}

#[test]
fn key_set_refuses_what_it_cannot_use() {
    // HMAC keys only when enabled.
    assert!(KeySet::from_jwks(&jwks(&[&hmac()]), false).is_err());
    // Encryption keys, duplicate kids, documents without keys.
    let mut enc = rsa_a().jwk;
    enc["use"] = json!("enc");
    assert!(KeySet::from_jwks(&json!({ "keys": [enc] }).to_string(), false).is_err());
    assert!(KeySet::from_jwks(&jwks(&[&rsa_a(), &rsa_a()]), false).is_err());
    assert!(matches!(
        KeySet::from_jwks("{}", false),
        Err(KeySetError::Document(_))
    ));
    assert!(matches!(
        KeySet::from_jwks("not json", false),
        Err(KeySetError::Document(_))
    ));
}

#[test]
fn a_token_without_kid_needs_exactly_one_candidate_key() {
    let token = mint_without_kid(&rsa_a(), &claims("alice", 60));
    let one = authenticator(&[&rsa_a(), &ec()]);
    assert!(
        one.authenticate(&password("c1", "alice", &token), now())
            .is_ok()
    );
    let two = authenticator(&[&rsa_a(), &rsa_b()]);
    assert_eq!(
        refused(&two, &password("c1", "alice", &token), now()).error,
        AuthnError::AmbiguousKey {
            alg: "RS256".into(),
            count: 2
        }
    );
    let none = authenticator(&[&ec()]);
    assert_eq!(
        refused(&none, &password("c1", "alice", &token), now()).error,
        AuthnError::NoKeyForAlgorithm("RS256".into())
    );
}

#[test]
fn rotation_refuses_new_tokens_of_a_removed_key_but_keeps_issued_identities() {
    let mut a = authenticator(&[&rsa_a()]);
    let token = mint(&rsa_a(), &claims("alice", 3600));
    let issued = a
        .authenticate(&password("c1", "alice", &token), now())
        .unwrap();
    let snapshot = issued.clone();

    a.replace_keys(key_set(&[&rsa_b()], false));
    let later = now() + Duration::from_secs(5);
    let f = refused(
        &a,
        &password("c1", "alice", &mint(&rsa_a(), &claims("alice", 3600))),
        later,
    );
    assert_eq!(f.error, AuthnError::UnknownKey("KEY-A".into()));
    assert_eq!(f.key_id.as_deref(), Some("KEY-A"));
    // The identity issued before the swap is unchanged and still authorizes.
    assert_eq!(issued, snapshot);
    let acl = Acl::new(vec![Rule::new(
        Effect::Allow,
        Ops::ALL,
        Subject::Authenticated,
        FilterTemplate::new("clients/%u/#").unwrap(),
    )]);
    let d = acl.authorize(&AuthzRequest {
        identity: &issued,
        op: Operation::Will,
        topic: "clients/alice/state",
        qos: testament::codec::QoS::AtLeastOnce,
        retain: true,
    });
    assert!(d.is_allowed());
    // Tokens of the new key work.
    assert!(
        a.authenticate(
            &password("c1", "alice", &mint(&rsa_b(), &claims("alice", 60))),
            later
        )
        .is_ok()
    );
}

#[test]
fn enhanced_authentication_carries_the_token_in_auth_data() {
    let a = authenticator(&[&rsa_a()]);
    let token = mint(&rsa_a(), &claims("alice", 60));
    let creds = Credentials {
        client_id: "c1".into(),
        auth_method: Some("JWT".into()),
        auth_data: Some(Bytes::from(token.clone().into_bytes())),
        ..Default::default()
    };
    let id = a.authenticate(&creds, now()).unwrap();
    assert_eq!(id.method, AuthMethod::enhanced("JWT"));
    let other = Credentials {
        auth_method: Some("SCRAM-SHA-1".into()),
        ..creds
    };
    let f = refused(&a, &other, now());
    assert_eq!(
        f.error,
        AuthnError::BadAuthenticationMethod("SCRAM-SHA-1".into())
    );
    assert_eq!(f.reason_code(), ConnectReasonCode::BadAuthenticationMethod);
}

#[test]
fn anonymous_clients_only_when_allowed() {
    let creds = Credentials {
        client_id: "c1".into(),
        ..Default::default()
    };
    let a = authenticator(&[&rsa_a()]);
    let f = refused(&a, &creds, now());
    assert_eq!(f.error, AuthnError::AnonymousNotAllowed);
    assert_eq!(f.reason_code(), ConnectReasonCode::NotAuthorized);
    let open = JwtAuthenticator::new(
        JwtConfig {
            allow_anonymous: true,
            ..Default::default()
        },
        key_set(&[&rsa_a()], false),
    );
    let id = open.authenticate(&creds, now()).unwrap();
    assert!(id.is_anonymous());
    assert_eq!(&*id.principal, ANONYMOUS);
}

#[test]
fn roles_come_from_a_configured_claim_path() {
    let mut c = claims("alice", 60);
    c["realm_access"] = json!({ "roles": ["ops", "fleet"] });
    c["scope"] = json!("read write");
    for (path, expected) in [
        ("realm_access.roles", vec!["ops", "fleet"]),
        ("scope", vec!["read", "write"]),
        ("missing.path", vec![]),
    ] {
        let a = JwtAuthenticator::new(
            JwtConfig {
                roles_claim: Some(path.into()),
                ..Default::default()
            },
            key_set(&[&rsa_a()], false),
        );
        let id = a
            .authenticate(&password("c1", "alice", &mint(&rsa_a(), &c)), now())
            .unwrap();
        assert_eq!(roles(&id), expected, "{path}");
    }
}

#[test]
fn principal_from_another_claim_and_acl_claim_parsed() {
    let mut c = json!({ "preferred_username": "srv-7", "exp": NOW_SECS + 60 });
    c["acl"] = json!({ "publish": ["fleet/%u/#"], "subscribe": ["fleet/+/state"] });
    let a = JwtAuthenticator::new(
        JwtConfig {
            principal_claim: "preferred_username".into(),
            ..Default::default()
        },
        key_set(&[&rsa_a()], false),
    );
    let id = a
        .authenticate(&password("c1", "srv-7", &mint(&rsa_a(), &c)), now())
        .unwrap();
    assert_eq!(&*id.principal, "srv-7");
    assert_eq!(id.acl().unwrap().publish[0].as_str(), "fleet/%u/#");
    c["acl"] = json!({ "publish": ["a/#/b"] });
    assert!(matches!(
        refused(&a, &password("c1", "srv-7", &mint(&rsa_a(), &c)), now()).error,
        AuthnError::InvalidAclClaim(_)
    ));
    let no_sub = json!({ "exp": NOW_SECS + 60 });
    assert_eq!(
        refused(
            &a,
            &password("c1", "srv-7", &mint(&rsa_a(), &no_sub)),
            now()
        )
        .error,
        AuthnError::MissingPrincipal("preferred_username".into())
    );
}

#[test]
fn audit_records_never_hold_the_token() {
    let a = authenticator(&[&rsa_a()]);
    let token = mint(&rsa_a(), &claims("alice", 60));
    let id = a
        .authenticate(&password("c1", "alice", &token), now())
        .unwrap();
    let ok = AuditRecord::authenticated(std::sync::Arc::new(id)).to_string();
    let bad = AuditRecord::AuthenticationFailed {
        at: now(),
        client_id: "c1".into(),
        username: Some("alice".into()),
        failure: Box::new(refused(
            &a,
            &password("c1", "alice", &resigned(&token)),
            now(),
        )),
    }
    .to_string();
    for line in [&ok, &bad] {
        assert!(!line.contains(&token[..20]), "{line}");
        assert!(!line.contains(token.split('.').nth(2).unwrap()), "{line}");
    }
    assert!(ok.starts_with("event=authn result=ok"), "{ok}");
    assert!(
        ok.contains("principal=alice") && ok.contains("kid=KEY-A"),
        "{ok}"
    );
    assert!(
        bad.contains("result=fail") && bad.contains("reason=\"bad signature\""),
        "{bad}"
    );
}

/// The token with one character in the middle of its signature changed
/// (the last one may only carry padding bits).
fn resigned(token: &str) -> String {
    let sig_start = token.rfind('.').unwrap() + 1;
    let at = sig_start + (token.len() - sig_start) / 2;
    let mut t = token.as_bytes().to_vec();
    t[at] = if t[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(t).unwrap()
}

#[test]
fn will_audit_records_read_as_one_line_each() {
    let decision = Decision {
        effect: Effect::Deny,
        decided_by: DecidedBy::Rule {
            index: 2,
            name: Some("revoked".into()),
        },
        exclusions: Default::default(),
    };
    let line = |outcome| {
        AuditRecord::Will {
            at: now(),
            identity: std::sync::Arc::new(Identity {
                principal: "server-17".into(),
                client_id: "srv-17".into(),
                grants: testament::auth::Grants::none(),
                expires_at: None,
                method: AuthMethod::Password,
                authenticated_at: now(),
                token_digest: None,
            }),
            topic: testament::codec::MqttString::from_static("trusted/srv-17/server/state"),
            trigger: Some(WillTrigger::NetworkError),
            outcome,
        }
        .to_string()
    };
    assert_eq!(
        line(WillOutcome::Delivered),
        "event=will at=1800000000.000 outcome=delivered principal=server-17 client_id=srv-17 \
         topic=trusted/srv-17/server/state trigger=network_error"
    );
    assert_eq!(
        line(WillOutcome::Denied { decision }),
        "event=will at=1800000000.000 outcome=denied principal=server-17 client_id=srv-17 \
         topic=trusted/srv-17/server/state trigger=network_error detail=\"deny by rule 2 (revoked)\""
    );
    assert_eq!(
        line(WillOutcome::Delayed {
            until: now() + Duration::from_secs(5)
        }),
        "event=will at=1800000000.000 outcome=delayed principal=server-17 client_id=srv-17 \
         topic=trusted/srv-17/server/state trigger=network_error detail=\"until 1800000005.000\""
    );
}
