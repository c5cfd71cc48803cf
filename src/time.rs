//! Time as the core sees it: values the host passes in, never a clock read.
//!
//! Two clocks, never mixed:
//!
//! - [`Instant`]: **monotonic** time. Every protocol timer runs on it —
//!   keep alive, the CONNECT timeout, will delay, session and message
//!   expiry, the credential's disconnect deadline once it is known. A step
//!   of the wall clock (NTP, a resumed VM, an operator fixing the date)
//!   never moves it, so it never closes a connection nor fires a will.
//! - [`Timestamp`]: **wall-clock** time, used only where the outside world
//!   defines it: a JWT's `exp`/`nbf`/`iat`, a certificate's validity, and
//!   the time an audit record is stamped with.
//!
//! The host reads both once per input and passes them as a [`Now`].

use std::fmt;
use std::num::NonZeroU64;
use std::ops::{Add, Sub};
use std::time::Duration;

/// The arithmetic both clocks share: milliseconds kept plus one, never
/// zero, so that an `Option` of either (a deadline, an expiry) is a word,
/// not two. Every idle session holds a few. The end of time is
/// `u64::MAX - 1` ms.
macro_rules! millis_clock {
    ($name:ident, $zero:ident, $since:literal) => {
        impl $name {
            #[doc = concat!("Zero: ", $since, ".")]
            pub const $zero: Self = Self(NonZeroU64::MIN);

            #[doc = concat!("From milliseconds since ", $since, " (saturating at the end of time).")]
            pub const fn from_millis(ms: u64) -> Self {
                match NonZeroU64::new(ms.saturating_add(1)) {
                    Some(v) => Self(v),
                    // `saturating_add(1)` is never 0.
                    None => Self::$zero,
                }
            }

            #[doc = concat!("From whole seconds since ", $since, ".")]
            pub const fn from_secs(secs: u64) -> Self {
                Self::from_millis(secs.saturating_mul(1000))
            }

            #[doc = concat!("Milliseconds since ", $since, ".")]
            pub const fn as_millis(self) -> u64 {
                self.0.get() - 1
            }

            #[doc = concat!("Whole seconds since ", $since, ".")]
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

            #[doc = concat!("`self - d`, saturating at ", $since, ".")]
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

        impl Default for $name {
            fn default() -> Self {
                Self::$zero
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.as_millis())
            }
        }

        /// Seconds, a dot, milliseconds.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}.{:03}", self.as_secs(), self.as_millis() % 1000)
            }
        }

        /// Milliseconds, as a number.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_u64(self.as_millis())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                u64::deserialize(d).map(Self::from_millis)
            }
        }

        impl Add<Duration> for $name {
            type Output = Self;
            fn add(self, d: Duration) -> Self {
                self.saturating_add(d)
            }
        }

        impl Sub<Duration> for $name {
            type Output = Self;
            fn sub(self, d: Duration) -> Self {
                self.saturating_sub(d)
            }
        }
    };
}

/// A point in wall-clock time: milliseconds since the Unix epoch, as the
/// host's clock gave it. For what the outside world dates — a JWT's
/// `exp`/`nbf`, a certificate's `notAfter`, an audit record — never for a
/// protocol timer ([`Instant`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(NonZeroU64);

millis_clock!(Timestamp, EPOCH, "the Unix epoch");

/// A point in monotonic time: milliseconds since an origin the host picks
/// (a driver: when it started). Every protocol timer runs on it; it never
/// jumps when the wall clock does. Like [`std::time::Instant`], but a value
/// the host passes in, so that the same inputs give the same actions.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(NonZeroU64);

millis_clock!(Instant, ORIGIN, "the host's origin");

/// What the host's two clocks read at one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Now {
    /// Monotonic: what every protocol timer is measured against.
    pub mono: Instant,
    /// Wall clock: what credentials are judged and audit records stamped
    /// with.
    pub wall: Timestamp,
}

impl Now {
    /// The clocks read `mono` and `wall`.
    pub const fn new(mono: Instant, wall: Timestamp) -> Self {
        Self { mono, wall }
    }

    /// Both clocks at `ms` milliseconds (a virtual clock started at the
    /// epoch, as tests and simulations use).
    pub const fn from_millis(ms: u64) -> Self {
        Self::new(Instant::from_millis(ms), Timestamp::from_millis(ms))
    }

    /// Both clocks at `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self::from_millis(secs.saturating_mul(1000))
    }

    /// Both clocks after waiting until the monotonic one reads `at`
    /// (unchanged if it already does): how a virtual clock moves to the
    /// hub's next deadline.
    #[must_use]
    pub fn advanced_to(self, at: Instant) -> Self {
        self + at.saturating_duration_since(self.mono)
    }

    /// The wall clock stepped by `step` (forward when positive) while the
    /// monotonic one stood still: what an NTP correction or a resumed VM
    /// does to a host.
    #[must_use]
    pub fn with_wall_step(self, step: WallStep) -> Self {
        let wall = match step {
            WallStep::Forward(d) => self.wall + d,
            WallStep::Back(d) => self.wall - d,
        };
        Self { wall, ..self }
    }
}

/// A step of the wall clock ([`Now::with_wall_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WallStep {
    /// The date moved later.
    Forward(Duration),
    /// The date moved earlier.
    Back(Duration),
}

/// Both clocks advance by the same `d`.
impl Add<Duration> for Now {
    type Output = Self;
    fn add(self, d: Duration) -> Self {
        Self::new(self.mono + d, self.wall + d)
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

    #[test]
    fn an_instant_is_a_word_and_moves_only_with_its_own_clock() {
        assert_eq!(std::mem::size_of::<Option<Instant>>(), 8);
        assert_eq!(format!("{:?}", Instant::from_secs(3)), "Instant(3000)");
        let now = Now::from_secs(100);
        assert_eq!(now.mono, Instant::from_secs(100));
        assert_eq!(now.wall, Timestamp::from_secs(100));
        let later = now + Duration::from_secs(1);
        assert_eq!(later, Now::from_secs(101));
        let hour = Duration::from_secs(3600);
        let stepped = later.with_wall_step(WallStep::Forward(hour));
        assert_eq!(stepped.mono, later.mono);
        assert_eq!(stepped.wall, Timestamp::from_secs(3701));
        let back = later.with_wall_step(WallStep::Back(hour));
        assert_eq!((back.mono, back.wall), (later.mono, Timestamp::EPOCH));
        assert_eq!(later.advanced_to(Instant::from_secs(90)), later);
        assert_eq!(
            later.advanced_to(Instant::from_secs(103)),
            Now::from_secs(103)
        );
        let json = serde_json::to_string(&Now::from_millis(5)).unwrap();
        assert_eq!(json, r#"{"mono":5,"wall":5}"#);
    }
}
