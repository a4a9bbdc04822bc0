//! The fleet's BIRD router ([`FleetOpts::bird`](super::FleetOpts::bird)): one more router
//! namespace `rb` after the gobgpd routers, BIRD 2 in it, an iBGP IPv4 session
//! (passive, AS [`LOCAL_AS`]) with every balancer over a veth of its own; the balancers
//! know it as peer `bird`.

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use super::{spec, Fleet, LOCAL_AS};
use crate::{Bird, Netns};

/// The BIRD router of a fleet.
#[derive(Debug)]
pub struct BirdRouter {
    /// Its namespace.
    pub ns: Netns,
    /// The running BIRD.
    pub bird: Bird,
}

/// BIRD's protocol name for balancer `k`'s session (1-based): `lbK`.
pub fn protocol(k: usize) -> String {
    format!("lb{k}")
}

/// BIRD's config as router index `j` (the one after the gobgpd routers) of a fleet of
/// `balancers` balancers whose sessions have hold time `hold` seconds.
pub fn config(j: usize, balancers: usize, hold: u16) -> String {
    let mut c = format!(
        "router id {};\nlog \"{}\" all;\nprotocol device {{}}\nprotocol direct {{ ipv4; }}\n",
        spec::router_addrs_to(1, j).0,
        Bird::LOG_PLACEHOLDER
    );
    for k in 1..=balancers {
        let (r4, _) = spec::router_addrs_to(k, j);
        let (lb4, _) = spec::lb_addrs_to(k, j);
        let _ = write!(
            c,
            "protocol bgp {} {{\n  local {r4} as {LOCAL_AS};\n  neighbor {lb4} as {LOCAL_AS};\n  \
             passive on;\n  hold time {hold};\n  ipv4 {{ import all; export none; }};\n}}\n",
            protocol(k)
        );
    }
    c
}

impl Fleet {
    /// The BIRD router, when the fleet has one.
    pub fn bird(&self) -> io::Result<&Bird> {
        self.bird
            .as_ref()
            .map(|r| &r.bird)
            .ok_or_else(|| io::Error::other("the fleet has no BIRD router (FleetOpts::bird)"))
    }

    /// Waits until the BIRD router (if any) has balancer `i`'s session Established.
    pub(super) fn wait_bird_session(&self, i: usize, timeout: Duration) -> io::Result<()> {
        let Some(r) = &self.bird else { return Ok(()) };
        let name = protocol(i + 1);
        if r.bird.wait_for(
            |b| b.bgp_state(&name).is_ok_and(|s| s == "Established"),
            timeout,
        ) {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "BIRD session {name} not established in {timeout:?}; BIRD log:\n{}\nclient log:\n{}",
            r.bird.log(),
            self.client_log(i)
        )))
    }
}
