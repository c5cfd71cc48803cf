//! One test per validation rule of the decoder, each asserting the exact
//! fault and the reason code a server reports it with.

mod common;

use common::*;
use testament::codec::*;

use DisconnectReasonCode as R;

fn fault(wire: &str, version: ProtocolVersion) -> DecodeError {
    match decode(&hex(wire), version) {
        Err(e) => e,
        Ok(p) => panic!("{wire} decoded to {p:?}"),
    }
}

fn assert_fault(wire: &str, version: ProtocolVersion, expected: DecodeError, code: R) {
    let e = fault(wire, version);
    assert_eq!(e, expected, "{wire}");
    assert_eq!(e.reason_code(), code, "{wire}");
}

#[test]
fn remaining_length_longer_than_four_bytes_is_malformed() {
    // [MQTT-1.5.5-1] / §2.1.4: at most four bytes.
    assert_fault(
        "30 FF FF FF FF 01",
        V5,
        DecodeError::InvalidVarint,
        R::MalformedPacket,
    );
}

#[test]
fn remaining_length_not_minimal_is_malformed() {
    assert_fault(
        "C0 80 00",
        V5,
        DecodeError::InvalidVarint,
        R::MalformedPacket,
    );
}

#[test]
fn reserved_fixed_header_flags_are_malformed() {
    // [MQTT-2.1.3-1]: PUBREL, SUBSCRIBE, UNSUBSCRIBE need 0010, the rest 0000.
    let cases = [
        ("60 02 00 01", PacketType::PubRel, 0),
        ("80 06 00 01 00 01 61 00", PacketType::Subscribe, 0),
        ("A0 05 00 01 00 01 61", PacketType::Unsubscribe, 0),
        ("C1 00", PacketType::PingReq, 1),
        ("E2 00", PacketType::Disconnect, 2),
        ("18 00", PacketType::Connect, 8),
        ("42 02 00 01", PacketType::PubAck, 2),
    ];
    for (wire, packet_type, flags) in cases {
        for v in [V3, V5] {
            assert_fault(
                wire,
                v,
                DecodeError::InvalidFixedHeaderFlags { packet_type, flags },
                R::MalformedPacket,
            );
        }
    }
}

#[test]
fn packet_type_zero_and_auth_in_v311_are_malformed() {
    assert_fault(
        "00 00",
        V5,
        DecodeError::InvalidPacketType(0),
        R::MalformedPacket,
    );
    assert_fault(
        "F0 00",
        V3,
        DecodeError::InvalidPacketType(15),
        R::MalformedPacket,
    );
}

#[test]
fn invalid_utf8_anywhere_is_malformed() {
    // [MQTT-1.5.4-1]: ill-formed UTF-8, including an encoded surrogate (ED A0 80).
    for bad in ["FF", "C3", "ED A0 80", "F8 88 80 80 80"] {
        let n = hex(bad).len();
        // Client identifier of a 3.1.1 CONNECT.
        let wire = format!(
            "10 {:02X} 00 04 4D 51 54 54 04 02 00 3C 00 {n:02X} {bad}",
            12 + n
        );
        assert_fault(&wire, V3, DecodeError::InvalidUtf8, R::MalformedPacket);
        // Topic name of a PUBLISH.
        let wire = format!("30 {:02X} 00 {n:02X} {bad}", 2 + n);
        assert_fault(&wire, V5, DecodeError::InvalidUtf8, R::MalformedPacket);
        // Topic filter of a SUBSCRIBE.
        let wire = format!("82 {:02X} 00 01 00 {n:02X} {bad} 00", 5 + n);
        assert_fault(&wire, V3, DecodeError::InvalidUtf8, R::MalformedPacket);
    }
    // A user property value in a PUBACK.
    assert_fault(
        "40 0B 00 01 00 07 26 00 01 6B 00 01 FF",
        V5,
        DecodeError::InvalidUtf8,
        R::MalformedPacket,
    );
}

#[test]
fn null_character_anywhere_is_malformed() {
    // [MQTT-1.5.4-2]
    assert_fault(
        "30 05 00 03 61 00 62",
        V5,
        DecodeError::NullCharacter,
        R::MalformedPacket,
    );
    assert_fault(
        "10 0F 00 04 4D 51 54 54 04 02 00 3C 00 03 61 00 62",
        V3,
        DecodeError::NullCharacter,
        R::MalformedPacket,
    );
    assert_fault(
        "A2 07 00 01 00 00 02 00 61",
        V5,
        DecodeError::NullCharacter,
        R::MalformedPacket,
    );
    // In a reason string property of a DISCONNECT.
    assert_fault(
        "E0 06 00 04 1F 00 01 00",
        V5,
        DecodeError::NullCharacter,
        R::MalformedPacket,
    );
}

