//! The balancer's own keepalived, run by the client in fallback: a child process known by its
//! pid, with its own pid files and config under `state_dir/keepalived/`.
//!
//! The config is one file that includes this balancer's keepalived configs (the files of
//! `service_mapping_wildcard` that name this host, brought here by `sync`). keepalived runs
//! the checkers only (`--check`: no VRRP) and with `--dont-release-ipvs`: when it stops, the
//! virtual servers stay as they are, because by then the client has applied the arbiter's
//! tree over them (the difference, no flush), and a keepalived that removed its virtual
//! servers on the way out would take live services away.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tracing::{info, warn};

/// How long keepalived may take to stop on SIGTERM before it is killed.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

/// This balancer's keepalived configs: the files `wildcard` gives `hostname`, sorted.
pub fn balancer_configs(wildcard: &config::paths::MappingWildcard, hostname: &str) -> Vec<PathBuf> {
    let Some(pattern) = wildcard.for_balancer(hostname) else {
        return Vec::new();
    };
    let Ok(paths) = glob::glob(&pattern) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// The top config: a `global_defs` of its own, then one `include` per file.
pub fn top_config(hostname: &str, files: &[PathBuf]) -> String {
    let mut s = format!(
        "# Written by ipvs-sync client for its fallback; replaced on each start.\n\
         global_defs {{\n    router_id ipvs-sync-fallback-{}\n}}\n",
        hostname.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
            "_"
        )
    );
    for f in files {
        s.push_str(&format!("include {}\n", f.display()));
    }
    s
}

/// keepalived as a child of the client.
#[derive(Debug)]
pub struct Keepalived {
    program: PathBuf,
    dir: PathBuf,
    hostname: String,
    child: Option<Child>,
}

impl Keepalived {
    /// keepalived at `program`, its files under `state_dir/keepalived`.
    pub fn new(program: &Path, state_dir: &Path, hostname: &str) -> Keepalived {
        Keepalived {
            program: program.to_owned(),
            dir: state_dir.join("keepalived"),
            hostname: hostname.to_owned(),
            child: None,
        }
    }

    /// Its pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The arguments it runs with.
    pub fn args(&self) -> Vec<String> {
        let f = |n: &str| self.dir.join(n).display().to_string();
        vec![
            "--dont-fork".into(),
            "--log-console".into(),
            "--log-detail".into(),
            "--check".into(),
            "--dont-release-ipvs".into(),
            "--use-file".into(),
            f("keepalived.conf"),
            "--pid".into(),
            f("keepalived.pid"),
            "--checkers_pid".into(),
            f("checkers.pid"),
            "--vrrp_pid".into(),
            f("vrrp.pid"),
        ]
    }

    /// Writes the top config over `files` and starts keepalived (a running one is left alone).
    pub fn start(&mut self, files: &[PathBuf]) -> Result<u32, String> {
        if let Some(pid) = self.pid() {
            return Ok(pid);
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let conf = self.dir.join("keepalived.conf");
        config::atomic_file::replace(&conf, top_config(&self.hostname, files).as_bytes(), 0o600)
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        let child = Command::new(&self.program)
            .args(self.args())
            .stdin(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.program.display()))?;
        let pid = child.id().unwrap_or_default();
        info!(pid, files = files.len(), "keepalived started");
        self.child = Some(child);
        Ok(pid)
    }

    /// Whether it exited by itself since the last look (`Some(why)`); it is forgotten then.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            Err(e) => {
                self.child = None;
                Some(e.to_string())
            }
        }
    }

    /// Stops it (SIGTERM to its pid, SIGKILL after [`STOP_WAIT`]); it leaves IPVS as it is.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Some(pid) = child.id() else {
            return;
        };
        if let Ok(raw) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        }
        match tokio::time::timeout(STOP_WAIT, child.wait()).await {
            Ok(Ok(status)) => info!(pid, %status, "keepalived stopped"),
            Ok(Err(e)) => warn!(pid, error = %e, "keepalived: waiting for its exit failed"),
            Err(_) => {
                warn!(
                    pid,
                    "keepalived did not stop in {} s: killed",
                    STOP_WAIT.as_secs()
                );
                let _ = child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_config_includes_each_file() {
        let files = vec![
            PathBuf::from("/etc/keepalived/lbs/lb1/http/a.conf"),
            PathBuf::from("/etc/keepalived/lbs/lb1/dns/b.conf"),
        ];
        let c = top_config("lb1 x", &files);
        assert!(c.contains("router_id ipvs-sync-fallback-lb1_x\n"), "{c}");
        assert!(c.ends_with(
            "include /etc/keepalived/lbs/lb1/http/a.conf\ninclude /etc/keepalived/lbs/lb1/dns/b.conf\n"
        ));
    }

    #[test]
    fn only_this_balancers_files() {
        let d = tempfile::tempdir().unwrap();
        for (lb, f) in [("lb1", "a.conf"), ("lb1", "b.conf"), ("lb2", "c.conf")] {
            let dir = d.path().join("lbs").join(lb).join("svc");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(f), "").unwrap();
        }
        let w = config::paths::MappingWildcard::parse(&format!(
            "{}/lbs/*/*/*.conf",
            d.path().display()
        ))
        .unwrap();
        let got = balancer_configs(&w, "lb1");
        let names: Vec<_> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.conf", "b.conf"]);
        assert!(balancer_configs(&w, "lb3").is_empty());
    }

    #[test]
    fn it_runs_checkers_only_and_leaves_ipvs_on_exit() {
        let k = Keepalived::new(
            Path::new("/usr/sbin/keepalived"),
            Path::new("/var/lib/ipvs-sync"),
            "lb1",
        );
        let a = k.args();
        assert!(a.contains(&"--check".to_owned()));
        assert!(a.contains(&"--dont-release-ipvs".to_owned()));
        assert!(a.contains(&"/var/lib/ipvs-sync/keepalived/keepalived.conf".to_owned()));
        assert!(a.contains(&"/var/lib/ipvs-sync/keepalived/keepalived.pid".to_owned()));
    }
}
