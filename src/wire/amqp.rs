//! RabbitMQ transport (AMQP 0-9-1 over lapin): topology, signed sends with publisher confirms,
//! verified receives, reconnection.
//!
//! # Broker layout (docs/wire-protocol.md)
//!
//! ```text
//!                        exchange "ipvs" (direct, durable)
//!   client ──key "lbs"──▶ ┤ "lbs" ─────────────▶ queue "lbs" (durable) ──▶ arbiter
//!   arbiter ─key HOST───▶ ┤ HOST, "broadcast" ─▶ queue "ipvs-sync.HOST" (durable) ──▶ client HOST
//!   arbiter ─"broadcast"▶ ┘   (every client queue is bound to "broadcast")
//! ```
//!
//! A client queue is bounded ([`super::queue_args`]): messages live at most `max_age`, at
//! most `queue_max_length` of them (the oldest dropped first), and the queue goes after
//! `queue_expires` without a consumer.
//!
//! Both sides publish persistent messages with `mandatory` set and publisher confirms on:
//! [`Transport::publish`] hands a message to the broker, [`Transport::confirmed`] returns `Ok`
//! only once the broker has taken it into a queue (and, the queues being durable, to disk).
//! The daemons' outbox keeps many messages between the two, so none waits for the confirm of
//! the one before. A message no queue is bound for comes back as [`WireError::Unroutable`]
//! and is counted.
//!
//! # Tasks
//!
//! ```text
//!   Transport::publish ──seal──▶ publish channel ──▶ broker ──confirm──▶ Transport::confirmed
//!                       ▲ (link: watch<Option<Channel>>, set per connection)
//!   supervisor task ────┘
//!     │ connect · declare · bind · consume          (re)connect with backoff
//!     ▼
//!   consumer stream ──verify─▶ typed Message ──▶ mpsc (bounded) ──▶ daemon
//!         │ drop + count (by reason)            │ then ack: at most `prefetch` unacked
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
//! Delivery is at least once: a publish whose confirm was lost with the connection is sealed
//! again (with a new seq) and republished, so a receiver may see a message twice. Every
//! message type is idempotent at the daemons (trees and plans carry serials; announces are
//! per-VIP state).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{Stream, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::counters::Counters;
use super::envelope::{self, DropReason, FieldError, Header, Key, Policy, SealError, Verifier};
use super::messages::{Direction, Message, MessageType, SchemaError, SERVER_ADDRESS};
use super::queue_args::QueueLimits;

/// The exchange every message goes through.
pub const EXCHANGE: &str = "ipvs";
/// The arbiter's queue (and the routing key clients publish with).
pub const SERVER_QUEUE: &str = SERVER_ADDRESS;
/// Routing key (and `to`) of messages for every client.
pub const BROADCAST: &str = "broadcast";
/// Prefix of a client's queue name: `ipvs-sync.<hostname>`.
pub const CLIENT_QUEUE_PREFIX: &str = "ipvs-sync.";

/// How often the consumer loop looks at the connection's state.
const HEALTH_TICK: Duration = Duration::from_millis(500);
/// Pause between publish attempts when the link is down and lapin could not recover.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for a clean `connection.close` on shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// At most one drop log line per reason per this interval; the rest are counted.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Which side of the broker this transport serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The arbiter: consumes `lbs`, sends to clients and `broadcast`.
    Server {
        /// The arbiter's identity (`from` of what it sends).
        name: String,
    },
    /// A balancer: consumes `ipvs-sync.<hostname>` (bound to `<hostname>` and `broadcast`),
    /// sends to the arbiter.
    Client {
        /// The balancer's hostname: its identity and routing key.
        hostname: String,
    },
}

impl Role {
    /// This node's identity.
    pub fn name(&self) -> &str {
        match self {
            Role::Server { name } => name,
            Role::Client { hostname } => hostname,
        }
    }

    /// The queue this node consumes.
    pub fn queue(&self) -> String {
        match self {
            Role::Server { .. } => SERVER_QUEUE.to_owned(),
            Role::Client { hostname } => format!("{CLIENT_QUEUE_PREFIX}{hostname}"),
        }
    }

