//! The hub: one deterministic state machine over every connection and
//! session — client-id registry and takeover, persistent sessions and their
//! expiry, routing with wildcards and shared subscriptions, retained
//! messages, offline queues, and wills that are authorized when they are
//! sent.
//!
//! # Run loop
//!
//! The host opens a connection with [`Broker::open`] and feeds it with
//! [`Broker::handle_bytes`] and [`Broker::handle_closed`]; answers requests
//! with [`Broker::handle_authentication`] and
//! [`Broker::handle_authorization`]; calls [`Broker::handle_timeout`] at
//! [`Broker::poll_timeout`]. After every input it drains
//! [`Broker::poll_action`] until `None`. Nothing reads a clock or iterates a
//! hash map: the same inputs give the same actions.
//!
//! # Choices
//!
//! - Every inbound publish is authorized before it is routed, every
//!   subscription before it is added, every will when it is sent (against
//!   the identity of the session's last successful authentication and the
//!   authorizer in force then). What is routed to a subscriber is *not*
//!   authorized again per delivery: the subscription's authorization covers
//!   it, and revoking a right takes effect for new subscriptions.
//! - Overlapping subscriptions of one session (3.1.1 and 5.0 alike) give one
//!   delivery at the highest granted QoS, carrying every matching
//!   Subscription Identifier; No Local removes the session's own matching
//!   subscriptions first.
//! - Disconnected persistent sessions queue QoS 1/2 messages up to
//!   [`BrokerConfig::max_offline_messages`]; QoS 0 messages are not queued
//!   for them. Each dropped message is audited.
//! - Shared subscriptions deliver each message to one connected member,
//!   round-robin in subscription order; when none is connected, to one
//!   member's offline queue, round-robin too.

mod retained;
mod tree;
mod types;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{
    AuditRecord, DecidedBy, Decision, DropReason, Effect, Identity, Operation, WillOutcome,
};
use crate::codec::{
    Bytes, ConnectReasonCode, Properties, PublishProperties, QoS, RetainHandling, SubscriptionId,
    TopicFilter, TopicName,
};
use crate::session::{
    self, Authorizer, AuthzQuery, Delivery, DueWill, GrantedSubscription, InboundMessage, Inflight,
    OutboundMessage, Session, TransportClosed,
};
use crate::time::Timestamp;

use retained::{Retained, RetainedStore, StoreOutcome as RetainOutcome};
use tree::{Sub, Tree};
pub use types::{
    Action, BrokerConfig, BrokerError, ConnId, OfflineOverflow, ShutdownWills, Ticket,
    WillAfterExpiry,
};

/// A session in the registry; outlives its connections when persistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionKey(pub u64);

#[derive(Debug)]
struct Conn {
    session: Session,
    /// The session it is attached to, once opened.
    key: Option<SessionKey>,
    /// Its entry in the timer set.
    deadline: Option<Timestamp>,
    /// Has output waiting to be drained.
    dirty: bool,
}

/// A message queued for a disconnected session, with when it was queued so
/// its expiry can be lowered by the time it waited.
#[derive(Debug)]
struct Queued {
    msg: OutboundMessage,
    at: Timestamp,
}

#[derive(Debug)]
struct DelayedWill {
    due: Box<DueWill>,
    at: Timestamp,
}

#[derive(Debug)]
struct StoredSession {
    client_id: String,
    conn: Option<ConnId>,
    /// The identity of the last successful (re)authentication.
    identity: Arc<Identity>,
    /// When it expires while disconnected (`None`: connected, or never).
    expires_at: Option<Timestamp>,
    /// Delivery state kept while disconnected.
    inflight: Inflight,
    offline: VecDeque<Queued>,
    /// Its filters in the tree, for removal when the session ends.
    filters: Vec<TopicFilter>,
    will: Option<DelayedWill>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Conn(ConnId),
    Will(SessionKey),
    Expiry(SessionKey),
}

#[derive(Debug)]
enum Pending {
    Session {
        conn: ConnId,
        ticket: session::Ticket,
    },
    Will {
        key: SessionKey,
        due: Box<DueWill>,
        query: AuthzQuery,
    },
}

#[derive(Debug, Default)]
struct ShareGroup {
    members: usize,
    cursor: usize,
}

