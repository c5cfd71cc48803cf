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
use crate::time::Timestamp;

pub use types::{
    Action, AuthnOutcome, AuthzAnswer, AuthzQuery, CloseReason, CredentialExpiry, Delivery,
    DeniedPublishV311, DueWill, GrantedSubscription, InboundMessage, OutboundMessage,
    SessionConfig, Ticket, TransportClosed,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingConnect,
    Authenticating(Ticket),
    CheckingWill(Ticket),
    Opening(Ticket),
    Connected,
    Closed,
}

/// A request waiting for its authorization, kept in arrival order so that
/// decisions take effect in the order the client sent its packets.
#[derive(Debug)]
enum Pending {
    Publish {
        ticket: Ticket,
        query: AuthzQuery,
        publish: Publish,
        topic: TopicName,
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
    client_id: String,
    assigned_client_id: bool,
    clean_start: bool,
    keep_alive: u16,
    server_keep_alive: Option<u16>,
    session_expiry: u32,
    will: Option<LastWill>,
    credentials: Credentials,
    identity: Option<Arc<Identity>>,
    client_receive_max: u16,
    client_max_packet: Option<u32>,
    request_problem_info: bool,
    last_packet: Timestamp,
    reauth: Option<Ticket>,
    /// A will re-check after re-authentication waiting for its decision.
    will_recheck: Option<(Ticket, AuthzQuery)>,
    pending: VecDeque<Pending>,
    /// Inbound QoS 1/2 publishes not yet completed (Receive Maximum).
    inbound_inflight: u16,
    /// Inbound QoS 2 packet ids acknowledged with PUBREC, waiting for PUBREL.
    awaiting_pubrel: Vec<PacketId>,
    aliases_in: Vec<Option<TopicName>>,
    next_packet_id: u16,
    outbound: Vec<(PacketId, OutState)>,
    outbound_queue: VecDeque<OutboundMessage>,
}

/// One connection's MQTT protocol state machine.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    decoder: Decoder,
    actions: VecDeque<Action>,
    state: State,
    version: ProtocolVersion,
    opened_at: Timestamp,
    next_ticket: u64,
    assigned_client_id: String,
    conn: Option<Conn>,
    /// Bytes written since the last queued output.
    tx: BytesMut,
    /// Answers authorization requests on the spot instead of emitting them.
    authorizer: Option<Arc<dyn Authorizer>>,
}

impl Session {
    /// A session for a connection opened at `now`.
    pub fn new(config: SessionConfig, now: Timestamp) -> Self {
        let decoder = Decoder::new(config.max_packet_size);
        Self {
            config,
            decoder,
            actions: VecDeque::new(),
            state: State::AwaitingConnect,
            version: ProtocolVersion::V311,
            opened_at: now,
            next_ticket: 0,
            assigned_client_id: format!("testament-{:x}", now.as_millis()),
            conn: None,
            tx: BytesMut::new(),
            authorizer: None,
        }
    }

    /// Sets the identifier given to a client that connects without one; the
    /// hub makes it unique across connections.
    #[must_use]
    pub fn with_assigned_client_id(mut self, id: impl Into<String>) -> Self {
        self.assigned_client_id = id.into();
        self
    }

    /// Installs a synchronous authorizer: requests it answers are decided on
    /// the spot (and still audited) instead of leaving as
    /// [`Action::Authorize`]; those it returns `None` for still leave.
    #[must_use]
    pub fn with_authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Replaces (or removes) the synchronous authorizer, e.g. after the ACL
    /// was reloaded; decisions from now on use it.
    pub fn set_authorizer(&mut self, authorizer: Option<Arc<dyn Authorizer>>) {
        self.authorizer = authorizer;
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
        self.conn.as_ref().map(|c| c.client_id.as_str())
    }

