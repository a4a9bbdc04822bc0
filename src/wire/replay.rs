//! Replay protection: a sliding window of message ids per sender, like IPsec's (RFC 4303
//! §3.4.3), over `(epoch, seq)`.
//!
//! A sender numbers its messages `(epoch, seq)`: the epoch grows with every start of the
//! sender (kept on its disk), seq counts from 1 within it. A receiver keeps per sender the
//! epoch it saw last, a *floor* (every seq at or below it counts as seen) and the seqs seen
//! above the floor, at most `capacity` of them; past that the lowest becomes the floor.
//!
//! | id of the message                              | verdict |
//! |------------------------------------------------|---------|
//! | epoch above the window's                       | [`Verdict::Fresh`] (the sender restarted) |
//! | epoch below the window's                       | [`Verdict::Replayed`] |
//! | same epoch, seq ≤ floor                        | [`Verdict::Replayed`] (older than the window remembers) |
//! | same epoch, seq seen                           | [`Verdict::Duplicate`] |
//! | same epoch, seq above the floor and not seen   | [`Verdict::Fresh`], even below the highest seen |
//!
//! Seqs leave the window lowest first and raise the floor to themselves, so every id ever
//! taken is either still in the window or at or below the floor: none is taken twice.
//!
//! The last row is why a window and not "greater than the last": a message republished after a
//! lost publisher confirm keeps its id and may arrive after newer ones. When the broker did
//! keep the first copy, the second is a [`Verdict::Duplicate`]; when it did not, the
//! republished copy is the first and is taken.
//!
//! The receiver writes each sender's highest id to disk before it acts on a message
//! (`state.rs`); a restarted receiver starts each window at that mark ([`Window::restored`]),
//! so nothing it took before the restart is taken again. Pure: no I/O, no clock.

use std::collections::{HashMap, VecDeque};

use super::envelope::MessageId;

/// Seqs remembered per sender above its floor (a second copy arriving up to this many
/// messages from that sender late is still told from a replay).
pub const DEFAULT_CAPACITY: usize = 1024;

/// What to do with a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Never seen: take it.
    Fresh,
    /// Seen already within the window: a second copy, drop it.
    Duplicate,
    /// Below the window or of an earlier epoch: drop it.
    Replayed,
}

/// One sender's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    epoch: u64,
    /// Every seq at or below this counts as seen.
    floor: u64,
    /// Seqs seen above the floor, ascending.
    seen: VecDeque<u64>,
}

impl Window {
    /// A window that counts everything up to `mark` (inclusive) as seen: where a restarted
    /// receiver starts.
    pub fn restored(mark: MessageId) -> Window {
        Window {
            epoch: mark.epoch,
            floor: mark.seq,
            seen: VecDeque::new(),
        }
    }

    /// The verdict on `id`, without recording it.
    pub fn check(&self, id: MessageId) -> Verdict {
        if id.epoch > self.epoch {
            return Verdict::Fresh;
        }
        if id.epoch < self.epoch || id.seq <= self.floor {
            return Verdict::Replayed;
        }
        if self.seen.binary_search(&id.seq).is_ok() {
            Verdict::Duplicate
        } else {
            Verdict::Fresh
        }
    }

    /// Records `id` (which [`Window::check`] found fresh), keeping at most `capacity` seqs.
    pub fn accept(&mut self, id: MessageId, capacity: usize) {
        if id.epoch > self.epoch {
            *self = Window {
                epoch: id.epoch,
                floor: 0,
                seen: VecDeque::new(),
            };
        }
        if let Err(at) = self.seen.binary_search(&id.seq) {
            self.seen.insert(at, id.seq);
        }
        while self.seen.len() > capacity.max(1) {
            if let Some(lowest) = self.seen.pop_front() {
                self.floor = lowest;
            }
        }
    }

    /// The highest id counted as seen.
    pub fn mark(&self) -> MessageId {
        MessageId {
            epoch: self.epoch,
            seq: self
                .seen
                .back()
                .copied()
                .unwrap_or(self.floor)
                .max(self.floor),
        }
    }
}

/// The windows of every sender a receiver heard.
#[derive(Debug, Clone, Default)]
pub struct ReplayTable {
    windows: HashMap<String, Window>,
    capacity: usize,
}

