//! The OpenAPI 3.1 document of the v1 API, served at `GET /v1/openapi.json` (public, like `/`
//! and `/v1`: it describes the API and holds no tenant data).
//!
//! Generated from the route table (`crate::routes::ROUTES`, the table the router dispatches
//! on): its paths and methods cannot drift from what is served. Each [`Endpoint`] is
//! documented once, in [`operation`], whose `match` the compiler keeps exhaustive; the request
//! bodies come from the attribute tables the handlers check input with, the response shapes
//! from [`schemas`], next to which the views are described. Statuses every route can give
//! (authentication, policy, microversions, bodies) are added here, from what the route is.

mod schemas;

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Response, StatusCode};
use magnum_store::{
    CLUSTER_SORT_KEYS, CLUSTER_TEMPLATE_SORT_KEYS, NODEGROUP_SORT_KEYS, QUOTA_SORT_KEYS,
};
use serde_json::{json, Map, Value};

use crate::context::{add_version_headers, json_response};
use crate::handlers::{certificates, cluster_templates, clusters, events, nodegroups, quotas};
use crate::microversion::{Version, MAX_VERSION, MIN_VERSION};
use crate::routes::{Endpoint, Route, ROUTES};
use schemas::{body_schema, schema_ref};

/// The document's name under `/v1/`.
pub(crate) const DOCUMENT: &str = "openapi.json";

/// `GET /v1/openapi.json`: the document encoded once per process, the request's base URL
/// put in as its server (an unauthenticated route should cost a copy, not a build).
pub(crate) fn respond(base_url: &str, request_id: &str, version: Version) -> Response<Body> {
    static ENCODED: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    let (head, tail) = ENCODED.get_or_init(|| {
        let encoded = magnum_types::encode(&document(SERVER_PLACEHOLDER));
        let placeholder = magnum_types::encode(SERVER_PLACEHOLDER);
        let at = encoded
            .windows(placeholder.len())
            .position(|window| window == placeholder)
            .expect("the document names its server");
        (
            encoded[..at].to_vec(),
            encoded[at + placeholder.len()..].to_vec(),
        )
    });
    let server = magnum_types::encode(base_url);
    let mut body = Vec::with_capacity(head.len() + server.len() + tail.len());
    body.extend_from_slice(head);
    body.extend_from_slice(&server);
    body.extend_from_slice(tail);
    let mut response = json_response(StatusCode::OK, body, request_id);
    add_version_headers(response.headers_mut(), version);
    response
}

/// Stands for the base URL in the cached document; appears nowhere else in it.
const SERVER_PLACEHOLDER: &str = "\u{0}server\u{0}";

/// How one endpoint is documented; the generator adds what every route shares.
pub(crate) struct Operation {
    summary: &'static str,
    description: &'static str,
    query: Vec<Value>,
    /// The JSON request body's schema; `None`: the endpoint reads no body.
    body: Option<Value>,
    /// The success status, and its body's schema (`None` for 204).
    success: (u16, Option<Value>),
    /// Statuses beyond those the route's shape implies (see [`responses`]).
    errors: &'static [(u16, &'static str)],
    /// When the success may also be a `text/event-stream` (server-sent events): what it sends.
    event_stream: Option<&'static str>,
    /// The first microversion the endpoint works at, when later than its route's gate.
    works_from: Option<Version>,
}

fn op(summary: &'static str, success: (u16, Option<Value>)) -> Operation {
    Operation {
        summary,
        description: "",
        query: Vec::new(),
        body: None,
        success,
        errors: &[],
        event_stream: None,
        works_from: None,
    }
}

impl Operation {
    fn describe(self, description: &'static str) -> Self {
        Self {
            description,
            ..self
        }
    }

    fn query(self, query: Vec<Value>) -> Self {
        Self { query, ..self }
    }

    fn body(self, body: Value) -> Self {
        Self {
            body: Some(body),
            ..self
        }
    }

