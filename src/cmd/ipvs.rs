//! `ipvs-sync ipvs dump|apply`: this kernel's IPVS table, read or made equal to a file.
//!
//! The work is in `ipvs::tool`; this is the clap surface. Exit: 0 ok, 1 some operations
//! failed (each printed), 2 could not start (no IPVS, unreadable file, bad JSON with
//! line:column).

use std::path::PathBuf;
use std::process::ExitCode;

/// `ipvs-sync ipvs …`.
#[derive(Debug, clap::Subcommand)]
pub enum IpvsCmd {
    /// Print the kernel's table: the rules `ipvsadm -Sn` prints, or the JSON form.
    Dump {
        /// Print the JSON tree (with counters) instead of ipvsadm rules.
        #[arg(long)]
        json: bool,
    },
    /// Make the kernel's table equal to FILE (the JSON form) with the fewest operations.
    Apply {
        /// JSON tree, as `ipvs dump --json` prints it.
        file: PathBuf,
        /// Print the plan (one ipvsadm -R line per operation) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Take DUMP (a JSON tree, e.g. an earlier `ipvs dump --json`) as what the kernel
        /// holds instead of dumping it: only the operations from DUMP to FILE are made.
        #[arg(long, value_name = "DUMP")]
        from_dump: Option<PathBuf>,
    },
}

/// Runs the subcommand and returns its exit status.
pub fn run(cmd: IpvsCmd) -> ExitCode {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let code = match cmd {
        IpvsCmd::Dump { json } => ipvs::tool::dump(json, &mut out, &mut err),
        IpvsCmd::Apply {
            file,
            dry_run,
            from_dump: None,
        } => ipvs::tool::apply(&file, dry_run, &mut out, &mut err),
        IpvsCmd::Apply {
            file,
            dry_run,
            from_dump: Some(dump),
        } => ipvs::tool::apply_from_dump(&file, &dump, dry_run, &mut out, &mut err),
    };
    ExitCode::from(code)
}
