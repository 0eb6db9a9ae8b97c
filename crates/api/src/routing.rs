//! Upstream's routing, by hand.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::auth::AuthFailure;
use crate::cache::ResponseCache;
use crate::context::{
    accepts_event_stream, accepts_json_at_all, accepts_json_explicitly, base_url, json_response,
    new_request_id, RequestContext,
};
use crate::error::{routing_error, unsupported_version, ApiError};
use crate::events::EventHub;
use crate::handlers::root;
use crate::input::{decode_path_segment, json_body, QueryArguments, NUL_REFUSED};
use crate::microversion::{negotiate, VersionError};
use crate::{AppState, Shared};

/// oslo.middleware's `max_request_body_size` default (112 KiB), which OpenStack APIs apply.
const MAX_BODY_BYTES: usize = 112 * 1024;

/// Collections of the v1 API that this build serves (the first segments of `routes::ROUTES`).
pub(crate) const SERVED_COLLECTIONS: [&str; 8] = [
    "certificates",
    "clustertemplates",
    "clusters",
    "credentials",
    "events",
    "mservices",
    "quotas",
    "stats",
];

pub async fn dispatch(State(shared): State<Arc<Shared>>, request: Request<Body>) -> Response<Body> {
    let started = Instant::now();
    let request_id = new_request_id();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = route(&shared, &request_id, request).await;
    let status = response.status();
    let prefix = &shared.state.settings.path_prefix;
    let elapsed = started.elapsed();
    crate::metrics::record_request(
        &shared.state.metrics,
        &method,
        &path,
        prefix,
        status,
        elapsed,
    );
    if status.is_server_error() {
        tracing::warn!(request.id = %request_id, %method, %path, status = status.as_u16(),
            duration_ms = started.elapsed().as_millis() as u64, "request failed");
    } else {
        tracing::debug!(request.id = %request_id, %method, %path, status = status.as_u16(),
            duration_ms = started.elapsed().as_millis() as u64, "request");
    }
    response
}

/// Informs the operator-facing health check (oslo healthcheck: plain text).
fn healthcheck(request_id: &str) -> Response<Body> {
    let mut response = Response::new(Body::from("OK"));
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(crate::context::REQUEST_ID_HEADER, value);
    }
    response
}

