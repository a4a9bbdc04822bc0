//! The demo's lab (`netns-lab/lab`): every node on one LAN, a bridge in namespace `sw`.
//!
//! ```text
//!                        bridge br0, 192.0.2.0/24 + 2001:db8::/64
//!   ┌──────────┬──────────┬────────────┬────────────┬──────────┬──────────┬──────────┐
//!   r1         r2         broker       arbiter      lb1        lb2        lb3
//!   .1 / ::1   .2 / ::2   .10 / ::10   .20 / ::20   .31/::31   .32/::32   .33/::33
//!   gobgpd     gobgpd     RabbitMQ     ipvs-sync    ipvs-sync client (AS 65000) each,
//!   AS 65000   AS 65001   :5672        server       BGP to r1 (iBGP, IPv4, TCP-MD5)
//!   (iBGP)     (eBGP)                                    and r2 (eBGP, IPv6)
//! ```
//!
//! With three brokers (`LAB_BROKERS=3`, `lab-gen --brokers 3`) the broker is a RabbitMQ
//! cluster: nodes `broker`, `broker2` (.11 / ::11) and `broker3` (.12 / ::12) on the same LAN,
//! every daemon given the three URLs (quorum queues, the default for several).
//!
//! [`spec`] makes the [`LabSpec`] of it, which the `lab-gen` binary writes for the script;
//! [`topology_sh`] gives the script the same names and addresses as bash variables, so the
//! address plan lives here only.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::spec::{Arbiter, Balancer, LabKey, LabSpec, Peer, Proto, Router, Vip};
use crate::{GobgpConfig, GobgpNeighbor, Ini};

/// A node of the LAN: name, IPv4 and IPv6 address.
pub type Node = (&'static str, Ipv4Addr, Ipv6Addr);

/// `2001:db8::N`.
const fn doc6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n)
}

/// Every node with its transport addresses.
pub const NODES: [Node; 7] = [
    ("r1", Ipv4Addr::new(192, 0, 2, 1), doc6(0x1)),
    ("r2", Ipv4Addr::new(192, 0, 2, 2), doc6(0x2)),
    ("broker", Ipv4Addr::new(192, 0, 2, 10), doc6(0x10)),
    ("arbiter", Ipv4Addr::new(192, 0, 2, 20), doc6(0x20)),
    ("lb1", Ipv4Addr::new(192, 0, 2, 31), doc6(0x31)),
    ("lb2", Ipv4Addr::new(192, 0, 2, 32), doc6(0x32)),
    ("lb3", Ipv4Addr::new(192, 0, 2, 33), doc6(0x33)),
];

/// The two more broker nodes of a three-node cluster, placed after `broker`.
pub const MORE_BROKERS: [Node; 2] = [
    ("broker2", Ipv4Addr::new(192, 0, 2, 11), doc6(0x11)),
    ("broker3", Ipv4Addr::new(192, 0, 2, 12), doc6(0x12)),
];

/// The broker nodes of a lab with `brokers` of them (1, or 3 for a cluster).
fn brokers_of(brokers: usize) -> Vec<Node> {
    let mut v: Vec<Node> = NODES.iter().filter(|n| n.0 == "broker").copied().collect();
    if brokers > 1 {
        v.extend(MORE_BROKERS);
    }
    v
}

/// Every node of a lab with `brokers` broker nodes, the extra brokers after `broker`.
pub fn nodes(brokers: usize) -> Vec<Node> {
    let mut v = Vec::new();
    for n in NODES {
        if n.0 == "broker" {
            v.extend(brokers_of(brokers));
        } else {
            v.push(n);
        }
    }
    v
}

/// The balancers.
pub const BALANCERS: [&str; 3] = ["lb1", "lb2", "lb3"];

/// The routers: name, AS, and whether the balancers peer with it over IPv6. r1 is an iBGP
/// peer over IPv4 with TCP-MD5, r2 an eBGP peer over IPv6 without, so both transports
/// are exercised.
pub const ROUTERS: [(&str, u32, bool); 2] = [("r1", 65000, false), ("r2", 65001, true)];

/// The balancers' AS.
pub const BALANCER_AS: u32 = 65000;

