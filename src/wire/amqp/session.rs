//! One connection's life: connect (with TLS for `amqps://`), declare, consume exclusively;
//! the consumer loops that verify, record and hand over what arrives; the supervisor that
//! builds a new connection when one is lost.
//!
//! A balancer consumes two queues, one per [`Lane`], each on a channel and in a task of its
//! own; what both take goes through one replay state ([`Receiver`], locked only for the
//! replay check and the marks, not for the signature check or the decoding) and reaches the
//! daemon through a forwarder that always takes the announce lane first and hands the daemon
//! one message at a time, so a `fin_announce` waits behind at most the one main-lane message
//! the daemon is handling.
//!
//! ```text
//!  queue ipvs-sync.HOST ──────────▶ main pump (+ health, marks, clocks) ─┐ lane channels
//!  queue ipvs-sync-announce.HOST ─▶ announce pump ───────────────────────┤ (bounded)
//!                                                                        ▼
//!                                 forwarder (announce first) ─▶ daemon's channel (1 message)
//! ```

use std::fs::File;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, Stream, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::protocol::AMQPSoftError;
use lapin::types::FieldTable;
use lapin::Acker;
use lapin::{Channel, Connection, Consumer};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::acks::Pending;
use super::topology::{self, is_soft_error, Lane, Role};
use super::{now_ms, options, Incoming, Shared, WireError};
use crate::wire::admission::{Policy, Verifier};
use crate::wire::envelope::{DropReason, MessageId};
use crate::wire::keys::Senders;
use crate::wire::messages::{Direction, Message, SchemaError};
use crate::wire::replay::ReplayTable;
use crate::wire::state::MarkLog;

/// How often the consumer loop looks at the connection's state.
const HEALTH_TICK: Duration = Duration::from_millis(500);
/// Pause between publish attempts when the link is down.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for a clean `connection.close` on shutdown.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Longest wait for the broker to close an abandoned attempt's connection: it ends the
/// connection's channels first, and one blocked in a call to a queue may take seconds.
const ABANDON_WAIT: Duration = Duration::from_secs(30);
/// At most one drop log line per reason per this interval; the rest are counted.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// See [`gather_for`].
const GATHER: Duration = Duration::from_millis(1);
/// How often the mark log is flushed to disk when lines were appended.
const MARK_SYNC_EVERY: Duration = Duration::from_secs(1);
/// Clock offsets of senders not heard for this long are forgotten.
const FORGET_CLOCKS_MS: u64 = 3_600_000;

/// One connection with its channels, consumers and event stream.
pub(super) struct Session {
    conn: Connection,
    publish: Channel,
    /// Kept open: the consumers live on these channels (one per lane).
    _consume: Vec<Channel>,
    /// For passive declares (queue depth); a failed one closes only this channel.
    probe: Option<Channel>,
    /// The main lane's consumer.
    consumer: Consumer,
    /// The announce lane's (a balancer's).
    announce: Option<Consumer>,
    /// lapin's connection events (errors end the session).
    events: Pin<Box<dyn Stream<Item = lapin::Event> + Send>>,
}

/// The first connection: each node once, in the process's order, each attempt bounded by
/// `connect_timeout`, until one takes it. An error retrying cannot help (permissions, the
/// queue's arguments or type, another consumer) ends it at once: the nodes of a cluster share
/// users and queues, so every node would say the same.
pub(super) async fn establish_first(shared: &Shared) -> Result<Session, WireError> {
    let mut last = None;
    for _ in 0..shared.uris.len() {
        let node = shared.next_node();
        match establish_on(shared, node, true).await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                warn!(node = shared.node_name(node), queue = %shared.role.queue(), error = %e, "broker node did not answer; trying the next");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(WireError::NotConnected {
        after: shared.opts.connect_timeout,
    }))
}

