//! What the two daemons share: start-up errors, signals, the outbound message queue, the
//! broker connection loop, metrics, the HTTP endpoint, systemd notification and the quorum
//! hand-off socket.

pub mod http;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod quorum_socket;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::wire::{self, Incoming, Role, Transport, TransportOptions, WireError};
pub use outbox::Outbox;

use metrics::{Kind, Metrics};

/// Why a daemon could not start (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config lacks something this daemon needs.
    #[error("{0}")]
    Config(Box<config::ConfigError>),
    /// `http_listen` cannot be bound.
    #[error("http_listen {0}: {1}")]
    Http(SocketAddr, std::io::Error),
    /// IPVS is not usable (with `ipvs = true`).
    #[error("{0}")]
    Ipvs(ipvs::IpvsError),
    /// The VIP interface is not usable.
    #[error("{0}")]
    Addr(announce::AddrError),
    /// A client without `[bgp] local_as` and `router_id` has nothing to announce with.
    #[error("the client announces VIPs by BGP: set [bgp] local_as and router_id and at least one [bgp.peer.NAME]")]
    NoBgp,
    /// The BGP speaker could not start.
    #[error("BGP: {0}")]
    Bgp(bgp::BgpError),
    /// The broker settings are unusable (bad URL, key).
    #[error("AMQP: {0}")]
    Amqp(WireError),
    /// `message_key` is unusable.
    #[error("secret.ini message_key: {0}")]
    Key(wire::KeyError),
    /// The quorum socket cannot be bound.
    #[error("quorum_socket {0}: {1}")]
    QuorumSocket(String, std::io::Error),
}

impl From<config::ConfigError> for StartError {
    fn from(e: config::ConfigError) -> Self {
        StartError::Config(Box::new(e))
    }
}

/// Stop and reload requests: SIGTERM/SIGINT flip `stop`, SIGHUP sends on `reload`.
pub struct Shutdown {
    /// Becomes `true` once; a daemon stops when it changes.
    pub stop: watch::Receiver<bool>,
    /// One item per SIGHUP.
    pub reload: mpsc::Receiver<()>,
}

/// The sending side of a [`Shutdown`] (tests and the signal task).
pub struct ShutdownHandle {
    stop: watch::Sender<bool>,
    reload: mpsc::Sender<()>,
}

impl ShutdownHandle {
    /// Asks the daemon to stop.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
    /// Asks the daemon to reload its config.
    pub fn reload(&self) {
        let _ = self.reload.try_send(());
    }
}

impl Shutdown {
    /// A pair driven by hand.
    pub fn manual() -> (ShutdownHandle, Shutdown) {
        let (stop_tx, stop) = watch::channel(false);
        let (reload_tx, reload) = mpsc::channel(4);
        (
            ShutdownHandle {
                stop: stop_tx,
                reload: reload_tx,
            },
            Shutdown { stop, reload },
        )
    }

    /// Driven by SIGTERM, SIGINT (stop) and SIGHUP (reload).
    pub fn from_signals() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{signal, SignalKind};
        let (h, s) = Shutdown::manual();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { info!("SIGTERM: stopping"); h.stop(); }
                    _ = int.recv() => { info!("SIGINT: stopping"); h.stop(); }
                    _ = hup.recv() => { info!("SIGHUP: reloading the configuration"); h.reload(); }
                }
            }
        });
        Ok(s)
    }
}

/// Transport options of `role` from the config.
pub fn transport_options(
    cfg: &config::Config,
    role: &Role,
) -> Result<TransportOptions, StartError> {
    TransportOptions::from_config(cfg, role).map_err(StartError::Amqp)
}

