//! Bidirectional Forwarding Detection (RFC 5880, single hop over UDP per RFC 5881) for the
//! embedded BGP speaker.
//!
//! - [`packet`]: a strict, pure codec of the Control packet and its authentication section;
//! - [`fsm`]: the sans-IO session state machine (asynchronous mode; timers are outputs);
//! - [`Damping`]: how flaps are kept from the owner: a Down is reported at once, an Up that
//!   follows a flap only after a hold-down that doubles with each further flap;
//! - [`Bfd`]: the tokio driver (one task for all sessions, TTL 255 both ways).
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
