//! An INI document built in code: the shape of `config.ini` and `secret.ini`.
//!
//! Sections and keys keep the order they were first set in; setting a key again replaces
//! its value in place, so a later layer (a test's own keys) overrides an earlier one (the
//! lab's defaults) without a second copy of the key. Values are quoted the way the
//! `config` crate reads them back: in double quotes when they hold ` ;`, ` #`, or
//! leading or trailing spaces.
//!
//! ```
//! let mut ini = labkit::Ini::new();
//! ini.set("main", "hostname", "lb1").set("announce", "withdraw_grace", 1);
//! let mut test = labkit::Ini::new();
//! test.set("announce", "withdraw_grace", 2);
//! ini.merge(&test);
//! assert_eq!(ini.get("announce", "withdraw_grace"), Some("2"));
//! assert_eq!(ini.to_string(), "[main]\nhostname = lb1\n\n[announce]\nwithdraw_grace = 2\n");
//! ```

use std::fmt;

/// An ordered INI document: sections of `key = value` lines, with optional comments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    /// Comment lines before the first section.
    header: Vec<String>,
    sections: Vec<Section>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Section {
    name: String,
    lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Key(String, String),
    Comment(String),
}

impl Ini {
    /// An empty document.
    pub fn new() -> Ini {
        Ini::default()
    }

    /// A one-key document, for building overrides inline:
    /// `Ini::with("announce", "withdraw_grace", 1)`.
    pub fn with(section: &str, key: &str, value: impl fmt::Display) -> Ini {
        let mut ini = Ini::new();
        ini.set(section, key, value);
        ini
    }

    /// Sets `key` in `section` (both created when missing; an existing key keeps its place
    /// and takes the new value).
    pub fn set(&mut self, section: &str, key: &str, value: impl fmt::Display) -> &mut Ini {
        let value = value.to_string();
        let s = self.section_mut(section);
        for line in &mut s.lines {
            if let Line::Key(k, v) = line {
                if k == key {
                    *v = value;
                    return self;
                }
            }
        }
        s.lines.push(Line::Key(key.to_owned(), value));
        self
    }

    /// Sets `key` when `value` is `Some`.
    pub fn set_opt(
        &mut self,
        section: &str,
        key: &str,
        value: Option<impl fmt::Display>,
    ) -> &mut Ini {
        if let Some(v) = value {
            self.set(section, key, v);
        }
        self
    }

    /// Removes `key` from `section`, if set.
    pub fn unset(&mut self, section: &str, key: &str) -> &mut Ini {
        if let Some(s) = self.sections.iter_mut().find(|s| s.name == section) {
            s.lines
                .retain(|l| !matches!(l, Line::Key(k, _) if k == key));
        }
        self
    }

    /// A comment line (`; TEXT`) at the end of `section` (created when missing).
    pub fn comment(&mut self, section: &str, text: &str) -> &mut Ini {
        self.section_mut(section)
            .lines
            .push(Line::Comment(text.to_owned()));
        self
    }

    /// A comment line before the first section.
    pub fn header(&mut self, text: &str) -> &mut Ini {
        self.header.push(text.to_owned());
        self
    }

    /// Creates `section` unless it exists, so that keys set in it later are written at
    /// this place. A section that stays empty is not written.
    pub fn section(&mut self, section: &str) -> &mut Ini {
        self.section_mut(section);
        self
    }

    /// The value of `key` in `section`.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .iter()
            .find(|s| s.name == section)?
            .lines
            .iter()
            .find_map(|l| match l {
                Line::Key(k, v) if k == key => Some(v.as_str()),
                _ => None,
            })
    }

    /// Sets every key of `other` here, section by section, in `other`'s order; its
    /// comments are added too.
    pub fn merge(&mut self, other: &Ini) -> &mut Ini {
        self.header.extend(other.header.iter().cloned());
        for s in &other.sections {
            self.section_mut(&s.name);
            for line in &s.lines {
                match line {
                    Line::Key(k, v) => {
                        self.set(&s.name, k, v);
                    }
                    Line::Comment(c) => {
                        self.comment(&s.name, c);
                    }
                }
            }
        }
        self
    }

    /// Whether no section has a key.
    pub fn is_empty(&self) -> bool {
        self.sections
            .iter()
            .all(|s| s.lines.iter().all(|l| matches!(l, Line::Comment(_))))
    }

    fn section_mut(&mut self, name: &str) -> &mut Section {
        let at = match self.sections.iter().position(|s| s.name == name) {
            Some(at) => at,
            None => {
                self.sections.push(Section {
                    name: name.to_owned(),
                    lines: Vec::new(),
                });
                self.sections.len() - 1
            }
        };
        &mut self.sections[at]
    }
}