/// Connects to node `node` within `connect_timeout` and sets up the role's topology; records
/// the node as the one in use when it worked. An attempt that fails or runs out of time after
/// the connection opened closes that connection (see [`abandon`]).
async fn establish_on(shared: &Shared, node: usize, first: bool) -> Result<Session, WireError> {
    let limit = shared.opts.connect_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let timed_out = || WireError::Timeout {
        op: "connect",
        after: limit,
    };
    // No `enable_auto_recover`: see "Reconnection" in the module doc.
    let name = format!("ipvs-sync {} {}", shared.role.label(), shared.role.name());
    let Some(uri) = shared.uris.get(node) else {
        return Err(WireError::Url {
            reason: format!("no broker node {node}"),
        });
    };
    let open = options::open_connection(uri, &shared.opts.tls, name);
    let conn = tokio::time::timeout_at(deadline, open)
        .await
        .map_err(|_| timed_out())??;
    let set_up = tokio::time::timeout_at(deadline, setup(shared, &conn, &uri.vhost, first)).await;
    match set_up {
        Ok(Ok((publish, consume, consumer, announce))) => {
            // Optional (queue depth only): not worth failing or holding up the session.
            let probe = tokio::time::timeout(CLOSE_WAIT, conn.create_channel())
                .await
                .ok()
                .and_then(Result::ok);
            let events = Box::pin(conn.events_listener());
            shared.set_node(Some(node));
            Ok(Session {
                conn,
                publish,
                _consume: consume,
                probe,
                consumer,
                announce,
                events,
            })
        }
        Ok(Err(e)) => {
            abandon(conn, "setup failed");
            Err(e)
        }
        Err(_) => {
            abandon(conn, "setup timed out");
            Err(timed_out())
        }
    }
}

/// Closes the connection of an attempt that did not make a session, in the background.
///
/// Dropping it is not enough: lapin keeps a connection open (and heartbeating) while a
/// consumer it registered lives, and a `basic.consume` the attempt sent can still take effect
/// after the attempt gave up, e.g. on a quorum queue waiting for a new leader after a node
/// was cut off. The broker then hands every other message to that consumer, which nobody
/// reads and which never acks: a lab run caught one, a consumer of the arbiter's `lbs` on a
/// majority node beside the arbiter's own, holding a confirmed message through the partition
/// and after the heal. `connection.close` makes the broker end the connection's channels,
/// and a consumer the queue registers afterwards for a channel that is gone is removed.
fn abandon(conn: Connection, why: &'static str) {
    tokio::spawn(async move {
        if tokio::time::timeout(ABANDON_WAIT, conn.close(200, why.into()))
            .await
            .is_err()
        {
            warn!(after = ?ABANDON_WAIT, why, "an abandoned AMQP connection did not close");
        }
    });
}

/// The publishing channel, the consumers' channels, the main lane's consumer and the
/// announce lane's (a balancer's).
type Setup = (Channel, Vec<Channel>, Consumer, Option<Consumer>);

async fn setup(
    shared: &Shared,
    conn: &Connection,
    vhost: &str,
    first: bool,
) -> Result<Setup, WireError> {
    let publish = conn.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consume = conn.create_channel().await?;
    consume
        .basic_qos(shared.opts.prefetch.max(1), BasicQosOptions::default())
        .await?;
    let consumers =
        topology::declare(&consume, &shared.role, vhost, &shared.opts.queue_limits()).await?;
    // A quorum queue takes an exclusive consume without being exclusive (RabbitMQ 3.10), so a
    // second process with this identity shows as a consumer already there at start. After a
    // loss, our own consumer on a lost node may linger the same way (suspected down, handed
    // nothing), so this check is made at the first connection only.
    if first && consumers > 0 && shared.opts.queue_type == config::QueueType::Quorum {
        return Err(in_use(shared, &shared.role.queue()));
    }
    let consumer = consume_lane(shared, &consume, Lane::Main).await?;
    let mut channels = vec![consume];
    let mut announce = None;
    if shared.role.lanes().contains(&Lane::Announce) {
        // A channel of its own: its own prefetch window, acks and flow.
        let ch = conn.create_channel().await?;
        ch.basic_qos(shared.opts.prefetch.max(1), BasicQosOptions::default())
            .await?;
        announce = Some(consume_lane(shared, &ch, Lane::Announce).await?);
        channels.push(ch);
    }
    Ok((publish, channels, consumer, announce))
}

