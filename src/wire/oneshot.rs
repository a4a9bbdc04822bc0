//! Publishing one message without a daemon: the quorum handler's way to withdraw a VIP when
//! the arbiter daemon cannot be told (it is not running, or did not answer).
//!
//! It connects, publishes the signed message with publisher confirms on, waits for the
//! confirm and closes; it declares nothing and consumes nothing (a [`super::Transport`] of
//! the arbiter's role would start consuming `lbs` and take the balancers' messages from the
//! arbiter that comes back).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

use super::amqp::{Dest, EXCHANGE};
use super::envelope::{self, Header, Key};
use super::messages::Message;
use super::WireError;

/// Signs `msg` as `from` with `key` and publishes it to `to` on the broker at `url`, waiting
/// for the broker's confirm; everything within `limit`.
pub async fn publish(
    url: &str,
    key: &Key,
    from: &str,
    to: Dest,
    msg: &Message,
    limit: Duration,
) -> Result<(), WireError> {
    let work = async {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let kind = msg.kind();
        let body = msg
            .encode_body()
            .map_err(|source| WireError::Encode { kind, source })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let header = Header {
            kind: kind.as_str().to_owned(),
            from: from.to_owned(),
            to: to.address().to_owned(),
            // Above anything the arbiter sent before: its seqs start at its start time in µs.
            seq: u64::try_from(now.as_micros()).unwrap_or(u64::MAX),
            ts_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
        };
        let payload = envelope::seal(key, &header, &body)?;
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

/// Deletes the queue `queue` on the broker at `url` (a decommissioned balancer's); returns how
/// many messages it held. An absent queue is not an error (0).
pub async fn delete_queue(url: &str, queue: &str, limit: Duration) -> Result<u32, WireError> {
    let work = async {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
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
