//! Sans-IO BGP session state machine (RFC 4271 §8).
//!
//! The FSM never touches a socket or a clock: the driver feeds it [`Input`]s (connection
//! results, decoded messages, timer expiries) with the current [`Instant`] and carries out the
//! [`Output`]s (connect, send, start/stop a timer, report up/down). Tests drive it with a fake
//! clock and a fixed jitter source.
//!
//! ```text
//!            ManualStart                 TcpConnected           OPEN ok
//!  Idle ───────────────▶ Connect ──────────────────▶ OpenSent ─────────▶ OpenConfirm
//!   ▲  (passive: Active)    │ TcpFailed ▲ ConnectRetry    │                    │ KEEPALIVE
//!   │                       ▼           │                 │                    ▼
//!   │                     Active ───────┘                 │               Established
//!   └──── error / NOTIFICATION / hold timer / ManualStop ─┴────────────────────┘
//!         (then IdleHold with exponential backoff → automatic restart)
//! ```

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::packet::{
    Capability, DecodeError, Family, GracefulRestart, Message, Notification, Open, Update, CEASE,
    CEASE_COLLISION, FSM_ERROR, HOLD_TIMER_EXPIRED,
};

/// RFC 4271 §8.2.2 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not trying; waiting for a start (or the IdleHold timer after an error).
    Idle,
    /// Waiting for our outgoing TCP connection.
    Connect,
    /// Waiting for an incoming connection (or for ConnectRetry to try again).
    Active,
    /// OPEN sent, waiting for the peer's OPEN.
    OpenSent,
    /// OPENs exchanged, waiting for the first KEEPALIVE.
    OpenConfirm,
    /// Session up: UPDATEs flow.
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Idle => "idle",
            State::Connect => "connect",
            State::Active => "active",
            State::OpenSent => "opensent",
            State::OpenConfirm => "openconfirm",
            State::Established => "established",
        })
    }
}

/// The FSM's timers (RFC 4271 §10; IdleHold is the DampPeerOscillations restart delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// ConnectRetryTimer.
    ConnectRetry,
    /// HoldTimer.
    Hold,
    /// KeepaliveTimer.
    Keepalive,
    /// IdleHoldTimer: delay before the automatic restart after an error.
    IdleHold,
}

const ALL_TIMERS: [Timer; 4] = [
    Timer::ConnectRetry,
    Timer::Hold,
    Timer::Keepalive,
    Timer::IdleHold,
];

/// The "large value" the hold timer gets while waiting for OPEN (RFC 4271 §8.2.2: 4 minutes).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);
/// Ceiling of the exponential connect/restart backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// Events fed to the FSM. Names of the RFC 4271 §8.1 events in the comments.
#[allow(clippy::large_enum_variant)] // carries a Message, see there
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Event 1 ManualStart / Event 4 ManualStart_with_PassiveTcpEstablishment (per config).
    ManualStart,
    /// Event 2 ManualStop: sends this Cease if a session exists, goes Idle and stays there.
    ManualStop(Notification),
    /// ManualStop without a NOTIFICATION: the connection just closes, which a graceful
    /// restart helper (RFC 4724 §4.2) takes for a restart and keeps our routes as stale.
    ManualStopForRestart,
    /// Events 9 ConnectRetryTimer_Expires, 10 HoldTimer_Expires, 11 KeepaliveTimer_Expires,
    /// and Event 3 AutomaticStart for IdleHold.
    TimerExpired(Timer),
    /// Event 16 Tcp_CR_Acked (our connect succeeded) / Event 17 TcpConnectionConfirmed
    /// (an incoming connection was accepted for this peer).
    TcpConnected,
    /// Event 18 TcpConnectionFails (connect failed, or the connection closed / errored).
    TcpFailed,
    /// Events 19 BGPOpen, 25 NotifMsg, 26 KeepAliveMsg, 27 UpdateMsg, ROUTE-REFRESH.
    Message(Message),
    /// Events 21 BGPHeaderErr, 22 BGPOpenMsgErr, 28 UpdateMsgErr (session-reset ones).
    DecodeError(DecodeError),
    /// Event 23 OpenCollisionDump: this connection lost the collision resolution (§6.8).
    CollisionDump,
}

