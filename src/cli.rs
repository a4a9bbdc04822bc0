//! Command-line interface (the stable contract of DESIGN.md).
//!
//! Exit codes, for every subcommand unless it says otherwise:
//! - 0: success;
//! - 1: the command ran but failed (a daemon stopped on an error, a partial apply);
//! - 2: it could not start: bad arguments, a broken config, a missing kernel feature.
//!
//! `monitor` follows the Nagios convention: 0 ok, 1 warning, 2 critical.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::cmd::ipvs::IpvsCmd;
use crate::cmd::quorum::QuorumArgs;

/// Default configuration file; `secret.ini` is read from the same directory.
pub const DEFAULT_CONFIG: &str = "/etc/ipvs-sync/config.ini";

/// Control plane for fleets of Linux IPVS load balancers.
///
/// One arbiter (`server`) owns the health-checked IPVS tree and the VIP quorum;
/// every balancer runs `client`, mirrors the tree into its kernel and announces
/// its VIPs to the routers with an embedded BGP speaker.
#[derive(Debug, Parser)]
#[command(name = "ipvs-sync", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Configuration file (secret.ini is read from the same directory).
    #[arg(short = 'c', long = "config", global = true, default_value = DEFAULT_CONFIG, env = "IPVS_SYNC_CONFIG")]
    pub config: PathBuf,

    /// Log level (error, warn, info, debug, trace) or a full RUST_LOG-style filter.
    /// RUST_LOG wins when set.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failed while running, 2 could not start \
(bad arguments, config or kernel). `monitor`: 0 ok, 1 warning, 2 critical.";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Arbiter daemon: watches IPVS, desc files, the mapping and heartbeats; answers clients over AMQP.
    Server,
    /// Balancer daemon: mirrors the arbiter's IPVS tree, puts VIPs on the interface, announces them by BGP.
    Client,
    /// keepalived quorum_up/quorum_down handler: `quorum up VIP[,b-LOCALPREF[,PORT]]`.
    ///
    /// Updates the VIP's desc file (active/total/announce) under a lock, then hands the
    /// announce (up, when the VIP has full quorum) or the withdraw (down) to the running arbiter.
    Quorum(QuorumArgs),
    /// One check line for monitoring; exit 0 ok, 1 warning, 2 critical.
    Monitor,
    /// Peers, VIPs and queues of the running daemon (from its http_listen /status).
    Status {
        /// Print the raw JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// This kernel's IPVS tree: dump it or make it equal to a file.
    #[command(subcommand)]
    Ipvs(IpvsCmd),
    /// A new node key: writes the private key (secret.ini form, mode 0600), prints the public key.
    Keygen(crate::cmd::keygen::KeygenArgs),
}
