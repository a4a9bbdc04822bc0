//! VIP addresses against a real kernel, inside throwaway network namespaces.
//!
//! `lab_*`: `lo` on the host kernel (root + `ip netns`). `vm_*`: dummy interfaces,
//! which the host kernel lacks; they run in the VM lane (`netns-lab/vm-test`).
//! What the code did is checked with `ip -j addr`/`ip -j link`, not with the code's
//! own listing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;

use announce::addr::{AddrError, VipAddrs};
use announce::AddrOp;
use labkit::Netns;

/// Run `f` on a fresh thread inside `ns`, on a current-thread tokio runtime.
fn in_ns<F, Fut, R>(ns: &Netns, f: F) -> R
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R>,
    R: Send + 'static,
{
    in_ns_on(ns, 0, f)
}

/// Like [`in_ns`], on a multi-thread runtime of `workers` threads when not 0 (as the
/// daemon runs); the workers are started from the thread inside `ns`, so they are in
/// it too.
fn in_ns_on<F, Fut, R>(ns: &Netns, workers: usize, f: F) -> R
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R>,
    R: Send + 'static,
{
    let name = ns.name().to_string();
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = if workers == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .unwrap()
        };
        rt.block_on(f())
    })
    .join()
    .unwrap()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct IpAddrInfo {
    ip: IpAddr,
    prefix: u8,
    label: Option<String>,
    nodad: bool,
}

/// Addresses on `dev` as `ip -j addr show dev DEV` reports them.
fn ip_addrs(ns: &Netns, dev: &str) -> Vec<IpAddrInfo> {
    let out = ns.ip(&["-j", "addr", "show", "dev", dev]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| IpAddrInfo {
            ip: a["local"].as_str().unwrap().parse().unwrap(),
            prefix: u8::try_from(a["prefixlen"].as_u64().unwrap()).unwrap(),
            label: a["label"].as_str().map(str::to_string),
            nodad: a["nodad"].as_bool().unwrap_or(false),
        })
        .collect()
}

fn has(addrs: &[IpAddrInfo], ip: &str, prefix: u8) -> bool {
    let ip: IpAddr = ip.parse().unwrap();
    addrs.iter().any(|a| a.ip == ip && a.prefix == prefix)
}

