//! The file half of `ipvs-sync quorum up|down VIP[,b-LOCALPREF[,PORT]]`.
//!
//! keepalived runs the quorum handler once per virtual server whose quorum changes,
//! often dozens at once for the same VIP. [`apply`] does one read-modify-write of the
//! VIP's desc file under its exclusive lock, so concurrent calls serialise and no
//! count is lost:
//!
//! 1. lock `<desc>.lock` (waiting at most [`LOCK_TIMEOUT`]); read the desc (missing → empty; corrupt → empty, reported);
//! 2. set the port's state (`up`/`down`), keep or replace the local-preference;
//! 3. recount: `total` = |ports the mapping knows ∪ ports seen|, `active` = ports up,
//!    `announce` = `active == total`;
//! 4. replace the file atomically (skipped when nothing changed); unlock.
//!
//! No runtime, no sockets: this sits in keepalived's path and must be quick.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::addr_plan::is_vip_candidate;
use crate::desc::{write_atomic, Desc, DescError, DescLock, PortState};

/// How long a quorum call waits for another holder of the desc lock before failing.
/// A write takes well under a millisecond; only a stuck process holds it this long.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// `up` or `down`: what keepalived says about the virtual server's quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Quorum gained (`quorum_up`).
    Up,
    /// Quorum lost (`quorum_down`).
    Down,
}

impl Direction {
    fn state(self) -> PortState {
        match self {
            Self::Up => PortState::Up,
            Self::Down => PortState::Down,
        }
    }
}

impl FromStr for Direction {
    type Err = QuorumArgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "up" => Ok(Self::Up),
            "down" => Ok(Self::Down),
            other => Err(QuorumArgError::Direction(other.to_string())),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
        })
    }
}

/// The parsed `VIP[,b-LOCALPREF[,PORT[,c-COMMUNITY…]]]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumArg {
    /// The VIP.
    pub vip: IpAddr,
    /// BGP local-preference, when given (`b-100`).
    pub local_preference: Option<u32>,
    /// The virtual server's port; 0 for a fwmark/all-ports service and when omitted.
    pub port: u16,
    /// BGP communities of the VIP's route (`c-65000:100`, `c-65000:1:2`, `c-no-export`),
    /// when given: they replace the VIP's communities.
    pub communities: Option<Vec<String>>,
}

/// Most communities one VIP may carry (standard and large together), so its route always
/// fits a BGP message with room to spare.
pub const MAX_VIP_COMMUNITIES: usize = 64;

/// A malformed quorum argument; each variant names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumArgError {
    /// Not `up` or `down`.
    #[error("quorum direction {0:?} is neither \"up\" nor \"down\"")]
    Direction(String),
    /// The argument is empty.
    #[error("quorum argument is empty; expected VIP[,b-LOCALPREF[,PORT]]")]
    Empty,
    /// More than three comma-separated parts, and the rest not communities.
    #[error("quorum argument {0:?} has more than 3 parts that are not communities; expected VIP[,b-LOCALPREF[,PORT[,c-COMMUNITY…]]]")]
    TooManyParts(String),
    /// A `c-` part that is not a community.
    #[error("community part {0:?} of the quorum argument is not c-ASN:VALUE, c-GLOBAL:LOCAL1:LOCAL2 or c-no-export/no-advertise/no-export-subconfed/no-peer")]
    Community(String),
    /// More communities than [`MAX_VIP_COMMUNITIES`].
    #[error("the quorum argument names {0} communities; at most {MAX_VIP_COMMUNITIES} fit a VIP's route")]
    TooManyCommunities(usize),
    /// The first part is not an IP address.
    #[error("VIP part {0:?} of the quorum argument is not an IP address")]
    Vip(String),
    /// The first part is an address that cannot be a VIP.
    #[error(
        "VIP part {0:?} of the quorum argument is loopback, multicast, link-local or unspecified"
    )]
    NotAVip(String),
    /// The second part is not `b-N` with N a 32-bit unsigned integer.
    #[error(
        "local-preference part {0:?} of the quorum argument is not b-N (N from 0 to 4294967295)"
    )]
    LocalPreference(String),
    /// The third part is not a port number 0–65535.
    #[error("port part {0:?} of the quorum argument is not a number from 0 to 65535")]
    Port(String),
}

