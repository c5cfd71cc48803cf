//! One connection's protocol state: a sans-IO state machine.
//!
//! # Run loop
//!
//! Inputs are `handle_*(now, …)` calls: bytes received, the transport
//! closed, answers to the session's requests (authentication,
//! authorization, session open), timeouts, and messages to deliver. After
//! every input the host drains [`Session::poll_action`] until `None`, in
//! order — a CONNACK or DISCONNECT comes before the close, a will is handed
//! up before the close — and asks [`Session::poll_timeout`] for the next
//! deadline. Calling [`Session::handle_timeout`] early is harmless; after it
//! the next deadline is later than `now`.
//!
//! The session never reads a clock and never blocks. Peer faults become
//! reason codes and closes; `Err` only reports a host mistake (an answer to
//! a ticket the session does not know).
//!
//! # Boundary with the hub
//!
//! The session decides nothing about other clients. It hands up what the
//! hub needs — [`Action::Open`] (take over / resume, answer Session
//! Present), authorized publishes and subscriptions, the will with the
//! identity snapshot it must be authorized against and its trigger — and
//! takes down messages to deliver, takeover and shutdown.

mod connect;
mod publish;
mod subscribe;
mod types;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{
    AuditRecord, Credentials, Decision, Identity, Operation, WillOutcome, WillTrigger,
};
use crate::codec::{
    Auth, AuthReasonCode, BytesMut, ConnAck, Connect, ConnectReasonCode, DecodeError, Decoder,
    Disconnect, DisconnectReasonCode, Encode, LastWill, MqttString, Packet, PacketId, PacketType,
    ProtocolVersion, PubAck, PubAckReasonCode, PubComp, PubRec, PubRel, PubRelReasonCode, Publish,
    QoS, SubAck, SubAckReasonCode, Subscribe, TopicName, UnsubAck, UnsubAckReasonCode, Unsubscribe,
};
use crate::time::{Instant, Now};

pub use types::{
    Action, ArmedWill, AuthnOutcome, AuthzQuery, CloseReason, CredentialExpiry, Delivery,
    DeniedPublishV311, DueWill, GrantedSubscription, InboundMessage, Inflight, InflightMessage,
    OutboundMessage, Progress, SessionConfig, Ticket, TransportClosed,
};

/// A policy the session may consult synchronously — the rustls model: a
/// built-in verifier answers on the spot, anything else is a pause point.
/// It must be a pure function of the request, like [`crate::auth::Acl`].
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    /// The decision, or `None` to let the host answer asynchronously.
    fn authorize(&self, request: &crate::auth::AuthzRequest<'_>) -> Option<Decision>;
}

impl Authorizer for crate::auth::Acl {
    fn authorize(&self, request: &crate::auth::AuthzRequest<'_>) -> Option<Decision> {
        Some(crate::auth::Acl::authorize(self, request))
    }
}

/// A host mistake: the session cannot take this input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No request with this ticket is waiting for an answer.
    #[error("unknown ticket {0:?}")]
    UnknownTicket(Ticket),
}

/// Where the connection stands. A state that waits for the host waits on
/// the last ticket the session handed out: none is handed out while it
/// waits (before the CONNACK only AUTH is read, and it asks again and waits
/// on the new ticket), so the state holds no ticket and is one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingConnect,
    /// Waiting for the host's answer (`true`) or for the client's next AUTH.
    Authenticating(bool),
    CheckingWill,
    Opening,
    Connected,
    Closed,
}

/// Where a re-authentication stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReauthStep {
    /// The host has the credentials.
    WithHost(Ticket),
    /// The client has been sent AUTH 0x18 and answers next.
    WithClient,
}

/// A request waiting for its authorization, kept in arrival order so that
/// decisions take effect in the order the client sent its packets.
#[derive(Debug)]
enum Pending {
    Publish {
        ticket: Ticket,
        /// Who asked; the audit record's request is rebuilt from it and the
        /// publish, which saves keeping a copy of the one sent out.
        identity: Arc<Identity>,
        /// Its topic resolved (never `None`).
        publish: Publish,
        decision: Option<Decision>,
    },
    Subscribe {
        packet: Subscribe,
        /// Per filter: an answer already known (not supported…) or a ticket.
        slots: Vec<Slot>,
    },
}

