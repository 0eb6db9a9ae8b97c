//! A Kubernetes API server stand-in on loopback HTTP, for tests of code that drives a Cluster
//! API management cluster (kube-rs clients and real `kubectl`, through an ordinary
//! kubeconfig), where no real kube-apiserver can run.
//!
//! It behaves like kube-apiserver wherever a Cluster API driver depends on it: discovery,
//! the resource paths and verbs, `Status` errors, resourceVersion/generation/uid, the
//! `status` subresource, finalizers, label and field selectors, server-side apply with
//! managedFields per field manager (structured-merge-diff semantics for the list and map
//! types CRD schemas declare), and watches with replay, bookmarks and `410 Expired`.
//!
//! Code map:
//! * [`resources`]: the served types (core `v1` namespaces, secrets, configmaps, events, and
//!   the CRDs given at start);
//! * `store`: the one write path, resourceVersion order, watch history and watchers;
//! * `managed`, `merge`, `fieldpath`, `shape`: server-side apply and field ownership;
//! * `selectors`: label and field selectors;
//! * `http`, `discovery`, `watch`: the HTTP face.
//!
//! Test hooks on [`KubeApiServer`]: the request log, injected outages, a forced `410` for
//! the next watch, and [`Controller`] to write as another field manager without HTTP.
//!
//! Simplified on purpose: one stored form per type whatever the version (a CRD conversion
//! strategy of `None`), no admission, no defaulting or schema validation beyond unknown
//! fields, no `deletecollection`, no protobuf or Table output, no aggregated discovery.

pub mod capi;
mod discovery;
mod fieldpath;
mod http;
mod managed;
mod merge;
mod openapi;
mod patch;
pub mod resources;
mod selectors;
mod shape;
mod status;
mod store;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use http::{Outage, RecordedRequest};
pub use status::ApiError;
pub use store::{FieldValidation, Subresource};

use resources::{Registry, ResourceType};
use store::{Limits, Patch, Store, Target, WriteOptions};

/// The CRD files shipped with the `capi` driver (`crates/driver-capi/crds`).
pub fn capi_crds_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../driver-capi/crds")
}

/// What the stand-in serves and its bounds.
#[derive(Debug, Clone)]
pub struct KubeApiConfig {
    crds: Vec<ResourceType>,
    pub token: String,
    /// Like kube-apiserver's `--anonymous-auth`: a request with no `Authorization` header
    /// is let in (a wrong token is still refused). Off by default. client-go, and so
    /// kubectl, never sends a bearer token over plain http, so kubectl needs this on.
    pub anonymous_auth: bool,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Watch events kept for replay from an older resourceVersion.
    pub history_limit: usize,
    pub max_objects: usize,
    /// kube-apiserver's request body limit: 3 MiB.
    pub max_body_bytes: usize,
    /// Events queued for one watcher before it is dropped as too slow.
    pub watch_buffer: usize,
}

impl Default for KubeApiConfig {
    fn default() -> Self {
        Self {
            crds: Vec::new(),
            token: format!("stand-in-{}", uuid::Uuid::new_v4().simple()),
            anonymous_auth: false,
            bookmark_interval: Duration::from_secs(1),
            history_limit: 1000,
            max_objects: 10_000,
            max_body_bytes: 3 * 1024 * 1024,
            watch_buffer: 1024,
        }
    }
}

fn invalid_data(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

impl KubeApiConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves the resource a parsed CustomResourceDefinition describes.
    pub fn crd(mut self, document: &Value) -> std::io::Result<Self> {
        self.crds
            .push(ResourceType::from_crd(document).map_err(invalid_data)?);
        Ok(self)
    }

    /// Serves the CustomResourceDefinition in a YAML (or JSON) file.
    pub fn crd_file(self, path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let document: Value = serde_saphyr::from_str(&text)
            .map_err(|error| invalid_data(format!("{}: {error}", path.display())))?;
        self.crd(&document)
    }

    /// Serves CRDs of the `capi` driver by file name, e.g. `cluster.x-k8s.io_clusters.yaml`.
    pub fn capi_crds(mut self, file_names: &[&str]) -> std::io::Result<Self> {
        for name in file_names {
            self = self.crd_file(&capi_crds_directory().join(name))?;
        }
        Ok(self)
    }
}

