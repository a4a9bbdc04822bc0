//! The dump path decodes without building typed messages (`Frames`, `service_from_payload`,
//! `dest_from_payload`); these tests hold it to the typed codec (`Message::decode_all`,
//! `parse_nlas` + `service_from_attrs`/`dest_from_attrs`): on every datagram captured
//! from ipvsadm and the kernel, and on random attribute streams, both accept the same
//! inputs and give the same objects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ipvs::packet::{
    dest_from_attrs, dest_from_payload, parse_nlas, service_from_attrs, service_from_payload,
    DestAttr, Frame, Frames, IpvsAttr, Message, Payload, ServiceAttr,
};
use ipvs::Family;
use proptest::prelude::*;

const FAMILY: u16 = 0x20;
const VECTORS: &str = include_str!("vectors/ipvsadm-6.1.txt");

fn datagrams() -> Vec<Vec<u8>> {
    VECTORS
        .lines()
        .filter_map(|l| l.strip_prefix("< ").or_else(|| l.strip_prefix("> ")))
        .map(|h| {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn every_captured_datagram_reads_the_same_both_ways() {
    let (mut services, mut dests) = (0, 0);
    for bytes in datagrams() {
        let typed = Message::decode_all(&bytes, FAMILY).unwrap();
        let frames: Vec<_> = Frames::new(&bytes, FAMILY).map(Result::unwrap).collect();
        assert_eq!(typed.len(), frames.len());
        for (msg, (seq, frame)) in typed.iter().zip(frames) {
            assert_eq!(msg.seq, seq);
            match (&msg.payload, frame) {
                (Payload::Ipvs(m), Frame::Ipvs { cmd, attrs }) => {
                    assert_eq!(m.cmd, cmd);
                    let raw: Vec<(u16, &[u8])> = attrs.map(Result::unwrap).collect();
                    assert_eq!(raw.len(), m.attrs.len());
                    for (attr, (_, payload)) in m.attrs.iter().zip(raw) {
                        match attr {
                            IpvsAttr::Service(n) => {
                                // Requests that only name a service decode to an error
                                // (no scheduler), both ways.
                                let a = service_from_attrs(&n.attrs);
                                let b = service_from_payload(payload);
                                assert_eq!(a.is_ok(), b.is_ok());
                                if let (Ok(a), Ok(b)) = (a, b) {
                                    services += 1;
                                    assert_eq!(a, b);
                                }
                            }
                            IpvsAttr::Dest(n) => {
                                for fam in [Family::Inet, Family::Inet6] {
                                    let a = dest_from_attrs(&n.attrs, fam);
                                    let b = dest_from_payload(payload, fam);
                                    assert_eq!(a.is_ok(), b.is_ok());
                                    if let (Ok(a), Ok(b)) = (a, b) {
                                        dests += 1;
                                        assert_eq!(a, b);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                (Payload::Error { error, .. }, Frame::Error(e)) => assert_eq!(*error, e),
                (Payload::Done(_), Frame::Done) => {}
                (Payload::Other(_), Frame::Other) => {}
                (p, f) => panic!("typed {p:?} but borrowed {f:?}"),
            }
        }
    }
    // Every service of the dump and of the add/edit requests, and the destinations.
    assert!(services >= 10, "{services} services");
    assert!(dests >= 10, "{dests} destinations");
}

/// One attribute: a type from the family's range (plus unknown ones, with and without
/// NLA_F_NESTED) and a payload that is mostly of a plausible length.
fn attr(types: std::ops::Range<u16>) -> impl Strategy<Value = (u16, Vec<u8>)> {
    let payload = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 4),
        2 => prop::collection::vec(any::<u8>(), 2),
        2 => prop::collection::vec(any::<u8>(), 16),
        1 => prop::collection::vec(any::<u8>(), 8),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        // A nested list of counters, as STATS/STATS64 carry.
        2 => prop::collection::vec(
            (1u16..13, prop_oneof![Just(4usize), Just(8), 0usize..10]),
            0..6
        )
        .prop_map(|items| {
            let mut out = Vec::new();
            for (t, len) in items {
                put_attr(&mut out, t, &vec![0x5a; len]);
            }
            out
        }),
    ];
    (types, any::<bool>(), payload).prop_map(|(t, nested, p)| {
        let t = if nested { t | 0x8000 } else { t };
        (t, p)
    })
}

fn put_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap();
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn stream(attrs: &[(u16, Vec<u8>)], cut: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, p) in attrs {
        put_attr(&mut out, *t, p);
    }
    // Sometimes a truncated stream.
    let keep = out.len().saturating_sub(cut % 3 * (cut % 7));
    out.truncate(keep);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn dest_payload_decodes_like_the_typed_list(
        attrs in prop::collection::vec(attr(1..17), 0..14),
        cut in 0usize..20,
        v6 in any::<bool>(),
    ) {
        let bytes = stream(&attrs, cut);
        let fam = if v6 { Family::Inet6 } else { Family::Inet };
        let typed = parse_nlas::<DestAttr>(&bytes).and_then(|a| dest_from_attrs(&a, fam));
        let borrowed = dest_from_payload(&bytes, fam);
        prop_assert_eq!(typed.is_ok(), borrowed.is_ok(), "{:?} vs {:?}", typed, borrowed);
        if let (Ok(a), Ok(b)) = (typed, borrowed) {
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn service_payload_decodes_like_the_typed_list(
        attrs in prop::collection::vec(attr(1..14), 0..14),
        cut in 0usize..20,
    ) {
        let bytes = stream(&attrs, cut);
        let typed = parse_nlas::<ServiceAttr>(&bytes).and_then(|a| service_from_attrs(&a));
        let borrowed = service_from_payload(&bytes);
        prop_assert_eq!(typed.is_ok(), borrowed.is_ok(), "{:?} vs {:?}", typed, borrowed);
        if let (Ok(a), Ok(b)) = (typed, borrowed) {
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn frames_read_random_datagrams_like_decode_all(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let typed = Message::decode_all(&bytes, FAMILY);
        let frames: Result<Vec<_>, _> = Frames::new(&bytes, FAMILY).collect();
        // The typed decoder also parses attributes, so it may refuse what the frame view
        // accepts; never the other way round.
        if typed.is_ok() {
            prop_assert!(frames.is_ok());
            prop_assert_eq!(typed.unwrap().len(), frames.unwrap().len());
        }
    }
}
