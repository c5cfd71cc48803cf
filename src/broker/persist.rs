//! What must survive a restart, as the hub hands it to the host's store.
//!
//! A durable hub ([`super::BrokerConfig::durable`]) emits an
//! [`super::Action::Persist`] for each change of durable state, in order,
//! and the host makes it durable before it carries out any action that
//! comes after it: the bytes of a PUBACK that follow the retained message it
//! acknowledges never leave before the message is on disk. A host commits
//! what one turn of its loop collected in one transaction (group commit).
//! At start, the host hands back what it stored ([`super::Broker::restore`]).
//!
//! The end of a message's exchange may wait for a later flush
//! ([`Persist::may_wait`]): losing it in a crash costs the message sent
//! again with DUP (or its PUBREL again) — a duplicate MQTT allows — never a
//! message or an exactly-once exchange. A host commits a turn of only
//! those without waiting for the disk.
//!
//! Durable today: retained messages; persistent sessions with their
//! subscriptions and expiry, the QoS 1/2 messages they are to get (offline
//! queue, waiting for the window, in flight with their packet ids and QoS 2
//! state) and their inbound QoS 2 packet ids waiting for PUBREL; wills,
//! from their registration to their decision (`wills.rs` says what a
//! restart does with each).
//!
//! A retained message is kept as a plain MQTT 5.0 PUBLISH with every
//! property, behind the wall-clock date its Message Expiry Interval ends; a
//! session with the date it expires. The monotonic clock starts anew with
//! the process, so a date is the only thing an expiry can be kept as across
//! a restart.

use std::num::NonZeroU64;
use std::sync::Arc;

use base64::Engine as _;

use crate::auth::{Identity, WillTrigger};
use crate::codec::{
    Bytes, Connect, Decoder, Encode, LastWill, MqttString, Packet, PacketId, ProtocolVersion,
    Publish, PublishProperties, QoS, RetainHandling, SubscriptionId, SubscriptionOptions,
    TopicFilter, TopicName,
};
use crate::session::OutboundMessage;
use crate::time::Timestamp;

/// One change of durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    /// This is now the topic's retained message (replacing any before it).
    Retain(RetainedMessage),
    /// The topic has no retained message any more: cleared by an empty
    /// payload [MQTT-3.3.1-6], expired, or no longer within the limits.
    Unretain(TopicName),
    /// This is now what is kept of a persistent session (replacing any
    /// record of its client id).
    Session(SessionRecord),
    /// The session of this client id ended: nothing of it is kept (its
    /// messages and inbound QoS 2 packet ids included).
    EndSession(Arc<str>),
    /// A QoS 1/2 message a persistent session is to get: kept until
    /// [`Persist::MessageDone`].
    Message(MessageRecord),
    /// A kept message was sent (or, QoS 2, released): a resume resends it
    /// with this packet id. Nothing when the message is not kept.
    MessageSent {
        /// The session's client id.
        client_id: Arc<str>,
        /// The message.
        seq: NonZeroU64,
        /// Its exchange now.
        state: SentState,
    },
    /// A kept message is done with: acknowledged, expired, or dropped.
    MessageDone {
        /// The session's client id.
        client_id: Arc<str>,
        /// The message.
        seq: NonZeroU64,
    },
    /// An inbound QoS 2 message of a persistent session was acknowledged
    /// with PUBREC: its packet id waits for PUBREL (a resend of the message
    /// is not routed again, even after a restart).
    AwaitingRelease {
        /// The session's client id.
        client_id: Arc<str>,
        /// The packet id.
        packet_id: PacketId,
    },
    /// Its PUBREL came: the packet id is free again.
    ReleaseReceived {
        /// The session's client id.
        client_id: Arc<str>,
        /// The packet id.
        packet_id: PacketId,
    },
    /// This is now what is kept of a will (replacing the record of its
    /// key): registered, triggered, or paused by a planned shutdown.
    Will(WillRecord),
    /// The will was decided (delivered or denied), cancelled or deleted:
    /// nothing of it is kept.
    WillDone {
        /// Its client id.
        client_id: Arc<str>,
        /// Its key.
        key: WillKey,
    },
}

