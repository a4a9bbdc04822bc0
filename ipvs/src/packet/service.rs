//! `IPVS_SVC_ATTR_*`: the attributes nested in `IPVS_CMD_ATTR_SERVICE`.
//!
//! The kernel (`ip_vs_genl_parse_service`) needs `AF` and either `FWMARK` or
//! `PROTOCOL`+`ADDR`+`PORT` to find a service; `NEW_SERVICE`/`SET_SERVICE` also need
//! `SCHED_NAME`, `FLAGS`, `TIMEOUT` and `NETMASK` or fail with `EINVAL`. `FLAGS` is the
//! 8-byte `struct ip_vs_flags { __u32 flags; __u32 mask; }`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::stats::{fold_stats, fold_stats_payload};
use super::{
    addr_payload, read_be16, read_str, read_u16, read_u32, Nested, Nla, NlaIter, StatsAttr,
};
use crate::error::DecodeError;
use crate::model::{Family, Protocol, Service, ServiceFlags, ServiceKey, ServiceSpec, Stats};

const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;
const IPVS_SVC_ATTR_STATS: u16 = 10;
const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
const IPVS_SVC_ATTR_STATS64: u16 = 12;

const NLA_F_NESTED: u16 = 0x8000;

/// One service attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceAttr {
    /// `IPVS_SVC_ATTR_AF` (u16).
    Af(u16),
    /// `IPVS_SVC_ATTR_PROTOCOL` (u16).
    Protocol(u16),
    /// `IPVS_SVC_ATTR_ADDR`: `union nf_inet_addr`, 16 bytes (4 accepted).
    Addr(Vec<u8>),
    /// `IPVS_SVC_ATTR_PORT` (`__be16`), held in host order.
    Port(u16),
    /// `IPVS_SVC_ATTR_FWMARK` (u32).
    Fwmark(u32),
    /// `IPVS_SVC_ATTR_SCHED_NAME` (NUL-terminated).
    SchedName(String),
    /// `IPVS_SVC_ATTR_FLAGS`: `{flags, mask}`.
    Flags {
        /// Flag bits.
        flags: u32,
        /// Which bits to set.
        mask: u32,
    },
    /// `IPVS_SVC_ATTR_TIMEOUT`: persistence timeout, seconds.
    Timeout(u32),
    /// `IPVS_SVC_ATTR_NETMASK`: for IPv4 a `__be32` mask, for IPv6 a prefix length;
    /// held as the native `u32` read from the wire.
    Netmask(u32),
    /// `IPVS_SVC_ATTR_STATS`.
    Stats(Nested<StatsAttr>),
    /// `IPVS_SVC_ATTR_PE_NAME` (NUL-terminated).
    PeName(String),
    /// `IPVS_SVC_ATTR_STATS64`.
    Stats64(Nested<StatsAttr>),
    /// Anything else: raw type and payload.
    Other(u16, Vec<u8>),
}

impl Nla for ServiceAttr {
    fn raw_type(&self) -> u16 {
        match self {
            Self::Af(_) => IPVS_SVC_ATTR_AF,
            Self::Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Self::Addr(_) => IPVS_SVC_ATTR_ADDR,
            Self::Port(_) => IPVS_SVC_ATTR_PORT,
            Self::Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            Self::SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Self::Flags { .. } => IPVS_SVC_ATTR_FLAGS,
            Self::Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Self::Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            Self::Stats(n) => nested_type(IPVS_SVC_ATTR_STATS, n),
            Self::PeName(_) => IPVS_SVC_ATTR_PE_NAME,
            Self::Stats64(n) => nested_type(IPVS_SVC_ATTR_STATS64, n),
            Self::Other(t, _) => *t,
        }
    }

    fn emit_payload(&self, out: &mut Vec<u8>) {
        match self {
            Self::Af(v) | Self::Protocol(v) => out.extend_from_slice(&v.to_ne_bytes()),
            Self::Addr(b) | Self::Other(_, b) => out.extend_from_slice(b),
            Self::Port(p) => out.extend_from_slice(&p.to_be_bytes()),
            Self::Fwmark(v) | Self::Timeout(v) | Self::Netmask(v) => {
                out.extend_from_slice(&v.to_ne_bytes())
            }
            Self::SchedName(s) | Self::PeName(s) => super::put_str(out, s),
            Self::Flags { flags, mask } => {
                out.extend_from_slice(&flags.to_ne_bytes());
                out.extend_from_slice(&mask.to_ne_bytes());
            }
            Self::Stats(n) | Self::Stats64(n) => n.emit_payload(out),
        }
    }

