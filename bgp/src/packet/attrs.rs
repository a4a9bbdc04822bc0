//! Path attributes (RFC 4271 §4.3/§5, RFC 4760, RFC 6793, RFC 1997, RFC 8092) with RFC 7606
//! error handling.
//!
//! ```text
//!  0                   1
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |O|T|P|E| rsvd  |  Type Code    |   O optional, T transitive, P partial, E extended length
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Length (1 octet, 2 if E)      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Value ...
//!
//! AS_PATH segment:   type (1 SET, 2 SEQUENCE, 3 CONFED_SEQ, 4 CONFED_SET) | count | ASNs (2 or 4 octets)
//! MP_REACH_NLRI:     AFI (2) | SAFI (1) | NH len (1) | Next hop | Reserved (1) | NLRI
//! MP_UNREACH_NLRI:   AFI (2) | SAFI (1) | Withdrawn routes
//! COMMUNITIES:       n x 4 octets;  LARGE_COMMUNITY: n x (global admin, local 1, local 2) x 4 octets
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};

use super::open::AS_TRANS;
use super::{nlri, Action, DecodeCtx, DecodeError, EncodeCtx, Family, Reader};

/// Attribute type codes.
pub(crate) mod attr_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH: u8 = 14;
    pub const MP_UNREACH: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}
use attr_type as t;

const OPTIONAL: u8 = 0x80;
const TRANSITIVE: u8 = 0x40;
const EXTENDED: u8 = 0x10;

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Origin {
    /// 0: learned by an interior protocol (what we announce).
    #[default]
    Igp,
    /// 1: EGP.
    Egp,
    /// 2: incomplete.
    Incomplete,
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AsSegment {
    /// AS_SET (1).
    Set(Vec<u32>),
    /// AS_SEQUENCE (2).
    Sequence(Vec<u32>),
    /// AS_CONFED_SEQUENCE (3, RFC 5065).
    ConfedSequence(Vec<u32>),
    /// AS_CONFED_SET (4, RFC 5065).
    ConfedSet(Vec<u32>),
}

impl AsSegment {
    fn parts(&self) -> (u8, &[u32]) {
        match self {
            AsSegment::Set(v) => (1, v),
            AsSegment::Sequence(v) => (2, v),
            AsSegment::ConfedSequence(v) => (3, v),
            AsSegment::ConfedSet(v) => (4, v),
        }
    }
}

/// AS_PATH (or AS4_PATH).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    /// Segments in order.
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path of one AS_SEQUENCE (empty `asns` gives the empty path of iBGP).
    pub fn sequence(asns: Vec<u32>) -> Self {
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![AsSegment::Sequence(asns)],
        }
    }

    /// Every ASN, in order, segments flattened.
    pub fn asns(&self) -> impl Iterator<Item = u32> + '_ {
        self.segments
            .iter()
            .flat_map(|s| s.parts().1.iter().copied())
    }

    fn decode(buf: &[u8], four_octet: bool) -> Option<Self> {
        let mut r = Reader::new(buf);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let ty = r.u8()?;
            let count = r.u8()?;
            if count == 0 {
                return None; // RFC 7606 §7.2: zero-length segment is malformed
            }
            let mut asns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                asns.push(if four_octet {
                    r.u32()?
                } else {
                    u32::from(r.u16()?)
                });
            }
            segments.push(match ty {
                1 => AsSegment::Set(asns),
                2 => AsSegment::Sequence(asns),
                3 => AsSegment::ConfedSequence(asns),
                4 => AsSegment::ConfedSet(asns),
                _ => return None,
            });
        }
        Some(Self { segments })
    }

    fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        for seg in &self.segments {
            let (ty, asns) = seg.parts();
            // A segment holds at most 255 ASNs; longer runs continue in the next segment.
            for chunk in asns.chunks(255) {
                out.push(ty);
                out.push(chunk.len() as u8);
                for &a in chunk {
                    if four_octet {
                        out.extend_from_slice(&a.to_be_bytes());
                    } else {
                        let two = u16::try_from(a).unwrap_or(AS_TRANS);
                        out.extend_from_slice(&two.to_be_bytes());
                    }
                }
            }
        }
    }

    fn needs_as4(&self) -> bool {
        self.asns().any(|a| a > 0xffff)
    }
}

