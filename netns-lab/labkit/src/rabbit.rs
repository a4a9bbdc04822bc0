//! A RabbitMQ broker (Debian's `rabbitmq-server`) running inside a namespace.
//!
//! Each broker is a node of its own: a unique `RABBITMQ_NODENAME`, its own mnesia and log
//! directories, Erlang cookie and config file in a scratch directory owned by user
//! `rabbitmq` (the Debian package runs the server as that user; it cannot write elsewhere),
//! and nothing read from `/etc/rabbitmq`. The broker listens for AMQP on the one address
//! given; Erlang distribution (epmd on 4369, the node on 25672) stays inside the namespace.
//! One broker per namespace: they would share that namespace's epmd.
//!
//! ```text
//!   ip netns exec NS setpriv --reuid=rabbitmq … env -i RABBITMQ_…=… rabbitmq-server
//!        └─ sh (pid kept; SIGTERM = graceful stop) ─ beam.smp ─ epmd -daemon
//! ```
//!
//! [`Rabbit::start_tls`] adds an `amqps` listener with certificates of a private CA
//! ([`make_test_pki`] makes one with `openssl`). [`Rabbit::provision_fleet`] sets up ipvs-sync's
//! least-privilege layout ([`fleet_commands`]): a vhost, one user per node, and permissions
//! that let each balancer publish only to the arbiter's routing key and read only its own
//! queue; `guest` is removed.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{run_checked, scratch_dir, wait_until, Daemon, Netns};

/// The Debian package's server and CLI scripts (the `/usr/sbin` wrappers would switch user
/// and drop our environment).
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
/// The system user the package runs the broker as.
const RABBIT_USER: &str = "rabbitmq";
/// AMQP port when `listen` names none.
const AMQP_PORT: u16 = 5672;
/// How long a start may take before it is an error (Erlang is slow on a loaded 2-core box).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long to wait for leftover processes (epmd, a stuck beam) to go after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The node's Erlang distribution port (AMQP + 20000).
const DIST_PORT: u16 = AMQP_PORT + 20000;
/// How long a node may wait for its distribution port to be free: a closed connection of
/// the node's last run holds it for TCP's TIME_WAIT (60 s).
const DIST_PORT_WAIT: Duration = Duration::from_secs(75);
/// AMQP 0-9-1 protocol header a client opens with.
const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Makes node names unique within this process; the pid makes them unique across processes.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A running broker. Dropping it stops it by pid (graceful SIGTERM, then SIGKILL) along with
/// the epmd it started, and removes its directory.
#[derive(Debug)]
pub struct Rabbit {
    ns: String,
    addr: SocketAddr,
    node: String,
    user: String,
    pass: String,
    daemon: Option<Daemon>,
    tls: Option<RabbitTls>,
    /// The Erlang cookie (one for all nodes of a cluster).
    cookie: String,
    /// Long node names (`name@IP`): a node other namespaces can reach, for a cluster.
    longname: bool,
    // Declared last so the processes are gone before their directory is removed.
    dir: tempfile::TempDir,
}

/// An `amqps` listener of a lab broker: its port and PEM files (copied into the broker's
/// directory, readable by user `rabbitmq`).
#[derive(Debug, Clone)]
pub struct RabbitTls {
    /// TLS port on the broker's address.
    pub port: u16,
    /// CA certificate(s) the broker checks client certificates against.
    pub ca: PathBuf,
    /// The broker's certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Refuse clients without a certificate of that CA (`fail_if_no_peer_cert`).
    pub require_client_cert: bool,
}

impl Rabbit {
    /// Starts a broker inside `ns` listening on `listen` (`"192.0.2.5"`, `"192.0.2.5:5673"`,
    /// `"2001:db8::5"` or `"[2001:db8::5]:5672"`; the address must already be on an interface
    /// of `ns`), with a user of its own that has full rights on vhost `/`; returns once the
    /// broker has booted and answers AMQP.
    pub fn start(ns: &Netns, listen: &str) -> io::Result<Rabbit> {
        Self::start_with(ns, listen, None)
    }

    /// [`Rabbit::start`] with an `amqps` listener as well (`listeners.ssl.default`,
    /// `ssl_options.*`).
    pub fn start_tls(ns: &Netns, listen: &str, tls: &RabbitTls) -> io::Result<Rabbit> {
        Self::start_with(ns, listen, Some(tls.clone()))
    }

