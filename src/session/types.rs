//! What a session takes in and gives out besides bytes.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

pub use crate::auth::AuthzQuery;
use crate::auth::{AuditRecord, AuthnFailure, Credentials, Identity, WillTrigger};
use crate::codec::{
    Bytes, DisconnectReasonCode, LastWill, PacketId, PublishProperties, QoS, Subscription,
    SubscriptionId, TopicFilter, TopicName,
};

/// An opaque handle pairing a request a [`Session`](super::Session) emitted
/// with its answer (the hub's requests carry a [`crate::broker::Ticket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// What to do when a credential expires while connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CredentialExpiry {
    /// Close the connection at `exp` + leeway (5.0: DISCONNECT 0xA0 Maximum
    /// connect time); clients that re-authenticate in time stay.
    Disconnect,
    /// Keep the connection; the identity stands.
    Keep,
}

/// What a 3.1.1 client gets when a publish is denied (3.1.1 has no reason
/// codes; [MQTT-3.3.5-2] allows either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeniedPublishV311 {
    /// A positive acknowledgement; the message is dropped.
    Acknowledge,
    /// Close the connection.
    Close,
}

/// Limits and capabilities of one session. Every table a session keeps is
/// bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionConfig {
    /// Largest packet accepted from the client (and announced in 5.0).
    pub max_packet_size: u32,
    /// Time allowed from the connection's opening to the CONNACK.
    pub connect_timeout: Duration,
    /// Longest client identifier accepted.
    pub max_client_id_len: usize,
    /// Accept only `0-9a-zA-Z` client identifiers (the set the spec requires).
    pub strict_client_id: bool,
    /// Caps the client's keep alive (and replaces 0); sent as Server Keep Alive.
    pub server_keep_alive: Option<u16>,
    /// QoS 1/2 publishes the client may have unacknowledged (5.0 Receive Maximum).
    pub receive_maximum: u16,
    /// Highest QoS accepted from clients.
    pub maximum_qos: QoS,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Highest topic alias accepted from the client (0: none).
    pub topic_alias_maximum: u16,
    /// Topic aliases the broker gives a 5.0 client that accepts them (at
    /// most its Topic Alias Maximum; 0: none): a repeated topic then costs
    /// two bytes. Bounded so that finding a topic's alias stays a short
    /// scan; when they are all taken, the oldest is given to the new topic.
    pub max_outbound_topic_aliases: u16,
    /// Cap on QoS 1/2 messages in flight to the client.
    pub max_outbound_inflight: u16,
    /// Messages waiting for the outbound window before new ones are refused
    /// — or, with [`SessionConfig::backpressure`], before the publishers
    /// are slowed down (new QoS 1/2 ones are then taken up to twice this).
    pub max_outbound_queue: usize,
    /// A slow client's full queue slows its publishers down instead of
    /// dropping QoS 1/2 messages that were acknowledged to them
    /// ([`Delivery::Congested`]); off: they are dropped (audited).
    pub backpressure: bool,
    /// A client whose queue is past its bound and that takes no message
    /// for this long is disconnected (0x97): it would hold its publishers
    /// back for ever.
    pub congestion_timeout: Duration,
    /// Subscriptions one session may hold; more get SUBACK 0x97 Quota exceeded.
    pub max_subscriptions: usize,
    /// Bytes written for the client and not yet taken by the host; a
    /// delivery beyond it is refused ([`Delivery::QueueFull`]).
    pub max_unsent_bytes: usize,
    /// Publish/subscribe requests waiting for an authorization decision.
    pub max_pending_authorizations: usize,
    /// Ask for the will's authorization at CONNECT (fail fast).
    pub check_will_at_connect: bool,
    /// Ask for it again after each successful re-authentication; denied:
    /// DISCONNECT 0x87 and the will is deleted (it could not be sent anyway).
    pub recheck_will_on_reauth: bool,
    /// What happens when the credential expires.
    pub credential_expiry: CredentialExpiry,
    /// Whether the will goes when the connection is closed because its
    /// credential expired ([`CredentialExpiry::Disconnect`]): `false`, it
    /// is deleted (audited) — the client was healthy, only its token ran
    /// out.
    pub will_on_credential_expiry: bool,
    /// Whether a 3.1.1 client's will goes when another connection takes
    /// its session over and continues it (Clean Session 0): 3.1.1 does not
    /// say; `false` (the default), it is deleted (audited), as mosquitto
    /// does — a client reconnecting over its own half-open connection is
    /// not "down". A 5.0 client follows its Will Delay Interval whatever
    /// this says (§3.1.3.2.2).
    pub will_on_takeover_v311: bool,
    /// Clock skew allowed on the credential's `exp`.
    pub credential_leeway: Duration,
    /// Whether allowed publishes get an audit record too (denials always
    /// do, as do subscriptions, wills and authentications). At a million
    /// messages a second the allowed ones are a log flood; off saves their
    /// cost as well.
    pub audit_allowed_publishes: bool,
    /// How a denied 3.1.1 publish is answered.
    pub denied_publish_v311: DeniedPublishV311,
    /// Whether wildcard subscriptions are supported.
    pub wildcard_subscriptions: bool,
    /// Whether shared subscriptions are supported.
    pub shared_subscriptions: bool,
    /// Whether subscription identifiers are supported.
    pub subscription_identifiers: bool,
    /// Longest topic name or filter accepted, in bytes.
    pub max_topic_len: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Whether the hub keeps state durably: a session then reports its will
    /// ([`Action::WillArmed`], [`Action::WillDeleted`]) and, when its
    /// Session Expiry Interval is not 0, its inbound QoS 2 exchanges
    /// ([`Progress`]). Set by the hub from its own setting.
    #[serde(skip)]
    pub durable: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_client_id_len: 128,
            strict_client_id: false,
            server_keep_alive: None,
            receive_maximum: 64,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            topic_alias_maximum: 16,
            max_outbound_topic_aliases: 16,
            max_outbound_inflight: 64,
            max_outbound_queue: 1000,
            backpressure: true,
            congestion_timeout: Duration::from_secs(30),
            max_subscriptions: 100,
            max_unsent_bytes: 4 * 1024 * 1024,
            max_pending_authorizations: 64,
            check_will_at_connect: true,
            recheck_will_on_reauth: false,
            will_on_credential_expiry: true,
            will_on_takeover_v311: false,
            credential_expiry: CredentialExpiry::Disconnect,
            credential_leeway: Duration::from_secs(30),
            audit_allowed_publishes: true,
            denied_publish_v311: DeniedPublishV311::Acknowledge,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            max_topic_len: 1024,
            max_topic_levels: 32,
            durable: false,
        }
    }
}

