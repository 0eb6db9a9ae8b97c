//! The JSON Schemas of the wire shapes: the views (`crates/types/src/views.rs`,
//! `crates/api/src/views`), the error envelopes (`crate::error`) and the request bodies, the
//! latter derived from the same attribute tables the handlers check input with.

use magnum_domain::cluster::{ClusterStatus, HealthStatus};
use magnum_domain::labels::{MAX_LABELS, MAX_LABEL_KEY_CHARS, MAX_LABEL_VALUE_CHARS};
use serde_json::{json, Map, Value};

use crate::input::{Attribute, Kind};

/// `{"$ref": "#/components/schemas/<name>"}`.
pub(crate) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn string() -> Value {
    json!({"type": "string"})
}

fn nullable(kind: &str) -> Value {
    json!({"type": [kind, "null"]})
}

fn integer() -> Value {
    json!({"type": "integer"})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

fn timestamp() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn nullable_timestamp() -> Value {
    json!({"type": ["string", "null"], "format": "date-time"})
}

fn uuid() -> Value {
    json!({"type": "string", "format": "uuid"})
}

fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

/// An object with exactly these keys (`required` of them always present).
fn object(required: &[&str], properties: Vec<(&str, Value)>) -> Value {
    let properties: Map<String, Value> = properties
        .into_iter()
        .map(|(name, schema)| (name.to_owned(), schema))
        .collect();
    json!({
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": false,
    })
}

/// An object whose every key is always present.
fn closed(properties: Vec<(&str, Value)>) -> Value {
    let required: Vec<&str> = properties.iter().map(|(name, _)| *name).collect();
    object(&required, properties)
}

fn with_description(mut schema: Value, description: &str) -> Value {
    schema["description"] = json!(description);
    schema
}

fn statuses() -> Value {
    let names: Vec<&str> = ClusterStatus::ALL.iter().map(|s| s.as_str()).collect();
    json!({"type": "string", "enum": names})
}

fn health_statuses() -> Value {
    let mut names: Vec<Value> = HealthStatus::ALL
        .iter()
        .map(|s| Value::from(s.as_str()))
        .collect();
    names.push(Value::Null);
    json!({"enum": names})
}

/// The JSON Schema of a request body checked by `crate::input::parse_object` against
/// `attributes`: declared attributes only (unknown ones are refused), `null` as absent (so
/// not for mandatory ones). Read-only attributes are left out: sending one is refused (400).
/// `overrides` give the shape of attributes a handler checks further itself (or that the
/// table only marks `Ignored` because the handler reads them), `required` those a handler
/// refuses to go without although the table has them optional.
pub(crate) fn body_schema(
    attributes: &[Attribute],
    overrides: &[(&str, Value)],
    required: &[&str],
) -> Value {
    let mut properties = Map::new();
    let mut names = Vec::new();
    for attribute in attributes {
        let needed = attribute.mandatory || required.contains(&attribute.name);
        let schema = match overrides.iter().find(|(name, _)| *name == attribute.name) {
            Some((_, schema)) => schema.clone(),
            None => match kind_schema(attribute.kind, !needed) {
                Some(schema) => schema,
                None => continue,
            },
        };
        if needed {
            names.push(attribute.name);
        }
        properties.insert(attribute.name.to_owned(), schema);
    }
    json!({
        "type": "object",
        "required": names,
        "properties": properties,
        "additionalProperties": false,
    })
}

/// `kind` (or `kind` or null).
fn typed(kind: &str, nullable: bool) -> Value {
    if nullable {
        json!([kind, "null"])
    } else {
        json!(kind)
    }
}

/// The strings `crate::input::parse_bool` takes, in any case, around whitespace.
fn boolean_words() -> String {
    let words: Vec<String> = [
        "true", "false", "1", "0", "yes", "no", "on", "off", "t", "f", "y", "n",
    ]
    .iter()
    .map(|word| {
        word.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c, c.to_ascii_uppercase())
                } else {
                    c.to_string()
                }
            })
            .collect()
    })
    .collect();
    format!("^\\s*({})\\s*$", words.join("|"))
}

