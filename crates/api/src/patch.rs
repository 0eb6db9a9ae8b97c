//! JSON-patch (RFC 6902) as upstream Magnum applies it: only `add`, `replace` and `remove`;
//! values restricted to strings, integers and booleans; `add` refused on set or unknown
//! root attributes; dictionary attributes replaced from a Python-literal string.

use magnum_domain::labels::{decode_patch_string, LabelsError};
use magnum_domain::pyliteral::{py_repr, py_str};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::input::{python_type, NUL_REFUSED};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Add,
    Replace,
    Remove,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Add => "add",
            Operation::Replace => "replace",
            Operation::Remove => "remove",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PatchOperation {
    pub op: Operation,
    pub path: String,
    pub value: Option<Value>,
}

/// What a resource allows to be patched.
pub struct PatchRules {
    /// Paths that can never be patched.
    pub internal: &'static [&'static str],
    /// Paths that cannot be removed.
    pub non_removable: &'static [&'static str],
    /// Dictionary attributes whose `replace` value is a Python-literal string.
    pub dictionaries: &'static [&'static str],
}

fn path_is_valid(path: &str) -> bool {
    path.starts_with('/')
        && path[1..].split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        })
}

/// Checks the body of a PATCH; this precedes looking up the resource.
pub fn parse_patch(
    body: Option<Value>,
    rules: &PatchRules,
) -> Result<Vec<PatchOperation>, ApiError> {
    let Some(body) = body else {
        return Err(ApiError::invalid_input(
            "patch",
            "None",
            "Mandatory field missing.",
        ));
    };
    let Value::Array(items) = body else {
        let text = py_str(&body);
        return Err(ApiError::invalid_input(
            "patch",
            &text,
            &format!("Value not a valid list: {text}"),
        ));
    };
    items
        .into_iter()
        .map(|item| parse_operation(item, rules))
        .collect()
}

fn parse_operation(item: Value, rules: &PatchRules) -> Result<PatchOperation, ApiError> {
    let Value::Object(mut object) = item else {
        return Err(ApiError::invalid_input(
            "patch",
            &py_str(&item),
            &format!(
                "Wrong type. Expected '<class 'dict'>', got '{}'",
                python_type(&item)
            ),
        ));
    };
    let op = match object.get("op") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_input(
                "op",
                "None",
                "Mandatory field missing.",
            ))
        }
        Some(Value::String(op)) if op == "add" => Operation::Add,
        Some(Value::String(op)) if op == "replace" => Operation::Replace,
        Some(Value::String(op)) if op == "remove" => Operation::Remove,
        Some(other) => {
            return Err(ApiError::invalid_input(
                "op",
                &py_str(other),
                "Value should be one of: remove, add, replace",
            ))
        }
    };
    let path = match object.get("path") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_input(
                "path",
                "None",
                "Mandatory field missing.",
            ))
        }
        Some(Value::String(path)) if path_is_valid(path) => path.clone(),
        Some(other) => {
            return Err(ApiError::invalid_input(
                "path",
                &py_str(other),
                "Value should match the pattern ^(/[\\w-]+)+$",
            ))
        }
    };
    let value = match object.remove("value") {
        None | Some(Value::Null) => None,
        Some(value @ (Value::String(_) | Value::Bool(_))) => Some(value),
        Some(Value::Number(number)) if !number.is_f64() => Some(Value::Number(number)),
        Some(other) => {
            return Err(ApiError::invalid_input(
                "value",
                &py_str(&other),
                &format!(
                    "Wrong type. Expected '(<class 'str'>, <class 'int'>)', got '{}'",
                    python_type(&other)
                ),
            ))
        }
    };
    if let Some(unknown) = object
        .keys()
        .find(|key| !matches!(key.as_str(), "op" | "path" | "value"))
    {
        return Err(ApiError::bad_request(format!(
            "Unknown attribute for argument patch: {unknown}"
        )));
    }
    if rules.internal.contains(&path.as_str()) {
        return Err(ApiError::bad_request(format!(
            "'{path}' is an internal attribute and can not be updated"
        )));
    }
    if op == Operation::Remove && rules.non_removable.contains(&path.as_str()) {
        return Err(ApiError::bad_request(format!(
            "'{path}' is a mandatory attribute and can not be removed"
        )));
    }
    if op != Operation::Remove && value.is_none() {
        return Err(ApiError::bad_request(
            "'add' and 'replace' operations needs value",
        ));
    }
    Ok(PatchOperation { op, path, value })
}

