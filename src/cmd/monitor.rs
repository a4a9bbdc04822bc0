//! `ipvs-sync monitor`: one line and a Nagios exit code, from the daemon's `/status`.
//!
//! Checks, worst wins:
//! - the daemon answers on `http_listen` (else UNKNOWN, exit 3);
//! - the broker connection is up (else CRITICAL);
//! - client: the arbiter's last heartbeat is younger than `consumer_alive_ttl` (else CRITICAL)
//!   and than 3 × `heartbeat_interval` (else WARNING); a configured BGP peer not Established
//!   for longer than its hold time (WARNING; all of them: CRITICAL); in fallback to its own
//!   keepalived (CRITICAL), or without a keepalived config to fall back to (WARNING);
//! - server: held withdrawals (`withdraw_limit`: CRITICAL); a live balancer mapped to VIPs with
//!   quorum that announces none of them (WARNING);
//! - server: at least one live client, and it answers balancers (WARNING during
//!   `startup_hold`, CRITICAL while its mapping, desc files or IPVS tree cannot be read); a VIP
//!   force-withdrawn because its `quorum down` could not be recorded (CRITICAL until a quorum
//!   call for it succeeds), a quorum handler failure in the last hour (WARNING);
//! - every worker ran recently: each `workers.*.age_s` under 3 × its `interval_s` (else
//!   WARNING), and none is failing (CRITICAL);
//! - every internal queue holds fewer than 10 items (else WARNING);
//! - every sender's clock is within 1 s of ours (`clocks`, else WARNING: clocks never stop a
//!   message, but logs and operators compare times).
//!
//! The line ends with Nagios performance data after `|`.

use std::fmt::Write as _;

use crate::daemon::status::{ClientStatus, ServerStatus, Status};

/// Nagios-style verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// All good: exit 0.
    Ok = 0,
    /// Degraded: exit 1.
    Warning = 1,
    /// Broken: exit 2.
    Critical = 2,
    /// Cannot tell (the daemon does not answer): exit 3.
    Unknown = 3,
}

impl Level {
    /// The Nagios word.
    pub fn word(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }
}

/// A quorum handler failure keeps `monitor` at WARNING this long (seconds).
pub const QUORUM_FAILURE_WARN_S: f64 = 3600.0;

/// A balancer up this long (seconds) should announce its VIPs with quorum (longer than the
/// arbiter's syn repair, 15 s, and a cold start).
pub const SETTLE_S: f64 = 60.0;

/// Queue depth from which a queue counts as backed up.
pub const QUEUE_WARN: u64 = 10;

/// Thresholds taken from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `heartbeat_interval`, seconds.
    pub heartbeat_interval: f64,
    /// `consumer_alive_ttl`, seconds.
    pub alive_ttl: f64,
}

/// What is wrong so far.
#[derive(Default)]
struct Verdict {
    level: Option<Level>,
    notes: Vec<String>,
    perf: Vec<String>,
}

impl Verdict {
    fn bad(&mut self, l: Level, note: String) {
        self.level = Some(self.level.map_or(l, |x| x.max(l)));
        self.notes.push(note);
    }
    fn perf(&mut self, name: &str, value: impl std::fmt::Display) {
        self.perf.push(format!("{name}={value}"));
    }
}

/// Judges a status document: the level and the one line to print.
pub fn judge(doc: &Status, lim: Limits) -> (Level, String) {
    let mut v = Verdict::default();
    let c = doc.common();
    if !c.broker.connected {
        v.bad(Level::Critical, "broker unreachable".into());
    }
    match doc {
        Status::Client(cl) => client(cl, lim, &mut v),
        Status::Server(s) => server(s, &mut v),
    }
    for (name, w) in &c.workers {
        if let Some(e) = &w.error {
            v.bad(Level::Critical, format!("worker {name} failing: {e}"));
        } else if let Some(age) = w.age_s.filter(|a| *a > 3.0 * w.interval_s.max(0.1)) {
            v.bad(
                Level::Warning,
                format!("worker {name} last ran {age:.1}s ago"),
            );
        }
    }
    for p in c.clocks.iter().filter(|p| p.warn) {
        let off = p.offset_ms as f64 / 1000.0;
        v.bad(
            Level::Warning,
            format!("clock of {} is {off:+.1}s off ours", p.peer),
        );
    }
    let mut max_q = 0;
    for (name, d) in &c.queues {
        max_q = max_q.max(*d);
        if *d >= QUEUE_WARN {
            v.bad(Level::Warning, format!("queue {name} holds {d}"));
        }
    }
    v.perf("max_queue", max_q);
    let level = v.level.unwrap_or(Level::Ok);
    let mut line = if v.notes.is_empty() {
        format!("{}: ipvs-sync {} healthy", level.word(), doc.role())
    } else {
        format!("{}: {}", level.word(), v.notes.join("; "))
    };
    let _ = write!(line, " | {}", v.perf.join(" "));
    (level, line)
}