impl fmt::Display for Ini {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.header {
            writeln!(f, "; {c}")?;
        }
        // A section with nothing in it is left out: layers may name sections in their
        // order up front and fill only some.
        let mut first = true;
        for s in self.sections.iter().filter(|s| !s.lines.is_empty()) {
            if !first {
                writeln!(f)?;
            }
            first = false;
            writeln!(f, "[{}]", s.name)?;
            for line in &s.lines {
                match line {
                    Line::Key(k, v) => writeln!(f, "{k} = {}", quote(v))?,
                    Line::Comment(c) => writeln!(f, "; {c}")?,
                }
            }
        }
        Ok(())
    }
}

/// The value as written: in double quotes when the reader would otherwise cut it (a ` ;`
/// or ` #` starts a comment) or trim it (leading or trailing white space). The reader has
/// no escapes, so a value holding `"` cannot be written; the lab's values never do.
fn quote(v: &str) -> String {
    let cut = v.contains(" ;") || v.contains(" #") || v.contains("\t;") || v.contains("\t#");
    let trimmed = v.trim() != v;
    if cut || trimmed {
        format!("\"{v}\"")
    } else {
        v.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_first_place_and_take_the_last_value() {
        let mut ini = Ini::new();
        ini.set("main", "a", 1)
            .set("bgp", "b", 2)
            .set("main", "c", 3);
        ini.set("main", "a", 4);
        assert_eq!(ini.to_string(), "[main]\na = 4\nc = 3\n\n[bgp]\nb = 2\n");
    }

    #[test]
    fn merge_overrides_and_appends_in_order() {
        let mut base = Ini::new();
        base.header("generated")
            .set("main", "heartbeat_interval", 1)
            .set("server", "startup_hold", 0);
        let mut test = Ini::new();
        test.set("server", "startup_hold", 4)
            .set("announce", "withdraw_grace", 1)
            .comment("announce", "why");
        base.merge(&test);
        assert_eq!(
            base.to_string(),
            "; generated\n[main]\nheartbeat_interval = 1\n\n[server]\nstartup_hold = 4\n\n\
             [announce]\nwithdraw_grace = 1\n; why\n"
        );
        assert_eq!(base.get("server", "startup_hold"), Some("4"));
        assert_eq!(base.get("server", "nope"), None);
    }

    #[test]
    fn sections_named_up_front_keep_their_place_and_empty_ones_are_left_out() {
        let mut ini = Ini::new();
        ini.section("main").section("bgp").section("announce");
        ini.set("announce", "interface", "lo")
            .set("main", "hostname", "lb1");
        assert_eq!(
            ini.to_string(),
            "[main]\nhostname = lb1\n\n[announce]\ninterface = lo\n"
        );
    }

    #[test]
    fn unset_and_optional_keys() {
        let mut ini = Ini::new();
        ini.set("m", "a", 1)
            .set_opt("m", "b", None::<u32>)
            .set_opt("m", "c", Some("x"));
        ini.unset("m", "a").unset("nope", "a");
        assert_eq!(ini.to_string(), "[m]\nc = x\n");
        assert!(!ini.is_empty());
        assert!(Ini::new().is_empty());
        let mut only_comments = Ini::new();
        only_comments.comment("m", "x");
        assert!(only_comments.is_empty());
    }

    #[test]
    fn values_the_reader_would_cut_are_quoted() {
        assert_eq!(quote("plain value"), "plain value");
        assert_eq!(quote("a ;b"), "\"a ;b\"");
        assert_eq!(quote("a #b"), "\"a #b\"");
        assert_eq!(quote(" lead"), "\" lead\"");
        assert_eq!(quote("a;b#c"), "a;b#c");
    }
}
