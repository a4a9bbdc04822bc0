//! Bidirectional Forwarding Detection (RFC 5880, single hop over UDP per RFC 5881) for the
//! embedded BGP speaker.
//!
//! - [`packet`]: a strict, pure codec of the Control packet and its authentication section;
//! - [`fsm`]: the sans-IO session state machine (asynchronous mode; timers are outputs);
//! - [`Damping`]: how flaps are kept from the owner: a Down is reported at once, an Up that
//!   follows a flap only after a hold-down that doubles with each further flap;
//! - [`Bfd`]: the tokio driver (one task for all sessions, TTL 255 both ways).
//!
//! # What the owner is told
//!
//! [`BfdEvent::Down`] comes at once: failing fast is the point (a frozen balancer's routes
//! leave the routers within the detection time, not the BGP hold time). A Down whose
//! `remote_admin_down` is set is the neighbor's operator taking BFD down, not a path failure
//! (RFC 5882 §3.2): a client should not tear its BGP session down for it.
//!
//! [`BfdEvent::Up`] is dampened. On a lossy link a session can go Down and Up every few
//! seconds, and every reported Up restarts BGP (OPEN, the whole table, best-path churn at
//! every router). So an Up that follows a Down within [`Damping::decay`] (120 s) is reported
//! only once the session has *stayed* Up for a hold-down, [`Damping::initial_hold`] (1 s)
//! after the first flap, doubling with each further flap up to [`Damping::max_hold`] (60 s):
//! the exponential backoff of RFC 5880 §6.8.3 and the "hold-down" routers offer to BFD
//! clients. A first Up, or an Up after more than `decay` without a Down (a router reboot),
//! is reported at once. With the defaults a link that flaps every two seconds restarts BGP
//! after 1, 2, 4, 8, 16, 32 s and then at most once a minute, however bad the link.
//! The hold-down is a timer of the sans-IO FSM, so it is tested with a fake clock.
//!
//! ```no_run
//! # async fn demo() -> Result<(), bfd::BfdError> {
//! use bfd::{Bfd, BfdConfig, BfdEvent, PeerSpec};
//!
//! let (bfd, mut events) = Bfd::start(BfdConfig::default())?;
//! bfd.add_peer(PeerSpec::new("r1", "192.0.2.1".parse().unwrap())).await?;
//! while let Some(ev) = events.recv().await {
//!     match ev {
//!         BfdEvent::Up { name } => println!("{name} up"),
//!         BfdEvent::Down { name, diag, .. } => println!("{name} down: {diag}"),
//!     }
//! }
//! bfd.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod api;
mod damping;
mod driver;
pub mod fsm;
pub mod packet;
mod socket;

pub use api::{
    BfdConfig, BfdError, BfdEvent, DropReason, Drops, PeerSpec, PeerStatus, Status, CONTROL_PORT,
    SOURCE_PORTS,
};
pub use damping::Damping;
pub use driver::Bfd;
pub use fsm::{Discard, Event, Input, Intervals, Output, Session, SessionConfig, Timer};
pub use socket::TTL;
