//! `/v1/clusters`: list, detail, get, create, update, delete, and the resize and upgrade
//! actions. Every change is stored together with the operation that carries it out; the
//! conductor does the rest.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use magnum_domain::aggregate::{ClusterAggregate, Request, Upgrade};
use magnum_domain::cluster::{
    Cluster, ClusterStatus, HealthStatus, NodeGroup, DEFAULT_MASTER_NODEGROUP,
    DEFAULT_WORKER_NODEGROUP,
};
use magnum_domain::cluster_template::TemplateRules;
use magnum_domain::event::Cause;
use magnum_domain::labels::Labels;
use magnum_domain::names::generate_name;
use magnum_domain::nodegroup::MAX_NODE_COUNT;
use magnum_domain::operation::OperationKind;
use magnum_domain::policy::Target;
use magnum_domain::quota::CLUSTER_RESOURCE;
use magnum_domain::time::Timestamp;
use magnum_driver::{Action, References};
use magnum_store::{ClusterScope, StoreError, TemplateScope, CLUSTER_SORT_KEYS};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{respond, respond_cached_list, respond_empty, sorted_object};
use crate::error::{ApiError, ChangeError};
use crate::input::body_object;
use crate::input::{attribute, mandatory, parse_object, Attribute, Kind};
use crate::lookup::{
    change_request, check_capacity, cluster_not_found as not_found, cluster_scope as scope,
    cluster_target as target, copy_error, driver_for, initiator, nodegroup_not_found,
    resolve_cluster as resolve, resolve_template, template_of,
};
use crate::microversion::Version;
use crate::pagination::{next_link, page_from_query, PAGINATION_ARGUMENTS};
use crate::patch::{apply_patch, parse_patch, PatchRules};
use crate::routing::ResourceRequest;
use crate::views::cluster::view;
use crate::AppState;

const TEXT: Kind = Kind::Text { min: 1, max: 255 };
pub(crate) const NAME_PATTERN: &str = "^[a-zA-Z][a-zA-Z0-9_.-]*$";
const DEFAULT_CREATE_TIMEOUT: i64 = 60;

pub(crate) const CREATE_SCHEMA: &[Attribute] = &[
    attribute("uuid", Kind::Uuid),
    attribute("name", Kind::Text { min: 1, max: 242 }),
    mandatory("cluster_template_id", TEXT),
    attribute("keypair", TEXT),
    attribute(
        "node_count",
        Kind::Integer {
            min: Some(0),
            max: Some(MAX_NODE_COUNT),
        },
    ),
    attribute(
        "master_count",
        Kind::Integer {
            min: Some(1),
            max: Some(MAX_NODE_COUNT),
        },
    ),
    attribute(
        "docker_volume_size",
        Kind::Integer {
            min: Some(1),
            max: None,
        },
    ),
    attribute("labels", Kind::Labels),
    attribute("merge_labels", Kind::Boolean),
    attribute("master_flavor_id", TEXT),
    attribute("flavor_id", TEXT),
    attribute(
        "create_timeout",
        Kind::Integer {
            min: Some(0),
            max: Some(magnum_domain::cluster::MAX_CREATE_TIMEOUT_MINUTES),
        },
    ),
    attribute("discovery_url", Kind::Text { min: 0, max: 255 }),
    attribute("fixed_network", TEXT),
    attribute("fixed_subnet", TEXT),
    attribute("floating_ip_enabled", Kind::Boolean),
    attribute("master_lb_enabled", Kind::Boolean),
    attribute("status", Kind::Ignored),
    attribute("health_status", Kind::Ignored),
    attribute("health_status_reason", Kind::Ignored),
    attribute("status_reason", Kind::ReadOnly),
    attribute("api_address", Kind::ReadOnly),
    attribute("node_addresses", Kind::ReadOnly),
    attribute("master_addresses", Kind::ReadOnly),
    attribute("stack_id", Kind::ReadOnly),
    attribute("cluster_id", Kind::ReadOnly),
    attribute("coe_version", Kind::ReadOnly),
    attribute("container_version", Kind::ReadOnly),
    attribute("project_id", Kind::ReadOnly),
    attribute("user_id", Kind::ReadOnly),
    attribute("links", Kind::ReadOnly),
    attribute("labels_overridden", Kind::ReadOnly),
    attribute("labels_added", Kind::ReadOnly),
    attribute("labels_skipped", Kind::ReadOnly),
    attribute("faults", Kind::ReadOnly),
    attribute("created_at", Kind::Timestamp),
    attribute("updated_at", Kind::Timestamp),
];

