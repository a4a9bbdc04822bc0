//! A background process owned by a test: output to a log file, stopped by pid on drop.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{describe, wait_until};

/// How long [`Daemon::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Bytes of the log quoted in error messages.
const LOG_TAIL: u64 = 2048;

/// A spawned background process whose stdout and stderr go to a log file (appended).
///
/// Dropping it stops it: SIGTERM, then SIGKILL after a grace period, always by its own
/// pid and nothing else.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: PathBuf,
    what: String,
}

impl Daemon {
    /// Spawns `cmd` with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> io::Result<Daemon> {
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let what = describe(&cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {what}: {e}")))?;
        Ok(Daemon {
            child,
            log: log.to_owned(),
            what,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file its output goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `None` while it runs, its exit status once it has exited (reaped).
    pub fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends `signal` to the process (e.g. SIGKILL to simulate a crash, SIGSTOP to
    /// freeze it); does nothing if it has already exited.
    pub fn signal(&mut self, signal: Signal) -> io::Result<()> {
        if self.exited()?.is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id()).map_err(io::Error::other)?;
        kill(Pid::from_raw(pid), signal).map_err(io::Error::from)
    }

    /// Stops it (SIGTERM, SIGKILL after a grace period) and reaps it.
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exited()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        // Polled so the grace period ends as soon as the process does.
        if !wait_until(STOP_GRACE, || matches!(self.child.try_wait(), Ok(Some(_)))) {
            self.signal(Signal::SIGKILL)?;
        }
        self.child.wait()
    }

    /// The last couple of KiB of the log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// An error saying the process exited or misbehaved, with the end of its log.
    pub fn failure(&self, why: &str) -> io::Error {
        io::Error::other(format!(
            "{}: {why}; log {}:\n{}",
            self.what,
            self.log.display(),
            self.log_tail()
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("labkit: stopping {}: {e}", self.what);
        }
    }
}

/// The last [`LOG_TAIL`] bytes of a file, or a note that it cannot be read.
fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read log: {e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn output_goes_to_the_log_and_exit_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("echo.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; echo oops >&2"]);
        let mut d = Daemon::spawn(cmd, &log).unwrap();
        assert!(wait_until(Duration::from_secs(5), || d
            .exited()
            .unwrap()
            .is_some()));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("hello") && text.contains("oops"), "{text}");
        assert!(d.log_tail().contains("oops"));
    }

    #[test]
    fn stop_ends_a_running_process_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let mut d = Daemon::spawn(cmd, &dir.path().join("sleep.log")).unwrap();
        let start = Instant::now();
        let status = d.stop().unwrap();
        assert!(!status.success());
        assert!(start.elapsed() < STOP_GRACE, "{:?}", start.elapsed());
        assert!(d.exited().unwrap().is_some());
    }

    #[test]
    fn stop_escalates_to_sigkill_when_term_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        // The shell ignores TERM and keeps running until killed.
        cmd.args([
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ]);
        let log = dir.path().join("stubborn.log");
        let mut d = Daemon::spawn(cmd, &log).unwrap();
        assert!(wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ready")
        }));
        let start = Instant::now();
        let status = d.stop().unwrap();
        assert!(start.elapsed() >= STOP_GRACE);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    }

    #[test]
    fn log_tail_keeps_only_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut text = "a".repeat(10_000);
        text.push_str("THE END");
        std::fs::write(&path, &text).unwrap();
        let tail = log_tail(&path);
        assert_eq!(tail.len() as u64, LOG_TAIL);
        assert!(tail.ends_with("THE END"));
    }

    #[test]
    fn spawn_of_a_missing_program_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Daemon::spawn(
            Command::new("/nonexistent/labkit-no-such-prog"),
            &dir.path().join("x.log"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("labkit-no-such-prog"), "{err}");
    }
}
