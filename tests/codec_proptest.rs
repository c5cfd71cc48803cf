//! Property tests of the codec: every valid packet encodes and decodes to
//! itself whatever split its bytes arrive in; arbitrary and mutated bytes
//! never panic and never make the decoder claim more bytes than it was given.

mod common;

use std::num::{NonZeroU16, NonZeroU32};

use common::{MAX, V3, V5};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;
use testament::codec::*;

fn mqtt_str() -> impl Strategy<Value = MqttString> {
    "[a-zA-Z0-9 é€😀/$+#_-]{0,12}".prop_map(|s| MqttString::try_from(s).unwrap())
}

fn topic_name() -> impl Strategy<Value = TopicName> {
    "[a-zA-Z0-9/é€ _$-]{1,16}".prop_map(|s| TopicName::try_from(s).unwrap())
}

fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    let level = prop_oneof!["[a-z0-9é$]{0,4}", Just("+".to_string())];
    (vec(level, 1..4), any::<bool>(), of("[a-z0-9]{1,4}")).prop_filter_map(
        "empty filter",
        |(levels, hash, share)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            if let Some(group) = share {
                f = format!("$share/{group}/{f}");
            }
            TopicFilter::try_from(f).ok()
        },
    )
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> {
    vec(
        (mqtt_str(), mqtt_str()).prop_map(|(key, value)| UserProperty { key, value }),
        0..3,
    )
}

fn nz16() -> impl Strategy<Value = Option<NonZeroU16>> {
    of(1..=u16::MAX).prop_map(|v| v.and_then(NonZeroU16::new))
}

fn nz32() -> impl Strategy<Value = Option<NonZeroU32>> {
    of(1..=u32::MAX).prop_map(|v| v.and_then(NonZeroU32::new))
}

fn payload_format() -> impl Strategy<Value = Option<PayloadFormat>> {
    of(prop_oneof![
        Just(PayloadFormat::Unspecified),
        Just(PayloadFormat::Utf8)
    ])
}

fn sub_id() -> impl Strategy<Value = SubscriptionId> {
    (1..=VARINT_MAX).prop_map(|v| SubscriptionId::new(v).unwrap())
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pid() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|v| PacketId::new(v).unwrap())
}

/// Authentication Data only with an Authentication Method (§3.1.2.11.10).
fn auth_pair() -> impl Strategy<Value = (Option<MqttString>, Option<Bytes>)> {
    (of(mqtt_str()), of(binary())).prop_map(|(m, d)| match m {
        Some(m) => (Some(m), d),
        None => (None, None),
    })
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        of(any::<u32>()),
        nz16(),
        nz32(),
        of(any::<u16>()),
        of(any::<bool>()),
        of(any::<bool>()),
        auth_pair(),
        user_properties(),
    )
        .prop_map(
            |(se, rm, mps, tam, rri, rpi, (am, ad), up)| ConnectProperties {
                session_expiry_interval: se,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                authentication_method: am,
                authentication_data: ad,
                user_properties: up.into(),
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        of(any::<u32>()),
        payload_format(),
        of(any::<u32>()),
        of(mqtt_str()),
        of(topic_name()),
        of(binary()),
        user_properties(),
    )
        .prop_map(|(wd, pf, me, ct, rt, cd, up)| WillProperties {
            will_delay_interval: wd,
            payload_format_indicator: pf,
            message_expiry_interval: me,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up.into(),
        })
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let a = (
        of(any::<u32>()),
        nz16(),
        of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        of(any::<bool>()),
        nz32(),
        of(mqtt_str()),
        of(any::<u16>()),
        of(mqtt_str()),
    );
    let b = (
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<u16>()),
        of(mqtt_str()),
        of(mqtt_str()),
        of(mqtt_str()),
        of(binary()),
        user_properties(),
    );
    (a, b).prop_map(
        |((se, rm, mq, ra, mps, aci, tam, rs), (wsa, sia, ssa, ska, ri, sr, am, ad, up))| {
            ConnAckProperties {
                session_expiry_interval: se,
                receive_maximum: rm,
                maximum_qos: mq,
                retain_available: ra,
                maximum_packet_size: mps,
                assigned_client_identifier: aci,
                topic_alias_maximum: tam,
                reason_string: rs,
                wildcard_subscription_available: wsa,
                subscription_identifiers_available: sia,
                shared_subscription_available: ssa,
                server_keep_alive: ska,
                response_information: ri,
                server_reference: sr,
                authentication_method: am,
                authentication_data: ad,
                user_properties: up.into(),
            }
        },
    )
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        payload_format(),
        of(any::<u32>()),
        nz16(),
        of(topic_name()),
        of(binary()),
        vec(sub_id(), 0..3),
        of(mqtt_str()),
        user_properties(),
    )
        .prop_map(|(pf, me, ta, rt, cd, si, ct, up)| PublishProperties {
            payload_format_indicator: pf,
            message_expiry_interval: me,
            topic_alias: ta,
            extras: PublishExtras {
                response_topic: rt,
                correlation_data: cd,
                subscription_identifiers: si.into(),
                content_type: ct,
                user_properties: up.into(),
            }
            .into(),
        })
}

