//! The real daemons with a real kernel's IPVS and dummy links: the arbiter's tree reaching
//! every balancer's kernel, quorum announcing VIPs on a dummy `vip0`, the router's view.
//! These run inside the VM, started by `netns-lab/vm-e2e` (broker and router on the host
//! side, see `guest.rs`); `VM_E2E_ENV` says where the host's side is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster;
mod drain;
mod fallback;
mod fallback_gap;
mod fleet;
mod guest;

use std::time::{Duration, Instant};

use guest::{
    assert_dump_agrees, has_vip, ipvsadm_restore, is_dummy, ms, only_vips, rules, Guest, POLL,
    UNMAPPED, VIP4, VIP6, VIP_FWMARK,
};

/// How long the daemons may take to start, connect and mirror, and to follow one change:
/// under TCG on a busy host every step takes seconds (a process start alone ~1 s).
const START: u64 = 240;
const CHANGE: u64 = 90;

/// Until `cond` holds, looking every [`POLL`]; false after `secs` seconds.
fn within(secs: u64, cond: impl FnMut() -> bool) -> bool {
    labkit::wait_every(Duration::from_secs(secs), POLL, cond)
}

#[test]
#[ignore = "vm: needs the IPVS kernel, a broker and a router on the host; run netns-lab/vm-e2e"]
fn vm_e2e_trees_mirror_to_every_balancer_and_follow_changes() {
    let g = Guest::start("tree");
    assert!(
        within(START, || g.all_mirror()),
        "initial trees differ from the arbiter's:\n{}",
        g.mirror_diff()
    );
    g.ok(&format!(
        "initial tree on lb1 and lb2 equals the arbiter's for {VIP4} and {VIP6} ({} ms after the clients' start)",
        ms(g.started)
    ));
    for (name, lb) in g.balancers() {
        let r = rules(lb);
        assert!(
            only_vips(&r, &[UNMAPPED], false).is_empty(),
            "{name}: {r:?}"
        );
        g.ok(&format!(
            "{name}: no service of the unmapped VIP {UNMAPPED}"
        ));
        assert!(
            !r.iter().any(|l| l.starts_with("-A -f 8 ")),
            "{name}: {r:?}"
        );
        g.ok(&format!(
            "{name}: the arbiter's fwmark 8 (no VIP names it) not mirrored"
        ));
    }
    let mark7 = |r: &[String]| -> Vec<String> {
        r.iter()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1) == Some(&"-f") && f.get(2) == Some(&"7")
            })
            .cloned()
            .collect()
    };
    let want7 = mark7(&rules(&g.arb));
    assert_eq!(want7.len(), 2, "{want7:?}");
    assert!(
        within(CHANGE, || g.lbs.iter().all(|lb| mark7(&rules(lb)) == want7)),
        "fwmark 7 not mirrored: arbiter {want7:?}, lb1 {:?}, lb2 {:?}",
        mark7(&rules(&g.lbs[0])),
        mark7(&rules(&g.lbs[1]))
    );
    g.ok(&format!(
        "lb1, lb2: fwmark 7 mirrored with {VIP_FWMARK}, the VIP its keepalived quorum handler names"
    ));
    // The operator's rules are compared at the end too, after every reconcile.
    for ((name, lb), before) in g.balancers().zip(&g.operator_before) {
        assert_eq!(&guest::operator_rules(lb), before, "{name}");
        g.ok(&format!(
            "{name}: operator's services outside the mapping survive the first reconcile"
        ));
    }
    assert!(
        !rules(&g.lbs[0])
            .iter()
            .any(|r| r.starts_with(&format!("-A -t {VIP4}:8443 "))),
        "lb1 keeps the stale service"
    );
    g.ok(&format!(
        "lb1: stale service {VIP4}:8443 of a mapped VIP removed"
    ));
    assert_dump_agrees(&g.arb, "arbiter");
    for (name, lb) in g.balancers() {
        assert_dump_agrees(lb, name);
    }
    g.ok("arbiter, lb1, lb2: 'ipvs-sync ipvs dump' equals 'ipvsadm -Sn'");

    // Tree changes on the arbiter, each made with one `ipvsadm -R`; each must reach both
    // balancers' kernels and leave them equal to the arbiter's.
    let change = |what: &str, rules_in: &str, landed: &dyn Fn(&[String]) -> bool| {
        let t = Instant::now();
        ipvsadm_restore(&g.arb, rules_in);
        let arrived = within(CHANGE, || g.lbs.iter().all(|lb| landed(&rules(lb))));
        assert!(
            arrived && within(CHANGE, || g.all_mirror()),
            "{what}:\n{}",
            g.mirror_diff()
        );
        g.ok(&format!("{what} ({} ms)", ms(t)));
    };
    change(
        "weight edit + new real server reach lb1 and lb2 kernels",
        "-e -t 203.0.113.10:80 -r 203.0.113.101:80 -g -w 55\n\
         -a -t [2001:db8:f00::10]:443 -r [2001:db8:5::9]:443 -g -w 3\n",
        &|r| {
            r.iter()
                .any(|l| l == "-a -t 203.0.113.10:80 -r 203.0.113.101:80 -g -w 55")
                && r.iter()
                    .any(|l| l == "-a -t [2001:db8:f00::10]:443 -r [2001:db8:5::9]:443 -g -w 3")
        },
    );
    change(
        "a weight edit of fwmark 7's real server reaches lb1 and lb2 kernels",
        "-e -f 7 -r 203.0.113.105:0 -g -w 4\n",
        &|r| r.iter().any(|l| l == "-a -f 7 -r 203.0.113.105:0 -g -w 4"),
    );
    change(
        &format!("service udp {VIP4}:53 removed on the arbiter is removed on lb1 and lb2"),
        "-D -u 203.0.113.10:53\n",
        &|r| !r.iter().any(|l| l.starts_with("-A -u 203.0.113.10:53 ")),
    );
    change(
        &format!("service tcp [{VIP6}]:8080 added on the arbiter reaches lb1 and lb2"),
        "-A -t [2001:db8:f00::10]:8080 -s mh\n\
         -a -t [2001:db8:f00::10]:8080 -r [2001:db8:5::4]:8080 -m -w 7\n",
        &|r| {
            r.iter()
                .any(|l| l == "-a -t [2001:db8:f00::10]:8080 -r [2001:db8:5::4]:8080 -m -w 7")
        },
    );
    g.finish();
}

