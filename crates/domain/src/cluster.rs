//! Cluster status: the closed set upstream reports and the one function that moves it.
//!
//! Every status change of a cluster goes through [`ClusterStatus::apply`]; callers name what
//! happened ([`StatusEvent`]) and get the next status or a refusal whose message is the one
//! upstream's conductor gives.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::labels::Labels;
use crate::time::Timestamp;

/// The longest `create_timeout` a cluster may ask for: one week, in minutes. (Upstream has
/// no bound; minutes beyond it would only postpone noticing a stuck create.)
pub const MAX_CREATE_TIMEOUT_MINUTES: i64 = 7 * 24 * 60;

/// Cluster (and nodegroup) status, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterStatus {
    CreateInProgress,
    CreateFailed,
    CreateComplete,
    UpdateInProgress,
    UpdateFailed,
    UpdateComplete,
    DeleteInProgress,
    DeleteFailed,
    DeleteComplete,
    ResumeComplete,
    ResumeFailed,
    RestoreComplete,
    RollbackInProgress,
    RollbackFailed,
    RollbackComplete,
    SnapshotComplete,
    CheckComplete,
    AdoptComplete,
}

impl ClusterStatus {
    pub const ALL: [ClusterStatus; 18] = [
        ClusterStatus::CreateInProgress,
        ClusterStatus::CreateFailed,
        ClusterStatus::CreateComplete,
        ClusterStatus::UpdateInProgress,
        ClusterStatus::UpdateFailed,
        ClusterStatus::UpdateComplete,
        ClusterStatus::DeleteInProgress,
        ClusterStatus::DeleteFailed,
        ClusterStatus::DeleteComplete,
        ClusterStatus::ResumeComplete,
        ClusterStatus::ResumeFailed,
        ClusterStatus::RestoreComplete,
        ClusterStatus::RollbackInProgress,
        ClusterStatus::RollbackFailed,
        ClusterStatus::RollbackComplete,
        ClusterStatus::SnapshotComplete,
        ClusterStatus::CheckComplete,
        ClusterStatus::AdoptComplete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClusterStatus::CreateInProgress => "CREATE_IN_PROGRESS",
            ClusterStatus::CreateFailed => "CREATE_FAILED",
            ClusterStatus::CreateComplete => "CREATE_COMPLETE",
            ClusterStatus::UpdateInProgress => "UPDATE_IN_PROGRESS",
            ClusterStatus::UpdateFailed => "UPDATE_FAILED",
            ClusterStatus::UpdateComplete => "UPDATE_COMPLETE",
            ClusterStatus::DeleteInProgress => "DELETE_IN_PROGRESS",
            ClusterStatus::DeleteFailed => "DELETE_FAILED",
            ClusterStatus::DeleteComplete => "DELETE_COMPLETE",
            ClusterStatus::ResumeComplete => "RESUME_COMPLETE",
            ClusterStatus::ResumeFailed => "RESUME_FAILED",
            ClusterStatus::RestoreComplete => "RESTORE_COMPLETE",
            ClusterStatus::RollbackInProgress => "ROLLBACK_IN_PROGRESS",
            ClusterStatus::RollbackFailed => "ROLLBACK_FAILED",
            ClusterStatus::RollbackComplete => "ROLLBACK_COMPLETE",
            ClusterStatus::SnapshotComplete => "SNAPSHOT_COMPLETE",
            ClusterStatus::CheckComplete => "CHECK_COMPLETE",
            ClusterStatus::AdoptComplete => "ADOPT_COMPLETE",
        }
    }

    /// Upstream's "complete" set: a cluster at rest that accepts updates.
    pub fn is_complete(self) -> bool {
        matches!(
            self,
            ClusterStatus::CreateComplete
                | ClusterStatus::UpdateComplete
                | ClusterStatus::ResumeComplete
                | ClusterStatus::RestoreComplete
                | ClusterStatus::RollbackComplete
                | ClusterStatus::SnapshotComplete
                | ClusterStatus::CheckComplete
                | ClusterStatus::AdoptComplete
        )
    }

    /// The statuses that make a GET carry `faults`.
    pub fn is_failed(self) -> bool {
        matches!(
            self,
            ClusterStatus::CreateFailed
                | ClusterStatus::UpdateFailed
                | ClusterStatus::DeleteFailed
                | ClusterStatus::RollbackFailed
                | ClusterStatus::ResumeFailed
        )
    }

    pub fn is_in_progress(self) -> bool {
        matches!(
            self,
            ClusterStatus::CreateInProgress
                | ClusterStatus::UpdateInProgress
                | ClusterStatus::DeleteInProgress
                | ClusterStatus::RollbackInProgress
        )
    }

    /// The status after `event`, or why the cluster cannot take it now.
    pub fn apply(self, event: StatusEvent) -> Result<ClusterStatus, TransitionRefused> {
        use ClusterStatus as S;
        use StatusEvent as E;
        let refused = TransitionRefused { from: self, event };
        let next = match (event, self) {
            (E::CreateSucceeded, S::CreateInProgress) => S::CreateComplete,
            (E::CreateFailed, S::CreateInProgress) => S::CreateFailed,
            // A failed update may be retried; anything else must be at rest.
            (E::UpdateStarted, status) if status.is_complete() || status == S::UpdateFailed => {
                S::UpdateInProgress
            }
            // Resizes are accepted mid-update too (the autoscaler calls often).
            (E::ResizeStarted, status)
                if status.is_complete()
                    || status == S::UpdateInProgress
                    || status == S::UpdateFailed =>
            {
                S::UpdateInProgress
            }
            (E::UpdateSucceeded, S::UpdateInProgress) => S::UpdateComplete,
            (E::UpdateFailed, S::UpdateInProgress) => S::UpdateFailed,
            (E::RollbackStarted, S::UpdateInProgress | S::UpdateFailed) => S::RollbackInProgress,
            (E::RollbackSucceeded, S::RollbackInProgress) => S::RollbackComplete,
            (E::RollbackFailed, S::RollbackInProgress) => S::RollbackFailed,
            // A cluster in any status can be deleted, again and again until it is gone.
            (E::DeleteStarted, S::DeleteComplete) => return Err(refused),
            (E::DeleteStarted, _) => S::DeleteInProgress,
            (E::DeleteSucceeded, S::DeleteInProgress) => S::DeleteComplete,
            (E::DeleteFailed, S::DeleteInProgress) => S::DeleteFailed,
            _ => return Err(refused),
        };
        Ok(next)
    }
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClusterStatus {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        ClusterStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or(())
    }
}

