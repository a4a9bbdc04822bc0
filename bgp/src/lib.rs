//! Embedded BGP-4 speaker for ipvs-sync.
//!
//! The client daemon announces and withdraws its VIPs to routers through a [`Speaker`]; this
//! crate does the rest:
//!
//! - [`packet`]: a strict, pure codec of BGP messages (never panics on hostile input; errors map
//!   to NOTIFICATIONs and RFC 7606 actions);
//! - [`fsm`]: the sans-IO RFC 4271 session state machine (timers are inputs/outputs);
//! - [`rib_out`]: the per-peer Adj-RIB-Out that packs prefixes with equal attributes into few
//!   UPDATEs and sends withdraws ahead of any backlog;
//! - [`withdrawal`]: withdraws the caller can await (the UPDATE is on every socket);
//! - [`policy`]: iBGP vs eBGP export rules (LOCAL_PREF, MED or prepends);
//! - [`nexthop`]: next hops per session (IPv6 routes over IPv4 sessions get a global IPv6
//!   address of the session's interface);
//! - the tokio driver (one task per peer, TCP-MD5, GTSM) behind [`Speaker`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), bgp::BgpError> {
//! use std::time::Duration;
//! use bgp::{EbgpPreference, PeerConfig, RouteAttrs, Speaker, SpeakerConfig};
//!
//! let (speaker, mut events) = Speaker::start(SpeakerConfig {
//!     local_as: 65010,
//!     router_id: "192.0.2.11".parse().unwrap(),
//!     hold_time: 90,
//!     connect_retry: Duration::from_secs(5),
//!     graceful_restart: None,
//!     restarting: false,
//!     defer_end_of_rib: false,
//!     ebgp_preference: EbgpPreference::Med { base: 1000 },
//!     communities: vec![],
//!     large_communities: vec![],
//!     next_hop_v4: None,
//!     next_hop_v6: None,
//!     listen: None,
//! })?;
//! speaker.add_peer(PeerConfig {
//!     name: "r1".into(),
//!     address: "192.0.2.1".parse().unwrap(),
//!     remote_as: 65000,
//!     port: 179,
//!     passive: false,
//!     password: None,
//!     local_address: None,
//!     ttl_security: false,
//!     hold_time: None,
//!     next_hop_v4: None,
//!     next_hop_v6: None,
//! })?;
//! speaker.announce("198.51.100.1/32".parse().unwrap(), RouteAttrs {
//!     local_pref: Some(100),
//!     ..RouteAttrs::default()
//! });
//! // ... later, when quorum is lost: withdraw, and know when every router has been told.
//! let report = speaker.withdraw("198.51.100.1/32".parse().unwrap()).await;
//! for (peer, outcome) in &report.peers {
//!     println!("{peer}: {outcome}"); // written / session down / not held / not established
//! }
//! // ... and on daemon stop: Cease / Administrative Shutdown to every peer.
//! speaker.shutdown("ipvs-sync shutting down").await;
//! # drop(events.try_recv()); Ok(()) }
//! ```

mod config;
mod error;
mod fasthash;
pub mod fsm;
mod listener;
mod md5;
pub mod nexthop;
pub mod packet;
pub mod policy;
pub mod rib_out;
mod session;
mod shared;
mod speaker;
mod status;
mod table;
pub mod withdrawal;

pub use config::{PeerConfig, SpeakerConfig};
pub use error::BgpError;
pub use packet::{Community, LargeCommunity};
pub use policy::{attrs_fit, TooLarge};
pub use policy::{EbgpPreference, RouteAttrs};
pub use speaker::{Reconfigured, Speaker};
pub use status::{PeerEvent, PeerStatus};
pub use withdrawal::{WithdrawOutcome, WithdrawReport, Withdrawal};
