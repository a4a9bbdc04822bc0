//! The arbiter's view of the fleet: for every (balancer, VIP) the mapping pairs, where the
//! announce stands and since when — taken from what the arbiter sends (`syn_announce`, the
//! go, `fin_announce`) and what each balancer's heartbeat says it announces.
//!
//! ```text
//!  syn sent ──ack, go sent──▶ acked ──heartbeat lists it──▶ announced
//!      ▲                                                      │ fin sent / left out of a heartbeat
//!      └──────────────────── withdrawn ◀──────────────────────┘
//!  the balancer silent past consumer_alive_ttl ──▶ gone
//! ```
//! Pure bookkeeping: nothing here decides what is sent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use crate::wire::{Dest, Message};

/// Where one balancer's announce of one VIP stands, as the arbiter knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// `syn_announce` sent, no ack yet.
    SynSent,
    /// Its ack came and the go was sent.
    Acked,
    /// Its heartbeat lists the VIP as announced.
    Announced,
    /// `fin_announce` sent, or its heartbeat stopped listing the VIP.
    Withdrawn,
    /// The balancer went silent.
    Gone,
}

impl Stage {
    /// The word `status` shows.
    pub fn name(self) -> &'static str {
        match self {
            Stage::SynSent => "syn sent",
            Stage::Acked => "acked",
            Stage::Announced => "announced",
            Stage::Withdrawn => "withdrawn",
            Stage::Gone => "gone",
        }
    }
}

/// The (balancer, VIP) stages, per balancer: a heartbeat (a thousand a second at fleet scale)
/// looks at its own balancer's VIPs only and allocates nothing once the pairs exist.
#[derive(Debug, Default)]
pub struct Fleet {
    stages: BTreeMap<String, BTreeMap<IpAddr, (Stage, Instant)>>,
}

impl Fleet {
    fn set(&mut self, client: &str, vip: IpAddr, stage: Stage, now: Instant) {
        let vips = match self.stages.get_mut(client) {
            Some(v) => v,
            None => self.stages.entry(client.to_owned()).or_default(),
        };
        let e = vips.entry(vip).or_insert((stage, now));
        if e.0 != stage {
            *e = (stage, now);
        }
    }

    /// The arbiter sent `out`: syns, gos and fins move the stages. `mapping` names the
    /// balancers a broadcast `fin_announce` reaches for each VIP.
    pub fn on_sent(
        &mut self,
        out: &[(Dest, Message)],
        mapping: &BTreeMap<String, BTreeSet<IpAddr>>,
        now: Instant,
    ) {
        for (to, m) in out {
            match (to, m) {
                (Dest::Client(c), Message::SynAnnounce(s)) => {
                    for vip in s.vips.keys() {
                        // A repeated syn of an announced VIP (an LP change) does not undo it.
                        if self.stage(c, *vip) != Some(Stage::Announced) {
                            self.set(c, *vip, Stage::SynSent, now);
                        }
                    }
                }
                (Dest::Client(c), Message::AckGo(g))
                    if self.stage(c, g.vip) != Some(Stage::Announced) =>
                {
                    self.set(c, g.vip, Stage::Acked, now);
                }
                (Dest::Client(c), Message::FinAnnounce(f)) => {
                    for vip in &f.vips {
                        self.set(c, *vip, Stage::Withdrawn, now);
                    }
                }
                (Dest::Broadcast, Message::FinAnnounce(f)) => {
                    for vip in &f.vips {
                        for (c, vips) in mapping {
                            if vips.contains(vip) {
                                self.set(c, *vip, Stage::Withdrawn, now);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// `client`'s heartbeat lists `announced`.
    pub fn on_heartbeat(&mut self, client: &str, announced: &[IpAddr], now: Instant) {
        for vip in announced {
            self.set(client, *vip, Stage::Announced, now);
        }
        // A balancer lists a few VIPs as a rule: a scan of the list beats a set then.
        let set: Option<BTreeSet<IpAddr>> =
            (announced.len() > 16).then(|| announced.iter().copied().collect());
        let listed = |v: &IpAddr| match &set {
            Some(set) => set.contains(v),
            None => announced.contains(v),
        };
        if let Some(vips) = self.stages.get_mut(client) {
            for (vip, e) in vips.iter_mut() {
                if e.0 == Stage::Announced && !listed(vip) {
                    *e = (Stage::Withdrawn, now);
                }
            }
        }
    }

    /// `client` went silent.
    pub fn on_gone(&mut self, client: &str, now: Instant) {
        if let Some(vips) = self.stages.get_mut(client) {
            for e in vips.values_mut() {
                if e.0 != Stage::Gone {
                    *e = (Stage::Gone, now);
                }
            }
        }
    }

    /// Forgets `client` entirely (decommissioned).
    pub fn forget(&mut self, client: &str) {
        self.stages.remove(client);
    }

    /// Drops pairs the mapping no longer makes.
    pub fn retain_mapped(&mut self, mapping: &BTreeMap<String, BTreeSet<IpAddr>>) {
        self.stages.retain(|c, vips| {
            let Some(mapped) = mapping.get(c) else {
                return false;
            };
            vips.retain(|v, _| mapped.contains(v));
            !vips.is_empty()
        });
    }

    /// The stage of `client`'s announce of `vip`.
    pub fn stage(&self, client: &str, vip: IpAddr) -> Option<Stage> {
        self.get(client, vip).map(|(s, _)| s)
    }

    /// The stage and since when.
    pub fn get(&self, client: &str, vip: IpAddr) -> Option<(Stage, Instant)> {
        self.stages.get(client)?.get(&vip).copied()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wire::messages::{AckGo, AnnounceSpec, FinAnnounce, SynAnnounce};

    fn vip() -> IpAddr {
        "192.0.2.10".parse().unwrap()
    }

    #[test]
    fn stages_follow_what_is_sent_and_heard() {
        let mut f = Fleet::default();
        let now = Instant::now();
        let mapping = BTreeMap::from([("lb1".to_owned(), BTreeSet::from([vip()]))]);
        let mut syn = SynAnnounce::default();
        syn.vips.insert(
            vip(),
            AnnounceSpec {
                tree: ipvs::Tree::new(),
                serial: None,
                local_preference: 100,
                communities: vec![],
            },
        );
        let to = Dest::Client("lb1".into());
        f.on_sent(&[(to.clone(), Message::SynAnnounce(syn))], &mapping, now);
        assert_eq!(f.stage("lb1", vip()), Some(Stage::SynSent));
        let go = Message::AckGo(AckGo {
            vip: vip(),
            local_preference: 100,
            communities: vec![],
        });
        f.on_sent(&[(to.clone(), go)], &mapping, now);
        assert_eq!(f.stage("lb1", vip()), Some(Stage::Acked));
        f.on_heartbeat("lb1", &[vip()], now);
        assert_eq!(f.stage("lb1", vip()), Some(Stage::Announced));
        let fin = Message::FinAnnounce(FinAnnounce { vips: vec![vip()] });
        f.on_sent(&[(Dest::Broadcast, fin)], &mapping, now);
        assert_eq!(f.stage("lb1", vip()), Some(Stage::Withdrawn));
        f.on_heartbeat("lb1", &[vip()], now);
        f.on_heartbeat("lb1", &[], now);
        assert_eq!(f.stage("lb1", vip()), Some(Stage::Withdrawn), "left out");
        f.on_gone("lb1", now);
        assert_eq!(f.stage("lb1", vip()), Some(Stage::Gone));
        f.retain_mapped(&BTreeMap::new());
        assert_eq!(f.stage("lb1", vip()), None);
    }
}
