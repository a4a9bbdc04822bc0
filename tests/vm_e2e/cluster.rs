//! The broker cluster under a real kernel. `VM_E2E_CLUSTER=1 netns-lab/vm-e2e` puts three
//! RabbitMQ nodes on the host side (labkit's `vm-cluster`); this test cuts off the node the
//! arbiter uses, works the fleet through the partition, heals it, and then compares each
//! balancer's IPVS table, VIP addresses and router paths with the arbiter's tree and with
//! what quorum said last.
//!
//! The guest cannot reach the host's namespaces: it asks `vm-cluster` through files in the
//! shared directory (`CLUSTER_DIR/req-N`, answered in `done-N`).

use std::time::{Duration, Instant};

use crate::guest::{assert_dump_agrees, env, has_vip, ipvsadm_restore, ms, rules, Guest};
use crate::guest::{VIP4, VIP6};
use crate::{within, CHANGE, START};

/// How long `vm-cluster` may take to carry out a request (a heal waits for the cluster to
/// be whole, restarting the node after 60 s if it stays paused).
const HOST_REQUEST: Duration = Duration::from_secs(300);

/// Asks the host to carry out `req` (`partition K`, `heal K`) and returns its answer.
fn host(req: &str) -> String {
    let dir = env()
        .cluster_dir
        .as_ref()
        .expect("no CLUSTER_DIR: run with VM_E2E_CLUSTER=1 netns-lab/vm-e2e");
    let answer = labkit::host_requests::ask(dir, req, HOST_REQUEST)
        .unwrap_or_else(|e| panic!("the host did not answer: {e}"));
    assert!(answer.starts_with("ok"), "{req}: {answer}");
    answer
}

/// The broker node (`ADDR:PORT`) the arbiter (`None`) or balancer `i` is connected to.
fn node_of(g: &Guest, who: Option<usize>) -> Option<String> {
    let status = g.status_json(who);
    let broker = &status["broker"];
    if broker["connected"].as_bool() != Some(true) {
        return None;
    }
    broker["node"].as_str().map(str::to_owned)
}

/// Every daemon: the arbiter, then each balancer.
const DAEMONS: [(&str, Option<usize>); 3] = [("arbiter", None), ("lb1", Some(0)), ("lb2", Some(1))];

/// `quorum DIR` for every port of `vip` (as keepalived calls it once per virtual server).
fn quorum_all(g: &Guest, dir: &str, vip: &str) {
    let ports: &[&str] = if vip == VIP4 {
        &["80", "53", "443"]
    } else {
        &["443", "53"]
    };
    for port in ports {
        let out = g.quorum(dir, &format!("{vip},b-150,{port}"));
        assert!(out.status.success(), "quorum {dir} {vip} {port}: {out:?}");
    }
}

/// The address on each balancer's `vip0` and a path from each at the router, LOCAL_PREF 150.
fn announced(g: &Guest, cidr: &str) -> bool {
    g.lbs.iter().all(|lb| has_vip(lb, cidr)) && {
        let paths = g.router_paths(cidr);
        paths.len() == 2 && paths.iter().all(|p| p.2 == Some(150))
    }
}

/// No balancer holds the address and the router has no path.
fn withdrawn(g: &Guest, cidr: &str) -> bool {
    g.lbs.iter().all(|lb| !has_vip(lb, cidr)) && g.router_paths(cidr).is_empty()
}

/// A tree change made on the arbiter with one `ipvsadm -R`, waited for on both balancers'
/// kernels (`line` present, or absent when it starts with `!`) and then whole-tree equality.
fn change(g: &Guest, what: &str, edit: &str, line: &str) {
    let t = Instant::now();
    ipvsadm_restore(&g.arb, edit);
    let landed = |r: &[String]| match line.strip_prefix('!') {
        Some(gone) => !r.iter().any(|l| l == gone),
        None => r.iter().any(|l| l == line),
    };
    assert!(
        within(CHANGE, || g.lbs.iter().all(|lb| landed(&rules(lb))))
            && within(CHANGE, || g.all_mirror()),
        "{what}:\n{}",
        g.mirror_diff()
    );
    g.ok(&format!(
        "{what}: in lb1's and lb2's kernels ({} ms)",
        ms(t)
    ));
}

