//! Sets of field paths, the currency of server-side apply ownership.
//!
//! A path element is kept in the spelling `metadata.managedFields[].fieldsV1` uses, so that
//! encoding and decoding are the identity: `f:<field>` for a field of an object,
//! `k:{"name":"md-0"}` for an item of a `map` list (the key fields as a JSON object, names
//! sorted), `v:<json>` for an item of a `set` list. A set is a tree; a node is a *member*
//! when its own path is in the set (FieldsV1 writes `".": {}` for a member that also has
//! members below it, `{}` for a member leaf).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub type Path = Vec<String>;

pub fn field(name: &str) -> String {
    format!("f:{name}")
}

/// The element naming an item of a `map` list by its key fields.
pub fn key(keys: &[String], item: &Map<String, Value>) -> String {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let mut object = Map::new();
    for name in sorted {
        if let Some(value) = item.get(name) {
            object.insert(name.clone(), value.clone());
        }
    }
    format!("k:{}", Value::Object(object))
}

/// The element naming an item of a `set` list by its value.
pub fn value(item: &Value) -> String {
    format!("v:{item}")
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_member(&self) -> bool {
        self.member
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub fn child(&self, element: &str) -> Option<&FieldSet> {
        self.children.get(element)
    }

    pub fn children(&self) -> impl Iterator<Item = (&String, &FieldSet)> {
        self.children.iter()
    }

    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn mark_member(&mut self) {
        self.member = true;
    }

    pub fn child_mut(&mut self, element: &str) -> &mut FieldSet {
        self.children.entry(element.to_owned()).or_default()
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut result = self.clone();
        result.member |= other.member;
        for (element, child) in &other.children {
            let merged = match result.children.get(element) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            result.children.insert(element.clone(), merged);
        }
        result.pruned()
    }

    /// Members of `self` that are not members of `other` (exact paths, not subtrees).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut result = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            let rest = match other.children.get(element) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            result.children.insert(element.clone(), rest);
        }
        result.pruned()
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut result = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                result
                    .children
                    .insert(element.clone(), child.intersection(theirs));
            }
        }
        result.pruned()
    }

    /// Members of `self` at or below a member of `roots`.
    pub fn at_or_below(&self, roots: &FieldSet) -> FieldSet {
        if roots.member {
            return self.clone();
        }
        let mut result = FieldSet::new();
        for (element, child) in &self.children {
            if let Some(root_child) = roots.children.get(element) {
                result
                    .children
                    .insert(element.clone(), child.at_or_below(root_child));
            }
        }
        result.pruned()
    }

    /// Every member path, in sorted order.
    pub fn members(&self) -> Vec<Path> {
        let mut paths = Vec::new();
        self.collect_members(&mut Vec::new(), &mut paths);
        paths
    }

    fn collect_members(&self, prefix: &mut Path, paths: &mut Vec<Path>) {
        if self.member {
            paths.push(prefix.clone());
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect_members(prefix, paths);
            prefix.pop();
        }
    }

    fn pruned(mut self) -> FieldSet {
        self.children.retain(|_, child| !child.is_empty());
        self
    }

    /// The `fieldsV1` JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut object = Map::new();
        if self.member && !self.children.is_empty() {
            object.insert(".".into(), Value::Object(Map::new()));
        }
        for (element, child) in &self.children {
            if !child.is_empty() {
                object.insert(element.clone(), child.to_fields_v1());
            }
        }
        Value::Object(object)
    }

    /// Reads a `fieldsV1` JSON object; anything unreadable is left out (the apiserver would
    /// have refused to store it).
    pub fn from_fields_v1(fields: &Value) -> FieldSet {
        let mut set = FieldSet::new();
        if let Some(object) = fields.as_object() {
            if object.is_empty() {
                set.member = true;
            }
            for (element, child) in object {
                if element == "." {
                    set.member = true;
                } else {
                    set.children
                        .insert(element.clone(), FieldSet::from_fields_v1(child));
                }
            }
        }
        set.pruned()
    }
}

/// A path the way kube-apiserver prints it in conflict messages:
/// `.spec.topology.workers.machineDeployments[name="md-0"].replicas`.
pub fn display(path: &[String]) -> String {
    let mut text = String::new();
    for element in path {
        if let Some(name) = element.strip_prefix("f:") {
            text.push('.');
            text.push_str(name);
        } else if let Some(keys) = element.strip_prefix("k:") {
            let parsed: Value = serde_json::from_str(keys).unwrap_or(Value::Null);
            let listed: Vec<String> = parsed
                .as_object()
                .map(|object| {
                    object
                        .iter()
                        .map(|(name, value)| format!("{name}={value}"))
                        .collect()
                })
                .unwrap_or_default();
            text.push('[');
            text.push_str(&listed.join(","));
            text.push(']');
        } else if let Some(item) = element.strip_prefix("v:") {
            text.push_str("[=");
            text.push_str(item);
            text.push(']');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(elements: &[&str]) -> Path {
        elements.iter().map(|element| element.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trips_members_and_dots() {
        let mut set = FieldSet::new();
        set.insert(&path(&["f:metadata", "f:labels"]));
        set.insert(&path(&["f:metadata", "f:labels", "f:a"]));
        set.insert(&path(&["f:spec", "f:replicas"]));
        let encoded = set.to_fields_v1();
        assert_eq!(
            encoded,
            json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}}, "f:spec": {"f:replicas": {}}})
        );
        assert_eq!(FieldSet::from_fields_v1(&encoded), set);
    }

    #[test]
    fn difference_removes_exact_members_only() {
        let mut set = FieldSet::new();
        set.insert(&path(&["f:a"]));
        set.insert(&path(&["f:a", "f:b"]));
        let mut other = FieldSet::new();
        other.insert(&path(&["f:a"]));
        assert_eq!(
            set.difference(&other).members(),
            vec![path(&["f:a", "f:b"])]
        );
    }

    #[test]
    fn paths_display_like_the_apiserver() {
        let shown = display(&path(&[
            "f:spec",
            "f:workers",
            r#"k:{"name":"md-0"}"#,
            "f:replicas",
        ]));
        assert_eq!(shown, r#".spec.workers[name="md-0"].replicas"#);
    }
}
