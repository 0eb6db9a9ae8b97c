//! Configuration: built-in defaults, then a TOML file, then `MAGNUM_<SECTION>__<KEY>`
//! environment variables, then command-line flags. Unknown keys and bad values stop start-up
//! with a message naming them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use magnum_driver_local::Catalog;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub api: ApiConfig,
    pub cluster_template: ClusterTemplateConfig,
    pub conductor: ConductorConfig,
    pub events: EventsConfig,
    pub quotas: QuotasConfig,
    pub certificates: CertificatesConfig,
    pub notifications: NotificationsConfig,
    pub drivers: DriversConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub dashboard: DashboardConfig,
}

/// `[dashboard]`: the web dashboard at `/dashboard/` of the API's own address.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    pub enabled: bool,
    /// With Keystone: the key (a 0600 file of 64 hexadecimal digits) that seals login
    /// sessions into their cookies. Every API process serving the same users needs the
    /// same key; unset, `<state_dir>/dashboard-session-key` is created.
    pub session_key_file: Option<PathBuf>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_key_file: None,
        }
    }
}

/// `[metrics]`: who may read `GET /metrics`, and where a process without the API serves it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A second address serving only `GET /metrics` (HOST:PORT), e.g. for `magnumd
    /// conductor`, which has no API; none by default.
    pub listen: Option<String>,
    /// Networks (CIDR, or single addresses) whose clients read `/metrics` without
    /// credentials, besides loopback, which always may.
    pub allowed_networks: Vec<String>,
    /// Also serve clients elsewhere that send an admin's Keystone token (`X-Auth-Token`);
    /// needs `auth.strategy = "keystone"`.
    pub admin_token: bool,
}

/// `[events]`: cluster events, how long they are kept and how they are streamed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events kept per cluster (the oldest go first), 10 to 100,000.
    pub max_per_cluster: i64,
    /// Seconds an event is kept at most (1 hour to a year).
    pub max_age: i64,
    /// Seconds a deleted cluster's events stay readable (0 to a year).
    pub keep_after_delete: i64,
    /// Streams one API process serves at once (1 to 100,000).
    pub max_streams: usize,
    /// Streams one project holds at once in one API process (1 to max_streams).
    pub max_streams_per_project: usize,
    /// Milliseconds between an API process's looks for new events (50 to 5,000).
    pub poll_interval_ms: u64,
    /// Seconds a stream lasts before the server ends it (60 to 86,400); clients reconnect.
    pub max_stream_duration: u64,
    /// Seconds between keep-alive comments on an idle stream (1 to 300).
    pub keepalive: u64,
    /// Seconds between checks of a stream's token (1 to 3,600).
    pub recheck_token: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            max_per_cluster: 1_000,
            max_age: 30 * 86_400,
            keep_after_delete: 7 * 86_400,
            max_streams: 512,
            max_streams_per_project: 256,
            poll_interval_ms: 200,
            max_stream_duration: 3_600,
            keepalive: 15,
            recheck_token: 30,
        }
    }
}

impl EventsConfig {
    fn check(&self) -> anyhow::Result<()> {
        let year = 366 * 86_400;
        if !(10..=100_000).contains(&self.max_per_cluster) {
            bail!("events.max_per_cluster must be between 10 and 100000");
        }
        if !(3_600..=year).contains(&self.max_age) {
            bail!("events.max_age must be between 3600 and {year} seconds");
        }
        if !(0..=year).contains(&self.keep_after_delete) {
            bail!("events.keep_after_delete must be between 0 and {year} seconds");
        }
        if !(1..=100_000).contains(&self.max_streams)
            || !(1..=self.max_streams).contains(&self.max_streams_per_project)
        {
            bail!("events.max_streams must be between 1 and 100000, and events.max_streams_per_project between 1 and events.max_streams");
        }
        if !(50..=5_000).contains(&self.poll_interval_ms) {
            bail!("events.poll_interval_ms must be between 50 and 5000");
        }
        if !(60..=86_400).contains(&self.max_stream_duration)
            || !(1..=300).contains(&self.keepalive)
            || !(1..=3_600).contains(&self.recheck_token)
        {
            bail!("events.max_stream_duration must be between 60 and 86400 seconds, events.keepalive between 1 and 300, events.recheck_token between 1 and 3600");
        }
        Ok(())
    }

    pub fn retention(&self) -> magnum_store::EventRetention {
        magnum_store::EventRetention {
            max_per_cluster: self.max_per_cluster,
            max_age: self.max_age,
            keep_after_delete: self.keep_after_delete,
        }
    }

    pub fn stream_settings(&self) -> magnum_api::EventStreamSettings {
        magnum_api::EventStreamSettings {
            max_streams: self.max_streams,
            max_streams_per_project: self.max_streams_per_project,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            max_duration: Duration::from_secs(self.max_stream_duration),
            keepalive: Duration::from_secs(self.keepalive),
            recheck_token: Duration::from_secs(self.recheck_token),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    /// Clusters a project may have when no quota row says otherwise.
    pub max_clusters_per_project: i64,
}

/// `[auth] strategy`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthStrategy {
    /// Identity from request headers or the `[auth.noauth]` defaults.
    Noauth,
    /// `X-Auth-Token` validated by the Keystone of `[auth.keystone]`.
    Keystone,
}

/// `[certificates] cert_manager_type`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum CertManagerType {
    /// CA keys sealed in the database.
    #[serde(rename = "x509keypair")]
    X509Keypair,
    /// CA keys as 0600 files in the state directory.
    #[serde(rename = "local")]
    Local,
}

