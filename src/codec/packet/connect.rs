//! CONNECT (§3.1) and CONNACK (§3.2).

use bytes::{BufMut, Bytes};

use crate::codec::error::{DecodeError, EncodeError};
use crate::codec::primitives::{Reader, prefixed_len, put_binary};
use crate::codec::properties::{
    ConnAckProperties, ConnectProperties, Properties, WillProperties, decode_block,
};
use crate::codec::reason::{ConnectReasonCode, ConnectReturnCode};
use crate::codec::string::MqttString;
use crate::codec::topic::TopicName;
use crate::codec::{PacketType, ProtocolVersion, QoS};

const PROTOCOL_NAME: &[u8] = b"MQTT";

/// CONNECT: a client asks to open a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version the client speaks; CONNECT is encoded in it.
    pub protocol: ProtocolVersion,
    /// Clean Start (5.0) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// CONNECT properties (5.0 only; empty in 3.1.1).
    pub properties: Properties<ConnectProperties>,
    /// Client identifier, possibly empty [MQTT-3.1.3-6].
    pub client_id: MqttString,
    /// The Last Will, when the Will Flag is set [MQTT-3.1.2-7].
    pub will: Option<LastWill>,
    /// User Name.
    pub username: Option<MqttString>,
    /// Password (binary).
    pub password: Option<Bytes>,
}

/// The Last Will a client registers at CONNECT (§3.1.2.5, §3.1.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will Topic: a topic name, no wildcard [MQTT-3.1.3-11].
    pub topic: TopicName,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain [MQTT-3.1.2-14], [MQTT-3.1.2-15].
    pub retain: bool,
    /// Will properties (5.0 only; empty in 3.1.1).
    pub properties: Properties<WillProperties>,
}

mod flag {
    pub const RESERVED: u8 = 0x01;
    pub const CLEAN_START: u8 = 0x02;
    pub const WILL: u8 = 0x04;
    pub const WILL_QOS_SHIFT: u8 = 3;
    pub const WILL_RETAIN: u8 = 0x20;
    pub const PASSWORD: u8 = 0x40;
    pub const USERNAME: u8 = 0x80;
}

