//! Python literals, which upstream Magnum speaks in two places: label values in JSON-patch
//! bodies are parsed with `ast.literal_eval`, and error messages quote values with `str()` /
//! `repr()`. Both are reproduced here so that clients see the same behaviour.

use serde_json::{Map, Number, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LiteralError(String);

impl LiteralError {
    fn syntax() -> Self {
        Self("invalid syntax (<unknown>, line 1)".to_owned())
    }
}

/// `ast.literal_eval` for the literals Magnum's patches carry: dicts, lists, tuples, strings,
/// numbers, `True`, `False` and `None`.
pub fn literal_eval(source: &str) -> Result<Value, LiteralError> {
    let mut parser = Parser {
        chars: source.chars().collect(),
        position: 0,
        saw_name: false,
        depth: 0,
    };
    parser.skip_whitespace();
    let value = parser.value()?;
    parser.skip_whitespace();
    if parser.position != parser.chars.len() {
        return Err(LiteralError::syntax());
    }
    // Python parses first and evaluates second: a bare name is only reported once the
    // whole text is known to be valid syntax.
    if parser.saw_name {
        return Err(LiteralError(
            "malformed node or string on line 1: <ast.Name object>".to_owned(),
        ));
    }
    Ok(value)
}

/// Containers nested deeper than this are refused; labels are flat, and the parser recurses.
const MAX_DEPTH: usize = 32;

struct Parser {
    chars: Vec<char>,
    position: usize,
    saw_name: bool,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.position).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_whitespace()) {
            self.position += 1;
        }
    }

    fn expect(&mut self, wanted: char) -> Result<(), LiteralError> {
        self.skip_whitespace();
        if self.peek() == Some(wanted) {
            self.position += 1;
            Ok(())
        } else {
            Err(LiteralError::syntax())
        }
    }

    fn value(&mut self) -> Result<Value, LiteralError> {
        self.skip_whitespace();
        match self.peek() {
            Some('{') | Some('[') | Some('(') => {
                if self.depth >= MAX_DEPTH {
                    return Err(LiteralError("too many nested parentheses".to_owned()));
                }
                self.depth += 1;
                let container = match self.peek() {
                    Some('{') => self.dict(),
                    Some('[') => self.sequence(']'),
                    _ => self.sequence(')'),
                };
                self.depth -= 1;
                container
            }
            Some('\'') | Some('"') => self.string().map(Value::String),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => self.number(),
            Some(c) if c.is_alphabetic() || c == '_' => self.name(),
            _ => Err(LiteralError::syntax()),
        }
    }

    fn dict(&mut self) -> Result<Value, LiteralError> {
        self.position += 1;
        let mut map = Map::new();
        loop {
            self.skip_whitespace();
            if self.peek() == Some('}') {
                self.position += 1;
                return Ok(Value::Object(map));
            }
            let key = match self.value()? {
                Value::String(key) => key,
                other => py_str(&other),
            };
            self.expect(':')?;
            let value = self.value()?;
            map.insert(key, value);
            self.skip_whitespace();
            match self.peek() {
                Some(',') => self.position += 1,
                Some('}') => {}
                _ => return Err(LiteralError::syntax()),
            }
        }
    }

    fn sequence(&mut self, close: char) -> Result<Value, LiteralError> {
        self.position += 1;
        let mut items = Vec::new();
        loop {
            self.skip_whitespace();
            if self.peek() == Some(close) {
                self.position += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.skip_whitespace();
            match self.peek() {
                Some(',') => self.position += 1,
                Some(c) if c == close => {}
                _ => return Err(LiteralError::syntax()),
            }
        }
    }

    /// One string literal, joined with the literals right after it as Python does.
    fn string(&mut self) -> Result<String, LiteralError> {
        let mut out = self.single_string()?;
        loop {
            let resume = self.position;
            self.skip_whitespace();
            if matches!(self.peek(), Some('\'') | Some('"')) {
                out.push_str(&self.single_string()?);
            } else {
                self.position = resume;
                return Ok(out);
            }
        }
    }

    fn single_string(&mut self) -> Result<String, LiteralError> {
        let quote = self.chars[self.position];
        let body_start = self.position + 1;
        // Where the literal ends is known before its escapes are read, as in Python's
        // tokenizer: a backslash always takes the next character with it.
        let mut body_end = body_start;
        loop {
            match self.chars.get(body_end) {
                None | Some('\n') => return Err(LiteralError::syntax()),
                Some('\\') => body_end += 2,
                Some(c) if *c == quote => break,
                Some(_) => body_end += 1,
            }
        }
        let mut escapes = Escapes {
            chars: &self.chars[..body_end],
            body_start,
            position: body_start,
        };
        let decoded = escapes.decode();
        self.position = body_end + 1;
        decoded.map_err(|message| {
            let line = 1 + self.chars[..body_start]
                .iter()
                .filter(|c| **c == '\n')
                .count();
            LiteralError(format!("{message} (<unknown>, line {line})"))
        })
    }

    fn number(&mut self) -> Result<Value, LiteralError> {
        let start = self.position;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
        {
            // A sign is only part of the number at the start or right after an exponent.
            if matches!(self.peek(), Some('-') | Some('+')) && self.position != start {
                let previous = self.chars[self.position - 1];
                if previous != 'e' && previous != 'E' {
                    break;
                }
            }
            self.position += 1;
        }
        let text: String = self.chars[start..self.position]
            .iter()
            .filter(|c| **c != '_')
            .collect();
        if let Ok(integer) = text.parse::<i64>() {
            return Ok(Value::Number(integer.into()));
        }
        if text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
        {
            if let Ok(float) = text.parse::<f64>() {
                if let Some(number) = Number::from_f64(float) {
                    return Ok(Value::Number(number));
                }
            }
        }
        Err(LiteralError::syntax())
    }

    fn name(&mut self) -> Result<Value, LiteralError> {
        let start = self.position;
        while matches!(self.peek(), Some(c) if c.is_alphanumeric() || c == '_') {
            self.position += 1;
        }
        let name: String = self.chars[start..self.position].iter().collect();
        match name.as_str() {
            "True" => Ok(Value::Bool(true)),
            "False" => Ok(Value::Bool(false)),
            "None" => Ok(Value::Null),
            _ => {
                self.saw_name = true;
                Ok(Value::Null)
            }
        }
    }
}

