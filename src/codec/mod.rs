//! The MQTT 3.1.1 and 5.0 wire format: every packet, decoded and encoded.
//!
//! - [`Decoder`] turns a byte stream arriving in any split into [`Packet`]s.
//!   An incomplete frame is "need more bytes" (`Ok(None)`), never an error;
//!   the fixed header is checked against the maximum packet size before the
//!   body is buffered.
//! - Topic names, payloads and strings of a decoded packet share the input
//!   buffer ([`bytes::Bytes`]): decoding a QoS 0/1 PUBLISH without properties
//!   allocates nothing.
//! - [`Encode`] writes any packet into a caller-provided [`BufMut`], and tells
//!   its exact size first so a peer's Maximum Packet Size can be respected.
//! - Every fault is a [`DecodeError`] that names the reason code it earns.

mod decoder;
mod error;
mod packet;
mod primitives;
pub mod properties;
mod reason;
pub(crate) mod string;
mod topic;

use std::fmt;
use std::num::NonZeroU16;

pub use bytes::{BufMut, Bytes, BytesMut};

pub use decoder::{Decoder, FixedHeader, decode_packet, parse_fixed_header};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PubAck, PubComp, PubRec, PubRel, Publish,
    PublishView, RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck,
    Unsubscribe,
};
pub use primitives::VARINT_MAX;
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PayloadFormat, Properties, PropertySet, PublishExtras, PublishProperties, SubscribeProperties,
    SubscriptionId, UnsubscribeProperties, UserProperties, UserProperty, UserPropertyRef,
    WillProperties,
};
pub use reason::{
    AuthReasonCode, ConnectReasonCode, ConnectReturnCode, DisconnectReasonCode, PubAckReasonCode,
    PubCompReasonCode, PubRecReasonCode, PubRelReasonCode, SubAckReasonCode, UnsubAckReasonCode,
};
pub use string::{InvalidString, MqttString};
pub(crate) use topic::filter_matches;
pub use topic::{InvalidTopic, SharedSubscription, TopicFilter, TopicName};

/// The protocol version a connection speaks, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl ProtocolVersion {
    /// The Protocol Level byte of CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }

    /// The version for a Protocol Level byte, if supported.
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            4 => Some(Self::V311),
            5 => Some(Self::V5),
            _ => None,
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V311 => "MQTT 3.1.1",
            Self::V5 => "MQTT 5.0",
        })
    }
}

/// Quality of service of a message or subscription (§4.3).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum QoS {
    /// At most once delivery.
    #[default]
    AtMostOnce = 0,
    /// At least once delivery.
    AtLeastOnce = 1,
    /// Exactly once delivery.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its two-bit value; 3 is not a QoS.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// The control packet types (MQTT 5.0 Table 2-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    /// MQTT 5.0 only.
    Auth = 15,
}

impl PacketType {
    /// The type for the high nibble of the first byte; 0 is reserved.
    pub const fn from_nibble(n: u8) -> Option<Self> {
        Some(match n {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            15 => Self::Auth,
            _ => return None,
        })
    }

    /// The flag bits every packet but PUBLISH must carry [MQTT-2.1.3-1].
    pub const fn required_flags(self) -> Option<u8> {
        match self {
            Self::Publish => None,
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => Some(0b0010),
            _ => Some(0),
        }
    }
}

/// A non-zero packet identifier [MQTT-2.2.1-3].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// The smallest identifier, 1.
    pub const MIN: Self = Self(NonZeroU16::MIN);

    /// The identifier, unless `value` is 0.
    pub const fn new(value: u16) -> Option<Self> {
        match NonZeroU16::new(value) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// Its value.
    pub const fn get(self) -> u16 {
        self.0.get()
    }
}

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// Encoding of a packet for a given protocol version.
pub trait Encode {
    /// Size of the whole packet on the wire, fixed header included.
    ///
    /// # Errors
    /// [`EncodeError`] when the packet cannot be carried by MQTT.
    fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError>;

    /// Writes the whole packet and returns its size. Nothing is written when
    /// it fails.
    ///
    /// # Errors
    /// [`EncodeError`] when the packet cannot be carried by MQTT.
    fn encode<B: BufMut>(
        &self,
        version: ProtocolVersion,
        buf: &mut B,
    ) -> Result<usize, EncodeError>;

    /// The packet as a fresh byte vector.
    ///
    /// # Errors
    /// [`EncodeError`] when the packet cannot be carried by MQTT.
    fn to_vec(&self, version: ProtocolVersion) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len(version)?);
        self.encode(version, &mut out)?;
        Ok(out)
    }
}
