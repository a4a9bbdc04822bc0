//! The whole fleet on a three-node RabbitMQ cluster with quorum queues (lab test: root,
//! netns, RabbitMQ, gobgpd): the arbiter and three balancers of the real binary, each
//! with a broker user of its own and every node's URL in `amqp_server`, announcing to a
//! GoBGP router. While quorum up/down cycles run on a few VIPs, the node the arbiter is
//! connected to is SIGKILLed and restarted (`CLUSTER_FLEET_KILLS` times, default 3), then
//! cut off from the others and healed (skipped with `LAB_PARTITIONS=0`); every daemon
//! moves to another node, every cycle ends at the router as quorum says, and a VIP that
//! stays up is never withdrawn there nor taken off a balancer's `lo`. Then the whole
//! cluster is stopped and started with no daemon restarted: a `quorum down` made while no
//! node ran reaches the router once the cluster is back, and at the end each balancer's
//! `lo` holds each VIP once.
//!
//! The host kernel has no IPVS (`ipvs = false`): the announce side and the addresses are
//! checked here; the IPVS mirror is the VM lane's. Run with
//! `netns-lab/test lab_fleet_on_a_cluster`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "cluster_fleet/cycles.rs"]
mod cycles;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use cycles::{Cycle, Cycler, PHASE_WAIT};
use labkit::fleet::{host_prefix, Fleet, FleetOpts};

const BALANCERS: usize = 3;
const NODES: usize = 3;
/// How long the daemons may take to be connected again off a lost node. A cut-off node
/// shows only after Erlang's `net_ticktime` (8 s in the lab) and the AMQP heartbeats (2 s).
const RECONNECT: Duration = Duration::from_secs(120);
/// How long a restarted or healed node may take to serve with every queue member online.
const NODE_BACK: Duration = Duration::from_secs(240);
/// How long `pause_minority` gets to bring the healed node back before the lab restarts it
/// ([`labkit::RabbitCluster::rejoin`]).
const HEAL_PATIENCE: Duration = Duration::from_secs(60);
/// A recovery longer than this prints what the daemons logged meanwhile.
const SLOW: Duration = Duration::from_secs(5);
/// How often the daemons' `/status` is read.
const STATUS_POLL: Duration = Duration::from_millis(100);

