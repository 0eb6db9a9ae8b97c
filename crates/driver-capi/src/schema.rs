//! A validator of Kubernetes structural OpenAPI v3 schemas (the `openAPIV3Schema` of a
//! CustomResourceDefinition version, and the `schema.openAPIV3Schema` of a ClusterClass
//! variable), behaving like kube-apiserver with `fieldValidation=Strict`.
//!
//! It serves two purposes:
//! - tests validate every object the driver renders against the real CRDs in `crds/`
//!   ([`CrdSchemas`]);
//! - at run time the driver validates ClusterClass variable values of a Cluster against the
//!   class's own variable schemas before applying, as CAPI's webhook does ([`ClassVariables`]).
//!
//! Schemas and values come from outside, so nothing here panics, recursion is bounded
//! ([`MAX_SCHEMA_DEPTH`], [`MAX_VALUE_DEPTH`]) and so is the number of violations collected
//! ([`MAX_VIOLATIONS`]).
//!
//! # What is validated
//! `type` (an integral JSON number such as `1.0` is *not* an integer, as for kube's decoder),
//! `nullable`, `properties`, `required`, `additionalProperties` (bool or schema), unknown fields
//! (refused unless `x-kubernetes-preserve-unknown-fields: true`, under which undeclared fields
//! are kept unchecked while declared ones are still checked), `items`, `enum`, `format`
//! (`int32`, `int64`, `date-time`, `uuid`, `ipv4`, `byte`, `uri` loosely; other formats are
//! ignored), `minimum`/`maximum` with `exclusiveMinimum`/`exclusiveMaximum`, `multipleOf`,
//! `minLength`/`maxLength` (in characters, as kube counts runes), `minItems`/`maxItems`,
//! `minProperties`/`maxProperties`, `uniqueItems`, `x-kubernetes-int-or-string`,
//! `x-kubernetes-embedded-resource` (`apiVersion`, `kind` required, `metadata` checked as
//! ObjectMeta), `x-kubernetes-list-type` (`set`: items unique; `map`: the
//! `x-kubernetes-list-map-keys` unique and present in every item), `allOf`/`anyOf`/`oneOf`/`not`
//! (value validations only, as structural schemas allow), and for whole objects
//! ([`CrdSchemas`]) `apiVersion`, `kind` and the object's `metadata` (known ObjectMeta fields,
//! `name`/`namespace` as DNS names, label keys and values, annotation keys).
//!
//! # What is knowingly not
//! - `x-kubernetes-validations` (CEL) are not evaluated: [`Schema::cel_rules`] lists them, and
//!   every [`Report`] lists the ones that applied to the value in [`Report::unevaluated`].
//! - `pattern` is not evaluated (no regular-expression engine in the tree): listed the same way
//!   by [`Schema::patterns`] and [`Report::unevaluated`].
//! - `default` is not applied (kube defaults before validating; objects the driver renders
//!   must therefore carry every required field themselves), `x-kubernetes-map-type` has no
//!   validation effect (as in kube), other formats (`hostname`, `email`, `ipv6`, `cidr`, …) are
//!   not checked, and the schema itself is only checked for the keywords it may hold, not for
//!   every rule of structural schemas.
//!
//! # Messages
//! [`Violation::message`] is the line kube-apiserver would print, e.g.
//! `spec.topology.version: Required value`,
//! `spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"`,
//! `unknown field "spec.foo"`, `spec.x: Unsupported value: "x": supported values: "a", "b"`,
//! `spec.l[1]: Duplicate value: map[string]interface {}{"name":"a"}`,
//! `spec.s: Too long: may not be more than 63 bytes` (kube's wording says bytes; the length is
//! counted in characters as kube does), `spec.l: Too many: 2001: must have at most 2000 items`.
//! Values printed inside messages are cut after [`MAX_PRINTED_VALUE`] characters.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fmt::Write as _;
use std::sync::OnceLock;

use serde_json::{Map, Number, Value};

/// Deepest nesting of schema nodes accepted by [`Schema::from_json`].
pub const MAX_SCHEMA_DEPTH: usize = 64;
/// Deepest nesting of objects and arrays accepted in a validated value.
pub const MAX_VALUE_DEPTH: usize = 64;
/// Most violations collected by one validation; past it validation stops.
pub const MAX_VIOLATIONS: usize = 100;
/// Most unevaluated checks (CEL rules, patterns) listed by one validation; all are counted.
pub const MAX_UNEVALUATED: usize = 256;
/// Longest rendering of a value inside a message, in characters.
pub const MAX_PRINTED_VALUE: usize = 256;

/// A schema that could not be used: where in the schema, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    /// Where in the schema document, e.g. `properties.spec.properties.replicas.minimum`.
    pub path: String,
    pub message: String,
}

/// What kind of rule a value broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViolationKind {
    /// A required property is missing (`Required value`).
    Required,
    /// The value has the wrong JSON type, or is null where the schema is not nullable.
    WrongType,
    /// A property the schema does not declare (`unknown field "…"`).
    UnknownField,
    /// Not one of `enum`, or an `apiVersion`/`kind`/variable name that is not supported.
    NotSupported,
    /// A repeated item of a `set` list, a repeated key of a `map` list, or `uniqueItems`.
    Duplicate,
    /// Longer than `maxLength`.
    TooLong,
    /// Shorter than `minLength`.
    TooShort,
    /// More than `maxItems` or `maxProperties`.
    TooMany,
    /// Fewer than `minItems` or `minProperties`.
    TooFew,
    /// Outside `minimum`/`maximum`, or not a `multipleOf`.
    OutOfRange,
    /// Not of its `format` (`int32`, `int64`, `date-time`, …), or not a valid object name,
    /// label or annotation key.
    Format,
    /// An `allOf`/`anyOf`/`oneOf`/`not` that does not hold.
    Composition,
    /// Objects and arrays nested deeper than [`MAX_VALUE_DEPTH`].
    TooDeep,
}

/// One rule broken by a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where in the value, in kube's field path form: `spec.topology.variables[0].value.x`.
    pub path: String,
    pub kind: ViolationKind,
    /// The whole line as kube-apiserver prints it, path included.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

/// A check that applied to the value but that this validator does not evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unevaluated {
    /// Where in the value the check applied.
    pub path: String,
    pub check: UnevaluatedCheck,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnevaluatedCheck {
    /// An `x-kubernetes-validations` rule.
    Cel { rule: String },
    /// A `pattern`.
    Pattern { pattern: String },
}

/// The outcome of one validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// In document order, at most [`MAX_VIOLATIONS`].
    pub violations: Vec<Violation>,
    /// Validation stopped at [`MAX_VIOLATIONS`]: there may be more.
    pub truncated: bool,
    /// The first [`MAX_UNEVALUATED`] checks that applied but were not evaluated.
    pub unevaluated: Vec<Unevaluated>,
    /// How many checks applied but were not evaluated.
    pub unevaluated_total: usize,
}

impl Report {
    /// No violation was found (unevaluated checks aside).
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }
}

/// An `x-kubernetes-validations` rule found in a schema, never evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelRule {
    /// Where in the schema, e.g. `properties.spec.x-kubernetes-validations[0]`.
    pub schema_path: String,
    pub rule: String,
    pub message: Option<String>,
}

/// A `pattern` found in a schema, never evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternRule {
    pub schema_path: String,
    pub pattern: String,
}

/// A parsed structural schema.
#[derive(Debug)]
pub struct Schema {
    root: Node,
    cel_rules: Vec<CelRule>,
    patterns: Vec<PatternRule>,
}

impl Schema {
    /// Parses an `openAPIV3Schema` (a JSONSchemaProps as JSON). Unknown keywords and the
    /// keywords structural schemas forbid (`$ref`, `patternProperties`, …) are refused.
    pub fn from_json(value: &Value) -> Result<Schema, SchemaError> {
        Schema::parse_at(value, "")
    }

    fn parse_at(value: &Value, base_path: &str) -> Result<Schema, SchemaError> {
        let mut parser = Parser {
            path: base_path.to_owned(),
            cel_rules: Vec::new(),
            patterns: Vec::new(),
        };
        let root = parser.node(value, 0)?;
        Ok(Schema {
            root,
            cel_rules: parser.cel_rules,
            patterns: parser.patterns,
        })
    }

