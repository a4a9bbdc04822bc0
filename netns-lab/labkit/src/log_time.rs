//! Timestamps of the daemons' log lines (`2026-12-07T13:17:26.300208Z`, UTC, what
//! tracing's formatter writes first on each line), for benches that follow one event
//! through several daemons' logs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The log's lines that start with a timestamp, with it.
pub fn stamped(log: &str) -> Vec<(SystemTime, &str)> {
    log.lines()
        .filter_map(|l| {
            let (ts, _) = l.split_once(' ')?;
            Some((parse_utc(ts)?, l))
        })
        .collect()
}

/// `2026-12-07T13:17:26.300208Z` (what the daemons' log lines start with) as a time.
pub fn parse_utc(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let digits = frac.len().min(9);
    let nanos = frac.get(..digits)?.parse::<u64>().ok()? * 10u64.pow(9 - digits as u32);
    let days = u64::try_from(days_from_civil(y, m, day)).ok()?;
    let secs = days * 86_400 + h * 3_600 + min * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_parse_to_the_unix_time() {
        let t = parse_utc("2026-12-07T13:17:26.300208Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        // date -u -d 2026-12-07T13:17:26Z +%s
        assert_eq!(d.as_secs(), 1_796_649_446);
        assert_eq!(d.subsec_micros(), 300_208);
        assert_eq!(
            parse_utc("1970-01-01T00:00:00Z"),
            Some(UNIX_EPOCH),
            "no fraction"
        );
        assert_eq!(parse_utc("2026-12-07 13:17:26Z"), None);
        assert_eq!(
            parse_utc("2024-02-29T00:00:00.5Z"),
            Some(UNIX_EPOCH + Duration::from_millis(1_709_164_800_500)),
            "a leap day, a short fraction"
        );
    }

    #[test]
    fn lines_without_a_timestamp_are_left_out() {
        let log = "2026-12-07T13:17:26.300208Z DEBUG queued kind=fin_announce\n\
                   \x20 continued\n\
                   2026-12-07T13:17:26.300344Z DEBUG message from=arbiter\n";
        let lines = stamped(log);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].1.ends_with("queued kind=fin_announce"));
        assert_eq!(
            lines[1].0.duration_since(lines[0].0).unwrap(),
            Duration::from_micros(136)
        );
    }
}
