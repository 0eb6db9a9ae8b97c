//! Changes a cluster asks for on its own: autoscaling a worker nodegroup from its workload,
//! and replacing nodes that auto-healing could not bring back.
//!
//! A driver that watches a cluster (the local driver's monitor, under the cluster's monitor
//! lease) only *proposes* ([`Proposal`]); the domain decides here, on the cluster as stored,
//! whether the change is made ([`ClusterAggregate::decide`]). A decision is an ordinary
//! change through the one commit path: the nodegroup's (and so the cluster's) `node_count`,
//! a status reason saying why, events, and an operation the conductor runs (and resumes
//! after a crash) like any other. The rules:
//!
//! * Autoscaling acts only on worker nodegroups whose `auto_scaling_enabled` label is true
//!   (the nodegroup's own label, else the cluster's: upstream's label), that have a maximum
//!   (`max_node_count`, or for the default worker its `max_node_count` label, as upstream's
//!   cluster-autoscaler requires), within `min_node_count`..maximum. The master nodegroup is
//!   never autoscaled.
//! * Only a cluster at rest, with no operation queued or running and its nodegroup settled.
//! * A user's resize wins: within the cool-down after the last resize a user made of the
//!   nodegroup (`PATCH node_count`, `actions/resize`) ended, the autoscaler leaves it alone, so
//!   it never undoes one. After one of its own changes failed, it waits the cool-down as well.
//! * A replacement needs `auto_healing_enabled` and the swarm's quorum: more than half of
//!   its managers reachable without the nodes replaced. A swarm that lost its quorum is never
//!   "healed" into a split brain.
//! * Replacements are budgeted: at most [`MAX_REPLACEMENTS_PER_WINDOW`] of a nodegroup's
//!   within [`REPLACEMENT_WINDOW_SECONDS`] (whatever became of them), so that a sick host,
//!   or a workload that kills whatever node runs it, cannot churn nodes without end.

use uuid::Uuid;

use crate::aggregate::{operation, ChangeRefused, ClusterAggregate, Request};
use crate::cluster::{ClusterStatus, NodeGroup, StatusEvent};
use crate::event::{bounded_text, ClusterEvent};
use crate::labels::Labels;
use crate::operation::{Initiator, Operation, OperationKind, OperationParameters, OperationState};
use crate::time::Timestamp;

/// Who the operations of the autoscaler are recorded as (audit notifications).
pub const AUTOSCALER: &str = "magnum-autoscaler";
/// Who the operations of healing by replacement are recorded as.
pub const AUTO_HEALER: &str = "magnum-auto-healer";
/// The longest explanation a proposal carries into status reasons and events.
pub const MAX_WHY_CHARS: usize = 500;
/// The most nodes one proposal names.
pub const MAX_PROPOSED_NODES: usize = 100;
/// How many of a cluster's newest operations the history is read from.
pub const HISTORY_OPERATIONS: i64 = 50;
/// The most replacements of one nodegroup's nodes started within
/// [`REPLACEMENT_WINDOW_SECONDS`].
pub const MAX_REPLACEMENTS_PER_WINDOW: usize = 3;
/// The window the replacement budget counts over: an hour.
pub const REPLACEMENT_WINDOW_SECONDS: i64 = 3_600;
/// The most replacement operations of a cluster read for the budget: more than every
/// nodegroup's budget together could start in a window.
pub const MAX_REPLACEMENTS_READ: i64 = 1_000;

/// What a driver watching a cluster asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposal {
    /// `add` more nodes for work that waits for room (`why`: which tasks, for how long).
    ScaleOut {
        nodegroup: Uuid,
        add: i64,
        why: String,
    },
    /// These nodes (names, best removed first) have been idle.
    ScaleIn {
        nodegroup: Uuid,
        nodes: Vec<String>,
        why: String,
    },
    /// These nodes stay broken: replace them with new ones of the same nodegroup.
    Replace {
        nodegroup: Uuid,
        nodes: Vec<String>,
        why: String,
        quorum: Quorum,
    },
}

impl Proposal {
    pub fn nodegroup(&self) -> Uuid {
        match self {
            Proposal::ScaleOut { nodegroup, .. }
            | Proposal::ScaleIn { nodegroup, .. }
            | Proposal::Replace { nodegroup, .. } => *nodegroup,
        }
    }
}

/// The swarm's managers as the driver sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    /// Managers in the swarm (the nodes replaced included).
    pub managers: i64,
    /// Managers running and reachable, not counting the nodes to be replaced.
    pub reachable: i64,
}

impl Quorum {
    /// Raft's rule: a majority of the managers must be reachable for the swarm to change.
    pub fn holds(self) -> bool {
        self.reachable.saturating_mul(2) > self.managers
    }
}

/// The operator's settings the decision follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long after a user's resize of a nodegroup (or a failed change of the autoscaler)
    /// the autoscaler leaves the nodegroup alone.
    pub cool_down_seconds: i64,
}

/// What the cluster's recent operations say about a nodegroup's resizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Per nodegroup, when the last resize a user asked for ended (or was asked for, while
    /// it runs: the decision then declines anyway).
    user_resizes: Vec<(Uuid, Timestamp)>,
    /// Per nodegroup, when the autoscaler's last change that failed ended.
    failed_autoscales: Vec<(Uuid, Timestamp)>,
    /// When each replacement of a nodegroup's nodes was asked for.
    replacements: Vec<(Uuid, Timestamp)>,
}

