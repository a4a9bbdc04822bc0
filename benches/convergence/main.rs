//! Convergence bench: how fast a quorum change reaches the router, ipvs-sync side by side
//! with the keepalived → script → ExaBGP chain it replaces, and a cold start of a
//! balancer owning 10,000 VIPs.
//!
//! ```text
//!  latency (one VIP, CYCLES rounds of up then down, the two paths interleaved per round)
//!    ipvs-sync quorum up|down 203.0.113.10,b-LP,80 ─unix socket─▶ arbiter (core) ─AMQP─▶
//!        RabbitMQ ─▶ client (lb1) ─BGP─▶ r1 (gobgpd, iBGP)
//!    quorum.sh up|down 203.0.113.20,b-LP,80 ─FIFO─▶ ExaBGP API (xlb) ─BGP─▶ xr1 (gobgpd, iBGP)
//!    observed: one `gobgp monitor global rib -j` per router, each line timestamped on
//!    arrival by a reader thread; t0 = just before the handler process is spawned; both
//!    handlers run in place (no `nsenter`), without the LD_LIBRARY_PATH cargo sets
//!  cold start (a fresh fleet)
//!    arbiter with keepalived configs naming N IPv6 VIPs for lb1 and desc files saying
//!    announce for all; t0 = `ipvs-sync client` spawned; done when r1's
//!    `gobgp global rib summary` (polled ≥ 50 ms apart) counts N; CPU and peak RSS from
//!    /proc of the client and the arbiter
//! ```
//! The cold-start VIPs are IPv6 (2001:db8:f00::/48) because the documentation ranges of
//! IPv4 hold only 768 addresses.
//!
//! Run as root: `netns-lab/bench [--cycles N] [--vips N] [--logs DIR]` (or `cargo bench --bench
//! convergence -- …`). `CONVERGENCE_CYCLES` sets the default cycle count; `IPVS_SYNC_BIN`
//! overrides the binary under test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod breakdown;
mod exabgp;

use std::net::{IpAddr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use labkit::fleet::{Fleet, FleetOpts};
use labkit::metrics::{metric_by, percentiles};
use labkit::proc::{cpu_secs, status_mb};
use labkit::RibMonitor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The binary measured (the bench profile builds target/release/ipvs-sync);
/// `IPVS_SYNC_BIN` overrides it (a wrapper that runs the client under a profiler, say).
fn bin() -> std::path::PathBuf {
    std::env::var_os("IPVS_SYNC_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ipvs-sync").into())
}

/// How long one announce or withdraw may take before it counts as lost.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Rounds run before the measured ones (first UPDATEs, caches, page faults).
const WARMUP: usize = 3;
/// The latency cycles stop after this long, measured or not (keeps the bench < 10 min).
const LATENCY_BUDGET: Duration = Duration::from_secs(300);
/// Cold start gives up after this long.
const COLD_TIMEOUT: Duration = Duration::from_secs(240);
/// Minimum spacing of RIB polls (each costs the router CPU and a CLI process start).
const POLL_GAP: Duration = Duration::from_millis(50);

const IPVS_VIP: &str = "203.0.113.10";
const EXA_VIP: &str = "203.0.113.20";

struct Opts {
    cycles: usize,
    cold_vips: usize,
    /// Copy the daemons' logs (and the latency samples, `latency.csv`) here.
    logs: Option<std::path::PathBuf>,
    /// Daemons at debug; the ipvs-sync down path stage by stage (`breakdown.rs`).
    breakdown: bool,
}

