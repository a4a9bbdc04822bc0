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
//! Every endpoint has its own Ed25519 node key: a published message is sealed with the
//! sender's key and each receiver admits it with its own [`Verifier`] (the arbiter holds every
//! balancer's public key, a balancer pins the arbiter's), exactly the checks of the real
//! transport, drops counted by reason. [`MemoryNet::inject`] puts raw bytes on a queue, for
//! forged or replayed messages.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;

use super::bus::{BoxFuture, Bus, Confirm};
use crate::wire::admission::{Policy, Verifier};
use crate::wire::amqp::{now_ms, SERVER_QUEUE};
use crate::wire::counters::Counters;
use crate::wire::envelope::{self, Header};
use crate::wire::messages::{Direction, BROADCAST};
use crate::wire::replay::ReplayTable;
use crate::wire::{Dest, Incoming, Message, MessageId, MessageType, NodeKey, Senders, WireError};

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

/// One node on the net: where its messages go, its key and its admission state.
struct Endpoint {
    tx: mpsc::Sender<Incoming>,
    key: NodeKey,
    verifier: Verifier,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Net {
    server: Option<(String, Endpoint)>,
    clients: BTreeMap<String, Endpoint>,
    fault: Option<FaultFn>,
    held: Vec<(String, Vec<u8>)>,
    log: Vec<Record>,
}

impl Net {
    /// Whom the node `name` accepts messages from, with their keys.
    fn senders_of(&self, name: &str) -> Senders {
        match &self.server {
            Some((server, ep)) if server == name => Senders::balancers(
                &ep.key,
                server,
                self.clients
                    .iter()
                    .map(|(h, c)| (h.clone(), c.key.public()))
                    .collect(),
            ),
            Some((server, ep)) => Senders::Arbiter {
                name: server.clone(),
                key: ep.key.public(),
            },
            None => Senders::balancers(&NodeKey::from_seed([0; 32]), name, BTreeMap::new()),
        }
    }

    fn endpoint(&mut self, name: &str) -> Option<&mut Endpoint> {
        match &mut self.server {
            Some((server, ep)) if server == name => Some(ep),
            _ => self.clients.get_mut(name),
        }
    }
}

/// The node key of `name` on the net: derived from the name, so a test can make it again.
pub fn key_for(name: &str) -> NodeKey {
    use sha2::Digest as _;
    let seed: [u8; 32] = sha2::Sha256::new()
        .chain_update(b"ipvs-sync memory net key\n")
        .chain_update(name.as_bytes())
        .finalize()
        .into();
    NodeKey::from_seed(seed)
}

fn new_endpoint(name: &str, tx: mpsc::Sender<Incoming>, accept_to: Vec<String>) -> Endpoint {
    Endpoint {
        tx,
        key: key_for(name),
        verifier: Verifier::new(
            Policy {
                max_bytes: config::DEFAULT_MAX_BYTES,
                accept_to,
            },
            ReplayTable::new(crate::wire::replay::DEFAULT_CAPACITY),
        ),
        counters: Arc::new(Counters::default()),
    }
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

    /// The arbiter's endpoint, with a new node key: it consumes `lbs`.
    pub fn server(&self, name: &str) -> (Arc<MemoryBus>, mpsc::Receiver<Incoming>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let ep = new_endpoint(name, tx, vec![SERVER_QUEUE.to_owned()]);
        let counters = Arc::clone(&ep.counters);
        lock(&self.net).server = Some((name.to_owned(), ep));
        (self.bus(name, true, counters), rx)
    }

    /// A balancer's endpoint, with a new node key: it consumes its own key and `broadcast`.
    pub fn client(&self, hostname: &str) -> (Arc<MemoryBus>, mpsc::Receiver<Incoming>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let ep = new_endpoint(
            hostname,
            tx,
            vec![hostname.to_owned(), BROADCAST.to_owned()],
        );
        let counters = Arc::clone(&ep.counters);
        lock(&self.net).clients.insert(hostname.to_owned(), ep);
        (self.bus(hostname, false, counters), rx)
    }

    fn bus(&self, name: &str, server: bool, counters: Arc<Counters>) -> Arc<MemoryBus> {
        Arc::new(MemoryBus {
            net: self.clone(),
            name: name.to_owned(),
            server,
            up: AtomicBool::new(true),
            counters,
        })
    }

    /// The node key of the endpoint `name` (to forge with it in tests).
    pub fn key_of(&self, name: &str) -> Option<NodeKey> {
        lock(&self.net).endpoint(name).map(|e| e.key.clone())
    }

    /// Puts `bytes` on the queue(s) of routing key `to` as they are: every receiver admits
    /// them with its checks.
    pub fn inject(&self, to: &str, bytes: Vec<u8>) {
        self.deliver(to, bytes);
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

    fn deliver(&self, to: &str, bytes: Vec<u8>) {
        let mut net = lock(&self.net);
        let targets: Vec<String> = match to {
            SERVER_QUEUE => net.server.iter().map(|(n, _)| n.clone()).collect(),
            BROADCAST => net.clients.keys().cloned().collect(),
            host => net
                .clients
                .get_key_value(host)
                .map(|(h, _)| h.clone())
                .into_iter()
                .collect(),
        };
        for name in targets {
            let senders = net.senders_of(&name);
            let Some(ep) = net.endpoint(&name) else {
                continue;
            };
            if let Some(m) = admit(ep, &senders, &bytes) {
                let _ = ep.tx.try_send(m);
            }
        }
    }

    /// `msg` sealed with the key of `from` (one id sequence for the whole net, so every
    /// sender's ids grow).
    fn seal(&self, from: &str, to: &str, seq: u64, msg: &Message) -> Option<Vec<u8>> {
        let key = lock(&self.net).endpoint(from)?.key.clone();
        let body = msg.encode_body().ok()?;
        let header = Header {
            kind: msg.kind().as_str().to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            id: MessageId { epoch: 1, seq },
            ts_ms: now_ms(),
        };
        envelope::seal(&key, &header, &body).ok()
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
        let Some(bytes) = self.seal(from, &address, seq, msg) else {
            return fate;
        };
        match fate {
            Fate::Deliver => self.deliver(&address, bytes),
            Fate::Drop => {}
            Fate::Duplicate => {
                self.deliver(&address, bytes.clone());
                self.deliver(&address, bytes);
            }
            Fate::Delay(d) => {
                let net = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    net.deliver(&address, bytes);
                });
            }
            Fate::Hold => lock(&self.net).held.push((address, bytes)),
        }
        fate
    }
}

