//! Minimal launchers of BIRD 2 and FRR's `bfdd` in a test's network namespace, and readers of
//! their BFD session tables. Each process is a [`Daemon`]: stopped by its own pid on drop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use labkit::{Daemon, Netns};
use nix::sys::signal::Signal;

/// One row of a router's BFD session table.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterSession {
    /// The neighbor (our address).
    pub peer: IpAddr,
    /// `up`, `down`, `init`, `admindown` (lower case).
    pub state: String,
    /// What the router shows as its transmit interval, when it shows one (BIRD), ms.
    pub tx_ms: Option<u64>,
    /// Its detection time, when shown (BIRD), ms.
    pub detect_ms: Option<u64>,
    /// Our Desired Min TX as it last saw it (FRR), ms.
    pub remote_tx_ms: Option<u64>,
    /// Our Required Min RX as it last saw it (FRR), ms.
    pub remote_rx_ms: Option<u64>,
}

/// Runs `cmd`: its stdout if it exits 0.
fn stdout_if_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn world_readable_dir(tag: &str) -> tempfile::TempDir {
    let dir = labkit::scratch_dir(tag).unwrap();
    // FRR reads its configuration after dropping to the `frr` user.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn write_conf(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// BIRD 2 (`bird -f`) with a control socket of its own.
pub struct Bird {
    daemon: Daemon,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bird {
    /// Starts BIRD in `ns` with `conf` and waits until `birdc` answers.
    pub fn start(ns: &Netns, conf: &str) -> Bird {
        let dir = world_readable_dir("bird");
        let conf = write_conf(&dir, "bird.conf", conf);
        let sock = dir.path().join("bird.ctl");
        let mut cmd = ns.command("bird");
        cmd.arg("-f").arg("-c").arg(&conf).arg("-s").arg(&sock);
        let daemon = Daemon::spawn(cmd, &dir.path().join("bird.log")).unwrap();
        let bird = Bird {
            daemon,
            sock,
            _dir: dir,
        };
        let ok = labkit::wait_until(Duration::from_secs(10), || {
            bird.birdc(&["show", "status"]).is_some()
        });
        assert!(ok, "BIRD did not start: {}", bird.daemon.log_tail());
        bird
    }

    /// Runs `birdc ARGS` against this BIRD; its output, or `None` if it failed.
    pub fn birdc(&self, args: &[&str]) -> Option<String> {
        stdout_if_ok(Command::new("birdc").arg("-s").arg(&self.sock).args(args))
    }

    /// `birdc show bfd sessions`, parsed: `IP Interface State Since Interval Timeout`.
    pub fn sessions(&self) -> Vec<RouterSession> {
        let text = self.birdc(&["show", "bfd", "sessions"]).unwrap_or_default();
        let ms = |s: Option<&&str>| {
            s.and_then(|v| v.parse::<f64>().ok())
                .map(|secs| (secs * 1000.0).round() as u64)
        };
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let peer = f.first()?.parse().ok()?;
                Some(RouterSession {
                    peer,
                    state: f.get(2)?.to_ascii_lowercase(),
                    tx_ms: ms(f.get(4)),
                    detect_ms: ms(f.get(5)),
                    remote_tx_ms: None,
                    remote_rx_ms: None,
                })
            })
            .collect()
    }

    /// Sends `signal` to BIRD (SIGSTOP freezes it, SIGCONT thaws it).
    pub fn signal(&mut self, signal: Signal) {
        self.daemon.signal(signal).unwrap();
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        // A stopped process cannot act on SIGTERM.
        let _ = self.daemon.signal(Signal::SIGCONT);
    }
}

/// FRR's `zebra` and `bfdd` with their own pathspace (`-N NAME`: sockets and pid files in
/// `/var/run/frr/NAME/`, `vtysh -N NAME` to talk to them).
pub struct Frr {
    bfdd: Daemon,
    zebra: Daemon,
    name: String,
    run_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Frr {
    /// Starts zebra and bfdd in `ns` with `bfdd_conf` and waits until vtysh answers.
    pub fn start(ns: &Netns, bfdd_conf: &str) -> Frr {
        let name = ns.name().to_owned();
        let run_dir = PathBuf::from(format!("/var/run/frr/{name}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let chown = Command::new("chown")
            .arg("frr:frr")
            .arg(&run_dir)
            .status()
            .unwrap();
        assert!(chown.success(), "chown frr:frr {}", run_dir.display());
        let dir = world_readable_dir("frr");
        let zebra_conf = write_conf(&dir, "zebra.conf", "hostname r\n");
        let bfdd_conf = write_conf(&dir, "bfdd.conf", bfdd_conf);
        let spawn = |prog: &str, conf: &PathBuf, log: &str| {
            let mut cmd = ns.command(&format!("/usr/lib/frr/{prog}"));
            cmd.arg("-N")
                .arg(&name)
                .arg("-f")
                .arg(conf)
                .args(["--log", "stdout"]);
            Daemon::spawn(cmd, &dir.path().join(log)).unwrap()
        };
        let zebra = spawn("zebra", &zebra_conf, "zebra.log");
        let ok = labkit::wait_until(Duration::from_secs(10), || {
            run_dir.join("zserv.api").exists()
        });
        assert!(ok, "zebra did not start: {}", zebra.log_tail());
        let bfdd = spawn("bfdd", &bfdd_conf, "bfdd.log");
        let frr = Frr {
            bfdd,
            zebra,
            name,
            run_dir,
            _dir: dir,
        };
        let ok = labkit::wait_until(Duration::from_secs(10), || {
            frr.vtysh("show bfd peers json").is_some()
        });
        assert!(ok, "bfdd did not start: {}", frr.bfdd.log_tail());
        frr
    }

    /// `vtysh -N NAME -c CMD…`: its output, or `None` if it failed.
    pub fn vtysh(&self, cmds: &str) -> Option<String> {
        let mut cmd = Command::new("vtysh");
        cmd.arg("-N").arg(&self.name);
        for c in cmds.split(" ; ") {
            cmd.arg("-c").arg(c);
        }
        stdout_if_ok(&mut cmd)
    }

    /// `show bfd peers json`, parsed.
    pub fn sessions(&self) -> Vec<RouterSession> {
        let text = self.vtysh("show bfd peers json").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(RouterSession {
                    peer: p["peer"].as_str()?.parse().ok()?,
                    state: p["status"].as_str()?.to_ascii_lowercase(),
                    tx_ms: None,
                    detect_ms: None,
                    remote_tx_ms: p["remote-transmit-interval"].as_u64(),
                    remote_rx_ms: p["remote-receive-interval"].as_u64(),
                })
            })
            .collect()
    }

    /// Sends `signal` to bfdd.
    pub fn signal(&mut self, signal: Signal) {
        self.bfdd.signal(signal).unwrap();
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        let _ = self.bfdd.signal(Signal::SIGCONT);
        let _ = self.bfdd.stop();
        let _ = self.zebra.stop();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// The row of `peer` in `sessions`.
pub fn session(sessions: &[RouterSession], peer: &str) -> Option<RouterSession> {
    let peer: IpAddr = peer.parse().unwrap();
    sessions.iter().find(|s| s.peer == peer).cloned()
}
