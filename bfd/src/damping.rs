//! Flap dampening between the session state and what the owner (the BGP speaker) is told:
//! Downs at once, Ups after a hold-down that doubles with each flap (see the crate docs for
//! the reasons and the figures).

use std::time::{Duration, Instant};

/// Dampening parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damping {
    /// Hold-down after the first flap; zero turns dampening off.
    pub initial_hold: Duration,
    /// Ceiling of the doubling hold-down.
    pub max_hold: Duration,
    /// A Down older than this is forgotten: the next Up is reported at once.
    pub decay: Duration,
}

impl Default for Damping {
    fn default() -> Self {
        Damping {
            initial_hold: Duration::from_secs(1),
            max_hold: Duration::from_secs(60),
            decay: Duration::from_secs(120),
        }
    }
}

impl Damping {
    /// No dampening: every Up is reported at once.
    pub const OFF: Damping = Damping {
        initial_hold: Duration::ZERO,
        max_hold: Duration::ZERO,
        decay: Duration::ZERO,
    };
}

/// The dampening bookkeeping of one session.
#[derive(Debug, Clone)]
pub(crate) struct Dampener {
    cfg: Damping,
    /// Downs since the flap memory was last cleared.
    flaps: u32,
    last_down: Option<Instant>,
}

impl Dampener {
    pub(crate) fn new(cfg: Damping) -> Self {
        Dampener {
            cfg,
            flaps: 0,
            last_down: None,
        }
    }

    /// The session went Down (reported or not).
    pub(crate) fn down(&mut self, now: Instant) {
        self.forget_if_old(now);
        self.flaps = self.flaps.saturating_add(1);
        self.last_down = Some(now);
    }

    /// The session came Up: how long it must stay Up before the owner is told
    /// (zero: tell now).
    pub(crate) fn hold_for_up(&mut self, now: Instant) -> Duration {
        self.forget_if_old(now);
        if self.flaps == 0 || self.cfg.initial_hold.is_zero() {
            return Duration::ZERO;
        }
        let shift = (self.flaps - 1).min(20);
        self.cfg
            .initial_hold
            .saturating_mul(1 << shift)
            .min(self.cfg.max_hold.max(self.cfg.initial_hold))
    }

    /// Downs remembered now.
    pub(crate) fn flaps(&self) -> u32 {
        self.flaps
    }

    fn forget_if_old(&mut self, now: Instant) {
        if let Some(t) = self.last_down {
            if now.saturating_duration_since(t) >= self.cfg.decay {
                self.flaps = 0;
                self.last_down = None;
            }
        }
    }
}
