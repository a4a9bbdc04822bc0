//! An in-memory broker for tests: the arbiter's `lbs` queue and one queue per balancer, the
//! `broadcast` fan-out, and faults on demand — drop, delay, duplicate, or hold a message back
//! and deliver it after later ones (reorder). Time is tokio's, so a paused clock drives delays.
//!
//! ```text
//!   MemoryNet ─ server(name) ──▶ (bus, receiver of "lbs")
//!             ─ client(host) ──▶ (bus, receiver of host + "broadcast")
//!   bus.publish(to, msg) ─▶ fault(from, to, msg) ─▶ Deliver │ Drop │ Duplicate │ Delay(d) │ Hold
//! ```
//!
//! Messages are delivered as [`Incoming`] exactly as the real transport hands them over after
//! verification; what the envelope and the broker do to bytes is tested with the transport.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;

use super::bus::{BoxFuture, Bus, Confirm};
use crate::wire::counters::Counters;
use crate::wire::messages::PeerRole;
use crate::wire::{Dest, Incoming, Message, MessageId, MessageType, WireError};

/// What happens to one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Delivered at once.
    Deliver,
    /// Confirmed to the sender, never delivered.
    Drop,
    /// Delivered twice.
    Duplicate,
    /// Delivered after this long.
    Delay(Duration),
    /// Kept back until [`MemoryNet::release`]; messages published meanwhile overtake it.
    Hold,
}

/// One published message, as the net saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sender.
    pub from: String,
    /// Routing key.
    pub to: String,
    /// Type.
    pub kind: MessageType,
    /// What happened to it.
    pub fate: Fate,
}

type FaultFn = Box<dyn FnMut(&str, &str, &Message) -> Fate + Send>;

/// Capacity of each endpoint's queue (a full one drops, like an over-long broker queue).
const QUEUE: usize = 1 << 16;

#[derive(Default)]
struct Net {
    server: Option<mpsc::Sender<Incoming>>,
    server_name: Option<String>,
    clients: BTreeMap<String, mpsc::Sender<Incoming>>,
    fault: Option<FaultFn>,
    held: Vec<(String, Incoming)>,
    log: Vec<Record>,
}

/// The in-memory broker; clones share it.
#[derive(Clone, Default)]
pub struct MemoryNet {
    net: Arc<Mutex<Net>>,
    seq: Arc<AtomicU64>,
}

fn lock(m: &Mutex<Net>) -> MutexGuard<'_, Net> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryNet {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// The arbiter's endpoint: it consumes `lbs`.
    pub fn server(&self, name: &str) -> (Arc<MemoryBus>, mpsc::Receiver<Incoming>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut net = lock(&self.net);
        net.server = Some(tx);
        net.server_name = Some(name.to_owned());
        drop(net);
        (self.endpoint(name, true), rx)
    }

    /// A balancer's endpoint: it consumes its own key and `broadcast`.
    pub fn client(&self, hostname: &str) -> (Arc<MemoryBus>, mpsc::Receiver<Incoming>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        lock(&self.net).clients.insert(hostname.to_owned(), tx);
        (self.endpoint(hostname, false), rx)
    }

    fn endpoint(&self, name: &str, server: bool) -> Arc<MemoryBus> {
        Arc::new(MemoryBus {
            net: self.clone(),
            name: name.to_owned(),
            server,
            up: AtomicBool::new(true),
            counters: Counters::default(),
        })
    }

    /// Decides the fate of every message published from now on: `f(from, to, message)`.
    pub fn set_fault(&self, f: impl FnMut(&str, &str, &Message) -> Fate + Send + 'static) {
        lock(&self.net).fault = Some(Box::new(f));
    }

    /// Every message is delivered again.
    pub fn clear_fault(&self) {
        lock(&self.net).fault = None;
    }

    /// Delivers the messages held back so far, in the order they were published.
    pub fn release(&self) {
        let held = std::mem::take(&mut lock(&self.net).held);
        for (to, m) in held {
            self.deliver(&to, m);
        }
    }

    /// Every message published so far.
    pub fn log(&self) -> Vec<Record> {
        lock(&self.net).log.clone()
    }

    /// Messages published so far of `kind` to `to` (a routing key).
    pub fn count(&self, kind: MessageType, to: &str) -> usize {
        lock(&self.net)
            .log
            .iter()
            .filter(|r| r.kind == kind && r.to == to)
            .count()
    }

    fn deliver(&self, to: &str, m: Incoming) {
        let net = lock(&self.net);
        let targets: Vec<mpsc::Sender<Incoming>> = match to {
            crate::wire::amqp::SERVER_QUEUE => net.server.iter().cloned().collect(),
            crate::wire::messages::BROADCAST => net.clients.values().cloned().collect(),
            host => net.clients.get(host).into_iter().cloned().collect(),
        };
        drop(net);
        for t in targets {
            let _ = t.try_send(m.clone());
        }
    }

    fn server_name(&self, name: &str) -> bool {
        lock(&self.net).server_name.as_deref() == Some(name)
    }

    fn publish(&self, from: &str, to: &Dest, msg: &Message) -> Fate {
        let address = to.address().to_owned();
        let fate = {
            let mut net = lock(&self.net);
            let fate = match net.fault.as_mut() {
                Some(f) => f(from, &address, msg),
                None => Fate::Deliver,
            };
            net.log.push(Record {
                from: from.to_owned(),
                to: address.clone(),
                kind: msg.kind(),
                fate,
            });
            fate
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let role = if self.server_name(from) {
            PeerRole::Server
        } else {
            PeerRole::Client
        };
        let id = MessageId { epoch: 1, seq };
        let incoming = Incoming::new(from, role, address.clone(), id, msg.clone());
        match fate {
            Fate::Deliver => self.deliver(&address, incoming),
            Fate::Drop => {}
            Fate::Duplicate => {
                self.deliver(&address, incoming.clone());
                self.deliver(&address, incoming);
            }
            Fate::Delay(d) => {
                let net = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    net.deliver(&address, incoming);
                });
            }
            Fate::Hold => lock(&self.net).held.push((address, incoming)),
        }
        fate
    }
}