async fn route(shared: &Shared, request_id: &str, request: Request<Body>) -> Response<Body> {
    let (state, cache) = (&shared.state, &shared.cache);
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let accepts_json = accepts_json_explicitly(headers);
    // A deployment under a path prefix (`/container-infra/v1`) serves the same API; links
    // carry the prefix, whether the proxy strips it (X-Forwarded-Prefix) or passes it on.
    let configured_prefix = state.settings.path_prefix.as_str();
    let mut raw_path = parts.uri.path();
    let mut prefix = if state.settings.trust_proxy_headers {
        forwarded_prefix(headers).unwrap_or_default()
    } else {
        String::new()
    };
    if !configured_prefix.is_empty() {
        if let Some(rest) = raw_path.strip_prefix(configured_prefix) {
            if rest.is_empty() || rest.starts_with('/') {
                raw_path = rest;
                prefix = configured_prefix.to_owned();
            }
        }
    }
    if raw_path == "/healthcheck" {
        return healthcheck(request_id);
    }
    if state.settings.browser_guard {
        if let Err(refusal) = browser_guard(headers, &state.settings.allowed_hosts) {
            return ApiError::forbidden(refusal)
                .into_response(request_id, crate::microversion::MIN_VERSION);
        }
    }
    if raw_path == "/metrics" {
        return state.metrics.answer(&parts, request_id).await;
    }
    if let Some(dashboard) = state.dashboard.as_deref() {
        if crate::dashboard::is_dashboard_path(raw_path) {
            let path = raw_path.to_owned();
            return crate::dashboard::serve(
                state, dashboard, &parts, body, &path, &prefix, request_id,
            )
            .await;
        }
    }
    let mut segments: Vec<&str> = raw_path.split('/').filter(|s| !s.is_empty()).collect();
    let base = format!(
        "{}{prefix}",
        base_url(headers, state.settings.trust_proxy_headers)
    );

    if segments.is_empty() || segments == [".json"] {
        return match parts.method {
            Method::GET => root::root_document(&base, request_id),
            _ => routing_error(StatusCode::METHOD_NOT_ALLOWED, "", accepts_json, request_id),
        };
    }
    if segments[0] == "v1.json" {
        segments[0] = "v1";
    }
    // Paths without the version prefix are served as if they had it.
    if segments[0] != "v1" {
        segments.insert(0, "v1");
    }
    let is_version_document = segments.len() == 1;
    // Public like the version documents: it describes the API and holds no tenant data.
    let is_openapi_document = segments == ["v1", crate::openapi::DOCUMENT];

    // A dashboard session's cookie stands in for `X-Auth-Token` (and a change it asks for
    // needs the session's CSRF header); everything else is as for any client.
    let with_session_token;
    let headers = match state
        .dashboard
        .as_deref()
        .and_then(crate::dashboard::Dashboard::sessions)
        .map(|sessions| {
            sessions.authenticate(&parts.method, headers, state.settings.trust_proxy_headers)
        }) {
        Some(crate::dashboard::session::CookieAuth::Token(token)) => {
            let mut copy = headers.clone();
            if let Ok(value) = HeaderValue::from_str(&token) {
                copy.insert("x-auth-token", value);
            }
            with_session_token = copy;
            &with_session_token
        }
        Some(crate::dashboard::session::CookieAuth::Refused(reason)) => {
            return ApiError::forbidden(reason)
                .into_response(request_id, crate::microversion::MIN_VERSION)
        }
        _ => headers,
    };

    let identity = if is_version_document || is_openapi_document {
        None
    } else {
        match state.authenticator.authenticate(headers).await {
            Ok(identity) => Some(identity),
            Err(AuthFailure::Unauthenticated { www_authenticate }) => {
                return unauthorized(&www_authenticate, request_id)
            }
            Err(AuthFailure::Unavailable) => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The identity service is unavailable. Retry later.",
                )
                .into_response(request_id, crate::microversion::MIN_VERSION)
            }
        }
    };

    // Several headers are joined as WSGI does, which the strict parser then refuses.
    let version_values: Vec<String> = headers
        .get_all("openstack-api-version")
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    let version_header = (!version_values.is_empty()).then(|| version_values.join(", "));
    let version = match negotiate(version_header.as_deref()) {
        Ok(version) => version,
        Err(VersionError::InvalidServiceType) => {
            return routing_error(
                StatusCode::NOT_ACCEPTABLE,
                "Invalid service type for OpenStack-API-Version header",
                accepts_json,
                request_id,
            )
        }
        Err(VersionError::InvalidValue) => {
            return routing_error(
                StatusCode::NOT_ACCEPTABLE,
                "Invalid value for OpenStack-API-Version header",
                accepts_json,
                request_id,
            )
        }
        Err(VersionError::Unsupported(requested)) => {
            return unsupported_version(requested, accepts_json, request_id)
        }
    };
    // Event streams are asked for as `text/event-stream`; nothing else is.
    let event_stream_path = segments.last() == Some(&"events");
    let acceptable =
        accepts_json_at_all(headers) || (event_stream_path && accepts_event_stream(headers));
    if !acceptable {
        return routing_error(StatusCode::NOT_ACCEPTABLE, "", accepts_json, request_id);
    }

    let Some(identity) = identity else {
        return match parts.method {
            Method::GET if is_openapi_document => {
                crate::openapi::respond(&base, request_id, version)
            }
            Method::GET => root::v1_document(&base, request_id, version),
            _ => routing_error(StatusCode::METHOD_NOT_ALLOWED, "", accepts_json, request_id),
        };
    };

    let collection = segments[1];
    if !SERVED_COLLECTIONS.contains(&collection) {
        return routing_error(StatusCode::NOT_FOUND, "", accepts_json, request_id);
    }
    let rest: Vec<String> = segments[2..]
        .iter()
        .map(|segment| decode_path_segment(segment))
        .collect();
    let method = parts.method.clone();
    if !matches!(
        method,
        Method::GET | Method::POST | Method::PATCH | Method::DELETE
    ) {
        return routing_error(StatusCode::METHOD_NOT_ALLOWED, "", accepts_json, request_id);
    }

    let auth_token = headers
        .get("x-auth-token")
        .and_then(|value| value.to_str().ok())
        .map(|token| crate::context::AuthToken(token.trim().to_owned()));
    let context = RequestContext {
        request_id: request_id.to_owned(),
        base_url: base,
        version,
        identity,
        auth_token,
    };
    let query = QueryArguments::parse(parts.uri.query());
    if rest.iter().any(|segment| segment.contains('\0')) || query.contains_nul() {
        return ApiError::bad_request(NUL_REFUSED).into_response(request_id, version);
    }
    let body = if matches!(method, Method::POST | Method::PATCH) {
        let read =
            tokio::time::timeout(state.settings.body_timeout, to_bytes(body, MAX_BODY_BYTES));
        let Ok(read) = read.await else {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "The request body did not arrive within {} s.",
                    state.settings.body_timeout.as_secs()
                ),
            )
            .into_response(request_id, version);
        };
        // Other media types are refused (or, for forms, read as arguments no endpoint has)
        // below, as upstream does; a body with no type at all would be read as JSON.
        if state.settings.browser_guard
            && !has_content_type(headers)
            && read
                .as_ref()
                .is_ok_and(|bytes| !bytes.iter().all(u8::is_ascii_whitespace))
        {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "A request body needs a Content-Type (application/json).",
            )
            .into_response(request_id, version);
        }
        match read {
            Ok(bytes) => match json_body(headers, &bytes) {
                Ok(body) if body.as_ref().is_some_and(magnum_domain::contains_nul) => {
                    return ApiError::bad_request(NUL_REFUSED).into_response(request_id, version)
                }
                Ok(body) => body,
                Err(error) => return error.into_response(request_id, version),
            },
            Err(_) => {
                let limit = MAX_BODY_BYTES;
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Request is too large. Larger than max_request_body_size ({limit})."),
                )
                .into_response(request_id, version);
            }
        }
    } else {
        None
    };

    let request = ResourceRequest {
        state,
        cache,
        events: &shared.events,
        headers,
        context: &context,
        method: &method,
        rest: &rest,
        query: &query,
        body,
    };
    let outcome = crate::routes::route(collection, request).await;
    match outcome {
        Ok(response) => response,
        Err(Routed::Error(error)) => error.into_response(request_id, version),
        Err(Routed::NotFound) => routing_error(StatusCode::NOT_FOUND, "", accepts_json, request_id),
        Err(Routed::MethodNotAllowed) => {
            routing_error(StatusCode::METHOD_NOT_ALLOWED, "", accepts_json, request_id)
        }
        Err(Routed::UnknownAction) => {
            let mut response =
                routing_error(StatusCode::METHOD_NOT_ALLOWED, "", accepts_json, request_id);
            response
                .headers_mut()
                .insert("allow", HeaderValue::from_static(""));
            response
        }
        Err(Routed::NotAcceptable(message)) => routing_error(
            StatusCode::NOT_ACCEPTABLE,
            &message,
            accepts_json,
            request_id,
        ),
    }
}

