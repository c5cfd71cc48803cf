//! JWT authentication over a rotating JWKS.
//!
//! # Key selection
//!
//! - A token's `kid` selects the key. A token without `kid` is accepted only
//!   when exactly one key of the set can verify its algorithm.
//! - Each key verifies only its own algorithm: the JWK's `alg`, or, when the
//!   JWK has none, the algorithms its `kty`/`crv` permit (RSA: RS*/PS*;
//!   EC P-256: ES256; EC P-384: ES384; OKP Ed25519: EdDSA; `oct`: HS*, only
//!   when HMAC keys are enabled). The token header alone never chooses: `none`
//!   is never accepted, and an HS256 token naming an RSA key is refused before
//!   any verification.
//!
//! # Time
//!
//! The caller gives the time. jsonwebtoken's own `exp`/`nbf` checks are off;
//! this module compares `exp` and `nbf` against that time with a leeway.
//!
//! # Rotation
//!
//! [`JwtAuthenticator::replace_keys`] swaps the key set. The next
//! authentication sees the new set; identities already issued hold no key and
//! no token, so a rotation never invalidates a live session or its will.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{ParsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde_json::{Map, Value};
use smallvec::SmallVec;

use super::vocabulary::{
    AuthMethod, AuthnError, AuthnFailure, ClaimAcl, Credentials, FilterTemplate, Grants, Identity,
    TokenDigest,
};
use crate::time::Timestamp;

/// How tokens are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// Accepted `iss` values; empty: not checked.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (one must be in the token); empty: not checked.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Whether a token without `exp` is refused.
    pub require_exp: bool,
    /// The claim naming the principal.
    pub principal_claim: String,
    /// Whether the MQTT user name, when given, must equal the principal.
    pub username_must_match: bool,
    /// Dotted path of the roles claim (`roles`, `realm_access.roles`,
    /// `scope`): an array of strings or a space-separated string.
    pub roles_claim: Option<String>,
    /// The claim holding a token's own ACL (`{"publish": [...],
    /// "subscribe": [...], "all": [...]}`).
    pub acl_claim: Option<String>,
    /// Whether `oct` (HMAC) keys may be loaded.
    pub allow_hmac: bool,
    /// Tokens longer than this are refused before any parsing.
    pub max_token_len: usize,
    /// The MQTT 5.0 Authentication Method carrying a token in its data.
    pub enhanced_method: Option<String>,
    /// Whether clients without credentials get the anonymous identity.
    pub allow_anonymous: bool,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(30),
            require_exp: true,
            principal_claim: "sub".into(),
            username_must_match: true,
            roles_claim: Some("roles".into()),
            acl_claim: Some("acl".into()),
            allow_hmac: false,
            max_token_len: 8 * 1024,
            enhanced_method: Some("JWT".into()),
            allow_anonymous: false,
        }
    }
}

/// Why a JWKS cannot be loaded. The old key set stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    /// Not a JWKS document.
    #[error("not a JWKS: {0}")]
    Document(String),
    /// One key is unusable.
    #[error("key {index} (kid {kid:?}): {problem}")]
    Key {
        /// Its position in `keys`.
        index: usize,
        /// Its `kid`.
        kid: Option<String>,
        /// What is wrong.
        problem: String,
    },
}

struct VerifyingKey {
    kid: Option<Arc<str>>,
    /// Its key id and nothing more: shared by every identity it verifies
    /// from a token without roles nor ACL.
    grants: Arc<Grants>,
    algorithms: SmallVec<[Algorithm; 6]>,
    key: DecodingKey,
    /// The public key parsed once per algorithm it serves (not HMAC):
    /// verifying through `jsonwebtoken` rebuilds the key — for RSA its
    /// big numbers and Montgomery context — at every token.
    parsed: Vec<(Algorithm, ParsedPublicKey)>,
}

/// A set of verification keys, each parsed once when the set is loaded.
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, &k.algorithms)))
            .finish()
    }
}

