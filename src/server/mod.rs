//! `ipvs-sync server`: the arbiter daemon.
//!
//! ```text
//!  broker ─Transport─▶ incoming ─────────────┐
//!  quorum socket (ipvs-sync quorum) ─────────┤
//!  desc scan (inotify-named files; all ≥ 10 s) ┤
//!  IPVS dump (1 s, spawn_blocking) ──────────┼─▶ Server loop ─ State (pure) ─▶ outbox ─▶ Transport.send
//!  mapping rebuild (mapping_update_interval) ┤
//!  client expiry, heartbeat, status ─────────┤
//!  SIGHUP / SIGTERM ─────────────────────────┘
//! ```
//!
//! The loop owns [`state::State`]; every decision is made there without I/O, and the loop
//! only feeds it events and queues what it returns. Requests beyond
//! `client_requests_queue_limit` wait in the broker (prefetch is bounded), not in memory.
//! Until it has read its mapping and tree and `[server] startup_hold` has passed, it answers
//! no balancer (see [`Server::hold`]).

pub mod state;
pub mod sync_serve;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use announce::{DescCache, DescState, DescWatch, Seen};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::daemon::{
    self, http::StatusDoc, metrics::Metrics, quorum_socket, Outbox, Shutdown, StartError,
};
use crate::wire::messages::{Heartbeat, PeerRole, SyncAnswer};
use crate::wire::{Dest, Incoming, Message, Role, Transport};
use state::{State, VipQuorum};

/// How often the arbiter re-reads its kernel's IPVS tree.
pub const TREE_POLL: Duration = Duration::from_secs(1);

/// Every desc file is looked at least this often, whatever inotify reports: changes it
/// never reports (NFS, a desc file that is a symlink elsewhere) are seen within this long.
const DESC_FULL_SCAN: Duration = Duration::from_secs(10);

/// The tree serial this run starts from: the clock in milliseconds, so a serial of an
/// earlier run (which moved at most one a second, [`TREE_POLL`]) is never taken for one of
/// this run's. A balancer still at an old serial then sees `changes` that do not follow its
/// own and asks for the tree, instead of skipping them as already applied.
fn first_serial() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2))
}

struct Server {
    cfg: config::Config,
    name: String,
    state: State,
    descs: DescCache,
    /// inotify on the desc directories; `None` where inotify is unavailable (then every
    /// scan looks at every file).
    watch: Option<DescWatch>,
    /// When every desc file was last looked at.
    full_scan: Option<Instant>,
    /// VIP → ports the keepalived configs named at the last mapping rebuild.
    known_ports: Option<announce::known_ports::KnownPorts>,
    outbox: Outbox,
    metrics: Metrics,
    status: StatusDoc,
    started: Instant,
    kernel: Option<Arc<Mutex<ipvs::Ipvs>>>,
    workers: BTreeMap<&'static str, (Instant, Duration)>,
    /// The mapping, and (with `ipvs = true`) the kernel tree, have been read once.
    mapping_read: bool,
    tree_read: bool,
    /// What [`Server::hold`] said at the last status tick, to log its changes.
    holding: Option<&'static str>,
}

