//! What the two daemons share: start-up errors, signals, the outbound message queue, the
//! broker connection loop, metrics, the HTTP endpoint, systemd notification and the quorum
//! hand-off socket.

pub mod bus;
pub mod control;
pub mod http;
pub mod memory_bus;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod quorum_socket;
pub mod state_file;
pub mod status;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::wire::counters::Counters;
use crate::wire::{self, Incoming, Role, Transport, TransportOptions, WireError};
pub use outbox::Outbox;

use metrics::Metrics;

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
    /// BFD could not start (its port taken, a peer refused).
    #[error("BFD: {0}")]
    Bfd(bfd::BfdError),
    /// The broker settings are unusable (bad URL, key).
    #[error("AMQP: {0}")]
    Amqp(WireError),
    /// `node_key` is unusable.
    #[error("secret.ini node_key: {0}")]
    Key(wire::KeyError),
    /// The quorum socket cannot be bound.
    #[error("quorum_socket {0}: {1}")]
    QuorumSocket(String, std::io::Error),
    /// The control socket cannot be bound.
    #[error("control_socket {0}: {1}")]
    ControlSocket(String, std::io::Error),
    /// A worker thread cannot be started.
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
}

impl From<config::ConfigError> for StartError {
    fn from(e: config::ConfigError) -> Self {
        StartError::Config(Box::new(e))
    }
}

/// Stop and reload requests: SIGTERM/SIGINT flip `stop`, SIGHUP sends on `reload`, SIGUSR2
/// flips `restart`.
pub struct Shutdown {
    /// Becomes `true` once; a daemon stops when it changes.
    pub stop: watch::Receiver<bool>,
    /// One item per SIGHUP.
    pub reload: mpsc::Receiver<()>,
    /// Becomes `true` once: a balancer with `[bgp] graceful_restart` exits for a graceful
    /// restart (RFC 4724), leaving its routes, addresses and IPVS to the next process.
    pub restart: watch::Receiver<bool>,
}

/// The sending side of a [`Shutdown`] (tests and the signal task).
pub struct ShutdownHandle {
    stop: watch::Sender<bool>,
    reload: mpsc::Sender<()>,
    restart: watch::Sender<bool>,
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
    /// Asks a balancer to exit for a graceful restart.
    pub fn restart(&self) {
        let _ = self.restart.send(true);
    }
}

impl Shutdown {
    /// A pair driven by hand.
    pub fn manual() -> (ShutdownHandle, Shutdown) {
        let (stop_tx, stop) = watch::channel(false);
        let (reload_tx, reload) = mpsc::channel(4);
        let (restart_tx, restart) = watch::channel(false);
        (
            ShutdownHandle {
                stop: stop_tx,
                reload: reload_tx,
                restart: restart_tx,
            },
            Shutdown {
                stop,
                reload,
                restart,
            },
        )
    }

    /// Driven by SIGTERM, SIGINT (stop), SIGHUP (reload) and SIGUSR2 (graceful restart).
    pub fn from_signals() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{signal, SignalKind};
        let (h, s) = Shutdown::manual();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr2 = signal(SignalKind::user_defined2())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { info!("SIGTERM: stopping"); h.stop(); }
                    _ = int.recv() => { info!("SIGINT: stopping"); h.stop(); }
                    _ = hup.recv() => { info!("SIGHUP: reloading the configuration"); h.reload(); }
                    _ = usr2.recv() => { info!("SIGUSR2: graceful restart asked for"); h.restart(); }
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
pub async fn observability(
    cfg: &config::Config,
    role: metrics::Role,
) -> Result<(Metrics, http::StatusDoc), StartError> {
    let metrics = Metrics::new(role);
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
/// firing a burst of missed ticks. Periods under a millisecond are taken as one (the config
/// refuses them; this keeps a zero from anywhere else from panicking the daemon).
pub fn interval(d: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(d.max(Duration::from_millis(1)));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Dropped incoming messages by reason, for `/status`.
pub fn dropped(c: &Counters) -> std::collections::BTreeMap<String, u64> {
    c.snapshot()
        .dropped
        .into_iter()
        .map(|(r, n)| (r.to_string(), n))
        .collect()
}
