//! Helpers shared by the black-box tests.
#![allow(dead_code)]

use testament::codec::{
    Bytes, DecodeError, Encode, MqttString, Packet, PacketId, ProtocolVersion, TopicFilter,
    TopicName, decode_packet,
};

pub const V3: ProtocolVersion = ProtocolVersion::V311;
pub const V5: ProtocolVersion = ProtocolVersion::V5;
pub const MAX: u32 = 1 << 20;

/// Bytes from hex text; whitespace is ignored.
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Decodes exactly one whole packet from `bytes`.
pub fn decode(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let input = Bytes::copy_from_slice(bytes);
    match decode_packet(&input, Some(version), MAX)? {
        Some((packet, used)) => {
            assert_eq!(used, bytes.len(), "packet did not use the whole input");
            Ok(packet)
        }
        None => panic!("incomplete packet: {bytes:02x?}"),
    }
}

/// Encodes a packet, checking `encoded_len` against what was written.
pub fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let bytes = packet.to_vec(version).expect("encodable");
    assert_eq!(bytes.len(), packet.encoded_len(version).unwrap());
    bytes
}

pub fn s(text: &'static str) -> MqttString {
    MqttString::from_static(text)
}

pub fn topic(text: &'static str) -> TopicName {
    TopicName::from_static(text)
}

pub fn filter(text: &'static str) -> TopicFilter {
    TopicFilter::from_static(text)
}

pub fn pid(id: u16) -> PacketId {
    PacketId::new(id).unwrap()
}

/// A client or tool a test needs is missing: outside CI the test says so
/// and skips; in CI (`CI` set, as `.ci/run` runs), where it is installed,
/// its absence fails the test.
pub fn missing(what: &str) {
    let line = format!("SKIPPED: {what} is not available (bash .ci/run installs it)");
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        panic!("{line} — and CI must run this test");
    }
    // Straight to the process's standard error, not through `eprintln!`,
    // which the test harness captures and shows only for a failure: a
    // skip must be seen in the `cargo test` output of a passing run.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether python3 with paho-mqtt is here; says so ([`missing`]) when not.
pub fn paho() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        missing("python3 with paho-mqtt (PyPI)");
    }
    found
}

/// The TOML code blocks of the README's configuration section: the
/// defaults, the default ACL, the Paho suites' configuration.
pub fn readme_toml_blocks() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &text[text.find("### Configuration").expect("the section")..];
    section
        .split("```toml\n")
        .skip(1)
        .map(|b| b[..b.find("```").unwrap()].to_string())
        .take(3)
        .collect()
}

pub mod alloc;
pub mod binary;
pub mod e2e;
pub mod hub;
pub mod jwt;
pub mod raw;
pub mod session;
