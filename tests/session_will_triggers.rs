//! When the will is handed up, with which identity and trigger — and when it
//! never is. Each trigger of DESIGN.md, in both versions (keep alive and
//! credential expiry: `session_keepalive.rs`; re-authentication:
//! `session_reauth.rs`).

mod common;

use common::session::*;
use common::{V3, V5};
use testament::auth::{AuditRecord, WillOutcome, WillTrigger};
use testament::codec::*;
use testament::session::*;

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
            p.session.handle_takeover(p.now, false);
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