impl Connect {
    /// A CONNECT with the given client id and everything else at its default.
    pub fn new(protocol: ProtocolVersion, client_id: MqttString) -> Self {
        Self {
            protocol,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::default(),
            client_id,
            will: None,
            username: None,
            password: None,
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        // Read the name as raw bytes: a foreign protocol must get the
        // "unsupported protocol" answer, not a UTF-8 complaint.
        let name = r.binary()?;
        let level = r.u8()?;
        let name_ok = name.as_ref() == PROTOCOL_NAME;
        let protocol = match ProtocolVersion::from_level(level) {
            Some(v) if name_ok => v,
            _ => return Err(DecodeError::UnsupportedProtocol { name_ok, level }),
        };
        let flags = r.u8()?;
        if flags & flag::RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_flag = flags & flag::WILL != 0;
        let will_qos = QoS::from_bits((flags >> flag::WILL_QOS_SHIFT) & 0b11)
            .ok_or(DecodeError::InvalidQoS)?;
        let will_retain = flags & flag::WILL_RETAIN != 0;
        if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        let has_username = flags & flag::USERNAME != 0;
        let has_password = flags & flag::PASSWORD != 0;
        if protocol == ProtocolVersion::V311 && has_password && !has_username {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = match protocol {
            ProtocolVersion::V5 => {
                let p = decode_block::<ConnectProperties>(r, PacketType::Connect)?;
                if p.authentication_data.is_some() && p.authentication_method.is_none() {
                    return Err(DecodeError::AuthDataWithoutMethod);
                }
                p
            }
            ProtocolVersion::V311 => Properties::default(),
        };
        let client_id = r.string()?;
        let will = if will_flag {
            let properties = match protocol {
                ProtocolVersion::V5 => decode_block(r, PacketType::Connect)?,
                ProtocolVersion::V311 => Properties::default(),
            };
            let topic = TopicName::decode(r.binary()?)?;
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Self {
            protocol,
            clean_start: flags & flag::CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    fn flags(&self) -> u8 {
        let mut f = 0;
        if self.clean_start {
            f |= flag::CLEAN_START;
        }
        if let Some(will) = &self.will {
            f |= flag::WILL | ((will.qos as u8) << flag::WILL_QOS_SHIFT);
            if will.retain {
                f |= flag::WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            f |= flag::USERNAME;
        }
        if self.password.is_some() {
            f |= flag::PASSWORD;
        }
        f
    }

    pub(crate) fn body_len(&self) -> Result<usize, EncodeError> {
        let v5 = self.protocol == ProtocolVersion::V5;
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::PasswordWithoutUsername);
        }
        // Protocol name, level, flags, keep alive.
        let mut len = 2 + PROTOCOL_NAME.len() + 1 + 1 + 2;
        if v5 {
            len += self.properties.block_len()?;
        }
        len += prefixed_len(self.client_id.len())?;
        if let Some(will) = &self.will {
            if v5 {
                len += will.properties.block_len()?;
            }
            len += prefixed_len(will.topic.len())? + prefixed_len(will.payload.len())?;
        }
        if let Some(u) = &self.username {
            len += prefixed_len(u.len())?;
        }
        if let Some(p) = &self.password {
            len += prefixed_len(p.len())?;
        }
        Ok(len)
    }

    pub(crate) fn put_body<B: BufMut>(&self, b: &mut B) {
        let v5 = self.protocol == ProtocolVersion::V5;
        put_binary(b, PROTOCOL_NAME);
        b.put_u8(self.protocol.level());
        b.put_u8(self.flags());
        b.put_u16(self.keep_alive);
        if v5 {
            self.properties.put_block(b);
        }
        put_binary(b, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if v5 {
                will.properties.put_block(b);
            }
            put_binary(b, will.topic.as_bytes());
            put_binary(b, &will.payload);
        }
        if let Some(u) = &self.username {
            put_binary(b, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_binary(b, p);
        }
    }
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present [MQTT-3.2.2-2].
    pub session_present: bool,
    /// The outcome. In 3.1.1 it is sent as the nearest [`ConnectReturnCode`].
    pub reason_code: ConnectReasonCode,
    /// CONNACK properties (5.0 only).
    pub properties: Properties<ConnAckProperties>,
}

impl ConnAck {
    /// A CONNACK with this code and no properties.
    pub fn new(session_present: bool, reason_code: ConnectReasonCode) -> Self {
        Self {
            session_present,
            reason_code,
            properties: Properties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let ack_flags = r.u8()?;
        if ack_flags & !1 != 0 {
            return Err(DecodeError::InvalidConnAckFlags);
        }
        let code = r.u8()?;
        let invalid = DecodeError::InvalidReasonCode {
            packet_type: PacketType::ConnAck,
            code,
        };
        let (reason_code, properties) = match v {
            ProtocolVersion::V5 => (
                ConnectReasonCode::from_code(code).ok_or(invalid)?,
                decode_block(r, PacketType::ConnAck)?,
            ),
            ProtocolVersion::V311 => (
                ConnectReturnCode::from_code(code).ok_or(invalid)?.into(),
                Properties::default(),
            ),
        };
        Ok(Self {
            session_present: ack_flags & 1 != 0,
            reason_code,
            properties,
        })
    }

    pub(crate) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        Ok(match v {
            ProtocolVersion::V5 => 2 + self.properties.block_len()?,
            ProtocolVersion::V311 => 2,
        })
    }

    pub(crate) fn put_body<B: BufMut>(&self, v: ProtocolVersion, b: &mut B) {
        b.put_u8(u8::from(self.session_present));
        match v {
            ProtocolVersion::V5 => {
                b.put_u8(self.reason_code.code());
                self.properties.put_block(b);
            }
            ProtocolVersion::V311 => b.put_u8(ConnectReturnCode::from(self.reason_code).code()),
        }
    }
}
