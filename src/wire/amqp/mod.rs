//! RabbitMQ transport (AMQP 0-9-1 over lapin): signed sends with publisher confirms, verified
//! receives, reconnection. The broker objects and their limits are in [`topology`]; what a
//! transport is built from in [`options`]; the connection and the consumer loop in `session`.
//!
//! Both sides publish persistent messages with `mandatory` set and publisher confirms on:
//! [`Transport::publish`] signs a message and hands it to the broker, [`Transport::confirmed`]
//! returns `Ok` only once the broker has taken it into a queue (and, the queues being durable,
//! to disk). The daemons' outbox keeps many messages between the two, so none waits for the
//! confirm of the one before. A message no queue is bound for comes back as
//! [`WireError::Unroutable`] and is counted; a message larger than `max_bytes` is refused
//! before it leaves ([`WireError::TooLarge`]).
//!
//! # Tasks
//!
//! ```text
//!   Transport::publish ──seal (epoch, seq)──▶ publish channel ──▶ broker ──confirm──▶ Transport::confirmed
//!                       ▲ (link: watch<Option<Channel>>, set per connection)   lost? the same bytes again
//!   supervisor task ────┘
//!     │ connect (TLS) · declare · bind · consume (exclusive)    (re)connect with backoff
//!     ▼
//!   consumer ──batch of ready deliveries──▶ verify (batch Ed25519) ──▶ replay window
//!      ──▶ marks appended to state_dir ──▶ typed Message ──▶ mpsc (bounded, byte budget) ──▶ daemon
//!      ──▶ ack (multiple, every half prefetch or 50 ms)   drops counted by reason, logged rate-limited
//! ```
//!
//! # Reconnection
//!
//! The transport owns it: when the connection is lost (a consumer error, a connection error
//! event, a missed AMQP heartbeat, or a connection that is simply no longer open) the
//! supervisor drops it and builds a new one — connect, declare, bind, consume — with a
//! backoff from `reconnect_min` doubling to `reconnect_max`, for as long as the transport
//! lives. Sends during an outage wait for the new link up to `send_timeout`.
//!
//! lapin's own recovery (`ConnectionProperties::enable_auto_recover`) is deliberately off.
//! Tried here against RabbitMQ 3.10 (the lab tests): it rides out `close_all_connections` and
//! a ~10 s broker restart, but during a 25 s outage it gave no sign at all for 30 s — no
//! event, no consumer error, state "reconnecting" — while its I/O thread kept retrying; and
//! once its retry budget is spent that thread returns after only poisoning the status
//! (lapin 4.12 `io_loop.rs`), so a consumer would wait forever. A rebuild layered on top would
//! race that thread, which may come back later with an orphaned consumer holding `prefetch`
//! messages nobody reads. One mechanism that always works beats two that race.
//!
//! # Delivery
//!
//! At least once on the wire, at most once to the daemon: a publish whose confirm was lost
//! with the connection is published again as the same bytes — same id, same signature — so a
//! receiver that got the first copy drops the second as a duplicate (`replay.rs`), and one
//! that did not takes it. Each message's id is written to the receiver's state directory
//! before the daemon sees it, so a restarted receiver takes no message twice either.

mod acks;
pub mod nodes;
pub(crate) mod options;
mod session;
pub mod topology;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lapin::options::BasicPublishOptions;
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::{mpsc, watch, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use options::{prefetch_for, TlsFiles, TransportOptions, INPUT_BUDGET};
pub use topology::{
    Dest, Lane, QueueLimits, Role, ANNOUNCE_EXCHANGE, ANNOUNCE_QUEUE_PREFIX, CLIENT_QUEUE_PREFIX,
    EXCHANGE, SERVER_QUEUE,
};

/// One of a node's queues at the broker and how many messages wait in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// Its lane.
    pub lane: Lane,
    /// Its name.
    pub queue: String,
    /// Messages waiting, as of the last look.
    pub depth: u64,
}

use super::counters::Counters;
use super::envelope::{self, Header, MessageId, SealError};
use super::keys::{KeyDirError, KeyError, PairKey, Senders};
use super::messages::{Direction, Message, MessageType, PeerRole};
use super::skew::PeerClock;
use super::state::{StateDir, StateError};
use nodes::NodeOrder;

