//! The object store: every write goes through here, under one lock, so that the global
//! `resourceVersion`, the watch history and what each watcher sees stay in one order.
//!
//! Architecture invariant: writes never wait for readers. A watcher has a bounded queue; one
//! that is full when an event comes is dropped (its stream ends, as kube-apiserver ends a
//! watch that cannot keep up), and the client is expected to re-watch from the last
//! `resourceVersion` it saw.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::body::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::fieldpath::{self, FieldSet};
use super::managed::{self, Operation, Writer};
use super::patch::{json_patch, merge_patch};
use super::resources::{Registry, ResourceType};
use super::selectors::{FieldSelector, LabelSelector};
use super::shape::prune_unknown;
use super::status::ApiError;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_objects: usize,
    pub history: usize,
    pub watch_buffer: usize,
}

/// A resource type as addressed by a request: the type and the version asked for.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: Arc<ResourceType>,
    pub version: String,
}

impl Target {
    pub fn api_version(&self) -> String {
        self.resource.api_version(&self.version)
    }

    fn schema(&self) -> Option<&Value> {
        self.resource
            .served_version(&self.version)
            .map(|version| &version.schema)
    }

    pub fn has_status(&self) -> bool {
        self.resource
            .served_version(&self.version)
            .is_some_and(|version| version.status_subresource)
    }

    /// The object as this version shows it. Versions share one stored form (a CRD
    /// conversion strategy of `None`: only `apiVersion` changes).
    fn present(&self, object: &Value) -> Value {
        let mut presented = object.clone();
        if let Some(fields) = presented.as_object_mut() {
            fields.insert("apiVersion".into(), self.api_version().into());
            fields.insert("kind".into(), self.resource.kind.clone().into());
        }
        presented
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub manager: String,
    pub subresource: Subresource,
    pub field_validation: FieldValidation,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub enum Patch {
    Merge(Value),
    Json(Value),
    Apply { config: Value, force: bool },
}

#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Deleted {
    /// The object is gone; its last state.
    Gone(Value),
    /// Finalizers hold it: it now carries a `deletionTimestamp`.
    Finalizing(Value),
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_after: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Clone)]
struct Event {
    resource_version: u64,
    kind: EventKind,
    resource: String,
    old: Option<Value>,
    object: Value,
}

struct Watcher {
    id: u64,
    filter: WatchFilter,
    sender: mpsc::Sender<Bytes>,
}

#[derive(Debug, Clone)]
pub struct WatchFilter {
    pub target: Target,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, object: &Value) -> bool {
        let in_namespace = self.namespace.as_deref().is_none_or(|namespace| {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                == Some(namespace)
        });
        in_namespace && self.labels.matches(object) && self.fields.matches(object)
    }

    /// What this watcher sees of an event: an object that starts matching is `ADDED`, one
    /// that stops matching `DELETED`, as kube-apiserver's watch cache filters.
    fn line_for(&self, event: &Event) -> Option<Bytes> {
        if event.resource != self.target.resource.qualified_name() {
            return None;
        }
        let now = self.matches(&event.object);
        let kind = match event.kind {
            EventKind::Added => now.then_some("ADDED"),
            EventKind::Deleted => now.then_some("DELETED"),
            EventKind::Modified => {
                let before = event.old.as_ref().is_some_and(|old| self.matches(old));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }?;
        Some(watch_line(kind, &self.target.present(&event.object)))
    }
}

pub fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

pub enum WatchStart {
    Stream {
        id: u64,
        initial: Vec<Bytes>,
        receiver: mpsc::Receiver<Bytes>,
    },
    Expired(ApiError),
}

type Key = (String, String, String);

struct State {
    resource_version: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
    /// Every event after this resourceVersion is still in `history`.
    history_floor: u64,
    watchers: Vec<Watcher>,
    next_watcher: u64,
    expire_next_watch: bool,
}

