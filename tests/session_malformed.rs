//! Malformed and out-of-place packets: the reason code the fault earns, a
//! DISCONNECT where 5.0 allows one, the will, and the close — in that order.

mod common;

use common::session::*;
use common::{V3, V5, hex, pid};
use testament::codec::*;
use testament::session::*;

#[test]
fn malformed_input_gets_its_reason_code_then_the_will_then_the_close() {
    let cases: &[(&str, DisconnectReasonCode)] = &[
        (
            "30 05 00 03 61 2F 2B",
            DisconnectReasonCode::TopicNameInvalid,
        ),
        (
            "30 05 00 03 61 00 62",
            DisconnectReasonCode::MalformedPacket,
        ),
        ("62 02 00 00", DisconnectReasonCode::ProtocolError), // PUBREL with packet identifier 0
        ("82 03 00 01 00", DisconnectReasonCode::ProtocolError),
        ("C1 00", DisconnectReasonCode::MalformedPacket),
        ("30 FF FF FF 7F", DisconnectReasonCode::PacketTooLarge),
    ];
    for (wire, expected) in cases {
        let mut p = peer(V5, SessionConfig::default());
        let a = p.bytes(&hex(wire));
        assert_eq!(disconnect_code(&mut p, &a), *expected, "{wire}");
        assert_eq!(kinds(&a), ["send", "audit", "will", "close"], "{wire}");
    }
    // 3.1.1: no DISCONNECT, the will and the close.
    let mut p = peer(V3, SessionConfig::default());
    let a = p.bytes(&hex("30 05 00 03 61 2F 2B"));
    assert_eq!(kinds(&a), ["audit", "will", "close"]);
}

#[test]
fn server_to_client_packets_from_a_client_are_protocol_errors() {
    for packet in [
        Packet::ConnAck(ConnAck::new(false, ConnectReasonCode::Success)),
        Packet::PingResp,
        Packet::SubAck(SubAck {
            packet_id: pid(1),
            properties: Default::default(),
            reason_codes: vec![SubAckReasonCode::GrantedQoS0],
        }),
    ] {
        let mut p = peer(V5, SessionConfig::default());
        let a = p.send(packet);
        assert_eq!(
            disconnect_code(&mut p, &a),
            DisconnectReasonCode::ProtocolError
        );
    }
}

#[test]
fn packets_before_connect_and_a_second_connect_are_protocol_errors() {
    let mut p = Peer::new(V5, SessionConfig::default());
    let a = p.bytes(&hex("C0 00"));
    assert_eq!(kinds(&a), ["close"]);
    let mut p = Peer::connected(
        V5,
        SessionConfig::default(),
        connect(V5, "c", None),
        identity("alice", "c", None),
    );
    let a = p.send(Packet::Connect(Box::new(connect(V5, "c", None))));
    let packets = p.packets(&a);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::ProtocolError)
    );
    assert_eq!(closes(&a).len(), 1);
}