/// Why an Established session ended (or why the last attempt failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// We stopped it (ManualStop) with this NOTIFICATION.
    Stopped(Notification),
    /// We closed it without a NOTIFICATION for a graceful restart (RFC 4724).
    StoppedForRestart,
    /// No message within the hold time; we sent 4/0.
    HoldTimerExpired,
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// We sent this NOTIFICATION because of an error in what the peer sent.
    NotificationSent(Notification),
    /// The TCP connection failed or closed.
    ConnectionLost,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::Stopped(n) => write!(f, "stopped ({n})"),
            DownReason::StoppedForRestart => f.write_str("closed for a graceful restart"),
            DownReason::HoldTimerExpired => f.write_str("hold timer expired"),
            DownReason::NotificationReceived(n) => write!(f, "received NOTIFICATION {n}"),
            DownReason::NotificationSent(n) => write!(f, "sent NOTIFICATION {n}"),
            DownReason::ConnectionLost => f.write_str("connection lost"),
        }
    }
}

/// What was agreed with the peer in the OPEN exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Peer's AS.
    pub peer_as: u32,
    /// Peer's BGP identifier.
    pub peer_id: Ipv4Addr,
    /// min(ours, theirs); 0 means no keepalives and no hold timer.
    pub hold_time: u16,
    /// hold_time / 3.
    pub keepalive: Duration,
    /// Both sides have the 4-octet AS capability.
    pub four_octet_as: bool,
    /// Families both sides advertised (IPv4 unicast alone when the peer sent no MP capability).
    pub families: Vec<Family>,
    /// Peer supports ROUTE-REFRESH.
    pub route_refresh: bool,
    /// Peer's graceful restart capability.
    pub graceful_restart: Option<GracefulRestart>,
}

/// Actions for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Start an outgoing TCP connection; report back TcpConnected / TcpFailed.
    Connect,
    /// Close the connection (after writing what was queued) or abandon the connect attempt.
    Disconnect,
    /// Write this message.
    Send(Message),
    /// (Re)arm a timer to fire after the duration.
    StartTimer(Timer, Duration),
    /// Disarm a timer.
    StopTimer(Timer),
    /// The session reached Established.
    Established(Negotiated),
    /// The Established session went down.
    Down(DownReason),
    /// An UPDATE arrived on the Established session (the speaker only counts them; RFC 7606
    /// errors it carries are reported here).
    UpdateReceived(Update),
    /// The peer asked for our routes again (ROUTE-REFRESH for this family).
    RouteRefresh(Family),
}

/// Static parameters of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmConfig {
    /// Our AS.
    pub local_as: u32,
    /// Expected peer AS.
    pub remote_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Hold time we propose (0 or ≥ 3).
    pub hold_time: u16,
    /// Base ConnectRetry / restart delay; doubles per consecutive failure up to [`MAX_BACKOFF`].
    pub connect_retry: Duration,
    /// Never connect out; wait for the peer (Event 4 semantics).
    pub passive: bool,
    /// Capabilities we advertise (the 4-octet AS capability is always added).
    pub capabilities: Vec<Capability>,
    /// Capabilities the peer must advertise, else OPEN error 2/7.
    pub required: Vec<Capability>,
}

/// The FSM of one peer.
pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    /// ConnectRetryCounter: consecutive failures, drives the backoff.
    retries: u32,
    negotiated: Option<Negotiated>,
    established_at: Option<Instant>,
    last_error: Option<DownReason>,
    jitter: Box<dyn FnMut() -> f64 + Send>,
}

impl std::fmt::Debug for Fsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fsm")
            .field("state", &self.state)
            .field("retries", &self.retries)
            .field("negotiated", &self.negotiated)
            .finish_non_exhaustive()
    }
}

impl Fsm {
    /// A new FSM in Idle. `jitter` returns a factor in [0.75, 1.0] (RFC 4271 §10) applied to
    /// the ConnectRetry and restart delays; values outside are clamped.
    pub fn new(cfg: FsmConfig, jitter: Box<dyn FnMut() -> f64 + Send>) -> Self {
        Self {
            cfg,
            state: State::Idle,
            retries: 0,
            negotiated: None,
            established_at: None,
            last_error: None,
            jitter,
        }
    }

