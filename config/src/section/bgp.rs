//! `[bgp]` and `[bgp.peer.NAME]`: the embedded speaker and its routers.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::bfd::{self, BfdConfig};
use crate::error::ConfigError;
use crate::secret::{SecretString, MAX_TCP_MD5_KEY_LEN};
use crate::value::{self, Fields, Invalid, ValueResult};

/// A BGP community to attach to every announced VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Community {
    /// RFC 1997 community, `ASN:VALUE` as one 32-bit number (`65000:100` is
    /// `65000 << 16 | 100`); well-known names are accepted too.
    Standard(u32),
    /// RFC 8092 large community `GLOBAL:LOCAL1:LOCAL2`.
    Large {
        /// Global administrator (an AS number).
        global: u32,
        /// First local data part.
        local1: u32,
        /// Second local data part.
        local2: u32,
    },
}

impl Community {
    /// NO_EXPORT (RFC 1997).
    pub const NO_EXPORT: Community = Community::Standard(0xFFFF_FF01);
    /// NO_ADVERTISE (RFC 1997).
    pub const NO_ADVERTISE: Community = Community::Standard(0xFFFF_FF02);
    /// NO_EXPORT_SUBCONFED (RFC 1997).
    pub const NO_EXPORT_SUBCONFED: Community = Community::Standard(0xFFFF_FF03);
    /// NOPEER (RFC 3765).
    pub const NOPEER: Community = Community::Standard(0xFFFF_FF04);

    /// Parses `65000:100`, `65000:1:2` or a well-known name (`no-export`, `no-advertise`,
    /// `no-export-subconfed`, `no-peer`).
    pub fn parse(s: &str) -> Option<Community> {
        match s.to_ascii_lowercase().as_str() {
            "no-export" => return Some(Self::NO_EXPORT),
            "no-advertise" => return Some(Self::NO_ADVERTISE),
            "no-export-subconfed" => return Some(Self::NO_EXPORT_SUBCONFED),
            "no-peer" => return Some(Self::NOPEER),
            _ => {}
        }
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [a, v] => {
                let (a, v) = (a.parse::<u16>().ok()?, v.parse::<u16>().ok()?);
                Some(Community::Standard(u32::from(a) << 16 | u32::from(v)))
            }
            [g, l1, l2] => Some(Community::Large {
                global: g.parse().ok()?,
                local1: l1.parse().ok()?,
                local2: l2.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// GRACEFUL_SHUTDOWN (RFC 8326): a drained VIP's route carries it besides its own and the
/// speaker-wide communities.
pub const GRACEFUL_SHUTDOWN: Community = Community::Standard(0xFFFF_0000);

/// Splits communities into the speaker's standard (RFC 1997) and large (RFC 8092) ones.
pub fn split_communities(cs: &[Community]) -> (Vec<bgp::Community>, Vec<bgp::LargeCommunity>) {
    let mut standard = Vec::new();
    let mut large = Vec::new();
    for c in cs {
        match *c {
            Community::Standard(v) => standard.push(bgp::Community(v)),
            Community::Large {
                global,
                local1,
                local2,
            } => large.push(bgp::LargeCommunity {
                global,
                local1,
                local2,
            }),
        }
    }
    (standard, large)
}

/// Whether a VIP route with the speaker-wide `communities` and the VIP's own `per_vip` ones,
/// drained too (GRACEFUL_SHUTDOWN added), fits one 4,096-byte UPDATE with its prefix
/// (RFC 4271 §4.1) on any session: see [`bgp::attrs_fit`].
pub fn route_fits(communities: &[Community], per_vip: &[Community]) -> Result<(), bgp::TooLarge> {
    let (global, global_large) = split_communities(communities);
    let mut own: Vec<Community> = per_vip.to_vec();
    if !own.contains(&GRACEFUL_SHUTDOWN) {
        own.push(GRACEFUL_SHUTDOWN);
    }
    let (standard, large) = split_communities(&own);
    bgp::attrs_fit(
        &global,
        &global_large,
        &bgp::RouteAttrs {
            communities: standard,
            large_communities: large,
            ..bgp::RouteAttrs::default()
        },
    )
}

/// How the local preference a VIP is announced with is expressed to eBGP peers, where
/// LOCAL_PREF itself is not sent (RFC 4271 5.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EbgpPreference {
    /// MED = `ebgp_med_base` − local-preference, saturating at 0 (lower MED wins, like
    /// higher LOCAL_PREF).
    Med,
    /// Prepend `local_as` once per `ebgp_prepend_step` the local-preference is below
    /// `ebgp_med_base`, at most [`MAX_PREPENDS`] times.
    Prepend,
    /// Send neither: eBGP peers see all balancers alike.
    None,
}

/// Most extra `local_as` prepends [`EbgpPreference::Prepend`] adds.
pub const MAX_PREPENDS: u8 = 8;

/// What to add to an eBGP announcement for a given local preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EbgpAttributes {
    /// MULTI_EXIT_DISC to send, if any.
    pub med: Option<u32>,
    /// Extra copies of `local_as` to prepend to AS_PATH.
    pub extra_prepends: u8,
}

/// `[bgp.peer.NAME]`: one router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// NAME from the section header; also names `bgp_password.NAME` in `secret.ini`.
    pub name: String,
    /// `address` (required): the router's address.
    pub address: IpAddr,
    /// `remote_as` (required).
    pub remote_as: u32,
    /// `port` (179).
    pub port: u16,
    /// `passive` (false): only accept the router's connection, never connect.
    pub passive: bool,
    /// `password` or `secret.ini` `bgp_password.NAME`: TCP-MD5 key (RFC 2385).
    pub password: Option<SecretString>,
    /// `local_address`: source address of the session; same family as `address`.
    pub local_address: Option<IpAddr>,
    /// `ttl_security` (false): GTSM (RFC 5082), send TTL 255 and expect 255.
    pub ttl_security: bool,
    /// `hold_time`: overrides `[bgp] hold_time` for this peer.
    pub hold_time: Option<u16>,
    /// `next_hop_v4`: overrides `[bgp] next_hop_v4` for this peer.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// `next_hop_v6`: overrides `[bgp] next_hop_v6` for this peer.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// `bfd` (false): run a BFD session (RFC 5880/5881) to `address` beside BGP.
    pub bfd: bool,
    /// `bfd_min_tx`: overrides `[bfd] min_tx` for this peer.
    pub bfd_min_tx: Option<Duration>,
    /// `bfd_min_rx`: overrides `[bfd] min_rx` for this peer.
    pub bfd_min_rx: Option<Duration>,
    /// `bfd_multiplier`: overrides `[bfd] multiplier` for this peer.
    pub bfd_multiplier: Option<u8>,
}

impl PeerConfig {
    /// Whether the session to this peer is eBGP for `local_as`.
    pub fn is_ebgp(&self, local_as: u32) -> bool {
        self.remote_as != local_as
    }

