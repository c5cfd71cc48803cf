//! Byte vectors for every packet type in both protocol versions, written from
//! the figures and field tables of the MQTT 3.1.1 and 5.0 specifications, and
//! checked in both directions: the bytes decode to the packet and the packet
//! encodes to the bytes.

mod common;

use common::*;
use testament::codec::*;

fn both_ways(wire: &str, packet: Packet, version: ProtocolVersion) {
    let bytes = hex(wire);
    assert_eq!(decode(&bytes, version).unwrap(), packet, "decode {wire}");
    assert_eq!(encode(&packet, version), bytes, "encode {packet:?}");
}

fn will(qos: QoS, properties: WillProperties) -> LastWill {
    LastWill {
        topic: topic("w/t"),
        payload: Bytes::from_static(b"bye"),
        qos,
        retain: false,
        properties: properties.into(),
    }
}

#[test]
fn connect_v311_figure_3_6() {
    // Flags 0xCE: user name, password, will QoS 1, will flag, clean session;
    // keep alive 10 (3.1.1 Figure 3.6 / 3.7).
    let mut c = Connect::new(V3, s("cid"));
    c.keep_alive = 10;
    c.will = Some(will(QoS::AtLeastOnce, WillProperties::default()));
    c.username = Some(s("user"));
    c.password = Some(Bytes::from_static(b"pw"));
    both_ways(
        "10 23  00 04 4D 51 54 54  04  CE  00 0A
         00 03 63 69 64  00 03 77 2F 74  00 03 62 79 65  00 04 75 73 65 72  00 02 70 77",
        Packet::Connect(Box::new(c)),
        V3,
    );
}

#[test]
fn connect_v5_with_properties_and_will_properties() {
    // 5.0 Figure 3-? variable header example: Session Expiry Interval 10.
    let mut c = Connect::new(V5, s("cid"));
    c.keep_alive = 10;
    c.properties.session_expiry_interval = Some(10);
    c.will = Some(will(
        QoS::AtLeastOnce,
        WillProperties {
            will_delay_interval: Some(5),
            ..Default::default()
        },
    ));
    c.username = Some(s("user"));
    c.password = Some(Bytes::from_static(b"pw"));
    both_ways(
        "10 2F  00 04 4D 51 54 54  05  CE  00 0A  05 11 00 00 00 0A
         00 03 63 69 64  05 18 00 00 00 05  00 03 77 2F 74  00 03 62 79 65
         00 04 75 73 65 72  00 02 70 77",
        Packet::Connect(Box::new(c)),
        V5,
    );
}

#[test]
fn connect_v5_minimal_and_enhanced_auth() {
    let c = Connect::new(V5, s(""));
    both_ways(
        "10 0D 00 04 4D 51 54 54 05 02 00 3C 00 00 00",
        Packet::Connect(Box::new(c)),
        V5,
    );
    let mut c = Connect::new(V5, s("c"));
    c.clean_start = false;
    c.keep_alive = 0;
    c.properties.authentication_method = Some(s("JWT"));
    c.properties.authentication_data = Some(Bytes::from_static(b"t"));
    both_ways(
        "10 18 00 04 4D 51 54 54 05 00 00 00  0A 15 00 03 4A 57 54 16 00 01 74  00 01 63",
        Packet::Connect(Box::new(c)),
        V5,
    );
}

#[test]
fn connack_both_versions() {
    both_ways(
        "20 02 01 00",
        Packet::ConnAck(ConnAck::new(true, ConnectReasonCode::Success)),
        V3,
    );
    both_ways(
        "20 02 00 05",
        Packet::ConnAck(ConnAck::new(false, ConnectReasonCode::NotAuthorized)),
        V3,
    );
    both_ways(
        "20 02 00 01",
        Packet::ConnAck(ConnAck::new(
            false,
            ConnectReasonCode::UnsupportedProtocolVersion,
        )),
        V3,
    );
    both_ways(
        "20 03 00 00 00",
        Packet::ConnAck(ConnAck::new(false, ConnectReasonCode::Success)),
        V5,
    );
    let mut refused = ConnAck::new(false, ConnectReasonCode::NotAuthorized);
    refused.properties.reason_string = Some(s("no"));
    both_ways(
        "20 08 00 87 05 1F 00 02 6E 6F",
        Packet::ConnAck(refused),
        V5,
    );
    let mut ok = ConnAck::new(true, ConnectReasonCode::Success);
    ok.properties.receive_maximum = std::num::NonZeroU16::new(10);
    ok.properties.maximum_qos = Some(QoS::AtLeastOnce);
    ok.properties.retain_available = Some(false);
    both_ways(
        "20 0A 01 00 07 21 00 0A 24 01 25 00",
        Packet::ConnAck(ok),
        V5,
    );
}

