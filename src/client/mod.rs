//! `ipvs-sync client`: the balancer daemon.
//!
//! ```text
//!  Bus (broker) ─ incoming ─────────────────┐
//!  next deadline of the core ───────────────┤
//!  status tick (1 s: broker state, metrics) ┼─▶ loop ─▶ ClientState (pure: state.rs) ─▶ commands
//!  work results ────────────────────────────┤                                           │
//!  BGP peer events, SIGHUP, SIGTERM ────────┘                                           │
//!     ┌─────────────────────────────────────────────────────────────────────────────────┘
//!     ├─ Send ──────────▶ Outbox ─▶ Bus::publish
//!     ├─ Announce ──────▶ Routes (speaker; never waits)
//!     ├─ Withdraw ──────▶ Routes::withdraw ─ on the wire ─▶ result ─▶ core (grace, then removal)
//!     ├─ Prepare ───────▶ task: Firewall, Services (the VIP's), Addresses::add ─▶ result
//!     ├─ RemoveAddress ─▶ task: Addresses::remove (+ the VIP's services) ─▶ result
//!     └─ Reconcile ─────▶ kernel worker: one at a time, only the newest waits ─▶ result
//! ```
//!
//! The loop makes no decision of its own: [`state::ClientState`] decides, the loop performs.
//! Nothing it performs blocks it: kernel work, address changes and withdraws run in tasks and
//! report back, so a `fin_announce` is acted on while a large IPVS reconcile runs. While the
//! broker or the arbiter is unreachable nothing is withdrawn (fail-static); after a reconnect
//! the client asks for `tree`, `mapping` and `announces` and converges.

pub mod bgp_cfg;
pub mod edges;
pub mod execute;
pub mod kernel;
pub mod state;
pub mod sync;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use announce::FirewallHook;
use announce::VipAddrs;
use ipvs::Tree;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::daemon::bus::{AmqpBus, Bus};
use crate::daemon::{self, http::StatusDoc, metrics::Metrics, Outbox, Shutdown};
use crate::wire::envelope::DropReason;
use crate::wire::{Incoming, Role};
use edges::{Addresses, Firewall, Routes, Services};
use kernel::{Applied, Kernel};
use state::{ClientState, Cmd, Note, Settings};

/// Everything the client touches outside itself.
pub struct Edges {
    /// The BGP speaker.
    pub routes: Arc<dyn Routes>,
    /// BGP peer up/down events.
    pub peer_events: mpsc::UnboundedReceiver<bgp::PeerEvent>,
    /// VIP addresses on the announce interface.
    pub addrs: Arc<dyn Addresses>,
    /// IPVS, unless `ipvs = false`.
    pub kernel: Option<Arc<dyn Services>>,
    /// The firewall check.
    pub firewall: Arc<dyn Firewall>,
    /// The real speaker, for reloads of its peers (absent in tests).
    pub speaker: Option<bgp::Speaker>,
}

/// The reconcile worker's mailbox: the newest wanted tree and its owned VIPs.
type ReconcileSlot = watch::Sender<Option<(Tree, BTreeSet<IpAddr>)>>;

/// Results of work the loop started.
#[derive(Debug)]
enum Done {
    Prepared {
        vip: IpAddr,
        attempt: u64,
        result: Result<(), String>,
    },
    Withdrawn {
        vip: IpAddr,
        ticket: u64,
    },
    Removed {
        vip: IpAddr,
        result: Result<(), String>,
    },
    Reconciled(Result<Applied, String>),
}

