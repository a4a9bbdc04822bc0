//! The message layer between the arbiter and the balancers.
//!
//! - [`keys`]: each node's Ed25519 key and whom a receiver trusts (the pinned arbiter, the
//!   balancers' key files);
//! - [`envelope`]: the signed JSON envelope (a documented byte layout) and why a message is
//!   dropped;
//! - [`admission`]: the receiver's checks in order (size, shape, sender, signature,
//!   addressee, replay);
//! - [`replay`]: the per-sender sliding window of message ids;
//! - [`skew`]: each sender's clock offset, measured and reported, never used to drop;
//! - [`state`]: what survives a restart (epoch, replay marks) in `state_dir`;
//! - [`messages`]: the typed body of every message type;
//! - [`ack_batch`]: several `ack_announce` folded into one message, and taken apart again;
//! - [`amqp`]: the RabbitMQ transport on lapin: topology and queue limits, confirmed sends,
//!   verified receives, reconnection;
//! - [`oneshot`]: one message published without a daemon (the quorum handler's withdraw);
//! - [`counters`]: what the transport counts, for `/metrics` and `/status`.
//!
//! A daemon holds one [`Transport`]: `Transport::connect(url, role, opts)` gives the handle and
//! a bounded receiver of [`Incoming`] messages, each already verified, typed, and carrying its
//! sender, the sender's role and the message id.

// Tests may unwrap: a failed unwrap is how a test reports.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod ack_batch;
pub mod admission;
pub mod amqp;
pub mod counters;
pub mod envelope;
pub mod keys;
pub mod messages;
pub mod oneshot;
pub mod replay;
pub mod skew;
pub mod state;

#[cfg(test)]
mod lab_tests;

pub use amqp::{Dest, InFlight, Incoming, Role, Transport, TransportOptions, WireError};
pub use envelope::MessageId;
pub use keys::{KeyError, NodeKey, PublicKey, Senders};
pub use messages::{Message, MessageType};
pub use skew::PeerClock;
