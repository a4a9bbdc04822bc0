//! Awaitable withdraws against real routers: once `withdraw(..).await` returns `Written`,
//! the router has the UPDATE: its RIB loses the path right after.

use std::time::{Duration, Instant};

use bgp::{RouteAttrs, WithdrawOutcome};

use crate::routers::{
    in_lb, lab, peer, speaker_cfg, speaker_up, until, Kind, Opts, Router, LB_V4, ROUTER_AS, R_V4,
};

/// How soon after the future resolved the router must have dropped the path. The UPDATE is
/// on the router's socket by then; this is the router's own reading and processing time.
const AFTER_RESOLVE: Duration = Duration::from_millis(500);

const PREFIXES: [&str; 2] = ["198.51.100.1/32", "198.51.100.2/32"];

fn withdraw_resolves_once_the_router_has_it(kind: Kind) {
    let lab = lab();
    let router = Router::start(kind, &lab, &Opts::default());
    in_lb(&lab, router, |r| async move {
        let routes = PREFIXES.map(|p| (p, RouteAttrs::default()));
        let (sp, _ev) = speaker_up(speaker_cfg(ROUTER_AS), peer("r", R_V4), &routes).await;
        assert!(until(&r, Duration::from_secs(5), |r| r.established(LB_V4)).await);
        assert!(
            until(&r, Duration::from_secs(10), |r| PREFIXES
                .iter()
                .all(|p| r.installed(p)))
            .await,
            "{kind:?}: routes not installed"
        );
        for p in PREFIXES {
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
            let t = Instant::now();
            assert!(
                until(&r, AFTER_RESOLVE, move |r| !r.has_path(p)).await,
                "{kind:?}: {p} still at the router {AFTER_RESOLVE:?} after the withdrawal resolved"
            );
            eprintln!(
                "{kind:?}: {p} withdrawal resolved after {resolved:?}, gone at the router {:?} later",
                t.elapsed()
            );
        }
        // Nothing held any more: resolves at once, saying so.
        let report = sp.withdraw(PREFIXES[0].parse().unwrap()).await;
        assert_eq!(report.outcome("r"), Some(WithdrawOutcome::NotHeld));
        sp.shutdown("lab done").await;
    });
}

per_router!(
    lab_withdraw_resolves_once_the_router_has_it,
    withdraw_resolves_once_the_router_has_it
);
