//! Bitset types of the model: service flags and tunnel encapsulation flags.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ModelError;

/// Service flags (`IP_VS_SVC_F_*` in `linux/ip_vs.h`).
///
/// Serialized as a list of names. The three scheduler flags have no fixed meaning: `sh` and
/// `mh` read `flag-1` as "fallback" and `flag-2` as "port"; the names `sh-fallback`,
/// `mh-fallback`, `sh-port` and `mh-port` are accepted as aliases when parsing.
/// Bits without a name are written as hex (`"0x40"`), so nothing a kernel reports is lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceFlags(u32);

impl ServiceFlags {
    /// `IP_VS_SVC_F_PERSISTENT`: persistent port (`ipvsadm -p`).
    pub const PERSISTENT: Self = Self(0x0001);
    /// `IP_VS_SVC_F_HASHED`: the kernel's own "is in the hash table" mark. Never sent to the
    /// kernel (it refuses to hash a service that carries it) and stripped from dumps.
    pub const HASHED: Self = Self(0x0002);
    /// `IP_VS_SVC_F_ONEPACKET`: one-packet scheduling (`ipvsadm -o`, UDP only).
    pub const ONE_PACKET: Self = Self(0x0004);
    /// `IP_VS_SVC_F_SCHED1`: scheduler flag 1 (`sh-fallback`, `mh-fallback`).
    pub const SCHED1: Self = Self(0x0008);
    /// `IP_VS_SVC_F_SCHED2`: scheduler flag 2 (`sh-port`, `mh-port`).
    pub const SCHED2: Self = Self(0x0010);
    /// `IP_VS_SVC_F_SCHED3`: scheduler flag 3.
    pub const SCHED3: Self = Self(0x0020);
    /// Alias of [`Self::SCHED1`] for the `sh` scheduler.
    pub const SH_FALLBACK: Self = Self::SCHED1;
    /// Alias of [`Self::SCHED2`] for the `sh` scheduler.
    pub const SH_PORT: Self = Self::SCHED2;
    /// Alias of [`Self::SCHED1`] for the `mh` scheduler.
    pub const MH_FALLBACK: Self = Self::SCHED1;
    /// Alias of [`Self::SCHED2`] for the `mh` scheduler.
    pub const MH_PORT: Self = Self::SCHED2;

    const NAMES: [(&'static str, Self); 6] = [
        ("persistent", Self::PERSISTENT),
        ("hashed", Self::HASHED),
        ("one-packet", Self::ONE_PACKET),
        ("flag-1", Self::SCHED1),
        ("flag-2", Self::SCHED2),
        ("flag-3", Self::SCHED3),
    ];

    /// No flag set.
    pub const fn empty() -> Self {
        Self(0)
    }
    /// From the kernel's bit pattern; unknown bits are kept.
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }
    /// The kernel's bit pattern.
    pub const fn bits(self) -> u32 {
        self.0
    }
    /// True when every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    /// True when no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Sets or clears the bits of `other`.
    pub fn set(&mut self, other: Self, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }
    /// These flags without the bits of `other`.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
    /// The scheduler flags only (`SCHED1..3`).
    pub const fn sched_bits(self) -> Self {
        Self(self.0 & 0x38)
    }

    /// Names of the set bits in the JSON form (unknown bits as hex).
    pub fn names(self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = self.0;
        for (name, flag) in Self::NAMES {
            if self.contains(flag) {
                out.push(name.to_string());
                rest &= !flag.0;
            }
        }
        for bit in 0..32 {
            if rest & (1 << bit) != 0 {
                out.push(format!("{:#x}", 1u32 << bit));
            }
        }
        out
    }

    /// One flag from its name, an alias, or a hex number.
    pub fn parse_one(name: &str) -> Result<Self, ModelError> {
        let flag = match name {
            "sh-fallback" | "mh-fallback" => Self::SCHED1,
            "sh-port" | "mh-port" => Self::SCHED2,
            "ops" => Self::ONE_PACKET,
            _ => match Self::NAMES.iter().find(|(n, _)| *n == name) {
                Some((_, flag)) => *flag,
                None => match name.strip_prefix("0x") {
                    Some(hex) => u32::from_str_radix(hex, 16)
                        .map(Self)
                        .map_err(|_| ModelError::UnknownFlag(name.to_string()))?,
                    None => return Err(ModelError::UnknownFlag(name.to_string())),
                },
            },
        };
        Ok(flag)
    }
}

impl std::ops::BitOr for ServiceFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ServiceFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for ServiceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl FromStr for ServiceFlags {
    type Err = ModelError;
    /// Comma-separated names, as `ipvsadm -b` takes them; the empty string is no flag.
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let mut flags = Self::empty();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            flags |= Self::parse_one(name)?;
        }
        Ok(flags)
    }
}

impl Serialize for ServiceFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ServiceFlags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut flags = Self::empty();
        for name in &names {
            flags |= Self::parse_one(name).map_err(serde::de::Error::custom)?;
        }
        Ok(flags)
    }
}

/// Tunnel encapsulation flags of a destination (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
///
/// The kernel keeps a `u16`; `ipvsadm` knows three values: no checksum (0, `--tun-nocsum`),
/// checksum (1, `--tun-csum`) and remote checksum offload (2, `--tun-remcsum`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunFlags(u16);

impl TunFlags {
    /// `IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM`: no checksum.
    pub const NOCSUM: Self = Self(0);
    /// `IP_VS_TUNNEL_ENCAP_FLAG_CSUM`: UDP checksum in the encapsulation.
    pub const CSUM: Self = Self(1);
    /// `IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM`: remote checksum offload.
    pub const REMCSUM: Self = Self(2);

    /// From the kernel's value.
    pub const fn from_bits(bits: u16) -> Self {
        Self(bits)
    }
    /// The kernel's value.
    pub const fn bits(self) -> u16 {
        self.0
    }
    /// The name `ipvsadm` uses (`nocsum`, `csum`, `remcsum`), or `None` for other values.
    pub fn name(self) -> Option<&'static str> {
        match self.0 {
            0 => Some("nocsum"),
            1 => Some("csum"),
            2 => Some("remcsum"),
            _ => None,
        }
    }
}

impl Serialize for TunFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u16(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for TunFlags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            Bits(u16),
        }
        match Form::deserialize(d)? {
            Form::Bits(bits) => Ok(Self(bits)),
            Form::Name(name) => match name.as_str() {
                "nocsum" => Ok(Self::NOCSUM),
                "csum" => Ok(Self::CSUM),
                "remcsum" => Ok(Self::REMCSUM),
                other => Err(serde::de::Error::custom(format!(
                    "unknown tunnel flags {other:?}: expected nocsum, csum, remcsum or a number"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn names_round_trip_with_unknown_bits() {
        let flags =
            ServiceFlags::PERSISTENT | ServiceFlags::SCHED2 | ServiceFlags::from_bits(0x100);
        assert_eq!(flags.names(), ["persistent", "flag-2", "0x100"]);
        let back: ServiceFlags = flags.names().join(",").parse().unwrap();
        assert_eq!(back, flags);
    }

    #[test]
    fn aliases_parse_to_sched_bits() {
        let flags: ServiceFlags = "sh-fallback,sh-port".parse().unwrap();
        assert_eq!(flags.bits(), 0x18);
        assert!("bogus".parse::<ServiceFlags>().is_err());
    }
}
