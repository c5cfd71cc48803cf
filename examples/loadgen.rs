//! A load generator for any MQTT 3.1.1 broker on loopback: publishers and
//! subscribers on raw TCP (packets encoded by hand, decoded with
//! testament's codec), or a connect storm.
//!
//! It reports deliveries per second, loss, duplicates, latency percentiles
//! (each payload carries its send time) and, given the broker's PID, the
//! broker's CPU time from `/proc/PID/stat`, so that results read per broker
//! CPU-second. Every run is bounded in messages and in time, and only talks
//! to a loopback address.
//!
//! ```text
//! cargo run --release --example loadgen -- --broker 127.0.0.1:1883 \
//!     --publishers 4 --subscribers 4 --topology p2p --qos 1 --messages 100000
//! cargo run --release --example loadgen -- --storm 10000 --username load \
//!     --password-file tokens.txt --broker-pid "$(pidof testament)"
//! ```
//!
//! The last line of output is `RESULT key=value …`, for scripts
//! (`benches/vs-mosquitto.sh`).
#![allow(clippy::disallowed_methods)] // a load generator reads clocks

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use testament::codec::{
    Bytes, Connect, Decoder, Encode, MqttString, Packet, PacketId, ProtocolVersion, PubAck,
    PubComp, PubRec, PubRel, QoS, Subscribe, Subscription, SubscriptionOptions, TopicFilter,
};

const V: ProtocolVersion = ProtocolVersion::V311;
/// Publisher id, sequence number, send time.
const HEADER: usize = 4 + 8 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Topology {
    /// Publisher i to subscriber i (as many of each).
    P2p,
    /// Every subscriber receives every publisher (many publishers, one
    /// subscriber).
    FanIn,
    /// The same, named for one publisher and many subscribers.
    FanOut,
}

#[derive(Debug, Parser)]
#[command(
    about = "MQTT 3.1.1 load on loopback: pub/sub throughput and latency, or a connect storm"
)]
struct Args {
    /// The broker (a loopback address).
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: SocketAddr,
    #[arg(long, value_enum, default_value = "p2p")]
    topology: Topology,
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// QoS of publishes and subscriptions (0, 1 or 2).
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Publish with RETAIN (each message replaces its topic's retained
    /// one: what a durable broker writes to disk).
    #[arg(long)]
    retain: bool,
    /// Subscribers keep a persistent session (clean session 0): a durable
    /// broker keeps each QoS 1/2 message for it until acknowledged.
    #[arg(long)]
    persistent: bool,
    /// Payload bytes (at least 20: id, sequence and send time).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Messages per publisher.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Messages per second over all publishers; 0: as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// QoS 1/2 messages a publisher has unacknowledged at most.
    #[arg(long, default_value_t = 32)]
    window: u64,
    /// Stop after this long whatever happened.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// Topic prefix; publisher i publishes on PREFIX/i.
    #[arg(long, default_value = "load")]
    prefix: String,
    /// User name of every client.
    #[arg(long)]
    username: Option<String>,
    /// Passwords (tokens), one per line, used in turn.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// The broker's process, for its CPU time.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Connect storm instead: this many CONNECT / CONNACK / close.
    #[arg(long)]
    storm: Option<usize>,
    /// Idle sessions instead: connect this many, measure the broker's
    /// resident memory per session, disconnect.
    #[arg(long)]
    idle: Option<usize>,
    /// Connecting threads in a storm.
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Latencies in 1 µs buckets up to 10 ms, 100 µs buckets up to 1 s, then
/// one: bounded memory whatever the count.
#[derive(Clone)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_ns: u64,
}

impl Histogram {
    const FINE: u64 = 10_000;
    const COARSE: u64 = 10_000;

    fn new() -> Self {
        Self {
            buckets: vec![0; (Self::FINE + Self::COARSE + 1) as usize],
            count: 0,
            max_ns: 0,
        }
    }

