//! A small fleet in network namespaces, for the end-to-end tests and the convergence bench:
//! RabbitMQ and the arbiter in `core`, balancers `lbK` each with a BGP session to every
//! router `rJ` (gobgpd), all real processes of the real binary.
//!
//! ```text
//!            core (rabbitmq 192.0.2.1…, ipvs-sync server, quorum)
//!          /   |   \            one veth per balancer: 192.0.2.4K/30
//!       lb1   lb2   lb3         ipvs-sync client (ipvs = false on the host kernel)
//!        | \ / | \ / |          one veth per (balancer, router): 198.51.100.0/24 /30s
//!        r1 (iBGP AS 65000)   r2 (eBGP AS 65001)      gobgpd, passive
//! ```
//! VIPs come from 203.0.113.0/24 and 2001:db8:f00::/48. IPv6 VIPs ride a separate IPv6
//! session per (balancer, router) over 2001:db8:K:J::/64.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipvs_sync::wire::NodeKey;
use labkit::{Daemon, GobgpConfig, GobgpFamily, GobgpNeighbor, Gobgpd, Netns, Rabbit};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipvs-sync"))
}

pub const LOCAL_AS: u32 = 65000;
pub const EBGP_AS: u32 = 65001;

/// A router of the fleet.
pub struct Router {
    pub ns: Netns,
    pub gobgpd: Gobgpd,
    pub asn: u32,
}

/// A balancer of the fleet.
pub struct Balancer {
    pub name: String,
    pub ns: Netns,
    pub dir: PathBuf,
    pub daemon: Option<Daemon>,
    pub http: u16,
    /// Its address towards router j.
    pub addr_to: Vec<String>,
}

/// Options.
pub struct FleetOpts {
    pub balancers: usize,
    /// ASNs of the routers: LOCAL_AS = iBGP, anything else eBGP.
    pub routers: Vec<u32>,
    /// VIPs per balancer index (all balancers when empty).
    pub vips: Vec<IpAddr>,
    /// BGP hold time of the balancers' sessions.
    pub hold_time: u16,
    /// Ports of each VIP in the keepalived configs.
    pub ports: Vec<u16>,
    /// Start every balancer's client in [`Fleet::start`] and wait for its sessions; when
    /// false the caller starts them ([`Fleet::start_client`]), e.g. to time a cold start.
    pub start_clients: bool,
    /// Before the arbiter starts, write a desc file saying announce (every port up) with
    /// this LOCAL_PREF for every VIP, as the quorum handler would have left them.
    pub desc_announce: Option<u32>,
    /// Directory of the desc files (`vip_description_filepath`); default `desc/` in the
    /// arbiter's scratch directory. Production keeps them in /var/run, often a tmpfs.
    pub desc_dir: Option<PathBuf>,
    /// `--log-level` of the arbiter and the clients.
    pub log_level: &'static str,
    /// `[messages] max_age` of every daemon, seconds (default: the config's default).
    pub max_age: Option<u64>,
    /// `[announce] firewall_check` of the balancers: an absolute program path.
    pub firewall_check: Option<PathBuf>,
    /// `[server] startup_hold` of the arbiter, seconds (0: answer balancers at once).
    pub startup_hold: f64,
    /// `[main] consumer_alive_ttl` of every daemon, seconds: how long a stopped balancer
    /// counts as alive.
    pub consumer_alive_ttl: u64,
    /// AMQP heartbeat of every daemon's connection, seconds (default: the daemons' own).
    pub amqp_heartbeat: Option<u16>,
    /// The routers act as graceful-restart helpers (RFC 4724) for every balancer session.
    pub router_graceful_restart: bool,
    /// Lines added to the balancers' `[bgp]` section.
    pub client_bgp: String,
    /// Lines added to the balancers' `[announce]` section.
    pub client_announce: String,
}

impl Default for FleetOpts {
    fn default() -> Self {
        FleetOpts {
            balancers: 1,
            routers: vec![LOCAL_AS],
            vips: vec!["203.0.113.10".parse().unwrap()],
            hold_time: 9,
            ports: vec![80],
            start_clients: true,
            desc_announce: None,
            desc_dir: None,
            log_level: "debug",
            max_age: None,
            firewall_check: None,
            startup_hold: 0.0,
            consumer_alive_ttl: 5,
            amqp_heartbeat: None,
            router_graceful_restart: false,
            client_bgp: String::new(),
            client_announce: String::new(),
        }
    }
}

