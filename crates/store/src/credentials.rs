//! The Keystone application credentials delegated to clusters: the id and owner in the clear,
//! the secret sealed by the caller's key store (or `None` when it lives in a file). A cluster
//! may hold several while a rotation is under way; the newest is the one in use, the older
//! ones wait to be revoked.

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
             created_at) VALUES (?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(credential.cluster_uuid.to_string())
            .bind(credential.credential_id.clone())
            .bind(credential.user_id.clone())
            .bind(credential.sealed_secret.clone())
            .bind(credential.created_at.unix_seconds())
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
            "SELECT credential_id, user_id, sealed_secret, created_at FROM cluster_credential \
             WHERE cluster_uuid = ? ORDER BY id",
        );
        let rows = sqlx::query(&sql)
            .bind(cluster_uuid.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredCredential {
                    cluster_uuid,
                    credential_id: row.try_get("credential_id")?,
                    user_id: row.try_get("user_id")?,
                    sealed_secret: text_column(row, "sealed_secret")?,
                    created_at: Timestamp::from_unix_seconds(row.try_get("created_at")?),
                })
            })
            .collect()
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
