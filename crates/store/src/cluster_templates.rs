use magnum_domain::cluster_template::{ClusterTemplate, Coe, ServerType};
use magnum_domain::labels::Labels;
use magnum_domain::time::Timestamp;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};
use uuid::Uuid;

use crate::pagination::{
    bind_all, int_value, marker_of, text_value, Bound, Keyset, Page, SortValue,
};
use crate::{bool_to_sql, text_column, Store, StoreError};

const COLUMNS: &str = "id, uuid, version, name, coe, image_id, flavor_id, master_flavor_id, \
    dns_nameserver, keypair_id, external_network_id, fixed_network, fixed_subnet, \
    network_driver, volume_driver, apiserver_port, docker_volume_size, docker_storage_driver, \
    cluster_distro, http_proxy, https_proxy, no_proxy, registry_enabled, insecure_registry, \
    labels, tls_disabled, public, hidden, server_type, master_lb_enabled, floating_ip_enabled, \
    tags, driver, project_id, user_id, created_at, updated_at";

/// Columns a list may be sorted by, with whether they hold integers.
pub const CLUSTER_TEMPLATE_SORT_KEYS: &[(&str, bool)] = &[
    ("id", true),
    ("uuid", false),
    ("name", false),
    ("coe", false),
    ("image_id", false),
    ("flavor_id", false),
    ("master_flavor_id", false),
    ("dns_nameserver", false),
    ("keypair_id", false),
    ("external_network_id", false),
    ("fixed_network", false),
    ("fixed_subnet", false),
    ("network_driver", false),
    ("volume_driver", false),
    ("apiserver_port", true),
    ("docker_volume_size", true),
    ("docker_storage_driver", false),
    ("cluster_distro", false),
    ("http_proxy", false),
    ("https_proxy", false),
    ("no_proxy", false),
    ("registry_enabled", true),
    ("insecure_registry", false),
    ("labels", false),
    ("tls_disabled", true),
    ("public", true),
    ("hidden", true),
    ("server_type", false),
    ("master_lb_enabled", true),
    ("floating_ip_enabled", true),
    ("tags", false),
    ("driver", false),
    ("project_id", false),
    ("user_id", false),
    ("created_at", true),
    ("updated_at", true),
];

/// Which templates a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateScope<'a> {
    /// Every template of every project (admins).
    All,
    /// The project's own templates and every public, non-hidden one.
    VisibleTo(&'a str),
    /// Only the project's own templates.
    OwnedBy(&'a str),
}

impl TemplateScope<'_> {
    fn condition(&self, binds: &mut Vec<Bound>) -> &'static str {
        match self {
            TemplateScope::All => "1 = 1",
            TemplateScope::VisibleTo(project_id) => {
                binds.push(Bound::Text((*project_id).to_owned()));
                "(project_id = ? OR (public = 1 AND hidden = 0))"
            }
            TemplateScope::OwnedBy(project_id) => {
                binds.push(Bound::Text((*project_id).to_owned()));
                "project_id = ?"
            }
        }
    }
}

/// The generation counter every template write increments.
const TEMPLATE_GENERATION: &str = "cluster_template";

/// What a cluster template list reads.
const TEMPLATE_KEYSET: Keyset = Keyset {
    table: "cluster_template",
    columns: COLUMNS,
    sort_keys: CLUSTER_TEMPLATE_SORT_KEYS,
};

impl Store {
    /// A number that changes whenever any cluster template changes, in any process. Read it
    /// before reading templates: data read after it is at least as new as the number says.
    pub async fn cluster_templates_generation(&self) -> Result<i64, StoreError> {
        self.generation(TEMPLATE_GENERATION).await
    }

    pub async fn insert_cluster_template(
        &self,
        template: &ClusterTemplate,
    ) -> Result<ClusterTemplate, StoreError> {
        let query = format!(
            "INSERT INTO cluster_template ({}) VALUES ({})",
            &COLUMNS["id, ".len()..],
            vec!["?"; 36].join(", ")
        );
        let sql = self.sql(&query);
        let stored = ClusterTemplate {
            version: 1,
            ..template.clone()
        };
        let mut transaction = self.begin_write().await?;
        let result = bind_template_columns(sqlx::query(&sql), &stored)
            .execute(&mut *transaction)
            .await;
        match result {
            Ok(_) => {
                let sql = self.sql("SELECT id FROM cluster_template WHERE uuid = ?");
                let row = sqlx::query(&sql)
                    .bind(stored.uuid.to_string())
                    .fetch_one(&mut *transaction)
                    .await?;
                self.bump_generation(&mut transaction, TEMPLATE_GENERATION)
                    .await?;
                transaction.commit().await?;
                Ok(ClusterTemplate {
                    id: row.try_get("id")?,
                    ..stored
                })
            }
            Err(error) if StoreError::is_unique_violation(&error) => {
                Err(StoreError::DuplicateUuid(template.uuid))
            }
            Err(error) => Err(error.into()),
        }
    }

