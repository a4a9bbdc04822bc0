//! VIP addresses on `lo` or a dummy interface, over rtnetlink.
//!
//! ```text
//!  wanted VIPs ─┐
//!  list()  ─────┼─▶ addr_plan::plan (pure) ─▶ Vec<AddrOp> ─▶ execute() ─▶ Vec<(AddrOp, AddrError)>
//!  ownership ───┘
//! ```
//!
//! Every VIP is a host address: `/32` for IPv4, `/128` for IPv6 with `nodad` so it is
//! usable at once. The kernel's own routes for these addresses (local table) are left
//! as it makes them. Adding an address that is already there and removing one that is
//! already gone both count as success, so every operation is idempotent.
//!
//! Requests share one rtnetlink socket, and the kernel queues one answer per request on
//! it: were thousands sent at once (a balancer's cold start, one prepare per VIP), the
//! answers would overflow the socket's receive buffer, the lost ones would never come,
//! and their requests would wait forever. So at most [`IN_FLIGHT`] requests are
//! outstanding per connection, and each has [`REQUEST_TIMEOUT`] to be answered
//! ([`AddrError::NoAnswer`] after that; the operation is idempotent, the caller retries).
//!
//! Which addresses may be removed is decided by the rule documented in
//! [`crate::addr_plan`]: on a dummy interface created by ipvs-sync (link alias
//! `ipvs-sync`) every host address is ours; on `lo` only the caller's owned set and
//! IPv4 addresses labelled `lo:vip` are.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkDummy, LinkUnspec};

use crate::addr_plan::{self, vip_label, ActualAddr, AddrOp, Ownership, OWNER_ALIAS};

/// The loopback interface name.
pub const LOOPBACK: &str = "lo";

/// Requests outstanding at once on the connection. Their answers (an skb of about
/// 1 KiB each) fit three times over in the default 208 KiB receive buffer; 10,000
/// address changes at once overflowed it.
pub const IN_FLIGHT: usize = 64;

/// How long a request waits for the kernel's answer, which on a healthy socket comes
/// within microseconds.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an address listing (a dump of every address of the interface) may take.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(30);

const ENODEV: i32 = libc::ENODEV;
const EEXIST: i32 = libc::EEXIST;
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;

/// Errors from VIP address handling.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    /// There is no tokio runtime to drive the netlink connection.
    #[error("VIP addresses need a tokio runtime to run the rtnetlink connection")]
    NoRuntime,
    /// The rtnetlink socket could not be opened.
    #[error("cannot open an rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The interface name is empty, too long or contains `/`, `:` or whitespace.
    #[error("invalid interface name {0:?}")]
    InvalidInterface(String),
    /// The interface does not exist (and was not created).
    #[error("interface {0} does not exist")]
    NoInterface(String),
    /// `lo` is the only shared interface that must exist; it is missing.
    #[error("interface lo is missing from this network namespace")]
    NoLoopback,
    /// The address cannot be a VIP (loopback, multicast, link-local, unspecified).
    #[error("{0} cannot be a VIP (loopback, unspecified, multicast or link-local)")]
    NotAVip(IpAddr),
    /// The kernel did not answer in time: its answer was lost (a receive-buffer
    /// overrun) or it is stuck. Whether the change was made is unknown; redoing it is
    /// safe.
    #[error("{what} on {interface}: no answer from the kernel within {waited:?}")]
    NoAnswer {
        /// What was asked.
        what: String,
        /// The interface.
        interface: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The kernel refused a request; `errno` is positive (e.g. 1 = EPERM).
    #[error("{what} on {interface}: kernel said errno {errno} ({message})")]
    Kernel {
        /// What was asked.
        what: String,
        /// The interface.
        interface: String,
        /// Positive errno.
        errno: i32,
        /// rtnetlink's rendering of the error.
        message: String,
    },
}

