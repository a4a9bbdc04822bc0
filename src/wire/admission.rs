//! The receiver's admission checks, in order; each message stops at its first failure and is
//! counted by that reason ([`DropReason`]):
//!
//! 1. payload size ≤ `max_bytes` ([`DropReason::TooLarge`]), before anything is parsed;
//! 2. JSON envelope shape ([`DropReason::Malformed`]) and a signature of the right shape
//!    ([`DropReason::Unsigned`], [`DropReason::Forged`]);
//! 3. `from` is a sender this node accepts ([`DropReason::UnknownSender`]): on a balancer the
//!    pinned arbiter only, on the arbiter a balancer with a key file; never `lbs`,
//!    `broadcast` or a name outside the rules;
//! 4. the Ed25519 signature verifies with **that sender's** key, or, for a balancer's message
//!    to the arbiter, the MAC with the pair key of that balancer and the arbiter
//!    ([`DropReason::Forged`]): a key speaks for its own node only;
//! 5. `to` addresses this node: its name or `broadcast` on a balancer, `lbs` on the arbiter
//!    ([`DropReason::NotForUs`]);
//! 6. the id `(epoch, seq)` is new for the sender ([`DropReason::Replayed`],
//!    [`DropReason::Duplicate`]; see `replay.rs`).
//!
//! The replay window and the clock-offset estimate (`skew.rs`) are touched only by messages
//! whose signature verified, so nobody without a key can move them. Time never decides:
//! `ts` is measured, not checked.
//!
//! Signatures of a batch (what the consumer has ready, up to the prefetch) are checked
//! together with Ed25519 batch verification, which costs about half as much per signature at
//! 16 or more (see `benches/envelope.rs`); when a batch fails, each of its signatures is checked
//! alone to find the bad ones. Batch verification accepts what single verification accepts
//! and, for signatures a key's owner crafted on purpose (non-canonical points of small order),
//! possibly more: that lets a node only say what it could sign anyway.
//!
//! Pure: the caller passes the time and the senders; no I/O.

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::value::RawValue;

use super::envelope::Auth;
use super::envelope::{self, Header, Parsed, Reject};
use super::keys::{SenderKeys, Senders};
use super::messages::PeerRole;
use super::replay::{ReplayTable, Verdict};
use super::skew::ClockOffsets;

/// Smallest batch checked with batch verification; smaller ones are checked one by one.
pub const MIN_BATCH: usize = 4;

/// What a receiver admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Largest payload (the whole envelope), in bytes.
    pub max_bytes: usize,
    /// `to` values addressed to this node (its name and `broadcast`, or `lbs` for the
    /// arbiter).
    pub accept_to: Vec<String>,
}

/// A message that passed every check.
#[derive(Debug, Clone)]
pub struct Admitted<'a> {
    /// The signed header; `from` is verified.
    pub header: Header,
    /// The body, exactly as received (its schema is checked by the caller).
    pub body: &'a RawValue,
    /// The sender's role.
    pub role: PeerRole,
}

/// A batch through steps 1–4 ([`Policy::check_batch`]): each message with its verified sender's
/// role, or why it was refused; steps 5–6 ([`Verifier::admit_checked`]) still to come.
///
/// The split lets a receiver with several consumers check signatures (the costly part, which
/// grows with the message's size) outside the lock of the one replay state they share.
pub struct Checked<'a> {
    results: Vec<Result<(Parsed<'a>, PeerRole), Reject>>,
}

/// A receiver's admission state.
#[derive(Debug)]
pub struct Verifier {
    policy: Policy,
    replay: ReplayTable,
    clocks: ClockOffsets,
}

/// A message through steps 1–3, its signature not yet checked.
struct Candidate<'a, 'k> {
    slot: usize,
    parsed: Parsed<'a>,
    signed: Vec<u8>,
    sender: SenderKeys<'k>,
}

