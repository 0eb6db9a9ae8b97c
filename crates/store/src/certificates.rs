//! Cluster CAs: the certificate in the database, the private key sealed beside it
//! (`x509keypair`) or in a file of the state directory (`local`). Keys are sealed or written
//! by the caller's key store; this module only persists what it is given.

use magnum_domain::time::Timestamp;
use sqlx::Row;
use uuid::Uuid;

use crate::{text_column, Store, StoreError};

/// One stored CA of a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCertificate {
    pub cluster_uuid: Uuid,
    pub kind: String,
    pub cert_pem: String,
    /// The sealed private key (`x509keypair`), or `None` when it lives in a file.
    pub sealed_key: Option<String>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for StoredCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCertificate")
            .field("cluster_uuid", &self.cluster_uuid)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Stores the cluster's CAs unless it has them already (a resumed create must not make
    /// a second CA); returns what is stored afterwards.
    pub async fn insert_cluster_certificates_once(
        &self,
        certificates: &[StoredCertificate],
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        let sql = self.sql(
            "INSERT INTO cluster_certificate (cluster_uuid, kind, cert_pem, sealed_key, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        );
        for certificate in certificates {
            let existing = sqlx::query(&self.sql(
                "SELECT COUNT(*) AS n FROM cluster_certificate WHERE cluster_uuid = ? AND kind = ?",
            ))
            .bind(certificate.cluster_uuid.to_string())
            .bind(certificate.kind.clone())
            .fetch_one(&mut *transaction)
            .await?;
            if existing.try_get::<i64, _>("n")? > 0 {
                continue;
            }
            sqlx::query(&sql)
                .bind(certificate.cluster_uuid.to_string())
                .bind(certificate.kind.clone())
                .bind(certificate.cert_pem.clone())
                .bind(certificate.sealed_key.clone())
                .bind(certificate.created_at.unix_seconds())
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Replaces the cluster's CAs (rotation), all in one transaction.
    pub async fn replace_cluster_certificates(
        &self,
        cluster_uuid: Uuid,
        certificates: &[StoredCertificate],
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query(&self.sql("DELETE FROM cluster_certificate WHERE cluster_uuid = ?"))
            .bind(cluster_uuid.to_string())
            .execute(&mut *transaction)
            .await?;
        let sql = self.sql(
            "INSERT INTO cluster_certificate (cluster_uuid, kind, cert_pem, sealed_key, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        );
        for certificate in certificates {
            sqlx::query(&sql)
                .bind(cluster_uuid.to_string())
                .bind(certificate.kind.clone())
                .bind(certificate.cert_pem.clone())
                .bind(certificate.sealed_key.clone())
                .bind(certificate.created_at.unix_seconds())
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    pub async fn cluster_certificate(
        &self,
        cluster_uuid: Uuid,
        kind: &str,
    ) -> Result<Option<StoredCertificate>, StoreError> {
        let sql = self.sql(
            "SELECT cluster_uuid, kind, cert_pem, sealed_key, created_at FROM cluster_certificate \
             WHERE cluster_uuid = ? AND kind = ?",
        );
        let row = sqlx::query(&sql)
            .bind(cluster_uuid.to_string())
            .bind(kind.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(StoredCertificate {
                cluster_uuid,
                kind: row.try_get("kind")?,
                cert_pem: text_column(&row, "cert_pem")?.unwrap_or_default(),
                sealed_key: text_column(&row, "sealed_key")?,
                created_at: Timestamp::from_unix_seconds(row.try_get("created_at")?),
            })
        })
        .transpose()
    }
}
