//! What both drivers do with the hub: feed it events, run its actions.

use std::collections::BTreeMap;

use crate::slots::SideTable;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::DriverConfig;
use super::policy::{Answer, Policy};
use super::record::{Entry, Recorder, encode_bytes};
use crate::auth::Decision;
use crate::broker::{Action, Broker, ConnId, Persist, Ticket};
use crate::codec::Bytes;
use crate::codec::ConnectReasonCode;
use crate::session::{AuthnOutcome, TransportClosed};
use crate::time::{Instant, Now};

/// Something that happened outside the hub.
#[derive(Debug)]
// mio alone hands bytes over borrowed ([`Runner::bytes`]): no `Bytes` event.
#[cfg_attr(not(any(feature = "smol", feature = "blocking")), allow(dead_code))]
pub(crate) enum Event {
    Bytes(ConnId, Vec<u8>),
    Closed(ConnId, TransportClosed),
    Authenticated(Ticket, Box<AuthnOutcome>),
    Authorized(Ticket, Decision),
}

/// The sockets and the executor, as a driver provides them.
pub(crate) trait Io {
    /// Queues bytes for a connection; `false` when its output bound is full.
    fn write(&mut self, conn: ConnId, bytes: Bytes) -> bool;
    /// Closes a connection once what was queued for it is written.
    fn close(&mut self, conn: ConnId);
    /// Closes a connection now, dropping what is queued (a client that does
    /// not read).
    fn abort(&mut self, conn: ConnId);
    /// Awaits an answer elsewhere and comes back with an [`Event`].
    fn spawn_authentication(&mut self, ticket: Ticket, answer: Answer<AuthnOutcome>);
    /// Same, for an authorization.
    fn spawn_authorization(&mut self, ticket: Ticket, answer: Answer<Decision>);
    /// Stops reading from a connection (`true`: backpressure) or reads it
    /// again (`false`); what it sends meanwhile waits in the transport.
    fn pause_reading(&mut self, conn: ConnId, paused: bool);
}

/// The addresses connections come from, with how many are open from each.
/// A connection names its address by a handle (4 bytes) instead of holding
/// it (up to 17): every idle connection keeps one.
#[derive(Default)]
struct Addresses {
    /// Handle `h` is entry `h - 1`: the address and its open connections.
    entries: slab::Slab<(IpAddr, usize)>,
    by_ip: BTreeMap<IpAddr, u32>,
}

impl Addresses {
    /// One more connection from `ip`; its handle (never 0).
    fn hold(&mut self, ip: IpAddr) -> u32 {
        if let Some(&h) = self.by_ip.get(&ip) {
            if let Some(e) = self.entries.get_mut(h as usize - 1) {
                e.1 += 1;
            }
            return h;
        }
        let h = u32::try_from(self.entries.insert((ip, 1)) + 1).unwrap_or(u32::MAX);
        self.by_ip.insert(ip, h);
        h
    }

    /// One connection less from the address of handle `h`.
    fn release(&mut self, h: u32) {
        let Some(i) = (h as usize).checked_sub(1) else {
            return;
        };
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        e.1 -= 1;
        if e.1 == 0 {
            let (ip, _) = self.entries.remove(i);
            self.by_ip.remove(&ip);
        }
    }

    fn ip(&self, h: u32) -> Option<IpAddr> {
        let i = (h as usize).checked_sub(1)?;
        self.entries.get(i).map(|e| e.0)
    }

    /// Connections open from `ip`.
    fn count(&self, ip: &IpAddr) -> usize {
        self.by_ip
            .get(ip)
            .and_then(|&h| self.entries.get(h as usize - 1))
            .map_or(0, |e| e.1)
    }
}

