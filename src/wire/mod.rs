//! The message layer between the arbiter and the balancers.
//!
//! - [`envelope`]: the signed JSON envelope (HMAC-SHA256 over a documented byte layout) and the
//!   receiver's admission checks (size, shape, signature, addressee, freshness, replay);
//! - [`messages`]: the typed body of every message type (docs/wire-protocol.md);
//! - [`amqp`]: the RabbitMQ transport on lapin: topology, confirmed sends, verified receives,
//!   reconnection;
//! - [`counters`]: what the transport counts, for `/metrics` and `/status`.
//!
//! A daemon holds one [`Transport`]: `Transport::connect(url, role, opts)` gives the handle and
//! a bounded receiver of [`Incoming`] messages, each already verified and typed.

// Tests may unwrap: a failed unwrap is how a test reports.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod amqp;
pub mod counters;
pub mod envelope;
pub mod messages;
pub mod oneshot;

#[cfg(test)]
mod lab_tests;

pub use amqp::{Dest, InFlight, Incoming, Role, Transport, TransportOptions, WireError};
pub use envelope::{Key, KeyError};
pub use messages::{Message, MessageType};