/// `health_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    Unknown,
}

impl HealthStatus {
    pub const ALL: [HealthStatus; 3] = [
        HealthStatus::Healthy,
        HealthStatus::Unhealthy,
        HealthStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
            HealthStatus::Unknown => "UNKNOWN",
        }
    }
}

impl FromStr for HealthStatus {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        HealthStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or(())
    }
}

/// A cluster as stored. Node counts and addresses live in its nodegroups.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Database id; 0 until stored.
    pub id: i64,
    pub uuid: Uuid,
    pub name: Option<String>,
    pub project_id: String,
    pub user_id: String,
    pub cluster_template_id: Uuid,
    pub keypair: Option<String>,
    pub docker_volume_size: Option<i64>,
    pub labels: Labels,
    pub master_flavor_id: Option<String>,
    pub flavor_id: Option<String>,
    /// Minutes.
    pub create_timeout: Option<i64>,
    pub discovery_url: Option<String>,
    pub fixed_network: Option<String>,
    pub fixed_subnet: Option<String>,
    pub floating_ip_enabled: bool,
    pub master_lb_enabled: bool,
    pub status: ClusterStatus,
    pub status_reason: Option<String>,
    pub health_status: Option<HealthStatus>,
    pub health_status_reason: Map<String, Value>,
    /// The driver's orchestration id (`stack_id` / `cluster_id` on the wire).
    pub stack_id: Option<String>,
    pub api_address: Option<String>,
    pub coe_version: Option<String>,
    pub container_version: Option<String>,
    /// Workers of every non-master nodegroup (derived from the nodegroups).
    pub node_count: i64,
    /// Masters of every master nodegroup (derived from the nodegroups).
    pub master_count: i64,
    pub node_addresses: Vec<String>,
    pub master_addresses: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Option<Timestamp>,
    /// Incremented by every stored change; updates are compare-and-set on it.
    pub version: i64,
}