    /// Every CEL rule of the schema (none is evaluated).
    pub fn cel_rules(&self) -> &[CelRule] {
        &self.cel_rules
    }

    /// Every `pattern` of the schema (none is evaluated).
    pub fn patterns(&self) -> &[PatternRule] {
        &self.patterns
    }

    /// The violations of `value`, paths relative to the value's root.
    pub fn validate(&self, value: &Value) -> Vec<Violation> {
        self.check_at(value, "").violations
    }

    /// Validates `value` found at `path` in a larger document (e.g.
    /// `spec.topology.variables[0].value`): paths and messages start from there.
    pub fn check_at(&self, value: &Value, path: &str) -> Report {
        let mut walk = Walk::new(path, MAX_VIOLATIONS);
        walk.check(&self.root, value, 0, Mode::Structural);
        walk.finish()
    }
}

/// The schemas of one CRD's served versions, to validate whole objects of its kind.
#[derive(Debug)]
pub struct CrdSchemas {
    group: String,
    kind: String,
    versions: Vec<(String, Schema)>,
}

impl CrdSchemas {
    /// Reads a CustomResourceDefinition (`apiextensions.k8s.io/v1`) document. Versions that are
    /// not served are left out.
    pub fn from_crd(crd: &Value) -> Result<CrdSchemas, SchemaError> {
        let error = |path: &str, message: &str| SchemaError {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        if crd.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            return Err(error("kind", "not a CustomResourceDefinition"));
        }
        let spec = crd.get("spec").ok_or_else(|| error("spec", "missing"))?;
        let group = spec
            .get("group")
            .and_then(Value::as_str)
            .ok_or_else(|| error("spec.group", "missing or not a string"))?;
        let kind = spec
            .pointer("/names/kind")
            .and_then(Value::as_str)
            .ok_or_else(|| error("spec.names.kind", "missing or not a string"))?;
        let listed = spec
            .get("versions")
            .and_then(Value::as_array)
            .ok_or_else(|| error("spec.versions", "missing or not a list"))?;
        let mut versions = Vec::new();
        for (index, version) in listed.iter().enumerate() {
            let path = format!("spec.versions[{index}]");
            let name = version
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| error(&format!("{path}.name"), "missing or not a string"))?;
            if version.get("served").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let schema_path = format!("{path}.schema.openAPIV3Schema");
            let schema = version
                .pointer("/schema/openAPIV3Schema")
                .ok_or_else(|| error(&schema_path, "missing"))?;
            versions.push((name.to_owned(), Schema::parse_at(schema, &schema_path)?));
        }
        if versions.is_empty() {
            return Err(error("spec.versions", "no served version"));
        }
        Ok(CrdSchemas {
            group: group.to_owned(),
            kind: kind.to_owned(),
            versions,
        })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The served versions, in the CRD's order.
    pub fn versions(&self) -> impl Iterator<Item = &str> {
        self.versions.iter().map(|(name, _)| name.as_str())
    }

    /// The schema of a served version.
    pub fn schema(&self, version: &str) -> Option<&Schema> {
        self.versions
            .iter()
            .find(|(name, _)| name == version)
            .map(|(_, schema)| schema)
    }

    /// The violations of a whole object; see [`CrdSchemas::check_object`].
    pub fn validate_object(&self, object: &Value) -> Vec<Violation> {
        self.check_object(object).violations
    }

    /// Validates a whole object: its `apiVersion` picks the version (it must be this CRD's
    /// group and a served version), its `kind` must be the CRD's, its `metadata` is checked as
    /// kube checks ObjectMeta, and the rest against the version's schema.
    pub fn check_object(&self, object: &Value) -> Report {
        let mut walk = Walk::new("", MAX_VIOLATIONS);
        let Some(fields) = object.as_object() else {
            walk.wrong_type("object", object);
            return walk.finish();
        };
        let supported_versions: Vec<String> = self
            .versions()
            .map(|version| format!("{}/{version}", self.group))
            .collect();
        let schema = match fields.get("apiVersion") {
            None => {
                walk.at_key("apiVersion", |walk| walk.required(""));
                None
            }
            Some(api_version) => {
                let found = api_version
                    .as_str()
                    .and_then(|text| text.split_once('/'))
                    .filter(|(group, _)| *group == self.group)
                    .and_then(|(_, version)| self.schema(version));
                if found.is_none() {
                    walk.at_key("apiVersion", |walk| {
                        walk.not_supported(api_version, &supported_versions)
                    });
                }
                found
            }
        };
        match fields.get("kind") {
            None => walk.at_key("kind", |walk| walk.required("")),
            Some(kind) if kind.as_str() == Some(self.kind.as_str()) => {}
            Some(kind) => walk.at_key("kind", |walk| {
                walk.not_supported(kind, std::slice::from_ref(&self.kind))
            }),
        }
        let Some(schema) = schema else {
            return walk.finish();
        };
        walk.root_metadata = true;
        walk.check(&schema.root, object, 0, Mode::Structural);
        match fields.get("metadata") {
            None => walk.at_key("metadata", |walk| {
                walk.at_key("name", |walk| {
                    walk.required("name or generateName is required")
                })
            }),
            Some(Value::Object(metadata)) => {
                walk.at_key("metadata", |walk| walk.object_names(metadata, true))
            }
            // The schema walk reported the wrong type.
            Some(_) => {}
        }
        walk.finish()
    }
}

/// The variables a ClusterClass declares (`spec.variables[]`), to validate the variable values
/// of a Cluster using the class, as CAPI's webhook does.
#[derive(Debug)]
pub struct ClassVariables {
    variables: Vec<ClassVariable>,
}

#[derive(Debug)]
struct ClassVariable {
    name: String,
    required: bool,
    schema: Schema,
}