const PATCH_RULES: PatchRules = PatchRules {
    internal: &[
        "/created_at",
        "/id",
        "/links",
        "/updated_at",
        "/uuid",
        "/project_id",
        "/user_id",
        "/api_address",
        "/node_addresses",
        "/master_addresses",
        "/stack_id",
        "/cluster_id",
        "/ca_cert_ref",
        "/magnum_cert_ref",
        "/etcd_ca_cert_ref",
        "/front_proxy_ca_cert_ref",
    ],
    non_removable: &["/cluster_template_id"],
    dictionaries: &["/labels", "/health_status_reason"],
};

/// What PATCH may change on a cluster.
const PATCHABLE: [&str; 3] = ["node_count", "health_status", "health_status_reason"];

const ZERO_NODES_UNSUPPORTED: &str =
    "Resizing a nodegroup to zero is not supported in the provided microversion.";

async fn template_labels(state: &AppState, cluster: &Cluster) -> Result<Option<Labels>, ApiError> {
    Ok(state
        .store
        .cluster_template_by_uuid(cluster.cluster_template_id, TemplateScope::All)
        .await?
        .map(|template| template.labels))
}

pub(crate) async fn list(
    request: &ResourceRequest<'_>,
    detail: bool,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        cache,
        context,
        query,
        ..
    } = request;
    query.allow_only(&PAGINATION_ARGUMENTS)?;
    let identity = &context.identity;
    let (rule, all_projects_rule) = if detail {
        ("cluster:detail", "cluster:detail_all_projects")
    } else {
        ("cluster:get_all", "cluster:get_all_all_projects")
    };
    state
        .policy
        .enforce(rule, identity, &Target::caller(identity))?;
    let page = page_from_query(query, CLUSTER_SORT_KEYS, state.settings.max_limit)?;
    let scope = scope(state, identity, Some(all_projects_rule));
    // Lists of clusters at rest are served from the cache: any cluster write anywhere (and,
    // for details, any template write) changes the generations and so the key.
    let generation = if cache.is_enabled() {
        state.store.clusters_generation().await?
    } else {
        0
    };
    let template_generation = if cache.is_enabled() && detail {
        state.store.cluster_templates_generation().await?
    } else {
        0
    };
    // A NUL cannot reach a key through a path, so these keys never meet template ones.
    let cache_key = format!(
        "\0clusters|{detail}|{scope:?}|{}|{:?}|{}|{:?}|{}|{}|{template_generation}",
        page.sort_key, page.direction, page.limit, page.marker, context.version, context.base_url
    );
    respond_cached_list(context, cache, cache_key, generation, || async {
        let clusters = match state.store.list_clusters(scope, &page).await {
            Ok(clusters) => clusters,
            Err(StoreError::MarkerNotFound(marker)) => return Err(not_found(&marker.to_string())),
            Err(error) => return Err(error.into()),
        };
        let mut template_labels_by_uuid: BTreeMap<Uuid, Option<Labels>> = BTreeMap::new();
        if detail {
            for cluster in &clusters {
                if let std::collections::btree_map::Entry::Vacant(entry) =
                    template_labels_by_uuid.entry(cluster.cluster_template_id)
                {
                    entry.insert(template_labels(state, cluster).await?);
                }
            }
        }
        let collection_path = if detail {
            "clusters/detail"
        } else {
            "clusters"
        };
        let next = next_link(
            &context.base_url,
            collection_path,
            &page,
            clusters.len(),
            clusters.last().map(|cluster| cluster.uuid.to_string()),
        );
        let items: Vec<Value> = clusters
            .iter()
            .map(|cluster| {
                let labels = template_labels_by_uuid
                    .get(&cluster.cluster_template_id)
                    .and_then(Option::as_ref);
                sorted_object(view(
                    cluster,
                    labels,
                    detail,
                    context.version,
                    &context.base_url,
                ))
            })
            .collect();
        let mut document = BTreeMap::new();
        document.insert("clusters", Value::Array(items));
        if let Some(next) = next {
            document.insert("next", Value::String(next));
        }
        Ok(axum::body::Bytes::from(magnum_types::encode(
            &sorted_object(document),
        )))
    })
    .await
}