/// The answer to an authentication request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AuthnOutcome {
    /// The client is who it says. The session sets the identity's client
    /// id to the connection's, whatever the host put there.
    Success(Identity),
    /// It is not.
    Failure(AuthnFailure),
    /// Enhanced authentication wants another round: send this data in AUTH 0x18.
    Continue(Bytes),
}

/// How the transport ended, as the host saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TransportClosed {
    /// An I/O error.
    Error,
    /// The peer closed the connection.
    PeerClosed,
}

/// Why the session asks the host to close the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The reason code (sent in DISCONNECT to 5.0 clients where allowed).
    pub code: DisconnectReasonCode,
    /// A sentence for the log.
    pub detail: String,
}

/// An application message that passed authorization, handed up for routing.
///
/// It was authorized against the session's identity when the PUBLISH
/// arrived — the one in [`Action::Open`] or the latest
/// [`Action::IdentityChanged`]; the [`Action::Authorize`] and the audit
/// record name it. The message does not carry it: routing never reads it,
/// and carrying it cost a reference count taken and dropped per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Topic (aliases resolved).
    pub topic: TopicName,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// 5.0 properties (topic alias removed).
    pub properties: PublishProperties,
}

/// A subscription that passed authorization, with the QoS granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedSubscription {
    /// The filter and options asked for.
    pub subscription: Subscription,
    /// The QoS granted (capped by the server's maximum).
    pub granted_qos: QoS,
    /// The topics its grant carves out: never delivered through it.
    pub exclusions: crate::auth::Exclusions,
}

