//! The service mapping of a realistic keepalived tree (tests/fixtures/keepalived): groups
//! defined in another file of the balancer, ranges, fwmark with and without a quorum
//! VIP, IPv6, both comment styles, includes (relative, glob and plain).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use config::keepalived::{self, Statement};
use config::mapping::{self, MappingError, PortMapping};
use config::MappingWildcard;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keepalived")
}

fn wildcard(root: &Path) -> MappingWildcard {
    MappingWildcard::parse(&format!("{}/lbs/*/*/*.conf", root.display())).unwrap()
}

fn ports(entries: &[(&str, &[u16])]) -> BTreeMap<IpAddr, BTreeSet<u16>> {
    entries
        .iter()
        .map(|(ip, ports)| (ip.parse().unwrap(), ports.iter().copied().collect()))
        .collect()
}

#[test]
fn realistic_tree_maps_every_vip_and_port() {
    let report = mapping::build(&wildcard(&fixture())).unwrap();
    let mut want = PortMapping::new();
    want.insert(
        "lb1.example.net".into(),
        ports(&[
            ("192.0.2.10", &[80, 443]),
            ("192.0.2.20", &[8080]),
            ("192.0.2.21", &[8080]),
            ("192.0.2.22", &[8080]),
            ("192.0.2.23", &[8080]),
            ("203.0.113.123", &[0]),
            ("2001:db8:10::10", &[443]),
            ("2001:db8:20::a", &[8443]),
            ("2001:db8:20::b", &[8443]),
            ("2001:db8:20::c", &[8443]),
            ("2001:db8:53::1", &[0]),
        ]),
    );
    want.insert(
        "lb2.example.net".into(),
        ports(&[("203.0.113.25", &[25]), ("2001:db8:25::25", &[25, 993])]),
    );
    assert_eq!(report.ports, want);
    // www.conf, groups.conf, dns.conf, mail.conf; not inc/smtp.conf (reached by include
    // only) nor old.conf.disabled.
    assert_eq!(report.files, 4);

    // fwmark 54 has no quorum handler naming its VIP: skipped, with its location.
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    let s = &report.skipped[0];
    let dns = fixture().join("lbs/lb1.example.net/dns/dns.conf");
    let line = fs::read_to_string(&dns)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("virtual_server fwmark 54"))
        .unwrap()
        + 1;
    assert_eq!((s.file.as_path(), s.line), (dns.as_path(), line));
    assert_eq!(s.balancer, "lb1.example.net");
    assert!(s.reason.contains("fwmark 54"), "{}", s.reason);

    let vips = report.vips();
    assert_eq!(vips["lb2.example.net"].len(), 2);
    assert_eq!(vips["lb1.example.net"].len(), 11);

    // The marks go with the VIPs their quorum handlers name, a group's mark included;
    // mark 54 (no handler) goes with none.
    let marks: Vec<(u32, String)> = report
        .fwmarks
        .iter()
        .map(|(m, v)| (*m, v.to_string()))
        .collect();
    assert_eq!(
        marks,
        [
            (53, "2001:db8:53::1".to_owned()),
            (123, "203.0.113.123".to_owned())
        ]
    );
}

#[test]
fn a_mark_goes_with_one_vip_and_the_second_claim_is_skipped() {
    let d = tempfile::tempdir().unwrap();
    let conf = |lb: &str, vip: &str| {
        let dir = d.path().join(format!("lbs/{lb}/dns"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("dns.conf"),
            format!(
                "virtual_server fwmark 7 {{\n    quorum_up \"/usr/bin/ipvs-sync quorum up {vip},b-100,0\"\n}}\n"
            ),
        )
        .unwrap();
    };
    conf("lb1", "192.0.2.7");
    conf("lb2", "192.0.2.7");
    conf("lb3", "192.0.2.8");
    let report = mapping::build(&wildcard(d.path())).unwrap();
    assert_eq!(
        report.fwmarks,
        [(7, "192.0.2.7".parse().unwrap())].into(),
        "the first file in path order (lb1) gives the mark its VIP; lb2 agrees"
    );
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert_eq!(report.skipped[0].balancer, "lb3");
    assert!(
        report.skipped[0].reason.contains("goes with VIP 192.0.2.7"),
        "{}",
        report.skipped[0].reason
    );
    // lb3 still serves its VIP (port 0 counts for its quorum); only the mark is refused.
    assert!(report.vips()["lb3"].contains(&"192.0.2.8".parse().unwrap()));
}

#[test]
fn json_export_of_the_tree_round_trips() {
    let report = mapping::build(&wildcard(&fixture())).unwrap();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("svc_mapping.json");
    mapping::write_json(&path, &report.mapping()).unwrap();
    let back = mapping::read_json(&path).unwrap();
    assert_eq!(back, report.mapping());
    let raw: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        raw["lb2.example.net"],
        serde_json::json!(["203.0.113.25", "2001:db8:25::25"])
    );
}

fn find<'a>(stmts: &'a [Statement], path: &[&str]) -> Option<&'a Statement> {
    let (first, rest) = path.split_first()?;
    let s = stmts.iter().find(|s| s.keyword == *first)?;
    if rest.is_empty() {
        Some(s)
    } else {
        find(s.block.as_deref()?, rest)
    }
}

