//! Errors of the speaker API.

use std::io;
use std::net::SocketAddr;

/// Errors of the speaker API.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    /// `Speaker::start` was called outside a tokio runtime.
    #[error("the BGP speaker needs a tokio runtime")]
    NoRuntime,
    /// Hold time 1 or 2 (RFC 4271 §4.2 allows 0 or ≥ 3).
    #[error("hold time {0} is invalid: use 0 or at least 3 seconds")]
    InvalidHoldTime(u16),
    /// AS 0 (RFC 7607).
    #[error("AS 0 is reserved")]
    InvalidAs,
    /// Router id 0.0.0.0.
    #[error("router id 0.0.0.0 is invalid")]
    InvalidRouterId,
    /// Peer configuration problem.
    #[error("peer {name:?}: {reason}")]
    InvalidPeer {
        /// Peer name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No peer of that name.
    #[error("no BGP peer named {0:?}")]
    UnknownPeer(String),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Speaker-wide communities leave no room for a route in an UPDATE.
    #[error("speaker-wide path attributes are too large: {0}")]
    AttributesTooLarge(#[source] crate::policy::TooLarge),
    /// The TCP-MD5 key could not be installed on the listener.
    #[error("cannot set the TCP-MD5 key for peer {name:?} on the listener: {source}")]
    Md5 {
        /// Peer name.
        name: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}
