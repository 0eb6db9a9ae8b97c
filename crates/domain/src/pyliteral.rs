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
        self.position += 1;
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or_else(LiteralError::syntax)?;
            self.position += 1;
            match c {
                c if c == quote => break,
                '\n' => return Err(LiteralError::syntax()),
                '\\' => {
                    let escaped = self.peek().ok_or_else(LiteralError::syntax)?;
                    self.position += 1;
                    match escaped {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        '\\' => out.push('\\'),
                        '\'' => out.push('\''),
                        '"' => out.push('"'),
                        'x' => out.push(self.hex_escape(2)?),
                        'u' => out.push(self.hex_escape(4)?),
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                }
                other => out.push(other),
            }
        }
        Ok(out)
    }

    fn hex_escape(&mut self, digits: usize) -> Result<char, LiteralError> {
        let end = self.position + digits;
        if end > self.chars.len() {
            return Err(LiteralError::syntax());
        }
        let hex: String = self.chars[self.position..end].iter().collect();
        self.position = end;
        u32::from_str_radix(&hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(LiteralError::syntax)
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
