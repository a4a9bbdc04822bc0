//! labkit: test helpers for the netns lab.
//!
//! Lab tests (named `lab_*`, run by `netns-lab/test` as root) build small topologies
//! out of real things: network namespaces joined by veth pairs, Debian's `gobgpd` as
//! the router ([`Gobgpd`]), Debian's RabbitMQ as the broker ([`Rabbit`]). Every object here owns what it created and
//! removes it on `Drop` — namespaces are deleted, daemons are stopped by pid — so a
//! failing test does not leave the host dirty.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! let r1 = labkit::Netns::new("r1")?;
//! let lb = labkit::Netns::new("lb")?;
//! labkit::veth(&r1, &["192.0.2.1/24"], &lb, &["192.0.2.11/24"])?;
//! let cfg = labkit::GobgpConfig::new(65000, "192.0.2.1".parse().unwrap())
//!     .neighbor(labkit::GobgpNeighbor::new("192.0.2.11".parse().unwrap(), 65000).passive(true));
//! let router = labkit::Gobgpd::start(&r1, &cfg.to_toml())?;
//! let up = router.wait_for(
//!     |g| g.neighbor_state("192.0.2.11").is_ok_and(|s| s == "established"),
//!     Duration::from_secs(10),
//! );
//! # let _ = up; Ok(()) }
//! ```
//!
//! All functions return `std::io::Result`: a lab helper fails with the command line and
//! the tool's own stderr in the message, which is what one needs to read in a test log.

// Tests may unwrap: a failed unwrap is how a test reports.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod bird;
mod daemon;
mod frr;
mod gobgp_api;
mod gobgp_config;
mod gobgpd;
mod lab;
mod netns;
pub mod proc;
pub mod rabbit;
mod wait;

pub use bird::{Bird, BirdRoute};
pub use daemon::Daemon;
pub use frr::Frr;
pub use gobgp_api::{rib_paths, session_state_name, GobgpApi, RibPath};
pub use gobgp_config::{GobgpConfig, GobgpFamily, GobgpNeighbor};
pub use gobgpd::Gobgpd;
pub use lab::{Lab, BALANCERS, NODES};
pub use netns::{veth, veth_pair, Netns};
pub use rabbit::Rabbit;
pub use wait::{free_port, scratch_dir, wait_until};

/// Whether this process runs as root (effective uid 0), which every `lab_` test needs.
///
/// When it does not, prints one line to stderr saying so, so a skipped test says why.
pub fn require_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("labkit: not root; lab tests need root, netns and gobgpd: run netns-lab/test");
    }
    root
}

/// Runs a prepared command to completion and returns its stdout, or an error that names
/// the command line and carries its stderr.
pub(crate) fn run_checked(cmd: &mut std::process::Command) -> std::io::Result<String> {
    let out = cmd
        .output()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run {}: {e}", describe(cmd))))?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{} failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `prog arg arg …` of a command, for error messages.
pub(crate) fn describe(cmd: &std::process::Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
