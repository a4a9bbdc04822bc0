//! `config.ini` + `secret.ini`: every key, every kind of bad value, unknown and repeated
//! keys and sections, secret file permissions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{ArgPattern, BfdConfig, Community, Config, ConfigError, EbgpPreference};

const FULL: &str = r#"
; every key set to a non-default value
[main]
amqp_server = amqp://ipvs@broker.example.net:5672/ipvs
announces_source = Client
mapping_update_interval = 30
service_mapping_wildcard = /srv/keepalived/lbs/*/*.conf
service_mapping_config = /var/lib/ipvs-sync/svc_mapping.json
export_service_mapping_wildcard_to_config = false
vips_description_update_interval = 0.25
vip_description_filepath = /run/keepalived-%s-desc.json
consumer_alive_ttl = 20
active_consumers_update_interval = 0.2
heartbeat_interval = 2.5
tree_request_interval = 60
announces_request_interval = 150
announces_queue_limit = 1000
firewall_update_try = 3
client_requests_queue_limit = 2000
processing_queue_limit = 3000
hostname = LB1.Example.NET
http_listen = [::1]:9180
ipvs = no
arbiter_name = Arbiter.Example.NET
arbiter_public_key = 11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=
state_dir = /srv/ipvs-sync/state
amqp_ca_file = /etc/ipvs-sync/ca.pem
amqp_client_cert = /etc/ipvs-sync/lb1.pem
amqp_client_key = /etc/ipvs-sync/lb1.key

[bgp]
local_as = 65000
router_id = 192.0.2.254
hold_time = 30
connect_retry = 1.5
next_hop_v4 = 192.0.2.1
next_hop_v6 = 2001:db8::1
communities = 65000:100 65000:200, 65000:1:2 no-export
graceful_restart = yes
graceful_restart_time = 300
ebgp_preference = prepend
ebgp_med_base = 500
ebgp_prepend_step = 25

[bgp.peer.r1]
address = 192.0.2.253
remote_as = 65000
port = 1179
passive = true
password = "md5 key;1"
local_address = 192.0.2.1
ttl_security = true
hold_time = 9
next_hop_v4 = 192.0.2.2
next_hop_v6 = 2001:db8::2
bfd = true
bfd_min_tx = 0.05
bfd_min_rx = 1.5
bfd_multiplier = 255

[bgp.peer.r2-v6]
address = 2001:db8::fe
remote_as = 4200000000
bfd = yes

[bfd]
min_tx = 0.1
min_rx = 0.000001
multiplier = 1

[announce]
interface = vip0
firewall_check = /usr/local/sbin/fw-has-vip --quiet
remove_vips_on_stop = true

[client]
sync_dirs = /etc/keepalived, /etc/ipvs-sync/extra
execute.reload = /usr/sbin/service keepalived reload
execute.drain = /usr/local/sbin/drain {ip} "{name}" {int}
execute_timeout = 2
fallback_after = 0
fallback_recover = 45
keepalived = /opt/keepalived/sbin/keepalived

[server]
quorum_socket = /run/ipvs-sync/q.sock
startup_hold = 0
balancer_keys_dir = /srv/ipvs-sync/balancers
sync_dirs = /etc/keepalived

[messages]
max_age = 10
max_bytes = 1048576
"#;

const SECRET: &str = "[secret]\namqp_password = s3cr=t pass\n\
                      node_key = nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=\n\
                      bgp_password.r2-v6 = v6-key\n";

#[test]
fn every_key_is_parsed() {
    let c = Config::from_strs(FULL, Some(SECRET)).unwrap();
    let m = &c.main;
    assert_eq!(
        m.amqp_server.to_string(),
        "amqp://ipvs@broker.example.net:5672/ipvs"
    );
    assert_eq!(m.mapping_update_interval, Duration::from_secs(30));
    assert_eq!(
        m.service_mapping_wildcard.pattern(),
        "/srv/keepalived/lbs/*/*.conf"
    );
    assert_eq!(
        m.service_mapping_config,
        PathBuf::from("/var/lib/ipvs-sync/svc_mapping.json")
    );
    assert!(!m.export_service_mapping_wildcard_to_config);
    assert_eq!(
        m.vips_description_update_interval,
        Duration::from_millis(250)
    );
    assert_eq!(
        c.desc_path(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))),
        PathBuf::from("/run/keepalived-198.51.100.1-desc.json")
    );
    assert_eq!(m.consumer_alive_ttl, Duration::from_secs(20));
    assert_eq!(
        m.active_consumers_update_interval,
        Duration::from_millis(200)
    );
    assert_eq!(m.heartbeat_interval, Duration::from_millis(2500));
    assert_eq!(m.tree_request_interval, Duration::from_secs(60));
    assert_eq!(m.announces_request_interval, Duration::from_secs(150));
    assert_eq!(m.announces_queue_limit, 1000);
    assert_eq!(m.firewall_update_try, 3);
    assert_eq!(m.client_requests_queue_limit, 2000);
    assert_eq!(m.processing_queue_limit, 3000);
    assert_eq!(m.hostname, "lb1.example.net");
    assert_eq!(
        m.http_listen,
        Some("[::1]:9180".parse::<SocketAddr>().unwrap())
    );
    assert!(!m.ipvs);

    let b = &c.bgp;
    assert_eq!(b.local_as, Some(65000));
    assert_eq!(b.router_id, Some(Ipv4Addr::new(192, 0, 2, 254)));
    assert_eq!(b.hold_time, 30);
    assert_eq!(b.connect_retry, Duration::from_millis(1500));
    assert_eq!(b.next_hop_v4, Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(
        b.next_hop_v6,
        Some("2001:db8::1".parse::<Ipv6Addr>().unwrap())
    );
    assert_eq!(
        b.communities,
        [
            Community::Standard(65000 << 16 | 100),
            Community::Standard(65000 << 16 | 200),
            Community::Large {
                global: 65000,
                local1: 1,
                local2: 2
            },
            Community::NO_EXPORT,
        ]
    );
    assert!(b.graceful_restart);
    assert_eq!(b.graceful_restart_time, 300);
    assert_eq!(b.ebgp_preference, EbgpPreference::Prepend);
    assert_eq!(b.ebgp_med_base, 500);
    assert_eq!(b.ebgp_prepend_step, 25);
    assert_eq!(b.ebgp_attributes(450).extra_prepends, 2);

    assert_eq!(b.peers.len(), 2);
    let r1 = b.peer("r1").unwrap();
    assert_eq!(r1.address, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 253)));
    assert_eq!(r1.remote_as, 65000);
    assert!(!r1.is_ebgp(65000));
    assert_eq!(r1.port, 1179);
    assert!(r1.passive);
    assert_eq!(r1.password.as_ref().unwrap().expose(), "md5 key;1");
    assert_eq!(
        r1.local_address,
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
    );
    assert!(r1.ttl_security);
    assert_eq!(r1.hold_time, Some(9));
    assert_eq!(r1.next_hop_v4, Some(Ipv4Addr::new(192, 0, 2, 2)));
    assert_eq!(r1.next_hop_v6, Some("2001:db8::2".parse().unwrap()));
    let r2 = b.peer("r2-v6").unwrap();
    assert_eq!(r2.remote_as, 4_200_000_000);
    assert!(r2.is_ebgp(65000));
    assert_eq!(r2.port, 179);
    assert!(!r2.passive && !r2.ttl_security);
    assert_eq!(r2.password.as_ref().unwrap().expose(), "v6-key");
    assert_eq!(r2.hold_time, None);

    assert_eq!(
        c.bfd,
        BfdConfig {
            min_tx: Duration::from_millis(100),
            min_rx: Duration::from_micros(1),
            multiplier: 1
        }
    );
    assert!(r1.bfd);
    assert_eq!(
        r1.bfd_timers(&c.bfd),
        Some(BfdConfig {
            min_tx: Duration::from_millis(50),
            min_rx: Duration::from_millis(1500),
            multiplier: 255
        })
    );
    assert_eq!(r2.bfd_timers(&c.bfd), Some(c.bfd), "no override: [bfd]");

    assert_eq!(c.announce.interface.as_str(), "vip0");
    assert!(!c.announce.interface.is_loopback());
    assert_eq!(
        c.announce.firewall_check.as_deref().unwrap(),
        ["/usr/local/sbin/fw-has-vip", "--quiet"]
    );
    assert!(c.announce.remove_vips_on_stop);
    assert_eq!(
        c.client.sync_dirs,
        [
            PathBuf::from("/etc/keepalived"),
            PathBuf::from("/etc/ipvs-sync/extra")
        ]
    );
    let rules: Vec<_> = c.client.execute.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(rules, ["reload", "drain"]);
    assert_eq!(
        c.client.execute[1].args,
        [ArgPattern::Ip, ArgPattern::Name, ArgPattern::Int]
    );
    assert_eq!(
        c.client.execute[0].program,
        PathBuf::from("/usr/sbin/service")
    );
    assert_eq!(c.client.execute_timeout, Duration::from_secs(2));
    assert_eq!(c.client.fallback_after, None, "0 = never");
    assert_eq!(c.client.fallback_recover, Duration::from_secs(45));
    assert_eq!(
        c.client.keepalived,
        PathBuf::from("/opt/keepalived/sbin/keepalived")
    );
    assert_eq!(
        c.server.quorum_socket,
        PathBuf::from("/run/ipvs-sync/q.sock")
    );
    assert_eq!(c.server.startup_hold, Duration::ZERO);
    assert_eq!(
        c.server.balancer_keys_dir,
        PathBuf::from("/srv/ipvs-sync/balancers")
    );
    assert_eq!(c.server.sync_dirs, [PathBuf::from("/etc/keepalived")]);
    assert_eq!(m.arbiter_name.as_deref(), Some("arbiter.example.net"));
    assert_eq!(
        m.arbiter_public_key.as_deref(),
        Some("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    );
    assert_eq!(m.state_dir, PathBuf::from("/srv/ipvs-sync/state"));
    assert_eq!(
        m.amqp_ca_file.as_deref(),
        Some(Path::new("/etc/ipvs-sync/ca.pem"))
    );
    assert_eq!(
        m.amqp_client_cert.as_deref(),
        Some(Path::new("/etc/ipvs-sync/lb1.pem"))
    );
    assert_eq!(
        m.amqp_client_key.as_deref(),
        Some(Path::new("/etc/ipvs-sync/lb1.key"))
    );
    assert_eq!(c.messages.max_age, Duration::from_secs(10));
    assert_eq!(c.messages.max_bytes, 1_048_576);

    assert_eq!(
        c.amqp_url(),
        "amqp://ipvs:s3cr%3Dt%20pass@broker.example.net:5672/ipvs"
    );
    assert_eq!(
        c.node_key().unwrap(),
        "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
    );
}

#[test]
fn defaults() {
    let c = Config::from_strs(
        "[main]\namqp_server = amqp://broker/\nhostname = lb9\n",
        None,
    )
    .unwrap();
    let m = &c.main;
    assert_eq!(m.mapping_update_interval, Duration::from_secs(60));
    assert_eq!(
        m.service_mapping_wildcard.pattern(),
        "/etc/keepalived/lbs/*/*/*.conf"
    );
    assert_eq!(
        m.service_mapping_config,
        PathBuf::from("/var/tmp/svc_mapping.json")
    );
    assert!(m.export_service_mapping_wildcard_to_config);
    assert_eq!(
        m.vips_description_update_interval,
        Duration::from_millis(500)
    );
    assert_eq!(
        c.desc_path("2001:db8::1".parse().unwrap()),
        PathBuf::from("/var/run/keepalived-2001:db8::1-desc.json")
    );
    assert_eq!(m.consumer_alive_ttl, Duration::from_secs(15));
    assert_eq!(
        m.active_consumers_update_interval,
        Duration::from_millis(100)
    );
    assert_eq!(m.heartbeat_interval, Duration::from_secs(3));
    assert_eq!(m.tree_request_interval, Duration::from_secs(120));
    assert_eq!(m.announces_request_interval, Duration::from_secs(300));
    assert_eq!(m.announces_queue_limit, 524_288);
    assert_eq!(m.firewall_update_try, 2);
    assert_eq!(m.client_requests_queue_limit, 262_144);
    assert_eq!(m.processing_queue_limit, 65_536);
    assert_eq!(m.http_listen, None);
    assert!(m.ipvs);
    let b = &c.bgp;
    assert_eq!((b.local_as, b.router_id, b.hold_time), (None, None, 90));
    assert_eq!(b.connect_retry, Duration::from_secs(5));
    assert_eq!(b.graceful_restart_time, 120);
    assert!(!b.graceful_restart);
    assert_eq!(b.ebgp_preference, EbgpPreference::Med);
    assert_eq!((b.ebgp_med_base, b.ebgp_prepend_step), (1000, 50));
    assert!(b.peers.is_empty() && b.communities.is_empty());
    assert_eq!(
        c.bfd,
        BfdConfig {
            min_tx: Duration::from_millis(300),
            min_rx: Duration::from_millis(300),
            multiplier: 3
        }
    );
    assert!(c.announce.interface.is_loopback());
    assert_eq!(c.announce.firewall_check, None);
    assert!(!c.announce.remove_vips_on_stop);
    assert!(c.client.sync_dirs.is_empty() && c.client.execute.is_empty());
    assert_eq!(c.client.execute_timeout, Duration::from_secs(10));
    assert_eq!(c.client.fallback_after, Some(Duration::from_secs(60)));
    assert_eq!(c.client.fallback_recover, Duration::from_secs(30));
    assert_eq!(c.client.keepalived, PathBuf::from("/usr/sbin/keepalived"));
    assert_eq!(
        c.server.quorum_socket,
        PathBuf::from("/run/ipvs-sync/quorum.sock")
    );
    assert_eq!(c.server.startup_hold, Duration::from_secs(10));
    assert_eq!(
        c.server.balancer_keys_dir,
        PathBuf::from("/etc/ipvs-sync/balancers")
    );
    assert!(c.server.sync_dirs.is_empty());
    assert_eq!(m.state_dir, PathBuf::from("/var/lib/ipvs-sync"));
    assert_eq!(m.arbiter_name, None);
    assert_eq!(m.arbiter_public_key, None);
    assert_eq!(m.amqp_ca_file, None);
    assert_eq!(m.amqp_client_cert, None);
    assert_eq!(m.amqp_client_key, None);
    assert_eq!(c.messages.max_age, Duration::from_secs(30));
    assert_eq!(c.messages.max_bytes, 16 << 20);
    assert_eq!(c.amqp_url(), "amqp://broker/");
    assert!(matches!(
        c.node_key(),
        Err(ConfigError::MissingSecret { .. })
    ));
}

#[test]
fn several_broker_nodes_default_to_quorum_queues() {
    use config::QueueType;
    let one = Config::from_strs(
        "[main]\namqp_server = amqp://u@b1/v\nhostname = lb1\n",
        None,
    )
    .unwrap();
    assert_eq!(one.main.amqp_queue_type, QueueType::Classic);
    let three = Config::from_strs(
        "[main]\namqp_server = amqp://u@b1/v, amqp://u@b2/v, amqp://u@b3/v\nhostname = lb1\n",
        Some("[secret]\namqp_password = pw\n"),
    )
    .unwrap();
    assert_eq!(three.main.amqp_queue_type, QueueType::Quorum);
    assert_eq!(three.main.amqp_server.len(), 3);
    assert_eq!(
        three.amqp_url(),
        "amqp://u:pw@b1/v,amqp://u:pw@b2/v,amqp://u:pw@b3/v"
    );
    let classic = Config::from_strs(
        "[main]\namqp_server = amqp://u@b1/v,amqp://u@b2/v\namqp_queue_type = classic\nhostname = lb1\n",
        None,
    )
    .unwrap();
    assert_eq!(classic.main.amqp_queue_type, QueueType::Classic);
    let err = Config::from_strs(
        "[main]\namqp_server = amqp://u@b1/v,amqp://w@b2/v\nhostname = lb1\n",
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("one user and one vhost"), "{err}");
    let err = Config::from_strs(
        "[main]\namqp_server = amqp://u@b1/v\namqp_queue_type = stream\nhostname = lb1\n",
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("quorum or classic"), "{err}");
}

#[test]
fn hostname_defaults_to_this_host() {
    let c = Config::from_strs("[main]\namqp_server = amqp://broker/\n", None).unwrap();
    let kernel = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let short = kernel
        .trim()
        .split('.')
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        c.main.hostname.starts_with(&short),
        "{} vs {short}",
        c.main.hostname
    );
}

