//! The autoscaler's look at one cluster: its swarm read from a running manager's Docker API,
//! planned by `crate::autoscaler`.

use std::collections::HashMap;
use std::sync::Mutex;

use magnum_driver::Proposal;

use super::*;
use crate::autoscaler::{plan, ScaledGroup, SwarmView, Timings, Watch};

impl Runtime {
    /// Whether the cluster has a nodegroup the autoscaler looks after (as of its last change).
    pub fn is_autoscaled(&self, cluster: Uuid) -> bool {
        self.load(cluster).is_some_and(|state| {
            state
                .groups
                .iter()
                .any(|group| group.autoscaled && !group.master)
        })
    }

    /// What the cluster's workload asks of its autoscaled nodegroups now. Nothing while an
    /// operation holds the cluster or it is being deleted, or when no manager answers.
    pub async fn autoscale_look(
        &self,
        cluster: Uuid,
        watches: &Mutex<HashMap<Uuid, Watch>>,
    ) -> Vec<Proposal> {
        let Some(_held) = self.try_hold_cluster(cluster) else {
            return Vec::new();
        };
        if self.is_being_deleted(cluster) {
            return Vec::new();
        }
        let Some(state) = self.load(cluster) else {
            return Vec::new();
        };
        let groups: Vec<ScaledGroup> = state
            .groups
            .iter()
            .filter(|group| group.autoscaled && !group.master)
            .map(|group| ScaledGroup {
                uuid: group.uuid,
                name: group.name.clone(),
                labels: group.node_labels.iter().cloned().collect(),
                nodes: state
                    .nodes
                    .iter()
                    .filter(|node| node.nodegroup == group.uuid)
                    .filter_map(|node| Some((node.name.clone(), node.swarm_id.clone()?)))
                    .collect(),
            })
            .collect();
        if groups.is_empty() {
            return Vec::new();
        }
        let Some(manager) = self.live_manager(cluster, &state, "") else {
            return Vec::new();
        };
        let socket = Self::run_dir(cluster, &manager.name).join("docker.sock");
        let read = async {
            let nodes = docker_api::get(&socket, "/nodes").await?;
            let services = docker_api::get(&socket, "/services").await?;
            let tasks = docker_api::get(&socket, "/tasks").await?;
            Ok::<_, String>(SwarmView::from_api(&nodes, &services, &tasks))
        };
        let view = match read.await {
            Ok(view) => view,
            Err(error) => {
                tracing::debug!(cluster.id = %cluster, %error, "the autoscaler cannot read the swarm");
                return Vec::new();
            }
        };
        let room = self.max_nodes.saturating_sub(self.nodes_on_host());
        let timings = Timings {
            scale_out_delay: Duration::from_secs(self.autoscaler.scale_out_delay),
            scale_in_idle: Duration::from_secs(self.autoscaler.scale_in_idle),
        };
        let mut watches = watches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let watch = watches.entry(cluster).or_default();
        plan(&view, &groups, watch, timings, room, Instant::now())
    }
}