    /// Routing keys bound to [`Role::queue`].
    pub fn bindings(&self) -> Vec<String> {
        match self {
            Role::Server { .. } => vec![SERVER_QUEUE.to_owned()],
            Role::Client { hostname } => vec![hostname.clone(), BROADCAST.to_owned()],
        }
    }

    /// The direction of what this node sends.
    fn outbound(&self) -> Direction {
        match self {
            Role::Server { .. } => Direction::ToClient,
            Role::Client { .. } => Direction::ToServer,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Role::Server { .. } => "server",
            Role::Client { .. } => "client",
        }
    }

    fn check(&self) -> Result<(), WireError> {
        let name = self.name();
        let field = |e: FieldError| WireError::Identity {
            name: name.to_owned(),
            reason: e.to_string(),
        };
        check_identity(name).map_err(field)?;
        if let Role::Client { hostname } = self {
            if hostname == SERVER_QUEUE || hostname == BROADCAST {
                return Err(WireError::Identity {
                    name: name.to_owned(),
                    reason: format!("`{SERVER_QUEUE}` and `{BROADCAST}` are reserved routing keys"),
                });
            }
        }
        Ok(())
    }
}

fn check_identity(name: &str) -> Result<(), FieldError> {
    // Same rule as an envelope's `from`, and short enough for a queue name (255 bytes).
    let ok = !name.is_empty()
        && name.len() <= envelope::MAX_FIELD_LEN - CLIENT_QUEUE_PREFIX.len()
        && name.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(FieldError { field: "from" })
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// The arbiter (routing key `lbs`).
    Server,
    /// One client, by hostname.
    Client(String),
    /// Every client.
    Broadcast,
}

impl Dest {
    /// The routing key, which is also the envelope's `to`.
    pub fn address(&self) -> &str {
        match self {
            Dest::Server => SERVER_QUEUE,
            Dest::Client(host) => host,
            Dest::Broadcast => BROADCAST,
        }
    }
}

/// A message handed to the broker, its confirm not yet in: see [`Transport::publish`].
pub struct InFlight {
    kind: MessageType,
    address: String,
    body: Box<serde_json::value::RawValue>,
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
}

/// Tunables of a [`Transport`].
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// HMAC key for signing and verifying (`message_key`).
    pub key: Key,
    /// Broker password to use when the URL carries none (`amqp_password`).
    pub password: Option<String>,
    /// Accepted `|now − ts|` of received messages.
    pub max_age: Duration,
    /// Largest accepted message, in bytes.
    pub max_bytes: usize,
    /// `x-max-length` of a balancer's queue ([`super::queue_args`]).
    pub queue_max_length: u32,
    /// `x-expires` of a balancer's queue.
    pub queue_expires: Duration,
    /// Unacknowledged deliveries the broker may push ahead (`basic.qos`).
    pub prefetch: u16,
    /// Capacity of the channel of verified messages handed to the daemon.
    pub incoming_capacity: usize,
    /// How long a send may wait for a connection and its confirm.
    pub send_timeout: Duration,
    /// How long one connection attempt (connect, declare, bind, consume) may take.
    pub connect_timeout: Duration,
    /// AMQP heartbeat in seconds, unless the URL sets `?heartbeat=`.
    pub heartbeat_s: u16,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
}

