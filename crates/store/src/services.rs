use magnum_domain::service::MagnumService;
use magnum_domain::time::Timestamp;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Store, StoreError};

const COLUMNS: &str = "id, host, \"binary\", disabled, disabled_reason, forced_down, \
    report_count, last_seen_up, created_at, updated_at";

impl Store {
    /// Records that `binary` on `host` is alive: creates its row on the first call and
    /// increments `report_count` on every call.
    pub async fn record_service_heartbeat(
        &self,
        host: &str,
        binary: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.retrying(|| self.record_service_heartbeat_once(host, binary, now))
            .await
    }

    async fn record_service_heartbeat_once(
        &self,
        host: &str,
        binary: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "UPDATE magnum_service SET report_count = report_count + 1, last_seen_up = ?, \
             updated_at = ? WHERE host = ? AND \"binary\" = ?",
        );
        let updated = sqlx::query(&sql)
            .bind(now.unix_seconds())
            .bind(now.unix_seconds())
            .bind(host)
            .bind(binary)
            .execute(&self.pool)
            .await?;
        if updated.rows_affected() > 0 {
            return Ok(());
        }
        let sql = self.sql(
            "INSERT INTO magnum_service (host, \"binary\", disabled, disabled_reason, \
             forced_down, report_count, last_seen_up, created_at, updated_at) \
             VALUES (?, ?, 0, NULL, 0, 1, ?, ?, NULL)",
        );
        let inserted = sqlx::query(&sql)
            .bind(host)
            .bind(binary)
            .bind(now.unix_seconds())
            .bind(now.unix_seconds())
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(()),
            // Another process registered the same (host, binary) first: update instead.
            Err(error) if StoreError::is_unique_violation(&error) => Err(StoreError::Conflict),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn list_services(&self) -> Result<Vec<MagnumService>, StoreError> {
        let query = format!("SELECT {COLUMNS} FROM magnum_service ORDER BY id");
        let rows = sqlx::query(&query).fetch_all(&self.pool).await?;
        rows.iter().map(service_from_row).collect()
    }
}

fn service_from_row(row: &AnyRow) -> Result<MagnumService, StoreError> {
    Ok(MagnumService {
        id: row.try_get("id")?,
        host: row.try_get("host")?,
        binary: row.try_get("binary")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        disabled_reason: row.try_get("disabled_reason")?,
        forced_down: row.try_get::<i64, _>("forced_down")? != 0,
        report_count: row.try_get("report_count")?,
        last_seen_up: row
            .try_get::<Option<i64>, _>("last_seen_up")?
            .map(Timestamp::from_unix_seconds),
        created_at: Timestamp::from_unix_seconds(row.try_get("created_at")?),
        updated_at: row
            .try_get::<Option<i64>, _>("updated_at")?
            .map(Timestamp::from_unix_seconds),
    })
}