/// A standard community (RFC 1997), `high:low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// NO_EXPORT (RFC 1997).
    pub const NO_EXPORT: Community = Community(0xffff_ff01);
    /// NO_ADVERTISE (RFC 1997).
    pub const NO_ADVERTISE: Community = Community(0xffff_ff02);
    /// Builds `high:low`.
    pub fn new(high: u16, low: u16) -> Self {
        Community((u32::from(high) << 16) | u32::from(low))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xffff)
    }
}

/// A community string that does not parse as `u16:u16` (or `u32:u32:u32` for large ones).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid community {0:?}")]
pub struct CommunityParseError(pub String);

impl FromStr for Community {
    type Err = CommunityParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CommunityParseError(s.to_string());
        let (a, b) = s.split_once(':').ok_or_else(err)?;
        Ok(Community::new(
            a.trim().parse().map_err(|_| err())?,
            b.trim().parse().map_err(|_| err())?,
        ))
    }
}

/// A large community (RFC 8092), `global:local1:local2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global administrator (an ASN).
    pub global: u32,
    /// Local data part 1.
    pub local1: u32,
    /// Local data part 2.
    pub local2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

impl FromStr for LargeCommunity {
    type Err = CommunityParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CommunityParseError(s.to_string());
        let mut it = s.split(':').map(|p| p.trim().parse::<u32>());
        let mut next = || it.next().ok_or_else(err)?.map_err(|_| err());
        let lc = LargeCommunity {
            global: next()?,
            local1: next()?,
            local2: next()?,
        };
        if s.split(':').count() != 3 {
            return Err(err());
        }
        Ok(lc)
    }
}

/// MP_REACH_NLRI contents (RFC 4760 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpReach {
    /// IPv6 unicast: global next hop, optional link-local next hop (32-byte form).
    Ipv6Unicast {
        /// Global next hop.
        next_hop: Ipv6Addr,
        /// Link-local next hop.
        link_local: Option<Ipv6Addr>,
        /// Announced prefixes.
        nlri: Vec<Ipv6Net>,
    },
    /// IPv4 unicast carried in MP_REACH (next hop IPv4, or IPv6 per RFC 8950).
    Ipv4Unicast {
        /// Next hop.
        next_hop: IpAddr,
        /// Announced prefixes.
        nlri: Vec<Ipv4Net>,
    },
    /// Any other family, kept verbatim (value after AFI/SAFI).
    Other {
        /// Family.
        family: Family,
        /// The rest of the value.
        data: Vec<u8>,
    },
}

/// MP_UNREACH_NLRI contents (RFC 4760 §4). An empty IPv6 list is the IPv6 End-of-RIB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpUnreach {
    /// IPv6 unicast withdrawals.
    Ipv6Unicast(Vec<Ipv6Net>),
    /// IPv4 unicast withdrawals.
    Ipv4Unicast(Vec<Ipv4Net>),
    /// Any other family, kept verbatim.
    Other {
        /// Family.
        family: Family,
        /// The withdrawn routes field.
        data: Vec<u8>,
    },
}

/// An attribute we keep without interpreting (unknown optional ones, AS4_AGGREGATOR).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    /// Flags as received (the extended-length bit is recomputed on encode).
    pub flags: u8,
    /// Type code.
    pub type_code: u8,
    /// Value.
    pub value: Vec<u8>,
}

