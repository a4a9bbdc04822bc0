//! `ipvs-sync quorum up|down VIP[,b-LOCALPREF[,PORT]]`: keepalived's quorum handler.
//!
//! The file half: find the VIP's ports in the keepalived configs (so `total` counts
//! virtual servers not yet reported; through a cache file, since parsing every config
//! takes tens of ms — see [`announce::known_ports`]), then record the call in the VIP's desc file
//! with [`announce::quorum::apply`] (lock, recount, atomic replace). Handing the
//! announce/withdraw to the running arbiter builds on the returned [`DescChange`]
//! (`change.publish()` says whether a `syn_announce` or a `fin_announce` is due).
//!
//! Kept light on purpose — it sits in keepalived's path: no tokio runtime, no netlink, no
//! AMQP, no secret — except when a `down` cannot be handed to the arbiter, which it then
//! publishes to the broker itself (see [`run`]).
//!
//! On a balancer in fallback (its client runs keepalived because the arbiter is lost) there is
//! no arbiter to hand to: the call goes to the client daemon's control socket, which announces
//! or withdraws the VIP itself.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use announce::known_ports::known_ports;
use announce::quorum::{self, DescChange, QuorumError};
use announce::Desc;

use crate::daemon::quorum_socket::{hand_off, QuorumEvent};
use crate::wire::messages::FinAnnounce;
use crate::wire::{Dest, Message};

/// Quorum direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// quorum_up
    Up,
    /// quorum_down
    Down,
}

impl From<Direction> for quorum::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Up => quorum::Direction::Up,
            Direction::Down => quorum::Direction::Down,
        }
    }
}

/// `quorum up|down VIP[,b-LOCALPREF[,PORT]]`
#[derive(Debug, clap::Args)]
pub struct QuorumArgs {
    /// up or down
    #[arg(value_enum)]
    pub direction: Direction,
    /// VIP[,b-LOCALPREF[,PORT]], e.g. 2a02:6b8::1:1,b-100,0 (PORT 0 = fwmark/all ports)
    pub arg: String,
}

/// Record the quorum call in the VIP's desc file and return the new desc and what
/// changed.
pub fn update_desc(
    cfg: &config::Config,
    args: &QuorumArgs,
) -> Result<(Desc, DescChange), QuorumError> {
    let arg = quorum::parse_arg(&args.arg)?;
    let known = known_ports(cfg, arg.vip);
    let path = cfg.desc_path(arg.vip);
    let outcome = quorum::apply(&path, &arg, args.direction.into(), &known)?;
    if let Some(e) = &outcome.recovered {
        tracing::warn!(vip = %arg.vip, error = %e, "desc file was corrupt; count restarted");
    }
    tracing::info!(vip = %arg.vip, port = arg.port, direction = ?args.direction,
        active = outcome.desc.active, total = outcome.desc.total,
        announce = outcome.desc.announce, "quorum recorded");
    Ok((outcome.desc, outcome.change))
}

/// How long the hand-off to the arbiter may take.
pub const HANDOFF_WAIT: Duration = Duration::from_secs(1);

/// How long publishing a `fin_announce` to the broker directly may take.
const PUBLISH_WAIT: Duration = Duration::from_secs(3);