impl Persist {
    /// Whether this change may become durable with a later commit instead
    /// of before what follows it: a crash that loses it costs a duplicate
    /// MQTT allows, never a loss. Only [`Persist::MessageDone`]: the
    /// message (PUBACKed, PUBCOMPed, expired or dropped) comes back with
    /// the state it was last sent in and is sent again — QoS 1 with DUP
    /// [MQTT-3.3.1-1], a released QoS 2 one as its PUBREL, which the client
    /// answers with PUBCOMP whatever it holds [MQTT-4.3.3].
    ///
    /// Nothing else may wait: a message sent whose record is lost would go
    /// again without DUP (QoS 2: under another packet id, delivered twice),
    /// and everything else is acknowledged to a client (a message, a
    /// retained one, a session, a packet id awaiting PUBREL, a will).
    pub fn may_wait(&self) -> bool {
        matches!(self, Self::MessageDone { .. })
    }
}

/// Which will of a client id a record is: the connection that registered
/// it, in the life of the process that served it. A client id may have
/// more than one (an old one waiting for its decision while a new
/// connection registers another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WillKey {
    /// The process's epoch: one more than the highest restored.
    pub epoch: u64,
    /// The connection's id in that process.
    pub conn: u64,
}

/// A will as it is stored: everything needed to authorize and send it
/// after a restart — never a token or a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillRecord {
    /// Its client id.
    pub client_id: Arc<str>,
    /// Its key.
    pub key: WillKey,
    /// The will as captured at CONNECT, with its properties.
    pub will: LastWill,
    /// The identity of the last successful (re)authentication, which it
    /// is authorized against when sent.
    pub identity: Arc<Identity>,
    /// Its session's expiry interval: the will waits for the smaller of its
    /// delay and this (§3.1.3.2.2).
    pub session_expiry_interval: u32,
    /// Where it stands.
    pub state: WillState,
}

/// Where a kept will stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WillState {
    /// Its connection is open. Found so at a restart, the broker went down
    /// without closing it: it is triggered then
    /// ([`WillTrigger::ServerCrashed`]), its delay counted from the
    /// restart.
    Armed,
    /// Triggered, due at a wall-clock date. Found so at a restart, it is
    /// sent then if the date passed, else at the date.
    Triggered {
        /// Why.
        trigger: WillTrigger,
        /// When.
        triggered_at: Timestamp,
        /// When it is due.
        due: Timestamp,
    },
    /// Triggered, and paused by a planned shutdown with `left` seconds of
    /// its delay to go: they run again from the restart.
    Paused {
        /// Why.
        trigger: WillTrigger,
        /// When.
        triggered_at: Timestamp,
        /// Seconds of its delay left.
        left: u32,
    },
}

/// A will record in its stored form (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct WillJson {
    client_id: String,
    session_expiry_interval: u32,
    identity: Identity,
    state: WillState,
    /// The will as a 5.0 CONNECT that carries it, base64.
    will: String,
}

impl WillRecord {
    /// The record, as JSON (its key is the store's).
    pub fn encode(&self) -> Vec<u8> {
        let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from_static("w"));
        connect.will = Some(self.will.clone());
        let mut bytes = Vec::new();
        // A will the hub accepted encodes.
        let _ = Packet::Connect(Box::new(connect)).encode(ProtocolVersion::V5, &mut bytes);
        let json = WillJson {
            client_id: self.client_id.to_string(),
            session_expiry_interval: self.session_expiry_interval,
            identity: (*self.identity).clone(),
            state: self.state,
            will: base64::engine::general_purpose::STANDARD.encode(&bytes),
        };
        serde_json::to_vec(&json).unwrap_or_default()
    }

    /// The record of key `key`, read back.
    ///
    /// # Errors
    /// [`BadRecord`] for bytes [`WillRecord::encode`] did not write.
    pub fn decode(key: WillKey, record: &[u8]) -> Result<Self, BadRecord> {
        let json: WillJson =
            serde_json::from_slice(record).map_err(|e| BadRecord(e.to_string()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&json.will)
            .map_err(|e| BadRecord(format!("the will: {e}")))?;
        let mut decoder = Decoder::new(u32::MAX);
        decoder.feed(&bytes);
        let will = match decoder.decode() {
            Ok(Some(Packet::Connect(c))) if decoder.buffered() == 0 => c.will,
            _ => None,
        }
        .ok_or_else(|| BadRecord("no will".into()))?;
        Ok(Self {
            client_id: json.client_id.into(),
            key,
            will,
            identity: Arc::new(json.identity),
            session_expiry_interval: json.session_expiry_interval,
            state: json.state,
        })
    }
}

