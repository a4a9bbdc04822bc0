//! Typed reading of one INI section: value parsers plus a reader that tracks which keys
//! were used, so that the keys left over are reported as unknown.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::error::ConfigError;
use crate::ini::{Entry, Section};

/// Why a value was refused, before the file/line/key are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// It does not parse: "expected {0}".
    Expected(Cow<'static, str>),
    /// It parses but is refused: the full reason.
    Refused(Cow<'static, str>),
}

/// Result of a value parser.
pub(crate) type ValueResult<T> = Result<T, Invalid>;

fn expected<T>(what: &'static str) -> ValueResult<T> {
    Err(Invalid::Expected(Cow::Borrowed(what)))
}

/// `true/false`, `yes/no`, `on/off`, `1/0`, any case (as Python's `getboolean`).
pub(crate) fn boolean(v: &str) -> ValueResult<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => expected("a boolean (true/false, yes/no, on/off, 1/0)"),
    }
}

/// Shortest interval a config key takes: a timer of zero (or of a few nanoseconds, which is
/// what `1e-10` parses to) would spin or panic.
const MIN_SECONDS: f64 = 0.001;

/// Seconds as a float, at least a millisecond and at most ~31 years.
pub(crate) fn seconds(v: &str) -> ValueResult<Duration> {
    const WHAT: &str = "a number of seconds from 0.001 to 1e9";
    let Ok(f) = v.parse::<f64>() else {
        return expected(WHAT);
    };
    if !f.is_finite() || !(MIN_SECONDS..=1e9).contains(&f) {
        return expected(WHAT);
    }
    Duration::try_from_secs_f64(f).or_else(|_| expected(WHAT))
}

/// Seconds as a float, > 0 and at most ~31 years, with no millisecond floor: for callers that
/// round and bound the value themselves (BFD intervals, whole microseconds).
pub(crate) fn positive_seconds(v: &str) -> ValueResult<Duration> {
    const WHAT: &str = "a number of seconds > 0";
    let Ok(f) = v.parse::<f64>() else {
        return expected(WHAT);
    };
    if !f.is_finite() || f <= 0.0 || f > 1e9 {
        return expected(WHAT);
    }
    Duration::try_from_secs_f64(f).or_else(|_| expected(WHAT))
}

/// A number of seconds: 0 (turns the thing off) or from a millisecond up.
pub(crate) fn seconds_or_zero(v: &str) -> ValueResult<Duration> {
    const WHAT: &str = "0 or a number of seconds from 0.001 to 1e9";
    let Ok(f) = v.parse::<f64>() else {
        return expected(WHAT);
    };
    if !f.is_finite() || !(f == 0.0 || (MIN_SECONDS..=1e9).contains(&f)) {
        return expected(WHAT);
    }
    Duration::try_from_secs_f64(f).or_else(|_| expected(WHAT))
}

/// An integer in `min..=max`; `what` names the range in the error.
pub(crate) fn int_in<T>(v: &str, min: T, max: T, what: &'static str) -> ValueResult<T>
where
    T: FromStr + PartialOrd + Copy,
{
    match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => expected(what),
    }
}

/// A positive count (queue limits, sizes).
pub(crate) fn positive_usize(v: &str) -> ValueResult<usize> {
    int_in(v, 1, usize::MAX, "a whole number > 0")
}

/// An AS number; AS_TRANS (23456, RFC 6793) is refused as a configured AS.
pub(crate) fn asn(v: &str) -> ValueResult<u32> {
    let n = int_in(v, 1u32, u32::MAX, "an AS number 1..4294967295")?;
    if n == 23456 {
        return Err(Invalid::Refused(Cow::Borrowed(
            "AS 23456 is AS_TRANS (RFC 6793) and cannot be configured",
        )));
    }
    Ok(n)
}

/// An IPv4 or IPv6 address.
pub(crate) fn ip(v: &str) -> ValueResult<IpAddr> {
    v.parse().or_else(|_| expected("an IPv4 or IPv6 address"))
}