impl History {
    /// Read off the cluster's operations (any order, each once): its [`HISTORY_OPERATIONS`]
    /// newest, and every replacement of the last [`REPLACEMENT_WINDOW_SECONDS`].
    pub fn from_operations(operations: &[Operation]) -> Self {
        let mut history = History::default();
        for past in operations {
            let parameters = OperationParameters::from_payload(&past.payload);
            let Some(nodegroup) = parameters.nodegroup else {
                continue;
            };
            match past.kind {
                // From its end: a resize that took a while still gets the whole cool-down.
                OperationKind::UpdateCluster | OperationKind::ResizeCluster => {
                    let ended = past.updated_at.unwrap_or(past.created_at);
                    keep_latest(&mut history.user_resizes, nodegroup, ended);
                }
                OperationKind::AutoscaleCluster if past.state == OperationState::Failed => {
                    let ended = past.updated_at.unwrap_or(past.created_at);
                    keep_latest(&mut history.failed_autoscales, nodegroup, ended);
                }
                OperationKind::ReplaceNodes => {
                    history.replacements.push((nodegroup, past.created_at));
                }
                _ => {}
            }
        }
        history
    }

    pub fn last_user_resize(&self, nodegroup: Uuid) -> Option<Timestamp> {
        latest(&self.user_resizes, nodegroup)
    }

    pub fn last_failed_autoscale(&self, nodegroup: Uuid) -> Option<Timestamp> {
        latest(&self.failed_autoscales, nodegroup)
    }

    /// How many replacements of the nodegroup's nodes were asked for after `since`.
    pub fn replacements_since(&self, nodegroup: Uuid, since: Timestamp) -> usize {
        self.replacements
            .iter()
            .filter(|(uuid, at)| *uuid == nodegroup && at.unix_seconds() > since.unix_seconds())
            .count()
    }
}

fn keep_latest(entries: &mut Vec<(Uuid, Timestamp)>, nodegroup: Uuid, at: Timestamp) {
    match entries.iter_mut().find(|(uuid, _)| *uuid == nodegroup) {
        Some((_, known)) if known.unix_seconds() >= at.unix_seconds() => {}
        Some((_, known)) => *known = at,
        None => entries.push((nodegroup, at)),
    }
}

fn latest(entries: &[(Uuid, Timestamp)], nodegroup: Uuid) -> Option<Timestamp> {
    entries
        .iter()
        .find(|(uuid, _)| *uuid == nodegroup)
        .map(|(_, at)| *at)
}

/// Why a proposal was not taken up. Not an error anyone sees: the conductor logs it, and
/// the driver proposes again at its next look if the reason still holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Declined {
    #[error("nodegroup {0} is not part of the cluster")]
    UnknownNodegroup(Uuid),
    #[error("nodegroup {0} is a master nodegroup: masters are never autoscaled")]
    MasterNodegroup(String),
    #[error("autoscaling is not enabled for nodegroup {0} (label auto_scaling_enabled)")]
    AutoscalingDisabled(String),
    #[error("nodegroup {0} has no max_node_count: it is not autoscaled")]
    NoMaximum(String),
    #[error("auto-healing is not enabled for the cluster (label auto_healing_enabled)")]
    HealingDisabled,
    #[error("the cluster is {0}, not at rest")]
    NotAtRest(ClusterStatus),
    #[error("an operation of the cluster is queued or running")]
    OperationUnderWay,
    #[error("nodegroup {name} is {status}")]
    NodegroupBusy { name: String, status: ClusterStatus },
    #[error("nodegroup {name} was resized by its user {ago} s ago: the autoscaler leaves it alone for {cool_down} s")]
    UserResizeCoolDown {
        name: String,
        ago: i64,
        cool_down: i64,
    },
    #[error("the autoscaler's last change of nodegroup {name} failed {ago} s ago: it waits {cool_down} s")]
    FailureCoolDown {
        name: String,
        ago: i64,
        cool_down: i64,
    },
    #[error("nodegroup {name} is at its maximum of {max} nodes")]
    AtMaximum { name: String, max: i64 },
    #[error("nodegroup {name} is at its minimum of {min} nodes")]
    AtMinimum { name: String, min: i64 },
    #[error("the proposal asks for no change")]
    NothingProposed,
    #[error("no node is named, or one is named that nodegroup {0} does not have")]
    NodesNotInNodegroup(String),
    #[error("the swarm lost its quorum ({reachable} of {managers} managers reachable): nothing is replaced")]
    NoQuorum { managers: i64, reachable: i64 },
    #[error("nodegroup {name} had {count} node replacements in the last {window} s: no more until the oldest is older")]
    ReplacementBudgetSpent {
        name: String,
        count: usize,
        window: i64,
    },
    #[error(transparent)]
    Refused(#[from] ChangeRefused),
}

/// A label read as a boolean: `true`, `1`, `yes` (any case); anything else is false.
pub fn label_is_true(labels: &Labels, name: &str) -> bool {
    labels.get(name).is_some_and(|value| {
        matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "true" | "1" | "yes"
        )
    })
}

/// Whether a nodegroup of `cluster_labels`' cluster is autoscaled: its own
/// `auto_scaling_enabled` label when it has one, else the cluster's; never a master.
pub fn autoscaling_enabled(cluster_labels: &Labels, nodegroup: &NodeGroup) -> bool {
    if nodegroup.is_master() {
        return false;
    }
    if nodegroup.labels.get("auto_scaling_enabled").is_some() {
        label_is_true(&nodegroup.labels, "auto_scaling_enabled")
    } else {
        label_is_true(cluster_labels, "auto_scaling_enabled")
    }
}