const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const HMAC_ALGS: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

impl KeySet {
    /// An empty set: every token is refused.
    pub fn empty() -> Self {
        Self { keys: Vec::new() }
    }

    /// Loads a JWKS document (RFC 7517).
    ///
    /// # Errors
    /// [`KeySetError`] for a document that is not a JWKS, or any key that is
    /// unusable: unsupported type or curve, an `alg` its `kty` cannot have,
    /// an encryption key, an HMAC key when HMAC is not enabled, a duplicate
    /// `kid`.
    pub fn from_jwks(json: &str, allow_hmac: bool) -> Result<Self, KeySetError> {
        let doc: Value =
            serde_json::from_str(json).map_err(|e| KeySetError::Document(e.to_string()))?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err(KeySetError::Document("no \"keys\" array".into()));
        };
        let mut keys: Vec<VerifyingKey> = Vec::with_capacity(list.len());
        for (index, raw) in list.iter().enumerate() {
            let kid = raw.get("kid").and_then(Value::as_str).map(str::to_string);
            let fail = |problem: String| KeySetError::Key {
                index,
                kid: kid.clone(),
                problem,
            };
            let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| fail(e.to_string()))?;
            let key = VerifyingKey::from_jwk(&jwk, allow_hmac).map_err(fail)?;
            if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
                return Err(fail("duplicate kid".into()));
            }
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s of the keys.
    pub fn kids(&self) -> impl Iterator<Item = Option<&str>> {
        self.keys.iter().map(|k| k.kid.as_deref())
    }
}

impl VerifyingKey {
    fn from_jwk(jwk: &Jwk, allow_hmac: bool) -> Result<Self, String> {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return Err("not a signature key (\"use\" is not \"sig\")".into());
        }
        let permitted: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA_ALGS,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                ref c => return Err(format!("unsupported EC curve {c:?}")),
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
                ref c => return Err(format!("unsupported OKP curve {c:?}")),
            },
            AlgorithmParameters::OctetKey(_) if allow_hmac => HMAC_ALGS,
            AlgorithmParameters::OctetKey(_) => {
                return Err("HMAC (oct) keys are not enabled".into());
            }
            _ => return Err("unsupported key type".into()),
        };
        let algorithms: SmallVec<[Algorithm; 6]> = match jwk.common.key_algorithm {
            None => permitted.iter().copied().collect(),
            Some(ka) => {
                let alg = signature_algorithm(ka)
                    .ok_or_else(|| format!("algorithm {ka:?} is not a signature algorithm"))?;
                if !permitted.contains(&alg) {
                    return Err(format!("alg {alg:?} contradicts the key type"));
                }
                smallvec::smallvec![alg]
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let parsed = parse_public_key(&key, &algorithms)?;
        let kid: Option<Arc<str>> = jwk.common.key_id.as_deref().map(Arc::from);
        Ok(Self {
            kid: kid.clone(),
            grants: Grants::new(Arc::default(), None, kid),
            algorithms,
            key,
            parsed,
        })
    }
}

/// Authenticates clients by JWT against a key set that can be replaced.
#[derive(Debug, Clone)]
pub struct JwtAuthenticator {
    config: JwtConfig,
    keys: Arc<KeySet>,
}

