//! Nodes as network namespaces on this host, each with its own dockerd, joined into a
//! swarm-mode cluster (the recipe of spec/local-infra.md). Every step checks what exists
//! before acting, so converging again after a crash continues where the last run stopped;
//! what the driver made is recorded under its state directory, so a restarted magnumd adopts
//! running nodes instead of duplicating them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use magnum_domain::automation::{autoscaling_enabled, label_is_true};
use magnum_driver::{
    Action, ClusterEvent, ClusterSpec, Converge, DriverError, Observed, ObservedNodeGroup, Progress,
};
use serde::{Deserialize, Serialize};
use tokio::process::Command;
use uuid::Uuid;

use crate::sandbox::{self, write_private, HostClaims, Limits, NodeSandbox};

mod autoscale;
mod docker_api;
mod health;
mod image;
mod network;
mod node;
mod state;
mod swarm;
mod teardown;

pub(crate) use health::{settle as settle_healing, HealMemory, HealthReport};

/// The image every node gets, made from busybox-static.
pub const NODE_IMAGE: &str = "magnum/local-node:1";
const SWARM_PORT: u16 = 2377;
const TLS_PORT: u16 = 2376;
const PLAIN_PORT: u16 = 2375;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeState {
    pub name: String,
    pub nodegroup: Uuid,
    pub role: String,
    pub address: String,
    pub swarm_id: Option<String>,
    /// The node's slot of host uids (see `sandbox::UidRanges`).
    #[serde(default)]
    pub uid_slot: Option<u32>,
    /// Its nodegroup's flavor when it was added: the limits it restarts with.
    #[serde(default)]
    pub flavor: Option<String>,
    /// Named for removal by the change under way: it no longer counts towards its
    /// nodegroup's size, is never revived, and goes once its replacements are in.
    #[serde(default)]
    pub leaving: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterState {
    /// The third octet of the cluster's /24 in the pool.
    pub subnet: u8,
    pub next_node: u32,
    pub nodes: Vec<NodeState>,
    /// What the health monitor needs to restart a node on its own.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub auto_healing: bool,
    /// The cluster's nodegroups as of its last change: what the autoscaler and healing by
    /// replacement need between operations.
    #[serde(default)]
    pub groups: Vec<GroupState>,
}

/// A nodegroup as the monitor needs it between operations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupState {
    pub uuid: Uuid,
    pub name: String,
    pub master: bool,
    /// `auto_scaling_enabled` resolved for this nodegroup (never for masters).
    pub autoscaled: bool,
    /// The swarm node labels its nodes get (the nodegroup's `node_labels`).
    pub node_labels: Vec<(String, String)>,
}

/// Where the driver keeps its records and how it numbers networks.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub state_dir: PathBuf,
    /// The first two octets of the private pool, e.g. [10, 77]: clusters get x.y.N.0/24.
    pub pool: [u8; 2],
    pub max_nodes: usize,
    /// (vCPUs, MiB) per flavor name or id: the limits of a node's containers.
    pub flavors: std::collections::HashMap<String, (u32, u64)>,
    /// One lock per cluster, held while an operation (converge, delete) or the health
    /// monitor's healing changes its nodes, so that they never act on one node together.
    pub locks: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Uuid, ClusterLock>>>,
    /// The `magnum-node-authz` binary every node runs as its Docker authorization plugin.
    pub authz_binary: PathBuf,
    /// Processes a node's containers may run together (pids.max of their cgroup).
    pub max_pids_per_node: u32,
    pub claims: std::sync::Arc<HostClaims>,
    /// How long node starts and swarm init/join take, for magnumd's `/metrics`.
    pub metrics: magnum_metrics::DriverStepMetrics,
    /// `[drivers.local.autoscaler]`.
    pub autoscaler: crate::AutoscalerConfig,
}

pub type ClusterLock = std::sync::Arc<tokio::sync::Mutex<()>>;

/// A cluster held by an operation or the health monitor: this process's lock and, across
/// the magnumd processes of this host that share the state directory, an advisory lock
/// (`flock`) on `<cluster dir>/lock`, so that one process's healing never runs beside
/// another's operation on the same nodes. Both are let go when dropped.
pub struct ClusterGuard {
    _in_process: tokio::sync::OwnedMutexGuard<()>,
    _on_host: Option<std::fs::File>,
}

/// How often an operation waiting for another process's hold on a cluster tries again.
const HOST_LOCK_RETRY: Duration = Duration::from_millis(50);

fn failed(message: impl Into<String>) -> DriverError {
    DriverError::Failed(message.into())
}

