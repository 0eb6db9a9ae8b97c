//! Strict JSON for request bodies: read the way Go's encoding/json will read them, or refused.
//!
//! dockerd decodes bodies with Go's encoding/json, which (1) matches object keys to struct
//! fields ignoring case, including Unicode folds (`"Bindſ"` fills `Binds`, the Kelvin sign `K`
//! matches `k`), and (2) merges repeated keys instead of rejecting them (two `HostConfig`
//! objects both apply). A plugin that reads the body with ordinary JSON semantics sees a
//! different request than dockerd executes (bypasses 1–3 of the spike). So object keys here
//! are ASCII-lowercased for lookup, non-ASCII keys are refused, and a key that repeats after
//! case-folding is refused at any depth. `serde_json::Value` cannot do this (it keeps one of the
//! duplicates), hence the custom visitor. serde_json's own nesting limit (128) still applies.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::refusal::quoted;

/// A parsed JSON value. Numbers are kept as `f64`: the rules only need their sign.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Object),
}

/// A JSON object whose keys are ASCII-lowercased (and were unique after lowercasing).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Object {
    fields: BTreeMap<String, Json>,
}

impl Object {
    /// The value of field `name` (a Docker field name such as `HostConfig`), matched ignoring
    /// ASCII case as Go does. `null` reads as absent: Go leaves the field at its zero value.
    pub(crate) fn field(&self, name: &str) -> Option<&Json> {
        match self.fields.get(&name.to_ascii_lowercase()) {
            None | Some(Json::Null) => None,
            Some(value) => Some(value),
        }
    }

    /// All fields, keys lowercased.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Json)> {
        self.fields.iter().map(|(key, value)| (key.as_str(), value))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl Json {
    /// Go's zero values: `null`, `""`, `[]`, `{}`. Used for "must not be set" rules, where the
    /// Docker client sends an empty list or map for an option that was not given.
    pub(crate) fn is_empty_value(&self) -> bool {
        match self {
            Json::Null => true,
            Json::String(text) => text.is_empty(),
            Json::Array(items) => items.is_empty(),
            Json::Object(object) => object.is_empty(),
            Json::Bool(_) | Json::Number(_) => false,
        }
    }
}

/// Parses a request body strictly. The error text is meant for a refusal message.
pub(crate) fn parse_strict(body: &[u8]) -> Result<Json, String> {
    serde_json::from_slice::<Json>(body).map_err(|error| error.to_string())
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Json, E> {
        Ok(Json::Bool(value))
    }

    // Integers beyond 2^53 lose precision as f64; only the sign of a number is ever inspected.
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Json, E> {
        Ok(Json::Number(value as f64))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Json, E> {
        Ok(Json::Number(value as f64))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Json, E> {
        Ok(Json::Number(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Json, E> {
        Ok(Json::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Json, E> {
        Ok(Json::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Json>()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if !key.is_ascii() {
                return Err(de::Error::custom(format!(
                    "key {} is not ASCII (dockerd folds some non-ASCII letters onto field names)",
                    quoted(&key)
                )));
            }
            let folded = key.to_ascii_lowercase();
            if fields.contains_key(&folded) {
                return Err(de::Error::custom(format!(
                    "key {} appears more than once (keys are compared ignoring case, and dockerd merges repeats)",
                    quoted(&key)
                )));
            }
            let value = map.next_value::<Json>()?;
            fields.insert(folded, value);
        }
        Ok(Json::Object(Object { fields }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Object {
        match parse_strict(text.as_bytes()).unwrap() {
            Json::Object(object) => object,
            other => panic!("not an object: {other:?}"),
        }
    }

    #[test]
    fn keys_match_ignoring_ascii_case_and_null_reads_as_absent() {
        let parsed = object(r#"{"hostconfig":{"BINDS":["a:/a"]},"Image":null}"#);
        let Some(Json::Object(host_config)) = parsed.field("HostConfig") else {
            panic!("HostConfig not found");
        };
        assert_eq!(
            host_config.field("Binds"),
            Some(&Json::Array(vec![Json::String("a:/a".into())]))
        );
        assert_eq!(parsed.field("Image"), None);
    }

    #[test]
    fn escaped_keys_are_decoded_before_matching() {
        let parsed = object(r#"{"Bind\u0073":["x"]}"#);
        assert!(parsed.field("Binds").is_some());
    }

    #[test]
    fn refuses_non_ascii_keys() {
        let error = parse_strict("{\"Bind\u{17f}\":[\"/:/host\"]}".as_bytes()).unwrap_err();
        assert!(error.contains("not ASCII"), "{error}");
        let escaped = parse_strict(br#"{"\u212aernelMemory":1}"#).unwrap_err();
        assert!(escaped.contains("not ASCII"), "{escaped}");
    }

    #[test]
    fn refuses_repeated_keys_at_any_depth() {
        for body in [
            r#"{"HostConfig":{"Binds":["/:/host"]},"HostConfig":{"Memory":0}}"#,
            r#"{"HostConfig":{},"hostconfig":{}}"#,
            r#"{"a":[{"b":{"c":1,"C":2}}]}"#,
        ] {
            let error = parse_strict(body.as_bytes()).unwrap_err();
            assert!(error.contains("more than once"), "{body}: {error}");
        }
    }

    #[test]
    fn refuses_invalid_json_and_invalid_utf8() {
        for body in [
            &b"{"[..],
            b"{\"a\":1} {\"b\":2}",
            b"{\"a\":\"\xff\"}",
            br#"{"a":"\ud800"}"#,
            b"",
            b"\xef\xbb\xbf{}",
        ] {
            assert!(
                parse_strict(body).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(parse_strict(deep.as_bytes()).is_err());
        let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_strict(fine.as_bytes()).is_ok());
    }

    #[test]
    fn numbers_keep_their_sign() {
        let parsed = object(r#"{"a":-1,"b":18446744073709551615,"c":-0.5}"#);
        assert_eq!(parsed.field("a"), Some(&Json::Number(-1.0)));
        assert!(matches!(parsed.field("b"), Some(Json::Number(n)) if *n > 0.0));
        assert!(matches!(parsed.field("c"), Some(Json::Number(n)) if *n < 0.0));
    }
}
