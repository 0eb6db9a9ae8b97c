//! The operations queue: claimed with a lease through a portable compare-and-set
//! (`UPDATE … WHERE state = 'pending' OR lease_until < now`), since SQLite has no
//! `SELECT … FOR UPDATE SKIP LOCKED`.

use magnum_domain::operation::{Operation, OperationKind, OperationState};
use magnum_domain::time::Timestamp;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::{text_column, Store, StoreError};

const COLUMNS: &str = "id, uuid, cluster_uuid, kind, payload, state, attempts, lease_owner, \
    lease_until, error, created_at, updated_at";

/// Batches one call of [`Store::prune_finished_operations`] deletes at most (10,000
/// operations).
pub const MAX_PRUNE_BATCHES_PER_PASS: usize = 20;

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed { reason: String },
}

impl Store {
    pub async fn enqueue_operation(&self, operation: &Operation) -> Result<Operation, StoreError> {
        let mut connection = self.pool.acquire().await?;
        self.insert_operation(&mut connection, operation).await?;
        drop(connection);
        self.operation(operation.uuid)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Inserts a pending operation through `connection` (which may be a transaction's).
    pub(crate) async fn insert_operation(
        &self,
        connection: &mut sqlx::AnyConnection,
        operation: &Operation,
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO operation (uuid, cluster_uuid, kind, payload, state, attempts, \
             lease_owner, lease_until, error, created_at, updated_at) \
             VALUES (?, ?, ?, ?, 'pending', 0, NULL, NULL, NULL, ?, NULL)",
        );
        sqlx::query(&sql)
            .bind(operation.uuid.to_string())
            .bind(operation.cluster_uuid.to_string())
            .bind(operation.kind.as_str())
            .bind(operation.payload.clone())
            .bind(operation.created_at.unix_seconds())
            .execute(&mut *connection)
            .await
            .map_err(|error| {
                if StoreError::is_unique_violation(&error) {
                    StoreError::DuplicateUuid(operation.uuid)
                } else {
                    error.into()
                }
            })?;
        Ok(())
    }

    pub async fn operation(&self, uuid: Uuid) -> Result<Option<Operation>, StoreError> {
        let query = format!("SELECT {COLUMNS} FROM operation WHERE uuid = ?");
        let sql = self.sql(&query);
        let row = sqlx::query(&sql)
            .bind(uuid.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(operation_from_row).transpose()
    }

    /// Claims the oldest operation that is pending or whose holder's lease ran out, for
    /// `owner` until `now + lease_seconds`. Two claimers never get the same operation.
    pub async fn claim_operation(
        &self,
        owner: &str,
        now: Timestamp,
        lease_seconds: i64,
    ) -> Result<Option<Operation>, StoreError> {
        // Another claimer winning the candidate is a lost race: looked at again.
        self.retrying(|| self.claim_operation_once(owner, now, lease_seconds))
            .await
    }

    async fn claim_operation_once(
        &self,
        owner: &str,
        now: Timestamp,
        lease_seconds: i64,
    ) -> Result<Option<Operation>, StoreError> {
        let now_seconds = now.unix_seconds();
        let lease_until = now_seconds + lease_seconds;
        // One operation per cluster at a time, oldest first, except that a delete
        // overtakes the work it makes pointless.
        let sql = self.sql(
            "SELECT uuid FROM operation WHERE (state = 'pending' \
             OR (state = 'running' AND lease_until < ?)) AND (kind = 'delete_cluster' \
             OR NOT EXISTS (SELECT 1 FROM operation earlier \
             WHERE earlier.cluster_uuid = operation.cluster_uuid AND earlier.id < operation.id \
             AND earlier.state IN ('pending', 'running'))) ORDER BY id LIMIT 1",
        );
        let candidate = sqlx::query(&sql)
            .bind(now_seconds)
            .fetch_optional(&self.pool)
            .await?;
        let Some(candidate) = candidate else {
            return Ok(None);
        };
        let uuid: String = candidate.try_get("uuid")?;
        let sql = self.sql(
            "UPDATE operation SET state = 'running', lease_owner = ?, lease_until = ?, \
             attempts = attempts + 1, updated_at = ? WHERE uuid = ? AND \
             (state = 'pending' OR (state = 'running' AND lease_until < ?))",
        );
        let claimed = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now_seconds)
            .bind(&uuid)
            .bind(now_seconds)
            .execute(&self.pool)
            .await?;
        if claimed.rows_affected() == 1 {
            let uuid = Uuid::parse_str(&uuid)
                .map_err(|_| StoreError::Corrupt(format!("operation uuid {uuid:?}")))?;
            return self.operation(uuid).await;
        }
        Err(StoreError::Conflict)
    }

    /// Extends `owner`'s lease; false when the lease is no longer `owner`'s.
    pub async fn renew_operation_lease(
        &self,
        uuid: Uuid,
        owner: &str,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE operation SET lease_until = ? WHERE uuid = ? AND state = 'running' \
             AND lease_owner = ?",
        );
        let renewed = sqlx::query(&sql)
            .bind(lease_until.unix_seconds())
            .bind(uuid.to_string())
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Records the outcome; false when the lease is no longer `owner`'s (someone took over).
    pub async fn finish_operation(
        &self,
        uuid: Uuid,
        owner: &str,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (state, error) = match outcome {
            Outcome::Succeeded => (OperationState::Succeeded, None),
            Outcome::Failed { reason } => (OperationState::Failed, Some(reason)),
        };
        let sql = self.sql(
            "UPDATE operation SET state = ?, error = ?, lease_owner = NULL, lease_until = NULL, \
             updated_at = ? WHERE uuid = ? AND state = 'running' AND lease_owner = ?",
        );
        let finished = sqlx::query(&sql)
            .bind(state.as_str())
            .bind(error)
            .bind(now.unix_seconds())
            .bind(uuid.to_string())
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(finished.rows_affected() == 1)
    }

    /// Ends every unfinished operation of a cluster as failed with `reason`, whoever holds
    /// it; their runners notice at their next lease renewal.
    pub async fn cancel_operations(
        &self,
        cluster_uuid: Uuid,
        except: Option<Uuid>,
        reason: &str,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let sql = self.sql(
            "UPDATE operation SET state = 'failed', error = ?, lease_owner = NULL, \
             lease_until = NULL, updated_at = ? WHERE cluster_uuid = ? AND uuid <> ? \
             AND state IN ('pending', 'running')",
        );
        let cancelled = sqlx::query(&sql)
            .bind(reason.to_owned())
            .bind(now.unix_seconds())
            .bind(cluster_uuid.to_string())
            .bind(except.map(|uuid| uuid.to_string()).unwrap_or_default())
            .execute(&self.pool)
            .await?;
        Ok(cancelled.rows_affected())
    }

    /// The owners holding running operations whose name starts with `prefix`.
    pub async fn lease_owners(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let sql = self.sql(
            "SELECT DISTINCT lease_owner FROM operation WHERE state = 'running' \
             AND lease_owner IS NOT NULL",
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let mut owners = Vec::new();
        for row in rows {
            let owner: String = row.try_get("lease_owner")?;
            if owner.starts_with(prefix) {
                owners.push(owner);
            }
        }
        Ok(owners)
    }

    /// Ends the leases of `owner`, known dead, so that its operations can be claimed at once
    /// (the interrupted attempt counts, so that a crash loop still ends at the attempt limit).
    /// Only first attempts: an operation that was already interrupted once may be what
    /// kills its conductor, and waits for its lease like any other.
    pub async fn expire_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let sql = self.sql(
            "UPDATE operation SET lease_until = 0 WHERE state = 'running' AND lease_owner = ? \
             AND attempts < 2",
        );
        let expired = sqlx::query(&sql).bind(owner).execute(&self.pool).await?;
        Ok(expired.rows_affected())
    }

    /// Puts the operations `owner` holds back in the queue (a graceful stop), without
    /// counting the interrupted attempt.
    pub async fn release_operations(&self, owner: &str) -> Result<u64, StoreError> {
        let sql = self.sql(
            "UPDATE operation SET state = 'pending', lease_owner = NULL, lease_until = NULL, \
             attempts = attempts - 1 WHERE state = 'running' AND lease_owner = ?",
        );
        let released = sqlx::query(&sql).bind(owner).execute(&self.pool).await?;
        Ok(released.rows_affected())
    }

    /// Unfinished operations of one cluster, oldest first.
    pub async fn unfinished_operations_of(
        &self,
        cluster_uuid: Uuid,
    ) -> Result<Vec<Operation>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM operation WHERE cluster_uuid = ? \
             AND state IN ('pending', 'running') ORDER BY id"
        );
        let sql = self.sql(&query);
        let rows = sqlx::query(&sql)
            .bind(cluster_uuid.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(operation_from_row).collect()
    }