/// A minimal valid config with one peer, into which a bad line is put.
const BASE: &str = "[main]\namqp_server = amqp://u@broker/\nhostname = lb1\n\
                    [bgp]\nlocal_as = 65000\nrouter_id = 192.0.2.254\n\
                    [bgp.peer.r1]\naddress = 192.0.2.1\nremote_as = 65001\n";

/// Puts `key = value` in `section` of BASE (adding the section if needed) and returns
/// the text and the 1-based line of the new key.
fn with(section: &str, key: &str, value: &str) -> (String, usize) {
    let mut lines: Vec<String> = BASE.lines().map(str::to_owned).collect();
    let header = format!("[{section}]");
    let at = match lines.iter().position(|l| *l == header) {
        Some(i) => {
            // drop an existing assignment of the same key in that section
            let end = lines[i + 1..]
                .iter()
                .position(|l| l.starts_with('['))
                .map_or(lines.len(), |p| i + 1 + p);
            if let Some(k) = lines[i + 1..end]
                .iter()
                .position(|l| l.starts_with(&format!("{key} =")))
            {
                lines.remove(i + 1 + k);
            }
            i + 1
        }
        None => {
            lines.push(header);
            lines.len()
        }
    };
    lines.insert(at, format!("{key} = {value}"));
    (lines.join("\n") + "\n", at + 1)
}

