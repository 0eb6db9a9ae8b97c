//! The Magnum v1 HTTP API. This is the only crate that serves HTTP.
//!
//! One fallback handler ([`routing::dispatch`]) does upstream's routing by hand, because the
//! contract has quirks a declarative router cannot express: unversioned aliases, trailing
//! slashes, a fixed `Allow` header, and errors whose shape depends on whether they come
//! from routing or from a controller. Handlers validate, consult policy, read or write the
//! store and answer; they never call a driver for anything that changes the world.

mod auth;
mod cache;
mod context;
mod dashboard;
mod error;
mod events;
mod handlers;
mod input;
mod lookup;
mod metrics;
mod microversion;
mod openapi;
mod pagination;
mod patch;
mod routes;
mod routing;
mod views;

use std::sync::Arc;

use magnum_domain::cluster_template::TemplateRules;
use magnum_domain::policy::Policy;
use magnum_driver::DriverRegistry;
use magnum_store::Store;

pub use auth::{AuthFailure, Authenticator, KeystoneAuth, NoAuth};
pub use dashboard::{BundleSize, Dashboard};
pub use events::{EventHub, EventStreamSettings};
pub use metrics::{metrics_router, MetricsAccess, MetricsEndpoint, Network};
pub use microversion::{MAX_VERSION, MIN_VERSION};

/// Settings the API takes from configuration.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Upper bound of `limit` on paginated lists.
    pub max_limit: u32,
    /// A service whose last heartbeat is older than this is reported `down`.
    pub service_down_time_seconds: i64,
    pub template_rules: TemplateRules,
    /// Bytes of encoded read responses to keep; 0 disables the cache.
    pub response_cache_bytes: usize,
    /// A path the API is served under, such as `/container-infra` (empty: none).
    pub path_prefix: String,
    /// Clusters a project may have when no quota row says otherwise.
    pub max_clusters_per_project: i64,
    /// Whether `X-Forwarded-Proto/-Host/-Prefix` come from a proxy we trust.
    pub trust_proxy_headers: bool,
    /// Refuse what a web page could make a browser send (noauth, where being reachable is
    /// being trusted): a Host that is not an address or `localhost` (DNS rebinding), an
    /// `Origin` other than the Host, a body without a JSON content type.
    pub browser_guard: bool,
    /// Host names the guard accepts besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// How long a client has to send a request body.
    pub body_timeout: std::time::Duration,
    /// Event streams (`watch=true`).
    pub event_streams: EventStreamSettings,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            max_limit: 1000,
            service_down_time_seconds: 180,
            template_rules: TemplateRules::default(),
            response_cache_bytes: 64 * 1024 * 1024,
            path_prefix: String::new(),
            max_clusters_per_project: 20,
            trust_proxy_headers: false,
            browser_guard: false,
            allowed_hosts: Vec::new(),
            body_timeout: std::time::Duration::from_secs(30),
            event_streams: EventStreamSettings::default(),
        }
    }
}

/// Everything a request handler can use.
pub struct AppState {
    pub store: Store,
    pub drivers: DriverRegistry,
    /// Notified after operations are stored, to wake a conductor in this process at once.
    pub operations_enqueued: Arc<tokio::sync::Notify>,
    /// The clusters' certificate authorities.
    pub certificates: magnum_keystore::ClusterCertificates,
    pub policy: Policy,
    pub authenticator: Arc<dyn Authenticator>,
    pub settings: ApiSettings,
    /// `GET /metrics` and the request metrics.
    pub metrics: Arc<MetricsEndpoint>,
    /// The web dashboard at `/dashboard/`; `None`: not served.
    pub dashboard: Option<Arc<Dashboard>>,
}

/// The API as an axum router.
pub fn router(state: AppState) -> axum::Router {
    router_with_events(state).0
}

/// The API as an axum router, with its event hub (to end its streams when stopping).
pub fn router_with_events(state: AppState) -> (axum::Router, Arc<EventHub>) {
    let cache = cache::ResponseCache::new(state.settings.response_cache_bytes);
    let events = EventHub::new(
        state.store.clone(),
        state.settings.event_streams.clone(),
        state.metrics.metrics().event_streams.clone(),
    );
    if let Some(dashboard) = state.dashboard.as_ref().filter(|d| d.sessions().is_some()) {
        tokio::spawn(dashboard::follow_ended_sessions(
            Arc::downgrade(dashboard),
            state.store.clone(),
        ));
    }
    let router = axum::Router::new()
        .fallback(routing::dispatch)
        .with_state(Arc::new(Shared {
            state,
            cache,
            events: events.clone(),
        }));
    (router, events)
}

/// What the router holds: the application state and process-local caches.
pub(crate) struct Shared {
    pub state: AppState,
    pub cache: cache::ResponseCache,
    pub events: Arc<EventHub>,
}
