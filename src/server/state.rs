//! The arbiter's decisions, without I/O: every event in, the messages to send out.
//!
//! The arbiter's truth is its kernel's IPVS tree, the desc files and the mapping; this state
//! holds the last view of each plus the live clients, and answers:
//!
//! | event | messages |
//! |---|---|
//! | first heartbeat of a client | `tree`, `mapping` (its own entry), and the `announces` answer, to it |
//! | `tree` / `services` / `mapping` request | the answer, to the asker (`mapping`: its own entry) |
//! | `announces` request | `syn_announce` of its VIPs whose desc says announce, and `fin_announce` of its other VIPs, to it |
//! | `ack_announce` from a client | `ack_announce` (go, with LOCAL_PREF) if the desc says announce and the mapping gives it the VIP; else `fin_announce` to it |
//! | a heartbeat lists VIPs the client should not announce | `fin_announce` of those, to it (a lost `fin_announce` heals within a heartbeat) |
//! | a desc turns announce (or changes LOCAL_PREF) | `syn_announce` to each live client the mapping names |
//! | a desc stops saying announce | `fin_announce` to `broadcast` |
//! | the kernel tree changed | `changes` to `broadcast` |
//! | the mapping changed | `mapping` to `broadcast`, then `syn_announce` to each live client of the VIPs with quorum it newly gives that client |
//! | a heartbeat leaves out a VIP the client should announce, for 15 s | `syn_announce` of it again, to it |

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipvs::Tree;

use super::caps::{Caps, HeldBecause};

use crate::wire::messages::{
    AckGo, AnnounceSpec, Changes, DrainOrder, FinAnnounce, Mapping, ServicesAnswer, SynAnnounce,
    TreeAnswer,
};
use crate::wire::{Dest, Message, MessageId};

/// What the arbiter knows of one VIP's desc file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipQuorum {
    /// The desc says announce.
    pub announce: bool,
    /// Its LOCAL_PREF.
    pub local_pref: u32,
}

/// A live client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Last heartbeat or request.
    pub last_seen: Instant,
    /// Uptime it reported.
    pub uptime: u64,
    /// The id of its last heartbeat taken: a heartbeat with a lower id is a late copy
    /// (published again after a lost confirm), one of a higher epoch a restart.
    pub heartbeat: Option<MessageId>,
    /// VIPs it reports announced.
    pub announced: Vec<IpAddr>,
    /// VIPs it should announce but did not list, and since when (see [`SYN_REPAIR_AFTER`]).
    pub missing: BTreeMap<IpAddr, Instant>,
    /// Serial of the tree it last applied (from its heartbeat).
    pub serial: Option<u64>,
    /// VIPs drained on it (from its heartbeat): no syn repair for them.
    pub drained: Vec<IpAddr>,
}

/// How much of the time from `prev` to `now` the arbiter's own path to the broker was not
/// proven: the part later than `grace` after the broker's last confirm of a message of the
/// arbiter's (`last_confirm`; it publishes a heartbeat every interval).
///
/// The arbiter counts a balancer's silence against `consumer_alive_ttl` only in time its
/// own path was proven. Otherwise the arbiter, cut off with its broker node, would declare
/// every balancer gone before it moved to another node (it notices a partition only when a
/// confirm or the connection's heartbeat times out), and welcome each of them back with the
/// whole tree, mapping and announces, all at once, when it got there.
pub fn unproven(
    prev: Instant,
    now: Instant,
    last_confirm: Option<Instant>,
    grace: Duration,
) -> Duration {
    let proven_until = last_confirm.map_or(prev, |c| (c + grace).clamp(prev, now));
    now.saturating_duration_since(proven_until)
}

/// A client's heartbeat, as [`State::touch`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// The message's id.
    pub id: MessageId,
    /// The uptime it reports.
    pub uptime: u64,
}

/// What [`State::touch`] made of a client's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touched {
    /// A client not known before, or one that restarted: it gets the welcome.
    New,
    /// A known client.
    Known,
    /// A late copy of a heartbeat: nothing was changed, and nothing is to be done.
    Late,
}

/// A VIP a client should announce but has not listed in its heartbeats for this long gets
/// its `syn_announce` again: one lost on the way (the client never heard of it) heals in
/// seconds instead of an `announces_request_interval`. Longer than a cold start of 10,000
/// VIPs on a loaded machine takes, so a slow but running announce cycle is left alone; a
/// prepare that keeps failing (a firewall check) is retried this often.
pub const SYN_REPAIR_AFTER: Duration = Duration::from_secs(15);

/// Why an `ack_announce` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckRefused {
    /// The mapping does not give that balancer the VIP.
    #[error("the mapping does not give {client} the VIP")]
    NotMapped {
        /// The asker.
        client: String,
    },
    /// The desc does not say announce (quorum lost meanwhile, or never had it).
    #[error("the desc file does not say announce")]
    NoQuorum,
    /// The desc file cannot be read and nothing is known of it: neither go nor withdraw.
    #[error("the desc file is unreadable and its state unknown")]
    Unknown,
}

/// Outbound messages.
pub type Out = Vec<(Dest, Message)>;

/// The arbiter's view.
#[derive(Debug, Default)]
pub struct State {
    /// Kernel tree and its serial.
    pub tree: Tree,
    /// Serial of `tree`; bumped on every change.
    pub serial: u64,
    /// The serial this run started from (`serial` before any change).
    pub first_serial: u64,
    /// Balancer → VIPs.
    pub mapping: BTreeMap<String, BTreeSet<IpAddr>>,
    /// VIP → quorum, from the desc files.
    pub quorum: BTreeMap<IpAddr, VipQuorum>,
    /// VIPs whose desc file is unreadable with no earlier state to keep (e.g. broken when
    /// the arbiter started): a broken file never flips an announce, so these get neither
    /// `syn_announce` nor `fin_announce` until it can be read.
    pub unknown: BTreeSet<IpAddr>,
    /// Live clients.
    pub clients: BTreeMap<String, ClientInfo>,
    /// VIPs whose `quorum down` could not be recorded in their desc file: withdrawn, and kept
    /// so whatever the file says until a quorum call for them succeeds again.
    pub forced: BTreeSet<IpAddr>,
    /// The fleet-wide withdrawal cap and the VIPs it holds announced.
    pub caps: Caps,
    /// Balancers a held mapping shrink keeps on a VIP (see [`State::on_mapping`]).
    pub mapping_kept: BTreeMap<IpAddr, BTreeSet<String>>,
    /// Balancers drained by `ipvs-sync drain --balancer`: they get no `syn_announce` until
    /// undrained.
    pub drained: BTreeSet<String>,
    /// VIP → its own BGP communities, from its desc file.
    pub communities: BTreeMap<IpAddr, Vec<String>>,
    /// Firewall mark → the VIP its fwmark services go with, from the mapping.
    pub fwmarks: ipvs::FwmarkVips,
}

impl State {
    /// How many tree states a balancer at `serial` is behind: the changes since its
    /// serial, or, for a serial from before this run (0 = none applied), every change of
    /// this run plus the run's first tree.
    pub fn lag(&self, serial: u64) -> u64 {
        let floor = self.first_serial.saturating_sub(1);
        self.serial.saturating_sub(serial.max(floor))
    }