    /// The BFD timers of this peer (`[bfd]` with the peer's overrides), or `None` when the
    /// peer has `bfd = false`.
    pub fn bfd_timers(&self, section: &BfdConfig) -> Option<BfdConfig> {
        self.bfd.then(|| BfdConfig {
            min_tx: self.bfd_min_tx.unwrap_or(section.min_tx),
            min_rx: self.bfd_min_rx.unwrap_or(section.min_rx),
            multiplier: self.bfd_multiplier.unwrap_or(section.multiplier),
        })
    }
}

/// `[bgp]` plus every `[bgp.peer.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// `local_as`; always set when `peers` is not empty.
    pub local_as: Option<u32>,
    /// `router_id` (BGP Identifier); always set when `peers` is not empty.
    pub router_id: Option<Ipv4Addr>,
    /// `hold_time` (90 s): 0 (no keepalives) or 3..=65535 seconds, as sent in OPEN.
    pub hold_time: u16,
    /// `connect_retry` (5 s): ConnectRetryTimer.
    pub connect_retry: Duration,
    /// `next_hop_v4`: NEXT_HOP for IPv4 routes; `None` = the session's local address.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// `next_hop_v6`: next hop for IPv6 routes; `None` = the session's local address.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// `communities`: attached to every VIP route.
    pub communities: Vec<Community>,
    /// `graceful_restart` (false): advertise the GR capability (RFC 4724).
    pub graceful_restart: bool,
    /// `graceful_restart_time` (120 s, at most 4095).
    pub graceful_restart_time: u16,
    /// `ebgp_preference` (`med`).
    pub ebgp_preference: EbgpPreference,
    /// `ebgp_med_base` (1000).
    pub ebgp_med_base: u32,
    /// `ebgp_prepend_step` (50, > 0).
    pub ebgp_prepend_step: u32,
    /// The `[bgp.peer.NAME]` sections in file order.
    pub peers: Vec<PeerConfig>,
}

