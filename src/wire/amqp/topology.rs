//! The broker objects of each role: names, queue arguments, and their declaration, with the
//! broker's refusals turned into errors that say what to do.
//!
//! ```text
//!                        exchange "ipvs-sync" (topic, durable; the arbiter declares it)
//!   balancer ─key "lbs"─▶ ┤ "lbs" ─────────────▶ queue "lbs" ──▶ arbiter (exclusive consumer)
//!   arbiter ─key HOST───▶ ┤ HOST, "broadcast" ─▶ queue "ipvs-sync.HOST" ──▶ balancer HOST (exclusive)
//!   arbiter ─"broadcast"▶ ┘   (every balancer queue is bound to "broadcast")
//!
//!                        exchange "ipvs-sync.announce" (topic, durable; the arbiter declares it)
//!   arbiter ─key HOST───▶ ┤ HOST, "broadcast" ─▶ queue "ipvs-sync-announce.HOST" ──▶ balancer HOST
//!   arbiter ─"broadcast"▶ ┘                       (exclusive, a consumer of its own)
//! ```
//!
//! # Two lanes to a balancer
//!
//! What the arbiter sends a balancer travels in one of two [`Lane`]s, by type: the
//! **announce** lane (`syn_announce`, `ack_announce`, `fin_announce`, `drain`, and `mapping`,
//! which decides which VIPs a balancer may take and so must not fall behind a `syn_announce`)
//! and the **main** lane (trees, `changes`, `services`, heartbeats, `sync`, `execute`). Each
//! lane has its own exchange, queue and consumer on the balancer, so a `fin_announce` never
//! waits behind a `tree` of megabytes: not in the broker's queue, not in the consumer's
//! prefetch window, not while that tree's signature is checked and its JSON decoded. Within a
//! lane the order is the arbiter's (a `changes` never overtakes the `tree` it follows; a VIP's
//! `fin_announce` never overtakes its `syn_announce`). Both lanes take the same routing keys,
//! so the topic permissions of the two exchanges are the same. The arbiter's own queue `lbs`
//! is one lane: what balancers send is small.
//!
//! The exchange is a topic exchange so that RabbitMQ's topic permissions (which apply to topic
//! exchanges only) can limit each broker user to its own routing keys; its name differs from
//! the direct exchange `ipvs` of earlier versions because an existing exchange cannot be
//! declared again with another type. Routing keys are used whole (node names contain no `*`
//! or `#`), so a binding matches exactly one key.
//!
//! Every queue is durable and bounded, so a balancer that is gone for good costs the broker a
//! bounded amount, never its memory alarm (which would block every publisher, withdraws too):
//!
//! | argument | balancer queue | `lbs` | why |
//! |---|---|---|---|
//! | `x-message-ttl` | `max_age` | `max_age` | a message that waited longer reaches nobody: freshness by RabbitMQ's clock, not by comparing two hosts' |
//! | `x-max-length` | `queue_max_length` (50,000) | 200,000 | well above what one balancer is sent within `max_age` (a fleet-wide withdraw of 10,000 VIPs is 10,000 `fin_announce`), resp. what 1,000 balancers send the arbiter |
//! | `x-max-length-bytes` | 4 × `max_bytes` | 16 × `max_bytes` | a few of the largest messages (whole trees) fit; memory stays bounded whatever the count |
//! | `x-overflow` | `drop-head` | `drop-head` | the oldest goes first; the daemons' periodic requests and heartbeats repair a gap |
//! | `x-expires` | `queue_expires` (1 day) | — | the queue of a balancer that consumed nothing for that long goes; the arbiter's stays |
//!
//! The balancer's two are `[messages] queue_max_length` and `queue_expires`
//! ([`QueueLimits`]); the rest follows from `max_age` and `max_bytes`.
//!
//! A queue declared earlier with other arguments makes RabbitMQ refuse the declaration
//! (`PRECONDITION_FAILED`); [`WireError::QueueArguments`] says how to delete it.

use std::time::Duration;

use config::QueueType;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongLongInt, ShortString};
use lapin::Channel;

