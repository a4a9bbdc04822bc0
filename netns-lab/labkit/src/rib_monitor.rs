//! A router's RIB as a stream of timestamped events: `gobgp monitor global rib -j`.

use std::io;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::GobgpApi;

/// A change of a router's best path, as `gobgp monitor global rib -j` streams it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibEvent {
    /// When the reader thread read the line: the clock of every monitor of this crate
    /// ([`crate::AddrMonitor`] too), so events of both compare.
    pub at: Instant,
    /// The prefix, e.g. `203.0.113.10/32`.
    pub prefix: String,
    /// True for a withdraw (the router lost its best path).
    pub withdrawal: bool,
    /// LOCAL_PREF of the path, if it carries one.
    pub local_pref: Option<u64>,
    /// The peer the path came from (`neighbor-ip`), if any.
    pub neighbor: Option<String>,
}

/// A long-running `gobgp monitor global rib -j -a FAMILY` against one router. A reader
/// thread timestamps each line as it arrives and sends its paths as [`RibEvent`]s, so
/// observing the router costs no process start per look (a `gobgp` call costs ~20 ms).
/// Dropping it kills the CLI process (by pid) and joins the reader.
#[derive(Debug)]
pub struct RibMonitor {
    child: Child,
    events: Receiver<RibEvent>,
    reader: Option<JoinHandle<()>>,
}

impl RibMonitor {
    /// Starts the stream against `api` and returns once it is live: a sentinel route
    /// (`sentinel`, a host prefix no test uses) is added to the router's global RIB,
    /// seen on the stream, deleted and seen withdrawn.
    pub fn start(api: &GobgpApi, family: &str, sentinel: &str) -> io::Result<RibMonitor> {
        let mut child = Command::new("gobgp")
            .args(["--target", api.target(), "monitor", "global", "rib", "-j"])
            .args(["-a", family])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start gobgp monitor: {e}")))?;
        let (events, reader) = crate::read_stream(&mut child, "gobgp monitor", parse_line)?;
        let m = RibMonitor {
            child,
            events,
            reader: Some(reader),
        };
        let fam = if family == "ipv6" { "ipv6" } else { "ipv4" };
        // The stream may connect after a first add: repeat until one shows up.
        let mut live = false;
        for _ in 0..20 {
            api.cli(&["global", "rib", "add", sentinel, "-a", fam])?;
            if m.wait(sentinel, false, Duration::from_millis(500))
                .is_some()
            {
                live = true;
                break;
            }
            api.cli(&["global", "rib", "del", sentinel, "-a", fam])?;
        }
        if !live {
            return Err(io::Error::other(format!(
                "gobgp monitor on {} never showed {sentinel}",
                api.target()
            )));
        }
        api.cli(&["global", "rib", "del", sentinel, "-a", fam])?;
        if m.wait(sentinel, true, Duration::from_secs(5)).is_none() {
            return Err(io::Error::other(format!(
                "sentinel {sentinel} not withdrawn on the stream of {}",
                api.target()
            )));
        }
        Ok(m)
    }

    /// Throws away every event received so far.
    pub fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// The next event for `prefix` with the given `withdrawal` flag, skipping others,
    /// or `None` after `timeout`.
    pub fn wait(&self, prefix: &str, withdrawal: bool, timeout: Duration) -> Option<RibEvent> {
        self.wait_for(timeout, |ev| {
            ev.prefix == prefix && ev.withdrawal == withdrawal
        })
    }

