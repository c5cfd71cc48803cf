//! The hub harness: random multi-client lifecycles checked against the
//! hub's invariants after every action.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{
    Acl, AuditRecord, AuthMethod, AuthnError, DecidedBy, Decision, Effect, FilterTemplate,
    Identity, Operation, Ops, Rule, Subject, WillOutcome,
};
use crate::broker::{
    Action, Broker, BrokerConfig, ConnId, Persist, ShutdownWills, Ticket, WillAfterExpiry,
};
use crate::codec::{
    Auth, AuthReasonCode, Bytes, Connect, Decoder, Disconnect, DisconnectReasonCode, Encode,
    LastWill, MqttString, Packet, PacketId, ProtocolVersion, PubAck, PubRel, Publish, QoS,
    Subscribe, Subscription, SubscriptionOptions, TopicFilter, TopicName,
};
use crate::driver::storage::{MemoryStorage, Storage};
use crate::session::{AuthnOutcome, CredentialExpiry, SessionConfig, TransportClosed};
use crate::time::{Instant, Now, WallStep};

const CLIENTS: usize = 4;
const MONITOR: &str = "mon";
const PERSISTENT: &str = "per";
const FILTERS: [&str; 4] = ["open/#", "trusted/+/state", "$share/g/open/#", "#"];

/// Topics the ACL lets be published but carves out of every subscription.
const CARVED: &str = "open/secret/#";
/// Carved out as well while the ACL is revoked: an ACL change moves the
/// exclusions of subscriptions already granted.
const CARVED_WHEN_REVOKED: &str = "open/hidden/#";
/// The client that loses its `trusted/…` subscriptions while the ACL is
/// revoked.
const WATCHER_REVOKED: &str = "c3";

fn acl(revoked: bool) -> Acl {
    let mut rules = Vec::new();
    if revoked {
        // c1 loses its will, c2 its right to publish.
        rules.push(Rule::new(
            Effect::Deny,
            Ops::WILL,
            Subject::Principal("c1".into()),
            FilterTemplate::new("#").expect("valid"),
        ));
        rules.push(Rule::new(
            Effect::Deny,
            Ops::PUBLISH,
            Subject::Principal("c2".into()),
            FilterTemplate::new("#").expect("valid"),
        ));
        // Everyone's `open/#` loses `open/hidden/…`; c3 loses `trusted/…`.
        rules.push(Rule::new(
            Effect::Deny,
            Ops::SUBSCRIBE,
            Subject::Anyone,
            FilterTemplate::new(CARVED_WHEN_REVOKED).expect("valid"),
        ));
        rules.push(Rule::new(
            Effect::Deny,
            Ops::SUBSCRIBE,
            Subject::Principal(WATCHER_REVOKED.into()),
            FilterTemplate::new("trusted/#").expect("valid"),
        ));
    }
    // Carved out of every wildcard subscription over it, always in force.
    rules.push(Rule::new(
        Effect::Deny,
        Ops::SUBSCRIBE,
        Subject::Anyone,
        FilterTemplate::new(CARVED).expect("valid"),
    ));
    for (ops, filter) in [
        (Ops::ALL, "trusted/%u/#"),
        (Ops::SUBSCRIBE, "trusted/#"),
        (Ops::ALL, "open/#"),
    ] {
        rules.push(Rule::new(
            Effect::Allow,
            ops,
            Subject::Anyone,
            FilterTemplate::new(filter).expect("valid"),
        ));
    }
    Acl::new(rules)
}

struct Client {
    name: String,
    version: ProtocolVersion,
    decoder: Decoder,
    /// Its connection generation: wills carry it in their payload.
    generation: u32,
    clean_start: bool,
    connected: bool,
    closed: bool,
}

/// What the harness knows of one will (one connection generation).
#[derive(Default)]
struct WillState {
    client: String,
    delay: u32,
    expiry: u32,
    /// On the monotonic clock: delays count there.
    triggered_at: Option<Instant>,
    deleted: bool,
    ended_early: bool,
    received: u32,
}

