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

mod inspect;
mod messages;
mod persist;
mod pressure;
#[cfg(test)]
pub(crate) use persist::tests as persist_tests;
mod registry;
mod retained;
mod revoke;
mod routing;
mod store;
mod tree;
mod types;
mod wills;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{
    AuditRecord, DecidedBy, Decision, DropReason, Effect, Identity, Operation, WillOutcome,
};
use crate::codec::{
    Bytes, ConnectReasonCode, Properties, PublishExtras, PublishProperties, QoS, RetainHandling,
    SubscriptionId, TopicFilter, TopicName,
};
use crate::session::{
    self, ArmedWill, Authorizer, AuthzQuery, Delivery, DueWill, GrantedSubscription,
    InboundMessage, OutboundMessage, Session, TransportClosed,
};
use crate::time::{Instant, Now, Timestamp};

pub use inspect::{KickError, SessionInfo};
pub use persist::{
    BadRecord, MessageRecord, Persist, Restored, RetainedMessage, SentState, SessionRecord,
    StoredMessage, StoredSubscription, WillKey, WillRecord, WillState,
};
use retained::{Retained, RetainedStore, StoreOutcome as RetainOutcome};
use store::{Queued, SessionKey, Store, StoredSession, Timer};
use tree::{Sub, Tree};
pub use types::{
    Action, BrokerConfig, BrokerError, ConnId, OfflineOverflow, OnRevoke, ShutdownWills, Stats,
    Ticket, WillAfterExpiry,
};

#[derive(Debug)]
enum Pending {
    Session {
        conn: ConnId,
        ticket: session::Ticket,
    },
    Will {
        key: Option<SessionKey>,
        due: Box<DueWill>,
        query: AuthzQuery,
        record: Option<WillKey>,
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
    /// `config.session` and the synchronous authorizer, shared by every
    /// session; the hub's own decisions (wills) use the same authorizer.
    shared: Arc<crate::session::Shared>,
    /// Connections, sessions, the client-id index, deadlines: the room
    /// shaped for memory ([`store`]).
    store: Store,
    tree: Tree,
    /// Shared subscriptions by full filter (`$share/g/f`).
    shares: BTreeMap<Box<str>, ShareGroup>,
    retained: RetainedStore,
    pending: BTreeMap<Ticket, Pending>,
    actions: VecDeque<Action>,
    /// The targets of the publish being routed, kept between publishes so
    /// that routing allocates nothing per message once warmed up; bounded
    /// by the subscriptions one topic can match.
    route_targets: Vec<routing::Target>,
    next_ticket: u64,
    /// The last key given to a kept message ([`OutboundMessage::seq`]).
    next_seq: u64,
    /// This process's epoch in the keys of kept wills ([`WillKey`]).
    epoch: u64,
    /// Connections whose clients cannot keep up with what they are sent.
    congested: BTreeSet<ConnId>,
    /// Connections not read while any is congested.
    paused: BTreeSet<ConnId>,
    shut_down: bool,
    /// The counters of [`Broker::stats`].
    counted: Stats,
}

impl Broker {
    /// A hub with no connections.
    pub fn new(mut config: BrokerConfig) -> Self {
        config.session.durable = config.durable;
        let retained = RetainedStore::new(config.max_retained_messages, config.max_retained_bytes);
        Self {
            shared: Arc::new(crate::session::Shared::new(config.session.clone(), None)),
            config,
            store: Store::default(),
            tree: Tree::default(),
            shares: BTreeMap::new(),
            retained,
            pending: BTreeMap::new(),
            actions: VecDeque::new(),
            route_targets: Vec::new(),
            next_ticket: 0,
            next_seq: 0,
            epoch: 0,
            congested: BTreeSet::new(),
            paused: BTreeSet::new(),
            shut_down: false,
            counted: Stats::default(),
        }
    }

