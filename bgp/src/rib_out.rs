//! Per-peer Adj-RIB-Out with UPDATE packing.
//!
//! Holds what the peer has been sent and what is still queued. [`AdjRibOut::next_update`]
//! produces one UPDATE at a time so the writer pulls work only as fast as the socket drains,
//! and always in this order:
//!
//! 1. withdraws, oldest first (IPv4 in the withdrawn-routes field, IPv6 in MP_UNREACH_NLRI),
//!    so a withdraw never waits behind a backlog of announces;
//! 2. announces, prefixes with equal attributes packed together up to 4096 bytes per message
//!    (IPv4 in NLRI, IPv6 in one MP_REACH_NLRI, as BIRD does — not one prefix per UPDATE);
//! 3. End-of-RIB for every negotiated family once the initial dump is out.
//!
//! ```text
//!  announce(P, A) ─▶ pending[P] = Announce(A) ─▶ group of A: [P, …] ──┐ pack ─▶ held[P] = A
//!  withdraw(P)    ─▶ pending[P] = Withdraw(t) ─▶ FIFO: [(t, P), …]  ──┘       held − P
//! ```
//! `pending` is the truth; the group lists and the FIFO may hold stale entries (a prefix
//! announced again with other attributes, or withdrawn before it went out), which the packer
//! skips. While the session is down nothing is queued: [`AdjRibOut::session_up`] takes the
//! speaker's whole table and queues it again (re-announce on re-establishment).
//!
//! The RIB also counts UPDATEs produced and written, for awaitable withdraws
//! ([`crate::withdrawal`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracing::warn;

use crate::packet::nlri::prefix_wire_len;
use crate::packet::{EncodeCtx, Family, MpReach, MpUnreach, Update, HEADER_LEN, MAX_MESSAGE_LEN};
use crate::policy::{ExportCtx, RouteAttrs};
use crate::withdrawal::{PeerWait, Waiters};

/// Bytes of an UPDATE before any withdrawn route, attribute or NLRI.
const UPDATE_OVERHEAD: usize = HEADER_LEN + 4;
/// An MP attribute header with extended length (flags, type, 2-octet length) + AFI/SAFI.
const MP_UNREACH_OVERHEAD: usize = 4 + 3;

/// A queued change of one prefix.
#[derive(Debug, Clone)]
enum Pending {
    /// Send it with these attributes.
    Announce(Arc<RouteAttrs>),
    /// Withdraw it; the ticket of its FIFO entry.
    Withdraw(u64),
}

/// Prefixes queued with one attribute set. Entries are checked against `pending` when packed.
#[derive(Debug)]
struct Group {
    attrs: Arc<RouteAttrs>,
    v4: VecDeque<Ipv4Net>,
    v6: VecDeque<Ipv6Net>,
}

/// Adj-RIB-Out of one peer.
#[derive(Debug, Default)]
pub struct AdjRibOut {
    active: bool,
    /// Counts sessions, so a writer of an old connection cannot take this one's UPDATEs.
    session: u64,
    /// Families negotiated with the peer (End-of-RIB goes out for each).
    families: Vec<Family>,
    /// What this peer gets for a route.
    export: ExportCtx,
    enc: EncodeCtx,
    /// What the peer holds, with the attributes it was sent.
    held: HashMap<IpNet, Arc<RouteAttrs>>,
    pending: HashMap<IpNet, Pending>,
    /// Announces and withdraws in `pending`.
    queued_announces: usize,
    queued_withdraws: usize,
    groups: Vec<Group>,
    /// Group index by the address of its attribute set.
    group_of: HashMap<usize, usize>,
    withdraws: VecDeque<(u64, IpNet)>,
    /// The last withdraw ticket issued.
    ticket: u64,
    eor_pending: Vec<Family>,
    /// End-of-RIB held back until released.
    eor_held: bool,
    /// UPDATE messages produced (all sessions); the number of the last one.
    produced: u64,
    /// The writer's mark: UPDATEs up to this number are on the socket.
    written: u64,
    waiters: Waiters,
    /// Routes dropped because their attributes do not fit an UPDATE (all sessions).
    too_large: u64,
}