impl Opts {
    fn parse() -> Result<Opts, BoxError> {
        let mut o = Opts {
            cycles: match std::env::var("CONVERGENCE_CYCLES") {
                Ok(v) => v
                    .parse()
                    .map_err(|e| format!("CONVERGENCE_CYCLES={v}: {e}"))?,
                Err(_) => 100,
            },
            cold_vips: 10_000,
            logs: None,
            breakdown: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut num = |name: &str| -> Result<usize, BoxError> {
                let v = args.next().ok_or(format!("{name} needs a value"))?;
                Ok(v.parse().map_err(|e| format!("{name} {v}: {e}"))?)
            };
            match a.as_str() {
                "--cycles" => o.cycles = num("--cycles")?,
                "--vips" => o.cold_vips = num("--vips")?,
                "--logs" => o.logs = Some(args.next().ok_or("--logs needs a directory")?.into()),
                "--breakdown" => o.breakdown = true,
                // cargo bench passes --bench to harness = false targets.
                "--bench" => {}
                n if n.parse::<usize>().is_ok() => o.cycles = n.parse()?,
                other => {
                    return Err(format!(
                        "unknown argument {other}; usage: [--cycles N] [--vips N] [--logs DIR] [--breakdown]"
                    )
                    .into())
                }
            }
        }
        if !(1..=10_000).contains(&o.cycles) {
            return Err("--cycles must be 1..10000".into());
        }
        if o.cold_vips > 60_000 {
            return Err("--vips must be 0..60000 (0 skips the cold start)".into());
        }
        Ok(o)
    }
}

// --- /proc ---------------------------------------------------------------------------

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .find(|l| l.contains(|c: char| c.is_ascii_digit()))
                .unwrap_or("?")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "?".into())
}

// --- latency ---------------------------------------------------------------------------

/// Samples of one path.
#[derive(Default)]
struct Path {
    up: Vec<Duration>,
    down: Vec<Duration>,
    /// Handler process run time (spawn → exit).
    handler: Vec<Duration>,
    /// Each measured down: when its handler was spawned, when the router showed it.
    downs: Vec<breakdown::Down>,
    lost: usize,
}

/// Spawns the handler and waits for the router's stream to show `prefix` announced
/// with `lp` (or withdrawn when `lp` is `None`). Returns (router latency, handler time);
/// `Ok(None)` when the change did not show within [`OP_TIMEOUT`].
fn timed(
    mon: &RibMonitor,
    cmd: Command,
    prefix: &str,
    lp: Option<u64>,
) -> Result<Option<(Duration, Duration)>, BoxError> {
    let t = mon.time_change(cmd, prefix, lp, OP_TIMEOUT)?;
    Ok(t.at_router.map(|at| (at, t.handler)))
}

fn record(path: &mut Path, up: bool, measured: bool, r: Option<(Duration, Duration)>) {
    match r {
        Some((lat, ran)) if measured => {
            if up {
                path.up.push(lat);
            } else {
                path.down.push(lat);
            }
            path.handler.push(ran);
        }
        Some(_) => {}
        None => {
            if measured {
                path.lost += 1;
            }
        }
    }
}

/// One cycle of a path: the quorum handler's `up` (announced with `lp`), then its `down`,
/// each timed and recorded. An announce missing in a warm-up round is an error, with
/// `failure` saying why.
fn up_and_down(
    path: &mut Path,
    mon: &RibMonitor,
    quorum: impl Fn(&str) -> Command,
    prefix: &str,
    lp: u64,
    measured: bool,
    failure: impl FnOnce() -> String,
) -> Result<(), BoxError> {
    let r = timed(mon, quorum("up"), prefix, Some(lp))?;
    if r.is_none() && !measured {
        return Err(format!("warm-up: {}", failure()).into());
    }
    record(path, true, measured, r);
    let spawned = SystemTime::now();
    let r = timed(mon, quorum("down"), prefix, None)?;
    if let (true, Some((at_router, _))) = (measured, r) {
        path.downs.push(breakdown::Down { spawned, at_router });
    }
    record(path, false, measured, r);
    Ok(())
}

struct Latency {
    /// Cycles measured (fewer than asked when [`LATENCY_BUDGET`] ran out).
    cycles: usize,
    ipvs: Path,
    exa: Path,
    exa_version: String,
    /// The handler measured: `ipvs-sync-quorum` when it is next to the binary, or
    /// `ipvs-sync quorum`.
    handler: &'static str,
    /// With `--breakdown`: the stages of the ipvs-sync downs, or why there are none.
    breakdown: Option<Result<Vec<[String; 3]>, String>>,
}