/// The broker hub. See the module docs for the run loop.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    authorizer: Option<Arc<dyn Authorizer>>,
    conns: BTreeMap<ConnId, Conn>,
    sessions: BTreeMap<SessionKey, StoredSession>,
    by_client_id: BTreeMap<String, SessionKey>,
    tree: Tree,
    /// Shared subscriptions by full filter (`$share/g/f`).
    shares: BTreeMap<Box<str>, ShareGroup>,
    retained: RetainedStore,
    pending: BTreeMap<Ticket, Pending>,
    timers: BTreeSet<(Timestamp, Timer)>,
    actions: VecDeque<Action>,
    dirty: Vec<ConnId>,
    next_conn: u64,
    next_session: u64,
    next_ticket: u64,
    shut_down: bool,
}

impl Broker {
    /// A hub with no connections.
    pub fn new(config: BrokerConfig) -> Self {
        let retained = RetainedStore::new(config.max_retained_messages, config.max_retained_bytes);
        Self {
            config,
            authorizer: None,
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            by_client_id: BTreeMap::new(),
            tree: Tree::default(),
            shares: BTreeMap::new(),
            retained,
            pending: BTreeMap::new(),
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            dirty: Vec::new(),
            next_conn: 0,
            next_session: 0,
            next_ticket: 0,
            shut_down: false,
        }
    }

    /// Installs a synchronous authorizer (the built-in ACL): publishes,
    /// subscriptions and wills are decided on the spot instead of leaving as
    /// [`Action::Authorize`]. Replacing it (an ACL reload) takes effect for
    /// every decision from now on, wills still waiting included.
    pub fn set_authorizer(&mut self, authorizer: Option<Arc<dyn Authorizer>>) {
        for conn in self.conns.values_mut() {
            conn.session.set_authorizer(authorizer.clone());
        }
        self.authorizer = authorizer;
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Connections open.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether the hub still holds this connection (it forgets a connection
    /// when it closes it or is told it closed).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Sessions held, connected or stored.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Retained messages held.
    pub fn retained_messages(&self) -> usize {
        self.retained.len()
    }

    /// A new network connection at `now`; `peer` describes the remote end
    /// for the credentials and the log.
    pub fn open(&mut self, now: Timestamp, peer: Option<String>) -> ConnId {
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        let mut session = Session::new(self.config.session.clone(), now)
            .with_assigned_client_id(format!("auto-{:x}", id.0));
        if let Some(peer) = peer {
            session = session.with_peer(peer);
        }
        session.set_authorizer(self.authorizer.clone());
        self.conns.insert(
            id,
            Conn {
                session,
                key: None,
                deadline: None,
                dirty: false,
            },
        );
        if self.shut_down {
            // No new sessions while shutting down.
            if let Some(c) = self.conns.get_mut(&id) {
                c.session.handle_shutdown(now);
            }
        }
        self.drain(now, id);
        id
    }

    /// Bytes received on a connection. Bytes for a connection the hub
    /// closed are ignored.
    pub fn handle_bytes(&mut self, conn: ConnId, now: Timestamp, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.session.handle_bytes(now, bytes);
        self.drain(now, conn);
        self.flush_dirty(now);
    }

    /// The transport of a connection ended (the will follows unless the
    /// client said goodbye). Harmless for a connection the hub closed.
    pub fn handle_closed(&mut self, conn: ConnId, now: Timestamp, how: TransportClosed) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.session.handle_closed(now, how);
        self.drain(now, conn);
        if self.conns.contains_key(&conn) {
            self.detach(now, conn);
        }
        self.flush_dirty(now);
    }

    /// The answer to an [`Action::Authenticate`].
    ///
    /// # Errors
    /// [`BrokerError::UnknownTicket`] when no authentication is waiting for
    /// it (answered already, or its connection closed).
    pub fn handle_authentication(
        &mut self,
        now: Timestamp,
        ticket: Ticket,
        outcome: session::AuthnOutcome,
    ) -> Result<(), BrokerError> {
        let Some(Pending::Session { conn, ticket: t }) = self.pending.remove(&ticket) else {
            return Err(BrokerError::UnknownTicket(ticket));
        };
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(BrokerError::UnknownTicket(ticket))?;
        c.session
            .handle_authentication(now, t, outcome)
            .map_err(|_| BrokerError::UnknownTicket(ticket))?;
        self.drain(now, conn);
        self.flush_dirty(now);
        Ok(())
    }

    /// The answer to an [`Action::Authorize`].
    ///
    /// # Errors
    /// [`BrokerError::UnknownTicket`] when no authorization is waiting for
    /// it (answered already, or its connection closed).
    pub fn handle_authorization(
        &mut self,
        now: Timestamp,
        ticket: Ticket,
        decision: Decision,
    ) -> Result<(), BrokerError> {
        match self.pending.remove(&ticket) {
            Some(Pending::Session { conn, ticket: t }) => {
                let c = self
                    .conns
                    .get_mut(&conn)
                    .ok_or(BrokerError::UnknownTicket(ticket))?;
                c.session
                    .handle_authorization(now, t, decision)
                    .map_err(|_| BrokerError::UnknownTicket(ticket))?;
                self.drain(now, conn);
            }
            Some(Pending::Will { key, due, query }) => {
                self.will_decided(now, key, *due, query, decision);
            }
            None => return Err(BrokerError::UnknownTicket(ticket)),
        }
        self.flush_dirty(now);
        Ok(())
    }

    /// Acts on every deadline at or before `now`: keep alive, CONNECT and
    /// credential timeouts, delayed wills, session expiry. Harmless early.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        // Take what is due first: what the handlers schedule waits for the
        // next call, so this always ends.
        let later = self
            .timers
            .split_off(&(now + Duration::from_millis(1), Timer::Conn(ConnId(0))));
        let due = std::mem::replace(&mut self.timers, later);
        for (at, timer) in due {
            match timer {
                Timer::Conn(id) => {
                    let Some(c) = self.conns.get_mut(&id) else {
                        continue;
                    };
                    if c.deadline == Some(at) {
                        c.deadline = None;
                    }
                    c.session.handle_timeout(now);
                    self.drain(now, id);
                }
                Timer::Will(key) => {
                    let Some(s) = self.sessions.get_mut(&key) else {
                        continue;
                    };
                    if let Some(w) = s.will.take_if(|w| w.at <= now) {
                        self.send_will(now, key, w.due);
                    }
                }
                Timer::Expiry(key) => {
                    let expired = self.sessions.get(&key).is_some_and(|s| {
                        s.conn.is_none() && s.expires_at.is_some_and(|at| at <= now)
                    });
                    if expired {
                        let client_id = self.sessions[&key].client_id.clone();
                        self.audit(AuditRecord::SessionExpired { at: now, client_id });
                        self.end_session(now, key);
                    }
                }
            }
        }
        self.flush_dirty(now);
    }

