//! # testament
//!
//! A sans-IO MQTT 3.1.1 / 5.0 broker core that makes authentication and
//! authorization — above all for the Last Will — explicit, deterministic and
//! testable.
//!
//! The core consumes bytes, time and policy decisions and emits actions; it
//! never reads a clock, never blocks, and never panics on peer input. This
//! release holds its wire layer, [`codec`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;

#[doc(hidden)]
pub mod fuzzing;
