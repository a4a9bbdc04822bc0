//! The outbound queue: the daemon's loop never waits on the broker.
//!
//! Two lanes, both bounded: `urgent` for what moves traffic (`fin_announce`, `ack_announce`,
//! `syn_announce`, and `mapping`, which decides which VIPs a balancer may take, so it must not
//! fall behind a `syn_announce`) and `normal` for the rest (trees, heartbeats). Each lane has a
//! sender task of its own that drains it in order and publishes without waiting for the
//! broker's confirm, so messages of a lane reach the broker in order (a `changes` never
//! overtakes the `tree` it follows), a message never waits behind the confirm of the one
//! before (the broker confirms persistent messages after its batched fsync, tens to hundreds
//! of milliseconds), and a `fin_announce` never waits while a tree of thousands of services is
//! serialised and signed (seconds on a slow machine).
//! A second task awaits the confirms in order, with at most [`WINDOW`] in flight, and
//! republishes a message whose confirm the connection lost. A full lane drops the message and
//! counts it (`ipvs_sync_outbox_dropped_total`): the periodic requests and heartbeats repair
//! any gap, and memory stays bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::bus::{Bus, Confirm};
use super::metrics::Metrics;
use crate::wire::amqp::Lane;
use crate::wire::{Dest, Message, MessageType};

type Item = (Dest, Message);

/// A published message waiting for its confirm: its type, its address, the confirm.
type Flying = (MessageType, String, Confirm);

/// One lane's sender: publishes what the lane holds, in order, and hands each confirm to the
/// confirmer. Ends when the lane or the confirmer is gone.
async fn send_lane(
    bus: Arc<dyn Bus>,
    mut lane: mpsc::Receiver<Item>,
    flying: mpsc::Sender<Flying>,
    depth: Arc<AtomicUsize>,
) {
    while let Some((to, msg)) = lane.recv().await {
        match bus.publish(to.clone(), &msg).await {
            Ok(c) => {
                let item = (msg.kind(), to.address().to_owned(), c);
                if flying.send(item).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                depth.fetch_sub(1, Ordering::Relaxed);
                warn!(to = to.address(), kind = %msg.kind(), error = %e, "send failed");
            }
        }
    }
}

/// Messages published and not yet confirmed, at most; the senders wait beyond.
pub const WINDOW: usize = 256;

/// Handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    urgent: mpsc::Sender<Item>,
    normal: mpsc::Sender<Item>,
    depth: Arc<AtomicUsize>,
    metrics: Metrics,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

/// Whether a message type rides the urgent lane: those of the broker's announce lane
/// ([`Lane::Announce`]), so the order that lane keeps is the order they were sent in.
pub fn is_urgent(t: MessageType) -> bool {
    Lane::of(t) == Lane::Announce
}

impl Outbox {
    /// Starts the sender task on `bus`; each lane holds at most `limit` messages.
    pub fn spawn(bus: Arc<dyn Bus>, limit: usize, metrics: Metrics) -> Outbox {
        let (urgent, urgent_rx) = mpsc::channel::<Item>(limit.max(1));
        let (normal, normal_rx) = mpsc::channel::<Item>(limit.max(1));
        let depth = Arc::new(AtomicUsize::new(0));
        let (flying, mut flying_rx) = mpsc::channel::<Flying>(WINDOW);
        let senders = [urgent_rx, normal_rx]
            .map(|rx| tokio::spawn(send_lane(bus.clone(), rx, flying.clone(), depth.clone())));
        drop(flying);
        let d = depth.clone();
        let confirmer = tokio::spawn(async move {
            while let Some((kind, to, confirm)) = flying_rx.recv().await {
                if let Err(e) = confirm.await {
                    warn!(to, %kind, error = %e, "send failed");
                }
                d.fetch_sub(1, Ordering::Relaxed);
            }
        });
        Outbox {
            urgent,
            normal,
            depth,
            metrics,
            tasks: Arc::new(std::sync::Mutex::new(
                senders.into_iter().chain([confirmer]).collect(),
            )),
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
                .outbox_dropped
                .get_or_create(&super::metrics::of_type(kind.as_str()))
                .inc();
        } else {
            debug!(%kind, "queued");
        }
    }

    /// Messages queued or not yet confirmed.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Lets the queue drain and the confirms come for up to 500 ms, then stops.
    pub async fn close(self) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while self.depth() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
    }
}
