//! Pure codec of IPVS generic netlink messages: bytes in, `Result` out; no sockets.
//!
//! Reference: `include/uapi/linux/ip_vs.h` (family `"IPVS"`, version 1) and
//! `net/netfilter/ipvs/ip_vs_ctl.c`. One message on the wire:
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------------------------------------------------------+
//! |                      nlmsg_len (host order)                   |
//! +-------------------------------+-------------------------------+
//! |   nlmsg_type (family id)      |          nlmsg_flags          |
//! +-------------------------------+-------------------------------+
//! |                           nlmsg_seq                           |
//! +---------------------------------------------------------------+
//! |                           nlmsg_pid                           |
//! +---------------+---------------+-------------------------------+
//! |   genl cmd    |  genl version |           reserved            |
//! +---------------+---------------+-------------------------------+
//! | nla_len                       | nla_type (N=0x8000 nested)    |  IPVS_CMD_ATTR_SERVICE …
//! +-------------------------------+-------------------------------+
//! |  nested IPVS_SVC_ATTR_* / IPVS_DEST_ATTR_* attributes, each padded to 4 bytes …
//! ```
//!
//! Integers are host order except ports (`__be16`) and the IPv4 netmask (a `__be32` mask).
//! Every attribute enum keeps unknown attributes in an `Other` variant, so that parse →
//! emit gives back the same bytes and newer kernels do not break older code.

mod daemon;
mod dest;
mod frame;
mod info;
mod service;
mod stats;

pub use daemon::{DaemonAttr, DaemonState};
pub use dest::{dest_attrs, dest_from_attrs, dest_from_payload, dest_key_attrs, DestAttr};
pub use frame::{Frame, Frames};
pub use info::{Info, InfoAttr};
pub use service::{
    service_from_attrs, service_from_payload, service_key_attrs, service_spec_attrs, ServiceAttr,
};
pub use stats::StatsAttr;

use crate::error::DecodeError;

/// Length of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_F_NET_BYTEORDER: u16 = 0x4000;
pub(crate) const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x0001;
/// `NLM_F_MULTI`: part of a multipart (dump) answer.
pub const NLM_F_MULTI: u16 = 0x0002;
/// `NLM_F_ACK`: ask for an acknowledgement.
pub const NLM_F_ACK: u16 = 0x0004;
/// `NLM_F_DUMP` (`ROOT | MATCH`).
pub const NLM_F_DUMP: u16 = 0x0300;

/// `IPVS_GENL_VERSION`.
pub const IPVS_GENL_VERSION: u8 = 1;

const IPVS_CMD_NEW_SERVICE: u8 = 1;
const IPVS_CMD_SET_SERVICE: u8 = 2;
const IPVS_CMD_DEL_SERVICE: u8 = 3;
const IPVS_CMD_GET_SERVICE: u8 = 4;
const IPVS_CMD_NEW_DEST: u8 = 5;
const IPVS_CMD_SET_DEST: u8 = 6;
const IPVS_CMD_DEL_DEST: u8 = 7;
const IPVS_CMD_GET_DEST: u8 = 8;
const IPVS_CMD_NEW_DAEMON: u8 = 9;
const IPVS_CMD_DEL_DAEMON: u8 = 10;
const IPVS_CMD_GET_DAEMON: u8 = 11;
const IPVS_CMD_SET_CONFIG: u8 = 12;
const IPVS_CMD_GET_CONFIG: u8 = 13;
const IPVS_CMD_SET_INFO: u8 = 14;
const IPVS_CMD_GET_INFO: u8 = 15;
const IPVS_CMD_ZERO: u8 = 16;
const IPVS_CMD_FLUSH: u8 = 17;

pub(crate) const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub(crate) const IPVS_CMD_ATTR_DEST: u16 = 2;
pub(crate) const IPVS_CMD_ATTR_DAEMON: u16 = 3;
const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

