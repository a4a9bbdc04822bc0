//! Benchmark (run as root): one iBGP receiver (Debian's gobgpd) in a network namespace, and
//! three senders side by side in one run, each in a fresh pair of namespaces:
//!
//! - `speaker`: this crate's [`Speaker`], routes handed to it through `announce()` after the
//!   session is up (as the daemon does), run as a child process so its CPU and RSS are its own;
//! - `exabgp-api`: ExaBGP 4.2 (Debian), routes written into its API by a feeder process that
//!   also reads ExaBGP's acks (a feeder that does not read them stalls ExaBGP);
//! - `gobgpd-mrt`: gobgpd as the announcer, its RIB pre-loaded with `gobgp mrt inject` before
//!   the neighbor is enabled.
//!
//! Measured: Established → all prefixes at the receiver (`gobgp global rib summary`, polled
//! every 100 ms), sender CPU (utime+stime from /proc), sender peak RSS (VmHWM), UPDATEs the
//! receiver counted. Prefixes: /32s from 198.18.0.0/15 (RFC 2544 benchmarking space), /128s
//! from 2001:db8::/32.
//!
//! ```text
//! cargo build --release -p bgp --examples
//! sudo target/release/examples/bench [--sizes 10000,100000] [--skip exabgp,gobgpd]
//! sudo target/release/examples/bench --vs-bird [--sizes 100000,1000000] [--runs 3] [--single]
//! ```
//! `--vs-bird` compares the speaker with BIRD 2 as sender into a BIRD 2 receiver instead
//! (see `vs_bird.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod vs_bird;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bgp::packet::{AsPath, EncodeCtx, Origin, PathAttrs};
use bgp::{PeerConfig, PeerEvent, RouteAttrs, Speaker, SpeakerConfig};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use labkit::{GobgpConfig, GobgpNeighbor, Gobgpd, Netns};

const RECV_V4: &str = "192.0.2.1";
const SEND_V4: &str = "192.0.2.11";
const AS: u32 = 65000;

fn v4_prefix(i: u32) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from(0xc612_0000 + i), 32).unwrap() // 198.18.0.0/15
}

fn v6_prefix(i: u32) -> Ipv6Net {
    Ipv6Net::new(
        Ipv6Addr::from((0x2001_0db8_0bec_u128 << 80) | u128::from(i)),
        128,
    )
    .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    fn gobgp(self) -> &'static str {
        match self {
            Fam::V4 => "ipv4",
            Fam::V6 => "ipv6",
        }
    }
}