pub struct Fleet {
    pub core: Netns,
    pub rabbit: Rabbit,
    pub arbiter: Option<Daemon>,
    pub arbiter_dir: PathBuf,
    pub routers: Vec<Router>,
    pub balancers: Vec<Balancer>,
    pub opts: FleetOpts,
    pub scratch: tempfile::TempDir,
    /// Every node's key (`node_key`), by name (`arbiter`, `lbK`).
    pub keys: std::collections::BTreeMap<String, NodeKey>,
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn write_secret(dir: &Path, key: &NodeKey) {
    let p = dir.join("secret.ini");
    write(&p, &format!("[secret]\nnode_key = {}\n", key.to_text()));
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
}

fn host(vip: &IpAddr) -> String {
    match vip {
        IpAddr::V4(_) => format!("{vip}/32"),
        IpAddr::V6(_) => format!("{vip}/128"),
    }
}

impl Fleet {
    /// Builds the namespaces, starts the broker and the routers, writes every config, and
    /// starts the arbiter and the balancers. Returns once every BGP session is Established.
    pub fn start(opts: FleetOpts) -> Fleet {
        let scratch = labkit::scratch_dir("fleet").unwrap();
        let core = Netns::new("core").unwrap();
        let mut routers = Vec::new();
        for (j, asn) in opts.routers.iter().enumerate() {
            routers.push((Netns::new(&format!("r{}", j + 1)).unwrap(), *asn));
        }
        let mut balancers = Vec::new();
        for k in 1..=opts.balancers {
            let ns = Netns::new(&format!("lb{k}")).unwrap();
            let core_ip = format!("192.0.2.{}/30", 4 * k + 1);
            let lb_ip = format!("192.0.2.{}/30", 4 * k + 2);
            labkit::veth(&core, &[&core_ip], &ns, &[&lb_ip]).unwrap();
            let mut addr_to = Vec::new();
            for (j, (rns, _)) in routers.iter().enumerate() {
                let base = 4 * (k * 8 + j);
                let lb4 = format!("198.51.100.{}/30", base + 1);
                let r4 = format!("198.51.100.{}/30", base + 2);
                let lb6 = format!("2001:db8:{k}:{}::1/64", j + 1);
                let r6 = format!("2001:db8:{k}:{}::2/64", j + 1);
                labkit::veth(&ns, &[&lb4, &lb6], rns, &[&r4, &r6]).unwrap();
                addr_to.push(format!("198.51.100.{}", base + 1));
            }
            balancers.push((k, ns, addr_to));
        }
        // The balancers reach the broker through core: a route to 192.0.2.0/24.
        for (k, ns, _) in &balancers {
            ns.ip(&[
                "route",
                "add",
                "192.0.2.0/24",
                "via",
                &format!("192.0.2.{}", 4 * k + 1),
            ])
            .ok();
        }
        let rabbit = Rabbit::start(&core, "192.0.2.5:5672").unwrap();

        let mut started_routers = Vec::new();
        for (j, (rns, asn)) in routers.into_iter().enumerate() {
            let rid = format!("198.51.100.{}", 4 * (8 + j) + 2).parse().unwrap();
            let mut cfg = GobgpConfig::new(asn, rid);
            for (k, _, _) in &balancers {
                let base = 4 * (k * 8 + j);
                let lb4: IpAddr = format!("198.51.100.{}", base + 1).parse().unwrap();
                let lb6: IpAddr = format!("2001:db8:{k}:{}::1", j + 1).parse().unwrap();
                cfg = cfg
                    .neighbor(
                        GobgpNeighbor::new(lb4, LOCAL_AS)
                            .passive(true)
                            .hold_time(opts.hold_time.into())
                            .families(&[GobgpFamily::Ipv4Unicast]),
                    )
                    .neighbor(
                        GobgpNeighbor::new(lb6, LOCAL_AS)
                            .passive(true)
                            .hold_time(opts.hold_time.into())
                            .families(&[GobgpFamily::Ipv6Unicast]),
                    );
            }
            let mut toml = cfg.to_toml();
            if opts.router_graceful_restart {
                // Helper for each neighbor (one family each): the keys attach to the
                // [[neighbors]] and [[neighbors.afi-safis]] tables written last.
                toml = toml.replace(
                    "  [[neighbors.afi-safis]]",
                    "  [neighbors.graceful-restart.config]\n    enabled = true\n    helper-only = true\n  [[neighbors.afi-safis]]",
                );
                for fam in ["ipv4-unicast", "ipv6-unicast"] {
                    toml = toml.replace(
                        &format!("      afi-safi-name = \"{fam}\""),
                        &format!("      afi-safi-name = \"{fam}\"\n    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true"),
                    );
                }
            }
            let gobgpd = Gobgpd::start(&rns, &toml).unwrap();
            started_routers.push(Router {
                ns: rns,
                gobgpd,
                asn,
            });
        }

        let arbiter_dir = scratch.path().join("arbiter");
        let mut fleet = Fleet {
            core,
            rabbit,
            arbiter: None,
            arbiter_dir,
            routers: started_routers,
            balancers: Vec::new(),
            opts,
            scratch,
            keys: std::iter::once("arbiter".to_owned())
                .chain(balancers.iter().map(|(k, _, _)| format!("lb{k}")))
                .map(|n| (n, NodeKey::generate().unwrap()))
                .collect(),
        };
        fleet.write_arbiter_config(
            &balancers
                .iter()
                .map(|(k, _, _)| format!("lb{k}"))
                .collect::<Vec<_>>(),
        );
        fleet.start_arbiter();
        for (k, ns, addr_to) in balancers {
            let name = format!("lb{k}");
            let dir = fleet.scratch.path().join(&name);
            let http = 9100 + k as u16;
            let b = Balancer {
                name,
                ns,
                dir,
                daemon: None,
                http,
                addr_to,
            };
            fleet.write_client_config(&b, k);
            fleet.balancers.push(b);
            if fleet.opts.start_clients {
                fleet.start_client(k - 1);
            }
        }
        if fleet.opts.start_clients {
            for k in 0..fleet.balancers.len() {
                fleet.wait_sessions(k, Duration::from_secs(30));
            }
        }
        fleet
    }