/// A message handed to the broker, its confirm not yet in: see [`Transport::publish`].
pub struct InFlight {
    kind: MessageType,
    exchange: &'static str,
    address: String,
    id: MessageId,
    payload: Vec<u8>,
    deadline: Instant,
    confirm: lapin::PublisherConfirm,
}

impl InFlight {
    /// The message's type.
    pub fn kind(&self) -> MessageType {
        self.kind
    }
    /// Where it goes (routing key).
    pub fn address(&self) -> &str {
        &self.address
    }
    /// Its id.
    pub fn id(&self) -> MessageId {
        self.id
    }
}

/// A verified, typed message from the broker.
///
/// `from` is the sender the signature proved, `role` what that sender is (the arbiter for a
/// balancer, a balancer for the arbiter), `id` the message's identity: a daemon can act on an
/// id once (`execute` does). While the daemon holds it, the message counts against the
/// transport's input budget.
#[derive(Debug)]
pub struct Incoming {
    /// The verified sender.
    pub from: String,
    /// The sender's role.
    pub role: PeerRole,
    /// Addressee as sent (`lbs`, this hostname or `broadcast`).
    pub to: String,
    /// The message's id.
    pub id: MessageId,
    /// Sender's clock at sending, ms since the epoch (measured, never checked).
    pub ts_ms: u64,
    /// The message.
    pub message: Message,
    _budget: Option<OwnedSemaphorePermit>,
}

impl Clone for Incoming {
    /// A copy for a second receiver (a fake broker's duplicate); it holds none of the input
    /// budget.
    fn clone(&self) -> Self {
        Incoming {
            from: self.from.clone(),
            role: self.role,
            to: self.to.clone(),
            id: self.id,
            ts_ms: self.ts_ms,
            message: self.message.clone(),
            _budget: None,
        }
    }
}