/// Runs the client until `shutdown` fires, on the real speaker, netlink and broker.
/// `Err` = could not start.
pub async fn run(cfg: config::Config, shutdown: Shutdown) -> Result<(), daemon::StartError> {
    if cfg.bgp.local_as.is_none() || cfg.bgp.router_id.is_none() {
        return Err(daemon::StartError::NoBgp);
    }
    let hostname = cfg.main.hostname.clone();
    let (metrics, status) = daemon::observability(&cfg).await?;
    let kernel: Option<Arc<dyn Services>> = if cfg.main.ipvs {
        Some(Arc::new(
            Kernel::connect().map_err(daemon::StartError::Ipvs)?,
        ))
    } else {
        info!("ipvs = false: announce-only, the IPVS tree is not mirrored");
        None
    };
    let mut addrs =
        VipAddrs::new(cfg.announce.interface.as_str()).map_err(daemon::StartError::Addr)?;
    addrs
        .ensure_interface()
        .await
        .map_err(daemon::StartError::Addr)?;
    let (speaker, peer_events) = bgp_cfg::start_speaker(&cfg).map_err(daemon::StartError::Bgp)?;
    let connected = daemon::connect_transport(&cfg, Role::Client { hostname }, &shutdown).await?;
    let Some((transport, incoming)) = connected else {
        speaker.shutdown("ipvs-sync shutting down").await;
        return Ok(());
    };
    let firewall = FirewallHook {
        command: cfg.announce.firewall_check.clone().unwrap_or_default(),
        tries: cfg.main.firewall_update_try.max(1),
        ..FirewallHook::default()
    };
    let edges = Edges {
        routes: Arc::new(speaker.clone()),
        peer_events,
        addrs: Arc::new(Arc::new(addrs)),
        kernel,
        firewall: Arc::new(firewall),
        speaker: Some(speaker),
    };
    let bus: Arc<dyn Bus> = AmqpBus::new(transport);
    serve(cfg, edges, bus, incoming, shutdown, metrics, status).await;
    Ok(())
}

/// The client's loop on the given edges (the real ones from [`run`], or fakes in tests).
pub async fn serve(
    cfg: config::Config,
    edges: Edges,
    bus: Arc<dyn Bus>,
    mut incoming: mpsc::Receiver<Incoming>,
    mut shutdown: Shutdown,
    metrics: Metrics,
    status: StatusDoc,
) {
    let outbox = Outbox::spawn(
        bus.clone(),
        cfg.main.client_requests_queue_limit,
        metrics.clone(),
    );
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let reconciler = edges
        .kernel
        .clone()
        .map(|k| spawn_reconciler(k, done_tx.clone()));
    let (core, first) = ClientState::new(settings(&cfg), Instant::now());
    let mut c = Client {
        cfg,
        edges,
        bus,
        outbox,
        metrics,
        status,
        core,
        done: done_tx,
        reconciler,
        started: Instant::now(),
        was_connected: true,
    };
    c.perform(first);
    daemon::notify::notify("READY=1\nSTATUS=client running");
    let mut status_t = daemon::interval(Duration::from_secs(1));
    let mut watchdog = daemon::notify::watchdog_interval().map(daemon::interval);
    loop {
        let deadline = tokio::time::Instant::from_std(c.core.next_deadline());
        tokio::select! {
            biased;
            _ = shutdown.stop.changed() => break,
            Some(()) = shutdown.reload.recv() => c.reload(),
            msg = incoming.recv() => match msg {
                Some(m) => {
                    debug!(from = %m.from, kind = %m.message.kind(), "message");
                    let out = c.core.on_message(Instant::now(), m.message);
                    c.perform(out);
                }
                None => { error!("broker transport stopped"); break; }
            },
            Some(d) = done_rx.recv() => c.on_done(d),
            Some(ev) = c.edges.peer_events.recv() => c.on_peer_event(ev),
            _ = tokio::time::sleep_until(deadline) => {
                let out = c.core.tick(Instant::now());
                c.perform(out);
            }
            _ = status_t.tick() => c.tick_status().await,
            _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                daemon::notify::notify("WATCHDOG=1");
            }
        }
    }
    c.stop().await;
    drop(incoming);
}

fn settings(cfg: &config::Config) -> Settings {
    Settings {
        hostname: cfg.main.hostname.clone(),
        heartbeat_interval: cfg.main.heartbeat_interval,
        tree_request_interval: cfg.main.tree_request_interval,
        announces_request_interval: cfg.main.announces_request_interval,
        withdraw_grace: cfg.announce.withdraw_grace,
        sync_names: cfg
            .client
            .sync_dirs
            .iter()
            .map(|d| format!("{}/*", d.display()))
            .collect(),
        ipvs: cfg.main.ipvs,
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Runs reconciles one at a time; a newer one replaces one still waiting.
fn spawn_reconciler(kernel: Arc<dyn Services>, done: mpsc::UnboundedSender<Done>) -> ReconcileSlot {
    let (tx, mut rx) = watch::channel::<Option<(Tree, BTreeSet<IpAddr>)>>(None);
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let Some((wanted, owned)) = rx.borrow_and_update().clone() else {
                continue;
            };
            let r = kernel.reconcile(wanted, owned).await;
            if done.send(Done::Reconciled(r)).is_err() {
                return;
            }
        }
    });
    tx
}

