//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK (§3.8 – §3.11).

use bytes::BufMut;

use super::ack::read_packet_id;
use crate::codec::error::{DecodeError, EncodeError};
use crate::codec::primitives::{Reader, prefixed_len, put_binary};
use crate::codec::properties::{
    AckProperties, Properties, SubscribeProperties, UnsubscribeProperties, decode_block,
};
use crate::codec::reason::{SubAckReasonCode, UnsubAckReasonCode};
use crate::codec::topic::TopicFilter;
use crate::codec::{PacketId, PacketType, ProtocolVersion, QoS};

/// Retain Handling subscription option (§3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send them only if the subscription did not already exist.
    SendAtSubscribeIfNew = 1,
    /// Do not send retained messages at subscribe.
    DoNotSend = 2,
}

/// Subscription Options (§3.8.3.1). In 3.1.1 only `qos` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the client wants.
    pub qos: QoS,
    /// Do not receive one's own publications [MQTT-3.8.3-3].
    pub no_local: bool,
    /// Keep the RETAIN flag as published.
    pub retain_as_published: bool,
    /// When retained messages are sent.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    fn decode(byte: u8, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = match v {
            ProtocolVersion::V5 => 0b1100_0000,
            ProtocolVersion::V311 => 0b1111_1100,
        };
        if byte & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions);
        }
        let qos = QoS::from_bits(byte & 0b11).ok_or(DecodeError::InvalidQoS)?;
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendAtSubscribeIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(Self {
            qos,
            no_local: byte & 0b0100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }

    fn encode(&self, v: ProtocolVersion) -> u8 {
        let qos = self.qos as u8;
        match v {
            ProtocolVersion::V311 => qos,
            ProtocolVersion::V5 => {
                qos | (u8::from(self.no_local) << 2)
                    | (u8::from(self.retain_as_published) << 3)
                    | ((self.retain_handling as u8) << 4)
            }
        }
    }
}

/// One topic filter of a SUBSCRIBE and the options asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The filter.
    pub filter: TopicFilter,
    /// Its options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE: a client asks for subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// SUBSCRIBE properties (5.0 only).
    pub properties: Properties<SubscribeProperties>,
    /// The filters, at least one [MQTT-3.8.3-2].
    pub subscriptions: Vec<Subscription>,
}

impl Subscribe {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = match v {
            ProtocolVersion::V5 => decode_block(r, PacketType::Subscribe)?,
            ProtocolVersion::V311 => Properties::default(),
        };
        let mut subscriptions = Vec::new();
        while !r.is_empty() {
            let filter = TopicFilter::decode(r.binary()?)?;
            let options = SubscriptionOptions::decode(r.u8()?, v)?;
            if options.no_local && filter.shared().is_some() {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            subscriptions.push(Subscription { filter, options });
        }
        if subscriptions.is_empty() {
            return Err(DecodeError::NoTopicFilters);
        }
        Ok(Self {
            packet_id,
            properties,
            subscriptions,
        })
    }

    pub(crate) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.subscriptions.is_empty() {
            return Err(EncodeError::EmptyList);
        }
        let mut len = 2;
        if v == ProtocolVersion::V5 {
            len += self.properties.block_len()?;
        }
        for s in &self.subscriptions {
            len += prefixed_len(s.filter.len())? + 1;
        }
        Ok(len)
    }

    pub(crate) fn put_body<B: BufMut>(&self, v: ProtocolVersion, b: &mut B) {
        b.put_u16(self.packet_id.get());
        if v == ProtocolVersion::V5 {
            self.properties.put_block(b);
        }
        for s in &self.subscriptions {
            put_binary(b, s.filter.as_bytes());
            b.put_u8(s.options.encode(v));
        }
    }
}

/// SUBACK: one reason code per filter of the SUBSCRIBE, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Reason String and User Properties (5.0 only).
    pub properties: Properties<AckProperties>,
    /// Granted QoS or failure, per filter. 3.1.1 sends every failure as 0x80.
    pub reason_codes: Vec<SubAckReasonCode>,
}

