//! What can go wrong on the wire, and which reason code each fault earns.
//!
//! A [`DecodeError`] is always the peer's fault: the host turns it into the
//! reason code it names and a clean close. An [`EncodeError`] means the
//! program asked to encode something MQTT cannot carry.

use thiserror::Error;

use super::PacketType;
use super::reason::{ConnectReasonCode, DisconnectReasonCode};

/// A packet the peer sent breaks the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A variable byte integer longer than four bytes or not minimally encoded [MQTT-1.5.5-1].
    #[error("malformed variable byte integer")]
    InvalidVarint,
    /// Packet type 0, or AUTH (15) in MQTT 3.1.1.
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    /// Reserved bits of the fixed header are not as the packet type requires [MQTT-2.1.3-1].
    #[error("invalid fixed header flags {flags:#06b} for {packet_type:?}")]
    InvalidFixedHeaderFlags {
        /// The packet whose flags are wrong.
        packet_type: PacketType,
        /// The four flag bits received.
        flags: u8,
    },
    /// The packet is larger than the Maximum Packet Size in force.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Size of the whole packet, fixed header included.
        size: usize,
        /// The configured maximum.
        max: u32,
    },
    /// A field runs past the end of the packet.
    #[error("packet ends inside a field")]
    Truncated,
    /// Bytes remain after the last field of the packet.
    #[error("unexpected bytes after the end of the packet")]
    TrailingBytes,
    /// A UTF-8 string field is not well-formed UTF-8 [MQTT-1.5.4-1].
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A UTF-8 string field contains U+0000 [MQTT-1.5.4-2].
    #[error("string contains U+0000")]
    NullCharacter,
    /// CONNECT names a protocol or level other than MQTT 3.1.1 / 5.0.
    #[error("unsupported protocol (name ok: {name_ok}, level {level})")]
    UnsupportedProtocol {
        /// Whether the protocol name was "MQTT".
        name_ok: bool,
        /// The protocol level byte.
        level: u8,
    },
    /// The CONNECT reserved flag is set [MQTT-3.1.2-3].
    #[error("CONNECT reserved flag is set")]
    ConnectReservedFlag,
    /// A QoS field holds 3 [MQTT-3.3.1-4], [MQTT-3.1.2-12].
    #[error("QoS 3 is not a QoS")]
    InvalidQoS,
    /// Will QoS or Will Retain set while the Will Flag is 0 [MQTT-3.1.2-11], [MQTT-3.1.2-13].
    #[error("will QoS or retain set without the will flag")]
    WillFlagsWithoutWill,
    /// 3.1.1: password flag set without the user name flag [MQTT-3.1.2-22].
    #[error("password flag set without user name flag")]
    PasswordWithoutUsername,
    /// A PUBLISH of QoS 0 has DUP set [MQTT-3.3.1-2].
    #[error("DUP set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A packet identifier of 0 where one is required [MQTT-2.2.1-3].
    #[error("packet identifier 0")]
    ZeroPacketId,
    /// A topic name contains `+` or `#` [MQTT-3.3.2-2].
    #[error("wildcard in topic name")]
    WildcardInTopicName,
    /// A topic name is empty (v5: and no Topic Alias stands in for it) [MQTT-4.7.3-1].
    #[error("empty topic name")]
    EmptyTopicName,
    /// A topic filter is empty or places a wildcard wrongly [MQTT-4.7.1-1..3].
    #[error("invalid topic filter")]
    InvalidTopicFilter,
    /// `$share/` with an empty or invalid share name or no filter [MQTT-4.8.2-1], [MQTT-4.8.2-2].
    #[error("invalid shared subscription")]
    InvalidSharedSubscription,
    /// No Local set on a shared subscription [MQTT-3.8.3-4].
    #[error("No Local on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// Reserved bits set in subscription options, or 3.1.1 option bits used [MQTT-3.8.3-5].
    #[error("reserved bits set in subscription options")]
    InvalidSubscriptionOptions,
    /// Retain Handling of 3 [MQTT-3.8.3.1].
    #[error("retain handling 3")]
    InvalidRetainHandling,
    /// SUBSCRIBE or UNSUBSCRIBE without a topic filter [MQTT-3.8.3-2], [MQTT-3.10.3-2].
    #[error("no topic filter in SUBSCRIBE/UNSUBSCRIBE")]
    NoTopicFilters,
    /// SUBACK or UNSUBACK without a reason code.
    #[error("no reason code in SUBACK/UNSUBACK")]
    NoReasonCodes,
    /// A property identifier the specification does not define.
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u32),
    /// A property this packet may not carry (§2.2.2.2: a Malformed Packet).
    #[error("property {id:#04x} is not allowed in {packet_type:?}")]
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// The packet carrying it.
        packet_type: PacketType,
    },
    /// A property that may appear once appears again.
    #[error("property {0:#04x} repeated")]
    DuplicateProperty(u8),
    /// A property value outside what the specification allows (0 where it is
    /// forbidden, a boolean other than 0 or 1, Maximum QoS 2…).
    #[error("invalid value for property {0:#04x}")]
    InvalidPropertyValue(u8),
    /// Authentication Data without an Authentication Method (§3.1.2.11.10).
    #[error("authentication data without authentication method")]
    AuthDataWithoutMethod,
    /// A reason code this packet type does not define.
    #[error("reason code {code:#04x} is not valid in {packet_type:?}")]
    InvalidReasonCode {
        /// The packet carrying it.
        packet_type: PacketType,
        /// The byte received.
        code: u8,
    },
    /// CONNACK acknowledge flags with reserved bits set [MQTT-3.2.2-1].
    #[error("reserved CONNACK acknowledge flags set")]
    InvalidConnAckFlags,
    /// A packet other than CONNECT before the protocol version is known.
    #[error("{0:?} before CONNECT")]
    VersionUnknown(PacketType),
}