    /// Writes balancer `name`'s keepalived config on the arbiter: `vips` on `ports`.
    /// The arbiter rebuilds its mapping from these every `mapping_update_interval` and on
    /// SIGHUP.
    pub fn write_keepalived_conf(&self, name: &str, vips: &[IpAddr], ports: &[u16]) {
        let mut conf = String::from("! generated for the lab\n");
        for vip in vips {
            for port in ports {
                conf.push_str(&format!(
                    "virtual_server {vip} {port} {{\n    lb_algo wrr\n    lb_kind DR\n    protocol TCP\n    real_server 192.0.2.200 {port} {{\n        weight 1\n    }}\n}}\n"
                ));
            }
        }
        write(
            &self.arbiter_dir.join(format!("lbs/{name}/web/vips.conf")),
            &conf,
        );
    }

    fn write_arbiter_config(&self, names: &[String]) {
        let d = &self.arbiter_dir;
        for name in names {
            self.write_keepalived_conf(name, &self.opts.vips, &self.opts.ports);
            let public = self.keys[name].public();
            write(
                &d.join(format!("balancers/{name}.pub")),
                &format!("{public}\n"),
            );
        }
        let text = format!(
            "[main]\namqp_server = {amqp}\nhostname = arbiter\nipvs = false\n\
             http_listen = 127.0.0.1:9100\ncontrol_socket = {d}/control.sock\n\
             service_mapping_wildcard = {d}/lbs/*/*/*.conf\nservice_mapping_config = {d}/svc_mapping.json\n\
             vip_description_filepath = {desc}/keepalived-{{vip}}-desc.json\n\
             heartbeat_interval = 1\nconsumer_alive_ttl = {ttl}\nstate_dir = {d}/state\n\
             [server]\nquorum_socket = {d}/quorum.sock\nstartup_hold = {hold}\n\
             balancer_keys_dir = {d}/balancers\n{messages}",
            amqp = self.amqp_url(),
            d = d.display(),
            desc = self.desc_dir().display(),
            messages = self.messages_section(),
            hold = self.opts.startup_hold,
            ttl = self.opts.consumer_alive_ttl,
        );
        write(&d.join("config.ini"), &text);
        fs::create_dir_all(self.desc_dir()).unwrap();
        if let Some(lp) = self.opts.desc_announce {
            self.write_desc_announce(&self.opts.vips, lp);
        }
        write_secret(d, &self.keys["arbiter"]);
    }

