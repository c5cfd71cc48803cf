//! What one durable commit costs in CPU, the broker left out: a turn of a
//! QoS 1 stream to a persistent subscriber — `COMMIT_BATCH` (32, the
//! loadgen's window) messages kept, the previous turn's as many done —
//! committed through [`RedbStorage`] flushed (`sync = "always"`) and
//! unflushed (`sync = "interval"`, a turn of only message ends), against
//! the floor of any durable store: 8 pages written and `fdatasync`ed on a
//! plain file (about what redb writes per commit). CPU time is this
//! thread's, from `/proc/thread-self/schedstat` (the kernel's flush path is
//! charged to it, as to the broker).
//!
//! `cargo bench --bench commit --features redb`
#![allow(clippy::disallowed_methods)] // a benchmark measures time

use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use testament::broker::{MessageRecord, Persist};
use testament::codec::{Bytes, PublishProperties, QoS, TopicName};
use testament::driver::storage::{RedbStorage, Storage};
use testament::session::OutboundMessage;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This thread's CPU time so far, in nanoseconds.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Microseconds of CPU per run of `f`, over `n` runs.
fn per_run(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = cpu_ns();
    for i in 0..n {
        f(i);
    }
    (cpu_ns() - start) as f64 / n as f64 / 1000.0
}

/// Turn `t`: its messages kept, turn `t - 1`'s done with.
fn turn(client: &Arc<str>, t: usize, batch: usize) -> Vec<Persist> {
    let seq = |t: usize, j: usize| NonZeroU64::new((t * batch + j + 1) as u64).expect("not 0");
    let kept = (0..batch).map(|j| {
        Persist::Message(MessageRecord {
            client_id: client.clone(),
            seq: seq(t, j),
            message: OutboundMessage {
                topic: TopicName::from_static("load/0"),
                payload: Bytes::from(vec![7u8; 100]),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: PublishProperties::default(),
                seq: Some(seq(t, j)),
            },
            expires_at: None,
        })
    });
    let done = (0..batch).filter(|_| t > 0).map(|j| Persist::MessageDone {
        client_id: client.clone(),
        seq: seq(t - 1, j),
    });
    kept.chain(done).collect()
}

fn main() {
    let commits = count("COMMITS", 3000);
    let batch = count("COMMIT_BATCH", 32);
    let dir = std::env::temp_dir().join(format!("testament-commit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a folder");

    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("plain"))
        .expect("a file");
    file.set_len(4 << 20).expect("room");
    let page = [0x5au8; 4096];
    let floor = per_run(commits, |i| {
        for j in 0..8 {
            let at = (((i * 8 + j) % 1024) * 4096) as u64;
            file.write_all_at(&page, at).expect("written");
        }
        file.sync_data().expect("flushed");
    });

    let client: Arc<str> = Arc::from("subscriber");
    let mut flushed = RedbStorage::open(&dir.join("always.redb")).expect("a store");
    let always = per_run(commits, |t| {
        flushed.commit(&turn(&client, t, batch)).expect("committed");
    });
    let mut unflushed = RedbStorage::open(&dir.join("interval.redb")).expect("a store");
    let interval = per_run(commits, |t| {
        unflushed
            .commit_unflushed(&turn(&client, t, batch))
            .expect("committed");
    });
    let building = per_run(commits, |t| {
        std::hint::black_box(turn(&client, t, batch));
    });
    let _ = std::fs::remove_dir_all(&dir);

    println!("CPU per commit of {batch} messages kept and {batch} done ({commits} commits):");
    println!("  8 pages written + fdatasync (baseline)   {floor:>8.1} µs   1.00×");
    println!(
        "  redb, flushed (sync = always)            {always:>8.1} µs   {:.2}×",
        always / floor
    );
    println!(
        "  redb, unflushed (sync = interval)        {interval:>8.1} µs   {:.2}×",
        interval / floor
    );
    println!("  building the turn's records (in each)    {building:>8.1} µs");
    println!(
        "  per message, flushed: {:.2} µs; unflushed: {:.2} µs",
        always / batch as f64,
        interval / batch as f64
    );
}
