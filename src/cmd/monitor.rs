//! `ipvs-sync monitor`: one line and a Nagios exit code, from the daemon's `/status`.
//!
//! Checks, worst wins:
//! - the daemon answers on `http_listen` (else CRITICAL);
//! - the broker connection is up (else CRITICAL);
//! - client: the arbiter's last heartbeat is younger than `consumer_alive_ttl` (else CRITICAL)
//!   and than 3 × `heartbeat_interval` (else WARNING); server: at least one live client, and
//!   it answers balancers (WARNING during `startup_hold`, CRITICAL while its mapping or IPVS
//!   tree cannot be read);
//! - every worker ran recently: each `workers.*.age_s` under 3 × its `interval_s` (else WARNING);
//! - every internal queue holds fewer than 10 items (else WARNING);
//! - every peer's clock is within 1 s of ours (`transport.clock_offsets`, else WARNING: clocks
//!   never stop a message, but logs and operators compare times).

use serde_json::Value;

/// Nagios-style verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// All good: exit 0.
    Ok = 0,
    /// Degraded: exit 1.
    Warning = 1,
    /// Broken: exit 2.
    Critical = 2,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }
}

/// Queue depth from which a queue counts as backed up.
pub const QUEUE_WARN: u64 = 10;

/// Thresholds taken from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `heartbeat_interval`, seconds.
    pub heartbeat_interval: f64,
    /// `consumer_alive_ttl`, seconds.
    pub alive_ttl: f64,
}

