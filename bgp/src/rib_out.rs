//! Per-peer Adj-RIB-Out with UPDATE packing.
//!
//! Holds what the peer has been sent and what is still queued. [`AdjRibOut::next_update`]
//! produces one UPDATE at a time so the writer pulls work only as fast as the socket drains,
//! and always in this order:
//!
//! 1. withdraws (IPv4 in the withdrawn-routes field, IPv6 in MP_UNREACH_NLRI), so a withdraw
//!    never waits behind a backlog of announces;
//! 2. announces, prefixes with equal attributes packed together up to 4096 bytes per message
//!    (IPv4 in NLRI, IPv6 in one MP_REACH_NLRI, as BIRD does — not one prefix per UPDATE);
//! 3. End-of-RIB for every negotiated family once the initial dump is out.
//!
//! While the session is down nothing is queued: [`AdjRibOut::session_up`] takes the speaker's
//! whole table and queues it again (re-announce on re-establishment).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::packet::nlri::prefix_wire_len;
use crate::packet::{EncodeCtx, Family, MpReach, MpUnreach, Update, HEADER_LEN, MAX_MESSAGE_LEN};
use crate::policy::{ExportCtx, RouteAttrs};

/// Bytes of an UPDATE before any withdrawn route, attribute or NLRI.
const UPDATE_OVERHEAD: usize = HEADER_LEN + 4;
/// An MP attribute header with extended length (flags, type, 2-octet length) + AFI/SAFI.
const MP_UNREACH_OVERHEAD: usize = 4 + 3;

/// Adj-RIB-Out of one peer.
#[derive(Debug, Default)]
pub struct AdjRibOut {
    active: bool,
    families: Vec<Family>,
    /// What the peer holds, with the attributes it was sent.
    sent: HashMap<IpNet, Arc<RouteAttrs>>,
    /// Queued announces, grouped by attributes (Arc hashes by value).
    pending_v4: HashMap<Arc<RouteAttrs>, BTreeSet<Ipv4Net>>,
    pending_v6: HashMap<Arc<RouteAttrs>, BTreeSet<Ipv6Net>>,
    pending_of: HashMap<IpNet, Arc<RouteAttrs>>,
    withdraw_v4: BTreeSet<Ipv4Net>,
    withdraw_v6: BTreeSet<Ipv6Net>,
    eor_pending: Vec<Family>,
    updates_sent: u64,
}

impl AdjRibOut {
    /// An empty, inactive RIB.
    pub fn new() -> Self {
        Self::default()
    }

