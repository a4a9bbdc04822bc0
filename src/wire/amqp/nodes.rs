//! Which broker node to try next: the nodes of `amqp_server` in an order shuffled once per
//! process (so a fleet's daemons spread over the cluster), walked round-robin from the node
//! last in use. Pure: the transport asks [`NodeOrder::next_node`] before each connection attempt
//! and reports the one that worked with [`NodeOrder::connected`].
//!
//! After a loss the next attempt goes to the node after the lost one, never to the lost one
//! first: the node that just failed (killed, partitioned into a minority) is the least likely
//! to answer. Every node is tried before any is tried twice.

/// The try order of `n` nodes and where in it we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOrder {
    order: Vec<usize>,
    /// Position in `order` of the last node handed out.
    at: usize,
}

impl NodeOrder {
    /// The order of `n` nodes shuffled by `seed` (Fisher–Yates on a xorshift stream); `n = 0`
    /// is taken as 1.
    pub fn shuffled(n: usize, seed: u64) -> NodeOrder {
        let n = n.max(1);
        let mut order: Vec<usize> = (0..n).collect();
        let mut x = seed | 1;
        for i in (1..n).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let j = usize::try_from(x % (i as u64 + 1)).unwrap_or(0);
            order.swap(i, j);
        }
        NodeOrder { order, at: n - 1 }
    }

    /// A seed that differs between processes (std's per-process random hasher keys).
    pub fn process_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    }

    /// The node to try next (an index into the configured list).
    pub fn next_node(&mut self) -> usize {
        self.at = (self.at + 1) % self.order.len();
        self.order[self.at]
    }

    /// Records that `node` is the one in use, so the next attempt after its loss goes to
    /// the node after it.
    pub fn connected(&mut self, node: usize) {
        if let Some(pos) = self.order.iter().position(|&i| i == node) {
            self.at = pos;
        }
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Never true; for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_is_tried_before_any_twice() {
        for seed in 0..50u64 {
            let mut o = NodeOrder::shuffled(3, seed);
            let mut round: Vec<usize> = (0..3).map(|_| o.next_node()).collect();
            round.sort_unstable();
            assert_eq!(round, [0, 1, 2], "seed {seed}");
        }
    }

    #[test]
    fn after_a_loss_the_next_node_comes_first() {
        let mut o = NodeOrder::shuffled(3, 7);
        let first = o.next_node();
        o.connected(first);
        let second = o.next_node();
        assert_ne!(second, first, "the lost node is not tried first");
        let third = o.next_node();
        assert_ne!(third, first);
        assert_ne!(third, second);
        assert_eq!(o.next_node(), first, "then round again");
        // Connected to another node (say the daemon found `third`): its loss leads to `first`.
        o.connected(third);
        assert_eq!(o.next_node(), first);
    }

    #[test]
    fn seeds_spread_the_first_node() {
        let mut firsts = [0u32; 3];
        for seed in 0..300u64 {
            let s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            firsts[NodeOrder::shuffled(3, s).next_node()] += 1;
        }
        assert!(firsts.iter().all(|&n| n > 50), "{firsts:?}");
    }

    #[test]
    fn one_node_is_always_that_node() {
        let mut o = NodeOrder::shuffled(1, 42);
        assert_eq!((o.next_node(), o.next_node()), (0, 0));
        let mut o = NodeOrder::shuffled(0, 42);
        assert_eq!(o.next_node(), 0);
        assert_eq!(o.len(), 1);
    }
}