/// Runs the arbiter until `shutdown` fires.
pub async fn run(cfg: config::Config, mut shutdown: Shutdown) -> Result<(), StartError> {
    let name = cfg.main.hostname.clone();
    let (metrics, status) = daemon::observability(&cfg).await?;
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
    let (qtx, mut qrx) = mpsc::channel(1024);
    tokio::spawn(quorum_socket::serve(qlistener, qtx));

    let Some((transport, mut incoming)) =
        daemon::connect_transport(&cfg, Role::Server { name: name.clone() }, &shutdown).await?
    else {
        return Ok(());
    };
    let transport = Arc::new(transport);
    let outbox = Outbox::spawn(
        transport.clone(),
        cfg.main.announces_queue_limit.min(1 << 20),
        metrics.clone(),
    );
    let mut srv = Server {
        name,
        state: State {
            serial: first_serial(),
            ..State::default()
        },
        descs: DescCache::new(),
        watch: DescWatch::new()
            .inspect_err(|e| warn!(error = %e, "desc files are polled without inotify"))
            .ok(),
        full_scan: None,
        known_ports: None,
        outbox,
        metrics,
        status,
        started: Instant::now(),
        kernel,
        workers: BTreeMap::new(),
        mapping_read: false,
        tree_read: false,
        holding: None,
        cfg,
    };
    // Mapping, descs and tree before the first client is answered.
    srv.refresh_mapping();
    srv.refresh_descs(None);
    srv.refresh_tree().await;

    let iv = daemon::interval;
    let mut desc_t = iv(srv.cfg.main.vips_description_update_interval);
    let mut tree_t = iv(TREE_POLL);
    let mut mapping_t = iv(srv.cfg.main.mapping_update_interval);
    let mut expire_t = iv(srv
        .cfg
        .main
        .active_consumers_update_interval
        .max(Duration::from_millis(100)));
    let mut heartbeat_t = iv(srv.cfg.main.heartbeat_interval);
    let mut status_t = iv(Duration::from_secs(1));
    let mut watchdog = daemon::notify::watchdog_interval().map(iv);
    daemon::notify::notify("READY=1\nSTATUS=arbiter running");
    info!(
        clients_mapped = srv.state.mapping.len(),
        vips = srv.state.all_vips().len(),
        startup_hold_s = srv.cfg.server.startup_hold.as_secs_f64(),
        "arbiter running"
    );
    srv.log_hold();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.stop.changed() => break,
            Some(()) = shutdown.reload.recv() => {
                srv.reload();
                if let Err(e) = transport.reload() { error!(error = %e, "balancer keys not reloaded: the running keys stay"); }
            }
            Some(ev) = qrx.recv() => {
                debug!(vip = %ev.vip, announce = ev.announce, "quorum hand-off");
                if !srv.refresh_descs(Some(ev.vip)).contains(&ev.vip) {
                    srv.send_all(srv.state.resend(ev.vip));
                }
            }
            msg = incoming.recv() => match msg {
                Some(m) => srv.on_message(m),
                None => { error!("broker transport stopped"); break; }
            },
            _ = desc_t.tick() => { srv.refresh_descs(None); }
            _ = tree_t.tick() => srv.refresh_tree().await,
            _ = mapping_t.tick() => srv.refresh_mapping(),
            _ = expire_t.tick() => {
                for gone in srv.state.expire(Instant::now(), srv.cfg.main.consumer_alive_ttl) {
                    warn!(client = %gone, "client silent longer than consumer_alive_ttl: considered gone");
                }
            }
            _ = heartbeat_t.tick() => {
                let hb = Heartbeat { role: PeerRole::Server, uptime: srv.started.elapsed().as_secs(),
                    version: Some(env!("CARGO_PKG_VERSION").to_string()), serial: Some(srv.state.serial), announced: None };
                srv.outbox.send(Dest::Broadcast, Message::Heartbeat(hb));
            }
            _ = status_t.tick() => srv.tick_status(&transport),
            _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                daemon::notify::notify("WATCHDOG=1");
            }
        }
    }
    info!("arbiter stopping");
    let _ = std::fs::remove_file(&qpath);
    srv.outbox.clone().close().await;
    drop(incoming);
    if let Ok(t) = Arc::try_unwrap(transport) {
        t.close().await;
    }
    Ok(())
}

impl Server {
    fn send_all(&self, out: state::Out) {
        for (to, msg) in out {
            self.outbox.send(to, msg);
        }
    }

