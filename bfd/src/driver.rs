//! Tokio driver: RFC 5881 single-hop BFD over IPv4 and IPv6.
//!
//! ```text
//!  Bfd (handle) ── Command ──▶ ┌──────────────── driver task ────────────────┐ ── BfdEvent ──▶ owner
//!                              │ peers: name → Session (sans-IO FSM)          │
//!  listening sockets (:3784,   │   demux: Your Discriminator, else source     │
//!  TTL from recvmsg cmsgs) ───▶│   address (RFC 5880 §6.3)                    │
//!                              │ one sleep_until(earliest timer of all peers) │
//!                              │ per-peer UDP socket: source port 49152–65535,│
//!                              │   TTL / Hop Limit 255 → the neighbor :3784   │
//!                              └──────────────────────────────────────────────┘
//! ```
//!
//! Everything about a session lives in the one driver task, so no locks. The task reads the
//! listening sockets itself, and drains them before it fires timers, so a stall of the whole
//! process (a loaded machine) does not turn packets that arrived in time into a Down. Datagrams that fail a check (TTL / Hop Limit ≠ 255, the codec,
//! the demultiplexing, the FSM's §6.8.6 rules) are dropped and counted by reason, never fed to
//! a session, so hostile or stray packets cannot flap it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn};

use crate::api::{
    BfdConfig, BfdError, BfdEvent, DropReason, Drops, PeerSpec, PeerStatus, Status, SOURCE_PORTS,
};
use crate::fsm::{Discard, Event, Input, Intervals, Output, Session, SessionConfig, Timer};
use crate::packet::ControlPacket;
use crate::socket::{self, Received, TTL};

/// Largest datagram read; a Control packet is at most 255 bytes.
const RX_BUF: usize = 512;
/// Datagrams read from one socket before the driver looks at its other work.
const DRAIN_MAX: usize = 64;
/// Source ports tried before giving up on a peer.
const PORT_TRIES: usize = 64;

enum Command {
    Add(Box<PeerSpec>, oneshot::Sender<Result<(), BfdError>>),
    Remove(String, oneshot::Sender<Result<(), BfdError>>),
    Input(String, Input, oneshot::Sender<Result<(), BfdError>>),
    Status(oneshot::Sender<Status>),
    Shutdown(oneshot::Sender<()>),
}

/// Handle of a running BFD driver. Dropping every handle stops the driver (without the
/// AdminDown packets of [`Bfd::shutdown`]).
#[derive(Debug, Clone)]
pub struct Bfd {
    cmd: mpsc::Sender<Command>,
    listen: Vec<SocketAddr>,
}

impl Bfd {
    /// Binds the listening sockets and starts the driver task (inside a tokio runtime).
    /// Events arrive on the returned receiver.
    pub fn start(cfg: BfdConfig) -> Result<(Bfd, mpsc::UnboundedReceiver<BfdEvent>), BfdError> {
        let mut sockets = Vec::new();
        for addr in &cfg.listen {
            let sock = socket::bind(*addr).map_err(|source| BfdError::Listen {
                addr: *addr,
                source,
            })?;
            sockets.push(sock);
        }
        let listen = sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect::<Vec<_>>();
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            cfg,
            peers: BTreeMap::new(),
            by_discr: HashMap::new(),
            by_addr: HashMap::new(),
            unattributed: Drops::new(),
            events: ev_tx,
            rx: sockets,
        };
        tokio::spawn(driver.run(cmd_rx));
        Ok((
            Bfd {
                cmd: cmd_tx,
                listen,
            },
            ev_rx,
        ))
    }

    /// The bound listening addresses (with the ports picked for port 0).
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, BfdError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| BfdError::Stopped)?;
        rx.await.map_err(|_| BfdError::Stopped)
    }

    /// Adds a session and starts it (Down, slow start).
    pub async fn add_peer(&self, spec: PeerSpec) -> Result<(), BfdError> {
        self.call(|tx| Command::Add(Box::new(spec), tx)).await?
    }

    /// Removes a session, sending it one AdminDown packet first so the neighbor does not take
    /// the removal for a path failure.
    pub async fn remove_peer(&self, name: &str) -> Result<(), BfdError> {
        self.call(|tx| Command::Remove(name.to_owned(), tx)).await?
    }

    /// Takes a session administratively down (RFC 5880 §6.8.16): it keeps sending AdminDown.
    pub async fn admin_down(&self, name: &str) -> Result<(), BfdError> {
        self.input(name, Input::AdminDown).await
    }

    /// Brings an AdminDown session back (to Down; it comes Up with the neighbor).
    pub async fn admin_up(&self, name: &str) -> Result<(), BfdError> {
        self.input(name, Input::AdminUp).await
    }

    /// Changes a session's intervals; a Poll Sequence carries them to the neighbor.
    pub async fn set_intervals(
        &self,
        name: &str,
        min_tx: Duration,
        min_rx: Duration,
        multiplier: u8,
    ) -> Result<(), BfdError> {
        check_intervals(name, min_tx, min_rx, multiplier)?;
        let iv = Intervals {
            desired_min_tx: min_tx,
            required_min_rx: min_rx,
            detect_mult: multiplier,
        };
        self.input(name, Input::SetIntervals(iv)).await
    }

    async fn input(&self, name: &str, input: Input) -> Result<(), BfdError> {
        self.call(|tx| Command::Input(name.to_owned(), input, tx))
            .await?
    }

    /// Every session's state and counters.
    pub async fn status(&self) -> Result<Status, BfdError> {
        self.call(Command::Status).await
    }

    /// Sends AdminDown to every neighbor (waiting at most the configured shutdown timeout for
    /// the sends) and stops the driver.
    pub async fn shutdown(&self) -> Result<(), BfdError> {
        self.call(Command::Shutdown).await
    }
}