fn link_json(ns: &Netns, dev: &str) -> serde_json::Value {
    let out = ns.ip(&["-j", "-d", "link", "show", "dev", dev]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn is_up(link: &serde_json::Value) -> bool {
    link["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f.as_str() == Some("UP"))
}

fn ips(items: &[&str]) -> BTreeSet<IpAddr> {
    items.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_lo_reconcile_keeps_what_it_does_not_own() {
    let ns = Netns::new("announce-lo").unwrap();
    // A fresh namespace has lo down; labkit brought it up, put it back down.
    ns.ip(&["link", "set", "lo", "down"]).unwrap();
    // Foreign addresses (must survive), a stale VIP of ours by label (IPv4) and one
    // by the owned set (IPv6).
    ns.ip(&["addr", "add", "198.51.100.7/32", "dev", "lo"])
        .unwrap();
    ns.ip(&["addr", "add", "2001:db8::99/128", "dev", "lo", "nodad"])
        .unwrap();
    ns.ip(&[
        "addr",
        "add",
        "192.0.2.200/32",
        "dev",
        "lo",
        "label",
        "lo:vip",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "2001:db8::5/128", "dev", "lo", "nodad"])
        .unwrap();

    let (first, second, listed, ours) = in_ns(&ns, || async {
        let mut vips = VipAddrs::new("lo").unwrap();
        vips.ensure_interface().await.unwrap();
        let wanted = ips(&["192.0.2.1", "2001:db8::1"]);
        let owned = ips(&[
            "192.0.2.1",
            "2001:db8::1",
            "2001:db8::5",
            "::1",
            "127.0.0.1",
        ]);
        let first = vips.plan(&wanted, &owned).await.unwrap();
        let failures = vips.execute(first.clone()).await;
        assert!(failures.is_empty(), "{failures:?}");
        let second = vips.plan(&wanted, &owned).await.unwrap();
        // Idempotent single operations.
        vips.add("192.0.2.1".parse().unwrap()).await.unwrap();
        vips.remove("203.0.113.77".parse().unwrap()).await.unwrap();
        vips.remove("2001:db8::77".parse().unwrap()).await.unwrap();
        let listed = vips.list().await.unwrap();
        (first, second, listed, vips.owns_interface())
    });

    assert!(!ours, "lo is never owned wholesale");
    assert_eq!(
        first,
        vec![
            AddrOp::Remove("192.0.2.200".parse().unwrap()),
            AddrOp::Remove("2001:db8::5".parse().unwrap()),
            AddrOp::Add("192.0.2.1".parse().unwrap()),
            AddrOp::Add("2001:db8::1".parse().unwrap()),
        ]
    );
    assert!(second.is_empty(), "second plan not empty: {second:?}");

    assert!(
        is_up(&link_json(&ns, "lo")),
        "ensure_interface must bring lo up"
    );
    let after = ip_addrs(&ns, "lo");
    assert!(has(&after, "127.0.0.1", 8));
    assert!(has(&after, "::1", 128));
    assert!(has(&after, "198.51.100.7", 32));
    assert!(has(&after, "2001:db8::99", 128));
    assert!(!has(&after, "192.0.2.200", 32));
    assert!(!has(&after, "2001:db8::5", 128));
    let v4 = after
        .iter()
        .find(|a| a.ip == "192.0.2.1".parse::<IpAddr>().unwrap())
        .unwrap();
    assert_eq!((v4.prefix, v4.label.as_deref()), (32, Some("lo:vip")));
    let v6 = after
        .iter()
        .find(|a| a.ip == "2001:db8::1".parse::<IpAddr>().unwrap())
        .unwrap();
    assert_eq!(v6.prefix, 128);
    assert!(v6.nodad, "IPv6 VIPs are added with nodad");
    assert_eq!(
        listed,
        ips(&[
            "192.0.2.1",
            "198.51.100.7",
            "2001:db8::1",
            "2001:db8::99",
            "::1"
        ])
    );
    // The kernel's own local route for the VIP exists.
    let local = ns.ip(&["route", "show", "table", "local"]).unwrap();
    assert!(local.contains("local 192.0.2.1 dev lo"), "{local}");
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_bad_input_is_a_typed_error() {
    let ns = Netns::new("announce-err").unwrap();
    let res = in_ns(&ns, || async {
        let mut vips = VipAddrs::new("lo").unwrap();
        vips.ensure_interface().await.unwrap();
        let loopback = vips.add("127.0.0.2".parse().unwrap()).await;
        let mut missing = VipAddrs::new("nosuch0").unwrap();
        // Not created: the name is not lo, so a dummy is attempted. On a kernel
        // without the dummy type this must be a clean kernel error.
        let created = missing.ensure_interface().await;
        (loopback, created)
    });
    assert!(matches!(res.0, Err(AddrError::NotAVip(_))), "{:?}", res.0);
    match res.1 {
        Ok(_) => {
            let link = link_json(&ns, "nosuch0");
            assert_eq!(link["ifalias"].as_str(), Some("ipvs-sync"));
            assert!(is_up(&link));
        }
        Err(AddrError::Kernel { errno, .. }) => assert_eq!(errno, libc::EOPNOTSUPP),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_dummy_is_created_up_marked_and_reused() {
    let ns = Netns::new("announce-dummy").unwrap();
    let (i1, i2, ours) = in_ns(&ns, || async {
        let mut a = VipAddrs::new("vip0").unwrap();
        let i1 = a.ensure_interface().await.unwrap();
        let mut b = VipAddrs::new("vip0").unwrap();
        let i2 = b.ensure_interface().await.unwrap();
        (i1, i2, b.owns_interface())
    });
    assert_eq!(i1, i2, "second ensure reuses the interface");
    assert!(ours);
    let link = link_json(&ns, "vip0");
    assert_eq!(link["ifalias"].as_str(), Some("ipvs-sync"));
    assert_eq!(link["linkinfo"]["info_kind"].as_str(), Some("dummy"));
    assert!(is_up(&link));
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_own_dummy_reconcile_removes_every_unwanted_host_address() {
    let ns = Netns::new("announce-own").unwrap();
    ns.ip(&["link", "add", "vip0", "type", "dummy"]).unwrap();
    ns.ip(&["link", "set", "vip0", "alias", "ipvs-sync", "up"])
        .unwrap();
    ns.ip(&["addr", "add", "198.51.100.9/32", "dev", "vip0"])
        .unwrap();
    ns.ip(&["addr", "add", "2001:db8::9/128", "dev", "vip0", "nodad"])
        .unwrap();
    ns.ip(&["addr", "add", "203.0.113.1/24", "dev", "vip0"])
        .unwrap();
    let failures = in_ns(&ns, || async {
        let mut vips = VipAddrs::new("vip0").unwrap();
        vips.ensure_interface().await.unwrap();
        assert!(vips.owns_interface());
        let plan = vips
            .plan(&ips(&["192.0.2.1", "2001:db8::1"]), &BTreeSet::new())
            .await
            .unwrap();
        let failures = vips.execute(plan).await;
        let again = vips
            .plan(&ips(&["192.0.2.1", "2001:db8::1"]), &BTreeSet::new())
            .await
            .unwrap();
        assert!(again.is_empty(), "{again:?}");
        failures
    });
    assert!(failures.is_empty(), "{failures:?}");
    let after = ip_addrs(&ns, "vip0");
    assert!(has(&after, "192.0.2.1", 32));
    assert!(has(&after, "2001:db8::1", 128));
    assert!(!has(&after, "198.51.100.9", 32));
    assert!(!has(&after, "2001:db8::9", 128));
    assert!(
        has(&after, "203.0.113.1", 24),
        "non-host prefixes are never touched"
    );
    let v4 = after
        .iter()
        .find(|a| a.ip == "192.0.2.1".parse::<IpAddr>().unwrap())
        .unwrap();
    assert_ne!(
        v4.label.as_deref(),
        Some("vip0:vip"),
        "no label on our own dummy"
    );
}

#[test]
#[ignore = "vm: needs the IPVS kernel; run netns-lab/vm-test"]
fn vm_foreign_dummy_is_treated_like_lo() {
    let ns = Netns::new("announce-foreign").unwrap();
    // Created by someone else: no alias.
    ns.ip(&["link", "add", "vip1", "type", "dummy"]).unwrap();
    ns.ip(&["addr", "add", "198.51.100.10/32", "dev", "vip1"])
        .unwrap();
    ns.ip(&[
        "addr",
        "add",
        "192.0.2.50/32",
        "dev",
        "vip1",
        "label",
        "vip1:vip",
    ])
    .unwrap();
    in_ns(&ns, || async {
        let mut vips = VipAddrs::new("vip1").unwrap();
        vips.ensure_interface().await.unwrap();
        assert!(!vips.owns_interface());
        let plan = vips
            .plan(&ips(&["192.0.2.1"]), &BTreeSet::new())
            .await
            .unwrap();
        assert!(vips.execute(plan).await.is_empty());
    });
    let link = link_json(&ns, "vip1");
    assert!(is_up(&link), "ensure_interface brings an existing dummy up");
    let after = ip_addrs(&ns, "vip1");
    assert!(has(&after, "198.51.100.10", 32), "foreign address survives");
    assert!(
        !has(&after, "192.0.2.50", 32),
        "our labelled stale VIP is removed"
    );
    let v4 = after
        .iter()
        .find(|a| a.ip == "192.0.2.1".parse::<IpAddr>().unwrap())
        .unwrap();
    assert_eq!(v4.label.as_deref(), Some("vip1:vip"));
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_alias_on_a_non_dummy_does_not_make_it_ours() {
    let ns = Netns::new("announce-veth").unwrap();
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"])
        .unwrap();
    ns.ip(&["link", "set", "va", "alias", "ipvs-sync"]).unwrap();
    ns.ip(&["addr", "add", "198.51.100.20/32", "dev", "va"])
        .unwrap();
    let ours = in_ns(&ns, || async {
        let mut vips = VipAddrs::new("va").unwrap();
        vips.ensure_interface().await.unwrap();
        let plan = vips.plan(&BTreeSet::new(), &BTreeSet::new()).await.unwrap();
        assert!(plan.is_empty(), "{plan:?}");
        vips.owns_interface()
    });
    assert!(!ours);
    assert!(is_up(&link_json(&ns, "va")));
    assert!(has(&ip_addrs(&ns, "va"), "198.51.100.20", 32));
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_ten_thousand_vips_added_at_once_all_land() {
    // A balancer's cold start: one prepare per VIP, all at once, on one rtnetlink
    // socket. The kernel queues an answer per request; more than its receive buffer
    // holds used to overflow it, and a request whose answer was lost waited forever.
    const N: u16 = 10_000;
    let ns = Netns::new("announce-burst").unwrap();
    let vips: Vec<IpAddr> = (0..N)
        .map(|i| IpAddr::from([0x2001, 0xdb8, 0xb0, 0, 0, 0, 0, i + 1]))
        .collect();
    let want = vips.clone();
    let (results, took) = in_ns_on(&ns, 2, move || async move {
        let mut addrs = VipAddrs::new("lo").unwrap();
        addrs.ensure_interface().await.unwrap();
        let t = std::time::Instant::now();
        // Every request queued before the connection sends any: the kernel then
        // answers them all before the connection reads one.
        let requests = want.into_iter().map(|vip| {
            let addrs = addrs.clone();
            async move { addrs.add(vip).await }
        });
        // Bounded: a request that never ends fails the test instead of hanging it.
        let results = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            futures_util::future::join_all(requests),
        )
        .await
        .expect("some address requests never ended");
        (results, t.elapsed())
    });
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first {:?}",
        failed.len(),
        failed.first()
    );
    let present: BTreeSet<IpAddr> = ip_addrs(&ns, "lo").into_iter().map(|a| a.ip).collect();
    let missing = vips.iter().filter(|v| !present.contains(v)).count();
    assert_eq!(missing, 0, "{missing} of {N} VIPs not on lo");
    eprintln!(
        "{N} VIP addresses added at once in {:.2} s",
        took.as_secs_f64()
    );
}