#[test]
fn include_inside_a_block_is_spliced_in_place() {
    let www = fixture().join("lbs/lb1.example.net/web/www.conf");
    let stmts = keepalived::load(&www).unwrap();
    let retry = find(
        &stmts,
        &["virtual_server", "real_server", "HTTP_GET", "retry"],
    )
    .unwrap();
    assert_eq!(retry.args, ["2"]);
    assert!(retry.file.ends_with("common/checker.inc"));
    assert_eq!(retry.line, 3);
    let path = find(
        &stmts,
        &["virtual_server", "real_server", "HTTP_GET", "url", "path"],
    )
    .unwrap();
    assert_eq!(
        path.args,
        ["/ping"],
        "the # comment is not part of the value"
    );
}

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = d.path().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    d
}

#[test]
fn groups_are_per_balancer() {
    // lb2 uses a group only lb1 defines.
    let d = tree(&[
        (
            "lbs/lb1/a/g.conf",
            "virtual_server_group g {\n 192.0.2.1 80\n}\n",
        ),
        ("lbs/lb2/a/v.conf", "\nvirtual_server group g {\n}\n"),
    ]);
    let e = mapping::build(&wildcard(d.path())).unwrap_err();
    assert!(
        matches!(e, MappingError::UnknownGroup { line: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("lb2"), "{e}");
}

#[test]
fn duplicate_group_definitions_are_errors_but_one_file_included_twice_is_not() {
    let d = tree(&[
        (
            "lbs/lb1/a/one.conf",
            "virtual_server_group g {\n 192.0.2.1 80\n}\n",
        ),
        (
            "lbs/lb1/b/two.conf",
            "virtual_server_group g {\n 192.0.2.2 80\n}\n",
        ),
    ]);
    let e = mapping::build(&wildcard(d.path())).unwrap_err();
    assert!(matches!(e, MappingError::DuplicateGroup { .. }), "{e}");

    let d = tree(&[
        ("groups.inc", "virtual_server_group g {\n 192.0.2.1 80\n}\n"),
        (
            "lbs/lb1/a/one.conf",
            "include ../../../groups.inc\nvirtual_server group g {\n}\n",
        ),
        ("lbs/lb1/b/two.conf", "include ../../../groups.inc\n"),
    ]);
    let r = mapping::build(&wildcard(d.path())).unwrap();
    assert_eq!(r.ports["lb1"], ports(&[("192.0.2.1", &[80])]));
}

#[test]
fn one_bad_file_fails_the_whole_build_with_its_location() {
    let d = tree(&[
        ("lbs/lb1/a/ok.conf", "virtual_server 192.0.2.1 80 {\n}\n"),
        ("lbs/lb2/a/bad.conf", "virtual_server 192.0.2.1 80 {\n\n"),
    ]);
    let e = mapping::build(&wildcard(d.path())).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.ends_with("lbs/lb2/a/bad.conf:1: block of 'virtual_server' is never closed"),
        "{msg}"
    );
}

#[test]
fn no_file_is_an_error_but_files_without_services_are_not() {
    let d = tempfile::tempdir().unwrap();
    let e = mapping::build(&wildcard(d.path())).unwrap_err();
    assert!(matches!(e, MappingError::NoFiles { .. }), "{e}");

    let d = tree(&[("lbs/lb1/a/empty.conf", "! nothing yet\nglobal_defs {\n}\n")]);
    let r = mapping::build(&wildcard(d.path())).unwrap();
    assert_eq!(r.files, 1);
    assert_eq!(r.vips()["lb1"], BTreeSet::new());
}

#[test]
fn many_files_parse_in_parallel_with_deterministic_results() {
    // Enough files for several parser threads; groups cross files of one balancer.
    let mut files: Vec<(String, String)> = Vec::new();
    for i in 0..300 {
        let lb = i % 3;
        files.push((
            format!("lbs/lb{lb}/s{i:03}/a.conf"),
            format!("virtual_server 10.0.{}.{} 80 {{\n}}\n", i / 256, i % 256),
        ));
    }
    files.push((
        "lbs/lb0/s999/g.conf".into(),
        "virtual_server_group g {\n 192.0.2.1-4 443\n}\n".into(),
    ));
    files.push((
        "lbs/lb0/s000/b.conf".into(),
        "virtual_server group g {\n}\n".into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let d = tree(&refs);
    let r = mapping::build(&wildcard(d.path())).unwrap();
    assert_eq!(r.files, 302);
    assert_eq!(r.ports["lb0"].len(), 100 + 4);
    assert_eq!(r.ports["lb1"].len(), 100);
    assert_eq!(
        r.ports["lb0"][&"192.0.2.3".parse::<IpAddr>().unwrap()],
        BTreeSet::from([443])
    );
    assert_eq!(mapping::build(&wildcard(d.path())).unwrap(), r);

    // Two bad files far apart: the error is always the first in path order.
    fs::write(
        d.path().join("lbs/lb2/s290/a.conf"),
        "virtual_server x 1 {}\n",
    )
    .unwrap();
    fs::write(d.path().join("lbs/lb1/s010/a.conf"), "}\n").unwrap();
    for _ in 0..3 {
        let e = mapping::build(&wildcard(d.path())).unwrap_err().to_string();
        assert!(e.contains("lbs/lb1/s010/a.conf:1:"), "{e}");
    }
}
