//! TLS end to end, both drivers: tokens over TLS, client certificates
//! (mTLS) naming the principal — a will from such a client is authorized
//! against its identity after the connection is gone — a required
//! certificate refused when missing, and mosquitto's clients with
//! `--cafile` (and `--cert`/`--key`). Certificates are made here with rcgen.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::e2e::{Running, V3, token};
use common::hub::default_acl;
use common::jwt;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rumqttc::{LastWill, QoS, TlsConfiguration, Transport};
use testament::auth::JwtConfig;
use testament::broker::BrokerConfig;
use testament::config::DriverKind;
use testament::driver::tls::{Tls, TlsFiles};
use testament::driver::{CertificatePrincipal, DriverConfig};

struct Pki {
    dir: PathBuf,
    ca: String,
}

struct ClientCert {
    cert: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> (Self, Issuer<'static, KeyPair>) {
        let dir = std::env::temp_dir().join(format!("testament-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "testament test CA");
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap().pem();
        std::fs::write(dir.join("ca.pem"), &ca).unwrap();
        let issuer = Issuer::new(params, key);
        let mut server =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_key = KeyPair::generate().unwrap();
        let cert = server.signed_by(&server_key, &issuer).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        (Self { dir, ca }, issuer)
    }

    fn client(&self, issuer: &Issuer<'static, KeyPair>, cn: &str) -> ClientCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        std::fs::write(self.dir.join(format!("{cn}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{cn}.key")), key.serialize_pem()).unwrap();
        ClientCert {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn tls(&self, client_ca: bool, require: bool) -> Tls {
        Tls::load(TlsFiles {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
            client_ca: client_ca.then(|| self.dir.join("ca.pem")),
            require_client_cert: require,
        })
        .unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(kind: DriverKind, tls: Tls, principal: Option<CertificatePrincipal>) -> Running {
    Running::start_tls(
        kind,
        BrokerConfig::default(),
        JwtConfig::default(),
        default_acl(),
        DriverConfig::default(),
        None,
        Some(tls),
        principal,
    )
}

fn options(
    b: &Running,
    pki: &Pki,
    id: &str,
    token: Option<&str>,
    cert: Option<&ClientCert>,
) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, "localhost", b.addr.port());
    if let Some(t) = token {
        o.set_credentials(id, t);
    }
    o.set_keep_alive(Duration::from_secs(30));
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: pki.ca.clone().into_bytes(),
        alpn: None,
        client_auth: cert.map(|c| (c.cert.clone().into_bytes(), c.key.clone().into_bytes())),
    }));
    o
}

fn tokens_over_tls(kind: DriverKind) {
    let (pki, _) = Pki::new(&format!("tok-{}", kind as u8));
    let b = start(kind, pki.tls(false, false), None);
    let t = token(&jwt::rsa_a(), "sub", 3600);
    let sub = V3::connect(options(&b, &pki, "sub", Some(&t), None)).unwrap();
    sub.subscribe("open/#", QoS::AtLeastOnce);
    let t = token(&jwt::rsa_a(), "pub", 3600);
    let publisher = V3::connect(options(&b, &pki, "pub", Some(&t), None)).unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher
            .client
            .publish("open/x", qos, false, "secret")
            .unwrap();
        let m = sub
            .next_message(Duration::from_secs(5))
            .expect("delivered over TLS");
        assert_eq!(&m.payload[..], b"secret");
    }
    b.stop();
}

#[test]
fn smol_tokens_over_tls() {
    tokens_over_tls(DriverKind::Smol);
}

#[test]
fn blocking_tokens_over_tls() {
    tokens_over_tls(DriverKind::Blocking);
}

#[test]
fn mio_tokens_over_tls() {
    tokens_over_tls(DriverKind::Mio);
}

