//! Drivers: the sockets, the clock and the policy answers around the hub —
//! the only code that reads a clock. The hub stays single-writer: one task
//! (smol) or one thread (blocking) owns it; connections only move bytes.
//!
//! - [`smol`] (feature `smol`): one thread; a reader task per connection,
//!   output written straight from the hub's loop (a flush task only for
//!   what the socket does not take at once).
//! - [`blocking`] (feature `blocking`): the same with std threads.
//! - [`mio`] (feature `mio`): one thread, one readiness loop, no tasks;
//!   the least work per message and per idle connection (the binary's
//!   default).
//!
//! Both answer requests with a [`Policy`] — the built-in
//! [`JwtAclPolicy`] or the embedding program's own, answering at once or
//! after an await — and bound what waits to be written to each connection:
//! a client that does not read is dropped
//! ([`crate::broker::Broker::handle_unresponsive`]).

#![allow(clippy::disallowed_methods)] // the drivers are where time is read

pub mod admin;
#[cfg(feature = "jwks-url")]
pub mod jwks;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "metrics")]
pub mod ops;
mod policy;
pub mod record;
#[cfg(any(feature = "smol", feature = "blocking", feature = "mio"))]
mod runner;
pub mod storage;
pub mod tls;
mod websocket;

#[cfg(feature = "blocking")]
pub mod blocking;
#[cfg(feature = "mio")]
pub mod mio;
#[cfg(feature = "smol")]
pub mod smol;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use policy::{Answer, CertificatePrincipal, JwtAclPolicy, Policy};
pub use record::{Recorder, replay};

use crate::time::{Instant, Now, Timestamp};

/// The two clocks a driver reads for the hub, once per input: the
/// monotonic one every protocol timer runs on, and the wall clock that
/// credentials are judged and audit records stamped with.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// What both clocks read now.
    fn now(&self) -> Now;
    /// When the hub's monotonic `at` falls on the process's own monotonic
    /// clock (what a poller waits for).
    fn instant_of(&self, at: Instant) -> std::time::Instant;
}

/// The system's clocks: the monotonic one, counted from when this value
/// was made, and the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }

    /// The wall clock alone.
    pub fn wall() -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        let mono = self.origin.elapsed();
        Now::new(
            Instant::from_millis(u64::try_from(mono.as_millis()).unwrap_or(u64::MAX)),
            Self::wall(),
        )
    }

    fn instant_of(&self, at: Instant) -> std::time::Instant {
        // Capped at a day: a deadline past it is woken for early, which
        // the hub takes as a no-op, rather than overflowing.
        let since = std::time::Duration::from_millis(at.as_millis());
        self.origin + since.min(self.origin.elapsed() + std::time::Duration::from_secs(24 * 3600))
    }
}

/// What a driver needs besides the hub and the policy.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Bytes that may wait to be written to one connection before the client
    /// is considered not to read and is dropped.
    pub max_output_bytes: usize,
    /// Size of each socket read.
    pub read_buffer: usize,
    /// Connections open at once; more get CONNACK 0x97 Quota exceeded
    /// (3.1.1: 0x03) and are closed.
    pub max_connections: usize,
    /// Connections open at once from one address; the same beyond.
    pub max_connections_per_address: usize,
    /// Authentication attempts per address per second; more are refused
    /// with CONNACK 0x9F Connection rate exceeded without checking the
    /// token.
    pub max_authentications_per_address_per_sec: u32,
    /// The clocks the hub is fed ([`SystemClock`]; a test may step its
    /// wall clock).
    pub clock: Arc<dyn Clock>,
    /// Where the hub's [`crate::broker::Action::Persist`]s are committed
    /// (a durable hub needs one); `None`: they are not kept.
    pub storage: Option<Arc<std::sync::Mutex<dyn storage::Storage>>>,
    /// `true` (`[storage] sync = "always"`): a turn's changes are flushed
    /// before anything that follows them is carried out, but for a turn of
    /// only changes that [`crate::broker::Persist::may_wait`]. `false`
    /// (`"interval"`): no change waits for the disk; a crash loses what
    /// was committed since the last flush, acknowledged or not.
    pub flush_every_turn: bool,
    /// The longest a change committed without a flush waits for one.
    pub flush_interval: std::time::Duration,
    /// How often the `$SYS/…` topics are published; `None`: never.
    pub sys_interval: Option<std::time::Duration>,
    /// The path WebSocket listeners serve MQTT on (`/mqtt`).
    pub websocket_path: Arc<str>,
    /// Where the driver counts what it carries out (`[metrics]`).
    #[cfg(feature = "metrics")]
    pub metrics: Option<Arc<metrics::Metrics>>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            max_output_bytes: 8 * 1024 * 1024,
            read_buffer: 16 * 1024,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            max_authentications_per_address_per_sec: 100,
            clock: Arc::new(SystemClock::new()),
            storage: None,
            flush_every_turn: true,
            flush_interval: std::time::Duration::from_secs(1),
            sys_interval: None,
            websocket_path: "/mqtt".into(),
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }
}

/// A listening socket and, for TLS, its configuration; each driver names
/// its socket type (`smol::Listener`, `blocking::Listener`, `mio::Listener`).
#[derive(Debug)]
pub struct Listener<T> {
    /// The socket.
    pub tcp: T,
    /// Its TLS configuration; `None`: plain TCP.
    pub tls: Option<tls::Tls>,
    /// MQTT over WebSockets ([`DriverConfig::websocket_path`]) instead of
    /// MQTT on the byte stream.
    pub websocket: bool,
}

impl<T> Listener<T> {
    /// A plain TCP listener.
    pub fn plain(tcp: T) -> Self {
        Self {
            tcp,
            tls: None,
            websocket: false,
        }
    }
}

/// What the embedding program (or a signal handler) asks of a running
/// driver.
#[derive(Debug, Clone)]
pub enum Control {
    /// Re-read the policy's key set and rules ([`Policy::reload`]).
    Reload,
    /// Disconnect everyone (5.0: DISCONNECT 0x8B), handle wills per the
    /// hub's configuration, and return.
    Shutdown,
    /// An operator's request, answered on its channel.
    Admin(admin::Call),
}

/// Writes an audit record to the log (target `testament::audit`): its
/// text as the message, the record itself as a key-value for a structured
/// log (`[log] format = "json"`, serialized only if the logger asks).
fn log_audit(record: &crate::auth::AuditRecord, level: log::Level) {
    log::log!(target: "testament::audit", level, audit:serde = record; "{record}");
}

/// Counts `len` more bytes waiting for a connection's writer; `false` when
/// that passes the bound (the client does not read).
#[cfg(feature = "blocking")]
fn admit(queued: &std::sync::atomic::AtomicUsize, len: usize, max: usize) -> bool {
    queued.fetch_add(len, std::sync::atomic::Ordering::AcqRel) + len <= max
}
