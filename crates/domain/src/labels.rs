use serde_json::{Map, Value};

use crate::contains_nul;
use crate::pyliteral::{literal_eval, py_str};

/// At most this many labels on one template, cluster or nodegroup (and node labels on one
/// nodegroup). Upstream has no bound but its column (see [`MAX_LABELS_JSON_BYTES`]); its
/// documented labels number about 90.
pub const MAX_LABELS: usize = 128;
/// The longest label key, in characters: upstream's usual string column width.
pub const MAX_LABEL_KEY_CHARS: usize = 255;
/// The longest label value, in characters.
pub const MAX_LABEL_VALUE_CHARS: usize = 4096;
/// The labels of one resource as stored JSON, in bytes: what upstream's MySQL `TEXT` column
/// holds.
pub const MAX_LABELS_JSON_BYTES: usize = 65_535;

/// Labels as Magnum stores them: an insertion-ordered map whose values are always strings
/// (upstream persists `str(value)`, so `1` becomes `"1"` and `true` becomes `"True"`).
/// Labels from a client are within the bounds above and hold no NUL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(Map<String, Value>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    #[error("label {key} has a value of an unsupported type")]
    UnsupportedValue { key: String },
    #[error("{0}")]
    Unparsable(String),
    /// A NUL character, possibly from an escape (`\x00`, `\0`, `\u0000`) decoded after the
    /// request's own NUL check.
    #[error("a label holds a NUL character")]
    Nul,
    #[error("There are {count} labels; at most {MAX_LABELS} are allowed.")]
    TooMany { count: usize },
    #[error(
        "The label key '{key}' has {length} characters; at most {MAX_LABEL_KEY_CHARS} are allowed."
    )]
    KeyTooLong { key: String, length: usize },
    #[error("The value of label '{key}' has {length} characters; at most {MAX_LABEL_VALUE_CHARS} are allowed.")]
    ValueTooLong { key: String, length: usize },
    #[error("The labels take {bytes} bytes as JSON; at most {MAX_LABELS_JSON_BYTES} are allowed.")]
    TooLarge { bytes: usize },
}

impl LabelsError {
    /// Whether the labels break one of the bounds (rather than being malformed).
    pub fn is_bound(&self) -> bool {
        matches!(
            self,
            Self::TooMany { .. }
                | Self::KeyTooLong { .. }
                | Self::ValueTooLong { .. }
                | Self::TooLarge { .. }
        )
    }
}

/// A key as quoted in messages: long keys are cut, so that a refusal stays short.
fn quoted_key(key: &str) -> String {
    const SHOWN: usize = 64;
    if key.chars().count() > SHOWN {
        format!("{}...", key.chars().take(SHOWN).collect::<String>())
    } else {
        key.to_owned()
    }
}

/// Checks a string-valued map against the label bounds.
pub fn check_label_bounds(labels: &Map<String, Value>) -> Result<(), LabelsError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelsError::TooMany {
            count: labels.len(),
        });
    }
    for (key, value) in labels {
        let length = key.chars().count();
        if length > MAX_LABEL_KEY_CHARS {
            return Err(LabelsError::KeyTooLong {
                key: quoted_key(key),
                length,
            });
        }
        let length = value.as_str().map_or(0, |value| value.chars().count());
        if length > MAX_LABEL_VALUE_CHARS {
            return Err(LabelsError::ValueTooLong {
                key: quoted_key(key),
                length,
            });
        }
    }
    let bytes = serde_json::to_string(labels).map_or(0, |text| text.len());
    if bytes > MAX_LABELS_JSON_BYTES {
        return Err(LabelsError::TooLarge { bytes });
    }
    Ok(())
}

/// A JSON object as upstream stores a dictionary attribute: values that are strings,
/// numbers or booleans become `str(value)`; a NUL anywhere is refused. No bounds.
pub fn string_map(object: &Map<String, Value>) -> Result<Map<String, Value>, LabelsError> {
    let mut map = Map::new();
    for (key, value) in object {
        match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                map.insert(key.clone(), Value::String(py_str(value)));
            }
            _ => return Err(LabelsError::UnsupportedValue { key: key.clone() }),
        }
    }
    if contains_nul(&Value::Object(map.clone())) {
        return Err(LabelsError::Nul);
    }
    Ok(map)
}