    fn errors(self, errors: &'static [(u16, &'static str)]) -> Self {
        Self { errors, ..self }
    }

    fn works_from(self, version: Version) -> Self {
        Self {
            works_from: Some(version),
            ..self
        }
    }

    /// The success answer may be `text/event-stream` too (e.g. with `?watch=true`).
    fn event_stream(self, description: &'static str) -> Self {
        Self {
            event_stream: Some(description),
            ..self
        }
    }
}

fn ok(schema: &str) -> (u16, Option<Value>) {
    (200, Some(schema_ref(schema)))
}

fn accepted(schema: &str) -> (u16, Option<Value>) {
    (202, Some(schema_ref(schema)))
}

fn created(schema: &str) -> (u16, Option<Value>) {
    (201, Some(schema_ref(schema)))
}

const NO_CONTENT: (u16, Option<Value>) = (204, None);

const MARKER_UNKNOWN: &[(u16, &str)] = &[(404, "The marker names no item.")];
const CREATE_CONFLICTS: &[(u16, &str)] = &[
    (404, "A referenced resource does not exist."),
    (
        409,
        "A name matches several resources, or the resource exists already.",
    ),
    (
        503,
        "A cloud service the driver looks references up in is unavailable.",
    ),
];

/// The documentation of `endpoint`. Adding an endpoint: an arm here.
pub(crate) fn operation(endpoint: Endpoint) -> Operation {
    use Endpoint::*;
    match endpoint {
        TemplateList => op("List cluster templates", ok("ClusterTemplateCollection"))
            .describe("Full objects, as the detail list. Templates of the caller's project, public ones, and for an admin all.")
            .query(pagination(CLUSTER_TEMPLATE_SORT_KEYS, Marker::Uuid))
            .errors(MARKER_UNKNOWN),
        TemplateDetailList => op("List cluster templates (detail)", ok("ClusterTemplateCollection"))
            .query(pagination(CLUSTER_TEMPLATE_SORT_KEYS, Marker::Uuid))
            .errors(MARKER_UNKNOWN),
        TemplateCreate => op("Create a cluster template", created("ClusterTemplate"))
            .describe("Answers 201 with the template and its Location.")
            .body(body_schema(cluster_templates::CREATE_SCHEMA, &[], &["coe"]))
            .errors(CREATE_CONFLICTS),
        TemplateGet => op("Show a cluster template", ok("ClusterTemplate")),
        TemplateUpdate => op("Update a cluster template", ok("ClusterTemplate"))
            .describe("A JSON patch. A template clusters use may only change its name, or be made public, hidden or tagged.")
            .body(schema_ref("JsonPatch"))
            .errors(&[(503, "A cloud service the driver looks references up in is unavailable.")]),
        TemplateDelete => op("Delete a cluster template", NO_CONTENT)
            .describe("400 while clusters use it."),
        ClusterList => op("List clusters", ok("ClusterCollection"))
            .describe("The summary view. The caller's project's clusters; an admin's list has every project's.")
            .query(pagination(CLUSTER_SORT_KEYS, Marker::Uuid))
            .errors(MARKER_UNKNOWN),
        ClusterDetailList => op("List clusters (detail)", ok("ClusterDetailCollection"))
            .query(pagination(CLUSTER_SORT_KEYS, Marker::Uuid))
            .errors(MARKER_UNKNOWN),
        ClusterCreate => op("Create a cluster", accepted("Uuid"))
            .describe("Asynchronous: the cluster is stored in CREATE_IN_PROGRESS and built by the conductor. An unknown template is 400 below 1.10, 404 from 1.10. The project's cluster quota is 403 when reached.")
            .body(body_schema(
                clusters::CREATE_SCHEMA,
                &schemas::cluster_body_overrides(clusters::NAME_PATTERN),
                &[],
            ))
            .errors(CREATE_CONFLICTS),
        ClusterGet => op("Show a cluster", ok("ClusterDetail")),
        ClusterUpdate => op("Update a cluster", accepted("Uuid"))
            .describe("A JSON patch of node_count (the default worker nodegroup's), health_status or health_status_reason; asynchronous.")
            .query(vec![query_parameter(
                "rollback",
                boolean_text(),
                "From microversion 1.3 (an unknown argument below): roll back a failed update.",
            )])
            .body(schema_ref("JsonPatch")),
        ClusterDelete => op("Delete a cluster", NO_CONTENT)
            .describe("Asynchronous. magnum-rs extension: ?force=true (admin) removes the records without waiting for the driver.")
            .query(vec![query_parameter(
                "force",
                boolean_text(),
                "magnum-rs extension: delete the records at once, whatever the driver answers (policy cluster:force_delete).",
            )]),
        ClusterResize => op("Resize a nodegroup of a cluster", accepted("Uuid"))
            .describe("From microversion 1.7 (406 below). The default worker nodegroup unless nodegroup names one; 0 nodes from 1.10.")
            .body(body_schema(clusters::RESIZE_SCHEMA, &schemas::resize_body_overrides(), &[])),
        ClusterUpgrade => op("Upgrade a cluster to another template", accepted("Uuid"))
            .describe("From microversion 1.8: 406 below 1.7, 400 at 1.7, as upstream.")
            .works_from(Version::new(1, 8))
            .body(body_schema(clusters::UPGRADE_SCHEMA, &[], &[])),
        NodegroupList => op("List the nodegroups of a cluster", ok("NodegroupCollection"))
            .describe("From microversion 1.9 (406 below, for every method under nodegroups).")
            .query({
                let mut query = pagination(NODEGROUP_SORT_KEYS, Marker::Uuid);
                query.push(query_parameter(
                    "role",
                    json!({"type": "string"}),
                    "Only nodegroups of this role.",
                ));
                query
            }),
        NodegroupCreate => op("Create a nodegroup", accepted("NodegroupDetail"))
            .describe("From microversion 1.9. Asynchronous; 409 while the cluster has no API address yet, for a name in use, and for counts, labels or taints that do not fit.")
            .body(body_schema(
                nodegroups::CREATE_SCHEMA,
                &schemas::nodegroup_body_overrides(),
                &["name"],
            ))
            .errors(&[(503, "A cloud service the driver looks references up in is unavailable.")]),
        NodegroupGet => op("Show a nodegroup", ok("NodegroupDetail"))
            .describe("From microversion 1.9. The nodegroup by id, uuid or name."),
        NodegroupUpdate => op("Update a nodegroup", accepted("NodegroupDetail"))
            .describe("From microversion 1.9. A JSON patch of min_node_count, max_node_count, node_labels or node_taints.")
            .body(schema_ref("JsonPatch")),
        NodegroupDelete => op("Delete a nodegroup", NO_CONTENT)
            .describe("From microversion 1.9. Default nodegroups cannot be deleted (400)."),
        CertificateSign => op("Sign a certificate signing request", created("SignedCertificate"))
            .describe("With the cluster's CA (ca_cert_type: kubernetes, etcd, front_proxy). An unknown cluster is 400, as upstream.")
            .body(body_schema(certificates::SIGN_SCHEMA, &[], &[]))
            .errors(&[(409, "The cluster name is ambiguous, or its CA is not made yet.")]),
        CertificateGet => op("Show a cluster's CA certificate", ok("Certificate"))
            .query(vec![query_parameter(
                "ca_cert_type",
                json!({"type": "string"}),
                "etcd, front_proxy (or front-proxy); anything else is the kubernetes CA.",
            )]),
        CertificateRotate => op("Rotate a cluster's CA", accepted("Uuid"))
            .describe("No body. The cluster must be in a *_COMPLETE status and use TLS (400 otherwise)."),
        CredentialRotate => op("Rotate a cluster's cloud credentials", accepted("Uuid"))
            .describe("From microversion 1.12 (406 below). No body.")
            .errors(&[(503, "The identity service is unavailable.")]),
        QuotaList => op("List quotas", ok("QuotaCollection"))
            .describe("Admin only. The caller's project's quotas unless all_tenants is true.")
            .query({
                let mut query = pagination(QUOTA_SORT_KEYS, Marker::Integer);
                query.push(query_parameter(
                    "all_tenants",
                    boolean_text(),
                    "Every project's quotas.",
                ));
                query
            })
            .errors(MARKER_UNKNOWN),
        QuotaCreate => op("Create a quota", created("Quota"))
            .describe("Admin only.")
            .body(body_schema(quotas::SCHEMA, &[], &["project_id"]))
            .errors(&[
                (404, "The project does not exist (Keystone)."),
                (409, "The project has a quota for this resource already."),
                (503, "The identity service is unavailable."),
            ]),
        QuotaGet => op("Show a project's quota", (200, Some(json!({"oneOf": [schema_ref("Quota"), schema_ref("DefaultQuota")]}))))
            .describe("A project without a quota row gets the configured default."),
        QuotaUpdate => op("Update a quota", accepted("Quota"))
            .describe("Admin only. A plain quota object (not a JSON patch); the path names the quota, hard_limit defaults to 1.")
            .body(body_schema(quotas::SCHEMA, &[], &[])),
        QuotaDelete => op("Delete a quota", NO_CONTENT).describe("Admin only."),
        Stats => op("Count clusters and nodes", ok("Stats"))
            .describe("The caller's project, or for an admin every project unless project_id names one.")
            .query(vec![
                query_parameter("project_id", json!({"type": "string"}), "An admin's choice of project; others may name only their own."),
                query_parameter("type", json!({"enum": ["cluster"]}), "Only cluster (any case)."),
            ]),
        ClusterEvents => op("List or watch a cluster's events", ok("EventCollection"))
            .describe(EVENTS)
            .query(events_query())
            .event_stream(EVENT_STREAM)
            .errors(EVENT_STREAM_LIMITS),
        ProjectEvents => op("List or watch the project's cluster events", ok("EventCollection"))
            .describe(EVENTS)
            .query(events_query())
            .event_stream(EVENT_STREAM)
            .errors(EVENT_STREAM_LIMITS),
        ServiceList => op("List the conductors", ok("MagnumServiceCollection"))
            .describe("Admin only. Not paginated."),
    }
}

