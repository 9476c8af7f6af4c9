//! A JSON tokenizer that never recurses and builds no tree, and the checks a client frame
//! passes before anything decodes it. Pure.
//!
//! [`check`] reads the frame once, in time linear in its length and memory bounded by a
//! small multiple of it (the keys of open objects), and refuses what serde_json would
//! quietly accept or mangle: integers beyond 64 bits (which it turns into floats), floats
//! beyond f64 (which a Python client reads as infinity and serde_json refuses), duplicated
//! keys (it keeps the last), nesting deeper than [`MAX_DEPTH`]. [`find_u`] finds
//! a top-level `u` in any frame, however deep or broken the rest, so that a refusal can
//! still be matched to its request.

use std::borrow::Cow;

/// Deepest nesting a client message may have (serde_json's own limit, 128 containers, less
/// one so that a value can always be wrapped once).
pub const MAX_DEPTH: usize = 127;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    /// An object key (the span is the quoted text, quotes included).
    Key,
    /// A string value (quotes included).
    Str,
    /// An integer literal.
    Int,
    /// A number with a fraction or an exponent.
    Float,
    /// `true`, `false` or `null`.
    Lit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    /// Byte span in the text.
    pub start: usize,
    pub end: usize,
    /// A string that contains escapes (its value differs from its text).
    pub escaped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {at}: {what}")]
pub struct SyntaxError {
    pub at: usize,
    pub what: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Value,
    /// After `[`: a value or `]`.
    FirstValueOrEnd,
    /// After `{`: a key or `}`.
    FirstKeyOrEnd,
    Key,
    Colon,
    CommaOrEnd,
    Done,
}

/// Pull tokenizer over one JSON text; validates the grammar as it goes.
pub struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    /// Open containers, `true` for objects.
    open: Vec<bool>,
    state: State,
}

