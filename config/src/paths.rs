//! Path templates of `[main]`: the VIP desc file template and the keepalived wildcard.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

/// `vip_description_filepath`: where the desc file of a VIP lives.
///
/// The placeholder for the VIP is `{vip}`; the original Python spellings are accepted
/// too: `%s` (quorum handler) and `*` (arbiter glob), e.g.
/// `/var/run/keepalived-*-desc.json`. Exactly one placeholder, absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescTemplate {
    prefix: String,
    suffix: String,
}

impl Default for DescTemplate {
    /// `/var/run/keepalived-{vip}-desc.json`.
    fn default() -> Self {
        DescTemplate {
            prefix: "/var/run/keepalived-".to_owned(),
            suffix: "-desc.json".to_owned(),
        }
    }
}

impl DescTemplate {
    /// Parses a template; the error says what was expected.
    pub fn parse(s: &str) -> Result<DescTemplate, &'static str> {
        const WHAT: &str =
            "an absolute path with one {vip} placeholder, e.g. /var/run/keepalived-{vip}-desc.json";
        if !s.starts_with('/') {
            return Err(WHAT);
        }
        let found: Vec<(usize, &str)> = ["{vip}", "%s", "*"]
            .iter()
            .flat_map(|p| s.match_indices(p))
            .collect();
        let [(at, ph)] = found.as_slice() else {
            return Err(WHAT);
        };
        let (prefix, suffix) = (&s[..*at], &s[at + ph.len()..]);
        // The VIP must land in the file name, not in a directory.
        if suffix.contains('/') {
            return Err(WHAT);
        }
        Ok(DescTemplate {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    /// The desc file of `vip`, e.g. `/var/run/keepalived-2001:db8::1-desc.json`.
    pub fn path(&self, vip: IpAddr) -> PathBuf {
        PathBuf::from(format!("{}{vip}{}", self.prefix, self.suffix))
    }

    /// A glob matching every desc file, e.g. `/var/run/keepalived-*-desc.json`.
    pub fn glob(&self) -> String {
        format!(
            "{}*{}",
            glob::Pattern::escape(&self.prefix),
            glob::Pattern::escape(&self.suffix)
        )
    }

    /// The VIP a desc file path names, if it matches the template.
    pub fn vip_of(&self, path: &Path) -> Option<IpAddr> {
        let s = path.to_str()?;
        s.strip_prefix(&self.prefix)?
            .strip_suffix(&self.suffix)?
            .parse()
            .ok()
    }
}

/// `service_mapping_wildcard`: the glob of keepalived configs, and which of its path
/// components names the balancer.
///
/// Rule: the balancer is the path component matched by the first component of the
/// pattern that contains a glob character (`*`, `?`, `[`) and is a directory (not the
/// last component). For `/etc/keepalived/lbs/*/*/*.conf` that is the `*` after `lbs/`:
/// `/etc/keepalived/lbs/lb1.example.net/http/web.conf` belongs to `lb1.example.net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingWildcard {
    pattern: String,
    /// Index into `Path::components()` of the balancer component.
    balancer_component: usize,
}

impl Default for MappingWildcard {
    /// `/etc/keepalived/lbs/*/*/*.conf`, balancer after `lbs/`.
    fn default() -> Self {
        MappingWildcard {
            pattern: "/etc/keepalived/lbs/*/*/*.conf".to_owned(),
            // components: `/`, etc, keepalived, lbs, `*`
            balancer_component: 4,
        }
    }
}

impl MappingWildcard {
    /// Parses and checks a pattern; the error says what was expected.
    pub fn parse(s: &str) -> Result<MappingWildcard, &'static str> {
        const WHAT: &str = "an absolute glob whose first wildcard directory names the balancer, \
                            e.g. /etc/keepalived/lbs/*/*/*.conf";
        if !s.starts_with('/') || glob::Pattern::new(s).is_err() {
            return Err(WHAT);
        }
        let comps: Vec<Component<'_>> = Path::new(s).components().collect();
        let last = comps.len().saturating_sub(1);
        let balancer_component = comps
            .iter()
            .position(|c| {
                c.as_os_str()
                    .to_str()
                    .is_some_and(|t| t.contains(['*', '?', '[']))
            })
            .filter(|&i| i < last)
            .ok_or(WHAT)?;
        if comps[..balancer_component]
            .iter()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(WHAT);
        }
        Ok(MappingWildcard {
            pattern: s.to_owned(),
            balancer_component,
        })
    }

    /// The glob pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The balancer a matched file belongs to.
    pub fn balancer_of(&self, path: &Path) -> Option<String> {
        path.components()
            .nth(self.balancer_component)
            .and_then(|c| c.as_os_str().to_str())
            .map(str::to_owned)
    }

    /// The glob of one balancer's files: the pattern with its balancer component replaced by
    /// `name` (escaped); `None` when that component cannot match `name`.
    pub fn for_balancer(&self, name: &str) -> Option<String> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return None;
        }
        let mut out = PathBuf::new();
        for (i, c) in Path::new(&self.pattern).components().enumerate() {
            if i == self.balancer_component {
                let pat = glob::Pattern::new(c.as_os_str().to_str()?).ok()?;
                if !pat.matches(name) {
                    return None;
                }
                out.push(glob::Pattern::escape(name));
            } else {
                out.push(c);
            }
        }
        out.to_str().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_balancers_glob() {
        let w = MappingWildcard::parse("/etc/keepalived/lbs/*/*/*.conf").unwrap();
        assert_eq!(
            w.for_balancer("lb1.example.net").as_deref(),
            Some("/etc/keepalived/lbs/lb1.example.net/*/*.conf")
        );
        assert_eq!(
            w.for_balancer("lb[1]").as_deref(),
            Some("/etc/keepalived/lbs/lb[[]1[]]/*/*.conf")
        );
        assert_eq!(w.for_balancer("a/b"), None);
        assert_eq!(w.for_balancer(".."), None);
        let w = MappingWildcard::parse("/k/lb*/x.conf").unwrap();
        assert_eq!(w.for_balancer("lb2").as_deref(), Some("/k/lb2/x.conf"));
        assert_eq!(w.for_balancer("web2"), None);
    }

    #[test]
    fn desc_template_spellings() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for t in [
            "/var/run/keepalived-{vip}-desc.json",
            "/var/run/keepalived-%s-desc.json",
            "/var/run/keepalived-*-desc.json",
        ] {
            let d = DescTemplate::parse(t).unwrap();
            let p = d.path(v6);
            assert_eq!(
                p,
                PathBuf::from("/var/run/keepalived-2001:db8::1-desc.json")
            );
            assert_eq!(d.vip_of(&p), Some(v6));
            assert_eq!(d.glob(), "/var/run/keepalived-*-desc.json");
        }
        let d = DescTemplate::parse("/run/x/{vip}").unwrap();
        assert_eq!(d.vip_of(Path::new("/run/x/not-an-ip")), None);
        for bad in [
            "var/run/{vip}.json",
            "/var/run/desc.json",
            "/var/run/{vip}-{vip}.json",
            "/var/{vip}/desc.json",
            "/var/run/%s-*.json",
        ] {
            assert!(DescTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_equal_their_parsed_text() {
        assert_eq!(
            DescTemplate::default(),
            DescTemplate::parse("/var/run/keepalived-{vip}-desc.json").unwrap()
        );
        assert_eq!(
            MappingWildcard::default(),
            MappingWildcard::parse("/etc/keepalived/lbs/*/*/*.conf").unwrap()
        );
    }

    #[test]
    fn wildcard_balancer_component() {
        let w = MappingWildcard::parse("/etc/keepalived/lbs/*/*/*.conf").unwrap();
        assert_eq!(
            w.balancer_of(Path::new(
                "/etc/keepalived/lbs/lb1.example.net/http/web.conf"
            ))
            .as_deref(),
            Some("lb1.example.net")
        );
        let w = MappingWildcard::parse("/srv/lb-[0-9]*/keepalived.conf").unwrap();
        assert_eq!(
            w.balancer_of(Path::new("/srv/lb-7/keepalived.conf"))
                .as_deref(),
            Some("lb-7")
        );
        for bad in [
            "/etc/keepalived/lbs/lb1/*.conf",
            "etc/keepalived/lbs/*/*.conf",
            "/etc/keepalived/lbs/[*/x.conf",
            "/etc/../lbs/*/x.conf",
        ] {
            assert!(MappingWildcard::parse(bad).is_err(), "{bad}");
        }
    }
}
