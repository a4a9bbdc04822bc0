//! Draining a VIP out of service without dropping connections (make-before-break), part of the
//! balancer's core.
//!
//! ```text
//!  drain ─▶ announcing: the route again with GRACEFUL_SHUTDOWN 65535:0 (RFC 8326) and
//!           LOCAL_PREF 0 (eBGP: the highest MED / most prepends); routers move traffic away
//!     │ drain_min passed
//!     ▼
//!  counting: the VIP's IPVS active + inactive connections, every second
//!     │ ≤ drain_conns, or drain_timeout passed (at once with ipvs = false: nothing to count)
//!     ▼
//!  withdrawn: BGP withdraw → withdraw_grace → the address goes; syn_announce refused
//!     │ undrain
//!     ▼
//!  announced again (a drain not finished: re-announced at once; else asked for anew)
//! ```
//! A drained VIP stays drained across a restart (the daemon persists the set) until
//! `ipvs-sync undrain`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use announce::fsm::Input;
use announce::State;
use ipvs::Tree;

use super::{ClientState, Cmd, Note};
use crate::wire::{Dest, Message};

/// How often a draining VIP's connections are counted.
pub const COUNT_EVERY: Duration = Duration::from_secs(1);

/// Where a drain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// Announced with GRACEFUL_SHUTDOWN, for at least `drain_min`.
    Announcing,
    /// Waiting for its connections to end.
    Counting,
    /// Withdrawn (or never announced): nothing more to do.
    Withdrawn,
}

impl DrainStep {
    /// The word `status` shows.
    pub fn name(self) -> &'static str {
        match self {
            DrainStep::Announcing => "announcing drained",
            DrainStep::Counting => "waiting for connections",
            DrainStep::Withdrawn => "withdrawn",
        }
    }
}

/// One drained VIP.
#[derive(Debug, Clone)]
pub struct Draining {
    /// Where the drain is.
    pub step: DrainStep,
    /// When it started.
    pub started: Instant,
    /// When the wait for connections ends regardless.
    pub deadline: Instant,
    /// Connections at the last count.
    pub conns: Option<u64>,
    /// A count asked for and not answered yet.
    counting: bool,
    /// When to look next.
    next: Option<Instant>,
}

impl Draining {
    /// When the core has something to do for this drain.
    pub fn next_look(&self) -> Option<Instant> {
        match self.step {
            DrainStep::Withdrawn => None,
            _ if self.counting => Some(self.deadline),
            _ => self.next,
        }
    }
}

impl ClientState {
    /// Drains `vips` (`None`: every VIP of this balancer) with `timeout` (default
    /// `drain_timeout`). Returns what to do and the VIPs drained.
    pub fn drain(
        &mut self,
        now: Instant,
        vips: Option<Vec<IpAddr>>,
        timeout: Option<Duration>,
    ) -> (Vec<Cmd>, Vec<IpAddr>) {
        let mut out = Vec::new();
        let chosen: Vec<IpAddr> = match vips {
            Some(v) => v,
            None => self.mine().collect(),
        };
        let timeout = timeout.unwrap_or(self.s.drain.timeout);
        let mut done = Vec::new();
        for vip in chosen {
            if self.drained.contains_key(&vip) {
                continue;
            }
            let mut d = Draining {
                step: DrainStep::Announcing,
                started: now,
                deadline: now + self.s.drain.min.max(timeout),
                conns: None,
                counting: false,
                next: Some(now + self.s.drain.min),
            };
            let state = self.vips.state(vip);
            self.drained.insert(vip, d.clone());
            match state {
                State::Announced { local_pref } => out.push(self.announce_cmd(vip, local_pref)),
                State::Idle => d.step = DrainStep::Withdrawn,
                State::Preparing { .. } | State::Acked { .. } => {
                    // Not announced yet: it never will be while drained.
                    d.step = DrainStep::Withdrawn;
                    let outs = self.vips.handle::<Tree>(vip, Input::FinAnnounce);
                    self.perform(now, vip, outs, &mut out);
                }
            }
            self.drained.insert(vip, d);
            done.push(vip);
        }
        if !done.is_empty() {
            out.push(Cmd::SaveDrained(self.drained.keys().copied().collect()));
        }
        (out, done)
    }

