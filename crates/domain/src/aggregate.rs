//! The cluster aggregate: a cluster with its nodegroups, and every use case that changes
//! them. Each use case is a pure method: it checks the rules, changes the records through the
//! status transition functions, and names the operation that carries the change out. The
//! store writes the result in one compare-and-set transaction (`Store::modify_cluster`), so
//! that the API and the conductor change clusters the same way.

use uuid::Uuid;

use crate::cluster::{Cluster, ClusterStatus, HealthStatus, NodeGroup, StatusEvent};
use crate::cluster::{NodegroupEvent, NodegroupTransitionRefused, TransitionRefused};
use crate::event::ClusterEvent;
use crate::operation::{Initiator, Operation, OperationKind, OperationParameters};
use crate::time::Timestamp;

/// A cluster and its nodegroups as one unit of change, with the operation the change asks
/// for (persisted in the same transaction).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterAggregate {
    pub cluster: Cluster,
    pub nodegroups: Vec<NodeGroup>,
    pub operation: Option<Operation>,
    /// Ids of the cluster's operations not finished yet, as read with the cluster (so that a
    /// decision retried after a lost race sees the ones queued meanwhile).
    pub unfinished_operations: Vec<i64>,
    /// Steps of this change no stored field shows (a node started, a CA rotated), recorded
    /// as events with the ones the change itself tells (`event::describe_change`).
    pub events: Vec<ClusterEvent>,
}

/// Why a change is refused; the messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefused {
    #[error(transparent)]
    Transition(#[from] TransitionRefused),
    #[error(transparent)]
    NodegroupTransition(#[from] NodegroupTransitionRefused),
    #[error("Nodegroup {0} could not be found.")]
    NodegroupNotFound(String),
    #[error("The cluster has no default worker nodegroup to resize.")]
    NoDefaultWorker,
    #[error("Deleting a default nodegroup is not supported.")]
    DefaultNodegroup,
    #[error("Creating master nodegroups is currently not supported.")]
    MasterNodegroup,
    #[error("A node group with name {name} already exists in the cluster {cluster}.")]
    NameTaken { name: String, cluster: String },
    #[error("Cluster API address is not available yet")]
    NoApiAddress,
    #[error(
        "Resizing {name} outside the allowed range: min_node_count = {min}, max_node_count = {max}"
    )]
    OutOfRange { name: String, min: i64, max: String },
    #[error("Upgrading a cluster when status is \"{0}\" is not supported.")]
    UpgradeWhileBusy(ClusterStatus),
    #[error("Cluster Template is not valid for upgrade: Nodegroup {nodegroup} can be upgraded only to match cluster's template ({template}).")]
    NodegroupUpgradeTemplate { nodegroup: String, template: String },
    #[error("Updating nodegroup {name} when its status is \"{status}\" is not supported.")]
    NodegroupBusy { name: String, status: ClusterStatus },
}

/// How the API answers a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    BadRequest,
    NotFound,
    Conflict,
}

impl ChangeRefused {
    pub fn kind(&self) -> RefusalKind {
        match self {
            ChangeRefused::NodegroupNotFound(_) => RefusalKind::NotFound,
            ChangeRefused::NameTaken { .. }
            | ChangeRefused::NoApiAddress
            | ChangeRefused::NodegroupUpgradeTemplate { .. } => RefusalKind::Conflict,
            _ => RefusalKind::BadRequest,
        }
    }
}

/// What an operation does to the cluster's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Create,
    Update,
    Rollback,
}

impl Phase {
    /// The phase an operation of `kind` runs in while the cluster is at `status`; `None`
    /// when there is nothing left to do (an earlier run or another operation ended it).
    pub fn of(kind: OperationKind, status: ClusterStatus) -> Option<Phase> {
        match (kind, status) {
            (OperationKind::CreateCluster, ClusterStatus::CreateInProgress) => Some(Phase::Create),
            (OperationKind::CreateCluster | OperationKind::DeleteCluster, _) => None,
            (_, ClusterStatus::UpdateInProgress) => Some(Phase::Update),
            (_, ClusterStatus::RollbackInProgress) => Some(Phase::Rollback),
            _ => None,
        }
    }

    fn success(self) -> StatusEvent {
        match self {
            Phase::Create => StatusEvent::CreateSucceeded,
            Phase::Update => StatusEvent::UpdateSucceeded,
            Phase::Rollback => StatusEvent::RollbackSucceeded,
        }
    }

    fn failure(self) -> StatusEvent {
        match self {
            Phase::Create => StatusEvent::CreateFailed,
            Phase::Update => StatusEvent::UpdateFailed,
            Phase::Rollback => StatusEvent::RollbackFailed,
        }
    }
}

/// What a driver observed of a cluster after converging it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The driver's own id for the cluster (`stack_id` / `cluster_id`).
    pub stack_id: Option<String>,
    pub api_address: Option<String>,
    pub coe_version: Option<String>,
    pub container_version: Option<String>,
    pub nodegroups: Vec<ObservedNodeGroup>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedNodeGroup {
    pub uuid: Uuid,
    pub node_addresses: Vec<String>,
    pub coe_version: Option<String>,
}

/// What a driver sees of a cluster between operations: its API endpoint as soon as it is
/// known, and the sizes of nodegroups whose count the cluster autoscaler owns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveState {
    pub api_address: Option<String>,
    /// Per autoscaled nodegroup (by uuid), its current number of nodes.
    pub autoscaled: Vec<(Uuid, i64)>,
}

/// An upgrade as asked: to `template`, of one nodegroup or (None) of the default ones.
#[derive(Debug, Clone)]
pub struct Upgrade<'a> {
    pub template: Uuid,
    pub template_name: &'a str,
    pub image_id: &'a str,
    /// The name of the cluster's current template, for the refusal message.
    pub current_template_name: &'a str,
    pub nodegroup: Option<&'a str>,
    pub max_batch_size: Option<i64>,
    /// The new template's `kube_tag` label: the Kubernetes version the cluster moves to.
    pub kube_tag: Option<&'a str>,
}

/// Who asks and when: every use case started by a request records both.
#[derive(Debug, Clone)]
pub struct Request {
    pub initiator: Initiator,
    pub now: Timestamp,
}