/// A running stand-in; dropping it stops the server and cuts every connection.
pub struct KubeApiServer {
    shared: Arc<http::Shared>,
    server: JoinHandle<()>,
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        self.server.abort();
        self.shared.store.stop_all_watches();
    }
}

impl KubeApiServer {
    /// Binds 127.0.0.1 on a free port and serves until dropped (inside a tokio runtime).
    pub async fn start(config: KubeApiConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let registry = Arc::new(Registry::new(config.crds));
        let store = Arc::new(Store::new(
            registry,
            Limits {
                max_objects: config.max_objects,
                history: config.history_limit,
                watch_buffer: config.watch_buffer,
            },
        ));
        let shared = Arc::new(http::Shared {
            store,
            token: config.token,
            anonymous_auth: config.anonymous_auth,
            max_body_bytes: config.max_body_bytes,
            bookmark_interval: config.bookmark_interval,
            address,
            requests: Mutex::new(Default::default()),
            outage: Mutex::new(None),
            outage_changed: Notify::new(),
            outage_epoch: tokio::sync::watch::channel(0).0,
        });
        let server = tokio::spawn(http::serve(listener, shared.clone()));
        Ok(Self { shared, server })
    }

    pub fn address(&self) -> SocketAddr {
        self.shared.address
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.address)
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// A kubeconfig pointing at the stand-in with its token, in a temporary directory that
    /// also holds a discovery cache directory for kubectl (`--cache-dir`).
    pub fn write_kubeconfig(&self) -> std::io::Result<Kubeconfig> {
        let directory = tempfile::tempdir()?;
        let path = directory.path().join("kubeconfig");
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: stand-in\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: stand-in\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: stand-in\n  context:\n    cluster: stand-in\n    user: stand-in\n    namespace: default\n\
             current-context: stand-in\n",
            url = self.url(),
            token = self.shared.token,
        );
        std::fs::write(&path, text)?;
        // A kubeconfig holds credentials: readable by its owner only, as clients expect.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(Kubeconfig { directory, path })
    }

    /// Every request received so far (at most the last 10,000; bodies cut at 64 KiB).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// The management cluster goes away for `duration`: open connections and watches are
    /// cut, and new requests are refused or answered 503 depending on `mode`.
    pub fn outage(&self, mode: Outage, duration: Duration) {
        *self
            .shared
            .outage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((mode, Instant::now() + duration));
        self.shared.store.stop_all_watches();
        self.shared.outage_epoch.send_modify(|epoch| *epoch += 1);
        self.shared.outage_changed.notify_one();
    }

    pub fn end_outage(&self) {
        *self
            .shared
            .outage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        self.shared.outage_changed.notify_one();
    }

    /// The next watch request gets `410 Expired`, as after an etcd compaction.
    pub fn expire_next_watch(&self) {
        self.shared.store.expire_next_watch();
    }

    /// Ends every open watch stream (clients see the stream close and re-watch).
    pub fn close_watches(&self) {
        self.shared.store.stop_all_watches();
    }

    pub fn open_watches(&self) -> usize {
        self.shared.store.watch_count()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.resource_version()
    }

    /// Writes as field manager `manager`, directly on the store: how a test plays a
    /// controller (capi-topology setting status, a controller removing its finalizer).
    pub fn controller(&self, manager: &str) -> Controller {
        Controller {
            store: self.shared.store.clone(),
            manager: manager.to_owned(),
        }
    }
}

/// The kubeconfig file of a running stand-in; removed with its directory when dropped.
pub struct Kubeconfig {
    directory: tempfile::TempDir,
    path: PathBuf,
}

impl Kubeconfig {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A per-kubeconfig directory for kubectl's discovery cache, so runs do not share one.
    pub fn cache_dir(&self) -> PathBuf {
        self.directory.path().join("cache")
    }
}

