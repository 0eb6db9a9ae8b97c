//! Long-running actions as persisted records: the conductor claims them with a lease, runs
//! them step by step, and records the outcome. A crashed conductor's lease runs out and
//! another one takes the operation over.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::time::Timestamp;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl FromStr for $name {
            type Err = ();

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                $name::ALL.iter().copied().find(|item| item.as_str() == value).ok_or(())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// What an operation does to its cluster.
    OperationKind {
        CreateCluster => "create_cluster",
        UpdateCluster => "update_cluster",
        ResizeCluster => "resize_cluster",
        UpgradeCluster => "upgrade_cluster",
        DeleteCluster => "delete_cluster",
        RotateCa => "rotate_ca",
        RotateCredentials => "rotate_credentials",
        CreateNodegroup => "create_nodegroup",
        UpdateNodegroup => "update_nodegroup",
        DeleteNodegroup => "delete_nodegroup",
        AutoscaleCluster => "autoscale_cluster",
        ReplaceNodes => "replace_nodes",
    }
);

wire_enum!(
    /// Where an operation is in its life.
    OperationState {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

/// A persisted operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub id: i64,
    pub uuid: Uuid,
    pub cluster_uuid: Uuid,
    pub kind: OperationKind,
    /// The operation's parameters, as JSON (node counts, template, …).
    pub payload: String,
    pub state: OperationState,
    /// How many times a conductor has claimed it.
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Timestamp>,
    /// Why it failed, in words a tenant understands.
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Option<Timestamp>,
}

impl Operation {
    pub fn new(cluster_uuid: Uuid, kind: OperationKind, payload: String, now: Timestamp) -> Self {
        Self {
            id: 0,
            uuid: Uuid::new_v4(),
            cluster_uuid,
            kind,
            payload,
            state: OperationState::Pending,
            attempts: 0,
            lease_owner: None,
            lease_until: None,
            error: None,
            created_at: now,
            updated_at: None,
        }
    }
}

/// Who asked for an operation (for audit notifications).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Initiator {
    pub user_id: String,
    pub project_id: String,
}

/// What an operation needs beyond its kind and cluster, stored as its JSON payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperationParameters {
    #[serde(default)]
    pub initiator: Initiator,
    /// The nodegroup a resize or nodegroup operation is about.
    #[serde(default)]
    pub nodegroup: Option<Uuid>,
    /// Nodes the tenant wants gone first when shrinking.
    #[serde(default)]
    pub nodes_to_remove: Vec<String>,
    /// Node counts before the change, to restore on rollback.
    #[serde(default)]
    pub previous_node_counts: Vec<(Uuid, i64)>,
    /// The template before an upgrade, to restore on rollback.
    #[serde(default)]
    pub previous_template: Option<Uuid>,
    /// The cluster's labels before an upgrade changed its `kube_tag` (stored JSON), to
    /// restore on rollback.
    #[serde(default)]
    pub previous_labels: Option<String>,
    /// Roll back to the previous counts when the update fails.
    #[serde(default)]
    pub rollback: bool,
    #[serde(default)]
    pub max_batch_size: Option<i64>,
    /// What success records as the cluster's (and the nodegroup's) `status_reason` instead of
    /// "Cluster updated.": why a change the cluster asked for itself (autoscaling, healing
    /// by replacement) was made, so that it stays readable once the change is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_reason: Option<String>,
}

impl OperationParameters {
    pub fn to_payload(&self) -> String {
        serde_json::to_string(self).expect("parameters serialize")
    }

    /// Unknown or damaged payloads read as defaults: an operation must always be runnable
    /// to an end.
    pub fn from_payload(payload: &str) -> Self {
        serde_json::from_str(payload).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_states_round_trip() {
        for kind in OperationKind::ALL {
            assert_eq!(kind.as_str().parse::<OperationKind>(), Ok(*kind));
        }
        for state in OperationState::ALL {
            assert_eq!(state.as_str().parse::<OperationState>(), Ok(*state));
        }
        assert!("explode".parse::<OperationKind>().is_err());
    }
}
