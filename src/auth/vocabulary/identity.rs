//! Who a session is: what a successful authentication produces and what every
//! later decision — the will's included — is made against.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::template::FilterTemplate;
use crate::time::Timestamp;

/// How an identity was established.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AuthMethod {
    /// A JWT in the CONNECT password.
    Password,
    /// MQTT 5.0 enhanced authentication with this Authentication Method
    /// (a thin pointer: the enum is two words, not three; see
    /// [`AuthMethod::enhanced`]).
    Enhanced(Arc<String>),
    /// No credentials; allowed only where the host allows anonymous clients.
    Anonymous,
    /// A TLS client certificate verified against the configured CA.
    Certificate,
}

impl AuthMethod {
    /// Enhanced authentication with the method `name`.
    pub fn enhanced(name: &str) -> Self {
        Self::Enhanced(Arc::new(name.to_owned()))
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password => f.write_str("password"),
            Self::Enhanced(m) => write!(f, "enhanced:{m}"),
            Self::Anonymous => f.write_str("anonymous"),
            Self::Certificate => f.write_str("certificate"),
        }
    }
}

/// A short digest of a credential, so audit records can correlate uses of
/// the same token without ever holding it: the first 8 bytes of its SHA-256.
///
/// Never zero (8 zero bytes, one token in 2^64, read as `…01`), so that an
/// `Option<TokenDigest>` is a word: every identity holds one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest(std::num::NonZeroU64);

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &[u8]) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token);
        let mut out = [0; 8];
        out.copy_from_slice(&d.as_ref()[..8]);
        Self::from_bytes(out)
    }

    /// A digest from its 8 bytes.
    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(
            std::num::NonZeroU64::new(u64::from_be_bytes(bytes))
                .unwrap_or(std::num::NonZeroU64::MIN),
        )
    }

    /// Its 8 bytes.
    pub fn bytes(self) -> [u8; 8] {
        self.0.get().to_be_bytes()
    }
}

/// Its 8 bytes, as they always were.
impl serde::Serialize for TokenDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.bytes().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for TokenDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u8; 8]>::deserialize(d).map(Self::from_bytes)
    }
}

impl fmt::Display for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({self})")
    }
}

/// The identity of a session, as of its last successful (re)authentication.
///
/// It holds no token and no key: nothing after authentication needs them,
/// so a key rotated out of the key set never invalidates it.
///
/// Every idle session keeps one, so most of it is shared, not owned: the
/// client id with the session and the registry, the grants (roles, claim
/// ACL, key id) with the key that verified a token that carried no roles
/// nor ACL. The principal is its own: a short name costs its bytes rounded
/// to 8, where a shared one cost 16 more and the class above.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// Who: the token's principal claim, or the anonymous name.
    pub principal: Box<str>,
    /// The MQTT client identifier of the connection it was issued to (a
    /// session sets it to its connection's when the host answers).
    pub client_id: Arc<str>,
    /// Its roles, claim ACL and key id ([`Identity::roles`],
    /// [`Identity::acl`], [`Identity::key_id`]).
    #[serde(flatten)]
    pub grants: Arc<Grants>,
    /// The credential's `exp`, if it had one.
    pub expires_at: Option<Timestamp>,
    /// How it was established.
    pub method: AuthMethod,
    /// When it was established.
    pub authenticated_at: Timestamp,
    /// Digest of the credential, for audit.
    pub token_digest: Option<TokenDigest>,
}

/// What a credential grants beyond the name it carries. One allocation,
/// shared: every identity from a token without roles nor ACL shares its
/// key's, every anonymous one [`Grants::none`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grants {
    /// Roles from the configured claim, in token order.
    pub roles: Arc<[Arc<str>]>,
    /// Topic filters the token itself grants (its `acl` claim); `None` when
    /// it grants none.
    pub acl: Option<Arc<ClaimAcl>>,
    /// The `kid` of the key that verified the token.
    pub key_id: Option<Arc<str>>,
}

impl Grants {
    /// No roles, no ACL, no key: one allocation for every identity that
    /// has none.
    pub fn none() -> Arc<Grants> {
        static NONE: std::sync::LazyLock<Arc<Grants>> =
            std::sync::LazyLock::new(|| Arc::new(Grants::default()));
        NONE.clone()
    }

    /// Those of a token verified by the key `key_id`, with these roles and
    /// ACL.
    pub fn new(
        roles: Arc<[Arc<str>]>,
        acl: Option<Arc<ClaimAcl>>,
        key_id: Option<Arc<str>>,
    ) -> Arc<Grants> {
        Arc::new(Grants { roles, acl, key_id })
    }
}