    /// A client spoke: a heartbeat (`beat`, with what it reported announced) or a request
    /// (`None`, `None`). A heartbeat older than one taken from it already is a late copy,
    /// published again after a lost confirm: it changes nothing (its list of announced VIPs
    /// is stale) and is [`Touched::Late`]. A client is [`Touched::New`] when it was not
    /// known (or expired), or when its heartbeat carries a higher epoch: it restarted.
    pub fn touch(
        &mut self,
        client: &str,
        now: Instant,
        beat: Option<Beat>,
        announced: Option<Vec<IpAddr>>,
    ) -> Touched {
        match self.clients.get_mut(client) {
            Some(c) => {
                let last = c.heartbeat;
                if let (Some(b), Some(last)) = (beat, last) {
                    if b.id <= last {
                        return Touched::Late;
                    }
                }
                c.last_seen = now;
                let restarted = beat
                    .zip(last)
                    .is_some_and(|(b, last)| b.id.epoch > last.epoch);
                if let Some(b) = beat {
                    c.uptime = b.uptime;
                    c.heartbeat = Some(b.id);
                }
                if let Some(a) = announced {
                    c.announced = a;
                }
                if restarted {
                    Touched::New
                } else {
                    Touched::Known
                }
            }
            None => {
                self.clients.insert(
                    client.to_string(),
                    ClientInfo {
                        last_seen: now,
                        uptime: beat.map_or(0, |b| b.uptime),
                        heartbeat: beat.map(|b| b.id),
                        announced: announced.unwrap_or_default(),
                        missing: BTreeMap::new(),
                        serial: None,
                        drained: Vec::new(),
                    },
                );
                Touched::New
            }
        }
    }

    /// Moves every client's `last_seen` `d` later (never past `now`): silence during `d`
    /// does not count towards [`State::expire`]. For time in which the arbiter could not
    /// have heard anyone (see [`unproven`]).
    pub fn excuse(&mut self, d: Duration, now: Instant) {
        if d.is_zero() {
            return; // every tick while the path is proven: no pass over every client
        }
        for c in self.clients.values_mut() {
            c.last_seen = (c.last_seen + d).min(now);
        }
    }

