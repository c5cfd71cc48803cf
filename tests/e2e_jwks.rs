//! A key set fetched from an HTTPS endpoint (`jwt.jwks_url`): a local
//! HTTPS server made here (rcgen certificates, rustls) plays the identity
//! provider. The binary fetches it at start, follows a rotation as soon as
//! a token names the new `kid` (rate-limited), keeps the last good set
//! when the endpoint fails, audits every change, and does not start
//! without it.

#![allow(clippy::disallowed_methods)] // a real broker runs on real time

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::binary::Served;
use common::e2e::{V3, unix_now};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use testament::driver::tls::{Tls, TlsFiles};
use testament::keys;

/// What the endpoint answers: status, Cache-Control, body.
type Answer = (u16, &'static str, String);

/// A one-path HTTPS server on 127.0.0.1 that counts its requests.
struct Idp {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
    ca: PathBuf,
}

impl Idp {
    fn start(dir: &Path, first: Answer) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test IdP CA");
        let key = KeyPair::generate().unwrap();
        let ca = dir.join("idp-ca.pem");
        std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
        let issuer = Issuer::new(params, key);
        let server = CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let cert = server.signed_by(&server_key, &issuer).unwrap();
        std::fs::write(dir.join("idp.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("idp.key"), server_key.serialize_pem()).unwrap();
        let tls = Tls::load(TlsFiles {
            cert: dir.join("idp.pem"),
            key: dir.join("idp.key"),
            client_ca: None,
            require_client_cert: false,
        })
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new(first));
        let requests = Arc::new(AtomicUsize::new(0));
        let (a, r) = (answer.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let conn = rustls::ServerConnection::new(tls.config()).unwrap();
                let mut s = rustls::StreamOwned::new(conn, stream);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                if !head.starts_with(b"GET /certs ") {
                    continue;
                }
                r.fetch_add(1, Ordering::SeqCst);
                let (status, cache, body) = a.lock().unwrap().clone();
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nCache-Control: {cache}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        });
        Self {
            port,
            answer,
            requests,
            ca,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A key set with one ES256 key `kid` in its own folder.
fn key_set(dir: &Path, kid: &str) -> (String, String) {
    let d = dir.join(kid);
    keys::generate(keys::algorithm("ES256").unwrap(), kid, &d).unwrap();
    (
        std::fs::read_to_string(d.join("jwks.json")).unwrap(),
        std::fs::read_to_string(d.join(format!("{kid}.pem"))).unwrap(),
    )
}

fn token(pem: &str, kid: &str, sub: &str) -> String {
    let claims = keys::TokenClaims {
        subject: sub.into(),
        ttl: Duration::from_secs(3600),
        ..Default::default()
    };
    keys::mint(
        pem,
        kid,
        &claims,
        testament::time::Timestamp::from_secs(unix_now()),
    )
    .unwrap()
}

fn connects(served: &Served, id: &str, token: &str) -> bool {
    V3::connect(V3::options(served.addr, id, id, token)).is_ok()
}

const RULES: &str = "[[acl.rules]]\neffect = \"allow\"\nops = [\"all\"]\nfilter = \"open/#\"\n";

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("testament-jwks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_key_set_follows_its_endpoint_and_survives_its_failures() {
    let dir = work_dir("follow");
    let (set1, pem1) = key_set(&dir, "k1");
    let (set2, pem2) = key_set(&dir, "k2");
    let idp = Idp::start(&dir, (200, "public, max-age=3600", set1));
    let served = Served::start_with_config(
        "jwks-follow",
        &format!(
            "[jwt]\njwks_url = \"https://127.0.0.1:{}/certs\"\njwks_ca = \"{}\"\njwks_min_interval_secs = 1\n{RULES}",
            idp.port,
            idp.ca.display()
        ),
    );
    assert!(
        served.log().contains("key set from https://127.0.0.1:"),
        "{}",
        served.log()
    );
    assert!(
        connects(&served, "a", &token(&pem1, "k1", "a")),
        "{}",
        served.log()
    );
    assert_eq!(idp.requests(), 1);

    // The provider rotates: k2 replaces k1. Its max-age is an hour, but the
    // first token naming k2 asks for a fresh copy.
    idp.set((200, "public, max-age=3600", set2));
    let t2 = token(&pem2, "k2", "b");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tries = 0;
    while !connects(&served, "b", &t2) {
        tries += 1;
        assert!(
            Instant::now() < deadline,
            "k2 never accepted: {}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(tries >= 1, "the first k2 token came before any refetch");
    assert!(served.wait_log("result=changed", Duration::from_secs(2)));
    let log = served.log();
    assert!(
        log.contains("event=keyset") && log.contains("kids=k2"),
        "{log}"
    );
    // k1 is gone with its key.
    assert!(!connects(&served, "a", &token(&pem1, "k1", "a")));

    // A reload (SIGHUP) fetches the key set again too. First the fetch
    // the refused k1 token asked for passes, then all is quiet (max-age is
    // an hour).
    std::thread::sleep(Duration::from_millis(1500));
    let before = idp.requests();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(idp.requests(), before, "fetched without a reason");
    served.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while idp.requests() == before {
        assert!(
            Instant::now() < deadline,
            "no fetch after SIGHUP: {}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Unknown kids in a burst: fetches at most once a second.
    let before = idp.requests();
    let started = Instant::now();
    let (_, pem3) = key_set(&dir, "k3");
    let t3 = token(&pem3, "k3", "c");
    for _ in 0..15 {
        assert!(!connects(&served, "c", &t3));
    }
    let fetched = idp.requests() - before;
    let allowed = started.elapsed().as_secs() as usize + 2;
    assert!(
        fetched <= allowed,
        "{fetched} fetches in {:?}",
        started.elapsed()
    );

    // The endpoint fails: the last good set stays, the failure is audited.
    idp.set((500, "no-cache", "oops".into()));
    let _ = connects(&served, "c", &t3);
    assert!(
        served.wait_log("result=failed", Duration::from_secs(5)),
        "{}",
        served.log()
    );
    assert!(connects(&served, "b", &t2), "{}", served.log());
    // Something that is not a key set: refused the same way.
    idp.set((200, "no-cache", "{\"keys\": 7}".into()));
    std::thread::sleep(Duration::from_millis(1100));
    let _ = connects(&served, "c", &t3);
    std::thread::sleep(Duration::from_millis(500));
    assert!(connects(&served, "b", &t2), "{}", served.log());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `testament COMMAND --config FILE`, which must exit 2: its standard error.
fn refused(command: &str, config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_testament"))
        .args([command, "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn without_its_key_set_the_broker_does_not_start() {
    let dir = work_dir("start");
    let idp = Idp::start(&dir, (503, "no-cache", String::new()));
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"127.0.0.1:0\"]\ndata_dir = \"{}\"\n[jwt]\njwks_url = \"https://127.0.0.1:{}/certs\"\njwks_ca = \"{}\"\n",
            dir.join("data").display(),
            idp.port,
            idp.ca.display()
        ),
    )
    .unwrap();
    let err = refused("serve", &config);
    assert!(
        err.contains("jwt.jwks_url https://127.0.0.1:") && err.contains("503"),
        "{err}"
    );
    // An endpoint whose certificate is not from the CA given: refused too.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(&format!("jwks_ca = \"{}\"\n", idp.ca.display()), ""),
    )
    .unwrap();
    idp.set((200, "no-cache", "{\"keys\": []}".into()));
    let err = refused("serve", &config);
    assert!(err.contains("jwt.jwks_url"), "{err}");
    assert_eq!(idp.requests(), 1, "the untrusted endpoint was not read");
    // A plain http URL is a configuration error.
    std::fs::write(&config, "[jwt]\njwks_url = \"http://127.0.0.1:1/certs\"\n").unwrap();
    assert!(refused("check", &config).contains(":2: jwt.jwks_url: "));
    let _ = std::fs::remove_dir_all(&dir);
}
