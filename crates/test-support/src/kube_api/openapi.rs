//! The OpenAPI v3 documents, only as far as kubectl reads them before a write: it looks for
//! the PATCH operation of the type (by `x-kubernetes-group-version-kind`) and whether it
//! takes the `fieldValidation` query parameter, to leave validation to the server. No
//! schemas are published; `kubectl explain` is not served.

use serde_json::{json, Map, Value};

use super::resources::Registry;

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn served_group_versions(registry: &Registry) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = vec![(String::new(), "v1".to_owned())];
    for (group, versions, _) in registry.groups() {
        for version in versions {
            pairs.push((group.clone(), version));
        }
    }
    pairs
}

/// `/openapi/v3`: where each group version's document is.
pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, version) in served_group_versions(registry) {
        let path = group_version_path(&group, &version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash=stand-in")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/apis/<group>/<version>`: the PATCH operation of every type served there.
pub fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources = registry.in_group_version(group, version);
    if resources.is_empty() {
        return None;
    }
    let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
    let mut paths = Map::new();
    for resource in resources {
        let prefix = format!("/{}", group_version_path(group, version));
        let path = if resource.namespaced {
            format!(
                "{prefix}/namespaces/{{namespace}}/{}/{{name}}",
                resource.plural
            )
        } else {
            format!("{prefix}/{}/{{name}}", resource.plural)
        };
        paths.insert(
            path,
            json!({"patch": {
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": resource.kind},
                "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation"), query("force")],
                "responses": {"200": {"description": "OK"}}
            }}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
    }))
}
