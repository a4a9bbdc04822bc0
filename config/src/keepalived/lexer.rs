//! Tokens of keepalived's configuration language, line by line.
//!
//! As keepalived's own reader (`alloc_strvec`): whitespace separates words; `{` and `}`
//! are tokens of their own even when glued to a word; a `!` or `#` where a token would
//! start begins a comment to the end of the line; `"…"` is one word (quotes removed,
//! it may hold spaces, braces and comment characters) and a `"` also ends a bare word.

use std::path::Path;
use std::sync::Arc;

use super::KeepalivedError;

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A word or a quoted string.
    Word {
        /// The text, quotes removed.
        text: String,
        /// Whether it was written in double quotes.
        quoted: bool,
    },
    /// `{`
    Open,
    /// `}`
    Close,
}

/// The tokens of one non-empty line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The file the line is in.
    pub file: Arc<Path>,
    /// 1-based line number.
    pub line: usize,
    /// The tokens, at least one.
    pub tokens: Vec<Token>,
}

impl Line {
    /// The first token if it is an unquoted word.
    pub fn keyword(&self) -> Option<&str> {
        match self.tokens.first() {
            Some(Token::Word {
                text,
                quoted: false,
            }) => Some(text),
            _ => None,
        }
    }
}

/// Splits `text` (the contents of `file`) into lines of tokens; blank and comment-only
/// lines are dropped.
pub fn lex(text: &str, file: &Arc<Path>) -> Result<Vec<Line>, KeepalivedError> {
    let mut lines = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        // Every delimiter is ASCII, so byte indices found here are char boundaries.
        let bytes = raw.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b if b.is_ascii_whitespace() => i += 1,
                b'!' | b'#' => break,
                b'{' => {
                    tokens.push(Token::Open);
                    i += 1;
                }
                b'}' => {
                    tokens.push(Token::Close);
                    i += 1;
                }
                b'"' => {
                    let Some(len) = bytes[i + 1..].iter().position(|&b| b == b'"') else {
                        return Err(KeepalivedError::Syntax {
                            file: file.to_path_buf(),
                            line: idx + 1,
                            reason: "unterminated quoted string".to_owned(),
                        });
                    };
                    tokens.push(Token::Word {
                        text: raw[i + 1..i + 1 + len].to_owned(),
                        quoted: true,
                    });
                    i += len + 2;
                }
                _ => {
                    let start = i;
                    while i < bytes.len()
                        && !bytes[i].is_ascii_whitespace()
                        && !matches!(bytes[i], b'{' | b'}' | b'"')
                    {
                        i += 1;
                    }
                    tokens.push(Token::Word {
                        text: raw[start..i].to_owned(),
                        quoted: false,
                    });
                }
            }
        }
        if !tokens.is_empty() {
            lines.push(Line {
                file: Arc::clone(file),
                line: idx + 1,
                tokens,
            });
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &Line) -> Vec<String> {
        line.tokens
            .iter()
            .map(|t| match t {
                Token::Word { text, quoted: true } => format!("\"{text}\""),
                Token::Word { text, .. } => text.clone(),
                Token::Open => "{".to_owned(),
                Token::Close => "}".to_owned(),
            })
            .collect()
    }

    #[test]
    fn tokens_comments_quotes_and_braces() {
        let f: Arc<Path> = Arc::from(Path::new("k.conf"));
        let text = "! header\n\nvirtual_server 192.0.2.1 80{ # comment\n  \
                    quorum_up \"/bin/q up 192.0.2.1,b-100,80 # not a comment\"\n}}\n\
                    a!b #c\nx\"y z\"\n";
        let lines = lex(text, &f).unwrap();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0].line, 3);
        assert_eq!(words(&lines[0]), ["virtual_server", "192.0.2.1", "80", "{"]);
        assert_eq!(
            words(&lines[1]),
            [
                "quorum_up",
                "\"/bin/q up 192.0.2.1,b-100,80 # not a comment\""
            ]
        );
        assert_eq!(words(&lines[2]), ["}", "}"]);
        assert_eq!(words(&lines[3]), ["a!b"]);
        assert_eq!(words(&lines[4]), ["x", "\"y z\""]);
        assert_eq!(lines[0].keyword(), Some("virtual_server"));
    }

    #[test]
    fn unterminated_quote_is_an_error_with_line() {
        let f: Arc<Path> = Arc::from(Path::new("k.conf"));
        let err = lex("a\nb \"open\n", &f).unwrap_err();
        assert_eq!(err.to_string(), "k.conf:2: unterminated quoted string");
    }
}
