//! The arguments a balancer declares its broker queue with, so a balancer that is dead or
//! decommissioned costs the broker a bounded amount instead of every broadcast forever
//! (a queue that grows until RabbitMQ's memory alarm blocks every publisher, withdraws too):
//!
//! | argument | value | why |
//! |---|---|---|
//! | `x-message-ttl` | `[messages] max_age` | a message that waited longer is dropped as stale by the balancer anyway |
//! | `x-max-length` | `[messages] queue_max_length` | at most this many messages… |
//! | `x-overflow` | `drop-head` | …the oldest going first; the periodic requests and heartbeats repair a gap |
//! | `x-expires` | `[messages] queue_expires` | a queue without a consumer for that long is deleted |
//!
//! The arbiter's queue `lbs` keeps no limits: losing a balancer's message to it is never
//! cheaper than holding it. RabbitMQ refuses to declare an existing queue again with other
//! arguments (`PRECONDITION_FAILED`): a queue declared by an earlier version is deleted
//! once (`ipvs-sync forget HOST`, or `rabbitmqctl delete_queue`) and declared
//! again by its balancer.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongLongInt};

/// `drop-head`: a full queue drops its oldest message to take a new one.
pub const OVERFLOW: &str = "drop-head";

/// Limits of a balancer's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// `x-message-ttl`.
    pub message_ttl: Duration,
    /// `x-max-length`.
    pub max_length: u32,
    /// `x-expires`.
    pub expires: Duration,
}

impl QueueLimits {
    /// The `queue.declare` arguments.
    pub fn arguments(&self) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-message-ttl".into(), millis(self.message_ttl))
            .insert(
                "x-max-length".into(),
                AMQPValue::LongLongInt(self.max_length.into()),
            )
            .insert("x-overflow".into(), AMQPValue::LongString(OVERFLOW.into()))
            // RabbitMQ refuses an x-expires of 0.
            .insert(
                "x-expires".into(),
                millis(self.expires.max(Duration::from_millis(1))),
            );
        t
    }
}

/// A duration in whole milliseconds, as RabbitMQ's TTL arguments take it.
fn millis(d: Duration) -> AMQPValue {
    AMQPValue::LongLongInt(LongLongInt::try_from(d.as_millis()).unwrap_or(LongLongInt::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn limits_become_the_broker_arguments() {
        let t = QueueLimits {
            message_ttl: Duration::from_millis(30_500),
            max_length: 1000,
            expires: Duration::from_secs(86_400),
        }
        .arguments();
        let got: Vec<(String, AMQPValue)> = t
            .inner()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let int = AMQPValue::LongLongInt;
        assert_eq!(
            got,
            [
                ("x-expires".into(), int(86_400_000)),
                ("x-max-length".into(), int(1000)),
                ("x-message-ttl".into(), int(30_500)),
                (
                    "x-overflow".into(),
                    AMQPValue::LongString("drop-head".into())
                ),
            ]
        );
    }

    #[test]
    fn an_expiry_of_zero_is_raised_to_what_the_broker_takes() {
        let t = QueueLimits {
            message_ttl: Duration::ZERO,
            max_length: 1,
            expires: Duration::ZERO,
        }
        .arguments();
        assert_eq!(
            t.inner().get(&lapin::types::ShortString::from("x-expires")),
            Some(&AMQPValue::LongLongInt(1))
        );
    }
}
