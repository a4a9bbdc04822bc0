//! Subcommands: each returns the process exit code (see `cli` for their meaning).

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

/// `server` / `client`: runs until SIGTERM; 0 after a clean stop, 2 when it cannot start.
pub fn run_daemon(path: &Path, which: Daemon) -> ExitCode {
    let name = match which {
        Daemon::Server => "server",
        Daemon::Client => "client",
    };
    let cfg = match load(path, name) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
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
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("ipvs-sync {name}: {e}");
            ExitCode::from(2)
        }
    }
}

/// `status [--json]`.
pub fn run_status(path: &Path, json: bool) -> ExitCode {
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
            if json {
                print!("{body}");
            } else {
                match serde_json::from_str(&body) {
                    Ok(doc) => print!("{}", status::render(&doc)),
                    Err(e) => {
                        eprintln!("ipvs-sync status: the daemon sent no JSON: {e}");
                        return ExitCode::from(1);
                    }
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

/// `monitor`: one line; 0 ok, 1 warning, 2 critical.
pub fn run_monitor(path: &Path) -> ExitCode {
    let cfg = match config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            println!("CRITICAL: config: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(addr) = cfg.main.http_listen else {
        println!("CRITICAL: http_listen is not set: nothing to monitor");
        return ExitCode::from(2);
    };
    let lim = monitor::Limits {
        heartbeat_interval: cfg.main.heartbeat_interval.as_secs_f64(),
        alive_ttl: cfg.main.consumer_alive_ttl.as_secs_f64(),
    };
    let doc = match daemon::http::get(addr, "/status", Duration::from_secs(3)) {
        Ok((200, body)) => serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        Ok((code, _)) => {
            println!("CRITICAL: daemon answered {code} on /status");
            return ExitCode::from(2);
        }
        Err(e) => {
            println!("CRITICAL: daemon not answering on {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    let (level, line) = monitor::judge(&doc, lim);
    println!("{line}");
    ExitCode::from(level as u8)
}