/// Connects to the broker, retrying with backoff until it works or the daemon is stopped
/// (`Ok(None)`). A broken URL is an error at once; an unreachable broker is retried, so a
/// balancer that boots before the broker simply waits for it.
pub async fn connect_transport(
    cfg: &config::Config,
    role: Role,
    shutdown: &Shutdown,
) -> Result<Option<(Transport, mpsc::Receiver<Incoming>)>, StartError> {
    let url = cfg.main.amqp_server.to_url_with(None);
    let mut delay = Duration::from_millis(200);
    let mut stop = shutdown.stop.clone();
    loop {
        match Transport::connect(&url, role.clone(), transport_options(cfg, &role)?).await {
            Ok(t) => return Ok(Some(t)),
            Err(e) if e.is_fatal() => return Err(StartError::Amqp(e)),
            Err(e) => {
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker not reachable yet")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The metrics registry and `/status` document of a daemon, served on `http_listen` if set.
pub async fn observability(cfg: &config::Config) -> Result<(Metrics, http::StatusDoc), StartError> {
    let metrics = Metrics::new();
    describe_metrics(&metrics);
    let status = http::StatusDoc::default();
    if let Some(addr) = cfg.main.http_listen {
        let l = http::bind(addr)
            .await
            .map_err(|e| StartError::Http(addr, e))?;
        tokio::spawn(http::serve(l, metrics.clone(), status.clone()));
    }
    Ok((metrics, status))
}

/// A periodic timer that, when the loop falls behind, waits a whole period again instead of
/// firing a burst of missed ticks.
pub fn interval(d: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(d);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// HELP/TYPE of the families both daemons export.
pub fn describe_metrics(m: &Metrics) {
    use Kind::*;
    for (name, kind, help) in [
        (
            "ipvs_sync_messages_received_total",
            Counter,
            "Verified messages received, by type.",
        ),
        (
            "ipvs_sync_messages_sent_total",
            Counter,
            "Messages sent and confirmed, by type.",
        ),
        (
            "ipvs_sync_messages_dropped_total",
            Counter,
            "Messages dropped on receipt, by reason.",
        ),
        (
            "ipvs_sync_outbox_dropped_total",
            Counter,
            "Messages dropped because the outbound queue was full.",
        ),
        (
            "ipvs_sync_send_failures_total",
            Counter,
            "Sends that failed (broker away, unroutable, nacked).",
        ),
        (
            "ipvs_sync_broker_connected",
            Gauge,
            "1 while the AMQP connection is up.",
        ),
        (
            "ipvs_sync_broker_reconnects_total",
            Counter,
            "AMQP reconnections.",
        ),
        (
            "ipvs_sync_broker_queue_depth",
            Gauge,
            "Messages waiting in this node's queue at the broker.",
        ),
        (
            "ipvs_sync_peer_clock_offset_seconds",
            Gauge,
            "Each sender's wall clock minus ours, measured from its messages (never used to drop them).",
        ),
        (
            "ipvs_sync_state_errors_total",
            Counter,
            "Failures to record replay marks in state_dir.",
        ),
        (
            "ipvs_sync_outbox_depth",
            Gauge,
            "Messages waiting to be sent.",
        ),
        (
            "ipvs_sync_vips_announced",
            Gauge,
            "VIPs announced to the routers (client) or with announce=true (server).",
        ),
        (
            "ipvs_sync_bgp_peer_up",
            Gauge,
            "1 while the BGP session with the peer is Established.",
        ),
        (
            "ipvs_sync_last_heartbeat_age_seconds",
            Gauge,
            "Age of the last heartbeat from the other side.",
        ),
        (
            "ipvs_sync_ipvs_apply_seconds",
            Gauge,
            "Duration of the last IPVS dump+diff+apply.",
        ),
        (
            "ipvs_sync_ipvs_ops_total",
            Counter,
            "IPVS operations planned.",
        ),
        (
            "ipvs_sync_ipvs_failures_total",
            Counter,
            "IPVS operations or reconciles that failed.",
        ),
        (
            "ipvs_sync_syn_repairs_total",
            Counter,
            "Arbiter: VIPs a balancer should announce but had not listed in its heartbeats for 15 s, sent syn_announce again.",
        ),
        (
            "ipvs_sync_desc_full_scans_total",
            Counter,
            "Arbiter: scans that looked at every desc file (the rest look only at what inotify named).",
        ),
        (
            "ipvs_sync_holding",
            Gauge,
            "Arbiter: 1 while it answers no balancer yet (startup_hold, mapping or tree unread).",
        ),
        (
            "ipvs_sync_held_messages_total",
            Counter,
            "Arbiter: balancer messages left unanswered while holding, by type.",
        ),
        (
            "ipvs_sync_prepare_failures_total",
            Counter,
            "Balancer: VIP prepares (firewall check, IPVS services, VIP address) that failed; the VIP stays idle until the arbiter's next syn_announce.",
        ),
        (
            "ipvs_sync_fin_repairs_total",
            Counter,
            "Arbiter: VIPs a balancer's heartbeat listed as announced against the desc or mapping, sent fin_announce again.",
        ),
    ] {
        m.describe(name, kind, help);
    }
}

/// Copies the transport's counters into the registry.
pub fn export_transport_counters(m: &Metrics, t: &Transport) {
    let s = t.counters().snapshot();
    for (kind, n) in s.received {
        m.set(
            "ipvs_sync_messages_received_total",
            &[("type", kind)],
            n as f64,
        );
    }
    for (kind, n) in s.sent {
        m.set("ipvs_sync_messages_sent_total", &[("type", kind)], n as f64);
    }
    for (reason, n) in s.dropped {
        m.set(
            "ipvs_sync_messages_dropped_total",
            &[("reason", reason)],
            n as f64,
        );
    }
    m.set(
        "ipvs_sync_broker_reconnects_total",
        &[],
        s.reconnects as f64,
    );
    m.set(
        "ipvs_sync_send_failures_total",
        &[("why", "unroutable")],
        s.unroutable as f64,
    );
    m.set(
        "ipvs_sync_send_failures_total",
        &[("why", "confirm")],
        s.confirms_failed as f64,
    );
    m.set(
        "ipvs_sync_send_failures_total",
        &[("why", "too_large")],
        s.too_large_to_send as f64,
    );
    m.set("ipvs_sync_state_errors_total", &[], s.state_errors as f64);
    if let Some(d) = t.queue_depth() {
        m.set("ipvs_sync_broker_queue_depth", &[], d as f64);
    }
    for p in t.clock_offsets() {
        m.set(
            "ipvs_sync_peer_clock_offset_seconds",
            &[("peer", &p.peer)],
            p.offset_ms as f64 / 1000.0,
        );
    }
}

/// Dropped incoming messages by reason, for `/status`.
pub fn dropped_json(t: &Transport) -> serde_json::Value {
    let s = t.counters().snapshot();
    serde_json::Value::Object(
        s.dropped
            .into_iter()
            .map(|(r, n)| (r.to_string(), n.into()))
            .collect(),
    )
}
