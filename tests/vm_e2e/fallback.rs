//! Losing the arbiter: lb1 falls back to its own keepalived (real checks against real servers
//! in a namespace, real IPVS), lb2 has no keepalived config and stays fail-static; the arbiter
//! back, lb1 takes IPVS back and stops keepalived.
//!
//! ```text
//!  lb1 ── veth 198.51.100.0/30 ── rs: 203.0.113.101, .102 on lo, HTTP on :80 each
//! ```
//! lb1's keepalived file calls `ipvs-sync quorum` with lb1's config, as the shared configs
//! do on a real fleet (there the default config path is each host's own).

use std::path::{Path, PathBuf};
use std::time::Instant;

use labkit::{Daemon, Ini, Netns};

use super::guest::{env, has_vip, ms, rules, Guest, VIP4};
use super::{within, CHANGE, START};

/// Silence before the fallback, and answers before the way back (seconds).
pub(crate) const AFTER: u64 = 5;
pub(crate) const RECOVER: u64 = 5;

fn kconf_root(dir: &Path) -> PathBuf {
    dir.join("kconf")
}

/// lb1's keepalived file: VIP4:80 over the two real servers, its quorum calls on lb1's config.
fn keepalived_file(lb_dir: &Path) -> String {
    let bin = env().bin.display();
    let cfg = lb_dir.join("config.ini");
    let cfg = cfg.display();
    format!(
        "virtual_server {VIP4} 80 {{\n\
         \x20   delay_loop 1\n    lb_algo wrr\n    lb_kind DR\n    protocol TCP\n    quorum 1\n\
         \x20   quorum_up \"{bin} -c {cfg} quorum up {VIP4},b-150,80\"\n\
         \x20   quorum_down \"{bin} -c {cfg} quorum down {VIP4},b-150,80\"\n\
         \x20   real_server 203.0.113.101 80 {{\n        weight 10\n        TCP_CHECK {{\n            connect_timeout 1\n        }}\n    }}\n\
         \x20   real_server 203.0.113.102 80 {{\n        weight 20\n        TCP_CHECK {{\n            connect_timeout 1\n        }}\n    }}\n\
         }}\n"
    )
}

pub(crate) fn balancer_config(name: &str, dir: &Path) -> Ini {
    let mut c = Ini::new();
    c.set("client", "fallback_after", AFTER)
        .set("client", "fallback_recover", RECOVER)
        .set(
            "main",
            "service_mapping_wildcard",
            format!("{}/lbs/*/*/*.conf", kconf_root(dir).display()),
        )
        .set(
            "main",
            "vip_description_filepath",
            format!("{}/desc/{{vip}}.json", dir.display()),
        );
    if name == "lb1" {
        let d = kconf_root(dir).join("lbs/lb1/web");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(dir.join("desc")).unwrap();
        std::fs::write(d.join("vip.conf"), keepalived_file(dir)).unwrap();
    }
    c
}

/// The real servers' namespace behind lb1, and an HTTP server per address.
fn real_servers(lb1: &Netns, tag: &str) -> (Netns, Vec<Daemon>) {
    let rs = Netns::new("rs").unwrap();
    labkit::veth(lb1, &["198.51.100.1/30"], &rs, &["198.51.100.2/30"]).unwrap();
    rs.ip(&["link", "set", "lo", "up"]).unwrap();
    rs.ip(&["route", "add", "default", "via", "198.51.100.1"])
        .unwrap();
    let logs = env().work.join("logs");
    let servers = ["203.0.113.101", "203.0.113.102"]
        .iter()
        .map(|a| {
            rs.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"])
                .unwrap();
            lb1.ip(&["route", "add", &format!("{a}/32"), "via", "198.51.100.2"])
                .unwrap();
            let mut cmd = rs.command("python3");
            cmd.args(["-m", "http.server", "--bind", a, "80"]);
            Daemon::spawn(cmd, &logs.join(format!("{tag}-rs-{a}.log"))).unwrap()
        })
        .collect();
    (rs, servers)
}

