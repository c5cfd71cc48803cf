//! Harness functions shared by the cargo-fuzz targets and the corpus replay
//! in `cargo test`, so that every input a fuzzer keeps becomes a regression
//! test. Not part of the public API.

use bytes::Bytes;

use crate::codec::{Decoder, Encode, Packet, ProtocolVersion, decode_packet};

mod hub_world;

const MAX: u32 = 1 << 20;

/// Drives the hub with a program read from `data` — several clients
/// connecting (3.1.1 and 5.0, wills with delays, session expiry, short and
/// long credentials, enhanced authentication), subscribing, publishing,
/// re-authenticating, crashing, disconnecting with 0x00 or 0x04, time steps,
/// key rotation, ACL changes, asynchronous answers in any order, shutdown,
/// and for a durable hub (flag 32) crashes and planned restarts that restore
/// what was committed (and flushed) and a store that fills up and has room
/// again — and checks after every action:
///
/// - no will is published without an Allow for it, none twice (across
///   restarts too), none after DISCONNECT 0x00, none before its delay
///   (unless its session ended or a shutdown sent it);
/// - nothing is routed without an Allow, nor through a subscription whose
///   grant carved its topic out (a deny rule beside a wildcard);
/// - no QoS 1/2 message is lost or duplicated (without DUP) for a persistent
///   session while its queue has room;
/// - no authentication is asked for a closed connection (a will is never
///   re-authenticated), no bytes go to a closed one;
/// - after `handle_timeout(now)` the next deadline is later than `now`;
/// - the same program gives the same actions twice.
pub fn hub(data: &[u8]) {
    let first = hub_world::run(data);
    let second = hub_world::run(data);
    assert_eq!(first, second, "the same inputs gave different actions");
}

/// The actions of one run of the [`hub`] harness (after its checks).
pub fn run_hub(data: &[u8]) -> Vec<crate::broker::Action> {
    hub_world::run(data)
}

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

/// Drives one session with a program read from `data` — bytes in any split,
/// valid packets, time steps, answers in any order, closes, takeover,
/// deliveries — and checks its invariants after every step:
///
/// - nothing is sent before the CONNACK decision but a refusing CONNACK or
///   an AUTH continuation;
/// - no publish is handed up without an Allow for it;
/// - at most one will, and none after the will was cancelled by DISCONNECT 0x00;
/// - after `handle_timeout(now)` the next deadline is later than `now`;
/// - the same program gives the same actions twice.
pub fn session(data: &[u8]) {
    let first = run_session(data);
    let second = run_session(data);
    assert_eq!(first, second, "the same inputs gave different actions");
}