impl Default for BgpConfig {
    fn default() -> Self {
        BgpConfig {
            local_as: None,
            router_id: None,
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            next_hop_v4: None,
            next_hop_v6: None,
            communities: Vec::new(),
            graceful_restart: false,
            graceful_restart_time: 120,
            ebgp_preference: EbgpPreference::Med,
            ebgp_med_base: 1000,
            ebgp_prepend_step: 50,
            peers: Vec::new(),
        }
    }
}

impl BgpConfig {
    /// The keys of `[bgp]`.
    pub const KEYS: &'static [&'static str] = &[
        "local_as",
        "router_id",
        "hold_time",
        "connect_retry",
        "next_hop_v4",
        "next_hop_v6",
        "communities",
        "graceful_restart",
        "graceful_restart_time",
        "ebgp_preference",
        "ebgp_med_base",
        "ebgp_prepend_step",
    ];

    /// The MED / prepends an eBGP announcement with `local_pref` carries.
    pub fn ebgp_attributes(&self, local_pref: u32) -> EbgpAttributes {
        let below = self.ebgp_med_base.saturating_sub(local_pref);
        match self.ebgp_preference {
            EbgpPreference::Med => EbgpAttributes {
                med: Some(below),
                extra_prepends: 0,
            },
            EbgpPreference::Prepend => EbgpAttributes {
                med: None,
                extra_prepends: u8::try_from(below / self.ebgp_prepend_step.max(1))
                    .unwrap_or(MAX_PREPENDS)
                    .min(MAX_PREPENDS),
            },
            EbgpPreference::None => EbgpAttributes {
                med: None,
                extra_prepends: 0,
            },
        }
    }

    /// The peer called `name`.
    pub fn peer(&self, name: &str) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// Reads `[bgp]` (peers are added by [`PeerConfig::from_fields`]).
    pub(crate) fn from_fields(f: &mut Fields<'_>) -> Result<BgpConfig, ConfigError> {
        let d = BgpConfig::default();
        Ok(BgpConfig {
            local_as: f.opt("local_as", value::asn)?,
            router_id: f.opt("router_id", router_id)?,
            hold_time: f.get("hold_time", d.hold_time, hold_time)?,
            connect_retry: f.get("connect_retry", d.connect_retry, value::seconds)?,
            next_hop_v4: f.opt("next_hop_v4", value::ipv4)?,
            next_hop_v6: f.opt("next_hop_v6", value::ipv6)?,
            communities: speaker_communities(f)?,
            graceful_restart: f.get("graceful_restart", false, value::boolean)?,
            graceful_restart_time: f.get("graceful_restart_time", 120, |v| {
                value::int_in(v, 0, 4095, "a restart time 0..4095 seconds")
            })?,
            ebgp_preference: f.get("ebgp_preference", d.ebgp_preference, ebgp_preference)?,
            ebgp_med_base: f.get("ebgp_med_base", d.ebgp_med_base, |v| {
                value::int_in(v, 0, u32::MAX, "a MED 0..4294967295")
            })?,
            ebgp_prepend_step: f.get("ebgp_prepend_step", d.ebgp_prepend_step, |v| {
                value::int_in(v, 1, u32::MAX, "a whole number > 0")
            })?,
            peers: Vec::new(),
        })
    }
}

