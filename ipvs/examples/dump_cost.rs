//! Where a dump's time goes: the kernel and the syscalls alone (raw reads, nothing
//! decoded) against [`Ipvs::dump`], with CPU time split into user and system.
//!
//! `cargo build --release -p ipvs --examples && sudo netns-lab/vm-run target/release/examples/dump_cost`
//! (`BENCH_SERVICES`, `BENCH_DESTS`: 5,000 × 20 by default).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipvs::packet::{
    service_key_attrs, Cmd, IpvsAttr, IpvsMessage, Message, Nested, NLM_F_DUMP, NLM_F_REQUEST,
};
use ipvs::{diff, Dest, Ipvs, Service, ServiceKey, ServiceSpec, Tree};
use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's user and system CPU time (`/proc/self/stat`, in ticks of 10 ms).
fn cpu() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split(' ').map(|v| v.parse().unwrap_or(0)).collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    (
        Duration::from_millis(f[11] * 10),
        Duration::from_millis(f[12] * 10),
    )
}

fn measure<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let (u0, s0) = cpu();
    let t = Instant::now();
    let out = f();
    let wall = t.elapsed();
    let (u1, s1) = cpu();
    println!(
        "{name:<48} wall {:>6.3} s  user {:>6.3} s  sys {:>6.3} s",
        wall.as_secs_f64(),
        (u1 - u0).as_secs_f64(),
        (s1 - s0).as_secs_f64()
    );
    out
}

fn raw(family: u16, keys: &[ServiceKey], buf_len: usize) -> (usize, usize) {
    let sock = NlSocket::connect(NlFamily::Generic, None, Groups::empty()).unwrap();
    let mut buf = vec![0u8; buf_len];
    let (mut recvs, mut bytes) = (0, 0);
    for (i, key) in keys.iter().enumerate() {
        let msg = IpvsMessage::new(
            Cmd::GetDest,
            vec![IpvsAttr::Service(Nested::new(service_key_attrs(key)))],
        );
        let req =
            Message::request(family, NLM_F_REQUEST | NLM_F_DUMP, i as u32 + 1, msg).to_bytes();
        sock.send(&req, Msg::empty()).unwrap();
        loop {
            let (n, _) = sock.recv(&mut buf[..], Msg::empty()).unwrap();
            recvs += 1;
            bytes += n;
            // NLMSG_DONE ends the dump: type 3 at offset 4 of the last message.
            let mut off = 0;
            let mut done = false;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
                done |= kind == 3 || kind == 2;
                off += (len + 3) & !3;
                if len == 0 {
                    break;
                }
            }
            if done {
                break;
            }
        }
    }
    (recvs, bytes)
}

fn main() {
    let services = env("BENCH_SERVICES", 5000);
    let dests = env("BENCH_DESTS", 20);
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    // With lo down the kernel refuses direct-routing destinations.
    let up = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    assert!(up.is_ok_and(|s| s.success()), "ip link set lo up");
    // 192.0.2.1-250, ports from 1000; real servers in 198.51.100.0/24.
    let tree: Tree = (0..services)
        .map(|i| {
            let vip = IpAddr::from([192, 0, 2, (i % 250) as u8 + 1]);
            let port = 1000 + (i / 250) as u16;
            let mut svc = Service::new(ServiceSpec::new(ServiceKey::tcp(vip, port), "wrr"));
            for d in 0..dests {
                let rip = IpAddr::from([198, 51, 100, (d % 250) as u8 + 1]);
                svc.insert_dest(Dest::new(rip, port).weight(1 + (d % 5) as u32));
            }
            svc
        })
        .collect();
    let mut ipvs = Ipvs::connect().unwrap();
    // The first change in a namespace sets up its per-namespace state.
    let key = ServiceKey::tcp(IpAddr::from([203, 0, 113, 1]), 9);
    ipvs.add_service(&ServiceSpec::new(key, "wrr")).unwrap();
    ipvs.add_dest(&key, &Dest::new(IpAddr::from([203, 0, 113, 2]), 9))
        .unwrap();
    ipvs.del_service(&key).unwrap();
    let report = measure("apply full", || ipvs.apply(&diff(&Tree::new(), &tree)));
    assert!(report.is_ok(), "{:?}", report.failures.first());
    let keys: Vec<ServiceKey> = tree.services().map(|s| *s.key()).collect();
    for _ in 0..2 {
        let t = measure("Ipvs::dump", || ipvs.dump().unwrap());
        assert_eq!(t.dest_count(), services * dests);
        for buf in [8192 - 320, 32768 - 320] {
            let (recvs, bytes) = measure(&format!("raw dest dumps, buffer {buf}"), || {
                raw(ipvs.family_id(), &keys, buf)
            });
            println!(
                "  {recvs} recvs, {bytes} bytes, {:.0} bytes/dest",
                bytes as f64 / (services * dests) as f64
            );
        }
    }
}