/// An IPv4 address.
pub(crate) fn ipv4(v: &str) -> ValueResult<Ipv4Addr> {
    v.parse().or_else(|_| expected("an IPv4 address"))
}

/// An IPv6 address.
pub(crate) fn ipv6(v: &str) -> ValueResult<Ipv6Addr> {
    v.parse().or_else(|_| expected("an IPv6 address"))
}

/// A socket address, `127.0.0.1:9180` or `[::1]:9180`.
pub(crate) fn socket_addr(v: &str) -> ValueResult<SocketAddr> {
    v.parse()
        .or_else(|_| expected("a socket address like 127.0.0.1:9180 or [::1]:9180"))
}

/// An absolute path.
pub(crate) fn abs_path(v: &str) -> ValueResult<PathBuf> {
    let p = PathBuf::from(v);
    if v.is_empty() || !p.is_absolute() {
        return expected("an absolute path");
    }
    Ok(p)
}

/// A comma-separated list of absolute paths; empty is an empty list.
pub(crate) fn abs_path_list(v: &str) -> ValueResult<Vec<PathBuf>> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let p = PathBuf::from(s);
            if p.is_absolute() {
                Ok(p)
            } else {
                expected("a comma-separated list of absolute paths")
            }
        })
        .collect()
}

/// Reads one section's entries by key and remembers which were used.
pub(crate) struct Fields<'a> {
    file: &'a Path,
    section: &'a Section,
    used: Vec<bool>,
}

impl<'a> Fields<'a> {
    /// A reader over `section` of `file`.
    pub(crate) fn new(file: &'a Path, section: &'a Section) -> Self {
        Fields {
            file,
            section,
            used: vec![false; section.entries.len()],
        }
    }