fn nodes_text(count: i64) -> String {
    if count == 1 {
        "1 node".to_owned()
    } else {
        format!("{count} nodes")
    }
}

impl ClusterAggregate {
    /// Decides on a driver's proposal (see the module's rules) and, when it is taken up,
    /// starts the change: the nodegroup's new count, the reason, the events and the
    /// operation. Returns the operation's kind.
    pub fn decide(
        &mut self,
        proposal: &Proposal,
        policy: Policy,
        history: &History,
        now: Timestamp,
    ) -> Result<OperationKind, Declined> {
        let uuid = proposal.nodegroup();
        let nodegroup = self
            .nodegroups
            .iter()
            .find(|nodegroup| nodegroup.uuid == uuid)
            .cloned()
            .ok_or(Declined::UnknownNodegroup(uuid))?;
        if !self.cluster.status.is_complete() {
            return Err(Declined::NotAtRest(self.cluster.status));
        }
        if !self.unfinished_operations.is_empty() {
            return Err(Declined::OperationUnderWay);
        }
        if nodegroup.status.is_in_progress() {
            return Err(Declined::NodegroupBusy {
                name: nodegroup.name.clone(),
                status: nodegroup.status,
            });
        }
        match proposal {
            Proposal::ScaleOut { add, why, .. } => {
                if *add <= 0 {
                    return Err(Declined::NothingProposed);
                }
                let maximum = self.autoscaling_bounds(&nodegroup, policy, history, now)?;
                let target = nodegroup.node_count.saturating_add(*add).min(maximum);
                if target <= nodegroup.node_count {
                    return Err(Declined::AtMaximum {
                        name: nodegroup.name,
                        max: maximum,
                    });
                }
                let why = bounded_text(why, MAX_WHY_CHARS);
                let added = target - nodegroup.node_count;
                let event = ClusterEvent::normal(
                    "AutoscaledOut",
                    format!(
                        "The autoscaler adds {} to nodegroup {} ({} → {}): {why}",
                        nodes_text(added),
                        nodegroup.name,
                        nodegroup.node_count,
                        target
                    ),
                )
                .in_nodegroup(&nodegroup.name);
                self.start_automatic_change(
                    &nodegroup,
                    target,
                    Vec::new(),
                    AutomaticChange {
                        kind: OperationKind::AutoscaleCluster,
                        initiator: AUTOSCALER,
                        starting: format!(
                            "Autoscaling nodegroup {} from {} to {}: {why}",
                            nodegroup.name,
                            nodegroup.node_count,
                            nodes_text(target)
                        ),
                        done: format!(
                            "Autoscaled nodegroup {} from {} to {}: {why}",
                            nodegroup.name,
                            nodegroup.node_count,
                            nodes_text(target)
                        ),
                        rollback: true,
                        events: vec![event],
                    },
                    now,
                )?;
                Ok(OperationKind::AutoscaleCluster)
            }
            Proposal::ScaleIn { nodes, why, .. } => {
                self.autoscaling_bounds(&nodegroup, policy, history, now)?;
                check_nodes(&nodegroup, nodes)?;
                let target = nodegroup
                    .node_count
                    .saturating_sub(i64::try_from(nodes.len()).unwrap_or(i64::MAX))
                    .max(nodegroup.min_node_count);
                if target >= nodegroup.node_count {
                    return Err(Declined::AtMinimum {
                        name: nodegroup.name,
                        min: nodegroup.min_node_count,
                    });
                }
                let removed: Vec<String> = nodes
                    .iter()
                    .take(usize::try_from(nodegroup.node_count - target).unwrap_or(0))
                    .cloned()
                    .collect();
                let why = bounded_text(why, MAX_WHY_CHARS);
                let event = ClusterEvent::normal(
                    "AutoscaledIn",
                    format!(
                        "The autoscaler removes {} of nodegroup {} ({} → {}): {why}",
                        removed.join(", "),
                        nodegroup.name,
                        nodegroup.node_count,
                        target
                    ),
                )
                .in_nodegroup(&nodegroup.name);
                self.start_automatic_change(
                    &nodegroup,
                    target,
                    removed.clone(),
                    AutomaticChange {
                        kind: OperationKind::AutoscaleCluster,
                        initiator: AUTOSCALER,
                        starting: format!(
                            "Autoscaling nodegroup {} from {} to {} (removing {}): {why}",
                            nodegroup.name,
                            nodegroup.node_count,
                            nodes_text(target),
                            removed.join(", ")
                        ),
                        done: format!(
                            "Autoscaled nodegroup {} from {} to {} (removed {}): {why}",
                            nodegroup.name,
                            nodegroup.node_count,
                            nodes_text(target),
                            removed.join(", ")
                        ),
                        rollback: true,
                        events: vec![event],
                    },
                    now,
                )?;
                Ok(OperationKind::AutoscaleCluster)
            }
            Proposal::Replace {
                nodes, why, quorum, ..
            } => {
                if !label_is_true(&self.cluster.labels, "auto_healing_enabled") {
                    return Err(Declined::HealingDisabled);
                }
                if !quorum.holds() {
                    return Err(Declined::NoQuorum {
                        managers: quorum.managers,
                        reachable: quorum.reachable,
                    });
                }
                let window_start =
                    Timestamp::from_unix_seconds(now.unix_seconds() - REPLACEMENT_WINDOW_SECONDS);
                let count = history.replacements_since(nodegroup.uuid, window_start);
                if count >= MAX_REPLACEMENTS_PER_WINDOW {
                    return Err(Declined::ReplacementBudgetSpent {
                        name: nodegroup.name.clone(),
                        count,
                        window: REPLACEMENT_WINDOW_SECONDS,
                    });
                }
                check_nodes(&nodegroup, nodes)?;
                let why = bounded_text(why, MAX_WHY_CHARS);
                let events = nodes
                    .iter()
                    .map(|node| {
                        ClusterEvent::warning(
                            "NodeReplacing",
                            format!(
                                "Auto-healing replaces node {node} of nodegroup {}: {why}",
                                nodegroup.name
                            ),
                        )
                        .in_nodegroup(&nodegroup.name)
                        .on_node(node)
                    })
                    .collect();
                let listed = nodes.join(", ");
                self.start_automatic_change(
                    &nodegroup,
                    nodegroup.node_count,
                    nodes.clone(),
                    AutomaticChange {
                        kind: OperationKind::ReplaceNodes,
                        initiator: AUTO_HEALER,
                        starting: format!(
                            "Auto-healing: replacing {listed} of nodegroup {}: {why}",
                            nodegroup.name
                        ),
                        done: format!(
                            "Auto-healing replaced {listed} of nodegroup {}: {why}",
                            nodegroup.name
                        ),
                        // Rolling back would only bring the broken node back.
                        rollback: false,
                        events,
                    },
                    now,
                )?;
                Ok(OperationKind::ReplaceNodes)
            }
        }
    }

