//! Dashboard sessions ended by a logout. Every API process reads them, so that a copied
//! session cookie is refused everywhere at once, not only where the logout was answered (a
//! process's token cache would honour its token until it lets go of it).

use magnum_domain::time::Timestamp;
use sqlx::Row;

use crate::{Store, StoreError};

/// The most ended sessions one read returns.
pub const MAX_ENDED_SESSIONS_READ: i64 = 100_000;

/// A session ended by a logout, named by the SHA-256 (hex) of its login token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    pub login_digest: String,
    /// When its tokens expire anyway: the record is useless after.
    pub expires_at: Timestamp,
}

impl Store {
    /// Records that the session of `login_digest` ended; ending it again changes nothing.
    pub async fn record_ended_session(
        &self,
        session: &EndedSession,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let inserted = sqlx::query(&self.sql(
            "INSERT INTO ended_session (login_digest, expires_at, ended_at) VALUES (?, ?, ?)",
        ))
        .bind(&session.login_digest)
        .bind(session.expires_at.unix_seconds())
        .bind(now.unix_seconds())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(error) if StoreError::is_unique_violation(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Sessions ended at or after `since` whose tokens have not expired at `now`, oldest
    /// ending first, at most [`MAX_ENDED_SESSIONS_READ`].
    pub async fn sessions_ended_since(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<EndedSession>, StoreError> {
        let rows = sqlx::query(&self.sql(
            "SELECT login_digest, expires_at FROM ended_session \
             WHERE ended_at >= ? AND expires_at > ? ORDER BY ended_at LIMIT ?",
        ))
        .bind(since.unix_seconds())
        .bind(now.unix_seconds())
        .bind(MAX_ENDED_SESSIONS_READ)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EndedSession {
                    login_digest: row.try_get("login_digest")?,
                    expires_at: Timestamp::from_unix_seconds(row.try_get("expires_at")?),
                })
            })
            .collect()
    }

    /// Drops the records of sessions whose tokens expired before `now`, in batches.
    pub async fn prune_ended_sessions(&self, now: Timestamp) -> Result<u64, StoreError> {
        let sql = self.sql("SELECT login_digest FROM ended_session WHERE expires_at < ? LIMIT ?");
        let delete = self.sql("DELETE FROM ended_session WHERE login_digest = ?");
        let mut removed = 0;
        loop {
            let rows = sqlx::query(&sql)
                .bind(now.unix_seconds())
                .bind(crate::PRUNE_BATCH)
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                let digest: String = row.try_get("login_digest")?;
                removed += sqlx::query(&delete)
                    .bind(digest)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
            }
            if (rows.len() as i64) < crate::PRUNE_BATCH {
                return Ok(removed);
            }
        }
    }
}