impl<'a> Lexer<'a> {
    pub fn new(text: &'a str) -> Lexer<'a> {
        Lexer {
            text,
            pos: 0,
            open: Vec::new(),
            state: State::Value,
        }
    }

    /// Containers open around the next token.
    pub fn depth(&self) -> usize {
        self.open.len()
    }

    /// Whether the innermost open container is an array (its values are elements).
    pub fn in_array(&self) -> bool {
        self.open.last() == Some(&false)
    }

    fn err(&self, what: &'static str) -> SyntaxError {
        SyntaxError { at: self.pos, what }
    }

    fn after_value(&mut self) {
        self.state = if self.open.is_empty() {
            State::Done
        } else {
            State::CommaOrEnd
        };
    }

    fn token(&self, tok: Tok, start: usize, escaped: bool) -> Token {
        Token {
            tok,
            start,
            end: self.pos,
            escaped,
        }
    }

    /// The next token, `None` at the end of a complete text.
    pub fn next_token(&mut self) -> Result<Option<Token>, SyntaxError> {
        let b = self.text.as_bytes();
        loop {
            while self.pos < b.len() && matches!(b[self.pos], b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            }
            let Some(&c) = b.get(self.pos) else {
                return match self.state {
                    State::Done => Ok(None),
                    _ => Err(self.err("unexpected end")),
                };
            };
            let start = self.pos;
            match self.state {
                State::Done => return Err(self.err("trailing characters")),
                State::Colon => {
                    if c != b':' {
                        return Err(self.err("expected `:`"));
                    }
                    self.pos += 1;
                    self.state = State::Value;
                }
                State::CommaOrEnd => {
                    let object = self.open.last() == Some(&true);
                    match c {
                        b',' => {
                            self.pos += 1;
                            self.state = if object { State::Key } else { State::Value };
                        }
                        b'}' if object => return Ok(Some(self.close(Tok::ObjEnd))),
                        b']' if !object => return Ok(Some(self.close(Tok::ArrEnd))),
                        _ => return Err(self.err("expected `,` or the end of the container")),
                    }
                }
                State::FirstKeyOrEnd if c == b'}' => return Ok(Some(self.close(Tok::ObjEnd))),
                State::FirstKeyOrEnd | State::Key => {
                    if c != b'"' {
                        return Err(self.err("expected a string key"));
                    }
                    let escaped = self.string()?;
                    self.state = State::Colon;
                    return Ok(Some(self.token(Tok::Key, start, escaped)));
                }
                State::FirstValueOrEnd if c == b']' => return Ok(Some(self.close(Tok::ArrEnd))),
                State::FirstValueOrEnd | State::Value => return self.value(c, start).map(Some),
            }
        }
    }

    fn close(&mut self, tok: Tok) -> Token {
        let start = self.pos;
        self.pos += 1;
        self.open.pop();
        self.after_value();
        self.token(tok, start, false)
    }

    fn value(&mut self, c: u8, start: usize) -> Result<Token, SyntaxError> {
        let tok = match c {
            b'{' | b'[' => {
                self.pos += 1;
                self.open.push(c == b'{');
                self.state = if c == b'{' {
                    State::FirstKeyOrEnd
                } else {
                    State::FirstValueOrEnd
                };
                let tok = if c == b'{' {
                    Tok::ObjBegin
                } else {
                    Tok::ArrBegin
                };
                return Ok(self.token(tok, start, false));
            }
            b'"' => {
                let escaped = self.string()?;
                self.after_value();
                return Ok(self.token(Tok::Str, start, escaped));
            }
            b'-' | b'0'..=b'9' => self.number()?,
            b't' => self.literal("true")?,
            b'f' => self.literal("false")?,
            b'n' => self.literal("null")?,
            _ => return Err(self.err("expected a value")),
        };
        self.after_value();
        Ok(self.token(tok, start, false))
    }

    fn literal(&mut self, word: &'static str) -> Result<Tok, SyntaxError> {
        if !self.text[self.pos..].starts_with(word) {
            return Err(self.err("expected a value"));
        }
        self.pos += word.len();
        Ok(Tok::Lit)
    }

    /// Skips a string starting at its opening quote; returns whether it has escapes.
    fn string(&mut self) -> Result<bool, SyntaxError> {
        let b = self.text.as_bytes();
        let mut i = self.pos + 1;
        let mut escaped = false;
        loop {
            i = plain_run_end(b, i);
            match b.get(i) {
                None => {
                    self.pos = i;
                    return Err(self.err("unterminated string"));
                }
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u')
                            if b.len() >= i + 6
                                && b[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit) =>
                        {
                            i += 6
                        }
                        _ => {
                            self.pos = i;
                            return Err(self.err("invalid escape"));
                        }
                    }
                }
                Some(&c) if c < 0x20 => {
                    self.pos = i;
                    return Err(self.err("control character in string"));
                }
                Some(_) => i += 1,
            }
        }
    }

    fn number(&mut self) -> Result<Tok, SyntaxError> {
        let b = self.text.as_bytes();
        let digits = |i: &mut usize| {
            let s = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - s
        };
        let mut i = self.pos;
        if b[i] == b'-' {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => {
                self.pos = i;
                return Err(self.err("invalid number"));
            }
        }
        let mut tok = Tok::Int;
        if b.get(i) == Some(&b'.') {
            i += 1;
            if digits(&mut i) == 0 {
                self.pos = i;
                return Err(self.err("invalid number"));
            }
            tok = Tok::Float;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                self.pos = i;
                return Err(self.err("invalid number"));
            }
            tok = Tok::Float;
        }
        self.pos = i;
        Ok(tok)
    }
}

/// The first index from `i` whose byte may end a plain run of string content (a quote, a
/// backslash or a control character), skipping eight bytes at a time (SWAR): long strings
/// are most of a large frame's bytes.
fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let special = has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
        if special != 0 {
            break;
        }
        i += 8;
    }
    i
}

