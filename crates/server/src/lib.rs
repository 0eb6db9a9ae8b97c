//! magnumd: configuration and wiring of the API, the conductor and the store.

pub mod cli;
pub mod config;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use magnum_api::{ApiSettings, AppState, KeystoneAuth, NoAuth};
use magnum_conductor::{
    Conductor, FileNotifier, Notifier, NullNotifier, QueuedNotifier, RabbitNotifier,
};
use magnum_domain::Identity;
use magnum_driver::{Driver, DriverRegistry};
use magnum_driver_local::LocalDriver;
use magnum_keystore::{ClusterCertificates, KeyStorage};
use magnum_store::Store;

use crate::config::{AuthStrategy, CertManagerType, NotificationSink};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use config::{Config, Overrides};

/// What a magnumd process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API and conductor in one process; applies migrations at start.
    All,
    Api,
    Conductor,
}

/// A started magnumd; [`Running::stop`] shuts it down gracefully.
pub struct Running {
    /// Where the API listens, when this role serves it.
    pub address: Option<SocketAddr>,
    /// Where `metrics.listen` serves `/metrics`, when it is set.
    pub metrics_address: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    store: Store,
    /// Audit events still queued are delivered before the process stops.
    notifier: Option<Arc<dyn Notifier>>,
}

impl Running {
    /// Stops accepting requests, lets those in flight finish, stops the conductor, and
    /// delivers the audit events it queued (for at most `NOTIFICATION_DRAIN`).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(notifier) = self.notifier {
            notifier.close().await;
        }
        self.store.close().await;
    }
}

impl Running {
    /// Stops every task at once, handing nothing back, as a killed process would (tests
    /// use it to check that others take over).
    pub async fn abort(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.store.close().await;
    }
}

/// Opens the database, creating the state directory for the embedded default.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.database_url();
    // The state directory holds CA keys, node records and the embedded database, whatever
    // database is configured: for magnumd's user only.
    let state_dir = config.state_dir();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    restrict_to_owner(&state_dir)?;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if !path.is_empty() && path != ":memory:" {
            create_private_file(std::path::Path::new(path))?;
        }
    }
    Store::connect(&url, config.database.max_connections)
        .await
        .map_err(anyhow::Error::from)
}

/// Creates `path` readable by its owner only (SQLite gives its -wal and -shm files the same
/// mode), or narrows an existing one to that.
fn create_private_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .and_then(|_| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
        .with_context(|| format!("cannot create the database file {}", path.display()))
}

#[cfg(unix)]
fn restrict_to_owner(directory: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict permissions of {}", directory.display()))
}

#[cfg(not(unix))]
fn restrict_to_owner(_directory: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}

/// Revokes the application credentials delegated to clusters, with magnum-rs's own Keystone
/// login (it needs the admin role to delete another user's credential).
struct KeystoneRevoker(Arc<magnum_keystone::Keystone>);

#[async_trait::async_trait]
impl magnum_driver::CredentialRevoker for KeystoneRevoker {
    async fn revoke(&self, user_id: &str, id: &str) -> Result<(), String> {
        self.0
            .delete_application_credential(user_id, id)
            .await
            .map_err(|error| error.to_string())
    }
}

/// magnumd's one Keystone client (token validation, delegation and revocation), when
/// Keystone authenticates.
fn keystone(
    config: &Config,
    metrics: &magnum_metrics::Metrics,
) -> anyhow::Result<Option<Arc<magnum_keystone::Keystone>>> {
    if config.auth.strategy != AuthStrategy::Keystone {
        return Ok(None);
    }
    Ok(Some(Arc::new(
        magnum_keystone::Keystone::new(config.keystone_settings()?)?
            .with_metrics(metrics.keystone.clone()),
    )))
}

async fn drivers(
    config: &Config,
    role: Role,
    extra: &[Arc<dyn Driver>],
    metrics: &magnum_metrics::Metrics,
) -> anyhow::Result<DriverRegistry> {
    let mut drivers: Vec<Arc<dyn Driver>> = extra.to_vec();
    for name in &config.drivers.enabled {
        if name == magnum_driver_capi::driver::DRIVER_NAME {
            let capi = &config.drivers.capi;
            let settings = config.capi_settings()?;
            let kubeconfig = capi
                .kubeconfig
                .clone()
                .context("drivers.capi.kubeconfig is required")?;
            let credential = Arc::new(magnum_driver_capi::config::ConfiguredCredential {
                shared: capi.credential(),
                shared_projects: capi.allowed_projects.clone(),
            });
            // An API process only validates; the watches are for whoever converges.
            let driver = magnum_driver_capi::driver::CapiDriver::connect(
                settings,
                capi.catalog.clone(),
                &kubeconfig,
                credential,
                role != Role::Api,
            )
            .await?;
            drivers.push(Arc::new(driver));
        } else if name == magnum_driver_local::DRIVER_NAME {
            let driver = LocalDriver::with_state_dir(
                config.drivers.local.clone(),
                config.state_dir().join("local-driver"),
            )
            .with_metrics(metrics.driver_steps.clone());
            if let Some(reason) = driver.unavailable() {
                tracing::warn!("{reason}");
            }
            drivers.push(Arc::new(driver));
        }
    }
    Ok(DriverRegistry::new(drivers))
}

