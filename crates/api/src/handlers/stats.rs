//! `/v1/stats`: how many clusters and nodes a project (or the cloud) has.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use magnum_domain::policy::Target;
use serde_json::json;

use super::respond;
use crate::error::ApiError;
use crate::routing::ResourceRequest;

pub(crate) async fn get(request: &ResourceRequest<'_>) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        ..
    } = request;
    query.allow_only(&["project_id", "type"])?;
    let identity = &context.identity;
    state
        .policy
        .enforce("stats:get_all", identity, &Target::caller(identity))?;
    let kind = query.get("type").unwrap_or("cluster");
    if !kind.eq_ignore_ascii_case("cluster") {
        return Err(ApiError::bad_request(
            "Invalid stats type. Allowed values are 'cluster'",
        ));
    }
    let requested = query.get("project_id");
    let project = if state.policy.is_admin(identity) {
        requested
    } else {
        match requested {
            Some(project) if project != identity.project_id => {
                return Err(ApiError::forbidden("Not authorized."))
            }
            _ => Some(identity.project_id.as_str()),
        }
    };
    let (clusters, nodes) = state.store.cluster_stats(project).await?;
    Ok(respond(
        context,
        StatusCode::OK,
        &json!({"clusters": clusters, "nodes": nodes}),
    ))
}