impl ClassVariables {
    /// Reads `spec.variables[]` of a ClusterClass object (v1beta1 and v1beta2 have the same
    /// shape there: `name`, `required`, `schema.openAPIV3Schema`). No variables is fine.
    pub fn from_cluster_class(cluster_class: &Value) -> Result<ClassVariables, SchemaError> {
        let error = |path: String, message: &str| SchemaError {
            path,
            message: message.to_owned(),
        };
        let mut variables = Vec::new();
        let Some(listed) = cluster_class.pointer("/spec/variables") else {
            return Ok(ClassVariables { variables });
        };
        let listed = listed
            .as_array()
            .ok_or_else(|| error("spec.variables".to_owned(), "not a list"))?;
        for (index, variable) in listed.iter().enumerate() {
            let path = format!("spec.variables[{index}]");
            let name = variable
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| error(format!("{path}.name"), "missing or not a string"))?;
            if variables
                .iter()
                .any(|known: &ClassVariable| known.name == name)
            {
                return Err(error(format!("{path}.name"), "declared twice"));
            }
            let required = match variable.get("required") {
                None => false,
                Some(required) => required
                    .as_bool()
                    .ok_or_else(|| error(format!("{path}.required"), "not a boolean"))?,
            };
            let schema_path = format!("{path}.schema.openAPIV3Schema");
            let schema = variable
                .pointer("/schema/openAPIV3Schema")
                .ok_or_else(|| error(schema_path.clone(), "missing"))?;
            variables.push(ClassVariable {
                name: name.to_owned(),
                required,
                schema: Schema::parse_at(schema, &schema_path)?,
            });
        }
        Ok(ClassVariables { variables })
    }

    /// The declared variable names, in the class's order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|variable| variable.name.as_str())
    }

    /// The schema of a declared variable.
    pub fn schema(&self, name: &str) -> Option<&Schema> {
        self.variables
            .iter()
            .find(|variable| variable.name == name)
            .map(|variable| &variable.schema)
    }

    /// Validates the variables of a Cluster (v1beta2 layout): `spec.topology.variables` and the
    /// overrides of `spec.topology.controlPlane`, of each `workers.machineDeployments[]` and of
    /// each `workers.machinePools[]`. Each value must be declared by the class and valid against
    /// its schema; a required variable must be set in `spec.topology.variables` unless its
    /// schema has a top-level `default` (which CAPI would apply; this validator does not).
    pub fn check_cluster(&self, cluster: &Value) -> Report {
        let mut walk = Walk::new("", MAX_VIOLATIONS);
        let topology = cluster.pointer("/spec/topology");
        let cluster_variables = topology.and_then(|topology| topology.get("variables"));
        self.check_list(
            &mut walk,
            "spec.topology.variables",
            cluster_variables,
            true,
        );
        self.check_list(
            &mut walk,
            "spec.topology.controlPlane.variables.overrides",
            topology.and_then(|topology| topology.pointer("/controlPlane/variables/overrides")),
            false,
        );
        for pool_kind in ["machineDeployments", "machinePools"] {
            let pools = topology
                .and_then(|topology| topology.pointer(&format!("/workers/{pool_kind}")))
                .and_then(Value::as_array);
            for (index, pool) in pools.into_iter().flatten().enumerate() {
                let path =
                    format!("spec.topology.workers.{pool_kind}[{index}].variables.overrides");
                self.check_list(
                    &mut walk,
                    &path,
                    pool.pointer("/variables/overrides"),
                    false,
                );
            }
        }
        walk.finish()
    }

    fn check_list(&self, walk: &mut Walk, path: &str, list: Option<&Value>, check_required: bool) {
        walk.path.clear();
        walk.path.push_str(path);
        let items = match list {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(items)) => items.as_slice(),
            Some(other) => {
                walk.wrong_type("array", other);
                return;
            }
        };
        let supported: Vec<String> = self.names().map(str::to_owned).collect();
        let mut seen = HashSet::new();
        for (index, item) in items.iter().enumerate() {
            walk.at_index(index, |walk| {
                let Some(fields) = item.as_object() else {
                    walk.wrong_type("object", item);
                    return;
                };
                let name = fields.get("name");
                let Some(variable) = name
                    .and_then(Value::as_str)
                    .and_then(|name| self.variables.iter().find(|known| known.name == name))
                else {
                    match name {
                        None => walk.at_key("name", |walk| walk.required("")),
                        Some(name) => {
                            walk.at_key("name", |walk| walk.not_supported(name, &supported))
                        }
                    }
                    return;
                };
                if !seen.insert(variable.name.as_str()) {
                    walk.at_key("name", |walk| {
                        walk.duplicate(&Value::String(variable.name.clone()))
                    });
                }
                match fields.get("value") {
                    None => walk.at_key("value", |walk| walk.required("")),
                    Some(value) => walk.at_key("value", |walk| {
                        walk.check(&variable.schema.root, value, 0, Mode::Structural)
                    }),
                }
            });
        }
        if check_required {
            for variable in &self.variables {
                if variable.required
                    && !variable.schema.root.has_default
                    && !seen.contains(variable.name.as_str())
                {
                    walk.required(&format!(
                        "required variable {} must be set",
                        go_quote(&variable.name)
                    ));
                }
            }
        }
    }

    /// The violations of a Cluster's variables; see [`ClassVariables::check_cluster`].
    pub fn validate_cluster(&self, cluster: &Value) -> Vec<Violation> {
        self.check_cluster(cluster).violations
    }
}

// ---------------------------------------------------------------------------------------------
// Parsed schema nodes.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemaType {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl SchemaType {
    fn name(self) -> &'static str {
        match self {
            SchemaType::Object => "object",
            SchemaType::Array => "array",
            SchemaType::String => "string",
            SchemaType::Integer => "integer",
            SchemaType::Number => "number",
            SchemaType::Boolean => "boolean",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Int32,
    Int64,
    DateTime,
    Uri,
    Uuid,
    Ipv4,
    Byte,
}

impl Format {
    fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "int32" => Format::Int32,
            "int64" => Format::Int64,
            "date-time" => Format::DateTime,
            "uri" => Format::Uri,
            "uuid" => Format::Uuid,
            "ipv4" => Format::Ipv4,
            "byte" => Format::Byte,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Format::Int32 => "int32",
            Format::Int64 => "int64",
            Format::DateTime => "date-time",
            Format::Uri => "uri",
            Format::Uuid => "uuid",
            Format::Ipv4 => "ipv4",
            Format::Byte => "byte",
        }
    }
}

#[derive(Debug)]
enum Additional {
    /// `additionalProperties` absent: undeclared properties are unknown fields.
    Unspecified,
    /// `additionalProperties: true`: any undeclared property, unchecked.
    Allowed,
    /// `additionalProperties: false`.
    Forbidden,
    /// `additionalProperties: {schema}`: a map whose values follow the schema.
    Schema(Box<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

#[derive(Debug)]
struct Node {
    schema_type: Option<SchemaType>,
    int_or_string: bool,
    nullable: bool,
    format: Option<Format>,
    enumeration: Option<Vec<Value>>,
    maximum: Option<Number>,
    exclusive_maximum: bool,
    minimum: Option<Number>,
    exclusive_minimum: bool,
    multiple_of: Option<Number>,
    max_length: Option<u64>,
    min_length: Option<u64>,
    pattern: Option<String>,
    max_items: Option<u64>,
    min_items: Option<u64>,
    unique_items: bool,
    max_properties: Option<u64>,
    min_properties: Option<u64>,
    required: Vec<String>,
    properties: BTreeMap<String, Node>,
    additional: Additional,
    items: Option<Box<Node>>,
    all_of: Vec<Node>,
    any_of: Vec<Node>,
    one_of: Vec<Node>,
    not: Option<Box<Node>>,
    preserve_unknown: bool,
    embedded_resource: bool,
    list_type: Option<ListType>,
    cel_rules: Vec<String>,
    has_default: bool,
}

/// The schema of a node that has none (array items without `items`): scalars pass, objects
/// have no known field.
static EMPTY_NODE: Node = EMPTY_NODE_FIELDS;

/// The fields of ObjectMeta a client may send, checked for objects and embedded resources.
fn object_meta_node() -> Option<&'static Node> {
    static OBJECT_META: OnceLock<Option<Node>> = OnceLock::new();
    OBJECT_META
        .get_or_init(|| {
            let string = serde_json::json!({"type": "string"});
            let string_map = serde_json::json!({"type": "object", "additionalProperties": string});
            let timestamp = serde_json::json!({"type": "string", "format": "date-time", "nullable": true});
            let definition = serde_json::json!({
                "type": "object",
                "properties": {
                    "name": string, "generateName": string, "namespace": string,
                    "selfLink": string, "uid": string, "resourceVersion": string,
                    "generation": {"type": "integer", "format": "int64"},
                    "creationTimestamp": timestamp, "deletionTimestamp": timestamp,
                    "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
                    "labels": string_map, "annotations": string_map,
                    "finalizers": {"type": "array", "items": string, "x-kubernetes-list-type": "set"},
                    "ownerReferences": {"type": "array", "items": {
                        "type": "object",
                        "required": ["apiVersion", "kind", "name", "uid"],
                        "properties": {
                            "apiVersion": string, "kind": string, "name": string, "uid": string,
                            "controller": {"type": "boolean"},
                            "blockOwnerDeletion": {"type": "boolean"},
                        },
                    }, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uid"]},
                    "managedFields": {"type": "array", "items": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    }},
                },
            });
            Schema::from_json(&definition)
                .ok()
                .map(|schema| schema.root)
        })
        .as_ref()
}

struct Parser {
    path: String,
    cel_rules: Vec<CelRule>,
    patterns: Vec<PatternRule>,
}

impl Parser {
    fn error(&self, keyword: &str, message: impl Into<String>) -> SchemaError {
        let mut path = self.path.clone();
        if !keyword.is_empty() {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(keyword);
        }
        if path.is_empty() {
            path.push_str("<root>");
        }
        SchemaError {
            path,
            message: message.into(),
        }
    }

    /// Runs `parse` with `segment` appended to the schema path.
    fn nested<T>(
        &mut self,
        segment: &str,
        parse: impl FnOnce(&mut Parser) -> Result<T, SchemaError>,
    ) -> Result<T, SchemaError> {
        let mark = self.path.len();
        if !self.path.is_empty() && !segment.starts_with('[') {
            self.path.push('.');
        }
        self.path.push_str(segment);
        let result = parse(self);
        self.path.truncate(mark);
        result
    }

