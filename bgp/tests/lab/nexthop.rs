//! IPv6 routes over an IPv4 session: the next hop is a global IPv6 address of the speaker's
//! interface (BIRD 2 refuses an IPv4-mapped one, FRR's zebra does not install it); with none
//! there, no IPv6 route goes out at all and the peer's status says why.

use std::time::Duration;

use bgp::RouteAttrs;

use crate::routers::{
    ask, in_lb, lab, peer, speaker_cfg, speaker_up, until, Kind, Opts, Router, LB_V4, ROUTER_AS,
    R_V4,
};

const V6: &str = "2001:db8:100::1/128";
const V4: &str = "198.51.100.1/32";

fn routes() -> [(&'static str, RouteAttrs); 2] {
    [V6, V4].map(|p| (p, RouteAttrs::default()))
}

fn ipv6_over_ipv4_is_installed(kind: Kind) {
    let lab = lab();
    let router = Router::start(kind, &lab, &Opts::default());
    in_lb(&lab, router, |r| async move {
        let (sp, _ev) = speaker_up(speaker_cfg(ROUTER_AS), peer("r", R_V4), &routes()).await;
        let installed = until(&r, Duration::from_secs(10), |r| {
            r.installed(V4) && r.installed(V6)
        })
        .await;
        let hop = ask(&r, |r| r.next_hop(V6)).await;
        assert!(installed, "{kind:?}: {V6} not installed (next hop {hop:?})");
        assert_eq!(hop.as_deref(), Some("2001:db8::11"), "{kind:?}");
        assert_eq!(sp.peers().await[0].next_hop_missing, None);
        sp.shutdown("lab done").await;
    });
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
        let (sp, _ev) = speaker_up(speaker_cfg(ROUTER_AS), peer("r", R_V4), &routes()).await;
        assert!(until(&r, Duration::from_secs(10), |r| r.installed(V4)).await);
        let st = sp.peers().await;
        assert_eq!(st[0].routes_sent, 1, "{st:?}");
        assert!(
            !until(&r, Duration::from_secs(1), |r| r.has_path(V6)).await,
            "IPv6 route sent"
        );
        let why = st[0].next_hop_missing.clone().unwrap_or_default();
        assert!(why.contains("IPv6 routes not sent"), "{why:?}");
        assert!(ask(&r, |r| r.established(LB_V4)).await);
        sp.shutdown("lab done").await;
    });
}

per_router!(lab_ipv6_over_ipv4_installed, ipv6_over_ipv4_is_installed);
