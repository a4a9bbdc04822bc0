//! A small INI reader that keeps line numbers.
//!
//! The dialect is the common subset of Python's `configparser` (which the original
//! ipvs-sync used) and what operators expect:
//!
//! - `[section]` headers; a section may appear only once;
//! - `key = value` or `key: value` (the first `=` or `:` splits); keys are case-sensitive
//!   and may appear only once per section;
//! - whole-line comments start with `;` or `#`; an inline comment starts at a `;` or `#`
//!   that follows whitespace (`port = 179 ; BGP`), as with `inline_comment_prefixes`;
//! - a value wrapped in double quotes is taken literally, so `"a ;b"` keeps its `;` and
//!   surrounding spaces (there are no escapes inside the quotes);
//! - leading and trailing whitespace of lines, keys and values is ignored, `\r\n` is fine,
//!   a UTF-8 byte-order mark is skipped; continuation lines are not supported.
//!
//! Pure: [`Ini::parse`] takes text and a file name for error messages, never touches disk.

use std::path::Path;

use crate::error::ConfigError;

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, trimmed.
    pub key: String,
    /// The value, trimmed, inline comment and quotes removed.
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// One `[name]` section and its entries in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name between the brackets, trimmed.
    pub name: String,
    /// 1-based line number of the header.
    pub line: usize,
    /// The entries in file order; keys are unique.
    pub entries: Vec<Entry>,
}

/// A parsed INI file: its sections in file order, names unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    /// The sections in file order.
    pub sections: Vec<Section>,
}

impl Ini {
    /// Parses `text`; `file` only names the file in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Ini, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut ini = Ini::default();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
                continue;
            }
            let syntax = |reason: &str| ConfigError::Syntax {
                file: file.to_path_buf(),
                line,
                reason: reason.to_owned(),
            };
            if let Some(rest) = trimmed.strip_prefix('[') {
                let Some(close) = rest.find(']') else {
                    return Err(syntax("section header without closing ']'"));
                };
                let name = rest[..close].trim();
                let after = strip_inline_comment(&rest[close + 1..]).trim();
                if !after.is_empty() {
                    return Err(syntax("text after the section header"));
                }
                if name.is_empty() {
                    return Err(syntax("empty section name"));
                }
                if let Some(first) = ini.sections.iter().find(|s| s.name == name) {
                    return Err(ConfigError::DuplicateSection {
                        file: file.to_path_buf(),
                        line,
                        section: name.to_owned(),
                        first: first.line,
                    });
                }
                ini.sections.push(Section {
                    name: name.to_owned(),
                    line,
                    entries: Vec::new(),
                });
                continue;
            }
            let Some(split) = trimmed.find(['=', ':']) else {
                return Err(syntax("expected `key = value` or `[section]`"));
            };
            let key = trimmed[..split].trim();
            if key.is_empty() {
                return Err(syntax("empty key before '='"));
            }
            if key.chars().any(char::is_whitespace) {
                return Err(syntax("key contains whitespace"));
            }
            let value = parse_value(&trimmed[split + 1..]).map_err(&syntax)?;
            let Some(section) = ini.sections.last_mut() else {
                return Err(syntax("`key = value` before any [section] header"));
            };
            if let Some(first) = section.entries.iter().find(|e| e.key == key) {
                return Err(ConfigError::DuplicateKey {
                    file: file.to_path_buf(),
                    line,
                    section: section.name.clone(),
                    key: key.to_owned(),
                    first: first.line,
                });
            }
            section.entries.push(Entry {
                key: key.to_owned(),
                value,
                line,
            });
        }
        Ok(ini)
    }

    /// The section called `name`, if present.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

/// Cuts an inline comment: a `;` or `#` at the start or after whitespace.
fn strip_inline_comment(s: &str) -> &str {
    let mut prev_ws = true;
    for (i, c) in s.char_indices() {
        if (c == ';' || c == '#') && prev_ws {
            return &s[..i];
        }
        prev_ws = c.is_whitespace();
    }
    s
}

/// The value part after `=`: quoted literally, else trimmed with the inline comment cut.
fn parse_value(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim_start();
    if let Some(rest) = raw.strip_prefix('"') {
        let Some(close) = rest.find('"') else {
            return Err("quoted value without closing '\"'");
        };
        let after = strip_inline_comment(&rest[close + 1..]).trim();
        if !after.is_empty() {
            return Err("text after the closing '\"' of a quoted value");
        }
        return Ok(rest[..close].to_owned());
    }
    Ok(strip_inline_comment(raw).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Ini, ConfigError> {
        Ini::parse(text, Path::new("t.ini"))
    }

    #[test]
    fn sections_keys_comments_and_lines() {
        let ini = parse(
            "\u{feff}; head\n# also\n[main]\r\namqp_server = amqp://h/ ; broker\n\
             hostname: lb1.example.net\n  [bgp]  \nlocal_as=65000#not a comment\n\
             password = \"a ;b \" ; quoted\nempty =\n",
        )
        .unwrap();
        assert_eq!(ini.sections.len(), 2);
        let main = ini.section("main").unwrap();
        assert_eq!(main.line, 3);
        assert_eq!(main.entries[0].key, "amqp_server");
        assert_eq!(main.entries[0].value, "amqp://h/");
        assert_eq!(main.entries[0].line, 4);
        assert_eq!(main.entries[1].value, "lb1.example.net");
        let bgp = ini.section("bgp").unwrap();
        assert_eq!(bgp.entries[0].value, "65000#not a comment");
        assert_eq!(bgp.entries[1].value, "a ;b ");
        assert_eq!(bgp.entries[2].value, "");
        assert_eq!(bgp.entries[2].line, 9);
    }

    #[test]
    fn syntax_errors_carry_line() {
        let cases: &[(&str, usize)] = &[
            ("[main\n", 1),
            ("[main]\nnot a pair\n", 2),
            ("key = 1\n", 1),
            ("[main]\n = 1\n", 2),
            ("[]\n", 1),
            ("[main] x\n", 1),
            ("[main]\nk = \"open\n", 2),
            ("[main]\nk = \"a\" b\n", 2),
            ("[main]\nmy key = 1\n", 2),
        ];
        for (text, want) in cases {
            match parse(text) {
                Err(ConfigError::Syntax { line, .. }) => assert_eq!(line, *want, "{text:?}"),
                other => panic!("{text:?}: expected syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn duplicates_are_errors() {
        let err = parse("[main]\na = 1\na = 2\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::DuplicateKey {
                    line: 3,
                    first: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "t.ini:3: [main] a: set again (first on line 2)"
        );
        let err = parse("[main]\n[bgp]\n[main]\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::DuplicateSection {
                    line: 3,
                    first: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
}
