//! Runs N BFD sessions against a router for a while, then prints what they did and what they
//! cost (CPU time and peak RSS of this process, from /proc/self).
//!
//! ```sh
//! # 10 sessions to 192.0.2.1 … 192.0.2.10 at 50 ms × 3 for 60 s:
//! cargo run --release -p bfd --example bfd -- --remote 192.0.2.1 --sessions 10 \
//!     --min-tx 50 --min-rx 50 --multiplier 3 --seconds 60
//! # every datagram in and out, in hex:
//! RUST_LOG=bfd::wire=trace cargo run -p bfd --example bfd -- --remote 192.0.2.1
//! ```
//!
//! Session i goes to the `remote` address plus i (and from `local` plus i when given), so the
//! router needs N addresses: sessions are told apart by the neighbor's address.
//! `bfd/bench/bird.sh` sets that up with BIRD in network namespaces and runs this example
//! (`bfd/bench/bird.sh 10 50 60 bird` runs BIRD against BIRD instead, for reference).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bfd::{Bfd, BfdConfig, BfdEvent, Damping, PeerSpec};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// First neighbor address.
    #[arg(long)]
    remote: IpAddr,
    /// Number of sessions (neighbors remote, remote+1, …).
    #[arg(long, default_value_t = 1)]
    sessions: u32,
    /// First source address (session i uses local + i; default: the kernel's choice).
    #[arg(long)]
    local: Option<IpAddr>,
    /// Desired Min TX, milliseconds.
    #[arg(long, default_value_t = 300)]
    min_tx: u64,
    /// Required Min RX, milliseconds.
    #[arg(long, default_value_t = 300)]
    min_rx: u64,
    /// Detect Mult.
    #[arg(long, default_value_t = 3)]
    multiplier: u8,
    /// How long to run, seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Send AdminDown to every neighbor at the end (otherwise just stop).
    #[arg(long)]
    admin_down_at_exit: bool,
}

fn nth(base: IpAddr, i: u32) -> IpAddr {
    match base {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(i)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(u128::from(i))).into()),
    }
}

/// (user + system CPU seconds, peak RSS in KiB) of this process.
fn usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are the 14th and 15th fields overall.
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let (bfd, mut events) = Bfd::start(BfdConfig {
        damping: Damping::OFF,
        ..BfdConfig::default()
    })
    .expect("start BFD");
    for i in 0..args.sessions {
        bfd.add_peer(PeerSpec {
            local: args.local.map(|a| nth(a, i)),
            min_tx: Duration::from_millis(args.min_tx),
            min_rx: Duration::from_millis(args.min_rx),
            multiplier: args.multiplier,
            ..PeerSpec::new(format!("s{i}"), nth(args.remote, i))
        })
        .await
        .expect("add peer");
    }
    let (cpu0, _) = usage();
    let t0 = Instant::now();
    let end = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    let (mut ups, mut downs) = (0u32, 0u32);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(BfdEvent::Up { name }) => {
                    ups += 1;
                    println!("{:>8.3}s up   {name}", t0.elapsed().as_secs_f64());
                }
                Some(BfdEvent::Down { name, diag, .. }) => {
                    downs += 1;
                    println!("{:>8.3}s down {name}: {diag}", t0.elapsed().as_secs_f64());
                }
                None => break,
            },
            () = tokio::time::sleep_until(end) => break,
        }
    }
    let status = bfd.status().await.expect("status");
    let (cpu1, hwm) = usage();
    for p in &status.peers {
        println!(
            "{} {} state {} tx {:?} detect {:?} in {} out {} drops {:?}",
            p.name,
            p.remote,
            p.state,
            p.tx_interval,
            p.detection_time,
            p.packets_in,
            p.packets_out,
            p.drops
        );
    }
    let (pin, pout): (u64, u64) = status
        .peers
        .iter()
        .fold((0, 0), |(i, o), p| (i + p.packets_in, o + p.packets_out));
    println!(
        "sessions {} ups {ups} downs {downs} packets in {pin} out {pout} over {:.1} s: \
         CPU {:.2} s ({:.2} % of one core), peak RSS {} KiB",
        args.sessions,
        t0.elapsed().as_secs_f64(),
        cpu1 - cpu0,
        (cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0,
        hwm
    );
    if args.admin_down_at_exit {
        bfd.shutdown().await.expect("shutdown");
    }
}
