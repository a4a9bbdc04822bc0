//! The `/status` document: one typed value the daemon publishes, `ipvs-sync status` prints and
//! `ipvs-sync monitor` judges (the JSON on the wire is this type's serde form).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The document of either daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Status {
    /// A balancer's.
    Client(ClientStatus),
    /// The arbiter's.
    Server(ServerStatus),
}

impl Status {
    /// What both daemons report.
    pub fn common(&self) -> &Common {
        match self {
            Status::Client(c) => &c.common,
            Status::Server(s) => &s.common,
        }
    }

    /// `client` or `server`.
    pub fn role(&self) -> &'static str {
        match self {
            Status::Client(_) => "client",
            Status::Server(_) => "server",
        }
    }
}

/// What both daemons report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Common {
    /// This node's name.
    pub hostname: String,
    /// Software version.
    #[serde(default)]
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_s: f64,
    /// The broker connection.
    pub broker: Broker,
    /// Internal queues and their depth.
    #[serde(default)]
    pub queues: BTreeMap<String, u64>,
    /// Received messages dropped, by reason.
    #[serde(default)]
    pub dropped: BTreeMap<String, u64>,
    /// Periodic work and how recently it succeeded.
    #[serde(default)]
    pub workers: BTreeMap<String, Worker>,
    /// Each sender's clock offset against ours, measured from its signed messages.
    #[serde(default)]
    pub clocks: Vec<crate::wire::PeerClock>,
}

/// The broker connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Broker {
    /// Whether it is up.
    pub connected: bool,
    /// `host:port` of the broker node in use (one of `amqp_server`'s), while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A periodic job of a daemon.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    /// Seconds since it last succeeded (`None`: never).
    pub age_s: Option<f64>,
    /// How often it runs.
    pub interval_s: f64,
    /// Its last failure, while it keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A balancer's document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientStatus {
    /// What both daemons report.
    #[serde(flatten)]
    pub common: Common,
    /// Age of the arbiter's last heartbeat.
    pub last_heartbeat_age_s: Option<f64>,
    /// Serial of the arbiter's tree this balancer's kernel has (its heartbeats say the
    /// same; while IPVS work fails, the last one applied without a failure, 0 for none).
    pub tree_serial: u64,
    /// BGP peers.
    pub peers: Vec<PeerRow>,
    /// This balancer's VIPs.
    pub vips: Vec<ClientVip>,
    /// The fallback to the balancer's own keepalived (`None`: `fallback_after = 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackRow>,
}

/// Where the fallback to the balancer's own keepalived is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FallbackRow {
    /// `normal`, `fallback`, `recovering` or `handing_back`.
    pub phase: String,
    /// Seconds since the fallback started (not `normal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_s: Option<f64>,
    /// Whether keepalived configs for this balancer exist (without them there is nothing to
    /// fall back to).
    pub configs: bool,
    /// keepalived's pid while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalived_pid: Option<u32>,
    /// How often the fallback was entered since the start.
    pub entered: u64,
}

/// One BGP peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    /// `[bgp.peer.NAME]`.
    pub name: String,
    /// Its address.
    pub address: Option<IpAddr>,
    /// Its AS.
    pub remote_as: u32,
    /// FSM state.
    pub state: String,
    /// Seconds Established.
    pub uptime_s: Option<f64>,
    /// Seconds not Established (since the last session ended, or the start).
    #[serde(default)]
    pub down_s: Option<f64>,
    /// Configured hold time, seconds.
    #[serde(default)]
    pub hold_time_s: f64,
    /// Prefixes the peer holds from us.
    pub routes_sent: usize,
    /// UPDATEs sent.
    #[serde(default)]
    pub updates_sent: u64,
    /// Malformed messages received.
    #[serde(default)]
    pub malformed_in: u64,
    /// Last error.
    pub last_error: Option<String>,
    /// The BFD session beside it (peers with `bfd = true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdRow>,
}

/// A BGP peer's BFD session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BfdRow {
    /// `down`, `init`, `up`, `admin_down`.
    pub state: String,
    /// Negotiated transmit interval, milliseconds.
    pub tx_interval_ms: Option<f64>,
    /// Detection time in use, milliseconds.
    pub detection_ms: Option<f64>,
    /// Our last diagnostic (RFC 5880 §4.1).
    pub diag: String,
    /// Downs the dampening remembers (an Up after a flap is held back meanwhile).
    pub flaps: u32,
}

/// One VIP of a balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientVip {
    /// The VIP.
    pub vip: IpAddr,
    /// Its announce state (`idle`, `preparing`, `acked`, `announced`).
    pub state: String,
    /// LOCAL_PREF announced.
    pub local_pref: Option<u32>,
    /// Its drain, when it is drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainRow>,
}

