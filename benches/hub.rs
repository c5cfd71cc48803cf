//! Hub throughput: messages delivered in-process for 1→1, 1→100 and 100→1
//! at QoS 0 and 1 with 100-byte payloads, the ACL answering every
//! authorization, against decoding the published stream alone in the same
//! run (goal: ≥ 1M QoS 0 deliveries/s on one core for 1→1).
//!
//! Subscribers acknowledge QoS 1 deliveries as a client would (the PUBACKs
//! are part of the measured work); publishers' acknowledgements are dropped.
//!
//! `cargo bench --bench hub` (BENCH_ROUNDS=n to change the rounds, ONLY=text
//! to run the groups whose title holds it, e.g. `ONLY="1→100 AtLeastOnce"`).

mod harness;

use std::hint::black_box;
use std::sync::Arc;

use harness::{Case, measure, ratio, report, rounds, settle, timed};
use testament::auth::{Acl, AuthMethod, Effect, FilterTemplate, Identity, Ops, Rule, Subject};
use testament::broker::{Action, Broker, BrokerConfig, ConnId};
use testament::codec::{
    Bytes, BytesMut, Connect, Decoder, Encode, MqttString, Packet, PacketId, ProtocolVersion,
    Publish, QoS, Subscribe, Subscription, SubscriptionOptions, TopicFilter, TopicName,
};
use testament::session::SessionConfig;
use testament::time::{Now, Timestamp};

const MESSAGES: usize = 20_000;
const V: ProtocolVersion = ProtocolVersion::V5;

fn publishes(count: usize, qos: QoS, offset: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        let topic = format!("bench/site-{:03}/server-{:06}/state", i % 100, i + offset);
        let mut p = Publish::new(TopicName::try_from(topic).unwrap(), vec![7u8; 100]);
        p.qos = qos;
        p.packet_id =
            (qos != QoS::AtMostOnce).then(|| PacketId::new(1 + (i % 60_000) as u16).unwrap());
        p.encode(V, &mut out).unwrap();
    }
    out
}

struct Setup {
    hub: Broker,
    now: Now,
    publishers: Vec<ConnId>,
    subscribers: Vec<ConnId>,
}

fn identity(name: &std::sync::Arc<str>, now: Timestamp) -> Identity {
    Identity {
        principal: (**name).into(),
        client_id: name.clone(),
        grants: testament::auth::Grants::none(),
        expires_at: None,
        method: AuthMethod::Password,
        authenticated_at: now,
        token_digest: None,
    }
}