/// A persistent session as it is stored: its subscriptions and when it
/// expires. (Its offline queue, in-flight messages and will are not kept
/// yet.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Its client id.
    pub client_id: Arc<str>,
    /// Its Session Expiry Interval in seconds (`u32::MAX`: never); after a
    /// planned stop, what was left of it.
    pub expiry_interval: u32,
    /// The wall-clock date it expires, once its client left; `None` while
    /// it is connected or paused by a planned stop (its expiry has not
    /// started, or stopped: it runs `expiry_interval` from the restart).
    pub expires_at: Option<Timestamp>,
    /// Its subscriptions, in the order they were made.
    pub subscriptions: Vec<StoredSubscription>,
    /// The identity of its last successful authentication (never a token
    /// or a key); `None` in records written before it was kept.
    pub identity: Option<Arc<Identity>>,
}

/// One subscription of a stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The filter as the client wrote it (`$share/…` included).
    pub filter: TopicFilter,
    /// Its options, the QoS granted.
    pub options: SubscriptionOptions,
    /// Its Subscription Identifier.
    pub id: Option<SubscriptionId>,
    /// What its grant carved out (deny rules beside it): never delivered
    /// through it.
    pub exclusions: crate::auth::Exclusions,
}

impl StoredSubscription {
    /// What the record keeps of a subscription in the tree.
    pub(super) fn of(sub: &super::tree::Sub) -> Self {
        Self {
            filter: sub.filter.clone(),
            options: sub.options,
            id: sub.id,
            exclusions: sub.exclusions.clone(),
        }
    }
}

/// A session record in its stored form (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct SessionJson {
    client_id: String,
    expiry_interval: u32,
    /// Milliseconds since the epoch.
    expires_at: Option<u64>,
    subscriptions: Vec<SubscriptionJson>,
    /// The identity of its last successful authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<Identity>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SubscriptionJson {
    filter: String,
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
    id: Option<u32>,
    /// Carved out of the grant (absent: none; older records).
    #[serde(default, skip_serializing_if = "crate::auth::Exclusions::is_empty")]
    exclusions: crate::auth::Exclusions,
}

impl SessionRecord {
    /// The record, as JSON.
    pub fn encode(&self) -> Vec<u8> {
        let json = SessionJson {
            client_id: self.client_id.to_string(),
            expiry_interval: self.expiry_interval,
            expires_at: self.expires_at.map(Timestamp::as_millis),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|s| SubscriptionJson {
                    filter: s.filter.as_str().to_owned(),
                    qos: s.options.qos as u8,
                    no_local: s.options.no_local,
                    retain_as_published: s.options.retain_as_published,
                    retain_handling: s.options.retain_handling as u8,
                    id: s.id.map(SubscriptionId::get),
                    exclusions: s.exclusions.clone(),
                })
                .collect(),
            identity: self.identity.as_deref().cloned(),
        };
        // Plain data: it always serializes.
        serde_json::to_vec(&json).unwrap_or_default()
    }

    /// A record read back.
    ///
    /// # Errors
    /// [`BadRecord`] for bytes [`SessionRecord::encode`] did not write.
    pub fn decode(record: &[u8]) -> Result<Self, BadRecord> {
        let json: SessionJson =
            serde_json::from_slice(record).map_err(|e| BadRecord(e.to_string()))?;
        let subscriptions = json
            .subscriptions
            .into_iter()
            .map(|s| {
                let bad = |what: &str| BadRecord(format!("{what} of {:?}", s.filter));
                Ok(StoredSubscription {
                    filter: TopicFilter::new(s.filter.clone()).map_err(|_| bad("the filter"))?,
                    options: SubscriptionOptions {
                        qos: QoS::from_bits(s.qos).ok_or_else(|| bad("the QoS"))?,
                        no_local: s.no_local,
                        retain_as_published: s.retain_as_published,
                        retain_handling: match s.retain_handling {
                            0 => RetainHandling::SendAtSubscribe,
                            1 => RetainHandling::SendAtSubscribeIfNew,
                            2 => RetainHandling::DoNotSend,
                            _ => return Err(bad("the retain handling")),
                        },
                    },
                    id: match s.id {
                        Some(v) => {
                            Some(SubscriptionId::new(v).ok_or_else(|| bad("the identifier"))?)
                        }
                        None => None,
                    },
                    exclusions: s.exclusions,
                })
            })
            .collect::<Result<Vec<_>, BadRecord>>()?;
        Ok(Self {
            client_id: json.client_id.into(),
            expiry_interval: json.expiry_interval,
            expires_at: json.expires_at.map(Timestamp::from_millis),
            subscriptions,
            identity: json.identity.map(Arc::new),
        })
    }
}