/// Generic netlink command of the IPVS family (`IPVS_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cmd {
    /// Add a service; also the command of service dump replies.
    NewService,
    /// Edit a service.
    SetService,
    /// Delete a service.
    DelService,
    /// Get / dump services.
    GetService,
    /// Add a destination; also the command of destination dump replies.
    NewDest,
    /// Edit a destination.
    SetDest,
    /// Delete a destination.
    DelDest,
    /// Dump the destinations of a service.
    GetDest,
    /// Start a sync daemon; also the command of daemon dump replies.
    NewDaemon,
    /// Stop a sync daemon.
    DelDaemon,
    /// Dump the sync daemons.
    GetDaemon,
    /// Set timeouts.
    SetConfig,
    /// Get timeouts.
    GetConfig,
    /// The command of `GET_INFO` replies.
    SetInfo,
    /// Get version and connection table size.
    GetInfo,
    /// Zero counters.
    Zero,
    /// Delete every service.
    Flush,
    /// Anything else.
    Other(u8),
}

impl Cmd {
    /// The command number.
    pub const fn number(self) -> u8 {
        match self {
            Self::NewService => IPVS_CMD_NEW_SERVICE,
            Self::SetService => IPVS_CMD_SET_SERVICE,
            Self::DelService => IPVS_CMD_DEL_SERVICE,
            Self::GetService => IPVS_CMD_GET_SERVICE,
            Self::NewDest => IPVS_CMD_NEW_DEST,
            Self::SetDest => IPVS_CMD_SET_DEST,
            Self::DelDest => IPVS_CMD_DEL_DEST,
            Self::GetDest => IPVS_CMD_GET_DEST,
            Self::NewDaemon => IPVS_CMD_NEW_DAEMON,
            Self::DelDaemon => IPVS_CMD_DEL_DAEMON,
            Self::GetDaemon => IPVS_CMD_GET_DAEMON,
            Self::SetConfig => IPVS_CMD_SET_CONFIG,
            Self::GetConfig => IPVS_CMD_GET_CONFIG,
            Self::SetInfo => IPVS_CMD_SET_INFO,
            Self::GetInfo => IPVS_CMD_GET_INFO,
            Self::Zero => IPVS_CMD_ZERO,
            Self::Flush => IPVS_CMD_FLUSH,
            Self::Other(n) => n,
        }
    }
    /// From a command number.
    pub const fn from_number(n: u8) -> Self {
        match n {
            IPVS_CMD_NEW_SERVICE => Self::NewService,
            IPVS_CMD_SET_SERVICE => Self::SetService,
            IPVS_CMD_DEL_SERVICE => Self::DelService,
            IPVS_CMD_GET_SERVICE => Self::GetService,
            IPVS_CMD_NEW_DEST => Self::NewDest,
            IPVS_CMD_SET_DEST => Self::SetDest,
            IPVS_CMD_DEL_DEST => Self::DelDest,
            IPVS_CMD_GET_DEST => Self::GetDest,
            IPVS_CMD_NEW_DAEMON => Self::NewDaemon,
            IPVS_CMD_DEL_DAEMON => Self::DelDaemon,
            IPVS_CMD_GET_DAEMON => Self::GetDaemon,
            IPVS_CMD_SET_CONFIG => Self::SetConfig,
            IPVS_CMD_GET_CONFIG => Self::GetConfig,
            IPVS_CMD_SET_INFO => Self::SetInfo,
            IPVS_CMD_GET_INFO => Self::GetInfo,
            IPVS_CMD_ZERO => Self::Zero,
            IPVS_CMD_FLUSH => Self::Flush,
            n => Self::Other(n),
        }
    }
}

/// One typed netlink attribute family: how to parse it from and emit it to the wire.
pub trait Nla: Sized {
    /// The attribute type as written on the wire, flags included.
    fn raw_type(&self) -> u16;
    /// Appends the payload (without header or padding).
    fn emit_payload(&self, out: &mut Vec<u8>);
    /// Parses one attribute from its raw type (flags included) and payload.
    fn parse(raw_type: u16, payload: &[u8]) -> Result<Self, DecodeError>;