#[test]
fn base_is_valid() {
    Config::from_strs(BASE, None).unwrap();
}

#[test]
fn bad_values_name_file_line_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("main", "amqp_server", "http://broker/"),
        ("main", "amqp_server", "amqp://broker:0/"),
        ("main", "announces_source", "Elsewhere"),
        ("main", "mapping_update_interval", "0"),
        ("main", "mapping_update_interval", "-5"),
        ("main", "mapping_update_interval", "soon"),
        (
            "main",
            "service_mapping_wildcard",
            "/etc/keepalived/lbs/lb1/x.conf",
        ),
        ("main", "service_mapping_wildcard", "relative/*/x.conf"),
        ("main", "service_mapping_config", "svc.json"),
        ("main", "export_service_mapping_wildcard_to_config", "maybe"),
        ("main", "vips_description_update_interval", "nan"),
        ("main", "vip_description_filepath", "/var/run/desc.json"),
        (
            "main",
            "vip_description_filepath",
            "/var/run/{vip}/desc.json",
        ),
        ("main", "consumer_alive_ttl", "0.0"),
        ("main", "active_consumers_update_interval", "inf"),
        ("main", "heartbeat_interval", "3s"),
        ("main", "tree_request_interval", "-1"),
        ("main", "announces_request_interval", "x"),
        ("main", "announces_queue_limit", "0"),
        ("main", "announces_queue_limit", "-1"),
        ("main", "firewall_update_try", "0"),
        ("main", "client_requests_queue_limit", "1.5"),
        ("main", "processing_queue_limit", "lots"),
        ("main", "hostname", "lb 1"),
        ("main", "hostname", "lb1..example"),
        ("main", "http_listen", "9180"),
        ("main", "http_listen", "::1:9180"),
        ("main", "ipvs", "2"),
        ("bgp", "local_as", "abc"),
        ("bgp", "local_as", "0"),
        ("bgp", "local_as", "4294967296"),
        ("bgp", "router_id", "2001:db8::1"),
        ("bgp", "router_id", "0.0.0.0"),
        ("bgp", "hold_time", "2"),
        ("bgp", "hold_time", "65536"),
        ("bgp", "connect_retry", "0"),
        ("bgp", "next_hop_v4", "2001:db8::1"),
        ("bgp", "next_hop_v6", "192.0.2.1"),
        ("bgp", "communities", "65536:1"),
        ("bgp", "communities", "65000"),
        ("bgp", "graceful_restart", "sometimes"),
        ("bgp", "graceful_restart_time", "4096"),
        ("bgp", "ebgp_preference", "localpref"),
        ("bgp", "ebgp_med_base", "-1"),
        ("bgp", "ebgp_prepend_step", "0"),
        ("bgp.peer.r1", "address", "router1"),
        ("bgp.peer.r1", "remote_as", "abc"),
        ("bgp.peer.r1", "remote_as", "23456"),
        ("bgp.peer.r1", "port", "0"),
        ("bgp.peer.r1", "port", "65536"),
        ("bgp.peer.r1", "passive", "y"),
        ("bgp.peer.r1", "password", &"k".repeat(81)),
        ("bgp.peer.r1", "local_address", "2001:db8::1"),
        ("bgp.peer.r1", "local_address", "x"),
        ("bgp.peer.r1", "ttl_security", "255"),
        ("bgp.peer.r1", "hold_time", "1"),
        ("bgp.peer.r1", "next_hop_v4", "::1"),
        ("bgp.peer.r1", "next_hop_v6", "1.2.3.4"),
        ("bgp.peer.r1", "bfd", "sometimes"),
        ("bgp.peer.r1", "bfd_min_tx", "0"),
        ("bgp.peer.r1", "bfd_min_tx", "0.0000004"),
        ("bgp.peer.r1", "bfd_min_rx", "4294.9673"),
        ("bgp.peer.r1", "bfd_min_rx", "300ms"),
        ("bgp.peer.r1", "bfd_multiplier", "0"),
        ("bgp.peer.r1", "bfd_multiplier", "256"),
        ("bfd", "min_tx", "-0.3"),
        ("bfd", "min_tx", "0.0000001"),
        ("bfd", "min_rx", "5000"),
        ("bfd", "min_rx", "inf"),
        ("bfd", "multiplier", "0"),
        ("bfd", "multiplier", "3.5"),
        ("announce", "interface", "dummy-vips-0123456"),
        ("announce", "interface", "vip/0"),
        ("announce", "firewall_check", "fw-check --vip"),
        ("announce", "firewall_check", "/bin/fw 'open"),
        ("announce", "remove_vips_on_stop", "?"),
        ("client", "sync_dirs", "/etc/keepalived, relative/dir"),
        ("client", "execute_allow", "/usr/sbin/reload"),
        ("client", "execute.bad@name", "/bin/true"),
        ("client", "execute.x", "true"),
        ("client", "execute.x", "/bin/x 'open"),
        ("main", "arbiter_name", "broadcast"),
        ("main", "arbiter_name", "a b"),
        ("main", "arbiter_public_key", "not-a-key"),
        ("main", "state_dir", "var/lib/x"),
        ("main", "amqp_ca_file", "ca.pem"),
        ("main", "hostname", "lbs"),
        ("server", "balancer_keys_dir", "keys"),
        ("server", "sync_dirs", "rel"),
        ("client", "execute_timeout", "0"),
        ("client", "fallback_after", "-1"),
        ("client", "fallback_recover", "0"),
        ("client", "keepalived", "keepalived"),
        ("server", "quorum_socket", "quorum.sock"),
        ("server", "startup_hold", "-1"),
        ("messages", "max_age", "-30"),
        ("messages", "max_bytes", "0"),
        ("messages", "max_bytes", "4095"),
        ("messages", "max_bytes", "268435457"),
        ("messages", "queue_max_length", "0"),
        ("messages", "queue_expires", "0"),
    ];
    for (section, key, value) in cases {
        let (text, line) = with(section, key, value);
        let err = match Config::from_strs(&text, None) {
            Ok(_) => panic!("[{section}] {key} = {value}: accepted"),
            Err(e) => e,
        };
        let prefix = format!("config.ini:{line}: [{section}] {key}: ");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&prefix),
            "{msg:?} should start with {prefix:?}"
        );
        match &err {
            ConfigError::InvalidValue { got, expected, .. } => {
                if *key == "password" {
                    assert_eq!(got, "<hidden>", "a password must not be echoed");
                } else {
                    assert_eq!(got, value);
                }
                assert!(!expected.is_empty());
            }
            ConfigError::Refused { reason, .. } => assert!(!reason.is_empty()),
            other => panic!("[{section}] {key} = {value}: unexpected {other:?}"),
        }
    }
}

