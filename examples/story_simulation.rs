//! The story of `DESIGN.md` as a deterministic simulation: the hub, a
//! virtual clock, two clients speaking MQTT bytes, the JWT authenticator and
//! the ACL. Prints every audit record and what the monitor receives; run it
//! twice and the output is the same, line for line.
//!
//! ```sh
//! cargo run --example story_simulation
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use testament::auth::{JwtAuthenticator, JwtConfig, KeySet};
use testament::broker::{Action, Broker, BrokerConfig, ConnId};
use testament::codec::{
    Bytes, Connect, Decoder, Encode, LastWill, MqttString, Packet, PacketId, ProtocolVersion,
    Publish, QoS, Subscribe, Subscription, SubscriptionOptions, TopicFilter, TopicName,
};
use testament::config::default_acl;
use testament::session::{AuthnOutcome, TransportClosed};
use testament::time::{Now, Timestamp};

const KEY_A: &str = include_str!("../tests/fixtures/keys/rsa-a.pem");
const KEY_B: &str = include_str!("../tests/fixtures/keys/rsa-b.pem");
const V5: ProtocolVersion = ProtocolVersion::V5;

fn key_set(pem: &str, kid: &str) -> KeySet {
    let jwk = testament::keys::public_jwk(pem, jsonwebtoken::Algorithm::RS256, kid).unwrap();
    KeySet::from_jwks(&json!({ "keys": [jwk] }).to_string(), false).unwrap()
}

fn token(sub: &str, roles: &[&str], ttl: u64, now: Timestamp) -> String {
    let claims = testament::keys::TokenClaims {
        subject: sub.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ttl: Duration::from_secs(ttl),
        ..Default::default()
    };
    testament::keys::mint(KEY_A, "KEY-A", &claims, now).unwrap()
}

struct World {
    hub: Broker,
    authn: JwtAuthenticator,
    now: Now,
    monitor: Option<(ConnId, Decoder)>,
}

impl World {
    fn run(&mut self) {
        while let Some(action) = self.hub.poll_action() {
            match action {
                Action::Audit(record) => println!("audit  {record}"),
                // Not a durable hub: nothing to keep.
                Action::Persist(_) => {}
                // Nobody is slow in this story.
                Action::PauseReading(_) | Action::ResumeReading(_) => {}
                Action::Authenticate {
                    ticket,
                    credentials,
                    ..
                } => {
                    let outcome = match self.authn.authenticate(&credentials, self.now.wall) {
                        Ok(identity) => AuthnOutcome::Success(identity),
                        Err(failure) => AuthnOutcome::Failure(failure),
                    };
                    self.hub
                        .handle_authentication(self.now, ticket, outcome)
                        .unwrap();
                }
                Action::Send { conn, bytes } => {
                    if let Some((m, decoder)) = &mut self.monitor
                        && *m == conn
                    {
                        decoder.feed(&bytes);
                        while let Some(p) = decoder.decode().unwrap() {
                            if let Packet::Publish(p) = p {
                                println!(
                                    "monitor receives {} = {}",
                                    p.topic.as_deref().unwrap_or(""),
                                    String::from_utf8_lossy(&p.payload)
                                );
                            }
                        }
                    }
                }
                Action::Close { conn, reason } => {
                    println!("close  conn {} ({:?})", conn.0, reason.code);
                }
                Action::Authorize { .. } => unreachable!("the ACL answers on the spot"),
            }
        }
    }

    fn send(&mut self, conn: ConnId, packet: Packet) {
        let bytes = packet.to_vec(V5).unwrap();
        self.hub.handle_bytes(self.now, conn, &bytes);
        self.run();
    }

    fn connect(&mut self, id: &str, roles: &[&str], ttl: u64, will: Option<LastWill>) -> ConnId {
        let conn = self.hub.open(self.now, Some(format!("sim:{id}")));
        let mut c = Connect::new(V5, MqttString::try_from(id).unwrap());
        c.keep_alive = 0;
        c.username = Some(MqttString::try_from(id).unwrap());
        c.password = Some(Bytes::from(token(id, roles, ttl, self.now.wall)));
        c.will = will;
        self.send(conn, Packet::Connect(Box::new(c)));
        conn
    }

    fn advance(&mut self, secs: u64) {
        self.now = self.now + Duration::from_secs(secs);
        println!("--- t = +{secs}s");
        self.hub.handle_timeout(self.now);
        self.run();
    }
}

fn main() {
    let mut config = BrokerConfig::default();
    // The server's connection outlives its token: the crash decides.
    config.session.credential_expiry = testament::session::CredentialExpiry::Keep;
    let mut hub = Broker::new(config);
    hub.set_authorizer(Some(Arc::new(default_acl())));
    let mut w = World {
        hub,
        authn: JwtAuthenticator::new(JwtConfig::default(), key_set(KEY_A, "KEY-A")),
        now: Now::from_secs(1_800_000_000),
        monitor: None,
    };

    println!("--- the server connects with a 60 s token and a retained will");
    let will = LastWill {
        topic: TopicName::from_static("clients/srv/state"),
        payload: Bytes::from_static(b"down"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    };
    let server = w.connect("srv", &[], 60, Some(will));
    let mut up = Publish::new(TopicName::from_static("clients/srv/state"), &b"up"[..]);
    up.retain = true;
    up.qos = QoS::AtLeastOnce;
    up.packet_id = PacketId::new(1);
    w.send(server, Packet::Publish(up));

    println!("--- a monitor subscribes to clients/+/state");
    let monitor = w.connect("mon", &["monitor"], 86_400, None);
    w.monitor = Some((monitor, Decoder::new(1 << 20).with_version(V5)));
    w.send(
        monitor,
        Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Default::default(),
            subscriptions: vec![Subscription {
                filter: TopicFilter::from_static("clients/+/state"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            }],
        }),
    );

    println!("--- KEY-A is rotated out for KEY-B; the token expires");
    w.authn.replace_keys(key_set(KEY_B, "KEY-B"));
    w.advance(120);

    println!("--- the server's connection dies");
    w.hub.handle_closed(w.now, server, TransportClosed::Error);
    w.run();
}