fn vip(i: u8) -> IpAddr {
    IpAddr::from([203, 0, 113, 10 + i])
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The daemons' logs (their ends), for a failure message.
fn logs(f: &Fleet) -> String {
    let mut s = format!("arbiter:\n{}\n", tail(&f.arbiter_log(), 40));
    for i in 0..f.balancers.len() {
        s += &format!("{}:\n{}\n", f.balancers[i].name, tail(&f.client_log(i), 20));
    }
    // The router is a third party's daemon: when every session drops at once, its log says
    // whether it crashed.
    for r in &f.routers {
        s += &format!("gobgpd ({}):\n{}\n", r.ns.name(), r.gobgpd.log_tail());
    }
    s
}

/// How long each daemon's log is now: where [`logs_since`] starts.
fn log_marks(f: &Fleet) -> Vec<usize> {
    let mut v = vec![f.arbiter_log().len()];
    v.extend((0..f.balancers.len()).map(|i| f.client_log(i).len()));
    v
}

/// What the daemons logged since [`log_marks`] of warnings, errors and the broker (at
/// most 30 lines each), for a recovery that took long.
fn logs_since(f: &Fleet, marks: &[usize]) -> String {
    let mut texts = vec![("arbiter".to_owned(), f.arbiter_log())];
    texts.extend((0..f.balancers.len()).map(|i| (f.balancers[i].name.clone(), f.client_log(i))));
    let mut s = String::new();
    for ((name, text), mark) in texts.iter().zip(marks) {
        let new = labkit::strip_ansi(text.get(*mark..).unwrap_or_default());
        let lines: Vec<&str> = new
            .lines()
            .filter(|l| {
                ["WARN", "ERROR", "broker", "connect"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .take(30)
            .collect();
        s += &format!("{name}:\n{}\n", lines.join("\n"));
    }
    s
}

/// The node each daemon is connected to: the arbiter's first, then each balancer's.
fn nodes(f: &Fleet) -> Vec<Option<usize>> {
    let mut v = vec![f.broker_node(&f.arbiter_status())];
    v.extend((0..f.balancers.len()).map(|i| f.broker_node(&f.client_status(i))));
    v
}

/// Waits until every daemon is connected to a node that `ok` accepts; their nodes and the
/// moment they were seen so. Fails the test on a cycle's failure too.
fn wait_connected(
    f: &Fleet,
    cycles: &Cycler,
    timeout: Duration,
    what: &str,
    ok: impl Fn(usize) -> bool,
) -> (Vec<usize>, Instant) {
    wait_nodes(f, Some(cycles), timeout, what, |n| n.is_some_and(&ok))
}

/// Waits until `ok` accepts every daemon's node (`None`: not connected), with or without
/// cycles running; the nodes connected to and the moment they were seen so.
fn wait_nodes(
    f: &Fleet,
    cycles: Option<&Cycler>,
    timeout: Duration,
    what: &str,
    ok: impl Fn(Option<usize>) -> bool,
) -> (Vec<usize>, Instant) {
    let failure = || cycles.and_then(Cycler::failure);
    let mut last = Vec::new();
    let seen = labkit::wait_every(timeout, STATUS_POLL, || {
        last = nodes(f);
        failure().is_some() || last.iter().all(|n| ok(*n))
    });
    let at = Instant::now();
    if let Some(e) = failure() {
        panic!("{what}: a cycle failed: {e}\n{}", logs(f));
    }
    assert!(
        seen,
        "{what}: daemons on nodes {last:?} after {timeout:?}\n{}",
        logs(f)
    );
    (last.into_iter().flatten().collect(), at)
}

/// Waits until a cycle that started at or after `t` has finished; that cycle.
fn wait_cycle_since(f: &Fleet, cycles: &Cycler, t: Instant, what: &str) -> Cycle {
    let mut done = None;
    let ok = labkit::wait_until(2 * PHASE_WAIT + Duration::from_secs(10), || {
        done = cycles.done_since(t);
        done.is_some() || cycles.failure().is_some()
    });
    if let Some(e) = cycles.failure() {
        panic!("{what}: a cycle failed: {e}\n{}", logs(f));
    }
    assert!(ok, "{what}: no cycle through\n{}", logs(f));
    done.unwrap()
}

/// Waits until the cluster has every node running, no partition, and every queue's
/// members online; how long it took.
fn wait_cluster_whole(f: &Fleet, what: &str) -> Duration {
    let t = Instant::now();
    let vhost = f.broker.vhost().to_owned();
    let c = f.cluster().unwrap();
    let ok = labkit::wait_every(NODE_BACK, Duration::from_millis(500), || {
        c.is_whole() && c.members_online(&vhost)
    });
    assert!(
        ok,
        "{what}: cluster not whole after {NODE_BACK:?}: {}",
        c.ctl(&["cluster_status"]).unwrap_or_else(|e| e.to_string())
    );
    t.elapsed()
}

/// Waits until every node runs, no partition is listed and every queue has a majority of
/// its members online.
fn wait_cluster_majority(f: &Fleet, what: &str) -> Duration {
    let t = Instant::now();
    let vhost = f.broker.vhost().to_owned();
    let c = f.cluster().unwrap();
    let ok = labkit::wait_every(NODE_BACK, Duration::from_millis(500), || {
        c.is_whole() && c.members_online_at_least(&vhost, NODES / 2 + 1)
    });
    assert!(
        ok,
        "{what}: cluster not together after {NODE_BACK:?}: {}",
        c.ctl(&["cluster_status"]).unwrap_or_else(|e| e.to_string())
    );
    t.elapsed()
}

/// The arbiter's node cut off from the others and from every daemon, then healed: every
/// daemon moves to the majority, cycles go on, and after the heal the node rejoins.
fn partition_and_heal(f: &mut Fleet, cycles: &Cycler) {
    let (before, _) = wait_connected(f, cycles, RECONNECT, "before the partition", |_| true);
    let k = before[0];
    let marks = log_marks(f);
    let t0 = Instant::now();
    f.cluster().unwrap().partition(k).unwrap();
    let (after, moved) = wait_connected(f, cycles, RECONNECT, "partition", |n| n != k);
    let c1 = wait_cycle_since(f, cycles, moved, "during the partition").done;
    let c2 = wait_cycle_since(f, cycles, c1, "during the partition").done;
    eprintln!(
        "partition: node {k} cut off (daemons on {before:?}) → on {after:?} after {:?}; two \
         cycles through after {:?} and {:?} more",
        moved - t0,
        c1 - moved,
        c2 - c1
    );
    if c2 - moved > SLOW {
        eprintln!(
            "slow cycles; the daemons logged:\n{}",
            logs_since(f, &marks)
        );
    }
    f.cluster().unwrap().heal(k).unwrap();
    let healed = Instant::now();
    let rejoin = f
        .cluster_mut()
        .unwrap()
        .rejoin(k, HEAL_PATIENCE)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(f)));
    // The nodes together again and every queue with a majority online: whether the paused
    // node's replicas catch up is RabbitMQ's business (seen once not within 240 s after ten
    // kills), not what the daemons are judged on.
    wait_cluster_majority(f, "healed");
    let whole_at = Instant::now();
    let c3 = wait_cycle_since(f, cycles, whole_at, "after healing").done;
    eprintln!(
        "healed: node {k} back ({rejoin:?}), every queue with a majority online, in {:?}; a \
         cycle through {:?} after that",
        whole_at - healed,
        c3 - whole_at
    );
}

/// The pids of the arbiter and of each balancer's daemon.
fn daemon_pids(f: &Fleet) -> Vec<Option<u32>> {
    let mut v = vec![f.arbiter_pid()];
    v.extend((0..f.balancers.len()).map(|i| f.client_pid(i)));
    v
}

/// How many times `vip` is on balancer `i`'s `lo`.
fn on_lo(f: &Fleet, i: usize, vip: &IpAddr) -> usize {
    let want = format!("{vip}/32");
    f.lo_addrs(i)
        .split_whitespace()
        .filter(|w| *w == want)
        .count()
}

/// Nearest-rank percentile.
fn pct(v: &[Duration], p: usize) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[(v.len() * p).div_ceil(100).clamp(1, v.len()) - 1]
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_fleet_on_a_cluster_rides_node_kills_and_a_whole_restart() {
    labkit::require_root();
    // LAB_PARTITIONS=0 leaves the partition step out, as it does the transport's
    // partition test (netns-lab/test).
    let partition = std::env::var("LAB_PARTITIONS").map_or(true, |v| v != "0");
    let kills: usize = std::env::var("CLUSTER_FLEET_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let steady = vip(0);
    let cycling = vec![vip(1), vip(2), vip(3)];
    let all: Vec<IpAddr> = std::iter::once(steady).chain(cycling.clone()).collect();
    let t = Instant::now();
    let mut f = Fleet::start(
        env!("CARGO_BIN_EXE_ipvs-sync").as_ref(),
        FleetOpts {
            balancers: BALANCERS,
            vips: all.clone(),
            cluster: Some(NODES),
            amqp_heartbeat: Some(2),
            log_level: "info",
            ..FleetOpts::default()
        },
    )
    .unwrap();
    eprintln!(
        "fleet of {BALANCERS} balancers on a {NODES}-node cluster up in {:?}",
        t.elapsed()
    );
    for v in &all {
        f.quorum("up", &format!("{v},b-100,80")).unwrap();
    }
    for v in &all {
        assert!(
            f.wait_paths(0, v, BALANCERS, Duration::from_secs(60))
                .is_some(),
            "{v} not announced by every balancer\n{}",
            logs(&f)
        );
    }
    let api = f.routers[0].gobgpd.api();
    let best = api
        .paths_for(&host_prefix(&steady))
        .unwrap()
        .into_iter()
        .find(|p| p.best)
        .and_then(|p| p.neighbor);
    let mon = f.monitor(0, "ipv4").unwrap();
    let lo_mons: Vec<_> = (0..BALANCERS).map(|i| f.lo_monitor(i).unwrap()).collect();
    let cycles = Cycler::start(f.quorum_handler(), api, cycling.clone(), steady, BALANCERS);
    let first = wait_cycle_since(&f, &cycles, t, "first cycle");
    eprintln!(
        "cycles running (the first: withdrawn in {:?}, announced {:?} later)",
        first.withdrawn - first.started,
        first.done - first.withdrawn
    );

    let mut recovery = Vec::new();
    for round in 1..=kills {
        let (before, _) = wait_connected(&f, &cycles, RECONNECT, "before a kill", |_| true);
        let k = before[0];
        let marks = log_marks(&f);
        let t0 = Instant::now();
        f.cluster_mut().unwrap().kill(k).unwrap();
        let (after, connected) = wait_connected(&f, &cycles, RECONNECT, "after a kill", |n| n != k);
        let c = wait_cycle_since(&f, &cycles, t0, "after a kill");
        let took = connected.max(c.done) - t0;
        recovery.push(took);
        eprintln!(
            "kill {round}: node {k} (daemons on {before:?}) → on {after:?}, connected after \
             {:?}, a cycle through after {:?} (its withdraw at {:?})",
            connected - t0,
            c.done - t0,
            c.withdrawn - t0
        );
        if took > SLOW {
            eprintln!(
                "a slow recovery; the daemons logged:\n{}",
                logs_since(&f, &marks)
            );
        }
        let t = Instant::now();
        f.cluster_mut().unwrap().restart_node(k).unwrap();
        wait_cluster_whole(&f, "restarted node");
        eprintln!(
            "node {k} restarted, every queue on {NODES} nodes again, in {:?}",
            t.elapsed()
        );
    }

    if partition {
        partition_and_heal(&mut f, &cycles);
    }
    let (end, _) = wait_connected(&f, &cycles, RECONNECT, "at the end", |_| true);

    let report = cycles.stop();
    assert!(
        report.failure.is_none(),
        "{:?}\n{}",
        report.failure,
        logs(&f)
    );
    // The whole cluster stopped and started; no daemon restarted.
    let pids = daemon_pids(&f);
    let t0 = Instant::now();
    f.cluster_mut().unwrap().stop_all().unwrap();
    let (_, gone) = wait_nodes(&f, None, RECONNECT, "cluster stopped", |n| n.is_none());
    // A quorum down while no node runs: the arbiter takes the hand-off, and the balancers
    // hear of it once the cluster is back (fail-static keeps the paths meanwhile).
    let late = cycling[0];
    f.quorum("down", &format!("{late},b-100,80")).unwrap();
    let held = f.path_count(0, &late);
    f.cluster_mut().unwrap().boot_all().unwrap();
    let booted = Instant::now();
    let (on, back) = wait_nodes(&f, None, NODE_BACK, "cluster started", |n| n.is_some());
    let withdrawn = f
        .wait_paths(0, &late, 0, PHASE_WAIT)
        .map(|_| Instant::now())
        .unwrap_or_else(|| {
            panic!(
                "{late}: the quorum down made while the cluster was stopped never reached the \
                 router\n{}",
                logs(&f)
            )
        });
    f.quorum("up", &format!("{late},b-100,80")).unwrap();
    let announced = f.wait_paths(0, &late, BALANCERS, PHASE_WAIT);
    assert!(
        announced.is_some(),
        "{late} not announced again\n{}",
        logs(&f)
    );
    assert_eq!(daemon_pids(&f), pids, "a daemon was restarted");
    eprintln!(
        "whole cluster stopped (every daemon off it after {:?}; {late} kept {held} of \
         {BALANCERS} paths meanwhile) and started in {:?}: every daemon on {on:?} {:?} after \
         the boot, the down made meanwhile withdrawn at the router {:?} after it, announced \
         again {:?} later; no daemon restarted",
        gone - t0,
        booted - t0,
        back - booted,
        withdrawn - booted,
        announced.unwrap_or_default()
    );

    // Nothing twice at the router: one path per balancer per VIP, each VIP up.
    let neighbors: BTreeSet<Option<String>> = f
        .balancers
        .iter()
        .map(|b| Some(b.addr_to[0].clone()))
        .collect();
    for v in &all {
        let paths = f.routers[0]
            .gobgpd
            .api()
            .paths_for(&host_prefix(v))
            .unwrap();
        let from: BTreeSet<Option<String>> = paths.iter().map(|p| p.neighbor.clone()).collect();
        assert_eq!(paths.len(), BALANCERS, "{v}: {paths:?}");
        assert_eq!(from, neighbors, "{v}: one path per balancer");
    }
    // The steady VIP: never withdrawn, its best path never moved, every look saw all paths.
    let prefix = host_prefix(&steady);
    let events: Vec<_> = mon
        .take()
        .into_iter()
        .filter(|e| e.prefix == prefix)
        .collect();
    assert!(
        events.iter().all(|e| !e.withdrawal && e.neighbor == best),
        "{prefix} changed at the router, quorum never withdrew it: {events:?}"
    );
    assert!(
        report.steady_bad.is_empty(),
        "{prefix} lacked a path: {:?}",
        report.steady_bad
    );
    // The kernel side: each VIP on each balancer's lo once, the steady one never taken off.
    let steady_lo = format!("{steady}/32");
    for (i, m) in lo_mons.iter().enumerate() {
        let off: Vec<_> = m
            .take()
            .into_iter()
            .filter(|e| e.addr == steady_lo && !e.added)
            .collect();
        assert!(
            off.is_empty(),
            "{steady} taken off balancer {i}'s lo, quorum never withdrew it: {off:?}"
        );
        for v in &all {
            assert_eq!(
                on_lo(&f, i, v),
                1,
                "{v} on balancer {i}'s lo: {}",
                f.lo_addrs(i)
            );
        }
    }
    eprintln!(
        "{} cycles of {} VIPs, every one as quorum said at the router; {prefix}: {} looks, \
         fewest paths {:?} of {BALANCERS}, {} best-path events, none a withdraw; daemons on \
         {end:?} when the cycles stopped",
        report.cycles.len(),
        cycling.len(),
        report.looks,
        report.steady_min,
        events.len()
    );
    eprintln!(
        "recovery over {} kills of the arbiter's node (kill → every daemon connected and a \
         cycle through): p50 {:?} p99 {:?}",
        recovery.len(),
        pct(&recovery, 50),
        pct(&recovery, 99)
    );
}
