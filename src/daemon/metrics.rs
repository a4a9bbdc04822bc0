//! Every metric a daemon exports, declared once at start with `prometheus-client`.
//!
//! Names carry their unit (`_seconds`) and counters end in `_total`; latencies are
//! histograms. Labels come from one small vocabulary, each with a bounded set of values:
//! `type` (a message type), `reason` (why a message was dropped), `why` (why a send failed),
//! `event` (an announce-machine event), `peer` (a configured BGP peer name), `version`
//! (`build_info`). Nothing read from a message, a file or an error becomes a label value.
//!
//! A daemon registers the families of its role ([`Role::Client`] or [`Role::Server`]) plus the
//! common ones; [`Metrics`] still has every field, so code shared by both roles never needs
//! to ask which it is.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::wire::counters::CountersSnapshot;

/// Which daemon the registry serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A balancer.
    Client,
    /// The arbiter.
    Server,
}

/// `type` label: a message type (its envelope name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// The type.
    pub r#type: &'static str,
}

/// `reason` label: why a received message was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: &'static str,
}

/// `why` label: why a send failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhyLabel {
    /// Why.
    pub why: SendFailure,
}

/// Why a send failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SendFailure {
    /// No queue bound to the routing key.
    unroutable,
    /// The broker nacked it, or its confirm never came.
    confirm,
}

/// `event` label: an announce-machine event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// The event.
    pub event: &'static str,
}

/// `node` label: a broker node of `amqp_server`, `host:port`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// `host:port`.
    pub node: String,
}

/// `peer` label: a configured BGP peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// Its `[bgp.peer.NAME]`.
    pub peer: String,
}

/// `lane` label: which of the node's queues at the broker (`main` or `announce`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabel {
    /// The lane.
    pub lane: &'static str,
}

/// `build_info` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    /// Package version.
    pub version: &'static str,
}

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Latency buckets from 0.5 ms to ~16 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16)
}

/// A latency histogram with the buckets of [`latency_buckets`].
#[derive(Clone, Debug)]
pub struct Latency(Histogram);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new(latency_buckets()))
    }
}

impl std::ops::Deref for Latency {
    type Target = Histogram;
    fn deref(&self) -> &Histogram {
        &self.0
    }
}

