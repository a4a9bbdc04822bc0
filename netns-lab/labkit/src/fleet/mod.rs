//! A small fleet in network namespaces, for the end-to-end tests and the convergence
//! bench: RabbitMQ and the arbiter in `core`, balancers `lbK` each with a BGP session to
//! every router `rJ` (gobgpd), all real processes of the real binary.
//!
//! ```text
//!            core (rabbitmq 192.0.2.5, ipvs-sync server, quorum)
//!          /   |   \            one veth per balancer: 192.0.2.4K/30
//!       lb1   lb2   lb3         ipvs-sync client (ipvs = false on the host kernel)
//!        | \ / | \ / |          one veth per (balancer, router): 198.51.100.0/24 /30s
//!        r1 (iBGP AS 65000)   r2 (eBGP AS 65001)      gobgpd, passive
//!                      [rb (iBGP AS 65000, IPv4)]       BIRD, passive, with FleetOpts::bird
//! ```
//! VIPs come from 203.0.113.0/24 and 2001:db8:f00::/48. IPv6 VIPs ride a separate IPv6
//! session per (balancer, router) over 2001:db8:K:J::/64. Every file comes from one
//! [`LabSpec`] ([`spec::fleet_spec`]); [`FleetOpts`] adds keys to it. With
//! [`FleetOpts::cluster`] the broker is a RabbitMQ cluster instead ([`broker`]).

mod bird;
pub mod broker;
mod observe;
pub mod spec;

pub use bird::BirdRouter;
pub use broker::Brokers;
pub use observe::{host_prefix, QueueState};

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::spec::{read_file, LabSpec, Vip};
use crate::{scratch_dir, wait_until, Daemon, Gobgpd, Ini, Netns, Rabbit, RabbitCluster};

/// The balancers' AS, and an iBGP router's.
pub const LOCAL_AS: u32 = 65000;
/// An eBGP router's AS.
pub const EBGP_AS: u32 = 65001;

/// A router of the fleet.
#[derive(Debug)]
pub struct Router {
    /// Its namespace.
    pub ns: Netns,
    /// The running gobgpd.
    pub gobgpd: Gobgpd,
    /// Its AS.
    pub asn: u32,
}

/// A balancer of the fleet.
#[derive(Debug)]
pub struct Balancer {
    /// Its hostname: `lb1`.
    pub name: String,
    /// Its namespace.
    pub ns: Netns,
    /// Its directory: `config.ini`, `client.log`, `sync/`.
    pub dir: PathBuf,
    /// The client daemon, while it runs.
    pub daemon: Option<Daemon>,
    /// Its HTTP port on its namespace's loopback.
    pub http: u16,
    /// Its IPv4 address towards router j.
    pub addr_to: Vec<String>,
}

/// What fleet to build.
#[derive(Debug, Clone)]
pub struct FleetOpts {
    /// How many balancers.
    pub balancers: usize,
    /// ASNs of the routers: [`LOCAL_AS`] = iBGP, anything else eBGP.
    pub routers: Vec<u32>,
    /// The VIPs every balancer serves.
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
    /// arbiter's directory. Production keeps them in /var/run, often a tmpfs.
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
    /// The routers act as graceful-restart helpers (RFC 4724) for every balancer session:
    /// they keep a restarting balancer's routes until its End-of-RIB.
    pub router_graceful_restart: bool,
    /// More keys for every daemon's `config.ini`, over the fleet's own.
    pub config: Ini,
    /// More keys for the arbiter's `config.ini`.
    pub arbiter_config: Ini,
    /// More keys for every balancer's `config.ini` (`[announce] withdraw_grace` …).
    pub balancer_config: Ini,
    /// One more router after [`FleetOpts::routers`]: BIRD 2, iBGP, IPv4 only
    /// ([`Fleet::bird`]).
    pub bird: bool,
    /// Run the broker as a RabbitMQ cluster of this many nodes (3 for quorum queues that
    /// survive a node) instead of one broker in core: each daemon with a user of its own,
    /// every node's URL in `amqp_server`, quorum queues ([`broker`]). At most 3 balancers.
    pub cluster: Option<usize>,
}