impl AdjRibOut {
    /// An empty, inactive RIB.
    pub fn new() -> Self {
        Self::default()
    }

    /// The session came up: forget what an old session was sent, queue every route of `table`
    /// whose family was negotiated (and has a next hop on this session), and arm End-of-RIB
    /// for the negotiated families (held back until [`AdjRibOut::release_end_of_rib`] when
    /// `hold_eor`).
    pub fn session_up<'a>(
        &mut self,
        families: &[Family],
        export: ExportCtx,
        enc: EncodeCtx,
        hold_eor: bool,
        table: impl IntoIterator<Item = (&'a IpNet, &'a Arc<RouteAttrs>)>,
    ) {
        self.session_down();
        self.eor_held = hold_eor;
        self.active = true;
        self.session += 1;
        self.families = families.to_vec();
        self.eor_pending = families.to_vec();
        self.export = export;
        self.enc = enc;
        for (p, a) in table {
            self.queue_announce(*p, a.clone());
        }
    }

    /// The session went down: drop all state; withdraw calls still waiting are told.
    pub fn session_down(&mut self) {
        self.waiters.session_down();
        *self = Self {
            produced: self.produced,
            written: self.produced,
            ticket: self.ticket,
            too_large: self.too_large,
            session: self.session,
            ..Self::default()
        };
    }

    /// True while a session is up.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The number of the current (or last) session.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The prefix's family was negotiated and this session has a next hop for it (an IPv6
    /// session without an IPv4 next hop sends no IPv4 routes, and the other way round).
    fn family_ok(&self, p: &IpNet) -> bool {
        let (f, next_hop) = match p {
            IpNet::V4(_) => (Family::IPV4_UNICAST, self.export.next_hop_v4.is_some()),
            IpNet::V6(_) => (Family::IPV6_UNICAST, self.export.next_hop_v6.is_some()),
        };
        next_hop && self.families.contains(&f)
    }

    /// Sets the queued change of a prefix, keeping the counters.
    fn set_pending(&mut self, prefix: IpNet, p: Pending) {
        match &p {
            Pending::Announce(_) => self.queued_announces += 1,
            Pending::Withdraw(_) => self.queued_withdraws += 1,
        }
        if let Some(old) = self.pending.insert(prefix, p) {
            self.uncount(&old);
        }
    }

    /// Drops the queued change of a prefix, keeping the counters.
    fn clear_pending(&mut self, prefix: &IpNet) {
        if let Some(old) = self.pending.remove(prefix) {
            self.uncount(&old);
        }
    }

    fn uncount(&mut self, p: &Pending) {
        match p {
            Pending::Announce(_) => self.queued_announces -= 1,
            Pending::Withdraw(_) => self.queued_withdraws -= 1,
        }
    }

    /// Queue `prefix` with `attrs` (replacing any queued or sent version). No-op while down.
    pub fn announce(&mut self, prefix: IpNet, attrs: Arc<RouteAttrs>) {
        if self.active {
            self.queue_announce(prefix, attrs);
        }
    }

    fn queue_announce(&mut self, prefix: IpNet, attrs: Arc<RouteAttrs>) {
        if !self.family_ok(&prefix) {
            return;
        }
        if self.held.get(&prefix) == Some(&attrs) {
            // The peer already has exactly this: drop whatever was queued instead.
            self.clear_pending(&prefix);
            return;
        }
        if let Some(Pending::Announce(a)) = self.pending.get(&prefix) {
            if *a == attrs {
                return; // already queued with these attributes
            }
        }
        self.push_announce(prefix, attrs);
    }

    /// Queues an announce without looking at what the peer holds.
    fn push_announce(&mut self, prefix: IpNet, attrs: Arc<RouteAttrs>) {
        let key = Arc::as_ptr(&attrs) as usize;
        let i = match self.group_of.get(&key) {
            Some(&i) => i,
            None => {
                self.groups.push(Group {
                    attrs: attrs.clone(),
                    v4: VecDeque::new(),
                    v6: VecDeque::new(),
                });
                self.group_of.insert(key, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        if let Some(g) = self.groups.get_mut(i) {
            match prefix {
                IpNet::V4(p) => g.v4.push_back(p),
                IpNet::V6(p) => g.v6.push_back(p),
            }
        }
        self.set_pending(prefix, Pending::Announce(attrs));
    }

    /// The export settings changed (speaker-wide communities, next hops, eBGP preference):
    /// every route of `table` this peer can get goes out again with the attributes it gets
    /// now (an implicit replace, no withdraw in between); held routes of a family that lost
    /// its next hop are withdrawn, and a family that gained one is announced.
    pub fn set_export<'a>(
        &mut self,
        export: ExportCtx,
        table: impl IntoIterator<Item = (&'a IpNet, &'a Arc<RouteAttrs>)>,
    ) {
        if export == self.export {
            return;
        }
        self.export = export;
        if !self.active {
            return;
        }
        let lost: Vec<IpNet> = self
            .held
            .keys()
            .filter(|p| !self.family_ok(p))
            .copied()
            .collect();
        for p in lost {
            self.withdraw(p);
        }
        for (p, a) in table {
            let queued = matches!(self.pending.get(p), Some(Pending::Announce(x)) if x == a);
            if self.family_ok(p) && !queued {
                self.push_announce(*p, a.clone());
            }
        }
    }

    /// Withdraw `prefix`: drop a queued announce, and queue a withdraw if the peer has it.
    /// Returns whether the peer holds it (its withdrawal is queued now or was already).
    pub fn withdraw(&mut self, prefix: IpNet) -> bool {
        if !self.active {
            return false;
        }
        if !self.held.contains_key(&prefix) {
            self.clear_pending(&prefix);
            return false;
        }
        if !matches!(self.pending.get(&prefix), Some(Pending::Withdraw(_))) {
            self.ticket += 1;
            self.withdraws.push_back((self.ticket, prefix));
            self.set_pending(prefix, Pending::Withdraw(self.ticket));
        }
        true
    }

    /// After a batch of [`AdjRibOut::withdraw`] calls: a handle that resolves once every
    /// withdrawal queued so far has been written (see [`crate::withdrawal`]). `held`: whether
    /// any of the batch's prefixes was held by the peer.
    pub(crate) fn wait_written(&mut self, held: bool) -> PeerWait {
        self.prune_withdraws();
        let front = self.withdraws.front().map(|w| w.0);
        self.waiters
            .add(self.ticket, held, front, self.produced, self.written)
    }

    /// The writer has written every UPDATE up to number `mark` to the socket.
    pub fn mark_written(&mut self, mark: u64) {
        self.written = self.written.max(mark);
        self.settle();
    }

    /// The number of the last UPDATE produced (the writer's mark once it is written).
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Drops withdraws at the FIFO's front that were cancelled by a later announce.
    fn prune_withdraws(&mut self) {
        while let Some(&(t, p)) = self.withdraws.front() {
            if matches!(self.pending.get(&p), Some(Pending::Withdraw(x)) if *x == t) {
                break;
            }
            self.withdraws.pop_front();
        }
    }

    fn settle(&mut self) {
        self.prune_withdraws();
        let front = self.withdraws.front().map(|w| w.0);
        self.waiters.settle(front, self.produced, self.written);
    }

    /// ROUTE-REFRESH: queue everything the peer has of `family` again.
    pub fn refresh(&mut self, family: Family) {
        let again: Vec<(IpNet, Arc<RouteAttrs>)> = self
            .held
            .iter()
            .filter(|(p, _)| match p {
                IpNet::V4(_) => family == Family::IPV4_UNICAST,
                IpNet::V6(_) => family == Family::IPV6_UNICAST,
            })
            .filter(|(p, _)| !self.pending.contains_key(p))
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for (p, a) in again {
            self.push_announce(p, a);
        }
    }

    /// Nothing left to send (a held End-of-RIB does not count).
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && (self.eor_pending.is_empty() || self.eor_held)
    }

    /// Withdraws queued (they go out before any announce).
    pub fn withdraws_queued(&self) -> bool {
        self.queued_withdraws > 0
    }

    /// Announces queued (prefixes, not messages).
    pub fn announces_queued(&self) -> usize {
        self.queued_announces
    }

    /// Prefixes the peer holds.
    pub fn routes_sent(&self) -> usize {
        self.held.len()
    }

    /// UPDATE messages produced so far (all sessions).
    pub fn updates_sent(&self) -> u64 {
        self.produced
    }

    /// Routes dropped because their path attributes leave no room for a prefix in an UPDATE
    /// (all sessions).
    pub fn routes_too_large(&self) -> u64 {
        self.too_large
    }

    /// The encoding context of the session (set by [`AdjRibOut::session_up`]).
    pub fn encode_ctx(&self) -> EncodeCtx {
        self.enc
    }

    /// The next UPDATE to send, or `None` when idle.
    pub fn next_update(&mut self) -> Option<Update> {
        let u = self.next_inner();
        if u.is_some() {
            self.produced += 1;
        }
        self.settle();
        u
    }

    fn next_inner(&mut self) -> Option<Update> {
        if !self.active {
            return None;
        }
        if let Some(u) = self.pack_withdraws() {
            return Some(u);
        }
        if let Some(u) = self.pack(true) {
            return Some(u);
        }
        if let Some(u) = self.pack(false) {
            return Some(u);
        }
        if !self.eor_pending.is_empty() && !self.eor_held {
            let f = self.eor_pending.remove(0);
            return Some(Update::end_of_rib(f));
        }
        None
    }

    /// Lets End-of-RIB go out (after the routes queued before it).
    pub fn release_end_of_rib(&mut self) {
        self.eor_held = false;
    }

    /// One UPDATE of the oldest queued withdraws, up to the first of the other family.
    fn pack_withdraws(&mut self) -> Option<Update> {
        self.prune_withdraws();
        let v4 = matches!(self.withdraws.front()?.1, IpNet::V4(_));
        let mut room = MAX_MESSAGE_LEN - UPDATE_OVERHEAD - if v4 { 0 } else { MP_UNREACH_OVERHEAD };
        let (mut w4, mut w6) = (Vec::new(), Vec::new());
        while let Some(&(t, p)) = self.withdraws.front() {
            if matches!(self.pending.get(&p), Some(Pending::Withdraw(x)) if *x == t) {
                let n = prefix_wire_len(p.prefix_len());
                if matches!(p, IpNet::V4(_)) != v4 || n > room {
                    break;
                }
                room -= n;
                self.clear_pending(&p);
                self.held.remove(&p);
                match p {
                    IpNet::V4(p) => w4.push(p),
                    IpNet::V6(p) => w6.push(p),
                }
            }
            self.withdraws.pop_front();
        }
        let mut u = Update {
            withdrawn: w4,
            ..Update::default()
        };
        if !v4 {
            u.attrs.mp_unreach = Some(MpUnreach::Ipv6Unicast(w6));
        }
        Some(u)
    }

    /// The index of the first group with live entries of the family, dropping stale entries
    /// and empty groups on the way.
    fn next_group(&mut self, v4: bool) -> Option<usize> {
        let mut i = 0;
        while i < self.groups.len() {
            let g = self.groups.get_mut(i)?;
            let pending = &self.pending;
            let live = |p: IpNet| matches!(pending.get(&p), Some(Pending::Announce(a)) if Arc::ptr_eq(a, &g.attrs));
            if v4 {
                while g.v4.front().is_some_and(|p| !live(IpNet::V4(*p))) {
                    g.v4.pop_front();
                }
            } else {
                while g.v6.front().is_some_and(|p| !live(IpNet::V6(*p))) {
                    g.v6.pop_front();
                }
            }
            if g.v4.is_empty() && g.v6.is_empty() {
                self.remove_group(i);
                continue;
            }
            if (v4 && !g.v4.is_empty()) || (!v4 && !g.v6.is_empty()) {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    fn remove_group(&mut self, i: usize) {
        let g = self.groups.swap_remove(i);
        self.group_of.remove(&(Arc::as_ptr(&g.attrs) as usize));
        if let Some(moved) = self.groups.get(i) {
            self.group_of.insert(Arc::as_ptr(&moved.attrs) as usize, i);
        }
    }

    /// One UPDATE of the first group with queued prefixes of the family: the attributes this
    /// peer gets (IPv6 in MP_REACH_NLRI) and as many prefixes as fit. A group whose attributes
    /// leave no room for even one prefix is dropped from the queue and counted.
    fn pack(&mut self, v4: bool) -> Option<Update> {
        loop {
            let i = self.next_group(v4)?;
            let key = self.groups.get(i)?.attrs.clone();
            let mut attrs = self.export.export(&key, v4);
            if !v4 {
                attrs.mp_reach = Some(MpReach::Ipv6Unicast {
                    next_hop: self.export.next_hop_v6?,
                    link_local: None,
                    nlri: Vec::new(),
                });
            }
            // +1: the MP_REACH length becomes 2 octets once its NLRI passes 255 bytes.
            let base = attrs.encoded_len(&self.enc) + usize::from(!v4);
            let room = (MAX_MESSAGE_LEN - UPDATE_OVERHEAD).saturating_sub(base);
            let (n4, n6) = self.take(i, &key, v4, room);
            if n4.is_empty() && n6.is_empty() {
                self.drop_too_large(i, &key, v4, base);
                continue;
            }
            if let Some(MpReach::Ipv6Unicast { nlri, .. }) = &mut attrs.mp_reach {
                *nlri = n6;
            }
            return Some(Update {
                attrs,
                nlri: n4,
                ..Update::default()
            });
        }
    }

    /// Takes the live prefixes of one family from the front of group `i` while they fit in
    /// `room` bytes; the peer holds them from now on.
    fn take(
        &mut self,
        i: usize,
        key: &Arc<RouteAttrs>,
        v4: bool,
        mut room: usize,
    ) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
        let (mut n4, mut n6) = (Vec::new(), Vec::new());
        while let Some(p) = self.group_front(i, v4) {
            if matches!(self.pending.get(&p), Some(Pending::Announce(a)) if Arc::ptr_eq(a, key)) {
                let len = prefix_wire_len(p.prefix_len());
                if len > room {
                    break;
                }
                room -= len;
                self.clear_pending(&p);
                self.held.insert(p, key.clone());
                match p {
                    IpNet::V4(p) => n4.push(p),
                    IpNet::V6(p) => n6.push(p),
                }
            }
            self.group_pop(i, v4);
        }
        (n4, n6)
    }

    fn group_front(&self, i: usize, v4: bool) -> Option<IpNet> {
        let g = self.groups.get(i)?;
        if v4 {
            g.v4.front().map(|p| IpNet::V4(*p))
        } else {
            g.v6.front().map(|p| IpNet::V6(*p))
        }
    }

    fn group_pop(&mut self, i: usize, v4: bool) {
        if let Some(g) = self.groups.get_mut(i) {
            if v4 {
                g.v4.pop_front();
            } else {
                g.v6.pop_front();
            }
        }
    }

    /// Drops the queued prefixes of one family of group `i`: with this peer's attributes
    /// (`base` bytes) not one of them fits in an UPDATE.
    fn drop_too_large(&mut self, i: usize, key: &Arc<RouteAttrs>, v4: bool, base: usize) {
        let mut dropped = 0u64;
        while let Some(p) = self.group_front(i, v4) {
            if matches!(self.pending.get(&p), Some(Pending::Announce(a)) if Arc::ptr_eq(a, key)) {
                self.clear_pending(&p);
                dropped += 1;
            }
            self.group_pop(i, v4);
        }
        self.too_large += dropped;
        warn!(
            routes = dropped,
            attribute_bytes = base,
            "routes dropped: their path attributes leave no room for a prefix in a 4096-byte UPDATE"
        );
    }
}

// Compile-time guard that the packer's constants fit the message limit.
const _: () = assert!(UPDATE_OVERHEAD + MP_UNREACH_OVERHEAD < MAX_MESSAGE_LEN);

#[cfg(test)]
#[path = "rib_out_tests.rs"]
mod tests;