impl Incoming {
    /// A message as the transport would hand it over (tests and fakes of the daemons).
    pub fn new(
        from: impl Into<String>,
        role: PeerRole,
        to: impl Into<String>,
        id: MessageId,
        message: Message,
    ) -> Incoming {
        Incoming {
            from: from.into(),
            role,
            to: to.into(),
            id,
            ts_ms: now_ms(),
            message,
            _budget: None,
        }
    }
}

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The AMQP URL does not parse.
    #[error("bad AMQP URL: {reason}")]
    Url {
        /// Parser message.
        reason: String,
    },
    /// This node's name cannot be used as identity or routing key.
    #[error("bad node name `{name}`: {reason}")]
    Identity {
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The configuration lacks what the transport needs.
    #[error("{0}")]
    Config(Box<config::ConfigError>),
    /// A key does not parse.
    #[error("{what}: {source}")]
    Key {
        /// Which key.
        what: String,
        /// Why.
        source: KeyError,
    },
    /// Who to trust is not configured.
    #[error("{reason}")]
    Trust {
        /// What is missing.
        reason: String,
    },
    /// `balancer_keys_dir` cannot be read.
    #[error(transparent)]
    KeyDir(KeyDirError),
    /// The state directory is unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// A TLS file is unusable.
    #[error("TLS file {file}: {reason}")]
    Tls {
        /// The file.
        file: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The broker refused the connection or a declaration.
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker user may not do what the role needs.
    #[error("broker refused: {what}")]
    BrokerRefused {
        /// What was refused, and why.
        what: String,
    },
    /// The exchange does not exist yet (the arbiter declares it).
    #[error(
        "exchange `{exchange}` does not exist in vhost `{vhost}` yet: the arbiter declares it \
         when it connects (start it, or upgrade it first)"
    )]
    ExchangeMissing {
        /// The vhost.
        vhost: String,
        /// The exchange.
        exchange: String,
    },
    /// This role's queue exists with other arguments.
    #[error(
        "queue `{queue}` exists with other arguments than {wanted} (declared by an older \
         ipvs-sync, or [messages] max_age or max_bytes or [main] amqp_queue_type changed). \
         Delete it, losing what it holds (the daemons ask again for what they need): \
         `rabbitmqctl delete_queue -p \
         {vhost} {queue}`, then start again. A policy cannot stand in for these arguments: \
         ipvs-sync declares its queues with them, and a queue without them is unbounded and \
         never expires its messages ({detail})"
    )]
    QueueArguments {
        /// The queue.
        queue: String,
        /// Its vhost.
        vhost: String,
        /// The arguments ipvs-sync declares.
        wanted: String,
        /// The broker's words.
        detail: String,
    },
    /// Another process consumes this role's queue.
    #[error(
        "queue `{queue}` is consumed by another process: another ipvs-sync with this {what} runs \
         (two balancers with one hostname, or two arbiters). Stop it, or give this node its own \
         hostname. (A process that died is forgotten by the broker within two AMQP heartbeats.)"
    )]
    QueueInUse {
        /// The queue.
        queue: String,
        /// `hostname` or `arbiter name`.
        what: &'static str,
    },
    /// An operation did not finish in time.
    #[error("AMQP {op} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        op: &'static str,
        /// The limit.
        after: Duration,
    },
    /// No connection came up within the send timeout.
    #[error("not connected to the broker (gave up after {after:?})")]
    NotConnected {
        /// The limit.
        after: Duration,
    },
    /// The body could not be serialised.
    #[error("encoding a {kind} body: {source}")]
    Encode {
        /// Message type.
        kind: MessageType,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// The envelope could not be sealed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The sealed message is larger than `max_bytes`: not sent (no receiver would take it).
    #[error("{kind} to {to} is {len} bytes, over max_bytes = {max}: not sent")]
    TooLarge {
        /// Message type.
        kind: MessageType,
        /// Destination.
        to: String,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// This role never sends this message to this destination.
    #[error("a {role} does not send {kind} to {to}")]
    WrongDirection {
        /// Sender's role.
        role: &'static str,
        /// Message type.
        kind: MessageType,
        /// Destination address.
        to: String,
    },
    /// No queue is bound to the routing key (e.g. the balancer's queue does not exist yet).
    #[error("unroutable: no queue bound to routing key `{routing_key}`")]
    Unroutable {
        /// The key.
        routing_key: String,
    },
    /// The broker refused the message (`basic.nack`).
    #[error("broker nacked the message to `{routing_key}`")]
    Nacked {
        /// The key.
        routing_key: String,
    },
}

impl WireError {
    /// Whether retrying cannot help: the configuration, a key, the state directory, the
    /// broker's permissions or queue, or another process holding the queue must change first.
    /// A daemon stops at start on these instead of retrying.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            WireError::Url { .. }
                | WireError::Identity { .. }
                | WireError::Config(_)
                | WireError::Key { .. }
                | WireError::Trust { .. }
                | WireError::KeyDir(_)
                | WireError::State(_)
                | WireError::Tls { .. }
                | WireError::BrokerRefused { .. }
                | WireError::QueueArguments { .. }
                | WireError::QueueInUse { .. }
        )
    }
}

/// State shared by the handle and the supervisor task.
struct Shared {
    role: Role,
    /// The broker nodes of `amqp_server`, in the order configured.
    uris: Vec<AMQPUri>,
    /// Which node to try next (see `nodes.rs`).
    order: std::sync::Mutex<NodeOrder>,
    /// Index in `uris` of the node of the current connection (`usize::MAX`: none).
    node: AtomicUsize,
    /// Asks the supervisor to drop the connection and build one on the next node (a nack:
    /// the node cannot take messages into the queue now).
    renew: tokio::sync::Notify,
    opts: TransportOptions,
    counters: Counters,
    /// This run's epoch (see `state.rs`).
    epoch: u64,
    /// A balancer: the pair key it shares with the arbiter; its messages carry a MAC of it
    /// instead of a signature (see `keys.rs`).
    pair: Option<PairKey>,
    /// Last seq used; held while numbering (and while republishing), not while sealing: one
    /// caller's messages reach the broker in the order of their seqs, two callers' may
    /// interleave (the receivers' replay windows take seqs out of order).
    seq: Mutex<u64>,
    /// The publishing channel of the current connection, `None` while there is none.
    link: watch::Sender<Option<Channel>>,
    /// Who may send, with their keys; replaced by [`Transport::reload`].
    senders: RwLock<Arc<Senders>>,
    /// The senders' clock offsets, as the consumer last measured them.
    clocks: std::sync::Mutex<Vec<PeerClock>>,
    /// Messages in each of this role's queues at the last look, by lane (`u64::MAX`: not
    /// known).
    queue_depth: [AtomicU64; 2],
    /// Bytes of received messages the daemon may hold (see [`INPUT_BUDGET`]), by lane: a
    /// tree holding the main lane's never holds up a `fin_announce`.
    budget: [Arc<Semaphore>; 2],
    /// Holds the state directory's lock while the transport lives.
    state: StateDir,
}