impl JwtAuthenticator {
    /// An authenticator with this configuration and key set.
    pub fn new(config: JwtConfig, keys: KeySet) -> Self {
        Self {
            config,
            keys: Arc::new(keys),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// The key set in force.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Replaces the key set (rotation). Identities already issued are untouched.
    pub fn replace_keys(&mut self, keys: KeySet) {
        self.keys = Arc::new(keys);
    }

    /// Authenticates a client at `now`.
    ///
    /// # Errors
    /// [`AuthnFailure`] saying why, with the token's `kid` and digest when known.
    pub fn authenticate(
        &self,
        creds: &Credentials,
        now: Timestamp,
    ) -> Result<Identity, AuthnFailure> {
        let (token, method) = match (&creds.auth_method, &creds.password) {
            (Some(m), _) if self.config.enhanced_method.as_deref() == Some(m.as_str()) => {
                (creds.auth_data.as_ref(), AuthMethod::enhanced(m))
            }
            (Some(m), _) => return Err(AuthnError::BadAuthenticationMethod(m.clone()).into()),
            (None, Some(p)) => (Some(p), AuthMethod::Password),
            (None, None) if self.config.allow_anonymous => {
                return Ok(Identity::anonymous(creds.client_id.clone(), now));
            }
            (None, None) => return Err(AuthnError::AnonymousNotAllowed.into()),
        };
        let token = token.map_or(&[][..], |t| &t[..]);
        if token.is_empty() {
            return Err(AuthnError::EmptyCredentials.into());
        }
        if token.len() > self.config.max_token_len {
            return Err(AuthnError::TokenTooLarge {
                len: token.len(),
                max: self.config.max_token_len,
            }
            .into());
        }
        let digest = TokenDigest::of(token);
        let mut kid = None;
        self.verify(token, creds, method, now, digest, &mut kid)
            .map_err(|error| AuthnFailure {
                error,
                key_id: kid,
                token: Some(digest),
            })
    }

    fn verify(
        &self,
        token: &[u8],
        creds: &Credentials,
        method: AuthMethod,
        now: Timestamp,
        digest: TokenDigest,
        kid_out: &mut Option<String>,
    ) -> Result<Identity, AuthnError> {
        let token = std::str::from_utf8(token).map_err(|_| AuthnError::NotAJwt)?;
        if token.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(AuthnError::NotAJwt);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| header_fault(token))?;
        *kid_out = header.kid.clone();
        let alg = header.alg;
        let key = self.select_key(header.kid.as_deref(), alg)?;
        // Verify, then read the claims once: jsonwebtoken's `decode` would
        // parse the header again and the claims twice, and check times
        // against its own clock, which this module does not use.
        let (message, signature) = token.rsplit_once('.').ok_or(AuthnError::NotAJwt)?;
        let claims_b64 = message.split_once('.').ok_or(AuthnError::NotAJwt)?.1;
        match key.parsed.iter().find(|(a, _)| *a == alg) {
            Some((_, parsed)) => {
                let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(signature)
                    .map_err(|_| AuthnError::NotAJwt)?;
                parsed
                    .verify_sig(message.as_bytes(), &signature)
                    .map_err(|_| AuthnError::BadSignature)?;
            }
            // HMAC.
            None => {
                match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.key, alg) {
                    Ok(true) => {}
                    Ok(false) => return Err(AuthnError::BadSignature),
                    Err(e) => return Err(verify_fault(&e)),
                }
            }
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| AuthnError::NotAJwt)?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&raw).map_err(|e| AuthnError::MalformedClaims(e.to_string()))?;
        let c = &self.config;

