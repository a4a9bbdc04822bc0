//! Small things every lab test needs: bounded polling, free ports, scratch directories.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

/// Poll interval of [`wait_until`]: short enough to time convergence in tens of
/// milliseconds, long enough not to load a router with RIB dumps.
const POLL: Duration = Duration::from_millis(50);

/// Polls `cond` every 50 ms until it returns true (→ `true`) or `timeout` has passed
/// (→ `false`). `cond` is always tried at least once, and once more at the deadline.
pub fn wait_until(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_every(timeout, POLL, cond)
}

/// Like [`wait_until`], polling every `every`: slower for conditions that cost a lot to
/// look at (several processes under TCG).
pub fn wait_every(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

/// A TCP port on 127.0.0.1 of the host's namespace that was free a moment ago.
///
/// Inside a fresh namespace every port is free, so this is only for things that listen
/// on the host's loopback.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A fresh directory under the system temp dir named `labkit-TAG-…`, removed on drop.
pub fn scratch_dir(tag: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("labkit-{tag}-"))
        .tempdir()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn wait_until_returns_once_the_condition_holds() {
        let calls = Cell::new(0);
        let start = Instant::now();
        assert!(wait_until(Duration::from_secs(5), || {
            calls.set(calls.get() + 1);
            calls.get() == 3
        }));
        assert_eq!(calls.get(), 3);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn wait_until_gives_up_at_the_deadline() {
        let calls = Cell::new(0);
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(200), || {
            calls.set(calls.get() + 1);
            false
        }));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2));
        // 200 ms at a 50 ms pace: a handful of tries, not a busy loop.
        assert!((3..=8).contains(&calls.get()), "{} calls", calls.get());
    }

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn scratch_dir_is_named_and_removed() {
        let dir = scratch_dir("gobgpd").unwrap();
        let path = dir.path().to_owned();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("labkit-gobgpd-"), "{name}");
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }
}