fn certificate_identity(kind: DriverKind) {
    let (pki, issuer) = Pki::new(&format!("mtls-{}", kind as u8));
    let b = start(
        kind,
        pki.tls(true, false),
        Some(CertificatePrincipal::CommonName),
    );
    let t = token(&jwt::rsa_a(), "mon", 3600);
    let monitor = V3::connect(options(&b, &pki, "mon", Some(&t), None)).unwrap();
    monitor.subscribe("trusted/+/state", QoS::AtLeastOnce);
    // No token: the certificate names the principal `cert-srv`.
    let cert = pki.client(&issuer, "cert-srv");
    let mut o = options(&b, &pki, "cert-srv", None, Some(&cert));
    o.set_last_will(LastWill::new(
        "trusted/cert-srv/state",
        "down",
        QoS::AtLeastOnce,
        false,
    ));
    let server = V3::connect(o).unwrap();
    server
        .client
        .publish("trusted/cert-srv/state", QoS::AtLeastOnce, false, "up")
        .unwrap();
    let m = monitor.next_message(Duration::from_secs(5)).expect("up");
    assert_eq!(&m.payload[..], b"up", "{m:?}");
    // Its ACL is that of principal cert-srv: not someone else's tree.
    server
        .client
        .publish("trusted/other/state", QoS::AtLeastOnce, false, "nope")
        .unwrap();
    assert!(monitor.next_message(Duration::from_millis(500)).is_none());
    // The will is authorized against the certificate's identity once the
    // connection (and its certificate) are gone.
    server.crash();
    let m = monitor
        .next_message(Duration::from_secs(5))
        .expect("the will");
    assert_eq!(&m.payload[..], b"down");
    // Without a certificate and without a token: refused.
    assert!(V3::connect(options(&b, &pki, "nobody", None, None)).is_err());
    b.stop();
}

#[test]
fn smol_a_client_certificate_names_the_principal_and_its_will_is_sent() {
    certificate_identity(DriverKind::Smol);
}

#[test]
fn blocking_a_client_certificate_names_the_principal_and_its_will_is_sent() {
    certificate_identity(DriverKind::Blocking);
}

#[test]
fn mio_a_client_certificate_names_the_principal_and_its_will_is_sent() {
    certificate_identity(DriverKind::Mio);
}

#[test]
fn a_required_client_certificate_is_refused_when_missing() {
    let (pki, issuer) = Pki::new("required");
    let b = start(
        DriverKind::Smol,
        pki.tls(true, true),
        Some(CertificatePrincipal::CommonName),
    );
    assert!(V3::connect(options(&b, &pki, "anon", None, None)).is_err());
    let cert = pki.client(&issuer, "dev-7");
    assert!(V3::connect(options(&b, &pki, "dev-7", None, Some(&cert))).is_ok());
    b.stop();
}

#[test]
fn mosquitto_clients_over_tls_with_and_without_client_certificates() {
    let installed = Command::new("mosquitto_pub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !installed {
        common::missing("mosquitto_pub (Debian mosquitto-clients)");
        return;
    }
    let (pki, issuer) = Pki::new("mosquitto");
    let b = start(
        DriverKind::Blocking,
        pki.tls(true, false),
        Some(CertificatePrincipal::CommonName),
    );
    let port = b.addr.port().to_string();
    let ca = pki.dir.join("ca.pem");
    let mon = token(&jwt::rsa_a(), "mq-mon", 3600);
    let monitor = Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &port, "--cafile"])
        .arg(&ca)
        .args(["-i", "mq-mon", "-u", "mq-mon", "-P", &mon])
        .args(["-t", "trusted/+/state", "-v", "-C", "2", "-W", "10"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A token over TLS.
    let t = token(&jwt::rsa_a(), "mq-tok", 3600);
    let st = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "--cafile"])
        .arg(&ca)
        .args(["-i", "mq-tok", "-u", "mq-tok", "-P", &t])
        .args(["-t", "trusted/mq-tok/state", "-m", "tok", "-q", "1"])
        .status()
        .unwrap();
    assert!(st.success());
    // A client certificate instead of a token.
    pki.client(&issuer, "mq-cert");
    let st = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "--cafile"])
        .arg(&ca)
        .arg("--cert")
        .arg(pki.dir.join("mq-cert.pem"))
        .arg("--key")
        .arg(pki.dir.join("mq-cert.key"))
        .args([
            "-i",
            "mq-cert",
            "-t",
            "trusted/mq-cert/state",
            "-m",
            "cert",
            "-q",
            "1",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let out = monitor.wait_with_output().unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        printed.lines().collect::<Vec<_>>(),
        ["trusted/mq-tok/state tok", "trusted/mq-cert/state cert"]
    );
    b.stop();
}