const EVENTS: &str = "magnum-rs extension. Events in commit order, also of deleted clusters \
(by uuid, while they are kept: events.keep_after_delete). With watch=true (Accept: \
text/event-stream) a stream of what happens from now on, or after Last-Event-ID.";

const EVENT_STREAM: &str = "Server-Sent Events: `event: cluster_event` frames with `id:` the \
event's sequence and `data:` an Event as JSON; `event: gap` with `id:` pruned_through and `data: \
{\"reason\": \"events_pruned\", \"message\", \"last_event_id\", \"pruned_through\"}` when \
retention dropped events up to pruned_through before the stream could send them (once, after \
every event kept up to there; last_event_id: the last id sent before it): read the current \
state again, the stream goes on after pruned_through with the events kept; `event: end` with \
`data: {\"reason\", \"message\", \"last_event_id\"}` when the server ends the stream \
(max_duration, token_expired, cluster_deleted: also at once for a cluster deleted before \
the stream's start, server_stopping, unavailable). Resume with Last-Event-ID.";

const EVENT_STREAM_LIMITS: &[(u16, &str)] = &[
    (404, "The marker names no event."),
    (
        503,
        "watch=true past events.max_streams or events.max_streams_per_project.",
    ),
];

/// The events lists' arguments: pagination, and `watch` for a stream.
fn events_query() -> Vec<Value> {
    let mut query = pagination(events::EVENT_SORT_KEYS, Marker::UuidOrSequence);
    query.push(query_parameter(
        "watch",
        boolean_text(),
        "A Server-Sent Events stream instead of a page.",
    ));
    query
}

