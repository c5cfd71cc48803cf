//! The policy side: pure components that answer the authentication and
//! authorization requests the core emits. No IO and no clock: time is a
//! parameter.
//!
//! - [`JwtAuthenticator`] verifies JWTs against a [`KeySet`] that can be
//!   replaced at any time and produces an [`Identity`].
//! - [`Acl`] decides publish, subscribe and will requests against an
//!   identity; every [`Decision`] says what decided it.
//! - [`AuditRecord`] is what the host logs about each of them.

mod acl;
mod audit;
mod identity;
mod jwt;

pub use acl::{
    Acl, AuthzQuery, AuthzRequest, ClaimAcl, ClaimList, DecidedBy, Decision, Effect,
    FilterTemplate, InvalidTemplate, Operation, Ops, Rule, Subject,
};
pub use audit::{AuditRecord, DropReason, WillOutcome, WillTrigger};
pub use identity::{
    ANONYMOUS, AuthMethod, ClientCertificate, Credentials, Grants, Identity, TokenDigest,
};
pub use jwt::{AuthnError, AuthnFailure, JwtAuthenticator, JwtConfig, KeySet, KeySetError};
