//! The fifteen control packets.

mod ack;
mod connect;
mod disconnect;
mod publish;
mod subscribe;

use bytes::{BufMut, Bytes};

use super::decoder::FixedHeader;
use super::error::{DecodeError, EncodeError};
use super::primitives::{Reader, VARINT_MAX, put_varint, varint_len};
use super::{Encode, PacketType, ProtocolVersion};

pub use ack::{PubAck, PubComp, PubRec, PubRel};
pub use connect::{ConnAck, Connect, LastWill};
pub use disconnect::{Auth, Disconnect};
pub use publish::{Publish, PublishView};
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
};

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Connection request.
    Connect(Box<Connect>),
    /// Connection acknowledgement.
    ConnAck(ConnAck),
    /// Application message.
    Publish(Publish),
    /// QoS 1 acknowledgement.
    PubAck(PubAck),
    /// QoS 2, part 1.
    PubRec(PubRec),
    /// QoS 2, part 2.
    PubRel(PubRel),
    /// QoS 2, part 3.
    PubComp(PubComp),
    /// Subscription request.
    Subscribe(Subscribe),
    /// Subscription acknowledgement.
    SubAck(SubAck),
    /// Unsubscription request.
    Unsubscribe(Unsubscribe),
    /// Unsubscription acknowledgement.
    UnsubAck(UnsubAck),
    /// Ping request.
    PingReq,
    /// Ping response.
    PingResp,
    /// Disconnect notification.
    Disconnect(Disconnect),
    /// Authentication exchange (MQTT 5.0 only).
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }

    /// Decodes the body of a frame whose fixed header was checked.
    pub(crate) fn decode(
        header: &FixedHeader,
        body: Bytes,
        version: Option<ProtocolVersion>,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        // Only CONNECT can be read before the version is known: it carries it.
        let packet = match (header.packet_type, version) {
            (PacketType::Connect, _) => Self::Connect(Box::new(Connect::decode(&mut r)?)),
            (packet_type, None) => return Err(DecodeError::VersionUnknown(packet_type)),
            (PacketType::ConnAck, Some(v)) => Self::ConnAck(ConnAck::decode(&mut r, v)?),
            (PacketType::Publish, Some(v)) => {
                // Its payload is the rest of the frame: nothing can trail it.
                return Publish::decode(header.flags, body.clone(), 0, v).map(Self::Publish);
            }
            (PacketType::PubAck, Some(v)) => Self::PubAck(PubAck::decode(&mut r, v)?),
            (PacketType::PubRec, Some(v)) => Self::PubRec(PubRec::decode(&mut r, v)?),
            (PacketType::PubRel, Some(v)) => Self::PubRel(PubRel::decode(&mut r, v)?),
            (PacketType::PubComp, Some(v)) => Self::PubComp(PubComp::decode(&mut r, v)?),
            (PacketType::Subscribe, Some(v)) => Self::Subscribe(Subscribe::decode(&mut r, v)?),
            (PacketType::SubAck, Some(v)) => Self::SubAck(SubAck::decode(&mut r, v)?),
            (PacketType::Unsubscribe, Some(v)) => {
                Self::Unsubscribe(Unsubscribe::decode(&mut r, v)?)
            }
            (PacketType::UnsubAck, Some(v)) => Self::UnsubAck(UnsubAck::decode(&mut r, v)?),
            (PacketType::PingReq, Some(_)) => Self::PingReq,
            (PacketType::PingResp, Some(_)) => Self::PingResp,
            (PacketType::Disconnect, Some(v)) => Self::Disconnect(Disconnect::decode(&mut r, v)?),
            (PacketType::Auth, Some(v)) => Self::Auth(Auth::decode(&mut r, v)?),
        };
        r.finish()?;
        Ok(packet)
    }

    fn first_byte(&self) -> u8 {
        match self {
            Self::Publish(p) => p.first_byte(),
            other => {
                ((other.packet_type() as u8) << 4)
                    | other.packet_type().required_flags().unwrap_or(0)
            }
        }
    }

    fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        match self {
            Self::Connect(p) => p.body_len(),
            Self::ConnAck(p) => p.body_len(v),
            Self::Publish(p) => p.body_len(v),
            Self::PubAck(p) => p.body_len(v),
            Self::PubRec(p) => p.body_len(v),
            Self::PubRel(p) => p.body_len(v),
            Self::PubComp(p) => p.body_len(v),
            Self::Subscribe(p) => p.body_len(v),
            Self::SubAck(p) => p.body_len(v),
            Self::Unsubscribe(p) => p.body_len(v),
            Self::UnsubAck(p) => p.body_len(v),
            Self::PingReq | Self::PingResp => Ok(0),
            Self::Disconnect(p) => p.body_len(v),
            Self::Auth(p) => p.body_len(v),
        }
    }

    fn put_body<B: BufMut>(&self, v: ProtocolVersion, b: &mut B) {
        match self {
            Self::Connect(p) => p.put_body(b),
            Self::ConnAck(p) => p.put_body(v, b),
            Self::Publish(p) => p.put_body(v, b),
            Self::PubAck(p) => p.put_body(v, b),
            Self::PubRec(p) => p.put_body(v, b),
            Self::PubRel(p) => p.put_body(v, b),
            Self::PubComp(p) => p.put_body(v, b),
            Self::Subscribe(p) => p.put_body(v, b),
            Self::SubAck(p) => p.put_body(v, b),
            Self::Unsubscribe(p) => p.put_body(v, b),
            Self::UnsubAck(p) => p.put_body(v, b),
            Self::PingReq | Self::PingResp => {}
            Self::Disconnect(p) => p.put_body(v, b),
            Self::Auth(p) => p.put_body(v, b),
        }
    }
}