pub(crate) async fn get(
    request: &ResourceRequest<'_>,
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
    let cluster = resolve(
        state,
        ident,
        scope(state, identity, Some("cluster:get_one_all_projects")),
    )
    .await?;
    state
        .policy
        .enforce("cluster:get", identity, &target(&cluster))?;
    let labels = template_labels(state, &cluster).await?;
    let mut document = view(
        &cluster,
        labels.as_ref(),
        true,
        context.version,
        &context.base_url,
    );
    if cluster.status.is_failed() {
        let faults: Map<String, Value> = state
            .store
            .nodegroups_of_cluster(cluster.uuid)
            .await?
            .into_iter()
            .filter(|nodegroup| nodegroup.status.as_str().ends_with("FAILED"))
            .map(|nodegroup| {
                (
                    nodegroup.name.clone(),
                    json!(nodegroup.status_reason.unwrap_or_default()),
                )
            })
            .collect();
        document.insert("faults", Value::Object(faults));
    }
    Ok(respond(context, StatusCode::OK, &sorted_object(document)))
}

fn uuid_document(uuid: Uuid) -> Value {
    json!({"uuid": uuid.to_string()})
}

/// The limit of clusters for a project: its quota row, or the configured default.
async fn cluster_limit(state: &AppState, project_id: &str) -> Result<i64, ApiError> {
    Ok(state
        .store
        .quota(project_id, CLUSTER_RESOURCE)
        .await?
        .map_or(state.settings.max_clusters_per_project, |quota| {
            quota.hard_limit
        }))
}

fn limit_reached(limit: i64) -> ApiError {
    ApiError::forbidden(format!(
        "Resource limit exceeded: You have reached the maximum clusters per project, {limit}. \
         You may delete a cluster to make room for a new one."
    ))
}

