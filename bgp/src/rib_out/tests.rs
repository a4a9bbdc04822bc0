//! Adj-RIB-Out tests: packing limits, ordering, replacement, re-announce.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use std::collections::HashMap;

use super::*;
use crate::packet::Community;
use crate::packet::{DecodeCtx, Message};
use crate::policy::EbgpPreference;
use crate::withdrawal::WithdrawOutcome;

fn export(ibgp: bool) -> ExportCtx {
    ExportCtx {
        local_as: 65010,
        ibgp,
        ebgp_preference: EbgpPreference::None,
        communities: vec![],
        large_communities: vec![],
        next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 10)),
        next_hop_v6: Some("2001:db8::10".parse().unwrap()),
    }
}

const BOTH: [Family; 2] = [Family::IPV4_UNICAST, Family::IPV6_UNICAST];

fn v4(i: u32) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0xc633_0000 + i), 32).unwrap())
}
fn v6(i: u32) -> IpNet {
    IpNet::V6(
        Ipv6Net::new(
            Ipv6Addr::from(0x2001_0db8_0001_u128 << 80 | u128::from(i)),
            128,
        )
        .unwrap(),
    )
}

/// Brings the session up as iBGP with both next hops.
fn up(rib: &mut AdjRibOut, families: &[Family], t: &HashMap<IpNet, Arc<RouteAttrs>>) {
    rib.session_up(
        families,
        export(true),
        EncodeCtx::default(),
        false,
        t.iter().map(|(p, a)| (*p, a)),
    );
}

fn attrs(lp: u32) -> Arc<RouteAttrs> {
    Arc::new(RouteAttrs {
        local_pref: Some(lp),
        ..RouteAttrs::default()
    })
}

/// Drains the RIB; returns the decoded UPDATEs, checking every encoding fits 4096 bytes.
fn drain(rib: &mut AdjRibOut) -> Vec<Update> {
    let enc = EncodeCtx::default();
    let mut out = vec![];
    while let Some(u) = rib.next_update() {
        let bytes = Message::Update(u).encode(&enc);
        assert!(bytes.len() <= MAX_MESSAGE_LEN, "{} bytes", bytes.len());
        let Message::Update(d) = Message::decode(&bytes, &DecodeCtx::default()).unwrap() else {
            panic!()
        };
        out.push(d);
        assert!(out.len() < 100_000, "runaway");
    }
    out
}

fn announced(us: &[Update]) -> Vec<IpNet> {
    let mut v = vec![];
    for u in us {
        v.extend(u.nlri.iter().map(|p| IpNet::V4(*p)));
        if let Some(MpReach::Ipv6Unicast { nlri, .. }) = &u.attrs.mp_reach {
            v.extend(nlri.iter().map(|p| IpNet::V6(*p)));
        }
    }
    v
}

fn table(n: u32, f: fn(u32) -> IpNet, a: &Arc<RouteAttrs>) -> HashMap<IpNet, Arc<RouteAttrs>> {
    (0..n).map(|i| (f(i), a.clone())).collect()
}

#[test]
fn ten_thousand_v4_pack_into_few_updates_then_end_of_rib() {
    let a = attrs(100);
    let t = table(10_000, v4, &a);
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    let us = drain(&mut rib);
    let got = announced(&us);
    assert_eq!(got.len(), 10_000);
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 10_000);
    // 5 bytes per /32: ~810 per UPDATE → 13 UPDATEs + 2 End-of-RIB.
    assert_eq!(us.len(), 13 + 2);
    assert_eq!(us[13].end_of_rib_family(), Some(Family::IPV4_UNICAST));
    assert_eq!(us[14].end_of_rib_family(), Some(Family::IPV6_UNICAST));
    assert_eq!(rib.routes_sent(), 10_000);
    assert!(rib.is_idle());
}