/// The string a JSON-patch `replace` of a dictionary attribute (`/labels`, `/node_labels`,
/// `/health_status_reason`) carries, decoded into a [`string_map`]. Upstream accepts only a
/// Python literal (`"{'a': 'b'}"`); a JSON object string and terraform's `"k1=v1,k2=v2"`
/// are accepted too, since the clients that send them otherwise cannot update labels at all.
/// NUL is refused after decoding, whatever escape produced it. No bounds: each attribute
/// has its own.
pub fn decode_patch_string(text: &str) -> Result<Map<String, Value>, LabelsError> {
    let python = literal_eval(text);
    let object = match python {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err(LabelsError::Unparsable(
                "labels must be a dictionary".to_owned(),
            ))
        }
        Err(python_error) => {
            if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) {
                object
            } else if let Some(object) = parse_key_value_list(text) {
                object
            } else {
                return Err(LabelsError::Unparsable(python_error.to_string()));
            }
        }
    };
    string_map(&object)
}

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// From a JSON object whose values are strings, integers, floats or booleans; within
    /// the bounds, without NUL.
    pub fn from_json_object(object: &Map<String, Value>) -> Result<Self, LabelsError> {
        // The count first: a huge object is refused before anything is copied.
        if object.len() > MAX_LABELS {
            return Err(LabelsError::TooMany {
                count: object.len(),
            });
        }
        let labels = string_map(object)?;
        check_label_bounds(&labels)?;
        Ok(Self(labels))
    }

    /// From the string a JSON-patch `replace /labels` carries ([`decode_patch_string`]),
    /// within the bounds.
    pub fn from_patch_string(text: &str) -> Result<Self, LabelsError> {
        let labels = decode_patch_string(text)?;
        check_label_bounds(&labels)?;
        Ok(Self(labels))
    }

    pub fn from_stored_json(text: &str) -> Self {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => Self(object),
            _ => Self::default(),
        }
    }

    pub fn to_stored_json(&self) -> String {
        serde_json::to_string(&self.0).expect("labels are plain strings")
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn insert(&mut self, key: &str, value: &str) {
        self.0
            .insert(key.to_owned(), Value::String(value.to_owned()));
    }

    /// The labels a child (cluster or nodegroup) gets from its parent (template or cluster):
    /// absent or empty given labels inherit the parent's; with `merge`, the given ones are
    /// laid over the parent's (and the result must be within the bounds); otherwise the given
    /// ones replace them.
    pub fn inherit(
        parent: &Labels,
        given: Option<Labels>,
        merge: bool,
    ) -> Result<Labels, LabelsError> {
        match given {
            None => Ok(parent.clone()),
            Some(given) if given.is_empty() => Ok(parent.clone()),
            Some(given) if merge => {
                let mut merged = parent.clone();
                for (key, value) in given.0 {
                    merged.0.insert(key, value);
                }
                check_label_bounds(&merged.0)?;
                Ok(merged)
            }
            Some(given) => Ok(given),
        }
    }
}

/// How a child's labels differ from its parent's, as upstream reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelDifferences {
    /// In both with different values: the parent's value.
    pub overridden: Map<String, Value>,
    /// Only in the child: the child's value.
    pub added: Map<String, Value>,
    /// Only in the parent: the parent's value.
    pub skipped: Map<String, Value>,
}

impl LabelDifferences {
    pub fn between(parent: &Labels, child: &Labels) -> Self {
        let mut differences = Self::default();
        for (key, value) in &child.0 {
            match parent.0.get(key) {
                Some(parent_value) if parent_value != value => {
                    differences
                        .overridden
                        .insert(key.clone(), parent_value.clone());
                }
                Some(_) => {}
                None => {
                    differences.added.insert(key.clone(), value.clone());
                }
            }
        }
        for (key, value) in &parent.0 {
            if !child.0.contains_key(key) {
                differences.skipped.insert(key.clone(), value.clone());
            }
        }
        differences
    }
}