/// The path attributes of an UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathAttrs {
    /// ORIGIN.
    pub origin: Option<Origin>,
    /// AS_PATH (always held with full 4-octet ASNs).
    pub as_path: Option<AsPath>,
    /// NEXT_HOP for IPv4 NLRI.
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only).
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE.
    pub atomic_aggregate: bool,
    /// AGGREGATOR (ASN, address).
    pub aggregator: Option<(u32, Ipv4Addr)>,
    /// COMMUNITIES.
    pub communities: Vec<Community>,
    /// LARGE_COMMUNITY.
    pub large_communities: Vec<LargeCommunity>,
    /// MP_REACH_NLRI.
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI.
    pub mp_unreach: Option<MpUnreach>,
    /// AS4_PATH as received from a 2-octet-AS speaker (on encode it is derived from `as_path`).
    pub as4_path: Option<AsPath>,
    /// Other attributes, kept verbatim.
    pub other: Vec<RawAttribute>,
}

/// Writes one attribute header + value; sets the extended-length bit when the value needs it.
fn put_attr(out: &mut Vec<u8>, flags: u8, ty: u8, value: &[u8]) {
    let flags = flags & !EXTENDED;
    if value.len() > 255 {
        out.push(flags | EXTENDED);
        out.push(ty);
        out.extend_from_slice(&(value.len().min(0xffff) as u16).to_be_bytes());
    } else {
        out.push(flags);
        out.push(ty);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value);
}

impl PathAttrs {
    /// Encodes every attribute: MP_(UN)REACH first (RFC 7606 §5.1), then ascending type code.
    pub fn encode(&self, ctx: &EncodeCtx, out: &mut Vec<u8>) {
        let mut v = Vec::new();
        if let Some(mp) = &self.mp_reach {
            mp.encode_value(&mut v);
            put_attr(out, OPTIONAL, t::MP_REACH, &v);
        }
        if let Some(mp) = &self.mp_unreach {
            v.clear();
            mp.encode_value(&mut v);
            put_attr(out, OPTIONAL, t::MP_UNREACH, &v);
        }
        if let Some(o) = self.origin {
            let b = match o {
                Origin::Igp => 0,
                Origin::Egp => 1,
                Origin::Incomplete => 2,
            };
            put_attr(out, TRANSITIVE, t::ORIGIN, &[b]);
        }
        if let Some(p) = &self.as_path {
            v.clear();
            p.encode(ctx.four_octet_as, &mut v);
            put_attr(out, TRANSITIVE, t::AS_PATH, &v);
        }
        if let Some(nh) = self.next_hop {
            put_attr(out, TRANSITIVE, t::NEXT_HOP, &nh.octets());
        }
        if let Some(m) = self.med {
            put_attr(out, OPTIONAL, t::MED, &m.to_be_bytes());
        }
        if let Some(lp) = self.local_pref {
            put_attr(out, TRANSITIVE, t::LOCAL_PREF, &lp.to_be_bytes());
        }
        if self.atomic_aggregate {
            put_attr(out, TRANSITIVE, t::ATOMIC_AGGREGATE, &[]);
        }
        if let Some((asn, addr)) = self.aggregator {
            v.clear();
            if ctx.four_octet_as {
                v.extend_from_slice(&asn.to_be_bytes());
            } else {
                v.extend_from_slice(&u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes());
            }
            v.extend_from_slice(&addr.octets());
            put_attr(out, OPTIONAL | TRANSITIVE, t::AGGREGATOR, &v);
        }
        if !self.communities.is_empty() {
            v.clear();
            for c in &self.communities {
                v.extend_from_slice(&c.0.to_be_bytes());
            }
            put_attr(out, OPTIONAL | TRANSITIVE, t::COMMUNITIES, &v);
        }
        // RFC 6793 §4.2.2: to a 2-octet speaker, the real path rides in AS4_PATH.
        if !ctx.four_octet_as {
            if let Some(p) = self.as_path.as_ref().filter(|p| p.needs_as4()) {
                v.clear();
                p.encode(true, &mut v);
                put_attr(out, OPTIONAL | TRANSITIVE, t::AS4_PATH, &v);
            }
        }
        if !self.large_communities.is_empty() {
            v.clear();
            for c in &self.large_communities {
                v.extend_from_slice(&c.global.to_be_bytes());
                v.extend_from_slice(&c.local1.to_be_bytes());
                v.extend_from_slice(&c.local2.to_be_bytes());
            }
            put_attr(out, OPTIONAL | TRANSITIVE, t::LARGE_COMMUNITIES, &v);
        }
        for a in &self.other {
            put_attr(out, a.flags, a.type_code, &a.value);
        }
    }

