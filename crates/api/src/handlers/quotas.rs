//! `/v1/quotas`: per-project cluster limits (admin), readable by a project's own members.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use magnum_domain::policy::Target;
use magnum_domain::quota::{Quota, CLUSTER_RESOURCE};
use magnum_domain::time::Timestamp;
use magnum_store::{QuotaPage, SortDirection, StoreError, QUOTA_SORT_KEYS};
use serde_json::{json, Value};

use super::sorted_object;
use super::{respond, respond_empty};
use crate::error::ApiError;
use crate::input::body_object;
use crate::input::{attribute, parse_bool, parse_object, Attribute, Kind};
use crate::routing::ResourceRequest;
use crate::views::quota::view;

/// How upstream names the body in its messages.
const ARGUMENT: &str = "quota";

pub(crate) const SCHEMA: &[Attribute] = &[
    attribute("project_id", Kind::Text { min: 1, max: 255 }),
    attribute("resource", Kind::Choice(&[CLUSTER_RESOURCE])),
    attribute(
        "hard_limit",
        Kind::Integer {
            min: Some(0),
            max: None,
        },
    ),
    // Upstream's Quota type has `id` as a writable integer ≥ 1: a PATCH body that carries it
    // (Horizon's quota form sends the quota back whole) is valid, and the id is not changed.
    // A create's id is checked the same way and not used either (upstream would insert the
    // row under it; here the store numbers rows).
    attribute(
        "id",
        Kind::Integer {
            min: Some(1),
            max: None,
        },
    ),
    attribute("created_at", Kind::Timestamp),
    attribute("updated_at", Kind::Timestamp),
];

fn not_found(project_id: &str, resource: &str) -> ApiError {
    ApiError::not_found(format!(
        "Quota could not be found: project_id {project_id} resource {resource}."
    ))
}

fn admin_only(request: &ResourceRequest<'_>, rule: &str) -> Result<(), ApiError> {
    let identity = &request.context.identity;
    request
        .state
        .policy
        .enforce(rule, identity, &Target::caller(identity))?;
    Ok(())
}

pub(crate) async fn list(request: &ResourceRequest<'_>) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        ..
    } = request;
    query.allow_only(&["limit", "marker", "sort_key", "sort_dir", "all_tenants"])?;
    admin_only(request, "quota:get_all")?;
    let all_tenants = match query.get("all_tenants") {
        Some(text) => parse_bool("all_tenants", &Value::String(text.to_owned()))?,
        None => false,
    };
    // The uuid-marker parser does not apply: quota markers are ids.
    let mut without_marker = Vec::new();
    for name in ["limit", "sort_key", "sort_dir"] {
        if let Some(value) = query.get(name) {
            without_marker.push(format!("{name}={value}"));
        }
    }
    let arguments = crate::input::QueryArguments::parse(Some(&without_marker.join("&")));
    let page =
        crate::pagination::page_from_query(&arguments, QUOTA_SORT_KEYS, state.settings.max_limit)?;
    let marker = match query.get("marker") {
        None => None,
        Some(text) => Some(text.trim().parse::<i64>().map_err(|_| {
            ApiError::invalid_input(
                "marker",
                text,
                &format!("unable to convert to int. Error: invalid literal for int() with base 10: '{text}'"),
            )
        })?),
    };
    let quota_page = QuotaPage {
        sort_key: page.sort_key,
        direction: page.direction,
        limit: page.limit,
        marker,
    };
    let project = (!all_tenants).then_some(context.identity.project_id.as_str());
    let quotas = match state.store.list_quotas(project, &quota_page).await {
        Ok(quotas) => quotas,
        Err(StoreError::NotFound) => {
            return Err(ApiError::not_found(format!(
                "Quota could not be found: id {}.",
                marker.unwrap_or_default()
            )))
        }
        Err(error) => return Err(error.into()),
    };
    let mut document = BTreeMap::new();
    if !quotas.is_empty() && quotas.len() >= page.limit as usize {
        let direction = match page.direction {
            SortDirection::Ascending => "asc",
            SortDirection::Descending => "desc",
        };
        document.insert(
            "next",
            json!(format!(
                "{}/v1/quotas?sort_key={}&sort_dir={direction}&limit={}&marker={}",
                context.base_url,
                page.sort_key,
                page.limit,
                quotas.last().map_or(0, |quota| quota.id)
            )),
        );
    }
    document.insert("quotas", Value::Array(quotas.iter().map(view).collect()));
    Ok(respond(context, StatusCode::OK, &sorted_object(document)))
}

