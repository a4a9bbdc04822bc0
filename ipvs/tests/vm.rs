//! Real-kernel tests (VM lane: `netns-lab/vm-test`). Each test moves its thread into a
//! network namespace of its own (IPVS tables are per namespace), so tests run in parallel
//! and the table disappears with the test. `ipvsadm` children inherit the namespace.
//!
//! The namespace is made with `unshare(CLONE_NEWNET)` rather than labkit's named
//! namespaces: nothing to clean up, and no writable /run/netns needed in the guest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

use ipvs::model::{TunFlags, TunType};
use ipvs::{
    diff, ApplyOptions, Dest, DestKey, Errno, Family, FwdMethod, Ipvs, IpvsError, Op, OpKind, Plan,
    Protocol, Service, ServiceFlags, ServiceKey, ServiceSpec, Tree,
};
use nix::sched::{unshare, CloneFlags};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// This thread's own network namespace (`lo` up), marked by the test's name, and a
/// handle in it.
struct Ns(&'static str);

fn setup(tag: &'static str) -> (Ns, Ipvs) {
    unshare(CloneFlags::CLONE_NEWNET).unwrap();
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(up.success(), "{tag}: ip link set lo up");
    (Ns(tag), Ipvs::connect().unwrap())
}

/// Runs ipvsadm in this thread's namespace; `ns` proves the caller set one up.
fn ipvsadm(ns: &Ns, args: &[&str]) -> String {
    let out = Command::new("ipvsadm").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}: ipvsadm {args:?}: {}",
        ns.0,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ipvsadm_restore(ns: &Ns, rules: &str) {
    use std::io::Write;
    let mut child = Command::new("ipvsadm")
        .arg("-R")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}: ipvsadm -R: {}\non:\n{rules}",
        ns.0,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every kind of service and destination the model knows.
fn every_kind() -> Tree {
    let mut v6 = ServiceSpec::new(ServiceKey::udp(ip("2001:db8::1"), 53), "rr").persistent(300);
    v6.netmask = 64;
    let mut sctp = ServiceSpec::new(
        ServiceKey::Addr {
            protocol: Protocol::Sctp,
            addr: ip("192.0.2.2"),
            port: 9,
        },
        "mh",
    );
    sctp.flags = ServiceFlags::MH_PORT | ServiceFlags::MH_FALLBACK;
    let mut ops = ServiceSpec::new(ServiceKey::udp(ip("192.0.2.4"), 514), "wlc");
    ops.flags = ServiceFlags::ONE_PACKET;
    let mut sh = ServiceSpec::new(ServiceKey::fwmark(Family::Inet, 7), "sh");
    sh.flags = ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT;
    let mut sip = ServiceSpec::new(ServiceKey::udp(ip("192.0.2.3"), 5060), "rr").persistent(60);
    sip.netmask = 24;
    sip.pe_name = Some("sip".into());
    let all_ports = ServiceSpec::new(ServiceKey::tcp(ip("192.0.2.5"), 0), "lc").persistent(360);

    let mut masq = Dest::new(ip("198.51.100.6"), 8080)
        .fwd(FwdMethod::Masq)
        .weight(5);
    masq.u_threshold = 100;
    masq.l_threshold = 10;
    let mut gue = Dest::new(ip("198.51.100.7"), 0).fwd(FwdMethod::Tunnel);
    gue.tun_type = TunType::Gue;
    gue.tun_port = 6080;
    gue.tun_flags = TunFlags::REMCSUM;
    let mut gre = Dest::new(ip("2001:db8:2::7"), 0)
        .fwd(FwdMethod::Tunnel)
        .weight(0);
    gre.tun_type = TunType::Gre;
    // The kernel takes remcsum for GRE too, ipvsadm only for GUE.
    gre.tun_flags = TunFlags::CSUM;

    [
        Service::new(ServiceSpec::new(
            ServiceKey::tcp(ip("192.0.2.1"), 80),
            "wrr",
        ))
        .with_dest(Dest::new(ip("198.51.100.5"), 80).weight(3))
        .with_dest(masq)
        .with_dest(Dest::new(ip("198.51.100.8"), 80).fwd(FwdMethod::Tunnel)),
        Service::new(v6)
            .with_dest(Dest::new(ip("2001:db8:1::5"), 53).weight(2))
            .with_dest(Dest::new(ip("198.51.100.12"), 53).fwd(FwdMethod::Tunnel)),
        Service::new(sctp).with_dest(Dest::new(ip("198.51.100.9"), 9)),
        Service::new(ops).with_dest(Dest::new(ip("198.51.100.10"), 514).fwd(FwdMethod::Masq)),
        Service::new(sh).with_dest(gue),
        Service::new(ServiceSpec::new(ServiceKey::fwmark(Family::Inet6, 8), "wrr").persistent(360))
            .with_dest(gre),
        Service::new(sip).with_dest(Dest::new(ip("198.51.100.11"), 5060)),
        Service::new(all_ports).with_dest(Dest::new(ip("198.51.100.13"), 0)),
    ]
    .into_iter()
    .collect()
}

fn dump(ipvs: &mut Ipvs) -> Tree {
    let mut t = ipvs.dump().unwrap();
    t.clear_stats();
    t
}

fn apply_ok(ipvs: &mut Ipvs, plan: &Plan) {
    let report = ipvs.apply(plan);
    assert!(report.is_ok(), "{:#?}", report.failures);
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_every_kind_round_trips_through_the_kernel() {
    let (_ns, mut ipvs) = setup("ipvs-kinds");
    let want = every_kind();
    assert!(dump(&mut ipvs).is_empty());
    apply_ok(&mut ipvs, &diff(&Tree::new(), &want));
    assert_eq!(dump(&mut ipvs), want);

    // Change one of everything in place; the plan is one op per change.
    let mut want2 = want.clone();
    let tcp = ServiceKey::tcp(ip("192.0.2.1"), 80);
    let svc = want2.get_mut(&tcp).unwrap();
    svc.spec.scheduler = "lc".into();
    svc.spec = svc.spec.clone().persistent(30);
    svc.dests
        .get_mut(&DestKey::new(ip("198.51.100.5"), 80))
        .unwrap()
        .weight = 0;
    let m = svc
        .dests
        .get_mut(&DestKey::new(ip("198.51.100.6"), 8080))
        .unwrap();
    (m.u_threshold, m.l_threshold) = (0, 0);
    m.fwd = FwdMethod::Route;
    svc.dests.remove(&DestKey::new(ip("198.51.100.8"), 80));
    let fw7 = want2.get_mut(&ServiceKey::fwmark(Family::Inet, 7)).unwrap();
    fw7.spec.flags = ServiceFlags::empty();
    fw7.dests.values_mut().next().unwrap().tun_port = 6081;
    let sip = want2
        .get_mut(&ServiceKey::udp(ip("192.0.2.3"), 5060))
        .unwrap();
    sip.spec.pe_name = None;
    sip.spec.netmask = 32;
    want2.remove(&ServiceKey::udp(ip("192.0.2.4"), 514));
    let plan = diff(&dump(&mut ipvs), &want2);
    let kinds: Vec<OpKind> = plan.ops.iter().map(Op::kind).collect();
    assert_eq!(
        kinds,
        [
            OpKind::DelService,
            OpKind::EditService,
            OpKind::DelDest,
            OpKind::EditDest,
            OpKind::EditDest,
            OpKind::EditService,
            OpKind::EditService,
            OpKind::EditDest
        ],
        "{plan}"
    );
    apply_ok(&mut ipvs, &plan);
    assert_eq!(dump(&mut ipvs), want2);
    assert!(diff(&dump(&mut ipvs), &want2).is_empty());

    ipvs.flush().unwrap();
    assert!(dump(&mut ipvs).is_empty());
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_dump_agrees_with_ipvsadm_both_ways() {
    let (ns, mut ipvs) = setup("ipvs-adm");
    // ipvsadm builds, we read.
    let rules = "\
-A -t 192.0.2.1:80 -s wrr
-a -t 192.0.2.1:80 -r 198.51.100.5:80 -g -w 3
-a -t 192.0.2.1:80 -r 198.51.100.6:8080 -m -w 5
-a -t 192.0.2.1:80 -r 198.51.100.9:80 -i -w 1 --tun-type ipip
-A -u 192.0.2.3:5060 -s rr -p 60 -M 255.255.255.0 --pe sip
-A -u 192.0.2.6:53 -s rr -o -b flag-1
-A --sctp-service 192.0.2.2:9 -s mh -b mh-port
-A -u [2001:db8::1]:53 -s rr -p 300 -M 64
-a -u [2001:db8::1]:53 -r [2001:db8:1::5]:53 -g -w 2
-A -f 7 -s sh -b sh-fallback,sh-port
-a -f 7 -r 198.51.100.7:0 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum
-A -f 8 -6 -s wrr -p 360
-a -f 8 -6 -r [2001:db8:2::7]:0 -i -w 0 --tun-type gre --tun-nocsum
";
    ipvsadm_restore(&ns, rules);
    let ours = dump(&mut ipvs);
    let theirs = ipvsadm(&ns, &["-Sn"]);
    assert_eq!(theirs, rules, "ipvsadm prints what it was fed");
    assert_eq!(ours.to_ipvsadm_rules(), theirs);
    assert_eq!(Tree::from_ipvsadm_rules(&theirs).unwrap(), ours);

    // We build, ipvsadm reads (thresholds are not in -S output; every_kind has one).
    ipvs.flush().unwrap();
    let mut want = every_kind();
    apply_ok(&mut ipvs, &diff(&Tree::new(), &want));
    let theirs = ipvsadm(&ns, &["-Sn"]);
    // every_kind has an IPv6 service with an IPv4 tunnel destination; ipvsadm's dest
    // comparator is not consistent across families, so compare those lines unordered.
    let sorted = |s: &str| {
        let mut v: Vec<String> = s.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&theirs), sorted(&want.to_ipvsadm_rules()));
    let svc = want.get_mut(&ServiceKey::tcp(ip("192.0.2.1"), 80)).unwrap();
    let m = svc
        .dests
        .get_mut(&DestKey::new(ip("198.51.100.6"), 8080))
        .unwrap();
    (m.u_threshold, m.l_threshold) = (0, 0);
    // A non-persistent service's timeout is not printed either.
    assert_eq!(Tree::from_ipvsadm_rules(&theirs).unwrap(), want);
    let thresholds = ipvsadm(&ns, &["-Ln", "--thresholds"]);
    let line = thresholds
        .lines()
        .find(|l| l.contains("198.51.100.6:8080"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>()[2..4],
        ["100", "10"],
        "{thresholds}"
    );
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_tables_are_per_network_namespace() {
    let want = every_kind();
    let w = want.clone();
    // Two threads, two namespaces, running at the same time: a fills its table while b
    // checks that it sees nothing of it and makes a change of its own.
    let (a_ready_tx, a_ready_rx) = std::sync::mpsc::channel();
    let (b_done_tx, b_done_rx) = std::sync::mpsc::channel::<()>();
    let a = std::thread::spawn(move || {
        let (ns, mut ipvs) = setup("ipvs-iso-a");
        apply_ok(&mut ipvs, &diff(&Tree::new(), &w));
        a_ready_tx.send(()).unwrap();
        b_done_rx.recv().unwrap();
        (
            dump(&mut ipvs),
            Tree::from_ipvsadm_rules(&ipvsadm(&ns, &["-Sn"])).unwrap(),
        )
    });
    let b = std::thread::spawn(move || {
        let (ns, mut ipvs) = setup("ipvs-iso-b");
        a_ready_rx.recv().unwrap();
        let empty = dump(&mut ipvs);
        let empty_adm = ipvsadm(&ns, &["-Sn"]);
        ipvs.add_service(&ServiceSpec::new(
            ServiceKey::tcp(ip("203.0.113.1"), 443),
            "rr",
        ))
        .unwrap();
        let one = (dump(&mut ipvs), ipvsadm(&ns, &["-Sn"]));
        b_done_tx.send(()).unwrap();
        (empty, empty_adm, one)
    });
    let (empty_b, empty_adm_b, (one_b, one_adm_b)) = b.join().unwrap();
    let (dump_a, adm_a) = a.join().unwrap();
    assert!(empty_b.is_empty(), "namespace b saw a's services");
    assert_eq!(empty_adm_b, "");
    assert_eq!(one_b.len(), 1);
    assert_eq!(one_adm_b, "-A -t 203.0.113.1:443 -s rr\n");
    assert_eq!(dump_a, want, "b's change leaked into a");
    // ipvsadm -S cannot express thresholds.
    let mut want_adm = want.clone();
    let m = want_adm
        .get_mut(&ServiceKey::tcp(ip("192.0.2.1"), 80))
        .unwrap()
        .dests
        .get_mut(&DestKey::new(ip("198.51.100.6"), 8080))
        .unwrap();
    (m.u_threshold, m.l_threshold) = (0, 0);
    assert_eq!(adm_a, want_adm);
}

fn kernel_err(r: Result<(), IpvsError>) -> (OpKind, String, Errno) {
    match r {
        Err(IpvsError::Kernel { op, id, errno }) => (op, id, errno),
        other => panic!("expected a kernel error, got {other:?}"),
    }
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_failures_are_typed_and_leave_the_tree_unchanged() {
    let (_ns, mut ipvs) = setup("ipvs-errors");
    let key = ServiceKey::tcp(ip("192.0.2.1"), 80);
    let base: Tree =
        [Service::new(ServiceSpec::new(key, "wrr")).with_dest(Dest::new(ip("198.51.100.5"), 80))]
            .into_iter()
            .collect();
    apply_ok(&mut ipvs, &diff(&Tree::new(), &base));

    let bad = ServiceSpec::new(ServiceKey::tcp(ip("192.0.2.9"), 80), "nosuch");
    assert_eq!(
        kernel_err(ipvs.add_service(&bad)),
        (OpKind::AddService, "tcp:192.0.2.9:80".into(), Errno::ENOENT)
    );
    assert_eq!(
        kernel_err(ipvs.add_service(&ServiceSpec::new(key, "rr"))),
        (OpKind::AddService, "tcp:192.0.2.1:80".into(), Errno::EEXIST)
    );
    let missing = ServiceKey::tcp(ip("192.0.2.99"), 80);
    assert_eq!(
        kernel_err(ipvs.add_dest(&missing, &Dest::new(ip("198.51.100.5"), 80))),
        (
            OpKind::AddDest,
            "tcp:192.0.2.99:80 -> 198.51.100.5:80".into(),
            Errno::ESRCH
        )
    );
    assert_eq!(
        kernel_err(ipvs.add_dest(&key, &Dest::new(ip("198.51.100.5"), 80))).2,
        Errno::EEXIST
    );
    assert_eq!(
        kernel_err(ipvs.del_dest(&key, &DestKey::new(ip("198.51.100.77"), 80))).2,
        Errno::ENOENT
    );
    assert_eq!(
        kernel_err(ipvs.edit_service(&ServiceSpec::new(missing, "rr"))).2,
        Errno::ESRCH
    );
    assert_eq!(kernel_err(ipvs.del_service(&missing)).2, Errno::ESRCH);
    ipvs.add_service(&ServiceSpec::new(missing, "rr")).unwrap();
    ipvs.del_service(&missing).unwrap();
    let mut inverted = Dest::new(ip("198.51.100.5"), 80);
    inverted.l_threshold = 10;
    assert!(
        matches!(ipvs.edit_dest(&key, &inverted), Err(IpvsError::Model(_))),
        "checked before sending (the kernel says ERANGE)"
    );
    assert_eq!(dump(&mut ipvs), base, "failed operations changed the table");

    // A plan with bad operations among good ones: every op is tried, every failure reported.
    let good = ServiceKey::udp(ip("192.0.2.10"), 53);
    let plan = Plan {
        ops: vec![
            Op::AddService {
                service: bad.clone(),
            },
            Op::AddService {
                service: ServiceSpec::new(good, "rr"),
            },
            Op::AddDest {
                service: bad.key,
                dest: Dest::new(ip("198.51.100.1"), 80),
            },
            Op::AddDest {
                service: good,
                dest: Dest::new(ip("198.51.100.1"), 53),
            },
            Op::EditDest {
                service: key,
                dest: Dest::new(ip("198.51.100.5"), 80).weight(9),
            },
        ],
    };
    let report = ipvs.apply(&plan);
    let failed: Vec<(usize, Option<Errno>)> = report
        .failures
        .iter()
        .map(|f| (f.index, f.error.errno()))
        .collect();
    assert_eq!(failed, [(0, Some(Errno::ENOENT)), (2, Some(Errno::ESRCH))]);
    assert_eq!(report.succeeded(), 3);
    // The pure model has no list of schedulers: it takes every op, and then matches the
    // kernel once the unknown-scheduler service (and its destination) are taken out.
    let mut expect = base.clone();
    assert_eq!(expect.apply_plan(&plan), Ok(()));
    expect.remove(&bad.key);
    assert_eq!(dump(&mut ipvs), expect);
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_a_second_apply_converges_after_interference() {
    let (ns, mut ipvs) = setup("ipvs-converge");
    let want = every_kind();
    let stale = dump(&mut ipvs);
    // Someone else changes the table between our dump and our apply.
    ipvsadm_restore(
        &ns,
        "-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 198.51.100.5:80 -m -w 1\n-A -f 7 -s rr\n",
    );
    let report = ipvs.apply(&diff(&stale, &want));
    let errnos: BTreeSet<Option<Errno>> = report.failures.iter().map(|f| f.error.errno()).collect();
    assert_eq!(
        errnos,
        BTreeSet::from([Some(Errno::EEXIST)]),
        "{:#?}",
        report.failures
    );
    assert_ne!(dump(&mut ipvs), want);
    let now = dump(&mut ipvs);
    let second = ipvs.apply(&diff(&now, &want));
    assert!(second.is_ok(), "{:#?}", second.failures);
    assert_eq!(dump(&mut ipvs), want);
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_dumps_that_span_many_parts_read_whole() {
    // One service with 600 real servers (about 26 dump parts of 8 KiB) and 300 small
    // services (the service dump itself spans several parts), built by ipvsadm.
    let (ns, mut ipvs) = setup("ipvs-parts");
    let mut rules = String::from("-A -t 192.0.2.1:80 -s wrr\n");
    for i in 0..600u32 {
        let rip = IpAddr::from([198, 51, (100 + i / 250) as u8, (i % 250) as u8 + 1]);
        rules.push_str(&format!("-a -t 192.0.2.1:80 -r {rip}:80 -g -w {}\n", i % 7));
    }
    for i in 0..300u16 {
        rules.push_str(&format!(
            "-A -u 203.0.113.{}:{} -s rr\n",
            i % 250 + 1,
            1000 + i
        ));
    }
    ipvsadm_restore(&ns, &rules);
    let ours = dump(&mut ipvs);
    assert_eq!(ours.len(), 301);
    assert_eq!(ours.dest_count(), 600);
    assert_eq!(ours.to_ipvsadm_rules(), ipvsadm(&ns, &["-Sn"]));
    // The handle is left ready: a second dump reads the same.
    assert_eq!(dump(&mut ipvs), ours);
    // One service by key, without its destinations; a missing one is None.
    let key = ServiceKey::tcp(ip("192.0.2.1"), 80);
    let one = ipvs.get_service(&key).unwrap().unwrap();
    assert_eq!(one.spec, ours.get(&key).unwrap().spec);
    assert!(one.dests.is_empty());
    assert!(ipvs
        .get_service(&ServiceKey::tcp(ip("192.0.2.1"), 81))
        .unwrap()
        .is_none());
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_dump_stays_right_while_another_namespace_churns() {
    // The kernel's service dump resumes each part by position in a hash table shared by
    // all namespaces: services coming and going in another namespace shift the parts of
    // ours. 300 services take about 11 parts; every dump must still be right.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (_ns, mut ipvs) = setup("ipvs-churn");
            let mut changes = 0u32;
            // Bounded: at most 20,000 changes.
            while !stop.load(Ordering::Relaxed) && changes < 20_000 {
                let key = ServiceKey::tcp(IpAddr::from([203, 0, 113, (changes % 50) as u8]), 7);
                ipvs.add_service(&ServiceSpec::new(key, "rr")).unwrap();
                ipvs.del_service(&key).unwrap();
                changes += 2;
            }
            changes
        })
    };
    let (ns, mut ipvs) = setup("ipvs-steady");
    let want: Tree = (0..300u16)
        .map(|i| {
            let vip = IpAddr::from([192, 0, 2, (i % 250) as u8 + 1]);
            let mut svc = Service::new(ServiceSpec::new(ServiceKey::tcp(vip, 1000 + i), "wrr"));
            svc.insert_dest(Dest::new(IpAddr::from([198, 51, 100, 1]), 1000 + i));
            svc
        })
        .collect();
    apply_ok(&mut ipvs, &diff(&Tree::new(), &want));
    let rules = want.to_ipvsadm_rules();
    let mut ipvsadm_wrong = 0;
    for _ in 0..30 {
        let mut tree = ipvs.dump().unwrap();
        tree.clear_stats();
        if tree != want {
            let ids = |t: &Tree| -> BTreeSet<String> {
                t.services()
                    .flat_map(|s| {
                        std::iter::once(s.key().to_string()).chain(
                            s.dests
                                .values()
                                .map(move |d| format!("{} {}", s.key(), d.key)),
                        )
                    })
                    .collect()
            };
            let (got, wanted) = (ids(&tree), ids(&want));
            panic!(
                "a dump read a shifted table: missing {:?}, extra {:?}",
                wanted.difference(&got).collect::<Vec<_>>(),
                got.difference(&wanted).collect::<Vec<_>>()
            );
        }
        if ipvsadm(&ns, &["-Sn"]) != rules {
            ipvsadm_wrong += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let changes = churn.join().unwrap();
    // For the record: the same kernel dump, read once, as ipvsadm does.
    eprintln!(
        "30 dumps right; ipvsadm -Sn wrong {ipvsadm_wrong} of 30; {changes} changes next door"
    );
    assert!(changes > 0);
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_batched_and_one_by_one_give_the_same_table() {
    let (_ns, mut ipvs) = setup("ipvs-batch");
    let want: Tree = (0..200u16)
        .map(|i| {
            let vip = IpAddr::from([203, 0, 113, (i % 250) as u8]);
            let mut svc = Service::new(ServiceSpec::new(ServiceKey::tcp(vip, 1000 + i), "wrr"));
            for d in 0..5u8 {
                svc.insert_dest(
                    Dest::new(IpAddr::from([198, 51, 100, d]), 1000 + i).weight(u32::from(d)),
                );
            }
            svc
        })
        .collect();
    let plan = diff(&Tree::new(), &want);
    let one = ipvs.apply_with(&plan, ApplyOptions { batch: 1 });
    assert!(one.is_ok());
    assert_eq!(one.sends, plan.len());
    let by_one = dump(&mut ipvs);
    ipvs.flush().unwrap();
    let batched = ipvs.apply(&plan);
    assert!(batched.is_ok(), "{:#?}", batched.failures);
    assert!(
        batched.sends <= plan.len().div_ceil(100),
        "{} sends for {} ops",
        batched.sends,
        plan.len()
    );
    assert_eq!(dump(&mut ipvs), by_one);
    assert_eq!(by_one, want);
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_info_and_sync_daemons() {
    let (ns, mut ipvs) = setup("ipvs-info");
    let info = ipvs.info().unwrap();
    assert_eq!(info.version.0, 1);
    assert!(info.conn_tab_size >= 4096, "{info:?}");
    assert!(ipvs.daemons().unwrap().is_empty());
    ipvsadm(
        &ns,
        &[
            "--start-daemon",
            "master",
            "--mcast-interface",
            "lo",
            "--syncid",
            "5",
        ],
    );
    let d = ipvs.daemons().unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].state.as_str(), d[0].mcast_ifn.as_str(), d[0].sync_id),
        ("master", "lo", 5)
    );
    ipvsadm(&ns, &["--stop-daemon", "master"]);
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_apply_command_dry_run_and_exit_codes() {
    let (ns, mut ipvs) = setup("ipvs-tool");
    let want = every_kind();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(
        ipvs::tool::apply_tree(&mut ipvs, &want, true, &mut out, &mut err),
        0
    );
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), want.len() + want.dest_count());
    assert!(
        text.starts_with(
            "-A -t 192.0.2.1:80 -s wrr\n-a -t 192.0.2.1:80 -r 198.51.100.5:80 -g -w 3\n"
        ),
        "{text}"
    );
    assert!(dump(&mut ipvs).is_empty(), "dry run changed the table");
    // The dry-run text is valid ipvsadm -R input that builds the same table.
    ipvsadm_restore(&ns, &text);
    assert_eq!(dump(&mut ipvs), want);

    ipvs.flush().unwrap();
    let mut broken = want.clone();
    let k = ServiceKey::tcp(ip("192.0.2.1"), 80);
    broken.get_mut(&k).unwrap().spec.scheduler = "nosuch".into();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(
        ipvs::tool::apply_tree(&mut ipvs, &broken, false, &mut out, &mut err),
        1
    );
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains("failed: -A -t 192.0.2.1:80 -s nosuch: add service tcp:192.0.2.1:80: No such file or directory (errno 2)"), "{err}");
    assert_eq!(
        err.lines().count(),
        1 + 3,
        "the service and its three destinations: {err}"
    );
}
