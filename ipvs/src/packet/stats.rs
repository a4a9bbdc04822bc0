//! `IPVS_STATS_ATTR_*`: counters nested in `IPVS_SVC_ATTR_STATS[64]` and
//! `IPVS_DEST_ATTR_STATS[64]`.
//!
//! In `STATS` the packet and connection counters are `u32` and the byte counters `u64`;
//! in `STATS64` all are `u64`. The width is kept per attribute so parse → emit is exact.

use super::Nla;
use crate::error::DecodeError;
use crate::model::Stats;

const IPVS_STATS_ATTR_CONNS: u16 = 1;
const IPVS_STATS_ATTR_INPKTS: u16 = 2;
const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
const IPVS_STATS_ATTR_INBYTES: u16 = 4;
const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
const IPVS_STATS_ATTR_CPS: u16 = 6;
const IPVS_STATS_ATTR_INPPS: u16 = 7;
const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
const IPVS_STATS_ATTR_INBPS: u16 = 9;
const IPVS_STATS_ATTR_OUTBPS: u16 = 10;

/// One counter: its `IPVS_STATS_ATTR_*` type and value, at the width it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatsAttr {
    /// A 4-byte counter.
    U32(u16, u32),
    /// An 8-byte counter.
    U64(u16, u64),
    /// Anything else (e.g. `IPVS_STATS_ATTR_PAD`).
    Other(u16, Vec<u8>),
}

impl Nla for StatsAttr {
    fn raw_type(&self) -> u16 {
        match self {
            Self::U32(t, _) | Self::U64(t, _) | Self::Other(t, _) => *t,
        }
    }
    fn emit_payload(&self, out: &mut Vec<u8>) {
        match self {
            Self::U32(_, v) => out.extend_from_slice(&v.to_ne_bytes()),
            Self::U64(_, v) => out.extend_from_slice(&v.to_ne_bytes()),
            Self::Other(_, p) => out.extend_from_slice(p),
        }
    }
    fn parse(raw_type: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        let known = (IPVS_STATS_ATTR_CONNS..=IPVS_STATS_ATTR_OUTBPS).contains(&raw_type);
        Ok(match (known, payload.len()) {
            (true, 4) => Self::U32(raw_type, super::read_u32("IPVS_STATS_ATTR", payload)?),
            (true, 8) => Self::U64(raw_type, super::read_u64("IPVS_STATS_ATTR", payload)?),
            _ => Self::Other(raw_type, payload.to_vec()),
        })
    }
}

/// Folds counters into [`Stats`]; later attributes (e.g. of `STATS64`) win.
pub(super) fn fold_stats(into: &mut Stats, attrs: &[StatsAttr]) {
    for attr in attrs {
        fold_one(into, attr);
    }
}

/// [`fold_stats`] straight from the payload of a `STATS`/`STATS64` attribute, without
/// building the list; fails where [`parse_nlas`](super::parse_nlas) of it would.
pub(super) fn fold_stats_payload(into: &mut Stats, payload: &[u8]) -> Result<(), DecodeError> {
    for item in super::NlaIter::new(payload) {
        let (t, p) = item?;
        fold_one(into, &StatsAttr::parse(t, p)?);
    }
    Ok(())
}

fn fold_one(into: &mut Stats, attr: &StatsAttr) {
    let (t, v) = match attr {
        StatsAttr::U32(t, v) => (*t, u64::from(*v)),
        StatsAttr::U64(t, v) => (*t, *v),
        StatsAttr::Other(..) => return,
    };
    let slot = match t {
        IPVS_STATS_ATTR_CONNS => &mut into.conns,
        IPVS_STATS_ATTR_INPKTS => &mut into.inpkts,
        IPVS_STATS_ATTR_OUTPKTS => &mut into.outpkts,
        IPVS_STATS_ATTR_INBYTES => &mut into.inbytes,
        IPVS_STATS_ATTR_OUTBYTES => &mut into.outbytes,
        IPVS_STATS_ATTR_CPS => &mut into.cps,
        IPVS_STATS_ATTR_INPPS => &mut into.inpps,
        IPVS_STATS_ATTR_OUTPPS => &mut into.outpps,
        IPVS_STATS_ATTR_INBPS => &mut into.inbps,
        IPVS_STATS_ATTR_OUTBPS => &mut into.outbps,
        _ => return,
    };
    *slot = v;
}
