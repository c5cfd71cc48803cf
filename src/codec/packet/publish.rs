//! PUBLISH (§3.3).

use std::num::NonZeroU16;

use bytes::{Buf, BufMut, Bytes};

use crate::codec::error::{DecodeError, EncodeError};
use crate::codec::primitives::{Reader, prefixed_len, put_binary};
use crate::codec::properties::PublishProperties;
use crate::codec::topic::TopicName;
use crate::codec::{PacketId, PacketType, ProtocolVersion, QoS};

/// PUBLISH: an application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this may be a re-delivery [MQTT-3.3.1-1]. Never set at QoS 0.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic Name. `None` only in 5.0 when a Topic Alias stands in for it.
    pub topic: Option<TopicName>,
    /// Packet identifier: present exactly when QoS is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (5.0 only).
    pub properties: PublishProperties,
    /// Application payload, shared with the input buffer.
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0 message without properties.
    pub fn new(topic: TopicName, payload: impl Into<Bytes>) -> Self {
        Self {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: Some(topic),
            packet_id: None,
            properties: PublishProperties::default(),
            payload: payload.into(),
        }
    }

    /// Decodes the PUBLISH whose body starts at `start` in `frame`. The
    /// frame is taken by value: the payload is what is left of it, moved
    /// rather than shared, so a message costs one reference for its topic.
    #[inline(always)] // built in place by the caller: the hot path of every broker
    pub(crate) fn decode(
        flags: u8,
        frame: Bytes,
        start: usize,
        v: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let dup = flags & 0b1000 != 0;
        let qos = QoS::from_bits((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
        let retain = flags & 0b0001 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupOnQoS0);
        }
        let mut r = Reader::at(&frame, start);
        let topic_len = r.binary_slice()?.len();
        // Checked in wire order; only an empty name waits for the properties,
        // where a Topic Alias may stand in for it (§3.3.2.3.4).
        let named = if topic_len == 0 {
            None
        } else {
            let end = r.position();
            Some(TopicName::decode(frame.slice(end - topic_len..end))?)
        };
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)?)
        };
        let properties = match v {
            // Most publishes carry none: an empty block is one zero byte,
            // read without the block decoder (whose result, returned
            // through memory, stalled the copy that followed).
            ProtocolVersion::V5 if r.peek_u8() == Some(0) => {
                r.u8()?;
                PublishProperties::default()
            }
            ProtocolVersion::V5 => PublishProperties::decode(&mut r)?,
            ProtocolVersion::V311 => PublishProperties::default(),
        };
        if named.is_none() && properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicName);
        }
        let payload_start = r.position();
        let mut payload = frame;
        payload.advance(payload_start);
        Ok(Self {
            dup,
            qos,
            retain,
            topic: named,
            packet_id,
            properties,
            payload,
        })
    }

    /// The packet as borrowed parts, for encoding.
    pub fn view(&self) -> PublishView<'_> {
        PublishView {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.as_ref(),
            packet_id: self.packet_id,
            topic_alias: self.properties.topic_alias,
            properties: &self.properties,
            payload: &self.payload,
        }
    }

    pub(crate) fn first_byte(&self) -> u8 {
        self.view().first_byte()
    }

    pub(crate) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        self.view().body_len(v)
    }

    pub(crate) fn put_body<B: BufMut>(&self, v: ProtocolVersion, b: &mut B) {
        self.view().put_body(v, b);
    }
}

/// A PUBLISH to encode from borrowed parts: what a broker sends from a
/// message it keeps, without cloning the message into a [`Publish`] first.
#[derive(Debug, Clone, Copy)]
pub struct PublishView<'a> {
    /// DUP.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic Name; `None` only in 5.0 with a Topic Alias.
    pub topic: Option<&'a TopicName>,
    /// Packet identifier: present exactly when QoS is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// The Topic Alias sent, in place of the one in `properties`.
    pub topic_alias: Option<NonZeroU16>,
    /// The other 5.0 properties.
    pub properties: &'a PublishProperties,
    /// Application payload.
    pub payload: &'a [u8],
}

impl PublishView<'_> {
    pub(crate) fn first_byte(&self) -> u8 {
        ((PacketType::Publish as u8) << 4)
            | (u8::from(self.dup) << 3)
            | ((self.qos as u8) << 1)
            | u8::from(self.retain)
    }

    pub(crate) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            return Err(EncodeError::PacketIdMismatch);
        }
        let topic_len = match self.topic {
            Some(t) => t.len(),
            None if v == ProtocolVersion::V5 && self.topic_alias.is_some() => 0,
            None => return Err(EncodeError::MissingTopic),
        };
        let mut len = prefixed_len(topic_len)? + self.payload.len();
        if self.packet_id.is_some() {
            len += 2;
        }
        if v == ProtocolVersion::V5 {
            len += self.properties.block_len_with(self.topic_alias)?;
        }
        Ok(len)
    }

    pub(crate) fn put_body<B: BufMut>(&self, v: ProtocolVersion, b: &mut B) {
        match self.topic {
            Some(t) => put_binary(b, t.as_bytes()),
            None => b.put_u16(0),
        }
        if let Some(id) = self.packet_id {
            b.put_u16(id.get());
        }
        if v == ProtocolVersion::V5 {
            self.properties.put_block_with(self.topic_alias, b);
        }
        b.put_slice(self.payload);
    }
}
