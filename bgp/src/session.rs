//! The tokio driver of one peer: runs the [`Fsm`], owns the TCP connection, and feeds the
//! peer's [`AdjRibOut`] to the socket.
//!
//! ```text
//!   Speaker ──PeerCmd (stop, incoming conn)──▶ peer task ──Input──▶ Fsm ──Output──┐
//!      │ announce/withdraw                       ▲   ▲  timers (deadline map)      │
//!      ▼                                         │   └── connect task             │
//!   AdjRibOut (Mutex) ◀── next_update ── writer task ◀──WriterCmd (OPEN, KEEPALIVE,│
//!      │ Notify ────────────────────────────▶    │      NOTIFICATION, start RIB)◀──┘
//!      │                                         ▼
//!      │                                   TCP write half
//!   reader task ── framed messages ──▶ peer task
//! ```
//! The writer pulls UPDATEs from the RIB only when it can write, withdraws first, so an
//! announce backlog never delays a withdraw by more than one batch (≤ 64 KiB) on the socket.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::{PeerConfig, SpeakerConfig};
use crate::fsm::{DownReason, Fsm, FsmConfig, Input, Output, State, Timer};
use crate::md5;
use crate::nexthop;
use crate::packet::{
    message_len, Capability, DecodeCtx, EncodeCtx, Family, GracefulRestart, Message, Notification,
    MAX_MESSAGE_LEN,
};
use crate::policy::ExportCtx;
use crate::shared::{lock, PeerShared, SpeakerShared};
use crate::status::PeerEvent;

/// Bytes of UPDATEs the writer batches into one socket write.
const WRITE_BATCH: usize = 64 * 1024;
/// How long a closing connection may take to flush (the final NOTIFICATION).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A wake-up this soon after a write that carried announces is part of a burst of
/// announces ...
const BURST_WINDOW: Duration = Duration::from_millis(10);
/// ... so the writer lets more accumulate, for at most this long, to fill UPDATEs (a lone
/// announce after a quiet spell, or after a write of withdraws or KEEPALIVEs only, goes out at
/// once, and a withdraw ends the wait at once).
const COALESCE: Duration = Duration::from_millis(5);
/// Announces that fill a write batch: no point waiting for more.
const COALESCE_ENOUGH: usize = 8192;

/// Commands from the speaker to a peer task.
#[derive(Debug)]
pub(crate) enum PeerCmd {
    /// Send this Cease (if a session exists; none: close without one, for a graceful
    /// restart), close, end the task; then signal.
    Stop(Option<Notification>, oneshot::Sender<()>),
    /// The listener accepted a connection from this peer's address.
    Incoming(TcpStream),
    /// Hold the peer down (e.g. BFD saw the path fail): Cease / BFD Down to the session if
    /// there is one, close, and neither connect nor accept until [`PeerCmd::Release`].
    HoldDown(String),
    /// End a hold-down: start connecting (or waiting, if passive) again.
    Release,
    /// New settings that need no new OPEN (communities, next hops, eBGP preference, connect
    /// retry): the session stays up and every route goes out again with the new attributes.
    Update(Arc<SpeakerConfig>, PeerConfig),
}

#[allow(clippy::large_enum_variant)] // carries a Message, see there
enum WriterCmd {
    Msg(Message),
    /// The session is up: send this session's UPDATEs from the RIB, encoded so.
    StartRib(u64, EncodeCtx),
    Close,
}

enum ReadEvent {
    Frame(Vec<u8>),
    Closed(Option<io::Error>),
}

struct Conn {
    local: SocketAddr,
    outgoing: bool,
    reader: JoinHandle<()>,
    reader_rx: mpsc::Receiver<ReadEvent>,
    writer: JoinHandle<()>,
    writer_tx: mpsc::UnboundedSender<WriterCmd>,
}

/// One peer's task.
pub(crate) struct PeerTask {
    cfg: PeerConfig,
    /// The speaker's settings this task runs with (replaced by [`PeerCmd::Update`]).
    scfg: Arc<SpeakerConfig>,
    speaker: Arc<SpeakerShared>,
    shared: Arc<PeerShared>,
    cmds: mpsc::UnboundedReceiver<PeerCmd>,
    fsm: Fsm,
    timers: HashMap<Timer, Instant>,
    connecting: Option<JoinHandle<io::Result<TcpStream>>>,
    conn: Option<Conn>,
    stopping: bool,
    /// Held down, and why.
    held_down: Option<String>,
}

