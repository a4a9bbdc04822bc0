//! The whole fleet on a three-node RabbitMQ cluster with quorum queues (lab test: root,
//! netns, RabbitMQ, gobgpd): the arbiter and three balancers of the real binary, each
//! with a broker user of its own and every node's URL in `amqp_server`, announcing to a
//! GoBGP router. While quorum up/down cycles run on a few VIPs, the node the arbiter is
//! connected to is SIGKILLed and restarted (`CLUSTER_FLEET_KILLS` times, default 3), then
//! cut off from the others; every daemon moves to another node, every cycle ends at the
//! router as quorum says, and a VIP that stays up is never withdrawn there.
//!
//! The host kernel has no IPVS (`ipvs = false`): only the announce side is checked here;
//! the IPVS mirror is the VM lane's. Run with `netns-lab/test lab_fleet_on_a_cluster`.

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
    let mut last = Vec::new();
    let seen = labkit::wait_every(timeout, STATUS_POLL, || {
        last = nodes(f);
        cycles.failure().is_some() || last.iter().all(|n| n.is_some_and(&ok))
    });
    let at = Instant::now();
    if let Some(e) = cycles.failure() {
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

/// Nearest-rank percentile.
fn pct(v: &[Duration], p: usize) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[(v.len() * p).div_ceil(100).clamp(1, v.len()) - 1]
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_fleet_on_a_cluster_rides_node_kills_and_a_partition() {
    labkit::require_root();
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

    // The arbiter's node cut off from the others and from every daemon.
    let (before, _) = wait_connected(&f, &cycles, RECONNECT, "before the partition", |_| true);
    let k = before[0];
    let marks = log_marks(&f);
    let t0 = Instant::now();
    f.cluster().unwrap().partition(k).unwrap();
    let (after, moved) = wait_connected(&f, &cycles, RECONNECT, "partition", |n| n != k);
    let c1 = wait_cycle_since(&f, &cycles, moved, "during the partition").done;
    let c2 = wait_cycle_since(&f, &cycles, c1, "during the partition").done;
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
            logs_since(&f, &marks)
        );
    }
    f.cluster().unwrap().heal(k).unwrap();
    let healed = Instant::now();
    // The nodes together again and every queue with a majority online: whether the paused
    // node's replicas catch up is RabbitMQ's business (seen once not within 240 s after ten
    // kills), not what the daemons are judged on.
    wait_cluster_majority(&f, "healed");
    let whole_at = Instant::now();
    let c3 = wait_cycle_since(&f, &cycles, whole_at, "after healing").done;
    eprintln!(
        "healed: node {k} back, every queue with a majority online, in {:?}; a cycle \
         through {:?} after that",
        whole_at - healed,
        c3 - whole_at
    );
    let (end, _) = wait_connected(&f, &cycles, RECONNECT, "at the end", |_| true);

    let report = cycles.stop();
    assert!(
        report.failure.is_none(),
        "{:?}\n{}",
        report.failure,
        logs(&f)
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
    eprintln!(
        "{} cycles of {} VIPs, every one as quorum said at the router; {prefix}: {} looks, \
         fewest paths {:?} of {BALANCERS}, {} best-path events, none a withdraw; daemons end \
         on {end:?}",
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
