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
//!     ├─ Announce ──────▶ batch ─(loop idle, or 4,096)─▶ Routes::announce_many (never waits)
//!     ├─ Withdraw ──────▶ Routes::withdraw_many, ahead of the rest ─ on the wire ─▶ result
//!     │                     ─▶ core (grace, then removal)
//!     ├─ Prepare ───────▶ task (≤ 64 at once, the rest queued): Firewall, Services (the
//!     │                     VIP's), Addresses::add ─▶ result
//!     ├─ RemoveAddress ─▶ task: Addresses::remove (+ the VIP's services) ─▶ result
//!     └─ Reconcile ─────▶ kernel worker: one at a time, only the newest waits ─▶ result
//! ```
//!
//! The loop makes no decision of its own: [`state::ClientState`] decides, the loop performs.
//! Nothing it performs blocks it: kernel work, address changes and withdraws run in tasks and
//! report back, so a `fin_announce` is acted on while a large IPVS reconcile runs. While the
//! broker or the arbiter is unreachable nothing is withdrawn (fail-static); after a reconnect
//! the client asks for `tree`, `mapping` and `announces` and converges.

pub mod announce_order;
pub mod bfd_link;
pub mod bgp_cfg;
pub mod edges;
pub mod execute;
pub mod fallback;
mod fallback_link;
pub mod keepalived;
pub mod kernel;
pub mod prepares;
pub mod reload;
pub mod restart;
pub mod route_batch;
pub mod state;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use announce::FirewallHook;
use announce::VipAddrs;
use ipvs::Tree;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::cmd::Stopped;
use crate::daemon::bus::{AmqpBus, Bus};
use crate::daemon::control;
use crate::daemon::metrics::{of_type, EventLabel, Metrics, PeerLabel};
use crate::daemon::status::{ClientStatus, ClientVip, Common, DrainRow, PeerRow, Status, Worker};
use crate::daemon::{self, http::StatusDoc, Outbox, Shutdown};
use crate::wire::counters::CountersSnapshot;
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
    /// Requests of `ipvs-sync drain` / `undrain` (the control socket).
    pub control: mpsc::Receiver<control::Asked>,
    /// BFD beside BGP (peers with `bfd = true`), for `/status`.
    pub bfd: Option<bfd_link::BfdLink>,
    /// Makes the addresses edge of another interface (for a reload that changes
    /// `[announce] interface`); `None`: such a change waits for a restart.
    pub addrs_on: Option<AddrsFactory>,
    /// What a process that exited for a graceful restart left (see [`restart`]); `None`: a
    /// cold start.
    pub resumed: Option<restart::Marker>,
}

/// Makes an [`Addresses`] for an interface (created when missing).
pub type AddrsFactory = Box<
    dyn Fn(String) -> crate::daemon::bus::BoxFuture<'static, Result<Arc<dyn Addresses>, String>>
        + Send
        + Sync,
>;

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
    Reconciled(u64, Result<Applied, String>),
    Conns {
        vip: IpAddr,
        n: Result<u64, String>,
    },
    /// keepalived exited after a hand-back.
    KeepalivedStopped,
}

