//! A borrowed view of a datagram for dumps: each message's sequence number and what it
//! carries, with the attributes of IPVS messages left as an [`NlaIter`] over the receive
//! buffer. [`Message::decode_all`](super::Message::decode_all) builds owned, typed
//! messages (byte-exact both ways, for tests and tools); a dump of 100,000 destinations
//! reads them through this view and [`dest_from_payload`](super::dest_from_payload)
//! instead, without an allocation per attribute.

use super::{read_i32_prefix, Cmd, Genl, Header, NlaIter, NLMSG_DONE, NLMSG_ERROR};
use crate::error::DecodeError;

/// What one message of a datagram carries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Frame<'a> {
    /// An IPVS message: its command and top-level attributes (raw type, payload).
    Ipvs {
        /// The genl command.
        cmd: Cmd,
        /// The `IPVS_CMD_ATTR_*` attributes.
        attrs: NlaIter<'a>,
    },
    /// `NLMSG_ERROR`: 0 for an ACK, else a negative errno.
    Error(i32),
    /// `NLMSG_DONE`: the end of a dump.
    Done,
    /// `NLMSG_NOOP` or another family's message.
    Other,
}

/// The messages of a datagram as `(nlmsg_seq, Frame)`; a malformed header ends it with
/// one `Err`, as [`Message::decode_all`](super::Message::decode_all) fails on it.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    buf: &'a [u8],
    family: u16,
}

impl<'a> Frames<'a> {
    /// The messages of `buf`, whose IPVS family id is `family`.
    pub fn new(buf: &'a [u8], family: u16) -> Self {
        Self { buf, family }
    }

    fn frame(&self, kind: u16, body: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        Ok(match kind {
            NLMSG_ERROR => Frame::Error(read_i32_prefix(body)?),
            NLMSG_DONE => Frame::Done,
            k if k == self.family && k > NLMSG_DONE => {
                let genl = Genl::read(body)?;
                Frame::Ipvs {
                    cmd: genl.cmd,
                    attrs: NlaIter::new(genl.attrs),
                }
            }
            _ => Frame::Other,
        })
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<(u32, Frame<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let item = Header::read(self.buf).and_then(|h| {
            self.buf = &self.buf[h.used..];
            Ok((h.seq, self.frame(h.kind, h.body)?))
        });
        if item.is_err() {
            self.buf = &[];
        }
        Some(item)
    }
}