    fn node(&mut self, value: &Value, depth: usize) -> Result<Node, SchemaError> {
        if depth >= MAX_SCHEMA_DEPTH {
            return Err(self.error(
                "",
                format!("schema nested deeper than {MAX_SCHEMA_DEPTH} levels"),
            ));
        }
        let Some(fields) = value.as_object() else {
            return Err(self.error("", "a schema must be an object"));
        };
        let mut node = EMPTY_NODE_FIELDS;
        let mut list_map_keys: Option<Vec<String>> = None;
        for (keyword, argument) in fields {
            match keyword.as_str() {
                "description" | "title" | "example" | "externalDocs" | "id" | "$schema"
                | "x-metadata" => {}
                "default" => node.has_default = true,
                "type" => {
                    node.schema_type = match self.string(keyword, argument)? {
                        "" => None,
                        "object" => Some(SchemaType::Object),
                        "array" => Some(SchemaType::Array),
                        "string" => Some(SchemaType::String),
                        "integer" => Some(SchemaType::Integer),
                        "number" => Some(SchemaType::Number),
                        "boolean" => Some(SchemaType::Boolean),
                        other => return Err(self.error(keyword, format!("unknown type {other:?}"))),
                    }
                }
                "format" => node.format = Format::parse(self.string(keyword, argument)?),
                "nullable" => node.nullable = self.boolean(keyword, argument)?,
                "enum" => {
                    let Some(values) = argument.as_array() else {
                        return Err(self.error(keyword, "must be a list"));
                    };
                    if values
                        .iter()
                        .any(|value| deeper_than(value, MAX_VALUE_DEPTH))
                    {
                        return Err(self.error(keyword, "value nested too deep"));
                    }
                    node.enumeration = Some(values.clone());
                }
                "maximum" => node.maximum = Some(self.number(keyword, argument)?),
                "minimum" => node.minimum = Some(self.number(keyword, argument)?),
                "multipleOf" => {
                    let number = self.number(keyword, argument)?;
                    if number.as_f64().is_none_or(|factor| factor <= 0.0) {
                        return Err(self.error(keyword, "must be greater than zero"));
                    }
                    node.multiple_of = Some(number);
                }
                "exclusiveMaximum" => node.exclusive_maximum = self.boolean(keyword, argument)?,
                "exclusiveMinimum" => node.exclusive_minimum = self.boolean(keyword, argument)?,
                "maxLength" => node.max_length = Some(self.count(keyword, argument)?),
                "minLength" => node.min_length = Some(self.count(keyword, argument)?),
                "maxItems" => node.max_items = Some(self.count(keyword, argument)?),
                "minItems" => node.min_items = Some(self.count(keyword, argument)?),
                "maxProperties" => node.max_properties = Some(self.count(keyword, argument)?),
                "minProperties" => node.min_properties = Some(self.count(keyword, argument)?),
                "uniqueItems" => node.unique_items = self.boolean(keyword, argument)?,
                "pattern" => {
                    let pattern = self.string(keyword, argument)?.to_owned();
                    let schema_path = self.error(keyword, "").path;
                    self.patterns.push(PatternRule {
                        schema_path,
                        pattern: pattern.clone(),
                    });
                    node.pattern = Some(pattern);
                }
                "required" => node.required = self.strings(keyword, argument)?,
                "properties" => {
                    let Some(properties) = argument.as_object() else {
                        return Err(self.error(keyword, "must be an object"));
                    };
                    for (name, property) in properties {
                        let child = self.nested(&format!("properties.{name}"), |parser| {
                            parser.node(property, depth + 1)
                        })?;
                        node.properties.insert(name.clone(), child);
                    }
                }
                "additionalProperties" => {
                    node.additional = match argument {
                        Value::Bool(true) => Additional::Allowed,
                        Value::Bool(false) => Additional::Forbidden,
                        Value::Object(_) => Additional::Schema(Box::new(
                            self.nested(keyword, |parser| parser.node(argument, depth + 1))?,
                        )),
                        _ => return Err(self.error(keyword, "must be a boolean or a schema")),
                    }
                }
                "items" => {
                    if argument.is_array() {
                        return Err(self.error(
                            keyword,
                            "a list of schemas is not allowed in a structural schema",
                        ));
                    }
                    node.items =
                        Some(Box::new(self.nested(keyword, |parser| {
                            parser.node(argument, depth + 1)
                        })?));
                }
                "allOf" | "anyOf" | "oneOf" => {
                    let Some(branches) = argument.as_array() else {
                        return Err(self.error(keyword, "must be a list of schemas"));
                    };
                    let mut parsed = Vec::with_capacity(branches.len());
                    for (index, branch) in branches.iter().enumerate() {
                        parsed.push(self.nested(&format!("{keyword}[{index}]"), |parser| {
                            parser.node(branch, depth + 1)
                        })?);
                    }
                    match keyword.as_str() {
                        "allOf" => node.all_of = parsed,
                        "anyOf" => node.any_of = parsed,
                        _ => node.one_of = parsed,
                    }
                }
                "not" => {
                    node.not =
                        Some(Box::new(self.nested(keyword, |parser| {
                            parser.node(argument, depth + 1)
                        })?));
                }
                "x-kubernetes-preserve-unknown-fields" => {
                    node.preserve_unknown = self.boolean(keyword, argument)?
                }
                "x-kubernetes-embedded-resource" => {
                    node.embedded_resource = self.boolean(keyword, argument)?
                }
                "x-kubernetes-int-or-string" => {
                    node.int_or_string = self.boolean(keyword, argument)?
                }
                "x-kubernetes-map-type" => match self.string(keyword, argument)? {
                    "atomic" | "granular" => {}
                    other => return Err(self.error(keyword, format!("unknown map type {other:?}"))),
                },
                "x-kubernetes-list-type" => {
                    node.list_type = Some(match self.string(keyword, argument)? {
                        "atomic" => ListType::Atomic,
                        "set" => ListType::Set,
                        "map" => ListType::Map(Vec::new()),
                        other => {
                            return Err(self.error(keyword, format!("unknown list type {other:?}")))
                        }
                    })
                }
                "x-kubernetes-list-map-keys" => {
                    list_map_keys = Some(self.strings(keyword, argument)?)
                }
                "x-kubernetes-validations" => {
                    let Some(rules) = argument.as_array() else {
                        return Err(self.error(keyword, "must be a list"));
                    };
                    for (index, rule) in rules.iter().enumerate() {
                        let segment = format!("{keyword}[{index}]");
                        let Some(text) = rule.get("rule").and_then(Value::as_str) else {
                            return Err(self.error(&segment, "has no rule"));
                        };
                        node.cel_rules.push(text.to_owned());
                        self.cel_rules.push(CelRule {
                            schema_path: self.error(&segment, "").path,
                            rule: text.to_owned(),
                            message: rule
                                .get("message")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                        });
                    }
                }
                "$ref" | "patternProperties" | "dependencies" | "additionalItems"
                | "definitions" => {
                    return Err(self.error(keyword, "not allowed in a structural schema"))
                }
                other => return Err(self.error(other, "unknown keyword")),
            }
        }
        match (&mut node.list_type, list_map_keys) {
            (Some(ListType::Map(keys)), Some(listed)) if !listed.is_empty() => *keys = listed,
            (Some(ListType::Map(_)), _) => {
                return Err(self.error(
                    "x-kubernetes-list-map-keys",
                    "must not be empty if x-kubernetes-list-type is map",
                ))
            }
            (_, Some(listed)) if !listed.is_empty() => {
                return Err(self.error(
                    "x-kubernetes-list-map-keys",
                    "must be empty if x-kubernetes-list-type is not map",
                ))
            }
            _ => {}
        }
        Ok(node)
    }

    fn string<'v>(&self, keyword: &str, argument: &'v Value) -> Result<&'v str, SchemaError> {
        argument
            .as_str()
            .ok_or_else(|| self.error(keyword, "must be a string"))
    }

    fn boolean(&self, keyword: &str, argument: &Value) -> Result<bool, SchemaError> {
        argument
            .as_bool()
            .ok_or_else(|| self.error(keyword, "must be a boolean"))
    }

    fn number(&self, keyword: &str, argument: &Value) -> Result<Number, SchemaError> {
        match argument {
            Value::Number(number) => Ok(number.clone()),
            _ => Err(self.error(keyword, "must be a number")),
        }
    }

    fn count(&self, keyword: &str, argument: &Value) -> Result<u64, SchemaError> {
        argument
            .as_u64()
            .ok_or_else(|| self.error(keyword, "must be a non-negative integer"))
    }

    fn strings(&self, keyword: &str, argument: &Value) -> Result<Vec<String>, SchemaError> {
        let error = || self.error(keyword, "must be a list of strings");
        argument
            .as_array()
            .ok_or_else(error)?
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(error))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The schema of the value itself: undeclared fields are unknown, list types apply.
    Structural,
    /// A branch of `allOf`/`anyOf`/`oneOf`/`not`: value validations only.
    ValueOnly,
}

