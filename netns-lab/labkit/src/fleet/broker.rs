//! The fleet's broker: one RabbitMQ node in `core` (the default), or a cluster of nodes in
//! namespaces of their own ([`super::FleetOpts::cluster`]) that `core` and every balancer
//! reach through the cluster's hub, each daemon with a user of its own and quorum queues.
//!
//! ```text
//!   core ─┐                      ┌─ bK (node K, 198.51.100.4K+2:5672)
//!   lb1  ─┼── hub (198.51.100.128+/30 each) ──┤
//!   lbN  ─┘                      └─ …
//! ```
//! The hub's client addresses and the nodes' stay clear of the balancers' router links
//! (198.51.100.32–127) for up to [`MAX_BALANCERS`] balancers and [`MAX_NODES`] nodes.

use std::io;

use crate::rabbit::{Account, FleetBroker};
use crate::spec::{LabSpec, ARBITER_NAME};
use crate::{Netns, Rabbit, RabbitCluster};

/// The vhost of a fleet on a cluster.
pub const CLUSTER_VHOST: &str = "ipvs-sync";

/// Most balancers of a fleet on a cluster (see the module doc).
pub const MAX_BALANCERS: usize = 3;

/// Most nodes of a fleet's cluster (see the module doc).
pub const MAX_NODES: usize = 8;

/// Where the fleet's broker runs.
#[derive(Debug)]
pub enum Brokers {
    /// One broker in `core` at [`super::spec::BROKER`]; every daemon logs in as its user,
    /// vhost `/`, classic queues.
    One(Rabbit),
    /// A cluster; every daemon logs in as its own user ([`Rabbit::provision_fleet`]) in
    /// [`CLUSTER_VHOST`], with every node's URL in `amqp_server` and quorum queues.
    Cluster {
        /// The nodes.
        cluster: RabbitCluster,
        /// The fleet's users.
        accounts: FleetBroker,
    },
}

impl Brokers {
    /// Starts a cluster of `nodes` nodes, attaches `core` and the balancers' namespaces to
    /// it and sets up the fleet's users and vhost.
    pub(super) fn start_cluster(
        nodes: usize,
        core: &Netns,
        balancers: &[Netns],
        names: &[&str],
    ) -> io::Result<Brokers> {
        if !(1..=MAX_NODES).contains(&nodes) || balancers.len() > MAX_BALANCERS {
            return Err(io::Error::other(format!(
                "a fleet on a cluster has 1 to {MAX_NODES} nodes and at most {MAX_BALANCERS} \
                 balancers (address plan), not {nodes} and {}",
                balancers.len()
            )));
        }
        let mut cluster = RabbitCluster::start("fleet", nodes)?;
        cluster.attach(core)?;
        for ns in balancers {
            cluster.attach(ns)?;
        }
        let accounts = cluster.provision_fleet(CLUSTER_VHOST, ARBITER_NAME, names)?;
        Ok(Brokers::Cluster { cluster, accounts })
    }

    /// Points every daemon of `spec` at the cluster, each with its own user, and asks for
    /// quorum queues; `heartbeat` (seconds) goes on every URL. Nothing on one broker.
    pub(super) fn configure(&self, spec: &mut LabSpec, heartbeat: Option<u16>) {
        let Brokers::Cluster { cluster, accounts } = self else {
            return;
        };
        spec.config.set("main", "amqp_queue_type", "quorum");
        let url = cluster_url(cluster, &accounts.arbiter, heartbeat);
        spec.config.set("main", "amqp_server", &url);
        spec.arbiter.config.set("main", "amqp_server", url);
        for b in &mut spec.balancers {
            if let Some(a) = accounts.balancers.get(&b.name) {
                b.config
                    .set("main", "amqp_server", cluster_url(cluster, a, heartbeat));
            }
        }
    }

    /// The vhost the daemons use.
    pub fn vhost(&self) -> &str {
        match self {
            Brokers::One(_) => "/",
            Brokers::Cluster { .. } => CLUSTER_VHOST,
        }
    }

    /// `rabbitmqctl ARGS…` on the broker (on a cluster, the first node that answers).
    pub fn ctl(&self, args: &[&str]) -> io::Result<String> {
        match self {
            Brokers::One(r) => r.ctl(args),
            Brokers::Cluster { cluster, .. } => cluster.ctl(args),
        }
    }
}

/// Every node's URL with `account`'s credentials, by commas, each with `?heartbeat=`.
fn cluster_url(cluster: &RabbitCluster, account: &Account, heartbeat: Option<u16>) -> String {
    let query = heartbeat
        .map(|s| format!("?heartbeat={s}"))
        .unwrap_or_default();
    cluster
        .nodes
        .iter()
        .map(|n| n.rabbit.url_in(CLUSTER_VHOST, &account.user, &account.pass) + query.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
