//! Keys of services and destinations, and their canonical text ids.
//!
//! | object | id |
//! |---|---|
//! | TCP service, IPv4 | `tcp:192.0.2.1:80` |
//! | UDP service, IPv6 | `udp:[2001:db8::1]:53` |
//! | fwmark service | `fwmark:v4:7`, `fwmark:v6:8` |
//! | destination | `tcp:192.0.2.1:80 -> 198.51.100.5:80` |

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Firewall mark → the VIP whose fwmark services carry it. A fwmark service has no address
/// of its own; this says which VIP it goes with (see [`ServiceKey::owner`]).
pub type FwmarkVips = std::collections::BTreeMap<u32, IpAddr>;

/// Address family of a service (`AF_INET`/`AF_INET6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 (`AF_INET`, 2).
    Inet,
    /// IPv6 (`AF_INET6`, 10).
    Inet6,
}

impl Family {
    /// The `AF_*` number.
    pub const fn af(self) -> u16 {
        match self {
            Self::Inet => libc::AF_INET as u16,
            Self::Inet6 => libc::AF_INET6 as u16,
        }
    }
    /// From an `AF_*` number.
    pub fn from_af(af: u16) -> Option<Self> {
        match i32::from(af) {
            libc::AF_INET => Some(Self::Inet),
            libc::AF_INET6 => Some(Self::Inet6),
            _ => None,
        }
    }
    /// The family of an address.
    pub const fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::Inet,
            IpAddr::V6(_) => Self::Inet6,
        }
    }
    /// Longest prefix: 32 or 128.
    pub const fn max_prefix(self) -> u8 {
        match self {
            Self::Inet => 32,
            Self::Inet6 => 128,
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Self::Inet => "v4",
            Self::Inet6 => "v6",
        }
    }
}

/// Transport protocol of an address-keyed service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// TCP (6), `ipvsadm -t`.
    Tcp,
    /// UDP (17), `ipvsadm -u`.
    Udp,
    /// SCTP (132), `ipvsadm --sctp-service`.
    Sctp,
    /// Any other IP protocol number the kernel reports.
    Other(u16),
}

impl Protocol {
    /// The IP protocol number.
    pub const fn number(self) -> u16 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
            Self::Other(n) => n,
        }
    }
    /// From an IP protocol number.
    pub const fn from_number(n: u16) -> Self {
        match n {
            6 => Self::Tcp,
            17 => Self::Udp,
            132 => Self::Sctp,
            n => Self::Other(n),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp => f.write_str("tcp"),
            Self::Udp => f.write_str("udp"),
            Self::Sctp => f.write_str("sctp"),
            Self::Other(n) => write!(f, "proto{n}"),
        }
    }
}

impl FromStr for Protocol {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "sctp" => Ok(Self::Sctp),
            other => other
                .strip_prefix("proto")
                .and_then(|n| n.parse().ok())
                .map(Self::from_number)
                .ok_or_else(|| ModelError::BadId(s.to_string())),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What identifies a virtual service in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKey {
    /// A protocol, address and port (`-t`, `-u`, `--sctp-service`).
    Addr {
        /// Transport protocol.
        protocol: Protocol,
        /// Virtual IP.
        addr: IpAddr,
        /// Port; 0 is "all ports" (persistent services only).
        port: u16,
    },
    /// A firewall mark (`-f MARK [-6]`); such a service has no address.
    Fwmark {
        /// Address family of the packets it takes.
        af: Family,
        /// The mark, never 0.
        mark: u32,
    },
}

impl ServiceKey {
    /// A TCP service.
    pub fn tcp(addr: IpAddr, port: u16) -> Self {
        Self::Addr {
            protocol: Protocol::Tcp,
            addr,
            port,
        }
    }
    /// A UDP service.
    pub fn udp(addr: IpAddr, port: u16) -> Self {
        Self::Addr {
            protocol: Protocol::Udp,
            addr,
            port,
        }
    }
    /// A fwmark service.
    pub fn fwmark(af: Family, mark: u32) -> Self {
        Self::Fwmark { af, mark }
    }
    /// Address family.
    pub fn family(&self) -> Family {
        match self {
            Self::Addr { addr, .. } => Family::of(addr),
            Self::Fwmark { af, .. } => *af,
        }
    }
    /// The VIP, for address-keyed services.
    pub fn vip(&self) -> Option<IpAddr> {
        match self {
            Self::Addr { addr, .. } => Some(*addr),
            Self::Fwmark { .. } => None,
        }
    }

    /// The VIP this service belongs to: its address, or for a fwmark service (of either
    /// family) the VIP `marks` gives its mark.
    pub fn owner(&self, marks: &FwmarkVips) -> Option<IpAddr> {
        match self {
            Self::Addr { addr, .. } => Some(*addr),
            Self::Fwmark { mark, .. } => marks.get(mark).copied(),
        }
    }

