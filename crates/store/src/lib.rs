//! All SQL of magnum-rs. One store, three engines: SQLite (the embedded default), PostgreSQL
//! and MariaDB/MySQL, chosen by the URL scheme. Queries are written once with `?`
//! placeholders and portable SQL; [`Backend`] adapts the few places where engines differ.

mod certificates;
mod cluster_templates;
mod clusters;
mod credentials;
mod error;
mod events;
mod migrations;
mod modify;
mod monitors;
mod observe;
mod operations;
mod pagination;
mod quotas;
mod services;
mod sessions;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

pub use certificates::StoredCertificate;
pub use cluster_templates::{TemplateScope, CLUSTER_TEMPLATE_SORT_KEYS};
pub use clusters::{ClusterScope, CLUSTER_SORT_KEYS, NODEGROUP_SORT_KEYS};
pub use credentials::StoredCredential;
pub use error::StoreError;
pub use events::{EventRetention, EventScope, MAX_EVENTS_PER_READ, PRUNE_BATCH, SEQUENCE_STRIDE};
pub use migrations::{AppliedMigration, MIGRATIONS};
pub use modify::MODIFY_ATTEMPTS;
pub use monitors::{MonitorHolder, MONITOR_CLAIM_CHUNK};
pub use observe::{ClusterTally, PoolUsage, QueueSummary, MAX_CLUSTER_TALLIES};
pub use operations::Outcome;
pub use pagination::{Page, SortDirection};
pub use quotas::{QuotaPage, QUOTA_SORT_KEYS};
pub use sessions::{EndedSession, MAX_ENDED_SESSIONS_READ};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            _ => Err(StoreError::UnsupportedUrl(redact_url(url))),
        }
    }
}

/// The database handle every component shares.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Store {
    /// Connects to `sqlite://PATH`, `postgres://…` or `mysql://…` (MariaDB). A SQLite file
    /// is created when missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url_with_create_mode(url),
            Backend::MySql => url.replacen("mariadb://", "mysql://", 1),
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|source| StoreError::connect(&url, source))?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    match backend {
                        // WAL lets readers proceed while a writer commits; the busy timeout
                        // makes concurrent writers wait instead of failing.
                        Backend::Sqlite => {
                            connection
                                .execute(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                                )
                                .await?;
                        }
                        Backend::MySql => {
                            connection
                                .execute("SET SESSION sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES'")
                                .await?;
                        }
                        Backend::Postgres => {}
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::connect(&url, source))?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction that will write. On SQLite it takes the write lock first, with a
    /// harmless write, so that it waits for other writers (busy_timeout) instead of failing
    /// when a read in it would have to be upgraded to a write later.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        if self.backend == Backend::Sqlite {
            sqlx::query(
                "UPDATE magnum_generation SET value = value WHERE name = 'cluster_template'",
            )
            .execute(&mut *transaction)
            .await?;
        }
        Ok(transaction)
    }

    async fn generation(&self, name: &str) -> Result<i64, StoreError> {
        let sql = self.sql("SELECT value FROM magnum_generation WHERE name = ?");
        let row = sqlx::query(&sql).bind(name).fetch_one(&self.pool).await?;
        Ok(sqlx::Row::try_get(&row, "value")?)
    }

    async fn bump_generation(
        &self,
        transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
        name: &str,
    ) -> Result<(), StoreError> {
        let sql = self.sql("UPDATE magnum_generation SET value = value + 1 WHERE name = ?");
        sqlx::query(&sql)
            .bind(name)
            .execute(&mut **transaction)
            .await?;
        Ok(())
    }

    /// The value of a generation inside a transaction that bumped it (and so holds its row).
    async fn current_generation(
        &self,
        transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
        name: &str,
    ) -> Result<i64, StoreError> {
        let sql = self.sql("SELECT value FROM magnum_generation WHERE name = ?");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_one(&mut **transaction)
            .await?;
        Ok(sqlx::Row::try_get(&row, "value")?)
    }

    /// Deletes the rows of `table` whose `key` (an integer column) the listed `rows` carry, a
    /// batch of at most [`PRUNE_BATCH`]; says how many went and whether the batch was full
    /// (more may match). Pruning goes by such listed batches so that no statement scans or
    /// locks a whole table (InnoDB's next-key locks would hold up every write beside it).
    async fn delete_batch(
        &self,
        table: &str,
        key: &str,
        rows: &[sqlx::any::AnyRow],
    ) -> Result<(u64, bool), StoreError> {
        let keys = rows
            .iter()
            .map(|row| row.try_get::<i64, _>(key))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Ok((0, false));
        }
        let placeholders = vec!["?"; keys.len()].join(", ");
        let query = format!("DELETE FROM {table} WHERE {key} IN ({placeholders})");
        let sql = self.sql(&query);
        let mut statement = sqlx::query(&sql);
        for value in &keys {
            statement = statement.bind(*value);
        }
        let deleted = statement.execute(&self.pool).await?.rows_affected();
        Ok((deleted, keys.len() as i64 >= PRUNE_BATCH))
    }

    /// Rewrites `?` placeholders into the engine's form.
    fn sql<'a>(&self, query: &'a str) -> Cow<'a, str> {
        match self.backend {
            Backend::Postgres => {
                let mut out = String::with_capacity(query.len() + 16);
                let mut index = 0;
                for c in query.chars() {
                    if c == '?' {
                        index += 1;
                        out.push('$');
                        out.push_str(&index.to_string());
                    } else {
                        out.push(c);
                    }
                }
                Cow::Owned(out)
            }
            Backend::Sqlite | Backend::MySql => Cow::Borrowed(query),
        }
    }
}

fn sqlite_url_with_create_mode(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have credentials, which this one has.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // Unparsable (a bad port, say): everything before the last '@' may be a secret.
        Err(_) => match (url.split_once("://"), url.rfind('@')) {
            (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
            _ => url.to_owned(),
        },
    }
}

pub(crate) fn bool_to_sql(value: bool) -> i64 {
    i64::from(value)
}

/// Reads a TEXT column. MariaDB reports TEXT as a BLOB through the `Any` driver, so the bytes
/// are taken and checked as UTF-8 there.
pub(crate) fn text_column(
    row: &sqlx::any::AnyRow,
    column: &str,
) -> Result<Option<String>, StoreError> {
    match row.try_get::<Option<String>, _>(column) {
        Ok(text) => Ok(text),
        Err(sqlx::Error::ColumnDecode { .. }) => {
            let bytes: Option<Vec<u8>> = row.try_get(column)?;
            bytes
                .map(|bytes| {
                    String::from_utf8(bytes)
                        .map_err(|_| StoreError::Corrupt(format!("column {column} is not UTF-8")))
                })
                .transpose()
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://magnum:secret@db/magnum"),
            "postgres://magnum:***@db/magnum"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/x.db"),
            "sqlite:///var/lib/x.db"
        );
    }

    #[test]
    fn backend_follows_the_scheme() {
        assert_eq!(Backend::from_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::from_url("postgresql://h/d").unwrap(),
            Backend::Postgres
        );
        assert_eq!(Backend::from_url("mariadb://h/d").unwrap(), Backend::MySql);
        assert!(Backend::from_url("oracle://h/d").is_err());
    }
}
