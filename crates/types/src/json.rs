use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

/// Serializes like Python's `json.dumps` with its defaults, which is what upstream Magnum
/// (WebOb/pecan) puts on the wire: `", "` between items, `": "` after keys, and every
/// non-ASCII character escaped as `\uXXXX` (`ensure_ascii=True`).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut serializer)
        .expect("wire documents contain only JSON-representable values");
    out
}

/// [`encode`] for an already-built JSON value.
pub fn encode_value(value: &serde_json::Value) -> Vec<u8> {
    encode(value)
}

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if fragment.is_ascii() {
            return writer.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for ch in fragment.chars() {
            if ch.is_ascii() {
                writer.write_all(&[ch as u8])?;
            } else {
                for unit in ch.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        let escaped: &[u8] = match char_escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => {
                return write!(writer, "\\u{:04x}", byte);
            }
        };
        writer.write_all(escaped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps_layout() {
        let value = json!({"b": [1, 2], "a": {"x": null, "y": true}, "s": "é\u{1F600}\n\u{1}"});
        assert_eq!(
            String::from_utf8(encode(&value)).unwrap(),
            r#"{"b": [1, 2], "a": {"x": null, "y": true}, "s": "\u00e9\ud83d\ude00\n\u0001"}"#
        );
    }

    #[test]
    fn empty_containers_have_no_separators() {
        assert_eq!(
            encode(&json!({"errors": [], "m": {}})),
            br#"{"errors": [], "m": {}}"#
        );
    }
}
