//! All VIPs of a balancer: one [`VipFsm`] per VIP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::fsm::{Input, Output, State, VipFsm};

/// The announce state machines of every VIP this balancer has heard of.
///
/// Entries are created on first input and kept (a balancer has hundreds of VIPs at
/// most), so prepare attempt numbers never repeat for a VIP.
#[derive(Debug, Default, Clone)]
pub struct Vips {
    fsms: BTreeMap<IpAddr, VipFsm>,
}

impl Vips {
    /// No VIPs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one input to `vip`'s machine.
    pub fn handle<T>(&mut self, vip: IpAddr, input: Input<T>) -> Vec<Output<T>> {
        self.fsms.entry(vip).or_default().handle(input)
    }

    /// The state of `vip` (Idle when never seen).
    pub fn state(&self, vip: IpAddr) -> State {
        self.fsms.get(&vip).map_or(State::Idle, VipFsm::state)
    }

    /// Reconcile with the arbiter's `announces` answer: every VIP that is not Idle
    /// and not in `listed` gets [`Input::NotInAnnounces`]. (The listed ones arrive
    /// as `syn_announce` messages of their own.)
    pub fn reconcile<T>(&mut self, listed: &BTreeSet<IpAddr>) -> Vec<(IpAddr, Output<T>)> {
        self.for_busy(|vip| !listed.contains(&vip), || Input::NotInAnnounces)
    }

    /// The daemon is stopping: withdraw everything that is not Idle.
    pub fn shutdown<T>(&mut self) -> Vec<(IpAddr, Output<T>)> {
        self.for_busy(|_| true, || Input::Shutdown)
    }

    /// VIPs announced now, with their LOCAL_PREF.
    pub fn announced(&self) -> BTreeMap<IpAddr, u32> {
        self.fsms
            .iter()
            .filter_map(|(vip, f)| match f.state() {
                State::Announced { local_pref } => Some((*vip, local_pref)),
                _ => None,
            })
            .collect()
    }

    /// VIPs that are not Idle (their address is, or is about to be, on the interface).
    pub fn busy(&self) -> BTreeSet<IpAddr> {
        self.fsms
            .iter()
            .filter(|(_, f)| f.state() != State::Idle)
            .map(|(vip, _)| *vip)
            .collect()
    }

    fn for_busy<T>(
        &mut self,
        pick: impl Fn(IpAddr) -> bool,
        input: impl Fn() -> Input<T>,
    ) -> Vec<(IpAddr, Output<T>)> {
        let mut out = Vec::new();
        for (vip, fsm) in &mut self.fsms {
            if fsm.state() != State::Idle && pick(*vip) {
                out.extend(fsm.handle(input()).into_iter().map(|o| (*vip, o)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn announce(vips: &mut Vips, vip: IpAddr, lp: u32) {
        vips.handle(
            vip,
            Input::SynAnnounce {
                local_pref: lp,
                tree: (),
            },
        );
        let attempt = match vips.state(vip) {
            State::Preparing { attempt, .. } => attempt,
            s => panic!("not preparing: {s:?}"),
        };
        vips.handle::<()>(
            vip,
            Input::PrepareResult {
                attempt,
                result: Ok(()),
            },
        );
        vips.handle::<()>(vip, Input::AckAnnounce { local_pref: lp });
    }

    #[test]
    fn reconcile_withdraws_only_unlisted_busy_vips() {
        let (a, b, c, d) = (
            ip("192.0.2.1"),
            ip("192.0.2.2"),
            ip("2001:db8::3"),
            ip("192.0.2.4"),
        );
        let mut vips = Vips::new();
        announce(&mut vips, a, 100);
        announce(&mut vips, b, 100);
        vips.handle(
            c,
            Input::SynAnnounce {
                local_pref: 100,
                tree: (),
            },
        );
        vips.handle::<()>(d, Input::FinAnnounce); // seen, Idle
        assert_eq!(vips.busy(), BTreeSet::from([a, b, c]));

        let out = vips.reconcile::<()>(&BTreeSet::from([a]));
        assert_eq!(
            out,
            vec![
                (b, Output::BgpWithdraw),
                (b, Output::RemoveAddress),
                (c, Output::BgpWithdraw),
                (c, Output::RemoveAddress),
                (c, Output::Count(crate::fsm::Event::Cancelled)),
            ]
        );
        assert_eq!(vips.announced(), BTreeMap::from([(a, 100)]));
        assert_eq!(vips.state(d), State::Idle);
        assert!(
            vips.reconcile::<()>(&BTreeSet::from([a])).is_empty(),
            "idempotent"
        );
    }

    #[test]
    fn shutdown_withdraws_everything_before_removing() {
        let mut vips = Vips::new();
        announce(&mut vips, ip("192.0.2.1"), 100);
        announce(&mut vips, ip("2001:db8::1"), 200);
        let out = vips.shutdown::<()>();
        assert_eq!(out.len(), 4);
        for pair in out.chunks(2) {
            assert_eq!(pair[0].1, Output::BgpWithdraw);
            assert_eq!(pair[1].1, Output::RemoveAddress);
            assert_eq!(pair[0].0, pair[1].0);
        }
        assert!(vips.busy().is_empty());
    }
}
