//! Development keys and tokens: generate a signing key with its JWKS entry,
//! mint a token. What `testament keys generate` and `testament token` do.

use std::path::Path;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::time::Timestamp;

/// A key or token problem, for the command line.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The algorithm is not one we generate or sign with.
    #[error("unsupported algorithm `{0}` (RS256, ES256, EdDSA)")]
    Algorithm(String),
    /// The key could not be generated or read.
    #[error("key: {0}")]
    Key(String),
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// Which file.
        path: String,
        /// What happened.
        error: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |error| KeyError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// The algorithm named on the command line.
///
/// # Errors
/// When it is not RS256, ES256 or EdDSA.
pub fn algorithm(name: &str) -> Result<Algorithm, KeyError> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(KeyError::Algorithm(other.to_owned())),
    }
}

/// A new private key as PKCS#8 PEM.
///
/// # Errors
/// When the crypto library fails.
pub fn generate_pem(alg: Algorithm) -> Result<String, KeyError> {
    let fail = |e: aws_lc_rs::error::Unspecified| KeyError::Key(e.to_string());
    let der: Vec<u8> = match alg {
        Algorithm::RS256 => {
            let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(fail)?;
            key.as_der().map_err(fail)?.as_ref().to_vec()
        }
        Algorithm::ES256 => aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map_err(fail)?
        .as_ref()
        .to_vec(),
        Algorithm::EdDSA => aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map_err(fail)?
        .as_ref()
        .to_vec(),
        other => return Err(KeyError::Algorithm(format!("{other:?}"))),
    };
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
}

fn encoding_key(pem: &str, alg: Algorithm) -> Result<EncodingKey, KeyError> {
    let bytes = pem.as_bytes();
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(bytes),
        Algorithm::ES256 => EncodingKey::from_ec_pem(bytes),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(bytes),
        other => return Err(KeyError::Algorithm(format!("{other:?}"))),
    }
    .map_err(|e| KeyError::Key(e.to_string()))
}

/// Which algorithm a private key PEM signs with.
///
/// # Errors
/// When it is none of RSA, EC P-256, Ed25519.
pub fn detect(pem: &str) -> Result<Algorithm, KeyError> {
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        if let Ok(key) = encoding_key(pem, alg)
            && Jwk::from_encoding_key(&key, alg).is_ok()
        {
            return Ok(alg);
        }
    }
    Err(KeyError::Key(
        "not an RSA, EC P-256 or Ed25519 private key".into(),
    ))
}

/// The public JWK of a private key, with its `kid`.
///
/// # Errors
/// When the key does not fit the algorithm.
pub fn public_jwk(pem: &str, alg: Algorithm, kid: &str) -> Result<Value, KeyError> {
    let key = encoding_key(pem, alg)?;
    let jwk = Jwk::from_encoding_key(&key, alg).map_err(|e| KeyError::Key(e.to_string()))?;
    let mut v = serde_json::to_value(jwk).map_err(|e| KeyError::Key(e.to_string()))?;
    v["kid"] = json!(kid);
    v["use"] = json!("sig");
    Ok(v)
}

/// Writes `DIR/{kid}.pem` and adds the public key to `DIR/jwks.json`
/// (replacing a key with the same `kid`, keeping the others, so a rotation
/// can publish the new key before the old one goes).
///
/// # Errors
/// When a file cannot be read or written, or the key cannot be made.
pub fn generate(alg: Algorithm, kid: &str, dir: &Path) -> Result<(), KeyError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let pem = generate_pem(alg)?;
    let key_path = dir.join(format!("{kid}.pem"));
    std::fs::write(&key_path, &pem).map_err(io(&key_path))?;
    restrict(&key_path);
    let jwk = public_jwk(&pem, alg, kid)?;
    let jwks_path = dir.join("jwks.json");
    let mut keys = read_keys(&jwks_path)?;
    keys.retain(|k| k["kid"] != json!(kid));
    keys.push(jwk);
    write_keys(&jwks_path, keys)
}

