//! KEEPALIVE (RFC 4271 §4.4: a bare 19-byte header) and ROUTE-REFRESH (RFC 2918, RFC 7313).
//!
//! ```text
//! ROUTE-REFRESH body:
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |              AFI              | Subtype (7313)|     SAFI      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use super::{DecodeError, Reader};

/// A ROUTE-REFRESH message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    /// Address family identifier.
    pub afi: u16,
    /// 0 = normal request, 1 = BoRR, 2 = EoRR (RFC 7313); reserved in RFC 2918.
    pub subtype: u8,
    /// Subsequent address family identifier.
    pub safi: u8,
}

impl RouteRefresh {
    pub(super) fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        if body.len() != 4 {
            return Err(DecodeError::RouteRefreshLength(body.to_vec()));
        }
        let mut r = Reader::new(body);
        let err = || DecodeError::RouteRefreshLength(body.to_vec());
        Ok(Self {
            afi: r.u16().ok_or_else(err)?,
            subtype: r.u8().ok_or_else(err)?,
            safi: r.u8().ok_or_else(err)?,
        })
    }

    pub(super) fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.afi.to_be_bytes());
        out.push(self.subtype);
        out.push(self.safi);
    }
}
