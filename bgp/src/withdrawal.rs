//! Awaitable withdraws: when has every router been told?
//!
//! [`Speaker::withdraw`](crate::Speaker::withdraw) returns a [`Withdrawal`], a future that
//! resolves once, for every peer that was Established at the call, the UPDATE carrying the
//! withdrawal has been written to that peer's socket (`write_all` returned), or that session
//! ended (the router then drops our routes itself), or the peer never held the prefix. The
//! daemon withdraws, awaits, waits a grace period, and only then removes the VIP address.
//!
//! The bookkeeping is [`Waiters`], kept inside each peer's Adj-RIB-Out:
//!
//! ```text
//!  withdraw queue (FIFO, ticket per queued prefix)   UPDATE numbers (per RIB, monotonic)
//!   front ─ t7 t8 t9 ─ back                           produced ── written (writer's mark)
//!
//!  a call that queued up to ticket T waits until the queue front is past T (everything it
//!  queued has gone into UPDATEs, or was cancelled by a re-announce): its target is the number
//!  of the last UPDATE produced then; it resolves when written >= target.
//! ```
//! A call that queued nothing for a peer still waits for UPDATEs produced before it and not
//! yet written (a withdrawal of the same prefix by an earlier call may be among them).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// What became of a withdraw at one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawOutcome {
    /// The UPDATE carrying the withdrawal was written to the peer's socket.
    Written,
    /// The session ended first (or the peer was removed): the router drops our routes itself.
    SessionDown,
    /// The peer did not hold the prefix (never sent, or already withdrawn).
    NotHeld,
    /// The peer was not Established at the call: there was nothing to tell it.
    NotEstablished,
}

impl std::fmt::Display for WithdrawOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WithdrawOutcome::Written => "written",
            WithdrawOutcome::SessionDown => "session down",
            WithdrawOutcome::NotHeld => "not held",
            WithdrawOutcome::NotEstablished => "not established",
        })
    }
}

/// Per peer, what became of one withdraw call, sorted by peer name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WithdrawReport {
    /// `(peer name, outcome)`.
    pub peers: Vec<(String, WithdrawOutcome)>,
}

impl WithdrawReport {
    /// The outcome at one peer.
    pub fn outcome(&self, peer: &str) -> Option<WithdrawOutcome> {
        self.peers.iter().find(|(n, _)| n == peer).map(|(_, o)| *o)
    }
}

/// One peer's part of a [`Withdrawal`]: known at once, or to be told by the RIB.
#[derive(Debug)]
pub(crate) enum PeerWait {
    Done(WithdrawOutcome),
    Pending(oneshot::Receiver<WithdrawOutcome>),
}

/// The future a withdraw returns; resolves to a [`WithdrawReport`]. Dropping it is fine: the
/// withdraw goes out regardless.
#[derive(Debug)]
pub struct Withdrawal {
    peers: Vec<(String, PeerWait)>,
}

impl Withdrawal {
    pub(crate) fn new(mut peers: Vec<(String, PeerWait)>) -> Self {
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        Self { peers }
    }
}

