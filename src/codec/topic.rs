//! Topic names, topic filters and shared subscriptions, valid by construction
//! (MQTT 5.0 §4.7, §4.8.2), and the matching rule between them.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

use super::error::DecodeError;
use super::string::{InvalidString, MqttString, any_byte, contains_nul};

/// Why a string is not a valid topic name or topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTopic {
    /// Topic names and filters are at least one character long [MQTT-4.7.3-1].
    #[error("empty topic")]
    Empty,
    /// Topic names carry no wildcard [MQTT-3.3.2-2].
    #[error("wildcard in a topic name")]
    Wildcard,
    /// `#` not alone in the last level, or `+` not alone in its level [MQTT-4.7.1-1..3].
    #[error("misplaced wildcard in a topic filter")]
    MisplacedWildcard,
    /// `$share/{ShareName}/{filter}` with a bad share name or no filter [MQTT-4.8.2-1], [MQTT-4.8.2-2].
    #[error("invalid shared subscription")]
    InvalidShare,
    /// Not a valid MQTT string.
    #[error(transparent)]
    String(#[from] InvalidString),
}

impl From<InvalidTopic> for DecodeError {
    fn from(e: InvalidTopic) -> Self {
        match e {
            InvalidTopic::Empty => DecodeError::EmptyTopicName,
            InvalidTopic::Wildcard => DecodeError::WildcardInTopicName,
            InvalidTopic::MisplacedWildcard => DecodeError::InvalidTopicFilter,
            InvalidTopic::InvalidShare => DecodeError::InvalidSharedSubscription,
            InvalidTopic::String(InvalidString::NullCharacter) => DecodeError::NullCharacter,
            // Wire strings cannot exceed their two-byte length prefix.
            InvalidTopic::String(InvalidString::TooLong) => DecodeError::Truncated,
        }
    }
}

/// A topic name: what a PUBLISH is sent to. Never empty, never a wildcard.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(MqttString);

impl TopicName {
    /// Validates a topic name.
    ///
    /// # Errors
    /// [`InvalidTopic`] when it is empty, holds `+`, `#` or U+0000, or is too long.
    pub fn new(s: impl Into<ByteString>) -> Result<Self, InvalidTopic> {
        let s = MqttString::new(s)?;
        check_name(s.as_bytes())?;
        Ok(Self(s))
    }

    /// A topic name from a literal.
    ///
    /// # Panics
    /// If the literal is not a valid topic name: a bug in the caller.
    pub fn from_static(s: &'static str) -> Self {
        Self::new(ByteString::from_static(s)).expect("static topic names are valid")
    }

    /// Decodes wire bytes, checking wildcards and U+0000 in one pass before UTF-8.
    #[inline]
    pub(crate) fn decode(raw: Bytes) -> Result<Self, DecodeError> {
        if has_wildcard_or_nul(&raw) {
            return Err(if contains_nul(&raw) {
                DecodeError::NullCharacter
            } else {
                DecodeError::WildcardInTopicName
            });
        }
        if raw.is_empty() {
            return Err(DecodeError::EmptyTopicName);
        }
        let s = ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)?;
        Ok(Self(MqttString::from_checked(s)))
    }

    /// The same name in an allocation of its own, so that keeping it does
    /// not keep the buffer it was decoded from.
    #[must_use]
    pub fn detached(&self) -> Self {
        Self(self.0.detached())
    }

    /// The topic name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The topic name as an MQTT string.
    pub fn as_mqtt_str(&self) -> &MqttString {
        &self.0
    }

    /// Its levels, split on `/`.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.as_str().split('/')
    }
}

/// Whether `raw` holds `+`, `#` or NUL. Branch-free over the bytes so the
/// compiler vectorizes it: topic names are short, and a search with early
/// exit costs more in set-up than it saves.
#[inline]
fn has_wildcard_or_nul(raw: &[u8]) -> bool {
    any_byte(raw, |b| (b == b'+') | (b == b'#') | (b == 0))
}

fn check_name(raw: &[u8]) -> Result<(), InvalidTopic> {
    if raw.is_empty() {
        return Err(InvalidTopic::Empty);
    }
    if memchr::memchr2(b'+', b'#', raw).is_some() {
        return Err(InvalidTopic::Wildcard);
    }
    Ok(())
}

const SHARE_PREFIX: &str = "$share/";

/// A topic filter: what a subscription matches. Wildcards are well placed;
/// a `$share/` filter has a valid share name and a filter after it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(MqttString);

/// The parts of a shared subscription `$share/{group}/{filter}` (§4.8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedSubscription<'a> {
    /// The share name.
    pub group: &'a str,
    /// The topic filter the group subscribes to.
    pub filter: &'a str,
}

impl TopicFilter {
    /// Validates a topic filter.
    ///
    /// # Errors
    /// [`InvalidTopic`] for an empty filter, a misplaced wildcard, a bad
    /// shared subscription, U+0000 or excessive length.
    pub fn new(s: impl Into<ByteString>) -> Result<Self, InvalidTopic> {
        let s = MqttString::new(s)?;
        check_filter(s.as_str())?;
        Ok(Self(s))
    }

    /// A topic filter from a literal.
    ///
    /// # Panics
    /// If the literal is not a valid filter: a bug in the caller.
    pub fn from_static(s: &'static str) -> Self {
        Self::new(ByteString::from_static(s)).expect("static topic filters are valid")
    }

    pub(crate) fn decode(raw: Bytes) -> Result<Self, DecodeError> {
        let s = MqttString::decode(raw)?;
        check_filter(s.as_str())?;
        Ok(Self(s))
    }

    /// The filter as written, `$share/…` prefix included.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The filter as an MQTT string.
    pub fn as_mqtt_str(&self) -> &MqttString {
        &self.0
    }

