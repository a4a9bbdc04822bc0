//! An interface's addresses as a stream of timestamped events: `ip -o monitor address`.

use std::io;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Netns;

/// An address added to or deleted from the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrEvent {
    /// When the reader thread read the line: the clock of [`crate::RibMonitor`] too.
    pub at: Instant,
    /// The address with its prefix length, as `ip` prints it: `203.0.113.10/32`.
    pub addr: String,
    /// True when added, false when deleted.
    pub added: bool,
}

/// A long-running `ip -o -ts monitor address dev DEV` inside a namespace. A reader thread
/// timestamps each line as it arrives, on the same clock as [`crate::RibMonitor`], so a
/// test can tell which of an address change and a router's RIB change came first.
/// Dropping it kills `ip` (by pid) and joins the reader.
#[derive(Debug)]
pub struct AddrMonitor {
    child: Child,
    events: Receiver<AddrEvent>,
    reader: Option<JoinHandle<()>>,
}

impl AddrMonitor {
    /// Starts the stream on `dev` in `ns` and returns once it is live: the `sentinel`
    /// address (CIDR, e.g. `192.0.2.252/32`, one nothing else puts there) is added, seen,
    /// deleted and seen deleted.
    pub fn start(ns: &Netns, dev: &str, sentinel: &str) -> io::Result<AddrMonitor> {
        let mut cmd = ns.command("ip");
        cmd.args(["-o", "-ts", "monitor", "address", "dev", dev])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = ns.spawn(&mut cmd)?;
        let (events, reader) = crate::read_stream(&mut child, "ip monitor", parse_line)?;
        let m = AddrMonitor {
            child,
            events,
            reader: Some(reader),
        };
        // The netlink subscription may start after a first add: repeat until one shows.
        let mut live = false;
        for _ in 0..20 {
            ns.ip(&["addr", "add", sentinel, "dev", dev])?;
            let seen = m.wait(sentinel, true, Duration::from_millis(500)).is_some();
            ns.ip(&["addr", "del", sentinel, "dev", dev])?;
            if seen {
                live = true;
                break;
            }
        }
        if !live || m.wait(sentinel, false, Duration::from_secs(5)).is_none() {
            return Err(io::Error::other(format!(
                "ip monitor on {dev} in {} never showed {sentinel} come and go",
                ns.name()
            )));
        }
        Ok(m)
    }

    /// The next event for `addr` (`VIP/LEN`) added (`true`) or deleted, skipping others,
    /// or `None` after `timeout`.
    pub fn wait(&self, addr: &str, added: bool, timeout: Duration) -> Option<AddrEvent> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.events.recv_timeout(left) {
                Ok(ev) if ev.addr == addr && ev.added == added => return Some(ev),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Every event received so far, without waiting.
    pub fn take(&self) -> Vec<AddrEvent> {
        self.events.try_iter().collect()
    }

    /// The `ip` process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AddrMonitor {
    fn drop(&mut self) {
        crate::stop_stream(&mut self.child, self.reader.take());
    }
}

/// One line of `ip -o -ts monitor address`:
/// `[2026-12-06T09:18:18.645355] Deleted 1: lo    inet 203.0.113.10/32 scope global lo\ …`.
fn parse_line(line: &str, at: Instant) -> Option<AddrEvent> {
    let rest = match line.strip_prefix('[') {
        Some(r) => r.split_once("] ")?.1,
        None => line,
    };
    let (added, rest) = match rest.strip_prefix("Deleted ") {
        Some(r) => (false, r),
        None => (true, rest),
    };
    let mut words = rest.split_whitespace();
    words.find(|w| *w == "inet" || *w == "inet6")?;
    Some(AddrEvent {
        at,
        addr: words.next()?.to_owned(),
        added,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_ip_monitor_give_address_events() {
        let at = Instant::now();
        // Seen from iproute2 6.1 on Debian 12.
        let add = r"[2026-12-06T09:18:18.605168] 1: lo    inet 203.0.113.10/32 scope global lo\       valid_lft forever preferred_lft forever";
        let del6 = r"[2026-12-06T09:18:18.705365] Deleted 1: lo    inet6 2001:db8:f00::10/128 scope global nodad \       valid_lft forever preferred_lft forever";
        assert_eq!(
            parse_line(add, at),
            Some(AddrEvent {
                at,
                addr: "203.0.113.10/32".into(),
                added: true
            })
        );
        assert_eq!(
            parse_line(del6, at),
            Some(AddrEvent {
                at,
                addr: "2001:db8:f00::10/128".into(),
                added: false
            })
        );
        assert_eq!(parse_line("[2026-12-06T09:18:18.6] 1: lo", at), None);
    }
}
