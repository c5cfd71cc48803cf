//! # testament
//!
//! A sans-IO MQTT 3.1.1 / 5.0 broker core that makes authentication and
//! authorization — above all for the Last Will — explicit, deterministic and
//! testable.
//!
//! The core consumes bytes, time and policy decisions and emits actions; it
//! never reads a clock, never blocks, and never panics on peer input.
//!
//! # A run loop
//!
//! The hub is a value you feed and drain; a driver ([`driver::mio`],
//! [`driver::smol`], [`driver::blocking`]) does this with real sockets,
//! `examples/embed_blocking.rs` in forty lines.
//!
//! ```no_run
//! use std::sync::Arc;
//! use testament::auth::{JwtAuthenticator, JwtConfig, KeySet};
//! use testament::broker::{Action, Broker, BrokerConfig, ConnId};
//! use testament::driver::{Clock, SystemClock};
//! use testament::session::AuthnOutcome;
//!
//! # fn next_input() -> (ConnId, Vec<u8>) { (ConnId(1), Vec::new()) }
//! # fn write(_: ConnId, _: &[u8]) {}
//! # fn close(_: ConnId) {}
//! let clock = SystemClock::new();
//! # let jwks = "{\"keys\": []}";
//! let keys = KeySet::from_jwks(jwks, false).expect("a JWKS");
//! let authn = JwtAuthenticator::new(JwtConfig::default(), keys);
//! let mut hub = Broker::new(BrokerConfig::default());
//! // The built-in ACL answers authorizations on the spot.
//! hub.set_authorizer(Some(Arc::new(testament::config::default_acl())));
//! let conn = hub.open(clock.now(), Some("192.0.2.7:50123".into()));
//! loop {
//!     // One input: bytes that arrived (or a close, an answer, a timeout)…
//!     let now = clock.now();
//!     let (conn, bytes) = next_input();
//!     hub.handle_bytes(now, conn, &bytes);
//!     if hub.poll_timeout().is_some_and(|at| at <= now.mono) {
//!         hub.handle_timeout(now);
//!     }
//!     // …then every action, in order, until there are none.
//!     while let Some(action) = hub.poll_action() {
//!         match action {
//!             Action::Send { conn, bytes } => write(conn, &bytes),
//!             Action::Close { conn, .. } => close(conn),
//!             Action::Authenticate { ticket, credentials, .. } => {
//!                 // Credentials are judged by the wall clock.
//!                 let outcome = match authn.authenticate(&credentials, now.wall) {
//!                     Ok(identity) => AuthnOutcome::Success(identity),
//!                     Err(failure) => AuthnOutcome::Failure(failure),
//!                 };
//!                 let _ = hub.handle_authentication(now, ticket, outcome);
//!             }
//!             // Answered by the ACL above; another policy answers later
//!             // with `hub.handle_authorization(now, ticket, decision)`.
//!             Action::Authorize { .. } => {}
//!             Action::Audit(record) => println!("{record}"),
//!             // A durable hub's state to commit before what follows.
//!             Action::Persist(_) => {}
//!             // Backpressure: stop reading a publisher, and read it again.
//!             Action::PauseReading(_) | Action::ResumeReading(_) => {}
//!         }
//!     }
//!     // Sleep until an input or `hub.poll_timeout()`, whichever comes first.
//! }
//! ```
//!
//! # The run-loop contract
//!
//! - Inputs are `handle_*(now, …)` calls; `now` is always the first
//!   argument ([`time::Now`]: the monotonic instant every protocol timer
//!   runs on, and the wall-clock date credentials are judged by), so the
//!   same inputs give the same outputs. A step of the wall clock closes no
//!   connection and fires no will.
//! - After every input, drain `poll_action()` until it returns `None`. The
//!   order of actions is meaning: bytes before the close that follows them, a
//!   DISCONNECT before the will it causes, a SUBACK before the subscriptions
//!   it grants are used.
//! - `poll_timeout()` gives the next deadline; call `handle_timeout(now)` at
//!   or after it. Calling it early does nothing, and after it the next
//!   deadline is later than `now`.
//! - Decisions the outside world makes — authentication, authorization,
//!   opening a session — leave as actions with a ticket and come back as
//!   inputs. A synchronous policy (the built-in ACL) may be installed to
//!   answer on the spot.
//! - A peer's fault becomes a reason code and a close (data, not `Err`);
//!   `Err` means the host misused the API (an unknown ticket); a panic is a
//!   bug.
//!
//! - [`codec`]: every MQTT 3.1.1 and 5.0 packet, decoded and encoded.
//! - [`auth`]: JWT authentication over a rotating key set, the ACL
//!   authorizer, and audit records.
//! - [`session`]: one connection's protocol state machine, the will
//!   included.
//! - [`broker`]: the hub over all sessions: registry and takeover,
//!   persistent sessions, routing, retained messages, wills authorized when
//!   they are sent.
//! - [`driver`]: smol and blocking servers around the hub — sockets,
//!   clocks and policy answers, nothing else.
//! - [`time`]: the two clocks the host passes in.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod broker;
pub mod codec;
pub mod config;
pub mod driver;
pub mod keys;
pub mod session;
mod slots;
pub mod time;

#[doc(hidden)]
pub mod fuzzing;
