//! Wiring of `/metrics`: one registry per started service, the endpoint the API serves
//! it from, and `metrics.listen`, a second listener serving only it (for `magnumd
//! conductor`, which has no API).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use magnum_api::{KeystoneAuth, MetricsEndpoint};
use magnum_driver::DriverRegistry;
use magnum_metrics::Metrics;
use magnum_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::ConnectionLimits;

/// Connections the metrics listener serves at once (scrapers are few).
const MAX_METRICS_CONNECTIONS: usize = 16;

/// The endpoint of this process's metrics, with admin tokens checked by this process's
/// Keystone client when `metrics.admin_token` is set.
pub(crate) fn endpoint(
    config: &Config,
    metrics: &Arc<Metrics>,
    store: &Store,
    drivers: &DriverRegistry,
    keystone: Option<&Arc<magnum_keystone::Keystone>>,
) -> anyhow::Result<Arc<MetricsEndpoint>> {
    let access = config.metrics_access()?;
    let admin_tokens = access.admin_tokens;
    let endpoint = MetricsEndpoint::new(metrics.clone(), store.clone(), drivers, access);
    let endpoint = match keystone {
        Some(keystone) if admin_tokens => endpoint.with_admin_tokens(
            Arc::new(KeystoneAuth::new(
                keystone.clone(),
                &config.www_authenticate_uri(),
            )),
            config.policy()?,
        ),
        _ => endpoint,
    };
    Ok(Arc::new(endpoint))
}

/// Serves `GET /metrics` alone on `metrics.listen`, when it is set.
pub(crate) async fn listen(
    config: &Config,
    endpoint: &Arc<MetricsEndpoint>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<(SocketAddr, JoinHandle<()>)>> {
    let Some(address) = config.metrics_listen_address()? else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("metrics.listen: cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    let limits = ConnectionLimits {
        max_connections: MAX_METRICS_CONNECTIONS,
        max_connections_per_client: MAX_METRICS_CONNECTIONS,
        header_timeout: std::time::Duration::from_secs(config.api.header_timeout),
        write_timeout: std::time::Duration::from_secs(config.api.header_timeout),
        max_header_bytes: 16 * 1024,
        shutdown_grace: std::time::Duration::from_secs(1),
    };
    let router = magnum_api::metrics_router(endpoint.clone());
    let task = tokio::spawn(crate::serve_api(listener, router, limits, stop));
    tracing::info!(address = %bound, "metrics listening");
    Ok(Some((bound, task)))
}