#[test]
fn the_example_message_of_the_brief() {
    let (text, line) = with("bgp.peer.r1", "remote_as", "abc");
    assert_eq!(
        Config::from_strs(&text, None).unwrap_err().to_string(),
        format!(
            "config.ini:{line}: [bgp.peer.r1] remote_as: expected an AS number 1..4294967295, got 'abc'"
        )
    );
}

#[test]
fn server_announces_source_is_refused_with_reason() {
    let (text, _) = with("main", "announces_source", "Server");
    let msg = Config::from_strs(&text, None).unwrap_err().to_string();
    assert!(msg.contains("not supported"), "{msg}");
    assert!(msg.contains("ExaBGP"), "{msg}");
}

#[test]
fn vip_announces_filepath_is_the_older_name_of_vip_description_filepath() {
    let (text, _) = with("main", "vip_announces_filepath", "/run/kad/{vip}.json");
    let c = Config::from_strs(&text, None).unwrap();
    let vip = "192.0.2.1".parse().unwrap();
    assert_eq!(
        c.main.vip_description_filepath.path(vip),
        std::path::PathBuf::from("/run/kad/192.0.2.1.json")
    );

    let both = text.replace(
        "[main]\n",
        "[main]\nvip_description_filepath = /run/x-{vip}.json\n",
    );
    let msg = Config::from_strs(&both, None).unwrap_err().to_string();
    assert!(msg.contains("vip_announces_filepath"), "{msg}");
    assert!(msg.contains("keep one"), "{msg}");
}

