//! Sans-IO BFD session state machine: asynchronous mode, single hop (RFC 5880 §6).
//!
//! The FSM never touches a socket or a clock: the driver feeds it [`Input`]s (decoded packets
//! already demultiplexed to this session, timer expiries, operator commands) with the current
//! [`Instant`] and carries out the [`Output`]s (send this packet now, start or stop a timer,
//! report Up or Down). Tests drive it with a fake clock and a fixed jitter source.
//!
//! ```text
//!                             +--+
//!                             |  | UP, ADMIN DOWN, TIMER
//!                             |  V
//!                     DOWN  +------+  INIT
//!              +------------|      |------------+
//!              |            | DOWN |            |
//!              |  +-------->|      |<--------+  |
//!              |  |         +------+         |  |
//!              |  |                          |  |
//!              |  |               ADMIN DOWN,|  |
//!              |  |ADMIN DOWN,          DOWN,|  |
//!              |  |TIMER                TIMER|  |
//!              V  |                          |  V
//!            +------+                      +------+
//!       +----|      |                      |      |----+
//!   DOWN|    | INIT |--------------------->|  UP  |    |INIT, UP
//!       +--->|      | INIT, UP             |      |<---+
//!            +------+                      +------+
//! ```
//! (RFC 5880 §6.2; the labels are the State field of the received packet, or TIMER for the
//! Detection Time expiring. AdminDown is entered and left by [`Input::AdminDown`] and
//! [`Input::AdminUp`] only.)
//!
//! Timers (§6.8.2–§6.8.4, §6.8.7): the transmit interval is max(our Desired Min TX, the
//! remote's Required Min RX), less 0–25 % of jitter (75–90 % of it when our Detect Mult is 1);
//! the Detection Time is the remote's Detect Mult × max(our Required Min RX, the remote's
//! Desired Min TX). While the session is not Up we advertise a Desired Min TX of at least one
//! second (§6.8.3 slow start). Any change of what we advertise starts a Poll Sequence (§6.5).
//! Until its Final comes back, the safer of the old and new values is used for our own timing:
//! the faster transmit rate (a slower one only after the Final, so the remote has lengthened
//! its Detection Time first) and the longer Detection Time (a shorter one only after the Final,
//! so the remote is already sending faster). A faster rate applies at once because the remote
//! times us out by the Desired Min TX we advertise from the first packet that carries it.
//!
//! What the owner is told goes through [`Damping`]: Down at once, Up after a
//! hold-down when the session has been flapping.

use std::time::{Duration, Instant};

use crate::damping::{Dampener, Damping};
use crate::packet::{ControlPacket, Diag, State};

/// Desired Min TX advertised while the session is not Up (RFC 5880 §6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// The FSM's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Next periodic Control packet (§6.8.7).
    Transmit,
    /// Detection Time without a packet from the remote (§6.8.4).
    Detect,
    /// Dampening: the session has stayed Up long enough to be reported.
    HoldDown,
}

/// Inputs to the FSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start transmitting (the session is created in Down, silent).
    Start,
    /// A Control packet that passed the codec's checks and was demultiplexed to this session
    /// (§6.8.6).
    Received(ControlPacket),
    /// A timer the driver started has fired.
    TimerExpired(Timer),
    /// Take the session administratively down (§6.8.16): AdminDown with diagnostic 7.
    AdminDown,
    /// Leave AdminDown (back to Down, the session comes up again with the remote).
    AdminUp,
    /// The owner knows the forwarding path is down (e.g. the interface): the session goes Down
    /// with this diagnostic (typically [`Diag::PathDown`]).
    LocalDown(Diag),
    /// New timer parameters (§6.8.3); a Poll Sequence carries them to the remote.
    SetIntervals(Intervals),
}

/// The locally configured timer parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// bfd.DesiredMinTxInterval (raised to [`SLOW_TX`] while not Up).
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub required_min_rx: Duration,
    /// bfd.DetectMult (1–255; 0 is taken as 1).
    pub detect_mult: u8,
}

/// What the owner is told (after dampening).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The session is Up (and, after a flap, has stayed Up for the hold-down).
    Up,
    /// The session went down after an `Up` was reported.
    Down {
        /// Our diagnostic: why it went down.
        diag: Diag,
        /// The remote signalled AdminDown: per RFC 5882 §3.2 this is not a path failure, and a
        /// client should not tear its own session down for it.
        remote_admin_down: bool,
    },
}

