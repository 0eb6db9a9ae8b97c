//! The Cluster API objects of every managed cluster, kept current by one watch per kind for
//! the whole namespace (not one poll per cluster): a change reaches the cluster's waiter
//! within the watch's latency, and a thousand clusters cost six watches.
//!
//! The watcher relists after a `410 Gone` and backs off while the management cluster is
//! away; the cache then keeps what it last saw and records why it is stale, so that a status
//! is never changed on the strength of a missing answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde_json::Value;
use tokio::sync::watch;

use crate::management::{Kind, Management};
use crate::names::label;

/// The kinds a cluster's status is read from.
pub const WATCHED: [Kind; 6] = [
    Kind::Cluster,
    Kind::KubeadmControlPlane,
    Kind::OpenStackCluster,
    Kind::MachineDeployment,
    Kind::Machine,
    Kind::HelmReleaseProxy,
];

/// The objects of one cluster, by kind and name.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    pub by_kind: HashMap<Kind, BTreeMap<String, Value>>,
}

impl ClusterObjects {
    pub fn first(&self, kind: Kind) -> Option<&Value> {
        self.by_kind
            .get(&kind)
            .and_then(|objects| objects.values().next())
    }

    pub fn all(&self, kind: Kind) -> Vec<Value> {
        self.by_kind
            .get(&kind)
            .map(|objects| objects.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    clusters: HashMap<String, ClusterObjects>,
    /// Kinds whose initial list has arrived.
    synced: Vec<Kind>,
    /// Why the cache may be stale, per kind whose watch is failing.
    trouble: HashMap<Kind, String>,
    /// Clusters changed since the health follower last looked (a thousand clusters must not
    /// cost a thousand reads per event).
    dirty: std::collections::HashSet<String>,
}

/// The cache and its change signal.
pub struct ObjectCache {
    state: Mutex<State>,
    /// Bumped on every change: the health follower looks at what changed.
    changed: watch::Sender<u64>,
    /// Bumped when one cluster changes (or the whole view does): its waiter re-reads it, and
    /// no other waiter wakes.
    per_cluster: Mutex<HashMap<String, watch::Sender<u64>>>,
}

/// What the cache keeps of an object: all but its managedFields, which the driver never
/// reads and which are often the largest part.
fn trimmed(mut object: Value) -> Value {
    if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.remove("managedFields");
    }
    object
}

/// The CAPI cluster an object belongs to.
fn owner(kind: Kind, object: &Value) -> Option<String> {
    if kind == Kind::Cluster {
        return object["metadata"]["name"].as_str().map(str::to_owned);
    }
    object["metadata"]["labels"][label::CAPI_CLUSTER_NAME]
        .as_str()
        .map(str::to_owned)
}

impl ObjectCache {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            per_cluster: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Signals a change of `clusters` (None: of every cluster).
    fn bump(&self, clusters: Option<&[&str]>) {
        self.changed.send_modify(|generation| *generation += 1);
        let senders = self
            .per_cluster
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match clusters {
            Some(names) => {
                for name in names {
                    if let Some(sender) = senders.get(*name) {
                        sender.send_modify(|generation| *generation += 1);
                    }
                }
            }
            None => {
                for sender in senders.values() {
                    sender.send_modify(|generation| *generation += 1);
                }
            }
        }
    }

