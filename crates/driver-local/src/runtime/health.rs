//! The health monitor's look at one cluster, and auto-healing: a dead node is restarted on
//! its data; a node that stays broken after that (its dockerd dies again soon after, the
//! restart fails, it is still not Ready a while after), or whose network namespace is gone,
//! is proposed for replacement (a new node of its nodegroup, the old one removed), which the
//! domain decides on and an operation carries out. Nothing is replaced while the swarm lacks
//! its quorum: a cluster whose managers are mostly gone is reported UNHEALTHY with that reason.

use std::collections::HashMap;
use std::sync::Mutex;

use magnum_driver::Quorum;

use super::*;

/// A node restarted by auto-healing that dies again within this time is crash-looping: it
/// is replaced instead of restarted again.
pub(crate) const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
/// How long a running node may stay not Ready in its managers' view before auto-healing
/// restarts it, and after that restart before it is replaced.
pub(crate) const NOT_READY_GRACE: Duration = Duration::from_secs(30);
/// How often a replacement still needed is proposed again (the domain declines while the
/// cluster is busy).
pub(crate) const REPROPOSE_AFTER: Duration = Duration::from_secs(30);

/// What is wrong with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Its first process is gone (dockerd died).
    Dead,
    /// Its network namespace no longer exists: it cannot be reached or restarted in place.
    NamespaceGone,
    /// It runs, but its managers do not see it Ready.
    NotReady,
}

/// What the health monitor saw of one cluster.
pub struct HealthReport {
    pub status: magnum_domain::cluster::HealthStatus,
    pub reason: serde_json::Map<String, serde_json::Value>,
    /// A node is broken and the cluster asked for auto-healing.
    pub needs_healing: bool,
    /// The nodes that are not as they should be.
    pub broken: Vec<(String, Broken)>,
    /// The swarm's managers: how many, how many run.
    pub quorum: Quorum,
}

/// What auto-healing did and what it asks for.
#[derive(Debug, Default)]
pub struct Healing {
    pub events: Vec<ClusterEvent>,
    /// Nodes to replace: (nodegroup, node, why).
    pub replace: Vec<(Uuid, String, String)>,
}

/// What auto-healing remembers of a node between looks.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeHealing {
    restarted_at: Option<Instant>,
    not_ready_since: Option<Instant>,
    proposed_at: Option<Instant>,
}

/// Per (cluster, node). Bounded by the nodes of the clusters watched: entries of nodes that
/// are well and whose last restart is older than [`CRASH_LOOP_WINDOW`] are dropped.
pub(crate) type HealMemory = HashMap<(Uuid, String), NodeHealing>;

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Forgets what no longer matters of `cluster`'s nodes: those well now lose their not-Ready
/// clock and proposal; those well and not restarted lately, and those gone, are dropped.
pub(crate) fn settle(
    memory: &Mutex<HealMemory>,
    cluster: Uuid,
    report: &HealthReport,
    nodes: &[String],
    now: Instant,
) {
    let mut memory = locked(memory);
    memory.retain(|(owner, node), healing| {
        if *owner != cluster {
            return true;
        }
        if !nodes.contains(node) {
            return false;
        }
        if report.broken.iter().any(|(broken, _)| broken == node) {
            return true;
        }
        healing.not_ready_since = None;
        healing.proposed_at = None;
        healing
            .restarted_at
            .is_some_and(|at| now.duration_since(at) < CRASH_LOOP_WINDOW)
    });
}

impl Runtime {
    /// Whether the node's network namespace exists (`ip netns` names it under /run/netns).
    fn namespace_exists(cluster: Uuid, node: &str) -> bool {
        std::path::Path::new("/run/netns")
            .join(Self::netns(cluster, node))
            .exists()
    }