/// A boolean as upstream reads one: JSON's, or one of its words in a string.
pub(crate) fn lenient_boolean(nullable: bool) -> Value {
    let mut choices = vec![
        json!({"type": "boolean"}),
        json!({"type": "string", "pattern": boolean_words()}),
    ];
    if nullable {
        choices.push(json!({"type": "null"}));
    }
    json!({
        "anyOf": choices,
        "description": "A JSON boolean, or one of the strings true/false, 1/0, yes/no, on/off, \
            t/f, y/n (any case).",
    })
}

fn kind_schema(kind: Kind, nullable: bool) -> Option<Value> {
    Some(match kind {
        Kind::Text { min, max } => {
            json!({"type": typed("string", nullable), "minLength": min, "maxLength": max})
        }
        Kind::Integer { min, max } => {
            let mut number = json!({"type": "integer"});
            if let Some(min) = min {
                number["minimum"] = json!(min);
            }
            if let Some(max) = max {
                number["maximum"] = json!(max);
            }
            let mut choices = vec![
                number,
                json!({"type": "string", "pattern": "^\\s*[+-]?[0-9]+(_[0-9]+)*\\s*$"}),
            ];
            if nullable {
                choices.push(json!({"type": "null"}));
            }
            json!({
                "anyOf": choices,
                "description": "A JSON integer, or a string Python's int() reads (\"60\"), as \
                    upstream's body decoding takes it; the bounds apply to the number read.",
            })
        }
        Kind::Boolean => lenient_boolean(nullable),
        Kind::Choice(choices) => {
            let mut values: Vec<Value> = choices.iter().map(|c| Value::from(*c)).collect();
            if nullable {
                values.push(Value::Null);
            }
            json!({"enum": values})
        }
        Kind::Labels => labels_input(),
        Kind::Uuid => json!({"type": typed("string", nullable), "format": "uuid"}),
        Kind::ReadOnly => return None,
        Kind::Ignored => json!({"description": "Accepted and ignored."}),
        Kind::Timestamp => json!({
            "type": typed("string", nullable),
            "format": "date-time",
            "description": "Accepted when it is a timestamp, and ignored: the server sets it.",
        }),
    })
}

fn labels_input() -> Value {
    json!({
        "type": ["object", "null"],
        "maxProperties": MAX_LABELS,
        "propertyNames": {"maxLength": MAX_LABEL_KEY_CHARS},
        "additionalProperties": {
            "anyOf": [
                {"type": "string", "maxLength": MAX_LABEL_VALUE_CHARS},
                {"type": ["integer", "number", "boolean"]},
            ]
        },
        "description": "Values are stored, and returned, as strings; the whole takes at most \
            65,535 bytes as JSON.",
    })
}

