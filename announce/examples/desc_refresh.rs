//! What the arbiter's desc scan costs when nothing changed: the inotify-driven look
//! (`DescWatch::take` + `DescCache::refresh_paths`), the full look it falls back to
//! (`DescCache::refresh`, one stat per file), and the walk that came before both
//! (open + fstat + close of every file), over N desc files.
//!
//! `cargo run --release -p announce --example desc_refresh -- [N] [DIR]`
//! (default 10,000 files in a temporary directory under /run, a tmpfs like the
//! `/var/run` the desc files live in). Prints microseconds per file and busy time per second
//! at the default `vips_description_update_interval` of 0.5 s.

use std::fs::File;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Instant;

use announce::desc::write_atomic;
use announce::{Desc, DescCache, DescWatch, PortState, Seen};

const ROUNDS: u32 = 50;
/// 2001:db8::/32, the documentation prefix.
const DOC_PREFIX: u128 = 0x2001_0db8 << 96;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let base = args
        .next()
        .map_or_else(|| PathBuf::from("/run"), PathBuf::from);
    let dir = tempfile::Builder::new()
        .prefix("desc-refresh-")
        .tempdir_in(base)?;

    let mut desc = Desc::default();
    desc.ports.insert(80, PortState::Up);
    let paths: Vec<(IpAddr, PathBuf)> = (0..n)
        .map(|i| {
            let vip = IpAddr::V6(Ipv6Addr::from(DOC_PREFIX + u128::from(i) + 1));
            (vip, dir.path().join(format!("keepalived-{vip}-desc.json")))
        })
        .collect();
    for (_, p) in &paths {
        write_atomic(p, &desc)?;
    }
    let mut cache = DescCache::new();
    cache.set_paths(paths.iter().cloned());
    let first = cache.refresh();
    assert_eq!(first.len(), paths.len(), "every file read once");

    let mut watch = DescWatch::new()?;
    watch.set_dirs(&cache.dirs());
    assert_eq!(
        watch.take(),
        Seen::Everything,
        "a new watch asks for one full look"
    );
    let t = Instant::now();
    for _ in 0..ROUNDS {
        let Seen::Paths(paths) = watch.take() else {
            return Err("the watch lost track".into());
        };
        assert!(cache.refresh_paths(&paths).is_empty());
    }
    let watched = t.elapsed().as_secs_f64() / f64::from(ROUNDS);

    let t = Instant::now();
    for _ in 0..ROUNDS {
        let changed = cache.refresh();
        assert!(changed.is_empty());
    }
    let ours = t.elapsed().as_secs_f64() / f64::from(ROUNDS);

    let t = Instant::now();
    for _ in 0..ROUNDS {
        for (_, p) in &paths {
            let f = File::open(p)?;
            std::hint::black_box(f.metadata()?);
        }
    }
    let open_walk = t.elapsed().as_secs_f64() / f64::from(ROUNDS);

    println!("{n} unchanged desc files, mean of {ROUNDS} scans:");
    for (name, secs) in [
        ("watch: take + refresh_paths", watched),
        ("DescCache::refresh (stat)", ours),
        ("open + fstat + close", open_walk),
    ] {
        println!(
            "  {name:<28} {:>8.3} ms/scan  {:>6.3} µs/file  {:>7.2} ms busy per s at 0.5 s",
            secs * 1e3,
            secs * 1e6 / f64::from(n),
            secs * 2.0 * 1e3
        );
    }
    Ok(())
}