    /// Desc files saying announce (every port of [`FleetOpts::ports`] up, LOCAL_PREF `lp`)
    /// for `vips`, in the format `ipvs-sync quorum` writes.
    pub fn write_desc_announce(&self, vips: &[IpAddr], lp: u32) {
        let n = self.opts.ports.len();
        let ports = self
            .opts
            .ports
            .iter()
            .map(|p| format!("\"{p}\": \"up\""))
            .collect::<Vec<_>>()
            .join(", ");
        for vip in vips {
            let desc = format!(
                "{{\"active\": {n}, \"total\": {n}, \"announce\": true, \"local-preference\": {lp}, \"ports\": {{{ports}}}}}\n"
            );
            write(&self.desc_path(vip), &desc);
        }
    }

    /// The desc file of `vip` (`vip_description_filepath` of the arbiter's config).
    pub fn desc_path(&self, vip: &IpAddr) -> PathBuf {
        self.desc_dir().join(format!("keepalived-{vip}-desc.json"))
    }

    /// The directory of the desc files ([`FleetOpts::desc_dir`]).
    pub fn desc_dir(&self) -> PathBuf {
        self.opts
            .desc_dir
            .clone()
            .unwrap_or_else(|| self.arbiter_dir.join("desc"))
    }

    /// The daemons' `amqp_server`; `?heartbeat=N` when the options set one.
    pub fn amqp_url(&self) -> String {
        let url = format!(
            "amqp://{}:{}@192.0.2.5:5672/%2f",
            self.rabbit.user(),
            self.rabbit.pass()
        );
        match self.opts.amqp_heartbeat {
            Some(s) => format!("{url}?heartbeat={s}"),
            None => url,
        }
    }

    fn messages_section(&self) -> String {
        match self.opts.max_age {
            Some(s) => format!("[messages]\nmax_age = {s}\n"),
            None => String::new(),
        }
    }

    fn write_client_config(&self, b: &Balancer, k: usize) {
        let mut peers = String::new();
        for (j, r) in self.routers.iter().enumerate() {
            let base = 4 * (k * 8 + j);
            peers.push_str(&format!(
                "[bgp.peer.r{n}]\naddress = 198.51.100.{a}\nremote_as = {asn}\n\n[bgp.peer.r{n}v6]\naddress = 2001:db8:{k}:{n}::2\nremote_as = {asn}\n\n",
                n = j + 1,
                a = base + 2,
                asn = r.asn
            ));
        }
        let text = format!(
            "[main]\namqp_server = {amqp}\nhostname = {name}\nipvs = false\n\
             http_listen = 127.0.0.1:{http}\nheartbeat_interval = 1\nconsumer_alive_ttl = {ttl}\n\
             arbiter_name = arbiter\narbiter_public_key = {arbiter_key}\nstate_dir = {state}\n\
             control_socket = {dir}/control.sock\n\
             [bgp]\nlocal_as = {LOCAL_AS}\nrouter_id = 192.0.2.{rid}\nhold_time = {hold}\nconnect_retry = 1\n\
             communities = 65000:100\n{client_bgp}\n{peers}[announce]\ninterface = lo\n{firewall}{client_announce}\n[client]\nsync_dirs = {sync}\n{messages}",
            amqp = self.amqp_url(),
            name = b.name,
            dir = b.dir.display(),
            http = b.http,
            rid = 4 * k + 2,
            hold = self.opts.hold_time,
            sync = b.dir.join("sync").display(),
            firewall = match &self.opts.firewall_check {
                Some(p) => format!("firewall_check = {}\n", p.display()),
                None => String::new(),
            },
            messages = self.messages_section(),
            ttl = self.opts.consumer_alive_ttl,
            arbiter_key = self.keys["arbiter"].public(),
            state = b.dir.join("state").display(),
            client_bgp = self.opts.client_bgp,
            client_announce = self.opts.client_announce,
        );
        fs::create_dir_all(b.dir.join("sync")).unwrap();
        write(&b.dir.join("config.ini"), &text);
        write_secret(&b.dir, &self.keys[&b.name]);
    }

    /// Sets `[server] startup_hold` (seconds) for the arbiter's next start.
    pub fn set_startup_hold(&mut self, secs: f64) {
        let p = self.arbiter_dir.join("config.ini");
        let text = fs::read_to_string(&p).unwrap();
        let old = format!("startup_hold = {}\n", self.opts.startup_hold);
        assert!(text.contains(&old), "{text}");
        write(&p, &text.replace(&old, &format!("startup_hold = {secs}\n")));
        self.opts.startup_hold = secs;
    }