impl TransportOptions {
    /// Defaults: 30 s window, 32 MiB messages, prefetch 64, 1024 queued, 10 s timeouts,
    /// 10 s heartbeat, reconnect every 0.2 s doubling to 5 s.
    pub fn new(key: Key) -> Self {
        TransportOptions {
            key,
            password: None,
            max_age: Duration::from_secs(30),
            max_bytes: 32 << 20,
            queue_max_length: 50_000,
            queue_expires: Duration::from_secs(24 * 3600),
            prefetch: 64,
            incoming_capacity: 1024,
            send_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            heartbeat_s: 10,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

/// A verified, typed message from the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// Sender's identity.
    pub from: String,
    /// Addressee as sent (`lbs`, this hostname or `broadcast`).
    pub to: String,
    /// Sender's sequence number.
    pub seq: u64,
    /// Sender's timestamp, ms since the epoch.
    pub ts_ms: u64,
    /// The message.
    pub message: Message,
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
    /// The broker refused or dropped the connection or a declaration.
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
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
    /// No queue is bound to the routing key (e.g. the client's queue does not exist yet).
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

/// State shared by the handle and the supervisor task.
struct Shared {
    role: Role,
    uri: AMQPUri,
    opts: TransportOptions,
    counters: Counters,
    /// Last seq used; held across seal + publish so seqs reach the broker in order.
    seq: Mutex<u64>,
    /// The publishing channel of the current connection, `None` while there is none.
    link: watch::Sender<Option<Channel>>,
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
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Connects to `url` (`amqp://` or `amqps://`), declares the exchange, this role's queue and
    /// bindings, and starts consuming. Fails if that first attempt fails (bad URL, refused,
    /// bad credentials, timeout), so a misconfiguration shows at start; once connected, losses
    /// are repaired in the background for as long as the transport lives.
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
        let uri = prepare_uri(url, opts.password.as_deref(), opts.heartbeat_s, connect_ms)?;
        let (link, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            role,
            uri,
            counters: Counters::default(),
            seq: Mutex::new(0),
            link,
            opts,
        });
        let session = tokio::time::timeout(shared.opts.connect_timeout, establish(&shared))
            .await
            .map_err(|_| WireError::Timeout {
                op: "connect",
                after: shared.opts.connect_timeout,
            })??;
        info!(role = shared.role.label(), name = shared.role.name(),
              host = %shared.uri.authority.host, queue = %shared.role.queue(), "AMQP connected");
        let (tx, rx) = mpsc::channel(shared.opts.incoming_capacity.max(1));
        let (stop, stop_rx) = watch::channel(false);
        let verifier = Verifier::new(
            shared.opts.key.clone(),
            Policy {
                max_bytes: shared.opts.max_bytes,
                max_age_ms: u64::try_from(shared.opts.max_age.as_millis()).unwrap_or(u64::MAX),
                accept_to: match &shared.role {
                    Role::Server { .. } => vec![SERVER_QUEUE.to_owned()],
                    Role::Client { hostname } => vec![hostname.clone(), BROADCAST.to_owned()],
                },
            },
        );
        let supervisor = tokio::spawn(supervise(
            Arc::clone(&shared),
            session,
            verifier,
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
    /// During an outage it waits for the connection (up to `send_timeout`) and republishes a
    /// message whose confirm was lost. Errors: [`WireError::Unroutable`] when no queue is bound
    /// to the key, [`WireError::NotConnected`]/[`WireError::Timeout`] when the broker stays
    /// away, [`WireError::WrongDirection`] for a message this role never sends there.
    ///
    /// The daemons send through their outbox, which keeps many messages in flight with
    /// [`Transport::publish`] and [`Transport::confirmed`]; this one-at-a-time form serves
    /// the transport's tests.
    #[cfg(test)]
    pub async fn send(&self, to: Dest, msg: &Message) -> Result<(), WireError> {
        let in_flight = self.publish(to, msg).await?;
        self.confirmed(in_flight).await
    }

    /// The first half of a send: signs and hands `msg` to the broker (waiting
    /// for the connection up to `send_timeout`) and returns without waiting for the
    /// confirm. Messages published one after the other reach the broker in that order;
    /// [`Transport::confirmed`] then waits for each confirm, so a sender can keep many
    /// messages in flight instead of one.
    pub async fn publish(&self, to: Dest, msg: &Message) -> Result<InFlight, WireError> {
        let kind = msg.kind();
        let address = to.address().to_owned();
        let dir = Direction::of_address(&address);
        if dir != self.shared.role.outbound() || !msg.travels(dir) {
            return Err(WireError::WrongDirection {
                role: self.shared.role.label(),
                kind,
                to: address,
            });
        }
        let body = msg
            .encode_body()
            .map_err(|source| WireError::Encode { kind, source })?;
        let deadline = Instant::now() + self.shared.opts.send_timeout;
        let confirm = self.put(kind, &address, &body, deadline).await?;
        Ok(InFlight {
            kind,
            address,
            body,
            deadline,
            confirm,
        })
    }

    /// The second half of a send: waits for the confirm of a published message;
    /// when the connection lost it, republishes the message (after messages published
    /// since, which the receivers' serial and state checks absorb) and waits again.
    pub async fn confirmed(&self, in_flight: InFlight) -> Result<(), WireError> {
        let shared = &self.shared;
        let limit = shared.opts.send_timeout;
        let InFlight {
            kind,
            address,
            body,
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
                    warn!(%kind, routing_key = address, "broker nacked a message");
                    return Err(WireError::Nacked {
                        routing_key: address,
                    });
                }
                Ok(Err(e)) => {
                    shared.counters.add_confirm_failed();
                    debug!(error = %e, %kind, to = address, "confirm lost; republishing");
                    pause_for_link(deadline).await;
                    confirm = self.put(kind, &address, &body, deadline).await?;
                }
                Err(_) => {
                    shared.counters.add_confirm_failed();
                    return Err(WireError::Timeout {
                        op: "publish confirm",
                        after: limit,
                    });
                }
            }
        }
    }

    /// Hands a sealed message to the broker, waiting for a link and retrying a failed
    /// publish until `deadline`.
    async fn put(
        &self,
        kind: MessageType,
        address: &str,
        body: &serde_json::value::RawValue,
        deadline: Instant,
    ) -> Result<lapin::PublisherConfirm, WireError> {
        let limit = self.shared.opts.send_timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(WireError::NotConnected { after: limit });
            }
            let channel = self.wait_link(deadline).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = self.publish_once(&channel, kind, address, body);
            let Ok(published) = tokio::time::timeout(remaining, attempt).await else {
                return Err(WireError::Timeout {
                    op: "publish",
                    after: limit,
                });
            };
            match published? {
                Ok(confirm) => return Ok(confirm),
                Err(e) => {
                    debug!(error = %e, %kind, to = address, "publish failed; waiting for the link");
                    pause_for_link(deadline).await;
                }
            }
        }
    }

