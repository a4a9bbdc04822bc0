//! The [`Speaker`]: the handle the client daemon drives.
//!
//! ```text
//!  daemon ──announce/withdraw──▶ Speaker ──▶ routes (the table every new session gets)
//!                                   │      └─▶ each peer's AdjRibOut + Notify (wakes its writer)
//!                                   ├──PeerCmd──▶ peer task (one per peer, see session.rs)
//!                                   └── listener task ──incoming TcpStream by peer address──┘
//!  peer tasks ──PeerEvent (up/down)──▶ daemon (metrics)
//! ```
//! Lock order everywhere: `routes`, then `peers`, then a peer's RIB (see `shared.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use crate::config::{valid_hold, PeerConfig, SpeakerConfig};
use crate::error::BgpError;
use crate::fsm::State;
use crate::listener::{ByAddr, Listener, DEFAULT_LISTEN};
use crate::md5;
use crate::packet::{Notification, CEASE_ADMIN_RESET, CEASE_PEER_DECONFIGURED};
use crate::policy::{attrs_fit, RouteAttrs};
use crate::session::{PeerCmd, PeerTask};
use crate::shared::{lock, PeerShared, SpeakerShared};
use crate::status::{PeerEvent, PeerStatus};
use crate::withdrawal::{PeerWait, WithdrawOutcome, Withdrawal};

struct PeerHandle {
    cfg: PeerConfig,
    shared: Arc<PeerShared>,
    cmd: mpsc::UnboundedSender<PeerCmd>,
    task: JoinHandle<()>,
}

struct Inner {
    shared: Arc<SpeakerShared>,
    peers: Mutex<HashMap<String, PeerHandle>>,
    by_addr: ByAddr,
    listener: Mutex<Option<Listener>>,
    interned: Mutex<HashSet<Arc<RouteAttrs>>>,
    runtime: tokio::runtime::Handle,
}

/// The embedded BGP speaker. Cheap to clone; all clones drive the same speaker.
#[derive(Clone)]
pub struct Speaker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cfg = self.inner.shared.cfg();
        f.debug_struct("Speaker")
            .field("local_as", &cfg.local_as)
            .field("router_id", &cfg.router_id)
            .finish_non_exhaustive()
    }
}

/// What [`Speaker::reconfigure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconfigured {
    /// The settings were the same.
    Unchanged,
    /// Applied with every session kept: routes whose attributes changed went out again as
    /// UPDATEs (an implicit replace at the routers).
    Applied,
    /// A change that needs a new OPEN (AS, router id, hold time, graceful restart): every
    /// session was restarted (Cease / Administrative Reset).
    SessionsRestarted,
}

/// The settings a session's OPEN carries: changing one needs a new session.
fn open_settings(c: &SpeakerConfig) -> impl PartialEq + '_ {
    (c.local_as, c.router_id, c.hold_time, c.graceful_restart)
}

/// A peer's settings with the ones a running session can take (next hops) left out.
fn session_settings(p: &PeerConfig) -> PeerConfig {
    PeerConfig {
        next_hop_v4: None,
        next_hop_v6: None,
        ..p.clone()
    }
}

fn validate(cfg: &SpeakerConfig) -> Result<(), BgpError> {
    if !valid_hold(cfg.hold_time) {
        return Err(BgpError::InvalidHoldTime(cfg.hold_time));
    }
    if cfg.local_as == 0 {
        return Err(BgpError::InvalidAs);
    }
    if cfg.router_id.is_unspecified() {
        return Err(BgpError::InvalidRouterId);
    }
    attrs_fit(
        &cfg.communities,
        &cfg.large_communities,
        &RouteAttrs::default(),
    )
    .map_err(BgpError::AttributesTooLarge)
}

fn validate_peer(p: &PeerConfig) -> Result<(), BgpError> {
    let bad = |reason| BgpError::InvalidPeer {
        name: p.name.clone(),
        reason,
    };
    if p.name.is_empty() {
        return Err(bad("empty name"));
    }
    if p.remote_as == 0 {
        return Err(bad("remote AS 0 is reserved"));
    }
    if p.hold_time.is_some_and(|h| !valid_hold(h)) {
        return Err(bad("hold time must be 0 or at least 3 seconds"));
    }
    if p.password
        .as_ref()
        .is_some_and(|k| k.len() > md5::MAX_KEY_LEN)
    {
        return Err(bad("TCP-MD5 password longer than 80 bytes"));
    }
    if p.address.is_unspecified() || p.address.is_multicast() {
        return Err(bad("address must be a unicast address"));
    }
    Ok(())
}

