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

mod registry;
mod retained;
mod routing;
mod tree;
mod types;
mod wills;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
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
    self, Authorizer, AuthzQuery, Delivery, DueWill, GrantedSubscription, InboundMessage, Inflight,
    OutboundMessage, Session, TransportClosed,
};
use crate::slots::{SlotKey, Slots};
use crate::time::{Instant, Now};

use retained::{Retained, RetainedStore, StoreOutcome as RetainOutcome};
use tree::{Sub, Tree};
pub use types::{
    Action, BrokerConfig, BrokerError, ConnId, OfflineOverflow, ShutdownWills, Ticket,
    WillAfterExpiry,
};
use wills::DelayedWill;

/// A session in the registry; outlives its connections when persistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
/// Never 0 (slot ids are not): an `Option` of it is a word.
pub(crate) struct SessionKey(pub std::num::NonZeroU64);

impl SlotKey for SessionKey {
    fn from_id(id: u64) -> Self {
        SessionKey(std::num::NonZeroU64::new(id).unwrap_or(std::num::NonZeroU64::MIN))
    }
    fn id(self) -> u64 {
        self.0.get()
    }
}

impl SlotKey for ConnId {
    fn from_id(id: u64) -> Self {
        ConnId(id)
    }
    fn id(self) -> u64 {
        self.0
    }
}

#[derive(Debug)]
struct Conn {
    session: Session,
    /// The session it is attached to, once opened.
    key: Option<SessionKey>,
    /// When its session wants [`Session::handle_timeout`]; `conn_timers`
    /// has an entry for it at or before this.
    deadline: Option<Instant>,
}

/// A message queued for a disconnected session, with when it was queued so
/// its expiry can be lowered by the time it waited.
#[derive(Debug)]
struct Queued {
    msg: OutboundMessage,
    at: Instant,
}

/// A session in the registry, kept in the slab itself (no box of its own):
/// nearly every session is a connected one that holds only these words.
#[derive(Debug)]
struct StoredSession {
    /// The connection it is attached to: a word, as hub ids are never 0.
    conn: Option<std::num::NonZeroU64>,
    /// Its filters and what it keeps while disconnected; `None` for a
    /// connected session without subscriptions, as an idle one is. One
    /// word: with the slab's serial the entry is 24 bytes, where a word
    /// each made it 32.
    rest: Option<Box<Rest>>,
}

/// What a session holds beyond its connection.
#[derive(Debug, Default)]
struct Rest {
    /// Its filters in the tree, for removal when the session ends.
    filters: Vec<TopicFilter>,
    /// What it keeps while disconnected; `None` while connected (the
    /// connection's session holds its delivery state). Boxed again: a
    /// connected session with subscriptions does not carry its size.
    away: Option<Box<Away>>,
}

/// A disconnected session's state.
#[derive(Debug, Default)]
struct Away {
    /// Its client id once its connection is gone (while attached, the
    /// connection's session holds it: [`registry::ClientIds`]).
    client_id: Arc<str>,
    /// When it expires (`None`: never).
    expires_at: Option<Instant>,
    /// Messages in flight and waiting for the window when it left.
    inflight: Inflight,
    offline: VecDeque<Queued>,
    will: Option<DelayedWill>,
}

impl StoredSession {
    fn new(conn: ConnId) -> Self {
        let mut s = StoredSession {
            conn: None,
            rest: None,
        };
        s.set_conn(Some(conn));
        s
    }

    fn conn(&self) -> Option<ConnId> {
        self.conn.map(|id| ConnId(id.get()))
    }

    fn set_conn(&mut self, conn: Option<ConnId>) {
        self.conn = conn.and_then(|id| std::num::NonZeroU64::new(id.0));
    }

    /// Its away state, made when it had none.
    fn away(&mut self) -> &mut Away {
        self.rest
            .get_or_insert_with(Box::default)
            .away
            .get_or_insert_with(Box::default)
    }

    fn away_ref(&self) -> Option<&Away> {
        self.rest.as_ref()?.away.as_deref()
    }