    fn worked(&mut self, name: &'static str, interval: Duration) {
        self.workers.insert(name, (Instant::now(), interval));
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
        } else if self.kernel.is_some() && !self.tree_read {
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

    fn on_message(&mut self, m: Incoming) {
        let from = m.from.clone();
        if let Some(why) = self.hold() {
            let kind = m.message.kind();
            debug!(client = %from, %kind, reason = why, "holding: message left unanswered");
            self.metrics
                .inc("ipvs_sync_held_messages_total", &[("type", kind.as_str())]);
            return;
        }
        let now = Instant::now();
        let to = Dest::Client(from.clone());
        let (uptime, announced) = match &m.message {
            Message::Heartbeat(hb) => (Some(hb.uptime), hb.announced.clone()),
            _ => (None, None),
        };
        let reported = announced.clone();
        let is_new = self.state.touch(&from, now, uptime, announced);
        if is_new {
            info!(client = %from, "client joined");
            self.send_all(self.state.welcome(&from));
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
            Message::Heartbeat(_) => {
                if let Some(a) = reported {
                    self.repair_announced(&from, &a);
                }
            }
            Message::TreeRequest => self.outbox.send(to, self.state.tree_answer()),
            Message::ServicesRequest(r) => {
                self.outbox.send(to, self.state.services_answer(&r.vips))
            }
            Message::MappingRequest => self.outbox.send(to, self.state.mapping_for(&from)),
            Message::AnnouncesRequest => self.send_all(self.state.announces_answer(&from)),
            Message::AckPrepared(ack) => match self.state.on_ack(&from, ack.vip) {
                Ok(go) => {
                    info!(client = %from, vip = %ack.vip, "ack_announce: go");
                    self.outbox.send(to, go);
                }
                Err(why) => {
                    warn!(client = %from, vip = %ack.vip, reason = %why, "ack_announce refused");
                    self.metrics.inc("ipvs_sync_ack_refused_total", &[]);
                    if why != state::AckRefused::Unknown {
                        let fin = crate::wire::messages::FinAnnounce {
                            vips: vec![ack.vip],
                        };
                        self.outbox.send(to, Message::FinAnnounce(fin));
                    }
                }
            },
            Message::SyncRequest(r) => {
                let files =
                    sync_serve::answer(&self.cfg.server.sync_dirs, &r, self.cfg.messages.max_bytes)
                        .files;
                self.outbox.send(to, Message::Sync(SyncAnswer { files }));
            }
            other => {
                debug!(client = %from, kind = %other.kind(), "message not for the arbiter: ignored");
                self.metrics.inc(
                    "ipvs_sync_messages_ignored_total",
                    &[("type", other.kind().as_str())],
                );
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
                    self.metrics
                        .add("ipvs_sync_fin_repairs_total", &[], f.vips.len() as u64);
                }
                Message::SynAnnounce(s) => {
                    let vips: Vec<&IpAddr> = s.vips.keys().collect();
                    warn!(
                        client,
                        ?vips,
                        after_s = state::SYN_REPAIR_AFTER.as_secs(),
                        "balancer still does not announce VIPs it should: syn_announce again"
                    );
                    self.metrics
                        .add("ipvs_sync_syn_repairs_total", &[], s.vips.len() as u64);
                }
                _ => {}
            }
        }
        self.send_all(out);
    }

