//! `vm-cluster`: the three-node RabbitMQ cluster of the VM lane's host side
//! (`VM_E2E_CLUSTER=1 netns-lab/vm-e2e`), and the hands the guest's tests cut a node off
//! and heal it with.
//!
//! ```text
//! vm-cluster NAMESPACE DIR
//! ```
//!
//! Starts a [`RabbitCluster`] of 3 nodes, attaches NAMESPACE (the one owning the VM's tap,
//! 192.0.2.1/24) to its hub and routes the guest's 192.0.2.0/24 through it, then writes
//! `DIR/cluster.env` (`AMQP_URL` with every node, `NODES`, `CLUSTER_NET`) and `DIR/ready`.
//!
//! The guest cannot reach the host's namespaces, but it shares DIR. It asks through
//! [`labkit::host_requests`] (`DIR/req-N`, one line):
//! - `partition K`: node K's veth down, as in the netns lab;
//! - `heal K`: the veth up again, then wait until the cluster is whole (restarting node K
//!   if it stays paused, as [`RabbitCluster::rejoin`] does).
//!
//! and finds the answer in `DIR/done-N` (`ok …` or `error …`). It stops, and stops the
//! cluster, when `DIR/stop` appears or its parent is gone.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use labkit::host_requests::{answer, pending, write_atomic};
use labkit::rabbit_cluster::{node_addr, RabbitCluster, Rejoin};
use labkit::Netns;

const NODES: usize = 3;
/// How long a healed node may take to come back by itself before it is restarted.
const PATIENCE: Duration = Duration::from_secs(60);
/// The guest's network, behind NAMESPACE.
const GUEST_NET: &str = "192.0.2.0/24";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ns, dir] = args.as_slice() else {
        eprintln!("usage: vm-cluster NAMESPACE DIR");
        return ExitCode::from(2);
    };
    match run(ns, Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vm-cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(ns: &str, dir: &Path) -> std::io::Result<()> {
    let t = Instant::now();
    let host = Netns::attach(ns)?;
    let mut cluster = RabbitCluster::start("vmc", NODES)?;
    let via = cluster.attach(&host)?;
    host.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    cluster
        .hub
        .ip(&["route", "add", GUEST_NET, "via", &via.to_string()])?;
    let first = &cluster.nodes[0].rabbit;
    let url = cluster.url_in("/", first.user(), first.pass());
    let nodes: Vec<String> = (0..NODES).map(|k| node_addr(k).to_string()).collect();
    write_atomic(
        &dir.join("cluster.env"),
        &format!(
            "AMQP_URL={url}\nNODES={}\nCLUSTER_NET=198.51.100.0/24\n",
            nodes.join(",")
        ),
    )?;
    write_atomic(&dir.join("ready"), "")?;
    eprintln!(
        "vm-cluster: {NODES} nodes up and joined in {:.1} s ({})",
        t.elapsed().as_secs_f64(),
        nodes.join(", ")
    );
    while !dir.join("stop").exists() && parent_alive() {
        for (req, line) in pending(dir)? {
            let said = serve(&mut cluster, &line);
            eprintln!("vm-cluster: {line} → {said}");
            answer(&req, &said)?;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("vm-cluster: stopping the cluster");
    drop(cluster);
    Ok(())
}

/// One request, carried out: the answer line.
fn serve(cluster: &mut RabbitCluster, req: &str) -> String {
    let mut words = req.split_whitespace();
    let (verb, k) = (words.next(), words.next().and_then(|k| k.parse().ok()));
    let result = match (verb, k) {
        (Some("partition"), Some(k)) if k < NODES => cluster.partition(k).map(|()| String::new()),
        (Some("heal"), Some(k)) if k < NODES => {
            let t = Instant::now();
            cluster
                .heal(k)
                .and_then(|()| cluster.rejoin(k, PATIENCE))
                .map(|how| {
                    let how = match how {
                        Rejoin::ByItself => "by itself",
                        Rejoin::Restarted => "after a restart of the node",
                    };
                    format!("whole {how} in {:.1} s", t.elapsed().as_secs_f64())
                })
        }
        _ => Err(std::io::Error::other(format!(
            "not a request: {req:?} (partition K | heal K, K < {NODES})"
        ))),
    };
    match result {
        Ok(what) => format!("ok {what}").trim_end().to_owned(),
        Err(e) => format!("error {e}"),
    }
}

/// Whether the process that started this one still runs (an orphan is adopted by init).
fn parent_alive() -> bool {
    std::os::unix::process::parent_id() != 1
}