    /// Its away state, leaving it none (an empty one if it had none).
    fn take_away(&mut self) -> Away {
        let away = self.rest.as_mut().and_then(|r| r.away.take());
        self.trim();
        away.map(|b| *b).unwrap_or_default()
    }

    fn push_filter(&mut self, filter: TopicFilter) {
        self.rest
            .get_or_insert_with(Box::default)
            .filters
            .push(filter);
    }

    fn remove_filter(&mut self, filter: &TopicFilter) {
        if let Some(r) = self.rest.as_mut()
            && let Some(i) = r.filters.iter().position(|f| f == filter)
        {
            r.filters.swap_remove(i);
        }
        self.trim();
    }

    fn take_filters(&mut self) -> Vec<TopicFilter> {
        let filters = self
            .rest
            .as_mut()
            .map(|r| std::mem::take(&mut r.filters))
            .unwrap_or_default();
        self.trim();
        filters
    }

    /// Lets go of the box once it holds nothing.
    fn trim(&mut self) {
        if self
            .rest
            .as_ref()
            .is_some_and(|r| r.filters.is_empty() && r.away.is_none())
        {
            self.rest = None;
        }
    }

    fn expires_at(&self) -> Option<Instant> {
        self.away_ref().and_then(|a| a.expires_at)
    }

    fn has_will(&self) -> bool {
        self.away_ref().is_some_and(|a| a.will.is_some())
    }

    /// Its delayed will, if due at `now` (any: `None`).
    fn take_will(&mut self, due_at: Option<Instant>) -> Option<DelayedWill> {
        let away = self.rest.as_mut()?.away.as_mut()?;
        away.will.take_if(|w| due_at.is_none_or(|now| w.at <= now))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Conn(ConnId),
    Will(SessionKey),
    Expiry(SessionKey),
}

impl Timer {
    /// A word: the kind in the top two bits (ids stay below 2^62), in the
    /// enum's order. A timer entry is 16 bytes instead of 24, and nearly
    /// every connection has one.
    fn pack(self) -> u64 {
        match self {
            Timer::Conn(id) => id.0,
            Timer::Will(key) => 1 << 62 | key.id(),
            Timer::Expiry(key) => 2 << 62 | key.id(),
        }
    }

    fn unpack(word: u64) -> Self {
        let id = word & ((1 << 62) - 1);
        match word >> 62 {
            0 => Timer::Conn(ConnId(id)),
            1 => Timer::Will(SessionKey::from_id(id)),
            _ => Timer::Expiry(SessionKey::from_id(id)),
        }
    }
}

/// A connection's entry in the timer heap, in a word: the time in the
/// upper 44 bits (milliseconds since the host's origin, 557 years; later
/// deadlines are kept as that, an entry at or before the deadline as the
/// heap wants), the connection's slot in the lower 20.
struct ConnTimer;

impl ConnTimer {
    const SLOT_BITS: u32 = 20;
    /// Slots below this have their deadline in the heap.
    const SLOTS: u64 = 1 << Self::SLOT_BITS;
    const MAX_MILLIS: u64 = (1 << (64 - Self::SLOT_BITS)) - 1;

    /// Whether `id`'s deadlines go in the heap (its slot is below
    /// [`Self::SLOTS`]); past them, they go in the tree, exact.
    fn in_heap(id: ConnId) -> bool {
        (crate::slots::index_of(id.0) as u64) < Self::SLOTS
    }

    /// The entry for `id` at `at`; `None` for a slot past [`Self::SLOTS`].
    fn pack(at: Instant, id: ConnId) -> Option<u64> {
        let slot = crate::slots::index_of(id.0) as u64;
        Self::in_heap(id).then(|| at.as_millis().min(Self::MAX_MILLIS) << Self::SLOT_BITS | slot)
    }

    fn at(word: u64) -> Instant {
        Instant::from_millis(word >> Self::SLOT_BITS)
    }

