//! Re-authentication (5.0 AUTH 0x19) on a connected session: success replaces
//! the identity the will is authorized against, failure is DISCONNECT 0x87,
//! the will and the close; the will may be re-checked after it.

mod common;

use common::V5;
use common::session::*;
use testament::auth::{AuditRecord, AuthnError, AuthnFailure, WillOutcome, WillTrigger};
use testament::codec::*;
use testament::session::*;
use testament::time::Timestamp;

#[test]
fn the_will_carries_the_identity_of_the_last_reauthentication() {
    let mut c = connect(
        V5,
        "srv-17",
        Some(will("trusted/srv-17/server/state", QoS::AtLeastOnce, true)),
    );
    c.properties.authentication_method = Some(MqttString::from_static("JWT"));
    let mut p = Peer::connected(
        V5,
        SessionConfig::default(),
        c,
        identity("server-17", "srv-17", None),
    );
    let mut auth = Auth::new(AuthReasonCode::ReAuthenticate);
    auth.properties.authentication_method = Some(MqttString::from_static("JWT"));
    let a = p.send(Packet::Auth(auth));
    let ticket = authenticate_ticket(&a);
    let fresh = identity(
        "server-17",
        "srv-17",
        Some(Timestamp::from_millis(T0 + 3_600_000)),
    );
    let a = p.authenticate(ticket, AuthnOutcome::Success(fresh.clone()));
    assert_eq!(kinds(&a), ["audit", "identity", "send"]);
    let packets = p.packets(&a);
    assert!(matches!(&packets[..], [Packet::Auth(x)] if x.reason_code == AuthReasonCode::Success));
    p.session.handle_closed(p.now, TransportClosed::Error);
    let a = p.drain();
    assert_eq!(*one_will(&a, WillTrigger::NetworkError).identity, fresh);
}

#[test]
fn reauthentication_failure_disconnects_0x87_and_triggers_the_will() {
    // [MQTT-4.12.1-2]
    let mut c = connect(
        V5,
        "srv-17",
        Some(will("trusted/srv-17/server/state", QoS::AtLeastOnce, true)),
    );
    c.password = None;
    c.properties.authentication_method = Some(MqttString::from_static("JWT"));
    c.properties.authentication_data = Some(Bytes::from_static(b"t1"));
    let mut p = Peer::connected(
        V5,
        SessionConfig::default(),
        c,
        identity("server-17", "srv-17", None),
    );
    let mut auth = Auth::new(AuthReasonCode::ReAuthenticate);
    auth.properties.authentication_method = Some(MqttString::from_static("JWT"));
    auth.properties.authentication_data = Some(Bytes::from_static(b"t2"));
    let a = p.send(Packet::Auth(auth));
    let Action::Authenticate {
        ticket,
        reauthentication: true,
        credentials,
    } = &a[0]
    else {
        panic!("{a:?}")
    };
    assert_eq!(credentials.auth_data.as_deref(), Some(&b"t2"[..]));
    let failure = AuthnFailure {
        error: AuthnError::BadSignature,
        key_id: None,
        token: None,
    };
    let a = p.authenticate(*ticket, AuthnOutcome::Failure(failure));
    let packets = p.packets(&a);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::NotAuthorized)
    );
    one_will(&a, WillTrigger::ReauthenticationFailed);
}

#[test]
fn the_will_can_be_rechecked_after_reauthentication() {
    let config = SessionConfig {
        recheck_will_on_reauth: true,
        ..Default::default()
    };
    for allowed in [true, false] {
        let mut c = connect(
            V5,
            "srv-17",
            Some(will("trusted/srv-17/server/state", QoS::AtLeastOnce, true)),
        );
        c.properties.authentication_method = Some(MqttString::from_static("JWT"));
        let mut p = Peer::connected(V5, config.clone(), c, identity("server-17", "srv-17", None));
        let mut auth = Auth::new(AuthReasonCode::ReAuthenticate);
        auth.properties.authentication_method = Some(MqttString::from_static("JWT"));
        let a = p.send(Packet::Auth(auth));
        let a = p.authenticate(
            authenticate_ticket(&a),
            AuthnOutcome::Success(identity("server-17", "srv-17", None)),
        );
        assert_eq!(kinds(&a), ["audit", "identity", "authorize", "send"]);
        let Some(Action::Authorize { query, .. }) = a.get(2) else {
            panic!()
        };
        assert_eq!(query.op, testament::auth::Operation::Will);
        let a = p.authorize(
            authorize_tickets(&a)[0],
            if allowed { allow() } else { deny() },
        );
        if allowed {
            assert_eq!(kinds(&a), ["audit"]);
            assert!(p.session.is_connected());
        } else {
            let packets = p.packets(&a);
            assert!(
                matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::NotAuthorized)
            );
            assert!(
                wills(&a).is_empty(),
                "a will denied now is deleted, not sent"
            );
            assert!(a.iter().any(|x| matches!(
                x,
                Action::Audit(AuditRecord::Will {
                    outcome: WillOutcome::Denied { .. },
                    ..
                })
            )));
        }
    }
}