fn ack_properties(v: ProtocolVersion) -> BoxedStrategy<AckProperties> {
    if v == V3 {
        return Just(AckProperties::default()).boxed();
    }
    (of(mqtt_str()), user_properties())
        .prop_map(|(rs, up)| AckProperties {
            reason_string: rs,
            user_properties: up.into(),
        })
        .boxed()
}

fn v5_only<T: Default + Clone + std::fmt::Debug + 'static>(
    v: ProtocolVersion,
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if v == V5 {
        s.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

fn v5_code<T: Clone + std::fmt::Debug + 'static>(
    v: ProtocolVersion,
    all: &'static [T],
    v311: T,
) -> BoxedStrategy<T> {
    if v == V5 {
        select(all).boxed()
    } else {
        Just(v311).boxed()
    }
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        v5_only(v, will_properties()),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties: properties.into(),
        });
    (
        any::<bool>(),
        any::<u16>(),
        v5_only(v, connect_properties()),
        mqtt_str(),
        of(will),
        of(mqtt_str()),
        of(binary()),
    )
        .prop_map(
            move |(clean_start, keep_alive, properties, client_id, will, username, password)| {
                // 3.1.1 has no password without a user name [MQTT-3.1.2-22].
                let password = if v == V3 && username.is_none() {
                    None
                } else {
                    password
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    properties: properties.into(),
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if v == V5 {
        select(ConnectReasonCode::ALL).boxed()
    } else {
        select(ConnectReturnCode::ALL)
            .prop_map(ConnectReasonCode::from)
            .boxed()
    };
    (any::<bool>(), code, v5_only(v, connack_properties())).prop_map(
        |(session_present, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties: properties.into(),
            })
        },
    )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        pid(),
        v5_only(v, publish_properties()),
        binary(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, drop_topic, id, properties, payload)| {
                let qos0 = qos == QoS::AtMostOnce;
                // Only a 5.0 PUBLISH with a Topic Alias may leave the name out.
                let topic = if drop_topic && properties.topic_alias.is_some() {
                    None
                } else {
                    Some(topic)
                };
                Packet::Publish(Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: (!qos0).then_some(id),
                    properties,
                    payload,
                })
            },
        )
}

fn acks(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let puback = || {
        (
            pid(),
            v5_code(v, PubAckReasonCode::ALL, PubAckReasonCode::Success),
            ack_properties(v),
        )
    };
    let pubrel = || {
        (
            pid(),
            v5_code(v, PubRelReasonCode::ALL, PubRelReasonCode::Success),
            ack_properties(v),
        )
    };
    prop_oneof![
        puback().prop_map(
            |(packet_id, reason_code, properties)| Packet::PubAck(PubAck {
                packet_id,
                reason_code,
                properties: properties.into()
            })
        ),
        puback().prop_map(
            |(packet_id, reason_code, properties)| Packet::PubRec(PubRec {
                packet_id,
                reason_code,
                properties: properties.into()
            })
        ),
        pubrel().prop_map(
            |(packet_id, reason_code, properties)| Packet::PubRel(PubRel {
                packet_id,
                reason_code,
                properties: properties.into()
            })
        ),
        pubrel().prop_map(
            |(packet_id, reason_code, properties)| Packet::PubComp(PubComp {
                packet_id,
                reason_code,
                properties: properties.into()
            })
        ),
    ]
}