impl Cluster {
    /// Recomputes the counts and addresses the cluster reports from its nodegroups.
    pub fn summarize(&mut self, nodegroups: &[NodeGroup]) {
        self.node_count = 0;
        self.master_count = 0;
        self.node_addresses.clear();
        self.master_addresses.clear();
        for nodegroup in nodegroups {
            // Saturating: counts stored before they were bounded may be huge.
            if nodegroup.is_master() {
                self.master_count = self.master_count.saturating_add(nodegroup.node_count);
                self.master_addresses
                    .extend(nodegroup.node_addresses.iter().cloned());
            } else {
                self.node_count = self.node_count.saturating_add(nodegroup.node_count);
                self.node_addresses
                    .extend(nodegroup.node_addresses.iter().cloned());
            }
        }
    }

    /// The create deadline: `create_timeout` minutes after creation; none for 0 (the
    /// conductor then applies its operation timeout).
    pub fn create_deadline(&self) -> Option<Timestamp> {
        match self.create_timeout {
            Some(minutes) if minutes > 0 => Some(Timestamp::from_unix_seconds(
                self.created_at
                    .unix_seconds()
                    .saturating_add(minutes.min(MAX_CREATE_TIMEOUT_MINUTES) * 60),
            )),
            _ => None,
        }
    }

    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.uuid.to_string())
    }
}

/// A node taint (`node_taints` items).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: String,
}

/// The two nodegroups every cluster has.
pub const DEFAULT_MASTER_NODEGROUP: &str = "default-master";
pub const DEFAULT_WORKER_NODEGROUP: &str = "default-worker";

/// A group of nodes of one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeGroup {
    /// Database id (the integer `id` clients see); 0 until stored.
    pub id: i64,
    pub uuid: Uuid,
    pub cluster_uuid: Uuid,
    pub project_id: String,
    pub name: String,
    pub docker_volume_size: Option<i64>,
    pub labels: Labels,
    pub flavor_id: Option<String>,
    pub image_id: Option<String>,
    pub node_addresses: Vec<String>,
    pub node_count: i64,
    pub role: String,
    pub min_node_count: i64,
    pub max_node_count: Option<i64>,
    pub is_default: bool,
    pub stack_id: Option<String>,
    pub status: ClusterStatus,
    pub status_reason: Option<String>,
    /// The COE version its nodes run (`version` on the wire).
    pub coe_version: Option<String>,
    pub node_labels: Map<String, Value>,
    pub node_taints: Vec<Taint>,
    pub created_at: Timestamp,
    pub updated_at: Option<Timestamp>,
    /// Row version for compare-and-set updates.
    pub version: i64,
}

impl NodeGroup {
    pub fn is_master(&self) -> bool {
        self.role == "master"
    }

    /// The most nodes an autoscaler may give the nodegroup: its `max_node_count`, or (the
    /// default worker has none, as upstream) its `max_node_count` label; None when unbounded.
    /// A label is the tenant's free text: it is held to the API's own bound on node counts.
    pub fn autoscaling_maximum(&self) -> Option<i64> {
        self.max_node_count
            .or_else(|| {
                self.labels
                    .get("max_node_count")
                    .and_then(|value| value.trim().parse::<i64>().ok())
            })
            .map(|maximum| maximum.min(crate::nodegroup::MAX_NODE_COUNT))
    }
}

