//! gobgpd (3.10) TOML configuration for a lab router, built from typed values.
//!
//! The shape gobgpd reads (checked with `gobgpd -d -f FILE` and against a running
//! 3.10 through `gobgp neighbor ADDR -j`):
//!
//! ```toml
//! [global.config]
//!   as = 65000
//!   router-id = "192.0.2.1"
//!   port = 179                        # -1: do not listen
//!   local-address-list = ["192.0.2.1"]
//! [[neighbors]]
//!   [neighbors.config]
//!     neighbor-address = "192.0.2.11"
//!     peer-as = 65000
//!     auth-password = "…"             # TCP-MD5 (RFC 2385)
//!   [neighbors.transport.config]
//!     passive-mode = true             # never connects, only accepts
//!     remote-port = 179
//!   [neighbors.timers.config]
//!     connect-retry = 1               # paces retries; NOT the first connect (below)
//!     hold-time = 90
//!     keepalive-interval = 30
//!   [[neighbors.afi-safis]]
//!     [neighbors.afi-safis.config]
//!       afi-safi-name = "ipv4-unicast"
//! ```
//!
//! gobgpd 3.10 makes its first active connect 5–10 s after a neighbor goes Active
//! whatever `connect-retry` says (its connect loop starts at a fixed 5 s minimum plus
//! jitter; `connect-retry` paces only later attempts), and keeps a dropped peer Idle
//! for 5 s. For fast tests make the router `passive` and let the speaker connect.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// An address family a neighbor negotiates (MP-BGP AFI/SAFI, RFC 4760).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GobgpFamily {
    /// AFI 1 / SAFI 1.
    Ipv4Unicast,
    /// AFI 2 / SAFI 1.
    Ipv6Unicast,
}

impl GobgpFamily {
    /// gobgpd's `afi-safi-name`.
    pub fn name(self) -> &'static str {
        match self {
            GobgpFamily::Ipv4Unicast => "ipv4-unicast",
            GobgpFamily::Ipv6Unicast => "ipv6-unicast",
        }
    }
}

/// One `[[neighbors]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GobgpNeighbor {
    /// The peer's address (`neighbor-address`).
    pub address: IpAddr,
    /// The peer's AS (`peer-as`); equal to the router's AS makes it iBGP.
    pub peer_as: u32,
    /// `passive-mode`: only accept the peer's connection, never connect out.
    pub passive: bool,
    /// `auth-password`: TCP-MD5 key.
    pub password: Option<String>,
    /// `connect-retry` seconds between gobgpd's connect attempts after the first.
    pub connect_retry: u32,
    /// `hold-time` seconds.
    pub hold_time: u32,
    /// `keepalive-interval` seconds.
    pub keepalive: u32,
    /// Families to negotiate.
    pub families: Vec<GobgpFamily>,
    /// `local-address` to connect from.
    pub local_address: Option<IpAddr>,
    /// `remote-port` to connect to (when the peer does not listen on 179).
    pub remote_port: Option<u16>,
    /// `description`: a name for the peer, shown by `gobgp neighbor`.
    pub description: Option<String>,
}

impl GobgpNeighbor {
    /// An active neighbor with IPv4 and IPv6 unicast, `connect-retry` 1 s and the RFC
    /// 4271 timers (hold 90 s, keepalive 30 s).
    pub fn new(address: IpAddr, peer_as: u32) -> GobgpNeighbor {
        GobgpNeighbor {
            address,
            peer_as,
            passive: false,
            password: None,
            connect_retry: 1,
            hold_time: 90,
            keepalive: 30,
            families: vec![GobgpFamily::Ipv4Unicast, GobgpFamily::Ipv6Unicast],
            local_address: None,
            remote_port: None,
            description: None,
        }
    }

    /// Sets `passive-mode`.
    pub fn passive(mut self, passive: bool) -> Self {
        self.passive = passive;
        self
    }

    /// Sets the TCP-MD5 key.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Sets `connect-retry` seconds.
    pub fn connect_retry(mut self, secs: u32) -> Self {
        self.connect_retry = secs;
        self
    }

    /// Sets `hold-time` and a keepalive of a third of it (at least 1 s).
    pub fn hold_time(mut self, secs: u32) -> Self {
        self.hold_time = secs;
        self.keepalive = (secs / 3).max(1);
        self
    }

    /// Sets the families to negotiate.
    pub fn families(mut self, families: &[GobgpFamily]) -> Self {
        self.families = families.to_vec();
        self
    }

    /// Sets the source address of gobgpd's connections to this peer.
    pub fn local_address(mut self, addr: IpAddr) -> Self {
        self.local_address = Some(addr);
        self
    }

    /// Sets the port gobgpd connects to.
    pub fn remote_port(mut self, port: u16) -> Self {
        self.remote_port = Some(port);
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> Self {
        self.description = Some(text.to_owned());
        self
    }
}

/// A whole gobgpd configuration: `[global.config]` and its neighbors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GobgpConfig {
    /// Local AS.
    pub asn: u32,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// BGP listen port; `-1` makes gobgpd not listen at all.
    pub listen_port: i32,
    /// Addresses to listen on; empty means all.
    pub listen_addresses: Vec<IpAddr>,
    /// The neighbors.
    pub neighbors: Vec<GobgpNeighbor>,
}

impl GobgpConfig {
    /// A router in `asn` with identifier `router_id`, listening on port 179 of every
    /// address, with no neighbors yet.
    pub fn new(asn: u32, router_id: Ipv4Addr) -> GobgpConfig {
        GobgpConfig {
            asn,
            router_id,
            listen_port: 179,
            listen_addresses: Vec::new(),
            neighbors: Vec::new(),
        }
    }

