//! `IPVS_DEST_ATTR_*`: the attributes nested in `IPVS_CMD_ATTR_DEST`.
//!
//! Requests carry them in the order `ipvsadm` 1.31 sends (`ADDR_FAMILY, ADDR, PORT,
//! FWD_METHOD, WEIGHT, TUN_TYPE, TUN_PORT, TUN_FLAGS, U_THRESH, L_THRESH`); dump replies
//! add the connection counters and `STATS`/`STATS64`. `ADDR_FAMILY` lets a destination's
//! family differ from its service's (IPv6 service, IPv4 tunnel endpoint).

use super::service::{inet_addr, inet_addr_bytes};
use super::stats::{fold_stats, fold_stats_payload};
use super::{
    addr_payload, read_be16, read_u16, read_u32, read_u8, Nested, Nla, NlaIter, StatsAttr,
};
use crate::error::DecodeError;
use crate::model::{Dest, DestKey, DestStats, Family, FwdMethod, TunFlags, TunType};

const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
const IPVS_DEST_ATTR_STATS: u16 = 10;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
const IPVS_DEST_ATTR_STATS64: u16 = 12;
const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

/// `IP_VS_CONN_F_FWD_MASK`.
const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;
const NLA_F_NESTED: u16 = 0x8000;

/// One destination attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestAttr {
    /// `IPVS_DEST_ATTR_ADDR`: `union nf_inet_addr`, 16 bytes (4 accepted).
    Addr(Vec<u8>),
    /// `IPVS_DEST_ATTR_PORT` (`__be16`), held in host order.
    Port(u16),
    /// `IPVS_DEST_ATTR_FWD_METHOD` (u32, `IP_VS_CONN_F_*`).
    FwdMethod(u32),
    /// `IPVS_DEST_ATTR_WEIGHT` (u32).
    Weight(u32),
    /// `IPVS_DEST_ATTR_U_THRESH` (u32).
    UThresh(u32),
    /// `IPVS_DEST_ATTR_L_THRESH` (u32).
    LThresh(u32),
    /// `IPVS_DEST_ATTR_ACTIVE_CONNS` (u32, dumps only).
    ActiveConns(u32),
    /// `IPVS_DEST_ATTR_INACT_CONNS` (u32, dumps only).
    InactConns(u32),
    /// `IPVS_DEST_ATTR_PERSIST_CONNS` (u32, dumps only).
    PersistConns(u32),
    /// `IPVS_DEST_ATTR_STATS`.
    Stats(Nested<StatsAttr>),
    /// `IPVS_DEST_ATTR_ADDR_FAMILY` (u16).
    AddrFamily(u16),
    /// `IPVS_DEST_ATTR_STATS64`.
    Stats64(Nested<StatsAttr>),
    /// `IPVS_DEST_ATTR_TUN_TYPE` (u8).
    TunType(u8),
    /// `IPVS_DEST_ATTR_TUN_PORT` (`__be16`), held in host order.
    TunPort(u16),
    /// `IPVS_DEST_ATTR_TUN_FLAGS` (u16).
    TunFlags(u16),
    /// Anything else: raw type and payload.
    Other(u16, Vec<u8>),
}