#[test]
fn ten_thousand_v6_pack_like_bird_not_one_per_update() {
    let a = attrs(100);
    let t = table(10_000, v6, &a);
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    let us = drain(&mut rib);
    assert_eq!(announced(&us).len(), 10_000);
    let with_nlri = us.iter().filter(|u| u.attrs.mp_reach.is_some()).count();
    // 17 bytes per /128: ~236 per UPDATE → 43 UPDATEs (BIRD: 79, GoBGP/ExaBGP: 10,000).
    assert_eq!(with_nlri, 43);
    for u in us.iter().filter(|u| u.attrs.mp_reach.is_some()) {
        let Some(MpReach::Ipv6Unicast { next_hop, .. }) = &u.attrs.mp_reach else {
            panic!()
        };
        assert_eq!(*next_hop, "2001:db8::10".parse::<Ipv6Addr>().unwrap());
    }
}

#[test]
fn updates_are_filled_close_to_the_limit() {
    let a = attrs(100);
    let t = table(2_000, v4, &a);
    let mut rib = AdjRibOut::new();
    up(&mut rib, &[Family::IPV4_UNICAST], &t);
    let enc = EncodeCtx::default();
    let u = rib.next_update().unwrap();
    let len = Message::Update(u).encode(&enc).len();
    assert!(len > MAX_MESSAGE_LEN - 5 && len <= MAX_MESSAGE_LEN, "{len}");
}

#[test]
fn withdraw_jumps_the_announce_backlog() {
    let a = attrs(100);
    let t = table(10_000, v4, &a);
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    let first = rib.next_update().unwrap();
    let sent_one = IpNet::V4(first.nlri[0]);
    let queued = (0..10_000)
        .map(v4)
        .find(|p| !first.nlri.iter().any(|n| IpNet::V4(*n) == *p))
        .unwrap();
    rib.withdraw(sent_one);
    rib.withdraw(queued);
    let next = rib.next_update().unwrap();
    // The very next UPDATE withdraws what the peer has; the queued one just never goes out.
    assert_eq!(next.withdrawn, vec![first.nlri[0]]);
    assert!(next.nlri.is_empty());
    let rest = announced(&drain(&mut rib));
    assert!(!rest.contains(&queued));
    assert_eq!(rest.len() + first.nlri.len(), 9_999);
}

#[test]
fn v6_withdraw_goes_in_mp_unreach() {
    let a = attrs(100);
    let t = table(3, v6, &a);
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    drain(&mut rib);
    rib.withdraw(v6(1));
    let us = drain(&mut rib);
    assert_eq!(us.len(), 1);
    let IpNet::V6(p) = v6(1) else { panic!() };
    assert_eq!(
        us[0].attrs.mp_unreach,
        Some(MpUnreach::Ipv6Unicast(vec![p]))
    );
    assert_eq!(rib.routes_sent(), 2);
}

#[test]
fn changed_attributes_replace_and_equal_ones_are_not_resent() {
    let mut rib = AdjRibOut::new();
    let t = table(1, v4, &attrs(100));
    up(&mut rib, &BOTH, &t);
    drain(&mut rib);
    rib.announce(v4(0), attrs(100));
    assert!(drain(&mut rib).is_empty());
    rib.announce(v4(0), attrs(200));
    let us = drain(&mut rib);
    assert_eq!(us.len(), 1);
    assert_eq!(us[0].attrs.local_pref, Some(200));
    // A change while queued replaces the queued version.
    rib.announce(v4(0), attrs(300));
    rib.announce(v4(0), attrs(400));
    let us = drain(&mut rib);
    assert_eq!(us.len(), 1);
    assert_eq!(us[0].attrs.local_pref, Some(400));
}

#[test]
fn different_attributes_go_in_different_updates() {
    let mut rib = AdjRibOut::new();
    let mut t = table(10, v4, &attrs(100));
    t.insert(v4(100), attrs(150));
    up(&mut rib, &[Family::IPV4_UNICAST], &t);
    let us = drain(&mut rib);
    assert_eq!(us.len(), 3);
    let mut lps: Vec<_> = us[..2]
        .iter()
        .map(|u| (u.attrs.local_pref, u.nlri.len()))
        .collect();
    lps.sort();
    assert_eq!(lps, vec![(Some(100), 10), (Some(150), 1)]);
}

