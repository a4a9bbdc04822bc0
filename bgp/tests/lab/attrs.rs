//! Attribute changes without a session reset, against real routers: a route announced
//! again with a new LOCAL_PREF and communities replaces the old path (no withdraw in
//! between), and so do runtime changes of the speaker-wide communities and of a peer's next
//! hop. Each router's own record of withdrawals is read: gobgpd's `monitor` stream, BIRD's
//! route debug log, FRR's `debug bgp updates` log.

use std::net::Ipv4Addr;
use std::time::Duration;

use bgp::{Community, PeerEvent, Reconfigured, RouteAttrs, Speaker};

use crate::routers::{
    blocking, in_lb, lab, peer, speaker_cfg, Kind, Opts, Router, ROUTER_AS, R_V4,
};

const P: &str = "198.51.100.1/32";

fn attrs(lp: u32, community: u16) -> RouteAttrs {
    RouteAttrs {
        local_pref: Some(lp),
        communities: vec![Community::new(65000, community)],
        ..RouteAttrs::default()
    }
}

fn changes_replace_without_withdraw(kind: Kind) {
    let lab = lab();
    let router = Router::start(kind, &lab, &Opts::default());
    in_lb(&lab, router, |r| async move {
        let (sp, mut ev) = Speaker::start(speaker_cfg(ROUTER_AS)).unwrap();
        sp.announce(P.parse().unwrap(), attrs(100, 100));
        sp.add_peer(peer("r", R_V4)).unwrap();
        let e = tokio::time::timeout(Duration::from_secs(20), ev.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(PeerEvent::Up { .. })), "{e:?}");
        let r2 = r.clone();
        assert!(blocking(move || r2.wait(Duration::from_secs(10), |r| r.installed(P))).await);
        let watch = {
            let r2 = r.clone();
            blocking(move || r2.watch_withdrawals(P)).await
        };

        // (a) The route again with a new LOCAL_PREF and community: an implicit replace.
        sp.announce(P.parse().unwrap(), attrs(200, 200));
        let r2 = r.clone();
        assert!(
            blocking(
                move || r2.wait(Duration::from_secs(5), |r| r.local_pref(P) == Some(200)
                    && r.communities(P).contains(&"65000:200".to_string()))
            )
            .await,
            "{kind:?}: new attributes not seen"
        );

        // (b) Speaker-wide communities, then the peer's next hop, at runtime.
        let mut cfg = speaker_cfg(ROUTER_AS);
        cfg.communities = vec![Community::new(65000, 7)];
        assert_eq!(sp.reconfigure(cfg).unwrap(), Reconfigured::Applied);
        let r2 = r.clone();
        assert!(
            blocking(move || r2.wait(Duration::from_secs(5), |r| r
                .communities(P)
                .contains(&"65000:7".to_string())))
            .await,
            "{kind:?}: speaker-wide community not seen"
        );
        let mut p = peer("r", R_V4);
        p.next_hop_v4 = Some(Ipv4Addr::new(192, 0, 2, 12));
        sp.add_peer(p).unwrap();
        let r2 = r.clone();
        assert!(
            blocking(
                move || r2.wait(Duration::from_secs(5), |r| r.next_hop(P).as_deref()
                    == Some("192.0.2.12"))
            )
            .await,
            "{kind:?}: new next hop not seen"
        );

        let r2 = r.clone();
        let withdrawn = blocking(move || watch.withdrawals(&r2)).await;
        assert!(
            withdrawn.is_empty(),
            "{kind:?}: withdrawn in between: {withdrawn:?}"
        );
        assert!(ev.try_recv().is_err(), "{kind:?}: the session went down");
        // The watch sees a real withdraw (so its silence above means something).
        let watch = {
            let r2 = r.clone();
            blocking(move || r2.watch_withdrawals(P)).await
        };
        sp.withdraw(P.parse().unwrap()).await;
        let r2 = r.clone();
        assert!(
            blocking(move || r2.wait(Duration::from_secs(5), |r| !watch.withdrawals(r).is_empty()))
                .await,
            "{kind:?}: the watch misses withdrawals"
        );
        sp.shutdown("lab done").await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_attribute_changes_without_reset_gobgpd() {
    changes_replace_without_withdraw(Kind::Gobgp);
}

#[test]
#[ignore = "lab: needs root, netns and BIRD 2; run netns-lab/test"]
fn lab_attribute_changes_without_reset_bird() {
    changes_replace_without_withdraw(Kind::Bird);
}

#[test]
#[ignore = "lab: needs root, netns and FRR; run netns-lab/test"]
fn lab_attribute_changes_without_reset_frr() {
    changes_replace_without_withdraw(Kind::Frr);
}