fn subscriptions(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let options = (
        qos(),
        any::<bool>(),
        any::<bool>(),
        select(
            &[
                RetainHandling::SendAtSubscribe,
                RetainHandling::SendAtSubscribeIfNew,
                RetainHandling::DoNotSend,
            ][..],
        ),
    );
    let subscription = (topic_filter(), options).prop_map(move |(filter, (qos, nl, rap, rh))| {
        let options = if v == V5 {
            SubscriptionOptions {
                qos,
                // [MQTT-3.8.3-4]: no No Local on a shared subscription.
                no_local: nl && filter.shared().is_none(),
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions {
                qos,
                ..Default::default()
            }
        };
        Subscription { filter, options }
    });
    let subscribe_props =
        (of(sub_id()), user_properties()).prop_map(|(id, up)| SubscribeProperties {
            subscription_identifier: id,
            user_properties: up.into(),
        });
    let suback_codes = if v == V5 {
        vec(select(SubAckReasonCode::ALL), 1..4).boxed()
    } else {
        vec(
            select(
                &[
                    SubAckReasonCode::GrantedQoS0,
                    SubAckReasonCode::GrantedQoS1,
                    SubAckReasonCode::GrantedQoS2,
                    SubAckReasonCode::UnspecifiedError,
                ][..],
            ),
            1..4,
        )
        .boxed()
    };
    let unsuback_codes = if v == V5 {
        vec(select(UnsubAckReasonCode::ALL), 1..4).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    let unsub_props = user_properties().prop_map(|up| UnsubscribeProperties {
        user_properties: up.into(),
    });
    prop_oneof![
        (pid(), v5_only(v, subscribe_props), vec(subscription, 1..4)).prop_map(
            |(packet_id, properties, subscriptions)| Packet::Subscribe(Subscribe {
                packet_id,
                properties: properties.into(),
                subscriptions
            })
        ),
        (pid(), ack_properties(v), suback_codes).prop_map(
            |(packet_id, properties, reason_codes)| {
                Packet::SubAck(SubAck {
                    packet_id,
                    properties: properties.into(),
                    reason_codes,
                })
            }
        ),
        (pid(), v5_only(v, unsub_props), vec(topic_filter(), 1..4)).prop_map(
            |(packet_id, properties, filters)| Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties: properties.into(),
                filters
            })
        ),
        (pid(), ack_properties(v), unsuback_codes).prop_map(
            |(packet_id, properties, reason_codes)| {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    properties: properties.into(),
                    reason_codes,
                })
            }
        ),
    ]
}

fn session_end(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let disconnect_props = (
        of(any::<u32>()),
        of(mqtt_str()),
        of(mqtt_str()),
        user_properties(),
    )
        .prop_map(|(se, rs, sr, up)| DisconnectProperties {
            session_expiry_interval: se,
            reason_string: rs,
            server_reference: sr,
            user_properties: up.into(),
        });
    let disconnect = (
        v5_code(
            v,
            DisconnectReasonCode::ALL,
            DisconnectReasonCode::NormalDisconnection,
        ),
        v5_only(v, disconnect_props),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties: properties.into(),
            })
        });
    if v == V3 {
        return prop_oneof![Just(Packet::PingReq), Just(Packet::PingResp), disconnect].boxed();
    }
    let auth_props =
        (auth_pair(), of(mqtt_str()), user_properties()).prop_map(|((am, ad), rs, up)| {
            AuthProperties {
                authentication_method: am,
                authentication_data: ad,
                reason_string: rs,
                user_properties: up.into(),
            }
        });
    let auth = (select(AuthReasonCode::ALL), auth_props).prop_map(|(reason_code, properties)| {
        Packet::Auth(Auth {
            reason_code,
            properties: properties.into(),
        })
    });
    prop_oneof![
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect,
        auth
    ]
    .boxed()
}

fn packet(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect(v),
        connack(v),
        publish(v),
        acks(v),
        subscriptions(v),
        session_end(v)
    ]
}

fn versioned_stream() -> impl Strategy<Value = (ProtocolVersion, Vec<Packet>)> {
    prop_oneof![Just(V3), Just(V5)].prop_flat_map(|v| (Just(v), vec(packet(v), 1..6)))
}

fn encode_all(v: ProtocolVersion, packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        let len = p.encoded_len(v).unwrap();
        let before = out.len();
        assert_eq!(p.encode(v, &mut out).unwrap(), len);
        assert_eq!(out.len() - before, len, "encoded_len of {p:?}");
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_packet_survives_any_split(
        (v, packets) in versioned_stream(),
        splits in vec(1usize..40, 1..64),
    ) {
        let bytes = encode_all(v, &packets);
        let mut decoder = Decoder::new(MAX).with_version(v);
        let mut decoded = Vec::new();
        let mut rest = &bytes[..];
        let mut sizes = splits.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            decoder.feed(&rest[..n]);
            rest = &rest[n..];
            while let Some(p) = decoder.decode().unwrap() {
                decoded.push(p);
            }
        }
        prop_assert_eq!(decoder.buffered(), 0);
        prop_assert_eq!(decoded, packets);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..512)) {
        testament::fuzzing::decode(&data);
        testament::fuzzing::roundtrip(&data);
    }

    #[test]
    fn mutated_packets_never_panic(
        (v, packets) in versioned_stream(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        seed in any::<u8>(),
    ) {
        let mut bytes = encode_all(v, &packets);
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let mut data = vec![seed];
        data.extend_from_slice(&bytes);
        testament::fuzzing::decode(&data);
        testament::fuzzing::roundtrip(&bytes);
        let input = Bytes::from(bytes);
        if let Ok(Some((_, used))) = decode_packet(&input, Some(v), MAX) {
            prop_assert!(used <= input.len());
        }
    }
}