    fn refresh_mapping(&mut self) {
        if self.known_ports.is_none() {
            // What the last run's configs named, before this run's cache replaces it.
            let cache = announce::known_ports::ports_cache(&self.cfg);
            self.known_ports = Some(cache.load().unwrap_or_default());
        }
        let m = &self.cfg.main;
        let mut known = None;
        let built = if m.export_service_mapping_wildcard_to_config {
            config::mapping::build(&m.service_mapping_wildcard).and_then(|r| {
                for s in &r.skipped {
                    warn!(balancer = %s.balancer, file = %s.file.display(), line = s.line, reason = %s.reason,
                          "keepalived service left out of the mapping");
                }
                let vips = r.vips();
                config::mapping::write_json(&m.service_mapping_config, &vips)?;
                if let Err(e) = announce::known_ports::store_known_ports(&self.cfg, &r.ports) {
                    warn!(error = %e, "known-ports cache for quorum not written");
                }
                known = Some(announce::known_ports::known_ports_of(&r.ports));
                Ok(vips)
            })
        } else {
            config::mapping::read_json(&m.service_mapping_config)
        };
        if let Some(known) = known {
            if self.forget_gone_ports(known) {
                self.refresh_descs(None);
            }
        }
        self.worked("mapping", self.cfg.main.mapping_update_interval);
        match built {
            Ok(map) => {
                self.mapping_read = true;
                let out = self.state.on_mapping(map);
                if !out.is_empty() {
                    info!(
                        balancers = self.state.mapping.len(),
                        vips = self.state.all_vips().len(),
                        "mapping changed"
                    );
                    let paths: Vec<(IpAddr, std::path::PathBuf)> = self
                        .state
                        .all_vips()
                        .into_iter()
                        .map(|v| (v, self.cfg.desc_path(v)))
                        .collect();
                    self.descs.set_paths(paths);
                    if let Some(w) = self.watch.as_mut() {
                        w.set_dirs(&self.descs.dirs());
                        if w.unwatched() > 0 {
                            warn!(
                                watched = w.watched(),
                                unwatched = w.unwatched(),
                                "desc directories not watched (missing, or fs.inotify.max_user_watches): every desc file is looked at on every scan until they are"
                            );
                        }
                    }
                    self.send_all(out);
                    self.refresh_descs(None);
                }
            }
            Err(e) => {
                error!(error = %e, "mapping not rebuilt: keeping the previous one");
                self.metrics.inc("ipvs_sync_mapping_errors_total", &[]);
            }
        }
    }

    /// Ports the keepalived configs named for a VIP at the last rebuild (or in the last
    /// run's cache) and no longer name are forgotten in its desc file, so a virtual server
    /// removed while its quorum was down stops holding the VIP back. Returns true when a
    /// desc file was rewritten.
    fn forget_gone_ports(&mut self, now: announce::known_ports::KnownPorts) -> bool {
        let before = self.known_ports.take().unwrap_or_default();
        let mut rewritten = false;
        for (vip, ports) in &now {
            let Some(was) = before.get(vip) else {
                continue;
            };
            let gone: BTreeSet<u16> = was.difference(ports).copied().collect();
            if gone.is_empty() {
                continue;
            }
            match announce::quorum::forget_ports(&self.cfg.desc_path(*vip), &gone, ports) {
                Ok(Some((d, was_announce))) => {
                    info!(%vip, ?gone, active = d.active, total = d.total, announce = d.announce,
                          was_announce, "ports gone from the keepalived configs forgotten in the desc file");
                    rewritten = true;
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(%vip, ?gone, error = %e, "cannot forget ports gone from the keepalived configs");
                    self.metrics.inc("ipvs_sync_desc_errors_total", &[]);
                }
            }
        }
        self.known_ports = Some(now);
        rewritten
    }

    /// Re-reads changed desc files and acts on them; returns the VIPs that changed. Looks
    /// at the files the watch saw change and `also`'s, and at every file when the watch
    /// cannot tell or [`DESC_FULL_SCAN`] has passed since the last such look.
    fn refresh_descs(&mut self, also: Option<IpAddr>) -> BTreeSet<IpAddr> {
        self.worked("desc", self.cfg.main.vips_description_update_interval);
        let seen = self
            .watch
            .as_mut()
            .map_or(Seen::Everything, DescWatch::take);
        let due = self.full_scan.is_none_or(|t| t.elapsed() >= DESC_FULL_SCAN);
        let updates = match seen {
            Seen::Paths(mut paths) if !due => {
                paths.extend(also.map(|v| self.cfg.desc_path(v)));
                self.descs.refresh_paths(&paths)
            }
            _ => {
                self.full_scan = Some(Instant::now());
                self.metrics.inc("ipvs_sync_desc_full_scans_total", &[]);
                self.descs.refresh()
            }
        };
        let mut changed = BTreeSet::new();
        for up in updates {
            changed.insert(up.vip);
            let q = match &up.new {
                DescState::Valid(d) => Some(VipQuorum {
                    announce: d.announce,
                    local_pref: d.local_preference,
                }),
                DescState::Missing => None,
                DescState::Invalid(e) => {
                    // A broken file never flips an announce: keep what we had, loudly.
                    error!(vip = %up.vip, error = %e, "desc file unreadable: keeping the previous state");
                    self.metrics.inc("ipvs_sync_desc_errors_total", &[]);
                    self.state.on_desc_unreadable(up.vip);
                    continue;
                }
            };
            info!(vip = %up.vip, announce = q.is_some_and(|q| q.announce),
                  local_pref = q.map(|q| q.local_pref), "desc changed");
            let out = self.state.on_quorum(up.vip, q);
            self.send_all(out);
        }
        changed
    }

