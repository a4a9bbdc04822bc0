//! What signing costs per message: the v1 envelope (HMAC-SHA256 with one shared key) against
//! v2 (Ed25519 signatures with a key per node, and the pair-key MAC balancers use towards the
//! arbiter), sealing and verifying, for a heartbeat and for a large tree; and the arbiter's
//! whole admission of a heartbeat, signed (in batches of the sizes the consumer sees) or MAC'd.
//!
//! `cargo bench --bench envelope` (prints ns per operation; no root, no network). The v1
//! layout is built here as it was: HMAC over "ipvs-sync-envelope-v1\n" + header + body.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use ipvs_sync::wire::admission::{Policy, Verifier};
use ipvs_sync::wire::envelope::{self, Header, MessageId};
use ipvs_sync::wire::replay::ReplayTable;
use ipvs_sync::wire::{NodeKey, Senders};
use serde_json::value::RawValue;

/// Runs `f` for at least `min` and returns ns per call (median of 5 rounds).
fn ns_per_op(min: Duration, mut f: impl FnMut()) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < min {
            f();
            n += 1;
        }
        rounds.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

fn v1_mac(key: &Hmac<sha2::Sha256>, h: &Header, body: &[u8]) -> [u8; 32] {
    let mut mac = key.clone();
    mac.update(b"ipvs-sync-envelope-v1\n");
    mac.update(
        format!(
            "{}\n{}\n{}\n{}\n{}\n",
            h.kind, h.from, h.to, h.id.seq, h.ts_ms
        )
        .as_bytes(),
    );
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn main() {
    let min = Duration::from_millis(300);
    let balancer = NodeKey::generate().unwrap();
    let arbiter = NodeKey::generate().unwrap();
    let pair = balancer.pair_with_arbiter("lb00001", "arbiter", &arbiter.public());
    let arbiter_pair = arbiter.pair_with_balancer("arbiter", "lb00001", &balancer.public());
    let hmac_key = Hmac::<sha2::Sha256>::new_from_slice(&[7u8; 32]).unwrap();
    let heartbeat = r#"{"role":"client","uptime":12345,"version":"0.1.0","serial":1763924527,"announced":["192.0.2.10","2001:db8::1"]}"#;
    // A tree of 5,000 services × 20 real servers is about 6 MB of JSON; bodies of that size.
    let tree = format!(r#"{{"pad":"{}"}}"#, "x".repeat(6 << 20));
    println!("| body | operation | v1 HMAC-SHA256 (shared key) | v2 Ed25519 signature | v2 pair-key MAC |");
    println!("|---|---|---:|---:|---:|");
    for (what, body) in [
        ("heartbeat (118 B)", heartbeat.to_owned()),
        ("6 MB tree", tree),
    ] {
        let raw = RawValue::from_string(body.clone()).unwrap();
        let h = Header {
            kind: "heartbeat".into(),
            from: "lb00001".into(),
            to: "lbs".into(),
            id: MessageId {
                epoch: 1_763_924_527,
                seq: 42,
            },
            ts_ms: 1_763_924_527_123,
        };
        let min = if body.len() > 1 << 20 { min * 4 } else { min };
        let seal_v1 = ns_per_op(min, || {
            black_box(v1_mac(&hmac_key, &h, body.as_bytes()));
        });
        let seal_v2 = ns_per_op(min, || {
            black_box(envelope::seal(&balancer, &h, &raw).unwrap());
        });
        let seal_mac = ns_per_op(min, || {
            black_box(envelope::seal_mac(&pair, &h, &raw).unwrap());
        });
        let sealed = envelope::seal(&balancer, &h, &raw).unwrap();
        let maced = envelope::seal_mac(&pair, &h, &raw).unwrap();
        let public = balancer.public();
        let mac = v1_mac(&hmac_key, &h, body.as_bytes());
        let open_v1 = ns_per_op(min, || {
            // Parse (same JSON work as v2) and check the MAC.
            let p = envelope::parse(&sealed).unwrap();
            let got = v1_mac(&hmac_key, &p.header, p.body.get().as_bytes());
            black_box(got == mac);
        });
        let open_v2 = ns_per_op(min, || {
            black_box(envelope::open(&public, &sealed).unwrap());
        });
        let open_mac = ns_per_op(min, || {
            let p = envelope::parse(&maced).unwrap();
            assert!(p.verifies(&public, Some(&arbiter_pair)));
        });
        println!("| {what} | seal | {seal_v1:.0} ns | {seal_v2:.0} ns | {seal_mac:.0} ns |");
        println!(
            "| {what} | parse + verify | {open_v1:.0} ns | {open_v2:.0} ns | {open_mac:.0} ns |"
        );
    }

    // The arbiter's view: N heartbeats of N balancers taken in one batch by the verifier
    // (parse, sender lookup, batch signature check, replay window), per message.
    println!();
    println!("| heartbeats | batch | admission per heartbeat (parse, sender, authenticator, window), best of 5 |");
    println!("|---|---:|---:|");
    let n = 64;
    let keys: Vec<NodeKey> = (0..n).map(|_| NodeKey::generate().unwrap()).collect();
    let senders = Senders::balancers(
        &arbiter,
        "arbiter",
        keys.iter()
            .enumerate()
            .map(|(i, k)| (format!("lb{i:05}"), k.public()))
            .collect(),
    );
    let pairs: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| k.pair_with_arbiter(&format!("lb{i:05}"), "arbiter", &arbiter.public()))
        .collect();
    let body = RawValue::from_string(heartbeat.to_owned()).unwrap();
    let runs = [1usize, 2, 4, 8, 16, 32, 64]
        .into_iter()
        .map(|b| ("signed", b))
        .chain([("MAC'd", 1), ("MAC'd", 16)]);
    for (how, batch) in runs {
        // Sealed beforehand: only the receiver's work is timed.
        let rounds = 4096 / batch;
        let msgs: Vec<Vec<Vec<u8>>> = (0..rounds as u64)
            .map(|seq| {
                (0..batch)
                    .map(|i| {
                        let h = Header {
                            kind: "heartbeat".into(),
                            from: format!("lb{i:05}"),
                            to: "lbs".into(),
                            id: MessageId {
                                epoch: 1,
                                seq: seq + 1,
                            },
                            ts_ms: 0,
                        };
                        if how == "signed" {
                            envelope::seal(&keys[i], &h, &body).unwrap()
                        } else {
                            envelope::seal_mac(&pairs[i], &h, &body).unwrap()
                        }
                    })
                    .collect()
            })
            .collect();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let mut v = Verifier::new(
                Policy {
                    max_bytes: 1 << 20,
                    accept_to: vec!["lbs".into()],
                },
                ReplayTable::new(1024),
            );
            let t = Instant::now();
            for round in &msgs {
                let refs: Vec<&[u8]> = round.iter().map(Vec::as_slice).collect();
                let r = v.admit_batch(&senders, &refs, 0);
                assert!(r.iter().all(Result::is_ok));
            }
            best = best.min(t.elapsed().as_nanos() as f64 / (rounds * batch) as f64);
        }
        println!("| {how} | {batch} | {best:.0} ns |");
    }
}