    fn slot(word: u64) -> u32 {
        (word & (Self::SLOTS - 1)) as u32
    }
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
    /// `config.session` and the synchronous authorizer, shared by every
    /// session; the hub's own decisions (wills) use the same authorizer.
    shared: Arc<crate::session::Shared>,
    /// The session and its hub state in one box, so that the slab entry is
    /// two words.
    conns: Slots<ConnId, Box<Conn>>,
    /// Two words each, in the slab itself: its filters and what a
    /// disconnected session keeps are boxed apart.
    sessions: Slots<SessionKey, StoredSession>,
    by_client_id: registry::ClientIndex,
    tree: Tree,
    /// Shared subscriptions by full filter (`$share/g/f`).
    shares: BTreeMap<Box<str>, ShareGroup>,
    retained: RetainedStore,
    pending: BTreeMap<Ticket, Pending>,
    /// The connections' deadlines, kept lazily: a connection with a
    /// deadline has an entry at or before it, and one whose deadline moves
    /// later (every packet moves its keep-alive) keeps the entry it has.
    /// An entry is a word ([`ConnTimer`]) in a vector, where a tree entry
    /// was about 33 bytes, and nearly every connection has one. Entries
    /// that went stale (the deadline moved, the connection closed, its slot
    /// went to another) are checked against the connection in the slot when
    /// they come due; past twice the connections, the heap is rebuilt from
    /// them. A connection in a slot past [`ConnTimer::SLOTS`] has its exact
    /// deadline in `timers` instead.
    conn_timers: BinaryHeap<Reverse<u64>>,
    /// The stored sessions' timers and those of connections past
    /// [`ConnTimer::SLOTS`], packed ([`Timer::pack`]).
    timers: BTreeSet<(Instant, u64)>,
    actions: VecDeque<Action>,
    dirty: Vec<ConnId>,
    /// The targets of the publish being routed, kept between publishes so
    /// that routing allocates nothing per message once warmed up; bounded
    /// by the subscriptions one topic can match.
    route_targets: Vec<routing::Target>,
    next_ticket: u64,
    shut_down: bool,
}

impl Broker {
    /// A hub with no connections.
    pub fn new(config: BrokerConfig) -> Self {
        let retained = RetainedStore::new(config.max_retained_messages, config.max_retained_bytes);
        Self {
            shared: Arc::new(crate::session::Shared::new(config.session.clone(), None)),
            config,
            conns: Slots::default(),
            sessions: Slots::default(),
            by_client_id: registry::ClientIndex::default(),
            tree: Tree::default(),
            shares: BTreeMap::new(),
            retained,
            pending: BTreeMap::new(),
            conn_timers: BinaryHeap::new(),
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            dirty: Vec::new(),
            route_targets: Vec::new(),
            next_ticket: 0,
            shut_down: false,
        }
    }

    /// Installs a synchronous authorizer (the built-in ACL): publishes,
    /// subscriptions and wills are decided on the spot instead of leaving as
    /// [`Action::Authorize`]. Replacing it (an ACL reload) takes effect for
    /// every decision from now on, wills still waiting included.
    pub fn set_authorizer(&mut self, authorizer: Option<Arc<dyn Authorizer>>) {
        self.shared = Arc::new(crate::session::Shared::new(
            self.config.session.clone(),
            authorizer,
        ));
        for conn in self.conns.values_mut() {
            conn.session.set_shared(self.shared.clone());
        }
    }

