//! Interop with real routers in network namespaces (lab tests: root, `ip netns`, BIRD 2,
//! FRR). Run with `netns-lab/test lab_bfd` or
//! `cargo nextest run -p bfd --run-ignored only -E 'test(/^lab_/)'` as root.
//!
//! Layout: namespace `r` runs the router (192.0.2.1, 2001:db8::1) at 100 ms / 100 ms × 3,
//! namespace `lb` runs our driver (192.0.2.11, 2001:db8::11) at 300 ms / 300 ms × 3, one veth
//! between them. The test thread enters `lb` before building its tokio runtime, so the
//! driver's sockets live there; the router is driven with `birdc` / `vtysh`.
//!
//! Each test: both sessions (IPv4, IPv6) come Up on both sides with the intervals negotiated
//! both ways; we speed up to 100 ms and the Poll / Final exchange brings both sides to the new
//! detection time; the router is frozen (SIGSTOP by pid) and we report Down within our
//! detection time, and Up again once it is thawed (after the dampening hold-down); then we go
//! AdminDown on one session and stop dead on the other, and the router shows both Down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod routers;

use std::time::{Duration, Instant};

use bfd::packet::Diag;
use bfd::{Bfd, BfdConfig, BfdEvent, PeerSpec, PeerStatus};
use labkit::Netns;
use nix::sys::signal::Signal;
use routers::{session, Bird, Frr, RouterSession};
use tokio::runtime::Runtime;
use tokio::sync::mpsc::UnboundedReceiver;

const R_V4: &str = "192.0.2.1";
const R_V6: &str = "2001:db8::1";
const LB_V4: &str = "192.0.2.11";
const LB_V6: &str = "2001:db8::11";
const WAIT: Duration = Duration::from_secs(15);
/// Scheduling slack on a shared two-core machine, on top of a detection time.
const SLACK: Duration = Duration::from_millis(250);

struct Lab {
    r: Netns,
    lb: Netns,
}

fn lab() -> Lab {
    assert!(
        labkit::require_root(),
        "lab test: needs root and network namespaces; run netns-lab/test"
    );
    let r = Netns::new("bfd-r").unwrap();
    let lb = Netns::new("bfd-lb").unwrap();
    labkit::veth(
        &r,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &lb,
        &["192.0.2.11/24", "2001:db8::11/64"],
    )
    .unwrap();
    Lab { r, lb }
}

/// What the scenario needs of a router.
trait Router {
    fn name(&self) -> &'static str;
    fn sessions(&self) -> Vec<RouterSession>;
    fn signal(&mut self, s: Signal);
    /// Whether the router's view of session `peer` shows our side at `ms` / `ms` × 3.
    fn sees_us_at(&self, s: &RouterSession, ms: u64) -> bool;
}

impl Router for Bird {
    fn name(&self) -> &'static str {
        "BIRD"
    }
    fn sessions(&self) -> Vec<RouterSession> {
        Bird::sessions(self)
    }
    fn signal(&mut self, s: Signal) {
        Bird::signal(self, s);
    }
    /// BIRD shows its negotiated transmit interval (max(its 100 ms, our min rx)) and its
    /// detection time (our multiplier × max(its 100 ms rx, our min tx)).
    fn sees_us_at(&self, s: &RouterSession, ms: u64) -> bool {
        s.tx_ms == Some(ms) && s.detect_ms == Some(3 * ms)
    }
}

impl Router for Frr {
    fn name(&self) -> &'static str {
        "FRR"
    }
    fn sessions(&self) -> Vec<RouterSession> {
        Frr::sessions(self)
    }
    fn signal(&mut self, s: Signal) {
        Frr::signal(self, s);
    }
    /// FRR shows the intervals it last received from us.
    fn sees_us_at(&self, s: &RouterSession, ms: u64) -> bool {
        s.remote_tx_ms == Some(ms) && s.remote_rx_ms == Some(ms)
    }
}

