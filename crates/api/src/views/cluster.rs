//! The cluster views: summary and detail, keys sorted as upstream's serializer emits them.

use std::collections::BTreeMap;

use magnum_domain::cluster::{Cluster, HealthStatus};
use magnum_domain::labels::{LabelDifferences, Labels};
use magnum_domain::time::Timestamp;
use serde_json::{json, Value};

use crate::microversion::Version;

pub(crate) fn timestamp(value: Option<Timestamp>) -> Value {
    value.map_or(Value::Null, |at| Value::String(at.to_wire()))
}

/// The list (summary) or detail view of a cluster at `version`.
pub(crate) fn view(
    cluster: &Cluster,
    template_labels: Option<&Labels>,
    detail: bool,
    version: Version,
    base_url: &str,
) -> BTreeMap<&'static str, Value> {
    let mut view = BTreeMap::new();
    view.insert("uuid", json!(cluster.uuid.to_string()));
    view.insert("name", json!(cluster.name));
    view.insert(
        "cluster_template_id",
        json!(cluster.cluster_template_id.to_string()),
    );
    view.insert("keypair", json!(cluster.keypair));
    view.insert("docker_volume_size", json!(cluster.docker_volume_size));
    view.insert("labels", Value::Object(cluster.labels.as_map().clone()));
    view.insert("node_count", json!(cluster.node_count));
    view.insert("master_count", json!(cluster.master_count));
    view.insert("status", json!(cluster.status.as_str()));
    view.insert(
        "health_status",
        json!(cluster.health_status.map(HealthStatus::as_str)),
    );
    view.insert("master_flavor_id", json!(cluster.master_flavor_id));
    view.insert("flavor_id", json!(cluster.flavor_id));
    view.insert("create_timeout", json!(cluster.create_timeout));
    view.insert(
        "links",
        serde_json::to_value(magnum_types::Link::self_and_bookmark(
            base_url,
            &format!("clusters/{}", cluster.uuid),
        ))
        .unwrap_or(Value::Null),
    );
    view.insert("merge_labels", json!(false));
    if version >= Version::new(1, 13) {
        view.insert("cluster_id", json!(cluster.stack_id));
    } else {
        view.insert("stack_id", json!(cluster.stack_id));
    }
    if detail {
        view.insert("status_reason", json!(cluster.status_reason));
        view.insert(
            "health_status_reason",
            Value::Object(cluster.health_status_reason.clone()),
        );
        view.insert("discovery_url", json!(cluster.discovery_url));
        view.insert("api_address", json!(cluster.api_address));
        view.insert("coe_version", json!(cluster.coe_version));
        view.insert("container_version", json!(cluster.container_version));
        view.insert("project_id", json!(cluster.project_id));
        view.insert("user_id", json!(cluster.user_id));
        view.insert("node_addresses", json!(cluster.node_addresses));
        view.insert("master_addresses", json!(cluster.master_addresses));
        view.insert("fixed_network", json!(cluster.fixed_network));
        view.insert("fixed_subnet", json!(cluster.fixed_subnet));
        view.insert("floating_ip_enabled", json!(cluster.floating_ip_enabled));
        view.insert("master_lb_enabled", json!(cluster.master_lb_enabled));
        let differences = template_labels
            .map(|parent| LabelDifferences::between(parent, &cluster.labels))
            .unwrap_or_default();
        view.insert("labels_overridden", Value::Object(differences.overridden));
        view.insert("labels_added", Value::Object(differences.added));
        view.insert("labels_skipped", Value::Object(differences.skipped));
        view.insert("created_at", timestamp(Some(cluster.created_at)));
        view.insert("updated_at", timestamp(cluster.updated_at));
    }
    view
}
