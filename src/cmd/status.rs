//! `ipvs-sync status [--json]`: the running daemon's `/status`, printed for people.
//!
//! The daemon publishes one typed document ([`crate::daemon::status::Status`]); this command
//! fetches it from `http_listen` and prints it the way `gobgp neighbor` and `birdc show
//! protocols` do: a header, then aligned tables of peers, VIPs, clients and queues. No colour.

use std::fmt::Write as _;

use crate::daemon::status::{ClientStatus, Common, ServerStatus, Status};

/// Renders the status document as aligned tables.
pub fn render(doc: &Status) -> String {
    let mut out = String::new();
    header(&mut out, doc.role(), doc.common());
    match doc {
        Status::Client(c) => client(&mut out, c),
        Status::Server(s) => server(&mut out, s),
    }
    queues(&mut out, doc.common());
    out
}

fn header(out: &mut String, role: &str, c: &Common) {
    let _ = writeln!(
        out,
        "{role} {}  up {}  broker {}",
        c.hostname,
        human_secs(Some(c.uptime_s)),
        match (c.broker.connected, &c.broker.node) {
            (true, Some(node)) => format!("connected to {node}"),
            (true, None) => "connected".to_owned(),
            (false, _) => "DOWN".to_owned(),
        },
    );
}

fn client(out: &mut String, c: &ClientStatus) {
    if let Some(age) = c.last_heartbeat_age_s {
        let _ = writeln!(
            out,
            "last heartbeat from the arbiter {} ago",
            human_secs(Some(age))
        );
    }
    if let Some(f) = &c.fallback {
        let _ = match (f.phase.as_str(), f.configs) {
            ("normal", true) => writeln!(out, "fallback: off (keepalived configs present)"),
            ("normal", false) => writeln!(
                out,
                "fallback: none possible (no keepalived config for this balancer)"
            ),
            (phase, _) => writeln!(
                out,
                "FALLBACK: {phase} for {}, keepalived {}",
                human_secs(f.since_s),
                f.keepalived_pid
                    .map_or("not running".to_owned(), |p| format!("pid {p}"))
            ),
        };
    }
    let rows = c
        .peers
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.address.map_or("-".into(), |a| a.to_string()),
                p.remote_as.to_string(),
                p.state.clone(),
                human_secs(p.uptime_s.or(p.down_s)),
                p.routes_sent.to_string(),
                p.bfd.as_ref().map_or("-".into(), |b| match b.detection_ms {
                    Some(d) if b.state == "up" => format!("up {d:.0}ms"),
                    _ => format!("{} ({})", b.state, b.diag),
                }),
                p.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        out,
        "BGP peers",
        &[
            "Peer",
            "Address",
            "AS",
            "State",
            "Up/Down",
            "Sent",
            "BFD",
            "Last error",
        ],
        rows,
    );
    let rows = c
        .vips
        .iter()
        .map(|v| {
            let drain = v.drain.as_ref().map_or("-".into(), |d| {
                format!(
                    "{} for {}{}",
                    d.step,
                    human_secs(Some(d.since_s)),
                    d.conns
                        .map_or(String::new(), |n| format!(", {n} connections"))
                )
            });
            vec![
                v.vip.to_string(),
                v.state.clone(),
                v.local_pref.map_or("-".into(), |l| l.to_string()),
                drain,
            ]
        })
        .collect();
    table(out, "VIPs", &["VIP", "State", "Local-pref", "Drain"], rows);
}