    /// A jitter source drawing uniformly from [0.75, 1.0].
    pub fn random_jitter() -> Box<dyn FnMut() -> f64 + Send> {
        Box::new(|| rand::random_range(0.75..=1.0))
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    /// Replaces the capabilities of our next OPENs (e.g. without the graceful-restart
    /// Restart State bit once the restart is over, RFC 4724 §3).
    pub fn set_capabilities(&mut self, caps: Vec<Capability>) {
        self.cfg.capabilities = caps;
    }

    /// Changes the ConnectRetry base delay; it applies from the next timer on.
    pub fn set_connect_retry(&mut self, d: Duration) {
        self.cfg.connect_retry = d;
    }

    /// What the OPEN exchange agreed (set from OpenConfirm on).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// When the session became Established, if it is.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    /// The most recent failure.
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// Our OPEN message.
    pub fn open_message(&self) -> Open {
        Open::new(
            self.cfg.local_as,
            self.cfg.hold_time,
            self.cfg.router_id,
            self.cfg.capabilities.clone(),
        )
    }

    /// Delay before retry number `n` (1-based): base × 2^(n−1), capped, jittered.
    fn backoff(&mut self, n: u32) -> Duration {
        let base = self.cfg.connect_retry.max(Duration::from_millis(100));
        let exp = base.saturating_mul(1u32 << n.saturating_sub(1).min(16));
        let capped = exp.min(MAX_BACKOFF.max(base));
        self.jittered(capped)
    }

    /// The ConnectRetryTimer while connecting: `connect_retry`, jittered.
    fn retry_delay(&mut self) -> Duration {
        self.jittered(self.cfg.connect_retry)
    }

    /// `d` scaled by the injected jitter, kept within 75–100 % (RFC 4271 §10).
    fn jittered(&mut self, d: Duration) -> Duration {
        d.mul_f64((self.jitter)().clamp(0.75, 1.0))
    }

    /// Processes one event; returns what the driver must do, in order.
    pub fn process(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match (self.state, input) {
            // ---- Idle ----
            (State::Idle, Input::ManualStart)
            | (State::Idle, Input::TimerExpired(Timer::IdleHold)) => self.start(&mut out),
            (State::Idle, _) => {}

            // ---- ManualStop in any other state ----
            (_, Input::ManualStop(n)) => {
                let had_session = matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                );
                if had_session {
                    out.push(Output::Send(Message::Notification(n.clone())));
                }
                self.retries = 0;
                self.go_idle(&mut out, DownReason::Stopped(n), false);
            }
            (_, Input::ManualStopForRestart) => {
                self.retries = 0;
                self.go_idle(&mut out, DownReason::StoppedForRestart, false);
            }

            // ---- Connect / Active ----
            (State::Connect, Input::TimerExpired(Timer::ConnectRetry)) => {
                out.push(Output::Disconnect);
                out.push(Output::Connect);
                out.push(Output::StartTimer(Timer::ConnectRetry, self.retry_delay()));
            }
            (State::Active, Input::TimerExpired(Timer::ConnectRetry)) => {
                if !self.cfg.passive {
                    out.push(Output::Connect);
                    out.push(Output::StartTimer(Timer::ConnectRetry, self.retry_delay()));
                    self.state = State::Connect;
                }
            }
            (State::Connect | State::Active, Input::TcpConnected) => {
                out.push(Output::StopTimer(Timer::ConnectRetry));
                out.push(Output::Send(Message::Open(self.open_message())));
                out.push(Output::StartTimer(Timer::Hold, OPEN_HOLD_TIME));
                self.state = State::OpenSent;
            }
            (State::Connect, Input::TcpFailed) => {
                self.retries = self.retries.saturating_add(1);
                let d = self.backoff(self.retries);
                out.push(Output::StartTimer(Timer::ConnectRetry, d));
                self.last_error = Some(DownReason::ConnectionLost);
                self.state = State::Active;
            }
            (State::Active, Input::TcpFailed) => {}
            (State::Connect | State::Active, _) => {
                // RFC 4271: any other event here is an FSM error; there is no session to notify.
                self.go_idle(&mut out, DownReason::ConnectionLost, true);
            }

            // ---- OpenSent / OpenConfirm / Established ----
            (_, Input::TimerExpired(Timer::Hold)) => {
                let n = Notification::new(HOLD_TIMER_EXPIRED, 0);
                out.push(Output::Send(Message::Notification(n)));
                self.go_idle(&mut out, DownReason::HoldTimerExpired, true);
            }
            (State::OpenConfirm | State::Established, Input::TimerExpired(Timer::Keepalive)) => {
                out.push(Output::Send(Message::Keepalive));
                if let Some(n) = &self.negotiated {
                    out.push(Output::StartTimer(Timer::Keepalive, n.keepalive));
                }
            }
            (_, Input::TimerExpired(_)) => {}
            (State::OpenSent, Input::TcpFailed) => {
                // §8.2.2: close, restart ConnectRetry, go back to Active.
                self.retries = self.retries.saturating_add(1);
                let d = self.backoff(self.retries);
                out.push(Output::StopTimer(Timer::Hold));
                out.push(Output::Disconnect);
                out.push(Output::StartTimer(Timer::ConnectRetry, d));
                self.last_error = Some(DownReason::ConnectionLost);
                self.state = State::Active;
            }
            (_, Input::TcpFailed) => self.go_idle(&mut out, DownReason::ConnectionLost, true),
            (_, Input::TcpConnected) => {
                // A second connection while one is in progress is the driver's collision case;
                // reaching here means it was not resolved: refuse it as an FSM error.
                self.fsm_error(&mut out);
            }
            (_, Input::CollisionDump) => {
                let n = Notification::new(CEASE, CEASE_COLLISION);
                out.push(Output::Send(Message::Notification(n.clone())));
                // The surviving connection carries on; do not count this as a failure.
                self.go_idle(&mut out, DownReason::NotificationSent(n), false);
            }
            (_, Input::DecodeError(e)) => {
                let n = Notification::from(&e);
                // RFC 4271 §6.4: no NOTIFICATION in answer to a malformed NOTIFICATION.
                if !matches!(e, DecodeError::BadNotification) {
                    out.push(Output::Send(Message::Notification(n.clone())));
                }
                self.go_idle(&mut out, DownReason::NotificationSent(n), true);
            }
            (_, Input::Message(Message::Notification(n))) => {
                self.go_idle(&mut out, DownReason::NotificationReceived(n), true);
            }
            (State::OpenSent, Input::Message(Message::Open(open))) => self.on_open(&mut out, open),
            (State::OpenConfirm, Input::Message(Message::Keepalive)) => {
                self.state = State::Established;
                self.retries = 0;
                self.established_at = Some(now);
                self.restart_hold(&mut out);
                if let Some(n) = &self.negotiated {
                    out.push(Output::Established(n.clone()));
                }
            }
            (State::Established, Input::Message(Message::Keepalive)) => self.restart_hold(&mut out),
            (State::Established, Input::Message(Message::Update(u))) => {
                self.restart_hold(&mut out);
                out.push(Output::UpdateReceived(u));
            }
            (State::Established, Input::Message(Message::RouteRefresh(rr))) => {
                self.restart_hold(&mut out);
                // RFC 7313 BoRR/EoRR (subtypes 1, 2) are markers, not requests.
                if rr.subtype == 0 {
                    out.push(Output::RouteRefresh(Family {
                        afi: rr.afi,
                        safi: rr.safi,
                    }));
                }
            }
            (State::OpenSent | State::OpenConfirm | State::Established, Input::Message(_)) => {
                self.fsm_error(&mut out)
            }
            (State::OpenSent | State::OpenConfirm | State::Established, Input::ManualStart) => {}
        }
        out
    }

