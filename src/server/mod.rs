//! `ipvs-sync server`: the arbiter daemon.
//!
//! ```text
//!  Bus (broker) ─ incoming ───────────────────────┐
//!  quorum socket (ipvs-sync quorum) ──────────────┤
//!  workers (workers.rs): desc thread, IPVS dump,  ┼─▶ loop ─ State (pure: state.rs) ─▶ Outbox ─▶ Bus
//!    mapping rebuild ─────────────────────────────┤
//!  timers: desc scan, mapping, expiry, heartbeat, │
//!    status; SIGHUP / SIGTERM ────────────────────┘
//! ```
//!
//! The loop owns [`state::State`]; every decision is made there without I/O, and the loop
//! only feeds it events and queues what it returns. Nothing slow runs on the loop: desc
//! files, the kernel dump, the mapping rebuild (and the desc locks it takes) and `sync` file
//! reads run on workers that report back. Requests beyond `client_requests_queue_limit` wait
//! in the broker (prefetch is bounded), not in memory. Until it has read its mapping and tree
//! and `[server] startup_hold` has passed, it answers no balancer (see [`Server::hold`]).

pub mod caps;
pub mod fleet;
pub mod state;
pub mod sync_serve;
pub mod workers;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use announce::known_ports::KnownPorts;
use announce::DescState;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::cmd::Stopped;
use crate::daemon::bus::{AmqpBus, Bus};
use crate::daemon::control;
use crate::daemon::metrics::{of_type, Metrics};
use crate::daemon::quorum_socket::{self, QuorumEvent};
use crate::daemon::status::{
    ClientRow, Common, HeldRow, QuorumFailure, ServerStatus, ServerVip, Status, VipBalancer, Worker,
};
use crate::daemon::{self, http::StatusDoc, Outbox, Shutdown, StartError};
use crate::wire::counters::CountersSnapshot;
use crate::wire::messages::{Heartbeat, PeerRole, SyncAnswer, FEATURE_ACK_BATCH};
use crate::wire::{Dest, Incoming, Message, Role};
use caps::{Caps, HeldBecause};
use fleet::Fleet;
use state::{State, VipQuorum};
use workers::{DescJob, DescScan, MappingBuilt, Report};

/// How often the arbiter re-reads its kernel's IPVS tree.
pub const TREE_POLL: Duration = Duration::from_secs(1);

/// The tree serial this run starts from: the clock in milliseconds, so a serial of an
/// earlier run (which moved at most one a second, [`TREE_POLL`]) is never taken for one of
/// this run's. A balancer still at an old serial then sees `changes` that do not follow its
/// own and asks for the tree, instead of skipping them as already applied.
fn first_serial() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2))
}

/// What the arbiter touches outside itself besides files.
pub struct Edges {
    /// The kernel's IPVS table (`None` with `ipvs = false`).
    pub kernel: Option<Arc<Mutex<ipvs::Ipvs>>>,
    /// Quorum hand-offs (from the quorum socket).
    pub quorum: mpsc::Receiver<QuorumEvent>,
    /// Requests of `ipvs-sync release`, `forget`, `drain --balancer` (the control socket).
    pub control: mpsc::Receiver<control::Asked>,
}

/// A periodic job's last success and failure.
#[derive(Debug, Clone)]
struct Job {
    interval: Duration,
    last_ok: Option<Instant>,
    error: Option<String>,
}

struct Server {
    cfg: config::Config,
    name: String,
    state: State,
    descs: std_mpsc::Sender<DescJob>,
    reports: mpsc::UnboundedSender<Report>,
    known_ports: Arc<Mutex<Option<KnownPorts>>>,
    mapping_running: bool,
    outbox: Outbox,
    bus: Arc<dyn Bus>,
    metrics: Metrics,
    status: StatusDoc,
    started: Instant,
    ipvs: bool,
    workers: BTreeMap<&'static str, Job>,
    /// Where each (balancer, VIP) announce stands.
    fleet: Fleet,
    /// Per VIP: the desc file's active and total ports, and when its quorum last changed.
    desc_counts: BTreeMap<IpAddr, (u32, u32, Instant)>,
    /// The mapping, and (with `ipvs = true`) the kernel tree, have been read once.
    mapping_read: bool,
    tree_read: bool,
    /// The desc files of the mapping's VIPs have been read once.
    descs_read: bool,
    /// What [`Server::hold`] said at the last status tick, to log its changes.
    holding: Option<&'static str>,
    /// The last quorum handler failure: when, which VIP, why.
    quorum_failure: Option<(Instant, IpAddr, String)>,
    /// Transport counters as last exported.
    exported: Option<CountersSnapshot>,
}

