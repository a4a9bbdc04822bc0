//! Fuzz the message envelope and the typed bodies: nothing a peer or the broker sends may
//! panic, and seal → open must round-trip whatever body it is given.
//!
//! The first byte picks a mode:
//! - 0: the bytes as a received message (`Verifier::verify`, `open`);
//! - 1: the bytes as a body: sealed under a fixed header, it must open again to the same bytes;
//! - 2: the bytes as a body of the type and direction the second byte picks (`Message::decode`).
//!
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

use ipvs_sync::wire::envelope::{self, Header, Key, Policy, Verifier};
use ipvs_sync::wire::messages::{Direction, Message, MessageType};

const KEY: &[u8] = b"fuzzing key, at least 32 bytes!!";

fuzz_target!(|data: &[u8]| {
    let Ok(key) = Key::new(KEY) else { return };
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = envelope::open(&key, rest);
            let mut v = Verifier::new(
                key,
                Policy {
                    max_bytes: 1 << 16,
                    max_age_ms: u64::MAX,
                    accept_to: vec!["lbs".into(), "broadcast".into()],
                },
            );
            let _ = v.verify(rest, 0);
            let _ = v.verify(rest, u64::MAX);
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let Ok(body) = serde_json::from_str::<Box<RawValue>>(text) else {
                return;
            };
            let header = Header {
                kind: "fin_announce".into(),
                from: "arbiter.example.net".into(),
                to: "broadcast".into(),
                seq: 1,
                ts_ms: 1_763_924_527_123,
            };
            match envelope::seal(&key, &header, &body) {
                Ok(sealed) => {
                    let opened = envelope::open(&key, &sealed);
                    assert!(opened.is_ok(), "sealed message does not open: {opened:?}");
                    if let Ok(o) = opened {
                        assert_eq!(o.header, header);
                        assert_eq!(o.body.get(), body.get());
                    }
                }
                Err(_) => assert!(!body.get().starts_with('{')),
            }
        }
        _ => {
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
    }
});
