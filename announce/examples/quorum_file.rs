//! The file half of `ipvs-sync quorum`, as a standalone process for tests and timing.
//!
//! ```text
//! quorum_file DESC_DIR up|down VIP[,b-LOCALPREF[,PORT]] [KNOWN_PORTS]
//! ```
//! writes `DESC_DIR/keepalived-<VIP>-desc.json` through the same
//! [`announce::quorum::apply`] the real subcommand uses. `KNOWN_PORTS` is a comma list
//! (the ports the service mapping names for the VIP). Exit 0 on success, 1 on a file
//! error, 2 on bad arguments; `-v` after the arguments prints the resulting desc.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use announce::quorum::{apply, parse_arg, Direction};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.last().is_some_and(|a| a == "-v");
    let args = &args[..args.len() - usize::from(verbose)];
    let [dir, direction, arg, rest @ ..] = args else {
        eprintln!(
            "usage: quorum_file DESC_DIR up|down VIP[,b-LOCALPREF[,PORT]] [KNOWN_PORTS] [-v]"
        );
        return ExitCode::from(2);
    };
    let direction: Direction = match direction.parse() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("quorum_file: {e}");
            return ExitCode::from(2);
        }
    };
    let arg = match parse_arg(arg) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("quorum_file: {e}");
            return ExitCode::from(2);
        }
    };
    let mut known = BTreeSet::new();
    for p in rest
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        match p.parse::<u16>() {
            Ok(port) => {
                known.insert(port);
            }
            Err(_) => {
                eprintln!("quorum_file: known port {p:?} is not a port number");
                return ExitCode::from(2);
            }
        }
    }
    let path = PathBuf::from(dir).join(format!("keepalived-{}-desc.json", arg.vip));
    match apply(&path, &arg, direction, &known) {
        Ok(outcome) => {
            if verbose {
                println!("{:?} {:?}", outcome.desc, outcome.change.publish());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quorum_file: {e}");
            ExitCode::from(1)
        }
    }
}
