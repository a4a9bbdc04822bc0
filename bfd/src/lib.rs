//! Bidirectional Forwarding Detection (RFC 5880, single hop over UDP per RFC 5881) for the
//! embedded BGP speaker.
//!
//! - [`packet`]: a strict, pure codec of the Control packet and its authentication section;
//! - [`fsm`]: the sans-IO session state machine (asynchronous mode; timers are outputs);
//! - [`Damping`]: how flaps are kept from the owner (see the module docs of `damping`).

mod damping;
pub mod fsm;
pub mod packet;

pub use damping::Damping;
pub use fsm::{Discard, Event, Input, Intervals, Output, Session, SessionConfig, Timer};
