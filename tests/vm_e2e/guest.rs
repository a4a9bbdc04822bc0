//! The guest side of `netns-lab/vm-e2e`: the namespaces, the arbiter's IPVS tree, the
//! daemons and the ways to look at them, for one test.
//!
//! ```text
//!  host namespace (netns-lab/vm-e2e)      │ guest (Debian kernel, virtme-ng, TCG)
//!   tap0 192.0.2.1/24 ◀──── qemu ─────────┼─▶ bridge ── eth (virtio-net, the tap), 192.0.2.2
//!   rabbitmq-server 192.0.2.1:5672        │    ├─ veth ─ arb  192.0.2.10  ipvs-sync server
//!   gobgpd AS 65000 192.0.2.1:179         │    ├─ veth ─ lb1  192.0.2.11  ipvs-sync client
//!   `gobgp monitor adj-in -j` → WORK/…    │    └─ veth ─ lb2  192.0.2.12  ipvs-sync client
//! ```
//! The host writes `WORK/env` (`VM_E2E_ENV` names it): the binary, the broker's URL, the
//! message key, the tap's MAC and the router's update stream. With `VM_E2E_CLUSTER=1` the
//! broker is a three-node cluster on 198.51.100.0/24 behind the host's namespace (every
//! guest namespace gets a route to it) and `CLUSTER_DIR` is where to ask the host to cut a
//! node off and heal it (`cluster.rs`). Each test builds its own
//! bridge, namespaces and daemons and removes them when it ends; the tests run one at a
//! time (the router knows the balancers by address).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use labkit::spec::{Arbiter, Balancer, LabKey, LabSpec, Peer, Proto, Vip};
use labkit::{Daemon, Ini, Netns};

/// The IPv4 and IPv6 VIPs the mapping gives both balancers.
pub const VIP4: &str = "203.0.113.10";
pub const VIP6: &str = "2001:db8:f00::10";
/// A VIP of the arbiter's tree that no balancer is mapped to.
pub const UNMAPPED: &str = "203.0.113.99";
/// The VIP keepalived's `virtual_server fwmark 7` names in its quorum handlers: fwmark 7's
/// services go with it to both balancers. Fwmark 8 (IPv6) names no VIP: never mirrored.
pub const VIP_FWMARK: &str = "203.0.113.30";
/// A VIP an operator serves on the balancers by hand, outside the mapping.
pub const OPERATOR_VIP: &str = "203.0.113.200";
/// The balancers: name, namespace tag, address.
pub const LBS: [(&str, &str); 2] = [("lb1", "192.0.2.11"), ("lb2", "192.0.2.12")];
const ARBITER_ADDR: &str = "192.0.2.10";
/// How often conditions are looked at: every look runs programs, which under TCG cost
/// the daemons CPU.
pub const POLL: Duration = Duration::from_millis(500);

/// The arbiter's tree: two VIPs mapped to both balancers (TCP/UDP services with DR, NAT
/// and tunnel real servers, persistence), fwmark services (v4: mapped with [`VIP_FWMARK`];
/// v6: with no VIP) and a VIP no balancer is mapped to; loaded with one `ipvsadm -R`.
const TREE: &str = "\
-A -t 203.0.113.10:80 -s wrr
-a -t 203.0.113.10:80 -r 203.0.113.101:80 -g -w 10
-a -t 203.0.113.10:80 -r 203.0.113.102:80 -g -w 20
-a -t 203.0.113.10:80 -r 203.0.113.103:80 -g -w 0
-A -u 203.0.113.10:53 -s rr
-a -u 203.0.113.10:53 -r 203.0.113.101:5353 -m -w 1
-a -u 203.0.113.10:53 -r 203.0.113.102:5353 -m -w 1
-A -t 203.0.113.10:443 -s sh -p 300
-a -t 203.0.113.10:443 -r 203.0.113.103:443 -i -w 5
-a -t 203.0.113.10:443 -r 203.0.113.104:443 -i -w 5
-A -t [2001:db8:f00::10]:443 -s wlc
-a -t [2001:db8:f00::10]:443 -r [2001:db8:5::1]:443 -g -w 1
-a -t [2001:db8:f00::10]:443 -r [2001:db8:5::2]:443 -g -w 2
-A -u [2001:db8:f00::10]:53 -s rr
-a -u [2001:db8:f00::10]:53 -r [2001:db8:5::1]:53 -m -w 1
-A -f 7 -s sh
-a -f 7 -r 203.0.113.105:0 -g -w 1
-A -f 8 -6 -s rr
-a -f 8 -6 -r [2001:db8:5::3]:0 -g -w 1
-A -t 203.0.113.99:80 -s rr
-a -t 203.0.113.99:80 -r 203.0.113.106:80 -g -w 1
";