/// BGP hold time of every session: a killed balancer's routes go within seconds (RFC 4271
/// minimum 3).
pub const HOLD_TIME: u32 = 9;

/// The broker's AMQP port.
pub const AMQP_PORT: u16 = 5672;
/// The broker's user.
pub const AMQP_USER: &str = "ipvs";

/// `198.51.100.N`.
const fn vip4(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, n))
}

/// `2001:db8:f00::N`.
const fn vip6(n: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xf00, 0, 0, 0, 0, n))
}

/// The VIPs the arbiter's keepalived knows: VIP, protocol, ports, group, balancers, LP.
/// Which balancers serve a VIP is where its keepalived config lives (`lbs/<balancer>/…`).
type VipRow = (
    IpAddr,
    Proto,
    &'static [u16],
    &'static str,
    &'static [&'static str],
    u32,
);
const VIPS: [VipRow; 5] = [
    (vip4(1), Proto::Tcp, &[80, 443], "web", &["lb1", "lb2"], 100),
    (vip4(2), Proto::Udp, &[53], "dns", &["lb2", "lb3"], 100),
    (
        vip4(3),
        Proto::Tcp,
        &[80],
        "web",
        &["lb1", "lb2", "lb3"],
        200,
    ),
    (vip6(1), Proto::Tcp, &[80, 443], "web", &["lb1", "lb3"], 100),
    (vip6(2), Proto::Udp, &[53], "dns", &["lb1", "lb2"], 150),
];

/// Real servers behind every VIP of a family (health-checked by the arbiter only).
const REAL_SERVERS: [IpAddr; 6] = [
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 11)),
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 12)),
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 13)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x11)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x12)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x13)),
];

/// IPv4 address of a node.
pub fn v4(node: &str) -> Option<Ipv4Addr> {
    NODES.iter().find(|n| n.0 == node).map(|n| n.1)
}

/// IPv6 address of a node.
pub fn v6(node: &str) -> Option<Ipv6Addr> {
    NODES.iter().find(|n| n.0 == node).map(|n| n.2)
}