    /// The next event that satisfies `pred`, skipping others, or `None` after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&RibEvent) -> bool,
    ) -> Option<RibEvent> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.events.recv_timeout(left) {
                Ok(ev) if pred(&ev) => return Some(ev),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Every event that arrives within `window` (for counting a bulk of routes, or a
    /// timeline to check afterwards).
    pub fn collect(&self, window: Duration) -> Vec<RibEvent> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(ev) => out.push(ev),
                Err(_) => break,
            }
        }
        out
    }

    /// Every event received so far, without waiting.
    pub fn take(&self) -> Vec<RibEvent> {
        self.events.try_iter().collect()
    }

    /// The CLI process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Times one change: spawns `cmd` (a quorum handler) and waits up to `timeout` for
    /// the stream to show `prefix` announced with LOCAL_PREF `lp`, or withdrawn when `lp`
    /// is `None`. Both figures count from just before the spawn. A change that does not
    /// show in time is waited for once more, so it does not land in the next round; the
    /// handler must exit 0 within [`HANDLER_TIMEOUT`] (it is killed otherwise).
    pub fn time_change(
        &self,
        mut cmd: Command,
        prefix: &str,
        lp: Option<u64>,
        timeout: Duration,
    ) -> io::Result<Timed> {
        self.drain();
        let t0 = Instant::now();
        let mut child = cmd.spawn()?;
        let pid = child.id();
        // The handler may exit before or after the route moves: reap it on the side.
        let (tx, exit) = mpsc::channel();
        let reaper = std::thread::spawn(move || {
            let _ = tx.send((child.wait(), Instant::now()));
        });
        let wanted = |e: &RibEvent| {
            e.prefix == prefix
                && e.withdrawal == lp.is_none()
                && (lp.is_none() || e.local_pref == lp)
        };
        let ev = self.wait_for(timeout, wanted);
        if ev.is_none() {
            let _ = self.wait_for(timeout, wanted);
            self.drain();
        }
        let waited = exit.recv_timeout(HANDLER_TIMEOUT);
        if waited.is_err() {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = reaper.join();
        let (status, exited) = waited.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} ran over {HANDLER_TIMEOUT:?}", crate::describe(&cmd)),
            )
        })?;
        let status = status?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "{}: {status}",
                crate::describe(&cmd)
            )));
        }
        Ok(Timed {
            at_router: ev.map(|e| e.at.duration_since(t0)),
            handler: exited.duration_since(t0),
        })
    }
}

/// How long a handler timed by [`RibMonitor::time_change`] may run.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`RibMonitor::time_change`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    /// Spawn → the change on the router's stream; `None` when it did not show in time.
    pub at_router: Option<Duration>,
    /// Spawn → the handler's exit.
    pub handler: Duration,
}

impl Drop for RibMonitor {
    fn drop(&mut self) {
        crate::stop_stream(&mut self.child, self.reader.take());
    }
}

/// The events of one line of `gobgp monitor global rib -j`: a JSON array of paths.
fn parse_line(line: &str, at: Instant) -> Vec<RibEvent> {
    let Ok(serde_json::Value::Array(paths)) = serde_json::from_str(line) else {
        return Vec::new();
    };
    paths
        .iter()
        .map(|p| RibEvent {
            at,
            prefix: p["nlri"]["prefix"].as_str().unwrap_or_default().to_owned(),
            withdrawal: p["withdrawal"].as_bool().unwrap_or(false),
            local_pref: p["attrs"].as_array().and_then(|a| {
                a.iter()
                    .find(|x| x["type"].as_u64() == Some(5))
                    .and_then(|x| x["value"].as_u64())
            }),
            neighbor: p["neighbor-ip"].as_str().map(str::to_owned),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monitor_line_gives_one_event_per_path() {
        // Captured from gobgp 3.10's `monitor global rib -j` (attributes trimmed).
        let line = r#"[{"nlri":{"prefix":"203.0.113.10/32"},"age":1,"best":true,"attrs":[{"type":1,"value":0},{"type":5,"value":150}],"neighbor-ip":"198.51.100.33"},{"nlri":{"prefix":"203.0.113.11/32"},"withdrawal":true,"attrs":[]}]"#;
        let at = Instant::now();
        let evs = parse_line(line, at);
        assert_eq!(
            evs,
            [
                RibEvent {
                    at,
                    prefix: "203.0.113.10/32".into(),
                    withdrawal: false,
                    local_pref: Some(150),
                    neighbor: Some("198.51.100.33".into()),
                },
                RibEvent {
                    at,
                    prefix: "203.0.113.11/32".into(),
                    withdrawal: true,
                    local_pref: None,
                    neighbor: None,
                },
            ]
        );
        assert!(parse_line("not json", at).is_empty());
    }
}