/// Total size of a frame with this body, checked against the MQTT limit.
pub(crate) fn frame_len(body: usize) -> Result<usize, EncodeError> {
    let body32 = u32::try_from(body).map_err(|_| EncodeError::PacketTooLarge)?;
    if body32 > VARINT_MAX {
        return Err(EncodeError::PacketTooLarge);
    }
    Ok(1 + varint_len(body32) + body)
}

pub(crate) fn encode_frame<B: BufMut>(
    first: u8,
    body: usize,
    b: &mut B,
    put: impl FnOnce(&mut B),
) -> Result<usize, EncodeError> {
    let total = frame_len(body)?;
    b.put_u8(first);
    put_varint(b, body as u32);
    put(b);
    Ok(total)
}

impl Encode for Packet {
    fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        frame_len(self.body_len(version)?)
    }

    fn encode<B: BufMut>(
        &self,
        version: ProtocolVersion,
        buf: &mut B,
    ) -> Result<usize, EncodeError> {
        let body = self.body_len(version)?;
        encode_frame(self.first_byte(), body, buf, |b| self.put_body(version, b))
    }
}

/// `Encode` for each packet struct, through the same code as [`Packet`].
macro_rules! encode_via_packet {
    ($($ty:ident => $variant:ident),* $(,)?) => {$(
        impl Encode for $ty {
            fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
                frame_len(self.body_len(version)?)
            }
            fn encode<B: BufMut>(&self, version: ProtocolVersion, buf: &mut B) -> Result<usize, EncodeError> {
                let body = self.body_len(version)?;
                let first = ((PacketType::$variant as u8) << 4)
                    | PacketType::$variant.required_flags().unwrap_or(0);
                encode_frame(first, body, buf, |b| self.put_body(version, b))
            }
        }
    )*};
}

encode_via_packet! {
    ConnAck => ConnAck,
    PubAck => PubAck,
    PubRec => PubRec,
    PubRel => PubRel,
    PubComp => PubComp,
    Subscribe => Subscribe,
    SubAck => SubAck,
    Unsubscribe => Unsubscribe,
    UnsubAck => UnsubAck,
    Disconnect => Disconnect,
    Auth => Auth,
}

impl Encode for Connect {
    /// CONNECT always encodes in its own `protocol` version.
    fn encoded_len(&self, _: ProtocolVersion) -> Result<usize, EncodeError> {
        frame_len(self.body_len()?)
    }
    fn encode<B: BufMut>(&self, _: ProtocolVersion, buf: &mut B) -> Result<usize, EncodeError> {
        let body = self.body_len()?;
        encode_frame((PacketType::Connect as u8) << 4, body, buf, |b| {
            self.put_body(b)
        })
    }
}

impl Encode for Publish {
    fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        self.view().encoded_len(version)
    }
    fn encode<B: BufMut>(
        &self,
        version: ProtocolVersion,
        buf: &mut B,
    ) -> Result<usize, EncodeError> {
        self.view().encode(version, buf)
    }
}

impl Encode for PublishView<'_> {
    fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        frame_len(self.body_len(version)?)
    }
    fn encode<B: BufMut>(
        &self,
        version: ProtocolVersion,
        buf: &mut B,
    ) -> Result<usize, EncodeError> {
        let body = self.body_len(version)?;
        encode_frame(self.first_byte(), body, buf, |b| self.put_body(version, b))
    }
}
