//! Publishing one message without a daemon: the quorum handler's way to withdraw a VIP when
//! the arbiter daemon cannot be told (it is not running, or did not answer).
//!
//! It connects, publishes the signed message with publisher confirms on, waits for the
//! confirm and closes; it declares nothing and consumes nothing (a [`super::Transport`] of
//! the arbiter's role would start consuming `lbs` and take the balancers' messages from the
//! arbiter that comes back).

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};

use super::amqp::options::{open_first, prepare_uris};
use super::amqp::{Dest, TlsFiles, TransportOptions, EXCHANGE};
use super::envelope::{self, Header, MessageId};
use super::messages::Message;
use super::state::StateDir;
use super::WireError;

/// Signs `msg` with the arbiter's key of `opts` as `from` and publishes it to `to` on the
/// broker at `url` (with the password and TLS files of `opts`; several URLs separated by
/// commas are tried in order until one node takes the connection), waiting for the broker's
/// confirm; everything within `limit`.
///
/// The message opens a new epoch of the arbiter: it takes the arbiter's state directory
/// (`server.lock`) and its next epoch, so the balancers' replay windows take it as newer than
/// anything the arbiter sent, and the arbiter's next start goes above it. While an arbiter
/// daemon holds the directory (it runs but did not answer), nothing is published: a new
/// epoch from here would make the balancers refuse everything that daemon sends after it.
pub async fn publish(
    url: &str,
    opts: &TransportOptions,
    from: &str,
    to: Dest,
    msg: &Message,
    limit: Duration,
) -> Result<(), WireError> {
    let kind = msg.kind();
    let body = msg
        .encode_body()
        .map_err(|source| WireError::Encode { kind, source })?;
    let state = StateDir::open(&opts.state_dir, "server")?;
    let now_ms = super::amqp::now_ms();
    let epoch = state.next_epoch(now_ms / 1000)?;
    let header = Header {
        kind: kind.as_str().to_owned(),
        from: from.to_owned(),
        to: to.address().to_owned(),
        id: MessageId { epoch, seq: 1 },
        ts_ms: now_ms,
    };
    let payload = envelope::seal(&opts.key, &header, &body)?;
    let uris = prepare_uris(
        url,
        opts.password.as_deref(),
        opts.heartbeat_s,
        per_node_ms(url, limit),
    )?;
    let work = async {
        let conn = open_first(&uris, &opts.tls, &format!("ipvs-sync quorum {from}")).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let confirm = channel
            .basic_publish(
                EXCHANGE.into(),
                to.address().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &payload,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2),
            )
            .await?
            .await?;
        let _ = conn.close(200, "bye".into()).await;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                Err(WireError::Unroutable {
                    routing_key: to.address().to_owned(),
                })
            }
            Confirmation::Nack(None) => Err(WireError::Nacked {
                routing_key: to.address().to_owned(),
            }),
        }
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| WireError::Timeout {
            op: "publish",
            after: limit,
        })?
}

/// Each node's share of `limit` for its TCP connect, so a dead first node leaves time for
/// the others.
fn per_node_ms(url: &str, limit: Duration) -> u64 {
    let nodes = u32::try_from(url.split(',').count().max(1)).unwrap_or(u32::MAX);
    u64::try_from((limit / nodes).as_millis()).unwrap_or(u64::MAX)
}

/// Deletes the queue `queue` on the broker at `url` (a decommissioned balancer's), logging in
/// with `password` when the URL has none and the TLS files of `tls`; returns how many messages
/// it held. An absent queue is not an error (0).
pub async fn delete_queue(
    url: &str,
    password: Option<&str>,
    tls: &TlsFiles,
    queue: &str,
    limit: Duration,
) -> Result<u32, WireError> {
    let uris = prepare_uris(url, password, 10, per_node_ms(url, limit))?;
    let work = async {
        let conn = open_first(&uris, tls, "ipvs-sync forget").await?;
        let channel = conn.create_channel().await?;
        let passive = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await;
        let n = match passive {
            Ok(_) => {
                let channel = conn.create_channel().await?;
                channel
                    .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
                    .await?
            }
            // NOT_FOUND closes the channel: the queue is already gone.
            Err(_) => 0,
        };
        let _ = conn.close(200, "bye".into()).await;
        Ok(n)
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| WireError::Timeout {
            op: "queue delete",
            after: limit,
        })?
}