#[test]
fn wildcard_in_topic_name_is_topic_name_invalid() {
    // [MQTT-3.3.2-2]
    assert_fault(
        "30 05 00 03 61 2F 2B",
        V5,
        DecodeError::WildcardInTopicName,
        R::TopicNameInvalid,
    );
    assert_fault(
        "30 05 00 03 61 2F 23",
        V3,
        DecodeError::WildcardInTopicName,
        R::TopicNameInvalid,
    );
    // Will Topic of a CONNECT [MQTT-3.1.3-11].
    let e = fault(
        "10 13 00 04 4D 51 54 54 04 06 00 3C 00 01 63 00 01 23 00 01 78",
        V3,
    );
    assert_eq!(e, DecodeError::WildcardInTopicName);
    assert_eq!(e.connect_reason_code(), ConnectReasonCode::TopicNameInvalid);
}

#[test]
fn empty_topic_name_is_a_protocol_error_unless_an_alias_stands_in() {
    // §3.3.2.1: zero length without a Topic Alias is a Protocol Error.
    assert_fault(
        "30 03 00 00 00",
        V5,
        DecodeError::EmptyTopicName,
        R::ProtocolError,
    );
    assert_fault(
        "30 02 00 00",
        V3,
        DecodeError::EmptyTopicName,
        R::ProtocolError,
    );
    assert!(decode(&hex("30 06 00 00 03 23 00 01"), V5).is_ok());
}

#[test]
fn invalid_topic_filters_are_malformed() {
    // [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.1-3]
    for bad in ["a/#/b", "a#", "a/b+", "+a"] {
        let n = bad.len();
        let hexed: String = bad.bytes().map(|b| format!("{b:02X} ")).collect();
        let wire = format!("82 {:02X} 00 01 00 {n:02X} {hexed} 00", 5 + n);
        assert_fault(
            &wire,
            V3,
            DecodeError::InvalidTopicFilter,
            R::MalformedPacket,
        );
        let wire = format!("A2 {:02X} 00 01 00 {n:02X} {hexed}", 4 + n);
        assert_fault(
            &wire,
            V3,
            DecodeError::InvalidTopicFilter,
            R::MalformedPacket,
        );
    }
    // An empty filter.
    assert_fault(
        "82 05 00 01 00 00 00",
        V5,
        DecodeError::EmptyTopicName,
        R::ProtocolError,
    );
}

#[test]
fn invalid_shared_subscriptions_are_protocol_errors() {
    // [MQTT-4.8.2-1], [MQTT-4.8.2-2]: "$share/g+/a" and "$share/g" (no filter).
    assert_fault(
        "82 11 00 01 00 00 0B 24 73 68 61 72 65 2F 67 2B 2F 61 00",
        V5,
        DecodeError::InvalidSharedSubscription,
        R::ProtocolError,
    );
    assert_fault(
        "82 0E 00 01 00 00 08 24 73 68 61 72 65 2F 67 00",
        V5,
        DecodeError::InvalidSharedSubscription,
        R::ProtocolError,
    );
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // [MQTT-3.8.3-4]: "$share/g/a" with No Local.
    assert_fault(
        "82 10 00 01 00 00 0A 24 73 68 61 72 65 2F 67 2F 61 04",
        V5,
        DecodeError::NoLocalOnSharedSubscription,
        R::ProtocolError,
    );
}

#[test]
fn qos_3_is_malformed_everywhere() {
    // PUBLISH [MQTT-3.3.1-4].
    assert_fault(
        "36 05 00 01 61 00 01",
        V5,
        DecodeError::InvalidQoS,
        R::MalformedPacket,
    );
    // Will QoS [MQTT-3.1.2-12].
    assert_fault(
        "10 13 00 04 4D 51 54 54 04 1C 00 3C 00 01 63 00 01 74 00 01 78",
        V3,
        DecodeError::InvalidQoS,
        R::MalformedPacket,
    );
    // Subscription option [MQTT-3-8.3-4].
    assert_fault(
        "82 06 00 01 00 01 61 03",
        V3,
        DecodeError::InvalidQoS,
        R::MalformedPacket,
    );
}