/// The body of one string literal (without its quotes), decoded as Python's
/// `unicodeescape` codec does.
struct Escapes<'a> {
    /// The source up to the closing quote.
    chars: &'a [char],
    body_start: usize,
    position: usize,
}

impl Escapes<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.position).copied()
    }

    fn decode(&mut self) -> Result<String, String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.position += 1;
            if c != '\\' {
                out.push(c);
                continue;
            }
            let escape_start = self.position - 1;
            // The tokenizer saw to it that a backslash is never last.
            let escaped = self.peek().unwrap_or('\\');
            self.position += 1;
            match escaped {
                '\n' => {}
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'a' => out.push('\u{7}'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'v' => out.push('\u{b}'),
                '\\' | '\'' | '"' => out.push(escaped),
                '0'..='7' => out.push(self.octal(escaped)),
                'x' | 'u' | 'U' => match self.hexadecimal(escaped) {
                    Ok(decoded) => out.push(decoded),
                    Err(message) => return Err(self.error(escape_start, message)),
                },
                'N' => {
                    let message = self.name();
                    return Err(self.error(escape_start, message));
                }
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
        Ok(out)
    }

    /// `\o`, `\oo` or `\ooo`: up to three octal digits.
    fn octal(&mut self, first: char) -> char {
        let mut value = first.to_digit(8).unwrap_or_default();
        for _ in 0..2 {
            match self.peek().and_then(|c| c.to_digit(8)) {
                Some(digit) => {
                    value = value * 8 + digit;
                    self.position += 1;
                }
                None => break,
            }
        }
        // At most 0o777: always a character.
        char::from_u32(value).unwrap_or_default()
    }

    /// `\xXX`, `\uXXXX`, `\UXXXXXXXX` after the letter; digits are consumed up to the
    /// first that is not hexadecimal, which is where Python's error ends.
    fn hexadecimal(&mut self, letter: char) -> Result<char, &'static str> {
        let (digits, truncated) = match letter {
            'x' => (2, "truncated \\xXX escape"),
            'u' => (4, "truncated \\uXXXX escape"),
            _ => (8, "truncated \\UXXXXXXXX escape"),
        };
        let mut value: u32 = 0;
        for _ in 0..digits {
            let Some(digit) = self.peek().and_then(|c| c.to_digit(16)) else {
                return Err(truncated);
            };
            value = value * 16 + digit;
            self.position += 1;
        }
        if value > 0x10FFFF {
            return Err("illegal Unicode character");
        }
        // Python holds a lone surrogate in a str; JSON text and Rust strings cannot.
        char::from_u32(value).ok_or("surrogates not allowed")
    }

    /// `\N{NAME}` after the `N`. Python accepts it only for a real Unicode character name;
    /// without the Unicode name table here, every one is refused, with the message Python
    /// gives for an unknown name (docs/CONFIGURATION.md). Consumes what Python consumes.
    fn name(&mut self) -> &'static str {
        const MALFORMED: &str = "malformed \\N character escape";
        if self.peek() != Some('{') {
            return MALFORMED;
        }
        self.position += 1;
        let name_start = self.position;
        while self.peek().is_some_and(|c| c != '}') {
            self.position += 1;
        }
        if self.peek().is_none() || self.position == name_start {
            return MALFORMED;
        }
        self.position += 1;
        "unknown Unicode character name"
    }

    /// Python's message for a bad escape: positions are byte offsets in the body after
    /// CPython re-encoded its non-ASCII characters (see [`python_escaped_length`]).
    fn error(&self, escape_start: usize, message: &str) -> String {
        let body = &self.chars[self.body_start..self.position];
        let start = python_escaped_length(&body[..escape_start - self.body_start]);
        let end = python_escaped_length(body) - 1;
        format!(
            "(unicode error) 'unicodeescape' codec can't decode bytes in position {start}-{end}: {message}"
        )
    }
}

