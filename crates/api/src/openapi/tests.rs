//! The document against the route table the router dispatches on.

use std::collections::BTreeSet;

use super::*;
use crate::routes::{resolve, Resolution};
use crate::routing::SERVED_COLLECTIONS;

const DISCOVERY: [&str; 3] = ["/", "/v1", "/v1/openapi.json"];
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                operations.insert((path.clone(), method.to_owned()));
            }
        }
    }
    operations
}

/// A request path for `template` with distinct stand-ins for its parameters.
fn instantiate(template: &str) -> (Vec<String>, Vec<String>) {
    let mut values = Vec::new();
    let segments = template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                let value = format!("x{}", values.len());
                values.push(value.clone());
                value
            } else {
                segment.to_owned()
            }
        })
        .collect();
    (segments, values)
}

#[test]
fn every_route_is_documented_with_its_methods_and_nothing_else() {
    let document = document("http://magnum.test:9511");
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|route| (format!("/v1/{}", route.path), method_key(&route.method)))
        .chain(
            DISCOVERY
                .iter()
                .map(|path| (path.to_string(), "get".to_owned())),
        )
        .collect();
    assert_eq!(documented_operations(&document), served);
    for route in ROUTES {
        let operation =
            &document["paths"][format!("/v1/{}", route.path)][method_key(&route.method)];
        let responses = operation["responses"].as_object().unwrap();
        let successes: Vec<&String> = responses.keys().filter(|s| s.starts_with('2')).collect();
        assert_eq!(successes.len(), 1, "{}", route.path);
        for status in ["400", "401", "403", "406"] {
            assert!(responses.contains_key(status), "{} {status}", route.path);
        }
    }
}

#[test]
fn every_documented_operation_reaches_its_endpoint_and_no_other_method_does() {
    let document = document("http://magnum.test:9511");
    for (path, method) in documented_operations(&document) {
        if DISCOVERY.contains(&path.as_str()) {
            continue;
        }
        let template = path.strip_prefix("/v1/").unwrap();
        let (segments, values) = instantiate(template);
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let Resolution::Route(route, parameters) = resolve(&segments, &method) else {
            panic!("{method} {path} is documented but not served");
        };
        assert_eq!(
            route.path, template,
            "{method} {path} reaches another route"
        );
        assert_eq!(parameters, values, "{method} {path}");
        let operation_id = &document["paths"][&path][method_key(&method)]["operationId"];
        assert_eq!(operation_id, &json!(format!("{:?}", route.endpoint)));
        for other in ["GET", "POST", "PATCH", "DELETE", "PUT"] {
            let other = Method::from_bytes(other.as_bytes()).unwrap();
            let documented = document["paths"][&path].get(method_key(&other)).is_some();
            match resolve(&segments, &other) {
                // Another route's parameter may take a literal (PATCH /v1/clusters/detail
                // updates a cluster named "detail", as upstream): documented there.
                Resolution::Route(route, _) => assert!(
                    documented || route.path != template,
                    "{other} {path} is served but not documented"
                ),
                _ => assert!(!documented, "{other} {path} is documented but not served"),
            }
        }
    }
}

#[test]
fn literal_segments_win_over_parameters_only_for_their_method() {
    let detail = resolve(&["clusters", "detail"], &Method::GET);
    assert!(
        matches!(detail, Resolution::Route(route, _) if route.endpoint == Endpoint::ClusterDetailList)
    );
    // As upstream: PATCH /v1/clusters/detail names a cluster called "detail".
    let patch = resolve(&["clusters", "detail"], &Method::PATCH);
    assert!(
        matches!(patch, Resolution::Route(route, ref p) if route.endpoint == Endpoint::ClusterUpdate && p == &["detail"])
    );
    assert!(matches!(
        resolve(&["quotas", "p"], &Method::GET),
        Resolution::Unknown
    ));
    assert!(matches!(
        resolve(&["stats"], &Method::POST),
        Resolution::OtherMethod
    ));
    assert!(matches!(
        resolve(&["clusters", "c", "nodegroups", "n", "x"], &Method::GET),
        Resolution::Unknown
    ));
}

#[test]
fn the_served_collections_are_the_tables() {
    let from_table: BTreeSet<&str> = ROUTES
        .iter()
        .map(|route| route.path.split('/').next().unwrap())
        .collect();
    let served: BTreeSet<&str> = SERVED_COLLECTIONS.iter().copied().collect();
    assert_eq!(from_table, served);
}

fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get("$ref") {
                found.push(target.clone());
            }
            object.values().for_each(|value| references(value, found));
        }
        Value::Array(items) => items.iter().for_each(|value| references(value, found)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_and_every_path_parameter_is_declared() {
    let document = document("http://magnum.test:9511");
    let mut found = Vec::new();
    references(&document, &mut found);
    assert!(found.len() > 100, "{}", found.len());
    for target in found {
        let pointer = target.strip_prefix('#').expect("local references only");
        assert!(
            document.pointer(pointer).is_some(),
            "{target} is not defined"
        );
    }
    let mut operation_ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        let declared: BTreeSet<&str> = item["parameters"]
            .as_array()
            .map(|parameters| {
                parameters
                    .iter()
                    .map(|parameter| parameter["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let named: BTreeSet<&str> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, named, "{path}");
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                let id = operation["operationId"].as_str().unwrap().to_owned();
                assert!(operation_ids.insert(id), "{method} {path}: duplicate id");
            }
        }
    }
}

#[test]
fn request_bodies_follow_the_handlers_attribute_tables() {
    let schema = body_schema(
        clusters::CREATE_SCHEMA,
        &schemas::cluster_body_overrides(clusters::NAME_PATTERN),
        &[],
    );
    assert_eq!(schema["required"], json!(["cluster_template_id"]));
    assert_eq!(schema["additionalProperties"], json!(false));
    let properties = schema["properties"].as_object().unwrap();
    // Read-only attributes are refused when sent: not part of a valid body.
    assert!(!properties.contains_key("api_address"));
    // An integer as JSON's, or as a string upstream's decoding reads (what magnum-ui sends).
    assert_eq!(properties["node_count"]["anyOf"][0]["minimum"], json!(0));
    assert_eq!(
        properties["node_count"]["anyOf"][1]["type"],
        json!("string")
    );
    assert_eq!(properties["name"]["maxLength"], json!(242));
    assert_eq!(properties["name"]["pattern"], json!(clusters::NAME_PATTERN));
    // A mandatory attribute cannot be null (null is absent).
    assert_eq!(properties["cluster_template_id"]["type"], json!("string"));
    assert_eq!(properties["keypair"]["type"], json!(["string", "null"]));
    let declared = clusters::CREATE_SCHEMA
        .iter()
        .filter(|attribute| !matches!(attribute.kind, crate::input::Kind::ReadOnly))
        .count();
    assert_eq!(properties.len(), declared);
    let document = document("http://h");
    assert_eq!(
        document["paths"]["/v1/clusters"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"],
        schema
    );
}

#[test]
fn the_version_header_pattern_names_the_supported_range() {
    let pattern = version_header_pattern();
    assert!(pattern.contains("(latest|1\\.(14|13|12|11|10|9|8|7|6|5|4|3|2|1))$"));
    assert!(pattern.starts_with("^(container-infra|"));
    let canonical = canonical_versions();
    assert_eq!(canonical.len(), 15);
    assert_eq!(canonical[1], "container-infra 1.14");
    assert_eq!(canonical[14], "container-infra 1.1");
}

#[test]
fn the_document_is_openapi_3_1_and_names_its_server() {
    let document = document("https://magnum.example:9511/container-infra");
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(
        document["servers"][0]["url"],
        "https://magnum.example:9511/container-infra"
    );
    assert_eq!(
        document["paths"]["/v1/clusters/{cluster_ident}/actions/resize"]["post"]
            ["x-openstack-min-microversion"],
        "1.7"
    );
    assert_eq!(
        document["paths"]["/v1/clusters/{cluster_ident}/actions/upgrade"]["post"]
            ["x-openstack-min-microversion"],
        "1.8"
    );
    assert!(document["paths"]["/v1/clusters"]["get"]
        .get("x-openstack-min-microversion")
        .is_none());
    let error = &document["components"]["schemas"]["Error"]["properties"]["errors"]["items"];
    let keys: BTreeSet<&str> = error["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key.as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["request_id", "code", "status", "title", "detail", "links"])
    );
}

#[tokio::test]
async fn the_served_document_is_the_generated_one_with_the_request_base() {
    for base in ["http://127.0.0.1:9511", "https://h\"x/container-infra"] {
        let response = respond(base, "req-1", MIN_VERSION);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let served: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(served, document(base));
    }
}

#[test]
fn an_event_stream_is_documented_beside_json() {
    let route = Route {
        method: Method::GET,
        path: "clusters/{cluster_ident}/events",
        endpoint: Endpoint::ClusterGet,
        since: None,
    };
    let operation = op("Watch", ok("ClusterDetail")).event_stream("One event per change.");
    let responses = responses(&route, &operation);
    let content = &responses["200"]["content"];
    assert_eq!(
        content["application/json"]["schema"],
        schema_ref("ClusterDetail")
    );
    assert_eq!(content["text/event-stream"]["schema"]["type"], "string");
    assert!(responses.contains_key("404"));
}