fn latency(
    cycles: usize,
    logs: Option<&std::path::Path>,
    stages: bool,
) -> Result<Latency, BoxError> {
    let vip: IpAddr = IPVS_VIP.parse()?;
    let desc = desc_dir()?;
    let f = Fleet::start(
        &bin(),
        FleetOpts {
            vips: vec![vip],
            // Only our own lines at debug: lapin's at debug cost the path more.
            log_level: if stages {
                "info,ipvs_sync=debug"
            } else {
                "info"
            },
            desc_dir: Some(desc.path().to_owned()),
            ..Default::default()
        },
    )?;
    let exa = exabgp::Exa::start(f.opts.hold_time);
    let mon = f.monitor(0, "ipv4")?;
    let exa_mon = RibMonitor::start(&exa.router.api(), "ipv4", "192.0.2.254/32")?;
    let ipvs_prefix = format!("{IPVS_VIP}/32");
    let exa_prefix = format!("{EXA_VIP}/32");

    // The lean handler, as keepalived's configs name it, when it is there (not beside an
    // `IPVS_SYNC_BIN` of an older build).
    let (handler, handler_name) = match f.lean_quorum_handler() {
        Some(h) => (h, "ipvs-sync-quorum up|down"),
        None => (f.quorum_handler(), "ipvs-sync quorum up|down"),
    };
    let mut ipvs = Path::default();
    let mut ex = Path::default();
    let start = Instant::now();
    let mut done = 0;
    for round in 0..WARMUP + cycles {
        if start.elapsed() > LATENCY_BUDGET {
            eprintln!(
                "convergence: latency budget of {LATENCY_BUDGET:?} spent after {done} cycles"
            );
            break;
        }
        let measured = round >= WARMUP;
        // Alternating LOCAL_PREF tells this round's announce from any late repeat.
        let lp = 150 + 10 * (round as u64 % 2);
        let ipvs_arg = format!("{IPVS_VIP},b-{lp},80");
        let exa_arg = format!("{EXA_VIP},b-{lp},80");

        // Both handlers run as keepalived runs them: in place (no `nsenter` before ours) and
        // without the LD_LIBRARY_PATH `cargo bench` sets, which makes every dynamic link
        // search the build's directories first.
        up_and_down(
            &mut ipvs,
            &mon,
            |dir| {
                let mut c = handler.command_in_place(dir, &ipvs_arg);
                c.env_remove("LD_LIBRARY_PATH");
                c
            },
            &ipvs_prefix,
            lp,
            measured,
            || {
                format!(
                    "{IPVS_VIP} never reached r1; client log:\n{}\narbiter log:\n{}",
                    tail(&f.client_log(0)),
                    tail(&f.arbiter_log())
                )
            },
        )?;
        up_and_down(
            &mut ex,
            &exa_mon,
            |dir| {
                let mut c = exa.quorum_command(dir, &exa_arg);
                c.env_remove("LD_LIBRARY_PATH");
                c
            },
            &exa_prefix,
            lp,
            measured,
            || {
                format!(
                    "{EXA_VIP} never reached xr1; ExaBGP log:\n{}",
                    exa.log_tail()
                )
            },
        )?;
        if measured {
            done += 1;
        }
        if ipvs.lost + ex.lost > 10 {
            return Err(format!(
                "more than 10 changes lost (ipvs-sync {}, ExaBGP {}); client log:\n{}",
                ipvs.lost,
                ex.lost,
                tail(&f.client_log(0))
            )
            .into());
        }
    }
    keep_logs(&f, logs, "latency")?;
    if let Some(dir) = logs {
        let mut csv = String::from("path,direction,ms\n");
        for (name, p) in [("ipvs-sync", &ipvs), ("exabgp", &ex)] {
            for (dir, v) in [("up", &p.up), ("down", &p.down), ("handler", &p.handler)] {
                for d in v {
                    csv.push_str(&format!("{name},{dir},{:.3}\n", d.as_secs_f64() * 1000.0));
                }
            }
        }
        std::fs::write(dir.join("latency.csv"), csv)?;
    }
    let breakdown =
        stages.then(|| breakdown::rows(&ipvs.downs, &f.arbiter_log(), &f.client_log(0)));
    Ok(Latency {
        ipvs,
        exa: ex,
        exa_version: version("exabgp", "--version"),
        cycles: done,
        breakdown,
        handler: handler_name,
    })
}