#[test]
fn session_down_then_up_reannounces_everything() {
    let t = table(500, v4, &attrs(100));
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    drain(&mut rib);
    rib.session_down();
    assert!(!rib.is_active());
    rib.announce(v4(7), attrs(1)); // ignored while down
    assert!(drain(&mut rib).is_empty());
    up(&mut rib, &BOTH, &t);
    let us = drain(&mut rib);
    assert_eq!(announced(&us).len(), 500);
    assert_eq!(
        us.last().unwrap().end_of_rib_family(),
        Some(Family::IPV6_UNICAST)
    );
}

#[test]
fn families_not_negotiated_are_not_sent() {
    let mut t = table(5, v4, &attrs(100));
    t.extend(table(5, v6, &attrs(100)));
    let mut rib = AdjRibOut::new();
    up(&mut rib, &[Family::IPV4_UNICAST], &t);
    let us = drain(&mut rib);
    assert_eq!(announced(&us).len(), 5);
    assert!(announced(&us).iter().all(|p| matches!(p, IpNet::V4(_))));
}

#[test]
fn route_refresh_requeues_the_family() {
    let t = table(20, v4, &attrs(100));
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    drain(&mut rib);
    rib.refresh(Family::IPV6_UNICAST);
    assert!(drain(&mut rib).is_empty());
    rib.refresh(Family::IPV4_UNICAST);
    assert_eq!(announced(&drain(&mut rib)).len(), 20);
}

#[test]
fn ebgp_v4_without_a_next_hop_is_dropped_not_stuck() {
    let t = table(3, v4, &attrs(100));
    let mut rib = AdjRibOut::new();
    let mut e = export(false);
    e.next_hop_v4 = None;
    rib.session_up(
        &[Family::IPV4_UNICAST],
        e,
        EncodeCtx::default(),
        false,
        t.iter().map(|(p, a)| (*p, a)),
    );
    let u = rib.next_update().unwrap();
    assert_eq!(u.end_of_rib_family(), Some(Family::IPV4_UNICAST));
    assert!(rib.is_idle());
}

fn outcome(w: &mut PeerWait) -> Option<WithdrawOutcome> {
    match w {
        PeerWait::Done(o) => Some(*o),
        PeerWait::Pending(rx) => rx.try_recv().ok(),
    }
}

#[test]
fn a_withdraw_waits_for_its_update_to_be_written() {
    let t = table(3, v4, &attrs(100));
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    drain(&mut rib);
    rib.mark_written(rib.produced());
    assert!(rib.withdraw(v4(1)));
    let mut w = rib.wait_written(true);
    assert_eq!(outcome(&mut w), None);
    let u = rib.next_update().unwrap();
    assert_eq!(u.withdrawn.len(), 1);
    assert_eq!(outcome(&mut w), None, "produced, not yet written");
    let mark = rib.produced();
    rib.mark_written(mark - 1);
    assert_eq!(outcome(&mut w), None);
    rib.mark_written(mark);
    assert_eq!(outcome(&mut w), Some(WithdrawOutcome::Written));
}

#[test]
fn a_withdraw_of_what_the_peer_never_got_resolves_at_once() {
    let t = table(10_000, v4, &attrs(100));
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    // Still queued, never sent: the announce is dropped, nothing to tell the peer.
    assert!(!rib.withdraw(v4(9_999)));
    let mut w = rib.wait_written(false);
    assert_eq!(outcome(&mut w), Some(WithdrawOutcome::NotHeld));
    assert!(!announced(&drain(&mut rib)).contains(&v4(9_999)));
}

#[test]
fn a_second_withdraw_of_a_prefix_in_flight_waits_for_that_write() {
    let t = table(3, v4, &attrs(100));
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    drain(&mut rib);
    rib.mark_written(rib.produced());
    assert!(rib.withdraw(v4(0)));
    let mut first = rib.wait_written(true);
    rib.next_update().unwrap(); // in the writer's buffer now
                                // The same prefix again: the peer no longer holds it in the RIB's eyes, but the UPDATE
                                // telling it so is not on the socket yet.
    assert!(!rib.withdraw(v4(0)));
    let mut second = rib.wait_written(false);
    assert_eq!(outcome(&mut second), None);
    rib.mark_written(rib.produced());
    assert_eq!(outcome(&mut first), Some(WithdrawOutcome::Written));
    assert_eq!(outcome(&mut second), Some(WithdrawOutcome::NotHeld));
}