/// The actions of one run of the [`session`] harness (after its checks).
pub fn run_session(data: &[u8]) -> Vec<crate::session::Action> {
    use crate::auth::{
        AuditRecord, AuthMethod, DecidedBy, Decision, Effect, Identity, WillOutcome,
    };
    use crate::codec::{
        Bytes, Connect, Disconnect, DisconnectReasonCode, LastWill, MqttString, PacketId, PubRel,
        Publish, QoS, Subscribe, Subscription, SubscriptionOptions, TopicFilter, TopicName,
    };
    use crate::session::{
        Action, AuthnOutcome, OutboundMessage, Session, SessionConfig, Ticket, TransportClosed,
    };
    use crate::time::{Now, Timestamp};
    use std::time::Duration;

    #[derive(Clone)]
    enum Req {
        Authn(Ticket),
        Authz(Ticket, String, crate::auth::Operation),
        Open(Ticket),
    }

    let version = if data.first().is_some_and(|b| b & 1 == 1) {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let mut now = Now::from_secs(1_800_000_000);
    let config = SessionConfig {
        receive_maximum: 4,
        max_pending_authorizations: 8,
        max_outbound_queue: 4,
        ..SessionConfig::default()
    };
    let mut s = Session::new(config, now).with_assigned_client_id("fuzz");
    let identity = Identity {
        principal: "p".into(),
        client_id: "c".into(),
        grants: crate::auth::Grants::none(),
        expires_at: Some(Timestamp::from_secs(1_800_000_100)),
        method: AuthMethod::Password,
        authenticated_at: now.wall,
        token_digest: None,
    };
    let decision = |allow: bool| Decision {
        effect: if allow { Effect::Allow } else { Effect::Deny },
        decided_by: DecidedBy::NoMatch,
        exclusions: Default::default(),
    };
    let packet = |choice: u8, id: u16| -> Vec<u8> {
        let pid = PacketId::new(id.max(1)).unwrap_or(PacketId::MIN);
        let p = match choice % 10 {
            0 => {
                let mut c = Connect::new(version, MqttString::from_static("c"));
                c.keep_alive = 5;
                c.will = Some(LastWill {
                    topic: TopicName::from_static("w"),
                    payload: Bytes::from_static(b"down"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: Default::default(),
                });
                c.username = Some(MqttString::from_static("p"));
                c.password = Some(Bytes::from_static(b"t"));
                Packet::Connect(Box::new(c))
            }
            1..=3 => {
                let mut p = Publish::new(TopicName::from_static("a/b"), Bytes::from_static(b"x"));
                p.qos = QoS::from_bits(choice % 3).unwrap_or_default();
                p.packet_id = (p.qos != QoS::AtMostOnce).then_some(pid);
                Packet::Publish(p)
            }
            4 => Packet::Subscribe(Subscribe {
                packet_id: pid,
                properties: Default::default(),
                subscriptions: vec![Subscription {
                    filter: TopicFilter::from_static("a/#"),
                    options: SubscriptionOptions::default(),
                }],
            }),
            5 => Packet::PingReq,
            6 => Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection)),
            7 => Packet::Disconnect(Disconnect::new(
                DisconnectReasonCode::DisconnectWithWillMessage,
            )),
            8 => Packet::PubRel(PubRel::new(pid)),
            _ => Packet::PubAck(crate::codec::PubAck::new(pid)),
        };
        p.to_vec(version).unwrap_or_default()
    };

    let mut out = Vec::new();
    let mut open: Vec<Req> = Vec::new();
    let mut allowed_publishes: Vec<String> = Vec::new();
    let mut connack_decided = false;
    let mut wills = 0;
    let mut will_cancelled = false;
    let mut client = Decoder::new(1 << 20).with_version(version);

    let mut i = 1;
    let next = |i: &mut usize| -> u8 {
        let b = data.get(*i).copied().unwrap_or(0);
        *i += 1;
        b
    };
    while i < data.len() {
        let op = next(&mut i);
        match op % 8 {
            0 => {
                let n = usize::from(next(&mut i) % 32);
                let start = i.min(data.len());
                let end = (start + n).min(data.len());
                s.handle_bytes(now, &data[start..end]);
                i = end;
            }
            1 => {
                let choice = next(&mut i);
                let id = u16::from(next(&mut i) % 6);
                let bytes = packet(choice, id);
                let split = usize::from(next(&mut i)).min(bytes.len());
                s.handle_bytes(now, &bytes[..split]);
                s.handle_bytes(now, &bytes[split..]);
            }
            2 => {
                now = now + Duration::from_millis(u64::from(next(&mut i)) * 250);
                s.handle_timeout(now);
                if let Some(t) = s.poll_timeout() {
                    assert!(
                        t > now.mono,
                        "deadline {t} not after handle_timeout({now:?})"
                    );
                }
            }
            3 | 7 => {
                let allow = next(&mut i) % 4 != 0;
                if !open.is_empty() {
                    let at = if op % 8 == 3 { 0 } else { open.len() - 1 };
                    let req = open.remove(at);
                    let ok = match req {
                        Req::Authn(t) => {
                            let outcome = if allow {
                                AuthnOutcome::Success(identity.clone())
                            } else {
                                AuthnOutcome::Failure(crate::auth::AuthnError::BadSignature.into())
                            };
                            s.handle_authentication(now, t, outcome).is_ok()
                        }
                        Req::Authz(t, topic, op) => {
                            let ok = s.handle_authorization(now, t, decision(allow)).is_ok();
                            if ok && allow && op == crate::auth::Operation::Publish {
                                allowed_publishes.push(topic);
                            }
                            ok
                        }
                        Req::Open(t) => {
                            let ok = s.handle_open(now, t, allow).is_ok();
                            connack_decided |= ok;
                            ok
                        }
                    };
                    // Requests of a closed session are simply forgotten.
                    let _ = ok;
                }
            }
            4 => s.handle_closed(
                now,
                if op & 8 == 0 {
                    TransportClosed::Error
                } else {
                    TransportClosed::PeerClosed
                },
            ),
            5 => {
                if op & 8 == 0 {
                    s.handle_takeover(now, op & 16 != 0);
                } else {
                    s.handle_shutdown(now);
                }
            }
            _ => {
                let _ = s.deliver(
                    now,
                    OutboundMessage {
                        topic: TopicName::from_static("d"),
                        payload: Bytes::from_static(b"m"),
                        qos: QoS::from_bits(next(&mut i) % 3).unwrap_or_default(),
                        retain: false,
                        properties: Default::default(),
                        seq: None,
                    },
                );
            }
        }
        while let Some(action) = s.poll_action() {
            match &action {
                Action::Authenticate { ticket, .. } => open.push(Req::Authn(*ticket)),
                Action::Authorize { ticket, query } => {
                    open.push(Req::Authz(*ticket, query.topic.to_string(), query.op));
                }
                Action::Open { ticket, .. } => open.push(Req::Open(*ticket)),
                Action::Send(bytes) => {
                    client.feed(bytes);
                    while let Ok(Some(p)) = client.decode() {
                        if !connack_decided {
                            assert!(
                                matches!(&p, Packet::ConnAck(a) if a.reason_code.is_error())
                                    || matches!(p, Packet::Auth(_)),
                                "{p:?} sent before the CONNACK decision"
                            );
                        }
                    }
                }
                Action::Publish(m) => {
                    let at = allowed_publishes
                        .iter()
                        .position(|t| *t == m.topic.as_str());
                    let at =
                        at.unwrap_or_else(|| panic!("publish to {} without an Allow", m.topic));
                    allowed_publishes.remove(at);
                }
                Action::DeliverWill(_) => {
                    wills += 1;
                    assert_eq!(wills, 1, "a second will");
                    assert!(!will_cancelled, "a will after DISCONNECT 0x00");
                }
                Action::Audit(AuditRecord::Will {
                    outcome: WillOutcome::Cancelled { .. },
                    ..
                }) => {
                    will_cancelled = true;
                }
                _ => {}
            }
            out.push(action);
        }
    }
    out
}
