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
//! Retained messages are durable today; sessions, offline queues, in-flight
//! messages and wills follow (issue 19).
//!
//! A stored record is a plain MQTT 5.0 PUBLISH with every property, behind
//! the wall-clock date its Message Expiry Interval ends: the monotonic clock
//! starts anew with the process, so a date is the only thing an expiry can
//! be kept as across a restart.

use crate::codec::{
    Bytes, Decoder, Encode, Packet, PacketId, ProtocolVersion, Publish, PublishProperties, QoS,
    TopicName,
};
use crate::time::Timestamp;

/// One change of durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    /// This is now the topic's retained message (replacing any before it).
    Retain(RetainedMessage),
    /// The topic has no retained message any more: cleared by an empty
    /// payload [MQTT-3.3.1-6], expired, or no longer within the limits.
    Unretain(TopicName),
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
#[error("not a stored retained message: {0}")]
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
        // A QoS 1/2 PUBLISH carries a packet id; this one is never sent.
        p.packet_id = (self.qos != QoS::AtMostOnce).then_some(PacketId::MIN);
        p.properties = self.properties.clone();
        p.properties.topic_alias = None;
        let expires = self.expires_at.map_or(NEVER, Timestamp::as_millis);
        let mut out = expires.to_be_bytes().to_vec();
        // A message the hub accepted encodes: its size was checked then.
        let _ = Packet::Publish(p).encode(ProtocolVersion::V5, &mut out);
        out
    }

    /// A record read back.
    ///
    /// # Errors
    /// [`BadRecord`] for bytes [`RetainedMessage::encode`] did not write.
    pub fn decode(record: &[u8]) -> Result<Self, BadRecord> {
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
        let topic = p.topic.ok_or_else(|| BadRecord("no topic".into()))?;
        Ok(Self {
            topic,
            payload: p.payload,
            qos: p.qos,
            properties: p.properties,
            expires_at: (expires != NEVER).then(|| Timestamp::from_millis(expires)),
        })
    }
}

#[cfg(test)]
mod tests {
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
}
