//! Attribute changes without a session reset, against real routers: a route announced
//! again with a new LOCAL_PREF and communities replaces the old path (no withdraw in
//! between), and so do runtime changes of the speaker-wide communities and of a peer's next
//! hop. Each router's own record of withdrawals is read: gobgpd's `monitor` stream, BIRD's
//! route debug log, FRR's `debug bgp updates` log.

use std::net::Ipv4Addr;
use std::time::Duration;

use bgp::{Community, Reconfigured, RouteAttrs};

use crate::routers::{
    ask, in_lb, lab, peer, speaker_cfg, speaker_up, until, Kind, Opts, Router, ROUTER_AS, R_V4,
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
        let (sp, mut ev) = speaker_up(
            speaker_cfg(ROUTER_AS),
            peer("r", R_V4),
            &[(P, attrs(100, 100))],
        )
        .await;
        assert!(until(&r, Duration::from_secs(10), |r| r.installed(P)).await);
        let watch = ask(&r, |r| r.watch_withdrawals(P)).await;

        // (a) The route again with a new LOCAL_PREF and community: an implicit replace.
        sp.announce(P.parse().unwrap(), attrs(200, 200));
        assert!(
            until(&r, Duration::from_secs(5), |r| r.local_pref(P) == Some(200)
                && r.communities(P).contains(&"65000:200".to_string()))
            .await,
            "{kind:?}: new attributes not seen"
        );

        // (b) Speaker-wide communities, then the peer's next hop, at runtime.
        let mut cfg = speaker_cfg(ROUTER_AS);
        cfg.communities = vec![Community::new(65000, 7)];
        assert_eq!(sp.reconfigure(cfg).unwrap(), Reconfigured::Applied);
        assert!(
            until(&r, Duration::from_secs(5), |r| r
                .communities(P)
                .contains(&"65000:7".to_string()))
            .await,
            "{kind:?}: speaker-wide community not seen"
        );
        let mut p = peer("r", R_V4);
        p.next_hop_v4 = Some(Ipv4Addr::new(192, 0, 2, 12));
        sp.add_peer(p).unwrap();
        assert!(
            until(&r, Duration::from_secs(5), |r| r.next_hop(P).as_deref()
                == Some("192.0.2.12"))
            .await,
            "{kind:?}: new next hop not seen"
        );

        let withdrawn = ask(&r, move |r| watch.withdrawals(r)).await;
        assert!(
            withdrawn.is_empty(),
            "{kind:?}: withdrawn in between: {withdrawn:?}"
        );
        assert!(ev.try_recv().is_err(), "{kind:?}: the session went down");
        // The watch sees a real withdraw (so its silence above means something).
        let watch = ask(&r, |r| r.watch_withdrawals(P)).await;
        sp.withdraw(P.parse().unwrap()).await;
        assert!(
            until(&r, Duration::from_secs(5), move |r| !watch
                .withdrawals(r)
                .is_empty())
            .await,
            "{kind:?}: the watch misses withdrawals"
        );
        sp.shutdown("lab done").await;
    });
}

per_router!(
    lab_attribute_changes_without_reset,
    changes_replace_without_withdraw
);
