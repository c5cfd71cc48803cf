//! A custom policy that answers after an await — as a call to a policy
//! service would — served by the smol driver.
//!
//! ```sh
//! cargo run --example async_policy            # listens on 127.0.0.1:1884
//! mosquitto_pub -p 1884 -u sensor-1 -P demo -t sensors/sensor-1/t -m 21.5
//! ```
//!
//! Any user name is accepted with the password `demo`; a client may publish
//! and subscribe under `sensors/<its user name>/#`, and subscribe to
//! `sensors/#` when its user name starts with `dashboard`.

use std::sync::Arc;
use std::time::Duration;

use testament::auth::{
    AuthMethod, AuthnError, AuthzQuery, ClaimAcl, Credentials, DecidedBy, Decision, Effect,
    Identity, Operation,
};
use testament::broker::{Broker, BrokerConfig};
use testament::driver::{self, Answer, DriverConfig, Policy};
use testament::session::AuthnOutcome;
use testament::time::Timestamp;

struct SlowPolicy;

impl Policy for SlowPolicy {
    fn authenticate(&self, credentials: &Credentials, now: Timestamp) -> Answer<AuthnOutcome> {
        let credentials = credentials.clone();
        Box::pin(async move {
            // A round trip to an identity service.
            smol::Timer::after(Duration::from_millis(20)).await;
            match (&credentials.username, &credentials.password) {
                (Some(user), Some(p)) if &p[..] == b"demo" => AuthnOutcome::Success(Identity {
                    principal: user.clone(),
                    client_id: credentials.client_id.clone(),
                    roles: vec![],
                    acl: ClaimAcl::default(),
                    expires_at: None,
                    key_id: None,
                    method: AuthMethod::Password,
                    authenticated_at: now,
                    token_digest: None,
                }),
                _ => AuthnOutcome::Failure(AuthnError::EmptyCredentials.into()),
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
            Decision {
                effect: if allowed { Effect::Allow } else { Effect::Deny },
                decided_by: DecidedBy::NoMatch,
            }
        })
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let listener = std::net::TcpListener::bind("127.0.0.1:1884")?;
    listener.set_nonblocking(true)?;
    let listener = smol::net::TcpListener::try_from(listener)?;
    // Keep the sender: a real program sends `Control::Shutdown` on it for a
    // graceful stop (here Ctrl-C simply ends the process).
    let (_control, stop) = smol::channel::unbounded();
    smol::block_on(driver::smol::serve(
        vec![driver::smol::Listener::plain(listener)],
        Broker::new(BrokerConfig::default()),
        Arc::new(SlowPolicy),
        DriverConfig::default(),
        None,
        stop,
    ))
}
