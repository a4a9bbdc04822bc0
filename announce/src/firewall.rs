//! The firewall check hook of the prepare step.
//!
//! Replaces the original tool's `/etc/init.d/load-iptables.sh` check: before a VIP is
//! put on the interface, a configurable command is run with the VIP as its last
//! argument (`CMD ARGS… VIP`). Exit status 0 means the firewall is ready for the VIP.
//! The command is tried up to `firewall_update_try` times, each run bounded by a
//! timeout; no command configured means the check is skipped.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// How much of the command's stderr is kept for the error report.
const STDERR_KEEP: usize = 512;

/// The configured firewall check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallHook {
    /// Program and leading arguments; the VIP is appended. Empty = no check.
    pub command: Vec<String>,
    /// How many times to run it before giving up (at least once).
    pub tries: u32,
    /// Limit for one run; the process is killed when it is exceeded.
    pub timeout: Duration,
    /// Pause between tries.
    pub retry_delay: Duration,
}

impl Default for FirewallHook {
    fn default() -> Self {
        Self {
            command: Vec::new(),
            tries: 3,
            timeout: Duration::from_secs(10),
            retry_delay: Duration::from_millis(200),
        }
    }
}

/// A successful check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallOk {
    /// No command configured.
    Skipped,
    /// The command succeeded on this try (1-based).
    Passed {
        /// The try that succeeded.
        tries: u32,
    },
}

/// Why one run of the command failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The command could not be started.
    #[error("cannot start: {0}")]
    Spawn(#[source] std::io::Error),
    /// It ran longer than the timeout and was killed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// It exited unsuccessfully.
    #[error("exited with {status}: {stderr}")]
    Failed {
        /// Exit status as printed by the OS (`exit status: 1`, `signal: 9`).
        status: String,
        /// The start of its stderr.
        stderr: String,
    },
    /// Waiting for it failed.
    #[error("cannot wait for it: {0}")]
    Wait(#[source] std::io::Error),
}

/// The check failed on every try.
#[derive(Debug, thiserror::Error)]
#[error("firewall check `{command}` for {vip} failed {tries} time(s); last: {last}")]
pub struct FirewallError {
    /// The command line (without the VIP).
    pub command: String,
    /// The VIP checked.
    pub vip: IpAddr,
    /// How many tries were made.
    pub tries: u32,
    /// The last failure.
    #[source]
    pub last: RunError,
}

impl FirewallHook {
    /// Run the check for `vip`.
    pub async fn check(&self, vip: IpAddr) -> Result<FirewallOk, FirewallError> {
        let Some((program, args)) = self.command.split_first() else {
            return Ok(FirewallOk::Skipped);
        };
        let tries = self.tries.max(1);
        let mut attempt = 1;
        loop {
            let err = match self.run_once(program, args, vip).await {
                Ok(()) => return Ok(FirewallOk::Passed { tries: attempt }),
                Err(e) => e,
            };
            tracing::warn!(%vip, attempt, tries, error = %err, "firewall check failed");
            if attempt >= tries {
                return Err(FirewallError {
                    command: self.command.join(" "),
                    vip,
                    tries,
                    last: err,
                });
            }
            attempt += 1;
            tokio::time::sleep(self.retry_delay).await;
        }
    }

    async fn run_once(&self, program: &str, args: &[String], vip: IpAddr) -> Result<(), RunError> {
        let mut child = Command::new(program)
            .args(args)
            .arg(vip.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(RunError::Spawn)?;
        let stderr = child.stderr.take();
        let run = async {
            let mut buf = Vec::new();
            if let Some(mut err) = stderr {
                // Read to EOF so the child never blocks on a full pipe; keep the head.
                let mut chunk = [0u8; 4096];
                loop {
                    match err.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let room = STDERR_KEEP.saturating_sub(buf.len());
                            buf.extend_from_slice(&chunk[..n.min(room)]);
                        }
                    }
                }
            }
            let status = child.wait().await.map_err(RunError::Wait)?;
            Ok::<_, RunError>((status, buf))
        };
        match tokio::time::timeout(self.timeout, run).await {
            // Dropping the future drops the child: kill_on_drop kills it.
            Err(_) => Err(RunError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok((status, _))) if status.success() => Ok(()),
            Ok(Ok((status, buf))) => Err(RunError::Failed {
                status: status.to_string(),
                stderr: String::from_utf8_lossy(&buf).trim().to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, tries: u32) -> FirewallHook {
        FirewallHook {
            command: vec!["sh".into(), "-c".into(), script.into(), "fw-check".into()],
            tries,
            timeout: Duration::from_secs(5),
            retry_delay: Duration::from_millis(1),
        }
    }

    fn vip() -> IpAddr {
        "2001:db8::7".parse().unwrap()
    }

    #[tokio::test]
    async fn absent_command_skips() {
        assert_eq!(
            FirewallHook::default().check(vip()).await.unwrap(),
            FirewallOk::Skipped
        );
    }

    #[tokio::test]
    async fn passes_the_vip_as_last_argument() {
        let h = hook(r#"test "$1" = "2001:db8::7""#, 1);
        assert_eq!(
            h.check(vip()).await.unwrap(),
            FirewallOk::Passed { tries: 1 }
        );
        let wrong = hook(r#"test "$1" = "192.0.2.1""#, 1);
        assert!(wrong.check(vip()).await.is_err());
    }

    #[tokio::test]
    async fn retries_until_success() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("n");
        // Fails twice, then succeeds.
        let script = format!(
            r#"n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ]"#,
            c = counter.display()
        );
        assert_eq!(
            hook(&script, 5).check(vip()).await.unwrap(),
            FirewallOk::Passed { tries: 3 }
        );
        std::fs::remove_file(&counter).unwrap();
        let e = hook(&script, 2).check(vip()).await.unwrap_err();
        assert_eq!(e.tries, 2);
    }

    #[tokio::test]
    async fn failure_reports_status_and_stderr() {
        let e = hook("echo 'chain VIP missing' >&2; exit 3", 2)
            .check(vip())
            .await
            .unwrap_err();
        assert_eq!(e.tries, 2);
        match e.last {
            RunError::Failed { status, stderr } => {
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, "chain VIP missing");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn timeout_kills_and_reports() {
        let mut h = hook("exec sleep 30", 1);
        h.timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let e = h.check(vip()).await.unwrap_err();
        assert!(matches!(e.last, RunError::Timeout(_)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let h = FirewallHook {
            command: vec!["/nonexistent/ipvs-sync-fw".into()],
            tries: 1,
            ..FirewallHook::default()
        };
        assert!(matches!(
            h.check(vip()).await.unwrap_err().last,
            RunError::Spawn(_)
        ));
    }
}