#[test]
fn connack_v5_code_goes_out_as_nearest_v311_return_code() {
    let quota = ConnAck::new(false, ConnectReasonCode::QuotaExceeded);
    assert_eq!(encode(&Packet::ConnAck(quota), V3), hex("20 02 00 03"));
}

fn publish(qos: QoS, id: Option<u16>) -> Publish {
    let mut p = Publish::new(topic("a/b"), Bytes::from_static(b"hi"));
    p.qos = qos;
    p.packet_id = id.map(pid);
    p
}

#[test]
fn publish_v311() {
    both_ways(
        "32 09 00 03 61 2F 62 00 0A 68 69",
        Packet::Publish(publish(QoS::AtLeastOnce, Some(10))),
        V3,
    );
    let mut retained = publish(QoS::AtMostOnce, None);
    retained.retain = true;
    both_ways("31 07 00 03 61 2F 62 68 69", Packet::Publish(retained), V3);
    let mut dup = publish(QoS::ExactlyOnce, Some(1));
    dup.dup = true;
    both_ways("3C 09 00 03 61 2F 62 00 01 68 69", Packet::Publish(dup), V3);
}

#[test]
fn publish_v5_with_properties_and_alias() {
    let mut p = publish(QoS::AtLeastOnce, Some(10));
    p.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
    p.properties.message_expiry_interval = Some(60);
    p.properties
        .user_properties
        .push(UserProperty::from_static("k", "v"));
    both_ways(
        "32 18 00 03 61 2F 62 00 0A 0E 01 01 02 00 00 00 3C 26 00 01 6B 00 01 76 68 69",
        Packet::Publish(p),
        V5,
    );
    // §3.3.2.3.4: a zero-length topic name with a Topic Alias.
    let mut aliased = Publish::new(topic("x"), Bytes::from_static(b"x"));
    aliased.topic = None;
    aliased.properties.topic_alias = std::num::NonZeroU16::new(5);
    both_ways("30 07 00 00 03 23 00 05 78", Packet::Publish(aliased), V5);
    both_ways(
        "30 06 00 03 61 2F 62 00",
        Packet::Publish(Publish::new(topic("a/b"), Bytes::new())),
        V5,
    );
}

#[test]
fn qos_acks_both_versions() {
    for v in [V3, V5] {
        both_ways("40 02 00 0A", Packet::PubAck(PubAck::new(pid(10))), v);
        both_ways("50 02 00 0A", Packet::PubRec(PubRec::new(pid(10))), v);
        both_ways("62 02 00 0A", Packet::PubRel(PubRel::new(pid(10))), v);
        both_ways("70 02 00 0A", Packet::PubComp(PubComp::new(pid(10))), v);
    }
    both_ways(
        "40 03 00 0A 10",
        Packet::PubAck(PubAck::with_reason(
            pid(10),
            PubAckReasonCode::NoMatchingSubscribers,
        )),
        V5,
    );
    let mut denied = PubAck::with_reason(pid(10), PubAckReasonCode::NotAuthorized);
    denied.properties.reason_string = Some(s("x"));
    both_ways("40 08 00 0A 87 04 1F 00 01 78", Packet::PubAck(denied), V5);
    both_ways(
        "50 03 00 0A 91",
        Packet::PubRec(PubRec::with_reason(
            pid(10),
            PubRecReasonCode::PacketIdentifierInUse,
        )),
        V5,
    );
    both_ways(
        "62 03 00 0A 92",
        Packet::PubRel(PubRel::with_reason(
            pid(10),
            PubRelReasonCode::PacketIdentifierNotFound,
        )),
        V5,
    );
    both_ways(
        "70 03 00 0A 92",
        Packet::PubComp(PubComp::with_reason(
            pid(10),
            PubCompReasonCode::PacketIdentifierNotFound,
        )),
        V5,
    );
}

#[test]
fn v5_ack_with_empty_property_block_decodes_as_the_short_form() {
    // §3.4.2.1: Property Length 0 may be sent explicitly.
    assert_eq!(
        decode(&hex("40 04 00 0A 00 00"), V5).unwrap(),
        Packet::PubAck(PubAck::new(pid(10)))
    );
}

