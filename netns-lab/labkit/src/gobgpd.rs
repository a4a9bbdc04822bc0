//! A gobgpd router running inside a namespace, driven through its `gobgp` CLI.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{scratch_dir, wait_until, Daemon, GobgpApi, Netns};

/// How long [`Gobgpd::start`] waits for the gRPC API to answer.
const API_TIMEOUT: Duration = Duration::from_secs(15);

/// A gobgpd process in a namespace, with its config, log and API socket in a scratch
/// directory of its own. Dropping it stops the process (by pid) and removes the directory.
///
/// The gRPC API listens on a unix socket in that directory rather than on TCP 50051, so
/// any number of routers can share a namespace, and the `gobgp` CLI reaches it without
/// entering the namespace (which also keeps polling cheap).
#[derive(Debug)]
pub struct Gobgpd {
    ns: String,
    daemon: Daemon,
    // Declared after `daemon` so the process is stopped before its directory goes.
    dir: tempfile::TempDir,
}

impl Gobgpd {
    /// Starts `gobgpd -f CONFIG` inside `ns` and waits until its API answers
    /// (`gobgp global`). The log (plain text) is `log_path()`.
    pub fn start(ns: &Netns, toml_config: &str) -> io::Result<Gobgpd> {
        let dir = scratch_dir("gobgpd")?;
        std::fs::write(dir.path().join("gobgpd.toml"), toml_config)?;
        let daemon = spawn(ns.name(), dir.path())?;
        let mut g = Gobgpd {
            ns: ns.name().to_owned(),
            daemon,
            dir,
        };
        g.wait_api()?;
        Ok(g)
    }

    /// Stops gobgpd and starts it again with the same configuration and log, like a
    /// router reboot; returns once the new process's API answers.
    pub fn restart(&mut self) -> io::Result<()> {
        self.daemon.stop()?;
        self.daemon = spawn(&self.ns, self.dir.path())?;
        self.wait_api()
    }

    /// Runs `gobgp ARGS…` against this router and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        self.api().cli(args)
    }

    /// The global RIB of a family (`"ipv4"` or `"ipv6"`) as gobgp prints it with `-j`:
    /// an object keyed by prefix, each a list of paths with `nexthop`/`attrs`.
    pub fn rib(&self, family: &str) -> io::Result<serde_json::Value> {
        self.api().rib(family)
    }

    /// The prefixes in the global RIB of a family, sorted.
    pub fn rib_prefixes(&self, family: &str) -> io::Result<Vec<String>> {
        self.api().rib_prefixes(family)
    }

    /// The BGP session state with a neighbor, in lower case as RFC 4271 names it:
    /// `"idle"`, `"connect"`, `"active"`, `"opensent"`, `"openconfirm"`, `"established"`.
    pub fn neighbor_state(&self, addr: &str) -> io::Result<String> {
        self.api().neighbor_state(addr)
    }

    /// The API handle (the CLI against this router's socket).
    pub fn api(&self) -> GobgpApi {
        GobgpApi::new(&self.api_target())
    }

    /// Polls `cond` every 50 ms until it holds (→ `true`) or `timeout` passes (→ `false`).
    pub fn wait_for(&self, cond: impl Fn(&Gobgpd) -> bool, timeout: Duration) -> bool {
        wait_until(timeout, || cond(self))
    }

    /// Waits until the session with `addr` is Established.
    pub fn wait_established(&self, addr: &str, timeout: Duration) -> bool {
        self.wait_for(
            |g| g.neighbor_state(addr).is_ok_and(|s| s == "established"),
            timeout,
        )
    }

    /// The `--target` the CLI uses: `unix:///…/api.sock`.
    pub fn api_target(&self) -> String {
        format!("unix://{}", self.dir.path().join("api.sock").display())
    }

    /// gobgpd's process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The running process, e.g. to SIGKILL or SIGSTOP it in a test.
    pub fn daemon(&mut self) -> &mut Daemon {
        &mut self.daemon
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        self.daemon.log_path()
    }

    /// For a failing test's message: where a Go runtime crash begins in its log (stdout and
    /// stderr both land there), else the end of the log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        match ["panic:", "fatal error:"]
            .iter()
            .filter_map(|m| log.find(m))
            .min()
        {
            Some(at) => log[at..].chars().take(4000).collect(),
            None => self.daemon.log_tail(),
        }
    }

    /// Its configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gobgpd.toml")
    }

    /// Name of the namespace it runs in.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// Waits until `gobgp global` answers, failing early if gobgpd has exited.
    fn wait_api(&mut self) -> io::Result<()> {
        let mut exited = None;
        let up = wait_until(API_TIMEOUT, || {
            if let Ok(Some(status)) = self.daemon.exited() {
                exited = Some(status);
                return true;
            }
            self.cli(&["global"]).is_ok()
        });
        match (up, exited) {
            (_, Some(status)) => Err(self.daemon.failure(&format!("exited ({status})"))),
            (false, None) => Err(self
                .daemon
                .failure(&format!("API silent after {API_TIMEOUT:?}"))),
            (true, None) => Ok(()),
        }
    }
}

/// Spawns gobgpd in namespace `ns` with its files in `dir`.
fn spawn(ns: &str, dir: &Path) -> io::Result<Daemon> {
    let sock = dir.join("api.sock");
    // A stale socket from the previous run would make the restarted gobgpd fail to bind.
    match std::fs::remove_file(&sock) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "gobgpd", "-p", "--pprof-disable"])
        .arg("-f")
        .arg(dir.join("gobgpd.toml"))
        .arg(format!("--api-hosts=unix://{}", sock.display()));
    Daemon::spawn(cmd, &dir.join("gobgpd.log"))
}