    fn start_with(ns: &Netns, listen: &str, tls: Option<RabbitTls>) -> io::Result<Rabbit> {
        let mut rabbit = Self::prepare(ns, listen, tls, None)?;
        rabbit.spawn()?;
        Ok(rabbit)
    }

    /// A broker's directory and names, not started. `member` (cookie, user, password) makes
    /// it a would-be member of a cluster: a long node name on its address, the shared cookie
    /// and the cluster's user.
    pub(crate) fn prepare(
        ns: &Netns,
        listen: &str,
        tls: Option<RabbitTls>,
        member: Option<(&str, &str, &str)>,
    ) -> io::Result<Rabbit> {
        let addr = parse_listen(listen)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let host = match member {
            Some(_) => addr.ip().to_string(),
            None => "localhost".to_owned(),
        };
        let node = format!("labkit-{pid}-{id}@{host}");
        let dir = scratch_dir("rabbit")?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let pass = format!("pw{nanos:x}{pid:x}{id}");
        let (user, pass, cookie) = match member {
            Some((cookie, user, pass)) => (user.to_owned(), pass.to_owned(), cookie.to_owned()),
            None => (
                format!("ipvs{pid}x{id}"),
                pass.clone(),
                format!("LABKIT{}", pass.to_uppercase()),
            ),
        };
        let rabbit = Rabbit {
            ns: ns.name().to_owned(),
            addr,
            node,
            user,
            pass,
            daemon: None,
            tls,
            cookie,
            longname: member.is_some(),
            dir,
        };
        rabbit.prepare_dir()?;
        Ok(rabbit)
    }

    /// The broker's user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The broker's password.
    pub fn pass(&self) -> &str {
        &self.pass
    }

    /// The AMQP address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `amqp://USER:PASS@ADDR:PORT/%2f`, for a client inside the namespace (or routed to it).
    pub fn url(&self) -> String {
        self.url_for(&self.user, &self.pass)
    }

    /// The URL of this broker with other credentials (see [`Rabbit::add_user`]).
    pub fn url_for(&self, user: &str, pass: &str) -> String {
        format!("amqp://{user}:{pass}@{}/%2f", self.addr)
    }

    /// `amqp://USER:PASS@ADDR:PORT/VHOST` (user, password and vhost percent-encoded).
    pub fn url_in(&self, vhost: &str, user: &str, pass: &str) -> String {
        format!(
            "amqp://{}:{}@{}/{}",
            pct(user),
            pct(pass),
            self.addr,
            pct(vhost)
        )
    }

    /// `amqps://USER:PASS@ADDR:TLSPORT/VHOST`, if the broker has a TLS listener.
    pub fn tls_url_in(&self, vhost: &str, user: &str, pass: &str) -> Option<String> {
        let tls = self.tls.as_ref()?;
        Some(format!(
            "amqps://{}:{}@{}/{}",
            pct(user),
            pct(pass),
            SocketAddr::new(self.addr.ip(), tls.port),
            pct(vhost)
        ))
    }