/// A node taint as nodegroups take and show it.
fn taint() -> Value {
    object(
        &["key", "effect"],
        vec![
            ("key", json!({"type": "string", "minLength": 1})),
            ("value", string()),
            (
                "effect",
                json!({"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}),
            ),
        ],
    )
}

/// `node_labels` and `node_taints` on nodegroup create (checked by the handler).
pub(crate) fn nodegroup_body_overrides() -> Vec<(&'static str, Value)> {
    vec![
        (
            "node_labels",
            json!({"type": ["object", "null"], "additionalProperties": {"type": "string"}}),
        ),
        (
            "node_taints",
            json!({"type": ["array", "null"], "items": taint()}),
        ),
    ]
}

/// A cluster's `name` on create (checked by the handler against upstream's pattern).
pub(crate) fn cluster_body_overrides(pattern: &str) -> Vec<(&'static str, Value)> {
    vec![(
        "name",
        json!({"type": ["string", "null"], "minLength": 1, "maxLength": 242, "pattern": pattern}),
    )]
}

/// `nodes_to_remove` on resize (checked by the handler).
pub(crate) fn resize_body_overrides() -> Vec<(&'static str, Value)> {
    vec![(
        "nodes_to_remove",
        json!({"type": ["array", "null"], "items": {"type": "string"}}),
    )]
}

fn links() -> Value {
    json!({"type": "array", "items": schema_ref("Link")})
}

fn cluster_summary_properties() -> Vec<(&'static str, Value)> {
    vec![
        ("uuid", uuid()),
        ("name", nullable("string")),
        ("cluster_template_id", uuid()),
        ("keypair", nullable("string")),
        ("docker_volume_size", nullable("integer")),
        ("labels", string_map()),
        ("node_count", integer()),
        ("master_count", integer()),
        ("status", statuses()),
        ("health_status", health_statuses()),
        ("master_flavor_id", nullable("string")),
        ("flavor_id", nullable("string")),
        ("create_timeout", nullable("integer")),
        ("links", links()),
        ("merge_labels", json!({"const": false})),
        (
            "stack_id",
            with_description(nullable("string"), "Below microversion 1.13."),
        ),
        (
            "cluster_id",
            with_description(
                nullable("string"),
                "From microversion 1.13, instead of stack_id.",
            ),
        ),
    ]
}

fn summary_required() -> Vec<&'static str> {
    cluster_summary_properties()
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !matches!(*name, "stack_id" | "cluster_id"))
        .collect()
}

/// `stack_id` below 1.13, `cluster_id` from 1.13: exactly one of them.
fn one_stack_key(mut schema: Value) -> Value {
    schema["oneOf"] = json!([{"required": ["stack_id"]}, {"required": ["cluster_id"]}]);
    schema
}

fn cluster_detail() -> Value {
    let mut properties = cluster_summary_properties();
    properties.extend([
        ("status_reason", nullable("string")),
        (
            "health_status_reason",
            json!({"type": "object", "maxProperties": MAX_LABELS}),
        ),
        ("discovery_url", nullable("string")),
        ("api_address", nullable("string")),
        ("coe_version", nullable("string")),
        ("container_version", nullable("string")),
        ("project_id", string()),
        ("user_id", string()),
        (
            "node_addresses",
            json!({"type": "array", "items": {"type": "string"}}),
        ),
        (
            "master_addresses",
            json!({"type": "array", "items": {"type": "string"}}),
        ),
        ("fixed_network", nullable("string")),
        ("fixed_subnet", nullable("string")),
        ("floating_ip_enabled", boolean()),
        ("master_lb_enabled", boolean()),
        ("labels_overridden", string_map()),
        ("labels_added", string_map()),
        ("labels_skipped", string_map()),
        ("created_at", timestamp()),
        ("updated_at", nullable_timestamp()),
        (
            "faults",
            with_description(
                string_map(),
                "Only on GET of a cluster in a failed status: each failed nodegroup's reason.",
            ),
        ),
    ]);
    let mut required = summary_required();
    required.extend(
        properties
            .iter()
            .map(|(name, _)| *name)
            .skip(cluster_summary_properties().len())
            .filter(|name| *name != "faults"),
    );
    one_stack_key(object(&required, properties))
}

fn nodegroup_summary() -> Value {
    closed(vec![
        ("uuid", uuid()),
        ("name", string()),
        ("flavor_id", nullable("string")),
        ("image_id", nullable("string")),
        ("node_count", integer()),
        ("role", string()),
        ("is_default", boolean()),
        ("status", statuses()),
        ("stack_id", nullable("string")),
        ("min_node_count", integer()),
        ("max_node_count", nullable("integer")),
        ("merge_labels", json!({"const": false})),
    ])
}

