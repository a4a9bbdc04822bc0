//! When the balancer hands IPVS and its announces to its own keepalived, and when it takes them
//! back: a pure decision on the arbiter's heartbeats and the broker's state, tested on a fake
//! clock.
//!
//! ```text
//!            silent ≥ after (configs present)              answering ≥ recover
//!  Normal ───────────────────────────────────▶ Fallback ──heard──▶ Recovering ─────────────▶ HandingBack
//!    ▲                                           ▲  ▲                  │ silent > gap,          │ taken back
//!    │                                           │  └──────────────────┘ broker lost            │ (tree re-read,
//!    │                                           └── no tree / kernel in HANDBACK_TIMEOUT ──────┤  IPVS equal)
//!    └──────────────────────────────────── StopKeepalived ◀─────────────────────────────────────┘
//! ```
//!
//! - Silence is counted from the last arbiter heartbeat (or the start): no heartbeat and an
//!   unreachable broker look the same, and either is silence.
//! - `after = None` (`fallback_after = 0`) never leaves `Normal`: the fail-static behaviour.
//! - Without keepalived configs for this balancer, `Normal` stays: it says so once per
//!   silence instead of failing over to nothing.
//! - Recovery needs the arbiter answering without a gap (no two heartbeats further apart
//!   than `gap`, the broker up) for `recover`; any gap starts the count again.
//! - Handing back is the client's work (re-read the tree and announces, apply the
//!   difference to IPVS); only once it reports done is keepalived stopped.

use std::time::{Duration, Instant};

/// A hand-back whose tree or kernel work has not finished after this long goes back to
/// fallback (keepalived still runs, nothing was lost) and starts over.
pub const HANDBACK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the decision needs from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackSettings {
    /// `fallback_after`; `None`: never.
    pub after: Option<Duration>,
    /// `fallback_recover`.
    pub recover: Duration,
    /// Heartbeats further apart than this are a gap (three heartbeat intervals).
    pub gap: Duration,
}

/// Where the balancer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The arbiter decides; the client mirrors its tree.
    Normal,
    /// keepalived owns IPVS; announces follow its quorum calls.
    Fallback,
    /// As `Fallback`, and the arbiter has answered since `back_since`.
    Recovering {
        /// First heartbeat of the current run without a gap.
        back_since: Instant,
    },
    /// The client is re-reading the tree and taking IPVS back; keepalived still runs.
    HandingBack {
        /// When the hand-back started.
        since: Instant,
    },
}

impl Phase {
    /// Its name in `status`.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Normal => "normal",
            Phase::Fallback => "fallback",
            Phase::Recovering { .. } => "recovering",
            Phase::HandingBack { .. } => "handing_back",
        }
    }
}

/// What the daemon does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// Stop mirroring, start keepalived, take its quorum calls.
    Enter {
        /// How long the arbiter had been silent.
        silent: Duration,
    },
    /// Re-read the arbiter's tree and announces and take IPVS back; report with
    /// [`Fallback::taken_back`].
    HandBack,
    /// A hand-back did not finish in [`HANDBACK_TIMEOUT`]: keepalived keeps IPVS.
    HandBackTimedOut,
    /// Stop keepalived, leaving IPVS as it is; the fallback is over.
    Leave {
        /// How long the fallback lasted.
        lasted: Duration,
    },
    /// The arbiter went silent again while recovering: the count starts over.
    RecoverReset,
    /// The arbiter is silent past `fallback_after`, but there is no keepalived config for this
    /// balancer: it stays fail-static.
    Unavailable {
        /// How long the arbiter has been silent.
        silent: Duration,
    },
}

/// The fallback decision; one task owns it.
#[derive(Debug)]
pub struct Fallback {
    s: FallbackSettings,
    phase: Phase,
    last_heard: Instant,
    connected: bool,
    configs: bool,
    entered: Option<Instant>,
    /// `Unavailable` was said for the current silence.
    said_unavailable: bool,
}