struct Walk {
    path: String,
    violations: Vec<Violation>,
    limit: usize,
    truncated: bool,
    unevaluated: Vec<Unevaluated>,
    unevaluated_total: usize,
    /// At depth 0, `metadata` is checked as ObjectMeta instead of by the schema.
    root_metadata: bool,
}

impl Walk {
    fn new(path: &str, limit: usize) -> Walk {
        Walk {
            path: path.to_owned(),
            violations: Vec::new(),
            limit,
            truncated: false,
            unevaluated: Vec::new(),
            unevaluated_total: 0,
            root_metadata: false,
        }
    }

    fn finish(self) -> Report {
        Report {
            violations: self.violations,
            truncated: self.truncated,
            unevaluated: self.unevaluated,
            unevaluated_total: self.unevaluated_total,
        }
    }

    fn full(&mut self) -> bool {
        if self.violations.len() >= self.limit {
            self.truncated = true;
            return true;
        }
        false
    }

    fn display_path(&self) -> &str {
        if self.path.is_empty() {
            "<root>"
        } else {
            &self.path
        }
    }

    fn at_key(&mut self, key: &str, action: impl FnOnce(&mut Walk)) {
        let mark = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(key);
        action(self);
        self.path.truncate(mark);
    }

    fn at_index(&mut self, index: usize, action: impl FnOnce(&mut Walk)) {
        let mark = self.path.len();
        let _ = write!(self.path, "[{index}]");
        action(self);
        self.path.truncate(mark);
    }

    fn push(&mut self, kind: ViolationKind, message: String) {
        if self.violations.len() >= self.limit {
            self.truncated = true;
            return;
        }
        self.violations.push(Violation {
            path: self.path.clone(),
            kind,
            message,
        });
    }

    /// `path: <body>` where the body is kube's `<Type>: <value>: <detail>`.
    fn push_body(&mut self, kind: ViolationKind, body: &str) {
        let message = format!("{}: {body}", self.display_path());
        self.push(kind, message);
    }

    fn unevaluated(&mut self, check: UnevaluatedCheck) {
        self.unevaluated_total += 1;
        if self.unevaluated.len() < MAX_UNEVALUATED {
            self.unevaluated.push(Unevaluated {
                path: self.path.clone(),
                check,
            });
        }
    }

