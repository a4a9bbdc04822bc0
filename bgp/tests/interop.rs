//! Interop with Debian's gobgpd in network namespaces (lab tests: root, `ip netns`, gobgpd).
//! Run with `netns-lab/test` or
//! `cargo nextest run -p bgp --run-ignored only -E 'test(/^lab_/)'` as root.
//!
//! Layout of every test: namespace `r1` runs gobgpd (AS 65000, 192.0.2.1, 2001:db8::1),
//! namespace `lb` runs the speaker (192.0.2.11, 2001:db8::11), one veth between them. The test
//! thread enters `lb` before building its tokio runtime, so the speaker's sockets live there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use bgp::{
    Community, EbgpPreference, LargeCommunity, PeerConfig, PeerEvent, RouteAttrs, Speaker,
    SpeakerConfig,
};
use ipnet::IpNet;
use labkit::{GobgpConfig, GobgpNeighbor, Gobgpd, Netns};
use serde_json::Value;

const R1_V4: &str = "192.0.2.1";
const R1_V6: &str = "2001:db8::1";
const LB_V4: &str = "192.0.2.11";
const LB_V6: &str = "2001:db8::11";
const ROUTER_AS: u32 = 65000;

struct Lab {
    r1: Netns,
    lb: Netns,
}

fn lab() -> Lab {
    labkit::require_root();
    let r1 = Netns::new("r1").unwrap();
    let lb = Netns::new("lb").unwrap();
    labkit::veth(
        &r1,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &lb,
        &["192.0.2.11/24", "2001:db8::11/64"],
    )
    .unwrap();
    Lab { r1, lb }
}

fn router(lab: &Lab, neighbors: Vec<GobgpNeighbor>) -> Gobgpd {
    let mut cfg = GobgpConfig::new(ROUTER_AS, R1_V4.parse().unwrap());
    for n in neighbors {
        cfg = cfg.neighbor(n);
    }
    Gobgpd::start(&lab.r1, &cfg.to_toml()).unwrap()
}

fn speaker_cfg(local_as: u32) -> SpeakerConfig {
    SpeakerConfig {
        local_as,
        router_id: LB_V4.parse().unwrap(),
        hold_time: 90,
        connect_retry: Duration::from_secs(1),
        graceful_restart: None,
        ebgp_preference: EbgpPreference::Med { base: 1000 },
        communities: vec![Community::new(65000, 1)],
        large_communities: vec![],
        next_hop_v4: None,
        next_hop_v6: None,
        listen: None,
    }
}

fn peer(name: &str, addr: &str, remote_as: u32) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        address: addr.parse().unwrap(),
        remote_as,
        port: 179,
        passive: false,
        password: None,
        local_address: None,
        ttl_security: false,
        hold_time: None,
        next_hop_v4: None,
        next_hop_v6: None,
    }
}

/// Enters `lb` and runs `f` on a fresh runtime there.
fn in_lb<F: std::future::Future<Output = ()>>(lab: &Lab, f: impl FnOnce() -> F) {
    lab.lb.enter().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(f());
}

/// The paths gobgpd holds for `prefix` (empty when none).
fn paths(g: &Gobgpd, family: &str, prefix: &str) -> Vec<Value> {
    g.rib(family)
        .ok()
        .and_then(|r| r.get(prefix).and_then(|v| v.as_array().cloned()))
        .unwrap_or_default()
}

fn attr(path: &Value, ty: u64) -> Option<&Value> {
    path["attrs"]
        .as_array()?
        .iter()
        .find(|a| a["type"].as_u64() == Some(ty))
}