use super::WireError;
use crate::wire::envelope::MAX_FIELD_LEN;
use crate::wire::keys::valid_node_name;
use crate::wire::messages::{Direction, MessageType, BROADCAST, SERVER_ADDRESS};

/// The exchange of the main lane (and of everything balancers send).
pub const EXCHANGE: &str = "ipvs-sync";
/// The exchange of the announce lane (arbiter → balancers).
pub const ANNOUNCE_EXCHANGE: &str = "ipvs-sync.announce";
/// The arbiter's queue (and the routing key balancers publish with).
pub const SERVER_QUEUE: &str = SERVER_ADDRESS;
/// Prefix of a balancer's queue name: `ipvs-sync.<hostname>`.
pub const CLIENT_QUEUE_PREFIX: &str = "ipvs-sync.";
/// Prefix of a balancer's announce-lane queue: `ipvs-sync-announce.<hostname>` (no node name
/// makes a main queue of that name: those all start with `ipvs-sync.`).
pub const ANNOUNCE_QUEUE_PREFIX: &str = "ipvs-sync-announce.";

/// Which of a balancer's two queues a message from the arbiter travels in (see the module
/// doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Trees, `changes`, `services`, heartbeats, `sync`, `execute`; and all that balancers
    /// send.
    Main,
    /// `syn_announce`, `ack_announce`, `fin_announce`, `drain`, `mapping`.
    Announce,
}

impl Lane {
    /// Both lanes.
    pub const ALL: [Lane; 2] = [Lane::Main, Lane::Announce];

    /// The lane of a message type.
    pub fn of(kind: MessageType) -> Lane {
        match kind {
            MessageType::SynAnnounce
            | MessageType::AckAnnounce
            | MessageType::FinAnnounce
            | MessageType::Drain
            | MessageType::Mapping => Lane::Announce,
            MessageType::Heartbeat
            | MessageType::Tree
            | MessageType::Changes
            | MessageType::Services
            | MessageType::Sync
            | MessageType::Execute
            | MessageType::Announces => Lane::Main,
        }
    }

    /// Its exchange.
    pub fn exchange(self) -> &'static str {
        match self {
            Lane::Main => EXCHANGE,
            Lane::Announce => ANNOUNCE_EXCHANGE,
        }
    }

    /// `main` or `announce` (the `lane` label of the queue depth metric).
    pub fn label(self) -> &'static str {
        match self {
            Lane::Main => "main",
            Lane::Announce => "announce",
        }
    }
}

/// Default `x-max-length` of a balancer's queue (`[messages] queue_max_length`).
pub const CLIENT_QUEUE_MAX_LENGTH: u32 = 50_000;
/// `x-max-length` of `lbs`.
pub const SERVER_QUEUE_MAX_LENGTH: i64 = 200_000;
/// Default `x-expires` of a balancer's queue (`[messages] queue_expires`).
pub const CLIENT_QUEUE_EXPIRES: Duration = Duration::from_secs(24 * 3600);

/// What a role's queue is declared with (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Quorum (replicated) or classic (`amqp_queue_type`).
    pub queue_type: QueueType,
    /// `x-message-ttl` of every queue (`max_age`).
    pub max_age: Duration,
    /// Largest message (`max_bytes`): the queues' byte bounds are multiples of it.
    pub max_bytes: usize,
    /// `x-max-length` of a balancer's queue (`queue_max_length`).
    pub client_max_length: u32,
    /// `x-expires` of a balancer's queue (`queue_expires`).
    pub client_expires: Duration,
}

impl QueueLimits {
    /// `max_age` and `max_bytes` with the default balancer queue bounds.
    pub fn new(max_age: Duration, max_bytes: usize) -> Self {
        QueueLimits {
            queue_type: QueueType::Classic,
            max_age,
            max_bytes,
            client_max_length: CLIENT_QUEUE_MAX_LENGTH,
            client_expires: CLIENT_QUEUE_EXPIRES,
        }
    }
}