enum Marker {
    Uuid,
    Integer,
    /// An event's uuid, or its sequence (what `next` links carry).
    UuidOrSequence,
}

fn query_parameter(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

/// A boolean in a query string: parsed as upstream's lenient booleans.
fn boolean_text() -> Value {
    schemas::lenient_boolean(false)
}

/// `limit`, `marker`, `sort_key` (the resource's sortable columns) and `sort_dir`.
fn pagination(sort_keys: &[(&str, bool)], marker: Marker) -> Vec<Value> {
    let keys: Vec<&str> = sort_keys.iter().map(|(key, _)| *key).collect();
    let marker = match marker {
        Marker::Uuid => query_parameter(
            "marker",
            json!({"type": "string", "format": "uuid"}),
            "The uuid of the last item of the previous page (404 when no item has it).",
        ),
        Marker::UuidOrSequence => query_parameter(
            "marker",
            json!({"anyOf": [
                {"type": "string", "format": "uuid"},
                {"type": "integer", "minimum": 0, "maximum": i64::MAX},
            ]}),
            "The uuid or the sequence of the last event of the previous page.",
        ),
        Marker::Integer => query_parameter(
            "marker",
            json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}),
            "The id of the last item of the previous page (404 when no item has it).",
        ),
    };
    vec![
        query_parameter(
            "limit",
            json!({"type": "integer", "minimum": 1}),
            "Items per page; values above api.max_limit (default 1000) are capped to it, which is also the default.",
        ),
        marker,
        query_parameter("sort_key", json!({"enum": keys}), "Default id."),
        query_parameter("sort_dir", json!({"enum": ["asc", "desc"]}), "Default asc."),
    ]
}

