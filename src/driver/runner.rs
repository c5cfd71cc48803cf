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
use crate::broker::{Action, Broker, ConnId, Ticket};
use crate::codec::Bytes;
use crate::codec::ConnectReasonCode;
use crate::config::rules_config;
use crate::session::{AuthnOutcome, TransportClosed};
use crate::time::Timestamp;

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
}

/// The hub with its policy.
pub(crate) struct Runner {
    pub hub: Broker,
    policy: Arc<dyn Policy>,
    recorder: Option<Recorder>,
    limits: DriverConfig,
    /// Open connections and their addresses.
    conn_ip: SideTable<ConnId, Option<IpAddr>>,
    per_ip: BTreeMap<IpAddr, usize>,
    /// Authentication attempts per address in the current second.
    attempts: BTreeMap<IpAddr, (u64, u32)>,
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
    ) -> Self {
        hub.set_authorizer(policy.authorizer());
        Self {
            hub,
            policy,
            recorder,
            limits: limits.clone(),
            conn_ip: SideTable::default(),
            per_ip: BTreeMap::new(),
            attempts: BTreeMap::new(),
        }
    }

    /// Forgets a connection that ended.
    fn untrack(&mut self, conn: ConnId) {
        if let Some(Some(ip)) = self.conn_ip.remove(&conn)
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Whether one more authentication from `conn`'s address fits in this
    /// second's budget; a token storm then costs no signature checks.
    fn attempt_allowed(&mut self, conn: ConnId, now: Timestamp) -> bool {
        let Some(Some(ip)) = self.conn_ip.get(&conn).copied() else {
            return true;
        };
        let second = now.as_secs();
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

    pub fn open(
        &mut self,
        now: Timestamp,
        peer: String,
        certificate: Option<crate::auth::ClientCertificate>,
        io: &mut dyn Io,
    ) -> ConnId {
        let ip = peer.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
        let here = ip.map_or(0, |ip| self.per_ip.get(&ip).copied().unwrap_or(0));
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
        self.conn_ip.insert(conn, ip);
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_default() += 1;
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

    pub fn handle(&mut self, now: Timestamp, event: Event, io: &mut dyn Io) {
        match event {
            Event::Bytes(conn, data) => return self.bytes(now, conn, &data, io),
            Event::Closed(conn, how) => {
                self.record(|| Entry::Closed { t: now, conn, how });
                self.untrack(conn);
                self.hub.handle_closed(conn, now, how);
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

    /// Bytes from a connection, borrowed (a driver that reads into a
    /// buffer of its own need not copy them first).
    pub fn bytes(&mut self, now: Timestamp, conn: ConnId, data: &[u8], io: &mut dyn Io) {
        self.record(|| Entry::Bytes {
            t: now,
            conn,
            data: encode_bytes(data),
        });
        self.hub.handle_bytes(conn, now, data);
        self.pump(now, io);
    }

    pub fn timeout(&mut self, now: Timestamp, io: &mut dyn Io) {
        if self.hub.poll_timeout().is_some_and(|t| t <= now) {
            self.record(|| Entry::Timeout { t: now });
            self.hub.handle_timeout(now);
            self.pump(now, io);
        }
    }

    pub fn shutdown(&mut self, now: Timestamp, io: &mut dyn Io) {
        self.record(|| Entry::Shutdown { t: now });
        self.hub.handle_shutdown(now);
        self.pump(now, io);
        if let Some(r) = &mut self.recorder {
            r.flush();
        }
    }

    /// Re-reads the policy's key set and rules; the hub's authorizer follows.
    pub fn reload(&mut self, now: Timestamp) {
        self.policy.reload();
        let acl = self.policy.acl();
        self.record(|| Entry::Acl {
            t: now,
            rules: acl.as_deref().map(rules_config),
        });
        self.hub.set_authorizer(self.policy.authorizer());
    }

    /// Runs the hub's actions until there are none; answers that are ready
    /// at once go straight back in.
    fn pump(&mut self, now: Timestamp, io: &mut dyn Io) {
        loop {
            let mut unresponsive = Vec::new();
            let mut authn = Vec::new();
            let mut authz = Vec::new();
            while let Some(action) = self.hub.poll_action() {
                match action {
                    Action::Send { conn, bytes } => {
                        if !io.write(conn, bytes) {
                            unresponsive.push(conn);
                        }
                    }
                    Action::Close { conn, reason } => {
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
                        match ready(self.policy.authenticate(&credentials, now)) {
                            Ok(outcome) => authn.push((ticket, outcome)),
                            Err(later) => io.spawn_authentication(ticket, later),
                        }
                    }
                    Action::Authorize { ticket, query, .. } => {
                        match ready(self.policy.authorize(&query, now)) {
                            Ok(decision) => authz.push((ticket, decision)),
                            Err(later) => io.spawn_authorization(ticket, later),
                        }
                    }
                    Action::Audit(record) => log::info!(target: "testament::audit", "{record}"),
                }
            }
            if unresponsive.is_empty() && authn.is_empty() && authz.is_empty() {
                if let Some(r) = &mut self.recorder {
                    r.flush();
                }
                return;
            }
            for conn in unresponsive {
                self.record(|| Entry::Unresponsive { t: now, conn });
                self.hub.handle_unresponsive(conn, now);
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
