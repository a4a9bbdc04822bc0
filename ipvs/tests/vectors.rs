//! Byte-vector conformance against real `ipvsadm` 1.31 ↔ Linux 6.1 traffic
//! (tests/vectors/ipvsadm-6.1.txt says how it was captured).
//!
//! Both ways: every captured datagram parses and emits back to the same bytes; the
//! requests ipvsadm sent decode to the expected model objects, and our encoder builds the
//! same bytes (service requests) or the same attributes (destinations) from those objects;
//! the kernel's replies decode to the expected tree, info, daemon state and errnos.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use ipvs::model::{DestStats, TunFlags, TunType};
use ipvs::packet::{
    dest_attrs, dest_from_attrs, service_from_attrs, service_spec_attrs, Cmd, DaemonState, Info,
    InfoAttr, IpvsAttr, IpvsMessage, Message, Nested, Payload, NLM_F_ACK, NLM_F_REQUEST,
};
use ipvs::{Dest, Family, FwdMethod, Protocol, ServiceFlags, ServiceKey, ServiceSpec};

const FAMILY: u16 = 0x20;
const VECTORS: &str = include_str!("vectors/ipvsadm-6.1.txt");

type Case = Vec<(char, Vec<u8>)>;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn cases() -> BTreeMap<String, Case> {
    let mut out: BTreeMap<String, Case> = BTreeMap::new();
    let mut current = String::new();
    for line in VECTORS.lines() {
        if let Some(rest) = line.strip_prefix("# case ") {
            current = rest.split(':').next().unwrap().to_string();
            out.insert(current.clone(), Vec::new());
        } else if let Some(h) = line.strip_prefix("> ") {
            out.get_mut(&current).unwrap().push(('>', hex(h)));
        } else if let Some(h) = line.strip_prefix("< ") {
            out.get_mut(&current).unwrap().push(('<', hex(h)));
        }
    }
    out
}

/// The last request ipvsadm sent in a case (the first is always GET_INFO).
fn last_request(case: &str) -> (Vec<u8>, Message) {
    let c = &cases()[case];
    let bytes = c.iter().rev().find(|(d, _)| *d == '>').unwrap().1.clone();
    let (msg, used) = Message::decode(&bytes, FAMILY).unwrap();
    assert_eq!(used, bytes.len());
    (bytes, msg)
}

fn ipvs(msg: &Message) -> &IpvsMessage {
    match &msg.payload {
        Payload::Ipvs(m) => m,
        other => panic!("not an IPVS message: {other:?}"),
    }
}

fn service_attrs(m: &IpvsMessage) -> &Nested<ipvs::packet::ServiceAttr> {
    m.attrs
        .iter()
        .find_map(|a| {
            if let IpvsAttr::Service(n) = a {
                Some(n)
            } else {
                None
            }
        })
        .unwrap()
}

fn dest_nested(m: &IpvsMessage) -> &Nested<ipvs::packet::DestAttr> {
    m.attrs
        .iter()
        .find_map(|a| {
            if let IpvsAttr::Dest(n) = a {
                Some(n)
            } else {
                None
            }
        })
        .unwrap()
}

#[test]
fn every_captured_datagram_round_trips_byte_for_byte() {
    let mut n = 0;
    for (name, case) in cases() {
        for (dir, bytes) in case {
            let msgs =
                Message::decode_all(&bytes, FAMILY).unwrap_or_else(|e| panic!("{name} {dir}: {e}"));
            let mut back = Vec::new();
            for m in &msgs {
                m.emit(&mut back);
            }
            assert_eq!(back, bytes, "{name} {dir}");
            n += msgs.len();
        }
    }
    assert!(n > 150, "only {n} messages in the vectors");
}

/// ipvsadm's NEW_SERVICE bytes decode to `spec`, and our encoder rebuilds them exactly.
fn check_service_request(case: &str, spec: &ServiceSpec) {
    let (bytes, msg) = last_request(case);
    let m = ipvs(&msg);
    assert_eq!(m.cmd, Cmd::NewService, "{case}");
    assert_eq!(
        &service_from_attrs(&service_attrs(m).attrs).unwrap().spec,
        spec,
        "{case}"
    );
    let ours = Message {
        pid: msg.pid,
        ..Message::request(
            FAMILY,
            NLM_F_REQUEST | NLM_F_ACK,
            msg.seq,
            IpvsMessage::new(
                Cmd::NewService,
                vec![IpvsAttr::Service(Nested::new(service_spec_attrs(spec)))],
            ),
        )
    };
    assert_eq!(
        ours.to_bytes(),
        bytes,
        "{case}: our NEW_SERVICE differs from ipvsadm's"
    );
}