/// Every family; the fields a role does not register are never exported.
#[derive(Default)]
pub struct Families {
    // --- both daemons
    /// Package version, value 1.
    pub build_info: Family<BuildLabel, Gauge>,
    /// Verified messages received, by type.
    pub messages_received: Family<TypeLabel, Counter>,
    /// Messages sent and confirmed, by type.
    pub messages_sent: Family<TypeLabel, Counter>,
    /// Messages dropped on receipt, by reason.
    pub messages_dropped: Family<ReasonLabel, Counter>,
    /// Messages of a type the receiver does not take, by type.
    pub messages_ignored: Family<TypeLabel, Counter>,
    /// Messages dropped because the outbound queue was full, by type.
    pub outbox_dropped: Family<TypeLabel, Counter>,
    /// Sends that failed, by why.
    pub send_failures: Family<WhyLabel, Counter>,
    /// 1 while the broker connection is up.
    pub broker_connected: Gauge,
    /// Broker reconnections.
    pub broker_reconnects: Counter,
    /// 1 for the broker node the connection goes to, 0 for nodes used before.
    pub broker_node: Family<NodeLabel, Gauge>,
    /// The node `broker_node` shows as in use.
    broker_node_last: std::sync::Mutex<Option<String>>,
    /// Each sender's wall clock minus ours, measured from its messages (never used to drop
    /// them), by sender.
    pub peer_clock_offset: Family<PeerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Messages waiting to be sent or confirmed.
    pub outbox_depth: Gauge,
    /// Messages waiting in this node's queues at the broker, by lane (as of the last look).
    pub broker_queue_depth: Family<LaneLabel, Gauge>,
    /// VIPs announced (client) or with announce=true (server).
    pub vips_announced: Gauge,
    /// IPVS operations or reconciles and dumps that failed.
    pub ipvs_failures: Counter,
    // --- client
    /// 1 while the BGP session with the peer is Established.
    pub bgp_peer_up: Family<PeerLabel, Gauge>,
    /// BGP sessions that came up, by peer.
    pub bgp_session_ups: Family<PeerLabel, Counter>,
    /// 1 while the BFD session with the peer is Up (peers with `bfd = true`).
    pub bfd_session_up: Family<PeerLabel, Gauge>,
    /// Established BGP sessions that ended, by peer.
    pub bgp_session_downs: Family<PeerLabel, Counter>,
    /// VIP announces handed to the speaker.
    pub bgp_announces: Counter,
    /// VIP withdraws handed to the speaker.
    pub bgp_withdraws: Counter,
    /// Age of the arbiter's last heartbeat.
    pub last_heartbeat_age: F64Gauge,
    /// syn_announce received → the VIP announced.
    pub announce_latency: Latency,
    /// fin_announce received → the withdraw written to every Established peer.
    pub withdraw_latency: Latency,
    /// Durations of IPVS reconciles (dump, diff, apply).
    pub ipvs_apply: Latency,
    /// IPVS operations planned.
    pub ipvs_ops: Counter,
    /// Prepares (firewall, services, address) that failed.
    pub prepare_failures: Counter,
    /// Announce-machine events, by event.
    pub announce_events: Family<EventLabel, Counter>,
    /// syn_announce for a VIP the mapping does not give this balancer.
    pub announce_refused: Counter,
    /// Announces whose VIP communities did not fit an UPDATE beside the speaker's.
    pub communities_refused: Counter,
    /// Announces asked for again because a VIP waited too long for its go.
    pub ack_repairs: Counter,
    /// Everything asked for again because messages arrived stale.
    pub stale_resyncs: Counter,
    /// Fallbacks to the balancer's own keepalived entered.
    pub fallback_entered: Counter,
    /// Fallbacks left (IPVS and announces taken back from keepalived).
    pub fallback_left: Counter,
    /// Whether the balancer is in fallback now (1) or not (0).
    pub fallback_active: Gauge,
    /// Times the arbiter was silent past `fallback_after` with no keepalived config to fall
    /// back to.
    pub fallback_unavailable: Counter,
    /// Quorum calls of the balancer's keepalived taken in fallback.
    pub fallback_quorum_calls: Counter,
    /// Trees older than the mirror, ignored.
    pub old_trees: Counter,
    /// Answers nobody asked for, ignored, by type.
    pub unsolicited: Family<TypeLabel, Counter>,
    /// Files of a sync answer refused.
    pub sync_refused: Counter,
    /// execute messages refused or failed.
    pub execute_refused: Counter,
    // --- server
    /// Live balancers.
    pub clients_live: Gauge,
    /// Serial of the arbiter's tree.
    pub tree_serial: Gauge,
    /// How long the arbiter's last dump of its IPVS table took.
    pub ipvs_dump_seconds: F64Gauge,
    /// 1 while the arbiter answers no balancer yet.
    pub holding: Gauge,
    /// Withdrawals held by `withdraw_limit`, waiting for `ipvs-sync release`.
    pub withdrawals_held: Gauge,
    /// Balancer messages left unanswered while holding, by type.
    pub held_messages: Family<TypeLabel, Counter>,
    /// ack_announce refused.
    pub ack_refused: Counter,
    /// VIPs a balancer announced against the desc or mapping, withdrawn again.
    pub fin_repairs: Counter,
    /// VIPs a balancer left out of its heartbeats, syn_announce again.
    pub syn_repairs: Counter,
    /// Desc scans that looked at every file.
    pub desc_full_scans: Counter,
    /// Desc files that could not be read or parsed.
    pub desc_errors: Counter,
    /// Mapping rebuilds that failed.
    pub mapping_errors: Counter,
    /// Quorum handler failures reported by hand-off.
    pub quorum_handler_failures: Counter,
    /// Durations of the arbiter's IPVS dumps.
    pub ipvs_dump: Latency,
}

/// The registry and its families; clones share them.
#[derive(Clone)]
pub struct Metrics {
    families: Arc<Families>,
    registry: Arc<Registry>,
}

impl std::ops::Deref for Metrics {
    type Target = Families;
    fn deref(&self) -> &Families {
        &self.families
    }
}