/// Which side of the broker a transport serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The arbiter: consumes `lbs`, sends to balancers and `broadcast`.
    Server {
        /// The arbiter's identity (`from` of what it sends; the balancers'
        /// `arbiter_name`).
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

    /// The queue this node consumes (a balancer: that of the main lane).
    pub fn queue(&self) -> String {
        self.lane_queue(Lane::Main)
    }

    /// The lanes this node consumes, each from a queue of its own: a balancer both, the
    /// arbiter the main one.
    pub fn lanes(&self) -> &'static [Lane] {
        match self {
            Role::Server { .. } => &[Lane::Main],
            Role::Client { .. } => &Lane::ALL,
        }
    }

    /// The queue of `lane` (the arbiter has only `lbs`).
    pub fn lane_queue(&self, lane: Lane) -> String {
        match (self, lane) {
            (Role::Server { .. }, _) => SERVER_QUEUE.to_owned(),
            (Role::Client { hostname }, Lane::Main) => format!("{CLIENT_QUEUE_PREFIX}{hostname}"),
            (Role::Client { hostname }, Lane::Announce) => {
                format!("{ANNOUNCE_QUEUE_PREFIX}{hostname}")
            }
        }
    }

    /// The exchange a message of `kind` leaves by: the arbiter sends by lane, a balancer
    /// always by the main exchange.
    pub fn exchange_for(&self, kind: MessageType) -> &'static str {
        match self {
            Role::Server { .. } => Lane::of(kind).exchange(),
            Role::Client { .. } => EXCHANGE,
        }
    }

    /// Routing keys bound to [`Role::queue`].
    pub fn bindings(&self) -> Vec<String> {
        match self {
            Role::Server { .. } => vec![SERVER_QUEUE.to_owned()],
            Role::Client { hostname } => vec![hostname.clone(), BROADCAST.to_owned()],
        }
    }

    /// `to` values addressed to this node.
    pub fn accept_to(&self) -> Vec<String> {
        self.bindings()
    }

    /// The direction of what this node sends.
    pub(super) fn outbound(&self) -> Direction {
        match self {
            Role::Server { .. } => Direction::ToClient,
            Role::Client { .. } => Direction::ToServer,
        }
    }

    /// `server` or `client`.
    pub fn label(&self) -> &'static str {
        match self {
            Role::Server { .. } => "server",
            Role::Client { .. } => "client",
        }
    }

    pub(super) fn check(&self) -> Result<(), WireError> {
        let name = self.name();
        // A queue name is at most 255 bytes.
        let fits = name.len() <= MAX_FIELD_LEN - ANNOUNCE_QUEUE_PREFIX.len();
        if valid_node_name(name) && fits {
            return Ok(());
        }
        Err(WireError::Identity {
            name: name.to_owned(),
            reason: format!(
                "a node name is 1 to {} visible ASCII characters without `*` or `#`, and \
                 neither `{SERVER_QUEUE}` nor `{BROADCAST}`",
                MAX_FIELD_LEN - ANNOUNCE_QUEUE_PREFIX.len()
            ),
        })
    }

    /// The arguments this role declares its queue with. A TTL or expiry below 1 ms is
    /// raised to 1 ms (RabbitMQ refuses an `x-expires` of 0).
    pub fn queue_arguments(&self, limits: &QueueLimits) -> Vec<(&'static str, i64)> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1);
        let bytes = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        match self {
            Role::Client { .. } => vec![
                ("x-message-ttl", ms(limits.max_age)),
                ("x-max-length", i64::from(limits.client_max_length)),
                (
                    "x-max-length-bytes",
                    bytes(limits.max_bytes.saturating_mul(4)),
                ),
                ("x-expires", ms(limits.client_expires)),
            ],
            Role::Server { .. } => vec![
                ("x-message-ttl", ms(limits.max_age)),
                ("x-max-length", SERVER_QUEUE_MAX_LENGTH),
                (
                    "x-max-length-bytes",
                    bytes(limits.max_bytes.saturating_mul(16)),
                ),
            ],
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// The arbiter (routing key `lbs`).
    Server,
    /// One balancer, by hostname.
    Client(String),
    /// Every balancer.
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

/// The arguments as an AMQP table (`x-overflow` added, and for a quorum queue
/// `x-queue-type`): what [`Role::queue`] is declared with.
///
/// No `x-single-active-consumer`: on RabbitMQ 3.10 a quorum queue keeps an active consumer
/// whose node was cut off (suspected down) as the active one, so the consumer a daemon opens
/// on the majority after a partition would wait, and get nothing, until the partition heals.
/// Without it the queue returns what it had handed the lost consumer and delivers to the new
/// one at once; a second process with the same identity is refused at start instead (its
/// consumer count).
pub fn arguments_table(args: &[(&'static str, i64)], queue_type: QueueType) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in args {
        t.insert(
            ShortString::from(*k),
            AMQPValue::LongLongInt(LongLongInt::from(*v)),
        );
    }
    t.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString("drop-head".into()),
    );
    if queue_type == QueueType::Quorum {
        t.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString("quorum".into()),
        );
    }
    t
}

/// Whether `e` is the broker's soft error `kind` (it closed the channel with it).
pub(crate) fn is_soft_error(e: &lapin::Error, kind: AMQPSoftError) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p)
        if matches!(p.kind(), AMQPErrorKind::Soft(k) if *k == kind))
}