pub(crate) async fn create(request: ResourceRequest<'_>) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        body,
        ..
    } = request;
    query.allow_only(&[])?;
    let identity = &context.identity;
    let version = context.version;
    let object = body_object(body, "cluster")?;
    let attributes = parse_object("cluster", &object, CREATE_SCHEMA)?;
    if let Some(name) = attributes.text("name") {
        check_name(&name)?;
    }
    let template_ident = attributes.text("cluster_template_id").unwrap_or_default();
    let template_scope = if state.policy.is_admin(identity) {
        TemplateScope::All
    } else {
        TemplateScope::VisibleTo(&identity.project_id)
    };
    let template = match resolve_template(state, &template_ident, template_scope).await {
        Ok(template) => template,
        Err(error) if error.status == StatusCode::NOT_FOUND && version < Version::new(1, 10) => {
            return Err(ApiError::bad_request(error.detail))
        }
        Err(error) => return Err(error),
    };
    let driver = driver_for(state, &template, Action::CreateCluster)?;
    let docker_volume_size = attributes
        .integer("docker_volume_size")
        .or(template.docker_volume_size);
    TemplateRules::check_devicemapper(
        template.docker_storage_driver.as_deref(),
        docker_volume_size,
    )?;
    let master_count = attributes.integer("master_count").unwrap_or(1);
    driver
        .check_master_count(master_count)
        .map_err(ApiError::bad_request)?;
    let node_count = attributes.integer("node_count").unwrap_or(1);
    if node_count == 0 && version < Version::new(1, 10) {
        return Err(ApiError::bad_request(ZERO_NODES_UNSUPPORTED));
    }
    state
        .policy
        .enforce("cluster:create", identity, &Target::caller(identity))?;
    let limit = cluster_limit(state, &identity.project_id).await?;
    if state.store.count_clusters(&identity.project_id).await? >= limit {
        return Err(limit_reached(limit));
    }
    if template.hidden && !state.policy.is_admin(identity) {
        return Err(ApiError::forbidden("Not authorized."));
    }
    let labels = Labels::inherit(
        &template.labels,
        attributes.labels("labels"),
        attributes.boolean("merge_labels").unwrap_or(false),
    )
    .map_err(|error| crate::input::labels_beyond_bounds("labels", &error))?;
    let keypair = attributes.text("keypair").or(template.keypair_id.clone());
    let flavor_id = attributes.text("flavor_id").or(template.flavor_id.clone());
    let master_flavor_id = attributes
        .text("master_flavor_id")
        .or(template.master_flavor_id.clone());
    let fixed_network = attributes
        .text("fixed_network")
        .or(template.fixed_network.clone());
    let fixed_subnet = attributes
        .text("fixed_subnet")
        .or(template.fixed_subnet.clone());
    let master_lb_enabled = attributes
        .boolean("master_lb_enabled")
        .unwrap_or(template.master_lb_enabled);
    let floating_ip_enabled = attributes
        .boolean("floating_ip_enabled")
        .unwrap_or(template.floating_ip_enabled);
    let token = context.auth_token.as_ref().map(|token| token.0.as_str());
    // As upstream, the template's image too: the caller must see it (a public template may
    // name an image only its owner's project sees).
    if driver.looks_up_in_cloud()
        && driver
            .find_image_as(token, &template.image_id)
            .await?
            .is_none()
    {
        return Err(magnum_driver::ReferenceError::ImageNotFound(template.image_id.clone()).into());
    }
    driver
        .validate_references_as(
            token,
            &References {
                flavor_id: flavor_id.as_deref(),
                master_flavor_id: master_flavor_id.as_deref(),
                external_network_id: template.external_network_id.as_deref(),
                fixed_network: fixed_network.as_deref(),
                fixed_subnet: fixed_subnet.as_deref(),
                keypair: keypair.as_deref(),
                boot_volume_size: labels.get("boot_volume_size"),
            },
        )
        .await?;
    if master_count > 1 && !master_lb_enabled {
        return Err(ApiError::bad_request(
            "master_count must be 1 when master_lb_enabled is False",
        ));
    }
    check_capacity(
        &*driver,
        &identity.project_id,
        master_count.saturating_add(node_count),
    )?;
    let now = Timestamp::now();
    let cluster = Cluster {
        id: 0,
        uuid: Uuid::new_v4(),
        name: Some(
            attributes
                .text("name")
                .unwrap_or_else(|| generate_name("cluster")),
        ),
        project_id: identity.project_id.clone(),
        user_id: identity.user_id.clone(),
        cluster_template_id: template.uuid,
        keypair,
        docker_volume_size,
        labels: labels.clone(),
        master_flavor_id: master_flavor_id.clone(),
        flavor_id: flavor_id.clone(),
        create_timeout: Some(
            attributes
                .integer("create_timeout")
                .unwrap_or(DEFAULT_CREATE_TIMEOUT),
        ),
        discovery_url: attributes.text("discovery_url"),
        fixed_network,
        fixed_subnet,
        floating_ip_enabled,
        master_lb_enabled,
        status: ClusterStatus::CreateInProgress,
        status_reason: None,
        health_status: None,
        health_status_reason: Map::new(),
        stack_id: None,
        api_address: None,
        coe_version: None,
        container_version: None,
        node_count: 0,
        master_count: 0,
        node_addresses: Vec::new(),
        master_addresses: Vec::new(),
        created_at: now,
        updated_at: None,
        version: 0,
    };
    let default_nodegroup =
        |name: &str, role: &str, count: i64, flavor: Option<String>| NodeGroup {
            id: 0,
            uuid: Uuid::new_v4(),
            cluster_uuid: cluster.uuid,
            project_id: identity.project_id.clone(),
            name: name.to_owned(),
            docker_volume_size,
            labels: labels.clone(),
            flavor_id: flavor,
            image_id: Some(template.image_id.clone()),
            node_addresses: Vec::new(),
            node_count: count,
            role: role.to_owned(),
            min_node_count: 0,
            max_node_count: None,
            is_default: true,
            stack_id: None,
            status: ClusterStatus::CreateInProgress,
            status_reason: None,
            coe_version: None,
            node_labels: Map::new(),
            node_taints: Vec::new(),
            created_at: now,
            updated_at: None,
            version: 0,
        };
    let mut worker = default_nodegroup(DEFAULT_WORKER_NODEGROUP, "worker", node_count, flavor_id);
    worker.min_node_count = labels
        .get("min_node_count")
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let nodegroups = [
        default_nodegroup(
            DEFAULT_MASTER_NODEGROUP,
            "master",
            master_count,
            master_flavor_id,
        ),
        worker,
    ];
    let created = ClusterAggregate::create(
        cluster,
        nodegroups.into(),
        &Request {
            initiator: initiator(identity),
            now,
        },
    );
    let Some(operation) = &created.operation else {
        return Err(ApiError::internal("a new cluster comes with its operation"));
    };
    let credential =
        super::certificates::delegate_credential(state, context, &*driver, created.cluster.uuid)
            .await?;
    let stored = state
        .store
        .create_cluster_with_credential(
            &created.cluster,
            &created.nodegroups,
            operation,
            Some(limit),
            credential.as_ref().map(|pending| pending.credential()),
            &Cause::request(&context.request_id),
        )
        .await;
    // Recorded with the cluster; otherwise the guard revokes it once it is sure it was not.
    if let (Ok(_), Some(pending)) = (&stored, credential) {
        pending.recorded();
    }
    let stored = match stored {
        Ok(stored) => stored,
        Err(StoreError::LimitReached { limit }) => return Err(limit_reached(limit)),
        Err(StoreError::NotFound) => {
            return Err(ApiError::not_found(format!(
                "ClusterTemplate {template_ident} could not be found."
            )))
        }
        Err(error) => return Err(error.into()),
    };
    state.operations_enqueued.notify_one();
    tracing::info!(cluster.id = %stored.uuid, project.id = %stored.project_id, "cluster creation accepted");
    Ok(respond(
        context,
        StatusCode::ACCEPTED,
        &uuid_document(stored.uuid),
    ))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let mut characters = name.chars();
    let valid = characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && characters.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_input(
            "name",
            name,
            &format!("Value should match the pattern {NAME_PATTERN}"),
        ))
    }
}

