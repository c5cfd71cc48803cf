//! [`MqttString`]: the UTF-8 string MQTT puts on the wire, valid by construction.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

use super::error::DecodeError;
use super::primitives::U16_LEN_MAX;

/// A UTF-8 string as MQTT defines it (§1.5.4): well-formed UTF-8, no U+0000,
/// at most 65,535 bytes.
///
/// It shares the bytes of the packet it was decoded from; cloning is a
/// reference count, not a copy.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MqttString(ByteString);

/// Why a string cannot be an [`MqttString`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidString {
    /// It contains U+0000 [MQTT-1.5.4-2].
    #[error("string contains U+0000")]
    NullCharacter,
    /// It is longer than 65,535 bytes.
    #[error("string longer than 65535 bytes")]
    TooLong,
}

impl MqttString {
    /// Checks `s` against the MQTT string rules.
    ///
    /// # Errors
    /// [`InvalidString`] when `s` holds U+0000 or exceeds 65,535 bytes.
    pub fn new(s: impl Into<ByteString>) -> Result<Self, InvalidString> {
        let s = s.into();
        if s.len() > U16_LEN_MAX {
            return Err(InvalidString::TooLong);
        }
        if memchr::memchr(0, s.as_bytes()).is_some() {
            return Err(InvalidString::NullCharacter);
        }
        Ok(Self(s))
    }

    /// A string from a literal.
    ///
    /// # Panics
    /// If the literal breaks the MQTT string rules: a bug in the caller.
    pub fn from_static(s: &'static str) -> Self {
        Self::new(ByteString::from_static(s)).expect("static MQTT strings are valid")
    }

    /// The same string in an allocation of its own, so that keeping it
    /// does not keep the buffer it was decoded from.
    #[must_use]
    pub fn detached(&self) -> Self {
        Self(ByteString::from(self.as_str()))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared bytes behind the string.
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// Validates wire bytes: [MQTT-1.5.4-1] then [MQTT-1.5.4-2].
    pub(crate) fn decode(raw: Bytes) -> Result<Self, DecodeError> {
        let s = ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if contains_nul(s.as_bytes()) {
            return Err(DecodeError::NullCharacter);
        }
        Ok(Self(s))
    }

    /// Wraps a string already checked by a caller in this module tree.
    pub(crate) fn from_checked(s: ByteString) -> Self {
        Self(s)
    }
}

/// Whether `raw` holds a NUL byte. Branch-free over the bytes so the compiler
/// vectorizes it: MQTT strings are short, and a search with early exit costs
/// more in set-up than it saves on them.
#[inline]
pub(crate) fn contains_nul(raw: &[u8]) -> bool {
    any_byte(raw, |b| b == 0)
}

/// Whether any byte of `raw` satisfies `pred`, without early exit.
#[inline]
pub(crate) fn any_byte(raw: &[u8], pred: impl Fn(u8) -> bool) -> bool {
    let (blocks, tail) = raw.as_chunks::<16>();
    let mut found = 0u8;
    for block in blocks {
        let mut m = 0u8;
        for &b in block {
            m |= u8::from(pred(b));
        }
        found |= m;
    }
    for &b in tail {
        found |= u8::from(pred(b));
    }
    found != 0
}

/// How many bytes of `raw` equal `needle`, eight at a time in a word (no
/// vector set-up, which short topics do not repay); a tail shorter than a
/// word is the last word with the bytes already counted shifted out.
#[inline]
pub(crate) fn count_byte(raw: &[u8], needle: u8) -> usize {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const SEVEN: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let pattern = LOW * u64::from(needle);
    // 0x01 in each byte of `word` that equals the needle, 0x00 elsewhere
    // (exact: no borrow runs from one byte into the next).
    let hits = |word: u64| {
        let x = word ^ pattern;
        !(((x & SEVEN) + SEVEN) | x) >> 7 & LOW
    };
    // At most eight hits a word: their sum lands in the top byte.
    let sum = |lanes: u64| (lanes.wrapping_mul(LOW) >> 56) as usize;
    let (words, tail) = raw.as_chunks::<8>();
    let mut n = 0;
    for word in words {
        n += sum(hits(u64::from_le_bytes(*word)));
    }
    match raw.last_chunk::<8>() {
        Some(last) if !tail.is_empty() => {
            let counted = 8 - tail.len();
            n + sum(hits(u64::from_le_bytes(*last)) >> (8 * counted))
        }
        Some(_) => n,
        None => n + tail.iter().filter(|&&b| b == needle).count(),
    }
}

impl Deref for MqttString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for MqttString {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for MqttString {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for MqttString {
    type Error = InvalidString;
    fn try_from(s: &str) -> Result<Self, InvalidString> {
        Self::new(s)
    }
}

impl TryFrom<String> for MqttString {
    type Error = InvalidString;
    fn try_from(s: String) -> Result<Self, InvalidString> {
        Self::new(s)
    }
}

impl PartialEq<str> for MqttString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MqttString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::count_byte;

    #[test]
    fn count_byte_counts_every_length_and_neighbour() {
        for len in (0..70).chain([4095, 70_001]) {
            for every in 1..5 {
                for needle in [b'/', 0, 0xff] {
                    // Neighbours one above and below the needle catch a
                    // borrow or carry leaking between bytes.
                    let raw: Vec<u8> = (0..len)
                        .map(|i| match i % every {
                            0 => needle,
                            1 => needle.wrapping_add(1),
                            _ => needle.wrapping_sub(1),
                        })
                        .collect();
                    let naive = raw.iter().filter(|&&b| b == needle).count();
                    assert_eq!(count_byte(&raw, needle), naive, "len {len} every {every}");
                }
            }
        }
    }
}
