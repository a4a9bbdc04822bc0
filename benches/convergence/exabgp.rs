//! The chain ipvs-sync replaces, for comparison: keepalived runs a quorum script that
//! writes an `announce`/`withdraw` line into ExaBGP's API, and ExaBGP (Debian's `exabgp`
//! 4.2) sends the UPDATE to the router.
//!
//! ```text
//!  namespace xlb 198.51.100.241/30 ──veth── namespace xr1 198.51.100.242/30
//!    exabgp (AS 65000, iBGP)                   gobgpd (AS 65000, passive), like the fleet's r1
//!      └─ process `feed`: relay.sh, FIFO → stdout (drains ExaBGP's acks on its stdin)
//!  quorum.sh up|down VIP,b-LP,PORT  ──writes one line──▶ FIFO
//! ```

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use labkit::{Daemon, GobgpConfig, GobgpFamily, GobgpNeighbor, Gobgpd, Netns};

const EXA_ADDR: &str = "198.51.100.241";
const ROUTER_ADDR: &str = "198.51.100.242";

/// ExaBGP's API process: what the quorum script writes into the FIFO goes to stdout,
/// which ExaBGP reads as API commands. ExaBGP acknowledges each command (`done`) by a
/// blocking write to this process's stdin, so a relay that never reads its stdin stalls
/// ExaBGP once the pipe (64 KiB) is full: drain it.
const RELAY: &str = r#"#!/bin/bash
set -euo pipefail
exec 4<&0
cat <&4 >/dev/null &
# Opened read-write, so the relay never sees EOF between two writers.
exec 3<>"@FIFO@"
exec cat <&3
"#;

/// The quorum handler of the ExaBGP layout, called by keepalived as
/// `quorum_up "quorum.sh up VIP,b-LP,PORT"` / `quorum_down "quorum.sh down …"`.
const QUORUM: &str = r#"#!/bin/bash
# quorum.sh up|down VIP[,b-LOCALPREF[,PORT]]: announce or withdraw VIP through ExaBGP's API.
set -euo pipefail
IFS=, read -r vip lp _port <<<"${2:?usage: quorum.sh up|down VIP[,b-LOCALPREF[,PORT]]}"
lp=${lp#b-}
case $vip in *:*) len=128 ;; *) len=32 ;; esac
case $1 in
  up) line="announce route $vip/$len next-hop self local-preference ${lp:-100}" ;;
  down) line="withdraw route $vip/$len next-hop self" ;;
  *) echo "quorum.sh: up or down, not $1" >&2; exit 2 ;;
esac
printf '%s\n' "$line" >"@FIFO@"
"#;

/// ExaBGP peered to its own gobgpd router, with the quorum script that drives it.
pub struct Exa {
    // Field order is drop order: ExaBGP first, then its router, then the namespaces.
    exabgp: Daemon,
    pub router: Gobgpd,
    _ns: Netns,
    _router_ns: Netns,
    dir: tempfile::TempDir,
}

impl Exa {
    /// Builds the two namespaces, starts gobgpd and ExaBGP, and returns once the
    /// session is Established.
    pub fn start(hold_time: u16) -> Exa {
        let dir = labkit::scratch_dir("exabgp").unwrap();
        let ns = Netns::new("xlb").unwrap();
        let router_ns = Netns::new("xr1").unwrap();
        labkit::veth(
            &ns,
            &[&format!("{EXA_ADDR}/30")],
            &router_ns,
            &[&format!("{ROUTER_ADDR}/30")],
        )
        .unwrap();
        let exa_ip: IpAddr = EXA_ADDR.parse().unwrap();
        let cfg = GobgpConfig::new(labkit::fleet::LOCAL_AS, ROUTER_ADDR.parse().unwrap()).neighbor(
            GobgpNeighbor::new(exa_ip, labkit::fleet::LOCAL_AS)
                .passive(true)
                .hold_time(hold_time.into())
                .families(&[GobgpFamily::Ipv4Unicast]),
        );
        let router = Gobgpd::start(&router_ns, &cfg.to_toml()).unwrap();

        let d = dir.path();
        let fifo = d.join("api.fifo");
        let mk = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(mk.success(), "mkfifo {}", fifo.display());
        let fifo_s = fifo.to_str().unwrap();
        script(&d.join("relay.sh"), &RELAY.replace("@FIFO@", fifo_s));
        script(&d.join("quorum.sh"), &QUORUM.replace("@FIFO@", fifo_s));
        let conf = format!(
            "process feed {{\n    run {relay};\n    encoder text;\n}}\n\n\
             neighbor {ROUTER_ADDR} {{\n    router-id {EXA_ADDR};\n    local-address {EXA_ADDR};\n\
             \x20   local-as {asn};\n    peer-as {asn};\n    hold-time {hold_time};\n\
             \x20   family {{\n        ipv4 unicast;\n    }}\n    api {{\n        processes [ feed ];\n    }}\n}}\n",
            relay = d.join("relay.sh").display(),
            asn = labkit::fleet::LOCAL_AS,
        );
        std::fs::write(d.join("exabgp.conf"), conf).unwrap();

        let mut cmd = ns.command("exabgp");
        cmd.arg(d.join("exabgp.conf"))
            // As root it would drop to `nobody` and lose the FIFO in our 0700 directory.
            .env("exabgp.daemon.user", "root")
            .env("exabgp.daemon.daemonize", "false")
            // No CLI pipes under /run/exabgp: the API process is the only way in.
            .env("exabgp.api.cli", "false")
            .env("exabgp.log.destination", "stdout");
        let exabgp = Daemon::spawn(cmd, &d.join("exabgp.log")).unwrap();
        let exa = Exa {
            exabgp,
            router,
            _ns: ns,
            _router_ns: router_ns,
            dir,
        };
        assert!(
            exa.router
                .wait_established(EXA_ADDR, Duration::from_secs(60)),
            "ExaBGP never Established with its router:\n{}",
            exa.exabgp.log_tail()
        );
        exa
    }

    /// `quorum.sh DIR ARG`, as keepalived would run it.
    pub fn quorum_command(&self, dir: &str, arg: &str) -> Command {
        let mut cmd = Command::new(self.script());
        cmd.args([dir, arg])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// The quorum script.
    pub fn script(&self) -> PathBuf {
        self.dir.path().join("quorum.sh")
    }

    /// The end of ExaBGP's log, for error messages.
    pub fn log_tail(&self) -> String {
        self.exabgp.log_tail()
    }
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
