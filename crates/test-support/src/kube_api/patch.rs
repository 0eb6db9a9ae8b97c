//! The two non-apply patch formats kube-apiserver takes for every type.

use serde_json::{Map, Value};

use super::status::ApiError;

/// RFC 7386 JSON merge patch (also how the stand-in reads a strategic merge patch: lists
/// are replaced, `$patch` directives are not understood).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch_fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let fields = target.as_object_mut().expect("made an object above");
    for (name, value) in patch_fields {
        if name.starts_with("$") {
            continue;
        }
        if value.is_null() {
            fields.remove(name);
        } else {
            merge_patch(fields.entry(name.clone()).or_insert(Value::Null), value);
        }
    }
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
pub fn json_patch(document: &Value, operations: &Value) -> Result<Value, ApiError> {
    let invalid = |message: String| ApiError::new(422, "Invalid", message);
    let mut document = document.clone();
    let operations = operations
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch is an array of operations"))?;
    for operation in operations {
        let op = operation.get("op").and_then(Value::as_str).unwrap_or("");
        let path = operation.get("path").and_then(Value::as_str).unwrap_or("");
        let value = operation.get("value").cloned();
        match op {
            "add" | "replace" => {
                let value = value.ok_or_else(|| invalid(format!("{op} operation has no value")))?;
                if op == "replace" && document.pointer(path).is_none() {
                    return Err(invalid(format!(
                        "replace operation does not apply: doc is missing key: {path}"
                    )));
                }
                pointer_set(&mut document, path, value, op == "add").map_err(invalid)?;
            }
            "remove" => {
                pointer_remove(&mut document, path).map_err(invalid)?;
            }
            "move" | "copy" => {
                let from = operation.get("from").and_then(Value::as_str).unwrap_or("");
                let moved = document.pointer(from).cloned().ok_or_else(|| {
                    invalid(format!(
                        "{op} operation does not apply: doc is missing from path: {from}"
                    ))
                })?;
                if op == "move" {
                    pointer_remove(&mut document, from).map_err(invalid)?;
                }
                pointer_set(&mut document, path, moved, true).map_err(invalid)?;
            }
            "test" => {
                if document.pointer(path) != value.as_ref() {
                    return Err(invalid(format!("testing value {path} failed")));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown JSON patch operation {other:?}"
                )))
            }
        }
    }
    Ok(document)
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok((
        parent.to_owned(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn pointer_set(document: &mut Value, path: &str, value: Value, insert: bool) -> Result<(), String> {
    if path.is_empty() {
        *document = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match document.pointer_mut(&parent) {
        Some(Value::Object(fields)) => {
            fields.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            let index: usize = last
                .parse()
                .map_err(|_| format!("invalid index {last:?}"))?;
            match (insert, index <= items.len(), index < items.len()) {
                (true, true, _) => items.insert(index, value),
                (false, _, true) => items[index] = value,
                _ => return Err(format!("index {index} out of bounds")),
            }
            Ok(())
        }
        _ => Err(format!("doc is missing path: {path}")),
    }
}

fn pointer_remove(document: &mut Value, path: &str) -> Result<(), String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("remove operation does not apply: doc is missing path: {path}");
    match document.pointer_mut(&parent) {
        Some(Value::Object(fields)) => fields.remove(&last).map(|_| ()).ok_or_else(missing),
        Some(Value::Array(items)) => {
            let index: usize = last.parse().map_err(|_| missing())?;
            if index < items.len() {
                items.remove(index);
                Ok(())
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}