fn wait_route(g: &Gobgpd, family: &str, prefix: &str, present: bool, t: Duration) -> bool {
    g.wait_for(|g| paths(g, family, prefix).is_empty() != present, t)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_ibgp_v4_and_v6_attributes_then_withdraw() {
    let lab = lab();
    let g = router(
        &lab,
        vec![
            GobgpNeighbor::new(LB_V4.parse().unwrap(), ROUTER_AS).passive(true),
            GobgpNeighbor::new(LB_V6.parse().unwrap(), ROUTER_AS).passive(true),
        ],
    );
    let g = std::sync::Arc::new(g);
    in_lb(&lab, || async move {
        let (sp, mut ev) = Speaker::start(speaker_cfg(ROUTER_AS)).unwrap();
        sp.add_peer(peer("r1v4", R1_V4, ROUTER_AS)).unwrap();
        sp.add_peer(peer("r1v6", R1_V6, ROUTER_AS)).unwrap();
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
        sp.announce("198.51.100.1/32".parse().unwrap(), attrs.clone());
        sp.announce("2001:db8:100::1/128".parse().unwrap(), attrs);
        for _ in 0..2 {
            let e = tokio::time::timeout(Duration::from_secs(15), ev.recv())
                .await
                .unwrap();
            assert!(matches!(e, Some(PeerEvent::Up { .. })), "{e:?}");
        }
        let g2 = g.clone();
        let ok = blocking(move || {
            wait_route(&g2, "ipv4", "198.51.100.1/32", true, Duration::from_secs(5))
                && wait_route(
                    &g2,
                    "ipv6",
                    "2001:db8:100::1/128",
                    true,
                    Duration::from_secs(5),
                )
        })
        .await;
        assert!(ok, "routes not at the router");
        let g2 = g.clone();
        let (p4, p6) = blocking(move || {
            (
                paths(&g2, "ipv4", "198.51.100.1/32"),
                paths(&g2, "ipv6", "2001:db8:100::1/128"),
            )
        })
        .await;
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
        // IPv6: one path over the IPv6 session (next hop = our IPv6 address), one over the
        // IPv4 session (next hop = IPv4-mapped).
        let hops: Vec<String> = p6
            .iter()
            .map(|p| {
                attr(p, 14)
                    .map(|a| a["nexthop"].to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert!(hops.iter().any(|h| h.contains(LB_V6)), "{hops:?} / {p6:?}");
        // gobgpd prints the IPv4-mapped next hop ::ffff:192.0.2.11 in its IPv4 form.
        assert!(
            hops.iter()
                .any(|h| h == "\"192.0.2.11\"" || h.contains("::ffff:192.0.2.11")),
            "{hops:?}"
        );
        assert_eq!(attr(&p6[0], 5).unwrap()["value"], 150);

        sp.withdraw("198.51.100.1/32".parse().unwrap());
        sp.withdraw("2001:db8:100::1/128".parse().unwrap());
        let g2 = g.clone();
        let gone = blocking(move || {
            wait_route(
                &g2,
                "ipv4",
                "198.51.100.1/32",
                false,
                Duration::from_secs(3),
            ) && wait_route(
                &g2,
                "ipv6",
                "2001:db8:100::1/128",
                false,
                Duration::from_secs(3),
            )
        })
        .await;
        assert!(gone, "withdraw not seen at the router");
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
    let lab = lab();
    let g = std::sync::Arc::new(router(
        &lab,
        vec![GobgpNeighbor::new(LB_V4.parse().unwrap(), 65010).passive(true)],
    ));
    in_lb(&lab, || async move {
        let (sp, mut ev) = Speaker::start(speaker_cfg(65010)).unwrap();
        sp.add_peer(peer("r1", R1_V4, ROUTER_AS)).unwrap();
        sp.announce(
            "198.51.100.2/32".parse().unwrap(),
            RouteAttrs {
                local_pref: Some(150),
                ..RouteAttrs::default()
            },
        );
        let e = tokio::time::timeout(Duration::from_secs(15), ev.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(PeerEvent::Up { .. })), "{e:?}");
        let g2 = g.clone();
        let p = blocking(move || {
            assert!(wait_route(
                &g2,
                "ipv4",
                "198.51.100.2/32",
                true,
                Duration::from_secs(5)
            ));
            paths(&g2, "ipv4", "198.51.100.2/32").remove(0)
        })
        .await;
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
    let lab = lab();
    let g = std::sync::Arc::new(router(
        &lab,
        vec![GobgpNeighbor::new(LB_V4.parse().unwrap(), ROUTER_AS)
            .passive(true)
            .password("s3cret-md5")],
    ));
    in_lb(&lab, || async move {
        // Wrong key first: the router's kernel drops our SYNs, no session.
        let (sp, mut ev) = Speaker::start(speaker_cfg(ROUTER_AS)).unwrap();
        let mut p = peer("r1", R1_V4, ROUTER_AS);
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
        sp.announce("198.51.100.3/32".parse().unwrap(), RouteAttrs::default());
        let e = tokio::time::timeout(Duration::from_secs(20), ev.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(PeerEvent::Up { .. })), "{e:?}");
        let g2 = g.clone();
        assert!(
            blocking(move || wait_route(
                &g2,
                "ipv4",
                "198.51.100.3/32",
                true,
                Duration::from_secs(5)
            ))
            .await
        );
        sp.shutdown("ipvs-sync shutting down").await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_passive_speaker_accepts_the_router() {
    let lab = lab();
    let g = std::sync::Arc::new(router(
        &lab,
        vec![GobgpNeighbor::new(LB_V4.parse().unwrap(), ROUTER_AS).connect_retry(1)],
    ));
    in_lb(&lab, || async move {
        let (sp, mut ev) = Speaker::start(speaker_cfg(ROUTER_AS)).unwrap();
        let mut p = peer("r1", R1_V4, ROUTER_AS);
        p.passive = true;
        sp.add_peer(p).unwrap();
        sp.announce("198.51.100.4/32".parse().unwrap(), RouteAttrs::default());
        // gobgpd's first connect can take a few seconds.
        let e = tokio::time::timeout(Duration::from_secs(20), ev.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(PeerEvent::Up { .. })), "{e:?}");
        let g2 = g.clone();
        assert!(
            blocking(move || wait_route(
                &g2,
                "ipv4",
                "198.51.100.4/32",
                true,
                Duration::from_secs(5)
            ))
            .await
        );
        sp.shutdown("ipvs-sync shutting down").await;
    });
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_cease_on_shutdown_drops_routes_at_once() {
    let lab = lab();
    let g = std::sync::Arc::new(router(
        &lab,
        vec![GobgpNeighbor::new(LB_V4.parse().unwrap(), ROUTER_AS).passive(true)],
    ));
    in_lb(&lab, || async move {
        let (sp, mut ev) = Speaker::start(speaker_cfg(ROUTER_AS)).unwrap();
        sp.add_peer(peer("r1", R1_V4, ROUTER_AS)).unwrap();
        sp.announce("198.51.100.5/32".parse().unwrap(), RouteAttrs::default());
        let e = tokio::time::timeout(Duration::from_secs(15), ev.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(PeerEvent::Up { .. })), "{e:?}");
        let g2 = g.clone();
        assert!(
            blocking(move || wait_route(
                &g2,
                "ipv4",
                "198.51.100.5/32",
                true,
                Duration::from_secs(5)
            ))
            .await
        );
        let t = Instant::now();
        sp.shutdown("ipvs-sync shutting down").await;
        let g2 = g.clone();
        let gone = blocking(move || {
            wait_route(
                &g2,
                "ipv4",
                "198.51.100.5/32",
                false,
                Duration::from_secs(2),
            )
        })
        .await;
        assert!(gone, "route still at the router after Cease");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let log = std::fs::read_to_string(g.log_path()).unwrap_or_default();
        assert!(
            log.contains("ipvs-sync shutting down"),
            "gobgpd log lacks the Cease text: {log}"
        );
    });
}

/// Path of the example speaker binary next to this test binary.
fn example_speaker() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("examples").join("speaker");
    assert!(
        p.exists(),
        "build it first: cargo build -p bgp --examples ({})",
        p.display()
    );
    p
}

fn spawn_speaker(lab: &Lab, hold: u16, prefix: &str) -> Child {
    lab.lb
        .command(example_speaker().to_str().unwrap())
        .args([
            "--local-as",
            "65000",
            "--router-id",
            LB_V4,
            "--peer",
            R1_V4,
            "--remote-as",
            "65000",
            "--hold",
            &hold.to_string(),
            prefix,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Whether gobgpd takes the speaker again: it keeps a dropped peer Idle for 5 s and
/// refuses it meanwhile, then waits for it in Active. Looked at for at most 10 s.
fn idle_hold_over(g: &Gobgpd) -> bool {
    g.wait_for(
        |g| g.neighbor_state(LB_V4).is_ok_and(|s| s == "active"),
        Duration::from_secs(10),
    )
}

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
    let lab = lab();
    let g = router(
        &lab,
        vec![GobgpNeighbor::new(LB_V4.parse().unwrap(), ROUTER_AS)
            .passive(true)
            .hold_time(3)],
    );
    let r = "198.51.100.6/32";

    // SIGKILL: the kernel closes the socket, so the router drops the routes within the hold
    // time (in fact at once, on the FIN).
    let mut child = spawn_speaker(&lab, 3, r);
    assert!(wait_route(&g, "ipv4", r, true, Duration::from_secs(15)));
    let t = Instant::now();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(wait_route(&g, "ipv4", r, false, Duration::from_secs(4)));
    assert!(t.elapsed() <= Duration::from_secs(3), "{:?}", t.elapsed());

    // A hung process (SIGSTOP: socket open, no KEEPALIVEs): only the hold timer removes it.
    assert!(idle_hold_over(&g), "gobgpd kept {LB_V4} Idle");
    let mut child = spawn_speaker(&lab, 3, r);
    assert!(wait_route(&g, "ipv4", r, true, Duration::from_secs(20)));
    kill(&child, "-STOP");
    let t = Instant::now();
    assert!(
        !wait_route(&g, "ipv4", r, false, Duration::from_millis(1500)),
        "route vanished before the hold timer could have expired"
    );
    assert!(wait_route(&g, "ipv4", r, false, Duration::from_secs(5)));
    let gone_after = t.elapsed();
    assert!(
        gone_after >= Duration::from_secs(2) && gone_after <= Duration::from_millis(4500),
        "{gone_after:?}"
    );
    kill(&child, "-CONT");
    child.kill().unwrap();
    let _ = child.wait();

    // SIGTERM: Cease / Administrative Shutdown, routes gone at once.
    assert!(idle_hold_over(&g), "gobgpd kept {LB_V4} Idle");
    let mut child = spawn_speaker(&lab, 3, "198.51.100.7/32");
    assert!(wait_route(
        &g,
        "ipv4",
        "198.51.100.7/32",
        true,
        Duration::from_secs(20)
    ));
    let t = Instant::now();
    kill(&child, "-TERM");
    assert!(wait_route(
        &g,
        "ipv4",
        "198.51.100.7/32",
        false,
        Duration::from_secs(2)
    ));
    assert!(t.elapsed() < Duration::from_secs(2));
    let status = child.wait().unwrap();
    assert!(status.success(), "speaker exit: {status}");
    let log = std::fs::read_to_string(g.log_path()).unwrap_or_default();
    assert!(
        log.contains("ipvs-sync shutting down"),
        "gobgpd log lacks the Cease text: {log}"
    );
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_router_restart_gets_routes_again() {
    let lab = lab();
    let g = std::sync::Arc::new(std::sync::Mutex::new(router(
        &lab,
        vec![GobgpNeighbor::new(LB_V4.parse().unwrap(), ROUTER_AS).passive(true)],
    )));
    in_lb(&lab, || async move {
        let (sp, mut ev) = Speaker::start(speaker_cfg(ROUTER_AS)).unwrap();
        sp.add_peer(peer("r1", R1_V4, ROUTER_AS)).unwrap();
        for i in 0..100u32 {
            let a = Ipv4Addr::from(0xcb00_7100 + i); // 203.0.113.0/25
            sp.announce(
                IpNet::new(IpAddr::V4(a), 32).unwrap(),
                RouteAttrs::default(),
            );
        }
        let e = tokio::time::timeout(Duration::from_secs(15), ev.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(PeerEvent::Up { .. })), "{e:?}");
        let g2 = g.clone();
        blocking(move || {
            let g = g2.lock().unwrap();
            assert!(g.wait_for(
                |g| g.rib_prefixes("ipv4").map(|p| p.len()).unwrap_or(0) == 100,
                Duration::from_secs(5)
            ));
        })
        .await;
        let g2 = g.clone();
        blocking(move || g2.lock().unwrap().restart().unwrap()).await;
        let e = tokio::time::timeout(Duration::from_secs(10), ev.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(PeerEvent::Down { .. })), "{e:?}");
        // Re-established by our backoff (1 s base), then the full table again.
        let e = tokio::time::timeout(Duration::from_secs(30), ev.recv())
            .await
            .unwrap();
        assert!(matches!(e, Some(PeerEvent::Up { .. })), "{e:?}");
        let g2 = g.clone();
        blocking(move || {
            let g = g2.lock().unwrap();
            assert!(g.wait_for(
                |g| g.rib_prefixes("ipv4").map(|p| p.len()).unwrap_or(0) == 100,
                Duration::from_secs(5)
            ));
        })
        .await;
        sp.shutdown("ipvs-sync shutting down").await;
    });
}