#[derive(Debug)]
enum Slot {
    Refused(SubAckReasonCode),
    Waiting(Ticket, AuthzQuery),
    Decided(AuthzQuery, Decision),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// QoS 1 sent, waiting for PUBACK; QoS 2 sent, waiting for PUBREC.
    Published,
    /// QoS 2: PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// What is known of the client once its CONNECT is read.
#[derive(Debug)]
struct Conn {
    // Its client id is its credentials' until it authenticates, its
    // identity's after ([`Conn::client_id`]): not a copy here, two words
    // more in every connection (the hub's budget: `broker/store.rs`).
    assigned_client_id: bool,
    clean_start: bool,
    keep_alive: u16,
    /// `keep_alive` is the server's, not the client's: the CONNACK says so
    /// (Server Keep Alive). A flag, not the value again: a byte, not two,
    /// in every connection.
    keep_alive_overridden: bool,
    session_expiry: u32,
    /// Boxed: most clients register none.
    will: Option<Box<LastWill>>,
    identity: Option<Arc<Identity>>,
    client_receive_max: u16,
    client_max_packet: Option<std::num::NonZeroU32>,
    /// The tables that are empty while the connection idles: allocated on
    /// first use, let go when empty again.
    per_message: Option<Box<PerMessage>>,
    /// Highest alias the client accepts (0 when outbound aliases are off).
    client_alias_max: u16,
    request_problem_info: bool,
    /// When the last packet came (before the CONNACK: when the connection
    /// opened, so that an AUTH does not push its CONNECT timeout back).
    last_packet: Instant,
    /// When the credential's `exp` (plus leeway) falls on the monotonic
    /// clock, computed when the credential was judged: a later step of the
    /// wall clock does not move it.
    credential_deadline: Option<Instant>,
    /// Inbound QoS 1/2 publishes not yet completed (Receive Maximum).
    inbound_inflight: u16,
    next_packet_id: u16,
    /// The filters the session holds (bounded by `max_subscriptions`).
    subscriptions: types::Filters,
}

/// The credentials of a client that authenticates with a method, and its
/// re-authentication under way.
#[derive(Debug)]
struct Kept {
    credentials: Credentials,
    reauth: Option<ReauthStep>,
    /// A will re-check after re-authentication waiting for its decision.
    will_recheck: Option<(Ticket, AuthzQuery)>,
}

/// A connection's per-message tables.
#[derive(Debug, Default)]
struct PerMessage {
    /// Topics given an alias towards the client (alias = index + 1).
    aliases_out: Vec<TopicName>,
    /// The alias given anew next once all are taken (index; round robin:
    /// the oldest assignment goes first).
    alias_next: u16,
    pending: VecDeque<Pending>,
    /// Inbound QoS 2 packet ids acknowledged with PUBREC, waiting for PUBREL.
    awaiting_pubrel: Vec<PacketId>,
    aliases_in: Vec<Option<TopicName>>,
    /// QoS 1/2 messages in flight to the client, kept for the hub to
    /// redeliver on a later connection ([`Session::take_inflight`]).
    /// A deque: acknowledgements come oldest first, and taking the front
    /// of a vector moved every message behind it.
    outbound: VecDeque<(PacketId, OutState, OutboundMessage)>,
    outbound_queue: VecDeque<OutboundMessage>,
    /// Since when the client, its queue past its bound, has taken no
    /// message (backpressure): past [`SessionConfig::congestion_timeout`]
    /// it is disconnected.
    stalled_since: Option<Instant>,
    /// The credentials, kept while authenticating, and after only for a
    /// client with an Authentication Method (its re-authentications reuse
    /// them), with where its re-authentication stands. Here, not in the
    /// connection: most clients have none once connected, and the
    /// connection saves the word.
    kept: Option<Box<Kept>>,
}

/// What an idle connection's [`PerMessage`] reads as.
static NO_PER_MESSAGE: PerMessage = PerMessage {
    aliases_out: Vec::new(),
    alias_next: 0,
    pending: VecDeque::new(),
    awaiting_pubrel: Vec::new(),
    aliases_in: Vec::new(),
    outbound: VecDeque::new(),
    outbound_queue: VecDeque::new(),
    stalled_since: None,
    kept: None,
};

impl PerMessage {
    fn is_empty(&self) -> bool {
        self.aliases_out.is_empty()
            && self.pending.is_empty()
            && self.awaiting_pubrel.is_empty()
            && self.aliases_in.is_empty()
            && self.outbound.is_empty()
            && self.outbound_queue.is_empty()
            && self.stalled_since.is_none()
            && self.kept.is_none()
    }
}

impl Conn {
    /// The per-message tables (aliases, requests waiting for a decision,
    /// QoS 1/2 in flight, the kept credentials), made on first use.
    fn per_message_mut(&mut self) -> &mut PerMessage {
        self.per_message.get_or_insert_with(Box::default)
    }

    /// The per-message tables, empty ones for an idle connection.
    fn per_message(&self) -> &PerMessage {
        self.per_message.as_deref().unwrap_or(&NO_PER_MESSAGE)
    }

    /// Lets go of the tables once they are all empty.
    fn release_per_message(&mut self) {
        if self.per_message.as_ref().is_some_and(|t| t.is_empty()) {
            self.per_message = None;
        }
    }

    fn kept(&self) -> Option<&Kept> {
        self.per_message.as_ref()?.kept.as_deref()
    }

    /// Its client id: its credentials' while it authenticates, then its
    /// identity's (set to the same one when the host answers).
    fn client_id(&self) -> Option<&Arc<str>> {
        match &self.identity {
            Some(identity) => Some(&identity.client_id),
            None => self.kept().map(|k| &k.credentials.client_id),
        }
    }