    /// The cluster's health from its managers' view and its node processes, and whether a
    /// node is broken in a cluster that asked for auto-healing (see [`Runtime::heal`]).
    /// `None` while an operation changes the cluster or it has no nodes yet.
    pub async fn check_health(&self, cluster: Uuid) -> Option<HealthReport> {
        use magnum_domain::cluster::HealthStatus;
        use serde_json::Value;
        // An operation changing the cluster has the lock: its nodes are in flux.
        let _held = self.try_hold_cluster(cluster)?;
        if self.is_being_deleted(cluster) {
            return None;
        }
        let state = self.load(cluster)?;
        if state.nodes.is_empty() || state.nodes.iter().any(|node| node.swarm_id.is_none()) {
            return None;
        }
        for node in &state.nodes {
            self.sandbox(cluster, &node.name, "").trim_log();
        }
        let mut reason = serde_json::Map::new();
        let manager = state
            .nodes
            .iter()
            .find(|node| node.role == "master" && self.node_pid(cluster, &node.name).is_some());
        let listing = match manager {
            Some(manager) => {
                let listed = self.docker(
                    cluster,
                    &manager.name,
                    &["node", "ls", "--format", "{{.ID}} {{.Status}}"],
                );
                // Dropped at the deadline, the command is killed (kill_on_drop).
                match tokio::time::timeout(HEALTH_COMMAND_TIMEOUT, listed).await {
                    Ok(listed) => listed.map_err(|error| error.to_string()),
                    Err(_) => Err(format!(
                        "manager {} did not list the nodes within {} s",
                        manager.name,
                        HEALTH_COMMAND_TIMEOUT.as_secs()
                    )),
                }
            }
            None => Err("no manager is running".to_owned()),
        };
        let api_ok = listing.is_ok();
        reason.insert(
            "api".to_owned(),
            Value::String(match &listing {
                Ok(_) => "ok".to_owned(),
                Err(error) => error.clone(),
            }),
        );
        let listing = listing.unwrap_or_default();
        let mut broken = Vec::new();
        let (mut managers, mut running_managers) = (0, 0);
        for node in &state.nodes {
            let id = node.swarm_id.as_deref().unwrap_or("-");
            let listed_ready = listing.lines().any(|line| line == format!("{id} Ready"));
            let condition = if !Self::namespace_exists(cluster, &node.name) {
                Some(Broken::NamespaceGone)
            } else if self.node_pid(cluster, &node.name).is_none() {
                Some(Broken::Dead)
            } else if api_ok && !listed_ready {
                Some(Broken::NotReady)
            } else {
                None
            };
            let ready = condition.is_none() && listed_ready;
            if node.role == "master" {
                managers += 1;
                // Without an answer from the managers, a running manager counts: whether
                // the raft has a leader is for the managers to say once they answer.
                running_managers += i64::from(condition.is_none());
            }
            if let Some(condition) = condition {
                broken.push((node.name.clone(), condition));
            }
            reason.insert(
                format!("{}-{}.Ready", state.name, node.name),
                Value::String(if ready { "True" } else { "False" }.to_owned()),
            );
        }
        let quorum = Quorum {
            managers,
            reachable: running_managers,
        };
        if managers > 0 && !quorum.holds() {
            reason.insert(
                "quorum".to_owned(),
                Value::String(format!(
                    "lost: {running_managers} of {managers} managers running; nothing is \
                     replaced until most of them are back"
                )),
            );
        }
        let status = if api_ok && broken.is_empty() && quorum.holds() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        Some(HealthReport {
            status,
            reason,
            needs_healing: state.auto_healing && !broken.is_empty(),
            broken,
            quorum,
        })
    }

    /// The host PIDs of the cluster's running nodes, by node name.
    pub fn node_pids(&self, cluster: Uuid) -> Vec<(String, i32)> {
        let Some(state) = self.load(cluster) else {
            return Vec::new();
        };
        state
            .nodes
            .iter()
            .filter_map(|node| Some((node.name.clone(), self.node_pid(cluster, &node.name)?)))
            .collect()
    }

    /// The names of the cluster's nodes.
    pub fn node_names(&self, cluster: Uuid) -> Vec<String> {
        self.load(cluster)
            .map(|state| state.nodes.into_iter().map(|node| node.name).collect())
            .unwrap_or_default()
    }