impl Nla for DestAttr {
    fn raw_type(&self) -> u16 {
        match self {
            Self::Addr(_) => IPVS_DEST_ATTR_ADDR,
            Self::Port(_) => IPVS_DEST_ATTR_PORT,
            Self::FwdMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            Self::Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            Self::UThresh(_) => IPVS_DEST_ATTR_U_THRESH,
            Self::LThresh(_) => IPVS_DEST_ATTR_L_THRESH,
            Self::ActiveConns(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            Self::InactConns(_) => IPVS_DEST_ATTR_INACT_CONNS,
            Self::PersistConns(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            Self::Stats(n) => n.raw_type(IPVS_DEST_ATTR_STATS),
            Self::AddrFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            Self::Stats64(n) => n.raw_type(IPVS_DEST_ATTR_STATS64),
            Self::TunType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            Self::TunPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            Self::TunFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            Self::Other(t, _) => *t,
        }
    }

    fn emit_payload(&self, out: &mut Vec<u8>) {
        match self {
            Self::Addr(b) | Self::Other(_, b) => out.extend_from_slice(b),
            Self::Port(p) | Self::TunPort(p) => out.extend_from_slice(&p.to_be_bytes()),
            Self::FwdMethod(v)
            | Self::Weight(v)
            | Self::UThresh(v)
            | Self::LThresh(v)
            | Self::ActiveConns(v)
            | Self::InactConns(v)
            | Self::PersistConns(v) => out.extend_from_slice(&v.to_ne_bytes()),
            Self::AddrFamily(v) | Self::TunFlags(v) => out.extend_from_slice(&v.to_ne_bytes()),
            Self::TunType(v) => out.push(*v),
            Self::Stats(n) | Self::Stats64(n) => n.emit_payload(out),
        }
    }

    fn parse(raw_type: u16, p: &[u8]) -> Result<Self, DecodeError> {
        Ok(match raw_type & !NLA_F_NESTED {
            IPVS_DEST_ATTR_ADDR => Self::Addr(addr_payload("IPVS_DEST_ATTR_ADDR", p)?.to_vec()),
            IPVS_DEST_ATTR_PORT => Self::Port(read_be16("IPVS_DEST_ATTR_PORT", p)?),
            IPVS_DEST_ATTR_FWD_METHOD => Self::FwdMethod(read_u32("IPVS_DEST_ATTR_FWD_METHOD", p)?),
            IPVS_DEST_ATTR_WEIGHT => Self::Weight(read_u32("IPVS_DEST_ATTR_WEIGHT", p)?),
            IPVS_DEST_ATTR_U_THRESH => Self::UThresh(read_u32("IPVS_DEST_ATTR_U_THRESH", p)?),
            IPVS_DEST_ATTR_L_THRESH => Self::LThresh(read_u32("IPVS_DEST_ATTR_L_THRESH", p)?),
            IPVS_DEST_ATTR_ACTIVE_CONNS => {
                Self::ActiveConns(read_u32("IPVS_DEST_ATTR_ACTIVE_CONNS", p)?)
            }
            IPVS_DEST_ATTR_INACT_CONNS => {
                Self::InactConns(read_u32("IPVS_DEST_ATTR_INACT_CONNS", p)?)
            }
            IPVS_DEST_ATTR_PERSIST_CONNS => {
                Self::PersistConns(read_u32("IPVS_DEST_ATTR_PERSIST_CONNS", p)?)
            }
            IPVS_DEST_ATTR_STATS => Self::Stats(Nested::parse(raw_type, p)?),
            IPVS_DEST_ATTR_ADDR_FAMILY => {
                Self::AddrFamily(read_u16("IPVS_DEST_ATTR_ADDR_FAMILY", p)?)
            }
            IPVS_DEST_ATTR_STATS64 => Self::Stats64(Nested::parse(raw_type, p)?),
            IPVS_DEST_ATTR_TUN_TYPE => Self::TunType(read_u8("IPVS_DEST_ATTR_TUN_TYPE", p)?),
            IPVS_DEST_ATTR_TUN_PORT => Self::TunPort(read_be16("IPVS_DEST_ATTR_TUN_PORT", p)?),
            IPVS_DEST_ATTR_TUN_FLAGS => Self::TunFlags(read_u16("IPVS_DEST_ATTR_TUN_FLAGS", p)?),
            _ => Self::Other(raw_type, p.to_vec()),
        })
    }
}

/// The attributes that find a destination within its service.
pub fn dest_key_attrs(key: &DestKey) -> Vec<DestAttr> {
    vec![
        DestAttr::AddrFamily(Family::of(&key.addr).af()),
        DestAttr::Addr(inet_addr_bytes(&key.addr)),
        DestAttr::Port(key.port),
    ]
}

/// Every attribute `NEW_DEST`/`SET_DEST` takes, in `ipvsadm`'s order.
pub fn dest_attrs(dest: &Dest) -> Vec<DestAttr> {
    let mut attrs = dest_key_attrs(&dest.key);
    attrs.extend([
        DestAttr::FwdMethod(dest.fwd.bits()),
        DestAttr::Weight(dest.weight),
        DestAttr::TunType(dest.tun_type.bits()),
        DestAttr::TunPort(dest.tun_port),
        DestAttr::TunFlags(dest.tun_flags.bits()),
        DestAttr::UThresh(dest.u_threshold),
        DestAttr::LThresh(dest.l_threshold),
    ]);
    attrs
}

/// A destination from a dump reply's attributes; `service_family` is used when the
/// reply carries no `ADDR_FAMILY` (kernels before 4.x).
pub fn dest_from_attrs(attrs: &[DestAttr], service_family: Family) -> Result<Dest, DecodeError> {
    let mut fold = DestFold::new(service_family);
    for attr in attrs {
        match attr {
            DestAttr::Addr(b) => fold.addr = Some(b),
            DestAttr::Stats(n) | DestAttr::Stats64(n) => fold_stats(fold.traffic(), &n.attrs),
            other => fold.attr(other)?,
        }
    }
    fold.finish()
}

/// [`dest_from_attrs`] straight from the payload of an `IPVS_CMD_ATTR_DEST`, without
/// building the [`DestAttr`] list: what [`Ipvs::dump`](crate::Ipvs::dump) uses, where a
/// table has 100,000 destinations and the list's allocations cost more than the
/// syscalls. Accepts and refuses what `parse_nlas` + [`dest_from_attrs`] do (tested and
/// fuzzed against it).
pub fn dest_from_payload(payload: &[u8], service_family: Family) -> Result<Dest, DecodeError> {
    let mut fold = DestFold::new(service_family);
    for item in NlaIter::new(payload) {
        let (raw_type, p) = item?;
        match raw_type & !NLA_F_NESTED {
            IPVS_DEST_ATTR_ADDR => fold.addr = Some(addr_payload("IPVS_DEST_ATTR_ADDR", p)?),
            IPVS_DEST_ATTR_STATS | IPVS_DEST_ATTR_STATS64 => fold_stats_payload(fold.traffic(), p)?,
            _ => fold.attr(&DestAttr::parse(raw_type, p)?)?,
        }
    }
    fold.finish()
}

/// The decoding of destination attributes, shared by both entry points above.
struct DestFold<'a> {
    addr: Option<&'a [u8]>,
    port: Option<u16>,
    family: Family,
    dest: Dest,
    stats: Option<DestStats>,
}

impl<'a> DestFold<'a> {
    fn new(service_family: Family) -> Self {
        Self {
            addr: None,
            port: None,
            family: service_family,
            dest: Dest::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
            stats: None,
        }
    }