/// The value of a string token of `text`: borrowed unless it has escapes.
pub fn str_value<'a>(text: &'a str, t: &Token) -> Cow<'a, str> {
    let quoted = &text[t.start..t.end];
    if !t.escaped {
        return Cow::Borrowed(&quoted[1..quoted.len() - 1]);
    }
    // Escapes were checked by the lexer, so serde_json reads it.
    Cow::Owned(serde_json::from_str(quoted).unwrap_or_default())
}

/// Why a frame is refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Defect {
    #[error("{0}")]
    Syntax(#[from] SyntaxError),
    #[error(
        "message nests arrays/objects too deeply (at most {MAX_DEPTH} levels); flatten the arguments"
    )]
    TooDeep,
    #[error("key `{key}` appears more than once in {}", place(.path))]
    DuplicateKey { path: String, key: String },
    /// An integer outside the 64-bit range, or a float whose magnitude is beyond f64's
    /// (it would read as infinity). A float too small for f64 is not refused: it reads as 0,
    /// as in every JSON implementation.
    #[error(
        "number {literal} at {path} is beyond what the node can represent (integers: 64 bits, signed or unsigned; floats: f64); send it as a string"
    )]
    NumberOutOfRange { path: String, literal: String },
}

fn place(path: &str) -> String {
    if path.is_empty() {
        "the message".to_owned()
    } else {
        format!("`{path}`")
    }
}

/// Where the lexer is, for naming the place of a defect.
enum Frame<'a> {
    Array {
        count: usize,
    },
    Object {
        key: Option<Cow<'a, str>>,
        /// Where this object's keys start in the shared key stack.
        first_key: usize,
    },
}

fn path_of(frames: &[Frame<'_>]) -> String {
    let mut p = String::new();
    for f in frames {
        match f {
            Frame::Array { count } => p.push_str(&format!("[{}]", count.saturating_sub(1))),
            Frame::Object { key: Some(k), .. } => {
                if !p.is_empty() {
                    p.push('.');
                }
                let short: String = k.chars().take(64).collect();
                p.push_str(&short);
            }
            Frame::Object { key: None, .. } => {}
        }
    }
    p
}

/// Objects with up to this many keys are checked for duplicates as each key arrives (a
/// few comparisons); larger ones are sorted once when they close.
const LINEAR_KEYS: usize = 16;

/// Checks a client frame (see the module's comment).
pub fn check(text: &str) -> Result<(), Defect> {
    check_within(text, MAX_DEPTH)
}

impl Defect {
    /// The defect of a part of a message found at `prefix` (e.g. `cmds[0].args`).
    pub fn under(self, prefix: &str) -> Defect {
        let join = |path: String| match path.chars().next() {
            None => prefix.to_owned(),
            Some('[') => format!("{prefix}{path}"),
            Some(_) => format!("{prefix}.{path}"),
        };
        match self {
            Defect::DuplicateKey { path, key } => Defect::DuplicateKey {
                path: join(path),
                key,
            },
            Defect::NumberOutOfRange { path, literal } => Defect::NumberOutOfRange {
                path: join(path),
                literal,
            },
            other => other,
        }
    }
}

/// [`check`] for a text nested in a message, which may nest `max_depth` levels itself.
pub fn check_within(text: &str, max_depth: usize) -> Result<(), Defect> {
    let mut lexer = Lexer::new(text);
    let mut frames: Vec<Frame<'_>> = Vec::new();
    // The keys of every open object, innermost last: one allocation for the whole frame.
    let mut keys: Vec<Cow<'_, str>> = Vec::new();
    let duplicate = |frames: &[Frame<'_>], key: &str| Defect::DuplicateKey {
        path: path_of(frames),
        key: key.chars().take(64).collect(),
    };
    while let Some(t) = lexer.next_token()? {
        if t.tok != Tok::Key
            && !matches!(t.tok, Tok::ObjEnd | Tok::ArrEnd)
            && let Some(Frame::Array { count }) = frames.last_mut()
        {
            *count += 1;
        }
        match t.tok {
            Tok::ObjBegin | Tok::ArrBegin => {
                if lexer.depth() > max_depth {
                    return Err(Defect::TooDeep);
                }
                frames.push(if t.tok == Tok::ObjBegin {
                    Frame::Object {
                        key: None,
                        first_key: keys.len(),
                    }
                } else {
                    Frame::Array { count: 0 }
                });
            }
            Tok::Key => {
                let k = str_value(text, &t);
                if let Some(Frame::Object { key, first_key }) = frames.last_mut() {
                    let mine = &keys[*first_key..];
                    if mine.len() < LINEAR_KEYS && mine.contains(&k) {
                        frames.pop();
                        return Err(duplicate(&frames, &k));
                    }
                    *key = Some(k.clone());
                }
                keys.push(k);
            }
            Tok::ObjEnd => {
                if let Some(Frame::Object { first_key, .. }) = frames.pop() {
                    let mine = &mut keys[first_key..];
                    if mine.len() > LINEAR_KEYS {
                        mine.sort_unstable();
                        if let Some(w) = mine.windows(2).find(|w| w[0] == w[1]) {
                            return Err(duplicate(&frames, &w[0]));
                        }
                    }
                    keys.truncate(first_key);
                }
            }
            Tok::ArrEnd => {
                frames.pop();
            }
            Tok::Int => {
                let literal = &text[t.start..t.end];
                // Up to 18 digits always fit; only longer literals need parsing.
                let fits = literal.len() < 19
                    || if literal.starts_with('-') {
                        literal.parse::<i64>().is_ok()
                    } else {
                        literal.parse::<u64>().is_ok()
                    };
                if !fits {
                    return Err(out_of_range(&frames, literal));
                }
            }
            Tok::Float => {
                let literal = &text[t.start..t.end];
                // Rust's parse is exact and linear in the literal; it overflows to infinity
                // exactly where f64 ends.
                if !literal.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(out_of_range(&frames, literal));
                }
            }
            Tok::Str | Tok::Lit => {}
        }
    }
    Ok(())
}

