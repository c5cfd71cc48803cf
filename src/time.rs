//! Time as the core sees it: a value the host passes in, never a clock read.

use std::fmt;
use std::num::NonZeroU64;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in wall-clock time: milliseconds since the Unix epoch, as the
/// host's clock gave it. JWT `exp`/`nbf` are wall-clock seconds, so the core
/// works in the same frame; the host decides where the value comes from.
///
/// The end of time is `u64::MAX - 1` ms: the value is kept plus one, never
/// zero, so that an `Option<Timestamp>` (a deadline, an expiry) is a word,
/// not two. Every idle session holds a few.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(NonZeroU64);

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.as_millis())
    }
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(NonZeroU64::MIN);

    /// From milliseconds since the epoch (saturating at the end of time).
    pub const fn from_millis(ms: u64) -> Self {
        match NonZeroU64::new(ms.saturating_add(1)) {
            Some(v) => Self(v),
            // `saturating_add(1)` is never 0.
            None => Self::EPOCH,
        }
    }

    /// From whole seconds since the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self::from_millis(secs.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0.get() - 1
    }

    /// Whole seconds since the epoch.
    pub const fn as_secs(self) -> u64 {
        self.as_millis() / 1000
    }

    /// `self + d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self::from_millis(
            self.as_millis()
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// `self - d`, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self::from_millis(
            self.as_millis()
                .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.as_millis().saturating_sub(earlier.as_millis()))
    }
}

impl Default for Timestamp {
    fn default() -> Self {
        Self::EPOCH
    }
}

/// Milliseconds since the epoch, as a number.
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.as_millis())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Self::from_millis)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Self;
    fn add(self, d: Duration) -> Self {
        self.saturating_add(d)
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Self;
    fn sub(self, d: Duration) -> Self {
        self.saturating_sub(d)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.as_secs(), self.as_millis() % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_secs(10);
        assert_eq!(
            t + Duration::from_millis(1500),
            Timestamp::from_millis(11_500)
        );
        assert_eq!(t - Duration::from_secs(20), Timestamp::EPOCH);
        assert_eq!(
            Timestamp::from_millis(u64::MAX) + Duration::from_secs(1),
            Timestamp::from_millis(u64::MAX)
        );
        assert_eq!(
            t.saturating_duration_since(Timestamp::from_secs(12)),
            Duration::ZERO
        );
        assert_eq!(t.to_string(), "10.000");
        assert_eq!(format!("{t:?}"), "Timestamp(10000)");
        assert_eq!(Timestamp::EPOCH.as_millis(), 0);
        assert_eq!(Timestamp::default(), Timestamp::EPOCH);
        assert_eq!(Timestamp::from_millis(u64::MAX).as_millis(), u64::MAX - 1);
        assert!(Timestamp::from_millis(7) < Timestamp::from_millis(8));
        assert_eq!(std::mem::size_of::<Option<Timestamp>>(), 8);
        let json = serde_json::to_string(&Timestamp::from_millis(1234)).unwrap();
        assert_eq!(json, "1234");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Timestamp::from_millis(1234));
    }
}
