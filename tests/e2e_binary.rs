//! The `testament` binary as an operator runs it: a config file, a JWKS and
//! an ACL file re-read when they change or on SIGHUP (a file that does not
//! parse is refused and the old one stays), SIGTERM for a graceful stop, a
//! bad config refused with exit code 2.

#![allow(clippy::disallowed_methods)] // a real process runs on real time

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::e2e::{V3, unix_now};
use rumqttc::QoS;
use testament::keys;

struct Served {
    child: Child,
    addr: std::net::SocketAddr,
    log: PathBuf,
    dir: PathBuf,
}

impl Served {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn signal(&self, name: &str) {
        let st = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn token(&self, kid: &str, sub: &str) -> String {
        let pem = std::fs::read_to_string(self.dir.join(format!("{kid}.pem"))).unwrap();
        let claims = keys::TokenClaims {
            subject: sub.into(),
            ttl: Duration::from_secs(3600),
            ..Default::default()
        };
        keys::mint(
            &pem,
            kid,
            &claims,
            testament::time::Timestamp::from_secs(unix_now()),
        )
        .unwrap()
    }

    fn client(&self, id: &str, kid: &str) -> Result<V3, String> {
        V3::connect(V3::options(self.addr, id, id, &self.token(kid, id)))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const OPEN_ACL: &str = r#"
[[rules]]
effect = "allow"
ops = ["all"]
filter = "open/#"
name = "open"
"#;

const CLOSED_ACL: &str = r#"
[[rules]]
effect = "deny"
ops = ["publish"]
filter = "open/#"
name = "frozen"

[[rules]]
effect = "allow"
ops = ["all"]
filter = "open/#"
name = "open"
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(name: &str, driver: &str) -> Served {
    let dir = std::env::temp_dir().join(format!("testament-bin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    keys::generate(keys::algorithm("ES256").unwrap(), "k1", &dir).unwrap();
    std::fs::write(dir.join("acl.toml"), OPEN_ACL).unwrap();
    let port = free_port();
    let config = format!(
        "listen = [\"127.0.0.1:{port}\"]\ndriver = \"{driver}\"\n[jwt]\njwks = \"{}\"\n[acl]\npath = \"{}\"\n",
        dir.join("jwks.json").display(),
        dir.join("acl.toml").display()
    );
    std::fs::write(dir.join("testament.toml"), config).unwrap();
    let log = dir.join("log.txt");
    let child = Command::new(env!("CARGO_BIN_EXE_testament"))
        .args(["serve", "--config"])
        .arg(dir.join("testament.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let served = Served {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        log,
        dir,
    };
    assert!(
        served.wait_log("testament listening on", Duration::from_secs(10)),
        "{}",
        served.log()
    );
    served
}

fn delivered(sub: &V3, publisher: &V3, topic: &str) -> bool {
    publisher
        .client
        .publish(topic, QoS::AtLeastOnce, false, "x")
        .unwrap();
    sub.next_message(Duration::from_secs(1)).is_some()
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn reload_on_change(driver: &str) {
    let s = serve(&format!("acl-{driver}"), driver);
    let sub = s.client("sub", "k1").unwrap();
    sub.subscribe("open/#", QoS::AtLeastOnce);
    let publisher = s.client("pub", "k1").unwrap();
    assert!(delivered(&sub, &publisher, "open/1"));

    // The ACL file changes on disk: the next publish is judged by it.
    write_atomically(&s.dir.join("acl.toml"), CLOSED_ACL);
    assert!(s.wait_log("reloaded the key set and the ACL", Duration::from_secs(10)));
    assert!(!delivered(&sub, &publisher, "open/2"));

    // A file that does not parse is refused; the rules in force stay.
    write_atomically(&s.dir.join("acl.toml"), "[[rules]]\neffect = \"perhaps\"\n");
    assert!(
        s.wait_log("reload refused", Duration::from_secs(10)),
        "{}",
        s.log()
    );
    assert!(!delivered(&sub, &publisher, "open/3"));
    assert!(s.log().contains("frozen"), "the audit names the rule");
}

#[test]
fn smol_the_acl_file_is_reread_when_it_changes() {
    reload_on_change("smol");
}

#[test]
fn blocking_the_acl_file_is_reread_when_it_changes() {
    reload_on_change("blocking");
}

#[test]
fn sighup_rotates_the_key_set_and_sigterm_stops_gracefully() {
    let s = serve("keys", "smol");
    let old = s.client("old-key", "k1").unwrap();
    // Rotation: publish k2, withdraw k1, tell the broker.
    keys::generate(keys::algorithm("EdDSA").unwrap(), "k2", &s.dir).unwrap();
    keys::remove("k1", &s.dir.join("jwks.json")).unwrap();
    s.signal("HUP");
    assert!(s.wait_log("reloaded the key set and the ACL", Duration::from_secs(10)));
    assert!(s.client("late-old", "k1").is_err(), "k1 no longer logs in");
    assert!(s.client("late-new", "k2").is_ok(), "k2 does");
    // The session opened with k1 is untouched by the rotation.
    old.subscribe("open/#", QoS::AtMostOnce);

    let mut s = s;
    s.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "still running: {}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(s.log().contains("shutting down"));
    assert!(old.closed_within(Duration::from_secs(5)));
}

#[test]
fn a_bad_config_stops_the_broker_with_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("testament-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[limits]\noffline_overflow = \"drop_all\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_testament"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("limits.offline_overflow"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
