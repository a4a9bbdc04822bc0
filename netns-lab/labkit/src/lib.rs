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

mod addr_monitor;
mod bird;
pub mod bridge;
mod daemon;
pub mod fleet;
mod frr;
mod gobgp_api;
mod gobgp_config;
mod gobgpd;
pub mod host_requests;
mod ini;
mod lab;
pub mod log_time;
pub mod metrics;
mod netns;
pub mod proc;
pub mod rabbit;
pub mod rabbit_cluster;
mod rib_monitor;
pub mod spec;
mod wait;

pub use addr_monitor::{AddrEvent, AddrMonitor};
pub use bird::{Bird, BirdRoute};
pub use daemon::Daemon;
pub use frr::Frr;
pub use gobgp_api::{rib_path, rib_paths, session_state_name, GobgpApi, RibPath};
pub use gobgp_config::{GobgpConfig, GobgpFamily, GobgpNeighbor};
pub use gobgpd::Gobgpd;
pub use ini::Ini;
pub use lab::Lab;
pub use netns::{veth, veth_pair, Netns};
pub use rabbit::Rabbit;
pub use rabbit_cluster::RabbitCluster;
pub use rib_monitor::{RibEvent, RibMonitor, Timed};
pub use wait::{free_port, scratch_dir, wait_every, wait_until};

/// Whether this process runs as root (effective uid 0), for programs (benches) that
/// say so in their own words.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails the calling test unless it runs as root (effective uid 0), which every `lab_`
/// and `vm_` test needs: a test that cannot run its check must not pass.
///
/// # Panics
///
/// When not root, with the reason and the command that runs the lab tests. It returns
/// `true` otherwise, so callers written as `if !require_root() { return }` fail too.
#[allow(clippy::panic)] // A lab helper fails the test the way a failed assert does.
#[track_caller]
pub fn require_root() -> bool {
    if !is_root() {
        panic!(
            "labkit: not root (euid {}): lab tests need root, network namespaces, gobgpd and \
             RabbitMQ; run them with netns-lab/test (vm_ tests: netns-lab/vm-test, netns-lab/vm-e2e)",
            nix::unistd::geteuid()
        );
    }
    true
}

/// Text without ANSI colour sequences (`ESC [ … letter`): the daemons colour their logs.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A monitor's reader: a thread that reads `child`'s stdout line by line, stamps each line
/// with the instant it arrived, and sends what `parse` makes of it. The thread ends with
/// the stream or when the receiver is dropped.
#[allow(clippy::type_complexity)] // A channel and its thread, as the two monitors keep them.
pub(crate) fn read_stream<T, I>(
    child: &mut std::process::Child,
    what: &str,
    parse: fn(&str, std::time::Instant) -> I,
) -> std::io::Result<(std::sync::mpsc::Receiver<T>, std::thread::JoinHandle<()>)>
where
    T: Send + 'static,
    I: IntoIterator<Item = T> + 'static,
{
    use std::io::BufRead;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other(format!("{what}: no stdout")))?;
    let (tx, events) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let at = std::time::Instant::now();
            let Ok(line) = line else { break };
            for ev in parse(&line, at) {
                if tx.send(ev).is_err() {
                    return;
                }
            }
        }
    });
    Ok((events, reader))
}

/// Ends a monitor's CLI process (by its pid) and joins the thread that read its output.
pub(crate) fn stop_stream(
    child: &mut std::process::Child,
    reader: Option<std::thread::JoinHandle<()>>,
) {
    let _ = child.kill();
    let _ = child.wait();
    if let Some(r) = reader {
        let _ = r.join();
    }
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
