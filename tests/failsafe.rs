//! The fail-safe promises, as root with real processes (see `labkit::fleet`): a quorum
//! `down` ends in a withdraw at the router whatever fails on its way — the desc file
//! system full, the arbiter daemon killed, the desc lock held by a stuck process.
//! Run with `netns-lab/test lab_failsafe`.
//!
//! Each test announces one VIP, breaks one part, runs `ipvs-sync quorum down` as
//! keepalived would (once: keepalived never runs a handler again) and times, from just
//! before the handler starts, the withdraw on the router's RIB stream
//! ([`labkit::RibMonitor`]) and the handler's exit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "failsafe/support.rs"]
mod support;

use std::net::IpAddr;
use std::time::Duration;

use announce::quorum::LOCK_TIMEOUT;
use labkit::fleet::{host_prefix, Fleet, FleetOpts};
use labkit::metrics::metric;
use nix::sys::signal::Signal;
use support::{broadcast_fins, fill, time_down, LockHolder, Tmpfs};

/// The promise: a quorum down is withdrawn at the router within this.
const WITHDRAWN_WITHIN: Duration = Duration::from_secs(1);
/// The handler's quorum argument.
const ARG: &str = "203.0.113.10,b-100,80";
/// The arbiter's count of handler calls that could not record their call.
const FAILURES: &str = "ipvs_sync_quorum_handler_failures_total";

fn vip() -> IpAddr {
    IpAddr::from([203, 0, 113, 10])
}

/// A one-balancer fleet (one iBGP router) with desc files in `desc_dir`, and the VIP
/// announced at the router.
fn announced(desc_dir: Option<std::path::PathBuf>) -> Fleet {
    let f = Fleet::start(
        env!("CARGO_BIN_EXE_ipvs-sync").as_ref(),
        FleetOpts {
            desc_dir,
            ..FleetOpts::default()
        },
    )
    .unwrap();
    f.quorum("up", ARG).unwrap();
    assert!(
        f.wait_paths(0, &vip(), 1, Duration::from_secs(10))
            .is_some(),
        "not announced:\n{}",
        f.client_log(0)
    );
    f
}

