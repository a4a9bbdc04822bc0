//! Graceful restart of the speaker (RFC 4724) with gobgpd, BIRD and FRR as helpers: the
//! example speaker closes its session without a NOTIFICATION on SIGUSR2 and exits 0 (the
//! deliberate path, not a crash); a new process started `--restarting --defer-eor` sends
//! its table, and End-of-RIB once released. The router never withdraws a prefix the new
//! process announced again, and drops the one it did not once End-of-RIB is in.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::routers::{example_speaker, lab, Kind, Lab, Opts, Router, LB_V4, R_V4};

const P1: &str = "198.51.100.1/32";
const P2: &str = "198.51.100.2/32";
/// Announced by the first process only.
const P3: &str = "198.51.100.3/32";

/// The example speaker as a child process in `lb`, its stdout lines on a channel.
struct SpeakerProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl SpeakerProc {
    fn spawn(lab: &Lab, extra: &[&str], prefixes: &[&str]) -> SpeakerProc {
        let mut child = lab
            .lb
            .command(example_speaker().to_str().unwrap())
            .args(["--local-as", "65000", "--router-id", LB_V4, "--peer", R_V4])
            .args(["--remote-as", "65000", "--graceful-restart", "120"])
            .args(extra)
            .args(prefixes)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        SpeakerProc { child, lines }
    }

    /// Waits for a line of stdout.
    fn expect(&self, line: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l == line => return,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        panic!("speaker did not print {line:?} within {timeout:?}");
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, sig).unwrap();
    }
}

impl Drop for SpeakerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn restart_keeps_routes(kind: Kind) {
    use nix::sys::signal::Signal;
    let lab = lab();
    let r = Router::start(
        kind,
        &lab,
        &Opts {
            graceful_restart: true,
            ..Opts::default()
        },
    );
    let first = SpeakerProc::spawn(&lab, &[], &[P1, P2, P3]);
    first.expect("established", Duration::from_secs(20));
    assert!(
        r.wait(Duration::from_secs(10), |r| [P1, P2, P3]
            .iter()
            .all(|p| r.installed(p))),
        "{kind:?}: routes not installed"
    );
    let watches = [r.watch_withdrawals(P1), r.watch_withdrawals(P2)];

    // The deliberate path: SIGUSR2, no NOTIFICATION, exit 0.
    let mut first = first;
    first.signal(Signal::SIGUSR2);
    first.expect("closed for restart", Duration::from_secs(5));
    let status = first.child.wait().unwrap();
    assert!(status.success(), "{kind:?}: first speaker exit: {status}");
    // The router helps: the routes stay (stale) while no speaker runs.
    assert!(
        [P1, P2, P3].iter().all(|p| r.has_path(p)),
        "{kind:?}: routes dropped when the speaker closed"
    );

    let since = r.mark();
    let second = SpeakerProc::spawn(&lab, &["--restarting", "--defer-eor"], &[P1, P2]);
    // gobgpd refuses a peer for 5 s after it dropped; the backoff retries.
    second.expect("established", Duration::from_secs(30));
    assert!(
        r.wait(Duration::from_secs(5), |r| r.restart_bit_seen(&since)
            != Some(false)),
        "{kind:?}: the Restart State bit was not seen"
    );
    // End-of-RIB held back: P3 stays as stale.
    assert!(
        !r.wait(Duration::from_secs(2), |r| !r.has_path(P3)),
        "{kind:?}: {P3} dropped before End-of-RIB"
    );
    assert!(
        !r.eor_received(&since),
        "{kind:?}: End-of-RIB before the release"
    );
    second.signal(Signal::SIGUSR1);
    second.expect("end-of-rib released", Duration::from_secs(5));
    assert!(
        r.wait(Duration::from_secs(10), |r| r.eor_received(&since)),
        "{kind:?}: End-of-RIB not seen"
    );
    assert!(
        r.wait(Duration::from_secs(10), |r| !r.has_path(P3)),
        "{kind:?}: {P3} kept after End-of-RIB"
    );
    assert!(
        [P1, P2].iter().all(|p| r.installed(p)),
        "{kind:?}: re-announced routes not installed"
    );
    for w in &watches {
        let seen = w.withdrawals(&r);
        assert!(
            seen.is_empty(),
            "{kind:?}: withdrawn during the restart: {seen:?}"
        );
    }

    // The other path for contrast: SIGTERM is a Cease, and the routes go at once.
    second.signal(Signal::SIGTERM);
    assert!(
        r.wait(Duration::from_secs(2), |r| !r.has_path(P1)),
        "{kind:?}: routes kept after a Cease"
    );
}

per_router!(
    lab_graceful_restart_with_the_router_helping,
    restart_keeps_routes
);