impl Metrics {
    /// Declares the families of `role` and the common ones.
    pub fn new(role: Role) -> Metrics {
        let f = Families::default();
        let mut r = Registry::with_prefix("ipvs_sync");
        f.build_info
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register(
            "build_info",
            "Package version (value 1)",
            f.build_info.clone(),
        );
        let c = |r: &mut Registry, name: &str, help: &str, m: Counter| r.register(name, help, m);
        r.register(
            "messages_received",
            "Verified messages received, by type",
            f.messages_received.clone(),
        );
        r.register(
            "messages_sent",
            "Messages sent and confirmed by the broker, by type",
            f.messages_sent.clone(),
        );
        r.register(
            "messages_dropped",
            "Messages dropped on receipt, by reason",
            f.messages_dropped.clone(),
        );
        r.register(
            "messages_ignored",
            "Messages of a type this daemon does not take, by type",
            f.messages_ignored.clone(),
        );
        r.register(
            "outbox_dropped",
            "Messages dropped because the outbound queue was full, by type",
            f.outbox_dropped.clone(),
        );
        r.register(
            "send_failures",
            "Sends that failed: unroutable, or no confirm",
            f.send_failures.clone(),
        );
        r.register(
            "broker_connected",
            "1 while the broker connection is up",
            f.broker_connected.clone(),
        );
        c(
            &mut r,
            "broker_reconnects",
            "Broker reconnections",
            f.broker_reconnects.clone(),
        );
        r.register(
            "broker_node",
            "1 for the broker node in use (host:port), 0 for nodes used before",
            f.broker_node.clone(),
        );
        r.register_with_unit(
            "peer_clock_offset",
            "Each sender's wall clock minus ours, measured from its messages",
            Unit::Seconds,
            f.peer_clock_offset.clone(),
        );
        r.register(
            "outbox_depth",
            "Messages waiting to be sent or confirmed",
            f.outbox_depth.clone(),
        );
        r.register(
            "broker_queue_depth",
            "Messages waiting in this node's queues at the broker, by lane",
            f.broker_queue_depth.clone(),
        );
        r.register(
            "vips_announced",
            "VIPs announced (balancer) or whose desc says announce (arbiter)",
            f.vips_announced.clone(),
        );
        c(
            &mut r,
            "ipvs_failures",
            "IPVS operations, reconciles or dumps that failed",
            f.ipvs_failures.clone(),
        );
        match role {
            Role::Client => register_client(&mut r, &f),
            Role::Server => register_server(&mut r, &f),
        }
        Metrics {
            families: Arc::new(f),
            registry: Arc::new(r),
        }
    }

    /// The text exposition (OpenMetrics, which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Marks `node` as the broker node in use (1) and every node seen before as not (0);
    /// `None` (no connection) leaves all at 0.
    pub fn export_broker_node(&self, node: Option<String>) {
        let mut last = self
            .broker_node_last
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *last == node {
            return;
        }
        if let Some(old) = last.take() {
            self.broker_node
                .get_or_create(&NodeLabel { node: old })
                .set(0);
        }
        if let Some(n) = &node {
            self.broker_node
                .get_or_create(&NodeLabel { node: n.clone() })
                .set(1);
        }
        *last = node;
    }

    /// Sets each sender's clock offset (senders no longer heard keep their last value).
    pub fn export_clocks(&self, clocks: &[crate::wire::PeerClock]) {
        for c in clocks {
            self.peer_clock_offset
                .get_or_create(&PeerLabel {
                    peer: c.peer.clone(),
                })
                .set(c.offset_ms as f64 / 1000.0);
        }
    }

    /// Sets the broker queue depth gauges, and returns them as `/status` lists its queues
    /// (`broker:QUEUE`), beside the daemon's own queues in `queues`.
    pub fn export_queue_depths(
        &self,
        depths: &[crate::wire::amqp::QueueDepth],
        queues: &mut std::collections::BTreeMap<String, u64>,
    ) {
        for q in depths {
            self.broker_queue_depth
                .get_or_create(&LaneLabel {
                    lane: q.lane.label(),
                })
                .set(i64::try_from(q.depth).unwrap_or(i64::MAX));
            queues.insert(format!("broker:{}", q.queue), q.depth);
        }
    }

