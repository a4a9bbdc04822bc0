//! Both switches of the fallback under traffic: a TCP connection through lb1's IPVS to a real
//! server, exchanging 8 bytes every 10 ms, while the arbiter goes away (lb1 hands IPVS to its
//! keepalived) and comes back (lb1 applies the arbiter's tree over keepalived's and stops it
//! with `--dont-release-ipvs`). The connection sees no reset and no long gap, and the VIP stays
//! announced by lb1 at the router the whole time.
//!
//! ```text
//!  cl 192.0.2.50 ──▶ lb1 192.0.2.11 (VIP on vip0, IPVS -g) ──▶ rs 192.0.2.101
//!     route VIP via lb1                                          203.0.113.101-103 on eth0,
//!  cl ◀──────────────── replies from the VIP, straight back ───── VIP on lo (arp_ignore)
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use labkit::Netns;

use super::drain::lan_real_server;
use super::fallback::{balancer_config, phase, status};
use super::guest::{ms, Guest, VIP4};
use super::{within, CHANGE, START};

const LB1: &str = "192.0.2.11";
/// The longest pause between two echoes the issue allows across a switch.
const MAX_GAP: Duration = Duration::from_millis(100);

#[test]
#[ignore = "vm: needs the IPVS kernel, a broker and a router on the host; run netns-lab/vm-e2e"]
fn vm_e2e_a_connection_through_the_vip_sees_no_gap_across_the_fallback_and_back() {
    let mut g = Guest::start_with("fallgap", &[], balancer_config);
    let _rs = echo_server(&g);
    let cl = g.node("gapcl", "192.0.2.50");
    cl.ip(&["route", "add", &format!("{VIP4}/32"), "via", LB1])
        .unwrap();
    for port in [80, 53, 443] {
        let out = g.quorum("up", &format!("{VIP4},b-150,{port}"));
        assert!(out.status.success(), "quorum up: {out:?}");
    }
    let prefix = format!("{VIP4}/32");
    let from_lb1 = |g: &Guest| g.router_paths(&prefix).iter().any(|p| p.0 == LB1);
    assert!(
        within(START, || from_lb1(&g) && g.all_mirror()),
        "not announced by lb1: {:?}\n{}",
        g.router_paths(&prefix),
        g.mirror_diff()
    );
    g.ok(&format!("{prefix} announced by lb1, trees mirrored"));

    let probe = Probe::start(&cl);
    assert!(
        within(CHANGE, || probe.echoes() >= 10),
        "no echo through the VIP: {:?}",
        probe.stop()
    );
    g.ok("a connection cl → VIP:80 → lb1 (IPVS) → rs echoes every 10 ms");

    // Every look at the router on the way records whether lb1's path was there.
    let mut lost_at_router = 0usize;
    let mut look = |g: &Guest| {
        if !from_lb1(g) {
            lost_at_router += 1;
        }
    };

    g.arbiter.stop().unwrap();
    assert!(
        within(CHANGE, || {
            look(&g);
            phase(&g.lbs[0]) == "fallback"
                && status(&g.lbs[0])["fallback"]["keepalived_pid"].is_u64()
        }),
        "lb1 did not fall back: {}",
        status(&g.lbs[0])
    );
    // keepalived's checks run (delay_loop 1) and its quorum_up reaches the client.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        look(&g);
        std::thread::sleep(Duration::from_millis(500));
    }
    g.ok(&format!(
        "lb1 in fallback, its keepalived running; {} echoes so far",
        probe.echoes()
    ));

    g.restart_arbiter();
    let t = Instant::now();
    assert!(
        within(START, || {
            look(&g);
            phase(&g.lbs[0]) == "normal"
                && status(&g.lbs[0])["fallback"]["keepalived_pid"].is_null()
        }),
        "lb1 still in fallback: {}",
        status(&g.lbs[0])
    );
    g.ok(&format!(
        "arbiter back: lb1 normal, keepalived stopped after {} ms",
        ms(t)
    ));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        look(&g);
        std::thread::sleep(Duration::from_millis(500));
    }

    let seen = probe.stop();
    g.ok(&format!(
        "probe: {} echoes over {:.1} s, longest gap {} ms, error: {:?}",
        seen.echoes,
        seen.ran.as_secs_f64(),
        seen.longest_gap.as_millis(),
        seen.error
    ));
    assert_eq!(seen.error, None, "the connection broke across a switch");
    assert!(
        seen.longest_gap <= MAX_GAP,
        "a gap of {} ms between echoes",
        seen.longest_gap.as_millis()
    );
    assert_eq!(
        lost_at_router, 0,
        "lb1's path missing at the router during a switch"
    );
    g.ok("no reset, no gap over 100 ms, lb1's path at the router throughout");
    assert!(within(CHANGE, || g.all_mirror()), "{}", g.mirror_diff());
    g.ok("lb1 mirrors the arbiter's tree again");
    g.finish();
}

/// The real server on the LAN ([`lan_real_server`]) with an echo listener on port 80
/// (keepalived's TCP_CHECK connects to it too).
fn echo_server(g: &Guest) -> Netns {
    lan_real_server(g, "gaprs", |mut s| {
        let mut buf = [0u8; 512];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

/// What the probe saw.
#[derive(Debug)]
struct Seen {
    echoes: u64,
    longest_gap: Duration,
    ran: Duration,
    error: Option<String>,
}

/// One TCP connection from `cl` to `VIP4:80` writing 8 bytes every 10 ms and reading them
/// back, until stopped or an error.
struct Probe {
    stop: Arc<AtomicBool>,
    echoes: Arc<std::sync::atomic::AtomicU64>,
    thread: JoinHandle<Seen>,
}

impl Probe {
    fn start(cl: &Netns) -> Probe {
        let name = cl.name().to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let echoes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, e) = (Arc::clone(&stop), Arc::clone(&echoes));
        let thread = std::thread::spawn(move || {
            Netns::attach(&name).unwrap().enter().unwrap();
            run_probe(&s, &e)
        });
        Probe {
            stop,
            echoes,
            thread,
        }
    }

    fn echoes(&self) -> u64 {
        self.echoes.load(Ordering::Relaxed)
    }

    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn run_probe(stop: &AtomicBool, echoes: &std::sync::atomic::AtomicU64) -> Seen {
    let began = Instant::now();
    let mut seen = Seen {
        echoes: 0,
        longest_gap: Duration::ZERO,
        ran: Duration::ZERO,
        error: None,
    };
    let addr = format!("{VIP4}:80").parse().unwrap();
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(30)) {
        Ok(s) => s,
        Err(e) => {
            seen.error = Some(format!("connect: {e}"));
            return seen;
        }
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut last: Option<Instant> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let out = n.to_be_bytes();
        let mut back = [0u8; 8];
        if let Err(e) = s.write_all(&out).and_then(|()| s.read_exact(&mut back)) {
            seen.error = Some(format!("echo {n}: {e}"));
            break;
        }
        if back != out {
            seen.error = Some(format!("echo {n}: got {back:?}"));
            break;
        }
        let now = Instant::now();
        if let Some(l) = last {
            seen.longest_gap = seen.longest_gap.max(now - l);
        }
        last = Some(now);
        n += 1;
        seen.echoes = n;
        echoes.store(n, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(10));
    }
    seen.ran = began.elapsed();
    seen
}
