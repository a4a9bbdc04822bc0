//! The broker as the daemons see it: a [`Bus`] that publishes with a confirm, and a stream of
//! verified messages handed over at connect time.
//!
//! Two implementations: the RabbitMQ [`Transport`] (lapin; signing, verification and
//! reconnection live there) and [`super::memory_bus::MemoryNet`], an in-memory broker for tests
//! that can drop, delay, duplicate and reorder messages. Both daemons' `run` and the
//! [`super::Outbox`] take an `Arc<dyn Bus>`, so every decision above the transport runs the same
//! against either.
//!
//! ```text
//!   daemon ──Outbox──▶ Bus::publish(to, msg) ──▶ Confirm (awaited by the outbox's confirmer)
//!   daemon ◀──────── mpsc::Receiver<Incoming> (given with the bus at connect time)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::wire::amqp::QueueDepth;
use crate::wire::counters::Counters;
use crate::wire::{Dest, Message, PeerClock, Transport, WireError};

/// A boxed future the bus returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The broker's confirm of one published message, still to come.
pub type Confirm = BoxFuture<'static, Result<(), WireError>>;

/// What a daemon needs of the broker.
pub trait Bus: Send + Sync {
    /// Signs and hands `msg` for `to` to the broker. Messages published one after the other
    /// reach the broker in that order; the returned [`Confirm`] resolves once the broker has
    /// taken the message into a queue (or failed), so a sender can keep many in flight.
    fn publish<'a>(
        &'a self,
        to: Dest,
        msg: &'a Message,
    ) -> BoxFuture<'a, Result<Confirm, WireError>>;

    /// Whether the connection to the broker is up now.
    fn connected(&self) -> bool;

    /// `host:port` of the broker node the connection goes to, while there is one.
    fn broker_node(&self) -> Option<String> {
        None
    }

    /// What the bus counted: messages in and out by type, drops by reason, reconnects.
    fn counters(&self) -> &Counters;

    /// Each sender's clock offset against ours, as measured from its messages.
    fn clock_offsets(&self) -> Vec<PeerClock> {
        Vec::new()
    }

    /// This node's queues at the broker and how many messages wait in each, as of the last
    /// look.
    fn queue_depths(&self) -> Vec<QueueDepth> {
        Vec::new()
    }

    /// Stops consuming and closes the connection (bounded, about a second).
    fn close(self: Arc<Self>) -> BoxFuture<'static, ()>;
}

/// The RabbitMQ transport as a [`Bus`].
pub struct AmqpBus(Arc<Transport>);

impl AmqpBus {
    /// Wraps a connected transport.
    pub fn new(t: Transport) -> Arc<Self> {
        Arc::new(AmqpBus(Arc::new(t)))
    }

    /// Wraps a transport the caller keeps using too.
    pub fn new_shared(t: Arc<Transport>) -> Arc<Self> {
        Arc::new(AmqpBus(t))
    }

    /// The transport itself.
    pub fn transport(&self) -> &Transport {
        &self.0
    }
}

impl Bus for AmqpBus {
    fn publish<'a>(
        &'a self,
        to: Dest,
        msg: &'a Message,
    ) -> BoxFuture<'a, Result<Confirm, WireError>> {
        Box::pin(async move {
            let in_flight = self.0.publish(to, msg).await?;
            let t = self.0.clone();
            let confirm: Confirm = Box::pin(async move { t.confirmed(in_flight).await });
            Ok(confirm)
        })
    }

    fn connected(&self) -> bool {
        self.0.is_connected()
    }

    fn counters(&self) -> &Counters {
        self.0.counters()
    }

    fn broker_node(&self) -> Option<String> {
        self.0.broker_node()
    }

    fn clock_offsets(&self) -> Vec<PeerClock> {
        self.0.clock_offsets()
    }

    fn queue_depths(&self) -> Vec<QueueDepth> {
        self.0.queue_depths()
    }

    fn close(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // The outbox's confirmer may still hold a clone for a moment after it stops.
            let mut t = self.0.clone();
            drop(self);
            for _ in 0..50 {
                match Arc::try_unwrap(t) {
                    Ok(t) => return t.close().await,
                    Err(back) => t = back,
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tracing::debug!(
                "transport still shared at close; it stops when the last user drops it"
            );
        })
    }
}