    /// A signal of changes to `cluster` (and to the whole view: relists, trouble).
    pub fn subscribe_cluster(&self, cluster: &str) -> watch::Receiver<u64> {
        let mut senders = self
            .per_cluster
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Signals nobody waits on any more go, so the map stays as large as the waiters.
        senders.retain(|_, sender| sender.receiver_count() > 0);
        senders
            .entry(cluster.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The objects of `cluster` as last seen, and whether every watch has listed once.
    pub fn snapshot(&self, cluster: &str) -> (ClusterObjects, bool) {
        let state = self.lock();
        let synced = WATCHED.iter().all(|kind| state.synced.contains(kind));
        (
            state.clusters.get(cluster).cloned().unwrap_or_default(),
            synced,
        )
    }

    /// Why the cache may be stale, if a watch is failing.
    pub fn trouble(&self) -> Option<String> {
        let state = self.lock();
        let mut troubles: Vec<&String> = state.trouble.values().collect();
        troubles.sort();
        (!troubles.is_empty()).then(|| {
            troubles
                .into_iter()
                .cloned()
                .collect::<Vec<String>>()
                .join("; ")
        })
    }

    /// Names of the clusters changed since the last call (those removed included).
    pub fn take_changed(&self) -> Vec<String> {
        self.lock().dirty.drain().collect()
    }

    pub fn apply(&self, kind: Kind, object: Value) {
        let object = trimmed(object);
        let Some(cluster) = owner(kind, &object) else {
            return;
        };
        let cluster_name = cluster.clone();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        {
            let mut state = self.lock();
            state.trouble.remove(&kind);
            state.dirty.insert(cluster.clone());
            state
                .clusters
                .entry(cluster)
                .or_default()
                .by_kind
                .entry(kind)
                .or_default()
                .insert(name, object);
        }
        self.bump(Some(&[&cluster_name]));
    }

    pub fn delete(&self, kind: Kind, object: &Value) {
        let Some(cluster) = owner(kind, object) else {
            return;
        };
        let cluster_name = cluster.clone();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        {
            let mut state = self.lock();
            state.dirty.insert(cluster.clone());
            if let Some(objects) = state.clusters.get_mut(&cluster) {
                if let Some(of_kind) = objects.by_kind.get_mut(&kind) {
                    of_kind.remove(name);
                }
                if objects.by_kind.values().all(BTreeMap::is_empty) {
                    state.clusters.remove(&cluster);
                }
            }
        }
        self.bump(Some(&[&cluster_name]));
    }

    /// A relist delivered every object of `kind`: whatever it did not deliver is gone.
    pub fn replace_kind(&self, kind: Kind, objects: Vec<Value>) {
        {
            let mut state = self.lock();
            let before: Vec<String> = state.clusters.keys().cloned().collect();
            state.dirty.extend(before);
            for cluster in state.clusters.values_mut() {
                cluster.by_kind.remove(&kind);
            }
            for object in objects.into_iter().map(trimmed) {
                let Some(cluster) = owner(kind, &object) else {
                    continue;
                };
                state.dirty.insert(cluster.clone());
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                state
                    .clusters
                    .entry(cluster)
                    .or_default()
                    .by_kind
                    .entry(kind)
                    .or_default()
                    .insert(name, object);
            }
            state
                .clusters
                .retain(|_, objects| !objects.by_kind.values().all(BTreeMap::is_empty));
            if !state.synced.contains(&kind) {
                state.synced.push(kind);
                // The first complete view: every cluster is news to the followers.
                if WATCHED.iter().all(|kind| state.synced.contains(kind)) {
                    let all: Vec<String> = state.clusters.keys().cloned().collect();
                    state.dirty.extend(all);
                }
            }
            state.trouble.remove(&kind);
        }
        self.bump(None);
    }

    pub fn record_trouble(&self, kind: Kind, trouble: String) {
        self.lock().trouble.insert(kind, trouble);
        self.bump(None);
    }

    /// Starts one watch per kind, for as long as the returned handles live.
    pub fn start(self: &Arc<Self>, management: &Management) -> Vec<tokio::task::JoinHandle<()>> {
        WATCHED
            .into_iter()
            .map(|kind| {
                let cache = self.clone();
                let (api, _) = management.dynamic_api(kind);
                tokio::spawn(async move {
                    // The most recent list, not the apiserver's possibly older watch cache.
                    let config = watcher::Config::default();
                    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
                    let mut buffered: Option<Vec<Value>> = None;
                    while let Some(event) = stream.next().await {
                        match event {
                            Ok(Event::Init) => buffered = Some(Vec::new()),
                            Ok(Event::InitApply(object)) => {
                                if let (Some(buffer), Ok(value)) =
                                    (buffered.as_mut(), serde_json::to_value(object))
                                {
                                    buffer.push(value);
                                }
                            }
                            Ok(Event::InitDone) => {
                                cache.replace_kind(kind, buffered.take().unwrap_or_default());
                            }
                            Ok(Event::Apply(object)) => {
                                if let Ok(value) = serde_json::to_value(object) {
                                    cache.apply(kind, value);
                                }
                            }
                            Ok(Event::Delete(object)) => {
                                if let Ok(value) = serde_json::to_value(object) {
                                    cache.delete(kind, &value);
                                }
                            }
                            Err(error) => {
                                let (_, _, name, _) = kind.coordinates();
                                tracing::warn!(kind = name, %error, "watch of the management cluster failed; retrying");
                                cache.record_trouble(kind, format!(
                                    "the management cluster cannot be watched ({name}): {error}"
                                ));
                            }
                        }
                    }
                })
            })
            .collect()
    }
}
