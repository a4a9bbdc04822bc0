//! ipvs-sync: control plane for fleets of Linux IPVS load balancers.
//!
//! The binary holds the CLI, the two daemons (`server`, the arbiter; `client`, each balancer),
//! the AMQP transport and the wiring of tasks; the protocol and kernel work lives in the
//! workspace crates `bgp`, `ipvs`, `announce` and `config`.

mod cli;
mod client;
mod cmd;
mod daemon;
mod logging;
mod server;
mod wire;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Server => cmd::run_daemon(&cli.config, cmd::Daemon::Server),
        Command::Client => cmd::run_daemon(&cli.config, cmd::Daemon::Client),
        Command::Quorum(args) => cmd::quorum::run(&cli.config, &args),
        Command::Monitor => cmd::run_monitor(&cli.config),
        Command::Status { json } => cmd::run_status(&cli.config, json),
        Command::Ipvs(c) => cmd::ipvs::run(c),
    }
}
