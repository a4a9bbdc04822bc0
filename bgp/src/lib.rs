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
//! - [`policy`]: iBGP vs eBGP export rules (LOCAL_PREF, MED or prepends, next-hop self);
//! - the tokio driver: one task per peer, TCP-MD5, GTSM.
pub mod fsm;
mod md5;
pub mod packet;
pub mod policy;
pub mod rib_out;
mod session;
mod speaker;

pub use packet::{Community, LargeCommunity};
pub use policy::{EbgpPreference, RouteAttrs};
pub use speaker::{BgpError, PeerConfig, PeerEvent, PeerStatus, Speaker, SpeakerConfig};
