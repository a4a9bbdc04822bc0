//! The fleet's address plan and its [`LabSpec`]: pure, no namespace needed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::{FleetOpts, LOCAL_AS};
use crate::spec::{Arbiter, Balancer, LabKey, LabSpec, Peer, Router, Vip};
use crate::{GobgpConfig, GobgpFamily, GobgpNeighbor, Ini};

/// The broker's address: core's end of lb1's link.
pub const BROKER: &str = "192.0.2.5:5672";

/// The real server of every virtual server (the arbiter's keepalived is not running).
const REAL_SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200));

/// Core's end of balancer `k`'s link (`k` from 1): `192.0.2.(4k+1)/30`.
pub fn core_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, (4 * k + 1) as u8)
}

/// Balancer `k`'s end of its link to core, also its router id: `192.0.2.(4k+2)`.
pub fn lb_core_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, (4 * k + 2) as u8)
}

/// Balancer `k`'s (IPv4, IPv6) address on its link to router `j` (from 0):
/// `198.51.100.(4(8k+j)+1)/30` and `2001:db8:K:J+1::1/64`.
pub fn lb_addrs_to(k: usize, j: usize) -> (Ipv4Addr, Ipv6Addr) {
    let base = 4 * (k * 8 + j);
    (
        Ipv4Addr::new(198, 51, 100, (base + 1) as u8),
        Ipv6Addr::new(0x2001, 0xdb8, k as u16, (j + 1) as u16, 0, 0, 0, 1),
    )
}

/// Router `j`'s (IPv4, IPv6) address on its link to balancer `k`: the `+1` of
/// [`lb_addrs_to`].
pub fn router_addrs_to(k: usize, j: usize) -> (Ipv4Addr, Ipv6Addr) {
    let (v4, v6) = lb_addrs_to(k, j);
    (
        Ipv4Addr::from(u32::from(v4) + 1),
        Ipv6Addr::from(u128::from(v6) + 1),
    )
}

/// The fleet as a [`LabSpec`]: files under `dir`, daemons reaching the broker at
/// `amqp_url`, each node with a new key.
pub fn fleet_spec(opts: &FleetOpts, dir: &Path, amqp_url: &str) -> std::io::Result<LabSpec> {
    let names: Vec<String> = (1..=opts.balancers).map(|k| format!("lb{k}")).collect();
    let mut config = Ini::new();
    config
        .set("main", "amqp_server", amqp_url)
        .set("main", "ipvs", false)
        .set("main", "heartbeat_interval", 1)
        .set("main", "consumer_alive_ttl", opts.consumer_alive_ttl)
        .set_opt("messages", "max_age", opts.max_age);
    config.merge(&opts.config);
    let secret = Ini::new();

    let mut arbiter_config = Ini::new();
    arbiter_config
        .set("main", "http_listen", "127.0.0.1:9100")
        .set("server", "startup_hold", opts.startup_hold);
    arbiter_config.merge(&opts.arbiter_config);
    let arbiter_dir = dir.join("arbiter");
    let arbiter = Arbiter {
        desc_dir: opts
            .desc_dir
            .clone()
            .unwrap_or_else(|| arbiter_dir.join("desc")),
        dir: arbiter_dir,
        quorum_bin: None,
        config: arbiter_config,
        secret: Ini::new(),
        key: LabKey::generate()?,
    };

    let balancers = names
        .iter()
        .enumerate()
        .map(|(i, name)| -> std::io::Result<Balancer> {
            let k = i + 1;
            let mut c = Ini::new();
            c.set("main", "http_listen", format!("127.0.0.1:{}", http_port(k)))
                .set("bgp", "hold_time", opts.hold_time)
                .set("bgp", "connect_retry", 1)
                .set("bgp", "communities", "65000:100")
                .set("announce", "interface", "lo")
                .set_opt(
                    "announce",
                    "firewall_check",
                    opts.firewall_check.as_ref().map(|p| p.display()),
                );
            c.merge(&opts.balancer_config);
            let mut peers = Vec::new();
            for (j, asn) in opts.routers.iter().enumerate() {
                let (r4, r6) = router_addrs_to(k, j);
                for (suffix, address) in [("", IpAddr::V4(r4)), ("v6", IpAddr::V6(r6))] {
                    peers.push(Peer {
                        name: format!("r{}{suffix}", j + 1),
                        address,
                        remote_as: *asn,
                        md5: None,
                    });
                }
            }
            if opts.bird {
                peers.push(Peer {
                    name: "bird".into(),
                    address: IpAddr::V4(router_addrs_to(k, opts.routers.len()).0),
                    remote_as: LOCAL_AS,
                    md5: None,
                });
            }
            Ok(Balancer {
                name: name.clone(),
                dir: dir.join(name),
                local_as: LOCAL_AS,
                router_id: IpAddr::V4(lb_core_addr(k)),
                peers,
                config: c,
                secret: Ini::new(),
                key: LabKey::generate()?,
            })
        })
        .collect::<std::io::Result<_>>()?;

    let routers = opts
        .routers
        .iter()
        .enumerate()
        .map(|(j, asn)| {
            let mut g = GobgpConfig::new(*asn, router_addrs_to(1, j).0);
            for k in 1..=opts.balancers {
                let (lb4, lb6) = lb_addrs_to(k, j);
                for (addr, family) in [
                    (IpAddr::V4(lb4), GobgpFamily::Ipv4Unicast),
                    (IpAddr::V6(lb6), GobgpFamily::Ipv6Unicast),
                ] {
                    g = g.neighbor(
                        GobgpNeighbor::new(addr, LOCAL_AS)
                            .passive(true)
                            .hold_time(opts.hold_time.into())
                            .families(&[family])
                            .graceful_restart_helper(opts.router_graceful_restart),
                    );
                }
            }
            Router {
                name: format!("r{}", j + 1),
                dir: dir.join(format!("r{}", j + 1)),
                gobgpd: g,
            }
        })
        .collect();

    let lbs: Vec<&str> = names.iter().map(String::as_str).collect();
    let vips = opts
        .vips
        .iter()
        .map(|v| {
            Vip::new(*v, &lbs)
                .ports(&opts.ports)
                .real_servers(&[REAL_SERVER])
        })
        .collect();
    Ok(LabSpec {
        config,
        secret,
        arbiter,
        balancers,
        routers,
        vips,
    })
}

