use serde_json::{Map, Value};

use crate::pyliteral::{literal_eval, py_str};

/// Labels as Magnum stores them: an insertion-ordered map whose values are always strings
/// (upstream persists `str(value)`, so `1` becomes `"1"` and `true` becomes `"True"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(Map<String, Value>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    #[error("label {key} has a value of an unsupported type")]
    UnsupportedValue { key: String },
    #[error("{0}")]
    Unparsable(String),
}

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// From a JSON object whose values are strings, integers, floats or booleans.
    pub fn from_json_object(object: &Map<String, Value>) -> Result<Self, LabelsError> {
        let mut labels = Map::new();
        for (key, value) in object {
            match value {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    labels.insert(key.clone(), Value::String(py_str(value)));
                }
                _ => return Err(LabelsError::UnsupportedValue { key: key.clone() }),
            }
        }
        Ok(Self(labels))
    }

    /// From the string a JSON-patch `replace /labels` carries. Upstream accepts only a Python
    /// literal (`"{'a': 'b'}"`); a JSON object string and terraform's `"k1=v1,k2=v2"` are
    /// accepted too, since the clients that send them otherwise cannot update labels at all.
    pub fn from_patch_string(text: &str) -> Result<Self, LabelsError> {
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
        Self::from_json_object(&object)
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
    /// laid over the parent's; otherwise the given ones replace them.
    pub fn inherit(parent: &Labels, given: Option<Labels>, merge: bool) -> Labels {
        match given {
            None => parent.clone(),
            Some(given) if given.is_empty() => parent.clone(),
            Some(given) if merge => {
                let mut merged = parent.clone();
                for (key, value) in given.0 {
                    merged.0.insert(key, value);
                }
                merged
            }
            Some(given) => given,
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

    fn labels(value: Value) -> Labels {
        Labels::from_json_object(value.as_object().unwrap()).unwrap()
    }

    #[test]
    fn children_inherit_merge_or_replace_and_differences_name_the_parent_value() {
        let parent = labels(json!({"kube_tag": "v1", "foo": "bar"}));
        assert_eq!(Labels::inherit(&parent, None, false), parent);
        assert_eq!(Labels::inherit(&parent, Some(Labels::new()), false), parent);
        let given = labels(json!({"kube_tag": "v2", "extra": "x"}));
        assert_eq!(
            Labels::inherit(&parent, Some(given.clone()), false),
            given.clone()
        );
        let merged = Labels::inherit(&parent, Some(given), true);
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
