//! The native record filter: a small expression language over tags, headers and keys, evaluated by the
//! broker on fetch without any plugin. It is the baseline a WebAssembly filter is measured against.
//!
//! Grammar (docs/filters.md), loosest binding first:
//! ```text
//! expr  := and ( ("|" | "or") and )*
//! and   := unary ( ("&" | "and") unary )*
//! unary := ("!" | "not") unary | "(" expr ")" | atom
//! atom  := tag:NAME | tag:any(A,B,..) | tag:all(A,B,..) | header:NAME=VALUE | key:VALUE
//! ```
//! Names and values run until white space or one of `( ) & | ! ,`; a `"quoted part"` may hold those.

use quiver_proto::RecordRef;

/// Why a filter expression could not be parsed; `at` is a character position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter expression at character {at}: {reason}")]
pub struct FilterError {
    pub at: usize,
    pub reason: String,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Tag(String),
    AnyTag(Vec<String>),
    AllTags(Vec<String>),
    Header(String, Vec<u8>),
    Key(Vec<u8>),
    Not(Box<Filter>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

/// Longest expression accepted: a filter arrives from the network.
const MAX_LEN: usize = 4096;
/// Deepest nesting accepted, so a hostile expression cannot overflow the parser's stack.
const MAX_DEPTH: usize = 64;

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        if text.len() > MAX_LEN {
            return Err(FilterError {
                at: MAX_LEN,
                reason: format!("longer than {MAX_LEN} bytes"),
            });
        }
        let tokens = tokenize(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            depth: 0,
        };
        let f = p.or()?;
        match p.tokens.get(p.pos) {
            None => Ok(f),
            Some((at, t)) => Err(FilterError {
                at: *at,
                reason: format!("unexpected {t:?}"),
            }),
        }
    }