impl ClusterAggregate {
    pub fn new(cluster: Cluster, nodegroups: Vec<NodeGroup>) -> Self {
        Self {
            cluster,
            nodegroups,
            operation: None,
            unfinished_operations: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Adds a step this change should tell (see `event`).
    pub fn record(&mut self, event: ClusterEvent) {
        self.events.push(event);
    }

    /// Whether an operation queued after `operation_id` waits: it, not the older one,
    /// settles the cluster's status.
    pub fn has_newer_operation(&self, operation_id: i64) -> bool {
        self.unfinished_operations
            .iter()
            .any(|id| *id > operation_id)
    }

    /// A new cluster and its default nodegroups, with the operation that builds it.
    pub fn create(mut cluster: Cluster, mut nodegroups: Vec<NodeGroup>, request: &Request) -> Self {
        cluster.status = ClusterStatus::CreateInProgress;
        cluster.status_reason = None;
        for nodegroup in &mut nodegroups {
            nodegroup.status = ClusterStatus::CreateInProgress;
            nodegroup.status_reason = None;
        }
        let operation = operation(&cluster, OperationKind::CreateCluster, request, |_| {});
        Self {
            cluster,
            nodegroups,
            operation: Some(operation),
            unfinished_operations: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A nodegroup by uuid, integer id or name, as upstream looks them up.
    pub fn nodegroup(&self, ident: &str) -> Option<&NodeGroup> {
        find_nodegroup(&self.nodegroups, ident)
    }

    pub fn default_worker(&self) -> Option<&NodeGroup> {
        self.nodegroups
            .iter()
            .find(|nodegroup| nodegroup.is_default && !nodegroup.is_master())
    }

    pub(crate) fn nodegroup_mut(&mut self, uuid: Uuid) -> Result<&mut NodeGroup, ChangeRefused> {
        self.nodegroups
            .iter_mut()
            .find(|nodegroup| nodegroup.uuid == uuid)
            .ok_or_else(|| ChangeRefused::NodegroupNotFound(uuid.to_string()))
    }

    pub(crate) fn start(
        &mut self,
        event: StatusEvent,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<(), ChangeRefused> {
        self.cluster.status = self.cluster.status.apply(event)?;
        self.cluster.status_reason = reason;
        self.cluster.updated_at = Some(now);
        Ok(())
    }

    /// Health as seen by a monitor or set by an operator; no operation.
    pub fn set_health(
        &mut self,
        status: Option<HealthStatus>,
        reason: serde_json::Map<String, serde_json::Value>,
        now: Timestamp,
    ) {
        if self.cluster.health_status != status || self.cluster.health_status_reason != reason {
            self.cluster.health_status = status;
            self.cluster.health_status_reason = reason;
            self.cluster.updated_at = Some(now);
        }
    }

    /// Records what a driver saw between operations; returns whether anything changed. The
    /// endpoint is taken at any time but during a delete; autoscaled counts only while no
    /// change is in progress (an operation's own counts win) and only within the nodegroup's
    /// bounds (what the autoscaler was told).
    pub fn follow_live(&mut self, live: &LiveState, now: Timestamp) -> bool {
        let mut changed = false;
        let deleting = matches!(
            self.cluster.status,
            ClusterStatus::DeleteInProgress | ClusterStatus::DeleteComplete
        );
        if let Some(address) = live.api_address.as_ref().filter(|_| !deleting) {
            if self.cluster.api_address.as_ref() != Some(address) {
                self.cluster.api_address = Some(address.clone());
                changed = true;
            }
        }
        if !self.cluster.status.is_in_progress() {
            for (uuid, count) in &live.autoscaled {
                let Some(nodegroup) = self
                    .nodegroups
                    .iter_mut()
                    .find(|nodegroup| nodegroup.uuid == *uuid && !nodegroup.is_master())
                else {
                    continue;
                };
                let within = *count >= nodegroup.min_node_count
                    && nodegroup
                        .autoscaling_maximum()
                        .is_none_or(|max| *count <= max);
                if within && !nodegroup.status.is_in_progress() && nodegroup.node_count != *count {
                    nodegroup.node_count = *count;
                    nodegroup.updated_at = Some(now);
                    changed = true;
                }
            }
        }
        if changed {
            let nodegroups = self.nodegroups.clone();
            self.cluster.summarize(&nodegroups);
            self.cluster.updated_at = Some(now);
        }
        changed
    }

    /// `PATCH /clusters/{id}` of `node_count`: the default worker nodegroup to `node_count`.
    pub fn scale_default_workers(
        &mut self,
        node_count: i64,
        rollback: bool,
        request: &Request,
    ) -> Result<(), ChangeRefused> {
        let worker = self
            .default_worker()
            .ok_or(ChangeRefused::NoDefaultWorker)?
            .clone();
        let from = worker.node_count;
        self.start(
            StatusEvent::UpdateStarted,
            Some(format!(
                "Changing the number of worker nodes from {from} to {node_count}."
            )),
            request.now,
        )?;
        self.change_nodegroup(worker.uuid, request.now, |nodegroup| {
            nodegroup.node_count = node_count;
        })?;
        self.operation = Some(operation(
            &self.cluster,
            OperationKind::UpdateCluster,
            request,
            |parameters| {
                parameters.nodegroup = Some(worker.uuid);
                parameters.previous_node_counts = vec![(worker.uuid, from)];
                parameters.rollback = rollback;
            },
        ));
        Ok(())
    }

    /// A worker nodegroup keeps to its min/max node counts; masters have no such bounds.
    pub fn check_resize_range(nodegroup: &NodeGroup, node_count: i64) -> Result<(), ChangeRefused> {
        let out_of_range = node_count < nodegroup.min_node_count
            || nodegroup.max_node_count.is_some_and(|max| node_count > max);
        if nodegroup.is_master() || !out_of_range {
            return Ok(());
        }
        Err(ChangeRefused::OutOfRange {
            name: nodegroup.name.clone(),
            min: nodegroup.min_node_count,
            max: nodegroup
                .max_node_count
                .map_or("None".to_owned(), |max| max.to_string()),
        })
    }

    /// `POST /clusters/{id}/actions/resize`. Worker nodegroups keep to their min/max.
    pub fn resize(
        &mut self,
        nodegroup: Uuid,
        node_count: i64,
        nodes_to_remove: Vec<String>,
        request: &Request,
    ) -> Result<(), ChangeRefused> {
        let target = self.nodegroup_mut(nodegroup)?.clone();
        Self::check_resize_range(&target, node_count)?;
        self.start(
            StatusEvent::ResizeStarted,
            Some(format!(
                "Resizing nodegroup {} from {} to {node_count} nodes.",
                target.name, target.node_count
            )),
            request.now,
        )?;
        self.change_nodegroup(nodegroup, request.now, |stored| {
            stored.node_count = node_count;
        })?;
        self.operation = Some(operation(
            &self.cluster,
            OperationKind::ResizeCluster,
            request,
            |parameters| {
                parameters.nodegroup = Some(nodegroup);
                parameters.nodes_to_remove = nodes_to_remove;
                parameters.previous_node_counts = vec![(nodegroup, target.node_count)];
            },
        ));
        Ok(())
    }

    /// `POST /clusters/{id}/actions/upgrade`: the default nodegroups (and the cluster's
    /// template) or one nodegroup to the image of `upgrade.template`.
    pub fn upgrade(
        &mut self,
        upgrade: &Upgrade<'_>,
        request: &Request,
    ) -> Result<(), ChangeRefused> {
        let targets = self.upgrade_targets(upgrade)?;
        let previous_template = self.cluster.cluster_template_id;
        self.start(
            StatusEvent::UpdateStarted,
            Some(format!(
                "Upgrading to cluster template {}.",
                upgrade.template_name
            )),
            request.now,
        )?;
        let mut previous_labels = None;
        if upgrade.nodegroup.is_none() || targets.iter().any(|nodegroup| nodegroup.is_default) {
            self.cluster.cluster_template_id = upgrade.template;
            // The cluster's labels were copied from its first template: the version it runs
            // is the new template's, as the drivers that read `kube_tag` expect.
            if let Some(tag) = upgrade.kube_tag {
                if self.cluster.labels.get("kube_tag") != Some(tag) {
                    previous_labels = Some(self.cluster.labels.to_stored_json());
                    self.cluster.labels.insert("kube_tag", tag);
                }
            }
        }
        for target in &targets {
            self.change_nodegroup(target.uuid, request.now, |nodegroup| {
                nodegroup.image_id = Some(upgrade.image_id.to_owned());
            })?;
        }
        self.operation = Some(operation(
            &self.cluster,
            OperationKind::UpgradeCluster,
            request,
            |parameters| {
                parameters.previous_template = Some(previous_template);
                parameters.previous_labels = previous_labels;
                parameters.max_batch_size = upgrade.max_batch_size;
            },
        ));
        Ok(())
    }

    /// The nodegroups an upgrade would change, or why it cannot start now.
    pub fn upgrade_targets(&self, upgrade: &Upgrade<'_>) -> Result<Vec<NodeGroup>, ChangeRefused> {
        let targets: Vec<NodeGroup> = match upgrade.nodegroup {
            Some(name) => {
                let nodegroup = self
                    .nodegroup(name)
                    .ok_or_else(|| ChangeRefused::NodegroupNotFound(name.to_owned()))?;
                if !nodegroup.is_default && upgrade.template != self.cluster.cluster_template_id {
                    return Err(ChangeRefused::NodegroupUpgradeTemplate {
                        nodegroup: nodegroup.name.clone(),
                        template: upgrade.current_template_name.to_owned(),
                    });
                }
                vec![nodegroup.clone()]
            }
            None => self
                .nodegroups
                .iter()
                .filter(|nodegroup| nodegroup.is_default)
                .cloned()
                .collect(),
        };
        if !self.cluster.status.is_complete() {
            return Err(ChangeRefused::UpgradeWhileBusy(self.cluster.status));
        }
        Ok(targets)
    }

    /// Whether a deletion is already under way and queued: asking again changes nothing.
    pub fn is_being_deleted(&self) -> bool {
        self.cluster.status == ClusterStatus::DeleteInProgress
    }

    /// `DELETE /clusters/{id}`.
    pub fn start_delete(&mut self, request: &Request) -> Result<(), ChangeRefused> {
        self.start(StatusEvent::DeleteStarted, None, request.now)?;
        self.operation = Some(operation(
            &self.cluster,
            OperationKind::DeleteCluster,
            request,
            |_| {},
        ));
        Ok(())
    }

    /// A cluster-wide change with no parameters of its own (CA or credential rotation).
    pub fn start_rotation(
        &mut self,
        kind: OperationKind,
        reason: &str,
        request: &Request,
    ) -> Result<(), ChangeRefused> {
        self.start(
            StatusEvent::UpdateStarted,
            Some(reason.to_owned()),
            request.now,
        )?;
        self.operation = Some(operation(&self.cluster, kind, request, |_| {}));
        Ok(())
    }

    /// Whether a nodegroup named `name` may be added now: the cluster must be reachable and
    /// the name free. Upstream checks this before the request's other attributes.
    pub fn check_nodegroup_name(&self, name: &str) -> Result<(), ChangeRefused> {
        if self
            .cluster
            .api_address
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(ChangeRefused::NoApiAddress);
        }
        if self.nodegroups.iter().any(|existing| existing.name == name) {
            return Err(ChangeRefused::NameTaken {
                name: name.to_owned(),
                cluster: self.cluster.display_name(),
            });
        }
        Ok(())
    }

    /// `POST /clusters/{id}/nodegroups`: `nodegroup` as built from the request.
    pub fn add_nodegroup(
        &mut self,
        mut nodegroup: NodeGroup,
        request: &Request,
    ) -> Result<(), ChangeRefused> {
        self.check_nodegroup_name(&nodegroup.name)?;
        if nodegroup.is_master() {
            return Err(ChangeRefused::MasterNodegroup);
        }
        self.start(
            StatusEvent::ResizeStarted,
            Some(format!("Creating nodegroup {}.", nodegroup.name)),
            request.now,
        )?;
        nodegroup.id = 0;
        nodegroup.cluster_uuid = self.cluster.uuid;
        nodegroup.status = ClusterStatus::CreateInProgress;
        nodegroup.status_reason = None;
        nodegroup.created_at = request.now;
        nodegroup.updated_at = None;
        let uuid = nodegroup.uuid;
        self.nodegroups.push(nodegroup);
        self.queue_nodegroup_operation(OperationKind::CreateNodegroup, uuid, request);
        Ok(())
    }

    /// `PATCH /clusters/{id}/nodegroups/{ng}`: `updated` is the nodegroup as patched. A change
    /// of node labels or taints reaches the nodes (an operation); counts do not.
    pub fn update_nodegroup(
        &mut self,
        updated: NodeGroup,
        request: &Request,
    ) -> Result<(), ChangeRefused> {
        let current = self.nodegroup_mut(updated.uuid)?.clone();
        if updated == current {
            return Ok(());
        }
        let reaches_nodes = updated.node_labels != current.node_labels
            || updated.node_taints != current.node_taints;
        if !reaches_nodes {
            let stored = self.nodegroup_mut(updated.uuid)?;
            *stored = updated;
            stored.updated_at = Some(request.now);
            return Ok(());
        }
        self.start(
            StatusEvent::ResizeStarted,
            Some(format!("Updating nodegroup {}.", current.name)),
            request.now,
        )?;
        let uuid = updated.uuid;
        self.change_nodegroup(uuid, request.now, |stored| {
            let status = stored.status;
            let reason = stored.status_reason.take();
            *stored = updated;
            stored.status = status;
            stored.status_reason = reason;
        })?;
        self.queue_nodegroup_operation(OperationKind::UpdateNodegroup, uuid, request);
        Ok(())
    }

    /// `DELETE /clusters/{id}/nodegroups/{ng}`. False when its deletion is under way already.
    pub fn remove_nodegroup(
        &mut self,
        uuid: Uuid,
        request: &Request,
    ) -> Result<bool, ChangeRefused> {
        let nodegroup = self.nodegroup_mut(uuid)?.clone();
        if nodegroup.is_default {
            return Err(ChangeRefused::DefaultNodegroup);
        }
        if nodegroup.status == ClusterStatus::DeleteInProgress {
            return Ok(false);
        }
        self.start(
            StatusEvent::ResizeStarted,
            Some(format!("Deleting nodegroup {}.", nodegroup.name)),
            request.now,
        )?;
        let stored = self.nodegroup_mut(uuid)?;
        stored.status = stored
            .status
            .apply_to_nodegroup(NodegroupEvent::DeleteStarted)?;
        stored.status_reason = None;
        stored.updated_at = Some(request.now);
        self.queue_nodegroup_operation(OperationKind::DeleteNodegroup, uuid, request);
        Ok(true)
    }

    /// The operation of a nodegroup change.
    fn queue_nodegroup_operation(&mut self, kind: OperationKind, uuid: Uuid, request: &Request) {
        self.operation = Some(operation(&self.cluster, kind, request, |parameters| {
            parameters.nodegroup = Some(uuid);
        }));
    }

    /// Puts one nodegroup into a change through its transition function, then edits it.
    pub(crate) fn change_nodegroup(
        &mut self,
        uuid: Uuid,
        now: Timestamp,
        edit: impl FnOnce(&mut NodeGroup),
    ) -> Result<(), ChangeRefused> {
        let nodegroup = self.nodegroup_mut(uuid)?;
        let status = nodegroup
            .status
            .apply_to_nodegroup(NodegroupEvent::ChangeStarted)
            .map_err(|_| ChangeRefused::NodegroupBusy {
                name: nodegroup.name.clone(),
                status: nodegroup.status,
            })?;
        edit(nodegroup);
        nodegroup.status = status;
        nodegroup.status_reason = None;
        nodegroup.updated_at = Some(now);
        Ok(())
    }

    /// The conductor's record of success. With `settle_status` false (a newer operation
    /// waits and will settle them) the cluster and its nodegroups keep their statuses.
    /// Otherwise nodegroups in a change settle, and those being deleted go. An update that
    /// names its outcome (`parameters.outcome_reason`: a change the cluster asked for
    /// itself) records it as the cluster's and its nodegroup's reason.
    pub fn succeed(
        &mut self,
        phase: Phase,
        settle_status: bool,
        observed: &Observed,
        parameters: &OperationParameters,
        now: Timestamp,
    ) -> Result<(), ChangeRefused> {
        let outcome = parameters
            .outcome_reason
            .clone()
            .filter(|_| phase == Phase::Update && settle_status);
        if settle_status {
            self.cluster.status = self.cluster.status.apply(phase.success())?;
            self.cluster.status_reason = Some(match (&outcome, phase) {
                (Some(outcome), _) => outcome.clone(),
                (None, Phase::Create) => "Cluster created.".to_owned(),
                (None, Phase::Update) => "Cluster updated.".to_owned(),
                (None, Phase::Rollback) => "The failed update was rolled back.".to_owned(),
            });
        }
        let cluster = &mut self.cluster;
        for (stored, seen) in [
            (&mut cluster.stack_id, &observed.stack_id),
            (&mut cluster.api_address, &observed.api_address),
            (&mut cluster.coe_version, &observed.coe_version),
            (&mut cluster.container_version, &observed.container_version),
        ] {
            if seen.is_some() {
                stored.clone_from(seen);
            }
        }
        cluster.updated_at = Some(now);
        let stack_id = cluster.stack_id.clone();
        for nodegroup in &mut self.nodegroups {
            let before = nodegroup.clone();
            if let Some(seen) = observed
                .nodegroups
                .iter()
                .find(|seen| seen.uuid == nodegroup.uuid)
            {
                nodegroup.node_addresses.clone_from(&seen.node_addresses);
                if seen.coe_version.is_some() {
                    nodegroup.coe_version.clone_from(&seen.coe_version);
                }
            }
            if nodegroup.stack_id.is_none() {
                nodegroup.stack_id.clone_from(&stack_id);
            }
            // With a newer operation waiting, it settles the nodegroups (it may yet fail).
            if settle_status && nodegroup.status.is_in_progress() {
                nodegroup.status = nodegroup
                    .status
                    .apply_to_nodegroup(NodegroupEvent::Succeeded)?;
                nodegroup.status_reason = outcome
                    .clone()
                    .filter(|_| parameters.nodegroup == Some(nodegroup.uuid));
            }
            if *nodegroup != before {
                nodegroup.updated_at = Some(now);
            }
        }
        self.nodegroups
            .retain(|nodegroup| nodegroup.status != ClusterStatus::DeleteComplete);
        Ok(())
    }

    /// The conductor's record of failure with its reason. An update's asked-for counts and
    /// template are put back, so that the stored cluster describes the last state that
    /// worked.
    pub fn fail(
        &mut self,
        phase: Phase,
        settle_status: bool,
        reason: &str,
        parameters: &OperationParameters,
        now: Timestamp,
    ) -> Result<(), ChangeRefused> {
        if settle_status {
            self.cluster.status = self.cluster.status.apply(phase.failure())?;
            self.cluster.status_reason = Some(reason.to_owned());
        } else {
            self.cluster.status_reason = Some(format!(
                "A change failed ({reason}); applying the next one."
            ));
        }
        // A newer operation waiting has asked for counts of its own: they stay.
        if phase == Phase::Update && settle_status {
            self.restore(parameters);
        }
        self.cluster.updated_at = Some(now);
        for nodegroup in &mut self.nodegroups {
            if settle_status && nodegroup.status.is_in_progress() {
                nodegroup.status = nodegroup
                    .status
                    .apply_to_nodegroup(NodegroupEvent::Failed)?;
                nodegroup.status_reason = Some(reason.to_owned());
                nodegroup.updated_at = Some(now);
            }
        }
        Ok(())
    }

    /// After a failed update with `rollback`: back to the previous counts and template.
    pub fn start_rollback(
        &mut self,
        reason: &str,
        parameters: &OperationParameters,
        now: Timestamp,
    ) -> Result<(), ChangeRefused> {
        self.cluster.status = self.cluster.status.apply(StatusEvent::RollbackStarted)?;
        self.cluster.status_reason = Some(format!("Rolling back: {reason}"));
        self.cluster.updated_at = Some(now);
        self.restore(parameters);
        Ok(())
    }

    fn restore(&mut self, parameters: &OperationParameters) {
        if let Some(previous) = parameters.previous_template {
            self.cluster.cluster_template_id = previous;
        }
        if let Some(labels) = &parameters.previous_labels {
            self.cluster.labels = crate::labels::Labels::from_stored_json(labels);
        }
        for nodegroup in &mut self.nodegroups {
            if let Some((_, count)) = parameters
                .previous_node_counts
                .iter()
                .find(|(uuid, _)| *uuid == nodegroup.uuid)
            {
                nodegroup.node_count = *count;
            }
        }
    }

    /// The driver could not delete the cluster.
    pub fn delete_failed(&mut self, reason: &str, now: Timestamp) -> Result<(), ChangeRefused> {
        self.cluster.status = self.cluster.status.apply(StatusEvent::DeleteFailed)?;
        self.cluster.status_reason = Some(reason.to_owned());
        self.cluster.updated_at = Some(now);
        Ok(())
    }

    /// A cluster left in progress with no operation to end it: failed, with `reason`.
    pub fn strand(&mut self, reason: &str, now: Timestamp) -> Result<(), ChangeRefused> {
        let event = match self.cluster.status {
            ClusterStatus::CreateInProgress => StatusEvent::CreateFailed,
            ClusterStatus::UpdateInProgress => StatusEvent::UpdateFailed,
            ClusterStatus::RollbackInProgress => StatusEvent::RollbackFailed,
            _ => StatusEvent::DeleteFailed,
        };
        self.cluster.status = self.cluster.status.apply(event)?;
        self.cluster.status_reason = Some(reason.to_owned());
        self.cluster.updated_at = Some(now);
        Ok(())
    }
}

/// A nodegroup by uuid, integer id or name (a uuid-like identifier is only a uuid).
pub fn find_nodegroup<'a>(nodegroups: &'a [NodeGroup], ident: &str) -> Option<&'a NodeGroup> {
    if let Some(uuid) = crate::parse_uuid_like(ident) {
        return nodegroups.iter().find(|nodegroup| nodegroup.uuid == uuid);
    }
    if let Ok(id) = ident.parse::<i64>() {
        if let Some(found) = nodegroups.iter().find(|nodegroup| nodegroup.id == id) {
            return Some(found);
        }
    }
    nodegroups.iter().find(|nodegroup| nodegroup.name == ident)
}

pub(crate) fn operation(
    cluster: &Cluster,
    kind: OperationKind,
    request: &Request,
    parameters: impl FnOnce(&mut OperationParameters),
) -> Operation {
    let mut filled = OperationParameters {
        initiator: request.initiator.clone(),
        ..OperationParameters::default()
    };
    parameters(&mut filled);
    Operation::new(cluster.uuid, kind, filled.to_payload(), request.now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;
    use serde_json::Map;
    use ClusterStatus::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(seconds)
    }

    fn request() -> Request {
        Request {
            initiator: Initiator {
                user_id: "alice".to_owned(),
                project_id: "p1".to_owned(),
            },
            now: at(2_000),
        }
    }

    fn nodegroup(id: i64, name: &str, role: &str, is_default: bool, count: i64) -> NodeGroup {
        NodeGroup {
            id,
            uuid: Uuid::from_u128(id as u128),
            cluster_uuid: Uuid::from_u128(99),
            project_id: "p1".to_owned(),
            name: name.to_owned(),
            docker_volume_size: None,
            labels: Labels::default(),
            flavor_id: None,
            image_id: Some("old-image".to_owned()),
            node_addresses: Vec::new(),
            node_count: count,
            role: role.to_owned(),
            min_node_count: 0,
            max_node_count: None,
            is_default,
            stack_id: Some("stack".to_owned()),
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

    #[test]
    fn a_change_with_too_many_steps_still_tells_its_outcome() {
        use crate::event::{describe_change, ClusterEvent, MAX_EVENTS_PER_CHANGE};
        let before = aggregate(UpdateInProgress);
        let mut after = before.clone();
        after.cluster.status = UpdateComplete;
        for index in 0..300 {
            after.record(ClusterEvent::normal("NodeStarted", format!("node {index}")));
        }
        let events = describe_change(&before, &after);
        assert_eq!(events.len(), MAX_EVENTS_PER_CHANGE);
        assert_eq!(events[events.len() - 2].reason, "EventsDropped");
        assert_eq!(events.last().unwrap().reason, "UpdateCompleted");
    }

    #[test]
    fn a_node_that_starts_or_stops_reporting_ready_is_told_while_health_stays() {
        use crate::event::describe_change;
        let reason = |pairs: &[(&str, &str)]| -> Map<String, serde_json::Value> {
            pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), serde_json::json!(value)))
                .collect()
        };
        let mut before = aggregate(UpdateComplete);
        before.set_health(
            Some(HealthStatus::Healthy),
            reason(&[
                ("api", "ok"),
                ("c-n1.Ready", "True"),
                ("c-n2.Ready", "True"),
            ]),
            at(2_000),
        );
        // A third node reports (a scale out done): told, though health stays HEALTHY.
        let mut after = before.clone();
        after.set_health(
            Some(HealthStatus::Healthy),
            reason(&[
                ("api", "ok"),
                ("c-n1.Ready", "True"),
                ("c-n2.Ready", "True"),
                ("c-n3.Ready", "True"),
            ]),
            at(2_001),
        );
        let events = describe_change(&before, &after);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason, "NodeHealthChanged");
        assert_eq!(events[0].message, "Node c-n3 reports Ready.");
        assert_eq!(events[0].node.as_deref(), Some("c-n3"));
        // One goes, another is not Ready but health stays UNHEALTHY: both told.
        let mut unhealthy = after.clone();
        unhealthy.set_health(
            Some(HealthStatus::Unhealthy),
            reason(&[
                ("api", "ok"),
                ("c-n1.Ready", "True"),
                ("c-n2.Ready", "False"),
                ("c-n3.Ready", "True"),
            ]),
            at(2_002),
        );
        let mut worse = unhealthy.clone();
        worse.set_health(
            Some(HealthStatus::Unhealthy),
            reason(&[
                ("api", "ok"),
                ("c-n1.Ready", "Unknown"),
                ("c-n2.Ready", "False"),
            ]),
            at(2_003),
        );
        let told: Vec<(String, String)> = describe_change(&unhealthy, &worse)
            .into_iter()
            .map(|event| (event.event_type.as_str().to_owned(), event.message))
            .collect();
        assert_eq!(
            told,
            vec![
                (
                    "Warning".to_owned(),
                    "Node c-n1 reports Ready: Unknown.".to_owned()
                ),
                (
                    "Normal".to_owned(),
                    "Node c-n3 no longer reports its health.".to_owned()
                ),
            ]
        );
        // A change of the overall health is HealthChanged's alone; a report with the same
        // readiness (another check's text) tells nothing.
        let reasons: Vec<String> = describe_change(&after, &unhealthy)
            .into_iter()
            .map(|event| event.reason)
            .collect();
        assert_eq!(reasons, vec!["HealthChanged"]);
        let mut api_only = after.clone();
        api_only.set_health(
            Some(HealthStatus::Healthy),
            reason(&[
                ("api", "slow"),
                ("c-n1.Ready", "True"),
                ("c-n2.Ready", "True"),
                ("c-n3.Ready", "True"),
            ]),
            at(2_004),
        );
        assert!(describe_change(&after, &api_only).is_empty());
    }

