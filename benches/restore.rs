//! What a restart costs a durable broker: a store holding
//! `RESTORE_RETAINED` retained messages (1,000,000) and `RESTORE_SESSIONS`
//! persistent sessions (100,000, one subscription each) is opened, read
//! back and handed to a new hub; the baseline is reading the store file's
//! bytes once. Also the store's size on disk per retained message and per
//! idle session.
//!
//! `cargo bench --bench restore --features redb`
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

use std::time::Instant;

use testament::broker::{
    Broker, BrokerConfig, Persist, RetainedMessage, SessionRecord, StoredSubscription,
};
use testament::codec::{
    Bytes, PublishProperties, QoS, SubscriptionOptions, TopicFilter, TopicName,
};
use testament::driver::storage::{RedbStorage, Storage};
use testament::time::Now;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let retained = count("RESTORE_RETAINED", 1_000_000);
    let sessions = count("RESTORE_SESSIONS", 100_000);
    let dir = std::env::temp_dir().join(format!("testament-restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("testament.redb");
    let mut store = RedbStorage::open(&path).expect("a store");
    let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
    let empty = size();
    for chunk in (0..retained).collect::<Vec<_>>().chunks(10_000) {
        let ops: Vec<Persist> = chunk
            .iter()
            .map(|i| {
                Persist::Retain(RetainedMessage {
                    topic: TopicName::try_from(format!("fleet/site-{}/server-{i}/state", i % 100))
                        .expect("a topic"),
                    payload: Bytes::from_static(b"up"),
                    qos: QoS::AtLeastOnce,
                    properties: PublishProperties::default(),
                    expires_at: None,
                })
            })
            .collect();
        store.commit(&ops).expect("committed");
    }
    let with_retained = size();
    // The sessions also in a store of their own, for their size on disk
    // (the file grows in steps: a size is the file's over the count).
    let alone = dir.join("sessions.redb");
    let mut sessions_alone = RedbStorage::open(&alone).expect("a store");
    let alone_empty = std::fs::metadata(&alone).map_or(0, |m| m.len());
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(10_000) {
        let ops: Vec<Persist> = chunk
            .iter()
            .map(|i| {
                Persist::Session(SessionRecord {
                    client_id: format!("monitor-{i}").into(),
                    identity: None,
                    expiry_interval: 86_400,
                    expires_at: None,
                    subscriptions: vec![StoredSubscription {
                        filter: TopicFilter::new(format!("fleet/site-{}/+/state", i % 100))
                            .expect("a filter"),
                        options: SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            ..SubscriptionOptions::default()
                        },
                        id: None,
                        exclusions: Default::default(),
                    }],
                })
            })
            .collect();
        store.commit(&ops).expect("committed");
        sessions_alone.commit(&ops).expect("committed");
    }
    let with_sessions = size();
    drop(sessions_alone);
    let sessions_size = std::fs::metadata(&alone).map_or(0, |m| m.len()) - alone_empty;
    drop(store);

    // The baseline: the file's bytes, read once.
    let start = Instant::now();
    let bytes = std::fs::read(&path).expect("the file").len();
    let read = start.elapsed();

    let start = Instant::now();
    let store = RedbStorage::open(&path).expect("a store");
    let restored = store.load().expect("readable");
    let loaded = start.elapsed();
    let config = BrokerConfig {
        durable: true,
        max_retained_messages: retained + 1,
        max_sessions: sessions + 1,
        ..BrokerConfig::default()
    };
    let mut hub = Broker::new(config);
    let now = Now::from_secs(1_800_000_000);
    let start = Instant::now();
    hub.restore_all(now, restored);
    let into_hub = start.elapsed();
    let total = loaded + into_hub;
    assert_eq!(hub.retained_messages(), retained);
    assert_eq!(hub.sessions(), sessions);

    println!("restore: {retained} retained messages, {sessions} persistent sessions");
    println!(
        "  store file      {:>8.1} MiB ({bytes} bytes)",
        with_sessions as f64 / 1_048_576.0
    );
    println!(
        "  per retained    {:>8.0} B (a 2-byte payload on a 30-byte topic)",
        (with_retained - empty) as f64 / retained.max(1) as f64
    );
    println!(
        "  per session     {:>8.0} B (one subscription)",
        sessions_size as f64 / sessions.max(1) as f64
    );
    println!("  read the file   {:>8.3} s (baseline)", read.as_secs_f64());
    println!(
        "  open and load   {:>8.3} s ({:.1}× the baseline)",
        loaded.as_secs_f64(),
        loaded.as_secs_f64() / read.as_secs_f64().max(1e-9)
    );
    println!("  into the hub    {:>8.3} s", into_hub.as_secs_f64());
    println!(
        "  restart total   {:>8.3} s (goal ≤ 5 s)",
        total.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