#[test]
fn unknown_sections_keys_and_repeats() {
    let (text, line) = with("main", "amqp_servr", "amqp://x/");
    let err = Config::from_strs(&text, None).unwrap_err();
    assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("config.ini:{line}: [main] unknown key 'amqp_servr'")
    );

    let text = format!("{BASE}[exabgp]\nx = 1\n");
    let err = Config::from_strs(&text, None).unwrap_err();
    assert_eq!(err.to_string(), "config.ini:10: unknown section [exabgp]");

    let text = format!("{BASE}[bgp.peer.bad name]\naddress = 192.0.2.9\n");
    assert!(matches!(
        Config::from_strs(&text, None),
        Err(ConfigError::Syntax { line: 10, .. })
    ));

    let text = format!("{BASE}remote_as = 65002\n");
    let err = Config::from_strs(&text, None).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::DuplicateKey {
                line: 10,
                first: 9,
                ..
            }
        ),
        "{err}"
    );

    let text = format!("{BASE}[bgp.peer.r2]\naddress = 192.0.2.1\nremote_as = 65001\n");
    let err = Config::from_strs(&text, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.ini:11: [bgp.peer.r2] address: 192.0.2.1 is already the address of [bgp.peer.r1]"
    );
}

#[test]
fn required_keys() {
    let err = Config::from_strs("[bgp]\n", None).unwrap_err();
    assert_eq!(err.to_string(), "config.ini: [main] amqp_server: required");
    let err = Config::from_strs("[main]\nhostname = a\n", None).unwrap_err();
    assert_eq!(err.to_string(), "config.ini: [main] amqp_server: required");

    let no_as = BASE.replace("local_as = 65000\n", "");
    let err = Config::from_strs(&no_as, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.ini: [bgp] local_as: required when [bgp.peer.*] sections exist"
    );
    let no_id = BASE.replace("router_id = 192.0.2.254\n", "");
    assert!(matches!(
        Config::from_strs(&no_id, None),
        Err(ConfigError::MissingKey { key, .. }) if key == "router_id"
    ));
    let no_remote = BASE.replace("remote_as = 65001\n", "");
    assert_eq!(
        Config::from_strs(&no_remote, None).unwrap_err().to_string(),
        "config.ini: [bgp.peer.r1] remote_as: required"
    );
    // Without peers, [bgp] needs nothing.
    Config::from_strs(
        "[main]\namqp_server = amqp://b/\nhostname = a\n[bgp]\n",
        None,
    )
    .unwrap();
}