impl PeerTask {
    pub(crate) fn new(
        cfg: PeerConfig,
        speaker: Arc<SpeakerShared>,
        shared: Arc<PeerShared>,
        cmds: mpsc::UnboundedReceiver<PeerCmd>,
        held_down: Option<String>,
    ) -> Self {
        let scfg = speaker.cfg();
        let s = &*scfg;
        let capabilities = capabilities(s, speaker.restarting_for(&cfg.name));
        let fsm = Fsm::new(
            FsmConfig {
                local_as: s.local_as,
                remote_as: cfg.remote_as,
                router_id: s.router_id,
                hold_time: cfg.hold_time.unwrap_or(s.hold_time),
                connect_retry: s.connect_retry,
                passive: cfg.passive,
                capabilities,
                required: vec![],
            },
            Fsm::random_jitter(),
        );
        Self {
            cfg,
            scfg,
            speaker,
            shared,
            cmds,
            fsm,
            timers: HashMap::new(),
            connecting: None,
            conn: None,
            stopping: false,
            held_down,
        }
    }

    /// Runs until stopped (command or the speaker dropping the command channel).
    pub(crate) async fn run(mut self) {
        lock(&self.shared.info).held_down = self.held_down.clone();
        if self.held_down.is_none() {
            self.apply(Input::ManualStart);
        }
        loop {
            let deadline = self.timers.values().min().copied();
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(PeerCmd::Incoming(stream)) => self.incoming(stream),
                    Some(PeerCmd::HoldDown(reason)) => self.hold_down(reason),
                    Some(PeerCmd::Release) => self.release(),
                    Some(PeerCmd::Update(scfg, cfg)) => self.update(scfg, cfg),
                    Some(PeerCmd::Stop(n, done)) => {
                        self.stop(n).await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.stop(Some(Notification::cease_with_text(
                            crate::packet::CEASE_PEER_DECONFIGURED, "peer removed"))).await;
                        return;
                    }
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let now = Instant::now();
                    let due: Vec<Timer> = self.timers.iter()
                        .filter(|(_, d)| **d <= now).map(|(t, _)| *t).collect();
                    for t in due {
                        // A previous expiry in this batch may have stopped it.
                        if self.timers.remove(&t).is_some() {
                            self.apply(Input::TimerExpired(t));
                        }
                    }
                }
                res = join_opt(&mut self.connecting), if self.connecting.is_some() => {
                    self.connecting = None;
                    match res {
                        Ok(Ok(stream)) => {
                            self.attach(stream, true);
                            self.apply(Input::TcpConnected);
                        }
                        Ok(Err(e)) => {
                            debug!(error = %e, "connect failed");
                            self.set_error(format!("connect: {e}"));
                            self.apply(Input::TcpFailed);
                        }
                        Err(_) => self.apply(Input::TcpFailed),
                    }
                }
                ev = recv_opt(&mut self.conn) => match ev {
                    Some(ReadEvent::Frame(f)) => self.on_frame(&f),
                    Some(ReadEvent::Closed(e)) => {
                        if let Some(e) = e {
                            self.set_error(format!("read: {e}"));
                        }
                        self.apply(Input::TcpFailed);
                    }
                    None => self.apply(Input::TcpFailed),
                },
            }
        }
    }

    async fn stop(&mut self, n: Option<Notification>) {
        self.stopping = true;
        let writer = self.conn.as_ref().map(|c| c.writer.abort_handle());
        self.apply(match n {
            Some(n) => Input::ManualStop(n),
            None => Input::ManualStopForRestart,
        });
        // Give the writer up to a second to put the Cease on the wire.
        if let Some(w) = writer {
            let deadline = Instant::now() + CLOSE_GRACE;
            while !w.is_finished() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            w.abort();
        }
    }

    /// Tears the session down at once, like a hold timer expiry (RFC 9384: Cease / BFD
    /// Down, best effort), and stays Idle: no connect, incoming connections refused.
    fn hold_down(&mut self, reason: String) {
        info!(%reason, "held down");
        lock(&self.shared.info).held_down = Some(reason.clone());
        if self.held_down.replace(reason.clone()).is_none() {
            self.apply(Input::ManualStop(Notification::new(
                crate::packet::CEASE,
                crate::packet::CEASE_BFD_DOWN,
            )));
        }
        self.set_error(format!("held down: {reason}"));
    }

    fn update(&mut self, scfg: Arc<SpeakerConfig>, cfg: PeerConfig) {
        self.fsm.set_connect_retry(scfg.connect_retry);
        self.scfg = scfg;
        self.cfg = cfg;
        let Some(conn) = &self.conn else { return };
        if self.fsm.state() != State::Established {
            return;
        }
        let export = self.export_ctx(conn.local);
        {
            let routes = lock(&self.speaker.routes);
            lock(&self.shared.rib).set_export(export, routes.iter());
        }
        info!("export settings changed: routes sent again with the new attributes");
        self.shared.notify.notify_one();
    }

    fn release(&mut self) {
        if self.held_down.take().is_some() {
            info!("hold-down released");
            lock(&self.shared.info).held_down = None;
            self.apply(Input::ManualStart);
        }
    }

    fn set_error(&self, e: String) {
        lock(&self.shared.info).last_error = Some(e);
    }

    fn decode_ctx(&self) -> DecodeCtx {
        DecodeCtx {
            four_octet_as: self
                .fsm
                .negotiated()
                .map(|n| n.four_octet_as)
                .unwrap_or(true),
        }
    }

    fn on_frame(&mut self, frame: &[u8]) {
        self.shared.msgs_in.fetch_add(1, Ordering::Relaxed);
        match Message::decode(frame, &self.decode_ctx()) {
            Ok(m) => self.apply(Input::Message(m)),
            Err(e) => {
                self.shared.malformed_in.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "malformed message from peer");
                self.apply(Input::DecodeError(e));
            }
        }
    }

    /// An incoming connection for this peer (RFC 4271 §6.8 for the collision cases).
    fn incoming(&mut self, stream: TcpStream) {
        match self.fsm.state() {
            State::Connect | State::Active => {
                // Event 17: take it; abandon our own attempt.
                if let Some(c) = self.connecting.take() {
                    c.abort();
                }
                self.timers.remove(&Timer::ConnectRetry);
                self.attach(stream, false);
                self.apply(Input::TcpConnected);
            }
            State::OpenConfirm if self.conn.as_ref().is_some_and(|c| c.outgoing) => {
                // We know the peer's identifier: the connection initiated by the higher one wins.
                let remote = self.fsm.negotiated().map(|n| n.peer_id);
                let keep_ours = remote
                    .is_none_or(|r| crate::fsm::keep_locally_initiated(self.scfg.router_id, r));
                if keep_ours {
                    reject(stream, true);
                } else {
                    info!("connection collision: keeping the peer's connection");
                    self.apply(Input::CollisionDump);
                    self.timers.clear();
                    self.fsm.process(Instant::now(), Input::ManualStart);
                    self.attach(stream, false);
                    let outs = self.fsm.process(Instant::now(), Input::TcpConnected);
                    // ManualStart on an active peer asked for a connect: not needed now.
                    self.execute(outs.into_iter().filter(|o| *o != Output::Connect).collect());
                }
            }
            // Idle (holding down), OpenSent (the peer's identifier is not known yet: the
            // peer's own collision detection settles it), Established: refuse.
            _ => reject(stream, self.fsm.state() != State::Idle),
        }
    }

    /// Starts reader and writer tasks on a connected stream.
    fn attach(&mut self, stream: TcpStream, outgoing: bool) {
        let _ = stream.set_nodelay(true);
        if self.cfg.ttl_security {
            if let Err(e) = md5::set_ttl_security(&stream, self.cfg.address.is_ipv6()) {
                warn!(error = %e, "cannot set TTL security");
            }
        }
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.cfg.address, 0));
        let (rd, wr) = stream.into_split();
        let (rtx, rrx) = mpsc::channel(256);
        let (wtx, wrx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(reader(rd, rtx));
        let writer = tokio::spawn(writer(wr, wrx, self.shared.clone()));
        if let Some(old) = self.conn.replace(Conn {
            local,
            outgoing,
            reader,
            reader_rx: rrx,
            writer,
            writer_tx: wtx,
        }) {
            close(old);
        }
    }

    fn apply(&mut self, input: Input) {
        let outs = self.fsm.process(Instant::now(), input);
        self.execute(outs);
    }

    fn execute(&mut self, outs: Vec<Output>) {
        let now = Instant::now();
        for o in outs {
            match o {
                Output::Connect => {
                    if self.stopping {
                        continue;
                    }
                    if let Some(c) = self.connecting.take() {
                        c.abort();
                    }
                    self.connecting = Some(tokio::spawn(connect(self.cfg.clone())));
                }
                Output::Disconnect => {
                    if let Some(c) = self.connecting.take() {
                        c.abort();
                    }
                    if let Some(c) = self.conn.take() {
                        close(c);
                    }
                    lock(&self.shared.rib).session_down();
                }
                Output::Send(m) => {
                    if let Message::Notification(n) = &m {
                        info!(notification = %n, "sending NOTIFICATION");
                    }
                    if let Some(c) = &self.conn {
                        let _ = c.writer_tx.send(WriterCmd::Msg(m));
                    }
                }
                Output::StartTimer(t, d) => {
                    self.timers.insert(t, now + d);
                }
                Output::StopTimer(t) => {
                    self.timers.remove(&t);
                }
                Output::Established(neg) => self.established(neg),
                Output::Down(reason) => {
                    warn!(%reason, "session down");
                    self.speaker.emit(PeerEvent::Down {
                        name: self.cfg.name.clone(),
                        reason: reason.to_string(),
                    });
                }
                Output::UpdateReceived(u) => {
                    self.shared.updates_in.fetch_add(1, Ordering::Relaxed);
                    if !u.errors.is_empty() {
                        self.shared.malformed_in.fetch_add(1, Ordering::Relaxed);
                        warn!(errors = ?u.errors, "UPDATE with errors handled per RFC 7606");
                    }
                }
                Output::RouteRefresh(f) => {
                    lock(&self.shared.rib).refresh(f);
                    self.shared.notify.notify_one();
                }
            }
        }
        let mut info = lock(&self.shared.info);
        info.state = Some(self.fsm.state());
        info.established_at = self.fsm.established_at();
        if let Some(e) = self.fsm.last_error() {
            if !matches!(e, DownReason::ConnectionLost) || info.last_error.is_none() {
                info.last_error = Some(e.to_string());
            }
        }
    }

    /// What this peer gets for a route on a session from `local`: next hops resolved now
    /// (logged when a family has none), the speaker's export settings.
    fn export_ctx(&self, local: SocketAddr) -> ExportCtx {
        let s = &*self.scfg;
        let ifaddrs = nexthop::interface_addresses().unwrap_or_else(|e| {
            warn!(error = %e, "cannot list interface addresses");
            Vec::new()
        });
        let nh = nexthop::resolve(
            local.ip(),
            (self.cfg.next_hop_v4, self.cfg.next_hop_v6),
            (s.next_hop_v4, s.next_hop_v6),
            &ifaddrs,
        );
        let mut info = lock(&self.shared.info);
        if nh.missing != info.next_hop_missing {
            if let Some(why) = &nh.missing {
                warn!(reason = %why, "a family's routes will not be sent to this peer");
            }
        }
        info.next_hop_missing = nh.missing;
        ExportCtx {
            local_as: s.local_as,
            ibgp: self.cfg.remote_as == s.local_as,
            ebgp_preference: s.ebgp_preference,
            communities: s.communities.clone(),
            large_communities: s.large_communities.clone(),
            next_hop_v4: nh.v4,
            next_hop_v6: nh.v6,
        }
    }

    fn established(&mut self, neg: crate::fsm::Negotiated) {
        let Some(conn) = &self.conn else { return };
        let export = self.export_ctx(conn.local);
        let enc = EncodeCtx {
            four_octet_as: neg.four_octet_as,
        };
        info!(peer_as = neg.peer_as, peer_id = %neg.peer_id, hold_time = neg.hold_time,
              families = ?neg.families, "session established");
        if self.speaker.restarting_for(&self.cfg.name) {
            // RFC 4724 §3: the Restart State bit is for the OPENs right after a restart.
            self.speaker.restart_done(&self.cfg.name);
            self.fsm.set_capabilities(capabilities(&self.scfg, false));
        }
        let session = {
            // Lock order: routes, then the RIB (as announce/withdraw do). The End-of-RIB
            // hold is read under the RIB lock, so a release cannot slip in between.
            let routes = lock(&self.speaker.routes);
            let mut rib = lock(&self.shared.rib);
            let hold_eor = self.speaker.eor_deferred();
            rib.session_up(&neg.families, export, enc, hold_eor, routes.iter());
            rib.session()
        };
        let _ = conn.writer_tx.send(WriterCmd::StartRib(session, enc));
        self.shared.notify.notify_one();
        self.speaker.emit(PeerEvent::Up {
            name: self.cfg.name.clone(),
        });
    }
}

