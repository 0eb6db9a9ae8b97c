//! `/v1/clusters/{cluster}/nodegroups` (from 1.9): list, get, create, update, delete.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use magnum_domain::aggregate::{find_nodegroup, ChangeRefused};
use magnum_domain::cluster::{ClusterStatus, NodeGroup};
use magnum_domain::event::Cause;
use magnum_domain::labels::Labels;
use magnum_domain::nodegroup::{
    check_counts, check_node_labels, parse_node_taints, NodeGroupInvalid, MAX_NODE_COUNT,
};
use magnum_domain::policy::Target;
use magnum_driver::{Action, References};
use magnum_store::{StoreError, NODEGROUP_SORT_KEYS};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{respond, respond_empty, sorted_object};
use crate::error::{ApiError, ChangeError};
use crate::input::body_object;
use crate::input::{attribute, parse_object, parse_patched, Attribute, Kind};
use crate::lookup::{
    change_request, check_capacity, copy_error, driver_for, nodegroup_not_found,
    resolve_cluster_for as resolve_for, template_of,
};
use crate::pagination::{next_link, page_from_query};
use crate::patch::{apply_patch, parse_patch, Operation as PatchOp, PatchRules};
use crate::routing::ResourceRequest;
use crate::views::nodegroup::{detail, summary};

/// How upstream names the body in its messages.
const ARGUMENT: &str = "nodegroup";

const TEXT: Kind = Kind::Text { min: 1, max: 255 };

pub(crate) const CREATE_SCHEMA: &[Attribute] = &[
    attribute("uuid", Kind::Uuid),
    attribute("name", TEXT),
    attribute(
        "docker_volume_size",
        Kind::Integer {
            min: Some(1),
            max: None,
        },
    ),
    attribute("labels", Kind::Labels),
    attribute("merge_labels", Kind::Boolean),
    attribute("flavor_id", TEXT),
    attribute("image_id", TEXT),
    attribute(
        "node_count",
        Kind::Integer {
            min: Some(0),
            max: Some(MAX_NODE_COUNT),
        },
    ),
    attribute("role", TEXT),
    attribute(
        "min_node_count",
        Kind::Integer {
            min: Some(0),
            max: Some(MAX_NODE_COUNT),
        },
    ),
    attribute(
        "max_node_count",
        Kind::Integer {
            min: Some(0),
            max: Some(MAX_NODE_COUNT),
        },
    ),
    attribute("is_default", Kind::Ignored),
    attribute("node_labels", Kind::Ignored),
    attribute("node_taints", Kind::Ignored),
    attribute("id", Kind::ReadOnly),
    attribute("cluster_id", Kind::ReadOnly),
    attribute("project_id", Kind::ReadOnly),
    attribute("stack_id", Kind::ReadOnly),
    attribute("status", Kind::ReadOnly),
    attribute("status_reason", Kind::ReadOnly),
    attribute("version", Kind::ReadOnly),
    attribute("node_addresses", Kind::ReadOnly),
    attribute("links", Kind::ReadOnly),
    attribute("labels_overridden", Kind::ReadOnly),
    attribute("labels_added", Kind::ReadOnly),
    attribute("labels_skipped", Kind::ReadOnly),
    attribute("created_at", Kind::Timestamp),
    attribute("updated_at", Kind::Timestamp),
];

/// The only attributes PATCH may touch; the node count changes through `actions/resize`.
const PATCHABLE: [&str; 4] = [
    "min_node_count",
    "max_node_count",
    "node_labels",
    "node_taints",
];

const PATCH_RULES: PatchRules = PatchRules {
    internal: &[],
    non_removable: &[],
    dictionaries: &["/node_labels"],
};

pub(crate) async fn list(
    request: &ResourceRequest<'_>,
    cluster_ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        ..
    } = request;
    query.allow_only(&["limit", "marker", "sort_key", "sort_dir", "role"])?;
    let identity = &context.identity;
    let page = page_from_query(query, NODEGROUP_SORT_KEYS, state.settings.max_limit)?;
    let cluster = resolve_for(
        state,
        identity,
        cluster_ident,
        Some("nodegroup:get_all_all_projects"),
    )
    .await?;
    state
        .policy
        .enforce("nodegroup:get_all", identity, &Target::caller(identity))?;
    let nodegroups = match state
        .store
        .list_nodegroups(cluster.uuid, query.get("role"), &page)
        .await
    {
        Ok(nodegroups) => nodegroups,
        Err(StoreError::MarkerNotFound(marker)) => {
            return Err(nodegroup_not_found(&marker.to_string()))
        }
        Err(error) => return Err(error.into()),
    };
    let next = next_link(
        &context.base_url,
        &format!("clusters/{}/nodegroups", cluster.uuid),
        &page,
        nodegroups.len(),
        nodegroups
            .last()
            .map(|nodegroup| nodegroup.uuid.to_string()),
    );
    let mut document = BTreeMap::new();
    document.insert(
        "nodegroups",
        Value::Array(nodegroups.iter().map(summary).collect()),
    );
    if let Some(next) = next {
        document.insert("next", Value::String(next));
    }
    Ok(respond(context, StatusCode::OK, &sorted_object(document)))
}

