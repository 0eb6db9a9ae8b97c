//! Request input: query strings, JSON bodies and the attribute schemas upstream (WSME)
//! enforces, with its exact messages.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use magnum_domain::labels::{Labels, LabelsError, MAX_LABELS_JSON_BYTES};
use magnum_domain::pyliteral::py_str;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The refusal of a NUL character anywhere in a request, or in a value decoded from one.
/// PostgreSQL cannot store NUL in text, and no attribute has a use for it.
pub const NUL_REFUSED: &str =
    "Invalid input: the request contains a NUL character, which no attribute may hold.";

/// Labels beyond their bounds (`magnum_domain::labels`), in WSME's words for the field.
pub fn labels_beyond_bounds(field: &str, error: &LabelsError) -> ApiError {
    ApiError::bad_request(format!(
        "Invalid input for field/attribute {field}. {error}"
    ))
}

/// The largest `health_status_reason` the API stores, as JSON: what upstream's MySQL
/// `TEXT` column holds, like labels.
pub const MAX_HEALTH_STATUS_REASON_JSON_BYTES: usize = MAX_LABELS_JSON_BYTES;
/// How deep a `health_status_reason` may nest: an object whose values are scalars or
/// objects of scalars (a driver's per-node reasons).
pub const MAX_HEALTH_STATUS_REASON_DEPTH: usize = 2;

/// Checks a `health_status_reason` a client is about to store.
pub fn check_health_status_reason(reason: &Map<String, Value>) -> Result<(), ApiError> {
    fn depth(value: &Value) -> usize {
        match value {
            Value::Object(object) => 1 + object.values().map(depth).max().unwrap_or(0),
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let reason_value = Value::Object(reason.clone());
    let levels = depth(&reason_value);
    if levels > MAX_HEALTH_STATUS_REASON_DEPTH {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute health_status_reason. It is nested {levels} levels deep; at most {MAX_HEALTH_STATUS_REASON_DEPTH} are allowed."
        )));
    }
    let bytes = reason_value.to_string().len();
    if bytes > MAX_HEALTH_STATUS_REASON_JSON_BYTES {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute health_status_reason. It takes {bytes} bytes as JSON; at most {MAX_HEALTH_STATUS_REASON_JSON_BYTES} are allowed."
        )));
    }
    Ok(())
}

/// Query-string arguments in order of appearance.
pub struct QueryArguments {
    arguments: Vec<(String, String)>,
}

impl QueryArguments {
    pub fn parse(raw: Option<&str>) -> Self {
        Self {
            arguments: parse_form(raw.unwrap_or_default()),
        }
    }

    /// Upstream declares every argument; anything else is refused.
    pub fn allow_only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self
            .arguments
            .iter()
            .find(|(name, _)| !allowed.contains(&name.as_str()))
        {
            Some((name, _)) => Err(unknown_argument(name)),
            None => Ok(()),
        }
    }

    pub fn contains_nul(&self) -> bool {
        self.arguments
            .iter()
            .any(|(name, value)| name.contains('\0') || value.contains('\0'))
    }

    /// The same arguments but `name`.
    pub fn without(&self, name: &str) -> Self {
        Self {
            arguments: self
                .arguments
                .iter()
                .filter(|(key, _)| key != name)
                .cloned()
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.arguments
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A request body that must be a JSON object, with WSME's messages when it is not.
pub fn body_object(body: Option<Value>, argument: &str) -> Result<Map<String, Value>, ApiError> {
    match body {
        Some(Value::Object(object)) => Ok(object),
        None => Err(ApiError::invalid_input(
            argument,
            "None",
            "Mandatory field missing.",
        )),
        Some(other) => Err(ApiError::invalid_input(
            argument,
            &py_str(&other),
            &format!(
                "Wrong type. Expected '<class 'dict'>', got '{}'",
                python_type(&other)
            ),
        )),
    }
}

pub fn unknown_argument(name: &str) -> ApiError {
    ApiError::bad_request(format!("Unknown argument: \"{name}\""))
}

fn parse_form(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// Decodes `%XX` escapes of one path segment (`+` stays `+` in paths).
pub fn decode_path_segment(segment: &str) -> String {
    if segment.contains('%') {
        percent_decode(&segment.replace('+', "%2B"))
    } else {
        segment.to_owned()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON body of a request, checked against its media type. `None` for an empty body.
pub fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Option<Value>, ApiError> {
    let content_type = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if content_type == "application/x-www-form-urlencoded" {
        // WebOb turns a form body into arguments, which no endpoint declares.
        let text = String::from_utf8_lossy(body);
        return match parse_form(&text).first() {
            Some((name, _)) => Err(unknown_argument(name)),
            None => Ok(None),
        };
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let json_like = content_type.is_empty()
        || content_type == "application/json"
        || content_type.ends_with("+json");
    if !json_like {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Unknown mimetype: {content_type}"),
        ));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|_| ApiError::bad_request("Request is not in valid JSON format"))
}

/// Python's type name for a JSON value, as WSME puts it in messages.
pub fn python_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "<class 'NoneType'>",
        Value::Bool(_) => "<class 'bool'>",
        Value::Number(number) if number.is_f64() => "<class 'float'>",
        Value::Number(_) => "<class 'int'>",
        Value::String(_) => "<class 'str'>",
        Value::Array(_) => "<class 'list'>",
        Value::Object(_) => "<class 'dict'>",
    }
}

fn wrong_type(field: &str, value: &Value, expected: &str) -> ApiError {
    ApiError::invalid_input(
        field,
        &py_str(value),
        &format!(
            "Wrong type. Expected '{expected}', got '{}'",
            python_type(value)
        ),
    )
}

/// Upstream's lenient boolean: JSON booleans and the usual strings.
pub fn parse_bool(field: &str, value: &Value) -> Result<bool, ApiError> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        Value::Number(number) if number.as_i64() == Some(0) => Ok(false),
        Value::Number(number) if number.as_i64() == Some(1) => Ok(true),
        Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
            "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
            _ => Err(wrong_type(field, value, "<class 'bool'>")),
        },
        _ => Err(wrong_type(field, value, "<class 'bool'>")),
    }
}

