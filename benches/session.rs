//! Session throughput: a connected session fed a stream of PUBLISH packets,
//! every authorization answered Allow at once — by the host through
//! [`Action::Authorize`], by a synchronous authorizer in the session, or by
//! the built-in ACL — against decoding the same stream alone, in one
//! process (goal: the session costs at most 2× decode).
//!
//! `cargo bench --bench session` (BENCH_ROUNDS=n to change the rounds,
//! ONLY=text to run the cases whose name holds it).

mod harness;

use std::hint::black_box;
use std::sync::Arc;

use harness::{Case, measure, ratio, report, rounds, timed};
use testament::auth::{
    Acl, AuthMethod, AuthzRequest, DecidedBy, Decision, Effect, FilterTemplate, Identity, Ops,
    Rule, Subject,
};
use testament::codec::{
    Bytes, BytesMut, Connect, Decoder, Encode, MqttString, Packet, PacketId, ProtocolVersion,
    Publish, QoS, TopicName,
};
use testament::session::{Action, AuthnOutcome, Authorizer, Session, SessionConfig};
use testament::time::Now;

const PACKETS: usize = 50_000;

fn stream(version: ProtocolVersion, qos: QoS) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..PACKETS {
        let topic = format!("fleet/site-{:04}/server-{:06}/state", i % 1000, i);
        let mut p = Publish::new(TopicName::try_from(topic).unwrap(), vec![7u8; 100]);
        p.qos = qos;
        p.packet_id =
            (qos != QoS::AtMostOnce).then(|| PacketId::new(1 + (i % 60_000) as u16).unwrap());
        p.encode(version, &mut out).unwrap();
    }
    out
}

fn connected(version: ProtocolVersion, now: Now, audit_allowed: bool) -> Session {
    let config = SessionConfig {
        receive_maximum: u16::MAX,
        max_pending_authorizations: 1 << 20,
        audit_allowed_publishes: audit_allowed,
        ..SessionConfig::default()
    };
    let mut s = Session::new(config, now);
    let mut c = Connect::new(version, MqttString::from_static("bench"));
    c.keep_alive = 0;
    c.password = Some(Bytes::from_static(b"t"));
    c.username = Some(MqttString::from_static("p"));
    s.handle_bytes(now, &Packet::Connect(Box::new(c)).to_vec(version).unwrap());
    let ticket = match s.poll_action() {
        Some(Action::Authenticate { ticket, .. }) => ticket,
        other => panic!("{other:?}"),
    };
    let identity = Identity {
        principal: "p".into(),
        client_id: "bench".into(),
        grants: testament::auth::Grants::none(),
        expires_at: None,
        method: AuthMethod::Password,
        authenticated_at: now.wall,
        token_digest: None,
    };
    s.handle_authentication(now, ticket, AuthnOutcome::Success(identity))
        .unwrap();
    let open = std::iter::from_fn(|| s.poll_action())
        .find_map(|a| match a {
            Action::Open { ticket, .. } => Some(ticket),
            _ => None,
        })
        .unwrap();
    s.handle_open(now, open, false).unwrap();
    while s.poll_action().is_some() {}
    s
}