    fn aggregate(status: ClusterStatus) -> ClusterAggregate {
        let cluster = Cluster {
            id: 1,
            uuid: Uuid::from_u128(99),
            name: Some("c".to_owned()),
            project_id: "p1".to_owned(),
            user_id: "alice".to_owned(),
            cluster_template_id: Uuid::from_u128(7),
            keypair: None,
            docker_volume_size: None,
            labels: Labels::default(),
            master_flavor_id: None,
            flavor_id: None,
            create_timeout: None,
            discovery_url: None,
            fixed_network: None,
            fixed_subnet: None,
            floating_ip_enabled: false,
            master_lb_enabled: false,
            status,
            status_reason: None,
            health_status: None,
            health_status_reason: Map::new(),
            stack_id: Some("stack".to_owned()),
            api_address: Some("tcp://10.0.0.2:2376".to_owned()),
            coe_version: None,
            container_version: None,
            node_count: 2,
            master_count: 1,
            node_addresses: Vec::new(),
            master_addresses: Vec::new(),
            created_at: at(1_000),
            updated_at: None,
            version: 3,
        };
        ClusterAggregate::new(
            cluster,
            vec![
                nodegroup(1, "default-master", "master", true, 1),
                nodegroup(2, "default-worker", "worker", true, 2),
                nodegroup(3, "extra", "worker", false, 1),
            ],
        )
    }