#[test]
fn service_requests_match_ipvsadm_both_ways() {
    let v4 = "192.0.2.1".parse().unwrap();
    check_service_request(
        "svc_add_v4",
        &ServiceSpec::new(ServiceKey::tcp(v4, 80), "wrr"),
    );

    let mut v6 =
        ServiceSpec::new(ServiceKey::udp("2001:db8::1".parse().unwrap(), 53), "rr").persistent(300);
    v6.netmask = 64;
    check_service_request("svc_add_v6", &v6);

    let mut fw = ServiceSpec::new(ServiceKey::fwmark(Family::Inet, 7), "sh");
    fw.flags = ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT;
    check_service_request("svc_add_fwmark", &fw);

    let mut sctp = ServiceSpec::new(
        ServiceKey::Addr {
            protocol: Protocol::Sctp,
            addr: "192.0.2.2".parse().unwrap(),
            port: 9,
        },
        "mh",
    );
    sctp.flags = ServiceFlags::MH_PORT;
    check_service_request("svc_add_sctp", &sctp);

    let mut ops = ServiceSpec::new(ServiceKey::udp("192.0.2.4".parse().unwrap(), 514), "rr");
    ops.flags = ServiceFlags::ONE_PACKET;
    check_service_request("svc_add_ops", &ops);

    check_service_request(
        "svc_add_fwmark6",
        &ServiceSpec::new(ServiceKey::fwmark(Family::Inet6, 8), "wrr").persistent(360),
    );

    let mut pe =
        ServiceSpec::new(ServiceKey::udp("192.0.2.3".parse().unwrap(), 5060), "rr").persistent(60);
    pe.netmask = 24;
    pe.pe_name = Some("sip".into());
    check_service_request("svc_add_pe", &pe);
}

/// ipvsadm's NEW_DEST decodes to `dest`, and our destination attributes are the same list
/// (ipvsadm also sends the full service with an empty scheduler; we send only its key).
fn check_dest_request(case: &str, cmd: Cmd, family: Family, dest: &Dest) {
    let (_, msg) = last_request(case);
    let m = ipvs(&msg);
    assert_eq!(m.cmd, cmd, "{case}");
    let nested = dest_nested(m);
    assert_eq!(
        &dest_from_attrs(&nested.attrs, family).unwrap(),
        dest,
        "{case}"
    );
    assert_eq!(
        nested.attrs,
        dest_attrs(dest),
        "{case}: our destination attributes differ from ipvsadm's"
    );
}

#[test]
fn dest_requests_match_ipvsadm_both_ways() {
    let ip = |s: &str| s.parse().unwrap();
    check_dest_request(
        "dest_add_dr",
        Cmd::NewDest,
        Family::Inet,
        &Dest::new(ip("198.51.100.5"), 80),
    );
    let mut masq = Dest::new(ip("198.51.100.6"), 8080)
        .fwd(FwdMethod::Masq)
        .weight(5);
    masq.u_threshold = 100;
    masq.l_threshold = 10;
    check_dest_request("dest_add_masq", Cmd::NewDest, Family::Inet, &masq);
    let mut gue = Dest::new(ip("198.51.100.7"), 0).fwd(FwdMethod::Tunnel);
    gue.tun_type = TunType::Gue;
    gue.tun_port = 6080;
    gue.tun_flags = TunFlags::CSUM;
    check_dest_request("dest_add_gue", Cmd::NewDest, Family::Inet, &gue);
    let mut gre = Dest::new(ip("2001:db8:2::7"), 0)
        .fwd(FwdMethod::Tunnel)
        .weight(0);
    gre.tun_type = TunType::Gre;
    check_dest_request("dest_add_gre", Cmd::NewDest, Family::Inet6, &gre);
    check_dest_request(
        "dest_add_v6",
        Cmd::NewDest,
        Family::Inet6,
        &Dest::new(ip("2001:db8:1::5"), 53).weight(2),
    );
    check_dest_request(
        "dest_edit",
        Cmd::SetDest,
        Family::Inet,
        &Dest::new(ip("198.51.100.5"), 80).weight(3),
    );
}