/// The hub with its policy.
pub(crate) struct Runner {
    pub hub: Broker,
    policy: Arc<dyn Policy>,
    recorder: Option<Recorder>,
    limits: DriverConfig,
    /// Open connections, each with its address in `addresses` (0: none)
    /// and the second it opened on the monotonic clock (for an operator).
    conn_ip: SideTable<ConnId, (u32, u32)>,
    addresses: Addresses,
    /// Authentication attempts per address in the current second.
    attempts: BTreeMap<IpAddr, (u64, u32)>,
    clock: Arc<dyn super::Clock>,
    /// The listeners' TLS configurations, reloaded with the policy.
    tls: Vec<super::tls::Tls>,
    /// Where the hub's Persists are committed.
    storage: Option<Arc<std::sync::Mutex<dyn super::storage::Storage>>>,
    /// With a store: the actions of this turn, carried out once the
    /// Persists among them are committed.
    turn: std::collections::VecDeque<Action>,
    /// A commit failed: nothing more is carried out, and the driver stops
    /// with this.
    storage_failure: Option<super::storage::StorageError>,
    /// The store is full: what waits for a commit that can succeed again.
    outage: Option<Outage>,
    /// Since when changes committed unflushed wait for a flush.
    unflushed_since: Option<Instant>,
    /// Between [`Runner::begin_reads`] and [`Runner::end_reads`]: bytes go
    /// to the hub, and what they cause is carried out at the end, after
    /// one commit for all of them.
    batching: bool,
    /// The `$SYS/…` topics, when they are published.
    sys: Option<SysTopics>,
    /// The WebSocket layer of each connection that came on a WebSocket
    /// listener (none for the others: nothing is looked up for them).
    websocket: BTreeMap<ConnId, Box<super::websocket::WsConn>>,
}

/// The `$SYS/…` topics (mosquitto's names where it has one), published
/// every interval from the hub's [`crate::broker::Stats`] and what the
/// driver counted.
struct SysTopics {
    interval: std::time::Duration,
    started: Instant,
    next: Instant,
    bytes_received: u64,
    bytes_sent: u64,
}

impl SysTopics {
    fn messages(&self, now: Instant, s: &crate::broker::Stats) -> [(&'static str, String); 10] {
        let uptime = now.saturating_duration_since(self.started).as_secs();
        [
            (
                "$SYS/broker/version",
                format!("testament {}", env!("CARGO_PKG_VERSION")),
            ),
            ("$SYS/broker/uptime", format!("{uptime} seconds")),
            ("$SYS/broker/clients/connected", s.connections.to_string()),
            ("$SYS/broker/clients/total", s.sessions.to_string()),
            (
                "$SYS/broker/subscriptions/count",
                s.subscriptions.to_string(),
            ),
            (
                "$SYS/broker/retained messages/count",
                s.retained_messages.to_string(),
            ),
            (
                "$SYS/broker/publish/messages/received",
                s.received.iter().sum::<u64>().to_string(),
            ),
            (
                "$SYS/broker/publish/messages/sent",
                s.delivered.iter().sum::<u64>().to_string(),
            ),
            (
                "$SYS/broker/bytes/received",
                self.bytes_received.to_string(),
            ),
            ("$SYS/broker/bytes/sent", self.bytes_sent.to_string()),
        ]
    }
}

/// A store that ran out of space: the Persists not committed yet, and the
/// actions that must not be carried out before them — those of the turns
/// that had Persists, and any later one for the same connections (their
/// order on a connection is kept). Everything else is carried out (QoS 0
/// goes on); the hub refuses QoS 1/2 publishes meanwhile.
struct Outage {
    ops: Vec<Persist>,
    held: std::collections::VecDeque<Action>,
    conns: std::collections::BTreeSet<ConnId>,
    /// When the commit was last tried, on the monotonic clock.
    tried: crate::time::Instant,
}

/// Actions an outage may hold before the broker stops after all.
const MAX_HELD: usize = 100_000;

/// How often a full store is tried again when nothing new comes.
const OUTAGE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The connection an action is for.
fn conn_of(action: &Action) -> Option<ConnId> {
    match action {
        Action::Send { conn, .. }
        | Action::Close { conn, .. }
        | Action::Authenticate { conn, .. }
        | Action::PauseReading(conn)
        | Action::ResumeReading(conn) => Some(*conn),
        Action::Authorize { conn, .. } => *conn,
        Action::Audit(_) | Action::Persist(_) => None,
    }
}

fn ready<T>(mut answer: Answer<T>) -> Result<T, Answer<T>> {
    let mut cx = Context::from_waker(Waker::noop());
    match answer.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(answer),
    }
}