/// Runs the client until `shutdown` fires, on the real speaker, netlink and broker.
/// `Err` = could not start; `Ok` says why it stopped.
pub async fn run(cfg: config::Config, shutdown: Shutdown) -> Result<Stopped, daemon::StartError> {
    if cfg.bgp.local_as.is_none() || cfg.bgp.router_id.is_none() {
        return Err(daemon::StartError::NoBgp);
    }
    let hostname = cfg.main.hostname.clone();
    let (metrics, status) = daemon::observability(&cfg, daemon::metrics::Role::Client).await?;
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
    let resumed = restart::take(&cfg);
    let (speaker, peer_events) =
        bgp_cfg::start_speaker(&cfg, resumed.is_some()).map_err(daemon::StartError::Bgp)?;
    let bfd = bfd_link::BfdLink::start(&cfg, speaker.clone())
        .await
        .map_err(daemon::StartError::Bfd)?;
    let connected = daemon::connect_transport(&cfg, Role::Client { hostname }, &shutdown).await?;
    let Some((transport, incoming)) = connected else {
        if let Some(b) = bfd {
            b.shutdown().await;
        }
        speaker.shutdown("ipvs-sync shutting down").await;
        return Ok(Stopped::Requested);
    };
    let firewall = firewall_hook(&cfg);
    let cpath = cfg.main.control_socket.clone();
    let clistener = control::bind(&cpath)
        .map_err(|e| daemon::StartError::ControlSocket(cpath.display().to_string(), e))?;
    let (ctx, crx) = mpsc::channel(16);
    tokio::spawn(control::serve(clistener, ctx));
    let edges = Edges {
        routes: Arc::new(speaker.clone()),
        peer_events,
        addrs: Arc::new(Arc::new(addrs)),
        kernel,
        firewall: Arc::new(firewall),
        speaker: Some(speaker),
        bfd: bfd.clone(),
        control: crx,
        addrs_on: Some(Box::new(|name: String| {
            Box::pin(async move {
                let mut a = VipAddrs::new(&name).map_err(|e| e.to_string())?;
                a.ensure_interface().await.map_err(|e| e.to_string())?;
                let a: Arc<dyn Addresses> = Arc::new(Arc::new(a));
                Ok(a)
            })
        })),
        resumed,
    };
    let bus: Arc<dyn Bus> = AmqpBus::new(transport);
    let why = serve(cfg, edges, bus, incoming, shutdown, metrics, status).await;
    if let Some(b) = bfd {
        b.shutdown().await;
    }
    let _ = std::fs::remove_file(&cpath);
    Ok(why)
}