/// A retained message as it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedMessage {
    /// Its topic.
    pub topic: TopicName,
    /// Its payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// Its properties as published (the Message Expiry Interval as it was
    /// then; [`RetainedMessage::expires_at`] says when it ends).
    pub properties: PublishProperties,
    /// The wall-clock date its Message Expiry Interval ends, if it has one.
    pub expires_at: Option<Timestamp>,
}

/// Why a stored record cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stored record: {0}")]
pub struct BadRecord(String);

/// The wall-clock date marking "no expiry" in a record.
const NEVER: u64 = u64::MAX;

impl RetainedMessage {
    /// The record: the expiry date (8 bytes, big-endian milliseconds since
    /// the epoch, all ones for none), then the message as a 5.0 PUBLISH.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Publish::new(self.topic.clone(), self.payload.clone());
        p.qos = self.qos;
        p.retain = true;
        p.properties = self.properties.clone();
        encode_publish(self.expires_at, p)
    }

    /// A record read back.
    ///
    /// # Errors
    /// [`BadRecord`] for bytes [`RetainedMessage::encode`] did not write.
    pub fn decode(record: &[u8]) -> Result<Self, BadRecord> {
        let (expires_at, p) = decode_publish(record)?;
        let topic = p.topic.ok_or_else(|| BadRecord("no topic".into()))?;
        Ok(Self {
            topic,
            payload: p.payload,
            qos: p.qos,
            properties: p.properties,
            expires_at,
        })
    }
}

/// A QoS 1/2 message kept for a persistent session until it is done with
/// (acknowledged, expired, dropped, or its session ended): in its offline
/// queue, waiting for its window, or in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// The session's client id.
    pub client_id: Arc<str>,
    /// Its key within the session, in the order the session got them.
    pub seq: NonZeroU64,
    /// The message as it is delivered to this session (its QoS, retain
    /// flag and Subscription Identifiers).
    pub message: OutboundMessage,
    /// The wall-clock date its Message Expiry Interval ends, if it has one.
    pub expires_at: Option<Timestamp>,
}

impl MessageRecord {
    /// The message's part of the record, as [`RetainedMessage::encode`]
    /// writes it (the key holds the client id and the sequence number).
    pub fn encode_message(&self) -> Vec<u8> {
        let m = &self.message;
        let mut p = Publish::new(m.topic.clone(), m.payload.clone());
        p.qos = m.qos;
        p.retain = m.retain;
        p.properties = m.properties.clone();
        encode_publish(self.expires_at, p)
    }

    /// The record of `client_id`'s message `seq`, read back.
    ///
    /// # Errors
    /// [`BadRecord`] for bytes [`MessageRecord::encode_message`] did not
    /// write, or a QoS 0 message.
    pub fn decode_message(
        client_id: Arc<str>,
        seq: NonZeroU64,
        record: &[u8],
    ) -> Result<Self, BadRecord> {
        let (expires_at, p) = decode_publish(record)?;
        let topic = p.topic.ok_or_else(|| BadRecord("no topic".into()))?;
        if p.qos == QoS::AtMostOnce {
            return Err(BadRecord("a QoS 0 message".into()));
        }
        Ok(Self {
            client_id,
            seq,
            message: OutboundMessage {
                topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties: p.properties,
                seq: Some(seq),
            },
            expires_at,
        })
    }
}