    /// Sets the listen port (`-1`: none).
    pub fn listen_port(mut self, port: i32) -> Self {
        self.listen_port = port;
        self
    }

    /// Adds an address to listen on.
    pub fn listen_address(mut self, addr: IpAddr) -> Self {
        self.listen_addresses.push(addr);
        self
    }

    /// Adds a neighbor.
    pub fn neighbor(mut self, neighbor: GobgpNeighbor) -> Self {
        self.neighbors.push(neighbor);
        self
    }

    /// The TOML text for `gobgpd -f`.
    pub fn to_toml(&self) -> String {
        let mut t = String::new();
        // Writing to a String cannot fail; the results are ignored for that reason.
        let _ = writeln!(t, "[global.config]");
        let _ = writeln!(t, "  as = {}", self.asn);
        let _ = writeln!(t, "  router-id = {}", quote(&self.router_id.to_string()));
        let _ = writeln!(t, "  port = {}", self.listen_port);
        if !self.listen_addresses.is_empty() {
            let list: Vec<String> = self
                .listen_addresses
                .iter()
                .map(|a| quote(&a.to_string()))
                .collect();
            let _ = writeln!(t, "  local-address-list = [{}]", list.join(", "));
        }
        for n in &self.neighbors {
            write_neighbor(&mut t, n);
        }
        t
    }
}

/// Appends one `[[neighbors]]` entry.
fn write_neighbor(t: &mut String, n: &GobgpNeighbor) {
    let _ = writeln!(t, "\n[[neighbors]]");
    let _ = writeln!(t, "  [neighbors.config]");
    let _ = writeln!(
        t,
        "    neighbor-address = {}",
        quote(&n.address.to_string())
    );
    let _ = writeln!(t, "    peer-as = {}", n.peer_as);
    if let Some(d) = &n.description {
        let _ = writeln!(t, "    description = {}", quote(d));
    }
    if let Some(pw) = &n.password {
        let _ = writeln!(t, "    auth-password = {}", quote(pw));
    }
    let _ = writeln!(t, "  [neighbors.transport.config]");
    let _ = writeln!(t, "    passive-mode = {}", n.passive);
    if let Some(addr) = n.local_address {
        let _ = writeln!(t, "    local-address = {}", quote(&addr.to_string()));
    }
    if let Some(port) = n.remote_port {
        let _ = writeln!(t, "    remote-port = {port}");
    }
    let _ = writeln!(t, "  [neighbors.timers.config]");
    let _ = writeln!(t, "    connect-retry = {}", n.connect_retry);
    let _ = writeln!(t, "    hold-time = {}", n.hold_time);
    let _ = writeln!(t, "    keepalive-interval = {}", n.keepalive);
    for f in &n.families {
        let _ = writeln!(t, "  [[neighbors.afi-safis]]");
        let _ = writeln!(t, "    [neighbors.afi-safis.config]");
        let _ = writeln!(t, "      afi-safi-name = {}", quote(f.name()));
    }
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GobgpConfig {
        GobgpConfig::new(65000, Ipv4Addr::new(192, 0, 2, 1))
            .listen_address("192.0.2.1".parse().unwrap())
            .listen_address("2001:db8::1".parse().unwrap())
            .neighbor(
                GobgpNeighbor::new("192.0.2.11".parse().unwrap(), 65000)
                    .passive(true)
                    .password("s\"e\\cret")
                    .hold_time(9)
                    .description("lb1"),
            )
            .neighbor(
                GobgpNeighbor::new("2001:db8::12".parse().unwrap(), 65001)
                    .families(&[GobgpFamily::Ipv6Unicast])
                    .remote_port(1179)
                    .local_address("2001:db8::1".parse().unwrap()),
            )
    }

    #[test]
    fn toml_has_global_and_each_neighbor() {
        let t = sample().to_toml();
        assert!(t.starts_with("[global.config]\n  as = 65000\n  router-id = \"192.0.2.1\"\n"));
        assert!(t.contains("  local-address-list = [\"192.0.2.1\", \"2001:db8::1\"]\n"));
        assert_eq!(t.matches("[[neighbors]]").count(), 2);
        assert!(t.contains("auth-password = \"s\\\"e\\\\cret\""), "{t}");
        assert!(
            t.contains("peer-as = 65000\n    description = \"lb1\"\n"),
            "{t}"
        );
        assert!(t.contains("hold-time = 9\n    keepalive-interval = 3\n"));
        assert!(t.contains("remote-port = 1179"));
        // The first neighbor has both families, the second only IPv6.
        assert_eq!(t.matches("\"ipv4-unicast\"").count(), 1);
        assert_eq!(t.matches("\"ipv6-unicast\"").count(), 2);
    }

    #[test]
    fn quote_escapes_what_toml_requires() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote("a\\b"), "\"a\\\\b\"");
        assert_eq!(quote("a\nb"), "\"a\\u000Ab\"");
    }

    #[test]
    fn hold_time_keeps_keepalive_at_least_one_second() {
        let n = GobgpNeighbor::new("192.0.2.2".parse().unwrap(), 1).hold_time(2);
        assert_eq!((n.hold_time, n.keepalive), (2, 1));
    }

    /// gobgpd itself accepts what we write (`-d` only parses, needs no root). Skipped
    /// with a note when gobgpd is not installed (netns-lab/setup installs it).
    #[test]
    fn gobgpd_accepts_the_generated_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gobgpd.toml");
        std::fs::write(&path, sample().to_toml()).unwrap();
        let out = match std::process::Command::new("gobgpd")
            .arg("-d")
            .arg("-f")
            .arg(&path)
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("gobgpd not installed; run netns-lab/setup");
                return;
            }
            Err(e) => panic!("gobgpd: {e}"),
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("Finished reading the config file"), "{text}");
    }
}
