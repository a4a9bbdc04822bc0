//! Adj-RIB-Out tests: packing limits, ordering, replacement, re-announce.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::packet::{DecodeCtx, Message};
use crate::policy::EbgpPreference;

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

fn attrs(lp: u32) -> Arc<RouteAttrs> {
    Arc::new(RouteAttrs {
        local_pref: Some(lp),
        ..RouteAttrs::default()
    })
}

/// Drains the RIB; returns the decoded UPDATEs, checking every encoding fits 4096 bytes.
fn drain(rib: &mut AdjRibOut, ibgp: bool) -> Vec<Update> {
    let enc = EncodeCtx::default();
    let mut out = vec![];
    while let Some(u) = rib.next_update(&export(ibgp), &enc) {
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
    rib.session_up(&BOTH, &t);
    let us = drain(&mut rib, true);
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
    rib.session_up(&BOTH, &t);
    let us = drain(&mut rib, true);
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
    rib.session_up(&[Family::IPV4_UNICAST], &t);
    let enc = EncodeCtx::default();
    let u = rib.next_update(&export(false), &enc).unwrap();
    let len = Message::Update(u).encode(&enc).len();
    assert!(len > MAX_MESSAGE_LEN - 5 && len <= MAX_MESSAGE_LEN, "{len}");
}

#[test]
fn withdraw_jumps_the_announce_backlog() {
    let a = attrs(100);
    let t = table(10_000, v4, &a);
    let mut rib = AdjRibOut::new();
    rib.session_up(&BOTH, &t);
    let enc = EncodeCtx::default();
    let first = rib.next_update(&export(true), &enc).unwrap();
    let sent_one = IpNet::V4(first.nlri[0]);
    let queued = v4(9_999);
    rib.withdraw(sent_one);
    rib.withdraw(queued);
    let next = rib.next_update(&export(true), &enc).unwrap();
    // The very next UPDATE withdraws what the peer has; the queued one just never goes out.
    assert_eq!(next.withdrawn, vec![first.nlri[0]]);
    assert!(next.nlri.is_empty());
    let rest = announced(&drain(&mut rib, true));
    assert!(!rest.contains(&queued));
    assert_eq!(rest.len() + first.nlri.len(), 9_999);
}

#[test]
fn v6_withdraw_goes_in_mp_unreach() {
    let a = attrs(100);
    let t = table(3, v6, &a);
    let mut rib = AdjRibOut::new();
    rib.session_up(&BOTH, &t);
    drain(&mut rib, true);
    rib.withdraw(v6(1));
    let us = drain(&mut rib, true);
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
    rib.session_up(&BOTH, &t);
    drain(&mut rib, true);
    rib.announce(v4(0), attrs(100));
    assert!(drain(&mut rib, true).is_empty());
    rib.announce(v4(0), attrs(200));
    let us = drain(&mut rib, true);
    assert_eq!(us.len(), 1);
    assert_eq!(us[0].attrs.local_pref, Some(200));
    // A change while queued replaces the queued version.
    rib.announce(v4(0), attrs(300));
    rib.announce(v4(0), attrs(400));
    let us = drain(&mut rib, true);
    assert_eq!(us.len(), 1);
    assert_eq!(us[0].attrs.local_pref, Some(400));
}

#[test]
fn different_attributes_go_in_different_updates() {
    let mut rib = AdjRibOut::new();
    let mut t = table(10, v4, &attrs(100));
    t.insert(v4(100), attrs(150));
    rib.session_up(&[Family::IPV4_UNICAST], &t);
    let us = drain(&mut rib, true);
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
    rib.session_up(&BOTH, &t);
    drain(&mut rib, true);
    rib.session_down();
    assert!(!rib.is_active());
    rib.announce(v4(7), attrs(1)); // ignored while down
    assert!(drain(&mut rib, true).is_empty());
    rib.session_up(&BOTH, &t);
    let us = drain(&mut rib, true);
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
    rib.session_up(&[Family::IPV4_UNICAST], &t);
    let us = drain(&mut rib, true);
    assert_eq!(announced(&us).len(), 5);
    assert!(announced(&us).iter().all(|p| matches!(p, IpNet::V4(_))));
}

#[test]
fn route_refresh_requeues_the_family() {
    let t = table(20, v4, &attrs(100));
    let mut rib = AdjRibOut::new();
    rib.session_up(&BOTH, &t);
    drain(&mut rib, true);
    rib.refresh(Family::IPV6_UNICAST);
    assert!(drain(&mut rib, true).is_empty());
    rib.refresh(Family::IPV4_UNICAST);
    assert_eq!(announced(&drain(&mut rib, true)).len(), 20);
}

#[test]
fn ebgp_v4_without_a_next_hop_is_dropped_not_stuck() {
    let t = table(3, v4, &attrs(100));
    let mut rib = AdjRibOut::new();
    rib.session_up(&[Family::IPV4_UNICAST], &t);
    let mut e = export(false);
    e.next_hop_v4 = None;
    let u = rib.next_update(&e, &EncodeCtx::default()).unwrap();
    assert_eq!(u.end_of_rib_family(), Some(Family::IPV4_UNICAST));
    assert!(rib.is_idle());
}