    /// Sets up ipvs-sync's broker layout in `vhost` ([`fleet_commands`]): the vhost, a user
    /// per node named after it with a fresh password, their permissions; removes `guest`.
    /// Returns the accounts.
    pub fn provision_fleet(
        &self,
        vhost: &str,
        arbiter: &str,
        balancers: &[&str],
    ) -> io::Result<FleetBroker> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let account = |name: &str, i: usize| Account {
            user: name.to_owned(),
            pass: format!("pw{nanos:x}n{i}x{}", std::process::id()),
        };
        let fleet = FleetBroker {
            vhost: vhost.to_owned(),
            arbiter: account(arbiter, 0),
            balancers: balancers
                .iter()
                .enumerate()
                .map(|(i, b)| ((*b).to_owned(), account(b, i + 1)))
                .collect(),
        };
        // `guest` exists only on a broker without default_user: removing it may fail.
        let _ = self.ctl(&["delete_user", "guest"]);
        for cmd in fleet_commands(&fleet) {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            self.ctl(&args)?;
        }
        Ok(fleet)
    }

    /// The Erlang node name (`rabbitmqctl -n`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The server's console log (its file logs are under `dir()/log`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("console.log")
    }

    /// The scratch directory (config, cookie, mnesia, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pid of the server script; signalling it is signalling the broker.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// Runs `rabbitmqctl -n NODE ARGS…` against this broker and returns its stdout.
    pub fn ctl(&self, args: &[&str]) -> io::Result<String> {
        let mut cmd = self.as_rabbit(CTL);
        cmd.args(["-n", &self.node]).args(args);
        run_checked(&mut cmd)
    }

    /// Creates another user with full rights on vhost `/`, like
    /// `rabbitmqctl add_user U P && rabbitmqctl set_permissions -p / U '.*' '.*' '.*'`.
    pub fn add_user(&self, user: &str, pass: &str) -> io::Result<()> {
        self.ctl(&["add_user", user, pass])?;
        self.ctl(&["set_permissions", "-p", "/", user, ".*", ".*", ".*"])?;
        Ok(())
    }

    /// Closes every client connection of every vhost (`rabbitmqctl close_all_connections
    /// --global`: without it only vhost `/` is meant), like a network blip as the clients
    /// see it.
    pub fn close_all_connections(&self) -> io::Result<()> {
        self.ctl(&["close_all_connections", "--global", "labkit: test"])
            .map(drop)
    }

    /// Stops the RabbitMQ application but not the node (`rabbitmqctl stop_app`).
    pub fn stop_app(&self) -> io::Result<()> {
        self.ctl(&["stop_app"]).map(drop)
    }

    /// Starts the application again (`rabbitmqctl start_app`) and waits until AMQP answers.
    pub fn start_app(&mut self) -> io::Result<()> {
        self.ctl(&["start_app"])?;
        self.wait_ready()
    }

    /// Stops the broker process (graceful) and starts it again on the same node name, data and
    /// address, like a broker host reboot; durable queues and persistent messages survive.
    /// Returns once the new broker answers AMQP.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop_server()?;
        self.spawn()
    }

    /// Stops the broker and the epmd it started; [`Drop`] does this too.
    pub fn stop(&mut self) -> io::Result<()> {
        self.stop_server()?;
        self.kill_leftovers()
    }

    fn prepare_dir(&self) -> io::Result<()> {
        let root = self.dir.path();
        let (uid, gid) = rabbit_ids()?;
        let home = root.join("home");
        for d in [root.join("mnesia"), root.join("log"), home.clone()] {
            std::fs::create_dir(&d)?;
        }
        let listener = match self.addr.ip() {
            // rabbitmq.conf spells IPv6 listeners without brackets: `::1:5672`.
            IpAddr::V6(ip) => format!("{ip}:{}", self.addr.port()),
            IpAddr::V4(ip) => format!("{ip}:{}", self.addr.port()),
        };
        std::fs::write(
            root.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = {listener}\n\
                 default_vhost = /\n\
                 default_user = {}\n\
                 default_pass = {}\n\
                 default_permissions.configure = .*\n\
                 default_permissions.read = .*\n\
                 default_permissions.write = .*\n\
                 loopback_users = none\n{}{}",
                self.user,
                self.pass,
                self.tls_conf(root)?,
                if self.longname {
                    // A node cut off from the majority stops serving, so clients move.
                    "cluster_partition_handling = pause_minority\n"
                } else {
                    ""
                }
            ),
        )?;
        std::fs::write(root.join("enabled_plugins"), "[].\n")?;
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, &self.cookie)?;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o750))?;
        for entry in walk(root)? {
            std::os::unix::fs::chown(&entry, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    /// Copies the TLS files into the broker's directory and returns the config lines.
    fn tls_conf(&self, root: &Path) -> io::Result<String> {
        let Some(tls) = &self.tls else {
            return Ok(String::new());
        };
        let dir = root.join("tls");
        std::fs::create_dir(&dir)?;
        let mut paths = Vec::new();
        for (src, name) in [
            (&tls.ca, "ca.pem"),
            (&tls.cert, "cert.pem"),
            (&tls.key, "key.pem"),
        ] {
            let dst = dir.join(name);
            std::fs::copy(src, &dst)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600))?;
            paths.push(dst.display().to_string());
        }
        let listener = match self.addr.ip() {
            IpAddr::V6(ip) => format!("{ip}:{}", tls.port),
            IpAddr::V4(ip) => format!("{ip}:{}", tls.port),
        };
        Ok(format!(
            "listeners.ssl.default = {listener}\n\
             ssl_options.cacertfile = {}\n\
             ssl_options.certfile = {}\n\
             ssl_options.keyfile = {}\n\
             ssl_options.verify = verify_peer\n\
             ssl_options.fail_if_no_peer_cert = {}\n",
            paths[0], paths[1], paths[2], tls.require_client_cert
        ))
    }

    /// `ip netns exec NS setpriv --reuid=rabbitmq … env -i RABBITMQ_…=… PROG`.
    fn as_rabbit(&self, prog: &str) -> Command {
        let root = self.dir.path();
        let path = |p: &str| root.join(p).display().to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "setpriv"])
            .args([
                &format!("--reuid={RABBIT_USER}"),
                &format!("--regid={RABBIT_USER}"),
                "--init-groups",
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
            ])
            .arg(format!("HOME={}", path("home")))
            .arg(format!("RABBITMQ_NODENAME={}", self.node))
            .arg(format!("RABBITMQ_USE_LONGNAME={}", self.longname))
            // A cluster's nodes notice a silent peer after 8 s instead of Erlang's 60 s
            // default, so a partition shows (and pause_minority acts) within a test.
            .arg(if self.longname {
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel net_ticktime 8"
            } else {
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="
            })
            .arg("RABBITMQ_CONF_ENV_FILE=/dev/null")
            .arg(format!("RABBITMQ_CONFIG_FILE={}", path("rabbitmq.conf")))
            .arg(format!(
                "RABBITMQ_ENABLED_PLUGINS_FILE={}",
                path("enabled_plugins")
            ))
            .arg(format!("RABBITMQ_MNESIA_BASE={}", path("mnesia")))
            .arg(format!("RABBITMQ_LOG_BASE={}", path("log")))
            .arg(format!("RABBITMQ_PID_FILE={}", path("rabbit.pid")))
            .arg(prog);
        cmd
    }

    /// Starts the broker again after [`Rabbit::stop_server`] (same node, data and address);
    /// returns once it answers AMQP. Does nothing if it runs.
    pub fn start_server(&mut self) -> io::Result<()> {
        if self.daemon.is_some() {
            return Ok(());
        }
        self.spawn()
    }

    fn spawn(&mut self) -> io::Result<()> {
        self.launch()?;
        self.wait_ready()
    }

    /// Starts the server process without waiting for it (a cluster's nodes boot together:
    /// each waits for the others' tables).
    pub(crate) fn launch(&mut self) -> io::Result<()> {
        if self.daemon.is_none() {
            self.wait_dist_port_free()?;
            self.daemon = Some(Daemon::spawn(self.as_rabbit(SERVER), &self.log_path())?);
        }
        Ok(())
    }

    /// Waits until no socket of the namespace holds the distribution port. RabbitMQ refuses
    /// to boot while one does (`dist_port_already_used`), and after a kill or a stop the
    /// node's closed cluster connections keep it in TIME_WAIT for up to a minute.
    pub(crate) fn wait_dist_port_free(&self) -> io::Result<()> {
        let held = || {
            let mut cmd = Command::new("ip");
            cmd.args([
                "netns",
                "exec",
                &self.ns,
                "cat",
                "/proc/net/tcp",
                "/proc/net/tcp6",
            ]);
            run_checked(&mut cmd).map(|table| port_in_table(&table, DIST_PORT))
        };
        if wait_until(DIST_PORT_WAIT, || matches!(held(), Ok(false))) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "port {DIST_PORT} still held in namespace {} after {DIST_PORT_WAIT:?}",
                self.ns
            )))
        }
    }

    /// Kills the node at once (SIGKILL to every `rabbitmq` process of its namespace: the
    /// server, its beam and epmd), like a crashed host; [`Rabbit::start_server`] brings it
    /// back with its data.
    pub fn kill(&mut self) -> io::Result<()> {
        self.kill_leftovers()?;
        if let Some(mut d) = self.daemon.take() {
            d.stop()?;
        }
        Ok(())
    }

    /// Waits until the broker answers the AMQP protocol header with `connection.start` and
    /// `rabbitmqctl await_startup` confirms the boot is complete.
    pub(crate) fn wait_ready(&mut self) -> io::Result<()> {
        let path = format!("/run/netns/{}", self.ns);
        let addr = self.addr;
        let mut exited = None;
        let daemon = &mut self.daemon;
        let up = wait_until(START_TIMEOUT, || {
            if let Some(Ok(Some(status))) = daemon.as_mut().map(Daemon::exited) {
                // A broker that died (bad config, port in use) will not come up: stop waiting.
                exited = Some(status);
                return true;
            }
            amqp_answers(&path, addr)
        });
        if let Some(status) = exited {
            return Err(self.failure(&format!("rabbitmq-server exited ({status})")));
        }
        if !up {
            return Err(self.failure(&format!(
                "no AMQP answer on {addr} within {START_TIMEOUT:?}"
            )));
        }
        self.ctl(&["await_startup"])
            .map(drop)
            .map_err(|e| self.failure(&e.to_string()))
    }

    /// Whether the server process has exited; if so, forgets it, so that
    /// [`Rabbit::launch`] starts a new one.
    pub(crate) fn forget_exited(&mut self) -> bool {
        let exited = matches!(self.daemon.as_mut().map(Daemon::exited), Some(Ok(Some(_))));
        if exited {
            self.daemon = None;
        }
        exited
    }

    fn failure(&self, why: &str) -> io::Error {
        match &self.daemon {
            Some(d) => d.failure(why),
            None => io::Error::other(why.to_owned()),
        }
    }

    /// Stops the broker process (graceful) but keeps its data and epmd, for an outage of
    /// the test's choosing; [`Rabbit::start_server`] brings it back.
    pub fn stop_server(&mut self) -> io::Result<()> {
        if let Some(mut d) = self.daemon.take() {
            d.stop()?;
        }
        Ok(())
    }

    /// Kills what the server left in the namespace: epmd (it daemonises, so it is not our
    /// child) and a beam that outlived a SIGKILLed script. Only processes of user `rabbitmq`
    /// inside this broker's namespace are touched.
    fn kill_leftovers(&self) -> io::Result<()> {
        let (uid, _) = rabbit_ids()?;
        let leftovers = || -> Vec<u32> {
            ns_pids(&self.ns)
                .into_iter()
                .filter(|pid| process_uid(*pid) == Some(uid))
                .collect()
        };
        for pid in leftovers() {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if wait_until(KILL_WAIT, || leftovers().is_empty()) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "rabbitmq processes {:?} still in namespace {}",
                leftovers(),
                self.ns
            )))
        }
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("labkit: stopping rabbitmq {}: {e}", self.node);
        }
    }
}