#[test]
#[ignore = "vm: needs the IPVS kernel, a broker and a router on the host; run netns-lab/vm-e2e"]
fn vm_e2e_quorum_announces_on_a_dummy_and_withdraws_before_removing() {
    let g = Guest::start("quorum");
    let peer_up = |i: usize| {
        let page = labkit::metrics::http_get(&g.lbs[i], 9101, "/metrics");
        labkit::metrics::metric_with(&page, "ipvs_sync_bgp_peer_up", "peer", "r1") == 1.0
    };
    assert!(
        within(START, || peer_up(0) && peer_up(1)),
        "BGP sessions not Established:\n{}",
        g.client_log(0)
    );
    g.ok("BGP sessions lb1, lb2 → router (gobgpd on the host) Established");
    assert!(within(START, || g.all_mirror()), "{}", g.mirror_diff());

    // Quorum: every virtual server of a VIP up → the VIP on vip0 of both balancers.
    let t = Instant::now();
    for arg in [
        format!("{VIP4},b-150,80"),
        format!("{VIP4},b-150,53"),
        format!("{VIP4},b-150,443"),
        format!("{VIP6},b-150,443"),
        format!("{VIP6},b-150,53"),
    ] {
        let out = g.quorum("up", &arg);
        assert!(out.status.success(), "quorum up {arg}: {out:?}");
    }
    g.ok(&format!(
        "quorum up for every port of {VIP4} and {VIP6} exits 0 (5 calls, {} ms)",
        ms(t)
    ));
    let (v4, v6) = (format!("{VIP4}/32"), format!("{VIP6}/128"));
    let on_all = |cidr: &str| g.lbs.iter().all(|lb| has_vip(lb, cidr));
    assert!(
        within(CHANGE, || on_all(&v4) && on_all(&v6)),
        "VIPs not on vip0: {:?}",
        g.lbs
            .iter()
            .map(|lb| lb.ip(&["-br", "addr", "show", "dev", "vip0"]))
            .collect::<Vec<_>>()
    );
    g.ok(&format!(
        "quorum up: {v4} and {v6} on vip0 of lb1 and lb2 ({} ms after the last call)",
        ms(t)
    ));
    for (name, lb) in g.balancers() {
        assert!(is_dummy(lb), "{name}: vip0 is not a dummy");
        g.ok(&format!(
            "{name}: vip0 is a dummy interface the client created"
        ));
    }
    assert!(g.all_mirror(), "{}", g.mirror_diff());
    g.ok("after the announce: trees still equal the arbiter's");
    let from_both_with_lp = |prefix: &str| {
        let paths = g.router_paths(prefix);
        paths.len() == 2 && paths.iter().all(|p| p.2 == Some(150))
    };
    assert!(
        within(CHANGE, || from_both_with_lp(&v4) && from_both_with_lp(&v6)),
        "router: {:?} {:?}",
        g.router_paths(&v4),
        g.router_paths(&v6)
    );
    g.ok(&format!(
        "router: {v4} and {v6} from lb1 and lb2 with LOCAL_PREF 150"
    ));

    // Quorum down on one port of the IPv4 VIP → withdrawn and removed; the IPv6 VIP stays.
    let t = Instant::now();
    let out = g.quorum("down", &format!("{VIP4},b-150,80"));
    assert!(out.status.success(), "{out:?}");
    g.ok(&format!("quorum down {VIP4},b-150,80 exits 0"));
    assert!(
        within(CHANGE, || g.lbs.iter().all(|lb| !has_vip(lb, &v4))),
        "{v4} stays on vip0"
    );
    g.ok(&format!(
        "quorum down: {v4} gone from vip0 of lb1 and lb2 ({} ms)",
        ms(t)
    ));
    assert!(
        within(CHANGE, || g.router_paths(&v4).is_empty()),
        "{:?}",
        g.router_paths(&v4)
    );
    g.ok(&format!("router: {v4} withdrawn by lb1 and lb2"));
    for i in 0..2 {
        // The client's own record of the order; the lab's withdraw_grace tests watch the
        // router and the interface on one clock instead.
        let log = g.client_log(i);
        let lines: Vec<&str> = log.lines().collect();
        let last = |pred: &dyn Fn(&str) -> bool| lines.iter().rposition(|l| pred(l));
        let vip = format!("vip={VIP4}");
        let withdrew = last(&|l| l.ends_with(&format!("withdrawing {vip}")));
        let removed = last(&|l| l.contains("VIP address removed") && l.ends_with(&vip));
        assert!(
            matches!((withdrew, removed), (Some(w), Some(r)) if w < r),
            "lb{}: no withdraw logged before the address removal",
            i + 1
        );
        g.ok(&format!(
            "lb{}: BGP withdraw logged before the address removal",
            i + 1
        ));
    }
    assert!(g.lbs.iter().all(|lb| has_vip(lb, &v6)));
    g.ok(&format!(
        "quorum down of {VIP4} leaves {v6} on both balancers"
    ));
    assert!(from_both_with_lp(&v6), "{:?}", g.router_paths(&v6));
    g.ok(&format!("quorum down of {VIP4} leaves {v6} at the router"));
    g.finish();
}