    /// The server is shutting down: every connection gets DISCONNECT 0x8B
    /// (5.0) and is closed; wills follow [`BrokerConfig::shutdown_wills`].
    pub fn handle_shutdown(&mut self, now: Timestamp) {
        self.shut_down = true;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                c.session.handle_shutdown(now);
                self.drain(now, id);
            }
        }
        let waiting: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.will.is_some())
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            let Some(w) = self.sessions.get_mut(&key).and_then(|s| s.will.take()) else {
                continue;
            };
            self.timers.remove(&(w.at, Timer::Will(key)));
            match self.config.shutdown_wills {
                ShutdownWills::SendNow => self.send_will(now, key, w.due),
                ShutdownWills::Drop => self.cancel_will(now, &w.due, "server shutting down"),
            }
        }
        self.flush_dirty(now);
    }

    /// The next output, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.first().map(|(at, _)| *at)
    }

    fn audit(&mut self, record: AuditRecord) {
        self.actions.push_back(Action::Audit(record));
    }

    fn ticket(&mut self, pending: Pending) -> Ticket {
        self.next_ticket += 1;
        let t = Ticket(self.next_ticket);
        self.pending.insert(t, pending);
        t
    }

    /// Runs a connection's session actions through the hub, in order.
    fn drain(&mut self, now: Timestamp, id: ConnId) {
        use session::Action as S;
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            c.dirty = false;
            let Some(action) = c.session.poll_action() else {
                break;
            };
            let key = c.key;
            match action {
                S::Send(bytes) => self.actions.push_back(Action::Send { conn: id, bytes }),
                S::Close(reason) => {
                    self.actions.push_back(Action::Close { conn: id, reason });
                    self.detach(now, id);
                    return;
                }
                S::Authenticate {
                    ticket,
                    credentials,
                    reauthentication,
                } => {
                    let ticket = self.ticket(Pending::Session { conn: id, ticket });
                    self.actions.push_back(Action::Authenticate {
                        ticket,
                        conn: id,
                        credentials,
                        reauthentication,
                    });
                }
                S::Authorize { ticket, query } => {
                    let ticket = self.ticket(Pending::Session { conn: id, ticket });
                    self.actions.push_back(Action::Authorize {
                        ticket,
                        conn: Some(id),
                        query,
                    });
                }
                S::Open {
                    ticket,
                    client_id,
                    clean_start,
                    identity,
                    ..
                } => self.open_session(now, id, ticket, client_id, clean_start, identity),
                S::Publish(msg) => self.publish(now, key, msg),
                S::Subscribe {
                    granted,
                    subscription_identifier,
                } => {
                    if let Some(key) = key {
                        self.subscribe(now, key, granted, subscription_identifier);
                    }
                }
                S::Unsubscribe(filters) => {
                    if let Some(key) = key {
                        for f in filters {
                            self.unsubscribe(key, &f);
                        }
                    }
                }
                S::DeliverWill(due) => {
                    if let Some(key) = key {
                        self.will_triggered(now, key, due);
                    }
                }
                S::IdentityChanged(identity) => {
                    if let Some(s) = key.and_then(|k| self.sessions.get_mut(&k)) {
                        s.identity = identity;
                    }
                }
                S::Audit(record) => self.audit(record),
            }
        }
        self.reschedule(id);
    }

    /// Drains the connections that deliveries wrote to, in the order they
    /// were written to.
    fn flush_dirty(&mut self, now: Timestamp) {
        while !self.dirty.is_empty() {
            for id in std::mem::take(&mut self.dirty) {
                self.drain(now, id);
            }
        }
    }

    fn reschedule(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let next = c.session.poll_timeout();
        if next == c.deadline {
            return;
        }
        if let Some(old) = c.deadline {
            self.timers.remove(&(old, Timer::Conn(id)));
        }
        c.deadline = next;
        if let Some(at) = next {
            self.timers.insert((at, Timer::Conn(id)));
        }
    }

    /// The connection is gone: its session ends, or is stored until it
    /// expires.
    fn detach(&mut self, now: Timestamp, id: ConnId) {
        let Some(mut c) = self.conns.remove(&id) else {
            return;
        };
        if let Some(at) = c.deadline {
            self.timers.remove(&(at, Timer::Conn(id)));
        }
        // Its requests die with it.
        self.pending
            .retain(|_, p| !matches!(p, Pending::Session { conn, .. } if *conn == id));
        let Some(key) = c.key else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.conn != Some(id) {
            return;
        }
        s.conn = None;
        let expiry = c.session.session_expiry_interval().unwrap_or(0);
        if expiry == 0 {
            self.end_session(now, key);
            return;
        }
        let mut inflight = c.session.take_inflight();
        // Messages that waited for the client's window wait on; their
        // expiry counts from now (the time they spent queued while connected
        // is not known here).
        for msg in inflight.queued.drain(..) {
            s.offline.push_back(Queued { msg, at: now });
        }
        s.inflight = inflight;
        if expiry != u32::MAX {
            let at = now + Duration::from_secs(u64::from(expiry));
            s.expires_at = Some(at);
            self.timers.insert((at, Timer::Expiry(key)));
        }
        let client_id = s.client_id.clone();
        let excess: Vec<Queued> = {
            let max = self.config.max_offline_messages;
            let s = self
                .sessions
                .get_mut(&key)
                .expect("the session was just stored");
            if s.offline.len() > max {
                s.offline.drain(max..).collect()
            } else {
                Vec::new()
            }
        };
        for q in excess {
            self.dropped(now, &client_id, &q.msg, DropReason::QueueFull);
        }
    }

    /// The session ends: its subscriptions go, what it had queued is
    /// dropped (audited), and a will still waiting is sent now (§3.1.3.2.2).
    fn end_session(&mut self, now: Timestamp, key: SessionKey) {
        let Some(mut s) = self.sessions.remove(&key) else {
            return;
        };
        self.by_client_id.remove(&s.client_id);
        if let Some(at) = s.expires_at {
            self.timers.remove(&(at, Timer::Expiry(key)));
        }
        for f in std::mem::take(&mut s.filters) {
            self.remove_subscription(key, &f);
        }
        let queued = s
            .inflight
            .outbound
            .drain(..)
            .map(|m| m.message)
            .chain(s.inflight.queued.drain(..))
            .chain(s.offline.drain(..).map(|q| q.msg));
        let lost: Vec<OutboundMessage> = queued.collect();
        for msg in &lost {
            self.dropped(now, &s.client_id, msg, DropReason::SessionEnded);
        }
        if let Some(w) = s.will.take() {
            self.timers.remove(&(w.at, Timer::Will(key)));
            self.send_will(now, key, w.due);
        }
    }

    fn dropped(
        &mut self,
        now: Timestamp,
        client_id: &str,
        msg: &OutboundMessage,
        reason: DropReason,
    ) {
        self.audit(AuditRecord::MessageDropped {
            at: now,
            client_id: client_id.to_owned(),
            topic: msg.topic.as_mqtt_str().clone(),
            qos: msg.qos,
            reason,
        });
    }

    /// The session of an authenticated connection: take over a connected
    /// one with the same client id, resume a stored one, or start anew.
    fn open_session(
        &mut self,
        now: Timestamp,
        id: ConnId,
        ticket: session::Ticket,
        client_id: String,
        clean_start: bool,
        identity: Arc<Identity>,
    ) {
        if let Some(&key) = self.by_client_id.get(&client_id)
            && let Some(old) = self.sessions[&key].conn
            && old != id
        {
            // [MQTT-3.1.4-3]
            self.audit(AuditRecord::Takeover {
                at: now,
                client_id: client_id.clone(),
                identity: identity.clone(),
            });
            if let Some(c) = self.conns.get_mut(&old) {
                c.session.handle_takeover(now);
            }
            self.drain(now, old);
            self.detach(now, old);
        }
        if let Some(&key) = self.by_client_id.get(&client_id) {
            if clean_start {
                // A clean start ends the old session, and sends its will.
                self.end_session(now, key);
            } else {
                self.resume(now, id, ticket, key, identity);
                return;
            }
        }
        if self.sessions.len() >= self.config.max_sessions {
            if let Some(c) = self.conns.get_mut(&id) {
                let _ = c.session.handle_open_refused(
                    ticket,
                    ConnectReasonCode::QuotaExceeded,
                    "too many sessions",
                );
            }
            return;
        }
        self.next_session += 1;
        let key = SessionKey(self.next_session);
        self.by_client_id.insert(client_id.clone(), key);
        self.sessions.insert(
            key,
            StoredSession {
                client_id,
                conn: Some(id),
                identity,
                expires_at: None,
                inflight: Inflight::default(),
                offline: VecDeque::new(),
                filters: Vec::new(),
                will: None,
            },
        );
        if let Some(c) = self.conns.get_mut(&id) {
            c.key = Some(key);
            let _ = c.session.handle_open(now, ticket, false);
        }
    }

    fn resume(
        &mut self,
        now: Timestamp,
        id: ConnId,
        ticket: session::Ticket,
        key: SessionKey,
        identity: Arc<Identity>,
    ) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        // [MQTT-3.1.3-9] The client is back before its will was due.
        let will = s.will.take();
        if let Some(at) = s.expires_at.take() {
            self.timers.remove(&(at, Timer::Expiry(key)));
        }
        s.conn = Some(id);
        s.identity = identity;
        let mut inflight = std::mem::take(&mut s.inflight);
        for q in s.offline.drain(..) {
            let mut msg = q.msg;
            match remaining_expiry(&msg.properties, q.at, now) {
                None => {}
                Some(left) => {
                    if left.is_some() {
                        msg.properties.message_expiry_interval = left;
                    }
                    inflight.queued.push(msg);
                }
            }
        }
        if let Some(w) = will {
            self.timers.remove(&(w.at, Timer::Will(key)));
            self.cancel_will(now, &w.due, "the client reconnected");
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.key = Some(key);
            let _ = c.session.handle_resume(now, ticket, inflight);
        }
    }

    fn publish(&mut self, now: Timestamp, from: Option<SessionKey>, msg: InboundMessage) {
        if msg.retain {
            self.retain(now, &msg.topic, &msg.payload, msg.qos, &msg.properties);
        }
        self.route(
            now,
            from,
            &msg.topic,
            &msg.payload,
            msg.qos,
            msg.retain,
            &msg.properties,
        );
    }

    fn retain(
        &mut self,
        now: Timestamp,
        topic: &TopicName,
        payload: &Bytes,
        qos: QoS,
        properties: &Properties<PublishProperties>,
    ) {
        let outcome = self.retained.store(Retained {
            topic: topic.clone(),
            payload: payload.clone(),
            qos,
            properties: properties.clone(),
            stored_at: now,
        });
        if let RetainOutcome::Refused(reason) = outcome {
            self.audit(AuditRecord::RetainRefused {
                at: now,
                topic: topic.as_mqtt_str().clone(),
                reason,
            });
        }
    }

    /// Delivers a message to every session with a matching subscription.
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        now: Timestamp,
        from: Option<SessionKey>,
        topic: &TopicName,
        payload: &Bytes,
        qos: QoS,
        retain: bool,
        properties: &Properties<PublishProperties>,
    ) {
        let mut targets: Vec<Target> = Vec::new();
        let mut groups: Vec<(Box<str>, Vec<Target>)> = Vec::new();
        {
            let mut hits: Vec<&Sub> = Vec::new();
            self.tree.matches(topic.as_str(), &mut hits);
            for sub in hits {
                if let Some(group) = sub.group() {
                    let _ = group;
                    let name = sub.filter.as_str();
                    let t = Target::of(sub);
                    match groups.iter_mut().find(|(g, _)| &**g == name) {
                        Some((_, members)) => members.push(t),
                        None => groups.push((name.into(), vec![t])),
                    }
                    continue;
                }
                // [MQTT-3.8.3-3] No Local: not to the publisher itself.
                if sub.options.no_local && Some(sub.key) == from {
                    continue;
                }
                targets.push(Target::of(sub));
            }
        }
        // One delivery per session: the highest QoS, every identifier.
        targets.sort_by_key(|t| t.key);
        targets.dedup_by(|later, first| {
            if later.key != first.key {
                return false;
            }
            first.qos = first.qos.max(later.qos);
            first.retain_as_published |= later.retain_as_published;
            first.ids.extend(later.ids.drain(..));
            true
        });
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, members) in groups {
            if let Some(t) = self.pick_member(&name, members) {
                targets.push(t);
            }
        }
        for t in targets {
            let mut props = properties.clone();
            if !t.ids.is_empty() {
                props.subscription_identifiers = t.ids.into_iter().collect();
            }
            let msg = OutboundMessage {
                topic: topic.clone(),
                payload: payload.clone(),
                qos: qos.min(t.qos),
                // [MQTT-3.3.1-12], [MQTT-3.3.1-13]
                retain: retain && t.retain_as_published,
                properties: props,
            };
            self.deliver(now, t.key, msg);
        }
    }

    /// Round-robin over the group's members in subscription order: the next
    /// connected one, else the next one (to its offline queue).
    fn pick_member(&mut self, name: &str, members: Vec<Target>) -> Option<Target> {
        let cursor = self.shares.get(name).map_or(0, |g| g.cursor);
        let n = members.len();
        let connected = |t: &Target| self.sessions.get(&t.key).is_some_and(|s| s.conn.is_some());
        let order = (0..n).map(|i| (cursor + i) % n);
        let chosen = order
            .clone()
            .find(|&i| connected(&members[i]))
            .or_else(|| order.clone().next())?;
        if let Some(g) = self.shares.get_mut(name) {
            g.cursor = (chosen + 1) % n;
        }
        members.into_iter().nth(chosen)
    }

    /// Hands a message to a session: its connection, or its offline queue.
    fn deliver(&mut self, now: Timestamp, key: SessionKey, msg: OutboundMessage) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if let Some(id) = s.conn
            && let Some(c) = self.conns.get_mut(&id)
        {
            match c.session.deliver(now, msg.clone()) {
                Delivery::Accepted => {
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(id);
                    }
                    return;
                }
                // Dropped for this client (MQTT 5.0 §3.1.2.11.4).
                Delivery::TooLarge => return,
                Delivery::QueueFull => {
                    if msg.qos != QoS::AtMostOnce {
                        let client_id = s.client_id.clone();
                        self.dropped(now, &client_id, &msg, DropReason::QueueFull);
                    }
                    return;
                }
                Delivery::NotConnected => {}
            }
        }
        if msg.qos == QoS::AtMostOnce {
            return;
        }
        let mut lost = None;
        if s.offline.len() >= self.config.max_offline_messages {
            match self.config.offline_overflow {
                OfflineOverflow::DropNewest => lost = Some(msg),
                OfflineOverflow::DropOldest => {
                    lost = s.offline.pop_front().map(|q| q.msg);
                    s.offline.push_back(Queued { msg, at: now });
                }
            }
        } else {
            s.offline.push_back(Queued { msg, at: now });
        }
        if let Some(msg) = lost {
            let client_id = s.client_id.clone();
            self.dropped(now, &client_id, &msg, DropReason::QueueFull);
        }
    }

    fn subscribe(
        &mut self,
        now: Timestamp,
        key: SessionKey,
        granted: Vec<GrantedSubscription>,
        id: Option<SubscriptionId>,
    ) {
        for g in granted {
            let mut options = g.subscription.options;
            options.qos = g.granted_qos;
            let filter = g.subscription.filter;
            let existed = self.tree.insert(Sub {
                key,
                filter: filter.clone(),
                options,
                id,
            });
            if !existed {
                if filter.shared().is_some() {
                    self.shares
                        .entry(filter.as_str().into())
                        .or_default()
                        .members += 1;
                }
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.filters.push(filter.clone());
                }
            }
            // [MQTT-3.8.4-4] Retained messages on subscribe, per Retain
            // Handling; none for shared subscriptions (§4.8.2).
            let send = match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendAtSubscribeIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
            if !send || filter.shared().is_some() {
                continue;
            }
            for r in self.retained.matching(filter.as_str(), now) {
                let mut properties = r.properties;
                if let Some(id) = id {
                    properties.subscription_identifiers = std::iter::once(id).collect();
                }
                let msg = OutboundMessage {
                    topic: r.topic,
                    payload: r.payload,
                    qos: r.qos.min(options.qos),
                    // [MQTT-3.3.1-9]
                    retain: true,
                    properties,
                };
                self.deliver(now, key, msg);
            }
        }
    }

    fn unsubscribe(&mut self, key: SessionKey, filter: &TopicFilter) {
        if self.remove_subscription(key, filter)
            && let Some(s) = self.sessions.get_mut(&key)
        {
            s.filters.retain(|f| f != filter);
        }
    }

    fn remove_subscription(&mut self, key: SessionKey, filter: &TopicFilter) -> bool {
        let removed = self.tree.remove(key, filter);
        if removed
            && filter.shared().is_some()
            && let Some(g) = self.shares.get_mut(filter.as_str())
        {
            g.members -= 1;
            if g.members == 0 {
                self.shares.remove(filter.as_str());
            }
        }
        removed
    }

    /// A session handed its will up: send it now, or when its delay is over
    /// (the smaller of Will Delay Interval and Session Expiry Interval,
    /// §3.1.3.2.2).
    fn will_triggered(&mut self, now: Timestamp, key: SessionKey, due: Box<DueWill>) {
        if self.shut_down && self.config.shutdown_wills == ShutdownWills::Drop {
            self.cancel_will(now, &due, "server shutting down");
            return;
        }
        let delay = due
            .will
            .properties
            .will_delay_interval
            .unwrap_or(0)
            .min(due.session_expiry_interval);
        if delay == 0 || self.shut_down {
            self.send_will(now, key, due);
            return;
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            self.send_will(now, key, due);
            return;
        };
        let at = now + Duration::from_secs(u64::from(delay));
        let record = AuditRecord::Will {
            at: now,
            identity: due.identity.clone(),
            topic: due.will.topic.as_mqtt_str().clone(),
            trigger: Some(due.trigger),
            outcome: WillOutcome::Delayed { until: at },
        };
        s.will = Some(DelayedWill { due, at });
        self.timers.insert((at, Timer::Will(key)));
        self.audit(record);
    }

    fn cancel_will(&mut self, now: Timestamp, due: &DueWill, reason: &str) {
        self.audit(AuditRecord::Will {
            at: now,
            identity: due.identity.clone(),
            topic: due.will.topic.as_mqtt_str().clone(),
            trigger: Some(due.trigger),
            outcome: WillOutcome::Cancelled {
                reason: reason.to_owned(),
            },
        });
    }

    /// The will is due: authorize it against its identity snapshot — never
    /// re-authenticate — and publish it on Allow.
    fn send_will(&mut self, now: Timestamp, key: SessionKey, due: Box<DueWill>) {
        let will = &due.will;
        let query = AuthzQuery {
            identity: due.identity.clone(),
            op: Operation::Will,
            topic: will.topic.as_mqtt_str().clone(),
            qos: will.qos,
            retain: will.retain,
            will_trigger: Some(due.trigger),
        };
        let exp = due.identity.expires_at;
        let too_late = match self.config.will_after_expiry {
            WillAfterExpiry::Identity => false,
            WillAfterExpiry::Strict => exp.is_some_and(|e| due.triggered_at > e),
            WillAfterExpiry::Grace(grace) => exp.is_some_and(|e| due.triggered_at > e + grace),
        };
        if too_late {
            let decision = Decision {
                effect: Effect::Deny,
                decided_by: DecidedBy::WillAfterExpiry,
            };
            self.will_decided(now, key, *due, query, decision);
            return;
        }
        let decision = self
            .authorizer
            .as_ref()
            .and_then(|a| a.authorize(&query.as_request()));
        match decision {
            Some(decision) => self.will_decided(now, key, *due, query, decision),
            None => {
                let q = query.clone();
                let ticket = self.ticket(Pending::Will { key, due, query: q });
                self.actions.push_back(Action::Authorize {
                    ticket,
                    conn: None,
                    query,
                });
            }
        }
    }

    fn will_decided(
        &mut self,
        now: Timestamp,
        key: SessionKey,
        due: DueWill,
        query: AuthzQuery,
        decision: Decision,
    ) {
        let allowed = decision.is_allowed();
        let record = AuditRecord::Will {
            at: now,
            identity: due.identity.clone(),
            topic: due.will.topic.as_mqtt_str().clone(),
            trigger: Some(due.trigger),
            outcome: if allowed {
                WillOutcome::Delivered
            } else {
                WillOutcome::Denied {
                    decision: decision.clone(),
                }
            },
        };
        self.audit(AuditRecord::authorization(now, query, decision));
        if allowed {
            let will = due.will;
            let w = &*will.properties;
            // Published exactly as the client would have: every will
            // property, User Property order kept [MQTT-3.1.3-10].
            let properties = Properties::from(PublishProperties {
                payload_format_indicator: w.payload_format_indicator,
                message_expiry_interval: w.message_expiry_interval,
                content_type: w.content_type.clone(),
                response_topic: w.response_topic.clone(),
                correlation_data: w.correlation_data.clone(),
                user_properties: w.user_properties.clone(),
                ..PublishProperties::default()
            });
            if will.retain {
                self.retain(now, &will.topic, &will.payload, will.qos, &properties);
            }
            // No Local still knows the client when its session lives on.
            let from = self.sessions.contains_key(&key).then_some(key);
            self.route(
                now,
                from,
                &will.topic,
                &will.payload,
                will.qos,
                will.retain,
                &properties,
            );
        }
        self.audit(record);
    }
}

/// One subscriber of a message, with what its matching subscriptions ask.
#[derive(Debug)]
struct Target {
    key: SessionKey,
    qos: QoS,
    retain_as_published: bool,
    ids: smallvec::SmallVec<[SubscriptionId; 2]>,
}

impl Target {
    fn of(sub: &Sub) -> Self {
        Self {
            key: sub.key,
            qos: sub.options.qos,
            retain_as_published: sub.options.retain_as_published,
            ids: sub.id.into_iter().collect(),
        }
    }
}

/// The Message Expiry Interval left after waiting since `since`: `None` when
/// the message expired, `Some(None)` when it has no expiry.
pub(crate) fn remaining_expiry(
    properties: &Properties<PublishProperties>,
    since: Timestamp,
    now: Timestamp,
) -> Option<Option<u32>> {
    let Some(interval) = properties.message_expiry_interval else {
        return Some(None);
    };
    let waited = now.saturating_duration_since(since).as_secs();
    let left = u64::from(interval).checked_sub(waited).filter(|l| *l > 0)?;
    Some(Some(u32::try_from(left).unwrap_or(u32::MAX)))
}