impl Runner {
    pub fn new(
        mut hub: Broker,
        policy: Arc<dyn Policy>,
        recorder: Option<Recorder>,
        limits: &DriverConfig,
        tls: Vec<super::tls::Tls>,
    ) -> Self {
        hub.set_authorizer(policy.authorizer());
        hub.reserve_connections(limits.max_connections);
        let mut conn_ip = SideTable::default();
        conn_ip.reserve(limits.max_connections.min(1 << 20));
        let start = limits.clock.now().mono;
        let sys = limits.sys_interval.map(|interval| SysTopics {
            interval,
            started: start,
            next: start,
            bytes_received: 0,
            bytes_sent: 0,
        });
        Self {
            hub,
            policy,
            recorder,
            limits: limits.clone(),
            conn_ip,
            addresses: Addresses::default(),
            attempts: BTreeMap::new(),
            clock: limits.clock.clone(),
            tls,
            storage: limits.storage.clone(),
            turn: std::collections::VecDeque::new(),
            storage_failure: None,
            outage: None,
            unflushed_since: None,
            batching: false,
            sys,
            websocket: BTreeMap::new(),
        }
    }

    /// A commit that failed: the driver drops every connection, sending
    /// nothing more, and returns it.
    pub fn storage_failure(&self) -> Option<std::io::Error> {
        self.storage_failure
            .as_ref()
            .map(|e| std::io::Error::other(e.to_string()))
    }

    /// What the clocks read now, for the next input.
    pub fn now(&self) -> Now {
        self.clock.now()
    }

    /// When the hub's deadline `at` falls, for the driver's poller.
    pub fn instant_of(&self, at: Instant) -> std::time::Instant {
        self.clock.instant_of(at)
    }

    /// Forgets a connection that ended.
    fn untrack(&mut self, conn: ConnId) {
        if !self.websocket.is_empty() {
            self.websocket.remove(&conn);
        }
        if let Some((handle, _)) = self.conn_ip.remove(&conn) {
            self.addresses.release(handle);
        }
    }

    /// Whether one more authentication from `conn`'s address fits in this
    /// second's budget; a token storm then costs no signature checks.
    fn attempt_allowed(&mut self, conn: ConnId, now: Now) -> bool {
        let Some(ip) = self.conn_ip.get(&conn).and_then(|h| self.addresses.ip(h.0)) else {
            return true;
        };
        let second = now.mono.as_secs();
        if self.attempts.len() > 4096 {
            self.attempts.retain(|_, (s, _)| *s == second);
        }
        let entry = self.attempts.entry(ip).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        entry.1 += 1;
        entry.1 <= self.limits.max_authentications_per_address_per_sec
    }

    fn record(&mut self, entry: impl FnOnce() -> Entry) {
        if let Some(r) = &mut self.recorder {
            r.write(&entry());
        }
    }

    /// A connection was accepted (for TLS, its handshake is done); one from
    /// a WebSocket listener (`websocket`) speaks MQTT inside WebSocket
    /// frames once its upgrade is done.
    pub fn open(
        &mut self,
        now: Now,
        peer: String,
        certificate: Option<crate::auth::ClientCertificate>,
        websocket: bool,
        io: &mut dyn Io,
    ) -> ConnId {
        let ip = peer.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
        let here = ip.map_or(0, |ip| self.addresses.count(&ip));
        let refused = if self.conn_ip.len() >= self.limits.max_connections {
            Some("too many connections")
        } else if here >= self.limits.max_connections_per_address {
            Some("too many connections from this address")
        } else {
            None
        };
        let conn = match refused {
            Some(detail) => self.hub.open_refusing(
                now,
                Some(peer.clone()),
                ConnectReasonCode::QuotaExceeded,
                detail,
            ),
            None => self
                .hub
                .open_tls(now, Some(peer.clone()), certificate.clone()),
        };
        let handle = ip.map_or(0, |ip| self.addresses.hold(ip));
        let opened = u32::try_from(now.mono.as_secs()).unwrap_or(u32::MAX);
        self.conn_ip.insert(conn, (handle, opened));
        if websocket {
            let max = self.hub.config().session.max_packet_size as usize;
            let ws = super::websocket::WsConn::new(self.limits.websocket_path.clone(), max);
            self.websocket.insert(conn, Box::new(ws));
        }
        self.record(|| Entry::Open {
            t: now,
            conn,
            peer,
            certificate,
            refused: refused.map(str::to_owned),
        });
        self.pump(now, io);
        conn
    }

