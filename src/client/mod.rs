//! `ipvs-sync client`: the balancer daemon.
//!
//! ```text
//!  broker ─Transport─▶ incoming ──────────┐
//!  timers: heartbeat, tree, announces,     │
//!          status ────────────────────────┤
//!  prepare results (one task per attempt) ┼─▶ Client (one task, owns all state)
//!  BGP peer events ───────────────────────┤        │
//!  SIGHUP (reload) / SIGTERM (stop) ──────┘        ├─▶ outbox ─▶ sender task ─▶ Transport.send
//!                                                  ├─▶ Speaker.announce / withdraw (never waits)
//!                                                  ├─▶ Kernel.reconcile (spawn_blocking)
//!                                                  └─▶ VipAddrs add / remove (spawned)
//! ```
//!
//! The client owns no truth: the arbiter's `tree`/`changes` say what IPVS holds, its
//! `mapping` says which VIPs are this balancer's, and its `syn_announce` / `ack_announce` /
//! `fin_announce` drive one [`announce::fsm::VipFsm`] per VIP. While the broker or the arbiter
//! is unreachable nothing is withdrawn (fail-static); after a reconnect the client asks for
//! `tree`, `mapping` and `announces` and converges.

pub mod bgp_cfg;
pub mod execute;
pub mod kernel;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use announce::fsm::{Input, Output};
use announce::{FirewallHook, VipAddrs, Vips};
use ipnet::IpNet;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::daemon::{self, http::StatusDoc, metrics::Metrics, Outbox, Shutdown};
use crate::wire::messages::{AckPrepared, Heartbeat, Mapping, PeerRole, SynAnnounce, SyncRequest};
use crate::wire::{Dest, Incoming, Message, Transport};
use kernel::{ChangesOutcome, Kernel, Mirror};

/// A prepare step finished (sent back by the task that ran the steps of one attempt).
#[derive(Debug)]
struct Prepared {
    vip: IpAddr,
    attempt: u64,
    result: Result<(), String>,
}

/// Everything the client needs from outside, built by [`run`] from the config.
pub struct Edges {
    /// The embedded BGP speaker.
    pub speaker: bgp::Speaker,
    /// BGP peer up/down events.
    pub peer_events: mpsc::UnboundedReceiver<bgp::PeerEvent>,
    /// VIP addresses on the announce interface.
    pub addrs: Arc<VipAddrs>,
    /// IPVS, unless `ipvs = false`.
    pub kernel: Option<Kernel>,
}

/// The client's state; one task owns it.
struct Client {
    cfg: config::Config,
    hostname: String,
    edges: Edges,
    outbox: Outbox,
    metrics: Metrics,
    status: StatusDoc,
    started: Instant,
    mirror: Mirror,
    /// VIPs the mapping gives this balancer (`None` before the first mapping).
    mine: Option<BTreeSet<IpAddr>>,
    /// VIPs whose services this client put in the kernel (for removal when they leave `mine`).
    owned_services: BTreeSet<IpAddr>,
    vips: Vips,
    /// `syn_announce`s that arrived before the first mapping; handled once it is here.
    early_syns: Vec<SynAnnounce>,
    firewall: FirewallHook,
    last_server_heartbeat: Option<Instant>,
    server_uptime: Option<u64>,
    prepared_tx: mpsc::Sender<Prepared>,
    was_connected: bool,
    last_tree_apply: Option<Instant>,
    /// When each VIP last sent its ack and is still waiting for the go (see
    /// [`ACK_REPAIR_AFTER`]).
    acked: BTreeMap<IpAddr, Instant>,
    /// Runs `execute` messages (allow-list, once per message id, one at a time).
    executor: Arc<execute::Executor>,
}

/// A VIP acked this long ago and still without the arbiter's go makes the client ask for the
/// announces again; the arbiter answers with `syn_announce`, on which every acked VIP sends its
/// ack again. A lost ack or go (dropped as stale behind a backlog on a starved broker, say)
/// then heals in seconds rather than at the next `announces_request_interval`.
const ACK_REPAIR_AFTER: Duration = Duration::from_secs(10);

