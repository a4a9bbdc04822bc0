//! Looking at a running fleet: the routers' RIBs, the daemons' pages, the broker's queues.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::Fleet;
use crate::metrics::http_get;
use crate::{AddrMonitor, RibMonitor};

/// A broker queue, as `rabbitmqctl list_queues` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Messages waiting to be delivered.
    pub ready: u64,
    /// Messages delivered and not yet acknowledged.
    pub unacked: u64,
    /// Consumers attached.
    pub consumers: u64,
}

/// How often [`Fleet::wait_paths`] looks at the router.
const PATH_POLL: Duration = Duration::from_millis(5);

/// `VIP/32` or `VIP/128`.
pub fn host_prefix(vip: &IpAddr) -> String {
    match vip {
        IpAddr::V4(_) => format!("{vip}/32"),
        IpAddr::V6(_) => format!("{vip}/128"),
    }
}

impl Fleet {
    /// The paths router `j` holds for `vip`, as `gobgp global rib -j` prints them (none
    /// when the router does not answer).
    pub fn paths(&self, j: usize, vip: &IpAddr) -> Vec<serde_json::Value> {
        let fam = if vip.is_ipv4() { "ipv4" } else { "ipv6" };
        let Some(Ok(rib)) = self.routers.get(j).map(|r| r.gobgpd.rib(fam)) else {
            return Vec::new();
        };
        rib.get(host_prefix(vip))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Number of paths router `j` has for `vip`.
    pub fn path_count(&self, j: usize, vip: &IpAddr) -> usize {
        self.paths(j, vip).len()
    }

    /// Polls (every 5 ms) until router `j` has `n` paths for `vip`; the time it took, or
    /// `None` after `timeout`.
    pub fn wait_paths(
        &self,
        j: usize,
        vip: &IpAddr,
        n: usize,
        timeout: Duration,
    ) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if self.path_count(j, vip) == n {
                return Some(t.elapsed());
            }
            std::thread::sleep(PATH_POLL);
        }
        None
    }

    /// An attribute of the first path router `j` has for `vip`, by BGP type code.
    pub fn attr(&self, j: usize, vip: &IpAddr, code: u64) -> Option<serde_json::Value> {
        let paths = self.paths(j, vip);
        let attrs = paths.first()?.get("attrs")?.as_array()?.clone();
        attrs
            .into_iter()
            .find(|a| a.get("type").and_then(serde_json::Value::as_u64) == Some(code))
    }

    /// A [`RibMonitor`] on router `j` for `family` ("ipv4"/"ipv6"); the sentinel is
    /// 192.0.2.254/32 or 2001:db8:ffff::fe/128, which no fleet address uses.
    pub fn monitor(&self, j: usize, family: &str) -> io::Result<RibMonitor> {
        let sentinel = if family == "ipv6" {
            "2001:db8:ffff::fe/128"
        } else {
            "192.0.2.254/32"
        };
        let r = self
            .routers
            .get(j)
            .ok_or_else(|| io::Error::other(format!("no router {j}")))?;
        RibMonitor::start(&r.gobgpd.api(), family, sentinel)
    }

    /// An [`AddrMonitor`] on `lo` of balancer `i` (where the VIPs go); the sentinel is
    /// 192.0.2.252/32, which no fleet address uses.
    pub fn lo_monitor(&self, i: usize) -> io::Result<AddrMonitor> {
        let b = self
            .balancers
            .get(i)
            .ok_or_else(|| io::Error::other(format!("no balancer {i}")))?;
        AddrMonitor::start(&b.ns, "lo", "192.0.2.252/32")
    }

    /// `/status` of balancer `i` (JSON; null when it does not answer).
    pub fn client_status(&self, i: usize) -> serde_json::Value {
        let Some(b) = self.balancers.get(i) else {
            return serde_json::Value::Null;
        };
        b.ns.command(&self.bin().to_string_lossy())
            .arg("-c")
            .arg(b.dir.join("config.ini"))
            .args(["status", "--json"])
            .output()
            .ok()
            .and_then(|out| serde_json::from_slice(&out.stdout).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// `/status` of the arbiter (JSON; null when it does not answer).
    pub fn arbiter_status(&self) -> serde_json::Value {
        self.core
            .command(&self.bin().to_string_lossy())
            .arg("-c")
            .arg(self.arbiter_dir.join("config.ini"))
            .args(["status", "--json"])
            .output()
            .ok()
            .and_then(|out| serde_json::from_slice(&out.stdout).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The cluster node a daemon's `/status` document says it is connected to (its
    /// `broker.node`, by index in [`crate::RabbitCluster::nodes`]); `None` while it is
    /// not connected, or on a fleet with one broker.
    pub fn broker_node(&self, status: &serde_json::Value) -> Option<usize> {
        if status["broker"]["connected"] != true {
            return None;
        }
        let node = status["broker"]["node"].as_str()?;
        self.cluster().ok()?.index_of(node)
    }

    /// Addresses on `lo` of balancer `i`, as `ip -br addr show dev lo` prints them.
    pub fn lo_addrs(&self, i: usize) -> String {
        self.balancers
            .get(i)
            .and_then(|b| b.ns.ip(&["-br", "addr", "show", "dev", "lo"]).ok())
            .unwrap_or_default()
    }

    /// The Prometheus `/metrics` page of balancer `i`.
    pub fn client_metrics(&self, i: usize) -> String {
        self.balancers
            .get(i)
            .map(|b| http_get(&b.ns, b.http, "/metrics"))
            .unwrap_or_default()
    }

    /// The Prometheus `/metrics` page of the arbiter.
    pub fn arbiter_metrics(&self) -> String {
        http_get(&self.core, 9100, "/metrics")
    }

    /// Balancer `i`'s queue (`ipvs-sync.HOST`), per `rabbitmqctl list_queues`.
    pub fn client_queue(&self, i: usize) -> io::Result<QueueState> {
        let host = self.balancers.get(i).map_or("", |b| b.name.as_str());
        self.queue(&format!("ipvs-sync.{host}"))
    }

    /// The arbiter's queue (`lbs`: every balancer's messages to it).
    pub fn arbiter_queue(&self) -> io::Result<QueueState> {
        self.queue("lbs")
    }

    /// A queue of the broker, per `rabbitmqctl list_queues`.
    pub fn queue(&self, name: &str) -> io::Result<QueueState> {
        let out = self.broker.ctl(&[
            "list_queues",
            "-p",
            self.broker.vhost(),
            "-q",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ])?;
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| {
                Some(QueueState {
                    ready: f.get(1)?.parse().ok()?,
                    unacked: f.get(2)?.parse().ok()?,
                    consumers: f.get(3)?.parse().ok()?,
                })
            })
            .ok_or_else(|| io::Error::other(format!("no queue {name} in:\n{out}")))
    }
}
