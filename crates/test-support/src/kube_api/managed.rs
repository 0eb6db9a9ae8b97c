//! Field ownership: `metadata.managedFields` and the two ways a write changes it, the
//! `Update` of a PUT, POST or merge patch and the `Apply` of a server-side apply, following
//! structured-merge-diff's `Updater`.
//!
//! Managers are told apart as kube-apiserver tells them apart: an applier by name and
//! subresource, an updater by name, subresource and API version.

use serde_json::{json, Map, Value};

use super::fieldpath::{self, FieldSet, Path};
use super::merge::{compare, ensure_named_members, field_set, merge, remove_items};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: String,
    /// `""` for the main resource, `"status"` for the status subresource.
    pub subresource: String,
    pub fields: FieldSet,
}

impl ManagedEntry {
    fn same_manager(
        &self,
        manager: &str,
        operation: Operation,
        api_version: &str,
        subresource: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == Operation::Apply || self.api_version == api_version)
    }

    /// How conflict messages name a manager: `"b"`, `"b" with subresource "status"`, and
    /// for an updater also `using <apiVersion>`.
    fn describe(&self) -> String {
        let mut text = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            text.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            text.push_str(&format!(" using {}", self.api_version));
        }
        text
    }
}

/// Who writes and how: the identity of one managedFields entry.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub operation: Operation,
    pub api_version: &'a str,
    pub subresource: &'a str,
    pub time: &'a str,
}

pub fn decode(object: &Value) -> Vec<ManagedEntry> {
    let Some(entries) = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let text = |name: &str| {
                entry
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let operation = match entry.get("operation").and_then(Value::as_str) {
                Some("Apply") => Operation::Apply,
                Some("Update") => Operation::Update,
                _ => return None,
            };
            Some(ManagedEntry {
                manager: text("manager"),
                operation,
                api_version: text("apiVersion"),
                time: text("time"),
                subresource: text("subresource"),
                fields: FieldSet::from_fields_v1(entry.get("fieldsV1").unwrap_or(&Value::Null)),
            })
        })
        .collect()
}

/// The entries as `metadata.managedFields`, ordered as kube-apiserver orders them: by
/// operation, time, manager, API version and subresource.
pub fn encode(entries: &[ManagedEntry]) -> Value {
    let mut sorted: Vec<&ManagedEntry> = entries
        .iter()
        .filter(|entry| !entry.fields.is_empty())
        .collect();
    sorted.sort_by(|left, right| {
        (
            left.operation.as_str(),
            &left.time,
            &left.manager,
            &left.api_version,
            &left.subresource,
        )
            .cmp(&(
                right.operation.as_str(),
                &right.time,
                &right.manager,
                &right.api_version,
                &right.subresource,
            ))
    });
    Value::Array(
        sorted
            .into_iter()
            .map(|entry| {
                let mut object = Map::new();
                object.insert("manager".into(), entry.manager.clone().into());
                object.insert("operation".into(), entry.operation.as_str().into());
                object.insert("apiVersion".into(), entry.api_version.clone().into());
                object.insert("time".into(), entry.time.clone().into());
                object.insert("fieldsType".into(), "FieldsV1".into());
                object.insert("fieldsV1".into(), entry.fields.to_fields_v1());
                if !entry.subresource.is_empty() {
                    object.insert("subresource".into(), entry.subresource.clone().into());
                }
                Value::Object(object)
            })
            .collect(),
    )
}

/// The fields no manager ever owns: identity and bookkeeping metadata the server sets
/// (kube-apiserver's "strip meta" list).
fn server_owned_fields() -> FieldSet {
    let mut set = FieldSet::new();
    for path in [
        &["f:apiVersion"][..],
        &["f:kind"],
        &["f:metadata"],
        &["f:metadata", "f:name"],
        &["f:metadata", "f:namespace"],
        &["f:metadata", "f:creationTimestamp"],
        &["f:metadata", "f:selfLink"],
        &["f:metadata", "f:uid"],
        &["f:metadata", "f:generation"],
        &["f:metadata", "f:managedFields"],
        &["f:metadata", "f:resourceVersion"],
        &["f:metadata", "f:deletionTimestamp"],
        &["f:metadata", "f:deletionGracePeriodSeconds"],
    ] {
        let path: Path = path.iter().map(|element| element.to_string()).collect();
        set.insert(&path);
    }
    set
}

/// Fields one other manager owns that a write changes without force.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflicts {
    /// Manager description and the paths, in the order kube-apiserver prints them.
    pub conflicts: Vec<(String, String)>,
}

