//! The value operations of structured-merge-diff, over JSON values and their schema:
//! the field set a value sets, the comparison of two values, merging an applied
//! configuration into a live object, and removing a set of fields from a value.

use serde_json::{Map, Value};

use super::fieldpath::{self, FieldSet, Path};
use super::shape::{self, field_schema, shape_of, Shape};

/// The fields `value` sets (structured-merge-diff's `ToFieldSet`): scalars, atomic values and
/// list items are members; structs and maps are only the way to their members.
pub fn field_set(value: &Value, schema: Option<&Value>) -> FieldSet {
    let mut set = FieldSet::new();
    collect_fields(value, schema, &mut Vec::new(), &mut set);
    set
}

fn collect_fields(value: &Value, schema: Option<&Value>, path: &mut Path, set: &mut FieldSet) {
    let shape = shape_of(schema, value);
    match (&shape, value) {
        (Shape::Struct(_) | Shape::Map(_), Value::Object(object)) => {
            for (name, child) in object {
                path.push(fieldpath::field(name));
                collect_fields(child, field_schema(&shape, name), path, set);
                path.pop();
            }
        }
        (Shape::MapList { keys, items }, Value::Array(list)) => {
            for item in list {
                path.push(item_element(keys, item));
                set.insert(path);
                collect_fields(item, *items, path, set);
                path.pop();
            }
        }
        (Shape::SetList, Value::Array(list)) => {
            for item in list {
                path.push(fieldpath::value(item));
                set.insert(path);
                path.pop();
            }
        }
        _ => set.insert(path),
    }
}

fn item_element(keys: &[String], item: &Value) -> String {
    match item.as_object() {
        Some(object) => fieldpath::key(keys, object),
        None => fieldpath::value(item),
    }
}

/// What changed from `old` to `new`, as structured-merge-diff's `Compare` reports it: every
/// node only in `new` is added (structs and maps too, which is where the `".": {}` of an
/// `Update` entry comes from), every node only in `old` removed, leaves that differ modified.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

pub fn compare(old: &Value, new: &Value, schema: Option<&Value>) -> Comparison {
    let mut comparison = Comparison::default();
    compare_nodes(
        Some(old),
        Some(new),
        schema,
        &mut Vec::new(),
        &mut comparison,
    );
    comparison
}

fn compare_nodes(
    old: Option<&Value>,
    new: Option<&Value>,
    schema: Option<&Value>,
    path: &mut Path,
    comparison: &mut Comparison,
) {
    let Some(reference) = new.or(old) else { return };
    let shape = shape_of(schema, reference);
    let same_kind = match (old, new) {
        (Some(old), Some(new)) => {
            std::mem::discriminant(old) == std::mem::discriminant(new) && !old.is_null()
        }
        _ => true,
    };
    match (&shape, same_kind) {
        (Shape::Struct(_) | Shape::Map(_), true) => {
            let old_object = old.and_then(Value::as_object);
            let new_object = new.and_then(Value::as_object);
            for name in union_keys(old_object, new_object) {
                path.push(fieldpath::field(&name));
                compare_nodes(
                    old_object.and_then(|object| object.get(&name)),
                    new_object.and_then(|object| object.get(&name)),
                    field_schema(&shape, &name),
                    path,
                    comparison,
                );
                path.pop();
            }
            mark_presence(old, new, path, comparison);
        }
        (Shape::MapList { keys, items }, true) => {
            let old_items = indexed_items(old, keys);
            let new_items = indexed_items(new, keys);
            let mut elements: Vec<&String> = old_items.iter().map(|(element, _)| element).collect();
            for (element, _) in &new_items {
                if !elements.contains(&element) {
                    elements.push(element);
                }
            }
            for element in elements {
                path.push(element.clone());
                compare_nodes(
                    find_item(&old_items, element),
                    find_item(&new_items, element),
                    *items,
                    path,
                    comparison,
                );
                path.pop();
            }
            mark_presence(old, new, path, comparison);
        }
        (Shape::SetList, true) => {
            let old_items = set_items(old);
            let new_items = set_items(new);
            for element in &new_items {
                if !old_items.contains(element) {
                    path.push(element.clone());
                    comparison.added.insert(path);
                    path.pop();
                }
            }
            for element in &old_items {
                if !new_items.contains(element) {
                    path.push(element.clone());
                    comparison.removed.insert(path);
                    path.pop();
                }
            }
            mark_presence(old, new, path, comparison);
        }
        _ => match (old, new) {
            (Some(old), Some(new)) if old != new => comparison.modified.insert(path),
            (None, Some(_)) => comparison.added.insert(path),
            (Some(_), None) => comparison.removed.insert(path),
            _ => {}
        },
    }
}