/// Runs the receiver's checks on `bytes` and decodes them; counts what it drops.
fn admit(ep: &mut Endpoint, senders: &Senders, bytes: &[u8]) -> Option<Incoming> {
    let a = match ep.verifier.admit(senders, bytes, now_ms()) {
        Ok(a) => a,
        Err(reject) => {
            ep.counters.add_dropped(reject.reason());
            return None;
        }
    };
    let h = a.header;
    match Message::decode(&h.kind, Direction::of_address(&h.to), a.body) {
        Ok(m) => {
            ep.counters.add_received(m.kind());
            Some(Incoming::new(h.from, a.role, h.to, h.id, m))
        }
        Err(_) => {
            ep.counters
                .add_dropped(crate::wire::envelope::DropReason::Schema);
            None
        }
    }
}

/// One node's endpoint of a [`MemoryNet`].
pub struct MemoryBus {
    net: MemoryNet,
    name: String,
    server: bool,
    up: AtomicBool,
    counters: Arc<Counters>,
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
    use crate::wire::envelope::DropReason;
    use crate::wire::messages::{FinAnnounce, PeerRole};

    fn fin() -> Message {
        Message::FinAnnounce(FinAnnounce {
            vips: vec!["192.0.2.1".parse().unwrap()],
        })
    }

    async fn send(bus: &MemoryBus, to: Dest, m: &Message) {
        bus.publish(to, m).await.unwrap().await.unwrap();
    }

    /// Seals `fin` (to balancers) or `tree` (to the arbiter) with `key` under `from` → `to`
    /// with id `seq` of epoch 2.
    fn forged(key: &NodeKey, from: &str, to: &str, seq: u64) -> Vec<u8> {
        let m = if to == SERVER_QUEUE {
            Message::TreeRequest
        } else {
            fin()
        };
        let body = m.encode_body().unwrap();
        let header = Header {
            kind: m.kind().as_str().into(),
            from: from.into(),
            to: to.into(),
            id: MessageId { epoch: 2, seq },
            ts_ms: now_ms(),
        };
        envelope::seal(key, &header, &body).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn every_node_signs_with_its_own_key_and_forgeries_are_counted_by_reason() {
        let net = MemoryNet::new();
        let (srv, mut srx) = net.server("arbiter");
        let (c1, mut rx1) = net.client("lb1");
        let (c2, mut rx2) = net.client("lb2");
        let lb1 = net.key_of("lb1").unwrap();
        // lb1's key as the arbiter, to lb2 and to every balancer: forged.
        net.inject("lb2", forged(&lb1, "arbiter", "lb2", 1));
        net.inject(BROADCAST, forged(&lb1, "arbiter", BROADCAST, 2));
        // lb1's key as lb2, to the arbiter: forged; from `broadcast` or `lbs`: unknown.
        net.inject(SERVER_QUEUE, forged(&lb1, "lb2", SERVER_QUEUE, 3));
        net.inject(SERVER_QUEUE, forged(&lb1, BROADCAST, SERVER_QUEUE, 4));
        net.inject(SERVER_QUEUE, forged(&lb1, SERVER_QUEUE, SERVER_QUEUE, 5));
        assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err() && srx.try_recv().is_err());
        assert_eq!(c2.counters().dropped(DropReason::Forged), 2);
        assert_eq!(c1.counters().dropped(DropReason::Forged), 1);
        assert_eq!(srv.counters().dropped(DropReason::Forged), 1);
        assert_eq!(srv.counters().dropped(DropReason::UnknownSender), 2);
        // lb1's key as lb1 passes, once: the same bytes again are a duplicate.
        let own = forged(&lb1, "lb1", SERVER_QUEUE, 6);
        net.inject(SERVER_QUEUE, own.clone());
        assert_eq!(srx.try_recv().unwrap().from, "lb1");
        net.inject(SERVER_QUEUE, own);
        assert!(srx.try_recv().is_err());
        assert_eq!(srv.counters().dropped(DropReason::Duplicate), 1);
        // What the endpoints publish is signed with their own keys and admitted.
        send(&srv, Dest::Broadcast, &fin()).await;
        assert_eq!(rx1.recv().await.unwrap().role, PeerRole::Server);
        assert_eq!(rx2.recv().await.unwrap().id.epoch, 1);
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
        // The broker delivers twice; the receiver's replay window takes the first copy only.
        assert!(rx2.try_recv().is_ok());
        assert!(rx2.try_recv().is_err());
        assert_eq!(c2.counters().dropped(DropReason::Duplicate), 1);

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
                features: Vec::new(),
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
