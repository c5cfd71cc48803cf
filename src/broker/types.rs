//! What the hub takes in and gives out.

use std::time::Duration;

use crate::auth::{AuditRecord, AuthzQuery, Credentials};
use crate::codec::Bytes;
use crate::session::{CloseReason, SessionConfig};

/// A network connection, as the hub names it. Never 0; ids grow in the
/// order connections open (until 2^30 have). The low 32 bits are an index the hub reuses
/// once the connection is gone (a host may keep per-connection data in a
/// vector by it), the high bits a serial number that tells the id from
/// those its index had before.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ConnId(pub u64);

/// Pairs a request the hub emitted with its answer (a session's own
/// requests carry a [`crate::session::Ticket`], which the hub translates).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Ticket(pub u64);

/// Whether a will triggered after its credential expired may still be sent.
/// Judged at the trigger time, so a will delay never changes the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WillAfterExpiry {
    /// The identity stands: the will is authorized as usual (default).
    Identity,
    /// A will triggered after the credential's `exp` is denied.
    Strict,
    /// Allowed when triggered at most this long after `exp`, denied later.
    Grace(Duration),
}

/// What happens to wills when the hub shuts down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ShutdownWills {
    /// A durable hub keeps every will triggered by the shutdown or still
    /// waiting for its delay, with what was left of its delay: after the
    /// restart it waits that long for its client to come back, then is
    /// sent. The sessions' expiry pauses likewise (what was left of each
    /// interval counts from the restart). No storm of false "down" at a
    /// planned restart, no "down" lost for a client that does not come
    /// back. A hub in memory, where nothing survives, sends them now
    /// ([`ShutdownWills::SendNow`]). The default.
    Resume,
    /// Every will triggered by the shutdown or still waiting for its delay is
    /// authorized and published now: the clients are in fact going offline.
    SendNow,
    /// They are cancelled (audited): for a broker that restarts quickly, or
    /// a cluster where the clients reconnect elsewhere.
    Drop,
}

/// What a full offline queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OfflineOverflow {
    /// The new message is dropped; the queue keeps the oldest (default).
    DropNewest,
    /// The oldest queued message is dropped to make room.
    DropOldest,
}

/// What the hub holds now and has done since it started, for a host's
/// metrics: gauges read at the call, counters that only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections open (authenticated or not yet).
    pub connections: usize,
    /// Sessions held, connected or stored.
    pub sessions: usize,
    /// Subscriptions held, all sessions together.
    pub subscriptions: usize,
    /// Retained messages held.
    pub retained_messages: usize,
    /// Their bytes (topic and payload).
    pub retained_bytes: usize,
    /// PUBLISHes from clients routed, by QoS.
    pub received: [u64; 3],
    /// Messages handed to connected clients (sent, or waiting for their
    /// window), by QoS.
    pub delivered: [u64; 3],
    /// QoS 1/2 messages queued for sessions whose clients are away.
    pub queued: u64,
}

/// What happens to a connection when an ACL change or a re-authentication
/// removes one of its session's subscriptions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OnRevoke {
    /// The subscription is removed and the client stays connected (an
    /// audit record says so; the client is not told). The default.
    #[default]
    Unsubscribe,
    /// The subscription is removed and the connection closed: a 5.0 client
    /// gets DISCONNECT 0x87 Not authorized; a 3.1.1 client, which cannot be
    /// given a reason, sees the connection close. Either way its will
    /// follows, as for any close the client did not ask for.
    Disconnect,
}

/// Limits and policies of the hub. Every table it keeps has a bound here or
/// in [`SessionConfig`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BrokerConfig {
    /// Per-connection limits and capabilities.
    pub session: SessionConfig,
    /// Sessions held, connected or stored; a new client id beyond it gets
    /// CONNACK 0x97 Quota exceeded (3.1.1: 0x03 Server unavailable).
    pub max_sessions: usize,
    /// QoS 1/2 messages queued for one disconnected persistent session.
    pub max_offline_messages: usize,
    /// What a full offline queue does.
    pub offline_overflow: OfflineOverflow,
    /// Retained messages held.
    pub max_retained_messages: usize,
    /// Bytes (topic + payload) of retained messages held.
    pub max_retained_bytes: usize,
    /// The will policy after credential expiry.
    pub will_after_expiry: WillAfterExpiry,
    /// Wills at shutdown.
    pub shutdown_wills: ShutdownWills,
    /// Emit [`Action::Persist`] for every change of what must survive a
    /// restart (retained messages today), for a host with a store.
    #[serde(default)]
    pub durable: bool,
    /// A connection whose subscription is revoked.
    #[serde(default)]
    pub on_revoke: OnRevoke,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            max_sessions: 100_000,
            max_offline_messages: 1000,
            offline_overflow: OfflineOverflow::DropNewest,
            max_retained_messages: 100_000,
            max_retained_bytes: 64 * 1024 * 1024,
            will_after_expiry: WillAfterExpiry::Identity,
            shutdown_wills: ShutdownWills::Resume,
            durable: false,
            on_revoke: OnRevoke::Unsubscribe,
        }
    }
}

/// One output of the [`Broker`](super::Broker) hub, in order — what the
/// host runs: bytes to write, closes, requests to answer, audit records.
/// (A single connection's outputs, which the hub consumes, are
/// [`crate::session::Action`].)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the connection.
    Send {
        /// Where.
        conn: ConnId,
        /// What.
        bytes: Bytes,
    },
    /// Close the connection after writing what was sent to it before.
    Close {
        /// Which.
        conn: ConnId,
        /// Why, for the log.
        reason: CloseReason,
    },
    /// Authenticate and answer with [`super::Broker::handle_authentication`].
    Authenticate {
        /// Pairs the answer.
        ticket: Ticket,
        /// The connection asking.
        conn: ConnId,
        /// What the client presented.
        credentials: Box<Credentials>,
        /// Whether this is a re-authentication of a connected client.
        reauthentication: bool,
    },
    /// Decide and answer with [`super::Broker::handle_authorization`].
    Authorize {
        /// Pairs the answer.
        ticket: Ticket,
        /// The connection asking; `None` for a will, which the hub sends on
        /// behalf of a client that is gone.
        conn: Option<ConnId>,
        /// The question.
        query: AuthzQuery,
    },
    /// A record for the audit log.
    Audit(AuditRecord),
    /// Durable state changed ([`BrokerConfig::durable`]): make it durable
    /// before carrying out any action after this one. Actions before it
    /// may go first; a host commits what one turn of its loop collected in
    /// one transaction.
    Persist(super::Persist),
    /// Stop reading from this connection (backpressure: a subscriber of
    /// what it publishes cannot keep up); what it sent stays in the
    /// transport until [`Action::ResumeReading`].
    PauseReading(ConnId),
    /// Read from this connection again.
    ResumeReading(ConnId),
}

/// A host mistake: the hub cannot take this input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// No request with this ticket is waiting for this kind of answer (it
    /// was answered, or its connection closed).
    #[error("unknown ticket {0:?}")]
    UnknownTicket(Ticket),
}