pub struct Store {
    registry: Arc<Registry>,
    limits: Limits,
    state: Mutex<State>,
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let fields = object.as_object_mut().expect("objects are JSON objects");
    fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    fields["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn meta_text<'v>(object: &'v Value, name: &str) -> Option<&'v str> {
    metadata(object)
        .and_then(|metadata| metadata.get(name))
        .and_then(Value::as_str)
}

fn finalizers(object: &Value) -> Vec<Value> {
    metadata(object)
        .and_then(|metadata| metadata.get("finalizers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A lowercase RFC 1123 subdomain, what most resource names must be.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(|character: char| character.is_ascii_alphanumeric())
                && label.ends_with(|character: char| character.is_ascii_alphanumeric())
                && label.chars().all(|character| {
                    character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
                })
        })
}

/// The object without what the server keeps to itself, for comparisons and merging.
fn without_bookkeeping(object: &Value) -> Value {
    let mut clean = object.clone();
    if let Some(metadata) = clean.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
        metadata.remove("resourceVersion");
    }
    clean
}

/// What `generation` counts: everything but metadata and status.
fn spec_like(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(fields) = rest.as_object_mut() {
        fields.remove("metadata");
        fields.remove("status");
        fields.remove("apiVersion");
        fields.remove("kind");
    }
    rest
}

fn status_root() -> FieldSet {
    let mut set = FieldSet::new();
    set.insert(&[fieldpath::field("status")]);
    set
}

impl Store {
    pub fn new(registry: Arc<Registry>, limits: Limits) -> Self {
        let store = Self {
            registry,
            limits,
            state: Mutex::new(State {
                resource_version: 0,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_floor: 0,
                watchers: Vec::new(),
                next_watcher: 1,
                expire_next_watch: false,
            }),
        };
        let namespaces = store
            .target("", "v1", "namespaces")
            .expect("namespaces are built in");
        for name in ["default", "kube-system", "kube-public"] {
            let options = WriteOptions {
                manager: "kube-apiserver".into(),
                subresource: Subresource::Main,
                field_validation: FieldValidation::Ignore,
                dry_run: false,
            };
            store
                .create(
                    &namespaces,
                    None,
                    json!({"metadata": {"name": name}}),
                    &options,
                )
                .expect("the initial namespaces are valid");
        }
        store
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn target(&self, group: &str, version: &str, plural: &str) -> Option<Target> {
        self.registry
            .find(group, version, plural)
            .map(|resource| Target {
                resource,
                version: version.to_owned(),
            })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every write is built
        // aside and committed in one step), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    fn key(target: &Target, namespace: Option<&str>, name: &str) -> Key {
        (
            target.resource.qualified_name(),
            if target.resource.namespaced {
                namespace.unwrap_or("").to_owned()
            } else {
                String::new()
            },
            name.to_owned(),
        )
    }

    pub fn get(
        &self,
        target: &Target,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let state = self.lock();
        state
            .objects
            .get(&Self::key(target, namespace, name))
            .map(|object| target.present(object))
            .ok_or_else(|| ApiError::not_found(&target.resource, name))
    }

    pub fn list(
        &self,
        target: &Target,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<Value, ApiError> {
        let state = self.lock();
        let resource = target.resource.qualified_name();
        let mut items = Vec::new();
        let mut more = None;
        for ((kind, object_namespace, name), object) in &state.objects {
            if *kind != resource || namespace.is_some_and(|namespace| namespace != object_namespace)
            {
                continue;
            }
            // The token is the last `namespace/name` sent; keys sort by (namespace, name).
            let already_sent = options.continue_after.as_ref().is_some_and(|after| {
                let (after_namespace, after_name) = after.split_once('/').unwrap_or(("", after));
                (object_namespace.as_str(), name.as_str()) <= (after_namespace, after_name)
            });
            if already_sent {
                continue;
            }
            if !options.labels.matches(object) || !options.fields.matches(object) {
                continue;
            }
            if options
                .limit
                .is_some_and(|limit| limit > 0 && items.len() == limit)
            {
                more = items.last().map(|last: &Value| {
                    format!(
                        "{}/{}",
                        meta_text(last, "namespace").unwrap_or(""),
                        meta_text(last, "name").unwrap_or("")
                    )
                });
                break;
            }
            items.push(target.present(object));
        }
        let mut list_metadata = Map::new();
        list_metadata.insert(
            "resourceVersion".into(),
            state.resource_version.to_string().into(),
        );
        if let Some(token) = more {
            list_metadata.insert("continue".into(), token.into());
        }
        Ok(json!({
            "kind": target.resource.list_kind,
            "apiVersion": target.api_version(),
            "metadata": list_metadata,
            "items": items,
        }))
    }

    pub fn create(
        &self,
        target: &Target,
        namespace: Option<&str>,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut state = self.lock();
        let mut candidate = self.checked_body(target, namespace, None, body)?;
        let name = match meta_text(&candidate, "name") {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match meta_text(&candidate, "generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_owned();
                    format!("{prefix}{suffix}")
                }
                _ => {
                    return Err(ApiError::invalid(
                        &target.resource.qualified_kind(),
                        "",
                        &[(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ))
                }
            },
        };
        metadata_mut(&mut candidate).insert("name".into(), name.clone().into());
        let warnings = validate_fields(target, &mut candidate, options.field_validation, false)?;
        let key = Self::key(target, namespace, &name);
        if state.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&target.resource, &name));
        }
        self.check_room(&state, target, namespace)?;
        let object = self.commit(
            &mut state,
            target,
            options,
            &key,
            None,
            candidate,
            WriteKind::Update,
        )?;
        Ok(Written {
            object,
            created: true,
            warnings,
        })
    }

