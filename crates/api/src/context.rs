//! What a request carries through the handlers, and how responses are finished.

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use magnum_domain::Identity;

use crate::microversion::{Version, SERVICE_TYPE};

pub const REQUEST_ID_HEADER: &str = "x-openstack-request-id";

/// Per-request facts every handler may need.
pub struct RequestContext {
    pub request_id: String,
    /// `scheme://host[:port]` of the request, the base of every link.
    pub base_url: String,
    pub version: Version,
    pub identity: Identity,
    /// The caller's `X-Auth-Token`, for what Keystone lets only the user do in their own name
    /// (an application credential for a cluster).
    pub auth_token: Option<AuthToken>,
}

/// A bearer token: never printed.
pub struct AuthToken(pub String);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// The base URL clients reached us at; a proxy's `X-Forwarded-Proto`/`-Host` only when the
/// operator said a proxy sets them (`api.enable_proxy_headers_parsing`, as oslo.middleware's
/// http_proxy_to_wsgi): otherwise any client could choose the links we answer with.
pub fn base_url(headers: &HeaderMap, trust_proxy_headers: bool) -> String {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(',').next().unwrap_or(value).trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    let forwarded = |name: &str| trust_proxy_headers.then(|| text(name)).flatten();
    let scheme = forwarded("x-forwarded-proto").unwrap_or_else(|| "http".to_owned());
    let host = forwarded("x-forwarded-host")
        .or_else(|| text("host"))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{scheme}://{host}")
}

/// Whether the client named JSON explicitly in `Accept` (which changes routing-error bodies).
pub fn accepts_json_explicitly(headers: &HeaderMap) -> bool {
    headers
        .get_all("accept")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.to_ascii_lowercase().contains("application/json"))
}

/// Whether `Accept` allows a JSON answer at all.
pub fn accepts_json_at_all(headers: &HeaderMap) -> bool {
    let values: Vec<String> = headers
        .get_all("accept")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::to_ascii_lowercase)
        .collect();
    if values.iter().all(|value| value.trim().is_empty()) {
        return true;
    }
    values
        .iter()
        .flat_map(|value| value.split(','))
        .any(|range| {
            let media = range.split(';').next().unwrap_or_default().trim();
            matches!(media, "*/*" | "application/*" | "application/json" | "")
                || media.ends_with("+json")
        })
}

/// Whether the client takes Server-Sent Events (`text/event-stream`).
pub fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all("accept")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            range
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("text/event-stream")
        })
}

pub fn new_request_id() -> String {
    format!("req-{}", uuid::Uuid::new_v4())
}

/// Adds the three microversion headers and `Vary`.
pub fn add_version_headers(headers: &mut HeaderMap, version: Version) {
    headers.insert(
        "openstack-api-minimum-version",
        HeaderValue::from_static(MINIMUM_VERSION_HEADER),
    );
    headers.insert(
        "openstack-api-maximum-version",
        HeaderValue::from_static(MAXIMUM_VERSION_HEADER),
    );
    headers.insert(
        "openstack-api-version",
        HeaderValue::from_str(&format!("{SERVICE_TYPE} {version}")).expect("versions are ASCII"),
    );
    headers.insert(VARY, HeaderValue::from_static("OpenStack-API-Version"));
}

// Spelled out so they can be static header values; a test keeps them equal to the range.
const MINIMUM_VERSION_HEADER: &str = "container-infrastructure-management 1.1";
const MAXIMUM_VERSION_HEADER: &str = "container-infrastructure-management 1.14";

/// A JSON response with the request id.
pub fn json_response(
    status: StatusCode,
    body: impl Into<Body>,
    request_id: &str,
) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// A response without a body (204).
pub fn empty_response(status: StatusCode, request_id: &str) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_version_headers_match_the_range() {
        use crate::microversion::{MAX_VERSION, MIN_VERSION};
        assert_eq!(
            MINIMUM_VERSION_HEADER,
            format!("{SERVICE_TYPE} {MIN_VERSION}")
        );
        assert_eq!(
            MAXIMUM_VERSION_HEADER,
            format!("{SERVICE_TYPE} {MAX_VERSION}")
        );
    }

    #[test]
    fn accept_header_rules() {
        let mut headers = HeaderMap::new();
        assert!(accepts_json_at_all(&headers));
        headers.insert("accept", "application/xml".parse().unwrap());
        assert!(!accepts_json_at_all(&headers));
        headers.insert("accept", "*/*".parse().unwrap());
        assert!(accepts_json_at_all(&headers));
        assert!(!accepts_json_explicitly(&headers));
        headers.insert("accept", "application/json".parse().unwrap());
        assert!(accepts_json_explicitly(&headers));
    }

    #[test]
    fn base_url_takes_forwarded_headers_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1:9511".parse().unwrap());
        assert_eq!(base_url(&headers, true), "http://127.0.0.1:9511");
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        headers.insert("x-forwarded-host", "magnum.example.org".parse().unwrap());
        assert_eq!(base_url(&headers, true), "https://magnum.example.org");
        assert_eq!(base_url(&headers, false), "http://127.0.0.1:9511");
    }
}