/// A will handed up for delivery: authorize it against `identity` when it
/// is due, never re-authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueWill {
    /// The will as captured at CONNECT.
    pub will: LastWill,
    /// The identity of the last successful (re)authentication.
    pub identity: Arc<Identity>,
    /// What triggered it.
    pub trigger: WillTrigger,
    /// When it was triggered, on both clocks: its delay and its message
    /// expiry count on the monotonic one, the credential expiry policy
    /// judges the wall-clock date.
    pub triggered_at: crate::time::Now,
    /// The session's expiry interval (the will waits for the smaller of its
    /// delay and this, §3.1.3.2.2).
    pub session_expiry_interval: u32,
}

/// A message the host gives a session to deliver to its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Topic.
    pub topic: TopicName,
    /// Payload.
    pub payload: Bytes,
    /// Delivery QoS (already the minimum of publish and granted QoS).
    pub qos: QoS,
    /// Retain flag as delivered.
    pub retain: bool,
    /// 5.0 properties.
    pub properties: PublishProperties,
    /// Its key in a durable hub's store, for a QoS 1/2 message to a
    /// persistent session: the session reports how its exchange moves on
    /// ([`Action::Progress`]). `None` for a message kept only in memory.
    pub seq: Option<NonZeroU64>,
}

impl OutboundMessage {
    /// The same message in allocations of its own, for storage that
    /// outlives the moment (an offline queue): a message decoded from a
    /// read buffer would otherwise keep all of that buffer alive.
    #[must_use]
    pub fn detached(&self) -> Self {
        Self {
            topic: self.topic.detached(),
            payload: Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.detached(),
            seq: self.seq,
        }
    }
}

/// A QoS 1/2 message sent to the client and not yet completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflightMessage {
    /// The packet identifier it was sent with (kept on redelivery).
    pub packet_id: PacketId,
    /// The message.
    pub message: OutboundMessage,
    /// QoS 2: PUBREC received, PUBREL sent (redelivery resends the PUBREL).
    pub released: bool,
}

/// What a persistent session keeps between connections: its delivery state
/// and its subscriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inflight {
    /// Messages in flight to the client, oldest first.
    pub outbound: Vec<InflightMessage>,
    /// Messages waiting for the outbound window.
    pub queued: Vec<OutboundMessage>,
    /// Inbound QoS 2 packet ids acknowledged with PUBREC, waiting for PUBREL.
    pub awaiting_pubrel: Vec<PacketId>,
    /// The filters the session holds.
    pub subscriptions: Vec<TopicFilter>,
}

/// Whether a message given to [`super::Session::deliver`] was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Sent, or queued for the outbound window.
    Accepted,
    /// Larger than the client's Maximum Packet Size: dropped for this client
    /// (MQTT 5.0 §3.1.2.11.4).
    TooLarge,
    /// Queued beyond [`SessionConfig::max_outbound_queue`] (up to twice
    /// it): the client is slow; the host should stop reading from the
    /// message's publisher until it catches up
    /// ([`super::Session::is_congested`]).
    Congested,
    /// The outbound queue is full: dropped.
    QueueFull,
    /// The session is not connected.
    NotConnected,
}