    pub fn replace(
        &self,
        target: &Target,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut state = self.lock();
        let key = Self::key(target, namespace, name);
        let old = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&target.resource, name))?;
        let mut candidate = self.checked_body(target, namespace, Some(name), body)?;
        if let Some(version) = meta_text(&candidate, "resourceVersion") {
            if !version.is_empty() && Some(version) != meta_text(&old, "resourceVersion") {
                return Err(ApiError::stale(&target.resource, name));
            }
        }
        let warnings = validate_fields(target, &mut candidate, options.field_validation, false)?;
        let object = self.commit(
            &mut state,
            target,
            options,
            &key,
            Some(&old),
            candidate,
            WriteKind::Update,
        )?;
        Ok(Written {
            object,
            created: false,
            warnings,
        })
    }

    pub fn patch(
        &self,
        target: &Target,
        namespace: Option<&str>,
        name: &str,
        patch: Patch,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut state = self.lock();
        let key = Self::key(target, namespace, name);
        let old = state.objects.get(&key).cloned();
        match patch {
            Patch::Apply { config, force } => {
                if old.is_none() && options.subresource == Subresource::Status {
                    return Err(ApiError::not_found(&target.resource, name));
                }
                let mut config = self.checked_apply_config(target, namespace, name, config)?;
                if let Some(version) = meta_text(&config, "resourceVersion") {
                    if old
                        .as_ref()
                        .and_then(|old| meta_text(old, "resourceVersion"))
                        != Some(version)
                    {
                        return Err(ApiError::stale(&target.resource, name));
                    }
                }
                let warnings =
                    validate_fields(target, &mut config, options.field_validation, true)?;
                if old.is_none() {
                    self.check_room(&state, target, namespace)?;
                }
                let object = self.commit(
                    &mut state,
                    target,
                    options,
                    &key,
                    old.as_ref(),
                    config,
                    WriteKind::Apply { force },
                )?;
                Ok(Written {
                    object,
                    created: old.is_none(),
                    warnings,
                })
            }
            Patch::Merge(patch) | Patch::Json(patch) if old.is_none() => {
                let _ = patch;
                Err(ApiError::not_found(&target.resource, name))
            }
            Patch::Merge(patch) => {
                let old = old.expect("checked above");
                let mut patched = target.present(&old);
                merge_patch(&mut patched, &patch);
                let candidate = self.checked_body(target, namespace, Some(name), patched)?;
                self.finish_patch(&mut state, target, options, &key, &old, candidate)
            }
            Patch::Json(operations) => {
                let old = old.expect("checked above");
                let patched = json_patch(&target.present(&old), &operations)?;
                let candidate = self.checked_body(target, namespace, Some(name), patched)?;
                self.finish_patch(&mut state, target, options, &key, &old, candidate)
            }
        }
    }

    fn finish_patch(
        &self,
        state: &mut State,
        target: &Target,
        options: &WriteOptions,
        key: &Key,
        old: &Value,
        mut candidate: Value,
    ) -> Result<Written, ApiError> {
        if let Some(version) = meta_text(&candidate, "resourceVersion") {
            if Some(version) != meta_text(old, "resourceVersion") {
                return Err(ApiError::stale(&target.resource, &key.2));
            }
        }
        let warnings = validate_fields(target, &mut candidate, options.field_validation, false)?;
        let object = self.commit(
            state,
            target,
            options,
            key,
            Some(old),
            candidate,
            WriteKind::Update,
        )?;
        Ok(Written {
            object,
            created: false,
            warnings,
        })
    }

    fn check_room(
        &self,
        state: &State,
        target: &Target,
        namespace: Option<&str>,
    ) -> Result<(), ApiError> {
        if state.objects.len() >= self.limits.max_objects {
            return Err(ApiError::forbidden(format!(
                "exceeded quota: the stand-in holds at most {} objects",
                self.limits.max_objects
            )));
        }
        if target.resource.namespaced {
            let namespace = namespace.unwrap_or("");
            let namespace_key = ("namespaces".to_owned(), String::new(), namespace.to_owned());
            match state.objects.get(&namespace_key) {
                None => return Err(ApiError::namespace_not_found(namespace)),
                Some(object) if meta_text(object, "deletionTimestamp").is_some() => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                        target.resource.qualified_name(),
                        key_name_hint(target)
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// A create or update body: an object of this type, in this namespace, named as the URL.
    fn checked_body(
        &self,
        target: &Target,
        namespace: Option<&str>,
        name: Option<&str>,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        let Some(fields) = body.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        };
        let api_version = target.api_version();
        for (field, expected) in [
            ("apiVersion", api_version.as_str()),
            ("kind", target.resource.kind.as_str()),
        ] {
            match fields.get(field).and_then(Value::as_str) {
                Some(found) if found != expected => {
                    // Another served version of the same type is a conversion, not an error.
                    let other_version = field == "apiVersion"
                        && target.resource.versions.iter().any(|version| {
                            version.served && target.resource.api_version(&version.name) == found
                        });
                    if !other_version {
                        return Err(ApiError::bad_request(format!(
                            "the {field} of the object ({found}) does not match the expected {field} ({expected})"
                        )));
                    }
                }
                _ => {}
            }
            fields.insert(field.into(), expected.into());
        }
        let metadata = metadata_mut(&mut body);
        if target.resource.namespaced {
            match (metadata.get("namespace").and_then(Value::as_str), namespace) {
                (Some(found), Some(expected)) if !found.is_empty() && found != expected => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                (_, Some(expected)) => {
                    metadata.insert("namespace".into(), expected.into());
                }
                (_, None) => return Err(ApiError::bad_request("a namespaced object needs a namespace")),
            }
        } else {
            metadata.remove("namespace");
        }
        if let Some(name) = name {
            match metadata.get("name").and_then(Value::as_str) {
                Some(found) if !found.is_empty() && found != name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({found}) does not match the name on the URL ({name})"
                    )))
                }
                _ => {
                    metadata.insert("name".into(), name.into());
                }
            }
        }
        if let Some(name) = metadata.get("name").and_then(Value::as_str) {
            if !valid_name(name) {
                return Err(ApiError::invalid(
                    &target.resource.qualified_kind(),
                    name,
                    &[(
                        "metadata.name".into(),
                        format!(
                            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case \
                             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                        ),
                    )],
                ));
            }
        }
        Ok(body)
    }

    /// An apply configuration must name its type itself (kube-apiserver refuses one without
    /// `apiVersion` and `kind`).
    fn checked_apply_config(
        &self,
        target: &Target,
        namespace: Option<&str>,
        name: &str,
        config: Value,
    ) -> Result<Value, ApiError> {
        for field in ["apiVersion", "kind"] {
            if config
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(format!(
                    "{} must be set in an apply configuration",
                    if field == "kind" {
                        "kind"
                    } else {
                        "apiVersion"
                    }
                )));
            }
        }
        self.checked_body(target, namespace, Some(name), config)
    }

    /// The one commit path of every create, update, patch and apply.
    #[expect(
        clippy::too_many_arguments,
        reason = "the one commit path takes every part of a write"
    )]
    fn commit(
        &self,
        state: &mut State,
        target: &Target,
        options: &WriteOptions,
        key: &Key,
        old: Option<&Value>,
        candidate: Value,
        kind: WriteKind,
    ) -> Result<Value, ApiError> {
        let schema = target.schema();
        let api_version = target.api_version();
        let time = now_rfc3339();
        let subresource = match options.subresource {
            Subresource::Main => "",
            Subresource::Status => "status",
        };
        let has_status = target.has_status();
        let ignored = |set: FieldSet| -> FieldSet {
            match (options.subresource, has_status) {
                (Subresource::Status, _) => set.at_or_below(&status_root()),
                (Subresource::Main, true) => set.difference(&set.at_or_below(&status_root())),
                (Subresource::Main, false) => set,
            }
        };
        let live = old.map(without_bookkeeping).unwrap_or_else(|| json!({}));
        let mut entries = old.map(managed::decode).unwrap_or_default();
        let writer = Writer {
            manager: &options.manager,
            operation: match kind {
                WriteKind::Apply { .. } => Operation::Apply,
                WriteKind::Update => Operation::Update,
            },
            api_version: &api_version,
            subresource,
            time: &time,
        };

        let mut new = match kind {
            WriteKind::Apply { force } => {
                let config = reset_fields(
                    target,
                    options.subresource,
                    Some(&live),
                    without_bookkeeping(&candidate),
                    true,
                );
                let applied = managed::apply(
                    &live,
                    &config,
                    schema,
                    &mut entries,
                    &writer,
                    force,
                    &ignored,
                )
                .map_err(|conflicts| {
                    ApiError::new(409, "Conflict", conflicts.message()).with_details(json!({
                        "name": key.2,
                        "group": target.resource.group,
                        "kind": target.resource.plural,
                        "causes": conflicts.causes(),
                    }))
                })?;
                let new = reset_fields(
                    target,
                    options.subresource,
                    old.map(|_| &live),
                    applied,
                    false,
                );
                carry_system_metadata(target, old, new, &time)
            }
            WriteKind::Update => {
                let new = reset_fields(
                    target,
                    options.subresource,
                    old.map(|_| &live),
                    without_bookkeeping(&candidate),
                    false,
                );
                let new = carry_system_metadata(target, old, new, &time);
                managed::record_update(&live, &new, schema, &mut entries, &writer, &ignored);
                new
            }
        };

        if let (Some(old), true) = (old, target.resource.custom) {
            let generation = metadata(old)
                .and_then(|metadata| metadata.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let bumped = if spec_like(old) != spec_like(&new) {
                generation + 1
            } else {
                generation
            };
            metadata_mut(&mut new).insert("generation".into(), bumped.into());
        }
        if let Some(old) = old {
            if meta_text(old, "deletionTimestamp").is_some() {
                let before = finalizers(old);
                if finalizers(&new)
                    .iter()
                    .any(|finalizer| !before.contains(finalizer))
                {
                    return Err(ApiError::invalid(
                        &target.resource.qualified_kind(),
                        &key.2,
                        &[(
                            "metadata.finalizers".into(),
                            "Forbidden: no new finalizers can be added if the object is being deleted".into(),
                        )],
                    ));
                }
            }
        }
        let encoded = managed::encode(&entries);
        let metadata = metadata_mut(&mut new);
        if encoded
            .as_array()
            .is_some_and(|entries| !entries.is_empty())
        {
            metadata.insert("managedFields".into(), encoded);
        } else {
            metadata.remove("managedFields");
        }
        if let Some(old) = old {
            let mut unchanged = new.clone();
            if let Some(version) = meta_text(old, "resourceVersion") {
                metadata_mut(&mut unchanged).insert("resourceVersion".into(), version.into());
            }
            // A write that changes nothing is not written: no new resourceVersion, no event.
            if unchanged == *old {
                return Ok(target.present(old));
            }
        }
        if options.dry_run {
            return Ok(target.present(&new));
        }
        let deleting =
            meta_text(&new, "deletionTimestamp").is_some() && finalizers(&new).is_empty();
        state.resource_version += 1;
        metadata_mut(&mut new).insert(
            "resourceVersion".into(),
            state.resource_version.to_string().into(),
        );
        if deleting {
            state.objects.remove(key);
            self.record(state, EventKind::Deleted, key, old.cloned(), new.clone());
            self.finish_namespace_if_empty(state, &key.1);
        } else {
            state.objects.insert(key.clone(), new.clone());
            let kind = if old.is_some() {
                EventKind::Modified
            } else {
                EventKind::Added
            };
            self.record(state, kind, key, old.cloned(), new.clone());
        }
        Ok(target.present(&new))
    }

    pub fn delete(
        &self,
        target: &Target,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<Deleted, ApiError> {
        let mut state = self.lock();
        let key = Self::key(target, namespace, name);
        if !state.objects.contains_key(&key) {
            return Err(ApiError::not_found(&target.resource, name));
        }
        if dry_run {
            let object = target.present(&state.objects[&key]);
            return Ok(if finalizers(&object).is_empty() {
                Deleted::Gone(object)
            } else {
                Deleted::Finalizing(object)
            });
        }
        let outcome = if target.resource.plural == "namespaces" && target.resource.group.is_empty()
        {
            self.delete_namespace(&mut state, &key)
        } else {
            self.delete_object(&mut state, &key)
        };
        Ok(match outcome {
            Deleted::Gone(object) => Deleted::Gone(target.present(&object)),
            Deleted::Finalizing(object) => Deleted::Finalizing(target.present(&object)),
        })
    }

    /// Marks an object with finalizers as being deleted, or removes one without.
    fn delete_object(&self, state: &mut State, key: &Key) -> Deleted {
        let old = state.objects[key].clone();
        let mut object = old.clone();
        if finalizers(&old).is_empty() {
            state.resource_version += 1;
            metadata_mut(&mut object).insert(
                "resourceVersion".into(),
                state.resource_version.to_string().into(),
            );
            state.objects.remove(key);
            self.record(state, EventKind::Deleted, key, Some(old), object.clone());
            self.finish_namespace_if_empty(state, &key.1);
            return Deleted::Gone(object);
        }
        if meta_text(&old, "deletionTimestamp").is_some() {
            return Deleted::Finalizing(old);
        }
        let metadata = metadata_mut(&mut object);
        if let Some(generation) = metadata.get("generation").and_then(Value::as_i64) {
            metadata.insert("generation".into(), (generation + 1).into());
        }
        metadata.insert("deletionTimestamp".into(), now_rfc3339().into());
        metadata.insert("deletionGracePeriodSeconds".into(), 0.into());
        state.resource_version += 1;
        metadata_mut(&mut object).insert(
            "resourceVersion".into(),
            state.resource_version.to_string().into(),
        );
        state.objects.insert(key.clone(), object.clone());
        self.record(state, EventKind::Modified, key, Some(old), object.clone());
        Deleted::Finalizing(object)
    }

    /// A namespace goes `Terminating`, everything in it is deleted (finalizers still hold
    /// what they hold), and it is gone once it is empty.
    fn delete_namespace(&self, state: &mut State, key: &Key) -> Deleted {
        let namespace = key.2.clone();
        let old = state.objects[key].clone();
        if meta_text(&old, "deletionTimestamp").is_none() {
            let mut object = old.clone();
            let metadata = metadata_mut(&mut object);
            metadata.insert("deletionTimestamp".into(), now_rfc3339().into());
            metadata.insert("deletionGracePeriodSeconds".into(), 0.into());
            object
                .as_object_mut()
                .expect("objects are JSON objects")
                .insert("status".into(), json!({"phase": "Terminating"}));
            state.resource_version += 1;
            metadata_mut(&mut object).insert(
                "resourceVersion".into(),
                state.resource_version.to_string().into(),
            );
            state.objects.insert(key.clone(), object.clone());
            self.record(state, EventKind::Modified, key, Some(old.clone()), object);
        }
        let contained: Vec<Key> = state
            .objects
            .keys()
            .filter(|(_, object_namespace, _)| *object_namespace == namespace)
            .cloned()
            .collect();
        for contained_key in contained {
            self.delete_object(state, &contained_key);
        }
        self.finish_namespace_if_empty(state, &namespace);
        match state.objects.get(key) {
            Some(object) => Deleted::Finalizing(object.clone()),
            None => Deleted::Gone(
                state
                    .history
                    .back()
                    .map(|event| event.object.clone())
                    .unwrap_or(old),
            ),
        }
    }

    fn finish_namespace_if_empty(&self, state: &mut State, namespace: &str) {
        if namespace.is_empty() {
            return;
        }
        let key = ("namespaces".to_owned(), String::new(), namespace.to_owned());
        let terminating = state
            .objects
            .get(&key)
            .is_some_and(|object| meta_text(object, "deletionTimestamp").is_some());
        let empty = !state
            .objects
            .keys()
            .any(|(_, object_namespace, _)| object_namespace == namespace);
        if terminating && empty {
            let old = state.objects.remove(&key).expect("checked above");
            let mut object = old.clone();
            state.resource_version += 1;
            metadata_mut(&mut object).insert(
                "resourceVersion".into(),
                state.resource_version.to_string().into(),
            );
            self.record(state, EventKind::Deleted, &key, Some(old), object);
        }
    }

    /// Appends to the bounded history and hands the event to every watcher it concerns.
    fn record(
        &self,
        state: &mut State,
        kind: EventKind,
        key: &Key,
        old: Option<Value>,
        object: Value,
    ) {
        let event = Event {
            resource_version: state.resource_version,
            kind,
            resource: key.0.clone(),
            old,
            object,
        };
        state
            .watchers
            .retain(|watcher| match watcher.filter.line_for(&event) {
                None => true,
                Some(line) => watcher.sender.try_send(line).is_ok(),
            });
        state.history.push_back(event);
        while state.history.len() > self.limits.history {
            if let Some(dropped) = state.history.pop_front() {
                state.history_floor = dropped.resource_version;
            }
        }
    }

    /// Starts a watch. Without a resourceVersion (or with "0") it begins with an `ADDED` for
    /// every current object; from resourceVersion N it replays the events after N from the
    /// history, or answers `Expired` when they are no longer all there.
    pub fn watch(&self, filter: WatchFilter, from: Option<u64>) -> WatchStart {
        let mut state = self.lock();
        if std::mem::take(&mut state.expire_next_watch) {
            let requested = from.unwrap_or(0);
            return WatchStart::Expired(ApiError::expired(format!(
                "too old resource version: {requested} ({})",
                state.resource_version
            )));
        }
        let initial = match from {
            None | Some(0) => {
                let resource = filter.target.resource.qualified_name();
                state
                    .objects
                    .iter()
                    .filter(|((kind, _, _), object)| *kind == resource && filter.matches(object))
                    .map(|(_, object)| watch_line("ADDED", &filter.target.present(object)))
                    .collect()
            }
            Some(version) if version < state.history_floor => {
                return WatchStart::Expired(ApiError::expired(format!(
                    "too old resource version: {version} ({})",
                    state.history_floor
                )))
            }
            Some(version) => state
                .history
                .iter()
                .filter(|event| event.resource_version > version)
                .filter_map(|event| filter.line_for(event))
                .collect(),
        };
        let (sender, receiver) = mpsc::channel(self.limits.watch_buffer.max(1));
        let id = state.next_watcher;
        state.next_watcher += 1;
        state.watchers.push(Watcher { id, filter, sender });
        WatchStart::Stream {
            id,
            initial,
            receiver,
        }
    }

    /// Queues a `BOOKMARK` at the current resourceVersion for watcher `id`. Queued under the
    /// store lock, it cannot overtake an event. False once the watcher is gone.
    pub fn bookmark(&self, id: u64) -> bool {
        let mut state = self.lock();
        let version = state.resource_version.to_string();
        let Some(index) = state.watchers.iter().position(|watcher| watcher.id == id) else {
            return false;
        };
        let target = &state.watchers[index].filter.target;
        let line = watch_line(
            "BOOKMARK",
            &json!({"kind": target.resource.kind, "apiVersion": target.api_version(),
                    "metadata": {"resourceVersion": version}}),
        );
        match state.watchers[index].sender.try_send(line) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                state.watchers.remove(index);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                state.watchers.remove(index);
                false
            }
        }
    }

    pub fn is_watching(&self, id: u64) -> bool {
        self.lock().watchers.iter().any(|watcher| watcher.id == id)
    }

    pub fn stop_watch(&self, id: u64) {
        self.lock().watchers.retain(|watcher| watcher.id != id);
    }

    pub fn stop_all_watches(&self) {
        self.lock().watchers.clear();
    }

    pub fn watch_count(&self) -> usize {
        self.lock().watchers.len()
    }

    pub fn expire_next_watch(&self) {
        self.lock().expire_next_watch = true;
    }
}