struct World {
    hub: Broker,
    /// A durable world's store: each batch's Persists are committed before
    /// its other actions are carried out, as a driver does in a turn — a
    /// batch of only changes that may wait without a flush (a crash loses
    /// those, as with a real store).
    store: Option<MemoryStorage>,
    now: Now,
    sync: bool,
    keys_rotated: bool,
    /// The hub was told its store is full.
    storage_full: bool,
    revoked: bool,
    shut_down: bool,
    conns: BTreeMap<ConnId, Client>,
    /// The last connection of each client name.
    current: BTreeMap<String, ConnId>,
    /// The generation of each name's last connection that got its CONNACK.
    connected_generation: BTreeMap<String, u32>,
    generations: u32,
    wills: BTreeMap<u32, WillState>,
    will_allows: BTreeMap<String, u32>,
    will_receipts: BTreeMap<String, u32>,
    pending: Vec<(Ticket, crate::auth::AuthzQuery)>,
    allowed_topics: BTreeSet<String>,
    published_qos: BTreeMap<String, QoS>,
    per_received: BTreeSet<String>,
    per_dropped: BTreeSet<String>,
    /// `open/hidden/…` topics routed while carved out: never delivered.
    carved_when_published: BTreeSet<String>,
    publishes: u32,
    log: Vec<Action>,
}

impl World {
    fn new(flags: u8) -> Self {
        let sync = flags & 1 == 0;
        let config = BrokerConfig {
            session: SessionConfig {
                credential_expiry: if flags & 8 == 0 {
                    CredentialExpiry::Disconnect
                } else {
                    CredentialExpiry::Keep
                },
                max_pending_authorizations: 16,
                ..SessionConfig::default()
            },
            will_after_expiry: match (flags >> 1) & 3 {
                1 => WillAfterExpiry::Strict,
                2 => WillAfterExpiry::Grace(Duration::from_secs(10)),
                _ => WillAfterExpiry::Identity,
            },
            shutdown_wills: match (flags & 64 != 0, flags & 16 != 0) {
                (true, _) => ShutdownWills::Resume,
                (false, false) => ShutdownWills::SendNow,
                (false, true) => ShutdownWills::Drop,
            },
            ..BrokerConfig::default()
        };
        let durable = flags & 32 != 0;
        let config = BrokerConfig { durable, ..config };
        let mut hub = Broker::new(config);
        if sync {
            hub.set_authorizer(Some(Arc::new(acl(false))));
        }
        Self {
            hub,
            store: durable.then(MemoryStorage::default),
            now: Now::from_secs(1_800_000_000),
            sync,
            keys_rotated: false,
            storage_full: false,
            revoked: false,
            shut_down: false,
            conns: BTreeMap::new(),
            current: BTreeMap::new(),
            connected_generation: BTreeMap::new(),
            generations: 0,
            wills: BTreeMap::new(),
            will_allows: BTreeMap::new(),
            will_receipts: BTreeMap::new(),
            pending: Vec::new(),
            allowed_topics: BTreeSet::new(),
            published_qos: BTreeMap::new(),
            per_received: BTreeSet::new(),
            per_dropped: BTreeSet::new(),
            carved_when_published: BTreeSet::new(),
            publishes: 0,
            log: Vec::new(),
        }
    }

