//! `[bfd]`: the BFD timers (RFC 5880) of every `[bgp.peer.NAME]` with `bfd = true`, unless
//! the peer overrides them with `bfd_min_tx`, `bfd_min_rx`, `bfd_multiplier`.

use std::borrow::Cow;
use std::time::Duration;

use crate::error::ConfigError;
use crate::value::{self, Fields, Invalid, ValueResult};

/// `[bfd]`, or a peer's timers once its overrides are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdConfig {
    /// `min_tx` (0.3 s): Desired Min TX Interval once the session is Up.
    pub min_tx: Duration,
    /// `min_rx` (0.3 s): Required Min RX Interval.
    pub min_rx: Duration,
    /// `multiplier` (3): Detect Mult, 1..=255.
    pub multiplier: u8,
}

impl Default for BfdConfig {
    fn default() -> Self {
        BfdConfig {
            min_tx: Duration::from_millis(300),
            min_rx: Duration::from_millis(300),
            multiplier: 3,
        }
    }
}

impl BfdConfig {
    /// The keys of `[bfd]`.
    pub const KEYS: &'static [&'static str] = &["min_tx", "min_rx", "multiplier"];

    /// Reads `[bfd]`.
    pub(crate) fn from_fields(f: &mut Fields<'_>) -> Result<BfdConfig, ConfigError> {
        let d = BfdConfig::default();
        Ok(BfdConfig {
            min_tx: f.get("min_tx", d.min_tx, interval)?,
            min_rx: f.get("min_rx", d.min_rx, interval)?,
            multiplier: f.get("multiplier", d.multiplier, multiplier)?,
        })
    }
}

/// A BFD interval in seconds: rounded to whole microseconds (the wire unit), at least 1 µs
/// and at most 2³² − 1 µs (the 32-bit fields of RFC 5880 §4.1).
pub(crate) fn interval(v: &str) -> ValueResult<Duration> {
    const WHAT: &str = "seconds (decimals allowed), at least 0.000001 and at most 4294.967295";
    let d = value::positive_seconds(v).map_err(|_| Invalid::Expected(Cow::Borrowed(WHAT)))?;
    let micros = d.as_nanos().saturating_add(500) / 1000;
    if micros == 0 {
        return Err(Invalid::Refused(Cow::Borrowed(
            "rounds to 0 microseconds; BFD intervals are whole microseconds, at least 0.000001",
        )));
    }
    if micros > u128::from(u32::MAX) {
        return Err(Invalid::Refused(Cow::Borrowed(
            "longer than the 32-bit microsecond field of BFD allows (4294.967295 seconds)",
        )));
    }
    Ok(Duration::from_micros(
        u64::try_from(micros).unwrap_or(u64::MAX),
    ))
}

/// A Detect Mult: 1..=255.
pub(crate) fn multiplier(v: &str) -> ValueResult<u8> {
    value::int_in(v, 1, u8::MAX, "a detect multiplier 1..255")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_whole_microseconds_in_32_bits() {
        assert_eq!(interval("0.3"), Ok(Duration::from_millis(300)));
        assert_eq!(interval("0.05"), Ok(Duration::from_millis(50)));
        assert_eq!(interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(interval("0.000001"), Ok(Duration::from_micros(1)));
        assert_eq!(interval("0.0000005"), Ok(Duration::from_micros(1)));
        assert_eq!(interval("0.0000012"), Ok(Duration::from_micros(1)));
        assert_eq!(
            interval("4294.967295"),
            Ok(Duration::from_micros(u64::from(u32::MAX)))
        );
        for bad in [
            "0",
            "0.0000004",
            "4294.9673",
            "5000",
            "-1",
            "x",
            "0.3s",
            "nan",
        ] {
            assert!(interval(bad).is_err(), "{bad}");
        }
        assert_eq!(multiplier("1"), Ok(1));
        assert_eq!(multiplier("255"), Ok(255));
        for bad in ["0", "256", "-1", "3.5"] {
            assert!(multiplier(bad).is_err(), "{bad}");
        }
    }
}
