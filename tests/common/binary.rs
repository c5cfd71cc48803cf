//! The `testament` binary as an operator runs it: a folder with its config,
//! a JWKS and an ACL file, its log, and — for a durable broker — its store.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // a real process runs on real time

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use testament::keys;

use super::e2e::{V3, unix_now};

/// An ACL letting everyone do anything under `open/#`.
pub const OPEN_ACL: &str = r#"
[[rules]]
effect = "allow"
ops = ["all"]
filter = "open/#"
name = "open"
"#;

/// A broker process.
pub struct Served {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub log: PathBuf,
    pub dir: PathBuf,
}

/// An empty folder for a broker named `name`.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("testament-bin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port nothing listens on now, on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Served {
    /// A broker on a fresh folder named after `name`, with the `driver`,
    /// an ES256 key `k1`, [`OPEN_ACL`], and `extra` appended to its config
    /// (its own sections: `[storage]`, `[limits]`…).
    pub fn start(name: &str, driver: &str, extra: &str) -> Self {
        Self::start_in(name, driver, extra, |_| {})
    }

    /// [`Served::start`], with `prepare` run on the folder before the
    /// broker starts (its data folder is `dir/data`); `{dir}` in `extra`
    /// is the folder.
    pub fn start_in(
        name: &str,
        driver: &str,
        extra: &str,
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        let dir = fresh_dir(name);
        prepare(&dir);
        keys::generate(keys::algorithm("ES256").unwrap(), "k1", &dir).unwrap();
        std::fs::write(dir.join("acl.toml"), OPEN_ACL).unwrap();
        let port = free_port();
        let extra = extra.replace("{dir}", &dir.display().to_string());
        let config = format!(
            "listen = [\"127.0.0.1:{port}\"]\ndriver = \"{driver}\"\ndata_dir = \"{}\"\n[jwt]\njwks = \"{}\"\n[acl]\npath = \"{}\"\n{extra}",
            dir.join("data").display(),
            dir.join("jwks.json").display(),
            dir.join("acl.toml").display()
        );
        std::fs::write(dir.join("testament.toml"), config).unwrap();
        Self::launch(dir, port)
    }

    /// Starts the broker on `dir/testament.toml`, listening on `port`.
    fn launch(dir: PathBuf, port: u16) -> Self {
        let child = Self::spawn(&dir, "log.txt");
        let served = Served {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            log: dir.join("log.txt"),
            dir,
        };
        served.await_listening();
        served
    }

    /// A broker on a fresh folder named after `name` with `config` as its
    /// whole configuration but for the address it listens on and its data
    /// folder (`dir/data`), written before it.
    pub fn start_with_config(name: &str, config: &str) -> Self {
        let dir = fresh_dir(name);
        let port = free_port();
        let text = format!(
            "listen = [\"127.0.0.1:{port}\"]\ndata_dir = \"{}\"\n{config}",
            dir.join("data").display()
        );
        std::fs::write(dir.join("testament.toml"), text).unwrap();
        Self::launch(dir, port)
    }

    fn spawn(dir: &std::path::Path, log: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_testament"))
            .args(["serve", "--config"])
            .arg(dir.join("testament.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(log)).unwrap())
            .spawn()
            .unwrap()
    }

    fn await_listening(&self) {
        assert!(
            self.wait_log("testament listening on", Duration::from_secs(10)),
            "{}",
            self.log()
        );
    }

    /// Stops the process with `signal` (`KILL`, `TERM`), waits for it to
    /// end, and starts it again on the same config, keys and data; its log
    /// starts anew.
    pub fn restart(&mut self, signal: &str) -> ExitStatus {
        let status = self.stop(signal);
        let _ = std::fs::rename(&self.log, self.dir.join(format!("log-before-{signal}.txt")));
        self.child = Self::spawn(&self.dir, "log.txt");
        self.await_listening();
        status
    }

    /// Sends `signal` and waits (at most 10 s) for the process to end.
    pub fn stop(&mut self, signal: &str) -> ExitStatus {
        self.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "still running: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn signal(&self, name: &str) {
        let st = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn token(&self, kid: &str, sub: &str) -> String {
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

    pub fn client(&self, id: &str, kid: &str) -> Result<V3, String> {
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
