//! `bench --vs-bird`: the speaker against BIRD 2 as the sender, both into a BIRD 2 receiver
//! (it ingests far faster than gobgpd, so it tells fast senders apart), side by side in one
//! run, several runs.
//!
//! - `speaker (announce_many)`: the bench's `--sender N v4 batch` child, which hands all
//!   routes to the speaker in one `announce_many` call once the session is up;
//! - `speaker (announce)`: the same with one `announce` call per route (`--single`);
//! - `BIRD 2 (static)`: BIRD 2 with the routes in `protocol static` (blackhole, exported
//!   with `next hop self`).
//!
//! Measured on the receiver's control socket, polled every millisecond with `show protocols
//! all` (its channel counters; a `show route count` walks the table and would load the
//! receiver): from the poll that first sees the session Established to the first that
//! sees 99 % of the prefixes imported (BIRD holds its last UPDATE and End-of-RIB for
//! seconds, so 100 % says little; it is printed too). Sender CPU (utime+stime from /proc)
//! is counted from the last poll before Established to 100 % (BIRD's config parse is not
//! counted), sender peak RSS is the process's VmHWM.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use labkit::{Bird, Netns};

use crate::{pair, spawn_sender, v4_prefix, Pair, AS, RECV_V4, SEND_V4};

/// A client of BIRD's control socket (the protocol birdc speaks: one command per line;
/// answer lines are `NNNN-text` or ` text`, the last `NNNN text`).
struct Ctl {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Ctl {
    fn connect(path: &std::path::Path) -> Ctl {
        let s = UnixStream::connect(path).unwrap();
        let mut c = Ctl {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let mut hello = String::new();
        c.r.read_line(&mut hello).unwrap();
        assert!(hello.starts_with("0001 "), "{hello}");
        c
    }

    fn query(&mut self, cmd: &str) -> Vec<String> {
        writeln!(self.w, "{cmd}").unwrap();
        let mut out = vec![];
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).unwrap() == 0 {
                break;
            }
            let last = l.len() > 4
                && l.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                && l.as_bytes()[4] == b' ';
            out.push(l.trim_end().to_owned());
            if last {
                break;
            }
        }
        out
    }