/// What happened to a nodegroup. Nodegroups follow their cluster's changes with a table of
/// their own: a change may start from any status but a deletion under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodegroupEvent {
    ChangeStarted,
    DeleteStarted,
    Succeeded,
    Failed,
}

impl NodegroupEvent {
    pub const ALL: [NodegroupEvent; 4] = [
        NodegroupEvent::ChangeStarted,
        NodegroupEvent::DeleteStarted,
        NodegroupEvent::Succeeded,
        NodegroupEvent::Failed,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("A nodegroup in status \"{from}\" cannot take the event {event:?}.")]
pub struct NodegroupTransitionRefused {
    pub from: ClusterStatus,
    pub event: NodegroupEvent,
}

impl ClusterStatus {
    /// A nodegroup's status after `event`, or why it cannot take it now.
    pub fn apply_to_nodegroup(
        self,
        event: NodegroupEvent,
    ) -> Result<ClusterStatus, NodegroupTransitionRefused> {
        use ClusterStatus as S;
        use NodegroupEvent as E;
        let next = match (event, self) {
            (E::ChangeStarted, S::DeleteInProgress | S::DeleteComplete) => None,
            (E::ChangeStarted, _) => Some(S::UpdateInProgress),
            (E::DeleteStarted, S::DeleteComplete) => None,
            (E::DeleteStarted, _) => Some(S::DeleteInProgress),
            (E::Succeeded, S::CreateInProgress) => Some(S::CreateComplete),
            (E::Succeeded, S::UpdateInProgress) => Some(S::UpdateComplete),
            (E::Succeeded, S::DeleteInProgress) => Some(S::DeleteComplete),
            (E::Succeeded, S::RollbackInProgress) => Some(S::RollbackComplete),
            (E::Failed, S::CreateInProgress) => Some(S::CreateFailed),
            (E::Failed, S::UpdateInProgress) => Some(S::UpdateFailed),
            (E::Failed, S::DeleteInProgress) => Some(S::DeleteFailed),
            (E::Failed, S::RollbackInProgress) => Some(S::RollbackFailed),
            (E::Succeeded | E::Failed, _) => None,
        };
        next.ok_or(NodegroupTransitionRefused { from: self, event })
    }
}

/// What happened to a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusEvent {
    CreateSucceeded,
    CreateFailed,
    /// A change of node count, health-driven repair, upgrade, CA rotation or nodegroup change.
    UpdateStarted,
    ResizeStarted,
    UpdateSucceeded,
    UpdateFailed,
    RollbackStarted,
    RollbackSucceeded,
    RollbackFailed,
    DeleteStarted,
    DeleteSucceeded,
    DeleteFailed,
}

impl StatusEvent {
    pub const ALL: [StatusEvent; 12] = [
        StatusEvent::CreateSucceeded,
        StatusEvent::CreateFailed,
        StatusEvent::UpdateStarted,
        StatusEvent::ResizeStarted,
        StatusEvent::UpdateSucceeded,
        StatusEvent::UpdateFailed,
        StatusEvent::RollbackStarted,
        StatusEvent::RollbackSucceeded,
        StatusEvent::RollbackFailed,
        StatusEvent::DeleteStarted,
        StatusEvent::DeleteSucceeded,
        StatusEvent::DeleteFailed,
    ];
}

/// A refused transition; the message is upstream's conductor refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct TransitionRefused {
    pub from: ClusterStatus,
    pub event: StatusEvent,
}