fn setup(publishers: usize, subscribers: usize, qos: QoS) -> Setup {
    let now = Now::from_secs(1_800_000_000);
    let config = BrokerConfig {
        session: SessionConfig {
            receive_maximum: u16::MAX,
            max_pending_authorizations: 1 << 20,
            max_outbound_queue: 1 << 20,
            max_unsent_bytes: 1 << 30,
            audit_allowed_publishes: false,
            ..SessionConfig::default()
        },
        ..BrokerConfig::default()
    };
    let mut hub = Broker::new(config);
    hub.set_authorizer(Some(Arc::new(Acl::new(vec![Rule::new(
        Effect::Allow,
        Ops::ALL,
        Subject::Authenticated,
        FilterTemplate::new("bench/#").unwrap(),
    )]))));
    let mut connect = |name: String| {
        let conn = hub.open(now, None);
        let mut c = Connect::new(V, MqttString::try_from(name).unwrap());
        c.keep_alive = 0;
        c.username = Some(MqttString::from_static("u"));
        c.password = Some(Bytes::from_static(b"t"));
        hub.handle_bytes(now, conn, &Packet::Connect(Box::new(c)).to_vec(V).unwrap());
        settle(&mut hub, now, identity);
        conn
    };
    let publishers: Vec<ConnId> = (0..publishers)
        .map(|i| connect(format!("pub-{i}")))
        .collect();
    let subscribers: Vec<ConnId> = (0..subscribers)
        .map(|i| connect(format!("sub-{i}")))
        .collect();
    for s in &subscribers {
        let sub = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Default::default(),
            subscriptions: vec![Subscription {
                filter: TopicFilter::from_static("bench/#"),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
        };
        hub.handle_bytes(now, *s, &Packet::Subscribe(sub).to_vec(V).unwrap());
        settle(&mut hub, now, identity);
    }
    Setup {
        hub,
        now,
        publishers,
        subscribers,
    }
}

/// The PUBACKs a client sends for the QoS 1 PUBLISH packets in `bytes`: a
/// header walk, no full decode. Returns the PUBLISH packets seen.
fn acks_for(bytes: &[u8], out: &mut Vec<u8>) -> u64 {
    let mut publishes = 0;
    let mut at = 0;
    while at < bytes.len() {
        let first = bytes[at];
        let (mut len, mut shift, mut i) = (0usize, 0, at + 1);
        loop {
            let b = bytes[i];
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if first >> 4 == 3 {
            publishes += 1;
        }
        if first >> 4 == 3 && (first >> 1) & 3 == 1 {
            let topic_len = usize::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
            let id = &bytes[i + 2 + topic_len..i + 4 + topic_len];
            out.extend_from_slice(&[0x40, 0x02, id[0], id[1]]);
        }
        at = i + len;
    }
    publishes
}

/// Feeds each publisher its stream in 16 KiB reads, runs every action, and
/// has the subscribers acknowledge every QoS 1 delivery — those their
/// acknowledgements release from the window included, as a client would;
/// returns the deliveries counted.
fn run(s: &mut Setup, streams: &[Vec<u8>]) -> u64 {
    let subscribers: Vec<ConnId> = s.subscribers.clone();
    // Connection ids are slab ids tagged with a serial, not a count: a
    // subscriber's index is looked up.
    let by_id: std::collections::BTreeMap<ConnId, usize> = subscribers
        .iter()
        .enumerate()
        .map(|(k, c)| (*c, k))
        .collect();
    let index = |c: &ConnId| by_id.get(c).copied();
    let mut acks: Vec<Vec<u8>> = vec![Vec::new(); subscribers.len()];
    let mut sending = Vec::new();
    let mut delivered = 0u64;
    let mut cursors = vec![0usize; streams.len()];
    loop {
        let mut fed = false;
        for (i, (p, stream)) in s.publishers.iter().zip(streams).enumerate() {
            let at = cursors[i];
            if at >= stream.len() {
                continue;
            }
            let end = (at + 16 * 1024).min(stream.len());
            s.hub.handle_bytes(s.now, *p, &stream[at..end]);
            cursors[i] = end;
            fed = true;
            let mut drain = |hub: &mut Broker, acks: &mut Vec<Vec<u8>>| {
                while let Some(a) = hub.poll_action() {
                    if let Action::Send { conn, bytes } = &a
                        && let Some(k) = index(conn)
                    {
                        delivered += acks_for(bytes, &mut acks[k]);
                    }
                    black_box(a);
                }
            };
            drain(&mut s.hub, &mut acks);
            // Until no acknowledgement releases anything more.
            while acks.iter().any(|a| !a.is_empty()) {
                for (k, sub) in subscribers.iter().enumerate() {
                    if acks[k].is_empty() {
                        continue;
                    }
                    std::mem::swap(&mut sending, &mut acks[k]);
                    s.hub.handle_bytes(s.now, *sub, &sending);
                    sending.clear();
                    drain(&mut s.hub, &mut acks);
                }
            }
        }
        if !fed {
            return delivered;
        }
    }
}

fn cases(publishers: usize, subscribers: usize, qos: QoS) -> Vec<Case<'static>> {
    let per = MESSAGES / publishers;
    let streams: Vec<Vec<u8>> = (0..publishers)
        .map(|i| publishes(per, qos, i * per))
        .collect();
    let deliveries = (per * publishers * subscribers) as u64;
    let len: u64 = streams.iter().map(|s| s.len() as u64).sum();
    let all: Vec<u8> = streams.concat();
    let decode = Case::new(
        "decode the published stream alone",
        (per * publishers) as u64,
        len,
        move || {
            let mut d = Decoder::new(1 << 20).with_version(V);
            *d.buffer_mut() = BytesMut::from(&all[..]);
            timed(|| {
                while let Some(p) = d.decode().unwrap() {
                    black_box(p);
                }
            })
        },
    );
    let hub = Case::new("hub deliveries", deliveries, 0, move || {
        let mut s = setup(publishers, subscribers, qos);
        let mut out = 0;
        let t = timed(|| out = run(&mut s, &streams));
        assert_eq!(out, deliveries, "every message once to every subscriber");
        t
    });
    vec![decode, hub]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { rounds(7) };
    println!(
        "# hub: {MESSAGES} published messages, 100-byte payload, ACL answering, median of {rounds} rounds"
    );
    for (publishers, subscribers) in [(1, 1), (1, 100), (100, 1)] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let title = format!("{publishers}→{subscribers} {qos:?}");
            // ONLY=text: the groups whose title holds it (for a profile).
            if std::env::var("ONLY").is_ok_and(|only| !title.contains(&only)) {
                continue;
            }
            let results = measure(rounds, &mut cases(publishers, subscribers, qos));
            report(
                &title,
                "deliveries",
                &results,
                &["decode the published stream alone"],
            );
            println!(
                "\n{title}: {:.2} M deliveries/s; delivery cost / decode cost = {:.2}×",
                results[1].units_per_sec() / 1e6,
                1.0 / ratio(
                    &results,
                    "hub deliveries",
                    "decode the published stream alone"
                )
            );
        }
    }
}