/// How an attribute is typed and constrained.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Text {
        min: usize,
        max: usize,
    },
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Boolean,
    Choice(&'static [&'static str]),
    Labels,
    Uuid,
    /// Known to upstream but set by the server: refused when sent.
    ReadOnly,
    /// Known to upstream and accepted, but without effect.
    Ignored,
    /// A timestamp the server sets: checked as one, then without effect.
    Timestamp,
}

#[derive(Debug, Clone, Copy)]
pub struct Attribute {
    pub name: &'static str,
    pub kind: Kind,
    pub mandatory: bool,
}

pub const fn attribute(name: &'static str, kind: Kind) -> Attribute {
    Attribute {
        name,
        kind,
        mandatory: false,
    }
}

pub const fn mandatory(name: &'static str, kind: Kind) -> Attribute {
    Attribute {
        name,
        kind,
        mandatory: true,
    }
}

/// A checked attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Text(String),
    Integer(i64),
    Boolean(bool),
    Labels(Labels),
    Uuid(uuid::Uuid),
}

/// The attributes of one body object that were given (and not `null`).
#[derive(Debug, Default)]
pub struct Attributes {
    values: BTreeMap<&'static str, Parsed>,
}

impl Attributes {
    pub fn text(&self, name: &str) -> Option<String> {
        match self.values.get(name) {
            Some(Parsed::Text(text)) => Some(text.clone()),
            _ => None,
        }
    }

    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.values.get(name) {
            Some(Parsed::Integer(value)) => Some(*value),
            _ => None,
        }
    }

    pub fn boolean(&self, name: &str) -> Option<bool> {
        match self.values.get(name) {
            Some(Parsed::Boolean(value)) => Some(*value),
            _ => None,
        }
    }

    pub fn labels(&self, name: &str) -> Option<Labels> {
        match self.values.get(name) {
            Some(Parsed::Labels(labels)) => Some(labels.clone()),
            _ => None,
        }
    }

    pub fn uuid(&self, name: &str) -> Option<uuid::Uuid> {
        match self.values.get(name) {
            Some(Parsed::Uuid(value)) => Some(*value),
            _ => None,
        }
    }
}

/// Checks a request body object against its schema, in WSME's order: declared attributes
/// (sorted by name) first, then unknown ones. Integer attributes also take a string that
/// Python's `int()` reads (`"60"`, `" 3 "`), as WSME's JSON decoding converts them before
/// validation: python-magnumclient callers such as Horizon's magnum-ui send every value of a
/// create as a string.
pub fn parse_object(
    argument: &str,
    object: &Map<String, Value>,
    schema: &[Attribute],
) -> Result<Attributes, ApiError> {
    parse_with(argument, object, schema, Decoding::Body)
}

