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

/// A 5.0 client with a will, connected with Authentication Method `JWT`
/// (and this token as its Authentication Data, if any).
fn enhanced_with_will(config: SessionConfig, data: Option<&'static [u8]>) -> Peer {
    let mut c = connect(
        V5,
        "srv-17",
        Some(will("trusted/srv-17/server/state", QoS::AtLeastOnce, true)),
    );
    c.properties.authentication_method = Some(MqttString::from_static("JWT"));
    if let Some(data) = data {
        c.password = None;
        c.properties.authentication_data = Some(Bytes::from_static(data));
    }
    Peer::connected(V5, config, c, identity("server-17", "srv-17", None))
}

/// AUTH 0x19 with the method `JWT` (and this token, if any).
fn reauthenticate(data: Option<&'static [u8]>) -> Packet {
    let mut auth = Auth::new(AuthReasonCode::ReAuthenticate);
    auth.properties.authentication_method = Some(MqttString::from_static("JWT"));
    auth.properties.authentication_data = data.map(Bytes::from_static);
    Packet::Auth(auth)
}

#[test]
fn the_will_carries_the_identity_of_the_last_reauthentication() {
    let mut p = enhanced_with_will(SessionConfig::default(), None);
    let a = p.send(reauthenticate(None));
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
    let mut p = enhanced_with_will(SessionConfig::default(), Some(b"t1"));
    let a = p.send(reauthenticate(Some(b"t2")));
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
        let mut p = enhanced_with_will(config.clone(), None);
        let a = p.send(reauthenticate(None));
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
