//! `ipvs-sync status [--json]`: the running daemon's `/status`, printed for people.
//!
//! The daemon publishes one JSON document (see `daemon::status`); this command fetches it from
//! `http_listen` and prints it the way `gobgp neighbor` and `birdc show protocols` do: a header,
//! then aligned tables of peers, VIPs, clients and queues.

use std::fmt::Write as _;

use serde_json::Value;

/// Renders the status document as aligned tables.
pub fn render(doc: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "{} {}  up {}  broker {}",
        s(&doc["role"]),
        s(&doc["hostname"]),
        human_secs(doc["uptime_s"].as_f64()),
        if doc["broker"]["connected"].as_bool() == Some(true) {
            "connected"
        } else {
            "DOWN"
        },
    );
    if let Some(age) = doc["last_heartbeat_age_s"].as_f64() {
        let _ = writeln!(
            out,
            "last heartbeat from the arbiter {} ago",
            human_secs(Some(age))
        );
    }
    let table =
        |out: &mut String, title: &str, cols: &[(&str, &str)], rows: Option<&Vec<Value>>| {
            let Some(rows) = rows.filter(|r| !r.is_empty()) else {
                return;
            };
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    cols.iter()
                        .map(|(_, key)| {
                            if key.ends_with("_s") {
                                human_secs(r[*key].as_f64())
                            } else {
                                s(&r[*key])
                            }
                        })
                        .collect()
                })
                .collect();
            let widths: Vec<usize> = cols
                .iter()
                .enumerate()
                .map(|(i, (h, _))| {
                    cells
                        .iter()
                        .map(|c| c[i].len())
                        .chain([h.len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let _ = writeln!(out, "\n{title}");
            let line = |out: &mut String, items: Vec<&str>| {
                let l: Vec<String> = items
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                let _ = writeln!(out, "  {}", l.join("  ").trim_end());
            };
            line(out, cols.iter().map(|(h, _)| *h).collect());
            for row in &cells {
                line(out, row.iter().map(String::as_str).collect());
            }
        };
    table(
        &mut out,
        "BGP peers",
        &[
            ("Peer", "name"),
            ("Address", "address"),
            ("AS", "remote_as"),
            ("State", "state"),
            ("Up/Down", "uptime_s"),
            ("Sent", "routes_sent"),
            ("Last error", "last_error"),
        ],
        doc["peers"].as_array(),
    );
    table(
        &mut out,
        "VIPs",
        &[
            ("VIP", "vip"),
            ("State", "state"),
            ("Local-pref", "local_pref"),
            ("Announce", "announce"),
        ],
        doc["vips"].as_array(),
    );
    table(
        &mut out,
        "Clients",
        &[
            ("Client", "name"),
            ("Last heartbeat", "age_s"),
            ("VIPs", "vips"),
        ],
        doc["clients"].as_array(),
    );
    if let Some(q) = doc["queues"].as_object().filter(|q| !q.is_empty()) {
        let _ = writeln!(out, "\nQueues");
        let w = q.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in q {
            let _ = writeln!(out, "  {k:<w$}  {}", s(v));
        }
    }
    out
}

/// `3725.2` → `1h02m05s`; `None` → `-`.
pub fn human_secs(v: Option<f64>) -> String {
    let Some(v) = v.filter(|v| v.is_finite() && *v >= 0.0) else {
        return "-".to_string();
    };
    if v < 10.0 {
        return format!("{v:.1}s");
    }
    let t = v as u64;
    let (h, m, s) = (t / 3600, (t / 60) % 60, t % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_tables() {
        let doc = serde_json::json!({
            "role": "client", "hostname": "lb1", "uptime_s": 3725.0,
            "broker": {"connected": true}, "last_heartbeat_age_s": 1.25,
            "peers": [
                {"name": "r1", "address": "192.0.2.1", "remote_as": 65000, "state": "Established", "uptime_s": 61.0, "routes_sent": 2, "last_error": null},
                {"name": "router-two", "address": "2001:db8::2", "remote_as": 65001, "state": "Active", "uptime_s": null, "routes_sent": 0, "last_error": "connection refused"}
            ],
            "vips": [{"vip": "198.51.100.10", "state": "Announced", "local_pref": 150, "announce": true}],
            "queues": {"incoming": 0}
        });
        let text = render(&doc);
        assert!(
            text.starts_with("client lb1  up 1h02m05s  broker connected\n"),
            "{text}"
        );
        assert!(
            text.contains("last heartbeat from the arbiter 1.2s ago"),
            "{text}"
        );
        let peers: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "BGP peers")
            .skip(1)
            .take(3)
            .collect();
        assert_eq!(
            peers[0].find("Address"),
            peers[1].find("192.0.2.1"),
            "{text}"
        );
        assert_eq!(
            peers[1].find("192.0.2.1"),
            peers[2].find("2001:db8::2"),
            "{text}"
        );
        assert!(peers[2].contains("connection refused"));
        assert!(text.contains("198.51.100.10  Announced  150"), "{text}");
        assert!(text.contains("  incoming  0"), "{text}");
    }

    #[test]
    fn human_secs_forms() {
        assert_eq!(human_secs(None), "-");
        assert_eq!(human_secs(Some(1.25)), "1.2s");
        assert_eq!(human_secs(Some(59.0)), "59s");
        assert_eq!(human_secs(Some(61.0)), "1m01s");
        assert_eq!(human_secs(Some(-1.0)), "-");
    }
}
