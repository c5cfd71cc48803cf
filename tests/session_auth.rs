//! Authentication as a pause point: the host decides, a failure is a refusing
//! CONNACK and never a will, enhanced authentication takes rounds of AUTH,
//! and an answer to a ticket nobody asked for is the host's mistake.

mod common;

use common::session::*;
use common::{V3, V5};
use testament::auth::{AuthnError, AuthnFailure};
use testament::codec::*;
use testament::session::SessionError;
use testament::session::*;

#[test]
fn authentication_failure_is_a_refusing_connack_then_close_and_never_a_will() {
    for (v, code) in [(V5, 0x86u8), (V3, 0x04)] {
        let mut p = Peer::new(v, SessionConfig::default());
        let a = p.send(Packet::Connect(Box::new(connect(
            v,
            "srv-17",
            Some(will("t/w", QoS::AtLeastOnce, true)),
        ))));
        let failure = AuthnFailure {
            error: AuthnError::Expired {
                exp: testament::time::Timestamp::from_secs(1),
            },
            key_id: None,
            token: None,
        };
        let a = p.authenticate(authenticate_ticket(&a), AuthnOutcome::Failure(failure));
        assert_eq!(kinds(&a), ["audit", "send", "close"], "{v}");
        let Action::Send(bytes) = &a[1] else { panic!() };
        assert_eq!(bytes[0], 0x20, "{v}");
        assert_eq!(bytes[3], code, "{v}");
        if v == V5 {
            let packets = p.packets(&a);
            let [Packet::ConnAck(ack)] = &packets[..] else {
                panic!()
            };
            assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
            assert!(
                ack.properties
                    .reason_string
                    .as_deref()
                    .is_some_and(|r| r.contains("expired"))
            );
        }
        assert!(wills(&a).is_empty());
        assert!(p.session.is_closed());
        // Anything later is ignored, and closing the transport sends no will.
        assert!(p.send(Packet::PingReq).is_empty());
        p.session.handle_closed(p.now, TransportClosed::Error);
        assert!(p.drain().is_empty());
    }
}

#[test]
fn enhanced_authentication_can_take_several_rounds() {
    // [MQTT-4.12.0-2], [MQTT-4.12.0-3]
    let mut p = Peer::new(V5, SessionConfig::default());
    let mut c = connect(V5, "c1", None);
    c.password = None;
    c.properties.authentication_method = Some(MqttString::from_static("JWT"));
    c.properties.authentication_data = Some(Bytes::from_static(b"hello"));
    let a = p.send(Packet::Connect(Box::new(c)));
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Continue(Bytes::from_static(b"challenge")),
    );
    let packets = p.packets(&a);
    let [Packet::Auth(challenge)] = &packets[..] else {
        panic!("{packets:?}")
    };
    assert_eq!(
        challenge.reason_code,
        AuthReasonCode::ContinueAuthentication
    );
    assert_eq!(
        challenge.properties.authentication_data.as_deref(),
        Some(&b"challenge"[..])
    );
    // While the client answers, no ticket is open, not even a made-up one.
    for t in [Ticket(0), Ticket(1)] {
        assert_eq!(
            p.session.handle_authentication(
                p.now,
                t,
                AuthnOutcome::Success(identity("alice", "c1", None))
            ),
            Err(SessionError::UnknownTicket(t))
        );
    }
    let mut answer = Auth::new(AuthReasonCode::ContinueAuthentication);
    answer.properties.authentication_method = Some(MqttString::from_static("JWT"));
    answer.properties.authentication_data = Some(Bytes::from_static(b"response"));
    let a = p.send(Packet::Auth(answer));
    let Action::Authenticate {
        credentials,
        ticket,
        ..
    } = &a[0]
    else {
        panic!("{a:?}")
    };
    assert_eq!(credentials.auth_data.as_deref(), Some(&b"response"[..]));
    let a = p.authenticate(
        *ticket,
        AuthnOutcome::Success(identity("alice", "c1", None)),
    );
    let a = p.open(open_ticket(&a), false);
    let packets = p.packets(&a);
    let [Packet::ConnAck(ack)] = &packets[..] else {
        panic!()
    };
    assert_eq!(ack.properties.authentication_method.as_deref(), Some("JWT"));
    // A 3.1.1 client cannot do more rounds: refused.
    let mut p = Peer::new(V3, SessionConfig::default());
    let a = p.send(Packet::Connect(Box::new(connect(V3, "c1", None))));
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Continue(Bytes::new()),
    );
    assert_eq!(kinds(&a), ["send", "close"]);
}

#[test]
fn auth_without_a_method_at_connect_is_a_protocol_error() {
    // [MQTT-4.12.0-7]
    let mut p = peer(V5, SessionConfig::default());
    let mut auth = Auth::new(AuthReasonCode::ReAuthenticate);
    auth.properties.authentication_method = Some(MqttString::from_static("JWT"));
    let a = p.send(Packet::Auth(auth));
    assert_eq!(
        disconnect_code(&mut p, &a),
        DisconnectReasonCode::ProtocolError
    );
}

#[test]
fn an_unknown_ticket_is_a_host_error() {
    let mut p = Peer::new(V5, SessionConfig::default());
    assert_eq!(
        p.session
            .handle_authentication(p.now, Ticket(99), AuthnOutcome::Continue(Bytes::new())),
        Err(SessionError::UnknownTicket(Ticket(99)))
    );
    assert_eq!(
        p.session.handle_open(p.now, Ticket(1), false),
        Err(SessionError::UnknownTicket(Ticket(1)))
    );
}

#[test]
fn the_identity_names_the_connections_client_id_whatever_the_host_answered() {
    // The ACL's `%c`, the audit and the hub's registry read the client id
    // from the identity: a host that puts another there does not move the
    // connection to another client id.
    let mut p = Peer::new(V5, SessionConfig::default());
    let a = p.send(Packet::Connect(Box::new(connect(V5, "c1", None))));
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Success(identity("alice", "someone-else", None)),
    );
    let audited = a.iter().find_map(|a| match a {
        Action::Audit(testament::auth::AuditRecord::Authenticated { identity, .. }) => {
            Some(identity.clone())
        }
        _ => None,
    });
    assert_eq!(
        audited.map(|i| i.client_id.to_string()).as_deref(),
        Some("c1")
    );
    let opened = a.iter().find_map(|a| match a {
        Action::Open {
            client_id,
            identity,
            ..
        } => Some((client_id.to_string(), identity.client_id.to_string())),
        _ => None,
    });
    assert_eq!(opened, Some(("c1".into(), "c1".into())));
    p.open(open_ticket(&a), false);
    assert_eq!(p.session.client_id(), Some("c1"));
    assert_eq!(p.session.identity().map(|i| &*i.client_id), Some("c1"));
    // What the authorizer is asked about carries it too.
    let a = p.send(Packet::Publish(Publish::new(
        TopicName::from_static("t/1"),
        Bytes::from_static(b"x"),
    )));
    let asked = a.iter().find_map(|a| match a {
        Action::Authorize { query, .. } => Some(query.identity.client_id.to_string()),
        _ => None,
    });
    assert_eq!(asked.as_deref(), Some("c1"));
}
