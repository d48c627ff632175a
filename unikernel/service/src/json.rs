//! A strict JSON validator (RFC 8259).
//!
//! `PUT /v1/kv/{key}` stores its body verbatim, so the body must be exactly
//! one JSON value: valid UTF-8, the exact number grammar, only the defined
//! string escapes, no control characters in strings, no trailing garbage;
//! whitespace around the value is allowed. Lone UTF-16 surrogates in `\u`
//! escapes are accepted, as the RFC's grammar does.
//!
//! The validator is iterative: nesting is tracked on a fixed-size stack of
//! [`MAX_DEPTH`] entries, so hostile input can neither overflow the call stack
//! nor make it allocate. serde-json-core's `IgnoredAny` is no substitute: it
//! skips scalars without checking them.

use core::fmt;

/// The deepest nesting of arrays and objects a document may have.
pub const MAX_DEPTH: usize = 64;

/// Why a document is not valid JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// The document breaks the grammar at this byte offset.
    Invalid {
        /// Offset of the first byte that cannot be part of a valid document.
        offset: usize,
    },
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid { offset } => write!(f, "not valid JSON (at byte {offset})"),
            Self::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

impl core::error::Error for JsonError {}

/// Checks that `input` is exactly one JSON value, optionally surrounded by
/// whitespace.
pub fn validate(input: &[u8]) -> Result<(), JsonError> {
    if let Err(error) = core::str::from_utf8(input) {
        return Err(JsonError::Invalid {
            offset: error.valid_up_to(),
        });
    }
    Validator {
        bytes: input,
        pos: 0,
        open: heapless::Vec::new(),
    }
    .document()
}

/// A container the validator is inside of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Container {
    Array,
    Object,
}

/// Cursor over UTF-8-checked input plus the stack of open containers.
struct Validator<'a> {
    bytes: &'a [u8],
    pos: usize,
    open: heapless::Vec<Container, MAX_DEPTH>,
}