fn sub(f: &'static str, qos: QoS) -> Subscription {
    Subscription {
        filter: filter(f),
        options: SubscriptionOptions {
            qos,
            ..Default::default()
        },
    }
}

#[test]
fn subscribe_and_suback() {
    // 3.1.1 Figure 3.22 and Figure 3.26.
    let s311 = Subscribe {
        packet_id: pid(10),
        properties: Default::default(),
        subscriptions: vec![sub("a/b", QoS::AtLeastOnce), sub("c/d", QoS::ExactlyOnce)],
    };
    both_ways(
        "82 0E 00 0A 00 03 61 2F 62 01 00 03 63 2F 64 02",
        Packet::Subscribe(s311),
        V3,
    );
    let ack = SubAck {
        packet_id: pid(10),
        properties: Default::default(),
        reason_codes: vec![
            SubAckReasonCode::GrantedQoS0,
            SubAckReasonCode::GrantedQoS2,
            SubAckReasonCode::UnspecifiedError,
        ],
    };
    both_ways("90 05 00 0A 00 02 80", Packet::SubAck(ack), V3);

    let s5 = Subscribe {
        packet_id: pid(10),
        properties: SubscribeProperties {
            subscription_identifier: SubscriptionId::new(5),
            ..Default::default()
        }
        .into(),
        subscriptions: vec![Subscription {
            filter: filter("a/b"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        }],
    };
    both_ways(
        "82 0B 00 0A 02 0B 05 00 03 61 2F 62 2D",
        Packet::Subscribe(s5),
        V5,
    );
    let ack5 = SubAck {
        packet_id: pid(10),
        properties: Default::default(),
        reason_codes: vec![
            SubAckReasonCode::GrantedQoS1,
            SubAckReasonCode::NotAuthorized,
            SubAckReasonCode::WildcardSubscriptionsNotSupported,
        ],
    };
    both_ways("90 06 00 0A 00 01 87 A2", Packet::SubAck(ack5), V5);
}

#[test]
fn v5_suback_failure_goes_out_as_0x80_in_v311() {
    let ack = SubAck {
        packet_id: pid(1),
        properties: Default::default(),
        reason_codes: vec![SubAckReasonCode::NotAuthorized],
    };
    assert_eq!(encode(&Packet::SubAck(ack), V3), hex("90 03 00 01 80"));
}

#[test]
fn unsubscribe_and_unsuback() {
    let u = Unsubscribe {
        packet_id: pid(10),
        properties: Default::default(),
        filters: vec![filter("a/b"), filter("c/d")],
    };
    both_ways(
        "A2 0C 00 0A 00 03 61 2F 62 00 03 63 2F 64",
        Packet::Unsubscribe(u),
        V3,
    );
    let u5 = Unsubscribe {
        packet_id: pid(10),
        properties: Default::default(),
        filters: vec![filter("a/b")],
    };
    both_ways("A2 08 00 0A 00 00 03 61 2F 62", Packet::Unsubscribe(u5), V5);
    let ack3 = UnsubAck {
        packet_id: pid(10),
        properties: Default::default(),
        reason_codes: vec![],
    };
    both_ways("B0 02 00 0A", Packet::UnsubAck(ack3), V3);
    let ack5 = UnsubAck {
        packet_id: pid(10),
        properties: Default::default(),
        reason_codes: vec![
            UnsubAckReasonCode::Success,
            UnsubAckReasonCode::NoSubscriptionExisted,
        ],
    };
    both_ways("B0 05 00 0A 00 00 11", Packet::UnsubAck(ack5), V5);
}

#[test]
fn ping_both_versions() {
    for v in [V3, V5] {
        both_ways("C0 00", Packet::PingReq, v);
        both_ways("D0 00", Packet::PingResp, v);
    }
}

#[test]
fn disconnect_both_versions() {
    let normal = Disconnect::new(DisconnectReasonCode::NormalDisconnection);
    both_ways("E0 00", Packet::Disconnect(normal.clone()), V3);
    both_ways("E0 00", Packet::Disconnect(normal), V5);
    both_ways(
        "E0 01 04",
        Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::DisconnectWithWillMessage,
        )),
        V5,
    );
    both_ways(
        "E0 01 8E",
        Packet::Disconnect(Disconnect::new(DisconnectReasonCode::SessionTakenOver)),
        V5,
    );
    let mut expiry = Disconnect::new(DisconnectReasonCode::NormalDisconnection);
    expiry.properties.session_expiry_interval = Some(0);
    both_ways("E0 07 00 05 11 00 00 00 00", Packet::Disconnect(expiry), V5);
}