/// [`parse_object`] for a resource document after a JSON patch was applied to it: upstream
/// sets each attribute on the resource, where an integer must be a JSON integer (the string
/// `"3"` is refused).
pub fn parse_patched(
    argument: &str,
    object: &Map<String, Value>,
    schema: &[Attribute],
) -> Result<Attributes, ApiError> {
    parse_with(argument, object, schema, Decoding::Patched)
}

/// Where an object's values come from, which decides how strictly integers are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoding {
    /// A request body, decoded by WSME's `fromjson` (`int(value)` for integers).
    Body,
    /// Values set one by one on a resource (WSME's `validate_value`: integers only).
    Patched,
}

/// The value of a string as Python's `int()` reads it (base 10): surrounding whitespace (as
/// Python's `str.isspace` has it), an optional sign, digits with single underscores between
/// them. Only ASCII digits (Python also reads other Unicode decimal digits); `None` beyond
/// i64 or when `int()` would refuse.
fn python_int(text: &str) -> Option<i64> {
    // Python's whitespace: Unicode's, and the separators U+001C to U+001F.
    let trimmed =
        text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c));
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let bytes = digits.as_bytes();
    let well_formed = !bytes.is_empty()
        && bytes.first().is_some_and(u8::is_ascii_digit)
        && bytes.last().is_some_and(u8::is_ascii_digit)
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_digit() || *byte == b'_')
        && !digits.contains("__");
    if !well_formed {
        return None;
    }
    let plain: String = digits.chars().filter(|c| *c != '_').collect();
    let magnitude: i64 = plain.parse().ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

fn parse_with(
    argument: &str,
    object: &Map<String, Value>,
    schema: &[Attribute],
    decoding: Decoding,
) -> Result<Attributes, ApiError> {
    let mut sorted: Vec<&Attribute> = schema.iter().collect();
    sorted.sort_by_key(|attribute| attribute.name);
    let mut attributes = Attributes::default();
    for spec in sorted {
        let value = object.get(spec.name).filter(|value| !value.is_null());
        let Some(value) = value else {
            if spec.mandatory {
                return Err(ApiError::invalid_input(
                    spec.name,
                    "None",
                    "Mandatory field missing.",
                ));
            }
            continue;
        };
        if let Some(parsed) = parse_value(spec, value, decoding)? {
            attributes.values.insert(spec.name, parsed);
        }
    }
    if let Some(unknown) = object
        .keys()
        .find(|key| !schema.iter().any(|spec| spec.name == key.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "Unknown attribute for argument {argument}: {unknown}"
        )));
    }
    Ok(attributes)
}