    pub async fn cluster_template_by_uuid(
        &self,
        uuid: Uuid,
        scope: TemplateScope<'_>,
    ) -> Result<Option<ClusterTemplate>, StoreError> {
        let mut binds = vec![Bound::Text(uuid.to_string())];
        let condition = scope.condition(&mut binds);
        let query =
            format!("SELECT {COLUMNS} FROM cluster_template WHERE uuid = ? AND {condition}");
        let sql = self.sql(&query);
        let row = bind_all(sqlx::query(&sql), binds)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(template_from_row).transpose()
    }

    /// Templates with exactly this name, at most `limit` of them.
    pub async fn cluster_templates_by_name(
        &self,
        name: &str,
        scope: TemplateScope<'_>,
        limit: u32,
    ) -> Result<Vec<ClusterTemplate>, StoreError> {
        let mut binds = vec![Bound::Text(name.to_owned())];
        let condition = scope.condition(&mut binds);
        binds.push(Bound::Int(i64::from(limit)));
        let query = format!(
            "SELECT {COLUMNS} FROM cluster_template WHERE name = ? AND {condition} ORDER BY id LIMIT ?"
        );
        let sql = self.sql(&query);
        let rows = bind_all(sqlx::query(&sql), binds)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(template_from_row).collect()
    }

    /// One page of templates in `scope`, ordered by the page's key then by id.
    pub async fn list_cluster_templates(
        &self,
        scope: TemplateScope<'_>,
        page: &Page,
    ) -> Result<Vec<ClusterTemplate>, StoreError> {
        let mut binds = Vec::new();
        let conditions = vec![scope.condition(&mut binds).to_owned()];
        let marker = marker_of(
            page,
            |uuid| self.cluster_template_by_uuid(uuid, scope),
            sort_value,
            |template| template.id,
        )
        .await?;
        self.keyset_page(
            &TEMPLATE_KEYSET,
            &page.order(),
            conditions,
            binds,
            marker,
            template_from_row,
        )
        .await
    }

    /// Whether any cluster is built from the template.
    pub async fn cluster_template_in_use(&self, uuid: Uuid) -> Result<bool, StoreError> {
        let sql = self.sql("SELECT COUNT(*) AS n FROM cluster WHERE cluster_template_id = ?");
        let row = sqlx::query(&sql)
            .bind(uuid.to_string())
            .fetch_one(&self.pool)
            .await?;
        let count: i64 = row.try_get("n")?;
        Ok(count > 0)
    }

    /// Stores `updated` if the row still has `updated.version`. With `only_if_unused`, the
    /// update is refused (`InUse`) when a cluster references the template, in the same
    /// statement so that no cluster can slip in between the check and the write.
    pub async fn update_cluster_template(
        &self,
        updated: &ClusterTemplate,
        only_if_unused: bool,
    ) -> Result<ClusterTemplate, StoreError> {
        let assignments: Vec<String> = COLUMNS["id, uuid, ".len()..]
            .split(", ")
            .map(|column| format!("{column} = ?"))
            .collect();
        let unused = if only_if_unused {
            " AND NOT EXISTS (SELECT 1 FROM cluster WHERE cluster.cluster_template_id = ?)"
        } else {
            ""
        };
        let query = format!(
            "UPDATE cluster_template SET {} WHERE id = ? AND version = ?{unused}",
            assignments.join(", ")
        );
        let sql = self.sql(&query);
        let stored = ClusterTemplate {
            version: updated.version + 1,
            ..updated.clone()
        };
        let mut query = bind_template_columns_after_uuid(sqlx::query(&sql), &stored)
            .bind(updated.id)
            .bind(updated.version);
        if only_if_unused {
            query = query.bind(updated.uuid.to_string());
        }
        let mut transaction = self.begin_write().await?;
        let result = query.execute(&mut *transaction).await?;
        if result.rows_affected() == 1 {
            self.bump_generation(&mut transaction, TEMPLATE_GENERATION)
                .await?;
            transaction.commit().await?;
            return Ok(stored);
        }
        transaction.rollback().await?;
        match self
            .cluster_template_by_uuid(updated.uuid, TemplateScope::All)
            .await?
        {
            None => Err(StoreError::NotFound),
            Some(current) if current.version != updated.version => Err(StoreError::Conflict),
            Some(_) => Err(StoreError::InUse),
        }
    }