    fn record(&mut self, ns: u64) {
        let us = ns / 1000;
        let i = if us < Self::FINE {
            us
        } else {
            (Self::FINE + (us - Self::FINE) / 100).min(Self::FINE + Self::COARSE)
        };
        self.buckets[i as usize] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The bucket's upper bound in µs below which `q` of the samples are.
    fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                let i = i as u64;
                return if i < Self::FINE {
                    (i + 1) as f64
                } else {
                    (Self::FINE + (i - Self::FINE + 1) * 100) as f64
                };
            }
        }
        self.max_ns as f64 / 1000.0
    }
}

/// The broker's CPU time: the sum over its threads of the nanoseconds
/// they ran (`/proc/PID/task/*/schedstat`), else user + system time from
/// `/proc/PID/stat` in 10 ms ticks.
fn broker_cpu(pid: Option<u32>) -> Option<Duration> {
    let pid = pid?;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let ns: u64 = tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        if ns > 0 {
            return Some(Duration::from_nanos(ns));
        }
    }
    broker_user_system(Some(pid)).map(|(user, system)| user + system)
}

/// The broker's CPU time in its own code and in the kernel, from
/// `/proc/PID/stat` (10 ms ticks).
fn broker_user_system(pid: Option<u32>) -> Option<(Duration, Duration)> {
    let text = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime, stime: fields 14 and 15, in clock ticks (100 per second).
    let ticks = |t: &u64| Duration::from_millis(t * 10);
    Some((ticks(f.get(11)?), ticks(f.get(12)?)))
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

/// A 3.1.1 PUBLISH, written by hand: it is the hot loop.
fn publish(
    out: &mut Vec<u8>,
    topic: &[u8],
    (qos, retain): (u8, bool),
    id: u16,
    payload_len: usize,
    head: [u8; HEADER],
) {
    out.push(0x30 | (qos << 1) | u8::from(retain));
    let pid_len = if qos > 0 { 2 } else { 0 };
    varint(2 + topic.len() + pid_len + payload_len, out);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
    if qos > 0 {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(&head);
    out.resize(out.len() + payload_len - HEADER, 0x5a);
}

fn packet_id(seq: u64) -> u16 {
    (seq % 65_535) as u16 + 1
}

fn qos_of(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

struct Client {
    stream: TcpStream,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl Client {
    fn connect(
        addr: SocketAddr,
        source: Option<u8>,
        id: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> std::io::Result<Self> {
        Self::connect_with(addr, source, id, username, password, true)
    }

    /// [`Client::connect`] with this Clean Session flag.
    fn connect_with(
        addr: SocketAddr,
        source: Option<u8>,
        id: &str,
        username: Option<&str>,
        password: Option<&str>,
        clean: bool,
    ) -> std::io::Result<Self> {
        let stream = match source {
            Some(s) => {
                use socket2::{Domain, Protocol, Socket, Type};
                let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                let from: SocketAddr = format!("127.0.0.{s}:0").parse().expect("an address");
                sock.bind(&from.into())?;
                sock.connect(&addr.into())?;
                sock.into()
            }
            None => TcpStream::connect(addr)?,
        };
        stream.set_nodelay(true)?;
        let mut c = Connect::new(V, MqttString::try_from(id).map_err(invalid)?);
        c.keep_alive = 0;
        c.clean_start = clean;
        c.username = username
            .map(MqttString::try_from)
            .transpose()
            .map_err(invalid)?;
        c.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
        let mut client = Self {
            stream,
            decoder: Decoder::new(16 << 20).with_version(V),
            buf: vec![0; 64 * 1024],
        };
        client.send(&Packet::Connect(Box::new(c)))?;
        match client.next()? {
            Packet::ConnAck(ack) if !ack.reason_code.is_error() => Ok(client),
            Packet::ConnAck(ack) => Err(std::io::Error::other(format!(
                "CONNACK {:?}",
                ack.reason_code
            ))),
            other => Err(std::io::Error::other(format!(
                "expected CONNACK, got {other:?}"
            ))),
        }
    }

    fn send(&mut self, p: &Packet) -> std::io::Result<()> {
        let bytes = p.to_vec(V).map_err(invalid)?;
        self.stream.write_all(&bytes)
    }

    /// The next packet, blocking.
    fn next(&mut self) -> std::io::Result<Packet> {
        loop {
            if let Some(p) = self.decoder.decode().map_err(invalid)? {
                return Ok(p);
            }
            self.fill()?;
        }
    }

    /// Reads what the socket has into the decoder; `Ok(false)` on a read
    /// timeout.
    fn fill(&mut self) -> std::io::Result<bool> {
        match self.stream.read(&mut self.buf) {
            Ok(0) => Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.decoder.feed(&self.buf[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, e.to_string())
}

#[derive(Default)]
struct SubStats {
    received: u64,
    duplicates: u64,
    unique: u64,
    last_ns: u64,
    histogram: Option<Histogram>,
    error: Option<String>,
}

struct Plan {
    args: Args,
    passwords: Vec<String>,
    run: u32,
}

impl Plan {
    fn password(&self, i: usize) -> Option<&str> {
        (!self.passwords.is_empty()).then(|| self.passwords[i % self.passwords.len()].as_str())
    }

    /// The publishers a subscriber hears.
    fn heard_by(&self, sub: usize) -> Vec<usize> {
        match self.args.topology {
            Topology::P2p => vec![sub],
            Topology::FanIn | Topology::FanOut => (0..self.args.publishers).collect(),
        }
    }

    fn filter(&self, sub: usize) -> String {
        match self.args.topology {
            Topology::P2p => format!("{}/{sub}", self.args.prefix),
            Topology::FanIn | Topology::FanOut => format!("{}/+", self.args.prefix),
        }
    }
}

fn subscriber(
    plan: &Plan,
    index: usize,
    ready: &Barrier,
    publishers_done: &AtomicBool,
    deadline: Instant,
) -> SubStats {
    let a = &plan.args;
    let mut stats = SubStats::default();
    let id = format!("lg{}-sub-{index}", plan.run);
    let mut client = match Client::connect_with(
        a.broker,
        None,
        &id,
        a.username.as_deref(),
        plan.password(a.publishers + index),
        !a.persistent,
    )
    .and_then(|mut c| {
        let sub = Subscribe {
            packet_id: PacketId::new(1).expect("non-zero"),
            properties: Default::default(),
            subscriptions: vec![Subscription {
                filter: TopicFilter::try_from(plan.filter(index)).map_err(invalid)?,
                options: SubscriptionOptions {
                    qos: qos_of(a.qos),
                    ..SubscriptionOptions::default()
                },
            }],
        };
        c.send(&Packet::Subscribe(sub))?;
        match c.next()? {
            Packet::SubAck(ack) if ack.reason_codes.iter().all(|r| !r.is_error()) => Ok(c),
            other => Err(std::io::Error::other(format!(
                "subscription refused: {other:?}"
            ))),
        }
    }) {
        Ok(c) => c,
        Err(e) => {
            stats.error = Some(format!("subscriber {index}: {e}"));
            ready.wait();
            return stats;
        }
    };
    let heard = plan.heard_by(index);
    let expected = heard.len() as u64 * a.messages;
    // Seen counts per (publisher, sequence).
    let mut seen: Vec<Vec<u8>> = (0..a.publishers)
        .map(|p| {
            if heard.contains(&p) {
                vec![0u8; a.messages as usize]
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut histogram = Histogram::new();
    let mut out = Vec::new();
    let _ = client
        .stream
        .set_read_timeout(Some(Duration::from_millis(100)));
    ready.wait();
    let mut quiet_since: Option<Instant> = None;
    loop {
        match client.fill() {
            Ok(true) => quiet_since = None,
            Ok(false) => {
                // Done when the publishers are and nothing came for a while.
                if publishers_done.load(Ordering::Acquire) {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                }
            }
            Err(e) => {
                stats.error = Some(format!("subscriber {index}: {e}"));
                break;
            }
        }
        loop {
            let packet = match client.decoder.decode() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    stats.error = Some(format!("subscriber {index}: {e}"));
                    break;
                }
            };
            match packet {
                Packet::Publish(p) => {
                    let t = now_ns();
                    stats.received += 1;
                    stats.last_ns = t;
                    if p.payload.len() >= HEADER {
                        let b = &p.payload;
                        let from = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                        let seq = u64::from_be_bytes(b[4..12].try_into().expect("8 bytes"));
                        let sent = u64::from_be_bytes(b[12..20].try_into().expect("8 bytes"));
                        histogram.record(t.saturating_sub(sent));
                        if let Some(slot) = seen.get_mut(from).and_then(|s| s.get_mut(seq as usize))
                        {
                            *slot = slot.saturating_add(1);
                            if *slot == 1 {
                                stats.unique += 1;
                            } else {
                                stats.duplicates += 1;
                            }
                        }
                    }
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => {
                            let _ = Packet::PubAck(PubAck::new(id)).encode(V, &mut out);
                        }
                        (QoS::ExactlyOnce, Some(id)) => {
                            let _ = Packet::PubRec(PubRec::new(id)).encode(V, &mut out);
                        }
                        _ => {}
                    }
                }
                Packet::PubRel(r) => {
                    let _ = Packet::PubComp(PubComp::new(r.packet_id)).encode(V, &mut out);
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            if let Err(e) = client.stream.write_all(&out) {
                stats.error = Some(format!("subscriber {index}: {e}"));
                break;
            }
            out.clear();
        }
        if stats.unique >= expected || Instant::now() >= deadline {
            break;
        }
    }
    let _ = client.stream.write_all(&[0xe0, 0x00]);
    stats.histogram = Some(histogram);
    stats
}

#[derive(Default)]
struct PubStats {
    sent: u64,
    error: Option<String>,
}

fn publisher(plan: &Plan, index: usize, ready: &Barrier, deadline: Instant) -> PubStats {
    let a = &plan.args;
    let mut stats = PubStats::default();
    let id = format!("lg{}-pub-{index}", plan.run);
    let client = Client::connect(
        a.broker,
        None,
        &id,
        a.username.as_deref(),
        plan.password(index),
    );
    ready.wait();
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            stats.error = Some(format!("publisher {index}: {e}"));
            return stats;
        }
    };
    let topic = format!("{}/{index}", a.prefix).into_bytes();
    let qos = a.qos.min(2);
    // Acknowledgements come back on a thread of their own; QoS 2 answers
    // PUBREC with PUBREL through the shared writer.
    let completed = Arc::new(AtomicU64::new(0));
    let writer = Arc::new(Mutex::new(client.stream.try_clone().expect("a clone")));
    let acker = (qos > 0).then(|| {
        let completed = completed.clone();
        let writer = writer.clone();
        let mut reader = Client {
            stream: client.stream.try_clone().expect("a clone"),
            decoder: Decoder::new(1 << 20).with_version(V),
            buf: vec![0; 16 * 1024],
        };
        let total = a.messages;
        let main = std::thread::current();
        let _ = reader
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)));
        std::thread::spawn(move || {
            let mut out = Vec::new();
            while completed.load(Ordering::Acquire) < total && Instant::now() < deadline {
                match reader.fill() {
                    Ok(_) => {}
                    Err(_) => break,
                }
                let mut done = 0;
                while let Ok(Some(p)) = reader.decoder.decode() {
                    match p {
                        Packet::PubAck(_) | Packet::PubComp(_) => done += 1,
                        Packet::PubRec(r) => {
                            let _ = Packet::PubRel(PubRel::new(r.packet_id)).encode(V, &mut out);
                        }
                        _ => {}
                    }
                }
                if !out.is_empty() {
                    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                    if w.write_all(&out).is_err() {
                        break;
                    }
                    out.clear();
                }
                if done > 0 {
                    completed.fetch_add(done, Ordering::AcqRel);
                    main.unpark();
                }
            }
            main.unpark();
        })
    });
    let start = Instant::now();
    let per_publisher_rate = if a.rate > 0 {
        (a.rate as f64 / a.publishers as f64).max(1e-3)
    } else {
        0.0
    };
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut seq = 0u64;
    while seq < a.messages && Instant::now() < deadline {
        if qos > 0 && seq - completed.load(Ordering::Acquire) >= a.window {
            std::thread::park_timeout(Duration::from_millis(5));
            continue;
        }
        if per_publisher_rate > 0.0 {
            let due = start + Duration::from_secs_f64(seq as f64 / per_publisher_rate);
            let now = Instant::now();
            if due > now {
                // Sleep, never spin: the subscribers share this CPU, and a
                // spinning publisher would delay them (and the latency).
                std::thread::sleep(due - now);
                continue;
            }
        }
        // As many as the window, the pace and a 64 KiB batch allow.
        loop {
            let mut head = [0u8; HEADER];
            head[..4].copy_from_slice(&(index as u32).to_be_bytes());
            head[4..12].copy_from_slice(&seq.to_be_bytes());
            head[12..20].copy_from_slice(&now_ns().to_be_bytes());
            publish(
                &mut batch,
                &topic,
                (qos, a.retain),
                packet_id(seq),
                a.payload,
                head,
            );
            seq += 1;
            let paced = per_publisher_rate > 0.0
                && start + Duration::from_secs_f64(seq as f64 / per_publisher_rate)
                    > Instant::now();
            if seq >= a.messages
                || batch.len() >= 60 * 1024
                || paced
                || (qos > 0 && seq - completed.load(Ordering::Acquire) >= a.window)
            {
                break;
            }
        }
        let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = w.write_all(&batch) {
            stats.error = Some(format!("publisher {index}: {e}"));
            break;
        }
        drop(w);
        batch.clear();
    }
    stats.sent = seq;
    if let Some(acker) = acker {
        let _ = acker.join();
    }
    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    let _ = w.write_all(&[0xe0, 0x00]);
    stats
}

fn pubsub(plan: Arc<Plan>) -> Result<(), String> {
    let a = &plan.args;
    if a.topology == Topology::P2p && a.publishers != a.subscribers {
        return Err("p2p needs as many publishers as subscribers".into());
    }
    if a.payload < HEADER {
        return Err(format!("payload must be at least {HEADER} bytes"));
    }
    let deadline = Instant::now() + Duration::from_secs(a.max_secs);
    let ready = Arc::new(Barrier::new(a.publishers + a.subscribers + 1));
    let done = Arc::new(AtomicBool::new(false));
    let subs: Vec<_> = (0..a.subscribers)
        .map(|i| {
            let (plan, ready, done) = (plan.clone(), ready.clone(), done.clone());
            std::thread::spawn(move || subscriber(&plan, i, &ready, &done, deadline))
        })
        .collect();
    let pubs: Vec<_> = (0..a.publishers)
        .map(|i| {
            let (plan, ready) = (plan.clone(), ready.clone());
            std::thread::spawn(move || publisher(&plan, i, &ready, deadline))
        })
        .collect();
    ready.wait();
    let cpu0 = broker_cpu(a.broker_pid);
    let t0 = now_ns();
    let mut sent = 0;
    let mut errors = Vec::new();
    for p in pubs {
        let s = p.join().map_err(|_| "a publisher panicked")?;
        sent += s.sent;
        errors.extend(s.error);
    }
    done.store(true, Ordering::Release);
    let mut stats = Vec::new();
    for s in subs {
        stats.push(s.join().map_err(|_| "a subscriber panicked")?);
    }
    let cpu = broker_cpu(a.broker_pid).zip(cpu0).map(|(b, a)| b - a);
    let mut histogram = Histogram::new();
    let (mut delivered, mut unique, mut dup, mut last) = (0, 0, 0, t0);
    let mut expected = 0;
    for (i, s) in stats.iter().enumerate() {
        delivered += s.received;
        unique += s.unique;
        dup += s.duplicates;
        last = last.max(s.last_ns);
        if let Some(h) = &s.histogram {
            histogram.merge(h);
        }
        errors.extend(s.error.clone());
        expected += plan.heard_by(i).len() as u64 * sent / a.publishers.max(1) as u64;
    }
    let lost = expected.saturating_sub(unique);
    let wall = Duration::from_nanos(last.saturating_sub(t0))
        .as_secs_f64()
        .max(1e-9);
    let rate = match a.rate {
        0 => "max".to_string(),
        r => r.to_string(),
    };
    println!(
        "{:?} {}→{} QoS {} payload {} B, rate {rate}: sent {sent}, delivered {delivered} of {expected} \
         (lost {lost}, duplicates {dup}) in {wall:.2} s = {:.0} deliveries/s",
        a.topology,
        a.publishers,
        a.subscribers,
        a.qos,
        a.payload,
        delivered as f64 / wall
    );
    let per_cpu = cpu.map(|c| delivered as f64 / c.as_secs_f64().max(0.01));
    if let (Some(c), Some(p)) = (cpu, per_cpu) {
        println!(
            "broker CPU {:.2} s = {p:.0} deliveries per broker CPU-second",
            c.as_secs_f64()
        );
    }
    let (p50, p99, p999) = (
        histogram.quantile_us(0.50),
        histogram.quantile_us(0.99),
        histogram.quantile_us(0.999),
    );
    println!(
        "latency p50 {p50:.0} µs, p99 {p99:.0} µs, p99.9 {p999:.0} µs, max {:.0} µs",
        histogram.max_ns as f64 / 1000.0
    );
    for e in &errors {
        println!("error: {e}");
    }
    println!(
        "RESULT sent={sent} expected={expected} delivered={delivered} lost={lost} duplicates={dup} \
         wall_s={wall:.3} per_s={:.0} cpu_s={:.2} per_cpu_s={:.0} p50_us={p50:.0} p99_us={p99:.0} \
         p999_us={p999:.0} errors={}",
        delivered as f64 / wall,
        cpu.map_or(0.0, |c| c.as_secs_f64()),
        per_cpu.unwrap_or(0.0),
        errors.len()
    );
    Ok(())
}

fn storm(plan: Arc<Plan>, total: usize) -> Result<(), String> {
    let a = &plan.args;
    let threads = a.threads.max(1);
    let deadline = Instant::now() + Duration::from_secs(a.max_secs);
    let cpu0 = broker_cpu(a.broker_pid);
    let split0 = broker_user_system(a.broker_pid);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let plan = plan.clone();
            std::thread::spawn(move || {
                let a = &plan.args;
                let mut histogram = Histogram::new();
                let mut failures = Vec::new();
                let mut ok = 0u64;
                let mut i = t;
                while i < total && Instant::now() < deadline {
                    let id = format!("lg{}-storm-{i}", plan.run);
                    // Loopback sources 127.0.0.2-17: one address alone
                    // runs out of ephemeral ports in TIME_WAIT.
                    let source = 2 + (i % 16) as u8;
                    let t0 = now_ns();
                    match Client::connect(
                        a.broker,
                        Some(source),
                        &id,
                        a.username.as_deref(),
                        plan.password(i),
                    ) {
                        Ok(c) => {
                            histogram.record(now_ns() - t0);
                            ok += 1;
                            drop(c);
                        }
                        Err(e) => {
                            if failures.len() < 5 {
                                failures.push(e.to_string());
                            }
                        }
                    }
                    i += threads;
                }
                (ok, histogram, failures)
            })
        })
        .collect();
    let mut histogram = Histogram::new();
    let mut ok = 0;
    let mut failures = Vec::new();
    for h in handles {
        let (n, hist, f) = h.join().map_err(|_| "a storm thread panicked")?;
        ok += n;
        histogram.merge(&hist);
        failures.extend(f);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = broker_cpu(a.broker_pid).zip(cpu0).map(|(b, a)| b - a);
    let per_cpu = cpu.map(|c| ok as f64 / c.as_secs_f64().max(0.01));
    // The kernel's share of the broker's CPU: accept, the loopback exchange
    // and the close cost every broker alike.
    let kernel_share = broker_user_system(a.broker_pid)
        .zip(split0)
        .map(|((u1, s1), (u0, s0))| {
            let (user, system) = (u1 - u0, s1 - s0);
            system.as_secs_f64() / (user + system).as_secs_f64().max(0.01)
        });
    println!(
        "connect storm: {ok} of {total} CONNACKs in {wall:.2} s = {:.0}/s; connect p50 {:.0} µs, p99 {:.0} µs, max {:.1} ms",
        ok as f64 / wall,
        histogram.quantile_us(0.5),
        histogram.quantile_us(0.99),
        histogram.max_ns as f64 / 1e6
    );
    if let (Some(c), Some(p)) = (cpu, per_cpu) {
        println!(
            "broker CPU {:.2} s = {p:.0} CONNACKs per broker CPU-second; {:.0}% of it in the kernel",
            c.as_secs_f64(),
            100.0 * kernel_share.unwrap_or(0.0)
        );
    }
    for f in &failures {
        println!("error: {f}");
    }
    println!(
        "RESULT connacks={ok} failed={} wall_s={wall:.3} per_s={:.0} cpu_s={:.2} per_cpu_s={:.0} \
         p50_us={:.0} p99_us={:.0} max_ms={:.1} kernel_share={:.2}",
        total as u64 - ok,
        ok as f64 / wall,
        cpu.map_or(0.0, |c| c.as_secs_f64()),
        per_cpu.unwrap_or(0.0),
        histogram.quantile_us(0.5),
        histogram.quantile_us(0.99),
        histogram.max_ns as f64 / 1e6,
        kernel_share.unwrap_or(0.0)
    );
    Ok(())
}

/// The broker's resident memory.
fn broker_rss(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn idle(plan: Arc<Plan>, total: usize) -> Result<(), String> {
    let a = &plan.args;
    let connect = |i: usize| {
        let id = format!("lg{}-idle-{i}", plan.run);
        Client::connect(
            a.broker,
            Some(2 + (i % 16) as u8),
            &id,
            a.username.as_deref(),
            plan.password(i),
        )
        .map_err(|e| format!("idle client {i}: {e}"))
    };
    // One session first: what is measured is the cost of more of them.
    let _first = connect(total)?;
    std::thread::sleep(Duration::from_millis(500));
    let before = broker_rss(a.broker_pid);
    let mut clients = Vec::with_capacity(total);
    for i in 0..total {
        let mut c = connect(i)?;
        // Nothing of the client's side is kept but the socket.
        c.buf = Vec::new();
        clients.push(c);
    }
    // Past an allocator's decay time (jemalloc's is 10 s): what the
    // connects freed is given back, and what is left is what the sessions
    // hold.
    std::thread::sleep(Duration::from_secs(11));
    let after = broker_rss(a.broker_pid);
    let per = before
        .zip(after)
        .map(|(b, a)| a.saturating_sub(b) as f64 / total as f64);
    println!(
        "idle sessions: {total} connected; broker RSS {:.1} → {:.1} MiB = {:.0} B per session",
        before.unwrap_or(0) as f64 / 1048576.0,
        after.unwrap_or(0) as f64 / 1048576.0,
        per.unwrap_or(0.0)
    );
    println!(
        "RESULT sessions={total} rss_before={} rss_after={} per_session_b={:.0}",
        before.unwrap_or(0),
        after.unwrap_or(0),
        per.unwrap_or(0.0)
    );
    Ok(())
}

fn main() {
    let args = Args::parse();
    if !args.broker.ip().is_loopback() {
        eprintln!("loadgen only talks to a loopback address");
        std::process::exit(2);
    }
    let passwords = match &args.password_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                std::process::exit(2);
            }
        },
        None => Vec::new(),
    };
    now_ns();
    let (storm_count, idle_count) = (args.storm, args.idle);
    let plan = Arc::new(Plan {
        args,
        passwords,
        run: std::process::id(),
    });
    let result = match (storm_count, idle_count) {
        (Some(n), _) => storm(plan, n),
        (None, Some(n)) => idle(plan, n),
        (None, None) => pubsub(plan),
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(2);
    }
}