        let leeway_ms = u64::try_from(c.leeway.as_millis()).unwrap_or(u64::MAX);
        let expires_at = match claims.get("exp") {
            None if c.require_exp => return Err(AuthnError::MissingExpiry),
            None => None,
            Some(v) => Some(numeric_date(v, "exp")?),
        };
        if let Some(exp) = expires_at
            && now.as_millis() >= exp.as_millis().saturating_add(leeway_ms)
        {
            return Err(AuthnError::Expired { exp });
        }
        if let Some(v) = claims.get("nbf") {
            let nbf = numeric_date(v, "nbf")?;
            if now.as_millis().saturating_add(leeway_ms) < nbf.as_millis() {
                return Err(AuthnError::NotYetValid { nbf });
            }
        }
        if !c.issuers.is_empty() {
            let iss = claims.get("iss").and_then(Value::as_str);
            if !iss.is_some_and(|i| c.issuers.iter().any(|x| x == i)) {
                return Err(AuthnError::WrongIssuer);
            }
        }
        if !c.audiences.is_empty() {
            let accepted = |a: &str| c.audiences.iter().any(|x| x == a);
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => accepted(a),
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(accepted),
                _ => false,
            };
            if !ok {
                return Err(AuthnError::WrongAudience);
            }
        }
        let principal = claims
            .get(&c.principal_claim)
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty() && !p.contains('\0'))
            .ok_or_else(|| AuthnError::MissingPrincipal(c.principal_claim.clone()))?;
        if c.username_must_match
            && let Some(u) = &creds.username
            && u != principal
        {
            return Err(AuthnError::PrincipalMismatch {
                username: u.clone(),
                principal: principal.to_string(),
            });
        }
        // No roles: the shared empty slice (`Arc::default` does not
        // allocate; collecting an empty iterator does).
        let roles = match c.roles_claim.as_deref().map(|path| roles_at(&claims, path)) {
            Some(roles) if !roles.is_empty() => roles.into_iter().map(Arc::from).collect(),
            _ => Arc::default(),
        };
        // Kept only when it grants something: most tokens carry none.
        let acl = match c.acl_claim.as_deref().and_then(|name| claims.get(name)) {
            Some(v) => Some(parse_acl_claim(v).map_err(AuthnError::InvalidAclClaim)?)
                .filter(|a| !a.is_empty())
                .map(Arc::new),
            None => None,
        };
        Ok(Identity {
            principal: principal.into(),
            client_id: creds.client_id.clone(),
            grants: if roles.is_empty() && acl.is_none() {
                key.grants.clone()
            } else {
                Grants::new(roles, acl, key.kid.clone())
            },
            expires_at,
            method,
            authenticated_at: now,
            token_digest: Some(digest),
        })
    }

    fn select_key(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, AuthnError> {
        let key = match kid {
            Some(kid) => self
                .keys
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| AuthnError::UnknownKey(kid.to_string()))?,
            None => {
                let mut candidates = self
                    .keys
                    .keys
                    .iter()
                    .filter(|k| k.algorithms.contains(&alg));
                match (candidates.next(), candidates.count()) {
                    (Some(k), 0) => k,
                    (None, _) => return Err(AuthnError::NoKeyForAlgorithm(format!("{alg:?}"))),
                    (Some(_), more) => {
                        return Err(AuthnError::AmbiguousKey {
                            alg: format!("{alg:?}"),
                            count: more + 1,
                        });
                    }
                }
            }
        };
        if !key.algorithms.contains(&alg) {
            return Err(AuthnError::AlgorithmNotAllowed {
                kid: key.kid.as_deref().map(str::to_string),
                alg: format!("{alg:?}"),
            });
        }
        Ok(key)
    }
}

fn signature_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Tells an unacceptable algorithm (`none`, unknown) from a broken header.
fn header_fault(token: &str) -> AuthnError {
    let alg = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
        .and_then(|v| v.get("alg").and_then(Value::as_str).map(str::to_string));
    match alg {
        Some(alg) => AuthnError::UnsupportedAlgorithm(alg),
        None => AuthnError::NotAJwt,
    }
}

/// The aws-lc verification algorithm of a JWS signature algorithm (`None`:
/// HMAC, left to `jsonwebtoken`).
fn verification_algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    use aws_lc_rs::signature as s;
    Some(match alg {
        Algorithm::RS256 => &s::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &s::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &s::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &s::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &s::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &s::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => &s::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &s::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &s::ED25519,
        // HMAC, or one added later.
        _ => return None,
    })
}

