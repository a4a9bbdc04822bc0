//! `virtual_server` and `virtual_server_group` statements → typed services.
//!
//! Forms understood (keepalived.conf(5), LVS configuration):
//!
//! ```text
//! virtual_server 192.0.2.10 80 { … }         address and port (port may be omitted: 0)
//! virtual_server 2001:db8::10 443 { … }
//! virtual_server fwmark 7 { … }               firewall mark
//! virtual_server group web { … }              members from virtual_server_group web
//! virtual_server_group web {
//!     192.0.2.20 80                           address and port
//!     192.0.2.21-29 80                        range on the last IPv4 octet (decimal)
//!     2001:db8::1:0-1f 443                    range on the last IPv6 group (hex)
//!     fwmark 8                                firewall mark
//! }
//! ```
//!
//! A firewall mark carries no address. The quorum handler convention of this project
//! (and of the original ipvs-sync) is `quorum_up "… ipvs-sync quorum up VIP,b-LP,PORT"`,
//! so the VIP of a service is taken from the first `quorum_up`/`quorum_down` argument of
//! the form `VIP[,…]`; see [`VirtualServer::quorum_vip`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use super::parser::Statement;
use super::KeepalivedError;

/// Most addresses one `A-B` range may name (a full last IPv6 group).
pub const MAX_RANGE: u32 = 65_536;

/// What a `virtual_server` line names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtualServerAddr {
    /// `virtual_server IP PORT`.
    Ip {
        /// The VIP.
        addr: IpAddr,
        /// The port (0 when omitted).
        port: u16,
    },
    /// `virtual_server fwmark N`.
    Fwmark {
        /// The mark.
        mark: u32,
    },
    /// `virtual_server group NAME`.
    Group {
        /// The `virtual_server_group` name.
        name: String,
    },
}

/// One `virtual_server` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    /// What the header names.
    pub addr: VirtualServerAddr,
    /// The VIP of the first `quorum_up`/`quorum_down` argument `VIP[,b-LP[,PORT]]`.
    pub quorum_vip: Option<IpAddr>,
    /// Where it is.
    pub file: Arc<Path>,
    /// 1-based line of the header.
    pub line: usize,
}

/// One line of a `virtual_server_group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupMember {
    /// `IP PORT` (or `IP` alone: port 0); a range `FIRST-LAST PORT` has `first != last`.
    Ip {
        /// First address.
        first: IpAddr,
        /// Last address (same family, ≥ first, at most [`MAX_RANGE`] addresses).
        last: IpAddr,
        /// The port.
        port: u16,
    },
    /// `fwmark N`.
    Fwmark(u32),
}

impl GroupMember {
    /// Every address an `Ip` member names, in order; nothing for `Fwmark`.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let (lo, hi, v4) = match self {
            GroupMember::Ip {
                first: IpAddr::V4(a),
                last: IpAddr::V4(b),
                ..
            } => (u128::from(u32::from(*a)), u128::from(u32::from(*b)), true),
            GroupMember::Ip {
                first: IpAddr::V6(a),
                last: IpAddr::V6(b),
                ..
            } => (u128::from(*a), u128::from(*b), false),
            _ => (1, 0, true),
        };
        (lo..=hi).map(move |n| {
            if v4 {
                IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
            } else {
                IpAddr::V6(Ipv6Addr::from(n))
            }
        })
    }
}

/// One `virtual_server_group` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its lines.
    pub members: Vec<GroupMember>,
    /// Where it is.
    pub file: Arc<Path>,
    /// 1-based line of the header.
    pub line: usize,
}

/// The services of one statement tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services {
    /// `virtual_server` blocks in file order.
    pub virtual_servers: Vec<VirtualServer>,
    /// `virtual_server_group` blocks in file order.
    pub groups: Vec<Group>,
}

/// Finds the top-level `virtual_server` and `virtual_server_group` statements; every
/// other statement is ignored.
pub fn services(statements: &[Statement]) -> Result<Services, KeepalivedError> {
    let mut out = Services::default();
    for s in statements {
        match s.keyword.as_str() {
            "virtual_server" => out.virtual_servers.push(virtual_server(s)?),
            "virtual_server_group" => out.groups.push(group(s)?),
            _ => {}
        }
    }
    Ok(out)
}

fn err(s: &Statement, line: usize, reason: String) -> KeepalivedError {
    KeepalivedError::Syntax {
        file: s.file.to_path_buf(),
        line,
        reason,
    }
}