    /// Reserves room for `connections` connections and their sessions in
    /// the hub's tables: address space only, until they come. A table that
    /// grows instead copies itself at each doubling, and the copies it
    /// leaves behind stay resident until the allocator gives them back.
    /// At most 2^20 are reserved: a larger limit grows past them.
    pub fn reserve_connections(&mut self, connections: usize) {
        let connections = connections.min(1 << 20);
        self.conns.reserve(connections);
        self.sessions
            .reserve(connections.min(self.config.max_sessions));
        self.conn_timers
            .reserve(connections.saturating_sub(self.conn_timers.len()));
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
        let id = self.conns.insert_with(|id| {
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
            Box::new(Conn {
                session,
                key: None,
                deadline: None,
            })
        });
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
    pub fn handle_bytes(&mut self, now: Now, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.session.handle_bytes(now, bytes);
        self.drain(now, conn);
        self.flush_dirty(now);
    }

    /// The transport of a connection ended (the will follows unless the
    /// client said goodbye). Harmless for a connection the hub closed.
    pub fn handle_closed(&mut self, now: Now, conn: ConnId, how: TransportClosed) {
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

    /// The client does not read: the host's bound on what waits to be written
    /// to it is full. The connection ends as a network failure would (the
    /// will follows), with an audit record; the host closes the socket.
    pub fn handle_unresponsive(&mut self, now: Now, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
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
        now: Now,
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
    pub fn handle_timeout(&mut self, now: Now) {
        // Take what is due first: what the handlers schedule waits for the
        // next call, so this always ends.
        let mut due: Vec<(Instant, u64)> = Vec::new();
        while let Some(&Reverse(word)) = self.conn_timers.peek() {
            if ConnTimer::at(word) > now.mono {
                break;
            }
            self.conn_timers.pop();
            // Whoever is in the slot now: an entry left by the one before
            // is at or before any deadline too.
            let Some((id, c)) = self.conns.at_index(ConnTimer::slot(word)) else {
                continue;
            };
            match c.deadline {
                // Due at its deadline, in the order it always had among
                // the other timers.
                Some(deadline) if deadline <= now.mono => {
                    due.push((deadline, Timer::Conn(id).pack()))
                }
                // Past the year 2527 an entry cannot be later than now:
                // the deadline waits in the tree, exact.
                Some(later) => match ConnTimer::pack(later, id) {
                    Some(w) if ConnTimer::at(w) > now.mono => self.conn_timers.push(Reverse(w)),
                    _ => {
                        self.timers.insert((later, Timer::Conn(id).pack()));
                    }
                },
                None => {}
            }
        }
        self.compact_conn_timers();
        let later = self
            .timers
            .split_off(&(now.mono + Duration::from_millis(1), 0));
        due.extend(std::mem::replace(&mut self.timers, later));
        due.sort_unstable();
        due.dedup();
        for (_, timer) in due {
            match Timer::unpack(timer) {
                Timer::Conn(id) => {
                    let Some(c) = self.conns.get_mut(&id) else {
                        continue;
                    };
                    // Its entry was taken: the deadline is asked anew
                    // (and given an entry) when it is drained, whatever
                    // the timers before it did to it.
                    c.deadline = None;
                    c.session.handle_timeout(now);
                    self.drain(now, id);
                }
                Timer::Will(key) => self.will_due(now, key),
                Timer::Expiry(key) => {
                    let expired = self.sessions.get(&key).is_some_and(|s| {
                        s.conn.is_none() && s.expires_at().is_some_and(|at| at <= now.mono)
                    });
                    if expired {
                        let client_id = self
                            .client_ids()
                            .get(key)
                            .map(|id| id.to_string())
                            .unwrap_or_default();
                        self.audit(AuditRecord::SessionExpired {
                            at: now.wall,
                            client_id,
                        });
                        self.end_session(now, key);
                    }
                }
            }
        }
        self.flush_dirty(now);
    }

    /// The server is shutting down: every connection gets DISCONNECT 0x8B
    /// (5.0) and is closed; wills follow [`BrokerConfig::shutdown_wills`].
    pub fn handle_shutdown(&mut self, now: Now) {
        self.shut_down = true;
        let ids: Vec<ConnId> = self.conns.keys();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                c.session.handle_shutdown(now);
                self.drain(now, id);
            }
        }
        self.wills_at_shutdown(now);
        self.flush_dirty(now);
    }

    /// The next output, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conn = self.conn_timers.peek().map(|Reverse(w)| ConnTimer::at(*w));
        let stored = self.timers.first().map(|(at, _)| *at);
        conn.into_iter().chain(stored).min()
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
    fn drain(&mut self, now: Now, id: ConnId) {
        use session::Action as S;
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            c.session.marked = false;
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
                // The hub keeps no identity: a will carries its own.
                S::IdentityChanged(_) => {}
                S::Audit(record) => self.audit(record),
            }
        }
        self.reschedule(id);
    }

