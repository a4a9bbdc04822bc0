//! Transport counters: messages in and out by type, drops by reason, connection events.
//!
//! Plain relaxed atomics: each value is read on its own by `/metrics`, `/status` and tests, and
//! no reader needs two of them to agree at one instant.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::envelope::DropReason;
use super::messages::MessageType;

const TYPES: usize = MessageType::ALL.len();
const REASONS: usize = DropReason::ALL.len();

/// Live counters of one [`Transport`](super::amqp::Transport).
#[derive(Debug, Default)]
pub struct Counters {
    received: [AtomicU64; TYPES],
    sent: [AtomicU64; TYPES],
    dropped: [AtomicU64; REASONS],
    reconnects: AtomicU64,
    confirms_failed: AtomicU64,
    unroutable: AtomicU64,
    too_large_to_send: AtomicU64,
    state_errors: AtomicU64,
}

impl Counters {
    /// Messages admitted and handed to the daemon, of type `t`.
    pub fn received(&self, t: MessageType) -> u64 {
        self.received[t.index()].load(Ordering::Relaxed)
    }

    /// Messages of type `t` the broker confirmed.
    pub fn sent(&self, t: MessageType) -> u64 {
        self.sent[t.index()].load(Ordering::Relaxed)
    }

    /// Messages dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    /// Messages dropped for any reason.
    #[cfg(test)]
    pub fn dropped_total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.dropped(*r)).sum()
    }

    /// Times the connection came back after a loss.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Publishes the broker nacked, or whose confirm never came.
    pub fn confirms_failed(&self) -> u64 {
        self.confirms_failed.load(Ordering::Relaxed)
    }

    /// Publishes the broker returned because no queue was bound to the routing key.
    pub fn unroutable(&self) -> u64 {
        self.unroutable.load(Ordering::Relaxed)
    }

    /// Sends refused before they left because the sealed message exceeded `max_bytes`.
    pub fn too_large_to_send(&self) -> u64 {
        self.too_large_to_send.load(Ordering::Relaxed)
    }

    /// Failures to write the state directory (replay marks): the message was still acted on.
    pub fn state_errors(&self) -> u64 {
        self.state_errors.load(Ordering::Relaxed)
    }

    pub(super) fn add_too_large_to_send(&self) {
        self.too_large_to_send.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn add_state_error(&self) {
        self.state_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_received(&self, t: MessageType) {
        self.received[t.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_sent(&self, t: MessageType) {
        self.sent[t.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_dropped(&self, reason: DropReason) {
        self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_confirm_failed(&self) {
        self.confirms_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_unroutable(&self) {
        self.unroutable.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy for `/status` (JSON) and `/metrics`.
    pub fn snapshot(&self) -> CountersSnapshot {
        let by_type = |f: &dyn Fn(MessageType) -> u64| {
            MessageType::ALL
                .iter()
                .map(|t| (t.as_str(), f(*t)))
                .collect()
        };
        CountersSnapshot {
            received: by_type(&|t| self.received(t)),
            sent: by_type(&|t| self.sent(t)),
            dropped: DropReason::ALL
                .iter()
                .map(|r| (r.as_str(), self.dropped(*r)))
                .collect(),
            reconnects: self.reconnects(),
            confirms_failed: self.confirms_failed(),
            unroutable: self.unroutable(),
            too_large_to_send: self.too_large_to_send(),
            state_errors: self.state_errors(),
        }
    }
}

/// Point-in-time copy of [`Counters`], keyed by the stable names of types and reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    /// Admitted messages by type.
    pub received: Vec<(&'static str, u64)>,
    /// Confirmed sends by type.
    pub sent: Vec<(&'static str, u64)>,
    /// Drops by reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// Reconnections.
    pub reconnects: u64,
    /// Failed confirms.
    pub confirms_failed: u64,
    /// Returned (unroutable) publishes.
    pub unroutable: u64,
    /// Sends refused for their size.
    pub too_large_to_send: u64,
    /// State directory write failures.
    pub state_errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_kept_apart_by_type_and_reason() {
        let c = Counters::default();
        c.add_received(MessageType::FinAnnounce);
        c.add_received(MessageType::FinAnnounce);
        c.add_sent(MessageType::Heartbeat);
        c.add_dropped(DropReason::Forged);
        c.add_dropped(DropReason::Duplicate);
        c.add_dropped(DropReason::Duplicate);
        assert_eq!(c.received(MessageType::FinAnnounce), 2);
        assert_eq!(c.received(MessageType::SynAnnounce), 0);
        assert_eq!(c.sent(MessageType::Heartbeat), 1);
        assert_eq!(c.dropped(DropReason::Duplicate), 2);
        assert_eq!(c.dropped(DropReason::Replayed), 0);
        assert_eq!(c.dropped_total(), 3);
        let s = c.snapshot();
        assert!(s.dropped.contains(&("forged", 1)));
        assert!(s.received.contains(&("fin_announce", 2)));
    }
}
