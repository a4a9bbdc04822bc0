//! A small Prometheus registry: counters and gauges with labels, rendered in the text format.
//!
//! Everything an operator graphs goes through here: messages in/out/dropped by reason, peers up,
//! VIPs announced, queue depths, heartbeat age, apply durations. A mutex around a sorted map is
//! plenty for a control plane (thousands of updates a second at most) and keeps the output stable.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

/// Kind of a metric family, as Prometheus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

#[derive(Default)]
struct Inner {
    /// family name → (kind, help)
    families: BTreeMap<&'static str, (Kind, &'static str)>,
    /// (family, rendered labels) → value
    values: BTreeMap<(&'static str, String), f64>,
}

/// Shared registry; clones share the same values.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

impl Metrics {
    /// A new, empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update; the numbers are still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares a family so it is rendered (with HELP/TYPE) even before its first sample.
    pub fn describe(&self, name: &'static str, kind: Kind, help: &'static str) {
        self.lock().families.insert(name, (kind, help));
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], n: u64) {
        let mut g = self.lock();
        g.families.entry(name).or_insert((Kind::Counter, ""));
        *g.values.entry((name, render_labels(labels))).or_insert(0.0) += n as f64;
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, labels: &[(&str, &str)], v: f64) {
        let mut g = self.lock();
        g.families.entry(name).or_insert((Kind::Gauge, ""));
        g.values.insert((name, render_labels(labels)), v);
    }

    /// Text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let g = self.lock();
        let mut out = String::new();
        for (name, (kind, help)) in &g.families {
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let t = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# TYPE {name} {t}");
            for ((n, labels), v) in g.values.range((*name, String::new())..) {
                if n != name {
                    break;
                }
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        }
        out
    }
}

#[cfg(test)]
impl Metrics {
    /// Sum over every series of a family (e.g. all drop reasons).
    pub fn sum(&self, name: &'static str) -> f64 {
        let g = self.lock();
        g.values
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, v)| v)
            .sum()
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_labels_escaped() {
        let m = Metrics::new();
        m.describe(
            "ipvs_sync_messages_dropped_total",
            Kind::Counter,
            "Dropped messages by reason.",
        );
        m.inc("ipvs_sync_messages_dropped_total", &[("reason", "forged")]);
        m.add(
            "ipvs_sync_messages_dropped_total",
            &[("reason", "stale")],
            3,
        );
        m.set("ipvs_sync_vips_announced", &[], 2.0);
        m.set("ipvs_sync_peer_up", &[("peer", "r\"1")], 1.0);
        let text = m.render();
        assert!(
            text.contains("# HELP ipvs_sync_messages_dropped_total Dropped messages by reason.\n")
        );
        assert!(text.contains("# TYPE ipvs_sync_messages_dropped_total counter\n"));
        assert!(text.contains("ipvs_sync_messages_dropped_total{reason=\"forged\"} 1\n"));
        assert!(text.contains("ipvs_sync_messages_dropped_total{reason=\"stale\"} 3\n"));
        assert!(
            text.contains("# TYPE ipvs_sync_vips_announced gauge\nipvs_sync_vips_announced 2\n")
        );
        assert!(text.contains("ipvs_sync_peer_up{peer=\"r\\\"1\"} 1\n"));
        assert_eq!(m.sum("ipvs_sync_messages_dropped_total"), 4.0);
    }

    #[test]
    fn families_do_not_bleed_into_each_other() {
        let m = Metrics::new();
        m.inc("a_total", &[]);
        m.inc("a_total_x", &[]);
        let text = m.render();
        let a = text.split("# TYPE a_total_x").next().unwrap_or_default();
        assert_eq!(a.matches("a_total").count(), 2, "{text}");
    }
}