#[test]
fn will_qos_or_retain_without_will_flag_is_malformed() {
    // [MQTT-3.1.2-11] will QoS 1 without the flag; [MQTT-3.1.2-13] will retain.
    for flags in ["0A", "22"] {
        for (v, level) in [(V3, "04"), (V5, "05")] {
            let props = if v == V5 { "00" } else { "" };
            let wire = format!(
                "10 {:02X} 00 04 4D 51 54 54 {level} {flags} 00 3C {props} 00 01 63",
                if v == V5 { 14 } else { 13 }
            );
            assert_fault(
                &wire,
                v,
                DecodeError::WillFlagsWithoutWill,
                R::MalformedPacket,
            );
        }
    }
}

#[test]
fn packet_identifier_zero_is_a_protocol_error() {
    // [MQTT-2.2.1-3]
    for wire in [
        "32 05 00 01 61 00 00",
        "40 02 00 00",
        "50 02 00 00",
        "62 02 00 00",
        "70 02 00 00",
        "82 06 00 00 00 01 61 00",
        "90 03 00 00 00",
        "A2 05 00 00 00 01 61",
        "B0 02 00 00",
    ] {
        assert_fault(wire, V3, DecodeError::ZeroPacketId, R::ProtocolError);
    }
}

#[test]
fn subscribe_and_unsubscribe_without_filters_are_protocol_errors() {
    // [MQTT-3.8.3-2], [MQTT-3.10.3-2]
    assert_fault(
        "82 02 00 01",
        V3,
        DecodeError::NoTopicFilters,
        R::ProtocolError,
    );
    assert_fault(
        "82 03 00 01 00",
        V5,
        DecodeError::NoTopicFilters,
        R::ProtocolError,
    );
    assert_fault(
        "A2 02 00 01",
        V3,
        DecodeError::NoTopicFilters,
        R::ProtocolError,
    );
    assert_fault(
        "A2 03 00 01 00",
        V5,
        DecodeError::NoTopicFilters,
        R::ProtocolError,
    );
}

#[test]
fn unsupported_protocol_gets_the_connack_each_version_asks_for() {
    // 3.1.1 [MQTT-3.1.2-2]: CONNACK 0x01; 5.0 §3.1.2.2: CONNACK 0x84.
    for wire in [
        "10 0C 00 04 4D 51 54 54 06 02 00 3C 00 00", // level 6
        "10 0C 00 04 4D 51 54 54 03 02 00 3C 00 00", // level 3
        "10 0E 00 06 4D 51 49 73 64 70 03 02 00 3C 00 00", // MQTT 3.1 "MQIsdp"
        "10 0C 00 04 4D 51 54 58 04 02 00 3C 00 00", // "MQTX"
    ] {
        let e = fault(wire, V5);
        assert!(
            matches!(e, DecodeError::UnsupportedProtocol { .. }),
            "{wire}: {e:?}"
        );
        assert_eq!(
            e.connect_reason_code(),
            ConnectReasonCode::UnsupportedProtocolVersion
        );
        assert_eq!(
            ConnectReturnCode::from(e.connect_reason_code()).code(),
            0x01
        );
    }
    assert_eq!(
        fault("10 0C 00 04 4D 51 54 54 06 02 00 3C 00 00", V3),
        DecodeError::UnsupportedProtocol {
            name_ok: true,
            level: 6
        }
    );
}

#[test]
fn connect_reserved_flag_is_malformed() {
    // [MQTT-3.1.2-3]
    assert_fault(
        "10 0C 00 04 4D 51 54 54 04 03 00 3C 00 00",
        V3,
        DecodeError::ConnectReservedFlag,
        R::MalformedPacket,
    );
}

#[test]
fn v311_password_without_user_name_is_malformed_but_fine_in_v5() {
    // 3.1.1 [MQTT-3.1.2-22]; 5.0 allows a password alone (§3.1.2.9).
    assert_fault(
        "10 10 00 04 4D 51 54 54 04 42 00 3C 00 00 00 02 70 77",
        V3,
        DecodeError::PasswordWithoutUsername,
        R::MalformedPacket,
    );
    assert!(
        decode(
            &hex("10 11 00 04 4D 51 54 54 05 42 00 3C 00 00 00 00 02 70 77"),
            V5
        )
        .is_ok()
    );
}

#[test]
fn dup_on_qos0_is_malformed() {
    // [MQTT-3.3.1-2]
    assert_fault(
        "38 03 00 01 61",
        V3,
        DecodeError::DupOnQoS0,
        R::MalformedPacket,
    );
}

#[test]
fn property_not_allowed_in_packet_is_malformed() {
    // §2.2.2.2: Topic Alias (0x23) in a SUBSCRIBE.
    assert_fault(
        "82 09 00 01 03 23 00 01 00 01 61 00",
        V5,
        DecodeError::PropertyNotAllowed {
            id: 0x23,
            packet_type: PacketType::Subscribe,
        },
        R::MalformedPacket,
    );
    // Session Expiry (0x11) in a PUBLISH.
    assert_fault(
        "30 09 00 01 61 05 11 00 00 00 01",
        V5,
        DecodeError::PropertyNotAllowed {
            id: 0x11,
            packet_type: PacketType::Publish,
        },
        R::MalformedPacket,
    );
}

