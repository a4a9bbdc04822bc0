//! BFD beside BGP, measured at a real router (lab tests: root, `ip netns`, BIRD 2,
//! iptables). Run with `netns-lab/test bfd_lab`.
//!
//! Namespace `r` runs BIRD 2 with BGP and BFD (100 ms × 3) to the balancer; namespace `lb`
//! runs the balancer's BGP side as the client daemon builds it (`examples/bgp_bfd.rs`:
//! `client::bgp_cfg` + `client::bfd_link`) announcing one prefix, hold time 3 s. Each
//! measurement starts a fresh process, waits for BGP Established and BFD Up at the router,
//! breaks the path, and times how long the router keeps the prefix (BIRD's error wait is
//! cut to 1–2 s so that the next measurement need not wait its default minute):
//!
//! - the balancer frozen (SIGSTOP): with BFD the router must drop the prefix within 1 s
//!   (its detection time is 300 ms); with `bfd = false` the hold timer alone takes 2–3 s;
//! - the path cut with the links up (iptables drops everything in `lb`), and the balancer's
//!   end of the link set down: the same bound.
//!
//! A third test makes the path flap (1 s cut, 1 s open, repeatedly) and counts BGP
//! sessions established at the router: the balancer's BFD dampening (an Up after a flap is
//! reported only after 1 s, then 2, 4, 8 … up to 60 s of staying Up) must keep BGP from
//! following every flap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use labkit::{Bird, Netns};

const PREFIX: &str = "198.51.100.10/32";
/// Long enough for a balancer that meets a BFD session the router is still tearing down
/// (a flap, then the dampened Up) to settle.
const WAIT: Duration = Duration::from_secs(45);

struct Lab {
    _r: Netns,
    lb: Netns,
    /// The balancer's end of the link.
    lb_if: String,
    bird: Bird,
    dir: tempfile::TempDir,
}

fn lab() -> Lab {
    labkit::require_root();
    let r = Netns::new("bfdl-r").unwrap();
    let lb = Netns::new("bfdl-lb").unwrap();
    let (_, lb_if) = labkit::veth_pair(&r, &["192.0.2.1/24"], &lb, &["192.0.2.11/24"]).unwrap();
    let bird = Bird::start(
        &r,
        "router id 192.0.2.1;\n\
         log \"@LOG@\" all;\n\
         protocol device {}\n\
         protocol bfd { interface \"*\" { min rx interval 100 ms; min tx interval 100 ms; \
         multiplier 3; }; }\n\
         protocol bgp lb { local 192.0.2.1 as 65000; neighbor 192.0.2.11 as 65000; \
         passive on; direct; hold time 3; bfd on; error wait time 1, 2; ipv4 { import all; export none; }; }\n",
    )
    .unwrap();
    Lab {
        _r: r,
        lb,
        lb_if,
        bird,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// The balancer's `config.ini`: one peer, BFD at 100 ms × 3 when `bfd`.
fn write_config(dir: &Path, bfd: bool) -> PathBuf {
    let text = format!(
        "[main]\namqp_server = amqp://u@127.0.0.1/\nhostname = lb1.example.net\nipvs = false\n\
         service_mapping_wildcard = {d}/lbs/*/*/*.conf\n\
         service_mapping_config = {d}/mapping.json\n\
         vip_description_filepath = {d}/keepalived-{{vip}}-desc.json\n\
         [bgp]\nlocal_as = 65000\nrouter_id = 192.0.2.11\nhold_time = 3\nconnect_retry = 1\n\
         [bgp.peer.r1]\naddress = 192.0.2.1\nremote_as = 65000\nbfd = {bfd}\n\
         [bfd]\nmin_tx = 0.1\nmin_rx = 0.1\nmultiplier = 3\n",
        d = dir.display()
    );
    let path = dir.join(format!("config-{bfd}.ini"));
    std::fs::write(&path, text).unwrap();
    path
}

fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("bgp_bfd");
    assert!(p.exists(), "build it first: cargo build --examples ({p:?})");
    p
}

/// The balancer process, killed (by pid) when dropped.
struct Balancer(Child);

impl Balancer {
    fn start(lab: &Lab, bfd: bool) -> Balancer {
        let cfg = write_config(lab.dir.path(), bfd);
        let log = std::fs::File::create(lab.dir.path().join("bgp_bfd.log")).unwrap();
        let child = lab
            .lb
            .command(example().to_str().unwrap())
            .arg(&cfg)
            .arg(PREFIX)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Balancer(child)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        nix::sys::signal::kill(pid, sig).unwrap();
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bfd_up(bird: &Bird) -> bool {
    bird.birdc(&["show", "bfd", "sessions"]).is_ok_and(|s| {
        s.lines()
            .any(|l| l.contains("192.0.2.11") && l.contains(" Up "))
    })
}

/// BFD Up at the router with the fast timers in force: its timeout (detection time) is
/// 3 × 100 ms. Right after Up the balancer still advertises its slow-start interval (1 s),
/// and the router's detection time is 3 s until the Poll sequence completes.
fn bfd_fast(bird: &Bird) -> bool {
    bird.birdc(&["show", "bfd", "sessions"]).is_ok_and(|s| {
        s.lines().any(|l| {
            l.contains("192.0.2.11") && l.contains(" Up ") && l.trim_end().ends_with("0.300")
        })
    })
}

fn has_route(bird: &Bird) -> bool {
    bird.has_best_route(PREFIX, "lb")
}

/// Starts a balancer and waits until the router has its prefix (and, with `bfd`, BFD Up).
fn ready(lab: &Lab, bfd: bool) -> Balancer {
    let b = Balancer::start(lab, bfd);
    let ok = labkit::wait_until(WAIT, || {
        has_route(&lab.bird) && (!bfd || bfd_fast(&lab.bird))
    });
    assert!(
        ok,
        "router never got {PREFIX} (bfd {bfd}): {}\n{:?}\n{}",
        lab.bird.log(),
        lab.bird.birdc(&["show", "protocols", "all", "lb"]),
        std::fs::read_to_string(lab.dir.path().join("bgp_bfd.log")).unwrap_or_default()
    );
    b
}

/// How long the router keeps the prefix once `break_path` has returned (the path is broken
/// by then at the latest; an `iptables` or `ip` run can take a while on a loaded machine).
fn time_to_withdraw(lab: &Lab, break_path: impl FnOnce()) -> Duration {
    break_path();
    let t0 = Instant::now();
    let gone = labkit::wait_until(WAIT, || !has_route(&lab.bird));
    assert!(gone, "the router kept {PREFIX}: {}", lab.bird.log());
    t0.elapsed()
}

fn iptables_cut(lab: &Lab, cut: bool) {
    let op = if cut { "-I" } else { "-D" };
    for chain in ["INPUT", "OUTPUT"] {
        let st = lab
            .lb
            .command("iptables")
            .args([op, chain, "-j", "DROP"])
            .status()
            .unwrap();
        assert!(st.success(), "iptables {op} {chain}");
    }
}

fn link(lab: &Lab, up: bool) {
    let st = lab
        .lb
        .command("ip")
        .args([
            "link",
            "set",
            "dev",
            &lab.lb_if,
            if up { "up" } else { "down" },
        ])
        .status()
        .unwrap();
    assert!(st.success());
}

fn quantile(v: &[Duration], q: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let i = ((s.len() as f64 - 1.0) * q).round() as usize;
    s[i]
}

fn report(what: &str, v: &[Duration]) {
    println!(
        "{what}: n = {}, p50 = {} ms, p99 = {} ms, max = {} ms",
        v.len(),
        quantile(v, 0.5).as_millis(),
        quantile(v, 0.99).as_millis(),
        v.iter().max().unwrap().as_millis()
    );
}

/// `runs` measurements on fresh balancers (`bfd` or not): `break_path` breaks the path of a
/// ready balancer, `restore` undoes it after the balancer is gone.
fn measure(
    lab: &Lab,
    runs: usize,
    bfd: bool,
    break_path: impl Fn(&Balancer),
    restore: impl Fn(),
) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let b = ready(lab, bfd);
            let t = time_to_withdraw(lab, || break_path(&b));
            drop(b);
            restore();
            t
        })
        .collect()
}