impl fmt::Display for TransitionRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.event {
            StatusEvent::DeleteStarted => {
                write!(
                    f,
                    "Deleting a cluster when status is \"{}\" is not supported.",
                    self.from
                )
            }
            _ => write!(
                f,
                "Updating a cluster when status is \"{}\" is not supported.",
                self.from
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClusterStatus::{
        CreateComplete, CreateInProgress, DeleteComplete, DeleteInProgress, RollbackComplete,
        RollbackInProgress, UpdateComplete, UpdateInProgress,
    };
    use StatusEvent::{
        CreateSucceeded, DeleteStarted, DeleteSucceeded, ResizeStarted, RollbackStarted,
        RollbackSucceeded, UpdateStarted, UpdateSucceeded,
    };

    /// The whole table: every (status, event) pair, and where it leads.
    fn expected(status: ClusterStatus, event: StatusEvent) -> Option<ClusterStatus> {
        let at_rest = status.is_complete();
        match event {
            CreateSucceeded => (status == CreateInProgress).then_some(CreateComplete),
            StatusEvent::CreateFailed => {
                (status == CreateInProgress).then_some(ClusterStatus::CreateFailed)
            }
            UpdateStarted => {
                (at_rest || status == ClusterStatus::UpdateFailed).then_some(UpdateInProgress)
            }
            ResizeStarted => {
                (at_rest || status == UpdateInProgress || status == ClusterStatus::UpdateFailed)
                    .then_some(UpdateInProgress)
            }
            UpdateSucceeded => (status == UpdateInProgress).then_some(UpdateComplete),
            StatusEvent::UpdateFailed => {
                (status == UpdateInProgress).then_some(ClusterStatus::UpdateFailed)
            }
            RollbackStarted => matches!(status, UpdateInProgress | ClusterStatus::UpdateFailed)
                .then_some(RollbackInProgress),
            RollbackSucceeded => (status == RollbackInProgress).then_some(RollbackComplete),
            StatusEvent::RollbackFailed => {
                (status == RollbackInProgress).then_some(ClusterStatus::RollbackFailed)
            }
            DeleteStarted => (status != DeleteComplete).then_some(DeleteInProgress),
            DeleteSucceeded => (status == DeleteInProgress).then_some(DeleteComplete),
            StatusEvent::DeleteFailed => {
                (status == DeleteInProgress).then_some(ClusterStatus::DeleteFailed)
            }
        }
    }

    #[test]
    fn every_pair_of_status_and_event() {
        let mut allowed = 0;
        for status in ClusterStatus::ALL {
            for event in StatusEvent::ALL {
                let outcome = status.apply(event);
                assert_eq!(
                    outcome.ok(),
                    expected(status, event),
                    "{status} + {event:?}"
                );
                if let Err(refused) = outcome {
                    assert_eq!(
                        refused,
                        TransitionRefused {
                            from: status,
                            event
                        }
                    );
                } else {
                    allowed += 1;
                }
            }
        }
        assert_eq!(allowed, 1 + 1 + 9 + 10 + 1 + 1 + 2 + 1 + 1 + 17 + 1 + 1);
    }

    #[test]
    fn nothing_stays_in_progress_without_a_way_out() {
        for status in ClusterStatus::ALL
            .into_iter()
            .filter(|s| s.is_in_progress())
        {
            let exits: Vec<ClusterStatus> = StatusEvent::ALL
                .into_iter()
                .filter_map(|event| status.apply(event).ok())
                .filter(|next| !next.is_in_progress())
                .collect();
            assert!(!exits.is_empty(), "{status} can end");
            assert!(
                exits.iter().any(|next| next.is_failed()),
                "{status} can fail"
            );
        }
    }

    #[test]
    fn statuses_round_trip_and_refusals_read_like_upstream() {
        for status in ClusterStatus::ALL {
            assert_eq!(status.as_str().parse::<ClusterStatus>(), Ok(status));
        }
        assert!("DONE".parse::<ClusterStatus>().is_err());
        assert_eq!(
            CreateInProgress
                .apply(UpdateStarted)
                .unwrap_err()
                .to_string(),
            "Updating a cluster when status is \"CREATE_IN_PROGRESS\" is not supported."
        );
        assert_eq!(
            ClusterStatus::ALL.iter().filter(|s| s.is_failed()).count(),
            5
        );
        assert_eq!(
            ClusterStatus::ALL
                .iter()
                .filter(|s| s.is_complete())
                .count(),
            8
        );
    }
}