/// Starts the exclusive consumer of `lane`'s queue.
async fn consume_lane(shared: &Shared, ch: &Channel, lane: Lane) -> Result<Consumer, WireError> {
    let queue = shared.role.lane_queue(lane);
    ch.basic_consume(
        queue.as_str().into(),
        format!(
            "ipvs-sync.{}.{}.{}",
            shared.role.name(),
            lane.label(),
            std::process::id()
        )
        .into(),
        BasicConsumeOptions {
            exclusive: true,
            ..BasicConsumeOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| {
        if is_soft_error(&e, AMQPSoftError::ACCESSREFUSED) && e.to_string().contains("exclusive") {
            in_use(shared, &queue)
        } else {
            topology::access_refused(e, &format!("consume queue `{queue}`"))
        }
    })
}

fn in_use(shared: &Shared, queue: &str) -> WireError {
    WireError::QueueInUse {
        queue: queue.to_owned(),
        what: match shared.role {
            Role::Server { .. } => "arbiter name",
            Role::Client { .. } => "hostname",
        },
    }
}

/// What the consumers keep across connections and share between lanes: the admission state
/// (one replay window per sender whatever the lane, so a message cannot be taken twice by
/// going through both queues), the mark log and the rate limit of drop logs.
pub(super) struct Receiver {
    verifier: Verifier,
    marks: MarkLog,
    marks_sync: File,
}

impl Receiver {
    /// A receiver whose replay windows start at the marks of `marks` (the previous run's).
    pub(super) fn new(shared: &Shared, marks: MarkLog) -> Result<Receiver, WireError> {
        let replay = ReplayTable::restored(
            shared.opts.replay_window,
            marks.marks().iter().map(|(k, v)| (k.clone(), *v)),
        );
        let verifier = Verifier::new(
            Policy {
                max_bytes: shared.opts.max_bytes,
                accept_to: shared.role.accept_to(),
            },
            replay,
        );
        Ok(Receiver {
            verifier,
            marks_sync: marks.sync_handle()?,
            marks,
        })
    }

    /// Housekeeping of a health tick: flush the marks if due, publish the clock offsets.
    fn tick(&mut self, shared: &Shared, last_sync: &mut Instant) {
        if last_sync.elapsed() >= MARK_SYNC_EVERY && self.marks.take_dirty() {
            *last_sync = Instant::now();
            match self.marks_sync.try_clone() {
                Ok(f) => {
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = f.sync_data() {
                            warn!(error = %e, "flushing the replay marks failed");
                        }
                    });
                }
                Err(e) => warn!(error = %e, "flushing the replay marks failed"),
            }
        }
        let clocks = self.verifier.clocks_mut();
        clocks.forget_older_than(now_ms(), FORGET_CLOCKS_MS);
        let peers = clocks.peers();
        *shared.clocks.lock().unwrap_or_else(|e| e.into_inner()) = peers;
    }
}

/// The [`Receiver`] as the lanes share it.
type SharedReceiver = Arc<Mutex<Receiver>>;

fn lock(r: &SharedReceiver) -> std::sync::MutexGuard<'_, Receiver> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// One lane's consumer side: where its messages go, and its own rate limit of drop logs.
struct LaneIn {
    lane: Lane,
    receiver: SharedReceiver,
    policy: Policy,
    tx: mpsc::Sender<Incoming>,
    drops: DropLog,
    /// Deliveries handed over and not acked yet (see `acks`).
    unacked: Pending<Acker>,
}

impl LaneIn {
    fn new(
        shared: &Shared,
        lane: Lane,
        receiver: &SharedReceiver,
        tx: &mpsc::Sender<Incoming>,
    ) -> LaneIn {
        let policy = lock(receiver).verifier.policy().clone();
        LaneIn {
            lane,
            receiver: Arc::clone(receiver),
            policy,
            tx: tx.clone(),
            drops: DropLog::default(),
            unacked: Pending::new(shared.opts.prefetch, shared.opts.ack_delay),
        }
    }

    /// Acks everything handed over so far, if anything is unacked.
    async fn ack_all(&mut self) {
        if let Some(acker) = self.unacked.take() {
            ack(&acker).await;
        }
    }