    /// The nodegroup's autoscaling maximum, when the autoscaler may change it now.
    fn autoscaling_bounds(
        &self,
        nodegroup: &NodeGroup,
        policy: Policy,
        history: &History,
        now: Timestamp,
    ) -> Result<i64, Declined> {
        if nodegroup.is_master() {
            return Err(Declined::MasterNodegroup(nodegroup.name.clone()));
        }
        if !autoscaling_enabled(&self.cluster.labels, nodegroup) {
            return Err(Declined::AutoscalingDisabled(nodegroup.name.clone()));
        }
        let maximum = nodegroup
            .autoscaling_maximum()
            .ok_or_else(|| Declined::NoMaximum(nodegroup.name.clone()))?;
        let cool_down = policy.cool_down_seconds.max(0);
        if let Some(resized) = history.last_user_resize(nodegroup.uuid) {
            let ago = now.unix_seconds() - resized.unix_seconds();
            if ago < cool_down {
                return Err(Declined::UserResizeCoolDown {
                    name: nodegroup.name.clone(),
                    ago,
                    cool_down,
                });
            }
        }
        if let Some(failed) = history.last_failed_autoscale(nodegroup.uuid) {
            let ago = now.unix_seconds() - failed.unix_seconds();
            if ago < cool_down {
                return Err(Declined::FailureCoolDown {
                    name: nodegroup.name.clone(),
                    ago,
                    cool_down,
                });
            }
        }
        Ok(maximum)
    }

    fn start_automatic_change(
        &mut self,
        nodegroup: &NodeGroup,
        target: i64,
        nodes_to_remove: Vec<String>,
        change: AutomaticChange,
        now: Timestamp,
    ) -> Result<(), ChangeRefused> {
        self.start(
            StatusEvent::ResizeStarted,
            Some(change.starting.clone()),
            now,
        )?;
        self.change_nodegroup(nodegroup.uuid, now, |stored| {
            stored.node_count = target;
        })?;
        self.nodegroup_mut(nodegroup.uuid)?.status_reason = Some(change.starting);
        let request = Request {
            initiator: Initiator {
                user_id: change.initiator.to_owned(),
                project_id: self.cluster.project_id.clone(),
            },
            now,
        };
        self.operation = Some(operation(
            &self.cluster,
            change.kind,
            &request,
            |parameters| {
                parameters.nodegroup = Some(nodegroup.uuid);
                parameters.nodes_to_remove = nodes_to_remove;
                parameters.previous_node_counts = vec![(nodegroup.uuid, nodegroup.node_count)];
                parameters.rollback = change.rollback;
                parameters.outcome_reason = Some(change.done);
            },
        ));
        for event in change.events {
            self.record(event);
        }
        Ok(())
    }
}

struct AutomaticChange {
    kind: OperationKind,
    initiator: &'static str,
    starting: String,
    done: String,
    rollback: bool,
    events: Vec<ClusterEvent>,
}