impl Fallback {
    /// A balancer started at `now`; `configs`: whether keepalived configs for it exist.
    pub fn new(s: FallbackSettings, now: Instant, configs: bool) -> Fallback {
        Fallback {
            s,
            phase: Phase::Normal,
            last_heard: now,
            connected: true,
            configs,
            entered: None,
            said_unavailable: false,
        }
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// keepalived owns IPVS and the announces (every phase but `Normal`).
    pub fn active(&self) -> bool {
        self.phase != Phase::Normal
    }

    /// Since when the fallback has lasted.
    pub fn entered(&self) -> Option<Instant> {
        self.entered
    }

    /// Whether keepalived configs for this balancer exist.
    pub fn configs(&self) -> bool {
        self.configs
    }

    /// The configs appeared or went (a `sync`, a reload). Checked when fallback would start.
    pub fn set_configs(&mut self, present: bool) {
        self.configs = present;
    }

    /// New settings (a reload).
    pub fn reconfigure(&mut self, s: FallbackSettings) {
        self.s = s;
    }

    /// The next time [`Fallback::tick`] may have something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Normal => self.s.after.map(|a| self.last_heard + a),
            Phase::Fallback => None,
            Phase::Recovering { back_since } => {
                Some((back_since + self.s.recover).min(self.last_heard + self.s.gap))
            }
            Phase::HandingBack { since } => Some(since + HANDBACK_TIMEOUT),
        }
    }

    /// A heartbeat of the arbiter arrived.
    pub fn heard(&mut self, now: Instant) -> Vec<Act> {
        let mut out = Vec::new();
        let gap = now.saturating_duration_since(self.last_heard) > self.s.gap;
        self.last_heard = now;
        self.said_unavailable = false;
        match self.phase {
            Phase::Fallback => self.phase = Phase::Recovering { back_since: now },
            Phase::Recovering { .. } if gap => {
                out.push(Act::RecoverReset);
                self.phase = Phase::Recovering { back_since: now };
            }
            _ => {}
        }
        out.extend(self.tick(now));
        out
    }

    /// The broker connection went up or down.
    pub fn connected(&mut self, _now: Instant, up: bool) -> Vec<Act> {
        let mut out = Vec::new();
        if !up && matches!(self.phase, Phase::Recovering { .. }) {
            out.push(Act::RecoverReset);
            self.phase = Phase::Fallback;
        }
        self.connected = up;
        out
    }

    /// The client re-read the tree and IPVS equals it: keepalived may go.
    pub fn taken_back(&mut self, now: Instant) -> Vec<Act> {
        if !matches!(self.phase, Phase::HandingBack { .. }) {
            return Vec::new();
        }
        self.phase = Phase::Normal;
        let lasted = self
            .entered
            .take()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        vec![Act::Leave { lasted }]
    }

    /// Time passed.
    pub fn tick(&mut self, now: Instant) -> Vec<Act> {
        let silent = now.saturating_duration_since(self.last_heard);
        match self.phase {
            Phase::Normal => {
                let Some(after) = self.s.after else {
                    return Vec::new();
                };
                if silent < after {
                    return Vec::new();
                }
                if !self.configs {
                    if self.said_unavailable {
                        return Vec::new();
                    }
                    self.said_unavailable = true;
                    return vec![Act::Unavailable { silent }];
                }
                self.phase = Phase::Fallback;
                self.entered = Some(now);
                vec![Act::Enter { silent }]
            }
            Phase::Fallback => Vec::new(),
            Phase::Recovering { back_since } => {
                if silent > self.s.gap || !self.connected {
                    self.phase = Phase::Fallback;
                    vec![Act::RecoverReset]
                } else if now.saturating_duration_since(back_since) >= self.s.recover {
                    self.phase = Phase::HandingBack { since: now };
                    vec![Act::HandBack]
                } else {
                    Vec::new()
                }
            }
            Phase::HandingBack { since } => {
                if now.saturating_duration_since(since) >= HANDBACK_TIMEOUT {
                    self.phase = Phase::Fallback;
                    vec![Act::HandBackTimedOut]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "fallback_tests.rs"]
mod tests;
