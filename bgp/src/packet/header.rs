//! Message header and framing (RFC 4271 §4.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                         Marker (16 x 0xff)                    +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Length               |      Type     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use super::DecodeError;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended-message capability (RFC 8654, not negotiated here).
pub const MAX_MESSAGE_LEN: usize = 4096;

/// BGP message type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 1
    Open,
    /// 2
    Update,
    /// 3
    Notification,
    /// 4
    Keepalive,
    /// 5 (RFC 2918)
    RouteRefresh,
}

impl MessageType {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            MessageType::Open => 1,
            MessageType::Update => 2,
            MessageType::Notification => 3,
            MessageType::Keepalive => 4,
            MessageType::RouteRefresh => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => MessageType::Open,
            2 => MessageType::Update,
            3 => MessageType::Notification,
            4 => MessageType::Keepalive,
            5 => MessageType::RouteRefresh,
            _ => return None,
        })
    }

    /// Smallest and largest valid total length for this type (RFC 4271 §6.1, RFC 2918 §3).
    fn length_bounds(self) -> (usize, usize) {
        match self {
            MessageType::Open => (29, MAX_MESSAGE_LEN),
            MessageType::Update => (23, MAX_MESSAGE_LEN),
            MessageType::Notification => (21, MAX_MESSAGE_LEN),
            MessageType::Keepalive => (HEADER_LEN, HEADER_LEN),
            // A wrong ROUTE-REFRESH length is its own error (RFC 7313 §5), checked in its decoder.
            MessageType::RouteRefresh => (HEADER_LEN, MAX_MESSAGE_LEN),
        }
    }
}

/// Framing helper: the length of the first message in `buf`, or `None` while fewer than 19 bytes
/// have arrived. The length is returned as read (clamped to at least the header) so a bad value
/// surfaces from [`super::Message::decode`] as the right error instead of stalling the reader.
pub fn message_len(buf: &[u8]) -> Option<usize> {
    let hdr = buf.get(..HEADER_LEN)?;
    let len = usize::from(u16::from_be_bytes([hdr[16], hdr[17]]));
    Some(len.clamp(HEADER_LEN, MAX_MESSAGE_LEN))
}

/// Checks the header and returns the type and the body.
pub(super) fn decode(buf: &[u8]) -> Result<(MessageType, &[u8]), DecodeError> {
    let Some(hdr) = buf.get(..HEADER_LEN) else {
        return Err(DecodeError::BadMessageLength(buf.len().min(0xffff) as u16));
    };
    if hdr[..16].iter().any(|&b| b != 0xff) {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    let len = u16::from_be_bytes([hdr[16], hdr[17]]);
    let ty = MessageType::from_code(hdr[18]).ok_or(DecodeError::BadMessageType(hdr[18]))?;
    let (min, max) = ty.length_bounds();
    let l = usize::from(len);
    if l < min || l > max || l != buf.len() {
        return Err(DecodeError::BadMessageLength(len));
    }
    Ok((ty, &buf[HEADER_LEN..]))
}

/// Writes a header with a placeholder length; returns where the message starts.
pub(super) fn begin(out: &mut Vec<u8>, ty: MessageType) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&[0, 0, ty.code()]);
    start
}

/// Fills in the length of the message that started at `start`.
pub(super) fn finish(out: &mut [u8], start: usize) {
    let len = out.len().saturating_sub(start);
    debug_assert!(len <= MAX_MESSAGE_LEN, "encoded BGP message of {len} bytes");
    let len = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(slot) = out.get_mut(start + 16..start + 18) {
        slot.copy_from_slice(&len);
    }
}
