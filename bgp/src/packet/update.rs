//! UPDATE (RFC 4271 §4.3) with RFC 7606 revised error handling and End-of-RIB (RFC 4724 §2).
//!
//! ```text
//! +-----------------------------------------------------+
//! |   Withdrawn Routes Length (2 octets)                |
//! +-----------------------------------------------------+
//! |   Withdrawn Routes (variable, IPv4 prefixes)        |
//! +-----------------------------------------------------+
//! |   Total Path Attribute Length (2 octets)            |
//! +-----------------------------------------------------+
//! |   Path Attributes (variable)                        |
//! +-----------------------------------------------------+
//! |   Network Layer Reachability Information (IPv4)     |
//! +-----------------------------------------------------+
//! ```
//! IPv6 travels in MP_REACH_NLRI / MP_UNREACH_NLRI attributes (RFC 4760). End-of-RIB is an
//! UPDATE with nothing in it (IPv4) or with only an empty MP_UNREACH_NLRI (other families).

use ipnet::Ipv4Net;

use super::attrs::attr_type;
use super::{
    nlri, Action, DecodeCtx, DecodeError, EncodeCtx, Family, MpReach, MpUnreach, PathAttrs, Reader,
};

/// An UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn IPv4 prefixes.
    pub withdrawn: Vec<Ipv4Net>,
    /// Path attributes (MP_REACH/MP_UNREACH carry IPv6).
    pub attrs: PathAttrs,
    /// Announced IPv4 prefixes.
    pub nlri: Vec<Ipv4Net>,
    /// Errors handled per RFC 7606 without a session reset (filled by decode only). When any
    /// of them is treat-as-withdraw, the announced prefixes have been moved to the withdrawn
    /// lists already and the attributes dropped.
    pub errors: Vec<DecodeError>,
}

impl Update {
    /// The End-of-RIB marker for `family`.
    pub fn end_of_rib(family: Family) -> Self {
        let mut u = Update::default();
        if family != Family::IPV4_UNICAST {
            u.attrs.mp_unreach = Some(if family == Family::IPV6_UNICAST {
                MpUnreach::Ipv6Unicast(Vec::new())
            } else {
                MpUnreach::Other {
                    family,
                    data: Vec::new(),
                }
            });
        }
        u
    }

    /// The family this UPDATE is the End-of-RIB of, if it is one.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        let only_unreach = PathAttrs {
            mp_unreach: self.attrs.mp_unreach.clone(),
            ..PathAttrs::default()
        };
        if self.attrs != only_unreach {
            return None;
        }
        match &self.attrs.mp_unreach {
            None => Some(Family::IPV4_UNICAST),
            Some(MpUnreach::Ipv6Unicast(w)) if w.is_empty() => Some(Family::IPV6_UNICAST),
            Some(MpUnreach::Ipv4Unicast(w)) if w.is_empty() => Some(Family::IPV4_UNICAST),
            Some(MpUnreach::Other { family, data }) if data.is_empty() => Some(*family),
            Some(_) => None,
        }
    }

    pub(super) fn decode_body(body: &[u8], ctx: &DecodeCtx) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let bad = || DecodeError::MalformedAttributeList;
        let wlen = r.u16().ok_or_else(bad)?;
        let wbuf = r.take(usize::from(wlen)).ok_or_else(bad)?;
        let alen = r.u16().ok_or_else(bad)?;
        let abuf = r.take(usize::from(alen)).ok_or_else(bad)?;
        let nbuf = r.rest();

        let mut withdrawn = Vec::new();
        nlri::decode_v4(wbuf, &mut withdrawn).ok_or(DecodeError::InvalidNetworkField)?;
        let mut nlri = Vec::new();
        nlri::decode_v4(nbuf, &mut nlri).ok_or(DecodeError::InvalidNetworkField)?;
        let (mut attrs, mut errors) = PathAttrs::decode(abuf, ctx)?;

        // Mandatory attributes (RFC 4271 §5; RFC 7606 §3(d): missing ones are treat-as-withdraw).
        let mp_nlri = matches!(&attrs.mp_reach, Some(MpReach::Ipv6Unicast { nlri, .. }) if !nlri.is_empty())
            || matches!(&attrs.mp_reach, Some(MpReach::Ipv4Unicast { nlri, .. }) if !nlri.is_empty());
        if !nlri.is_empty() || mp_nlri {
            if attrs.origin.is_none() && !has_error_on(&errors, attr_type::ORIGIN) {
                errors.push(DecodeError::MissingWellKnown(attr_type::ORIGIN));
            }
            if attrs.as_path.is_none() && !has_error_on(&errors, attr_type::AS_PATH) {
                errors.push(DecodeError::MissingWellKnown(attr_type::AS_PATH));
            }
        }
        if !nlri.is_empty()
            && attrs.next_hop.is_none()
            && !has_error_on(&errors, attr_type::NEXT_HOP)
        {
            errors.push(DecodeError::MissingWellKnown(attr_type::NEXT_HOP));
        }

        if errors.iter().any(|e| e.action() == Action::TreatAsWithdraw) {
            withdrawn.append(&mut nlri);
            let mut unreach = attrs.mp_unreach.take();
            match attrs.mp_reach.take() {
                Some(MpReach::Ipv6Unicast { nlri: v6, .. }) => match &mut unreach {
                    Some(MpUnreach::Ipv6Unicast(w)) => w.extend(v6),
                    _ if !v6.is_empty() => unreach = Some(MpUnreach::Ipv6Unicast(v6)),
                    _ => {}
                },
                Some(MpReach::Ipv4Unicast { nlri: v4, .. }) => withdrawn.extend(v4),
                _ => {}
            }
            attrs = PathAttrs {
                mp_unreach: unreach,
                ..PathAttrs::default()
            };
        }
        Ok(Update {
            withdrawn,
            attrs,
            nlri,
            errors,
        })
    }

    pub(super) fn encode_body(&self, ctx: &EncodeCtx, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0, 0]);
        for p in &self.withdrawn {
            nlri::encode_v4(p, out);
        }
        patch_len(out, at);
        let at = out.len();
        out.extend_from_slice(&[0, 0]);
        self.attrs.encode(ctx, out);
        patch_len(out, at);
        for p in &self.nlri {
            nlri::encode_v4(p, out);
        }
    }
}

fn has_error_on(errors: &[DecodeError], ty: u8) -> bool {
    errors.iter().any(|e| match e {
        DecodeError::AttributeFlags { type_code, .. }
        | DecodeError::AttributeLength { type_code, .. } => *type_code == ty,
        DecodeError::InvalidOrigin(_) => ty == attr_type::ORIGIN,
        DecodeError::MalformedAsPath(_) => ty == attr_type::AS_PATH,
        DecodeError::InvalidNextHop(_) => ty == attr_type::NEXT_HOP,
        _ => false,
    })
}

/// Writes the length of what follows the 2-byte slot at `at`.
fn patch_len(out: &mut [u8], at: usize) {
    let len = out.len().saturating_sub(at + 2);
    let len = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(slot) = out.get_mut(at..at + 2) {
        slot.copy_from_slice(&len);
    }
}