#[test]
fn unknown_property_is_malformed() {
    assert_fault(
        "E0 03 00 01 7F",
        V5,
        DecodeError::UnknownProperty(0x7F),
        R::MalformedPacket,
    );
    assert_fault(
        "E0 04 00 02 80 01",
        V5,
        DecodeError::UnknownProperty(0x80),
        R::MalformedPacket,
    );
}

#[test]
fn repeated_single_property_is_a_protocol_error() {
    // Message Expiry Interval twice in a PUBLISH.
    assert_fault(
        "30 0E 00 01 61 0A 02 00 00 00 01 02 00 00 00 02",
        V5,
        DecodeError::DuplicateProperty(0x02),
        R::ProtocolError,
    );
    // Subscription Identifier twice in a SUBSCRIBE (§3.8.2.1.2).
    assert_fault(
        "82 0A 00 01 04 0B 01 0B 02 00 01 61 00",
        V5,
        DecodeError::DuplicateProperty(0x0B),
        R::ProtocolError,
    );
    // ...but User Property and PUBLISH's Subscription Identifier may repeat.
    assert!(decode(&hex("30 08 00 01 61 04 0B 01 0B 02"), V5).is_ok());
}

#[test]
fn out_of_range_property_values_are_protocol_errors() {
    let cases = [
        // Receive Maximum 0 (§3.1.2.11.3) in CONNECT.
        (
            "10 10 00 04 4D 51 54 54 05 02 00 3C 03 21 00 00 00 00",
            0x21,
        ),
        // Maximum Packet Size 0 (§3.1.2.11.4).
        (
            "10 12 00 04 4D 51 54 54 05 02 00 3C 05 27 00 00 00 00 00 00",
            0x27,
        ),
        // Request Problem Information 2 (§3.1.2.11.7).
        ("10 0F 00 04 4D 51 54 54 05 02 00 3C 02 17 02 00 00", 0x17),
        // Topic Alias 0 in PUBLISH [MQTT-3.3.2-8].
        ("30 07 00 01 61 03 23 00 00", 0x23),
        // Subscription Identifier 0 (§3.8.2.1.2).
        ("82 08 00 01 02 0B 00 00 01 61 00", 0x0B),
        // Payload Format Indicator 2.
        ("30 06 00 01 61 02 01 02", 0x01),
        // Maximum QoS 2 in CONNACK (§3.2.2.3.4).
        ("20 05 00 00 02 24 02", 0x24),
    ];
    for (wire, id) in cases {
        let v = V5;
        assert_fault(
            wire,
            v,
            DecodeError::InvalidPropertyValue(id),
            R::ProtocolError,
        );
    }
}

#[test]
fn authentication_data_without_method_is_a_protocol_error() {
    // §3.1.2.11.10
    assert_fault(
        "10 11 00 04 4D 51 54 54 05 02 00 3C 04 16 00 01 78 00 00",
        V5,
        DecodeError::AuthDataWithoutMethod,
        R::ProtocolError,
    );
    assert_fault(
        "F0 06 18 04 16 00 01 78",
        V5,
        DecodeError::AuthDataWithoutMethod,
        R::ProtocolError,
    );
}

#[test]
fn subscription_option_reserved_bits_are_malformed() {
    // 3.1.1 [MQTT-3-8.3-4]: bits 2-7 reserved; 5.0 [MQTT-3.8.3-5]: bits 6-7.
    assert_fault(
        "82 06 00 01 00 01 61 04",
        V3,
        DecodeError::InvalidSubscriptionOptions,
        R::MalformedPacket,
    );
    assert_fault(
        "82 07 00 01 00 00 01 61 40",
        V5,
        DecodeError::InvalidSubscriptionOptions,
        R::MalformedPacket,
    );
    // Retain Handling 3 (§3.8.3.1) is a Protocol Error.
    assert_fault(
        "82 07 00 01 00 00 01 61 30",
        V5,
        DecodeError::InvalidRetainHandling,
        R::ProtocolError,
    );
}