pub(crate) fn status(lb: &Netns) -> serde_json::Value {
    let page = labkit::metrics::http_get(lb, 9101, "/status");
    serde_json::from_str(&page).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn phase(lb: &Netns) -> String {
    status(lb)["fallback"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn has_dest(lb: &Netns, rs: &str) -> bool {
    let want = format!("-a -t {VIP4}:80 -r {rs}:80");
    rules(lb).iter().any(|r| r.starts_with(&want))
}

#[test]
#[ignore = "vm: needs the IPVS kernel, a broker and a router on the host; run netns-lab/vm-e2e"]
fn vm_e2e_fallback_to_the_balancers_keepalived_and_back() {
    let mut g = Guest::start_with("fallback", &[], balancer_config);
    let (_rs_ns, mut servers) = real_servers(&g.lbs[0], g.tag);
    assert!(within(START, || g.all_mirror()), "{}", g.mirror_diff());
    for arg in [
        format!("{VIP4},b-150,80"),
        format!("{VIP4},b-150,53"),
        format!("{VIP4},b-150,443"),
    ] {
        let out = g.quorum("up", &arg);
        assert!(out.status.success(), "quorum up {arg}: {out:?}");
    }
    let v4 = format!("{VIP4}/32");
    let from = |n: usize| move |g: &Guest| g.router_paths(&format!("{VIP4}/32")).len() == n;
    assert!(
        within(CHANGE, || from(2)(&g)),
        "router: {:?}",
        g.router_paths(&v4)
    );
    g.ok(&format!("{v4} announced by lb1 and lb2"));
    assert_eq!(phase(&g.lbs[0]), "normal");
    assert_eq!(status(&g.lbs[1])["fallback"]["configs"], false);
    g.ok("lb2 says it has no keepalived config to fall back to");

    // The arbiter host's daemons die.
    // The clock starts before the stop: the arbiter keeps heartbeating until its SIGTERM
    // handler runs, and its stop (Cease, closing the broker connection) may take longer than
    // one heartbeat, so silence can begin before the stop returns.
    let t = Instant::now();
    g.arbiter.stop().unwrap();
    assert!(
        within(CHANGE, || phase(&g.lbs[0]) == "fallback"
            && status(&g.lbs[0])["fallback"]["keepalived_pid"].is_u64()),
        "lb1 did not fall back: {}",
        status(&g.lbs[0])
    );
    let took = ms(t);
    // Silence counts from the arbiter's last heartbeat, at most one heartbeat_interval (1 s)
    // before the stop began, plus the timer's and the delivery's jitter under TCG (500 ms
    // allowed). The exact boundary is fallback_tests' `enters_after_fallback_after_of_silence_and_not_before`.
    assert!(
        took >= u128::from(AFTER - 1) * 1000 - 500,
        "fell back after {took} ms"
    );
    g.ok(&format!(
        "arbiter stopped: lb1 runs its keepalived after {took} ms (fallback_after = {AFTER} s)"
    ));
    assert_eq!(phase(&g.lbs[1]), "normal");
    g.ok("lb2 (no keepalived config) stays fail-static");
    assert_eq!(g.router_paths(&v4).len(), 2, "{:?}", g.router_paths(&v4));
    g.ok(&format!("{v4} still announced by both after the switch"));

    // A real server dies: lb1's keepalived takes it out of lb1's IPVS.
    assert!(has_dest(&g.lbs[0], "203.0.113.102"));
    servers[1].stop().unwrap();
    let t = Instant::now();
    assert!(
        within(CHANGE, || !has_dest(&g.lbs[0], "203.0.113.102")),
        "{:?}",
        rules(&g.lbs[0])
    );
    g.ok(&format!(
        "203.0.113.102 killed: out of lb1's IPVS after {} ms (delay_loop 1)",
        ms(t)
    ));
    assert!(has_dest(&g.lbs[1], "203.0.113.102"));
    g.ok("lb2 (fail-static) keeps it");

    // The last one dies: lb1 withdraws the VIP.
    servers[0].stop().unwrap();
    let t = Instant::now();
    assert!(
        within(CHANGE, || from(1)(&g)),
        "router: {:?}",
        g.router_paths(&v4)
    );
    g.ok(&format!(
        "last real server killed: {v4} withdrawn by lb1 at the router after {} ms",
        ms(t)
    ));
    assert!(
        within(CHANGE, || !has_vip(&g.lbs[0], &v4)),
        "{v4} stays on lb1"
    );
    g.ok(&format!("{v4} gone from lb1's vip0 after the withdraw"));

    // The arbiter is back: lb1 takes IPVS back and stops keepalived.
    g.restart_arbiter();
    let t = Instant::now();
    assert!(
        within(START, || phase(&g.lbs[0]) == "normal"),
        "lb1 still in fallback: {}",
        status(&g.lbs[0])
    );
    let took = ms(t);
    g.ok(&format!(
        "arbiter back: lb1 normal again after {took} ms (fallback_recover = {RECOVER} s)"
    ));
    assert!(status(&g.lbs[0])["fallback"]["keepalived_pid"].is_null());
    g.ok("lb1's keepalived stopped");
    assert!(within(CHANGE, || g.all_mirror()), "{}", g.mirror_diff());
    g.ok(
        "lb1 mirrors the arbiter's tree again (the dead real servers back as the arbiter has them)",
    );
    drop(servers);
    g.finish();
}
