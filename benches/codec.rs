//! Codec throughput: decode and encode of 100k PUBLISH packets (64-byte
//! topic, 100-byte payload; QoS 0 and 1; 3.1.1, and 5.0 with a few
//! properties), side by side with a memcpy of the same bytes and with
//! rumqttc's codec, in one process.
//!
//! `cargo bench --bench codec` (BENCH_ROUNDS=n to change the rounds).

mod harness;

use std::hint::black_box;

use bytes::BytesMut;
use harness::{Case, measure, ratio, report, rounds, timed};
use testament::codec::{
    Decoder, Encode, MqttString, PacketId, PayloadFormat, ProtocolVersion, Publish, QoS, TopicName,
    UserProperty,
};

const PACKETS: usize = 100_000;
const MAX: u32 = 1 << 20;

struct Workload {
    name: &'static str,
    user_property: bool,
    version: ProtocolVersion,
    qos: QoS,
    packets: Vec<Publish>,
    stream: Vec<u8>,
}

fn topic(i: usize) -> String {
    // 64 bytes, several levels, varying so nothing is trivially cached.
    let t = format!(
        "fleet/region-{:02}/site-{:04}/server-{:06}/state/current/v",
        i % 7,
        i % 1000,
        i
    );
    format!("{t:x<64}")
}

fn workload(
    name: &'static str,
    version: ProtocolVersion,
    qos: QoS,
    user_property: bool,
) -> Workload {
    let packets: Vec<Publish> = (0..PACKETS)
        .map(|i| {
            let mut p = Publish::new(
                TopicName::try_from(topic(i)).unwrap(),
                vec![(i % 251) as u8; 100],
            );
            p.qos = qos;
            p.packet_id =
                (qos != QoS::AtMostOnce).then(|| PacketId::new(1 + (i % 65_535) as u16).unwrap());
            if version == ProtocolVersion::V5 {
                p.properties.payload_format_indicator = Some(PayloadFormat::Unspecified);
                p.properties.message_expiry_interval = Some(3600);
                if user_property {
                    p.properties.user_properties.push(UserProperty {
                        key: MqttString::from_static("trace"),
                        value: MqttString::try_from(format!("{i:08x}")).unwrap(),
                    });
                }
            }
            p
        })
        .collect();
    let mut stream = Vec::new();
    for p in &packets {
        p.encode(version, &mut stream).unwrap();
    }
    Workload {
        name,
        user_property,
        version,
        qos,
        packets,
        stream,
    }
}

fn memcpy_case(w: &Workload) -> Case<'_> {
    let mut dst = vec![0u8; w.stream.len()];
    Case::new("memcpy", PACKETS as u64, w.stream.len() as u64, move || {
        timed(|| {
            dst.copy_from_slice(black_box(&w.stream));
            black_box(&mut dst);
        })
    })
}

fn decode_cases(w: &Workload) -> Vec<Case<'_>> {
    let n = PACKETS as u64;
    let bytes = w.stream.len() as u64;
    let mut cases = vec![memcpy_case(w)];
    cases.push(Case::new("testament", n, bytes, move || {
        let mut d = Decoder::new(MAX).with_version(w.version);
        *d.buffer_mut() = BytesMut::from(&w.stream[..]);
        timed(|| {
            let mut count = 0;
            while let Some(p) = d.decode().expect("valid stream") {
                black_box(&p);
                count += 1;
            }
            assert_eq!(count, PACKETS);
        })
    }));
    match w.version {
        ProtocolVersion::V311 => cases.push(Case::new("rumqttc", n, bytes, move || {
            let mut buf = BytesMut::from(&w.stream[..]);
            timed(|| {
                let mut count = 0;
                while !buf.is_empty() {
                    let p = rumqttc::mqttbytes::v4::Packet::read(&mut buf, MAX as usize)
                        .expect("valid stream");
                    black_box(&p);
                    count += 1;
                }
                assert_eq!(count, PACKETS);
            })
        })),
        ProtocolVersion::V5 => cases.push(Case::new("rumqttc", n, bytes, move || {
            let mut buf = BytesMut::from(&w.stream[..]);
            timed(|| {
                let mut count = 0;
                while !buf.is_empty() {
                    let p = rumqttc::v5::mqttbytes::v5::Packet::read(&mut buf, Some(MAX))
                        .expect("valid stream");
                    black_box(&p);
                    count += 1;
                }
                assert_eq!(count, PACKETS);
            })
        })),
    }
    cases
}

fn rumqttc_qos(q: QoS) -> rumqttc::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

