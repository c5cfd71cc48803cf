//! MQTT over WebSockets on the real binary (`[websocket]`): a raw client on
//! tungstenite and our codec on every driver (ws), and over TLS (wss);
//! the upgrade refused for another path or without the `mqtt`
//! subprotocol; a text frame closes the connection; paho-mqtt's websocket
//! transport and MQTT.js (the client browsers run; `tests/clients`, npm)
//! over ws and wss carry a will.

#![allow(clippy::disallowed_methods)] // a real broker runs on real time

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::binary::{Served, free_port};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rumqttc::QoS;
use testament::codec::{
    Bytes, Connect, ConnectReasonCode, Decoder, Encode as _, MqttString, Packet, ProtocolVersion,
    Subscribe, Subscription, TopicFilter,
};
use tungstenite::client::IntoClientRequest as _;
use tungstenite::{Message, WebSocket};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// An MQTT client inside WebSocket frames.
struct WsRaw<S: std::io::Read + std::io::Write> {
    ws: WebSocket<S>,
    decoder: Decoder,
}

impl<S: std::io::Read + std::io::Write> WsRaw<S> {
    fn send(&mut self, p: Packet) {
        let bytes = p.to_vec(V5).unwrap();
        self.ws.send(Message::Binary(bytes.into())).unwrap();
    }