/// A drained VIP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainRow {
    /// `announcing drained`, `waiting for connections`, `withdrawn`.
    pub step: String,
    /// Its connections at the last count.
    pub conns: Option<u64>,
    /// Seconds since the drain started.
    pub since_s: f64,
}

/// The arbiter's document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// What both daemons report.
    #[serde(flatten)]
    pub common: Common,
    /// Serial of its tree.
    pub tree_serial: u64,
    /// Services in its tree.
    pub services: usize,
    /// Why it answers no balancer yet, if it does not.
    pub holding: Option<String>,
    /// VIPs and their quorum.
    pub vips: Vec<ServerVip>,
    /// Live balancers.
    pub clients: Vec<ClientRow>,
    /// The last quorum handler failure.
    #[serde(default)]
    pub quorum_failure: Option<QuorumFailure>,
    /// VIPs withdrawn because their `quorum down` could not be recorded.
    #[serde(default)]
    pub forced_withdrawn: Vec<IpAddr>,
    /// `withdraw_limit` as configured (`None`: off).
    #[serde(default)]
    pub withdraw_limit: Option<String>,
}

/// One VIP on the arbiter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerVip {
    /// The VIP.
    pub vip: IpAddr,
    /// It is announced: its desc says announce (or its withdrawal is held).
    pub announce: bool,
    /// Its LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// Ports with quorum, per its desc file.
    #[serde(default)]
    pub active: Option<u32>,
    /// Ports it has, per its desc file.
    #[serde(default)]
    pub total: Option<u32>,
    /// Seconds since its quorum last changed (as this arbiter saw it).
    #[serde(default)]
    pub since_s: Option<f64>,
    /// Its withdrawal is held by `withdraw_limit`: since when (seconds) and why.
    #[serde(default)]
    pub held: Option<HeldRow>,
    /// Each balancer the mapping gives it.
    #[serde(default)]
    pub balancers: Vec<VipBalancer>,
}

/// A held withdrawal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldRow {
    /// Seconds held.
    pub since_s: f64,
    /// `quorum lost` or `mapping shrink`.
    pub because: String,
}

/// One balancer's announce of one VIP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VipBalancer {
    /// The balancer.
    pub name: String,
    /// `syn sent`, `acked`, `announced`, `withdrawn`, `gone`, or `-` (nothing yet).
    pub stage: String,
    /// Seconds in that stage.
    pub since_s: Option<f64>,
}

/// One balancer the arbiter knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRow {
    /// Its hostname.
    pub name: String,
    /// Age of its last message (`None`: not heard from while this arbiter runs, or
    /// forgotten since).
    #[serde(default)]
    pub age_s: Option<f64>,
    /// VIPs the mapping gives it.
    pub vips: usize,
    /// Of those, the VIPs with quorum.
    #[serde(default)]
    pub quorate: usize,
    /// VIPs its heartbeat says it announces.
    #[serde(default)]
    pub announced: usize,
    /// Tree serial it applied.
    #[serde(default)]
    pub serial: Option<u64>,
    /// How many tree changes it is behind (0: current).
    #[serde(default)]
    pub lag: Option<u64>,
    /// Seconds since it started.
    #[serde(default)]
    pub uptime_s: u64,
    /// It is live (heard from within `consumer_alive_ttl`).
    #[serde(default)]
    pub live: bool,
    /// It is drained.
    #[serde(default)]
    pub drained: bool,
}

/// A quorum handler failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuorumFailure {
    /// Seconds ago.
    pub age_s: f64,
    /// For which VIP.
    pub vip: IpAddr,
    /// What failed.
    pub error: String,
}

/// The document a daemon serves, replaced by its loop every status tick.
#[derive(Clone, Default)]
pub struct StatusDoc(Arc<Mutex<Option<Status>>>);

impl StatusDoc {
    /// Replaces the document.
    pub fn set(&self, s: Status) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    /// A copy of the current document (`None` before the first tick).
    pub fn get(&self) -> Option<Status> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_json_form_carries_the_role_and_reads_back() {
        let s = Status::Client(ClientStatus {
            common: Common {
                hostname: "lb1".into(),
                ..Common::default()
            },
            tree_serial: 7,
            ..ClientStatus::default()
        });
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["role"], "client");
        assert_eq!(j["hostname"], "lb1");
        assert_eq!(j["tree_serial"], 7);
        let back: Status = serde_json::from_value(j).unwrap();
        assert_eq!(back, s);
    }
}