fn path_parameter(name: &str) -> Value {
    let description = match name {
        "clustertemplate_ident" => "A template's uuid, or its name (409 when several have it).",
        "cluster_ident" => "A cluster's uuid, or its name (409 when several have it).",
        "nodegroup_ident" => "A nodegroup's id, uuid or name.",
        "project_id" => "A Keystone project id.",
        "resource" => "The quota's resource: Cluster.",
        _ => "",
    };
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "schema": {"type": "string", "minLength": 1},
        "description": description,
    })
}

/// The `OpenStack-API-Version` values the server accepts (service tokens in any case).
fn version_header_pattern() -> String {
    let minors: Vec<String> = (MIN_VERSION.minor..=MAX_VERSION.minor)
        .rev()
        .map(|minor| minor.to_string())
        .collect();
    format!(
        "^(container-infra|container-infrastructure|container-infrastructure-management) (latest|{}\\.({}))$",
        MAX_VERSION.major,
        minors.join("|")
    )
}

/// `container-infra latest` and `container-infra <X.Y>` for every supported version.
fn canonical_versions() -> Vec<String> {
    std::iter::once("container-infra latest".to_owned())
        .chain(
            (MIN_VERSION.minor..=MAX_VERSION.minor)
                .rev()
                .map(|minor| format!("container-infra {}.{minor}", MAX_VERSION.major)),
        )
        .collect()
}

fn error_response(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "headers": {
            "X-OpenStack-Request-Id": {"$ref": "#/components/headers/RequestId"},
        },
        "content": {"application/json": {"schema": schema}},
    })
}