    /// Acks what is unacked before the consumer stops, waiting at most `CLOSE_WAIT`.
    async fn ack_before_stop(&mut self) {
        let _ = tokio::time::timeout(CLOSE_WAIT, self.ack_all()).await;
    }

    /// Verifies a batch (signatures outside the shared lock), records the ids of what passed
    /// (before the daemon sees it), and decodes it, each with its size in bytes; counts and
    /// logs what it drops.
    fn receive(&mut self, shared: &Shared, batch: &[&[u8]]) -> Vec<(Incoming, usize)> {
        let senders: Arc<Senders> = shared.senders();
        let checked = self.policy.check_batch(&senders, batch);
        let mut admitted = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        {
            let mut r = lock(&self.receiver);
            let results = r.verifier.admit_checked(checked, now_ms());
            for (res, bytes) in results.into_iter().zip(batch) {
                match res {
                    Ok(a) => admitted.push((a, bytes.len())),
                    Err(reject) => rejected.push(reject),
                }
            }
            if let Err(e) = r.marks.append(
                admitted
                    .iter()
                    .map(|(a, _)| (a.header.from.as_str(), a.header.id)),
            ) {
                // The messages are still acted on: refusing them would stop withdraws. What
                // is lost is protection against their replay after a restart.
                shared.counters.add_state_error();
                error!(error = %e, "cannot record replay marks");
            }
        }
        for reject in rejected {
            let reason = reject.reason();
            shared.counters.add_dropped(reason);
            self.drops.log(reason, &reject);
        }
        let mut out = Vec::with_capacity(admitted.len());
        for (a, size) in admitted {
            let h = a.header;
            match Message::decode(&h.kind, Direction::of_address(&h.to), a.body) {
                Ok(message) => {
                    shared.counters.add_received(message.kind());
                    let incoming = Incoming {
                        from: h.from,
                        role: a.role,
                        to: h.to,
                        id: h.id,
                        ts_ms: h.ts_ms,
                        message,
                        _budget: None,
                    };
                    out.push((incoming, size));
                }
                Err(error) => {
                    shared.counters.add_dropped(DropReason::Schema);
                    self.drops.log(
                        DropReason::Schema,
                        &SchemaDrop {
                            from: &h.from,
                            id: h.id,
                            error: &error,
                        },
                    );
                }
            }
        }
        out
    }

