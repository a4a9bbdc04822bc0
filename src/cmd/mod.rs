//! Subcommands: each returns the process exit code (see `cli` for their meaning).

pub mod control;
pub mod ipvs;
pub mod keygen;
pub mod monitor;
pub mod quorum;
pub mod status;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::daemon::{self, Shutdown};

/// Loads the config or prints why not (exit 2).
fn load(path: &Path, what: &str) -> Result<config::Config, ExitCode> {
    config::Config::load(path).map_err(|e| {
        eprintln!("ipvs-sync {what}: {e}");
        ExitCode::from(2)
    })
}

/// Which daemon to run.
#[derive(Debug, Clone, Copy)]
pub enum Daemon {
    /// The arbiter.
    Server,
    /// A balancer.
    Client,
}

/// Why a daemon's loop ended. Only a stop that was asked for is a success: any other end
/// exits 1, so that a supervisor (systemd's `Restart=on-failure`) starts the daemon again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// SIGTERM or SIGINT (or the stop handle of a test).
    Requested,
    /// SIGUSR2 on a balancer with `[bgp] graceful_restart`: sessions closed without a
    /// NOTIFICATION, routes, addresses and IPVS left for the next process.
    ForRestart,
    /// The broker transport ended and delivers nothing more.
    TransportLost,
}

/// `server` / `client`: runs until SIGTERM; 0 after a requested stop, 1 after any other stop,
/// 2 when it cannot start.
pub fn run_daemon(path: &Path, which: Daemon) -> ExitCode {
    let name = match which {
        Daemon::Server => "server",
        Daemon::Client => "client",
    };
    let cfg = match load(path, name) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime(which) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ipvs-sync {name}: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let res = rt.block_on(async {
        let shutdown = Shutdown::from_signals().map_err(|e| format!("signals: {e}"))?;
        let r = match which {
            Daemon::Server => crate::server::run(cfg, shutdown).await,
            Daemon::Client => crate::client::run(cfg, shutdown).await,
        };
        r.map_err(|e| e.to_string())
    });
    rt.shutdown_timeout(Duration::from_millis(300));
    daemon_exit(name, res)
}

/// The arbiter runs on one thread: its loop is one task, its slow work (dumps, desc reads,
/// the mapping) runs on threads of its own, and with 1,000 balancers heartbeating each
/// delivery batch crossed from lapin's thread to a worker, to the loop on the main thread and
/// back; on one thread only lapin's hand-off is left (`netns-lab/bench-scale`, README
/// "Scale"). A balancer keeps two workers: its BGP and BFD sessions keep their timers while
/// its loop applies a large tree.
fn runtime(which: Daemon) -> std::io::Result<tokio::runtime::Runtime> {
    match which {
        Daemon::Server => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Daemon::Client => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
}

/// The exit code of a daemon that ran (`Ok`) or could not start (`Err`).
fn daemon_exit(name: &str, res: Result<Stopped, String>) -> ExitCode {
    match res {
        Ok(Stopped::Requested | Stopped::ForRestart) => ExitCode::SUCCESS,
        Ok(why @ Stopped::TransportLost) => {
            tracing::error!(?why, "stopped without being asked to: exit 1");
            eprintln!("ipvs-sync {name}: stopped without being asked to ({why:?})");
            ExitCode::from(1)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("ipvs-sync {name}: {e}");
            ExitCode::from(2)
        }
    }
}

/// `status [--json] [--vip VIP] [--balancer HOST]`.
pub fn run_status(
    path: &Path,
    json: bool,
    vip: Option<std::net::IpAddr>,
    balancer: Option<&str>,
) -> ExitCode {
    let cfg = match load(path, "status") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(addr) = cfg.main.http_listen else {
        eprintln!(
            "ipvs-sync status: http_listen is not set in {}: the daemon serves no status",
            path.display()
        );
        return ExitCode::from(2);
    };
    match daemon::http::get(addr, "/status", Duration::from_secs(3)) {
        Ok((200, body)) => {
            match serde_json::from_str::<Option<daemon::status::Status>>(&body) {
                Ok(Some(mut doc)) => {
                    status::narrow(&mut doc, vip, balancer);
                    if json {
                        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                    } else {
                        print!("{}", status::render(&doc));
                    }
                }
                Ok(None) => println!("the daemon is starting: no status yet"),
                Err(e) => {
                    eprintln!("ipvs-sync status: the daemon sent no status document: {e}");
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Ok((code, _)) => {
            eprintln!("ipvs-sync status: http://{addr}/status answered {code}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ipvs-sync status: no daemon answers on http://{addr}/status: {e}");
            ExitCode::from(1)
        }
    }
}

/// `monitor`: one line; 0 ok, 1 warning, 2 critical, 3 unknown (no daemon to ask).
pub fn run_monitor(path: &Path) -> ExitCode {
    let cfg = match config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            println!("UNKNOWN: config: {e}");
            return ExitCode::from(3);
        }
    };
    let Some(addr) = cfg.main.http_listen else {
        println!("UNKNOWN: http_listen is not set: nothing to monitor");
        return ExitCode::from(3);
    };
    let lim = monitor::Limits {
        heartbeat_interval: cfg.main.heartbeat_interval.as_secs_f64(),
        alive_ttl: cfg.main.consumer_alive_ttl.as_secs_f64(),
    };
    let doc = match daemon::http::get(addr, "/status", Duration::from_secs(3)) {
        Ok((200, body)) => match serde_json::from_str::<Option<daemon::status::Status>>(&body) {
            Ok(Some(doc)) => doc,
            Ok(None) => {
                println!("WARNING: the daemon is starting: no status yet");
                return ExitCode::from(1);
            }
            Err(e) => {
                println!("UNKNOWN: the daemon sent no status document: {e}");
                return ExitCode::from(3);
            }
        },
        Ok((code, _)) => {
            println!("UNKNOWN: daemon answered {code} on /status");
            return ExitCode::from(3);
        }
        Err(e) => {
            println!("UNKNOWN: daemon not answering on {addr}: {e}");
            return ExitCode::from(3);
        }
    };
    let (level, line) = monitor::judge(&doc, lim);
    println!("{line}");
    ExitCode::from(level as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_requested_stop_exits_zero() {
        assert_eq!(
            daemon_exit("client", Ok(Stopped::Requested)),
            ExitCode::SUCCESS
        );
        assert_eq!(
            daemon_exit("client", Ok(Stopped::TransportLost)),
            ExitCode::from(1)
        );
        assert_eq!(daemon_exit("server", Err("no".into())), ExitCode::from(2));
    }
}
