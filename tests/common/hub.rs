//! A hub under test: simulated clients that speak bytes, a virtual clock,
//! the JWT authenticator answering every authentication, and either the ACL
//! answering authorizations on the spot or the test answering them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use testament::auth::{
    Acl, AuditRecord, AuthzQuery, Effect, FilterTemplate, JwtAuthenticator, JwtConfig, Ops, Rule,
    Subject, WillOutcome,
};
use testament::broker::{Action, Broker, BrokerConfig, ConnId, Ticket};
use testament::codec::*;
use testament::session::{AuthnOutcome, CloseReason, TransportClosed};
use testament::time::Now;

use super::jwt::{self, NOW_SECS, TestKey};

struct Client {
    version: ProtocolVersion,
    decoder: Decoder,
    inbox: Vec<Packet>,
    closed: Option<CloseReason>,
}

pub struct Net {
    pub hub: Broker,
    /// The virtual clocks: both start at the tokens' `NOW_SECS` and advance
    /// together unless a test steps the wall clock.
    pub now: Now,
    pub authn: JwtAuthenticator,
    clients: BTreeMap<ConnId, Client>,
    /// Every audit record, in order.
    pub audits: Vec<AuditRecord>,
    /// Authorization requests the test has not answered.
    pub asked: Vec<(Ticket, Option<ConnId>, AuthzQuery)>,
    /// Every action, in order (for determinism checks).
    pub log: Vec<Action>,
    /// What a durable hub asked to keep, in order.
    pub persisted: Vec<testament::broker::Persist>,
    /// The connections the hub asked not to read (backpressure).
    pub paused: std::collections::BTreeSet<ConnId>,
}

/// An ACL that lets each principal publish, subscribe and leave a will under
/// `trusted/{principal}/#` and subscribe to `trusted/#`, and everyone do
/// anything under `open/#` (shared subscriptions are judged on their inner
/// filter).
pub fn default_acl() -> Acl {
    Acl::new(vec![
        Rule::new(
            Effect::Allow,
            Ops::ALL,
            Subject::Authenticated,
            FilterTemplate::new("trusted/%u/#").unwrap(),
        )
        .named("own-tree"),
        Rule::new(
            Effect::Allow,
            Ops::SUBSCRIBE,
            Subject::Authenticated,
            FilterTemplate::new("trusted/#").unwrap(),
        )
        .named("watch-all"),
        Rule::new(
            Effect::Allow,
            Ops::ALL,
            Subject::Anyone,
            FilterTemplate::new("open/#").unwrap(),
        )
        .named("open"),
    ])
}

impl Net {
    /// A hub with `config`, KEY-A trusted, and `acl` answering on the spot
    /// (`None`: the test answers).
    pub fn new(config: BrokerConfig, acl: Option<Acl>) -> Self {
        let mut hub = Broker::new(config);
        if let Some(acl) = acl {
            hub.set_authorizer(Some(Arc::new(acl)));
        }
        Self {
            hub,
            now: Now::from_secs(NOW_SECS),
            authn: JwtAuthenticator::new(
                JwtConfig {
                    allow_anonymous: false,
                    ..JwtConfig::default()
                },
                jwt::key_set(&[&jwt::rsa_a()], false),
            ),
            clients: BTreeMap::new(),
            audits: Vec::new(),
            asked: Vec::new(),
            log: Vec::new(),
            persisted: Vec::new(),
            paused: Default::default(),
        }
    }

    /// The default hub with [`default_acl`].
    pub fn standard() -> Self {
        Self::new(BrokerConfig::default(), Some(default_acl()))
    }

    pub fn rotate_keys(&mut self, keys: &[&TestKey]) {
        self.authn.replace_keys(jwt::key_set(keys, false));
    }

    pub fn set_acl(&mut self, acl: Acl) {
        self.hub.set_authorizer(Some(Arc::new(acl)));
    }

    /// A KEY-A token for `sub`, valid `ttl` seconds from the start.
    pub fn token(sub: &str, ttl: i64) -> String {
        jwt::mint(&jwt::rsa_a(), &jwt::claims(sub, ttl))
    }