/// Runs the arbiter until `shutdown` fires, on the real kernel, quorum socket and broker.
/// `Err` = could not start; `Ok` says why it stopped.
pub async fn run(cfg: config::Config, shutdown: Shutdown) -> Result<Stopped, StartError> {
    let name = cfg.main.hostname.clone();
    let (metrics, status) = daemon::observability(&cfg, daemon::metrics::Role::Server).await?;
    let kernel = if cfg.main.ipvs {
        Some(Arc::new(Mutex::new(
            ipvs::Ipvs::connect().map_err(StartError::Ipvs)?,
        )))
    } else {
        info!("ipvs = false: no IPVS tree is read or sent");
        None
    };
    let qpath = cfg.server.quorum_socket.clone();
    let qlistener = quorum_socket::bind(&qpath)
        .map_err(|e| StartError::QuorumSocket(qpath.display().to_string(), e))?;
    let (qtx, qrx) = mpsc::channel(1024);
    tokio::spawn(quorum_socket::serve(qlistener, qtx));
    let cpath = cfg.main.control_socket.clone();
    let clistener = control::bind(&cpath)
        .map_err(|e| StartError::ControlSocket(cpath.display().to_string(), e))?;
    let (ctx, crx) = mpsc::channel(16);
    tokio::spawn(control::serve(clistener, ctx));
    let Some((transport, incoming)) =
        daemon::connect_transport(&cfg, Role::Server { name }, &shutdown).await?
    else {
        return Ok(Stopped::Requested);
    };
    let edges = Edges {
        kernel,
        quorum: qrx,
        control: crx,
    };
    let r = serve(
        cfg,
        edges,
        AmqpBus::new(transport),
        incoming,
        shutdown,
        metrics,
        status,
    )
    .await;
    let _ = std::fs::remove_file(&qpath);
    let _ = std::fs::remove_file(&cpath);
    r
}

/// The arbiter's loop on the given edges (the real ones from [`run`], or fakes in tests),
/// until a stop is requested or the broker transport ends.
pub async fn serve(
    cfg: config::Config,
    mut edges: Edges,
    bus: Arc<dyn Bus>,
    mut incoming: mpsc::Receiver<Incoming>,
    mut shutdown: Shutdown,
    metrics: Metrics,
    status: StatusDoc,
) -> Result<Stopped, StartError> {
    let (reports, mut reports_rx) = mpsc::unbounded_channel();
    let descs = workers::spawn_descs(reports.clone()).map_err(StartError::Thread)?;
    if let Some(k) = &edges.kernel {
        workers::spawn_tree(
            k.clone(),
            TREE_POLL,
            cfg.server.ipvs_dump_share,
            reports.clone(),
        );
    }
    let outbox = Outbox::spawn(
        bus.clone(),
        cfg.main.announces_queue_limit.min(1 << 20),
        metrics.clone(),
    );
    let first = first_serial();
    let mut srv = Server {
        name: cfg.main.hostname.clone(),
        state: State {
            serial: first,
            first_serial: first,
            caps: Caps::new(cfg.server.withdraw_limit, cfg.server.withdraw_window),
            drained: crate::daemon::state_file::load(
                &cfg.main.state_dir.join("drained-balancers.json"),
            ),
            ..State::default()
        },
        descs,
        reports,
        known_ports: Arc::new(Mutex::new(None)),
        mapping_running: false,
        outbox,
        bus,
        metrics,
        status,
        started: Instant::now(),
        ipvs: edges.kernel.is_some(),
        workers: BTreeMap::new(),
        fleet: Fleet::default(),
        desc_counts: BTreeMap::new(),
        mapping_read: false,
        tree_read: false,
        descs_read: false,
        holding: None,
        quorum_failure: None,
        exported: None,
        cfg,
    };
    srv.rebuild_mapping();

    let iv = daemon::interval;
    let mut desc_t = iv(srv.cfg.main.vips_description_update_interval);
    let mut mapping_t = iv(srv.cfg.main.mapping_update_interval);
    let mut expire_t = iv(srv
        .cfg
        .main
        .active_consumers_update_interval
        .max(Duration::from_millis(100)));
    let mut heartbeat_t = iv(srv.cfg.main.heartbeat_interval);
    // Two heartbeat intervals without a confirm, at least 5 s (a busy start delays them),
    // at most half the ttl: the arbiter's own path is in doubt.
    let uplink_grace = (srv.cfg.main.heartbeat_interval * 2)
        .max(Duration::from_secs(5))
        .min(srv.cfg.main.consumer_alive_ttl / 2);
    let mut expire_prev = Instant::now();
    // Whether it is proven (`None` until the first confirm): changes are logged.
    let mut uplink_up: Option<bool> = None;
    let mut status_t = iv(Duration::from_secs(1));
    let mut watchdog = daemon::notify::watchdog_interval().map(iv);
    daemon::notify::notify("READY=1\nSTATUS=arbiter running");
    info!(
        startup_hold_s = srv.cfg.server.startup_hold.as_secs_f64(),
        "arbiter running"
    );
    srv.log_hold();
    let why = loop {
        tokio::select! {
            biased;
            _ = shutdown.stop.changed() => break Stopped::Requested,
            Some(()) = shutdown.reload.recv() => srv.reload(),
            Some(ev) = edges.quorum.recv() => srv.on_quorum_handoff(ev),
            Some((req, reply)) = edges.control.recv() => {
                let r = srv.on_control(req).await;
                let _ = reply.send(r);
            }
            Some(r) = reports_rx.recv() => srv.on_report(r),
            msg = incoming.recv() => match msg {
                Some(m) => srv.on_message(m),
                None => { error!("broker transport stopped"); break Stopped::TransportLost; }
            },
            _ = desc_t.tick() => srv.job(DescJob::Scan),
            _ = mapping_t.tick() => srv.rebuild_mapping(),
            _ = expire_t.tick() => {
                let now = Instant::now();
                let last_confirm = srv.outbox.last_confirm();
                let excused = state::unproven(expire_prev, now, last_confirm, uplink_grace);
                expire_prev = now;
                let up = excused.is_zero();
                match (last_confirm.is_some(), uplink_up, up) {
                    (true, Some(true) | None, false) => warn!(grace_s = uplink_grace.as_secs_f64(), "no publisher confirm from the broker: the balancers' silence is not counted until one comes"),
                    (true, Some(false), true) => info!("publisher confirms again: the balancers' silence counts again"),
                    _ => {}
                }
                if last_confirm.is_some() {
                    uplink_up = Some(up);
                }
                srv.state.excuse(excused, now);
                for gone in srv.state.expire(now, srv.cfg.main.consumer_alive_ttl) {
                    warn!(client = %gone, "client silent longer than consumer_alive_ttl: considered gone");
                    srv.outbox.set_batches(&gone, false);
                    srv.fleet.on_gone(&gone, now);
                }
            }
            _ = heartbeat_t.tick() => srv.outbox.send(Dest::Broadcast, srv.heartbeat()),
            _ = status_t.tick() => srv.tick_status(),
            _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                daemon::notify::notify("WATCHDOG=1");
            }
        }
    };
    info!("arbiter stopping");
    srv.outbox.clone().close().await;
    drop(incoming);
    srv.bus.clone().close().await;
    Ok(why)
}