/// The length in bytes of a string literal's body once CPython has prepared it for its
/// `unicodeescape` decoder: a backslash and the character after it are copied together (a
/// backslash before a non-ASCII character becomes `\u005c`), and every non-ASCII character
/// becomes `\UXXXXXXXX`.
fn python_escaped_length(body: &[char]) -> usize {
    let mut length = 0;
    let mut index = 0;
    while index < body.len() {
        if body[index] == '\\' {
            length += 1;
            index += 1;
            match body.get(index) {
                None => {
                    length += 5;
                    continue;
                }
                Some(c) if !c.is_ascii() => length += 5,
                Some(_) => {}
            }
        }
        length += if body[index].is_ascii() { 1 } else { 10 };
        index += 1;
    }
    length
}

/// Python's `str()` of a JSON value (a string is itself; containers use `repr()` of items).
pub fn py_str(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => py_repr(other),
    }
}

/// Python's `repr()` of a JSON value as Python would hold it.
pub fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(number) => py_number(number),
        Value::String(text) => py_repr_str(text),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(py_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{}: {}", py_repr_str(key), py_repr(value)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

fn py_number(number: &Number) -> String {
    if let Some(integer) = number.as_i64() {
        return integer.to_string();
    }
    if let Some(integer) = number.as_u64() {
        return integer.to_string();
    }
    py_float(number.as_f64().unwrap_or(0.0))
}

/// Python's `repr(float)`: shortest round-trip digits, positional for exponents in [-4, 16).
pub fn py_float(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        }
        .to_owned();
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let fraction = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{fraction}e{exponent_sign}{:02}", exponent.abs())
    }
}

