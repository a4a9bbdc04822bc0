//! This host's fully qualified name, the default of `[main] hostname`.
//!
//! Like `hostname -f` on a host whose resolver consults `/etc/hosts` first, but without
//! spawning a process or calling into libc:
//!
//! 1. the kernel host name (`/proc/sys/kernel/hostname`) if it already has a dot;
//! 2. else the first name with a dot on the `/etc/hosts` line that lists the short name
//!    (`127.0.1.1 lb1.example.net lb1` gives `lb1.example.net`);
//! 3. else the short name plus the kernel domain name (`/proc/sys/kernel/domainname`)
//!    unless that is empty or `(none)`;
//! 4. else the short name alone. DNS is not consulted: set `hostname` in `config.ini`
//!    when the FQDN is only known to DNS.

use std::fs;

/// The FQDN of this host as described in the module docs; `None` when even the kernel
/// host name cannot be read.
pub fn detect_fqdn() -> Option<String> {
    let short = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    let domain = fs::read_to_string("/proc/sys/kernel/domainname").unwrap_or_default();
    fqdn_from(&short, &hosts, &domain)
}

/// The pure part of [`detect_fqdn`]: kernel host name, `/etc/hosts` text, kernel domain.
pub fn fqdn_from(kernel_hostname: &str, etc_hosts: &str, domainname: &str) -> Option<String> {
    let short = kernel_hostname.trim().trim_end_matches('.');
    if short.is_empty() {
        return None;
    }
    if short.contains('.') {
        return Some(short.to_owned());
    }
    for line in etc_hosts.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        if fields.next().is_none() {
            continue;
        }
        let names: Vec<&str> = fields.collect();
        if !names.iter().any(|n| n.eq_ignore_ascii_case(short)) {
            continue;
        }
        let prefix = format!("{}.", short.to_ascii_lowercase());
        if let Some(fqdn) = names
            .iter()
            .find(|n| n.to_ascii_lowercase().starts_with(&prefix))
        {
            return Some(fqdn.trim_end_matches('.').to_owned());
        }
    }
    let domain = domainname.trim().trim_matches('.');
    if !domain.is_empty() && domain != "(none)" {
        return Some(format!("{short}.{domain}"));
    }
    Some(short.to_owned())
}

/// Whether `name` is usable as a host name and AMQP routing key: 1..=253 bytes, labels of
/// 1..=63 letters, digits, `-` or `_`, separated by dots.
pub fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_name_with_dot_wins() {
        assert_eq!(
            fqdn_from("lb1.example.net\n", "", "").as_deref(),
            Some("lb1.example.net")
        );
    }

    #[test]
    fn etc_hosts_gives_canonical_name() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.1 lb1.wrong.net lb1\n\
                     127.0.1.1\tlb1.example.net lb1 # comment\n";
        assert_eq!(
            fqdn_from("lb1\n", hosts, "(none)\n").as_deref(),
            Some("lb1.example.net")
        );
    }

    #[test]
    fn domainname_then_short_name() {
        assert_eq!(
            fqdn_from("lb1", "127.0.0.1 localhost\n", "example.org\n").as_deref(),
            Some("lb1.example.org")
        );
        assert_eq!(fqdn_from("lb1", "", "(none)\n").as_deref(), Some("lb1"));
        assert_eq!(fqdn_from(" \n", "", ""), None);
    }

    #[test]
    fn hostname_validity() {
        assert!(is_valid_hostname("lb1.example.net"));
        assert!(is_valid_hostname("lb_1"));
        for bad in ["", "a..b", "a b", "lb1.", &"a".repeat(64), "a/b", "é"] {
            assert!(!is_valid_hostname(bad), "{bad:?}");
        }
    }
}