pub(crate) async fn get(
    request: &ResourceRequest<'_>,
    cluster_ident: &str,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        ..
    } = request;
    query.allow_only(&[])?;
    let identity = &context.identity;
    let cluster = resolve_for(
        state,
        identity,
        cluster_ident,
        Some("nodegroup:get_one_all_projects"),
    )
    .await?;
    state
        .policy
        .enforce("nodegroup:get", identity, &Target::caller(identity))?;
    let nodegroups = state.store.nodegroups_of_cluster(cluster.uuid).await?;
    let nodegroup = find_nodegroup(&nodegroups, ident).ok_or_else(|| nodegroup_not_found(ident))?;
    Ok(respond(
        context,
        StatusCode::OK,
        &sorted_object(detail(nodegroup, &cluster.labels, &context.base_url)),
    ))
}

fn invalid(error: NodeGroupInvalid) -> ApiError {
    ApiError::conflict(error.to_string())
}

fn node_labels_of(
    name: &str,
    role: &str,
    value: Option<&Value>,
) -> Result<Map<String, Value>, ApiError> {
    let labels = match value {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(object)) => object.clone(),
        Some(_) => {
            return Err(invalid(NodeGroupInvalid {
                attribute: "node_labels",
                nodegroup: name.to_owned(),
                explanation: "node_labels must be a dictionary".to_owned(),
            }))
        }
    };
    check_node_labels(name, role, &labels).map_err(invalid)?;
    Ok(labels)
}