fn virtual_server(s: &Statement) -> Result<VirtualServer, KeepalivedError> {
    let bad = |what: &str| {
        err(
            s,
            s.line,
            format!("virtual_server: {what} (expected `IP PORT`, `fwmark N` or `group NAME`)"),
        )
    };
    let addr = match s.args.as_slice() {
        [kw, mark] if kw == "fwmark" => VirtualServerAddr::Fwmark {
            mark: mark
                .parse()
                .map_err(|_| bad(&format!("bad firewall mark '{mark}'")))?,
        },
        [kw, name] if kw == "group" => VirtualServerAddr::Group { name: name.clone() },
        [ip] => VirtualServerAddr::Ip {
            addr: ip
                .parse()
                .map_err(|_| bad(&format!("bad address '{ip}'")))?,
            port: 0,
        },
        [ip, port] => VirtualServerAddr::Ip {
            addr: ip
                .parse()
                .map_err(|_| bad(&format!("bad address '{ip}'")))?,
            port: port
                .parse()
                .map_err(|_| bad(&format!("bad port '{port}'")))?,
        },
        _ => return Err(bad("wrong number of arguments")),
    };
    if s.block.is_none() {
        return Err(err(
            s,
            s.line,
            "virtual_server without a { … } block".to_owned(),
        ));
    }
    Ok(VirtualServer {
        addr,
        quorum_vip: quorum_vip(s.block.as_deref().unwrap_or_default()),
        file: Arc::clone(&s.file),
        line: s.line,
    })
}

/// The VIP named by the first `quorum_up`/`quorum_down` argument `VIP[,…]`.
fn quorum_vip(block: &[Statement]) -> Option<IpAddr> {
    block
        .iter()
        .filter(|s| s.keyword == "quorum_up" || s.keyword == "quorum_down")
        .flat_map(|s| s.args.iter().flat_map(|a| a.split_whitespace()))
        .find_map(|word| {
            let (vip, _) = word.split_once(',')?;
            vip.parse().ok()
        })
}

fn group(s: &Statement) -> Result<Group, KeepalivedError> {
    let [name] = s.args.as_slice() else {
        return Err(err(
            s,
            s.line,
            "virtual_server_group: expected one NAME".to_owned(),
        ));
    };
    let Some(block) = &s.block else {
        return Err(err(
            s,
            s.line,
            "virtual_server_group without a { … } block".to_owned(),
        ));
    };
    let mut members = Vec::with_capacity(block.len());
    for m in block {
        members.push(member(m)?);
    }
    Ok(Group {
        name: name.clone(),
        members,
        file: Arc::clone(&s.file),
        line: s.line,
    })
}

fn member(m: &Statement) -> Result<GroupMember, KeepalivedError> {
    let bad = |what: String| {
        err(
            m,
            m.line,
            format!(
                "virtual_server_group: {what} (expected `IP PORT`, `FIRST-LAST PORT` or `fwmark N`)"
            ),
        )
    };
    if m.block.is_some() {
        return Err(bad(format!("unexpected block after '{}'", m.keyword)));
    }
    if m.keyword == "fwmark" {
        let [mark] = m.args.as_slice() else {
            return Err(bad("fwmark needs one number".to_owned()));
        };
        return mark
            .parse()
            .map(GroupMember::Fwmark)
            .map_err(|_| bad(format!("bad firewall mark '{mark}'")));
    }
    let port = match m.args.as_slice() {
        [] => 0,
        [p] => p.parse().map_err(|_| bad(format!("bad port '{p}'")))?,
        _ => return Err(bad("too many words".to_owned())),
    };
    let (first, last) =
        range(&m.keyword).ok_or_else(|| bad(format!("bad address '{}'", m.keyword)))?;
    Ok(GroupMember::Ip { first, last, port })
}

