//! `execute`: a command the arbiter asks a balancer to run.
//!
//! - only a whole command line one of `[client] execute.NAME` rules matches (the program
//!   exactly, as many arguments, each a literal or a typed placeholder; none = off);
//! - once per message id: the id is recorded in `state_dir` (`client.executed`) before the
//!   command starts, so neither a second copy of the message nor a restart runs it again;
//! - one at a time: a request while a command runs is refused ([`ExecuteError::Busy`]);
//! - with an empty environment (only `PATH` set to the system directories), stdin from
//!   `/dev/null`, in a process group of its own;
//! - its output read as it comes, of which only the last [`TAIL`] bytes of each stream are
//!   kept;
//! - killed, with its whole process group, after the shorter of the message's `timeout_s`
//!   and `[client] execute_timeout`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::Semaphore;

use crate::wire::envelope::MessageId;
use crate::wire::replay::{Verdict, Window};

/// Bytes of stdout and of stderr kept (the last ones).
pub const TAIL: usize = 4096;

/// `PATH` of an executed command.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Outcome of one `execute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The rule that allowed it.
    pub rule: String,
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Last bytes of stdout, then of stderr, lossy UTF-8.
    pub output_tail: String,
    /// Bytes of output dropped beyond the tails.
    pub output_dropped: u64,
}

/// Why an `execute` did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// No `execute.NAME` rule is configured.
    #[error("execute is off: no [client] execute.NAME rule")]
    Off,
    /// No rule matches the whole command line.
    #[error("execute: {argv:?} matches no [client] execute.NAME rule")]
    NotAllowed {
        /// The refused command line.
        argv: Vec<String>,
    },
    /// This message id ran already (or is older than one that did).
    #[error("execute: message {id} was executed already")]
    AlreadyRun {
        /// The message id.
        id: MessageId,
    },
    /// Another command is running.
    #[error("execute: another command is still running")]
    Busy,
    /// The id could not be recorded, so the command was not started.
    #[error("execute: cannot record message {id} in {path}: {source}")]
    Record {
        /// The message id.
        id: MessageId,
        /// The state file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Could not start.
    #[error("execute: {prog}: {source}")]
    Spawn {
        /// Program.
        prog: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Ran longer than allowed and was killed with its process group.
    #[error("execute: {prog} timed out after {after:?}; its process group was killed")]
    TimedOut {
        /// Program.
        prog: String,
        /// The limit.
        after: Duration,
    },
}

/// Runs `execute` messages under the rules of the module doc.
#[derive(Debug)]
pub struct Executor {
    rules: Vec<config::ExecRule>,
    max_timeout: Duration,
    running: Arc<Semaphore>,
    executed: std::sync::Mutex<Window>,
    record: PathBuf,
}

impl Executor {
    /// An executor of `cfg`'s rules, remembering executed ids in `state_dir`.
    pub fn new(cfg: &config::ClientConfig, state_dir: &Path) -> Executor {
        let record = state_dir.join("client.executed");
        let mark = std::fs::read_to_string(&record)
            .ok()
            .and_then(|t| parse_mark(&t))
            .unwrap_or(MessageId { epoch: 0, seq: 0 });
        Executor {
            rules: cfg.execute.clone(),
            max_timeout: cfg.execute_timeout,
            running: Arc::new(Semaphore::new(1)),
            executed: std::sync::Mutex::new(Window::restored(mark)),
            record,
        }
    }

    /// Runs `argv` for message `id` if a rule allows it and `id` never ran, killing it after
    /// `timeout` (at most `execute_timeout`).
    pub async fn run(
        &self,
        id: MessageId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<Executed, ExecuteError> {
        if self.rules.is_empty() {
            return Err(ExecuteError::Off);
        }
        let Some(rule) = self.rules.iter().find(|r| r.matches(argv)) else {
            return Err(ExecuteError::NotAllowed {
                argv: argv.to_vec(),
            });
        };
        let Ok(_running) = Arc::clone(&self.running).try_acquire_owned() else {
            return Err(ExecuteError::Busy);
        };
        self.record(id)?;
        let (prog, args) = argv.split_first().ok_or(ExecuteError::NotAllowed {
            argv: argv.to_vec(),
        })?;
        let timeout = timeout.min(self.max_timeout);
        let mut child = Command::new(prog)
            .args(args)
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ExecuteError::Spawn {
                prog: prog.clone(),
                source,
            })?;
        let out = tokio::spawn(tail(child.stdout.take()));
        let err = tokio::spawn(tail(child.stderr.take()));
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(r) => r.map_err(|source| ExecuteError::Spawn {
                prog: prog.clone(),
                source,
            })?,
            Err(_) => {
                kill_group(&child);
                let _ = child.wait().await;
                out.abort();
                err.abort();
                return Err(ExecuteError::TimedOut {
                    prog: prog.clone(),
                    after: timeout,
                });
            }
        };
        // The command is done; what it left running in its group goes too, so the readers
        // of its pipes end.
        kill_group(&child);
        let (mut text, mut dropped) = out.await.unwrap_or_default();
        let (etext, edropped) = err.await.unwrap_or_default();
        text.extend_from_slice(&etext);
        dropped += edropped;
        Ok(Executed {
            rule: rule.name.clone(),
            code: status.code(),
            output_tail: String::from_utf8_lossy(&text).into_owned(),
            output_dropped: dropped,
        })
    }

    /// Refuses an id that ran (or is older than one that did) and writes the new mark to
    /// disk before the command starts.
    fn record(&self, id: MessageId) -> Result<(), ExecuteError> {
        let mut w = self.executed.lock().unwrap_or_else(|e| e.into_inner());
        if w.check(id) != Verdict::Fresh {
            return Err(ExecuteError::AlreadyRun { id });
        }
        let mut next = w.clone();
        next.accept(id, 64);
        let mark = next.mark();
        config::atomic_file::replace(
            &self.record,
            format!("{} {}\n", mark.epoch, mark.seq).as_bytes(),
            0o600,
        )
        .map_err(|source| ExecuteError::Record {
            id,
            path: self.record.clone(),
            source,
        })?;
        *w = next;
        Ok(())
    }
}

