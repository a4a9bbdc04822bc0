//! The driver's public types: configuration, peers, events, status and errors.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::packet::{Diag, State};
use crate::Damping;

/// UDP destination port of single-hop BFD Control packets (RFC 5881 §4).
pub const CONTROL_PORT: u16 = 3784;
/// Source ports of single-hop Control packets (RFC 5881 §4).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// Driver configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdConfig {
    /// Where Control packets are received: by default `0.0.0.0:3784` and `[::]:3784`. A port of
    /// 0 picks a free one (tests); [`Bfd::listen_addrs`](crate::Bfd::listen_addrs) tells which.
    pub listen: Vec<SocketAddr>,
    /// Dampening of the Ups reported after a flap.
    pub damping: Damping,
    /// How long [`Bfd::shutdown`](crate::Bfd::shutdown) waits for its AdminDown packets to be
    /// handed to the kernel.
    pub shutdown_timeout: Duration,
}

impl Default for BfdConfig {
    fn default() -> Self {
        BfdConfig {
            listen: vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), CONTROL_PORT),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), CONTROL_PORT),
            ],
            damping: Damping::default(),
            shutdown_timeout: Duration::from_secs(1),
        }
    }
}

/// One BFD peer (a single-hop neighbor, typically a BGP peer's address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// Name used in events, status and logs (the BGP peer's name).
    pub name: String,
    /// The neighbor's address.
    pub remote: IpAddr,
    /// Our source address (default: the kernel's choice for the route to `remote`).
    pub local: Option<IpAddr>,
    /// The neighbor's Control port (3784 but in tests).
    pub remote_port: u16,
    /// bfd.DesiredMinTxInterval once Up.
    pub min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub min_rx: Duration,
    /// bfd.DetectMult.
    pub multiplier: u8,
}

impl PeerSpec {
    /// A peer with the defaults of the `[bfd]` config section: 300 ms / 300 ms × 3.
    pub fn new(name: impl Into<String>, remote: IpAddr) -> PeerSpec {
        PeerSpec {
            name: name.into(),
            remote,
            local: None,
            remote_port: CONTROL_PORT,
            min_tx: Duration::from_millis(300),
            min_rx: Duration::from_millis(300),
            multiplier: 3,
        }
    }
}

/// What the owner is told, per peer (after dampening).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BfdEvent {
    /// The session is Up.
    Up {
        /// The peer's name.
        name: String,
    },
    /// The session went down after an `Up`.
    Down {
        /// The peer's name.
        name: String,
        /// Our diagnostic (why).
        diag: Diag,
        /// The neighbor signalled AdminDown: not a path failure (RFC 5882 §3.2).
        remote_admin_down: bool,
    },
}

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The codec refused it (the [`DecodeError`](crate::packet::DecodeError) kind).
    Malformed(&'static str),
    /// TTL / Hop Limit not 255, or not given by the kernel (RFC 5881 §5).
    Ttl,
    /// Your Discriminator is not one of ours (§6.8.6).
    UnknownDiscriminator,
    /// Your Discriminator is zero and no session has this source address (§6.3).
    UnknownSource,
    /// Your Discriminator names a session of another neighbor.
    SourceMismatch,
    /// Authentication present or missing against our configuration.
    Auth,
    /// The session is AdminDown.
    AdminDown,
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::Malformed(k) => write!(f, "malformed:{k}"),
            DropReason::Ttl => f.write_str("ttl"),
            DropReason::UnknownDiscriminator => f.write_str("unknown_discriminator"),
            DropReason::UnknownSource => f.write_str("unknown_source"),
            DropReason::SourceMismatch => f.write_str("source_mismatch"),
            DropReason::Auth => f.write_str("auth"),
            DropReason::AdminDown => f.write_str("admin_down"),
        }
    }
}

/// Counters of dropped datagrams by reason.
pub type Drops = BTreeMap<DropReason, u64>;

/// One session as [`Bfd::status`](crate::Bfd::status) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's name.
    pub name: String,
    /// The neighbor's address.
    pub remote: IpAddr,
    /// Our source address and port.
    pub local: SocketAddr,
    /// bfd.SessionState.
    pub state: State,
    /// The neighbor's last State field.
    pub remote_state: State,
    /// bfd.LocalDiscr.
    pub local_discr: u32,
    /// bfd.RemoteDiscr.
    pub remote_discr: u32,
    /// Negotiated transmit interval before jitter (`None`: no periodic packets).
    pub tx_interval: Option<Duration>,
    /// Detection Time in use (`None` until the neighbor is heard).
    pub detection_time: Option<Duration>,
    /// Our last diagnostic.
    pub local_diag: Diag,
    /// The neighbor's last diagnostic.
    pub remote_diag: Diag,
    /// A Poll Sequence is under way.
    pub polling: bool,
    /// The owner was told Up (dampening may hold an Up back).
    pub reported_up: bool,
    /// Downs the dampening remembers.
    pub flaps: u32,
    /// Packets accepted from the neighbor.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Sends that failed (the error is logged).
    pub send_errors: u64,
    /// Packets sent with the Poll bit.
    pub polls_sent: u64,
    /// Accepted packets with the Final bit.
    pub finals_received: u64,
    /// Datagrams from this neighbor's address that were dropped, by reason.
    pub drops: Drops,
}

/// The whole driver's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// Every session, in name order.
    pub peers: Vec<PeerStatus>,
    /// Drops that no session's address matches (unknown sources, unknown discriminators).
    pub unattributed_drops: Drops,
}

/// Driver errors.
#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// No source port of 49152–65535 could be bound for the peer.
    #[error("peer {name}: cannot bind a source port: {source}")]
    SourcePort {
        /// The peer's name.
        name: String,
        /// The last OS error.
        source: std::io::Error,
    },
    /// A peer of that name, or with that address, exists.
    #[error("peer {0} already exists (same name or address)")]
    Duplicate(String),
    /// No peer of that name.
    #[error("no peer {0}")]
    NoPeer(String),
    /// The multiplier is 0 or an interval does not fit the 32-bit microsecond fields.
    #[error("peer {name}: {what}")]
    BadPeer {
        /// The peer's name.
        name: String,
        /// What is wrong.
        what: &'static str,
    },
    /// The driver task has stopped.
    #[error("the BFD driver has stopped")]
    Stopped,
}
