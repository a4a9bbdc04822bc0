//! When a consumer acks. Not after every delivery: an ack is a round trip through lapin's I/O
//! thread (the consumer task hands it over, waits for the frame to be written, is woken
//! again), and an arbiter taking 1,000 heartbeats a second spread over the second got one
//! such round trip per heartbeat. Deliveries are acked together (`multiple`), once half the
//! prefetch window is unacked or `ack_delay` ([`ACK_DELAY`] unless a test sets another)
//! after the first of them, whichever comes first, and when the consumer stops.
//!
//! Nothing waits on an ack: every delivery is verified, recorded and handed to the daemon
//! before it counts as unacked here. What a later ack costs is only at a lost connection: the
//! broker delivers the unacked ones again to the next connection, and the replay window
//! drops them as duplicates (counted as `duplicate`), as it already did for a batch whose
//! ack was in flight.
//!
//! The policy is pure ([`Pending`], generic over the acker); `session` does the acking.

use std::time::{Duration, Instant};

/// Longest time a delivery handed over stays unacked (the default `ack_delay`).
pub const ACK_DELAY: Duration = Duration::from_millis(50);

/// Deliveries handed over and not acked yet: the newest one's acker (which acks all of them
/// with `multiple`) with the time the oldest was handed over, and how many.
#[derive(Debug)]
pub(super) struct Pending<A> {
    unacked: Option<(A, Instant)>,
    count: usize,
    every: usize,
    delay: Duration,
}

impl<A> Pending<A> {
    /// Acks at most every half `prefetch` deliveries (at once with a prefetch of 1 or 2: the
    /// broker would stop sending before a later ack).
    pub(super) fn new(prefetch: u16, delay: Duration) -> Pending<A> {
        Pending {
            unacked: None,
            count: 0,
            every: (usize::from(prefetch) / 2).max(1),
            delay,
        }
    }

    /// Records `n` more deliveries handed over, the newest acked by `last`. Returns the acker
    /// to ack with now when half the window is unacked.
    pub(super) fn handed_over(&mut self, n: usize, last: A, now: Instant) -> Option<A> {
        let since = self.unacked.take().map_or(now, |(_, since)| since);
        self.unacked = Some((last, since));
        self.count += n;
        if self.count >= self.every {
            self.take()
        } else {
            None
        }
    }

    /// When the unacked deliveries are due, if there are any.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.unacked.as_ref().map(|(_, since)| *since + self.delay)
    }

    /// The acker of everything unacked, which counts as acked from now on.
    pub(super) fn take(&mut self) -> Option<A> {
        self.count = 0;
        self.unacked.take().map(|(acker, _)| acker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_window_is_acked_at_once_with_the_newest_acker() {
        let t0 = Instant::now();
        let mut p = Pending::new(16, ACK_DELAY);
        for tag in 1..8 {
            assert_eq!(p.handed_over(1, tag, t0), None, "tag {tag}");
        }
        assert_eq!(p.handed_over(1, 8, t0), Some(8));
        assert_eq!(p.deadline(), None, "nothing is left unacked");
        assert_eq!(p.handed_over(3, 11, t0), None);
        assert_eq!(
            p.handed_over(6, 17, t0),
            Some(17),
            "a batch counts each delivery"
        );
    }

    #[test]
    fn the_oldest_unacked_delivery_sets_the_deadline() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(30);
        let mut p = Pending::new(16, ACK_DELAY);
        assert_eq!(p.deadline(), None);
        p.handed_over(1, 1, t0);
        p.handed_over(1, 2, later);
        assert_eq!(p.deadline(), Some(t0 + ACK_DELAY));
        assert_eq!(p.take(), Some(2));
        assert_eq!(p.deadline(), None);
        assert_eq!(p.take(), None);
        p.handed_over(1, 3, later);
        assert_eq!(
            p.deadline(),
            Some(later + ACK_DELAY),
            "a new round starts after a take"
        );
    }

    #[test]
    fn a_small_window_is_acked_at_every_delivery() {
        let t0 = Instant::now();
        for prefetch in [0, 1, 2, 3] {
            let mut p = Pending::new(prefetch, ACK_DELAY);
            assert_eq!(p.handed_over(1, 1, t0), Some(1), "prefetch {prefetch}");
        }
        let mut p = Pending::new(4, ACK_DELAY);
        assert_eq!(p.handed_over(1, 1, t0), None);
        assert_eq!(p.handed_over(1, 2, t0), Some(2));
    }
}
