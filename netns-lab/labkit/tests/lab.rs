//! Lab tests of labkit itself: real namespaces, a veth, two gobgpd routers.
//! Run as root by `netns-lab/test`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use labkit::{veth, GobgpConfig, GobgpNeighbor, Gobgpd, Netns};

/// r1 (192.0.2.1, 2001:db8::1) and r2 (192.0.2.2, 2001:db8::2) joined by a veth.
fn two_nodes() -> (Netns, Netns) {
    labkit::require_root();
    let a = Netns::new("lk-r1").unwrap();
    let b = Netns::new("lk-r2").unwrap();
    veth(
        &a,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &b,
        &["192.0.2.2/24", "2001:db8::2/64"],
    )
    .unwrap();
    (a, b)
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_netns_veth_reaches_over_v4_and_v6_and_drop_cleans_up() {
    let (a, b) = two_nodes();
    // A fresh veth drops the first packets until the kernel has activated it (up to a
    // second, longer on a busy machine): ping until the first reply, within 5 s.
    for dst in ["192.0.2.2", "2001:db8::2"] {
        a.run("ping", &["-c1", "-i0.2", "-w5", dst]).unwrap();
    }
    // Everything was made inside the namespaces; the host's own has no veth of ours.
    let a_links = a.ip(&["-br", "link"]).unwrap();
    let a_if = a_links
        .lines()
        .find_map(|l| l.split(['@', ' ']).next().filter(|n| n.starts_with("lk")))
        .unwrap()
        .to_owned();
    let host_links = String::from_utf8(
        std::process::Command::new("ip")
            .args(["-br", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!host_links.contains(&format!("{a_if}@")), "{host_links}");

    // A process left running inside is ended with the namespace.
    let mut sleeper = b.spawn(b.command("sleep").arg("300")).unwrap();
    assert!(b.pids().unwrap().contains(&sleeper.id()));
    let path = format!("/run/netns/{}", b.name());
    assert!(Path::new(&path).exists());
    drop(b);
    assert!(!Path::new(&path).exists());
    let status = sleeper.wait().unwrap();
    assert!(!status.success());
    drop(a);
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_enter_moves_this_thread_only() {
    let (a, b) = two_nodes();
    let host_ns = netns_inode("/proc/thread-self/ns/net");

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            b.enter().unwrap();
            assert_eq!(
                netns_inode("/proc/thread-self/ns/net"),
                netns_inode(&format!("/run/netns/{}", b.name()))
            );
            let l = TcpListener::bind("192.0.2.2:0").unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let (mut c, peer) = l.accept().unwrap();
            c.write_all(b"hello").unwrap();
            assert_eq!(peer.ip().to_string(), "192.0.2.1");
        });
        let addr: SocketAddr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let a = &a;
        s.spawn(move || {
            a.enter().unwrap();
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            let mut got = String::new();
            c.read_to_string(&mut got).unwrap();
            assert_eq!(got, "hello");
        });
    });
    // This thread never entered.
    assert_eq!(netns_inode("/proc/thread-self/ns/net"), host_ns);
}

/// The inode that identifies a network namespace.
fn netns_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