    /// Appends header, payload and padding.
    fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        self.emit_payload(out);
        let len = out.len() - start;
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        out[start..start + 2].copy_from_slice(&len16.to_ne_bytes());
        out[start + 2..start + 4].copy_from_slice(&self.raw_type().to_ne_bytes());
        pad4(out);
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes of a stream as `(raw type, payload)` pairs, borrowed from the buffer
/// (no copy, no allocation). A malformed header ends the stream with one `Err`.
#[derive(Debug, Clone)]
pub struct NlaIter<'a> {
    buf: &'a [u8],
}

impl<'a> NlaIter<'a> {
    /// Iterates the attributes packed in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
}

impl<'a> Iterator for NlaIter<'a> {
    type Item = Result<(u16, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.buf;
        if buf.is_empty() {
            return None;
        }
        if buf.len() < NLA_HDRLEN {
            self.buf = &[];
            return Some(Err(DecodeError::Truncated {
                what: "attribute header",
                need: NLA_HDRLEN,
                have: buf.len(),
            }));
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let raw_type = u16::from_ne_bytes([buf[2], buf[3]]);
        if len < NLA_HDRLEN || len > buf.len() {
            self.buf = &[];
            return Some(Err(DecodeError::Truncated {
                what: "attribute",
                need: len.max(NLA_HDRLEN),
                have: buf.len(),
            }));
        }
        self.buf = &buf[align4(len).min(buf.len())..];
        Some(Ok((raw_type, &buf[NLA_HDRLEN..len])))
    }
}

/// Parses an attribute stream into typed attributes.
pub fn parse_nlas<T: Nla>(buf: &[u8]) -> Result<Vec<T>, DecodeError> {
    NlaIter::new(buf)
        .map(|r| r.and_then(|(t, p)| T::parse(t, p)))
        .collect()
}

/// A nested attribute list, remembering whether the sender set `NLA_F_NESTED` (`ipvsadm`
/// does, the kernel's dump replies do not), so that parse → emit is byte-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nested<T> {
    /// The inner attributes, in wire order.
    pub attrs: Vec<T>,
    /// Whether the outer attribute type carries `NLA_F_NESTED`.
    pub flagged: bool,
}

impl<T: Nla> Nested<T> {
    /// A list flagged `NLA_F_NESTED`, as requests carry them.
    pub fn new(attrs: Vec<T>) -> Self {
        Self {
            attrs,
            flagged: true,
        }
    }
    fn raw_type(&self, kind: u16) -> u16 {
        if self.flagged {
            kind | NLA_F_NESTED
        } else {
            kind
        }
    }
    fn parse(raw_type: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            attrs: parse_nlas(payload)?,
            flagged: raw_type & NLA_F_NESTED != 0,
        })
    }
    fn emit_payload(&self, out: &mut Vec<u8>) {
        for attr in &self.attrs {
            attr.emit(out);
        }
    }
}

