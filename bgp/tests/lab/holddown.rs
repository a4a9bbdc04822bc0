//! Hold-down (the BFD hook) against real routers: `set_peer_down` makes the router drop the
//! speaker's routes at once (Cease / BFD Down), no session comes back while held, and
//! `set_peer_up` brings session and routes back.

use std::time::{Duration, Instant};

use bgp::{PeerEvent, RouteAttrs, Speaker};

use crate::routers::{
    blocking, in_lb, lab, peer, speaker_cfg, Kind, Opts, Router, LB_V4, ROUTER_AS, R_V4,
};

const P: &str = "198.51.100.1/32";

/// Longer than the speaker's reconnect delay (1 s base): a peer not held down would be back.
const HELD: Duration = Duration::from_secs(3);

fn hold_down_drops_routes_and_keeps_the_session_down(kind: Kind) {
    let lab = lab();
    let router = Router::start(kind, &lab, &Opts::default());
    in_lb(&lab, router, |r| async move {
        let (sp, mut ev) = Speaker::start(speaker_cfg(ROUTER_AS)).unwrap();
        sp.announce(P.parse().unwrap(), RouteAttrs::default());
        sp.add_peer(peer("r", R_V4)).unwrap();
        let up = |ev: Option<PeerEvent>| matches!(ev, Some(PeerEvent::Up { .. }));
        let e = tokio::time::timeout(Duration::from_secs(20), ev.recv())
            .await
            .unwrap();
        assert!(up(e), "{kind:?}");
        let r2 = r.clone();
        assert!(blocking(move || r2.wait(Duration::from_secs(10), |r| r.installed(P))).await);

        let t = Instant::now();
        sp.set_peer_down("r", "BFD: detection time expired")
            .unwrap();
        let r2 = r.clone();
        assert!(
            blocking(move || r2.wait(Duration::from_secs(2), |r| !r.has_path(P))).await,
            "{kind:?}: route kept after the hold-down"
        );
        eprintln!("{kind:?}: route gone {:?} after set_peer_down", t.elapsed());
        let r2 = r.clone();
        assert!(
            !blocking(move || r2.wait(HELD, |r| r.established(LB_V4))).await,
            "{kind:?}: session back while held down"
        );
        assert_eq!(sp.peers().await[0].state, "idle");

        sp.set_peer_up("r").unwrap();
        // gobgpd refuses a peer for 5 s after it dropped (its idle hold); the others at once.
        loop {
            let e = tokio::time::timeout(Duration::from_secs(30), ev.recv())
                .await
                .unwrap();
            if up(e) {
                break;
            }
        }
        let r2 = r.clone();
        assert!(
            blocking(move || r2.wait(Duration::from_secs(10), |r| r.installed(P))).await,
            "{kind:?}: route not back after release"
        );
        sp.shutdown("lab done").await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_hold_down_with_gobgpd() {
    hold_down_drops_routes_and_keeps_the_session_down(Kind::Gobgp);
}

#[test]
#[ignore = "lab: needs root, netns and BIRD 2; run netns-lab/test"]
fn lab_hold_down_with_bird() {
    hold_down_drops_routes_and_keeps_the_session_down(Kind::Bird);
}

#[test]
#[ignore = "lab: needs root, netns and FRR; run netns-lab/test"]
fn lab_hold_down_with_frr() {
    hold_down_drops_routes_and_keeps_the_session_down(Kind::Frr);
}