/// The capabilities of our OPENs: both unicast families, route refresh (plain and enhanced),
/// and graceful restart when configured, with the Restart State and Forwarding State bits
/// set while `restarting` (RFC 4724 §3).
fn capabilities(s: &SpeakerConfig, restarting: bool) -> Vec<Capability> {
    let mut caps = vec![
        Capability::Multiprotocol(Family::IPV4_UNICAST),
        Capability::Multiprotocol(Family::IPV6_UNICAST),
        Capability::RouteRefresh,
        Capability::EnhancedRouteRefresh,
    ];
    if let Some(t) = s.graceful_restart {
        caps.push(Capability::GracefulRestart(GracefulRestart {
            restart_state: restarting,
            flags: 0,
            restart_time: t.min(0x0fff),
            families: vec![
                (Family::IPV4_UNICAST, restarting),
                (Family::IPV6_UNICAST, restarting),
            ],
        }));
    }
    caps
}

/// Refuses a connection, optionally telling the peer why (Cease / Connection Rejected 6/5).
fn reject(stream: TcpStream, notify: bool) {
    tokio::spawn(async move {
        let mut stream = stream;
        if notify {
            let n = Message::Notification(Notification::new(crate::packet::CEASE, 5));
            let _ = tokio::time::timeout(
                CLOSE_GRACE,
                stream.write_all(&n.encode(&EncodeCtx::default())),
            )
            .await;
        }
        let _ = stream.shutdown().await;
    });
}

