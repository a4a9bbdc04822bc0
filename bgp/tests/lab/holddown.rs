//! Hold-down (the BFD hook) against real routers: `set_peer_down` makes the router drop the
//! speaker's routes at once (Cease / BFD Down), no session comes back while held, and
//! `set_peer_up` brings session and routes back.

use std::time::{Duration, Instant};

use bgp::{PeerEvent, RouteAttrs};

use crate::routers::{
    in_lb, lab, next_event, peer, speaker_cfg, speaker_up, until, Kind, Opts, Router, LB_V4,
    ROUTER_AS, R_V4,
};

const P: &str = "198.51.100.1/32";

/// Longer than the speaker's reconnect delay (1 s base): a peer not held down would be back.
const HELD: Duration = Duration::from_secs(3);

fn hold_down_drops_routes_and_keeps_the_session_down(kind: Kind) {
    let lab = lab();
    let router = Router::start(kind, &lab, &Opts::default());
    in_lb(&lab, router, |r| async move {
        let (sp, mut ev) = speaker_up(
            speaker_cfg(ROUTER_AS),
            peer("r", R_V4),
            &[(P, RouteAttrs::default())],
        )
        .await;
        assert!(until(&r, Duration::from_secs(10), |r| r.installed(P)).await);

        let t = Instant::now();
        sp.set_peer_down("r", "BFD: detection time expired")
            .unwrap();
        assert!(
            until(&r, Duration::from_secs(2), |r| !r.has_path(P)).await,
            "{kind:?}: route kept after the hold-down"
        );
        eprintln!("{kind:?}: route gone {:?} after set_peer_down", t.elapsed());
        assert!(
            !until(&r, HELD, |r| r.established(LB_V4)).await,
            "{kind:?}: session back while held down"
        );
        assert_eq!(sp.peers().await[0].state, "idle");

        sp.set_peer_up("r").unwrap();
        // gobgpd refuses a peer for 5 s after it dropped (its idle hold); the others at once.
        while !matches!(next_event(&mut ev, 30).await, PeerEvent::Up { .. }) {}
        assert!(
            until(&r, Duration::from_secs(10), |r| r.installed(P)).await,
            "{kind:?}: route not back after release"
        );
        sp.shutdown("lab done").await;
    });
}

per_router!(
    lab_hold_down,
    hold_down_drops_routes_and_keeps_the_session_down
);
