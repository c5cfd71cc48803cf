//! Feeding a decoder the way a network delivers bytes: in arbitrary pieces.
//!
//! A client's byte stream (CONNECT, SUBSCRIBE, a PUBLISH, DISCONNECT) arrives
//! in 3-byte reads; the decoder returns each packet as soon as its last byte
//! is in, and says "need more" (`Ok(None)`) in between. The same stream with
//! a malformed packet ends with the reason code a broker would send.
//!
//! `cargo run --example decode_stream`

use testament::codec::{
    Bytes, Connect, Decoder, Encode, MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS,
    Subscribe, Subscription, SubscriptionOptions, TopicFilter, TopicName,
};

fn client_stream() -> Vec<u8> {
    let v = ProtocolVersion::V5;
    let mut out = Vec::new();
    let mut connect = Connect::new(v, MqttString::from_static("monitor-1"));
    connect.keep_alive = 30;
    connect.encode(v, &mut out).expect("encodable");
    Subscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        properties: Default::default(),
        subscriptions: vec![Subscription {
            filter: TopicFilter::from_static("trusted/+/server/state"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        }],
    }
    .encode(v, &mut out)
    .expect("encodable");
    let mut publish = Publish::new(
        TopicName::from_static("trusted/srv-17/server/state"),
        Bytes::from_static(b"up"),
    );
    publish.retain = true;
    publish.encode(v, &mut out).expect("encodable");
    Packet::Disconnect(testament::codec::Disconnect::new(
        testament::codec::DisconnectReasonCode::NormalDisconnection,
    ))
    .encode(v, &mut out)
    .expect("encodable");
    out
}

fn run(name: &str, stream: &[u8]) {
    println!("-- {name}: {} bytes in 3-byte reads", stream.len());
    let mut decoder = Decoder::new(64 * 1024);
    for (i, piece) in stream.chunks(3).enumerate() {
        decoder.feed(piece);
        loop {
            match decoder.decode() {
                Ok(Some(packet)) => println!("read {i:>3}: {:?}", packet.packet_type()),
                Ok(None) => break,
                Err(e) => {
                    println!("read {i:>3}: {e} -> close with {}", e.reason_code());
                    return;
                }
            }
        }
    }
}

fn main() {
    let stream = client_stream();
    run("a well-formed client", &stream);
    // Put a wildcard in the PUBLISH topic: "trusted/srv-17/..." becomes "trusted/+rv-17/...".
    let mut bad = stream.clone();
    let at = bad
        .windows(9)
        .position(|w| w == b"srv-17/se")
        .expect("topic present");
    bad[at] = b'+';
    run("a client publishing to a wildcard topic", &bad);
}
