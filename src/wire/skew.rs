//! Each sender's clock offset, measured on the receiver's timeline. Nothing is accepted or
//! dropped on it: how long a message may wait is the broker's business (the queues' message
//! TTL), so two hosts whose clocks disagree by minutes still announce and withdraw. The offset
//! is reported (`/status`, a metric, `monitor`) so that an operator fixes the clock.
//!
//! For a message sent at the sender's time `ts` and taken at the receiver's time `arrival`:
//!
//! ```text
//!   ts − arrival = offset − delay        (offset = sender's clock − receiver's clock,
//!                                         delay  = time on the way, ≥ 0)
//! ```
//!
//! so the largest `ts − arrival` over recent messages is the offset minus the shortest recent
//! delay, which tends to the offset as that delay tends to 0 (a heartbeat every few seconds
//! through an idle broker takes about a millisecond). "Recent" is the current and the previous
//! period of [`PERIOD_MS`], so a clock that is fixed shows the new offset within two periods.
//! Pure: the caller passes both times.

use std::collections::HashMap;

/// Length of one measurement period, in the receiver's milliseconds.
pub const PERIOD_MS: u64 = 60_000;

/// An offset (either way) above this is reported as a warning.
pub const WARN_MS: i64 = 1_000;

/// One sender's estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimator {
    /// Start of the current period (receiver's clock, ms).
    period_start: u64,
    /// Largest `ts − arrival` of the current and the previous period.
    current: Option<i64>,
    previous: Option<i64>,
    /// When the last message was measured (receiver's clock, ms).
    last_seen: u64,
}

impl Estimator {
    fn new(now: u64) -> Estimator {
        Estimator {
            period_start: now,
            current: None,
            previous: None,
            last_seen: now,
        }
    }

    /// Takes one message sent at `ts_ms` (sender's clock) and received at `arrival_ms`.
    pub fn observe(&mut self, ts_ms: u64, arrival_ms: u64) {
        let since = arrival_ms.saturating_sub(self.period_start);
        if since >= 2 * PERIOD_MS {
            self.previous = None;
            self.current = None;
            self.period_start = arrival_ms;
        } else if since >= PERIOD_MS {
            self.previous = self.current.take();
            self.period_start = self.period_start.saturating_add(PERIOD_MS);
        }
        let sample = diff(ts_ms, arrival_ms);
        self.current = Some(self.current.map_or(sample, |c| c.max(sample)));
        self.last_seen = arrival_ms;
    }

    /// The estimated offset, ms (positive: the sender's clock is ahead).
    pub fn offset_ms(&self) -> Option<i64> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// `a − b` as a signed number of ms, saturating.
fn diff(a: u64, b: u64) -> i64 {
    if a >= b {
        i64::try_from(a - b).unwrap_or(i64::MAX)
    } else {
        i64::try_from(b - a).map_or(i64::MIN, |d| -d)
    }
}

/// Estimates of every sender heard.
#[derive(Debug, Clone, Default)]
pub struct ClockOffsets {
    by_sender: HashMap<String, Estimator>,
}

/// One sender's offset, for `/status` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerClock {
    /// The sender.
    pub peer: String,
    /// Its clock minus ours, ms.
    pub offset_ms: i64,
    /// Whether `|offset| > WARN_MS`.
    pub warn: bool,
    /// Our clock when we last heard from it, ms since the epoch.
    pub last_seen_ms: u64,
}

impl ClockOffsets {
    /// Takes one message of `from`.
    pub fn observe(&mut self, from: &str, ts_ms: u64, arrival_ms: u64) {
        match self.by_sender.get_mut(from) {
            Some(e) => e.observe(ts_ms, arrival_ms),
            None => {
                let mut e = Estimator::new(arrival_ms);
                e.observe(ts_ms, arrival_ms);
                self.by_sender.insert(from.to_owned(), e);
            }
        }
    }

    /// The estimate of `from`, ms.
    pub fn offset_ms(&self, from: &str) -> Option<i64> {
        self.by_sender.get(from).and_then(Estimator::offset_ms)
    }

    /// Every sender's estimate, sorted by name.
    pub fn peers(&self) -> Vec<PeerClock> {
        let mut v: Vec<PeerClock> = self
            .by_sender
            .iter()
            .filter_map(|(peer, e)| {
                e.offset_ms().map(|offset_ms| PeerClock {
                    peer: peer.clone(),
                    offset_ms,
                    warn: offset_ms.abs() > WARN_MS,
                    last_seen_ms: e.last_seen,
                })
            })
            .collect();
        v.sort_by(|a, b| a.peer.cmp(&b.peer));
        v
    }

    /// Forgets senders not heard for `older_than_ms` (a balancer gone for good).
    pub fn forget_older_than(&mut self, now_ms: u64, older_than_ms: u64) {
        self.by_sender
            .retain(|_, e| now_ms.saturating_sub(e.last_seen) <= older_than_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_763_924_527_000;

    #[test]
    fn the_estimate_is_the_offset_less_the_shortest_delay() {
        let mut c = ClockOffsets::default();
        // Sender 600 s ahead; delays 40, 3, 250 ms.
        for (i, delay) in [40u64, 3, 250].into_iter().enumerate() {
            let arrival = T0 + i as u64 * 1000;
            c.observe("arbiter", arrival + 600_000 - delay, arrival);
        }
        assert_eq!(c.offset_ms("arbiter"), Some(600_000 - 3));
        // Sender 600 s behind.
        for (i, delay) in [7u64, 2, 9].into_iter().enumerate() {
            let arrival = T0 + i as u64 * 1000;
            c.observe("lb1", arrival - 600_000 - delay, arrival);
        }
        assert_eq!(c.offset_ms("lb1"), Some(-600_002));
        let peers = c.peers();
        assert_eq!(peers.len(), 2);
        assert!(peers.iter().all(|p| p.warn));
    }

    #[test]
    fn small_offsets_do_not_warn_and_a_fixed_clock_shows_within_two_periods() {
        let mut c = ClockOffsets::default();
        c.observe("lb1", T0 + 5_000, T0); // 5 s ahead
        assert!(c.peers()[0].warn);
        // The clock is fixed: 1 ms delays from now on.
        let mut t = T0;
        while t < T0 + 2 * PERIOD_MS + 1_000 {
            t += 3_000;
            c.observe("lb1", t - 1, t);
        }
        assert_eq!(c.offset_ms("lb1"), Some(-1));
        assert!(!c.peers()[0].warn);
    }

    #[test]
    fn a_long_silence_starts_afresh_and_old_peers_are_forgotten() {
        let mut c = ClockOffsets::default();
        c.observe("lb1", T0 + 9_000, T0);
        c.observe("lb1", T0 + 10 * PERIOD_MS - 5, T0 + 10 * PERIOD_MS);
        assert_eq!(c.offset_ms("lb1"), Some(-5));
        c.observe("lb2", T0, T0);
        c.forget_older_than(T0 + 10 * PERIOD_MS, PERIOD_MS);
        assert_eq!(c.offset_ms("lb2"), None);
        assert_eq!(c.offset_ms("lb1"), Some(-5));
    }

    #[test]
    fn extreme_times_saturate() {
        assert_eq!(diff(u64::MAX, 0), i64::MAX);
        assert_eq!(diff(0, u64::MAX), i64::MIN);
        let mut e = Estimator::new(0);
        e.observe(0, u64::MAX);
        e.observe(u64::MAX, 0);
        assert!(e.offset_ms().is_some());
    }
}
