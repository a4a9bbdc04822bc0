//! Destinations (real servers).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{DestKey, Stats, TunFlags};

/// Forwarding method (`IP_VS_CONN_F_FWD_MASK` bits of the destination's conn flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FwdMethod {
    /// `IP_VS_CONN_F_MASQ` (0): NAT, `ipvsadm -m`.
    Masq,
    /// `IP_VS_CONN_F_LOCALNODE` (1): deliver locally.
    Local,
    /// `IP_VS_CONN_F_TUNNEL` (2): IP-in-IP / GUE / GRE, `ipvsadm -i`.
    Tunnel,
    /// `IP_VS_CONN_F_DROUTE` (3): direct routing, `ipvsadm -g` (ipvsadm's default).
    #[default]
    Route,
    /// `IP_VS_CONN_F_BYPASS` (4): cache bypass.
    Bypass,
    /// Any other value the kernel reports.
    Other(u32),
}

impl FwdMethod {
    /// The kernel's value.
    pub const fn bits(self) -> u32 {
        match self {
            Self::Masq => 0,
            Self::Local => 1,
            Self::Tunnel => 2,
            Self::Route => 3,
            Self::Bypass => 4,
            Self::Other(n) => n,
        }
    }
    /// From the kernel's value.
    pub const fn from_bits(n: u32) -> Self {
        match n {
            0 => Self::Masq,
            1 => Self::Local,
            2 => Self::Tunnel,
            3 => Self::Route,
            4 => Self::Bypass,
            n => Self::Other(n),
        }
    }
    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::Masq => "masq",
            Self::Local => "local",
            Self::Tunnel => "tunnel",
            Self::Route => "dr",
            Self::Bypass => "bypass",
            Self::Other(_) => return None,
        })
    }
}

impl Serialize for FwdMethod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u32(self.bits()),
        }
    }
}

impl<'de> Deserialize<'de> for FwdMethod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            Bits(u32),
        }
        match Form::deserialize(d)? {
            Form::Bits(n) => Ok(Self::from_bits(n)),
            Form::Name(name) => match name.as_str() {
                "masq" | "nat" => Ok(Self::Masq),
                "local" => Ok(Self::Local),
                "tunnel" | "ipip" => Ok(Self::Tunnel),
                "dr" | "route" | "gatewaying" => Ok(Self::Route),
                "bypass" => Ok(Self::Bypass),
                other => Err(serde::de::Error::custom(format!(
                    "unknown forwarding method {other:?}: expected dr, tunnel, masq, local, bypass or a number"
                ))),
            },
        }
    }
}

/// Tunnel encapsulation of a [`FwdMethod::Tunnel`] destination (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TunType {
    /// IP-in-IP (0), the default.
    #[default]
    Ipip,
    /// Generic UDP encapsulation (1), needs a tunnel port.
    Gue,
    /// GRE (2).
    Gre,
    /// Any other value the kernel reports.
    Other(u8),
}

impl TunType {
    /// The kernel's value.
    pub const fn bits(self) -> u8 {
        match self {
            Self::Ipip => 0,
            Self::Gue => 1,
            Self::Gre => 2,
            Self::Other(n) => n,
        }
    }
    /// From the kernel's value.
    pub const fn from_bits(n: u8) -> Self {
        match n {
            0 => Self::Ipip,
            1 => Self::Gue,
            2 => Self::Gre,
            n => Self::Other(n),
        }
    }
    /// The name `ipvsadm --tun-type` uses.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::Ipip => Some("ipip"),
            Self::Gue => Some("gue"),
            Self::Gre => Some("gre"),
            Self::Other(_) => None,
        }
    }
    /// From an `ipvsadm --tun-type` name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ipip" => Some(Self::Ipip),
            "gue" => Some(Self::Gue),
            "gre" => Some(Self::Gre),
            _ => None,
        }
    }
}

impl Serialize for TunType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u8(self.bits()),
        }
    }
}

impl<'de> Deserialize<'de> for TunType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            Bits(u8),
        }
        match Form::deserialize(d)? {
            Form::Bits(n) => Ok(Self::from_bits(n)),
            Form::Name(name) => Self::from_name(&name).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown tunnel type {name:?}: expected ipip, gue, gre or a number"
                ))
            }),
        }
    }
}