    /// Seals with the next seq and hands the message to lapin, holding the seq lock so seqs
    /// reach the broker in order. The seq is spent even if the publish fails (gaps are fine,
    /// reuse is not).
    async fn publish_once(
        &self,
        channel: &Channel,
        kind: MessageType,
        address: &str,
        body: &serde_json::value::RawValue,
    ) -> Result<Result<lapin::PublisherConfirm, lapin::Error>, WireError> {
        let shared = &self.shared;
        let mut last = shared.seq.lock().await;
        let seq = last.saturating_add(1).max(now_us());
        *last = seq;
        let header = Header {
            kind: kind.as_str().to_owned(),
            from: shared.role.name().to_owned(),
            to: address.to_owned(),
            seq,
            ts_ms: now_ms(),
        };
        let payload = envelope::seal(&shared.opts.key, &header, body)?;
        Ok(channel
            .basic_publish(
                EXCHANGE.into(),
                address.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &payload,
                message_properties(),
            )
            .await)
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

    /// Stops consuming, closes the connection (within about a second) and ends the supervisor.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(CLOSE_WAIT * 2, self.supervisor)
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
    let pause = RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::sleep(pause).await;
}

/// Parses the URL, fills in the password from `secret.ini` when the URL has none, and sets
/// the heartbeat unless the URL does.
fn prepare_uri(
    url: &str,
    password: Option<&str>,
    heartbeat_s: u16,
    connect_timeout_ms: u64,
) -> Result<AMQPUri, WireError> {
    let mut uri: AMQPUri = url.parse().map_err(|reason| WireError::Url { reason })?;
    if let Some(password) = password {
        if !url_has_password(url) {
            uri.authority.userinfo.password = password.to_owned();
        }
    }
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(heartbeat_s);
    }
    if uri.query.connection_timeout.is_none() {
        // Bounds each TCP connect lapin makes, so a black-holed broker costs seconds, not
        // the kernel's SYN retry minutes.
        uri.query.connection_timeout = Some(connect_timeout_ms);
    }
    Ok(uri)
}