impl Server {
    fn send_all(&mut self, out: state::Out) {
        self.fleet
            .on_sent(&out, &self.state.mapping, Instant::now());
        for (to, msg) in out {
            self.outbox.send(to, msg);
        }
    }

    /// Sends one message (through the fleet view, like [`Server::send_all`]).
    fn send(&mut self, to: Dest, msg: Message) {
        self.send_all(vec![(to, msg)]);
    }

    fn job(&self, j: DescJob) {
        if self.descs.send(j).is_err() {
            error!("desc scan thread is gone");
        }
    }

    /// A periodic job finished: `Ok` resets its age, `Err` keeps its last success and says
    /// why it fails (so `monitor` sees a job that keeps failing, not a fresh one).
    fn worked(&mut self, name: &'static str, interval: Duration, result: Result<(), String>) {
        let job = self.workers.entry(name).or_insert(Job {
            interval,
            last_ok: None,
            error: None,
        });
        job.interval = interval;
        match result {
            Ok(()) => {
                job.last_ok = Some(Instant::now());
                job.error = None;
            }
            Err(e) => job.error = Some(e),
        }
    }

    /// Why no balancer is answered yet, if none is: the mapping or the kernel tree has not
    /// been read, or `[server] startup_hold` has not passed since the start. Balancers keep
    /// what they have meanwhile (fail-static); their next heartbeat after the hold gets the
    /// welcome. An arbiter that knows nothing yet must not speak for the fleet: after a
    /// reboot the desc files (on a tmpfs) come back only as keepalived reports quorum, and
    /// each VIP without one would be withdrawn on every balancer.
    fn hold(&self) -> Option<&'static str> {
        if !self.mapping_read {
            Some("the service mapping has not been read")
        } else if !self.descs_read {
            Some("the desc files have not been read")
        } else if self.ipvs && !self.tree_read {
            Some("the IPVS tree has not been read")
        } else if self.started.elapsed() < self.cfg.server.startup_hold {
            Some("startup_hold has not passed")
        } else {
            None
        }
    }

    /// Logs when [`Server::hold`] changes.
    fn log_hold(&mut self) {
        let now = self.hold();
        if now == self.holding {
            return;
        }
        match now {
            Some(why) if why.starts_with("startup_hold") => info!(
                hold_s = self.cfg.server.startup_hold.as_secs_f64(),
                "not answering balancers yet: {why}"
            ),
            Some(why) => warn!("not answering balancers: {why}"),
            None => info!("answering balancers"),
        }
        self.holding = now;
    }

    /// `ipvs-sync quorum` changed a desc file: read it now (on the desc thread). A forced
    /// hand-off (a `down` the handler could not write) withdraws the VIP at once.
    fn on_quorum_handoff(&mut self, ev: QuorumEvent) {
        debug!(vip = %ev.vip, announce = ev.announce, forced = ev.forced, "quorum hand-off");
        if let Some(e) = &ev.error {
            self.metrics.quorum_handler_failures.inc();
            self.quorum_failure = Some((Instant::now(), ev.vip, e.clone()));
        }
        if ev.forced {
            error!(vip = %ev.vip, error = ev.error.as_deref().unwrap_or(""),
                   "quorum down not recorded in the desc file: VIP withdrawn until a quorum call for it succeeds");
            let out = self.state.force_withdraw(ev.vip);
            self.send_all(out);
            self.job(DescJob::Vip(ev.vip));
        } else if self.state.unforce(ev.vip) {
            info!(vip = %ev.vip, "quorum call succeeded: the desc file decides again");
            self.job(DescJob::Reread(ev.vip));
        } else {
            if !ev.announce {
                // The handler has written the down: withdraw now rather than after the desc
                // thread's read, which confirms it and sends nothing more. An `up` waits for
                // the read: the file carries the VIP's LOCAL_PREF and communities.
                let held_before = self.state.caps.is_held(ev.vip);
                let out = self.state.on_quorum_down(ev.vip, Instant::now());
                self.say_if_newly_held(ev.vip, held_before);
                self.send_all(out);
            }
            self.job(DescJob::Vip(ev.vip));
        }
    }

    fn say_if_newly_held(&self, vip: IpAddr, held_before: bool) {
        if !held_before && self.state.caps.is_held(vip) {
            error!(vip = %vip, limit = ?self.cfg.server.withdraw_limit,
                   "quorum lost past withdraw_limit: VIP kept announced (held) until `ipvs-sync release`");
        }
    }

    fn on_report(&mut self, r: Report) {
        match r {
            Report::Descs(scan) => self.on_descs(scan),
            Report::Tree(t) => self.on_tree(t),
            Report::Mapping(m) => self.on_mapping(m),
        }
    }

    /// The arbiter's heartbeat (to every balancer each second, and to one that joins).
    fn heartbeat(&self) -> Message {
        Message::Heartbeat(Heartbeat {
            role: PeerRole::Server,
            uptime: self.started.elapsed().as_secs(),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            serial: Some(self.state.serial),
            announced: None,
            drained: None,
            features: vec![FEATURE_ACK_BATCH.to_owned()],
        })
    }

    /// A balancer's "`vip` prepared": the go, or a fin when the VIP is no longer wanted there.
    fn on_prepared(&mut self, from: &str, vip: IpAddr) {
        let to = Dest::Client(from.to_owned());
        match self.state.on_ack(from, vip) {
            Ok(go) => {
                info!(client = %from, %vip, "ack_announce: go");
                self.send(to, go);
            }
            Err(why) => {
                warn!(client = %from, %vip, reason = %why, "ack_announce refused");
                self.metrics.ack_refused.inc();
                if why != state::AckRefused::Unknown {
                    let fin = crate::wire::messages::FinAnnounce { vips: vec![vip] };
                    self.send(to, Message::FinAnnounce(fin));
                }
            }
        }
    }

    fn on_message(&mut self, m: Incoming) {
        let from = m.from.clone();
        if let Some(why) = self.hold() {
            let kind = m.message.kind();
            debug!(client = %from, %kind, reason = why, "holding: message left unanswered");
            self.metrics
                .held_messages
                .get_or_create(&of_type(kind.as_str()))
                .inc();
            return;
        }
        let now = Instant::now();
        let to = Dest::Client(from.clone());
        let (beat, announced) = match &m.message {
            Message::Heartbeat(hb) => {
                self.outbox.set_batches(&from, hb.reads_ack_batches());
                let beat = state::Beat {
                    id: m.id,
                    uptime: hb.uptime,
                };
                (Some(beat), hb.announced.clone())
            }
            _ => (None, None),
        };
        let reported = announced.clone();
        let touched = self.state.touch(&from, now, beat, announced);
        if touched == state::Touched::Late {
            debug!(client = %from, id = %m.id, "heartbeat older than one taken already (published again): dropped");
            self.metrics
                .messages_ignored
                .get_or_create(&of_type("heartbeat"))
                .inc();
            return;
        }
        if touched == state::Touched::New {
            info!(client = %from, "client joined");
            let w = self.state.welcome(&from);
            self.send_all(w);
            // After the tree, so its serial is the one the balancer has then: it learns now,
            // not at the next broadcast, that this arbiter reads acks in batches.
            let hb = self.heartbeat();
            self.send(to.clone(), hb);
            if matches!(
                m.message,
                Message::Heartbeat(_)
                    | Message::TreeRequest
                    | Message::MappingRequest
                    | Message::AnnouncesRequest
            ) {
                return; // the welcome answered it
            }
        }
        match m.message {
            Message::Heartbeat(hb) => {
                if let Some(c) = self.state.clients.get_mut(&from) {
                    c.serial = hb.serial;
                    c.drained = hb.drained.unwrap_or_default();
                }
                if let Some(a) = reported {
                    self.fleet.on_heartbeat(&from, &a, now);
                    self.repair_announced(&from, &a);
                }
            }
            Message::TreeRequest => {
                let t = self.state.tree_answer();
                self.send(to, t)
            }
            Message::ServicesRequest(r) => {
                let a = self.state.services_answer(&r.vips);
                self.send(to, a)
            }
            Message::MappingRequest => {
                let a = self.state.mapping_for(&from);
                self.send(to, a)
            }
            Message::AnnouncesRequest => {
                let a = self.state.announces_answer(&from);
                self.send_all(a)
            }
            Message::AckPrepared(ack) => self.on_prepared(&from, ack.vip),
            // Each VIP as if its ack had come alone (the VIPs of a batch are distinct).
            Message::AckPreparedBatch(b) => {
                for vip in b.vips {
                    self.on_prepared(&from, vip);
                }
            }
            Message::SyncRequest(r) => {
                // File reads off the loop; the answer goes out when they are done.
                let dirs = self.cfg.server.sync_dirs.clone();
                let max_bytes = self.cfg.messages.max_bytes;
                let outbox = self.outbox.clone();
                tokio::task::spawn_blocking(move || {
                    let files = sync_serve::answer(&dirs, &r, max_bytes).files;
                    outbox.send(to, Message::Sync(SyncAnswer { files }));
                });
            }
            other => {
                debug!(client = %from, kind = %other.kind(), "message not for the arbiter: ignored");
                self.metrics
                    .messages_ignored
                    .get_or_create(&of_type(other.kind().as_str()))
                    .inc();
            }
        }
    }

    /// A balancer's heartbeat listed what it announces: withdraw what it should not, and
    /// say again what it has been missing for long.
    fn repair_announced(&mut self, client: &str, announced: &[IpAddr]) {
        let out = self.state.on_announced(client, announced, Instant::now());
        for (_, msg) in &out {
            match msg {
                Message::FinAnnounce(f) => {
                    warn!(client, vips = ?f.vips, "balancer announces VIPs the desc or mapping does not give it: fin_announce again");
                    self.metrics.fin_repairs.inc_by(f.vips.len() as u64);
                }
                Message::SynAnnounce(s) => {
                    let vips: Vec<&IpAddr> = s.vips.keys().collect();
                    warn!(
                        client,
                        ?vips,
                        after_s = state::SYN_REPAIR_AFTER.as_secs(),
                        "balancer still does not announce VIPs it should: syn_announce again"
                    );
                    self.metrics.syn_repairs.inc_by(s.vips.len() as u64);
                }
                _ => {}
            }
        }
        self.send_all(out);
    }

    /// A request of the control socket.
    async fn on_control(&mut self, req: control::Request) -> control::Reply {
        use control::{Reply, Request};
        match req {
            Request::Release { vips, all } => {
                if vips.is_empty() && !all {
                    return Reply::refused("name the VIPs to release, or --all");
                }
                let (released, out) = self.state.release((!all).then_some(&vips[..]));
                if released.is_empty() {
                    return Reply::refused("no such VIP is held");
                }
                warn!(vips = ?released, "held withdrawals released by the operator");
                self.send_all(out);
                let names: Vec<String> = released.iter().map(|v| v.to_string()).collect();
                Reply::ok(format!("withdrawn: {}", names.join(" ")))
            }
            Request::Forget { host } => self.forget(&host).await,
            Request::Drain {
                balancer: Some(host),
                timeout_s,
                ..
            } => self.drain_balancer(&host, true, timeout_s),
            Request::Undrain {
                balancer: Some(host),
                ..
            } => self.drain_balancer(&host, false, None),
            Request::Drain { .. } | Request::Undrain { .. } => {
                Reply::refused("on the arbiter, name a balancer: ipvs-sync drain --balancer HOST")
            }
            Request::Quorum { .. } => {
                Reply::refused("quorum calls reach the arbiter on its quorum socket")
            }
        }
    }

    /// Drains (or undrains) a whole balancer: a signed `drain` to it, and no `syn_announce`
    /// to it until undrained (kept across a restart of the arbiter).
    fn drain_balancer(
        &mut self,
        host: &str,
        drain: bool,
        timeout_s: Option<f64>,
    ) -> control::Reply {
        if !self.state.mapping.contains_key(host) && !self.state.clients.contains_key(host) {
            return control::Reply::refused(format!("{host} is neither in the mapping nor live"));
        }
        let Some(out) = self.state.drain_balancer(host, drain, timeout_s) else {
            return control::Reply::ok(format!(
                "{host} is already {}",
                if drain { "drained" } else { "undrained" }
            ));
        };
        self.save_drained();
        self.send_all(out);
        if drain {
            warn!(balancer = host, "balancer drained by the operator");
            control::Reply::ok(format!("draining {host}"))
        } else {
            info!(balancer = host, "balancer undrained by the operator");
            // It asks for its announces itself once undrained.
            control::Reply::ok(format!("undrained {host}"))
        }
    }

    fn save_drained(&self) {
        let path = self.cfg.main.state_dir.join("drained-balancers.json");
        let set = self.state.drained.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::daemon::state_file::save(&path, &set) {
                error!(file = %path.display(), error = %e,
                       "drained balancers not saved: a restart of the arbiter would forget them");
            }
        });
    }

    /// Forgets a decommissioned balancer: out of the live set and the fleet view, and its
    /// queue deleted from the broker (so broadcasts stop piling up there).
    async fn forget(&mut self, host: &str) -> control::Reply {
        let was_live = self.state.clients.remove(host).is_some();
        self.fleet.forget(host);
        let url = self.cfg.amqp_url();
        let password = self.cfg.secrets.amqp_password.as_ref().map(|p| p.expose());
        let tls = crate::wire::amqp::TlsFiles::from_config(&self.cfg);
        let role = Role::Client {
            hostname: host.to_owned(),
        };
        // Both of its queues (one per lane): the dropped counts add up.
        let mut deleted = Ok(0);
        let mut names = Vec::new();
        for &lane in role.lanes() {
            let queue = role.lane_queue(lane);
            let n = crate::wire::oneshot::delete_queue(
                &url,
                password,
                &tls,
                &queue,
                Duration::from_secs(5),
            )
            .await;
            deleted = match (deleted, n) {
                (Ok(a), Ok(b)) => Ok(a + b),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            names.push(queue);
        }
        let queue = names.join(" and ");
        let mapped = self.state.mapping.contains_key(host);
        let note = if mapped {
            " (the mapping still names it: remove its keepalived configs too)"
        } else {
            ""
        };
        match deleted {
            Ok(n) => {
                info!(balancer = host, queue, dropped = n, "balancer forgotten");
                control::Reply::ok(format!(
                    "{host} forgotten{}; queues {queue} deleted ({n} messages dropped){note}",
                    if was_live { "" } else { " (it was not live)" }
                ))
            }
            Err(e) => control::Reply::refused(format!(
                "{host} forgotten, but its queues {queue} were not all deleted: {e}{note}"
            )),
        }
    }

    /// Starts a mapping rebuild unless one is running.
    fn rebuild_mapping(&mut self) {
        if self.mapping_running {
            return;
        }
        self.mapping_running = true;
        workers::spawn_mapping(
            self.cfg.clone(),
            self.known_ports.clone(),
            self.reports.clone(),
        );
    }

    fn on_mapping(&mut self, built: MappingBuilt) {
        self.mapping_running = false;
        let interval = self.cfg.main.mapping_update_interval;
        if !built.forgotten.is_empty() {
            self.job(DescJob::FullScan);
        }
        let map = match built.mapping {
            Ok(m) => {
                self.worked("mapping", interval, Ok(()));
                m
            }
            Err(e) => {
                error!(error = %e, "mapping not rebuilt: keeping the previous one");
                self.metrics.mapping_errors.inc();
                self.worked("mapping", interval, Err(e));
                return;
            }
        };
        let first = !self.mapping_read;
        self.mapping_read = true;
        let out = self.state.on_service_mapping(map, Instant::now());
        if out.is_empty() && !first {
            return;
        }
        info!(
            balancers = self.state.mapping.len(),
            vips = self.state.all_vips().len(),
            "mapping changed"
        );
        self.send_all(out);
        self.fleet.retain_mapped(&self.state.mapping);
        let paths = self
            .state
            .all_vips()
            .into_iter()
            .map(|v| (v, self.cfg.desc_path(v)))
            .collect();
        self.job(DescJob::Paths(paths));
    }

    fn on_descs(&mut self, scan: DescScan) {
        if scan.full {
            self.metrics.desc_full_scans.inc();
        }
        if scan.paths_set && self.mapping_read {
            self.descs_read = true;
        }
        if scan.asked.is_none() {
            let iv = self.cfg.main.vips_description_update_interval;
            self.worked("desc", iv, Ok(()));
        }
        if let Some((watched, unwatched)) = scan.watch {
            if unwatched > 0 {
                warn!(
                    watched,
                    unwatched,
                    "desc directories not watched (missing, or fs.inotify.max_user_watches): every desc file is looked at on every scan until they are"
                );
            }
        }
        let changed: Vec<IpAddr> = scan.updates.iter().map(|u| u.vip).collect();
        for up in scan.updates {
            let q = match &up.new {
                DescState::Valid(d) => Some(VipQuorum {
                    announce: d.announce,
                    local_pref: d.local_preference,
                }),
                DescState::Missing => None,
                DescState::Invalid(e) => {
                    // A broken file never flips an announce: keep what we had, loudly.
                    error!(vip = %up.vip, error = %e, "desc file unreadable: keeping the previous state");
                    self.metrics.desc_errors.inc();
                    self.state.on_desc_unreadable(up.vip);
                    continue;
                }
            };
            info!(vip = %up.vip, announce = q.is_some_and(|q| q.announce),
                  local_pref = q.map(|q| q.local_pref), "desc changed");
            let now = Instant::now();
            let counts = match &up.new {
                DescState::Valid(d) => (d.active, d.total),
                _ => (0, 0),
            };
            let flipped = up.old.announce() != up.new.announce();
            let since = match self.desc_counts.get(&up.vip) {
                Some((_, _, t)) if !flipped => *t,
                _ => now,
            };
            self.desc_counts.insert(up.vip, (counts.0, counts.1, since));
            let communities = match &up.new {
                DescState::Valid(d) => d.communities.clone(),
                _ => Vec::new(),
            };
            let new_communities = self.state.set_communities(up.vip, communities);
            let held_before = self.state.caps.is_held(up.vip);
            let mut out = self.state.on_quorum(up.vip, q, now);
            if out.is_empty() && new_communities && q.is_some_and(|q| q.announce) {
                // The VIP's communities alone changed: its balancers announce it again.
                out = self.state.resend(up.vip);
            }
            self.say_if_newly_held(up.vip, held_before);
            self.send_all(out);
        }
        // A hand-off for a desc that did not change says its state again: harmless when
        // repeated, and it heals a message lost on the way.
        if let Some(vip) = scan.asked.filter(|v| !changed.contains(v)) {
            let out = self.state.resend(vip);
            self.send_all(out);
        }
    }

    fn on_tree(&mut self, dumped: workers::TreeDump) {
        self.worked(
            "tree",
            dumped.period,
            dumped.tree.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        self.metrics
            .ipvs_dump_seconds
            .set(dumped.took.as_secs_f64());
        debug!(
            took_ms = dumped.took.as_millis() as u64,
            period_ms = dumped.period.as_millis() as u64,
            "IPVS dumped"
        );
        match dumped.tree {
            Ok(tree) => {
                self.tree_read = true;
                let out = self.state.on_tree(tree);
                if !out.is_empty() {
                    info!(
                        serial = self.state.serial,
                        services = self.state.tree.len(),
                        "IPVS tree changed"
                    );
                    self.send_all(out);
                }
            }
            Err(e) => {
                error!(error = %e, "IPVS dump failed");
                self.metrics.ipvs_failures.inc();
            }
        }
    }

    fn reload(&mut self) {
        match config::Config::load(&self.cfg.file) {
            Ok(new) => {
                info!(config = %self.cfg.file.display(), "configuration reloaded");
                self.state
                    .caps
                    .configure(new.server.withdraw_limit, new.server.withdraw_window);
                self.cfg = new;
                self.rebuild_mapping();
            }
            Err(e) => error!(error = %e, "reload refused: the running configuration stays"),
        }
    }

    fn tick_status(&mut self) {
        self.log_hold();
        let now = Instant::now();
        let connected = self.bus.connected();
        let m = &self.metrics;
        m.broker_connected.set(i64::from(connected));
        m.export_broker_node(self.bus.broker_node());
        m.clients_live.set(self.state.clients.len() as i64);
        m.withdrawals_held.set(self.state.caps.held().len() as i64);
        m.vips_announced
            .set(self.state.quorum.values().filter(|q| q.announce).count() as i64);
        m.tree_serial
            .set(i64::try_from(self.state.serial).unwrap_or(i64::MAX));
        m.holding.set(i64::from(self.holding.is_some()));
        m.outbox_depth.set(self.outbox.depth() as i64);
        m.export_bus(&mut self.exported, self.bus.counters().snapshot());
        m.export_clocks(&self.bus.clock_offsets());
        let vips = self.vip_rows(now);
        let clients = self.client_rows(now);
        let workers = self
            .workers
            .iter()
            .map(|(n, j)| {
                let w = Worker {
                    age_s: j.last_ok.map(|t| now.duration_since(t).as_secs_f64()),
                    interval_s: j.interval.as_secs_f64(),
                    error: j.error.clone(),
                };
                (n.to_string(), w)
            })
            .collect();
        let mut queues = BTreeMap::from([("outbox".to_owned(), self.outbox.depth() as u64)]);
        m.export_queue_depths(&self.bus.queue_depths(), &mut queues);
        self.status.set(Status::Server(ServerStatus {
            common: Common {
                hostname: self.name.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_s: self.started.elapsed().as_secs_f64(),
                broker: daemon::status::Broker {
                    connected,
                    node: self.bus.broker_node(),
                },
                queues,
                dropped: daemon::dropped(self.bus.counters()),
                clocks: self.bus.clock_offsets(),
                workers,
            },
            tree_serial: self.state.serial,
            services: self.state.tree.len(),
            holding: self.holding.map(str::to_owned),
            vips,
            clients,
            quorum_failure: self
                .quorum_failure
                .as_ref()
                .map(|(t, vip, e)| QuorumFailure {
                    age_s: now.duration_since(*t).as_secs_f64(),
                    vip: *vip,
                    error: e.clone(),
                }),
            forced_withdrawn: self.state.forced.iter().copied().collect(),
            withdraw_limit: self.cfg.server.withdraw_limit.map(|l| match l {
                config::WithdrawLimit::Count(n) => {
                    format!("{n} per {}s", self.cfg.server.withdraw_window.as_secs_f64())
                }
                config::WithdrawLimit::Percent(p) => format!(
                    "{p}% per {}s",
                    self.cfg.server.withdraw_window.as_secs_f64()
                ),
            }),
        }));
    }

    /// The fleet view by VIP: its quorum and each balancer the mapping gives it.
    fn vip_rows(&self, now: Instant) -> Vec<ServerVip> {
        let secs = |t: Instant| now.saturating_duration_since(t).as_secs_f64();
        // The mapping turned around once (VIP → its balancers, in the mapping's order), not
        // scanned once per VIP: this runs every second, over every VIP and balancer.
        let mut by_vip: BTreeMap<IpAddr, Vec<&String>> = BTreeMap::new();
        for (name, vips) in &self.state.mapping {
            for v in vips {
                by_vip.entry(*v).or_default().push(name);
            }
        }
        self.state
            .all_vips()
            .into_iter()
            .map(|vip| {
                let q = self.state.quorum.get(&vip);
                let counts = self.desc_counts.get(&vip);
                let balancers = by_vip
                    .get(&vip)
                    .into_iter()
                    .flatten()
                    .map(|&name| {
                        let (stage, since) = match self.fleet.get(name, vip) {
                            Some((s, t)) => (s.name().to_owned(), Some(secs(t))),
                            None => ("-".to_owned(), None),
                        };
                        VipBalancer {
                            name: name.clone(),
                            stage,
                            since_s: since,
                        }
                    })
                    .collect();
                ServerVip {
                    vip,
                    announce: q.is_some_and(|q| q.announce),
                    local_pref: q.map(|q| q.local_pref),
                    active: counts.map(|c| c.0),
                    total: counts.map(|c| c.1),
                    since_s: counts.map(|c| secs(c.2)),
                    held: self.state.caps.held().get(&vip).map(|h| HeldRow {
                        since_s: secs(h.since),
                        because: match h.because {
                            HeldBecause::QuorumLost => "quorum lost",
                            HeldBecause::MappingShrink => "mapping shrink",
                        }
                        .to_owned(),
                    }),
                    balancers,
                }
            })
            .collect()
    }

    /// The fleet view by balancer: every live one and every one the mapping names.
    fn client_rows(&self, now: Instant) -> Vec<ClientRow> {
        let names: std::collections::BTreeSet<&String> = self
            .state
            .clients
            .keys()
            .chain(self.state.mapping.keys())
            .collect();
        names
            .into_iter()
            .map(|n| {
                let live = self.state.clients.get(n);
                let mapped = self.state.mapping.get(n);
                let quorate = mapped.map_or(0, |v| {
                    v.iter()
                        .filter(|x| self.state.quorum.get(x).is_some_and(|q| q.announce))
                        .count()
                });
                let serial = live.and_then(|c| c.serial);
                ClientRow {
                    name: n.clone(),
                    age_s: live.map(|c| now.saturating_duration_since(c.last_seen).as_secs_f64()),
                    vips: mapped.map_or(0, |v| v.len()),
                    quorate,
                    announced: live.map_or(0, |c| c.announced.len()),
                    serial,
                    lag: serial.map(|s| self.state.lag(s)),
                    uptime_s: live.map_or(0, |c| c.uptime),
                    live: live.is_some(),
                    drained: self.state.drained.contains(n)
                        || live.is_some_and(|c| !c.drained.is_empty()),
                }
            })
            .collect()
    }
}
