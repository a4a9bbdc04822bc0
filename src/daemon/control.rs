//! The local control socket (`[main] control_socket`): how `ipvs-sync drain`, `undrain`,
//! `release` and `forget` reach the running daemon, and how a balancer's own keepalived
//! hands it quorum calls in fallback (`quorum`).
//!
//! One JSON request per connection, one JSON answer:
//!
//! ```text
//! {"cmd":"drain","vips":["192.0.2.10"],"timeout_s":60}   →
//!                                                         ←  {"ok":true,"message":"…"}
//! ```
//!
//! The socket is created mode 0600 in a directory of mode 0750, and the daemon answers only
//! peers whose uid is root or its own (`SO_PEERCRED`), so a process on the host that may not
//! act on the daemon cannot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// What a control client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Drain VIPs of this balancer (all when empty), or, on the arbiter, a whole balancer.
    Drain {
        /// The VIPs (empty: all).
        #[serde(default)]
        vips: Vec<IpAddr>,
        /// Overrides `drain_timeout`.
        #[serde(default)]
        timeout_s: Option<f64>,
        /// On the arbiter: the balancer to drain.
        #[serde(default)]
        balancer: Option<String>,
    },
    /// Undo a drain.
    Undrain {
        /// The VIPs (empty: all).
        #[serde(default)]
        vips: Vec<IpAddr>,
        /// On the arbiter: the balancer to undrain.
        #[serde(default)]
        balancer: Option<String>,
    },
    /// Arbiter: withdraw held VIPs.
    Release {
        /// The VIPs (empty with `all`).
        #[serde(default)]
        vips: Vec<IpAddr>,
        /// Every held VIP.
        #[serde(default)]
        all: bool,
    },
    /// Arbiter: forget a decommissioned balancer (and delete its queue).
    Forget {
        /// Its hostname.
        host: String,
    },
    /// Balancer in fallback: a quorum call of its own keepalived (`ipvs-sync quorum`), to
    /// announce or withdraw a VIP; refused when not in fallback.
    Quorum {
        /// The VIP.
        vip: IpAddr,
        /// Announce (quorum reached on every port) or withdraw.
        announce: bool,
        /// The call's `b-LOCALPREF`.
        #[serde(default)]
        local_pref: Option<u32>,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
}

impl Reply {
    /// Done.
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            message: message.into(),
        }
    }

    /// Refused.
    pub fn refused(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            message: message.into(),
        }
    }
}

/// A request with the way back to its asker.
pub type Asked = (Request, oneshot::Sender<Reply>);

const MAX_LINE: usize = 64 * 1024;

/// Binds the control socket: its directory 0750 (created when missing), the socket 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Accepts requests forever and hands them to the daemon's loop.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Asked>) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        let tx = tx.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let reply = if !uid.is_some_and(|u| u == 0 || u == me) {
                Reply::refused("not allowed: only root or the daemon's user may control it")
            } else {
                let mut line = String::new();
                let mut rd = tokio::io::BufReader::new(rd).take(MAX_LINE as u64);
                match tokio::time::timeout(Duration::from_secs(5), rd.read_line(&mut line)).await {
                    Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
                        Ok(req) => ask(&tx, req).await,
                        Err(e) => Reply::refused(format!("bad request: {e}")),
                    },
                    Ok(Err(e)) => Reply::refused(e.to_string()),
                    Err(_) => Reply::refused("timed out"),
                }
            };
            debug!(ok = reply.ok, message = %reply.message, "control request");
            let mut out = serde_json::to_string(&reply).unwrap_or_default();
            out.push('\n');
            let _ = wr.write_all(out.as_bytes()).await;
        });
    }
}

async fn ask(tx: &mpsc::Sender<Asked>, req: Request) -> Reply {
    let (rtx, rrx) = oneshot::channel();
    if tx.send((req, rtx)).await.is_err() {
        return Reply::refused("the daemon is stopping");
    }
    rrx.await
        .unwrap_or_else(|_| Reply::refused("the daemon dropped the request"))
}

/// Why a control request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon listens there.
    #[error("no daemon answers on {path}: {source}")]
    Unreachable {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not a reply.
    #[error("the daemon answered something else: {0}")]
    Garbled(String),
}

/// Sends `req` to the daemon at `path` and waits (at most `timeout`) for its reply.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Reply, ControlError> {
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|source| {
        ControlError::Unreachable {
            path: path.display().to_string(),
            source,
        }
    })?;
    let answer = exchange_line(&mut s, req, timeout, MAX_LINE)?;
    serde_json::from_str(answer.trim()).map_err(|_| ControlError::Garbled(answer))
}

/// The client side of a local socket that speaks one JSON line each way (this control
/// socket and the quorum socket): writes `msg` as a line and reads the answer, at most
/// `max` bytes, each step bounded by `timeout`.
pub(crate) fn exchange_line(
    s: &mut std::os::unix::net::UnixStream,
    msg: &impl Serialize,
    timeout: Duration,
    max: usize,
) -> std::io::Result<String> {
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(msg).map_err(std::io::Error::other)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(s).take(max as u64).read_line(&mut answer)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_reaches_the_loop_and_its_reply_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/control.sock");
        let l = bind(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o750);
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(serve(l, tx));
        tokio::spawn(async move {
            while let Some((req, reply)) = rx.recv().await {
                let _ = reply.send(Reply::ok(format!("{req:?}")));
            }
        });
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || {
            request(
                &p,
                &Request::Release {
                    vips: vec![],
                    all: true,
                },
                Duration::from_secs(2),
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert!(r.ok && r.message.contains("all: true"), "{r:?}");
        let p = path.clone();
        let garbage = tokio::task::spawn_blocking(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
            s.write_all(b"{\"cmd\":\"explode\"}\n").unwrap();
            let mut a = String::new();
            BufReader::new(s).read_line(&mut a).unwrap();
            a
        })
        .await
        .unwrap();
        assert!(garbage.contains("bad request"), "{garbage}");
    }
}