pub(crate) async fn get(
    request: &ResourceRequest<'_>,
    project_id: &str,
    resource: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        ..
    } = request;
    query.allow_only(&[])?;
    let identity = &context.identity;
    state
        .policy
        .enforce("quota:get", identity, &Target::caller(identity))?;
    if !state.policy.is_admin(identity) && identity.project_id != project_id {
        return Err(ApiError::forbidden("Not authorized."));
    }
    match state.store.quota(project_id, resource).await? {
        Some(quota) => Ok(respond(context, StatusCode::OK, &view(&quota))),
        None => Ok(respond(
            context,
            StatusCode::OK,
            &json!({
                "hard_limit": state.settings.max_clusters_per_project,
                "project_id": project_id,
                "resource": CLUSTER_RESOURCE,
            }),
        )),
    }
}

pub(crate) async fn create(request: ResourceRequest<'_>) -> Result<Response<Body>, ApiError> {
    admin_only(&request, "quota:create")?;
    let ResourceRequest {
        state,
        context,
        query,
        body,
        ..
    } = request;
    query.allow_only(&[])?;
    let object = body_object(body, ARGUMENT)?;
    let attributes = parse_object("quota", &object, SCHEMA)?;
    let Some(project_id) = attributes.text("project_id") else {
        return Err(ApiError::bad_request("Must provide a valid project ID."));
    };
    let resource = attributes
        .text("resource")
        .unwrap_or_else(|| CLUSTER_RESOURCE.to_owned());
    match state.authenticator.project_exists(&project_id).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(ApiError::not_found(format!(
                "The project_id {project_id} could not be found."
            )))
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The identity service is unavailable. Retry later.",
            ))
        }
    }
    let quota = Quota {
        id: 0,
        project_id,
        resource,
        hard_limit: attributes.integer("hard_limit").unwrap_or(1),
        created_at: Timestamp::now(),
        updated_at: None,
    };
    match state.store.insert_quota(&quota).await {
        Ok(stored) => Ok(respond(context, StatusCode::CREATED, &view(&stored))),
        Err(StoreError::Conflict) => Err(ApiError::conflict(format!(
            "Quota for project {} already exists for resource {}.",
            quota.project_id, quota.resource
        ))),
        Err(error) => Err(error.into()),
    }
}

pub(crate) async fn update(
    request: ResourceRequest<'_>,
    project_id: &str,
    resource: &str,
) -> Result<Response<Body>, ApiError> {
    admin_only(&request, "quota:update")?;
    let ResourceRequest {
        state,
        context,
        query,
        body,
        ..
    } = request;
    query.allow_only(&[])?;
    let mut object = body_object(body, ARGUMENT)?;
    // The path names the quota; body values for it are overridden, as upstream.
    object.insert("project_id".to_owned(), json!(project_id));
    object.insert("resource".to_owned(), json!(resource));
    let attributes = parse_object("quota", &object, SCHEMA)?;
    let hard_limit = attributes.integer("hard_limit").unwrap_or(1);
    match state
        .store
        .update_quota(project_id, resource, hard_limit, Timestamp::now())
        .await
    {
        Ok(quota) => Ok(respond(context, StatusCode::ACCEPTED, &view(&quota))),
        Err(StoreError::NotFound) => Err(not_found(project_id, resource)),
        Err(error) => Err(error.into()),
    }
}

pub(crate) async fn delete(
    request: &ResourceRequest<'_>,
    project_id: &str,
    resource: &str,
) -> Result<Response<Body>, ApiError> {
    admin_only(request, "quota:delete")?;
    request.query.allow_only(&[])?;
    match request.state.store.delete_quota(project_id, resource).await {
        Ok(()) => Ok(respond_empty(request.context, StatusCode::NO_CONTENT)),
        Err(StoreError::NotFound) => Err(not_found(project_id, resource)),
        Err(error) => Err(error.into()),
    }
}