impl Conflicts {
    /// kube-apiserver's message for an apply conflict.
    pub fn message(&self) -> String {
        if let [(manager, path)] = self.conflicts.as_slice() {
            return format!("Apply failed with 1 conflict: conflict with {manager}: {path}");
        }
        let mut managers: Vec<&String> = Vec::new();
        for (manager, _) in &self.conflicts {
            if !managers.contains(&manager) {
                managers.push(manager);
            }
        }
        managers.sort();
        let mut lines = Vec::new();
        for manager in managers {
            lines.push(format!("conflicts with {manager}:"));
            for (owner, path) in &self.conflicts {
                if owner == manager {
                    lines.push(format!("- {path}"));
                }
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.conflicts.len(),
            lines.join("\n")
        )
    }

    pub fn causes(&self) -> Value {
        Value::Array(
            self.conflicts
                .iter()
                .map(|(manager, path)| {
                    json!({"reason": "FieldManagerConflict", "message": format!("conflict with {manager}"), "field": path})
                })
                .collect(),
        )
    }
}

fn entry_index(entries: &mut Vec<ManagedEntry>, writer: &Writer<'_>) -> usize {
    if let Some(index) = entries.iter().position(|entry| {
        entry.same_manager(
            writer.manager,
            writer.operation,
            writer.api_version,
            writer.subresource,
        )
    }) {
        return index;
    }
    entries.push(ManagedEntry {
        manager: writer.manager.to_owned(),
        operation: writer.operation,
        api_version: writer.api_version.to_owned(),
        time: writer.time.to_owned(),
        subresource: writer.subresource.to_owned(),
        fields: FieldSet::new(),
    });
    entries.len() - 1
}

/// The part of structured-merge-diff's update shared by both operations: other managers
/// lose the fields the write removed, and the fields it changed that they owned (which,
/// without force, is a conflict instead). Returns the comparison of `live` and `new`.
fn settle_other_managers(
    live: &Value,
    new: &Value,
    schema: Option<&Value>,
    entries: &mut [ManagedEntry],
    writer_index: usize,
    force: bool,
) -> Result<super::merge::Comparison, Conflicts> {
    let comparison = compare(live, new, schema);
    let changed = comparison.modified.union(&comparison.added);
    let mut conflicts = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if index == writer_index {
            continue;
        }
        for path in entry.fields.intersection(&changed).members() {
            conflicts.push((entry.describe(), fieldpath::display(&path)));
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(Conflicts { conflicts });
    }
    for (index, entry) in entries.iter_mut().enumerate() {
        if index == writer_index {
            continue;
        }
        entry.fields = entry
            .fields
            .difference(&entry.fields.intersection(&changed))
            .difference(&comparison.removed);
    }
    Ok(comparison)
}

/// Records an `Update` (PUT, POST, merge or JSON patch): the writer comes to own what it
/// added or changed, and takes it from the others (an update always forces).
pub fn record_update(
    live: &Value,
    new: &Value,
    schema: Option<&Value>,
    entries: &mut Vec<ManagedEntry>,
    writer: &Writer<'_>,
    ignored: &dyn Fn(FieldSet) -> FieldSet,
) {
    let index = entry_index(entries, writer);
    let comparison = settle_other_managers(live, new, schema, entries, index, true)
        .expect("a forced update has no conflicts");
    let before = entries[index].fields.clone();
    let owned = before
        .difference(&comparison.removed)
        .union(&comparison.modified)
        .union(&comparison.added)
        .difference(&server_owned_fields());
    let owned = ignored(owned);
    if owned != before {
        entries[index].time = writer.time.to_owned();
    }
    entries[index].fields = owned;
    entries.retain(|entry| !entry.fields.is_empty());
}

/// A server-side apply of `config` onto `live`: the merged object with the fields this
/// applier set last time, and no longer sets, removed unless another manager owns them.
pub fn apply(
    live: &Value,
    config: &Value,
    schema: Option<&Value>,
    entries: &mut Vec<ManagedEntry>,
    writer: &Writer<'_>,
    force: bool,
    ignored: &dyn Fn(FieldSet) -> FieldSet,
) -> Result<Value, Conflicts> {
    let merged = merge(live, config, schema);
    let index = entry_index(entries, writer);
    let last_applied = entries[index].fields.clone();
    let applied = ignored(field_set(config, schema).difference(&server_owned_fields()));
    if applied != last_applied {
        entries[index].time = writer.time.to_owned();
    }
    entries[index].fields = applied;
    let new = if last_applied.is_empty() {
        merged
    } else {
        prune(&merged, entries, &last_applied, schema)
    };
    settle_other_managers(live, &new, schema, entries, index, force)?;
    entries.retain(|entry| !entry.fields.is_empty());
    Ok(new)
}

/// structured-merge-diff's prune: remove what the applier owned last time and no longer
/// applies, add back whatever any manager (the applier included) still owns, and only ever
/// remove fields that were in the applier's previous set.
fn prune(
    merged: &Value,
    entries: &[ManagedEntry],
    last_applied: &FieldSet,
    schema: Option<&Value>,
) -> Value {
    let ensured = |set: &FieldSet| ensure_named_members(set, schema);
    let merged_set = ensured(&field_set(merged, schema));
    let last = ensured(last_applied);
    let owned = ensured(
        &entries
            .iter()
            .fold(FieldSet::new(), |all, entry| all.union(&entry.fields)),
    );

    let without_last = remove_items(merged, &last, schema);
    let without_last_set = ensured(&field_set(&without_last, schema));
    let unowned = merged_set.difference(&without_last_set.union(&owned));
    let pruned = remove_items(merged, &unowned, schema);

    let pruned_set = ensured(&field_set(&pruned, schema));
    let gone = merged_set.difference(&pruned_set);
    remove_items(merged, &gone.intersection(&last), schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": super::super::shape::object_meta_schema(),
            "spec": {"type": "object", "properties": {
                "version": {"type": "string"},
                "extra": {"type": "object", "properties": {"a": {"type": "string"}}},
                "workers": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "replicas": {"type": "integer"}}}}}}}})
    }

    fn writer(manager: &str, operation: Operation) -> Writer<'_> {
        Writer {
            manager,
            operation,
            api_version: "x/v1",
            subresource: "",
            time: "t",
        }
    }

    fn keep(set: FieldSet) -> FieldSet {
        set
    }

    #[test]
    fn reapplying_without_an_item_removes_it_and_an_emptied_struct() {
        let schema = schema();
        let mut entries = Vec::new();
        let first = json!({"spec": {"version": "1", "extra": {"a": "x"},
            "workers": [{"name": "a", "replicas": 1}, {"name": "b", "replicas": 2}]}});
        let live = apply(
            &json!({}),
            &first,
            Some(&schema),
            &mut entries,
            &writer("m", Operation::Apply),
            false,
            &keep,
        )
        .unwrap();
        let second = json!({"spec": {"version": "1", "workers": [{"name": "a", "replicas": 1}]}});
        let live = apply(
            &live,
            &second,
            Some(&schema),
            &mut entries,
            &writer("m", Operation::Apply),
            false,
            &keep,
        )
        .unwrap();
        assert_eq!(
            live,
            json!({"spec": {"version": "1", "workers": [{"name": "a", "replicas": 1}]}})
        );
    }

    #[test]
    fn a_field_another_manager_owns_is_kept_and_a_different_value_conflicts() {
        let schema = schema();
        let mut entries = Vec::new();
        let config = json!({"spec": {"version": "1", "extra": {"a": "x"}}});
        let live = apply(
            &json!({}),
            &config,
            Some(&schema),
            &mut entries,
            &writer("a", Operation::Apply),
            false,
            &keep,
        )
        .unwrap();
        let live = apply(
            &live,
            &json!({"spec": {"extra": {"a": "x"}}}),
            Some(&schema),
            &mut entries,
            &writer("b", Operation::Apply),
            false,
            &keep,
        )
        .unwrap();
        let live = apply(
            &live,
            &json!({"spec": {"version": "1"}}),
            Some(&schema),
            &mut entries,
            &writer("a", Operation::Apply),
            false,
            &keep,
        )
        .unwrap();
        assert_eq!(live, json!({"spec": {"version": "1", "extra": {"a": "x"}}}));
        let conflict = apply(
            &live,
            &json!({"spec": {"version": "2"}}),
            Some(&schema),
            &mut entries,
            &writer("b", Operation::Apply),
            false,
            &keep,
        )
        .unwrap_err();
        assert_eq!(
            conflict.message(),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.version"
        );
        let forced = apply(
            &live,
            &json!({"spec": {"version": "2", "extra": {"a": "x"}}}),
            Some(&schema),
            &mut entries,
            &writer("b", Operation::Apply),
            true,
            &keep,
        )
        .unwrap();
        assert_eq!(forced["spec"]["version"], "2");
        let owner_a = entries.iter().find(|entry| entry.manager == "a");
        assert!(owner_a.is_none(), "a lost its only field: {entries:?}");
    }
}
