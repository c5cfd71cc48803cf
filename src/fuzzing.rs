//! Harness functions shared by the cargo-fuzz targets and the corpus replay
//! in `cargo test`, so that every input a fuzzer keeps becomes a regression
//! test. Not part of the public API.

use bytes::Bytes;

use crate::codec::{Decoder, Encode, Packet, ProtocolVersion, decode_packet};

const MAX: u32 = 1 << 20;

/// Decodes arbitrary bytes, in the splits the first bytes choose, in both
/// protocol versions; checks that nothing panics, that the stream decoder and
/// the one-shot decoder agree, and that no more bytes than given are used.
pub fn decode(data: &[u8]) {
    let (split_seed, stream) = match data.split_first() {
        Some((&s, rest)) => (usize::from(s) + 1, rest),
        None => return,
    };
    for version in [None, Some(ProtocolVersion::V311), Some(ProtocolVersion::V5)] {
        let whole = one_shot(stream, version);
        let split = streamed(stream, version, split_seed);
        assert_eq!(
            whole, split,
            "split decoding differs from one-shot decoding"
        );
    }
}

type Outcome = (Vec<Packet>, Option<crate::codec::DecodeError>);

fn one_shot(stream: &[u8], mut version: Option<ProtocolVersion>) -> Outcome {
    let mut input = Bytes::copy_from_slice(stream);
    let mut packets = Vec::new();
    loop {
        match decode_packet(&input, version, MAX) {
            Ok(Some((packet, used))) => {
                assert!(
                    used <= input.len(),
                    "decoder used more bytes than it was given"
                );
                input = input.slice(used..);
                if let (None, Packet::Connect(c)) = (version, &packet) {
                    version = Some(c.protocol);
                }
                packets.push(packet);
            }
            Ok(None) => return (packets, None),
            Err(e) => return (packets, Some(e)),
        }
    }
}

fn streamed(stream: &[u8], version: Option<ProtocolVersion>, step: usize) -> Outcome {
    let mut decoder = Decoder::new(MAX);
    if let Some(v) = version {
        decoder.set_version(v);
    }
    let mut packets = Vec::new();
    for chunk in stream.chunks(step) {
        decoder.feed(chunk);
        loop {
            match decoder.decode() {
                Ok(Some(p)) => packets.push(p),
                Ok(None) => break,
                Err(e) => return (packets, Some(e)),
            }
        }
    }
    (packets, None)
}

/// Decodes arbitrary bytes; every packet that decodes must encode back to
/// bytes that decode to the same packet, with the size `encoded_len` gave.
pub fn roundtrip(data: &[u8]) {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let (packets, _) = one_shot(data, Some(version));
        for packet in packets {
            let v = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => version,
            };
            let len = packet
                .encoded_len(v)
                .expect("a decoded packet can be encoded");
            let bytes = packet.to_vec(v).expect("a decoded packet can be encoded");
            assert_eq!(bytes.len(), len, "encoded_len disagrees with encode");
            let again = decode_packet(&Bytes::from(bytes), Some(v), MAX)
                .expect("re-encoded packet decodes")
                .expect("re-encoded packet is complete");
            assert_eq!(again.0, packet, "packet changed through encode/decode");
            assert_eq!(again.1, len);
        }
    }
}