/// Parse `VIP[,b-LOCALPREF[,PORT]]`, e.g. `2a02:6b8::1:1,b-100,0`. An empty
/// local-preference part (`192.0.2.1,,443`) means "not given".
pub fn parse_arg(arg: &str) -> Result<QuorumArg, QuorumArgError> {
    if arg.trim().is_empty() {
        return Err(QuorumArgError::Empty);
    }
    let all: Vec<&str> = arg.split(',').map(str::trim).collect();
    let (parts, rest) = all.split_at(all.len().min(3));
    if rest.iter().any(|p| !p.starts_with("c-")) {
        return Err(QuorumArgError::TooManyParts(arg.to_string()));
    }
    let communities = if rest.is_empty() {
        None
    } else {
        let mut v = Vec::new();
        for p in rest {
            let text = &p[2..];
            if config::Community::parse(text).is_none() {
                return Err(QuorumArgError::Community((*p).to_string()));
            }
            v.push(text.to_ascii_lowercase());
        }
        if v.len() > MAX_VIP_COMMUNITIES {
            return Err(QuorumArgError::TooManyCommunities(v.len()));
        }
        Some(v)
    };
    let vip_part = parts.first().copied().unwrap_or_default();
    let vip: IpAddr = vip_part
        .parse()
        .map_err(|_| QuorumArgError::Vip(vip_part.to_string()))?;
    if !is_vip_candidate(vip) {
        return Err(QuorumArgError::NotAVip(vip_part.to_string()));
    }
    let local_preference = match parts.get(1).copied() {
        None | Some("") => None,
        Some(lp) => Some(
            lp.strip_prefix("b-")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| QuorumArgError::LocalPreference(lp.to_string()))?,
        ),
    };
    let port = match parts.get(2).copied() {
        None => 0,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| QuorumArgError::Port(p.to_string()))?,
    };
    Ok(QuorumArg {
        vip,
        local_preference,
        port,
        communities,
    })
}

/// What a quorum call changed, for the caller to decide what to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescChange {
    /// The call's direction.
    pub direction: Direction,
    /// `announce` before the call (false when there was no valid file).
    pub was_announced: bool,
    /// `announce` after the call.
    pub announce: bool,
    /// Local-preference before the call (None when there was no valid file).
    pub old_local_preference: Option<u32>,
    /// Local-preference after the call.
    pub local_preference: u32,
    /// Whether the file was rewritten (false when the call changed nothing).
    pub written: bool,
}

/// What the arbiter should tell the balancers after a quorum call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// `syn_announce` to the VIP's balancers with this local-preference.
    Syn {
        /// LOCAL_PREF for the announcement.
        local_preference: u32,
    },
    /// `fin_announce` broadcast: withdraw now.
    Fin,
    /// Nothing to say.
    Nothing,
}

impl DescChange {
    /// Announce on every `up` that leaves the VIP announceable (a repeated
    /// `syn_announce` is harmless and heals a lost one); withdraw when the VIP stops
    /// being announceable and on every `down` that leaves it so.
    pub fn publish(&self) -> Publish {
        if self.announce {
            if self.direction == Direction::Up
                || !self.was_announced
                || self.old_local_preference != Some(self.local_preference)
            {
                Publish::Syn {
                    local_preference: self.local_preference,
                }
            } else {
                Publish::Nothing
            }
        } else if self.was_announced || self.direction == Direction::Down {
            Publish::Fin
        } else {
            Publish::Nothing
        }
    }

    /// True when the VIP went from not announceable to announceable.
    pub fn became_announced(&self) -> bool {
        self.announce && !self.was_announced
    }

    /// True when the VIP went from announceable to not announceable.
    pub fn became_withdrawn(&self) -> bool {
        self.was_announced && !self.announce
    }
}

/// The result of [`apply`].
#[derive(Debug)]
pub struct QuorumOutcome {
    /// The desc as written (or as found, when nothing changed).
    pub desc: Desc,
    /// What changed.
    pub change: DescChange,
    /// When the old file was corrupt it was replaced by a fresh count; this is why.
    pub recovered: Option<DescError>,
}