/// What the host wrote to `WORK/env`.
#[derive(Debug)]
pub struct Env {
    /// The shared directory (read-write): logs go to `WORK/logs`.
    pub work: PathBuf,
    /// The `ipvs-sync` binary, copied into guest memory (every start would read it over
    /// 9p otherwise).
    pub bin: PathBuf,
    /// `amqp://…@192.0.2.1:5672/%2f`.
    pub amqp_url: String,
    /// The broker's `ADDR:PORT`.
    pub broker: String,
    /// The MAC of the guest's interface on the tap.
    pub mac: String,
    /// The router's address.
    pub router: IpAddr,
    /// The router's `gobgp monitor adj-in -j` output.
    pub stream: PathBuf,
    /// With a cluster: each node's address, in the host's order (its index is the node's
    /// number in requests), the cluster's network and the request directory.
    pub nodes: Vec<String>,
    pub cluster_net: Option<String>,
    pub cluster_dir: Option<PathBuf>,
}

/// The environment, read once per process.
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = std::env::var_os("VM_E2E_ENV")
            .map(PathBuf::from)
            .expect("VM_E2E_ENV is not set: these tests run in the VM, by netns-lab/vm-e2e");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let kv: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| {
            kv.get(k)
                .unwrap_or_else(|| panic!("no {k} in {}", path.display()))
                .to_string()
        };
        let run = Path::new("/tmp/vm-e2e");
        std::fs::create_dir_all(run).unwrap();
        let bin = run.join("ipvs-sync");
        std::fs::copy(get("BIN"), &bin).unwrap();
        Env {
            work: path.parent().unwrap().to_owned(),
            bin,
            amqp_url: get("AMQP_URL"),
            broker: format!("{}:{}", get("BROKER_ADDR"), get("BROKER_PORT")),
            mac: get("GUEST_MAC"),
            router: get("ROUTER_ADDR").parse().unwrap(),
            stream: get("ROUTER_STREAM").into(),
            nodes: kv
                .get("NODES")
                .map(|n| n.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            cluster_net: kv.get("CLUSTER_NET").map(|n| (*n).to_owned()),
            cluster_dir: kv.get("CLUSTER_DIR").map(PathBuf::from),
        }
    })
}

/// Milliseconds since `t`, for the figures printed along the way.
pub fn ms(t: Instant) -> u128 {
    t.elapsed().as_millis()
}

/// One test's guest: the LAN, the namespaces, the daemons and their files.
pub struct Guest {
    pub tag: &'static str,
    pub spec: LabSpec,
    pub arbiter: Daemon,
    pub clients: Vec<Daemon>,
    /// Namespaces: the arbiter's, then each balancer's.
    pub arb: Netns,
    pub lbs: Vec<Netns>,
    /// Each balancer's operator rules before the daemons ran.
    pub operator_before: Vec<Vec<String>>,
    /// Where the router's stream stood when the test began.
    stream_start: u64,
    lan: Lan,
    pub started: Instant,
}

impl Guest {
    /// Builds the LAN and the namespaces, loads the arbiter's tree and the operator's
    /// rules, writes the configs and starts the arbiter and both balancers.
    pub fn start(tag: &'static str) -> Guest {
        Guest::start_with(tag, &[], |_, _| Ini::new())
    }

