//! Invalidation and listing patterns over keys' text form (`namespace:identifier:version`):
//! `*` matches any run of characters, `?` one character, anything else itself (SQLite's
//! `GLOB` without bracket classes, so the disk level matches the same keys). As the
//! original did, a pattern with no wildcard and no `:` also names a whole namespace.
//! Patterns are bounded (length, wildcards) because matching one costs time per key held.

/// How complex a pattern may be (settings `cache_max_pattern_bytes` and
/// `cache_max_pattern_wildcards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternLimits {
    pub max_bytes: usize,
    pub max_wildcards: usize,
}

impl Default for PatternLimits {
    fn default() -> Self {
        PatternLimits {
            max_bytes: 256,
            max_wildcards: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// No wildcard and no `:`: the namespace it names.
    namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("an empty pattern matches nothing; use `*` for every key")]
    Empty,
    #[error("the pattern is {0} bytes; at most {1} (cache_max_pattern_bytes)")]
    TooLong(usize, usize),
    #[error("the pattern has {0} wildcards; at most {1} (cache_max_pattern_wildcards)")]
    TooManyWildcards(usize, usize),
    #[error("`[` and `]` are not pattern syntax here (only `*` and `?`)")]
    Brackets,
}

impl Pattern {
    pub fn parse(text: &str, limits: PatternLimits) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > limits.max_bytes {
            return Err(PatternError::TooLong(text.len(), limits.max_bytes));
        }
        if text.contains(['[', ']']) {
            return Err(PatternError::Brackets);
        }
        let wild = text.chars().filter(|c| matches!(c, '*' | '?')).count();
        if wild > limits.max_wildcards {
            return Err(PatternError::TooManyWildcards(wild, limits.max_wildcards));
        }
        let namespace = (wild == 0 && !text.contains(':')).then(|| text.to_owned());
        Ok(Pattern {
            text: text.to_owned(),
            namespace,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The namespace it names, when it is a bare name.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Whether the key `key` (text form) in `namespace` matches.
    pub fn matches(&self, key: &str, namespace: &str) -> bool {
        self.namespace.as_deref() == Some(namespace) || glob(self.text.as_bytes(), key.as_bytes())
    }

    /// The pattern as SQLite GLOB text matching the same keys (the namespace case is
    /// asked separately).
    pub fn glob(&self) -> &str {
        &self.text
    }
}

/// Wildcard match, iterative: on a mismatch it returns to the last `*` and lets it take one
/// more character, so time is O(pattern × key) at worst and no stack is used.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                // `?` takes one character: step over a whole UTF-8 sequence.
                let width = if c == b'?' { utf8_width(s[si]) } else { 1 };
                pi += 1;
                si += width.min(s.len() - si);
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn utf8_width(first: u8) -> usize {
    match first {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, k: &str) -> bool {
        Pattern::parse(p, PatternLimits::default())
            .unwrap()
            .matches(k, k.split(':').next().unwrap_or(""))
    }

    #[test]
    fn globs_match_as_sqlite_does() {
        assert!(m("orders:*", "orders:A-100:v1.0.0"));
        assert!(!m("orders:*", "order:A:v1"));
        assert!(m("*:v2", "a:b:v2"));
        assert!(m("a:?:v1", "a:é:v1"));
        assert!(!m("a:?:v1", "a:bc:v1"));
        assert!(m("*", "anything"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("orders", "orders:x:v1"), "a bare name is a namespace");
        assert!(!m("orders", "orders2:x:v1"));
    }

    #[test]
    fn bounds() {
        assert_eq!(
            Pattern::parse("", PatternLimits::default()),
            Err(PatternError::Empty)
        );
        assert!(Pattern::parse(&"*".repeat(9), PatternLimits::default()).is_err());
        assert!(Pattern::parse(&"a".repeat(300), PatternLimits::default()).is_err());
        assert_eq!(
            Pattern::parse("a[b]", PatternLimits::default()),
            Err(PatternError::Brackets)
        );
    }
}
