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
//!
//! The sender folds `ack_announce`s it finds queued one behind the other for the same peer
//! into one message (`wire::ack_batch`) when that peer reads batches ([`Outbox::set_batches`],
//! from its heartbeats); it never waits for more to come.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::bus::{Bus, Confirm};
use super::metrics::Metrics;
use crate::wire::ack_batch;
use crate::wire::amqp::Lane;
use crate::wire::{Dest, Message, MessageType};

type Item = (Dest, Message);

/// A published message waiting for its confirm: its type, its address, the confirm.
type Flying = (MessageType, String, Confirm);

/// The addresses (a balancer's hostname, `lbs`) whose daemon reads `ack_announce` batches.
type Batches = Arc<Mutex<HashSet<String>>>;

/// Folds into `item` the acks queued right behind it for the same peer, when that peer reads
/// batches; returns the first queued message it did not fold (to send next).
fn fold_queued(
    item: &mut Item,
    lane: &mut mpsc::Receiver<Item>,
    batches: &Batches,
    depth: &AtomicUsize,
) -> Option<Item> {
    let folds = matches!(item.1, Message::AckPrepared(_) | Message::AckGo(_))
        && batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(item.0.address());
    if !folds {
        return None;
    }
    while let Ok((to, next)) = lane.try_recv() {
        if to != item.0 {
            return Some((to, next));
        }
        match ack_batch::absorb(&mut item.1, next) {
            // One message fewer in the queue.
            Ok(()) => {
                depth.fetch_sub(1, Ordering::Relaxed);
            }
            Err(next) => return Some((to, next)),
        }
    }
    None
}