fn api_state(
    config: &Config,
    store: Store,
    drivers: DriverRegistry,
    operations_enqueued: Arc<Notify>,
    certificates: ClusterCertificates,
    keystone: Option<Arc<magnum_keystone::Keystone>>,
    metrics: Arc<magnum_api::MetricsEndpoint>,
) -> anyhow::Result<AppState> {
    let dashboard = dashboard(config, keystone.as_ref())?;
    let authenticator: Arc<dyn magnum_api::Authenticator> = if let Some(keystone) = keystone {
        let first_login = keystone.clone();
        // Keystone may come up after magnumd; until it does, requests get 503, and wrong
        // service credentials are reported here rather than only per request.
        tokio::spawn(async move {
            match first_login.check_service_login().await {
                Ok(()) => {
                    tracing::info!(auth_url = first_login.auth_url(), "logged in to Keystone")
                }
                Err(error) => tracing::error!(%error, "cannot log in to Keystone"),
            }
        });
        Arc::new(KeystoneAuth::new(keystone, &config.www_authenticate_uri()))
    } else {
        let noauth = &config.auth.noauth;
        let roles: Vec<&str> = noauth.roles.iter().map(String::as_str).collect();
        let default_identity = Identity::new(&noauth.project_id, &noauth.user_id, &roles);
        Arc::new(NoAuth::new(default_identity))
    };
    Ok(AppState {
        store,
        drivers,
        operations_enqueued,
        certificates,
        policy: config.policy()?,
        authenticator,
        settings: ApiSettings {
            max_limit: config.api.max_limit,
            service_down_time_seconds: config.api.service_down_time,
            template_rules: config.template_rules(),
            response_cache_bytes: config.api.response_cache_mib * 1024 * 1024,
            path_prefix: config.api.path_prefix.clone(),
            max_clusters_per_project: config.quotas.max_clusters_per_project,
            trust_proxy_headers: config.api.enable_proxy_headers_parsing,
            browser_guard: config.auth.strategy == AuthStrategy::Noauth,
            allowed_hosts: config
                .api
                .noauth_allowed_hosts
                .iter()
                .map(|host| host.to_ascii_lowercase())
                .collect(),
            body_timeout: std::time::Duration::from_secs(config.api.body_timeout),
            event_streams: config.events.stream_settings(),
        },
        metrics,
        dashboard,
    })
}

/// The dashboard as configured; with Keystone, its session key (created beside the state
/// when none is named).
fn dashboard(
    config: &Config,
    keystone: Option<&Arc<magnum_keystone::Keystone>>,
) -> anyhow::Result<Option<Arc<magnum_api::Dashboard>>> {
    if !config.dashboard.enabled {
        return Ok(None);
    }
    let dashboard = match keystone {
        None => magnum_api::Dashboard::without_login(),
        Some(keystone) => {
            let (path, create) = match &config.dashboard.session_key_file {
                Some(path) => (path.clone(), false),
                None => {
                    let state_dir = config.state_dir();
                    std::fs::create_dir_all(&state_dir).with_context(|| {
                        format!("cannot create state directory {}", state_dir.display())
                    })?;
                    (state_dir.join("dashboard-session-key"), true)
                }
            };
            let key = magnum_keystore::load_key_file(&path, create)
                .map_err(|error| anyhow::anyhow!("dashboard.session_key_file: {error}"))?;
            magnum_api::Dashboard::with_keystone(keystone.clone(), key)
        }
    };
    let size = dashboard.bundle_size();
    tracing::debug!(
        raw_bytes = size.raw_bytes,
        gzip_bytes = size.gzip_bytes,
        "dashboard files"
    );
    Ok(Some(Arc::new(dashboard)))
}

/// Starts `role` and returns once it is serving.
pub async fn start(config: &Config, role: Role) -> anyhow::Result<Running> {
    start_with_drivers(config, role, &[]).await
}

