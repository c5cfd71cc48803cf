//! The story of `DESIGN.md`, end to end through the hub: a server's will is
//! authorized when it is sent, so neither key rotation nor the expiry of
//! the token it logged in with loses the "down" message.

mod common;

use common::hub::{Net, connect, connect_token, messages, will};
use common::jwt::{self, claims, mint};
use testament::auth::AuditRecord;
use testament::broker::BrokerConfig;
use testament::codec::*;
use testament::session::{CredentialExpiry, SessionConfig};

const STATE: &str = "trusted/dvs-01/dvs/server/state";

fn story(credential_expiry: CredentialExpiry) {
    let config = BrokerConfig {
        session: SessionConfig {
            credential_expiry,
            ..SessionConfig::default()
        },
        ..BrokerConfig::default()
    };
    let mut net = Net::new(config, Some(common::hub::default_acl()));

    // The server logs in with a five-minute RS256 token signed by KEY-A and
    // registers a retained will.
    let token = mint(&jwt::rsa_a(), &claims("dvs-01", 300));
    let mut c = connect_token(ProtocolVersion::V5, "dvs-01", "dvs-01", &token);
    // No keep alive: the connection dies only when the story says so.
    c.keep_alive = 0;
    c.will = Some(will(STATE, b"down", QoS::AtLeastOnce, true));
    let (server, _) = net.connect(c);
    net.publish(server, STATE, b"up", QoS::AtLeastOnce, true);
    assert!(matches!(net.take(server)[..], [Packet::PubAck(_)]));

    // A monitor watches every server's state.
    let monitor_token = mint(&jwt::rsa_a(), &claims("monitor", 86_400));
    let mut c = connect_token(ProtocolVersion::V5, "monitor", "monitor", &monitor_token);
    c.keep_alive = 0;
    let (monitor, _) = net.connect(c);
    net.subscribe(monitor, &[("trusted/+/dvs/server/state", QoS::AtLeastOnce)]);
    assert_eq!(
        messages(&net.publishes(monitor)),
        [(STATE.to_string(), "up".to_string())],
        "the retained `up` on subscribe"
    );

    // KEY-A is rotated out; the token expires.
    net.rotate_keys(&[&jwt::rsa_b()]);
    net.advance(400);

    // The server's connection dies (under the `disconnect` policy the
    // broker already closed it at exp + leeway; under `keep` it crashes now).
    if credential_expiry == CredentialExpiry::Keep {
        assert!(net.closed(server).is_none());
        net.crash(server);
    } else {
        let reason = net.closed(server).expect("closed at exp + leeway");
        assert_eq!(reason.code, DisconnectReasonCode::MaximumConnectTime);
    }

    let got = net.publishes(monitor);
    assert_eq!(messages(&got), [(STATE.to_string(), "down".to_string())]);
    assert!(
        !got[0].retain,
        "a live delivery keeps RETAIN 0 without Retain As Published"
    );
    assert_eq!(
        net.will_events(),
        [
            ("dvs-01".to_string(), "triggered"),
            ("dvs-01".to_string(), "delivered")
        ]
    );
    // The will was authorized — by the ACL rule, against the stored identity.
    assert!(
        net.audit_lines()
            .iter()
            .any(|l| l.starts_with("event=authz")
                && l.contains("op=will")
                && l.contains("principal=dvs-01")
                && l.contains("decision=allow"))
    );
    // Nobody re-checked the token: the only authentication failure is none.
    assert!(
        !net.audits
            .iter()
            .any(|r| matches!(r, AuditRecord::AuthenticationFailed { .. }))
    );

    // A subscriber arriving later, with a token of the new key, gets `down`
    // retained.
    let late_token = mint(&jwt::rsa_b(), &claims("late", 86_400 + 400));
    let (late, _) = net.connect(connect_token(
        ProtocolVersion::V311,
        "late",
        "late",
        &late_token,
    ));
    net.subscribe(late, &[("trusted/+/dvs/server/state", QoS::AtLeastOnce)]);
    let got = net.publishes(late);
    assert_eq!(messages(&got), [(STATE.to_string(), "down".to_string())]);
    assert!(got[0].retain);

    // And the old token no longer opens anything.
    let again = net.connect_with(connect_token(
        ProtocolVersion::V5,
        "dvs-01",
        "dvs-01",
        &token,
    ));
    assert!(matches!(
        &net.take(again)[..],
        [Packet::ConnAck(a)] if a.reason_code == ConnectReasonCode::BadUserNameOrPassword
    ));
}

#[test]
fn the_will_survives_key_rotation_and_expiry_when_the_connection_crashes() {
    story(CredentialExpiry::Keep);
}

#[test]
fn the_will_survives_key_rotation_when_the_expiry_policy_disconnects() {
    story(CredentialExpiry::Disconnect);
}

#[test]
fn a_monitor_on_3_1_1_gets_the_same_story() {
    let mut net = Net::standard();
    let mut c = connect(ProtocolVersion::V311, "dvs-02", "dvs-02");
    c.will = Some(will(
        "trusted/dvs-02/dvs/server/state",
        b"down",
        QoS::AtMostOnce,
        true,
    ));
    let (server, _) = net.connect(c);
    let (monitor, _) = net.connect(connect(ProtocolVersion::V311, "mon", "mon"));
    net.subscribe(monitor, &[("trusted/+/dvs/server/state", QoS::AtMostOnce)]);
    net.rotate_keys(&[&jwt::rsa_b()]);
    net.crash(server);
    assert_eq!(
        messages(&net.publishes(monitor)),
        [(
            "trusted/dvs-02/dvs/server/state".to_string(),
            "down".to_string()
        )]
    );
}