#[test]
fn auth_v5() {
    both_ways(
        "F0 00",
        Packet::Auth(Auth::new(AuthReasonCode::Success)),
        V5,
    );
    let mut a = Auth::new(AuthReasonCode::ContinueAuthentication);
    a.properties.authentication_method = Some(s("JWT"));
    a.properties.authentication_data = Some(Bytes::from_static(&[1, 2]));
    both_ways(
        "F0 0D 18 0B 15 00 03 4A 57 54 16 00 02 01 02",
        Packet::Auth(a),
        V5,
    );
    both_ways(
        "F0 01 19",
        Packet::Auth(Auth::new(AuthReasonCode::ReAuthenticate)),
        V5,
    );
    assert_eq!(
        Packet::Auth(Auth::new(AuthReasonCode::Success)).to_vec(V3),
        Err(EncodeError::NotInVersion(PacketType::Auth))
    );
}

#[test]
fn user_property_order_is_kept() {
    // [MQTT-3.1.3-10]: order kept, duplicates allowed.
    let mut p = Publish::new(topic("t"), Bytes::new());
    for (k, v) in [("b", "1"), ("a", "2"), ("b", "3")] {
        p.properties.user_properties.push(UserProperty {
            key: MqttString::try_from(k).unwrap(),
            value: MqttString::try_from(v).unwrap(),
        });
    }
    let bytes = encode(&Packet::Publish(p.clone()), V5);
    let Packet::Publish(back) = decode(&bytes, V5).unwrap() else {
        panic!()
    };
    let order: Vec<_> = back
        .properties
        .user_properties
        .iter()
        .map(|u| (u.key, u.value))
        .collect();
    assert_eq!(order, [("b", "1"), ("a", "2"), ("b", "3")]);
}

#[test]
fn user_properties_between_other_properties_keep_their_order() {
    // Other properties may stand between User Properties on the wire; their
    // order among themselves is what counts, and the encoder writes them last.
    // Properties: UP (a,1), Content Type "x", UP (b,2), Message Expiry 5.
    let wire = "30 1D 00 01 74 17 26 00 01 61 00 01 31 03 00 01 78 26 00 01 62 00 01 32 02 00 00 00 05 68 69";
    let Packet::Publish(p) = decode(&hex(wire), V5).unwrap() else {
        panic!()
    };
    let pairs: Vec<_> = p
        .properties
        .user_properties
        .iter()
        .map(|u| (u.key, u.value))
        .collect();
    assert_eq!(pairs, [("a", "1"), ("b", "2")]);
    assert_eq!(p.properties.user_properties.len(), 2);
    assert_eq!(p.properties.content_type.as_deref(), Some("x"));
    assert_eq!(p.properties.message_expiry_interval, Some(5));
    assert_eq!(&p.payload[..], b"hi");
    let mut expected = Publish::new(topic("t"), Bytes::from_static(b"hi"));
    expected.properties.message_expiry_interval = Some(5);
    expected.properties.content_type = Some(MqttString::from_static("x"));
    expected
        .properties
        .user_properties
        .push(UserProperty::from_static("a", "1"));
    expected
        .properties
        .user_properties
        .push(UserProperty::from_static("b", "2"));
    assert_eq!(p, expected);
    assert_eq!(
        encode(&Packet::Publish(p), V5),
        hex(
            "30 1D 00 01 74 17 02 00 00 00 05 03 00 01 78 26 00 01 61 00 01 31 26 00 01 62 00 01 32 68 69"
        )
    );
}

#[test]
fn a_bad_string_in_a_user_property_is_named() {
    // Key with U+0000, then a value that is not UTF-8.
    let nul = "30 0E 00 01 74 09 26 00 02 61 00 00 02 31 31 68";
    assert_eq!(decode(&hex(nul), V5), Err(DecodeError::NullCharacter));
    let bad = "30 0E 00 01 74 09 26 00 02 61 62 00 02 C3 28 68";
    assert_eq!(decode(&hex(bad), V5), Err(DecodeError::InvalidUtf8));
}
