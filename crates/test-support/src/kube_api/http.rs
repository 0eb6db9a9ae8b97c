//! The HTTP face: one hyper HTTP/1.1 server on loopback, bearer-token authentication, the
//! request log, injected outages, routing of kube-apiserver's paths to the store, and every
//! error rendered as a `Status`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::discovery;
use super::openapi;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{
    watch_line, Deleted, FieldValidation, ListOptions, Patch, Store, Subresource, Target,
    WatchFilter, WatchStart, WriteOptions,
};
use super::watch::{keep_watch, ResponseBody, WatchGuard};

/// One request as it reached the stand-in, for tests that check what a client sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: String,
}

/// How the management cluster is away during an injected outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Nothing listens: connections are refused and open ones are cut.
    Refuse,
    /// The server answers every request `503 ServiceUnavailable`.
    Unavailable,
}

const MAX_RECORDED_REQUESTS: usize = 10_000;
const MAX_RECORDED_BODY: usize = 64 * 1024;

pub struct Shared {
    pub store: Arc<Store>,
    pub token: String,
    pub anonymous_auth: bool,
    pub max_body_bytes: usize,
    pub bookmark_interval: Duration,
    pub address: SocketAddr,
    pub requests: Mutex<VecDeque<RecordedRequest>>,
    pub outage: Mutex<Option<(Outage, Instant)>>,
    pub outage_changed: Notify,
    /// Bumped when an outage begins: connections accepted before it break with it, those
    /// accepted after (during a 503 outage) are answered.
    pub outage_epoch: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub fn current_outage(&self) -> Option<Outage> {
        let mut outage = self
            .outage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match *outage {
            Some((mode, until)) if Instant::now() < until => Some(mode),
            Some(_) => {
                *outage = None;
                None
            }
            None => None,
        }
    }

    fn record(&self, request: RecordedRequest) {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if requests.len() == MAX_RECORDED_REQUESTS {
            requests.pop_front();
        }
        requests.push_back(request);
    }
}

/// Accepts connections until the task is aborted; aborting it drops every connection.
pub async fn serve(mut listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.outage_changed.notified() => {
                if shared.current_outage() == Some(Outage::Refuse) {
                    drop(listener);
                    while shared.current_outage() == Some(Outage::Refuse) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    listener = rebind(shared.address).await;
                }
                continue;
            }
        };
        let Ok((stream, _)) = accepted else { continue };
        let shared = shared.clone();
        // The cluster going away breaks the connections (watches too) open at that moment.
        let mut outage_began = shared.outage_epoch.subscribe();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // A connection error is the client's business; the server goes on.
            tokio::select! {
                _ = connection => {}
                _ = outage_began.changed() => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn rebind(address: SocketAddr) -> TcpListener {
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The most of a refused body read before the answer.
const DRAIN_LIMIT_BYTES: usize = 16 * 1024 * 1024;

fn json_response(code: u16, body: &Value) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body.to_string()));
    *response.status_mut() =
        hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(error: &ApiError) -> Response<ResponseBody> {
    json_response(error.code, &error.to_status())
}

