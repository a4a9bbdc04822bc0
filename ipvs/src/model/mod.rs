//! The IPVS tree: virtual services, their real servers (destinations), and the canonical
//! text ids used in logs, diffs and plans.
//!
//! ```text
//! Tree
//!  └─ Service  key: tcp|udp|sctp ADDR:PORT  or  fwmark:v4|v6:MARK
//!      │       spec: scheduler, flags, persistence timeout, netmask, pe_name
//!      └─ Dest key: ADDR:PORT   fwd method, weight, thresholds, tunnel settings
//! ```
//!
//! Read-only counters (`stats`) come with dumps; they are carried in the JSON form but are
//! ignored by equality and by [`crate::diff`].

mod dest;
mod flags;
mod json;
mod key;
mod service;
mod tree;

pub use dest::{Dest, DestStats, FwdMethod, TunType};
pub use flags::{ServiceFlags, TunFlags};
pub use key::{DestId, DestKey, Family, FwmarkVips, Protocol, ServiceKey};
pub use service::{Service, ServiceSpec, Stats};
pub use tree::Tree;

/// `IP_VS_SCHEDNAME_MAXLEN` minus the NUL: the longest scheduler name the kernel takes.
pub const SCHED_NAME_MAX: usize = 15;
/// `IP_VS_PENAME_MAXLEN` minus the NUL: the longest persistence engine name.
pub const PE_NAME_MAX: usize = 31;