    /// Drains the connections that deliveries wrote to, in the order they
    /// were written to.
    fn flush_dirty(&mut self, now: Now) {
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
        let old = std::mem::replace(&mut c.deadline, next);
        if !ConnTimer::in_heap(id) {
            // Past the heap's slots: one exact entry in the tree.
            if let Some(at) = old {
                self.timers.remove(&(at, Timer::Conn(id).pack()));
            }
            if let Some(at) = next {
                self.timers.insert((at, Timer::Conn(id).pack()));
            }
            return;
        }
        // A later deadline keeps the entry the earlier one has.
        let earlier = next.is_some_and(|at| old.is_none_or(|old| at < old));
        if let Some(at) = next
            && earlier
            && let Some(word) = ConnTimer::pack(at, id)
        {
            self.conn_timers.push(Reverse(word));
            self.compact_conn_timers();
        }
    }

    /// Rebuilds the connections' timer heap from their deadlines once stale
    /// entries outnumber live ones: the heap stays within twice the
    /// connections, whatever their deadlines do.
    fn compact_conn_timers(&mut self) {
        if self.conn_timers.len() <= 2 * self.conns.len() + 64 {
            return;
        }
        let live: Vec<Reverse<u64>> = self
            .conns
            .iter()
            .filter_map(|(id, c)| ConnTimer::pack(c.deadline?, id).map(Reverse))
            .collect();
        self.conn_timers = BinaryHeap::from(live);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_timer_unpacks_to_itself_and_keeps_the_order() {
        let timers = [
            Timer::Conn(ConnId(5 << 32 | 3)),
            Timer::Conn(ConnId(6 << 32)),
            Timer::Will(SessionKey::from_id(1 << 32 | 9)),
            Timer::Will(SessionKey::from_id((1 << 62) - 1)),
            Timer::Expiry(SessionKey::from_id(7 << 32 | 1)),
        ];
        for pair in timers.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].pack() < pair[1].pack());
        }
        for t in timers {
            assert_eq!(Timer::unpack(t.pack()), t);
        }
    }

    #[test]
    fn what_every_idle_session_holds_fits_its_allocator_classes() {
        use std::mem::size_of;
        // The connection's box: jemalloc's 112-byte class (the next is 128).
        assert!(size_of::<Conn>() <= 112, "{}", size_of::<Conn>());
        // A session lives in its slab entry, with the slot's serial: 24
        // bytes.
        assert!(size_of::<(u32, StoredSession)>() <= 24);
        assert_eq!(size_of::<Option<Instant>>(), 8);
    }

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
            assert!(hub.conn_timers.len() <= 2 * hub.conns.len() + 64);
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
        assert!(hub.conn_timers.is_empty());
    }

    #[test]
    fn a_connection_timer_packs_its_time_and_slot_in_a_word() {
        let at = Instant::from_millis(1_800_000_000_123);
        let id = ConnId(7 << 32 | 12_345);
        let w = ConnTimer::pack(at, id).unwrap();
        assert_eq!((ConnTimer::at(w), ConnTimer::slot(w)), (at, 12_345));
        // Words order by time first.
        let later = ConnTimer::pack(at + Duration::from_millis(1), ConnId(1 << 32)).unwrap();
        assert!(later > w);
        // A deadline past the year 2527 is kept as that: earlier, as the
        // heap wants.
        let far = ConnTimer::pack(Instant::from_millis(u64::MAX - 1), id).unwrap();
        assert_eq!(
            ConnTimer::at(far),
            Instant::from_millis(ConnTimer::MAX_MILLIS)
        );
        assert_eq!(ConnTimer::slot(far), 12_345);
        // A slot past the heap's has no word: its deadline goes in the tree.
        assert_eq!(
            ConnTimer::pack(at, ConnId(1 << 32 | ConnTimer::SLOTS)),
            None
        );
        assert!(ConnTimer::pack(at, ConnId(1 << 32 | (ConnTimer::SLOTS - 1))).is_some());
    }
}