/// r1 is passive (as the lab's routers are toward balancers), r2 connects actively with
/// `connect-retry = 1`; both with the same TCP-MD5 key, iBGP, IPv4 + IPv6.
fn routers(a: &Netns, b: &Netns) -> (Gobgpd, Gobgpd) {
    let r1 = GobgpConfig::new(65000, "192.0.2.1".parse().unwrap())
        .listen_address("192.0.2.1".parse().unwrap())
        .neighbor(
            GobgpNeighbor::new("192.0.2.2".parse().unwrap(), 65000)
                .passive(true)
                .password("lab-md5-key")
                .hold_time(9),
        );
    let r2 = GobgpConfig::new(65000, "192.0.2.2".parse().unwrap())
        .listen_port(-1)
        .neighbor(
            GobgpNeighbor::new("192.0.2.1".parse().unwrap(), 65000)
                .password("lab-md5-key")
                .hold_time(9),
        );
    (
        Gobgpd::start(a, &r1.to_toml()).unwrap(),
        Gobgpd::start(b, &r2.to_toml()).unwrap(),
    )
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_gobgpd_pair_establishes_and_carries_routes() {
    let (a, b) = two_nodes();
    let start = Instant::now();
    let (mut r1, r2) = routers(&a, &b);

    let neighbors = r1.cli(&["neighbor"]).unwrap();
    assert!(neighbors.contains("192.0.2.2"), "{neighbors}");
    // gobgpd 3.10 makes its FIRST active connect 5-10 s after the peer goes Active,
    // whatever `connect-retry` says (connectLoop starts at its 5 s minimum, plus up to
    // 5 s of jitter; connect-retry paces only the retries after it). Lab topologies
    // therefore make the routers passive and let the speakers connect.
    assert!(r1.wait_established("192.0.2.2", Duration::from_secs(15)));
    assert_eq!(r2.neighbor_state("192.0.2.1").unwrap(), "established");
    eprintln!(
        "gobgpd active->passive established {:?} after start",
        start.elapsed()
    );

    // A route added on r2 shows at r1, with r2 as next hop; IPv6 likewise.
    r2.cli(&["global", "rib", "-a", "ipv4", "add", "198.51.100.7/32"])
        .unwrap();
    r2.cli(&["global", "rib", "-a", "ipv6", "add", "2001:db8:f00::7/128"])
        .unwrap();
    assert!(r1.wait_for(
        |g| g.rib_prefixes("ipv4").unwrap_or_default() == ["198.51.100.7/32"]
            && g.rib_prefixes("ipv6").unwrap_or_default() == ["2001:db8:f00::7/128"],
        Duration::from_secs(10),
    ));
    let rib = r1.rib("ipv4").unwrap();
    let path = &rib["198.51.100.7/32"][0];
    let nexthop = path["attrs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a["nexthop"].as_str())
        .unwrap();
    assert_eq!(nexthop, "192.0.2.2");

    // Restart r1: the session comes back and r2's route is learned again.
    let pid = r1.pid();
    r1.restart().unwrap();
    assert_ne!(r1.pid(), pid);
    assert!(
        r1.wait_established("192.0.2.2", Duration::from_secs(20)),
        "{}",
        std::fs::read_to_string(r1.log_path()).unwrap_or_default()
    );
    assert!(r1.wait_for(
        |g| g.rib_prefixes("ipv4").unwrap_or_default() == ["198.51.100.7/32"],
        Duration::from_secs(10),
    ));
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_gobgpd_md5_mismatch_never_establishes() {
    let (a, b) = two_nodes();
    let r1 = GobgpConfig::new(65000, "192.0.2.1".parse().unwrap()).neighbor(
        GobgpNeighbor::new("192.0.2.2".parse().unwrap(), 65000)
            .passive(true)
            .password("right"),
    );
    let r2 = GobgpConfig::new(65000, "192.0.2.2".parse().unwrap())
        .listen_port(-1)
        .neighbor(GobgpNeighbor::new("192.0.2.1".parse().unwrap(), 65000).password("wrong"));
    let r1 = Gobgpd::start(&a, &r1.to_toml()).unwrap();
    let r2 = Gobgpd::start(&b, &r2.to_toml()).unwrap();
    // Several connect-retry rounds; TCP-MD5 drops every segment, so no session.
    assert!(!r1.wait_established("192.0.2.2", Duration::from_secs(4)));
    assert_ne!(r2.neighbor_state("192.0.2.1").unwrap(), "established");
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_gobgpd_start_reports_a_bad_config_with_its_log() {
    labkit::require_root();
    let a = Netns::new("lk-bad").unwrap();
    let err = Gobgpd::start(&a, "[global.config]\n  as = \"not a number\"\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("gobgpd") && text.contains("exited"), "{text}");
}
