//! Quotas: one row per (project, resource).

use magnum_domain::quota::Quota;
use magnum_domain::time::Timestamp;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::pagination::{int_value, Bound, Keyset, Order, SortValue};
use crate::{SortDirection, Store, StoreError};

const COLUMNS: &str = "id, project_id, resource, hard_limit, created_at, updated_at";

/// Columns a quota list may be sorted by, with whether they hold integers.
pub const QUOTA_SORT_KEYS: &[(&str, bool)] = &[
    ("id", true),
    ("project_id", false),
    ("resource", false),
    ("hard_limit", true),
    ("created_at", true),
    ("updated_at", true),
];

/// One page of quotas; the marker is a quota id.
#[derive(Debug, Clone)]
pub struct QuotaPage {
    pub sort_key: &'static str,
    pub direction: SortDirection,
    pub limit: u32,
    pub marker: Option<i64>,
}

/// What a quota list reads.
const QUOTA_KEYSET: Keyset = Keyset {
    table: "quota",
    columns: COLUMNS,
    sort_keys: QUOTA_SORT_KEYS,
};

impl Store {
    /// `Conflict` when the project already has a quota for the resource.
    pub async fn insert_quota(&self, quota: &Quota) -> Result<Quota, StoreError> {
        let sql = self.sql(
            "INSERT INTO quota (project_id, resource, hard_limit, created_at, updated_at) \
             VALUES (?, ?, ?, ?, NULL)",
        );
        sqlx::query(&sql)
            .bind(quota.project_id.clone())
            .bind(quota.resource.clone())
            .bind(quota.hard_limit)
            .bind(quota.created_at.unix_seconds())
            .execute(&self.pool)
            .await
            .map_err(|error| {
                if StoreError::is_unique_violation(&error) {
                    StoreError::Conflict
                } else {
                    error.into()
                }
            })?;
        self.quota(&quota.project_id, &quota.resource)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn quota(
        &self,
        project_id: &str,
        resource: &str,
    ) -> Result<Option<Quota>, StoreError> {
        let query = format!("SELECT {COLUMNS} FROM quota WHERE project_id = ? AND resource = ?");
        let sql = self.sql(&query);
        let row = sqlx::query(&sql)
            .bind(project_id.to_owned())
            .bind(resource.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(quota_from_row).transpose()
    }

    async fn quota_by_id(&self, id: i64) -> Result<Option<Quota>, StoreError> {
        let query = format!("SELECT {COLUMNS} FROM quota WHERE id = ?");
        let sql = self.sql(&query);
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(quota_from_row).transpose()
    }

    /// A page of quotas of one project, or of every project.
    pub async fn list_quotas(
        &self,
        project_id: Option<&str>,
        page: &QuotaPage,
    ) -> Result<Vec<Quota>, StoreError> {
        let mut binds = Vec::new();
        let mut conditions = vec!["1 = 1".to_owned()];
        if let Some(project_id) = project_id {
            binds.push(Bound::Text(project_id.to_owned()));
            conditions.push("project_id = ?".to_owned());
        }
        let marker = match page.marker {
            Some(marker_id) => {
                let marker = self
                    .quota_by_id(marker_id)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let value = match page.sort_key {
                    "project_id" => SortValue::Text(marker.project_id.clone()),
                    "resource" => SortValue::Text(marker.resource.clone()),
                    "hard_limit" => SortValue::Int(marker.hard_limit),
                    "created_at" => SortValue::Int(marker.created_at.unix_seconds()),
                    "updated_at" => int_value(marker.updated_at.map(|at| at.unix_seconds())),
                    _ => SortValue::Int(marker.id),
                };
                Some((value, marker.id))
            }
            None => None,
        };
        let order = Order {
            sort_key: page.sort_key,
            direction: page.direction,
            limit: page.limit,
        };
        self.keyset_page(
            &QUOTA_KEYSET,
            &order,
            conditions,
            binds,
            marker,
            quota_from_row,
        )
        .await
    }

    /// `NotFound` when there is no such quota.
    pub async fn update_quota(
        &self,
        project_id: &str,
        resource: &str,
        hard_limit: i64,
        now: Timestamp,
    ) -> Result<Quota, StoreError> {
        let sql = self.sql(
            "UPDATE quota SET hard_limit = ?, updated_at = ? WHERE project_id = ? AND resource = ?",
        );
        let updated = sqlx::query(&sql)
            .bind(hard_limit)
            .bind(now.unix_seconds())
            .bind(project_id.to_owned())
            .bind(resource.to_owned())
            .execute(&self.pool)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.quota(project_id, resource)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// `NotFound` when there is no such quota.
    pub async fn delete_quota(&self, project_id: &str, resource: &str) -> Result<(), StoreError> {
        let sql = self.sql("DELETE FROM quota WHERE project_id = ? AND resource = ?");
        let deleted = sqlx::query(&sql)
            .bind(project_id.to_owned())
            .bind(resource.to_owned())
            .execute(&self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }
}

fn quota_from_row(row: &AnyRow) -> Result<Quota, StoreError> {
    Ok(Quota {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        resource: row.try_get("resource")?,
        hard_limit: row.try_get("hard_limit")?,
        created_at: Timestamp::from_unix_seconds(row.try_get("created_at")?),
        updated_at: row
            .try_get::<Option<i64>, _>("updated_at")?
            .map(Timestamp::from_unix_seconds),
    })
}