/// The loop's state: the core and the edges.
struct Client {
    cfg: config::Config,
    edges: Edges,
    bus: Arc<dyn Bus>,
    outbox: Outbox,
    metrics: Metrics,
    status: StatusDoc,
    core: ClientState,
    done: mpsc::UnboundedSender<Done>,
    reconciler: Option<ReconcileSlot>,
    started: Instant,
    was_connected: bool,
}

impl Client {
    /// Performs the core's commands, in order; none of them waits.
    fn perform(&mut self, cmds: Vec<Cmd>) {
        for cmd in cmds {
            match cmd {
                Cmd::Send(to, m) => self.outbox.send(to, m),
                Cmd::Announce { vip, local_pref } => {
                    info!(%vip, local_pref, "announcing");
                    self.edges.routes.announce(vip, local_pref);
                    self.metrics.inc("ipvs_sync_bgp_announces_total", &[]);
                }
                Cmd::Withdraw { vip, ticket } => {
                    info!(%vip, "withdrawing");
                    self.metrics.inc("ipvs_sync_bgp_withdraws_total", &[]);
                    let on_wire = self.edges.routes.withdraw(vip);
                    let done = self.done.clone();
                    tokio::spawn(async move {
                        on_wire.await;
                        let _ = done.send(Done::Withdrawn { vip, ticket });
                    });
                }
                Cmd::Prepare {
                    vip,
                    attempt,
                    services,
                } => self.spawn_prepare(vip, attempt, services),
                Cmd::RemoveAddress { vip, services } => self.spawn_removal(vip, services),
                Cmd::Reconcile { wanted, owned } => {
                    if let Some(r) = &self.reconciler {
                        r.send_replace(Some((wanted, owned)));
                    }
                }
                Cmd::CleanAddresses { keep, mine } => {
                    let clean = self.edges.addrs.clean(keep, mine);
                    tokio::spawn(async move {
                        for f in clean.await {
                            warn!(failure = %f, "leftover address clean-up failed");
                        }
                    });
                }
                Cmd::WriteFiles(files) => self.write_files(files),
                Cmd::Execute(ex) => self.execute(ex),
                Cmd::Note(n) => self.note(n),
            }
        }
    }

    fn spawn_prepare(&self, vip: IpAddr, attempt: u64, services: Option<Tree>) {
        let done = self.done.clone();
        let firewall = self.edges.firewall.clone();
        let kernel = self.edges.kernel.clone();
        let addrs = self.edges.addrs.clone();
        tokio::spawn(async move {
            let result = async {
                firewall.check(vip).await?;
                if let (Some(k), Some(tree)) = (kernel, services) {
                    let a = k.reconcile(tree, BTreeSet::from([vip])).await?;
                    if !a.failures.is_empty() {
                        return Err(format!("IPVS: {}", a.failures.join("; ")));
                    }
                }
                addrs.add(vip).await
            }
            .await;
            let _ = done.send(Done::Prepared {
                vip,
                attempt,
                result,
            });
        });
    }

    fn spawn_removal(&self, vip: IpAddr, services: bool) {
        let done = self.done.clone();
        let kernel = self.edges.kernel.clone();
        let addrs = self.edges.addrs.clone();
        tokio::spawn(async move {
            let mut result = addrs.remove(vip).await;
            if let (true, Some(k)) = (services, kernel) {
                if let Err(e) = k.reconcile(Tree::new(), BTreeSet::from([vip])).await {
                    result = result.and(Err(format!("removing its IPVS services: {e}")));
                }
            }
            let _ = done.send(Done::Removed { vip, result });
        });
    }

    fn on_done(&mut self, d: Done) {
        let now = Instant::now();
        let out = match d {
            Done::Prepared {
                vip,
                attempt,
                result,
            } => {
                if let Err(e) = &result {
                    warn!(%vip, error = %e, "prepare failed; the VIP stays idle");
                    self.metrics.inc("ipvs_sync_prepare_failures_total", &[]);
                }
                self.core.prepared(now, vip, attempt, result)
            }
            Done::Withdrawn { vip, ticket } => {
                debug!(%vip, "withdraw on the wire");
                self.core.withdrawn(now, vip, ticket)
            }
            Done::Removed { vip, result } => self.core.removed(vip, result),
            Done::Reconciled(r) => {
                let r = r.map(|a| {
                    self.metrics
                        .set("ipvs_sync_ipvs_apply_seconds", &[], a.took.as_secs_f64());
                    self.metrics
                        .add("ipvs_sync_ipvs_ops_total", &[], a.planned as u64);
                    if a.planned > 0 {
                        info!(
                            ops = a.planned,
                            failed = a.failures.len(),
                            ms = a.took.as_millis() as u64,
                            "IPVS mirrored"
                        );
                    }
                    for f in &a.failures {
                        warn!(failure = %f, "IPVS operation failed; the next tree converges");
                        self.metrics.inc("ipvs_sync_ipvs_failures_total", &[]);
                    }
                });
                self.core.reconciled(now, r)
            }
        };
        self.perform(out);
    }