/// The HTTP port (`/metrics`, `/status`) of balancer `k` on its namespace's loopback; the
/// arbiter's is 9100.
pub fn http_port(k: usize) -> u16 {
    9100 + k as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_pair_up_per_link() {
        assert_eq!(core_addr(1), Ipv4Addr::new(192, 0, 2, 5));
        assert_eq!(lb_core_addr(2), Ipv4Addr::new(192, 0, 2, 10));
        let (lb4, lb6) = lb_addrs_to(1, 1);
        let (r4, r6) = router_addrs_to(1, 1);
        assert_eq!(
            (lb4.to_string(), r4.to_string()),
            ("198.51.100.37".into(), "198.51.100.38".into())
        );
        assert_eq!(
            (lb6.to_string(), r6.to_string()),
            ("2001:db8:1:2::1".into(), "2001:db8:1:2::2".into())
        );
        assert_eq!(format!("{BROKER}"), format!("{}:5672", core_addr(1)));
    }

    #[test]
    fn fleet_configs_load_in_the_config_crate() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FleetOpts {
            balancers: 2,
            routers: vec![LOCAL_AS, super::super::EBGP_AS],
            max_age: Some(2),
            router_graceful_restart: true,
            balancer_config: Ini::with("announce", "remove_vips_on_stop", true),
            ..FleetOpts::default()
        };
        let spec = fleet_spec(
            &opts,
            dir.path(),
            "amqp://u:p@192.0.2.5:5672/%2f?heartbeat=60",
        )
        .unwrap();
        spec.write().unwrap();
        let lb2 = config::Config::load(&dir.path().join("lb2/config.ini")).unwrap();
        assert_eq!(lb2.main.hostname, "lb2");
        assert_eq!(lb2.bgp.peers.len(), 4);
        assert!(lb2.announce.remove_vips_on_stop);
        let peer = lb2.bgp.peer("r2v6").unwrap();
        assert_eq!(
            (peer.address.to_string(), peer.remote_as),
            ("2001:db8:2:2::2".into(), 65001)
        );
        let arbiter = config::Config::load(&dir.path().join("arbiter/config.ini")).unwrap();
        let report = config::mapping::build(&arbiter.main.service_mapping_wildcard).unwrap();
        assert_eq!(report.vips().len(), 2);
        let r1 = spec.routers[0].gobgpd.to_toml();
        assert_eq!(r1.matches("[[neighbors]]").count(), 4);
        assert_eq!(r1.matches("helper-only = true").count(), 4);
        assert_eq!(
            r1.matches("[neighbors.afi-safis.mp-graceful-restart.config]")
                .count(),
            4
        );
    }
}