fn parse_value(
    spec: &Attribute,
    value: &Value,
    decoding: Decoding,
) -> Result<Option<Parsed>, ApiError> {
    let field = spec.name;
    Ok(Some(match spec.kind {
        Kind::Text { min, max } => {
            let Value::String(text) = value else {
                return Err(wrong_type(field, value, "<class 'str'>"));
            };
            let length = text.chars().count();
            if length < min {
                return Err(ApiError::invalid_input(
                    field,
                    text,
                    &format!("Value should have a minimum character requirement of {min}"),
                ));
            }
            if length > max {
                return Err(ApiError::invalid_input(
                    field,
                    text,
                    &format!("Value should have a maximum character requirement of {max}"),
                ));
            }
            Parsed::Text(text.clone())
        }
        Kind::Integer { min, max } => {
            let integer = match value {
                Value::Number(number) => number.as_i64(),
                Value::String(text) if decoding == Decoding::Body => python_int(text),
                _ => None,
            };
            let Some(integer) = integer else {
                return Err(wrong_type(field, value, "<class 'int'>"));
            };
            if let Some(min) = min.filter(|min| integer < *min) {
                return Err(ApiError::invalid_input(
                    field,
                    &integer.to_string(),
                    &format!("Value should be greater or equal to {min}"),
                ));
            }
            if let Some(max) = max.filter(|max| integer > *max) {
                return Err(ApiError::invalid_input(
                    field,
                    &integer.to_string(),
                    &format!("Value should be lower or equal to {max}"),
                ));
            }
            Parsed::Integer(integer)
        }
        Kind::Boolean => Parsed::Boolean(parse_bool(field, value)?),
        Kind::Choice(choices) => {
            let Value::String(text) = value else {
                return Err(wrong_type(field, value, "<class 'str'>"));
            };
            if !choices.contains(&text.as_str()) {
                return Err(ApiError::invalid_input(
                    field,
                    text,
                    &format!("Value should be one of: {}", choices.join(", ")),
                ));
            }
            Parsed::Text(text.clone())
        }
        Kind::Labels => {
            let Value::Object(object) = value else {
                return Err(wrong_type(field, value, "<class 'dict'>"));
            };
            let labels = Labels::from_json_object(object).map_err(|error| match error {
                LabelsError::Nul => ApiError::bad_request(NUL_REFUSED),
                error if error.is_bound() => labels_beyond_bounds(field, &error),
                _ => ApiError::invalid_input(
                    field,
                    &py_str(value),
                    "Wrong type. Expected '(<class 'str'>, <class 'int'>, <class 'bool'>, <class 'float'>)'",
                ),
            })?;
            Parsed::Labels(labels)
        }
        Kind::Uuid => {
            let text = py_str(value);
            let uuid = match value {
                Value::String(text) => magnum_domain::parse_uuid_like(text),
                _ => None,
            };
            match uuid {
                Some(uuid) => Parsed::Uuid(uuid),
                None => {
                    return Err(ApiError::invalid_input(
                        field,
                        &text,
                        &format!(
                            "unable to convert to uuid. Error: Expected a uuid but received {text}."
                        ),
                    ))
                }
            }
        }
        Kind::ReadOnly => {
            return Err(ApiError::invalid_input(
                field,
                &py_str(value),
                "Cannot set read only field.",
            ))
        }
        Kind::Ignored => return Ok(None),
        Kind::Timestamp => {
            let valid = value.as_str().is_some_and(|text| {
                chrono::DateTime::parse_from_rfc3339(text).is_ok()
                    || chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
            });
            if !valid {
                return Err(ApiError::invalid_input(
                    field,
                    &py_str(value),
                    "Wrong type. Expected '<class 'datetime.datetime'>'",
                ));
            }
            return Ok(None);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: &[Attribute] = &[
        mandatory("image_id", Kind::Text { min: 1, max: 255 }),
        attribute(
            "apiserver_port",
            Kind::Integer {
                min: Some(1024),
                max: Some(65535),
            },
        ),
        attribute("tls_disabled", Kind::Boolean),
        attribute("server_type", Kind::Choice(&["vm", "bm"])),
        attribute("project_id", Kind::ReadOnly),
        attribute("labels", Kind::Labels),
    ];

    fn detail(body: Value) -> String {
        parse_object("cluster_template", body.as_object().unwrap(), SCHEMA)
            .unwrap_err()
            .detail
    }

    #[test]
    fn messages_match_wsme() {
        assert_eq!(
            detail(json!({})),
            "Invalid input for field/attribute image_id. Value: 'None'. Mandatory field missing."
        );
        assert_eq!(
            detail(json!({"image_id": "i", "apiserver_port": 80})),
            "Invalid input for field/attribute apiserver_port. Value: '80'. Value should be greater or equal to 1024"
        );
        assert_eq!(
            detail(json!({"image_id": "i", "server_type": "container"})),
            "Invalid input for field/attribute server_type. Value: 'container'. Value should be one of: vm, bm"
        );
        assert_eq!(
            detail(json!({"image_id": "i", "bogus": 1})),
            "Unknown attribute for argument cluster_template: bogus"
        );
        assert_eq!(
            detail(json!({"image_id": "i", "project_id": "p"})),
            "Invalid input for field/attribute project_id. Value: 'p'. Cannot set read only field."
        );
        assert_eq!(
            detail(json!({"image_id": "i", "tls_disabled": "maybe"})),
            "Invalid input for field/attribute tls_disabled. Value: 'maybe'. Wrong type. Expected '<class 'bool'>', got '<class 'str'>'"
        );
        assert_eq!(
            detail(json!({"image_id": ""})),
            "Invalid input for field/attribute image_id. Value: ''. Value should have a minimum character requirement of 1"
        );
        assert_eq!(
            detail(json!({"image_id": "i", "apiserver_port": "port"})),
            "Invalid input for field/attribute apiserver_port. Value: 'port'. Wrong type. Expected '<class 'int'>', got '<class 'str'>'"
        );
    }

    /// What Horizon's magnum-ui sends (python-magnumclient with every value `str()`-ed):
    /// a body's integers as strings are read as Python's `int()` reads them; a patched
    /// document's are refused, as upstream refuses them there.
    #[test]
    fn integers_as_strings_are_read_in_bodies_only() {
        let body = json!({"image_id": "i", "apiserver_port": " 6443 "});
        let parsed = parse_object("cluster_template", body.as_object().unwrap(), SCHEMA).unwrap();
        assert_eq!(parsed.integer("apiserver_port"), Some(6443));
        assert_eq!(
            parse_patched("cluster_template", body.as_object().unwrap(), SCHEMA)
                .unwrap_err()
                .detail,
            "Invalid input for field/attribute apiserver_port. Value: ' 6443 '. Wrong type. Expected '<class 'int'>', got '<class 'str'>'"
        );
        // The bounds apply to the number read.
        assert_eq!(
            detail(json!({"image_id": "i", "apiserver_port": "80"})),
            "Invalid input for field/attribute apiserver_port. Value: '80'. Value should be greater or equal to 1024"
        );
        for (text, read) in [
            ("60", Some(60)),
            ("+7", Some(7)),
            ("-3", Some(-3)),
            ("1_024", Some(1024)),
            ("\t12\n", Some(12)),
            ("\u{1f}\u{3000}8 ", Some(8)),
            ("", None),
            ("1.5", None),
            ("0x10", None),
            ("1__0", None),
            ("_1", None),
            ("1_", None),
            ("--1", None),
            ("99999999999999999999", None),
        ] {
            assert_eq!(python_int(text), read, "{text:?}");
        }
    }

    #[test]
    fn labels_beyond_their_bounds_are_refused_in_wsme_words() {
        let many: Map<String, Value> = (0..129)
            .map(|index| (format!("k{index}"), json!("v")))
            .collect();
        assert_eq!(
            detail(json!({"image_id": "i", "labels": many})),
            "Invalid input for field/attribute labels. There are 129 labels; at most 128 are allowed."
        );
        assert_eq!(
            detail(json!({"image_id": "i", "labels": {"k": "v".repeat(4097)}})),
            "Invalid input for field/attribute labels. The value of label 'k' has 4097 characters; at most 4096 are allowed."
        );
        assert_eq!(
            detail(json!({"image_id": "i", "labels": {"k": {"nested": 1}}})),
            "Invalid input for field/attribute labels. Value: '{'k': {'nested': 1}}'. Wrong type. Expected '(<class 'str'>, <class 'int'>, <class 'bool'>, <class 'float'>)'"
        );
        assert_eq!(
            detail(json!({"image_id": "i", "labels": {"k": "a\u{0}"}})),
            NUL_REFUSED
        );
    }

    #[test]
    fn health_status_reasons_are_bounded_in_size_and_depth() {
        let flat = json!({"api": "ok", "node-0.Ready": "True"});
        assert!(check_health_status_reason(flat.as_object().unwrap()).is_ok());
        let per_node = json!({"api": "ok", "nodes": {"node-0": "Ready"}});
        assert!(check_health_status_reason(per_node.as_object().unwrap()).is_ok());
        let deep = json!({"a": {"b": {"c": "d"}}});
        assert_eq!(
            check_health_status_reason(deep.as_object().unwrap()).unwrap_err().detail,
            "Invalid input for field/attribute health_status_reason. It is nested 3 levels deep; at most 2 are allowed."
        );
        let large = json!({"api": "x".repeat(MAX_HEALTH_STATUS_REASON_JSON_BYTES)});
        let refused = check_health_status_reason(large.as_object().unwrap()).unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(
            refused
                .detail
                .ends_with("bytes as JSON; at most 65535 are allowed."),
            "{}",
            refused.detail
        );
    }

    #[test]
    fn nulls_are_absent_and_strings_are_booleans() {
        let parsed = parse_object(
            "cluster_template",
            json!({"image_id": "i", "tls_disabled": "TRUE", "apiserver_port": null})
                .as_object()
                .unwrap(),
            SCHEMA,
        )
        .unwrap();
        assert_eq!(parsed.boolean("tls_disabled"), Some(true));
        assert_eq!(parsed.integer("apiserver_port"), None);
    }

    #[test]
    fn query_arguments_decode_and_refuse_unknown_names() {
        let query = QueryArguments::parse(Some("limit=1&sort_key=name&marker=a%2Db+c"));
        assert_eq!(query.get("marker"), Some("a-b c"));
        assert!(query.allow_only(&["limit", "sort_key", "marker"]).is_ok());
        assert_eq!(
            query.allow_only(&["limit"]).unwrap_err().detail,
            "Unknown argument: \"sort_key\""
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(decode_path_segment("my%20template+1"), "my template+1");
        assert_eq!(decode_path_segment("plain+name"), "plain+name");
    }
}
