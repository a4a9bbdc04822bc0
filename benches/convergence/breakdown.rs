//! `--breakdown`: where a `quorum down`'s time goes on the ipvs-sync path, stage by stage.
//!
//! The daemons then log their own lines at debug, and each stage ends at a line one of them writes (the
//! lines carry wall-clock timestamps in µs; both run on this machine's clock):
//!
//! ```text
//!  handler spawned (the bench's clock)
//!    → the arbiter's loop has the hand-off         server.log  "quorum hand-off … announce=false"
//!    → the fin_announce is queued to the broker    server.log  "queued kind=fin_announce"
//!    → the balancer's loop has it                  client.log  "message from=arbiter kind=fin_announce"
//!      (signed, published, routed by RabbitMQ, delivered, signature checked)
//!    → the UPDATE is written to r1's socket        client.log  "withdrawals written"
//!    → r1's RIB shows the withdraw                 the `gobgp monitor` stream (the bench's clock)
//! ```
//! Debug logging costs each daemon a write per line, so the totals are a little above a run
//! without `--breakdown`; the stages are what it is for.

use std::time::{Duration, SystemTime};

use labkit::log_time::stamped;
use labkit::metrics::quantile;

/// One measured down: when its handler was spawned and when r1 showed the withdraw.
pub struct Down {
    pub spawned: SystemTime,
    pub at_router: Duration,
}

/// The stages, in order: (what ends it, in which log, the line's text).
const STAGES: [(&str, Log, &str); 4] = [
    (
        "handler spawned → the arbiter's loop has the hand-off",
        Log::Arbiter,
        "quorum hand-off vip=",
    ),
    (
        "→ fin_announce queued to the broker",
        Log::Arbiter,
        "queued kind=fin_announce",
    ),
    (
        "→ the balancer's loop has it (sign, broker, verify)",
        Log::Client,
        "message from=arbiter kind=fin_announce",
    ),
    (
        "→ the UPDATE written to r1's socket",
        Log::Client,
        "withdrawals written",
    ),
];

/// A stage's line this long after r1 showed the withdraw is another cycle's.
const LATER_CYCLE: Duration = Duration::from_millis(20);

#[derive(Clone, Copy)]
enum Log {
    Arbiter,
    Client,
}

/// Rows of the breakdown table (stage, p50 / p90 / max in µs, the stage's share of the sum of
/// the p50s), or why there are none.
pub fn rows(
    downs: &[Down],
    arbiter_log: &str,
    client_log: &str,
) -> Result<Vec<[String; 3]>, String> {
    let arbiter = stamped(arbiter_log);
    let client = stamped(client_log);
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len() + 1];
    for d in downs {
        let mut t = d.spawned;
        let mut stage_ends = Vec::with_capacity(STAGES.len());
        for (_, log, text) in STAGES {
            let lines = match log {
                Log::Arbiter => &arbiter,
                Log::Client => &client,
            };
            let end = lines
                .iter()
                .find(|(at, line)| *at >= t && line.contains(text))
                .map(|(at, _)| *at);
            match end {
                Some(at) => {
                    stage_ends.push(at);
                    t = at;
                }
                None => break,
            }
        }
        let router = d.spawned + d.at_router;
        // The client logs "written" once the write returned, which may be after r1 printed
        // the withdraw (that last stage then counts 0); a line well past r1's belongs to a
        // later cycle, when one of this cycle's lines is missing: skip the sample.
        if stage_ends.len() < STAGES.len() || t > router + LATER_CYCLE {
            continue;
        }
        let mut from = d.spawned;
        for (i, end) in stage_ends.iter().chain([&router]).enumerate() {
            let us = end.duration_since(from).unwrap_or_default().as_secs_f64() * 1e6;
            samples[i].push(us);
            from = *end;
        }
    }
    let n = samples[0].len();
    if n == 0 {
        return Err(format!(
            "no down of the {} measured could be followed through the logs",
            downs.len()
        ));
    }
    let names = STAGES
        .iter()
        .map(|(name, _, _)| *name)
        .chain(["→ r1's RIB shows the withdraw"]);
    let p50s: Vec<f64> = samples.iter_mut().map(|v| quantile(v, 0.5)).collect();
    let sum: f64 = p50s.iter().sum();
    let mut rows: Vec<[String; 3]> = names
        .zip(samples.iter_mut())
        .zip(&p50s)
        .map(|((name, v), p50)| {
            [
                name.to_owned(),
                spread(v),
                format!("{:.0} %", 100.0 * p50 / sum),
            ]
        })
        .collect();
    let mut total: Vec<f64> = downs
        .iter()
        .map(|d| d.at_router.as_secs_f64() * 1e6)
        .collect();
    rows.push([
        format!(
            "total, spawned → r1 ({n} of {} downs followed)",
            downs.len()
        ),
        spread(&mut total),
        String::new(),
    ]);
    Ok(rows)
}

/// "p50 / p90 / max µs" of `v`.
fn spread(v: &mut [f64]) -> String {
    let (p50, p90, max) = (quantile(v, 0.5), quantile(v, 0.9), quantile(v, 1.0));
    format!("{p50:.0} / {p90:.0} / {max:.0}")
}