fn with_warnings(
    mut response: Response<ResponseBody>,
    warnings: &[String],
) -> Response<ResponseBody> {
    for warning in warnings {
        let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append("Warning", value);
        }
    }
    response
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<ResponseBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(CONTENT_TYPE);
    let user_agent = header(USER_AGENT).unwrap_or_default();
    let authorization = header(AUTHORIZATION);
    let declared_length: Option<usize> =
        header(CONTENT_LENGTH).and_then(|length| length.parse().ok());

    if shared.current_outage().is_some() {
        return error_response(&ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ));
    }
    let too_large = ApiError::new(
        413,
        "RequestEntityTooLarge",
        format!(
            "Request entity too large: limit is {}",
            shared.max_body_bytes
        ),
    );
    let mut record = RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        body: String::new(),
    };
    if declared_length.is_some_and(|length| length > shared.max_body_bytes) {
        shared.record(record);
        // Read (and drop) what the client is sending before answering, within a bound, as
        // Go's server does: closing on unread data resets the connection, and the client
        // would lose the answer.
        let drained = Limited::new(request.into_body(), DRAIN_LIMIT_BYTES)
            .collect()
            .await;
        drop(drained);
        return error_response(&too_large);
    }
    let body = match Limited::new(request.into_body(), shared.max_body_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            shared.record(record);
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return error_response(&too_large);
            }
            return error_response(&ApiError::bad_request("the request body could not be read"));
        }
    };
    let mut recorded_body = String::from_utf8_lossy(&body).into_owned();
    if recorded_body.len() > MAX_RECORDED_BODY {
        let mut end = MAX_RECORDED_BODY;
        while !recorded_body.is_char_boundary(end) {
            end -= 1;
        }
        recorded_body.truncate(end);
    }
    record.body = recorded_body;
    shared.record(record);

    let authorized = match authorization {
        Some(header) => header == format!("Bearer {}", shared.token),
        None => shared.anonymous_auth,
    };
    if !authorized {
        return error_response(&ApiError::unauthorized());
    }
    let request = ApiRequest {
        method,
        query: parse_query(&query),
        content_type: content_type.unwrap_or_default(),
        user_agent,
        body: body.to_vec(),
    };
    match route(&shared, &path, &request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

/// The parts of a request the handlers read, once the body is in.
struct ApiRequest {
    method: Method,
    query: Vec<(String, String)>,
    content_type: String,
    user_agent: String,
    body: Vec<u8>,
}

impl ApiRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    /// The `fieldManager` parameter, else kube-apiserver's default: the User-Agent up to
    /// its first `/` (`kubectl`, `magnum-rs`).
    fn manager(&self) -> String {
        match self.param("fieldManager") {
            Some(manager) if !manager.is_empty() => manager.to_owned(),
            _ => {
                let prefix = self.user_agent.split('/').next().unwrap_or("").trim();
                if prefix.is_empty() {
                    "unknown".to_owned()
                } else {
                    prefix.chars().take(128).collect()
                }
            }
        }
    }

    fn write_options(&self, subresource: Subresource) -> Result<WriteOptions, ApiError> {
        let field_validation = match self.param("fieldValidation") {
            None | Some("" | "Warn") => FieldValidation::Warn,
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
                )))
            }
        };
        Ok(WriteOptions {
            manager: self.manager(),
            subresource,
            field_validation,
            dry_run: self.param("dryRun") == Some("All"),
        })
    }

    /// A JSON or YAML object body.
    fn document(&self) -> Result<Value, ApiError> {
        let media_type = self.content_type.split(';').next().unwrap_or("").trim();
        if !(media_type.is_empty() || media_type.ends_with("json") || media_type.ends_with("yaml"))
        {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: \
                     application/json, application/yaml (not {media_type})"
                ),
            ));
        }
        let text = std::str::from_utf8(&self.body)
            .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            return Ok(value);
        }
        if self.content_type.contains("yaml") {
            return serde_saphyr::from_str::<Value>(text)
                .map_err(|error| ApiError::bad_request(format!("error decoding YAML: {error}")));
        }
        Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: {}",
            serde_json::from_str::<Value>(text)
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default()
        )))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%' && index + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[index + 1..index + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[index], escaped) {
            (_, Some(byte)) => {
                decoded.push(byte);
                index += 2;
            }
            (b'+', None) => decoded.push(b' '),
            (byte, None) => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
    .with_details(json!({}))
}

async fn route(
    shared: &Arc<Shared>,
    path: &str,
    request: &ApiRequest,
) -> Result<Response<ResponseBody>, ApiError> {
    let segments: Vec<&str> = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .collect();
    let registry = shared.store.registry();
    let discovery_only = |document: Option<Value>| -> Result<Response<ResponseBody>, ApiError> {
        if request.method != Method::GET {
            return Err(ApiError::method_not_allowed(request.method.as_str()));
        }
        document
            .map(|document| json_response(200, &document))
            .ok_or_else(not_found_path)
    };
    match segments.as_slice() {
        ["version"] => discovery_only(Some(discovery::version())),
        ["api"] => discovery_only(Some(discovery::core_versions(&shared.address.to_string()))),
        ["api", "v1"] => discovery_only(discovery::resource_list(registry, "", "v1")),
        ["apis"] => discovery_only(Some(discovery::group_list(registry))),
        ["apis", group] => discovery_only(discovery::group(registry, group)),
        ["apis", group, version] => {
            discovery_only(discovery::resource_list(registry, group, version))
        }
        ["openapi", "v3"] => discovery_only(Some(openapi::root(registry))),
        ["openapi", "v3", "api", "v1"] => {
            discovery_only(openapi::group_version(registry, "", "v1"))
        }
        ["openapi", "v3", "apis", group, version] => {
            discovery_only(openapi::group_version(registry, group, version))
        }
        ["api", "v1", rest @ ..] => resource_request(shared, "", "v1", rest, request).await,
        ["apis", group, version, rest @ ..] => {
            resource_request(shared, group, version, rest, request).await
        }
        _ => Err(not_found_path()),
    }
}

