//! The outbound queue: the daemon's loop never waits on the broker.
//!
//! Two lanes, both bounded: `urgent` for what moves traffic (`fin_announce`, `ack_announce`,
//! `syn_announce`, and `mapping`, which decides which VIPs a balancer may take, so it must not
//! fall behind a `syn_announce`) and `normal` for the rest (trees, heartbeats). One sender task
//! drains them in order, urgent first, awaiting each publisher confirm, so messages of a lane
//! keep their order (a `changes` never overtakes the `tree` it follows). A full lane drops the
//! message and counts it (`ipvs_sync_outbox_dropped_total`): the periodic requests and
//! heartbeats repair any gap, and memory stays bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::metrics::Metrics;
use crate::wire::{Dest, Message, MessageType, Transport};

type Item = (Dest, Message);

/// Handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    urgent: mpsc::Sender<Item>,
    normal: mpsc::Sender<Item>,
    depth: Arc<AtomicUsize>,
    metrics: Metrics,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

/// Whether a message type rides the urgent lane.
pub fn is_urgent(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::FinAnnounce
            | MessageType::AckAnnounce
            | MessageType::SynAnnounce
            | MessageType::Mapping
    )
}

impl Outbox {
    /// Starts the sender task on `transport`; each lane holds at most `limit` messages.
    pub fn spawn(transport: Arc<Transport>, limit: usize, metrics: Metrics) -> Outbox {
        let (urgent, mut urgent_rx) = mpsc::channel::<Item>(limit.max(1));
        let (normal, mut normal_rx) = mpsc::channel::<Item>(limit.max(1));
        let depth = Arc::new(AtomicUsize::new(0));
        let d = depth.clone();
        let task = tokio::spawn(async move {
            loop {
                let (to, msg) = tokio::select! {
                    biased;
                    Some(i) = urgent_rx.recv() => i,
                    Some(i) = normal_rx.recv() => i,
                    else => break,
                };
                d.fetch_sub(1, Ordering::Relaxed);
                if let Err(e) = transport.send(to.clone(), &msg).await {
                    warn!(to = to.address(), kind = %msg.kind(), error = %e, "send failed");
                }
            }
        });
        Outbox {
            urgent,
            normal,
            depth,
            metrics,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        }
    }

    /// Queues a message; never waits.
    pub fn send(&self, to: Dest, msg: Message) {
        let kind = msg.kind();
        let lane = if is_urgent(kind) {
            &self.urgent
        } else {
            &self.normal
        };
        // Count before queuing so the sender never sees the depth below zero.
        self.depth.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = lane.try_send((to, msg)) {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            let (to, _) = e.into_inner();
            warn!(to = to.address(), %kind, "outbound queue full: message dropped");
            self.metrics
                .inc("ipvs_sync_outbox_dropped_total", &[("type", kind.as_str())]);
        } else {
            debug!(%kind, "queued");
        }
    }

    /// Messages waiting.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Lets the queue drain for up to 500 ms, then stops the sender.
    pub async fn close(self) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while self.depth() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            t.abort();
        }
    }
}