    fn note(&self, n: Note) {
        let m = &self.metrics;
        match n {
            Note::NotMine(vip) => {
                warn!(%vip, "announce refused: syn_announce for a VIP the mapping does not give this balancer");
                m.inc("ipvs_sync_announce_refused_total", &[]);
            }
            Note::Vip(vip, ev) => {
                debug!(%vip, event = %ev, "announce event");
                m.inc(
                    "ipvs_sync_announce_events_total",
                    &[("event", event_label(&ev))],
                );
            }
            Note::Mapping(n) => info!(vips = n, "mapping: this balancer serves {n} VIPs"),
            Note::OldTree { got, have } => {
                warn!(got, have, "tree older than the mirror ignored");
                m.inc("ipvs_sync_old_trees_total", &[]);
            }
            Note::ChangesGap { from, have } => {
                debug!(from, have, "changes do not apply: asking for the tree")
            }
            Note::ArbiterRestarted => info!("arbiter restarted: re-syncing"),
            Note::Reconnected => info!("broker reachable again: re-syncing"),
            Note::StaleResync(n) => {
                warn!(dropped = n, "messages arrived stale: asking the arbiter for mapping, tree and announces again");
                m.inc("ipvs_sync_stale_resyncs_total", &[]);
            }
            Note::AckRepair(n) => {
                warn!(
                    vips = n,
                    "no go from the arbiter {} s after the ack: asking for the announces again",
                    state::ACK_REPAIR_AFTER.as_secs()
                );
                m.inc("ipvs_sync_ack_repairs_total", &[]);
            }
            Note::RemovalCancelled(vip) => {
                info!(%vip, "address kept: the VIP was asked for again before its removal")
            }
            Note::Unsolicited(kind) => {
                warn!(kind, "answer nobody asked for: ignored");
                m.inc("ipvs_sync_unsolicited_total", &[("type", kind)]);
            }
            Note::Ignored(kind) => {
                debug!(kind, "message not for a client: ignored");
                m.inc("ipvs_sync_messages_ignored_total", &[("type", kind)]);
            }
            Note::SynBeforeMapping => {
                debug!("syn_announce before the first mapping: kept until the mapping arrives")
            }
            Note::Failed(what) => {
                error!(failure = %what, "failed");
                m.inc("ipvs_sync_ipvs_failures_total", &[]);
            }
        }
    }