/// `[namespaces/{ns}/]{plural}[/{name}[/{subresource}]]`, after the group and version.
struct ResourcePath<'p> {
    namespace: Option<&'p str>,
    plural: &'p str,
    name: Option<&'p str>,
    subresource: Option<&'p str>,
}

fn parse_resource_path<'p>(group: &str, rest: &[&'p str]) -> Option<ResourcePath<'p>> {
    let namespace_object =
        group.is_empty() && rest.first() == Some(&"namespaces") && rest.len() <= 3;
    let namespace_subresource = rest.len() == 3 && matches!(rest[2], "status" | "finalize");
    if rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && !(namespace_object && namespace_subresource)
    {
        if rest.len() > 5 {
            return None;
        }
        return Some(ResourcePath {
            namespace: Some(rest[1]),
            plural: rest[2],
            name: rest.get(3).copied(),
            subresource: rest.get(4).copied(),
        });
    }
    match rest {
        [plural] => Some(ResourcePath {
            namespace: None,
            plural,
            name: None,
            subresource: None,
        }),
        [plural, name] => Some(ResourcePath {
            namespace: None,
            plural,
            name: Some(name),
            subresource: None,
        }),
        [plural, name, subresource] => Some(ResourcePath {
            namespace: None,
            plural,
            name: Some(name),
            subresource: Some(subresource),
        }),
        _ => None,
    }
}

async fn resource_request(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    request: &ApiRequest,
) -> Result<Response<ResponseBody>, ApiError> {
    let path = parse_resource_path(group, rest).ok_or_else(not_found_path)?;
    let store = &shared.store;
    let target = store
        .target(group, version, path.plural)
        .ok_or_else(not_found_path)?;
    if path.namespace.is_some() && !target.resource.namespaced {
        return Err(not_found_path());
    }
    if path.name.is_some() && path.namespace.is_none() && target.resource.namespaced {
        return Err(not_found_path());
    }
    let subresource = match path.subresource {
        None => Subresource::Main,
        Some("status") if target.has_status() => Subresource::Status,
        Some(_) => return Err(not_found_path()),
    };
    let namespace = path.namespace;
    let Some(name) = path.name else {
        return match request.method {
            Method::GET if request.flag("watch") => watch(shared, &target, namespace, request),
            Method::GET => list(store, &target, namespace, request),
            Method::POST if namespace.is_some() || !target.resource.namespaced => {
                let options = request.write_options(Subresource::Main)?;
                let written = store.create(&target, namespace, request.document()?, &options)?;
                Ok(with_warnings(
                    json_response(201, &written.object),
                    &written.warnings,
                ))
            }
            _ => Err(ApiError::method_not_allowed(request.method.as_str())),
        };
    };
    match request.method {
        Method::GET => Ok(json_response(200, &store.get(&target, namespace, name)?)),
        Method::PUT => {
            let options = request.write_options(subresource)?;
            let written = store.replace(&target, namespace, name, request.document()?, &options)?;
            Ok(with_warnings(
                json_response(200, &written.object),
                &written.warnings,
            ))
        }
        Method::PATCH => {
            let patch = read_patch(&target, request)?;
            let options = request.write_options(subresource)?;
            let written = store.patch(&target, namespace, name, patch, &options)?;
            let code = if written.created { 201 } else { 200 };
            Ok(with_warnings(
                json_response(code, &written.object),
                &written.warnings,
            ))
        }
        Method::DELETE if subresource == Subresource::Main => {
            let options: Value = if request.body.is_empty() {
                json!({})
            } else {
                request.document()?
            };
            let dry_run = request.param("dryRun") == Some("All")
                || options
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|values| values.iter().any(|value| value == "All"));
            match store.delete(&target, namespace, name, dry_run)? {
                Deleted::Finalizing(object) => Ok(json_response(200, &object)),
                Deleted::Gone(object) if target.resource.custom => Ok(json_response(200, &object)),
                Deleted::Gone(object) => Ok(json_response(
                    200,
                    &json!({
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": name,
                            "kind": target.resource.plural,
                            "uid": object.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                        }
                    }),
                )),
            }
        }
        _ => Err(ApiError::method_not_allowed(request.method.as_str())),
    }
}