impl Future for Withdrawal {
    type Output = WithdrawReport;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WithdrawReport> {
        let mut pending = false;
        for (_, w) in &mut self.peers {
            if let PeerWait::Pending(rx) = w {
                match Pin::new(rx).poll(cx) {
                    // A dropped sender: the RIB went away (peer removed, speaker shut down).
                    Poll::Ready(r) => {
                        *w = PeerWait::Done(r.unwrap_or(WithdrawOutcome::SessionDown))
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        let peers = self
            .peers
            .iter()
            .map(|(n, w)| {
                let o = match w {
                    PeerWait::Done(o) => *o,
                    PeerWait::Pending(_) => WithdrawOutcome::SessionDown,
                };
                (n.clone(), o)
            })
            .collect();
        Poll::Ready(WithdrawReport { peers })
    }
}

#[derive(Debug)]
struct Waiter {
    /// The last withdraw ticket issued when the call was made.
    ticket: u64,
    /// The UPDATE number to wait for, once everything up to `ticket` has been produced.
    target: Option<u64>,
    /// What to report once written.
    outcome: WithdrawOutcome,
    tx: oneshot::Sender<WithdrawOutcome>,
}

/// The withdraw calls one Adj-RIB-Out still owes an answer, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    q: VecDeque<Waiter>,
}

impl Waiters {
    /// Registers a call that queued withdrawals up to `ticket` (`held`: any of its prefixes
    /// was held by the peer). `front` is the oldest ticket still queued, `produced` and
    /// `written` the RIB's UPDATE counters.
    pub(crate) fn add(
        &mut self,
        ticket: u64,
        held: bool,
        front: Option<u64>,
        produced: u64,
        written: u64,
    ) -> PeerWait {
        let outcome = if held {
            WithdrawOutcome::Written
        } else {
            WithdrawOutcome::NotHeld
        };
        let target = front.is_none_or(|f| f > ticket).then_some(produced);
        if target.is_some_and(|t| t <= written) {
            return PeerWait::Done(outcome);
        }
        let (tx, rx) = oneshot::channel();
        self.q.push_back(Waiter {
            ticket,
            target,
            outcome,
            tx,
        });
        PeerWait::Pending(rx)
    }

    /// Sets the target of every call whose withdrawals have all been produced (the queue's
    /// `front` ticket is past theirs) and answers those whose target has been `written`.
    pub(crate) fn settle(&mut self, front: Option<u64>, produced: u64, written: u64) {
        for w in self.q.iter_mut() {
            if w.target.is_some() {
                continue;
            }
            if front.is_some_and(|f| f <= w.ticket) {
                break; // tickets grow along the queue: the rest are still queued too
            }
            w.target = Some(produced);
        }
        while self
            .q
            .front()
            .is_some_and(|w| w.target.is_some_and(|t| t <= written))
        {
            if let Some(w) = self.q.pop_front() {
                let _ = w.tx.send(w.outcome);
            }
        }
    }

    /// The session ended: every call still waiting gets [`WithdrawOutcome::SessionDown`].
    pub(crate) fn session_down(&mut self) {
        for w in self.q.drain(..) {
            let _ = w.tx.send(WithdrawOutcome::SessionDown);
        }
    }

    /// Calls still waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn done(w: &mut PeerWait) -> Option<WithdrawOutcome> {
        match w {
            PeerWait::Done(o) => Some(*o),
            PeerWait::Pending(rx) => rx.try_recv().ok(),
        }
    }

    #[test]
    fn nothing_queued_and_nothing_in_flight_resolves_at_once() {
        let mut ws = Waiters::default();
        let mut w = ws.add(0, false, None, 5, 5);
        assert_eq!(done(&mut w), Some(WithdrawOutcome::NotHeld));
        assert_eq!(ws.len(), 0);
    }

    #[test]
    fn nothing_queued_waits_for_what_is_in_flight() {
        let mut ws = Waiters::default();
        // UPDATEs 4 and 5 produced, 3 written: an earlier withdrawal may be in 4 or 5.
        let mut w = ws.add(0, false, None, 5, 3);
        assert_eq!(done(&mut w), None);
        ws.settle(None, 5, 4);
        assert_eq!(done(&mut w), None);
        ws.settle(None, 5, 5);
        assert_eq!(done(&mut w), Some(WithdrawOutcome::NotHeld));
    }

    #[test]
    fn waits_until_its_tickets_are_produced_then_written() {
        let mut ws = Waiters::default();
        // Tickets 3..=7 queued; this call's are up to 7.
        let mut w = ws.add(7, true, Some(3), 10, 10);
        ws.settle(Some(6), 11, 10); // 3..=5 went into UPDATE 11
        ws.settle(Some(6), 11, 11);
        assert_eq!(done(&mut w), None, "ticket 6 and 7 not produced yet");
        ws.settle(None, 12, 11); // the rest into UPDATE 12
        assert_eq!(done(&mut w), None, "UPDATE 12 not written yet");
        ws.settle(None, 13, 12);
        assert_eq!(done(&mut w), Some(WithdrawOutcome::Written));
    }

    #[test]
    fn calls_resolve_in_order_and_session_down_answers_the_rest() {
        let mut ws = Waiters::default();
        let mut a = ws.add(2, true, Some(1), 0, 0);
        let mut b = ws.add(4, true, Some(1), 0, 0);
        ws.settle(Some(3), 1, 1);
        assert_eq!(done(&mut a), Some(WithdrawOutcome::Written));
        assert_eq!(done(&mut b), None);
        ws.session_down();
        assert_eq!(done(&mut b), Some(WithdrawOutcome::SessionDown));
        assert_eq!(ws.len(), 0);
    }

    #[tokio::test]
    async fn the_future_reports_every_peer_sorted_and_a_dropped_rib_as_session_down() {
        let (tx, rx) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel::<WithdrawOutcome>();
        let w = Withdrawal::new(vec![
            ("r2".into(), PeerWait::Pending(rx)),
            ("r1".into(), PeerWait::Done(WithdrawOutcome::NotEstablished)),
            ("r3".into(), PeerWait::Pending(rx2)),
        ]);
        tx.send(WithdrawOutcome::Written).unwrap();
        drop(tx2);
        let r = w.await;
        assert_eq!(
            r.peers,
            vec![
                ("r1".into(), WithdrawOutcome::NotEstablished),
                ("r2".into(), WithdrawOutcome::Written),
                ("r3".into(), WithdrawOutcome::SessionDown),
            ]
        );
        assert_eq!(r.outcome("r2"), Some(WithdrawOutcome::Written));
    }
}