    /// Deletes the template unless a cluster references it.
    pub async fn delete_cluster_template(&self, uuid: Uuid) -> Result<(), StoreError> {
        let sql = self.sql(
            "DELETE FROM cluster_template WHERE uuid = ? AND NOT EXISTS \
             (SELECT 1 FROM cluster WHERE cluster.cluster_template_id = ?)",
        );
        let mut transaction = self.begin_write().await?;
        let result = sqlx::query(&sql)
            .bind(uuid.to_string())
            .bind(uuid.to_string())
            .execute(&mut *transaction)
            .await;
        match result {
            Ok(done) if done.rows_affected() == 1 => {
                self.bump_generation(&mut transaction, TEMPLATE_GENERATION)
                    .await?;
                transaction.commit().await?;
                Ok(())
            }
            Ok(_) => {
                transaction.rollback().await?;
                if self
                    .cluster_template_by_uuid(uuid, TemplateScope::All)
                    .await?
                    .is_some()
                {
                    Err(StoreError::InUse)
                } else {
                    Err(StoreError::NotFound)
                }
            }
            // The foreign key catches a cluster inserted concurrently.
            Err(error) if StoreError::is_foreign_key_violation(&error) => Err(StoreError::InUse),
            Err(error) => Err(error.into()),
        }
    }
}

fn sort_value(template: &ClusterTemplate, key: &str) -> SortValue {
    let (text, int) = (text_value, int_value);
    match key {
        "id" => SortValue::Int(template.id),
        "uuid" => SortValue::Text(template.uuid.to_string()),
        "name" => text(&template.name),
        "coe" => SortValue::Text(template.coe.as_str().to_owned()),
        "image_id" => SortValue::Text(template.image_id.clone()),
        "flavor_id" => text(&template.flavor_id),
        "master_flavor_id" => text(&template.master_flavor_id),
        "dns_nameserver" => text(&template.dns_nameserver),
        "keypair_id" => text(&template.keypair_id),
        "external_network_id" => text(&template.external_network_id),
        "fixed_network" => text(&template.fixed_network),
        "fixed_subnet" => text(&template.fixed_subnet),
        "network_driver" => text(&template.network_driver),
        "volume_driver" => text(&template.volume_driver),
        "apiserver_port" => int(template.apiserver_port),
        "docker_volume_size" => int(template.docker_volume_size),
        "docker_storage_driver" => text(&template.docker_storage_driver),
        "cluster_distro" => text(&template.cluster_distro),
        "http_proxy" => text(&template.http_proxy),
        "https_proxy" => text(&template.https_proxy),
        "no_proxy" => text(&template.no_proxy),
        "registry_enabled" => SortValue::Int(bool_to_sql(template.registry_enabled)),
        "insecure_registry" => text(&template.insecure_registry),
        "labels" => SortValue::Text(template.labels.to_stored_json()),
        "tls_disabled" => SortValue::Int(bool_to_sql(template.tls_disabled)),
        "public" => SortValue::Int(bool_to_sql(template.public)),
        "hidden" => SortValue::Int(bool_to_sql(template.hidden)),
        "server_type" => SortValue::Text(template.server_type.as_str().to_owned()),
        "master_lb_enabled" => SortValue::Int(bool_to_sql(template.master_lb_enabled)),
        "floating_ip_enabled" => SortValue::Int(bool_to_sql(template.floating_ip_enabled)),
        "tags" => text(&template.tags),
        "driver" => text(&template.driver),
        "project_id" => SortValue::Text(template.project_id.clone()),
        "user_id" => SortValue::Text(template.user_id.clone()),
        "created_at" => SortValue::Int(template.created_at.unix_seconds()),
        "updated_at" => int(template.updated_at.map(Timestamp::unix_seconds)),
        _ => SortValue::Null,
    }
}

fn bind_template_columns<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    template: &ClusterTemplate,
) -> Query<'q, Any, AnyArguments<'q>> {
    bind_template_columns_after_uuid(query.bind(template.uuid.to_string()), template)
}

