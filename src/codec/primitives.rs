//! Wire primitives shared by every packet: a bounds-checked reader over one
//! frame, variable byte integers, and the length helpers the encoder uses.

use bytes::{Buf, BufMut, Bytes};

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
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match parse_varint(&self.buf)? {
            Some((value, used)) => {
                self.buf.advance(used);
                Ok(value)
            }
            None => Err(DecodeError::Truncated),
        }
    }

    /// Takes `n` bytes without copying them.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Takes everything that is left (a PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// A two-byte length followed by that many bytes [MQTT-1.5.6].
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    /// A UTF-8 encoded string [MQTT-1.5.4].
    pub(crate) fn string(&mut self) -> Result<MqttString, DecodeError> {
        let raw = self.binary()?;
        MqttString::decode(raw)
    }

    /// Splits off a sub-reader of `len` bytes (a property block).
    pub(crate) fn sub(&mut self, len: usize) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.take(len)?))
    }

    /// Fails unless every byte of the frame was used.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
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