impl Default for FleetOpts {
    fn default() -> Self {
        FleetOpts {
            balancers: 1,
            routers: vec![LOCAL_AS],
            vips: vec![IpAddr::from([203, 0, 113, 10])],
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
            config: Ini::new(),
            arbiter_config: Ini::new(),
            balancer_config: Ini::new(),
            bird: false,
            cluster: None,
        }
    }
}

/// A running fleet. Dropping it stops the daemons, the routers and the broker (by pid)
/// and deletes the namespaces.
#[derive(Debug)]
pub struct Fleet {
    /// The namespace of the arbiter (and of the broker, unless on a cluster).
    pub core: Netns,
    /// The broker: one, or a cluster ([`FleetOpts::cluster`]).
    pub broker: Brokers,
    /// The arbiter daemon, while it runs.
    pub arbiter: Option<Daemon>,
    /// The arbiter's directory: `config.ini`, `server.log`, `keepalived/`, `desc/`.
    pub arbiter_dir: PathBuf,
    /// The routers.
    pub routers: Vec<Router>,
    /// The BIRD router, with [`FleetOpts::bird`].
    pub bird: Option<BirdRouter>,
    /// The balancers.
    pub balancers: Vec<Balancer>,
    /// What it was built from.
    pub opts: FleetOpts,
    /// Every file of it.
    pub spec: LabSpec,
    bin: PathBuf,
    /// Holds every file; declared last so it goes after the daemons.
    pub scratch: tempfile::TempDir,
}