#[test]
fn reason_code_foreign_to_the_packet_is_a_protocol_error() {
    assert_fault(
        "40 03 00 01 04",
        V5,
        DecodeError::InvalidReasonCode {
            packet_type: PacketType::PubAck,
            code: 0x04,
        },
        R::ProtocolError,
    );
    assert_fault(
        "E0 01 03",
        V5,
        DecodeError::InvalidReasonCode {
            packet_type: PacketType::Disconnect,
            code: 0x03,
        },
        R::ProtocolError,
    );
    // 3.1.1 SUBACK knows only 0, 1, 2 and 0x80.
    assert_fault(
        "90 03 00 01 87",
        V3,
        DecodeError::InvalidReasonCode {
            packet_type: PacketType::SubAck,
            code: 0x87,
        },
        R::ProtocolError,
    );
}

#[test]
fn fields_running_past_the_frame_and_trailing_bytes_are_malformed() {
    // Topic length 5 in a 4-byte body.
    assert_fault(
        "30 04 00 05 61 62",
        V5,
        DecodeError::Truncated,
        R::MalformedPacket,
    );
    // Property length past the end.
    assert_fault(
        "E0 02 00 09",
        V5,
        DecodeError::Truncated,
        R::MalformedPacket,
    );
    // PINGREQ with a body; 3.1.1 PUBACK with a reason code.
    assert_fault(
        "C0 01 00",
        V5,
        DecodeError::TrailingBytes,
        R::MalformedPacket,
    );
    assert_fault(
        "40 03 00 01 00",
        V3,
        DecodeError::TrailingBytes,
        R::MalformedPacket,
    );
    // CONNACK reserved acknowledge flags [MQTT-3.2.2-1].
    assert_fault(
        "20 02 02 00",
        V3,
        DecodeError::InvalidConnAckFlags,
        R::MalformedPacket,
    );
}

#[test]
fn a_packet_before_connect_is_a_protocol_error() {
    let input = Bytes::from_static(&[0xC0, 0x00]);
    let e = decode_packet(&input, None, MAX).unwrap_err();
    assert_eq!(e, DecodeError::VersionUnknown(PacketType::PingReq));
    assert_eq!(e.reason_code(), R::ProtocolError);
}

#[test]
fn oversized_announcement_is_refused_from_the_header_alone() {
    // A peer announces 256 MB and sends five bytes: refused at once with
    // 0x95, and nothing near the announced size is allocated.
    let mut d = Decoder::new(1024);
    d.feed(&hex("30 FF FF FF 7F"));
    let e = d.decode().unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1024
        }
    );
    assert_eq!(e.reason_code(), R::PacketTooLarge);
    assert!(d.buffer_mut().capacity() < 1024);
    // The limit counts the fixed header: a 1024-byte frame passes, 1025 does not.
    let mut d = Decoder::new(1024);
    d.feed(&hex("30 FD 07"));
    assert_eq!(d.decode(), Ok(None));
    d.feed(&hex("30 FE 07"));
    let mut d = Decoder::new(1024);
    d.feed(&hex("30 FE 07"));
    assert_eq!(
        d.decode(),
        Err(DecodeError::PacketTooLarge {
            size: 1025,
            max: 1024
        })
    );
}

#[test]
fn connect_faults_map_to_connack_codes() {
    assert_eq!(
        DecodeError::InvalidUtf8.connect_reason_code(),
        ConnectReasonCode::MalformedPacket
    );
    assert_eq!(
        DecodeError::DuplicateProperty(0x11).connect_reason_code(),
        ConnectReasonCode::ProtocolError
    );
    assert_eq!(
        DecodeError::PacketTooLarge { size: 2, max: 1 }.connect_reason_code(),
        ConnectReasonCode::PacketTooLarge
    );
}

#[test]
fn a_released_decoder_no_longer_pins_the_buffer_of_its_last_frame() {
    // A frame that ends exactly where the received bytes end leaves an empty
    // buffer sharing the frame's allocation; releasing must let go of it so
    // that an idle connection keeps nothing of what it last sent.
    let mut p = Publish::new(TopicName::from_static("a/b"), vec![7u8; 4096]);
    p.qos = QoS::AtMostOnce;
    let wire = Packet::Publish(p).to_vec(ProtocolVersion::V5).unwrap();
    let mut decoder = Decoder::new(1 << 20).with_version(ProtocolVersion::V5);
    decoder.feed(&wire);
    let Some(Packet::Publish(got)) = decoder.decode().unwrap() else {
        panic!("a PUBLISH");
    };
    assert!(decoder.decode().unwrap().is_none());
    // The topic shares it too: keep the payload alone.
    let payload = got.payload.clone();
    drop(got);
    assert!(!payload.is_unique(), "shared with the receive buffer");
    decoder.release_if_empty();
    assert!(payload.is_unique(), "the decoder let go of it");
}