pub(crate) async fn update(
    request: ResourceRequest<'_>,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        body,
        ..
    } = request;
    let version = context.version;
    if version >= Version::new(1, 3) {
        query.allow_only(&["rollback"])?;
    } else {
        query.allow_only(&[])?;
    }
    let rollback = match query.get("rollback") {
        Some(text) => crate::input::parse_bool("rollback", &Value::String(text.to_owned()))?,
        None => false,
    };
    let operations = parse_patch(body, &PATCH_RULES)?;
    let identity = &context.identity;
    let scope = scope(state, identity, Some("cluster:update_all_projects"));
    let cluster = resolve(state, ident, scope).await?;
    state
        .policy
        .enforce("cluster:update", identity, &target(&cluster))?;
    state.policy.enforce(
        "cluster:update_health_status",
        identity,
        &Target::caller(identity),
    )?;
    // Needed only when the count changes; its refusal counts only then.
    let driver = match template_of(state, &cluster).await {
        Ok(template) => driver_for(state, &template, Action::ScaleWorkers),
        Err(error) => Err(error),
    };
    let request = change_request(identity);
    let outcome = state
        .store
        .modify_cluster(
            cluster.uuid,
            &Cause::request(&context.request_id),
            |aggregate| -> Result<bool, ChangeError> {
                let cluster = &aggregate.cluster;
                let worker_count = aggregate
                    .default_worker()
                    .map_or(0, |worker| worker.node_count);
                let mut original = view(cluster, None, true, version, &context.base_url);
                original.insert("node_count", json!(worker_count));
                let original: Map<String, Value> = original
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value))
                    .collect();
                let mut document = original.clone();
                apply_patch(&mut document, &operations, &PATCH_RULES)?;
                let mut changed: Vec<&str> = original
                    .keys()
                    .chain(document.keys())
                    .map(String::as_str)
                    .filter(|key| original.get(*key) != document.get(*key))
                    .collect();
                changed.sort_unstable();
                changed.dedup();
                let forbidden: Vec<&str> = changed
                    .iter()
                    .copied()
                    .filter(|key| !PATCHABLE.contains(key))
                    .collect();
                if !forbidden.is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "cannot change cluster property(ies) {}.",
                        forbidden.join(", ")
                    ))
                    .into());
                }
                let node_count = patched_node_count(&document, version)?;
                let health_status = patched_health_status(&document)?;
                let health_status_reason = match document.get("health_status_reason") {
                    Some(Value::Object(reason)) => reason.clone(),
                    _ => Map::new(),
                };
                if health_status_reason != cluster.health_status_reason {
                    crate::input::check_health_status_reason(&health_status_reason)?;
                }
                aggregate.set_health(health_status, health_status_reason, request.now);
                if node_count == worker_count {
                    return Ok(false);
                }
                let driver = driver
                    .as_ref()
                    .map_err(|error| ApiError::new(error.status, error.detail.clone()))?;
                check_capacity(
                    &**driver,
                    &aggregate.cluster.project_id,
                    node_count.saturating_sub(worker_count),
                )?;
                aggregate.scale_default_workers(node_count, rollback, &request)?;
                Ok(true)
            },
        )
        .await
        .map_err(|error| error.answer(|| not_found(ident)))?;
    let (queued, stored) = outcome;
    if queued {
        state.operations_enqueued.notify_one();
    }
    tracing::info!(cluster.id = %stored.cluster.uuid, "cluster update accepted");
    Ok(respond(
        context,
        StatusCode::ACCEPTED,
        &uuid_document(stored.cluster.uuid),
    ))
}

