//! # testament
//!
//! A sans-IO MQTT 3.1.1 / 5.0 broker core that makes authentication and
//! authorization — above all for the Last Will — explicit, deterministic and
//! testable.
//!
//! The core consumes bytes, time and policy decisions and emits actions; it
//! never reads a clock, never blocks, and never panics on peer input.
//!
//! - [`codec`]: every MQTT 3.1.1 and 5.0 packet, decoded and encoded.
//! - [`auth`]: JWT authentication over a rotating key set, the ACL
//!   authorizer, and audit records.
//! - [`session`]: one connection's protocol state machine, the will
//!   included.
//! - [`time`]: the timestamps the host passes in.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod codec;
pub mod session;
pub mod time;

#[doc(hidden)]
pub mod fuzzing;