#[test]
fn secret_ini_rules() {
    let ok = "[secret]\nnode_key = nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=\n";
    let c = Config::from_strs(BASE, Some(ok)).unwrap();
    assert_eq!(
        c.node_key().unwrap(),
        "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
    );
    assert!(c.bgp.peer("r1").unwrap().password.is_none());
    assert_eq!(c.amqp_url(), "amqp://u@broker/");

    let cases: &[(&str, &str)] = &[
        ("[secret]\nnode_key = short\n", "secret.ini:2: [secret] node_key: expected 44 characters of base64, as `ipvs-sync keygen` writes, got '<hidden>'"),
        ("[secret]\nbgp_password.r9 = x\n", "secret.ini:2: [secret] bgp_password.r9: there is no [bgp.peer.r9] in config.ini"),
        ("[secret]\nother = 1\n", "secret.ini:2: [secret] unknown key 'other'"),
        ("[secrets]\n", "secret.ini:1: unknown section [secrets]"),
        ("[secret]\nbgp_password.r1 = ", "__ok__"),
    ];
    for (text, want) in cases {
        match Config::from_strs(BASE, Some(text)) {
            Ok(_) => assert_eq!(*want, "__ok__", "{text:?} accepted"),
            Err(e) => assert_eq!(e.to_string(), *want),
        }
    }
    // The shared HMAC key of earlier versions is refused with what to do instead.
    let err = Config::from_strs(
        BASE,
        Some("[secret]\nmessage_key = 0123456789abcdef0123456789abcdef\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("secret.ini:2: [secret] message_key: message_key is no longer used")
            && err.contains("ipvs-sync keygen")
            && err.contains("arbiter_public_key")
            && err.contains("balancer_keys_dir")
            && !err.contains("0123456789abcdef"),
        "{err}"
    );
    // A client certificate needs its key.
    let text = BASE.replace("[main]\n", "[main]\namqp_client_cert = /etc/c.pem\n");
    let err = Config::from_strs(&text, None).unwrap_err().to_string();
    assert!(
        err.contains("[main] amqp_client_key: required when amqp_client_cert is set"),
        "{err}"
    );
    // A password both in config.ini and secret.ini is ambiguous.
    let (text, _) = with("bgp.peer.r1", "password", "a");
    let err = Config::from_strs(&text, Some("[secret]\nbgp_password.r1 = b\n")).unwrap_err();
    assert!(err.to_string().contains("keep one"), "{err}");
    // An AMQP password needs a user in the URL.
    let text = BASE.replace("amqp://u@broker/", "amqp://broker/");
    let err = Config::from_strs(&text, Some("[secret]\namqp_password = p\n")).unwrap_err();
    assert!(err.to_string().contains("no user name"), "{err}");
    // A password in the URL itself wins over secret.ini.
    let text = BASE.replace("amqp://u@broker/", "amqp://u:own@broker/");
    let c = Config::from_strs(&text, Some("[secret]\namqp_password = p\n")).unwrap();
    assert_eq!(c.amqp_url(), "amqp://u:own@broker/");
}

fn write_pair(dir: &Path, secret: Option<(&str, u32)>) -> PathBuf {
    let cfg = dir.join("config.ini");
    fs::write(&cfg, BASE).unwrap();
    if let Some((text, mode)) = secret {
        let s = dir.join("secret.ini");
        fs::write(&s, text).unwrap();
        fs::set_permissions(&s, fs::Permissions::from_mode(mode)).unwrap();
    }
    cfg
}

#[test]
fn load_checks_secret_file_mode() {
    let secret =
        "[secret]\nnode_key = nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=\nbgp_password.r1 = k\n";
    for mode in [0o600, 0o400] {
        let d = tempfile::tempdir().unwrap();
        let cfg = write_pair(d.path(), Some((secret, mode)));
        let c = Config::load(&cfg).unwrap();
        assert_eq!(c.bgp.peers[0].password.as_ref().unwrap().expose(), "k");
        assert_eq!(c.secrets.file, d.path().join("secret.ini"));
        assert_eq!(c.file, cfg);
    }
    for mode in [0o640, 0o644, 0o440, 0o604, 0o602, 0o620] {
        let d = tempfile::tempdir().unwrap();
        let cfg = write_pair(d.path(), Some((secret, mode)));
        let err = Config::load(&cfg).unwrap_err();
        assert!(
            matches!(err, ConfigError::SecretPermissions { mode: m, .. } if m == mode),
            "{mode:o}: {err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}

#[test]
fn load_checks_secret_file_owner() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_pair(d.path(), Some(("[secret]\n", 0o600)));
    assert!(Config::load(&cfg).is_ok(), "owned by this user");
    if !nix::unistd::geteuid().is_root() {
        // Only root can give the file to someone else; the rule itself is unit-tested in
        // config::secret.
        return;
    }
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&d.path().join("secret.ini"), Some(nobody), None).unwrap();
    let err = Config::load(&cfg).unwrap_err();
    assert!(matches!(err, ConfigError::SecretOwner { .. }), "{err}");
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    assert!(err.to_string().contains("chown root"), "{err}");
}

#[test]
fn load_without_secret_file_and_missing_config() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_pair(d.path(), None);
    let c = Config::load(&cfg).unwrap();
    let err = c.node_key().unwrap_err();
    assert!(
        err.to_string()
            .contains("secret.ini: [secret] node_key: required"),
        "{err}"
    );
    let err = Config::load(&d.path().join("nope.ini")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err}");

    // Errors of a loaded file name its real path.
    fs::write(&cfg, "[main]\nbogus = 1\n").unwrap();
    let err = Config::load(&cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}:2: [main] unknown key 'bogus'", cfg.display())
    );
}