    /// Its client id, owned, for an audit record.
    fn client_id_string(&self) -> String {
        self.client_id()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// The identity the host gave at `now`, naming this connection's client
    /// id whatever the host put there: the ACL (`%c`), the audit and the
    /// hub's registry read it there.
    ///
    /// Its credential's `exp` is a wall-clock date; what is left of it
    /// (plus `leeway`) is put on the monotonic clock now, once: a later
    /// step of the wall clock closes no connection.
    fn set_identity(
        &mut self,
        now: Now,
        mut identity: Identity,
        leeway: Duration,
    ) -> Arc<Identity> {
        if let Some(id) = self.client_id()
            && !Arc::ptr_eq(id, &identity.client_id)
        {
            identity.client_id = id.clone();
        }
        self.credential_deadline = identity
            .expires_at
            .map(|exp| now.mono + (exp + leeway).saturating_duration_since(now.wall));
        let identity = Arc::new(identity);
        self.identity = Some(identity.clone());
        identity
    }

    fn kept_mut(&mut self) -> Option<&mut Kept> {
        self.per_message.as_mut()?.kept.as_deref_mut()
    }

    /// Lets go of the credentials.
    fn drop_kept(&mut self) {
        if let Some(t) = self.per_message.as_mut() {
            t.kept = None;
        }
        self.release_per_message();
    }

    fn auth_method(&self) -> Option<&str> {
        self.kept()?.credentials.auth_method.as_deref()
    }

    fn username(&self) -> Option<String> {
        self.kept()?.credentials.username.clone()
    }

    fn reauth(&self) -> Option<ReauthStep> {
        self.kept()?.reauth
    }

    /// Only a client with a method re-authenticates: one without keeps
    /// nothing to set.
    fn set_reauth(&mut self, step: Option<ReauthStep>) {
        if let Some(kept) = self.kept_mut() {
            kept.reauth = step;
        }
    }
}

/// One connection's MQTT protocol state machine.
#[derive(Debug)]
pub struct Session {
    /// Shared: every session of a hub has the same limits and authorizer.
    config: Arc<Shared>,
    /// Boxed, and there only while the connection has something in hand:
    /// an idle connection holds no buffer, no queue, and not their room.
    io: Option<Box<Io>>,
    state: State,
    version: ProtocolVersion,
    /// Wraps after 4 G requests of one connection: only those still
    /// waiting need to differ.
    next_ticket: u32,
    /// What the host said before the CONNECT, then what the CONNECT
    /// established.
    stage: Stage,
}

/// What the sessions of a hub share (one allocation, not a word or two in
/// each): the configuration, read through it, and the authorizer.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    config: SessionConfig,
    /// Answers authorization requests on the spot instead of emitting them.
    authorizer: Option<Arc<dyn Authorizer>>,
    /// The hub's store cannot commit: QoS 1/2 publishes are refused.
    pub(crate) storage_unavailable: bool,
}

impl Shared {
    pub(crate) fn new(config: SessionConfig, authorizer: Option<Arc<dyn Authorizer>>) -> Self {
        Self {
            config,
            authorizer,
            storage_unavailable: false,
        }
    }

    pub(crate) fn authorizer(&self) -> Option<&Arc<dyn Authorizer>> {
        self.authorizer.as_ref()
    }
}

impl std::ops::Deref for Shared {
    type Target = SessionConfig;

    fn deref(&self) -> &SessionConfig {
        &self.config
    }
}

/// What a connection holds while it has input not yet decoded, output not
/// yet queued or actions not yet polled.
#[derive(Debug)]
struct Io {
    decoder: Decoder,
    actions: VecDeque<Action>,
    /// Bytes written since the last queued output.
    tx: BytesMut,
    /// Bytes in queued [`Action::Send`]s the host has not taken yet.
    unsent_bytes: usize,
}

impl Io {
    /// The connection's `io`, taken anew if it idled.
    #[inline]
    fn of<'a>(
        io: &'a mut Option<Box<Io>>,
        config: &SessionConfig,
        state: State,
        version: ProtocolVersion,
    ) -> &'a mut Io {
        io.get_or_insert_with(|| Self::new(config, state, version))
    }

    #[cold]
    fn new(config: &SessionConfig, state: State, version: ProtocolVersion) -> Box<Io> {
        let mut decoder = Decoder::new(config.max_packet_size);
        // Past the CONNECT, the stream is in the version it named.
        if state != State::AwaitingConnect {
            decoder.set_version(version);
        }
        Box::new(Io {
            decoder,
            actions: VecDeque::new(),
            tx: BytesMut::new(),
            unsent_bytes: 0,
        })
    }

    /// The output buffer, grown a block at a time: a burst of small packets
    /// then fills one allocation instead of doubling (and copying) it.
    fn reserve_tx(&mut self) -> &mut BytesMut {
        const BLOCK: usize = 4096;
        if self.tx.capacity() - self.tx.len() < 512 {
            self.tx.reserve(BLOCK);
        }
        &mut self.tx
    }

    fn flush_tx(&mut self) {
        if !self.tx.is_empty() {
            let bytes = self.tx.split().freeze();
            self.unsent_bytes += bytes.len();
            self.actions.push_back(Action::Send(bytes));
            // The rest of the block would keep the allocation alive while
            // the connection idles; the next burst takes a new one.
            self.tx = BytesMut::new();
        }
    }
}

