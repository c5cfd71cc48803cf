//! Who answers the hub's questions: the built-in JWT authenticator and ACL,
//! or any policy of the embedding program, answering now or later.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use crate::auth::{Acl, AuthzQuery, Credentials, Decision, JwtAuthenticator, KeySet};
use crate::session::{AuthnOutcome, Authorizer};
use crate::time::Timestamp;

/// An answer that may take time (an HTTP call to a policy service…).
pub type Answer<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Answers authentication and authorization requests. Drivers call it for
/// every [`crate::broker::Action::Authenticate`] and
/// [`crate::broker::Action::Authorize`] and feed the answer back to the hub
/// when the future completes; a future that is ready at once is answered
/// inline.
pub trait Policy: Send + Sync {
    /// Authenticates credentials at `now`, the wall-clock date (a token's
    /// `exp` and `nbf` are dates).
    fn authenticate(&self, credentials: &Credentials, now: Timestamp) -> Answer<AuthnOutcome>;

    /// Decides a request at `now`, the wall-clock date.
    fn authorize(&self, query: &AuthzQuery, now: Timestamp) -> Answer<Decision>;

    /// A synchronous authorizer the hub consults on the spot, so that
    /// publishes need no round trip; `None` sends every request through
    /// [`Policy::authorize`]. Asked again after every [`Policy::reload`].
    fn authorizer(&self) -> Option<Arc<dyn Authorizer>> {
        None
    }

    /// Re-reads what the policy is made of (key set, rules); errors are the
    /// policy's to log — the old state stays in force.
    fn reload(&self) {}

    /// The ACL behind [`Policy::authorizer`], for a recording to replay.
    fn acl(&self) -> Option<Arc<Acl>> {
        None
    }
}

/// Reads a new key set and ACL, or says (by `None`) to keep the old ones.
type Reloader = Box<dyn Fn() -> Option<(Option<KeySet>, Acl)> + Send + Sync>;
/// Told the `kid` of a token the key set has no key for.
type UnknownKeyHook = Box<dyn Fn(&str) + Send + Sync>;

/// The built-in policy: a JWT authenticator over a key set and an ACL, both
/// replaceable at runtime (rotation, rule changes) without touching
/// sessions already authenticated.
pub struct JwtAclPolicy {
    authenticator: RwLock<JwtAuthenticator>,
    acl: RwLock<Arc<Acl>>,
    reloader: Option<Reloader>,
    certificates: Option<CertificatePrincipal>,
    /// Told the `kid` of a token no key of the set has (a key set fetched
    /// from an endpoint then asks for a fresh copy).
    unknown_key: Option<UnknownKeyHook>,
}

/// Which part of a verified client certificate names the principal when a
/// client authenticates with its certificate (mTLS) instead of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificatePrincipal {
    /// The subject's Common Name.
    CommonName,
    /// The first DNS name of the Subject Alternative Name.
    DnsName,
}

impl std::fmt::Debug for JwtAclPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAclPolicy").finish_non_exhaustive()
    }
}

impl JwtAclPolicy {
    /// A policy over this authenticator and ACL.
    pub fn new(authenticator: JwtAuthenticator, acl: Acl) -> Self {
        Self {
            authenticator: RwLock::new(authenticator),
            acl: RwLock::new(Arc::new(acl)),
            reloader: None,
            certificates: None,
            unknown_key: None,
        }
    }

    /// Lets clients that present no token but a verified client certificate
    /// in, as the principal the certificate names. Their identity expires
    /// with the certificate; the ACL and will rules are those of any
    /// identity.
    #[must_use]
    pub fn with_certificate_principal(mut self, which: CertificatePrincipal) -> Self {
        self.certificates = Some(which);
        self
    }