/// Host VIP addresses on one interface.
///
/// Built inside a tokio runtime: [`VipAddrs::new`] spawns the rtnetlink connection
/// task, which ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct VipAddrs {
    handle: Handle,
    interface: String,
    index: Option<u32>,
    ours: bool,
    /// Permits for requests outstanding on the connection, shared by every clone.
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl VipAddrs {
    /// Open rtnetlink for `interface` (`lo` or a dummy name). Call
    /// [`ensure_interface`](Self::ensure_interface) before anything else.
    pub fn new(interface: &str) -> Result<Self, AddrError> {
        validate_interface_name(interface)?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| AddrError::NoRuntime)?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(AddrError::Socket)?;
        rt.spawn(conn);
        Ok(Self {
            handle,
            interface: interface.to_string(),
            index: None,
            ours: false,
            in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        })
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// True when the interface was created by ipvs-sync (link alias `ipvs-sync`):
    /// every host address on it is ours. Known after [`ensure_interface`](Self::ensure_interface).
    pub fn owns_interface(&self) -> bool {
        self.ours
    }

    /// Make sure the interface exists and is up, like `ip link add NAME type dummy;
    /// ip link set NAME alias ipvs-sync up`. `lo` is never created (it must exist) but
    /// is brought up: it is down in a fresh network namespace. Returns the ifindex.
    pub async fn ensure_interface(&mut self) -> Result<u32, AddrError> {
        let link = match self.get_link().await? {
            Some(link) => link,
            None if self.interface == LOOPBACK => return Err(AddrError::NoLoopback),
            None => {
                let msg = LinkDummy::new(&self.interface).up().build();
                let add = self.handle.link().add(msg).execute();
                let what = || "create dummy interface".to_string();
                match self.ask(what, REQUEST_TIMEOUT, add).await? {
                    Ok(()) => {
                        let created = self
                            .get_link()
                            .await?
                            .ok_or_else(|| AddrError::NoInterface(self.interface.clone()))?;
                        // The kernel ignores IFLA_IFALIAS in a creating RTM_NEWLINK;
                        // mark the link with a separate set. Should we die in between,
                        // the unmarked dummy is treated like `lo` (safe).
                        let mark = LinkUnspec::new_with_index(created.header.index)
                            .alias(OWNER_ALIAS)
                            .build();
                        let set = self.handle.link().set(mark).execute();
                        let what = || "set link alias".to_string();
                        self.ask(what, REQUEST_TIMEOUT, set)
                            .await?
                            .map_err(|e| self.kernel("set link alias", &e))?;
                        tracing::info!(interface = %self.interface, "created dummy interface for VIPs");
                    }
                    // Someone created it between our lookup and our add.
                    Err(e) if errno(&e) == Some(EEXIST) => {}
                    Err(e) => return Err(self.kernel("create dummy interface", &e)),
                }
                self.get_link()
                    .await?
                    .ok_or_else(|| AddrError::NoInterface(self.interface.clone()))?
            }
        };
        let index = link.header.index;
        if !link.header.flags.contains(LinkFlags::Up) {
            let msg = LinkUnspec::new_with_index(index).up().build();
            let set = self.handle.link().set(msg).execute();
            let what = || "set link up".to_string();
            self.ask(what, REQUEST_TIMEOUT, set)
                .await?
                .map_err(|e| self.kernel("set link up", &e))?;
            tracing::info!(interface = %self.interface, "brought VIP interface up");
        }
        self.ours = self.interface != LOOPBACK && is_marked_dummy(&link);
        self.index = Some(index);
        Ok(index)
    }

    async fn get_link(&self) -> Result<Option<LinkMessage>, AddrError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(self.interface.clone())
            .execute();
        let what = || "look up link".to_string();
        match self.ask(what, REQUEST_TIMEOUT, links.try_next()).await? {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(self.kernel("look up link", &e)),
        }
    }

    fn index(&self) -> Result<u32, AddrError> {
        self.index
            .ok_or_else(|| AddrError::NoInterface(self.interface.clone()))
    }

    /// The ownership rule for this interface given the caller's owned set (VIPs the
    /// mapping gives this balancer plus those it announced).
    pub fn ownership(&self, owned: &BTreeSet<IpAddr>) -> Ownership {
        if self.ours {
            Ownership::WholeInterface
        } else {
            Ownership::Listed {
                owned: owned.clone(),
                label: vip_label(&self.interface),
            }
        }
    }

    /// Host addresses (/32, /128) on the interface, with their IPv4 labels, like
    /// `ip -br addr show dev IF`.
    pub async fn list_detailed(&self) -> Result<Vec<ActualAddr>, AddrError> {
        let index = self.index()?;
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let read = async move {
            let mut out = Vec::new();
            loop {
                match stream.try_next().await {
                    Ok(Some(msg)) => out.extend(host_addr(&msg)),
                    Ok(None) => return Ok(out),
                    Err(e) => return Err(e),
                }
            }
        };
        let what = || "list addresses".to_string();
        self.ask(what, LIST_TIMEOUT, read)
            .await?
            .map_err(|e| self.kernel("list addresses", &e))
    }

    /// The host VIPs (/32, /128) on the interface.
    pub async fn list(&self) -> Result<BTreeSet<IpAddr>, AddrError> {
        Ok(self
            .list_detailed()
            .await?
            .into_iter()
            .map(|a| a.ip)
            .collect())
    }

    /// List the interface and plan the changes that make it hold `wanted`
    /// (see [`addr_plan::plan`]).
    pub async fn plan(
        &self,
        wanted: &BTreeSet<IpAddr>,
        owned: &BTreeSet<IpAddr>,
    ) -> Result<Vec<AddrOp>, AddrError> {
        let actual = self.list_detailed().await?;
        Ok(addr_plan::plan(wanted, &actual, &self.ownership(owned)))
    }

    /// Apply every operation, in order, and return each one that failed with its
    /// error (an empty vector means all succeeded).
    pub async fn execute(&self, plan: Vec<AddrOp>) -> Vec<(AddrOp, AddrError)> {
        let mut failures = Vec::new();
        for op in plan {
            let res = match op {
                AddrOp::Add(ip) => self.add(ip).await,
                AddrOp::Remove(ip) => self.remove(ip).await,
            };
            if let Err(e) = res {
                tracing::warn!(interface = %self.interface, %op, error = %e, "VIP address change failed");
                failures.push((op, e));
            }
        }
        failures
    }

    /// Add `vip` as a host address, like `ip addr add VIP/32 dev IF label IF:vip` or
    /// `ip addr add VIP/128 dev IF nodad`. Present already → Ok.
    pub async fn add(&self, vip: IpAddr) -> Result<(), AddrError> {
        if !addr_plan::is_vip_candidate(vip) {
            return Err(AddrError::NotAVip(vip));
        }
        let index = self.index()?;
        let mut req = self.handle.address().add(index, vip, host_prefix(vip));
        let msg = req.message_mut();
        match vip {
            IpAddr::V4(_) => {
                if !self.ours {
                    if let Some(label) = vip_label(&self.interface) {
                        msg.attributes.push(AddressAttribute::Label(label));
                    }
                }
            }
            IpAddr::V6(_) => {
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        let what = || format!("add {vip}");
        match self.ask(what, REQUEST_TIMEOUT, req.execute()).await? {
            Ok(()) => {
                tracing::info!(interface = %self.interface, %vip, "VIP address added");
                Ok(())
            }
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(self.kernel(&what(), &e)),
        }
    }

    /// Remove the host address `vip`, like `ip addr del VIP/32 dev IF`. Absent → Ok.
    pub async fn remove(&self, vip: IpAddr) -> Result<(), AddrError> {
        let index = self.index()?;
        let mut msg = AddressMessage::default();
        msg.header.family = match vip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.prefix_len = host_prefix(vip);
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(vip));
        if vip.is_ipv6() {
            msg.attributes.push(AddressAttribute::Address(vip));
        }
        let what = || format!("remove {vip}");
        let del = self.handle.address().del(msg).execute();
        match self.ask(what, REQUEST_TIMEOUT, del).await? {
            Ok(()) => {
                tracing::info!(interface = %self.interface, %vip, "VIP address removed");
                Ok(())
            }
            Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => Ok(()),
            Err(e) => Err(self.kernel(&what(), &e)),
        }
    }

    /// Runs one request on the connection: waits for one of the [`IN_FLIGHT`] permits,
    /// then at most `limit` for the kernel's answer. A request given up on stays known
    /// to the connection until its answer comes, if ever (a few bytes each).
    async fn ask<T>(
        &self,
        what: impl Fn() -> String,
        limit: Duration,
        request: impl Future<Output = T>,
    ) -> Result<T, AddrError> {
        let no_answer = || AddrError::NoAnswer {
            what: what(),
            interface: self.interface.clone(),
            waited: limit,
        };
        // The semaphore is never closed; a closed one would only mean no limit.
        let _permit = self.in_flight.acquire().await.ok();
        tokio::time::timeout(limit, request)
            .await
            .map_err(|_| no_answer())
    }

    fn kernel(&self, what: &str, e: &rtnetlink::Error) -> AddrError {
        AddrError::Kernel {
            what: what.to_string(),
            interface: self.interface.clone(),
            errno: errno(e).unwrap_or(0),
            message: e.to_string(),
        }
    }
}