    /// Encoded size of everything except MP_REACH's NLRI (used by the UPDATE packer).
    pub fn encoded_len(&self, ctx: &EncodeCtx) -> usize {
        let mut v = Vec::with_capacity(128);
        self.encode(ctx, &mut v);
        v.len()
    }

    /// Decodes the path attribute section. Returns the attributes and the errors handled per
    /// RFC 7606 (treat-as-withdraw, attribute-discard); `Err` only when the session must reset.
    pub(super) fn decode(
        buf: &[u8],
        ctx: &DecodeCtx,
    ) -> Result<(PathAttrs, Vec<DecodeError>), DecodeError> {
        let mut attrs = PathAttrs::default();
        let mut errors = Vec::new();
        let mut seen = [false; 256];
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let start = buf.len() - r.remaining();
            let Some([flags, ty]) = r.array::<2>() else {
                errors.push(DecodeError::AttributeLength {
                    type_code: 0,
                    data: r.rest().to_vec(),
                });
                break;
            };
            let len = if flags & EXTENDED != 0 {
                r.u16().map(usize::from)
            } else {
                r.u8().map(usize::from)
            };
            let Some(value) = len.and_then(|l| r.take(l)) else {
                // RFC 7606 §4: an attribute overrunning the section.
                let e = DecodeError::AttributeLength {
                    type_code: ty,
                    data: buf.get(start..).unwrap_or_default().to_vec(),
                };
                if e.action() == Action::SessionReset {
                    return Err(e);
                }
                errors.push(e);
                break;
            };
            let whole = buf
                .get(start..buf.len() - r.remaining())
                .unwrap_or_default();
            if seen[usize::from(ty)] {
                // RFC 7606 §3(g): keep the first; a repeated MP attribute resets the session.
                if ty == t::MP_REACH || ty == t::MP_UNREACH {
                    return Err(DecodeError::MalformedAttributeList);
                }
                continue;
            }
            seen[usize::from(ty)] = true;
            if let Err(e) = attrs.decode_one(flags, ty, value, whole, ctx) {
                if e.action() == Action::SessionReset {
                    return Err(e);
                }
                errors.push(e);
            }
        }
        Ok((attrs, errors))
    }

    fn decode_one(
        &mut self,
        flags: u8,
        ty: u8,
        value: &[u8],
        whole: &[u8],
        ctx: &DecodeCtx,
    ) -> Result<(), DecodeError> {
        let data = || whole.to_vec();
        let len_err = || DecodeError::AttributeLength {
            type_code: ty,
            data: data(),
        };
        let expect = match ty {
            t::ORIGIN | t::AS_PATH | t::NEXT_HOP | t::LOCAL_PREF | t::ATOMIC_AGGREGATE => {
                Some(TRANSITIVE)
            }
            t::MED | t::MP_REACH | t::MP_UNREACH => Some(OPTIONAL),
            t::AGGREGATOR
            | t::COMMUNITIES
            | t::AS4_PATH
            | t::AS4_AGGREGATOR
            | t::LARGE_COMMUNITIES => Some(OPTIONAL | TRANSITIVE),
            _ => None,
        };
        match expect {
            Some(e) if flags & (OPTIONAL | TRANSITIVE) != e => {
                return Err(DecodeError::AttributeFlags {
                    type_code: ty,
                    data: data(),
                })
            }
            Some(_) => {}
            None if flags & OPTIONAL == 0 => {
                return Err(DecodeError::UnrecognizedWellKnown {
                    type_code: ty,
                    data: data(),
                })
            }
            None => {
                self.other.push(RawAttribute {
                    flags: flags & !EXTENDED,
                    type_code: ty,
                    value: value.to_vec(),
                });
                return Ok(());
            }
        }
        let mut r = Reader::new(value);
        match ty {
            t::ORIGIN => {
                if value.len() != 1 {
                    return Err(len_err());
                }
                self.origin = Some(match r.u8() {
                    Some(0) => Origin::Igp,
                    Some(1) => Origin::Egp,
                    Some(2) => Origin::Incomplete,
                    _ => return Err(DecodeError::InvalidOrigin(data())),
                });
            }
            t::AS_PATH => {
                self.as_path = Some(
                    AsPath::decode(value, ctx.four_octet_as)
                        .ok_or_else(|| DecodeError::MalformedAsPath(data()))?,
                );
            }
            t::NEXT_HOP => {
                let a = Ipv4Addr::from(
                    r.array::<4>()
                        .filter(|_| value.len() == 4)
                        .ok_or_else(len_err)?,
                );
                if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                    return Err(DecodeError::InvalidNextHop(data()));
                }
                self.next_hop = Some(a);
            }
            t::MED | t::LOCAL_PREF => {
                if value.len() != 4 {
                    return Err(len_err());
                }
                let v = r.u32().ok_or_else(len_err)?;
                if ty == t::MED {
                    self.med = Some(v);
                } else {
                    self.local_pref = Some(v);
                }
            }
            t::ATOMIC_AGGREGATE => {
                if !value.is_empty() {
                    return Err(len_err());
                }
                self.atomic_aggregate = true;
            }
            t::AGGREGATOR => {
                let want = if ctx.four_octet_as { 8 } else { 6 };
                if value.len() != want {
                    return Err(len_err());
                }
                let asn = if ctx.four_octet_as {
                    r.u32()
                } else {
                    r.u16().map(u32::from)
                }
                .ok_or_else(len_err)?;
                let addr = Ipv4Addr::from(r.array::<4>().ok_or_else(len_err)?);
                self.aggregator = Some((asn, addr));
            }
            t::COMMUNITIES => {
                if value.is_empty() || !value.len().is_multiple_of(4) {
                    return Err(len_err());
                }
                while let Some(c) = r.u32() {
                    self.communities.push(Community(c));
                }
            }
            t::LARGE_COMMUNITIES => {
                if value.is_empty() || !value.len().is_multiple_of(12) {
                    return Err(len_err());
                }
                while let (Some(global), Some(local1), Some(local2)) = (r.u32(), r.u32(), r.u32()) {
                    self.large_communities.push(LargeCommunity {
                        global,
                        local1,
                        local2,
                    });
                }
            }
            t::AS4_PATH => {
                // RFC 6793 §6: a malformed AS4_PATH is discarded (AttributeDiscard action).
                self.as4_path = Some(AsPath::decode(value, true).ok_or_else(|| {
                    DecodeError::OptionalAttribute {
                        type_code: ty,
                        data: data(),
                    }
                })?);
            }
            t::AS4_AGGREGATOR => {
                if value.len() != 8 {
                    return Err(len_err());
                }
                self.other.push(RawAttribute {
                    flags: flags & !EXTENDED,
                    type_code: ty,
                    value: value.to_vec(),
                });
            }
            t::MP_REACH => {
                self.mp_reach = Some(MpReach::decode_value(value).ok_or_else(|| {
                    DecodeError::OptionalAttribute {
                        type_code: ty,
                        data: data(),
                    }
                })?);
            }
            t::MP_UNREACH => {
                self.mp_unreach = Some(MpUnreach::decode_value(value).ok_or_else(|| {
                    DecodeError::OptionalAttribute {
                        type_code: ty,
                        data: data(),
                    }
                })?);
            }
            _ => {}
        }
        Ok(())
    }
}