    /// The identity of the last successful (re)authentication.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.conn.as_ref().and_then(|c| c.identity.as_ref())
    }

    /// The next output, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            self.flush_tx();
        }
        self.actions.pop_front()
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            State::Closed => None,
            State::Connected => {
                let conn = self.conn.as_ref()?;
                let keep_alive = (conn.keep_alive > 0).then(|| {
                    // [MQTT-3.1.2-22]: one and a half times the keep alive.
                    conn.last_packet + Duration::from_millis(u64::from(conn.keep_alive) * 1500)
                });
                [keep_alive, self.expiry_deadline()]
                    .into_iter()
                    .flatten()
                    .min()
            }
            _ => Some(self.opened_at + self.config.connect_timeout),
        }
    }

    fn expiry_deadline(&self) -> Option<Timestamp> {
        if self.config.credential_expiry != CredentialExpiry::Disconnect {
            return None;
        }
        let exp = self.conn.as_ref()?.identity.as_ref()?.expires_at?;
        Some(exp + self.config.credential_leeway)
    }

    /// Acts on every deadline that has passed; harmless when none has.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        match self.state {
            State::Closed => {}
            State::Connected => {
                let keep_alive_due = self.conn.as_ref().is_some_and(|c| {
                    c.keep_alive > 0
                        && now
                            >= c.last_packet + Duration::from_millis(u64::from(c.keep_alive) * 1500)
                });
                if keep_alive_due {
                    self.fail(
                        now,
                        DisconnectReasonCode::KeepAliveTimeout,
                        "no packet within 1.5 × keep alive",
                        WillTrigger::KeepAliveTimeout,
                    );
                } else if self.expiry_deadline().is_some_and(|d| now >= d) {
                    self.fail(
                        now,
                        DisconnectReasonCode::MaximumConnectTime,
                        "credential expired",
                        WillTrigger::CredentialExpired,
                    );
                }
            }
            _ => {
                if now >= self.opened_at + self.config.connect_timeout {
                    self.close_before_connack("no CONNACK within the CONNECT timeout");
                }
            }
        }
    }

    /// Bytes received from the client.
    pub fn handle_bytes(&mut self, now: Timestamp, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.decoder.feed(bytes);
        while self.state != State::Closed {
            if !self.may_decode() {
                // Packets after CONNECT wait for the CONNACK [MQTT-3.1.4-6];
                // a client that floods meanwhile is cut off.
                if self.decoder.buffered() > 2 * self.config.max_packet_size as usize {
                    self.close_before_connack("too much data before CONNACK");
                }
                return;
            }
            match self.decoder.decode() {
                Ok(Some(packet)) => {
                    if let Some(conn) = self.conn.as_mut() {
                        conn.last_packet = now;
                    }
                    self.handle_packet(now, packet);
                }
                Ok(None) => return,
                Err(e) => self.decode_fault(now, e),
            }
        }
    }

    /// Whether the next buffered packet may be decoded now.
    fn may_decode(&mut self) -> bool {
        match self.state {
            State::AwaitingConnect | State::Connected => true,
            // Only AUTH is read before the CONNACK (enhanced authentication).
            State::Authenticating(_) => self
                .decoder
                .buffer_mut()
                .first()
                .is_some_and(|b| b >> 4 == PacketType::Auth as u8),
            _ => false,
        }
    }

    /// The transport ended: the will follows, unless the client said goodbye.
    pub fn handle_closed(&mut self, now: Timestamp, how: TransportClosed) {
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
    pub fn handle_takeover(&mut self, now: Timestamp) {
        if self.state == State::Connected {
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

    /// The server is shutting down.
    pub fn handle_shutdown(&mut self, now: Timestamp) {
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
        self.next_ticket += 1;
        Ticket(self.next_ticket)
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
        self.actions.push_back(action);
    }

    fn flush_tx(&mut self) {
        if !self.tx.is_empty() {
            let bytes = self.tx.split().freeze();
            self.actions.push_back(Action::Send(bytes));
        }
    }

    /// Writes a packet to the client. Consecutive packets are batched into
    /// one [`Action::Send`]: a burst of acknowledgements is one write.
    fn send(&mut self, packet: &Packet) {
        // Packets built here always encode; an error would only drop it.
        let _ = packet.encode(self.version, &mut self.tx);
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
            && self.conn.as_ref().is_none_or(|c| c.request_problem_info)
        {
            ack.properties.reason_string = MqttString::try_from(detail).ok();
        }
        self.send(&Packet::ConnAck(ack));
        self.close_before_connack(detail);
    }

    /// A server-initiated close of a connected session: DISCONNECT (5.0),
    /// the will, then the close — in that order.
    fn fail(
        &mut self,
        now: Timestamp,
        code: DisconnectReasonCode,
        detail: &str,
        trigger: WillTrigger,
    ) {
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

    fn protocol_error(&mut self, now: Timestamp, detail: &str) {
        self.fail(
            now,
            DisconnectReasonCode::ProtocolError,
            detail,
            WillTrigger::ProtocolError,
        );
    }

    /// The authorization request for the stored will, against the current identity.
    fn will_query(&self) -> Option<AuthzQuery> {
        let conn = self.conn.as_ref()?;
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

    /// Hands the will up, once, with the identity it must be authorized against.
    fn trigger_will(&mut self, now: Timestamp, trigger: WillTrigger) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let (Some(will), Some(identity)) = (conn.will.take(), conn.identity.clone()) else {
            return;
        };
        let record = AuditRecord::Will {
            at: now,
            identity: identity.clone(),
            topic: will.topic.as_mqtt_str().clone(),
            trigger: Some(trigger),
            outcome: WillOutcome::Triggered,
        };
        let session_expiry_interval = conn.session_expiry;
        self.audit(record);
        self.push(Action::DeliverWill(Box::new(DueWill {
            will,
            identity,
            trigger,
            triggered_at: now,
            session_expiry_interval,
        })));
    }

    fn decode_fault(&mut self, now: Timestamp, e: DecodeError) {
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

    fn handle_packet(&mut self, now: Timestamp, packet: Packet) {
        match (self.state, packet) {
            (State::AwaitingConnect, Packet::Connect(c)) => self.on_connect(now, *c),
            (State::AwaitingConnect, other) => {
                let detail = format!("{:?} before CONNECT", other.packet_type());
                self.close_before_connack(&detail);
            }
            (State::Authenticating(_), Packet::Auth(a)) => self.on_auth_before_connack(a),
            (State::Connected, Packet::Connect(_)) => self.protocol_error(now, "second CONNECT"),
            (State::Connected, Packet::Publish(p)) => self.on_publish(now, p),
            (State::Connected, Packet::PubAck(a)) => {
                self.on_outbound_ack(a.packet_id, OutState::Published)
            }
            (State::Connected, Packet::PubRec(r)) => self.on_pubrec(r),
            (State::Connected, Packet::PubRel(r)) => self.on_pubrel(r),
            (State::Connected, Packet::PubComp(c)) => {
                self.on_outbound_ack(c.packet_id, OutState::Released)
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

    fn valid_client_id(&self, id: &str) -> bool {
        id.len() <= self.config.max_client_id_len
            && (!self.config.strict_client_id || id.bytes().all(|b| b.is_ascii_alphanumeric()))
    }

    fn on_connect(&mut self, now: Timestamp, c: Connect) {
        self.version = c.protocol;
        let v5 = c.protocol == ProtocolVersion::V5;
        let props = &c.properties;
        let request_problem_info = props.request_problem_information.unwrap_or(true);
        let (client_id, assigned) = if c.client_id.is_empty() {
            // [MQTT-3.1.3-6]/[MQTT-3.1.3-7]: an empty id is given one; 3.1.1
            // only with Clean Session 1 [MQTT-3.1.3-8].
            if !v5 && !c.clean_start {
                self.refuse(
                    ConnectReasonCode::ClientIdentifierNotValid,
                    "empty client id without clean session",
                );
                return;
            }
            (self.assigned_client_id.clone(), true)
        } else {
            (c.client_id.to_string(), false)
        };
        let session_expiry = if v5 {
            props.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            u32::MAX
        };
        let keep_alive = match self.config.server_keep_alive {
            Some(cap) if v5 && (c.keep_alive == 0 || c.keep_alive > cap) => cap,
            _ => c.keep_alive,
        };
        let credentials = Credentials {
            client_id: client_id.clone(),
            username: c.username.as_ref().map(ToString::to_string),
            password: c.password.clone(),
            auth_method: props
                .authentication_method
                .as_ref()
                .map(ToString::to_string),
            auth_data: props.authentication_data.clone(),
            peer: None,
        };
        self.conn = Some(Conn {
            client_id,
            assigned_client_id: assigned,
            clean_start: c.clean_start,
            keep_alive,
            server_keep_alive: (keep_alive != c.keep_alive).then_some(keep_alive),
            session_expiry,
            will: c.will.clone(),
            credentials: credentials.clone(),
            identity: None,
            client_receive_max: props.receive_maximum.map_or(u16::MAX, |r| r.get()),
            client_max_packet: props.maximum_packet_size.map(|m| m.get()),
            request_problem_info,
            last_packet: now,
            reauth: None,
            will_recheck: None,
            pending: VecDeque::new(),
            inbound_inflight: 0,
            awaiting_pubrel: Vec::new(),
            aliases_in: vec![None; usize::from(self.config.topic_alias_maximum)],
            next_packet_id: 0,
            outbound: Vec::new(),
            outbound_queue: VecDeque::new(),
        });
        if !self.valid_client_id(&credentials.client_id) {
            self.refuse(
                ConnectReasonCode::ClientIdentifierNotValid,
                "client id not accepted",
            );
            return;
        }
        if let Some(will) = &c.will {
            // [MQTT-3.2.2-12], [MQTT-3.2.2-13]
            if will.qos > self.config.maximum_qos {
                self.refuse(ConnectReasonCode::QoSNotSupported, "will QoS not supported");
                return;
            }
            if will.retain && !self.config.retain_available {
                self.refuse(
                    ConnectReasonCode::RetainNotSupported,
                    "retain not supported",
                );
                return;
            }
        }
        let ticket = self.ticket();
        self.state = State::Authenticating(ticket);
        self.push(Action::Authenticate {
            ticket,
            credentials: Box::new(credentials),
            reauthentication: false,
        });
    }

    fn on_auth_before_connack(&mut self, a: Auth) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        // [MQTT-4.12.0-2], [MQTT-4.12.0-5]: continue with the same method.
        let method = a
            .properties
            .authentication_method
            .as_ref()
            .map(ToString::to_string);
        if a.reason_code != AuthReasonCode::ContinueAuthentication
            || method.is_none()
            || method != conn.credentials.auth_method
        {
            self.refuse(ConnectReasonCode::ProtocolError, "unexpected AUTH");
            return;
        }
        conn.credentials.auth_data = a.properties.authentication_data.clone();
        let credentials = conn.credentials.clone();
        let ticket = self.ticket();
        self.state = State::Authenticating(ticket);
        self.push(Action::Authenticate {
            ticket,
            credentials: Box::new(credentials),
            reauthentication: false,
        });
    }

    /// The answer to an [`Action::Authenticate`].
    ///
    /// # Errors
    /// [`SessionError::UnknownTicket`] when no authentication is waiting for it.
    pub fn handle_authentication(
        &mut self,
        now: Timestamp,
        ticket: Ticket,
        outcome: AuthnOutcome,
    ) -> Result<(), SessionError> {
        if self.state == State::Authenticating(ticket) {
            self.on_authenticated(now, outcome);
            return Ok(());
        }
        if self.state == State::Connected
            && self.conn.as_ref().and_then(|c| c.reauth) == Some(ticket)
        {
            self.on_reauthenticated(now, outcome);
            return Ok(());
        }
        Err(SessionError::UnknownTicket(ticket))
    }

    fn on_authenticated(&mut self, now: Timestamp, outcome: AuthnOutcome) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match outcome {
            AuthnOutcome::Failure(failure) => {
                let record = AuditRecord::AuthenticationFailed {
                    at: now,
                    client_id: conn.client_id.clone(),
                    username: conn.credentials.username.clone(),
                    failure: Box::new(failure.clone()),
                };
                self.audit(record);
                self.refuse(failure.reason_code(), &failure.to_string());
            }
            AuthnOutcome::Continue(data) => {
                let mut auth = Auth::new(AuthReasonCode::ContinueAuthentication);
                auth.properties.authentication_method = conn
                    .credentials
                    .auth_method
                    .as_deref()
                    .and_then(|m| MqttString::try_from(m).ok());
                auth.properties.authentication_data = Some(data);
                if self.version == ProtocolVersion::V5 && conn.credentials.auth_method.is_some() {
                    // Stay in Authenticating with the same ticket retired:
                    // the client's next AUTH opens a new one.
                    self.state = State::Authenticating(Ticket(0));
                    self.send(&Packet::Auth(auth));
                } else {
                    // [MQTT-4.12.0-6]: no AUTH to a client that did not ask for it.
                    self.refuse(
                        ConnectReasonCode::BadAuthenticationMethod,
                        "authentication needs more rounds",
                    );
                }
            }
            AuthnOutcome::Success(identity) => {
                let identity = Arc::new(identity);
                conn.identity = Some(identity.clone());
                self.audit(AuditRecord::authenticated(identity));
                match self.will_query() {
                    Some(query) if self.config.check_will_at_connect => {
                        let ticket = self.ticket();
                        self.state = State::CheckingWill(ticket);
                        match self.decide_now(&query) {
                            Some(decision) => self.on_will_checked(now, decision),
                            None => self.push(Action::Authorize { ticket, query }),
                        }
                    }
                    _ => self.open(),
                }
            }
        }
    }

    fn open(&mut self) {
        let ticket = self.ticket();
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let Some(identity) = conn.identity.clone() else {
            return;
        };
        let action = Action::Open {
            ticket,
            client_id: conn.client_id.clone(),
            clean_start: conn.clean_start,
            session_expiry_interval: conn.session_expiry,
            identity,
        };
        self.state = State::Opening(ticket);
        self.push(action);
    }

    /// The answer to an [`Action::Open`]: whether a stored session was
    /// resumed. The CONNACK goes out.
    ///
    /// # Errors
    /// [`SessionError::UnknownTicket`] when no open is waiting for it.
    pub fn handle_open(
        &mut self,
        now: Timestamp,
        ticket: Ticket,
        session_present: bool,
    ) -> Result<(), SessionError> {
        if self.state != State::Opening(ticket) {
            return Err(SessionError::UnknownTicket(ticket));
        }
        let config = &self.config;
        let Some(conn) = self.conn.as_mut() else {
            return Err(SessionError::UnknownTicket(ticket));
        };
        let mut ack = ConnAck::new(session_present, ConnectReasonCode::Success);
        if self.version == ProtocolVersion::V5 {
            let p = &mut ack.properties;
            if config.receive_maximum != u16::MAX {
                p.receive_maximum = std::num::NonZeroU16::new(config.receive_maximum);
            }
            if config.maximum_qos != QoS::ExactlyOnce {
                p.maximum_qos = Some(config.maximum_qos);
            }
            if !config.retain_available {
                p.retain_available = Some(false);
            }
            p.maximum_packet_size = std::num::NonZeroU32::new(config.max_packet_size);
            if conn.assigned_client_id {
                p.assigned_client_identifier = MqttString::try_from(conn.client_id.as_str()).ok();
            }
            if config.topic_alias_maximum > 0 {
                p.topic_alias_maximum = Some(config.topic_alias_maximum);
            }
            if !config.wildcard_subscriptions {
                p.wildcard_subscription_available = Some(false);
            }
            if !config.subscription_identifiers {
                p.subscription_identifiers_available = Some(false);
            }
            if !config.shared_subscriptions {
                p.shared_subscription_available = Some(false);
            }
            // [MQTT-3.2.2-21]: Server Keep Alive replaces the client's value.
            p.server_keep_alive = conn.server_keep_alive;
            if let Some(method) = &conn.credentials.auth_method {
                p.authentication_method = MqttString::try_from(method.as_str()).ok();
            }
        }
        conn.last_packet = now;
        self.state = State::Connected;
        self.send(&Packet::ConnAck(ack));
        Ok(())
    }

    /// The answer to an [`Action::Authorize`].
    ///
    /// # Errors
    /// [`SessionError::UnknownTicket`] when no authorization is waiting for it.
    pub fn handle_authorization(
        &mut self,
        now: Timestamp,
        ticket: Ticket,
        decision: Decision,
    ) -> Result<(), SessionError> {
        if self.state == State::CheckingWill(ticket) {
            self.on_will_checked(now, decision);
            return Ok(());
        }
        if self.state != State::Connected {
            return Err(SessionError::UnknownTicket(ticket));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(SessionError::UnknownTicket(ticket));
        };
        if conn
            .will_recheck
            .as_ref()
            .is_some_and(|(t, _)| *t == ticket)
            && let Some((_, query)) = conn.will_recheck.take()
        {
            self.on_will_rechecked(now, query, decision);
            return Ok(());
        }
        let mut found = false;
        for p in conn.pending.iter_mut() {
            match p {
                Pending::Publish {
                    ticket: t,
                    decision: d,
                    ..
                } if *t == ticket && d.is_none() => {
                    *d = Some(decision.clone());
                    found = true;
                }
                Pending::Subscribe { slots, .. } => {
                    for slot in slots.iter_mut() {
                        if matches!(slot, Slot::Waiting(t, _) if *t == ticket)
                            && let Slot::Waiting(_, query) = std::mem::replace(
                                slot,
                                Slot::Refused(SubAckReasonCode::UnspecifiedError),
                            )
                        {
                            *slot = Slot::Decided(query, decision.clone());
                            found = true;
                        }
                    }
                }
                Pending::Publish { .. } => {}
            }
            if found {
                break;
            }
        }
        if !found {
            return Err(SessionError::UnknownTicket(ticket));
        }
        self.drain_pending(now);
        Ok(())
    }

    /// The will, re-checked after a re-authentication: denied, it is deleted
    /// and the connection closed with 0x87.
    fn on_will_rechecked(&mut self, now: Timestamp, query: AuthzQuery, decision: Decision) {
        let allowed = decision.is_allowed();
        let identity = query.identity.clone();
        let topic = query.topic.clone();
        self.audit(AuditRecord::authorization(now, query, decision.clone()));
        if allowed {
            return;
        }
        if let Some(conn) = self.conn.as_mut()
            && conn.will.take().is_some()
        {
            self.audit(AuditRecord::Will {
                at: now,
                identity,
                topic,
                trigger: None,
                outcome: WillOutcome::Denied { decision },
            });
        }
        self.fail(
            now,
            DisconnectReasonCode::NotAuthorized,
            "will no longer authorized after re-authentication",
            WillTrigger::ServerClosed,
        );
    }

    fn on_will_checked(&mut self, now: Timestamp, decision: Decision) {
        let Some(query) = self.will_query() else {
            return;
        };
        let allowed = decision.is_allowed();
        self.audit(AuditRecord::authorization(now, query, decision));
        if allowed {
            self.open();
        } else {
            // Denied at CONNECT: refused with 0x87 (3.1.1: 0x05), no will.
            self.refuse(
                ConnectReasonCode::NotAuthorized,
                "will topic not authorized",
            );
        }
    }

    fn on_publish(&mut self, now: Timestamp, mut p: Publish) {
        let v5 = self.version == ProtocolVersion::V5;
        let config_max_qos = self.config.maximum_qos;
        let retain_available = self.config.retain_available;
        let receive_maximum = self.config.receive_maximum;
        let max_pending = self.config.max_pending_authorizations;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if v5 && !p.properties.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6]
            self.protocol_error(now, "subscription identifier from a client");
            return;
        }
        if p.qos > config_max_qos {
            self.fail(
                now,
                DisconnectReasonCode::QoSNotSupported,
                "QoS not supported",
                WillTrigger::ProtocolError,
            );
            return;
        }
        if p.retain && !retain_available {
            self.fail(
                now,
                DisconnectReasonCode::RetainNotSupported,
                "retain not supported",
                WillTrigger::ProtocolError,
            );
            return;
        }
        // Topic aliases (§3.3.2.3.4).
        let topic = match (p.topic.take(), p.properties.topic_alias) {
            (topic, Some(alias)) => {
                let slot = usize::from(alias.get()) - 1;
                if slot >= conn.aliases_in.len() {
                    self.fail(
                        now,
                        DisconnectReasonCode::TopicAliasInvalid,
                        "topic alias out of range",
                        WillTrigger::ProtocolError,
                    );
                    return;
                }
                match topic {
                    Some(t) => {
                        conn.aliases_in[slot] = Some(t.clone());
                        t
                    }
                    None => match conn.aliases_in[slot].clone() {
                        Some(t) => t,
                        None => {
                            self.protocol_error(now, "unknown topic alias");
                            return;
                        }
                    },
                }
            }
            (Some(t), None) => t,
            (None, None) => {
                self.protocol_error(now, "no topic");
                return;
            }
        };
        if v5 {
            p.properties.topic_alias = None;
        }
        if let Some(id) = p.packet_id {
            if p.qos == QoS::ExactlyOnce && conn.awaiting_pubrel.contains(&id) {
                // Already received and acknowledged: acknowledge again, do
                // not hand it up twice (exactly once).
                self.send(&Packet::PubRec(PubRec::new(id)));
                return;
            }
            let in_progress = p.qos == QoS::ExactlyOnce && conn.pending.iter().any(|x| {
                matches!(x, Pending::Publish { publish, .. } if publish.packet_id == Some(id) && publish.qos == QoS::ExactlyOnce)
            });
            if in_progress {
                return;
            }
            if conn.inbound_inflight >= receive_maximum {
                self.fail(
                    now,
                    DisconnectReasonCode::ReceiveMaximumExceeded,
                    "receive maximum exceeded",
                    WillTrigger::ProtocolError,
                );
                return;
            }
            conn.inbound_inflight += 1;
        }
        if conn.pending.len() >= max_pending {
            self.fail(
                now,
                DisconnectReasonCode::MessageRateTooHigh,
                "too many requests waiting for authorization",
                WillTrigger::ProtocolError,
            );
            return;
        }
        let Some(identity) = conn.identity.clone() else {
            return;
        };
        let query = AuthzQuery {
            identity,
            op: Operation::Publish,
            topic: topic.as_mqtt_str().clone(),
            qos: p.qos,
            retain: p.retain,
            will_trigger: None,
        };
        if let Some(decision) = self.decide_now(&query) {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            if conn.pending.is_empty() {
                self.finish_publish(now, query, p, topic, decision);
            } else {
                // Earlier requests still wait: take effect after them.
                conn.pending.push_back(Pending::Publish {
                    ticket: Ticket(0),
                    query,
                    publish: p,
                    topic,
                    decision: Some(decision),
                });
            }
            return;
        }
        let ticket = self.ticket();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.pending.push_back(Pending::Publish {
            ticket,
            query: query.clone(),
            publish: p,
            topic,
            decision: None,
        });
        self.push(Action::Authorize { ticket, query });
    }

    /// The synchronous authorizer's answer, if one is installed and answers.
    fn decide_now(&self, query: &AuthzQuery) -> Option<Decision> {
        self.authorizer.as_ref()?.authorize(&query.as_request())
    }

    /// Carries out every decided request at the front of the queue, in order.
    fn drain_pending(&mut self, now: Timestamp) {
        loop {
            let ready = match self.conn.as_ref().and_then(|c| c.pending.front()) {
                Some(Pending::Publish { decision, .. }) => decision.is_some(),
                Some(Pending::Subscribe { slots, .. }) => {
                    !slots.iter().any(|s| matches!(s, Slot::Waiting(..)))
                }
                None => false,
            };
            if !ready || self.state != State::Connected {
                return;
            }
            let Some(item) = self.conn.as_mut().and_then(|c| c.pending.pop_front()) else {
                return;
            };
            match item {
                Pending::Publish {
                    query,
                    publish,
                    topic,
                    decision: Some(decision),
                    ..
                } => {
                    self.finish_publish(now, query, publish, topic, decision);
                }
                Pending::Publish { .. } => {}
                Pending::Subscribe { packet, slots } => self.finish_subscribe(now, packet, slots),
            }
        }
    }

    fn finish_publish(
        &mut self,
        now: Timestamp,
        query: AuthzQuery,
        p: Publish,
        topic: TopicName,
        decision: Decision,
    ) {
        let allowed = decision.is_allowed();
        let identity = query.identity.clone();
        self.audit(AuditRecord::authorization(now, query, decision));
        if allowed {
            self.push(Action::Publish(InboundMessage {
                identity,
                topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties: p.properties,
            }));
        }
        let Some(id) = p.packet_id else {
            return;
        };
        let v5 = self.version == ProtocolVersion::V5;
        if !allowed && !v5 && self.config.denied_publish_v311 == DeniedPublishV311::Close {
            self.fail(
                now,
                DisconnectReasonCode::NotAuthorized,
                "publish not authorized",
                WillTrigger::ServerClosed,
            );
            return;
        }
        // 5.0: 0x87 Not authorized; 3.1.1: a positive acknowledgement.
        let code = if allowed || !v5 {
            PubAckReasonCode::Success
        } else {
            PubAckReasonCode::NotAuthorized
        };
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match p.qos {
            QoS::AtLeastOnce => {
                conn.inbound_inflight = conn.inbound_inflight.saturating_sub(1);
                self.send(&Packet::PubAck(PubAck::with_reason(id, code)));
            }
            QoS::ExactlyOnce => {
                if code.is_error() {
                    // The exchange ends with an error PUBREC (§4.3.3).
                    conn.inbound_inflight = conn.inbound_inflight.saturating_sub(1);
                } else {
                    conn.awaiting_pubrel.push(id);
                }
                self.send(&Packet::PubRec(PubRec::with_reason(id, code)));
            }
            QoS::AtMostOnce => {}
        }
    }

    fn on_pubrel(&mut self, r: PubRel) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let code = match conn
            .awaiting_pubrel
            .iter()
            .position(|id| *id == r.packet_id)
        {
            Some(i) => {
                conn.awaiting_pubrel.swap_remove(i);
                conn.inbound_inflight = conn.inbound_inflight.saturating_sub(1);
                PubRelReasonCode::Success
            }
            None => PubRelReasonCode::PacketIdentifierNotFound,
        };
        self.send(&Packet::PubComp(PubComp::with_reason(r.packet_id, code)));
    }

    fn on_subscribe(&mut self, now: Timestamp, s: Subscribe) {
        let v5 = self.version == ProtocolVersion::V5;
        if s.properties.subscription_identifier.is_some() && !self.config.subscription_identifiers {
            self.fail(
                now,
                DisconnectReasonCode::SubscriptionIdentifiersNotSupported,
                "subscription identifiers not supported",
                WillTrigger::ProtocolError,
            );
            return;
        }
        let Some(identity) = self.identity().cloned() else {
            return;
        };
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.pending.len() >= self.config.max_pending_authorizations)
        {
            self.fail(
                now,
                DisconnectReasonCode::MessageRateTooHigh,
                "too many requests waiting for authorization",
                WillTrigger::ProtocolError,
            );
            return;
        }
        let mut slots = Vec::with_capacity(s.subscriptions.len());
        let mut requests = Vec::new();
        for sub in &s.subscriptions {
            let refused = if sub.filter.shared().is_some() && !self.config.shared_subscriptions {
                Some(SubAckReasonCode::SharedSubscriptionsNotSupported)
            } else if sub.filter.has_wildcards() && !self.config.wildcard_subscriptions {
                Some(SubAckReasonCode::WildcardSubscriptionsNotSupported)
            } else {
                None
            };
            match refused {
                Some(code) => slots.push(Slot::Refused(if v5 {
                    code
                } else {
                    SubAckReasonCode::UnspecifiedError
                })),
                None => {
                    let query = AuthzQuery {
                        identity: identity.clone(),
                        op: Operation::Subscribe,
                        topic: sub.filter.as_mqtt_str().clone(),
                        qos: sub.options.qos.min(self.config.maximum_qos),
                        retain: false,
                        will_trigger: None,
                    };
                    if let Some(decision) = self.decide_now(&query) {
                        slots.push(Slot::Decided(query, decision));
                    } else {
                        let ticket = self.ticket();
                        slots.push(Slot::Waiting(ticket, query.clone()));
                        requests.push(Action::Authorize { ticket, query });
                    }
                }
            }
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.pending
                .push_back(Pending::Subscribe { packet: s, slots });
        }
        for r in requests {
            self.push(r);
        }
        self.drain_pending(now);
    }

    fn finish_subscribe(&mut self, now: Timestamp, s: Subscribe, slots: Vec<Slot>) {
        let mut codes = Vec::with_capacity(slots.len());
        let mut granted = Vec::new();
        for (sub, slot) in s.subscriptions.into_iter().zip(slots) {
            match slot {
                Slot::Refused(code) => codes.push(code),
                Slot::Decided(query, decision) => {
                    let qos = query.qos;
                    let allowed = decision.is_allowed();
                    self.audit(AuditRecord::authorization(now, query, decision));
                    if allowed {
                        codes.push(SubAckReasonCode::granted(qos));
                        granted.push(GrantedSubscription {
                            subscription: sub,
                            granted_qos: qos,
                        });
                    } else {
                        codes.push(SubAckReasonCode::NotAuthorized);
                    }
                }
                Slot::Waiting(..) => codes.push(SubAckReasonCode::UnspecifiedError),
            }
        }
        self.send(&Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: Default::default(),
            reason_codes: codes,
        }));
        if !granted.is_empty() {
            self.push(Action::Subscribe {
                granted,
                subscription_identifier: s.properties.subscription_identifier,
            });
        }
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let codes = vec![UnsubAckReasonCode::Success; u.filters.len()];
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Default::default(),
            reason_codes: codes,
        }));
        self.push(Action::Unsubscribe(u.filters));
    }

    fn on_disconnect(&mut self, now: Timestamp, d: Disconnect) {
        let Some(conn) = self.conn.as_mut() else {
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
            if let (Some(will), Some(identity)) = (conn.will.take(), conn.identity.clone()) {
                let record = AuditRecord::Will {
                    at: now,
                    identity: identity.clone(),
                    topic: will.topic.as_mqtt_str().clone(),
                    trigger: None,
                    outcome: WillOutcome::Cancelled {
                        reason: "DISCONNECT 0x00".into(),
                    },
                };
                self.audit(record);
            }
        } else {
            self.trigger_will(now, WillTrigger::DisconnectWithWill);
        }
        self.push(Action::Close(CloseReason {
            code: d.reason_code,
            detail: "client disconnected".into(),
        }));
        self.state = State::Closed;
    }

    fn on_auth_connected(&mut self, now: Timestamp, a: Auth) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let method = a
            .properties
            .authentication_method
            .as_ref()
            .map(ToString::to_string);
        // [MQTT-4.12.0-7]: no AUTH from a client that connected without a
        // method; [MQTT-4.12.1-1]: re-authenticate with the same method.
        let allowed = conn.credentials.auth_method.is_some()
            && method == conn.credentials.auth_method
            && match a.reason_code {
                AuthReasonCode::ReAuthenticate => conn.reauth.is_none(),
                AuthReasonCode::ContinueAuthentication => conn.reauth.is_some(),
                AuthReasonCode::Success => false,
            };
        if !allowed {
            self.protocol_error(now, "unexpected AUTH");
            return;
        }
        conn.credentials.auth_data = a.properties.authentication_data.clone();
        let credentials = conn.credentials.clone();
        let ticket = self.ticket();
        if let Some(conn) = self.conn.as_mut() {
            conn.reauth = Some(ticket);
        }
        self.push(Action::Authenticate {
            ticket,
            credentials: Box::new(credentials),
            reauthentication: true,
        });
    }

    fn on_reauthenticated(&mut self, now: Timestamp, outcome: AuthnOutcome) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let method = conn
            .credentials
            .auth_method
            .as_deref()
            .and_then(|m| MqttString::try_from(m).ok());
        match outcome {
            AuthnOutcome::Success(identity)
                if conn
                    .identity
                    .as_ref()
                    .is_some_and(|old| old.principal == identity.principal) =>
            {
                conn.reauth = None;
                let identity = Arc::new(identity);
                conn.identity = Some(identity.clone());
                self.audit(AuditRecord::authenticated(identity.clone()));
                self.push(Action::IdentityChanged(identity));
                let mut ok = Auth::new(AuthReasonCode::Success);
                ok.properties.authentication_method = method;
                self.send(&Packet::Auth(ok));
                if self.config.recheck_will_on_reauth
                    && let Some(query) = self.will_query()
                {
                    match self.decide_now(&query) {
                        Some(decision) => self.on_will_rechecked(now, query, decision),
                        None => {
                            let ticket = self.ticket();
                            if let Some(conn) = self.conn.as_mut() {
                                conn.will_recheck = Some((ticket, query.clone()));
                            }
                            self.push(Action::Authorize { ticket, query });
                        }
                    }
                }
            }
            AuthnOutcome::Continue(data) => {
                let mut more = Auth::new(AuthReasonCode::ContinueAuthentication);
                more.properties.authentication_method = method;
                more.properties.authentication_data = Some(data);
                // The retired ticket waits for the client's next AUTH.
                conn.reauth = Some(Ticket(0));
                self.send(&Packet::Auth(more));
            }
            failed => {
                conn.reauth = None;
                let failure = match failed {
                    AuthnOutcome::Failure(f) => f,
                    _ => crate::auth::AuthnError::PrincipalMismatch {
                        username: conn
                            .identity
                            .as_ref()
                            .map(|i| i.principal.clone())
                            .unwrap_or_default(),
                        principal: "another principal".into(),
                    }
                    .into(),
                };
                let record = AuditRecord::AuthenticationFailed {
                    at: now,
                    client_id: conn.client_id.clone(),
                    username: conn.credentials.username.clone(),
                    failure: Box::new(failure),
                };
                self.audit(record);
                // [MQTT-4.12.1-2]
                self.fail(
                    now,
                    DisconnectReasonCode::NotAuthorized,
                    "re-authentication failed",
                    WillTrigger::ReauthenticationFailed,
                );
            }
        }
    }

    /// Gives the session a message for its client. QoS 1/2 messages beyond
    /// the client's Receive Maximum wait in a bounded queue.
    pub fn deliver(&mut self, _now: Timestamp, msg: OutboundMessage) -> Delivery {
        if self.state != State::Connected {
            return Delivery::NotConnected;
        }
        let window = self.window();
        let Some(conn) = self.conn.as_mut() else {
            return Delivery::NotConnected;
        };
        let mut probe = Publish::new(msg.topic.clone(), msg.payload.clone());
        probe.qos = msg.qos;
        probe.packet_id = (msg.qos != QoS::AtMostOnce).then_some(PacketId::MIN);
        probe.retain = msg.retain;
        probe.properties = msg.properties.clone();
        let size = probe.encoded_len(self.version).unwrap_or(usize::MAX);
        if conn
            .client_max_packet
            .is_some_and(|max| size > max as usize)
        {
            return Delivery::TooLarge;
        }
        if msg.qos == QoS::AtMostOnce {
            self.send(&Packet::Publish(probe));
            return Delivery::Accepted;
        }
        if conn.outbound.len() < window && conn.outbound_queue.is_empty() {
            self.send_outbound(msg);
            Delivery::Accepted
        } else if conn.outbound_queue.len() < self.config.max_outbound_queue {
            conn.outbound_queue.push_back(msg);
            Delivery::Accepted
        } else {
            Delivery::QueueFull
        }
    }

    fn window(&self) -> usize {
        let client = self
            .conn
            .as_ref()
            .map_or(u16::MAX, |c| c.client_receive_max);
        usize::from(client.min(self.config.max_outbound_inflight))
    }

    fn send_outbound(&mut self, msg: OutboundMessage) {
        let version = self.version;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some(id) = next_free_id(conn) else {
            conn.outbound_queue.push_front(msg);
            return;
        };
        let mut p = Publish::new(msg.topic, msg.payload);
        p.qos = msg.qos;
        p.retain = msg.retain;
        p.packet_id = Some(id);
        p.properties = msg.properties;
        // The hub keeps the message for redelivery on a later connection; a
        // connection itself never resends [MQTT-4.4.0-1].
        if p.encode(version, &mut self.tx).is_ok() {
            conn.outbound.push((id, OutState::Published));
        }
    }

    fn on_pubrec(&mut self, r: PubRec) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match conn
            .outbound
            .iter_mut()
            .find(|(id, state)| *id == r.packet_id && *state == OutState::Published)
        {
            Some(entry) if !r.reason_code.is_error() => {
                entry.1 = OutState::Released;
                self.send(&Packet::PubRel(PubRel::new(r.packet_id)));
            }
            Some(_) => self.on_outbound_ack(r.packet_id, OutState::Published),
            None if self.version == ProtocolVersion::V5 => {
                self.send(&Packet::PubRel(PubRel::with_reason(
                    r.packet_id,
                    PubRelReasonCode::PacketIdentifierNotFound,
                )));
            }
            None => self.send(&Packet::PubRel(PubRel::new(r.packet_id))),
        }
    }

    /// Completes an outbound exchange and sends what waited for the window.
    fn on_outbound_ack(&mut self, id: PacketId, expected: OutState) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Some(i) = conn
            .outbound
            .iter()
            .position(|(pid, state)| *pid == id && *state == expected)
        {
            conn.outbound.remove(i);
        }
        while self
            .conn
            .as_ref()
            .is_some_and(|c| !c.outbound_queue.is_empty() && c.outbound.len() < self.window())
        {
            let Some(msg) = self
                .conn
                .as_mut()
                .and_then(|c| c.outbound_queue.pop_front())
            else {
                break;
            };
            self.send_outbound(msg);
        }
    }
}

fn next_free_id(conn: &mut Conn) -> Option<PacketId> {
    for _ in 0..u16::MAX {
        conn.next_packet_id = conn.next_packet_id.checked_add(1).unwrap_or(1);
        let id = PacketId::new(conn.next_packet_id)?;
        if !conn.outbound.iter().any(|(pid, _)| *pid == id) {
            return Some(id);
        }
    }
    None
}
