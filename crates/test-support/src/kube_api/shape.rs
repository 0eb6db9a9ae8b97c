//! How server-side apply sees a value: the structural type its OpenAPI v3 schema gives it.
//!
//! Only the parts of a CRD schema that change merging and ownership are read: `properties`
//! (a struct), `additionalProperties` (a map), `x-kubernetes-map-type`,
//! `x-kubernetes-list-type` / `x-kubernetes-list-map-keys`, and
//! `x-kubernetes-preserve-unknown-fields`. Where there is no schema (below a
//! preserve-unknown-fields node) the type is deduced from the value as structured-merge-diff
//! does: objects are granular maps, lists are atomic.

use serde_json::{json, Map, Value};

#[derive(Debug, Clone)]
pub enum Shape<'s> {
    /// An object with declared `properties`: fields merge one by one.
    Struct(&'s Value),
    /// A granular map: keys merge one by one; the element schema, if any.
    Map(Option<&'s Value>),
    /// `x-kubernetes-list-type: map`: items merge by their key fields.
    MapList {
        keys: Vec<String>,
        items: Option<&'s Value>,
    },
    /// `x-kubernetes-list-type: set`: items are owned by value.
    SetList,
    /// A scalar, an atomic map or an atomic list: replaced and owned whole.
    Leaf,
}

fn is_atomic_map(schema: &Value) -> bool {
    schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
}

pub fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// The shape of `value` under `schema` (`None`: no schema, deduce from the value).
pub fn shape_of<'s>(schema: Option<&'s Value>, value: &Value) -> Shape<'s> {
    match (schema, value) {
        (None, Value::Object(_)) => Shape::Map(None),
        (None, _) => Shape::Leaf,
        (Some(schema), Value::Object(_)) => object_shape(schema),
        (Some(schema), Value::Array(_)) => list_shape(schema),
        (Some(_), _) => Shape::Leaf,
    }
}

fn object_shape(schema: &Value) -> Shape<'_> {
    if is_atomic_map(schema) {
        Shape::Leaf
    } else if schema.get("properties").is_some_and(Value::is_object) {
        Shape::Struct(schema)
    } else {
        Shape::Map(
            schema
                .get("additionalProperties")
                .filter(|element| element.is_object()),
        )
    }
}

fn list_shape(schema: &Value) -> Shape<'_> {
    let items = schema.get("items").filter(|items| items.is_object());
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => Shape::MapList {
            keys: schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(|key| key.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            items,
        },
        Some("set") => Shape::SetList,
        _ => Shape::Leaf,
    }
}

/// The schema of field `name` of an object of shape `parent`.
pub fn field_schema<'s>(parent: &Shape<'s>, name: &str) -> Option<&'s Value> {
    match parent {
        Shape::Struct(schema) => schema
            .get("properties")
            .and_then(|properties| properties.get(name))
            .or_else(|| {
                schema
                    .get("additionalProperties")
                    .filter(|element| element.is_object())
            }),
        Shape::Map(element) => *element,
        _ => None,
    }
}

/// The schema of the child a FieldsV1 path element names, from the schema alone (no value):
/// used to walk a field set alongside its type.
pub fn element_schema<'s>(schema: Option<&'s Value>, element: &str) -> Option<&'s Value> {
    let schema = schema?;
    if let Some(name) = element.strip_prefix("f:") {
        schema
            .get("properties")
            .and_then(|properties| properties.get(name))
            .or_else(|| {
                schema
                    .get("additionalProperties")
                    .filter(|element| element.is_object())
            })
    } else {
        schema.get("items")
    }
}

/// Whether `schema` describes a struct, whose named fields count as members of their
/// parent's set when anything below them is owned (structured-merge-diff's
/// `EnsureNamedFieldsAreMembers`; maps and list items are not named fields).
pub fn is_struct(schema: Option<&Value>) -> bool {
    schema.is_some_and(|schema| {
        !is_atomic_map(schema) && schema.get("properties").is_some_and(Value::is_object)
    })
}

/// Removes the fields the schema does not declare (what kube-apiserver's structural pruning
/// does to custom resources) and returns their dotted paths, for `fieldValidation`.
pub fn prune_unknown(value: &mut Value, schema: Option<&Value>) -> Vec<String> {
    let mut unknown = Vec::new();
    prune_walk(value, schema, "", &mut unknown);
    unknown
}