#[test]
fn a_withdraw_cancelled_by_a_reannounce_resolves_without_an_update() {
    let a = attrs(100);
    let t = table(3, v4, &a);
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    drain(&mut rib);
    rib.mark_written(rib.produced());
    assert!(rib.withdraw(v4(2)));
    let mut w = rib.wait_written(true);
    rib.announce(v4(2), a.clone()); // the peer has exactly this: the withdrawal is off
    assert!(rib.next_update().is_none());
    assert_eq!(outcome(&mut w), Some(WithdrawOutcome::Written));
    assert_eq!(rib.routes_sent(), 3);
}

#[test]
fn session_down_answers_waiting_withdraws() {
    let t = table(3, v4, &attrs(100));
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    drain(&mut rib);
    assert!(rib.withdraw(v4(0)));
    let mut w = rib.wait_written(true);
    rib.next_update().unwrap();
    rib.session_down();
    assert_eq!(outcome(&mut w), Some(WithdrawOutcome::SessionDown));
}

#[test]
fn withdraws_go_out_oldest_first_one_family_per_update() {
    let mut t = table(3, v4, &attrs(100));
    t.extend(table(3, v6, &attrs(100)));
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    drain(&mut rib);
    for p in [v4(2), v4(0), v6(1), v4(1)] {
        assert!(rib.withdraw(p));
    }
    let us = drain(&mut rib);
    assert_eq!(us.len(), 3);
    let IpNet::V4(a) = v4(2) else { panic!() };
    let IpNet::V4(b) = v4(0) else { panic!() };
    let IpNet::V4(c) = v4(1) else { panic!() };
    let IpNet::V6(d) = v6(1) else { panic!() };
    assert_eq!(us[0].withdrawn, vec![a, b]);
    assert_eq!(
        us[1].attrs.mp_unreach,
        Some(MpUnreach::Ipv6Unicast(vec![d]))
    );
    assert_eq!(us[2].withdrawn, vec![c]);
}

#[test]
fn attributes_too_large_for_an_update_are_dropped_and_counted_not_looped() {
    let huge = Arc::new(RouteAttrs {
        // 1,100 communities: 4,400 bytes of attribute alone.
        communities: (0..1100).map(|i| Community::new(65000, i)).collect(),
        ..RouteAttrs::default()
    });
    let mut t = table(5, v4, &huge);
    t.insert(v4(100), attrs(100));
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    let us = drain(&mut rib);
    // The ordinary route, then two End-of-RIB; the five big ones never go out.
    assert_eq!(announced(&us), vec![v4(100)]);
    assert_eq!(us.len(), 3);
    assert_eq!(rib.routes_too_large(), 5);
    assert!(rib.is_idle());
}

/// A route that passes `attrs_fit` packs into an UPDATE with its prefix on every kind of
/// session (iBGP, eBGP with the most prepends, 2-octet AS peer), one that fails does not.
#[test]
fn attrs_fit_agrees_with_the_packer() {
    use crate::policy::attrs_fit;
    let comms = |n: u32| -> Vec<Community> { (0..n).map(Community).collect() };
    let max = (0..2000)
        .take_while(|&n| attrs_fit(&comms(n), &[], &RouteAttrs::default()).is_ok())
        .last()
        .unwrap();
    for (n, fits) in [(max, true), (max + 40, false)] {
        let a = Arc::new(RouteAttrs {
            local_pref: Some(0),
            med: Some(1),
            ..RouteAttrs::default()
        });
        let mut t = table(1, v6, &a);
        t.extend(table(1, v4, &a));
        for (ibgp, four_octet_as) in [(true, true), (false, true), (false, false)] {
            let mut e = export(ibgp);
            e.local_as = 4_200_000_000;
            e.communities = comms(n);
            e.ebgp_preference = EbgpPreference::Prepend {
                base: 1000,
                step: 1,
            };
            let mut rib = AdjRibOut::new();
            rib.session_up(
                &BOTH,
                e,
                EncodeCtx { four_octet_as },
                false,
                t.iter().map(|(p, a)| (*p, a)),
            );
            let sent = announced(&drain(&mut rib)).len();
            assert_eq!(
                sent == 2,
                fits,
                "{n} communities, ibgp {ibgp}, 4-octet {four_octet_as}"
            );
        }
    }
}

