//! DISCONNECT (§3.14) and AUTH (§3.15): a reason code and properties, both
//! left out on the wire when they say nothing.

use bytes::BufMut;

use crate::codec::error::{DecodeError, EncodeError};
use crate::codec::primitives::Reader;
use crate::codec::properties::{AuthProperties, DisconnectProperties, Properties, decode_block};
use crate::codec::reason::{AuthReasonCode, DisconnectReasonCode};
use crate::codec::{PacketType, ProtocolVersion};

/// DISCONNECT: the last packet of a connection, from either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Why (5.0 only; 3.1.1 DISCONNECT is always a normal disconnection).
    pub reason_code: DisconnectReasonCode,
    /// DISCONNECT properties (5.0 only).
    pub properties: Properties<DisconnectProperties>,
}

impl Disconnect {
    /// A DISCONNECT with this reason and no properties.
    pub fn new(reason_code: DisconnectReasonCode) -> Self {
        Self {
            reason_code,
            properties: Properties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut d = Self::new(DisconnectReasonCode::NormalDisconnection);
        if v == ProtocolVersion::V5 && !r.is_empty() {
            let code = r.u8()?;
            d.reason_code =
                DisconnectReasonCode::from_code(code).ok_or(DecodeError::InvalidReasonCode {
                    packet_type: PacketType::Disconnect,
                    code,
                })?;
            if !r.is_empty() {
                d.properties = decode_block(r, PacketType::Disconnect)?;
            }
        }
        Ok(d)
    }

    pub(crate) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        Ok(match v {
            ProtocolVersion::V311 => 0,
            ProtocolVersion::V5 if !self.properties.is_empty() => {
                1 + self.properties.block_len()?
            }
            ProtocolVersion::V5
                if self.reason_code != DisconnectReasonCode::NormalDisconnection =>
            {
                1
            }
            ProtocolVersion::V5 => 0,
        })
    }

    pub(crate) fn put_body<B: BufMut>(&self, v: ProtocolVersion, b: &mut B) {
        if v == ProtocolVersion::V5 {
            let with_props = !self.properties.is_empty();
            if with_props || self.reason_code != DisconnectReasonCode::NormalDisconnection {
                b.put_u8(self.reason_code.code());
            }
            if with_props {
                self.properties.put_block(b);
            }
        }
    }
}

/// AUTH: a step of enhanced authentication (5.0 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Success, continue, or re-authenticate.
    pub reason_code: AuthReasonCode,
    /// AUTH properties.
    pub properties: Properties<AuthProperties>,
}

impl Auth {
    /// An AUTH with this reason and no properties.
    pub fn new(reason_code: AuthReasonCode) -> Self {
        Self {
            reason_code,
            properties: Properties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
        if v == ProtocolVersion::V311 {
            // Type 15 is reserved in 3.1.1 (§2.2.1 of 3.1.1).
            return Err(DecodeError::InvalidPacketType(PacketType::Auth as u8));
        }
        let mut a = Self::new(AuthReasonCode::Success);
        if !r.is_empty() {
            let code = r.u8()?;
            a.reason_code =
                AuthReasonCode::from_code(code).ok_or(DecodeError::InvalidReasonCode {
                    packet_type: PacketType::Auth,
                    code,
                })?;
            if !r.is_empty() {
                a.properties = decode_block(r, PacketType::Auth)?;
            }
        }
        if a.properties.authentication_data.is_some()
            && a.properties.authentication_method.is_none()
        {
            return Err(DecodeError::AuthDataWithoutMethod);
        }
        Ok(a)
    }

    pub(crate) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        Ok(match v {
            ProtocolVersion::V311 => return Err(EncodeError::NotInVersion(PacketType::Auth)),
            _ if !self.properties.is_empty() => 1 + self.properties.block_len()?,
            _ if self.reason_code != AuthReasonCode::Success => 1,
            _ => 0,
        })
    }

    pub(crate) fn put_body<B: BufMut>(&self, _: ProtocolVersion, b: &mut B) {
        let with_props = !self.properties.is_empty();
        if with_props || self.reason_code != AuthReasonCode::Success {
            b.put_u8(self.reason_code.code());
        }
        if with_props {
            self.properties.put_block(b);
        }
    }
}