impl Fleet {
    /// Builds the namespaces, starts the broker and the routers, writes every file, and
    /// starts the arbiter and (unless [`FleetOpts::start_clients`] is false) the
    /// balancers, `bin` being the `ipvs-sync` binary. Returns once every BGP session is
    /// Established.
    pub fn start(bin: &Path, opts: FleetOpts) -> io::Result<Fleet> {
        let scratch = scratch_dir("fleet")?;
        let core = Netns::new("core")?;
        let mut router_ns = Vec::new();
        for j in 0..opts.routers.len() {
            router_ns.push(Netns::new(&format!("r{}", j + 1))?);
        }
        let bird_ns = opts.bird.then(|| Netns::new("rb")).transpose()?;
        let mut lb_ns = Vec::new();
        for k in 1..=opts.balancers {
            let ns = Netns::new(&format!("lb{k}"))?;
            let core_ip = format!("{}/30", spec::core_addr(k));
            let lb_ip = format!("{}/30", spec::lb_core_addr(k));
            crate::veth(&core, &[&core_ip], &ns, &[&lb_ip])?;
            for (j, rns) in router_ns.iter().chain(&bird_ns).enumerate() {
                let (lb4, lb6) = spec::lb_addrs_to(k, j);
                let (r4, r6) = spec::router_addrs_to(k, j);
                crate::veth(
                    &ns,
                    &[&format!("{lb4}/30"), &format!("{lb6}/64")],
                    rns,
                    &[&format!("{r4}/30"), &format!("{r6}/64")],
                )?;
            }
            // The balancers reach the broker through core.
            ns.ip(&[
                "route",
                "add",
                "192.0.2.0/24",
                "via",
                &spec::core_addr(k).to_string(),
            ])?;
            lb_ns.push(ns);
        }
        let broker = match opts.cluster {
            None => Brokers::One(Rabbit::start(&core, spec::BROKER)?),
            Some(nodes) => {
                let names: Vec<String> = (1..=opts.balancers).map(|k| format!("lb{k}")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                Brokers::start_cluster(nodes, &core, &lb_ns, &names)?
            }
        };
        let url = match &broker {
            Brokers::One(rabbit) => format!(
                "amqp://{}:{}@{}/%2f{}",
                rabbit.user(),
                rabbit.pass(),
                spec::BROKER,
                opts.amqp_heartbeat
                    .map(|s| format!("?heartbeat={s}"))
                    .unwrap_or_default()
            ),
            // Each daemon's own, set by `configure` below.
            Brokers::Cluster { .. } => String::new(),
        };
        let mut spec = spec::fleet_spec(&opts, scratch.path(), &url)?;
        broker.configure(&mut spec, opts.amqp_heartbeat);
        spec.write()?;
        if let Some(lp) = opts.desc_announce {
            spec.write_desc_announce(&opts.vips, lp)?;
        }
        let mut routers = Vec::new();
        for ((rns, r), asn) in router_ns.into_iter().zip(&spec.routers).zip(&opts.routers) {
            let gobgpd = Gobgpd::start(&rns, &r.gobgpd.to_toml())?;
            routers.push(Router {
                ns: rns,
                gobgpd,
                asn: *asn,
            });
        }
        let bird = match bird_ns {
            Some(ns) => {
                let conf = bird::config(opts.routers.len(), opts.balancers, opts.hold_time);
                let bird = crate::Bird::start(&ns, &conf)?;
                Some(BirdRouter { ns, bird })
            }
            None => None,
        };
        let balancers = lb_ns
            .into_iter()
            .zip(&spec.balancers)
            .enumerate()
            .map(|(i, (ns, b))| Balancer {
                name: b.name.clone(),
                ns,
                dir: b.dir.clone(),
                daemon: None,
                http: spec::http_port(i + 1),
                addr_to: (0..opts.routers.len())
                    .map(|j| spec::lb_addrs_to(i + 1, j).0.to_string())
                    .collect(),
            })
            .collect();
        let mut fleet = Fleet {
            core,
            broker,
            arbiter: None,
            arbiter_dir: spec.arbiter.dir.clone(),
            routers,
            bird,
            balancers,
            opts,
            spec,
            bin: bin.to_owned(),
            scratch,
        };
        fleet.start_arbiter()?;
        if fleet.opts.start_clients {
            for i in 0..fleet.balancers.len() {
                fleet.start_client(i)?;
            }
            for i in 0..fleet.balancers.len() {
                fleet.wait_sessions(i, Duration::from_secs(30))?;
            }
        }
        Ok(fleet)
    }

    /// The `ipvs-sync` binary the fleet runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Changes the VIPs of the keepalived configs and writes them again; the arbiter
    /// reads them at its next mapping rebuild (SIGHUP: [`Fleet::signal_arbiter`]).
    pub fn edit_vips(&mut self, edit: impl FnOnce(&mut Vec<Vip>)) -> io::Result<()> {
        edit(&mut self.spec.vips);
        self.spec.write_keepalived()
    }

    /// Sets `[server] startup_hold` (seconds) for the arbiter's next start.
    pub fn set_startup_hold(&mut self, secs: f64) -> io::Result<()> {
        self.spec.arbiter.config.set("server", "startup_hold", secs);
        self.opts.startup_hold = secs;
        self.spec.write_arbiter_config()
    }

    /// Desc files saying announce (every port up, LOCAL_PREF `lp`) for `vips`, in the
    /// format `ipvs-sync quorum` writes.
    pub fn write_desc_announce(&self, vips: &[IpAddr], lp: u32) -> io::Result<()> {
        self.spec.write_desc_announce(vips, lp)
    }

    /// The desc file of `vip`.
    pub fn desc_path(&self, vip: &IpAddr) -> PathBuf {
        self.spec.desc_path(vip)
    }

    /// The directory of the desc files.
    pub fn desc_dir(&self) -> &Path {
        &self.spec.arbiter.desc_dir
    }

    /// The daemons' `amqp_server`.
    pub fn amqp_url(&self) -> String {
        self.spec
            .config
            .get("main", "amqp_server")
            .unwrap_or_default()
            .to_owned()
    }

    /// Starts the arbiter and waits until its quorum socket is there.
    pub fn start_arbiter(&mut self) -> io::Result<()> {
        let mut cmd = self.core.command(&self.bin.to_string_lossy());
        cmd.arg("-c")
            .arg(self.arbiter_dir.join("config.ini"))
            .args(["--log-level", self.opts.log_level, "server"]);
        let d = Daemon::spawn(cmd, &self.arbiter_dir.join("server.log"))?;
        let sock = self.spec.quorum_socket();
        let up = wait_until(Duration::from_secs(20), || sock.exists());
        let failure = (!up).then(|| d.failure("no quorum socket after 20 s"));
        self.arbiter = Some(d);
        failure.map_or(Ok(()), Err)
    }

    /// Starts balancer `i`'s client.
    pub fn start_client(&mut self, i: usize) -> io::Result<()> {
        let b = self
            .balancers
            .get_mut(i)
            .ok_or_else(|| io::Error::other(format!("no balancer {i}")))?;
        let mut cmd = b.ns.command(&self.bin.to_string_lossy());
        cmd.arg("-c").arg(b.dir.join("config.ini")).args([
            "--log-level",
            self.opts.log_level,
            "client",
        ]);
        b.daemon = Some(Daemon::spawn(cmd, &b.dir.join("client.log"))?);
        Ok(())
    }

    /// Waits until every router (BIRD too) has every session of balancer `i` Established.
    pub fn wait_sessions(&self, i: usize, timeout: Duration) -> io::Result<()> {
        let k = i + 1;
        for (j, r) in self.routers.iter().enumerate() {
            let (v4, v6) = spec::lb_addrs_to(k, j);
            for a in [v4.to_string(), v6.to_string()] {
                if !r.gobgpd.wait_established(&a, timeout) {
                    return Err(io::Error::other(format!(
                        "session {a} to r{} not established in {timeout:?}; client log:\n{}",
                        j + 1,
                        self.client_log(i)
                    )));
                }
            }
        }
        self.wait_bird_session(i, timeout)
    }

    /// Balancer `i`'s log.
    pub fn client_log(&self, i: usize) -> String {
        self.balancers
            .get(i)
            .and_then(|b| read_file(&b.dir.join("client.log")).ok())
            .unwrap_or_default()
    }

    /// The arbiter's log.
    pub fn arbiter_log(&self) -> String {
        read_file(&self.arbiter_dir.join("server.log")).unwrap_or_default()
    }

    /// `ipvs-sync quorum DIR ARG` on the arbiter, as keepalived runs it; its wall time.
    pub fn quorum(&self, dir: &str, arg: &str) -> io::Result<Duration> {
        self.quorum_handler().run(dir, arg)
    }

    /// `ipvs-sync quorum DIR ARG` on the arbiter's config, as a command to spawn (see
    /// [`QuorumHandler::command`]).
    pub fn quorum_command(&self, dir: &str, arg: &str) -> std::process::Command {
        self.quorum_handler().command(dir, arg)
    }

    /// The quorum handler on its own, for a thread that makes quorum calls while the test
    /// changes the fleet.
    pub fn quorum_handler(&self) -> QuorumHandler {
        QuorumHandler {
            netns: self.core.name().to_owned(),
            bin: self.bin.clone(),
            config: self.arbiter_dir.join("config.ini"),
            lean: false,
        }
    }

    /// The same handler as `ipvs-sync-quorum`, the lean binary next to the fleet's
    /// `ipvs-sync` (`None` when there is none there, say beside an `IPVS_SYNC_BIN`).
    pub fn lean_quorum_handler(&self) -> Option<QuorumHandler> {
        let bin = self.bin.with_file_name("ipvs-sync-quorum");
        bin.is_file().then(|| QuorumHandler {
            bin,
            lean: true,
            ..self.quorum_handler()
        })
    }

    /// The one broker; an error on a fleet on a cluster.
    pub fn rabbit(&self) -> io::Result<&Rabbit> {
        match &self.broker {
            Brokers::One(r) => Ok(r),
            Brokers::Cluster { .. } => Err(io::Error::other("this fleet runs on a cluster")),
        }
    }

    /// The one broker, to restart it; an error on a fleet on a cluster.
    pub fn rabbit_mut(&mut self) -> io::Result<&mut Rabbit> {
        match &mut self.broker {
            Brokers::One(r) => Ok(r),
            Brokers::Cluster { .. } => Err(io::Error::other("this fleet runs on a cluster")),
        }
    }

    /// The cluster ([`FleetOpts::cluster`]); an error on a fleet with one broker.
    pub fn cluster(&self) -> io::Result<&RabbitCluster> {
        match &self.broker {
            Brokers::Cluster { cluster, .. } => Ok(cluster),
            Brokers::One(_) => Err(io::Error::other("this fleet runs on one broker")),
        }
    }

    /// The cluster, to kill, restart or cut off its nodes; an error on a fleet with one
    /// broker.
    pub fn cluster_mut(&mut self) -> io::Result<&mut RabbitCluster> {
        match &mut self.broker {
            Brokers::Cluster { cluster, .. } => Ok(cluster),
            Brokers::One(_) => Err(io::Error::other("this fleet runs on one broker")),
        }
    }

    /// Sends `sig` to balancer `i`'s client (nothing when it does not run).
    pub fn signal_client(&mut self, i: usize, sig: Signal) -> io::Result<()> {
        match self.balancers.get_mut(i).and_then(|b| b.daemon.as_mut()) {
            Some(d) => d.signal(sig),
            None => Ok(()),
        }
    }

    /// Stops balancer `i`'s client (SIGTERM).
    pub fn stop_client(&mut self, i: usize) {
        if let Some(mut d) = self.balancers.get_mut(i).and_then(|b| b.daemon.take()) {
            let _ = d.stop();
        }
    }

    /// Sends `sig` to the arbiter (nothing when it does not run).
    pub fn signal_arbiter(&mut self, sig: Signal) -> io::Result<()> {
        match self.arbiter.as_mut() {
            Some(d) => d.signal(sig),
            None => Ok(()),
        }
    }

    /// Stops the arbiter (SIGTERM).
    pub fn stop_arbiter(&mut self) {
        if let Some(mut d) = self.arbiter.take() {
            let _ = d.stop();
        }
    }

    /// Pid of the arbiter daemon, if it runs.
    pub fn arbiter_pid(&self) -> Option<u32> {
        self.arbiter.as_ref().map(Daemon::pid)
    }

    /// Pid of balancer `i`'s client daemon, if it runs.
    pub fn client_pid(&self, i: usize) -> Option<u32> {
        self.balancers.get(i)?.daemon.as_ref().map(Daemon::pid)
    }
}

/// keepalived's quorum handler on the fleet's arbiter (`ipvs-sync quorum`), owned and
/// `Send`: [`Fleet::quorum_handler`].
#[derive(Debug, Clone)]
pub struct QuorumHandler {
    netns: String,
    bin: PathBuf,
    config: PathBuf,
    /// `ipvs-sync-quorum -c CONFIG DIR ARG` instead of `ipvs-sync … quorum DIR ARG`.
    lean: bool,
}

impl QuorumHandler {
    /// Runs `ipvs-sync quorum DIR ARG` to its exit; its wall time, or an error with its
    /// stderr when it fails.
    pub fn run(&self, dir: &str, arg: &str) -> io::Result<Duration> {
        let t = Instant::now();
        let out = self.command(dir, arg).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "quorum {dir} {arg}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(t.elapsed())
    }