fn cases(version: ProtocolVersion, qos: QoS) -> Vec<Case<'static>> {
    let bytes = stream(version, qos);
    let n = PACKETS as u64;
    let len = bytes.len() as u64;
    let decode_bytes = bytes.clone();
    let decode = Case::new("decode alone", n, len, move || {
        let mut d = Decoder::new(1 << 20).with_version(version);
        *d.buffer_mut() = BytesMut::from(&decode_bytes[..]);
        timed(|| decode_all(&mut d))
    });
    let allow = Decision {
        effect: Effect::Allow,
        decided_by: DecidedBy::Rule {
            index: 0,
            name: None,
        },
        exclusions: Default::default(),
    };
    let acl: Arc<dyn Authorizer> = Arc::new(Acl::new(vec![Rule::new(
        Effect::Allow,
        Ops::PUBLISH,
        Subject::Authenticated,
        FilterTemplate::new("fleet/#").unwrap(),
    )]));
    let allow_all: Arc<dyn Authorizer> = Arc::new(AllowAll(allow.clone()));
    let fed_bytes = bytes.clone();
    let fed = Case::new("floor: decode fed in 16 KiB reads", n, len, move || {
        let mut d = Decoder::new(1 << 20).with_version(version);
        timed(|| {
            for chunk in fed_bytes.chunks(16 * 1024) {
                d.feed(chunk);
                decode_all(&mut d);
            }
        })
    });
    let queued_bytes = bytes.clone();
    let queued = Case::new(
        "floor: decode fed, packets through a queue",
        n,
        len,
        move || {
            let mut d = Decoder::new(1 << 20).with_version(version);
            let mut q = std::collections::VecDeque::new();
            timed(|| {
                for chunk in queued_bytes.chunks(16 * 1024) {
                    d.feed(chunk);
                    queue_all(&mut d, &mut q);
                }
            })
        },
    );
    let mut cases = vec![decode, fed, queued];
    for (name, authorizer, audited) in [
        ("session, host answers Allow at once", None, true),
        (
            "session, authorizer answers Allow",
            Some(allow_all.clone()),
            true,
        ),
        (
            "session, authorizer answers Allow, allowed not audited",
            Some(allow_all),
            false,
        ),
        ("session, ACL in the session", Some(acl.clone()), true),
        (
            "session, ACL in the session, allowed not audited",
            Some(acl),
            false,
        ),
    ] {
        let bytes = bytes.clone();
        let allow = allow.clone();
        cases.push(Case::new(name, n, len, move || {
            let now = Now::from_secs(1_800_000_000);
            let mut s = connected(version, now, audited);
            s.set_authorizer(authorizer.clone());
            timed(|| {
                // Fed in 16 KiB reads, as a driver would.
                for chunk in bytes.chunks(16 * 1024) {
                    s.handle_bytes(now, chunk);
                    while let Some(a) = s.poll_action() {
                        match a {
                            Action::Authorize { ticket, .. } => {
                                s.handle_authorization(now, ticket, allow.clone()).unwrap();
                            }
                            other => {
                                black_box(other);
                            }
                        }
                    }
                }
            })
        }));
    }
    cases
}

// The decode loops are functions of their own, not inlined into each case:
// the decoder inlines into its caller, and its code (and speed) otherwise
// varied from one case and one build to another.

/// Decodes every complete packet buffered.
#[inline(never)]
fn decode_all(d: &mut Decoder) {
    while let Some(p) = d.decode().unwrap() {
        black_box(p);
    }
}

/// Decodes every complete packet buffered into a queue, then drains it: what
/// a session that only handed its packets on would cost.
#[inline(never)]
fn queue_all(d: &mut Decoder, q: &mut std::collections::VecDeque<Packet>) {
    while let Some(p) = d.decode().unwrap() {
        q.push_back(p);
    }
    while let Some(p) = q.pop_front() {
        black_box(p);
    }
}

/// A policy that allows everything, answered in the session.
#[derive(Debug)]
struct AllowAll(Decision);

impl Authorizer for AllowAll {
    fn authorize(&self, _: &AuthzRequest<'_>) -> Option<Decision> {
        Some(self.0.clone())
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { rounds(9) };
    println!("# session: {PACKETS} PUBLISH packets, 100-byte payload, median of {rounds} rounds");
    for (version, qos) in [
        (ProtocolVersion::V311, QoS::AtMostOnce),
        (ProtocolVersion::V311, QoS::AtLeastOnce),
        (ProtocolVersion::V5, QoS::AtMostOnce),
        (ProtocolVersion::V5, QoS::AtLeastOnce),
    ] {
        let mut cases = cases(version, qos);
        // ONLY=<text>: the decode baseline and the cases whose name holds it
        // (for a profile of one case).
        if let Ok(only) = std::env::var("ONLY") {
            cases.retain(|c| c.name == "decode alone" || c.name.contains(&only));
        }
        let results = measure(rounds, &mut cases);
        report(
            &format!("{version} {qos:?}"),
            "messages",
            &results,
            &["decode alone"],
        );
        println!();
        for r in results.iter().filter(|r| r.name != "decode alone") {
            println!(
                "{version} {qos:?}: {} costs {:.2}× decode",
                r.name,
                1.0 / ratio(&results, &r.name, "decode alone")
            );
        }
    }
}
