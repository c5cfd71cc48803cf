//! # testament
//!
//! A sans-IO MQTT 3.1.1 / 5.0 broker core that makes authentication and
//! authorization — above all for the Last Will — explicit, deterministic and
//! testable.
//!
//! The core consumes bytes, time and policy decisions and emits actions; it
//! never reads a clock, never blocks, and never panics on peer input.
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
