//! VIP announcing on a balancer and quorum bookkeeping on the arbiter.
//!
//! * [`addr`] / [`addr_plan`] — VIP host addresses on `lo` or a dummy interface via
//!   rtnetlink: list, plan (pure), execute; the ownership rule lives in
//!   [`addr_plan`].
//! * [`desc`] / [`desc_cache`] — the per-VIP desc files (`active`, `total`,
//!   `announce`, `local-preference`, per-port state): locked, atomic writes; a cache
//!   that re-parses only changed files.
//! * [`quorum`] — the file half of `ipvs-sync quorum up|down VIP[,b-LP[,PORT]]`.
//! * [`fsm`] / [`vips`] — the sans-IO per-VIP announce state machine
//!   (Idle → Preparing → Acked → Announced → Idle) and its per-balancer container.
//! * [`firewall`] — the firewall check hook run while preparing a VIP.
//! * [`known_ports`] — a cached VIP → ports view of the service mapping for the
//!   quorum handler.
//!
//! Only [`addr`] and [`firewall`] do I/O that needs a tokio runtime; [`quorum`] and
//! [`desc`] are plain blocking file code so the quorum handler starts and exits fast.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod addr;
pub mod addr_plan;
pub mod desc;
pub mod desc_cache;
pub mod desc_watch;
pub mod firewall;
pub mod fsm;
pub mod known_ports;
pub mod quorum;
pub mod vips;

pub use addr::{AddrError, VipAddrs};
pub use addr_plan::{AddrOp, Ownership};
pub use desc::{Desc, DescError, DescLock, PortState};
pub use desc_cache::{DescCache, DescState, DescUpdate};
pub use desc_watch::{DescWatch, Seen};
pub use firewall::{FirewallError, FirewallHook, FirewallOk};
pub use fsm::{Event, Input, LocalPref, Output, State, VipFsm};
pub use quorum::{
    apply, parse_arg, DescChange, Direction, Publish, QuorumArg, QuorumError, QuorumOutcome,
};
pub use vips::Vips;
