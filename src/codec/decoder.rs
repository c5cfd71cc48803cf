//! Framing: the fixed header, and the incremental [`Decoder`].

use bytes::{Buf, Bytes, BytesMut};

use super::error::DecodeError;
use super::packet::{Packet, Publish};
use super::primitives::parse_varint;
use super::{PacketType, ProtocolVersion};

/// The fixed header of a frame whose length is known (§2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The packet type.
    pub packet_type: PacketType,
    /// The four flag bits.
    pub flags: u8,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub header_len: usize,
    /// The Remaining Length: bytes after the fixed header.
    pub remaining_len: usize,
}

impl FixedHeader {
    /// Size of the whole frame.
    pub const fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Reads the fixed header at the start of `input`.
///
/// `Ok(None)` means more bytes are needed to know the frame length. The type,
/// its flags and the announced size are checked here, before any body byte is
/// waited for, so an oversized announcement is refused at once.
///
/// # Errors
/// [`DecodeError`] for a reserved packet type, wrong flags, a malformed
/// Remaining Length, or a frame larger than `max_packet_size`.
#[inline]
pub fn parse_fixed_header(
    input: &[u8],
    max_packet_size: u32,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = input.first() else {
        return Ok(None);
    };
    let packet_type =
        PacketType::from_nibble(first >> 4).ok_or(DecodeError::InvalidPacketType(first >> 4))?;
    let flags = first & 0x0f;
    if let Some(required) = packet_type.required_flags()
        && flags != required
    {
        return Err(DecodeError::InvalidFixedHeaderFlags { packet_type, flags });
    }
    let Some((remaining, used)) = parse_varint(&input[1..])? else {
        return Ok(None);
    };
    let header = FixedHeader {
        packet_type,
        flags,
        header_len: 1 + used,
        remaining_len: remaining as usize,
    };
    if header.frame_len() > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size: header.frame_len(),
            max: max_packet_size,
        });
    }
    Ok(Some(header))
}

/// Decodes one packet from the start of `input`, without copying it.
///
/// Returns the packet and the bytes it used, or `Ok(None)` when `input` holds
/// no complete frame yet. `version` is `None` until a CONNECT has fixed it;
/// only CONNECT can be decoded then.
///
/// # Errors
/// [`DecodeError`] for any fault in the frame.
pub fn decode_packet(
    input: &Bytes,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some(header) = parse_fixed_header(input, max_packet_size)? else {
        return Ok(None);
    };
    if input.len() < header.frame_len() {
        return Ok(None);
    }
    let body = input.slice(header.header_len..header.frame_len());
    let packet = Packet::decode(&header, body, version)?;
    Ok(Some((packet, header.frame_len())))
}

/// Bytes reserved ahead for a frame whose header announced its size. Larger
/// frames grow with the data that actually arrives, so a peer announcing a
/// big packet and sending nothing holds no more than this.
const RESERVE_AHEAD_MAX: usize = 64 * 1024;

/// Incremental decoder for one connection's inbound byte stream.
///
/// Feed bytes as they arrive ([`Decoder::feed`], or read straight into
/// [`Decoder::buffer_mut`]), then call [`Decoder::decode`] until it returns
/// `Ok(None)`. Each byte is copied into the buffer once; decoded packets
/// borrow it by reference count.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
}

impl Decoder {
    /// A decoder for a connection whose CONNECT has not been seen yet.
    pub fn new(max_packet_size: u32) -> Self {
        Self {
            buf: BytesMut::new(),
            version: None,
            max_packet_size,
        }
    }

    /// Sets the protocol version (a client decoding a server's packets knows it).
    #[must_use]
    pub fn with_version(mut self, version: ProtocolVersion) -> Self {
        self.version = Some(version);
        self
    }

    /// The version in force: set explicitly or by the first CONNECT decoded.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Replaces the version in force.
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = Some(version);
    }

    /// The maximum packet size in force.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Replaces the maximum packet size (checked from the next frame on).
    pub fn set_max_packet_size(&mut self, max: u32) {
        self.max_packet_size = max;
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The receive buffer, for hosts that read from the socket straight into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Lets go of the receive buffer when everything in it was decoded, so
    /// an idle connection holds no buffer (packets decoded from it keep
    /// their bytes alive on their own).
    pub fn release_if_empty(&mut self) {
        // Not only when capacity is left: an empty buffer split off the
        // end of the last frame still shares (and pins) its allocation.
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// The next complete packet, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// [`DecodeError`] for a fault in the stream; the connection should then
    /// be closed with the reason code it names.
    // Inlined so a PUBLISH is built where the caller keeps it: returned
    // through the stack, the wide copy of fields just written narrow
    // stalls on store forwarding, a third of the decode's cost.
    #[inline(always)]
    pub fn decode(&mut self) -> Result<Option<Packet>, DecodeError> {
        let Some(header) = parse_fixed_header(&self.buf, self.max_packet_size)? else {
            return Ok(None);
        };
        let frame_len = header.frame_len();
        if self.buf.len() < frame_len {
            // Reserve once for the rest of the frame (bounded), so later
            // appends do not move bytes already received.
            let want = frame_len.min(RESERVE_AHEAD_MAX);
            if self.buf.capacity() < want {
                self.buf.reserve(want - self.buf.len());
            }
            return Ok(None);
        }
        let mut frame = self.buf.split_to(frame_len).freeze();
        // PUBLISH is most of any stream: decode it without the general
        // dispatch, straight into the returned packet.
        if let (PacketType::Publish, Some(v)) = (header.packet_type, self.version) {
            return Publish::decode(header.flags, frame, header.header_len, v)
                .map(|p| Some(Packet::Publish(p)));
        }
        frame.advance(header.header_len);
        let packet = Packet::decode(&header, frame, self.version)?;
        if self.version.is_none()
            && let Packet::Connect(connect) = &packet
        {
            self.version = Some(connect.protocol);
        }
        Ok(Some(packet))
    }
}