/// The `node_count` of a patched cluster document.
fn patched_node_count(document: &Map<String, Value>, version: Version) -> Result<i64, ApiError> {
    let node_count = match document.get("node_count") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(number)) if number.as_i64().is_some() => {
            let count = number.as_i64().unwrap_or_default();
            if count < 0 {
                return Err(ApiError::invalid_input(
                    "node_count",
                    &count.to_string(),
                    "Value should be greater or equal to 0",
                ));
            }
            if count > MAX_NODE_COUNT {
                return Err(ApiError::invalid_input(
                    "node_count",
                    &count.to_string(),
                    &format!("Value should be lower or equal to {MAX_NODE_COUNT}"),
                ));
            }
            count
        }
        Some(other) => {
            return Err(ApiError::invalid_input(
                "node_count",
                &magnum_domain::pyliteral::py_str(other),
                &format!(
                    "'<' not supported between instances of '{}' and 'int'",
                    crate::input::python_type(other)
                        .trim_start_matches("<class '")
                        .trim_end_matches("'>")
                ),
            ))
        }
    };
    if node_count == 0 && version < Version::new(1, 10) {
        return Err(ApiError::bad_request(ZERO_NODES_UNSUPPORTED));
    }
    Ok(node_count)
}

/// The `health_status` of a patched cluster document.
fn patched_health_status(document: &Map<String, Value>) -> Result<Option<HealthStatus>, ApiError> {
    match document.get("health_status") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.parse::<HealthStatus>().map_err(|()| {
            ApiError::invalid_input(
                "health_status",
                text,
                "Value should be one of: UNHEALTHY, HEALTHY, UNKNOWN",
            )
        })?)),
        Some(other) => Err(ApiError::invalid_input(
            "health_status",
            &magnum_domain::pyliteral::py_str(other),
            "Value should be one of: UNHEALTHY, HEALTHY, UNKNOWN",
        )),
    }
}

/// How long the credentials of a force-deleted cluster stay valid: the longest
/// `force_delete_grace` (a day) and an hour.
const FORCE_DELETED_CREDENTIAL_GRACE_SECONDS: i64 = 86_400 + 3_600;