impl MpReach {
    fn decode_value(value: &[u8]) -> Option<Self> {
        let mut r = Reader::new(value);
        let family = Family {
            afi: r.u16()?,
            safi: r.u8()?,
        };
        let nh_len = usize::from(r.u8()?);
        let nh = r.take(nh_len)?;
        let _reserved = r.u8()?;
        let rest = r.rest();
        Some(match family {
            Family::IPV6_UNICAST => {
                let (next_hop, link_local) = match nh_len {
                    16 => (Ipv6Addr::from(<[u8; 16]>::try_from(nh).ok()?), None),
                    32 => (
                        Ipv6Addr::from(<[u8; 16]>::try_from(nh.get(..16)?).ok()?),
                        Some(Ipv6Addr::from(<[u8; 16]>::try_from(nh.get(16..)?).ok()?)),
                    ),
                    _ => return None,
                };
                let mut nlri = Vec::new();
                nlri::decode_v6(rest, &mut nlri)?;
                MpReach::Ipv6Unicast {
                    next_hop,
                    link_local,
                    nlri,
                }
            }
            Family::IPV4_UNICAST => {
                let next_hop = match nh_len {
                    4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(nh).ok()?)),
                    16 | 32 => {
                        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(nh.get(..16)?).ok()?))
                    }
                    _ => return None,
                };
                let mut nlri = Vec::new();
                nlri::decode_v4(rest, &mut nlri)?;
                MpReach::Ipv4Unicast { next_hop, nlri }
            }
            family => MpReach::Other {
                family,
                data: value.get(3..)?.to_vec(),
            },
        })
    }

    fn encode_value(&self, v: &mut Vec<u8>) {
        match self {
            MpReach::Ipv6Unicast {
                next_hop,
                link_local,
                nlri,
            } => {
                v.extend_from_slice(&[0, 2, 1]);
                match link_local {
                    Some(ll) => {
                        v.push(32);
                        v.extend_from_slice(&next_hop.octets());
                        v.extend_from_slice(&ll.octets());
                    }
                    None => {
                        v.push(16);
                        v.extend_from_slice(&next_hop.octets());
                    }
                }
                v.push(0);
                for p in nlri {
                    nlri::encode_v6(p, v);
                }
            }
            MpReach::Ipv4Unicast { next_hop, nlri } => {
                v.extend_from_slice(&[0, 1, 1]);
                match next_hop {
                    IpAddr::V4(a) => {
                        v.push(4);
                        v.extend_from_slice(&a.octets());
                    }
                    IpAddr::V6(a) => {
                        v.push(16);
                        v.extend_from_slice(&a.octets());
                    }
                }
                v.push(0);
                for p in nlri {
                    nlri::encode_v4(p, v);
                }
            }
            MpReach::Other { family, data } => {
                v.extend_from_slice(&family.afi.to_be_bytes());
                v.push(family.safi);
                v.extend_from_slice(data);
            }
        }
    }
}