    /// [`Guest::start`], with the balancers whose index is in `no_net_admin` started
    /// without CAP_NET_ADMIN (`setpriv`): every IPVS change and address change they make
    /// fails, as on a balancer whose kernel refuses its work. Their `vip0` is made for them.
    /// `extra(name, its dir)` gives keys added to each balancer's config.
    pub fn start_with(
        tag: &'static str,
        no_net_admin: &[usize],
        extra: impl Fn(&str, &Path) -> Ini,
    ) -> Guest {
        labkit::require_root();
        let env = env();
        let started = Instant::now();
        let stream_start = std::fs::metadata(&env.stream).map_or(0, |m| m.len());
        let lan = Lan::up(&env.mac);
        let arb = lan.node("arb", ARBITER_ADDR);
        let lbs: Vec<Netns> = LBS.iter().map(|(n, a)| lan.node(n, a)).collect();
        for ns in std::iter::once(&arb).chain(&lbs) {
            assert!(
                labkit::wait_until(Duration::from_secs(120), || reaches(ns, &env.broker)),
                "{} cannot reach the broker at {}",
                ns.name(),
                env.broker
            );
        }
        eprintln!("[{tag}] namespaces reach the broker ({} ms)", ms(started));
        ipvsadm_restore(&arb, TREE);
        // What an operator put on the balancers by hand before the daemons ran: services
        // of a VIP outside the mapping (they must survive every reconcile), and on lb1 a
        // stale service of a mapped VIP (the mirror owns mapped VIPs: it must go).
        ipvsadm_restore(
            &lbs[0],
            "-A -t 203.0.113.200:8080 -s rr\n\
             -a -t 203.0.113.200:8080 -r 203.0.113.150:8080 -m -w 1\n\
             -A -t 203.0.113.10:8443 -s rr\n",
        );
        ipvsadm_restore(&lbs[1], "-A -u 203.0.113.200:53 -s rr\n-A -f 9 -s rr\n");
        let operator_before = lbs.iter().map(operator_rules).collect();

        let mut spec = spec(tag, env);
        for b in &mut spec.balancers {
            b.config.merge(&extra(&b.name, &b.dir));
        }
        spec.write().unwrap();
        let logs = env.work.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let arbiter = daemon(
            &arb,
            &spec.arbiter.dir,
            "server",
            &logs.join(format!("{tag}-arbiter.log")),
        );
        let sock = spec.quorum_socket();
        assert!(
            labkit::wait_until(Duration::from_secs(120), || sock.exists()),
            "the arbiter did not open {}:\n{}",
            sock.display(),
            arbiter.log_tail()
        );
        eprintln!("[{tag}] arbiter up ({} ms)", ms(started));
        let clients = lbs
            .iter()
            .zip(&spec.balancers)
            .enumerate()
            .map(|(i, (ns, b))| {
                let log = logs.join(format!("{tag}-{}.log", b.name));
                if no_net_admin.contains(&i) {
                    ns.ip(&["link", "add", "vip0", "type", "dummy"]).unwrap();
                    ns.ip(&["link", "set", "vip0", "up"]).unwrap();
                    daemon_without_net_admin(ns, &b.dir, &log)
                } else {
                    daemon(ns, &b.dir, "client", &log)
                }
            })
            .collect();
        Guest {
            tag,
            spec,
            arbiter,
            clients,
            arb,
            lbs,
            operator_before,
            stream_start,
            lan,
            started: Instant::now(),
        }
    }

    /// Starts the arbiter again (after a test stopped it).
    pub fn restart_arbiter(&mut self) {
        let log = env()
            .work
            .join("logs")
            .join(format!("{}-arbiter-2.log", self.tag));
        self.arbiter = daemon(&self.arb, &self.spec.arbiter.dir, "server", &log);
    }

