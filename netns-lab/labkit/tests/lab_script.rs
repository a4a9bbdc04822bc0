//! The lab scripts (`netns-lab/lab`): the files `lab gen` writes (labkit's `lab-gen`)
//! checked with the real config loader and mapping builder (no root), and a whole
//! `lab up`/`status`/`down` (root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab")
}

/// Runs `netns-lab/lab ARGS…` with its files in `run` and namespaces named PREFIX+node.
fn lab(run: &Path, prefix: &str, args: &[&str]) -> Output {
    lab_with(run, prefix, 1, args)
}

/// [`lab`] with `brokers` broker nodes (`LAB_BROKERS`).
fn lab_with(run: &Path, prefix: &str, brokers: usize, args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(lab_script())
        .args(args)
        .env("LAB_RUN", run)
        .env("LAB_PREFIX", prefix)
        .env("LAB_BROKERS", brokers.to_string())
        .env("LAB_GEN", env!("CARGO_BIN_EXE_lab-gen"))
        .output()
        .unwrap();
    eprintln!(
        "lab {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn vips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|v| v.parse().unwrap()).collect()
}

#[test]
fn generated_configs_load_and_map_as_planned() {
    let run = tempfile::tempdir().unwrap();
    assert!(lab(run.path(), "unused-", &["gen"]).status.success());

    for node in ["arbiter", "lb1", "lb2", "lb3"] {
        let path = run.path().join(node).join("config.ini");
        let cfg = config::Config::load(&path).unwrap_or_else(|e| panic!("{node}: {e}"));
        assert_eq!(cfg.main.hostname, node);
        assert_eq!(cfg.node_key().unwrap().len(), 44);
        let mode = std::fs::metadata(run.path().join(node).join("secret.ini"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{node}/secret.ini");
        if node == "arbiter" {
            assert!(cfg.bgp.peers.is_empty());
            continue;
        }
        // Each balancer peers with both routers: r1 iBGP over IPv4 with TCP-MD5 from
        // secret.ini, r2 eBGP over IPv6 without.
        let r1 = cfg.bgp.peer("r1").unwrap();
        let r2 = cfg.bgp.peer("r2").unwrap();
        assert_eq!(
            (r1.address.to_string(), r1.remote_as),
            ("192.0.2.1".into(), 65000)
        );
        assert_eq!(
            (r2.address.to_string(), r2.remote_as),
            ("2001:db8::2".into(), 65001)
        );
        assert!(r1.password.is_some() && r2.password.is_none());
        assert_eq!(cfg.bgp.local_as, Some(65000));
    }

    // The keepalived tree maps to the lab's VIP plan.
    let arbiter = config::Config::load(&run.path().join("arbiter/config.ini")).unwrap();
    let report = config::mapping::build(&arbiter.main.service_mapping_wildcard).unwrap();
    let want: BTreeMap<String, BTreeSet<IpAddr>> = [
        (
            "lb1",
            vips(&[
                "198.51.100.1",
                "198.51.100.3",
                "2001:db8:f00::1",
                "2001:db8:f00::2",
            ]),
        ),
        (
            "lb2",
            vips(&[
                "198.51.100.1",
                "198.51.100.2",
                "198.51.100.3",
                "2001:db8:f00::2",
            ]),
        ),
        (
            "lb3",
            vips(&["198.51.100.2", "198.51.100.3", "2001:db8:f00::1"]),
        ),
    ]
    .into_iter()
    .map(|(b, v)| (b.to_owned(), v))
    .collect();
    assert_eq!(report.vips(), want);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let v1: IpAddr = "198.51.100.1".parse().unwrap();
    assert_eq!(report.ports["lb1"][&v1], BTreeSet::from([80, 443]));
}

#[test]
fn generated_router_configs_are_accepted_by_gobgpd() {
    let run = tempfile::tempdir().unwrap();
    assert!(lab(run.path(), "unused-", &["gen"]).status.success());
    for r in ["r1", "r2"] {
        let toml = run.path().join(r).join("gobgpd.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        assert_eq!(text.matches("[[neighbors]]").count(), 3, "{r}");
        assert_eq!(text.matches("passive-mode = true").count(), 3, "{r}");
        match Command::new("gobgpd")
            .arg("-d")
            .arg("-f")
            .arg(&toml)
            .output()
        {
            Ok(out) => assert!(out.status.success(), "{r}: {out:?}"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("gobgpd not installed; run netns-lab/setup")
            }
            Err(e) => panic!("{e}"),
        }
    }
    let r1 = std::fs::read_to_string(run.path().join("r1/gobgpd.toml")).unwrap();
    assert!(r1.contains("neighbor-address = \"192.0.2.31\"") && r1.contains("auth-password"));
    let r2 = std::fs::read_to_string(run.path().join("r2/gobgpd.toml")).unwrap();
    assert!(r2.contains("neighbor-address = \"2001:db8::33\"") && !r2.contains("auth-password"));
}

#[test]
fn gen_keeps_secrets_across_runs() {
    let run = tempfile::tempdir().unwrap();
    assert!(lab(run.path(), "unused-", &["gen"]).status.success());
    let first = std::fs::read_to_string(run.path().join("lb1/secret.ini")).unwrap();
    assert!(lab(run.path(), "unused-", &["gen"]).status.success());
    let second = std::fs::read_to_string(run.path().join("lb1/secret.ini")).unwrap();
    assert_eq!(first, second);
    // And every node has a key of its own.
    let arbiter = std::fs::read_to_string(run.path().join("arbiter/secret.ini")).unwrap();
    let key = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("node_key"))
            .unwrap()
            .to_owned()
    };
    assert_ne!(key(&first), key(&arbiter));
}

#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_topology_up_status_down() {
    let run = LabRun::up("lt", 1);
    // Idempotent: a second `up` changes nothing and succeeds.
    assert!(run.lab(&["up"]).status.success());

    // The LAN carries IPv4 and IPv6 between any two nodes (ping until the first reply,
    // within 5 s: a link just brought up drops its first packets).
    for (from, to) in [
        ("lb1", "192.0.2.1"),
        ("lb3", "2001:db8::2"),
        ("arbiter", "192.0.2.10"),
    ] {
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                &run.ns(from),
                "ping",
                "-c1",
                "-i0.2",
                "-w5",
                to,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{from} -> {to}");
    }
    // Both routers list the three balancers; the broker takes TCP connections.
    let status = run.lab(&["status"]);
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    for want in [
        "== r1 (AS 65000)",
        "192.0.2.33",
        "== r2 (AS 65001)",
        "2001:db8::31",
    ] {
        assert!(text.contains(want), "{want} missing in:\n{text}");
    }
    assert!(text.contains("broker   rabbitmq running"), "{text}");
    assert!(run.amqp_answers("lb2", "192.0.2.10"));
    // `exec` runs in the node.
    let out = run.lab(&["exec", "lb1", "ip", "-br", "addr", "show", "eth0"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("192.0.2.31/24"));

    run.down_leaves_none_of(&["r1", "broker", "lb1", "sw"]);
}

/// `LAB_BROKERS=3`: three broker nodes joined in one cluster, each taking AMQP; a node
/// killed (`lab signal brokerN KILL`) shows stopped and comes back with `lab restart`;
/// `lab down` leaves none of them.
#[test]
#[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
fn lab_topology_on_a_broker_cluster() {
    // `lab up` fails when a node does not join the first.
    let run = LabRun::up("lc", 3);
    for addr in ["192.0.2.10", "192.0.2.11", "192.0.2.12"] {
        assert!(run.amqp_answers("lb2", addr), "no AMQP on {addr}");
    }
    let status = |want: &str| {
        let out = run.lab(&["status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains(want), "{want} missing in:\n{text}");
    };
    status("broker3  rabbitmq running");
    // Every daemon is given the three nodes.
    let config = std::fs::read_to_string(run.path().join("lb1/config.ini")).unwrap();
    assert!(
        config.contains(
            "amqp://ipvs@192.0.2.10:5672/%2f,amqp://ipvs@192.0.2.11:5672/%2f,\
             amqp://ipvs@192.0.2.12:5672/%2f"
        ),
        "{config}"
    );
    assert!(run.lab(&["signal", "broker2", "KILL"]).status.success());
    assert!(
        labkit::wait_until(std::time::Duration::from_secs(10), || !run
            .amqp_answers("lb2", "192.0.2.11")),
        "broker2 still answers after its kill"
    );
    status("broker2  rabbitmq stopped");
    assert!(run.lab(&["restart", "broker2"]).status.success());
    status("broker2  rabbitmq running");
    assert!(run.amqp_answers("lb2", "192.0.2.11"));

    run.down_leaves_none_of(&["broker", "broker2", "broker3", "sw"]);
}

/// A gobgpd in lb1 stands in for the balancer's speaker: the generated router configs
/// take its sessions (r1 iBGP over IPv4 with the lab's TCP-MD5 key, r2 eBGP over IPv6),
/// and `lab status` shows the routes with their local-pref.
#[test]
#[ignore = "lab: needs root, netns and gobgpd; run netns-lab/test"]
fn lab_routers_take_balancer_sessions_and_routes() {
    use labkit::{GobgpConfig, GobgpNeighbor, Gobgpd, Netns};
    use std::time::Duration;

    let run = LabRun::up("lr", 1);
    let md5 = std::fs::read_to_string(run.path().join("secrets/bgp_md5_r1")).unwrap();
    let speaker = GobgpConfig::new(65000, "192.0.2.31".parse().unwrap())
        .listen_port(-1)
        .neighbor(GobgpNeighbor::new("192.0.2.1".parse().unwrap(), 65000).password(md5.trim()))
        .neighbor(GobgpNeighbor::new("2001:db8::2".parse().unwrap(), 65001));
    let lb1 = Netns::attach(&run.ns("lb1")).unwrap();
    let lb1 = Gobgpd::start(&lb1, &speaker.to_toml()).unwrap();
    // gobgpd's first active connect comes 5-10 s after start.
    assert!(lb1.wait_established("192.0.2.1", Duration::from_secs(20)));
    assert!(lb1.wait_established("2001:db8::2", Duration::from_secs(20)));

    lb1.cli(&[
        "global",
        "rib",
        "add",
        "-a",
        "ipv4",
        "198.51.100.1/32",
        "local-pref",
        "200",
    ])
    .unwrap();
    lb1.cli(&["global", "rib", "add", "-a", "ipv6", "2001:db8:f00::1/128"])
        .unwrap();
    let routers_have = |want4: bool, want6: bool| {
        labkit::wait_until(Duration::from_secs(10), || {
            let status = run.lab(&["status"]);
            let text = String::from_utf8_lossy(&status.stdout).into_owned();
            let r2_at = text.find("== r2").unwrap_or(text.len());
            let (r1, r2) = text.split_at(r2_at);
            r1.contains("198.51.100.1/32") == want4
                && (!want4 || r1.contains("lp 200"))
                && r2.contains("2001:db8:f00::1/128") == want6
                && (!want6 || r2.contains("as 65000"))
        })
    };
    assert!(routers_have(true, true));
    lb1.cli(&["global", "rib", "del", "-a", "ipv4", "198.51.100.1/32"])
        .unwrap();
    lb1.cli(&["global", "rib", "del", "-a", "ipv6", "2001:db8:f00::1/128"])
        .unwrap();
    assert!(routers_have(false, false));
}

/// One test's lab, up: a run directory RabbitMQ can reach (it runs as user rabbitmq),
/// namespaces named with a prefix of the test's own, and `lab down` however the test ends.
struct LabRun {
    dir: tempfile::TempDir,
    prefix: String,
    brokers: usize,
}

impl LabRun {
    /// `lab up` with `brokers` broker nodes, namespaces prefixed TAG+pid; fails the test if
    /// it fails.
    fn up(tag: &str, brokers: usize) -> LabRun {
        labkit::require_root();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = LabRun {
            dir,
            prefix: format!("{tag}{}-", std::process::id()),
            brokers,
        };
        assert!(run.lab(&["up"]).status.success(), "lab up failed");
        run
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The namespace of `node`.
    fn ns(&self, node: &str) -> String {
        format!("{}{node}", self.prefix)
    }

    /// `netns-lab/lab ARGS…` on this lab.
    fn lab(&self, args: &[&str]) -> Output {
        lab_with(self.path(), &self.prefix, self.brokers, args)
    }

    /// Whether a TCP connection from node `from` to AMQP's port on `addr` is taken.
    fn amqp_answers(&self, from: &str, addr: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(from), "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{addr}/5672"))
            .status()
            .unwrap()
            .success()
    }

    /// `lab down`, then none of `nodes`' namespaces is left.
    fn down_leaves_none_of(self, nodes: &[&str]) {
        let names: Vec<String> = nodes.iter().map(|n| self.ns(n)).collect();
        drop(self);
        for ns in names {
            assert!(
                !Path::new(&format!("/run/netns/{ns}")).exists(),
                "{ns} left"
            );
        }
    }
}

impl Drop for LabRun {
    fn drop(&mut self) {
        self.lab(&["down"]);
    }
}