/// Why a received packet was discarded by the FSM (§6.8.6); the codec's reasons are
/// [`DecodeError`](crate::packet::DecodeError)s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Discard {
    /// Your Discriminator is neither zero nor ours.
    YourDiscriminator,
    /// The A bit disagrees with our authentication (none is configured).
    Auth,
    /// We are AdminDown: the packet updated the remote's variables, nothing else.
    AdminDown,
}

/// Actions for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this packet now.
    Send(ControlPacket),
    /// (Re)start a timer to fire after this long.
    StartTimer(Timer, Duration),
    /// Stop a timer.
    StopTimer(Timer),
    /// Tell the owner.
    Event(Event),
    /// The received packet was discarded; count it.
    Discarded(Discard),
}

/// Construction parameters of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// bfd.LocalDiscr: unique among the driver's sessions, never 0.
    pub local_discr: u32,
    /// Timer parameters.
    pub intervals: Intervals,
    /// Dampening of the reported Ups.
    pub damping: Damping,
}

/// One BFD session (RFC 5880 §6.8.1 state variables).
pub struct Session {
    state: State,
    remote_state: State,
    local_discr: u32,
    remote_discr: u32,
    local_diag: Diag,
    remote_diag: Diag,
    cfg: Intervals,
    /// What we advertise now (Desired Min TX raised while not Up).
    adv_tx: Duration,
    adv_rx: Duration,
    /// Poll Sequence under way: the (tx, rx) in effect before it, until the Final.
    poll: Option<(Duration, Duration)>,
    remote_min_rx: Duration,
    remote_desired_tx: Duration,
    remote_mult: u8,
    remote_demand: bool,
    started: bool,
    /// Transmit interval last used to arm the Transmit timer.
    tx_interval: Option<Duration>,
    reported_up: bool,
    holding: bool,
    dampener: Dampener,
    jitter: Box<dyn FnMut() -> f64 + Send>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("local_discr", &self.local_discr)
            .field("remote_discr", &self.remote_discr)
            .finish_non_exhaustive()
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Session {
    /// A session in Down, silent until [`Input::Start`]. `jitter` returns values in [0, 1).
    pub fn new(cfg: SessionConfig, jitter: Box<dyn FnMut() -> f64 + Send>) -> Session {
        let intervals = Intervals {
            detect_mult: cfg.intervals.detect_mult.max(1),
            ..cfg.intervals
        };
        Session {
            state: State::Down,
            remote_state: State::Down,
            local_discr: cfg.local_discr,
            remote_discr: 0,
            local_diag: Diag::None,
            remote_diag: Diag::None,
            cfg: intervals,
            adv_tx: intervals.desired_min_tx.max(SLOW_TX),
            adv_rx: intervals.required_min_rx,
            poll: None,
            // §6.8.1: bfd.RemoteMinRxInterval starts at 1 µs.
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_mult: 0,
            remote_demand: false,
            started: false,
            tx_interval: None,
            reported_up: false,
            holding: false,
            dampener: Dampener::new(cfg.damping),
            jitter,
        }
    }

    /// Uniform jitter from `rand`.
    pub fn random_jitter() -> Box<dyn FnMut() -> f64 + Send> {
        Box::new(rand::random::<f64>)
    }

    /// bfd.SessionState.
    pub fn state(&self) -> State {
        self.state
    }
    /// bfd.RemoteSessionState.
    pub fn remote_state(&self) -> State {
        self.remote_state
    }
    /// bfd.LocalDiscr.
    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }
    /// bfd.RemoteDiscr (0 until the remote is heard, and again after a Detection Time).
    pub fn remote_discr(&self) -> u32 {
        self.remote_discr
    }
    /// bfd.LocalDiag: why our session last went down.
    pub fn local_diag(&self) -> Diag {
        self.local_diag
    }
    /// The Diag of the last packet received.
    pub fn remote_diag(&self) -> Diag {
        self.remote_diag
    }
    /// The configured intervals.
    pub fn intervals(&self) -> Intervals {
        self.cfg
    }
    /// A Poll Sequence is under way.
    pub fn polling(&self) -> bool {
        self.poll.is_some()
    }
    /// Whether the owner was told Up (and not Down since).
    pub fn reported_up(&self) -> bool {
        self.reported_up
    }
    /// Downs the dampening remembers.
    pub fn flaps(&self) -> u32 {
        self.dampener.flaps()
    }