/// `quorum up|down ARG`: records the call in the desc file, then hands the VIP to the
/// running arbiter for an immediate announce/withdraw.
///
/// A `down` is never lost, because keepalived never runs a handler again:
/// - when the desc file cannot be updated (no space, I/O error, its lock held by a stuck
///   process past [`announce::quorum::LOCK_TIMEOUT`]), the file is removed (which needs no
///   space: a missing desc means no quorum) and the arbiter is told to withdraw the VIP and
///   keep it withdrawn until a quorum call for it succeeds again;
/// - when the arbiter cannot be told (not running, not answering) and this host's client
///   daemon is in fallback, the client takes the call (announce or withdraw);
/// - when neither can be told, the handler publishes the signed `fin_announce` to the broker
///   itself.
///
/// Exit 0 when the call is recorded and, for a `down`, the withdraw is on its way; 1 when
/// the desc could not be written for an `up`, or a `down` could reach neither the arbiter nor
/// the broker (the message names each failure); 2 on a bad argument or config. The desc part
/// reads no secret: only the broker fallback reads `secret.ini`.
pub fn run(path: &Path, args: &QuorumArgs) -> ExitCode {
    let cfg = match config::Config::load_public(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ipvs-sync quorum: {e}");
            return ExitCode::from(2);
        }
    };
    let vip = match quorum::parse_arg(&args.arg) {
        Ok(a) => a.vip,
        Err(e) => {
            eprintln!("ipvs-sync quorum: {e}");
            return ExitCode::from(2);
        }
    };
    let (ev, local_pref, desc_error) = match record(&cfg, args, vip) {
        Recorded::Nothing => return ExitCode::SUCCESS,
        Recorded::Deliver { ev, local_pref } => (ev, local_pref, None),
        Recorded::UpFailed(e) => {
            // Not recorded: the VIP keeps its last state, which an up cannot make unsafe.
            eprintln!("ipvs-sync quorum: {e}");
            return ExitCode::from(1);
        }
        Recorded::DownFailed(why) => {
            let (ev, why) = forced_withdraw(&cfg, vip, why);
            (ev, None, Some(why))
        }
    };
    let handed = hand_off(&cfg.server.quorum_socket, &ev, HANDOFF_WAIT);
    let handoff_error = match handed {
        Ok(()) => return report(desc_error, None),
        Err(e) => e,
    };
    if to_balancer_in_fallback(&cfg, &ev, local_pref) {
        return report(desc_error, None);
    }
    if ev.announce {
        // An announce waits for the arbiter: its desc scan reads the file once it runs.
        tracing::warn!(%vip, error = %handoff_error, "arbiter not told at once; its desc scan will pick the change up");
        return ExitCode::SUCCESS;
    }
    tracing::warn!(%vip, error = %handoff_error, "arbiter not told: publishing the fin_announce to the broker");
    match withdraw_via_broker(path, vip) {
        Ok(()) => report(desc_error, None),
        Err(e) => report(
            desc_error,
            Some(format!(
                "the arbiter could not be told ({handoff_error}) and the broker neither ({e})"
            )),
        ),
    }
}

/// What recording a quorum call in the desc file leaves to do.
#[derive(Debug)]
pub enum Recorded {
    /// Nothing changed for the routers.
    Nothing,
    /// Tell the arbiter (or a fallback) this, with the LOCAL_PREF of an announce.
    Deliver {
        /// The hand-off.
        ev: QuorumEvent,
        /// The announce's LOCAL_PREF (`None` for a withdraw).
        local_pref: Option<u32>,
    },
    /// An `up` could not be recorded: the VIP keeps its last state (exit 1).
    UpFailed(QuorumError),
    /// A `down` could not be recorded, for this reason: it is withdrawn regardless.
    DownFailed(String),
}

/// Records the call in the VIP's desc file ([`update_desc`]) and says what is left to do.
pub fn record(cfg: &config::Config, args: &QuorumArgs, vip: std::net::IpAddr) -> Recorded {
    match update_desc(cfg, args) {
        Ok((desc, change)) => {
            let local_pref = match change.publish() {
                quorum::Publish::Nothing => return Recorded::Nothing,
                quorum::Publish::Syn { local_preference } => Some(local_preference),
                quorum::Publish::Fin => None,
            };
            let ev = QuorumEvent {
                vip,
                announce: desc.announce,
                forced: false,
                error: None,
            };
            Recorded::Deliver { ev, local_pref }
        }
        Err(e) if args.direction == Direction::Up => Recorded::UpFailed(e),
        Err(e) => Recorded::DownFailed(e.to_string()),
    }
}

/// A `down` the desc file could not take: the file goes (which needs no space; a missing desc
/// means no quorum) and the arbiter is told to withdraw the VIP and keep it withdrawn until a
/// quorum call for it succeeds again. Returns the hand-off and the whole reason.
pub fn forced_withdraw(
    cfg: &config::Config,
    vip: std::net::IpAddr,
    mut why: String,
) -> (QuorumEvent, String) {
    let desc = cfg.desc_path(vip);
    match std::fs::remove_file(&desc) {
        Ok(()) => why.push_str("; desc file removed"),
        Err(r) if r.kind() == std::io::ErrorKind::NotFound => {}
        Err(r) => why.push_str(&format!("; removing {} failed too: {r}", desc.display())),
    }
    tracing::error!(%vip, error = %why, "quorum down not recorded in the desc file: withdrawing the VIP regardless");
    let ev = QuorumEvent {
        vip,
        announce: false,
        forced: true,
        error: Some(why.clone()),
    };
    (ev, why)
}