fn py_repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_python_dict_literals() {
        assert_eq!(
            literal_eval("{'a': 'b', 'n': 1, 't': True, 'f': 1.5, 'z': None}").unwrap(),
            json!({"a": "b", "n": 1, "t": true, "f": 1.5, "z": null})
        );
        assert_eq!(literal_eval("{}").unwrap(), json!({}));
        assert_eq!(
            literal_eval("[1, (2, 3), -4]").unwrap(),
            json!([1, [2, 3], -4])
        );
        assert_eq!(
            literal_eval(r#"{"k": 'it\'s'}"#).unwrap(),
            json!({"k": "it's"})
        );
    }

    #[test]
    fn rejects_what_python_rejects() {
        assert_eq!(
            literal_eval("a=b,c=d").unwrap_err().to_string(),
            "invalid syntax (<unknown>, line 1)"
        );
        assert!(literal_eval(r#"{"t": true}"#)
            .unwrap_err()
            .to_string()
            .starts_with("malformed node or string"));
        assert!(literal_eval("{'a': 'b'").is_err());
        assert!(literal_eval("{'a' 'b'}").is_err());
        assert!(literal_eval("").is_err());
    }

    #[test]
    fn escapes_decode_as_python_does() {
        assert_eq!(
            literal_eval(r#"'\a\b\f\v\n\t\r\\\'\"'"#).unwrap(),
            json!("\u{7}\u{8}\u{c}\u{b}\n\t\r\\'\"")
        );
        assert_eq!(
            literal_eval(r"'\012\101\08\1234\777'").unwrap(),
            json!("\nA\u{0}8S4\u{1ff}")
        );
        assert_eq!(
            literal_eval(r"'\x41\u00e9\U0001F600'").unwrap(),
            json!("Aé😀")
        );
        assert_eq!(
            literal_eval("'a\\\nb'").unwrap(),
            json!("ab"),
            "a line continuation"
        );
        assert_eq!(
            literal_eval(r"'\q\é'").unwrap(),
            json!("\\q\\é"),
            "unknown escapes stay"
        );
        // Every spelling of NUL decodes to NUL: callers check decoded strings, not the source.
        for nul in [r"'\0'", r"'\x00'", r"'\u0000'", r"'\U00000000'", r"'\000'"] {
            assert_eq!(literal_eval(nul).unwrap(), json!("\u{0}"), "{nul}");
        }
        assert_eq!(
            literal_eval(r#"{"k": "it's", 'q': '"'}"#).unwrap(),
            json!({"k": "it's", "q": "\""})
        );
    }

    #[test]
    fn bad_escapes_are_refused_with_pythons_messages() {
        // Each message as Python 3.11's ast.literal_eval gives it.
        let refusals = [
            (r"'\N{BOGUS}'", "0-8: unknown Unicode character name"),
            (r"'ab\N{BOGUS}'", "2-10: unknown Unicode character name"),
            (r"'éé\N{X}'", "20-24: unknown Unicode character name"),
            (r"'\é\N{X}'", "16-20: unknown Unicode character name"),
            (r"'\\é\N{X}'", "12-16: unknown Unicode character name"),
            (r"'ab' 'c\N{X}'", "1-5: unknown Unicode character name"),
            (
                r"{'a': 'x', 'b': '\N{X}'}",
                "0-4: unknown Unicode character name",
            ),
            (r#"'\N{a"b}'"#, "0-6: unknown Unicode character name"),
            (r"'\N{'", "0-2: malformed \\N character escape"),
            (r"'\N{}'", "0-2: malformed \\N character escape"),
            (r"'\N'", "0-1: malformed \\N character escape"),
            (r"'\Nx'", "0-1: malformed \\N character escape"),
            (r"'\N{BOGUS'", "0-7: malformed \\N character escape"),
            (r"'\x0'", "0-2: truncated \\xXX escape"),
            (r"'\x4g'", "0-2: truncated \\xXX escape"),
            (r"'abc\x4'", "3-5: truncated \\xXX escape"),
            (r"'\q\x0'", "2-4: truncated \\xXX escape"),
            (r"'\u00'", "0-3: truncated \\uXXXX escape"),
            (r"'\U00110000'", "0-9: illegal Unicode character"),
        ];
        for (source, expected) in refusals {
            assert_eq!(
                literal_eval(source).unwrap_err().to_string(),
                format!(
                    "(unicode error) 'unicodeescape' codec can't decode bytes in position {expected} (<unknown>, line 1)"
                ),
                "{source}"
            );
        }
        // A real Unicode name is refused too: there is no name table here (documented).
        assert!(literal_eval(r"'\N{LATIN SMALL LETTER A}'").is_err());
        assert!(
            literal_eval(r"'\ud800'").is_err(),
            "a lone surrogate has no Rust form"
        );
        assert_eq!(
            literal_eval("{'a':\n'\\N{X}'}").unwrap_err().to_string(),
            "(unicode error) 'unicodeescape' codec can't decode bytes in position 0-4: unknown Unicode character name (<unknown>, line 2)"
        );
        assert!(
            literal_eval(r"'abc\'").is_err(),
            "an escaped closing quote leaves the literal open"
        );
    }

    #[test]
    fn deep_or_long_input_is_refused_without_exhausting_the_stack() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(literal_eval(&deep).is_err());
        let long = format!("{{'k': {}}}", "'a'".repeat(100_000));
        assert_eq!(
            literal_eval(&long).unwrap()["k"].as_str().unwrap().len(),
            100_000
        );
        let nested_ok = format!("{}1{}", "[".repeat(32), "]".repeat(32));
        assert!(literal_eval(&nested_ok).is_ok());
    }

    #[test]
    fn str_and_repr_match_python() {
        assert_eq!(py_str(&json!("x")), "x");
        assert_eq!(py_str(&json!(true)), "True");
        assert_eq!(py_str(&json!(null)), "None");
        assert_eq!(py_str(&json!({"x": "z"})), "{'x': 'z'}");
        assert_eq!(
            py_str(&json!({"op": "replace", "path": "/name", "value": "x"})),
            "{'op': 'replace', 'path': '/name', 'value': 'x'}"
        );
        assert_eq!(py_repr(&json!("it's")), "\"it's\"");
    }

    #[test]
    fn floats_render_like_python() {
        assert_eq!(py_float(1.5), "1.5");
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(1e20), "1e+20");
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(123456789012345.0), "123456789012345.0");
        assert_eq!(py_float(0.0001), "0.0001");
        assert_eq!(py_float(0.00001), "1e-05");
        assert_eq!(py_float(-2.5), "-2.5");
    }
}
