//! Interop with gobgpd alone: sessions over IPv4 and IPv6 with every attribute checked in
//! its RIB, eBGP, TCP-MD5, a passive speaker, Cease on shutdown, the example speaker killed,
//! stopped and terminated, and gobgpd restarted.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bgp::{Community, LargeCommunity, PeerConfig, PeerEvent, RouteAttrs, Speaker, SpeakerConfig};
use ipnet::IpNet;
use labkit::{GobgpConfig, GobgpNeighbor, Gobgpd};
use serde_json::Value;

use crate::routers::{
    blocking, example_speaker, expect_up, lab, next_event, peer, run_in_lb, speaker_cfg,
    speaker_up, until, Lab, Router, LB_V4, ROUTER_AS, R_V4,
};

const R_V6: &str = "2001:db8::1";
const LB_V6: &str = "2001:db8::11";

/// gobgpd with these neighbors.
fn gobgpd(lab: &Lab, neighbors: Vec<GobgpNeighbor>) -> Gobgpd {
    let mut cfg = GobgpConfig::new(ROUTER_AS, R_V4.parse().unwrap());
    for n in neighbors {
        cfg = cfg.neighbor(n);
    }
    Gobgpd::start(&lab.r, &cfg.to_toml()).unwrap()
}

fn router(lab: &Lab, neighbors: Vec<GobgpNeighbor>) -> Arc<Router> {
    Arc::new(Router::Gobgp(gobgpd(lab, neighbors)))
}

/// A passive neighbor for the speaker's IPv4 address.
fn passive(asn: u32) -> GobgpNeighbor {
    GobgpNeighbor::new(LB_V4.parse().unwrap(), asn).passive(true)
}

/// The paths gobgpd holds for `prefix` (empty when none), as `gobgp global rib -j` has them.
fn paths(r: &Router, prefix: &str) -> Vec<Value> {
    let Router::Gobgp(g) = r else {
        panic!("not gobgpd")
    };
    let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
    g.rib(family)
        .ok()
        .and_then(|rib| rib.get(prefix).and_then(|v| v.as_array().cloned()))
        .unwrap_or_default()
}

fn attr(path: &Value, ty: u64) -> Option<&Value> {
    path["attrs"]
        .as_array()?
        .iter()
        .find(|a| a["type"].as_u64() == Some(ty))
}