fn client(c: &ClientStatus, lim: Limits, v: &mut Verdict) {
    match c.last_heartbeat_age_s {
        None => v.bad(Level::Critical, "no heartbeat from the arbiter yet".into()),
        Some(a) if a > lim.alive_ttl => {
            v.bad(Level::Critical, format!("arbiter heartbeat {a:.1}s old"))
        }
        Some(a) if a > 3.0 * lim.heartbeat_interval => {
            v.bad(Level::Warning, format!("arbiter heartbeat {a:.1}s old"))
        }
        Some(_) => {}
    }
    if let Some(a) = c.last_heartbeat_age_s {
        v.perf("heartbeat_age", format!("{a:.1}s"));
    }
    let down: Vec<&str> = c
        .peers
        .iter()
        .filter(|p| {
            // Down past its hold time (a session that never came up), or ended with an
            // error (hold timer expired, NOTIFICATION, reset): that is already a failure.
            p.state != "established"
                && p.down_s
                    .is_some_and(|d| d > p.hold_time_s.max(3.0) || p.last_error.is_some())
        })
        .map(|p| p.name.as_str())
        .collect();
    let up = c.peers.iter().filter(|p| p.state == "established").count();
    if !c.peers.is_empty() && down.len() == c.peers.len() {
        v.bad(
            Level::Critical,
            format!("no BGP session Established ({})", down.join(", ")),
        );
    } else if !down.is_empty() {
        v.bad(
            Level::Warning,
            format!("BGP sessions down: {}", down.join(", ")),
        );
    }
    let bfd_down: Vec<&str> = c
        .peers
        .iter()
        .filter(|p| p.bfd.as_ref().is_some_and(|b| b.state != "up"))
        .map(|p| p.name.as_str())
        .collect();
    if !bfd_down.is_empty() {
        v.bad(Level::Warning, format!("BFD down: {}", bfd_down.join(", ")));
    }
    if let Some(f) = &c.fallback {
        if f.phase != "normal" {
            let pid = f
                .keepalived_pid
                .map_or("not running".to_owned(), |p| format!("pid {p}"));
            v.bad(
                Level::Critical,
                format!(
                    "in fallback ({}, {:.0}s): the balancer's own keepalived decides (keepalived {pid})",
                    f.phase,
                    f.since_s.unwrap_or(0.0)
                ),
            );
        } else if !f.configs {
            v.bad(
                Level::Warning,
                "no keepalived config for this balancer: no fallback if the arbiter is lost".into(),
            );
        }
    }
    v.perf("bgp_established", format!("{up};;;0;{}", c.peers.len()));
    let announced = c.vips.iter().filter(|x| x.state == "announced").count();
    v.perf("vips_announced", announced);
}