/// Every response of a route: its success, what its shape implies, and its own errors.
fn responses(route: &Route, operation: &Operation) -> Map<String, Value> {
    let mut responses = Map::new();
    let (status, schema) = &operation.success;
    let mut success = json!({
        "description": match status {
            200 => "OK",
            201 => "Created",
            202 => "Accepted",
            _ => "No content",
        },
        "headers": version_headers(),
    });
    if let Some(schema) = schema {
        success["content"] = json!({"application/json": {"schema": schema}});
    }
    if let Some(description) = operation.event_stream {
        success["content"]["text/event-stream"] = json!({
            "schema": {"type": "string", "description": description},
        });
    }
    if route.endpoint == Endpoint::TemplateCreate {
        success["headers"]["Location"] = json!({
            "required": true,
            "schema": {"type": "string"},
            "description": "The new template's URL.",
        });
    }
    responses.insert(status.to_string(), success);

    let has_body = operation.body.is_some();
    let has_parameters = route.path.contains('{');
    // A cluster, template or nodegroup may be named, and names need not be unique.
    let names_a_resource = route.path.contains("_ident}");
    let mut errors: Vec<(u16, String)> = vec![
        (400, "The request is not valid: an unknown query argument, a value of the wrong form, a body that does not fit, a NUL character anywhere, or what the resource's rules refuse.".to_owned()),
        (401, "Authentication failed (Keystone): no valid token.".to_owned()),
        (403, "The policy refuses the caller; or, without authentication, a request a web page could have forged (a foreign Host or Origin, a body without a content type).".to_owned()),
        (406, "OpenStack-API-Version is malformed, outside the supported range, or below the route's microversion; or Accept excludes JSON.".to_owned()),
        (503, "The identity service is unavailable.".to_owned()),
    ];
    if has_parameters {
        errors.push((
            404,
            "The resource does not exist, or the caller cannot see it.".to_owned(),
        ));
    }
    if names_a_resource {
        errors.push((
            409,
            "The name matches several resources (use the uuid), or a concurrent change won."
                .to_owned(),
        ));
    }
    if has_body {
        errors.push((
            408,
            "The body did not arrive within api.body_timeout.".to_owned(),
        ));
        errors.push((413, "The body is larger than 112 KiB.".to_owned()));
        errors.push((415, "The body is not JSON.".to_owned()));
    }
    for (status, description) in operation.errors {
        match errors.iter_mut().find(|(known, _)| known == status) {
            Some((_, known)) => {
                known.push(' ');
                known.push_str(description);
            }
            None => errors.push((*status, (*description).to_owned())),
        }
    }
    errors.sort_by_key(|(status, _)| *status);
    for (status, description) in errors {
        let schema = match status {
            401 => json!({"anyOf": [schema_ref("KeystoneError"), schema_ref("Error")]}),
            406 => json!({"anyOf": [schema_ref("Error"), schema_ref("MicroversionError")]}),
            _ => schema_ref("Error"),
        };
        responses.insert(status.to_string(), error_response(&description, schema));
    }
    responses
}

fn version_headers() -> Value {
    json!({
        "X-OpenStack-Request-Id": {"$ref": "#/components/headers/RequestId"},
        "OpenStack-API-Version": {"$ref": "#/components/headers/Version"},
        "OpenStack-API-Minimum-Version": {"$ref": "#/components/headers/MinimumVersion"},
        "OpenStack-API-Maximum-Version": {"$ref": "#/components/headers/MaximumVersion"},
        "Vary": {"$ref": "#/components/headers/Vary"},
    })
}

/// The collection a path is about: its first segment, or a nested collection.
fn tag(path: &str) -> &str {
    if path.contains("/nodegroups") {
        "nodegroups"
    } else {
        path.split('/').next().unwrap_or_default()
    }
}

fn operation_id(route: &Route) -> String {
    format!("{:?}", route.endpoint)
}

fn method_key(method: &Method) -> String {
    method.as_str().to_ascii_lowercase()
}

fn operation_object(route: &Route) -> Value {
    let operation = operation(route.endpoint);
    let mut parameters = vec![json!({"$ref": "#/components/parameters/Version"})];
    parameters.extend(operation.query.iter().cloned());
    let mut description = operation.description.to_owned();
    if let Some((version, _)) = route.since {
        if !description.contains("microversion") {
            description.push_str(&format!(" From microversion {version} (406 below)."));
        }
    }
    let mut object = json!({
        "operationId": operation_id(route),
        "tags": [tag(route.path)],
        "summary": operation.summary,
        "description": description.trim(),
        "parameters": parameters,
        "responses": responses(route, &operation),
    });
    if let Some(version) = operation
        .works_from
        .or(route.since.map(|(version, _)| version))
    {
        object["x-openstack-min-microversion"] = json!(version.to_string());
    }
    if let Some(body) = &operation.body {
        object["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": body}},
        });
    }
    object
}