/// Terraform's `k1=v1,k2=v2`; anything that looks like a literal, or has quotes or brackets,
/// is not such a list.
fn parse_key_value_list(text: &str) -> Option<Map<String, Value>> {
    if text.contains(['{', '}', '[', ']', '(', ')', '\'', '"']) {
        return None;
    }
    let mut object = Map::new();
    for pair in text.split(',') {
        let (key, value) = pair.split_once('=')?;
        let key = key.trim();
        if key.is_empty() {
            return None;
        }
        object.insert(key.to_owned(), Value::String(value.trim().to_owned()));
    }
    Some(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_stored_as_python_strings() {
        let object = json!({"a": 1, "b": true, "c": 1.5, "d": "x"});
        let labels = Labels::from_json_object(object.as_object().unwrap()).unwrap();
        assert_eq!(
            Value::Object(labels.as_map().clone()),
            json!({"a": "1", "b": "True", "c": "1.5", "d": "x"})
        );
    }

    #[test]
    fn patch_strings_in_every_accepted_form() {
        let python = Labels::from_patch_string("{'a': 'b', 'n': 1, 't': True}").unwrap();
        assert_eq!(
            Value::Object(python.as_map().clone()),
            json!({"a": "b", "n": "1", "t": "True"})
        );
        let json_form = Labels::from_patch_string(r#"{"a": "b", "t": true}"#).unwrap();
        assert_eq!(
            Value::Object(json_form.as_map().clone()),
            json!({"a": "b", "t": "True"})
        );
        let terraform = Labels::from_patch_string("a=b,c=d").unwrap();
        assert_eq!(
            Value::Object(terraform.as_map().clone()),
            json!({"a": "b", "c": "d"})
        );
        assert_eq!(
            Labels::from_patch_string("not a dict")
                .unwrap_err()
                .to_string(),
            "invalid syntax (<unknown>, line 1)"
        );
        assert!(Labels::from_json_object(json!({"a": {"b": 1}}).as_object().unwrap()).is_err());
    }

    #[test]
    fn nul_is_refused_after_decoding_whatever_escape_made_it() {
        for text in [
            r"{'k': 'a\x00b'}",
            r"{'k': 'a\0b'}",
            r"{'k': 'a\u0000b'}",
            r"{'k': 'a\U00000000b'}",
            r"{'k\000': 'v'}",
            r#"{"k": "a\u0000b"}"#,
        ] {
            assert_eq!(
                decode_patch_string(text).unwrap_err(),
                LabelsError::Nul,
                "{text}"
            );
            assert_eq!(
                Labels::from_patch_string(text).unwrap_err(),
                LabelsError::Nul,
                "{text}"
            );
        }
        assert_eq!(
            Labels::from_json_object(json!({"k": "a\u{0}"}).as_object().unwrap()).unwrap_err(),
            LabelsError::Nul
        );
        assert!(decode_patch_string(r"{'k': '\N{NULL}'}")
            .unwrap_err()
            .to_string()
            .ends_with("unknown Unicode character name (<unknown>, line 1)"));
        assert_eq!(
            Value::Object(decode_patch_string(r"{'k': 'a\tb', 'n': 1}").unwrap()),
            json!({"k": "a\tb", "n": "1"})
        );
    }

    #[test]
    fn labels_from_clients_stay_within_the_bounds() {
        let many: Map<String, Value> = (0..=MAX_LABELS)
            .map(|index| (format!("k{index}"), json!("v")))
            .collect();
        assert_eq!(
            Labels::from_json_object(&many).unwrap_err().to_string(),
            "There are 129 labels; at most 128 are allowed."
        );
        let at_most: Map<String, Value> = many.clone().into_iter().take(MAX_LABELS).collect();
        assert!(Labels::from_json_object(&at_most).is_ok());
        let long_key = "k".repeat(MAX_LABEL_KEY_CHARS + 1);
        assert_eq!(
            Labels::from_json_object(json!({long_key.clone(): "v"}).as_object().unwrap())
                .unwrap_err()
                .to_string(),
            format!(
                "The label key '{}...' has 256 characters; at most 255 are allowed.",
                "k".repeat(64)
            )
        );
        let key = "é".repeat(MAX_LABEL_KEY_CHARS);
        assert!(
            Labels::from_json_object(json!({key: "v"}).as_object().unwrap()).is_ok(),
            "characters, not bytes"
        );
        let long_value = "v".repeat(MAX_LABEL_VALUE_CHARS + 1);
        assert_eq!(
            Labels::from_json_object(json!({"k": long_value}).as_object().unwrap())
                .unwrap_err()
                .to_string(),
            "The value of label 'k' has 4097 characters; at most 4096 are allowed."
        );
        let large: Map<String, Value> = (0..20)
            .map(|index| {
                (
                    format!("k{index}"),
                    json!("v".repeat(MAX_LABEL_VALUE_CHARS)),
                )
            })
            .collect();
        let refused = Labels::from_json_object(&large).unwrap_err();
        assert!(
            matches!(refused, LabelsError::TooLarge { bytes } if bytes > MAX_LABELS_JSON_BYTES)
        );
        assert!(refused.is_bound());
        assert!(matches!(
            Labels::from_patch_string(&format!("{{'k': '{}'}}", "v".repeat(5000))),
            Err(LabelsError::ValueTooLong { length: 5000, .. })
        ));
        assert_eq!(
            decode_patch_string(&format!("{{'k': '{}'}}", "v".repeat(5000)))
                .unwrap()
                .len(),
            1,
            "decoding alone does not bound: each attribute has its own bounds"
        );

        // Merged labels are bounded too: the parent's plus the given ones.
        let parent: Map<String, Value> = (0..100)
            .map(|index| (format!("p{index}"), json!("v")))
            .collect();
        let given: Map<String, Value> = (0..100)
            .map(|index| (format!("g{index}"), json!("v")))
            .collect();
        let parent = Labels::from_json_object(&parent).unwrap();
        let given = Labels::from_json_object(&given).unwrap();
        assert_eq!(
            Labels::inherit(&parent, Some(given.clone()), true).unwrap_err(),
            LabelsError::TooMany { count: 200 }
        );
        assert_eq!(
            Labels::inherit(&parent, Some(given.clone()), false).unwrap(),
            given
        );
    }

    fn labels(value: Value) -> Labels {
        Labels::from_json_object(value.as_object().unwrap()).unwrap()
    }

    #[test]
    fn children_inherit_merge_or_replace_and_differences_name_the_parent_value() {
        let parent = labels(json!({"kube_tag": "v1", "foo": "bar"}));
        assert_eq!(Labels::inherit(&parent, None, false).unwrap(), parent);
        assert_eq!(
            Labels::inherit(&parent, Some(Labels::new()), false).unwrap(),
            parent
        );
        let given = labels(json!({"kube_tag": "v2", "extra": "x"}));
        assert_eq!(
            Labels::inherit(&parent, Some(given.clone()), false).unwrap(),
            given.clone()
        );
        let merged = Labels::inherit(&parent, Some(given), true).unwrap();
        assert_eq!(
            Value::Object(merged.as_map().clone()),
            json!({"kube_tag": "v2", "foo": "bar", "extra": "x"})
        );
        let child = labels(json!({"kube_tag": "v2", "extra": "x"}));
        let differences = LabelDifferences::between(&parent, &child);
        assert_eq!(
            Value::Object(differences.overridden),
            json!({"kube_tag": "v1"})
        );
        assert_eq!(Value::Object(differences.added), json!({"extra": "x"}));
        assert_eq!(Value::Object(differences.skipped), json!({"foo": "bar"}));
    }
}