/// Parses `ADDR`, `ADDR:PORT` or `[V6]:PORT`.
fn parse_listen(listen: &str) -> io::Result<SocketAddr> {
    if let Ok(sa) = listen.parse::<SocketAddr>() {
        return Ok(sa);
    }
    listen
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, AMQP_PORT))
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad listen address `{listen}`: want ADDR, ADDR:PORT or [V6]:PORT"),
            )
        })
}

/// uid and gid of the `rabbitmq` system user.
fn rabbit_ids() -> io::Result<(u32, u32)> {
    match nix::unistd::User::from_name(RABBIT_USER) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no user `rabbitmq`: install Debian's rabbitmq-server",
        )),
        Err(e) => Err(io::Error::other(format!("looking up user rabbitmq: {e}"))),
    }
}

/// A path and everything below it.
fn walk(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = vec![root.to_owned()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            for e in std::fs::read_dir(&out[i])? {
                out.push(e?.path());
            }
        }
        i += 1;
    }
    Ok(out)
}

/// `ip netns pids NS`, or nothing if the namespace is gone.
/// Whether a `/proc/net/tcp` table lists a socket whose local port is `port` (any state).
fn port_in_table(table: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    table.lines().any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|local| local.ends_with(&want))
    })
}

fn ns_pids(ns: &str) -> Vec<u32> {
    run_checked(Command::new("ip").args(["netns", "pids", ns]))
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Real uid of a process (`Uid:` of `/proc/PID/status`).
fn process_uid(pid: u32) -> Option<u32> {
    crate::proc::status_field(pid, "Uid:").and_then(|uid| u32::try_from(uid).ok())
}

/// Whether a broker inside the namespace at `ns_path` answers the AMQP header with a
/// `connection.start` method frame. Runs on a short-lived thread moved into the namespace,
/// so the caller's thread stays where it is.
fn amqp_answers(ns_path: &str, addr: SocketAddr) -> bool {
    let probe = || -> io::Result<bool> {
        let ns = std::fs::File::open(ns_path)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(AMQP_HEADER)?;
        let mut frame = [0u8; 11];
        s.read_exact(&mut frame)?;
        // Method frame (type 1) on channel 0 carrying connection.start (class 10, method 10).
        Ok(frame[0] == 1 && frame[1..3] == [0, 0] && frame[7..11] == [0, 10, 0, 10])
    };
    std::thread::scope(|s| s.spawn(probe).join())
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false)
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for URL parts.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A broker user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// User name.
    pub user: String,
    /// Password.
    pub pass: String,
}

