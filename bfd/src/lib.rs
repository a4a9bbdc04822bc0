//! Bidirectional Forwarding Detection (RFC 5880, single hop over UDP per RFC 5881) for the
//! embedded BGP speaker.
//!
//! - [`packet`]: a strict, pure codec of the Control packet and its authentication section.

pub mod packet;