#[test]
fn new_export_settings_send_every_route_again_and_follow_next_hops() {
    let mut t = table(3, v4, &attrs(100));
    t.extend(table(2, v6, &attrs(100)));
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &t);
    drain(&mut rib);
    // Same settings: nothing to send.
    rib.set_export(export(true), t.iter().map(|(p, a)| (*p, a)));
    assert!(drain(&mut rib).is_empty());
    // A new speaker-wide community: all five again, with it, and no withdraw.
    let mut e = export(true);
    e.communities = vec![Community::new(65010, 9)];
    rib.set_export(e.clone(), t.iter().map(|(p, a)| (*p, a)));
    let us = drain(&mut rib);
    assert_eq!(announced(&us).len(), 5);
    assert!(us
        .iter()
        .all(|u| u.withdrawn.is_empty() && u.attrs.mp_unreach.is_none()));
    assert!(us
        .iter()
        .all(|u| u.attrs.communities == vec![Community::new(65010, 9)]));
    // The IPv6 next hop goes away: the IPv6 routes are withdrawn, the IPv4 ones stay.
    e.next_hop_v6 = None;
    rib.set_export(e.clone(), t.iter().map(|(p, a)| (*p, a)));
    let us = drain(&mut rib);
    let IpNet::V6(a) = v6(0) else { panic!() };
    let IpNet::V6(b) = v6(1) else { panic!() };
    let mut gone = match &us[0].attrs.mp_unreach {
        Some(MpUnreach::Ipv6Unicast(w)) => w.clone(),
        other => panic!("{other:?}"),
    };
    gone.sort();
    assert_eq!(gone, {
        let mut v = vec![a, b];
        v.sort();
        v
    });
    assert_eq!(rib.routes_sent(), 3);
    // And comes back: announced again.
    e.next_hop_v6 = Some("2001:db8::10".parse().unwrap());
    rib.set_export(e, t.iter().map(|(p, a)| (*p, a)));
    assert_eq!(announced(&drain(&mut rib)).len(), 5);
    assert_eq!(rib.routes_sent(), 5);
}

#[test]
fn a_held_end_of_rib_waits_for_release_after_the_routes() {
    let t = table(3, v4, &attrs(100));
    let mut rib = AdjRibOut::new();
    rib.session_up(
        &BOTH,
        export(true),
        EncodeCtx::default(),
        true,
        t.iter().map(|(p, a)| (*p, a)),
    );
    let us = drain(&mut rib);
    assert_eq!(announced(&us).len(), 3);
    assert!(us.iter().all(|u| u.end_of_rib_family().is_none()));
    assert!(rib.is_idle());
    // Routes announced meanwhile still go before it.
    rib.announce(v4(10), attrs(100));
    rib.release_end_of_rib();
    let us = drain(&mut rib);
    assert_eq!(announced(&us), vec![v4(10)]);
    let eors: Vec<_> = us.iter().filter_map(|u| u.end_of_rib_family()).collect();
    assert_eq!(eors, BOTH.to_vec());
}

/// `n` prefixes from `f`, for a batch announce.
fn many(n: u32, f: fn(u32) -> IpNet) -> Vec<IpNet> {
    (0..n).map(f).collect()
}