    fn required(&mut self, detail: &str) {
        let body = if detail.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {detail}")
        };
        self.push_body(ViolationKind::Required, &body);
    }

    fn wrong_type(&mut self, expected: &str, value: &Value) {
        let actual = json_type(value);
        let path = self.display_path().to_owned();
        let body = format!(
            "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
        );
        self.push_body(ViolationKind::WrongType, &body);
    }

    fn not_supported(&mut self, value: &Value, supported: &[String]) {
        let mut body = format!("Unsupported value: {}", print_value(value));
        if !supported.is_empty() {
            let quoted: Vec<String> = supported.iter().map(|text| go_quote(text)).collect();
            let _ = write!(body, ": supported values: {}", quoted.join(", "));
        }
        self.push_body(ViolationKind::NotSupported, &body);
    }

    fn duplicate(&mut self, value: &Value) {
        let body = format!("Duplicate value: {}", print_value(value));
        self.push_body(ViolationKind::Duplicate, &body);
    }

    /// kube's `Invalid value: <value>: <path> in body <detail>`.
    fn invalid_in_body(&mut self, kind: ViolationKind, printed_value: &str, detail: &str) {
        let path = self.display_path().to_owned();
        let body = format!("Invalid value: {printed_value}: {path} in body {detail}");
        self.push_body(kind, &body);
    }

    fn too_deep(&mut self, value: &Value) {
        let body = format!(
            "Invalid value: \"{}\": must not be nested deeper than {MAX_VALUE_DEPTH} levels",
            json_type(value)
        );
        self.push_body(ViolationKind::TooDeep, &body);
    }

    /// For a subtree accepted without a schema: refuse it only if it nests too deep.
    fn depth_only(&mut self, value: &Value, depth: usize) {
        if deeper_than(value, MAX_VALUE_DEPTH.saturating_sub(depth)) {
            self.too_deep(value);
        }
    }

    fn check(&mut self, node: &Node, value: &Value, depth: usize, mode: Mode) {
        if self.full() {
            return;
        }
        if matches!(value, Value::Object(_) | Value::Array(_)) && depth >= MAX_VALUE_DEPTH {
            self.too_deep(value);
            return;
        }
        if value.is_null() {
            if !node.nullable && (node.schema_type.is_some() || node.int_or_string) {
                let expected = expected_type(node);
                self.wrong_type(&expected, value);
            }
            return;
        }
        if !type_matches(node, value) {
            let expected = expected_type(node);
            self.wrong_type(&expected, value);
            return;
        }
        if let Some(allowed) = &node.enumeration {
            if !allowed.iter().any(|candidate| candidate == value) {
                let supported: Vec<String> = allowed
                    .iter()
                    .map(|candidate| match candidate {
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                self.not_supported(value, &supported);
            }
        }
        match value {
            Value::String(text) => self.check_string(node, text),
            Value::Number(number) => self.check_number(node, number),
            Value::Array(items) => self.check_array(node, items, depth, mode),
            Value::Object(fields) => self.check_object(node, fields, depth, mode),
            Value::Bool(_) | Value::Null => {}
        }
        self.check_compositions(node, value, depth);
        for rule in &node.cel_rules {
            self.unevaluated(UnevaluatedCheck::Cel { rule: rule.clone() });
        }
    }

    fn check_string(&mut self, node: &Node, text: &str) {
        let printed = go_quote_cut(text);
        if node.max_length.is_some() || node.min_length.is_some() {
            let length = text.chars().count() as u64;
            if let Some(max_length) = node.max_length.filter(|max| length > *max) {
                let body = format!("Too long: may not be more than {max_length} bytes");
                self.push_body(ViolationKind::TooLong, &body);
            }
            if let Some(min_length) = node.min_length.filter(|min| length < *min) {
                self.invalid_in_body(
                    ViolationKind::TooShort,
                    &printed,
                    &format!("should be at least {min_length} chars long"),
                );
            }
        }
        if let Some(pattern) = &node.pattern {
            self.unevaluated(UnevaluatedCheck::Pattern {
                pattern: pattern.clone(),
            });
        }
        if let Some(format) = node.format {
            let valid = match format {
                Format::DateTime => is_date_time(text),
                Format::Uri => is_uri(text),
                Format::Uuid => is_uuid(text),
                Format::Ipv4 => is_ipv4(text),
                Format::Byte => is_base64(text),
                Format::Int32 | Format::Int64 => true,
            };
            if !valid {
                self.invalid_in_body(
                    ViolationKind::Format,
                    &printed,
                    &format!("must be of type {}: {printed}", format.name()),
                );
            }
        }
    }

    fn check_number(&mut self, node: &Node, number: &Number) {
        let printed = go_number(number);
        let in_range = match node.format {
            Some(Format::Int32) if number.is_i64() || number.is_u64() => number
                .as_i64()
                .is_some_and(|integer| i32::try_from(integer).is_ok()),
            Some(Format::Int64) if number.is_i64() || number.is_u64() => number.as_i64().is_some(),
            _ => true,
        };
        if !in_range {
            let format = node.format.map_or("", Format::name);
            self.invalid_in_body(
                ViolationKind::Format,
                &printed,
                &format!("must be of type {format}: \"{printed}\""),
            );
        }
        if let Some(maximum) = &node.maximum {
            let order = compare_numbers(number, maximum);
            let (broken, wording) = if node.exclusive_maximum {
                (order.is_none_or(|order| order.is_ge()), "less than")
            } else {
                (
                    order.is_none_or(|order| order.is_gt()),
                    "less than or equal to",
                )
            };
            if broken {
                let detail = format!("should be {wording} {}", go_bound(maximum));
                self.invalid_in_body(ViolationKind::OutOfRange, &printed, &detail);
            }
        }
        if let Some(minimum) = &node.minimum {
            let order = compare_numbers(number, minimum);
            let (broken, wording) = if node.exclusive_minimum {
                (order.is_none_or(|order| order.is_le()), "greater than")
            } else {
                (
                    order.is_none_or(|order| order.is_lt()),
                    "greater than or equal to",
                )
            };
            if broken {
                let detail = format!("should be {wording} {}", go_bound(minimum));
                self.invalid_in_body(ViolationKind::OutOfRange, &printed, &detail);
            }
        }
        if let Some(factor) = &node.multiple_of {
            if !is_multiple_of(number, factor) {
                let detail = format!("should be a multiple of {}", go_bound(factor));
                self.invalid_in_body(ViolationKind::OutOfRange, &printed, &detail);
            }
        }
    }

    fn check_array(&mut self, node: &Node, items: &[Value], depth: usize, mode: Mode) {
        let count = items.len() as u64;
        if let Some(max_items) = node.max_items.filter(|max| count > *max) {
            let body = format!("Too many: {count}: must have at most {max_items} items");
            self.push_body(ViolationKind::TooMany, &body);
        }
        if let Some(min_items) = node.min_items.filter(|min| count < *min) {
            let detail = format!("should have at least {min_items} items");
            self.invalid_in_body(ViolationKind::TooFew, &count.to_string(), &detail);
        }
        match (&node.items, mode) {
            (Some(item_node), _) => {
                for (index, item) in items.iter().enumerate() {
                    if self.full() {
                        return;
                    }
                    self.at_index(index, |walk| walk.check(item_node, item, depth + 1, mode));
                }
            }
            (None, Mode::Structural) if node.preserve_unknown => {
                for (index, item) in items.iter().enumerate() {
                    self.at_index(index, |walk| walk.depth_only(item, depth + 1));
                }
            }
            (None, Mode::Structural) => {
                for (index, item) in items.iter().enumerate() {
                    if self.full() {
                        return;
                    }
                    self.at_index(index, |walk| walk.check(&EMPTY_NODE, item, depth + 1, mode));
                }
            }
            (None, Mode::ValueOnly) => {}
        }
        if node.unique_items && has_duplicate(items) {
            {
                let printed = print_items(items);
                self.invalid_in_body(
                    ViolationKind::Duplicate,
                    &printed,
                    "shouldn't contain duplicates",
                );
            }
        }
        if mode == Mode::Structural {
            match &node.list_type {
                Some(ListType::Set) => {
                    let mut seen = HashSet::new();
                    for (index, item) in items.iter().enumerate() {
                        if !seen.insert(canonical_key(item)) {
                            self.at_index(index, |walk| walk.duplicate(item));
                        }
                    }
                }
                Some(ListType::Map(keys)) => self.check_list_map(node, keys, items),
                Some(ListType::Atomic) | None => {}
            }
        }
    }

    fn check_list_map(&mut self, node: &Node, keys: &[String], items: &[Value]) {
        let required_by_items = node
            .items
            .as_deref()
            .map(|item_node| item_node.required.as_slice())
            .unwrap_or_default();
        let mut seen = HashSet::new();
        for (index, item) in items.iter().enumerate() {
            let Some(fields) = item.as_object() else {
                continue;
            };
            let mut key_values = Map::new();
            let mut complete = true;
            for key in keys {
                match fields.get(key) {
                    Some(key_value) => {
                        key_values.insert(key.clone(), key_value.clone());
                    }
                    None => {
                        complete = false;
                        // The item schema reports it already when it requires the key.
                        if !required_by_items.contains(key) {
                            self.at_index(index, |walk| walk.at_key(key, |walk| walk.required("")));
                        }
                    }
                }
            }
            if !complete {
                continue;
            }
            let key_values = Value::Object(key_values);
            if !seen.insert(canonical_key(&key_values)) {
                self.at_index(index, |walk| walk.duplicate(&key_values));
            }
        }
    }

    fn check_object(&mut self, node: &Node, fields: &Map<String, Value>, depth: usize, mode: Mode) {
        let count = fields.len() as u64;
        if let Some(max_properties) = node.max_properties.filter(|max| count > *max) {
            let body = format!("Too many: {count}: must have at most {max_properties} items");
            self.push_body(ViolationKind::TooMany, &body);
        }
        if let Some(min_properties) = node.min_properties.filter(|min| count < *min) {
            let detail = format!("should have at least {min_properties} properties");
            self.invalid_in_body(ViolationKind::TooFew, &count.to_string(), &detail);
        }
        for name in &node.required {
            if !fields.contains_key(name) {
                self.at_key(name, |walk| walk.required(""));
            }
        }
        let embedded = node.embedded_resource && mode == Mode::Structural;
        if embedded {
            for name in ["apiVersion", "kind"] {
                if !node.properties.contains_key(name) && !fields.contains_key(name) {
                    self.at_key(name, |walk| walk.required("must not be empty"));
                }
            }
        }
        for (key, child) in fields {
            if self.full() {
                return;
            }
            self.at_key(key, |walk| {
                let object_meta = (key == "metadata"
                    && ((depth == 0 && walk.root_metadata)
                        || (embedded && !node.properties.contains_key(key))))
                .then(object_meta_node)
                .flatten();
                if let Some(object_meta) = object_meta.filter(|_| mode == Mode::Structural) {
                    walk.check(object_meta, child, depth + 1, mode);
                    // An object's own metadata is checked by `CrdSchemas::check_object`, which
                    // also requires its name.
                    let own_metadata = depth == 0 && walk.root_metadata;
                    if let Some(metadata) = child.as_object().filter(|_| !own_metadata) {
                        walk.object_names(metadata, false);
                    }
                } else if let Some(property) = node.properties.get(key) {
                    walk.check(property, child, depth + 1, mode);
                } else if embedded && (key == "apiVersion" || key == "kind") {
                    walk.check(&STRING_NODE, child, depth + 1, mode);
                } else {
                    match (&node.additional, mode) {
                        (Additional::Schema(value_node), _) => {
                            walk.check(value_node, child, depth + 1, mode)
                        }
                        (_, Mode::ValueOnly) => {}
                        (Additional::Allowed, Mode::Structural) => {
                            walk.depth_only(child, depth + 1)
                        }
                        (_, Mode::Structural) if node.preserve_unknown => {
                            walk.depth_only(child, depth + 1)
                        }
                        (Additional::Unspecified | Additional::Forbidden, Mode::Structural) => {
                            let message = format!("unknown field {}", go_quote(&walk.path));
                            walk.push(ViolationKind::UnknownField, message);
                        }
                    }
                }
            });
        }
    }

    fn check_compositions(&mut self, node: &Node, value: &Value, depth: usize) {
        for branch in &node.all_of {
            if self.full() {
                return;
            }
            let remaining = self.limit.saturating_sub(self.violations.len());
            let report = self.branch(branch, value, depth, remaining);
            self.truncated |= report.truncated;
            self.violations.extend(report.violations);
        }
        let printed = || print_value(value);
        if !node.any_of.is_empty()
            && !node
                .any_of
                .iter()
                .any(|branch| self.branch(branch, value, depth, 1).is_valid())
        {
            let printed = printed();
            self.invalid_in_body(
                ViolationKind::Composition,
                &printed,
                "must validate at least one schema (anyOf)",
            );
        }
        if !node.one_of.is_empty() {
            let mut passing = 0;
            for branch in &node.one_of {
                if self.branch(branch, value, depth, 1).is_valid() {
                    passing += 1;
                }
            }
            if passing != 1 {
                let printed = printed();
                self.invalid_in_body(
                    ViolationKind::Composition,
                    &printed,
                    "must validate one and only one schema (oneOf)",
                );
            }
        }
        if let Some(negated) = &node.not {
            if self.branch(negated, value, depth, 1).is_valid() {
                let printed = printed();
                self.invalid_in_body(
                    ViolationKind::Composition,
                    &printed,
                    "must not validate the schema (not)",
                );
            }
        }
    }

    /// Validates a composition branch on its own, keeping its unevaluated checks.
    fn branch(&mut self, node: &Node, value: &Value, depth: usize, limit: usize) -> Report {
        let mut walk = Walk::new(&self.path, limit.max(1));
        walk.check(node, value, depth, Mode::ValueOnly);
        let listed = walk.unevaluated.len();
        for unevaluated in walk.unevaluated.drain(..) {
            self.unevaluated(unevaluated.check);
        }
        self.unevaluated_total += walk.unevaluated_total.saturating_sub(listed);
        walk.finish()
    }

    /// The checks kube makes on an object's own name, namespace, labels and annotations.
    fn object_names(&mut self, metadata: &Map<String, Value>, require_name: bool) {
        let name = metadata.get("name").and_then(Value::as_str);
        let generate_name = metadata.get("generateName").and_then(Value::as_str);
        match name {
            Some(name) => self.at_key("name", |walk| walk.dns_subdomain(name)),
            None if require_name && generate_name.is_none() => self.at_key("name", |walk| {
                walk.required("name or generateName is required")
            }),
            None => {}
        }
        if let Some(namespace) = metadata.get("namespace").and_then(Value::as_str) {
            self.at_key("namespace", |walk| walk.dns_label(namespace));
        }
        if let Some(labels) = metadata.get("labels").and_then(Value::as_object) {
            self.at_key("labels", |walk| {
                for (key, value) in labels {
                    walk.qualified_name(key);
                    if let Some(value) = value.as_str() {
                        walk.label_value(value);
                    }
                }
            });
        }
        if let Some(annotations) = metadata.get("annotations").and_then(Value::as_object) {
            self.at_key("annotations", |walk| {
                let mut total_size = 0;
                for (key, value) in annotations {
                    walk.qualified_name(key);
                    total_size += key.len() + value.as_str().map_or(0, str::len);
                }
                if total_size > MAX_ANNOTATIONS_SIZE {
                    let body =
                        format!("Too long: may not be more than {MAX_ANNOTATIONS_SIZE} bytes");
                    walk.push_body(ViolationKind::TooLong, &body);
                }
            });
        }
    }

    fn name_violation(&mut self, value: &str, detail: &str) {
        let body = format!("Invalid value: {}: {detail}", go_quote_cut(value));
        self.push_body(ViolationKind::Format, &body);
    }

    fn dns_subdomain(&mut self, name: &str) {
        if name.len() > 253 {
            self.name_violation(name, "must be no more than 253 characters");
        }
        if !is_dns_subdomain(name) {
            self.name_violation(name, DNS_SUBDOMAIN_MESSAGE);
        }
    }

    fn dns_label(&mut self, name: &str) {
        if name.len() > 63 {
            self.name_violation(name, "must be no more than 63 characters");
        }
        if !is_dns_label(name) {
            self.name_violation(name, DNS_LABEL_MESSAGE);
        }
    }

    fn qualified_name(&mut self, key: &str) {
        let (prefix, name) = match key.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, key),
        };
        if let Some(prefix) = prefix {
            if prefix.is_empty() {
                self.name_violation(key, "prefix part must be non-empty");
            } else if prefix.len() > 253 || !is_dns_subdomain(prefix) {
                self.name_violation(key, &format!("prefix part {DNS_SUBDOMAIN_MESSAGE}"));
            }
        }
        if name.is_empty() {
            self.name_violation(key, "name part must be non-empty");
        } else if name.len() > 63 {
            self.name_violation(key, "name part must be no more than 63 characters");
        } else if !is_qualified_name_part(name) {
            self.name_violation(key, QUALIFIED_NAME_MESSAGE);
        }
    }

    fn label_value(&mut self, value: &str) {
        if value.len() > 63 {
            self.name_violation(value, "must be no more than 63 characters");
        }
        if !value.is_empty() && !is_qualified_name_part(value) {
            self.name_violation(value, LABEL_VALUE_MESSAGE);
        }
    }
}

