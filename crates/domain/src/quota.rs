//! Per-project limits. The only resource upstream limits is `Cluster`.

use crate::time::Timestamp;

/// The resource name quotas apply to.
pub const CLUSTER_RESOURCE: &str = "Cluster";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub id: i64,
    pub project_id: String,
    pub resource: String,
    pub hard_limit: i64,
    pub created_at: Timestamp,
    pub updated_at: Option<Timestamp>,
}