/// One node's endpoint of a [`MemoryNet`].
pub struct MemoryBus {
    net: MemoryNet,
    name: String,
    server: bool,
    up: AtomicBool,
    counters: Counters,
}

impl MemoryBus {
    /// Takes the endpoint's connection down (publishes fail, `connected()` is false) or up.
    pub fn set_connected(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}

impl Bus for MemoryBus {
    fn publish<'a>(
        &'a self,
        to: Dest,
        msg: &'a Message,
    ) -> BoxFuture<'a, Result<Confirm, WireError>> {
        Box::pin(async move {
            let wrong = self.server == matches!(to, Dest::Server);
            if wrong {
                return Err(WireError::WrongDirection {
                    role: if self.server { "server" } else { "client" },
                    kind: msg.kind(),
                    to: to.address().to_owned(),
                });
            }
            if !self.up.load(Ordering::Relaxed) {
                return Err(WireError::NotConnected {
                    after: Duration::ZERO,
                });
            }
            self.net.publish(&self.name, &to, msg);
            self.counters.add_sent(msg.kind());
            let confirm: Confirm = Box::pin(async { Ok(()) });
            Ok(confirm)
        })
    }

    fn connected(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn close(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wire::messages::FinAnnounce;

    fn fin() -> Message {
        Message::FinAnnounce(FinAnnounce {
            vips: vec!["192.0.2.1".parse().unwrap()],
        })
    }

    async fn send(bus: &MemoryBus, to: Dest, m: &Message) {
        bus.publish(to, m).await.unwrap().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn routes_drops_duplicates_delays_and_reorders() {
        let net = MemoryNet::new();
        let (srv, mut srx) = net.server("arbiter");
        let (_c1, mut rx1) = net.client("lb1");
        let (c2, mut rx2) = net.client("lb2");

        send(&srv, Dest::Broadcast, &fin()).await;
        assert_eq!(rx1.recv().await.unwrap().from, "arbiter");
        assert_eq!(rx2.recv().await.unwrap().to, "broadcast");
        send(&srv, Dest::Client("lb2".into()), &fin()).await;
        assert!(rx2.try_recv().is_ok());
        assert!(rx1.try_recv().is_err(), "unicast reaches only its queue");

        send(&c2, Dest::Server, &Message::TreeRequest).await;
        assert_eq!(srx.recv().await.unwrap().from, "lb2");
        assert!(c2.publish(Dest::Broadcast, &fin()).await.is_err());

        net.set_fault(|_, to, _| match to {
            "lb1" => Fate::Drop,
            _ => Fate::Duplicate,
        });
        send(&srv, Dest::Client("lb1".into()), &fin()).await;
        send(&srv, Dest::Client("lb2".into()), &fin()).await;
        assert!(rx1.try_recv().is_err());
        assert!(rx2.try_recv().is_ok() && rx2.try_recv().is_ok());

        net.set_fault(|_, _, m| match m {
            Message::FinAnnounce(_) => Fate::Hold,
            _ => Fate::Delay(Duration::from_secs(2)),
        });
        send(&srv, Dest::Client("lb1".into()), &fin()).await;
        send(
            &srv,
            Dest::Client("lb1".into()),
            &Message::Heartbeat(crate::wire::messages::Heartbeat {
                role: crate::wire::messages::PeerRole::Server,
                uptime: 1,
                version: None,
                serial: None,
                announced: None,
                drained: None,
            }),
        )
        .await;
        assert!(rx1.try_recv().is_err());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            rx1.recv().await.unwrap().message.kind(),
            MessageType::Heartbeat
        );
        net.release();
        assert_eq!(
            rx1.recv().await.unwrap().message.kind(),
            MessageType::FinAnnounce
        );

        c2.set_connected(false);
        assert!(!c2.connected());
        assert!(c2
            .publish(Dest::Server, &Message::TreeRequest)
            .await
            .is_err());
        assert_eq!(net.count(MessageType::FinAnnounce, "lb1"), 2);
    }
}