    fn send(&mut self, conn: ConnId, packet: &Packet) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.closed {
            return;
        }
        let bytes = packet.to_vec(c.version).unwrap_or_default();
        self.hub.handle_bytes(self.now, conn, &bytes);
        self.pump();
    }

    /// Opens a connection for `name` and sends its CONNECT.
    fn connect(&mut self, name: &str, c: Connect, delay: u32, expiry: u32) -> ConnId {
        self.generations += 1;
        let generation = self.generations;
        if c.will.is_some() {
            self.wills.insert(
                generation,
                WillState {
                    client: name.to_owned(),
                    delay,
                    expiry,
                    ..WillState::default()
                },
            );
        }
        let conn = self.hub.open(self.now, None);
        self.conns.insert(
            conn,
            Client {
                name: name.to_owned(),
                version: c.protocol,
                decoder: Decoder::new(1 << 20).with_version(c.protocol),
                generation,
                clean_start: c.clean_start,
                connected: false,
                closed: false,
            },
        );
        self.current.insert(name.to_owned(), conn);
        self.pump();
        self.send(conn, &Packet::Connect(Box::new(c)));
        conn
    }

    fn connect_monitor(&mut self, name: &str, expiry: u32) {
        let mut c = Connect::new(
            ProtocolVersion::V5,
            MqttString::try_from(name).expect("valid"),
        );
        c.clean_start = false;
        c.username = Some(MqttString::try_from(name).expect("valid"));
        c.password = Some(Bytes::from_static(b"M:86400"));
        if expiry > 0 {
            c.properties.session_expiry_interval = Some(expiry);
        }
        self.connect(name, c, 0, expiry);
    }

    fn authenticate(&self, creds: &crate::auth::Credentials) -> AuthnOutcome {
        let token = creds.auth_data.as_ref().or(creds.password.as_ref());
        let parsed = token.and_then(|t| {
            let t = std::str::from_utf8(t).ok()?;
            let (key, ttl) = t.split_once(':')?;
            Some((key.to_owned(), ttl.parse::<u64>().ok()?))
        });
        let Some((key, ttl)) = parsed else {
            return AuthnOutcome::Failure(AuthnError::BadSignature.into());
        };
        if key == "A" && self.keys_rotated {
            return AuthnOutcome::Failure(AuthnError::UnknownKey("A".into()).into());
        }
        AuthnOutcome::Success(Identity {
            principal: creds.username.as_deref().unwrap_or_default().into(),
            client_id: creds.client_id.clone(),
            grants: crate::auth::Grants::new(Default::default(), None, Some(key.into())),
            expires_at: Some(self.now.wall + Duration::from_secs(ttl)),
            method: match &creds.auth_method {
                Some(m) => AuthMethod::enhanced(m),
                None => AuthMethod::Password,
            },
            authenticated_at: self.now.wall,
            token_digest: None,
        })
    }

    /// Runs the hub's actions through the clients and the checks.
    fn pump(&mut self) {
        loop {
            let actions: Vec<Action> = std::iter::from_fn(|| self.hub.poll_action()).collect();
            if actions.is_empty() {
                return;
            }
            if let Some(store) = &mut self.store {
                let ops: Vec<Persist> = actions
                    .iter()
                    .filter_map(|a| match a {
                        Action::Persist(op) => Some(op.clone()),
                        _ => None,
                    })
                    .collect();
                let committed = if ops.iter().all(Persist::may_wait) {
                    store.commit_unflushed(&ops)
                } else {
                    store.commit(&ops)
                };
                assert!(committed.is_ok(), "a memory store commits");
            }
            let mut acks = Vec::new();
            for action in actions {
                self.log.push(action.clone());
                match action {
                    Action::Send { conn, bytes } => {
                        let packets = {
                            let c = self
                                .conns
                                .get_mut(&conn)
                                .expect("bytes to a known connection");
                            assert!(!c.closed, "bytes after the close");
                            c.decoder.feed(&bytes);
                            let mut packets = Vec::new();
                            while let Some(p) =
                                c.decoder.decode().expect("the hub sends valid packets")
                            {
                                packets.push(p);
                            }
                            packets
                        };
                        for p in packets {
                            if let Some(ack) = self.received(conn, p) {
                                acks.push((conn, ack));
                            }
                        }
                    }
                    Action::Close { conn, .. } => {
                        let c = self.conns.get_mut(&conn).expect("a known connection");
                        assert!(!c.closed, "closed twice");
                        c.closed = true;
                    }
                    Action::Authenticate {
                        ticket,
                        conn,
                        credentials,
                        ..
                    } => {
                        assert!(
                            !self.conns[&conn].closed,
                            "authentication for a closed connection"
                        );
                        let outcome = self.authenticate(&credentials);
                        let answered = self.hub.handle_authentication(self.now, ticket, outcome);
                        // An earlier action of this batch may have closed it.
                        assert!(
                            answered.is_ok() || !self.hub.is_open(conn),
                            "a fresh ticket of an open connection refused"
                        );
                    }
                    Action::Authorize { ticket, query, .. } => {
                        self.pending.push((ticket, query));
                    }
                    Action::Audit(record) => self.audited(&record),
                    Action::Persist(_) => {}
                    // The world feeds the hub what it likes: the hub must
                    // stay correct whether the host heeds it or not.
                    Action::PauseReading(_) | Action::ResumeReading(_) => {}
                }
            }
            for (conn, ack) in acks {
                if let Some(c) = self.conns.get(&conn)
                    && !c.closed
                {
                    let bytes = ack.to_vec(c.version).unwrap_or_default();
                    self.hub.handle_bytes(self.now, conn, &bytes);
                }
            }
        }
    }

    fn audited(&mut self, record: &AuditRecord) {
        match record {
            AuditRecord::Authorization {
                query, decision, ..
            } if decision.is_allowed() => match query.op {
                Operation::Publish => {
                    self.allowed_topics.insert(query.topic.to_string());
                    // Routed when allowed, under the rules in force now.
                    if self.sync && self.revoked && query.topic.starts_with("open/hidden/") {
                        self.carved_when_published.insert(query.topic.to_string());
                    }
                }
                // The check at CONNECT (no trigger) does not send anything.
                Operation::Will if query.will_trigger.is_some() => {
                    *self
                        .will_allows
                        .entry(query.identity.client_id.to_string())
                        .or_default() += 1;
                }
                Operation::Will | Operation::Subscribe => {}
            },
            AuditRecord::Will {
                identity,
                trigger,
                outcome,
                ..
            } => {
                let generation = self.connected_generation.get(&*identity.client_id).copied();
                let will = generation.and_then(|g| self.wills.get_mut(&g));
                match (outcome, will) {
                    (WillOutcome::Triggered, Some(w)) => {
                        assert!(w.triggered_at.is_none(), "a will triggered twice");
                        assert!(!w.deleted, "a will triggered after DISCONNECT 0x00");
                        w.triggered_at = Some(self.now.mono);
                    }
                    // Sent by a shutdown: before its delay, by design.
                    (WillOutcome::Delivered, Some(w)) if self.shut_down => w.ended_early = true,
                    (WillOutcome::Cancelled { .. }, Some(w)) if trigger.is_none() => {
                        assert_eq!(w.received, 0, "a will delivered before DISCONNECT 0x00");
                        w.deleted = true;
                    }
                    (WillOutcome::Triggered, None) => panic!("a will of a session never connected"),
                    _ => {}
                }
            }
            AuditRecord::MessageDropped {
                client_id, topic, ..
            } if client_id == PERSISTENT => {
                self.per_dropped.insert(topic.to_string());
            }
            _ => {}
        }
    }

    /// A packet arrived at a client; returns the acknowledgement it sends.
    fn received(&mut self, conn: ConnId, packet: Packet) -> Option<Packet> {
        let c = self.conns.get_mut(&conn).expect("a known connection");
        let name = c.name.clone();
        match packet {
            Packet::ConnAck(a) => {
                if a.reason_code == crate::codec::ConnectReasonCode::Success {
                    c.connected = true;
                    let generation = c.generation;
                    if c.clean_start
                        && let Some(g) = self.connected_generation.get(&name)
                        && let Some(w) = self.wills.get_mut(g)
                    {
                        // A clean start ended the old session: its will
                        // may have gone at once.
                        w.ended_early = true;
                    }
                    self.connected_generation.insert(name, generation);
                }
                None
            }
            Packet::Publish(p) => {
                let payload = String::from_utf8_lossy(&p.payload).into_owned();
                let topic = p
                    .topic
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                if let Some(g) = payload
                    .strip_prefix('w')
                    .and_then(|g| g.parse::<u32>().ok())
                    && name == MONITOR
                {
                    self.will_received(g, p.dup);
                }
                // A synchronous ACL's carve-out holds at every delivery (an
                // answer of the world's own carries none).
                assert!(
                    !(self.sync && topic.starts_with("open/secret/")),
                    "{topic} delivered through a carve-out"
                );
                // So does one an ACL change made, and a revocation: a
                // message sent for the first time after the change (no DUP)
                // honours the rules then.
                if self.sync && self.revoked && !p.dup {
                    assert!(
                        !topic.starts_with("open/hidden/"),
                        "{topic} delivered through a carve-out made by an ACL change"
                    );
                    assert!(
                        !(name == WATCHER_REVOKED && topic.starts_with("trusted/")),
                        "{topic} delivered to {name} after its subscription was revoked"
                    );
                }
                if payload.starts_with('p') && (name == MONITOR || name == PERSISTENT) {
                    assert!(
                        self.allowed_topics.contains(&topic),
                        "{topic} routed without an Allow"
                    );
                    if name == PERSISTENT && !p.dup {
                        assert!(self.per_received.insert(topic), "a duplicate without DUP");
                    }
                }
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(PubAck::new(id))),
                    (QoS::ExactlyOnce, Some(id)) => {
                        Some(Packet::PubRec(crate::codec::PubRec::new(id)))
                    }
                    _ => None,
                }
            }
            Packet::PubRec(r) => Some(Packet::PubRel(PubRel::new(r.packet_id))),
            Packet::PubRel(r) => Some(Packet::PubComp(crate::codec::PubComp::new(r.packet_id))),
            _ => None,
        }
    }

    /// The monitor got a will; `dup`: sent again after a crash lost the
    /// record of its PUBACK — a copy of one delivered, not a delivery.
    fn will_received(&mut self, generation: u32, dup: bool) {
        let now = self.now;
        let shut_down = self.shut_down;
        let w = self
            .wills
            .get_mut(&generation)
            .expect("a will that was registered");
        if dup {
            assert_eq!(w.received, 1, "a DUP of a will never delivered");
            return;
        }
        assert!(!w.deleted, "a will after DISCONNECT 0x00");
        assert_eq!(w.received, 0, "a will delivered twice");
        w.received += 1;
        let at = w.triggered_at.expect("a will delivered before its trigger");
        let due = at + Duration::from_secs(u64::from(w.delay.min(w.expiry)));
        assert!(
            now.mono >= due || w.ended_early || shut_down,
            "a will before its delay"
        );
        let client = w.client.clone();
        let receipts = self.will_receipts.entry(client.clone()).or_default();
        *receipts += 1;
        assert!(
            *receipts <= self.will_allows.get(&client).copied().unwrap_or(0),
            "a will published without an Allow"
        );
    }

    fn answer(&mut self, index: usize, allow: bool) {
        if self.pending.is_empty() {
            return;
        }
        let (ticket, query) = self.pending.remove(index % self.pending.len());
        let decision = if allow {
            acl(self.revoked).authorize(&query.as_request())
        } else {
            Decision {
                effect: Effect::Deny,
                decided_by: DecidedBy::NoMatch,
                exclusions: Default::default(),
            }
        };
        // The connection may be gone; its tickets are void then.
        let _ = self.hub.handle_authorization(self.now, ticket, decision);
        self.pump();
    }

    fn answer_all(&mut self) {
        while !self.pending.is_empty() {
            self.answer(0, true);
        }
    }

    fn advance(&mut self, secs: u64) {
        let end = self.now.mono + Duration::from_secs(secs);
        while let Some(at) = self.hub.poll_timeout().filter(|at| *at <= end) {
            self.now = self.now.advanced_to(at);
            self.hub.handle_timeout(self.now);
            if let Some(next) = self.hub.poll_timeout() {
                assert!(
                    next > self.now.mono,
                    "deadline {next} not after handle_timeout"
                );
            }
            self.pump();
        }
        self.now = self.now.advanced_to(end);
    }

    fn client_connect(&mut self, a: u8, b: u8) {
        let i = usize::from(a) % (CLIENTS + 1);
        if i == CLIENTS {
            self.connect_monitor(PERSISTENT, 86_400);
            return;
        }
        let name = format!("c{i}");
        let v5 = a & 4 != 0;
        let version = if v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        let mut c = Connect::new(version, MqttString::try_from(name.as_str()).expect("valid"));
        c.clean_start = a & 8 != 0;
        c.keep_alive = if b & 8 == 0 { 0 } else { 15 };
        c.username = Some(MqttString::try_from(name.as_str()).expect("valid"));
        let key = if b & 2 == 0 { "A" } else { "B" };
        let ttl = if b & 1 == 0 { 20 } else { 86_400 };
        let token = Bytes::from(format!("{key}:{ttl}"));
        if v5 && b & 4 != 0 {
            c.properties.authentication_method = Some(MqttString::from_static("JWT"));
            c.properties.authentication_data = Some(token);
        } else {
            c.password = Some(token);
        }
        let delay = if v5 {
            [0, 0, 5, 30][usize::from(a >> 4) & 3]
        } else {
            0
        };
        let expiry = match (v5, a >> 6) {
            (true, 1) => 10,
            (true, 2) => 3600,
            (true, _) => 0,
            (false, _) if c.clean_start => 0,
            (false, _) => u32::MAX,
        };
        if v5 && expiry > 0 {
            c.properties.session_expiry_interval = Some(expiry);
        }
        let generation = self.generations + 1;
        let mut will = LastWill {
            topic: TopicName::try_from(format!("trusted/{name}/state")).expect("valid"),
            payload: Bytes::from(format!("w{generation}")),
            qos: QoS::from_bits(b >> 4 & 1).unwrap_or_default(),
            retain: b & 32 != 0,
            properties: Default::default(),
        };
        if delay > 0 {
            will.properties.will_delay_interval = Some(delay);
        }
        c.will = Some(will);
        self.connect(&name, c, delay, expiry);
    }

    fn target(&self, a: u8) -> Option<ConnId> {
        let i = usize::from(a) % (CLIENTS + 1);
        let name = if i == CLIENTS {
            PERSISTENT.to_string()
        } else {
            format!("c{i}")
        };
        self.current.get(&name).copied()
    }

    fn step(&mut self, op: u8, a: u8, b: u8) {
        match op % 10 {
            0 => self.client_connect(a, b),
            1 => {
                if let Some(conn) = self.target(a).filter(|_| usize::from(a) % 5 != CLIENTS) {
                    let filter = FILTERS[usize::from(b) % FILTERS.len()];
                    let qos = QoS::from_bits(b >> 4 & 1).unwrap_or_default();
                    self.send(conn, &subscribe(filter, qos));
                }
            }
            2 => {
                if let Some(conn) = self.target(a).filter(|_| usize::from(a) % 5 != CLIENTS) {
                    self.publishes += 1;
                    let n = self.publishes;
                    let topic = match b % 5 {
                        0 => format!("open/{n}"),
                        1 => format!("open/secret/{n}"),
                        2 => format!("trusted/{}/state", self.conns[&conn].name),
                        3 => format!("open/hidden/{n}"),
                        _ => "trusted/c0/state".to_string(),
                    };

                    let qos = QoS::from_bits((a >> 3) % 3).unwrap_or_default();
                    let mut p = Publish::new(
                        TopicName::try_from(topic.as_str()).expect("valid"),
                        Bytes::from(format!("p{n}")),
                    );
                    p.qos = qos;
                    p.retain = a & 32 != 0;
                    p.packet_id = (qos != QoS::AtMostOnce)
                        .then(|| PacketId::new(1 + (n % 100) as u16))
                        .flatten();
                    self.published_qos.insert(topic, qos);
                    self.send(conn, &Packet::Publish(p));
                }
            }
            3 => {
                if let Some(conn) = self.target(a) {
                    let how = if b & 1 == 0 {
                        TransportClosed::Error
                    } else {
                        TransportClosed::PeerClosed
                    };
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.closed = true;
                    }
                    self.hub.handle_closed(self.now, conn, how);
                    self.pump();
                }
            }
            4 => {
                if let Some(conn) = self.target(a).filter(|_| usize::from(a) % 5 != CLIENTS) {
                    let code = if b & 1 == 0 {
                        DisconnectReasonCode::NormalDisconnection
                    } else {
                        DisconnectReasonCode::DisconnectWithWillMessage
                    };
                    self.send(conn, &Packet::Disconnect(Disconnect::new(code)));
                }
            }
            5 => self.advance(u64::from(a % 41)),
            // A durable world restarts instead (a restart can only read
            // dates: its wall clock stays in step).
            6 if b & 2 != 0 && self.store.is_some() => self.restart(b & 1 != 0, a % 61),
            // The wall clock steps an hour while the monotonic one stands:
            // no timer may notice (a will before its delay fails above).
            6 if b & 2 != 0 => {
                let hour = Duration::from_secs(3600);
                let step = if b & 1 == 0 {
                    WallStep::Forward(hour)
                } else {
                    WallStep::Back(hour)
                };
                self.now = self.now.with_wall_step(step);
            }
            // A durable world's store fills up or has room again: QoS 1/2
            // is refused meanwhile (nothing allowed may be lost).
            6 if b & 4 != 0 && self.store.is_some() => {
                self.storage_full = !self.storage_full;
                self.hub.set_storage_available(!self.storage_full);
            }
            6 => self.keys_rotated = !self.keys_rotated,
            7 => {
                self.revoked = !self.revoked;
                if self.sync {
                    self.hub.set_authorizer(Some(Arc::new(acl(self.revoked))));
                    self.hub.reauthorize_subscriptions(self.now);
                    self.pump();
                }
            }
            8 => self.answer(usize::from(a), b & 3 != 0),
            _ => {
                if op == 255 {
                    self.shut_down = true;
                    self.hub.handle_shutdown(self.now);
                    self.pump();
                } else if let Some(conn) = self.target(a) {
                    let mut auth = Auth::new(AuthReasonCode::ReAuthenticate);
                    auth.properties.authentication_method = Some(MqttString::from_static("JWT"));
                    auth.properties.authentication_data = Some(if b & 1 == 0 {
                        Bytes::from_static(b"B:86400")
                    } else {
                        Bytes::from_static(b"bad")
                    });
                    self.send(conn, &Packet::Auth(auth));
                }
            }
        }
    }

    /// The broker goes down — stopped (`planned`) or crashed — and a new
    /// one comes up `down` seconds later from what was committed; every
    /// connection is gone, the monitors come back.
    fn restart(&mut self, planned: bool, down: u8) {
        if planned {
            self.shut_down = true;
            self.hub.handle_shutdown(self.now);
            self.pump();
        }
        if let Some(store) = &mut self.store {
            // A stop flushes; a crash loses what was not.
            if planned {
                assert!(store.flush().is_ok(), "a memory store flushes");
            } else {
                store.crash();
            }
        }
        for c in self.conns.values_mut() {
            c.closed = true;
        }
        self.current.clear();
        // Their tickets died with the process.
        self.pending.clear();
        let mut hub = Broker::new(self.hub.config().clone());
        self.storage_full = false;
        if self.sync {
            hub.set_authorizer(Some(Arc::new(acl(self.revoked))));
        }
        self.hub = hub;
        self.shut_down = false;
        self.now = self.now + Duration::from_secs(u64::from(down));
        let stored = self
            .store
            .as_ref()
            .map(MemoryStorage::load)
            .unwrap_or_default();
        self.hub.restore_all(self.now, stored);
        self.pump();
        self.connect_monitor(MONITOR, 86_400);
        self.connect_monitor(PERSISTENT, 86_400);
        self.answer_all();
    }

    /// No QoS 1/2 message allowed for `open/…` is lost for the persistent
    /// subscriber while its queue had room.
    fn check_nothing_lost(&mut self) {
        if self.shut_down {
            return;
        }
        let per = self.current.get(PERSISTENT).copied();
        if per.is_none_or(|c| self.conns[&c].closed) {
            self.connect_monitor(PERSISTENT, 86_400);
        }
        self.answer_all();
        for (topic, qos) in &self.published_qos {
            if *qos == QoS::AtMostOnce
                || !topic.starts_with("open/")
                || topic.starts_with("open/secret/")
                || self.carved_when_published.contains(topic)
                || !self.allowed_topics.contains(topic)
            {
                continue;
            }
            assert!(
                self.per_received.contains(topic) || self.per_dropped.contains(topic),
                "{topic} lost for the persistent session"
            );
        }
    }
}

fn subscribe(filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        properties: Default::default(),
        subscriptions: vec![Subscription {
            filter: TopicFilter::new(filter).expect("valid"),
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        }],
    })
}

/// Runs a hub program (see [`super::hub`]) and returns every action.
pub fn run(data: &[u8]) -> Vec<Action> {
    let Some((&flags, program)) = data.split_first() else {
        return Vec::new();
    };
    let mut w = World::new(flags);
    // A durable world's monitor outlives a restart: the wills sent at it
    // wait in its queue.
    w.connect_monitor(MONITOR, if w.store.is_some() { 86_400 } else { 0 });
    w.connect_monitor(PERSISTENT, 86_400);
    w.answer_all();
    for (conn, filter) in [
        (w.current[MONITOR], "trusted/+/state"),
        (w.current[MONITOR], "open/#"),
        (w.current[PERSISTENT], "open/#"),
    ] {
        w.send(conn, &subscribe(filter, QoS::AtLeastOnce));
        w.answer_all();
    }
    for step in program.chunks(3) {
        let [op, a, b] = [0, 1, 2].map(|i| step.get(i).copied().unwrap_or(0));
        w.step(op, a, b);
    }
    w.check_nothing_lost();
    w.log
}
