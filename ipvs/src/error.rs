//! Error types: model validation, wire decoding, and kernel/socket failures.

use std::fmt;
use std::io;

/// A value of the model is not acceptable (bad name, bad id, out of range).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A service flag name that is neither known nor hex.
    #[error("unknown service flag {0:?}")]
    UnknownFlag(String),
    /// A canonical id that does not parse.
    #[error(
        "bad service id {0:?}: expected like tcp:192.0.2.1:80, udp:[2001:db8::1]:53 or fwmark:v4:7"
    )]
    BadId(String),
    /// A setting the kernel would refuse.
    #[error("{id}: {reason}")]
    Invalid {
        /// Canonical id of the object.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// Bytes from the kernel (or a capture) that do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than a header or length field says.
    #[error("{what}: truncated, need {need} bytes, have {have}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// An attribute whose payload has the wrong size for its type.
    #[error("attribute {attr}: bad length {len}")]
    BadLength {
        /// Attribute name as in `linux/ip_vs.h`.
        attr: &'static str,
        /// Payload length seen.
        len: usize,
    },
    /// A mandatory attribute is absent.
    #[error("{what}: missing attribute {attr}")]
    Missing {
        /// The object being decoded.
        what: &'static str,
        /// Attribute name as in `linux/ip_vs.h`.
        attr: &'static str,
    },
    /// An attribute has a value the model cannot hold.
    #[error("attribute {attr}: {reason}")]
    BadValue {
        /// Attribute name as in `linux/ip_vs.h`.
        attr: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// An errno from the kernel, e.g. 17 (`EEXIST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(pub i32);

impl Errno {
    /// `EEXIST`: the service or destination already exists.
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    /// `ESRCH`: no such service.
    pub const ESRCH: Errno = Errno(libc::ESRCH);
    /// `ENOENT`: no such scheduler / persistence engine / destination.
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    /// `EINVAL`: bad arguments.
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// `ENOBUFS`: the socket's receive queue overflowed (answers were lost).
    pub const ENOBUFS: Errno = Errno(libc::ENOBUFS);
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = io::Error::from_raw_os_error(self.0).to_string();
        // io::Error appends " (os error N)"; keep the words, state the number once.
        let words = text.split(" (os error").next().unwrap_or(&text);
        write!(f, "{words} (errno {})", self.0)
    }
}

/// What was being done when the kernel or socket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// `IPVS_CMD_NEW_SERVICE`.
    AddService,
    /// `IPVS_CMD_SET_SERVICE`.
    EditService,
    /// `IPVS_CMD_DEL_SERVICE`.
    DelService,
    /// `IPVS_CMD_NEW_DEST`.
    AddDest,
    /// `IPVS_CMD_SET_DEST`.
    EditDest,
    /// `IPVS_CMD_DEL_DEST`.
    DelDest,
    /// `IPVS_CMD_FLUSH`.
    Flush,
    /// `IPVS_CMD_GET_SERVICE`/`GET_DEST` dumps.
    Dump,
    /// `IPVS_CMD_GET_INFO`.
    Info,
    /// `IPVS_CMD_GET_DAEMON`.
    Daemons,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AddService => "add service",
            Self::EditService => "edit service",
            Self::DelService => "delete service",
            Self::AddDest => "add destination",
            Self::EditDest => "edit destination",
            Self::DelDest => "delete destination",
            Self::Flush => "flush",
            Self::Dump => "dump",
            Self::Info => "get info",
            Self::Daemons => "get daemons",
        })
    }
}

/// Everything that can go wrong talking to the kernel's IPVS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpvsError {
    /// The kernel has no `IPVS` generic netlink family: `ip_vs` is not loaded.
    #[error("generic netlink family IPVS not found: modprobe ip_vs, or set ipvs = false")]
    FamilyNotFound,
    /// The netlink socket failed.
    #[error("netlink socket: {context}: {source}")]
    Socket {
        /// What the socket was doing.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused an operation.
    #[error("{op} {id}: {errno}")]
    Kernel {
        /// The operation.
        op: OpKind,
        /// Canonical id of the object (service or destination), empty for table-wide ops.
        id: String,
        /// The kernel's errno.
        errno: Errno,
    },
    /// No answer came for a request (lost to a receive-queue overflow or a protocol error).
    #[error("{op} {id}: no answer from the kernel")]
    NoAnswer {
        /// The operation.
        op: OpKind,
        /// Canonical id of the object.
        id: String,
    },
    /// A reply did not decode.
    #[error("{op}: bad reply: {source}")]
    Decode {
        /// The operation.
        op: OpKind,
        /// What did not decode.
        #[source]
        source: DecodeError,
    },
    /// The object is not acceptable to the kernel, caught before sending.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A dump that spans several parts read differently every time: the table (of this
    /// or, for services, of any network namespace) kept changing while it was read.
    #[error("{op} {id}: the IPVS table kept changing during {tries} dumps; try again")]
    Unsettled {
        /// The operation.
        op: OpKind,
        /// The service whose destinations were dumped, or empty for the service list.
        id: String,
        /// Dumps made.
        tries: usize,
    },
}

impl IpvsError {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn kernel_error_text_names_op_object_and_errno() {
        let e = IpvsError::Kernel {
            op: OpKind::AddService,
            id: "tcp:192.0.2.1:80".into(),
            errno: Errno::EEXIST,
        };
        assert_eq!(
            e.to_string(),
            "add service tcp:192.0.2.1:80: File exists (errno 17)"
        );
        assert_eq!(e.errno(), Some(Errno::EEXIST));
    }
}
