//! The Keystone application credentials delegated to clusters: the id and owner in the clear,
//! the secret sealed by the caller's key store (or `None` when it lives in a file). A cluster
//! may hold several while a rotation is under way; the newest is the one in use, the older
//! ones wait to be revoked (`revoke_after`). A row outlives its cluster until its credential
//! is revoked, so that nothing delegated is ever forgotten while it is still valid.

use magnum_domain::time::Timestamp;
use sqlx::{Any, Row};
use uuid::Uuid;

use crate::{text_column, Store, StoreError};

#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    pub cluster_uuid: Uuid,
    pub credential_id: String,
    /// The Keystone user the credential belongs to.
    pub user_id: String,
    pub sealed_secret: Option<String>,
    pub created_at: Timestamp,
    /// When it is to be revoked (set once it is replaced, or its cluster force-deleted).
    pub revoke_after: Option<Timestamp>,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("cluster_uuid", &self.cluster_uuid)
            .field("credential_id", &self.credential_id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) async fn insert_credential(
        &self,
        transaction: &mut sqlx::Transaction<'_, Any>,
        credential: &StoredCredential,
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO cluster_credential (cluster_uuid, credential_id, user_id, sealed_secret, \
             created_at, revoke_after) VALUES (?, ?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(credential.cluster_uuid.to_string())
            .bind(credential.credential_id.clone())
            .bind(credential.user_id.clone())
            .bind(credential.sealed_secret.clone())
            .bind(credential.created_at.unix_seconds())
            .bind(credential.revoke_after.map(|at| at.unix_seconds()))
            .execute(&mut **transaction)
            .await?;
        Ok(())
    }

    /// Adds a newer credential to an existing cluster (a rotation). `NotFound` when the
    /// cluster is gone: nothing is written then.
    pub async fn add_cluster_credential(
        &self,
        credential: &StoredCredential,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        let exists = sqlx::query(&self.sql("SELECT COUNT(*) AS n FROM cluster WHERE uuid = ?"))
            .bind(credential.cluster_uuid.to_string())
            .fetch_one(&mut *transaction)
            .await?;
        if exists.try_get::<i64, _>("n")? == 0 {
            return Err(StoreError::NotFound);
        }
        self.insert_credential(&mut transaction, credential).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The cluster's credentials, oldest first (the last is the one in use).
    pub async fn cluster_credentials(
        &self,
        cluster_uuid: Uuid,
    ) -> Result<Vec<StoredCredential>, StoreError> {
        let sql = self.sql(
            "SELECT credential_id, user_id, sealed_secret, created_at, revoke_after \
             FROM cluster_credential WHERE cluster_uuid = ? ORDER BY id",
        );
        let rows = sqlx::query(&sql)
            .bind(cluster_uuid.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| credential_of(row, cluster_uuid))
            .collect()
    }

    /// Schedules the revocation, at `at`, of the cluster's credentials recorded before
    /// `before` (all of them when `None`) that are not scheduled yet.
    pub async fn schedule_credential_revocation(
        &self,
        cluster_uuid: Uuid,
        before: Option<&str>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut sql = "UPDATE cluster_credential SET revoke_after = ? WHERE cluster_uuid = ? \
                       AND revoke_after IS NULL"
            .to_owned();
        if before.is_some() {
            // Not a subquery on the table being updated: MariaDB refuses those.
            sql.push_str(" AND id < ?");
        }
        let limit = match before {
            Some(id) => {
                let row = sqlx::query(&self.sql(
                    "SELECT id FROM cluster_credential WHERE cluster_uuid = ? AND credential_id = ?",
                ))
                .bind(cluster_uuid.to_string())
                .bind(id.to_owned())
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(row) => Some(row.try_get::<i64, _>("id")?),
                    None => return Ok(()),
                }
            }
            None => None,
        };
        let sql = self.sql(&sql);
        let mut query = sqlx::query(&sql)
            .bind(at.unix_seconds())
            .bind(cluster_uuid.to_string());
        if let Some(limit) = limit {
            query = query.bind(limit);
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Credentials whose revocation is due at `now`: scheduled for then or before, or left by
    /// a cluster that is gone without a schedule (an ordinary delete). At most `limit`.
    pub async fn credentials_due_for_revocation(
        &self,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<StoredCredential>, StoreError> {
        let sql = self.sql(
            "SELECT cluster_uuid, credential_id, user_id, sealed_secret, created_at, revoke_after \
             FROM cluster_credential c WHERE revoke_after <= ? OR (revoke_after IS NULL AND \
             NOT EXISTS (SELECT 1 FROM cluster WHERE cluster.uuid = c.cluster_uuid)) \
             ORDER BY revoke_attempts, id LIMIT ?",
        );
        let rows = sqlx::query(&sql)
            .bind(now.unix_seconds())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let cluster: String = row.try_get("cluster_uuid")?;
                let cluster = Uuid::parse_str(&cluster)
                    .map_err(|error| StoreError::Corrupt(format!("cluster_uuid: {error}")))?;
                credential_of(row, cluster)
            })
            .collect()
    }

    /// Counts a failed revocation, so that credentials Keystone keeps refusing to revoke go
    /// after the others in the next sweep instead of taking all of its turns.
    pub async fn record_revocation_failure(
        &self,
        cluster_uuid: Uuid,
        credential_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE cluster_credential SET revoke_attempts = revoke_attempts + 1 \
             WHERE cluster_uuid = ? AND credential_id = ?",
        ))
        .bind(cluster_uuid.to_string())
        .bind(credential_id.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets one credential of the cluster (after it was revoked).
    pub async fn remove_cluster_credential(
        &self,
        cluster_uuid: Uuid,
        credential_id: &str,
    ) -> Result<(), StoreError> {
        let sql =
            self.sql("DELETE FROM cluster_credential WHERE cluster_uuid = ? AND credential_id = ?");
        sqlx::query(&sql)
            .bind(cluster_uuid.to_string())
            .bind(credential_id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn credential_of(
    row: &sqlx::any::AnyRow,
    cluster_uuid: Uuid,
) -> Result<StoredCredential, StoreError> {
    Ok(StoredCredential {
        cluster_uuid,
        credential_id: row.try_get("credential_id")?,
        user_id: row.try_get("user_id")?,
        sealed_secret: text_column(row, "sealed_secret")?,
        created_at: Timestamp::from_unix_seconds(row.try_get("created_at")?),
        revoke_after: row
            .try_get::<Option<i64>, _>("revoke_after")?
            .map(Timestamp::from_unix_seconds),
    })
}