/// Parses `key` once for each of its (non-HMAC) algorithms. The bytes are
/// those `jsonwebtoken` hands aws-lc: an EC point or Ed25519 key as they
/// are, an RSA key's modulus and exponent as a DER `RSAPublicKey`.
fn parse_public_key(
    key: &DecodingKey,
    algorithms: &[Algorithm],
) -> Result<Vec<(Algorithm, ParsedPublicKey)>, String> {
    let bytes = match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => bytes.clone(),
        DecodingKeyKind::RsaModulusExponent { n, e } => rsa_public_key_der(n, e),
    };
    let mut parsed = Vec::new();
    for &alg in algorithms {
        if let Some(verification) = verification_algorithm(alg) {
            let p = ParsedPublicKey::new(verification, &bytes)
                .map_err(|e| format!("{alg:?} key rejected: {e}"))?;
            parsed.push((alg, p));
        }
    }
    Ok(parsed)
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`
/// (RFC 8017 A.1.1) in DER, from the big-endian unsigned `n` and `e`.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn length(out: &mut Vec<u8>, len: usize) {
        match len {
            0..0x80 => out.push(len as u8),
            0x80..0x100 => out.extend_from_slice(&[0x81, len as u8]),
            _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        }
    }
    fn integer(out: &mut Vec<u8>, magnitude: &[u8]) {
        let start = magnitude
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(magnitude.len());
        let digits = &magnitude[start..];
        // A leading 0 keeps a set top bit from reading as a sign; zero is
        // one 0 byte.
        let pad = digits.first().is_none_or(|&b| b & 0x80 != 0);
        out.push(0x02);
        length(out, digits.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(digits);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut der = Vec::with_capacity(body.len() + 4);
    der.push(0x30);
    length(&mut der, body.len());
    der.extend_from_slice(&body);
    der
}

fn verify_fault(e: &jsonwebtoken::errors::Error) -> AuthnError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidToken | K::Base64(_) => AuthnError::NotAJwt,
        // Anything else is a verification failure of some kind.
        _ => AuthnError::BadSignature,
    }
}

/// A JWT NumericDate: seconds since the epoch, integer or fraction.
fn numeric_date(v: &Value, claim: &str) -> Result<Timestamp, AuthnError> {
    let secs = v
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| AuthnError::MalformedClaims(format!("{claim} is not a NumericDate")))?;
    // Saturating float-to-int conversion: absurd dates clamp, never wrap.
    Ok(Timestamp::from_millis((secs * 1000.0) as u64))
}

/// Roles at a dotted path: an array of strings or a space-separated string.
fn roles_at(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    let mut parts = path.split('.');
    let mut v = parts.next().and_then(|p| claims.get(p));
    for p in parts {
        v = v.and_then(|x| x.get(p));
    }
    match v {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn parse_acl_claim(v: &Value) -> Result<ClaimAcl, String> {
    let obj = v.as_object().ok_or("not an object")?;
    let mut acl = ClaimAcl::default();
    for (key, list) in obj {
        let target = match key.as_str() {
            "publish" => &mut acl.publish,
            "subscribe" => &mut acl.subscribe,
            "all" => &mut acl.all,
            other => return Err(format!("unknown list {other:?}")),
        };
        let items = list
            .as_array()
            .ok_or_else(|| format!("{key} is not an array"))?;
        for item in items {
            let s = item
                .as_str()
                .ok_or_else(|| format!("{key} holds a non-string"))?;
            target.push(FilterTemplate::new(s).map_err(|e| e.to_string())?);
        }
    }
    Ok(acl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{KeyPair, RsaKeyPair};

    #[test]
    fn an_rsa_modulus_and_exponent_give_the_der_aws_lc_writes() {
        let pem = pem::parse(include_bytes!("../../tests/fixtures/keys/rsa-a.pem")).unwrap();
        let pair = RsaKeyPair::from_pkcs8(pem.contents())
            .or_else(|_| RsaKeyPair::from_der(pem.contents()))
            .unwrap();
        let components = pair.public_key();
        let expected = components.as_ref();
        // n and e as a JWK carries them: big-endian, no sign byte.
        let public = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(components);
        assert_eq!(rsa_public_key_der(&public.n, &public.e), expected);
        // A leading zero in the input is not a digit.
        let mut padded = vec![0];
        padded.extend_from_slice(&public.n);
        assert_eq!(rsa_public_key_der(&padded, &public.e), expected);
    }
}
