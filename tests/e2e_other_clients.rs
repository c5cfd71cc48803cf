//! The story of `DESIGN.md` with clients that are not ours: the Python
//! paho-mqtt client, and mosquitto's `mosquitto_sub` / `mosquitto_pub`.
//! Where a client is not installed the test says so and skips — except in
//! CI (`.ci/run` installs both), where a missing client fails it.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::e2e::{Running, token};
use common::hub::default_acl;
use common::jwt;
use testament::auth::JwtConfig;
use testament::broker::BrokerConfig;
use testament::config::DriverKind;
use testament::session::{CredentialExpiry, SessionConfig};

fn start(kind: DriverKind) -> Running {
    let config = BrokerConfig {
        session: SessionConfig {
            credential_expiry: CredentialExpiry::Keep,
            ..SessionConfig::default()
        },
        ..BrokerConfig::default()
    };
    Running::start(kind, config, JwtConfig::default(), default_acl())
}

/// Whether `program probe…` runs (and, with `must_succeed`, exits 0).
fn have(program: &str, probe: &[&str], must_succeed: bool) -> bool {
    let ok = Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success() || !must_succeed);
    if !ok {
        common::missing(&format!("`{program} {}`", probe.join(" ")));
    }
    ok
}

#[test]
fn paho_monitor_gets_the_will_after_rotation_and_expiry() {
    if !have("python3", &["-c", "import paho.mqtt.client"], true) {
        return;
    }
    let b = start(DriverKind::Smol);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/story_paho.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(b.addr.ip().to_string())
        .arg(b.addr.port().to_string())
        .arg(token(&jwt::rsa_a(), "paho-srv", 2))
        .arg(token(&jwt::rsa_a(), "paho-mon", 3600))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    b.rotate_keys(&[&jwt::rsa_b()]);
    std::thread::sleep(Duration::from_millis(2500));
    writeln!(child.stdin.take().unwrap(), "crash").unwrap();
    let seen: Vec<String> = out.lines().map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        seen,
        ["trusted/paho-srv/state up", "trusted/paho-srv/state down"]
    );
    b.stop();
}

#[test]
fn mosquitto_clients_get_the_will_after_rotation_and_expiry() {
    // `--help` exits 1 there: that it runs is enough.
    if !have("mosquitto_pub", &["--help"], false) || !have("mosquitto_sub", &["--help"], false) {
        return;
    }
    let b = start(DriverKind::Blocking);
    let (host, port) = (b.addr.ip().to_string(), b.addr.port().to_string());
    let srv_token = token(&jwt::rsa_a(), "mq-srv", 2);
    let mon_token = token(&jwt::rsa_a(), "mq-mon", 3600);
    let base = |id: &str, user: &str, tok: &str| {
        let mut c = Command::new("mosquitto_sub");
        c.args(["-h", &host, "-p", &port, "-i", id, "-u", user, "-P", tok]);
        c
    };
    let monitor = base("mq-mon", "mq-mon", &mon_token)
        .args(["-t", "trusted/+/state", "-v", "-C", "2", "-W", "10"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut server = base("mq-srv", "mq-srv", &srv_token)
        .args(["-t", "trusted/mq-srv/cmd"])
        .args([
            "--will-topic",
            "trusted/mq-srv/state",
            "--will-payload",
            "down",
        ])
        .args(["--will-retain", "--will-qos", "1"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let st = Command::new("mosquitto_pub")
        .args([
            "-h",
            &host,
            "-p",
            &port,
            "-i",
            "mq-srv-up",
            "-u",
            "mq-srv",
            "-P",
            &srv_token,
        ])
        .args(["-t", "trusted/mq-srv/state", "-m", "up", "-r", "-q", "1"])
        .status()
        .unwrap();
    assert!(st.success());
    b.rotate_keys(&[&jwt::rsa_b()]);
    std::thread::sleep(Duration::from_millis(2500));
    server.kill().unwrap(); // SIGKILL: no DISCONNECT
    let _ = server.wait();
    let out = monitor.wait_with_output().unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines,
        ["trusted/mq-srv/state up", "trusted/mq-srv/state down"]
    );
    b.stop();
}