    /// The newest `limit` operations of one cluster, finished or not, newest first (what the
    /// autoscaler's history is read from: the last resizes a user asked for).
    pub async fn recent_operations_of(
        &self,
        cluster_uuid: Uuid,
        limit: i64,
    ) -> Result<Vec<Operation>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM operation WHERE cluster_uuid = ? ORDER BY id DESC LIMIT ?"
        );
        let sql = self.sql(&query);
        let rows = sqlx::query(&sql)
            .bind(cluster_uuid.to_string())
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(operation_from_row).collect()
    }

    /// Drops operations that finished (succeeded or failed) before `finished_before`, in
    /// batches by primary key, at most [`MAX_PRUNE_BATCHES_PER_PASS`] of them; pending and running ones stay whatever their age. Returns how
    /// many went. Nothing reads a finished operation but the autoscaler's recent history,
    /// which looks back far less than any allowed retention.
    pub async fn prune_finished_operations(
        &self,
        finished_before: Timestamp,
    ) -> Result<u64, StoreError> {
        let sql = self.sql(
            // Every way an operation ends sets updated_at; (state, updated_at) is indexed, so
            // a pass with nothing old enough reads nothing.
            "SELECT id FROM operation WHERE state IN ('succeeded', 'failed') \
             AND updated_at < ? LIMIT ?",
        );
        let mut removed = 0;
        // A bounded pass: a first one over a long-grown table must not hold up a stop; the
        // next pass goes on.
        for _ in 0..MAX_PRUNE_BATCHES_PER_PASS {
            let rows = sqlx::query(&sql)
                .bind(finished_before.unix_seconds())
                .bind(crate::events::PRUNE_BATCH)
                .fetch_all(&self.pool)
                .await?;
            let (deleted, more) = self.delete_batch("operation", "id", &rows).await?;
            removed += deleted;
            if !more {
                break;
            }
        }
        Ok(removed)
    }

    /// The cluster's operations of `kind` created after `since`, newest first, at most
    /// `limit` (the replacement budget counts these: the newest operations of every kind
    /// could hide them behind a tenant's many resizes).
    pub async fn operations_of_kind_since(
        &self,
        cluster_uuid: Uuid,
        kind: OperationKind,
        since: Timestamp,
        limit: i64,
    ) -> Result<Vec<Operation>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM operation WHERE cluster_uuid = ? AND kind = ? \
             AND created_at > ? ORDER BY id DESC LIMIT ?"
        );
        let sql = self.sql(&query);
        let rows = sqlx::query(&sql)
            .bind(cluster_uuid.to_string())
            .bind(kind.as_str())
            .bind(since.unix_seconds())
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(operation_from_row).collect()
    }

    /// Operations not yet finished, oldest first.
    pub async fn unfinished_operations(&self) -> Result<Vec<Operation>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM operation WHERE state IN ('pending', 'running') ORDER BY id"
        );
        let rows = sqlx::query(&query).fetch_all(&self.pool).await?;
        rows.iter().map(operation_from_row).collect()
    }
}