#[test]
fn shipped_examples_load_and_match_the_defaults() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = fs::read_to_string(dir.join("config.ini.example")).unwrap();
    let secret = fs::read_to_string(dir.join("secret.ini.example")).unwrap();
    let c = Config::from_strs(&cfg, Some(&secret)).unwrap();
    // Uncommenting every `;key = default` line must not change anything.
    let uncommented: String = cfg
        .lines()
        .map(|l| match l.strip_prefix(';') {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
            _ => l,
        })
        .filter(|l| !l.ends_with(" ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let with_examples = Config::from_strs(&uncommented, Some(&secret)).unwrap();
    assert_eq!(
        with_examples.main.mapping_update_interval,
        c.main.mapping_update_interval
    );
    assert_eq!(with_examples.messages, c.messages);
    assert_eq!(with_examples.server, c.server);
    assert_eq!(
        with_examples.main.vip_description_filepath,
        c.main.vip_description_filepath
    );
    assert_eq!(
        with_examples.main.service_mapping_wildcard,
        c.main.service_mapping_wildcard
    );
    assert_eq!(with_examples.bgp.hold_time, c.bgp.hold_time);
    assert_eq!(with_examples.bfd, c.bfd);
    assert_eq!(
        with_examples.bgp.peers[0].bfd_timers(&with_examples.bfd),
        c.bgp.peers[0].bfd_timers(&c.bfd)
    );
    assert_eq!(
        c.bgp.peers[0].password.as_ref().unwrap().expose(),
        "change-me-too"
    );
    assert_eq!(
        c.amqp_url(),
        "amqp://ipvs-sync:change-me@arbiter.example.net:5672/ipvs"
    );
}

#[test]
fn intervals_that_would_be_zero_are_refused_with_their_place() {
    // `1e-10` parses to a Duration of zero nanoseconds: a timer of it panics at start.
    let text = "[main]\namqp_server = amqp://b/\nhostname = a\nheartbeat_interval = 1e-10\n";
    assert_eq!(
        Config::from_strs(text, None).unwrap_err().to_string(),
        "config.ini:4: [main] heartbeat_interval: expected a number of seconds from 0.001 to 1e9, got '1e-10'"
    );
    let text =
        "[main]\namqp_server = amqp://b/\nhostname = a\n[announce]\nwithdraw_grace = 1e-10\n";
    assert_eq!(
        Config::from_strs(text, None).unwrap_err().to_string(),
        "config.ini:5: [announce] withdraw_grace: expected 0 or a number of seconds from 0.001 to 1e9, got '1e-10'"
    );
    let text = "[main]\namqp_server = amqp://b/\nhostname = a\n[announce]\nwithdraw_grace = 0\n";
    assert_eq!(
        Config::from_strs(text, None)
            .unwrap()
            .announce
            .withdraw_grace,
        Duration::ZERO
    );
}

#[test]
fn withdraw_limit_drain_and_control_keys() {
    use config::{StopMode, WithdrawLimit};
    let base = "[main]\namqp_server = amqp://b/\nhostname = a\n";
    let c = Config::from_strs(base, None).unwrap();
    assert_eq!(c.server.withdraw_limit, None);
    assert_eq!(c.server.withdraw_window, Duration::from_secs(60));
    assert_eq!(c.announce.stop, StopMode::Cease);
    assert_eq!(c.announce.drain_min, Duration::from_secs(5));
    assert_eq!(c.announce.drain_timeout, Duration::from_secs(300));
    assert_eq!(c.announce.drain_conns, 0);
    assert_eq!(
        c.main.control_socket,
        PathBuf::from("/run/ipvs-sync/control.sock")
    );
    let t = format!("{base}[server]\nwithdraw_limit = 50%\nwithdraw_window = 5\n[announce]\nstop = drain\ndrain_conns = 3\n");
    let c = Config::from_strs(&t, None).unwrap();
    assert_eq!(c.server.withdraw_limit, Some(WithdrawLimit::Percent(50)));
    assert_eq!(c.announce.stop, StopMode::Drain);
    assert_eq!(c.announce.drain_conns, 3);
    let t = format!("{base}[server]\nwithdraw_limit = 7\n");
    assert_eq!(
        Config::from_strs(&t, None).unwrap().server.withdraw_limit,
        Some(WithdrawLimit::Count(7))
    );
    for bad in ["0", "0%", "101%", "x", "-1"] {
        let t = format!("{base}[server]\nwithdraw_limit = {bad}\n");
        let e = Config::from_strs(&t, None).unwrap_err().to_string();
        assert!(
            e.starts_with("config.ini:5: [server] withdraw_limit: expected a count"),
            "{e}"
        );
    }
    let t = format!("{base}[announce]\nstop = linger\n");
    assert!(Config::from_strs(&t, None).is_err());
    assert_eq!(c_default_share(base), 50);
    let t = format!("{base}[server]\nipvs_dump_share = 100%\n");
    assert_eq!(
        Config::from_strs(&t, None).unwrap().server.ipvs_dump_share,
        100
    );
    for bad in ["0%", "101%", "50", "x%"] {
        let t = format!("{base}[server]\nipvs_dump_share = {bad}\n");
        let e = Config::from_strs(&t, None).unwrap_err().to_string();
        assert!(
            e.starts_with("config.ini:5: [server] ipvs_dump_share: expected a percentage"),
            "{e}"
        );
    }
}

fn c_default_share(base: &str) -> u32 {
    Config::from_strs(base, None)
        .unwrap()
        .server
        .ipvs_dump_share
}