// Small payload readers shared by the attribute modules.
/// A `union nf_inet_addr` payload: 16 bytes, or 4 for IPv4.
fn addr_payload<'a>(attr: &'static str, p: &'a [u8]) -> Result<&'a [u8], DecodeError> {
    match p.len() {
        4 | 16 => Ok(p),
        len => Err(DecodeError::BadLength { attr, len }),
    }
}
fn read_u8(attr: &'static str, p: &[u8]) -> Result<u8, DecodeError> {
    match p {
        [b] => Ok(*b),
        _ => Err(DecodeError::BadLength { attr, len: p.len() }),
    }
}
fn read_u16(attr: &'static str, p: &[u8]) -> Result<u16, DecodeError> {
    let b: [u8; 2] = p
        .try_into()
        .map_err(|_| DecodeError::BadLength { attr, len: p.len() })?;
    Ok(u16::from_ne_bytes(b))
}
fn read_be16(attr: &'static str, p: &[u8]) -> Result<u16, DecodeError> {
    let b: [u8; 2] = p
        .try_into()
        .map_err(|_| DecodeError::BadLength { attr, len: p.len() })?;
    Ok(u16::from_be_bytes(b))
}
fn read_u32(attr: &'static str, p: &[u8]) -> Result<u32, DecodeError> {
    let b: [u8; 4] = p
        .try_into()
        .map_err(|_| DecodeError::BadLength { attr, len: p.len() })?;
    Ok(u32::from_ne_bytes(b))
}
fn read_u64(attr: &'static str, p: &[u8]) -> Result<u64, DecodeError> {
    let b: [u8; 8] = p
        .try_into()
        .map_err(|_| DecodeError::BadLength { attr, len: p.len() })?;
    Ok(u64::from_ne_bytes(b))
}
/// A NUL-terminated string; bytes after the first NUL are ignored, as the kernel does.
fn read_str(attr: &'static str, p: &[u8]) -> Result<String, DecodeError> {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8(p[..end].to_vec()).map_err(|_| DecodeError::BadValue {
        attr,
        reason: "not UTF-8".into(),
    })
}
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// A top-level attribute of an IPVS message (`IPVS_CMD_ATTR_*`, or `IPVS_INFO_ATTR_*` in
/// `GET_INFO` replies, whose numbers overlap).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsAttr {
    /// `IPVS_CMD_ATTR_SERVICE`.
    Service(Nested<ServiceAttr>),
    /// `IPVS_CMD_ATTR_DEST`.
    Dest(Nested<DestAttr>),
    /// `IPVS_CMD_ATTR_DAEMON`.
    Daemon(Nested<DaemonAttr>),
    /// `IPVS_CMD_ATTR_TIMEOUT_TCP`, seconds.
    TimeoutTcp(u32),
    /// `IPVS_CMD_ATTR_TIMEOUT_TCP_FIN`, seconds.
    TimeoutTcpFin(u32),
    /// `IPVS_CMD_ATTR_TIMEOUT_UDP`, seconds.
    TimeoutUdp(u32),
    /// An `IPVS_INFO_ATTR_*` of a `GET_INFO` reply.
    Info(InfoAttr),
    /// Anything else: raw type and payload.
    Other(u16, Vec<u8>),
}

impl IpvsAttr {
    fn raw_type(&self) -> u16 {
        match self {
            Self::Service(n) => n.raw_type(IPVS_CMD_ATTR_SERVICE),
            Self::Dest(n) => n.raw_type(IPVS_CMD_ATTR_DEST),
            Self::Daemon(n) => n.raw_type(IPVS_CMD_ATTR_DAEMON),
            Self::TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            Self::TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            Self::TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            Self::Info(i) => i.raw_type(),
            Self::Other(t, _) => *t,
        }
    }
    fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        match self {
            Self::Service(n) => n.emit_payload(out),
            Self::Dest(n) => n.emit_payload(out),
            Self::Daemon(n) => n.emit_payload(out),
            Self::TimeoutTcp(v) | Self::TimeoutTcpFin(v) | Self::TimeoutUdp(v) => {
                out.extend_from_slice(&v.to_ne_bytes())
            }
            Self::Info(i) => i.emit_payload(out),
            Self::Other(_, p) => out.extend_from_slice(p),
        }
        let len = u16::try_from(out.len() - start).unwrap_or(u16::MAX);
        out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        out[start + 2..start + 4].copy_from_slice(&self.raw_type().to_ne_bytes());
        pad4(out);
    }
    fn parse(cmd: Cmd, raw_type: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        if matches!(cmd, Cmd::SetInfo | Cmd::GetInfo) {
            return Ok(Self::Info(InfoAttr::parse(raw_type, payload)?));
        }
        Ok(match raw_type & NLA_TYPE_MASK {
            IPVS_CMD_ATTR_SERVICE => Self::Service(Nested::parse(raw_type, payload)?),
            IPVS_CMD_ATTR_DEST => Self::Dest(Nested::parse(raw_type, payload)?),
            IPVS_CMD_ATTR_DAEMON => Self::Daemon(Nested::parse(raw_type, payload)?),
            IPVS_CMD_ATTR_TIMEOUT_TCP => {
                Self::TimeoutTcp(read_u32("IPVS_CMD_ATTR_TIMEOUT_TCP", payload)?)
            }
            IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => {
                Self::TimeoutTcpFin(read_u32("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", payload)?)
            }
            IPVS_CMD_ATTR_TIMEOUT_UDP => {
                Self::TimeoutUdp(read_u32("IPVS_CMD_ATTR_TIMEOUT_UDP", payload)?)
            }
            _ => Self::Other(raw_type, payload.to_vec()),
        })
    }
}