impl MpUnreach {
    fn decode_value(value: &[u8]) -> Option<Self> {
        let mut r = Reader::new(value);
        let family = Family {
            afi: r.u16()?,
            safi: r.u8()?,
        };
        Some(match family {
            Family::IPV6_UNICAST => {
                let mut w = Vec::new();
                nlri::decode_v6(r.rest(), &mut w)?;
                MpUnreach::Ipv6Unicast(w)
            }
            Family::IPV4_UNICAST => {
                let mut w = Vec::new();
                nlri::decode_v4(r.rest(), &mut w)?;
                MpUnreach::Ipv4Unicast(w)
            }
            family => MpUnreach::Other {
                family,
                data: r.rest().to_vec(),
            },
        })
    }

    fn encode_value(&self, v: &mut Vec<u8>) {
        match self {
            MpUnreach::Ipv6Unicast(w) => {
                v.extend_from_slice(&[0, 2, 1]);
                for p in w {
                    nlri::encode_v6(p, v);
                }
            }
            MpUnreach::Ipv4Unicast(w) => {
                v.extend_from_slice(&[0, 1, 1]);
                for p in w {
                    nlri::encode_v4(p, v);
                }
            }
            MpUnreach::Other { family, data } => {
                v.extend_from_slice(&family.afi.to_be_bytes());
                v.push(family.safi);
                v.extend_from_slice(data);
            }
        }
    }
}