/// Closes a connection: the writer flushes what is queued (e.g. a NOTIFICATION) then shuts the
/// socket; it is aborted if that takes longer than [`CLOSE_GRACE`].
fn close(c: Conn) {
    c.reader.abort();
    let _ = c.writer_tx.send(WriterCmd::Close);
    let w = c.writer;
    tokio::spawn(async move {
        let abort = w.abort_handle();
        if tokio::time::timeout(CLOSE_GRACE, w).await.is_err() {
            abort.abort();
        }
    });
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn join_opt(
    h: &mut Option<JoinHandle<io::Result<TcpStream>>>,
) -> Result<io::Result<TcpStream>, tokio::task::JoinError> {
    match h {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

async fn recv_opt(c: &mut Option<Conn>) -> Option<ReadEvent> {
    match c {
        Some(c) => c.reader_rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Opens the TCP connection to a peer: source address, TCP-MD5 and GTSM set before the SYN.
pub(crate) async fn connect(cfg: PeerConfig) -> io::Result<TcpStream> {
    let peer = SocketAddr::new(cfg.address, cfg.port);
    let sock = match cfg.address {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(key) = &cfg.password {
        md5::set_md5(&sock, cfg.address.is_ipv6(), cfg.address, key)?;
    }
    if cfg.ttl_security {
        md5::set_ttl_security(&sock, cfg.address.is_ipv6())?;
    }
    if let Some(local) = cfg.local_address {
        sock.bind(SocketAddr::new(local, 0))?;
    }
    sock.connect(peer).await
}

/// Cuts the byte stream into messages; a bad length still yields a frame so the decoder
/// reports the exact header error.
async fn reader(mut rd: OwnedReadHalf, tx: mpsc::Sender<ReadEvent>) {
    let mut buf: Vec<u8> = Vec::with_capacity(2 * MAX_MESSAGE_LEN);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        while let Some(n) = message_len(&buf) {
            if buf.len() < n {
                break;
            }
            let frame: Vec<u8> = buf.drain(..n).collect();
            if tx.send(ReadEvent::Frame(frame)).await.is_err() {
                return;
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) => {
                let _ = tx.send(ReadEvent::Closed(None)).await;
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                let _ = tx.send(ReadEvent::Closed(Some(e))).await;
                return;
            }
        }
    }
}

/// Writes control messages as they come and UPDATEs from the RIB as fast as the socket takes
/// them.
async fn writer(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<WriterCmd>,
    shared: Arc<PeerShared>,
) {
    // The session whose UPDATEs this writer sends, and how messages are encoded.
    let mut session: Option<u64> = None;
    let mut enc = EncodeCtx::default();
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BATCH + MAX_MESSAGE_LEN);
    let mut next: Option<WriterCmd> = None;
    let mut closing = false;
    // When a write last carried announces (none yet).
    let mut announces_written: Option<Instant> = None;
    loop {
        let mut msgs = 0u64;
        loop {
            let cmd = match next.take() {
                Some(c) => c,
                None => match rx.try_recv() {
                    Ok(c) => c,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closing = true;
                        break;
                    }
                },
            };
            match cmd {
                WriterCmd::Msg(m) => {
                    m.encode_into(&enc, &mut buf);
                    msgs += 1;
                }
                WriterCmd::StartRib(s, e) => {
                    session = Some(s);
                    enc = e;
                }
                WriterCmd::Close => {
                    closing = true;
                    break;
                }
            }
        }
        // The number of the last UPDATE in `buf`, to tell the RIB once it is written.
        let mut mark = None;
        let mut announcing = false;
        if let Some(s) = session.filter(|_| !closing) {
            let mut rib = lock(&shared.rib);
            if rib.session() == s {
                announcing = rib.announces_queued() > 0;
                while buf.len() < WRITE_BATCH {
                    match rib.next_update() {
                        Some(u) => {
                            Message::Update(u).encode_into(&enc, &mut buf);
                            msgs += 1;
                        }
                        None => break,
                    }
                }
                mark = Some(rib.produced());
            }
        }
        if !buf.is_empty() {
            if let Err(e) = wr.write_all(&buf).await {
                debug!(error = %e, "write failed");
                return;
            }
            shared.msgs_out.fetch_add(msgs, Ordering::Relaxed);
            if let (Some(s), Some(m)) = (session, mark) {
                let mut rib = lock(&shared.rib);
                if rib.session() == s {
                    rib.mark_written(m);
                }
            }
            if announcing {
                announces_written = Some(Instant::now());
            }
            buf.clear();
            continue;
        }
        if closing {
            let _ = wr.shutdown().await;
            return;
        }
        tokio::select! {
            biased;
            c = rx.recv() => match c {
                Some(c) => next = Some(c),
                None => closing = true,
            },
            _ = shared.notify.notified() => {
                if in_burst(announces_written, Instant::now()) {
                    coalesce(&shared).await;
                }
            }
        }
    }
}

/// Whether a wake-up at `now` is part of a burst of announces: the last write that carried
/// announces was less than [`BURST_WINDOW`] ago. A write of withdraws only (a `quorum down`
/// just before a `quorum up`) or of a KEEPALIVE does not make the next announce wait.
fn in_burst(announces_written: Option<Instant>, now: Instant) -> bool {
    announces_written.is_some_and(|t| now.saturating_duration_since(t) < BURST_WINDOW)
}

/// Waits until a withdraw is queued, enough announces are, or [`COALESCE`] has passed.
async fn coalesce(shared: &PeerShared) {
    let deadline = tokio::time::Instant::now() + COALESCE;
    loop {
        {
            let rib = lock(&shared.rib);
            if rib.withdraws_queued() || rib.announces_queued() >= COALESCE_ENOUGH {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = shared.notify.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_recent_write_of_announces_makes_the_next_announce_wait() {
        let t = Instant::now();
        // Nothing announced yet, or only withdraws and KEEPALIVEs written: no wait.
        assert!(!in_burst(None, t));
        // Announces written 1 ms ago: a burst, wait to fill the UPDATE.
        assert!(in_burst(Some(t), t + Duration::from_millis(1)));
        // Announces written longer ago than the window: a lone announce, at once.
        assert!(!in_burst(Some(t), t + BURST_WINDOW));
        // A clock that went backwards is not a burst's end.
        assert!(in_burst(Some(t + Duration::from_millis(1)), t));
    }
}