/// Principal name given to anonymous clients; ACL rules can name it.
pub const ANONYMOUS: &str = "anonymous";

impl Identity {
    /// The identity of a client that presented no credentials.
    pub fn anonymous(client_id: impl Into<Arc<str>>, now: Timestamp) -> Self {
        Self {
            principal: ANONYMOUS.into(),
            client_id: client_id.into(),
            grants: Grants::none(),
            expires_at: None,
            method: AuthMethod::Anonymous,
            authenticated_at: now,
            token_digest: None,
        }
    }

    /// Whether the client presented no credentials.
    pub fn is_anonymous(&self) -> bool {
        self.method == AuthMethod::Anonymous
    }

    /// Roles from the configured claim, in token order.
    pub fn roles(&self) -> &[Arc<str>] {
        &self.grants.roles
    }

    /// Topic filters the token itself grants (its `acl` claim).
    pub fn acl(&self) -> Option<&Arc<ClaimAcl>> {
        self.grants.acl.as_ref()
    }

    /// The `kid` of the key that verified the token.
    pub fn key_id(&self) -> Option<&Arc<str>> {
        self.grants.key_id.as_ref()
    }

    /// Whether the identity carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles().iter().any(|r| &**r == role)
    }

    /// Whether the credential had expired at `now` (without leeway).
    pub fn expired_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|exp| now >= exp)
    }
}

/// What a client presented to prove who it is: the content of an
/// authentication request. Its `Debug` never shows the secret parts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The MQTT client identifier (after any assignment by the server);
    /// shared with the session, so an identity made from it can share it.
    pub client_id: Arc<str>,
    /// CONNECT User Name.
    pub username: Option<String>,
    /// CONNECT Password.
    pub password: Option<Bytes>,
    /// MQTT 5.0 Authentication Method.
    pub auth_method: Option<String>,
    /// MQTT 5.0 Authentication Data.
    pub auth_data: Option<Bytes>,
    /// The peer's address, as the host describes it.
    pub peer: Option<String>,
    /// The TLS client certificate the transport verified, if any.
    pub certificate: Option<ClientCertificate>,
}

/// What a verified TLS client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientCertificate {
    /// The subject's Common Name.
    pub common_name: Option<String>,
    /// The DNS names of its Subject Alternative Name.
    pub dns_names: Vec<String>,
    /// The end of its validity (the identity's expiry).
    pub not_after: crate::time::Timestamp,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |b: &Option<Bytes>| b.as_ref().map(|b| format!("<{} bytes>", b.len()));
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("auth_method", &self.auth_method)
            .field("auth_data", &redacted(&self.auth_data))
            .field("peer", &self.peer)
            .field("certificate", &self.certificate)
            .finish()
    }
}

/// Topic filters a token grants through its own `acl` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClaimAcl {
    /// Filters the token may publish (and send wills) to.
    pub publish: Vec<FilterTemplate>,
    /// Filters the token may subscribe within.
    pub subscribe: Vec<FilterTemplate>,
    /// Filters for every operation.
    pub all: Vec<FilterTemplate>,
}

impl ClaimAcl {
    /// Whether the claim grants nothing.
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty() && self.all.is_empty()
    }
}

/// Which list of a token's `acl` claim granted an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ClaimList {
    /// The `publish` list.
    Publish,
    /// The `subscribe` list.
    Subscribe,
    /// The `all` list.
    All,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = Credentials {
            client_id: "c".into(),
            password: Some(Bytes::from_static(b"eyJhbGciOi.secret.sig")),
            auth_data: Some(Bytes::from_static(b"token")),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("token"),
            "{shown}"
        );
        assert!(shown.contains("<21 bytes>"));
    }

    #[test]
    fn digest_is_stable_and_short() {
        let d = TokenDigest::of(b"abc");
        // SHA-256("abc") starts ba7816bf8f01cfea.
        assert_eq!(d.to_string(), "ba7816bf8f01cfea");
        assert_eq!(TokenDigest::from_bytes(d.bytes()), d);
        assert_eq!(
            TokenDigest::from_bytes([0; 8]).bytes(),
            [0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            "[186,120,22,191,143,1,207,234]"
        );
    }

    #[test]
    fn an_identity_fits_a_96_byte_allocation() {
        // Every idle session holds one behind an `Arc` (two counters, 16
        // bytes): past 80 bytes it takes the allocator's next class, 112.
        assert!(std::mem::size_of::<Identity>() <= 80);
    }
}