fn check_intervals(name: &str, tx: Duration, rx: Duration, mult: u8) -> Result<(), BfdError> {
    let bad = |what| {
        Err(BfdError::BadPeer {
            name: name.to_owned(),
            what,
        })
    };
    let fits = |d: Duration| d.as_micros() >= 1 && d.as_micros() <= u128::from(u32::MAX);
    if mult == 0 {
        return bad("multiplier is 0");
    }
    if !fits(tx) || !fits(rx) {
        return bad("interval outside 1 µs ..= 4294.967295 s");
    }
    Ok(())
}

/// Resolves to the index of a listening socket that is readable (or has an error to report).
async fn readable(rx: &[UdpSocket]) -> usize {
    std::future::poll_fn(|cx| {
        for (i, s) in rx.iter().enumerate() {
            if s.poll_recv_ready(cx).is_ready() {
                return std::task::Poll::Ready(i);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

struct Peer {
    spec: PeerSpec,
    session: Session,
    sock: UdpSocket,
    local: SocketAddr,
    dest: SocketAddr,
    deadlines: [Option<Instant>; 3],
    packets_in: u64,
    packets_out: u64,
    send_errors: u64,
    polls_sent: u64,
    finals_received: u64,
    drops: Drops,
}

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::Transmit => 0,
        Timer::Detect => 1,
        Timer::HoldDown => 2,
    }
}

const TIMERS: [Timer; 3] = [Timer::Transmit, Timer::Detect, Timer::HoldDown];

impl Peer {
    fn send(&mut self, p: &ControlPacket) {
        let bytes = p.encode();
        trace!(target: "bfd::wire", peer = %self.spec.name, to = %self.dest, bytes = %Hex(&bytes), "tx");
        match self.sock.try_send_to(&bytes, self.dest) {
            Ok(_) => {
                self.packets_out += 1;
                self.polls_sent += u64::from(p.poll);
            }
            Err(e) => {
                self.send_errors += 1;
                debug!(peer = %self.spec.name, error = %e, "bfd: send failed");
            }
        }
    }

    /// Carries out the FSM's outputs.
    fn apply(&mut self, now: Instant, outs: Vec<Output>, events: &mpsc::UnboundedSender<BfdEvent>) {
        for o in outs {
            match o {
                Output::Send(p) => self.send(&p),
                Output::StartTimer(t, d) => self.deadlines[timer_index(t)] = Some(now + d),
                Output::StopTimer(t) => self.deadlines[timer_index(t)] = None,
                Output::Discarded(d) => {
                    let reason = match d {
                        Discard::YourDiscriminator => DropReason::UnknownDiscriminator,
                        Discard::Auth => DropReason::Auth,
                        Discard::AdminDown => DropReason::AdminDown,
                    };
                    *self.drops.entry(reason).or_default() += 1;
                }
                Output::Event(e) => {
                    let name = self.spec.name.clone();
                    let ev = match e {
                        Event::Up => {
                            info!(peer = %name, remote = %self.spec.remote, "bfd: session up");
                            BfdEvent::Up { name }
                        }
                        Event::Down {
                            diag,
                            remote_admin_down,
                        } => {
                            warn!(peer = %name, remote = %self.spec.remote, %diag, remote_admin_down, "bfd: session down");
                            BfdEvent::Down {
                                name,
                                diag,
                                remote_admin_down,
                            }
                        }
                    };
                    // The owner may have stopped listening; the session goes on regardless.
                    let _ = events.send(ev);
                }
            }
        }
    }

    fn status(&self) -> PeerStatus {
        let s = &self.session;
        PeerStatus {
            name: self.spec.name.clone(),
            remote: self.spec.remote,
            local: self.local,
            state: s.state(),
            remote_state: s.remote_state(),
            local_discr: s.local_discr(),
            remote_discr: s.remote_discr(),
            tx_interval: s.tx_interval(),
            detection_time: s.detection_time(),
            local_diag: s.local_diag(),
            remote_diag: s.remote_diag(),
            polling: s.polling(),
            reported_up: s.reported_up(),
            flaps: s.flaps(),
            packets_in: self.packets_in,
            packets_out: self.packets_out,
            send_errors: self.send_errors,
            polls_sent: self.polls_sent,
            finals_received: self.finals_received,
            drops: self.drops.clone(),
        }
    }
}

struct Driver {
    cfg: BfdConfig,
    peers: BTreeMap<String, Peer>,
    by_discr: HashMap<u32, String>,
    by_addr: HashMap<IpAddr, String>,
    unattributed: Drops,
    events: mpsc::UnboundedSender<BfdEvent>,
    /// The listening sockets.
    rx: Vec<UdpSocket>,
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>) {
        loop {
            let next = self
                .peers
                .values()
                .flat_map(|p| p.deadlines.iter().flatten())
                .min()
                .copied();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown(reply)) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(cmd) => self.command(cmd),
                },
                i = readable(&self.rx) => self.drain(i),
                () = sleep => {
                    // Packets that arrived while this process was not scheduled are taken
                    // first: after a stall they are in the socket buffers, and a Detect timer
                    // fired before them would declare a live neighbor dead.
                    for i in 0..self.rx.len() {
                        self.drain(i);
                    }
                    self.timers();
                }
            }
        }
    }

    /// Reads what socket `i` holds, at most [`DRAIN_MAX`] datagrams (so a flood cannot starve
    /// the timers).
    fn drain(&mut self, i: usize) {
        let mut buf = [0u8; RX_BUF];
        for _ in 0..DRAIN_MAX {
            let Some(sock) = self.rx.get(i) else { return };
            match socket::try_recv(sock, &mut buf) {
                Ok(r) => {
                    let data = buf.get(..r.len.min(RX_BUF)).unwrap_or_default();
                    self.datagram(data, r);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // A socket error is reported once (and clears), so go on reading.
                Err(e) => debug!(error = %e, "bfd: receive failed"),
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Add(spec, reply) => {
                let _ = reply.send(self.add(*spec));
            }
            Command::Remove(name, reply) => {
                let _ = reply.send(self.remove(&name));
            }
            Command::Input(name, input, reply) => {
                let r = match self.peers.get_mut(&name) {
                    Some(p) => {
                        let now = Instant::now();
                        let outs = p.session.process(now, input);
                        p.apply(now, outs, &self.events);
                        Ok(())
                    }
                    None => Err(BfdError::NoPeer(name)),
                };
                let _ = reply.send(r);
            }
            Command::Status(reply) => {
                let _ = reply.send(Status {
                    peers: self.peers.values().map(Peer::status).collect(),
                    unattributed_drops: self.unattributed.clone(),
                });
            }
            // Handled by the loop (it awaits).
            Command::Shutdown(_) => {}
        }
    }

    fn add(&mut self, spec: PeerSpec) -> Result<(), BfdError> {
        check_intervals(&spec.name, spec.min_tx, spec.min_rx, spec.multiplier)?;
        if self.peers.contains_key(&spec.name) || self.by_addr.contains_key(&spec.remote) {
            return Err(BfdError::Duplicate(spec.name));
        }
        let (sock, local) = self.bind_source(&spec)?;
        let mut discr = 0;
        while discr == 0 || self.by_discr.contains_key(&discr) {
            discr = rand::random();
        }
        let session = Session::new(
            SessionConfig {
                local_discr: discr,
                intervals: Intervals {
                    desired_min_tx: spec.min_tx,
                    required_min_rx: spec.min_rx,
                    detect_mult: spec.multiplier,
                },
                damping: self.cfg.damping,
            },
            Session::random_jitter(),
        );
        info!(peer = %spec.name, remote = %spec.remote, %local, discr, "bfd: session added");
        let mut peer = Peer {
            dest: SocketAddr::new(spec.remote, spec.remote_port),
            spec,
            session,
            sock,
            local,
            deadlines: [None; 3],
            packets_in: 0,
            packets_out: 0,
            send_errors: 0,
            polls_sent: 0,
            finals_received: 0,
            drops: Drops::new(),
        };
        let now = Instant::now();
        let outs = peer.session.process(now, Input::Start);
        peer.apply(now, outs, &self.events);
        self.by_discr.insert(discr, peer.spec.name.clone());
        self.by_addr
            .insert(peer.spec.remote, peer.spec.name.clone());
        self.peers.insert(peer.spec.name.clone(), peer);
        Ok(())
    }

    /// A socket on a free source port of 49152–65535 not used by another session.
    fn bind_source(&self, spec: &PeerSpec) -> Result<(UdpSocket, SocketAddr), BfdError> {
        let used: HashSet<u16> = self.peers.values().map(|p| p.local.port()).collect();
        let ip = spec.local.unwrap_or(match spec.remote {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        let mut last = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        for _ in 0..PORT_TRIES {
            let port = rand::random_range(SOURCE_PORTS);
            if used.contains(&port) {
                continue;
            }
            match socket::bind(SocketAddr::new(ip, port)) {
                Ok(s) => {
                    let local = s.local_addr().unwrap_or(SocketAddr::new(ip, port));
                    return Ok((s, local));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = e,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(BfdError::SourcePort {
            name: spec.name.clone(),
            source: last,
        })
    }

    fn remove(&mut self, name: &str) -> Result<(), BfdError> {
        let Some(mut p) = self.peers.remove(name) else {
            return Err(BfdError::NoPeer(name.to_owned()));
        };
        self.by_discr.remove(&p.session.local_discr());
        self.by_addr.remove(&p.spec.remote);
        let now = Instant::now();
        let outs = p.session.process(now, Input::AdminDown);
        p.apply(now, outs, &self.events);
        info!(peer = %name, "bfd: session removed");
        Ok(())
    }

    fn datagram(&mut self, data: &[u8], r: Received) {
        let src = r.from.ip();
        trace!(target: "bfd::wire", from = %r.from, ttl = ?r.ttl, bytes = %Hex(data), "rx");
        let attributed = self.by_addr.get(&src).cloned();
        let verdict = self.accept(data, r, attributed.as_deref());
        match verdict {
            Ok((name, pkt)) => {
                if let Some(p) = self.peers.get_mut(&name) {
                    let now = Instant::now();
                    let final_ = pkt.final_;
                    let outs = p.session.process(now, Input::Received(pkt));
                    if !outs.iter().any(|o| matches!(o, Output::Discarded(_))) {
                        p.packets_in += 1;
                        p.finals_received += u64::from(final_);
                    }
                    p.apply(now, outs, &self.events);
                }
            }
            Err(reason) => {
                debug!(from = %r.from, %reason, "bfd: datagram dropped");
                let counters = match attributed.and_then(|n| self.peers.get_mut(&n)) {
                    Some(p) => &mut p.drops,
                    None => &mut self.unattributed,
                };
                *counters.entry(reason).or_default() += 1;
            }
        }
    }

    /// RFC 5881 §5 TTL check, the codec, and the §6.3 demultiplexing: the session's name and
    /// the packet, or why it is dropped.
    fn accept(
        &self,
        data: &[u8],
        r: Received,
        by_source: Option<&str>,
    ) -> Result<(String, ControlPacket), DropReason> {
        if r.ttl != Some(TTL) {
            return Err(DropReason::Ttl);
        }
        let pkt = ControlPacket::decode(data).map_err(|e| DropReason::Malformed(e.kind()))?;
        if pkt.your_discr == 0 {
            let name = by_source.ok_or(DropReason::UnknownSource)?;
            return Ok((name.to_owned(), pkt));
        }
        let name = self
            .by_discr
            .get(&pkt.your_discr)
            .ok_or(DropReason::UnknownDiscriminator)?;
        let peer = self
            .peers
            .get(name)
            .ok_or(DropReason::UnknownDiscriminator)?;
        if peer.spec.remote != r.from.ip() {
            return Err(DropReason::SourceMismatch);
        }
        Ok((name.clone(), pkt))
    }

    fn timers(&mut self) {
        let now = Instant::now();
        for p in self.peers.values_mut() {
            for t in TIMERS {
                let i = timer_index(t);
                if p.deadlines[i].is_some_and(|d| d <= now) {
                    p.deadlines[i] = None;
                    let outs = p.session.process(now, Input::TimerExpired(t));
                    p.apply(now, outs, &self.events);
                }
            }
        }
    }

    /// AdminDown to every neighbor, each send bounded by the shutdown timeout.
    async fn shutdown(&mut self) {
        let deadline = tokio::time::Instant::now() + self.cfg.shutdown_timeout;
        let now = Instant::now();
        for p in self.peers.values_mut() {
            for o in p.session.process(now, Input::AdminDown) {
                match o {
                    Output::Send(pkt) => {
                        let bytes = pkt.encode();
                        match tokio::time::timeout_at(deadline, p.sock.send_to(&bytes, p.dest))
                            .await
                        {
                            Ok(Ok(_)) => p.packets_out += 1,
                            _ => p.send_errors += 1,
                        }
                    }
                    Output::Event(_) => p.apply(now, vec![o], &self.events),
                    _ => {}
                }
            }
        }
        info!(peers = self.peers.len(), "bfd: shut down, AdminDown sent");
    }
}

/// Lower-case hex of a byte slice, for the wire trace.
struct Hex<'a>(&'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