/// The address of `node` in one family.
fn addr(node: &str, v6_family: bool) -> IpAddr {
    let n = NODES
        .iter()
        .chain(&MORE_BROKERS)
        .find(|n| n.0 == node)
        .copied();
    match (n, v6_family) {
        (Some(n), false) => IpAddr::V4(n.1),
        (Some(n), true) => IpAddr::V6(n.2),
        (None, _) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// What differs from one generated lab to the next.
#[derive(Debug, Clone)]
pub struct BridgeOpts {
    /// The run directory: `NODE/` per node.
    pub run: PathBuf,
    /// The `ipvs-sync` binary the quorum handlers call.
    pub bin: PathBuf,
    /// `[main] ipvs` (the host kernel has none: false).
    pub ipvs: bool,
    /// `[announce] interface` of the balancers (the host kernel has no dummy link: `lo`).
    pub interface: String,
    /// The broker's password (`amqp_password` in `secret.ini`).
    pub amqp_password: String,
    /// The arbiter's node key.
    pub arbiter_key: LabKey,
    /// The node key of each of [`BALANCERS`], in order.
    pub balancer_keys: [LabKey; BALANCERS.len()],
    /// The TCP-MD5 key of r1's sessions.
    pub md5_r1: String,
    /// Broker nodes: 1, or 3 for a cluster.
    pub brokers: usize,
}

/// The demo's lab as a [`LabSpec`].
pub fn spec(o: &BridgeOpts) -> LabSpec {
    let mut config = Ini::new();
    config
        .set(
            "main",
            "amqp_server",
            brokers_of(o.brokers)
                .iter()
                .map(|n| format!("amqp://{AMQP_USER}@{}:{AMQP_PORT}/%2f", n.1))
                .collect::<Vec<_>>()
                .join(","),
        )
        .comment(
            "main",
            "the host kernel has no IPVS; the VM lane runs the daemons with ipvs = true",
        )
        .set("main", "ipvs", o.ipvs)
        .set("main", "heartbeat_interval", 1)
        .set("main", "consumer_alive_ttl", 5);
    let mut secret = Ini::new();
    secret.set("secret", "amqp_password", &o.amqp_password);

    let mut arbiter_config = Ini::new();
    arbiter_config
        .set("main", "http_listen", format!("{}:9100", addr("arbiter", false)))
        .comment(
            "server",
            "The lab's arbiter starts before its balancers, with every desc file in place: no hold.",
        )
        .set("server", "startup_hold", 0);
    let arbiter = Arbiter {
        dir: o.run.join("arbiter"),
        desc_dir: o.run.join("arbiter/desc"),
        quorum_bin: Some(o.bin.clone()),
        config: arbiter_config,
        secret: Ini::new(),
        key: o.arbiter_key.clone(),
    };

    let balancers = BALANCERS
        .iter()
        .zip(&o.balancer_keys)
        .map(|(lb, key)| {
            let mut c = Ini::new();
            c.set("main", "http_listen", format!("{}:9100", addr(lb, false)))
                .set("bgp", "hold_time", HOLD_TIME)
                .set("bgp", "connect_retry", 1)
                .set("bgp", "next_hop_v4", addr(lb, false))
                .set("bgp", "next_hop_v6", addr(lb, true));
            if o.interface == "lo" {
                c.comment(
                    "announce",
                    "the host kernel has no dummy link type: VIPs go on lo",
                );
            }
            c.set("announce", "interface", &o.interface);
            Balancer {
                name: (*lb).to_owned(),
                dir: o.run.join(lb),
                local_as: BALANCER_AS,
                router_id: addr(lb, false),
                peers: ROUTERS
                    .iter()
                    .map(|(r, asn, v6_session)| Peer {
                        name: (*r).to_owned(),
                        address: addr(r, *v6_session),
                        remote_as: *asn,
                        md5: (*r == "r1").then(|| o.md5_r1.clone()),
                    })
                    .collect(),
                config: c,
                secret: Ini::new(),
                key: key.clone(),
            }
        })
        .collect();

    // Every balancer a passive neighbor: the speakers connect (gobgpd 3.10's own first
    // connect comes 5-10 s late whatever connect-retry says).
    let routers = ROUTERS
        .iter()
        .map(|(r, asn, v6_session)| {
            let rid = v4(r).unwrap_or(Ipv4Addr::UNSPECIFIED);
            let mut g = GobgpConfig::new(*asn, rid)
                .listen_address(addr(r, false))
                .listen_address(addr(r, true));
            for lb in BALANCERS {
                let mut n = GobgpNeighbor::new(addr(lb, *v6_session), BALANCER_AS)
                    .passive(true)
                    .hold_time(HOLD_TIME)
                    .description(lb);
                if *r == "r1" {
                    n = n.password(&o.md5_r1);
                }
                g = g.neighbor(n);
            }
            Router {
                name: (*r).to_owned(),
                dir: o.run.join(r),
                gobgpd: g,
            }
        })
        .collect();

    let vips = VIPS
        .iter()
        .map(|(vip, proto, ports, group, lbs, lp)| {
            let rs: Vec<IpAddr> = REAL_SERVERS
                .iter()
                .filter(|a| a.is_ipv4() == vip.is_ipv4())
                .copied()
                .collect();
            Vip::new(*vip, lbs)
                .proto(*proto)
                .ports(ports)
                .group(group)
                .local_pref(*lp)
                .lb_kind("TUN")
                .real_servers(&rs)
        })
        .collect();

    LabSpec {
        config,
        secret,
        arbiter,
        balancers,
        routers,
        vips,
    }
}

/// The lab's names and addresses as bash declarations, for `netns-lab/lab` to source
/// (global: `declare -g`, as the script sources them inside a function).
pub fn topology_sh(brokers: usize) -> String {
    let all = nodes(brokers);
    let list = |v: &mut dyn Iterator<Item = &str>| v.collect::<Vec<_>>().join(" ");
    let assoc = |f: &dyn Fn(&Node) -> String| all.iter().map(f).collect::<Vec<_>>().join(" ");
    let mut t = String::from(
        "# shellcheck shell=bash disable=SC2034\n\
         # generated by labkit (lab-gen): the lab's nodes and addresses (labkit/src/bridge.rs)\n",
    );
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(t, "NODES=({})", list(&mut all.iter().map(|n| n.0)));
    let _ = writeln!(
        t,
        "BROKERS=({})",
        list(&mut brokers_of(brokers).iter().map(|n| n.0))
    );
    let _ = writeln!(t, "ROUTERS=({})", list(&mut ROUTERS.iter().map(|r| r.0)));
    let _ = writeln!(t, "BALANCERS=({})", BALANCERS.join(" "));
    let _ = writeln!(
        t,
        "declare -gA V4=({})",
        assoc(&|n| format!("[{}]={}", n.0, n.1))
    );
    let _ = writeln!(
        t,
        "declare -gA V6=({})",
        assoc(&|n| format!("[{}]={}", n.0, n.2))
    );
    let _ = writeln!(
        t,
        "declare -gA ROUTER_AS=({})",
        ROUTERS
            .iter()
            .map(|(r, asn, _)| format!("[{r}]={asn}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(t, "AMQP_PORT={AMQP_PORT}");
    let _ = writeln!(t, "AMQP_USER={AMQP_USER}");
    t
}

/// Options with fixed secrets and keys, for tests.
#[cfg(test)]
pub(crate) fn test_opts(run: &Path, brokers: usize) -> BridgeOpts {
    BridgeOpts {
        run: run.to_owned(),
        bin: "/usr/sbin/ipvs-sync".into(),
        ipvs: false,
        interface: "lo".into(),
        amqp_password: "pw".into(),
        arbiter_key: LabKey::from_seed([0; 32]),
        balancer_keys: [1, 2, 3].map(|n| LabKey::from_seed([n; 32])),
        md5_r1: "md5".into(),
        brokers,
    }
}

/// The run directory's file with [`topology_sh`].
pub fn topology_path(run: &Path) -> PathBuf {
    run.join("topology.sh")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_for_the_script_names_every_node_once() {
        let t = topology_sh(1);
        assert!(
            t.contains("NODES=(r1 r2 broker arbiter lb1 lb2 lb3)\n"),
            "{t}"
        );
        assert!(t.contains("BROKERS=(broker)\n"));
        assert!(t.contains("BALANCERS=(lb1 lb2 lb3)\n"));
        assert!(t.contains("declare -gA V4=([r1]=192.0.2.1 [r2]=192.0.2.2 [broker]=192.0.2.10 "));
        assert!(t.contains("[lb3]=2001:db8::33)\n"));
        assert!(t.contains("declare -gA ROUTER_AS=([r1]=65000 [r2]=65001)\n"));
        assert_eq!(v4("lb2"), Some(Ipv4Addr::new(192, 0, 2, 32)));
        assert_eq!(v6("r2"), Some(doc6(2)));
        assert_eq!(v4("nope"), None);
    }

    #[test]
    fn a_cluster_adds_two_brokers_and_lists_every_url() {
        let t = topology_sh(3);
        assert!(
            t.contains("NODES=(r1 r2 broker broker2 broker3 arbiter lb1 lb2 lb3)\n"),
            "{t}"
        );
        assert!(t.contains("BROKERS=(broker broker2 broker3)\n"));
        assert!(t.contains("[broker3]=192.0.2.12 "));
        let spec = spec(&test_opts("/run/lab".as_ref(), 3));
        assert_eq!(
            spec.config.get("main", "amqp_server"),
            Some(
                "amqp://ipvs@192.0.2.10:5672/%2f,amqp://ipvs@192.0.2.11:5672/%2f,\
                 amqp://ipvs@192.0.2.12:5672/%2f"
            )
        );
    }

    #[test]
    fn routers_take_each_balancer_over_their_own_family() {
        let spec = spec(&test_opts("/run/lab".as_ref(), 1));
        let r1 = spec.routers[0].gobgpd.to_toml();
        assert_eq!(r1.matches("[[neighbors]]").count(), 3);
        assert!(r1.contains("neighbor-address = \"192.0.2.31\""));
        assert_eq!(r1.matches("auth-password = \"md5\"").count(), 3);
        let r2 = spec.routers[1].gobgpd.to_toml();
        assert!(
            r2.contains("neighbor-address = \"2001:db8::33\"") && !r2.contains("auth-password")
        );
        assert!(r2.contains("  as = 65001\n"));
    }
}
