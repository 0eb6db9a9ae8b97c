//! Cluster events (a magnum-rs extension): `GET /v1/clusters/{ident}/events` and the
//! project's `GET /v1/events`, each a paginated list or, with `watch=true`, a live stream.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use magnum_domain::policy::Target;
use magnum_store::{ClusterScope, EventScope, SortDirection};
use serde_json::{json, Value};

use super::respond;
use crate::error::ApiError;
use crate::events::{event_document, stream, StreamRequest};
use crate::lookup::{cluster_not_found, cluster_scope, cluster_target, resolve_cluster};
use crate::pagination::{next_link, page_from_query};
use crate::routing::ResourceRequest;

/// Every sort key means the events' own order (commit order).
pub(crate) const EVENT_SORT_KEYS: &[(&str, bool)] =
    &[("id", true), ("sequence", true), ("created_at", true)];
const ARGUMENTS: [&str; 5] = ["limit", "marker", "sort_key", "sort_dir", "watch"];

/// `GET /v1/clusters/{ident}/events`: the cluster's events, also after it was deleted (by
/// uuid, while they are kept), under the policy that lets the caller see the cluster.
pub(crate) async fn of_cluster(
    request: &ResourceRequest<'_>,
    ident: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest { state, context, .. } = request;
    let identity = &context.identity;
    let scope = cluster_scope(state, identity, Some("cluster:get_one_all_projects"));
    let (cluster_uuid, target) = match resolve_cluster(state, ident, scope).await {
        Ok(cluster) => (cluster.uuid, cluster_target(&cluster)),
        Err(not_found) => {
            // A deleted cluster is known by its uuid from its events alone.
            let Some(uuid) = magnum_domain::parse_uuid_like(ident) else {
                return Err(not_found);
            };
            let newest = state
                .store
                .events_before(&EventScope::Cluster(uuid), None, 1)
                .await?;
            let Some(event) = newest.first() else {
                return Err(not_found);
            };
            let visible = match scope {
                ClusterScope::All => true,
                ClusterScope::Project(project) => project == event.project_id,
            };
            if !visible {
                return Err(cluster_not_found(ident));
            }
            (uuid, Target::owned_by(&event.project_id, &event.user_id))
        }
    };
    state.policy.enforce("cluster:get", identity, &target)?;
    respond_events(
        request,
        EventScope::Cluster(cluster_uuid),
        &format!("clusters/{cluster_uuid}/events"),
    )
    .await
}

/// `GET /v1/events`: the events of the caller's project (every cluster, deleted ones while
/// their events are kept).
pub(crate) async fn of_project(request: &ResourceRequest<'_>) -> Result<Response<Body>, ApiError> {
    let ResourceRequest { state, context, .. } = request;
    let identity = &context.identity;
    state
        .policy
        .enforce("cluster:get_all", identity, &Target::caller(identity))?;
    respond_events(
        request,
        EventScope::Project(identity.project_id.clone()),
        "events",
    )
    .await
}

async fn respond_events(
    request: &ResourceRequest<'_>,
    scope: EventScope,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    let ResourceRequest {
        state,
        context,
        query,
        headers,
        events,
        ..
    } = request;
    query.allow_only(&ARGUMENTS)?;
    let watch = match query.get("watch") {
        None => false,
        Some(text) => crate::input::parse_bool("watch", &Value::String(text.to_owned()))?,
    };
    if watch {
        let resume_after = match headers.get("last-event-id") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|text| text.trim().parse::<i64>().ok())
                    .filter(|sequence| *sequence >= 0)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "Last-Event-ID must be the id of an event this stream sent.",
                        )
                    })?,
            ),
        };
        let ends_with_cluster = matches!(scope, EventScope::Cluster(_));
        // A stream opened with a dashboard session ends when a logout ends the session.
        let authenticator: std::sync::Arc<dyn crate::auth::Authenticator> =
            match state.dashboard.as_ref().and_then(|dashboard| {
                let login = dashboard.sessions()?.cookie_login(headers)?;
                Some((dashboard.clone(), login))
            }) {
                Some((dashboard, login)) => std::sync::Arc::new(crate::dashboard::SessionBound {
                    inner: state.authenticator.clone(),
                    dashboard,
                    login,
                }),
                None => state.authenticator.clone(),
            };
        let mut response = stream(
            events,
            authenticator,
            StreamRequest {
                scope,
                resume_after,
                project: context.identity.project_id.clone(),
                auth_headers: (*headers).clone(),
                request_id: context.request_id.clone(),
                ends_with_cluster,
            },
        )
        .await?;
        crate::context::add_version_headers(response.headers_mut(), context.version);
        return Ok(response);
    }
    // A marker is an event's uuid, or its sequence (what `next` links carry: the event it
    // names may have been pruned by the time the next page is asked for).
    let marker_sequence = query
        .get("marker")
        .and_then(|text| text.trim().parse::<i64>().ok())
        .filter(|sequence| *sequence >= 0);
    let without_marker;
    let query = if marker_sequence.is_some() {
        without_marker = query.without("marker");
        &without_marker
    } else {
        *query
    };
    let mut page = page_from_query(query, EVENT_SORT_KEYS, state.settings.max_limit)?;
    page.limit = page.limit.min(magnum_store::MAX_EVENTS_PER_READ as u32);
    let bound = match (marker_sequence, page.marker) {
        (Some(sequence), _) => Some(sequence),
        (None, None) => None,
        (None, Some(marker)) => Some(
            state
                .store
                .event_by_uuid(&scope, marker)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!("The event {marker} could not be found."))
                })?
                .sequence,
        ),
    };
    let limit = i64::from(page.limit);
    let found = match page.direction {
        SortDirection::Ascending => state.store.events_after(&scope, bound, limit).await?,
        SortDirection::Descending => state.store.events_before(&scope, bound, limit).await?,
    };
    let documents: Vec<Value> = found.iter().map(event_document).collect();
    let next = next_link(
        &context.base_url,
        path,
        &page,
        found.len(),
        found.last().map(|event| event.sequence.to_string()),
    );
    let mut document = json!({ "events": documents });
    if let Some(next) = next {
        document["next"] = json!(next);
    }
    Ok(respond(context, StatusCode::OK, &document))
}