/// Where a kept message's exchange stood: sent with a packet id, and for
/// QoS 2 whether its PUBREC came (then PUBREL is what is resent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentState {
    /// The packet identifier it was sent with.
    pub packet_id: PacketId,
    /// QoS 2: PUBREC received, PUBREL sent.
    pub released: bool,
}

impl SentState {
    /// Three bytes: the packet id, big-endian, then 1 when released.
    pub fn encode(self) -> [u8; 3] {
        let [hi, lo] = self.packet_id.get().to_be_bytes();
        [hi, lo, u8::from(self.released)]
    }

    /// The state read back; `None` when the message was not sent yet (all
    /// zeros) .
    ///
    /// # Errors
    /// [`BadRecord`] for bytes [`SentState::encode`] did not write.
    pub fn decode(bytes: [u8; 3]) -> Result<Option<Self>, BadRecord> {
        let [hi, lo, released] = bytes;
        let released = match released {
            0 => false,
            1 => true,
            _ => return Err(BadRecord("a sent state other than 0 or 1".into())),
        };
        match PacketId::new(u16::from_be_bytes([hi, lo])) {
            Some(packet_id) => Ok(Some(Self {
                packet_id,
                released,
            })),
            None if !released => Ok(None),
            None => Err(BadRecord("released without a packet id".into())),
        }
    }

    /// What a message not sent yet stores.
    pub const UNSENT: [u8; 3] = [0; 3];
}

/// A kept message as the store hands it back at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message.
    pub record: MessageRecord,
    /// Where its exchange stood; `None`: not sent yet.
    pub sent: Option<SentState>,
}

impl StoredMessage {
    /// The whole of it in one record (for a recording): the client id's
    /// length (2 bytes) and the client id, the sequence number (8 bytes),
    /// the [`SentState`] (3 bytes), then [`MessageRecord::encode_message`].
    pub fn encode(&self) -> Vec<u8> {
        let id = self.record.client_id.as_bytes();
        let len = u16::try_from(id.len()).unwrap_or(u16::MAX);
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&id[..usize::from(len)]);
        out.extend_from_slice(&self.record.seq.get().to_be_bytes());
        out.extend_from_slice(&self.sent.map_or(SentState::UNSENT, SentState::encode));
        out.extend_from_slice(&self.record.encode_message());
        out
    }

    /// What [`StoredMessage::encode`] wrote, read back.
    ///
    /// # Errors
    /// [`BadRecord`] for anything else.
    pub fn decode(record: &[u8]) -> Result<Self, BadRecord> {
        let short = || BadRecord("shorter than its header".into());
        let (len, rest) = record.split_first_chunk::<2>().ok_or_else(short)?;
        let len = usize::from(u16::from_be_bytes(*len));
        let (id, rest) = rest.split_at_checked(len).ok_or_else(short)?;
        let client_id =
            std::str::from_utf8(id).map_err(|_| BadRecord("a client id not UTF-8".into()))?;
        let (seq, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
        let seq =
            NonZeroU64::new(u64::from_be_bytes(*seq)).ok_or_else(|| BadRecord("seq 0".into()))?;
        let (sent, rest) = rest.split_first_chunk::<3>().ok_or_else(short)?;
        Ok(Self {
            sent: SentState::decode(*sent)?,
            record: MessageRecord::decode_message(client_id.into(), seq, rest)?,
        })
    }
}

/// What a store hands back at start, for [`super::Broker::restore_all`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// The retained messages.
    pub retained: Vec<RetainedMessage>,
    /// The persistent sessions.
    pub sessions: Vec<SessionRecord>,
    /// The messages kept for them.
    pub messages: Vec<StoredMessage>,
    /// Their inbound QoS 2 packet ids waiting for PUBREL.
    pub awaiting_release: Vec<(Arc<str>, PacketId)>,
    /// The wills.
    pub wills: Vec<WillRecord>,
}