    pub fn handle(&mut self, now: Now, event: Event, io: &mut dyn Io) {
        match event {
            Event::Bytes(conn, data) => return self.bytes(now, conn, &data, io),
            Event::Closed(conn, how) => {
                self.record(|| Entry::Closed { t: now, conn, how });
                self.untrack(conn);
                self.hub.handle_closed(now, conn, how);
                // The hub emits no Close for a transport that ended on its
                // own: let go of the socket and the writer here.
                io.close(conn);
            }
            Event::Authenticated(ticket, outcome) => {
                self.record(|| Entry::Authenticated {
                    t: now,
                    ticket,
                    outcome: outcome.clone(),
                });
                // A ticket whose connection closed meanwhile is void.
                let _ = self.hub.handle_authentication(now, ticket, *outcome);
            }
            Event::Authorized(ticket, decision) => {
                self.record(|| Entry::Authorized {
                    t: now,
                    ticket,
                    decision: decision.clone(),
                });
                let _ = self.hub.handle_authorization(now, ticket, decision);
            }
        }
        self.pump(now, io);
    }

    /// Publishes the `$SYS/…` topics and sets the next time.
    fn publish_sys(&mut self, now: Now) {
        let Some(sys) = &mut self.sys else {
            return;
        };
        sys.next = now.mono + sys.interval;
        let messages = sys.messages(now.mono, &self.hub.stats());
        for (topic, payload) in messages {
            self.record(|| Entry::System {
                t: now,
                topic: topic.to_owned(),
                payload: payload.clone(),
            });
            if let Ok(topic) = crate::codec::TopicName::try_from(topic) {
                self.hub.publish_system(now, topic, payload.into());
            }
        }
    }

    /// Bytes from a connection, borrowed (a driver that reads into a
    /// buffer of its own need not copy them first).
    pub fn bytes(&mut self, now: Now, conn: ConnId, data: &[u8], io: &mut dyn Io) {
        if !self.websocket.is_empty()
            && let Some(ws) = self.websocket.get_mut(&conn)
        {
            let got = ws.receive(data);
            if !got.reply.is_empty() {
                io.write(conn, got.reply.into());
            }
            if !got.mqtt.is_empty() {
                self.mqtt_bytes(now, conn, &got.mqtt, io);
            }
            if let Some(end) = got.end {
                let how = match end {
                    Ok(why) => {
                        log::debug!("conn={}: {why}", conn.0);
                        TransportClosed::PeerClosed
                    }
                    Err(why) => {
                        log::info!("conn={}: {why}", conn.0);
                        TransportClosed::Error
                    }
                };
                self.record(|| Entry::Closed { t: now, conn, how });
                self.untrack(conn);
                self.hub.handle_closed(now, conn, how);
                io.close(conn);
                if !self.batching {
                    self.pump(now, io);
                }
            }
            return;
        }
        self.mqtt_bytes(now, conn, data, io);
    }

    /// MQTT bytes from a connection, to the hub.
    fn mqtt_bytes(&mut self, now: Now, conn: ConnId, data: &[u8], io: &mut dyn Io) {
        self.record(|| Entry::Bytes {
            t: now,
            conn,
            data: encode_bytes(data),
        });
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.limits.metrics {
            m.read(data.len());
        }
        if let Some(sys) = &mut self.sys {
            sys.bytes_received += data.len() as u64;
        }
        self.hub.handle_bytes(now, conn, data);
        if !self.batching {
            self.pump(now, io);
        }
    }