    #[test]
    fn live_state_sets_the_endpoint_and_follows_the_autoscaler_only_between_changes() {
        let mut quiet = aggregate(CreateComplete);
        quiet.nodegroups[2].max_node_count = Some(4);
        let live = LiveState {
            api_address: Some("https://203.0.113.10:6443".to_owned()),
            autoscaled: vec![(Uuid::from_u128(3), 3)],
        };
        assert!(quiet.follow_live(&live, at(3_000)));
        assert_eq!(
            quiet.cluster.api_address.as_deref(),
            Some("https://203.0.113.10:6443")
        );
        assert_eq!(quiet.nodegroups[2].node_count, 3);
        // The cluster's count is its worker nodegroups' sum.
        assert_eq!(quiet.cluster.node_count, 5);
        assert!(!quiet.follow_live(&live, at(3_001)), "nothing new");

        // Outside the nodegroup's bounds, of a master, or of an unknown nodegroup: ignored.
        for autoscaled in [
            vec![(Uuid::from_u128(3), 5)],
            vec![(Uuid::from_u128(1), 3)],
            vec![(Uuid::from_u128(42), 3)],
        ] {
            let mut bounded = quiet.clone();
            let live = LiveState {
                api_address: None,
                autoscaled,
            };
            assert!(!bounded.follow_live(&live, at(3_002)), "{live:?}");
            assert_eq!(bounded.nodegroups, quiet.nodegroups);
        }

        // During a change, its counts win; the endpoint is still taken.
        let mut creating = aggregate(CreateInProgress);
        creating.cluster.api_address = None;
        assert!(creating.follow_live(&live, at(3_000)));
        assert_eq!(creating.nodegroups[2].node_count, 1);
        assert!(creating.cluster.api_address.is_some());

        // A cluster being deleted keeps what it had.
        let mut deleting = aggregate(DeleteInProgress);
        assert!(!deleting.follow_live(&live, at(3_000)));
        assert_eq!(
            deleting.cluster.api_address.as_deref(),
            Some("tcp://10.0.0.2:2376")
        );
    }

