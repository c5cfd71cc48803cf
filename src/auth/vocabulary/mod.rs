//! The words the core and every policy speak in, and nothing that
//! implements them: who a client is ([`Identity`], [`Credentials`]), why it
//! could not prove it ([`AuthnError`]), what it asks ([`AuthzQuery`],
//! [`Operation`]) and what is answered ([`Decision`], [`DecidedBy`]). The
//! JWT authenticator, the ACL and the audit records are built on these; these
//! depend on none of them.

mod decision;
mod failure;
mod identity;
mod template;

pub use decision::{
    AuthzQuery, AuthzRequest, DecidedBy, Decision, Effect, Exclusions, Operation, WillTrigger,
};
pub use failure::{AuthnError, AuthnFailure};
pub use identity::{
    ANONYMOUS, AuthMethod, ClaimAcl, ClaimList, ClientCertificate, Credentials, Grants, Identity,
    TokenDigest,
};
pub(super) use template::Subst;
pub use template::{FilterTemplate, InvalidTemplate};