impl Verifier {
    /// A verifier whose replay windows are `replay` (restored from disk, or empty).
    pub fn new(policy: Policy, replay: ReplayTable) -> Self {
        Verifier {
            policy,
            replay,
            clocks: ClockOffsets::default(),
        }
    }

    /// The senders' clock offsets measured so far.
    pub fn clocks(&self) -> &ClockOffsets {
        &self.clocks
    }

    /// The clock offsets, to forget old senders.
    pub fn clocks_mut(&mut self) -> &mut ClockOffsets {
        &mut self.clocks
    }

    /// The replay windows.
    pub fn replay(&self) -> &ReplayTable {
        &self.replay
    }

    /// Runs every check on one message received at `now_ms` (receiver's clock).
    pub fn admit<'a>(
        &mut self,
        senders: &Senders,
        bytes: &'a [u8],
        now_ms: u64,
    ) -> Result<Admitted<'a>, Reject> {
        let mut out = self.admit_batch(senders, &[bytes], now_ms);
        out.pop().unwrap_or_else(|| {
            Err(Reject::Malformed {
                detail: "nothing to admit".to_owned(),
            })
        })
    }

    /// What this verifier admits.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Runs every check on messages received together, in their order (a message's id is
    /// recorded before the next one is checked, so a copy within the batch is a duplicate).
    pub fn admit_batch<'a>(
        &mut self,
        senders: &Senders,
        batch: &[&'a [u8]],
        now_ms: u64,
    ) -> Vec<Result<Admitted<'a>, Reject>> {
        let checked = self.policy.check_batch(senders, batch);
        self.admit_checked(checked, now_ms)
    }

    /// Steps 5–6 of a batch that went through [`Policy::check_batch`], in its order.
    pub fn admit_checked<'a>(
        &mut self,
        checked: Checked<'a>,
        now_ms: u64,
    ) -> Vec<Result<Admitted<'a>, Reject>> {
        checked
            .results
            .into_iter()
            .map(|r| r.and_then(|(parsed, role)| self.after_signature(parsed, role, now_ms)))
            .collect()
    }

    /// Steps 5–6, and the clock measurement, for a message whose signature verified.
    fn after_signature<'a>(
        &mut self,
        parsed: Parsed<'a>,
        role: PeerRole,
        now_ms: u64,
    ) -> Result<Admitted<'a>, Reject> {
        let h = parsed.header;
        if !self.policy.accept_to.contains(&h.to) {
            return Err(Reject::NotForUs {
                kind: h.kind,
                from: h.from,
                to: h.to,
            });
        }
        match self.replay.admit(&h.from, h.id) {
            Verdict::Fresh => {}
            Verdict::Duplicate => {
                return Err(Reject::Duplicate {
                    kind: h.kind,
                    from: h.from,
                    id: h.id,
                })
            }
            Verdict::Replayed => {
                let last = self.replay.mark(&h.from).unwrap_or(h.id);
                return Err(Reject::Replayed {
                    kind: h.kind,
                    from: h.from,
                    id: h.id,
                    last,
                });
            }
        }
        self.clocks.observe(&h.from, h.ts_ms, now_ms);
        Ok(Admitted {
            header: h,
            body: parsed.body,
            role,
        })
    }
}