/// The cluster CAs as configured; refuses a key file others can read.
fn cluster_certificates(
    config: &Config,
    store: &Store,
    role: Role,
) -> anyhow::Result<ClusterCertificates> {
    let settings = &config.certificates;
    if role != Role::All
        && settings.cert_manager_type == CertManagerType::X509Keypair
        && settings.key_file.is_none()
    {
        bail!(
            "certificates.key_file must be set for `magnumd api` and `magnumd conductor`: every \
             process on the shared database needs the same key (a 0600 file of 64 hexadecimal \
             digits, e.g. `openssl rand -hex 32 > key && chmod 600 key`) to read the CA keys"
        );
    }
    let storage = match settings.cert_manager_type {
        CertManagerType::Local => {
            let directory = config.state_dir().join("certificates");
            std::fs::create_dir_all(&directory)
                .with_context(|| format!("cannot create {}", directory.display()))?;
            restrict_to_owner(&directory)?;
            KeyStorage::Files(directory)
        }
        _ => {
            let (path, create) = match &settings.key_file {
                Some(path) => (path.clone(), false),
                None => {
                    let state_dir = config.state_dir();
                    std::fs::create_dir_all(&state_dir).with_context(|| {
                        format!("cannot create state directory {}", state_dir.display())
                    })?;
                    (state_dir.join("certificate-key"), true)
                }
            };
            let sealer = magnum_keystore::load_key_file(&path, create)
                .map_err(|error| anyhow::anyhow!("certificates.key_file: {error}"))?;
            KeyStorage::Database(Box::new(sealer))
        }
    };
    Ok(ClusterCertificates::new(
        store.clone(),
        storage,
        settings.term_of_validity,
    ))
}

fn notifier(config: &Config) -> anyhow::Result<Arc<dyn Notifier>> {
    let settings = &config.notifications;
    let sink: Arc<dyn Notifier> = match settings.sink {
        NotificationSink::File => Arc::new(FileNotifier::new(
            config.notifications_path(),
            config.conductor_host(),
        )),
        NotificationSink::Rabbitmq => Arc::new(RabbitNotifier::new(
            &settings.transport_url,
            settings.exchange.clone(),
            settings.topic.clone(),
            config.conductor_host(),
        )?),
        NotificationSink::None => return Ok(Arc::new(NullNotifier)),
    };
    Ok(Arc::new(QueuedNotifier::spawn(sink)))
}