    /// The raw entry for `key`, marking it used.
    pub(crate) fn entry(&mut self, key: &str) -> Option<&'a Entry> {
        let section: &'a Section = self.section;
        let idx = section.entries.iter().position(|e| e.key == key)?;
        self.used[idx] = true;
        section.entries.get(idx)
    }

    /// Attaches file, line and key to a value error. `secret` hides the value.
    pub(crate) fn error(&self, entry: &Entry, invalid: Invalid, secret: bool) -> ConfigError {
        let (file, line, section, key) = (
            self.file.to_path_buf(),
            entry.line,
            self.section.name.clone(),
            entry.key.clone(),
        );
        match invalid {
            Invalid::Expected(expected) => ConfigError::InvalidValue {
                file,
                line,
                section,
                key,
                expected: expected.into_owned(),
                got: if secret {
                    "<hidden>".to_owned()
                } else {
                    entry.value.clone()
                },
            },
            Invalid::Refused(reason) => ConfigError::Refused {
                file,
                line,
                section,
                key,
                reason: reason.into_owned(),
            },
        }
    }

    /// `key` parsed by `parse`, or `default` when absent.
    pub(crate) fn get<T>(
        &mut self,
        key: &str,
        default: T,
        parse: impl FnOnce(&str) -> ValueResult<T>,
    ) -> Result<T, ConfigError> {
        Ok(self.opt(key, parse)?.unwrap_or(default))
    }

    /// `key` parsed by `parse`; `None` when absent or set to an empty value.
    pub(crate) fn opt<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> ValueResult<T>,
    ) -> Result<Option<T>, ConfigError> {
        match self.entry(key) {
            None => Ok(None),
            Some(e) if e.value.is_empty() => Ok(None),
            Some(e) => parse(&e.value)
                .map(Some)
                .map_err(|i| self.error(e, i, false)),
        }
    }

    /// `key` parsed by `parse`; an error naming the key when absent.
    pub(crate) fn required<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> ValueResult<T>,
    ) -> Result<T, ConfigError> {
        match self.opt(key, parse)? {
            Some(v) => Ok(v),
            None => Err(self.missing(key, "")),
        }
    }

    /// A "required" error for `key` of this section.
    /// Refuses `key`, which is present, with `reason` (file:line:key).
    pub(crate) fn refuse(&mut self, key: &str, reason: &'static str) -> ConfigError {
        match self.entry(key) {
            Some(e) => self.error(e, Invalid::Refused(Cow::Borrowed(reason)), false),
            None => self.missing(key, reason),
        }
    }

    pub(crate) fn missing(&self, key: &str, reason: &str) -> ConfigError {
        ConfigError::MissingKey {
            file: self.file.to_path_buf(),
            section: self.section.name.clone(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        }
    }

    /// Every entry whose key starts with `prefix` (`execute.`), in file order, marked used.
    pub(crate) fn prefixed(&mut self, prefix: &str) -> Vec<&'a Entry> {
        let section: &'a Section = self.section;
        let mut out = Vec::new();
        for (i, e) in section.entries.iter().enumerate() {
            if e.key.starts_with(prefix) {
                self.used[i] = true;
                out.push(e);
            }
        }
        out
    }

    /// Fails on the first key (in file order) neither in `known` nor starting with one of
    /// `prefixes`; called before any value is read so that a misspelt key is reported as
    /// such, not as a missing one.
    pub(crate) fn only(&self, known: &[&str], prefixes: &[&str]) -> Result<(), ConfigError> {
        match self.section.entries.iter().find(|e| {
            !known.contains(&e.key.as_str()) && !prefixes.iter().any(|p| e.key.starts_with(p))
        }) {
            Some(e) => Err(ConfigError::UnknownKey {
                file: self.file.to_path_buf(),
                line: e.line,
                section: self.section.name.clone(),
                key: e.key.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Fails on the first key (in file order) that no one asked for.
    pub(crate) fn finish(self) -> Result<(), ConfigError> {
        match self
            .section
            .entries
            .iter()
            .zip(&self.used)
            .find(|(_, used)| !**used)
        {
            Some((e, _)) => Err(ConfigError::UnknownKey {
                file: self.file.to_path_buf(),
                line: e.line,
                section: self.section.name.clone(),
                key: e.key.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_like_configparser() {
        for t in ["true", "Yes", "ON", "1"] {
            assert_eq!(boolean(t), Ok(true));
        }
        for f in ["false", "No", "off", "0"] {
            assert_eq!(boolean(f), Ok(false));
        }
        assert!(boolean("2").is_err());
        assert!(boolean("").is_err());
    }

    #[test]
    fn seconds_bounds() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("120"), Ok(Duration::from_secs(120)));
        // 1e-10 parses to a zero Duration, which panics a timer at start.
        for bad in ["0", "-1", "nan", "inf", "1e300", "x", "", "1e-10", "0.0009"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds("0.001"), Ok(Duration::from_millis(1)));
        assert_eq!(seconds_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(seconds_or_zero("2.5"), Ok(Duration::from_millis(2500)));
        for bad in ["-1", "-0.1", "nan", "inf", "1e300", "x", "", "1e-10"] {
            assert!(seconds_or_zero(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn asn_bounds() {
        assert_eq!(asn("4294967295"), Ok(u32::MAX));
        assert_eq!(asn("1"), Ok(1));
        assert!(matches!(asn("0"), Err(Invalid::Expected(_))));
        assert!(matches!(asn("4294967296"), Err(Invalid::Expected(_))));
        assert!(matches!(asn("23456"), Err(Invalid::Refused(_))));
    }

    #[test]
    fn path_lists() {
        assert_eq!(
            abs_path_list(" /a , /b/c,"),
            Ok(vec![PathBuf::from("/a"), PathBuf::from("/b/c")])
        );
        assert_eq!(abs_path_list(""), Ok(vec![]));
        assert!(abs_path_list("/a, rel").is_err());
    }
}