fn key_name_hint(target: &Target) -> String {
    target.resource.kind.to_lowercase()
}

#[derive(Debug, Clone, Copy)]
enum WriteKind {
    Update,
    Apply { force: bool },
}

/// What a write may change, as kube-apiserver's strategies reset it: a write to the main
/// resource keeps the old status when the type has a status subresource (and a create
/// starts without one); a write to `/status` changes the status and nothing else.
fn reset_fields(
    target: &Target,
    subresource: Subresource,
    old: Option<&Value>,
    mut new: Value,
    is_apply_config: bool,
) -> Value {
    match subresource {
        Subresource::Main if target.has_status() => {
            let fields = new.as_object_mut().expect("objects are JSON objects");
            match old.and_then(|old| old.get("status")) {
                Some(status) if !is_apply_config => {
                    fields.insert("status".into(), status.clone());
                }
                _ => {
                    fields.remove("status");
                }
            }
            new
        }
        Subresource::Main => new,
        Subresource::Status if is_apply_config => {
            // Only the status of the configuration is applied; its identity stays so the
            // configuration is still an object of this type.
            let mut kept = Map::new();
            for field in ["apiVersion", "kind"] {
                if let Some(value) = new.get(field) {
                    kept.insert(field.into(), value.clone());
                }
            }
            let mut identity = Map::new();
            for field in ["name", "namespace"] {
                if let Some(value) = new.pointer(&format!("/metadata/{field}")) {
                    identity.insert(field.into(), value.clone());
                }
            }
            kept.insert("metadata".into(), Value::Object(identity));
            if let Some(status) = new.get("status") {
                kept.insert("status".into(), status.clone());
            }
            Value::Object(kept)
        }
        Subresource::Status => {
            let mut result = old.cloned().unwrap_or_else(|| json!({}));
            let fields = result.as_object_mut().expect("objects are JSON objects");
            match new.get("status") {
                Some(status) => fields.insert("status".into(), status.clone()),
                None => fields.remove("status"),
            };
            result
        }
    }
}