    fn traffic(&mut self) -> &mut crate::model::Stats {
        &mut self.stats.get_or_insert_with(DestStats::default).traffic
    }

    /// Every attribute but `ADDR` and the counters, which the callers take themselves.
    fn attr(&mut self, attr: &DestAttr) -> Result<(), DecodeError> {
        let dest = &mut self.dest;
        match attr {
            DestAttr::Port(v) => self.port = Some(*v),
            DestAttr::AddrFamily(af) => {
                self.family = Family::from_af(*af).ok_or_else(|| DecodeError::BadValue {
                    attr: "IPVS_DEST_ATTR_ADDR_FAMILY",
                    reason: format!("unknown address family {af}"),
                })?;
            }
            DestAttr::FwdMethod(v) => dest.fwd = FwdMethod::from_bits(v & IP_VS_CONN_F_FWD_MASK),
            DestAttr::Weight(v) => dest.weight = *v,
            DestAttr::UThresh(v) => dest.u_threshold = *v,
            DestAttr::LThresh(v) => dest.l_threshold = *v,
            DestAttr::TunType(v) => dest.tun_type = TunType::from_bits(*v),
            DestAttr::TunPort(v) => dest.tun_port = *v,
            DestAttr::TunFlags(v) => dest.tun_flags = TunFlags::from_bits(*v),
            DestAttr::ActiveConns(v) => {
                self.stats
                    .get_or_insert_with(DestStats::default)
                    .active_conns = *v
            }
            DestAttr::InactConns(v) => {
                self.stats
                    .get_or_insert_with(DestStats::default)
                    .inact_conns = *v
            }
            DestAttr::PersistConns(v) => {
                self.stats
                    .get_or_insert_with(DestStats::default)
                    .persist_conns = *v
            }
            DestAttr::Addr(_) | DestAttr::Stats(_) | DestAttr::Stats64(_) | DestAttr::Other(..) => {
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Dest, DecodeError> {
        const WHAT: &str = "destination";
        let addr = self.addr.ok_or(DecodeError::Missing {
            what: WHAT,
            attr: "IPVS_DEST_ATTR_ADDR",
        })?;
        let mut dest = self.dest;
        dest.key = DestKey::new(
            inet_addr("IPVS_DEST_ATTR_ADDR", self.family, addr)?,
            self.port.ok_or(DecodeError::Missing {
                what: WHAT,
                attr: "IPVS_DEST_ATTR_PORT",
            })?,
        );
        dest.stats = self.stats;
        Ok(dest)
    }
}
