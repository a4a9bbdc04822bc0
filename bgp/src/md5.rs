//! Socket options that need `unsafe`: TCP-MD5 signatures (RFC 2385, Linux `TCP_MD5SIG`) and
//! the Generalized TTL Security Mechanism (RFC 5082, `IP_TTL`/`IP_MINTTL` and their IPv6
//! counterparts).
//!
//! This is the crate's only unsafe code: `setsockopt(2)` has no safe wrapper for these options
//! in std, tokio or socket2. Each call passes a pointer to a value that lives for the duration
//! of the call and its exact size; the kernel copies it.
#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// `TCP_MD5SIG_MAXKEYLEN` from `linux/tcp.h`.
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` from `linux/tcp.h`: the address is a `sockaddr_storage` (128 bytes),
/// written here byte by byte, so the layout (offsets 0, 128, 129, 130, 132, 136) matches.
#[repr(C)]
struct TcpMd5Sig {
    tcpm_addr: [u8; 128],
    tcpm_flags: u8,
    tcpm_prefixlen: u8,
    tcpm_keylen: u16,
    tcpm_ifindex: libc::c_int,
    tcpm_key: [u8; MAX_KEY_LEN],
}

const _: () = assert!(std::mem::size_of::<TcpMd5Sig>() == 216);

fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `val` is a valid, initialised `T` borrowed for the whole call and `len` is its
    // exact size; setsockopt only reads that many bytes. The fd is owned by the caller's socket.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs (or with an empty key, removes) the TCP-MD5 key for `peer` on `sock`. On a
/// dual-stack IPv6 listener (`socket_v6`), IPv4 peers are keyed by their IPv4-mapped address.
pub fn set_md5(sock: &impl AsRawFd, socket_v6: bool, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP-MD5 key longer than 80 bytes",
        ));
    }
    let mut sig = TcpMd5Sig {
        tcpm_addr: [0; 128],
        tcpm_flags: 0,
        tcpm_prefixlen: 0,
        tcpm_keylen: key.len() as u16,
        tcpm_ifindex: 0,
        tcpm_key: [0; MAX_KEY_LEN],
    };
    sig.tcpm_key[..key.len()].copy_from_slice(key);
    let addr = match (peer, socket_v6) {
        (IpAddr::V4(a), true) => IpAddr::V6(a.to_ipv6_mapped()),
        (a, _) => a,
    };
    match addr {
        IpAddr::V4(a) => {
            // struct sockaddr_in: family (host order), port, address.
            sig.tcpm_addr[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            sig.tcpm_addr[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            // struct sockaddr_in6: family, port, flowinfo, address, scope id.
            sig.tcpm_addr[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            sig.tcpm_addr[8..24].copy_from_slice(&a.octets());
        }
    }
    setsockopt(sock, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// Sends with TTL/hop limit 255 only (for a listener shared by peers with and without GTSM:
/// the SYN-ACK must leave with 255; the minimum is then set per accepted connection).
pub fn set_send_ttl_255(sock: &impl AsRawFd, v6: bool) -> io::Result<()> {
    let ttl: libc::c_int = 255;
    if v6 {
        setsockopt(sock, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
        // A dual-stack listener answers IPv4 peers too.
        setsockopt(sock, libc::IPPROTO_IP, libc::IP_TTL, &ttl)
    } else {
        setsockopt(sock, libc::IPPROTO_IP, libc::IP_TTL, &ttl)
    }
}

/// GTSM (RFC 5082): send with TTL/hop limit 255 and drop anything that arrives with less than
/// 254 (one hop away at most).
pub fn set_ttl_security(sock: &impl AsRawFd, v6: bool) -> io::Result<()> {
    let ttl: libc::c_int = 255;
    let min: libc::c_int = 254;
    if v6 {
        setsockopt(sock, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
        setsockopt(sock, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &min)
    } else {
        setsockopt(sock, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
        setsockopt(sock, libc::IPPROTO_IP, libc::IP_MINTTL, &min)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn md5_and_gtsm_options_are_accepted_by_the_kernel() {
        let s4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_md5(&s4, false, "127.0.0.2".parse().unwrap(), b"secret").unwrap();
        // An empty key deletes it; deleting again finds nothing.
        set_md5(&s4, false, "127.0.0.2".parse().unwrap(), b"").unwrap();
        assert!(set_md5(&s4, false, "127.0.0.2".parse().unwrap(), b"").is_err());
        set_ttl_security(&s4, false).unwrap();
        set_send_ttl_255(&s4, false).unwrap();
        let too_long = [0u8; 81];
        assert_eq!(
            set_md5(&s4, false, "127.0.0.3".parse().unwrap(), &too_long)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
        if let Ok(s6) = std::net::TcpListener::bind("[::1]:0") {
            set_md5(&s6, true, "127.0.0.2".parse().unwrap(), b"secret").unwrap();
            set_md5(&s6, true, "::1".parse().unwrap(), b"secret").unwrap();
            set_ttl_security(&s6, true).unwrap();
        }
    }
}