/// The arbiter's metrics count one handler failure (within 5 s).
fn assert_one_failure_counted(f: &Fleet) {
    assert!(
        labkit::wait_until(Duration::from_secs(5), || metric(
            &f.arbiter_metrics(),
            FAILURES
        ) == 1.0),
        "the arbiter counts the failure:\n{}",
        f.arbiter_metrics()
    );
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_failsafe_desc_filesystem_full_down_withdrawn_within_1s() {
    labkit::require_root();
    // Declared first so it goes last: the fleet's daemons are gone before the unmount.
    let tmpfs = Tmpfs::mount("desc", 256 * 1024).unwrap();
    let f = announced(Some(tmpfs.path().to_owned()));
    let desc = f.desc_path(&vip());
    assert!(desc.exists());
    let mon = f.monitor(0, "ipv4").unwrap();

    let filled = fill(&tmpfs.path().join("filler")).unwrap();
    println!("desc file system: {filled} bytes of filler, then ENOSPC");

    let d = time_down(&f, &mon, ARG, &host_prefix(&vip()), Duration::from_secs(5));
    println!(
        "desc file system full: quorum down → withdrawn at r1 {:?}, handler exit {:?} ({})",
        d.at_router, d.handler, d.status
    );
    assert!(
        d.status.success(),
        "the withdraw went out, so exit 0: {}",
        d.stderr
    );
    assert!(
        d.stderr.contains("No space left on device"),
        "names what failed: {}",
        d.stderr
    );
    let at = d
        .at_router
        .unwrap_or_else(|| panic!("not withdrawn:\n{}\n{}", d.stderr, f.arbiter_log()));
    assert!(at < WITHDRAWN_WITHIN, "withdrawn after {at:?}");
    assert!(
        !desc.exists(),
        "the desc file is removed: a missing desc file means no quorum"
    );
    assert_one_failure_counted(&f);
    assert_eq!(f.path_count(0, &vip()), 0);
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_failsafe_arbiter_killed_down_withdrawn_within_1s() {
    labkit::require_root();
    let mut f = announced(None);
    let mon = f.monitor(0, "ipv4").unwrap();
    f.signal_arbiter(Signal::SIGKILL).unwrap();
    let arbiter = f.arbiter.as_mut().unwrap();
    assert!(
        labkit::wait_until(Duration::from_secs(5), || arbiter
            .exited()
            .unwrap()
            .is_some()),
        "the arbiter survived SIGKILL"
    );
    // Its quorum socket stays behind, with nobody listening.
    assert!(f.spec.quorum_socket().exists());

    let d = time_down(&f, &mon, ARG, &host_prefix(&vip()), Duration::from_secs(5));
    println!(
        "arbiter killed: quorum down → withdrawn at r1 {:?}, handler exit {:?} ({})",
        d.at_router, d.handler, d.status
    );
    assert!(d.status.success(), "{}", d.stderr);
    let at = d
        .at_router
        .unwrap_or_else(|| panic!("not withdrawn:\n{}\n{}", d.stderr, f.client_log(0)));
    assert!(at < WITHDRAWN_WITHIN, "withdrawn after {at:?}");
    assert_eq!(f.path_count(0, &vip()), 0);
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_failsafe_desc_lock_held_by_a_stuck_process_down_still_withdrawn() {
    labkit::require_root();
    let f = announced(None);
    let mon = f.monitor(0, "ipv4").unwrap();
    let desc = f.desc_path(&vip());
    // Dropped (killed by pid) at the end, also when an assert fails.
    let _stuck = LockHolder::start(&announce::desc::lock_path(&desc)).unwrap();

    let d = time_down(&f, &mon, ARG, &host_prefix(&vip()), LOCK_TIMEOUT * 2);
    println!(
        "desc lock held: quorum down → withdrawn at r1 {:?}, handler exit {:?} ({}); lock \
         timeout {LOCK_TIMEOUT:?}",
        d.at_router, d.handler, d.status
    );
    assert!(d.status.success(), "{}", d.stderr);
    assert!(
        d.stderr.contains("still held"),
        "names what failed: {}",
        d.stderr
    );
    assert!(
        d.handler < LOCK_TIMEOUT + Duration::from_secs(2),
        "the handler gives up within its lock timeout: exit after {:?}",
        d.handler
    );
    let at = d
        .at_router
        .unwrap_or_else(|| panic!("not withdrawn:\n{}\n{}", d.stderr, f.arbiter_log()));
    assert!(
        at < LOCK_TIMEOUT + WITHDRAWN_WITHIN,
        "withdrawn {at:?} after the call, more than {WITHDRAWN_WITHIN:?} after the lock \
         timeout"
    );
    assert!(!desc.exists(), "the desc file is removed");
    assert_one_failure_counted(&f);
}

/// `[messages] queue_max_length` of the bounded-queue test: well under what it sends.
const QUEUE_MAX: u64 = 1000;
/// Broadcasts sent while the balancer is gone.
const BROADCASTS: usize = 10_000;

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_failsafe_dead_balancers_queue_stays_bounded() {
    labkit::require_root();
    let mut f = Fleet::start(
        env!("CARGO_BIN_EXE_ipvs-sync").as_ref(),
        FleetOpts {
            // Long enough that no message expires by age while they are sent: the
            // length bound is what is looked at.
            max_age: Some(300),
            config: labkit::Ini::with("messages", "queue_max_length", QUEUE_MAX),
            ..FleetOpts::default()
        },
    )
    .unwrap();
    // The BGP sessions can be up before the client has declared its queue.
    assert!(
        labkit::wait_until(Duration::from_secs(10), || f
            .client_queue(0)
            .is_ok_and(|q| q.consumers == 1)),
        "lb1 never consumed its queue: {:?}\n{}",
        f.client_queue(0),
        f.client_log(0)
    );
    f.stop_client(0);
    assert!(
        labkit::wait_until(Duration::from_secs(10), || f
            .client_queue(0)
            .is_ok_and(|q| q.consumers == 0)),
        "lb1's queue is still consumed: {:?}\n{}",
        f.client_queue(0),
        f.client_log(0)
    );
    f.stop_arbiter();

    let t = std::time::Instant::now();
    broadcast_fins(&f, vip(), BROADCASTS);
    let sent = t.elapsed();
    // `fin_announce` travels on the announce lane: lb1's `ipvs-sync-announce.lb1` queue.
    // `rabbitmqctl list_queues` reports counts from the broker's statistics, refreshed every
    // few seconds, so it may still say 0 right after the confirms: read until the count is
    // in, checking the bound on both of lb1's queues at every read.
    let lane = format!(
        "{}{}",
        ipvs_sync::wire::amqp::ANNOUNCE_QUEUE_PREFIX,
        f.balancers[0].name
    );
    let mut q = f.queue(&lane).unwrap();
    let counted = labkit::wait_until(Duration::from_secs(20), || {
        q = f.queue(&lane).unwrap();
        for (name, held) in [
            (lane.as_str(), q.ready + q.unacked),
            ("the main queue", {
                let m = f.client_queue(0).unwrap();
                m.ready + m.unacked
            }),
        ] {
            assert!(
                held <= QUEUE_MAX,
                "lb1's {name} holds {held} messages, more than {QUEUE_MAX}"
            );
        }
        q.ready > 0
    });
    println!(
        "{BROADCASTS} broadcasts in {sent:?} to a stopped balancer: its announce-lane queue \
         holds {} (queue_max_length {QUEUE_MAX})",
        q.ready
    );
    assert!(counted, "the queue kept none of the newest messages");
}
