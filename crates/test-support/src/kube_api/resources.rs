//! The resource types the stand-in serves: the built-in core types a Cluster API driver
//! touches, and the custom resources of the CRD documents it was started with.

use std::sync::Arc;

use serde_json::Value;

use super::shape::{core_schema, object_meta_schema};

#[derive(Debug, Clone)]
pub struct ResourceVersion {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    pub status_subresource: bool,
    /// The version's `openAPIV3Schema`, with `metadata` replaced by `ObjectMeta`'s shape.
    pub schema: Value,
}

#[derive(Debug, Clone)]
pub struct ResourceType {
    /// `""` for the core group.
    pub group: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub versions: Vec<ResourceVersion>,
    /// Custom resources carry `metadata.generation` and answer a delete with the object;
    /// core secrets and configmaps do neither.
    pub custom: bool,
}

impl ResourceType {
    /// `clusters.cluster.x-k8s.io`, or `secrets` in the core group: how kube-apiserver
    /// names a resource in its messages.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Cluster.cluster.x-k8s.io`, as in "… is invalid" messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn served_version(&self, version: &str) -> Option<&ResourceVersion> {
        self.versions
            .iter()
            .find(|candidate| candidate.served && candidate.name == version)
    }

    pub fn storage_version(&self) -> &ResourceVersion {
        self.versions
            .iter()
            .find(|version| version.storage)
            .unwrap_or(&self.versions[0])
    }

    /// Reads one `CustomResourceDefinition` (apiextensions.k8s.io/v1).
    pub fn from_crd(crd: &Value) -> Result<Self, String> {
        if crd.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            return Err("not a CustomResourceDefinition".into());
        }
        let spec = crd.get("spec").ok_or("a CRD without spec")?;
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        let strings = |value: Option<&Value>| -> Vec<String> {
            value
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| item.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let names = spec.get("names").ok_or("a CRD without spec.names")?;
        let kind = text(names.get("kind")).ok_or("a CRD without spec.names.kind")?;
        let plural = text(names.get("plural")).ok_or("a CRD without spec.names.plural")?;
        let mut versions = Vec::new();
        for version in spec
            .get("versions")
            .and_then(Value::as_array)
            .ok_or("a CRD without spec.versions")?
        {
            let mut schema = version
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
            if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                properties.insert("metadata".into(), object_meta_schema());
            }
            versions.push(ResourceVersion {
                name: text(version.get("name")).ok_or("a CRD version without a name")?,
                served: version.get("served").and_then(Value::as_bool) == Some(true),
                storage: version.get("storage").and_then(Value::as_bool) == Some(true),
                status_subresource: version.pointer("/subresources/status").is_some(),
                schema,
            });
        }
        if versions.is_empty() {
            return Err("a CRD with no versions".into());
        }
        Ok(Self {
            group: text(spec.get("group")).ok_or("a CRD without spec.group")?,
            list_kind: text(names.get("listKind")).unwrap_or_else(|| format!("{kind}List")),
            singular: text(names.get("singular")).unwrap_or_else(|| kind.to_lowercase()),
            kind,
            plural,
            namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
            short_names: strings(names.get("shortNames")),
            categories: strings(names.get("categories")),
            versions,
            custom: true,
        })
    }

    fn core(
        kind: &str,
        plural: &str,
        namespaced: bool,
        short_names: &[&str],
        status_subresource: bool,
        schema: Value,
    ) -> Self {
        Self {
            group: String::new(),
            kind: kind.to_owned(),
            list_kind: format!("{kind}List"),
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            namespaced,
            short_names: short_names.iter().map(|name| name.to_string()).collect(),
            categories: Vec::new(),
            versions: vec![ResourceVersion {
                name: "v1".into(),
                served: true,
                storage: true,
                status_subresource,
                schema,
            }],
            custom: false,
        }
    }

    /// The core `v1` types a Cluster API driver uses.
    pub fn core_types() -> Vec<Self> {
        vec![
            Self::core(
                "Namespace",
                "namespaces",
                false,
                &["ns"],
                true,
                core_schema(&[], &["spec.finalizers"]),
            ),
            Self::core(
                "Secret",
                "secrets",
                true,
                &[],
                false,
                core_schema(&["data", "stringData"], &[]),
            ),
            Self::core(
                "ConfigMap",
                "configmaps",
                true,
                &["cm"],
                false,
                core_schema(&["data", "binaryData"], &[]),
            ),
            Self::core(
                "Event",
                "events",
                true,
                &["ev"],
                false,
                core_schema(&[], &[]),
            ),
        ]
    }
}

/// Every resource type served, looked up by group, version and plural.
#[derive(Debug, Default)]
pub struct Registry {
    resources: Vec<Arc<ResourceType>>,
}

impl Registry {
    pub fn new(custom: Vec<ResourceType>) -> Self {
        let resources = ResourceType::core_types()
            .into_iter()
            .chain(custom)
            .map(Arc::new)
            .collect();
        Self { resources }
    }

    pub fn all(&self) -> &[Arc<ResourceType>] {
        &self.resources
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.resources
            .iter()
            .find(|resource| {
                resource.group == group
                    && resource.plural == plural
                    && resource.served_version(version).is_some()
            })
            .cloned()
    }

    /// The groups of the custom resources, each with its served versions and the version
    /// it stores (its preferred version), in the order first loaded.
    pub fn groups(&self) -> Vec<(String, Vec<String>, String)> {
        let mut groups: Vec<(String, Vec<String>, String)> = Vec::new();
        for resource in self.resources.iter().filter(|resource| resource.custom) {
            let index = match groups
                .iter()
                .position(|(name, _, _)| *name == resource.group)
            {
                Some(index) => index,
                None => {
                    groups.push((
                        resource.group.clone(),
                        Vec::new(),
                        resource.storage_version().name.clone(),
                    ));
                    groups.len() - 1
                }
            };
            for version in resource.versions.iter().filter(|version| version.served) {
                if !groups[index].1.contains(&version.name) {
                    groups[index].1.push(version.name.clone());
                }
            }
        }
        // Newest first, as kube-apiserver orders a group's versions (v1beta2 before v1beta1).
        for (_, versions, _) in &mut groups {
            versions.sort_by(|left, right| right.cmp(left));
        }
        groups
    }

    /// The resources served at `group`/`version`.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.resources
            .iter()
            .filter(|resource| {
                resource.group == group && resource.served_version(version).is_some()
            })
            .cloned()
            .collect()
    }
}
