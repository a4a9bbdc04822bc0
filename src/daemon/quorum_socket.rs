//! The local hand-off from `ipvs-sync quorum` to the running arbiter.
//!
//! `quorum up|down` runs inside keepalived's handler path, so it must be quick and must not
//! talk to the broker itself (no connection set-up, no credentials in every handler). It writes
//! the desc file, then sends one JSON line to the arbiter's unix socket (`[server]
//! quorum_socket`) and waits for `ok`:
//!
//! ```text
//! {"vip":"192.0.2.10","announce":true}\n     →
//!                                            ←  ok\n   (or: error: <why>\n)
//! ```
//!
//! The arbiter re-reads that VIP's desc file at once and publishes `syn_announce` to the
//! balancers the mapping names (announce true) or broadcasts `fin_announce` (false). A `down`
//! the handler could not write into the desc file comes as
//! `{"vip":…,"announce":false,"forced":true,"error":"…"}`: the arbiter withdraws the VIP and
//! keeps it withdrawn until a quorum call for it succeeds again. If the socket is not there
//! (arbiter down), an `up` waits for the arbiter's desc scan once it runs, and the handler
//! publishes a `down`'s `fin_announce` to the broker itself (see `cmd::quorum`).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// One hand-off: "this VIP's desc file changed; its announce flag is now …", or, when the
/// handler could not record a `down` in the desc file, "withdraw this VIP regardless".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumEvent {
    /// The VIP whose quorum changed.
    pub vip: IpAddr,
    /// The desc file's `announce` after the change.
    pub announce: bool,
    /// The desc file could not be updated for a `down`: the arbiter withdraws the VIP and
    /// keeps it withdrawn until a quorum call for it succeeds again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// Why the handler failed, when it did (counted by the arbiter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

const MAX_LINE: usize = 1024;

/// Binds the socket (replacing a stale one), mode 0660 so a keepalived group can use it, in a
/// directory of mode 0750 (created so; an existing one that group or others may write to is
/// refused, as anyone who can write there can replace the socket).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o750).create(dir) {
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mode = std::fs::metadata(dir)?.permissions().mode();
                if mode & 0o022 != 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!(
                            "{} is writable by group or others (mode {:o}): `chmod 750 {0}`",
                            dir.display(),
                            mode & 0o7777
                        ),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Whether a peer with `uid` and `gid` may hand off: root, this daemon's user, or the
/// socket's group (the file mode already says so; this holds when the mode is changed).
pub fn peer_allowed(uid: u32, gid: u32, own_uid: u32, socket_gid: Option<u32>) -> bool {
    uid == 0 || uid == own_uid || socket_gid == Some(gid)
}

/// Accepts hand-offs forever and forwards them to the arbiter's main loop. A peer whose
/// credentials (`SO_PEERCRED`) [`peer_allowed`] refuses gets `error: …` and nothing is
/// forwarded.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<QuorumEvent>) {
    use std::os::unix::fs::MetadataExt;
    let own_uid = nix::unistd::geteuid().as_raw();
    let socket_gid = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().and_then(|p| std::fs::metadata(p).ok()))
        .map(|m| m.gid());
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "quorum socket: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let cred = stream.peer_cred().ok();
        if !cred.is_some_and(|c| peer_allowed(c.uid(), c.gid(), own_uid, socket_gid)) {
            warn!(
                uid = cred.map(|c| c.uid()),
                gid = cred.map(|c| c.gid()),
                "quorum socket: hand-off from a user that may not hand off refused"
            );
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = stream.write_all(b"error: not allowed\n").await;
            });
            continue;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            let mut rd = tokio::io::BufReader::new(rd).take(MAX_LINE as u64);
            let read = tokio::time::timeout(Duration::from_secs(2), rd.read_line(&mut line)).await;
            let answer = match read {
                Ok(Ok(_)) => match serde_json::from_str::<QuorumEvent>(line.trim()) {
                    Ok(ev) => match tx.send(ev).await {
                        Ok(()) => "ok\n".to_string(),
                        Err(_) => "error: arbiter is stopping\n".to_string(),
                    },
                    Err(e) => format!("error: bad hand-off: {e}\n"),
                },
                Ok(Err(e)) => format!("error: {e}\n"),
                Err(_) => "error: timed out\n".to_string(),
            };
            debug!(answer = answer.trim(), "quorum socket: hand-off");
            let _ = wr.write_all(answer.as_bytes()).await;
        });
    }
}

/// Errors of the sending side.
#[derive(Debug, thiserror::Error)]
pub enum HandOffError {
    /// The socket is absent or refused: the arbiter is not running here.
    #[error("arbiter not reachable at {path}: {source}")]
    Unreachable {
        /// Socket path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The arbiter answered with an error.
    #[error("arbiter refused the hand-off: {0}")]
    Refused(String),
    /// I/O after connecting.
    #[error("hand-off failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Sends one hand-off and waits (at most `timeout`) for the arbiter's `ok`.
pub fn hand_off(path: &Path, ev: &QuorumEvent, timeout: Duration) -> Result<(), HandOffError> {
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|source| {
        HandOffError::Unreachable {
            path: path.display().to_string(),
            source,
        }
    })?;
    let answer = super::control::exchange_line(&mut s, ev, timeout, MAX_LINE)?;
    match answer.trim() {
        "ok" => Ok(()),
        other => Err(HandOffError::Refused(
            other.trim_start_matches("error: ").to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    #[test]
    fn only_root_this_user_and_the_sockets_group_may_hand_off() {
        assert!(peer_allowed(0, 5, 1000, Some(7)));
        assert!(peer_allowed(1000, 5, 1000, Some(7)));
        assert!(peer_allowed(2000, 7, 1000, Some(7)));
        assert!(!peer_allowed(2000, 5, 1000, Some(7)));
        assert!(!peer_allowed(2000, 5, 1000, None));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_socket_goes_in_a_0750_directory_never_in_a_group_writable_one() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("run");
        drop(bind(&made.join("q.sock")).unwrap());
        let mode = std::fs::metadata(&made).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o750);
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = bind(&open.join("q.sock")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hand_off_reaches_the_loop_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sock");
        let listener = bind(&path).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(serve(listener, tx));
        let p = path.clone();
        let ev = QuorumEvent {
            vip: "192.0.2.10".parse().unwrap(),
            announce: false,
            forced: true,
            error: Some("no space left on device".into()),
        };
        let sent = ev.clone();
        tokio::task::spawn_blocking(move || hand_off(&p, &sent, Duration::from_secs(2)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), ev);

        let p = path.clone();
        let garbage = tokio::task::spawn_blocking(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
            s.write_all(b"{\"vip\":\"not-an-ip\"}\n").unwrap();
            let mut a = String::new();
            BufReader::new(s).read_line(&mut a).unwrap();
            a
        })
        .await
        .unwrap();
        assert!(garbage.starts_with("error: bad hand-off"), "{garbage}");
        assert!(rx.try_recv().is_err(), "garbage must not reach the loop");
    }

    #[test]
    fn absent_socket_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let ev = QuorumEvent {
            vip: "192.0.2.10".parse().unwrap(),
            announce: true,
            forced: false,
            error: None,
        };
        let err = hand_off(
            &dir.path().join("none.sock"),
            &ev,
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(matches!(err, HandOffError::Unreachable { .. }), "{err}");
    }
}