#[test]
fn large_batches_go_through_the_inbox_in_order_and_unchanged_ones_are_skipped() {
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &HashMap::new());
    drain(&mut rib); // End-of-RIBs
    let a = attrs(100);
    rib.announce_many(&a, many(5_000, v4).into_iter());
    assert_eq!(rib.announces_queued(), 5_000);
    let us = drain(&mut rib);
    // In call order, full UPDATEs.
    assert_eq!(announced(&us), many(5_000, v4));
    assert_eq!(us.len(), 7);
    assert_eq!(rib.routes_sent(), 5_000);
    // The same again: nothing to send.
    rib.announce_many(&a, many(5_000, v4).into_iter());
    assert!(drain(&mut rib).is_empty());
    // Other attributes, then back: the last one wins for every prefix.
    rib.announce_many(&attrs(200), many(1_000, v4).into_iter());
    rib.announce_many(&attrs(300), many(1_000, v4).into_iter());
    let us = drain(&mut rib);
    assert!(us.iter().all(|u| u.attrs.local_pref.is_some()));
    assert_eq!(us.last().unwrap().attrs.local_pref, Some(300));
    let last_of = |p: IpNet| {
        us.iter()
            .rev()
            .find(|u| announced(std::slice::from_ref(u)).contains(&p))
            .and_then(|u| u.attrs.local_pref)
    };
    assert!(many(1_000, v4).into_iter().all(|p| last_of(p) == Some(300)));
    assert_eq!(
        rib.book.acct.attrs.len(),
        2,
        "100 and 300 in use, 200 freed"
    );
}

#[test]
fn a_withdraw_sees_announces_still_in_the_inbox() {
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &HashMap::new());
    drain(&mut rib);
    let a = attrs(100);
    rib.announce_many(&a, many(2_000, v4).into_iter());
    let first = rib.next_update().unwrap();
    let sent = IpNet::V4(first.nlri[0]);
    let unsent = v4(1_999);
    assert!(rib.withdraw(sent));
    assert!(!rib.withdraw(unsent));
    let us = drain(&mut rib);
    assert_eq!(us[0].withdrawn, vec![first.nlri[0]]);
    assert!(!announced(&us).contains(&unsent));
    assert_eq!(rib.routes_sent(), 2_000 - 2);
}

#[test]
fn an_inbox_announce_of_a_prefix_being_withdrawn_replaces_the_withdraw() {
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &HashMap::new());
    drain(&mut rib);
    rib.announce_many(&attrs(100), many(300, v4).into_iter());
    drain(&mut rib);
    assert!(rib.withdraw(v4(7)));
    // A large batch lands in the inbox behind the queued withdraw.
    rib.announce_many(&attrs(200), many(300, v4).into_iter());
    let us = drain(&mut rib);
    // No withdraw goes out: the new announce replaces it (an implicit replace).
    assert!(us.iter().all(|u| u.withdrawn.is_empty()), "{us:?}");
    assert_eq!(announced(&us).len(), 300);
    assert!(us.iter().all(|u| u.attrs.local_pref == Some(200)));
    assert_eq!(rib.routes_sent(), 300);
}

#[test]
fn everything_withdrawn_leaves_no_attribute_set_behind() {
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &HashMap::new());
    drain(&mut rib);
    rib.announce_many(&attrs(100), many(1_000, v4).into_iter());
    rib.announce_many(&attrs(150), many(500, v6).into_iter());
    drain(&mut rib);
    for p in many(1_000, v4).into_iter().chain(many(500, v6)) {
        assert!(rib.withdraw(p));
    }
    drain(&mut rib);
    assert_eq!(rib.routes_sent(), 0);
    assert_eq!(rib.book.acct.attrs.len(), 0);
    assert!(rib.book.v4.is_empty() && rib.book.v6.is_empty());
}

#[test]
fn a_large_batch_too_large_for_an_update_is_dropped_and_counted() {
    let huge = Arc::new(RouteAttrs {
        communities: (0..1100).map(|i| Community::new(65000, i)).collect(),
        ..RouteAttrs::default()
    });
    let mut rib = AdjRibOut::new();
    up(&mut rib, &BOTH, &HashMap::new());
    drain(&mut rib);
    rib.announce_many(&huge, many(400, v4).into_iter());
    rib.announce_many(&attrs(100), many(1, |i| v4(i + 1_000)).into_iter());
    let us = drain(&mut rib);
    assert_eq!(announced(&us), vec![v4(1_000)]);
    assert_eq!(rib.routes_too_large(), 400);
    assert!(rib.is_idle());
}