fn next_event(rt: &Runtime, ev: &mut UnboundedReceiver<BfdEvent>) -> BfdEvent {
    rt.block_on(async { tokio::time::timeout(WAIT, ev.recv()).await })
        .expect("no BFD event in time")
        .expect("driver stopped")
}

fn peer(rt: &Runtime, bfd: &Bfd, name: &str) -> PeerStatus {
    let s = rt.block_on(bfd.status()).unwrap();
    s.peers.into_iter().find(|p| p.name == name).unwrap()
}

fn wait_peer(rt: &Runtime, bfd: &Bfd, name: &str, what: &str, f: impl Fn(&PeerStatus) -> bool) {
    let ok = labkit::wait_until(WAIT, || f(&peer(rt, bfd, name)));
    assert!(ok, "{what}: {:#?}", peer(rt, bfd, name));
}

fn wait_router(r: &dyn Router, addr: &str, what: &str, f: impl Fn(&RouterSession) -> bool) {
    let ok = labkit::wait_until(WAIT, || session(&r.sessions(), addr).is_some_and(|s| f(&s)));
    assert!(ok, "{} {what}: {:?}", r.name(), r.sessions());
}

fn spec(name: &str, remote: &str) -> PeerSpec {
    PeerSpec::new(name, remote.parse().unwrap())
}

/// Collects the next `n` events, keyed by peer name.
fn events(rt: &Runtime, ev: &mut UnboundedReceiver<BfdEvent>, n: usize) -> Vec<BfdEvent> {
    let mut v: Vec<BfdEvent> = (0..n).map(|_| next_event(rt, ev)).collect();
    v.sort_by_key(|e| format!("{e:?}"));
    v
}