/// `[notifications] sink`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NotificationSink {
    /// JSON lines in a file.
    File,
    /// oslo.messaging notifications on RabbitMQ.
    Rabbitmq,
    None,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CertificatesConfig {
    /// `x509keypair` (keys sealed in the database) or `local` (0600 files in the state
    /// directory).
    pub cert_manager_type: CertManagerType,
    /// The 32-byte key (64 hex digits) that seals CA keys, in a file of mode 0600; default:
    /// `certificate-key` in the state directory, created at first start.
    pub key_file: Option<PathBuf>,
    /// Days a certificate signed through `POST /v1/certificates` is valid.
    pub term_of_validity: i64,
}

impl Default for CertificatesConfig {
    fn default() -> Self {
        Self {
            cert_manager_type: CertManagerType::X509Keypair,
            key_file: None,
            term_of_validity: 1825,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// `file` (JSON lines), `rabbitmq` (oslo.messaging notifications), `none`.
    pub sink: NotificationSink,
    /// Where the `file` sink writes; default: notifications.jsonl in the state directory.
    pub path: Option<PathBuf>,
    /// The `rabbitmq` sink's broker: amqp://USER:PASSWORD@HOST:PORT/VHOST.
    pub transport_url: String,
    /// The topic exchange (oslo.messaging's control_exchange; upstream Magnum: "magnum").
    pub exchange: String,
    /// Routing keys are `<topic>.info` and `<topic>.error`.
    pub topic: String,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self {
            max_clusters_per_project: 20,
        }
    }
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            sink: NotificationSink::File,
            path: None,
            transport_url: "amqp://guest:guest@127.0.0.1:5672/".to_owned(),
            exchange: "magnum".to_owned(),
            topic: "notifications".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the API listens on.
    pub listen: String,
    /// Where magnumd keeps its state (the SQLite database by default).
    pub state_dir: Option<PathBuf>,
    /// Serve `noauth` on a non-loopback address anyway.
    pub allow_insecure_noauth: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH`, `postgres://…` or `mysql://…`; default: SQLite in the state directory.
    pub url: Option<String>,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `noauth` (identity from request headers or the defaults below) or `keystone`
    /// (`X-Auth-Token` validated by the Keystone of `[auth.keystone]`).
    pub strategy: AuthStrategy,
    /// An oslo.policy override file (YAML or JSON: rule name → check string).
    pub policy_file: Option<PathBuf>,
    pub noauth: NoAuthConfig,
    pub keystone: KeystoneAuthConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeystoneAuthConfig {
    /// Keystone's identity v3 endpoint, as magnumd reaches it: `http://keystone:5000/v3`.
    pub auth_url: String,
    /// What 401 answers tell clients in `WWW-Authenticate: Keystone uri="…"`; default: the
    /// auth_url without its `/v3`.
    pub www_authenticate_uri: Option<String>,
    /// The service's own Keystone credentials, a TOML file of mode 0600: `username`,
    /// `password`, `project_name` (and `user_domain_name`, `project_domain_name`, default
    /// "Default"), or `application_credential_id` and `application_credential_secret`.
    pub credentials_file: Option<PathBuf>,
    /// Seconds a validated token is trusted before Keystone is asked again (never past
    /// the token's expiry).
    pub cache_seconds: u64,
    pub max_cached_tokens: usize,
    /// Seconds to wait for Keystone before answering 503.
    pub timeout_seconds: u64,
    /// PEM certificates to trust for an https auth_url, besides the system's.
    pub cafile: Option<PathBuf>,
}

impl Default for KeystoneAuthConfig {
    fn default() -> Self {
        Self {
            auth_url: String::new(),
            www_authenticate_uri: None,
            credentials_file: None,
            cache_seconds: 300,
            max_cached_tokens: 10_000,
            timeout_seconds: 10,
            cafile: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NoAuthConfig {
    pub project_id: String,
    pub user_id: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub max_limit: u32,
    /// Seconds without a heartbeat after which a conductor is reported `down`.
    pub service_down_time: i64,
    /// MiB of encoded read responses each API process keeps (0: no cache).
    pub response_cache_mib: usize,
    /// Path the API is served under behind a proxy that passes it on, e.g. "/container-infra".
    pub path_prefix: String,
    /// Honour `X-Forwarded-Proto/-Host/-Prefix` (set only behind a proxy that sets them).
    pub enable_proxy_headers_parsing: bool,
    /// Client connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are closed at once.
    pub max_connections_per_client: usize,
    /// Host names (besides IP addresses and localhost) a noauth API answers for.
    pub noauth_allowed_hosts: Vec<String>,
    /// Seconds a client has to send a request's headers, and that an idle kept-alive
    /// connection stays open.
    pub header_timeout: u64,
    /// Seconds a client has to send a request's body.
    pub body_timeout: u64,
    /// Bytes of request line and headers a request may have (431 beyond).
    pub max_header_bytes: usize,
    /// Seconds requests in flight get to finish when magnumd stops.
    pub shutdown_grace: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTemplateConfig {
    pub kubernetes_allowed_network_drivers: Vec<String>,
    pub kubernetes_default_network_driver: String,
    pub swarm_mode_allowed_network_drivers: Vec<String>,
    pub swarm_mode_default_network_driver: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConductorConfig {
    /// The name this conductor reports in `mservices`; default: the host name.
    pub host: Option<String>,
    pub heartbeat_interval: u64,
    /// Seconds a claim on an operation lasts without renewal: how soon the work of a
    /// conductor that died is taken over.
    pub lease: u64,
    /// Milliseconds between looks at the operations queue when nothing wakes the conductor.
    pub poll_interval_ms: u64,
    pub max_concurrent_operations: usize,
    /// Claims after which an operation whose conductor keeps dying is failed.
    pub max_attempts: i64,
    /// Seconds an update or delete may take before it is failed.
    pub operation_timeout: u64,
    /// Seconds a cluster's replaced application credential stays valid after its successor
    /// was put in place (0 to 604,800), for whatever in the workload cluster read the old one
    /// at its start (the cloud provider, Cinder CSI) to be restarted.
    pub replaced_credential_grace: u64,
    /// Seconds a finished (succeeded or failed) operation is kept before the conductors drop
    /// it (a day to a year; more than the autoscaler's longest cool-down, which reads them).
    pub keep_finished_operations: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DriversConfig {
    pub enabled: Vec<String>,
    pub local: Catalog,
    pub capi: magnum_driver_capi::config::CapiConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `magnum_api=debug,info`, …
    pub level: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9511".to_owned(),
            state_dir: None,
            allow_insecure_noauth: false,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            strategy: AuthStrategy::Noauth,
            policy_file: None,
            noauth: NoAuthConfig::default(),
            keystone: KeystoneAuthConfig::default(),
        }
    }
}

impl Default for NoAuthConfig {
    fn default() -> Self {
        Self {
            project_id: "default".to_owned(),
            user_id: "admin".to_owned(),
            roles: vec!["admin".to_owned(), "member".to_owned(), "reader".to_owned()],
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_limit: 1000,
            service_down_time: 180,
            response_cache_mib: 64,
            path_prefix: String::new(),
            enable_proxy_headers_parsing: false,
            max_connections: 1024,
            max_connections_per_client: 128,
            noauth_allowed_hosts: Vec::new(),
            header_timeout: 30,
            body_timeout: 30,
            max_header_bytes: 64 * 1024,
            shutdown_grace: 10,
        }
    }
}

impl Default for ClusterTemplateConfig {
    fn default() -> Self {
        Self {
            kubernetes_allowed_network_drivers: vec!["flannel".to_owned(), "calico".to_owned()],
            kubernetes_default_network_driver: "flannel".to_owned(),
            swarm_mode_allowed_network_drivers: vec!["all".to_owned()],
            swarm_mode_default_network_driver: "docker".to_owned(),
        }
    }
}

impl Default for ConductorConfig {
    fn default() -> Self {
        Self {
            host: None,
            heartbeat_interval: 10,
            lease: 10,
            poll_interval_ms: 500,
            max_concurrent_operations: 16,
            max_attempts: 5,
            operation_timeout: 3600,
            replaced_credential_grace: 86_400,
            keep_finished_operations: 30 * 86_400,
        }
    }
}

impl Default for DriversConfig {
    fn default() -> Self {
        Self {
            enabled: vec!["local".to_owned()],
            local: Catalog::default(),
            capi: Default::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
        }
    }
}

const ENV_PREFIX: &str = "MAGNUM_";

/// Overrides given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub allow_insecure_noauth: bool,
}

impl Config {
    /// Loads the layers in order: defaults, `file`, environment, `overrides`.
    pub fn load(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> anyhow::Result<Self> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read configuration file {}", path.display())
                })?;
                text.parse::<toml::Table>().with_context(|| {
                    format!("configuration file {} is not valid TOML", path.display())
                })?
            }
            None => toml::Table::new(),
        };
        let mut from_environment: Vec<(String, String)> = environment
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name.contains("__"))
            .collect();
        from_environment.sort();
        for (name, value) in from_environment {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            if path.iter().any(String::is_empty) {
                bail!("environment variable {name}: expected MAGNUM_<SECTION>__<KEY>");
            }
            insert_path(&mut table, &path, environment_value(&value))
                .with_context(|| format!("environment variable {name}"))?;
        }
        let merged = toml::to_string(&table).context("configuration")?;
        let mut config: Config = toml::from_str(&merged).map_err(|error| {
            anyhow::anyhow!("invalid configuration (file and MAGNUM_* environment): {error}")
        })?;
        if let Some(listen) = &overrides.listen {
            config.server.listen = listen.clone();
        }
        if let Some(state_dir) = &overrides.state_dir {
            config.server.state_dir = Some(state_dir.clone());
        }
        if let Some(url) = &overrides.database_url {
            config.database.url = Some(url.clone());
        }
        if overrides.allow_insecure_noauth {
            config.server.allow_insecure_noauth = true;
        }
        config.check()?;
        Ok(config)
    }