    /// The session came up: forget what an old session was sent, queue every route of `table`
    /// whose family was negotiated, and arm End-of-RIB for those families.
    pub fn session_up<'a>(
        &mut self,
        families: &[Family],
        table: impl IntoIterator<Item = (&'a IpNet, &'a Arc<RouteAttrs>)>,
    ) {
        self.session_down();
        self.active = true;
        self.families = families.to_vec();
        self.eor_pending = families.to_vec();
        for (p, a) in table {
            self.queue_announce(*p, a.clone());
        }
    }

    /// The session went down: drop all state.
    pub fn session_down(&mut self) {
        *self = Self {
            updates_sent: self.updates_sent,
            ..Self::default()
        };
    }

    /// True while a session is up.
    pub fn is_active(&self) -> bool {
        self.active
    }

    fn family_ok(&self, p: &IpNet) -> bool {
        let f = match p {
            IpNet::V4(_) => Family::IPV4_UNICAST,
            IpNet::V6(_) => Family::IPV6_UNICAST,
        };
        self.families.contains(&f)
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
        self.unqueue(&prefix);
        match prefix {
            IpNet::V4(p) => self.withdraw_v4.remove(&p),
            IpNet::V6(p) => self.withdraw_v6.remove(&p),
        };
        if self.sent.get(&prefix) == Some(&attrs) {
            return; // the peer already has exactly this
        }
        match prefix {
            IpNet::V4(p) => self.pending_v4.entry(attrs.clone()).or_default().insert(p),
            IpNet::V6(p) => self.pending_v6.entry(attrs.clone()).or_default().insert(p),
        };
        self.pending_of.insert(prefix, attrs);
    }

    fn unqueue(&mut self, prefix: &IpNet) {
        if let Some(old) = self.pending_of.remove(prefix) {
            match prefix {
                IpNet::V4(p) => remove_from_group(&mut self.pending_v4, &old, p),
                IpNet::V6(p) => remove_from_group(&mut self.pending_v6, &old, p),
            }
        }
    }

    /// Withdraw `prefix`: drop a queued announce, and queue a withdraw if the peer has it.
    pub fn withdraw(&mut self, prefix: IpNet) {
        if !self.active {
            return;
        }
        self.unqueue(&prefix);
        if self.sent.contains_key(&prefix) {
            match prefix {
                IpNet::V4(p) => self.withdraw_v4.insert(p),
                IpNet::V6(p) => self.withdraw_v6.insert(p),
            };
        }
    }

    /// ROUTE-REFRESH: queue everything the peer has of `family` again.
    pub fn refresh(&mut self, family: Family) {
        let again: Vec<(IpNet, Arc<RouteAttrs>)> = self
            .sent
            .iter()
            .filter(|(p, _)| match p {
                IpNet::V4(_) => family == Family::IPV4_UNICAST,
                IpNet::V6(_) => family == Family::IPV6_UNICAST,
            })
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for (p, a) in again {
            self.sent.remove(&p);
            self.queue_announce(p, a);
        }
    }

    /// Nothing left to send.
    pub fn is_idle(&self) -> bool {
        self.withdraw_v4.is_empty()
            && self.withdraw_v6.is_empty()
            && self.pending_of.is_empty()
            && self.eor_pending.is_empty()
    }

    /// Withdraws queued (they go out before any announce).
    pub fn withdraws_queued(&self) -> bool {
        !self.withdraw_v4.is_empty() || !self.withdraw_v6.is_empty()
    }

    /// Announces queued (prefixes, not messages).
    pub fn announces_queued(&self) -> usize {
        self.pending_of.len()
    }

    /// Prefixes the peer holds.
    pub fn routes_sent(&self) -> usize {
        self.sent.len()
    }

    /// UPDATE messages produced so far (all sessions).
    pub fn updates_sent(&self) -> u64 {
        self.updates_sent
    }

    /// The next UPDATE to send, or `None` when idle.
    pub fn next_update(&mut self, export: &ExportCtx, enc: &EncodeCtx) -> Option<Update> {
        let u = self.next_inner(export, enc)?;
        self.updates_sent += 1;
        Some(u)
    }

    fn next_inner(&mut self, export: &ExportCtx, enc: &EncodeCtx) -> Option<Update> {
        if !self.active {
            return None;
        }
        if !self.withdraw_v4.is_empty() {
            let mut room = MAX_MESSAGE_LEN - UPDATE_OVERHEAD;
            let mut withdrawn = Vec::new();
            while let Some(p) = self.withdraw_v4.first().copied() {
                let n = prefix_wire_len(p.prefix_len());
                if n > room {
                    break;
                }
                room -= n;
                self.withdraw_v4.remove(&p);
                self.sent.remove(&IpNet::V4(p));
                withdrawn.push(p);
            }
            return Some(Update {
                withdrawn,
                ..Update::default()
            });
        }
        if !self.withdraw_v6.is_empty() {
            let mut room = MAX_MESSAGE_LEN - UPDATE_OVERHEAD - MP_UNREACH_OVERHEAD;
            let mut w = Vec::new();
            while let Some(p) = self.withdraw_v6.first().copied() {
                let n = prefix_wire_len(p.prefix_len());
                if n > room {
                    break;
                }
                room -= n;
                self.withdraw_v6.remove(&p);
                self.sent.remove(&IpNet::V6(p));
                w.push(p);
            }
            let mut u = Update::default();
            u.attrs.mp_unreach = Some(MpUnreach::Ipv6Unicast(w));
            return Some(u);
        }
        if let Some(u) = self.pack_v4(export, enc) {
            return Some(u);
        }
        if let Some(u) = self.pack_v6(export, enc) {
            return Some(u);
        }
        if !self.eor_pending.is_empty() {
            let f = self.eor_pending.remove(0);
            return Some(Update::end_of_rib(f));
        }
        None
    }

    fn pack_v4(&mut self, export: &ExportCtx, enc: &EncodeCtx) -> Option<Update> {
        loop {
            let key = self.pending_v4.keys().next()?.clone();
            let attrs = export.export(&key, true);
            if attrs.next_hop.is_none() {
                // No IPv4 next hop on this session (IPv6 transport, none configured): these
                // routes cannot be sent; drop them from the queue.
                if let Some(set) = self.pending_v4.remove(&key) {
                    for p in set {
                        self.pending_of.remove(&IpNet::V4(p));
                    }
                }
                continue;
            }
            let base = attrs.encoded_len(enc);
            let room = (MAX_MESSAGE_LEN - UPDATE_OVERHEAD).saturating_sub(base);
            let set = self.pending_v4.get_mut(&key)?;
            let nlri = take_fitting(set, room, |p| p.prefix_len());
            if set.is_empty() {
                self.pending_v4.remove(&key);
            }
            for p in &nlri {
                self.pending_of.remove(&IpNet::V4(*p));
                self.sent.insert(IpNet::V4(*p), key.clone());
            }
            return Some(Update {
                attrs,
                nlri,
                ..Update::default()
            });
        }
    }

    fn pack_v6(&mut self, export: &ExportCtx, enc: &EncodeCtx) -> Option<Update> {
        let key = self.pending_v6.keys().next()?.clone();
        let mut attrs = export.export(&key, false);
        let next_hop = export.next_hop_v6?;
        attrs.mp_reach = Some(MpReach::Ipv6Unicast {
            next_hop,
            link_local: None,
            nlri: Vec::new(),
        });
        // +1: the MP_REACH length becomes 2 octets once its NLRI passes 255 bytes.
        let base = attrs.encoded_len(enc) + 1;
        let room = (MAX_MESSAGE_LEN - UPDATE_OVERHEAD).saturating_sub(base);
        let set = self.pending_v6.get_mut(&key)?;
        let nlri = take_fitting(set, room, |p| p.prefix_len());
        if set.is_empty() {
            self.pending_v6.remove(&key);
        }
        for p in &nlri {
            self.pending_of.remove(&IpNet::V6(*p));
            self.sent.insert(IpNet::V6(*p), key.clone());
        }
        if let Some(MpReach::Ipv6Unicast { nlri: n, .. }) = &mut attrs.mp_reach {
            *n = nlri;
        }
        Some(Update {
            attrs,
            ..Update::default()
        })
    }
}

fn remove_from_group<P: Ord>(
    groups: &mut HashMap<Arc<RouteAttrs>, BTreeSet<P>>,
    key: &Arc<RouteAttrs>,
    p: &P,
) {
    if let Some(set) = groups.get_mut(key) {
        set.remove(p);
        if set.is_empty() {
            groups.remove(key);
        }
    }
}

// Compile-time guard that the packer's constants fit the message limit.
const _: () = assert!(UPDATE_OVERHEAD + MP_UNREACH_OVERHEAD < MAX_MESSAGE_LEN);

#[cfg(test)]
#[path = "rib_out_tests.rs"]
mod tests;

/// Takes prefixes from the front of `set`, in order, while their wire form fits in `room`
/// bytes (the packing loop of both address families).
fn take_fitting<P: Copy + Ord>(
    set: &mut BTreeSet<P>,
    mut room: usize,
    prefix_len: impl Fn(&P) -> u8,
) -> Vec<P> {
    let mut out = Vec::new();
    while let Some(p) = set.first().copied() {
        let n = prefix_wire_len(prefix_len(&p));
        if n > room {
            break;
        }
        room -= n;
        set.remove(&p);
        out.push(p);
    }
    out
}