    /// Forgets clients silent for longer than `ttl`; returns their names.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> Vec<String> {
        let gone: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_seen) > ttl)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &gone {
            self.clients.remove(n);
        }
        gone
    }

    /// Everything a new client needs.
    pub fn welcome(&self, client: &str) -> Out {
        let to = Dest::Client(client.to_string());
        let mut out = vec![
            (to.clone(), self.tree_answer()),
            (to.clone(), self.mapping_for(client)),
        ];
        if self.drained.contains(client) {
            out.push((
                to,
                Message::Drain(DrainOrder {
                    drain: true,
                    timeout_s: None,
                }),
            ));
        }
        out.extend(self.announces_answer(client));
        out
    }

    /// Drains (`drain`) or undrains a whole balancer. Returns what to send, or `None` when
    /// nothing changes.
    pub fn drain_balancer(
        &mut self,
        client: &str,
        drain: bool,
        timeout_s: Option<f64>,
    ) -> Option<Out> {
        let changed = if drain {
            self.drained.insert(client.to_owned())
        } else {
            self.drained.remove(client)
        };
        changed.then(|| {
            vec![(
                Dest::Client(client.to_owned()),
                Message::Drain(DrainOrder { drain, timeout_s }),
            )]
        })
    }

    /// The `tree` answer.
    pub fn tree_answer(&self) -> Message {
        Message::Tree(TreeAnswer {
            serial: self.serial,
            tree: self.tree.clone(),
        })
    }

    /// The `services` answer for `vips` (with the fwmark services their marks go with).
    pub fn services_answer(&self, vips: &[IpAddr]) -> Message {
        let set: BTreeSet<IpAddr> = vips.iter().copied().collect();
        Message::Services(ServicesAnswer {
            tree: self.tree.filter_vips(&set, &self.fwmarks),
        })
    }

    /// The `mapping` message.
    pub fn mapping_message(&self) -> Message {
        Message::Mapping(Mapping {
            balancers: self
                .mapping
                .iter()
                .map(|(b, v)| (b.clone(), v.iter().copied().collect()))
                .collect(),
            fwmarks: self.fwmarks.clone(),
        })
    }

    /// The `mapping` answer to one client: only its own entry (empty when the mapping does
    /// not name it, so it withdraws whatever it holds). A client reads nothing else, and the
    /// whole mapping per asker made a fleet's welcome O(balancers²) in memory and broker bytes
    /// (1,000 clients: ~130 KiB each, ~125 MiB queued at once; see benches/scale.rs).
    pub fn mapping_for(&self, client: &str) -> Message {
        let vips: Vec<IpAddr> = self
            .mapping
            .get(client)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        // The marks of its own VIPs only: a balancer without fwmark services gets the
        // layout of releases before them (the broadcast of a change carries every mark).
        let fwmarks = self
            .fwmarks
            .iter()
            .filter(|(_, v)| vips.contains(v))
            .map(|(m, v)| (*m, *v))
            .collect();
        Message::Mapping(Mapping {
            balancers: [(client.to_string(), vips)].into(),
            fwmarks,
        })
    }

    fn spec(&self, vip: IpAddr, q: VipQuorum) -> AnnounceSpec {
        let only: BTreeSet<IpAddr> = [vip].into();
        AnnounceSpec {
            tree: self.tree.filter_vips(&only, &self.fwmarks),
            serial: Some(self.serial),
            local_preference: q.local_pref,
            communities: self.communities.get(&vip).cloned().unwrap_or_default(),
        }
    }

    /// The answer to `announces`: `syn_announce` of the client's VIPs that have quorum and
    /// `fin_announce` of its VIPs that have not, so the client converges whatever it holds.
    pub fn announces_answer(&self, client: &str) -> Out {
        let to = Dest::Client(client.to_string());
        let Some(vips) = self.mapping.get(client) else {
            return Vec::new();
        };
        let drained = self.drained.contains(client);
        let mut syn = SynAnnounce::default();
        let mut fin = Vec::new();
        for vip in vips {
            match self.quorum.get(vip) {
                Some(_) if drained => {}
                Some(q) if q.announce => {
                    syn.vips.insert(*vip, self.spec(*vip, *q));
                }
                _ if self.unknown.contains(vip) => {}
                _ => fin.push(*vip),
            }
        }
        let mut out = Vec::new();
        if !syn.vips.is_empty() {
            out.push((to.clone(), Message::SynAnnounce(syn)));
        }
        if !fin.is_empty() {
            out.push((to, Message::FinAnnounce(FinAnnounce { vips: fin })));
        }
        out
    }

    /// A client says it prepared `vip`: the go, or why not.
    pub fn on_ack(&self, client: &str, vip: IpAddr) -> Result<Message, AckRefused> {
        if !self.mapping.get(client).is_some_and(|v| v.contains(&vip)) {
            return Err(AckRefused::NotMapped {
                client: client.to_string(),
            });
        }
        match self.quorum.get(&vip) {
            Some(q) if q.announce => Ok(Message::AckGo(AckGo {
                vip,
                local_preference: q.local_pref,
                communities: self.communities.get(&vip).cloned().unwrap_or_default(),
            })),
            _ if self.unknown.contains(&vip) => Err(AckRefused::Unknown),
            _ => Err(AckRefused::NoQuorum),
        }
    }

    /// A client's heartbeat lists the VIPs it announces. Those it should not — the mapping
    /// does not give it the VIP, or the desc does not say announce — get a `fin_announce`
    /// to it: a `fin_announce` lost on the way heals within a heartbeat instead of an
    /// `announces_request_interval`. Those it should announce and has not listed for
    /// [`SYN_REPAIR_AFTER`] get their `syn_announce` to it again, after its `mapping`. VIPs
    /// of unreadable desc files are left alone.
    pub fn on_announced(&mut self, client: &str, announced: &[IpAddr], now: Instant) -> Out {
        let to = Dest::Client(client.to_string());
        let mut out = Vec::new();
        let mine = self.mapping.get(client);
        let listed: BTreeSet<IpAddr> = announced.iter().copied().collect();
        let mut due = Vec::new();
        let drained = self.drained.contains(client);
        if let (Some(info), Some(mine)) = (self.clients.get_mut(client), mine) {
            let wanted = mine
                .iter()
                .filter(|v| self.quorum.get(v).is_some_and(|q| q.announce))
                .filter(|v| !drained && !info.drained.contains(v));
            let mut missing = BTreeMap::new();
            for vip in wanted.filter(|v| !listed.contains(v)) {
                let since = info.missing.get(vip).copied().unwrap_or(now);
                if now.saturating_duration_since(since) >= SYN_REPAIR_AFTER {
                    due.push(*vip);
                    missing.insert(*vip, now);
                } else {
                    missing.insert(*vip, since);
                }
            }
            info.missing = missing;
        }
        let mut syn = SynAnnounce::default();
        for vip in due {
            if let Some(q) = self.quorum.get(&vip) {
                syn.vips.insert(vip, self.spec(vip, *q));
            }
        }
        if !syn.vips.is_empty() {
            // Its mapping first: a client whose mapping message was lost would refuse a
            // syn for a VIP it does not know is its own.
            out.push((to.clone(), self.mapping_for(client)));
            out.push((to.clone(), Message::SynAnnounce(syn)));
        }
        let fin: Vec<IpAddr> = announced
            .iter()
            .filter(|vip| {
                let mapped = mine.is_some_and(|m| m.contains(vip));
                // Its own VIP with quorum, or with a desc nobody can read: left as it is.
                let keep = mapped
                    && (self.quorum.get(vip).is_some_and(|q| q.announce)
                        || self.unknown.contains(vip));
                !keep
            })
            .copied()
            .collect();
        if !fin.is_empty() {
            out.push((to, Message::FinAnnounce(FinAnnounce { vips: fin })));
        }
        out
    }

    /// The desc file of `vip` cannot be read: keep what is known; when nothing is, the VIP's
    /// state is unknown (see [`State::unknown`]).
    pub fn on_desc_unreadable(&mut self, vip: IpAddr) {
        if !self.quorum.contains_key(&vip) && !self.forced.contains(&vip) {
            self.unknown.insert(vip);
        }
    }

    /// The quorum handler could not record a `down` of `vip`: withdraw it from every balancer
    /// and keep it withdrawn, whatever its desc file says, until [`State::unforce`].
    pub fn force_withdraw(&mut self, vip: IpAddr) -> Out {
        self.forced.insert(vip);
        self.quorum.remove(&vip);
        self.unknown.remove(&vip);
        vec![(
            Dest::Broadcast,
            Message::FinAnnounce(FinAnnounce { vips: vec![vip] }),
        )]
    }

    /// A quorum call for `vip` succeeded: its desc file is the truth again. Returns whether
    /// it was forced (then its desc must be read afresh).
    pub fn unforce(&mut self, vip: IpAddr) -> bool {
        self.forced.remove(&vip)
    }

    /// The VIP's communities per its desc file; returns whether they changed.
    pub fn set_communities(&mut self, vip: IpAddr, communities: Vec<String>) -> bool {
        let old = if communities.is_empty() {
            self.communities.remove(&vip)
        } else {
            self.communities.insert(vip, communities.clone())
        };
        old.unwrap_or_default() != communities
    }

    /// `ipvs-sync quorum down` has written that `vip` lost quorum: the same as reading its
    /// desc file with `announce` off, without waiting for the read (the read that follows
    /// finds the same and sends nothing more). The withdrawal cap applies as for a read.
    /// Nothing when the VIP is not announced as far as the arbiter knows.
    pub fn on_quorum_down(&mut self, vip: IpAddr, now: Instant) -> Out {
        match self.quorum.get(&vip).copied() {
            Some(q) if q.announce => self.on_quorum(
                vip,
                Some(VipQuorum {
                    announce: false,
                    ..q
                }),
                now,
            ),
            _ => Vec::new(),
        }
    }

    /// A desc file changed at `now`. Returns what to send. A VIP losing quorum past the
    /// withdrawal cap stays announced, held (see [`Caps`]).
    pub fn on_quorum(&mut self, vip: IpAddr, new: Option<VipQuorum>, now: Instant) -> Out {
        if self.forced.contains(&vip) {
            return Vec::new();
        }
        let old = self.quorum.get(&vip).copied();
        let losing = old.is_some_and(|q| q.announce) && !new.is_some_and(|q| q.announce);
        if losing {
            if self.caps.is_held(vip) {
                return Vec::new();
            }
            let quorate = self.quorum.values().filter(|q| q.announce).count();
            if !self.caps.allow(now, quorate) {
                self.caps.hold(vip, now, HeldBecause::QuorumLost);
                return Vec::new();
            }
        } else if new.is_some_and(|q| q.announce) {
            self.caps.unhold(vip);
        }
        // Balancers may still announce what an unreadable desc left alone.
        let was_unknown = self.unknown.remove(&vip);
        match new {
            Some(q) => self.quorum.insert(vip, q),
            None => self.quorum.remove(&vip),
        };
        let was = old.filter(|q| q.announce);
        let now = new.filter(|q| q.announce);
        match (was, now) {
            (_, Some(q)) if was != Some(q) => {
                let mut syn = SynAnnounce::default();
                syn.vips.insert(vip, self.spec(vip, q));
                self.live_clients_of(vip)
                    .into_iter()
                    .map(|c| (Dest::Client(c), Message::SynAnnounce(syn.clone())))
                    .collect()
            }
            (Some(_), None) => vec![(
                Dest::Broadcast,
                Message::FinAnnounce(FinAnnounce { vips: vec![vip] }),
            )],
            (None, None) if was_unknown => vec![(
                Dest::Broadcast,
                Message::FinAnnounce(FinAnnounce { vips: vec![vip] }),
            )],
            _ => Vec::new(),
        }
    }

    /// Withdraws held VIPs (`None`: all of them) now, outside the cap. Returns the VIPs
    /// released and what to send.
    pub fn release(&mut self, vips: Option<&[IpAddr]>) -> (Vec<IpAddr>, Out) {
        let mut out = Vec::new();
        let mut fins = Vec::new();
        let mut remap = false;
        let released = self.caps.release(vips);
        for (vip, held) in &released {
            match held.because {
                HeldBecause::QuorumLost => {
                    if let Some(q) = self.quorum.get_mut(vip) {
                        q.announce = false;
                    }
                    fins.push(*vip);
                }
                HeldBecause::MappingShrink => {
                    for b in self.mapping_kept.remove(vip).unwrap_or_default() {
                        if let Some(v) = self.mapping.get_mut(&b) {
                            v.remove(vip);
                        }
                    }
                    remap = true;
                }
            }
        }
        if remap {
            // Each balancer withdraws what its mapping no longer gives it.
            self.mapping.retain(|_, v| !v.is_empty());
            out.push((Dest::Broadcast, self.mapping_message()));
        }
        if !fins.is_empty() {
            out.push((
                Dest::Broadcast,
                Message::FinAnnounce(FinAnnounce { vips: fins }),
            ));
        }
        (released.into_iter().map(|(v, _)| v).collect(), out)
    }

    /// Says again what the desc of `vip` says (a quorum hand-off for an unchanged desc):
    /// `syn_announce` to its live clients, or `fin_announce` to all. Harmless when repeated,
    /// and it heals a message lost on the way.
    pub fn resend(&self, vip: IpAddr) -> Out {
        match self.quorum.get(&vip) {
            Some(q) if q.announce => {
                let mut syn = SynAnnounce::default();
                syn.vips.insert(vip, self.spec(vip, *q));
                self.live_clients_of(vip)
                    .into_iter()
                    .map(|c| (Dest::Client(c), Message::SynAnnounce(syn.clone())))
                    .collect()
            }
            _ if self.unknown.contains(&vip) => Vec::new(),
            _ => vec![(
                Dest::Broadcast,
                Message::FinAnnounce(FinAnnounce { vips: vec![vip] }),
            )],
        }
    }

    /// Live clients the mapping gives `vip`.
    pub fn live_clients_of(&self, vip: IpAddr) -> Vec<String> {
        self.mapping
            .iter()
            .filter(|(b, vips)| {
                vips.contains(&vip) && self.clients.contains_key(*b) && !self.drained.contains(*b)
            })
            .map(|(b, _)| b.clone())
            .collect()
    }

    /// The kernel tree changed: `changes` to everyone (nothing when equal).
    pub fn on_tree(&mut self, new: Tree) -> Out {
        if new == self.tree {
            return Vec::new();
        }
        let plan = ipvs::diff(&self.tree, &new);
        let from = self.serial;
        self.serial += 1;
        self.tree = new;
        vec![(
            Dest::Broadcast,
            Message::Changes(Changes {
                from_serial: from,
                to_serial: self.serial,
                plan,
            }),
        )]
    }

    /// A mapping was read: its VIPs go through [`State::on_mapping`]; marks that go with
    /// other VIPs than before send the `mapping` to everyone too, even with the same VIPs.
    /// (A syn sent after this cuts the VIP's tree with the new marks.)
    pub fn on_service_mapping(
        &mut self,
        new: config::mapping::ServiceMapping,
        now: Instant,
    ) -> Out {
        let marks_changed = new.fwmarks != self.fwmarks;
        self.fwmarks = new.fwmarks;
        let mut out = self.on_mapping(new.vips, now);
        if out.is_empty() && marks_changed {
            out.push((Dest::Broadcast, self.mapping_message()));
        }
        out
    }

    /// The mapping changed: `mapping` to everyone (nothing when equal).
    ///
    /// A new mapping that takes a VIP with quorum from most of its balancers at once counts
    /// against the withdrawal cap like a quorum loss; past the cap, those balancers keep the
    /// VIP (held) until `release`.
    pub fn on_mapping(&mut self, new: BTreeMap<String, BTreeSet<IpAddr>>, now: Instant) -> Out {
        let new = self.cap_mapping(new, now);
        if new == self.mapping {
            return Vec::new();
        }
        let old = std::mem::replace(&mut self.mapping, new);
        let mut out = vec![(Dest::Broadcast, self.mapping_message())];
        // A live client the new mapping gives a VIP that already has quorum hears of it now
        // (after the mapping, on the same lane), not at its next announces request. VIPs new
        // to the whole mapping have no known desc yet: reading it sends their syn.
        for (client, vips) in &self.mapping {
            if !self.clients.contains_key(client) || self.drained.contains(client) {
                continue;
            }
            let before = old.get(client);
            let mut syn = SynAnnounce::default();
            for vip in vips
                .iter()
                .filter(|v| !before.is_some_and(|b| b.contains(v)))
            {
                if let Some(q) = self.quorum.get(vip).filter(|q| q.announce) {
                    syn.vips.insert(*vip, self.spec(*vip, *q));
                }
            }
            if !syn.vips.is_empty() {
                out.push((Dest::Client(client.clone()), Message::SynAnnounce(syn)));
            }
        }
        out
    }

    /// `new` with the balancers of held mapping shrinks put back (see [`State::on_mapping`]).
    fn cap_mapping(
        &mut self,
        mut new: BTreeMap<String, BTreeSet<IpAddr>>,
        now: Instant,
    ) -> BTreeMap<String, BTreeSet<IpAddr>> {
        // Holds still needed: the VIP still has quorum and the new mapping still drops them.
        let kept = std::mem::take(&mut self.mapping_kept);
        for (vip, balancers) in kept {
            let still: BTreeSet<String> = balancers
                .into_iter()
                .filter(|b| !new.get(b).is_some_and(|v| v.contains(&vip)))
                .collect();
            if still.is_empty() || !self.caps.is_held(vip) {
                self.caps.unhold(vip);
                continue;
            }
            for b in &still {
                new.entry(b.clone()).or_default().insert(vip);
            }
            self.mapping_kept.insert(vip, still);
        }
        let quorate: Vec<IpAddr> = self
            .quorum
            .iter()
            .filter(|(_, q)| q.announce)
            .map(|(v, _)| *v)
            .collect();
        for vip in quorate {
            if self.caps.is_held(vip) {
                continue;
            }
            let before: BTreeSet<&String> = self
                .mapping
                .iter()
                .filter(|(_, v)| v.contains(&vip))
                .map(|(b, _)| b)
                .collect();
            let removed: BTreeSet<String> = before
                .iter()
                .filter(|b| !new.get(**b).is_some_and(|v| v.contains(&vip)))
                .map(|b| (*b).clone())
                .collect();
            if removed.is_empty() || removed.len() * 2 <= before.len() {
                continue;
            }
            let count = self.quorum.values().filter(|q| q.announce).count();
            if self.caps.allow(now, count) {
                continue;
            }
            self.caps.hold(vip, now, HeldBecause::MappingShrink);
            for b in &removed {
                new.entry(b.clone()).or_default().insert(vip);
            }
            self.mapping_kept.insert(vip, removed);
        }
        new
    }

    /// Every VIP of the mapping (the desc files to watch).
    pub fn all_vips(&self) -> BTreeSet<IpAddr> {
        self.mapping.values().flatten().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::{Dest as RealServer, Service, ServiceKey, ServiceSpec};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn state() -> State {
        let mut s = State::default();
        s.mapping
            .insert("lb1".into(), [ip("192.0.2.10"), ip("2001:db8::10")].into());
        s.mapping.insert("lb2".into(), [ip("192.0.2.10")].into());
        let mut svc = Service::new(ServiceSpec::new(
            ServiceKey::tcp(ip("192.0.2.10"), 80),
            "wrr",
        ));
        svc.insert_dest(RealServer::new(ip("198.51.100.1"), 80).weight(1));
        s.tree.insert(svc);
        s.tree.insert(Service::new(ServiceSpec::new(
            ServiceKey::tcp(ip("192.0.2.99"), 80),
            "rr",
        )));
        s
    }

    fn kinds(out: &Out) -> Vec<(String, &'static str)> {
        out.iter()
            .map(|(d, m)| (d.address().to_string(), m.kind().as_str()))
            .collect()
    }

    #[test]
    fn quorum_up_syns_only_live_mapped_clients_with_only_that_vips_tree() {
        let mut s = state();
        let now = Instant::now();
        s.touch("lb1", now, beat(1, 1, 1), None);
        let out = s.on_quorum(
            ip("192.0.2.10"),
            Some(VipQuorum {
                announce: true,
                local_pref: 150,
            }),
            Instant::now(),
        );
        assert_eq!(kinds(&out), vec![("lb1".to_string(), "syn_announce")]);
        let Message::SynAnnounce(syn) = &out[0].1 else {
            panic!()
        };
        let spec = &syn.vips[&ip("192.0.2.10")];
        assert_eq!(spec.local_preference, 150);
        assert_eq!(spec.tree.vips(), [ip("192.0.2.10")].into());
        // Same quorum again: nothing; a new LOCAL_PREF: a new syn.
        assert!(s
            .on_quorum(
                ip("192.0.2.10"),
                Some(VipQuorum {
                    announce: true,
                    local_pref: 150
                }),
                Instant::now()
            )
            .is_empty());
        assert_eq!(
            s.on_quorum(
                ip("192.0.2.10"),
                Some(VipQuorum {
                    announce: true,
                    local_pref: 120
                }),
                Instant::now()
            )
            .len(),
            1
        );
        // Down: one broadcast fin.
        let out = s.on_quorum(
            ip("192.0.2.10"),
            Some(VipQuorum {
                announce: false,
                local_pref: 120,
            }),
            Instant::now(),
        );
        assert_eq!(kinds(&out), vec![("broadcast".to_string(), "fin_announce")]);
        // A file that disappears while not announcing: nothing.
        assert!(s
            .on_quorum(ip("192.0.2.10"), None, Instant::now())
            .is_empty());
    }

    #[test]
    fn ack_checks_mapping_and_quorum() {
        let mut s = state();
        s.on_quorum(
            ip("192.0.2.10"),
            Some(VipQuorum {
                announce: true,
                local_pref: 150,
            }),
            Instant::now(),
        );
        assert!(matches!(
            s.on_ack("lb2", ip("192.0.2.10")),
            Ok(Message::AckGo(AckGo {
                local_preference: 150,
                ..
            }))
        ));
        assert_eq!(
            s.on_ack("lb2", ip("2001:db8::10")),
            Err(AckRefused::NotMapped {
                client: "lb2".into()
            })
        );
        assert_eq!(
            s.on_ack("stranger", ip("192.0.2.10")),
            Err(AckRefused::NotMapped {
                client: "stranger".into()
            })
        );
        assert_eq!(
            s.on_ack("lb1", ip("2001:db8::10")),
            Err(AckRefused::NoQuorum)
        );
    }

    #[test]
    fn fwmark_services_go_with_their_marks_vip_to_its_balancers_only() {
        let mut s = state();
        let mark = |m| {
            Service::new(ServiceSpec::new(
                ServiceKey::fwmark(ipvs::Family::Inet, m),
                "sh",
            ))
        };
        s.tree.insert(mark(7));
        s.tree.insert(mark(8));
        let now = Instant::now();
        s.touch("lb1", now, beat(1, 1, 1), None);
        let mapping = |marks: &[(u32, &str)]| config::mapping::ServiceMapping {
            vips: s.mapping.clone(),
            fwmarks: marks.iter().map(|(m, v)| (*m, ip(v))).collect(),
        };
        // Marks alone changing still tell everyone: 7 goes with a VIP of lb1 only.
        let new = mapping(&[(7, "2001:db8::10"), (8, "192.0.2.99")]);
        let out = s.on_service_mapping(new.clone(), now);
        assert_eq!(kinds(&out), vec![("broadcast".to_string(), "mapping")]);
        assert!(s.on_service_mapping(new, now).is_empty(), "unchanged");
        let Message::Mapping(m) = s.mapping_for("lb1") else {
            panic!()
        };
        assert_eq!(m.fwmarks, [(7, ip("2001:db8::10"))].into());
        let Message::Mapping(m) = s.mapping_for("lb2") else {
            panic!()
        };
        assert!(m.fwmarks.is_empty(), "lb2 does not serve 2001:db8::10");
        // The VIP's syn carries its fwmark service, and no other VIP's.
        let out = s.on_quorum(
            ip("2001:db8::10"),
            Some(VipQuorum {
                announce: true,
                local_pref: 100,
            }),
            now,
        );
        let Message::SynAnnounce(syn) = &out[0].1 else {
            panic!("{out:?}")
        };
        let ids: Vec<String> = syn.vips[&ip("2001:db8::10")]
            .tree
            .services()
            .map(|s| s.key().to_string())
            .collect();
        assert_eq!(ids, ["fwmark:v4:7"]);
        let Message::Services(a) = s.services_answer(&[ip("192.0.2.10")]) else {
            panic!()
        };
        assert_eq!(a.tree.len(), 1, "192.0.2.10 has no mark");
    }

    #[test]
    fn announces_answer_syns_quorate_and_fins_the_rest() {
        let mut s = state();
        s.on_quorum(
            ip("192.0.2.10"),
            Some(VipQuorum {
                announce: true,
                local_pref: 100,
            }),
            Instant::now(),
        );
        let out = s.announces_answer("lb1");
        assert_eq!(
            kinds(&out),
            vec![
                ("lb1".into(), "syn_announce"),
                ("lb1".into(), "fin_announce")
            ]
        );
        let Message::FinAnnounce(fin) = &out[1].1 else {
            panic!()
        };
        assert_eq!(fin.vips, vec![ip("2001:db8::10")]);
        assert!(s.announces_answer("unknown").is_empty());
        // A client's mapping answer is its own entry only; an unmapped one gets an empty one.
        let Message::Mapping(m) = s.mapping_for("lb2") else {
            panic!()
        };
        assert_eq!(m.balancers.len(), 1);
        assert_eq!(m.balancers["lb2"], vec![ip("192.0.2.10")]);
        let Message::Mapping(m) = s.mapping_for("unknown") else {
            panic!()
        };
        assert_eq!(m.balancers["unknown"], Vec::<IpAddr>::new());
        // The broadcast on a change still carries every balancer.
        let Message::Mapping(m) = s.mapping_message() else {
            panic!()
        };
        assert_eq!(m.balancers.len(), 2);
        let w = s.welcome("lb2");
        assert_eq!(
            kinds(&w),
            vec![
                ("lb2".into(), "tree"),
                ("lb2".into(), "mapping"),
                ("lb2".into(), "syn_announce")
            ]
        );
    }

    #[test]
    fn lag_counts_changes_and_a_serial_of_another_run_as_everything() {
        let st = State {
            first_serial: 1_000,
            serial: 1_003,
            ..State::default()
        };
        assert_eq!(st.lag(1_003), 0);
        assert_eq!(st.lag(1_001), 2);
        assert_eq!(st.lag(1_000), 3);
        // Nothing applied, or an earlier run's tree: the first tree and three changes.
        assert_eq!(st.lag(0), 4);
        assert_eq!(st.lag(999), 4);
        assert_eq!(st.lag(5_000), 0);
    }

    #[test]
    fn tree_changes_carry_serials_and_a_minimal_plan() {
        let mut s = state();
        let mut new = s.tree.clone();
        new.remove(&ServiceKey::tcp(ip("192.0.2.99"), 80));
        let out = s.on_tree(new.clone());
        let Message::Changes(c) = &out[0].1 else {
            panic!()
        };
        assert_eq!((c.from_serial, c.to_serial, c.plan.len()), (0, 1, 1));
        assert!(s.on_tree(new).is_empty());
    }

    /// Heartbeat `seq` of run `epoch` of a client, reporting `uptime`.
    fn beat(epoch: u64, seq: u64, uptime: u64) -> Option<Beat> {
        Some(Beat {
            id: MessageId { epoch, seq },
            uptime,
        })
    }

    #[test]
    fn clients_expire_and_restarts_are_seen() {
        let mut s = State::default();
        let t0 = Instant::now();
        assert_eq!(s.touch("lb1", t0, beat(1, 1, 100), None), Touched::New);
        assert_eq!(s.touch("lb1", t0, beat(1, 2, 103), None), Touched::Known);
        assert_eq!(s.touch("lb1", t0, None, None), Touched::Known, "a request");
        assert_eq!(
            s.touch("lb1", t0, beat(2, 1, 2), None),
            Touched::New,
            "a new epoch: restarted"
        );
        assert!(s
            .expire(t0 + Duration::from_secs(10), Duration::from_secs(15))
            .is_empty());
        assert_eq!(
            s.expire(t0 + Duration::from_secs(16), Duration::from_secs(15)),
            vec!["lb1".to_string()]
        );
    }

    #[test]
    fn time_past_the_last_confirm_and_its_grace_is_unproven() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let (prev, now, grace) = (t0 + s(10), t0 + s(11), s(2));
        // Confirmed within the grace: all of it proven.
        assert_eq!(unproven(prev, now, Some(t0 + s(10)), grace), s(0));
        assert_eq!(unproven(prev, now, Some(t0 + s(9)), grace), s(0));
        // The grace ran out half-way through the tick.
        assert_eq!(
            unproven(prev, now, Some(t0 + Duration::from_millis(8_500)), grace),
            Duration::from_millis(500)
        );
        // Long ago, or never: the whole tick.
        assert_eq!(unproven(prev, now, Some(t0), grace), s(1));
        assert_eq!(unproven(prev, now, None, grace), s(1));
    }

    /// The arbiter cut off with its broker node for longer than `consumer_alive_ttl`: the
    /// balancers' silence in that time is excused, so none is gone when it gets back.
    #[test]
    fn silence_while_the_arbiter_was_cut_off_does_not_expire_a_client() {
        let mut s = State::default();
        let t0 = Instant::now();
        let (ttl, grace, tick) = (
            Duration::from_secs(15),
            Duration::from_secs(6),
            Duration::from_secs(1),
        );
        s.touch("lb1", t0, beat(1, 1, 1), None);
        s.touch("lb2", t0, beat(1, 1, 1), None);
        // The last confirm came at t0; ticks every second for 40 s. lb2 keeps speaking
        // (its heartbeats queue on the majority); lb1 died at t0.
        let mut prev = t0;
        for k in 1..=40 {
            let now = t0 + tick * k;
            s.excuse(unproven(prev, now, Some(t0), grace), now);
            assert!(s.expire(now, ttl).is_empty(), "expired at {k} s");
            prev = now;
        }
        // Back on a node of the majority: confirms come again, lb2's heartbeats too.
        let back = t0 + Duration::from_secs(41);
        s.touch("lb2", back, beat(1, 2, 41), None);
        let mut gone = Vec::new();
        for k in 0..20 {
            let now = back + tick * k;
            s.excuse(unproven(prev, now, Some(now), grace), now);
            gone.extend(s.expire(now, ttl));
            if k % 3 == 0 {
                s.touch(
                    "lb2",
                    now,
                    beat(1, 3 + u64::from(k), 41 + u64::from(k)),
                    None,
                );
            }
            prev = now;
        }
        // lb1 is gone once its silence in proven time passed the ttl: 6 s of grace before
        // the cut was noticed, then 9 s after the return.
        assert_eq!(gone, ["lb1"]);
        assert!(s.clients.contains_key("lb2"));
    }

    /// A heartbeat published again after a lost confirm (a broker node lost, a partition)
    /// keeps its id, and with it its uptime and its list of announced VIPs, and can arrive
    /// after newer ones: it is no restart, and its stale list replaces nothing.
    #[test]
    fn a_late_copy_of_a_client_heartbeat_changes_nothing() {
        let mut s = State::default();
        let t0 = Instant::now();
        let vip: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(
            s.touch("lb1", t0, beat(5, 40, 40), Some(vec![])),
            Touched::New
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            s.touch("lb1", t1, beat(5, 41, 41), Some(vec![vip])),
            Touched::Known
        );
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(
            s.touch("lb1", t2, beat(5, 39, 39), Some(vec![])),
            Touched::Late
        );
        let c = &s.clients["lb1"];
        assert_eq!((c.uptime, &c.announced, c.last_seen), (41, &vec![vip], t1));
        assert_eq!(
            s.touch("lb1", t2, beat(5, 41, 41), Some(vec![])),
            Touched::Late,
            "the same heartbeat twice"
        );
        assert_eq!(s.touch("lb1", t2, beat(5, 42, 42), None), Touched::Known);
    }

    fn up(lp: u32) -> Option<VipQuorum> {
        Some(VipQuorum {
            announce: true,
            local_pref: lp,
        })
    }

    fn fins(out: &Out) -> Vec<(String, Vec<IpAddr>)> {
        out.iter()
            .filter_map(|(d, m)| match m {
                Message::FinAnnounce(f) => Some((d.address().to_string(), f.vips.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn heartbeat_of_vips_not_given_to_the_client_gets_them_withdrawn_by_unicast() {
        let mut s = state();
        s.on_quorum(ip("192.0.2.10"), up(100), Instant::now());
        s.on_quorum(
            ip("2001:db8::10"),
            Some(VipQuorum {
                announce: false,
                local_pref: 100,
            }),
            Instant::now(),
        );
        // Everything it announces is its own and quorate: nothing to say.
        assert!(s
            .on_announced("lb1", &[ip("192.0.2.10")], Instant::now())
            .is_empty());
        assert!(s.on_announced("lb1", &[], Instant::now()).is_empty());
        // Its own VIP without quorum; to lb2, a VIP the mapping gives only to lb1. Always to
        // the one client, never broadcast: lb1 keeps announcing what is its.
        assert_eq!(
            fins(&s.on_announced(
                "lb1",
                &[ip("192.0.2.10"), ip("2001:db8::10")],
                Instant::now()
            )),
            vec![("lb1".to_string(), vec![ip("2001:db8::10")])]
        );
        assert_eq!(
            fins(&s.on_announced(
                "lb2",
                &[ip("192.0.2.10"), ip("2001:db8::10")],
                Instant::now()
            )),
            vec![("lb2".to_string(), vec![ip("2001:db8::10")])]
        );
        // A VIP nobody maps, and a client nobody maps.
        assert_eq!(
            fins(&s.on_announced("lb2", &[ip("198.51.100.7")], Instant::now())),
            vec![("lb2".to_string(), vec![ip("198.51.100.7")])]
        );
        assert_eq!(
            fins(&s.on_announced("stranger", &[ip("192.0.2.10")], Instant::now())),
            vec![("stranger".to_string(), vec![ip("192.0.2.10")])]
        );
    }

    #[test]
    fn an_unreadable_desc_with_no_earlier_state_flips_nothing() {
        let mut s = state();
        let vip = ip("2001:db8::10");
        s.on_desc_unreadable(vip);
        assert!(s.unknown.contains(&vip));
        // Neither fin in the announces answer, nor on a heartbeat, nor on its ack.
        assert_eq!(
            fins(&s.announces_answer("lb1")),
            vec![("lb1".to_string(), vec![ip("192.0.2.10")])],
            "only the VIP whose desc is known to be missing"
        );
        assert!(s.on_announced("lb1", &[vip], Instant::now()).is_empty());
        assert_eq!(s.on_ack("lb1", vip), Err(AckRefused::Unknown));
        assert!(s.resend(vip).is_empty());
        // Not lb2's VIP: withdrawn from lb2 whatever its desc says.
        assert_eq!(
            fins(&s.on_announced("lb2", &[vip], Instant::now())).len(),
            1
        );
        // Readable again (missing): withdrawn wherever it may still be announced.
        assert_eq!(
            fins(&s.on_quorum(vip, None, Instant::now())),
            vec![("broadcast".to_string(), vec![vip])]
        );
        assert!(!s.unknown.contains(&vip));
        assert_eq!(
            fins(&s.on_announced("lb1", &[vip], Instant::now())),
            vec![("lb1".to_string(), vec![vip])]
        );

        // Unreadable after a known state: that state is kept, not unknown.
        let other = ip("192.0.2.10");
        s.on_quorum(other, up(110), Instant::now());
        s.on_desc_unreadable(other);
        assert!(!s.unknown.contains(&other));
        assert!(s.on_announced("lb1", &[other], Instant::now()).is_empty());
        assert!(s.on_ack("lb1", other).is_ok());
    }

    fn syns(out: &Out) -> Vec<(String, Vec<IpAddr>)> {
        out.iter()
            .filter_map(|(d, m)| match m {
                Message::SynAnnounce(s) => {
                    Some((d.address().to_string(), s.vips.keys().copied().collect()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_vip_left_out_of_heartbeats_for_long_gets_its_syn_again() {
        let mut s = state();
        let t0 = Instant::now();
        let vip = ip("192.0.2.10");
        s.touch("lb1", t0, beat(1, 1, 1), None);
        s.on_quorum(vip, up(130), Instant::now());
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // Not listed: the clock starts; nothing until SYN_REPAIR_AFTER has passed.
        assert!(s.on_announced("lb1", &[], at(1)).is_empty());
        assert!(s.on_announced("lb1", &[], at(15)).is_empty());
        let out = s.on_announced("lb1", &[], at(16));
        assert_eq!(
            kinds(&out),
            vec![("lb1".into(), "mapping"), ("lb1".into(), "syn_announce")]
        );
        assert_eq!(syns(&out), vec![("lb1".to_string(), vec![vip])]);
        let Message::SynAnnounce(syn) = &out[1].1 else {
            panic!()
        };
        assert_eq!(syn.vips[&vip].local_preference, 130);
        assert_eq!(syn.vips[&vip].tree.vips(), [vip].into());
        // Said again: the clock restarts.
        assert!(s.on_announced("lb1", &[], at(17)).is_empty());
        assert_eq!(syns(&s.on_announced("lb1", &[], at(31))).len(), 1);
        // Listed once: forgotten; missing again later starts a new clock.
        assert!(s.on_announced("lb1", &[vip], at(32)).is_empty());
        assert!(s.on_announced("lb1", &[], at(33)).is_empty());
        assert!(s.on_announced("lb1", &[], at(47)).is_empty());
        assert_eq!(syns(&s.on_announced("lb1", &[], at(48))).len(), 1);
        // No quorum, or not this client's VIP: never.
        s.on_quorum(
            vip,
            Some(VipQuorum {
                announce: false,
                local_pref: 130,
            }),
            Instant::now(),
        );
        assert!(s.on_announced("lb1", &[], at(100)).is_empty());
        s.touch("stranger", t0, beat(1, 1, 1), None);
        assert!(s.on_announced("stranger", &[], at(200)).is_empty());
    }

    #[test]
    fn a_client_newly_given_a_quorate_vip_gets_its_syn_with_the_mapping() {
        let mut s = state();
        let now = Instant::now();
        let vip = ip("2001:db8::10");
        s.on_quorum(vip, up(100), Instant::now());
        s.touch("lb1", now, beat(1, 1, 1), None);
        s.touch("lb2", now, beat(1, 1, 1), None);
        let mut m = s.mapping.clone();
        m.get_mut("lb2").unwrap().insert(vip);
        m.insert("lb3".into(), [vip].into()); // not live: nothing to it
        let out = s.on_mapping(m, Instant::now());
        assert_eq!(kinds(&out)[0], ("broadcast".to_string(), "mapping"));
        assert_eq!(syns(&out), vec![("lb2".to_string(), vec![vip])]);
        // A VIP without quorum given to a client: the mapping only.
        let mut m = s.mapping.clone();
        m.get_mut("lb1").unwrap().insert(ip("192.0.2.99"));
        let out = s.on_mapping(m.clone(), Instant::now());
        assert_eq!(kinds(&out), vec![("broadcast".to_string(), "mapping")]);
        assert!(s.on_mapping(m, Instant::now()).is_empty(), "unchanged");
    }

    fn fin_vips(out: &Out) -> Vec<IpAddr> {
        out.iter()
            .flat_map(|(_, m)| match m {
                Message::FinAnnounce(f) => f.vips.clone(),
                _ => vec![],
            })
            .collect()
    }

    /// `n` VIPs of lb1, all announced, under a withdrawal cap of `limit`.
    fn capped(limit: config::WithdrawLimit, n: u8, now: Instant) -> (State, Vec<IpAddr>) {
        let mut s = State {
            caps: Caps::new(Some(limit), Duration::from_secs(60)),
            ..State::default()
        };
        let vips: Vec<IpAddr> = (1..=n).map(|n| IpAddr::from([192, 0, 2, n])).collect();
        s.mapping
            .insert("lb1".into(), vips.iter().copied().collect());
        for v in &vips {
            s.on_quorum(*v, Some(announced(100)), now);
        }
        (s, vips)
    }

    fn announced(local_pref: u32) -> VipQuorum {
        VipQuorum {
            announce: true,
            local_pref,
        }
    }

    #[test]
    fn past_the_withdraw_limit_quorum_losses_are_held_until_released() {
        let now = Instant::now();
        let (mut s, vips) = capped(config::WithdrawLimit::Percent(50), 10, now);
        let up = Some(announced(100));
        let mut withdrawn = Vec::new();
        for v in &vips {
            withdrawn.extend(fin_vips(&s.on_quorum(*v, None, now)));
        }
        assert_eq!(withdrawn.len(), 5, "{withdrawn:?}");
        assert_eq!(s.caps.held().len(), 5);
        for v in s.caps.held().keys() {
            assert!(s.quorum[v].announce, "a held VIP stays announced");
            assert!(s.on_ack("lb1", *v).is_ok(), "and gets its go");
        }
        // Its quorum back: no longer held, nothing to send.
        let back = *s.caps.held().keys().next().unwrap();
        assert!(s.on_quorum(back, up, now).is_empty());
        assert!(!s.caps.is_held(back));
        let (released, out) = s.release(None);
        assert_eq!(released.len(), 4);
        assert_eq!(fin_vips(&out).len(), 4);
        assert!(s.caps.held().is_empty());
    }

    #[test]
    fn a_quorum_down_withdraws_before_the_read_and_the_read_sends_nothing_more() {
        let mut s = state();
        let vip = ip("192.0.2.10");
        let now = Instant::now();
        s.touch("lb1", now, beat(1, 1, 1), None);
        let up = announced(150);
        s.on_quorum(vip, Some(up), now);
        let out = s.on_quorum_down(vip, now);
        assert_eq!(fin_vips(&out), vec![vip]);
        assert_eq!(kinds(&out), vec![("broadcast".to_string(), "fin_announce")]);
        // The desc read that follows: announce off, same LOCAL_PREF: nothing more.
        let read = VipQuorum {
            announce: false,
            ..up
        };
        assert!(s.on_quorum(vip, Some(read), now).is_empty());
        // A second down, and a down of a VIP never announced: nothing.
        assert!(s.on_quorum_down(vip, now).is_empty());
        assert!(s.on_quorum_down(ip("192.0.2.99"), now).is_empty());
        // Its quorum back by the read of an `up`: a syn again.
        assert_eq!(
            kinds(&s.on_quorum(vip, Some(up), now)),
            vec![("lb1".to_string(), "syn_announce")]
        );
    }

    #[test]
    fn a_quorum_down_before_the_read_keeps_the_withdraw_limit() {
        let now = Instant::now();
        let (mut s, vips) = capped(config::WithdrawLimit::Count(1), 3, now);
        assert_eq!(fin_vips(&s.on_quorum_down(vips[0], now)), vec![vips[0]]);
        assert!(s.on_quorum_down(vips[1], now).is_empty(), "past the limit");
        assert!(s.caps.is_held(vips[1]));
        assert!(s.quorum[&vips[1]].announce, "a held VIP stays announced");
        // The read that follows keeps it held.
        assert!(s.on_quorum(vips[1], None, now).is_empty());
    }

    #[test]
    fn a_mapping_that_takes_a_vip_from_most_balancers_is_held_past_the_limit() {
        let mut s = State {
            caps: Caps::new(
                Some(config::WithdrawLimit::Count(1)),
                Duration::from_secs(60),
            ),
            ..State::default()
        };
        let now = Instant::now();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let all = |v: &[IpAddr]| -> BTreeSet<IpAddr> { v.iter().copied().collect() };
        let full: BTreeMap<String, BTreeSet<IpAddr>> = ["lb1", "lb2", "lb3"]
            .iter()
            .map(|n| (n.to_string(), all(&[a, b])))
            .collect();
        s.on_mapping(full.clone(), now);
        let up = Some(VipQuorum {
            announce: true,
            local_pref: 100,
        });
        s.on_quorum(a, up, now);
        s.on_quorum(b, up, now);
        // A wrong push keeps only lb1: both VIPs lose most of their balancers.
        let wrong: BTreeMap<String, BTreeSet<IpAddr>> = [("lb1".to_string(), all(&[a, b]))].into();
        s.on_mapping(wrong.clone(), now);
        assert_eq!(s.caps.held().len(), 1, "one went (the limit), one held");
        let held = *s.caps.held().keys().next().unwrap();
        assert!(s.mapping["lb2"].contains(&held) && s.mapping["lb3"].contains(&held));
        // The same mapping again keeps the hold.
        assert!(s.on_mapping(wrong.clone(), now).is_empty());
        let (released, out) = s.release(Some(&[held]));
        assert_eq!(released, vec![held]);
        assert!(matches!(&out[..], [(Dest::Broadcast, Message::Mapping(_))]));
        assert!(!s.mapping.contains_key("lb2"));
    }

    #[test]
    fn a_forced_withdraw_holds_until_a_quorum_call_succeeds() {
        let mut s = State::default();
        let vip = ip("192.0.2.10");
        s.mapping.insert("lb1".into(), BTreeSet::from([vip]));
        s.touch("lb1", Instant::now(), beat(1, 1, 1), None);
        s.on_quorum(
            vip,
            Some(VipQuorum {
                announce: true,
                local_pref: 100,
            }),
            Instant::now(),
        );
        let out = s.force_withdraw(vip);
        assert!(
            matches!(&out[..], [(Dest::Broadcast, Message::FinAnnounce(f))] if f.vips == vec![vip])
        );
        // A desc that says announce (a stuck writer that finished late) changes nothing.
        assert!(s
            .on_quorum(
                vip,
                Some(VipQuorum {
                    announce: true,
                    local_pref: 100
                }),
                Instant::now()
            )
            .is_empty());
        assert!(s.on_ack("lb1", vip).is_err(), "no go while forced");
        let out = s.on_announced("lb1", &[vip], Instant::now());
        assert!(
            out.iter()
                .any(|(_, m)| matches!(m, Message::FinAnnounce(_))),
            "repaired as withdrawn"
        );
        assert!(s.unforce(vip));
        assert!(!s
            .on_quorum(
                vip,
                Some(VipQuorum {
                    announce: true,
                    local_pref: 100
                }),
                Instant::now()
            )
            .is_empty());
    }

    #[test]
    fn a_drained_balancer_gets_no_syn_until_undrained() {
        let mut s = State::default();
        let vip = ip("192.0.2.10");
        s.mapping.insert("lb1".into(), BTreeSet::from([vip]));
        s.mapping.insert("lb2".into(), BTreeSet::from([vip]));
        let now = Instant::now();
        s.touch("lb1", now, beat(1, 1, 1), None);
        s.touch("lb2", now, beat(1, 1, 1), None);
        let out = s.drain_balancer("lb1", true, Some(30.0)).unwrap();
        assert!(
            matches!(&out[..], [(Dest::Client(c), Message::Drain(d))] if c == "lb1" && d.drain)
        );
        assert!(
            s.drain_balancer("lb1", true, None).is_none(),
            "already drained"
        );
        let out = s.on_quorum(
            vip,
            Some(VipQuorum {
                announce: true,
                local_pref: 100,
            }),
            now,
        );
        let to: Vec<&Dest> = out.iter().map(|(d, _)| d).collect();
        assert_eq!(
            to,
            vec![&Dest::Client("lb2".into())],
            "no syn to the drained one"
        );
        assert!(s
            .announces_answer("lb1")
            .iter()
            .all(|(_, m)| !matches!(m, Message::SynAnnounce(_))));
        assert!(s
            .welcome("lb1")
            .iter()
            .any(|(_, m)| matches!(m, Message::Drain(_))));
        // No syn repair for it either.
        let later = now + SYN_REPAIR_AFTER * 2;
        s.on_announced("lb1", &[], now);
        assert!(s
            .on_announced("lb1", &[], later)
            .iter()
            .all(|(_, m)| !matches!(m, Message::SynAnnounce(_))));
        let out = s.drain_balancer("lb1", false, None).unwrap();
        assert!(matches!(&out[..], [(_, Message::Drain(d))] if !d.drain));
        assert!(s
            .announces_answer("lb1")
            .iter()
            .any(|(_, m)| matches!(m, Message::SynAnnounce(_))));
    }
}