static STRING_NODE: Node = {
    let mut node = EMPTY_NODE_FIELDS;
    node.schema_type = Some(SchemaType::String);
    node
};

/// A node without any keyword, to start parsing from and for struct-update syntax.
const EMPTY_NODE_FIELDS: Node = Node {
    schema_type: None,
    int_or_string: false,
    nullable: false,
    format: None,
    enumeration: None,
    maximum: None,
    exclusive_maximum: false,
    minimum: None,
    exclusive_minimum: false,
    multiple_of: None,
    max_length: None,
    min_length: None,
    pattern: None,
    max_items: None,
    min_items: None,
    unique_items: false,
    max_properties: None,
    min_properties: None,
    required: Vec::new(),
    properties: BTreeMap::new(),
    additional: Additional::Unspecified,
    items: None,
    all_of: Vec::new(),
    any_of: Vec::new(),
    one_of: Vec::new(),
    not: None,
    preserve_unknown: false,
    embedded_resource: false,
    list_type: None,
    cel_rules: Vec::new(),
    has_default: false,
};

/// kube's limit on the total size of an object's annotations, keys and values.
const MAX_ANNOTATIONS_SIZE: usize = 256 * 1024;

const DNS_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

// ---------------------------------------------------------------------------------------------
// Helpers: types, numbers, formats, names, printing.

fn is_integer(number: &Number) -> bool {
    number.is_i64() || number.is_u64()
}

fn type_matches(node: &Node, value: &Value) -> bool {
    if node.int_or_string {
        return match value {
            Value::String(_) => true,
            Value::Number(number) => is_integer(number),
            _ => false,
        };
    }
    match (node.schema_type, value) {
        (None, _) => true,
        (Some(SchemaType::Object), Value::Object(_))
        | (Some(SchemaType::Array), Value::Array(_))
        | (Some(SchemaType::String), Value::String(_))
        | (Some(SchemaType::Boolean), Value::Bool(_))
        | (Some(SchemaType::Number), Value::Number(_)) => true,
        (Some(SchemaType::Integer), Value::Number(number)) => is_integer(number),
        _ => false,
    }
}

fn expected_type(node: &Node) -> String {
    if node.int_or_string {
        return "integer,string".to_owned();
    }
    node.schema_type.map_or("", SchemaType::name).to_owned()
}

/// The JSON type of a value as kube names it in messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if is_integer(number) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether objects and arrays nest more than `limit` levels, without recursion.
fn deeper_than(value: &Value, limit: usize) -> bool {
    let mut pending = vec![(value, 0usize)];
    while let Some((value, depth)) = pending.pop() {
        match value {
            Value::Array(_) | Value::Object(_) if depth >= limit => return true,
            Value::Array(items) => pending.extend(items.iter().map(|child| (child, depth + 1))),
            Value::Object(fields) => {
                pending.extend(fields.values().map(|child| (child, depth + 1)))
            }
            _ => {}
        }
    }
    false
}

fn compare_numbers(left: &Number, right: &Number) -> Option<std::cmp::Ordering> {
    if let (Some(left), Some(right)) = (left.as_i64(), right.as_i64()) {
        return Some(left.cmp(&right));
    }
    if let (Some(left), Some(right)) = (left.as_u64(), right.as_u64()) {
        return Some(left.cmp(&right));
    }
    left.as_f64()?.partial_cmp(&right.as_f64()?)
}

fn is_multiple_of(number: &Number, factor: &Number) -> bool {
    if let (Some(value), Some(factor)) = (number.as_i64(), factor.as_i64()) {
        return factor != 0 && value % factor == 0;
    }
    match (number.as_f64(), factor.as_f64()) {
        (Some(value), Some(factor)) if factor > 0.0 => {
            let quotient = value / factor;
            quotient.is_finite() && (quotient - quotient.round()).abs() < 1e-9
        }
        _ => false,
    }
}

