//! `[announce] withdraw_grace`: after the withdraw is on the wire, the balancer keeps the
//! VIP's address that long before it removes it, so traffic still in flight to it is
//! served. Watched on one clock: the router's RIB (GoBGP's by `gobgp monitor global rib -j`,
//! BIRD's by `birdc show route` back to back) and the balancer's `lo` (`ip monitor
//! address`), all stamped on arrival in this process (`labkit::RibMonitor`,
//! `Bird::wait_route`, `labkit::AddrMonitor`). Run with `netns-lab/test withdraw_grace`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use labkit::fleet::{Fleet, FleetOpts};
use labkit::{AddrEvent, Ini, RibEvent};

/// The grace the balancer is configured with.
const GRACE: Duration = Duration::from_secs(1);
/// What the two observation paths may add to or take from a gap between a RIB change and
/// an address change: gobgpd's processing and its gRPC stream on one side, the kernel's
/// netlink event and `ip` on the other, on a loaded machine.
const SLACK: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(10);
const VIP: &str = "203.0.113.10";
const PREFIX: &str = "203.0.113.10/32";

/// One balancer with `withdraw_grace = 1`, `203.0.113.10` announced; with a BIRD router
/// beside the gobgpd one when `bird`.
fn announced_fleet(bird: bool) -> Fleet {
    labkit::require_root();
    let f = Fleet::start(
        env!("CARGO_BIN_EXE_ipvs-sync").as_ref(),
        FleetOpts {
            balancer_config: Ini::with("announce", "withdraw_grace", GRACE.as_secs()),
            bird,
            ..FleetOpts::default()
        },
    )
    .unwrap();
    f.quorum("up", &format!("{VIP},b-100,80")).unwrap();
    let vip: IpAddr = VIP.parse().unwrap();
    assert!(
        f.wait_paths(0, &vip, 1, WAIT).is_some(),
        "never announced:\n{}",
        f.client_log(0)
    );
    f
}

/// Whose RIB the grace is measured from.
#[derive(Debug, Clone, Copy)]
enum Rib {
    /// gobgpd's, streamed by `gobgp monitor global rib -j`.
    Gobgp,
    /// BIRD's, by `birdc show route` back to back: a withdraw is seen at or after it
    /// happened, so the gap measured is at most the real one.
    Bird,
}

