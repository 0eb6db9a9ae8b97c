//! Forward-only, versioned schema migrations. Each migration is written once in portable
//! SQL with a few placeholders that [`render`] fills in per engine; applied versions are
//! recorded in `magnum_schema_migrations`.

use sqlx::Row;

use crate::{Backend, Store, StoreError};

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    statements: &'static [&'static str],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub name: String,
}

/// From version 11 on, every statement can run again over what it made (`IF NOT EXISTS`):
/// MariaDB commits each DDL statement by itself, so a process stopped inside a migration
/// leaves part of it applied but not recorded, and the next start runs it again. The
/// migrations before were applied as they are written; their text stays.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "cluster templates, clusters and services",
        statements: &[
            "CREATE TABLE cluster_template (
            id {pk},
            uuid VARCHAR(36) NOT NULL,
            version BIGINT NOT NULL,
            name VARCHAR(255),
            coe VARCHAR(255) NOT NULL,
            image_id VARCHAR(255) NOT NULL,
            flavor_id VARCHAR(255),
            master_flavor_id VARCHAR(255),
            dns_nameserver VARCHAR(255),
            keypair_id VARCHAR(255),
            external_network_id VARCHAR(255),
            fixed_network VARCHAR(255),
            fixed_subnet VARCHAR(255),
            network_driver VARCHAR(255),
            volume_driver VARCHAR(255),
            apiserver_port BIGINT,
            docker_volume_size BIGINT,
            docker_storage_driver VARCHAR(255),
            cluster_distro VARCHAR(255),
            http_proxy VARCHAR(255),
            https_proxy VARCHAR(255),
            no_proxy VARCHAR(255),
            registry_enabled BIGINT NOT NULL,
            insecure_registry VARCHAR(255),
            labels {text} NOT NULL,
            tls_disabled BIGINT NOT NULL,
            public BIGINT NOT NULL,
            hidden BIGINT NOT NULL,
            server_type VARCHAR(255) NOT NULL,
            master_lb_enabled BIGINT NOT NULL,
            floating_ip_enabled BIGINT NOT NULL,
            tags VARCHAR(255),
            driver VARCHAR(255),
            project_id VARCHAR(255) NOT NULL,
            user_id VARCHAR(255) NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT,
            CONSTRAINT uniq_cluster_template_uuid UNIQUE (uuid)
        ){table_options}",
            "CREATE INDEX ix_cluster_template_project_id ON cluster_template (project_id)",
            "CREATE INDEX ix_cluster_template_name ON cluster_template (name)",
            "CREATE TABLE cluster (
            id {pk},
            uuid VARCHAR(36) NOT NULL,
            version BIGINT NOT NULL,
            name VARCHAR(255),
            project_id VARCHAR(255) NOT NULL,
            user_id VARCHAR(255) NOT NULL,
            cluster_template_id VARCHAR(36) NOT NULL,
            keypair VARCHAR(255),
            docker_volume_size BIGINT,
            labels {text} NOT NULL,
            master_flavor_id VARCHAR(255),
            flavor_id VARCHAR(255),
            create_timeout BIGINT,
            discovery_url VARCHAR(255),
            fixed_network VARCHAR(255),
            fixed_subnet VARCHAR(255),
            floating_ip_enabled BIGINT NOT NULL,
            master_lb_enabled BIGINT NOT NULL,
            status VARCHAR(32) NOT NULL,
            status_reason {text},
            health_status VARCHAR(32),
            health_status_reason {text},
            stack_id VARCHAR(255),
            api_address VARCHAR(255),
            coe_version VARCHAR(255),
            container_version VARCHAR(255),
            created_at BIGINT NOT NULL,
            updated_at BIGINT,
            CONSTRAINT uniq_cluster_uuid UNIQUE (uuid),
            CONSTRAINT fk_cluster_cluster_template FOREIGN KEY (cluster_template_id)
                REFERENCES cluster_template (uuid)
        ){table_options}",
            "CREATE INDEX ix_cluster_project_id ON cluster (project_id)",
            "CREATE INDEX ix_cluster_cluster_template_id ON cluster (cluster_template_id)",
            "CREATE TABLE magnum_service (
            id {pk},
            host VARCHAR(255) NOT NULL,
            \"binary\" VARCHAR(255) NOT NULL,
            disabled BIGINT NOT NULL,
            disabled_reason VARCHAR(255),
            forced_down BIGINT NOT NULL,
            report_count BIGINT NOT NULL,
            last_seen_up BIGINT,
            created_at BIGINT NOT NULL,
            updated_at BIGINT,
            CONSTRAINT uniq_magnum_service_host_binary UNIQUE (host, \"binary\")
        ){table_options}",
        ],
    },
    Migration {
        version: 2,
        name: "change generations for read caches",
        statements: &[
            "CREATE TABLE magnum_generation (
            name VARCHAR(64) NOT NULL PRIMARY KEY,
            value BIGINT NOT NULL
        ){table_options}",
            "INSERT INTO magnum_generation (name, value) VALUES ('cluster_template', 0)",
        ],
    },
    Migration {
        version: 3,
        name: "operations queue",
        statements: &[
            "CREATE TABLE operation (
            id {pk},
            uuid VARCHAR(36) NOT NULL,
            cluster_uuid VARCHAR(36) NOT NULL,
            kind VARCHAR(32) NOT NULL,
            payload {text} NOT NULL,
            state VARCHAR(16) NOT NULL,
            attempts BIGINT NOT NULL,
            lease_owner VARCHAR(255),
            lease_until BIGINT,
            error {text},
            created_at BIGINT NOT NULL,
            updated_at BIGINT,
            CONSTRAINT uniq_operation_uuid UNIQUE (uuid)
        ){table_options}",
            "CREATE INDEX ix_operation_state ON operation (state, lease_until)",
            "CREATE INDEX ix_operation_cluster_uuid ON operation (cluster_uuid)",
        ],
    },
    Migration {
        version: 4,
        name: "nodegroups",
        statements: &["CREATE TABLE nodegroup (
            id {pk},
            uuid VARCHAR(36) NOT NULL,
            version BIGINT NOT NULL,
            cluster_uuid VARCHAR(36) NOT NULL,
            project_id VARCHAR(255) NOT NULL,
            name VARCHAR(255) NOT NULL,
            docker_volume_size BIGINT,
            labels {text} NOT NULL,
            flavor_id VARCHAR(255),
            image_id VARCHAR(255),
            node_addresses {text} NOT NULL,
            node_count BIGINT NOT NULL,
            role VARCHAR(255) NOT NULL,
            min_node_count BIGINT NOT NULL,
            max_node_count BIGINT,
            is_default BIGINT NOT NULL,
            stack_id VARCHAR(255),
            status VARCHAR(32) NOT NULL,
            status_reason {text},
            coe_version VARCHAR(20),
            node_labels {text} NOT NULL,
            node_taints {text} NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT,
            CONSTRAINT uniq_nodegroup_uuid UNIQUE (uuid),
            CONSTRAINT uniq_nodegroup_cluster_name UNIQUE (cluster_uuid, name),
            CONSTRAINT fk_nodegroup_cluster FOREIGN KEY (cluster_uuid) REFERENCES cluster (uuid)
        ){table_options}"],
    },
    Migration {
        version: 5,
        name: "cluster totals and quotas",
        statements: &[
            "ALTER TABLE cluster ADD COLUMN node_count BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE cluster ADD COLUMN master_count BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE cluster ADD COLUMN node_addresses {text}",
            "ALTER TABLE cluster ADD COLUMN master_addresses {text}",
            "CREATE INDEX ix_cluster_status ON cluster (status)",
            "CREATE INDEX ix_nodegroup_cluster_uuid ON nodegroup (cluster_uuid)",
            "CREATE TABLE quota (
            id {pk},
            project_id VARCHAR(255) NOT NULL,
            resource VARCHAR(255) NOT NULL,
            hard_limit BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT,
            CONSTRAINT uniq_quota_project_resource UNIQUE (project_id, resource)
        ){table_options}",
        ],
    },
    Migration {
        version: 6,
        name: "change generation for clusters",
        statements: &["INSERT INTO magnum_generation (name, value) VALUES ('cluster', 0)"],
    },
    Migration {
        version: 7,
        name: "cluster certificate authorities",
        statements: &["CREATE TABLE cluster_certificate (
            id {pk},
            cluster_uuid VARCHAR(36) NOT NULL,
            kind VARCHAR(32) NOT NULL,
            cert_pem {text} NOT NULL,
            sealed_key {text},
            created_at BIGINT NOT NULL,
            CONSTRAINT uniq_cluster_certificate_kind UNIQUE (cluster_uuid, kind)
        ){table_options}"],
    },
    Migration {
        version: 8,
        name: "application credentials delegated to clusters",
        statements: &["CREATE TABLE cluster_credential (
            id {pk},
            cluster_uuid VARCHAR(36) NOT NULL,
            credential_id VARCHAR(64) NOT NULL,
            user_id VARCHAR(255) NOT NULL,
            sealed_secret {text},
            created_at BIGINT NOT NULL,
            revoke_after BIGINT,
            revoke_attempts BIGINT NOT NULL DEFAULT 0,
            CONSTRAINT uniq_cluster_credential UNIQUE (cluster_uuid, credential_id)
        ){table_options}"],
    },
    Migration {
        version: 9,
        name: "cluster events",
        statements: &[
            "CREATE TABLE cluster_event (
            id {pk},
            sequence BIGINT NOT NULL,
            uuid VARCHAR(36) NOT NULL,
            cluster_uuid VARCHAR(36) NOT NULL,
            project_id VARCHAR(255) NOT NULL,
            user_id VARCHAR(255) NOT NULL,
            created_at BIGINT NOT NULL,
            event_type VARCHAR(16) NOT NULL,
            reason VARCHAR(64) NOT NULL,
            message {text} NOT NULL,
            nodegroup VARCHAR(255),
            node VARCHAR(255),
            operation_uuid VARCHAR(36),
            request_id VARCHAR(255),
            cluster_name VARCHAR(255),
            cluster_status VARCHAR(32) NOT NULL,
            health_status VARCHAR(32),
            node_count BIGINT NOT NULL,
            master_count BIGINT NOT NULL,
            cluster_deleted_at BIGINT,
            CONSTRAINT uniq_cluster_event_sequence UNIQUE (sequence),
            CONSTRAINT uniq_cluster_event_uuid UNIQUE (uuid)
        ){table_options}",
            "CREATE INDEX ix_cluster_event_cluster ON cluster_event (cluster_uuid, sequence)",
            "CREATE INDEX ix_cluster_event_project ON cluster_event (project_id, sequence)",
            "CREATE INDEX ix_cluster_event_created ON cluster_event (created_at)",
            "CREATE INDEX ix_cluster_event_deleted ON cluster_event (cluster_deleted_at)",
        ],
    },
    Migration {
        version: 10,
        name: "cluster monitor leases",
        statements: &[
            "CREATE TABLE cluster_monitor (
            cluster_uuid VARCHAR(36) NOT NULL PRIMARY KEY,
            owner VARCHAR(255) NOT NULL,
            lease_until BIGINT NOT NULL
        ){table_options}",
            "CREATE INDEX ix_cluster_monitor_owner ON cluster_monitor (owner)",
        ],
    },
    Migration {
        version: 11,
        name: "how far retention pruned each cluster's events",
        statements: &[
            "CREATE TABLE IF NOT EXISTS cluster_event_pruned (
            cluster_uuid VARCHAR(36) NOT NULL PRIMARY KEY,
            project_id VARCHAR(255) NOT NULL,
            pruned_through BIGINT NOT NULL,
            pruned_at BIGINT NOT NULL
        ){table_options}",
            "CREATE INDEX IF NOT EXISTS ix_cluster_event_pruned_project ON cluster_event_pruned \
             (project_id, pruned_through)",
        ],
    },
    Migration {
        version: 12,
        name: "dashboard sessions ended by a logout",
        statements: &[
            "CREATE TABLE IF NOT EXISTS ended_session (
            login_digest VARCHAR(64) NOT NULL PRIMARY KEY,
            expires_at BIGINT NOT NULL,
            ended_at BIGINT NOT NULL
        ){table_options}",
            "CREATE INDEX IF NOT EXISTS ix_ended_session_ended ON ended_session (ended_at)",
            "CREATE INDEX IF NOT EXISTS ix_ended_session_expires ON ended_session (expires_at)",
        ],
    },
    Migration {
        version: 13,
        name: "finished operations found by when they ended",
        statements: &[
            "CREATE INDEX IF NOT EXISTS ix_operation_ended ON operation (state, updated_at)",
        ],
    },
];

