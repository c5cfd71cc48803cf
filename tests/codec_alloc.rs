//! Decoding a QoS 0/1 PUBLISH without properties allocates nothing: topic and
//! payload share the receive buffer. Counted with a global allocator, so this
//! file holds a single test (tests of one binary share the allocator).

mod common;

use common::alloc::Counting;
use testament::codec::{
    Bytes, Decoder, Encode, Packet, PacketId, ProtocolVersion, Publish, QoS, TopicName,
};

#[global_allocator]
static GLOBAL: Counting = Counting;

const PACKETS: usize = 1000;

fn stream(version: ProtocolVersion, qos: QoS) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..PACKETS {
        let mut p = Publish::new(
            TopicName::from_static("fleet/server-17/state"),
            Bytes::from(vec![i as u8; 100]),
        );
        p.qos = qos;
        p.packet_id = (qos != QoS::AtMostOnce).then(|| PacketId::new(1 + i as u16).unwrap());
        p.encode(version, &mut out).unwrap();
    }
    out
}

#[test]
fn publish_decoding_allocates_nothing_per_packet() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let bytes = stream(version, qos);
            let mut decoder = Decoder::new(1 << 20).with_version(version);
            decoder.feed(&bytes);
            let before = Counting::thread_calls();
            let mut decoded = 0;
            while let Some(packet) = decoder.decode().unwrap() {
                assert!(matches!(packet, Packet::Publish(ref p) if p.payload.len() == 100));
                decoded += 1;
            }
            let allocations = Counting::thread_calls() - before;
            assert_eq!(decoded, PACKETS);
            // The first split turns the receive buffer into a shared one: one
            // allocation for the whole stream, none per packet.
            assert!(
                allocations <= 1,
                "{version} {qos:?}: {allocations} allocations for {PACKETS} packets"
            );
        }
    }
}