fn server(out: &mut String, s: &ServerStatus) {
    if let Some(h) = &s.holding {
        let _ = writeln!(out, "not answering balancers: {h}");
    }
    let held: Vec<String> = s
        .vips
        .iter()
        .filter(|v| v.held.is_some())
        .map(|v| v.vip.to_string())
        .collect();
    if let Some(l) = &s.withdraw_limit {
        let _ = writeln!(out, "withdraw_limit {l}, {} held", held.len());
    }
    if !held.is_empty() {
        let _ = writeln!(
            out,
            "held announced past the limit (withdraw with `ipvs-sync release`): {}",
            held.join(" ")
        );
    }
    if !s.forced_withdrawn.is_empty() {
        let v: Vec<String> = s.forced_withdrawn.iter().map(|v| v.to_string()).collect();
        let _ = writeln!(
            out,
            "withdrawn because a quorum down could not be recorded: {}",
            v.join(" ")
        );
    }
    if let Some(f) = &s.quorum_failure {
        let _ = writeln!(
            out,
            "last quorum handler failure {} ago, {}: {}",
            human_secs(Some(f.age_s)),
            f.vip,
            f.error
        );
    }
    let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    let rows = s
        .vips
        .iter()
        .map(|v| {
            vec![
                v.vip.to_string(),
                if v.announce { "yes" } else { "no" }.to_owned(),
                match (v.active, v.total) {
                    (Some(a), Some(t)) => format!("{a}/{t}"),
                    _ => "-".into(),
                },
                dash(v.local_pref.map(|l| l.to_string())),
                human_secs(v.since_s),
                dash(
                    v.held
                        .as_ref()
                        .map(|h| format!("{} ({})", human_secs(Some(h.since_s)), h.because)),
                ),
            ]
        })
        .collect();
    table(
        out,
        "VIPs",
        &["VIP", "Quorum", "Ports", "Local-pref", "Since", "Held"],
        rows,
    );
    let rows = s
        .vips
        .iter()
        .flat_map(|v| {
            v.balancers.iter().map(move |b| {
                vec![
                    v.vip.to_string(),
                    b.name.clone(),
                    b.stage.clone(),
                    human_secs(b.since_s),
                ]
            })
        })
        .collect();
    table(
        out,
        "Announces",
        &["VIP", "Balancer", "State", "Since"],
        rows,
    );
    let rows = s
        .clients
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                if c.live { "yes" } else { "no" }.to_owned(),
                human_secs(c.age_s.filter(|_| c.live)),
                dash(c.serial.map(|x| x.to_string())),
                dash(c.lag.map(|x| x.to_string())),
                c.vips.to_string(),
                c.quorate.to_string(),
                c.announced.to_string(),
                if c.drained { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    table(
        out,
        "Balancers",
        &[
            "Balancer",
            "Live",
            "Heartbeat",
            "Serial",
            "Lag",
            "VIPs",
            "Quorate",
            "Announced",
            "Drained",
        ],
        rows,
    );
}

/// Keeps only what concerns `vip` and/or `balancer` (`status --vip`, `--balancer`).
pub fn narrow(doc: &mut Status, vip: Option<std::net::IpAddr>, balancer: Option<&str>) {
    match doc {
        Status::Client(c) => {
            if let Some(v) = vip {
                c.vips.retain(|x| x.vip == v);
            }
        }
        Status::Server(s) => {
            if let Some(v) = vip {
                s.vips.retain(|x| x.vip == v);
                let names: Vec<String> = s
                    .vips
                    .iter()
                    .flat_map(|x| x.balancers.iter().map(|b| b.name.clone()))
                    .collect();
                s.clients.retain(|c| names.contains(&c.name));
            }
            if let Some(b) = balancer {
                s.clients.retain(|c| c.name == b);
                for v in &mut s.vips {
                    v.balancers.retain(|x| x.name == b);
                }
                s.vips.retain(|v| !v.balancers.is_empty());
            }
        }
    }
}

fn queues(out: &mut String, c: &Common) {
    if c.queues.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nQueues");
    let w = c.queues.keys().map(String::len).max().unwrap_or(0);
    for (k, v) in &c.queues {
        let _ = writeln!(out, "  {k:<w$}  {v}");
    }
}

/// An aligned table: a title, a header line, one line per row; nothing when there are no rows.
pub fn table(out: &mut String, title: &str, headers: &[&str], rows: Vec<Vec<String>>) {
    if rows.is_empty() {
        return;
    }
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
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
    line(out, headers.to_vec());
    for row in &rows {
        line(out, row.iter().map(String::as_str).collect());
    }
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
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::daemon::status::{Broker, ClientVip, PeerRow};

    #[test]
    fn renders_aligned_tables() {
        let doc = Status::Client(ClientStatus {
            common: Common {
                hostname: "lb1".into(),
                uptime_s: 3725.0,
                broker: Broker {
                    connected: true,
                    node: Some("192.0.2.21:5672".into()),
                },
                queues: [("incoming".to_owned(), 0)].into(),
                ..Common::default()
            },
            last_heartbeat_age_s: Some(1.25),
            fallback: Some(crate::daemon::status::FallbackRow {
                phase: "recovering".into(),
                since_s: Some(75.0),
                configs: true,
                keepalived_pid: Some(4242),
                entered: 1,
            }),
            peers: vec![
                PeerRow {
                    name: "r1".into(),
                    address: Some("192.0.2.1".parse().unwrap()),
                    remote_as: 65000,
                    state: "established".into(),
                    uptime_s: Some(61.0),
                    routes_sent: 2,
                    ..PeerRow::default()
                },
                PeerRow {
                    name: "router-two".into(),
                    address: Some("2001:db8::2".parse().unwrap()),
                    remote_as: 65001,
                    state: "active".into(),
                    last_error: Some("connection refused".into()),
                    ..PeerRow::default()
                },
            ],
            vips: vec![ClientVip {
                vip: "198.51.100.10".parse().unwrap(),
                state: "announced".into(),
                local_pref: Some(150),
                drain: None,
            }],
            ..ClientStatus::default()
        });
        let text = render(&doc);
        assert!(
            text.starts_with("client lb1  up 1h02m05s  broker connected to 192.0.2.21:5672\n"),
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
        assert!(text.contains("198.51.100.10  announced  150"), "{text}");
        assert!(text.contains("  incoming  0"), "{text}");
        assert!(
            text.contains("FALLBACK: recovering for 1m15s, keepalived pid 4242"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "no colour");
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
