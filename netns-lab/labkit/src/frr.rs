//! An FRR router (bgpd, with or without zebra, optionally bfdd) running inside a namespace,
//! driven through `vtysh`.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{run_checked, scratch_dir, wait_until, Daemon, Netns};

/// Debian's FRR daemons.
const FRR_BIN: &str = "/usr/lib/frr";
/// How long [`Frr::start`] waits for each daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// FRR's `bgpd` in a namespace, with `zebra` (routes go into the namespace's kernel table, so
/// "installed" can be checked in the FIB) or without (`bgpd -Z`). Config, sockets, pid files
/// and logs live in a scratch directory of its own: the daemons get `--vty_socket`, `-i`,
/// `-z` and `--log` pointing there, so several instances run side by side without touching
/// `/var/run/frr`. Dropping it stops the daemons (by pid) and removes the directory.
///
/// bgpd runs as root (`-S`); zebra, which insists on a user in the `frrvty` group, as `frr`.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let ns = labkit::Netns::new("r1")?;
/// let frr = labkit::Frr::start(&ns, "router bgp 65000\n bgp router-id 192.0.2.1\n \
///     neighbor 192.0.2.11 remote-as 65000\n neighbor 192.0.2.11 passive\n")?;
/// let up = frr.wait_for(|f| f.neighbor_state("192.0.2.11").is_ok_and(|s| s == "Established"),
///                       std::time::Duration::from_secs(10));
/// # let _ = up; Ok(()) }
/// ```
#[derive(Debug)]
pub struct Frr {
    ns: String,
    bgpd: Daemon,
    zebra: Option<Daemon>,
    bfdd: Option<Daemon>,
    // Declared after the daemons so they are stopped before their directory goes.
    dir: tempfile::TempDir,
}

impl Frr {
    /// Starts zebra, then bgpd with `bgpd_config`, inside `ns`; returns once both answer.
    pub fn start(ns: &Netns, bgpd_config: &str) -> io::Result<Frr> {
        Self::start_with(ns, bgpd_config, true, false)
    }

    /// Starts bgpd alone (`-Z`: no zebra, nothing installed anywhere; next hops are not
    /// checked).
    pub fn start_without_zebra(ns: &Netns, bgpd_config: &str) -> io::Result<Frr> {
        Self::start_with(ns, bgpd_config, false, false)
    }

    /// Starts zebra, bfdd (empty config: bgpd's `neighbor X bfd` registers its sessions
    /// through zebra) and bgpd; bfdd's log is [`Frr::bfdd_log`].
    pub fn start_with_bfdd(ns: &Netns, bgpd_config: &str) -> io::Result<Frr> {
        Self::start_with(ns, bgpd_config, true, true)
    }

    fn start_with(
        ns: &Netns,
        bgpd_config: &str,
        with_zebra: bool,
        with_bfdd: bool,
    ) -> io::Result<Frr> {
        let dir = scratch_dir("frr")?;
        // zebra drops to user frr: it must reach and write the run directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let run = dir.path().join("run");
        std::fs::create_dir(&run)?;
        if with_zebra {
            let frr = nix::unistd::User::from_name("frr")
                .map_err(io::Error::from)?
                .ok_or_else(|| io::Error::other("no user frr: apt-get install frr"))?;
            std::os::unix::fs::chown(&run, Some(frr.uid.as_raw()), Some(frr.gid.as_raw()))?;
        }
        std::fs::write(run.join("bgpd.conf"), bgpd_config)?;
        let zebra = if with_zebra {
            Some(spawn_as_frr(ns, "zebra", &run, dir.path(), &[])?)
        } else {
            None
        };
        let bfdd = if with_bfdd {
            let ctl = run.join("bfdd.sock");
            Some(spawn_as_frr(
                ns,
                "bfdd",
                &run,
                dir.path(),
                &["--bfdctl".as_ref(), ctl.as_os_str()],
            )?)
        } else {
            None
        };
        let mut frr = Frr {
            ns: ns.name().to_owned(),
            bgpd: spawn_bgpd(ns, &run, with_zebra, dir.path())?,
            zebra,
            bfdd,
            dir,
        };
        frr.wait_up()?;
        Ok(frr)
    }

    /// Runs `vtysh -c COMMAND` against this instance and returns its output.
    pub fn vtysh(&self, command: &str) -> io::Result<String> {
        run_checked(
            Command::new("vtysh")
                .arg("--vty_socket")
                .arg(self.run_dir())
                .args(["-c", command]),
        )
    }

    /// `vtysh -c COMMAND` of a `… json` command, parsed.
    pub fn vtysh_json(&self, command: &str) -> io::Result<Value> {
        let out = self.vtysh(command)?;
        serde_json::from_str(out.trim())
            .map_err(|e| io::Error::other(format!("{command}: not JSON ({e}): {out}")))
    }

    /// The BGP state with a neighbor as FRR names it (`Idle`, `Connect`, `Active`,
    /// `OpenSent`, `OpenConfirm`, `Established`).
    pub fn neighbor_state(&self, addr: &str) -> io::Result<String> {
        let v = self.vtysh_json(&format!("show bgp neighbors {addr} json"))?;
        v[addr]["bgpState"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other(format!("no bgpState for {addr}: {v}")))
    }

    /// The paths bgpd holds for exactly `prefix` (`show bgp ipv4|ipv6 unicast PREFIX json`),
    /// as FRR prints them (`valid`, `bestpath`, `locPrf`, `nexthops`, …); empty when none.
    pub fn bgp_paths(&self, prefix: &str) -> io::Result<Vec<Value>> {
        let afi = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let out = self.vtysh(&format!("show bgp {afi} unicast {prefix} json"))?;
        // A prefix FRR does not have prints `{}` (or, in some versions, a "not in table" text).
        let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        Ok(v["paths"].as_array().cloned().unwrap_or_default())
    }

