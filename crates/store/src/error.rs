use crate::redact_url;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0}: expected sqlite://, postgres:// or mysql://")]
    UnsupportedUrl(String),
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("a record with UUID {0} already exists")]
    DuplicateUuid(uuid::Uuid),
    #[error("the record was changed concurrently")]
    Conflict,
    /// A nodegroup of that name exists in the cluster (as the database compares names).
    #[error("a nodegroup of that name exists in the cluster")]
    NodegroupNameTaken,
    /// Changed concurrently again and again: the caller may try later.
    #[error("the record was changed concurrently too often")]
    Busy,
    #[error("the record is referenced by one or more clusters")]
    InUse,
    #[error("the record does not exist")]
    NotFound,
    #[error("the project has reached its limit of {limit} clusters")]
    LimitReached { limit: i64 },
    #[error("the pagination marker {0} does not exist")]
    MarkerNotFound(uuid::Uuid),
    #[error("the database schema is at version {found}, newer than this binary knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub(crate) fn connect(url: &str, source: sqlx::Error) -> Self {
        StoreError::Connect {
            url: redact_url(url),
            source,
        }
    }

    /// Whether another try of the whole transaction can succeed: a lost compare-and-set, a
    /// deadlock (PostgreSQL 40P01; MariaDB reports SQLSTATE 40001 and "Deadlock found"), a
    /// lock wait timeout (MariaDB: "Lock wait timeout"), a serialization failure (40001) or a
    /// busy SQLite database.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Conflict => true,
            StoreError::Database(sqlx::Error::Database(error)) => {
                let code = error.code();
                matches!(
                    code.as_deref(),
                    Some("40001" | "40P01" | "5" | "6" | "261" | "262" | "517")
                ) || error.message().contains("Deadlock found")
                    || error.message().contains("Lock wait timeout")
                    || error.message().contains("database is locked")
            }
            _ => false,
        }
    }

    pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
        match error {
            sqlx::Error::Database(database_error) => {
                matches!(
                    database_error.kind(),
                    sqlx::error::ErrorKind::UniqueViolation
                ) || database_error.code().as_deref() == Some("23000")
                    && database_error.message().contains("Duplicate")
            }
            _ => false,
        }
    }

    pub(crate) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
        match error {
            sqlx::Error::Database(database_error) => {
                matches!(
                    database_error.kind(),
                    sqlx::error::ErrorKind::ForeignKeyViolation
                ) || database_error.message().contains("FOREIGN KEY")
                    || database_error.message().contains("foreign key")
            }
            _ => false,
        }
    }
}
