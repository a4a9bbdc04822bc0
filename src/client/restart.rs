//! Graceful restart of a balancer (RFC 4724), the restarting side.
//!
//! ```text
//!  SIGUSR2 ─▶ marker (state_dir/restart.json: when, VIPs announced) ─▶ sessions closed
//!             without a NOTIFICATION; addresses and IPVS stay ─▶ exit 0
//!  next start within graceful_restart_time ─▶ marker read and removed ─▶ speaker restarting
//!     (Restart State bit, End-of-RIB held) ─▶ the arbiter's state announced again ─▶ gate
//!     open (every VIP of the marker announced, or the deadline) ─▶ End-of-RIB released,
//!     addresses of marker VIPs not announced again cleaned
//! ```
//!
//! Routers acting as helpers keep the balancer's routes (stale) and keep forwarding while no
//! session is up, then replace them as the new process announces them; End-of-RIB makes them
//! drop what was not announced again (RFC 4724 §4.2). The marker and the gate are pure; the
//! loop's side (reading and writing the marker, the exit, the release) is at the end.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::Client;
use crate::daemon::state_file;

/// File name of the marker in `[main] state_dir`.
pub const MARKER_FILE: &str = "restart.json";

/// The longest a restarted process holds End-of-RIB back waiting for the VIPs it announced
/// before to be announced again (less when `graceful_restart_time` is shorter).
pub const EOR_WAIT_MAX: Duration = Duration::from_secs(60);

/// What a process that exits for a graceful restart leaves for the next one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// When it exited, milliseconds since the Unix epoch (0: no marker).
    pub at_ms: u64,
    /// The VIPs it had announced (their addresses are still on the interface).
    pub announced: BTreeSet<IpAddr>,
}

impl Marker {
    /// Whether a process starting at `now_ms` resumes from this marker: it was written no
    /// longer than `restart_time` ago, so helpers still hold the routes.
    pub fn fresh(&self, now_ms: u64, restart_time: Duration) -> bool {
        let limit = u64::try_from(restart_time.as_millis()).unwrap_or(u64::MAX);
        self.at_ms > 0 && now_ms >= self.at_ms && now_ms - self.at_ms <= limit
    }
}

