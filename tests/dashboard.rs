//! `dist/grafana/ipvs-sync.json` is an importable Grafana dashboard whose queries name only
//! metrics the daemons export: every `ipvs_sync_*` name in a query is a sample name of
//! `Metrics::new(Role::Client)` or `Metrics::new(Role::Server)`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use ipvs_sync::daemon::metrics::{
    of_type, EventLabel, Metrics, PeerLabel, ReasonLabel, Role, SendFailure, WhyLabel,
};
use serde_json::Value;

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/grafana/ipvs-sync.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("well-formed JSON")
}

/// A daemon's page with one child in every labelled family (an empty family is not
/// rendered at all).
fn page(role: Role) -> String {
    let m = Metrics::new(role);
    let t = of_type("heartbeat");
    for f in [
        &m.messages_received,
        &m.messages_sent,
        &m.messages_ignored,
        &m.outbox_dropped,
        &m.unsolicited,
        &m.held_messages,
    ] {
        f.get_or_create(&t).inc();
    }
    m.messages_dropped
        .get_or_create(&ReasonLabel { reason: "stale" })
        .inc();
    m.send_failures
        .get_or_create(&WhyLabel {
            why: SendFailure::confirm,
        })
        .inc();
    let peer = PeerLabel { peer: "r1".into() };
    m.bgp_peer_up.get_or_create(&peer).set(1);
    m.bgp_session_ups.get_or_create(&peer).inc();
    m.bgp_session_downs.get_or_create(&peer).inc();
    m.announce_events
        .get_or_create(&EventLabel { event: "cancelled" })
        .inc();
    m.render()
}

/// Every sample name the two daemons export.
fn exported() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for role in [Role::Client, Role::Server] {
        for line in page(role).lines().filter(|l| !l.starts_with('#')) {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// Every `expr` of every panel target and variable query, anywhere in the document.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("ipvs_sync_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn panels(d: &Value) -> Vec<&Value> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect()
}

#[test]
fn every_metric_a_query_names_is_exported() {
    let d = dashboard();
    let known = exported();
    let mut all = Vec::new();
    exprs(&d, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    let unknown: Vec<&String> = used.iter().filter(|n| !known.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "not exported by either daemon: {unknown:?}"
    );
    for subject in [
        "ipvs_sync_vips_announced",
        "ipvs_sync_announce_latency_seconds_bucket",
        "ipvs_sync_withdraw_latency_seconds_bucket",
        "ipvs_sync_bgp_peer_up",
        "ipvs_sync_broker_connected",
        "ipvs_sync_outbox_depth",
        "ipvs_sync_messages_dropped_total",
        "ipvs_sync_ipvs_apply_seconds_bucket",
        "ipvs_sync_holding",
        "ipvs_sync_quorum_handler_failures_total",
    ] {
        assert!(used.contains(subject), "no panel shows {subject}");
    }
}

#[test]
fn importable_with_a_prometheus_data_source_variable() {
    let d = dashboard();
    assert!(d["title"].is_string() && d["schemaVersion"].is_u64());
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(ds["query"], "prometheus");
    let wanted = format!("${{{}}}", ds["name"].as_str().unwrap());
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id: {p}");
        assert_eq!(p["datasource"]["uid"], wanted.as_str(), "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], wanted.as_str(), "{}", p["title"]);
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
}
