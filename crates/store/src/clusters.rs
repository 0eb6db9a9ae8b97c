//! Clusters and their nodegroups. A cluster is created together with its nodegroups and the
//! operation that builds it, in one transaction: the service never holds a cluster nobody
//! is going to work on.

use magnum_domain::cluster::{Cluster, ClusterStatus, HealthStatus, NodeGroup, Taint};
use magnum_domain::labels::Labels;
use magnum_domain::operation::Operation;
use magnum_domain::time::Timestamp;
use serde_json::{Map, Value};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};
use uuid::Uuid;

use crate::{bool_to_sql, text_column, Store, StoreError};

const CLUSTER_COLUMNS: &str = "id, uuid, version, name, project_id, user_id, \
    cluster_template_id, keypair, docker_volume_size, labels, master_flavor_id, flavor_id, \
    create_timeout, discovery_url, fixed_network, fixed_subnet, floating_ip_enabled, \
    master_lb_enabled, status, status_reason, health_status, health_status_reason, stack_id, \
    api_address, coe_version, container_version, created_at, updated_at";

const NODEGROUP_COLUMNS: &str = "id, uuid, version, cluster_uuid, project_id, name, \
    docker_volume_size, labels, flavor_id, image_id, node_addresses, node_count, role, \
    min_node_count, max_node_count, is_default, stack_id, status, status_reason, coe_version, \
    node_labels, node_taints, created_at, updated_at";

fn placeholders(columns: &str) -> String {
    vec!["?"; columns.split(',').count() - 1].join(", ")
}

fn after_id(columns: &str) -> &str {
    &columns["id, ".len()..]
}

impl Store {
    /// Stores a new cluster, its nodegroups and the operation that will build it, all or
    /// nothing. `NotFound` when its template no longer exists.
    pub async fn create_cluster(
        &self,
        cluster: &Cluster,
        nodegroups: &[NodeGroup],
        operation: &Operation,
    ) -> Result<Cluster, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let query = format!(
            "INSERT INTO cluster ({}) VALUES ({})",
            after_id(CLUSTER_COLUMNS),
            placeholders(CLUSTER_COLUMNS)
        );
        let sql = self.sql(&query);
        let stored = Cluster {
            version: 1,
            ..cluster.clone()
        };
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
        let query = format!(
            "INSERT INTO nodegroup ({}) VALUES ({})",
            after_id(NODEGROUP_COLUMNS),
            placeholders(NODEGROUP_COLUMNS)
        );
        let sql = self.sql(&query);
        for nodegroup in nodegroups {
            let stored_nodegroup = NodeGroup {
                version: 1,
                ..nodegroup.clone()
            };
            bind_nodegroup(sqlx::query(&sql), &stored_nodegroup)
                .execute(&mut *transaction)
                .await?;
        }
        self.insert_operation(&mut transaction, operation).await?;
        transaction.commit().await?;
        self.cluster_by_uuid(cluster.uuid)
            .await?
            .ok_or(StoreError::NotFound)
            .map(|found| Cluster {
                version: stored.version,
                ..found
            })
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

    /// How many clusters a project has (the quota counts them).
    pub async fn count_clusters(&self, project_id: &str) -> Result<i64, StoreError> {
        let sql = self.sql("SELECT COUNT(*) AS n FROM cluster WHERE project_id = ?");
        let row = sqlx::query(&sql)
            .bind(project_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
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
        let updated = sqlx::query(&sql)
            .bind(status.as_str())
            .bind(status_reason.map(str::to_owned))
            .bind(now.unix_seconds())
            .bind(uuid.to_string())
            .bind(expected_version)
            .execute(&self.pool)
            .await?;
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
}

fn bind_cluster<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    cluster: &Cluster,
) -> Query<'q, Any, AnyArguments<'q>> {
    query
        .bind(cluster.uuid.to_string())
        .bind(cluster.version)
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
        .bind(cluster.created_at.unix_seconds())
        .bind(cluster.updated_at.map(Timestamp::unix_seconds))
}

fn bind_nodegroup<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    nodegroup: &NodeGroup,
) -> Query<'q, Any, AnyArguments<'q>> {
    query
        .bind(nodegroup.uuid.to_string())
        .bind(nodegroup.version)
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