impl Policy {
    /// Steps 1–4 of messages received together: size, shape, sender, signature (checked in
    /// one batch). Pure and read-only, so it runs outside any lock.
    pub fn check_batch<'a>(&self, senders: &Senders, batch: &[&'a [u8]]) -> Checked<'a> {
        let mut out: Vec<Option<Result<(Parsed<'a>, PeerRole), Reject>>> =
            (0..batch.len()).map(|_| None).collect();
        let mut candidates = Vec::with_capacity(batch.len());
        for (slot, bytes) in batch.iter().enumerate() {
            match self.precheck(senders, bytes) {
                Ok((parsed, sender)) => candidates.push(Candidate {
                    slot,
                    signed: parsed.signed_bytes(),
                    parsed,
                    sender,
                }),
                Err(r) => out[slot] = Some(Err(r)),
            }
        }
        let good = verify_all(&candidates);
        for (c, ok) in candidates.into_iter().zip(good) {
            out[c.slot] = Some(if ok {
                Ok((c.parsed, c.sender.role))
            } else {
                Err(Reject::Forged {
                    kind: c.parsed.header.kind,
                    from: c.parsed.header.from,
                })
            });
        }
        Checked {
            results: out
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(Reject::Malformed {
                            detail: "not checked".to_owned(),
                        })
                    })
                })
                .collect(),
        }
    }

    /// Steps 1–3.
    fn precheck<'a, 'k>(
        &self,
        senders: &'k Senders,
        bytes: &'a [u8],
    ) -> Result<(Parsed<'a>, SenderKeys<'k>), Reject> {
        if bytes.len() > self.max_bytes {
            return Err(Reject::TooLarge {
                len: bytes.len(),
                max: self.max_bytes,
            });
        }
        let parsed = envelope::parse(bytes)?;
        match senders.lookup(&parsed.header.from) {
            Some(sender) => Ok((parsed, sender)),
            None => Err(Reject::UnknownSender {
                kind: parsed.header.kind,
                from: parsed.header.from,
            }),
        }
    }
}