    /// One batch of deliveries, starting with `first` and taking what else `consumer` has
    /// ready: verified, handed over, counted unacked (acked now if due, see `acks`). `Some`
    /// ends the session.
    async fn deliver(
        &mut self,
        shared: &Shared,
        first: Option<Result<Delivery, lapin::Error>>,
        consumer: &mut Consumer,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<PumpEnd> {
        let max_batch = usize::from(shared.opts.prefetch.max(1));
        let mut batch: Vec<Delivery> = Vec::with_capacity(max_batch);
        let mut end = None;
        match first {
            None => return Some(PumpEnd::Lost("consumer cancelled".to_owned())),
            Some(Err(e)) => return Some(PumpEnd::Lost(e.to_string())),
            Some(Ok(d)) => batch.push(d),
        }
        // Whatever else the broker already pushed joins the batch (one signature check, one
        // write of the marks, one ack for all).
        while batch.len() < max_batch && end.is_none() {
            match consumer.next().now_or_never() {
                Some(Some(Ok(d))) => batch.push(d),
                Some(Some(Err(e))) => end = Some(PumpEnd::Lost(e.to_string())),
                Some(None) => end = Some(PumpEnd::Lost("consumer cancelled".to_owned())),
                None => break,
            }
        }
        let datas: Vec<&[u8]> = batch.iter().map(|d| d.data.as_slice()).collect();
        let budget = &shared.budget[self.lane as usize];
        for (mut incoming, size) in self.receive(shared, &datas) {
            // Hand over before acking: with a full channel (or the byte budget spent) the
            // broker stops after `prefetch` unacked deliveries instead of us buffering.
            let size = u32::try_from(size.clamp(1, super::INPUT_BUDGET)).unwrap_or(u32::MAX);
            let permit = tokio::select! {
                _ = stop.changed() => return Some(PumpEnd::Stop),
                p = Arc::clone(budget).acquire_many_owned(size) => p,
            };
            incoming._budget = permit.ok();
            tokio::select! {
                _ = stop.changed() => return Some(PumpEnd::Stop),
                r = self.tx.send(incoming) => if r.is_err() {
                    return Some(PumpEnd::ReceiverGone);
                },
            }
        }
        if let Some(last) = batch.last() {
            let now = Instant::now();
            if let Some(acker) = self
                .unacked
                .handed_over(batch.len(), last.acker.clone(), now)
            {
                ack(&acker).await;
            }
        }
        end
    }
}

/// Acks the delivery of `acker` and every one before it on its channel, waiting at most
/// [`CLOSE_WAIT`]. lapin resolves an ack once its frame is written, and an ack queued just as
/// the connection dies may never be: unbounded, that wait kept a consumer loop from ever
/// seeing the loss (a lab run after a broker node's SIGKILL: the arbiter logged the reset,
/// then no reconnect, and every send failed "not connected" for 80 s). Bounded, the loop
/// goes on and its next look finds the connection gone.
async fn ack(acker: &Acker) {
    match tokio::time::timeout(CLOSE_WAIT, acker.ack(BasicAckOptions { multiple: true })).await {
        Ok(Ok(_)) => {}
        // The connection is going; the broker delivers again and the replay window drops
        // what was already handed over.
        Ok(Err(e)) => debug!(error = %e, "ack failed"),
        Err(_) => warn!(after = ?CLOSE_WAIT, "ack not written; the connection is going"),
    }
}

/// How long the main lane lets the broker's deliveries gather after each batch before it
/// looks again. The arbiter's [`GATHER`] turns a fleet's heartbeats, which arrive spread over
/// each second, into batches of a few: one wake-up of its loop each instead of one per
/// heartbeat (`netns-lab/bench-scale --slots 1000`: 12–14 % of a core → 7–9.5 % with the
/// deferred acks). What it costs: a balancer's `ack_announce` may wait that long more on the
/// arbiter. A balancer's main lane does not wait: its `fin_announce` comes on the announce
/// lane, which never does, but nothing on its main lane is worth a delay either.
fn gather_for(role: &Role) -> Option<Duration> {
    match role {
        Role::Server { .. } => Some(GATHER),
        Role::Client { .. } => None,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Why a connection's consumer loop ended.
enum PumpEnd {
    /// `close()` was called or the handle dropped.
    Stop,
    /// The daemon dropped the receiver.
    ReceiverGone,
    /// The connection is gone.
    Lost(String),
}

/// Where each lane's verified messages go: straight to the daemon (one lane), or to lane
/// channels a forwarder drains into the daemon's, announce lane first.
fn lanes_to_daemon(
    shared: &Shared,
    receiver: &SharedReceiver,
    tx: mpsc::Sender<Incoming>,
) -> (LaneIn, Option<mpsc::Sender<Incoming>>) {
    if !shared.role.lanes().contains(&Lane::Announce) {
        return (LaneIn::new(shared, Lane::Main, receiver, &tx), None);
    }
    let cap = shared.opts.incoming_capacity.max(1);
    let (main_tx, main_rx) = mpsc::channel(cap);
    let (announce_tx, announce_rx) = mpsc::channel(cap);
    tokio::spawn(forward(announce_rx, main_rx, tx));
    (
        LaneIn::new(shared, Lane::Main, receiver, &main_tx),
        Some(announce_tx),
    )
}

/// Hands the daemon one message each time it has room, the announce lane's first. Ends when
/// the daemon drops its receiver (the lanes' senders then fail) or both lanes are gone.
async fn forward(
    mut announce: mpsc::Receiver<Incoming>,
    mut main: mpsc::Receiver<Incoming>,
    out: mpsc::Sender<Incoming>,
) {
    while let Ok(room) = out.reserve().await {
        let next = tokio::select! {
            biased;
            Some(m) = announce.recv() => m,
            Some(m) = main.recv() => m,
            else => return,
        };
        room.send(next);
    }
}

/// Owns the connection: runs the consumer loops and, when the connection is lost, builds a
/// new one with backoff until it succeeds or the transport stops.
pub(super) async fn supervise(
    shared: Arc<Shared>,
    first: Session,
    receiver: Receiver,
    tx: mpsc::Sender<Incoming>,
    mut stop: watch::Receiver<bool>,
) {
    let receiver: SharedReceiver = Arc::new(Mutex::new(receiver));
    let (mut main, announce_tx) = lanes_to_daemon(&shared, &receiver, tx);
    let mut session = Some(first);
    let mut backoff = shared.opts.reconnect_min;
    let mut failed = 0usize;
    loop {
        if let Some(mut s) = session.take() {
            shared.link.send_replace(Some(s.publish.clone()));
            // Beside the consumer loop, which may wait on a slow daemon.
            let depth = s
                .probe
                .take()
                .map(|ch| tokio::spawn(watch_depth(Arc::clone(&shared), ch)));
            // The announce lane in a task of its own.
            let mut side = s.announce.take().zip(announce_tx.as_ref()).map(|(c, tx)| {
                let lane = LaneIn::new(&shared, Lane::Announce, &receiver, tx);
                tokio::spawn(pump_lane(Arc::clone(&shared), lane, c, stop.clone()))
            });
            let end = pump(&shared, &mut s, &mut main, side.as_mut(), &mut stop).await;
            if matches!(end, PumpEnd::Stop) {
                // Whichever lane saw the stop first, the main lane acks what it handed over.
                main.ack_before_stop().await;
            }
            if let Some(d) = depth {
                d.abort();
            }
            if let Some(mut task) = side {
                // On a stop the announce lane acks what it handed over first (it watches the
                // same stop). Stopping a consumer loop at an await point loses nothing: what
                // it did not ack the broker delivers again, and the replay window drops what
                // it had already handed over.
                // (`pump` may have taken its end already: a finished task is not polled again.)
                if matches!(end, PumpEnd::Stop) && !task.is_finished() {
                    let _ = tokio::time::timeout(CLOSE_WAIT, &mut task).await;
                }
                task.abort();
            }
            shared.link.send_replace(None);
            let lost = shared.broker_node_of();
            shared.node.store(usize::MAX, Ordering::Relaxed);
            let _ = tokio::time::timeout(CLOSE_WAIT, s.conn.close(200, "bye".into())).await;
            match end {
                PumpEnd::Stop => {
                    let _ = lock(&receiver).marks.sync();
                    info!("AMQP transport closed");
                    return;
                }
                PumpEnd::ReceiverGone => {
                    let _ = lock(&receiver).marks.sync();
                    info!("AMQP receiver dropped; transport stops consuming");
                    return;
                }
                PumpEnd::Lost(reason) => {
                    warn!(%reason, node = lost, queue = %shared.role.queue(), "AMQP connection lost; reconnecting");
                }
            }
            backoff = shared.opts.reconnect_min;
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        // One attempt on the next node in the order, in a task of its own: a stop during it
        // leaves it to end (within `connect_timeout`) and closes what it made. Dropped, it
        // would leave an opened connection behind (see [`abandon`]).
        let node = shared.next_node();
        let mut attempt = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move { establish_on(&shared, node, false).await }
        });
        let result = tokio::select! {
            _ = stop.changed() => {
                tokio::spawn(async move {
                    if let Ok(Ok(s)) = attempt.await {
                        abandon(s.conn, "transport stopped");
                    }
                });
                return;
            }
            r = &mut attempt => match r {
                Ok(r) => r,
                Err(e) => {
                    // The attempt's task panicked or was cancelled: the loop tries again.
                    error!(error = %e, "AMQP connect attempt ended without a result");
                    Err(WireError::NotConnected { after: shared.opts.connect_timeout })
                }
            },
        };
        match result {
            Ok(s) => {
                failed = 0;
                shared.counters.add_reconnect();
                info!(queue = %shared.role.queue(), node = shared.broker_node_of(), "AMQP reconnected");
                session = Some(s);
            }
            Err(e) => {
                warn!(error = %e, node = shared.node_name(node), retry_in = ?backoff, queue = %shared.role.queue(), "AMQP reconnect failed");
                // The delay doubles once every node had its try since the last success.
                failed += 1;
                if failed.is_multiple_of(shared.uris.len().max(1)) {
                    backoff = (backoff * 2).min(shared.opts.reconnect_max);
                }
            }
        }
    }
}

/// Consumes one connection's main lane until it is lost or the transport stops, and watches
/// the connection (and the announce lane's task, `side`, whose end ends the session too).
///
/// Any sign of loss ends the session: a consumer error or end, a connection error event, or
/// the connection found not open on a periodic look (which also catches a broker that went
/// silent: lapin fails the connection when AMQP heartbeats stop).
async fn pump(
    shared: &Shared,
    s: &mut Session,
    lane: &mut LaneIn,
    mut side: Option<&mut JoinHandle<PumpEnd>>,
    stop: &mut watch::Receiver<bool>,
) -> PumpEnd {
    let mut tick = tokio::time::interval(HEALTH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events_open = true;
    let mut last_sync = Instant::now();
    // What a lost connection left unacked is the broker's to deliver again.
    lane.unacked.take();
    let gather = gather_for(&shared.role);
    let mut hold: Option<Instant> = None;
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return PumpEnd::Stop,
            () = until(lane.unacked.deadline()) => {
                lane.ack_all().await;
                continue;
            }
            () = shared.renew.notified() => {
                return PumpEnd::Lost("the broker nacked a publish".to_owned());
            }
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
                lock(&lane.receiver).tick(shared, &mut last_sync);
                continue;
            }
            end = async { match side.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
                return match end {
                    Ok(PumpEnd::Lost(why)) => PumpEnd::Lost(format!("announce lane: {why}")),
                    Ok(end) => end,
                    Err(e) => PumpEnd::Lost(format!("announce lane: {e}")),
                };
            }
            () = until(hold) => {
                hold = None;
                continue;
            }
            next = s.consumer.next(), if hold.is_none() => next,
        };
        if let Some(end) = lane.deliver(shared, first, &mut s.consumer, stop).await {
            return end;
        }
        hold = gather.map(|g| Instant::now() + g);
    }
}