    /// What the hub holds now and has done since it started.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.store.connections(),
            sessions: self.store.sessions(),
            subscriptions: self.tree.len(),
            retained_messages: self.retained.len(),
            retained_bytes: self.retained.bytes(),
            ..self.counted
        }
    }

    /// Installs a synchronous authorizer (the built-in ACL): publishes,
    /// subscriptions and wills are decided on the spot instead of leaving as
    /// [`Action::Authorize`]. Replacing it (an ACL reload) takes effect for
    /// every decision from now on, wills still waiting included.
    pub fn set_authorizer(&mut self, authorizer: Option<Arc<dyn Authorizer>>) {
        let mut shared = crate::session::Shared::new(self.config.session.clone(), authorizer);
        shared.storage_unavailable = self.shared.storage_unavailable;
        self.share(shared);
    }

    /// The host's store could not commit (a full or failing disk:
    /// `available` false), or can again. Meanwhile QoS 1/2 publishes are
    /// refused — 5.0: PUBACK/PUBREC 0x97 Quota exceeded; 3.1.1, which has
    /// no negative acknowledgement: the connection is closed and the client
    /// sends it again later — and QoS 0 goes on.
    pub fn set_storage_available(&mut self, available: bool) {
        if self.shared.storage_unavailable != available {
            return;
        }
        let mut shared = (*self.shared).clone();
        shared.storage_unavailable = !available;
        self.share(shared);
    }

    /// What every session reads from now on.
    fn share(&mut self, shared: crate::session::Shared) {
        self.shared = Arc::new(shared);
        for session in self.store.conn_sessions_mut() {
            session.set_shared(self.shared.clone());
        }
    }

    /// Reserves room for `connections` connections and their sessions in
    /// the hub's tables: address space only, until they come. A table that
    /// grows instead copies itself at each doubling, and the copies it
    /// leaves behind stay resident until the allocator gives them back.
    /// At most 2^20 are reserved: a larger limit grows past them.
    pub fn reserve_connections(&mut self, connections: usize) {
        self.store.reserve(connections, self.config.max_sessions);
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Connections open.
    pub fn connections(&self) -> usize {
        self.store.connections()
    }

    /// Whether the hub still holds this connection (it forgets a connection
    /// when it closes it or is told it closed).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.store.conn(conn).is_some()
    }

    /// Sessions held, connected or stored.
    pub fn sessions(&self) -> usize {
        self.store.sessions()
    }

    /// Retained messages held.
    pub fn retained_messages(&self) -> usize {
        self.retained.len()
    }

    /// A new network connection at `now`; `peer` describes the remote end
    /// for the credentials and the log.
    pub fn open(&mut self, now: Now, peer: Option<String>) -> ConnId {
        self.open_tls(now, peer, None)
    }

    /// A new connection whose CONNECT is refused with `code` and closed — a
    /// limit the host enforces (connections per address, attempts per
    /// second) — with an audit record.
    pub fn open_refusing(
        &mut self,
        now: Now,
        peer: Option<String>,
        code: ConnectReasonCode,
        detail: &str,
    ) -> ConnId {
        self.audit(AuditRecord::ConnectionRefused {
            at: now.wall,
            peer: peer.clone(),
            reason: detail.to_owned(),
        });
        self.open_conn(now, peer, None, Some((code, detail)))
    }

    /// A new connection whose transport verified a client certificate
    /// (mTLS): authentication sees it in the credentials.
    pub fn open_tls(
        &mut self,
        now: Now,
        peer: Option<String>,
        certificate: Option<crate::auth::ClientCertificate>,
    ) -> ConnId {
        self.open_conn(now, peer, certificate, None)
    }

    fn open_conn(
        &mut self,
        now: Now,
        peer: Option<String>,
        certificate: Option<crate::auth::ClientCertificate>,
        refusal: Option<(ConnectReasonCode, &str)>,
    ) -> ConnId {
        let config = &self.shared;
        let id = self.store.open(|id| {
            let mut session = Session::with_shared(config.clone(), now)
                .with_assigned_client_id(format!("auto-{:x}", id.0));
            if let Some(peer) = peer {
                session = session.with_peer(peer);
            }
            if let Some(cert) = certificate {
                session = session.with_client_certificate(cert);
            }
            if let Some((code, detail)) = refusal {
                session = session.refusing(code, detail);
            }
            session
        });
        if self.shut_down {
            // No new sessions while shutting down.
            if let Some(c) = self.store.conn_mut(id) {
                c.session.handle_shutdown(now);
            }
        }
        self.drain(now, id);
        id
    }

    /// Bytes received on a connection. Bytes for a connection the hub
    /// closed are ignored.
    pub fn handle_bytes(&mut self, now: Now, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.store.conn_mut(conn) else {
            return;
        };
        c.session.handle_bytes(now, bytes);
        self.drain(now, conn);
        self.flush_dirty(now);
    }

    /// The transport of a connection ended (the will follows unless the
    /// client said goodbye). Harmless for a connection the hub closed.
    pub fn handle_closed(&mut self, now: Now, conn: ConnId, how: TransportClosed) {
        let Some(c) = self.store.conn_mut(conn) else {
            return;
        };
        c.session.handle_closed(now, how);
        self.drain(now, conn);
        if self.store.conn(conn).is_some() {
            self.detach(now, conn);
        }
        self.flush_dirty(now);
    }

    /// The client does not read: the host's bound on what waits to be written
    /// to it is full. The connection ends as a network failure would (the
    /// will follows), with an audit record; the host closes the socket.
    pub fn handle_unresponsive(&mut self, now: Now, conn: ConnId) {
        let Some(c) = self.store.conn(conn) else {
            return;
        };
        let client_id = c.session.client_id().map(str::to_owned);
        self.audit(AuditRecord::SlowClient {
            at: now.wall,
            client_id,
        });
        self.handle_closed(now, conn, TransportClosed::Error);
    }

    /// The answer to an [`Action::Authenticate`].
    ///
    /// # Errors
    /// [`BrokerError::UnknownTicket`] when no authentication is waiting for
    /// it (answered already, or its connection closed).
    pub fn handle_authentication(
        &mut self,
        now: Now,
        ticket: Ticket,
        outcome: session::AuthnOutcome,
    ) -> Result<(), BrokerError> {
        let Some(Pending::Session { conn, ticket: t }) = self.pending.remove(&ticket) else {
            return Err(BrokerError::UnknownTicket(ticket));
        };
        let c = self
            .store
            .conn_mut(conn)
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
        now: Now,
        ticket: Ticket,
        decision: Decision,
    ) -> Result<(), BrokerError> {
        match self.pending.remove(&ticket) {
            Some(Pending::Session { conn, ticket: t }) => {
                let c = self
                    .store
                    .conn_mut(conn)
                    .ok_or(BrokerError::UnknownTicket(ticket))?;
                c.session
                    .handle_authorization(now, t, decision)
                    .map_err(|_| BrokerError::UnknownTicket(ticket))?;
                self.drain(now, conn);
            }
            Some(Pending::Will {
                key,
                due,
                query,
                record,
            }) => {
                self.will_decided(now, key, *due, query, decision, record);
            }
            None => return Err(BrokerError::UnknownTicket(ticket)),
        }
        self.flush_dirty(now);
        Ok(())
    }

    /// Acts on every deadline at or before `now`: keep alive, CONNECT and
    /// credential timeouts, delayed wills, session expiry. Harmless early.
    pub fn handle_timeout(&mut self, now: Now) {
        // What is due is taken first: what the handlers schedule waits for
        // the next call, so this always ends.
        for timer in self.store.take_due(now.mono) {
            match timer {
                Timer::Conn(id) => {
                    let Some(c) = self.store.conn_mut(id) else {
                        continue;
                    };
                    if self.paused.contains(&id) {
                        // Not read: its silence is ours.
                        c.session.hold_keep_alive(now);
                    }
                    c.session.handle_timeout(now);
                    self.drain(now, id);
                }
                Timer::Will(key) => self.will_due(now, key),
                Timer::Expiry(key) => self.session_expired(now, key),
            }
        }
        self.flush_dirty(now);
    }

    /// Everything the host's store kept from before a restart, handed back
    /// before the first connection opens: [`Broker::restore`],
    /// [`Broker::restore_sessions`], [`Broker::restore_messages`],
    /// [`Broker::reauthorize_subscriptions`], then [`Broker::restore_wills`].
    pub fn restore_all(&mut self, now: Now, restored: Restored) {
        self.restore(now, restored.retained);
        self.restore_sessions(now, restored.sessions);
        self.restore_messages(now, restored.messages, restored.awaiting_release);
        // The rules may have changed while the broker was down: the
        // sessions' subscriptions are judged again, and what they queued
        // and no longer route is not sent.
        self.reauthorize_subscriptions(now);
        self.restore_wills(now, restored.wills);
        self.flush_dirty(now);
    }

    /// What the host's store kept from before a restart, handed back before
    /// the first connection opens: the retained messages. One whose expiry
    /// date passed while the broker was down is dropped (and, for a durable
    /// hub, unretained); the others expire when what was left of their
    /// interval at `now.wall` has passed on the monotonic clock.
    pub fn restore(&mut self, now: Now, retained: impl IntoIterator<Item = RetainedMessage>) {
        for msg in retained {
            let left = msg
                .expires_at
                .map(|at| at.saturating_duration_since(now.wall).as_millis());
            if left == Some(0) {
                if self.config.durable {
                    self.persist(Persist::Unretain(msg.topic));
                }
                continue;
            }
            let mut properties = msg.properties;
            if let Some(ms) = left {
                // Rounded up: a message with half a second left keeps it.
                let secs = ms.div_ceil(1000);
                properties.message_expiry_interval = Some(u32::try_from(secs).unwrap_or(u32::MAX));
            }
            let outcome = self.retained.store(Retained {
                topic: msg.topic.clone(),
                payload: msg.payload,
                qos: msg.qos,
                properties,
                stored_at: now.mono,
            });
            if let RetainOutcome::Refused(reason) = outcome {
                // The limits were lowered since it was stored.
                self.audit(AuditRecord::RetainRefused {
                    at: now.wall,
                    topic: msg.topic.as_mqtt_str().clone(),
                    reason,
                });
                if self.config.durable {
                    self.persist(Persist::Unretain(msg.topic));
                }
            }
        }
    }

    /// The server is shutting down: every connection gets DISCONNECT 0x8B
    /// (5.0) and is closed; wills follow [`BrokerConfig::shutdown_wills`].
    pub fn handle_shutdown(&mut self, now: Now) {
        self.shut_down = true;
        for id in self.store.conn_ids() {
            if let Some(c) = self.store.conn_mut(id) {
                c.session.handle_shutdown(now);
                self.drain(now, id);
            }
        }
        self.wills_at_shutdown(now);
        self.sessions_at_shutdown(now);
        self.flush_dirty(now);
    }

    /// The next output, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.store.next_deadline()
    }

    fn audit(&mut self, record: AuditRecord) {
        self.actions.push_back(Action::Audit(record));
    }

    fn persist(&mut self, op: Persist) {
        self.actions.push_back(Action::Persist(op));
    }

    fn ticket(&mut self, pending: Pending) -> Ticket {
        self.next_ticket += 1;
        let t = Ticket(self.next_ticket);
        self.pending.insert(t, pending);
        t
    }

    /// Runs a connection's session actions through the hub, in order.
    fn drain(&mut self, now: Now, id: ConnId) {
        use session::Action as S;
        loop {
            self.store.unmark_written(id);
            let Some(c) = self.store.conn_mut(id) else {
                return;
            };
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
                    let record = self.will_key(id);
                    self.will_triggered(now, key, due, record);
                }
                S::WillArmed(armed) => {
                    let record = self.will_key(id);
                    let ArmedWill {
                        will,
                        identity,
                        session_expiry_interval,
                    } = *armed;
                    self.keep_will(
                        record,
                        will,
                        identity,
                        session_expiry_interval,
                        WillState::Armed,
                    );
                }
                S::WillDeleted => {
                    let client_id = c.session.client_id_shared().cloned();
                    if let (Some(client_id), Some(key)) = (client_id, self.will_key(id)) {
                        self.persist(Persist::WillDone { client_id, key });
                    }
                }
                // A will carries its own identity; the subscriptions are
                // judged again with the new one.
                S::IdentityChanged(identity) => {
                    if let Some(key) = key {
                        self.reauthenticated(now, key, &identity);
                    }
                }
                S::Audit(record) => self.audit(record),
                S::Progress(step) => self.progress(id, step),
            }
        }
        self.store.reschedule(id);
        if self.congested.contains(&id) {
            self.relieve(now, id);
        }
    }

    /// Drains the connections that deliveries wrote to, in the order they
    /// were written to.
    fn flush_dirty(&mut self, now: Now) {
        loop {
            let written = self.store.take_written();
            if written.is_empty() {
                return;
            }
            for id in written {
                self.drain(now, id);
            }
        }
    }
}