    /// Messages ready (not yet delivered) and delivered but unacknowledged in balancer
    /// `i`'s queue, per `rabbitmqctl list_queues`.
    pub fn client_queue(&self, i: usize) -> (u64, u64) {
        let name = format!("ipvs-sync.{}", self.balancers[i].name);
        let out = self
            .rabbit
            .ctl(&[
                "list_queues",
                "-q",
                "name",
                "messages_ready",
                "messages_unacknowledged",
            ])
            .unwrap();
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name.as_str()))
            .and_then(|f| Some((f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?)))
            .unwrap_or_else(|| panic!("no queue {name} in:\n{out}"))
    }

    pub fn start_arbiter(&mut self) {
        let mut cmd = self.core.command(bin().to_str().unwrap());
        cmd.args([
            "-c",
            self.arbiter_dir.join("config.ini").to_str().unwrap(),
            "--log-level",
            self.opts.log_level,
            "server",
        ]);
        let d = Daemon::spawn(cmd, &self.arbiter_dir.join("server.log")).unwrap();
        self.arbiter = Some(d);
        let ok = labkit::wait_until(Duration::from_secs(20), || {
            self.arbiter_dir.join("quorum.sock").exists()
        });
        assert!(
            ok,
            "arbiter did not start:\n{}",
            self.arbiter.as_ref().unwrap().log_tail()
        );
    }

    pub fn start_client(&mut self, i: usize) {
        let b = &mut self.balancers[i];
        let mut cmd = b.ns.command(bin().to_str().unwrap());
        cmd.args([
            "-c",
            b.dir.join("config.ini").to_str().unwrap(),
            "--log-level",
            self.opts.log_level,
            "client",
        ]);
        b.daemon = Some(Daemon::spawn(cmd, &b.dir.join("client.log")).unwrap());
    }

    /// Waits until every router has every session of balancer `i` Established.
    pub fn wait_sessions(&self, i: usize, timeout: Duration) {
        let k = i + 1;
        for (j, r) in self.routers.iter().enumerate() {
            let v4 = &self.balancers[i].addr_to[j];
            let v6 = format!("2001:db8:{k}:{}::1", j + 1);
            for a in [v4.as_str(), v6.as_str()] {
                assert!(
                    r.gobgpd.wait_established(a, timeout),
                    "session {a} to r{} not established; client log:\n{}",
                    j + 1,
                    self.client_log(i)
                );
            }
        }
    }

    pub fn client_log(&self, i: usize) -> String {
        fs::read_to_string(self.balancers[i].dir.join("client.log")).unwrap_or_default()
    }

    pub fn arbiter_log(&self) -> String {
        fs::read_to_string(self.arbiter_dir.join("server.log")).unwrap_or_default()
    }

    /// `ipvs-sync quorum up|down ARG` on the arbiter; returns its wall time.
    pub fn quorum(&self, dir: &str, arg: &str) -> Duration {
        let t = Instant::now();
        let out = self
            .core
            .command(bin().to_str().unwrap())
            .args([
                "-c",
                self.arbiter_dir.join("config.ini").to_str().unwrap(),
                "--log-level",
                "warn",
                "quorum",
                dir,
                arg,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "quorum {dir} {arg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    }

    /// Routes router `j` holds for `vip`: (next hop, attributes JSON) per path.
    pub fn paths(&self, j: usize, vip: &IpAddr) -> Vec<serde_json::Value> {
        let fam = if vip.is_ipv4() { "ipv4" } else { "ipv6" };
        let Ok(rib) = self.routers[j].gobgpd.rib(fam) else {
            return Vec::new();
        };
        rib.get(host(vip))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Number of paths router `j` has for `vip`.
    pub fn path_count(&self, j: usize, vip: &IpAddr) -> usize {
        self.paths(j, vip).len()
    }

    /// Polls (every 5 ms) until router `j` has `n` paths for `vip`; the time it took.
    pub fn wait_paths(
        &self,
        j: usize,
        vip: &IpAddr,
        n: usize,
        timeout: Duration,
    ) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if self.path_count(j, vip) == n {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// An attribute of the first path router `j` has for `vip`, by BGP type code.
    pub fn attr(&self, j: usize, vip: &IpAddr, code: u64) -> Option<serde_json::Value> {
        let paths = self.paths(j, vip);
        let attrs = paths.first()?.get("attrs")?.as_array()?.clone();
        attrs
            .into_iter()
            .find(|a| a.get("type").and_then(|t| t.as_u64()) == Some(code))
    }

    pub fn signal_client(&mut self, i: usize, sig: nix::sys::signal::Signal) {
        if let Some(d) = self.balancers[i].daemon.as_mut() {
            d.signal(sig).unwrap();
        }
    }

    pub fn stop_client(&mut self, i: usize) {
        if let Some(mut d) = self.balancers[i].daemon.take() {
            let _ = d.stop();
        }
    }

    pub fn signal_arbiter(&mut self, sig: nix::sys::signal::Signal) {
        if let Some(d) = self.arbiter.as_mut() {
            d.signal(sig).unwrap();
        }
    }

    pub fn stop_arbiter(&mut self) {
        if let Some(mut d) = self.arbiter.take() {
            let _ = d.stop();
        }
    }

    /// `/status` of balancer `i` (JSON).
    pub fn client_status(&self, i: usize) -> serde_json::Value {
        let out = self.balancers[i]
            .ns
            .command(bin().to_str().unwrap())
            .args([
                "-c",
                self.balancers[i].dir.join("config.ini").to_str().unwrap(),
                "status",
                "--json",
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Addresses on `lo` of balancer `i`.
    pub fn lo_addrs(&self, i: usize) -> String {
        self.balancers[i]
            .ns
            .ip(&["-br", "addr", "show", "dev", "lo"])
            .unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for b in &mut self.balancers {
            if let Some(mut d) = b.daemon.take() {
                let _ = d.stop();
            }
        }
        self.stop_arbiter();
    }
}

/// p50 and p99 of durations, in milliseconds.
pub fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    (at(0.50), at(0.99))
}

/// Runs `ip netns exec NS CMD…` and returns stdout (for ad-hoc checks).
pub fn sh(ns: &Netns, cmd: &[&str]) -> String {
    let out: std::process::Output = ns.command(cmd[0]).args(&cmd[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A change of a router's best path, as `gobgp monitor global rib -j` streams it.
#[derive(Debug, Clone)]
pub struct RibEvent {
    /// When the reader thread read the line.
    pub at: Instant,
    /// The prefix, e.g. `203.0.113.10/32`.
    pub prefix: String,
    /// True for a withdraw (the router lost its best path).
    pub withdrawal: bool,
    /// LOCAL_PREF of the path, if it carries one.
    pub local_pref: Option<u64>,
}

/// A long-running `gobgp monitor global rib -j -a FAMILY` against one router. A reader
/// thread timestamps each line as it arrives and sends its paths as [`RibEvent`]s, so
/// observing the router costs no process start per look (a `gobgp` call costs ~20 ms).
/// Dropping it kills the CLI process (by pid) and joins the reader.
pub struct RibMonitor {
    child: std::process::Child,
    events: std::sync::mpsc::Receiver<RibEvent>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl RibMonitor {
    /// Starts the stream against `api` and returns once it is live: a sentinel route
    /// (`sentinel`, a host prefix no test uses) is added to the router's global RIB,
    /// seen on the stream, deleted and seen withdrawn.
    pub fn start(api: &labkit::GobgpApi, family: &str, sentinel: &str) -> RibMonitor {
        use std::io::BufRead;
        let mut child = std::process::Command::new("gobgp")
            .args(["--target", api.target(), "monitor", "global", "rib", "-j"])
            .args(["-a", family])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let at = Instant::now();
                let Ok(line) = line else { break };
                let Ok(serde_json::Value::Array(paths)) = serde_json::from_str(&line) else {
                    continue;
                };
                for p in paths {
                    let ev = RibEvent {
                        at,
                        prefix: p["nlri"]["prefix"].as_str().unwrap_or_default().to_owned(),
                        withdrawal: p["withdrawal"].as_bool().unwrap_or(false),
                        local_pref: p["attrs"].as_array().and_then(|a| {
                            a.iter()
                                .find(|x| x["type"].as_u64() == Some(5))
                                .and_then(|x| x["value"].as_u64())
                        }),
                    };
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            }
        });
        let m = RibMonitor {
            child,
            events,
            reader: Some(reader),
        };
        let fam = if family == "ipv6" { "ipv6" } else { "ipv4" };
        // The stream may connect after a first add: repeat until one shows up.
        let mut live = false;
        for _ in 0..20 {
            api.cli(&["global", "rib", "add", sentinel, "-a", fam])
                .unwrap();
            if m.wait(sentinel, false, Duration::from_millis(500))
                .is_some()
            {
                live = true;
                break;
            }
            api.cli(&["global", "rib", "del", sentinel, "-a", fam])
                .unwrap();
        }
        assert!(
            live,
            "gobgp monitor on {} never showed {sentinel}",
            api.target()
        );
        api.cli(&["global", "rib", "del", sentinel, "-a", fam])
            .unwrap();
        assert!(
            m.wait(sentinel, true, Duration::from_secs(5)).is_some(),
            "sentinel {sentinel} not withdrawn on the stream"
        );
        m
    }

    /// Throws away every event received so far.
    pub fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// The next event for `prefix` with the given `withdrawal` flag, skipping others,
    /// or `None` after `timeout`.
    pub fn wait(&self, prefix: &str, withdrawal: bool, timeout: Duration) -> Option<RibEvent> {
        self.wait_for(timeout, |ev| {
            ev.prefix == prefix && ev.withdrawal == withdrawal
        })
    }

    /// The next event that satisfies `pred`, skipping others, or `None` after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&RibEvent) -> bool,
    ) -> Option<RibEvent> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.events.recv_timeout(left) {
                Ok(ev) if pred(&ev) => return Some(ev),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Every event that arrives within `window` (for counting a bulk of routes).
    pub fn collect(&self, window: Duration) -> Vec<RibEvent> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(ev) => out.push(ev),
                Err(_) => break,
            }
        }
        out
    }

    /// The CLI process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RibMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Fleet {
    /// A [`RibMonitor`] on router `j` for `family` ("ipv4"/"ipv6"); the sentinel is
    /// 192.0.2.254/32 or 2001:db8:ffff::fe/128, which no fleet address uses.
    pub fn monitor(&self, j: usize, family: &str) -> RibMonitor {
        let sentinel = if family == "ipv6" {
            "2001:db8:ffff::fe/128"
        } else {
            "192.0.2.254/32"
        };
        RibMonitor::start(&self.routers[j].gobgpd.api(), family, sentinel)
    }

    /// `ipvs-sync quorum DIR ARG` on the arbiter's config, as a command to spawn. It runs
    /// in the caller's namespace: the hand-off to the arbiter is a unix socket path, so
    /// no `ip netns exec` (and its cost) is needed.
    pub fn quorum_command(&self, dir: &str, arg: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("-c")
            .arg(self.arbiter_dir.join("config.ini"))
            .args(["--log-level", "warn", "quorum", dir, arg])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        cmd
    }

    /// Pid of the arbiter daemon, if it runs.
    pub fn arbiter_pid(&self) -> Option<u32> {
        self.arbiter.as_ref().map(|d| d.pid())
    }

    /// Pid of balancer `i`'s client daemon, if it runs.
    pub fn client_pid(&self, i: usize) -> Option<u32> {
        self.balancers[i].daemon.as_ref().map(|d| d.pid())
    }
}

/// `GET path` against `127.0.0.1:port` inside `ns` (from a thread that enters it); the
/// body, or an empty string when nothing answers.
pub fn http_get_in(ns: &Netns, port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let name = ns.name().to_owned();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let ns = Netns::attach(&name).ok()?;
        ns.enter().ok()?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(
            text.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default(),
        )
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or_default()
}

impl Fleet {
    /// The Prometheus `/metrics` page of balancer `i`.
    pub fn client_metrics(&self, i: usize) -> String {
        http_get_in(&self.balancers[i].ns, self.balancers[i].http, "/metrics")
    }

    /// The Prometheus `/metrics` page of the arbiter.
    pub fn arbiter_metrics(&self) -> String {
        http_get_in(&self.core, 9100, "/metrics")
    }
}

/// The values of a metric by one label, from a Prometheus text page:
/// `name{label="v"} 12` → `[("v", 12.0)]`.
pub fn metric_by(page: &str, name: &str, label: &str) -> Vec<(String, f64)> {
    let key = format!("{label}=\"");
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| {
            let at = l.find(&key)? + key.len();
            let v = &l[at..];
            let v = &v[..v.find('"')?];
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((v.to_owned(), n))
        })
        .collect()
}
