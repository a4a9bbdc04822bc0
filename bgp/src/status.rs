//! What the speaker reports: session events and per-peer status.

use std::net::IpAddr;

/// Session up/down, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The session reached Established.
    Up {
        /// Peer name.
        name: String,
    },
    /// The Established session ended.
    Down {
        /// Peer name.
        name: String,
        /// Why, for humans.
        reason: String,
    },
}

/// A peer's state for `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerStatus {
    /// Peer name.
    pub name: String,
    /// Neighbor address.
    pub address: IpAddr,
    /// Neighbor AS.
    pub remote_as: u32,
    /// FSM state ("idle", "connect", "active", "opensent", "openconfirm", "established").
    pub state: String,
    /// Seconds since Established.
    pub uptime_secs: Option<u64>,
    /// Prefixes the peer holds from us.
    pub routes_sent: usize,
    /// UPDATE messages sent.
    pub updates_sent: u64,
    /// Routes not sent because their path attributes leave no room for a prefix in a
    /// 4096-byte UPDATE (each dropped once per session).
    pub routes_too_large: u64,
    /// Messages received.
    pub msgs_in: u64,
    /// Messages sent.
    pub msgs_out: u64,
    /// UPDATEs received.
    pub updates_in: u64,
    /// Malformed messages received (session resets and RFC 7606-handled UPDATEs).
    pub malformed_in: u64,
    /// Last error, for humans.
    pub last_error: Option<String>,
    /// Why routes of a family are not sent to this peer (no next hop of that family on the
    /// session), if they are not.
    pub next_hop_missing: Option<String>,
    /// Held down by [`crate::Speaker::set_peer_down`] (no session until
    /// [`crate::Speaker::set_peer_up`]), and why.
    pub held_down: Option<String>,
}