pub(crate) async fn create(
    request: ResourceRequest<'_>,
    cluster_ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        body,
        ..
    } = request;
    query.allow_only(&[])?;
    let identity = &context.identity;
    let object = body_object(body, ARGUMENT)?;
    let attributes = parse_object("nodegroup", &object, CREATE_SCHEMA)?;
    let Some(name) = attributes.text("name") else {
        return Err(ApiError::invalid_input(
            "name",
            "None",
            "Mandatory field missing.",
        ));
    };
    let cluster = resolve_for(state, identity, cluster_ident, None).await?;
    state
        .policy
        .enforce("nodegroup:create", identity, &Target::caller(identity))?;
    let template = template_of(state, &cluster).await?;
    let driver = driver_for(state, &template, Action::CreateNodegroup);
    // The flavor is checked as the caller sees the cloud before the write (which cannot wait
    // on the cloud); the write checks it again in the driver's configuration.
    if let Some(driver) = driver
        .as_ref()
        .ok()
        .filter(|driver| driver.looks_up_in_cloud())
    {
        let labels = Labels::inherit(
            &cluster.labels,
            attributes.labels("labels"),
            attributes.boolean("merge_labels").unwrap_or(false),
        )
        .map_err(|error| crate::input::labels_beyond_bounds("labels", &error))?;
        let flavor_id = attributes.text("flavor_id").or(cluster.flavor_id.clone());
        let token = context.auth_token.as_ref().map(|token| token.0.as_str());
        driver
            .validate_references_as(
                token,
                &References {
                    flavor_id: flavor_id.as_deref(),
                    boot_volume_size: labels.get("boot_volume_size"),
                    ..References::default()
                },
            )
            .await?;
    }
    let request = change_request(identity);
    let new_uuid = Uuid::new_v4();
    let (_, stored) = state
        .store
        .modify_cluster(
            cluster.uuid,
            &Cause::request(&context.request_id),
            |aggregate| -> Result<(), ChangeError> {
                aggregate.check_nodegroup_name(&name)?;
                let role = attributes
                    .text("role")
                    .unwrap_or_else(|| "worker".to_owned());
                let node_count = attributes.integer("node_count").unwrap_or(1);
                let min_node_count = attributes.integer("min_node_count").unwrap_or(0);
                let max_node_count = attributes.integer("max_node_count");
                check_counts(&name, node_count, min_node_count, max_node_count).map_err(invalid)?;
                let node_labels = node_labels_of(&name, &role, object.get("node_labels"))?;
                let node_taints = match object.get("node_taints") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(value) => parse_node_taints(&name, &role, value).map_err(invalid)?,
                };
                if role == "master" {
                    return Err(ChangeRefused::MasterNodegroup.into());
                }
                let driver = driver.as_ref().map_err(copy_error)?;
                check_capacity(&**driver, &aggregate.cluster.project_id, node_count)?;
                let labels = Labels::inherit(
                    &aggregate.cluster.labels,
                    attributes.labels("labels"),
                    attributes.boolean("merge_labels").unwrap_or(false),
                )
                .map_err(|error| crate::input::labels_beyond_bounds("labels", &error))?;
                let flavor_id = attributes
                    .text("flavor_id")
                    .or(aggregate.cluster.flavor_id.clone());
                driver
                    .validate_references(&References {
                        flavor_id: flavor_id.as_deref(),
                        boot_volume_size: labels.get("boot_volume_size"),
                        ..References::default()
                    })
                    .map_err(ApiError::from)?;
                let nodegroup = NodeGroup {
                    id: 0,
                    uuid: new_uuid,
                    cluster_uuid: aggregate.cluster.uuid,
                    project_id: identity.project_id.clone(),
                    name: name.clone(),
                    docker_volume_size: attributes.integer("docker_volume_size"),
                    labels,
                    flavor_id,
                    image_id: attributes
                        .text("image_id")
                        .or(Some(template.image_id.clone())),
                    node_addresses: Vec::new(),
                    node_count,
                    role,
                    min_node_count,
                    max_node_count,
                    is_default: false,
                    stack_id: None,
                    status: ClusterStatus::CreateInProgress,
                    status_reason: None,
                    coe_version: None,
                    node_labels,
                    node_taints,
                    created_at: request.now,
                    updated_at: None,
                    version: 0,
                };
                aggregate.add_nodegroup(nodegroup, &request)?;
                Ok(())
            },
        )
        .await
        .map_err(|error| match error {
            // Taken as the database compares names (MariaDB ignores trailing spaces).
            ChangeError::Store(StoreError::NodegroupNameTaken) => {
                ApiError::from(ChangeRefused::NameTaken {
                    name: name.clone(),
                    cluster: cluster.display_name(),
                })
            }
            other => other.answer(|| {
                ApiError::not_found(format!("Cluster {cluster_ident} could not be found."))
            }),
        })?;
    state.operations_enqueued.notify_one();
    let nodegroup = stored
        .nodegroups
        .iter()
        .find(|stored| stored.uuid == new_uuid)
        .ok_or_else(|| ApiError::internal("a created nodegroup is not in its cluster"))?;
    let mut document = detail(nodegroup, &stored.cluster.labels, &context.base_url);
    // Upstream answers with the object as given, before a reload.
    document.insert("node_addresses", Value::Null);
    if object.get("node_labels").is_none_or(Value::is_null) {
        document.insert("node_labels", Value::Null);
    }
    if object.get("node_taints").is_none_or(Value::is_null) {
        document.insert("node_taints", Value::Null);
    }
    tracing::info!(cluster.id = %cluster.uuid, nodegroup.id = %new_uuid, "nodegroup creation accepted");
    Ok(respond(
        context,
        StatusCode::ACCEPTED,
        &sorted_object(document),
    ))
}

/// `replace /node_taints` carries a Python-literal (or JSON) list in a string. Decoding can
/// make a NUL out of an escape the request's own check never saw: it is refused here.
fn parse_taint_string(text: &str) -> Result<Value, ApiError> {
    let taints = magnum_domain::pyliteral::literal_eval(text)
        .or_else(|python_error| serde_json::from_str(text).map_err(|_| python_error))
        .map_err(|error| {
            ApiError::bad_request(format!(
                "Couldn't apply patch '/node_taints'. Reason: {error}"
            ))
        })?;
    if magnum_domain::contains_nul(&taints) {
        return Err(ApiError::bad_request(crate::input::NUL_REFUSED));
    }
    Ok(taints)
}

