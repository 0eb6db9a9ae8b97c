//! Monitor leases: which conductor watches (and heals) a cluster's health. One row per
//! cluster in `cluster_monitor (cluster_uuid, owner, lease_until)`, claimed and renewed with
//! the same portable compare-and-set as operations (`UPDATE … WHERE lease_until < now`), so
//! that at most one live conductor holds a cluster at a time; a conductor that stops deletes
//! its rows, a dead one's run out (or a conductor of the same host ends them at once).

use std::collections::HashSet;

use magnum_domain::time::Timestamp;
use sqlx::Row;
use uuid::Uuid;

use crate::{Store, StoreError};

/// Clusters named in one statement (`cluster_uuid IN (…)`): far below every engine's limit
/// on bound parameters (SQLite's is 32,766; PostgreSQL's 65,535).
pub const MONITOR_CLAIM_CHUNK: usize = 200;

/// A cluster's monitor lease as stored: the conductor holding it and when it runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorHolder {
    pub owner: String,
    pub lease_until: Timestamp,
}

impl Store {
    /// Renews `owner`'s monitor leases and takes those of `clusters` that nobody holds (no
    /// row, or a lease that ran out before `now`), until `now + lease_seconds`. Rows `owner`
    /// holds for clusters no longer in `clusters` (gone from its drivers) are dropped.
    /// Returns the clusters of `clusters` that `owner` holds afterwards. Two owners never
    /// hold one cluster: every take is a compare-and-set on the row.
    pub async fn claim_monitors(
        &self,
        owner: &str,
        clusters: &[Uuid],
        now: Timestamp,
        lease_seconds: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        // Always in one order, so that claimers lock rows alike (no deadlock to retry).
        let mut clusters = clusters.to_vec();
        clusters.sort_unstable();
        clusters.dedup();
        // A deadlock or a busy SQLite is tried again: every step is idempotent.
        self.retrying(|| self.claim_monitors_once(owner, &clusters, now, lease_seconds))
            .await
    }

    async fn claim_monitors_once(
        &self,
        owner: &str,
        clusters: &[Uuid],
        now: Timestamp,
        lease_seconds: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        let now_seconds = now.unix_seconds();
        let lease_until = now_seconds + lease_seconds;
        let sql = self.sql("UPDATE cluster_monitor SET lease_until = ? WHERE owner = ?");
        sqlx::query(&sql)
            .bind(lease_until)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        let mut known = HashSet::new();
        for chunk in clusters.chunks(MONITOR_CLAIM_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let take = format!(
                "UPDATE cluster_monitor SET owner = ?, lease_until = ? \
                 WHERE lease_until < ? AND cluster_uuid IN ({marks})"
            );
            let take = self.sql(&take);
            let mut query = sqlx::query(&take)
                .bind(owner)
                .bind(lease_until)
                .bind(now_seconds);
            for cluster in chunk {
                query = query.bind(cluster.to_string());
            }
            query.execute(&self.pool).await?;
            let listed =
                format!("SELECT cluster_uuid FROM cluster_monitor WHERE cluster_uuid IN ({marks})");
            let listed = self.sql(&listed);
            let mut query = sqlx::query(&listed);
            for cluster in chunk {
                query = query.bind(cluster.to_string());
            }
            for row in query.fetch_all(&self.pool).await? {
                known.insert(row.try_get::<String, _>("cluster_uuid")?);
            }
        }
        // Clusters nobody ever watched: the first insert wins, the others find the row.
        let insert = self
            .sql("INSERT INTO cluster_monitor (cluster_uuid, owner, lease_until) VALUES (?, ?, ?)");
        for cluster in clusters {
            let uuid = cluster.to_string();
            if known.contains(&uuid) {
                continue;
            }
            let inserted = sqlx::query(&insert)
                .bind(&uuid)
                .bind(owner)
                .bind(lease_until)
                .execute(&self.pool)
                .await;
            match inserted {
                Ok(_) => {}
                Err(error) if StoreError::is_unique_violation(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let held = self.monitors_of(owner).await?;
        let wanted: HashSet<&Uuid> = clusters.iter().collect();
        let drop_row = self.sql("DELETE FROM cluster_monitor WHERE cluster_uuid = ? AND owner = ?");
        let mut kept = Vec::new();
        for cluster in held {
            if wanted.contains(&cluster) {
                kept.push(cluster);
            } else {
                sqlx::query(&drop_row)
                    .bind(cluster.to_string())
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
            }
        }
        kept.sort_unstable();
        Ok(kept)
    }

    /// The clusters `owner` holds monitor leases of (expired or not).
    pub async fn monitors_of(&self, owner: &str) -> Result<Vec<Uuid>, StoreError> {
        let sql = self.sql("SELECT cluster_uuid FROM cluster_monitor WHERE owner = ?");
        let rows = sqlx::query(&sql).bind(owner).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("cluster_uuid")?;
                Uuid::parse_str(&text)
                    .map_err(|_| StoreError::Corrupt(format!("cluster_monitor uuid {text:?}")))
            })
            .collect()
    }

    /// Who holds `cluster`'s monitor lease and until when (unix seconds), whether or not it
    /// has run out; `None` when nobody took it yet or its holder handed it back. One row per
    /// cluster: there is never more than one holder to tell.
    pub async fn monitor_holder(&self, cluster: Uuid) -> Result<Option<MonitorHolder>, StoreError> {
        let sql = self.sql("SELECT owner, lease_until FROM cluster_monitor WHERE cluster_uuid = ?");
        let row = sqlx::query(&sql)
            .bind(cluster.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| -> Result<MonitorHolder, StoreError> {
            Ok(MonitorHolder {
                owner: row.try_get("owner")?,
                lease_until: Timestamp::from_unix_seconds(row.try_get("lease_until")?),
            })
        })
        .transpose()
    }

    /// The owners of monitor leases whose name starts with `prefix`.
    pub async fn monitor_owners(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT owner FROM cluster_monitor")
            .fetch_all(&self.pool)
            .await?;
        let mut owners = Vec::new();
        for row in rows {
            let owner: String = row.try_get("owner")?;
            if owner.starts_with(prefix) {
                owners.push(owner);
            }
        }
        Ok(owners)
    }

    /// Ends the monitor leases of `owner`, known dead, so that others take its clusters at
    /// their next claim.
    pub async fn expire_monitors(&self, owner: &str) -> Result<u64, StoreError> {
        let sql = self.sql("UPDATE cluster_monitor SET lease_until = 0 WHERE owner = ?");
        let expired = sqlx::query(&sql).bind(owner).execute(&self.pool).await?;
        Ok(expired.rows_affected())
    }

    /// Hands back every monitor lease of `owner` (a graceful stop).
    pub async fn release_monitors(&self, owner: &str) -> Result<u64, StoreError> {
        let sql = self.sql("DELETE FROM cluster_monitor WHERE owner = ?");
        let released = sqlx::query(&sql).bind(owner).execute(&self.pool).await?;
        Ok(released.rows_affected())
    }

    /// Drops leases that ran out before `before`: clusters nobody watches any more (deleted
    /// while their watcher was dead). A cluster still watched somewhere is taken again by
    /// its next claim.
    pub async fn forget_stale_monitors(&self, before: Timestamp) -> Result<u64, StoreError> {
        let sql = self.sql("DELETE FROM cluster_monitor WHERE lease_until < ?");
        let forgotten = sqlx::query(&sql)
            .bind(before.unix_seconds())
            .execute(&self.pool)
            .await?;
        Ok(forgotten.rows_affected())
    }
}