fn out_of_range(frames: &[Frame<'_>], literal: &str) -> Defect {
    Defect::NumberOutOfRange {
        path: path_of(frames),
        literal: literal.chars().take(40).collect(),
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The index just past the string starting at `b[i] == '"'`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index just past the value starting at `b[i]`, counting depth rather than keeping a
/// stack (so any depth costs nothing).
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// The first top-level `"u"` of a frame when it is a string, read without the nesting limit
/// and up to the first defect that keeps it from being found.
pub fn find_u(b: &[u8]) -> Option<String> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key: String = serde_json::from_slice(&b[i..key_end]).ok()?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        if key == "u" && b.get(i) == Some(&b'"') {
            let end = string_end(b, i)?;
            return serde_json::from_slice(&b[i..end]).ok();
        }
        i = skip_ws(b, value_end(b, i)?);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        let mut l = Lexer::new(text);
        let mut out = Vec::new();
        while let Some(t) = l.next_token().unwrap() {
            out.push(t.tok);
        }
        out
    }

    #[test]
    fn tokens_of_a_message() {
        use Tok::*;
        assert_eq!(
            toks(r#" {"a": [1, -2.5e3, "x\n", true, null, {}], "b": []} "#),
            [
                ObjBegin, Key, ArrBegin, Int, Float, Str, Lit, Lit, ObjBegin, ObjEnd, ArrEnd, Key,
                ArrBegin, ArrEnd, ObjEnd
            ]
        );
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "[01]",
            "[1.]",
            "[\"\\x\"]",
            "tru",
            "1 2",
            "[\"a\u{1}\"]",
            "{1:2}",
            "[-]",
            "[1e]",
        ] {
            let mut l = Lexer::new(bad);
            let r =
                std::iter::from_fn(|| l.next_token().transpose()).collect::<Result<Vec<_>, _>>();
            assert!(r.is_err(), "{bad:?} lexed");
        }
    }

    #[test]
    fn runs_of_plain_bytes_end_at_the_first_special_one() {
        let text = "abcdefghijklmnopqrstuvwxyzé0123456789";
        for special in ["\"", "\\", "\n", "\u{1}"] {
            for at in 0..text.len() {
                if !text.is_char_boundary(at) {
                    continue;
                }
                let s = format!("{}{special}{}", &text[..at], &text[at..]);
                let end = plain_run_end(s.as_bytes(), 0);
                assert!(end <= at, "{s:?}: {end} > {at}");
                assert!(
                    s.as_bytes()[end..at]
                        .iter()
                        .all(|&c| c >= 0x20 && c != b'"' && c != b'\\')
                );
            }
        }
    }

    #[test]
    fn check_refuses_what_serde_would_mangle() {
        assert_eq!(check(r#"{"a":[1,{"b":-9223372036854775808}]}"#), Ok(()));
        assert_eq!(check("[18446744073709551615]"), Ok(()));
        assert_eq!(
            check(r#"{"cmds":[{"args":[1, 1180591620717411303424]}]}"#),
            Err(Defect::NumberOutOfRange {
                path: "cmds[0].args[1]".into(),
                literal: "1180591620717411303424".into()
            })
        );
        assert!(matches!(
            check("[-9223372036854775809]"),
            Err(Defect::NumberOutOfRange { .. })
        ));
        // Floats: beyond f64's magnitude is refused wherever it is, however it is written;
        // the largest finite f64 and values that underflow to 0 are not.
        for (text, path) in [
            ("[1e400]", "[0]"),
            (r#"{"a":[0, -1e400]}"#, "a[1]"),
            (r#"{"k":{"x":1E+2147483648}}"#, "k.x"),
            ("[[[2.5e308]]]", "[0][0][0]"),
        ] {
            match check(text) {
                Err(Defect::NumberOutOfRange { path: p, .. }) => assert_eq!(p, path, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(check("[1.7976931348623157e308, -1e-400, 1e-99999]"), Ok(()));
        assert_eq!(
            check(r#"{"role":"rpc","role":"x"}"#),
            Err(Defect::DuplicateKey {
                path: String::new(),
                key: "role".into()
            })
        );
        assert_eq!(
            check(r#"{"k":{"a":1,"\u0061":2}}"#),
            Err(Defect::DuplicateKey {
                path: "k".into(),
                key: "a".into()
            })
        );
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        assert_eq!(check(&format!("{{{}}}", many.join(","))), Ok(()));
        assert_eq!(
            check(&format!("{{\"o\":{{{},\"k7\":0}}}}", many.join(","))),
            Err(Defect::DuplicateKey {
                path: "o".into(),
                key: "k7".into()
            })
        );
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check(&deep(MAX_DEPTH)), Ok(()));
        assert_eq!(check(&deep(MAX_DEPTH + 1)), Err(Defect::TooDeep));
        assert!(serde_json::from_str::<serde_json::Value>(&deep(MAX_DEPTH)).is_ok());
    }

    #[test]
    fn u_is_found_past_any_nesting() {
        let deep = "[".repeat(100_000);
        assert_eq!(
            find_u(format!(r#"{{"a":{{"x":[1,"}}"]}}, "u" : "r\"1", "c":{deep}"#).as_bytes()),
            Some("r\"1".into())
        );
        assert_eq!(find_u(br#"{"a":[[[{"u":"inner"}]]]}"#), None);
        assert_eq!(find_u(br#"{"u":7}"#), None);
        assert_eq!(find_u(b"[\"u\"]"), None);
        assert_eq!(find_u(br#"{"a":1 "u":"x"}"#), None);
    }
}