/// How long a force delete waits for the driver to start releasing the cluster's resources.
const ABANDON_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn delete(
    request: &ResourceRequest<'_>,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        ..
    } = request;
    query.allow_only(&["force"])?;
    let force = match query.get("force") {
        Some(text) => crate::input::parse_bool("force", &Value::String(text.to_owned()))?,
        None => false,
    };
    let identity = &context.identity;
    let scope = scope(state, identity, Some("cluster:delete_all_projects"));
    let cluster = resolve(state, ident, scope).await?;
    state
        .policy
        .enforce("cluster:delete", identity, &target(&cluster))?;
    if force {
        // For clusters whose driver resources are gone already (or a driver that is
        // no longer enabled): the records go without asking the driver.
        state
            .policy
            .enforce("cluster:force_delete", identity, &Target::caller(identity))?;
        state
            .store
            .cancel_operations(
                cluster.uuid,
                None,
                "Stopped: the cluster was force-deleted.",
                Timestamp::now(),
            )
            .await?;
        // A driver still enabled starts tearing down what it made and finishes on its own;
        // the records go whatever it answers (that is what forcing is for), but not in
        // silence.
        let driver = template_of(state, &cluster)
            .await
            .ok()
            .and_then(|template| {
                state
                    .drivers
                    .by_name(template.driver.as_deref().unwrap_or_default())
            });
        if let Some(driver) = driver {
            match tokio::time::timeout(ABANDON_TIMEOUT, driver.abandon(&cluster)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(cluster.id = %cluster.uuid, %error, "force delete: the driver could not release the cluster's resources; they remain");
                }
                Err(_) => {
                    tracing::error!(cluster.id = %cluster.uuid, "force delete: the driver did not answer in time; the cluster's resources remain");
                }
            }
        }
        // Cluster API still tears the cluster down with its credential: revoked only after
        // the longest teardown the driver allows (force_delete_grace, at most a day) and an
        // hour more, by the conductor's sweep.
        state
            .store
            .purge_cluster_revoking_after(
                cluster.uuid,
                Some(Timestamp::from_unix_seconds(
                    Timestamp::now().unix_seconds() + FORCE_DELETED_CREDENTIAL_GRACE_SECONDS,
                )),
                &Cause::request(&context.request_id),
            )
            .await?;
        tracing::warn!(cluster.id = %cluster.uuid, user.id = %identity.user_id, "cluster force-deleted");
        return Ok(respond_empty(context, StatusCode::NO_CONTENT));
    }
    // Asking again while a deletion is queued changes nothing.
    let deletion_queued = cluster.status == ClusterStatus::DeleteInProgress
        && state
            .store
            .unfinished_operations_of(cluster.uuid)
            .await?
            .iter()
            .any(|operation| operation.kind == OperationKind::DeleteCluster);
    let request = change_request(identity);
    let (queued, _) = state
        .store
        .modify_cluster(
            cluster.uuid,
            &Cause::request(&context.request_id),
            |aggregate| -> Result<bool, ChangeError> {
                if deletion_queued && aggregate.is_being_deleted() {
                    return Ok(false);
                }
                aggregate.start_delete(&request)?;
                Ok(true)
            },
        )
        .await
        .map_err(|error| error.answer(|| not_found(ident)))?;
    if queued {
        state.operations_enqueued.notify_one();
        tracing::info!(cluster.id = %cluster.uuid, "cluster deletion accepted");
    }
    Ok(respond_empty(context, StatusCode::NO_CONTENT))
}

pub(crate) const RESIZE_SCHEMA: &[Attribute] = &[
    mandatory(
        "node_count",
        Kind::Integer {
            min: Some(0),
            max: Some(MAX_NODE_COUNT),
        },
    ),
    attribute("nodes_to_remove", Kind::Ignored),
    attribute("nodegroup", Kind::Text { min: 0, max: 255 }),
];

fn nodes_to_remove(object: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    match object.get("nodes_to_remove") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                other => Err(ApiError::invalid_input(
                    "nodes_to_remove",
                    &magnum_domain::pyliteral::py_str(other),
                    "Wrong type. Expected '<class 'str'>'",
                )),
            })
            .collect(),
        Some(other) => Err(ApiError::invalid_input(
            "nodes_to_remove",
            &magnum_domain::pyliteral::py_str(other),
            "Wrong type. Expected '<class 'list'>'",
        )),
    }
}

pub(crate) async fn resize(
    request: ResourceRequest<'_>,
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
    let identity = &context.identity;
    let version = context.version;
    let object = match body {
        None => Map::new(),
        other => body_object(other, "cluster_resize_req")?,
    };
    let attributes = parse_object("cluster_resize_req", &object, RESIZE_SCHEMA)?;
    let removals = nodes_to_remove(&object)?;
    let node_count = attributes.integer("node_count").unwrap_or_default();
    // No all-projects reach for admins here, as upstream.
    let cluster = resolve(state, ident, ClusterScope::Project(&identity.project_id)).await?;
    state
        .policy
        .enforce("cluster:resize", identity, &target(&cluster))?;
    let template = template_of(state, &cluster).await?;
    let masters = driver_for(state, &template, Action::ScaleMasters);
    let workers = driver_for(state, &template, Action::ScaleWorkers);
    let requested = attributes.text("nodegroup").filter(|name| !name.is_empty());
    let request = change_request(identity);
    let (nodegroup, _) = state
        .store
        .modify_cluster(
            cluster.uuid,
            &Cause::request(&context.request_id),
            |aggregate| -> Result<String, ChangeError> {
                let nodegroup = match &requested {
                    Some(name) => aggregate
                        .nodegroup(name)
                        .ok_or_else(|| nodegroup_not_found(name))?,
                    None => aggregate
                        .default_worker()
                        .ok_or_else(|| nodegroup_not_found(DEFAULT_WORKER_NODEGROUP))?,
                }
                .clone();
                let driver = if nodegroup.is_master() {
                    let driver = masters.as_ref().map_err(copy_error)?;
                    driver
                        .check_master_count(node_count)
                        .map_err(ApiError::bad_request)?;
                    driver
                } else {
                    ClusterAggregate::check_resize_range(&nodegroup, node_count)?;
                    if node_count == 0 && version < Version::new(1, 10) {
                        return Err(ApiError::bad_request(ZERO_NODES_UNSUPPORTED).into());
                    }
                    workers.as_ref().map_err(copy_error)?
                };
                check_capacity(
                    &**driver,
                    &aggregate.cluster.project_id,
                    node_count.saturating_sub(nodegroup.node_count),
                )?;
                aggregate.resize(nodegroup.uuid, node_count, removals.clone(), &request)?;
                Ok(nodegroup.name)
            },
        )
        .await
        .map_err(|error| error.answer(|| not_found(ident)))?;
    state.operations_enqueued.notify_one();
    tracing::info!(cluster.id = %cluster.uuid, nodegroup = %nodegroup, node_count, "cluster resize accepted");
    Ok(respond(
        context,
        StatusCode::ACCEPTED,
        &uuid_document(cluster.uuid),
    ))
}

