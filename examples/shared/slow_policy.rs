//! The policy of `examples/async_policy.rs` (and of
//! `tests/e2e_async_policy.rs`): any user name with the password `demo`; a
//! client publishes and subscribes under `sensors/<its user name>/#`, and
//! subscribes to `sensors/#` when its user name starts with `dashboard`.
//! Every answer comes after an await (a timer standing for a round trip to
//! an identity or policy service).

use std::time::Duration;

use testament::auth::{
    AuthMethod, AuthnError, AuthzQuery, Credentials, Decision, Effect, Identity, Operation,
};
use testament::driver::{Answer, Policy};
use testament::session::AuthnOutcome;
use testament::time::Timestamp;

pub struct SlowPolicy;

impl Policy for SlowPolicy {
    fn authenticate(&self, credentials: &Credentials, now: Timestamp) -> Answer<AuthnOutcome> {
        let credentials = credentials.clone();
        Box::pin(async move {
            // A round trip to an identity service.
            smol::Timer::after(Duration::from_millis(20)).await;
            match (&credentials.username, &credentials.password) {
                (Some(user), Some(p)) if &p[..] == b"demo" => AuthnOutcome::Success(Identity {
                    principal: user.as_str().into(),
                    client_id: credentials.client_id.clone(),
                    grants: testament::auth::Grants::none(),
                    expires_at: None,
                    method: AuthMethod::Password,
                    authenticated_at: now,
                    token_digest: None,
                }),
                _ => AuthnOutcome::Failure(AuthnError::WrongPassword.into()),
            }
        })
    }

    fn authorize(&self, query: &AuthzQuery, _now: Timestamp) -> Answer<Decision> {
        let query = query.clone();
        Box::pin(async move {
            // A round trip to a policy service.
            smol::Timer::after(Duration::from_millis(5)).await;
            let user = &query.identity.principal;
            let own = format!("sensors/{user}/");
            let allowed = query.topic.starts_with(&own)
                || (query.op == Operation::Subscribe
                    && user.starts_with("dashboard")
                    && query.topic.starts_with("sensors/"));
            // The audit log says `by="policy sensors"`.
            let effect = if allowed { Effect::Allow } else { Effect::Deny };
            Decision::by_policy(effect, "sensors")
        })
    }
}