    // ipvsadm's ipvs_cmp_services order: fwmark (0 for address services), family,
    // protocol, address, port. Used for the canonical order of the JSON form and of
    // `ipvsadm -Sn`.
    fn sort_key(&self) -> (u32, Family, u16, IpAddr, u16) {
        match *self {
            Self::Addr {
                protocol,
                addr,
                port,
            } => (0, Family::of(&addr), protocol.number(), addr, port),
            Self::Fwmark { af, mark } => {
                let unspecified = match af {
                    Family::Inet => IpAddr::from([0u8; 4]),
                    Family::Inet6 => IpAddr::from([0u8; 16]),
                };
                (mark, af, 0, unspecified, 0)
            }
        }
    }
}

impl Ord for ServiceKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl PartialOrd for ServiceKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr {
                protocol,
                addr,
                port,
            } => write!(f, "{protocol}:{}", SocketAddr::new(*addr, *port)),
            Self::Fwmark { af, mark } => write!(f, "fwmark:{}:{mark}", af.tag()),
        }
    }
}

impl FromStr for ServiceKey {
    type Err = ModelError;
    /// Parses the canonical id (`tcp:192.0.2.1:80`, `udp:[2001:db8::1]:53`, `fwmark:v4:7`).
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let bad = || ModelError::BadId(s.to_string());
        let (head, rest) = s.split_once(':').ok_or_else(bad)?;
        if head == "fwmark" {
            let (af, mark) = rest.split_once(':').ok_or_else(bad)?;
            let af = match af {
                "v4" => Family::Inet,
                "v6" => Family::Inet6,
                _ => return Err(bad()),
            };
            let mark: u32 = mark.parse().map_err(|_| bad())?;
            if mark == 0 {
                return Err(bad());
            }
            return Ok(Self::Fwmark { af, mark });
        }
        let protocol: Protocol = head.parse()?;
        let sa: SocketAddr = rest.parse().map_err(|_| bad())?;
        Ok(Self::Addr {
            protocol,
            addr: sa.ip(),
            port: sa.port(),
        })
    }
}

impl Serialize for ServiceKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServiceKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What identifies a destination within its service: address and port.
///
/// Ordered like `ipvsadm` sorts real servers: IPv4 before IPv6, then address, then port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DestKey {
    /// Real server address; its family may differ from the service's (tunnels).
    pub addr: IpAddr,
    /// Real server port (0 for fwmark services, which keep the packet's port).
    pub port: u16,
}

impl DestKey {
    /// A destination key.
    pub const fn new(addr: IpAddr, port: u16) -> Self {
        Self { addr, port }
    }
}

impl fmt::Display for DestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", SocketAddr::new(self.addr, self.port))
    }
}

/// Canonical id of a destination: `tcp:192.0.2.1:80 -> 198.51.100.5:80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestId<'a>(pub &'a ServiceKey, pub &'a DestKey);

impl fmt::Display for DestId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn canonical_ids() {
        let v4 = ServiceKey::tcp("192.0.2.1".parse().unwrap(), 80);
        let v6 = ServiceKey::tcp("2001:db8::1".parse().unwrap(), 443);
        let fw = ServiceKey::fwmark(Family::Inet, 7);
        assert_eq!(v4.to_string(), "tcp:192.0.2.1:80");
        assert_eq!(v6.to_string(), "tcp:[2001:db8::1]:443");
        assert_eq!(fw.to_string(), "fwmark:v4:7");
        let dest = DestKey::new("198.51.100.5".parse().unwrap(), 80);
        assert_eq!(
            DestId(&v4, &dest).to_string(),
            "tcp:192.0.2.1:80 -> 198.51.100.5:80"
        );
        for key in [
            v4,
            v6,
            fw,
            ServiceKey::Addr {
                protocol: Protocol::Other(99),
                addr: v4.vip().unwrap(),
                port: 1,
            },
        ] {
            assert_eq!(key.to_string().parse::<ServiceKey>().unwrap(), key);
        }
        assert!("fwmark:v4:0".parse::<ServiceKey>().is_err());
        assert!("tcp:192.0.2.1".parse::<ServiceKey>().is_err());
    }

    #[test]
    fn order_matches_ipvsadm() {
        // ipvsadm -Sn lists address services before fwmark ones, IPv4 before IPv6,
        // then TCP < UDP < SCTP, then address and port.
        let mut keys: Vec<ServiceKey> = [
            "fwmark:v4:7",
            "udp:[2001:db8::1]:53",
            "sctp:192.0.2.2:9",
            "udp:192.0.2.4:514",
            "udp:192.0.2.3:5060",
            "tcp:192.0.2.1:80",
            "fwmark:v6:8",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        keys.sort();
        let ids: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(
            ids,
            [
                "tcp:192.0.2.1:80",
                "udp:192.0.2.3:5060",
                "udp:192.0.2.4:514",
                "sctp:192.0.2.2:9",
                "udp:[2001:db8::1]:53",
                "fwmark:v4:7",
                "fwmark:v6:8"
            ]
        );
    }
}