    /// Brings the transport's counters up to `now` (they count on their own; `last` is what
    /// was exported before and becomes `now`).
    pub fn export_bus(&self, last: &mut Option<CountersSnapshot>, now: CountersSnapshot) {
        fn before(l: &Option<Vec<(&'static str, u64)>>, key: &str) -> u64 {
            l.iter()
                .flatten()
                .find(|(k, _)| *k == key)
                .map_or(0, |(_, n)| *n)
        }
        let prev = last.take();
        let (recv, sent, drop) = (
            prev.as_ref().map(|p| p.received.clone()),
            prev.as_ref().map(|p| p.sent.clone()),
            prev.as_ref().map(|p| p.dropped.clone()),
        );
        for (kind, n) in &now.received {
            self.messages_received
                .get_or_create(&of_type(kind))
                .inc_by(n.saturating_sub(before(&recv, kind)));
        }
        for (kind, n) in &now.sent {
            self.messages_sent
                .get_or_create(&of_type(kind))
                .inc_by(n.saturating_sub(before(&sent, kind)));
        }
        for (reason, n) in &now.dropped {
            self.messages_dropped
                .get_or_create(&ReasonLabel { reason })
                .inc_by(n.saturating_sub(before(&drop, reason)));
        }
        let (reconnects, unroutable, confirms) = prev.as_ref().map_or((0, 0, 0), |p| {
            (p.reconnects, p.unroutable, p.confirms_failed)
        });
        self.broker_reconnects
            .inc_by(now.reconnects.saturating_sub(reconnects));
        self.send_failures
            .get_or_create(&WhyLabel {
                why: SendFailure::unroutable,
            })
            .inc_by(now.unroutable.saturating_sub(unroutable));
        self.send_failures
            .get_or_create(&WhyLabel {
                why: SendFailure::confirm,
            })
            .inc_by(now.confirms_failed.saturating_sub(confirms));
        *last = Some(now);
    }
}

fn register_client(r: &mut Registry, f: &Families) {
    r.register(
        "bfd_session_up",
        "1 while the BFD session with the peer is Up",
        f.bfd_session_up.clone(),
    );
    r.register(
        "bgp_peer_up",
        "1 while the BGP session with the peer is Established",
        f.bgp_peer_up.clone(),
    );
    r.register(
        "bgp_session_ups",
        "BGP sessions that reached Established, by peer",
        f.bgp_session_ups.clone(),
    );
    r.register(
        "bgp_session_downs",
        "Established BGP sessions that ended, by peer",
        f.bgp_session_downs.clone(),
    );
    r.register(
        "bgp_announces",
        "VIP announces handed to the speaker",
        f.bgp_announces.clone(),
    );
    r.register(
        "bgp_withdraws",
        "VIP withdraws handed to the speaker",
        f.bgp_withdraws.clone(),
    );
    r.register_with_unit(
        "last_heartbeat_age",
        "Age of the arbiter's last heartbeat",
        Unit::Seconds,
        f.last_heartbeat_age.clone(),
    );
    r.register_with_unit(
        "announce_latency",
        "syn_announce received to the VIP announced (the go included)",
        Unit::Seconds,
        f.announce_latency.0.clone(),
    );
    r.register_with_unit(
        "withdraw_latency",
        "fin_announce received to the withdraw written to every Established peer",
        Unit::Seconds,
        f.withdraw_latency.0.clone(),
    );
    r.register_with_unit(
        "ipvs_apply",
        "IPVS reconciles: dump, diff and apply",
        Unit::Seconds,
        f.ipvs_apply.0.clone(),
    );
    r.register("ipvs_ops", "IPVS operations planned", f.ipvs_ops.clone());
    r.register(
        "prepare_failures",
        "VIP prepares (firewall check, IPVS services, address) that failed; the VIP stays idle until the arbiter's next syn_announce",
        f.prepare_failures.clone(),
    );
    r.register(
        "announce_events",
        "Unusual announce-machine events, by event",
        f.announce_events.clone(),
    );
    r.register(
        "announce_refused",
        "syn_announce for a VIP the mapping does not give this balancer",
        f.announce_refused.clone(),
    );
    r.register(
        "communities_refused",
        "Announces whose VIP communities did not fit one BGP UPDATE beside the speaker-wide ones; the route went out without them",
        f.communities_refused.clone(),
    );
    r.register(
        "ack_repairs",
        "Announces asked for again because a VIP waited 10 s for its go",
        f.ack_repairs.clone(),
    );
    r.register(
        "stale_resyncs",
        "Mapping, tree and announces asked for again because messages arrived stale",
        f.stale_resyncs.clone(),
    );
    r.register(
        "fallback_entered",
        "Fallbacks to the balancer's own keepalived entered (the arbiter silent for fallback_after)",
        f.fallback_entered.clone(),
    );
    r.register(
        "fallback_left",
        "Fallbacks left: the arbiter answered for fallback_recover and IPVS was taken back",
        f.fallback_left.clone(),
    );
    r.register(
        "fallback_active",
        "1 while the balancer's own keepalived owns IPVS and the announces",
        f.fallback_active.clone(),
    );
    r.register(
        "fallback_unavailable",
        "Times the arbiter was silent past fallback_after with no keepalived config for this balancer",
        f.fallback_unavailable.clone(),
    );
    r.register(
        "fallback_quorum_calls",
        "Quorum calls of the balancer's own keepalived acted on in fallback",
        f.fallback_quorum_calls.clone(),
    );
    r.register(
        "old_trees",
        "Trees older than the mirror of the same arbiter run, ignored",
        f.old_trees.clone(),
    );
    r.register(
        "unsolicited",
        "Answers nobody asked for, ignored, by type",
        f.unsolicited.clone(),
    );
    r.register(
        "sync_refused",
        "Files of a sync answer refused",
        f.sync_refused.clone(),
    );
    r.register(
        "execute_refused",
        "execute messages refused or failed",
        f.execute_refused.clone(),
    );
}

fn register_server(r: &mut Registry, f: &Families) {
    r.register("clients_live", "Live balancers", f.clients_live.clone());
    r.register(
        "withdrawals_held",
        "Withdrawals held by withdraw_limit until ipvs-sync release",
        f.withdrawals_held.clone(),
    );
    r.register(
        "tree_serial",
        "Serial of the arbiter's IPVS tree",
        f.tree_serial.clone(),
    );
    r.register_with_unit(
        "ipvs_dump",
        "How long the last dump of the arbiter's IPVS table took (a dump over [server] ipvs_dump_share of the 1 s poll is followed by a pause that keeps that share)",
        Unit::Seconds,
        f.ipvs_dump_seconds.clone(),
    );
    r.register(
        "holding",
        "1 while the arbiter answers no balancer yet (startup_hold, mapping, desc files or tree unread)",
        f.holding.clone(),
    );
    r.register(
        "held_messages",
        "Balancer messages left unanswered while holding, by type",
        f.held_messages.clone(),
    );
    r.register(
        "ack_refused",
        "ack_announce refused (no quorum, or not mapped)",
        f.ack_refused.clone(),
    );
    r.register(
        "fin_repairs",
        "VIPs a balancer's heartbeat listed as announced against the desc or mapping, sent fin_announce again",
        f.fin_repairs.clone(),
    );
    r.register(
        "syn_repairs",
        "VIPs a balancer should announce but had not listed in its heartbeats for 15 s, sent syn_announce again",
        f.syn_repairs.clone(),
    );
    r.register(
        "desc_full_scans",
        "Desc scans that looked at every file (the rest look only at what inotify named)",
        f.desc_full_scans.clone(),
    );
    r.register(
        "desc_errors",
        "Desc files that could not be read or parsed",
        f.desc_errors.clone(),
    );
    r.register(
        "mapping_errors",
        "Mapping rebuilds that failed (the previous mapping stays)",
        f.mapping_errors.clone(),
    );
    r.register(
        "quorum_handler_failures",
        "Quorum handler calls that could not record their call in the desc file",
        f.quorum_handler_failures.clone(),
    );
    r.register_with_unit(
        "ipvs_dump",
        "Dumps of the arbiter's IPVS table",
        Unit::Seconds,
        f.ipvs_dump.0.clone(),
    );
}

/// A `type` label.
pub fn of_type(t: &'static str) -> TypeLabel {
    TypeLabel { r#type: t }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn renders_typed_families_with_units_and_totals() {
        let m = Metrics::new(Role::Client);
        m.messages_sent
            .get_or_create(&of_type("fin_announce"))
            .inc();
        m.bgp_peer_up
            .get_or_create(&PeerLabel { peer: "r1".into() })
            .set(1);
        m.withdraw_latency.observe(0.002);
        m.last_heartbeat_age.set(1.5);
        let page = m.render();
        assert!(
            page.contains("ipvs_sync_messages_sent_total{type=\"fin_announce\"} 1"),
            "{page}"
        );
        assert!(
            page.contains("ipvs_sync_bgp_peer_up{peer=\"r1\"} 1"),
            "{page}"
        );
        assert!(
            page.contains("ipvs_sync_withdraw_latency_seconds_count 1"),
            "{page}"
        );
        assert!(
            page.contains("ipvs_sync_last_heartbeat_age_seconds 1.5"),
            "{page}"
        );
        assert!(page.contains("ipvs_sync_build_info{version="), "{page}");
        assert!(
            !page.contains("ipvs_sync_clients_live"),
            "server families stay out"
        );
        let s = Metrics::new(Role::Server);
        assert!(s.render().contains("ipvs_sync_clients_live"));
        assert!(!s.render().contains("ipvs_sync_bgp_peer_up"));
    }

    #[test]
    fn broker_queue_depths_are_exported_by_lane_and_listed_for_status() {
        use crate::wire::amqp::{Lane, QueueDepth};
        let m = Metrics::new(Role::Client);
        let mut queues = std::collections::BTreeMap::from([("outbox".to_owned(), 0)]);
        m.export_queue_depths(
            &[
                QueueDepth {
                    lane: Lane::Main,
                    queue: "ipvs-sync.lb1".into(),
                    depth: 7,
                },
                QueueDepth {
                    lane: Lane::Announce,
                    queue: "ipvs-sync-announce.lb1".into(),
                    depth: 0,
                },
            ],
            &mut queues,
        );
        let page = m.render();
        for line in [
            "ipvs_sync_broker_queue_depth{lane=\"main\"} 7",
            "ipvs_sync_broker_queue_depth{lane=\"announce\"} 0",
        ] {
            assert!(page.contains(line), "{line} missing from {page}");
        }
        assert_eq!(
            queues,
            std::collections::BTreeMap::from([
                ("outbox".to_owned(), 0),
                ("broker:ipvs-sync.lb1".to_owned(), 7),
                ("broker:ipvs-sync-announce.lb1".to_owned(), 0),
            ])
        );
    }

    #[test]
    fn bus_counters_are_exported_as_deltas() {
        use crate::wire::counters::Counters;
        use crate::wire::envelope::DropReason;
        use crate::wire::MessageType;
        let m = Metrics::new(Role::Server);
        let c = Counters::default();
        let mut last = None;
        for _ in 0..3 {
            c.add_sent(MessageType::Tree);
        }
        c.add_dropped(DropReason::Forged);
        c.add_dropped(DropReason::Forged);
        m.export_bus(&mut last, c.snapshot());
        c.add_sent(MessageType::Tree);
        c.add_sent(MessageType::Tree);
        m.export_bus(&mut last, c.snapshot());
        let page = m.render();
        assert!(
            page.contains("ipvs_sync_messages_sent_total{type=\"tree\"} 5"),
            "{page}"
        );
        assert!(
            page.contains("ipvs_sync_messages_dropped_total{reason=\"forged\"} 2"),
            "{page}"
        );
    }

    #[test]
    fn the_broker_node_in_use_is_the_one_at_1() {
        let m = Metrics::new(Role::Client);
        m.export_broker_node(Some("192.0.2.21:5672".into()));
        m.export_broker_node(Some("192.0.2.21:5672".into()));
        let page = m.render();
        assert!(
            page.contains("ipvs_sync_broker_node{node=\"192.0.2.21:5672\"} 1"),
            "{page}"
        );
        m.export_broker_node(None);
        m.export_broker_node(Some("192.0.2.22:5672".into()));
        let page = m.render();
        assert!(
            page.contains("ipvs_sync_broker_node{node=\"192.0.2.21:5672\"} 0"),
            "{page}"
        );
        assert!(
            page.contains("ipvs_sync_broker_node{node=\"192.0.2.22:5672\"} 1"),
            "{page}"
        );
    }
}