/// A dummy link carrying the [`OWNER_ALIAS`]: one ipvs-sync created. Both are
/// required, so an alias set by mistake on a real NIC never makes its addresses ours.
fn is_marked_dummy(link: &LinkMessage) -> bool {
    let mut alias = false;
    let mut dummy = false;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfAlias(a) => alias |= a == OWNER_ALIAS,
            LinkAttribute::LinkInfo(infos) => {
                dummy |= infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Dummy)));
            }
            _ => {}
        }
    }
    alias && dummy
}

fn validate_interface_name(name: &str) -> Result<(), AddrError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        Err(AddrError::InvalidInterface(name.to_string()))
    } else {
        Ok(())
    }
}

fn host_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Positive errno of a kernel error reply.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(-msg.raw_code()),
        _ => None,
    }
}

/// A host address from a dump message: IPv4 carries IFA_LOCAL, IPv6 only IFA_ADDRESS.
fn host_addr(msg: &AddressMessage) -> Option<ActualAddr> {
    let want_len = match msg.header.family {
        AddressFamily::Inet => 32,
        AddressFamily::Inet6 => 128,
        _ => return None,
    };
    if msg.header.prefix_len != want_len {
        return None;
    }
    let mut local = None;
    let mut address = None;
    let mut label = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    Some(ActualAddr { ip, label })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(family: AddressFamily, prefix: u8, attrs: Vec<AddressAttribute>) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = family;
        m.header.prefix_len = prefix;
        m.attributes = attrs;
        m
    }

    #[test]
    fn ipv4_reads_local_and_label() {
        let m = msg(
            AddressFamily::Inet,
            32,
            vec![
                AddressAttribute::Address("192.0.2.1".parse().unwrap()),
                AddressAttribute::Local("192.0.2.1".parse().unwrap()),
                AddressAttribute::Label("lo:vip".into()),
            ],
        );
        assert_eq!(
            host_addr(&m),
            Some(ActualAddr {
                ip: "192.0.2.1".parse().unwrap(),
                label: Some("lo:vip".into())
            })
        );
    }

    #[test]
    fn ipv6_falls_back_to_address() {
        let m = msg(
            AddressFamily::Inet6,
            128,
            vec![AddressAttribute::Address("2001:db8::1".parse().unwrap())],
        );
        assert_eq!(
            host_addr(&m).map(|a| a.ip),
            Some("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn non_host_prefixes_are_not_vips() {
        let v4 = msg(
            AddressFamily::Inet,
            8,
            vec![AddressAttribute::Local("127.0.0.1".parse().unwrap())],
        );
        let v6 = msg(
            AddressFamily::Inet6,
            64,
            vec![AddressAttribute::Address("fe80::1".parse().unwrap())],
        );
        assert_eq!(host_addr(&v4), None);
        assert_eq!(host_addr(&v6), None);
    }

    #[test]
    fn only_a_marked_dummy_is_ours() {
        let link = |attrs: Vec<LinkAttribute>| {
            let mut m = LinkMessage::default();
            m.attributes = attrs;
            m
        };
        let alias = || LinkAttribute::IfAlias(OWNER_ALIAS.into());
        let kind = |k| LinkAttribute::LinkInfo(vec![LinkInfo::Kind(k)]);
        assert!(is_marked_dummy(&link(vec![alias(), kind(InfoKind::Dummy)])));
        assert!(!is_marked_dummy(&link(vec![alias(), kind(InfoKind::Veth)])));
        assert!(!is_marked_dummy(&link(vec![alias()])));
        assert!(!is_marked_dummy(&link(vec![kind(InfoKind::Dummy)])));
        assert!(!is_marked_dummy(&link(vec![
            LinkAttribute::IfAlias("other".into()),
            kind(InfoKind::Dummy)
        ])));
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(validate_interface_name("lo").is_ok());
        assert!(validate_interface_name("vip0").is_ok());
        for bad in ["", "a/b", "lo:1", "with space", "sixteen-chars-xx", ".."] {
            assert!(matches!(
                validate_interface_name(bad),
                Err(AddrError::InvalidInterface(_))
            ));
        }
    }

    #[test]
    fn new_outside_a_runtime_is_a_typed_error() {
        assert!(matches!(VipAddrs::new("lo"), Err(AddrError::NoRuntime)));
    }

    #[tokio::test]
    async fn a_request_the_kernel_never_answers_ends_with_a_typed_error() {
        let addrs = VipAddrs::new("lo").unwrap();
        let r = addrs
            .ask(
                || "add 192.0.2.1".to_string(),
                Duration::from_millis(20),
                std::future::pending::<()>(),
            )
            .await;
        match r {
            Err(e @ AddrError::NoAnswer { .. }) => assert_eq!(
                e.to_string(),
                "add 192.0.2.1 on lo: no answer from the kernel within 20ms"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_beyond_the_limit_wait_for_a_permit() {
        let addrs = VipAddrs::new("lo").unwrap();
        let hold = Duration::from_millis(300);
        // IN_FLIGHT requests that are never answered hold every permit until they time out.
        let stuck: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let a = addrs.clone();
                tokio::spawn(
                    async move { a.ask(String::new, hold, std::future::pending::<()>()).await },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = std::time::Instant::now();
        let next = addrs.ask(String::new, hold, async { 7 }).await;
        assert_eq!(next.unwrap(), 7);
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        for s in stuck {
            assert!(matches!(s.await.unwrap(), Err(AddrError::NoAnswer { .. })));
        }
        // With permits free again, a request goes at once.
        let t = std::time::Instant::now();
        assert_eq!(addrs.ask(String::new, hold, async { 8 }).await.unwrap(), 8);
        assert!(t.elapsed() < hold, "{:?}", t.elapsed());
    }
}