impl ReplayTable {
    /// An empty table keeping `capacity` seqs per sender.
    pub fn new(capacity: usize) -> ReplayTable {
        ReplayTable {
            windows: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// A table whose windows start at the marks a previous run left on disk.
    pub fn restored(capacity: usize, marks: impl IntoIterator<Item = (String, MessageId)>) -> Self {
        let mut t = ReplayTable::new(capacity);
        for (from, mark) in marks {
            t.windows.insert(from, Window::restored(mark));
        }
        t
    }

    /// The verdict on `id` from `from`, without recording it.
    pub fn check(&self, from: &str, id: MessageId) -> Verdict {
        self.windows
            .get(from)
            .map_or(Verdict::Fresh, |w| w.check(id))
    }

    /// Records `id` from `from` if it is fresh; returns the verdict either way.
    pub fn admit(&mut self, from: &str, id: MessageId) -> Verdict {
        let verdict = self.check(from, id);
        if verdict == Verdict::Fresh {
            let capacity = self.capacity;
            match self.windows.get_mut(from) {
                Some(w) => w.accept(id, capacity),
                None => {
                    let mut w = Window::restored(MessageId {
                        epoch: id.epoch,
                        seq: 0,
                    });
                    w.accept(id, capacity);
                    self.windows.insert(from.to_owned(), w);
                }
            }
        }
        verdict
    }

    /// The highest id seen from `from`.
    pub fn mark(&self, from: &str) -> Option<MessageId> {
        self.windows.get(from).map(Window::mark)
    }

    /// Every sender's mark, for a snapshot on disk.
    pub fn marks(&self) -> impl Iterator<Item = (&str, MessageId)> {
        self.windows.iter().map(|(k, w)| (k.as_str(), w.mark()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(epoch: u64, seq: u64) -> MessageId {
        MessageId { epoch, seq }
    }

    use Verdict::{Duplicate as D, Fresh as F, Replayed as R};

    /// One case of the table: name, capacity, and each step's (epoch, seq) and verdict.
    type Case = (&'static str, usize, &'static [((u64, u64), Verdict)]);

    /// Runs `steps` (id, expected verdict) through one sender's window of `capacity`.
    fn run(capacity: usize, steps: &[((u64, u64), Verdict)]) {
        let mut t = ReplayTable::new(capacity);
        for (i, ((e, s), want)) in steps.iter().enumerate() {
            assert_eq!(t.admit("lb1", id(*e, *s)), *want, "step {i}: {e}/{s}");
        }
    }

    #[test]
    fn the_table_of_the_module_doc() {
        let cases: &[Case] = &[
            ("in order", 4, &[((1, 1), F), ((1, 2), F), ((1, 3), F)]),
            (
                "gaps are fine",
                4,
                &[((1, 1), F), ((1, 5), F), ((1, 90), F)],
            ),
            (
                "same id twice",
                4,
                &[((1, 1), F), ((1, 2), F), ((1, 2), D), ((1, 1), D)],
            ),
            (
                "republished copy arriving after newer ones, first copy lost",
                4,
                &[
                    ((1, 1), F),
                    ((1, 3), F),
                    ((1, 4), F),
                    ((1, 2), F),
                    ((1, 2), D),
                ],
            ),
            (
                "below the window",
                2,
                &[
                    ((1, 1), F),
                    ((1, 2), F),
                    ((1, 3), F),
                    ((1, 1), R),
                    ((1, 2), D),
                ],
            ),
            (
                "an unseen seq above the floor is still taken once, a forgotten one never",
                2,
                &[
                    ((1, 1), F),
                    ((1, 3), F),
                    ((1, 4), F),
                    ((1, 2), F),
                    ((1, 2), R),
                    ((1, 3), D),
                    ((1, 1), R),
                ],
            ),
            (
                "a new epoch restarts the numbering",
                4,
                &[
                    ((1, 7), F),
                    ((2, 1), F),
                    ((2, 2), F),
                    ((1, 8), R),
                    ((1, 7), R),
                ],
            ),
            ("an older epoch first", 4, &[((5, 1), F), ((4, 99), R)]),
        ];
        for (what, capacity, steps) in cases {
            eprintln!("case: {what}");
            run(*capacity, steps);
        }
    }

    #[test]
    fn senders_are_kept_apart() {
        let mut t = ReplayTable::new(8);
        assert_eq!(t.admit("lb1", id(1, 5)), F);
        assert_eq!(t.admit("lb2", id(1, 5)), F);
        assert_eq!(t.admit("lb1", id(1, 5)), D);
        assert_eq!(t.mark("lb2"), Some(id(1, 5)));
        assert_eq!(t.mark("lb3"), None);
    }

    #[test]
    fn a_restored_window_takes_nothing_up_to_the_mark() {
        let mut t = ReplayTable::restored(8, [("arbiter".to_owned(), id(7, 100))]);
        for (i, want) in [
            ((7, 100), R),
            ((7, 3), R),
            ((6, 500), R),
            ((7, 101), F),
            ((8, 1), F),
        ] {
            assert_eq!(t.admit("arbiter", id(i.0, i.1)), want, "{i:?}");
        }
        assert_eq!(t.mark("arbiter"), Some(id(8, 1)));
    }

    #[test]
    fn marks_are_the_highest_seen_and_survive_a_round_trip() {
        let mut t = ReplayTable::new(3);
        for s in [5, 2, 9, 7, 8] {
            assert_eq!(t.admit("a", id(1, s)), F, "{s}");
        }
        // Capacity 3: the floor rose to 5 (2 and 5 forgotten), seen = 7, 8, 9; 6 was never
        // seen, so it may still come once.
        assert_eq!(t.check("a", id(1, 5)), R);
        assert_eq!(t.check("a", id(1, 2)), R);
        assert_eq!(t.check("a", id(1, 6)), F);
        assert_eq!(t.check("a", id(1, 8)), D);
        assert_eq!(t.mark("a"), Some(id(1, 9)));
        let marks: Vec<_> = t.marks().map(|(k, m)| (k.to_owned(), m)).collect();
        let back = ReplayTable::restored(3, marks);
        for s in [2, 5, 7, 8, 9] {
            assert_eq!(back.check("a", id(1, s)), R, "{s}");
        }
        assert_eq!(back.check("a", id(1, 10)), F);
    }

    #[test]
    fn a_window_never_grows_past_its_capacity() {
        let mut w = Window::restored(id(1, 0));
        for s in (1..10_000u64).rev().step_by(3) {
            w.accept(id(1, s + 20_000), 16);
        }
        assert!(w.seen.len() <= 16);
        assert_eq!(w.mark(), id(1, 29_999));
    }
}