/// Consumes the announce lane of one connection until its consumer ends or the transport
/// stops (the main lane's [`pump`] watches the connection).
async fn pump_lane(
    shared: Arc<Shared>,
    mut lane: LaneIn,
    mut consumer: Consumer,
    mut stop: watch::Receiver<bool>,
) -> PumpEnd {
    loop {
        let first = tokio::select! {
            _ = stop.changed() => break,
            () = until(lane.unacked.deadline()) => {
                lane.ack_all().await;
                continue;
            }
            next = consumer.next() => next,
        };
        match lane.deliver(&shared, first, &mut consumer, &mut stop).await {
            None => {}
            Some(PumpEnd::Stop) => break,
            Some(end) => return end,
        }
    }
    lane.ack_before_stop().await;
    PumpEnd::Stop
}

/// Asks the broker every `depth_interval` how many messages wait in each of this role's
/// queues (passive declares on a channel of its own: a failure closes only that channel, and
/// the looking stops until the next connection).
async fn watch_depth(shared: Arc<Shared>, probe: Channel) {
    let mut every = tokio::time::interval(shared.opts.depth_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for &lane in shared.role.lanes() {
            let queue = shared.role.lane_queue(lane);
            let passive = QueueDeclareOptions {
                passive: true,
                durable: true,
                ..QueueDeclareOptions::default()
            };
            let look = probe.queue_declare(queue.as_str().into(), passive, FieldTable::default());
            match tokio::time::timeout(Duration::from_secs(5), look).await {
                Ok(Ok(q)) => {
                    shared.queue_depth[lane as usize]
                        .store(u64::from(q.message_count()), Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    debug!(error = %e, %queue, "queue depth: passive declare failed");
                    return;
                }
                Err(_) => debug!(%queue, "queue depth: no answer in 5 s"),
            }
        }
    }
}

struct SchemaDrop<'a> {
    from: &'a str,
    id: MessageId,
    error: &'a SchemaError,
}

impl std::fmt::Display for SchemaDrop<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "from {} ({}): {}", self.from, self.id, self.error)
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
        if reason.is_expected() {
            debug!(%reason, suppressed, "dropped message: {what}");
        } else {
            warn!(%reason, suppressed, "dropped message: {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
