//! The listening socket: incoming connections handed to the peer task of their address.
//!
//! Opened when the speaker has a `listen` address, or when the first passive peer is added
//! (`[::]:179`). TCP-MD5 keys (RFC 2385) and GTSM's outgoing TTL 255 (RFC 5082) are set on
//! it per peer, so the kernel already answers a keyed peer's SYN.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::PeerConfig;
use crate::error::BgpError;
use crate::md5;
use crate::session::PeerCmd;
use crate::shared::lock;

/// Peer tasks by neighbor address, for the accept loop.
pub(crate) type ByAddr = Arc<Mutex<HashMap<IpAddr, mpsc::UnboundedSender<PeerCmd>>>>;

/// Where the listener goes when no `listen` address is configured.
pub(crate) const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 179);

/// An open listener and its accept loop (stopped on drop).
pub(crate) struct Listener {
    socket: Arc<TcpListener>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Binds `addr`, sets the socket options of every peer in `peers`, and starts accepting
    /// on `runtime`.
    pub(crate) fn open<'a>(
        addr: SocketAddr,
        runtime: &tokio::runtime::Handle,
        by_addr: ByAddr,
        peers: impl IntoIterator<Item = &'a PeerConfig>,
    ) -> Result<Listener, BgpError> {
        let _rt = runtime.enter();
        let err = |source| BgpError::Listen { addr, source };
        let sock = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(err)?;
        sock.set_reuseaddr(true).map_err(err)?;
        sock.bind(addr).map_err(err)?;
        let socket = Arc::new(sock.listen(64).map_err(err)?);
        let task = runtime.spawn(accept_loop(socket.clone(), by_addr));
        let l = Listener { socket, addr, task };
        for p in peers {
            l.add_peer(p)?;
        }
        info!(%addr, "BGP listening");
        Ok(l)
    }

    /// The address it is bound to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets a peer's socket options on the listener: its TCP-MD5 key, and TTL 255 for GTSM
    /// (our SYN-ACK must already leave with it).
    pub(crate) fn add_peer(&self, p: &PeerConfig) -> Result<(), BgpError> {
        let v6 = self.addr.is_ipv6();
        if p.ttl_security {
            md5::set_send_ttl_255(&*self.socket, v6).map_err(|source| BgpError::Listen {
                addr: self.addr,
                source,
            })?;
        }
        if let Some(key) = &p.password {
            md5::set_md5(&*self.socket, v6, p.address, key).map_err(|source| BgpError::Md5 {
                name: p.name.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

async fn accept_loop(socket: Arc<TcpListener>, by_addr: ByAddr) {
    loop {
        match socket.accept().await {
            Ok((stream, from)) => {
                let ip = from.ip().to_canonical();
                let tx = lock(&by_addr).get(&ip).cloned();
                match tx {
                    Some(tx) => {
                        let _ = tx.send(PeerCmd::Incoming(stream));
                    }
                    None => warn!(%from, "connection from an unknown address refused"),
                }
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
