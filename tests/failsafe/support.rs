//! What the fail-safe tests break things with, and how they time a quorum `down`.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use labkit::fleet::Fleet;
use labkit::RibMonitor;

/// A tmpfs of a few pages mounted on a scratch directory, unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on a new scratch directory named after `tag`.
    pub fn mount(tag: &str, bytes: u64) -> io::Result<Tmpfs> {
        let dir = labkit::scratch_dir(tag)?;
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!("mount tmpfs: {status}")));
        }
        Ok(Tmpfs { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process of a failed test may still have a file open there.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` page by page until the file system says ENOSPC; the bytes written. At
/// most 64 MiB, so a file system that is not small fails the test instead of filling up.
pub fn fill(path: &Path) -> io::Result<u64> {
    const PAGE: [u8; 4096] = [0xa5; 4096];
    const LIMIT: u64 = 64 << 20;
    let mut f = File::create(path)?;
    let mut written = 0;
    while written < LIMIT {
        match f.write(&PAGE) {
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return Ok(written),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{} took {LIMIT} bytes without ENOSPC",
        path.display()
    )))
}

/// A process stuck while holding the exclusive `flock` of `lock` (the desc lock the
/// handler takes): a shell opens the file, `flock`s it and becomes `sleep`, so the one
/// process that holds the lock is the child; killed by pid on drop.
pub struct LockHolder {
    child: Child,
}

impl LockHolder {
    /// Starts the holder and returns once the lock is held (5 s at most).
    pub fn start(lock: &Path) -> io::Result<LockHolder> {
        let child = Command::new("bash")
            .args([
                "-c",
                "exec 9>\"$1\" && flock -x 9 && exec sleep 3600",
                "hold",
            ])
            .arg(lock)
            .stdin(Stdio::null())
            .spawn()?;
        let holder = LockHolder { child };
        let held = labkit::wait_until(Duration::from_secs(5), || is_locked(lock));
        if !held {
            return Err(io::Error::other(format!("{} not locked", lock.display())));
        }
        Ok(holder)
    }
}

/// Whether another open file holds the `flock` of `path` (trying it releases it at once).
fn is_locked(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One timed `ipvs-sync quorum down`.
pub struct Down {
    /// Just before the handler started → the withdraw on the router's RIB stream; `None`
    /// when it did not come within the timeout.
    pub at_router: Option<Duration>,
    /// Just before the handler started → its exit.
    pub handler: Duration,
    /// How it exited.
    pub status: ExitStatus,
    /// What it said.
    pub stderr: String,
}

/// Runs `ipvs-sync quorum down ARG` on the fleet's arbiter config once and waits up to
/// `timeout` for `prefix` withdrawn on `mon`'s stream and for the handler's exit (killed
/// by pid past it).
pub fn time_down(f: &Fleet, mon: &RibMonitor, arg: &str, prefix: &str, timeout: Duration) -> Down {
    let mut cmd = f.quorum_command("down", arg);
    cmd.stderr(Stdio::piped());
    mon.drain();
    let t0 = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let (tx, exit) = mpsc::channel();
    let reaper = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((out, Instant::now()));
    });
    let ev = mon.wait(prefix, true, timeout);
    let got = exit.recv_timeout(timeout);
    if got.is_err() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    reaper.join().unwrap();
    let (out, exited) = got.unwrap_or_else(|_| panic!("the handler ran over {timeout:?}"));
    let out = out.unwrap();
    Down {
        at_router: ev.map(|e| e.at.duration_since(t0)),
        handler: exited.duration_since(t0),
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Publishes `n` signed `fin_announce` broadcasts (of `vip`) as the arbiter would (its
/// key and `max_age`, a state directory of its own), with the crate's transport in the
/// broker's namespace, at most 500 awaiting their confirm. The arbiter must not run: the
/// transport consumes its queue meanwhile.
pub fn broadcast_fins(f: &Fleet, vip: std::net::IpAddr, n: usize) {
    use ipvs_sync::wire::messages::FinAnnounce;
    use ipvs_sync::wire::{Dest, Message, NodeKey, Role, Senders, Transport, TransportOptions};
    let url = f.amqp_url();
    let key = NodeKey::from_text(&f.spec.arbiter.key.to_text()).unwrap();
    let state_dir = f.scratch.path().join("broadcaster-state");
    let max_age = f.opts.max_age.map(Duration::from_secs);
    let sent = f.core.block_on(move || async move {
        let role = Role::Server {
            name: "arbiter".into(),
        };
        let senders = Senders::balancers(&key, "arbiter", Default::default());
        let mut opts = TransportOptions::new(key, senders, state_dir);
        if let Some(age) = max_age {
            opts.max_age = age;
        }
        let (t, _incoming) = Transport::connect(&url, role, opts).await.unwrap();
        let msg = Message::FinAnnounce(FinAnnounce { vips: vec![vip] });
        let mut left = n;
        while left > 0 {
            let batch = left.min(500);
            let mut flying = Vec::with_capacity(batch);
            for _ in 0..batch {
                flying.push(t.publish(Dest::Broadcast, &msg).await.unwrap());
            }
            for m in flying {
                t.confirmed(m).await.unwrap();
            }
            left -= batch;
        }
        t.close().await;
    });
    sent.unwrap();
}