fn prune_walk(value: &mut Value, schema: Option<&Value>, prefix: &str, unknown: &mut Vec<String>) {
    let Some(schema) = schema else { return };
    match value {
        Value::Object(object) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema
                .get("additionalProperties")
                .filter(|element| element.is_object());
            let preserve = preserves_unknown(schema);
            let mut removed = Vec::new();
            for (name, child) in object.iter_mut() {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                match properties.and_then(|properties| properties.get(name)) {
                    Some(child_schema) => prune_walk(child, Some(child_schema), &path, unknown),
                    None if additional.is_some() => prune_walk(child, additional, &path, unknown),
                    None if preserve || properties.is_none() && !schema_is_closed(schema) => {}
                    None => {
                        unknown.push(path);
                        removed.push(name.clone());
                    }
                }
            }
            for name in removed {
                object.remove(&name);
            }
        }
        Value::Array(items) => {
            let item_schema = schema.get("items");
            for (index, item) in items.iter_mut().enumerate() {
                prune_walk(item, item_schema, &format!("{prefix}[{index}]"), unknown);
            }
        }
        _ => {}
    }
}

/// An object schema that declares no properties and preserves nothing admits no fields, as
/// structural pruning has it; one without `type: object` is not an object schema at all.
fn schema_is_closed(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("object")
        && schema.get("additionalProperties").is_none()
        && !preserves_unknown(schema)
}

/// `ObjectMeta` as server-side apply sees it: labels and annotations are granular maps,
/// finalizers a set, ownerReferences a map list keyed by uid, managedFields atomic.
pub fn object_meta_schema() -> Value {
    let string = json!({"type": "string"});
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    json!({
        "type": "object",
        "properties": {
            "name": string,
            "generateName": string,
            "namespace": string,
            "uid": string,
            "resourceVersion": string,
            "generation": {"type": "integer"},
            "creationTimestamp": string,
            "deletionTimestamp": string,
            "deletionGracePeriodSeconds": {"type": "integer"},
            "selfLink": string,
            "labels": string_map,
            "annotations": string_map,
            "finalizers": {"type": "array", "items": string, "x-kubernetes-list-type": "set"},
            "ownerReferences": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["uid"],
                "items": {
                    "type": "object",
                    "properties": {
                        "apiVersion": string, "kind": string, "name": string, "uid": string,
                        "controller": {"type": "boolean"},
                        "blockOwnerDeletion": {"type": "boolean"}
                    }
                }
            },
            "managedFields": {"type": "array", "x-kubernetes-list-type": "atomic"}
        }
    })
}

/// The schema of a built-in type with no CRD: the named maps are granular, every other
/// field is atomic.
pub fn core_schema(granular_maps: &[&str], sets: &[&str]) -> Value {
    let mut properties = Map::new();
    properties.insert("apiVersion".into(), json!({"type": "string"}));
    properties.insert("kind".into(), json!({"type": "string"}));
    properties.insert("metadata".into(), object_meta_schema());
    for name in granular_maps {
        properties.insert(
            (*name).into(),
            json!({"type": "object", "additionalProperties": {"x-kubernetes-map-type": "atomic"}}),
        );
    }
    for name in sets {
        let (outer, inner) = name.split_once('.').unwrap_or((name, ""));
        let set = json!({"type": "array", "x-kubernetes-list-type": "set"});
        if inner.is_empty() {
            properties.insert(outer.into(), set);
        } else {
            properties.insert(
                outer.into(),
                json!({"type": "object", "properties": {inner: set},
                       "additionalProperties": {"x-kubernetes-map-type": "atomic"}}),
            );
        }
    }
    json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": {"x-kubernetes-map-type": "atomic"}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_pruned_and_reported() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"replicas": {"type": "integer"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}});
        let mut value = json!({"spec": {"replicas": 1, "typo": 2, "free": {"anything": 3}}});
        let unknown = prune_unknown(&mut value, Some(&schema));
        assert_eq!(unknown, vec!["spec.typo".to_owned()]);
        assert_eq!(
            value,
            json!({"spec": {"replicas": 1, "free": {"anything": 3}}})
        );
    }
}
