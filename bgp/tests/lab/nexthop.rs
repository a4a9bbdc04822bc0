//! IPv6 routes over an IPv4 session: the next hop is a global IPv6 address of the speaker's
//! interface (BIRD 2 refuses an IPv4-mapped one, FRR's zebra does not install it); with none
//! there, no IPv6 route goes out at all and the peer's status says why.

use std::time::Duration;

use bgp::{PeerEvent, RouteAttrs, Speaker};

use crate::routers::{
    blocking, in_lb, lab, peer, speaker_cfg, Kind, Opts, Router, LB_V4, ROUTER_AS, R_V4,
};

const V6: &str = "2001:db8:100::1/128";
const V4: &str = "198.51.100.1/32";

fn ipv6_over_ipv4_is_installed(kind: Kind) {
    let lab = lab();
    let router = Router::start(kind, &lab, &Opts::default());
    in_lb(&lab, router, |r| async move {
        let (sp, mut ev) = Speaker::start(speaker_cfg(ROUTER_AS)).unwrap();
        sp.announce_many([V6, V4].map(|p| (p.parse().unwrap(), RouteAttrs::default())));
        sp.add_peer(peer("r", R_V4)).unwrap();
        let e = tokio::time::timeout(Duration::from_secs(20), ev.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(PeerEvent::Up { .. })), "{e:?}");
        let r2 = r.clone();
        let installed = blocking(move || {
            r2.wait(Duration::from_secs(10), |r| {
                r.installed(V4) && r.installed(V6)
            })
        })
        .await;
        let r2 = r.clone();
        let hop = blocking(move || r2.next_hop(V6)).await;
        assert!(installed, "{kind:?}: {V6} not installed (next hop {hop:?})");
        assert_eq!(hop.as_deref(), Some("2001:db8::11"), "{kind:?}");
        let st = sp.peers().await;
        assert_eq!(st[0].next_hop_missing, None);
        sp.shutdown("lab done").await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_ipv6_over_ipv4_accepted_by_gobgpd() {
    ipv6_over_ipv4_is_installed(Kind::Gobgp);
}

#[test]
#[ignore = "lab: needs root, netns and BIRD 2; run netns-lab/test"]
fn lab_ipv6_over_ipv4_installed_by_bird() {
    ipv6_over_ipv4_is_installed(Kind::Bird);
}

#[test]
#[ignore = "lab: needs root, netns and FRR; run netns-lab/test"]
fn lab_ipv6_over_ipv4_installed_by_frr() {
    ipv6_over_ipv4_is_installed(Kind::Frr);
}

/// gobgpd accepts any next hop, so only what it receives shows what was sent: with no
/// global IPv6 address on the speaker's interface, nothing IPv6.
#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_no_ipv6_address_no_ipv6_routes() {
    let lab = lab();
    lab.lb
        .ip(&["addr", "del", "2001:db8::11/64", "dev", &lab.lb_if])
        .unwrap();
    let router = Router::start(Kind::Gobgp, &lab, &Opts::default());
    in_lb(&lab, router, |r| async move {
        let (sp, mut ev) = Speaker::start(speaker_cfg(ROUTER_AS)).unwrap();
        sp.announce_many([V6, V4].map(|p| (p.parse().unwrap(), RouteAttrs::default())));
        sp.add_peer(peer("r", R_V4)).unwrap();
        let e = tokio::time::timeout(Duration::from_secs(20), ev.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(PeerEvent::Up { .. })), "{e:?}");
        let r2 = r.clone();
        assert!(blocking(move || r2.wait(Duration::from_secs(10), |r| r.installed(V4))).await);
        // Everything is out once the RIB is idle (End-of-RIB sent): the IPv4 route is held,
        // the IPv6 one never was.
        let st = sp.peers().await;
        assert_eq!(st[0].routes_sent, 1, "{st:?}");
        let r2 = r.clone();
        assert!(
            !blocking(move || r2.wait(Duration::from_secs(1), |r| r.has_path(V6))).await,
            "IPv6 route sent"
        );
        let why = st[0].next_hop_missing.clone().unwrap_or_default();
        assert!(why.contains("IPv6 routes not sent"), "{why:?}");
        assert!(blocking(move || r.established(LB_V4)).await);
        sp.shutdown("lab done").await;
    });
}
