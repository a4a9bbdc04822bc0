//! Announces and withdraws handed to the speaker in batches.
//!
//! The announce machine decides VIP by VIP (a cold start is one `ack_announce` go per VIP),
//! but the speaker takes a batch with one lock of its table and one wake-up per peer.
//! So the loop keeps the announces it is told to make in a [`RouteBatch`] and hands them over
//! in one `announce_many` when it has nothing else ready (or when the batch is full), while
//! every withdraw a message brings goes out at once, all of them in one `withdraw_many`,
//! before that message's other commands: a withdraw never waits behind announces.
//!
//! Order is kept per VIP: a withdraw takes the VIP out of the announces still waiting (and
//! out of the earlier commands of its own message), so the last word on a VIP is the one
//! the speaker ends with.

use std::collections::HashMap;
use std::net::IpAddr;

use tracing::info;

use super::state::Cmd;
use super::{Client, Done};

/// A batch is handed to the speaker at the latest when it holds this many announces.
pub const MAX_BATCH: usize = 4096;

/// Announces waiting for the speaker, in order.
#[derive(Debug, Default)]
pub struct RouteBatch {
    pending: Vec<(IpAddr, bgp::RouteAttrs)>,
}

impl RouteBatch {
    /// Adds an announce; true when the batch is full and should go now.
    pub fn push(&mut self, vip: IpAddr, attrs: bgp::RouteAttrs) -> bool {
        self.pending.push((vip, attrs));
        self.pending.len() >= MAX_BATCH
    }

    /// Drops the waiting announces of VIPs now withdrawn.
    pub fn cancel(&mut self, withdrawn: &HashMap<IpAddr, usize>) {
        if !self.pending.is_empty() && !withdrawn.is_empty() {
            self.pending.retain(|(vip, _)| !withdrawn.contains_key(vip));
        }
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes the batch.
    pub fn take(&mut self) -> Vec<(IpAddr, bgp::RouteAttrs)> {
        std::mem::take(&mut self.pending)
    }
}

/// The withdraws among `cmds`, in order, and the index of each withdrawn VIP's last withdraw
/// (an announce before it is superseded; one after it stands).
pub fn withdraws(cmds: &[Cmd]) -> (Vec<(IpAddr, u64)>, HashMap<IpAddr, usize>) {
    let mut list = Vec::new();
    let mut last = HashMap::new();
    for (i, c) in cmds.iter().enumerate() {
        if let Cmd::Withdraw { vip, ticket } = c {
            list.push((*vip, *ticket));
            last.insert(*vip, i);
        }
    }
    (list, last)
}

/// Whether the announce at index `at` of a command list is superseded by a later withdraw of
/// the same VIP in it (`last` from [`withdraws`]); an announce after the withdraw stands.
pub fn superseded(last: &HashMap<IpAddr, usize>, vip: IpAddr, at: usize) -> bool {
    last.get(&vip).is_some_and(|&w| w > at)
}

impl Client {
    /// Hands every withdraw of one message to the speaker at once (one `withdraw_many`), and
    /// drops the waiting announces they supersede. Each VIP's result comes back as its own
    /// [`Done::Withdrawn`] once the whole batch is on the wire.
    pub(super) fn withdraw_now(&mut self, list: Vec<(IpAddr, u64)>, last: &HashMap<IpAddr, usize>) {
        if list.is_empty() {
            return;
        }
        self.route_batch.cancel(last);
        for (vip, _) in &list {
            info!(%vip, "withdrawing");
        }
        self.withdraws_pending += list.len();
        self.metrics.bgp_withdraws.inc_by(list.len() as u64);
        let on_wire = self
            .edges
            .routes
            .withdraw_many(list.iter().map(|(vip, _)| *vip).collect());
        let done = self.done.clone();
        tokio::spawn(async move {
            on_wire.await;
            for (vip, ticket) in list {
                let _ = done.send(Done::Withdrawn { vip, ticket });
            }
        });
    }

    /// Queues an announce; the batch goes to the speaker when full or when the loop is idle
    /// ([`Client::flush_routes`]).
    pub(super) fn queue_announce(&mut self, vip: IpAddr, attrs: bgp::RouteAttrs) {
        if self.route_batch.push(vip, attrs) {
            self.flush_routes();
        }
    }

    /// Hands the waiting announces to the speaker in one `announce_many`.
    pub(super) fn flush_routes(&mut self) {
        if self.route_batch.is_empty() {
            return;
        }
        let batch = self.route_batch.take();
        tracing::debug!(vips = batch.len(), "announces handed to the speaker");
        self.edges.routes.announce_many(batch);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::client::state::Note;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, last])
    }

    #[test]
    fn withdraws_are_listed_in_order_with_their_last_index() {
        let cmds = vec![
            Cmd::Withdraw {
                vip: ip(1),
                ticket: 7,
            },
            Cmd::Note(Note::SynBeforeMapping),
            Cmd::Withdraw {
                vip: ip(2),
                ticket: 8,
            },
            Cmd::Withdraw {
                vip: ip(1),
                ticket: 9,
            },
        ];
        let (list, last) = withdraws(&cmds);
        assert_eq!(list, vec![(ip(1), 7), (ip(2), 8), (ip(1), 9)]);
        assert_eq!(last.get(&ip(1)), Some(&3));
        assert_eq!(last.get(&ip(2)), Some(&2));
        assert_eq!(last.len(), 2);
    }

    #[test]
    fn the_last_word_on_a_vip_stands() {
        let announce = |vip| Cmd::Announce {
            vip,
            local_pref: 100,
            drain: false,
            communities: vec![],
        };
        let withdraw = |vip, ticket| Cmd::Withdraw { vip, ticket };
        // announce then withdraw: the announce never reaches the speaker
        let cmds = vec![announce(ip(1)), withdraw(ip(1), 1), announce(ip(2))];
        let (_, last) = withdraws(&cmds);
        assert!(superseded(&last, ip(1), 0));
        assert!(
            !superseded(&last, ip(2), 2),
            "another VIP's announce stands"
        );
        // withdraw then announce: the withdraw goes first, the announce after it
        let cmds = vec![withdraw(ip(1), 1), announce(ip(1))];
        let (_, last) = withdraws(&cmds);
        assert!(!superseded(&last, ip(1), 1));
    }

    #[test]
    fn a_withdraw_cancels_the_waiting_announce_of_its_vip_only() {
        let mut b = RouteBatch::default();
        assert!(!b.push(ip(1), bgp::RouteAttrs::default()));
        assert!(!b.push(ip(2), bgp::RouteAttrs::default()));
        b.cancel(&HashMap::from([(ip(1), 0)]));
        let left: Vec<IpAddr> = b.take().into_iter().map(|(v, _)| v).collect();
        assert_eq!(left, vec![ip(2)]);
        assert!(b.is_empty());
    }

    #[test]
    fn a_full_batch_asks_to_go() {
        let mut b = RouteBatch::default();
        for i in 1..MAX_BATCH {
            assert!(!b.push(ip((i % 250) as u8), bgp::RouteAttrs::default()));
        }
        assert!(b.push(ip(1), bgp::RouteAttrs::default()));
    }
}
