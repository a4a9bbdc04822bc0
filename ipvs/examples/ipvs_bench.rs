//! IPVS apply benchmark: ipvs-sync's dump + diff + batched apply against `ipvsadm`, side by
//! side in one run. Needs root and a kernel with IPVS: run it in the VM lane,
//!
//! ```text
//! cargo build --release -p ipvs --example ipvs_bench
//! netns-lab/vm-run target/release/examples/ipvs_bench
//! ```
//!
//! Every lane works in a network namespace of its own (fresh table, fresh destination
//! trash list), one lane at a time so they do not share the CPUs:
//! - ipvsadm: `ipvsadm -R` of the full tree; then the 1 % change as 1,000 `-e` lines fed
//!   to `ipvsadm -R`; then a sample of single `ipvsadm -e` commands (extrapolated);
//!   then `ipvsadm -C` + `ipvsadm -R` of the changed tree (clear and reload).
//! - ipvs-sync: `ipvs apply` of the full tree (load JSON, dump, diff, apply in batches);
//!   then the 1 % change with those steps timed one after another; then the 1 % change
//!   back as `ipvs-sync ipvs apply FILE` runs it (`ipvs::tool::apply`, which reads the
//!   file while it dumps).
//! - ipvs-sync one request per round trip (`batch = 1`), to show what batching buys.
//!
//! Size: BENCH_SERVICES (5000) × BENCH_DESTS (20) destinations, BENCH_SAMPLE (100)
//! single commands. Under TCG only the ratios mean anything.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipvs::{diff, ApplyOptions, Dest, DestKey, Ipvs, Service, ServiceKey, ServiceSpec, Tree};
use nix::sched::{unshare, CloneFlags};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn full_tree(services: usize, dests: usize) -> Tree {
    (0..services)
        .map(|i| {
            // 192.0.2.1-250, ports from 1000: inside TEST-NET-1, unique per service.
            let vip = IpAddr::from([192, 0, 2, (i % 250) as u8 + 1]);
            let port = 1000 + (i / 250) as u16;
            let mut svc = Service::new(ServiceSpec::new(ServiceKey::tcp(vip, port), "wrr"));
            for d in 0..dests {
                let rip = IpAddr::from([198, 51, 100, (d % 250) as u8 + 1]);
                svc.insert_dest(Dest::new(rip, port).weight(1 + (d % 5) as u32));
            }
            svc
        })
        .collect()
}

/// The 1 % change: `count` destination weights, spread over the services.
fn changed(tree: &Tree, count: usize) -> (Tree, Vec<(ServiceKey, Dest)>) {
    let mut out = tree.clone();
    let keys: Vec<ServiceKey> = tree.services().map(|s| *s.key()).collect();
    let mut edits = Vec::new();
    for k in 0..count {
        let key = keys[(k * 7919) % keys.len()];
        let svc = out.get_mut(&key).unwrap();
        let dkey: DestKey = *svc.dests.keys().nth(k % svc.dests.len()).unwrap();
        let d = svc.dests.get_mut(&dkey).unwrap();
        if d.weight > 100 {
            continue;
        }
        d.weight += 100;
        edits.push((key, d.clone()));
    }
    (out, edits)
}

fn new_netns() {
    unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET): run as root");
    // With lo down the kernel refuses direct-routing destinations (EINVAL: its address
    // type lookup fails), as seen on 6.1.
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip");
    assert!(up.success(), "ip link set lo up");
}

fn ipvsadm_restore(input: &str) -> Duration {
    let t = Instant::now();
    let mut child = Command::new("ipvsadm")
        .arg("-R")
        .stdin(Stdio::piped())
        .spawn()
        .expect("ipvsadm");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ipvsadm -R failed");
    t.elapsed()
}

