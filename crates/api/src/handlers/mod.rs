pub mod certificates;
pub mod cluster_templates;
pub mod clusters;
pub mod events;
pub mod nodegroups;
pub mod quotas;
pub mod root;
pub mod services;
pub mod stats;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde::Serialize;

use crate::cache::{CachedResponse, ResponseCache};
use crate::context::{add_version_headers, json_response, RequestContext};
use crate::error::ApiError;
pub use crate::views::sorted_object;

/// A successful JSON answer under `/v1`.
pub fn respond<T: Serialize>(
    context: &RequestContext,
    status: StatusCode,
    document: &T,
) -> Response<Body> {
    let mut response = json_response(status, magnum_types::encode(document), &context.request_id);
    add_version_headers(response.headers_mut(), context.version);
    response
}

/// A successful JSON answer whose body is already encoded.
pub fn respond_encoded(
    context: &RequestContext,
    status: StatusCode,
    body: axum::body::Bytes,
) -> Response<Body> {
    let mut response = json_response(status, body, &context.request_id);
    add_version_headers(response.headers_mut(), context.version);
    response
}

/// A successful answer without a body.
pub fn respond_empty(context: &RequestContext, status: StatusCode) -> Response<Body> {
    let mut response = crate::context::empty_response(status, &context.request_id);
    add_version_headers(response.headers_mut(), context.version);
    response
}

/// A list answered from the response cache when it holds `key` at `generation` (read before
/// the data), else built by `build`, kept under that generation, and answered.
pub async fn respond_cached_list<F, Fut>(
    context: &RequestContext,
    cache: &ResponseCache,
    key: String,
    generation: i64,
    build: F,
) -> Result<Response<Body>, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<axum::body::Bytes, ApiError>>,
{
    if let Some(hit) = cache.get(&key, generation) {
        return Ok(respond_encoded(context, StatusCode::OK, hit.body));
    }
    let body = build().await?;
    cache.put(
        key,
        CachedResponse {
            generation,
            body: body.clone(),
            owner: None,
        },
    );
    Ok(respond_encoded(context, StatusCode::OK, body))
}