    fn parameters(of: &ClusterAggregate) -> OperationParameters {
        OperationParameters::from_payload(&of.operation.as_ref().expect("an operation").payload)
    }

    #[test]
    fn every_nodegroup_status_and_event() {
        let mut allowed = 0;
        for status in ClusterStatus::ALL {
            for event in NodegroupEvent::ALL {
                let expected = match event {
                    NodegroupEvent::ChangeStarted => {
                        (!matches!(status, DeleteInProgress | DeleteComplete))
                            .then_some(UpdateInProgress)
                    }
                    NodegroupEvent::DeleteStarted => {
                        (status != DeleteComplete).then_some(DeleteInProgress)
                    }
                    NodegroupEvent::Succeeded => match status {
                        CreateInProgress => Some(CreateComplete),
                        UpdateInProgress => Some(UpdateComplete),
                        DeleteInProgress => Some(DeleteComplete),
                        RollbackInProgress => Some(RollbackComplete),
                        _ => None,
                    },
                    NodegroupEvent::Failed => match status {
                        CreateInProgress => Some(CreateFailed),
                        UpdateInProgress => Some(UpdateFailed),
                        DeleteInProgress => Some(DeleteFailed),
                        RollbackInProgress => Some(RollbackFailed),
                        _ => None,
                    },
                };
                assert_eq!(
                    status.apply_to_nodegroup(event).ok(),
                    expected,
                    "{status} + {event:?}"
                );
                allowed += usize::from(expected.is_some());
            }
        }
        // Every status but the two deletion ones starts a change; all but one a deletion;
        // the four in-progress ones settle either way.
        assert_eq!(allowed, 16 + 17 + 4 + 4);
    }