fn parse_mark(text: &str) -> Option<MessageId> {
    let (epoch, seq) = text.trim().split_once(' ')?;
    Some(MessageId {
        epoch: epoch.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// Kills the process group the child leads (it was started with `process_group(0)`).
fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Reads a stream to its end, keeping its last [`TAIL`] bytes; returns them and how many
/// bytes were dropped.
async fn tail<R: AsyncRead + Unpin>(stream: Option<R>) -> (Vec<u8>, u64) {
    let Some(mut stream) = stream else {
        return (Vec::new(), 0);
    };
    let mut kept = std::collections::VecDeque::with_capacity(TAIL);
    let mut dropped = 0u64;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend(&buf[..n]);
                while kept.len() > TAIL {
                    kept.pop_front();
                    dropped += 1;
                }
            }
        }
    }
    (kept.into_iter().collect(), dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn id(seq: u64) -> MessageId {
        MessageId { epoch: 7, seq }
    }

    fn executor(rules: &[(&str, &str)], state: &Path) -> Executor {
        let text: String = rules
            .iter()
            .map(|(n, c)| format!("execute.{n} = {c}\n"))
            .collect();
        let cfg = config::Config::from_strs(
            &format!("[main]\namqp_server = amqp://b/\nhostname = h\n[client]\n{text}execute_timeout = 5\n"),
            None,
        )
        .unwrap();
        Executor::new(&cfg.client, state)
    }

    #[tokio::test]
    async fn only_whole_allowed_command_lines_run() {
        let d = tempfile::tempdir().unwrap();
        let ex = executor(&[("echo", "/bin/echo hi {name}")], d.path());
        let r = ex
            .run(
                id(1),
                &argv(&["/bin/echo", "hi", "there"]),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!((r.rule.as_str(), r.code), ("echo", Some(0)));
        assert_eq!(r.output_tail, "hi there\n");
        for bad in [
            argv(&["/bin/echo", "hi"]),
            argv(&["/bin/echo", "hi", "there", "again"]),
            argv(&["/bin/echo", "hi", "--help"]),
            argv(&["/bin/sh", "-c", "id"]),
            argv(&["echo", "hi", "there"]),
            vec![],
        ] {
            let e = ex
                .run(id(2), &bad, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(matches!(e, ExecuteError::NotAllowed { .. }), "{bad:?}: {e}");
        }
        let off = executor(&[], d.path());
        assert!(matches!(
            off.run(id(3), &argv(&["/bin/echo"]), Duration::from_secs(1))
                .await,
            Err(ExecuteError::Off)
        ));
    }

    #[tokio::test]
    async fn each_message_runs_once_even_across_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let cmd = argv(&["/bin/true"]);
        let ex = executor(&[("t", "/bin/true")], d.path());
        assert!(ex.run(id(5), &cmd, Duration::from_secs(5)).await.is_ok());
        assert!(matches!(
            ex.run(id(5), &cmd, Duration::from_secs(5)).await,
            Err(ExecuteError::AlreadyRun { .. })
        ));
        assert!(ex.run(id(9), &cmd, Duration::from_secs(5)).await.is_ok());
        // A new executor (a restarted daemon) reads the record: 9 and everything below stay
        // done.
        let again = executor(&[("t", "/bin/true")], d.path());
        for seq in [5, 8, 9] {
            assert!(
                matches!(
                    again.run(id(seq), &cmd, Duration::from_secs(5)).await,
                    Err(ExecuteError::AlreadyRun { .. })
                ),
                "{seq}"
            );
        }
        assert!(again
            .run(id(10), &cmd, Duration::from_secs(5))
            .await
            .is_ok());
        assert!(again
            .run(MessageId { epoch: 8, seq: 1 }, &cmd, Duration::from_secs(5))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn the_environment_is_empty_and_output_is_capped() {
        let d = tempfile::tempdir().unwrap();
        let ex = executor(
            &[
                ("env", "/usr/bin/env"),
                ("yes", "/usr/bin/head -c {int} /dev/zero"),
            ],
            d.path(),
        );
        let r = ex
            .run(id(1), &argv(&["/usr/bin/env"]), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.output_tail, format!("PATH={PATH}\n"));
        let r = ex
            .run(
                id(2),
                &argv(&["/usr/bin/head", "-c", "1000000", "/dev/zero"]),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(r.output_tail.len(), TAIL);
        assert_eq!(r.output_dropped, 1_000_000 - TAIL as u64);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group_and_one_runs_at_a_time() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("grandchild.pid");
        // A command that leaves a grandchild in its process group and waits for it.
        let helper = d.path().join("spawner");
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\nsleep 30 &\necho $! > {}\nwait\n",
                pidfile.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let h = helper.display().to_string();
        let ex = Arc::new(executor(&[("spawn", &h), ("t", "/bin/true")], d.path()));
        let runner = {
            let ex = Arc::clone(&ex);
            tokio::spawn(async move { ex.run(id(1), &[h], Duration::from_millis(1500)).await })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&pidfile).map_or(true, |t| t.trim().is_empty()) {
            assert!(std::time::Instant::now() < deadline, "helper did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // While it runs, a second command is refused.
        assert!(matches!(
            ex.run(id(2), &argv(&["/bin/true"]), Duration::from_secs(1))
                .await,
            Err(ExecuteError::Busy)
        ));
        let e = runner.await.unwrap().unwrap_err();
        assert!(matches!(e, ExecuteError::TimedOut { .. }), "{e}");
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild (same process group) is gone too (or a zombie of init's).
        let stat = format!("/proc/{grandchild}/stat");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z ")) {
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {grandchild} survived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ex
            .run(id(3), &argv(&["/bin/true"]), Duration::from_secs(1))
            .await
            .is_ok());
    }
}
