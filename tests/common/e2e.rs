//! The broker on a real socket, with rumqttc clients, for end-to-end tests.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // real clients run on real time

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use testament::auth::{Acl, JwtAuthenticator, JwtConfig};
use testament::broker::{Broker, BrokerConfig};
use testament::config::DriverKind;
use testament::driver::{self, Control, DriverConfig, JwtAclPolicy};

use super::jwt::{self, TestKey};

enum ControlTx {
    Smol(smol::channel::Sender<Control>),
    Blocking(mpsc::Sender<Control>),
}

/// A broker serving on 127.0.0.1 with an ephemeral port.
pub struct Running {
    pub addr: SocketAddr,
    /// `None` when the test brought its own policy.
    pub policy: Option<Arc<JwtAclPolicy>>,
    control: ControlTx,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub fn start(kind: DriverKind, config: BrokerConfig, jwt: JwtConfig, acl: Acl) -> Self {
        Self::start_recording(kind, config, jwt, acl, None)
    }

    /// Same, recording every input of the hub to `record`.
    pub fn start_recording(
        kind: DriverKind,
        config: BrokerConfig,
        jwt: JwtConfig,
        acl: Acl,
        record: Option<&std::path::Path>,
    ) -> Self {
        Self::start_full(kind, config, jwt, acl, DriverConfig::default(), record)
    }

    /// Same, with the driver's limits.
    pub fn start_full(
        kind: DriverKind,
        config: BrokerConfig,
        jwt: JwtConfig,
        acl: Acl,
        driver_config: DriverConfig,
        record: Option<&std::path::Path>,
    ) -> Self {
        Self::start_tls(kind, config, jwt, acl, driver_config, record, None, None)
    }

    /// Same, the listener speaking TLS; client certificates may name the
    /// principal.
    #[allow(clippy::too_many_arguments)]
    pub fn start_tls(
        kind: DriverKind,
        config: BrokerConfig,
        jwt: JwtConfig,
        acl: Acl,
        driver_config: DriverConfig,
        record: Option<&std::path::Path>,
        tls: Option<testament::driver::tls::Tls>,
        certificate_principal: Option<testament::driver::CertificatePrincipal>,
    ) -> Self {
        let recorder = record.map(|path| {
            testament::driver::Recorder::new(
                Box::new(std::fs::File::create(path).unwrap()),
                testament::time::Now::new(
                    testament::time::Instant::ORIGIN,
                    driver::SystemClock::wall(),
                ),
                &config,
                Some(&acl),
            )
        });
        let mut policy = JwtAclPolicy::new(
            JwtAuthenticator::new(jwt, jwt::key_set(&[&jwt::rsa_a()], false)),
            acl,
        );
        if let Some(which) = certificate_principal {
            policy = policy.with_certificate_principal(which);
        }
        let policy = Arc::new(policy);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hub = Broker::new(config);
        let p: Arc<dyn driver::Policy> = policy.clone();
        let (control, thread) = launch(kind, listener, tls, hub, p, driver_config, recorder);
        Self {
            addr,
            policy: Some(policy),
            control,
            thread: Some(thread),
        }
    }

