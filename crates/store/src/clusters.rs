//! Clusters and their nodegroups. A cluster is created together with its nodegroups and the
//! operation that builds it, in one transaction: the service never holds a cluster nobody
//! is going to work on.

use magnum_domain::cluster::{Cluster, ClusterStatus, HealthStatus, NodeGroup, Taint};
use magnum_domain::event::{describe_creation, Cause, ClusterEvent};
use magnum_domain::labels::Labels;
use magnum_domain::operation::Operation;
use magnum_domain::time::Timestamp;
use serde_json::{Map, Value};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};
use uuid::Uuid;

use crate::credentials::StoredCredential;
use crate::pagination::{int_value, marker_of, text_value, Bound, Keyset, Page, SortValue};
use crate::{bool_to_sql, text_column, Store, StoreError};

const CLUSTER_COLUMNS: &str = "id, uuid, version, name, project_id, user_id, \
    cluster_template_id, keypair, docker_volume_size, labels, master_flavor_id, flavor_id, \
    create_timeout, discovery_url, fixed_network, fixed_subnet, floating_ip_enabled, \
    master_lb_enabled, status, status_reason, health_status, health_status_reason, stack_id, \
    api_address, coe_version, container_version, node_count, master_count, node_addresses, \
    master_addresses, created_at, updated_at";

const NODEGROUP_COLUMNS: &str = "id, uuid, version, cluster_uuid, project_id, name, \
    docker_volume_size, labels, flavor_id, image_id, node_addresses, node_count, role, \
    min_node_count, max_node_count, is_default, stack_id, status, status_reason, coe_version, \
    node_labels, node_taints, created_at, updated_at";

/// Columns a nodegroup list may be sorted by, with whether they hold integers.
pub const NODEGROUP_SORT_KEYS: &[(&str, bool)] = &[
    ("id", true),
    ("uuid", false),
    ("name", false),
    ("flavor_id", false),
    ("image_id", false),
    ("node_count", true),
    ("role", false),
    ("min_node_count", true),
    ("max_node_count", true),
    ("status", false),
    ("created_at", true),
    ("updated_at", true),
];

/// Columns a cluster list may be sorted by, with whether they hold integers.
pub const CLUSTER_SORT_KEYS: &[(&str, bool)] = &[
    ("id", true),
    ("uuid", false),
    ("name", false),
    ("project_id", false),
    ("user_id", false),
    ("cluster_template_id", false),
    ("keypair", false),
    ("docker_volume_size", true),
    ("master_flavor_id", false),
    ("flavor_id", false),
    ("create_timeout", true),
    ("discovery_url", false),
    ("status", false),
    ("status_reason", false),
    ("health_status", false),
    ("stack_id", false),
    ("api_address", false),
    ("coe_version", false),
    ("container_version", false),
    ("node_count", true),
    ("master_count", true),
    ("created_at", true),
    ("updated_at", true),
];

/// Which clusters a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterScope<'a> {
    All,
    Project(&'a str),
}

impl ClusterScope<'_> {
    fn condition(&self, binds: &mut Vec<Bound>) -> &'static str {
        match self {
            ClusterScope::All => "1 = 1",
            ClusterScope::Project(project_id) => {
                binds.push(Bound::Text((*project_id).to_owned()));
                "project_id = ?"
            }
        }
    }

    fn admits(&self, cluster: &Cluster) -> bool {
        match self {
            ClusterScope::All => true,
            ClusterScope::Project(project_id) => cluster.project_id == *project_id,
        }
    }
}

/// A change to one cluster, written atomically: the cluster (compare-and-set on the version
/// it carries), nodegroups changed (same rule) or new (`id == 0`), nodegroups removed, and
/// the operation that will carry the change out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClusterChange<'a> {
    pub cluster: &'a Cluster,
    pub nodegroups: &'a [NodeGroup],
    pub removed_nodegroups: &'a [Uuid],
    pub operation: Option<&'a Operation>,
    /// What the change tells (`magnum_domain::event::describe_change`), and why it happened.
    pub events: &'a [ClusterEvent],
    pub cause: &'a Cause,
}

fn placeholders(columns: &str) -> String {
    vec!["?"; columns.split(',').count() - 1].join(", ")
}

fn after_id(columns: &str) -> &str {
    &columns["id, ".len()..]
}

