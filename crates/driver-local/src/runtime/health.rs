//! The health monitor's look at one cluster, and auto-healing.

use super::*;

impl Runtime {
    /// The cluster's health from its managers' view and its node processes, and whether a
    /// node is down in a cluster that asked for auto-healing (see [`Runtime::heal`]). `None`
    /// while an operation changes the cluster or it has no nodes yet.
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
        let mut all_ready = true;
        for node in &state.nodes {
            let id = node.swarm_id.as_deref().unwrap_or("-");
            let ready = self.node_pid(cluster, &node.name).is_some()
                && listing.lines().any(|line| line == format!("{id} Ready"));
            all_ready &= ready;
            reason.insert(
                format!("{}-{}.Ready", state.name, node.name),
                Value::String(if ready { "True" } else { "False" }.to_owned()),
            );
        }
        let status = if api_ok && all_ready {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        let needs_healing = state.auto_healing
            && status == HealthStatus::Unhealthy
            && state
                .nodes
                .iter()
                .any(|node| self.node_pid(cluster, &node.name).is_none());
        Some(HealthReport {
            status,
            reason,
            needs_healing,
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

    /// Restarts the nodes whose dockerd died, when the cluster asked for auto-healing; the
    /// events say what was done. Nothing while an operation holds the cluster or it is being
    /// deleted (the operation deals with its nodes).
    pub async fn heal(&self, cluster: Uuid) -> Vec<ClusterEvent> {
        let Some(_held) = self.try_hold_cluster(cluster) else {
            return Vec::new();
        };
        if self.is_being_deleted(cluster) {
            return Vec::new();
        }
        let Some(state) = self.load(cluster) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        if !state.auto_healing {
            return events;
        }
        for node in &state.nodes {
            if self.node_pid(cluster, &node.name).is_some() {
                continue;
            }
            tracing::warn!(cluster.id = %cluster, node = %node.name, "node dockerd is down; restarting it (auto-healing)");
            let hostname = node_hostname(&state.name, &node.name);
            let restarted = async {
                self.create_network(cluster, &node.name, &node.address)
                    .await?;
                self.launch_dockerd(cluster, node, state.tls, &hostname)
                    .await
            };
            match restarted.await {
                Ok(()) => events.push(
                    ClusterEvent::warning(
                        "NodeRestarted",
                        format!(
                            "Auto-healing restarted node {} after its dockerd died.",
                            node.name
                        ),
                    )
                    .on_node(&node.name),
                ),
                Err(error) => {
                    tracing::warn!(cluster.id = %cluster, node = %node.name, %error, "auto-healing failed");
                    events.push(
                        ClusterEvent::warning(
                            "NodeHealFailed",
                            format!("Auto-healing could not restart node {}: {error}", node.name),
                        )
                        .on_node(&node.name),
                    );
                }
            }
        }
        events
    }
}

/// What the health monitor saw of one cluster.
pub struct HealthReport {
    pub status: magnum_domain::cluster::HealthStatus,
    pub reason: serde_json::Map<String, serde_json::Value>,
    /// A node is down and the cluster asked for auto-healing.
    pub needs_healing: bool,
}