    /// A broker answering with the test's own policy.
    pub fn start_with_policy(
        kind: DriverKind,
        config: BrokerConfig,
        policy: Arc<dyn driver::Policy>,
    ) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hub = Broker::new(config);
        let (control, thread) = launch(
            kind,
            listener,
            None,
            hub,
            policy,
            DriverConfig::default(),
            None,
        );
        Self {
            addr,
            policy: None,
            control,
            thread: Some(thread),
        }
    }

    pub fn control(&self, c: Control) {
        match &self.control {
            ControlTx::Smol(tx) => {
                let _ = tx.send_blocking(c);
            }
            ControlTx::Blocking(tx) => {
                let _ = tx.send(c);
            }
        }
    }

    pub fn rotate_keys(&self, keys: &[&TestKey]) {
        if let Some(p) = &self.policy {
            p.replace_keys(jwt::key_set(keys, false));
        }
    }

    pub fn set_acl(&self, acl: Acl) {
        if let Some(p) = &self.policy {
            p.replace_acl(acl);
        }
        self.control(Control::Reload);
    }

    pub fn stop(mut self) {
        self.control(Control::Shutdown);
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }

    /// Waits (at most `timeout`) for the driver to end on its own, and
    /// returns what it returned.
    pub fn ended_within(mut self, timeout: Duration) -> Option<std::io::Result<()>> {
        let deadline = Instant::now() + timeout;
        let t = self.thread.take()?;
        while !t.is_finished() {
            if Instant::now() > deadline {
                self.thread = Some(t);
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(t.join().unwrap())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.control(Control::Shutdown);
    }
}

fn launch(
    kind: DriverKind,
    listener: std::net::TcpListener,
    tls: Option<testament::driver::tls::Tls>,
    hub: Broker,
    p: Arc<dyn driver::Policy>,
    driver_config: DriverConfig,
    recorder: Option<testament::driver::Recorder>,
) -> (ControlTx, JoinHandle<std::io::Result<()>>) {
    match kind {
        DriverKind::Smol => {
            let (tx, rx) = smol::channel::unbounded();
            listener.set_nonblocking(true).unwrap();
            let l = smol::net::TcpListener::try_from(listener).unwrap();
            let t = std::thread::spawn(move || {
                smol::block_on(driver::smol::serve(
                    vec![driver::smol::Listener {
                        tcp: l,
                        tls,
                        websocket: false,
                    }],
                    hub,
                    p,
                    driver_config,
                    recorder,
                    rx,
                ))
            });
            (ControlTx::Smol(tx), t)
        }
        DriverKind::Blocking => {
            let (tx, rx) = mpsc::channel();
            let t = std::thread::spawn(move || {
                let listeners = vec![driver::blocking::Listener {
                    tcp: listener,
                    tls,
                    websocket: false,
                }];
                driver::blocking::serve(listeners, hub, p, driver_config, recorder, rx)
            });
            (ControlTx::Blocking(tx), t)
        }
        DriverKind::Mio => {
            let (tx, rx) = mpsc::channel();
            let t = std::thread::spawn(move || {
                let listeners = vec![driver::mio::Listener {
                    tcp: listener,
                    tls,
                    websocket: false,
                }];
                driver::mio::serve(listeners, hub, p, driver_config, recorder, rx)
            });
            (ControlTx::Blocking(tx), t)
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A KEY-A (or `key`) token for `sub`, valid `ttl` seconds from now.
pub fn token(key: &TestKey, sub: &str, ttl: u64) -> String {
    let now = unix_now();
    jwt::mint(key, &json!({ "sub": sub, "iat": now, "exp": now + ttl }))
}

/// How long one poll of a rumqttc connection may wait. rumqttc drops a
/// connection attempt cut short by this timeout (and starts another), so it
/// must outlast a TLS handshake.
const POLL: Duration = Duration::from_millis(250);

/// A rumqttc 3.1.1 client pumped by its own thread.
pub struct V3 {
    pub client: rumqttc::Client,
    events: mpsc::Receiver<Result<rumqttc::Event, String>>,
    kill: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl V3 {
    pub fn options(addr: SocketAddr, id: &str, user: &str, token: &str) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_credentials(user, token);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        o
    }

    /// Connects and waits for the CONNACK; `Err` carries the refusal.
    pub fn connect(options: rumqttc::MqttOptions) -> Result<Self, String> {
        let (client, mut conn) = rumqttc::Client::new(options, 64);
        let (tx, events) = mpsc::channel();
        let kill = Arc::new(AtomicBool::new(false));
        let k = kill.clone();
        let thread = std::thread::spawn(move || {
            while !k.load(Ordering::Relaxed) {
                match conn.recv_timeout(POLL) {
                    Ok(Ok(ev)) => {
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                    Ok(Err(e)) => {
                        if std::env::var("E2E_DEBUG").is_ok() {
                            eprintln!("client error: {e:?}");
                        }
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                    Err(_) => {}
                }
            }
        });
        let me = Self {
            client,
            events,
            kill,
            thread: Some(thread),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match me
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => return Ok(me),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("no CONNACK".into()),
            }
        }
    }

    /// The next PUBLISH received within `timeout`.
    pub fn next_message(&self, timeout: Duration) -> Option<rumqttc::Publish> {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => return Some(p),
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// Waits for an incoming packet matching `f`.
    pub fn wait_for(&self, timeout: Duration, f: impl Fn(&rumqttc::Packet) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Ok(rumqttc::Event::Incoming(p))) if f(&p) => return true,
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub fn subscribe(&self, filter: &str, qos: rumqttc::QoS) {
        self.client.subscribe(filter, qos).unwrap();
        assert!(
            self.wait_for(Duration::from_secs(5), |p| matches!(
                p,
                rumqttc::Packet::SubAck(_)
            )),
            "no SUBACK for {filter}"
        );
    }

    /// Whether the connection ended (an error came) within `timeout`.
    pub fn closed_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return true,
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// The socket goes away without a DISCONNECT (the process died).
    pub fn crash(mut self) {
        self.kill.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// A clean DISCONNECT, then the socket closes.
    pub fn disconnect(mut self) {
        let _ = self.client.disconnect();
        std::thread::sleep(Duration::from_millis(200));
        self.kill.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for V3 {
    fn drop(&mut self) {
        self.kill.store(true, Ordering::Relaxed);
    }
}