/// Whether each candidate's signature (or MAC) verifies with its sender's key: MACs one by
/// one (they are cheap); signatures in one batch check, and one check each when the batch
/// fails or is small.
fn verify_all(candidates: &[Candidate<'_, '_>]) -> Vec<bool> {
    let mut out = vec![false; candidates.len()];
    let mut sigs = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        match (&c.parsed.auth, c.sender.pair) {
            (Auth::Mac(tag), Some(pair)) => out[i] = pair.verifies(&c.signed, tag),
            (Auth::Mac(_), None) => out[i] = false,
            (Auth::Sig(sig), _) => sigs.push((i, *sig)),
        }
    }
    if sigs.len() >= MIN_BATCH {
        let msgs: Vec<&[u8]> = sigs
            .iter()
            .map(|(i, _)| candidates[*i].signed.as_slice())
            .collect();
        let batch: Vec<Signature> = sigs.iter().map(|(_, s)| *s).collect();
        let keys: Vec<VerifyingKey> = sigs
            .iter()
            .map(|(i, _)| candidates[*i].sender.key.0)
            .collect();
        if ed25519_dalek::verify_batch(&msgs, &batch, &keys).is_ok() {
            for (i, _) in &sigs {
                out[*i] = true;
            }
            return out;
        }
    }
    for (i, sig) in &sigs {
        out[*i] = candidates[*i]
            .sender
            .key
            .verifies(&candidates[*i].signed, sig);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::wire::envelope::tests::{arbiter_key, header, raw, vector, NOW};
    use crate::wire::envelope::{self, seal, DropReason, MessageId};
    use crate::wire::keys::NodeKey;

    const ME: &str = "lb1.example.net";

    fn client_verifier() -> Verifier {
        Verifier::new(
            Policy {
                max_bytes: 4096,
                accept_to: vec![ME.into(), "broadcast".into()],
            },
            ReplayTable::new(64),
        )
    }

    fn arbiter() -> Senders {
        Senders::Arbiter {
            name: "arbiter.example.net".into(),
            key: arbiter_key().public(),
        }
    }

    fn sealed_by(key: &NodeKey, from: &str, to: &str, seq: u64) -> Vec<u8> {
        let mut h = header(seq);
        h.from = from.into();
        h.to = to.into();
        seal(key, &h, &raw(r#"{"vips":["192.0.2.10"]}"#)).unwrap()
    }

    fn sealed(seq: u64, to: &str) -> Vec<u8> {
        sealed_by(&arbiter_key(), "arbiter.example.net", to, seq)
    }

    fn reason(r: Result<Admitted<'_>, Reject>) -> Option<DropReason> {
        r.err().map(|e| e.reason())
    }

    #[test]
    fn a_balancer_admits_the_pinned_arbiter_only() {
        let mut v = client_verifier();
        let s = arbiter();
        let reference = vector();
        let a = v.admit(&s, reference.as_bytes(), NOW).unwrap();
        assert_eq!(a.role, PeerRole::Server);
        assert_eq!(
            a.header.id,
            MessageId {
                epoch: 1_763_924_527,
                seq: 42
            }
        );
        // A balancer's key, signing as the arbiter, as itself, or as "broadcast".
        let lb2 = NodeKey::generate().unwrap();
        let cases = [
            (
                sealed_by(&lb2, "arbiter.example.net", ME, 43),
                DropReason::Forged,
            ),
            (
                sealed_by(&lb2, "lb2.example.net", ME, 44),
                DropReason::UnknownSender,
            ),
            (
                sealed_by(&lb2, "broadcast", ME, 45),
                DropReason::UnknownSender,
            ),
            (
                sealed_by(&arbiter_key(), "lbs", ME, 46),
                DropReason::UnknownSender,
            ),
            (sealed(47, "lb2.example.net"), DropReason::NotForUs),
            (sealed(48, "lbs"), DropReason::NotForUs),
            (vec![b' '; 4097], DropReason::TooLarge),
        ];
        for (m, want) in cases {
            assert_eq!(
                reason(v.admit(&s, &m, NOW)),
                Some(want),
                "{}",
                String::from_utf8_lossy(&m)
            );
        }
        // None of those moved the window: 43..48 are still fresh.
        for seq in 43..=48 {
            assert!(v.admit(&s, &sealed(seq, ME), NOW).is_ok(), "{seq}");
        }
    }

    #[test]
    fn the_arbiter_admits_each_balancer_with_its_own_key_only() {
        let lb1 = NodeKey::generate().unwrap();
        let lb2 = NodeKey::generate().unwrap();
        let s = Senders::balancers(
            &arbiter_key(),
            "arbiter.example.net",
            BTreeMap::from([
                ("lb1".to_owned(), lb1.public()),
                ("lb2".to_owned(), lb2.public()),
            ]),
        );
        let mut v = Verifier::new(
            Policy {
                max_bytes: 4096,
                accept_to: vec!["lbs".into()],
            },
            ReplayTable::new(64),
        );
        let first = sealed_by(&lb1, "lb1", "lbs", 1);
        let ok = v.admit(&s, &first, NOW).unwrap();
        assert_eq!(
            (ok.header.from.as_str(), ok.role),
            ("lb1", PeerRole::Client)
        );
        let cases = [
            (sealed_by(&lb1, "lb2", "lbs", 2), DropReason::Forged),
            (sealed_by(&lb1, "lb3", "lbs", 2), DropReason::UnknownSender),
            (
                sealed_by(&lb1, "broadcast", "lbs", 2),
                DropReason::UnknownSender,
            ),
            (
                sealed_by(&lb1, "arbiter.example.net", "lbs", 2),
                DropReason::UnknownSender,
            ),
            (sealed_by(&lb1, "lb1", "broadcast", 2), DropReason::NotForUs),
            (sealed_by(&lb1, "lb1", "lbs", 1), DropReason::Duplicate),
        ];
        for (m, want) in cases {
            assert_eq!(reason(v.admit(&s, &m, NOW)), Some(want));
        }
        assert!(v.admit(&s, &sealed_by(&lb2, "lb2", "lbs", 1), NOW).is_ok());
        // MACs with the pair key: lb1's own pass; lb1's pair key in lb2's name does not.
        let pair1 = lb1.pair_with_arbiter("lb1", "arbiter.example.net", &arbiter_key().public());
        let mac_by = |from: &str, seq| {
            let mut h = header(seq);
            h.from = from.into();
            h.to = "lbs".into();
            envelope::seal_mac(&pair1, &h, &raw("{}")).unwrap()
        };
        assert!(v.admit(&s, &mac_by("lb1", 10), NOW).is_ok());
        assert_eq!(
            reason(v.admit(&s, &mac_by("lb2", 10), NOW)),
            Some(DropReason::Forged)
        );
    }

    #[test]
    fn batches_give_the_same_verdicts_as_one_by_one() {
        let lb2 = NodeKey::generate().unwrap();
        let mut msgs: Vec<Vec<u8>> = (1..=20).map(|i| sealed(i, ME)).collect();
        msgs[3] = sealed_by(&lb2, "arbiter.example.net", ME, 4); // forged in the middle
        msgs[7] = sealed(7, ME); // a copy of the one before it, within the batch
        msgs[11] = b"{garbage".to_vec();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let mut batched = client_verifier();
        let got: Vec<_> = batched
            .admit_batch(&arbiter(), &refs, NOW)
            .into_iter()
            .map(reason)
            .collect();
        let mut single = client_verifier();
        let want: Vec<_> = refs
            .iter()
            .map(|m| reason(single.admit(&arbiter(), m, NOW)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(got[3], Some(DropReason::Forged));
        assert_eq!(got[7], Some(DropReason::Duplicate));
        assert_eq!(got[11], Some(DropReason::Malformed));
        assert_eq!(got.iter().filter(|r| r.is_none()).count(), 17);
        // An all-good batch takes the batch path and admits all.
        let good: Vec<Vec<u8>> = (100..116).map(|i| sealed(i, ME)).collect();
        let refs: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
        assert!(batched
            .admit_batch(&arbiter(), &refs, NOW)
            .iter()
            .all(Result::is_ok));
    }

    #[test]
    fn a_balancer_never_takes_a_mac_for_the_arbiters_signature() {
        // Whoever holds lb1's key knows the pair key of lb1 and the arbiter: a MAC with it
        // "from the arbiter" must not pass at lb1 (nor anywhere).
        let lb1 = NodeKey::generate().unwrap();
        let pair = lb1.pair_with_arbiter(ME, "arbiter.example.net", &arbiter_key().public());
        let mut h = header(50);
        h.to = ME.into();
        let m = envelope::seal_mac(&pair, &h, &raw(r#"{"vips":["192.0.2.10"]}"#)).unwrap();
        let mut v = client_verifier();
        assert_eq!(
            reason(v.admit(&arbiter(), &m, NOW)),
            Some(DropReason::Forged)
        );
    }

    #[test]
    fn skewed_clocks_are_measured_never_refused() {
        let mut v = client_verifier();
        for (seq, skew) in [(1u64, 600_000i64), (2, -600_000)] {
            let mut h = header(seq);
            h.to = ME.into();
            h.ts_ms = NOW.saturating_add_signed(skew);
            let m = seal(&arbiter_key(), &h, &raw("{}")).unwrap();
            assert!(v.admit(&arbiter(), &m, NOW).is_ok(), "skew {skew}");
        }
        // The largest ts − arrival seen: +600 s.
        assert_eq!(v.clocks().offset_ms("arbiter.example.net"), Some(600_000));
    }

    #[test]
    fn garbage_never_panics_and_never_passes() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let base = vector().into_bytes();
        let mut v = client_verifier();
        let s = arbiter();
        let mut admitted = 0;
        for round in 0..3_000 {
            let mut m = if round % 2 == 0 {
                base.clone()
            } else {
                (0..(next() % 300)).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 4 + 1) {
                if m.is_empty() {
                    break;
                }
                let i = (next() as usize) % m.len();
                match next() % 3 {
                    0 => m[i] = next() as u8,
                    1 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, b"{}[]\",:0\\"[(next() % 9) as usize]),
                }
            }
            if v.admit(&s, &m, NOW).is_ok() {
                admitted += 1;
            }
        }
        // Only an unchanged copy of the reference (or one differing in the case of a hex
        // digit of `sig`) can pass, and only once.
        assert!(admitted <= 1, "{admitted} mutated messages were admitted");
    }
}
