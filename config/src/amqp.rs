//! `amqp_server`: an AMQP 0-9-1 URI, `amqp[s]://[user[:password]@]host[:port][/vhost][?query]`.
//!
//! Only the parts this program needs are interpreted: the scheme (TLS or not), the user
//! information (so the password from `secret.ini` can be filled in) and the port (checked).
//! The rest is passed through to the AMQP client unchanged.

use std::fmt;

use crate::secret::SecretString;

/// A checked `amqp://` or `amqps://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    tls: bool,
    user: Option<String>,
    password: Option<SecretString>,
    /// `host[:port]` as written.
    authority: String,
    /// `/vhost?query` as written (may be empty).
    rest: String,
}

impl AmqpUrl {
    /// Parses and checks `s`; the error says what was expected.
    pub fn parse(s: &str) -> Result<AmqpUrl, &'static str> {
        const WHAT: &str = "an amqp:// or amqps:// URL like amqp://user@broker:5672/vhost";
        let (tls, after) = if let Some(r) = s.strip_prefix("amqps://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("amqp://") {
            (false, r)
        } else {
            return Err(WHAT);
        };
        if after.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(WHAT);
        }
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let (netloc, rest) = after.split_at(end);
        let (userinfo, authority) = match netloc.rfind('@') {
            Some(at) => (Some(&netloc[..at]), &netloc[at + 1..]),
            None => (None, netloc),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(u.to_owned()), Some(SecretString::new(p))),
                None => (Some(ui.to_owned()), None),
            },
        };
        if user.as_deref() == Some("") {
            return Err(WHAT);
        }
        check_authority(authority).ok_or(WHAT)?;
        Ok(AmqpUrl {
            tls,
            user,
            password,
            authority: authority.to_owned(),
            rest: rest.to_owned(),
        })
    }

    /// Whether the scheme is `amqps`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The user name as written (percent-encoded), if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// `host[:port]` as written.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The vhost part as written (percent-encoded, without the query); empty for the
    /// client's default.
    pub fn vhost(&self) -> &str {
        let path = self.rest.split('?').next().unwrap_or("");
        path.strip_prefix('/').unwrap_or(path)
    }

    /// Whether the URL itself carries a password.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The full URL; `fallback_password` (raw, it is percent-encoded here) is used when
    /// the URL has a user but no password of its own.
    pub fn to_url_with(&self, fallback_password: Option<&str>) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        let mut out = format!("{scheme}://");
        if let Some(user) = &self.user {
            out.push_str(user);
            match (&self.password, fallback_password) {
                (Some(p), _) => {
                    out.push(':');
                    out.push_str(p.expose());
                }
                (None, Some(p)) => {
                    out.push(':');
                    out.push_str(&percent_encode(p));
                }
                (None, None) => {}
            }
            out.push('@');
        }
        out.push_str(&self.authority);
        out.push_str(&self.rest);
        out
    }
}

/// Shows the URL with any password replaced by `***`, for logs.
impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.user {
            let pw = if self.password.is_some() { ":***" } else { "" };
            write!(f, "{user}{pw}@")?;
        }
        write!(f, "{}{}", self.authority, self.rest)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; empty means the client's default host.
fn check_authority(a: &str) -> Option<()> {
    let (host, port) = if let Some(r) = a.strip_prefix('[') {
        let (v6, after) = r.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => ("v6", None),
            p => ("v6", Some(p.strip_prefix(':')?)),
        }
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'%'))
    {
        return None;
    }
    if let Some(p) = port {
        if p.parse::<u16>().ok()? == 0 {
            return None;
        }
    }
    Some(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_fills_password() {
        let u = AmqpUrl::parse("amqp://ipvs@broker.example.net:5672/ipvs?heartbeat=10").unwrap();
        assert!(!u.is_tls());
        assert_eq!(u.user(), Some("ipvs"));
        assert!(!u.has_password());
        assert_eq!(
            u.to_url_with(Some("p@ss:w/rd")),
            "amqp://ipvs:p%40ss%3Aw%2Frd@broker.example.net:5672/ipvs?heartbeat=10"
        );
        assert_eq!(
            u.to_url_with(None),
            "amqp://ipvs@broker.example.net:5672/ipvs?heartbeat=10"
        );
    }

    #[test]
    fn own_password_wins_and_is_hidden_in_display() {
        let u = AmqpUrl::parse("amqps://u:secret@[2001:db8::1]:5671/%2f").unwrap();
        assert!(u.is_tls());
        assert_eq!(
            u.to_url_with(Some("other")),
            "amqps://u:secret@[2001:db8::1]:5671/%2f"
        );
        assert_eq!(u.to_string(), "amqps://u:***@[2001:db8::1]:5671/%2f");
        assert!(!format!("{u:?}").contains("secret"));
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "http://h/",
            "amqp://h:0/",
            "amqp://h:99999/",
            "amqp://h:x/",
            "amqp://[::1/",
            "amqp://[zz]:1/",
            "amqp://@h/",
            "amqp://h o/",
            "amqp://h/\n",
        ] {
            assert!(AmqpUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(AmqpUrl::parse("amqp://").is_ok());
    }
}