    /// The share name and inner filter when this is a shared subscription.
    pub fn shared(&self) -> Option<SharedSubscription<'_>> {
        split_share(self.as_str())
    }

    /// The part that is matched against topic names: the inner filter of a
    /// shared subscription, else the whole filter.
    pub fn match_filter(&self) -> &str {
        match self.shared() {
            Some(share) => share.filter,
            None => self.as_str(),
        }
    }

    /// Whether the filter holds `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        memchr::memchr2(b'+', b'#', self.match_filter().as_bytes()).is_some()
    }

    /// Whether `topic` matches this filter (§4.7), including the rule that a
    /// leading wildcard does not match a topic starting with `$` [MQTT-4.7.2-1].
    pub fn matches(&self, topic: &TopicName) -> bool {
        filter_matches(self.match_filter(), topic.as_str())
    }
}

fn split_share(s: &str) -> Option<SharedSubscription<'_>> {
    let rest = s.strip_prefix(SHARE_PREFIX)?;
    let (group, filter) = rest.split_once('/')?;
    Some(SharedSubscription { group, filter })
}

fn check_filter(s: &str) -> Result<(), InvalidTopic> {
    if s.is_empty() {
        return Err(InvalidTopic::Empty);
    }
    let inner = if let Some(rest) = s.strip_prefix(SHARE_PREFIX) {
        // [MQTT-4.8.2-1] a ShareName of at least one character;
        // [MQTT-4.8.2-2] no `/`, `+`, `#` in it, then `/` and a Topic Filter.
        let Some((group, filter)) = rest.split_once('/') else {
            return Err(InvalidTopic::InvalidShare);
        };
        if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
            return Err(InvalidTopic::InvalidShare);
        }
        filter
    } else {
        s
    };
    if memchr::memchr2(b'+', b'#', inner.as_bytes()).is_none() {
        return Ok(());
    }
    let mut levels = inner.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(InvalidTopic::MisplacedWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(InvalidTopic::MisplacedWildcard);
        }
    }
    Ok(())
}

/// Matches a valid filter against a valid topic name, level by level.
pub(crate) fn filter_matches(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1] `$SYS/…` and friends are not matched by `#` or `+/…`.
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // `#` also matches the parent level: `a/#` matches `a` (§4.7.1.2).
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

macro_rules! string_like {
    ($ty:ty) => {
        impl Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        // Ordered as their text, so maps keyed by them are searched by `&str`.
        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                self.as_str()
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl TryFrom<&str> for $ty {
            type Error = InvalidTopic;
            fn try_from(s: &str) -> Result<Self, InvalidTopic> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $ty {
            type Error = InvalidTopic;
            fn try_from(s: String) -> Result<Self, InvalidTopic> {
                Self::new(s)
            }
        }
        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

string_like!(TopicName);
string_like!(TopicFilter);

#[cfg(test)]
mod tests {
    use super::*;

    fn m(filter: &str, topic: &str) -> bool {
        TopicFilter::new(filter)
            .unwrap()
            .matches(&TopicName::new(topic).unwrap())
    }

    #[test]
    fn names() {
        assert!(TopicName::new("a/b").is_ok());
        assert!(TopicName::new("/").is_ok());
        assert_eq!(TopicName::new(""), Err(InvalidTopic::Empty));
        assert_eq!(TopicName::new("a/+"), Err(InvalidTopic::Wildcard));
        assert_eq!(TopicName::new("a#"), Err(InvalidTopic::Wildcard));
        assert_eq!(
            TopicName::new("a\0b"),
            Err(InvalidTopic::String(InvalidString::NullCharacter))
        );
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "+/+",
            "/+",
            "a/+/c",
            "$share/g/a/#",
            "$share/g/#",
            "$share",
        ] {
            assert!(TopicFilter::new(ok).is_ok(), "{ok}");
        }
        for bad in ["a#", "a/#/b", "a/b#", "a+", "+a/b", "#/"] {
            assert_eq!(
                TopicFilter::new(bad),
                Err(InvalidTopic::MisplacedWildcard),
                "{bad}"
            );
        }
        for bad in [
            "$share/",
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/g+/a",
            "$share/#/a",
        ] {
            assert_eq!(
                TopicFilter::new(bad),
                Err(InvalidTopic::InvalidShare),
                "{bad}"
            );
        }
        assert_eq!(TopicFilter::new(""), Err(InvalidTopic::Empty));
        let shared = TopicFilter::new("$share/grp/a/+/c").unwrap();
        assert_eq!(
            shared.shared(),
            Some(SharedSubscription {
                group: "grp",
                filter: "a/+/c"
            })
        );
        assert_eq!(shared.match_filter(), "a/+/c");
        assert!(shared.has_wildcards());
    }

    #[test]
    fn matching_follows_section_4_7() {
        // Examples of §4.7.1.2 and §4.7.1.3.
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(m(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(m("sport/#", "sport"));
        assert!(m("#", "sport/tennis"));
        assert!(m("sport/tennis/+", "sport/tennis/player1"));
        assert!(!m("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!m("sport/+", "sport"));
        assert!(m("sport/+", "sport/"));
        assert!(m("+/+", "/finance"));
        assert!(m("/+", "/finance"));
        assert!(!m("+", "/finance"));
        assert!(!m("a/b", "a/b/c"));
        assert!(!m("a/b/c", "a/b"));
        // [MQTT-4.7.2-1]
        assert!(!m("#", "$SYS/uptime"));
        assert!(!m("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(m("$SYS/#", "$SYS/monitor/Clients"));
        assert!(m("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(m("$share/g/a/#", "a/b"));
    }
}