/// Errors of a quorum call.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// The argument is malformed.
    #[error(transparent)]
    Arg(#[from] QuorumArgError),
    /// The desc file could not be locked, read or written.
    #[error(transparent)]
    Desc(#[from] DescError),
}

/// Record a quorum `direction` for `arg.port` of `arg.vip` in the desc file `path`,
/// recount against `known_ports` (the VIP's ports in the service mapping) and replace
/// the file atomically, all under the file's lock.
///
/// A corrupt existing file is not fatal: the count restarts from this call (the other
/// ports count as down until keepalived reports them again — withdraw-biased, never
/// announce-biased) and the outcome carries the error in `recovered`.
pub fn apply(
    path: &Path,
    arg: &QuorumArg,
    direction: Direction,
    known_ports: &BTreeSet<u16>,
) -> Result<QuorumOutcome, QuorumError> {
    let _lock = DescLock::acquire_timeout(path, LOCK_TIMEOUT)?;
    let (old, recovered) = match Desc::read(path) {
        Ok(d) => (Some(d), None),
        Err(e) if e.is_not_found() => (None, None),
        Err(e) if e.is_corrupt() => {
            tracing::warn!(vip = %arg.vip, error = %e, "corrupt desc file replaced by a fresh count");
            (None, Some(e))
        }
        Err(e) => return Err(e.into()),
    };
    let mut desc = old.clone().unwrap_or_default();
    desc.ports.insert(arg.port, direction.state());
    if let Some(lp) = arg.local_preference {
        desc.local_preference = lp;
    }
    if let Some(c) = &arg.communities {
        desc.communities = c.clone();
    }
    desc.recount(known_ports);
    let written = old.as_ref() != Some(&desc);
    if written {
        write_atomic(path, &desc)?;
    }
    let change = DescChange {
        direction,
        was_announced: old.as_ref().is_some_and(|d| d.announce),
        announce: desc.announce,
        old_local_preference: old.as_ref().map(|d| d.local_preference),
        local_preference: desc.local_preference,
        written,
    };
    tracing::debug!(vip = %arg.vip, port = arg.port, %direction, active = desc.active,
        total = desc.total, announce = desc.announce, "quorum recorded");
    Ok(QuorumOutcome {
        desc,
        change,
        recovered,
    })
}

/// Forget, in the desc file `path`, the ports in `gone` — virtual servers the keepalived
/// configs named before and no longer name — unless `known` (what they name now) has them
/// again, and recount against `known`, all under the file's lock. Without this a port
/// removed from the configs while its last report was `down` would keep `active < total`,
/// and the VIP from being announced, for as long as the file lives.
///
/// Returns the rewritten desc and whether it said announce before, or `None` when nothing
/// changed (no file, a corrupt file — left for the next quorum call to replace — or none
/// of `gone` in it). A port keepalived reports again later is counted again.
pub fn forget_ports(
    path: &Path,
    gone: &BTreeSet<u16>,
    known: &BTreeSet<u16>,
) -> Result<Option<(Desc, bool)>, DescError> {
    let _lock = DescLock::acquire_timeout(path, LOCK_TIMEOUT)?;
    let old = match Desc::read(path) {
        Ok(d) => d,
        Err(e) if e.is_not_found() || e.is_corrupt() => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut desc = old.clone();
    desc.ports
        .retain(|port, _| !gone.contains(port) || known.contains(port));
    if desc.ports.len() == old.ports.len() {
        return Ok(None);
    }
    desc.recount(known);
    write_atomic(path, &desc)?;
    Ok(Some((desc, old.announce)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_form() {
        let cases = [
            ("2a02:6b8::1:1,b-100,0", ip("2a02:6b8::1:1"), Some(100), 0),
            ("192.0.2.1", ip("192.0.2.1"), None, 0),
            ("192.0.2.1,b-200", ip("192.0.2.1"), Some(200), 0),
            ("192.0.2.1,,443", ip("192.0.2.1"), None, 443),
            ("192.0.2.1,b-0,65535", ip("192.0.2.1"), Some(0), 65535),
            (" 192.0.2.1 , b-7 , 80 ", ip("192.0.2.1"), Some(7), 80),
        ];
        for (arg, vip, lp, port) in cases {
            assert_eq!(
                parse_arg(arg),
                Ok(QuorumArg {
                    vip,
                    local_preference: lp,
                    port,
                    communities: None,
                }),
                "{arg}"
            );
        }
        let a = parse_arg("192.0.2.1,b-150,443,c-65000:100,c-65000:1:2,c-NO-EXPORT").unwrap();
        assert_eq!(
            a.communities,
            Some(vec![
                "65000:100".to_string(),
                "65000:1:2".to_string(),
                "no-export".to_string()
            ])
        );
        assert_eq!(a.port, 443);
    }

    #[test]
    fn community_parts_are_checked() {
        use QuorumArgError as E;
        assert_eq!(
            parse_arg("192.0.2.1,b-1,80,c-65536:1"),
            Err(E::Community("c-65536:1".into()))
        );
        assert_eq!(
            parse_arg("192.0.2.1,b-1,80,x-1"),
            Err(E::TooManyParts("192.0.2.1,b-1,80,x-1".into()))
        );
        let many: String = (0..65).map(|i| format!(",c-65000:{i}")).collect();
        assert_eq!(
            parse_arg(&format!("192.0.2.1,b-1,80{many}")),
            Err(E::TooManyCommunities(65))
        );
    }

    #[test]
    fn communities_given_replace_the_vips_and_are_kept_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        let known = BTreeSet::from([80]);
        let with = parse_arg("192.0.2.1,b-150,80,c-65000:100").unwrap();
        let o = apply(&path, &with, Direction::Up, &known).unwrap();
        assert_eq!(o.desc.communities, vec!["65000:100".to_string()]);
        let without = parse_arg("192.0.2.1,b-150,80").unwrap();
        let o = apply(&path, &without, Direction::Up, &known).unwrap();
        assert_eq!(o.desc.communities, vec!["65000:100".to_string()], "kept");
        assert_eq!(Desc::read(&path).unwrap(), o.desc);
    }

    #[test]
    fn malformed_arguments_name_the_part() {
        use QuorumArgError as E;
        let cases = [
            ("", E::Empty),
            ("   ", E::Empty),
            (
                "192.0.2.1,b-1,80,9",
                E::TooManyParts("192.0.2.1,b-1,80,9".into()),
            ),
            ("lb-vip,b-100,80", E::Vip("lb-vip".into())),
            ("192.0.2.300", E::Vip("192.0.2.300".into())),
            (",b-100,80", E::Vip("".into())),
            ("127.0.0.1,b-100", E::NotAVip("127.0.0.1".into())),
            ("ff02::1", E::NotAVip("ff02::1".into())),
            ("192.0.2.1,100", E::LocalPreference("100".into())),
            ("192.0.2.1,b-", E::LocalPreference("b-".into())),
            ("192.0.2.1,b--5", E::LocalPreference("b--5".into())),
            ("192.0.2.1,b-+5", E::LocalPreference("b-+5".into())),
            (
                "192.0.2.1,b-4294967296",
                E::LocalPreference("b-4294967296".into()),
            ),
            ("192.0.2.1,b-1,", E::Port("".into())),
            ("192.0.2.1,b-1,http", E::Port("http".into())),
            ("192.0.2.1,b-1,65536", E::Port("65536".into())),
            ("192.0.2.1,b-1,+80", E::Port("+80".into())),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_arg(arg), Err(want), "{arg:?}");
        }
        assert_eq!(
            "sideways".parse::<Direction>(),
            Err(E::Direction("sideways".into()))
        );
        assert_eq!("up".parse::<Direction>(), Ok(Direction::Up));
    }

    #[test]
    fn recounts_per_port_and_keeps_local_preference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keepalived-192.0.2.1-desc.json");
        let known = BTreeSet::from([80, 443]);
        let a80 = parse_arg("192.0.2.1,b-150,80").unwrap();
        let a443 = parse_arg("192.0.2.1,,443").unwrap();

        let o = apply(&path, &a80, Direction::Up, &known).unwrap();
        assert_eq!(
            (o.desc.active, o.desc.total, o.desc.announce),
            (1, 2, false)
        );
        assert_eq!(o.desc.local_preference, 150);
        assert_eq!(o.change.publish(), Publish::Nothing);

        let o = apply(&path, &a443, Direction::Up, &known).unwrap();
        assert_eq!((o.desc.active, o.desc.total, o.desc.announce), (2, 2, true));
        assert_eq!(o.desc.local_preference, 150, "kept when not given");
        assert!(o.change.became_announced());
        assert_eq!(
            o.change.publish(),
            Publish::Syn {
                local_preference: 150
            }
        );

        // Same call again: nothing to write, but an up that is announceable re-syns.
        let o = apply(&path, &a443, Direction::Up, &known).unwrap();
        assert!(!o.change.written);
        assert_eq!(
            o.change.publish(),
            Publish::Syn {
                local_preference: 150
            }
        );

        let o = apply(&path, &a80, Direction::Down, &known).unwrap();
        assert_eq!(
            (o.desc.active, o.desc.total, o.desc.announce),
            (1, 2, false)
        );
        assert!(o.change.became_withdrawn());
        assert_eq!(o.change.publish(), Publish::Fin);

        // Same down again: nothing to write, and still a withdraw (`ipvs-sync-quorum` runs
        // `ipvs-sync quorum` with the call it recorded when the arbiter was not told).
        let o = apply(&path, &a80, Direction::Down, &known).unwrap();
        assert!(!o.change.written);
        assert_eq!(o.change.publish(), Publish::Fin);

        // A port the mapping does not know still counts once reported.
        let a8080 = parse_arg("192.0.2.1,b-150,8080").unwrap();
        let o = apply(&path, &a8080, Direction::Up, &known).unwrap();
        assert_eq!((o.desc.active, o.desc.total), (2, 3));

        let on_disk = Desc::read(&path).unwrap();
        assert_eq!(on_disk, o.desc);
    }

    #[test]
    fn default_local_preference_is_100() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        let o = apply(
            &path,
            &parse_arg("2001:db8::1").unwrap(),
            Direction::Up,
            &BTreeSet::new(),
        )
        .unwrap();
        assert_eq!(o.desc.local_preference, 100);
        assert_eq!(o.desc.ports.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert!(o.desc.announce);
    }

    #[test]
    fn corrupt_file_restarts_the_count_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        std::fs::write(&path, b"{\"active\": 2, \"total\"").unwrap();
        let o = apply(
            &path,
            &parse_arg("192.0.2.1,b-100,80").unwrap(),
            Direction::Up,
            &BTreeSet::from([80, 443]),
        )
        .unwrap();
        assert!(o.recovered.as_ref().is_some_and(DescError::is_corrupt));
        assert_eq!(
            (o.desc.active, o.desc.total, o.desc.announce),
            (1, 2, false)
        );
        assert_eq!(Desc::read(&path).unwrap(), o.desc);
    }

    #[test]
    fn unwritable_directory_is_a_typed_error() {
        let path = Path::new("/nonexistent-ipvs-sync-dir/d.json");
        let err = apply(
            path,
            &parse_arg("192.0.2.1").unwrap(),
            Direction::Up,
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert!(
            matches!(err, QuorumError::Desc(DescError::Io { .. })),
            "{err}"
        );
    }

    #[test]
    fn a_port_gone_from_the_configs_stops_holding_the_vip_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        let both = BTreeSet::from([80, 8080]);
        let call = |arg: &str, d: Direction, known: &BTreeSet<u16>| {
            apply(&path, &parse_arg(arg).unwrap(), d, known).unwrap()
        };
        call("192.0.2.1,b-100,80", Direction::Up, &both);
        let o = call("192.0.2.1,b-100,8080", Direction::Down, &both);
        assert_eq!(
            (o.desc.active, o.desc.total, o.desc.announce),
            (1, 2, false)
        );

        // 8080 left the configs: forgotten, and the VIP announceable.
        let now = BTreeSet::from([80]);
        let (d, was) = forget_ports(&path, &BTreeSet::from([8080]), &now)
            .unwrap()
            .unwrap();
        assert!(!was);
        assert_eq!((d.active, d.total, d.announce), (1, 1, true));
        assert_eq!(Desc::read(&path).unwrap(), d);
        // Nothing more to forget; a port gone but named again is kept.
        assert!(forget_ports(&path, &BTreeSet::from([8080]), &now)
            .unwrap()
            .is_none());
        assert!(forget_ports(&path, &BTreeSet::from([80]), &both)
            .unwrap()
            .is_none());
        // keepalived still runs the old config and reports 8080 down: counted again.
        let o = call("192.0.2.1,b-100,8080", Direction::Down, &now);
        assert_eq!(
            (o.desc.active, o.desc.total, o.desc.announce),
            (1, 2, false)
        );

        // No file, or a corrupt one: left alone.
        let missing = dir.path().join("none.json");
        assert!(forget_ports(&missing, &BTreeSet::from([1]), &now)
            .unwrap()
            .is_none());
        assert!(!missing.exists());
        std::fs::write(&path, b"{\"active\": 2, \"total\"").unwrap();
        assert!(forget_ports(&path, &BTreeSet::from([8080]), &now)
            .unwrap()
            .is_none());
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"active\": 2, \"total\"");
    }
}