/// A message as a 5.0 PUBLISH behind its expiry date (8 bytes, big-endian
/// milliseconds since the epoch, all ones for none).
fn encode_publish(expires_at: Option<Timestamp>, mut p: Publish) -> Vec<u8> {
    // A QoS 1/2 PUBLISH carries a packet id; this one is never sent.
    p.packet_id = (p.qos != QoS::AtMostOnce).then_some(PacketId::MIN);
    p.properties.topic_alias = None;
    let expires = expires_at.map_or(NEVER, Timestamp::as_millis);
    let mut out = expires.to_be_bytes().to_vec();
    // A message the hub accepted encodes: its size was checked then.
    let _ = Packet::Publish(p).encode(ProtocolVersion::V5, &mut out);
    out
}

/// What [`encode_publish`] wrote, read back.
fn decode_publish(record: &[u8]) -> Result<(Option<Timestamp>, Publish), BadRecord> {
    let (expires, packet) = record
        .split_first_chunk::<8>()
        .ok_or_else(|| BadRecord("shorter than its header".into()))?;
    let expires = u64::from_be_bytes(*expires);
    let mut decoder = Decoder::new(u32::MAX).with_version(ProtocolVersion::V5);
    decoder.feed(packet);
    let p = match decoder.decode() {
        Ok(Some(Packet::Publish(p))) => p,
        Ok(Some(other)) => return Err(BadRecord(format!("a {:?}", other.packet_type()))),
        Ok(None) => return Err(BadRecord("a truncated PUBLISH".into())),
        Err(e) => return Err(BadRecord(e.to_string())),
    };
    if decoder.buffered() != 0 {
        return Err(BadRecord("bytes after the PUBLISH".into()));
    }
    Ok((
        (expires != NEVER).then(|| Timestamp::from_millis(expires)),
        p,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::MqttString;

    #[test]
    fn a_record_reads_back_as_it_was_written_and_garbage_does_not() {
        let mut properties = PublishProperties {
            message_expiry_interval: Some(60),
            ..PublishProperties::default()
        };
        properties.content_type = Some(MqttString::from_static("text/plain"));
        let msg = RetainedMessage {
            topic: TopicName::from_static("trusted/a/server/state"),
            payload: Bytes::from_static(b"down"),
            qos: QoS::AtLeastOnce,
            properties,
            expires_at: Some(Timestamp::from_secs(1_800_000_060)),
        };
        assert_eq!(RetainedMessage::decode(&msg.encode()).unwrap(), msg);
        let plain = RetainedMessage {
            qos: QoS::AtMostOnce,
            properties: PublishProperties::default(),
            expires_at: None,
            ..msg.clone()
        };
        assert_eq!(RetainedMessage::decode(&plain.encode()).unwrap(), plain);

        let record = msg.encode();
        assert!(RetainedMessage::decode(&record[..5]).is_err());
        assert!(RetainedMessage::decode(&record[..record.len() - 1]).is_err());
        let mut longer = record.clone();
        longer.push(0);
        assert!(RetainedMessage::decode(&longer).is_err());
        let mut flipped = record;
        flipped[8] = 0xe0; // a DISCONNECT's first byte
        assert!(RetainedMessage::decode(&flipped).is_err());
    }

    #[test]
    fn a_stored_message_reads_back_as_it_was_written_and_garbage_does_not() {
        let seq = NonZeroU64::new(42).unwrap();
        let mut properties = PublishProperties {
            message_expiry_interval: Some(60),
            ..PublishProperties::default()
        };
        properties.subscription_identifiers =
            [SubscriptionId::new(5).unwrap()].into_iter().collect();
        let stored = StoredMessage {
            record: MessageRecord {
                client_id: "sensor-7".into(),
                seq,
                message: OutboundMessage {
                    topic: TopicName::from_static("trusted/a/server/state"),
                    payload: Bytes::from_static(b"down"),
                    qos: QoS::ExactlyOnce,
                    retain: true,
                    properties,
                    seq: Some(seq),
                },
                expires_at: Some(Timestamp::from_secs(1_800_000_060)),
            },
            sent: Some(SentState {
                packet_id: PacketId::new(300).unwrap(),
                released: true,
            }),
        };
        let record = stored.encode();
        assert_eq!(StoredMessage::decode(&record).unwrap(), stored);
        for cut in [1, 5, 14, 17, record.len() - 1] {
            assert!(StoredMessage::decode(&record[..cut]).is_err(), "{cut}");
        }
        assert!(
            SentState::decode([0, 0, 1]).is_err(),
            "released, never sent"
        );
        assert!(SentState::decode([0, 1, 2]).is_err());
        assert_eq!(SentState::decode(SentState::UNSENT), Ok(None));
        let mut qos0 = stored.record.clone();
        qos0.message.qos = QoS::AtMostOnce;
        assert!(MessageRecord::decode_message("x".into(), seq, &qos0.encode_message()).is_err());
    }

    /// The will of `client_id`, kept in `state`.
    pub(crate) fn will_record(client_id: &str, conn: u64, state: WillState) -> WillRecord {
        let mut will = LastWill {
            topic: TopicName::from_static("trusted/a/server/state"),
            payload: Bytes::from_static(b"down"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
        };
        will.properties.will_delay_interval = Some(30);
        will.properties.content_type = Some(MqttString::from_static("text/plain"));
        let identity = Identity {
            principal: "a".into(),
            client_id: client_id.into(),
            grants: Arc::new(crate::auth::Grants::default()),
            expires_at: Some(Timestamp::from_secs(1_800_003_600)),
            method: crate::auth::AuthMethod::Password,
            authenticated_at: Timestamp::from_secs(1_800_000_000),
            token_digest: None,
        };
        WillRecord {
            client_id: client_id.into(),
            key: WillKey { epoch: 2, conn },
            will,
            identity: Arc::new(identity),
            session_expiry_interval: 300,
            state,
        }
    }

    #[test]
    fn a_will_record_reads_back_as_it_was_written_and_a_bad_one_does_not() {
        for state in [
            WillState::Armed,
            WillState::Triggered {
                trigger: WillTrigger::KeepAliveTimeout,
                triggered_at: Timestamp::from_secs(1_800_000_010),
                due: Timestamp::from_secs(1_800_000_040),
            },
            WillState::Paused {
                trigger: WillTrigger::Shutdown,
                triggered_at: Timestamp::from_secs(1_800_000_010),
                left: 20,
            },
        ] {
            let record = will_record("sensor-7", 9, state);
            let bytes = record.encode();
            assert_eq!(WillRecord::decode(record.key, &bytes).unwrap(), record);
            let text = String::from_utf8(bytes).unwrap();
            for bad in [
                text.replace("\"will\":\"", "\"will\":\"AAAA"),
                text[..text.len() - 2].to_owned(),
            ] {
                assert!(
                    WillRecord::decode(record.key, bad.as_bytes()).is_err(),
                    "{bad}"
                );
            }
        }
    }

    #[test]
    fn a_session_record_reads_back_as_it_was_written_and_a_bad_one_does_not() {
        let record = SessionRecord {
            client_id: "sensor-7".into(),
            identity: Some(will_record("sensor-7", 1, WillState::Armed).identity),
            expiry_interval: 300,
            expires_at: Some(Timestamp::from_secs(1_800_000_300)),
            subscriptions: vec![
                StoredSubscription {
                    filter: TopicFilter::new("trusted/+/state").unwrap(),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                    id: SubscriptionId::new(42),
                    exclusions: crate::auth::Exclusions::new(vec![
                        TopicFilter::new("trusted/hidden/state").unwrap(),
                    ]),
                },
                StoredSubscription {
                    filter: TopicFilter::new("$share/g/jobs/#").unwrap(),
                    options: SubscriptionOptions::default(),
                    id: None,
                    exclusions: Default::default(),
                },
            ],
        };
        assert_eq!(SessionRecord::decode(&record.encode()).unwrap(), record);
        let text = String::from_utf8(record.encode()).unwrap();
        for bad in [
            text.replace("trusted/+/state", "a/#/b"),
            text.replace("\"qos\":1", "\"qos\":3"),
            text.replace("\"id\":42", "\"id\":0"),
            text[..text.len() - 2].to_owned(),
        ] {
            assert!(SessionRecord::decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
