//! A fleet-wide cap on withdrawals (PyBal's depool threshold, for the whole fleet).
//!
//! One bad event — keepalived's checker network down, a wrong config push — can make every
//! VIP lose quorum at once, and without a cap the arbiter would withdraw them all. With
//! `[server] withdraw_limit` set, at most that many withdrawals (a count, or a percentage of
//! the VIPs that had quorum when the window began) go out per `withdraw_window`; past it, a
//! VIP that loses quorum stays announced ("held") until an operator runs `ipvs-sync release`
//! or its quorum comes back. The trade-off, said plainly: a real mass failure is held too,
//! and traffic keeps going to VIPs whose real servers are down until someone releases them.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use config::WithdrawLimit;

/// Why a VIP's withdrawal is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBecause {
    /// Its desc file says no quorum.
    QuorumLost,
    /// A new mapping takes it from most of its balancers.
    MappingShrink,
}

/// A held withdrawal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Since when.
    pub since: Instant,
    /// Why.
    pub because: HeldBecause,
}

/// The withdrawal budget and the held VIPs.
#[derive(Debug, Default)]
pub struct Caps {
    limit: Option<WithdrawLimit>,
    window: Duration,
    /// When each withdrawal of the window went out.
    recent: VecDeque<Instant>,
    held: BTreeMap<IpAddr, Held>,
}

impl Caps {
    /// A cap of `limit` per `window` (no cap when `None`).
    pub fn new(limit: Option<WithdrawLimit>, window: Duration) -> Caps {
        Caps {
            limit,
            window,
            ..Caps::default()
        }
    }

    /// New settings (a reload); what is held stays held.
    pub fn configure(&mut self, limit: Option<WithdrawLimit>, window: Duration) {
        self.limit = limit;
        self.window = window;
    }

    /// May one more VIP be withdrawn now? `quorate` counts the VIPs with quorum now (this one
    /// included). Takes from the budget when it may.
    pub fn allow(&mut self, now: Instant, quorate: usize) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.recent.pop_front();
        }
        let budget = match self.limit {
            None => return true,
            Some(WithdrawLimit::Count(n)) => n as usize,
            Some(WithdrawLimit::Percent(p)) => {
                // What had quorum when the window began: those with quorum now and those
                // withdrawn within it.
                let base = quorate + self.recent.len();
                base * p as usize / 100
            }
        };
        if self.recent.len() < budget {
            self.recent.push_back(now);
            true
        } else {
            false
        }
    }

    /// Holds `vip`'s withdrawal.
    pub fn hold(&mut self, vip: IpAddr, now: Instant, because: HeldBecause) {
        self.held.entry(vip).or_insert(Held {
            since: now,
            because,
        });
    }

    /// `vip` no longer needs withdrawing (its quorum came back). Returns whether it was held.
    pub fn unhold(&mut self, vip: IpAddr) -> bool {
        self.held.remove(&vip).is_some()
    }

    /// Whether `vip`'s withdrawal is held.
    pub fn is_held(&self, vip: IpAddr) -> bool {
        self.held.contains_key(&vip)
    }

    /// The held VIPs.
    pub fn held(&self) -> &BTreeMap<IpAddr, Held> {
        &self.held
    }

    /// Releases `vips` (all when `None`): they are withdrawn now, outside the budget.
    /// Returns those that were held.
    pub fn release(&mut self, vips: Option<&[IpAddr]>) -> Vec<(IpAddr, Held)> {
        let chosen: Vec<IpAddr> = match vips {
            None => self.held.keys().copied().collect(),
            Some(v) => v
                .iter()
                .filter(|x| self.held.contains_key(x))
                .copied()
                .collect(),
        };
        chosen
            .into_iter()
            .filter_map(|v| self.held.remove(&v).map(|h| (v, h)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn no_limit_allows_everything() {
        let mut c = Caps::new(None, Duration::from_secs(60));
        let now = Instant::now();
        assert!((0..1000).all(|_| c.allow(now, 1)));
    }

    #[test]
    fn half_of_ten_quorate_vips_goes_and_the_rest_is_held_until_released() {
        let mut c = Caps::new(Some(WithdrawLimit::Percent(50)), Duration::from_secs(60));
        let now = Instant::now();
        let mut quorate = 10;
        let mut withdrawn = Vec::new();
        for n in 1..=10 {
            if c.allow(now, quorate) {
                withdrawn.push(n);
                quorate -= 1;
            } else {
                c.hold(ip(n), now, HeldBecause::QuorumLost);
            }
        }
        assert_eq!(withdrawn.len(), 5);
        assert_eq!(c.held().len(), 5);
        assert!(c.unhold(ip(10)), "quorum came back for one");
        let released = c.release(None);
        assert_eq!(released.len(), 4);
        assert!(c.held().is_empty());
    }

    #[test]
    fn the_budget_refills_after_the_window() {
        let mut c = Caps::new(Some(WithdrawLimit::Count(2)), Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(c.allow(t0, 100));
        assert!(c.allow(t0, 100));
        assert!(!c.allow(t0 + Duration::from_secs(9), 100));
        assert!(c.allow(t0 + Duration::from_secs(10), 100));
    }

    #[test]
    fn release_names_only_held_vips() {
        let mut c = Caps::new(Some(WithdrawLimit::Count(1)), Duration::from_secs(10));
        let now = Instant::now();
        c.hold(ip(1), now, HeldBecause::QuorumLost);
        c.hold(ip(2), now, HeldBecause::MappingShrink);
        let r = c.release(Some(&[ip(2), ip(3)]));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, ip(2));
        assert!(c.is_held(ip(1)));
    }
}
