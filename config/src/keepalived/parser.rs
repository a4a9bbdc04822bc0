//! Lines of tokens → a tree of statements.
//!
//! A statement is the words up to the end of a line, a `{` or a `}`. A `{` opens the
//! block of the statement before it — on the same line, or alone on the next line
//! (`virtual_server 192.0.2.1 80` then `{`). Blocks nest at most [`MAX_DEPTH`] deep.
//! The parser keeps its own stack, so hostile nesting cannot overflow the call stack.

use std::path::Path;
use std::sync::Arc;

use super::lexer::{Line, Token};
use super::KeepalivedError;

/// Deepest block nesting accepted (keepalived's real configs stay below 6).
pub const MAX_DEPTH: usize = 32;

/// One statement: a keyword, its arguments, and maybe a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The first word.
    pub keyword: String,
    /// The other words (quotes removed).
    pub args: Vec<String>,
    /// The file of the statement.
    pub file: Arc<Path>,
    /// 1-based line of the keyword.
    pub line: usize,
    /// The statements between `{` and `}`, if the statement has a block.
    pub block: Option<Vec<Statement>>,
}

/// Builds the statement tree of `lines` (includes already spliced in).
pub fn parse(lines: Vec<Line>) -> Result<Vec<Statement>, KeepalivedError> {
    // Each open block: the statement that owns it, and the statements inside so far.
    let mut stack: Vec<(Statement, Vec<Statement>)> = Vec::new();
    let mut top: Vec<Statement> = Vec::new();
    for mut line in lines {
        let mut words: Vec<String> = Vec::new();
        for tok in std::mem::take(&mut line.tokens) {
            match tok {
                Token::Word { text, .. } => words.push(text),
                Token::Open => {
                    let owner = if words.is_empty() {
                        // `{` alone: reopen the previous statement if it has no block.
                        let list = current(&mut stack, &mut top);
                        match list.pop() {
                            Some(prev) if prev.block.is_none() => prev,
                            other => {
                                if let Some(o) = other {
                                    list.push(o);
                                }
                                return Err(syntax(&line, "'{' without a statement before it"));
                            }
                        }
                    } else {
                        statement(&line, std::mem::take(&mut words))
                    };
                    if stack.len() >= MAX_DEPTH {
                        return Err(syntax(&line, "blocks nested too deep"));
                    }
                    stack.push((owner, Vec::new()));
                }
                Token::Close => {
                    if !words.is_empty() {
                        let s = statement(&line, std::mem::take(&mut words));
                        current(&mut stack, &mut top).push(s);
                    }
                    let Some((mut owner, children)) = stack.pop() else {
                        return Err(syntax(&line, "'}' without an open block"));
                    };
                    owner.block = Some(children);
                    current(&mut stack, &mut top).push(owner);
                }
            }
        }
        if !words.is_empty() {
            let s = statement(&line, words);
            current(&mut stack, &mut top).push(s);
        }
    }
    if let Some((owner, _)) = stack.last() {
        return Err(KeepalivedError::Syntax {
            file: owner.file.to_path_buf(),
            line: owner.line,
            reason: format!("block of '{}' is never closed", owner.keyword),
        });
    }
    Ok(top)
}

fn current<'a>(
    stack: &'a mut [(Statement, Vec<Statement>)],
    top: &'a mut Vec<Statement>,
) -> &'a mut Vec<Statement> {
    match stack.last_mut() {
        Some((_, children)) => children,
        None => top,
    }
}

fn statement(line: &Line, words: Vec<String>) -> Statement {
    let mut words = words.into_iter();
    let keyword = words.next().unwrap_or_default();
    Statement {
        keyword,
        args: words.collect(),
        file: Arc::clone(&line.file),
        line: line.line,
        block: None,
    }
}

fn syntax(line: &Line, reason: &str) -> KeepalivedError {
    KeepalivedError::Syntax {
        file: line.file.to_path_buf(),
        line: line.line,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::lex;
    use super::*;

    fn tree(text: &str) -> Result<Vec<Statement>, KeepalivedError> {
        let f: Arc<Path> = Arc::from(Path::new("k.conf"));
        parse(lex(text, &f)?)
    }

    #[test]
    fn nested_blocks_and_brace_on_next_line() {
        let t = tree(
            "global_defs { router_id x }\nvirtual_server 192.0.2.1 80\n{\n  delay_loop 6\n  \
             real_server 198.51.100.1 80 {\n    weight 1\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].keyword, "global_defs");
        let gd = t[0].block.as_ref().unwrap();
        assert_eq!(gd[0].keyword, "router_id");
        assert_eq!(gd[0].args, ["x"]);
        assert_eq!(t[1].keyword, "virtual_server");
        assert_eq!(t[1].args, ["192.0.2.1", "80"]);
        assert_eq!(t[1].line, 2);
        let vs = t[1].block.as_ref().unwrap();
        assert_eq!(vs.len(), 2);
        assert_eq!(vs[1].block.as_ref().unwrap()[0].keyword, "weight");
    }

    #[test]
    fn unbalanced_braces_name_the_line() {
        let e = tree("a {\n b\n").unwrap_err();
        assert_eq!(e.to_string(), "k.conf:1: block of 'a' is never closed");
        let e = tree("a\n}\n").unwrap_err();
        assert_eq!(e.to_string(), "k.conf:2: '}' without an open block");
        let e = tree("{\n").unwrap_err();
        assert_eq!(e.to_string(), "k.conf:1: '{' without a statement before it");
        let e = tree("a { }\n{\n").unwrap_err();
        assert!(e.to_string().starts_with("k.conf:2:"), "{e}");
        let deep = "a {\n".repeat(MAX_DEPTH + 1);
        assert!(tree(&deep).unwrap_err().to_string().contains("too deep"));
    }
}