/// Declares the exchanges (the arbiter; a balancer only checks they exist: its broker user
/// may not configure them), this role's queues with their arguments, and their bindings.
/// Returns the most consumers one of the queues had. Public for the benches, whose simulated
/// balancers declare what a balancer does.
pub async fn declare(
    ch: &Channel,
    role: &Role,
    vhost: &str,
    limits: &QueueLimits,
) -> Result<u32, WireError> {
    for lane in Lane::ALL {
        declare_exchange(ch, role, vhost, lane.exchange()).await?;
    }
    let args = role.queue_arguments(limits);
    let mut consumers = 0;
    for &lane in role.lanes() {
        let queue = role.lane_queue(lane);
        let declared = ch
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments_table(&args, limits.queue_type),
            )
            .await
            .map_err(|e| {
                if is_soft_error(&e, AMQPSoftError::PRECONDITIONFAILED) {
                    WireError::QueueArguments {
                        queue: queue.clone(),
                        vhost: vhost.to_owned(),
                        wanted: describe(&args, limits.queue_type),
                        detail: e.to_string(),
                    }
                } else {
                    access_refused(e, &format!("declare queue `{queue}`"))
                }
            })?;
        consumers = consumers.max(declared.consumer_count());
        for key in role.bindings() {
            ch.queue_bind(
                queue.as_str().into(),
                lane.exchange().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| access_refused(e, &format!("bind queue `{queue}` to `{key}`")))?;
        }
    }
    Ok(consumers)
}

/// Declares `exchange` (the arbiter) or checks that it exists (a balancer).
async fn declare_exchange(
    ch: &Channel,
    role: &Role,
    vhost: &str,
    exchange: &str,
) -> Result<(), WireError> {
    let passive = matches!(role, Role::Client { .. });
    ch.exchange_declare(
        exchange.into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            passive,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| {
        if is_soft_error(&e, AMQPSoftError::NOTFOUND) {
            WireError::ExchangeMissing {
                vhost: vhost.to_owned(),
                exchange: exchange.to_owned(),
            }
        } else if is_soft_error(&e, AMQPSoftError::PRECONDITIONFAILED) {
            WireError::BrokerRefused {
                what: format!(
                    "exchange `{exchange}` of vhost `{vhost}` exists with another type or \
                     durability (it must be a durable topic exchange); delete it (management UI, \
                     or `rabbitmqadmin -V {vhost} delete exchange name={exchange}`) and start the \
                     arbiter again: {e}"
                ),
            }
        } else {
            access_refused(e, &format!("declare exchange `{exchange}`"))
        }
    })
}

/// An `ACCESS_REFUSED` as [`WireError::BrokerRefused`] (the broker user's permissions), any
/// other error as it is.
pub(super) fn access_refused(e: lapin::Error, what: &str) -> WireError {
    if is_soft_error(&e, AMQPSoftError::ACCESSREFUSED) {
        WireError::BrokerRefused {
            what: format!(
                "{what}: the broker user lacks the permission (see README, \"Broker layout and \
                 permissions\"): {e}"
            ),
        }
    } else {
        WireError::Amqp(e)
    }
}