/// The metadata only the server writes: identity, creation, deletion and generation come
/// from the stored object (or are made on create), whatever the body said.
fn carry_system_metadata(
    target: &Target,
    old: Option<&Value>,
    mut new: Value,
    time: &str,
) -> Value {
    let metadata = metadata_mut(&mut new);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ] {
        metadata.remove(field);
    }
    match old
        .and_then(|old| old.get("metadata"))
        .and_then(Value::as_object)
    {
        Some(old_metadata) => {
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                if let Some(value) = old_metadata.get(field) {
                    metadata.insert(field.into(), value.clone());
                }
            }
        }
        None => {
            metadata.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
            metadata.insert("creationTimestamp".into(), time.into());
            if target.resource.custom {
                metadata.insert("generation".into(), 1.into());
            }
            metadata.remove("generateName");
            if target.resource.plural == "namespaces" && target.resource.group.is_empty() {
                new.as_object_mut()
                    .expect("objects are JSON objects")
                    .insert("status".into(), json!({"phase": "Active"}));
            }
        }
    }
    new
}

/// `fieldValidation`: unknown fields are dropped (structural pruning); `Strict` refuses
/// them with kube-apiserver's message, `Warn` reports them as warnings.
fn validate_fields(
    target: &Target,
    object: &mut Value,
    validation: FieldValidation,
    is_apply: bool,
) -> Result<Vec<String>, ApiError> {
    let unknown = prune_unknown(object, target.schema());
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let kind = &target.resource.kind;
    match validation {
        FieldValidation::Ignore => Ok(Vec::new()),
        FieldValidation::Warn => Ok(unknown
            .iter()
            .map(|path| format!("unknown field \"{path}\""))
            .collect()),
        FieldValidation::Strict if is_apply => Err(ApiError::bad_request(format!(
            "failed to create typed patch object ({}, Kind={kind}): {}",
            target.api_version(),
            unknown
                .iter()
                .map(|path| format!(".{path}: field not declared in schema"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
            target.version,
            unknown
                .iter()
                .map(|path| format!("unknown field \"{path}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