struct Row {
    receiver: &'static str,
    sender: String,
    fam: Fam,
    n: u32,
    secs: Option<f64>,
    cpu: Option<f64>,
    rss_mb: Option<f64>,
    updates: Option<u64>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--write-mrt") {
        // Debug aid: the MRT file the gobgpd sender is fed.
        std::fs::write(&args[3], mrt_file(args[2].parse().unwrap())).unwrap();
        return;
    }
    if args.get(1).map(String::as_str) == Some("--sender") {
        sender_child(&args[2..]);
        return;
    }
    if !labkit::is_root() {
        eprintln!("bench: needs root (network namespaces, BGP on port 179)");
        std::process::exit(2);
    }
    let mut sizes = vec![10_000u32, 100_000];
    let mut skip: Vec<String> = vec![];
    let (mut vs_bird, mut runs, mut single) = (false, 3u32, false);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--vs-bird" => {
                vs_bird = true;
                sizes = vec![100_000, 1_000_000];
            }
            "--runs" => runs = it.next().expect("--runs N").parse().expect("runs"),
            "--single" => single = true,
            "--sizes" => {
                sizes = it
                    .next()
                    .expect("--sizes N,M")
                    .split(',')
                    .map(|s| s.parse().expect("size"))
                    .collect()
            }
            "--skip" => {
                skip = it
                    .next()
                    .expect("--skip a,b")
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            other => panic!("unknown argument {other}"),
        }
    }
    if vs_bird {
        vs_bird::vs_bird(&sizes, runs, single);
        return;
    }
    let mut rows = vec![];
    let skipped = |what: &str| skip.iter().any(|s| s == what);
    for &n in &sizes {
        rows.push(run_speaker(n, Fam::V4, RecvKind::Gobgpd));
        if !skipped("exabgp") {
            rows.push(run_exabgp(n));
        }
        if !skipped("gobgpd") {
            rows.push(run_gobgpd(n, RecvKind::Gobgpd));
        }
    }
    rows.push(run_speaker(10_000, Fam::V6, RecvKind::Gobgpd));
    if !skipped("bird") {
        let n = sizes.iter().copied().max().unwrap_or(100_000);
        rows.push(run_speaker(n, Fam::V4, RecvKind::Bird));
        if !skipped("gobgpd") {
            rows.push(run_gobgpd(n, RecvKind::Bird));
        }
    }
    let lat = run_latency(30);
    println!();
    println!("| receiver | sender | routes | Established → all at receiver | sender CPU | sender peak RSS | UPDATEs |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let f = |v: Option<f64>, unit: &str, prec: usize| {
            v.map(|x| format!("{x:.prec$} {unit}"))
                .unwrap_or_else(|| "—".into())
        };
        println!(
            "| {} | {} | {} × {} | {} | {} | {} | {} |",
            r.receiver,
            r.sender,
            r.n,
            if r.fam == Fam::V4 {
                "IPv4 /32"
            } else {
                "IPv6 /128"
            },
            f(r.secs, "s", 3),
            f(r.cpu, "s", 2),
            f(r.rss_mb, "MB", 1),
            r.updates
                .map(|u| u.to_string())
                .unwrap_or_else(|| "—".into()),
        );
    }
    println!();
    println!("One /32 through the speaker API, seen by `gobgp monitor global rib` at the receiver ({} cycles):", lat.0.len());
    println!(
        "announce p50 / p99: {:.2} / {:.2} ms; withdraw p50 / p99: {:.2} / {:.2} ms",
        pct(&lat.0, 50.0),
        pct(&lat.0, 99.0),
        pct(&lat.1, 50.0),
        pct(&lat.1, 99.0)
    );
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Announce/withdraw latency of one /32: command written to the sender's stdin → the route
/// (or its withdrawal) printed by `gobgp monitor global rib -j` at the receiver.
fn run_latency(cycles: u32) -> (Vec<f64>, Vec<f64>) {
    eprintln!("== latency {cycles} cycles");
    let p = pair("blat");
    let cfg = GobgpConfig::new(AS, RECV_V4.parse().unwrap())
        .neighbor(GobgpNeighbor::new(SEND_V4.parse().unwrap(), AS).passive(true));
    let g = Gobgpd::start(&p.recv, &cfg.to_toml()).unwrap();
    let mut child = spawn_sender(&p.send, 0, "v4", "single");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "established");
    let mut mon = std::process::Command::new("gobgp")
        .args([
            "--target",
            &g.api_target(),
            "monitor",
            "global",
            "rib",
            "-a",
            "ipv4",
            "-j",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
    let mon_out = BufReader::new(mon.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in mon_out.lines() {
            let Ok(l) = l else { break };
            if tx.send((Instant::now(), l)).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500)); // let the monitor subscribe
    let stdin = child.stdin.as_mut().unwrap();
    let (mut ann, mut wd) = (vec![], vec![]);
    for i in 0..cycles {
        let prefix = format!("198.51.100.{}/32", i % 250);
        for (cmd, withdrawal, out) in [("a", false, &mut ann), ("w", true, &mut wd)] {
            while rx.try_recv().is_ok() {}
            let t = Instant::now();
            writeln!(stdin, "{cmd} {prefix}").unwrap();
            stdin.flush().unwrap();
            loop {
                let Ok((at, l)) = rx.recv_timeout(Duration::from_secs(5)) else {
                    eprintln!("no monitor line for {cmd} {prefix}");
                    break;
                };
                if l.contains(&prefix) && l.contains("\"withdrawal\":true") == withdrawal {
                    out.push((at - t).as_secs_f64() * 1e3);
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    writeln!(stdin, "stats").unwrap();
    let _ = child.wait();
    stop(mon);
    (ann, wd)
}

// ---- plumbing ----

struct Pair {
    recv: Netns,
    send: Netns,
}

fn pair(tag: &str) -> Pair {
    let recv = Netns::new(&format!("{tag}-r")).unwrap();
    let send = Netns::new(&format!("{tag}-s")).unwrap();
    labkit::veth(
        &recv,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &send,
        &["192.0.2.11/24", "2001:db8::11/64"],
    )
    .unwrap();
    Pair { recv, send }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvKind {
    Gobgpd,
    Bird,
}

/// The receiving router: gobgpd (the reference) or BIRD 2, which ingests far faster and so
/// tells fast senders apart (gobgpd's ingest is the ceiling of every sender it measures).
enum Receiver {
    Gobgp(Gobgpd),
    Bird {
        child: Child,
        sock: std::path::PathBuf,
        _dir: tempfile::TempDir,
    },
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Receiver::Bird { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Receiver {
    fn name(&self) -> &'static str {
        match self {
            Receiver::Gobgp(_) => "gobgpd",
            Receiver::Bird { .. } => "BIRD 2",
        }
    }

    fn count(&self, fam: Fam) -> u64 {
        match self {
            Receiver::Gobgp(g) => rib_count(g, fam),
            Receiver::Bird { sock, .. } => {
                let table = if fam == Fam::V4 { "master4" } else { "master6" };
                let out = std::process::Command::new("birdc")
                    .args([
                        "-s",
                        sock.to_str().unwrap_or_default(),
                        "show",
                        "route",
                        "count",
                        "table",
                        table,
                    ])
                    .output();
                // "1000 of 1000 routes for 1000 networks in table master4"
                out.ok()
                    .and_then(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .find(|l| l.contains(" networks in table"))
                            .and_then(|l| l.split_whitespace().nth(5).and_then(|x| x.parse().ok()))
                    })
                    .unwrap_or(0)
            }
        }
    }

    fn updates(&self) -> Option<u64> {
        match self {
            Receiver::Gobgp(g) => updates_received(g),
            Receiver::Bird { .. } => None,
        }
    }

    fn wait(&self, fam: Fam, n: u32, timeout: Duration) -> Option<Instant> {
        wait_until_count(|| self.count(fam), n, timeout)
    }
}

fn receiver(p: &Pair, kind: RecvKind) -> Receiver {
    match kind {
        RecvKind::Gobgpd => {
            let cfg = GobgpConfig::new(AS, RECV_V4.parse().unwrap())
                .neighbor(GobgpNeighbor::new(SEND_V4.parse().unwrap(), AS).passive(true));
            Receiver::Gobgp(Gobgpd::start(&p.recv, &cfg.to_toml()).unwrap())
        }
        RecvKind::Bird => {
            let dir = labkit::scratch_dir("bird").unwrap();
            let conf = dir.path().join("bird.conf");
            let sock = dir.path().join("bird.ctl");
            std::fs::write(
                &conf,
                format!(
                    "router id {RECV_V4};\nprotocol device {{}}\n\
                     protocol direct {{ ipv4; ipv6; }}\n\
                     protocol bgp lb {{\n  local {RECV_V4} as {AS};\n  \
                     neighbor {SEND_V4} as {AS};\n  passive on;\n  \
                     ipv4 {{ import all; export none; }};\n  \
                     ipv6 {{ import all; export none; }};\n}}\n"
                ),
            )
            .unwrap();
            let child = p
                .recv
                .command("bird")
                .args([
                    "-f",
                    "-c",
                    conf.to_str().unwrap(),
                    "-s",
                    sock.to_str().unwrap(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let ok = labkit::wait_until(Duration::from_secs(10), || {
                std::process::Command::new("birdc")
                    .args(["-s", sock.to_str().unwrap(), "show", "status"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
            assert!(ok, "BIRD did not start");
            Receiver::Bird {
                child,
                sock,
                _dir: dir,
            }
        }
    }
}

fn rib_count(g: &Gobgpd, fam: Fam) -> u64 {
    g.cli(&["global", "rib", "summary", "-a", fam.gobgp(), "-j"])
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s.trim()).ok())
        .and_then(|v| v["num_destination"].as_u64())
        .unwrap_or(0)
}

/// Polls (100 ms apart: polls cost the receiver CPU, and faster polling slows what is measured) until the count
/// reaches `n`; returns when that was seen.
fn wait_until_count(count: impl Fn() -> u64, n: u32, timeout: Duration) -> Option<Instant> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if count() >= u64::from(n) {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// UPDATEs the receiver got from the sender.
fn updates_received(g: &Gobgpd) -> Option<u64> {
    let out = g.cli(&["neighbor", SEND_V4, "-j"]).ok()?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
    v["state"]["messages"]["received"]["update"].as_u64()
}

fn stop(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

// ---- our speaker ----

/// Child mode: `bench --sender N v4|v6 [single|batch]`, inside the sender namespace. Prints
/// `established` when the session is up, announces N prefixes through the API (one
/// `announce` call each, or one `announce_many`), then on a line on stdin prints
/// `stats CPU_SECS HWM_MB UPDATES` and shuts down.
fn sender_child(args: &[String]) {
    let n: u32 = args[0].parse().unwrap();
    let fam = if args[1] == "v6" { Fam::V6 } else { Fam::V4 };
    let batch = args.get(2).is_some_and(|m| m == "batch");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (sp, mut ev) = Speaker::start(SpeakerConfig {
            connect_retry: Duration::from_secs(1),
            next_hop_v6: Some("2001:db8::11".parse().unwrap()),
            ..SpeakerConfig::new(AS, SEND_V4.parse().unwrap())
        })
        .unwrap();
        sp.add_peer(PeerConfig::new("recv", RECV_V4.parse().unwrap(), AS))
            .unwrap();
        while let Some(e) = ev.recv().await {
            if matches!(e, PeerEvent::Up { .. }) {
                break;
            }
        }
        println!("established");
        let t0 = Instant::now();
        let attrs = RouteAttrs {
            local_pref: Some(100),
            ..RouteAttrs::default()
        };
        let prefix = |i| match fam {
            Fam::V4 => IpNet::V4(v4_prefix(i)),
            Fam::V6 => IpNet::V6(v6_prefix(i)),
        };
        if batch {
            sp.announce_many((0..n).map(|i| (prefix(i), attrs.clone())));
        } else {
            for i in 0..n {
                sp.announce(prefix(i), attrs.clone());
            }
        }
        let t_api = t0.elapsed();
        // When the last prefix left the Adj-RIB-Out (written to the socket or queued in it).
        while sp.peers().await.first().map(|s| s.routes_sent).unwrap_or(0) < n as usize {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        eprintln!(
            "sender: API calls {:?}, all handed to TCP {:?}",
            t_api,
            t0.elapsed()
        );
        // Commands on stdin: `a PREFIX` announce, `w PREFIX` withdraw, anything else: stats.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            match line.split_once(' ') {
                Some(("a", p)) => sp.announce(p.parse().unwrap(), attrs.clone()),
                Some(("w", p)) => {
                    sp.withdraw(p.parse().unwrap());
                }
                _ => break,
            }
        }
        let st = sp.peers().await;
        let me = std::process::id();
        println!(
            "stats {} {} {}",
            labkit::proc::cpu_secs(me).unwrap_or(-1.0),
            labkit::proc::status_mb(me, "VmHWM:").unwrap_or(-1.0),
            st.first().map(|s| s.updates_sent).unwrap_or(0)
        );
        sp.shutdown("bench done").await;
    });
}

/// This bench as a `--sender` child in `ns`, stdin and stdout piped.
fn spawn_sender(ns: &Netns, n: u32, fam: &str, mode: &str) -> Child {
    let exe = std::env::current_exe().unwrap();
    ns.command(exe.to_str().unwrap())
        .args(["--sender", &n.to_string(), fam, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run_speaker(n: u32, fam: Fam, kind: RecvKind) -> Row {
    eprintln!("== speaker {n} {fam:?} → {kind:?}");
    let p = pair("bsp");
    let g = receiver(&p, kind);
    let fam_arg = if fam == Fam::V6 { "v6" } else { "v4" };
    let mut child = spawn_sender(&p.send, n, fam_arg, "single");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "established", "sender said {line:?}");
    let t0 = Instant::now();
    let done = g.wait(fam, n, Duration::from_secs(120));
    let secs = done.map(|t| (t - t0).as_secs_f64());
    let updates = g.updates();
    writeln!(child.stdin.as_mut().unwrap(), "stats").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    let cpu = f.get(1).and_then(|s| s.parse().ok());
    let rss = f.get(2).and_then(|s| s.parse().ok());
    // The sender's own count when the receiver cannot tell (BIRD).
    let updates = updates.or_else(|| f.get(3).and_then(|s| s.parse().ok()));
    let _ = child.wait();
    Row {
        receiver: g.name(),
        sender: "speaker (this crate, API)".into(),
        fam,
        n,
        secs,
        cpu,
        rss_mb: rss,
        updates,
    }
}

// ---- ExaBGP through its API ----

const FEEDER: &str = r#"
import sys, time
n = int(sys.argv[1]); stamp = sys.argv[2]
# Wait for the session (neighbor-changes on stdin), then push the routes, reading acks as we go
# would need threads; ExaBGP buffers its acks in our stdin pipe, which a reader thread drains.
import threading
up = threading.Event()
def reader():
    for line in sys.stdin:
        if " up" in line and "neighbor" in line:
            up.set()
threading.Thread(target=reader, daemon=True).start()
up.wait()
with open(stamp, "w") as f:
    f.write(repr(time.time()))
for i in range(n):
    a = 0xc6120000 + i
    sys.stdout.write("announce route %d.%d.%d.%d/32 next-hop self local-preference 100\n"
                     % (a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255))
sys.stdout.flush()
while True:
    time.sleep(60)
"#;

fn run_exabgp(n: u32) -> Row {
    eprintln!("== exabgp-api {n}");
    let p = pair("bex");
    let g = receiver(&p, RecvKind::Gobgpd);
    let dir = labkit::scratch_dir("exabgp").unwrap();
    let feeder = dir.path().join("feeder.py");
    let stamp = dir.path().join("up.stamp");
    std::fs::write(&feeder, FEEDER).unwrap();
    let conf = dir.path().join("exabgp.conf");
    std::fs::write(
        &conf,
        format!(
            "process feeder {{\n  run /usr/bin/python3 {} {n} {};\n  encoder text;\n}}\n\
             neighbor {RECV_V4} {{\n  router-id {SEND_V4};\n  local-address {SEND_V4};\n  \
             local-as {AS};\n  peer-as {AS};\n  family {{ ipv4 unicast; }}\n  \
             api {{ processes [ feeder ]; neighbor-changes; }}\n}}\n",
            feeder.display(),
            stamp.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("exabgp.log")).unwrap();
    let child = p
        .send
        .command("exabgp")
        .arg(&conf)
        .env("exabgp.daemon.user", "root")
        .env("exabgp.daemon.drop", "false")
        .env("exabgp.log.level", "WARNING")
        .env("exabgp.api.cli", "false")
        .env("exabgp.tcp.bind", "")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait for the feeder's timestamp of the session coming up.
    let mut up = None;
    for _ in 0..400 {
        if let Ok(s) = std::fs::read_to_string(&stamp) {
            if let Ok(t) = s.trim().parse::<f64>() {
                up = Some(t);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(up) = up else {
        let l = std::fs::read_to_string(dir.path().join("exabgp.log")).unwrap_or_default();
        eprintln!("exabgp never came up: {l}");
        stop(child);
        return Row {
            receiver: g.name(),
            sender: "ExaBGP (API)".into(),
            fam: Fam::V4,
            n,
            secs: None,
            cpu: None,
            rss_mb: None,
            updates: None,
        };
    };
    let done = g.wait(Fam::V4, n, Duration::from_secs(300));
    let now_wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let secs = done.map(|t| now_wall - t.elapsed().as_secs_f64() - up);
    // ExaBGP is a Python process tree; count the exabgp process (the feeder is tiny).
    let cpu = labkit::proc::cpu_secs(pid);
    let rss = labkit::proc::status_mb(pid, "VmHWM:");
    let updates = g.updates();
    stop(child);
    Row {
        receiver: g.name(),
        sender: "ExaBGP 4.2 (API)".into(),
        fam: Fam::V4,
        n,
        secs,
        cpu,
        rss_mb: rss,
        updates,
    }
}

// ---- gobgpd as the announcer, RIB pre-loaded from MRT ----

/// An MRT TABLE_DUMP_V2 file (RFC 6396) of `n` /32s, for `gobgp mrt inject global`.
fn mrt_file(n: u32) -> Vec<u8> {
    fn rec(out: &mut Vec<u8>, subtype: u16, body: &[u8]) {
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&13u16.to_be_bytes()); // TABLE_DUMP_V2
        out.extend_from_slice(&subtype.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
    }
    let mut out = vec![];
    // PEER_INDEX_TABLE: collector id, empty view name, one peer (IPv4, AS4).
    let mut b = vec![];
    b.extend_from_slice(&Ipv4Addr::new(192, 0, 2, 11).octets());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    b.push(0x02);
    b.extend_from_slice(&Ipv4Addr::new(192, 0, 2, 11).octets());
    b.extend_from_slice(&Ipv4Addr::new(192, 0, 2, 11).octets());
    b.extend_from_slice(&AS.to_be_bytes());
    rec(&mut out, 1, &b);
    let attrs = PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::default()),
        next_hop: Some(SEND_V4.parse().unwrap()),
        local_pref: Some(100),
        ..PathAttrs::default()
    };
    let mut a = vec![];
    attrs.encode(&EncodeCtx::default(), &mut a);
    // `gobgp mrt inject` (3.10) drops the last queue-full (1,024 updates) of the stream when it
    // exits: pad the file with ≥ 2,048 repeats of the same prefixes and attributes, which are
    // no-ops if they do arrive.
    let total = n + n.max(1) * 2048u32.div_ceil(n.max(1));
    for seq in 0..total {
        let i = seq % n.max(1);
        let p = v4_prefix(i);
        let mut b = vec![];
        b.extend_from_slice(&seq.to_be_bytes());
        b.push(32);
        b.extend_from_slice(&p.addr().octets());
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes()); // peer index
        b.extend_from_slice(&0u32.to_be_bytes()); // originated
        b.extend_from_slice(&(a.len() as u16).to_be_bytes());
        b.extend_from_slice(&a);
        rec(&mut out, 2, &b); // RIB_IPV4_UNICAST
    }
    out
}

fn run_gobgpd(n: u32, kind: RecvKind) -> Row {
    eprintln!("== gobgpd-mrt {n} → {kind:?}");
    let p = pair("bgo");
    let g = receiver(&p, kind);
    let toml = format!(
        "[global.config]\n  as = {AS}\n  router-id = \"{SEND_V4}\"\n  port = -1\n\n\
         [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{RECV_V4}\"\n    \
         peer-as = {AS}\n    admin-down = true\n  [neighbors.timers.config]\n    \
         connect-retry = 1\n"
    );
    let sender = Gobgpd::start(&p.send, &toml).unwrap();
    let dir = labkit::scratch_dir("mrt").unwrap();
    let file = dir.path().join("rib.mrt");
    std::fs::write(&file, mrt_file(n)).unwrap();
    sender
        .cli(&["mrt", "inject", "global", file.to_str().unwrap()])
        .unwrap();
    // `mrt inject` returns before gobgpd has taken the tail: wait for the sender's own RIB.
    assert!(
        wait_until_count(|| rib_count(&sender, Fam::V4), n, Duration::from_secs(120)).is_some(),
        "gobgpd sender did not load the MRT file"
    );
    let cpu_before = labkit::proc::cpu_secs(gobgpd_pid(&sender)).unwrap_or(0.0);
    sender.cli(&["neighbor", RECV_V4, "enable"]).unwrap();
    // Established as seen by polling the CLI back to back (each call ~10-20 ms).
    let end = Instant::now() + Duration::from_secs(30);
    while sender.neighbor_state(RECV_V4).ok().as_deref() != Some("established") {
        assert!(Instant::now() < end, "gobgpd sender never established");
    }
    let t0 = Instant::now();
    let done = g.wait(Fam::V4, n, Duration::from_secs(120));
    let secs = done.map(|t| (t - t0).as_secs_f64());
    let pid = gobgpd_pid(&sender);
    let cpu = labkit::proc::cpu_secs(pid).map(|c| c - cpu_before);
    let rss = labkit::proc::status_mb(pid, "VmHWM:");
    let updates = g.updates();
    drop(sender);
    Row {
        receiver: g.name(),
        sender: "gobgpd 3.10 (RIB from MRT)".into(),
        fam: Fam::V4,
        n,
        secs,
        cpu,
        rss_mb: rss,
        updates,
    }
}

/// The gobgpd process (the daemon's pid is `ip netns exec`, which execs gobgpd).
fn gobgpd_pid(g: &Gobgpd) -> u32 {
    g.pid()
}