fn server(s: &ServerStatus, v: &mut Verdict) {
    if !s.clients.iter().any(|c| c.live) {
        v.bad(Level::Warning, "no live clients".into());
    }
    if !s.forced_withdrawn.is_empty() {
        v.bad(
            Level::Critical,
            format!(
                "{} VIP(s) withdrawn because a quorum down could not be recorded",
                s.forced_withdrawn.len()
            ),
        );
    }
    if let Some(f) = s
        .quorum_failure
        .as_ref()
        .filter(|f| f.age_s < QUORUM_FAILURE_WARN_S)
    {
        v.bad(
            Level::Warning,
            format!(
                "quorum handler failed {:.0}s ago for {}: {}",
                f.age_s, f.vip, f.error
            ),
        );
    }
    let held: Vec<String> = s
        .vips
        .iter()
        .filter(|x| x.held.is_some())
        .map(|x| x.vip.to_string())
        .collect();
    if !held.is_empty() {
        v.bad(
            Level::Critical,
            format!(
                "{} withdrawal(s) held by withdraw_limit: {} (ipvs-sync release)",
                held.len(),
                held.join(" ")
            ),
        );
    }
    let silent: Vec<&str> = s
        .clients
        .iter()
        .filter(|c| c.live && c.quorate > 0 && c.announced == 0 && !c.drained)
        .filter(|c| c.uptime_s as f64 > SETTLE_S)
        .map(|c| c.name.as_str())
        .collect();
    if !silent.is_empty() {
        v.bad(
            Level::Warning,
            format!(
                "balancer(s) announcing none of their VIPs with quorum: {}",
                silent.join(", ")
            ),
        );
    }
    if let Some(why) = &s.holding {
        let l = if why.starts_with("startup_hold") {
            Level::Warning
        } else {
            Level::Critical
        };
        v.bad(l, format!("not answering balancers: {why}"));
    }
    v.perf("clients", s.clients.iter().filter(|c| c.live).count());
    v.perf("held", held.len());
    v.perf("vips_quorate", s.vips.iter().filter(|x| x.announce).count());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::daemon::status::{Broker, ClientRow, Common, PeerRow, QuorumFailure, Worker};

    const LIM: Limits = Limits {
        heartbeat_interval: 3.0,
        alive_ttl: 15.0,
    };

    fn common() -> Common {
        Common {
            hostname: "n".into(),
            broker: Broker {
                connected: true,
                node: None,
            },
            ..Common::default()
        }
    }

    fn client() -> ClientStatus {
        ClientStatus {
            common: common(),
            last_heartbeat_age_s: Some(1.0),
            ..ClientStatus::default()
        }
    }

    fn peer(name: &str, state: &str, down_s: Option<f64>) -> PeerRow {
        PeerRow {
            name: name.into(),
            state: state.into(),
            down_s,
            hold_time_s: 9.0,
            ..PeerRow::default()
        }
    }

    fn server() -> ServerStatus {
        ServerStatus {
            common: common(),
            clients: vec![ClientRow {
                name: "lb1".into(),
                age_s: Some(1.0),
                vips: 1,
                quorate: 1,
                announced: 1,
                serial: Some(5),
                lag: Some(0),
                uptime_s: 100,
                live: true,
                drained: false,
            }],
            ..ServerStatus::default()
        }
    }

    #[test]
    fn healthy_client_is_ok_with_perfdata() {
        let (l, line) = judge(&Status::Client(client()), LIM);
        assert_eq!(l, Level::Ok, "{line}");
        assert!(
            line.starts_with("OK: ipvs-sync client healthy | "),
            "{line}"
        );
        assert!(line.contains("heartbeat_age=1.0s"), "{line}");
    }

    #[test]
    fn fallback_is_critical_and_no_config_to_fall_back_to_warns() {
        use crate::daemon::status::FallbackRow;
        let mut c = client();
        c.fallback = Some(FallbackRow {
            phase: "normal".into(),
            configs: true,
            ..FallbackRow::default()
        });
        assert_eq!(judge(&Status::Client(c.clone()), LIM).0, Level::Ok);
        c.fallback = Some(FallbackRow {
            phase: "normal".into(),
            configs: false,
            ..FallbackRow::default()
        });
        let (l, line) = judge(&Status::Client(c.clone()), LIM);
        assert_eq!(l, Level::Warning, "{line}");
        assert!(line.contains("no keepalived config"), "{line}");
        c.fallback = Some(FallbackRow {
            phase: "fallback".into(),
            since_s: Some(12.0),
            configs: true,
            keepalived_pid: Some(77),
            entered: 1,
        });
        let (l, line) = judge(&Status::Client(c), LIM);
        assert_eq!(l, Level::Critical, "{line}");
        assert!(line.contains("in fallback (fallback, 12s)"), "{line}");
        assert!(line.contains("pid 77"), "{line}");
    }

    #[test]
    fn each_check_trips_its_level() {
        let j = |c: ClientStatus| judge(&Status::Client(c), LIM).0;
        let mut c = client();
        c.common.broker.connected = false;
        assert_eq!(j(c), Level::Critical);
        let mut c = client();
        c.last_heartbeat_age_s = Some(10.0);
        assert_eq!(j(c.clone()), Level::Warning);
        c.last_heartbeat_age_s = Some(20.0);
        assert_eq!(j(c), Level::Critical);
        let mut c = client();
        c.common.queues.insert("incoming".into(), 10);
        let (l, line) = judge(&Status::Client(c), LIM);
        assert_eq!(l, Level::Warning);
        assert!(line.contains("queue incoming holds 10"), "{line}");
        let mut c = client();
        c.common.workers.insert(
            "desc".into(),
            Worker {
                age_s: Some(5.0),
                interval_s: 0.5,
                error: None,
            },
        );
        assert_eq!(j(c.clone()), Level::Warning);
        c.common.workers.get_mut("desc").unwrap().error = Some("EIO".into());
        assert_eq!(j(c), Level::Critical, "a failing worker");
    }

    #[test]
    fn a_sender_clock_more_than_a_second_off_warns() {
        let clock = |peer: &str, offset_ms, warn| crate::wire::PeerClock {
            peer: peer.into(),
            offset_ms,
            warn,
            last_seen_ms: 1,
        };
        let mut c = client();
        c.common.clocks = vec![clock("lb9", 20, false)];
        assert_eq!(judge(&Status::Client(c.clone()), LIM).0, Level::Ok);
        c.common.clocks.push(clock("arbiter", -600_000, true));
        let (l, line) = judge(&Status::Client(c), LIM);
        assert_eq!(l, Level::Warning);
        assert!(
            line.contains("clock of arbiter is -600.0s off ours"),
            "{line}"
        );
    }

    #[test]
    fn bgp_sessions_down_past_their_hold_time() {
        let j = |peers| {
            let mut c = client();
            c.peers = peers;
            judge(&Status::Client(c), LIM)
        };
        let up = peer("r1", "established", None);
        assert_eq!(
            j(vec![up.clone(), peer("r2", "active", Some(5.0))]).0,
            Level::Ok
        );
        let (l, line) = j(vec![up.clone(), peer("r2", "active", Some(10.0))]);
        assert_eq!(l, Level::Warning);
        assert!(line.contains("BGP sessions down: r2"), "{line}");
        let (l, line) = j(vec![
            peer("r1", "idle", Some(10.0)),
            peer("r2", "connect", Some(30.0)),
        ]);
        assert_eq!(l, Level::Critical);
        assert!(line.contains("no BGP session Established"), "{line}");
        assert!(line.contains("bgp_established=0;;;0;2"), "{line}");
        let mut expired = peer("r1", "active", Some(0.5));
        expired.last_error = Some("hold timer expired".into());
        let (l, line) = j(vec![expired]);
        assert_eq!(
            l,
            Level::Critical,
            "a session that ended is down at once: {line}"
        );
    }

    #[test]
    fn a_bfd_session_not_up_warns() {
        let with_bfd = |state: &str| {
            let mut p = peer("r1", "established", None);
            p.bfd = Some(crate::daemon::status::BfdRow {
                state: state.into(),
                ..Default::default()
            });
            p
        };
        let j = |peers| {
            let mut c = client();
            c.peers = peers;
            judge(&Status::Client(c), LIM)
        };
        assert_eq!(j(vec![with_bfd("up")]).0, Level::Ok);
        let (l, line) = j(vec![with_bfd("down"), peer("r2", "established", None)]);
        assert_eq!(l, Level::Warning);
        assert!(line.contains("BFD down: r1"), "{line}");
    }

    #[test]
    fn server_checks() {
        let j = |s: ServerStatus| judge(&Status::Server(s), LIM);
        assert_eq!(j(server()).0, Level::Ok);
        let mut s = server();
        s.clients.clear();
        assert_eq!(j(s).0, Level::Warning);
        let mut s = server();
        s.holding = Some("startup_hold has not passed".into());
        let (l, line) = j(s.clone());
        assert_eq!(l, Level::Warning);
        assert!(
            line.contains("not answering balancers: startup_hold"),
            "{line}"
        );
        s.holding = Some("the service mapping has not been read".into());
        assert_eq!(j(s).0, Level::Critical);
        let mut s = server();
        s.quorum_failure = Some(QuorumFailure {
            age_s: 30.0,
            vip: "192.0.2.10".parse().unwrap(),
            error: "no space left on device".into(),
        });
        let (l, line) = j(s.clone());
        assert_eq!(l, Level::Warning);
        assert!(line.contains("no space left"), "{line}");
        s.quorum_failure.as_mut().unwrap().age_s = 7200.0;
        assert_eq!(j(s.clone()).0, Level::Ok, "an old failure is forgotten");
        s.forced_withdrawn = vec!["192.0.2.10".parse().unwrap()];
        assert_eq!(j(s).0, Level::Critical);
        let mut s = server();
        s.clients[0].announced = 0;
        let (l, line) = j(s.clone());
        assert_eq!(l, Level::Warning);
        assert!(line.contains("announcing none"), "{line}");
        s.clients[0].uptime_s = 10;
        assert_eq!(j(s).0, Level::Ok, "a balancer just started is left alone");
        let mut s = server();
        s.vips.push(crate::daemon::status::ServerVip {
            vip: "192.0.2.10".parse().unwrap(),
            announce: true,
            local_pref: Some(100),
            active: Some(0),
            total: Some(1),
            since_s: Some(1.0),
            held: Some(crate::daemon::status::HeldRow {
                since_s: 1.0,
                because: "quorum lost".into(),
            }),
            balancers: vec![],
        });
        let (l, line) = j(s);
        assert_eq!(l, Level::Critical);
        assert!(line.contains("held by withdraw_limit"), "{line}");
    }
}
