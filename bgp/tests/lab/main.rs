//! Lab tests against the three routers the speaker must work with — gobgpd 3.10, BIRD 2 and
//! FRR 8.4 from Debian — each in a network namespace (root, `ip netns`; run
//! `netns-lab/test lab_` or `cargo nextest run -p bgp --run-ignored only -E 'test(/lab_/)'`).
//!
//! Every test builds two namespaces joined by one veth: `r` runs the router (AS 65000,
//! 192.0.2.1, 2001:db8::1, passive), `lb` the speaker (192.0.2.11, 2001:db8::11). Tests of
//! the API run the speaker in the test process (the thread enters `lb` before it builds its
//! tokio runtime); tests of process restarts run `examples/speaker`. `gobgp.rs` holds the
//! tests that need gobgpd's own settings (TCP-MD5, hold time, a restart of the router).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Three lab tests of one scenario `fn(Kind)`, one per router: `MODULE::gobgpd`,
/// `MODULE::bird`, `MODULE::frr` (name the module `lab_…`: the lab runner picks tests by
/// that).
macro_rules! per_router {
    ($module:ident, $scenario:ident) => {
        mod $module {
            use crate::routers::Kind;

            #[test]
            #[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
            fn gobgpd() {
                super::$scenario(Kind::Gobgp);
            }

            #[test]
            #[ignore = "lab: needs root, netns and BIRD 2; run netns-lab/test"]
            fn bird() {
                super::$scenario(Kind::Bird);
            }

            #[test]
            #[ignore = "lab: needs root, netns and FRR; run netns-lab/test"]
            fn frr() {
                super::$scenario(Kind::Frr);
            }
        }
    };
}

mod attrs;
mod gobgp;
mod holddown;
mod nexthop;
mod restart;
mod routers;
mod withdraw;