    /// The transmit interval before jitter (§6.8.2, §6.8.7): max(our Desired Min TX in effect,
    /// the remote's Required Min RX). `None` when the remote asked for no periodic packets.
    pub fn tx_interval(&self) -> Option<Duration> {
        if self.remote_min_rx.is_zero() {
            return None;
        }
        Some(self.effective_tx().max(self.remote_min_rx))
    }

    /// The Detection Time (§6.8.4): remote Detect Mult × max(our Required Min RX in effect,
    /// the remote's Desired Min TX). `None` before the remote is heard.
    pub fn detection_time(&self) -> Option<Duration> {
        if self.remote_mult == 0 {
            return None;
        }
        Some(
            self.effective_rx()
                .max(self.remote_desired_tx)
                .saturating_mul(u32::from(self.remote_mult)),
        )
    }

    /// Desired Min TX in effect: during a Poll Sequence the faster of the old and new values.
    /// An increase waits for the Final (§6.8.3: the remote must first lengthen its Detection
    /// Time); a decrease applies at once, since the remote computes its Detection Time from
    /// the value we advertise as soon as it sees it.
    fn effective_tx(&self) -> Duration {
        match self.poll {
            Some((tx, _)) => tx.min(self.adv_tx),
            None => self.adv_tx,
        }
    }

    /// Required Min RX in effect: during a Poll Sequence the larger of the old and new values.
    fn effective_rx(&self) -> Duration {
        match self.poll {
            Some((_, rx)) => rx.max(self.adv_rx),
            None => self.adv_rx,
        }
    }