pub(crate) const UPGRADE_SCHEMA: &[Attribute] = &[
    mandatory("cluster_template", TEXT),
    attribute(
        "max_batch_size",
        Kind::Integer {
            min: Some(1),
            max: None,
        },
    ),
    attribute("nodegroup", Kind::Text { min: 0, max: 255 }),
];

pub(crate) async fn upgrade(
    request: ResourceRequest<'_>,
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
    let identity = &context.identity;
    let object = match body {
        None => Map::new(),
        other => body_object(other, "cluster_upgrade_req")?,
    };
    let attributes = parse_object("cluster_upgrade_req", &object, UPGRADE_SCHEMA)?;
    let template_ident = attributes.text("cluster_template").unwrap_or_default();
    let scope = scope(state, identity, Some("cluster:upgrade_all_projects"));
    let cluster = resolve(state, ident, scope).await?;
    state
        .policy
        .enforce("cluster:upgrade", identity, &target(&cluster))?;
    let template_scope = if state.policy.is_admin(identity) {
        TemplateScope::All
    } else {
        TemplateScope::VisibleTo(&identity.project_id)
    };
    let new_template = resolve_template(state, &template_ident, template_scope).await?;
    let current_template = template_of(state, &cluster).await?;
    let driver = driver_for(state, &current_template, Action::UpgradeCluster);
    let named = attributes.text("nodegroup").filter(|name| !name.is_empty());
    let new_name = new_template
        .name
        .clone()
        .unwrap_or_else(|| new_template.uuid.to_string());
    let current_name = current_template.name.clone().unwrap_or_default();
    let upgrade = Upgrade {
        template: new_template.uuid,
        template_name: &new_name,
        image_id: &new_template.image_id,
        current_template_name: &current_name,
        nodegroup: named.as_deref(),
        max_batch_size: attributes.integer("max_batch_size"),
        kube_tag: new_template.labels.get("kube_tag"),
    };
    let request = change_request(identity);
    state
        .store
        .modify_cluster(cluster.uuid, &Cause::request(&context.request_id), |aggregate| -> Result<(), ChangeError> {
            aggregate.upgrade_targets(&upgrade)?;
            let driver = driver.as_ref().map_err(copy_error)?;
            driver
                .check_upgrade(&current_template, &new_template)
                .map_err(ApiError::bad_request)?;
            if new_template.coe != current_template.coe
                || new_template.driver.as_deref() != Some(driver.name())
            {
                return Err(ApiError::bad_request(format!(
                    "Cluster template {} cannot be used to upgrade this cluster: it builds {} clusters with the {} driver, the cluster is a {} cluster of the {} driver.",
                    new_name,
                    new_template.coe,
                    new_template.driver.clone().unwrap_or_default(),
                    current_template.coe,
                    driver.name()
                ))
                .into());
            }
            aggregate.upgrade(&upgrade, &request)?;
            Ok(())
        })
        .await
        .map_err(|error| error.answer(|| not_found(ident)))?;
    state.operations_enqueued.notify_one();
    tracing::info!(cluster.id = %cluster.uuid, cluster_template.id = %new_template.uuid, "cluster upgrade accepted");
    Ok(respond(
        context,
        StatusCode::ACCEPTED,
        &uuid_document(cluster.uuid),
    ))
}
