//! A BIRD 2 router running inside a namespace, driven through `birdc`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{run_checked, scratch_dir, wait_until, Daemon, Netns};

/// How long [`Bird::start`] waits for the control socket to answer.
const CTL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two looks of [`Bird::wait_route`] (a `birdc` call itself takes a few ms).
const ROUTE_POLL: Duration = Duration::from_millis(5);

/// A `bird -f -c CONF -s SOCK` process in a namespace, with its config, control socket and
/// log in a scratch directory of its own. Dropping it stops the process (by pid) and removes
/// the directory.
///
/// The config text is the test's own; it logs to [`Bird::log_path`] by naming
/// [`Bird::LOG_PLACEHOLDER`] (`log "@LOG@" all;`):
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let ns = labkit::Netns::new("r1")?;
/// let bird = labkit::Bird::start(&ns, r#"
///     router id 192.0.2.1;
///     log "@LOG@" all;
///     protocol device {}
///     protocol bgp lb {
///       local 192.0.2.1 as 65000; neighbor 192.0.2.11 as 65000; passive on;
///       ipv4 { import all; export none; };
///     }
/// "#)?;
/// let up = bird.wait_for(|b| b.bgp_state("lb").is_ok_and(|s| s == "Established"),
///                        std::time::Duration::from_secs(10));
/// # let _ = up; Ok(()) }
/// ```
#[derive(Debug)]
pub struct Bird {
    ns: String,
    daemon: Daemon,
    // Declared after `daemon` so the process is stopped before its directory goes.
    dir: tempfile::TempDir,
}

/// One route of `birdc show route PREFIX all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdRoute {
    /// `unicast`, `unreachable`, `blackhole`, …
    pub kind: String,
    /// The protocol it came from (`lb` for `protocol bgp lb`).
    pub protocol: String,
    /// Marked `*`: the best route of its network, the one BIRD uses and exports.
    pub best: bool,
    /// `via ADDR on IFACE` (the first next hop), if any.
    pub via: Option<String>,
    /// Attributes by name: `BGP.local_pref` → `100`, `BGP.community` → `(65000,1)`, …
    pub attrs: BTreeMap<String, String>,
}

impl Bird {
    /// In a config given to [`Bird::start`], this text is replaced by the log file's path.
    pub const LOG_PLACEHOLDER: &'static str = "@LOG@";

    /// Writes the config (with [`Bird::LOG_PLACEHOLDER`] replaced by the log path), starts
    /// `bird -f` inside `ns` and waits until `birdc show status` answers.
    pub fn start(ns: &Netns, config: &str) -> io::Result<Bird> {
        let dir = scratch_dir("bird")?;
        let log = dir.path().join("bird.log");
        let text = config.replace(Self::LOG_PLACEHOLDER, &log.to_string_lossy());
        std::fs::write(dir.path().join("bird.conf"), text)?;
        let daemon = spawn(ns.name(), dir.path())?;
        let mut b = Bird {
            ns: ns.name().to_owned(),
            daemon,
            dir,
        };
        b.wait_ctl()?;
        Ok(b)
    }

