//! NOTIFICATION (RFC 4271 §4.5) with the RFC 8203/9003 shutdown communication.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Error code    | Error subcode |   Data (variable)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Cease / Administrative Shutdown (6/2) or Reset (6/4) data (RFC 9003):
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Length        | Shutdown Communication (UTF-8, Length bytes)  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::fmt;

use super::{DecodeError, Reader};

/// Error code 4: Hold Timer Expired.
pub const HOLD_TIMER_EXPIRED: u8 = 4;
/// Error code 5: Finite State Machine Error.
pub const FSM_ERROR: u8 = 5;
/// Error code 6: Cease.
pub const CEASE: u8 = 6;
/// Cease subcode 2: Administrative Shutdown (RFC 4486).
pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
/// Cease subcode 3: Peer De-configured.
pub const CEASE_PEER_DECONFIGURED: u8 = 3;
/// Cease subcode 4: Administrative Reset.
pub const CEASE_ADMIN_RESET: u8 = 4;
/// Cease subcode 7: Connection Collision Resolution.
pub const CEASE_COLLISION: u8 = 7;
/// Cease subcode 8: Out of Resources.
pub const CEASE_OUT_OF_RESOURCES: u8 = 8;
/// Cease subcode 10: BFD Down (RFC 9384).
pub const CEASE_BFD_DOWN: u8 = 10;

/// A NOTIFICATION message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data, meaning depends on code/subcode.
    pub data: Vec<u8>,
}

impl Notification {
    /// Builds a NOTIFICATION with no data.
    pub fn new(code: u8, subcode: u8) -> Self {
        Self {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// Cease / Administrative Shutdown with a shutdown communication (RFC 8203/9003). The text is
    /// cut at a character boundary to the 255 bytes the length octet allows.
    pub fn admin_shutdown(reason: &str) -> Self {
        Self::cease_with_text(CEASE_ADMIN_SHUTDOWN, reason)
    }

    /// Cease with `subcode` and a shutdown communication text.
    pub fn cease_with_text(subcode: u8, reason: &str) -> Self {
        let mut end = reason.len().min(255);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let text = &reason.as_bytes()[..end];
        let mut data = Vec::with_capacity(text.len() + 1);
        data.push(text.len() as u8);
        data.extend_from_slice(text);
        Self {
            code: CEASE,
            subcode,
            data,
        }
    }

    /// The RFC 8203 shutdown communication, if this is a Cease 6/2 or 6/4 that carries valid text.
    pub fn shutdown_message(&self) -> Option<&str> {
        if self.code != CEASE
            || !(self.subcode == CEASE_ADMIN_SHUTDOWN || self.subcode == CEASE_ADMIN_RESET)
        {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        std::str::from_utf8(text).ok()
    }

    pub(super) fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let code = r.u8().ok_or(DecodeError::BadNotification)?;
        let subcode = r.u8().ok_or(DecodeError::BadNotification)?;
        Ok(Self {
            code,
            subcode,
            data: r.rest().to_vec(),
        })
    }

    pub(super) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.code);
        out.push(self.subcode);
        // Keep the message within 4096 bytes whatever the caller put in `data`.
        let room = super::MAX_MESSAGE_LEN - super::HEADER_LEN - 2;
        out.extend_from_slice(&self.data[..self.data.len().min(room)]);
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match (self.code, self.subcode) {
            (1, _) => "message header error",
            (2, _) => "OPEN message error",
            (3, _) => "UPDATE message error",
            (4, _) => "hold timer expired",
            (5, _) => "finite state machine error",
            (6, 1) => "cease: maximum prefixes reached",
            (6, 2) => "cease: administrative shutdown",
            (6, 3) => "cease: peer de-configured",
            (6, 4) => "cease: administrative reset",
            (6, 5) => "cease: connection rejected",
            (6, 6) => "cease: other configuration change",
            (6, 7) => "cease: connection collision resolution",
            (6, 8) => "cease: out of resources",
            (6, 9) => "cease: hard reset",
            (6, 10) => "cease: BFD down",
            (6, _) => "cease",
            (7, _) => "ROUTE-REFRESH message error",
            _ => "unknown error",
        };
        write!(f, "{}/{} {name}", self.code, self.subcode)?;
        if let Some(msg) = self.shutdown_message() {
            write!(f, ": {msg:?}")?;
        }
        Ok(())
    }
}