/// `A` or `A-END`, END replacing the last IPv4 octet (decimal) or IPv6 group (hex).
fn range(s: &str) -> Option<(IpAddr, IpAddr)> {
    let Some((a, end)) = s.split_once('-') else {
        let a: IpAddr = s.parse().ok()?;
        return Some((a, a));
    };
    match a.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => {
            let mut o = a.octets();
            let end: u8 = end.parse().ok()?;
            if end < o[3] {
                return None;
            }
            o[3] = end;
            Some((IpAddr::V4(a), IpAddr::V4(Ipv4Addr::from(o))))
        }
        IpAddr::V6(a) => {
            if end.is_empty() || end.len() > 4 || !end.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let end = u16::from_str_radix(end, 16).ok()?;
            let mut g = a.segments();
            if end < g[7] {
                return None;
            }
            g[7] = end;
            Some((IpAddr::V6(a), IpAddr::V6(Ipv6Addr::from(g))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_str;
    use super::*;

    fn svc(text: &str) -> Result<Services, KeepalivedError> {
        services(&parse_str(text, Path::new("k.conf"))?)
    }

    #[test]
    fn all_header_forms() {
        let s = svc("virtual_server 192.0.2.1 80 {\n}\nvirtual_server 2001:db8::1 443 {}\n\
                     virtual_server fwmark 7 {\n quorum_up \"/usr/bin/ipvs-sync quorum up 198.51.100.7,b-100,0\"\n}\n\
                     virtual_server group web { }\nvirtual_server 192.0.2.9 { }\n")
            .unwrap();
        let a: Vec<_> = s.virtual_servers.iter().map(|v| v.addr.clone()).collect();
        assert_eq!(
            a,
            [
                VirtualServerAddr::Ip {
                    addr: "192.0.2.1".parse().unwrap(),
                    port: 80
                },
                VirtualServerAddr::Ip {
                    addr: "2001:db8::1".parse().unwrap(),
                    port: 443
                },
                VirtualServerAddr::Fwmark { mark: 7 },
                VirtualServerAddr::Group { name: "web".into() },
                VirtualServerAddr::Ip {
                    addr: "192.0.2.9".parse().unwrap(),
                    port: 0
                },
            ]
        );
        assert_eq!(
            s.virtual_servers[2].quorum_vip,
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(s.virtual_servers[0].quorum_vip, None);
        assert_eq!(s.virtual_servers[2].line, 4);
    }

    #[test]
    fn quorum_vip_forms() {
        for (cmd, want) in [
            ("quorum_up /q up 2001:db8::5,b-100,80", Some("2001:db8::5")),
            ("quorum_down \"/q down 192.0.2.5,\"", Some("192.0.2.5")),
            ("quorum_up /q up 192.0.2.5,80", Some("192.0.2.5")),
            ("quorum_up /q up 192.0.2.5", None),
            ("quorum_up /q up x,b-1", None),
            ("notify_up /q up 192.0.2.5,b-1", None),
        ] {
            let s = svc(&format!("virtual_server fwmark 1 {{\n{cmd}\n}}\n")).unwrap();
            assert_eq!(
                s.virtual_servers[0].quorum_vip,
                want.map(|w| w.parse().unwrap()),
                "{cmd}"
            );
        }
    }

    #[test]
    fn groups_with_ranges() {
        let s = svc(
            "virtual_server_group g {\n 192.0.2.20 80\n 192.0.2.21-23 80\n \
                     2001:db8::1:a-c 443\n fwmark 9\n 192.0.2.30\n}\n",
        )
        .unwrap();
        let g = &s.groups[0];
        assert_eq!(g.name, "g");
        assert_eq!(g.members.len(), 5);
        let r: Vec<String> = g.members[1].addresses().map(|a| a.to_string()).collect();
        assert_eq!(r, ["192.0.2.21", "192.0.2.22", "192.0.2.23"]);
        let r: Vec<String> = g.members[2].addresses().map(|a| a.to_string()).collect();
        assert_eq!(r, ["2001:db8::1:a", "2001:db8::1:b", "2001:db8::1:c"]);
        assert_eq!(g.members[3], GroupMember::Fwmark(9));
        assert_eq!(g.members[3].addresses().count(), 0);
        assert!(matches!(g.members[4], GroupMember::Ip { port: 0, .. }));
    }

    #[test]
    fn bad_services_name_file_and_line() {
        for (text, line) in [
            ("virtual_server 192.0.2.300 80 {}\n", 1),
            ("\nvirtual_server 192.0.2.1 70000 {}\n", 2),
            ("virtual_server fwmark x {}\n", 1),
            ("virtual_server 192.0.2.1 80\n", 1),
            ("virtual_server a b c {}\n", 1),
            ("virtual_server_group g {\n 192.0.2.9-3 80\n}\n", 2),
            ("virtual_server_group g {\n 192.0.2.9-300 80\n}\n", 2),
            ("virtual_server_group g {\n 2001:db8::ff-1 80\n}\n", 2),
            ("virtual_server_group g {\n 2001:db8::1-10000 80\n}\n", 2),
            ("virtual_server_group g {\n fwmark\n}\n", 2),
            ("virtual_server_group g {\n 192.0.2.1 80 90\n}\n", 2),
            ("virtual_server_group {\n}\n", 1),
        ] {
            match svc(text) {
                Err(KeepalivedError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
