//! The `ipvs-sync` binary: parses the command line and runs the subcommand (see
//! [`ipvs_sync::cli`] for the commands and their exit codes).

use std::process::ExitCode;

use clap::Parser;

use ipvs_sync::cli::{Cli, Command};
use ipvs_sync::{cmd, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Server => cmd::run_daemon(&cli.config, cmd::Daemon::Server),
        Command::Client => cmd::run_daemon(&cli.config, cmd::Daemon::Client),
        Command::Quorum(args) => cmd::quorum::run(&cli.config, &args),
        Command::Monitor => cmd::run_monitor(&cli.config),
        Command::Status {
            json,
            vip,
            balancer,
        } => cmd::run_status(&cli.config, json, vip, balancer.as_deref()),
        Command::Drain {
            vips,
            timeout,
            balancer,
        } => cmd::control::run(
            &cli.config,
            ipvs_sync::daemon::control::Request::Drain {
                vips,
                timeout_s: timeout,
                balancer,
            },
        ),
        Command::Undrain { vips, balancer } => cmd::control::run(
            &cli.config,
            ipvs_sync::daemon::control::Request::Undrain { vips, balancer },
        ),
        Command::Release { vips, all } => cmd::control::run(
            &cli.config,
            ipvs_sync::daemon::control::Request::Release { vips, all },
        ),
        Command::Forget { host } => cmd::control::run(
            &cli.config,
            ipvs_sync::daemon::control::Request::Forget { host },
        ),
        Command::Ipvs(c) => cmd::ipvs::run(c),
        Command::Keygen(args) => cmd::keygen::run(&cli.config, &args),
    }
}
