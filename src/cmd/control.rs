//! `ipvs-sync drain | undrain | release | forget`: requests to the running daemon over its
//! control socket (`[main] control_socket`).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::daemon::control::{self, Request};

/// How long the daemon may take to answer (a drain answers when it has started, not when
/// it has ended).
const ANSWER_WAIT: Duration = Duration::from_secs(15);

/// Sends `req` and prints the answer: exit 0 when done, 1 when refused or no daemon answers,
/// 2 on a broken config.
pub fn run(path: &Path, req: Request) -> ExitCode {
    let cfg = match config::Config::load_public(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ipvs-sync: {e}");
            return ExitCode::from(2);
        }
    };
    match control::request(&cfg.main.control_socket, &req, ANSWER_WAIT) {
        Ok(r) if r.ok => {
            println!("{}", r.message);
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("ipvs-sync: refused: {}", r.message);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ipvs-sync: {e}");
            ExitCode::from(1)
        }
    }
}