/// The generic netlink part of an IPVS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// Command.
    pub cmd: Cmd,
    /// Family version (1).
    pub version: u8,
    /// The genl header's reserved field (0).
    pub reserved: u16,
    /// Attributes in wire order.
    pub attrs: Vec<IpvsAttr>,
}

impl IpvsMessage {
    /// A version-1 message.
    pub fn new(cmd: Cmd, attrs: Vec<IpvsAttr>) -> Self {
        Self {
            cmd,
            version: IPVS_GENL_VERSION,
            reserved: 0,
            attrs,
        }
    }
}

/// What a netlink message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// A message of the IPVS family.
    Ipvs(IpvsMessage),
    /// `NLMSG_ERROR`: `error` is 0 for an ACK, else a negative errno; `echo` is the
    /// request header (and body, unless capped) the kernel sends back.
    Error {
        /// 0 or `-errno`.
        error: i32,
        /// The echoed request bytes (and any extended ACK attributes).
        echo: Vec<u8>,
    },
    /// `NLMSG_DONE`: end of a dump.
    Done(Vec<u8>),
    /// `NLMSG_NOOP` or a message of another family.
    Other(Vec<u8>),
}

/// One netlink message: header fields and payload (`nlmsg_len` is computed on emit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `nlmsg_type`: the IPVS family id, or `NLMSG_ERROR`/`NLMSG_DONE`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid`.
    pub pid: u32,
    /// Payload.
    pub payload: Payload,
}

/// Length of the first message in `buf` from its header, if the header is complete.
pub fn message_len(buf: &[u8]) -> Option<usize> {
    let b: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    usize::try_from(u32::from_ne_bytes(b)).ok()
}

impl Message {
    /// A request of the IPVS family.
    pub fn request(family: u16, flags: u16, seq: u32, msg: IpvsMessage) -> Self {
        Self {
            kind: family,
            flags,
            seq,
            pid: 0,
            payload: Payload::Ipvs(msg),
        }
    }

    /// Decodes the first message of `buf`, whose IPVS family id is `family`; returns it
    /// and the number of bytes it took (aligned).
    pub fn decode(buf: &[u8], family: u16) -> Result<(Message, usize), DecodeError> {
        let Header {
            kind,
            flags,
            seq,
            pid,
            body,
            used,
        } = Header::read(buf)?;
        let payload = match kind {
            NLMSG_ERROR => {
                let error = read_i32_prefix(body)?;
                Payload::Error {
                    error,
                    echo: body[4..].to_vec(),
                }
            }
            NLMSG_DONE => Payload::Done(body.to_vec()),
            k if k == family && k > NLMSG_DONE => {
                let genl = Genl::read(body)?;
                let cmd = genl.cmd;
                let attrs = NlaIter::new(genl.attrs)
                    .map(|r| r.and_then(|(t, p)| IpvsAttr::parse(cmd, t, p)))
                    .collect::<Result<_, _>>()?;
                Payload::Ipvs(IpvsMessage {
                    cmd,
                    version: genl.version,
                    reserved: genl.reserved,
                    attrs,
                })
            }
            // NLMSG_NOOP, or another family's message.
            _ => Payload::Other(body.to_vec()),
        };
        Ok((
            Message {
                kind,
                flags,
                seq,
                pid,
                payload,
            },
            used,
        ))
    }