fn ipvsadm(args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new("ipvsadm")
        .args(args)
        .output()
        .expect("ipvsadm");
    assert!(
        out.status.success(),
        "ipvsadm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// What one `ipvs-sync ipvs apply FILE` did.
struct Run {
    /// Load JSON + dump + diff + apply.
    total: Duration,
    /// Reading and parsing the JSON file.
    read: Duration,
    /// The kernel dump.
    dump: Duration,
    /// The diff.
    diff: Duration,
    /// The apply alone.
    apply: Duration,
    ops: usize,
    sends: usize,
}

/// `ipvs-sync ipvs apply FILE`: read the JSON, dump, diff, apply.
fn ipvs_sync_apply(path: &std::path::Path) -> Run {
    let t = Instant::now();
    let wanted = ipvs::tool::load_tree(path).unwrap();
    let read = t.elapsed();
    let mut ipvs = Ipvs::connect().unwrap();
    let d = Instant::now();
    let actual = ipvs.dump().unwrap();
    let dump = d.elapsed();
    let d = Instant::now();
    let plan = diff(&actual, &wanted);
    let diff_time = d.elapsed();
    let a = Instant::now();
    let report = ipvs.apply(&plan);
    let apply = a.elapsed();
    assert!(report.is_ok(), "{:?}", report.failures.first());
    Run {
        total: t.elapsed(),
        read,
        dump,
        diff: diff_time,
        apply,
        ops: plan.len(),
        sends: report.sends,
    }
}

/// `ipvs-sync ipvs apply FILE` as the command runs it: the wall time, and its
/// "applied N of M operations" line.
fn ipvs_sync_apply_cli(path: &std::path::Path) -> (Duration, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let t = Instant::now();
    let code = ipvs::tool::apply(path, false, &mut out, &mut err);
    let took = t.elapsed();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    (took, String::from_utf8_lossy(&out).trim().to_string())
}

/// The first IPVS change in a namespace sets up its per-namespace state; keep that out
/// of every measurement.
fn warm_up() {
    let mut ipvs = Ipvs::connect().unwrap();
    let key = ServiceKey::tcp(IpAddr::from([203, 0, 113, 1]), 9);
    ipvs.add_service(&ServiceSpec::new(key, "wrr")).unwrap();
    ipvs.add_dest(&key, &Dest::new(IpAddr::from([203, 0, 113, 2]), 9))
        .unwrap();
    ipvs.del_service(&key).unwrap();
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn in_own_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        new_netns();
        warm_up();
        let out = f();
        // Empty the table here, synchronously, so that tearing down 100k destinations
        // when the namespace goes away does not run (on kernel workers) during the next
        // lane; and the kernel's service hash table is global to all namespaces.
        Ipvs::connect().unwrap().flush().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        out
    })
    .join()
    .unwrap()
}

