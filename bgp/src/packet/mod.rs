//! Pure BGP-4 message codec (RFC 4271 and extensions).
//!
//! No I/O here: [`Message::decode`] takes one whole message (header included) and returns a typed
//! [`Message`] or a [`DecodeError`] that maps onto the NOTIFICATION to send
//! (`Notification::from(&err)`) and carries the RFC 7606 [`Action`]. [`message_len`] is the framing
//! helper the session driver uses to cut messages out of the TCP byte stream.
//!
//! Decoding never panics on any input: every length is checked before it is used.

mod attrs;
mod capability;
mod error;
mod header;
mod keepalive;
pub(crate) mod nlri;
mod notification;
mod open;
mod update;

pub use attrs::{
    AsPath, AsSegment, Community, CommunityParseError, LargeCommunity, MpReach, MpUnreach, Origin,
    PathAttrs, RawAttribute,
};
pub use capability::{encode_capabilities, Afi, Capability, Family, GracefulRestart, Safi};
pub use error::{Action, DecodeError};
pub use header::{message_len, MessageType, HEADER_LEN, MAX_MESSAGE_LEN};
pub use keepalive::RouteRefresh;
pub use notification::{
    Notification, CEASE, CEASE_ADMIN_RESET, CEASE_ADMIN_SHUTDOWN, CEASE_BFD_DOWN, CEASE_COLLISION,
    CEASE_OUT_OF_RESOURCES, CEASE_PEER_DECONFIGURED, FSM_ERROR, HOLD_TIMER_EXPIRED,
};
pub use open::Open;
pub use update::Update;

/// What the decoder must know about the session (negotiated capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeCtx {
    /// Both sides advertised the 4-octet AS capability (RFC 6793): AS_PATH carries 4-octet ASNs.
    pub four_octet_as: bool,
}

impl Default for DecodeCtx {
    fn default() -> Self {
        Self {
            four_octet_as: true,
        }
    }
}

/// What the encoder must know about the session (negotiated capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeCtx {
    /// Both sides advertised the 4-octet AS capability. When false, AS_PATH is sent with 2-octet
    /// ASNs (AS_TRANS for the large ones) and the real path goes in AS4_PATH (RFC 6793 §4.2.2).
    pub four_octet_as: bool,
}

impl Default for EncodeCtx {
    fn default() -> Self {
        Self {
            four_octet_as: true,
        }
    }
}

/// One BGP message.
// UPDATE is the large variant and the common one; boxing it would add an allocation per
// message for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN (type 1).
    Open(Open),
    /// UPDATE (type 2).
    Update(Update),
    /// NOTIFICATION (type 3).
    Notification(Notification),
    /// KEEPALIVE (type 4).
    Keepalive,
    /// ROUTE-REFRESH (type 5, RFC 2918 / RFC 7313).
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// Decodes one whole message, header included. `buf` must be exactly one message (use
    /// [`message_len`] to frame).
    pub fn decode(buf: &[u8], ctx: &DecodeCtx) -> Result<Message, DecodeError> {
        let (ty, body) = header::decode(buf)?;
        match ty {
            MessageType::Open => Open::decode_body(body).map(Message::Open),
            MessageType::Update => Update::decode_body(body, ctx).map(Message::Update),
            MessageType::Notification => Notification::decode_body(body).map(Message::Notification),
            MessageType::Keepalive => Ok(Message::Keepalive),
            MessageType::RouteRefresh => RouteRefresh::decode_body(body).map(Message::RouteRefresh),
        }
    }

    /// Encodes the message, header included.
    pub fn encode(&self, ctx: &EncodeCtx) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(ctx, &mut out);
        out
    }

    /// Appends the encoded message to `out` (lets a writer batch many messages in one buffer).
    pub fn encode_into(&self, ctx: &EncodeCtx, out: &mut Vec<u8>) {
        let start = header::begin(out, self.message_type());
        match self {
            Message::Open(o) => o.encode_body(out),
            Message::Update(u) => u.encode_body(ctx, out),
            Message::Notification(n) => n.encode_body(out),
            Message::Keepalive => {}
            Message::RouteRefresh(r) => r.encode_body(out),
        }
        header::finish(out, start);
    }

    /// The message's type code.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }
}

/// Bounds-checked big-endian reader over a byte slice. Every method returns `None` past the end,
/// so hostile lengths become errors, never panics.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
}

#[cfg(test)]
mod tests;