/// Nodes named by a proposal: some, not too many, none twice, and (by name) plausible members
/// of the nodegroup: fewer than it has.
fn check_nodes(nodegroup: &NodeGroup, nodes: &[String]) -> Result<(), Declined> {
    let mut distinct = nodes.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let count = i64::try_from(nodes.len()).unwrap_or(i64::MAX);
    if nodes.is_empty()
        || nodes.len() > MAX_PROPOSED_NODES
        || distinct.len() != nodes.len()
        || count > nodegroup.node_count
        || nodes.iter().any(|node| node.trim().is_empty())
    {
        return Err(Declined::NodesNotInNodegroup(nodegroup.name.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Cluster, NodeGroup};
    use crate::event::describe_change;
    use serde_json::Map;
    use ClusterStatus::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(seconds)
    }

    const MASTERS: u128 = 1;
    const WORKERS: u128 = 2;

    fn nodegroup(id: i64, name: &str, role: &str, count: i64) -> NodeGroup {
        NodeGroup {
            id,
            uuid: Uuid::from_u128(id as u128),
            cluster_uuid: Uuid::from_u128(99),
            project_id: "p1".to_owned(),
            name: name.to_owned(),
            docker_volume_size: None,
            labels: Labels::default(),
            flavor_id: None,
            image_id: None,
            node_addresses: Vec::new(),
            node_count: count,
            role: role.to_owned(),
            min_node_count: 0,
            max_node_count: None,
            is_default: true,
            stack_id: None,
            status: CreateComplete,
            status_reason: None,
            coe_version: None,
            node_labels: Map::new(),
            node_taints: Vec::new(),
            created_at: at(1_000),
            updated_at: None,
            version: 1,
        }
    }

    /// A cluster with autoscaling and auto-healing, a master and a default worker of 1 node
    /// bounded by its labels to 1..4, as a user creates it with `--labels`.
    fn autoscaled() -> ClusterAggregate {
        let mut labels = Labels::default();
        for (key, value) in [
            ("auto_scaling_enabled", "true"),
            ("auto_healing_enabled", "true"),
            ("min_node_count", "1"),
            ("max_node_count", "4"),
        ] {
            labels.insert(key, value);
        }
        let cluster = Cluster {
            id: 1,
            uuid: Uuid::from_u128(99),
            name: Some("c".to_owned()),
            project_id: "p1".to_owned(),
            user_id: "alice".to_owned(),
            cluster_template_id: Uuid::from_u128(7),
            keypair: None,
            docker_volume_size: None,
            labels: labels.clone(),
            master_flavor_id: None,
            flavor_id: None,
            create_timeout: None,
            discovery_url: None,
            fixed_network: None,
            fixed_subnet: None,
            floating_ip_enabled: false,
            master_lb_enabled: false,
            status: CreateComplete,
            status_reason: None,
            health_status: None,
            health_status_reason: Map::new(),
            stack_id: None,
            api_address: Some("tcp://10.0.0.2:2376".to_owned()),
            coe_version: None,
            container_version: None,
            node_count: 1,
            master_count: 1,
            node_addresses: Vec::new(),
            master_addresses: Vec::new(),
            created_at: at(1_000),
            updated_at: None,
            version: 3,
        };
        let mut master = nodegroup(1, "default-master", "master", 1);
        master.labels = labels.clone();
        let mut worker = nodegroup(2, "default-worker", "worker", 1);
        worker.labels = labels;
        worker.min_node_count = 1;
        ClusterAggregate::new(cluster, vec![master, worker])
    }

    fn policy() -> Policy {
        Policy {
            cool_down_seconds: 300,
        }
    }

    fn out(add: i64) -> Proposal {
        Proposal::ScaleOut {
            nodegroup: Uuid::from_u128(WORKERS),
            add,
            why: "2 tasks of service web pending for 31 s: no suitable node (insufficient resources on 2 nodes)".to_owned(),
        }
    }

    fn scale_in(nodes: &[&str]) -> Proposal {
        Proposal::ScaleIn {
            nodegroup: Uuid::from_u128(WORKERS),
            nodes: nodes.iter().map(|node| (*node).to_owned()).collect(),
            why: "idle for 600 s".to_owned(),
        }
    }

    fn parameters(of: &ClusterAggregate) -> OperationParameters {
        OperationParameters::from_payload(&of.operation.as_ref().expect("an operation").payload)
    }

    #[test]
    fn a_maximum_in_a_label_is_held_to_the_apis_bound_on_node_counts() {
        let mut worker = nodegroup(2, "default-worker", "worker", 1);
        worker
            .labels
            .insert("max_node_count", "9223372036854775807");
        assert_eq!(
            worker.autoscaling_maximum(),
            Some(crate::nodegroup::MAX_NODE_COUNT)
        );
        worker.labels.insert("max_node_count", "4");
        assert_eq!(worker.autoscaling_maximum(), Some(4));
        worker.labels.insert("max_node_count", "many");
        assert_eq!(worker.autoscaling_maximum(), None);
    }

    #[test]
    fn scale_out_is_an_operation_with_its_reason_and_events_and_stops_at_the_maximum() {
        let before = autoscaled();
        let mut after = before.clone();
        let kind = after
            .decide(&out(2), policy(), &History::default(), at(2_000))
            .unwrap();
        assert_eq!(kind, OperationKind::AutoscaleCluster);
        assert_eq!(after.cluster.status, UpdateInProgress);
        assert_eq!(after.nodegroups[1].node_count, 3);
        assert_eq!(after.nodegroups[1].status, UpdateInProgress);
        let reason = after.cluster.status_reason.clone().unwrap();
        assert!(
            reason.starts_with("Autoscaling nodegroup default-worker from 1 to 3 nodes: 2 tasks"),
            "{reason}"
        );
        assert_eq!(after.nodegroups[1].status_reason.as_deref(), Some(&*reason));
        let recorded = parameters(&after);
        assert_eq!(recorded.initiator.user_id, AUTOSCALER);
        assert_eq!(recorded.initiator.project_id, "p1");
        assert_eq!(recorded.nodegroup, Some(Uuid::from_u128(WORKERS)));
        assert_eq!(
            recorded.previous_node_counts,
            vec![(Uuid::from_u128(WORKERS), 1)]
        );
        assert!(recorded.rollback);
        // The events: the count, the autoscaler's why, the update.
        let told: Vec<String> = describe_change(&before, &after)
            .into_iter()
            .map(|event| event.reason)
            .collect();
        assert_eq!(told, ["ScaledOut", "AutoscaledOut", "UpdateStarted"]);
        // Success keeps the reason readable.
        after
            .succeed(
                crate::aggregate::Phase::Update,
                true,
                &Default::default(),
                &recorded,
                at(2_100),
            )
            .unwrap();
        let done = after.cluster.status_reason.clone().unwrap();
        assert!(
            done.starts_with("Autoscaled nodegroup default-worker from 1 to 3 nodes: "),
            "{done}"
        );
        assert_eq!(after.nodegroups[1].status_reason.as_deref(), Some(&*done));
        assert_eq!(
            after.nodegroups[0].status_reason, None,
            "only the autoscaled one"
        );
        assert_eq!(
            after.cluster.node_count, 1,
            "the store sums counts on commit"
        );

        // More than the maximum allows: up to it, and none once there.
        let mut capped = autoscaled();
        capped
            .decide(&out(10), policy(), &History::default(), at(2_000))
            .unwrap();
        assert_eq!(capped.nodegroups[1].node_count, 4);
        let mut full = autoscaled();
        full.nodegroups[1].node_count = 4;
        assert_eq!(
            full.decide(&out(1), policy(), &History::default(), at(2_000)),
            Err(Declined::AtMaximum {
                name: "default-worker".to_owned(),
                max: 4
            })
        );
        // Nothing to add: no change.
        let mut nothing = autoscaled();
        assert_eq!(
            nothing.decide(&out(0), policy(), &History::default(), at(2_000)),
            Err(Declined::NothingProposed)
        );
        assert_eq!(nothing, autoscaled());
    }

    #[test]
    fn scale_in_removes_the_named_nodes_never_below_the_minimum() {
        let mut grown = autoscaled();
        grown.nodegroups[1].node_count = 4;
        let mut shrunk = grown.clone();
        shrunk
            .decide(
                &scale_in(&["n5", "n4", "n3", "n2"]),
                policy(),
                &History::default(),
                at(2_000),
            )
            .unwrap();
        assert_eq!(shrunk.nodegroups[1].node_count, 1, "the minimum is 1");
        let recorded = parameters(&shrunk);
        assert_eq!(recorded.nodes_to_remove, ["n5", "n4", "n3"]);
        assert!(shrunk
            .cluster
            .status_reason
            .as_deref()
            .unwrap()
            .contains("(removing n5, n4, n3)"));
        let told: Vec<String> = describe_change(&grown, &shrunk)
            .into_iter()
            .map(|event| event.reason)
            .collect();
        assert_eq!(told, ["ScaledIn", "AutoscaledIn", "UpdateStarted"]);

        let mut at_minimum = autoscaled();
        assert_eq!(
            at_minimum.decide(&scale_in(&["n2"]), policy(), &History::default(), at(2_000)),
            Err(Declined::AtMinimum {
                name: "default-worker".to_owned(),
                min: 1
            })
        );
        // Bad input: no node, a node twice, more nodes than the nodegroup has.
        for nodes in [&[][..], &["n3", "n3"], &["n2", "n3", "n4", "n5", "n6"]] {
            let mut bad = grown.clone();
            assert_eq!(
                bad.decide(&scale_in(nodes), policy(), &History::default(), at(2_000)),
                Err(Declined::NodesNotInNodegroup("default-worker".to_owned())),
                "{nodes:?}"
            );
        }
    }

    #[test]
    fn masters_disabled_or_unbounded_nodegroups_are_never_autoscaled() {
        let to_masters = Proposal::ScaleOut {
            nodegroup: Uuid::from_u128(MASTERS),
            add: 2,
            why: "x".to_owned(),
        };
        let mut cluster = autoscaled();
        assert_eq!(
            cluster.decide(&to_masters, policy(), &History::default(), at(2_000)),
            Err(Declined::MasterNodegroup("default-master".to_owned()))
        );
        let remove_manager = Proposal::ScaleIn {
            nodegroup: Uuid::from_u128(MASTERS),
            nodes: vec!["n1".to_owned()],
            why: "x".to_owned(),
        };
        assert_eq!(
            cluster.decide(&remove_manager, policy(), &History::default(), at(2_000)),
            Err(Declined::MasterNodegroup("default-master".to_owned()))
        );
        // Without the label (or with it false on the nodegroup itself): not autoscaled.
        let mut disabled = autoscaled();
        disabled.nodegroups[1]
            .labels
            .insert("auto_scaling_enabled", "false");
        assert!(matches!(
            disabled.decide(&out(1), policy(), &History::default(), at(2_000)),
            Err(Declined::AutoscalingDisabled(_))
        ));
        let mut unlabelled = autoscaled();
        unlabelled.cluster.labels = Labels::default();
        unlabelled.nodegroups[1].labels = Labels::default();
        assert!(matches!(
            unlabelled.decide(&out(1), policy(), &History::default(), at(2_000)),
            Err(Declined::AutoscalingDisabled(_))
        ));
        // The nodegroup's own label wins over the cluster's, either way.
        let mut own = autoscaled();
        own.cluster.labels = Labels::default();
        own.nodegroups[1]
            .labels
            .insert("auto_scaling_enabled", "True");
        own.nodegroups[1].max_node_count = Some(2);
        own.decide(&out(3), policy(), &History::default(), at(2_000))
            .unwrap();
        assert_eq!(own.nodegroups[1].node_count, 2, "the field's maximum");
        let mut unbounded = autoscaled();
        unbounded.nodegroups[1].labels = Labels::default();
        unbounded.nodegroups[1]
            .labels
            .insert("auto_scaling_enabled", "true");
        assert_eq!(
            unbounded.decide(&out(1), policy(), &History::default(), at(2_000)),
            Err(Declined::NoMaximum("default-worker".to_owned()))
        );
        let mut unknown = autoscaled();
        let stray = Proposal::ScaleOut {
            nodegroup: Uuid::from_u128(42),
            add: 1,
            why: "x".to_owned(),
        };
        assert_eq!(
            unknown.decide(&stray, policy(), &History::default(), at(2_000)),
            Err(Declined::UnknownNodegroup(Uuid::from_u128(42)))
        );
    }

    #[test]
    fn only_a_cluster_at_rest_without_queued_work_is_changed() {
        for status in ClusterStatus::ALL {
            let mut cluster = autoscaled();
            cluster.cluster.status = status;
            let decided = cluster.decide(&out(1), policy(), &History::default(), at(2_000));
            assert_eq!(decided.is_ok(), status.is_complete(), "{status}");
            if !status.is_complete() {
                assert_eq!(decided, Err(Declined::NotAtRest(status)));
            }
        }
        let mut queued = autoscaled();
        queued.unfinished_operations = vec![12];
        assert_eq!(
            queued.decide(&out(1), policy(), &History::default(), at(2_000)),
            Err(Declined::OperationUnderWay)
        );
        let mut settling = autoscaled();
        settling.nodegroups[1].status = UpdateInProgress;
        assert!(matches!(
            settling.decide(&out(1), policy(), &History::default(), at(2_000)),
            Err(Declined::NodegroupBusy { .. })
        ));
    }

    fn past(
        kind: OperationKind,
        state: OperationState,
        nodegroup: u128,
        created: i64,
    ) -> Operation {
        let parameters = OperationParameters {
            nodegroup: Some(Uuid::from_u128(nodegroup)),
            ..OperationParameters::default()
        };
        let mut operation = Operation::new(
            Uuid::from_u128(99),
            kind,
            parameters.to_payload(),
            at(created),
        );
        operation.state = state;
        operation.updated_at = Some(at(created + 20));
        operation
    }

    #[test]
    fn a_users_resize_is_not_undone_within_the_cool_down() {
        let history = History::from_operations(&[
            past(
                OperationKind::ResizeCluster,
                OperationState::Succeeded,
                WORKERS,
                1_800,
            ),
            past(
                OperationKind::UpdateCluster,
                OperationState::Succeeded,
                WORKERS,
                1_700,
            ),
            // Another nodegroup's resize does not hold this one.
            past(
                OperationKind::ResizeCluster,
                OperationState::Succeeded,
                3,
                1_990,
            ),
            // The autoscaler's own successful changes do not count as the user's.
            past(
                OperationKind::AutoscaleCluster,
                OperationState::Succeeded,
                WORKERS,
                1_950,
            ),
        ]);
        // From the end of the user's resize (20 s after it was asked for).
        assert_eq!(
            history.last_user_resize(Uuid::from_u128(WORKERS)),
            Some(at(1_820))
        );
        let mut resized = autoscaled();
        resized.nodegroups[1].node_count = 2;
        for proposal in [out(1), scale_in(&["n3"])] {
            let mut held = resized.clone();
            assert_eq!(
                held.decide(&proposal, policy(), &history, at(2_000)),
                Err(Declined::UserResizeCoolDown {
                    name: "default-worker".to_owned(),
                    ago: 180,
                    cool_down: 300
                })
            );
            assert_eq!(held, resized, "declined: nothing changed");
            // Once the cool-down has passed, the autoscaler may act again.
            let mut later = resized.clone();
            later
                .decide(&proposal, policy(), &history, at(2_120))
                .unwrap();
            let mut not_yet = resized.clone();
            assert!(not_yet
                .decide(&proposal, policy(), &history, at(2_119))
                .is_err());
        }
        // A cool-down of 0 never holds anything.
        let mut eager = resized.clone();
        eager
            .decide(
                &out(1),
                Policy {
                    cool_down_seconds: 0,
                },
                &history,
                at(1_821),
            )
            .unwrap();
    }

    #[test]
    fn after_a_failed_change_the_autoscaler_waits_the_cool_down() {
        let history = History::from_operations(&[past(
            OperationKind::AutoscaleCluster,
            OperationState::Failed,
            WORKERS,
            1_900,
        )]);
        let mut cluster = autoscaled();
        assert_eq!(
            cluster.decide(&out(1), policy(), &history, at(2_000)),
            Err(Declined::FailureCoolDown {
                name: "default-worker".to_owned(),
                ago: 80,
                cool_down: 300
            })
        );
        cluster
            .decide(&out(1), policy(), &history, at(2_300))
            .unwrap();
    }

    fn replace(nodegroup: u128, nodes: &[&str], quorum: Quorum) -> Proposal {
        Proposal::Replace {
            nodegroup: Uuid::from_u128(nodegroup),
            nodes: nodes.iter().map(|node| (*node).to_owned()).collect(),
            why: "its network namespace is gone".to_owned(),
            quorum,
        }
    }

    #[test]
    fn quorum_needs_a_majority_of_managers() {
        let holds = |managers, reachable| {
            Quorum {
                managers,
                reachable,
            }
            .holds()
        };
        assert!(holds(1, 1));
        assert!(!holds(1, 0));
        assert!(holds(3, 2));
        assert!(!holds(3, 1));
        assert!(!holds(4, 2));
        assert!(holds(5, 3));
        assert!(!holds(2, 1));
    }

    #[test]
    fn a_broken_node_is_replaced_in_place_only_with_quorum_and_auto_healing() {
        let before = autoscaled();
        let mut after = before.clone();
        let kind = after
            .decide(
                &replace(
                    WORKERS,
                    &["n2"],
                    Quorum {
                        managers: 1,
                        reachable: 1,
                    },
                ),
                policy(),
                // A user's resize just now does not hold healing back.
                &History::from_operations(&[past(
                    OperationKind::ResizeCluster,
                    OperationState::Succeeded,
                    WORKERS,
                    1_999,
                )]),
                at(2_000),
            )
            .unwrap();
        assert_eq!(kind, OperationKind::ReplaceNodes);
        assert_eq!(after.nodegroups[1].node_count, 1, "the same size");
        assert_eq!(after.cluster.status, UpdateInProgress);
        let recorded = parameters(&after);
        assert_eq!(recorded.nodes_to_remove, ["n2"]);
        assert_eq!(recorded.initiator.user_id, AUTO_HEALER);
        assert!(!recorded.rollback);
        let events = describe_change(&before, &after);
        assert_eq!(events[0].reason, "NodeReplacing");
        assert_eq!(events[0].node.as_deref(), Some("n2"));
        assert_eq!(events[0].event_type, crate::event::EventType::Warning);
        assert!(events[0].message.contains("network namespace is gone"));

        // A manager is replaced while the others keep the quorum, never without it.
        let mut managers = autoscaled();
        managers.nodegroups[0].node_count = 3;
        let mut kept = managers.clone();
        kept.decide(
            &replace(
                MASTERS,
                &["n1"],
                Quorum {
                    managers: 3,
                    reachable: 2,
                },
            ),
            policy(),
            &History::default(),
            at(2_000),
        )
        .unwrap();
        assert_eq!(parameters(&kept).nodes_to_remove, ["n1"]);
        for quorum in [
            Quorum {
                managers: 3,
                reachable: 1,
            },
            Quorum {
                managers: 1,
                reachable: 0,
            },
        ] {
            let mut lost = managers.clone();
            assert_eq!(
                lost.decide(
                    &replace(MASTERS, &["n1"], quorum),
                    policy(),
                    &History::default(),
                    at(2_000)
                ),
                Err(Declined::NoQuorum {
                    managers: quorum.managers,
                    reachable: quorum.reachable
                })
            );
            // Not even a worker: the swarm cannot take or drop a node without a leader.
            let mut worker = managers.clone();
            assert!(matches!(
                worker.decide(
                    &replace(WORKERS, &["n4"], quorum),
                    policy(),
                    &History::default(),
                    at(2_000)
                ),
                Err(Declined::NoQuorum { .. })
            ));
            assert_eq!(worker, managers);
        }
        // Without auto-healing, nothing is replaced.
        let mut unhealed = autoscaled();
        unhealed.cluster.labels = Labels::default();
        assert_eq!(
            unhealed.decide(
                &replace(
                    WORKERS,
                    &["n2"],
                    Quorum {
                        managers: 1,
                        reachable: 1
                    }
                ),
                policy(),
                &History::default(),
                at(2_000)
            ),
            Err(Declined::HealingDisabled)
        );
    }

    #[test]
    fn replacements_are_budgeted_per_nodegroup_and_hour() {
        let one_manager = Quorum {
            managers: 1,
            reachable: 1,
        };
        let replacement = |nodegroup, created, state| {
            past(OperationKind::ReplaceNodes, state, nodegroup, created)
        };
        // Three replacements of the workers within the hour (one failed: it counts too), one
        // older, and one of another nodegroup.
        let history = History::from_operations(&[
            replacement(WORKERS, -1_700, OperationState::Succeeded),
            replacement(WORKERS, 1_000, OperationState::Succeeded),
            replacement(WORKERS, 1_500, OperationState::Failed),
            replacement(WORKERS, 1_900, OperationState::Succeeded),
            replacement(MASTERS, 1_950, OperationState::Succeeded),
        ]);
        let before = autoscaled();
        let mut spent = before.clone();
        assert_eq!(
            spent.decide(
                &replace(WORKERS, &["n2"], one_manager),
                policy(),
                &history,
                at(2_000)
            ),
            Err(Declined::ReplacementBudgetSpent {
                name: "default-worker".to_owned(),
                count: 3,
                window: REPLACEMENT_WINDOW_SECONDS,
            })
        );
        assert_eq!(spent, before, "declined: nothing changed");
        // Once the oldest of the three is an hour old, one more may go.
        let mut later = before.clone();
        assert_eq!(
            later.decide(
                &replace(WORKERS, &["n2"], one_manager),
                policy(),
                &history,
                at(1_000 + REPLACEMENT_WINDOW_SECONDS)
            ),
            Ok(OperationKind::ReplaceNodes)
        );
        // The budget is the nodegroup's own: two earlier replacements leave room for a third.
        let mut other = before.clone();
        let two = History::from_operations(&[
            replacement(WORKERS, 1_500, OperationState::Succeeded),
            replacement(WORKERS, 1_900, OperationState::Succeeded),
        ]);
        assert_eq!(
            other.decide(
                &replace(WORKERS, &["n2"], one_manager),
                policy(),
                &two,
                at(2_000)
            ),
            Ok(OperationKind::ReplaceNodes)
        );
    }
}
