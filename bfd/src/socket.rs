//! UDP sockets of RFC 5881 single-hop BFD, through `nix`'s safe wrappers: IPv6 sockets bound
//! v6-only (so `[::]:3784` and `0.0.0.0:3784` coexist), TTL / Hop Limit 255 on every packet
//! sent (§5), and the received TTL / Hop Limit read from `recvmsg` control messages
//! (`IP_RECVTTL`, `IPV6_RECVHOPLIMIT`) so packets that crossed a router can be dropped.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn,
    SockaddrIn6, SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The TTL / Hop Limit of every packet sent, and the only one accepted (RFC 5881 §5).
pub const TTL: u8 = 255;

fn io_err(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

/// A non-blocking UDP socket bound to `addr` (IPv6: v6-only), registered with tokio.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io_err)?;
    match addr {
        SocketAddr::V4(a) => {
            socket::setsockopt(&fd, sockopt::Ipv4Ttl, &i32::from(TTL)).map_err(io_err)?;
            socket::setsockopt(&fd, sockopt::Ipv4RecvTtl, &true).map_err(io_err)?;
            socket::bind(fd.as_raw_fd(), &SockaddrIn::from(a)).map_err(io_err)?;
        }
        SocketAddr::V6(a) => {
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(io_err)?;
            socket::setsockopt(&fd, sockopt::Ipv6Ttl, &i32::from(TTL)).map_err(io_err)?;
            socket::setsockopt(&fd, sockopt::Ipv6RecvHopLimit, &true).map_err(io_err)?;
            socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(a)).map_err(io_err)?;
        }
    }
    UdpSocket::from_std(std::net::UdpSocket::from(fd))
}

/// One received datagram's facts besides its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Payload length (the buffer holds the first `len.min(buf.len())` bytes).
    pub len: usize,
    /// Source address and port.
    pub from: SocketAddr,
    /// TTL or Hop Limit, when the kernel gave it.
    pub ttl: Option<u8>,
}

/// Receives one datagram with its TTL / Hop Limit if one is waiting (`WouldBlock` if not).
pub(crate) fn try_recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let mut cmsg = nix::cmsg_space!(i32);
    sock.try_io(Interest::READABLE, || {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = socket::recvmsg::<SockaddrStorage>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io_err)?;
        let mut ttl = None;
        for c in msg.cmsgs().map_err(io_err)? {
            match c {
                ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                    ttl = u8::try_from(t).ok();
                }
                _ => {}
            }
        }
        let from = msg
            .address
            .as_ref()
            .and_then(sockaddr)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no source address"))?;
        Ok(Received {
            len: msg.bytes,
            from,
            ttl,
        })
    })
}

fn sockaddr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*a)));
    }
    s.as_sockaddr_in6()
        .map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
}