    /// Runs `birdc -s SOCK ARGS…` and returns its output without the `BIRD … ready.` banner.
    pub fn birdc(&self, args: &[&str]) -> io::Result<String> {
        let out = run_checked(
            Command::new("birdc")
                .arg("-s")
                .arg(self.ctl_path())
                .args(args),
        )?;
        Ok(out
            .lines()
            .filter(|l| !(l.starts_with("BIRD ") && l.ends_with(" ready.")))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// The BGP state of protocol `name` (`show protocols all NAME`, line `BGP state:`):
    /// `Idle`, `Connect`, `Active`, `OpenSent`, `OpenConfirm`, `Established`, or `Down`.
    pub fn bgp_state(&self, name: &str) -> io::Result<String> {
        let out = self.birdc(&["show", "protocols", "all", name])?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("BGP state:"))
            .map(|s| s.trim().to_owned())
            .ok_or_else(|| io::Error::other(format!("no BGP state for {name}: {out}")))
    }

    /// Routes (not filtered out) in `table` (`master4`, `master6`), from
    /// `show route count table TABLE`.
    pub fn route_count(&self, table: &str) -> io::Result<u64> {
        let out = self.birdc(&["show", "route", "count", "table", table])?;
        // "1000 of 1000 routes for 1000 networks in table master4"
        out.lines()
            .find(|l| l.contains(" networks in table"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| io::Error::other(format!("cannot read the route count: {out}")))
    }

    /// The routes BIRD holds for exactly `prefix` (`show route PREFIX all`), best first;
    /// empty when it has none. Filtered routes are not listed.
    pub fn routes(&self, prefix: &str) -> io::Result<Vec<BirdRoute>> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(self.ctl_path())
            .args(["show", "route", prefix, "all"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // birdc answers "Network not found" with exit status 1.
        if !out.status.success() && !text.contains("Network not found") {
            return Err(io::Error::other(format!(
                "birdc show route {prefix} all failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(parse_routes(&text))
    }

    /// Whether BIRD uses a route for `prefix` from protocol `protocol`: present, best, and
    /// of kind `unicast` (not unreachable, not filtered).
    pub fn has_best_route(&self, prefix: &str, protocol: &str) -> bool {
        self.routes(prefix).is_ok_and(|rs| {
            rs.iter()
                .any(|r| r.best && r.kind == "unicast" && r.protocol == protocol)
        })
    }

    /// Looks at `show route PREFIX` every few milliseconds until BIRD has a unicast route
    /// for `prefix` (`present`) or has none (`!present`), and returns when the answer
    /// that showed it came back: at or after the change in BIRD's table, on the clock of
    /// [`crate::AddrMonitor`] and [`crate::RibMonitor`]. `None` after `timeout`.
    pub fn wait_route(&self, prefix: &str, present: bool, timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        loop {
            let has = self
                .routes(prefix)
                .map(|rs| rs.iter().any(|r| r.kind == "unicast"));
            let at = Instant::now();
            if has.is_ok_and(|h| h == present) {
                return Some(at);
            }
            if at >= end {
                return None;
            }
            std::thread::sleep(ROUTE_POLL);
        }
    }

    /// Polls `cond` every 50 ms until it holds (→ `true`) or `timeout` passes (→ `false`).
    pub fn wait_for(&self, cond: impl Fn(&Bird) -> bool, timeout: Duration) -> bool {
        wait_until(timeout, || cond(self))
    }

    /// BIRD's log file (what the config logs to via [`Bird::LOG_PLACEHOLDER`]), as text.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("bird.log")
    }

    /// The control socket.
    pub fn ctl_path(&self) -> PathBuf {
        self.dir.path().join("bird.ctl")
    }

    /// BIRD's process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Name of the namespace it runs in.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// Waits until the control socket answers, failing early if BIRD has exited.
    fn wait_ctl(&mut self) -> io::Result<()> {
        let mut exited = None;
        let up = wait_until(CTL_TIMEOUT, || {
            if let Ok(Some(status)) = self.daemon.exited() {
                exited = Some(status);
                return true;
            }
            self.birdc(&["show", "status"]).is_ok()
        });
        match (up, exited) {
            (_, Some(status)) => Err(self.daemon.failure(&format!("exited ({status})"))),
            (false, None) => Err(self
                .daemon
                .failure(&format!("control socket silent after {CTL_TIMEOUT:?}"))),
            (true, None) => Ok(()),
        }
    }
}

/// Spawns BIRD in namespace `ns` with its files in `dir` (stdout/stderr to `stderr.log`).
fn spawn(ns: &str, dir: &Path) -> io::Result<Daemon> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "bird", "-f", "-c"])
        .arg(dir.join("bird.conf"))
        .arg("-s")
        .arg(dir.join("bird.ctl"));
    Daemon::spawn(cmd, &dir.join("stderr.log"))
}

/// Parses `show route PREFIX all`:
///
/// ```text
/// Table master6:
/// 2001:db8:100::1/128  unicast [lb 09:21:14.902] * (100) [i]
///         via 2001:db8::11 on fa
///         Type: BGP univ
///         BGP.local_pref: 100
/// ```
fn parse_routes(out: &str) -> Vec<BirdRoute> {
    let mut routes: Vec<BirdRoute> = Vec::new();
    for line in out.lines() {
        let t = line.trim();
        if t.is_empty() || line.starts_with("Table ") {
            continue;
        }
        if let Some(r) = route_head(t) {
            routes.push(r);
            continue;
        }
        let Some(r) = routes.last_mut() else { continue };
        if let Some(via) = t.strip_prefix("via ") {
            r.via.get_or_insert_with(|| via.to_owned());
        } else if let Some((k, v)) = t.split_once(':') {
            if k.contains('.') {
                r.attrs.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }
    routes
}

/// One route's first line, with or without the network in front (BIRD omits it for the
/// second and later routes of a network): `[NET] KIND [PROTO TIME] [*] (PREF) …`.
fn route_head(t: &str) -> Option<BirdRoute> {
    let open = t.find('[')?;
    let close = open + t.get(open..)?.find(']')?;
    let before: Vec<&str> = t.get(..open)?.split_whitespace().collect();
    let kind = before.last()?.to_string();
    if kind.ends_with(':') {
        return None;
    }
    let protocol = t
        .get(open + 1..close)?
        .split_whitespace()
        .next()?
        .to_owned();
    let best = t.get(close + 1..)?.split_whitespace().next() == Some("*");
    Some(BirdRoute {
        kind,
        protocol,
        best,
        via: None,
        attrs: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes_of_a_network() {
        let out = "Table master6:\n\
            2001:db8:100::1/128  unicast [lb 09:21:14.902] * (100) [i]\n\
            \tvia 2001:db8::11 on fa\n\
            \tType: BGP univ\n\
            \tBGP.origin: IGP\n\
            \tBGP.as_path: \n\
            \tBGP.next_hop: 2001:db8::11\n\
            \tBGP.local_pref: 150\n\
            \tBGP.community: (65000,1) (65000,100)\n\
            \x20                    unreachable [lb2 09:21:15.000] (100) [i]\n\
            \tType: BGP univ\n\
            \tBGP.local_pref: 100\n";
        let rs = parse_routes(out);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].kind, "unicast");
        assert_eq!(rs[0].protocol, "lb");
        assert!(rs[0].best);
        assert_eq!(rs[0].via.as_deref(), Some("2001:db8::11 on fa"));
        assert_eq!(rs[0].attrs["BGP.local_pref"], "150");
        assert_eq!(rs[0].attrs["BGP.community"], "(65000,1) (65000,100)");
        assert_eq!(rs[0].attrs["BGP.as_path"], "");
        assert_eq!(rs[1].kind, "unreachable");
        assert_eq!(rs[1].protocol, "lb2");
        assert!(!rs[1].best);
        assert_eq!(rs[1].attrs["BGP.local_pref"], "100");
    }

    #[test]
    fn network_not_found_is_no_route() {
        assert!(parse_routes("Network not found").is_empty());
    }
}