/// Why a request a browser may have been tricked into sending is refused, in noauth mode.
fn browser_guard(headers: &axum::http::HeaderMap, allowed_hosts: &[String]) -> Result<(), String> {
    let host = headers
        .get("host")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let name = host_name(&host);
    // A page can point a name it controls at 127.0.0.1 (DNS rebinding), never an address.
    let literal = name == "localhost" || name.parse::<std::net::IpAddr>().is_ok();
    if !literal && !allowed_hosts.iter().any(|allowed| allowed == name) {
        return Err(format!(
            "Without authentication this API answers only requests for an IP address, \
             localhost or a name in api.noauth_allowed_hosts, not for the host name {name:?}."
        ));
    }
    if let Some(origin) = headers.get("origin") {
        let origin = origin
            .to_str()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let origin_host = origin
            .split_once("://")
            .map_or("", |(_, rest)| rest.trim_end_matches('/'));
        if origin_host != host {
            return Err(format!(
                "Without authentication this API refuses requests from web pages of other \
                 origins ({origin:?})."
            ));
        }
    }
    Ok(())
}

/// The host of a `Host` value, without its port (`[::1]:9511` → `::1`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

fn has_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            !value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .is_empty()
        })
}

/// `X-Forwarded-Prefix` as oslo's http_proxy_to_wsgi honours it: `/container-infra`.
fn forwarded_prefix(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get("x-forwarded-prefix")?.to_str().ok()?.trim();
    let trimmed = value.trim_end_matches('/');
    // `//host` would make our redirects point elsewhere; `;` or `,` would end a cookie's
    // `Path` and start another attribute.
    let acceptable = trimmed.starts_with('/')
        && !trimmed.starts_with("//")
        && !trimmed.contains(['?', '#', ' ', ';', ',', '\\'])
        && !trimmed.chars().any(char::is_control);
    acceptable.then(|| trimmed.to_owned())
}