/// Upstream's rendering of the patch in `Couldn't apply patch` messages.
fn patch_repr(operations: &[PatchOperation]) -> String {
    let items: Vec<String> = operations
        .iter()
        .map(|operation| {
            let mut item = format!(
                "{{'path': {}, 'op': '{}'",
                py_repr(&Value::String(operation.path.clone())),
                operation.op.as_str()
            );
            if let Some(value) = &operation.value {
                item.push_str(&format!(", 'value': {}", py_repr(value)));
            }
            item.push('}');
            item
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn patch_error(operations: &[PatchOperation], reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "Couldn't apply patch '{}'. Reason: {reason}",
        patch_repr(operations)
    ))
}

/// Applies the operations, in order, to `document` (the resource's attributes).
pub fn apply_patch(
    document: &mut Map<String, Value>,
    operations: &[PatchOperation],
    rules: &PatchRules,
) -> Result<(), ApiError> {
    for operation in operations {
        let segments: Vec<&str> = operation.path[1..].split('/').collect();
        if operation.op == Operation::Add && segments.len() == 1 {
            match document.get(segments[0]) {
                None => {
                    return Err(ApiError::bad_request(format!(
                        "Adding a new attribute {} to the root of the resource is not allowed.",
                        operation.path
                    )))
                }
                Some(existing) if !existing.is_null() => {
                    return Err(ApiError::bad_request(format!(
                        "The attribute {} has existed, please use 'replace' operation instead.",
                        operation.path
                    )))
                }
                Some(_) => {}
            }
        }
        let mut value = operation.value.clone();
        if operation.op == Operation::Replace
            && rules.dictionaries.contains(&operation.path.as_str())
        {
            if let Some(Value::String(text)) = &value {
                // Decoding can make a NUL out of an escape the request's own check never
                // saw; each attribute's bounds are checked by its resource.
                let decoded = decode_patch_string(text).map_err(|error| match error {
                    LabelsError::Nul => ApiError::bad_request(NUL_REFUSED),
                    other => patch_error(operations, other),
                })?;
                value = Some(Value::Object(decoded));
            }
        }
        apply_one(document, &segments, operation.op, value)
            .map_err(|reason| patch_error(operations, reason))?;
    }
    Ok(())
}

fn apply_one(
    document: &mut Map<String, Value>,
    segments: &[&str],
    op: Operation,
    value: Option<Value>,
) -> Result<(), String> {
    let (last, parents) = segments.split_last().expect("paths have a segment");
    let mut target = document;
    for segment in parents {
        target = match target.get_mut(*segment) {
            Some(Value::Object(inner)) => inner,
            Some(other) => {
                return Err(format!(
                    "member '{segment}' of {} is not a dictionary",
                    py_repr(other)
                ))
            }
            None => return Err(format!("member '{segment}' not found")),
        };
    }
    match op {
        Operation::Add => {
            target.insert((*last).to_owned(), value.unwrap_or(Value::Null));
        }
        Operation::Replace => {
            if !target.contains_key(*last) {
                return Err(format!("can't replace a non-existent object '{last}'"));
            }
            target.insert((*last).to_owned(), value.unwrap_or(Value::Null));
        }
        Operation::Remove => {
            if target.shift_remove(*last).is_none() {
                return Err(format!("can't remove a non-existent object '{last}'"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RULES: PatchRules = PatchRules {
        internal: &["/uuid"],
        non_removable: &["/image_id"],
        dictionaries: &["/labels"],
    };

    fn detail(body: Value) -> String {
        parse_patch(Some(body), &RULES).unwrap_err().detail
    }

    fn apply(document: Value, body: Value) -> Result<Value, String> {
        let operations = parse_patch(Some(body), &RULES).map_err(|e| e.detail)?;
        let mut document = document.as_object().unwrap().clone();
        apply_patch(&mut document, &operations, &RULES).map_err(|e| e.detail)?;
        Ok(Value::Object(document))
    }

    #[test]
    fn body_validation_messages() {
        assert_eq!(
            detail(json!({"op": "replace", "path": "/name", "value": "x"})),
            "Invalid input for field/attribute patch. Value: '{'op': 'replace', 'path': '/name', 'value': 'x'}'. Value not a valid list: {'op': 'replace', 'path': '/name', 'value': 'x'}"
        );
        assert_eq!(
            detail(json!([{"op": "move", "path": "/name", "value": "x"}])),
            "Invalid input for field/attribute op. Value: 'move'. Value should be one of: remove, add, replace"
        );
        assert_eq!(
            detail(json!([{"op": "replace", "path": "/labels", "value": {"x": "z"}}])),
            "Invalid input for field/attribute value. Value: '{'x': 'z'}'. Wrong type. Expected '(<class 'str'>, <class 'int'>)', got '<class 'dict'>'"
        );
        assert_eq!(
            detail(json!([{"op": "replace", "path": "/uuid", "value": "x"}])),
            "'/uuid' is an internal attribute and can not be updated"
        );
        assert_eq!(
            detail(json!([{"op": "remove", "path": "/image_id"}])),
            "'/image_id' is a mandatory attribute and can not be removed"
        );
        assert_eq!(
            detail(json!([{"op": "replace", "path": "/name"}])),
            "'add' and 'replace' operations needs value"
        );
        assert_eq!(
            detail(json!([{"op": "replace", "path": "name", "value": "x"}])),
            "Invalid input for field/attribute path. Value: 'name'. Value should match the pattern ^(/[\\w-]+)+$"
        );
    }

    #[test]
    fn nul_made_by_decoding_is_refused_like_a_nul_in_the_request() {
        let document = json!({"labels": {"k": "v"}, "name": "a"});
        for escaped in ["\\x00", "\\0", "\\u0000", "\\U00000000", "\\000"] {
            let value = format!("{{'k': 'a{escaped}b'}}");
            assert!(!value.contains('\0'), "the request itself holds no NUL");
            assert_eq!(
                apply(
                    document.clone(),
                    json!([{"op": "replace", "path": "/labels", "value": value}])
                )
                .unwrap_err(),
                NUL_REFUSED,
                "{escaped}"
            );
        }
        assert_eq!(
            apply(
                document.clone(),
                json!([{"op": "replace", "path": "/labels", "value": "{\"k\": \"\\u0000\"}"}])
            )
            .unwrap_err(),
            NUL_REFUSED,
            "a JSON-object string decodes too"
        );
    }

    #[test]
    fn application_follows_upstream() {
        let document =
            json!({"name": "a", "flavor_id": null, "labels": {"k": "v"}, "http_proxy": "p"});
        assert_eq!(
            apply(
                document.clone(),
                json!([{"op": "add", "path": "/flavor_id", "value": "f"}])
            )
            .unwrap()["flavor_id"],
            json!("f")
        );
        assert_eq!(
            apply(
                document.clone(),
                json!([{"op": "add", "path": "/name", "value": "x"}])
            )
            .unwrap_err(),
            "The attribute /name has existed, please use 'replace' operation instead."
        );
        assert_eq!(
            apply(
                document.clone(),
                json!([{"op": "add", "path": "/bogus", "value": "x"}])
            )
            .unwrap_err(),
            "Adding a new attribute /bogus to the root of the resource is not allowed."
        );
        assert_eq!(
            apply(
                document.clone(),
                json!([{"op": "add", "path": "/labels/n", "value": "1"}])
            )
            .unwrap()["labels"],
            json!({"k": "v", "n": "1"})
        );
        assert_eq!(
            apply(
                document.clone(),
                json!([{"op": "remove", "path": "/labels/k"}])
            )
            .unwrap()["labels"],
            json!({})
        );
        assert_eq!(
            apply(document.clone(), json!([{"op": "replace", "path": "/labels", "value": "{'a': 'b', 'n': 1, 't': True}"}])).unwrap()["labels"],
            json!({"a": "b", "n": "1", "t": "True"})
        );
        assert_eq!(
            apply(document.clone(), json!([{"op": "remove", "path": "/nonexistent"}])).unwrap_err(),
            "Couldn't apply patch '[{'path': '/nonexistent', 'op': 'remove'}]'. Reason: can't remove a non-existent object 'nonexistent'"
        );
        assert_eq!(
            apply(document.clone(), json!([{"op": "replace", "path": "/labels", "value": "{oops"}])).unwrap_err(),
            "Couldn't apply patch '[{'path': '/labels', 'op': 'replace', 'value': '{oops'}]'. Reason: invalid syntax (<unknown>, line 1)"
        );
        assert_eq!(
            apply(document.clone(), json!([{"op": "replace", "path": "/labels", "value": "{'k': '\\N{BOGUS}'}"}])).unwrap_err(),
            "Couldn't apply patch '[{'path': '/labels', 'op': 'replace', 'value': \"{'k': '\\\\N{BOGUS}'}\"}]'. Reason: (unicode error) 'unicodeescape' codec can't decode bytes in position 0-8: unknown Unicode character name (<unknown>, line 1)"
        );
        assert!(apply(
            document.clone(),
            json!([{"op": "remove", "path": "/http_proxy"}])
        )
        .unwrap()
        .get("http_proxy")
        .is_none());
    }
}