/// Where a connection stands with its CONNECT. One field where two (a
/// prelude and a connection, never both) took a word more in every
/// session.
#[derive(Debug)]
enum Stage {
    /// Before the CONNECT: what the host said about the connection.
    Prelude(Box<Prelude>),
    /// From the CONNECT on.
    Conn(Conn),
    /// The CONNECT was refused before it established anything.
    Refused,
}

impl Stage {
    fn conn(&self) -> Option<&Conn> {
        match self {
            Stage::Conn(c) => Some(c),
            _ => None,
        }
    }

    fn conn_mut(&mut self) -> Option<&mut Conn> {
        match self {
            Stage::Conn(c) => Some(c),
            _ => None,
        }
    }

    /// What the host said before the CONNECT, leaving the stage refused
    /// (the caller establishes the connection from it, or refuses it).
    fn take_prelude(&mut self) -> Prelude {
        match std::mem::replace(self, Stage::Refused) {
            Stage::Prelude(p) => *p,
            other => {
                *self = other;
                Prelude::default()
            }
        }
    }
}

/// What the host says about a connection before its CONNECT, and when it
/// opened (after the CONNECT, the connection's `last_packet` holds that
/// until the CONNACK).
#[derive(Debug, Default)]
struct Prelude {
    opened_at: Instant,
    /// The id for a client that sends none; `None`: derived when needed.
    assigned_client_id: Option<String>,
    /// The peer's address as the host describes it, for the credentials.
    peer: Option<String>,
    /// The TLS client certificate the host verified, for the credentials.
    certificate: Option<crate::auth::ClientCertificate>,
    /// Refuse the CONNECT with this code (a limit the host enforces).
    refusal: Option<(ConnectReasonCode, String)>,
}

impl Session {
    /// A session for a connection opened at `now`.
    pub fn new(config: impl Into<Arc<SessionConfig>>, now: Now) -> Self {
        let config = Arc::unwrap_or_clone(config.into());
        Self::with_shared(Arc::new(Shared::new(config, None)), now)
    }

    /// A session of a hub, sharing its configuration and authorizer.
    pub(crate) fn with_shared(config: Arc<Shared>, now: Now) -> Self {
        Self {
            config,
            io: None,
            state: State::AwaitingConnect,
            version: ProtocolVersion::V311,
            stage: Stage::Prelude(Box::new(Prelude {
                opened_at: now.mono,
                ..Prelude::default()
            })),
            next_ticket: 0,
        }
    }

    /// The connection's buffers and queue, taken anew after an idle spell.
    #[inline]
    fn io(&mut self) -> &mut Io {
        Io::of(&mut self.io, &self.config, self.state, self.version)
    }

    /// What the host says before the CONNECT; nothing once it was read
    /// (the builders that call this come first).
    fn prelude_mut(&mut self) -> Option<&mut Prelude> {
        match &mut self.stage {
            Stage::Prelude(p) => Some(p),
            _ => None,
        }
    }

    /// Makes the session refuse its client's CONNECT with `code` (3.1.1: the
    /// nearest return code) and close: for a limit the host enforces before
    /// anything is authenticated (too many connections from an address…).
    #[must_use]
    pub fn refusing(mut self, code: ConnectReasonCode, detail: impl Into<String>) -> Self {
        if let Some(p) = self.prelude_mut() {
            p.refusal = Some((code, detail.into()));
        }
        self
    }

    /// Hands the client certificate the transport verified (mTLS) to
    /// authentication, in the credentials.
    #[must_use]
    pub fn with_client_certificate(mut self, certificate: crate::auth::ClientCertificate) -> Self {
        if let Some(p) = self.prelude_mut() {
            p.certificate = Some(certificate);
        }
        self
    }

    /// Names the peer (its address, as the host describes it) in the
    /// credentials handed out for authentication.
    #[must_use]
    pub fn with_peer(mut self, peer: impl Into<String>) -> Self {
        if let Some(p) = self.prelude_mut() {
            p.peer = Some(peer.into());
        }
        self
    }

    /// Sets the identifier given to a client that connects without one; the
    /// hub makes it unique across connections.
    #[must_use]
    pub fn with_assigned_client_id(mut self, id: impl Into<String>) -> Self {
        if let Some(p) = self.prelude_mut() {
            p.assigned_client_id = Some(id.into());
        }
        self
    }

