//! Prefix encoding shared by NLRI, withdrawn routes and MP_(UN)REACH_NLRI (RFC 4271 §4.3).
//!
//! ```text
//! +---------------------------+
//! |   Length (1 octet, bits)  |
//! +---------------------------+
//! |   Prefix (ceil(Length/8)) |
//! +---------------------------+
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::Reader;

/// Bytes a prefix of `len` bits takes on the wire.
pub(crate) fn prefix_wire_len(len: u8) -> usize {
    1 + usize::from(len).div_ceil(8)
}

/// Decodes IPv4 prefixes filling `buf` exactly; `None` on a bad length or overrun.
pub(crate) fn decode_v4(buf: &[u8], out: &mut Vec<Ipv4Net>) -> Option<()> {
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let len = r.u8()?;
        if len > 32 {
            return None;
        }
        let bytes = r.take(usize::from(len).div_ceil(8))?;
        let mut a = [0u8; 4];
        a.get_mut(..bytes.len())?.copy_from_slice(bytes);
        // Bits past the prefix length are ignored (masked), as BIRD and GoBGP do.
        out.push(Ipv4Net::new(Ipv4Addr::from(a), len).ok()?.trunc());
    }
    Some(())
}

/// Decodes IPv6 prefixes filling `buf` exactly; `None` on a bad length or overrun.
pub(crate) fn decode_v6(buf: &[u8], out: &mut Vec<Ipv6Net>) -> Option<()> {
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let len = r.u8()?;
        if len > 128 {
            return None;
        }
        let bytes = r.take(usize::from(len).div_ceil(8))?;
        let mut a = [0u8; 16];
        a.get_mut(..bytes.len())?.copy_from_slice(bytes);
        out.push(Ipv6Net::new(Ipv6Addr::from(a), len).ok()?.trunc());
    }
    Some(())
}

/// Appends one IPv4 prefix.
pub(crate) fn encode_v4(p: &Ipv4Net, out: &mut Vec<u8>) {
    let len = p.prefix_len();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    out.extend_from_slice(&p.network().octets()[..n]);
}

/// Appends one IPv6 prefix.
pub(crate) fn encode_v6(p: &Ipv6Net, out: &mut Vec<u8>) {
    let len = p.prefix_len();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    out.extend_from_slice(&p.network().octets()[..n]);
}