    pub fn matches(&self, r: &RecordRef<'_>) -> bool {
        match self {
            Filter::Tag(t) => r.has_tag(t),
            Filter::AnyTag(set) => r.tags().any(|t| set.iter().any(|s| s == t)),
            Filter::AllTags(set) => set.iter().all(|s| r.has_tag(s)),
            Filter::Header(name, value) => r.header(name) == Some(&value[..]),
            Filter::Key(k) => r.key == Some(&k[..]),
            Filter::Not(f) => !f.matches(r),
            Filter::And(fs) => fs.iter().all(|f| f.matches(r)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(r)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    LParen,
    RParen,
    Comma,
    Not,
    And,
    Or,
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        let single = match c {
            c if c.is_whitespace() => None,
            '(' => Some(Token::LParen),
            ')' => Some(Token::RParen),
            ',' => Some(Token::Comma),
            '!' => Some(Token::Not),
            '&' => Some(Token::And),
            '|' => Some(Token::Or),
            _ => {
                out.push((at, word(&mut chars)?));
                continue;
            }
        };
        chars.next();
        // `&&` and `||` read as `&` and `|`.
        if let Some(tok) = single {
            if matches!(tok, Token::And | Token::Or) && chars.peek().map(|p| p.1) == Some(c) {
                chars.next();
            }
            out.push((at, tok));
        }
    }
    Ok(out)
}

fn word(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> Result<Token, FilterError> {
    let mut w = String::new();
    while let Some(&(at, c)) = chars.peek() {
        if c.is_whitespace() || "()&|!,".contains(c) {
            break;
        }
        chars.next();
        if c == '"' {
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, ch)) => w.push(ch),
                    None => {
                        return Err(FilterError {
                            at,
                            reason: "unterminated quote".into(),
                        })
                    }
                }
            }
        } else {
            w.push(c);
        }
    }
    Ok(match w.as_str() {
        "and" => Token::And,
        "or" => Token::Or,
        "not" => Token::Not,
        _ => Token::Word(w),
    })
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(usize::MAX, |(a, _)| *a)
    }

    fn err<T>(&self, reason: impl Into<String>) -> Result<T, FilterError> {
        let at = self.at();
        Err(FilterError {
            at: if at == usize::MAX { 0 } else { at },
            reason: reason.into(),
        })
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut parts = vec![self.unary()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(format!("nested deeper than {MAX_DEPTH}"));
        }
        let out = match self.peek().cloned() {
            Some(Token::Not) => {
                self.pos += 1;
                self.unary().map(|f| Filter::Not(Box::new(f)))
            }
            Some(Token::LParen) => {
                self.pos += 1;
                let f = self.or()?;
                self.expect(Token::RParen, "expected ')'")?;
                Ok(f)
            }
            Some(Token::Word(w)) => {
                self.pos += 1;
                self.atom(&w)
            }
            Some(t) => self.err(format!("unexpected {t:?}")),
            None => self.err("expression ends too early"),
        };
        self.depth -= 1;
        out
    }

    fn expect(&mut self, want: Token, msg: &str) -> Result<(), FilterError> {
        if self.peek() == Some(&want) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(msg)
        }
    }

    fn atom(&mut self, w: &str) -> Result<Filter, FilterError> {
        if w == "tag:any" || w == "tag:all" {
            let names = self.list()?;
            return Ok(if w == "tag:any" {
                Filter::AnyTag(names)
            } else {
                Filter::AllTags(names)
            });
        }
        if let Some(tag) = w.strip_prefix("tag:").filter(|t| !t.is_empty()) {
            return Ok(Filter::Tag(tag.to_owned()));
        }
        if let Some(rest) = w.strip_prefix("header:") {
            return match rest.split_once('=') {
                Some((name, value)) if !name.is_empty() => {
                    Ok(Filter::Header(name.to_owned(), value.as_bytes().to_vec()))
                }
                _ => self.err("expected header:NAME=VALUE"),
            };
        }
        if let Some(key) = w.strip_prefix("key:") {
            return Ok(Filter::Key(key.as_bytes().to_vec()));
        }
        self.err(format!(
            "unknown term {w:?}: expected tag:, tag:any(..), tag:all(..), header: or key:"
        ))
    }

    /// `( NAME , NAME ... )`
    fn list(&mut self) -> Result<Vec<String>, FilterError> {
        self.expect(Token::LParen, "expected '(' after tag:any / tag:all")?;
        let mut names = Vec::new();
        loop {
            match self.peek().cloned() {
                Some(Token::Word(n)) => {
                    self.pos += 1;
                    names.push(n);
                }
                _ => return self.err("expected a tag name"),
            }
            match self.peek() {
                Some(Token::Comma) => self.pos += 1,
                Some(Token::RParen) => {
                    self.pos += 1;
                    return Ok(names);
                }
                _ => return self.err("expected ',' or ')'"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use quiver_proto::{Batch, BatchBuilder, RecordData};

    /// (tags, headers, key) of one test record.
    type Fields<'a> = (&'a [&'a str], &'a [(&'a str, &'a [u8])], Option<&'a [u8]>);

    fn batch() -> Batch {
        let mut b = BatchBuilder::new();
        let recs: [Fields<'_>; 4] = [
            (&["eu", "vip"], &[("lang", b"en")], Some(b"k1")),
            (&["us"], &[("lang", b"fr")], None),
            (&[], &[], Some(b"k2")),
            (&["eu"], &[("lang", b"en us")], None),
        ];
        for (tags, headers, key) in recs {
            b.push(&RecordData {
                tags,
                headers,
                key,
                value: b"v",
                ..Default::default()
            })
            .unwrap();
        }
        Batch::parse(b.finish().unwrap()).unwrap()
    }

    fn hits(expr: &str) -> Vec<u64> {
        let f = Filter::parse(expr).unwrap();
        batch()
            .records()
            .filter(|r| f.matches(r))
            .map(|r| r.offset)
            .collect()
    }

    #[test]
    fn expressions_select_the_right_records() {
        let table: &[(&str, &[u64])] = &[
            ("tag:eu", &[0, 3]),
            ("!tag:eu", &[1, 2]),
            ("not tag:eu", &[1, 2]),
            ("tag:any(us,vip)", &[0, 1]),
            ("tag:all(eu,vip)", &[0]),
            ("tag:eu & !tag:vip", &[3]),
            ("tag:us | key:k2", &[1, 2]),
            ("tag:eu and header:lang=en or tag:us", &[0, 1]),
            ("tag:eu && (header:lang=en || header:lang=fr)", &[0]),
            ("header:lang=\"en us\"", &[3]),
            ("key:k1", &[0]),
            ("!(tag:eu | tag:us)", &[2]),
        ];
        for (expr, want) in table {
            assert_eq!(hits(expr), *want, "{expr}");
        }
    }

    #[test]
    fn bad_expressions_say_where() {
        for bad in [
            "",
            "tag:",
            "tag:eu &",
            "(tag:eu",
            "tag:any(a,",
            "size:3",
            "header:=x",
            "tag:eu)",
            "\"open",
        ] {
            let err = Filter::parse(bad).unwrap_err();
            assert!(
                err.to_string().contains("invalid filter expression"),
                "{bad}: {err}"
            );
        }
        let deep = "!".repeat(1000) + "tag:a";
        assert!(Filter::parse(&deep).unwrap_err().reason.contains("nested"));
        assert!(Filter::parse(&"(".repeat(5000)).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = Filter::parse(&s);
        }
    }
}