fn unauthorized(www_authenticate: &str, request_id: &str) -> Response<Body> {
    let body = br#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#;
    let mut response = json_response(StatusCode::UNAUTHORIZED, body.to_vec(), request_id);
    if let Ok(value) = HeaderValue::from_str(www_authenticate) {
        response.headers_mut().insert("www-authenticate", value);
    }
    response
}

/// A request for one resource collection, past routing and authentication.
pub struct ResourceRequest<'a> {
    pub state: &'a AppState,
    pub cache: &'a ResponseCache,
    /// The process's event pump, for streams.
    pub events: &'a Arc<EventHub>,
    pub headers: &'a axum::http::HeaderMap,
    pub context: &'a RequestContext,
    pub method: &'a Method,
    /// Path segments after the collection name.
    pub rest: &'a [String],
    pub query: &'a QueryArguments,
    pub body: Option<serde_json::Value>,
}

/// How a collection handler declines or fails a request.
pub enum Routed {
    NotFound,
    MethodNotAllowed,
    /// The API exists, but not at the requested microversion.
    NotAcceptable(String),
    /// A cluster action upstream does not have: 405 with an empty `Allow`.
    UnknownAction,
    Error(ApiError),
}

impl From<ApiError> for Routed {
    fn from(error: ApiError) -> Self {
        Routed::Error(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> axum::http::HeaderMap {
        let mut map = axum::http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_browser_guard_takes_addresses_and_same_origin_only() {
        let guard = |pairs: &[(&'static str, &'static str)]| browser_guard(&headers(pairs), &[]);
        for host in [
            "127.0.0.1:9511",
            "localhost:9511",
            "[::1]:9511",
            "10.0.0.5",
            "LOCALHOST",
        ] {
            assert_eq!(guard(&[("host", host)]), Ok(()), "{host}");
        }
        for host in [
            "evil.example:9511",
            "magnum.internal",
            "localhost.:9511",
            "",
        ] {
            assert!(guard(&[("host", host)]).is_err(), "{host}");
        }
        let allowed = ["magnum.internal".to_owned()];
        let named = headers(&[("host", "magnum.internal:9511")]);
        assert_eq!(browser_guard(&named, &allowed), Ok(()));
        assert_eq!(
            guard(&[
                ("host", "127.0.0.1:9511"),
                ("origin", "http://127.0.0.1:9511")
            ]),
            Ok(())
        );
        for origin in ["http://evil.example", "http://127.0.0.1:9512", "null"] {
            let refused = guard(&[("host", "127.0.0.1:9511"), ("origin", origin)]);
            assert!(refused.unwrap_err().contains("other origins"), "{origin}");
        }
    }

    #[test]
    fn a_missing_content_type_is_recognised() {
        let typed = |value: &'static str| headers(&[("content-type", value)]);
        assert!(has_content_type(&typed("application/json; charset=utf-8")));
        assert!(has_content_type(&typed("text/plain")));
        assert!(!has_content_type(&typed(" ; charset=utf-8")));
        assert!(!has_content_type(&headers(&[])));
    }
}