/// Judges a status document: the level and the one line to print.
pub fn judge(doc: &Value, lim: Limits) -> (Level, String) {
    let mut level = Level::Ok;
    let mut notes: Vec<String> = Vec::new();
    let mut bad = |l: Level, note: String, level: &mut Level| {
        *level = (*level).max(l);
        notes.push(note);
    };
    if doc["broker"]["connected"].as_bool() != Some(true) {
        bad(Level::Critical, "broker unreachable".into(), &mut level);
    }
    match doc["role"].as_str() {
        Some("client") => match doc["last_heartbeat_age_s"].as_f64() {
            None => bad(
                Level::Critical,
                "no heartbeat from the arbiter yet".into(),
                &mut level,
            ),
            Some(a) if a > lim.alive_ttl => bad(
                Level::Critical,
                format!("arbiter heartbeat {a:.1}s old"),
                &mut level,
            ),
            Some(a) if a > 3.0 * lim.heartbeat_interval => bad(
                Level::Warning,
                format!("arbiter heartbeat {a:.1}s old"),
                &mut level,
            ),
            Some(_) => {}
        },
        Some("server") => {
            let live = doc["clients"].as_array().map(|c| c.len()).unwrap_or(0);
            if live == 0 {
                bad(Level::Warning, "no live clients".into(), &mut level);
            }
            if let Some(why) = doc["holding"].as_str() {
                let l = if why.starts_with("startup_hold") {
                    Level::Warning
                } else {
                    Level::Critical
                };
                bad(l, format!("not answering balancers: {why}"), &mut level);
            }
        }
        _ => bad(
            Level::Critical,
            "status document has no role".into(),
            &mut level,
        ),
    }
    if let Some(workers) = doc["workers"].as_object() {
        for (name, w) in workers {
            if let (Some(age), Some(iv)) = (w["age_s"].as_f64(), w["interval_s"].as_f64()) {
                if age > 3.0 * iv.max(0.1) {
                    bad(
                        Level::Warning,
                        format!("worker {name} last ran {age:.1}s ago"),
                        &mut level,
                    );
                }
            }
        }
    }
    if let Some(peers) = doc["transport"]["clock_offsets"].as_array() {
        for p in peers.iter().filter(|p| p["warn"].as_bool() == Some(true)) {
            let off = p["offset_ms"].as_i64().unwrap_or(0) as f64 / 1000.0;
            bad(
                Level::Warning,
                format!(
                    "clock of {} is {off:+.1}s off ours",
                    p["peer"].as_str().unwrap_or("?")
                ),
                &mut level,
            );
        }
    }
    let mut max_q = 0;
    if let Some(q) = doc["queues"].as_object() {
        for (name, depth) in q {
            let d = depth.as_u64().unwrap_or(0);
            max_q = max_q.max(d);
            if d >= QUEUE_WARN {
                bad(
                    Level::Warning,
                    format!("queue {name} holds {d}"),
                    &mut level,
                );
            }
        }
    }
    let line = if notes.is_empty() {
        let hb = doc["last_heartbeat_age_s"]
            .as_f64()
            .map(|a| format!(", heartbeat {a:.1}s ago"))
            .unwrap_or_default();
        format!(
            "{}: ipvs-sync {} healthy{hb}, max queue {max_q}",
            level.word(),
            doc["role"].as_str().unwrap_or("?")
        )
    } else {
        format!("{}: {}", level.word(), notes.join("; "))
    };
    (level, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIM: Limits = Limits {
        heartbeat_interval: 3.0,
        alive_ttl: 15.0,
    };

    #[test]
    fn healthy_client_is_ok() {
        let doc = json!({"role": "client", "broker": {"connected": true}, "last_heartbeat_age_s": 1.0,
                         "queues": {"incoming": 0}, "workers": {"tree": {"age_s": 1.0, "interval_s": 120.0}}});
        let (l, line) = judge(&doc, LIM);
        assert_eq!(l, Level::Ok, "{line}");
        assert!(line.starts_with("OK: ipvs-sync client healthy"), "{line}");
    }

    #[test]
    fn each_check_trips_its_level() {
        let base = || json!({"role": "client", "broker": {"connected": true}, "last_heartbeat_age_s": 1.0});
        let mut d = base();
        d["broker"]["connected"] = json!(false);
        assert_eq!(judge(&d, LIM).0, Level::Critical);
        let mut d = base();
        d["last_heartbeat_age_s"] = json!(10.0);
        assert_eq!(judge(&d, LIM).0, Level::Warning);
        d["last_heartbeat_age_s"] = json!(20.0);
        assert_eq!(judge(&d, LIM).0, Level::Critical);
        let mut d = base();
        d["transport"] = json!({"clock_offsets": [
            {"peer": "arbiter", "offset_ms": 600_000, "warn": true, "last_seen_ms": 1},
            {"peer": "other", "offset_ms": 20, "warn": false, "last_seen_ms": 1}]});
        let (l, line) = judge(&d, LIM);
        assert_eq!(l, Level::Warning);
        assert_eq!(line, "WARNING: clock of arbiter is +600.0s off ours");
        let mut d = base();
        d["queues"] = json!({"incoming": 10});
        let (l, line) = judge(&d, LIM);
        assert_eq!(l, Level::Warning);
        assert!(line.contains("queue incoming holds 10"), "{line}");
        let mut d = base();
        d["workers"] = json!({"desc": {"age_s": 5.0, "interval_s": 0.5}});
        assert_eq!(judge(&d, LIM).0, Level::Warning);
        assert_eq!(judge(&json!({}), LIM).0, Level::Critical);
        let server = json!({"role": "server", "broker": {"connected": true}, "clients": []});
        assert_eq!(judge(&server, LIM).0, Level::Warning);
        let server = |holding: Value| {
            json!({"role": "server", "broker": {"connected": true}, "clients": [{"name": "lb1"}],
                   "holding": holding})
        };
        assert_eq!(judge(&server(Value::Null), LIM).0, Level::Ok);
        let (l, line) = judge(&server(json!("startup_hold has not passed")), LIM);
        assert_eq!(l, Level::Warning);
        assert!(
            line.contains("not answering balancers: startup_hold"),
            "{line}"
        );
        let unread = json!("the service mapping has not been read");
        assert_eq!(judge(&server(unread), LIM).0, Level::Critical);
    }
}
