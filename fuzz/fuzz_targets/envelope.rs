//! Fuzz the message envelope, the receiver's admission checks and the typed bodies: nothing a
//! peer or the broker sends may panic, and seal → parse must round-trip whatever body it is
//! given.
//!
//! The first byte picks a mode:
//! - 0: the bytes as a received message (`Verifier::admit` as a balancer and as the arbiter,
//!   `envelope::parse`);
//! - 1: the bytes as a body: sealed under a fixed header, it must open again to the same bytes;
//! - 2: the bytes as a body of the type and direction the second byte picks (`Message::decode`);
//! - 3: the bytes as a batch of received messages (split at 0x00), admitted together.
//!
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

use ipvs_sync::wire::admission::{Policy, Verifier};
use ipvs_sync::wire::envelope::{self, Header, MessageId};
use ipvs_sync::wire::messages::{Direction, Message, MessageType};
use ipvs_sync::wire::replay::ReplayTable;
use ipvs_sync::wire::{NodeKey, Senders};

/// RFC 8032 §7.1 test 1 seed: the arbiter of the seeds in fuzz/seeds/envelope.
const ARBITER_SEED: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";

fn verifiers() -> Option<(Verifier, Senders, Verifier, Senders)> {
    let key = NodeKey::from_text(ARBITER_SEED).ok()?;
    let as_balancer = Senders::Arbiter {
        name: "arbiter.example.net".into(),
        key: key.public(),
    };
    let as_arbiter = Senders::balancers(&key, "arbiter.example.net", BTreeMap::from([("lb1.example.net".to_owned(), key.public())]));
    let policy = |to: &[&str]| Policy {
        max_bytes: 1 << 16,
        accept_to: to.iter().map(|s| (*s).to_owned()).collect(),
    };
    Some((
        Verifier::new(policy(&["lb1.example.net", "broadcast"]), ReplayTable::new(16)),
        as_balancer,
        Verifier::new(policy(&["lbs"]), ReplayTable::new(16)),
        as_arbiter,
    ))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((mut bv, bs, mut av, asn)) = verifiers() else {
        return;
    };
    match mode % 4 {
        0 => {
            let _ = envelope::parse(rest);
            let _ = bv.admit(&bs, rest, 0);
            let _ = av.admit(&asn, rest, u64::MAX);
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let Ok(body) = serde_json::from_str::<Box<RawValue>>(text) else {
                return;
            };
            let Ok(key) = NodeKey::from_text(ARBITER_SEED) else {
                return;
            };
            let header = Header {
                kind: "fin_announce".into(),
                from: "arbiter.example.net".into(),
                to: "broadcast".into(),
                id: MessageId { epoch: 7, seq: 1 },
                ts_ms: 1_763_924_527_123,
            };
            match envelope::seal(&key, &header, &body) {
                Ok(sealed) => {
                    let opened = envelope::open(&key.public(), &sealed);
                    assert!(opened.is_ok(), "sealed message does not open: {opened:?}");
                    if let Ok(o) = opened {
                        assert_eq!(o.header, header);
                        assert_eq!(o.body.get(), body.get());
                    }
                }
                Err(_) => assert!(!body.get().starts_with('{')),
            }
        }
        2 => {
            let Some((&pick, body)) = rest.split_first() else {
                return;
            };
            let kind = MessageType::ALL[usize::from(pick >> 1) % MessageType::ALL.len()];
            let dir = if pick & 1 == 0 {
                Direction::ToServer
            } else {
                Direction::ToClient
            };
            let Ok(text) = std::str::from_utf8(body) else {
                return;
            };
            let Ok(raw) = serde_json::from_str::<Box<RawValue>>(text) else {
                return;
            };
            if let Ok(m) = Message::decode(kind.as_str(), dir, &raw) {
                // What decodes encodes, and decodes again to the same message.
                let again = m
                    .encode_body()
                    .map(|b| Message::decode(kind.as_str(), dir, &b));
                assert!(
                    matches!(again, Ok(Ok(ref m2)) if *m2 == m),
                    "{kind} {dir:?} does not round-trip: {text}"
                );
            }
        }
        _ => {
            let batch: Vec<&[u8]> = rest.split(|b| *b == 0).take(64).collect();
            let _ = bv.admit_batch(&bs, &batch, 0);
            let _ = av.admit_batch(&asn, &batch, 1);
        }
    }
});
