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
//!  announce(P, A) ─▶ inbox: batches of one attribute set, in call order ──┐ pack: slot[P].held = A
//!                        │ (a withdraw first moves the inbox here:)       │
//!                        ▼                                                │
//!                    slot[P].pend = Announce(A) ─▶ group of A: [P, …] ────┤
//!  withdraw(P)    ─▶ slot[P].pend = Withdraw(t) ─▶ FIFO: [(t, P), …]  ────┘ slot[P].held = none
//! ```
//! Announcing costs the caller no per-prefix work here beyond appending to the inbox: the
//! writer looks each prefix up once, as it packs it, so a large batch starts going out at
//! once and the lookups overlap with the socket and the router. A slot's `pend` is the
//! truth for queued changes; group lists and the FIFO may hold stale entries (a prefix
//! announced again with other attributes, or withdrawn before it went out), which the packer
//! skips, and an inbox entry for a prefix with a queued change joins the groups instead of
//! going out. While the session is down nothing is queued: [`AdjRibOut::session_up`] takes
//! the speaker's whole table and queues it again (re-announce on re-establishment).
//!
//! The RIB also counts UPDATEs produced and written, for awaitable withdraws
//! ([`crate::withdrawal`]).

mod attr_ids;

use std::collections::VecDeque;
use std::hash::Hash;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracing::warn;

use crate::fasthash::{FastMap, Pk, PrefixBits, PrefixMap};
use crate::packet::nlri::prefix_wire_len;
use crate::packet::{
    EncodeCtx, Family, MpReach, MpUnreach, PathAttrs, Update, HEADER_LEN, MAX_MESSAGE_LEN,
};
use crate::policy::{ExportCtx, RouteAttrs};
use crate::withdrawal::{PeerWait, Waiters};
use attr_ids::{AttrId, AttrTable};

/// Bytes of an UPDATE before any withdrawn route, attribute or NLRI.
const UPDATE_OVERHEAD: usize = HEADER_LEN + 4;
/// An MP attribute header with extended length (flags, type, 2-octet length) + AFI/SAFI.
const MP_UNREACH_OVERHEAD: usize = 4 + 3;
/// Batches of at least this many prefixes go through the inbox (see `announce_many`).
const INBOX_MIN: usize = 256;

/// A queued change of one prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Pend {
    #[default]
    None,
    /// Send it with these attributes.
    Announce(AttrId),
    /// Withdraw it; the low 32 bits of its FIFO ticket (two live entries of one prefix
    /// never differ by 2^32 tickets).
    Withdraw(u32),
}

/// What the RIB knows of one prefix.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The attributes the peer holds it with (0: it does not hold it).
    held: AttrId,
    pend: Pend,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.held == 0 && self.pend == Pend::None
    }
}

/// IPv4 or IPv6 prefixes, for the code both families share.
trait Prefix: PrefixBits + Hash {
    fn net(self) -> IpNet;
}

impl Prefix for Ipv4Net {
    fn net(self) -> IpNet {
        IpNet::V4(self)
    }
}

impl Prefix for Ipv6Net {
    fn net(self) -> IpNet {
        IpNet::V6(self)
    }
}

/// Prefixes with one attribute set: an inbox batch (in call order, not looked at yet) or a
/// group (queued in `pend`, checked against it when packed).
#[derive(Debug)]
struct Batch {
    id: AttrId,
    v4: VecDeque<Ipv4Net>,
    v6: VecDeque<Ipv6Net>,
}

impl Batch {
    fn new(id: AttrId) -> Self {
        Batch {
            id,
            v4: VecDeque::new(),
            v6: VecDeque::new(),
        }
    }