/// Starts `role` with drivers of the embedder's besides the configured ones (tests use this
/// to run the service against drivers whose behaviour they control).
pub async fn start_with_drivers(
    config: &Config,
    role: Role,
    extra_drivers: &[Arc<dyn Driver>],
) -> anyhow::Result<Running> {
    let listen = config.listen_address()?;
    if role != Role::Conductor
        && config.auth.strategy == AuthStrategy::Noauth
        && !listen.ip().is_loopback()
        && !config.server.allow_insecure_noauth
    {
        bail!(
            "refusing to serve auth.strategy = \"noauth\" on {listen}: anyone who can reach it acts as \
             any project, including admin. Listen on a loopback address, or force it with \
             --allow-insecure-noauth (server.allow_insecure_noauth = true)"
        );
    }
    let store = open_store(config).await?;
    if role == Role::All {
        store
            .migrate()
            .await
            .context("applying database migrations")?;
    } else if !store.schema_is_current().await? {
        bail!("the database schema is not current: run `magnumd db upgrade` first");
    }

    let (shutdown, shutdown_receiver) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut address = None;
    let metrics = Arc::new(magnum_metrics::Metrics::new());
    let keystone = keystone(config, &metrics)?;
    let registry = drivers(config, role, extra_drivers, &metrics).await?;
    let metrics_endpoint =
        metrics::endpoint(config, &metrics, &store, &registry, keystone.as_ref())?;
    let certificates = cluster_certificates(config, &store, role)?;
    let operations_enqueued = Arc::new(Notify::new());
    let mut audit = None;
    if role != Role::Api {
        let events = notifier(config)?;
        audit = Some(events.clone());
        let conductor = Conductor::new(
            store.clone(),
            registry.clone(),
            config.conductor_settings(),
            operations_enqueued.clone(),
            events,
            certificates.clone(),
        )
        .with_metrics(metrics.operations.clone());
        let conductor = match &keystone {
            Some(keystone) => {
                conductor.with_credential_revoker(Arc::new(KeystoneRevoker(keystone.clone())))
            }
            None => conductor,
        };
        conductor
            .register()
            .await
            .context("registering the conductor")?;
        tasks.push(tokio::spawn(conductor.run(shutdown_receiver.clone())));
    }
    if role != Role::Conductor {
        let state = api_state(
            config,
            store.clone(),
            registry.clone(),
            operations_enqueued.clone(),
            certificates.clone(),
            keystone.clone(),
            metrics_endpoint.clone(),
        )?;
        // Dashboard sessions ended by logouts are known before the first request (the
        // follower that keeps them up to date starts with the router).
        if let Some(dashboard) = &state.dashboard {
            if let Err(error) = dashboard.load_ended_sessions(&store).await {
                tracing::warn!(%error, "cannot read the dashboard sessions ended by logouts yet; retried every second");
            }
        }
        let (router, events) = magnum_api::router_with_events(state);
        // Streams end with `server_stopping` as soon as a stop begins, not at the grace's end.
        let mut stopping = shutdown_receiver.clone();
        tasks.push(tokio::spawn(async move {
            while !*stopping.borrow() {
                if stopping.changed().await.is_err() {
                    break;
                }
            }
            events.stop();
        }));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let bound = listener.local_addr()?;
        address = Some(bound);
        let limits = ConnectionLimits {
            max_connections: config.api.max_connections,
            max_connections_per_client: config.api.max_connections_per_client,
            header_timeout: std::time::Duration::from_secs(config.api.header_timeout),
            write_timeout: std::time::Duration::from_secs(config.api.header_timeout),
            max_header_bytes: config.api.max_header_bytes,
            shutdown_grace: std::time::Duration::from_secs(config.api.shutdown_grace),
        };
        tasks.push(tokio::spawn(serve_api(
            listener,
            router,
            limits,
            shutdown_receiver.clone(),
        )));
        tracing::info!(address = %bound, "API listening");
    }
    let mut metrics_address = None;
    if let Some((bound, task)) =
        metrics::listen(config, &metrics_endpoint, shutdown_receiver.clone()).await?
    {
        metrics_address = Some(bound);
        tasks.push(task);
    }
    Ok(Running {
        address,
        metrics_address,
        shutdown,
        tasks,
        store,
        notifier: audit,
    })
}

/// What one API process gives its clients.
struct ConnectionLimits {
    max_connections: usize,
    max_connections_per_client: usize,
    header_timeout: std::time::Duration,
    /// How long a client may leave an answer unread (its receive window full).
    write_timeout: std::time::Duration,
    max_header_bytes: usize,
    shutdown_grace: std::time::Duration,
}

/// Connections of one client address, for `max_connections_per_client`.
struct PerClient {
    counts: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    limit: usize,
}

struct ClientSlot {
    clients: Arc<PerClient>,
    address: std::net::IpAddr,
}

impl PerClient {
    fn take(self: &Arc<Self>, address: std::net::IpAddr) -> Option<ClientSlot> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(address).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            clients: self.clone(),
            address,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self
            .clients
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// A client socket whose writes fail once they make no progress for `timeout`: a client
/// that stops reading cannot hold its connection (and its slot) forever.
struct StallingWrites {
    stream: tokio::net::TcpStream,
    timeout: std::time::Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// An answer of hyper's own, rewritten in Magnum's envelope, still to be written (and
    /// how much of it is).
    rewritten: Vec<u8>,
    rewritten_at: usize,
}

/// Magnum's envelope for an answer hyper makes itself, below the router: a head it cannot
/// parse (400), one too large (431) or a URI too long (414). Those answers are the only 4xx
/// heads without `x-openstack-request-id` and with an empty body; every answer of the
/// router carries the id.
fn envelope_for_hyper_error(bytes: &[u8]) -> Option<Vec<u8>> {
    if !bytes.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let head_end = bytes.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..head_end])
        .ok()?
        .to_ascii_lowercase();
    if head.contains("x-openstack-request-id") || !head.contains("content-length: 0") {
        return None;
    }
    let status: u16 = head.get(9..12)?.parse().ok()?;
    let code = axum::http::StatusCode::from_u16(status).ok()?;
    let title = code.canonical_reason().unwrap_or("Bad Request").to_owned();
    let detail = match status {
        431 => "The request's header fields are too large.".to_owned(),
        414 => "The request's URI is too long.".to_owned(),
        _ => "The request could not be read as HTTP/1.1.".to_owned(),
    };
    // Like the router's own errors (code ""), as upstream's WSGI layer answers them.
    let body = magnum_types::encode(&magnum_types::ErrorEnvelope::new(
        "",
        status,
        title.clone(),
        detail,
    ));
    let mut answer = format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-openstack-request-id: req-{}\r\nconnection: close\r\n\r\n",
        body.len(),
        uuid::Uuid::new_v4()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