/// On a balancer in fallback (no arbiter here, the client runs this keepalived): the call goes
/// to the local client daemon, which announces or withdraws through its speaker. `false` when
/// no client answers or it is not in fallback.
fn to_balancer_in_fallback(
    cfg: &config::Config,
    ev: &QuorumEvent,
    local_pref: Option<u32>,
) -> bool {
    let req = crate::daemon::control::Request::Quorum {
        vip: ev.vip,
        announce: ev.announce,
        local_pref,
    };
    match crate::daemon::control::request(&cfg.main.control_socket, &req, HANDOFF_WAIT) {
        Ok(r) if r.ok => {
            tracing::info!(vip = %ev.vip, announce = ev.announce, "handed to this balancer's client (fallback)");
            true
        }
        Ok(r) => {
            tracing::debug!(vip = %ev.vip, answer = %r.message, "this host's client did not take the call");
            false
        }
        Err(e) => {
            tracing::debug!(vip = %ev.vip, error = %e, "no client daemon here");
            false
        }
    }
}

/// The exit of a call whose withdraw went out (`lost` is `None`) or was lost.
fn report(desc_error: Option<String>, lost: Option<String>) -> ExitCode {
    if let Some(e) = &desc_error {
        eprintln!("ipvs-sync quorum: desc file not updated: {e}");
    }
    match lost {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("ipvs-sync quorum: withdraw not delivered: {e}");
            ExitCode::from(1)
        }
    }
}

/// Publishes `fin_announce` of `vip` to every balancer, signed as the arbiter, with the
/// broker settings and secrets of the arbiter's config.
fn withdraw_via_broker(path: &Path, vip: std::net::IpAddr) -> Result<(), String> {
    let cfg = config::Config::load(path).map_err(|e| e.to_string())?;
    let role = crate::wire::Role::Server {
        name: cfg.main.hostname.clone(),
    };
    let opts =
        crate::wire::TransportOptions::from_config(&cfg, &role).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let msg = Message::FinAnnounce(FinAnnounce { vips: vec![vip] });
    rt.block_on(crate::wire::oneshot::publish(
        &cfg.amqp_url(),
        &opts,
        &cfg.main.hostname,
        Dest::Broadcast,
        &msg,
        PUBLISH_WAIT,
    ))
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use announce::quorum::Publish;
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    fn cfg(dir: &Path) -> config::Config {
        let text = format!(
            "[main]\namqp_server = amqp://ipvs@127.0.0.1:5672/\nhostname = arbiter.example.net\n\
             vip_description_filepath = {d}/keepalived-{{vip}}-desc.json\n\
             service_mapping_wildcard = {d}/lbs/*/*/*.conf\n",
            d = dir.display()
        );
        config::Config::from_strs(&text, None).unwrap()
    }

    fn args(direction: Direction, arg: &str) -> QuorumArgs {
        QuorumArgs {
            direction,
            arg: arg.to_string(),
        }
    }

    #[test]
    fn counts_ports_from_the_keepalived_configs() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("lbs/lb1.example.net/web");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("web.conf"),
            "virtual_server 192.0.2.10 80 {\n  protocol TCP\n}\n\
             virtual_server 192.0.2.10 443 {\n  protocol TCP\n}\n",
        )
        .unwrap();
        let cfg = cfg(dir.path());
        let vip: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(known_ports(&cfg, vip), BTreeSet::from([80, 443]));

        let (desc, change) =
            update_desc(&cfg, &args(Direction::Up, "192.0.2.10,b-120,80")).unwrap();
        assert_eq!((desc.active, desc.total, desc.announce), (1, 2, false));
        assert_eq!(change.publish(), Publish::Nothing);
        let (desc, change) =
            update_desc(&cfg, &args(Direction::Up, "192.0.2.10,b-120,443")).unwrap();
        assert!(desc.announce);
        assert_eq!(
            change.publish(),
            Publish::Syn {
                local_preference: 120
            }
        );
        let on_disk = Desc::read(&cfg.desc_path(vip)).unwrap();
        assert_eq!(on_disk, desc);
        let (_, change) = update_desc(&cfg, &args(Direction::Down, "192.0.2.10,b-120,80")).unwrap();
        assert_eq!(change.publish(), Publish::Fin);
    }

    #[test]
    fn bad_argument_is_an_arg_error() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            update_desc(&cfg(dir.path()), &args(Direction::Up, "not-an-ip,b-1,80")).unwrap_err();
        assert!(matches!(err, QuorumError::Arg(_)), "{err}");
    }
}