    fn parse(raw_type: u16, p: &[u8]) -> Result<Self, DecodeError> {
        Ok(match raw_type & !NLA_F_NESTED {
            IPVS_SVC_ATTR_AF => Self::Af(read_u16("IPVS_SVC_ATTR_AF", p)?),
            IPVS_SVC_ATTR_PROTOCOL => Self::Protocol(read_u16("IPVS_SVC_ATTR_PROTOCOL", p)?),
            IPVS_SVC_ATTR_ADDR => Self::Addr(addr_payload("IPVS_SVC_ATTR_ADDR", p)?.to_vec()),
            IPVS_SVC_ATTR_PORT => Self::Port(read_be16("IPVS_SVC_ATTR_PORT", p)?),
            IPVS_SVC_ATTR_FWMARK => Self::Fwmark(read_u32("IPVS_SVC_ATTR_FWMARK", p)?),
            IPVS_SVC_ATTR_SCHED_NAME => Self::SchedName(read_str("IPVS_SVC_ATTR_SCHED_NAME", p)?),
            IPVS_SVC_ATTR_FLAGS => {
                if p.len() != 8 {
                    return Err(DecodeError::BadLength {
                        attr: "IPVS_SVC_ATTR_FLAGS",
                        len: p.len(),
                    });
                }
                Self::Flags {
                    flags: read_u32("IPVS_SVC_ATTR_FLAGS", &p[..4])?,
                    mask: read_u32("IPVS_SVC_ATTR_FLAGS", &p[4..])?,
                }
            }
            IPVS_SVC_ATTR_TIMEOUT => Self::Timeout(read_u32("IPVS_SVC_ATTR_TIMEOUT", p)?),
            IPVS_SVC_ATTR_NETMASK => Self::Netmask(read_u32("IPVS_SVC_ATTR_NETMASK", p)?),
            IPVS_SVC_ATTR_STATS => Self::Stats(Nested::parse(raw_type, p)?),
            IPVS_SVC_ATTR_PE_NAME => Self::PeName(read_str("IPVS_SVC_ATTR_PE_NAME", p)?),
            IPVS_SVC_ATTR_STATS64 => Self::Stats64(Nested::parse(raw_type, p)?),
            _ => Self::Other(raw_type, p.to_vec()),
        })
    }
}

fn nested_type<T: Nla>(kind: u16, n: &Nested<T>) -> u16 {
    n.raw_type(kind)
}

/// `union nf_inet_addr` bytes (16, zero-padded for IPv4), as `ipvsadm` sends them.
pub(super) fn inet_addr_bytes(addr: &IpAddr) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    match addr {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b.copy_from_slice(&a.octets()),
    }
    b
}

/// Reads an address of `family` from `union nf_inet_addr` bytes.
pub(super) fn inet_addr(
    attr: &'static str,
    family: Family,
    b: &[u8],
) -> Result<IpAddr, DecodeError> {
    match (family, b.len()) {
        (Family::Inet, 4 | 16) => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        (Family::Inet6, 16) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        (_, len) => Err(DecodeError::BadLength { attr, len }),
    }
}

/// The netmask attribute's native value for a prefix length.
fn netmask_raw(family: Family, prefix: u8) -> u32 {
    match family {
        // A __be32 mask: its wire bytes are the mask in network order.
        Family::Inet => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            u32::from_ne_bytes(mask.to_be_bytes())
        }
        Family::Inet6 => u32::from(prefix),
    }
}

