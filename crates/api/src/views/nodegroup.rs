//! The nodegroup views.

use super::sorted_object;

use std::collections::BTreeMap;

use magnum_domain::cluster::NodeGroup;
use magnum_domain::labels::{LabelDifferences, Labels};
use magnum_domain::time::Timestamp;
use serde_json::{json, Value};

pub(crate) fn links(base_url: &str, nodegroup: &NodeGroup) -> Value {
    serde_json::to_value(magnum_types::Link::self_and_bookmark(
        base_url,
        &format!(
            "clusters/{}/nodegroups/{}",
            nodegroup.cluster_uuid, nodegroup.uuid
        ),
    ))
    .unwrap_or(Value::Null)
}

pub(crate) fn summary(nodegroup: &NodeGroup) -> Value {
    let mut view = BTreeMap::new();
    view.insert("uuid", json!(nodegroup.uuid.to_string()));
    view.insert("name", json!(nodegroup.name));
    view.insert("flavor_id", json!(nodegroup.flavor_id));
    view.insert("image_id", json!(nodegroup.image_id));
    view.insert("node_count", json!(nodegroup.node_count));
    view.insert("role", json!(nodegroup.role));
    view.insert("is_default", json!(nodegroup.is_default));
    view.insert("status", json!(nodegroup.status.as_str()));
    view.insert("stack_id", json!(nodegroup.stack_id));
    view.insert("min_node_count", json!(nodegroup.min_node_count));
    view.insert("max_node_count", json!(nodegroup.max_node_count));
    view.insert("merge_labels", json!(false));
    sorted_object(view)
}

pub(crate) fn taints_value(nodegroup: &NodeGroup) -> Value {
    Value::Array(
        nodegroup
            .node_taints
            .iter()
            .map(|taint| {
                let mut object = BTreeMap::new();
                object.insert("key", json!(taint.key));
                if let Some(value) = &taint.value {
                    object.insert("value", json!(value));
                }
                object.insert("effect", json!(taint.effect));
                sorted_object(object)
            })
            .collect(),
    )
}

pub(crate) fn detail(
    nodegroup: &NodeGroup,
    cluster_labels: &Labels,
    base_url: &str,
) -> BTreeMap<&'static str, Value> {
    let differences = LabelDifferences::between(cluster_labels, &nodegroup.labels);
    let mut view = BTreeMap::new();
    view.insert("id", json!(nodegroup.id));
    view.insert("uuid", json!(nodegroup.uuid.to_string()));
    view.insert("name", json!(nodegroup.name));
    view.insert("cluster_id", json!(nodegroup.cluster_uuid.to_string()));
    view.insert("project_id", json!(nodegroup.project_id));
    view.insert("docker_volume_size", json!(nodegroup.docker_volume_size));
    view.insert("labels", Value::Object(nodegroup.labels.as_map().clone()));
    view.insert("labels_added", Value::Object(differences.added));
    view.insert("labels_overridden", Value::Object(differences.overridden));
    view.insert("labels_skipped", Value::Object(differences.skipped));
    view.insert("links", links(base_url, nodegroup));
    view.insert("flavor_id", json!(nodegroup.flavor_id));
    view.insert("image_id", json!(nodegroup.image_id));
    view.insert("node_addresses", json!(nodegroup.node_addresses));
    view.insert("node_count", json!(nodegroup.node_count));
    view.insert("role", json!(nodegroup.role));
    view.insert("min_node_count", json!(nodegroup.min_node_count));
    view.insert("max_node_count", json!(nodegroup.max_node_count));
    view.insert("is_default", json!(nodegroup.is_default));
    view.insert("stack_id", json!(nodegroup.stack_id));
    view.insert("status", json!(nodegroup.status.as_str()));
    view.insert("status_reason", json!(nodegroup.status_reason));
    view.insert("version", json!(nodegroup.coe_version));
    view.insert("merge_labels", json!(false));
    view.insert("node_labels", Value::Object(nodegroup.node_labels.clone()));
    view.insert("node_taints", taints_value(nodegroup));
    view.insert("created_at", json!(nodegroup.created_at.to_wire()));
    view.insert(
        "updated_at",
        json!(nodegroup.updated_at.map(Timestamp::to_wire)),
    );
    view
}
