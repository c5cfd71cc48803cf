//! A policy that answers after an await, as a call to an identity or policy
//! service would, on every driver: the connection waits for its answers in
//! order, nothing is sent before its Allow, and a refusal still refuses.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::e2e::{Running, V3};
use rumqttc::QoS;
use testament::auth::{
    AuthMethod, AuthnError, AuthzQuery, ClaimAcl, Credentials, DecidedBy, Decision, Effect,
    Identity, Operation,
};
use testament::broker::BrokerConfig;
use testament::config::DriverKind;
use testament::driver::{Answer, Policy};
use testament::session::AuthnOutcome;
use testament::time::Timestamp;

/// Any user name with the password `demo`; a client publishes under
/// `sensors/<user>/`, a `dashboard…` user reads `sensors/#`. Every answer
/// comes from another thread's timer, after a delay.
struct SlowPolicy;

impl Policy for SlowPolicy {
    fn authenticate(&self, credentials: &Credentials, now: Timestamp) -> Answer<AuthnOutcome> {
        let credentials = credentials.clone();
        Box::pin(async move {
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
            smol::Timer::after(Duration::from_millis(5)).await;
            let user = &query.identity.principal;
            let allowed = query.topic.starts_with(&format!("sensors/{user}/"))
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

fn answers_after_an_await(kind: DriverKind) {
    let b = Running::start_with_policy(kind, BrokerConfig::default(), Arc::new(SlowPolicy));
    let refused = V3::connect(V3::options(b.addr, "intruder", "sensor-9", "wrong"));
    assert!(
        refused.is_err(),
        "a bad password is refused after the await"
    );

    let dash = V3::connect(V3::options(b.addr, "dash", "dashboard-1", "demo")).unwrap();
    dash.subscribe("sensors/#", QoS::AtLeastOnce);
    let sensor = V3::connect(V3::options(b.addr, "s1", "sensor-1", "demo")).unwrap();
    // Denied, then allowed: the allowed one is delivered, and alone.
    sensor
        .client
        .publish("sensors/other/t", QoS::AtLeastOnce, false, "no")
        .unwrap();
    for i in 0..20 {
        sensor
            .client
            .publish(
                "sensors/sensor-1/t",
                QoS::AtLeastOnce,
                false,
                format!("{i}"),
            )
            .unwrap();
    }
    for i in 0..20 {
        let m = dash
            .next_message(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{kind:?}: message {i} delivered"));
        assert_eq!(m.topic, "sensors/sensor-1/t");
        assert_eq!(
            &m.payload[..],
            format!("{i}").as_bytes(),
            "{kind:?}: in order"
        );
    }
    assert!(
        dash.next_message(Duration::from_millis(300)).is_none(),
        "{kind:?}: the denied publish is not delivered"
    );
    b.stop();
}

#[test]
fn mio_waits_for_answers_that_come_after_an_await() {
    answers_after_an_await(DriverKind::Mio);
}

#[test]
fn smol_waits_for_answers_that_come_after_an_await() {
    answers_after_an_await(DriverKind::Smol);
}

#[test]
fn blocking_waits_for_answers_that_come_after_an_await() {
    answers_after_an_await(DriverKind::Blocking);
}