/// Whether the authority of `url` has a `user:password@` part.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// One connection with its channels, consumer and event stream.
struct Session {
    conn: Connection,
    publish: Channel,
    /// Kept open: the consumer lives on this channel.
    _consume: Channel,
    consumer: Consumer,
    /// lapin's connection events (errors end the session).
    events: Pin<Box<dyn Stream<Item = lapin::Event> + Send>>,
}

/// Connects and sets up the role's topology; closes the connection again if a step fails.
async fn establish(shared: &Shared) -> Result<Session, WireError> {
    // No `enable_auto_recover`: see "Reconnection" in the module doc.
    let props = ConnectionProperties::default().with_connection_name(
        format!("ipvs-sync {} {}", shared.role.label(), shared.role.name()).into(),
    );
    let conn = Connection::connect_uri(shared.uri.clone(), props).await?;
    match setup(shared, &conn).await {
        Ok((publish, consume, consumer)) => {
            let events = Box::pin(conn.events_listener());
            Ok(Session {
                conn,
                publish,
                _consume: consume,
                consumer,
                events,
            })
        }
        Err(e) => {
            let _ = tokio::time::timeout(CLOSE_WAIT, conn.close(200, "setup failed".into())).await;
            Err(e.into())
        }
    }
}

async fn setup(
    shared: &Shared,
    conn: &Connection,
) -> Result<(Channel, Channel, Consumer), lapin::Error> {
    let publish = conn.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consume = conn.create_channel().await?;
    consume
        .basic_qos(shared.opts.prefetch.max(1), BasicQosOptions::default())
        .await?;
    consume
        .exchange_declare(
            EXCHANGE.into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let queue = shared.role.queue();
    let arguments = match shared.role {
        Role::Server { .. } => FieldTable::default(),
        Role::Client { .. } => QueueLimits {
            message_ttl: shared.opts.max_age,
            max_length: shared.opts.queue_max_length,
            expires: shared.opts.queue_expires,
        }
        .arguments(),
    };
    consume
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    for key in shared.role.bindings() {
        consume
            .queue_bind(
                queue.as_str().into(),
                EXCHANGE.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let consumer = consume
        .basic_consume(
            queue.as_str().into(),
            format!("ipvs-sync.{}.{}", shared.role.name(), std::process::id()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((publish, consume, consumer))
}

/// Why a connection's consumer loop ended.
enum PumpEnd {
    /// `close()` was called or the handle dropped.
    Stop,
    /// The daemon dropped the receiver.
    ReceiverGone,
    /// The connection is gone and lapin could not bring it back.
    Lost(String),
}

/// Owns the connection: runs the consumer loop and, when the connection is lost, builds a
/// new one with backoff until it succeeds or the transport stops.
async fn supervise(
    shared: Arc<Shared>,
    first: Session,
    mut verifier: Verifier,
    tx: mpsc::Sender<Incoming>,
    mut stop: watch::Receiver<bool>,
) {
    let mut session = Some(first);
    let mut drops = DropLog::default();
    let mut backoff = shared.opts.reconnect_min;
    loop {
        if let Some(mut s) = session.take() {
            shared.link.send_replace(Some(s.publish.clone()));
            let end = pump(&shared, &mut s, &mut verifier, &mut drops, &tx, &mut stop).await;
            shared.link.send_replace(None);
            let _ = tokio::time::timeout(CLOSE_WAIT, s.conn.close(200, "bye".into())).await;
            match end {
                PumpEnd::Stop => {
                    info!("AMQP transport closed");
                    return;
                }
                PumpEnd::ReceiverGone => {
                    info!("AMQP receiver dropped; transport stops consuming");
                    return;
                }
                PumpEnd::Lost(reason) => {
                    warn!(%reason, "AMQP connection lost; reconnecting");
                }
            }
            backoff = shared.opts.reconnect_min;
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        let attempt = tokio::time::timeout(shared.opts.connect_timeout, establish(&shared));
        let result = tokio::select! {
            _ = stop.changed() => return,
            r = attempt => r,
        };
        match result {
            Ok(Ok(s)) => {
                shared.counters.add_reconnect();
                info!(queue = %shared.role.queue(), "AMQP reconnected");
                session = Some(s);
            }
            Ok(Err(e)) => {
                warn!(error = %e, retry_in = ?backoff, "AMQP reconnect failed");
                backoff = (backoff * 2).min(shared.opts.reconnect_max);
            }
            Err(_) => {
                warn!(retry_in = ?backoff, "AMQP reconnect timed out");
                backoff = (backoff * 2).min(shared.opts.reconnect_max);
            }
        }
    }
}

/// Consumes one connection until it is lost or the transport stops.
///
/// Any sign of loss ends the session: a consumer error or end, a connection error event, or
/// the connection found not open on a periodic look (which also catches a broker that went
/// silent: lapin fails the connection when AMQP heartbeats stop).
async fn pump(
    shared: &Shared,
    s: &mut Session,
    verifier: &mut Verifier,
    drops: &mut DropLog,
    tx: &mpsc::Sender<Incoming>,
    stop: &mut watch::Receiver<bool>,
) -> PumpEnd {
    let mut tick = tokio::time::interval(HEALTH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events_open = true;
    loop {
        let next = tokio::select! {
            _ = stop.changed() => return PumpEnd::Stop,
            event = s.events.next(), if events_open => {
                match event {
                    Some(lapin::Event::Error(e)) => return PumpEnd::Lost(e.to_string()),
                    Some(other) => debug!(event = ?other, "AMQP connection event"),
                    None => events_open = false,
                }
                continue;
            }
            _ = tick.tick() => {
                if !s.conn.status().connected() {
                    return PumpEnd::Lost("connection no longer open".to_owned());
                }
                continue;
            }
            next = s.consumer.next() => next,
        };
        match next {
            None => return PumpEnd::Lost("consumer cancelled".to_owned()),
            Some(Err(e)) => return PumpEnd::Lost(e.to_string()),
            Some(Ok(delivery)) => {
                if let Some(incoming) = admit(shared, verifier, drops, &delivery.data) {
                    // Hand over before acking: with a full channel the broker stops after
                    // `prefetch` unacked deliveries instead of us buffering without bound.
                    tokio::select! {
                        _ = stop.changed() => return PumpEnd::Stop,
                        r = tx.send(incoming) => if r.is_err() {
                            return PumpEnd::ReceiverGone;
                        },
                    }
                }
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    // The connection is going; the broker requeues and the replay check
                    // drops what was already handed over.
                    debug!(error = %e, "ack failed");
                }
            }
        }
    }
}

/// Verifies and decodes one delivery; counts and logs what it drops.
fn admit(
    shared: &Shared,
    verifier: &mut Verifier,
    drops: &mut DropLog,
    data: &[u8],
) -> Option<Incoming> {
    let opened = match verifier.verify(data, now_ms()) {
        Ok(opened) => opened,
        Err(reject) => {
            let reason = reject.reason();
            shared.counters.add_dropped(reason);
            drops.log(reason, &reject);
            return None;
        }
    };
    let h = opened.header;
    match Message::decode(&h.kind, Direction::of_address(&h.to), opened.body) {
        Ok(message) => {
            shared.counters.add_received(message.kind());
            Some(Incoming {
                from: h.from,
                to: h.to,
                seq: h.seq,
                ts_ms: h.ts_ms,
                message,
            })
        }
        Err(e) => {
            shared.counters.add_dropped(DropReason::Schema);
            drops.log(
                DropReason::Schema,
                &SchemaDrop {
                    from: &h.from,
                    error: &e,
                },
            );
            None
        }
    }
}

struct SchemaDrop<'a> {
    from: &'a str,
    error: &'a SchemaError,
}

impl std::fmt::Display for SchemaDrop<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "from {}: {}", self.from, self.error)
    }
}

/// Rate limit for drop logs: a flood of garbage costs counters, not log volume.
#[derive(Default)]
struct DropLog {
    last: [Option<Instant>; DropReason::ALL.len()],
    suppressed: [u64; DropReason::ALL.len()],
}

impl DropLog {
    fn log(&mut self, reason: DropReason, what: &dyn std::fmt::Display) {
        let i = reason.index();
        let now = Instant::now();
        if self.last[i].is_some_and(|t| now.duration_since(t) < DROP_LOG_INTERVAL) {
            self.suppressed[i] += 1;
            return;
        }
        let suppressed = std::mem::take(&mut self.suppressed[i]);
        self.last[i] = Some(now);
        warn!(%reason, suppressed, "dropped message: {what}");
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_comes_from_secret_ini_only_when_the_url_has_none() {
        let uri = prepare_uri("amqp://ipvs@192.0.2.1:5672/%2f", Some("s3cret"), 10, 7000).unwrap();
        assert_eq!(uri.authority.userinfo.username, "ipvs");
        assert_eq!(uri.authority.userinfo.password, "s3cret");
        assert_eq!(uri.query.heartbeat, Some(10));
        assert_eq!(uri.query.connection_timeout, Some(7000));
        let uri = prepare_uri(
            "amqp://ipvs:inurl@192.0.2.1/?heartbeat=3&connection_timeout=50",
            Some("s3cret"),
            10,
            7000,
        )
        .unwrap();
        assert_eq!(uri.authority.userinfo.password, "inurl");
        assert_eq!(uri.query.heartbeat, Some(3));
        assert_eq!(uri.query.connection_timeout, Some(50));
        assert!(matches!(
            prepare_uri("http//nope", None, 10, 7000),
            Err(WireError::Url { .. })
        ));
    }

    #[test]
    fn url_password_detection() {
        assert!(url_has_password("amqp://u:p@h/v"));
        assert!(url_has_password("amqps://u:@h"));
        assert!(!url_has_password("amqp://u@h:5672/v"));
        assert!(!url_has_password("amqp://h:5672/v"));
        assert!(!url_has_password("amqp://h/v?x=a:b@c"));
    }

    #[test]
    fn roles_map_to_the_documented_topology() {
        let c = Role::Client {
            hostname: "lb1.example.net".into(),
        };
        assert_eq!(c.queue(), "ipvs-sync.lb1.example.net");
        assert_eq!(c.bindings(), ["lb1.example.net", "broadcast"]);
        let s = Role::Server {
            name: "arbiter".into(),
        };
        assert_eq!(s.queue(), "lbs");
        assert_eq!(s.bindings(), ["lbs"]);
        assert_eq!(Dest::Client("lb1".into()).address(), "lb1");
        assert_eq!(Dest::Broadcast.address(), "broadcast");
        assert_eq!(Dest::Server.address(), "lbs");
    }

    #[test]
    fn reserved_or_malformed_names_are_refused() {
        for bad in ["lbs", "broadcast", "", "has space", "a\nb"] {
            let r = Role::Client {
                hostname: bad.into(),
            };
            assert!(
                matches!(r.check(), Err(WireError::Identity { .. })),
                "{bad:?}"
            );
        }
        let long = "x".repeat(250);
        assert!(Role::Server { name: long }.check().is_err());
        assert!(Role::Client {
            hostname: "lb1.example.net".into()
        }
        .check()
        .is_ok());
    }

    #[test]
    fn drop_log_rate_limits_per_reason() {
        let mut log = DropLog::default();
        for _ in 0..1000 {
            log.log(DropReason::Malformed, &"x");
        }
        log.log(DropReason::Forged, &"y");
        assert_eq!(log.suppressed[DropReason::Malformed.index()], 999);
        assert_eq!(log.suppressed[DropReason::Forged.index()], 0);
    }
}