    /// (session Established, routes imported) of BGP protocol `name`.
    fn state(&mut self, name: &str) -> (bool, u64) {
        let lines = self.query(&format!("show protocols all {name}"));
        let up = lines
            .iter()
            .any(|l| l.contains("BGP state:") && l.contains("Established"));
        // "     Routes:         1000 imported, 0 exported, 1000 preferred"
        let imported = lines
            .iter()
            .find_map(|l| {
                let rest = l.split("Routes:").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0);
        (up, imported)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    SpeakerBatch,
    SpeakerSingle,
    BirdStatic,
}

impl Sender {
    fn name(self) -> &'static str {
        match self {
            Sender::SpeakerBatch => "speaker (announce_many)",
            Sender::SpeakerSingle => "speaker (announce)",
            Sender::BirdStatic => "BIRD 2 (static)",
        }
    }
}

struct Run {
    sender: Sender,
    n: u32,
    to99: Option<f64>,
    to100: Option<f64>,
    cpu: Option<f64>,
    rss_mb: Option<f64>,
}

fn receiver(p: &Pair) -> Bird {
    Bird::start(
        &p.recv,
        &format!(
            "router id {RECV_V4};\nprotocol device {{}}\n\
             protocol bgp lb {{\n  local {RECV_V4} as {AS};\n  neighbor {SEND_V4} as {AS};\n  \
             passive on;\n  ipv4 {{ import all; export none; }};\n}}\n"
        ),
    )
    .unwrap()
}

fn bird_sender(ns: &Netns, n: u32) -> Bird {
    let mut conf = format!(
        "router id {SEND_V4};\nprotocol device {{}}\n\
         protocol bgp recv {{\n  local {SEND_V4} as {AS};\n  neighbor {RECV_V4} as {AS};\n  \
         ipv4 {{ import none; export all; next hop self; }};\n}}\n\
         protocol static st {{\n  ipv4;\n"
    );
    for i in 0..n {
        conf.push_str(&format!("  route {} blackhole;\n", v4_prefix(i)));
    }
    conf.push_str("}\n");
    Bird::start(ns, &conf).unwrap()
}

fn one_run(n: u32, sender: Sender) -> Run {
    eprintln!("== {} {n} → BIRD 2", sender.name());
    let p = pair("bvb");
    let recv = receiver(&p);
    let mut ctl = Ctl::connect(&recv.ctl_path());
    // The sender: a speaker child, or BIRD with the routes in its config.
    let mut child = None;
    let mut bird = None;
    let pid = match sender {
        Sender::SpeakerBatch | Sender::SpeakerSingle => {
            let mode = if sender == Sender::SpeakerBatch {
                "batch"
            } else {
                "single"
            };
            let c = spawn_sender(&p.send, n, "v4", mode);
            let pid = c.id();
            child = Some(c);
            pid
        }
        Sender::BirdStatic => {
            let b = bird_sender(&p.send, n);
            let pid = b.pid();
            bird = Some(b);
            pid
        }
    };
    let tick = Duration::from_millis(1);
    let end = Instant::now() + Duration::from_secs(120);
    // The sender's CPU at the last poll before the session was seen up: what it spent
    // before (BIRD parsing its config) is not counted.
    let mut cpu0 = 0.0;
    let t0 = loop {
        let cpu = labkit::proc::cpu_secs(pid).unwrap_or(0.0);
        if ctl.state("lb").0 {
            break Instant::now();
        }
        cpu0 = cpu;
        assert!(Instant::now() < end, "no session");
        std::thread::sleep(tick);
    };
    let want99 = u64::from(n) * 99 / 100;
    let (mut to99, mut to100) = (None, None);
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        let got = ctl.state("lb").1;
        if to99.is_none() && got >= want99 {
            to99 = Some(t0.elapsed().as_secs_f64());
        }
        if got >= u64::from(n) {
            to100 = Some(t0.elapsed().as_secs_f64());
            break;
        }
        // Past 99 %, the wait is BIRD's EoR tail: poll gently.
        std::thread::sleep(if to99.is_some() { tick * 20 } else { tick });
    }
    let cpu = labkit::proc::cpu_secs(pid).map(|c| c - cpu0);
    let rss_mb = labkit::proc::status_mb(pid, "VmHWM:");
    if let Some(mut c) = child {
        // The child prints stats and exits on a line on stdin.
        let _ = writeln!(c.stdin.as_mut().unwrap(), "stats");
        let mut out = BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        while out.read_line(&mut line).is_ok_and(|k| k > 0) && !line.starts_with("stats") {
            line.clear();
        }
        let _ = c.wait();
    }
    drop(bird);
    Run {
        sender,
        n,
        to99,
        to100,
        cpu,
        rss_mb,
    }
}

/// Runs the comparison and prints one row per run, then the ratios per size.
pub fn vs_bird(sizes: &[u32], runs: u32, single: bool) {
    let mut all: Vec<Run> = vec![];
    for &n in sizes {
        for run in 0..runs {
            // Who goes first alternates, so neither always gets the machine fresh or right
            // after the previous run's namespaces were torn down.
            let mut order = vec![Sender::SpeakerBatch, Sender::BirdStatic];
            if run % 2 == 1 {
                order.reverse();
            }
            if single {
                order.push(Sender::SpeakerSingle);
            }
            for s in order {
                all.push(one_run(n, s));
            }
        }
    }
    let f = |v: Option<f64>, unit: &str, prec: usize| {
        v.map(|x| format!("{x:.prec$} {unit}"))
            .unwrap_or_else(|| "—".into())
    };
    println!();
    println!("| receiver | sender | routes | Established → 99 % | → 100 % | sender CPU | sender peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    for r in &all {
        println!(
            "| BIRD 2 | {} | {} | {} | {} | {} | {} |",
            r.sender.name(),
            r.n,
            f(r.to99.map(|s| s * 1e3), "ms", 1),
            f(r.to100.map(|s| s * 1e3), "ms", 1),
            f(r.cpu, "s", 2),
            f(r.rss_mb, "MB", 1),
        );
    }
    println!();
    for &n in sizes {
        let of =
            |s: Sender| -> Vec<&Run> { all.iter().filter(|r| r.n == n && r.sender == s).collect() };
        let (sp, bird) = (of(Sender::SpeakerBatch), of(Sender::BirdStatic));
        let ratios: Vec<String> = sp
            .iter()
            .zip(&bird)
            .filter_map(|(a, b)| Some(format!("{:.2}", a.to99? / b.to99?)))
            .collect();
        println!(
            "{n} routes: speaker / BIRD time to 99 % per run: {}",
            ratios.join(", ")
        );
    }
}
