//! Awaitable withdraws against real routers: once `withdraw(..).await` returns `Written`,
//! the router has the UPDATE: its RIB loses the path right after.

use std::time::{Duration, Instant};

use bgp::{PeerEvent, RouteAttrs, Speaker, WithdrawOutcome};

use crate::routers::{blocking, in_lb, lab, peer, speaker_cfg, Kind, Opts, Router, LB_V4, R_V4};

/// How soon after the future resolved the router must have dropped the path. The UPDATE is
/// on the router's socket by then; this is the router's own reading and processing time.
const AFTER_RESOLVE: Duration = Duration::from_millis(500);

fn withdraw_resolves_once_the_router_has_it(kind: Kind) {
    let lab = lab();
    let router = Router::start(kind, &lab, &Opts::default());
    in_lb(&lab, router, |r| async move {
        let (sp, mut ev) = Speaker::start(speaker_cfg(crate::routers::ROUTER_AS)).unwrap();
        sp.add_peer(peer("r", R_V4)).unwrap();
        let prefixes = ["198.51.100.1/32", "198.51.100.2/32"];
        sp.announce_many(prefixes.map(|p| (p.parse().unwrap(), RouteAttrs::default())));
        let e = tokio::time::timeout(Duration::from_secs(20), ev.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(PeerEvent::Up { .. })), "{e:?}");
        let r2 = r.clone();
        assert!(blocking(move || r2.wait(Duration::from_secs(5), |r| r.established(LB_V4))).await);
        let r2 = r.clone();
        assert!(
            blocking(move || r2.wait(Duration::from_secs(10), |r| prefixes
                .iter()
                .all(|p| r.installed(p))))
            .await,
            "{kind:?}: routes not installed"
        );

        for p in prefixes {
            let t = Instant::now();
            let report =
                tokio::time::timeout(Duration::from_secs(5), sp.withdraw(p.parse().unwrap()))
                    .await
                    .expect("withdrawal did not resolve");
            let resolved = t.elapsed();
            assert_eq!(
                report.outcome("r"),
                Some(WithdrawOutcome::Written),
                "{report:?}"
            );
            let r2 = r.clone();
            let t = Instant::now();
            let gone = blocking(move || r2.wait(AFTER_RESOLVE, |r| !r.has_path(p))).await;
            assert!(
                gone,
                "{kind:?}: {p} still at the router {AFTER_RESOLVE:?} after the withdrawal resolved"
            );
            eprintln!("{kind:?}: {p} withdrawal resolved after {resolved:?}, gone at the router {:?} later", t.elapsed());
        }
        // Nothing held any more: resolves at once, saying so.
        let report = sp.withdraw(prefixes[0].parse().unwrap()).await;
        assert_eq!(report.outcome("r"), Some(WithdrawOutcome::NotHeld));
        sp.shutdown("lab done").await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_withdraw_resolves_once_gobgpd_has_it() {
    withdraw_resolves_once_the_router_has_it(Kind::Gobgp);
}

#[test]
#[ignore = "lab: needs root, netns and BIRD 2; run netns-lab/test"]
fn lab_withdraw_resolves_once_bird_has_it() {
    withdraw_resolves_once_the_router_has_it(Kind::Bird);
}

#[test]
#[ignore = "lab: needs root, netns and FRR; run netns-lab/test"]
fn lab_withdraw_resolves_once_frr_has_it() {
    withdraw_resolves_once_the_router_has_it(Kind::Frr);
}
