//! The whole lab topology (`netns-lab/lab`) as a test fixture.
//!
//! ```text
//!  Lab::up("e2e", lab_gen)  ──  netns-lab/lab up   (LAB_PREFIX=e2e<pid>x<n>-, LAB_RUN=<temp
//!     │                          dir>, LAB_GEN=lab_gen: the files from crate::bridge::spec)
//!     │                  r1 r2 (gobgpd) · broker (RabbitMQ) · arbiter · lb1 lb2 lb3
//!     ├─ start_daemons / quorum / signal / restart  →  the same script's commands
//!     ├─ router("r1")  →  GobgpApi on run/r1/api.sock (RIB, sessions)
//!     └─ drop          →  netns-lab/lab down
//! ```
//!
//! Every `Lab` has its own namespaces and run directory, so tests may run side by side.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{bridge, describe, GobgpApi, Netns};

/// The lab script, next to this crate.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab");

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A running lab; `lab down` on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    run: tempfile::TempDir,
    lab_gen: PathBuf,
}

impl Lab {
    /// Brings a lab up (`lab up`): namespaces, bridge, both routers and the broker.
    /// `tag` (a few letters) starts the namespace names; `lab_gen` is the `lab-gen`
    /// binary that writes the files (`env!("CARGO_BIN_EXE_lab-gen")` in labkit's tests),
    /// so the script needs no cargo.
    pub fn up(tag: &str, lab_gen: &Path) -> io::Result<Lab> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{tag}{}x{id}-", std::process::id());
        let run = tempfile::Builder::new()
            .prefix(&format!("labkit-lab-{tag}-"))
            .tempdir()?;
        // RabbitMQ runs as user rabbitmq and must reach its directory inside.
        std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o755))?;
        let lab = Lab {
            prefix,
            run,
            lab_gen: lab_gen.to_owned(),
        };
        lab.script(&["up"])?;
        Ok(lab)
    }

    /// Runs `netns-lab/lab ARGS…` for this lab and returns its stdout; an error carries
    /// the command, its stdout and stderr.
    pub fn script(&self, args: &[&str]) -> io::Result<String> {
        let mut cmd = Command::new("bash");
        cmd.arg(SCRIPT)
            .args(args)
            .env("LAB_RUN", self.run.path())
            .env("LAB_PREFIX", &self.prefix)
            .env("LAB_GEN", &self.lab_gen);
        let out = cmd.output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{} ({}):\n{stdout}{}",
                describe(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(stdout)
    }

    /// `lab start-daemons`: ipvs-sync server on the arbiter, client on each balancer.
    pub fn start_daemons(&self) -> io::Result<()> {
        self.script(&["start-daemons"]).map(drop)
    }

    /// `lab quorum up ARG` (ARG: `VIP,b-LP,PORT`), as keepalived would call it.
    pub fn quorum_up(&self, arg: &str) -> io::Result<()> {
        self.script(&["quorum", "up", arg]).map(drop)
    }

    /// `lab quorum down ARG`.
    pub fn quorum_down(&self, arg: &str) -> io::Result<()> {
        self.script(&["quorum", "down", arg]).map(drop)
    }

    /// `lab signal NODE SIG`: TERM, KILL, STOP or CONT to a node's ipvs-sync.
    pub fn signal(&self, node: &str, sig: &str) -> io::Result<()> {
        self.script(&["signal", node, sig]).map(drop)
    }

    /// `lab restart NODE`: a router, the broker, or a node's ipvs-sync.
    pub fn restart(&self, node: &str) -> io::Result<()> {
        self.script(&["restart", node]).map(drop)
    }

    /// `lab ctl NODE ARGS…`: `ipvs-sync -c run/NODE/config.ini ARGS…` in the node.
    pub fn ctl(&self, node: &str, args: &[&str]) -> io::Result<String> {
        let mut all = vec!["ctl", node];
        all.extend_from_slice(args);
        self.script(&all)
    }

    /// The running daemon's own view: `ipvs-sync status --json` in the node.
    pub fn daemon_status(&self, node: &str) -> io::Result<serde_json::Value> {
        let out = self.ctl(node, &["status", "--json"])?;
        serde_json::from_str(&out).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("status --json: {e}: {out}"),
            )
        })
    }

    /// `lab status` output.
    pub fn status(&self) -> io::Result<String> {
        self.script(&["status"])
    }

    /// The API of router `r1` or `r2`.
    pub fn router(&self, name: &str) -> GobgpApi {
        GobgpApi::new(&format!(
            "unix://{}",
            self.run.path().join(name).join("api.sock").display()
        ))
    }

    /// A node's namespace (attached: dropping it leaves the namespace be).
    pub fn netns(&self, node: &str) -> io::Result<Netns> {
        Netns::attach(&self.ns_name(node))
    }

    /// The namespace name of a node.
    pub fn ns_name(&self, node: &str) -> String {
        format!("{}{node}", self.prefix)
    }

    /// The run directory (configs, secrets, desc files, logs).
    pub fn run_dir(&self) -> &Path {
        self.run.path()
    }

    /// A node's `config.ini`.
    pub fn config_path(&self, node: &str) -> PathBuf {
        self.run.path().join(node).join("config.ini")
    }

    /// The log file of a node's daemon (`broker`, `r1-gobgpd`, `lb1`, …).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.run.path().join("logs").join(format!("{name}.log"))
    }

    /// IPv4 transport address of a node ([`bridge::NODES`]).
    pub fn v4(node: &str) -> Option<Ipv4Addr> {
        bridge::v4(node)
    }

    /// IPv6 transport address of a node.
    pub fn v6(node: &str) -> Option<Ipv6Addr> {
        bridge::v6(node)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.script(&["down"]) {
            eprintln!("labkit: lab down: {e}");
        }
    }
}