#[test]
fn dump_replies_decode_to_the_tree_ipvsadm_printed() {
    let c = &cases()["dump"];
    let mut services = Vec::new();
    let mut dests: Vec<(Cmd, Dest)> = Vec::new();
    for (_, bytes) in c.iter().filter(|(d, _)| *d == '<') {
        for msg in Message::decode_all(bytes, FAMILY).unwrap() {
            let Payload::Ipvs(m) = &msg.payload else {
                continue;
            };
            if m.cmd == Cmd::SetInfo {
                continue; // the GET_INFO answer ipvsadm asks for first
            }
            assert_eq!(msg.flags & 0x2, 0x2, "dump parts are NLM_F_MULTI");
            for a in &m.attrs {
                match a {
                    IpvsAttr::Service(n) => {
                        assert!(!n.flagged, "the kernel nests without NLA_F_NESTED");
                        services.push(service_from_attrs(&n.attrs).unwrap());
                    }
                    // Every destination of this capture belongs to an IPv4 service or has ADDR_FAMILY.
                    IpvsAttr::Dest(n) => {
                        dests.push((m.cmd, dest_from_attrs(&n.attrs, Family::Inet).unwrap()))
                    }
                    _ => {}
                }
            }
        }
    }
    // The kernel dumps in hash order; ipvsadm (and Tree) sort.
    services.sort_by_key(|s| *s.key());
    dests.sort_by_key(|(_, d)| d.key);
    let ids: Vec<String> = services.iter().map(|s| s.key().to_string()).collect();
    assert_eq!(
        ids,
        [
            "tcp:192.0.2.1:80",
            "udp:192.0.2.3:5060",
            "udp:192.0.2.4:514",
            "sctp:192.0.2.2:9",
            "udp:[2001:db8::1]:53",
            "fwmark:v4:7",
            "fwmark:v6:8"
        ]
    );
    assert_eq!(services[0].spec.scheduler, "rr", "after ipvsadm -E -s rr");
    assert!(services[0].stats.is_some(), "dumps carry counters");
    assert_eq!(services[1].spec.netmask, 24);
    assert_eq!(services[1].spec.pe_name.as_deref(), Some("sip"));
    assert!(
        services
            .iter()
            .all(|s| !s.spec.flags.contains(ServiceFlags::HASHED)),
        "HASHED is stripped"
    );
    assert_eq!(services[6].spec.flags, ServiceFlags::PERSISTENT);
    assert_eq!(services[6].spec.timeout, 360);

    assert!(
        dests.iter().all(|(cmd, _)| *cmd == Cmd::NewDest),
        "dest dump replies carry NEW_DEST"
    );
    let got: Vec<String> = dests
        .iter()
        .map(|(_, d)| {
            format!(
                "{} {:?} w{} x{} y{}",
                d.key, d.fwd, d.weight, d.u_threshold, d.l_threshold
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "198.51.100.5:80 Route w3 x0 y0",
            "198.51.100.6:8080 Masq w5 x100 y10",
            "198.51.100.7:0 Tunnel w1 x0 y0",
            "[2001:db8:1::5]:53 Route w2 x0 y0",
            "[2001:db8:2::7]:0 Tunnel w0 x0 y0",
        ]
    );
    let gue = &dests[2].1;
    assert_eq!(
        (gue.tun_type, gue.tun_port, gue.tun_flags),
        (TunType::Gue, 6080, TunFlags::CSUM)
    );
    assert_eq!(
        dests[0].1.stats,
        Some(DestStats::default()),
        "counters are read, all zero on an idle table"
    );
}

fn error_of(case: &str) -> i32 {
    let c = &cases()[case];
    let last = &c.iter().rev().find(|(d, _)| *d == '<').unwrap().1;
    match Message::decode(last, FAMILY).unwrap().0.payload {
        Payload::Error { error, .. } => error,
        other => panic!("{case}: {other:?}"),
    }
}

#[test]
fn kernel_errors_decode_to_errnos() {
    assert_eq!(
        error_of("svc_add_bad_sched"),
        -libc::ENOENT,
        "unknown scheduler"
    );
    assert_eq!(error_of("svc_add_dup"), -libc::EEXIST, "duplicate service");
    assert_eq!(
        error_of("dest_add_nosvc"),
        -libc::ESRCH,
        "destination for a missing service"
    );
    assert_eq!(error_of("dest_add_dr"), 0, "an ACK");
}

#[test]
fn info_and_daemon_replies_decode() {
    let c = &cases()["info"];
    let reply = c.iter().find(|(d, b)| *d == '<' && b[16] == 14).unwrap();
    let (msg, _) = Message::decode(&reply.1, FAMILY).unwrap();
    let attrs: Vec<InfoAttr> = ipvs(&msg)
        .attrs
        .iter()
        .filter_map(|a| {
            if let IpvsAttr::Info(i) = a {
                Some(i.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        Info::from_attrs(&attrs).unwrap(),
        Info {
            version: (1, 2, 1),
            conn_tab_size: 4096
        }
    );

    let c = &cases()["daemon_list"];
    let reply = c.iter().find(|(d, b)| *d == '<' && b[16] == 9).unwrap();
    let (msg, _) = Message::decode(&reply.1, FAMILY).unwrap();
    let IpvsAttr::Daemon(n) = &ipvs(&msg).attrs[0] else {
        panic!("no daemon attr")
    };
    let d = DaemonState::from_attrs(&n.attrs).unwrap();
    assert_eq!(
        (
            d.state.as_str(),
            d.mcast_ifn.as_str(),
            d.sync_id,
            d.sync_maxlen,
            d.mcast_group,
            d.mcast_port,
            d.mcast_ttl
        ),
        (
            "master",
            "lo",
            5,
            Some(1472),
            Some("224.0.0.81".parse().unwrap()),
            Some(8848),
            Some(1)
        )
    );
}