fn scenario(lab: &Lab, router: &mut dyn Router) {
    let who = router.name();
    lab.lb.enter().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (bfd, mut ev) = {
        let _guard = rt.enter();
        Bfd::start(BfdConfig::default()).unwrap()
    };
    rt.block_on(bfd.add_peer(spec("v4", R_V4))).unwrap();
    rt.block_on(bfd.add_peer(spec("v6", R_V6))).unwrap();

    // Up on both sides, intervals negotiated both ways.
    assert_eq!(
        events(&rt, &mut ev, 2),
        vec![
            BfdEvent::Up { name: "v4".into() },
            BfdEvent::Up { name: "v6".into() }
        ]
    );
    for (name, us) in [("v4", LB_V4), ("v6", LB_V6)] {
        wait_peer(&rt, &bfd, name, "at 300 ms, Poll done", |p| {
            !p.polling && p.tx_interval == Some(Duration::from_millis(300))
        });
        // A few seconds of Up at the router's 300 ms: long enough for a detection time to
        // expire if we kept sending at the slow-start second after advertising 300 ms.
        wait_peer(&rt, &bfd, name, "Up for 8 packets", |p| p.packets_in >= 8);
        let p = peer(&rt, &bfd, name);
        // Ours: tx max(300, its 100 rx); detection 3 × max(300 rx, its 100 tx).
        assert_eq!(p.detection_time, Some(Duration::from_millis(900)), "{p:?}");
        assert_eq!(p.flaps, 0, "no flap after Up: {p:?}");
        wait_router(router, us, "Up at 300 ms", |s| {
            s.state == "up" && router.sees_us_at(s, 300)
        });
    }

    // We speed up: Poll, Final, and the new detection time on both sides.
    let before = peer(&rt, &bfd, "v4");
    rt.block_on(bfd.set_intervals(
        "v4",
        Duration::from_millis(100),
        Duration::from_millis(100),
        3,
    ))
    .unwrap();
    wait_peer(&rt, &bfd, "v4", "Poll answered, 100 ms in use", |p| {
        !p.polling
            && p.polls_sent > before.polls_sent
            && p.finals_received > before.finals_received
            && p.tx_interval == Some(Duration::from_millis(100))
            && p.detection_time == Some(Duration::from_millis(300))
    });
    wait_router(router, LB_V4, "sees 100 ms", |s| {
        s.state == "up" && router.sees_us_at(s, 100)
    });
    let p = peer(&rt, &bfd, "v4");
    eprintln!("{who}: after the change {p:?}");
    assert_eq!(p.flaps, 0, "no flap while changing intervals: {p:?}");

    // The router freezes: we report Down within our detection time.
    router.signal(Signal::SIGSTOP);
    let t0 = Instant::now();
    let mut took = Vec::new();
    for _ in 0..2 {
        match next_event(&rt, &mut ev) {
            BfdEvent::Down {
                name,
                diag,
                remote_admin_down,
            } => {
                assert_eq!(
                    (diag, remote_admin_down),
                    (Diag::DetectionTimeExpired, false)
                );
                took.push((name, t0.elapsed()));
            }
            other => panic!("{who} frozen: {other:?}"),
        }
    }
    eprintln!("{who} frozen (SIGSTOP): Down after {took:?} (detection times 300 ms, 900 ms)");
    for (name, t) in &took {
        let detect = Duration::from_millis(if name == "v4" { 300 } else { 900 });
        assert!(*t <= detect + SLACK, "{name}: {t:?} > {detect:?} + slack");
    }
    router.signal(Signal::SIGCONT);
    // Back Up once thawed (the dampening holds the Up for 1 s after the flap).
    assert_eq!(
        events(&rt, &mut ev, 2),
        vec![
            BfdEvent::Up { name: "v4".into() },
            BfdEvent::Up { name: "v6".into() }
        ]
    );
    wait_router(router, LB_V4, "Up again", |s| s.state == "up");
    wait_router(router, LB_V6, "Up again", |s| s.state == "up");

    // We go AdminDown on v4: the router shows it Down.
    rt.block_on(bfd.admin_down("v4")).unwrap();
    wait_router(router, LB_V4, "Down after our AdminDown", |s| {
        s.state != "up"
    });

    // We stop dead (no AdminDown: the driver is dropped): the router times v6 out after
    // 3 × max(its 100 ms rx, our 300 ms tx) = 900 ms.
    drop(bfd);
    let t0 = Instant::now();
    wait_router(router, LB_V6, "Down after we stopped", |s| s.state != "up");
    let took = t0.elapsed();
    eprintln!("{who}: saw us stopped after {took:?} (its detection time 900 ms, polled)");
    assert!(
        took <= Duration::from_millis(900) + SLACK * 4,
        "{who} took {took:?}"
    );
}

#[test]
#[ignore = "lab: root, network namespaces, BIRD 2"]
fn lab_bfd_bird() {
    let lab = lab();
    let mut bird = Bird::start(
        &lab.r,
        &format!(
            "router id {R_V4};\nprotocol device {{}}\n\
             protocol bfd {{\n  interface \"*\" {{ min rx interval 100 ms; \
             min tx interval 100 ms; multiplier 3; }};\n  \
             neighbor {LB_V4};\n  neighbor {LB_V6};\n}}\n"
        ),
    );
    scenario(&lab, &mut bird);
}

#[test]
#[ignore = "lab: root, network namespaces, FRR (bfdd, zebra)"]
fn lab_bfd_frr() {
    let lab = lab();
    assert!(
        std::path::Path::new("/usr/lib/frr/bfdd").exists(),
        "FRR is not installed: apt-get install -y frr"
    );
    let peer = |addr: &str| {
        format!(
            " peer {addr}\n  receive-interval 100\n  transmit-interval 100\n  \
             detect-multiplier 3\n !\n"
        )
    };
    let mut frr = Frr::start(&lab.r, &format!("bfd\n{}{}!\n", peer(LB_V4), peer(LB_V6)));
    scenario(&lab, &mut frr);
}