    pub fn open(&mut self, version: ProtocolVersion) -> ConnId {
        let conn = self.hub.open(self.now, Some("10.0.0.1:50000".into()));
        self.clients.insert(
            conn,
            Client {
                version,
                decoder: Decoder::new(1 << 20).with_version(version),
                inbox: Vec::new(),
                closed: None,
            },
        );
        self.pump();
        conn
    }

    pub fn send_bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        self.hub.handle_bytes(self.now, conn, bytes);
        self.pump();
    }

    pub fn send(&mut self, conn: ConnId, packet: Packet) {
        let version = self.clients[&conn].version;
        let bytes = packet.to_vec(version).expect("encodable");
        self.send_bytes(conn, &bytes);
    }

    /// Opens a connection and sends `connect` on it.
    pub fn connect_with(&mut self, connect: Connect) -> ConnId {
        let conn = self.open(connect.protocol);
        self.send(conn, Packet::Connect(Box::new(connect)));
        conn
    }

    /// Connects `client_id` as principal `user` with a one-hour token and
    /// checks the CONNACK; returns the connection and Session Present.
    pub fn connect(&mut self, connect: Connect) -> (ConnId, bool) {
        let conn = self.connect_with(connect);
        let mut got = self.take(conn);
        let present = match got.first() {
            Some(Packet::ConnAck(a)) if a.reason_code == ConnectReasonCode::Success => {
                a.session_present
            }
            _ => panic!("no successful CONNACK: {got:?}"),
        };
        // What a resumed session brings stays for `take`.
        got.remove(0);
        self.clients.get_mut(&conn).expect("known client").inbox = got;
        (conn, present)
    }

    /// What the client received since the last call.
    pub fn take(&mut self, conn: ConnId) -> Vec<Packet> {
        std::mem::take(&mut self.clients.get_mut(&conn).expect("known client").inbox)
    }

    /// The PUBLISH packets among what the client received since the last call.
    pub fn publishes(&mut self, conn: ConnId) -> Vec<Publish> {
        self.take(conn)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    pub fn closed(&self, conn: ConnId) -> Option<&CloseReason> {
        self.clients[&conn].closed.as_ref()
    }

    pub fn subscribe(&mut self, conn: ConnId, filters: &[(&'static str, QoS)]) -> Vec<Packet> {
        let subs = filters.iter().map(|(f, qos)| sub(f, *qos)).collect();
        self.subscribe_with(conn, subs, None)
    }

    /// SUBSCRIBE with these subscriptions and Subscription Identifier.
    pub fn subscribe_with(
        &mut self,
        conn: ConnId,
        subscriptions: Vec<Subscription>,
        id: Option<u32>,
    ) -> Vec<Packet> {
        let mut packet = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Default::default(),
            subscriptions,
        };
        if let Some(id) = id {
            packet.properties.subscription_identifier = SubscriptionId::new(id);
        }
        self.send(conn, Packet::Subscribe(packet));
        // The SUBACK; what it brings (retained messages) stays for `take`.
        let (acks, rest) = self
            .take(conn)
            .into_iter()
            .partition(|p| matches!(p, Packet::SubAck(_)));
        self.clients.get_mut(&conn).expect("known client").inbox = rest;
        acks
    }

    pub fn publish(&mut self, conn: ConnId, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let mut p = Publish::new(
            TopicName::try_from(topic).unwrap(),
            Bytes::copy_from_slice(payload),
        );
        p.qos = qos;
        p.retain = retain;
        if qos != QoS::AtMostOnce {
            p.packet_id = PacketId::new(7);
        }
        self.send(conn, Packet::Publish(p));
    }

    /// The transport fails.
    pub fn crash(&mut self, conn: ConnId) {
        self.hub
            .handle_closed(self.now, conn, TransportClosed::Error);
        self.pump();
    }

    /// Moves the clock by `ms`, firing every deadline on the way at its time,
    /// as a driver's timer would.
    pub fn advance_ms(&mut self, ms: u64) {
        let end = self.now.mono + Duration::from_millis(ms);
        while let Some(at) = self.hub.poll_timeout().filter(|at| *at <= end) {
            self.now = self.now.advanced_to(at);
            self.hub.handle_timeout(self.now);
            self.pump();
        }
        self.now = self.now.advanced_to(end);
    }

    pub fn advance(&mut self, secs: u64) {
        self.advance_ms(secs * 1000);
    }

    pub fn shutdown(&mut self) {
        self.hub.handle_shutdown(self.now);
        self.pump();
    }

    /// Answers an authorization request the test holds.
    pub fn answer(&mut self, ticket: Ticket, decision: testament::auth::Decision) {
        self.asked.retain(|(t, _, _)| *t != ticket);
        self.hub
            .handle_authorization(self.now, ticket, decision)
            .expect("known ticket");
        self.pump();
    }

    /// Runs the hub's actions: bytes to the clients, authentications to the
    /// JWT authenticator, authorizations to the test.
    pub fn pump(&mut self) {
        loop {
            let actions: Vec<Action> = std::iter::from_fn(|| self.hub.poll_action()).collect();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                self.log.push(action.clone());
                match action {
                    Action::Send { conn, bytes } => {
                        let c = self.clients.get_mut(&conn).expect("known client");
                        assert!(c.closed.is_none(), "bytes after close to {conn:?}");
                        c.decoder.feed(&bytes);
                        while let Some(p) = c.decoder.decode().expect("the hub sends valid packets")
                        {
                            c.inbox.push(p);
                        }
                    }
                    Action::Close { conn, reason } => {
                        let c = self.clients.get_mut(&conn).expect("known client");
                        assert!(c.closed.is_none(), "closed twice: {conn:?}");
                        c.closed = Some(reason);
                    }
                    Action::Authenticate {
                        ticket,
                        credentials,
                        ..
                    } => {
                        let outcome = match self.authn.authenticate(&credentials, self.now.wall) {
                            Ok(identity) => AuthnOutcome::Success(identity),
                            Err(f) => AuthnOutcome::Failure(f),
                        };
                        self.hub
                            .handle_authentication(self.now, ticket, outcome)
                            .expect("known ticket");
                    }
                    Action::Authorize {
                        ticket,
                        conn,
                        query,
                    } => self.asked.push((ticket, conn, query)),
                    Action::Audit(record) => self.audits.push(record),
                    Action::Persist(op) => self.persisted.push(op),
                    Action::PauseReading(conn) => {
                        self.paused.insert(conn);
                    }
                    Action::ResumeReading(conn) => {
                        self.paused.remove(&conn);
                    }
                }
            }
        }
    }

    /// The will records so far, as `(client id, outcome)`.
    pub fn will_events(&self) -> Vec<(String, &'static str)> {
        self.audits
            .iter()
            .filter_map(|r| match r {
                AuditRecord::Will {
                    identity, outcome, ..
                } => Some((
                    identity.client_id.to_string(),
                    match outcome {
                        WillOutcome::Triggered => "triggered",
                        WillOutcome::Delayed { .. } => "delayed",
                        WillOutcome::Cancelled { .. } => "cancelled",
                        WillOutcome::Paused { .. } => "paused",
                        WillOutcome::Delivered => "delivered",
                        WillOutcome::Denied { .. } => "denied",
                    },
                )),
                _ => None,
            })
            .collect()
    }

    /// The audit lines so far, as the log would print them.
    pub fn audit_lines(&self) -> Vec<String> {
        self.audits.iter().map(ToString::to_string).collect()
    }
}

/// A CONNECT for `client_id` as principal `user` with a one-hour KEY-A token.
pub fn connect(version: ProtocolVersion, client_id: &str, user: &str) -> Connect {
    connect_token(version, client_id, user, &Net::token(user, 3600))
}

pub fn connect_token(
    version: ProtocolVersion,
    client_id: &str,
    user: &str,
    token: &str,
) -> Connect {
    let mut c = Connect::new(version, MqttString::try_from(client_id).unwrap());
    c.keep_alive = 0;
    c.username = Some(MqttString::try_from(user).unwrap());
    c.password = Some(Bytes::copy_from_slice(token.as_bytes()));
    c
}

/// A subscription with default options.
pub fn sub(filter: &'static str, qos: QoS) -> Subscription {
    Subscription {
        filter: TopicFilter::from_static(filter),
        options: SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        },
    }
}

/// A will `payload` on `topic`.
pub fn will(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: TopicName::try_from(topic).unwrap(),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: Default::default(),
    }
}

/// `(topic, payload)` of each publish.
pub fn messages(publishes: &[Publish]) -> Vec<(String, String)> {
    publishes
        .iter()
        .map(|p| {
            (
                p.topic
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            )
        })
        .collect()
}
