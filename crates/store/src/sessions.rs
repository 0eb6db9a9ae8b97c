//! Dashboard sessions ended by a logout. Every API process reads them, so that a copied
//! session cookie is refused everywhere at once, not only where the logout was answered (a
//! process's token cache would honour its token until it lets go of it).

use magnum_domain::time::Timestamp;
use sqlx::Row;

use crate::{Backend, Store, StoreError};

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
    /// The database's clock in Unix seconds, as SQL: when a session ended is written and
    /// compared by the one clock every API process shares, whatever their hosts' clocks say.
    fn database_now(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST(strftime('%s','now') AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM CURRENT_TIMESTAMP) AS BIGINT)",
            Backend::MySql => "UNIX_TIMESTAMP()",
        }
    }

    /// Records that the session of `login_digest` ended (now, by the database's clock);
    /// ending it again keeps the record as it is.
    pub async fn record_ended_session(&self, session: &EndedSession) -> Result<(), StoreError> {
        let query = format!(
            "INSERT INTO ended_session (login_digest, expires_at, ended_at) VALUES (?, ?, {})",
            self.database_now()
        );
        let inserted = sqlx::query(&self.sql(&query))
            .bind(&session.login_digest)
            .bind(session.expires_at.unix_seconds())
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(error) if StoreError::is_unique_violation(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Keeps the record of an ended session only until `until`, when that is sooner (its
    /// tokens were revoked: once every token cache let go of them, the record is not needed).
    pub async fn shorten_ended_session(
        &self,
        login_digest: &str,
        until: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE ended_session SET expires_at = ? WHERE login_digest = ? AND expires_at > ?",
        ))
        .bind(until.unix_seconds())
        .bind(login_digest)
        .bind(until.unix_seconds())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sessions whose records are kept at `now`: all of them (`within` = `None`), or those
    /// ended in the last `within` seconds by the database's clock; newest ending first, at
    /// most [`MAX_ENDED_SESSIONS_READ`].
    pub async fn sessions_ended(
        &self,
        within: Option<i64>,
        now: Timestamp,
    ) -> Result<Vec<EndedSession>, StoreError> {
        let recent = match within {
            Some(seconds) => format!(
                "ended_at >= {} - {} AND ",
                self.database_now(),
                seconds.max(0)
            ),
            None => String::new(),
        };
        let query = format!(
            "SELECT login_digest, expires_at FROM ended_session \
             WHERE {recent}expires_at > ? ORDER BY ended_at DESC LIMIT ?"
        );
        let rows = sqlx::query(&self.sql(&query))
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

    /// Drops records kept until before `now`: one batch of at most [`crate::PRUNE_BATCH`],
    /// as often as called (a backlog goes over several calls, never holding the caller).
    pub async fn prune_ended_sessions(&self, now: Timestamp) -> Result<u64, StoreError> {
        let sql = self.sql("SELECT login_digest FROM ended_session WHERE expires_at < ? LIMIT ?");
        let delete = self.sql("DELETE FROM ended_session WHERE login_digest = ?");
        let rows = sqlx::query(&sql)
            .bind(now.unix_seconds())
            .bind(crate::PRUNE_BATCH)
            .fetch_all(&self.pool)
            .await?;
        let mut removed = 0;
        for row in &rows {
            let digest: String = row.try_get("login_digest")?;
            removed += sqlx::query(&delete)
                .bind(digest)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }
}
