//! End-to-end: the real `ipvs-sync server` and `client`s in the namespace lab, with
//! gobgpd routers and RabbitMQ, driven the way keepalived and an operator drive them.
//! Every test has a lab of its own (`labkit::Lab`); the routers' RIBs are the proof.
//! This suite proves the lab topology the demo uses (three balancers, TCP-MD5 to r1, IPv6
//! transport to r2, multi-port quorum); failure paths (signals, restarts, fail-static,
//! forged and garbage messages) are in the workspace's `tests/e2e.rs`.
//!
//! Needs the binary built (`cargo build`; `netns-lab/test` builds the workspace) and
//! root: run `netns-lab/test`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use labkit::{GobgpApi, Lab, RibPath};

/// Served by all three balancers (TCP 80), local-pref 200.
const ALL3: &str = "198.51.100.3/32";
const ALL3_ARG: &str = "198.51.100.3,b-200,80";

/// A lab with the daemons running and every balancer's two sessions Established.
fn lab_with_daemons(tag: &str) -> Lab {
    labkit::require_root();
    let lab = Lab::up(tag, env!("CARGO_BIN_EXE_lab-gen").as_ref()).unwrap();
    lab.start_daemons().unwrap();
    for lb in labkit::bridge::BALANCERS {
        let v4 = Lab::v4(lb).unwrap().to_string();
        let v6 = Lab::v6(lb).unwrap().to_string();
        for (router, addr) in [("r1", v4), ("r2", v6)] {
            let ok = lab
                .router(router)
                .wait_established(&addr, Duration::from_secs(30));
            assert!(ok, "{lb} never Established at {router}\n{}", logs(&lab, lb));
        }
    }
    // And the arbiter has heard from every balancer, so announces can flow.
    let joined = labkit::wait_until(Duration::from_secs(30), || {
        lab.daemon_status("arbiter")
            .is_ok_and(|s| s["clients"].as_array().is_some_and(|c| c.len() == 3))
    });
    assert!(
        joined,
        "clients never joined the arbiter\n{}",
        logs(&lab, "arbiter")
    );
    lab
}

/// The last lines of a daemon's log, for failure messages.
fn logs(lab: &Lab, node: &str) -> String {
    let text = std::fs::read_to_string(lab.log_path(node)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The paths a router holds for `prefix`.
fn paths(api: &GobgpApi, prefix: &str) -> Vec<RibPath> {
    api.paths_for(prefix).unwrap_or_default()
}

/// Sorted neighbors a router learned `prefix` from.
fn sources(api: &GobgpApi, prefix: &str) -> Vec<String> {
    let mut n: Vec<String> = paths(api, prefix)
        .into_iter()
        .filter_map(|p| p.neighbor)
        .collect();
    n.sort();
    n
}

/// Polls every 20 ms until the router learned `prefix` from exactly `want`; returns how
/// long that took, or `None` after `timeout`.
fn wait_sources(
    api: &GobgpApi,
    prefix: &str,
    want: &[&str],
    timeout: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if sources(api, prefix) == want {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (sources(api, prefix) == want).then(|| start.elapsed())
}

const LB_V4: [&str; 3] = ["192.0.2.31", "192.0.2.32", "192.0.2.33"];
const LB_V6: [&str; 3] = ["2001:db8::31", "2001:db8::32", "2001:db8::33"];

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_e2e_quorum_announces_with_local_pref_and_withdraws_v4_and_v6() {
    let lab = lab_with_daemons("ea");
    let (r1, r2) = (lab.router("r1"), lab.router("r2"));

    // IPv4 VIP of all three balancers: iBGP carries LOCAL_PREF, eBGP the AS path.
    lab.quorum_up(ALL3_ARG).unwrap();
    let took = wait_sources(&r1, ALL3, &LB_V4, Duration::from_secs(10));
    assert!(
        took.is_some(),
        "r1: {:?}\n{}",
        paths(&r1, ALL3),
        logs(&lab, "lb1")
    );
    eprintln!("quorum up -> 3 paths at r1: {took:?}");
    assert!(paths(&r1, ALL3)
        .iter()
        .all(|p| p.local_pref == Some(200) && p.as_path.is_empty()));
    assert!(wait_sources(&r2, ALL3, &LB_V6, Duration::from_secs(10)).is_some());
    assert!(paths(&r2, ALL3)
        .iter()
        .all(|p| p.as_path == [65000] && p.local_pref.is_none()));

    // IPv6 VIP on lb1 and lb3 with two ports: announced only when both have quorum.
    let v6 = "2001:db8:f00::1/128";
    let mon = labkit::RibMonitor::start(&r1, "ipv6", "2001:db8:ffff::fe/128").unwrap();
    lab.quorum_up("2001:db8:f00::1,b-100,80").unwrap();
    assert!(
        mon.wait(v6, false, Duration::from_secs(2)).is_none(),
        "announced with 1 of 2 ports: {:?}",
        paths(&r1, v6)
    );
    lab.quorum_up("2001:db8:f00::1,b-100,443").unwrap();
    let want = ["192.0.2.31", "192.0.2.33"];
    assert!(wait_sources(&r1, v6, &want, Duration::from_secs(10)).is_some());
    let nexthops: Vec<Option<String>> = paths(&r1, v6).into_iter().map(|p| p.nexthop).collect();
    assert_eq!(
        nexthops,
        [
            Some("2001:db8::31".to_owned()),
            Some("2001:db8::33".to_owned())
        ]
    );
    assert!(wait_sources(
        &r2,
        v6,
        &["2001:db8::31", "2001:db8::33"],
        Duration::from_secs(10)
    )
    .is_some());

    // quorum down withdraws at both routers, fast.
    lab.quorum_down(ALL3_ARG).unwrap();
    let took = wait_sources(&r1, ALL3, &[], Duration::from_secs(5));
    assert!(took.is_some(), "{:?}", paths(&r1, ALL3));
    eprintln!("quorum down -> withdrawn at r1: {took:?}");
    assert!(wait_sources(&r2, ALL3, &[], Duration::from_secs(5)).is_some());
    // The other VIP is untouched.
    assert_eq!(sources(&r1, v6), want);
}