/// ipvs-sync's accounts in one vhost (see [`fleet_commands`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetBroker {
    /// The vhost.
    pub vhost: String,
    /// The arbiter's user (named after the arbiter).
    pub arbiter: Account,
    /// Each balancer's user, by hostname (named after it).
    pub balancers: BTreeMap<String, Account>,
}

/// The exchanges, queue names and routing keys of ipvs-sync (`src/wire/amqp/topology.rs`).
const EXCHANGE: &str = "ipvs-sync";
const ANNOUNCE_EXCHANGE: &str = "ipvs-sync.announce";
const QUEUE_PREFIX: &str = "ipvs-sync.";
const ANNOUNCE_QUEUE_PREFIX: &str = "ipvs-sync-announce.";
const SERVER_KEY: &str = "lbs";
const BROADCAST_KEY: &str = "broadcast";

/// `s` with every regex metacharacter escaped, for a permission pattern.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\.^$|?*+()[]{}-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `rabbitmqctl` argument lists that set up ipvs-sync's least-privilege layout:
///
/// | user | configure | write | read | topic write (both exchanges) | topic read (both exchanges) |
/// |---|---|---|---|---|---|
/// | balancer H | its queues `ipvs-sync.H`, `ipvs-sync-announce.H` | its queues, `ipvs-sync` | its queues, both exchanges | `lbs` only | `H` and `broadcast` only |
/// | arbiter | `lbs`, both exchanges | `lbs`, both exchanges | `lbs`, both exchanges | anything but `lbs` | `lbs` only |
///
/// The exchanges are `ipvs-sync` (the main lane, and all that balancers send) and
/// `ipvs-sync.announce` (the announce lane to balancers); a balancer may bind its announce
/// queue to the latter but not publish to it.
///
/// RabbitMQ checks a publish against the topic write pattern and a queue binding against
/// the topic read pattern (topic exchanges only), so a balancer can neither send to another
/// balancer or to `broadcast` nor bind its queue to another's key; without configure or
/// read on other queues it can neither consume, declare, bind, purge nor delete them, and
/// without write on `amq.default` it cannot reach a queue by name.
pub fn fleet_commands(fleet: &FleetBroker) -> Vec<Vec<String>> {
    let v = fleet.vhost.as_str();
    let ex = regex_escape(EXCHANGE);
    let mut cmds: Vec<Vec<String>> = vec![vec!["add_vhost".into(), v.into()]];
    let mut user =
        |a: &Account, conf: String, write: String, read: String, tw: String, tr: String| {
            cmds.push(vec!["add_user".into(), a.user.clone(), a.pass.clone()]);
            cmds.push(vec![
                "set_permissions".into(),
                "-p".into(),
                v.into(),
                a.user.clone(),
                conf,
                write,
                read,
            ]);
            for exchange in [EXCHANGE, ANNOUNCE_EXCHANGE] {
                cmds.push(vec![
                    "set_topic_permissions".into(),
                    "-p".into(),
                    v.into(),
                    a.user.clone(),
                    exchange.into(),
                    tw.clone(),
                    tr.clone(),
                ]);
            }
        };
    let aex = regex_escape(ANNOUNCE_EXCHANGE);
    let lbs = regex_escape(SERVER_KEY);
    let arbiter_objects = format!("^({ex}|{aex}|{lbs})$");
    user(
        &fleet.arbiter,
        arbiter_objects.clone(),
        arbiter_objects.clone(),
        arbiter_objects,
        format!("^(?!{lbs}$).+$"),
        format!("^{lbs}$"),
    );
    for (host, a) in &fleet.balancers {
        let h = regex_escape(host);
        let queue = format!("{}{h}", regex_escape(QUEUE_PREFIX));
        let announce = format!("{}{h}", regex_escape(ANNOUNCE_QUEUE_PREFIX));
        user(
            a,
            format!("^({queue}|{announce})$"),
            format!("^({ex}|{queue}|{announce})$"),
            format!("^({ex}|{aex}|{queue}|{announce})$"),
            format!("^{lbs}$"),
            format!("^({h}|{})$", regex_escape(BROADCAST_KEY)),
        );
    }
    cmds
}

