//! Load on the real broker process (the `testament` binary, its default
//! driver):
//!
//! - memory per idle session: 10,000 connected 3.1.1 clients, the broker's
//!   resident memory before and after, per connection (kernel socket buffers
//!   are not in it);
//! - connect storm: CONNECT with an RS256 token, CONNACK, close, from 4
//!   threads; CONNACKs per broker CPU-second (from /proc), against raw
//!   RS256 verifications per CPU-second in this process (the baseline: the
//!   cost of the signature check alone), and the slowest connect (a listen
//!   backlog too small shows as a one-second tail).
//!
//! `cargo bench --bench load` (`LOAD_IDLE`, `LOAD_STORM` change the counts;
//! the file-descriptor limit must allow the idle count twice over).
#![allow(clippy::disallowed_methods)] // a benchmark reads clocks

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testament::codec::{Bytes, Connect, Encode, MqttString, Packet, ProtocolVersion};
use testament::keys;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Broker {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Broker {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("testament-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        keys::generate(keys::algorithm("RS256").unwrap(), "k1", &dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "listen = [\"127.0.0.1:{port}\"]\n[jwt]\njwks = \"{}\"\n[log]\nlevel = \"warn\"\n\
             [limits]\nmax_connections = 100000\nmax_connections_per_address = 100000\n\
             max_authentications_per_address_per_sec = 1000000\nmax_sessions = 200000\n\
             [session]\nconnect_timeout_secs = 600\n",
            dir.join("jwks.json").display()
        );
        std::fs::write(dir.join("load.toml"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_testament"))
            .args(["serve", "--config"])
            .arg(dir.join("load.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the broker did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, addr, dir }
    }

    fn token(&self) -> String {
        let pem = std::fs::read_to_string(self.dir.join("k1.pem")).unwrap();
        let claims = keys::TokenClaims {
            subject: "load".into(),
            ttl: Duration::from_secs(3600),
            ..Default::default()
        };
        keys::mint(&pem, "k1", &claims, testament::driver::SystemClock::wall()).unwrap()
    }

    /// Resident memory, bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    /// CPU time used in its own code and in the kernel.
    fn cpu_split(&self) -> (Duration, Duration) {
        cpu_fields(&format!("/proc/{}/stat", self.child.id()))
    }
}

fn cpu_of(stat: &str) -> Duration {
    let (user, system) = cpu_fields(stat);
    user + system
}

/// User and system CPU time.
fn cpu_fields(stat: &str) -> (Duration, Duration) {
    let text = std::fs::read_to_string(stat).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &text[text.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here, in
    // clock ticks (100 per second on Linux).
    let ticks = |t: u64| Duration::from_millis(t * 10);
    (ticks(f[11]), ticks(f[12]))
}

fn connect_packet(id: &str, token: &str) -> Vec<u8> {
    let mut c = Connect::new(ProtocolVersion::V311, MqttString::try_from(id).unwrap());
    c.keep_alive = 0;
    c.username = Some(MqttString::from_static("load"));
    c.password = Some(Bytes::copy_from_slice(token.as_bytes()));
    Packet::Connect(Box::new(c))
        .to_vec(ProtocolVersion::V311)
        .unwrap()
}

/// Connects from the loopback address `127.0.0.<source>` (spreading the
/// ephemeral ports over several addresses: a storm on one address runs out
/// of them, and TIME_WAIT keeps them) and waits for the 4-byte 3.1.1
/// CONNACK.
fn connect(addr: SocketAddr, source: u8, packet: &[u8]) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    let from: SocketAddr = format!("127.0.0.{source}:0").parse().unwrap();
    sock.bind(&from.into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_nodelay(true).unwrap();
    s.write_all(packet).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    s
}

fn idle(b: &Broker, n: usize, token: &str) {
    // One session first, so what is measured is the cost of more of them.
    let _first = connect(b.addr, 2, &connect_packet("warm", token));
    std::thread::sleep(Duration::from_millis(300));
    let before = b.rss();
    let socks: Vec<TcpStream> = (0..n)
        .map(|i| {
            let source = 2 + (i % 8) as u8;
            connect(b.addr, source, &connect_packet(&format!("idle-{i}"), token))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let after = b.rss();
    // What the connects freed (the tables that grew left their old
    // buffers) goes back to the OS within the allocator's decay time.
    std::thread::sleep(Duration::from_secs(11));
    let settled = b.rss();
    let per = |rss: u64| rss.saturating_sub(before) as f64 / n as f64;
    println!("\n## Idle sessions\n");
    println!(
        "| connections | broker RSS before | after 0.5 s | after 11.5 s | per connection (0.5 s) | per connection (11.5 s) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| {n} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.0} B | {:.0} B |",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        settled as f64 / 1048576.0,
        per(after),
        per(settled),
    );
    drop(socks);
}

fn storm(b: &Broker, n: usize, token: &str) {
    // The baseline: raw RS256 verification in this process, per CPU-second.
    let jwks = std::fs::read_to_string(b.dir.join("jwks.json")).unwrap();
    let jwk_set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk_set.keys[0]).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    let self_cpu = || cpu_of("/proc/self/stat");
    let (c0, t0) = (self_cpu(), Instant::now());
    let mut verified = 0u64;
    while t0.elapsed() < Duration::from_secs(2) {
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).unwrap();
        verified += 1;
    }
    let raw_per_cpu = verified as f64 / (self_cpu() - c0).as_secs_f64();

    let threads = 4;
    let (user0, system0) = b.cpu_split();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let addr = b.addr;
            let token = token.to_owned();
            let per_thread = n / threads;
            std::thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                for i in 0..per_thread {
                    let p = connect_packet(&format!("storm-{t}-{i}"), &token);
                    let s0 = Instant::now();
                    let source = 20 + (t * 8 + i % 8) as u8;
                    let s = connect(addr, source, &p);
                    slowest = slowest.max(s0.elapsed());
                    drop(s);
                }
                slowest
            })
        })
        .collect();
    let slowest = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap();
    let wall = start.elapsed();
    let (user1, system1) = b.cpu_split();
    let system = system1 - system0;
    let cpu = user1 - user0 + system;
    let per_cpu = n as f64 / cpu.as_secs_f64();
    println!("\n## Connect storm (RS256)\n");
    println!(
        "| CONNACKs | wall | broker CPU | CONNACKs per broker CPU-s | raw RS256 verifications per CPU-s (same process) | ratio | slowest connect |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {n} | {:.2} s | {:.2} s | {per_cpu:.0} | {raw_per_cpu:.0} | {:.2}× | {:.1} ms |",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        per_cpu / raw_per_cpu,
        slowest.as_secs_f64() * 1e3
    );
    // What the kernel alone costs the broker per CONNACK (accept, the
    // loopback exchange, the close), and with one raw verification added:
    // no broker that verifies every token goes past the second rate.
    let kernel_us = system.as_secs_f64() * 1e6 / n as f64;
    let verify_us = 1e6 / raw_per_cpu;
    println!(
        "\nbroker CPU in the kernel: {:.2} s of {:.2} s, {kernel_us:.1} µs per CONNACK. Ceilings: {:.0} CONNACKs per CPU-s if the broker's code took no time, {:.0} if it did nothing but verify the token ({verify_us:.1} µs).",
        system.as_secs_f64(),
        cpu.as_secs_f64(),
        1e6 / kernel_us.max(1e-9),
        1e6 / (kernel_us + verify_us).max(1e-9),
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (idle_n, storm_n) = if quick {
        (200, 200)
    } else {
        (count("LOAD_IDLE", 10_000), count("LOAD_STORM", 10_000))
    };
    let b = Broker::start();
    let token = b.token();
    println!("# load: the testament binary (default driver) on loopback");
    idle(&b, idle_n, &token);
    storm(&b, storm_n, &token);
}