impl Speaker {
    /// Starts a speaker with no peers. Must be called inside a tokio runtime; opens the
    /// listener at once when `cfg.listen` is set. Speaker-wide communities that leave no room
    /// for a route in an UPDATE are refused ([`BgpError::AttributesTooLarge`]).
    pub fn start(
        cfg: SpeakerConfig,
    ) -> Result<(Speaker, mpsc::UnboundedReceiver<PeerEvent>), BgpError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BgpError::NoRuntime)?;
        validate(&cfg)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let listen = cfg.listen;
        let speaker = Speaker {
            inner: Arc::new(Inner {
                shared: Arc::new(SpeakerShared::new(cfg, tx)),
                peers: Mutex::new(HashMap::new()),
                by_addr: Arc::new(Mutex::new(HashMap::new())),
                listener: Mutex::new(None),
                interned: Mutex::new(HashSet::new()),
                runtime,
            }),
        };
        if let Some(addr) = listen {
            speaker.ensure_listener(addr)?;
        }
        Ok((speaker, rx))
    }

    /// Opens the listener on `addr` unless one is open.
    fn ensure_listener(&self, addr: std::net::SocketAddr) -> Result<(), BgpError> {
        let mut l = lock(&self.inner.listener);
        if l.is_none() {
            *l = Some(self.open_listener(addr)?);
        }
        Ok(())
    }

    /// A listener on `addr` with every peer's socket options (the caller holds the listener
    /// lock: lock order listener, then peers).
    fn open_listener(&self, addr: std::net::SocketAddr) -> Result<Listener, BgpError> {
        let peers = lock(&self.inner.peers);
        Listener::open(
            addr,
            &self.inner.runtime,
            self.inner.by_addr.clone(),
            peers.values().map(|h| &h.cfg),
        )
    }

    /// Adds a peer and starts its session. Idempotent per name: the same config is a no-op; a
    /// change of next hops only is applied to the running session (its routes go out again
    /// with the new next hop); any other change restarts that peer only (Cease /
    /// Administrative Reset to the old session).
    pub fn add_peer(&self, p: PeerConfig) -> Result<(), BgpError> {
        validate_peer(&p)?;
        if let Some(h) = lock(&self.inner.peers).get_mut(&p.name) {
            if h.cfg == p {
                return Ok(());
            }
            if session_settings(&h.cfg) == session_settings(&p) {
                info!(peer = %p.name, "peer next hops changed: routes go out again");
                h.cfg = p.clone();
                let _ = h.cmd.send(PeerCmd::Update(self.inner.shared.cfg(), p));
                return Ok(());
            }
        }
        if p.passive {
            self.ensure_listener(self.inner.shared.cfg().listen.unwrap_or(DEFAULT_LISTEN))?;
        }
        if let Some(l) = lock(&self.inner.listener).as_ref() {
            l.add_peer(&p)?;
        }
        let mut peers = lock(&self.inner.peers);
        let mut held_down = None;
        if let Some(old) = peers.remove(&p.name) {
            info!(peer = %p.name, "peer configuration changed: restarting the session");
            held_down = self.retire_for_restart(old);
        }
        let h = self.spawn_peer(p, held_down);
        peers.insert(h.cfg.name.clone(), h);
        Ok(())
    }

    /// Retires a peer whose session must restart with new settings; returns its hold-down,
    /// which outlives the change (BFD still sees the path down).
    fn retire_for_restart(&self, old: PeerHandle) -> Option<String> {
        let held_down = lock(&old.shared.info).held_down.clone();
        self.retire(
            old,
            Notification::cease_with_text(CEASE_ADMIN_RESET, "configuration changed"),
        );
        held_down
    }

    /// Starts a peer's task.
    fn spawn_peer(&self, p: PeerConfig, held_down: Option<String>) -> PeerHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(PeerShared::default());
        let span = tracing::info_span!("bgp_peer", peer = %p.name, addr = %p.address);
        let task = PeerTask::new(
            p.clone(),
            self.inner.shared.clone(),
            shared.clone(),
            rx,
            held_down,
        );
        let task = self.inner.runtime.spawn(task.run().instrument(span));
        lock(&self.inner.by_addr).insert(p.address, tx.clone());
        PeerHandle {
            cfg: p,
            shared,
            cmd: tx,
            task,
        }
    }

    fn retire(&self, h: PeerHandle, n: Notification) {
        {
            let mut by_addr = lock(&self.inner.by_addr);
            if by_addr
                .get(&h.cfg.address)
                .is_some_and(|tx| tx.same_channel(&h.cmd))
            {
                by_addr.remove(&h.cfg.address);
            }
        }
        let (done, _) = oneshot::channel();
        if h.cmd.send(PeerCmd::Stop(Some(n), done)).is_err() {
            h.task.abort();
        }
    }

    /// Applies new speaker-wide settings at runtime. Communities, large communities, next
    /// hops, the eBGP preference and the connect retry delay are applied to the running
    /// sessions: every route whose attributes change goes out again as an UPDATE, with no
    /// withdraw in between. A new AS, router id, hold time or graceful-restart setting needs
    /// a new OPEN, so every session restarts; a new listen address reopens the listener.
    /// Settings [`Speaker::start`] would refuse are refused here, and nothing changes.
    pub fn reconfigure(&self, cfg: SpeakerConfig) -> Result<Reconfigured, BgpError> {
        validate(&cfg)?;
        let old = self.inner.shared.cfg();
        if *old == cfg {
            return Ok(Reconfigured::Unchanged);
        }
        if old.listen != cfg.listen {
            self.reopen_listener(cfg.listen)?;
        }
        let new = Arc::new(cfg);
        self.inner.shared.set_cfg(new.clone());
        let mut peers = lock(&self.inner.peers);
        if open_settings(&old) != open_settings(&new) {
            info!("AS, router id, hold time or graceful restart changed: restarting every session");
            let names: Vec<String> = peers.keys().cloned().collect();
            for name in names {
                if let Some(old) = peers.remove(&name) {
                    let cfg = old.cfg.clone();
                    let held_down = self.retire_for_restart(old);
                    peers.insert(name, self.spawn_peer(cfg, held_down));
                }
            }
            return Ok(Reconfigured::SessionsRestarted);
        }
        for h in peers.values() {
            let _ = h.cmd.send(PeerCmd::Update(new.clone(), h.cfg.clone()));
        }
        Ok(Reconfigured::Applied)
    }

    /// Closes the listener and opens it on `listen` (or on the default address if a passive
    /// peer needs one).
    fn reopen_listener(&self, listen: Option<std::net::SocketAddr>) -> Result<(), BgpError> {
        let passive = lock(&self.inner.peers).values().any(|h| h.cfg.passive);
        let addr = listen.or(passive.then_some(DEFAULT_LISTEN));
        let mut l = lock(&self.inner.listener);
        if l.as_ref().map(Listener::addr) == addr {
            return Ok(());
        }
        *l = None;
        if let Some(addr) = addr {
            *l = Some(self.open_listener(addr)?);
        }
        Ok(())
    }

    /// Holds a peer down, e.g. when BFD (RFC 5880) sees the path to it fail: the session is
    /// torn down at once, like a hold timer expiry (Cease / BFD Down, RFC 9384, sent best
    /// effort, then the connection closes), and stays down — no connect, incoming
    /// connections refused — until [`Speaker::set_peer_up`]. `PeerStatus::held_down` shows
    /// the reason. Holding down a held-down peer only updates the reason.
    pub fn set_peer_down(&self, name: &str, reason: &str) -> Result<(), BgpError> {
        self.peer_cmd(name, PeerCmd::HoldDown(reason.to_string()))
    }

    /// Ends a hold-down: the peer connects (or waits for the router, if passive) again. A peer
    /// not held down is left alone.
    pub fn set_peer_up(&self, name: &str) -> Result<(), BgpError> {
        self.peer_cmd(name, PeerCmd::Release)
    }

    fn peer_cmd(&self, name: &str, cmd: PeerCmd) -> Result<(), BgpError> {
        let peers = lock(&self.inner.peers);
        let h = peers
            .get(name)
            .ok_or_else(|| BgpError::UnknownPeer(name.to_string()))?;
        // The task only ends when the speaker retires it, which removes it from `peers`.
        let _ = h.cmd.send(cmd);
        Ok(())
    }

    /// Removes a peer: Cease / Peer De-configured to it, then the session closes.
    pub fn remove_peer(&self, name: &str) -> Result<(), BgpError> {
        let h = lock(&self.inner.peers)
            .remove(name)
            .ok_or_else(|| BgpError::UnknownPeer(name.to_string()))?;
        self.retire(
            h,
            Notification::cease_with_text(CEASE_PEER_DECONFIGURED, "peer removed"),
        );
        Ok(())
    }

    fn intern(&self, attrs: RouteAttrs) -> Arc<RouteAttrs> {
        let mut set = lock(&self.inner.interned);
        if let Some(a) = set.get(&attrs) {
            return a.clone();
        }
        // Forget attribute sets no route uses any more before the table grows.
        if set.len() >= 1024 {
            set.retain(|a| Arc::strong_count(a) > 1);
        }
        let a = Arc::new(attrs);
        set.insert(a.clone());
        a
    }

    /// Announces `prefix` with `attrs` to every peer (replacing an earlier announce of it).
    /// Never blocks on the network: the peers' writers send it as their sockets drain.
    pub fn announce(&self, prefix: IpNet, attrs: RouteAttrs) {
        self.announce_many(std::iter::once((prefix, attrs)));
    }

    /// Announces many routes at once: one lock of the table and one wake-up per peer for the
    /// whole batch. A prefix given twice takes its last attributes. The peers get the batch
    /// before the table does, so their writers start sending while the table is updated.
    pub fn announce_many(&self, routes: impl IntoIterator<Item = (IpNet, RouteAttrs)>) {
        // Runs of one attribute set, in order (batches mostly repeat one set: the interner is
        // asked once per run).
        let mut runs: Vec<(Arc<RouteAttrs>, Vec<IpNet>)> = Vec::new();
        for (prefix, attrs) in routes {
            let prefix = prefix.trunc();
            match runs.last_mut() {
                Some((a, ps)) if **a == attrs => ps.push(prefix),
                _ => runs.push((self.intern(attrs), vec![prefix])),
            }
        }
        if runs.is_empty() {
            return;
        }
        let mut table = lock(&self.inner.shared.routes);
        for p in lock(&self.inner.peers).values() {
            let mut rib = lock(&p.shared.rib);
            for (attrs, prefixes) in &runs {
                rib.announce_many(attrs, prefixes.iter().copied());
            }
            drop(rib);
            p.shared.notify.notify_one();
        }
        let (v4, v6) = runs
            .iter()
            .flat_map(|(_, ps)| ps)
            .fold((0, 0), |(a, b), p| match p {
                IpNet::V4(_) => (a + 1, b),
                IpNet::V6(_) => (a, b + 1),
            });
        table.reserve(v4, v6);
        for (attrs, prefixes) in runs {
            for p in prefixes {
                table.insert(p, attrs.clone());
            }
        }
    }

    /// Withdraws `prefix` from every peer; goes ahead of any queued announces. The returned
    /// [`Withdrawal`] resolves once every peer that is Established now has the withdrawal on
    /// its socket, or its session ended, or it never held the prefix (dropping it is fine).
    pub fn withdraw(&self, prefix: IpNet) -> Withdrawal {
        self.withdraw_many(std::iter::once(prefix))
    }

    /// Withdraws many prefixes at once, like [`Speaker::withdraw`]: one lock of the table and
    /// one wake-up per peer for the whole batch, one [`Withdrawal`] for all of them.
    pub fn withdraw_many(&self, prefixes: impl IntoIterator<Item = IpNet>) -> Withdrawal {
        let prefixes: Vec<IpNet> = prefixes.into_iter().map(|p| p.trunc()).collect();
        let mut table = lock(&self.inner.shared.routes);
        for p in &prefixes {
            table.remove(p);
        }
        let peers = lock(&self.inner.peers);
        let mut waits = Vec::with_capacity(peers.len());
        for (name, p) in peers.iter() {
            let mut rib = lock(&p.shared.rib);
            if !rib.is_active() {
                waits.push((
                    name.clone(),
                    PeerWait::Done(WithdrawOutcome::NotEstablished),
                ));
                continue;
            }
            // Even a prefix gone from the table may still be on its way out to this peer
            // (an earlier call's withdrawal): the RIB answers for that too.
            let mut held = false;
            for prefix in &prefixes {
                held |= rib.withdraw(*prefix);
            }
            waits.push((name.clone(), rib.wait_written(held)));
            drop(rib);
            p.shared.notify.notify_one();
        }
        Withdrawal::new(waits)
    }

    /// Status of every peer, sorted by name.
    pub async fn peers(&self) -> Vec<PeerStatus> {
        let mut v: Vec<PeerStatus> = lock(&self.inner.peers)
            .values()
            .map(|h| {
                let info = lock(&h.shared.info).clone();
                let rib = lock(&h.shared.rib);
                PeerStatus {
                    name: h.cfg.name.clone(),
                    address: h.cfg.address,
                    remote_as: h.cfg.remote_as,
                    state: info.state.unwrap_or(State::Idle).to_string(),
                    uptime_secs: info.established_at.map(|t| t.elapsed().as_secs()),
                    routes_sent: rib.routes_sent(),
                    updates_sent: rib.updates_sent(),
                    routes_too_large: rib.routes_too_large(),
                    msgs_in: h.shared.msgs_in.load(Ordering::Relaxed),
                    msgs_out: h.shared.msgs_out.load(Ordering::Relaxed),
                    updates_in: h.shared.updates_in.load(Ordering::Relaxed),
                    malformed_in: h.shared.malformed_in.load(Ordering::Relaxed),
                    last_error: info.last_error,
                    next_hop_missing: info.next_hop_missing,
                    held_down: info.held_down,
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every announced route, sorted by prefix.
    pub fn routes(&self) -> Vec<(IpNet, RouteAttrs)> {
        let mut v: Vec<(IpNet, RouteAttrs)> = lock(&self.inner.shared.routes)
            .iter()
            .map(|(p, a)| (p, (**a).clone()))
            .collect();
        v.sort_by_key(|r| r.0);
        v
    }

    /// Stops every session with Cease / Administrative Shutdown carrying `reason` (RFC 8203),
    /// waiting at most about a second for the NOTIFICATIONs to be written.
    pub async fn shutdown(self, reason: &str) {
        self.stop_all(Some(Notification::admin_shutdown(reason)))
            .await;
    }

    /// Closes every session without a NOTIFICATION, for a graceful restart (RFC 4724): routers
    /// that help keep our routes as stale for the restart time, until the next process
    /// (started with `restarting`) has sent them again and End-of-RIB. Returns once the
    /// sockets are closed (at most about a second).
    pub async fn shutdown_for_restart(self) {
        self.stop_all(None).await;
    }

    /// Lets End-of-RIB go out to every peer, after the routes queued before it, when the
    /// speaker was started with `defer_end_of_rib`; later sessions send it at once. A no-op
    /// otherwise.
    pub fn release_end_of_rib(&self) {
        self.inner.shared.release_eor();
        for p in lock(&self.inner.peers).values() {
            lock(&p.shared.rib).release_end_of_rib();
            p.shared.notify.notify_one();
        }
    }

    async fn stop_all(self, n: Option<Notification>) {
        let peers: Vec<PeerHandle> = lock(&self.inner.peers).drain().map(|(_, h)| h).collect();
        lock(&self.inner.by_addr).clear();
        drop(lock(&self.inner.listener).take());
        let mut waits = Vec::new();
        for h in peers {
            let (done, wait) = oneshot::channel();
            if h.cmd.send(PeerCmd::Stop(n.clone(), done)).is_ok() {
                waits.push((wait, h.task));
            } else {
                h.task.abort();
            }
        }
        let all = async {
            for (w, _) in &mut waits {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(1), all)
            .await
            .is_err()
        {
            warn!("BGP shutdown: some peers did not finish in time");
        }
        for (_, t) in waits {
            t.abort();
        }
    }
}