fn operation_from_row(row: &AnyRow) -> Result<Operation, StoreError> {
    let parse_uuid = |column: &str| -> Result<Uuid, StoreError> {
        let text: String = row.try_get(column)?;
        Uuid::parse_str(&text)
            .map_err(|_| StoreError::Corrupt(format!("operation {column} {text:?}")))
    };
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    Ok(Operation {
        id: row.try_get("id")?,
        uuid: parse_uuid("uuid")?,
        cluster_uuid: parse_uuid("cluster_uuid")?,
        kind: kind
            .parse::<OperationKind>()
            .map_err(|()| StoreError::Corrupt(format!("operation kind {kind:?}")))?,
        payload: text_column(row, "payload")?.unwrap_or_default(),
        state: state
            .parse::<OperationState>()
            .map_err(|()| StoreError::Corrupt(format!("operation state {state:?}")))?,
        attempts: row.try_get("attempts")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row
            .try_get::<Option<i64>, _>("lease_until")?
            .map(Timestamp::from_unix_seconds),
        error: text_column(row, "error")?,
        created_at: Timestamp::from_unix_seconds(row.try_get("created_at")?),
        updated_at: row
            .try_get::<Option<i64>, _>("updated_at")?
            .map(Timestamp::from_unix_seconds),
    })
}