    /// Prints a check that held, with its figure.
    pub fn ok(&self, what: &str) {
        eprintln!(
            "[{} {:6.1}s] ok  {what}",
            self.tag,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// The balancer namespaces with their names.
    pub fn balancers(&self) -> impl Iterator<Item = (&str, &Netns)> {
        LBS.iter().map(|(n, _)| *n).zip(&self.lbs)
    }

    /// Another namespace on this test's LAN with `addr`/24 (a real server, a client).
    pub fn node(&self, tag: &str, addr: &str) -> Netns {
        self.lan.node(tag, addr)
    }

    /// `ipvs-sync ARGS…` with balancer `i`'s config, in its namespace (its control socket,
    /// its `http_listen`), as an operator runs it on that balancer.
    pub fn balancer_cmd(&self, i: usize, args: &[&str]) -> std::process::Output {
        self.lbs[i]
            .command(&env().bin.to_string_lossy())
            .arg("-c")
            .arg(self.spec.balancers[i].dir.join("config.ini"))
            .args(["--log-level", "warn"])
            .args(args)
            .output()
            .unwrap()
    }

    /// `ipvs-sync status --json` of the arbiter, or of balancer `i`, parsed.
    pub fn status_json(&self, balancer: Option<usize>) -> serde_json::Value {
        let (ns, dir) = match balancer {
            Some(i) => (&self.lbs[i], &self.spec.balancers[i].dir),
            None => (&self.arb, &self.spec.arbiter.dir),
        };
        let out = ns
            .command(&env().bin.to_string_lossy())
            .arg("-c")
            .arg(dir.join("config.ini"))
            .args(["--log-level", "warn", "status", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {out:?}"))
    }

    /// `ipvs-sync status` of the arbiter, as an operator reads it.
    pub fn arbiter_status_text(&self) -> String {
        let out = self
            .arb
            .command(&env().bin.to_string_lossy())
            .arg("-c")
            .arg(self.spec.arbiter.dir.join("config.ini"))
            .args(["--log-level", "warn", "status"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `quorum up|down ARG` on the arbiter's config, as keepalived runs it.
    pub fn quorum(&self, dir: &str, arg: &str) -> std::process::Output {
        std::process::Command::new(&env().bin)
            .arg("-c")
            .arg(self.spec.arbiter.dir.join("config.ini"))
            .args(["--log-level", "warn", "quorum", dir, arg])
            .output()
            .unwrap()
    }

    /// Whether the balancer's rules for the mapped VIPs equal the arbiter's.
    pub fn mirrors(&self, lb: &Netns) -> bool {
        let want = only_vips(&rules(&self.arb), &[VIP4, VIP6], false);
        !want.is_empty() && want == only_vips(&rules(lb), &[VIP4, VIP6], false)
    }

    /// Whether every balancer mirrors the arbiter.
    pub fn all_mirror(&self) -> bool {
        self.lbs.iter().all(|lb| self.mirrors(lb))
    }

    /// What differs between the arbiter's and each balancer's mapped rules.
    pub fn mirror_diff(&self) -> String {
        let want = only_vips(&rules(&self.arb), &[VIP4, VIP6], false);
        self.balancers()
            .map(|(n, lb)| {
                let have = only_vips(&rules(lb), &[VIP4, VIP6], false);
                let missing: Vec<_> = want.iter().filter(|r| !have.contains(r)).collect();
                let extra: Vec<_> = have.iter().filter(|r| !want.contains(r)).collect();
                format!("{n}: missing {missing:?}, extra {extra:?}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The paths the router holds for `prefix` (neighbor, next hop, LOCAL_PREF), from the
    /// updates streamed since this test began: the last update per neighbor, withdrawn
    /// ones left out.
    pub fn router_paths(&self, prefix: &str) -> Vec<(String, Option<String>, Option<u32>)> {
        let text = std::fs::read(&env().stream).unwrap_or_default();
        let from = usize::try_from(self.stream_start)
            .unwrap_or(0)
            .min(text.len());
        let mut last: BTreeMap<String, Option<labkit::RibPath>> = BTreeMap::new();
        for line in String::from_utf8_lossy(&text[from..]).lines() {
            let Ok(serde_json::Value::Array(paths)) = serde_json::from_str(line) else {
                continue;
            };
            for p in paths.iter().filter(|p| p["nlri"]["prefix"] == prefix) {
                let path = labkit::rib_path(prefix, p);
                let Some(n) = path.neighbor.clone() else {
                    continue;
                };
                let gone = p["withdrawal"].as_bool().unwrap_or(false);
                last.insert(n, (!gone).then_some(path));
            }
        }
        last.into_values()
            .flatten()
            .map(|p| (p.neighbor.unwrap_or_default(), p.nexthop, p.local_pref))
            .collect()
    }

    /// A balancer's log, colours taken out.
    pub fn client_log(&self, i: usize) -> String {
        log_of(&self.clients[i])
    }

    /// The arbiter's log, colours taken out.
    pub fn arbiter_log(&self) -> String {
        log_of(&self.arbiter)
    }

    /// The checks every test ends with: the operator's rules survived every reconcile,
    /// `ipvs-sync ipvs dump` agrees with `ipvsadm -Sn`, the daemons still run, and no log
    /// has a panic.
    pub fn finish(mut self) {
        for ((name, lb), before) in LBS
            .iter()
            .map(|l| l.0)
            .zip(&self.lbs)
            .zip(&self.operator_before)
        {
            assert!(!before.is_empty());
            assert_eq!(
                &operator_rules(lb),
                before,
                "{name}: the operator's rules changed"
            );
            self.ok(&format!(
                "{name}: operator's services outside the mapping survive every reconcile"
            ));
            assert_dump_agrees(lb, name);
            self.ok(&format!(
                "{name}: 'ipvs-sync ipvs dump' equals 'ipvsadm -Sn' at the end"
            ));
        }
        let mut alive = Vec::new();
        for (name, d) in std::iter::once(("arbiter", &mut self.arbiter))
            .chain(LBS.iter().map(|l| l.0).zip(self.clients.iter_mut()))
        {
            assert_eq!(
                d.exited().unwrap(),
                None,
                "{name} exited:\n{}",
                d.log_tail()
            );
            alive.push(name);
        }
        for name in alive {
            self.ok(&format!("{name} daemon still running"));
        }
        for d in std::iter::once(&self.arbiter).chain(&self.clients) {
            let log = std::fs::read_to_string(d.log_path()).unwrap_or_default();
            assert!(
                !log.contains("panicked") && !log.contains("RUST_BACKTRACE"),
                "a panic in {}",
                d.log_path().display()
            );
        }
        self.ok("no panic in the daemons' logs");
        let _ = &self.lan;
    }
}

/// The configs of this test's daemons: the lab's shared shape, `ipvs = true`, VIPs on a
/// dummy `vip0`, one iBGP session to the host's router.
fn spec(tag: &str, env: &Env) -> LabSpec {
    let dir = Path::new("/tmp/vm-e2e").join(tag);
    let mut config = Ini::new();
    config
        .set("main", "amqp_server", &env.amqp_url)
        .set("main", "ipvs", true)
        .set("main", "heartbeat_interval", 1)
        .set("main", "consumer_alive_ttl", 10);
    let mut arbiter = Ini::new();
    arbiter
        .set("main", "http_listen", "127.0.0.1:9100")
        .set("main", "vips_description_update_interval", 0.2)
        .set("server", "startup_hold", 0);
    let balancers = LBS
        .iter()
        .map(|(name, addr)| {
            let last = addr.rsplit('.').next().unwrap_or_default();
            let mut c = Ini::new();
            c.set("main", "http_listen", "127.0.0.1:9101")
                .set("bgp", "hold_time", 9)
                .set("bgp", "connect_retry", 1)
                .comment(
                    "bgp",
                    "IPv6 VIPs ride the IPv4 session: their next hop must be given.",
                )
                .set("bgp", "next_hop_v6", format!("2001:db8::{last}"))
                .set("announce", "interface", "vip0")
                .set("announce", "drain_min", 1);
            Balancer {
                name: (*name).to_owned(),
                dir: dir.join(name),
                local_as: 65000,
                router_id: addr.parse().unwrap(),
                peers: vec![Peer {
                    name: "r1".into(),
                    address: env.router,
                    remote_as: 65000,
                    md5: None,
                }],
                config: c,
                secret: Ini::new(),
                key: LabKey::generate().unwrap(),
            }
        })
        .collect();
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let rs = [ip("203.0.113.101")];
    let vip = |addr: &str, proto, ports: &[u16]| {
        Vip::new(ip(addr), &["lb1", "lb2"])
            .proto(proto)
            .ports(ports)
            .local_pref(150)
            .real_servers(&rs)
    };
    LabSpec {
        config,
        secret: Ini::new(),
        arbiter: Arbiter {
            desc_dir: dir.join("arb/desc"),
            dir: dir.join("arb"),
            quorum_bin: Some(env.bin.clone()),
            config: arbiter,
            secret: Ini::new(),
            key: LabKey::generate().unwrap(),
        },
        balancers,
        routers: Vec::new(),
        vips: vec![
            vip(VIP4, Proto::Tcp, &[80, 443]),
            vip(VIP4, Proto::Udp, &[53]),
            vip(VIP6, Proto::Tcp, &[443]),
            vip(VIP6, Proto::Udp, &[53]),
            vip(VIP_FWMARK, Proto::Tcp, &[]).fwmark(7),
        ],
    }
}

/// Starts `ipvs-sync -c DIR/config.ini --log-level debug MODE` in `ns`.
fn daemon(ns: &Netns, dir: &Path, mode: &str, log: &Path) -> Daemon {
    let mut cmd = ns.command(&env().bin.to_string_lossy());
    cmd.arg("-c")
        .arg(dir.join("config.ini"))
        .args(["--log-level", "debug", mode]);
    Daemon::spawn(cmd, log).unwrap()
}

/// Starts `ipvs-sync … client` in `ns` without CAP_NET_ADMIN in any of its sets.
fn daemon_without_net_admin(ns: &Netns, dir: &Path, log: &Path) -> Daemon {
    let mut cmd = ns.command("setpriv");
    cmd.args(["--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"])
        .arg(&env().bin)
        .arg("-c")
        .arg(dir.join("config.ini"))
        .args(["--log-level", "debug", "client"]);
    Daemon::spawn(cmd, log).unwrap()
}

/// The guest's LAN: a bridge holding the tap's interface, with a veth per namespace.
/// Dropping it frees the interface and deletes the bridge (the namespaces go first, with
/// their veths).
struct Lan {
    eth: String,
}

const BRIDGE: &str = "e2ebr";

impl Lan {
    fn up(mac: &str) -> Lan {
        let links = run("ip", &["-o", "link"]);
        let eth = links
            .lines()
            .find(|l| l.contains(mac))
            .and_then(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .unwrap_or_else(|| {
                panic!("no interface with MAC {mac}: is the tap attached?\n{links}")
            });
        run("ip", &["link", "add", BRIDGE, "type", "bridge"]);
        let lan = Lan { eth };
        run("ip", &["link", "set", &lan.eth, "master", BRIDGE]);
        run("ip", &["addr", "add", "192.0.2.2/24", "dev", BRIDGE]);
        run("ip", &["link", "set", &lan.eth, "up"]);
        run("ip", &["link", "set", BRIDGE, "up"]);
        lan
    }

    /// A namespace on the LAN with `addr`/24.
    fn node(&self, tag: &str, addr: &str) -> Netns {
        let ns = Netns::new(tag).unwrap();
        let port = format!("v-{tag}");
        run(
            "ip",
            &[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ],
        );
        run("ip", &["link", "set", &port, "master", BRIDGE, "up"]);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])
            .unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
        if let Some(net) = &env().cluster_net {
            ns.ip(&["route", "add", net, "via", "192.0.2.1"]).unwrap();
        }
        ns
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "set", &self.eth, "nomaster"])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", BRIDGE])
            .status();
    }
}

/// A daemon's log so far, colours taken out.
fn log_of(d: &Daemon) -> String {
    labkit::strip_ansi(&std::fs::read_to_string(d.log_path()).unwrap_or_default())
}

/// Runs a program to completion and returns its stdout; panics with its stderr.
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(prog)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a TCP connection from inside `ns` to `addr` succeeds.
fn reaches(ns: &Netns, addr: &str) -> bool {
    let name = ns.name().to_owned();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    std::thread::spawn(move || {
        Netns::attach(&name).and_then(|ns| ns.enter()).is_ok()
            && std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok()
    })
    .join()
    .unwrap_or(false)
}

/// `ipvsadm -R` in `ns` with `rules` on stdin.
pub fn ipvsadm_restore(ns: &Netns, rules: &str) {
    ns.run_with_input("ipvsadm", &["-R"], rules)
        .unwrap_or_else(|e| panic!("{e}\n{rules}"));
}

/// `ipvsadm -Sn` in `ns`, one rule a line.
pub fn rules(ns: &Netns) -> Vec<String> {
    ns.run("ipvsadm", &["-Sn"])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The rules of address services of `vips` (and fwmark services when `fwmark`), sorted.
pub fn only_vips(rules: &[String], vips: &[&str], fwmark: bool) -> Vec<String> {
    let mut out: Vec<String> = rules
        .iter()
        .filter(|r| {
            let f: Vec<&str> = r.split_whitespace().collect();
            match (f.get(1), f.get(2)) {
                (Some(&"-f"), _) => fwmark,
                (Some(_), Some(svc)) => vips.contains(&service_addr(svc)),
                _ => false,
            }
        })
        .cloned()
        .collect();
    out.sort();
    out
}

/// The address of `ADDR:PORT` or `[V6]:PORT`.
fn service_addr(svc: &str) -> &str {
    match svc.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => svc.rsplit_once(':').map_or(svc, |(a, _)| a),
    }
}

/// The operator's rules on a balancer: those of the operator's VIP and fwmark 9.
pub fn operator_rules(ns: &Netns) -> Vec<String> {
    let mut out: Vec<String> = rules(ns)
        .into_iter()
        .filter(|r| {
            let f: Vec<&str> = r.split_whitespace().collect();
            match (f.get(1), f.get(2)) {
                (Some(&"-f"), Some(&"9")) => true,
                (Some(_), Some(svc)) => service_addr(svc) == OPERATOR_VIP,
                _ => false,
            }
        })
        .collect();
    out.sort();
    out
}

/// `ipvs-sync ipvs dump` and `ipvsadm -Sn` print the same rules in `ns`.
pub fn assert_dump_agrees(ns: &Netns, name: &str) {
    let mut a = rules(ns);
    let out = ns
        .run(&env().bin.to_string_lossy(), &["ipvs", "dump"])
        .unwrap();
    let mut b: Vec<String> = out.lines().map(str::to_owned).collect();
    a.sort();
    b.sort();
    assert!(!a.is_empty(), "{name}: no rules at all");
    assert_eq!(
        a, b,
        "{name}: ipvsadm -Sn (left) and ipvs-sync ipvs dump (right)"
    );
}

/// Whether `cidr` is on `vip0` in `ns`.
pub fn has_vip(ns: &Netns, cidr: &str) -> bool {
    ns.ip(&["-br", "addr", "show", "dev", "vip0"])
        .is_ok_and(|out| out.split_whitespace().any(|w| w == cidr))
}

/// Whether `vip0` in `ns` is a dummy interface.
pub fn is_dummy(ns: &Netns) -> bool {
    ns.ip(&["-d", "link", "show", "vip0"])
        .is_ok_and(|out| out.split_whitespace().any(|w| w == "dummy"))
}
