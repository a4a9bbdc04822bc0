//! OPEN (RFC 4271 §4.2, RFC 5492 capabilities, RFC 9072 extended optional parameters).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+
//! |    Version    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     My Autonomous System      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Hold Time           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         BGP Identifier                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Opt Parm Len  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Optional Parameters (Type 1 octet, Length 1 octet,|
//! |             Value), type 2 = Capabilities                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! RFC 9072: Opt Parm Len 255 followed by a parameter of type 255 means a 2-octet extended
//! length follows and every parameter has a 2-octet length.

use std::net::Ipv4Addr;

use super::{Capability, DecodeError, Reader};

/// AS_TRANS (RFC 6793): the 2-octet stand-in for a 4-octet AS.
pub const AS_TRANS: u16 = 23456;
const PARAM_CAPABILITIES: u8 = 2;
const PARAM_EXTENDED: u8 = 255;

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// "My Autonomous System" as sent (AS_TRANS for a 4-octet AS).
    pub my_as: u16,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities, in order.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// Builds an OPEN for `asn`: sets My AS (or AS_TRANS) and adds the 4-octet AS capability
    /// first, followed by `capabilities`.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        let mut caps = Vec::with_capacity(capabilities.len() + 1);
        caps.extend(
            capabilities
                .into_iter()
                .filter(|c| !matches!(c, Capability::FourOctetAs(_))),
        );
        caps.push(Capability::FourOctetAs(asn));
        Self {
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities: caps,
        }
    }

    /// The sender's AS: from the 4-octet AS capability if present, else "My AS".
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    /// The 4-octet AS capability's value, if advertised.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }

    /// True when `cap` is among the capabilities.
    pub fn has(&self, cap: &Capability) -> bool {
        self.capabilities.contains(cap)
    }

    pub(super) fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let short = || DecodeError::MalformedOpen("OPEN too short");
        let version = r.u8().ok_or_else(short)?;
        if version != 4 {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let my_as = r.u16().ok_or_else(short)?;
        let hold_time = r.u16().ok_or_else(short)?;
        let bgp_id = Ipv4Addr::from(r.array::<4>().ok_or_else(short)?);
        let opt_len = r.u8().ok_or_else(short)?;
        let mut capabilities = Vec::new();
        let rest = r.rest();
        let extended = opt_len == 255 && rest.first() == Some(&PARAM_EXTENDED);
        let mut p = if extended {
            let mut h = Reader::new(&rest[1..]);
            let ext_len = h.u16().ok_or_else(short)?;
            if h.remaining() != usize::from(ext_len) {
                return Err(DecodeError::MalformedOpen(
                    "extended parameter length mismatch",
                ));
            }
            h
        } else {
            if rest.len() != usize::from(opt_len) {
                return Err(DecodeError::MalformedOpen(
                    "optional parameter length mismatch",
                ));
            }
            Reader::new(rest)
        };
        while !p.is_empty() {
            let bad = || DecodeError::MalformedOpen("optional parameter overruns");
            let ty = p.u8().ok_or_else(bad)?;
            let len = if extended {
                p.u16().ok_or_else(bad)?
            } else {
                u16::from(p.u8().ok_or_else(bad)?)
            };
            let value = p.take(usize::from(len)).ok_or_else(bad)?;
            if ty != PARAM_CAPABILITIES {
                return Err(DecodeError::UnsupportedOptionalParameter(ty));
            }
            Capability::decode_all(value, &mut capabilities)?;
        }
        Ok(Self {
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
    }

    /// Encodes all capabilities in one Capabilities parameter, as GoBGP and BIRD do.
    pub(super) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(4);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut caps = Vec::with_capacity(64);
        for cap in &self.capabilities {
            let before = caps.len();
            cap.encode(&mut caps);
            // Stay within the one-octet lengths; our own OPENs are far below them.
            if caps.len() > 253 {
                caps.truncate(before);
                break;
            }
        }
        if caps.is_empty() {
            out.push(0);
        } else {
            out.push(caps.len() as u8 + 2);
            out.push(PARAM_CAPABILITIES);
            out.push(caps.len() as u8);
            out.extend_from_slice(&caps);
        }
    }
}