impl DecodeError {
    /// The MQTT 5.0 reason code this fault is reported with in a DISCONNECT.
    pub const fn reason_code(&self) -> DisconnectReasonCode {
        use DisconnectReasonCode as R;
        match self {
            Self::PacketTooLarge { .. } => R::PacketTooLarge,
            Self::WildcardInTopicName => R::TopicNameInvalid,
            Self::ZeroPacketId
            | Self::EmptyTopicName
            | Self::InvalidSharedSubscription
            | Self::NoLocalOnSharedSubscription
            | Self::InvalidRetainHandling
            | Self::NoTopicFilters
            | Self::NoReasonCodes
            | Self::DuplicateProperty(_)
            | Self::InvalidPropertyValue(_)
            | Self::AuthDataWithoutMethod
            | Self::InvalidReasonCode { .. }
            | Self::VersionUnknown(_) => R::ProtocolError,
            // Unsupported protocols are answered with a CONNACK, never a
            // DISCONNECT; this arm only keeps the mapping total.
            Self::UnsupportedProtocol { .. }
            | Self::InvalidVarint
            | Self::InvalidPacketType(_)
            | Self::InvalidFixedHeaderFlags { .. }
            | Self::Truncated
            | Self::TrailingBytes
            | Self::InvalidUtf8
            | Self::NullCharacter
            | Self::ConnectReservedFlag
            | Self::InvalidQoS
            | Self::WillFlagsWithoutWill
            | Self::PasswordWithoutUsername
            | Self::DupOnQoS0
            | Self::InvalidTopicFilter
            | Self::InvalidSubscriptionOptions
            | Self::UnknownProperty(_)
            | Self::PropertyNotAllowed { .. }
            | Self::InvalidConnAckFlags => R::MalformedPacket,
        }
    }

    /// The MQTT 5.0 CONNACK reason code for this fault found in a CONNECT.
    ///
    /// In 3.1.1 only [`DecodeError::UnsupportedProtocol`] earns a CONNACK
    /// (return code 0x01); every other CONNECT fault is a plain close.
    pub const fn connect_reason_code(&self) -> ConnectReasonCode {
        use ConnectReasonCode as C;
        match self {
            Self::UnsupportedProtocol { .. } => C::UnsupportedProtocolVersion,
            Self::PacketTooLarge { .. } => C::PacketTooLarge,
            Self::WildcardInTopicName => C::TopicNameInvalid,
            _ => match self.reason_code() {
                DisconnectReasonCode::ProtocolError => C::ProtocolError,
                _ => C::MalformedPacket,
            },
        }
    }
}

/// A value the program asked to encode cannot be carried by MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A binary field longer than 65,535 bytes.
    #[error("field of {len} bytes exceeds 65535")]
    FieldTooLong {
        /// Its length.
        len: usize,
    },
    /// The packet would exceed the 268,435,455-byte remaining length limit.
    #[error("packet exceeds the MQTT size limit")]
    PacketTooLarge,
    /// A QoS 1/2 PUBLISH without packet identifier, or QoS 0 with one.
    #[error("packet identifier does not match the QoS")]
    PacketIdMismatch,
    /// A PUBLISH without topic name and without Topic Alias.
    #[error("PUBLISH needs a topic name or a topic alias")]
    MissingTopic,
    /// SUBSCRIBE, UNSUBSCRIBE, SUBACK or UNSUBACK with an empty list.
    #[error("packet needs at least one entry")]
    EmptyList,
    /// 3.1.1 has no password without a user name [MQTT-3.1.2-22].
    #[error("3.1.1 CONNECT with a password but no user name")]
    PasswordWithoutUsername,
    /// AUTH does not exist in MQTT 3.1.1.
    #[error("{0:?} does not exist in MQTT 3.1.1")]
    NotInVersion(PacketType),
}