/// Removes the key `kid` from a JWKS file (the end of a rotation).
///
/// # Errors
/// When the file cannot be read or written.
pub fn remove(kid: &str, jwks_path: &Path) -> Result<bool, KeyError> {
    let mut keys = read_keys(jwks_path)?;
    let before = keys.len();
    keys.retain(|k| k["kid"] != json!(kid));
    let removed = keys.len() != before;
    write_keys(jwks_path, keys)?;
    Ok(removed)
}

fn read_keys(path: &Path) -> Result<Vec<Value>, KeyError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| KeyError::Key(e.to_string()))?;
    Ok(v["keys"].as_array().cloned().unwrap_or_default())
}

fn write_keys(path: &Path, keys: Vec<Value>) -> Result<(), KeyError> {
    let text = serde_json::to_string_pretty(&json!({ "keys": keys }))
        .map_err(|e| KeyError::Key(e.to_string()))?;
    // Write then rename, so a reader never sees half a file.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict(_: &Path) {}

/// What a minted token says.
#[derive(Debug, Clone, Default)]
pub struct TokenClaims {
    /// `sub`.
    pub subject: String,
    /// `roles`.
    pub roles: Vec<String>,
    /// Lifetime from `now`.
    pub ttl: Duration,
    /// `iss`.
    pub issuer: Option<String>,
    /// `aud`.
    pub audience: Option<String>,
}

/// Signs a token with a private key PEM.
///
/// # Errors
/// When the key cannot sign.
pub fn mint(
    pem: &str,
    kid: &str,
    claims: &TokenClaims,
    now: Timestamp,
) -> Result<String, KeyError> {
    let alg = detect(pem)?;
    let key = encoding_key(pem, alg)?;
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let iat = now.as_secs();
    let mut body = json!({
        "sub": claims.subject,
        "iat": iat,
        "exp": iat + claims.ttl.as_secs(),
    });
    if !claims.roles.is_empty() {
        body["roles"] = json!(claims.roles);
    }
    if let Some(iss) = &claims.issuer {
        body["iss"] = json!(iss);
    }
    if let Some(aud) = &claims.audience {
        body["aud"] = json!(aud);
    }
    jsonwebtoken::encode(&header, &body, &key).map_err(|e| KeyError::Key(e.to_string()))
}

/// Parses `90s`, `30m`, `1h`, `2d` (or plain seconds).
///
/// # Errors
/// A sentence saying what is wrong.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and s/m/h/d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (s, m, h, d)")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Credentials, JwtAuthenticator, JwtConfig, KeySet};

    #[test]
    fn generated_keys_sign_tokens_the_authenticator_accepts() {
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let pem = generate_pem(alg).unwrap();
            assert_eq!(detect(&pem).unwrap(), alg);
            let jwks = json!({ "keys": [public_jwk(&pem, alg, "k1").unwrap()] }).to_string();
            let keys = KeySet::from_jwks(&jwks, false).unwrap();
            let now = Timestamp::from_secs(1_800_000_000);
            let claims = TokenClaims {
                subject: "alice".into(),
                roles: vec!["monitor".into()],
                ttl: Duration::from_secs(3600),
                ..TokenClaims::default()
            };
            let token = mint(&pem, "k1", &claims, now).unwrap();
            let auth = JwtAuthenticator::new(JwtConfig::default(), keys);
            let creds = Credentials {
                client_id: "c".into(),
                username: Some("alice".into()),
                password: Some(token.into_bytes().into()),
                ..Credentials::default()
            };
            let identity = auth.authenticate(&creds, now).unwrap();
            assert_eq!(&*identity.principal, "alice", "{alg:?}");
            assert_eq!(identity.roles(), ["monitor".into()]);
            assert_eq!(
                identity.expires_at,
                Some(Timestamp::from_secs(1_800_003_600))
            );
        }
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