fn describe(args: &[(&'static str, i64)], queue_type: QueueType) -> String {
    let mut s: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    s.push("x-overflow=drop-head".to_owned());
    if queue_type == QueueType::Quorum {
        s.push("x-queue-type=quorum".to_owned());
    }
    s.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.lanes(), [Lane::Main, Lane::Announce]);
        assert_eq!(
            c.lane_queue(Lane::Announce),
            "ipvs-sync-announce.lb1.example.net"
        );
        assert_eq!(s.lanes(), [Lane::Main]);
        assert_eq!(s.lane_queue(Lane::Announce), "lbs");
    }

    #[test]
    fn what_moves_traffic_takes_the_announce_lane() {
        let s = Role::Server {
            name: "arbiter".into(),
        };
        let c = Role::Client {
            hostname: "lb1".into(),
        };
        let announce: Vec<MessageType> = MessageType::ALL
            .into_iter()
            .filter(|k| Lane::of(*k) == Lane::Announce)
            .collect();
        assert_eq!(
            announce,
            [
                MessageType::Mapping,
                MessageType::SynAnnounce,
                MessageType::AckAnnounce,
                MessageType::FinAnnounce,
                MessageType::Drain,
            ]
        );
        assert_eq!(
            s.exchange_for(MessageType::FinAnnounce),
            "ipvs-sync.announce"
        );
        assert_eq!(s.exchange_for(MessageType::Changes), "ipvs-sync");
        assert_eq!(
            c.exchange_for(MessageType::AckAnnounce),
            "ipvs-sync",
            "a balancer sends by the main exchange only"
        );
    }

    #[test]
    fn reserved_or_malformed_names_are_refused() {
        for bad in ["lbs", "broadcast", "", "has space", "a\nb", "lb#", "lb*"] {
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
    fn queues_are_bounded_as_documented() {
        let c = Role::Client {
            hostname: "lb1".into(),
        };
        let args = c.queue_arguments(&QueueLimits::new(Duration::from_secs(30), 16 << 20));
        assert_eq!(
            args,
            [
                ("x-message-ttl", 30_000),
                ("x-max-length", 50_000),
                ("x-max-length-bytes", 64 << 20),
                ("x-expires", 86_400_000),
            ]
        );
        // [messages] queue_max_length and queue_expires bound a balancer's queue; an
        // expiry of 0 is raised to what the broker takes.
        let limits = QueueLimits {
            client_max_length: 1000,
            client_expires: Duration::ZERO,
            ..QueueLimits::new(Duration::from_secs(300), 1 << 20)
        };
        assert_eq!(
            c.queue_arguments(&limits),
            [
                ("x-message-ttl", 300_000),
                ("x-max-length", 1000),
                ("x-max-length-bytes", 4 << 20),
                ("x-expires", 1),
            ]
        );
        let s = Role::Server { name: "a".into() };
        assert_eq!(
            s.queue_arguments(&limits),
            s.queue_arguments(&QueueLimits::new(Duration::from_secs(300), 1 << 20)),
            "the arbiter's queue has no length or expiry of the balancers'"
        );
        let args = s.queue_arguments(&QueueLimits::new(Duration::from_millis(1500), 1 << 20));
        assert_eq!(args[0], ("x-message-ttl", 1500));
        assert!(args.iter().all(|(k, _)| *k != "x-expires"));
        let t = arguments_table(&args, QueueType::Classic);
        assert_eq!(t.inner().len(), args.len() + 1);
        assert_eq!(
            describe(&args, QueueType::Classic),
            "x-message-ttl=1500, x-max-length=200000, x-max-length-bytes=16777216, x-overflow=drop-head"
        );
        // A quorum queue keeps every bound and says its type; no single active consumer (a
        // consumer left on a cut-off node would hold every delivery until the partition heals).
        let t = arguments_table(&args, QueueType::Quorum);
        assert_eq!(t.inner().len(), args.len() + 2);
        assert_eq!(
            t.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(t.inner().get("x-single-active-consumer"), None);
        assert!(describe(&args, QueueType::Quorum)
            .ends_with("x-overflow=drop-head, x-queue-type=quorum"));
    }
}