/// The Message Expiry Interval left after waiting since `since`: `None` when
/// the message expired, `Some(None)` when it has no expiry.
pub(crate) fn remaining_expiry(
    properties: &PublishProperties,
    since: Instant,
    now: Instant,
) -> Option<Option<u32>> {
    let Some(interval) = properties.message_expiry_interval else {
        return Some(None);
    };
    let waited = now.saturating_duration_since(since).as_secs();
    let left = u64::from(interval).checked_sub(waited).filter(|l| *l > 0)?;
    Some(Some(u32::try_from(left).unwrap_or(u32::MAX)))
}

/// Whole seconds from `now` to `at`, rounded up (a paused delay or expiry
/// never ends sooner than it would have).
fn secs_left(at: Instant, now: Instant) -> u32 {
    let left = at.saturating_duration_since(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_connection_timers_stay_bounded_and_live_ones_still_fire() {
        let mut hub = Broker::new(BrokerConfig::default());
        let now = Now::from_secs(1_000);
        let timeout = hub.config().session.connect_timeout;
        let kept = hub.open(now, None);
        // Every connection that opens has a CONNECT deadline; those that
        // close leave their entries behind.
        for i in 0..1_000 {
            let at = now + Duration::from_millis(i);
            let c = hub.open(at, None);
            assert!(hub.store.queued_conn_deadlines() <= 2 * hub.connections() + 64);
            hub.handle_closed(at, c, TransportClosed::PeerClosed);
            while hub.poll_action().is_some() {}
        }
        assert_eq!(hub.poll_timeout(), Some(now.mono + timeout));
        hub.handle_timeout(now + (timeout - Duration::from_millis(1)));
        assert!(hub.is_open(kept));
        hub.handle_timeout(now + timeout);
        assert!(!hub.is_open(kept), "its CONNECT timeout closed it");
        while hub.poll_action().is_some() {}
        // What is left is stale: it comes due, and goes, doing nothing.
        while let Some(at) = hub.poll_timeout() {
            hub.handle_timeout(Now::new(at, now.wall));
            assert_eq!(hub.poll_action(), None);
        }
        assert_eq!(hub.store.queued_conn_deadlines(), 0);
    }
}