    fn start(&mut self, out: &mut Vec<Output>) {
        out.push(Output::StopTimer(Timer::IdleHold));
        if self.cfg.passive {
            self.state = State::Active;
        } else {
            out.push(Output::Connect);
            out.push(Output::StartTimer(Timer::ConnectRetry, self.retry_delay()));
            self.state = State::Connect;
        }
    }

    /// RFC 6608: FSM error subcodes 1/2/3 by the state the unexpected message arrived in.
    fn fsm_error(&mut self, out: &mut Vec<Output>) {
        let sub = match self.state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            State::Established => 3,
            _ => 0,
        };
        let n = Notification::new(FSM_ERROR, sub);
        out.push(Output::Send(Message::Notification(n.clone())));
        self.go_idle(out, DownReason::NotificationSent(n), true);
    }

    fn restart_hold(&self, out: &mut Vec<Output>) {
        if let Some(n) = &self.negotiated {
            if n.hold_time != 0 {
                out.push(Output::StartTimer(
                    Timer::Hold,
                    Duration::from_secs(u64::from(n.hold_time)),
                ));
            }
        }
    }

    /// Leaves for Idle: stops timers, drops the connection, reports Down if the session was
    /// up, and (`restart`) arms the IdleHold timer with the backoff for an automatic restart.
    fn go_idle(&mut self, out: &mut Vec<Output>, reason: DownReason, restart: bool) {
        let was_up = self.state == State::Established;
        for t in ALL_TIMERS {
            out.push(Output::StopTimer(t));
        }
        out.push(Output::Disconnect);
        if was_up {
            out.push(Output::Down(reason.clone()));
        }
        self.last_error = Some(reason);
        self.state = State::Idle;
        self.negotiated = None;
        self.established_at = None;
        if restart {
            self.retries = self.retries.saturating_add(1);
            let d = self.backoff(self.retries);
            out.push(Output::StartTimer(Timer::IdleHold, d));
        }
    }

    /// Validates the peer's OPEN (RFC 4271 §6.2, RFC 5492, RFC 6286) or fails with the exact
    /// NOTIFICATION.
    pub fn validate_open(&self, open: &Open) -> Result<Negotiated, DecodeError> {
        let peer_as = open.asn();
        if peer_as != self.cfg.remote_as {
            return Err(DecodeError::BadPeerAs(peer_as));
        }
        let ibgp = self.cfg.remote_as == self.cfg.local_as;
        if open.bgp_id.is_unspecified() || (ibgp && open.bgp_id == self.cfg.router_id) {
            return Err(DecodeError::BadBgpIdentifier(open.bgp_id));
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(DecodeError::UnacceptableHoldTime(open.hold_time));
        }
        let missing: Vec<Capability> = self
            .cfg
            .required
            .iter()
            .filter(|c| !open.has(c))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(DecodeError::UnsupportedCapability(
                crate::packet::encode_capabilities(&missing),
            ));
        }
        let hold_time = self.cfg.hold_time.min(open.hold_time);
        let ours: Vec<Family> = mp_families(&self.open_message());
        let theirs = mp_families(open);
        let families = ours.into_iter().filter(|f| theirs.contains(f)).collect();
        Ok(Negotiated {
            peer_as,
            peer_id: open.bgp_id,
            hold_time,
            keepalive: Duration::from_secs(u64::from(hold_time / 3)),
            four_octet_as: open.four_octet_as().is_some(),
            families,
            route_refresh: open.has(&Capability::RouteRefresh),
            graceful_restart: open.capabilities.iter().find_map(|c| match c {
                Capability::GracefulRestart(g) => Some(g.clone()),
                _ => None,
            }),
        })
    }

    fn on_open(&mut self, out: &mut Vec<Output>, open: Open) {
        match self.validate_open(&open) {
            Err(e) => {
                let n = Notification::from(&e);
                out.push(Output::Send(Message::Notification(n.clone())));
                self.go_idle(out, DownReason::NotificationSent(n), true);
            }
            Ok(neg) => {
                out.push(Output::StopTimer(Timer::ConnectRetry));
                out.push(Output::Send(Message::Keepalive));
                if neg.hold_time == 0 {
                    out.push(Output::StopTimer(Timer::Hold));
                    out.push(Output::StopTimer(Timer::Keepalive));
                } else {
                    out.push(Output::StartTimer(
                        Timer::Hold,
                        Duration::from_secs(u64::from(neg.hold_time)),
                    ));
                    out.push(Output::StartTimer(Timer::Keepalive, neg.keepalive));
                }
                self.negotiated = Some(neg);
                self.state = State::OpenConfirm;
            }
        }
    }
}

/// Families an OPEN advertises; none means IPv4 unicast only (RFC 4760 §1).
fn mp_families(open: &Open) -> Vec<Family> {
    let f: Vec<Family> = open
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::Multiprotocol(f) => Some(*f),
            _ => None,
        })
        .collect();
    if f.is_empty() {
        vec![Family::IPV4_UNICAST]
    } else {
        f
    }
}

/// Connection collision resolution (RFC 4271 §6.8): which connection survives when both sides
/// connected. Returns true when the connection *we* initiated is kept, i.e. our BGP
/// identifier is the higher one.
pub fn keep_locally_initiated(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> bool {
    u32::from(local_id) > u32::from(remote_id)
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