#[cfg(test)]
mod failure_tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A config whose desc files live under `desc_dir` and whose quorum socket is `sock`;
    /// the broker is a closed port.
    fn write_config(dir: &Path, desc_dir: &Path, sock: &Path) -> std::path::PathBuf {
        let path = dir.join("config.ini");
        std::fs::write(
            &path,
            format!(
                "[main]\namqp_server = amqp://ipvs@127.0.0.1:1/\nhostname = arbiter.example.net\n\
                 vip_description_filepath = {d}/keepalived-{{vip}}-desc.json\n\
                 service_mapping_wildcard = {w}/lbs/*/*/*.conf\n\
                 [server]\nquorum_socket = {s}\n",
                d = desc_dir.display(),
                w = dir.display(),
                s = sock.display()
            ),
        )
        .unwrap();
        path
    }

    /// Answers one hand-off with `ok` and returns what it said.
    fn one_handoff(sock: &Path) -> std::thread::JoinHandle<QuorumEvent> {
        let l = UnixListener::bind(sock).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            (&s).write_all(b"ok\n").unwrap();
            serde_json::from_str(line.trim()).unwrap()
        })
    }

    #[test]
    fn a_down_the_desc_cannot_record_is_handed_off_as_a_forced_withdraw() {
        let dir = tempfile::tempdir().unwrap();
        // The desc "directory" is a file: every write fails (ENOTDIR), as on a broken disk.
        let not_a_dir = dir.path().join("desc");
        std::fs::write(&not_a_dir, b"").unwrap();
        let sock = dir.path().join("q.sock");
        let cfg = write_config(dir.path(), &not_a_dir, &sock);
        let got = one_handoff(&sock);
        let code = run(&cfg, &args(Direction::Down, "192.0.2.10,b-100,80"));
        assert_eq!(code, ExitCode::SUCCESS, "the withdraw went out");
        let ev = got.join().unwrap();
        assert_eq!(ev.vip, "192.0.2.10".parse::<std::net::IpAddr>().unwrap());
        assert!(ev.forced && !ev.announce);
        assert!(ev.error.unwrap().contains("Not a directory"));
    }

    #[test]
    fn a_down_neither_the_arbiter_nor_the_broker_took_fails_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let desc = dir.path().join("desc");
        std::fs::create_dir(&desc).unwrap();
        let cfg = write_config(dir.path(), &desc, &dir.path().join("absent.sock"));
        // Up first: recorded, the arbiter is away, and that is fine for an up.
        assert_eq!(
            run(&cfg, &args(Direction::Up, "192.0.2.10,b-100,80")),
            ExitCode::SUCCESS
        );
        // The down is recorded, but no arbiter and no broker (and no secret.ini) take it.
        assert_eq!(
            run(&cfg, &args(Direction::Down, "192.0.2.10,b-100,80")),
            ExitCode::from(1)
        );
        let d = Desc::read(&desc.join("keepalived-192.0.2.10-desc.json")).unwrap();
        assert!(!d.announce, "the desc says down");
    }

    #[test]
    fn an_up_the_desc_cannot_record_fails_without_a_hand_off() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("desc");
        std::fs::write(&not_a_dir, b"").unwrap();
        let sock = dir.path().join("q.sock");
        let cfg = write_config(dir.path(), &not_a_dir, &sock);
        assert_eq!(
            run(&cfg, &args(Direction::Up, "192.0.2.10,b-100,80")),
            ExitCode::from(1)
        );
        assert!(!sock.exists());
    }

    fn args(direction: Direction, arg: &str) -> QuorumArgs {
        QuorumArgs {
            direction,
            arg: arg.to_string(),
        }
    }
}
