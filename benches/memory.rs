//! Heap per idle session in the hub alone (no driver, no socket): a counting
//! allocator measures the live heap after N clients connected with a
//! JWT-shaped identity and went idle, per client, and the same for
//! connections opened but not yet connected. The baseline is the client id
//! and token the clients sent: what any broker has to keep at least.
//!
//! `cargo bench --bench memory` (`MEMORY_SESSIONS` changes the count).
#![allow(clippy::disallowed_methods)]

#[path = "../tests/common/alloc.rs"]
#[allow(dead_code)] // the call count serves the tests
mod alloc;
mod harness;

use std::sync::Arc;

use alloc::Counting;
use testament::auth::{
    Acl, AuthMethod, Effect, FilterTemplate, Identity, Ops, Rule, Subject, TokenDigest,
};
use testament::broker::{Broker, BrokerConfig, ConnId};
use testament::codec::{Bytes, Connect, Encode, MqttString, Packet, ProtocolVersion};
use testament::time::{Now, Timestamp};

#[global_allocator]
static GLOBAL: Counting = Counting;

const TOKEN_LEN: usize = 600; // an RS256 JWT with a few claims

fn identity(client_id: &std::sync::Arc<str>, now: Timestamp) -> Identity {
    Identity {
        principal: (**client_id).into(),
        client_id: client_id.clone(),
        grants: testament::auth::Grants::new(["sensor".into()].into(), None, Some("k1".into())),
        expires_at: Some(now + std::time::Duration::from_secs(3600)),
        method: AuthMethod::Password,
        authenticated_at: now,
        token_digest: Some(TokenDigest::from_bytes([7u8; 8])),
    }
}

fn main() {
    let n: usize = std::env::var("MEMORY_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let now = Now::from_secs(1_800_000_000);
    let mut hub = Broker::new(BrokerConfig::default());
    hub.set_authorizer(Some(Arc::new(Acl::new(vec![Rule::new(
        Effect::Allow,
        Ops::ALL,
        Subject::Authenticated,
        FilterTemplate::new("clients/%u/#").unwrap(),
    )]))));
    let connects: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let id = format!("sensor-{i:06}");
            let mut c = Connect::new(
                ProtocolVersion::V311,
                MqttString::try_from(id.clone()).unwrap(),
            );
            c.keep_alive = 60;
            c.username = Some(MqttString::from_static("jwt"));
            c.password = Some(Bytes::from(vec![b'x'; TOKEN_LEN]));
            let bytes = Packet::Connect(Box::new(c))
                .to_vec(ProtocolVersion::V311)
                .unwrap();
            (id, bytes)
        })
        .collect();
    let base = Counting::live();
    // As the drivers do for their connection limit: the tables then hold
    // an entry per session, not the slack of their last doubling. Counted.
    hub.reserve_connections(n);
    let conns: Vec<ConnId> = (0..n).map(|_| hub.open(now, None)).collect();
    let opened = Counting::live();
    for (conn, (_, bytes)) in conns.iter().zip(&connects) {
        hub.handle_bytes(now, *conn, bytes);
        harness::settle(&mut hub, now, identity);
    }
    let idle = Counting::live();
    let per = |a: isize, b: isize| (b - a) as f64 / n as f64;
    let floor: usize = connects.iter().map(|(id, _)| id.len()).sum::<usize>() / n;
    println!("hub heap per connection, {n} clients (3.1.1, JWT-shaped identity):");
    println!("  opened, no CONNECT yet : {:>7.0} B", per(base, opened));
    println!("  connected and idle     : {:>7.0} B", per(base, idle));
    println!("  baseline: the client id alone {floor} B; the token ({TOKEN_LEN} B) is not kept");
    std::hint::black_box(&hub);
}