pub(crate) async fn update(
    request: ResourceRequest<'_>,
    cluster_ident: &str,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        body,
        ..
    } = request;
    query.allow_only(&[])?;
    let mut operations = parse_patch(body, &PATCH_RULES)?;
    for operation in &mut operations {
        let attribute = operation.path[1..].split('/').next().unwrap_or_default();
        if !PATCHABLE.contains(&attribute) {
            return Err(ApiError::bad_request(format!(
                "'{}' is an internal attribute and can not be updated",
                operation.path
            )));
        }
        if operation.op == PatchOp::Replace && operation.path == "/node_taints" {
            if let Some(Value::String(text)) = &operation.value {
                operation.value = Some(parse_taint_string(text)?);
            }
        }
    }
    let identity = &context.identity;
    let cluster = resolve_for(state, identity, cluster_ident, None).await?;
    state
        .policy
        .enforce("nodegroup:update", identity, &Target::caller(identity))?;
    let driver = match template_of(state, &cluster).await {
        Ok(template) => driver_for(state, &template, Action::UpdateNodegroup),
        Err(error) => Err(error),
    };
    let request = change_request(identity);
    let (changed, stored) = state
        .store
        .modify_cluster(
            cluster.uuid,
            &Cause::request(&context.request_id),
            |aggregate| -> Result<Option<Uuid>, ChangeError> {
                let current = aggregate
                    .nodegroup(ident)
                    .ok_or_else(|| nodegroup_not_found(ident))?
                    .clone();
                let original = detail(&current, &aggregate.cluster.labels, &context.base_url);
                let mut document: Map<String, Value> = original
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), value.clone()))
                    .collect();
                apply_patch(&mut document, &operations, &PATCH_RULES)?;
                let patched = parse_patched(
                    "nodegroup",
                    &document
                        .iter()
                        .filter(|(key, _)| {
                            ["min_node_count", "max_node_count"].contains(&key.as_str())
                        })
                        .map(|(key, value)| (key.clone(), value.clone()))
                        .collect(),
                    &CREATE_SCHEMA
                        .iter()
                        .copied()
                        .filter(|spec| ["min_node_count", "max_node_count"].contains(&spec.name))
                        .collect::<Vec<Attribute>>(),
                )?;
                let mut updated = current.clone();
                updated.min_node_count = patched.integer("min_node_count").unwrap_or(0);
                updated.max_node_count = patched.integer("max_node_count");
                check_counts(
                    &updated.name,
                    updated.node_count,
                    updated.min_node_count,
                    updated.max_node_count,
                )
                .map_err(invalid)?;
                updated.node_labels =
                    node_labels_of(&updated.name, &updated.role, document.get("node_labels"))?;
                updated.node_taints = match document.get("node_taints") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(value) => {
                        parse_node_taints(&updated.name, &updated.role, value).map_err(invalid)?
                    }
                };
                if updated == current {
                    return Ok(None);
                }
                let reaches_nodes = updated.node_labels != current.node_labels
                    || updated.node_taints != current.node_taints;
                if reaches_nodes {
                    driver.as_ref().map_err(copy_error)?;
                }
                aggregate.update_nodegroup(updated, &request)?;
                Ok(Some(current.uuid))
            },
        )
        .await
        .map_err(|error| error.answer(|| nodegroup_not_found(ident)))?;
    if stored.operation.is_some() {
        state.operations_enqueued.notify_one();
    }
    let nodegroup = match changed {
        Some(uuid) => stored.nodegroups.iter().find(|stored| stored.uuid == uuid),
        None => stored.nodegroup(ident),
    }
    .ok_or_else(|| nodegroup_not_found(ident))?;
    Ok(respond(
        context,
        StatusCode::ACCEPTED,
        &sorted_object(detail(nodegroup, &stored.cluster.labels, &context.base_url)),
    ))
}

pub(crate) async fn delete(
    request: &ResourceRequest<'_>,
    cluster_ident: &str,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        ..
    } = request;
    query.allow_only(&[])?;
    let identity = &context.identity;
    let cluster = resolve_for(state, identity, cluster_ident, None).await?;
    state
        .policy
        .enforce("nodegroup:delete", identity, &Target::caller(identity))?;
    let driver = match template_of(state, &cluster).await {
        Ok(template) => driver_for(state, &template, Action::DeleteNodegroup),
        Err(error) => Err(error),
    };
    let request = change_request(identity);
    let (queued, _) = state
        .store
        .modify_cluster(
            cluster.uuid,
            &Cause::request(&context.request_id),
            |aggregate| -> Result<bool, ChangeError> {
                let nodegroup = aggregate
                    .nodegroup(ident)
                    .ok_or_else(|| nodegroup_not_found(ident))?;
                if nodegroup.is_default {
                    return Err(ChangeRefused::DefaultNodegroup.into());
                }
                if nodegroup.status == ClusterStatus::DeleteInProgress {
                    return Ok(false);
                }
                let uuid = nodegroup.uuid;
                driver.as_ref().map_err(copy_error)?;
                Ok(aggregate.remove_nodegroup(uuid, &request)?)
            },
        )
        .await
        .map_err(|error| error.answer(|| nodegroup_not_found(ident)))?;
    if queued {
        state.operations_enqueued.notify_one();
    }
    Ok(respond_empty(context, StatusCode::NO_CONTENT))
}
