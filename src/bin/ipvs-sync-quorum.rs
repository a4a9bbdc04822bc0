//! `ipvs-sync-quorum [-c CONFIG] up|down VIP[,b-LOCALPREF[,PORT]]`: keepalived's quorum
//! handler, the same call as `ipvs-sync quorum up|down`, in a binary that holds only what the
//! common case needs: record the call in the VIP's desc file and hand it to the running
//! arbiter. keepalived starts a handler per call, and loading the whole `ipvs-sync` costs
//! that call ~0.6 ms more (README, "Where a quorum down's time goes").
//!
//! A `down` the desc file cannot take is withdrawn as `ipvs-sync quorum` does it: the file
//! goes, and the arbiter is told to withdraw regardless. (If the arbiter cannot be told
//! either, the `ipvs-sync quorum` run below tries the desc file again, and with a lock still
//! stuck it waits out the lock timeout a second time before its broker fallback.)
//!
//! Everything else is `ipvs-sync quorum`'s, which this binary runs in its place (`exec`, the
//! same process for keepalived; the `ipvs-sync` next to this binary) with the same arguments,
//! when the arbiter could not be told or an `up` could not be recorded. It records the call
//! again, which changes nothing the first try recorded, and finds the same thing to deliver:
//! a `down` publishes a withdraw whenever it leaves the VIP withdrawn, an `up` an announce
//! whenever it leaves the VIP announceable. Then it takes its own fallbacks (this balancer's
//! client in fallback, a `down` published to the broker itself), so a `down` is never lost.
//!
//! Exit codes are `ipvs-sync quorum`'s: 0 done, 1 not recorded (`up`) or not delivered
//! (`down`), 2 a bad argument or config.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use ipvs_sync::cli::DEFAULT_CONFIG;
use ipvs_sync::cmd::quorum::{self, Direction, QuorumArgs, Recorded};
use ipvs_sync::daemon::quorum_socket::hand_off;

const USAGE: &str = "usage: ipvs-sync-quorum [-c CONFIG] up|down VIP[,b-LOCALPREF[,PORT]]";

/// The command line: the config file, then `up|down ARG`.
#[derive(Debug, PartialEq, Eq)]
enum Call {
    Run {
        config: PathBuf,
        args: (Direction, String),
    },
    Help,
    Version,
}

/// Parses `[-c CONFIG | --config CONFIG | --config=CONFIG] up|down ARG`; `config` is the
/// default (`IPVS_SYNC_CONFIG` or [`DEFAULT_CONFIG`]).
fn parse(argv: &[OsString], config: PathBuf) -> Result<Call, String> {
    let mut config = config;
    let mut rest = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let s = a.to_str().ok_or_else(|| format!("not UTF-8: {a:?}"))?;
        match s {
            "-h" | "--help" => return Ok(Call::Help),
            "-V" | "--version" => return Ok(Call::Version),
            "-c" | "--config" => {
                config = it.next().ok_or(format!("{s} needs a file"))?.into();
            }
            _ if s.starts_with("--config=") => config = s["--config=".len()..].into(),
            _ if s.starts_with('-') && rest.is_empty() => {
                return Err(format!("unknown option {s}"))
            }
            _ => rest.push(s.to_owned()),
        }
    }
    match rest.as_slice() {
        [dir, arg] => {
            let dir = match dir.as_str() {
                "up" => Direction::Up,
                "down" => Direction::Down,
                other => return Err(format!("expected up or down, got {other:?}")),
            };
            Ok(Call::Run {
                config,
                args: (dir, arg.clone()),
            })
        }
        _ => Err("expected up|down and one VIP argument".to_owned()),
    }
}