/// `column = ?` for every column but the identifying and versioning ones.
fn mutable_assignments(columns: &str) -> String {
    columns
        .split(", ")
        .map(str::trim)
        .filter(|column| !["id", "uuid", "version"].contains(column))
        .map(|column| format!("{column} = ?"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The generation counter every cluster or nodegroup write increments.
const CLUSTER_GENERATION: &str = "cluster";

/// What a cluster list reads.
const CLUSTER_KEYSET: Keyset = Keyset {
    table: "cluster",
    columns: CLUSTER_COLUMNS,
    sort_keys: CLUSTER_SORT_KEYS,
};

/// What a nodegroup list reads.
const NODEGROUP_KEYSET: Keyset = Keyset {
    table: "nodegroup",
    columns: NODEGROUP_COLUMNS,
    sort_keys: NODEGROUP_SORT_KEYS,
};

impl Store {
    /// A number that changes whenever any cluster or nodegroup changes, in any process; read
    /// it before the data it validates.
    pub async fn clusters_generation(&self) -> Result<i64, StoreError> {
        self.generation(CLUSTER_GENERATION).await
    }

    /// Stores a new cluster, its nodegroups and the operation that will build it, all or
    /// nothing. `NotFound` when its template no longer exists; `LimitReached` when the
    /// project already has `cluster_limit` clusters.
    pub async fn create_cluster(
        &self,
        cluster: &Cluster,
        nodegroups: &[NodeGroup],
        operation: &Operation,
        cluster_limit: Option<i64>,
    ) -> Result<Cluster, StoreError> {
        self.create_cluster_with_credential(
            cluster,
            nodegroups,
            operation,
            cluster_limit,
            None,
            &Cause::none(),
        )
        .await
    }

    /// [`Store::create_cluster`], with the credential delegated to the cluster written in
    /// the same transaction: a cluster never exists without the credential it was given.
    pub async fn create_cluster_with_credential(
        &self,
        cluster: &Cluster,
        nodegroups: &[NodeGroup],
        operation: &Operation,
        cluster_limit: Option<i64>,
        credential: Option<&StoredCredential>,
        cause: &Cause,
    ) -> Result<Cluster, StoreError> {
        let cause = Cause {
            operation: cause.operation.or(Some(operation.uuid)),
            ..cause.clone()
        };
        self.retrying(|| {
            self.create_cluster_once(
                cluster,
                nodegroups,
                operation,
                cluster_limit,
                credential,
                &cause,
            )
        })
        .await
    }

    async fn create_cluster_once(
        &self,
        cluster: &Cluster,
        nodegroups: &[NodeGroup],
        operation: &Operation,
        cluster_limit: Option<i64>,
        credential: Option<&StoredCredential>,
        cause: &Cause,
    ) -> Result<Cluster, StoreError> {
        let mut transaction = self.begin_write().await?;
        // Bumping the generation first row-locks it until commit, so concurrent creates on
        // PostgreSQL and MariaDB count one after another and the limit holds; SQLite's write
        // lock, taken by begin_write, already does that.
        self.bump_generation(&mut transaction, CLUSTER_GENERATION)
            .await?;
        if let Some(limit) = cluster_limit {
            let sql = self.sql("SELECT COUNT(*) AS n FROM cluster WHERE project_id = ?");
            let row = sqlx::query(&sql)
                .bind(cluster.project_id.clone())
                .fetch_one(&mut *transaction)
                .await?;
            let existing: i64 = row.try_get("n")?;
            if existing >= limit {
                return Err(StoreError::LimitReached { limit });
            }
        }
        let query = format!(
            "INSERT INTO cluster ({}) VALUES ({})",
            after_id(CLUSTER_COLUMNS),
            placeholders(CLUSTER_COLUMNS)
        );
        let sql = self.sql(&query);
        let mut stored = Cluster {
            version: 1,
            ..cluster.clone()
        };
        stored.summarize(nodegroups);
        let inserted = bind_cluster(sqlx::query(&sql), &stored)
            .execute(&mut *transaction)
            .await;
        match inserted {
            Ok(_) => {}
            Err(error) if StoreError::is_unique_violation(&error) => {
                return Err(StoreError::DuplicateUuid(cluster.uuid))
            }
            Err(error) if StoreError::is_foreign_key_violation(&error) => {
                return Err(StoreError::NotFound)
            }
            Err(error) => return Err(error.into()),
        }
        for nodegroup in nodegroups {
            self.insert_nodegroup(&mut transaction, nodegroup).await?;
        }
        self.insert_operation(&mut transaction, operation).await?;
        if let Some(credential) = credential {
            self.insert_credential(&mut transaction, credential).await?;
        }
        let events = describe_creation(nodegroups);
        self.insert_events(&mut transaction, &stored, &events, cause, stored.created_at)
            .await?;
        transaction.commit().await?;
        self.cluster_by_uuid(cluster.uuid)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn insert_nodegroup(
        &self,
        transaction: &mut sqlx::Transaction<'_, Any>,
        nodegroup: &NodeGroup,
    ) -> Result<(), StoreError> {
        let query = format!(
            "INSERT INTO nodegroup ({}) VALUES ({})",
            after_id(NODEGROUP_COLUMNS),
            placeholders(NODEGROUP_COLUMNS)
        );
        let sql = self.sql(&query);
        let stored = NodeGroup {
            version: 1,
            ..nodegroup.clone()
        };
        bind_nodegroup(sqlx::query(&sql), &stored)
            .execute(&mut **transaction)
            .await
            .map_err(|error| {
                if StoreError::is_unique_violation(&error) {
                    // The one unique key a new nodegroup can break is its name in the cluster;
                    // retrying cannot help, so this is not a lost race.
                    StoreError::NodegroupNameTaken
                } else if StoreError::is_foreign_key_violation(&error) {
                    StoreError::NotFound
                } else {
                    error.into()
                }
            })?;
        Ok(())
    }

    /// Writes `change` if neither the cluster nor any changed nodegroup was modified since
    /// they were read (`Conflict` otherwise, `NotFound` when the cluster is gone). The
    /// cluster's counts and addresses are recomputed from its nodegroups in the same
    /// transaction. Returns the stored cluster.
    pub(crate) async fn commit_cluster_change(
        &self,
        change: ClusterChange<'_>,
    ) -> Result<(Cluster, Vec<NodeGroup>), StoreError> {
        let cluster = change.cluster;
        let mut transaction = self.begin_write().await?;
        let update_nodegroup = format!(
            "UPDATE nodegroup SET {}, version = version + 1 WHERE uuid = ? AND version = ?",
            mutable_assignments(NODEGROUP_COLUMNS)
        );
        let update_nodegroup = self.sql(&update_nodegroup).into_owned();
        for nodegroup in change.nodegroups {
            if nodegroup.id == 0 {
                self.insert_nodegroup(&mut transaction, nodegroup).await?;
                continue;
            }
            let updated = bind_nodegroup_after_version(sqlx::query(&update_nodegroup), nodegroup)
                .bind(nodegroup.uuid.to_string())
                .bind(nodegroup.version)
                .execute(&mut *transaction)
                .await?;
            if updated.rows_affected() != 1 {
                transaction.rollback().await?;
                return Err(StoreError::Conflict);
            }
        }
        let delete_nodegroup =
            self.sql("DELETE FROM nodegroup WHERE uuid = ? AND cluster_uuid = ?");
        for removed in change.removed_nodegroups {
            sqlx::query(&delete_nodegroup)
                .bind(removed.to_string())
                .bind(cluster.uuid.to_string())
                .execute(&mut *transaction)
                .await?;
        }
        let query =
            format!("SELECT {NODEGROUP_COLUMNS} FROM nodegroup WHERE cluster_uuid = ? ORDER BY id");
        let sql = self.sql(&query);
        let rows = sqlx::query(&sql)
            .bind(cluster.uuid.to_string())
            .fetch_all(&mut *transaction)
            .await?;
        let nodegroups = rows
            .iter()
            .map(nodegroup_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut stored = cluster.clone();
        stored.summarize(&nodegroups);
        let query = format!(
            "UPDATE cluster SET {}, version = version + 1 WHERE uuid = ? AND version = ?",
            mutable_assignments(CLUSTER_COLUMNS)
        );
        let sql = self.sql(&query);
        let updated = bind_cluster_after_version(sqlx::query(&sql), &stored)
            .bind(cluster.uuid.to_string())
            .bind(cluster.version)
            .execute(&mut *transaction)
            .await?;
        if updated.rows_affected() != 1 {
            transaction.rollback().await?;
            return match self.cluster_by_uuid(cluster.uuid).await? {
                Some(_) => Err(StoreError::Conflict),
                None => Err(StoreError::NotFound),
            };
        }
        if let Some(operation) = change.operation {
            self.insert_operation(&mut transaction, operation).await?;
        }
        self.bump_generation(&mut transaction, CLUSTER_GENERATION)
            .await?;
        let cause = Cause {
            operation: change
                .cause
                .operation
                .or(change.operation.map(|operation| operation.uuid)),
            ..change.cause.clone()
        };
        self.insert_events(
            &mut transaction,
            &stored,
            change.events,
            &cause,
            Timestamp::now(),
        )
        .await?;
        transaction.commit().await?;
        Ok((
            Cluster {
                version: cluster.version + 1,
                ..stored
            },
            nodegroups,
        ))
    }

    /// Removes the cluster, its nodegroups and its operations. False when it was gone. Its
    /// delegated credentials stay recorded until they are revoked
    /// ([`Store::credentials_due_for_revocation`]).
    pub async fn purge_cluster(&self, uuid: Uuid, cause: &Cause) -> Result<bool, StoreError> {
        self.purge_cluster_revoking_after(uuid, None, cause).await
    }

    /// [`Store::purge_cluster`], scheduling in the same transaction the revocation of the
    /// cluster's unscheduled credentials for `revoke_after` (a force delete: Cluster API still
    /// tears the cluster down with them).
    pub async fn purge_cluster_revoking_after(
        &self,
        uuid: Uuid,
        revoke_after: Option<Timestamp>,
        cause: &Cause,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        if let Some(at) = revoke_after {
            sqlx::query(&self.sql(
                "UPDATE cluster_credential SET revoke_after = ? WHERE cluster_uuid = ? \
                 AND revoke_after IS NULL",
            ))
            .bind(at.unix_seconds())
            .bind(uuid.to_string())
            .execute(&mut *transaction)
            .await?;
        }
        for statement in [
            "DELETE FROM nodegroup WHERE cluster_uuid = ?",
            "DELETE FROM operation WHERE cluster_uuid = ?",
            "DELETE FROM cluster_certificate WHERE cluster_uuid = ?",
        ] {
            let sql = self.sql(statement);
            sqlx::query(&sql)
                .bind(uuid.to_string())
                .execute(&mut *transaction)
                .await?;
        }
        let last_seen = self.cluster_in_transaction(&mut transaction, uuid).await?;
        let sql = self.sql("DELETE FROM cluster WHERE uuid = ?");
        let deleted = sqlx::query(&sql)
            .bind(uuid.to_string())
            .execute(&mut *transaction)
            .await?;
        self.bump_generation(&mut transaction, CLUSTER_GENERATION)
            .await?;
        if let Some(mut cluster) = last_seen {
            let now = Timestamp::now();
            cluster.status = ClusterStatus::DeleteComplete;
            let event = if revoke_after.is_some() {
                ClusterEvent::warning(
                    "Deleted",
                    "The cluster's records were removed by a force delete; what the driver \
                     made is released in the background.",
                )
            } else {
                ClusterEvent::normal("Deleted", "The cluster was deleted.")
            };
            self.insert_events(&mut transaction, &cluster, &[event], cause, now)
                .await?;
            self.mark_events_of_deleted(&mut transaction, uuid, now)
                .await?;
        }
        transaction.commit().await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// The cluster as a transaction sees it.
    pub(crate) async fn cluster_in_transaction(
        &self,
        transaction: &mut sqlx::Transaction<'_, Any>,
        uuid: Uuid,
    ) -> Result<Option<Cluster>, StoreError> {
        let query = format!("SELECT {CLUSTER_COLUMNS} FROM cluster WHERE uuid = ?");
        let row = sqlx::query(&self.sql(&query))
            .bind(uuid.to_string())
            .fetch_optional(&mut **transaction)
            .await?;
        row.as_ref().map(cluster_from_row).transpose()
    }

    pub async fn cluster_by_uuid(&self, uuid: Uuid) -> Result<Option<Cluster>, StoreError> {
        let query = format!("SELECT {CLUSTER_COLUMNS} FROM cluster WHERE uuid = ?");
        let sql = self.sql(&query);
        let row = sqlx::query(&sql)
            .bind(uuid.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(cluster_from_row).transpose()
    }

    /// Clusters of `project_id` (every project's when `None`) with exactly this name, at most
    /// `limit`.
    pub async fn clusters_by_name(
        &self,
        name: &str,
        project_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Cluster>, StoreError> {
        let query = match project_id {
            Some(_) => format!(
                "SELECT {CLUSTER_COLUMNS} FROM cluster WHERE name = ? AND project_id = ? ORDER BY id LIMIT ?"
            ),
            None => format!("SELECT {CLUSTER_COLUMNS} FROM cluster WHERE name = ? ORDER BY id LIMIT ?"),
        };
        let sql = self.sql(&query);
        let mut select = sqlx::query(&sql).bind(name.to_owned());
        if let Some(project_id) = project_id {
            select = select.bind(project_id.to_owned());
        }
        let rows = select.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(cluster_from_row).collect()
    }

    /// One page of clusters in `scope`, ordered by the page's key then by id.
    pub async fn list_clusters(
        &self,
        scope: ClusterScope<'_>,
        page: &Page,
    ) -> Result<Vec<Cluster>, StoreError> {
        let mut binds = Vec::new();
        let conditions = vec![scope.condition(&mut binds).to_owned()];
        let find = |uuid| async move {
            Ok(self
                .cluster_by_uuid(uuid)
                .await?
                .filter(|marker| scope.admits(marker)))
        };
        let marker = marker_of(page, find, cluster_sort_value, |cluster| cluster.id).await?;
        self.keyset_page(
            &CLUSTER_KEYSET,
            &page.order(),
            conditions,
            binds,
            marker,
            cluster_from_row,
        )
        .await
    }

    /// One page of a cluster's nodegroups (of one role, when given).
    pub async fn list_nodegroups(
        &self,
        cluster_uuid: Uuid,
        role: Option<&str>,
        page: &Page,
    ) -> Result<Vec<NodeGroup>, StoreError> {
        let mut binds = vec![Bound::Text(cluster_uuid.to_string())];
        let mut conditions = vec!["cluster_uuid = ?".to_owned()];
        if let Some(role) = role {
            binds.push(Bound::Text(role.to_owned()));
            conditions.push("role = ?".to_owned());
        }
        let find = |uuid| async move {
            Ok(self
                .nodegroups_of_cluster(cluster_uuid)
                .await?
                .into_iter()
                .find(|nodegroup| nodegroup.uuid == uuid))
        };
        let marker = marker_of(page, find, nodegroup_sort_value, |nodegroup| nodegroup.id).await?;
        self.keyset_page(
            &NODEGROUP_KEYSET,
            &page.order(),
            conditions,
            binds,
            marker,
            nodegroup_from_row,
        )
        .await
    }

    /// How many clusters a project has (the quota counts them).
    pub async fn count_clusters(&self, project_id: &str) -> Result<i64, StoreError> {
        let sql = self.sql("SELECT COUNT(*) AS n FROM cluster WHERE project_id = ?");
        let row = sqlx::query(&sql)
            .bind(project_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// `(clusters, nodes)` of a project, or of every project; nodes count masters too. The
    /// node total saturates at `i64::MAX` rather than failing, whatever counts are stored.
    pub async fn cluster_stats(&self, project_id: Option<&str>) -> Result<(i64, i64), StoreError> {
        // Summed in a wider type (NUMERIC, DECIMAL; SQLite has none wider than 64 bits, but
        // TOTAL adds in floating point, exact below 2^53, and never fails), then clamped to
        // BIGINT: a BIGINT sum, or even one row's node_count + master_count, can overflow.
        let total = match self.backend {
            crate::Backend::Postgres => {
                "CAST(LEAST(GREATEST(COALESCE(SUM(CAST(node_count AS NUMERIC) + \
                 CAST(master_count AS NUMERIC)), 0), -9223372036854775808), \
                 9223372036854775807) AS BIGINT)"
            }
            crate::Backend::MySql => {
                "CAST(LEAST(GREATEST(COALESCE(SUM(CAST(node_count AS DECIMAL(65, 0)) + \
                 CAST(master_count AS DECIMAL(65, 0))), 0), -9223372036854775808), \
                 9223372036854775807) AS SIGNED)"
            }
            // CAST of a REAL beyond BIGINT's range gives its nearest bound.
            crate::Backend::Sqlite => "CAST(TOTAL(node_count) + TOTAL(master_count) AS INTEGER)",
        };
        let filter = if project_id.is_some() {
            " WHERE project_id = ?"
        } else {
            ""
        };
        let query = format!("SELECT COUNT(*) AS clusters, {total} AS nodes FROM cluster{filter}");
        let sql = self.sql(&query);
        let mut select = sqlx::query(&sql);
        if let Some(project_id) = project_id {
            select = select.bind(project_id.to_owned());
        }
        let row = select.fetch_one(&self.pool).await?;
        Ok((row.try_get("clusters")?, row.try_get("nodes")?))
    }

    /// The nodegroups of a cluster, in creation order (`default-master` first).
    pub async fn nodegroups_of_cluster(
        &self,
        cluster_uuid: Uuid,
    ) -> Result<Vec<NodeGroup>, StoreError> {
        let query =
            format!("SELECT {NODEGROUP_COLUMNS} FROM nodegroup WHERE cluster_uuid = ? ORDER BY id");
        let sql = self.sql(&query);
        let rows = sqlx::query(&sql)
            .bind(cluster_uuid.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(nodegroup_from_row).collect()
    }

    /// Clusters whose status says work is under way; the conductor checks each has an
    /// operation that will end it.
    pub async fn clusters_in_progress(&self) -> Result<Vec<Cluster>, StoreError> {
        let query = format!(
            "SELECT {CLUSTER_COLUMNS} FROM cluster WHERE status IN \
             ('CREATE_IN_PROGRESS', 'UPDATE_IN_PROGRESS', 'DELETE_IN_PROGRESS', 'ROLLBACK_IN_PROGRESS') \
             ORDER BY id"
        );
        let rows = sqlx::query(&query).fetch_all(&self.pool).await?;
        rows.iter().map(cluster_from_row).collect()
    }

    /// Sets the cluster's status if it still has `expected_version`; `Conflict` otherwise.
    /// Callers compute `status` with `ClusterStatus::apply`.
    pub async fn set_cluster_status(
        &self,
        uuid: Uuid,
        expected_version: i64,
        status: ClusterStatus,
        status_reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Cluster, StoreError> {
        let sql = self.sql(
            "UPDATE cluster SET status = ?, status_reason = ?, updated_at = ?, version = version + 1 \
             WHERE uuid = ? AND version = ?",
        );
        let mut transaction = self.begin_write().await?;
        let updated = sqlx::query(&sql)
            .bind(status.as_str())
            .bind(status_reason.map(str::to_owned))
            .bind(now.unix_seconds())
            .bind(uuid.to_string())
            .bind(expected_version)
            .execute(&mut *transaction)
            .await?;
        self.bump_generation(&mut transaction, CLUSTER_GENERATION)
            .await?;
        transaction.commit().await?;
        let current = self
            .cluster_by_uuid(uuid)
            .await?
            .ok_or(StoreError::NotFound)?;
        if updated.rows_affected() == 1 {
            Ok(current)
        } else {
            Err(StoreError::Conflict)
        }
    }

    /// Records progress in words while the status stays what the writer expects; progress
    /// notes never conflict with status changes.
    pub async fn note_cluster_progress(
        &self,
        uuid: Uuid,
        while_status: ClusterStatus,
        status_reason: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE cluster SET status_reason = ?, updated_at = ?, version = version + 1 \
             WHERE uuid = ? AND status = ?",
        );
        let mut transaction = self.begin_write().await?;
        let updated = sqlx::query(&sql)
            .bind(status_reason.to_owned())
            .bind(now.unix_seconds())
            .bind(uuid.to_string())
            .bind(while_status.as_str())
            .execute(&mut *transaction)
            .await?;
        self.bump_generation(&mut transaction, CLUSTER_GENERATION)
            .await?;
        transaction.commit().await?;
        Ok(updated.rows_affected() == 1)
    }
}

fn nodegroup_sort_value(nodegroup: &NodeGroup, key: &str) -> SortValue {
    match key {
        "id" => SortValue::Int(nodegroup.id),
        "uuid" => SortValue::Text(nodegroup.uuid.to_string()),
        "name" => SortValue::Text(nodegroup.name.clone()),
        "flavor_id" => text_value(&nodegroup.flavor_id),
        "image_id" => text_value(&nodegroup.image_id),
        "node_count" => SortValue::Int(nodegroup.node_count),
        "role" => SortValue::Text(nodegroup.role.clone()),
        "min_node_count" => SortValue::Int(nodegroup.min_node_count),
        "max_node_count" => int_value(nodegroup.max_node_count),
        "status" => SortValue::Text(nodegroup.status.as_str().to_owned()),
        "created_at" => SortValue::Int(nodegroup.created_at.unix_seconds()),
        "updated_at" => int_value(nodegroup.updated_at.map(Timestamp::unix_seconds)),
        _ => SortValue::Null,
    }
}

fn cluster_sort_value(cluster: &Cluster, key: &str) -> SortValue {
    let (text, int) = (text_value, int_value);
    match key {
        "id" => SortValue::Int(cluster.id),
        "uuid" => SortValue::Text(cluster.uuid.to_string()),
        "name" => text(&cluster.name),
        "project_id" => SortValue::Text(cluster.project_id.clone()),
        "user_id" => SortValue::Text(cluster.user_id.clone()),
        "cluster_template_id" => SortValue::Text(cluster.cluster_template_id.to_string()),
        "keypair" => text(&cluster.keypair),
        "docker_volume_size" => int(cluster.docker_volume_size),
        "master_flavor_id" => text(&cluster.master_flavor_id),
        "flavor_id" => text(&cluster.flavor_id),
        "create_timeout" => int(cluster.create_timeout),
        "discovery_url" => text(&cluster.discovery_url),
        "status" => SortValue::Text(cluster.status.as_str().to_owned()),
        "status_reason" => text(&cluster.status_reason),
        "health_status" => cluster.health_status.map_or(SortValue::Null, |health| {
            SortValue::Text(health.as_str().to_owned())
        }),
        "stack_id" => text(&cluster.stack_id),
        "api_address" => text(&cluster.api_address),
        "coe_version" => text(&cluster.coe_version),
        "container_version" => text(&cluster.container_version),
        "node_count" => SortValue::Int(cluster.node_count),
        "master_count" => SortValue::Int(cluster.master_count),
        "created_at" => SortValue::Int(cluster.created_at.unix_seconds()),
        "updated_at" => int(cluster.updated_at.map(Timestamp::unix_seconds)),
        _ => SortValue::Null,
    }
}

fn bind_cluster<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    cluster: &Cluster,
) -> Query<'q, Any, AnyArguments<'q>> {
    let query = query.bind(cluster.uuid.to_string()).bind(cluster.version);
    bind_cluster_after_version(query, cluster)
}

fn bind_cluster_after_version<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    cluster: &Cluster,
) -> Query<'q, Any, AnyArguments<'q>> {
    query
        .bind(cluster.name.clone())
        .bind(cluster.project_id.clone())
        .bind(cluster.user_id.clone())
        .bind(cluster.cluster_template_id.to_string())
        .bind(cluster.keypair.clone())
        .bind(cluster.docker_volume_size)
        .bind(cluster.labels.to_stored_json())
        .bind(cluster.master_flavor_id.clone())
        .bind(cluster.flavor_id.clone())
        .bind(cluster.create_timeout)
        .bind(cluster.discovery_url.clone())
        .bind(cluster.fixed_network.clone())
        .bind(cluster.fixed_subnet.clone())
        .bind(bool_to_sql(cluster.floating_ip_enabled))
        .bind(bool_to_sql(cluster.master_lb_enabled))
        .bind(cluster.status.as_str())
        .bind(cluster.status_reason.clone())
        .bind(cluster.health_status.map(HealthStatus::as_str))
        .bind(Value::Object(cluster.health_status_reason.clone()).to_string())
        .bind(cluster.stack_id.clone())
        .bind(cluster.api_address.clone())
        .bind(cluster.coe_version.clone())
        .bind(cluster.container_version.clone())
        .bind(cluster.node_count)
        .bind(cluster.master_count)
        .bind(serde_json::to_string(&cluster.node_addresses).expect("strings serialize"))
        .bind(serde_json::to_string(&cluster.master_addresses).expect("strings serialize"))
        .bind(cluster.created_at.unix_seconds())
        .bind(cluster.updated_at.map(Timestamp::unix_seconds))
}

fn bind_nodegroup<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    nodegroup: &NodeGroup,
) -> Query<'q, Any, AnyArguments<'q>> {
    let query = query
        .bind(nodegroup.uuid.to_string())
        .bind(nodegroup.version);
    bind_nodegroup_after_version(query, nodegroup)
}

fn bind_nodegroup_after_version<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    nodegroup: &NodeGroup,
) -> Query<'q, Any, AnyArguments<'q>> {
    query
        .bind(nodegroup.cluster_uuid.to_string())
        .bind(nodegroup.project_id.clone())
        .bind(nodegroup.name.clone())
        .bind(nodegroup.docker_volume_size)
        .bind(nodegroup.labels.to_stored_json())
        .bind(nodegroup.flavor_id.clone())
        .bind(nodegroup.image_id.clone())
        .bind(serde_json::to_string(&nodegroup.node_addresses).expect("strings serialize"))
        .bind(nodegroup.node_count)
        .bind(nodegroup.role.clone())
        .bind(nodegroup.min_node_count)
        .bind(nodegroup.max_node_count)
        .bind(bool_to_sql(nodegroup.is_default))
        .bind(nodegroup.stack_id.clone())
        .bind(nodegroup.status.as_str())
        .bind(nodegroup.status_reason.clone())
        .bind(nodegroup.coe_version.clone())
        .bind(Value::Object(nodegroup.node_labels.clone()).to_string())
        .bind(serde_json::to_string(&nodegroup.node_taints).expect("taints serialize"))
        .bind(nodegroup.created_at.unix_seconds())
        .bind(nodegroup.updated_at.map(Timestamp::unix_seconds))
}

fn parse_uuid(row: &AnyRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|_| StoreError::Corrupt(format!("{column} {text:?}")))
}

fn parse_status(row: &AnyRow) -> Result<ClusterStatus, StoreError> {
    let text: String = row.try_get("status")?;
    text.parse()
        .map_err(|()| StoreError::Corrupt(format!("status {text:?}")))
}

fn json_object(row: &AnyRow, column: &str) -> Result<Map<String, Value>, StoreError> {
    match text_column(row, column)? {
        None => Ok(Map::new()),
        Some(text) => match serde_json::from_str(&text) {
            Ok(Value::Object(object)) => Ok(object),
            _ => Err(StoreError::Corrupt(format!(
                "{column} is not a JSON object"
            ))),
        },
    }
}

fn string_list(row: &AnyRow, column: &str) -> Result<Vec<String>, StoreError> {
    match text_column(row, column)? {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|_| StoreError::Corrupt(format!("{column} is not a list of strings"))),
    }
}

fn cluster_from_row(row: &AnyRow) -> Result<Cluster, StoreError> {
    let health_status = match row.try_get::<Option<String>, _>("health_status")? {
        None => None,
        Some(text) => Some(
            text.parse::<HealthStatus>()
                .map_err(|()| StoreError::Corrupt(format!("health_status {text:?}")))?,
        ),
    };
    Ok(Cluster {
        id: row.try_get("id")?,
        uuid: parse_uuid(row, "uuid")?,
        name: row.try_get("name")?,
        project_id: row.try_get("project_id")?,
        user_id: row.try_get("user_id")?,
        cluster_template_id: parse_uuid(row, "cluster_template_id")?,
        keypair: row.try_get("keypair")?,
        docker_volume_size: row.try_get("docker_volume_size")?,
        labels: Labels::from_stored_json(&text_column(row, "labels")?.unwrap_or_default()),
        master_flavor_id: row.try_get("master_flavor_id")?,
        flavor_id: row.try_get("flavor_id")?,
        create_timeout: row.try_get("create_timeout")?,
        discovery_url: row.try_get("discovery_url")?,
        fixed_network: row.try_get("fixed_network")?,
        fixed_subnet: row.try_get("fixed_subnet")?,
        floating_ip_enabled: row.try_get::<i64, _>("floating_ip_enabled")? != 0,
        master_lb_enabled: row.try_get::<i64, _>("master_lb_enabled")? != 0,
        status: parse_status(row)?,
        status_reason: text_column(row, "status_reason")?,
        health_status,
        health_status_reason: json_object(row, "health_status_reason")?,
        stack_id: row.try_get("stack_id")?,
        api_address: row.try_get("api_address")?,
        coe_version: row.try_get("coe_version")?,
        container_version: row.try_get("container_version")?,
        node_count: row.try_get("node_count")?,
        master_count: row.try_get("master_count")?,
        node_addresses: string_list(row, "node_addresses")?,
        master_addresses: string_list(row, "master_addresses")?,
        created_at: Timestamp::from_unix_seconds(row.try_get("created_at")?),
        updated_at: row
            .try_get::<Option<i64>, _>("updated_at")?
            .map(Timestamp::from_unix_seconds),
        version: row.try_get("version")?,
    })
}

fn nodegroup_from_row(row: &AnyRow) -> Result<NodeGroup, StoreError> {
    let addresses = text_column(row, "node_addresses")?.unwrap_or_else(|| "[]".to_owned());
    let taints = text_column(row, "node_taints")?.unwrap_or_else(|| "[]".to_owned());
    Ok(NodeGroup {
        id: row.try_get("id")?,
        uuid: parse_uuid(row, "uuid")?,
        cluster_uuid: parse_uuid(row, "cluster_uuid")?,
        project_id: row.try_get("project_id")?,
        name: row.try_get("name")?,
        docker_volume_size: row.try_get("docker_volume_size")?,
        labels: Labels::from_stored_json(&text_column(row, "labels")?.unwrap_or_default()),
        flavor_id: row.try_get("flavor_id")?,
        image_id: row.try_get("image_id")?,
        node_addresses: serde_json::from_str(&addresses)
            .map_err(|_| StoreError::Corrupt("nodegroup node_addresses".to_owned()))?,
        node_count: row.try_get("node_count")?,
        role: row.try_get("role")?,
        min_node_count: row.try_get("min_node_count")?,
        max_node_count: row.try_get("max_node_count")?,
        is_default: row.try_get::<i64, _>("is_default")? != 0,
        stack_id: row.try_get("stack_id")?,
        status: parse_status(row)?,
        status_reason: text_column(row, "status_reason")?,
        coe_version: row.try_get("coe_version")?,
        node_labels: json_object(row, "node_labels")?,
        node_taints: serde_json::from_str::<Vec<Taint>>(&taints)
            .map_err(|_| StoreError::Corrupt("nodegroup node_taints".to_owned()))?,
        created_at: Timestamp::from_unix_seconds(row.try_get("created_at")?),
        updated_at: row
            .try_get::<Option<i64>, _>("updated_at")?
            .map(Timestamp::from_unix_seconds),
        version: row.try_get("version")?,
    })
}
