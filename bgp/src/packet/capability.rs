//! Capabilities advertised in OPEN (RFC 5492).
//!
//! ```text
//! +------------------------------+
//! | Capability Code (1 octet)    |
//! +------------------------------+
//! | Capability Length (1 octet)  |
//! +------------------------------+
//! | Capability Value (variable)  |
//! +------------------------------+
//!
//! Multiprotocol (1, RFC 4760):   AFI (2) | Reserved (1) | SAFI (1)
//! Route refresh (2, RFC 2918):   empty
//! Graceful restart (64, RFC 4724): R|B|rsv (4 bits) Restart Time (12 bits),
//!                                  then per family AFI (2) | SAFI (1) | F bit + flags (1)
//! 4-octet AS (65, RFC 6793):     AS number (4)
//! Enhanced route refresh (70, RFC 7313): empty
//! ```

use super::{DecodeError, Reader};

/// Address family identifiers we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Afi {
    /// 1
    Ipv4,
    /// 2
    Ipv6,
}

impl Afi {
    /// Wire value.
    pub fn code(self) -> u16 {
        match self {
            Afi::Ipv4 => 1,
            Afi::Ipv6 => 2,
        }
    }
}

/// Subsequent address family identifiers we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Safi {
    /// 1
    Unicast,
}

impl Safi {
    /// Wire value.
    pub fn code(self) -> u8 {
        match self {
            Safi::Unicast => 1,
        }
    }
}

/// An (AFI, SAFI) pair as it appears on the wire (unknown values kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    /// AFI.
    pub afi: u16,
    /// SAFI.
    pub safi: u8,
}

impl Family {
    /// IPv4 unicast.
    pub const IPV4_UNICAST: Family = Family { afi: 1, safi: 1 };
    /// IPv6 unicast.
    pub const IPV6_UNICAST: Family = Family { afi: 2, safi: 1 };
}

/// Graceful restart capability value (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The R bit: the sender has restarted.
    pub restart_state: bool,
    /// The N bit (RFC 8538) is ignored; other flag bits are kept here, in the top 4 bits.
    pub flags: u8,
    /// Restart time in seconds (12 bits).
    pub restart_time: u16,
    /// Families with their forwarding-state-preserved flag.
    pub families: Vec<(Family, bool)>,
}

/// One capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions (1).
    Multiprotocol(Family),
    /// Route refresh (2).
    RouteRefresh,
    /// Graceful restart (64).
    GracefulRestart(GracefulRestart),
    /// 4-octet AS number (65).
    FourOctetAs(u32),
    /// Enhanced route refresh (70).
    EnhancedRouteRefresh,
    /// Anything else, kept verbatim.
    Unknown {
        /// Capability code.
        code: u8,
        /// Value.
        value: Vec<u8>,
    },
}

const MP: u8 = 1;
const ROUTE_REFRESH: u8 = 2;
const GRACEFUL_RESTART: u8 = 64;
const FOUR_OCTET_AS: u8 = 65;
const ENHANCED_ROUTE_REFRESH: u8 = 70;

impl Capability {
    /// Decodes the capabilities inside one Capabilities optional parameter value.
    pub(super) fn decode_all(buf: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let bad = || DecodeError::MalformedOpen("capability overruns its parameter");
            let code = r.u8().ok_or_else(bad)?;
            let len = r.u8().ok_or_else(bad)?;
            let value = r.take(usize::from(len)).ok_or_else(bad)?;
            out.push(Self::decode_one(code, value)?);
        }
        Ok(())
    }

    fn decode_one(code: u8, value: &[u8]) -> Result<Capability, DecodeError> {
        let bad_len = || DecodeError::MalformedOpen("capability has a bad length");
        let mut r = Reader::new(value);
        Ok(match code {
            MP => {
                if value.len() != 4 {
                    return Err(bad_len());
                }
                let afi = r.u16().ok_or_else(bad_len)?;
                let _reserved = r.u8();
                let safi = r.u8().ok_or_else(bad_len)?;
                Capability::Multiprotocol(Family { afi, safi })
            }
            ROUTE_REFRESH if value.is_empty() => Capability::RouteRefresh,
            ENHANCED_ROUTE_REFRESH if value.is_empty() => Capability::EnhancedRouteRefresh,
            ROUTE_REFRESH | ENHANCED_ROUTE_REFRESH => return Err(bad_len()),
            FOUR_OCTET_AS => {
                if value.len() != 4 {
                    return Err(bad_len());
                }
                Capability::FourOctetAs(r.u32().ok_or_else(bad_len)?)
            }
            GRACEFUL_RESTART => {
                if value.len() < 2 || !(value.len() - 2).is_multiple_of(4) {
                    return Err(bad_len());
                }
                let word = r.u16().ok_or_else(bad_len)?;
                let mut families = Vec::new();
                while !r.is_empty() {
                    let afi = r.u16().ok_or_else(bad_len)?;
                    let safi = r.u8().ok_or_else(bad_len)?;
                    let f = r.u8().ok_or_else(bad_len)?;
                    families.push((Family { afi, safi }, f & 0x80 != 0));
                }
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: word & 0x8000 != 0,
                    flags: ((word >> 12) & 0x7) as u8,
                    restart_time: word & 0x0fff,
                    families,
                })
            }
            _ => Capability::Unknown {
                code,
                value: value.to_vec(),
            },
        })
    }

    /// Appends code, length and value.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Capability::Multiprotocol(f) => {
                out.extend_from_slice(&[MP, 4]);
                out.extend_from_slice(&f.afi.to_be_bytes());
                out.extend_from_slice(&[0, f.safi]);
            }
            Capability::RouteRefresh => out.extend_from_slice(&[ROUTE_REFRESH, 0]),
            Capability::EnhancedRouteRefresh => out.extend_from_slice(&[ENHANCED_ROUTE_REFRESH, 0]),
            Capability::FourOctetAs(asn) => {
                out.extend_from_slice(&[FOUR_OCTET_AS, 4]);
                out.extend_from_slice(&asn.to_be_bytes());
            }
            Capability::GracefulRestart(gr) => {
                // At most 63 families fit in the one-octet length; we never send more than two.
                let fams = &gr.families[..gr.families.len().min(63)];
                out.extend_from_slice(&[GRACEFUL_RESTART, (2 + 4 * fams.len()) as u8]);
                let word = (u16::from(gr.restart_state) << 15)
                    | (u16::from(gr.flags & 0x7) << 12)
                    | (gr.restart_time & 0x0fff);
                out.extend_from_slice(&word.to_be_bytes());
                for (f, fwd) in fams {
                    out.extend_from_slice(&f.afi.to_be_bytes());
                    out.push(f.safi);
                    out.push(if *fwd { 0x80 } else { 0 });
                }
            }
            Capability::Unknown { code, value } => {
                let v = &value[..value.len().min(255)];
                out.extend_from_slice(&[*code, v.len() as u8]);
                out.extend_from_slice(v);
            }
        }
    }
}

/// Encodes capabilities back to back (the data of an OPEN error 2/7, RFC 5492 §5).
pub fn encode_capabilities(caps: &[Capability]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in caps {
        c.encode(&mut out);
    }
    out
}