fn encode_cases(w: &Workload) -> Vec<Case<'_>> {
    let n = PACKETS as u64;
    let bytes = w.stream.len() as u64;
    let mut cases = vec![memcpy_case(w)];
    let mut out = BytesMut::with_capacity(w.stream.len());
    cases.push(Case::new("testament", n, bytes, move || {
        out.clear();
        timed(|| {
            for p in &w.packets {
                p.encode(w.version, &mut out).expect("encodable");
            }
            black_box(&out);
        })
    }));
    let mut out = BytesMut::with_capacity(w.stream.len());
    match w.version {
        ProtocolVersion::V311 => {
            let theirs: Vec<_> = w
                .packets
                .iter()
                .map(|p| {
                    let mut r = rumqttc::mqttbytes::v4::Publish::from_bytes(
                        p.topic.as_ref().unwrap().as_str(),
                        rumqttc_qos(p.qos),
                        p.payload.clone(),
                    );
                    r.pkid = p.packet_id.map_or(0, PacketId::get);
                    r
                })
                .collect();
            cases.push(Case::new("rumqttc", n, bytes, move || {
                out.clear();
                timed(|| {
                    for p in &theirs {
                        p.write(&mut out).expect("encodable");
                    }
                    black_box(&out);
                })
            }));
        }
        ProtocolVersion::V5 => {
            let theirs: Vec<_> = w
                .packets
                .iter()
                .map(|p| {
                    let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
                        payload_format_indicator: Some(0),
                        message_expiry_interval: Some(3600),
                        user_properties: p
                            .properties
                            .user_properties
                            .iter()
                            .map(|u| (u.key.to_string(), u.value.to_string()))
                            .collect(),
                        ..Default::default()
                    };
                    let mut r = rumqttc::v5::mqttbytes::v5::Publish::new(
                        p.topic.as_ref().unwrap().as_str(),
                        match p.qos {
                            QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                            QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                            QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                        },
                        p.payload.clone(),
                        Some(props),
                    );
                    r.pkid = p.packet_id.map_or(0, PacketId::get);
                    r
                })
                .collect();
            cases.push(Case::new("rumqttc", n, bytes, move || {
                out.clear();
                timed(|| {
                    for p in &theirs {
                        p.write(&mut out).expect("encodable");
                    }
                    black_box(&out);
                })
            }));
        }
    }
    cases
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: keep it quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { rounds(15) };
    let workloads = [
        workload("3.1.1 QoS 0", ProtocolVersion::V311, QoS::AtMostOnce, false),
        workload(
            "3.1.1 QoS 1",
            ProtocolVersion::V311,
            QoS::AtLeastOnce,
            false,
        ),
        workload(
            "5.0 QoS 0 + 2 properties",
            ProtocolVersion::V5,
            QoS::AtMostOnce,
            false,
        ),
        workload(
            "5.0 QoS 1 + 2 properties",
            ProtocolVersion::V5,
            QoS::AtLeastOnce,
            false,
        ),
        workload(
            "5.0 QoS 0 + 2 properties + user property",
            ProtocolVersion::V5,
            QoS::AtMostOnce,
            true,
        ),
        workload(
            "5.0 QoS 1 + 2 properties + user property",
            ProtocolVersion::V5,
            QoS::AtLeastOnce,
            true,
        ),
    ];
    println!(
        "# codec: {PACKETS} PUBLISH packets, 64-byte topic, 100-byte payload, median of {rounds} rounds"
    );
    let mut decode_rates = Vec::new();
    for w in &workloads {
        let frame = w.stream.len() / PACKETS;
        let results = measure(rounds, &mut decode_cases(w));
        report(
            &format!("decode {} ({frame} B/packet)", w.name),
            "packets",
            &results,
            &["memcpy", "rumqttc"],
        );
        decode_rates.push((
            w.version,
            w.user_property,
            w.qos,
            results
                .iter()
                .find(|m| m.name == "testament")
                .unwrap()
                .units_per_sec(),
        ));
        println!(
            "\ndecode testament / rumqttc: {:.2}×",
            ratio(&results, "testament", "rumqttc")
        );
        let results = measure(rounds, &mut encode_cases(w));
        report(
            &format!("encode {}", w.name),
            "packets",
            &results,
            &["memcpy", "rumqttc"],
        );
        println!(
            "\nencode testament / rumqttc: {:.2}×",
            ratio(&results, "testament", "rumqttc")
        );
    }
    // Goal: 5.0 decode with a few properties costs at most 1.5× our 3.1.1 decode.
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let rate = |version: ProtocolVersion, user: bool| {
            decode_rates
                .iter()
                .find(|r| r.0 == version && r.1 == user && r.2 == qos)
                .map(|r| r.3)
                .expect("workload measured")
        };
        let v3 = rate(ProtocolVersion::V311, false);
        println!(
            "\ndecode cost at {qos:?} relative to 3.1.1: 5.0 + 2 properties {:.2}×, + user property {:.2}×",
            v3 / rate(ProtocolVersion::V5, false),
            v3 / rate(ProtocolVersion::V5, true)
        );
    }
}