#[test]
#[ignore = "lab: needs root, netns and BIRD 2; run netns-lab/test"]
fn lab_bfd_sigstop_withdraws_within_a_second_where_the_hold_timer_takes_seconds() {
    use nix::sys::signal::Signal;
    let lab = lab();
    let stop = |b: &Balancer| b.signal(Signal::SIGSTOP);
    let with_bfd = measure(&lab, 20, true, stop, || {});
    let hold_only = measure(&lab, 5, false, stop, || {});
    report("SIGSTOP, BFD 100 ms x 3", &with_bfd);
    report("SIGSTOP, hold timer 3 s alone", &hold_only);
    let worst = *with_bfd.iter().max().unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "with BFD the router kept the prefix {worst:?} after the balancer froze"
    );
    assert!(
        quantile(&hold_only, 0.5) > Duration::from_secs(1),
        "the hold timer alone should take seconds: {hold_only:?}"
    );
}

#[test]
#[ignore = "lab: needs root, netns, BIRD 2 and iptables; run netns-lab/test"]
fn lab_bfd_cut_path_withdraws_within_a_second() {
    let lab = lab();
    let cut = measure(
        &lab,
        10,
        true,
        |_| iptables_cut(&lab, true),
        || iptables_cut(&lab, false),
    );
    let down = measure(&lab, 10, true, |_| link(&lab, false), || link(&lab, true));
    report("path cut (links up), BFD 100 ms x 3", &cut);
    report("the balancer's veth down, BFD 100 ms x 3", &down);
    let worst = *cut.iter().chain(&down).max().unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "cut: {cut:?}, link down: {down:?}"
    );
}

/// Flaps the path and counts, at the router, BFD going down and BGP coming back
/// (`show protocols` polled every 20 ms).
#[test]
#[ignore = "lab: needs root, netns, BIRD 2 and iptables; run netns-lab/test"]
fn lab_bfd_flaps_are_dampened_before_they_reach_bgp() {
    let lab = lab();
    let _b = ready(&lab, true);
    // 20 flaps: 1 s cut (BFD Down after 300 ms), 1 s open (BFD Up again within ~1 s).
    let mut established = 0u32;
    let mut was_up = true;
    let mut bfd_downs = 0u32;
    let mut bfd_was_up = true;
    for _ in 0..20 {
        for cut in [true, false] {
            iptables_cut(&lab, cut);
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                let up = lab.bird.bgp_state("lb").is_ok_and(|s| s == "Established");
                if up && !was_up {
                    established += 1;
                }
                was_up = up;
                let b = bfd_up(&lab.bird);
                if !b && bfd_was_up {
                    bfd_downs += 1;
                }
                bfd_was_up = b;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    println!("40 s of 1 s cut / 1 s open: BFD went down {bfd_downs} times at the router, BGP re-established {established} times");
    assert!(bfd_downs >= 10, "the cuts should flap BFD: {bfd_downs}");
    // An Up is reported only after staying Up 1, 2, 4 … s: with 1 s open windows BGP
    // hardly ever comes back; without dampening it follows the flaps (7 times in 40 s
    // here, bounded by the connect retry).
    assert!(
        established <= 2,
        "BGP followed the flaps: {established} re-establishments for {bfd_downs} BFD flaps"
    );
}