/// The client's loop on the given edges (the real ones from [`run`], or fakes in tests),
/// until a stop is requested or the broker transport ends.
pub async fn serve(
    cfg: config::Config,
    edges: Edges,
    bus: Arc<dyn Bus>,
    mut incoming: mpsc::Receiver<Incoming>,
    mut shutdown: Shutdown,
    metrics: Metrics,
    status: StatusDoc,
) -> Stopped {
    let outbox = Outbox::spawn(
        bus.clone(),
        cfg.main.client_requests_queue_limit,
        metrics.clone(),
    );
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let reconciler = edges
        .kernel
        .clone()
        .map(|k| spawn_kernel_worker(k, done_tx.clone()));
    let (mut core, first) = ClientState::new(settings(&cfg), Instant::now());
    let eor = edges.resumed.as_ref().map(|m| {
        info!(
            vips = m.announced.len(),
            "graceful restart: routers keep the routes; End-of-RIB once they are announced again"
        );
        core.keep_addresses(m.announced.clone());
        restart::EorGate::new(
            m,
            Instant::now(),
            Duration::from_secs(cfg.bgp.graceful_restart_time.into()),
        )
    });
    let running_speaker = bgp_cfg::speaker_config(&cfg.bgp, edges.resumed.is_some());
    let drained: BTreeSet<IpAddr> = crate::daemon::state_file::load(&drained_file(&cfg));
    if !drained.is_empty() {
        info!(vips = ?drained, "VIPs drained by an earlier run stay drained until undrain");
        core.restore_drained(Instant::now(), drained);
    }
    let executor = Arc::new(execute::Executor::new(&cfg.client, &cfg.main.state_dir));
    let mut c = Client {
        executor,
        current_id: crate::wire::MessageId { epoch: 0, seq: 0 },
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
        syn_at: BTreeMap::new(),
        fin_at: BTreeMap::new(),
        exported: None,
        peer_up_at: BTreeMap::new(),
        withdraws_pending: 0,
        running_speaker,
        eor,
        route_batch: route_batch::RouteBatch::default(),
        prepares: prepares::Prepares::default(),
        fallback: None,
    };
    c.fallback = fallback_link::Link::new(&c.cfg, Instant::now());
    c.perform(first);
    daemon::notify::notify("READY=1\nSTATUS=client running");
    let mut status_t = daemon::interval(Duration::from_secs(1));
    let mut watchdog = daemon::notify::watchdog_interval().map(daemon::interval);
    // With `stop = drain`, SIGTERM drains every VIP first; the loop goes on until the drains
    // are done or their timeout has passed.
    let mut draining_to_stop: Option<tokio::time::Instant> = None;
    let why = loop {
        c.check_end_of_rib();
        if draining_to_stop.is_some_and(|t| t <= tokio::time::Instant::now())
            || (draining_to_stop.is_some() && c.core.drains_done() && c.withdraws_on_wire())
        {
            break Stopped::Requested;
        }
        let deadline = tokio::time::Instant::from_std(c.next_deadline());
        let stop_wait = draining_to_stop.unwrap_or_else(|| deadline + Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = shutdown.stop.changed(), if draining_to_stop.is_none() => {
                if c.cfg.announce.stop == config::StopMode::Drain {
                    info!("stopping by draining every VIP first (stop = drain)");
                    let (out, _) = c.core.drain(Instant::now(), None, None);
                    c.perform(out);
                    draining_to_stop = Some(tokio::time::Instant::now()
                        + c.cfg.announce.drain_timeout.max(c.cfg.announce.drain_min)
                        + c.cfg.announce.withdraw_grace + Duration::from_secs(1));
                } else {
                    break Stopped::Requested;
                }
            }
            Ok(()) = shutdown.restart.changed(), if draining_to_stop.is_none() => {
                if c.cfg.bgp.graceful_restart {
                    break Stopped::ForRestart;
                }
                warn!("SIGUSR2 ignored: [bgp] graceful_restart is off (routers would drop every route)");
            }
            _ = tokio::time::sleep_until(stop_wait), if draining_to_stop.is_some() => {
                break Stopped::Requested
            }
            Some((req, reply)) = c.edges.control.recv() => {
                let r = c.on_control(req);
                let _ = reply.send(r);
            }
            Some(()) = shutdown.reload.recv() => c.reload().await,
            msg = incoming.recv() => match msg {
                Some(m) => {
                    debug!(from = %m.from, kind = %m.message.kind(), "message");
                    c.note_arrival(&m.message);
                    c.current_id = m.id;
                    let out = c.core.on_arbiter_message(Instant::now(), m.id, m.message);
                    c.perform(out);
                }
                None => { error!("broker transport stopped"); break Stopped::TransportLost; }
            },
            Some(d) = done_rx.recv() => c.on_done(d),
            Some(ev) = c.edges.peer_events.recv() => c.on_peer_event(ev),
            _ = tokio::time::sleep_until(deadline) => {
                let out = c.core.tick(Instant::now());
                c.perform(out);
                c.fallback_tick(Instant::now());
            }
            _ = status_t.tick() => c.tick_status().await,
            _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                daemon::notify::notify("WATCHDOG=1");
            }
            // Last: runs only when nothing above is ready, so a burst of messages becomes one
            // batch of announces.
            () = std::future::ready(()), if !c.route_batch.is_empty() => c.flush_routes(),
        }
    };
    c.flush_routes();
    if why == Stopped::ForRestart {
        c.stop_for_restart().await;
    } else {
        c.stop().await;
    }
    drop(incoming);
    why
}

fn settings(cfg: &config::Config) -> Settings {
    Settings {
        hostname: cfg.main.hostname.clone(),
        heartbeat_interval: cfg.main.heartbeat_interval,
        tree_request_interval: cfg.main.tree_request_interval,
        announces_request_interval: cfg.main.announces_request_interval,
        withdraw_grace: cfg.announce.withdraw_grace,
        sync_dirs: cfg
            .client
            .sync_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect(),
        ipvs: cfg.main.ipvs,
        version: env!("CARGO_PKG_VERSION").to_string(),
        drain: state::DrainSettings {
            min: cfg.announce.drain_min,
            conns: cfg.announce.drain_conns,
            timeout: cfg.announce.drain_timeout,
        },
    }
}

/// The firewall check of the config.
fn firewall_hook(cfg: &config::Config) -> FirewallHook {
    FirewallHook {
        command: cfg.announce.firewall_check.clone().unwrap_or_default(),
        tries: cfg.main.firewall_update_try.max(1),
        ..FirewallHook::default()
    }
}

/// Where the drained VIPs are kept across restarts.
fn drained_file(cfg: &config::Config) -> PathBuf {
    cfg.main.state_dir.join("drained.json")
}

/// Kernel work for the worker.
enum KernelJob {
    /// Apply a plan as is (bringing the kernel to the mirror's serial given).
    Plan(ipvs::Plan, u64),
    /// Dump the owned VIPs' services and reconcile them with the wanted tree.
    Full(Tree, BTreeSet<IpAddr>, ipvs::FwmarkVips, u64),
}

