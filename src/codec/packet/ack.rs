//! PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4 – §3.7): a packet identifier, and
//! in 5.0 a reason code and properties that may be left out when they say
//! nothing (§3.4.2.1).

use bytes::BufMut;

use crate::codec::error::{DecodeError, EncodeError};
use crate::codec::primitives::Reader;
use crate::codec::properties::{AckProperties, Properties, decode_block};
use crate::codec::reason::{PubAckReasonCode, PubRelReasonCode};
use crate::codec::{PacketId, PacketType, ProtocolVersion};

pub(crate) fn read_packet_id(r: &mut Reader) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)
}

macro_rules! ack_packet {
    ($(#[$meta:meta])* $name:ident, $code:ident, $success:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// The packet identifier acknowledged.
            pub packet_id: PacketId,
            /// The outcome (5.0 only; 3.1.1 always succeeds).
            pub reason_code: $code,
            /// Reason String and User Properties (5.0 only).
            pub properties: Properties<AckProperties>,
        }

        impl $name {
            /// A successful acknowledgement without properties.
            pub fn new(packet_id: PacketId) -> Self {
                Self::with_reason(packet_id, $code::$success)
            }

            /// An acknowledgement with this reason code and no properties.
            pub fn with_reason(packet_id: PacketId, reason_code: $code) -> Self {
                Self { packet_id, reason_code, properties: Properties::default() }
            }

            pub(crate) fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, DecodeError> {
                let packet_id = read_packet_id(r)?;
                let mut ack = Self::new(packet_id);
                if v == ProtocolVersion::V5 && !r.is_empty() {
                    let code = r.u8()?;
                    ack.reason_code = $code::from_code(code).ok_or(
                        DecodeError::InvalidReasonCode { packet_type: PacketType::$name, code },
                    )?;
                    if !r.is_empty() {
                        ack.properties = decode_block(r, PacketType::$name)?;
                    }
                }
                Ok(ack)
            }

            pub(crate) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
                Ok(match v {
                    ProtocolVersion::V311 => 2,
                    ProtocolVersion::V5 if !self.properties.is_empty() => {
                        3 + self.properties.block_len()?
                    }
                    ProtocolVersion::V5 if self.reason_code != $code::$success => 3,
                    ProtocolVersion::V5 => 2,
                })
            }

            pub(crate) fn put_body<B: BufMut>(&self, v: ProtocolVersion, b: &mut B) {
                b.put_u16(self.packet_id.get());
                if v == ProtocolVersion::V5 {
                    let with_props = !self.properties.is_empty();
                    if with_props || self.reason_code != $code::$success {
                        b.put_u8(self.reason_code.code());
                    }
                    if with_props {
                        self.properties.put_block(b);
                    }
                }
            }
        }
    };
}

ack_packet!(
    /// PUBACK: QoS 1 acknowledgement.
    PubAck, PubAckReasonCode, Success
);
ack_packet!(
    /// PUBREC: QoS 2 delivery, part 1.
    PubRec, PubAckReasonCode, Success
);
ack_packet!(
    /// PUBREL: QoS 2 delivery, part 2.
    PubRel, PubRelReasonCode, Success
);
ack_packet!(
    /// PUBCOMP: QoS 2 delivery, part 3.
    PubComp, PubRelReasonCode, Success
);
