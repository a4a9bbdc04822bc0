//! Linux IPVS (LVS) over generic netlink: the model of a kernel's virtual services and real
//! servers, a pure codec of the IPVS netlink family, a blocking handle that dumps and
//! changes the kernel's table, and a diff that turns one table into another with the
//! fewest operations.
//!
//! ```text
//!  Tree (wanted, JSON)──┐
//!                       ├─ diff() ─▶ Plan [Op…] ─▶ Ipvs::apply() ─▶ netlink (batched) ─▶ kernel
//!  Ipvs::dump() ─▶ Tree ┘                 └──────▶ Tree::apply_plan() (mirror copies)
//! ```
//!
//! - [`model`]: [`Tree`], [`Service`], [`Dest`] and their canonical ids
//!   (`tcp:192.0.2.1:80 -> 198.51.100.5:80`) and JSON form.
//! - [`packet`]: `IPVS_CMD_*` messages and `IPVS_SVC_ATTR_*`/`IPVS_DEST_ATTR_*` attributes,
//!   bytes in and out, no I/O.
//! - [`Ipvs`]: the handle (`connect`, `info`, `dump`, add/edit/delete, `flush`, `apply`).
//! - [`diff()`] and [`Plan`]: minimal plans; [`Tree::apply_plan`] applies one in memory.
//! - [`ipvsadm`]: the `ipvsadm -Sn` rule text, both ways.
//! - [`tool`]: `ipvs-sync ipvs dump|apply` (the binary wraps it).

pub mod diff;
mod dump;
pub mod error;
mod handle;
pub mod ipvsadm;
pub mod model;
pub mod packet;
pub mod plan;
pub mod tool;

pub use diff::diff;
pub use dump::DUMP_TRIES;
pub use error::{DecodeError, Errno, IpvsError, ModelError, OpKind};
pub use handle::{ApplyOptions, ApplyReport, Ipvs, OpFailure};
pub use model::{
    Dest, DestKey, Family, FwdMethod, FwmarkVips, Protocol, Service, ServiceFlags, ServiceKey,
    ServiceSpec, Tree,
};
pub use packet::{DaemonState, Info};
pub use plan::{Op, Plan, PlanConflict};