/// A private CA and certificates made by `openssl` for a lab broker and one client.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// The broker's certificate (SAN: its IP address) and key.
    pub server_cert: PathBuf,
    /// The broker's key.
    pub server_key: PathBuf,
    /// A client certificate (CN: the client's name) and key.
    pub client_cert: PathBuf,
    /// The client's key (PKCS#8).
    pub client_key: PathBuf,
    /// A second CA, not trusted by anyone: for a certificate the broker must refuse.
    pub rogue_ca: PathBuf,
    /// A client certificate of the rogue CA.
    pub rogue_client_cert: PathBuf,
    /// Its key.
    pub rogue_client_key: PathBuf,
}

/// Makes a CA, a server certificate for `server_ip` and a client certificate for
/// `client_cn` (EC P-256, valid two days) in `dir`, plus a rogue CA and client.
pub fn make_test_pki(dir: &Path, server_ip: IpAddr, client_cn: &str) -> io::Result<TestPki> {
    let p = |n: &str| dir.join(n);
    let s = |p: &Path| p.display().to_string();
    let openssl = |args: &[&str]| run_checked(Command::new("openssl").args(args)).map(drop);
    let ca = |name: &str| -> io::Result<()> {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=ipvs-sync lab {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &s(&p(&format!("{name}.key"))),
            "-out",
            &s(&p(&format!("{name}.pem"))),
        ])
    };
    let leaf = |name: &str, ca: &str, cn: &str, ext: &str| -> io::Result<()> {
        let extfile = p(&format!("{name}.ext"));
        std::fs::write(&extfile, ext)?;
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &s(&p(&format!("{name}.key"))),
            "-out",
            &s(&p(&format!("{name}.csr"))),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &s(&p(&format!("{name}.csr"))),
            "-CA",
            &s(&p(&format!("{ca}.pem"))),
            "-CAkey",
            &s(&p(&format!("{ca}.key"))),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &s(&extfile),
            "-out",
            &s(&p(&format!("{name}.pem"))),
        ])
    };
    ca("ca")?;
    ca("rogue-ca")?;
    let ip_san = format!(
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:{server_ip}\nextendedKeyUsage=serverAuth\n"
    );
    leaf("server", "ca", &server_ip.to_string(), &ip_san)?;
    let client_ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
    leaf("client", "ca", client_cn, client_ext)?;
    leaf("rogue-client", "rogue-ca", client_cn, client_ext)?;
    for key in ["client.key", "rogue-client.key", "server.key"] {
        std::fs::set_permissions(p(key), std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(TestPki {
        ca: p("ca.pem"),
        server_cert: p("server.pem"),
        server_key: p("server.key"),
        client_cert: p("client.pem"),
        client_key: p("client.key"),
        rogue_ca: p("rogue-ca.pem"),
        rogue_client_cert: p("rogue-client.pem"),
        rogue_client_key: p("rogue-client.key"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dist_port_is_found_in_any_state_v4_and_v6() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  0: 0A006433:6448 0B006433:A1B2 06 00000000:00000000 03:00000F3A 00000000     0        0 0\n";
        assert!(port_in_table(v4, 25672));
        assert!(!port_in_table(v4, 5672));
        let v6 = "  sl  local_address                         remote_address\n\
                  0: 00000000000000000000000000000000:1628 00000000000000000000000000000000:0000 0A\n";
        assert!(port_in_table(v6, 5672));
        assert!(!port_in_table(v6, 25672));
        assert!(!port_in_table("", 25672));
    }

    #[test]
    fn fleet_permissions_are_anchored_and_escaped() {
        let fleet = FleetBroker {
            vhost: "ipvs-sync".into(),
            arbiter: Account {
                user: "arbiter.example.net".into(),
                pass: "a".into(),
            },
            balancers: BTreeMap::from([(
                "lb1.example.net".to_owned(),
                Account {
                    user: "lb1.example.net".into(),
                    pass: "b".into(),
                },
            )]),
        };
        let cmds = fleet_commands(&fleet);
        let lines: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            lines,
            [
                "add_vhost ipvs-sync",
                "add_user arbiter.example.net a",
                "set_permissions -p ipvs-sync arbiter.example.net ^(ipvs\\-sync|ipvs\\-sync\\.announce|lbs)$ ^(ipvs\\-sync|ipvs\\-sync\\.announce|lbs)$ ^(ipvs\\-sync|ipvs\\-sync\\.announce|lbs)$",
                "set_topic_permissions -p ipvs-sync arbiter.example.net ipvs-sync ^(?!lbs$).+$ ^lbs$",
                "set_topic_permissions -p ipvs-sync arbiter.example.net ipvs-sync.announce ^(?!lbs$).+$ ^lbs$",
                "add_user lb1.example.net b",
                "set_permissions -p ipvs-sync lb1.example.net ^(ipvs\\-sync\\.lb1\\.example\\.net|ipvs\\-sync\\-announce\\.lb1\\.example\\.net)$ ^(ipvs\\-sync|ipvs\\-sync\\.lb1\\.example\\.net|ipvs\\-sync\\-announce\\.lb1\\.example\\.net)$ ^(ipvs\\-sync|ipvs\\-sync\\.announce|ipvs\\-sync\\.lb1\\.example\\.net|ipvs\\-sync\\-announce\\.lb1\\.example\\.net)$",
                "set_topic_permissions -p ipvs-sync lb1.example.net ipvs-sync ^lbs$ ^(lb1\\.example\\.net|broadcast)$",
                "set_topic_permissions -p ipvs-sync lb1.example.net ipvs-sync.announce ^lbs$ ^(lb1\\.example\\.net|broadcast)$",
            ]
        );
        assert_eq!(pct("a b/c%"), "a%20b%2Fc%25");
    }

    #[test]
    fn listen_addresses_parse_with_and_without_port() {
        assert_eq!(
            parse_listen("192.0.2.5").unwrap(),
            "192.0.2.5:5672".parse().unwrap()
        );
        assert_eq!(
            parse_listen("192.0.2.5:5673").unwrap(),
            "192.0.2.5:5673".parse().unwrap()
        );
        assert_eq!(
            parse_listen("2001:db8::5").unwrap(),
            "[2001:db8::5]:5672".parse().unwrap()
        );
        assert_eq!(parse_listen("[2001:db8::5]:5999").unwrap().port(), 5999);
        assert!(parse_listen("broker.example").is_err());
    }

    #[test]
    fn walk_lists_nested_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), "x").unwrap();
        let all = walk(dir.path()).unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.contains(&dir.path().join("a/b/f")));
    }

    #[test]
    fn own_uid_is_read_from_proc() {
        let me = std::process::id();
        assert_eq!(process_uid(me), Some(nix::unistd::getuid().as_raw()));
    }

    #[test]
    #[ignore = "lab: needs root, netns and rabbitmq-server; run netns-lab/test"]
    fn lab_rabbit_starts_restarts_and_cleans_up() {
        if !crate::require_root() {
            return;
        }
        let ns = Netns::new("rabbit").unwrap();
        ns.ip(&["addr", "add", "192.0.2.5/32", "dev", "lo"])
            .unwrap();
        let mut r = Rabbit::start(&ns, "192.0.2.5").unwrap();
        let users = r.ctl(&["list_users"]).unwrap();
        assert!(users.contains(r.user()), "{users}");
        r.ctl(&["add_vhost", "survivor"]).unwrap();
        let path = format!("/run/netns/{}", ns.name());
        r.restart().unwrap();
        assert!(amqp_answers(&path, r.addr()));
        // Data (here a vhost) lives in the broker's own mnesia dir and survives the restart.
        assert!(r.ctl(&["list_vhosts"]).unwrap().contains("survivor"));
        let dir = r.dir().to_owned();
        drop(r);
        assert!(!dir.exists());
        assert!(!amqp_answers(&path, "192.0.2.5:5672".parse().unwrap()));
        let (uid, _) = rabbit_ids().unwrap();
        assert!(ns_pids(ns.name())
            .into_iter()
            .all(|p| process_uid(p) != Some(uid)));
    }
}