fn log(r: &Router) -> String {
    let Router::Gobgp(g) = r else {
        panic!("not gobgpd")
    };
    std::fs::read_to_string(g.log_path()).unwrap_or_default()
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_ibgp_v4_and_v6_attributes_then_withdraw() {
    const P4: &str = "198.51.100.1/32";
    const P6: &str = "2001:db8:100::1/128";
    let lab = lab();
    let r = router(
        &lab,
        vec![
            passive(ROUTER_AS),
            GobgpNeighbor::new(LB_V6.parse().unwrap(), ROUTER_AS).passive(true),
        ],
    );
    run_in_lb(&lab, || async move {
        let (sp, mut ev) = Speaker::start(SpeakerConfig {
            communities: vec![Community::new(65000, 1)],
            ..speaker_cfg(ROUTER_AS)
        })
        .unwrap();
        sp.add_peer(peer("r1v4", R_V4)).unwrap();
        sp.add_peer(peer("r1v6", R_V6)).unwrap();
        let attrs = RouteAttrs {
            local_pref: Some(150),
            med: Some(7),
            communities: vec![Community::new(65000, 100)],
            large_communities: vec![LargeCommunity {
                global: 65000,
                local1: 1,
                local2: 2,
            }],
        };
        sp.announce_many([P4, P6].map(|p| (p.parse().unwrap(), attrs.clone())));
        expect_up(&mut ev, 15).await;
        expect_up(&mut ev, 15).await;
        assert!(
            until(&r, Duration::from_secs(5), |r| r.has_path(P4)
                && paths(r, P6).len() == 2)
            .await,
            "routes not at the router"
        );
        let r2 = r.clone();
        let (p4, p6) = blocking(move || (paths(&r2, P4), paths(&r2, P6))).await;
        let p = &p4[0];
        assert_eq!(attr(p, 5).unwrap()["value"], 150, "LOCAL_PREF: {p}");
        assert_eq!(attr(p, 4).unwrap()["metric"], 7, "MED: {p}");
        assert_eq!(attr(p, 3).unwrap()["nexthop"], LB_V4, "NEXT_HOP: {p}");
        let comms: Vec<u64> = attr(p, 8).unwrap()["communities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        assert_eq!(
            comms,
            vec![
                u64::from(Community::new(65000, 1).0),
                u64::from(Community::new(65000, 100).0)
            ]
        );
        let large = attr(p, 32).unwrap().to_string();
        assert!(
            large.contains("65000") && large.contains('1') && large.contains('2'),
            "{large}"
        );
        // IPv6: one path over each session, both with our IPv6 address as next hop (over
        // the IPv4 session: the global IPv6 address of the interface carrying it).
        let hops: Vec<String> = p6
            .iter()
            .map(|p| {
                attr(p, 14)
                    .map(|a| a["nexthop"].to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert!(hops.iter().all(|h| h.contains(LB_V6)), "{hops:?} / {p6:?}");
        assert_eq!(attr(&p6[0], 5).unwrap()["value"], 150);

        sp.withdraw_many([P4, P6].map(|p| p.parse().unwrap()));
        assert!(
            until(&r, Duration::from_secs(3), |r| !r.has_path(P4)
                && !r.has_path(P6))
            .await,
            "withdraw not seen at the router"
        );
        let st = sp.peers().await;
        assert!(
            st.iter()
                .all(|s| s.state == "established" && s.malformed_in == 0),
            "{st:?}"
        );
        sp.shutdown("ipvs-sync shutting down").await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_ebgp_med_prepend_and_no_local_pref() {
    const P: &str = "198.51.100.2/32";
    let lab = lab();
    let r = router(&lab, vec![passive(65010)]);
    run_in_lb(&lab, || async move {
        let lp150 = RouteAttrs {
            local_pref: Some(150),
            ..RouteAttrs::default()
        };
        let (sp, _ev) = speaker_up(speaker_cfg(65010), peer("r1", R_V4), &[(P, lp150)]).await;
        assert!(until(&r, Duration::from_secs(5), |r| r.has_path(P)).await);
        let r2 = r.clone();
        let p = blocking(move || paths(&r2, P).remove(0)).await;
        // MED = 1000 − 150; AS_PATH = [65010]; LOCAL_PREF never sent to eBGP.
        assert_eq!(attr(&p, 4).unwrap()["metric"], 850, "{p}");
        assert!(attr(&p, 5).is_none(), "LOCAL_PREF on eBGP: {p}");
        assert!(attr(&p, 2).unwrap().to_string().contains("65010"), "{p}");
        sp.shutdown("ipvs-sync shutting down").await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_tcp_md5_session() {
    const P: &str = "198.51.100.3/32";
    let lab = lab();
    let r = router(&lab, vec![passive(ROUTER_AS).password("s3cret-md5")]);
    run_in_lb(&lab, || async move {
        // Wrong key first: the router's kernel drops our SYNs, no session.
        let (sp, mut ev) = Speaker::start(speaker_cfg(ROUTER_AS)).unwrap();
        let mut p = peer("r1", R_V4);
        p.password = Some(b"wrong".to_vec());
        sp.add_peer(p.clone()).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(4), ev.recv())
                .await
                .is_err(),
            "session came up with the wrong key"
        );
        // The right key: changed config restarts only this peer.
        p.password = Some(b"s3cret-md5".to_vec());
        sp.add_peer(p).unwrap();
        sp.announce(P.parse().unwrap(), RouteAttrs::default());
        expect_up(&mut ev, 20).await;
        assert!(until(&r, Duration::from_secs(5), |r| r.has_path(P)).await);
        sp.shutdown("ipvs-sync shutting down").await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_passive_speaker_accepts_the_router() {
    const P: &str = "198.51.100.4/32";
    let lab = lab();
    let r = router(
        &lab,
        vec![GobgpNeighbor::new(LB_V4.parse().unwrap(), ROUTER_AS).connect_retry(1)],
    );
    run_in_lb(&lab, || async move {
        let p = PeerConfig {
            passive: true,
            ..peer("r1", R_V4)
        };
        // gobgpd's first connect can take a few seconds.
        let (sp, _ev) = speaker_up(speaker_cfg(ROUTER_AS), p, &[(P, RouteAttrs::default())]).await;
        assert!(until(&r, Duration::from_secs(5), |r| r.has_path(P)).await);
        sp.shutdown("ipvs-sync shutting down").await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_cease_on_shutdown_drops_routes_at_once() {
    const P: &str = "198.51.100.5/32";
    let lab = lab();
    let r = router(&lab, vec![passive(ROUTER_AS)]);
    run_in_lb(&lab, || async move {
        let routes = [(P, RouteAttrs::default())];
        let (sp, _ev) = speaker_up(speaker_cfg(ROUTER_AS), peer("r1", R_V4), &routes).await;
        assert!(until(&r, Duration::from_secs(5), |r| r.has_path(P)).await);
        let t = Instant::now();
        sp.shutdown("ipvs-sync shutting down").await;
        assert!(
            until(&r, Duration::from_secs(2), |r| !r.has_path(P)).await,
            "route still at the router after Cease"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let log = log(&r);
        assert!(
            log.contains("ipvs-sync shutting down"),
            "gobgpd log lacks the Cease text: {log}"
        );
    });
}

fn spawn_speaker(lab: &Lab, hold: u16, prefix: &str) -> Child {
    lab.lb
        .command(example_speaker().to_str().unwrap())
        .args(["--local-as", "65000", "--router-id", LB_V4, "--peer", R_V4])
        .args(["--remote-as", "65000", "--hold", &hold.to_string(), prefix])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// gobgpd keeps a dropped peer Idle for 5 s and refuses it meanwhile.
const GOBGP_IDLE_HOLD: Duration = Duration::from_secs(5);

fn kill(child: &Child, sig: &str) {
    // `ip netns exec` execs the program, so the child's pid is the speaker's.
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_process_death_sigkill_sigstop_sigterm() {
    const P: &str = "198.51.100.6/32";
    const P7: &str = "198.51.100.7/32";
    let lab = lab();
    let r = router(&lab, vec![passive(ROUTER_AS).hold_time(3)]);
    let held = |t: Duration| r.wait(t, |r| r.has_path(P));
    let gone = |t: Duration| r.wait(t, |r| !r.has_path(P));

    // SIGKILL: the kernel closes the socket, so the router drops the routes within the hold
    // time (in fact at once, on the FIN).
    let mut child = spawn_speaker(&lab, 3, P);
    assert!(held(Duration::from_secs(15)));
    let t = Instant::now();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(gone(Duration::from_secs(4)));
    assert!(t.elapsed() <= Duration::from_secs(3), "{:?}", t.elapsed());

    // A hung process (SIGSTOP: socket open, no KEEPALIVEs): only the hold timer removes it.
    std::thread::sleep(GOBGP_IDLE_HOLD);
    let mut child = spawn_speaker(&lab, 3, P);
    assert!(held(Duration::from_secs(20)));
    kill(&child, "-STOP");
    let t = Instant::now();
    assert!(
        !gone(Duration::from_millis(1500)),
        "route vanished before the hold timer could have expired"
    );
    assert!(gone(Duration::from_secs(5)));
    let gone_after = t.elapsed();
    assert!(
        gone_after >= Duration::from_secs(2) && gone_after <= Duration::from_millis(4500),
        "{gone_after:?}"
    );
    kill(&child, "-CONT");
    child.kill().unwrap();
    let _ = child.wait();

    // SIGTERM: Cease / Administrative Shutdown, routes gone at once.
    std::thread::sleep(GOBGP_IDLE_HOLD);
    let mut child = spawn_speaker(&lab, 3, P7);
    assert!(r.wait(Duration::from_secs(20), |r| r.has_path(P7)));
    let t = Instant::now();
    kill(&child, "-TERM");
    assert!(r.wait(Duration::from_secs(2), |r| !r.has_path(P7)));
    assert!(t.elapsed() < Duration::from_secs(2));
    let status = child.wait().unwrap();
    assert!(status.success(), "speaker exit: {status}");
    let log = log(&r);
    assert!(
        log.contains("ipvs-sync shutting down"),
        "gobgpd log lacks the Cease text: {log}"
    );
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_router_restart_gets_routes_again() {
    let lab = lab();
    // Restarting needs the Gobgpd itself, mutably.
    let g = Arc::new(Mutex::new(gobgpd(&lab, vec![passive(ROUTER_AS)])));
    let all_100 = |g: &Arc<Mutex<Gobgpd>>| {
        let g = g.clone();
        blocking(move || {
            g.lock().unwrap().wait_for(
                |g| g.rib_prefixes("ipv4").map(|p| p.len()).unwrap_or(0) == 100,
                Duration::from_secs(5),
            )
        })
    };
    run_in_lb(&lab, || async move {
        let (sp, mut ev) = Speaker::start(speaker_cfg(ROUTER_AS)).unwrap();
        sp.add_peer(peer("r1", R_V4)).unwrap();
        sp.announce_many((0..100u32).map(|i| {
            let a = Ipv4Addr::from(0xcb00_7100 + i); // 203.0.113.0/25
            (
                IpNet::new(IpAddr::V4(a), 32).unwrap(),
                RouteAttrs::default(),
            )
        }));
        expect_up(&mut ev, 15).await;
        assert!(all_100(&g).await);
        let g2 = g.clone();
        blocking(move || g2.lock().unwrap().restart().unwrap()).await;
        let e = next_event(&mut ev, 10).await;
        assert!(matches!(e, PeerEvent::Down { .. }), "{e:?}");
        // Re-established by our backoff (1 s base), then the full table again.
        expect_up(&mut ev, 30).await;
        assert!(all_100(&g).await);
        sp.shutdown("ipvs-sync shutting down").await;
    });
}