fn netmask_prefix(family: Family, raw: u32) -> Result<u8, DecodeError> {
    let attr = "IPVS_SVC_ATTR_NETMASK";
    match family {
        Family::Inet => {
            let mask = u32::from_be_bytes(raw.to_ne_bytes());
            let prefix = mask.leading_ones();
            if mask.checked_shl(prefix).unwrap_or(0) != 0 {
                return Err(DecodeError::BadValue {
                    attr,
                    reason: format!("non-contiguous IPv4 mask {}", Ipv4Addr::from(mask)),
                });
            }
            u8::try_from(prefix).map_err(|_| DecodeError::BadValue {
                attr,
                reason: "mask".into(),
            })
        }
        Family::Inet6 => match u8::try_from(raw) {
            Ok(p) if p <= 128 => Ok(p),
            _ => Err(DecodeError::BadValue {
                attr,
                reason: format!("IPv6 prefix length {raw} > 128"),
            }),
        },
    }
}

/// The attributes that find a service: `AF` and `PROTOCOL`+`ADDR`+`PORT` or `FWMARK`.
pub fn service_key_attrs(key: &ServiceKey) -> Vec<ServiceAttr> {
    let mut attrs = vec![ServiceAttr::Af(key.family().af())];
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            attrs.push(ServiceAttr::Protocol(protocol.number()));
            attrs.push(ServiceAttr::Addr(inet_addr_bytes(addr)));
            attrs.push(ServiceAttr::Port(*port));
        }
        ServiceKey::Fwmark { mark, .. } => attrs.push(ServiceAttr::Fwmark(*mark)),
    }
    attrs
}

/// Every attribute `NEW_SERVICE`/`SET_SERVICE` takes, in the order `ipvsadm` sends them.
/// `HASHED` is never sent: the kernel would refuse to hash the service.
pub fn service_spec_attrs(spec: &ServiceSpec) -> Vec<ServiceAttr> {
    let mut attrs = service_key_attrs(&spec.key);
    attrs.push(ServiceAttr::SchedName(spec.scheduler.clone()));
    if let Some(pe) = &spec.pe_name {
        attrs.push(ServiceAttr::PeName(pe.clone()));
    }
    attrs.push(ServiceAttr::Flags {
        flags: spec.flags.without(ServiceFlags::HASHED).bits(),
        mask: u32::MAX,
    });
    attrs.push(ServiceAttr::Timeout(spec.timeout));
    attrs.push(ServiceAttr::Netmask(netmask_raw(
        spec.key.family(),
        spec.netmask,
    )));
    attrs
}

/// A service (without destinations) from a dump reply's attributes.
pub fn service_from_attrs(attrs: &[ServiceAttr]) -> Result<Service, DecodeError> {
    let mut fold = ServiceFold::default();
    for attr in attrs {
        match attr {
            ServiceAttr::Addr(b) => fold.addr = Some(b),
            ServiceAttr::Stats(n) | ServiceAttr::Stats64(n) => {
                fold_stats(fold.stats.get_or_insert_with(Stats::default), &n.attrs)
            }
            other => fold.attr(other.clone()),
        }
    }
    fold.finish()
}

/// [`service_from_attrs`] straight from the payload of an `IPVS_CMD_ATTR_SERVICE`,
/// without building the [`ServiceAttr`] list (the dump path; tested and fuzzed against
/// `parse_nlas` + [`service_from_attrs`]).
pub fn service_from_payload(payload: &[u8]) -> Result<Service, DecodeError> {
    let mut fold = ServiceFold::default();
    for item in NlaIter::new(payload) {
        let (raw_type, p) = item?;
        match raw_type & !NLA_F_NESTED {
            IPVS_SVC_ATTR_ADDR => fold.addr = Some(addr_payload("IPVS_SVC_ATTR_ADDR", p)?),
            IPVS_SVC_ATTR_STATS | IPVS_SVC_ATTR_STATS64 => {
                fold_stats_payload(fold.stats.get_or_insert_with(Stats::default), p)?
            }
            _ => fold.attr(ServiceAttr::parse(raw_type, p)?),
        }
    }
    fold.finish()
}

/// The decoding of service attributes, shared by both entry points above.
#[derive(Default)]
struct ServiceFold<'a> {
    af: Option<u16>,
    proto: Option<u16>,
    addr: Option<&'a [u8]>,
    port: Option<u16>,
    fwmark: Option<u32>,
    sched: Option<String>,
    pe: Option<String>,
    flags: u32,
    timeout: u32,
    netmask: Option<u32>,
    stats: Option<Stats>,
}