    fn certificate_identity(&self, c: &Credentials, now: Timestamp) -> Option<AuthnOutcome> {
        let which = self.certificates?;
        if c.password.is_some() || c.auth_method.is_some() {
            return None;
        }
        let cert = c.certificate.as_ref()?;
        let principal = match which {
            CertificatePrincipal::CommonName => cert.common_name.clone(),
            CertificatePrincipal::DnsName => cert.dns_names.first().cloned(),
        };
        let Some(principal) = principal else {
            return Some(AuthnOutcome::Failure(
                crate::auth::AuthnError::MissingPrincipal("certificate".into()).into(),
            ));
        };
        if c.username.as_ref().is_some_and(|u| *u != principal) {
            return Some(AuthnOutcome::Failure(
                crate::auth::AuthnError::PrincipalMismatch {
                    username: c.username.clone().unwrap_or_default(),
                    principal,
                }
                .into(),
            ));
        }
        Some(AuthnOutcome::Success(crate::auth::Identity {
            principal: principal.into(),
            client_id: c.client_id.clone(),
            grants: crate::auth::Grants::none(),
            expires_at: Some(cert.not_after),
            method: crate::auth::AuthMethod::Certificate,
            authenticated_at: now,
            token_digest: None,
        }))
    }

    /// Sets what [`Policy::reload`] calls: it returns the new key set
    /// (`None`: the key set comes from elsewhere, as a fetched one does)
    /// and ACL, or `None` (after logging why) to keep the current ones.
    #[must_use]
    pub fn with_reloader(
        mut self,
        reload: impl Fn() -> Option<(Option<KeySet>, Acl)> + Send + Sync + 'static,
    ) -> Self {
        self.reloader = Some(Box::new(reload));
        self
    }

    /// Calls `hook` with the `kid` of every token whose key the set does
    /// not have ([`crate::auth::AuthnError::UnknownKey`]); the token is
    /// refused meanwhile.
    pub fn with_unknown_key_hook(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.unknown_key = Some(Box::new(hook));
        self
    }

    /// Replaces the key set (rotation).
    pub fn replace_keys(&self, keys: KeySet) {
        if let Ok(mut a) = self.authenticator.write() {
            a.replace_keys(keys);
        }
    }

    /// Replaces the ACL. The hub takes it at the next
    /// [`super::Control::Reload`], which also judges every existing
    /// subscription against it.
    pub fn replace_acl(&self, acl: Acl) {
        if let Ok(mut a) = self.acl.write() {
            *a = Arc::new(acl);
        }
    }

    fn current_acl(&self) -> Arc<Acl> {
        self.acl
            .read()
            .map(|a| a.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

impl Policy for JwtAclPolicy {
    fn authenticate(&self, credentials: &Credentials, now: Timestamp) -> Answer<AuthnOutcome> {
        if let Some(outcome) = self.certificate_identity(credentials, now) {
            return Box::pin(std::future::ready(outcome));
        }
        let outcome = match self.authenticator.read() {
            Ok(a) => match a.authenticate(credentials, now) {
                Ok(identity) => AuthnOutcome::Success(identity),
                Err(failure) => {
                    if let (crate::auth::AuthnError::UnknownKey(kid), Some(hook)) =
                        (&failure.error, &self.unknown_key)
                    {
                        hook(kid);
                    }
                    AuthnOutcome::Failure(failure)
                }
            },
            Err(_) => AuthnOutcome::Failure(crate::auth::AuthnError::EmptyCredentials.into()),
        };
        Box::pin(std::future::ready(outcome))
    }

    fn authorize(&self, query: &AuthzQuery, _now: Timestamp) -> Answer<Decision> {
        Box::pin(std::future::ready(
            self.current_acl().authorize(&query.as_request()),
        ))
    }

    fn authorizer(&self) -> Option<Arc<dyn Authorizer>> {
        Some(self.current_acl())
    }

    fn reload(&self) {
        if let Some((keys, acl)) = self.reloader.as_ref().and_then(|r| r()) {
            if let Some(keys) = keys {
                self.replace_keys(keys);
            }
            self.replace_acl(acl);
        }
    }

    fn acl(&self) -> Option<Arc<Acl>> {
        Some(self.current_acl())
    }
}
