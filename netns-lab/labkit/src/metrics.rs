//! Reading the daemons' Prometheus pages from inside their namespaces, and figures.

use std::io::{Read, Write};
use std::time::Duration;

use crate::Netns;

/// `GET path` against `127.0.0.1:port` inside `ns` (from a thread that enters it); the
/// body, or an empty string when nothing answers.
pub fn http_get(ns: &Netns, port: u16, path: &str) -> String {
    let name = ns.name().to_owned();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let ns = Netns::attach(&name).ok()?;
        ns.enter().ok()?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(
            text.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default(),
        )
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// The values of a metric by one label, from a Prometheus text page:
/// `name{label="v"} 12` → `[("v", 12.0)]`.
pub fn metric_by(page: &str, name: &str, label: &str) -> Vec<(String, f64)> {
    let key = format!("{label}=\"");
    page.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{').map(|_| l))
        .filter_map(|l| {
            let at = l.find(&key)? + key.len();
            let v = &l[at..];
            let v = &v[..v.find('"')?];
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((v.to_owned(), n))
        })
        .collect()
}

/// The value of `name` with label `label="value"` (0 when absent).
pub fn metric_with(page: &str, name: &str, label: &str, value: &str) -> f64 {
    metric_by(page, name, label)
        .into_iter()
        .find_map(|(v, n)| (v == value).then_some(n))
        .unwrap_or(0.0)
}

/// The value of an unlabelled counter or gauge (0 when absent).
pub fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ')))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The `q` quantile of `v` (0 ≤ q ≤ 1; `v` is sorted here): the sample at the rounded
/// index `(len − 1) · q`, NaN when there is none.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// p50 and p99 of durations, in milliseconds (NaN when there are none).
pub fn percentiles(v: Vec<Duration>) -> (f64, f64) {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    (quantile(&mut ms, 0.50), quantile(&mut ms, 0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP x\n\
        ipvs_sync_messages_sent_total{type=\"fin_announce\"} 3\n\
        ipvs_sync_messages_sent_total{type=\"syn_announce\"} 1\n\
        ipvs_sync_messages_sent_total_other{type=\"fin_announce\"} 9\n\
        ipvs_sync_holding 1\n\
        ipvs_sync_holding_other 5\n";

    #[test]
    fn metrics_by_label_and_plain() {
        assert_eq!(
            metric_by(PAGE, "ipvs_sync_messages_sent_total", "type"),
            [
                ("fin_announce".to_owned(), 3.0),
                ("syn_announce".to_owned(), 1.0)
            ]
        );
        assert_eq!(
            metric_with(
                PAGE,
                "ipvs_sync_messages_sent_total",
                "type",
                "syn_announce"
            ),
            1.0
        );
        assert_eq!(
            metric_with(PAGE, "ipvs_sync_messages_sent_total", "type", "x"),
            0.0
        );
        assert_eq!(metric(PAGE, "ipvs_sync_holding"), 1.0);
        assert_eq!(metric(PAGE, "ipvs_sync_nope"), 0.0);
    }

    #[test]
    fn percentiles_of_a_few() {
        let ms = |n: u64| Duration::from_millis(n);
        let (p50, p99) = percentiles((1..=100).map(ms).collect());
        assert_eq!((p50.round(), p99), (51.0, 99.0));
        assert!(percentiles(Vec::new()).0.is_nan());
    }

    #[test]
    fn quantile_rounds_its_index() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        // (4 − 1) · 0.5 = 1.5 rounds to index 2 of the sorted samples.
        assert_eq!(quantile(&mut v, 0.5), 3.0);
        assert_eq!(quantile(&mut v, 0.0), 1.0);
        assert_eq!(quantile(&mut v, 1.0), 4.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }
}