#[test]
#[ignore = "vm: needs the IPVS kernel and a broker cluster on the host; run VM_E2E_CLUSTER=1 netns-lab/vm-e2e"]
fn vm_cluster_partition_moves_the_fleet_and_the_heal_duplicates_nothing() {
    assert_eq!(env().nodes.len(), 3, "the host did not give three nodes");
    let g = Guest::start("cluster");
    assert!(within(START, || g.all_mirror()), "{}", g.mirror_diff());
    g.ok("initial tree on lb1 and lb2 equals the arbiter's");
    let (v4, v6) = (format!("{VIP4}/32"), format!("{VIP6}/128"));
    quorum_all(&g, "up", VIP4);
    quorum_all(&g, "up", VIP6);
    assert!(
        within(START, || announced(&g, &v4) && announced(&g, &v6)),
        "not announced: {:?} {:?}",
        g.router_paths(&v4),
        g.router_paths(&v6)
    );
    g.ok(&format!(
        "{v4} and {v6} on vip0 of both balancers and at the router"
    ));

    // Cut off the node the arbiter uses: the arbiter moves, and so does any balancer there.
    let mut arb_node = None;
    assert!(within(START, || {
        arb_node = node_of(&g, None);
        arb_node.is_some()
    }));
    let cut_addr = arb_node.unwrap();
    let k = env()
        .nodes
        .iter()
        .position(|n| cut_addr.starts_with(&format!("{n}:")))
        .unwrap_or_else(|| panic!("{cut_addr} is none of {:?}", env().nodes));
    let on_cut: Vec<&str> = DAEMONS
        .iter()
        .filter(|(_, who)| node_of(&g, *who).as_deref() == Some(cut_addr.as_str()))
        .map(|(name, _)| *name)
        .collect();
    let t = Instant::now();
    host(&format!("partition {k}"));
    g.ok(&format!("node {k} ({cut_addr}) cut off; on it: {on_cut:?}"));
    let elsewhere = |who| node_of(&g, who).is_some_and(|n| n != cut_addr);
    assert!(
        within(START, || DAEMONS.iter().all(|(_, who)| elsewhere(*who))),
        "not every daemon on the majority: {:?}",
        DAEMONS.map(|(name, who)| (name, node_of(&g, who)))
    );
    g.ok(&format!(
        "every daemon connected to a node of the majority ({} ms after the cut)",
        ms(t)
    ));
    assert!(announced(&g, &v4) && announced(&g, &v6));
    g.ok("both VIPs still announced and on vip0: nothing withdrawn that quorum did not");

    // The fleet works through the partition: a tree change and a quorum down.
    change(
        &g,
        "during the partition: a weight edit",
        "-e -t 203.0.113.10:80 -r 203.0.113.101:80 -g -w 55\n",
        "-a -t 203.0.113.10:80 -r 203.0.113.101:80 -g -w 55",
    );
    change(
        &g,
        "during the partition: a new real server",
        "-a -t [2001:db8:f00::10]:443 -r [2001:db8:5::9]:443 -g -w 3\n",
        "-a -t [2001:db8:f00::10]:443 -r [2001:db8:5::9]:443 -g -w 3",
    );
    let t = Instant::now();
    let out = g.quorum("down", &format!("{VIP4},b-150,80"));
    assert!(out.status.success(), "{out:?}");
    assert!(
        within(CHANGE, || withdrawn(&g, &v4)),
        "{v4} not withdrawn: {:?}",
        g.router_paths(&v4)
    );
    g.ok(&format!(
        "during the partition: quorum down withdrew {v4} at the router and took it off vip0 ({} ms)",
        ms(t)
    ));
    assert!(announced(&g, &v6));

    // Heal. Whatever was queued or redelivered must not bring back an old state.
    let t = Instant::now();
    let answer = host(&format!("heal {k}"));
    g.ok(&format!("node {k} healed: {answer} ({} ms)", ms(t)));
    // The arbiter's move published some heartbeats again (their confirms were lost with
    // the node); their late copies are no restart of the arbiter.
    for i in 0..2 {
        let resyncs = g.client_log(i).matches("arbiter restarted").count();
        assert_eq!(
            resyncs,
            0,
            "lb{}: the arbiter's move taken for a restart",
            i + 1
        );
    }
    g.ok("lb1, lb2: the arbiter's move to another node not taken for a restart");
    // Nor did the arbiter, cut off, count the balancers' silence: none was gone, none got
    // the whole welcome again.
    let arbiter_log = g.arbiter_log();
    let gone: Vec<&str> = arbiter_log
        .lines()
        .filter(|l| l.contains("considered gone"))
        .collect();
    assert!(
        gone.is_empty(),
        "the arbiter gave up on balancers: {gone:#?}"
    );
    g.ok("arbiter: no balancer considered gone while it was cut off");
    change(
        &g,
        "after the heal: a weight edit",
        "-e -t 203.0.113.10:80 -r 203.0.113.103:80 -g -w 7\n",
        "-a -t 203.0.113.10:80 -r 203.0.113.103:80 -g -w 7",
    );
    change(
        &g,
        "after the heal: a real server removed",
        "-d -t 203.0.113.10:80 -r 203.0.113.102:80\n",
        "!-a -t 203.0.113.10:80 -r 203.0.113.102:80 -g -w 20",
    );
    let t = Instant::now();
    let out = g.quorum("down", &format!("{VIP6},b-150,443"));
    assert!(out.status.success(), "{out:?}");
    assert!(within(CHANGE, || withdrawn(&g, &v6)), "{v6} not withdrawn");
    let out = g.quorum("up", &format!("{VIP6},b-150,443"));
    assert!(out.status.success(), "{out:?}");
    assert!(within(CHANGE, || announced(&g, &v6)), "{v6} not announced");
    g.ok(&format!(
        "after the heal: a down/up cycle of {v6} withdrew and announced it ({} ms)",
        ms(t)
    ));
    // Every message queued before that cycle has been delivered by now: the withdrawal of
    // the partition holds.
    assert!(
        withdrawn(&g, &v4),
        "{v4} came back: {:?}",
        g.router_paths(&v4)
    );
    g.ok(&format!(
        "{v4}, withdrawn during the partition, stays withdrawn"
    ));
    let out = g.quorum("up", &format!("{VIP4},b-150,80"));
    assert!(out.status.success(), "{out:?}");
    assert!(within(CHANGE, || announced(&g, &v4)), "{v4} not announced");
    g.ok(&format!("quorum up announces {v4} again"));

    // Nothing duplicated or left over: each balancer's mapped table is the arbiter's, line
    // for line; each VIP once on vip0; one path per balancer at the router.
    assert!(g.all_mirror(), "{}", g.mirror_diff());
    for (name, lb) in g.balancers() {
        let mapped = crate::guest::only_vips(&rules(lb), &[VIP4, VIP6], false);
        let mut unique = mapped.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), mapped.len(), "{name}: {mapped:?}");
        let addrs = lb.ip(&["-o", "addr", "show", "dev", "vip0"]).unwrap();
        for cidr in [&v4, &v6] {
            let count = addrs
                .lines()
                .filter(|l| l.split_whitespace().any(|w| w == cidr.as_str()))
                .count();
            assert_eq!(count, 1, "{name}: {cidr} on vip0 {count} times:\n{addrs}");
        }
        assert_dump_agrees(lb, name);
    }
    g.ok("lb1, lb2: IPVS tables equal the arbiter's line for line, each VIP once on vip0");
    for cidr in [&v4, &v6] {
        let paths = g.router_paths(cidr);
        let mut from: Vec<&str> = paths.iter().map(|p| p.0.as_str()).collect();
        from.sort_unstable();
        assert_eq!(from, ["192.0.2.11", "192.0.2.12"], "{cidr}: {paths:?}");
    }
    g.ok("router: each VIP from lb1 and lb2 once");
    g.finish();
}