    fn push(&mut self, p: IpNet) {
        match p {
            IpNet::V4(p) => self.v4.push_back(p),
            IpNet::V6(p) => self.v6.push_back(p),
        }
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// Attribute ids and the counts kept with the slots.
#[derive(Debug, Default)]
struct Acct {
    attrs: AttrTable,
    held: usize,
    pend_announces: usize,
    pend_withdraws: usize,
}

impl Acct {
    /// The id references and counts of a slot changing from `old` to `new`.
    fn account(&mut self, old: Slot, new: Slot) {
        if old.held != new.held {
            if old.held != 0 {
                self.attrs.release(old.held);
                self.held -= 1;
            }
            if new.held != 0 {
                self.attrs.retain(new.held);
                self.held += 1;
            }
        }
        if old.pend != new.pend {
            match old.pend {
                Pend::Announce(id) => {
                    self.attrs.release(id);
                    self.pend_announces -= 1;
                }
                Pend::Withdraw(_) => self.pend_withdraws -= 1,
                Pend::None => {}
            }
            match new.pend {
                Pend::Announce(id) => {
                    self.attrs.retain(id);
                    self.pend_announces += 1;
                }
                Pend::Withdraw(_) => self.pend_withdraws += 1,
                Pend::None => {}
            }
        }
    }
}

/// The slots of both families, with their accounting.
#[derive(Debug, Default)]
struct Book {
    v4: PrefixMap<Ipv4Net, Slot>,
    v6: PrefixMap<Ipv6Net, Slot>,
    acct: Acct,
}

/// The slot map of a family, and the accounting beside it.
trait Slots<P: Prefix> {
    fn split(&mut self) -> (&mut PrefixMap<P, Slot>, &mut Acct);
}

impl Slots<Ipv4Net> for Book {
    fn split(&mut self) -> (&mut PrefixMap<Ipv4Net, Slot>, &mut Acct) {
        (&mut self.v4, &mut self.acct)
    }
}

impl Slots<Ipv6Net> for Book {
    fn split(&mut self) -> (&mut PrefixMap<Ipv6Net, Slot>, &mut Acct) {
        (&mut self.v6, &mut self.acct)
    }
}

impl Book {
    fn slot(&self, p: IpNet) -> Slot {
        match p {
            IpNet::V4(p) => self.v4.get(&Pk(p)).copied(),
            IpNet::V6(p) => self.v6.get(&Pk(p)).copied(),
        }
        .unwrap_or_default()
    }

    /// Stores a slot (dropping an empty one), keeping ids and counts.
    fn set(&mut self, p: IpNet, new: Slot) {
        let old = self.slot(p);
        self.acct.account(old, new);
        match (p, new.is_empty()) {
            (IpNet::V4(p), true) => drop(self.v4.remove(&Pk(p))),
            (IpNet::V4(p), false) => drop(self.v4.insert(Pk(p), new)),
            (IpNet::V6(p), true) => drop(self.v6.remove(&Pk(p))),
            (IpNet::V6(p), false) => drop(self.v6.insert(Pk(p), new)),
        }
    }
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
    book: Book,
    /// Announces not looked at yet, in call order.
    inbox: VecDeque<Batch>,
    inbox_len: usize,
    /// Announces queued in `pend`, by attribute set.
    groups: Vec<Batch>,
    group_of: FastMap<AttrId, usize>,
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
        table: impl IntoIterator<Item = (IpNet, &'a Arc<RouteAttrs>)>,
    ) {
        self.session_down();
        self.active = true;
        self.session += 1;
        self.eor_held = hold_eor;
        self.families = families.to_vec();
        self.eor_pending = families.to_vec();
        self.export = export;
        self.enc = enc;
        // One inbox batch per attribute set (the table's are shared Arcs).
        let mut batch_of: FastMap<usize, usize> = FastMap::default();
        for (p, a) in table {
            if !self.family_ok(&p) {
                continue;
            }
            let i = *batch_of.entry(Arc::as_ptr(a) as usize).or_insert_with(|| {
                let id = self.book.acct.attrs.id(a);
                self.book.acct.attrs.retain(id);
                self.inbox.push_back(Batch::new(id));
                self.inbox.len() - 1
            });
            if let Some(b) = self.inbox.get_mut(i) {
                b.push(p);
                self.inbox_len += 1;
            }
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

    /// Queue `prefix` with `attrs` (replacing any queued or sent version). No-op while down.
    pub fn announce(&mut self, prefix: IpNet, attrs: Arc<RouteAttrs>) {
        self.announce_many(&attrs, std::iter::once(prefix));
    }

    /// Queues many prefixes with one attribute set, in order. A few (or any number while a
    /// withdraw is queued), with nothing in the inbox, are looked up at once: a queued
    /// version is replaced, a withdraw not sent yet is cancelled or replaced. More (or behind
    /// an inbox that is not empty) go to the inbox as they are, looked up by the writer as it
    /// packs them (a prefix the peer already has with these attributes is skipped then).
    pub fn announce_many(
        &mut self,
        attrs: &Arc<RouteAttrs>,
        prefixes: impl ExactSizeIterator<Item = IpNet>,
    ) {
        if !self.active {
            return;
        }
        let id = self.book.acct.attrs.id(attrs);
        let ok4 = self.family_ok(&IpNet::V4(Ipv4Net::default()));
        let ok6 = self.family_ok(&IpNet::V6(Ipv6Net::default()));
        let ok = |p: &IpNet| if matches!(p, IpNet::V4(_)) { ok4 } else { ok6 };
        self.book.acct.attrs.retain(id);
        // Behind a queued withdraw a batch is looked up at once too, so the withdraw can be
        // cancelled or replaced; as a withdraw moves the inbox out first, the inbox never
        // holds an announce older than a queued withdraw.
        let at_once = prefixes.len() < INBOX_MIN || self.book.acct.pend_withdraws > 0;
        if self.inbox.is_empty() && at_once {
            for p in prefixes.filter(ok) {
                self.queue(p, id, false);
            }
        } else {
            if self.inbox.back().is_none_or(|b| b.id != id) {
                self.book.acct.attrs.retain(id);
                self.inbox.push_back(Batch::new(id));
            }
            if let Some(b) = self.inbox.back_mut() {
                let before = (b.v4.len(), b.v6.len());
                for p in prefixes.filter(ok) {
                    b.push(p);
                }
                let added = (b.v4.len() - before.0, b.v6.len() - before.1);
                self.inbox_len += added.0 + added.1;
                // Room for the slots the writer will make, at once rather than by doubling.
                self.book.v4.reserve(added.0);
                self.book.v6.reserve(added.1);
                if b.is_empty() {
                    self.inbox.pop_back();
                    self.book.acct.attrs.release(id);
                }
            }
        }
        self.book.acct.attrs.release(id);
    }

    /// Moves the whole inbox into `pend` and the groups, so a withdraw or a change of export
    /// settings sees every announce queued before it.
    fn drain_inbox(&mut self) {
        while let Some(b) = self.inbox.pop_front() {
            for p in b.v4 {
                self.queue(IpNet::V4(p), b.id, false);
            }
            for p in b.v6 {
                self.queue(IpNet::V6(p), b.id, false);
            }
            self.book.acct.attrs.release(b.id);
        }
        self.inbox_len = 0;
    }

    /// Queues an announce of `p` with `id` in `pend` and its group — unless the peer already
    /// has exactly that, in which case whatever was queued for `p` is dropped instead
    /// (`force`: queue it all the same, to send it again).
    fn queue(&mut self, p: IpNet, id: AttrId, force: bool) {
        let s = self.book.slot(p);
        if s.held == id && !force {
            // The peer already has exactly this: drop whatever was queued instead (a
            // withdraw not sent yet is cancelled).
            self.book.set(
                p,
                Slot {
                    pend: Pend::None,
                    ..s
                },
            );
            return;
        }
        self.book.set(
            p,
            Slot {
                pend: Pend::Announce(id),
                ..s
            },
        );
        let i = match self.group_of.get(&id) {
            Some(&i) => i,
            None => {
                self.book.acct.attrs.retain(id);
                self.groups.push(Batch::new(id));
                self.group_of.insert(id, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        if let Some(g) = self.groups.get_mut(i) {
            g.push(p);
        }
    }

    /// The export settings changed (speaker-wide communities, next hops, eBGP preference):
    /// every route of `table` this peer can get goes out again with the attributes it gets
    /// now (an implicit replace, no withdraw in between); held routes of a family that lost
    /// its next hop are withdrawn, and a family that gained one is announced.
    pub fn set_export<'a>(
        &mut self,
        export: ExportCtx,
        table: impl IntoIterator<Item = (IpNet, &'a Arc<RouteAttrs>)>,
    ) {
        if export == self.export {
            return;
        }
        let was_ok = [IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())]
            .map(|p| self.family_ok(&p));
        self.export = export;
        if !self.active {
            return;
        }
        self.drain_inbox();
        let held: Vec<(IpNet, Slot)> = self
            .book
            .v4
            .iter()
            .map(|(p, s)| (IpNet::V4(p.0), *s))
            .chain(self.book.v6.iter().map(|(p, s)| (IpNet::V6(p.0), *s)))
            .filter(|(_, s)| s.held != 0)
            .collect();
        for (p, s) in held {
            if !self.family_ok(&p) {
                self.withdraw(p);
            } else if s.pend == Pend::None {
                self.queue(p, s.held, true);
            }
        }
        // Announces of a family without a next hop now cannot go out.
        for (i, v4) in [(0, true), (1, false)] {
            let probe = if v4 {
                IpNet::V4(Ipv4Net::default())
            } else {
                IpNet::V6(Ipv6Net::default())
            };
            if was_ok.get(i).copied().unwrap_or(false) && !self.family_ok(&probe) {
                self.clear_announces(v4);
            }
        }
        for (p, a) in table {
            let i = usize::from(matches!(p, IpNet::V6(_)));
            if self.family_ok(&p) && !was_ok.get(i).copied().unwrap_or(true) {
                self.announce(p, a.clone());
            }
        }
    }

    /// Drops every queued announce of one family (the inbox is empty).
    fn clear_announces(&mut self, v4: bool) {
        for i in 0..self.groups.len() {
            self.unqueue_group(i, v4);
        }
    }

    /// Withdraw `prefix`: drop a queued announce, and queue a withdraw if the peer has it.
    /// Returns whether the peer holds it (its withdrawal is queued now or was already).
    pub fn withdraw(&mut self, prefix: IpNet) -> bool {
        if !self.active {
            return false;
        }
        self.drain_inbox();
        let s = self.book.slot(prefix);
        if s.held == 0 {
            self.book.set(prefix, Slot::default());
            return false;
        }
        if !matches!(s.pend, Pend::Withdraw(_)) {
            self.ticket += 1;
            self.withdraws.push_back((self.ticket, prefix));
            self.book.set(
                prefix,
                Slot {
                    pend: Pend::Withdraw(self.ticket as u32),
                    ..s
                },
            );
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

    fn live_withdraw(&self, t: u64, p: IpNet) -> bool {
        self.book.slot(p).pend == Pend::Withdraw(t as u32)
    }

    /// Drops withdraws at the FIFO's front that were cancelled by a later announce.
    fn prune_withdraws(&mut self) {
        while let Some(&(t, p)) = self.withdraws.front() {
            if self.live_withdraw(t, p) {
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
        let again: Vec<(IpNet, AttrId)> = if family == Family::IPV4_UNICAST {
            self.book
                .v4
                .iter()
                .filter(|(_, s)| s.held != 0 && s.pend == Pend::None)
                .map(|(p, s)| (IpNet::V4(p.0), s.held))
                .collect()
        } else if family == Family::IPV6_UNICAST {
            self.book
                .v6
                .iter()
                .filter(|(_, s)| s.held != 0 && s.pend == Pend::None)
                .map(|(p, s)| (IpNet::V6(p.0), s.held))
                .collect()
        } else {
            Vec::new()
        };
        for (p, id) in again {
            self.queue(p, id, true);
        }
    }

    /// Nothing left to send (a held End-of-RIB does not count).
    pub fn is_idle(&self) -> bool {
        self.inbox_len == 0
            && self.book.acct.pend_announces == 0
            && self.book.acct.pend_withdraws == 0
            && (self.eor_pending.is_empty() || self.eor_held)
    }

    /// Withdraws queued (they go out before any announce).
    pub fn withdraws_queued(&self) -> bool {
        self.book.acct.pend_withdraws > 0
    }

    /// Announces queued (prefixes, not messages).
    pub fn announces_queued(&self) -> usize {
        self.inbox_len + self.book.acct.pend_announces
    }

    /// Prefixes the peer holds.
    pub fn routes_sent(&self) -> usize {
        self.book.acct.held
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
        if let Some(u) = self.pack_group(true) {
            return Some(u);
        }
        if let Some(u) = self.pack_group(false) {
            return Some(u);
        }
        if let Some(u) = self.pack_inbox() {
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
            if self.live_withdraw(t, p) {
                let n = prefix_wire_len(p.prefix_len());
                if matches!(p, IpNet::V4(_)) != v4 || n > room {
                    break;
                }
                room -= n;
                self.book.set(p, Slot::default());
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

    /// The attributes this peer gets for attribute set `id` (IPv6 with an empty MP_REACH),
    /// and the room left for prefixes in an UPDATE.
    fn update_attrs(&self, id: AttrId, v4: bool) -> Option<(PathAttrs, usize)> {
        let key = self.book.acct.attrs.get(id)?;
        let mut attrs = self.export.export(key, v4);
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
        Some((attrs, room))
    }

    /// An UPDATE with `attrs` and these prefixes.
    fn update(mut attrs: PathAttrs, n4: Vec<Ipv4Net>, n6: Vec<Ipv6Net>) -> Update {
        if let Some(MpReach::Ipv6Unicast { nlri, .. }) = &mut attrs.mp_reach {
            *nlri = n6;
        }
        Update {
            attrs,
            nlri: n4,
            ..Update::default()
        }
    }

    /// One UPDATE of the first group with queued prefixes of the family. A group whose
    /// attributes leave no room for even one prefix is dropped from the queue and counted.
    fn pack_group(&mut self, v4: bool) -> Option<Update> {
        loop {
            let i = self.next_group(v4)?;
            let id = self.groups.get(i)?.id;
            let (attrs, room) = self.update_attrs(id, v4)?;
            let (n4, n6) = if v4 {
                (self.take_group::<Ipv4Net>(i, id, room), Vec::new())
            } else {
                (Vec::new(), self.take_group::<Ipv6Net>(i, id, room))
            };
            if n4.is_empty() && n6.is_empty() {
                self.drop_group(i, room, v4);
                continue;
            }
            return Some(Self::update(attrs, n4, n6));
        }
    }

    /// The index of the first group with live entries of the family, dropping stale entries
    /// and empty groups on the way.
    fn next_group(&mut self, v4: bool) -> Option<usize> {
        let mut i = 0;
        while i < self.groups.len() {
            let g = self.groups.get_mut(i)?;
            let live = |p: IpNet| self.book.slot(p).pend == Pend::Announce(g.id);
            if v4 {
                while g.v4.front().is_some_and(|p| !live(IpNet::V4(*p))) {
                    g.v4.pop_front();
                }
            } else {
                while g.v6.front().is_some_and(|p| !live(IpNet::V6(*p))) {
                    g.v6.pop_front();
                }
            }
            if g.is_empty() {
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
        self.group_of.remove(&g.id);
        self.book.acct.attrs.release(g.id);
        if let Some(moved) = self.groups.get(i) {
            self.group_of.insert(moved.id, i);
        }
    }

    /// Takes the live prefixes of family `P` from the front of group `i` while they fit in
    /// `room` bytes; the peer holds them from now on.
    fn take_group<P: Prefix>(&mut self, i: usize, id: AttrId, mut room: usize) -> Vec<P>
    where
        Book: Slots<P>,
        Batch: Queue<P>,
    {
        let mut out = Vec::new();
        while let Some(p) = self.groups.get(i).and_then(Queue::<P>::front) {
            let s = self.book.slot(p.net());
            if s.pend == Pend::Announce(id) {
                let len = prefix_wire_len(p.net().prefix_len());
                if len > room {
                    break;
                }
                room -= len;
                self.book.set(
                    p.net(),
                    Slot {
                        held: id,
                        pend: Pend::None,
                    },
                );
                out.push(p);
            }
            if let Some(g) = self.groups.get_mut(i) {
                Queue::<P>::pop(g);
            }
        }
        out
    }

    /// Drops the queued prefixes of one family of group `i`: with this peer's attributes not
    /// one of them fits in an UPDATE.
    fn drop_group(&mut self, i: usize, room: usize, v4: bool) {
        let dropped = self.unqueue_group(i, v4);
        self.count_too_large(dropped, room);
    }

    /// Empties one family of group `i`, cancelling the announces still live in it; returns
    /// how many there were.
    fn unqueue_group(&mut self, i: usize, v4: bool) -> u64 {
        let mut live = 0;
        while let Some((id, p)) = self.groups.get_mut(i).and_then(|g| {
            let p = if v4 {
                g.v4.pop_front().map(IpNet::V4)
            } else {
                g.v6.pop_front().map(IpNet::V6)
            };
            Some((g.id, p?))
        }) {
            let s = self.book.slot(p);
            if s.pend == Pend::Announce(id) {
                self.book.set(
                    p,
                    Slot {
                        pend: Pend::None,
                        ..s
                    },
                );
                live += 1;
            }
        }
        live
    }

    fn count_too_large(&mut self, dropped: u64, room: usize) {
        self.too_large += dropped;
        warn!(
            routes = dropped,
            attribute_bytes = MAX_MESSAGE_LEN - UPDATE_OVERHEAD - room,
            "routes dropped: their path attributes leave no room for a prefix in a 4096-byte UPDATE"
        );
    }

    /// One UPDATE from the front inbox batch: each prefix looked up once; one the peer already
    /// has so is skipped, one with a queued change joins the groups (after it, in order).
    fn pack_inbox(&mut self) -> Option<Update> {
        loop {
            let b = self.inbox.front()?;
            let id = b.id;
            let v4 = !b.v4.is_empty();
            if b.is_empty() {
                self.inbox.pop_front();
                self.book.acct.attrs.release(id);
                continue;
            }
            let (attrs, room) = self.update_attrs(id, v4)?;
            let (n4, n6, stuck) = if v4 {
                let (n, stuck) = self.take_inbox::<Ipv4Net>(id, room);
                (n, Vec::new(), stuck)
            } else {
                let (n, stuck) = self.take_inbox::<Ipv6Net>(id, room);
                (Vec::new(), n, stuck)
            };
            if !n4.is_empty() || !n6.is_empty() {
                return Some(Self::update(attrs, n4, n6));
            }
            if stuck {
                // Not even one prefix fits with these attributes: drop the family's rest.
                let dropped = if v4 {
                    self.drop_inbox::<Ipv4Net>(id)
                } else {
                    self.drop_inbox::<Ipv6Net>(id)
                };
                self.count_too_large(dropped, room);
            }
        }
    }

    /// Takes prefixes of family `P` from the front inbox batch while they fit in `room`
    /// bytes, one slot lookup each. Returns them, and whether it stopped at one that did not
    /// fit.
    fn take_inbox<P: Prefix>(&mut self, id: AttrId, mut room: usize) -> (Vec<P>, bool)
    where
        Book: Slots<P>,
        Batch: Queue<P>,
    {
        use std::collections::hash_map::Entry;
        let mut out = Vec::new();
        while let Some(p) = self.inbox.front().and_then(Queue::<P>::front) {
            let len = prefix_wire_len(p.net().prefix_len());
            let (slots, acct) = Slots::<P>::split(&mut self.book);
            let mut changed = false;
            match slots.entry(Pk(p)) {
                Entry::Occupied(mut o) => {
                    let s = *o.get();
                    if s.pend != Pend::None {
                        changed = true;
                    } else if s.held != id {
                        if len > room {
                            return (out, true);
                        }
                        room -= len;
                        let new = Slot { held: id, ..s };
                        acct.account(s, new);
                        *o.get_mut() = new;
                        out.push(p);
                    }
                }
                Entry::Vacant(v) => {
                    if len > room {
                        return (out, true);
                    }
                    room -= len;
                    let new = Slot {
                        held: id,
                        pend: Pend::None,
                    };
                    acct.account(Slot::default(), new);
                    v.insert(new);
                    out.push(p);
                }
            }
            if changed {
                // A queued change of this prefix: this announce goes after it, in a group.
                self.queue(p.net(), id, false);
            }
            if let Some(b) = self.inbox.front_mut() {
                Queue::<P>::pop(b);
            }
            self.inbox_len -= 1;
        }
        (out, false)
    }

    /// Drops the rest of family `P` of the front inbox batch (too large to send); returns how
    /// many would have gone out.
    fn drop_inbox<P: Prefix>(&mut self, id: AttrId) -> u64
    where
        Book: Slots<P>,
        Batch: Queue<P>,
    {
        let mut dropped = 0;
        while let Some(p) = self.inbox.front_mut().and_then(|b| Queue::<P>::pop(b)) {
            self.inbox_len -= 1;
            let s = self.book.slot(p.net());
            if s.pend != Pend::None {
                self.queue(p.net(), id, false);
            } else if s.held != id {
                dropped += 1;
            }
        }
        dropped
    }
}

/// A batch's queue of family `P`.
trait Queue<P> {
    fn front(&self) -> Option<P>;
    fn pop(&mut self) -> Option<P>;
}

impl Queue<Ipv4Net> for Batch {
    fn front(&self) -> Option<Ipv4Net> {
        self.v4.front().copied()
    }
    fn pop(&mut self) -> Option<Ipv4Net> {
        self.v4.pop_front()
    }
}

impl Queue<Ipv6Net> for Batch {
    fn front(&self) -> Option<Ipv6Net> {
        self.v6.front().copied()
    }
    fn pop(&mut self) -> Option<Ipv6Net> {
        self.v6.pop_front()
    }
}

// Compile-time guard that the packer's constants fit the message limit.
const _: () = assert!(UPDATE_OVERHEAD + MP_UNREACH_OVERHEAD < MAX_MESSAGE_LEN);

#[cfg(test)]
mod tests;