    /// Whether bgpd has a valid best path for `prefix` (what FRR would install).
    pub fn has_best_path(&self, prefix: &str) -> bool {
        self.bgp_paths(prefix).is_ok_and(|ps| {
            ps.iter().any(|p| {
                p["valid"].as_bool() == Some(true)
                    && p["bestpath"]["overall"].as_bool() == Some(true)
            })
        })
    }

    /// Whether zebra installed a BGP route for `prefix` in the kernel (`show ip|ipv6 route
    /// PREFIX json`: selected and installed). Always false without zebra.
    pub fn fib_installed(&self, prefix: &str) -> bool {
        if self.zebra.is_none() {
            return false;
        }
        let afi = if prefix.contains(':') { "ipv6" } else { "ip" };
        self.vtysh_json(&format!("show {afi} route {prefix} json"))
            .is_ok_and(|v| {
                v[prefix].as_array().is_some_and(|rs| {
                    rs.iter().any(|r| {
                        r["protocol"] == "bgp"
                            && r["selected"].as_bool() == Some(true)
                            && r["installed"].as_bool() == Some(true)
                    })
                })
            })
    }

    /// Polls `cond` every 50 ms until it holds (→ `true`) or `timeout` passes (→ `false`).
    pub fn wait_for(&self, cond: impl Fn(&Frr) -> bool, timeout: Duration) -> bool {
        wait_until(timeout, || cond(self))
    }

    /// bgpd's log (`debug bgp …` lines in the config land here), as text.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// bfdd's log, as text (empty without bfdd).
    pub fn bfdd_log(&self) -> String {
        std::fs::read_to_string(self.run_dir().join("bfdd.log")).unwrap_or_default()
    }

    /// Path of bgpd's log file.
    pub fn log_path(&self) -> PathBuf {
        self.run_dir().join("bgpd.log")
    }

    /// bgpd's process id.
    pub fn pid(&self) -> u32 {
        self.bgpd.pid()
    }

    /// Name of the namespace it runs in.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Waits until each daemon's vty answers, failing early if one has exited.
    fn wait_up(&mut self) -> io::Result<()> {
        let run = self.run_dir();
        let mut daemons: Vec<(&str, &mut Daemon)> = vec![("bgpd", &mut self.bgpd)];
        if let Some(z) = self.zebra.as_mut() {
            daemons.push(("zebra", z));
        }
        if let Some(b) = self.bfdd.as_mut() {
            daemons.push(("bfdd", b));
        }
        for (name, d) in daemons {
            let mut exited = None;
            let up = wait_until(START_TIMEOUT, || {
                if let Ok(Some(status)) = d.exited() {
                    exited = Some(status);
                    return true;
                }
                run_checked(Command::new("vtysh").arg("--vty_socket").arg(&run).args([
                    "-d",
                    name,
                    "-c",
                    "show version",
                ]))
                .is_ok()
            });
            match (up, exited) {
                (_, Some(status)) => return Err(d.failure(&format!("exited ({status})"))),
                (false, None) => {
                    return Err(d.failure(&format!("vty silent after {START_TIMEOUT:?}")))
                }
                (true, None) => {}
            }
        }
        Ok(())
    }
}

/// Spawns FRR daemon `name` (zebra, bfdd) in `ns` as user `frr`, with an empty config, its
/// pid file, vty socket and log in `run`, talking to zebra's socket there, `extra` arguments
/// added (stdout/stderr to `dir/NAME.out`).
fn spawn_as_frr(
    ns: &Netns,
    name: &str,
    run: &Path,
    dir: &Path,
    extra: &[&std::ffi::OsStr],
) -> io::Result<Daemon> {
    let conf = run.join(format!("{name}.conf"));
    std::fs::write(&conf, "")?;
    let mut cmd = ns.command(&format!("{FRR_BIN}/{name}"));
    cmd.arg("-f")
        .arg(conf)
        .arg("-z")
        .arg(run.join("zserv.api"))
        .arg("-i")
        .arg(run.join(format!("{name}.pid")))
        .arg("--vty_socket")
        .arg(run)
        .args(extra)
        .args(["-u", "frr", "-g", "frr", "--log"])
        .arg(format!(
            "file:{}",
            run.join(format!("{name}.log")).display()
        ));
    Daemon::spawn(cmd, &dir.join(format!("{name}.out")))
}

/// Spawns bgpd in `ns` with its files in `run` (stdout/stderr to `dir/bgpd.out`).
fn spawn_bgpd(ns: &Netns, run: &Path, with_zebra: bool, dir: &Path) -> io::Result<Daemon> {
    let zserv = run.join("zserv.api");
    if with_zebra {
        // bgpd gives up on zebra if its socket is not there yet when it starts.
        if !wait_until(START_TIMEOUT, || zserv.exists()) {
            return Err(io::Error::other(format!(
                "zebra did not create {}",
                zserv.display()
            )));
        }
    }
    let mut cmd = ns.command(&format!("{FRR_BIN}/bgpd"));
    cmd.arg("-f")
        .arg(run.join("bgpd.conf"))
        .arg("-i")
        .arg(run.join("bgpd.pid"))
        .arg("--vty_socket")
        .arg(run)
        .arg("-S")
        .arg("--log")
        .arg(format!("file:{}", run.join("bgpd.log").display()));
    if with_zebra {
        cmd.arg("-z").arg(&zserv);
    } else {
        cmd.arg("-Z");
    }
    Daemon::spawn(cmd, &dir.join("bgpd.out"))
}