/// A resource type as a test names it: group (`""` for core), version, plural.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub group: String,
    pub version: String,
    pub plural: String,
}

impl ResourceRef {
    pub fn new(group: &str, version: &str, plural: &str) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
        }
    }

    pub fn core(plural: &str) -> Self {
        Self::new("", "v1", plural)
    }
}

/// Writes as one field manager straight into the store, with the semantics of the
/// equivalent HTTP request (and its events to watchers). Cheap to clone and `Send`, so a
/// background task can play a controller.
#[derive(Clone)]
pub struct Controller {
    store: Arc<Store>,
    manager: String,
}

impl Controller {
    fn target(&self, resource: &ResourceRef) -> Result<Target, ApiError> {
        self.store
            .target(&resource.group, &resource.version, &resource.plural)
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    format!("no resource {resource:?} is served"),
                )
            })
    }

    fn options(&self, subresource: Subresource) -> WriteOptions {
        WriteOptions {
            manager: self.manager.clone(),
            subresource,
            field_validation: FieldValidation::Strict,
            dry_run: false,
        }
    }

    fn name_of(object: &Value) -> Result<String, ApiError> {
        object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request("the object has no metadata.name"))
    }

    /// Server-side apply with `force=true`, as controllers apply.
    pub fn apply(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.apply_to(resource, namespace, object, Subresource::Main)
    }

    /// Server-side apply of `.status` (the object needs apiVersion, kind, name and status).
    pub fn apply_status(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.apply_to(resource, namespace, object, Subresource::Status)
    }

    fn apply_to(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        object: Value,
        subresource: Subresource,
    ) -> Result<Value, ApiError> {
        let target = self.target(resource)?;
        let name = Self::name_of(&object)?;
        let patch = Patch::Apply {
            config: object,
            force: true,
        };
        Ok(self
            .store
            .patch(&target, namespace, &name, patch, &self.options(subresource))?
            .object)
    }

    pub fn create(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        let target = self.target(resource)?;
        Ok(self
            .store
            .create(&target, namespace, object, &self.options(Subresource::Main))?
            .object)
    }

    /// A PUT of the whole object (an `Update` for field ownership).
    pub fn update(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        let target = self.target(resource)?;
        let name = Self::name_of(&object)?;
        Ok(self
            .store
            .replace(
                &target,
                namespace,
                &name,
                object,
                &self.options(Subresource::Main),
            )?
            .object)
    }

    /// A merge patch of `.status` (an `Update` of the status subresource).
    pub fn patch_status(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        let target = self.target(resource)?;
        let patch = Patch::Merge(serde_json::json!({"status": status}));
        Ok(self
            .store
            .patch(
                &target,
                namespace,
                name,
                patch,
                &self.options(Subresource::Status),
            )?
            .object)
    }

    /// Every object of `resource` (in `namespace`, or everywhere).
    pub fn list(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let listed = self.store.list(
            &self.target(resource)?,
            namespace,
            &store::ListOptions::default(),
        )?;
        Ok(listed["items"].as_array().cloned().unwrap_or_default())
    }

    /// The objects of `resource` whose labels match `selector` (kube's syntax): only those
    /// are copied out, which is what keeps a scripted controller cheap at thousands of objects.
    pub fn list_selected(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let options = store::ListOptions {
            labels: selectors::LabelSelector::parse(selector)?,
            ..store::ListOptions::default()
        };
        let listed = self
            .store
            .list(&self.target(resource)?, namespace, &options)?;
        Ok(listed["items"].as_array().cloned().unwrap_or_default())
    }

    pub fn get(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.store.get(&self.target(resource)?, namespace, name)
    }

    /// Removes every finalizer, as controllers do when their cleanup is done; an object
    /// being deleted is then gone.
    pub fn remove_finalizers(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let target = self.target(resource)?;
        let patch = Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
        Ok(self
            .store
            .patch(
                &target,
                namespace,
                name,
                patch,
                &self.options(Subresource::Main),
            )?
            .object)
    }

    pub fn delete(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), ApiError> {
        self.store
            .delete(&self.target(resource)?, namespace, name, false)
            .map(|_| ())
    }
}
