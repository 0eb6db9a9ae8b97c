//! What monitoring reads: the operations queue, clusters by driver, status and health, and
//! the pool. Each is one indexed or grouped query with a bounded answer; the API caches the
//! answers for a second, so that scrapes cannot load the database.

use sqlx::Row;

use crate::{Store, StoreError};

/// The operations queue, database-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSummary {
    pub pending: i64,
    pub running: i64,
    /// When the oldest pending operation was enqueued (Unix seconds); none when none waits.
    pub oldest_pending_created_at: Option<i64>,
}

/// Clusters of one combination of their template's driver, status and health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTally {
    pub driver: Option<String>,
    pub status: String,
    pub health_status: Option<String>,
    pub count: i64,
}

/// The connections of this process's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub open: u32,
    pub idle: usize,
    pub max: u32,
}

/// The most (driver, status, health) combinations read: statuses and health values are
/// closed sets (13 × 3 and none), drivers few; a database holding more (hand-edited rows)
/// is cut here rather than exported.
pub const MAX_CLUSTER_TALLIES: i64 = 1000;

impl Store {
    /// Pending and running operations and the oldest pending one's age, from the
    /// `(state, lease_until)` index.
    pub async fn queue_summary(&self) -> Result<QueueSummary, StoreError> {
        let sql = "SELECT state, COUNT(*) AS n, MIN(created_at) AS oldest FROM operation \
                   WHERE state IN ('pending', 'running') GROUP BY state";
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        let mut summary = QueueSummary::default();
        for row in rows {
            let state: String = row.try_get("state")?;
            let count: i64 = row.try_get("n")?;
            match state.as_str() {
                "pending" => {
                    summary.pending = count;
                    summary.oldest_pending_created_at = row.try_get("oldest")?;
                }
                _ => summary.running = count,
            }
        }
        Ok(summary)
    }

    /// Clusters counted by their template's driver, status and health; at most
    /// [`MAX_CLUSTER_TALLIES`] combinations.
    pub async fn cluster_tallies(&self) -> Result<Vec<ClusterTally>, StoreError> {
        let sql = format!(
            "SELECT t.driver AS driver, c.status AS status, c.health_status AS health, \
             COUNT(*) AS n FROM cluster c LEFT JOIN cluster_template t \
             ON t.uuid = c.cluster_template_id \
             GROUP BY t.driver, c.status, c.health_status \
             ORDER BY t.driver, c.status, c.health_status LIMIT {MAX_CLUSTER_TALLIES}"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(ClusterTally {
                    driver: row.try_get("driver")?,
                    status: row.try_get("status")?,
                    health_status: row.try_get("health")?,
                    count: row.try_get("n")?,
                })
            })
            .collect()
    }

    /// Open, idle and most connections of the pool (no query).
    pub fn pool_usage(&self) -> PoolUsage {
        PoolUsage {
            open: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
        }
    }
}