    /// `ipvs-sync quorum DIR ARG` on the arbiter's config, as a command to spawn. It runs
    /// in core's network namespace, where keepalived runs next to the arbiter: the
    /// hand-off is a unix socket path, but a `down` the arbiter does not take goes to
    /// the broker, which only core reaches. `nsenter --net` switches the network
    /// namespace alone and execs in place, cheaper than `ip netns exec`.
    pub fn command(&self, dir: &str, arg: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(&self.bin);
        self.quorum_args(&mut cmd, dir, arg);
        cmd
    }

    /// The same call run in place, in this process's network namespace, as keepalived runs
    /// it on a production arbiter: no `nsenter` exec before it (~0.8 ms here). The hand-off is
    /// a unix socket path and reaches the arbiter from any namespace; a `down` the arbiter
    /// does not take cannot reach the lab's broker from here, so only a bench that keeps the
    /// arbiter running uses it.
    pub fn command_in_place(&self, dir: &str, arg: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.bin);
        self.quorum_args(&mut cmd, dir, arg);
        cmd
    }

    /// `-c CONFIG --log-level warn quorum DIR ARG` (the lean binary: `-c CONFIG DIR ARG`), no
    /// input, output dropped.
    fn quorum_args(&self, cmd: &mut std::process::Command, dir: &str, arg: &str) {
        cmd.arg("-c").arg(&self.config);
        if !self.lean {
            cmd.args(["--log-level", "warn", "quorum"]);
        }
        cmd.args([dir, arg])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
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