fn nodegroup_detail() -> Value {
    closed(vec![
        ("id", integer()),
        ("uuid", uuid()),
        ("name", string()),
        ("cluster_id", uuid()),
        ("project_id", string()),
        ("docker_volume_size", nullable("integer")),
        ("labels", string_map()),
        ("labels_added", string_map()),
        ("labels_overridden", string_map()),
        ("labels_skipped", string_map()),
        ("links", links()),
        ("flavor_id", nullable("string")),
        ("image_id", nullable("string")),
        (
            "node_addresses",
            with_description(
                json!({"type": ["array", "null"], "items": {"type": "string"}}),
                "null in the answer to a create, as upstream.",
            ),
        ),
        ("node_count", integer()),
        ("role", string()),
        ("min_node_count", integer()),
        ("max_node_count", nullable("integer")),
        ("is_default", boolean()),
        ("stack_id", nullable("string")),
        ("status", statuses()),
        ("status_reason", nullable("string")),
        ("version", nullable("string")),
        ("merge_labels", json!({"const": false})),
        (
            "node_labels",
            json!({"type": ["object", "null"], "additionalProperties": {"type": "string"}}),
        ),
        (
            "node_taints",
            json!({"type": ["array", "null"], "items": taint()}),
        ),
        ("created_at", timestamp()),
        ("updated_at", nullable_timestamp()),
    ])
}

fn cluster_template() -> Value {
    closed(vec![
        ("uuid", uuid()),
        ("name", nullable("string")),
        ("coe", string()),
        ("image_id", string()),
        ("flavor_id", nullable("string")),
        ("master_flavor_id", nullable("string")),
        ("dns_nameserver", nullable("string")),
        ("keypair_id", nullable("string")),
        ("external_network_id", nullable("string")),
        ("fixed_network", nullable("string")),
        ("fixed_subnet", nullable("string")),
        ("network_driver", nullable("string")),
        ("apiserver_port", nullable("integer")),
        ("docker_volume_size", nullable("integer")),
        ("cluster_distro", nullable("string")),
        ("links", links()),
        ("http_proxy", nullable("string")),
        ("https_proxy", nullable("string")),
        ("no_proxy", nullable("string")),
        ("volume_driver", nullable("string")),
        ("registry_enabled", boolean()),
        ("labels", string_map()),
        ("tls_disabled", boolean()),
        ("public", boolean()),
        ("server_type", json!({"enum": ["vm", "bm"]})),
        ("insecure_registry", nullable("string")),
        ("docker_storage_driver", nullable("string")),
        ("master_lb_enabled", boolean()),
        ("floating_ip_enabled", boolean()),
        ("project_id", string()),
        ("user_id", string()),
        ("hidden", boolean()),
        ("tags", nullable("string")),
        ("driver", nullable("string")),
        ("created_at", nullable_timestamp()),
        ("updated_at", nullable_timestamp()),
    ])
}

fn collection(key: &str, item: &str, paginated: bool) -> Value {
    let mut properties = vec![(key, json!({"type": "array", "items": schema_ref(item)}))];
    if paginated {
        properties.push((
            "next",
            with_description(
                string(),
                "The next page, present only when this one is full.",
            ),
        ));
    }
    object(&[key], properties)
}

/// A cluster event (`crate::events::event_document`).
fn event() -> Value {
    let cluster = closed(vec![
        ("uuid", uuid()),
        ("name", nullable("string")),
        ("status", statuses()),
        ("health_status", health_statuses()),
        ("node_count", integer()),
        ("master_count", integer()),
    ]);
    closed(vec![
        ("uuid", uuid()),
        ("sequence", integer()),
        ("created_at", timestamp()),
        ("type", json!({"enum": ["Normal", "Warning"]})),
        ("reason", string()),
        ("message", string()),
        ("nodegroup", nullable("string")),
        ("node", nullable("string")),
        (
            "operation_uuid",
            json!({"type": ["string", "null"], "format": "uuid"}),
        ),
        ("request_id", nullable("string")),
        ("cluster_uuid", uuid()),
        ("project_id", string()),
        (
            "cluster",
            with_description(cluster, "The cluster as the event left it."),
        ),
    ])
}

