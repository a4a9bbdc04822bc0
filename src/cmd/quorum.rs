//! `ipvs-sync quorum up|down VIP[,b-LOCALPREF[,PORT]]`: keepalived's quorum handler.
//!
//! The file half: find the VIP's ports in the keepalived configs (so `total` counts
//! virtual servers not yet reported; through a cache file, since parsing every config
//! takes tens of ms — see [`announce::known_ports`]), then record the call in the VIP's desc file
//! with [`announce::quorum::apply`] (lock, recount, atomic replace). Handing the
//! announce/withdraw to the running arbiter builds on the returned [`DescChange`]
//! (`change.publish()` says whether a `syn_announce` or a `fin_announce` is due).
//!
//! Kept light on purpose — it sits in keepalived's path: no tokio runtime, no
//! netlink, no AMQP here.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use announce::known_ports::known_ports;
use announce::quorum::{self, DescChange, QuorumError};
use announce::Desc;

/// Quorum direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// quorum_up
    Up,
    /// quorum_down
    Down,
}

impl From<Direction> for quorum::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Up => quorum::Direction::Up,
            Direction::Down => quorum::Direction::Down,
        }
    }
}

/// `quorum up|down VIP[,b-LOCALPREF[,PORT]]`
#[derive(Debug, clap::Args)]
pub struct QuorumArgs {
    /// up or down
    #[arg(value_enum)]
    pub direction: Direction,
    /// VIP[,b-LOCALPREF[,PORT]], e.g. 2a02:6b8::1:1,b-100,0 (PORT 0 = fwmark/all ports)
    pub arg: String,
}

/// Record the quorum call in the VIP's desc file and return the new desc and what
/// changed.
pub fn update_desc(
    cfg: &config::Config,
    args: &QuorumArgs,
) -> Result<(Desc, DescChange), QuorumError> {
    let arg = quorum::parse_arg(&args.arg)?;
    let known = known_ports(cfg, arg.vip);
    let path = cfg.desc_path(arg.vip);
    let outcome = quorum::apply(&path, &arg, args.direction.into(), &known)?;
    if let Some(e) = &outcome.recovered {
        tracing::warn!(vip = %arg.vip, error = %e, "desc file was corrupt; count restarted");
    }
    tracing::info!(vip = %arg.vip, port = arg.port, direction = ?args.direction,
        active = outcome.desc.active, total = outcome.desc.total,
        announce = outcome.desc.announce, "quorum recorded");
    Ok((outcome.desc, outcome.change))
}

/// `quorum up|down ARG`: records the call in the desc file (the part that must never be
/// lost), then hands the VIP to the running arbiter for an immediate announce/withdraw.
/// Exit 0 when the desc is written (the hand-off is best effort: the arbiter's desc scan
/// catches up within `vips_description_update_interval`), 1 when the desc could not be
/// written, 2 on a bad argument or config.
pub fn run(path: &Path, args: &QuorumArgs) -> ExitCode {
    let cfg = match config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ipvs-sync quorum: {e}");
            return ExitCode::from(2);
        }
    };
    let (desc, change) = match update_desc(&cfg, args) {
        Ok(x) => x,
        Err(e @ QuorumError::Arg(_)) => {
            eprintln!("ipvs-sync quorum: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("ipvs-sync quorum: {e}");
            return ExitCode::from(1);
        }
    };
    if change.publish() == announce::quorum::Publish::Nothing {
        return ExitCode::SUCCESS;
    }
    let vip = match announce::quorum::parse_arg(&args.arg) {
        Ok(a) => a.vip,
        Err(_) => return ExitCode::SUCCESS,
    };
    let ev = crate::daemon::quorum_socket::QuorumEvent {
        vip,
        announce: desc.announce,
    };
    if let Err(e) = crate::daemon::quorum_socket::hand_off(
        &cfg.server.quorum_socket,
        &ev,
        Duration::from_secs(1),
    ) {
        tracing::warn!(%vip, error = %e, "arbiter not told at once; its desc scan will pick the change up");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use announce::quorum::Publish;
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    fn cfg(dir: &Path) -> config::Config {
        let text = format!(
            "[main]\namqp_server = amqp://ipvs@127.0.0.1:5672/\nhostname = arbiter.example.net\n\
             vip_description_filepath = {d}/keepalived-{{vip}}-desc.json\n\
             service_mapping_wildcard = {d}/lbs/*/*/*.conf\n",
            d = dir.display()
        );
        config::Config::from_strs(&text, None).unwrap()
    }

    fn args(direction: Direction, arg: &str) -> QuorumArgs {
        QuorumArgs {
            direction,
            arg: arg.to_string(),
        }
    }

    #[test]
    fn counts_ports_from_the_keepalived_configs() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("lbs/lb1.example.net/web");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("web.conf"),
            "virtual_server 192.0.2.10 80 {\n  protocol TCP\n}\n\
             virtual_server 192.0.2.10 443 {\n  protocol TCP\n}\n",
        )
        .unwrap();
        let cfg = cfg(dir.path());
        let vip: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(known_ports(&cfg, vip), BTreeSet::from([80, 443]));

        let (desc, change) =
            update_desc(&cfg, &args(Direction::Up, "192.0.2.10,b-120,80")).unwrap();
        assert_eq!((desc.active, desc.total, desc.announce), (1, 2, false));
        assert_eq!(change.publish(), Publish::Nothing);
        let (desc, change) =
            update_desc(&cfg, &args(Direction::Up, "192.0.2.10,b-120,443")).unwrap();
        assert!(desc.announce);
        assert_eq!(
            change.publish(),
            Publish::Syn {
                local_preference: 120
            }
        );
        let on_disk = Desc::read(&cfg.desc_path(vip)).unwrap();
        assert_eq!(on_disk, desc);
        let (_, change) = update_desc(&cfg, &args(Direction::Down, "192.0.2.10,b-120,80")).unwrap();
        assert_eq!(change.publish(), Publish::Fin);
    }

    #[test]
    fn bad_argument_is_an_arg_error() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            update_desc(&cfg(dir.path()), &args(Direction::Up, "not-an-ip,b-1,80")).unwrap_err();
        assert!(matches!(err, QuorumError::Arg(_)), "{err}");
    }
}