/// One lane's sender: publishes what the lane holds, in order (folding acks, see
/// [`fold_queued`]), and hands each confirm to the confirmer. Ends when the lane or the
/// confirmer is gone.
async fn send_lane(
    bus: Arc<dyn Bus>,
    mut lane: mpsc::Receiver<Item>,
    flying: mpsc::Sender<Flying>,
    depth: Arc<AtomicUsize>,
    batches: Batches,
) {
    let mut held: Option<Item> = None;
    loop {
        let mut item = match held.take() {
            Some(i) => i,
            None => match lane.recv().await {
                Some(i) => i,
                None => return,
            },
        };
        held = fold_queued(&mut item, &mut lane, &batches, &depth);
        let (to, msg) = item;
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
    batches: Batches,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// When the broker last confirmed a message of ours ([`Outbox::last_confirm`]).
    confirmed_at: Arc<Mutex<Option<Instant>>>,
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
        let batches = Batches::default();
        let senders = [urgent_rx, normal_rx].map(|rx| {
            tokio::spawn(send_lane(
                bus.clone(),
                rx,
                flying.clone(),
                depth.clone(),
                batches.clone(),
            ))
        });
        drop(flying);
        let d = depth.clone();
        let confirmed_at = Arc::new(Mutex::new(None));
        let at = Arc::clone(&confirmed_at);
        let confirmer = tokio::spawn(async move {
            while let Some((kind, to, confirm)) = flying_rx.recv().await {
                match confirm.await {
                    Ok(()) => *at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now()),
                    Err(e) => warn!(to, %kind, error = %e, "send failed"),
                }
                d.fetch_sub(1, Ordering::Relaxed);
            }
        });
        Outbox {
            urgent,
            normal,
            depth,
            metrics,
            batches,
            tasks: Arc::new(Mutex::new(senders.into_iter().chain([confirmer]).collect())),
            confirmed_at,
        }
    }

    /// When the broker last confirmed a message of this daemon's (none yet: `None`). A
    /// daemon that publishes every heartbeat interval learns from it that its own path to
    /// the broker works: a node cut off from the others confirms nothing.
    pub fn last_confirm(&self) -> Option<Instant> {
        *self.confirmed_at.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Whether the daemon at `address` reads `ack_announce` batches (its heartbeats name the
    /// feature); acks to it are folded from now on, or no longer.
    pub fn set_batches(&self, address: &str, yes: bool) {
        let mut b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        if yes {
            if !b.contains(address) {
                b.insert(address.to_owned());
            }
        } else {
            b.remove(address);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::daemon::bus::BoxFuture;
    use crate::daemon::metrics::Role;
    use crate::wire::counters::Counters;
    use crate::wire::messages::{AckGo, FinAnnounce};
    use crate::wire::WireError;
    use std::net::IpAddr;
    use tokio::sync::Semaphore;

    /// Records what is published; each publish waits for a permit, so a test decides when the
    /// sender gets past a message (and what queues behind it meanwhile).
    struct Recorder {
        sent: Mutex<Vec<(Dest, Message)>>,
        /// Publishes begun.
        entered: AtomicUsize,
        gate: Semaphore,
        counters: Counters,
    }

    impl Bus for Recorder {
        fn publish<'a>(
            &'a self,
            to: Dest,
            msg: &'a Message,
        ) -> BoxFuture<'a, Result<Confirm, WireError>> {
            Box::pin(async move {
                self.entered.fetch_add(1, Ordering::SeqCst);
                self.gate.acquire().await.unwrap().forget();
                self.sent.lock().unwrap().push((to, msg.clone()));
                let confirm: Confirm = Box::pin(async { Ok(()) });
                Ok(confirm)
            })
        }
        fn connected(&self) -> bool {
            true
        }
        fn counters(&self) -> &Counters {
            &self.counters
        }
        fn close(self: Arc<Self>) -> BoxFuture<'static, ()> {
            Box::pin(async {})
        }
    }

    fn go(i: u8) -> Message {
        Message::AckGo(AckGo {
            vip: IpAddr::from([192, 0, 2, i]),
            local_preference: 100,
            communities: Vec::new(),
        })
    }

    fn lb(name: &str) -> Dest {
        Dest::Client(name.to_owned())
    }

    /// Queues a go for lb1 and lets the sender take it; then, while its publish waits, queues
    /// `behind`; then lets everything out. Returns what was published.
    async fn send_with_queue(
        batches_for: &[&str],
        behind: Vec<(Dest, Message)>,
    ) -> Vec<(Dest, Message)> {
        let rec = Arc::new(Recorder {
            sent: Mutex::new(Vec::new()),
            entered: AtomicUsize::new(0),
            gate: Semaphore::new(0),
            counters: Counters::default(),
        });
        let outbox = Outbox::spawn(rec.clone(), 100, Metrics::new(Role::Server));
        for name in batches_for {
            outbox.set_batches(name, true);
        }
        let total = behind.len() + 1;
        outbox.send(lb("lb1"), go(1));
        // The sender holds the first go in its publish, waiting at the gate.
        while rec.entered.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for (to, m) in behind {
            outbox.send(to, m);
        }
        rec.gate.add_permits(total);
        while outbox.depth() > 0 {
            tokio::task::yield_now().await;
        }
        let sent = rec.sent.lock().unwrap().clone();
        outbox.close().await;
        sent
    }

    fn vips(m: &Message) -> Vec<u8> {
        let last = |ip: &IpAddr| match ip {
            IpAddr::V4(v) => v.octets()[3],
            IpAddr::V6(_) => 0,
        };
        match m {
            Message::AckGo(g) => vec![last(&g.vip)],
            Message::AckGoBatch(b) => b.go.iter().map(|g| last(&g.vip)).collect(),
            _ => Vec::new(),
        }
    }

    /// Each published message as its address and the last octets of the VIPs it acks.
    fn shape(sent: &[(Dest, Message)]) -> Vec<(String, Vec<u8>)> {
        sent.iter()
            .map(|(to, m)| (to.address().to_owned(), vips(m)))
            .collect()
    }

    #[tokio::test]
    async fn acks_queued_for_a_peer_that_reads_batches_go_as_one_message_in_order() {
        let behind = vec![
            (lb("lb1"), go(2)),
            (lb("lb1"), go(3)),
            (lb("lb1"), go(4)),
            (lb("lb2"), go(5)),
            (lb("lb1"), go(6)),
        ];
        let sent = send_with_queue(&["lb1", "lb2"], behind).await;
        assert_eq!(
            shape(&sent),
            vec![
                ("lb1".into(), vec![1]),
                ("lb1".into(), vec![2, 3, 4]),
                ("lb2".into(), vec![5]),
                ("lb1".into(), vec![6]),
            ]
        );
        assert!(matches!(sent[1].1, Message::AckGoBatch(_)));
    }

    #[tokio::test]
    async fn a_peer_not_known_to_read_batches_gets_one_message_per_ack() {
        let fin = Message::FinAnnounce(FinAnnounce {
            vips: vec![IpAddr::from([192, 0, 2, 9])],
        });
        let behind = vec![
            (lb("lb1"), go(2)),
            (lb("lb1"), go(3)),
            (lb("lb2"), go(4)),
            (lb("lb2"), go(5)),
            (lb("lb2"), fin.clone()),
        ];
        // lb2 reads batches, lb1 does not.
        let sent = send_with_queue(&["lb2"], behind).await;
        assert_eq!(
            shape(&sent),
            vec![
                ("lb1".into(), vec![1]),
                ("lb1".into(), vec![2]),
                ("lb1".into(), vec![3]),
                ("lb2".into(), vec![4, 5]),
                ("lb2".into(), vec![]),
            ]
        );
        assert_eq!(sent[4].1, fin, "a fin is never folded into acks");
        assert!(sent[..3]
            .iter()
            .all(|(_, m)| matches!(m, Message::AckGo(_))));
    }
}
