//! A policy that answers after an await, as a call to an identity or policy
//! service would, on every driver: the connection waits for its answers in
//! order, nothing is sent before its Allow, and a refusal still refuses.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::e2e::{Running, V3};
use rumqttc::QoS;
use testament::broker::BrokerConfig;
use testament::config::DriverKind;

#[path = "../examples/shared/slow_policy.rs"]
mod slow_policy;
use slow_policy::SlowPolicy;

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