impl SubAck {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = match v {
            ProtocolVersion::V5 => decode_block(r, PacketType::SubAck)?,
            ProtocolVersion::V311 => Properties::default(),
        };
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = r.u8()?;
            let reason = SubAckReasonCode::from_code(code)
                .filter(|c| v == ProtocolVersion::V5 || c.v311_code() == code)
                .ok_or(DecodeError::InvalidReasonCode {
                    packet_type: PacketType::SubAck,
                    code,
                })?;
            reason_codes.push(reason);
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::NoReasonCodes);
        }
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(crate) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.reason_codes.is_empty() {
            return Err(EncodeError::EmptyList);
        }
        let props = match v {
            ProtocolVersion::V5 => self.properties.block_len()?,
            ProtocolVersion::V311 => 0,
        };
        Ok(2 + props + self.reason_codes.len())
    }

    pub(crate) fn put_body<B: BufMut>(&self, v: ProtocolVersion, b: &mut B) {
        b.put_u16(self.packet_id.get());
        match v {
            ProtocolVersion::V5 => {
                self.properties.put_block(b);
                for c in &self.reason_codes {
                    b.put_u8(c.code());
                }
            }
            ProtocolVersion::V311 => {
                for c in &self.reason_codes {
                    b.put_u8(c.v311_code());
                }
            }
        }
    }
}

/// UNSUBSCRIBE: a client removes subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// UNSUBSCRIBE properties (5.0 only).
    pub properties: Properties<UnsubscribeProperties>,
    /// The filters, at least one [MQTT-3.10.3-2].
    pub filters: Vec<TopicFilter>,
}

impl Unsubscribe {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = match v {
            ProtocolVersion::V5 => decode_block(r, PacketType::Unsubscribe)?,
            ProtocolVersion::V311 => Properties::default(),
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(TopicFilter::decode(r.binary()?)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters);
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyList);
        }
        let mut len = 2;
        if v == ProtocolVersion::V5 {
            len += self.properties.block_len()?;
        }
        for f in &self.filters {
            len += prefixed_len(f.len())?;
        }
        Ok(len)
    }

    pub(crate) fn put_body<B: BufMut>(&self, v: ProtocolVersion, b: &mut B) {
        b.put_u16(self.packet_id.get());
        if v == ProtocolVersion::V5 {
            self.properties.put_block(b);
        }
        for f in &self.filters {
            put_binary(b, f.as_bytes());
        }
    }
}

/// UNSUBACK: in 5.0 one reason code per filter; in 3.1.1 just the identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Reason String and User Properties (5.0 only).
    pub properties: Properties<AckProperties>,
    /// One code per filter (5.0 only; empty when decoded from 3.1.1).
    pub reason_codes: Vec<UnsubAckReasonCode>,
}

impl UnsubAck {
    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let mut ack = Self {
            packet_id,
            properties: Properties::default(),
            reason_codes: Vec::new(),
        };
        if v == ProtocolVersion::V5 {
            ack.properties = decode_block(r, PacketType::UnsubAck)?;
            ack.reason_codes.reserve(r.remaining());
            while !r.is_empty() {
                let code = r.u8()?;
                ack.reason_codes
                    .push(UnsubAckReasonCode::from_code(code).ok_or(
                        DecodeError::InvalidReasonCode {
                            packet_type: PacketType::UnsubAck,
                            code,
                        },
                    )?);
            }
            if ack.reason_codes.is_empty() {
                return Err(DecodeError::NoReasonCodes);
            }
        }
        Ok(ack)
    }

    pub(crate) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        match v {
            ProtocolVersion::V311 => Ok(2),
            ProtocolVersion::V5 if self.reason_codes.is_empty() => Err(EncodeError::EmptyList),
            ProtocolVersion::V5 => Ok(2 + self.properties.block_len()? + self.reason_codes.len()),
        }
    }

    pub(crate) fn put_body<B: BufMut>(&self, v: ProtocolVersion, b: &mut B) {
        b.put_u16(self.packet_id.get());
        if v == ProtocolVersion::V5 {
            self.properties.put_block(b);
            for c in &self.reason_codes {
                b.put_u8(c.code());
            }
        }
    }
}