    /// Checks values the types alone cannot.
    pub fn check(&self) -> anyhow::Result<()> {
        self.listen_address()?;
        if self.auth.strategy == AuthStrategy::Keystone {
            self.keystone_settings()?;
        }
        let prefix = &self.api.path_prefix;
        if !prefix.is_empty() && (!prefix.starts_with('/') || prefix.ends_with('/')) {
            bail!("api.path_prefix = {prefix:?} must start with / and not end with one, like \"/container-infra\"");
        }
        if self.api.max_limit == 0 {
            bail!("api.max_limit must be at least 1");
        }
        if !(1..=65_536).contains(&self.api.max_connections) {
            bail!("api.max_connections must be between 1 and 65536");
        }
        if self.api.max_connections_per_client == 0 {
            bail!("api.max_connections_per_client must be at least 1");
        }
        for (key, seconds) in [
            ("api.header_timeout", self.api.header_timeout),
            ("api.body_timeout", self.api.body_timeout),
        ] {
            if !(1..=3600).contains(&seconds) {
                bail!("{key} must be between 1 and 3600 seconds");
            }
        }
        if self.api.shutdown_grace > 3600 {
            bail!("api.shutdown_grace must be at most 3600 seconds");
        }
        if !(8192..=1024 * 1024).contains(&self.api.max_header_bytes) {
            bail!("api.max_header_bytes must be between 8192 and 1048576");
        }
        if self.api.service_down_time <= 0 {
            bail!("api.service_down_time must be a positive number of seconds");
        }
        if self.conductor.heartbeat_interval == 0 {
            bail!("conductor.heartbeat_interval must be at least 1 second");
        }
        if self.auth.policy_file.is_some() {
            self.policy()?;
        }
        if self.conductor.lease < 2 {
            bail!("conductor.lease must be at least 2 seconds");
        }
        if self.conductor.poll_interval_ms == 0 || self.conductor.max_concurrent_operations == 0 {
            bail!("conductor.poll_interval_ms and conductor.max_concurrent_operations must be at least 1");
        }
        if self.conductor.max_attempts < 1 || self.conductor.operation_timeout == 0 {
            bail!("conductor.max_attempts and conductor.operation_timeout must be at least 1");
        }
        self.events.check()?;
        if self.events.max_streams >= self.api.max_connections {
            bail!(
                "events.max_streams ({}) must stay below api.max_connections ({}): streams hold connections",
                self.events.max_streams,
                self.api.max_connections
            );
        }
        if !(86_400..=31_536_000).contains(&self.conductor.keep_finished_operations) {
            bail!("conductor.keep_finished_operations must be between 86400 (a day) and 31536000 (a year) seconds");
        }
        if self.conductor.replaced_credential_grace > 604_800 {
            bail!("conductor.replaced_credential_grace is at most 604800 seconds (a week)");
        }
        if self.certificates.term_of_validity < 1 {
            bail!("certificates.term_of_validity must be at least 1 day");
        }
        if self.quotas.max_clusters_per_project < 0 {
            bail!("quotas.max_clusters_per_project cannot be negative");
        }
        if self.notifications.sink == NotificationSink::Rabbitmq {
            magnum_conductor::amqp::AmqpAddress::parse(&self.notifications.transport_url)
                .map_err(|error| anyhow::anyhow!("notifications.transport_url: {error}"))?;
        }
        self.metrics_access()?;
        self.metrics_listen_address()?;
        if self.database.max_connections == 0 {
            bail!("database.max_connections must be at least 1");
        }
        if let Some(url) = &self.database.url {
            magnum_store::Backend::from_url(url)
                .map_err(|error| anyhow::anyhow!("database.url: {error}"))?;
        }
        for driver in &self.drivers.enabled {
            if driver == magnum_driver_capi::driver::DRIVER_NAME {
                self.capi_settings()?;
            } else if driver != magnum_driver_local::DRIVER_NAME {
                bail!("drivers.enabled: unknown driver {driver:?}; available: \"local\", \"capi\"");
            }
        }
        self.drivers
            .local
            .autoscaler
            .check()
            .map_err(anyhow::Error::msg)?;
        let rules = self.template_rules();
        for (coe, settings) in [
            (
                magnum_domain::cluster_template::Coe::Kubernetes,
                &rules.kubernetes,
            ),
            (
                magnum_domain::cluster_template::Coe::SwarmMode,
                &rules.swarm_mode,
            ),
        ] {
            rules
                .resolve_network_driver(coe, Some(&settings.default))
                .map_err(|error| {
                    anyhow::anyhow!("cluster_template default network driver for {coe}: {error}")
                })?;
        }
        Ok(())
    }