    fn write_files(&self, files: Vec<crate::wire::messages::SyncFile>) {
        let dirs = self.cfg.client.sync_dirs.clone();
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            for f in files {
                match sync::write(&dirs, &f.name, f.mode, &f.content) {
                    Ok(path) => {
                        info!(file = %path.display(), bytes = f.content.len(), "sync: written")
                    }
                    Err(e) => {
                        warn!(error = %e, "sync: refused");
                        metrics.inc("ipvs_sync_sync_refused_total", &[]);
                    }
                }
            }
        });
    }

    fn execute(&self, ex: crate::wire::messages::Execute) {
        let allow = self.cfg.client.execute_allow.clone();
        let timeout = Duration::from_secs(ex.timeout_s.into()).min(self.cfg.client.execute_timeout);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            match execute::run(&allow, &ex.argv, timeout).await {
                Ok(r) => {
                    info!(argv = ?ex.argv, code = ?r.code, output = %r.output_tail.trim_end(), "execute: done")
                }
                Err(e) => {
                    warn!(error = %e, "execute: refused or failed");
                    metrics.inc("ipvs_sync_execute_refused_total", &[]);
                }
            }
        });
    }

    fn on_peer_event(&self, ev: bgp::PeerEvent) {
        match ev {
            bgp::PeerEvent::Up { name } => {
                info!(peer = %name, "BGP session established");
                self.metrics
                    .inc("ipvs_sync_bgp_session_ups_total", &[("peer", &name)]);
            }
            bgp::PeerEvent::Down { name, reason } => {
                warn!(peer = %name, %reason, "BGP session down");
                self.metrics
                    .inc("ipvs_sync_bgp_session_downs_total", &[("peer", &name)]);
            }
        }
    }

    fn reload(&mut self) {
        let path: PathBuf = self.cfg.file.clone();
        match config::Config::load(&path) {
            Ok(new) => {
                if let Some(s) = &self.edges.speaker {
                    bgp_cfg::reload_peers(s, &self.cfg, &new);
                }
                info!(config = %path.display(), "configuration reloaded");
                self.cfg = new;
            }
            Err(e) => error!(error = %e, "reload refused: the running configuration stays"),
        }
    }

    async fn tick_status(&mut self) {
        let now = Instant::now();
        let stale = self.bus.counters().dropped(DropReason::Stale);
        let out = self.core.stale_dropped(now, stale);
        self.perform(out);
        let connected = self.bus.connected();
        if connected != self.was_connected {
            let out = self.core.set_connected(now, connected);
            self.perform(out);
            self.was_connected = connected;
        }
        let peers = self.edges.routes.peers().await;
        let announced = self.core.announced();
        let m = &self.metrics;
        m.set(
            "ipvs_sync_broker_connected",
            &[],
            if connected { 1.0 } else { 0.0 },
        );
        m.set("ipvs_sync_vips_announced", &[], announced.len() as f64);
        m.set("ipvs_sync_outbox_depth", &[], self.outbox.depth() as f64);
        if let Some(t) = self.core.last_arbiter_heartbeat() {
            m.set(
                "ipvs_sync_last_heartbeat_age_seconds",
                &[],
                now.saturating_duration_since(t).as_secs_f64(),
            );
        }
        for p in &peers {
            m.set(
                "ipvs_sync_bgp_peer_up",
                &[("peer", &p.name)],
                if p.state == "established" { 1.0 } else { 0.0 },
            );
        }
        daemon::export_counters(m, self.bus.counters());
        let vip_rows: Vec<serde_json::Value> = self
            .core
            .mine()
            .map(|vip| {
                let st = self.core.vip_state(vip);
                serde_json::json!({
                    "vip": vip.to_string(),
                    "state": st.name(),
                    "local_pref": announced.get(&vip),
                })
            })
            .collect();
        self.status.set(serde_json::json!({
            "role": "client",
            "hostname": self.cfg.main.hostname,
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "broker": {"connected": connected},
            "last_heartbeat_age_s": self.core.last_arbiter_heartbeat().map(|t| now.saturating_duration_since(t).as_secs_f64()),
            "tree_serial": self.core.serial(),
            "peers": peers.iter().map(bgp_cfg::peer_json).collect::<Vec<_>>(),
            "vips": vip_rows,
            "queues": {"outbox": self.outbox.depth()},
            "dropped": daemon::dropped_json(self.bus.counters()),
            "workers": {
                "tree": {"age_s": self.core.last_reconcile_ok().map(|t| now.saturating_duration_since(t).as_secs_f64()),
                         "interval_s": self.cfg.main.tree_request_interval.as_secs_f64()},
            },
        }));
    }

    /// SIGTERM: Cease to every peer (routers withdraw everything at once); with
    /// `remove_vips_on_stop`, the addresses go `withdraw_grace` after the Cease is written.
    async fn stop(mut self) {
        info!("stopping: withdrawing every route (BGP Cease)");
        let (_, removals) = self.core.shutdown();
        let _ = tokio::time::timeout(
            Duration::from_millis(1500),
            self.edges.routes.shutdown("ipvs-sync shutting down"),
        )
        .await;
        if self.cfg.announce.remove_vips_on_stop && !removals.is_empty() {
            tokio::time::sleep(self.cfg.announce.withdraw_grace).await;
            for vip in removals {
                if let Err(e) = self.edges.addrs.remove(vip).await {
                    warn!(%vip, error = %e, "VIP address removal failed");
                }
            }
        }
        self.outbox.close().await;
        self.bus.close().await;
    }
}

fn event_label(ev: &announce::Event) -> &'static str {
    use announce::Event as E;
    match ev {
        E::PrepareFailed(_) => "prepare_failed",
        E::DuplicateSyn => "duplicate_syn",
        E::AckWithoutSyn => "ack_without_syn",
        E::AckBeforePrepared => "ack_before_prepared",
        E::DuplicateAck => "duplicate_ack",
        E::StalePrepareResult => "stale_prepare_result",
        E::WithdrawWhileIdle => "withdraw_while_idle",
        E::Cancelled => "cancelled",
        _ => "other",
    }
}