impl Shared {
    fn senders(&self) -> Arc<Senders> {
        Arc::clone(&self.senders.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The node to try next, as an index into `uris`.
    fn next_node(&self) -> usize {
        self.order
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_node()
    }

    /// Records the node a connection was made to (`None`: no connection now).
    fn set_node(&self, node: Option<usize>) {
        if let Some(i) = node {
            self.order
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .connected(i);
        }
        self.node
            .store(node.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// `host:port` of node `i`.
    fn node_name(&self, i: usize) -> Option<String> {
        self.uris
            .get(i)
            .map(|u| format!("{}:{}", u.authority.host, u.authority.port))
    }

    /// `host:port` of the node of the last connection made.
    fn broker_node_of(&self) -> Option<String> {
        self.node_name(self.node.load(Ordering::Relaxed))
    }
}

/// A connection to the broker with the topology of one [`Role`].
///
/// Signing, verification, counting and reconnection happen inside; the daemon sees
/// [`Transport::publish`] / [`Transport::confirmed`] and a bounded stream of [`Incoming`].
pub struct Transport {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    supervisor: JoinHandle<()>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("role", &self.shared.role)
            .field("epoch", &self.shared.epoch)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Opens the state directory (taking this role's lock and the next epoch), connects to
    /// `url` (`amqp://` or `amqps://`; several URLs separated by commas are the nodes of one
    /// cluster, tried in an order shuffled per process), declares this role's objects and
    /// starts consuming. Fails if no node takes that first attempt (bad URL, refused, bad
    /// credentials, timeouts, the queue held by another process), so a misconfiguration
    /// shows at start; once connected, losses are repaired in the background, on the next
    /// node, for as long as the transport lives.
    ///
    /// Returns the handle and the receiver of verified messages; dropping the receiver stops
    /// consumption.
    pub async fn connect(
        url: &str,
        role: Role,
        opts: TransportOptions,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), WireError> {
        role.check()?;
        let connect_ms = u64::try_from(opts.connect_timeout.as_millis()).unwrap_or(u64::MAX);
        let uris =
            options::prepare_uris(url, opts.password.as_deref(), opts.heartbeat_s, connect_ms)?;
        let state = StateDir::open(&opts.state_dir, role.label())?;
        let marks = state.marks()?;
        let epoch = state.next_epoch(now_ms() / 1000)?;
        let (link, _) = watch::channel(None);
        let pair = match (&role, &opts.senders) {
            (Role::Client { hostname }, Senders::Arbiter { name, key }) => {
                Some(opts.key.pair_with_arbiter(hostname, name, key))
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            pair,
            senders: RwLock::new(Arc::new(opts.senders.clone())),
            role,
            order: std::sync::Mutex::new(NodeOrder::shuffled(
                uris.len(),
                NodeOrder::process_seed(),
            )),
            node: AtomicUsize::new(usize::MAX),
            renew: tokio::sync::Notify::new(),
            uris,
            counters: Counters::default(),
            epoch,
            seq: Mutex::new(0),
            link,
            clocks: std::sync::Mutex::new(Vec::new()),
            queue_depth: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
            budget: [
                Arc::new(Semaphore::new(INPUT_BUDGET)),
                Arc::new(Semaphore::new(INPUT_BUDGET)),
            ],
            state,
            opts,
        });
        let first = session::establish_first(&shared).await?;
        info!(role = shared.role.label(), name = shared.role.name(), epoch,
              node = shared.broker_node_of(), queue = %shared.role.queue(),
              state_dir = %shared.state.path().display(), "AMQP connected");
        // With two lanes the daemon is handed one message at a time (the lanes buffer), so a
        // `fin_announce` never queues behind more than the message being handled.
        let capacity = match shared.role.lanes() {
            [_] => shared.opts.incoming_capacity.max(1),
            _ => 1,
        };
        let (tx, rx) = mpsc::channel(capacity);
        let (stop, stop_rx) = watch::channel(false);
        let receiver = session::Receiver::new(&shared, marks)?;
        let supervisor = tokio::spawn(session::supervise(
            Arc::clone(&shared),
            first,
            receiver,
            tx,
            stop_rx,
        ));
        Ok((
            Transport {
                shared,
                stop,
                supervisor,
            },
            rx,
        ))
    }

    /// Signs and publishes `msg` to `to`, and waits for the broker's confirm.
    ///
    /// The daemons send through their outbox, which keeps many messages in flight with
    /// [`Transport::publish`] and [`Transport::confirmed`]; this one-at-a-time form serves
    /// the transport's tests.
    #[cfg(test)]
    pub async fn send(&self, to: Dest, msg: &Message) -> Result<(), WireError> {
        let in_flight = self.publish(to, msg).await?;
        self.confirmed(in_flight).await
    }

    /// The first half of a send: signs `msg` with the next id and hands it to the broker
    /// (waiting for the connection up to `send_timeout`), without waiting for the confirm.
    /// Messages published one after the other reach the broker in that order;
    /// [`Transport::confirmed`] then waits for each confirm, so a sender can keep many
    /// messages in flight instead of one.
    ///
    /// Errors: [`WireError::WrongDirection`] for a message this role never sends there,
    /// [`WireError::TooLarge`] over `max_bytes`, [`WireError::NotConnected`] /
    /// [`WireError::Timeout`] when the broker stays away.
    pub async fn publish(&self, to: Dest, msg: &Message) -> Result<InFlight, WireError> {
        let shared = &self.shared;
        let kind = msg.kind();
        let address = to.address().to_owned();
        let dir = Direction::of_address(&address);
        if dir != shared.role.outbound() || !msg.travels(dir) {
            return Err(WireError::WrongDirection {
                role: shared.role.label(),
                kind,
                to: address,
            });
        }
        let body = msg
            .encode_body()
            .map_err(|source| WireError::Encode { kind, source })?;
        let deadline = Instant::now() + shared.opts.send_timeout;
        // Not held while sealing: a tree of megabytes takes seconds to sign on a slow
        // machine, and a fin_announce sent meanwhile by another task must not wait for it.
        let id = {
            let mut last = shared.seq.lock().await;
            let id = MessageId {
                epoch: shared.epoch,
                seq: last.saturating_add(1),
            };
            *last = id.seq;
            id
        };
        let header = Header {
            kind: kind.as_str().to_owned(),
            from: shared.role.name().to_owned(),
            to: address.clone(),
            id,
            ts_ms: now_ms(),
        };
        let payload = match &shared.pair {
            Some(pair) => envelope::seal_mac(pair, &header, &body)?,
            None => envelope::seal(&shared.opts.key, &header, &body)?,
        };
        if payload.len() > shared.opts.max_bytes {
            shared.counters.add_too_large_to_send();
            warn!(%kind, to = address, len = payload.len(), max = shared.opts.max_bytes,
                  "message over max_bytes: not sent");
            return Err(WireError::TooLarge {
                kind,
                to: address,
                len: payload.len(),
                max: shared.opts.max_bytes,
            });
        }
        let exchange = shared.role.exchange_for(kind);
        let confirm = self
            .put(kind, exchange, &address, &payload, deadline)
            .await?;
        Ok(InFlight {
            kind,
            exchange,
            address,
            id,
            payload,
            deadline,
            confirm,
        })
    }

    /// The second half of a send: waits for the confirm of a published message; when the
    /// connection lost it, or the broker nacked it (the transport then moves to the next
    /// node), publishes the same bytes again (after messages published since;
    /// receivers take whichever copy comes first and drop the other) and waits again.
    pub async fn confirmed(&self, in_flight: InFlight) -> Result<(), WireError> {
        let shared = &self.shared;
        let limit = shared.opts.send_timeout;
        let InFlight {
            kind,
            mut exchange,
            address,
            id,
            payload,
            deadline,
            mut confirm,
        } = in_flight;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, confirm).await {
                Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => {
                    shared.counters.add_sent(kind);
                    return Ok(());
                }
                Ok(Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))))
                    if exchange == ANNOUNCE_EXCHANGE =>
                {
                    // No announce queue bound for this key: a balancer of an earlier version,
                    // which consumes one queue only. The same bytes go by the main exchange.
                    debug!(%kind, to = address, "no announce queue bound; sending by the main exchange");
                    exchange = EXCHANGE;
                    let _order = shared.seq.lock().await;
                    confirm = self
                        .put(kind, exchange, &address, &payload, deadline)
                        .await?;
                }
                Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
                    shared.counters.add_unroutable();
                    warn!(%kind, routing_key = address, reply = %returned.reply_text,
                          "message unroutable: no queue bound to this key");
                    return Err(WireError::Unroutable {
                        routing_key: address,
                    });
                }
                Ok(Ok(Confirmation::Nack(None))) => {
                    shared.counters.add_confirm_failed();
                    warn!(%kind, routing_key = address, %id,
                          "broker nacked a message; publishing it again on the next node");
                    // Seen with quorum queues on RabbitMQ 3.10: a node that came back
                    // shortly before nacked every publish to one queue while the other
                    // nodes took them. Another connection (the next node) clears it; the
                    // same bytes again are taken once (the receivers' replay window).
                    shared.renew.notify_one();
                    pause_for_link(deadline).await;
                    let _order = shared.seq.lock().await;
                    confirm = self
                        .put(kind, exchange, &address, &payload, deadline)
                        .await?;
                }
                Ok(Err(e)) => {
                    shared.counters.add_confirm_failed();
                    debug!(error = %e, %kind, to = address, %id, "confirm lost; publishing the same message again");
                    pause_for_link(deadline).await;
                    let _order = shared.seq.lock().await;
                    confirm = self
                        .put(kind, exchange, &address, &payload, deadline)
                        .await?;
                }
                Err(_) => {
                    shared.counters.add_confirm_failed();
                    // A node that takes publishes and never confirms them serves no better
                    // than a dead one (seen with quorum queues on RabbitMQ 3.10 after a
                    // partition: one connection's confirms stopped while the others' went
                    // on): the connection moves to the next node.
                    warn!(%kind, to = address, %id,
                          "no publisher confirm within send_timeout; moving to the next node");
                    shared.renew.notify_one();
                    return Err(WireError::Timeout {
                        op: "publish confirm",
                        after: limit,
                    });
                }
            }
        }
    }

    /// Hands sealed bytes to the broker, waiting for a link and retrying a failed publish
    /// until `deadline`.
    async fn put(
        &self,
        kind: MessageType,
        exchange: &'static str,
        address: &str,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<lapin::PublisherConfirm, WireError> {
        let limit = self.shared.opts.send_timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(WireError::NotConnected { after: limit });
            }
            let channel = self.wait_link(deadline).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = channel.basic_publish(
                exchange.into(),
                address.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                payload,
                message_properties(),
            );
            let Ok(published) = tokio::time::timeout(remaining, attempt).await else {
                return Err(WireError::Timeout {
                    op: "publish",
                    after: limit,
                });
            };
            match published {
                Ok(confirm) => return Ok(confirm),
                Err(e) => {
                    debug!(error = %e, %kind, to = address, "publish failed; waiting for the link");
                    pause_for_link(deadline).await;
                }
            }
        }
    }

    /// The current publishing channel, waiting until `deadline` for one.
    async fn wait_link(&self, deadline: Instant) -> Result<Channel, WireError> {
        let mut rx = self.shared.link.subscribe();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let link = {
            let got = tokio::time::timeout(remaining, rx.wait_for(Option::is_some)).await;
            match got {
                Ok(Ok(link)) => link.clone(),
                _ => None,
            }
        };
        link.ok_or(WireError::NotConnected {
            after: self.shared.opts.send_timeout,
        })
    }

    /// `host:port` of the broker node the current connection goes to; `None` while there
    /// is none.
    pub fn broker_node(&self) -> Option<String> {
        if !self.is_connected() {
            return None;
        }
        self.shared.broker_node_of()
    }

    /// How many broker nodes are configured.
    pub fn broker_nodes(&self) -> usize {
        self.shared.uris.len()
    }

    /// Counters of this transport.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.shared
            .link
            .borrow()
            .as_ref()
            .is_some_and(|c| c.status().connected())
    }

    /// This run's epoch: the first part of the id of everything it sends.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// Reads the senders' keys again (the arbiter: `balancer_keys_dir`; a balancer's pin
    /// comes from its config and changes with a restart). Messages from then on are checked
    /// against the new keys. Call it on SIGHUP. Returns how many senders are accepted now.
    pub fn reload(&self) -> Result<usize, WireError> {
        let shared = &self.shared;
        let Some(dir) = &shared.opts.keys_dir else {
            return Ok(self.senders());
        };
        let next = options::load_balancers(dir, &shared.opts.key, shared.role.name())?;
        let n = next.len();
        *shared.senders.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        info!(dir = %dir.display(), balancers = n, "balancer keys reloaded");
        Ok(n)
    }

    /// How many senders this node accepts now.
    pub fn senders(&self) -> usize {
        self.shared.senders().len()
    }

    /// Each sender's clock offset against ours, as measured from its messages (see
    /// `skew.rs`); `warn` is set past ±1 s. For `/status`, a metric and `monitor`.
    pub fn clock_offsets(&self) -> Vec<PeerClock> {
        self.shared
            .clocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Messages waiting in this node's (main) queue at the broker, as of the last look
    /// (every `depth_interval`); `None` before the first.
    pub fn queue_depth(&self) -> Option<u64> {
        self.lane_depth(Lane::Main)
    }

    /// Messages waiting in the queue of `lane`, as of the last look; `None` before the first
    /// (or for a lane this role does not consume).
    pub fn lane_depth(&self, lane: Lane) -> Option<u64> {
        match self.shared.queue_depth[lane as usize].load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(n),
        }
    }

    /// Each queue this node consumes with its depth at the last look (lanes not looked at
    /// yet left out).
    pub fn queue_depths(&self) -> Vec<QueueDepth> {
        let role = &self.shared.role;
        role.lanes()
            .iter()
            .filter_map(|&lane| {
                self.lane_depth(lane).map(|depth| QueueDepth {
                    lane,
                    queue: role.lane_queue(lane),
                    depth,
                })
            })
            .collect()
    }

    /// What `/status` shows of the transport: epoch, senders accepted, queue depth, each
    /// sender's clock offset (and whether it warrants a warning), drops by reason.
    pub fn status_json(&self) -> serde_json::Value {
        let c = self.counters().snapshot();
        serde_json::json!({
            "epoch": self.epoch(),
            "broker_node": self.broker_node(),
            "broker_nodes": self.broker_nodes(),
            "queue_type": self.shared.opts.queue_type.as_str(),
            "senders": self.senders(),
            "queue_depth": self.queue_depth(),
            "queue_depths": self
                .queue_depths()
                .into_iter()
                .map(|q| (q.queue, serde_json::Value::from(q.depth)))
                .collect::<serde_json::Map<_, _>>(),
            "clock_offsets": self.clock_offsets(),
            "dropped": c
                .dropped
                .iter()
                .map(|(r, n)| ((*r).to_owned(), serde_json::Value::from(*n)))
                .collect::<serde_json::Map<_, _>>(),
            "too_large_to_send": c.too_large_to_send,
            "state_errors": c.state_errors,
        })
    }

    /// Stops consuming, closes the connection (within about a second) and ends the supervisor.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(session::CLOSE_WAIT * 2, self.supervisor)
            .await
            .is_err()
        {
            warn!("AMQP supervisor did not stop in time");
        }
    }
}

fn message_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2) // persistent: survives a broker restart in a durable queue
}

/// After a failed publish: pauses briefly (bounded by `deadline`) so the send loop does not
/// spin while the supervisor replaces the connection.
async fn pause_for_link(deadline: Instant) {
    let pause = session::RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::sleep(pause).await;
}

/// Wall clock, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