fn read_patch(target: &Target, request: &ApiRequest) -> Result<Patch, ApiError> {
    let media_type = request.content_type.split(';').next().unwrap_or("").trim();
    let unsupported = || {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
                if target.resource.custom { "" } else { ", application/strategic-merge-patch+json" }
            ),
        )
    };
    match media_type {
        "application/merge-patch+json" => Ok(Patch::Merge(request.document()?)),
        // Core types only: kube-apiserver has no strategic merge for custom resources.
        "application/strategic-merge-patch+json" if !target.resource.custom => {
            Ok(Patch::Merge(request.document()?))
        }
        "application/json-patch+json" => Ok(Patch::Json(request.document()?)),
        "application/apply-patch+yaml" => {
            if request.param("fieldManager").is_none_or(str::is_empty) {
                return Err(ApiError::invalid(
                    "PatchOptions.meta.k8s.io",
                    "",
                    &[(
                        "fieldManager".into(),
                        "Required value: is required for apply patch".into(),
                    )],
                ));
            }
            let force = match request.param("force") {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid force value {other:?}"
                    )))
                }
            };
            Ok(Patch::Apply {
                config: request.document()?,
                force,
            })
        }
        _ => Err(unsupported()),
    }
}

fn selectors(request: &ApiRequest) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(request.param("labelSelector").unwrap_or(""))?,
        FieldSelector::parse(request.param("fieldSelector").unwrap_or(""))?,
    ))
}

fn list(
    store: &Store,
    target: &Target,
    namespace: Option<&str>,
    request: &ApiRequest,
) -> Result<Response<ResponseBody>, ApiError> {
    let (labels, fields) = selectors(request)?;
    let limit = match request.param("limit") {
        None | Some("") => None,
        Some(limit) => Some(
            limit
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
        ),
    };
    let options = ListOptions {
        labels,
        fields,
        limit,
        continue_after: request
            .param("continue")
            .filter(|token| !token.is_empty())
            .map(str::to_owned),
    };
    Ok(json_response(
        200,
        &store.list(target, namespace, &options)?,
    ))
}

/// kube-apiserver ends a watch after a random time between its minimum request timeout
/// (30 minutes) and twice that; the stand-in uses the minimum.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

fn watch(
    shared: &Arc<Shared>,
    target: &Target,
    namespace: Option<&str>,
    request: &ApiRequest,
) -> Result<Response<ResponseBody>, ApiError> {
    let (labels, fields) = selectors(request)?;
    let from = match request.param("resourceVersion") {
        None | Some("") => None,
        Some(version) => Some(version.parse::<u64>().map_err(|_| {
            ApiError::invalid(
                "ListOptions.meta.k8s.io",
                "",
                &[(
                    "resourceVersion".into(),
                    format!("Invalid value: \"{version}\": must be a number"),
                )],
            )
        })?),
    };
    let timeout = match request.param("timeoutSeconds") {
        Some(seconds) if !seconds.is_empty() => {
            Duration::from_secs(seconds.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid timeoutSeconds {seconds:?}"))
            })?)
        }
        _ => DEFAULT_WATCH_TIMEOUT,
    };
    let filter = WatchFilter {
        target: target.clone(),
        namespace: namespace.map(str::to_owned),
        labels,
        fields,
    };
    let body = match shared.store.watch(filter, from) {
        // As kube-apiserver does for a watch: 200, then one ERROR event, then the end.
        WatchStart::Expired(error) => {
            ResponseBody::Lines([watch_line("ERROR", &error.to_status())].into())
        }
        WatchStart::Stream {
            id,
            initial,
            receiver,
        } => {
            let bookmarks = request
                .flag("allowWatchBookmarks")
                .then_some(shared.bookmark_interval);
            tokio::spawn(keep_watch(shared.store.clone(), id, bookmarks, timeout));
            ResponseBody::Watch {
                initial: initial.into(),
                receiver,
                _guard: WatchGuard {
                    store: shared.store.clone(),
                    id,
                },
            }
        }
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_decoded() {
        let query = parse_query("labelSelector=x+in+%281%2C2%29&watch=1&empty=");
        assert_eq!(
            query[0],
            ("labelSelector".to_owned(), "x in (1,2)".to_owned())
        );
        assert_eq!(query[1], ("watch".to_owned(), "1".to_owned()));
        assert_eq!(query[2], ("empty".to_owned(), String::new()));
    }

    #[test]
    fn namespace_paths_are_told_from_namespaced_ones() {
        let namespace = parse_resource_path("", &["namespaces", "default"]).unwrap();
        assert_eq!(
            (namespace.plural, namespace.name),
            ("namespaces", Some("default"))
        );
        let status = parse_resource_path("", &["namespaces", "default", "status"]).unwrap();
        assert_eq!(status.subresource, Some("status"));
        let secrets = parse_resource_path("", &["namespaces", "default", "secrets"]).unwrap();
        assert_eq!(
            (secrets.namespace, secrets.plural),
            (Some("default"), "secrets")
        );
    }
}
