//! Time on a connected session: keep alive (1.5 × the interval, Server Keep
//! Alive, PINGREQ), credential expiry, and deadlines that always move forward.

mod common;

use common::session::*;
use common::{V3, V5};
use testament::auth::WillTrigger;
use testament::codec::*;
use testament::session::*;
use testament::time::Now;

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
fn pingreq_gets_pingresp_and_resets_keep_alive() {
    for v in [V3, V5] {
        let mut p = Peer::alice(v, SessionConfig::default());
        assert!(p.advance(14_000).is_empty());
        let a = p.send(Packet::PingReq);
        assert_eq!(p.packets(&a), [Packet::PingResp]);
        assert!(
            p.advance(14_000).is_empty(),
            "the ping reset the 15 s deadline"
        );
        assert_eq!(closes(&p.advance(1_000)).len(), 1);
    }
}

#[test]
fn server_keep_alive_caps_the_client_and_is_announced() {
    // [MQTT-3.2.2-21]
    let config = SessionConfig {
        server_keep_alive: Some(5),
        ..Default::default()
    };
    let mut p = Peer::new(V5, config);
    let a = p.send(Packet::Connect(Box::new(connect(V5, "c1", None))));
    let a = p.authenticate(
        authenticate_ticket(&a),
        AuthnOutcome::Success(identity("alice", "c1", None)),
    );
    let a = p.open(open_ticket(&a), false);
    let packets = p.packets(&a);
    let [Packet::ConnAck(ack)] = &packets[..] else {
        panic!()
    };
    assert_eq!(ack.properties.server_keep_alive, Some(5));
    assert!(p.advance(7_499).is_empty());
    assert_eq!(closes(&p.advance(1)).len(), 1);
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
    assert_eq!(p.now, Now::from_millis(T0 + 90_000));
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
fn deadlines_move_forward_after_handle_timeout() {
    let mut p = Peer::alice(V5, SessionConfig::default());
    for step in [1u64, 500, 7_000, 7_498] {
        p.advance(step);
        if let Some(next) = p.session.poll_timeout() {
            assert!(
                next > p.now.mono,
                "deadline {next} not after {}",
                p.now.mono
            );
        }
    }
}