    /// Who may read `/metrics`, as `[metrics]` says.
    pub fn metrics_access(&self) -> anyhow::Result<magnum_api::MetricsAccess> {
        let networks = self
            .metrics
            .allowed_networks
            .iter()
            .map(|network| magnum_api::Network::parse(network))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| anyhow::anyhow!("metrics.allowed_networks: {error}"))?;
        if self.metrics.admin_token && self.auth.strategy != AuthStrategy::Keystone {
            bail!("metrics.admin_token needs auth.strategy = \"keystone\": without Keystone no token proves anything");
        }
        Ok(magnum_api::MetricsAccess {
            networks,
            admin_tokens: self.metrics.admin_token,
        })
    }

    /// `metrics.listen`, when set.
    pub fn metrics_listen_address(&self) -> anyhow::Result<Option<SocketAddr>> {
        let Some(listen) = &self.metrics.listen else {
            return Ok(None);
        };
        listen.parse().map(Some).map_err(|_| {
            anyhow::anyhow!("metrics.listen = {listen:?} is not HOST:PORT with an IP address host")
        })
    }

    pub fn listen_address(&self) -> anyhow::Result<SocketAddr> {
        self.server.listen.parse().map_err(|_| {
            anyhow::anyhow!(
                "server.listen = {:?} is not HOST:PORT with an IP address host",
                self.server.listen
            )
        })
    }

    pub fn state_dir(&self) -> PathBuf {
        if let Some(directory) = &self.server.state_dir {
            return directory.clone();
        }
        // /proc/self belongs to the process's effective user.
        let is_root = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
        };
        if is_root {
            PathBuf::from("/var/lib/magnum-rs")
        } else {
            let home = std::env::var("HOME").unwrap_or_else(|_| ".".to_owned());
            PathBuf::from(home).join(".local/state/magnum-rs")
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                self.state_dir().join("magnum.sqlite").display()
            ),
        }
    }

    pub fn template_rules(&self) -> magnum_domain::cluster_template::TemplateRules {
        use magnum_domain::cluster_template::{NetworkDriverSettings, TemplateRules};
        TemplateRules {
            kubernetes: NetworkDriverSettings {
                allowed: self
                    .cluster_template
                    .kubernetes_allowed_network_drivers
                    .clone(),
                default: self
                    .cluster_template
                    .kubernetes_default_network_driver
                    .clone(),
            },
            swarm_mode: NetworkDriverSettings {
                allowed: self
                    .cluster_template
                    .swarm_mode_allowed_network_drivers
                    .clone(),
                default: self
                    .cluster_template
                    .swarm_mode_default_network_driver
                    .clone(),
            },
        }
    }

    /// The policy: upstream's defaults with the operator's overrides, if any.
    pub fn policy(&self) -> anyhow::Result<magnum_domain::policy::Policy> {
        use magnum_domain::policy::{parse_override_file, Policy};
        let Some(path) = &self.auth.policy_file else {
            return Ok(Policy::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("auth.policy_file {}: {error}", path.display()))?;
        let overrides = parse_override_file(&text)
            .map_err(|error| anyhow::anyhow!("auth.policy_file {}: {error}", path.display()))?;
        Policy::with_overrides(&overrides)
            .map_err(|error| anyhow::anyhow!("auth.policy_file {}: {error}", path.display()))
    }

    /// The capi driver's settings, checked (Keystone's URL defaults to `auth.keystone`'s).
    pub fn capi_settings(&self) -> anyhow::Result<magnum_driver_capi::settings::Settings> {
        let keystone = self.auth.keystone.auth_url.trim();
        let keystone = (!keystone.is_empty()).then_some(keystone);
        let authenticates = self.auth.strategy == AuthStrategy::Keystone;
        let mut capi = self.drivers.capi.clone();
        // Delegation needs the owner's Keystone token: on by default exactly when there is one.
        match capi.delegated_credentials {
            Some(true) if !authenticates => bail!(
                "drivers.capi.delegated_credentials = true needs auth.strategy = \"keystone\": \
                 a cluster's credential is created with its owner's token"
            ),
            Some(_) => {}
            None => capi.delegated_credentials = Some(authenticates),
        }
        if !authenticates && capi.catalog.is_empty() {
            bail!(
                "drivers.capi.catalog lists nothing: without auth.strategy = \"keystone\" there \
                 is no caller's token to look images, flavors and networks up in the cloud with"
            );
        }
        Ok(capi.settings(keystone)?)
    }

    /// `[auth.keystone]` with its credentials file read; errors name the key or file at fault.
    pub fn keystone_settings(&self) -> anyhow::Result<magnum_keystone::KeystoneSettings> {
        use std::os::unix::fs::PermissionsExt;
        let keystone = &self.auth.keystone;
        let auth_url = keystone.auth_url.trim_end_matches('/');
        if !(auth_url.starts_with("http://") || auth_url.starts_with("https://"))
            || auth_url.contains(['?', '#', ' '])
        {
            bail!(
                "auth.keystone.auth_url = {:?}: expected Keystone's v3 endpoint, like \"http://keystone:5000/v3\"",
                keystone.auth_url
            );
        }
        let Some(path) = &keystone.credentials_file else {
            bail!("auth.keystone.credentials_file is required with auth.strategy = \"keystone\"");
        };
        let metadata = std::fs::metadata(path).map_err(|error| {
            anyhow::anyhow!("auth.keystone.credentials_file {}: {error}", path.display())
        })?;
        if metadata.permissions().mode() & 0o077 != 0 {
            bail!(
                "auth.keystone.credentials_file {} is readable by others (mode {:o}): it must be mode 0600",
                path.display(),
                metadata.permissions().mode() & 0o777
            );
        }
        let text = std::fs::read_to_string(path).map_err(|error| {
            anyhow::anyhow!("auth.keystone.credentials_file {}: {error}", path.display())
        })?;
        let credentials: magnum_keystone::ServiceCredentials =
            toml::from_str(&text).map_err(|_| {
                anyhow::anyhow!(
                "auth.keystone.credentials_file {}: expected username, password and project_name \
                 (optionally user_domain_name, project_domain_name), or application_credential_id \
                 and application_credential_secret",
                path.display()
            )
            })?;
        let ca_certificates_pem = match &keystone.cafile {
            Some(cafile) => Some(std::fs::read(cafile).map_err(|error| {
                anyhow::anyhow!("auth.keystone.cafile {}: {error}", cafile.display())
            })?),
            None => None,
        };
        if keystone.timeout_seconds == 0 {
            bail!("auth.keystone.timeout_seconds must be at least 1");
        }
        Ok(magnum_keystone::KeystoneSettings {
            auth_url: auth_url.to_owned(),
            credentials,
            cache_for: std::time::Duration::from_secs(keystone.cache_seconds),
            max_cached_tokens: keystone.max_cached_tokens,
            timeout: std::time::Duration::from_secs(keystone.timeout_seconds),
            ca_certificates_pem,
        })
    }

    /// Where 401 answers send clients for a token.
    pub fn www_authenticate_uri(&self) -> String {
        let keystone = &self.auth.keystone;
        match &keystone.www_authenticate_uri {
            Some(uri) => uri.clone(),
            None => {
                let auth_url = keystone.auth_url.trim_end_matches('/');
                auth_url.strip_suffix("/v3").unwrap_or(auth_url).to_owned()
            }
        }
    }

    pub fn notifications_path(&self) -> PathBuf {
        self.notifications
            .path
            .clone()
            .unwrap_or_else(|| self.state_dir().join("notifications.jsonl"))
    }

    pub fn conductor_settings(&self) -> magnum_conductor::ConductorSettings {
        use std::time::Duration;
        let conductor = &self.conductor;
        magnum_conductor::ConductorSettings {
            host: self.conductor_host(),
            heartbeat_interval: Duration::from_secs(conductor.heartbeat_interval),
            poll_interval: Duration::from_millis(conductor.poll_interval_ms),
            lease: Duration::from_secs(conductor.lease),
            max_concurrent_operations: conductor.max_concurrent_operations,
            max_attempts: conductor.max_attempts,
            operation_timeout: Duration::from_secs(conductor.operation_timeout),
            replaced_credential_grace: Duration::from_secs(conductor.replaced_credential_grace),
            event_retention: self.events.retention(),
            finished_operation_retention: Duration::from_secs(conductor.keep_finished_operations),
        }
    }

    pub fn conductor_host(&self) -> String {
        self.conductor.host.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .ok()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "localhost".to_owned())
        })
    }
}

