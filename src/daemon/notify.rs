//! systemd `Type=notify` readiness and watchdog, by the `sd_notify` datagram protocol.
//!
//! No libsystemd: the protocol is one datagram of `KEY=VALUE` lines to `$NOTIFY_SOCKET`
//! (a path, or an abstract name written with a leading `@`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tracing::debug;

/// Sends one notification; silently nothing when not run by systemd.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let res = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        if let Some(name) = path.strip_prefix('@') {
            let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        debug!(error = %e, "sd_notify failed");
    }
}

/// Half the watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    ping_every(std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?)
}

/// How often to ping a watchdog of `usec`: half of it, and never less than a millisecond (a
/// zero-length timer panics; a watchdog that tight cannot be met anyway).
fn ping_every(usec: u64) -> Option<Duration> {
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_ping_is_half_and_never_zero() {
        assert_eq!(ping_every(0), None);
        assert_eq!(ping_every(1), Some(Duration::from_millis(1)));
        assert_eq!(ping_every(30_000_000), Some(Duration::from_secs(15)));
    }

    #[test]
    fn sends_ready_to_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        // Only this test touches NOTIFY_SOCKET; set_var is process-wide, which nextest isolates.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1\nSTATUS=serving");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }
}