impl PeerConfig {
    /// The keys of `[bgp.peer.NAME]`.
    pub const KEYS: &'static [&'static str] = &[
        "address",
        "remote_as",
        "port",
        "passive",
        "password",
        "local_address",
        "ttl_security",
        "hold_time",
        "next_hop_v4",
        "next_hop_v6",
        "bfd",
        "bfd_min_tx",
        "bfd_min_rx",
        "bfd_multiplier",
    ];

    /// Reads `[bgp.peer.NAME]`; `name` is already checked by [`peer_name`].
    pub(crate) fn from_fields(name: &str, f: &mut Fields<'_>) -> Result<PeerConfig, ConfigError> {
        let address = f.required("address", value::ip)?;
        let password = match f.entry("password") {
            None => None,
            Some(e) if e.value.is_empty() => None,
            Some(e) => Some(tcp_md5_key(&e.value).map_err(|i| f.error(e, i, true))?),
        };
        let local_address = match f.entry("local_address") {
            None => None,
            Some(e) if e.value.is_empty() => None,
            Some(e) => {
                let a = value::ip(&e.value).map_err(|i| f.error(e, i, false))?;
                if a.is_ipv4() != address.is_ipv4() {
                    let want = if address.is_ipv4() {
                        "an IPv4"
                    } else {
                        "an IPv6"
                    };
                    return Err(f.error(
                        e,
                        Invalid::Refused(Cow::Owned(format!(
                            "must be {want} address like `address` ({address})"
                        ))),
                        false,
                    ));
                }
                Some(a)
            }
        };
        Ok(PeerConfig {
            name: name.to_owned(),
            address,
            remote_as: f.required("remote_as", value::asn)?,
            port: f.get("port", 179, |v| {
                value::int_in(v, 1, u16::MAX, "a port 1..65535")
            })?,
            passive: f.get("passive", false, value::boolean)?,
            password,
            local_address,
            ttl_security: f.get("ttl_security", false, value::boolean)?,
            hold_time: f.opt("hold_time", hold_time)?,
            next_hop_v4: f.opt("next_hop_v4", value::ipv4)?,
            next_hop_v6: f.opt("next_hop_v6", value::ipv6)?,
            bfd: f.get("bfd", false, value::boolean)?,
            bfd_min_tx: f.opt("bfd_min_tx", bfd::interval)?,
            bfd_min_rx: f.opt("bfd_min_rx", bfd::interval)?,
            bfd_multiplier: f.opt("bfd_multiplier", bfd::multiplier)?,
        })
    }
}

/// Checks the NAME of `[bgp.peer.NAME]`: 1..=64 of letters, digits, `-`, `_`, `.`.
pub(crate) fn peer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A TCP-MD5 key: 1..=80 bytes.
pub(crate) fn tcp_md5_key(v: &str) -> ValueResult<SecretString> {
    if v.is_empty() || v.len() > MAX_TCP_MD5_KEY_LEN {
        return Err(Invalid::Expected(Cow::Borrowed(
            "a TCP-MD5 key of 1..80 bytes",
        )));
    }
    Ok(SecretString::new(v))
}

fn router_id(v: &str) -> ValueResult<Ipv4Addr> {
    match v.parse::<Ipv4Addr>() {
        Ok(a) if !a.is_unspecified() => Ok(a),
        _ => Err(Invalid::Expected(Cow::Borrowed(
            "a router ID in IPv4 form other than 0.0.0.0",
        ))),
    }
}

fn hold_time(v: &str) -> ValueResult<u16> {
    match v.parse::<u16>() {
        Ok(n) if n == 0 || n >= 3 => Ok(n),
        _ => Err(Invalid::Expected(Cow::Borrowed(
            "a hold time of 0 or 3..65535 seconds",
        ))),
    }
}