/// Binds every column after `id, uuid`, in [`COLUMNS`] order.
fn bind_template_columns_after_uuid<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    template: &ClusterTemplate,
) -> Query<'q, Any, AnyArguments<'q>> {
    query
        .bind(template.version)
        .bind(template.name.clone())
        .bind(template.coe.as_str())
        .bind(template.image_id.clone())
        .bind(template.flavor_id.clone())
        .bind(template.master_flavor_id.clone())
        .bind(template.dns_nameserver.clone())
        .bind(template.keypair_id.clone())
        .bind(template.external_network_id.clone())
        .bind(template.fixed_network.clone())
        .bind(template.fixed_subnet.clone())
        .bind(template.network_driver.clone())
        .bind(template.volume_driver.clone())
        .bind(template.apiserver_port)
        .bind(template.docker_volume_size)
        .bind(template.docker_storage_driver.clone())
        .bind(template.cluster_distro.clone())
        .bind(template.http_proxy.clone())
        .bind(template.https_proxy.clone())
        .bind(template.no_proxy.clone())
        .bind(bool_to_sql(template.registry_enabled))
        .bind(template.insecure_registry.clone())
        .bind(template.labels.to_stored_json())
        .bind(bool_to_sql(template.tls_disabled))
        .bind(bool_to_sql(template.public))
        .bind(bool_to_sql(template.hidden))
        .bind(template.server_type.as_str())
        .bind(bool_to_sql(template.master_lb_enabled))
        .bind(bool_to_sql(template.floating_ip_enabled))
        .bind(template.tags.clone())
        .bind(template.driver.clone())
        .bind(template.project_id.clone())
        .bind(template.user_id.clone())
        .bind(template.created_at.unix_seconds())
        .bind(template.updated_at.map(Timestamp::unix_seconds))
}

fn template_from_row(row: &AnyRow) -> Result<ClusterTemplate, StoreError> {
    let uuid_text: String = row.try_get("uuid")?;
    let uuid = Uuid::parse_str(&uuid_text)
        .map_err(|_| StoreError::Corrupt(format!("cluster template uuid {uuid_text:?}")))?;
    let coe_text: String = row.try_get("coe")?;
    let coe: Coe = coe_text
        .parse()
        .map_err(|()| StoreError::Corrupt(format!("cluster template {uuid} coe {coe_text:?}")))?;
    let server_type_text: String = row.try_get("server_type")?;
    let server_type: ServerType = server_type_text.parse().map_err(|()| {
        StoreError::Corrupt(format!(
            "cluster template {uuid} server_type {server_type_text:?}"
        ))
    })?;
    let labels = text_column(row, "labels")?.unwrap_or_default();
    let flag =
        |column: &str| -> Result<bool, StoreError> { Ok(row.try_get::<i64, _>(column)? != 0) };
    Ok(ClusterTemplate {
        id: row.try_get("id")?,
        uuid,
        name: row.try_get("name")?,
        coe,
        image_id: row.try_get("image_id")?,
        flavor_id: row.try_get("flavor_id")?,
        master_flavor_id: row.try_get("master_flavor_id")?,
        dns_nameserver: row.try_get("dns_nameserver")?,
        keypair_id: row.try_get("keypair_id")?,
        external_network_id: row.try_get("external_network_id")?,
        fixed_network: row.try_get("fixed_network")?,
        fixed_subnet: row.try_get("fixed_subnet")?,
        network_driver: row.try_get("network_driver")?,
        volume_driver: row.try_get("volume_driver")?,
        apiserver_port: row.try_get("apiserver_port")?,
        docker_volume_size: row.try_get("docker_volume_size")?,
        docker_storage_driver: row.try_get("docker_storage_driver")?,
        cluster_distro: row.try_get("cluster_distro")?,
        http_proxy: row.try_get("http_proxy")?,
        https_proxy: row.try_get("https_proxy")?,
        no_proxy: row.try_get("no_proxy")?,
        registry_enabled: flag("registry_enabled")?,
        insecure_registry: row.try_get("insecure_registry")?,
        labels: Labels::from_stored_json(&labels),
        tls_disabled: flag("tls_disabled")?,
        public: flag("public")?,
        hidden: flag("hidden")?,
        server_type,
        master_lb_enabled: flag("master_lb_enabled")?,
        floating_ip_enabled: flag("floating_ip_enabled")?,
        tags: row.try_get("tags")?,
        driver: row.try_get("driver")?,
        project_id: row.try_get("project_id")?,
        user_id: row.try_get("user_id")?,
        created_at: Timestamp::from_unix_seconds(row.try_get("created_at")?),
        updated_at: row
            .try_get::<Option<i64>, _>("updated_at")?
            .map(Timestamp::from_unix_seconds),
        version: row.try_get("version")?,
    })
}