/// An equality key for JSON values: the same key exactly when the values are equal (numbers
/// keep their integer or float nature, as Go's decoded values do; keys are sorted).
fn canonical_key(value: &Value) -> String {
    fn write(value: &Value, out: &mut String, depth: usize) {
        if depth > MAX_VALUE_DEPTH {
            out.push('~');
            return;
        }
        match value {
            Value::Null => out.push('n'),
            Value::Bool(true) => out.push('t'),
            Value::Bool(false) => out.push('f'),
            Value::Number(number) if is_integer(number) => {
                let _ = write!(out, "i{number};");
            }
            Value::Number(number) => {
                let _ = write!(out, "d{};", number.as_f64().unwrap_or_default());
            }
            Value::String(text) => {
                let _ = write!(out, "s{}:{text}", text.len());
            }
            Value::Array(items) => {
                out.push('[');
                for item in items {
                    write(item, out, depth + 1);
                }
                out.push(']');
            }
            Value::Object(fields) => {
                let mut sorted: Vec<_> = fields.iter().collect();
                sorted.sort_by(|left, right| left.0.cmp(right.0));
                out.push('{');
                for (key, child) in sorted {
                    let _ = write!(out, "{}:{key}", key.len());
                    write(child, out, depth + 1);
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    write(value, &mut out, 0);
    out
}

fn has_duplicate(items: &[Value]) -> bool {
    let mut seen = HashSet::new();
    !items.iter().all(|item| seen.insert(canonical_key(item)))
}

fn digits(text: &str, count: usize) -> Option<u32> {
    if text.len() != count || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// RFC 3339 date-times, plus the shorter forms kube's date-time format also accepts (a bare
/// date, a local time without zone, minutes without seconds).
fn is_date_time(text: &str) -> bool {
    let (date, time) = match text.split_once(['T', 't']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut date_parts = date.splitn(3, '-');
    let (Some(year), Some(month), Some(day)) = (
        date_parts.next().and_then(|part| digits(part, 4)),
        date_parts.next().and_then(|part| digits(part, 2)),
        date_parts.next().and_then(|part| digits(part, 2)),
    ) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days_in_month {
        return false;
    }
    let Some(time) = time else {
        return true;
    };
    let (clock, zone) = match time.find(['Z', 'z', '+', '-']) {
        Some(at) => time.split_at(at),
        None => (time, ""),
    };
    let (clock, fraction) = match clock.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (clock, None),
    };
    if fraction.is_some_and(|fraction| {
        fraction.is_empty() || !fraction.bytes().all(|byte| byte.is_ascii_digit())
    }) {
        return false;
    }
    let mut clock_parts = clock.split(':');
    let hour = clock_parts.next().and_then(|part| digits(part, 2));
    let minute = clock_parts.next().and_then(|part| digits(part, 2));
    let second = match clock_parts.next() {
        Some(part) => digits(part, 2),
        None if fraction.is_none() => Some(0),
        None => None,
    };
    if clock_parts.next().is_some() {
        return false;
    }
    let (Some(hour), Some(minute), Some(second)) = (hour, minute, second) else {
        return false;
    };
    if hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    match zone {
        "" | "Z" | "z" => true,
        offset => {
            let offset = &offset[1..];
            let (hours, minutes) = match offset.split_once(':') {
                Some(split) => split,
                None if offset.len() == 4 => offset.split_at(2),
                None => return false,
            };
            matches!((digits(hours, 2), digits(minutes, 2)), (Some(hours), Some(minutes)) if hours <= 23 && minutes <= 59)
        }
    }
}

/// Loosely: an absolute URI (`scheme:…`) or an absolute path, without spaces or controls.
fn is_uri(text: &str) -> bool {
    if text.is_empty()
        || text
            .chars()
            .any(|character| character.is_whitespace() || character.is_control())
    {
        return false;
    }
    if text.starts_with('/') {
        return true;
    }
    let Some((scheme, _)) = text.split_once(':') else {
        return false;
    };
    let mut characters = scheme.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && characters
            .all(|character| character.is_ascii_alphanumeric() || "+-.".contains(character))
}

/// 32 hexadecimal digits in groups of 8-4-4-4-12, the dashes optional (kube's `uuid`).
fn is_uuid(text: &str) -> bool {
    let mut rest = text;
    for (index, length) in [8usize, 4, 4, 4, 12].into_iter().enumerate() {
        if index > 0 {
            rest = rest.strip_prefix('-').unwrap_or(rest);
        }
        let Some(group) = rest.get(..length) else {
            return false;
        };
        if !group.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return false;
        }
        rest = &rest[length..];
    }
    rest.is_empty()
}

fn is_ipv4(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|part| {
            !part.is_empty()
                && part.len() <= 3
                && part.bytes().all(|byte| byte.is_ascii_digit())
                && part.parse::<u16>().is_ok_and(|octet| octet <= 255)
        })
}

/// Standard base64 with padding (kube's `byte`).
fn is_base64(text: &str) -> bool {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return false;
    }
    let padding = bytes.iter().rev().take_while(|byte| **byte == b'=').count();
    padding <= 2
        && bytes[..bytes.len() - padding]
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'+' || *byte == b'/')
}

fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-')
        && bytes
            .first()
            .is_some_and(|byte| byte.is_ascii_alphanumeric())
        && bytes
            .last()
            .is_some_and(|byte| byte.is_ascii_alphanumeric())
}

fn is_dns_subdomain(text: &str) -> bool {
    text.split('.').all(is_dns_label)
}

fn is_qualified_name_part(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(byte))
        && bytes
            .first()
            .is_some_and(|byte| byte.is_ascii_alphanumeric())
        && bytes
            .last()
            .is_some_and(|byte| byte.is_ascii_alphanumeric())
}

/// A string quoted as Go's `%q` does.
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            character if (character as u32) < 0x20 || character as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", character as u32);
            }
            character if character.is_control() => {
                let _ = write!(out, "\\u{:04x}", character as u32);
            }
            character => out.push(character),
        }
    }
    out.push('"');
    out
}

/// [`go_quote`] of at most [`MAX_PRINTED_VALUE`] characters of the text.
fn go_quote_cut(text: &str) -> String {
    match text.char_indices().nth(MAX_PRINTED_VALUE) {
        Some((end, _)) => format!("{}...", go_quote(&text[..end])),
        None => go_quote(text),
    }
}

/// A number printed as Go's `%v` prints a decoded JSON number.
fn go_number(number: &Number) -> String {
    if is_integer(number) {
        return number.to_string();
    }
    go_float(number.as_f64().unwrap_or_default())
}

/// A schema bound (a `*float64` in kube) printed as Go's `%v` does.
fn go_bound(number: &Number) -> String {
    go_float(number.as_f64().unwrap_or_default())
}

/// A float printed as Go's `%v` does: shortest digits, exponent form below 1e-4 and from 1e6.
fn go_float(value: f64) -> String {
    let magnitude = value.abs();
    if value == 0.0 || (1e-4..1e6).contains(&magnitude) {
        return format!("{value}");
    }
    let scientific = format!("{value:e}");
    match scientific.split_once('e') {
        Some((mantissa, exponent)) => {
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(digits) => ('-', digits),
                None => ('+', exponent),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => scientific,
    }
}

/// A value printed as kube prints a bad value: strings quoted, numbers and booleans plain,
/// objects and arrays as Go's `%#v` of decoded JSON, cut after [`MAX_PRINTED_VALUE`].
fn print_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::String(text) => go_quote_cut(text),
        _ => {
            let mut out = String::new();
            write_go_value(value, &mut out, 0);
            cut(out)
        }
    }
}

/// An array printed as [`print_value`] does, without building a [`Value`].
fn print_items(items: &[Value]) -> String {
    let mut out = String::new();
    write_go_items(items, &mut out, 0);
    cut(out)
}

fn cut(text: String) -> String {
    match text.char_indices().nth(MAX_PRINTED_VALUE) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

fn write_go_value(value: &Value, out: &mut String, depth: usize) {
    // Past what will be printed, or deeper than any accepted value: stop.
    if out.len() > MAX_PRINTED_VALUE * 4 {
        return;
    }
    match value {
        Value::Null => out.push_str("interface {}(nil)"),
        Value::Bool(flag) => {
            let _ = write!(out, "{flag}");
        }
        Value::Number(number) => out.push_str(&go_number(number)),
        Value::String(text) => out.push_str(&go_quote_cut(text)),
        Value::Array(_) | Value::Object(_) if depth > MAX_VALUE_DEPTH => out.push_str("..."),
        Value::Array(items) => write_go_items(items, out, depth),
        Value::Object(fields) => {
            let mut sorted: Vec<_> = fields.iter().collect();
            sorted.sort_by(|left, right| left.0.cmp(right.0));
            out.push_str("map[string]interface {}{");
            for (index, (key, child)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                out.push_str(&go_quote_cut(key));
                out.push(':');
                write_go_value(child, out, depth + 1);
            }
            out.push('}');
        }
    }
}

fn write_go_items(items: &[Value], out: &mut String, depth: usize) {
    out.push_str("[]interface {}{");
    for (index, item) in items.iter().enumerate() {
        if out.len() > MAX_PRINTED_VALUE * 4 {
            break;
        }
        if index > 0 {
            out.push_str(", ");
        }
        write_go_value(item, out, depth + 1);
    }
    out.push('}');
}