    /// The driver reads every ready socket of this turn of its loop; what
    /// the bytes cause waits for [`Runner::end_reads`]: a durable hub's
    /// changes are committed once for the whole turn (one fsync for the
    /// publisher's messages and the subscriber's acknowledgements that came
    /// together), not once per socket.
    pub fn begin_reads(&mut self) {
        self.batching = true;
    }

    /// Carries out what this turn's reads caused.
    pub fn end_reads(&mut self, now: Now, io: &mut dyn Io) {
        self.batching = false;
        self.pump(now, io);
    }

    /// The next deadline: the hub's, or the store's (a flush that is due,
    /// a full store to try again).
    pub fn poll_timeout(&self) -> Option<Instant> {
        // While the store is full, its retry flushes.
        let flush = self
            .unflushed_since
            .filter(|_| self.outage.is_none())
            .map(|t| t + self.limits.flush_interval);
        let retry = self.outage.as_ref().map(|o| o.tried + OUTAGE_RETRY);
        let sys = self.sys.as_ref().map(|s| s.next);
        [self.hub.poll_timeout(), flush, retry, sys]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn timeout(&mut self, now: Now, io: &mut dyn Io) {
        if self.sys.as_ref().is_some_and(|s| now.mono >= s.next) {
            self.publish_sys(now);
            self.pump(now, io);
        }
        if self
            .outage
            .as_ref()
            .is_some_and(|o| now.mono >= o.tried + OUTAGE_RETRY)
        {
            // Space may be back with no traffic to notice it.
            self.commit_turn(Vec::new(), Vec::new());
            self.pump(now, io);
        }
        if self.outage.is_none()
            && self
                .unflushed_since
                .is_some_and(|t| now.mono >= t + self.limits.flush_interval)
        {
            self.flush();
        }
        if self.hub.poll_timeout().is_some_and(|t| t <= now.mono) {
            self.record(|| Entry::Timeout { t: now });
            self.hub.handle_timeout(now);
            self.pump(now, io);
        }
    }

    /// [`super::Control::Shutdown`]: every connection is told and closed,
    /// wills follow the hub's setting. The driver then lets what is queued
    /// leave and returns.
    pub fn shutdown(&mut self, now: Now, io: &mut dyn Io) {
        log::info!("shutting down");
        self.record(|| Entry::Shutdown { t: now });
        self.hub.handle_shutdown(now);
        self.pump(now, io);
        if self.unflushed_since.is_some() && self.outage.is_none() {
            self.flush();
        }
        if let Some(r) = &mut self.recorder {
            r.flush();
        }
    }

    /// [`super::Control::Reload`]: re-reads the policy's key set and rules
    /// (the hub's authorizer follows) and the listeners' certificates (one
    /// that does not load leaves the old one in force).
    pub fn reload(&mut self, now: Now, io: &mut dyn Io) {
        log::info!("reloading the key set, the ACL and the TLS certificates");
        for tls in &self.tls {
            if let Err(e) = tls.reload() {
                log::error!("TLS reload refused, the old certificate stays: {e}");
            }
        }
        self.policy.reload();
        let acl = self.policy.acl();
        self.record(|| Entry::Acl {
            t: now,
            acl: acl.as_deref().cloned(),
        });
        self.hub.set_authorizer(self.policy.authorizer());
        // Live on what was granted before too: revoked subscriptions go,
        // carve-outs follow the new rules.
        self.hub.reauthorize_subscriptions(now);
        self.pump(now, io);
    }

    /// [`super::Control::Admin`]: an operator's request, answered on its
    /// channel (an answer nobody waits for any more is dropped). Each is
    /// audited; a disconnection is recorded.
    pub fn admin(&mut self, now: Now, call: super::admin::Call, io: &mut dyn Io) {
        use super::admin::{MAX_PAGE, Reply, Request};
        let reply = match call.request {
            Request::Clients { after, limit } => {
                let (page, total) =
                    self.hub
                        .sessions_info(now, after.as_deref(), limit.min(MAX_PAGE));
                self.audit_admin(
                    now,
                    "clients",
                    &call.by,
                    None,
                    format!("{} of {total}", page.len()),
                );
                Reply::Clients {
                    clients: page.into_iter().map(|s| self.client_view(now, s)).collect(),
                    total,
                }
            }
            Request::Client(id) => {
                let found = self.hub.session_info_of(now, &id);
                let detail = if found.is_some() {
                    "found"
                } else {
                    "no session"
                };
                self.audit_admin(now, "client", &call.by, Some(id), detail.to_owned());
                Reply::Client(found.map(|s| self.client_view(now, s)))
            }
            Request::Disconnect {
                client_id,
                reason,
                will,
            } => {
                self.record(|| Entry::Kick {
                    t: now,
                    client_id: client_id.clone(),
                    reason: reason.code(),
                    will,
                    by: call.by.clone(),
                });
                let done = self.hub.kick(now, &client_id, reason, will, &call.by);
                self.pump(now, io);
                Reply::Disconnected(done)
            }
        };
        let _ = call.reply.try_send(reply);
    }

    fn audit_admin(
        &self,
        now: Now,
        action: &'static str,
        by: &str,
        client_id: Option<String>,
        detail: String,
    ) {
        let record = crate::auth::AuditRecord::Admin {
            at: now.wall,
            action,
            by: by.to_owned(),
            client_id,
            detail,
        };
        super::log_audit(&record, log::Level::Info);
    }

    /// A session with its client's address and when it connected.
    fn client_view(&self, now: Now, session: crate::broker::SessionInfo) -> super::admin::Client {
        let seen = session.conn.and_then(|c| self.conn_ip.get(&c));
        let address = seen.and_then(|(h, _)| self.addresses.ip(*h));
        let connected_since = seen.map(|(_, opened)| {
            let age = now.mono.as_secs().saturating_sub(u64::from(*opened));
            now.wall - std::time::Duration::from_secs(age)
        });
        super::admin::Client {
            session,
            address,
            connected_since,
        }
    }

    /// The next action to carry out: straight from the hub, or — with a
    /// store — from this turn's, whose Persists are committed first, all in
    /// one transaction (group commit): nothing that follows a Persist is
    /// carried out before it is durable.
    fn next_action(&mut self) -> Option<Action> {
        if self.storage.is_none() {
            return self.hub.poll_action();
        }
        if self.storage_failure.is_some() {
            return None;
        }
        if self.turn.is_empty() {
            let mut ops = Vec::new();
            let mut actions = Vec::new();
            while let Some(action) = self.hub.poll_action() {
                match action {
                    Action::Persist(op) => ops.push(op),
                    other => actions.push(other),
                }
            }
            self.commit_turn(ops, actions);
        }
        self.turn.pop_front()
    }

    /// Commits a turn's Persists and queues what may be carried out.
    fn commit_turn(&mut self, ops: Vec<Persist>, actions: Vec<Action>) {
        use super::storage::StorageError;
        let now = self.clock.now().mono;
        if let Some(mut outage) = self.outage.take() {
            // Tried again with anything new to keep, or every second.
            let retry = !ops.is_empty() || now >= outage.tried + OUTAGE_RETRY;
            let had_ops = !ops.is_empty();
            outage.ops.extend(ops);
            for action in actions {
                match conn_of(&action) {
                    Some(c) if had_ops || outage.conns.contains(&c) => {
                        outage.conns.insert(c);
                        outage.held.push_back(action);
                    }
                    None if had_ops => outage.held.push_back(action),
                    _ => self.turn.push_back(action),
                }
            }
            if !retry {
                self.outage = Some(outage);
                return;
            }
            outage.tried = now;
            match self.commit(&outage.ops, false) {
                Ok(()) => {
                    self.unflushed_since = None;
                    log::info!(
                        "storage: space is back; {} held actions go out",
                        outage.held.len()
                    );
                    // Held actions first: they came before.
                    let later = std::mem::replace(&mut self.turn, outage.held);
                    self.turn.extend(later);
                    self.storage_available(true);
                }
                Err(StorageError::Full { .. })
                    if outage.held.len() + outage.ops.len() < MAX_HELD =>
                {
                    self.outage = Some(outage);
                }
                Err(e) => self.fail_stop(e),
            }
            return;
        }
        if ops.is_empty() {
            self.turn.extend(actions);
            return;
        }
        // A turn whose changes may wait goes out without waiting for the
        // disk; its changes are flushed with the next turn that cannot, or
        // within the flush interval.
        let unflushed = !self.limits.flush_every_turn || ops.iter().all(Persist::may_wait);
        match self.commit(&ops, unflushed) {
            Ok(()) => {
                if unflushed {
                    self.unflushed_since.get_or_insert(now);
                } else {
                    self.unflushed_since = None;
                }
                self.turn.extend(actions);
            }
            Err(e @ StorageError::Full { .. }) => {
                // Nothing of this turn goes out; QoS 0 goes on, QoS 1/2 is
                // refused until a commit succeeds again.
                log::error!("{e}: refusing QoS 1/2 publishes until space returns");
                let conns = actions.iter().filter_map(conn_of).collect();
                self.outage = Some(Outage {
                    ops,
                    held: actions.into(),
                    conns,
                    tried: now,
                });
                self.storage_available(false);
            }
            Err(e) => self.fail_stop(e),
        }
    }

    fn commit(
        &mut self,
        ops: &[Persist],
        unflushed: bool,
    ) -> Result<(), super::storage::StorageError> {
        let Some(storage) = &self.storage else {
            return Ok(());
        };
        let mut storage = storage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let done = if unflushed {
            storage.commit_unflushed(ops)
        } else {
            storage.commit(ops)
        };
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.limits.metrics {
            m.committed(started.elapsed());
        }
        done
    }

    /// The store can take commits again, or cannot: an input of the hub,
    /// recorded like any other.
    fn storage_available(&mut self, available: bool) {
        let now = self.clock.now();
        self.record(|| Entry::Storage { t: now, available });
        self.hub.set_storage_available(available);
    }

    /// Makes what was committed unflushed durable. A full store is an
    /// outage like a commit's: QoS 1/2 is refused until a flush succeeds.
    fn flush(&mut self) {
        use super::storage::StorageError;
        let Some(storage) = &self.storage else {
            return;
        };
        let flushed = storage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flush();
        match flushed {
            Ok(()) => self.unflushed_since = None,
            Err(e @ StorageError::Full { .. }) => {
                log::error!("{e}: refusing QoS 1/2 publishes until space returns");
                self.outage = Some(Outage {
                    ops: Vec::new(),
                    held: std::collections::VecDeque::new(),
                    conns: std::collections::BTreeSet::new(),
                    tried: self.clock.now().mono,
                });
                self.storage_available(false);
            }
            Err(e) => self.fail_stop(e),
        }
    }

    /// Fail-stop: what follows an uncommitted Persist (the PUBACK of a
    /// retained publish…) is never carried out. Clients resend what was not
    /// acknowledged, and a restart restores the last committed state.
    fn fail_stop(&mut self, e: super::storage::StorageError) {
        log::error!("{e}: stopping, nothing of this turn is sent");
        self.turn.clear();
        self.outage = None;
        self.storage_failure = Some(e);
    }

    /// Runs the hub's actions until there are none; answers that are ready
    /// at once go straight back in.
    fn pump(&mut self, now: Now, io: &mut dyn Io) {
        // What the input just handled counted is read before its answers
        // leave: a client that has its PUBACK finds its message counted.
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.limits.metrics {
            m.set(&self.hub.stats());
        }
        loop {
            let mut unresponsive = Vec::new();
            let mut authn = Vec::new();
            let mut authz = Vec::new();
            while let Some(action) = self.next_action() {
                #[cfg(feature = "metrics")]
                if let Some(m) = &self.limits.metrics {
                    m.observe(&action);
                }
                match action {
                    Action::Send { conn, mut bytes } => {
                        if let Some(sys) = &mut self.sys {
                            sys.bytes_sent += bytes.len() as u64;
                        }
                        if !self.websocket.is_empty()
                            && let Some(ws) = self.websocket.get_mut(&conn)
                        {
                            bytes = ws.frame(&bytes).into();
                        }
                        if !io.write(conn, bytes) {
                            unresponsive.push(conn);
                        }
                    }
                    Action::Close { conn, reason } => {
                        if !self.websocket.is_empty()
                            && let Some(ws) = self.websocket.get_mut(&conn)
                        {
                            let close = ws.close();
                            if !close.is_empty() {
                                io.write(conn, close.into());
                            }
                        }
                        self.untrack(conn);
                        log::debug!(
                            "close conn={} code={:?} detail={:?}",
                            conn.0,
                            reason.code,
                            reason.detail
                        );
                        io.close(conn);
                    }
                    Action::Authenticate {
                        ticket,
                        conn,
                        credentials,
                        ..
                    } => {
                        if !self.attempt_allowed(conn, now) {
                            authn.push((
                                ticket,
                                AuthnOutcome::Failure(crate::auth::AuthnError::RateLimited.into()),
                            ));
                            continue;
                        }
                        match ready(self.policy.authenticate(&credentials, now.wall)) {
                            Ok(outcome) => authn.push((ticket, outcome)),
                            Err(later) => io.spawn_authentication(ticket, later),
                        }
                    }
                    Action::Authorize { ticket, query, .. } => {
                        match ready(self.policy.authorize(&query, now.wall)) {
                            Ok(decision) => authz.push((ticket, decision)),
                            Err(later) => io.spawn_authorization(ticket, later),
                        }
                    }
                    Action::Audit(record) => super::log_audit(&record, log::Level::Info),
                    Action::PauseReading(conn) => io.pause_reading(conn, true),
                    Action::ResumeReading(conn) => io.pause_reading(conn, false),
                    // Committed in `next_action`, or not kept without a store.
                    Action::Persist(_) => {}
                }
            }
            if unresponsive.is_empty() && authn.is_empty() && authz.is_empty() {
                if let Some(r) = &mut self.recorder {
                    r.flush();
                }
                #[cfg(feature = "metrics")]
                if let Some(m) = &self.limits.metrics {
                    m.set(&self.hub.stats());
                }
                return;
            }
            for conn in unresponsive {
                self.record(|| Entry::Unresponsive { t: now, conn });
                self.hub.handle_unresponsive(now, conn);
                self.untrack(conn);
                io.abort(conn);
            }
            for (ticket, outcome) in authn {
                self.record(|| Entry::Authenticated {
                    t: now,
                    ticket,
                    outcome: Box::new(outcome.clone()),
                });
                let _ = self.hub.handle_authentication(now, ticket, outcome);
            }
            for (ticket, decision) in authz {
                self.record(|| Entry::Authorized {
                    t: now,
                    ticket,
                    decision: decision.clone(),
                });
                let _ = self.hub.handle_authorization(now, ticket, decision);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_counted_while_a_connection_holds_it() {
        let mut a = Addresses::default();
        let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "::2".parse().unwrap());
        let h = a.hold(one);
        assert_ne!(h, 0);
        assert_eq!(a.hold(one), h);
        let k = a.hold(two);
        assert_ne!(k, h);
        assert_eq!((a.count(&one), a.count(&two)), (2, 1));
        assert_eq!((a.ip(h), a.ip(k)), (Some(one), Some(two)));
        a.release(h);
        assert_eq!(a.count(&one), 1);
        a.release(h);
        assert_eq!(a.count(&one), 0);
        assert_eq!(a.ip(h), None);
        a.release(0);
        assert_eq!(a.count(&two), 1);
        assert_eq!(a.by_ip.len(), 1);
    }
}
