//! Wire primitives shared by every packet: a bounds-checked reader over one
//! frame, variable byte integers, and the length helpers the encoder uses.

use bytes::{BufMut, Bytes};

use super::error::{DecodeError, EncodeError};
use super::string::MqttString;

/// Largest value a variable byte integer can carry (four bytes) [MQTT-1.5.5].
pub const VARINT_MAX: u32 = 268_435_455;

/// Largest length a two-byte length prefix can describe [MQTT-1.5.4], [MQTT-1.5.6].
pub(crate) const U16_LEN_MAX: usize = u16::MAX as usize;

/// A cursor over the body of one complete frame.
///
/// The frame is complete, so running out of bytes here means the packet lied
/// about its own structure: that is a Malformed Packet, not "need more bytes".
///
/// It borrows the frame and moves an index: the fields it reads stay in
/// registers, and only the pieces a packet keeps ([`Reader::take`]) touch
/// the shared buffer's reference count.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over all of `frame`.
    #[inline]
    pub(crate) fn new(frame: &'a Bytes) -> Self {
        Self::at(frame, 0)
    }

    /// A reader over `frame` from `pos` on (`pos` must lie within it).
    #[inline]
    pub(crate) fn at(frame: &'a Bytes, pos: usize) -> Self {
        Self {
            frame,
            pos: pos.min(frame.len()),
            end: frame.len(),
        }
    }

    /// Bytes `range` of the frame, shared.
    #[inline]
    pub(crate) fn slice(&self, range: std::ops::Range<usize>) -> Bytes {
        self.frame.slice(range)
    }

    /// Where `part` starts in the frame, if it is a slice of it.
    pub(crate) fn offset_of(&self, part: &[u8]) -> Option<usize> {
        let base = self.frame.as_ptr() as usize;
        let at = (part.as_ptr() as usize).checked_sub(base)?;
        (at + part.len() <= self.frame.len()).then_some(at)
    }

    /// Where the reader stands in its frame.
    #[inline]
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.end
    }

    /// The next `n` bytes, borrowed, and the cursor moved past them.
    #[inline]
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let frame: &'a [u8] = self.frame;
        if n > self.end - self.pos {
            return Err(DecodeError::Truncated);
        }
        let out = &frame[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(N)?;
        let mut out = [0; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// The next byte, without moving past it.
    #[inline]
    pub(crate) fn peek_u8(&self) -> Option<u8> {
        let frame: &'a [u8] = self.frame;
        frame.get(self.pos).filter(|_| self.pos < self.end).copied()
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match parse_varint(&self.frame[self.pos..self.end])? {
            Some((value, used)) => {
                self.pos += used;
                Ok(value)
            }
            None => Err(DecodeError::Truncated),
        }
    }

    /// Takes `n` bytes without copying them.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.bytes(n)?;
        Ok(self.frame.slice(start..self.pos))
    }

    /// A two-byte length followed by that many bytes [MQTT-1.5.6], borrowed.
    #[inline]
    pub(crate) fn binary_slice(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()? as usize;
        self.bytes(len)
    }

    /// A two-byte length followed by that many bytes [MQTT-1.5.6].
    #[inline]
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    /// A UTF-8 encoded string [MQTT-1.5.4].
    #[inline]
    pub(crate) fn string(&mut self) -> Result<MqttString, DecodeError> {
        let raw = self.binary()?;
        MqttString::decode(raw)
    }

    /// Splits off a sub-reader of `len` bytes (a property block).
    #[inline]
    pub(crate) fn sub(&mut self, len: usize) -> Result<Reader<'a>, DecodeError> {
        let start = self.pos;
        self.bytes(len)?;
        Ok(Reader {
            frame: self.frame,
            pos: start,
            end: self.pos,
        })
    }

    /// Fails unless every byte of the frame was used.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Parses a variable byte integer at the start of `input`.
///
/// `Ok(None)` means the input ended before the integer did. A fifth byte, or a
/// non-minimal encoding, is malformed [MQTT-1.5.5-1].
#[inline]
pub(crate) fn parse_varint(input: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in input.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // A last byte of zero after the first adds nothing: the value would
            // fit in fewer bytes, which the minimum-bytes rule forbids.
            if i > 0 && byte == 0 {
                return Err(DecodeError::InvalidVarint);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if input.len() >= 4 {
        Err(DecodeError::InvalidVarint)
    } else {
        Ok(None)
    }
}

/// Bytes a variable byte integer of this value takes on the wire.
pub(crate) fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer; the caller has checked `value <= VARINT_MAX`.
pub(crate) fn put_varint<B: BufMut>(buf: &mut B, mut value: u32) {
    loop {
        let mut byte = (value & 0x7f) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Length on the wire of a two-byte-length-prefixed field, checked.
pub(crate) fn prefixed_len(len: usize) -> Result<usize, EncodeError> {
    if len > U16_LEN_MAX {
        Err(EncodeError::FieldTooLong { len })
    } else {
        Ok(2 + len)
    }
}

pub(crate) fn put_binary<B: BufMut>(buf: &mut B, data: &[u8]) {
    // Lengths were checked by `prefixed_len` while sizing the packet.
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

/// Length of a property block including its own variable-length prefix.
pub(crate) fn property_block_len(inner: usize) -> Result<usize, EncodeError> {
    let inner32 = u32::try_from(inner).map_err(|_| EncodeError::PacketTooLarge)?;
    if inner32 > VARINT_MAX {
        return Err(EncodeError::PacketTooLarge);
    }
    Ok(varint_len(inner32) + inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_from_the_spec_table() {
        // [MQTT-1.5.5] Table 1-1 Size of Variable Byte Integer.
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xff, 0xff, 0x7f]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
        ];
        for &(value, wire) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, wire, "encode {value}");
            assert_eq!(varint_len(value), wire.len());
            assert_eq!(parse_varint(wire), Ok(Some((value, wire.len()))));
        }
    }

    #[test]
    fn varint_faults() {
        assert_eq!(parse_varint(&[0x80]), Ok(None));
        assert_eq!(parse_varint(&[0xff, 0xff, 0xff]), Ok(None));
        assert_eq!(
            parse_varint(&[0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::InvalidVarint)
        );
        assert_eq!(parse_varint(&[0x80, 0x00]), Err(DecodeError::InvalidVarint));
    }
}