    /// Each use case from a cluster at rest: the cluster's and the target nodegroup's new
    /// status, the operation's kind, and which nodegroups changed.
    #[test]
    fn use_cases_from_rest() {
        type UseCase = fn(&mut ClusterAggregate) -> Result<(), ChangeRefused>;
        type Case = (
            &'static str,
            UseCase,
            ClusterStatus,
            OperationKind,
            &'static [(i64, ClusterStatus)],
        );
        let cases: [Case; 6] = [
            (
                "scale",
                |a| a.scale_default_workers(5, true, &request()),
                UpdateInProgress,
                OperationKind::UpdateCluster,
                &[(2, UpdateInProgress)],
            ),
            (
                "resize",
                |a| a.resize(Uuid::from_u128(3), 4, vec!["n3".to_owned()], &request()),
                UpdateInProgress,
                OperationKind::ResizeCluster,
                &[(3, UpdateInProgress)],
            ),
            (
                "delete",
                |a| a.start_delete(&request()),
                DeleteInProgress,
                OperationKind::DeleteCluster,
                &[],
            ),
            (
                "rotate",
                |a| a.start_rotation(OperationKind::RotateCa, "Rotating.", &request()),
                UpdateInProgress,
                OperationKind::RotateCa,
                &[],
            ),
            (
                "remove nodegroup",
                |a| {
                    a.remove_nodegroup(Uuid::from_u128(3), &request())
                        .map(|_| ())
                },
                UpdateInProgress,
                OperationKind::DeleteNodegroup,
                &[(3, DeleteInProgress)],
            ),
            (
                "upgrade",
                |a| {
                    a.upgrade(
                        &Upgrade {
                            template: Uuid::from_u128(8),
                            template_name: "new",
                            image_id: "new-image",
                            current_template_name: "old",
                            nodegroup: None,
                            max_batch_size: Some(2),
                            kube_tag: None,
                        },
                        &request(),
                    )
                },
                UpdateInProgress,
                OperationKind::UpgradeCluster,
                &[(1, UpdateInProgress), (2, UpdateInProgress)],
            ),
        ];
        for (name, use_case, status, kind, nodegroups) in cases {
            let before = aggregate(CreateComplete);
            let mut after = before.clone();
            use_case(&mut after).unwrap_or_else(|refused| panic!("{name}: {refused}"));
            assert_eq!(after.cluster.status, status, "{name}");
            assert_eq!(after.cluster.updated_at, Some(at(2_000)), "{name}");
            let operation = after.operation.as_ref().expect(name);
            assert_eq!(operation.kind, kind, "{name}");
            assert_eq!(operation.cluster_uuid, before.cluster.uuid, "{name}");
            assert_eq!(parameters(&after).initiator.user_id, "alice", "{name}");
            for (old, new) in before.nodegroups.iter().zip(&after.nodegroups) {
                match nodegroups.iter().find(|(id, _)| *id == new.id) {
                    Some((_, expected)) => {
                        assert_eq!(new.status, *expected, "{name}: {}", new.name);
                        assert_eq!(new.updated_at, Some(at(2_000)), "{name}: {}", new.name);
                    }
                    None => assert_eq!(old, new, "{name}: {} must not change", new.name),
                }
            }
        }
    }

