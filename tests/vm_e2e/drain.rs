//! Drain in the real kernel: a TCP connection through the VIP (IPVS direct routing to a
//! real server in its own namespace) holds a drained VIP announced, with GRACEFUL_SHUTDOWN
//! and LOCAL_PREF 0 at the router, until IPVS no longer counts it; the withdraw follows.
//!
//! ```text
//!  cl 192.0.2.50 ──▶ lb1 192.0.2.11 (VIP on vip0, IPVS -g) ──▶ rs 192.0.2.101
//!     route VIP via lb1                                          203.0.113.101-103 on eth0,
//!  cl ◀──────────────── replies from the VIP, straight back ───── VIP on lo (arp_ignore)
//! ```
//! A closed connection stays in IPVS's table in its closing state for the kernel's own
//! timeout (CLOSE, 10 s after a reset); the drain counts it until it is gone, so the
//! figure that matters is the time from the entry's end to the withdraw at the router.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use labkit::Netns;

use crate::guest::{ms, Guest, VIP4};
use crate::{within, CHANGE, START};

/// lb1's address as the router names the neighbor.
const LB1: &str = "192.0.2.11";

#[test]
#[ignore = "vm: needs the IPVS kernel, a broker and a router on the host; run netns-lab/vm-e2e"]
fn vm_e2e_a_long_connection_holds_the_drain_until_ipvs_lets_it_go() {
    let g = Guest::start("drain");
    let rs = real_server(&g);
    let cl = g.node("cl", "192.0.2.50");
    cl.ip(&["route", "add", &format!("{VIP4}/32"), "via", LB1])
        .unwrap();
    for arg in ["b-150,80", "b-150,443", "b-150,53"] {
        let out = g.quorum("up", &format!("{VIP4},{arg}"));
        assert!(out.status.success(), "{out:?}");
    }
    let prefix = format!("{VIP4}/32");
    let lp_from_lb1 = |lp: u32| {
        g.router_paths(&prefix)
            .iter()
            .any(|p| p.0 == LB1 && p.2 == Some(lp))
    };
    assert!(
        within(START, || lp_from_lb1(150) && g.all_mirror()),
        "not announced by lb1: {:?}\n{}",
        g.router_paths(&prefix),
        g.mirror_diff()
    );
    g.ok(&format!("{prefix} announced by lb1 with LOCAL_PREF 150"));

    // One connection through lb1's IPVS to the real server, kept open.
    let (conn, served) = connect_through(&cl, &rs);
    assert!(
        vip_entries(&g.lbs[0]) >= 1,
        "the connection is not in lb1's IPVS table"
    );
    g.ok(&format!(
        "a TCP connection cl → {VIP4}:80 → lb1 (IPVS, direct routing) → rs answered: {served:?}"
    ));

    let t = Instant::now();
    let out = g.balancer_cmd(0, &["drain", VIP4, "--timeout", "300"]);
    assert!(out.status.success(), "drain: {out:?}");
    assert!(
        within(CHANGE, || lp_from_lb1(0)),
        "lb1's path never went to LOCAL_PREF 0: {:?}",
        g.router_paths(&prefix)
    );
    g.ok(&format!(
        "drain: lb1's path at LOCAL_PREF 0 (GRACEFUL_SHUTDOWN) at the router in {} ms",
        ms(t)
    ));
    // drain_min is 1 s: past it, only the open connection keeps the VIP announced.
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(6) {
        assert!(
            lp_from_lb1(0),
            "withdrawn with its connection open ({} ms after the drain):\n{}",
            ms(t),
            g.client_log(0)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = g.balancer_cmd(0, &["status"]);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        status.contains("waiting for connections"),
        "status does not show the drain waiting:\n{status}\n{out:?}"
    );
    g.ok(&format!(
        "the open connection holds the drain {} ms past drain_min; status: waiting for connections",
        ms(t) - 1000
    ));

    // A reset ends the connection; IPVS keeps its entry in CLOSE until its timeout.
    let closed = Instant::now();
    drop_with_reset(conn);
    let (mut gone, mut withdrawn) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(CHANGE);
    while withdrawn.is_none() && Instant::now() < deadline {
        let entries = vip_entries(&g.lbs[0]);
        let announced = lp_from_lb1(0);
        if entries > 0 {
            assert!(
                announced,
                "withdrawn while IPVS still counts the connection"
            );
        } else if gone.is_none() {
            gone = Some(Instant::now());
        }
        if !announced {
            withdrawn = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (gone, withdrawn) = (
        gone.expect("the connection's entry never left IPVS"),
        withdrawn.expect("never withdrawn after the connection's entry left IPVS"),
    );
    let after = withdrawn.saturating_duration_since(gone);
    g.ok(&format!(
        "reset → entry gone from lb1's IPVS table {} ms (the kernel's CLOSE timeout) → withdrawn at the router {} ms later",
        gone.duration_since(closed).as_millis(),
        after.as_millis()
    ));
    // The drain counts once a second; the router's stream is read over 9p under TCG.
    assert!(
        after <= Duration::from_secs(3),
        "withdrawn {} ms after the connection's entry left IPVS",
        after.as_millis()
    );
    drop(rs);
    g.finish();
}

/// The real server: a namespace on the LAN answering for the tree's real servers of
/// `VIP4:80` (direct routing: the VIP on its loopback, never answered in ARP), and a
/// listener on port 80 that greets each connection and then reads until it ends.
fn real_server(g: &Guest) -> Netns {
    lan_real_server(g, "rs", |mut s| {
        // More than the client reads: its close then resets the connection.
        let _ = s.write_all(b"hello from rs\n");
        let _ = s.write_all(&[b'.'; 4096]);
        let mut buf = [0u8; 256];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    })
}

/// A namespace `tag` on the LAN at 192.0.2.101 holding the tree's real-server addresses of
/// `VIP4:80` (203.0.113.101-103 on eth0) and the VIP on `lo`, never answered in ARP (direct
/// routing), with a listener on port 80 that runs `serve` for each connection in a thread;
/// lb1 reaches those addresses on the LAN.
pub(crate) fn lan_real_server(g: &Guest, tag: &str, serve: fn(TcpStream)) -> Netns {
    let rs = g.node(tag, "192.0.2.101");
    for last in [101, 102, 103] {
        g.lbs[0]
            .ip(&[
                "route",
                "add",
                &format!("203.0.113.{last}/32"),
                "dev",
                "eth0",
            ])
            .unwrap();
    }
    for last in [101, 102, 103] {
        rs.ip(&[
            "addr",
            "add",
            &format!("203.0.113.{last}/32"),
            "dev",
            "eth0",
        ])
        .unwrap();
    }
    rs.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"])
        .unwrap();
    for (k, v) in [
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
    ] {
        rs.run("sysctl", &["-qw", &format!("{k}={v}")]).unwrap();
    }
    let name = rs.name().to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        Netns::attach(&name).unwrap().enter().unwrap();
        let listener = TcpListener::bind("0.0.0.0:80").unwrap();
        tx.send(()).unwrap();
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    rs
}

/// A connection from `cl` to `VIP4:80`, with the real server's first line.
fn connect_through(cl: &Netns, _rs: &Netns) -> (TcpStream, String) {
    let name = cl.name().to_owned();
    std::thread::spawn(move || {
        Netns::attach(&name).unwrap().enter().unwrap();
        let addr = format!("{VIP4}:80").parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30)).unwrap();
        s.write_all(b"hello from cl\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 14];
        s.read_exact(&mut buf).unwrap();
        (s, String::from_utf8_lossy(&buf).trim().to_owned())
    })
    .join()
    .unwrap()
}

/// Closes with data left unread, which makes the kernel send a reset.
fn drop_with_reset(conn: TcpStream) {
    drop(conn);
}

/// The connection entries of `VIP4:80` in `ns`'s IPVS table (`ipvsadm -Lnc`), any state.
fn vip_entries(ns: &Netns) -> usize {
    let table = ns.run("ipvsadm", &["-Lnc"]).unwrap_or_default();
    table
        .lines()
        .filter(|l| l.contains(&format!("{VIP4}:80")))
        .count()
}
