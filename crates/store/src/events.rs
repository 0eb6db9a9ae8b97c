//! Cluster events (`cluster_event`), written in the transaction of the change they describe.
//!
//! An event's `sequence` is the cluster generation its transaction bumped, times
//! [`SEQUENCE_STRIDE`], plus its index in the change. Every cluster write bumps that one row
//! first or last and holds its lock until commit, so sequences grow in commit order on every
//! engine: a reader that has seen sequence *n* never later finds a committed event below *n*.
//! That is what lets a stream resume from a position and let a cheap indexed poll
//! (`sequence > ?`) follow changes made by other processes without missing one.

use std::collections::BTreeMap;

use magnum_domain::cluster::{Cluster, ClusterStatus, HealthStatus};
use magnum_domain::event::{
    Cause, ClusterEvent, ClusterSnapshot, EventType, StoredEvent, MAX_EVENTS_PER_CHANGE,
};
use magnum_domain::time::Timestamp;
use sqlx::any::AnyRow;
use sqlx::{Any, Row};
use uuid::Uuid;

use crate::{text_column, Store, StoreError};

/// Sequences of one change: `generation * SEQUENCE_STRIDE + index`.
pub const SEQUENCE_STRIDE: i64 = 1_024;
const _: () = assert!(MAX_EVENTS_PER_CHANGE as i64 <= SEQUENCE_STRIDE);

/// The most events one read returns.
pub const MAX_EVENTS_PER_READ: i64 = 1_000;

const EVENT_COLUMNS: &str = "sequence, uuid, cluster_uuid, project_id, user_id, created_at, \
    event_type, reason, message, nodegroup, node, operation_uuid, request_id, cluster_name, \
    cluster_status, health_status, node_count, master_count";

/// Which events a read covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventScope {
    Cluster(Uuid),
    Project(String),
    All,
}

/// How long and how many events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetention {
    pub max_per_cluster: i64,
    /// Seconds.
    pub max_age: i64,
    /// Seconds after the cluster's deletion.
    pub keep_after_delete: i64,
}