/// Runs the client until `shutdown` fires. Exit code semantics: `Err` = could not start.
pub async fn run(cfg: config::Config, shutdown: Shutdown) -> Result<(), daemon::StartError> {
    if cfg.bgp.local_as.is_none() || cfg.bgp.router_id.is_none() {
        return Err(daemon::StartError::NoBgp);
    }
    let hostname = cfg.main.hostname.clone();
    let (metrics, status) = daemon::observability(&cfg).await?;

    let kernel = if cfg.main.ipvs {
        Some(Kernel::connect().map_err(daemon::StartError::Ipvs)?)
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

    let transport = daemon::connect_transport(
        &cfg,
        crate::wire::Role::Client {
            hostname: hostname.clone(),
        },
        &shutdown,
    )
    .await?;
    let Some((transport, incoming)) = transport else {
        speaker.shutdown("ipvs-sync shutting down").await;
        return Ok(());
    };
    let transport = Arc::new(transport);
    let outbox = Outbox::spawn(
        transport.clone(),
        cfg.main.client_requests_queue_limit,
        metrics.clone(),
    );

    let (prepared_tx, prepared_rx) = mpsc::channel(1024);
    let firewall = FirewallHook {
        command: cfg.announce.firewall_check.clone().unwrap_or_default(),
        tries: cfg.main.firewall_update_try.max(1),
        ..FirewallHook::default()
    };
    let client = Client {
        hostname,
        edges: Edges {
            speaker,
            peer_events,
            addrs: Arc::new(addrs),
            kernel,
        },
        outbox,
        metrics,
        status,
        started: Instant::now(),
        mirror: Mirror::default(),
        mine: None,
        owned_services: BTreeSet::new(),
        vips: Vips::new(),
        early_syns: Vec::new(),
        firewall,
        last_server_heartbeat: None,
        server_uptime: None,
        prepared_tx,
        was_connected: true,
        last_tree_apply: None,
        acked: BTreeMap::new(),
        executor: Arc::new(execute::Executor::new(&cfg.client, &cfg.main.state_dir)),
        cfg,
    };
    client.run(transport, incoming, prepared_rx, shutdown).await;
    Ok(())
}

impl Client {
    async fn run(
        mut self,
        transport: Arc<Transport>,
        mut incoming: mpsc::Receiver<Incoming>,
        mut prepared_rx: mpsc::Receiver<Prepared>,
        mut shutdown: Shutdown,
    ) {
        let iv = daemon::interval;
        let mut heartbeat = iv(self.cfg.main.heartbeat_interval);
        let mut tree_t = iv(self.cfg.main.tree_request_interval);
        let mut announces_t = iv(self.cfg.main.announces_request_interval);
        let mut status_t = iv(Duration::from_secs(1));
        // A fresh client asks for everything at once (the first ticks fire immediately).
        self.request_all();
        daemon::notify::notify("READY=1\nSTATUS=client running");
        let mut watchdog = daemon::notify::watchdog_interval().map(iv);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.stop.changed() => break,
                Some(()) = shutdown.reload.recv() => self.reload(),
                msg = incoming.recv() => match msg {
                    Some(m) => self.on_message(m).await,
                    None => { error!("broker transport stopped"); break; }
                },
                Some(p) = prepared_rx.recv() => self.on_prepared(p),
                Some(ev) = self.edges.peer_events.recv() => self.on_peer_event(ev),
                _ = heartbeat.tick() => self.send_heartbeat(),
                _ = tree_t.tick() => self.outbox.send(Dest::Server, Message::TreeRequest),
                _ = announces_t.tick() => self.outbox.send(Dest::Server, Message::AnnouncesRequest),
                _ = status_t.tick() => self.tick_status(&transport).await,
                _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                    daemon::notify::notify("WATCHDOG=1");
                }
            }
        }
        self.stop().await;
        drop(incoming);
        if let Ok(t) = Arc::try_unwrap(transport) {
            t.close().await;
        }
    }

    fn request_all(&self) {
        self.outbox.send(Dest::Server, Message::MappingRequest);
        self.outbox.send(Dest::Server, Message::TreeRequest);
        self.outbox.send(Dest::Server, Message::AnnouncesRequest);
        if !self.cfg.client.sync_dirs.is_empty() {
            let dirs = self
                .cfg
                .client
                .sync_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            self.outbox
                .send(Dest::Server, Message::SyncRequest(SyncRequest { dirs }));
        }
    }

    fn send_heartbeat(&self) {
        let hb = Heartbeat {
            role: PeerRole::Client,
            uptime: self.started.elapsed().as_secs(),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            serial: Some(self.mirror.serial),
            announced: Some(self.vips.announced().into_keys().collect()),
        };
        self.outbox.send(Dest::Server, Message::Heartbeat(hb));
    }

    async fn on_message(&mut self, m: Incoming) {
        let kind = m.message.kind();
        debug!(from = %m.from, %kind, "message");
        match m.message {
            Message::Heartbeat(hb) if hb.role == PeerRole::Server => {
                // An arbiter that restarted has forgotten nothing it needs (it reads its own
                // kernel and files), but we must re-sync our view with it.
                if self.server_uptime.is_some_and(|u| hb.uptime < u) {
                    info!(arbiter = %m.from, "arbiter restarted: re-syncing");
                    self.request_all();
                }
                self.server_uptime = Some(hb.uptime);
                self.last_server_heartbeat = Some(Instant::now());
                if hb.serial.is_some_and(|s| s != self.mirror.serial) && self.mirror.tree.is_some()
                {
                    self.outbox.send(Dest::Server, Message::TreeRequest);
                }
            }
            Message::Tree(t) => {
                self.mirror.set_tree(t.serial, t.tree);
                self.reconcile_kernel().await;
            }
            Message::Changes(c) => {
                match self
                    .mirror
                    .apply_changes(c.from_serial, c.to_serial, &c.plan)
                {
                    ChangesOutcome::Applied => self.reconcile_kernel().await,
                    ChangesOutcome::Duplicate => {}
                    ChangesOutcome::NeedTree => {
                        debug!(
                            from = c.from_serial,
                            have = self.mirror.serial,
                            "changes do not apply: asking for the tree"
                        );
                        self.outbox.send(Dest::Server, Message::TreeRequest);
                    }
                }
            }
            Message::Services(s) => {
                // Only merged when we hold a tree; the next tree request converges anyway.
                if let Some(tree) = self.mirror.tree.as_mut() {
                    for svc in s.tree.services() {
                        tree.insert(svc.clone());
                    }
                    self.reconcile_kernel().await;
                }
            }
            Message::Mapping(map) => self.on_mapping(map).await,
            Message::SynAnnounce(syn) if self.mine.is_none() => {
                debug!("syn_announce before the first mapping: kept until the mapping arrives");
                self.early_syns.push(syn);
                self.outbox.send(Dest::Server, Message::MappingRequest);
            }
            Message::SynAnnounce(syn) => self.on_syn(syn),
            Message::AckGo(go) => {
                let outs = self.vips.handle(
                    go.vip,
                    Input::AckAnnounce {
                        local_pref: go.local_preference,
                    },
                );
                self.perform(go.vip, outs);
            }
            Message::FinAnnounce(fin) => {
                for vip in fin.vips {
                    let outs = self.vips.handle(vip, Input::FinAnnounce);
                    self.perform(vip, outs);
                }
            }
            Message::Sync(answer) => {
                for f in answer.files {
                    match sync::write(&self.cfg.client.sync_dirs, &f) {
                        Ok(path) => {
                            info!(file = %path.display(), bytes = f.content.len(), "sync: written")
                        }
                        Err(e) => {
                            warn!(error = %e, "sync: refused");
                            self.metrics.inc("ipvs_sync_sync_refused_total", &[]);
                        }
                    }
                }
            }
            Message::Execute(ex) => {
                let executor = Arc::clone(&self.executor);
                let timeout = Duration::from_secs(ex.timeout_s.into());
                let metrics = self.metrics.clone();
                let id = m.id;
                tokio::spawn(async move {
                    match executor.run(id, &ex.argv, timeout).await {
                        Ok(r) => {
                            info!(argv = ?ex.argv, rule = r.rule, code = ?r.code, output = %r.output_tail.trim_end(), "execute: done")
                        }
                        Err(e) => {
                            warn!(error = %e, "execute: refused or failed");
                            metrics.inc("ipvs_sync_execute_refused_total", &[]);
                        }
                    }
                });
            }
            other => {
                debug!(kind = %other.kind(), "message not for a client: ignored");
                self.metrics.inc(
                    "ipvs_sync_messages_ignored_total",
                    &[("type", other.kind().as_str())],
                );
            }
        }
    }

    fn on_syn(&mut self, syn: SynAnnounce) {
        for (vip, spec) in syn.vips {
            if !self.is_mine(vip) {
                self.count_refused(
                    vip,
                    "syn_announce for a VIP the mapping does not give this balancer",
                );
                continue;
            }
            let input = Input::SynAnnounce {
                local_pref: spec.local_preference,
                tree: spec.tree,
            };
            let outs = self.vips.handle(vip, input);
            self.perform(vip, outs);
        }
    }

    fn is_mine(&self, vip: IpAddr) -> bool {
        self.mine.as_ref().is_some_and(|m| m.contains(&vip))
    }

    fn count_refused(&self, vip: IpAddr, why: &str) {
        warn!(%vip, why, "announce refused");
        self.metrics.inc("ipvs_sync_announce_refused_total", &[]);
    }

    async fn on_mapping(&mut self, map: Mapping) {
        let mine: BTreeSet<IpAddr> = map
            .balancers
            .get(&self.hostname)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let first = self.mine.is_none();
        if self.mine.as_ref() == Some(&mine) {
            return;
        }
        info!(
            vips = mine.len(),
            "mapping: this balancer serves {} VIPs",
            mine.len()
        );
        // VIPs that left the mapping are withdrawn like a fin_announce.
        for (vip, out) in self.vips.reconcile::<ipvs::Tree>(&mine) {
            self.perform(vip, vec![out]);
        }
        if first {
            self.clean_leftover_addresses(&mine).await;
        }
        self.mine = Some(mine);
        for syn in std::mem::take(&mut self.early_syns) {
            self.on_syn(syn);
        }
        self.reconcile_kernel().await;
    }

    /// After a restart, addresses of our VIPs may still sit on the interface although nothing
    /// announces them; remove them (the arbiter's syn_announce puts back what it wants).
    async fn clean_leftover_addresses(&self, mine: &BTreeSet<IpAddr>) {
        let wanted = self.vips.busy();
        match self.edges.addrs.plan(&wanted, mine).await {
            Ok(plan) if !plan.is_empty() => {
                info!(
                    ops = plan.len(),
                    "removing VIP addresses left from an earlier run"
                );
                for (op, e) in self.edges.addrs.execute(plan).await {
                    warn!(%op, error = %e, "leftover address clean-up failed");
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot list VIP addresses"),
        }
    }

    async fn reconcile_kernel(&mut self) {
        let (Some(kernel), Some(mine)) = (self.edges.kernel.clone(), self.mine.clone()) else {
            return;
        };
        let Some(wanted) = self.mirror.wanted(&mine) else {
            return;
        };
        let owned: BTreeSet<IpAddr> = mine.union(&self.owned_services).copied().collect();
        match kernel.reconcile(wanted, owned).await {
            Ok(a) => {
                self.owned_services = mine;
                self.last_tree_apply = Some(Instant::now());
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
            }
            Err(e) => {
                error!(error = %e, "IPVS reconcile failed");
                self.metrics.inc("ipvs_sync_ipvs_failures_total", &[]);
            }
        }
    }

    /// Performs the announce FSM's outputs for one VIP, in order.
    fn perform(&mut self, vip: IpAddr, outs: Vec<Output<ipvs::Tree>>) {
        let mut prepare: Vec<Output<ipvs::Tree>> = Vec::new();
        for out in outs {
            match out {
                Output::CheckFirewall { .. }
                | Output::ApplyServices { .. }
                | Output::AddAddress { .. } => prepare.push(out),
                Output::SendAck => {
                    self.acked.insert(vip, Instant::now());
                    self.outbox
                        .send(Dest::Server, Message::AckPrepared(AckPrepared { vip }));
                }
                Output::BgpAnnounce { local_pref } => {
                    info!(%vip, local_pref, "announcing");
                    let attrs = bgp::RouteAttrs {
                        local_pref: Some(local_pref),
                        ..Default::default()
                    };
                    self.edges.speaker.announce(host_net(vip), attrs);
                    self.metrics.inc("ipvs_sync_bgp_announces_total", &[]);
                }
                Output::BgpWithdraw => {
                    info!(%vip, "withdrawing");
                    self.edges.speaker.withdraw(host_net(vip));
                    self.metrics.inc("ipvs_sync_bgp_withdraws_total", &[]);
                }
                Output::RemoveAddress => {
                    let addrs = self.edges.addrs.clone();
                    tokio::spawn(async move {
                        if let Err(e) = addrs.remove(vip).await {
                            warn!(%vip, error = %e, "VIP address removal failed");
                        }
                    });
                }
                Output::Count(ev) => {
                    debug!(%vip, event = %ev, "announce event");
                    self.metrics.inc(
                        "ipvs_sync_announce_events_total",
                        &[("event", &ev.to_string())],
                    );
                }
            }
        }
        if !prepare.is_empty() {
            self.spawn_prepare(vip, prepare);
        }
    }

    /// Runs the prepare steps of one attempt in order, stopping at the first failure.
    fn spawn_prepare(&self, vip: IpAddr, steps: Vec<Output<ipvs::Tree>>) {
        let tx = self.prepared_tx.clone();
        let firewall = self.firewall.clone();
        let kernel = self.edges.kernel.clone();
        let addrs = self.edges.addrs.clone();
        tokio::spawn(async move {
            let mut attempt = 0;
            let mut result = Ok(());
            for step in steps {
                let r = match step {
                    Output::CheckFirewall { attempt: a } => {
                        attempt = a;
                        if firewall.command.is_empty() {
                            Ok(())
                        } else {
                            firewall
                                .check(vip)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        }
                    }
                    Output::ApplyServices { attempt: a, tree } => {
                        attempt = a;
                        match &kernel {
                            None => Ok(()),
                            Some(k) => {
                                let only: BTreeSet<IpAddr> = [vip].into();
                                let wanted = tree.filter_vips(&only, false);
                                match k.reconcile(wanted, only).await {
                                    Ok(a) if a.failures.is_empty() => Ok(()),
                                    Ok(a) => Err(format!("IPVS: {}", a.failures.join("; "))),
                                    Err(e) => Err(e.to_string()),
                                }
                            }
                        }
                    }
                    Output::AddAddress { attempt: a } => {
                        attempt = a;
                        addrs.add(vip).await.map_err(|e| e.to_string())
                    }
                    _ => Ok(()),
                };
                if let Err(e) = r {
                    result = Err(e);
                    break;
                }
            }
            let _ = tx
                .send(Prepared {
                    vip,
                    attempt,
                    result,
                })
                .await;
        });
    }

    fn on_prepared(&mut self, p: Prepared) {
        if let Err(e) = &p.result {
            warn!(vip = %p.vip, error = %e, "prepare failed; the VIP stays idle");
            self.metrics.inc("ipvs_sync_prepare_failures_total", &[]);
        }
        let outs = self.vips.handle(
            p.vip,
            Input::PrepareResult {
                attempt: p.attempt,
                result: p.result,
            },
        );
        self.perform(p.vip, outs);
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
                bgp_cfg::reload_peers(&self.edges.speaker, &self.cfg, &new);
                info!(config = %path.display(), "configuration reloaded");
                self.cfg = new;
            }
            Err(e) => error!(error = %e, "reload refused: the running configuration stays"),
        }
    }

    /// Asks for the announces again when a VIP waits too long for its go.
    fn repair_acks(&mut self) {
        let vips = &self.vips;
        self.acked
            .retain(|vip, _| matches!(vips.state(*vip), announce::State::Acked { .. }));
        let stuck = self
            .acked
            .values()
            .filter(|t| t.elapsed() >= ACK_REPAIR_AFTER)
            .count();
        if stuck > 0 {
            warn!(
                vips = stuck,
                "no go from the arbiter {} s after the ack: asking for the announces again",
                ACK_REPAIR_AFTER.as_secs()
            );
            self.metrics.inc("ipvs_sync_ack_repairs_total", &[]);
            self.outbox.send(Dest::Server, Message::AnnouncesRequest);
            let now = Instant::now();
            self.acked.values_mut().for_each(|t| *t = now);
        }
    }

    async fn tick_status(&mut self, transport: &Transport) {
        self.repair_acks();
        let connected = transport.is_connected();
        if connected && !self.was_connected {
            info!("broker reachable again: re-syncing");
            self.request_all();
        }
        self.was_connected = connected;
        let peers = self.edges.speaker.peers().await;
        let announced = self.vips.announced();
        let m = &self.metrics;
        m.set(
            "ipvs_sync_broker_connected",
            &[],
            if connected { 1.0 } else { 0.0 },
        );
        m.set("ipvs_sync_vips_announced", &[], announced.len() as f64);
        m.set("ipvs_sync_outbox_depth", &[], self.outbox.depth() as f64);
        if let Some(t) = self.last_server_heartbeat {
            m.set(
                "ipvs_sync_last_heartbeat_age_seconds",
                &[],
                t.elapsed().as_secs_f64(),
            );
        }
        for p in &peers {
            m.set(
                "ipvs_sync_bgp_peer_up",
                &[("peer", &p.name)],
                if p.state == "established" { 1.0 } else { 0.0 },
            );
        }
        daemon::export_transport_counters(m, transport);
        let vip_rows: Vec<serde_json::Value> = self
            .mine
            .iter()
            .flatten()
            .map(|vip| {
                let st = self.vips.state(*vip);
                serde_json::json!({
                    "vip": vip.to_string(),
                    "state": st.name(),
                    "local_pref": announced.get(vip),
                })
            })
            .collect();
        self.status.set(serde_json::json!({
            "role": "client",
            "hostname": self.hostname,
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "broker": {"connected": connected},
            "last_heartbeat_age_s": self.last_server_heartbeat.map(|t| t.elapsed().as_secs_f64()),
            "tree_serial": self.mirror.serial,
            "peers": peers.iter().map(bgp_cfg::peer_json).collect::<Vec<_>>(),
            "vips": vip_rows,
            "queues": {"outbox": self.outbox.depth()},
            "dropped": daemon::dropped_json(transport),
            "transport": transport.status_json(),
            "workers": {
                "tree": {"age_s": self.last_tree_apply.map(|t| t.elapsed().as_secs_f64()),
                         "interval_s": self.cfg.main.tree_request_interval.as_secs_f64()},
            },
        }));
    }

    /// SIGTERM: withdraw everything (Cease), optionally remove the addresses, within 2 s.
    async fn stop(mut self) {
        info!("stopping: withdrawing every route (BGP Cease)");
        let outs = self.vips.shutdown::<ipvs::Tree>();
        let remove = self.cfg.announce.remove_vips_on_stop;
        let mut removals = Vec::new();
        for (vip, out) in outs {
            match out {
                Output::BgpWithdraw => self.edges.speaker.withdraw(host_net(vip)),
                Output::RemoveAddress if remove => removals.push(vip),
                _ => {}
            }
        }
        let speaker = self.edges.speaker.clone();
        let _ = tokio::time::timeout(
            Duration::from_millis(1500),
            speaker.shutdown("ipvs-sync shutting down"),
        )
        .await;
        for vip in removals {
            if let Err(e) = self.edges.addrs.remove(vip).await {
                warn!(%vip, error = %e, "VIP address removal failed");
            }
        }
        self.outbox.close().await;
    }
}

/// `/32` or `/128` for a VIP.
pub fn host_net(vip: IpAddr) -> IpNet {
    IpNet::from(vip)
}