    #[test]
    fn a_change_records_what_a_failure_or_rollback_puts_back() {
        let mut upgraded = aggregate(UpdateComplete);
        upgraded
            .upgrade(
                &Upgrade {
                    template: Uuid::from_u128(8),
                    template_name: "new",
                    image_id: "new-image",
                    current_template_name: "old",
                    nodegroup: None,
                    max_batch_size: None,
                    kube_tag: Some("v1.34.1"),
                },
                &request(),
            )
            .unwrap();
        assert_eq!(upgraded.cluster.cluster_template_id, Uuid::from_u128(8));
        assert_eq!(upgraded.cluster.labels.get("kube_tag"), Some("v1.34.1"));
        assert_eq!(
            upgraded.nodegroups[1].image_id.as_deref(),
            Some("new-image")
        );
        let recorded = parameters(&upgraded);
        assert_eq!(recorded.previous_template, Some(Uuid::from_u128(7)));
        upgraded
            .fail(Phase::Update, true, "broken", &recorded, at(3_000))
            .unwrap();
        assert_eq!(upgraded.cluster.status, UpdateFailed);
        assert_eq!(upgraded.cluster.status_reason.as_deref(), Some("broken"));
        assert_eq!(upgraded.cluster.cluster_template_id, Uuid::from_u128(7));
        assert_eq!(
            upgraded.cluster.labels.get("kube_tag"),
            None,
            "labels restored"
        );
        assert_eq!(upgraded.nodegroups[1].status, UpdateFailed);
        assert_eq!(
            upgraded.nodegroups[1].status_reason.as_deref(),
            Some("broken")
        );
        assert_eq!(upgraded.nodegroups[2].status, CreateComplete, "untouched");

        let mut scaled = aggregate(CreateComplete);
        scaled.scale_default_workers(5, true, &request()).unwrap();
        let recorded = parameters(&scaled);
        assert!(recorded.rollback);
        assert_eq!(recorded.previous_node_counts, vec![(Uuid::from_u128(2), 2)]);
        scaled
            .start_rollback("no room", &recorded, at(3_000))
            .unwrap();
        assert_eq!(scaled.cluster.status, RollbackInProgress);
        assert_eq!(scaled.nodegroups[1].node_count, 2);
        scaled
            .succeed(
                Phase::Rollback,
                true,
                &Observed::default(),
                &recorded,
                at(4_000),
            )
            .unwrap();
        assert_eq!(scaled.cluster.status, RollbackComplete);
        assert_eq!(scaled.nodegroups[1].status, UpdateComplete);
    }