fn main() {
    let services = env("BENCH_SERVICES", 5000);
    let dests = env("BENCH_DESTS", 20);
    let sample = env("BENCH_SAMPLE", 100);
    let edits = (services * dests / 100).max(1);
    let full = full_tree(services, dests);
    let (after, edit_list) = changed(&full, edits);
    let full_rules = full.to_ipvsadm_rules();
    let after_rules = after.to_ipvsadm_rules();
    let edit_lines: String = edit_list
        .iter()
        .map(|(k, d)| format!("-e {}\n", ipvs::ipvsadm::dest_args(k, d, false)))
        .collect();
    let dir = std::env::temp_dir().join(format!("ipvs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let full_json = dir.join("full.json");
    let after_json = dir.join("after.json");
    std::fs::write(&full_json, serde_json::to_vec(&full).unwrap()).unwrap();
    std::fs::write(&after_json, serde_json::to_vec(&after).unwrap()).unwrap();
    eprintln!(
        "bench: {services} services x {dests} dests = {} dests; 1% change = {} weight edits; kernel {}",
        full.dest_count(),
        edit_list.len(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );

    // Lane 1: ipvsadm.
    let sample_cmds: Vec<(ServiceKey, Dest)> = edit_list.iter().take(sample).cloned().collect();
    let adm = in_own_netns(move || {
        let load = ipvsadm_restore(&full_rules);
        eprintln!("bench: ipvsadm -R full load {:.2} s", secs(load));
        let t = Instant::now();
        let out = Command::new("ipvsadm").arg("-Sn").output().unwrap();
        let dump = t.elapsed();
        assert_eq!(
            out.stdout.iter().filter(|&&b| b == b'\n').count(),
            services * (dests + 1)
        );
        let edit = ipvsadm_restore(&edit_lines);
        eprintln!("bench: ipvsadm -R of the -e lines {:.2} s", secs(edit));
        let mut one = Duration::ZERO;
        for (k, d) in &sample_cmds {
            let mut d = d.clone();
            d.weight += 1;
            let line = format!("-e {}", ipvs::ipvsadm::dest_args(k, &d, false));
            let args: Vec<&str> = line.split_whitespace().collect();
            one += ipvsadm(&args);
        }
        let t = Instant::now();
        ipvsadm(&["-C"]);
        ipvsadm_restore(&after_rules);
        let reload = t.elapsed();
        eprintln!("bench: ipvsadm -C + -R {:.2} s", secs(reload));
        (load, dump, edit, one, sample_cmds.len(), reload)
    });

    // Lane 2: ipvs-sync, batched.
    let (fj, aj) = (full_json.clone(), after_json.clone());
    let ours = in_own_netns(move || {
        let load = ipvs_sync_apply(&fj);
        eprintln!(
            "bench: ipvs-sync apply full load {:.2} s ({} ops, {} sends)",
            secs(load.total),
            load.ops,
            load.sends
        );
        let t = Instant::now();
        let tree = Ipvs::connect().unwrap().dump().unwrap();
        let dump = t.elapsed();
        assert_eq!(tree.dest_count(), services * dests);
        let change = ipvs_sync_apply(&aj);
        eprintln!(
            "bench: ipvs-sync apply 1% change {:.2} s ({} ops)",
            secs(change.total),
            change.ops
        );
        let mut check = Ipvs::connect().unwrap().dump().unwrap();
        check.clear_stats();
        assert_eq!(check, after, "ipvs-sync left a different table");
        let back = ipvs_sync_apply_cli(&fj);
        eprintln!(
            "bench: ipvs-sync ipvs apply, 1% change back {:.2} s ({})",
            secs(back.0),
            back.1
        );
        let mut check = Ipvs::connect().unwrap().dump().unwrap();
        check.clear_stats();
        (load, dump, change, check, back)
    });
    assert_eq!(ours.3, full, "ipvs-sync left a different table");

    // Lane 3: the apply alone at several batch sizes, 1 = one round trip per request.
    let plan = diff(&Tree::new(), &full);
    let sweep: Vec<(usize, Duration, usize)> = [1usize, 16, 128]
        .into_iter()
        .map(|batch| {
            let plan = plan.clone();
            in_own_netns(move || {
                let mut ipvs = Ipvs::connect().unwrap();
                let t = Instant::now();
                let r = ipvs.apply_with(&plan, ApplyOptions { batch });
                assert!(r.is_ok(), "batch {batch}: {:?}", r.failures.first());
                (batch, t.elapsed(), r.sends)
            })
        })
        .collect();

    let (a_load, a_dump, a_edit, a_one, n_one, a_reload) = adm;
    let (o_load, o_dump, o_change, _, o_back) = ours;
    let per_cmd = a_one.as_secs_f64() / n_one.max(1) as f64;
    let one_by_one = per_cmd * edit_list.len() as f64;
    println!();
    println!(
        "IPVS, {services} services x {dests} destinations ({} objects), under {}",
        services * (dests + 1),
        if std::path::Path::new("/dev/kvm").exists() {
            "qemu (TCG unless VM_KVM=1)"
        } else {
            "this kernel"
        }
    );
    println!("{:<60} {:>10} {:>12}", "step", "seconds", "vs ipvsadm -R");
    let row = |name: &str, s: f64, base: f64| println!("{name:<60} {s:>10.2} {:>12.2}", s / base);
    let base = secs(a_load);
    row("full load: ipvsadm -R", base, base);
    row(
        &format!(
            "full load: ipvs-sync apply FILE ({} ops in {} sends)",
            o_load.ops, o_load.sends
        ),
        secs(o_load.total),
        base,
    );
    row("  of which the batched apply", secs(o_load.apply), base);
    for (batch, t, sends) in &sweep {
        row(
            &format!("  apply alone, batch {batch} ({sends} sends)"),
            secs(*t),
            base,
        );
    }
    row("dump: ipvsadm -Sn", secs(a_dump), base);
    row("dump: ipvs-sync (Ipvs::dump)", secs(o_dump), base);
    let base_edit = secs(a_edit);
    println!(
        "{:<60} {:>10} {:>12}",
        format!("1% change ({} weights)", edit_list.len()),
        "seconds",
        "vs -R -e lines"
    );
    row("  ipvsadm -R fed the -e lines", base_edit, base_edit);
    row(
        "  ipvs-sync ipvs apply FILE, as the command runs it",
        secs(o_back.0),
        base_edit,
    );
    row(
        &format!(
            "  ipvs-sync apply, steps one after another ({} ops)",
            o_change.ops
        ),
        secs(o_change.total),
        base_edit,
    );
    row(
        "    of which reading the JSON file",
        secs(o_change.read),
        base_edit,
    );
    row("    of which the dump", secs(o_change.dump), base_edit);
    row("    of which the diff", secs(o_change.diff), base_edit);
    row("    of which the apply", secs(o_change.apply), base_edit);
    row(
        &format!("  ipvsadm, one command per change ({n_one} run, extrapolated)"),
        one_by_one,
        base_edit,
    );
    row(
        "  ipvsadm -C + ipvsadm -R of the whole changed tree",
        secs(a_reload),
        base_edit,
    );
    println!(
        "full reload / ipvs-sync ipvs apply of a 1% change: {:.1}x",
        secs(a_reload) / secs(o_back.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