impl StallingWrites {
    /// Writes what is left of a rewritten answer.
    fn write_rewritten(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        while self.rewritten_at < self.rewritten.len() {
            let remaining = &self.rewritten[self.rewritten_at..];
            let poll = tokio::io::AsyncWrite::poll_write(
                std::pin::Pin::new(&mut self.stream),
                context,
                remaining,
            );
            self.check_stall(context, poll.is_ready())?;
            match poll {
                std::task::Poll::Ready(Ok(0)) => {
                    return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                std::task::Poll::Ready(Ok(written)) => self.rewritten_at += written,
                std::task::Poll::Ready(Err(error)) => return std::task::Poll::Ready(Err(error)),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn check_stall(
        &mut self,
        context: &mut std::task::Context<'_>,
        progress: bool,
    ) -> std::io::Result<()> {
        if progress {
            self.stalled = None;
            return Ok(());
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if std::future::Future::poll(stalled.as_mut(), context).is_ready() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client does not read its answer",
            ));
        }
        Ok(())
    }
}

impl tokio::io::AsyncRead for StallingWrites {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl tokio::io::AsyncWrite for StallingWrites {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::ready!(self.write_rewritten(context))?;
        if let Some(answer) = envelope_for_hyper_error(bytes) {
            self.rewritten = answer;
            self.rewritten_at = 0;
            // Taken: the rest is written here, by flush or by shutdown.
            if let std::task::Poll::Ready(Err(error)) = self.write_rewritten(context) {
                return std::task::Poll::Ready(Err(error));
            }
            return std::task::Poll::Ready(Ok(bytes.len()));
        }
        let poll = std::pin::Pin::new(&mut self.stream).poll_write(context, bytes);
        let progress = poll.is_ready();
        self.check_stall(context, progress)?;
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.write_rewritten(context))?;
        let poll = std::pin::Pin::new(&mut self.stream).poll_flush(context);
        let progress = poll.is_ready();
        self.check_stall(context, progress)?;
        poll
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.write_rewritten(context))?;
        std::pin::Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

/// Open files this process may have (the soft limit), from /proc/self/limits.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// HTTP/1.1 on `listener` with every client bounded: at most `max_connections` served at once
/// (the rest wait in the listen queue), headers within `header_timeout` (which also closes an
/// idle kept-alive connection), heads up to `max_header_bytes`; a client that half-closes
/// still gets its answer. On shutdown, requests in flight get `shutdown_grace`, then their
/// connections are dropped.
async fn serve_api(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    // Clients must not use up the file descriptors the database, key files and drivers need.
    let max_connections = match open_files_limit() {
        Some(files) if files < limits.max_connections + 256 => {
            let fitting = files.saturating_sub(256).max(16);
            tracing::warn!(
                api.max_connections = limits.max_connections,
                open_files = files,
                "serving at most {fitting} connections: the process may open only {files} files \
                 (raise its limit, e.g. LimitNOFILE=, to serve more)"
            );
            fitting
        }
        _ => limits.max_connections,
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let clients = Arc::new(PerClient {
        counts: std::sync::Mutex::default(),
        limit: limits.max_connections_per_client,
    });
    let mut connections = tokio::task::JoinSet::new();
    let mut stopped = stop.clone();
    let stop_requested = async move {
        let _ = stopped.wait_for(|stopping| *stopping).await;
    };
    tokio::pin!(stop_requested);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut stop_requested => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, usually: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop_requested => break,
        };
        let Some(client_slot) = clients.take(peer.ip()) else {
            // One client may not take every slot; its extra connection is closed at once.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = StallingWrites {
            stream,
            timeout: limits.write_timeout,
            stalled: None,
            rewritten: Vec::new(),
            rewritten_at: 0,
        };
        // The peer's address, for who may read `/metrics`.
        let router = router
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let service = hyper_util::service::TowerToHyperService::new(router);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes)
            .half_close(true);
        let mut stopping = stop.clone();
        connections.spawn(async move {
            let _slots = (slot, client_slot);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let stop_requested = async {
                let _ = stopping.wait_for(|stopping| *stopping).await;
            };
            let stopped = tokio::select! {
                _ = connection.as_mut() => false,
                () = stop_requested => true,
            };
            if stopped {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
        connections.abort_all();
    }
}