/// An environment value as TOML when it reads as a number, boolean or array; text otherwise.
fn environment_value(raw: &str) -> toml::Value {
    let trimmed = raw.trim();
    if trimmed.starts_with('[')
        || trimmed == "true"
        || trimmed == "false"
        || trimmed.parse::<i64>().is_ok()
    {
        if let Ok(table) = format!("value = {trimmed}").parse::<toml::Table>() {
            if let Some(value) = table.get("value") {
                return value.clone();
            }
        }
    }
    toml::Value::String(raw.to_owned())
}

fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    let (last, parents) = path.split_last().expect("paths are not empty");
    let mut current = table;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            _ => bail!("{segment} is not a section"),
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        file: Option<&str>,
        environment: &[(&str, &str)],
        overrides: &Overrides,
    ) -> anyhow::Result<Config> {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("magnum.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        Config::load(
            file.map(|_| path.as_path()),
            environment
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            overrides,
        )
    }

    #[test]
    fn clusters_get_credentials_of_their_own_exactly_when_keystone_authenticates() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().unwrap();
        let kubeconfig = directory.path().join("kubeconfig");
        std::fs::write(&kubeconfig, "apiVersion: v1\n").unwrap();
        std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut config = load(None, &[], &Overrides::default()).unwrap();
        config.drivers.capi.kubeconfig = Some(kubeconfig);
        config.drivers.capi.auth_url = Some("https://keystone.test/v3".to_owned());
        // noauth: no token to look references up in the cloud with, so the catalog is
        // required; nor to delegate with, so the shared credential and its projects are
        // required, and asking for delegation is an error.
        let refused = config.capi_settings().unwrap_err().to_string();
        assert!(refused.contains("drivers.capi.catalog"), "{refused}");
        config.drivers.capi.catalog.keypairs = vec!["k".to_owned()];
        let refused = config.capi_settings().unwrap_err().to_string();
        assert!(refused.contains("allowed_projects"), "{refused}");
        config.drivers.capi.delegated_credentials = Some(true);
        let refused = config.capi_settings().unwrap_err().to_string();
        assert!(refused.contains("auth.strategy"), "{refused}");
        // keystone: delegation by default, with neither a shared credential nor a project list.
        config.drivers.capi.delegated_credentials = None;
        config.auth.strategy = AuthStrategy::Keystone;
        let settings = config.capi_settings().unwrap();
        assert!(settings.delegated_credentials);
        assert!(settings.allowed_projects.is_empty());
        // Turned off under keystone, the shared credential is required again.
        config.drivers.capi.delegated_credentials = Some(false);
        let refused = config.capi_settings().unwrap_err().to_string();
        assert!(refused.contains("allowed_projects"), "{refused}");
    }

    #[test]
    fn defaults_serve_loopback_with_embedded_sqlite() {
        let config = load(None, &[], &Overrides::default()).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:9511");
        assert_eq!(config.auth.strategy, AuthStrategy::Noauth);
        assert!(config.database_url().starts_with("sqlite://"));
        assert!(config.database_url().ends_with("/magnum.sqlite"));
    }

    #[test]
    fn layers_apply_in_order() {
        let file = "[server]\nlisten = \"127.0.0.1:1000\"\nstate_dir = \"/tmp/from-file\"\n[api]\nmax_limit = 50\n";
        let environment = [
            ("MAGNUM_SERVER__LISTEN", "127.0.0.1:2000"),
            ("MAGNUM_API__SERVICE_DOWN_TIME", "30"),
            (
                "MAGNUM_CLUSTER_TEMPLATE__KUBERNETES_ALLOWED_NETWORK_DRIVERS",
                "[\"all\"]",
            ),
            ("MAGNUM_URL", "http://client-side-variable-is-ignored"),
        ];
        let config = load(Some(file), &environment, &Overrides::default()).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:2000");
        assert_eq!(config.api.max_limit, 50);
        assert_eq!(config.api.service_down_time, 30);
        assert_eq!(
            config.cluster_template.kubernetes_allowed_network_drivers,
            vec!["all"]
        );
        let overrides = Overrides {
            listen: Some("127.0.0.1:3000".to_owned()),
            database_url: Some("postgres://db/magnum".to_owned()),
            ..Overrides::default()
        };
        let config = load(Some(file), &environment, &overrides).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:3000");
        assert_eq!(config.database_url(), "postgres://db/magnum");
        assert_eq!(config.state_dir(), PathBuf::from("/tmp/from-file"));
    }

    #[test]
    fn keystone_settings_are_checked_at_start_up() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().unwrap();
        let credentials = directory.path().join("keystone.toml");
        std::fs::write(
            &credentials,
            "username = \"magnum\"\npassword = \"pw\"\nproject_name = \"service\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = |auth_url: &str, credentials: &std::path::Path| {
            format!(
                "[auth]\nstrategy = \"keystone\"\n[auth.keystone]\nauth_url = \"{auth_url}\"\ncredentials_file = \"{}\"\n",
                credentials.display()
            )
        };
        let config = load(
            Some(&file("http://keystone:5000/v3/", &credentials)),
            &[],
            &Overrides::default(),
        )
        .unwrap();
        let settings = config.keystone_settings().unwrap();
        assert_eq!(settings.auth_url, "http://keystone:5000/v3");
        assert_eq!(config.www_authenticate_uri(), "http://keystone:5000");

        let message = |text: String| {
            format!(
                "{:#}",
                load(Some(&text), &[], &Overrides::default()).unwrap_err()
            )
        };
        assert!(message(file("keystone:5000", &credentials)).contains("auth.keystone.auth_url"));
        assert!(message(file(
            "http://keystone:5000/v3",
            &directory.path().join("missing.toml")
        ))
        .contains("missing.toml"));
        std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(message(file("http://keystone:5000/v3", &credentials)).contains("mode 0600"));
        std::fs::write(&credentials, "user = \"magnum\"\n").unwrap();
        std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            message(file("http://keystone:5000/v3", &credentials)).contains("expected username")
        );
        assert!(message("[auth]\nstrategy = \"keystone\"\n".to_owned())
            .contains("auth.keystone.auth_url"));
        let unknown = message("[auth]\nstrategy = \"ldap\"\n".to_owned());
        assert!(
            unknown.contains("ldap") && unknown.contains("keystone") && unknown.contains("noauth"),
            "{unknown}"
        );
        for (toml, known) in [
            (
                "[certificates]\ncert_manager_type = \"barbican\"\n",
                "x509keypair",
            ),
            ("[notifications]\nsink = \"kafka\"\n", "rabbitmq"),
        ] {
            let refused = message(toml.to_owned());
            assert!(refused.contains(known), "{refused}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let error = load(
            Some("[server]\nlisen = \"x\"\n"),
            &[],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("lisen"), "{error:#}");
        let error = load(
            None,
            &[("MAGNUM_DATABASE__URLL", "x")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("urll"), "{error:#}");
        let error = load(
            None,
            &[("MAGNUM_API__MAX_LIMIT", "many")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("max_limit"), "{error:#}");
        let error = load(
            None,
            &[("MAGNUM_SERVER__LISTEN", "nowhere")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("server.listen"), "{error:#}");
        let error = load(
            None,
            &[("MAGNUM_DATABASE__URL", "oracle://x")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("database.url"), "{error:#}");
        let error = load(
            Some("[drivers]\nenabled = [\"heat\"]\n"),
            &[],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("heat"), "{error:#}");
    }

    #[test]
    fn the_local_catalog_is_configurable() {
        let file = "[[drivers.local.images]]\nname = \"node-v2\"\nos_distro = \"local\"\n";
        let config = load(Some(file), &[], &Overrides::default()).unwrap();
        assert_eq!(config.drivers.local.images.len(), 1);
        assert_eq!(config.drivers.local.images[0].name, "node-v2");
        assert_eq!(
            config.drivers.local.flavors.len(),
            2,
            "unset parts keep their defaults"
        );
    }

    #[test]
    fn the_local_autoscaler_is_configured_within_its_bounds() {
        let defaults = load(None, &[], &Overrides::default()).unwrap();
        assert_eq!(
            defaults.drivers.local.autoscaler,
            magnum_driver_local::AutoscalerConfig::default()
        );
        let file =
            "[drivers.local.autoscaler]\nscan_interval = 1\nscale_out_delay = 0\ncool_down = 30\n";
        let config = load(
            Some(file),
            &[("MAGNUM_DRIVERS__LOCAL__AUTOSCALER__SCALE_IN_IDLE", "5")],
            &Overrides::default(),
        )
        .unwrap();
        let autoscaler = config.drivers.local.autoscaler;
        assert_eq!(
            (
                autoscaler.enabled,
                autoscaler.scan_interval,
                autoscaler.scale_out_delay,
                autoscaler.scale_in_idle,
                autoscaler.cool_down
            ),
            (true, 1, 0, 5, 30)
        );
        for (file, named) in [
            (
                "[drivers.local.autoscaler]\nscan_interval = 0\n",
                "drivers.local.autoscaler.scan_interval must be between 1 and 300 seconds",
            ),
            (
                "[drivers.local.autoscaler]\nscan_interval = 301\n",
                "scan_interval",
            ),
            (
                "[drivers.local.autoscaler]\nscale_out_delay = 3601\n",
                "scale_out_delay",
            ),
            (
                "[drivers.local.autoscaler]\nscale_in_idle = 0\n",
                "scale_in_idle",
            ),
            (
                "[drivers.local.autoscaler]\ncool_down = 86401\n",
                "cool_down",
            ),
            ("[drivers.local.autoscaler]\ncooldown = 1\n", "cooldown"),
            ("[drivers.local.autoscaler]\ncool_down = -1\n", "cool_down"),
        ] {
            let error = load(Some(file), &[], &Overrides::default()).unwrap_err();
            assert!(format!("{error:#}").contains(named), "{file}: {error:#}");
        }
    }

    #[test]
    fn finished_operations_are_kept_between_a_day_and_a_year() {
        let defaults = load(None, &[], &Overrides::default()).unwrap();
        assert_eq!(
            defaults.conductor_settings().finished_operation_retention,
            std::time::Duration::from_secs(30 * 86_400)
        );
        let file = "[conductor]\nkeep_finished_operations = 86400\n";
        let config = load(Some(file), &[], &Overrides::default()).unwrap();
        assert_eq!(
            config.conductor_settings().finished_operation_retention,
            std::time::Duration::from_secs(86_400)
        );
        // Less than a day would forget resizes the autoscaler's longest cool-down honours.
        for value in ["86399", "31536001", "-1"] {
            let file = format!("[conductor]\nkeep_finished_operations = {value}\n");
            let error = load(Some(&file), &[], &Overrides::default()).unwrap_err();
            assert!(
                format!("{error:#}").contains("keep_finished_operations"),
                "{value}: {error:#}"
            );
        }
    }

    #[test]
    fn metrics_access_is_loopback_unless_configured_and_checked_at_load() {
        let defaults = load(None, &[], &Overrides::default()).unwrap();
        let access = defaults.metrics_access().unwrap();
        assert!(access.networks.is_empty() && !access.admin_tokens);
        assert_eq!(defaults.metrics_listen_address().unwrap(), None);
        let file = "[metrics]\nlisten = \"127.0.0.1:9512\"\nallowed_networks = [\"10.0.0.0/8\", \"192.0.2.7\"]\n";
        let config = load(Some(file), &[], &Overrides::default()).unwrap();
        assert_eq!(config.metrics_access().unwrap().networks.len(), 2);
        assert_eq!(
            config.metrics_listen_address().unwrap(),
            Some("127.0.0.1:9512".parse().unwrap())
        );
        for (file, named) in [
            (
                "[metrics]\nallowed_networks = [\"10.0.0.0/40\"]\n",
                "metrics.allowed_networks",
            ),
            (
                "[metrics]\nallowed_networks = [\"intranet\"]\n",
                "metrics.allowed_networks",
            ),
            ("[metrics]\nlisten = \"anywhere:1\"\n", "metrics.listen"),
            ("[metrics]\nadmin_token = true\n", "auth.strategy"),
            ("[metrics]\nallow_from = []\n", "allow_from"),
        ] {
            let error = load(Some(file), &[], &Overrides::default()).unwrap_err();
            assert!(format!("{error:#}").contains(named), "{file}: {error:#}");
        }
    }
}
