//! The arbiter's withdrawal cap and `monitor`, end to end (lab tests: root, netns, RabbitMQ,
//! gobgpd). Run with `netns-lab/test fleet_ops`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use labkit::fleet::{Fleet, FleetOpts};
use labkit::Ini;
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(30);

fn start(opts: FleetOpts) -> Fleet {
    Fleet::start(env!("CARGO_BIN_EXE_ipvs-sync").as_ref(), opts).unwrap()
}

fn vips(n: u8) -> Vec<IpAddr> {
    (0..n)
        .map(|i| format!("203.0.113.{}", 10 + i).parse().unwrap())
        .collect()
}

/// `ipvs-sync -c CONFIG ARGS…` on the arbiter's side.
fn arbiter_cmd(f: &Fleet, args: &[&str]) -> Output {
    f.core
        .command(f.bin().to_str().unwrap())
        .arg("-c")
        .arg(f.arbiter_dir.join("config.ini"))
        .args(args)
        .output()
        .unwrap()
}

/// `ipvs-sync -c CONFIG ARGS…` on balancer `i`.
fn client_cmd(f: &Fleet, i: usize, args: &[&str]) -> Output {
    f.balancers[i]
        .ns
        .command(f.bin().to_str().unwrap())
        .arg("-c")
        .arg(f.balancers[i].dir.join("config.ini"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// How many of `vips` router 0 has a path for.
fn announced(f: &Fleet, vips: &[IpAddr]) -> usize {
    vips.iter().filter(|v| f.path_count(0, v) > 0).count()
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_withdraw_cap_holds_half_of_a_mass_quorum_loss_until_released() {
    labkit::require_root();
    let all = vips(10);
    let mut limit = Ini::with("server", "withdraw_limit", "50%");
    limit.set("server", "withdraw_window", 600);
    let f = start(FleetOpts {
        vips: all.clone(),
        log_level: "info",
        arbiter_config: limit,
        ..FleetOpts::default()
    });
    for v in &all {
        f.quorum("up", &format!("{v},b-100,80")).unwrap();
    }
    assert!(
        labkit::wait_until(WAIT, || announced(&f, &all) == 10),
        "not all 10 announced:\n{}",
        f.arbiter_log()
    );

    // Every VIP loses quorum within a second, as a whole-site failure looks.
    let t0 = Instant::now();
    let downs: Vec<_> = all
        .iter()
        .map(|v| {
            f.quorum_command("down", &format!("{v},b-100,80"))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut d in downs {
        assert!(d.wait().unwrap().success());
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(
        labkit::wait_until(WAIT, || announced(&f, &all) == 5),
        "expected 5 withdrawn, 5 held; announced {}:\n{}",
        announced(&f, &all),
        f.arbiter_log()
    );
    // Held means held: the count stays at 5 over three heartbeats (1 s each).
    let stable_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < stable_until {
        assert_eq!(announced(&f, &all), 5, "a held VIP was withdrawn");
        std::thread::sleep(Duration::from_millis(100));
    }

    let status = arbiter_cmd(&f, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let held: Vec<String> = doc["vips"]
        .as_array()
        .unwrap_or_else(|| panic!("no vips: {doc}"))
        .iter()
        .filter(|v| !v["held"].is_null())
        .map(|v| v["vip"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(held.len(), 5, "{doc}");
    for h in &held {
        let v: IpAddr = h.parse().unwrap();
        assert!(f.path_count(0, &v) > 0, "{h} named held but withdrawn");
    }
    let page = f.arbiter_metrics();
    assert!(
        page.lines().any(|l| l == "ipvs_sync_withdrawals_held 5"),
        "{page}"
    );
    let mon = arbiter_cmd(&f, &["monitor"]);
    assert_eq!(mon.status.code(), Some(2), "{}", text(&mon));
    println!("monitor: {}", text(&mon).trim());

    let t1 = Instant::now();
    let rel = arbiter_cmd(&f, &["release", "--all"]);
    assert!(rel.status.success(), "{}", text(&rel));
    assert!(
        labkit::wait_until(WAIT, || announced(&f, &all) == 0),
        "release --all left {} announced",
        announced(&f, &all)
    );
    let took = t1.elapsed();
    println!("10 VIPs down, withdraw_limit 50%: 5 withdrawn, 5 held; release --all withdrew the rest in {} ms", took.as_millis());
    assert!(took < Duration::from_secs(1), "release took {took:?}");
}

/// The broker's Erlang VM: the `beam.smp` process in the fleet's core namespace.
fn beam_pid(f: &Fleet) -> nix::unistd::Pid {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", f.core.name()])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "beam.smp")
        })
        .expect("no beam.smp in the core namespace");
    nix::unistd::Pid::from_raw(pid)
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_monitor_on_a_balancer_routers_down_broker_gone_daemon_gone() {
    labkit::require_root();
    let mut f = start(FleetOpts {
        hold_time: 3,
        log_level: "info",
        ..FleetOpts::default()
    });
    let healthy = labkit::wait_until(WAIT, || {
        client_cmd(&f, 0, &["monitor"]).status.code() == Some(0)
    });
    assert!(healthy, "{}", text(&client_cmd(&f, 0, &["monitor"])));

    // Every router gone: CRITICAL within the hold time and a second.
    f.routers[0]
        .gobgpd
        .daemon()
        .signal(Signal::SIGSTOP)
        .unwrap();
    let t0 = Instant::now();
    let critical = labkit::wait_until(WAIT, || {
        client_cmd(&f, 0, &["monitor"]).status.code() == Some(2)
    });
    let took = t0.elapsed();
    let out = client_cmd(&f, 0, &["monitor"]);
    assert!(critical, "{}", text(&out));
    assert!(
        text(&out).contains("no BGP session Established"),
        "{}",
        text(&out)
    );
    println!(
        "routers down → CRITICAL after {} ms (hold time 3 s)",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(4) + Duration::from_secs(1),
        "{took:?}"
    );
    f.routers[0]
        .gobgpd
        .daemon()
        .signal(Signal::SIGCONT)
        .unwrap();
    f.wait_sessions(0, WAIT).unwrap();
    let healthy = labkit::wait_until(WAIT, || {
        client_cmd(&f, 0, &["monitor"]).status.code() == Some(0)
    });
    assert!(healthy, "{}", text(&client_cmd(&f, 0, &["monitor"])));

    // The broker frozen (its Erlang VM stopped by pid): the arbiter's heartbeats stop
    // arriving → CRITICAL once they are older than consumer_alive_ttl.
    let beam = beam_pid(&f);
    nix::sys::signal::kill(beam, Signal::SIGSTOP).unwrap();
    let critical = labkit::wait_until(WAIT, || {
        client_cmd(&f, 0, &["monitor"]).status.code() == Some(2)
    });
    let out = client_cmd(&f, 0, &["monitor"]);
    nix::sys::signal::kill(beam, Signal::SIGCONT).unwrap();
    assert!(critical, "broker frozen: {}", text(&out));
    assert!(text(&out).contains("arbiter heartbeat"), "{}", text(&out));
    println!("broker frozen → {}", text(&out).trim());

    // The daemon not running: UNKNOWN (3).
    f.stop_client(0);
    let out = client_cmd(&f, 0, &["monitor"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[test]
#[ignore = "lab: needs root, netns, rabbitmq-server and gobgpd; run netns-lab/test"]
fn lab_fleet_view_matches_the_balancers_and_the_router() {
    labkit::require_root();
    let all = vips(2);
    let mut f = start(FleetOpts {
        balancers: 3,
        vips: all.clone(),
        log_level: "info",
        ..FleetOpts::default()
    });
    for v in &all {
        f.quorum("up", &format!("{v},b-100,80")).unwrap();
    }
    assert!(labkit::wait_until(WAIT, || all
        .iter()
        .all(|v| f.path_count(0, v) == 3)));
    // lb3 frozen: its sessions live on until their hold time, its heartbeats stop.
    f.signal_client(2, Signal::SIGSTOP).unwrap();
    let doc = || -> serde_json::Value {
        let o = arbiter_cmd(&f, &["status", "--json"]);
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| serde_json::json!({ "error": format!("{e}: {}", text(&o)) }))
    };
    let live = |d: &serde_json::Value, name: &str| {
        d["clients"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["live"].as_bool().unwrap())
    };
    assert!(
        labkit::wait_until(WAIT, || live(&doc(), "lb3") == Some(false)),
        "lb3 still live: {}",
        doc()
    );
    let d = doc();
    for (i, name) in ["lb1", "lb2"].iter().enumerate() {
        assert_eq!(live(&d, name), Some(true), "{d}");
        let row = d["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == *name)
            .unwrap()
            .clone();
        // What the balancer says of itself, and what the router holds from it.
        let own = f.client_status(i);
        let own_announced = own["vips"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["state"] == "announced")
            .count();
        assert_eq!(row["announced"], own_announced, "{name}: {row} vs {own}");
        assert_eq!(row["serial"], own["tree_serial"], "{name}: {row} vs {own}");
        assert_eq!(row["vips"], 2, "{row}");
    }
    // The router: the live balancers' paths, and lb3's only until its hold time ends.
    assert!(
        labkit::wait_until(WAIT, || all.iter().all(|v| f.path_count(0, v) == 2)),
        "router paths do not match the two live balancers"
    );
    let table = arbiter_cmd(&f, &["status"]);
    println!("{}", String::from_utf8_lossy(&table.stdout));
    f.signal_client(2, Signal::SIGCONT).unwrap();
}
