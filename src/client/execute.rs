//! `execute`: a command the arbiter asks a balancer to run — only if its program is on
//! `[client] execute_allow` (absolute paths, compared exactly; empty = off), with a timeout
//! after which it is killed. Its exit status and the tail of its output are returned for the log.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Outcome of one `execute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Last bytes of stdout+stderr, lossy UTF-8.
    pub output_tail: String,
}

/// Why an `execute` did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// Empty argv.
    #[error("execute: empty command")]
    Empty,
    /// Program not on the allow-list (or the list is empty).
    #[error("execute: {0} is not on [client] execute_allow")]
    NotAllowed(String),
    /// Could not start.
    #[error("execute: {prog}: {source}")]
    Spawn {
        /// Program.
        prog: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Ran longer than allowed and was killed.
    #[error("execute: {0} timed out after {1:?} and was killed")]
    TimedOut(String, Duration),
}

const TAIL: usize = 2048;

/// Runs `argv` if allowed, killing it after `timeout`.
pub async fn run(
    allow: &[PathBuf],
    argv: &[String],
    timeout: Duration,
) -> Result<Executed, ExecuteError> {
    let prog = argv.first().ok_or(ExecuteError::Empty)?;
    if !allow.iter().any(|a| a.as_os_str() == prog.as_str()) {
        return Err(ExecuteError::NotAllowed(prog.clone()));
    }
    let child = Command::new(prog)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecuteError::Spawn {
            prog: prog.clone(),
            source,
        })?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|source| ExecuteError::Spawn {
            prog: prog.clone(),
            source,
        })?,
        Err(_) => return Err(ExecuteError::TimedOut(prog.clone(), timeout)),
    };
    let mut all = out.stdout;
    all.extend_from_slice(&out.stderr);
    let start = all.len().saturating_sub(TAIL);
    Ok(Executed {
        code: out.status.code(),
        output_tail: String::from_utf8_lossy(&all[start..]).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn only_allowed_programs_run() {
        let allow = vec![PathBuf::from("/bin/echo"), PathBuf::from("/bin/sleep")];
        let r = run(&allow, &argv(&["/bin/echo", "hi"]), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            r,
            Executed {
                code: Some(0),
                output_tail: "hi\n".into()
            }
        );
        let e = run(
            &allow,
            &argv(&["/bin/sh", "-c", "id"]),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ExecuteError::NotAllowed(_)));
        let e = run(&[], &argv(&["/bin/echo"]), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ExecuteError::NotAllowed(_)), "empty list = off");
        let e = run(&allow, &argv(&["echo", "x"]), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ExecuteError::NotAllowed(_)),
            "relative names never match"
        );
        assert!(matches!(
            run(&allow, &[], Duration::from_secs(1)).await,
            Err(ExecuteError::Empty)
        ));
    }

    #[tokio::test]
    async fn timeout_kills() {
        let allow = vec![PathBuf::from("/bin/sleep")];
        let t = std::time::Instant::now();
        let e = run(
            &allow,
            &argv(&["/bin/sleep", "10"]),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ExecuteError::TimedOut(..)));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