    async fn refresh_tree(&mut self) {
        let Some(k) = self.kernel.clone() else {
            return;
        };
        let dumped =
            tokio::task::spawn_blocking(move || k.lock().unwrap_or_else(|e| e.into_inner()).dump())
                .await;
        self.worked("tree", TREE_POLL);
        match dumped {
            Ok(Ok(mut tree)) => {
                self.tree_read = true;
                tree.clear_stats();
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
            Ok(Err(e)) => {
                error!(error = %e, "IPVS dump failed");
                self.metrics.inc("ipvs_sync_ipvs_failures_total", &[]);
            }
            Err(e) => error!(error = %e, "IPVS dump task failed"),
        }
    }

    fn reload(&mut self) {
        match config::Config::load(&self.cfg.file) {
            Ok(new) => {
                info!(config = %self.cfg.file.display(), "configuration reloaded");
                self.cfg = new;
                self.refresh_mapping();
            }
            Err(e) => error!(error = %e, "reload refused: the running configuration stays"),
        }
    }

    fn tick_status(&mut self, transport: &Transport) {
        self.log_hold();
        let now = Instant::now();
        let connected = transport.is_connected();
        let m = &self.metrics;
        m.set(
            "ipvs_sync_broker_connected",
            &[],
            if connected { 1.0 } else { 0.0 },
        );
        m.set(
            "ipvs_sync_clients_live",
            &[],
            self.state.clients.len() as f64,
        );
        m.set(
            "ipvs_sync_vips_announced",
            &[],
            self.state.quorum.values().filter(|q| q.announce).count() as f64,
        );
        m.set("ipvs_sync_tree_serial", &[], self.state.serial as f64);
        m.set(
            "ipvs_sync_holding",
            &[],
            if self.holding.is_some() { 1.0 } else { 0.0 },
        );
        m.set("ipvs_sync_outbox_depth", &[], self.outbox.depth() as f64);
        daemon::export_transport_counters(m, transport);
        let vip_set: BTreeSet<IpAddr> = self.state.all_vips();
        let vips: Vec<_> = vip_set
            .iter()
            .map(|v| {
                let q = self.state.quorum.get(v);
                serde_json::json!({"vip": v.to_string(), "state": if q.is_some_and(|q| q.announce) {"quorum"} else {"no quorum"},
                                   "local_pref": q.map(|q| q.local_pref), "announce": q.is_some_and(|q| q.announce)})
            })
            .collect();
        let clients: Vec<_> = self
            .state
            .clients
            .iter()
            .map(|(n, c)| {
                serde_json::json!({"name": n, "age_s": now.duration_since(c.last_seen).as_secs_f64(),
                                   "vips": self.state.mapping.get(n).map(|v| v.len()).unwrap_or(0)})
            })
            .collect();
        let workers: serde_json::Map<String, serde_json::Value> = self
            .workers
            .iter()
            .map(|(n, (t, iv))| {
                (n.to_string(), serde_json::json!({"age_s": now.duration_since(*t).as_secs_f64(), "interval_s": iv.as_secs_f64()}))
            })
            .collect();
        self.status.set(serde_json::json!({
            "role": "server",
            "hostname": self.name,
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "broker": {"connected": connected},
            "tree_serial": self.state.serial,
            "services": self.state.tree.len(),
            "vips": vips,
            "clients": clients,
            "queues": {"outbox": self.outbox.depth()},
            "dropped": daemon::dropped_json(transport),
            "transport": transport.status_json(),
            "holding": self.holding,
            "workers": workers,
        }));
    }
}