fn communities(v: &str) -> ValueResult<Vec<Community>> {
    let mut out = Vec::new();
    for word in v.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
        let c = Community::parse(word).ok_or(Invalid::Expected(Cow::Borrowed(
            "communities like `65000:100 65000:1:2 no-export` (ASN:VALUE 16-bit each, \
             or large GLOBAL:LOCAL1:LOCAL2 32-bit each)",
        )))?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// `[bgp] communities`, refused when a drained route carrying them would not fit one UPDATE
/// (the packer would have no room left for its prefix).
fn speaker_communities(f: &mut Fields<'_>) -> Result<Vec<Community>, ConfigError> {
    let Some(e) = f.entry("communities") else {
        return Ok(Vec::new());
    };
    let cs = communities(&e.value).map_err(|i| f.error(e, i, false))?;
    route_fits(&cs, &[]).map_err(|too| {
        f.error(
            e,
            Invalid::Refused(Cow::Owned(format!(
                "{} communities leave no room for a VIP in a BGP UPDATE: {too}",
                cs.len()
            ))),
            false,
        )
    })?;
    Ok(cs)
}

fn ebgp_preference(v: &str) -> ValueResult<EbgpPreference> {
    match v.to_ascii_lowercase().as_str() {
        "med" => Ok(EbgpPreference::Med),
        "prepend" => Ok(EbgpPreference::Prepend),
        "none" => Ok(EbgpPreference::None),
        _ => Err(Invalid::Expected(Cow::Borrowed(
            "one of med, prepend, none",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn community_forms() {
        assert_eq!(
            Community::parse("65000:100"),
            Some(Community::Standard(65000 << 16 | 100))
        );
        assert_eq!(
            Community::parse("4200000000:1:2"),
            Some(Community::Large {
                global: 4_200_000_000,
                local1: 1,
                local2: 2
            })
        );
        assert_eq!(Community::parse("NO-EXPORT"), Some(Community::NO_EXPORT));
        for bad in ["65536:1", "1", "a:b", "1:2:3:4", "1:4294967296:0", ""] {
            assert_eq!(Community::parse(bad), None, "{bad}");
        }
        assert_eq!(
            communities("65000:100, 65000:100 65000:1:2").unwrap().len(),
            2
        );
    }

    #[test]
    fn ebgp_attributes_follow_the_policy() {
        let mut b = BgpConfig::default();
        assert_eq!(b.ebgp_attributes(100).med, Some(900));
        assert_eq!(b.ebgp_attributes(2000).med, Some(0));
        b.ebgp_preference = EbgpPreference::Prepend;
        assert_eq!(b.ebgp_attributes(1000).extra_prepends, 0);
        assert_eq!(b.ebgp_attributes(951).extra_prepends, 0);
        assert_eq!(b.ebgp_attributes(950).extra_prepends, 1);
        assert_eq!(b.ebgp_attributes(899).extra_prepends, 2);
        assert_eq!(b.ebgp_attributes(0).extra_prepends, MAX_PREPENDS);
        assert_eq!(b.ebgp_attributes(0).med, None);
        b.ebgp_preference = EbgpPreference::None;
        assert_eq!(
            b.ebgp_attributes(0),
            EbgpAttributes {
                med: None,
                extra_prepends: 0
            }
        );
    }

    #[test]
    fn communities_that_leave_no_room_for_a_vip_are_refused_with_file_line_and_key() {
        let cfg = |n: u32| {
            let list: Vec<String> = (0..n).map(|i| format!("65000:{i}")).collect();
            crate::Config::from_strs(
                &format!(
                    "[main]\namqp_server = amqp://u@b/\nhostname = lb1\n[bgp]\nlocal_as = 65000\n\
                     router_id = 192.0.2.1\ncommunities = {}\n",
                    list.join(" ")
                ),
                None,
            )
        };
        // 4 bytes each: about 980 fit beside the worst-case rest of an UPDATE.
        assert_eq!(cfg(900).unwrap().bgp.communities.len(), 900);
        let e = cfg(1000).unwrap_err().to_string();
        assert!(
            e.starts_with("config.ini:7: [bgp] communities: 1000 communities leave no room"),
            "{e}"
        );
        assert!(e.contains("the limit is 4096"), "{e}");
    }

    #[test]
    fn a_vips_own_communities_count_with_the_speakers() {
        let global: Vec<Community> = (0..900)
            .map(|i| Community::Standard(65000 << 16 | i))
            .collect();
        assert!(route_fits(&global, &[]).is_ok());
        let large = |n: u32| -> Vec<Community> {
            (0..n)
                .map(|i| Community::Large {
                    global: 65000,
                    local1: i,
                    local2: i,
                })
                .collect()
        };
        assert!(route_fits(&global, &large(4)).is_ok());
        let e = route_fits(&global, &large(64)).unwrap_err();
        assert!(e.bytes > 4096 && e.large_communities == 64, "{e}");
        assert!(route_fits(&[], &large(64)).is_ok());
    }

    #[test]
    fn hold_time_rules() {
        assert_eq!(hold_time("0"), Ok(0));
        assert_eq!(hold_time("3"), Ok(3));
        assert_eq!(hold_time("65535"), Ok(65535));
        for bad in ["1", "2", "65536", "-1", "x"] {
            assert!(hold_time(bad).is_err(), "{bad}");
        }
    }
}