    /// Installs a synchronous authorizer: requests it answers are decided on
    /// the spot (and still audited) instead of leaving as
    /// [`Action::Authorize`]; those it returns `None` for still leave.
    #[must_use]
    pub fn with_authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.set_authorizer(Some(authorizer));
        self
    }

    /// Replaces (or removes) the synchronous authorizer, e.g. after the ACL
    /// was reloaded; decisions from now on use it.
    pub fn set_authorizer(&mut self, authorizer: Option<Arc<dyn Authorizer>>) {
        // The session's own copy if the hub's is shared.
        Arc::make_mut(&mut self.config).authorizer = authorizer;
    }

    /// Takes the hub's configuration and authorizer (after a reload).
    pub(crate) fn set_shared(&mut self, shared: Arc<Shared>) {
        self.config = shared;
    }

    /// The protocol version (3.1.1 until a CONNECT says otherwise).
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Whether the CONNACK was sent with success and the session is open.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether the session asked for (or saw) the end of the connection.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The client identifier, once the CONNECT is read.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id_shared().map(|id| &**id)
    }

    /// The client identifier, shared (one allocation for the session, its
    /// identity and the hub).
    pub(crate) fn client_id_shared(&self) -> Option<&Arc<str>> {
        self.stage.conn()?.client_id()
    }

    /// The hub removed one of its subscriptions (its right was revoked):
    /// the filter no longer counts against the client's limit.
    pub fn forget_subscription(&mut self, filter: &crate::codec::TopicFilter) {
        if let Some(conn) = self.stage.conn_mut() {
            conn.subscriptions.remove(filter);
        }
    }

    /// The identity of the last successful (re)authentication.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.stage.conn().and_then(|c| c.identity.as_ref())
    }

    /// The Session Expiry Interval in force, in seconds, once the CONNECT is
    /// read: as asked at CONNECT, or as changed by the client's DISCONNECT
    /// (3.1.1: 0 for a clean session, `u32::MAX` — never — otherwise).
    pub fn session_expiry_interval(&self) -> Option<u32> {
        self.stage.conn().map(|c| c.session_expiry)
    }

    /// The topic of the will it holds, if any.
    pub fn will_topic(&self) -> Option<&str> {
        Some(self.stage.conn()?.will.as_ref()?.topic.as_str())
    }

    /// When the credential it authenticated with expires (its `exp`), if
    /// it has.
    pub fn credential_expires_at(&self) -> Option<crate::time::Timestamp> {
        self.identity()?.expires_at
    }

    /// The next output, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        let io = self.io.as_mut()?;
        if io.actions.is_empty() {
            io.flush_tx();
            if io.actions.is_empty() {
                // Drained: an idle connection keeps no buffers, no queue and
                // no tables (keeping a busy one's for its next burst saved
                // too little to let a connection that falls silent hold
                // them).
                if io.decoder.buffered() == 0 {
                    self.io = None;
                } else if io.actions.capacity() > 0 {
                    io.actions = VecDeque::new();
                }
                if let Some(conn) = self.stage.conn_mut() {
                    conn.release_per_message();
                }
                return None;
            }
        }
        if let Some(Action::Send(bytes)) = io.actions.front() {
            io.unsent_bytes = io.unsent_bytes.saturating_sub(bytes.len());
        }
        // Popped straight into the return value: one copy of the action.
        io.actions.pop_front()
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Connected => {
                let conn = self.stage.conn()?;
                let keep_alive = (conn.keep_alive > 0).then(|| {
                    // [MQTT-3.1.2-22]: one and a half times the keep alive.
                    conn.last_packet + Duration::from_millis(u64::from(conn.keep_alive) * 1500)
                });
                let stalled = conn
                    .per_message()
                    .stalled_since
                    .map(|since| since + self.config.congestion_timeout);
                [keep_alive, self.expiry_deadline(), stalled]
                    .into_iter()
                    .flatten()
                    .min()
            }
            _ => Some(self.opened_at() + self.config.connect_timeout),
        }
    }

    /// When the connection opened, while its CONNECT timeout runs: the
    /// prelude has it until the CONNECT, the connection's `last_packet`
    /// until the CONNACK.
    fn opened_at(&self) -> Instant {
        match &self.stage {
            Stage::Prelude(p) => p.opened_at,
            Stage::Conn(c) => c.last_packet,
            Stage::Refused => Instant::ORIGIN,
        }
    }

    /// When the credential expiry policy closes the connection.
    fn expiry_deadline(&self) -> Option<Instant> {
        if self.config.credential_expiry != CredentialExpiry::Disconnect {
            return None;
        }
        self.stage.conn()?.credential_deadline
    }

    /// The host is not reading this client (backpressure): nothing it sends
    /// can arrive, so its keep alive counts from `now` instead of its last
    /// packet. The CONNECT timeout and the credential's expiry still run.
    pub fn hold_keep_alive(&mut self, now: Now) {
        if self.state == State::Connected
            && let Some(conn) = self.stage.conn_mut()
        {
            conn.last_packet = conn.last_packet.max(now.mono);
        }
    }

    /// Acts on every deadline that has passed; harmless when none has.
    pub fn handle_timeout(&mut self, now: Now) {
        match self.state {
            State::Closed => {}
            State::Connected => {
                let keep_alive_due = self.stage.conn().is_some_and(|c| {
                    c.keep_alive > 0
                        && now.mono
                            >= c.last_packet + Duration::from_millis(u64::from(c.keep_alive) * 1500)
                });
                if keep_alive_due {
                    self.fail(
                        now,
                        DisconnectReasonCode::KeepAliveTimeout,
                        "no packet within 1.5 × keep alive",
                        WillTrigger::KeepAliveTimeout,
                    );
                } else if self.expiry_deadline().is_some_and(|d| now.mono >= d) {
                    if !self.config.will_on_credential_expiry {
                        self.delete_will(now, "credential expired");
                    }
                    self.fail(
                        now,
                        DisconnectReasonCode::MaximumConnectTime,
                        "credential expired",
                        WillTrigger::CredentialExpired,
                    );
                } else if self.stage.conn().is_some_and(|c| {
                    c.per_message()
                        .stalled_since
                        .is_some_and(|since| now.mono >= since + self.config.congestion_timeout)
                }) {
                    // It would hold its publishers back for ever.
                    self.fail(
                        now,
                        DisconnectReasonCode::QuotaExceeded,
                        "slow subscriber: took no message while its queue was full",
                        WillTrigger::ServerClosed,
                    );
                }
            }
            _ => {
                if now.mono >= self.opened_at() + self.config.connect_timeout {
                    self.close_before_connack("no CONNACK within the CONNECT timeout");
                }
            }
        }
    }

    /// Bytes received from the client.
    pub fn handle_bytes(&mut self, now: Now, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.io().decoder.feed(bytes);
        while self.state != State::Closed {
            if !self.may_decode() {
                // Packets after CONNECT wait for the CONNACK [MQTT-3.1.4-6];
                // a client that floods meanwhile is cut off.
                if self.io().decoder.buffered() > 2 * self.config.max_packet_size as usize {
                    self.close_before_connack("too much data before CONNACK");
                }
                // The CONNECT alone came: its buffer need not wait with it.
                self.io().decoder.release_if_empty();
                return;
            }
            match self.io().decoder.decode() {
                // Most of any stream: straight to its handler, without the
                // general dispatch's copy of the packet.
                Ok(Some(mut packet)) => {
                    // Before the CONNACK, `last_packet` is when the
                    // connection opened: an AUTH does not push its CONNECT
                    // timeout back.
                    if self.state == State::Connected
                        && let Some(conn) = self.stage.conn_mut()
                    {
                        conn.last_packet = now.mono;
                    }
                    match &mut packet {
                        Packet::Publish(p) if self.state == State::Connected => {
                            self.on_publish(now, p);
                        }
                        _ => self.handle_packet(now, packet),
                    }
                }
                Ok(None) => {
                    self.io().decoder.release_if_empty();
                    return;
                }
                Err(e) => self.decode_fault(now, e),
            }
        }
    }

    /// Whether a topic name or filter is within the configured length and
    /// depth.
    pub(super) fn topic_fits(&self, topic: &str) -> bool {
        let levels_max = self.config.max_topic_levels;
        topic.len() <= self.config.max_topic_len
            // Fewer bytes than levels allowed cannot hold too many levels;
            // otherwise a count a word at a time, which short names repay
            // where a search set up for long ones does not.
            && (topic.len() < levels_max
                || crate::codec::string::count_byte(topic.as_bytes(), b'/') < levels_max)
    }

    /// Whether the next buffered packet may be decoded now.
    fn may_decode(&mut self) -> bool {
        match self.state {
            State::AwaitingConnect | State::Connected => true,
            // Only AUTH is read before the CONNACK (enhanced authentication).
            State::Authenticating(_) => self
                .io()
                .decoder
                .buffer_mut()
                .first()
                .is_some_and(|b| b >> 4 == PacketType::Auth as u8),
            _ => false,
        }
    }

    /// The transport ended: the will follows, unless the client said goodbye.
    pub fn handle_closed(&mut self, now: Now, how: TransportClosed) {
        if self.state == State::Connected {
            let trigger = match how {
                TransportClosed::Error => WillTrigger::NetworkError,
                TransportClosed::PeerClosed => WillTrigger::PeerClosed,
            };
            self.trigger_will(now, trigger);
        }
        self.state = State::Closed;
    }

    /// Another connection took this client id over [MQTT-3.1.4-3].
    pub fn handle_takeover(&mut self, now: Now, continued: bool) {
        if self.state == State::Connected {
            if continued
                && self.version == ProtocolVersion::V311
                && !self.config.will_on_takeover_v311
            {
                self.delete_will(now, "taken over by a connection that continues the session");
            }
            self.fail(
                now,
                DisconnectReasonCode::SessionTakenOver,
                "session taken over",
                WillTrigger::SessionTakenOver,
            );
        } else if self.state != State::Closed {
            self.close_before_connack("session taken over");
        }
    }

    /// An ACL change or a re-authentication revoked one of the session's
    /// subscriptions and the hub's policy closes the connection
    /// ([`crate::broker::OnRevoke::Disconnect`]): 5.0 DISCONNECT 0x87 Not
    /// authorized; the will follows, as for any close the client did not
    /// ask for.
    pub fn handle_revoked(&mut self, now: Now) {
        if self.state == State::Connected {
            self.fail(
                now,
                DisconnectReasonCode::NotAuthorized,
                "a subscription was revoked",
                WillTrigger::ServerClosed,
            );
        }
    }

    /// An operator disconnects the client (5.0: DISCONNECT with `reason`;
    /// 3.1.1: the connection is closed): its will follows (its delay
    /// first) when `will`, else it is deleted, audited as cancelled.
    pub fn handle_kicked(&mut self, now: Now, reason: DisconnectReasonCode, will: bool) {
        if self.state == State::Connected {
            if !will {
                self.delete_will(now, "disconnected by an operator, without its will");
            }
            self.fail(
                now,
                reason,
                "disconnected by an operator",
                WillTrigger::Operator,
            );
        } else if self.state != State::Closed {
            self.close_before_connack("disconnected by an operator");
        }
    }

    /// The server is shutting down.
    pub fn handle_shutdown(&mut self, now: Now) {
        if self.state == State::Connected {
            self.fail(
                now,
                DisconnectReasonCode::ServerShuttingDown,
                "server shutting down",
                WillTrigger::Shutdown,
            );
        } else if self.state != State::Closed {
            self.close_before_connack("server shutting down");
        }
    }

    fn ticket(&mut self) -> Ticket {
        self.next_ticket = self.next_ticket.wrapping_add(1);
        Ticket(u64::from(self.next_ticket))
    }

    /// Whether `ticket` is the last one handed out: the one a waiting state
    /// waits on.
    fn is_last_ticket(&self, ticket: Ticket) -> bool {
        ticket.0 == u64::from(self.next_ticket)
    }

    /// Queues an output. Bytes written so far go out first when the output's
    /// meaning depends on them: a close after the last bytes, a will after
    /// the DISCONNECT, subscriptions (and the retained messages they bring)
    /// after the SUBACK. Other outputs let the bytes keep batching, so a burst
    /// of acknowledgements becomes one write.
    fn push(&mut self, action: Action) {
        if matches!(
            action,
            Action::Close(_)
                | Action::DeliverWill(_)
                | Action::Subscribe { .. }
                | Action::Unsubscribe(_)
        ) {
            self.flush_tx();
        }
        self.io().actions.push_back(action);
    }

    fn flush_tx(&mut self) {
        if let Some(io) = self.io.as_mut() {
            io.flush_tx();
        }
    }

    /// Writes a packet to the client. Consecutive packets are batched into
    /// one [`Action::Send`]: a burst of acknowledgements is one write.
    fn send(&mut self, packet: &Packet) {
        let version = self.version;
        let tx = self.reserve_tx();
        // Packets built here always encode; an error would only drop it.
        let _ = packet.encode(version, tx);
    }

    /// The output buffer, with room for a packet or more.
    pub(super) fn reserve_tx(&mut self) -> &mut BytesMut {
        self.io().reserve_tx()
    }

    fn audit(&mut self, record: AuditRecord) {
        self.push(Action::Audit(record));
    }

    /// Closes a connection that never got a successful CONNACK: no
    /// DISCONNECT [MQTT-3.14.0-1], no will [MQTT-3.1.4-6].
    fn close_before_connack(&mut self, detail: &str) {
        self.push(Action::Close(CloseReason {
            code: DisconnectReasonCode::UnspecifiedError,
            detail: detail.to_string(),
        }));
        self.state = State::Closed;
    }

    /// Refuses a CONNECT with a CONNACK, then closes.
    fn refuse(&mut self, code: ConnectReasonCode, detail: &str) {
        let mut ack = ConnAck::new(false, code);
        if self.version == ProtocolVersion::V5
            && self.stage.conn().is_none_or(|c| c.request_problem_info)
        {
            ack.properties.reason_string = MqttString::try_from(detail).ok();
        }
        self.send(&Packet::ConnAck(ack));
        self.close_before_connack(detail);
    }

    /// A server-initiated close of a connected session: DISCONNECT (5.0),
    /// the will, then the close — in that order.
    fn fail(&mut self, now: Now, code: DisconnectReasonCode, detail: &str, trigger: WillTrigger) {
        if self.state != State::Connected {
            self.close_before_connack(detail);
            return;
        }
        if self.version == ProtocolVersion::V5 {
            self.send(&Packet::Disconnect(Disconnect::new(code)));
        }
        // The DISCONNECT goes out before anything the will causes.
        self.flush_tx();
        self.trigger_will(now, trigger);
        self.push(Action::Close(CloseReason {
            code,
            detail: detail.to_string(),
        }));
        self.state = State::Closed;
    }

    fn protocol_error(&mut self, now: Now, detail: &str) {
        self.fail(
            now,
            DisconnectReasonCode::ProtocolError,
            detail,
            WillTrigger::ProtocolError,
        );
    }

    /// The authorization request for the stored will, against the current identity.
    fn will_query(&self) -> Option<AuthzQuery> {
        let conn = self.stage.conn()?;
        let will = conn.will.as_ref()?;
        Some(AuthzQuery {
            identity: conn.identity.clone()?,
            op: Operation::Will,
            topic: will.topic.as_mqtt_str().clone(),
            qos: will.qos,
            retain: will.retain,
            will_trigger: None,
        })
    }

    /// A durable hub keeps the will, with the identity it is to be
    /// authorized against should the broker stop without closing the
    /// connection.
    fn arm_will(&mut self) {
        if !self.config.durable {
            return;
        }
        let Some(conn) = self.stage.conn() else {
            return;
        };
        let (Some(will), Some(identity)) = (&conn.will, &conn.identity) else {
            return;
        };
        let armed = ArmedWill {
            will: (**will).clone(),
            identity: identity.clone(),
            session_expiry_interval: conn.session_expiry,
        };
        self.push(Action::WillArmed(Box::new(armed)));
    }

    /// A durable hub lets the deleted will's record go.
    fn will_deleted(&mut self) {
        if self.config.durable {
            self.push(Action::WillDeleted);
        }
    }

    /// Hands the will up, once, with the identity it must be authorized against.
    /// The will is deleted without being sent (audited with `reason`).
    fn delete_will(&mut self, now: Now, reason: &str) {
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        let (Some(will), Some(identity)) = (conn.will.take(), conn.identity.clone()) else {
            return;
        };
        let record = AuditRecord::will(
            now.wall,
            &identity,
            &will,
            None,
            WillOutcome::Cancelled {
                reason: reason.into(),
            },
        );
        // What was written before goes out before the record.
        self.flush_tx();
        self.audit(record);
        self.will_deleted();
    }

    fn trigger_will(&mut self, now: Now, trigger: WillTrigger) {
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        let (Some(will), Some(identity)) = (conn.will.take(), conn.identity.clone()) else {
            return;
        };
        let session_expiry_interval = conn.session_expiry;
        let record = AuditRecord::will(
            now.wall,
            &identity,
            &will,
            Some(trigger),
            WillOutcome::Triggered,
        );
        // What was written before the trigger goes out before its record.
        self.flush_tx();
        self.audit(record);
        self.push(Action::DeliverWill(Box::new(DueWill {
            will: *will,
            identity,
            trigger,
            triggered_at: now,
            session_expiry_interval,
        })));
    }

    fn decode_fault(&mut self, now: Now, e: DecodeError) {
        match self.state {
            State::Connected => {
                let code = e.reason_code();
                self.fail(now, code, &e.to_string(), WillTrigger::ProtocolError);
            }
            State::AwaitingConnect => match e {
                DecodeError::UnsupportedProtocol { level, .. } => {
                    // 3.1.1 requires CONNACK 0x01 [MQTT-3.1.2-2]; a 5.0
                    // client reads 0x84 in its own format.
                    self.version = if level == 5 {
                        ProtocolVersion::V5
                    } else {
                        ProtocolVersion::V311
                    };
                    self.refuse(
                        ConnectReasonCode::UnsupportedProtocolVersion,
                        &e.to_string(),
                    );
                }
                _ => self.close_before_connack(&e.to_string()),
            },
            _ if self.version == ProtocolVersion::V5 => {
                self.refuse(e.connect_reason_code(), &e.to_string());
            }
            _ => self.close_before_connack(&e.to_string()),
        }
    }

    fn handle_packet(&mut self, now: Now, packet: Packet) {
        match (self.state, packet) {
            (State::AwaitingConnect, Packet::Connect(c)) => self.on_connect(*c),
            (State::AwaitingConnect, other) => {
                let detail = format!("{:?} before CONNECT", other.packet_type());
                self.close_before_connack(&detail);
            }
            (State::Authenticating(_), Packet::Auth(a)) => self.on_auth_before_connack(a),
            (State::Connected, Packet::Connect(_)) => self.protocol_error(now, "second CONNECT"),
            (State::Connected, Packet::Publish(mut p)) => self.on_publish(now, &mut p),
            (State::Connected, Packet::PubAck(a)) => {
                self.on_outbound_ack(now, a.packet_id, OutState::Published)
            }
            (State::Connected, Packet::PubRec(r)) => self.on_pubrec(now, r),
            (State::Connected, Packet::PubRel(r)) => self.on_pubrel(r),
            (State::Connected, Packet::PubComp(c)) => {
                self.on_outbound_ack(now, c.packet_id, OutState::Released)
            }
            (State::Connected, Packet::Subscribe(s)) => self.on_subscribe(now, s),
            (State::Connected, Packet::Unsubscribe(u)) => self.on_unsubscribe(u),
            (State::Connected, Packet::PingReq) => self.send(&Packet::PingResp),
            (State::Connected, Packet::Disconnect(d)) => self.on_disconnect(now, d),
            (State::Connected, Packet::Auth(a)) => self.on_auth_connected(now, a),
            (State::Connected, other) => {
                let detail = format!("{:?} is not sent by clients", other.packet_type());
                self.protocol_error(now, &detail);
            }
            (_, other) => {
                let detail = format!("unexpected {:?}", other.packet_type());
                self.close_before_connack(&detail);
            }
        }
    }

    fn on_disconnect(&mut self, now: Now, d: Disconnect) {
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        if let Some(expiry) = d.properties.session_expiry_interval {
            // §3.14.2.2.2: not from 0 to non-zero.
            if conn.session_expiry == 0 && expiry != 0 {
                self.protocol_error(now, "session expiry changed from 0 in DISCONNECT");
                return;
            }
            conn.session_expiry = expiry;
        }
        if d.reason_code == DisconnectReasonCode::NormalDisconnection {
            // [MQTT-3.14.4-3]: the will is deleted.
            self.delete_will(now, "DISCONNECT 0x00");
        } else {
            self.trigger_will(now, WillTrigger::DisconnectWithWill);
        }
        self.push(Action::Close(CloseReason {
            code: d.reason_code,
            detail: "client disconnected".into(),
        }));
        self.state = State::Closed;
    }
}