/// Quorum down on an announced VIP, then: the address leaves `lo` no sooner than
/// [`GRACE`] after `rib` lost the path.
fn grace_after_the_router_lost_the_path(rib: Rib) {
    let f = announced_fleet(matches!(rib, Rib::Bird));
    let lo = f.lo_monitor(0).unwrap();
    assert!(f.lo_addrs(0).contains(PREFIX), "{}", f.lo_addrs(0));
    let down = || f.quorum("down", &format!("{VIP},b-100,80")).unwrap();
    let withdrawn = match rib {
        Rib::Gobgp => {
            let m = f.monitor(0, "ipv4").unwrap();
            down();
            m.wait(PREFIX, true, WAIT).map(|e| e.at)
        }
        Rib::Bird => {
            let b = f.bird().unwrap();
            assert!(
                b.wait_route(PREFIX, true, WAIT).is_some(),
                "BIRD never had {PREFIX}:\n{}",
                b.log()
            );
            // Watching from before the quorum call, so the first look that misses the
            // route is the one right after the withdraw.
            let gone = std::thread::scope(|s| {
                let watch = s.spawn(|| b.wait_route(PREFIX, false, WAIT));
                down();
                watch.join().unwrap()
            });
            assert!(
                gone.is_some(),
                "BIRD kept {PREFIX}: {:?}\n{:?}",
                b.birdc(&["show", "route", PREFIX, "all"]),
                b.routes(PREFIX)
            );
            gone
        }
    }
    .unwrap_or_else(|| panic!("{rib:?}: never withdrawn:\n{}", f.client_log(0)));
    let removed = lo
        .wait(PREFIX, false, GRACE + WAIT)
        .unwrap_or_else(|| panic!("the address was never removed:\n{}", f.client_log(0)));
    let gap = removed.at.checked_duration_since(withdrawn);
    eprintln!("{rib:?} lost the path → address left lo: {gap:?} (grace {GRACE:?})");
    assert!(
        gap.is_some_and(|g| g + SLACK >= GRACE),
        "the address left lo {gap:?} after {rib:?} lost the path (None: before it), \
         not {GRACE:?}:\n{}",
        f.client_log(0)
    );
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_withdraw_grace_keeps_the_address_a_second_after_gobgp_lost_the_path() {
    grace_after_the_router_lost_the_path(Rib::Gobgp);
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server, gobgpd and bird; run netns-lab/test"]
fn lab_withdraw_grace_keeps_the_address_a_second_after_bird_lost_the_path() {
    grace_after_the_router_lost_the_path(Rib::Bird);
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_a_fin_syn_flap_never_leaves_the_vip_announced_without_its_address() {
    const FLAPS: usize = 1000;
    const EVERY: Duration = Duration::from_millis(10);
    let f = announced_fleet(false);
    let rib = f.monitor(0, "ipv4").unwrap();
    let lo = f.lo_monitor(0).unwrap();
    let arg = format!("{VIP},b-100,80");

    // quorum down, up, down, … one call every 10 ms (paced, each waited for): the arbiter
    // sends fin_announce and syn_announce as fast as keepalived could flap.
    let start = Instant::now();
    let mut next = start;
    for i in 0..2 * FLAPS {
        let dir = if i % 2 == 0 { "down" } else { "up" };
        f.quorum(dir, &arg).unwrap();
        next += EVERY;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let took = start.elapsed();
    // The last call was `up`: announced, with the address, once things settle; and no
    // address removal comes later, even after a grace.
    let vip: IpAddr = VIP.parse().unwrap();
    let settled = labkit::wait_until(Duration::from_secs(30), || {
        f.path_count(0, &vip) == 1 && f.lo_addrs(0).contains(PREFIX)
    });
    assert!(
        settled,
        "not announced with its address after the flap:\n{}",
        f.lo_addrs(0)
    );
    let routes: Vec<RibEvent> = rib
        .collect(GRACE + Duration::from_secs(2))
        .into_iter()
        .filter(|e| e.prefix == PREFIX)
        .collect();
    let addrs: Vec<AddrEvent> = lo.take().into_iter().filter(|e| e.addr == PREFIX).collect();
    eprintln!(
        "{FLAPS} flaps in {took:?}: {} RIB changes ({} withdraws), {} address changes ({} removals)",
        routes.len(),
        routes.iter().filter(|e| e.withdrawal).count(),
        addrs.len(),
        addrs.iter().filter(|e| !e.added).count()
    );
    if let Some(bad) = removal_while_announced(&routes, &addrs) {
        panic!(
            "the address left lo while the router held the path; the events around it \
             (ms from the removal):\n{}\n{}",
            around(&routes, &addrs, bad),
            f.client_log(0)
        );
    }
    assert_eq!(f.path_count(0, &vip), 1, "the VIP ends withdrawn");
    assert!(
        f.lo_addrs(0).contains(PREFIX),
        "the VIP ends announced without its address on lo"
    );
    assert!(
        addrs.last().is_none_or(|e| e.added),
        "the last address change removed it"
    );
}

/// The first address removal that came while the router held the path: announced
/// [`SLACK`] before it (the monitors started with it announced), and not withdrawn within
/// [`SLACK`] either side, so a removal at the end of a grace next to a fresh announce is
/// not one. Returns when it came.
fn removal_while_announced(routes: &[RibEvent], addrs: &[AddrEvent]) -> Option<Instant> {
    addrs.iter().filter(|e| !e.added).map(|e| e.at).find(|&at| {
        let before = at.checked_sub(SLACK).unwrap_or(at);
        let announced = routes
            .iter()
            .rfind(|e| e.at <= before)
            .is_none_or(|e| !e.withdrawal);
        let withdrawn_near = routes
            .iter()
            .any(|e| e.withdrawal && e.at > before && e.at <= at + SLACK);
        announced && !withdrawn_near
    })
}

/// The RIB and address events within a second of `at`, one a line, in time order.
fn around(routes: &[RibEvent], addrs: &[AddrEvent], at: Instant) -> String {
    let near = |t: Instant| t + Duration::from_secs(1) >= at && t <= at + Duration::from_secs(1);
    let ms = |t: Instant| {
        if t >= at {
            (t - at).as_secs_f64() * 1000.0
        } else {
            -(at - t).as_secs_f64() * 1000.0
        }
    };
    let mut lines: Vec<(f64, String)> = routes
        .iter()
        .filter(|e| near(e.at))
        .map(|e| {
            let what = if e.withdrawal {
                "withdrawn"
            } else {
                "announced"
            };
            (ms(e.at), format!("router: {what}"))
        })
        .chain(addrs.iter().filter(|e| near(e.at)).map(|e| {
            let what = if e.added { "added" } else { "removed" };
            (ms(e.at), format!("lo: address {what}"))
        }))
        .collect();
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    lines
        .iter()
        .map(|(t, what)| format!("{t:+9.1} {what}"))
        .collect::<Vec<_>>()
        .join("\n")
}
