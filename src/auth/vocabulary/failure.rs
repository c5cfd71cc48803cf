//! Why authentication failed, in words the audit log and the CONNACK both
//! understand — whichever authenticator answered (the built-in JWT one, a
//! password check, a host's identity service).

use std::fmt;

use super::identity::TokenDigest;
use crate::codec::ConnectReasonCode;
use crate::time::Timestamp;

/// Why a client could not be authenticated. Each names the reason a human
/// reads in the audit log; [`AuthnFailure::reason_code`] gives the CONNACK code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum AuthnError {
    /// No credentials, and anonymous clients are not allowed.
    #[error("no credentials and anonymous clients are not allowed")]
    AnonymousNotAllowed,
    /// An empty password or empty authentication data.
    #[error("empty credentials")]
    EmptyCredentials,
    /// An Authentication Method this server does not support.
    #[error("unsupported authentication method {0:?}")]
    BadAuthenticationMethod(String),
    /// The token is longer than the configured maximum.
    #[error("token of {len} bytes exceeds the maximum of {max}")]
    TokenTooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Not a compact JWS.
    #[error("not a JWT")]
    NotAJwt,
    /// An algorithm never accepted (`none`) or unknown.
    #[error("algorithm {0:?} is not accepted")]
    UnsupportedAlgorithm(String),
    /// No key of the set has this `kid` (unknown, or rotated out).
    #[error("no key with kid {0:?}")]
    UnknownKey(String),
    /// No `kid`, and no key can verify the algorithm.
    #[error("no kid, and no key verifies {0:?}")]
    NoKeyForAlgorithm(String),
    /// No `kid`, and several keys could verify the algorithm.
    #[error("no kid, and {count} keys verify {alg:?}")]
    AmbiguousKey {
        /// The token's algorithm.
        alg: String,
        /// How many keys could verify it.
        count: usize,
    },
    /// The selected key does not verify the token's algorithm.
    #[error("key {kid:?} does not verify {alg:?}")]
    AlgorithmNotAllowed {
        /// The key.
        kid: Option<String>,
        /// The token's algorithm.
        alg: String,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The claims are not a JSON object, or a claim has the wrong type.
    #[error("malformed claims: {0}")]
    MalformedClaims(String),
    /// No `exp`, and one is required.
    #[error("token has no exp")]
    MissingExpiry,
    /// `exp` (plus leeway) has passed.
    #[error("token expired at {exp}")]
    Expired {
        /// The token's `exp`.
        exp: Timestamp,
    },
    /// `nbf` (minus leeway) has not come yet.
    #[error("token not valid before {nbf}")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: Timestamp,
    },
    /// `iss` is missing or not accepted.
    #[error("issuer not accepted")]
    WrongIssuer,
    /// `aud` is missing or names no accepted audience.
    #[error("audience not accepted")]
    WrongAudience,
    /// The principal claim is missing, empty or not a string.
    #[error("no principal in claim {0:?}")]
    MissingPrincipal(String),
    /// The principal differs from the MQTT user name.
    #[error("principal {principal:?} is not user name {username:?}")]
    PrincipalMismatch {
        /// The MQTT user name.
        username: String,
        /// The token's principal.
        principal: String,
    },
    /// The `acl` claim is not of the expected shape.
    #[error("invalid acl claim: {0}")]
    InvalidAclClaim(String),
    /// The user name and password do not match (an authenticator that
    /// checks passwords rather than tokens).
    #[error("wrong user name or password")]
    WrongPassword,
    /// The host's authenticator refused the client for a reason of its own
    /// (an account disabled, a device not enrolled…).
    #[error("refused: {0}")]
    Refused(String),
    /// Too many authentication attempts from the client's address; nothing
    /// was verified.
    #[error("too many authentication attempts from this address")]
    RateLimited,
}

/// An authentication failure with what was learnt of the token on the way,
/// for the audit record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuthnFailure {
    /// Why.
    pub error: AuthnError,
    /// The token's `kid`, if it got that far.
    pub key_id: Option<String>,
    /// Digest of the token, if there was one.
    pub token: Option<TokenDigest>,
}

impl AuthnFailure {
    /// The CONNACK reason code for this failure (3.1.1 maps it to the nearest
    /// return code): 0x8C for an unsupported method, 0x87 for a refused
    /// anonymous client or a host's refusal, 0x9F when rate limited, 0x86
    /// Bad User Name or Password for a wrong password and every token fault.
    pub fn reason_code(&self) -> ConnectReasonCode {
        match self.error {
            AuthnError::BadAuthenticationMethod(_) => ConnectReasonCode::BadAuthenticationMethod,
            AuthnError::AnonymousNotAllowed | AuthnError::Refused(_) => {
                ConnectReasonCode::NotAuthorized
            }
            AuthnError::RateLimited => ConnectReasonCode::ConnectionRateExceeded,
            _ => ConnectReasonCode::BadUserNameOrPassword,
        }
    }
}

impl fmt::Display for AuthnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl From<AuthnError> for AuthnFailure {
    fn from(error: AuthnError) -> Self {
        Self {
            error,
            key_id: None,
            token: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_authenticator_can_say_why_with_the_right_connack_code() {
        let code = |e: AuthnError| AuthnFailure::from(e).reason_code();
        assert_eq!(
            code(AuthnError::WrongPassword),
            ConnectReasonCode::BadUserNameOrPassword
        );
        assert_eq!(
            code(AuthnError::Refused("device not enrolled".into())),
            ConnectReasonCode::NotAuthorized
        );
        assert_eq!(
            AuthnError::Refused("device not enrolled".into()).to_string(),
            "refused: device not enrolled"
        );
        assert_eq!(
            code(AuthnError::BadSignature),
            ConnectReasonCode::BadUserNameOrPassword
        );
    }
}