/// The marker's path in `state_dir`.
pub fn marker_path(state_dir: &Path) -> PathBuf {
    state_dir.join(MARKER_FILE)
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Holds End-of-RIB back until each VIP the previous process announced has been announced
/// again, or until a deadline (a VIP the arbiter no longer wants announced is never announced
/// again). The loop asks after every message, so an answer costs the VIPs that came back
/// since the last one, not a pass over every VIP.
#[derive(Debug, Clone)]
pub struct EorGate {
    /// The marker's VIPs, in order; those before `back` have been announced again.
    waiting: Vec<IpAddr>,
    back: usize,
    deadline: Instant,
}

impl EorGate {
    /// A gate for a process started at `now` after `marker`, with helpers that keep stale
    /// routes `restart_time`.
    pub fn new(marker: &Marker, now: Instant, restart_time: Duration) -> EorGate {
        EorGate {
            waiting: marker.announced.iter().copied().collect(),
            back: 0,
            deadline: now + restart_time.min(EOR_WAIT_MAX),
        }
    }

    /// Whether End-of-RIB can go, with `announced(vip)` whether `vip` is announced now. A VIP
    /// counts as back from the first time it is seen announced (a `fin_announce` after that
    /// withdraws it on the wire; End-of-RIB need not wait for it).
    pub fn open(&mut self, announced: impl Fn(IpAddr) -> bool, now: Instant) -> bool {
        while self.waiting.get(self.back).is_some_and(|v| announced(*v)) {
            self.back += 1;
        }
        now >= self.deadline || self.back == self.waiting.len()
    }

    /// The VIPs of the marker not announced now: their addresses are leftovers.
    pub fn not_announced(&self, announced: impl Fn(IpAddr) -> bool) -> BTreeSet<IpAddr> {
        self.waiting
            .iter()
            .filter(|v| !announced(**v))
            .copied()
            .collect()
    }
}

/// Reads and removes the marker a process that exited for a graceful restart left in
/// `state_dir`: `Some` when this start resumes from it (`[bgp] graceful_restart` on, marker
/// younger than `graceful_restart_time`).
pub fn take(cfg: &config::Config) -> Option<Marker> {
    let path = marker_path(&cfg.main.state_dir);
    let marker: Marker = state_file::load(&path);
    if marker.at_ms == 0 {
        return None;
    }
    if let Err(e) = std::fs::remove_file(&path) {
        warn!(file = %path.display(), error = %e, "restart marker not removed");
    }
    let time = Duration::from_secs(cfg.bgp.graceful_restart_time.into());
    if cfg.bgp.graceful_restart && marker.fresh(now_ms(), time) {
        Some(marker)
    } else {
        warn!(
            "graceful restart marker older than graceful_restart_time (or graceful_restart off): a cold start"
        );
        None
    }
}

impl Client {
    /// SIGUSR2: leaves the marker, then closes every session without a NOTIFICATION (routers
    /// that help keep the routes as stale); addresses and IPVS stay as they are.
    pub(super) async fn stop_for_restart(mut self) {
        // The next process starts without a fallback; it falls back again if the arbiter is
        // still silent. keepalived leaves IPVS as it is.
        self.fallback_stop().await;
        let announced: BTreeSet<IpAddr> = self.core.announced().into_keys().collect();
        let n = announced.len();
        let marker = Marker {
            at_ms: now_ms(),
            announced,
        };
        let path = marker_path(&self.cfg.main.state_dir);
        if let Err(e) = state_file::save(&path, &marker) {
            error!(file = %path.display(), error = %e,
                   "restart marker not written: the next start is a cold one");
        }
        info!(
            vips = n,
            "exiting for a graceful restart: sessions closed without a NOTIFICATION, addresses and IPVS kept"
        );
        if let Some(s) = self.edges.speaker.clone() {
            s.shutdown_for_restart().await;
        }
        self.outbox.close().await;
        self.bus.close().await;
    }

    /// After a graceful restart: once the gate opens, End-of-RIB goes to every peer and the
    /// addresses of the previous process's VIPs that were not announced again are removed.
    pub(super) fn check_end_of_rib(&mut self) {
        let core = &self.core;
        let is_announced = |v| matches!(core.vip_state(v), announce::State::Announced { .. });
        let Some(gate) = &mut self.eor else { return };
        if !gate.open(is_announced, Instant::now()) {
            return;
        }
        let left = gate.not_announced(is_announced);
        info!(
            announced = self.core.announced().len(),
            not_again = left.len(),
            "graceful restart: End-of-RIB released"
        );
        self.flush_routes();
        if let Some(s) = &self.edges.speaker {
            s.release_end_of_rib();
        }
        self.eor = None;
        if !left.is_empty() {
            let keep = self.core.busy();
            self.perform(vec![super::Cmd::CleanAddresses { keep, mine: left }]);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_marker_is_fresh_within_the_restart_time_only() {
        let m = Marker {
            at_ms: 10_000,
            announced: BTreeSet::new(),
        };
        let t = Duration::from_secs(120);
        assert!(m.fresh(10_000, t));
        assert!(m.fresh(130_000, t));
        assert!(!m.fresh(130_001, t), "older than the restart time");
        assert!(!m.fresh(9_999, t), "from the future: the clock went back");
        assert!(!Marker::default().fresh(10_000, t), "no marker");
    }

    #[test]
    fn the_marker_round_trips_through_json() {
        let m = Marker {
            at_ms: 1,
            announced: [ip("203.0.113.10"), ip("2001:db8::10")].into(),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"at_ms":1,"announced":["203.0.113.10","2001:db8::10"]}"#
        );
        assert_eq!(serde_json::from_str::<Marker>(&text).unwrap(), m);
    }

    #[test]
    fn the_gate_opens_when_every_vip_is_back_or_at_the_deadline() {
        let t0 = Instant::now();
        let (a, b) = (ip("203.0.113.10"), ip("203.0.113.11"));
        let m = Marker {
            at_ms: 1,
            announced: [a, b].into(),
        };
        let mut g = EorGate::new(&m, t0, Duration::from_secs(120));
        let mut now = BTreeSet::new();
        let asked = std::cell::Cell::new(0);
        // `announced` as the loop gives it, counting the VIPs the gate asks about.
        let on = |now: &BTreeSet<IpAddr>| {
            let now = now.clone();
            let asked = &asked;
            move |v| {
                asked.set(asked.get() + 1);
                now.contains(&v)
            }
        };
        assert!(!g.open(on(&now), t0));
        now.insert(a);
        assert!(!g.open(on(&now), t0 + Duration::from_secs(59)));
        assert_eq!(g.not_announced(on(&now)), [b].into());
        asked.set(0);
        assert!(!g.open(on(&now), t0));
        assert_eq!(
            asked.get(),
            1,
            "a VIP already back is not asked about again"
        );
        now.insert(b);
        assert!(g.open(on(&now), t0));
        assert!(g.not_announced(on(&now)).is_empty());
        // b is withdrawn after it came back: it stays back.
        now.remove(&b);
        assert!(g.open(on(&now), t0));
        // b is not wanted any more: the deadline opens the gate, capped at EOR_WAIT_MAX.
        let mut g = EorGate::new(&m, t0, Duration::from_secs(120));
        now = [a].into();
        assert!(!g.open(on(&now), t0 + EOR_WAIT_MAX - Duration::from_millis(1)));
        assert!(g.open(on(&now), t0 + EOR_WAIT_MAX));
        assert_eq!(g.not_announced(on(&now)), [b].into());
        let mut short = EorGate::new(&m, t0, Duration::from_secs(5));
        assert!(!short.open(on(&now), t0 + Duration::from_secs(4)));
        assert!(short.open(on(&now), t0 + Duration::from_secs(5)));
        // Nothing was announced before: End-of-RIB at once.
        assert!(
            EorGate::new(&Marker::default(), t0, Duration::from_secs(120))
                .open(on(&BTreeSet::new()), t0)
        );
    }
}