impl ServiceFold<'_> {
    /// Every attribute but `ADDR` and the counters, which the callers take themselves.
    fn attr(&mut self, attr: ServiceAttr) {
        match attr {
            ServiceAttr::Af(v) => self.af = Some(v),
            ServiceAttr::Protocol(v) => self.proto = Some(v),
            ServiceAttr::Port(v) => self.port = Some(v),
            ServiceAttr::Fwmark(v) => self.fwmark = Some(v),
            ServiceAttr::SchedName(s) => self.sched = Some(s),
            ServiceAttr::PeName(s) if !s.is_empty() => self.pe = Some(s),
            ServiceAttr::Flags { flags, mask } => self.flags = flags & mask,
            ServiceAttr::Timeout(v) => self.timeout = v,
            ServiceAttr::Netmask(v) => self.netmask = Some(v),
            ServiceAttr::Addr(_)
            | ServiceAttr::Stats(_)
            | ServiceAttr::Stats64(_)
            | ServiceAttr::PeName(_)
            | ServiceAttr::Other(..) => {}
        }
    }

    fn finish(self) -> Result<Service, DecodeError> {
        const WHAT: &str = "service";
        let af = self.af.ok_or(DecodeError::Missing {
            what: WHAT,
            attr: "IPVS_SVC_ATTR_AF",
        })?;
        let family = Family::from_af(af).ok_or_else(|| DecodeError::BadValue {
            attr: "IPVS_SVC_ATTR_AF",
            reason: format!("unknown address family {af}"),
        })?;
        let key = match self.fwmark {
            Some(mark) if mark != 0 => ServiceKey::Fwmark { af: family, mark },
            _ => {
                let protocol = Protocol::from_number(self.proto.ok_or(DecodeError::Missing {
                    what: WHAT,
                    attr: "IPVS_SVC_ATTR_PROTOCOL",
                })?);
                let addr = inet_addr(
                    "IPVS_SVC_ATTR_ADDR",
                    family,
                    self.addr.ok_or(DecodeError::Missing {
                        what: WHAT,
                        attr: "IPVS_SVC_ATTR_ADDR",
                    })?,
                )?;
                let port = self.port.ok_or(DecodeError::Missing {
                    what: WHAT,
                    attr: "IPVS_SVC_ATTR_PORT",
                })?;
                ServiceKey::Addr {
                    protocol,
                    addr,
                    port,
                }
            }
        };
        let netmask = match self.netmask {
            Some(raw) => netmask_prefix(family, raw)?,
            None => family.max_prefix(),
        };
        let spec = ServiceSpec {
            key,
            scheduler: self.sched.ok_or(DecodeError::Missing {
                what: WHAT,
                attr: "IPVS_SVC_ATTR_SCHED_NAME",
            })?,
            flags: ServiceFlags::from_bits(self.flags).without(ServiceFlags::HASHED),
            timeout: self.timeout,
            netmask,
            pe_name: self.pe,
        };
        let mut svc = Service::new(spec);
        svc.stats = self.stats;
        Ok(svc)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn netmask_both_families() {
        assert_eq!(
            netmask_raw(Family::Inet, 24).to_ne_bytes(),
            [255, 255, 255, 0]
        );
        assert_eq!(netmask_raw(Family::Inet, 0), 0);
        assert_eq!(
            netmask_prefix(Family::Inet, netmask_raw(Family::Inet, 24)).unwrap(),
            24
        );
        assert_eq!(netmask_prefix(Family::Inet, u32::MAX).unwrap(), 32);
        assert!(netmask_prefix(Family::Inet, u32::from_ne_bytes([255, 0, 255, 0])).is_err());
        assert_eq!(netmask_prefix(Family::Inet6, 64).unwrap(), 64);
        assert!(netmask_prefix(Family::Inet6, 129).is_err());
    }

    #[test]
    fn missing_key_attributes_are_named() {
        let err = service_from_attrs(&[ServiceAttr::Af(2), ServiceAttr::SchedName("rr".into())])
            .unwrap_err();
        assert_eq!(
            err,
            DecodeError::Missing {
                what: "service",
                attr: "IPVS_SVC_ATTR_PROTOCOL"
            }
        );
        let err = service_from_attrs(&[ServiceAttr::Af(99)]).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::BadValue {
                attr: "IPVS_SVC_ATTR_AF",
                ..
            }
        ));
    }
}