/// `/`, `/v1` and this document: served before routing, without authentication.
fn discovery_paths() -> Vec<(&'static str, Value)> {
    let public = |summary: &str, schema: &str, versioned: bool| {
        let mut ok = json!({
            "description": "OK",
            "content": {"application/json": {"schema": schema_ref(schema)}},
        });
        ok["headers"] = if versioned {
            version_headers()
        } else {
            json!({"X-OpenStack-Request-Id": {"$ref": "#/components/headers/RequestId"}})
        };
        let mut responses = json!({
            "200": ok,
            "403": error_response(
                "Without authentication, a request a web page could have forged (a foreign Host or Origin).",
                schema_ref("Error"),
            ),
        });
        let mut parameters = Vec::new();
        if versioned {
            parameters.push(json!({"$ref": "#/components/parameters/Version"}));
            responses["406"] = error_response(
                "OpenStack-API-Version is malformed or outside the supported range; or Accept excludes JSON.",
                json!({"anyOf": [schema_ref("Error"), schema_ref("MicroversionError")]}),
            );
        }
        json!({"get": {
            "operationId": summary.replace(' ', ""),
            "tags": ["discovery"],
            "summary": summary,
            "security": [],
            "parameters": parameters,
            "responses": responses,
        }})
    };
    vec![
        ("/", public("Versions", "RootDocument", false)),
        ("/v1", public("Version v1", "V1Document", true)),
        (
            "/v1/openapi.json",
            public("OpenAPI document", "OpenApiDocument", true),
        ),
    ]
}

/// The document, with `base_url` (scheme, host and any path prefix) as its server.
pub(crate) fn document(base_url: &str) -> Value {
    let mut paths = Map::new();
    for (path, item) in discovery_paths() {
        paths.insert(path.to_owned(), item);
    }
    for route in ROUTES {
        let key = format!("/v1/{}", route.path);
        let item = paths.entry(key).or_insert_with(|| {
            let parameters: Vec<Value> = route
                .path
                .split('/')
                .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
                .map(path_parameter)
                .collect();
            json!({"parameters": parameters})
        });
        item[method_key(&route.method)] = operation_object(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "OpenStack Magnum API (magnum-rs)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": DESCRIPTION,
        },
        "servers": [{"url": base_url}],
        "security": [{"keystone": []}],
        "paths": paths,
        "components": components(),
    })
}

const DESCRIPTION: &str = "The Magnum v1 API as magnum-rs serves it, generated from its route \
table. Microversions: send `OpenStack-API-Version: container-infra <X.Y>` (or `latest`); \
without it the request is at the minimum version. There is no `X-OpenStack-Magnum-API-Version` \
header (upstream has none either). Every answer under /v1 that got past the version header \
carries the effective version in `OpenStack-API-Version` and the range in \
`OpenStack-API-Minimum-Version`/`-Maximum-Version`. Paths are also served without `/v1` and \
with a trailing slash. Errors use Magnum's envelope `{\"errors\": [{\"request_id\", \"code\", \
\"status\", \"title\", \"detail\", \"links\"}]}`, except Keystone's 401 and the unsupported \
microversion 406. Integers in bodies are written without a fraction (`3`, not `3.0`) and \
fit in 64 bits, as upstream reads them.";

fn components() -> Value {
    json!({
        "schemas": schemas::components(),
        "parameters": {
            "Version": {
                "name": "OpenStack-API-Version",
                "in": "header",
                "required": false,
                // The canonical values first: generators (schemathesis's coverage phase among
                // them) take an enumeration where they cannot draw from a pattern.
                "schema": {"anyOf": [
                    {"enum": canonical_versions()},
                    {"type": "string", "pattern": version_header_pattern()},
                ]},
                "description": format!(
                    "`<service> <X.Y>`: the service token in any case, the version from {MIN_VERSION} to {MAX_VERSION} or latest. Absent: {MIN_VERSION}."
                ),
            },
        },
        "headers": {
            "RequestId": {"required": true, "schema": {"type": "string", "pattern": "^req-"}},
            "Version": {
                "required": true,
                "schema": {"type": "string"},
                "description": "container-infrastructure-management <X.Y>, the version the request was served at.",
            },
            "MinimumVersion": {"required": true, "schema": {"const": format!("container-infrastructure-management {MIN_VERSION}")}},
            "MaximumVersion": {"required": true, "schema": {"const": format!("container-infrastructure-management {MAX_VERSION}")}},
            "Vary": {"required": true, "schema": {"const": "OpenStack-API-Version"}},
        },
        "securitySchemes": {
            "keystone": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Auth-Token",
                "description": "A Keystone token. With auth.strategy = noauth the identity comes from X-Project-Id, X-User-Id and X-Roles (or the configured defaults) instead.",
            },
        },
    })
}

#[cfg(test)]
mod tests;