    /// Heals the `broken` nodes of a cluster that asked for it: a dead node is restarted on
    /// its data, a running node not Ready for [`NOT_READY_GRACE`] too; a node that stays
    /// broken after that, or whose network namespace is gone, is asked to be replaced. The
    /// events say what was done. Nothing while an operation holds the cluster or it is being
    /// deleted (the operation deals with its nodes).
    pub async fn heal(
        &self,
        cluster: Uuid,
        broken: &[(String, Broken)],
        memory: &Mutex<HealMemory>,
    ) -> Healing {
        let mut healing = Healing::default();
        let Some(_held) = self.try_hold_cluster(cluster) else {
            return healing;
        };
        if self.is_being_deleted(cluster) {
            return healing;
        }
        let Some(state) = self.load(cluster) else {
            return healing;
        };
        if !state.auto_healing {
            return healing;
        }
        for (name, condition) in broken {
            let Some(node) = state.nodes.iter().find(|node| &node.name == name) else {
                continue;
            };
            let now = Instant::now();
            let remembered = locked(memory)
                .entry((cluster, name.clone()))
                .or_default()
                .clone();
            let replace_because = |why: String| (node.nodegroup, name.clone(), why);
            // Once a node is to be replaced, it stays so (proposed again now and then).
            if let Some(proposed) = remembered.proposed_at {
                if now.duration_since(proposed) >= REPROPOSE_AFTER {
                    healing.replace.push(replace_because(
                        "it is still broken after auto-healing asked to replace it".to_owned(),
                    ));
                }
                continue;
            }
            let restarted_lately = remembered
                .restarted_at
                .filter(|at| now.duration_since(*at) < CRASH_LOOP_WINDOW);
            let restart = match condition {
                Broken::NamespaceGone => {
                    healing
                        .replace
                        .push(replace_because("its network namespace is gone".to_owned()));
                    false
                }
                Broken::Dead => match restarted_lately {
                    Some(at) => {
                        healing.replace.push(replace_because(format!(
                            "its dockerd died again {} s after auto-healing restarted it",
                            now.duration_since(at).as_secs()
                        )));
                        false
                    }
                    None => true,
                },
                Broken::NotReady => {
                    let since = remembered.not_ready_since.unwrap_or(now);
                    locked(memory)
                        .entry((cluster, name.clone()))
                        .or_default()
                        .not_ready_since = Some(since);
                    let restarted_since = remembered.restarted_at.is_some_and(|at| at >= since);
                    if now.duration_since(since) < NOT_READY_GRACE {
                        false
                    } else if restarted_since {
                        healing.replace.push(replace_because(format!(
                            "it is still not Ready {} s after auto-healing restarted it",
                            now.duration_since(since).as_secs()
                        )));
                        false
                    } else {
                        true
                    }
                }
            };
            if !restart {
                continue;
            }
            tracing::warn!(cluster.id = %cluster, node = %node.name, ?condition, "restarting a broken node (auto-healing)");
            let hostname = node_hostname(&state.name, &node.name);
            let restarted = async {
                if *condition == Broken::NotReady {
                    // Running but unreachable (frozen, cut off): it does not answer a stop.
                    self.stop_node(cluster, &node.name, Duration::from_secs(5))
                        .await;
                }
                self.create_network(cluster, &node.name, &node.address)
                    .await?;
                self.launch_dockerd(cluster, node, state.tls, &hostname)
                    .await
            };
            let outcome = restarted.await;
            {
                let mut memory = locked(memory);
                let entry = memory.entry((cluster, name.clone())).or_default();
                let at = Instant::now();
                entry.restarted_at = Some(at);
                // A node restarted for not being Ready gets its grace again, from the restart.
                if entry.not_ready_since.is_some() {
                    entry.not_ready_since = Some(at);
                }
            }
            match outcome {
                Ok(()) => healing.events.push(
                    ClusterEvent::warning(
                        "NodeRestarted",
                        match condition {
                            Broken::NotReady => format!(
                                "Auto-healing restarted node {} after it was not Ready for {} s.",
                                node.name,
                                NOT_READY_GRACE.as_secs()
                            ),
                            _ => format!(
                                "Auto-healing restarted node {} after its dockerd died.",
                                node.name
                            ),
                        },
                    )
                    .on_node(&node.name),
                ),
                Err(error) => {
                    tracing::warn!(cluster.id = %cluster, node = %node.name, %error, "auto-healing could not restart a node");
                    healing.events.push(
                        ClusterEvent::warning(
                            "NodeHealFailed",
                            format!("Auto-healing could not restart node {}: {error}", node.name),
                        )
                        .on_node(&node.name),
                    );
                    healing
                        .replace
                        .push(replace_because(format!("restarting it failed: {error}")));
                }
            }
        }
        let now = Instant::now();
        let mut memory = locked(memory);
        for (_, node, _) in &healing.replace {
            memory
                .entry((cluster, node.clone()))
                .or_default()
                .proposed_at = Some(now);
        }
        healing
    }
}