/// How long any one command may take (the slowest, `docker import` of the node image and
/// `swarm join`, take about a second): a hung command fails its operation instead of holding
/// the cluster in progress.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a manager gets to answer the health monitor's `node ls`: one that cannot is
/// reported as such (the cluster is UNHEALTHY) rather than holding its look for the
/// [`COMMAND_TIMEOUT`] an operation's commands get.
pub(crate) const HEALTH_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long every node of a cluster gets to be Ready in its managers' view.
const NODES_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A worker not Ready this long into the wait gets its dockerd restarted, once.
const NODE_REJOIN_NUDGE: Duration = Duration::from_secs(40);
/// How long a drained node's tasks get to stop (and start elsewhere) before it is removed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node being removed gets to leave the swarm itself (a hung one is removed by
/// its managers regardless).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a removed node's dockerd gets to stop once it is drained and out of the swarm.
const REMOVED_NODE_GRACE: Duration = Duration::from_secs(2);
/// How often one wait for Ready nodes starts dead nodes again before it lets the deadline
/// decide: a node that dies again and again is a failure to report, not to hide.
const MAX_REVIVALS_PER_WAIT: u32 = 3;

async fn run(program: &str, arguments: &[&str]) -> Result<String, DriverError> {
    let running = Command::new(program)
        .args(arguments)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(COMMAND_TIMEOUT, running)
        .await
        .map_err(|_| {
            failed(format!(
                "{program} {} did not finish within {} s",
                arguments.join(" "),
                COMMAND_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|error| failed(format!("cannot run {program}: {error}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(failed(format!(
            "{program} {} failed: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Runs and ignores failure: teardown of what may already be gone.
async fn run_quietly(program: &str, arguments: &[&str]) {
    let _ = run(program, arguments).await;
}

/// Removes a directory tree that should go; what cannot be removed is logged (the tests'
/// leftover checks find it too), and a tree already gone is fine.
fn remove_tree(directory: &std::path::Path) {
    match std::fs::remove_dir_all(directory) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(directory = %directory.display(), %error, "cannot remove");
        }
        _ => {}
    }
}

/// A node's host name: `<cluster>-<node>`, cut to the 63 bytes a host name may have.
fn node_hostname(cluster_name: &str, node: &str) -> String {
    let suffix = format!("-{node}");
    let room = 63usize.saturating_sub(suffix.len());
    let mut name: String = cluster_name.chars().take(room).collect();
    while name.len() > room {
        name.pop();
    }
    name + &suffix
}

fn short(cluster: Uuid) -> String {
    cluster.simple().to_string()[..8].to_owned()
}

impl Runtime {
    fn cluster_dir(&self, cluster: Uuid) -> PathBuf {
        self.state_dir.join("clusters").join(cluster.to_string())
    }

    fn node_dir(&self, cluster: Uuid, node: &str) -> PathBuf {
        self.cluster_dir(cluster).join(node)
    }

    fn bridge(cluster: Uuid) -> String {
        format!("mb{}", short(cluster))
    }

    fn netns(cluster: Uuid, node: &str) -> String {
        format!("mc{}-{node}", short(cluster))
    }

    fn veth(cluster: Uuid, node: &str) -> String {
        format!("v{}{node}", &short(cluster)[..6])
    }

    fn cgroup(cluster: Uuid, node: &str) -> String {
        format!("magnum-{}-{node}", short(cluster))
    }

    fn firewall_table(cluster: Uuid) -> String {
        format!("magnum_{}", short(cluster))
    }

    fn sandbox(&self, cluster: Uuid, node: &str, hostname: &str) -> NodeSandbox {
        NodeSandbox {
            directory: self.node_dir(cluster, node),
            run_directory: Self::run_dir(cluster, node),
            netns: Self::netns(cluster, node),
            cgroup: Self::cgroup(cluster, node),
            hostname: hostname.to_owned(),
        }
    }

    /// The node's docker.sock as the host reaches it: unix socket paths must stay short.
    fn run_dir(cluster: Uuid, node: &str) -> PathBuf {
        PathBuf::from("/run/magnum-local").join(format!("{}-{node}", short(cluster)))
    }

    fn socket(&self, cluster: Uuid, node: &str) -> String {
        format!(
            "unix://{}",
            Self::run_dir(cluster, node).join("docker.sock").display()
        )
    }

    fn cluster_lock(&self, cluster: Uuid) -> ClusterLock {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(cluster).or_default().clone()
    }

    fn lock_file(&self, cluster: Uuid, create: bool) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let directory = self.cluster_dir(cluster);
        if create {
            std::fs::create_dir_all(&directory)?;
        }
        std::fs::OpenOptions::new()
            .create(create)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(directory.join("lock"))
    }

    /// Holds the cluster for an operation, waiting for whoever holds it in this process and
    /// in others (a heal takes seconds; an operation of another process is stopped by its
    /// lease guard once this one is a deletion overtaking it).
    pub(super) async fn hold_cluster(&self, cluster: Uuid) -> Result<ClusterGuard, DriverError> {
        let in_process = self.cluster_lock(cluster).lock_owned().await;
        let file = self
            .lock_file(cluster, true)
            .map_err(|error| failed(format!("cannot lock the cluster's records: {error}")))?;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(ClusterGuard {
                        _in_process: in_process,
                        _on_host: Some(file),
                    })
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    tokio::time::sleep(HOST_LOCK_RETRY).await;
                }
                Err(std::fs::TryLockError::Error(error)) => {
                    return Err(failed(format!(
                        "cannot lock the cluster's records: {error}"
                    )))
                }
            }
        }
    }

    /// The cluster held for the health monitor, unless anyone (in any process of this host)
    /// holds it. A cluster without records needs no host-wide lock: there is nothing to heal.
    pub(super) fn try_hold_cluster(&self, cluster: Uuid) -> Option<ClusterGuard> {
        let in_process = self.cluster_lock(cluster).try_lock_owned().ok()?;
        let on_host = match self.lock_file(cluster, false) {
            Ok(file) => {
                file.try_lock().ok()?;
                Some(file)
            }
            Err(_) => None,
        };
        Some(ClusterGuard {
            _in_process: in_process,
            _on_host: on_host,
        })
    }

    fn forget_lock(&self, cluster: Uuid) {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.remove(&cluster);
    }

    /// A cluster whose deletion started: nothing may bring its nodes back, even after a crash.
    fn is_being_deleted(&self, cluster: Uuid) -> bool {
        self.cluster_dir(cluster).join("deleting").exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many clusters allocated at once, as up to 16 operations per conductor (and several
    /// magnumd on one host) may: every one gets its own /24 and short name, by construction
    /// (host-wide claims under one lock), not by timing.
    #[test]
    fn clusters_allocated_concurrently_get_distinct_subnets() {
        let scratch = tempfile::tempdir().unwrap();
        let runtime = Runtime {
            state_dir: scratch.path().join("state"),
            pool: [10, 251],
            max_nodes: 64,
            flavors: std::collections::HashMap::new(),
            locks: std::sync::Arc::default(),
            authz_binary: PathBuf::from("unused"),
            max_pids_per_node: 64,
            claims: std::sync::Arc::new(HostClaims::scratch(scratch.path())),
            metrics: Default::default(),
            autoscaler: Default::default(),
        };
        let racers: Vec<_> = (0..32)
            .map(|_| {
                let runtime = runtime.clone();
                std::thread::spawn(move || {
                    let cluster = Uuid::new_v4();
                    let state = ClusterState {
                        subnet: 0,
                        next_node: 1,
                        nodes: Vec::new(),
                        name: "c".to_owned(),
                        tls: true,
                        auto_healing: false,
                        groups: Vec::new(),
                    };
                    (cluster, runtime.allocate(cluster, state))
                })
            })
            .collect();
        let mut subnets = Vec::new();
        for racer in racers {
            let (cluster, allocated) = racer.join().unwrap();
            let allocated = allocated.unwrap();
            assert!(allocated.subnet >= 1, "{allocated:?}");
            // What was handed out is what the cluster's record says.
            assert_eq!(runtime.load(cluster).unwrap().subnet, allocated.subnet);
            subnets.push(allocated.subnet);
        }
        let mut distinct = subnets.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 32, "{subnets:?}");
        let claimed = std::fs::read_dir(scratch.path().join("claims").join("subnets"))
            .unwrap()
            .count();
        assert_eq!(claimed, 32);
    }

    fn scratch_runtime(scratch: &std::path::Path) -> Runtime {
        Runtime {
            state_dir: scratch.join("state"),
            pool: [10, 251],
            max_nodes: 64,
            flavors: std::collections::HashMap::new(),
            locks: std::sync::Arc::default(),
            authz_binary: PathBuf::from("unused"),
            max_pids_per_node: 64,
            claims: std::sync::Arc::new(HostClaims::scratch(scratch)),
            metrics: Default::default(),
            autoscaler: Default::default(),
        }
    }

    /// Two magnumd on one state directory (two runtimes with their own in-process locks):
    /// while one holds a cluster, the other's health monitor keeps off it and its operation
    /// waits.
    #[tokio::test]
    async fn a_cluster_held_by_one_process_is_left_alone_by_another() {
        let scratch = tempfile::tempdir().unwrap();
        let (first, second) = (
            scratch_runtime(scratch.path()),
            scratch_runtime(scratch.path()),
        );
        let cluster = Uuid::new_v4();
        // No records yet: nothing to keep the monitor off.
        assert!(second.try_hold_cluster(cluster).is_some());
        let held = first.hold_cluster(cluster).await.unwrap();
        assert!(
            first.try_hold_cluster(cluster).is_none(),
            "held in this process"
        );
        assert!(
            second.try_hold_cluster(cluster).is_none(),
            "held on this host"
        );
        let waiting = tokio::spawn(async move {
            let started = Instant::now();
            let _held = second.hold_cluster(cluster).await.unwrap();
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "the other process's operation waits"
        );
        drop(held);
        let waited = waiting.await.unwrap();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(first.try_hold_cluster(cluster).is_some(), "let go");
    }

    #[test]
    fn node_host_names_fit_in_63_bytes() {
        assert_eq!(node_hostname("web", "n1"), "web-n1");
        let long = "c".repeat(242);
        let name = node_hostname(&long, "n12");
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("c-n12"));
    }
}