    /// An older operation's outcome, with a newer one waiting: the status and the counts the
    /// newer one asked for are left to it.
    #[test]
    fn an_outcome_with_a_newer_operation_waiting_leaves_status_and_counts_alone() {
        let mut scaled = aggregate(CreateComplete);
        scaled.scale_default_workers(5, false, &request()).unwrap();
        let recorded = parameters(&scaled);
        // A later resize asked for 7 meanwhile (operation 9 after ours, 8).
        scaled.nodegroups[1].node_count = 7;
        scaled.unfinished_operations = vec![8, 9];
        assert!(scaled.has_newer_operation(8));
        assert!(!scaled.has_newer_operation(9));
        let settle = !scaled.has_newer_operation(8);
        scaled
            .fail(Phase::Update, settle, "no room", &recorded, at(3_000))
            .unwrap();
        assert_eq!(
            scaled.cluster.status, UpdateInProgress,
            "the newer one settles it"
        );
        assert_eq!(scaled.nodegroups[1].node_count, 7, "not put back to 2");
        assert_eq!(
            scaled.nodegroups[1].status, UpdateInProgress,
            "left to the newer one"
        );
        assert_eq!(
            scaled.cluster.status_reason.as_deref(),
            Some("A change failed (no room); applying the next one.")
        );
    }

    #[test]
    fn success_settles_nodegroups_records_what_was_seen_and_drops_deleted_ones() {
        let mut removing = aggregate(CreateComplete);
        assert!(removing
            .remove_nodegroup(Uuid::from_u128(3), &request())
            .unwrap());
        let seen = Observed {
            api_address: Some("tcp://10.0.0.9:2376".to_owned()),
            nodegroups: vec![ObservedNodeGroup {
                uuid: Uuid::from_u128(2),
                node_addresses: vec!["10.0.0.3".to_owned(), "10.0.0.4".to_owned()],
                coe_version: Some("24.0".to_owned()),
            }],
            ..Observed::default()
        };
        removing
            .succeed(
                Phase::Update,
                true,
                &seen,
                &OperationParameters::default(),
                at(3_000),
            )
            .unwrap();
        assert_eq!(removing.cluster.status, UpdateComplete);
        assert_eq!(removing.cluster.stack_id.as_deref(), Some("stack"), "kept");
        assert_eq!(
            removing.cluster.api_address.as_deref(),
            Some("tcp://10.0.0.9:2376")
        );
        assert_eq!(
            removing.nodegroups.len(),
            2,
            "the deleted nodegroup is gone"
        );
        let worker = &removing.nodegroups[1];
        assert_eq!(worker.node_addresses.len(), 2);
        assert_eq!(worker.updated_at, Some(at(3_000)));
        assert_eq!(
            removing.nodegroups[0].updated_at, None,
            "a nodegroup nothing happened to keeps its time (the stack id it already had)"
        );
    }

    #[test]
    fn refusals_are_errors_with_upstreams_words() {
        let busy = aggregate(UpdateInProgress);
        let mut scaled = busy.clone();
        let refused = scaled
            .scale_default_workers(5, false, &request())
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "Updating a cluster when status is \"UPDATE_IN_PROGRESS\" is not supported."
        );
        assert_eq!(refused.kind(), RefusalKind::BadRequest);
        assert_eq!(scaled, busy, "a refused change changes nothing");

        let mut resized = aggregate(CreateComplete);
        resized.nodegroups[2].max_node_count = Some(3);
        let refused = resized
            .resize(Uuid::from_u128(3), 4, Vec::new(), &request())
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "Resizing extra outside the allowed range: min_node_count = 0, max_node_count = 3"
        );

        let mut default = aggregate(CreateComplete);
        let refused = default
            .remove_nodegroup(Uuid::from_u128(2), &request())
            .unwrap_err();
        assert_eq!(refused, ChangeRefused::DefaultNodegroup);

        let mut taken = aggregate(CreateComplete);
        let refused = taken
            .add_nodegroup(nodegroup(0, "extra", "worker", false, 1), &request())
            .unwrap_err();
        assert_eq!(refused.kind(), RefusalKind::Conflict);

        let mut master = aggregate(CreateComplete);
        let refused = master
            .add_nodegroup(nodegroup(0, "more-masters", "master", false, 1), &request())
            .unwrap_err();
        assert_eq!(refused, ChangeRefused::MasterNodegroup);

        // A nodegroup being deleted cannot be resized back to life.
        let mut deleting = aggregate(CreateComplete);
        deleting.nodegroups[2].status = DeleteInProgress;
        let refused = deleting
            .resize(Uuid::from_u128(3), 2, Vec::new(), &request())
            .unwrap_err();
        assert!(
            matches!(refused, ChangeRefused::NodegroupBusy { .. }),
            "{refused}"
        );

        // An outcome the cluster can no longer take is an error, never skipped.
        let mut deleted = aggregate(DeleteInProgress);
        let refused = deleted
            .succeed(
                Phase::Update,
                true,
                &Observed::default(),
                &OperationParameters::default(),
                at(3_000),
            )
            .unwrap_err();
        assert!(matches!(refused, ChangeRefused::Transition(_)), "{refused}");

        let mut upgrading = aggregate(UpdateFailed);
        let refused = upgrading
            .upgrade(
                &Upgrade {
                    template: Uuid::from_u128(8),
                    template_name: "new",
                    image_id: "new-image",
                    current_template_name: "old",
                    nodegroup: Some("extra"),
                    max_batch_size: None,
                    kube_tag: None,
                },
                &request(),
            )
            .unwrap_err();
        assert_eq!(refused.kind(), RefusalKind::Conflict, "{refused}");
    }

    #[test]
    fn a_new_nodegroup_joins_in_creation_with_its_operation() {
        let mut grown = aggregate(CreateComplete);
        grown
            .add_nodegroup(nodegroup(0, "gpu", "worker", false, 2), &request())
            .unwrap();
        let added = grown.nodegroup("gpu").expect("added");
        assert_eq!(added.status, CreateInProgress);
        assert_eq!(added.cluster_uuid, grown.cluster.uuid);
        assert_eq!(grown.cluster.status, UpdateInProgress);
        assert_eq!(parameters(&grown).nodegroup, Some(added.uuid));

        let mut unreachable = aggregate(CreateComplete);
        unreachable.cluster.api_address = None;
        assert_eq!(
            unreachable.check_nodegroup_name("gpu"),
            Err(ChangeRefused::NoApiAddress)
        );
    }
}
