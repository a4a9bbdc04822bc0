//! Command-line interface: the subcommands, their options and exit codes, which operators and tests rely on.
//!
//! Exit codes, for every subcommand unless it says otherwise:
//! - 0: success;
//! - 1: the command ran but failed (a daemon stopped on an error, a partial apply);
//! - 2: it could not start: bad arguments, a broken config, a missing kernel feature.
//!
//! `monitor` follows the Nagios convention: 0 ok, 1 warning, 2 critical.

use std::net::IpAddr;
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
    /// `ipvs-sync-quorum [-c CONFIG] up|down ARG` is the same call in a lean binary that
    /// starts ~0.6 ms faster; it runs this one when the arbiter cannot be told.
    Quorum(QuorumArgs),
    /// One check line for monitoring; exit 0 ok, 1 warning, 2 critical.
    Monitor,
    /// Peers, VIPs and queues of the running daemon (from its http_listen /status); on the
    /// arbiter, the fleet: every VIP's quorum and each balancer's announce of it.
    Status {
        /// Print the JSON document instead of tables.
        #[arg(long)]
        json: bool,
        /// Only this VIP.
        #[arg(long)]
        vip: Option<IpAddr>,
        /// Only this balancer (arbiter).
        #[arg(long)]
        balancer: Option<String>,
    },
    /// Balancer: take VIPs out of service without dropping connections (all when none is
    /// named): announced with GRACEFUL_SHUTDOWN and the lowest preference, withdrawn once
    /// their connections are gone or the timeout passed. Arbiter: `--balancer HOST` drains a
    /// whole balancer.
    Drain {
        /// VIPs to drain (none: all).
        vips: Vec<IpAddr>,
        /// Seconds to wait for connections to end (default: `[announce] drain_timeout`).
        #[arg(long)]
        timeout: Option<f64>,
        /// On the arbiter: the balancer to drain.
        #[arg(long)]
        balancer: Option<String>,
    },
    /// Undo a drain (all when no VIP is named).
    Undrain {
        /// VIPs to undrain (none: all).
        vips: Vec<IpAddr>,
        /// On the arbiter: the balancer to undrain.
        #[arg(long)]
        balancer: Option<String>,
    },
    /// Arbiter: withdraw VIPs whose withdrawal `withdraw_limit` holds.
    Release {
        /// The held VIPs to withdraw.
        #[arg(required_unless_present = "all")]
        vips: Vec<IpAddr>,
        /// Every held VIP.
        #[arg(long, conflicts_with = "vips")]
        all: bool,
    },
    /// Arbiter: forget a decommissioned balancer and delete its broker queue.
    Forget {
        /// The balancer's hostname.
        host: String,
    },
    /// This kernel's IPVS tree: dump it or make it equal to a file.
    #[command(subcommand)]
    Ipvs(IpvsCmd),
    /// A new node key: writes the private key (secret.ini form, mode 0600), prints the public key.
    Keygen(crate::cmd::keygen::KeygenArgs),
}