impl Validator<'_> {
    fn document(mut self) -> Result<(), JsonError> {
        self.skip_whitespace();
        'value: loop {
            // Exactly one value starts here.
            match self.peek() {
                Some(b'[') => {
                    self.open(Container::Array)?;
                    if !self.eat(b']') {
                        continue 'value;
                    }
                    self.open.pop();
                }
                Some(b'{') => {
                    self.open(Container::Object)?;
                    if !self.eat(b'}') {
                        self.member_name()?;
                        continue 'value;
                    }
                    self.open.pop();
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.invalid()),
            }
            // A value ended: close containers until one continues, or the document ends.
            loop {
                self.skip_whitespace();
                let Some(&container) = self.open.last() else {
                    return if self.pos == self.bytes.len() {
                        Ok(())
                    } else {
                        Err(self.invalid())
                    };
                };
                match (container, self.peek()) {
                    (_, Some(b',')) => {
                        self.pos += 1;
                        self.skip_whitespace();
                        if container == Container::Object {
                            self.member_name()?;
                        }
                        continue 'value;
                    }
                    (Container::Array, Some(b']')) | (Container::Object, Some(b'}')) => {
                        self.pos += 1;
                        self.open.pop();
                    }
                    _ => return Err(self.invalid()),
                }
            }
        }
    }

    /// Consumes the opening bracket and whitespace after it.
    fn open(&mut self, container: Container) -> Result<(), JsonError> {
        self.open.push(container).map_err(|_| JsonError::TooDeep)?;
        self.pos += 1;
        self.skip_whitespace();
        Ok(())
    }

    /// `"name" :` and the whitespace after it.
    fn member_name(&mut self) -> Result<(), JsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.invalid());
        }
        self.string()?;
        self.skip_whitespace();
        if !self.eat(b':') {
            return Err(self.invalid());
        }
        self.skip_whitespace();
        Ok(())
    }

    fn string(&mut self) -> Result<(), JsonError> {
        self.pos += 1; // the opening quote
        loop {
            match self.next() {
                Some(b'"') => return Ok(()),
                Some(b'\\') => self.escape()?,
                // Control characters must be escaped; the rest is UTF-8 checked up front.
                Some(0x20..) => {}
                Some(_) | None => return Err(self.invalid_before()),
            }
        }
    }

    fn escape(&mut self) -> Result<(), JsonError> {
        match self.next() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(()),
            Some(b'u') => {
                for _ in 0..4 {
                    if !self.next().is_some_and(|byte| byte.is_ascii_hexdigit()) {
                        return Err(self.invalid_before());
                    }
                }
                Ok(())
            }
            _ => Err(self.invalid_before()),
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), JsonError> {
        self.eat(b'-');
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(self.invalid_before()),
        }
        if self.eat(b'.') {
            self.digits()?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            self.digits()?;
        }
        Ok(())
    }

    /// One or more digits.
    fn digits(&mut self) -> Result<(), JsonError> {
        if !self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            return Err(self.invalid());
        }
        self.skip_digits();
        Ok(())
    }

    fn skip_digits(&mut self) {
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        if !rest.starts_with(word) {
            return Err(self.invalid());
        }
        self.pos += word.len();
        Ok(())
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn eat(&mut self, expected: u8) -> bool {
        let matches = self.peek() == Some(expected);
        if matches {
            self.pos += 1;
        }
        matches
    }

    /// The byte at the cursor is wrong.
    fn invalid(&self) -> JsonError {
        JsonError::Invalid { offset: self.pos }
    }

    /// The byte just consumed (or the missing end of input) is wrong.
    fn invalid_before(&self) -> JsonError {
        JsonError::Invalid {
            offset: self.pos.saturating_sub(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &[&str] = &[
        "0",
        "-0",
        "1",
        "-12.5e+3",
        "1E-2",
        "0.0",
        "123456789012345678901234567890",
        "1e400",
        "true",
        "false",
        "null",
        r#""""#,
        r#""a\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00""#,
        r#""\ud800""#,
        "\"caf\u{e9} \u{1F600}\"",
        "[]",
        "{}",
        "[1,[2,[3]],{}]",
        r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
        " \t\r\n{ \"a\" : [ 1 , 2 ] } \n",
        r#"{"a":1,"a":2}"#,
    ];

    const INVALID: &[&str] = &[
        "",
        " ",
        "01",
        "-",
        "+1",
        "1.",
        ".5",
        "1e",
        "1e+",
        "0x10",
        "NaN",
        "Infinity",
        "tru",
        "True",
        "nul",
        "[",
        "]",
        "[1,]",
        "[,1]",
        "[1 2]",
        "{,}",
        r#"{"a"}"#,
        r#"{"a":}"#,
        r#"{"a":1,}"#,
        r#"{a:1}"#,
        "{'a':1}",
        r#"{"a" 1}"#,
        r#""abc"#,
        r#""\x""#,
        r#""\u12""#,
        r#""\u12g4""#,
        "\"tab\there\"",
        "\"new\nline\"",
        "1 2",
        "[] []",
        "{}x",
        "\u{feff}1",
        "[1]\u{0}",
        "// comment\n1",
    ];

    #[test]
    fn accepts_valid_documents() {
        for doc in VALID {
            assert_eq!(validate(doc.as_bytes()), Ok(()), "{doc:?}");
        }
    }

    #[test]
    fn rejects_invalid_documents() {
        for doc in INVALID {
            assert!(validate(doc.as_bytes()).is_err(), "{doc:?}");
        }
    }

    #[test]
    fn agrees_with_serde_json() {
        for doc in VALID.iter().chain(INVALID) {
            let reference = serde_json::from_str::<serde::de::IgnoredAny>(doc).is_ok();
            assert_eq!(validate(doc.as_bytes()).is_ok(), reference, "{doc:?}");
        }
    }

    #[test]
    fn rejects_invalid_utf8() {
        assert_eq!(validate(b"\"\xff\""), Err(JsonError::Invalid { offset: 1 }));
        assert!(validate(b"\"\xed\xa0\x80\"").is_err(), "encoded surrogate");
        assert!(validate(b"\"\xc0\xaf\"").is_err(), "overlong encoding");
    }

    #[test]
    fn limits_nesting_depth() {
        let nested = |depth: usize, open: &str, close: &str| {
            format!("{}{}", open.repeat(depth), close.repeat(depth))
        };
        assert_eq!(validate(nested(MAX_DEPTH, "[", "]").as_bytes()), Ok(()));
        assert_eq!(
            validate(nested(MAX_DEPTH + 1, "[", "]").as_bytes()),
            Err(JsonError::TooDeep)
        );
        let objects = format!("{}1{}", r#"{"a":"#.repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert_eq!(validate(objects.as_bytes()), Ok(()));
        // Unbalanced input far deeper than the limit fails without recursion.
        assert_eq!(
            validate("[".repeat(1 << 20).as_bytes()),
            Err(JsonError::TooDeep)
        );
    }

    #[test]
    fn reports_where_the_document_breaks() {
        assert_eq!(validate(b"[1,]"), Err(JsonError::Invalid { offset: 3 }));
        assert_eq!(validate(b"{} x"), Err(JsonError::Invalid { offset: 3 }));
        assert_eq!(validate(b"-x"), Err(JsonError::Invalid { offset: 1 }));
        assert_eq!(
            JsonError::Invalid { offset: 3 }.to_string(),
            "not valid JSON (at byte 3)"
        );
    }
}