    /// The next packet; `None` when the connection ended.
    fn next(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self.decoder.decode().ok()? {
                return Some(p);
            }
            match self.ws.read().ok()? {
                Message::Binary(b) => self.decoder.feed(&b),
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }
}

/// The upgrade on `stream` for `path`, with the `mqtt` subprotocol unless
/// `protocol` is `None`.
fn upgrade<S: std::io::Read + std::io::Write>(
    stream: S,
    url: &str,
    protocol: Option<&str>,
) -> Result<WsRaw<S>, String> {
    let mut request = url.into_client_request().unwrap();
    if let Some(p) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    match tungstenite::client(request, stream) {
        Ok((ws, response)) => {
            let chosen = response.headers().get("Sec-WebSocket-Protocol");
            assert_eq!(chosen.and_then(|v| v.to_str().ok()), Some("mqtt"));
            Ok(WsRaw {
                ws,
                decoder: Decoder::new(1 << 20).with_version(V5),
            })
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn tcp(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// CONNECT as `id` with a token of `served`'s key, then SUBACK for
/// `open/#`.
fn connect_and_subscribe<S: std::io::Read + std::io::Write>(
    c: &mut WsRaw<S>,
    served: &Served,
    id: &'static str,
) {
    let mut connect = Connect::new(V5, MqttString::from_static(id));
    connect.username = Some(MqttString::from_static(id));
    connect.password = Some(Bytes::from(served.token("k1", id)));
    c.send(Packet::Connect(Box::new(connect)));
    assert!(
        matches!(c.next(), Some(Packet::ConnAck(a)) if a.reason_code == ConnectReasonCode::Success),
        "{}",
        served.log()
    );
    let mut sub = Subscription {
        filter: TopicFilter::from_static("open/#"),
        options: Default::default(),
    };
    sub.options.qos = testament::codec::QoS::AtLeastOnce;
    c.send(Packet::Subscribe(Subscribe {
        packet_id: testament::codec::PacketId::new(1).unwrap(),
        properties: Default::default(),
        subscriptions: vec![sub],
    }));
    assert!(
        matches!(c.next(), Some(Packet::SubAck(_))),
        "{}",
        served.log()
    );
}

/// A message published over plain MQTT reaches the WebSocket client.
fn delivered<S: std::io::Read + std::io::Write>(c: &mut WsRaw<S>, served: &Served) {
    let p = served.client("pub", "k1").unwrap();
    p.client
        .publish("open/x", QoS::AtLeastOnce, false, "over ws")
        .unwrap();
    match c.next() {
        Some(Packet::Publish(m)) => assert_eq!(&m.payload[..], b"over ws"),
        other => panic!("{other:?}: {}", served.log()),
    }
}

#[test]
fn mqtt_over_websockets_on_every_driver() {
    for driver in ["mio", "smol", "blocking"] {
        let port = free_port();
        let served = Served::start(
            &format!("ws-{driver}"),
            driver,
            &format!("[websocket]\nlisten = [\"127.0.0.1:{port}\"]\n"),
        );
        assert!(
            served
                .log()
                .contains(&format!("ws://127.0.0.1:{port}/mqtt")),
            "{}",
            served.log()
        );
        let url = format!("ws://127.0.0.1:{port}/mqtt");
        let mut c = upgrade(tcp(port), &url, Some("mqtt")).unwrap();
        connect_and_subscribe(&mut c, &served, "wsc");
        delivered(&mut c, &served);
        // Another path; no mqtt subprotocol: refused at the upgrade.
        let err = upgrade(
            tcp(port),
            &format!("ws://127.0.0.1:{port}/other"),
            Some("mqtt"),
        )
        .err();
        assert_eq!(err.as_deref(), Some("404 Not Found"), "{driver}");
        let err = upgrade(tcp(port), &url, None).err();
        assert_eq!(err.as_deref(), Some("400 Bad Request"), "{driver}");
        // A text frame closes the connection [MQTT-6.0.0-1].
        let mut t = upgrade(tcp(port), &url, Some("mqtt")).unwrap();
        t.ws.send(Message::Text("hello".into())).unwrap();
        assert!(
            t.next().is_none(),
            "{driver}: still open after a text frame"
        );
        // Plain MQTT on the WebSocket port is not a WebSocket upgrade.
        let mut raw = common::raw::Raw::open(
            format!("127.0.0.1:{port}").parse().unwrap(),
            V5,
            Duration::from_secs(2),
        );
        let connect = Connect::new(V5, MqttString::from_static("plain"));
        raw.send(Packet::Connect(Box::new(connect)));
        assert!(
            raw.next().is_none(),
            "{driver}: MQTT answered on a WebSocket listener"
        );
    }
}

/// A CA and a certificate for 127.0.0.1 in `dir`: `ca.pem`, `server.pem`,
/// `server.key`.
fn certificates(dir: &Path) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "ws test CA");
    let key = KeyPair::generate().unwrap();
    std::fs::write(dir.join("ca.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(params, key);
    let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&server_key, &issuer).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
}

fn wss_served(name: &str, ws: u16, wss: u16) -> Served {
    Served::start_in(
        name,
        "mio",
        &format!(
            "[tls]\ncert = \"{{dir}}/server.pem\"\nkey = \"{{dir}}/server.key\"\n[websocket]\nlisten = [\"127.0.0.1:{ws}\"]\ntls_listen = [\"127.0.0.1:{wss}\"]\n"
        ),
        certificates,
    )
}

#[test]
fn mqtt_over_secure_websockets() {
    let (ws, wss) = (free_port(), free_port());
    let served = wss_served("wss", ws, wss);
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(served.dir.join("ca.pem")).unwrap();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let stream = rustls::StreamOwned::new(conn, tcp(wss));
    let mut c = upgrade(stream, &format!("wss://127.0.0.1:{wss}/mqtt"), Some("mqtt")).unwrap();
    connect_and_subscribe(&mut c, &served, "wssc");
    delivered(&mut c, &served);
}

#[test]
fn paho_over_websockets_carries_a_will() {
    if !common::paho() {
        return;
    }
    let (ws, wss) = (free_port(), free_port());
    let served = wss_served("ws-paho", ws, wss);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ws_paho.py");
    let ca = served.dir.join("ca.pem");
    for (port, ca) in [(ws, None), (wss, Some(&ca))] {
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["127.0.0.1", &port.to_string(), "/mqtt"])
            .arg(served.token("k1", "srv"))
            .arg(served.token("k1", "mon"));
        carries_a_will(cmd, ca, &served, &port.to_string());
    }
}

/// Runs a client script (its CA file last, for wss) that must print that
/// the will came over the WebSocket.
fn carries_a_will(mut cmd: Command, ca: Option<&std::path::PathBuf>, served: &Served, what: &str) {
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: {text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        served.log()
    );
    assert!(
        text.contains("OK will delivered over websocket"),
        "{what}: {text}"
    );
}

#[test]
fn mqttjs_over_websockets_carries_a_will() {
    let clients = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");
    let found = Command::new("node")
        .args(["-e", "require('mqtt')"])
        .current_dir(clients)
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        common::missing("node with MQTT.js (npm install in tests/clients)");
        return;
    }
    let (ws, wss) = (free_port(), free_port());
    let served = wss_served("ws-mqttjs", ws, wss);
    let ca = served.dir.join("ca.pem");
    for (url, ca) in [
        (format!("ws://127.0.0.1:{ws}/mqtt"), None),
        (format!("wss://127.0.0.1:{wss}/mqtt"), Some(&ca)),
    ] {
        let mut cmd = Command::new("node");
        cmd.current_dir(clients)
            .arg("ws_mqttjs.js")
            .arg(&url)
            .arg(served.token("k1", "srv"))
            .arg(served.token("k1", "mon"));
        carries_a_will(cmd, ca, &served, &url);
    }
}