fn quota() -> Value {
    closed(vec![
        ("id", integer()),
        ("project_id", string()),
        ("resource", string()),
        ("hard_limit", integer()),
        ("created_at", timestamp()),
        ("updated_at", nullable_timestamp()),
    ])
}

fn error_envelope() -> Value {
    let entry =
        closed(vec![
        ("request_id", json!({"const": ""})),
        (
            "code",
            with_description(
                json!({"enum": ["client", "server", ""]}),
                "client for a 4xx a controller raised, server for a 5xx, empty for routing errors.",
            ),
        ),
        ("status", json!({"type": "integer", "minimum": 400, "maximum": 599})),
        (
            "title",
            with_description(string(), "The detail cut at its first period."),
        ),
        ("detail", string()),
        ("links", json!({"type": "array", "maxItems": 0})),
    ]);
    with_description(
        closed(vec![(
            "errors",
            json!({"type": "array", "items": entry, "minItems": 1, "maxItems": 1}),
        )]),
        "Magnum's error envelope: always one error. Routing errors (unknown path, method, \
         unacceptable version header) have an empty code, and a title and detail only when \
         the request's Accept named application/json.",
    )
}

fn microversion_error() -> Value {
    let help = closed(vec![("rel", json!({"const": "help"})), ("href", string())]);
    let entry = object(
        &["max_version", "min_version", "code", "links", "title"],
        vec![
            ("max_version", string()),
            ("min_version", string()),
            ("code", json!({"const": "magnum.microversion-unsupported"})),
            ("links", json!({"type": "array", "items": help})),
            ("title", string()),
            (
                "description",
                with_description(string(), "Only when Accept names application/json."),
            ),
        ],
    );
    with_description(
        closed(vec![(
            "errors",
            json!({"type": "array", "items": entry, "minItems": 1, "maxItems": 1}),
        )]),
        "A well-formed OpenStack-API-Version outside the supported range.",
    )
}

fn keystone_error() -> Value {
    with_description(
        closed(vec![(
            "error",
            closed(vec![
                ("code", integer()),
                ("title", string()),
                ("message", string()),
            ]),
        )]),
        "keystonemiddleware's answer to a missing or invalid token (not Magnum's envelope).",
    )
}

fn json_patch() -> Value {
    let path = json!({"type": "string", "pattern": "^(/[A-Za-z0-9_-]+)+$"});
    let remove = object(
        &["op", "path"],
        vec![
            ("op", json!({"const": "remove"})),
            ("path", path.clone()),
            (
                "value",
                json!({"type": ["string", "integer", "boolean", "null"]}),
            ),
        ],
    );
    let set = object(
        &["op", "path", "value"],
        vec![
            ("op", json!({"enum": ["add", "replace"]})),
            ("path", path),
            (
                "value",
                with_description(
                    json!({
                        "type": ["string", "integer", "boolean"],
                        "minimum": i64::MIN,
                        "maximum": i64::MAX,
                    }),
                    "Dictionaries (labels, health_status_reason, node_labels, node_taints) \
                     are replaced by a string holding a Python or JSON literal.",
                ),
            ),
        ],
    );
    with_description(
        json!({"type": "array", "items": {"oneOf": [remove, set]}}),
        "A JSON patch (RFC 6902) limited to add, replace and remove. Which paths a resource \
         lets change is in the operation's description; others are 400.",
    )
}

fn root_document() -> Value {
    let version = closed(vec![
        ("id", json!({"const": "v1"})),
        ("links", links()),
        ("status", string()),
        ("max_version", string()),
        ("min_version", string()),
    ]);
    closed(vec![
        ("name", string()),
        ("description", string()),
        ("versions", json!({"type": "array", "items": version})),
    ])
}

