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

use labkit::{Daemon, GobgpConfig, GobgpFamily, GobgpNeighbor, Gobgpd, Netns, Rabbit};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipvs-sync"))
}

/// 64 hex chars: the shared HMAC key of the fleet.
pub const KEY: &str = "6c61622d6b65792d6f662d7468652d666c6565742d33322d62797465732d2121";
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
}

impl Default for FleetOpts {
    fn default() -> Self {
        FleetOpts {
            balancers: 1,
            routers: vec![LOCAL_AS],
            vips: vec!["203.0.113.10".parse().unwrap()],
            hold_time: 9,
            ports: vec![80],
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
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn write_secret(dir: &Path, extra: &str) {
    let p = dir.join("secret.ini");
    write(&p, &format!("[secret]\nmessage_key = {KEY}\n{extra}"));
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
            let gobgpd = Gobgpd::start(&rns, &cfg.to_toml()).unwrap();
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
            fleet.start_client(k - 1);
        }
        for k in 0..fleet.balancers.len() {
            fleet.wait_sessions(k, Duration::from_secs(30));
        }
        fleet
    }

    fn write_arbiter_config(&self, names: &[String]) {
        let d = &self.arbiter_dir;
        for name in names {
            let mut conf = String::from("! generated for the lab\n");
            for vip in &self.opts.vips {
                for port in &self.opts.ports {
                    conf.push_str(&format!(
                        "virtual_server {vip} {port} {{\n    lb_algo wrr\n    lb_kind DR\n    protocol TCP\n    real_server 192.0.2.200 {port} {{\n        weight 1\n    }}\n}}\n"
                    ));
                }
            }
            write(&d.join(format!("lbs/{name}/web/vips.conf")), &conf);
        }
        let text = format!(
            "[main]\namqp_server = amqp://{user}:{pass}@192.0.2.5:5672/%2f\nhostname = arbiter\nipvs = false\n\
             http_listen = 127.0.0.1:9100\n\
             service_mapping_wildcard = {d}/lbs/*/*/*.conf\nservice_mapping_config = {d}/svc_mapping.json\n\
             vip_description_filepath = {d}/desc/keepalived-{{vip}}-desc.json\n\
             heartbeat_interval = 1\nconsumer_alive_ttl = 5\n\
             [server]\nquorum_socket = {d}/quorum.sock\n",
            user = self.rabbit.user(),
            pass = self.rabbit.pass(),
            d = d.display()
        );
        write(&d.join("config.ini"), &text);
        fs::create_dir_all(d.join("desc")).unwrap();
        write_secret(d, "");
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
            "[main]\namqp_server = amqp://{user}:{pass}@192.0.2.5:5672/%2f\nhostname = {name}\nipvs = false\n\
             http_listen = 127.0.0.1:{http}\nheartbeat_interval = 1\nconsumer_alive_ttl = 5\n\
             [bgp]\nlocal_as = {LOCAL_AS}\nrouter_id = 192.0.2.{rid}\nhold_time = {hold}\nconnect_retry = 1\n\
             communities = 65000:100\n\n{peers}[announce]\ninterface = lo\n\n[client]\nsync_dirs = {sync}\n",
            user = self.rabbit.user(),
            pass = self.rabbit.pass(),
            name = b.name,
            http = b.http,
            rid = 4 * k + 2,
            hold = self.opts.hold_time,
            sync = b.dir.join("sync").display(),
        );
        fs::create_dir_all(b.dir.join("sync")).unwrap();
        write(&b.dir.join("config.ini"), &text);
        write_secret(&b.dir, "");
    }

    pub fn start_arbiter(&mut self) {
        let mut cmd = self.core.command(bin().to_str().unwrap());
        cmd.args([
            "-c",
            self.arbiter_dir.join("config.ini").to_str().unwrap(),
            "--log-level",
            "debug",
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
            "debug",
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