/// Counters of a destination: connection counts and traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DestStats {
    /// Active connections.
    pub active_conns: u32,
    /// Inactive connections.
    pub inact_conns: u32,
    /// Persistent connection templates.
    pub persist_conns: u32,
    /// Traffic.
    #[serde(flatten)]
    pub traffic: Stats,
}

/// A real server of a service (`ipvsadm -a`).
///
/// Equality ignores `stats`. Read from JSON through [`DestJson`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "DestJson")]
pub struct Dest {
    /// Address and port.
    #[serde(flatten)]
    pub key: DestKey,
    /// Forwarding method.
    #[serde(default)]
    pub fwd: FwdMethod,
    /// Weight (`-w`); 0 drains: no new connections.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Upper connection threshold (`-x`), 0 for none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`), 0 for none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub l_threshold: u32,
    /// Tunnel encapsulation (tunnel destinations).
    #[serde(default, skip_serializing_if = "is_ipip")]
    pub tun_type: TunType,
    /// Tunnel destination port (GUE).
    #[serde(default, skip_serializing_if = "is_zero16")]
    pub tun_port: u16,
    /// Tunnel checksum flags.
    #[serde(default, skip_serializing_if = "is_nocsum")]
    pub tun_flags: TunFlags,
    /// Counters, present on dumps only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<DestStats>,
}

/// The JSON object of a [`Dest`] as read: flat, where `Dest` writes its key through
/// `#[serde(flatten)]`. A flattened field makes serde buffer the whole object before
/// reading it; for a tree of 100,000 destinations (a JSON file, or a tree on the wire)
/// that was most of the parse. Same fields, same defaults, unknown fields ignored.
#[derive(Deserialize)]
struct DestJson {
    addr: IpAddr,
    port: u16,
    #[serde(default)]
    fwd: FwdMethod,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    u_threshold: u32,
    #[serde(default)]
    l_threshold: u32,
    #[serde(default)]
    tun_type: TunType,
    #[serde(default)]
    tun_port: u16,
    #[serde(default)]
    tun_flags: TunFlags,
    #[serde(default)]
    stats: Option<DestStats>,
}

impl From<DestJson> for Dest {
    fn from(j: DestJson) -> Self {
        Self {
            key: DestKey::new(j.addr, j.port),
            fwd: j.fwd,
            weight: j.weight,
            u_threshold: j.u_threshold,
            l_threshold: j.l_threshold,
            tun_type: j.tun_type,
            tun_port: j.tun_port,
            tun_flags: j.tun_flags,
            stats: j.stats,
        }
    }
}

fn default_weight() -> u32 {
    1
}
fn is_zero(v: &u32) -> bool {
    *v == 0
}
fn is_zero16(v: &u16) -> bool {
    *v == 0
}
fn is_ipip(v: &TunType) -> bool {
    *v == TunType::Ipip
}
fn is_nocsum(v: &TunFlags) -> bool {
    *v == TunFlags::NOCSUM
}

impl Dest {
    /// A direct-routing destination of weight 1, like `ipvsadm -a … -r ADDR:PORT`.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        Self {
            key: DestKey::new(addr, port),
            fwd: FwdMethod::Route,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun_type: TunType::Ipip,
            tun_port: 0,
            tun_flags: TunFlags::NOCSUM,
            stats: None,
        }
    }

    /// Sets the weight; builder style.
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Checks what the kernel would refuse: a lower threshold above the upper one (it
    /// answers `ERANGE`, even when the upper one is 0, "no limit").
    pub fn validate(&self, service: &super::ServiceKey) -> Result<(), crate::error::ModelError> {
        if self.l_threshold > self.u_threshold {
            return Err(crate::error::ModelError::Invalid {
                id: super::DestId(service, &self.key).to_string(),
                reason: format!(
                    "lower threshold {} above upper threshold {}",
                    self.l_threshold, self.u_threshold
                ),
            });
        }
        Ok(())
    }

    /// Sets the forwarding method; builder style.
    #[must_use]
    pub fn fwd(mut self, fwd: FwdMethod) -> Self {
        self.fwd = fwd;
        self
    }
}

impl PartialEq for Dest {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
            && self.fwd == o.fwd
            && self.weight == o.weight
            && self.u_threshold == o.u_threshold
            && self.l_threshold == o.l_threshold
            && self.tun_type == o.tun_type
            && self.tun_port == o.tun_port
            && self.tun_flags == o.tun_flags
    }
}

impl Eq for Dest {}
