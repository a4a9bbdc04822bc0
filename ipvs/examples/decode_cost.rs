//! Host-side costs, no IPVS kernel needed: decoding destination dump parts (the captured
//! kernel answers of `ipvs/tests/vectors` replayed through the dump's decoder), and
//! parsing the JSON form of a tree of 5,000 services × 20 destinations.
//!
//! `cargo run --release -p ipvs --example decode_cost` (under `perf record` to profile).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Instant;

use ipvs::packet::{dest_from_payload, Frame, Frames};
const IPVS_CMD_ATTR_DEST: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;
use ipvs::Family;

const FAMILY: u16 = 0x20;
const VECTORS: &str = include_str!("../tests/vectors/ipvsadm-6.1.txt");

fn main() {
    json_cost();
    let datagrams: Vec<Vec<u8>> = VECTORS
        .lines()
        .filter_map(|l| l.strip_prefix("< "))
        .map(|h| {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect();
    // Datagrams whose messages carry v4 destinations.
    let mut dest_grams = Vec::new();
    for d in &datagrams {
        let mut n = 0;
        for f in Frames::new(d, FAMILY) {
            if let Ok((_, Frame::Ipvs { attrs, .. })) = f {
                for a in attrs.flatten() {
                    if a.0 & NLA_TYPE_MASK == IPVS_CMD_ATTR_DEST
                        && dest_from_payload(a.1, Family::Inet).is_ok()
                    {
                        n += 1;
                    }
                }
            }
        }
        if n > 0 {
            dest_grams.push((d.clone(), n));
        }
    }
    let per_round: usize = dest_grams.iter().map(|g| g.1).sum();
    let rounds = 100_000 / per_round.max(1);
    let t = Instant::now();
    let mut total = 0usize;
    for _ in 0..rounds {
        let mut map = BTreeMap::new();
        for (d, _) in &dest_grams {
            for f in Frames::new(d, FAMILY) {
                if let Ok((_, Frame::Ipvs { attrs, .. })) = f {
                    for a in attrs.flatten() {
                        if a.0 & NLA_TYPE_MASK == IPVS_CMD_ATTR_DEST {
                            if let Ok(dest) = dest_from_payload(a.1, Family::Inet) {
                                map.insert(dest.key, dest);
                            }
                        }
                    }
                }
            }
        }
        total += map.len();
    }
    let dt = t.elapsed();
    println!(
        "{} dests decoded ({} per round, {} distinct), {:.3} s, {:.0} ns/dest",
        rounds * per_round,
        per_round,
        total / rounds.max(1),
        dt.as_secs_f64(),
        dt.as_nanos() as f64 / (rounds * per_round) as f64
    );
}

fn json_cost() {
    use ipvs::{Dest, Service, ServiceKey, ServiceSpec, Tree};
    use std::net::IpAddr;
    let tree: Tree = (0..5000usize)
        .map(|i| {
            let vip = IpAddr::from([192, 0, 2, (i % 250) as u8 + 1]);
            let port = 1000 + (i / 250) as u16;
            let mut svc = Service::new(ServiceSpec::new(ServiceKey::tcp(vip, port), "wrr"));
            for d in 0..20usize {
                let rip = IpAddr::from([198, 51, 100, (d % 250) as u8 + 1]);
                svc.insert_dest(Dest::new(rip, port).weight(1 + (d % 5) as u32));
            }
            svc
        })
        .collect();
    let text = serde_json::to_string(&tree).unwrap();
    let t = Instant::now();
    let back = ipvs::tool::parse_tree(std::path::Path::new("x"), &text).unwrap();
    println!(
        "json: {} bytes, parse {:.3} s",
        text.len(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(back, tree);
}