/// Where the desc files go: a tmpfs, as /var/run is on production hosts (an fsync'd
/// write on this machine's ext4 costs the quorum handler 1–5 ms more).
const DESC_PARENT: &str = "/dev/shm";

fn desc_dir() -> Result<tempfile::TempDir, BoxError> {
    Ok(tempfile::Builder::new()
        .prefix("convergence-desc-")
        .tempdir_in(DESC_PARENT)?)
}

/// Copies the arbiter's and the first client's logs to `dir` as `TAG-server.log` and
/// `TAG-client.log`.
fn keep_logs(f: &Fleet, dir: Option<&std::path::Path>, tag: &str) -> Result<(), BoxError> {
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{tag}-server.log")), f.arbiter_log())?;
        std::fs::write(dir.join(format!("{tag}-client.log")), f.client_log(0))?;
    }
    Ok(())
}

fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(3000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

// --- cold start ----------------------------------------------------------------------------

struct Cold {
    vips: usize,
    first: Option<Duration>,
    all: Option<Duration>,
    reached: usize,
    polls: usize,
    client_cpu: f64,
    client_hwm: f64,
    arbiter_cpu: f64,
    arbiter_rss: f64,
    arbiter_hwm: f64,
    arbiter_idle: f64,
    /// Messages the client sent (and had confirmed), by type.
    client_sent: Vec<(String, f64)>,
    /// Messages the arbiter sent (and had confirmed), by type.
    arbiter_sent: Vec<(String, f64)>,
}

fn cold_vip(i: usize) -> IpAddr {
    let base = u128::from(
        "2001:db8:f00::"
            .parse::<Ipv6Addr>()
            .unwrap_or(Ipv6Addr::LOCALHOST),
    );
    IpAddr::V6(Ipv6Addr::from(base + 1 + i as u128))
}

/// `Destination: N` of `gobgp global rib summary`.
fn destinations(summary: &str) -> Option<usize> {
    let at = summary.find("Destination:")? + "Destination:".len();
    summary[at..]
        .split(|c: char| !c.is_ascii_digit() && c != ' ')
        .next()?
        .trim()
        .parse()
        .ok()
}

const SENT: &str = "ipvs_sync_messages_sent_total";

fn cold_start(n: usize, logs: Option<&std::path::Path>) -> Result<Cold, BoxError> {
    let vips: Vec<IpAddr> = (0..n).map(cold_vip).collect();
    let desc = desc_dir()?;
    let mut f = Fleet::start(
        &bin(),
        FleetOpts {
            vips,
            desc_dir: Some(desc.path().to_owned()),
            start_clients: false,
            desc_announce: Some(100),
            log_level: "info",
            ..Default::default()
        },
    )?;
    let arbiter = f.arbiter_pid().ok_or("arbiter not running")?;
    // Let the arbiter finish reading configs and desc files; its idle rate is a figure too.
    let mut idle = f64::NAN;
    for _ in 0..15 {
        let c0 = cpu_secs(arbiter).ok_or("arbiter gone")?;
        std::thread::sleep(Duration::from_secs(1));
        idle = cpu_secs(arbiter).ok_or("arbiter gone")? - c0;
        if idle < 0.05 {
            break;
        }
    }
    let arbiter_cpu0 = cpu_secs(arbiter).ok_or("arbiter gone")?;
    let r1 = f.routers[0].gobgpd.api();

    let t0 = Instant::now();
    f.start_client(0)?;
    let client = f.client_pid(0).ok_or("client not running")?;
    let (mut first, mut all, mut reached, mut polls) = (None, None, 0, 0);
    let mut sample = (0.0, 0.0);
    while t0.elapsed() < COLD_TIMEOUT {
        let poll = Instant::now();
        let count = r1
            .cli(&["global", "rib", "summary", "-a", "ipv6"])
            .ok()
            .and_then(|s| destinations(&s))
            .unwrap_or(0);
        polls += 1;
        // Read before the client moves on, so the figures are those of the moment.
        sample = (
            cpu_secs(client).ok_or_else(|| format!("client died:\n{}", tail(&f.client_log(0))))?,
            status_mb(client, "VmHWM:").unwrap_or(f64::NAN),
        );
        reached = count;
        if count > 0 && first.is_none() {
            first = Some(poll.duration_since(t0));
        }
        if count >= n {
            all = Some(poll.duration_since(t0));
            break;
        }
        std::thread::sleep(POLL_GAP.saturating_sub(poll.elapsed()));
    }
    let cold = Cold {
        vips: n,
        first,
        all,
        reached,
        polls,
        client_cpu: sample.0,
        client_hwm: sample.1,
        arbiter_cpu: cpu_secs(arbiter).unwrap_or(f64::NAN) - arbiter_cpu0,
        arbiter_rss: status_mb(arbiter, "VmRSS:").unwrap_or(f64::NAN),
        arbiter_hwm: status_mb(arbiter, "VmHWM:").unwrap_or(f64::NAN),
        arbiter_idle: idle,
        client_sent: metric_by(&f.client_metrics(0), SENT, "type"),
        arbiter_sent: metric_by(&f.arbiter_metrics(), SENT, "type"),
    };
    keep_logs(&f, logs, "cold")?;
    if all.is_none() {
        eprintln!(
            "cold start: only {reached} of {n} at r1 after {COLD_TIMEOUT:?}; client log:\n{}",
            tail(&f.client_log(0))
        );
    }
    Ok(cold)
}

// --- report ----------------------------------------------------------------------------------

fn ms(d: f64) -> String {
    if d.is_nan() {
        "-".into()
    } else {
        format!("{d:.1}")
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} s", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into())
}

/// p50 / p99 of samples, in ms.
fn p50_99(v: &[Duration]) -> String {
    let (p50, p99) = percentiles(v.to_vec());
    format!("{} / {}", ms(p50), ms(p99))
}

/// Rows of the table: measure, ipvs-sync, the ExaBGP chain.
fn rows(lat: &Latency, cold: Option<&Cold>) -> Vec<[String; 3]> {
    let n = lat.cycles;
    let mut r = vec![
        [
            format!("quorum up → announced at router, p50 / p99 ({n} cycles)"),
            format!("{} ms", p50_99(&lat.ipvs.up)),
            format!("{} ms", p50_99(&lat.exa.up)),
        ],
        [
            format!("quorum down → withdrawn at router, p50 / p99 ({n} cycles)"),
            format!("{} ms", p50_99(&lat.ipvs.down)),
            format!("{} ms", p50_99(&lat.exa.down)),
        ],
        [
            "quorum handler process run time, p50 / p99".into(),
            format!("{} ms", p50_99(&lat.ipvs.handler)),
            format!("{} ms", p50_99(&lat.exa.handler)),
        ],
        [
            format!("changes not seen within {} s", OP_TIMEOUT.as_secs()),
            lat.ipvs.lost.to_string(),
            lat.exa.lost.to_string(),
        ],
    ];
    if let Some(c) = cold {
        let na = || "not measured".to_string();
        let v = c.vips;
        r.extend([
            [
                format!("cold start, {v} VIPs: client start → first at router"),
                secs(c.first),
                na(),
            ],
            [
                format!("cold start, {v} VIPs: client start → all at router"),
                match c.all {
                    Some(_) => secs(c.all),
                    None => format!("{} only, {} s", c.reached, COLD_TIMEOUT.as_secs()),
                },
                na(),
            ],
            [
                "cold start: client CPU (user+sys) / peak RSS".into(),
                format!("{:.2} s / {:.1} MB", c.client_cpu, c.client_hwm),
                na(),
            ],
            [
                "cold start: arbiter CPU during it / RSS (peak)".into(),
                format!(
                    "{:.2} s / {:.1} ({:.1}) MB",
                    c.arbiter_cpu, c.arbiter_rss, c.arbiter_hwm
                ),
                na(),
            ],
            [
                format!("arbiter idle CPU with {v} VIPs"),
                format!("{:.0} ms/s", c.arbiter_idle * 1000.0),
                na(),
            ],
        ]);
    }
    r
}

fn print_table(header: [&str; 3], rows: &[[String; 3]]) {
    let w = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (w(0), w(1), w(2));
    println!(
        "| {:<w0$} | {:>w1$} | {:>w2$} |",
        header[0], header[1], header[2]
    );
    println!(
        "|{}|{}:|{}:|",
        "-".repeat(w0 + 2),
        "-".repeat(w1 + 1),
        "-".repeat(w2 + 1)
    );
    for r in rows {
        println!("| {:<w0$} | {:>w1$} | {:>w2$} |", r[0], r[1], r[2]);
    }
}

fn main() -> Result<(), BoxError> {
    let opts = Opts::parse()?;
    if !labkit::is_root() {
        return Err("the convergence bench needs root (namespaces, BGP on port 179)".into());
    }
    let command = std::env::var("BENCH_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load0 = loadavg();
    let started = Instant::now();
    eprintln!("convergence: {} cycles (+{WARMUP} warm-up) …", opts.cycles);
    let lat = latency(opts.cycles, opts.logs.as_deref(), opts.breakdown)?;
    eprintln!(
        "convergence: latency done in {:.0} s; cold start of {} VIPs …",
        started.elapsed().as_secs_f64(),
        opts.cold_vips
    );
    let cold = if opts.cold_vips > 0 {
        Some(cold_start(opts.cold_vips, opts.logs.as_deref())?)
    } else {
        None
    };
    let load1 = loadavg();

    println!();
    let exa = format!(
        "script + ExaBGP {}",
        lat.exa_version.trim_start_matches("ExaBGP : ")
    );
    print_table(["", "ipvs-sync", &exa], &rows(&lat, cold.as_ref()));
    println!();
    println!(
        "- Paths: `{} VIP,b-LP,80` → arbiter (unix socket) → RabbitMQ → \
         client → BGP → r1; a bash quorum script → FIFO → ExaBGP's API process → BGP → its own \
         gobgpd router (same config as r1). One balancer, iBGP, gobgpd {}.",
        lat.handler,
        version("gobgpd", "--version").trim_start_matches("gobgpd version ")
    );
    println!(
        "- Latency: from just before the handler process is spawned to the line of a \
         `gobgp monitor global rib -j` stream (one per router, timestamped on arrival by a \
         reader thread; no polling); {WARMUP} warm-up cycles, then the two paths interleaved \
         each cycle. Desc files on tmpfs ({DESC_PARENT}), as /var/run in production. Both \
         handlers run in place as keepalived runs them (no `nsenter`), without cargo's \
         LD_LIBRARY_PATH."
    );
    if let Some(c) = &cold {
        let list = |v: &[(String, f64)]| -> String {
            let s = v
                .iter()
                .filter(|(_, n)| *n > 0.0)
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            if s.is_empty() {
                "n/a (not yet in /metrics)".into()
            } else {
                s
            }
        };
        println!(
            "- Cold start: a fresh fleet; keepalived configs give lb1 {} IPv6 VIPs, desc files say \
             announce for all; r1 read with `gobgp global rib summary` ({} polls ≥ {} ms apart). \
             Messages sent until then: client {}; arbiter {}.",
            c.vips,
            c.polls,
            POLL_GAP.as_millis(),
            list(&c.client_sent),
            list(&c.arbiter_sent)
        );
    }
    println!(
        "- Machine: {cores} cores, load average {load0} at start, {load1} at end; run took {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    println!("- Command: {command}");
    match &lat.breakdown {
        None => {}
        Some(Ok(stages)) => {
            println!();
            println!(
                "Where an ipvs-sync `quorum down` spends its time (the daemons at debug; each \
                 stage ends at a line of their logs, see benches/convergence/breakdown.rs):"
            );
            println!();
            print_table(["stage", "p50 / p90 / max µs", "share of p50s"], stages);
        }
        Some(Err(why)) => println!("- Breakdown: {why}"),
    }
    Ok(())
}