fn v1_document() -> Value {
    let media_type = closed(vec![("base", string()), ("type", string())]);
    let mut properties = vec![
        ("id", json!({"const": "v1"})),
        ("media_types", json!({"type": "array", "items": media_type})),
        ("links", links()),
    ];
    for name in [
        "clustertemplates",
        "clusters",
        "quotas",
        "certificates",
        "mservices",
        "stats",
        "federations",
        "nodegroups",
        "credentials",
    ] {
        properties.push((name, links()));
    }
    closed(properties)
}

/// Every schema under `components/schemas`.
pub(crate) fn components() -> Map<String, Value> {
    let schemas = vec![
        (
            "Link",
            object(
                &["href", "rel"],
                vec![("href", string()), ("rel", string()), ("type", string())],
            ),
        ),
        ("ClusterTemplate", cluster_template()),
        (
            "ClusterTemplateCollection",
            collection("clustertemplates", "ClusterTemplate", true),
        ),
        (
            "Cluster",
            one_stack_key(object(&summary_required(), cluster_summary_properties())),
        ),
        ("ClusterDetail", cluster_detail()),
        ("ClusterCollection", collection("clusters", "Cluster", true)),
        (
            "ClusterDetailCollection",
            collection("clusters", "ClusterDetail", true),
        ),
        ("Uuid", closed(vec![("uuid", uuid())])),
        ("Nodegroup", nodegroup_summary()),
        ("NodegroupDetail", nodegroup_detail()),
        (
            "NodegroupCollection",
            collection("nodegroups", "Nodegroup", true),
        ),
        (
            "Certificate",
            closed(vec![
                ("cluster_uuid", uuid()),
                ("pem", string()),
                ("links", links()),
            ]),
        ),
        (
            "SignedCertificate",
            object(
                &["cluster_uuid", "csr", "pem", "links"],
                vec![
                    ("cluster_uuid", uuid()),
                    ("csr", string()),
                    ("pem", string()),
                    ("links", links()),
                    ("ca_cert_type", string()),
                ],
            ),
        ),
        ("Quota", quota()),
        (
            "DefaultQuota",
            with_description(
                closed(vec![
                    ("project_id", string()),
                    ("resource", json!({"const": "Cluster"})),
                    ("hard_limit", integer()),
                ]),
                "A project without a quota row: the configured default.",
            ),
        ),
        ("QuotaCollection", collection("quotas", "Quota", true)),
        (
            "Stats",
            closed(vec![
                ("clusters", json!({"type": "integer", "minimum": 0})),
                ("nodes", json!({"type": "integer", "minimum": 0})),
            ]),
        ),
        (
            "MagnumService",
            closed(vec![
                ("host", string()),
                ("binary", string()),
                ("state", json!({"enum": ["up", "down"]})),
                ("id", integer()),
                ("report_count", integer()),
                ("disabled", boolean()),
                ("disabled_reason", nullable("string")),
                ("created_at", nullable_timestamp()),
                ("updated_at", nullable_timestamp()),
            ]),
        ),
        (
            "MagnumServiceCollection",
            collection("mservices", "MagnumService", false),
        ),
        ("Event", event()),
        ("EventCollection", collection("events", "Event", true)),
        ("Error", error_envelope()),
        ("MicroversionError", microversion_error()),
        ("KeystoneError", keystone_error()),
        ("JsonPatch", json_patch()),
        ("RootDocument", root_document()),
        ("V1Document", v1_document()),
        (
            "OpenApiDocument",
            json!({
                "type": "object",
                "required": ["openapi", "info", "paths"],
                "properties": {"openapi": {"const": "3.1.0"}},
            }),
        ),
    ];
    schemas
        .into_iter()
        .map(|(name, schema)| (name.to_owned(), schema))
        .collect()
}