/// Runs kernel work one job at a time, in order; a full reconcile makes the jobs queued before
/// it pointless, so they are skipped.
fn spawn_kernel_worker(
    kernel: Arc<dyn Services>,
    done: mpsc::UnboundedSender<Done>,
) -> mpsc::UnboundedSender<KernelJob> {
    let (tx, mut rx) = mpsc::unbounded_channel::<KernelJob>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(j) = rx.try_recv() {
                batch.push(j);
            }
            if let Some(last_full) = batch.iter().rposition(|j| matches!(j, KernelJob::Full(..))) {
                batch.drain(..last_full);
            }
            for job in batch {
                let (serial, r) = match job {
                    KernelJob::Plan(plan, serial) => (serial, kernel.apply(plan).await),
                    KernelJob::Full(wanted, owned, marks, serial) => {
                        (serial, kernel.reconcile(wanted, owned, marks).await)
                    }
                };
                if done.send(Done::Reconciled(serial, r)).is_err() {
                    return;
                }
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
    reconciler: Option<mpsc::UnboundedSender<KernelJob>>,
    started: Instant,
    was_connected: bool,
    /// When the first `syn_announce` / `fin_announce` of a VIP not yet acted on arrived, for
    /// the latency histograms.
    syn_at: BTreeMap<IpAddr, Instant>,
    fin_at: BTreeMap<IpAddr, Instant>,
    /// Transport counters as last exported.
    exported: Option<CountersSnapshot>,
    /// When each BGP peer was last seen Established.
    peer_up_at: BTreeMap<String, Instant>,
    /// Withdraws handed to the speaker and not yet on the wire.
    withdraws_pending: usize,
    /// Runs `execute` messages (allow-list, once per message id, one at a time).
    executor: Arc<execute::Executor>,
    /// The id of the message the core is handling (an `execute` runs once per id).
    current_id: crate::wire::MessageId,
    /// The speaker's settings in force (a reload changes its attributes only).
    running_speaker: bgp::SpeakerConfig,
    /// After a graceful restart, until End-of-RIB is released.
    eor: Option<restart::EorGate>,
    /// Announces waiting to go to the speaker together.
    route_batch: route_batch::RouteBatch,
    /// Prepares running and waiting.
    prepares: prepares::Prepares,
    /// The fallback to the balancer's own keepalived (`None`: `fallback_after = 0`).
    fallback: Option<fallback_link::Link>,
}

impl Client {
    /// Remembers when a syn or fin arrived, for the latency histograms (bounded by the VIPs
    /// of this balancer: entries go when the VIP is announced or withdrawn).
    fn note_arrival(&mut self, m: &crate::wire::Message) {
        let now = Instant::now();
        match m {
            crate::wire::Message::SynAnnounce(s) => {
                for vip in s.vips.keys() {
                    if self.core.is_mine(*vip) {
                        self.syn_at.entry(*vip).or_insert(now);
                    }
                }
            }
            crate::wire::Message::FinAnnounce(f) => {
                for vip in &f.vips {
                    if self.core.vip_state(*vip) != announce::State::Idle {
                        self.fin_at.entry(*vip).or_insert(now);
                        self.syn_at.remove(vip);
                    }
                }
            }
            crate::wire::Message::Heartbeat(hb)
                if hb.role == crate::wire::messages::PeerRole::Server =>
            {
                self.outbox.set_batches(
                    crate::wire::messages::SERVER_ADDRESS,
                    hb.reads_ack_batches(),
                );
                self.fallback_heard(now)
            }
            _ => {}
        }
    }

    /// Performs the core's commands, in order, except that their withdraws go first, in one
    /// batch, and announces wait in a batch for an idle loop (`route_batch.rs`); none of
    /// them waits.
    fn perform(&mut self, cmds: Vec<Cmd>) {
        let (withdraws, last_withdraw) = route_batch::withdraws(&cmds);
        self.withdraw_now(withdraws, &last_withdraw);
        for (i, cmd) in cmds.into_iter().enumerate() {
            match cmd {
                Cmd::Send(to, m) => self.outbox.send(to, m),
                Cmd::Announce { vip, .. } if route_batch::superseded(&last_withdraw, vip, i) => {}
                Cmd::Announce {
                    vip,
                    local_pref,
                    drain,
                    communities,
                } => {
                    if drain {
                        info!(%vip, "announcing drained (GRACEFUL_SHUTDOWN, LOCAL_PREF 0)");
                    } else {
                        info!(%vip, local_pref, "announcing");
                    }
                    let attrs = self.fitting_attrs(vip, local_pref, drain, &communities);
                    self.queue_announce(vip, attrs);
                    self.metrics.bgp_announces.inc();
                    if let Some(t) = self.syn_at.remove(&vip) {
                        self.metrics
                            .announce_latency
                            .observe(t.elapsed().as_secs_f64());
                    }
                }
                Cmd::Withdraw { .. } => {}
                Cmd::Prepare {
                    vip,
                    attempt,
                    services,
                } => self.prepare(vip, attempt, services),
                Cmd::RemoveAddress { vip, services } => self.spawn_removal(vip, services),
                Cmd::Reconcile {
                    wanted,
                    owned,
                    marks,
                    serial,
                } => {
                    if let Some(r) = &self.reconciler {
                        let _ = r.send(KernelJob::Full(wanted, owned, marks, serial));
                    }
                }
                Cmd::ApplyPlan { plan, serial } => {
                    if let Some(r) = &self.reconciler {
                        let _ = r.send(KernelJob::Plan(plan, serial));
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
                Cmd::CountConns { vip } => {
                    let done = self.done.clone();
                    match self.edges.kernel.clone() {
                        Some(k) => {
                            let marks = self.core.marks_owned().clone();
                            tokio::spawn(async move {
                                let n = k.conns(vip, marks).await;
                                let _ = done.send(Done::Conns { vip, n });
                            });
                        }
                        None => {
                            let _ = done.send(Done::Conns { vip, n: Ok(0) });
                        }
                    }
                }
                Cmd::SaveDrained(vips) => {
                    let path = drained_file(&self.cfg);
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = crate::daemon::state_file::save(&path, &vips) {
                            error!(file = %path.display(), error = %e,
                                   "drained VIPs not saved: a restart would forget them");
                        }
                    });
                }
                Cmd::WriteFiles(files) => self.write_files(files),
                Cmd::TakenBack => self.taken_back(),
                Cmd::Execute(ex) => self.execute(ex),
                Cmd::Note(n) => self.note(n),
            }
        }
    }

    /// A VIP route's attributes; when its own communities leave no room for the prefix in an
    /// UPDATE beside the speaker-wide ones (RFC 4271 §4.1), they are refused and counted and
    /// the route goes out without them: an UPDATE without NLRI is never sent.
    fn fitting_attrs(
        &self,
        vip: IpAddr,
        local_pref: u32,
        drain: bool,
        communities: &[String],
    ) -> bgp::RouteAttrs {
        match edges::fitting_route_attrs(&self.running_speaker, local_pref, drain, communities) {
            Ok(attrs) => attrs,
            Err((attrs, too)) => {
                error!(%vip, error = %too, "the VIP's communities do not fit an UPDATE: announced without them");
                self.metrics.communities_refused.inc();
                attrs
            }
        }
    }

    /// A request of the control socket.
    fn on_control(&mut self, req: control::Request) -> control::Reply {
        use control::{Reply, Request};
        let now = Instant::now();
        let list = |v: &[IpAddr]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        match req {
            Request::Drain {
                balancer: Some(_), ..
            }
            | Request::Undrain {
                balancer: Some(_), ..
            } => Reply::refused("--balancer is for the arbiter; on a balancer name VIPs"),
            Request::Drain {
                vips, timeout_s, ..
            } => {
                let timeout = match timeout_s.map(Duration::try_from_secs_f64) {
                    None => None,
                    Some(Ok(t)) => Some(t),
                    Some(Err(_)) => return Reply::refused("--timeout must be a number of seconds"),
                };
                let unknown: Vec<IpAddr> = vips
                    .iter()
                    .filter(|v| !self.core.is_mine(**v))
                    .copied()
                    .collect();
                if !unknown.is_empty() {
                    return Reply::refused(format!(
                        "not VIPs of this balancer: {}",
                        list(&unknown)
                    ));
                }
                let (out, done) = self
                    .core
                    .drain(now, (!vips.is_empty()).then_some(vips), timeout);
                self.perform(out);
                info!(vips = ?done, "drain started");
                Reply::ok(if done.is_empty() {
                    "nothing new to drain".to_owned()
                } else {
                    format!("draining {}", list(&done))
                })
            }
            Request::Undrain { vips, .. } => {
                let (out, done) = self.core.undrain(now, (!vips.is_empty()).then_some(vips));
                self.perform(out);
                info!(vips = ?done, "undrained");
                Reply::ok(if done.is_empty() {
                    "nothing was drained".to_owned()
                } else {
                    format!("undrained {}", list(&done))
                })
            }
            Request::Release { .. } | Request::Forget { .. } => {
                Reply::refused("release and forget are for the arbiter")
            }
            Request::Quorum {
                vip,
                announce,
                local_pref,
            } => self.local_quorum(now, vip, announce, local_pref),
        }
    }

    /// No withdraw is waiting for the wire (for a stop by draining).
    fn withdraws_on_wire(&self) -> bool {
        self.withdraws_pending == 0
    }

    fn spawn_removal(&self, vip: IpAddr, services: bool) {
        let done = self.done.clone();
        let kernel = self.edges.kernel.clone();
        let addrs = self.edges.addrs.clone();
        let marks = self.core.marks_owned().clone();
        tokio::spawn(async move {
            let mut result = addrs.remove(vip).await;
            if let (true, Some(k)) = (services, kernel) {
                if let Err(e) = k.reconcile(Tree::new(), BTreeSet::from([vip]), marks).await {
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
                self.prepare_ended();
                if let Err(e) = &result {
                    warn!(%vip, error = %e, "prepare failed; the VIP stays idle");
                    self.metrics.prepare_failures.inc();
                }
                self.core.prepared(now, vip, attempt, result)
            }
            Done::Withdrawn { vip, ticket } => {
                debug!(%vip, "withdraw on the wire");
                self.withdraws_pending = self.withdraws_pending.saturating_sub(1);
                if let Some(t) = self.fin_at.remove(&vip) {
                    self.metrics
                        .withdraw_latency
                        .observe(t.elapsed().as_secs_f64());
                }
                self.core.withdrawn(now, vip, ticket)
            }
            Done::Removed { vip, result } => self.core.removed(vip, result),
            Done::Conns { vip, n } => self.core.conns(now, vip, n),
            Done::KeepalivedStopped => {
                self.core.verify_now(now);
                Vec::new()
            }
            Done::Reconciled(serial, r) => {
                let r = r.map(|a| {
                    self.metrics.ipvs_apply.observe(a.took.as_secs_f64());
                    self.metrics.ipvs_ops.inc_by(a.planned as u64);
                    if a.planned > 0 {
                        info!(
                            ops = a.planned,
                            failed = a.failures.len(),
                            ms = a.took.as_millis() as u64,
                            "IPVS mirrored"
                        );
                    }
                    for f in &a.failures {
                        warn!(failure = %f, "IPVS operation failed; a full reconcile repairs it");
                        self.metrics.ipvs_failures.inc();
                    }
                    a.failures.len()
                });
                let r = match r {
                    Ok(0) => Ok(()),
                    Ok(n) => Err(format!("{n} operations failed")),
                    Err(e) => Err(e),
                };
                self.core.reconciled(now, serial, r)
            }
        };
        self.perform(out);
    }

    fn note(&self, n: Note) {
        let m = &self.metrics;
        match n {
            Note::NotMine(vip) => {
                warn!(%vip, "announce refused: syn_announce for a VIP the mapping does not give this balancer");
                m.announce_refused.inc();
            }
            Note::Vip(vip, ev) => {
                debug!(%vip, event = %ev, "announce event");
                m.announce_events
                    .get_or_create(&EventLabel {
                        event: event_label(&ev),
                    })
                    .inc();
            }
            Note::Mapping(n) => info!(vips = n, "mapping: this balancer serves {n} VIPs"),
            Note::OldTree { got, have } => {
                warn!(got, have, "tree older than the mirror ignored");
                m.old_trees.inc();
            }
            Note::ChangesGap { from, have } => {
                debug!(from, have, "changes do not apply: asking for the tree")
            }
            Note::ArbiterRestarted => info!("arbiter restarted: re-syncing"),
            Note::LateHeartbeat => {
                debug!("arbiter heartbeat older than one taken already (published again): dropped");
                m.messages_ignored
                    .get_or_create(&of_type("heartbeat"))
                    .inc();
            }
            Note::Reconnected => info!("broker reachable again: re-syncing"),
            Note::StaleResync(n) => {
                warn!(dropped = n, "messages arrived stale: asking the arbiter for mapping, tree and announces again");
                m.stale_resyncs.inc();
            }
            Note::AckRepair(n) => {
                warn!(
                    vips = n,
                    "no go from the arbiter {} s after the ack: asking for the announces again",
                    state::ACK_REPAIR_AFTER.as_secs()
                );
                m.ack_repairs.inc();
            }
            Note::RemovalCancelled(vip) => {
                info!(%vip, "address kept: the VIP was asked for again before its removal")
            }
            Note::Unsolicited(kind) => {
                warn!(kind, "answer nobody asked for: ignored");
                m.unsolicited.get_or_create(&of_type(kind)).inc();
            }
            Note::InFallback(kind) => {
                debug!(
                    kind,
                    "arbiter's announce message ignored: keepalived decides in fallback"
                )
            }
            Note::Ignored(kind) => {
                debug!(kind, "message not for a client: ignored");
                m.messages_ignored.get_or_create(&of_type(kind)).inc();
            }
            Note::SynBeforeMapping => {
                debug!("syn_announce before the first mapping: kept until the mapping arrives")
            }
            Note::Drained(vip) => {
                debug!(%vip, "syn_announce of a drained VIP: not acted on")
            }
            Note::Late { kind, vip } => {
                info!(kind, %vip, "older than the arbiter's last word on the VIP: not acted on");
                m.messages_ignored.get_or_create(&of_type(kind)).inc();
            }
            Note::DrainDone {
                vip,
                conns,
                timed_out,
            } => {
                if timed_out {
                    warn!(%vip, ?conns, "drain timeout: withdrawing with connections left");
                } else {
                    info!(%vip, ?conns, "drained: withdrawing");
                }
            }
            Note::Failed(what) => {
                error!(failure = %what, "failed");
                m.ipvs_failures.inc();
            }
        }
    }

    fn write_files(&self, files: Vec<crate::wire::messages::SyncFile>) {
        let dirs = self.cfg.client.sync_dirs.clone();
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            for f in files {
                match sync::write(&dirs, &f) {
                    Ok(path) => {
                        info!(file = %path.display(), bytes = f.content.len(), "sync: written")
                    }
                    Err(e) => {
                        warn!(error = %e, "sync: refused");
                        metrics.sync_refused.inc();
                    }
                }
            }
        });
    }

    fn execute(&self, ex: crate::wire::messages::Execute) {
        let executor = Arc::clone(&self.executor);
        let timeout = Duration::from_secs(ex.timeout_s.into());
        let metrics = self.metrics.clone();
        let id = self.current_id;
        tokio::spawn(async move {
            match executor.run(id, &ex.argv, timeout).await {
                Ok(r) => {
                    info!(argv = ?ex.argv, rule = r.rule, code = ?r.code, output = %r.output_tail.trim_end(), "execute: done")
                }
                Err(e) => {
                    warn!(error = %e, "execute: refused or failed");
                    metrics.execute_refused.inc();
                }
            }
        });
    }

    fn on_peer_event(&self, ev: bgp::PeerEvent) {
        match ev {
            bgp::PeerEvent::Up { name } => {
                info!(peer = %name, "BGP session established");
                self.metrics
                    .bgp_session_ups
                    .get_or_create(&PeerLabel { peer: name })
                    .inc();
            }
            bgp::PeerEvent::Down { name, reason } => {
                warn!(peer = %name, %reason, "BGP session down");
                self.metrics
                    .bgp_session_downs
                    .get_or_create(&PeerLabel { peer: name })
                    .inc();
            }
        }
    }

    async fn tick_status(&mut self) {
        let now = Instant::now();
        let connected = self.bus.connected();
        if connected != self.was_connected {
            let out = self.core.set_connected(now, connected);
            self.perform(out);
            self.was_connected = connected;
            self.fallback_connected(now, connected);
        }
        let peers = self.edges.routes.peers().await;
        let bfd_rows = match &self.edges.bfd {
            Some(b) => b.rows().await,
            None => BTreeMap::new(),
        };
        let announced = self.core.announced();
        let m = &self.metrics;
        m.broker_connected.set(i64::from(connected));
        m.export_broker_node(self.bus.broker_node());
        m.vips_announced.set(announced.len() as i64);
        m.outbox_depth.set(self.outbox.depth() as i64);
        if let Some(t) = self.core.last_arbiter_heartbeat() {
            m.last_heartbeat_age
                .set(now.saturating_duration_since(t).as_secs_f64());
        }
        let mut rows = Vec::new();
        for p in &peers {
            let up = p.state == "established";
            m.bgp_peer_up
                .get_or_create(&PeerLabel {
                    peer: p.name.clone(),
                })
                .set(i64::from(up));
            if up {
                self.peer_up_at.insert(p.name.clone(), now);
            }
            let since = self
                .peer_up_at
                .get(&p.name)
                .copied()
                .unwrap_or(self.started);
            let hold = self
                .cfg
                .bgp
                .peer(&p.name)
                .and_then(|c| c.hold_time)
                .unwrap_or(self.cfg.bgp.hold_time);
            rows.push(PeerRow {
                name: p.name.clone(),
                address: Some(p.address),
                remote_as: p.remote_as,
                state: p.state.clone(),
                uptime_s: p.uptime_secs.map(|s| s as f64),
                down_s: (!up).then(|| now.saturating_duration_since(since).as_secs_f64()),
                hold_time_s: f64::from(hold),
                routes_sent: p.routes_sent,
                updates_sent: p.updates_sent,
                malformed_in: p.malformed_in,
                last_error: p.last_error.clone(),
                bfd: bfd_rows.get(&p.name).cloned(),
            });
        }
        for (name, row) in &bfd_rows {
            m.bfd_session_up
                .get_or_create(&PeerLabel { peer: name.clone() })
                .set(i64::from(row.state == "up"));
        }
        m.export_bus(&mut self.exported, self.bus.counters().snapshot());
        m.export_clocks(&self.bus.clock_offsets());
        let drains: BTreeMap<IpAddr, &state::Draining> = self.core.drains().collect();
        let vips = self
            .core
            .mine()
            .map(|vip| ClientVip {
                vip,
                state: self.core.vip_state(vip).name().to_owned(),
                local_pref: announced.get(&vip).copied(),
                drain: drains.get(&vip).map(|d| DrainRow {
                    step: d.step.name().to_owned(),
                    conns: d.conns,
                    since_s: now.saturating_duration_since(d.started).as_secs_f64(),
                }),
            })
            .collect();
        let age = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_secs_f64());
        let mut queues = BTreeMap::from([("outbox".to_owned(), self.outbox.depth() as u64)]);
        m.export_queue_depths(&self.bus.queue_depths(), &mut queues);
        self.status.set(Status::Client(ClientStatus {
            common: Common {
                hostname: self.cfg.main.hostname.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_s: self.started.elapsed().as_secs_f64(),
                broker: daemon::status::Broker {
                    connected,
                    node: self.bus.broker_node(),
                },
                queues,
                dropped: daemon::dropped(self.bus.counters()),
                clocks: self.bus.clock_offsets(),
                workers: [(
                    "tree".to_owned(),
                    Worker {
                        age_s: age(self.core.last_reconcile_ok()),
                        interval_s: self.cfg.main.tree_request_interval.as_secs_f64(),
                        error: None,
                    },
                )]
                .into(),
            },
            last_heartbeat_age_s: age(self.core.last_arbiter_heartbeat()),
            tree_serial: self.core.applied_serial().unwrap_or(0),
            peers: rows,
            vips,
            fallback: self.fallback_row(now),
        }));
    }

    /// SIGTERM: Cease to every peer (routers withdraw everything at once); with
    /// `remove_vips_on_stop`, the addresses go `withdraw_grace` after the Cease is written.
    async fn stop(mut self) {
        self.fallback_stop().await;
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