fn main() -> ExitCode {
    let default = std::env::var_os("IPVS_SYNC_CONFIG").map_or(DEFAULT_CONFIG.into(), PathBuf::from);
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let (config, (direction, arg)) = match parse(&argv, default) {
        Ok(Call::Run { config, args }) => (config, args),
        Ok(Call::Help) => {
            println!("{USAGE}\nThe same call as `ipvs-sync quorum up|down`, loaded faster.");
            return ExitCode::SUCCESS;
        }
        Ok(Call::Version) => {
            println!("ipvs-sync-quorum {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ipvs-sync-quorum: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // What `update_desc` warns about (a corrupt desc recounted) reaches stderr, as with
    // `ipvs-sync quorum --log-level warn`.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    let cfg = match config::Config::load_public(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ipvs-sync-quorum: {e}");
            return ExitCode::from(2);
        }
    };
    let vip = match announce::quorum::parse_arg(&arg) {
        Ok(a) => a.vip,
        Err(e) => {
            eprintln!("ipvs-sync-quorum: {e}");
            return ExitCode::from(2);
        }
    };
    let args = QuorumArgs { direction, arg };
    match quorum::record(&cfg, &args, vip) {
        Recorded::Nothing => ExitCode::SUCCESS,
        Recorded::Deliver { ev, .. } => {
            match hand_off(&cfg.server.quorum_socket, &ev, quorum::HANDOFF_WAIT) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => full(&config, &args),
            }
        }
        Recorded::UpFailed(_) => full(&config, &args),
        // Withdrawn here, not after `ipvs-sync quorum` has waited for the lock a second time.
        // Only when the arbiter does not take this hand-off either does `ipvs-sync quorum`
        // run, and it tries the desc file again first: with a lock still stuck, the broker
        // fallback then comes after a second lock timeout.
        Recorded::DownFailed(why) => {
            let (ev, why) = quorum::forced_withdraw(&cfg, vip, why);
            eprintln!("ipvs-sync-quorum: desc file not updated: {why}");
            match hand_off(&cfg.server.quorum_socket, &ev, quorum::HANDOFF_WAIT) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => full(&config, &args),
            }
        }
    }
}

/// Runs `ipvs-sync quorum` (next to this binary) in this process with the same call.
/// Returns only when it could not be started.
fn full(config: &Path, args: &QuorumArgs) -> ExitCode {
    let dir = match args.direction {
        Direction::Up => "up",
        Direction::Down => "down",
    };
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("ipvs-sync")))
        .unwrap_or_else(|| PathBuf::from("ipvs-sync"));
    let err = Command::new(&bin)
        .arg("-c")
        .arg(config)
        .args(["--log-level", "warn", "quorum", dir, &args.arg])
        .exec();
    eprintln!(
        "ipvs-sync-quorum: the call was not handed over, and {} could not be started: {err}",
        bin.display()
    );
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn argv(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn run(config: &str, dir: Direction, arg: &str) -> Call {
        Call::Run {
            config: config.into(),
            args: (dir, arg.to_owned()),
        }
    }

    #[test]
    fn parses_what_keepalived_runs() {
        let d = PathBuf::from("/etc/ipvs-sync/config.ini");
        assert_eq!(
            parse(&argv("up 192.0.2.10,b-150,443"), d.clone()),
            Ok(run(
                "/etc/ipvs-sync/config.ini",
                Direction::Up,
                "192.0.2.10,b-150,443"
            ))
        );
        for line in [
            "-c /tmp/c.ini down 192.0.2.10",
            "--config /tmp/c.ini down 192.0.2.10",
            "--config=/tmp/c.ini down 192.0.2.10",
        ] {
            assert_eq!(
                parse(&argv(line), d.clone()),
                Ok(run("/tmp/c.ini", Direction::Down, "192.0.2.10")),
                "{line}"
            );
        }
        assert_eq!(parse(&argv("--version"), d.clone()), Ok(Call::Version));
        assert_eq!(parse(&argv("-h"), d.clone()), Ok(Call::Help));
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let d = PathBuf::from("/etc/ipvs-sync/config.ini");
        for line in [
            "",
            "up",
            "sideways 192.0.2.10",
            "up 192.0.2.10 extra",
            "-c",
            "--log-level warn up 192.0.2.10",
        ] {
            assert!(parse(&argv(line), d.clone()).is_err(), "{line:?}");
        }
    }
}
