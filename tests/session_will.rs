//! When the will is handed up, with which identity and trigger — and when it
//! never is. Each trigger of DESIGN.md, in both versions.

mod common;

use common::session::*;
use common::{V3, V5};
use testament::auth::{AuditRecord, AuthnError, AuthnFailure, WillOutcome, WillTrigger};
use testament::codec::*;
use testament::session::*;
use testament::time::Timestamp;

fn with_will(v: ProtocolVersion, config: SessionConfig) -> Peer {
    Peer::connected(
        v,
        config,
        connect(
            v,
            "srv-17",
            Some(will("trusted/srv-17/server/state", QoS::AtLeastOnce, true)),
        ),
        identity(
            "server-17",
            "srv-17",
            Some(Timestamp::from_millis(T0 + 60_000)),
        ),
    )
}

fn one_will(actions: &[Action], trigger: WillTrigger) -> DueWill {
    let w = wills(actions);
    assert_eq!(w.len(), 1, "{actions:?}");
    assert_eq!(w[0].trigger, trigger);
    assert_eq!(w[0].will.topic.as_str(), "trusted/srv-17/server/state");
    assert_eq!(w[0].identity.principal, "server-17");
    w[0].clone()
}

#[test]
fn network_error_and_peer_close_trigger_the_will() {
    for v in [V3, V5] {
        for (how, trigger) in [
            (TransportClosed::Error, WillTrigger::NetworkError),
            (TransportClosed::PeerClosed, WillTrigger::PeerClosed),
        ] {
            let mut p = with_will(v, SessionConfig::default());
            p.session.handle_closed(p.now, how);
            let a = p.drain();
            assert_eq!(kinds(&a), ["audit", "will"]);
            let w = one_will(&a, trigger);
            assert!(w.will.retain);
            assert_eq!(w.triggered_at, p.now);
            // At most once.
            p.session.handle_closed(p.now, how);
            assert!(p.drain().is_empty());
        }
    }
}

#[test]
fn disconnect_0x00_deletes_the_will_and_0x04_publishes_it() {
    // [MQTT-3.14.4-3] / [MQTT-3.1.2-10]
    for v in [V3, V5] {
        let mut p = with_will(v, SessionConfig::default());
        let a = p.send(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::NormalDisconnection,
        )));
        assert!(wills(&a).is_empty());
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Audit(AuditRecord::Will {
                outcome: WillOutcome::Cancelled { .. },
                ..
            })
        )));
        assert_eq!(closes(&a).len(), 1);
        p.session.handle_closed(p.now, TransportClosed::PeerClosed);
        assert!(
            wills(&p.drain()).is_empty(),
            "no will after DISCONNECT 0x00 ({v})"
        );
    }
    let mut p = with_will(V5, SessionConfig::default());
    let a = p.send(Packet::Disconnect(Disconnect::new(
        DisconnectReasonCode::DisconnectWithWillMessage,
    )));
    one_will(&a, WillTrigger::DisconnectWithWill);
    assert_eq!(kinds(&a), ["audit", "will", "close"]);
}

#[test]
fn keep_alive_timeout_sends_0x8d_then_the_will_then_closes() {
    // [MQTT-3.1.2-22]: 1.5 × 10 s.
    let mut p = with_will(V5, SessionConfig::default());
    assert!(p.advance(14_999).is_empty());
    let a = p.advance(1);
    assert_eq!(kinds(&a), ["send", "audit", "will", "close"]);
    let packets = p.packets(&a);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::KeepAliveTimeout)
    );
    one_will(&a, WillTrigger::KeepAliveTimeout);
    // 3.1.1: no DISCONNECT from a server.
    let mut p = with_will(V3, SessionConfig::default());
    let a = p.advance(15_000);
    assert_eq!(kinds(&a), ["audit", "will", "close"]);
}

#[test]
fn protocol_error_triggers_the_will() {
    let mut p = with_will(V5, SessionConfig::default());
    let a = p.bytes(&[0x00, 0x00]);
    let packets = p.packets(&a);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::MalformedPacket)
    );
    one_will(&a, WillTrigger::ProtocolError);
    assert_eq!(kinds(&a), ["send", "audit", "will", "close"]);
}

#[test]
fn takeover_and_shutdown_trigger_the_will() {
    for (input, code, trigger) in [
        (
            0,
            DisconnectReasonCode::SessionTakenOver,
            WillTrigger::SessionTakenOver,
        ),
        (
            1,
            DisconnectReasonCode::ServerShuttingDown,
            WillTrigger::Shutdown,
        ),
    ] {
        let mut p = with_will(V5, SessionConfig::default());
        if input == 0 {
            p.session.handle_takeover(p.now);
        } else {
            p.session.handle_shutdown(p.now);
        }
        let a = p.drain();
        let packets = p.packets(&a);
        assert!(matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == code));
        one_will(&a, trigger);
    }
}

#[test]
fn credential_expiry_closes_with_0xa0_and_triggers_the_will_unless_kept() {
    // exp = T0 + 60 s, leeway 30 s; keep alive 10 s kept alive by pings.
    let mut p = with_will(V5, SessionConfig::default());
    for _ in 0..8 {
        assert!(p.advance(10_000).is_empty());
        p.send(Packet::PingReq);
    }
    let a = p.advance(10_000);
    assert_eq!(p.now, Timestamp::from_millis(T0 + 90_000));
    let packets = p.packets(&a);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::MaximumConnectTime),
        "{packets:?}"
    );
    one_will(&a, WillTrigger::CredentialExpired);

    let config = SessionConfig {
        credential_expiry: CredentialExpiry::Keep,
        ..Default::default()
    };
    let mut p = with_will(V5, config);
    for _ in 0..12 {
        p.advance(10_000);
        let a = p.send(Packet::PingReq);
        assert_eq!(kinds(&a), ["send"]);
    }
    assert!(p.session.is_connected());
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
fn a_connection_that_never_got_connack_has_no_will() {
    // [MQTT-3.1.4-6]: refused, timed out, or cut before CONNACK.
    let mut p = Peer::new(V5, SessionConfig::default());
    let a = p.send(Packet::Connect(Box::new(connect(
        V5,
        "c",
        Some(will("t", QoS::AtMostOnce, false)),
    ))));
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Success(identity("alice", "c", None)),
    );
    assert_eq!(kinds(&a), ["audit", "authorize"]);
    p.session.handle_closed(p.now, TransportClosed::Error);
    assert!(p.drain().is_empty());
    let mut p = Peer::new(V5, SessionConfig::default());
    p.send(Packet::Connect(Box::new(connect(
        V5,
        "c",
        Some(will("t", QoS::AtMostOnce, false)),
    ))));
    let a = p.advance(10_000);
    assert!(wills(&a).is_empty() && closes(&a).len() == 1);
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