    /// Undoes the drain of `vips` (`None`: all). A VIP still announced is announced again as
    /// usual; one already withdrawn is asked for anew (the arbiter answers with its syn).
    pub fn undrain(&mut self, now: Instant, vips: Option<Vec<IpAddr>>) -> (Vec<Cmd>, Vec<IpAddr>) {
        let mut out = Vec::new();
        let chosen: Vec<IpAddr> = match vips {
            Some(v) => v,
            None => self.drained.keys().copied().collect(),
        };
        let mut done = Vec::new();
        let mut ask = false;
        for vip in chosen {
            if self.drained.remove(&vip).is_none() {
                continue;
            }
            done.push(vip);
            match self.vips.state(vip) {
                State::Announced { local_pref } => out.push(self.announce_cmd(vip, local_pref)),
                _ => ask = true,
            }
        }
        let _ = now;
        if ask {
            out.push(Cmd::Send(Dest::Server, Message::AnnouncesRequest));
        }
        if !done.is_empty() {
            out.push(Cmd::SaveDrained(self.drained.keys().copied().collect()));
        }
        (out, done)
    }

    /// VIPs drained at start (persisted by an earlier run): they stay drained.
    pub fn restore_drained(&mut self, now: Instant, vips: BTreeSet<IpAddr>) {
        for vip in vips {
            self.drained.insert(
                vip,
                Draining {
                    step: DrainStep::Withdrawn,
                    started: now,
                    deadline: now,
                    conns: None,
                    counting: false,
                    next: None,
                },
            );
        }
    }

    /// The drained VIPs.
    pub fn drains(&self) -> impl Iterator<Item = (IpAddr, &Draining)> {
        self.drained.iter().map(|(v, d)| (*v, d))
    }

    /// Whether every drain is done (withdrawn), for a stop by draining.
    pub fn drains_done(&self) -> bool {
        self.drained
            .values()
            .all(|d| d.step == DrainStep::Withdrawn)
    }

    /// A connection count of a draining VIP came back.
    pub fn conns(&mut self, now: Instant, vip: IpAddr, n: Result<u64, String>) -> Vec<Cmd> {
        let mut out = Vec::new();
        let Some(d) = self.drained.get_mut(&vip) else {
            return out;
        };
        d.counting = false;
        match n {
            Ok(n) => d.conns = Some(n),
            Err(e) => out.push(Cmd::Note(Note::Failed(format!(
                "counting the connections of {vip}: {e}"
            )))),
        }
        d.next = Some(now + COUNT_EVERY);
        self.tick_drains(now, &mut out);
        out
    }

    /// Moves drains along: announcing → counting → withdrawn.
    pub(super) fn tick_drains(&mut self, now: Instant, out: &mut Vec<Cmd>) {
        let vips: Vec<IpAddr> = self.drained.keys().copied().collect();
        for vip in vips {
            let Some(d) = self.drained.get_mut(&vip) else {
                continue;
            };
            if d.step == DrainStep::Announcing && d.next.is_some_and(|t| now >= t) {
                d.step = DrainStep::Counting;
            }
            if d.step != DrainStep::Counting {
                continue;
            }
            let timed_out = now >= d.deadline;
            let quiet = !self.s.ipvs || d.conns.is_some_and(|n| n <= self.s.drain.conns);
            if timed_out || quiet {
                d.step = DrainStep::Withdrawn;
                d.next = None;
                let conns = d.conns;
                out.push(Cmd::Note(Note::DrainDone {
                    vip,
                    conns,
                    timed_out: timed_out && !quiet,
                }));
                let outs = self.vips.handle::<Tree>(vip, Input::FinAnnounce);
                self.perform(now, vip, outs, out);
            } else if !d.counting && d.next.is_some_and(|t| now >= t) {
                d.counting = true;
                out.push(Cmd::CountConns { vip });
            }
        }
    }
}