    /// The packet we would send now.
    pub fn packet(&self, poll: bool, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.local_diag,
            state: self.state,
            poll,
            final_,
            cpi: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: micros(self.adv_tx),
            required_min_rx: micros(self.adv_rx),
            required_min_echo_rx: 0,
            auth: None,
        }
    }

    /// Feeds one input; returns what to do, in order.
    pub fn process(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if !self.started {
                    self.started = true;
                    self.send_now(&mut out);
                }
            }
            Input::Received(p) => self.receive(now, p, &mut out),
            Input::TimerExpired(t) => self.timer(now, t, &mut out),
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    self.go_down(now, State::AdminDown, Diag::AdminDown, &mut out);
                    out.push(Output::StopTimer(Timer::Detect));
                    self.send_now(&mut out);
                }
            }
            Input::AdminUp => {
                if self.state == State::AdminDown {
                    self.state = State::Down;
                    self.local_diag = Diag::None;
                    self.send_now(&mut out);
                }
            }
            Input::LocalDown(diag) => {
                if matches!(self.state, State::Init | State::Up) {
                    self.go_down(now, State::Down, diag, &mut out);
                    self.send_now(&mut out);
                }
            }
            Input::SetIntervals(iv) => {
                self.cfg = Intervals {
                    detect_mult: iv.detect_mult.max(1),
                    ..iv
                };
                self.advertise(&mut out);
            }
        }
        out
    }

    /// §6.8.6 from "If the Your Discriminator field is nonzero" on (the codec did the rest).
    fn receive(&mut self, now: Instant, p: ControlPacket, out: &mut Vec<Output>) {
        if p.your_discr != 0 && p.your_discr != self.local_discr {
            out.push(Output::Discarded(Discard::YourDiscriminator));
            return;
        }
        if p.auth.is_some() {
            out.push(Output::Discarded(Discard::Auth));
            return;
        }
        self.remote_discr = p.my_discr;
        self.remote_state = p.state;
        self.remote_diag = p.diag;
        self.remote_demand = p.demand;
        self.remote_min_rx = Duration::from_micros(p.required_min_rx.into());
        self.remote_desired_tx = Duration::from_micros(p.desired_min_tx.into());
        self.remote_mult = p.detect_mult;
        if p.final_ && self.poll.is_some() {
            self.poll = None;
        }
        if self.state == State::AdminDown {
            self.rearm_tx(out);
            out.push(Output::Discarded(Discard::AdminDown));
            return;
        }
        let before = self.state;
        match (self.state, p.state) {
            (State::Down | State::AdminDown, State::AdminDown) => {}
            (_, State::AdminDown) => {
                self.go_down(now, State::Down, Diag::NeighborDown, out);
            }
            (State::Down, State::Down) => self.state = State::Init,
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                self.go_up(now, out);
            }
            (State::Up, State::Down) => self.go_down(now, State::Down, Diag::NeighborDown, out),
            _ => {}
        }
        if let Some(d) = self.detection_time() {
            out.push(Output::StartTimer(Timer::Detect, d));
        }
        self.rearm_tx(out);
        if !self.started {
            return;
        }
        if p.poll {
            // §6.8.6: answer a Poll at once with P clear and F set.
            out.push(Output::Send(self.packet(false, true)));
        } else if self.state != before {
            self.send_now(out);
        }
    }

    fn timer(&mut self, now: Instant, t: Timer, out: &mut Vec<Output>) {
        match t {
            Timer::Transmit => {
                self.tx_interval = None;
                self.rearm_tx(out);
                if self.tx_interval.is_some() && self.periodic_allowed() {
                    out.push(Output::Send(self.packet(self.poll.is_some(), false)));
                }
            }
            Timer::Detect => {
                // §6.8.1: bfd.RemoteDiscr is reset when the Detection Time expires; §6.8.4:
                // Init or Up goes Down with diagnostic 1.
                self.remote_discr = 0;
                if matches!(self.state, State::Init | State::Up) {
                    self.go_down(now, State::Down, Diag::DetectionTimeExpired, out);
                    self.send_now(out);
                }
            }
            Timer::HoldDown => {
                if self.holding && self.state == State::Up {
                    self.holding = false;
                    self.reported_up = true;
                    out.push(Output::Event(Event::Up));
                }
            }
        }
    }

    /// §6.8.7: no periodic packets while the remote runs Demand mode with both sides Up.
    fn periodic_allowed(&self) -> bool {
        !(self.remote_demand && self.state == State::Up && self.remote_state == State::Up)
    }

    fn go_up(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.state = State::Up;
        self.local_diag = Diag::None;
        self.advertise(out);
        let hold = self.dampener.hold_for_up(now);
        if hold.is_zero() {
            self.reported_up = true;
            out.push(Output::Event(Event::Up));
        } else {
            self.holding = true;
            out.push(Output::StartTimer(Timer::HoldDown, hold));
        }
    }

    fn go_down(&mut self, now: Instant, to: State, diag: Diag, out: &mut Vec<Output>) {
        let was_live = matches!(self.state, State::Init | State::Up);
        self.state = to;
        self.local_diag = diag;
        // Leaving Up: back to the slow rate at once, no Poll (the remote is going down too).
        self.poll = None;
        self.adv_tx = self.cfg.desired_min_tx.max(SLOW_TX);
        self.adv_rx = self.cfg.required_min_rx;
        if was_live {
            self.dampener.down(now);
        }
        if self.holding {
            self.holding = false;
            out.push(Output::StopTimer(Timer::HoldDown));
        }
        if self.reported_up {
            self.reported_up = false;
            out.push(Output::Event(Event::Down {
                diag,
                remote_admin_down: self.remote_state == State::AdminDown,
            }));
        }
        self.rearm_tx(out);
    }

    /// Recomputes what we advertise; a change starts (or extends) a Poll Sequence.
    fn advertise(&mut self, out: &mut Vec<Output>) {
        let tx = if self.state == State::Up {
            self.cfg.desired_min_tx
        } else {
            self.cfg.desired_min_tx.max(SLOW_TX)
        };
        let rx = self.cfg.required_min_rx;
        if (tx, rx) == (self.adv_tx, self.adv_rx) {
            return;
        }
        self.poll = Some((self.effective_tx(), self.effective_rx()));
        self.adv_tx = tx;
        self.adv_rx = rx;
        self.rearm_tx(out);
    }

    /// Restarts the Transmit timer when the interval changed (or is not running).
    fn rearm_tx(&mut self, out: &mut Vec<Output>) {
        if !self.started {
            return;
        }
        let iv = self.tx_interval();
        if iv == self.tx_interval {
            return;
        }
        self.tx_interval = iv;
        match iv {
            Some(iv) => {
                let j = (self.jitter)().clamp(0.0, 1.0);
                // §6.8.7: 0–25 % less; 75–90 % of the interval when Detect Mult is 1.
                let factor = if self.cfg.detect_mult == 1 {
                    0.75 + 0.15 * j
                } else {
                    1.0 - 0.25 * j
                };
                out.push(Output::StartTimer(Timer::Transmit, iv.mul_f64(factor)));
            }
            None => out.push(Output::StopTimer(Timer::Transmit)),
        }
    }

    /// Sends the current packet now (a state change), with P while polling.
    fn send_now(&mut self, out: &mut Vec<Output>) {
        if !self.started {
            return;
        }
        self.rearm_tx(out);
        out.push(Output::Send(self.packet(self.poll.is_some(), false)));
    }
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
