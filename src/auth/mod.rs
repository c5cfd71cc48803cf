//! The policy side: pure components that answer the authentication and
//! authorization requests the core emits. No IO and no clock: time is a
//! parameter.
//!
//! - [`JwtAuthenticator`] verifies JWTs against a [`KeySet`] that can be
//!   replaced at any time and produces an [`Identity`].
//! - [`Acl`] decides publish, subscribe and will requests against an
//!   identity; every [`Decision`] says what decided it.
//! - [`AuditRecord`] is what the host logs about each of them.
//!
//! All of them speak the [`vocabulary`]: identities, credentials,
//! authentication failures, authorization queries and decisions. It depends
//! on none of them, so a policy of the host's own implements the same
//! words.

mod acl;
mod audit;
mod jwt;
pub mod vocabulary;

pub use acl::{Acl, Ops, Rule, Subject};
pub use audit::{AuditRecord, DropReason, WillOutcome};
pub use jwt::{JwtAuthenticator, JwtConfig, KeySet, KeySetError};
pub use vocabulary::{
    ANONYMOUS, AuthMethod, AuthnError, AuthnFailure, AuthzQuery, AuthzRequest, ClaimAcl, ClaimList,
    ClientCertificate, Credentials, DecidedBy, Decision, Effect, Exclusions, FilterTemplate,
    Grants, Identity, InvalidTemplate, Operation, TokenDigest, WillTrigger,
};