impl Store {
    /// Writes `events` of a change in its transaction, after the cluster generation was
    /// bumped (see the module's documentation).
    pub(crate) async fn insert_events(
        &self,
        transaction: &mut sqlx::Transaction<'_, Any>,
        cluster: &Cluster,
        events: &[ClusterEvent],
        cause: &Cause,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let generation = self.current_generation(transaction, "cluster").await?;
        let snapshot = ClusterSnapshot::of(cluster);
        let query = format!(
            "INSERT INTO cluster_event ({EVENT_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        let sql = self.sql(&query);
        for (index, event) in events.iter().take(MAX_EVENTS_PER_CHANGE).enumerate() {
            sqlx::query(&sql)
                .bind(generation * SEQUENCE_STRIDE + index as i64)
                .bind(Uuid::new_v4().to_string())
                .bind(cluster.uuid.to_string())
                .bind(cluster.project_id.clone())
                .bind(cluster.user_id.clone())
                .bind(now.unix_seconds())
                .bind(event.event_type.as_str())
                .bind(event.reason.clone())
                .bind(event.message.clone())
                .bind(event.nodegroup.clone())
                .bind(event.node.clone())
                .bind(cause.operation.map(|uuid| uuid.to_string()))
                .bind(cause.request_id.clone())
                .bind(snapshot.name.clone())
                .bind(snapshot.status.as_str())
                .bind(snapshot.health_status.map(HealthStatus::as_str))
                .bind(snapshot.node_count)
                .bind(snapshot.master_count)
                .execute(&mut **transaction)
                .await?;
        }
        Ok(())
    }

    /// Appends events that change nothing of the cluster (a driver's step, an operation
    /// resumed): the cluster generation is bumped and the events written with the cluster's
    /// snapshot in one transaction, without rewriting the cluster (no version change, so no
    /// concurrent change of the cluster has to retry for them). `NotFound` when the cluster is
    /// gone. Changes of the cluster tell their events through `modify_cluster`.
    pub async fn append_events(
        &self,
        cluster: Uuid,
        events: &[ClusterEvent],
        cause: &Cause,
    ) -> Result<(), StoreError> {
        let events = &events[..events.len().min(MAX_EVENTS_PER_CHANGE)];
        if events.is_empty() {
            return Ok(());
        }
        self.retrying(|| async {
            let mut transaction = self.begin_write().await?;
            self.bump_generation(&mut transaction, "cluster").await?;
            let Some(current) = self
                .cluster_in_transaction(&mut transaction, cluster)
                .await?
            else {
                transaction.rollback().await?;
                return Err(StoreError::NotFound);
            };
            self.insert_events(&mut transaction, &current, events, cause, Timestamp::now())
                .await?;
            transaction.commit().await?;
            Ok(())
        })
        .await
    }

    /// Marks a purged cluster's events, so that they are kept `keep_after_delete` from now.
    pub(crate) async fn mark_events_of_deleted(
        &self,
        transaction: &mut sqlx::Transaction<'_, Any>,
        cluster: Uuid,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE cluster_event SET cluster_deleted_at = ? WHERE cluster_uuid = ? \
             AND cluster_deleted_at IS NULL",
        ))
        .bind(now.unix_seconds())
        .bind(cluster.to_string())
        .execute(&mut **transaction)
        .await?;
        Ok(())
    }

    /// Events of `scope` after stream position `after` (all when `None`), oldest first, at
    /// most `limit` (bounded by [`MAX_EVENTS_PER_READ`]).
    pub async fn events_after(
        &self,
        scope: &EventScope,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_events(scope, after, false, limit).await
    }

    /// Events of `scope` before stream position `before` (the newest when `None`), newest
    /// first, at most `limit`.
    pub async fn events_before(
        &self,
        scope: &EventScope,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_events(scope, before, true, limit).await
    }

    async fn read_events(
        &self,
        scope: &EventScope,
        bound: Option<i64>,
        newest_first: bool,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut conditions = Vec::new();
        let mut arguments = Vec::new();
        match scope {
            EventScope::Cluster(uuid) => {
                conditions.push("cluster_uuid = ?");
                arguments.push(uuid.to_string());
            }
            EventScope::Project(project) => {
                conditions.push("project_id = ?");
                arguments.push(project.clone());
            }
            EventScope::All => {}
        }
        let (comparison, order) = if newest_first {
            ("sequence < ?", "DESC")
        } else {
            ("sequence > ?", "ASC")
        };
        if bound.is_some() {
            conditions.push(comparison);
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM cluster_event {filter} ORDER BY sequence {order} LIMIT ?"
        );
        let sql = self.sql(&query);
        let mut statement = sqlx::query(&sql);
        for argument in arguments {
            statement = statement.bind(argument);
        }
        if let Some(bound) = bound {
            statement = statement.bind(bound);
        }
        let rows = statement
            .bind(limit.clamp(1, MAX_EVENTS_PER_READ))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().filter_map(readable).collect())
    }

    /// One event by uuid (a pagination marker), in `scope`.
    pub async fn event_by_uuid(
        &self,
        scope: &EventScope,
        uuid: Uuid,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let query = format!("SELECT {EVENT_COLUMNS} FROM cluster_event WHERE uuid = ?");
        let sql = self.sql(&query);
        let row = sqlx::query(&sql)
            .bind(uuid.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let event = row.as_ref().and_then(readable);
        Ok(event.filter(|event| match scope {
            EventScope::Cluster(cluster) => event.cluster_uuid == *cluster,
            EventScope::Project(project) => event.project_id == *project,
            EventScope::All => true,
        }))
    }

    /// Which of `clusters` are known to have been deleted: no cluster record remains and
    /// their events say so (kept `keep_after_delete`). A cluster the database knows nothing
    /// of is not among them (another database's, or one restored from a backup). Live
    /// clusters cost one indexed lookup per chunk; only the missing ones are looked up in
    /// the events.
    pub async fn deleted_clusters_among(&self, clusters: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let mut deleted = Vec::new();
        for chunk in clusters.chunks(PRUNE_BATCH as usize) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let query = format!("SELECT uuid FROM cluster WHERE uuid IN ({placeholders})");
            let sql = self.sql(&query);
            let mut statement = sqlx::query(&sql);
            for cluster in chunk {
                statement = statement.bind(cluster.to_string());
            }
            let mut live = std::collections::HashSet::new();
            for row in statement.fetch_all(&self.pool).await? {
                live.insert(row.try_get::<String, _>("uuid")?);
            }
            let told = self.sql(
                "SELECT 1 AS told FROM cluster_event WHERE cluster_uuid = ? \
                 AND cluster_deleted_at IS NOT NULL LIMIT 1",
            );
            for cluster in chunk {
                let text = cluster.to_string();
                if live.contains(&text) {
                    continue;
                }
                let row = sqlx::query(&told)
                    .bind(text)
                    .fetch_optional(&self.pool)
                    .await?;
                if row.is_some() {
                    deleted.push(*cluster);
                }
            }
        }
        Ok(deleted)
    }

    /// The newest stream position (0 with no event).
    pub async fn latest_event_sequence(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT MAX(sequence) AS newest FROM cluster_event")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("newest")?.unwrap_or(0))
    }

    /// Drops events past `retention`: older than its age, of clusters deleted longer ago than
    /// it keeps them, and beyond its count for the clusters that had events after stream
    /// position `changed_after` (those whose count can have grown). Every delete goes by the
    /// sequence index in batches of [`PRUNE_BATCH`], so that no statement scans or locks the
    /// table (InnoDB's next-key locks would hold up every cluster write). Returns how many
    /// went.
    pub async fn prune_events(
        &self,
        retention: EventRetention,
        changed_after: i64,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let now = now.unix_seconds();
        let mut removed = 0;
        for (condition, bound) in [
            ("created_at < ?", now.saturating_sub(retention.max_age)),
            (
                "cluster_deleted_at IS NOT NULL AND cluster_deleted_at < ?",
                now.saturating_sub(retention.keep_after_delete),
            ),
        ] {
            let query = format!(
                "SELECT sequence, cluster_uuid, project_id FROM cluster_event WHERE {condition} \
                 LIMIT ?"
            );
            loop {
                let rows = sqlx::query(&self.sql(&query))
                    .bind(bound)
                    .bind(PRUNE_BATCH)
                    .fetch_all(&self.pool)
                    .await?;
                let (deleted, more) = self.delete_listed(&rows, now).await?;
                removed += deleted;
                if !more {
                    break;
                }
            }
        }
        let rows = sqlx::query(
            &self.sql("SELECT DISTINCT cluster_uuid FROM cluster_event WHERE sequence > ?"),
        )
        .bind(changed_after)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let cluster: String = row.try_get("cluster_uuid")?;
            loop {
                let cutoff = sqlx::query(&self.sql(
                    "SELECT sequence FROM cluster_event WHERE cluster_uuid = ? \
                     ORDER BY sequence DESC LIMIT 1 OFFSET ?",
                ))
                .bind(cluster.clone())
                .bind(retention.max_per_cluster.max(1) - 1)
                .fetch_optional(&self.pool)
                .await?;
                let Some(cutoff) = cutoff else {
                    break;
                };
                let oldest_kept: i64 = cutoff.try_get("sequence")?;
                let rows = sqlx::query(&self.sql(
                    "SELECT sequence, cluster_uuid, project_id FROM cluster_event \
                     WHERE cluster_uuid = ? AND sequence < ? ORDER BY sequence LIMIT ?",
                ))
                .bind(cluster.clone())
                .bind(oldest_kept)
                .bind(PRUNE_BATCH)
                .fetch_all(&self.pool)
                .await?;
                let (deleted, more) = self.delete_listed(&rows, now).await?;
                removed += deleted;
                if !more {
                    break;
                }
            }
        }
        // The marks of deleted clusters none of whose events is left, once they are older
        // than any event kept: a stream resuming from before them has lost more than they
        // tell. Listed first and deleted by key, like the events (no statement holding gap
        // locks over the events index). A live cluster keeps its mark.
        let bound = now.saturating_sub(retention.max_age);
        let candidates = self.sql(
            "SELECT cluster_uuid FROM cluster_event_pruned m WHERE m.pruned_at < ? \
             AND NOT EXISTS (SELECT 1 FROM cluster_event e WHERE e.cluster_uuid = m.cluster_uuid) \
             AND NOT EXISTS (SELECT 1 FROM cluster c WHERE c.uuid = m.cluster_uuid) LIMIT ?",
        );
        let forget =
            self.sql("DELETE FROM cluster_event_pruned WHERE cluster_uuid = ? AND pruned_at < ?");
        loop {
            let rows = sqlx::query(&candidates)
                .bind(bound)
                .bind(PRUNE_BATCH)
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                let cluster: String = row.try_get("cluster_uuid")?;
                sqlx::query(&forget)
                    .bind(cluster)
                    .bind(bound)
                    .execute(&self.pool)
                    .await?;
            }
            if (rows.len() as i64) < PRUNE_BATCH {
                break;
            }
        }
        Ok(removed)
    }

    /// Deletes the events `rows` list (`sequence, cluster_uuid, project_id`; a batch of at
    /// most [`PRUNE_BATCH`]) after marking how far each of their clusters was pruned; says
    /// how many went and whether the batch was full (more may match).
    async fn delete_listed(&self, rows: &[AnyRow], now: i64) -> Result<(u64, bool), StoreError> {
        let mut marks: BTreeMap<String, (String, i64)> = BTreeMap::new();
        for row in rows {
            let sequence: i64 = row.try_get("sequence")?;
            let mark = marks
                .entry(row.try_get("cluster_uuid")?)
                .or_insert_with(|| (String::new(), sequence));
            mark.0 = row.try_get("project_id")?;
            mark.1 = mark.1.max(sequence);
        }
        // Marked first: a reader that misses an event finds its mark when it looks after.
        for (cluster, (project, through)) in marks {
            self.mark_pruned(&cluster, &project, through, now).await?;
        }
        self.delete_batch("cluster_event", "sequence", rows).await
    }

    /// Records that `cluster`'s events up to `through` may be gone (kept at the highest such
    /// position; every conductor prunes, so two may mark one cluster at once).
    async fn mark_pruned(
        &self,
        cluster: &str,
        project: &str,
        through: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let raise = || async {
            sqlx::query(&self.sql(
                "UPDATE cluster_event_pruned SET pruned_through = ?, pruned_at = ? \
                 WHERE cluster_uuid = ? AND pruned_through < ?",
            ))
            .bind(through)
            .bind(now)
            .bind(cluster)
            .bind(through)
            .execute(&self.pool)
            .await
        };
        if raise().await?.rows_affected() > 0 {
            return Ok(());
        }
        let inserted = sqlx::query(&self.sql(
            "INSERT INTO cluster_event_pruned (cluster_uuid, project_id, pruned_through, \
             pruned_at) VALUES (?, ?, ?, ?)",
        ))
        .bind(cluster)
        .bind(project)
        .bind(through)
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            // The row is there (as high already, or written by another conductor just now).
            Err(error) if StoreError::is_unique_violation(&error) => {
                raise().await?;
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The highest stream position up to which retention dropped events of `scope` (0 when it
    /// dropped none): a reader that resumes below it has missed events.
    pub async fn events_pruned_through(&self, scope: &EventScope) -> Result<i64, StoreError> {
        let (filter, argument) = match scope {
            EventScope::Cluster(uuid) => (" WHERE cluster_uuid = ?", Some(uuid.to_string())),
            EventScope::Project(project) => (" WHERE project_id = ?", Some(project.clone())),
            EventScope::All => ("", None),
        };
        let query =
            format!("SELECT MAX(pruned_through) AS through FROM cluster_event_pruned{filter}");
        let sql = self.sql(&query);
        let mut statement = sqlx::query(&sql);
        if let Some(argument) = argument {
            statement = statement.bind(argument);
        }
        let row = statement.fetch_one(&self.pool).await?;
        Ok(row.try_get::<Option<i64>, _>("through")?.unwrap_or(0))
    }
}

/// Rows (events, finished operations) one pruning statement removes at most.
pub const PRUNE_BATCH: i64 = 500;

/// A row this binary cannot read (written by a newer one during a rolling upgrade, say) is
/// left out with a warning rather than stopping every reader at it.
fn readable(row: &AnyRow) -> Option<StoredEvent> {
    match event_from_row(row) {
        Ok(event) => Some(event),
        Err(error) => {
            let sequence = row.try_get::<i64, _>("sequence").unwrap_or_default();
            tracing::warn!(sequence, %error, "a cluster event cannot be read; it is left out");
            None
        }
    }
}

fn event_from_row(row: &AnyRow) -> Result<StoredEvent, StoreError> {
    let corrupt = |column: &str, text: &str| StoreError::Corrupt(format!("{column} {text:?}"));
    let uuid_of = |column: &str| -> Result<Uuid, StoreError> {
        let text: String = row.try_get(column)?;
        Uuid::parse_str(&text).map_err(|_| corrupt(column, &text))
    };
    let event_type: String = row.try_get("event_type")?;
    let status: String = row.try_get("cluster_status")?;
    let health_status = match row.try_get::<Option<String>, _>("health_status")? {
        None => None,
        Some(text) => Some(
            text.parse::<HealthStatus>()
                .map_err(|()| corrupt("health_status", &text))?,
        ),
    };
    let operation = match row.try_get::<Option<String>, _>("operation_uuid")? {
        None => None,
        Some(text) => Some(Uuid::parse_str(&text).map_err(|_| corrupt("operation_uuid", &text))?),
    };
    Ok(StoredEvent {
        sequence: row.try_get("sequence")?,
        uuid: uuid_of("uuid")?,
        cluster_uuid: uuid_of("cluster_uuid")?,
        project_id: row.try_get("project_id")?,
        user_id: row.try_get("user_id")?,
        created_at: Timestamp::from_unix_seconds(row.try_get("created_at")?),
        event: ClusterEvent {
            event_type: EventType::parse(&event_type)
                .ok_or_else(|| corrupt("event_type", &event_type))?,
            reason: row.try_get("reason")?,
            message: text_column(row, "message")?.unwrap_or_default(),
            nodegroup: row.try_get("nodegroup")?,
            node: row.try_get("node")?,
        },
        cause: Cause {
            request_id: row.try_get("request_id")?,
            operation,
        },
        snapshot: ClusterSnapshot {
            name: row.try_get("cluster_name")?,
            status: status
                .parse::<ClusterStatus>()
                .map_err(|()| corrupt("cluster_status", &status))?,
            health_status,
            node_count: row.try_get("node_count")?,
            master_count: row.try_get("master_count")?,
        },
    })
}