/// One output of a [`Session`](super::Session), in order — what a single
/// connection asks of whoever drives it (the hub, or a test). The host of a
/// whole broker drains [`crate::broker::Action`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the connection.
    Send(Bytes),
    /// Close the connection (after writing what was sent before).
    Close(CloseReason),
    /// Authenticate these credentials and answer with [`super::Session::handle_authentication`].
    Authenticate {
        /// Pairs the answer.
        ticket: Ticket,
        /// What the client presented.
        credentials: Box<Credentials>,
        /// Whether this is a re-authentication of a connected client.
        reauthentication: bool,
    },
    /// Decide this and answer with [`super::Session::handle_authorization`].
    Authorize {
        /// Pairs the answer.
        ticket: Ticket,
        /// The question.
        query: AuthzQuery,
    },
    /// The client is authenticated: open or resume its session and answer
    /// with [`super::Session::handle_open`] (Session Present).
    Open {
        /// Pairs the answer.
        ticket: Ticket,
        /// The client identifier (assigned if the client sent none), shared
        /// with the session and its identity.
        client_id: Arc<str>,
        /// Clean Start.
        clean_start: bool,
        /// Session Expiry Interval asked for (3.1.1: 0 or "never").
        session_expiry_interval: u32,
        /// The identity established.
        identity: Arc<Identity>,
    },
    /// An authorized publish, for routing.
    Publish(InboundMessage),
    /// Authorized subscriptions, for the subscription tree.
    Subscribe {
        /// The subscriptions, in request order.
        granted: Vec<GrantedSubscription>,
        /// Their Subscription Identifier (5.0).
        subscription_identifier: Option<SubscriptionId>,
    },
    /// Filters to remove.
    Unsubscribe(Vec<TopicFilter>),
    /// The will was triggered: authorize it when due and publish it on Allow.
    DeliverWill(Box<DueWill>),
    /// Re-authentication replaced the identity.
    IdentityChanged(Arc<Identity>),
    /// A record for the audit log.
    Audit(AuditRecord),
    /// A QoS 1/2 exchange that a durable hub keeps moved on.
    Progress(Progress),
    /// A durable hub keeps this connection's will from now on: registered
    /// at the CONNACK, registered again with the new identity after a
    /// re-authentication ([`SessionConfig::durable`]). Should the broker
    /// stop without closing the connection (a crash), it is triggered at the
    /// restart.
    WillArmed(Box<ArmedWill>),
    /// The will was deleted (DISCONNECT 0x00, or denied at a re-check): a
    /// durable hub lets its record go.
    WillDeleted,
}

/// A will as a durable hub keeps it while its connection is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmedWill {
    /// The will as captured at CONNECT.
    pub will: LastWill,
    /// The identity of the last successful (re)authentication.
    pub identity: Arc<Identity>,
    /// The session's expiry interval.
    pub session_expiry_interval: u32,
}

/// How a QoS 1/2 exchange a durable hub keeps moved on: outbound, a
/// message with a record ([`OutboundMessage::seq`]); inbound, a QoS 2
/// message of a persistent session ([`SessionConfig::durable`]). The hub
/// makes it durable before anything the session sent after it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Sent with this packet id: a resume resends it with the same one
    /// [MQTT-4.4.0-1].
    Sent {
        /// The message's record.
        seq: NonZeroU64,
        /// Its packet identifier.
        packet_id: PacketId,
    },
    /// QoS 2: its PUBREC came and PUBREL was sent; a resume resends the
    /// PUBREL, never the message.
    Released {
        /// The message's record.
        seq: NonZeroU64,
        /// The packet identifier it was sent with.
        packet_id: PacketId,
    },
    /// Acknowledged (PUBACK, PUBCOMP, or an error PUBREC): done with.
    Completed {
        /// The message's record.
        seq: NonZeroU64,
    },
    /// Inbound QoS 2: acknowledged with PUBREC; the packet id waits for
    /// PUBREL, and a resend of the message is not handed up again.
    AwaitingRelease(PacketId),
    /// Inbound QoS 2: its PUBREL came.
    ReleaseReceived(PacketId),
}

/// A list of topic filters held by every session, most often empty or
/// short: a word (one more box behind it) where a vector is three and a
/// boxed slice two. Empty, it holds no allocation.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // a word, not three
pub(crate) struct Filters(Option<Box<Vec<TopicFilter>>>);

impl Filters {
    pub(crate) fn from_vec(v: Vec<TopicFilter>) -> Self {
        Self((!v.is_empty()).then(|| Box::new(v)))
    }

    pub(crate) fn as_slice(&self) -> &[TopicFilter] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn contains(&self, filter: &TopicFilter) -> bool {
        self.as_slice().contains(filter)
    }

    pub(crate) fn push(&mut self, filter: TopicFilter) {
        self.0.get_or_insert_with(Box::default).push(filter);
    }

    /// Removes `filter`; whether it was there.
    pub(crate) fn remove(&mut self, filter: &TopicFilter) -> bool {
        let Some(v) = self.0.as_mut() else {
            return false;
        };
        let Some(i) = v.iter().position(|f| f == filter) else {
            return false;
        };
        v.swap_remove(i);
        if v.is_empty() {
            self.0 = None;
        }
        true
    }

    pub(crate) fn take(&mut self) -> Vec<TopicFilter> {
        self.0.take().map(|v| *v).unwrap_or_default()
    }
}
