//! Test keys and token minting.
#![allow(dead_code)]

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use testament::auth::{Credentials, KeySet};
use testament::codec::Bytes;
use testament::time::Timestamp;

/// A fixed "now" for tests: 2027-01-15T08:00:00Z.
pub const NOW_SECS: u64 = 1_800_000_000;

pub fn now() -> Timestamp {
    Timestamp::from_secs(NOW_SECS)
}

pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub enc: EncodingKey,
    pub jwk: Value,
}

fn key(kid: &str, alg: Algorithm, enc: EncodingKey) -> TestKey {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, alg).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    TestKey {
        kid: kid.to_string(),
        alg,
        enc,
        jwk,
    }
}

const RSA_A: &[u8] = include_bytes!("../fixtures/keys/rsa-a.pem");
const RSA_B: &[u8] = include_bytes!("../fixtures/keys/rsa-b.pem");
const EC_P256: &[u8] = include_bytes!("../fixtures/keys/ec-p256.pem");
const EC_P384: &[u8] = include_bytes!("../fixtures/keys/ec-p384.pem");
const ED25519: &[u8] = include_bytes!("../fixtures/keys/ed25519.pem");

pub fn rsa_a() -> TestKey {
    key(
        "KEY-A",
        Algorithm::RS256,
        EncodingKey::from_rsa_pem(RSA_A).unwrap(),
    )
}

pub fn rsa_b() -> TestKey {
    key(
        "KEY-B",
        Algorithm::RS256,
        EncodingKey::from_rsa_pem(RSA_B).unwrap(),
    )
}

pub fn rsa_pss() -> TestKey {
    key(
        "KEY-PS",
        Algorithm::PS256,
        EncodingKey::from_rsa_pem(RSA_B).unwrap(),
    )
}

pub fn ec384() -> TestKey {
    key(
        "KEY-EC384",
        Algorithm::ES384,
        EncodingKey::from_ec_pem(EC_P384).unwrap(),
    )
}

pub fn ec() -> TestKey {
    key(
        "KEY-EC",
        Algorithm::ES256,
        EncodingKey::from_ec_pem(EC_P256).unwrap(),
    )
}

pub fn ed() -> TestKey {
    key(
        "KEY-ED",
        Algorithm::EdDSA,
        EncodingKey::from_ed_pem(ED25519).unwrap(),
    )
}

pub fn hmac() -> TestKey {
    key(
        "KEY-HS",
        Algorithm::HS256,
        EncodingKey::from_secret(b"a shared secret of thirty-two b!"),
    )
}

/// The public RSA-A key as PEM bytes (the secret of the HS/RS confusion attack).
pub const RSA_A_PUBLIC_PEM: &[u8] = include_bytes!("../fixtures/keys/rsa-a.pub.pem");

pub fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

pub fn key_set(keys: &[&TestKey], allow_hmac: bool) -> KeySet {
    KeySet::from_jwks(&jwks(keys), allow_hmac).unwrap()
}

/// Claims for `sub` expiring `ttl` seconds after [`NOW_SECS`].
pub fn claims(sub: &str, ttl: i64) -> Value {
    json!({ "sub": sub, "iat": NOW_SECS, "exp": NOW_SECS as i64 + ttl })
}

pub fn mint(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.enc).unwrap()
}

pub fn mint_without_kid(key: &TestKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(key.alg), claims, &key.enc).unwrap()
}

pub fn password(client_id: &str, username: &str, token: &str) -> Credentials {
    Credentials {
        client_id: client_id.into(),
        username: Some(username.into()),
        password: Some(Bytes::copy_from_slice(token.as_bytes())),
        ..Default::default()
    }
}

/// base64url without padding.
pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}