fn render(statement: &str, backend: Backend) -> String {
    let (primary_key, text, table_options) = match backend {
        Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT", ""),
        Backend::Postgres => ("BIGSERIAL PRIMARY KEY", "TEXT", ""),
        Backend::MySql => (
            "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
            // A binary collation would make MariaDB report TEXT as BLOB; these columns are
            // never compared, so a case-insensitive one is harmless.
            "MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            // Binary collation: names and ids compare exactly, as on the other engines.
            " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ),
    };
    statement
        .replace("{pk}", primary_key)
        .replace("{text}", text)
        .replace("{table_options}", table_options)
}

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS magnum_schema_migrations (
    version BIGINT NOT NULL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    applied_at BIGINT NOT NULL
){table_options}";

impl Store {
    /// Versions already applied, oldest first.
    pub async fn applied_migrations(&self) -> Result<Vec<AppliedMigration>, StoreError> {
        sqlx::query(&render(CREATE_MIGRATIONS_TABLE, self.backend))
            .execute(&self.pool)
            .await?;
        let rows =
            sqlx::query("SELECT version, name FROM magnum_schema_migrations ORDER BY version")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(AppliedMigration {
                    version: row.try_get("version")?,
                    name: row.try_get("name")?,
                })
            })
            .collect()
    }

    /// Applies every migration not yet applied, in order; returns the ones it applied.
    /// Refuses to touch a schema newer than this binary.
    pub async fn migrate(&self) -> Result<Vec<AppliedMigration>, StoreError> {
        let applied = self.applied_migrations().await?;
        let known = MIGRATIONS.last().map_or(0, |migration| migration.version);
        if let Some(newest) = applied.last() {
            if newest.version > known {
                return Err(StoreError::SchemaTooNew {
                    found: newest.version,
                    known,
                });
            }
        }
        let mut newly_applied = Vec::new();
        for migration in MIGRATIONS {
            if applied.iter().any(|done| done.version == migration.version) {
                continue;
            }
            let mut transaction = self.pool.begin().await?;
            for statement in migration.statements {
                sqlx::query(&render(statement, self.backend))
                    .execute(&mut *transaction)
                    .await?;
            }
            let recorded = sqlx::query(&self.sql(
                "INSERT INTO magnum_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            ))
            .bind(migration.version)
            .bind(migration.name)
            .bind(magnum_domain::time::Timestamp::now().unix_seconds())
            .execute(&mut *transaction)
            .await;
            match recorded {
                Ok(_) => transaction.commit().await?,
                // Another process applied the same migration first.
                Err(error) if StoreError::is_unique_violation(&error) => {
                    transaction.rollback().await?;
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
            tracing::info!(
                migration.version = migration.version,
                migration.name = migration.name,
                "applied database migration"
            );
            newly_applied.push(AppliedMigration {
                version: migration.version,
                name: migration.name.to_owned(),
            });
        }
        Ok(newly_applied)
    }

    /// Whether every known migration has been applied.
    pub async fn schema_is_current(&self) -> Result<bool, StoreError> {
        let applied = self.applied_migrations().await?;
        Ok(MIGRATIONS
            .iter()
            .all(|migration| applied.iter().any(|done| done.version == migration.version)))
    }
}
