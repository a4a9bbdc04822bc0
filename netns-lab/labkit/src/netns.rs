//! Named network namespaces (`ip netns`) and veth pairs between them.

use std::fs::File;
use std::io;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::run_checked;

/// Counter that makes names unique within this process; the pid makes them unique
/// across the test processes nextest runs in parallel.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Longest tag kept in a namespace name; the rest of the name is `-PID-N`.
const MAX_TAG: usize = 24;

/// A named network namespace (`/run/netns/NAME`) with `lo` up.
///
/// Dropping it kills any process still inside (other than this one) and deletes it,
/// like `ip netns pids NAME | xargs kill -9; ip netns del NAME`.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Created by us (deleted on drop) or attached to (left alone).
    owned: bool,
}

impl Netns {
    /// Creates a namespace named `TAG-PID-N` and brings its `lo` up, like
    /// `ip netns add NAME && ip -n NAME link set lo up`.
    pub fn new(tag: &str) -> io::Result<Netns> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = unique_name(tag, std::process::id(), id);
        run_checked(Command::new("ip").args(["netns", "add", &name]))?;
        // Constructed before bringing lo up so a failure below still deletes it.
        let ns = Netns { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Attaches to an existing namespace, e.g. a node of `netns-lab/lab up`
    /// (`lab-lb1`). Dropping it leaves the namespace and its processes alone.
    pub fn attach(name: &str) -> io::Result<Netns> {
        let path = format!("/run/netns/{name}");
        if !std::path::Path::new(&path).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no network namespace {name} ({path})"),
            ));
        }
        Ok(Netns {
            name: name.to_owned(),
            owned: false,
        })
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `prog` inside the namespace: `ip netns exec NAME prog`.
    ///
    /// `ip netns exec` execs `prog` in place, so the child's pid is `prog`'s pid.
    pub fn command(&self, prog: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, prog]);
        cmd
    }

    /// Spawns `cmd` (made by [`Netns::command`]) and returns once the child is inside
    /// the namespace, so [`Netns::pids`] lists it and dropping the namespace ends it.
    ///
    /// `spawn` alone returns while `ip netns exec` may not yet have switched; a child
    /// still outside would be missed by the drop and could then join a namespace that
    /// no longer has a name. Waits at most 5 s, then kills the child and fails.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<std::process::Child> {
        let want = std::fs::metadata(format!("/run/netns/{}", self.name))?;
        let mut child = cmd.spawn()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let ns = std::fs::metadata(format!("/proc/{}/ns/net", child.id()));
            if ns.is_ok_and(|m| same_file(&m, &want)) {
                return Ok(child);
            }
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{cmd:?} exited ({status}) before it entered {}",
                    self.name
                )));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{cmd:?} did not enter {} within 5 s", self.name),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Runs `ip -n NAME ARGS…` and returns its stdout; fails with ip's stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `prog ARGS…` inside the namespace to completion and returns its stdout;
    /// fails with the command line and its stderr.
    pub fn run(&self, prog: &str, args: &[&str]) -> io::Result<String> {
        run_checked(self.command(prog).args(args))
    }

    /// Runs `prog ARGS…` inside the namespace with `input` on its stdin (`ipvsadm -R`,
    /// say) and returns its stdout; fails with the command line and its stderr.
    pub fn run_with_input(&self, prog: &str, args: &[&str], input: &str) -> io::Result<String> {
        let mut cmd = self.command(prog);
        cmd.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            io::Write::write_all(&mut stdin, input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{} failed ({}): {}",
                crate::describe(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Moves the CURRENT thread into the namespace (`setns(2)` with `CLONE_NEWNET`).
    ///
    /// Call it before building a tokio runtime: threads spawned afterwards inherit the
    /// namespace, so every socket the runtime opens lives inside it. The thread stays
    /// there; other threads of the process are not moved.
    pub fn enter(&self) -> io::Result<()> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open {path}: {e}")))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| io::Error::other(format!("setns({path}): {e}")))
    }

    /// Runs the future `work` makes to completion on a thread of its own inside the
    /// namespace ([`Netns::enter`]), on a current-thread tokio runtime, and returns its
    /// output: a test's AMQP or BGP client that must reach an address only the namespace
    /// routes.
    pub fn block_on<F>(&self, work: impl FnOnce() -> F + Send + 'static) -> io::Result<F::Output>
    where
        F: std::future::Future,
        F::Output: Send + 'static,
    {
        let ns = Netns::attach(&self.name)?;
        std::thread::spawn(move || {
            ns.enter()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(work()))
        })
        .join()
        .map_err(|_| io::Error::other("the namespace's thread panicked"))?
    }

    /// Pids of the processes whose network namespace is this one (`ip netns pids`).
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let out = run_checked(Command::new("ip").args(["netns", "pids", &self.name]))?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // A process left inside keeps the namespace (and its sockets) alive after the
        // name is gone; those processes were started by this test, so end them.
        let me = std::process::id();
        for pid in self.pids().unwrap_or_default() {
            if pid != me {
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(raw),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if let Err(e) = run_checked(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("labkit: {e}");
        }
    }
}

/// Creates a veth pair with one end in `a` and the other in `b`, puts the addresses
/// (CIDR strings, e.g. `"192.0.2.1/24"`, `"2001:db8::1/64"`) on each end and brings
/// both up. IPv6 addresses are added with `nodad` so they are usable at once.
pub fn veth(a: &Netns, a_addrs: &[&str], b: &Netns, b_addrs: &[&str]) -> io::Result<()> {
    veth_pair(a, a_addrs, b, b_addrs).map(drop)
}

/// Like [`veth`], and returns the interface names `(in a, in b)`, for `tcpdump -i` or
/// a daemon's `interface` setting.
pub fn veth_pair(
    a: &Netns,
    a_addrs: &[&str],
    b: &Netns,
    b_addrs: &[&str],
) -> io::Result<(String, String)> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (a_if, b_if) = (format!("lk{id}a"), format!("lk{id}b"));
    // Created directly inside the namespaces, so the names need only be unique there
    // and nothing ever appears in the host's namespace.
    a.ip(&[
        "link", "add", &a_if, "type", "veth", "peer", "name", &b_if, "netns", &b.name,
    ])?;
    configure_end(a, &a_if, a_addrs)?;
    configure_end(b, &b_if, b_addrs)?;
    Ok((a_if, b_if))
}

/// Adds the addresses to one end of a veth and brings it up.
fn configure_end(ns: &Netns, ifname: &str, addrs: &[&str]) -> io::Result<()> {
    for addr in addrs {
        let mut args = vec!["addr", "add", addr, "dev", ifname];
        if addr.contains(':') {
            args.push("nodad");
        }
        ns.ip(&args)?;
    }
    ns.ip(&["link", "set", ifname, "up"])?;
    Ok(())
}

/// `TAG-PID-N`, with the tag reduced to characters `ip netns` and file names accept.
fn unique_name(tag: &str, pid: u32, id: u32) -> String {
    let clean: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_TAG)
        .collect();
    let clean = if clean.is_empty() {
        "ns".to_owned()
    } else {
        clean
    };
    format!("{clean}-{pid}-{id}")
}

/// Whether two stat results name the same inode (namespace files compare this way).
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_tag_pid_and_counter() {
        assert_eq!(unique_name("r1", 4242, 7), "r1-4242-7");
    }

    #[test]
    fn names_drop_characters_ip_netns_rejects() {
        assert_eq!(unique_name("lb/1 x", 1, 0), "lb_1_x-1-0");
        assert_eq!(unique_name("", 1, 0), "ns-1-0");
        assert_eq!(unique_name("../etc", 1, 0), "___etc-1-0");
    }

    #[test]
    fn attach_to_a_missing_namespace_fails() {
        let err = Netns::attach("labkit-no-such-ns").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn long_tags_are_cut() {
        let name = unique_name(&"x".repeat(100), 1, 2);
        assert_eq!(name, format!("{}-1-2", "x".repeat(MAX_TAG)));
    }

    #[test]
    fn command_runs_ip_netns_exec() {
        // Built by hand, so no namespace is created and no root is needed.
        let ns = Netns {
            name: "t-1-0".into(),
            owned: false,
        };
        let cmd = ns.command("gobgp");
        assert_eq!(crate::describe(&cmd), "ip netns exec t-1-0 gobgp");
    }
}