#[test]
#[ignore = "vm: needs the IPVS kernel, a broker and a router on the host; run netns-lab/vm-e2e"]
fn vm_e2e_drift_on_a_balancer_is_repaired_by_the_verify_and_a_failed_apply_at_once() {
    // The balancer applies changes without a dump; a full dump (the verify) comes every
    // tree_request_interval, and at once after an operation failed.
    const VERIFY: u64 = 60;
    let g = Guest::start_with("drift", &[], |_, _| {
        let mut c = labkit::Ini::new();
        c.set("main", "tree_request_interval", 60);
        c
    });
    assert!(within(START, || g.all_mirror()), "{}", g.mirror_diff());
    g.ok("initial trees on lb1 and lb2 equal the arbiter's");
    let lb1 = &g.lbs[0];
    let edited = "-a -t 203.0.113.10:80 -r 203.0.113.101:80 -g -w 77";

    // An operator's `ipvsadm -e` on lb1: repaired by the next verify, within one interval
    // (plus the dump and apply under TCG).
    let t = Instant::now();
    ipvsadm_restore(lb1, "-e -t 203.0.113.10:80 -r 203.0.113.101:80 -g -w 77\n");
    assert!(rules(lb1).iter().any(|l| l == edited), "{:?}", rules(lb1));
    assert!(
        within(VERIFY + 30, || g.mirrors(lb1)),
        "lb1 kept the operator's weight:\n{}",
        g.mirror_diff()
    );
    g.ok(&format!(
        "lb1: an operator's ipvsadm -e repaired within one verify interval ({} ms, interval {VERIFY} s)",
        ms(t)
    ));

    // Just after that verify: lb1 loses a service by hand, then the arbiter edits a real
    // server of it. The edit, applied without a dump, fails on lb1; the failure makes the
    // next kernel work a full reconcile at once, long before the next periodic verify.
    let t = Instant::now();
    ipvsadm_restore(lb1, "-D -t 203.0.113.10:443\n");
    ipvsadm_restore(
        &g.arb,
        "-e -t 203.0.113.10:443 -r 203.0.113.103:443 -i -w 9\n",
    );
    // (ipvsadm may print the tunnel type after the weight.)
    let repaired = "-a -t 203.0.113.10:443 -r 203.0.113.103:443 -i -w 9";
    assert!(
        within(VERIFY / 2, || rules(lb1)
            .iter()
            .any(|l| l.starts_with(repaired))
            && g.mirrors(lb1)),
        "lb1 not repaired after the failed apply:\n{}",
        g.mirror_diff()
    );
    g.ok(&format!(
        "lb1: a change that failed on a service removed by hand triggered a dump and the repair ({} ms, under half the interval)",
        ms(t)
    ));
    assert!(
        g.client_log(0).contains("IPVS operation failed"),
        "lb1 logged no failed operation"
    );
    g.ok("lb1 logged the failed operation");
    g.finish();
}