fn mark_presence(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &Path,
    comparison: &mut Comparison,
) {
    // The root is never added or removed: both sides of a comparison are objects.
    if path.is_empty() {
        return;
    }
    match (old, new) {
        (None, Some(_)) => comparison.added.insert(path),
        (Some(_), None) => comparison.removed.insert(path),
        _ => {}
    }
}

fn union_keys(old: Option<&Map<String, Value>>, new: Option<&Map<String, Value>>) -> Vec<String> {
    let mut names: Vec<String> = old
        .map(|object| object.keys().cloned().collect())
        .unwrap_or_default();
    for name in new.into_iter().flat_map(|object| object.keys()) {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

fn indexed_items<'v>(list: Option<&'v Value>, keys: &[String]) -> Vec<(String, &'v Value)> {
    list.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|item| (item_element(keys, item), item))
                .collect()
        })
        .unwrap_or_default()
}

fn find_item<'v>(items: &[(String, &'v Value)], element: &str) -> Option<&'v Value> {
    items
        .iter()
        .find(|(candidate, _)| candidate == element)
        .map(|(_, item)| *item)
}

fn set_items(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|items| items.iter().map(fieldpath::value).collect())
        .unwrap_or_default()
}

/// The applied configuration merged into the live object: structs and granular maps merge
/// per field, `map` lists per key (live order kept, new items appended), `set` lists by
/// value, and everything else is replaced by the configuration's value.
pub fn merge(live: &Value, config: &Value, schema: Option<&Value>) -> Value {
    let shape = shape_of(schema, config);
    match (&shape, live, config) {
        (
            Shape::Struct(_) | Shape::Map(_),
            Value::Object(live_object),
            Value::Object(config_object),
        ) => {
            let mut merged = live_object.clone();
            for (name, config_child) in config_object {
                let child = match live_object.get(name) {
                    Some(live_child) => merge(live_child, config_child, field_schema(&shape, name)),
                    None => config_child.clone(),
                };
                merged.insert(name.clone(), child);
            }
            Value::Object(merged)
        }
        (Shape::MapList { keys, items }, Value::Array(live_items), Value::Array(config_items)) => {
            let mut merged: Vec<Value> = live_items.clone();
            for config_item in config_items {
                let element = item_element(keys, config_item);
                match merged
                    .iter()
                    .position(|item| item_element(keys, item) == element)
                {
                    Some(index) => merged[index] = merge(&merged[index], config_item, *items),
                    None => merged.push(config_item.clone()),
                }
            }
            Value::Array(merged)
        }
        (Shape::SetList, Value::Array(live_items), Value::Array(config_items)) => {
            let mut merged = live_items.clone();
            for item in config_items {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            Value::Array(merged)
        }
        _ => config.clone(),
    }
}

/// `value` without the members of `set` (a removed member takes everything below it along).
pub fn remove_items(value: &Value, set: &FieldSet, schema: Option<&Value>) -> Value {
    let shape = shape_of(schema, value);
    match (&shape, value) {
        (Shape::Struct(_) | Shape::Map(_), Value::Object(object)) => {
            let mut kept = Map::new();
            for (name, child) in object {
                match set.child(&fieldpath::field(name)) {
                    Some(below) if below.is_member() => {}
                    Some(below) => {
                        kept.insert(
                            name.clone(),
                            remove_items(child, below, field_schema(&shape, name)),
                        );
                    }
                    None => {
                        kept.insert(name.clone(), child.clone());
                    }
                }
            }
            Value::Object(kept)
        }
        (Shape::MapList { keys, items }, Value::Array(list)) => Value::Array(
            list.iter()
                .filter_map(|item| match set.child(&item_element(keys, item)) {
                    Some(below) if below.is_member() => None,
                    Some(below) => Some(remove_items(item, below, *items)),
                    None => Some(item.clone()),
                })
                .collect(),
        ),
        (Shape::SetList, Value::Array(list)) => Value::Array(
            list.iter()
                .filter(|item| {
                    !set.child(&fieldpath::value(item))
                        .is_some_and(FieldSet::is_member)
                })
                .cloned()
                .collect(),
        ),
        _ => value.clone(),
    }
}

/// `set` plus every struct field with a member below it (structured-merge-diff's
/// `EnsureNamedFieldsAreMembers`), so that pruning a struct's last owned field removes the
/// struct too.
pub fn ensure_named_members(set: &FieldSet, schema: Option<&Value>) -> FieldSet {
    let mut result = set.clone();
    mark_named(&mut result, schema);
    result
}

fn mark_named(set: &mut FieldSet, schema: Option<&Value>) {
    let parent_is_struct = shape::is_struct(schema);
    let elements: Vec<String> = set.children().map(|(element, _)| element.clone()).collect();
    for element in elements {
        let child_schema = shape::element_schema(schema, &element);
        let child = set.child_mut(&element);
        let has_members_below = child.children().any(|(_, below)| !below.is_empty());
        if parent_is_struct && element.starts_with("f:") && has_members_below {
            child.mark_member();
        }
        mark_named(child, child_schema);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "version": {"type": "string"},
            "workers": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "replicas": {"type": "integer"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "args": {"type": "array", "items": {"type": "string"}}
        }}}})
    }

    #[test]
    fn field_set_owns_list_items_and_atomic_lists() {
        let value = json!({"spec": {"workers": [{"name": "a", "replicas": 1}],
            "tags": ["x"], "args": ["1", "2"]}});
        let set = field_set(&value, Some(&schema()));
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:spec": {"f:args": {}, "f:tags": {"v:\"x\"": {}},
                "f:workers": {"k:{\"name\":\"a\"}": {".": {}, "f:name": {}, "f:replicas": {}}}}})
        );
    }

    #[test]
    fn merge_merges_map_lists_by_key() {
        let live = json!({"spec": {"workers": [{"name": "a", "replicas": 1}, {"name": "b", "replicas": 2}]}});
        let config = json!({"spec": {"workers": [{"name": "b", "replicas": 5}, {"name": "c"}]}});
        let merged = merge(&live, &config, Some(&schema()));
        assert_eq!(
            merged,
            json!({"spec": {"workers": [{"name": "a", "replicas": 1},
                {"name": "b", "replicas": 5}, {"name": "c"}]}})
        );
    }

    #[test]
    fn compare_reports_added_structs_and_modified_leaves() {
        let old = json!({"spec": {"version": "1"}});
        let new = json!({"spec": {"version": "2", "workers": [{"name": "a"}]}});
        let comparison = compare(&old, &new, Some(&schema()));
        assert_eq!(
            comparison.modified.to_fields_v1(),
            json!({"f:spec": {"f:version": {}}})
        );
        assert_eq!(
            comparison.added.to_fields_v1(),
            json!({"f:spec": {"f:workers": {".": {}, "k:{\"name\":\"a\"}": {".": {}, "f:name": {}}}}})
        );
    }
}