    /// Decodes every message of a datagram.
    pub fn decode_all(mut buf: &[u8], family: u16) -> Result<Vec<Message>, DecodeError> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (msg, used) = Message::decode(buf, family)?;
            out.push(msg);
            buf = &buf[used..];
        }
        Ok(out)
    }

    /// Appends the message, header first, to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.kind.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&self.pid.to_ne_bytes());
        match &self.payload {
            Payload::Ipvs(m) => {
                out.push(m.cmd.number());
                out.push(m.version);
                out.extend_from_slice(&m.reserved.to_ne_bytes());
                for attr in &m.attrs {
                    attr.emit(out);
                }
            }
            Payload::Error { error, echo } => {
                out.extend_from_slice(&error.to_ne_bytes());
                out.extend_from_slice(echo);
            }
            Payload::Done(b) | Payload::Other(b) => out.extend_from_slice(b),
        }
        let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        pad4(out);
    }

    /// The message as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit(&mut out);
        out
    }
}

/// The header of the first message of a datagram, and its body, borrowed.
struct Header<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    body: &'a [u8],
    /// Bytes the message takes, padding included.
    used: usize,
}

impl<'a> Header<'a> {
    fn read(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < NLMSG_HDRLEN {
            return Err(DecodeError::Truncated {
                what: "netlink header",
                need: NLMSG_HDRLEN,
                have: buf.len(),
            });
        }
        let len = message_len(buf).unwrap_or(0);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(DecodeError::Truncated {
                what: "netlink message",
                need: len.max(NLMSG_HDRLEN),
                have: buf.len(),
            });
        }
        Ok(Self {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            pid: u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]),
            body: &buf[NLMSG_HDRLEN..len],
            used: align4(len).min(buf.len()),
        })
    }
}

/// The generic netlink header of a message body, and the attributes after it, borrowed.
struct Genl<'a> {
    cmd: Cmd,
    version: u8,
    reserved: u16,
    attrs: &'a [u8],
}

impl<'a> Genl<'a> {
    fn read(body: &'a [u8]) -> Result<Self, DecodeError> {
        match body {
            [cmd, version, r0, r1, attrs @ ..] => Ok(Self {
                cmd: Cmd::from_number(*cmd),
                version: *version,
                reserved: u16::from_ne_bytes([*r0, *r1]),
                attrs,
            }),
            _ => Err(DecodeError::Truncated {
                what: "genl header",
                need: GENL_HDRLEN,
                have: body.len(),
            }),
        }
    }
}

fn read_i32_prefix(body: &[u8]) -> Result<i32, DecodeError> {
    let b: [u8; 4] =
        body.get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(DecodeError::Truncated {
                what: "nlmsgerr",
                need: 4,
                have: body.len(),
            })?;
    Ok(i32::from_ne_bytes(b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn truncated_inputs_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            &[0x10, 0, 0, 0][..],
            &[0xff, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
        ] {
            assert!(Message::decode(bytes, 0x20).is_err());
        }
        // A message whose attribute claims more bytes than there are.
        let mut m = Message::request(
            0x20,
            NLM_F_REQUEST,
            1,
            IpvsMessage::new(Cmd::Flush, vec![IpvsAttr::TimeoutTcp(5)]),
        )
        .to_bytes();
        m[20] = 0x40;
        assert!(matches!(
            Message::decode(&m, 0x20),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_attributes_survive_round_trip() {
        let msg = IpvsMessage::new(
            Cmd::Other(99),
            vec![
                IpvsAttr::Other(42, vec![1, 2, 3]),
                IpvsAttr::TimeoutUdp(300),
            ],
        );
        let bytes = Message::request(0x20, NLM_F_REQUEST | NLM_F_ACK, 7, msg).to_bytes();
        let (back, used) = Message::decode(&bytes, 0x20).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back.to_bytes(), bytes);
    }
}
