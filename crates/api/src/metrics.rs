//! `GET /metrics`: who may read it, what the request metrics are labelled with, and the
//! database-wide gauges read when scraped.
//!
//! Labels are bounded: a request's route is one of [`crate::routes::ROUTE_TEMPLATES`] (or
//! `unmatched`), its method one of HTTP's (or `other`), its status a known code (or its
//! class). The queue and cluster gauges are read from the store at most once a second,
//! whatever the number of scrapers: a scrape within a second of the last read is answered
//! from the gauges as they are.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{request::Parts, HeaderValue, Method, Request, Response, StatusCode};
use magnum_domain::cluster::{ClusterStatus, HealthStatus};
use magnum_domain::policy::Policy;
use magnum_metrics::{method_label, status_label, ClusterCount, Metrics};
use magnum_store::Store;

use crate::auth::{AuthFailure, Authenticator};
use crate::context::new_request_id;
use crate::error::routing_error;
use crate::routes::ROUTE_TEMPLATES;

/// The label of requests for paths no route serves.
pub const UNMATCHED: &str = "unmatched";

/// How long the database-wide gauges are served before they are read again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// How long one read of the database-wide gauges may take before the scrape is answered
/// with the previous values.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(3);

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`; an address alone is
/// one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network (CIDR)"))?;
        let width = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= width)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {width}"))?,
            None => width,
        };
        Ok(Self {
            address: address.to_canonical(),
            prefix,
        })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        match (self.address, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct MetricsAccess {
    /// Besides loopback peers, who always may: these networks, without credentials.
    pub networks: Vec<Network>,
    /// Anyone else with an admin's token (`X-Auth-Token`, `context_is_admin`).
    pub admin_tokens: bool,
}

/// What a peer gets before any credential is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Serve,
    NeedsAdminToken,
    Refuse,
}

/// Headers a proxy adds: behind one, the peer is the proxy (often on loopback), not the
/// client, so its address proves nothing.
const PROXY_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

impl MetricsAccess {
    /// `peer`: the connection's address, none when a proxy forwarded the request.
    fn decide(&self, peer: Option<IpAddr>) -> Decision {
        let open = peer.is_some_and(|peer| {
            peer.to_canonical().is_loopback()
                || self.networks.iter().any(|network| network.contains(peer))
        });
        if open {
            Decision::Serve
        } else if self.admin_tokens {
            Decision::NeedsAdminToken
        } else {
            Decision::Refuse
        }
    }
}

/// The metrics of one process and what it needs to serve them.
pub struct MetricsEndpoint {
    metrics: Arc<Metrics>,
    store: Store,
    /// The enabled drivers' names: clusters of any other are counted as `other`.
    drivers: Vec<String>,
    access: MetricsAccess,
    /// How admin tokens are checked, when they are accepted.
    admin: Option<(Arc<dyn Authenticator>, Policy)>,
    /// When the database-wide gauges were last read; held while they are read.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

impl MetricsEndpoint {
    pub fn new(
        metrics: Arc<Metrics>,
        store: Store,
        drivers: &magnum_driver::DriverRegistry,
        access: MetricsAccess,
    ) -> Self {
        Self {
            metrics,
            store,
            drivers: drivers
                .drivers()
                .iter()
                .map(|driver| driver.name().to_owned())
                .collect(),
            access,
            admin: None,
            refreshed: tokio::sync::Mutex::new(None),
        }
    }

    /// Checks the tokens of peers outside the open networks with `authenticator`; an
    /// identity `policy` takes for an admin (`context_is_admin`) is served.
    pub fn with_admin_tokens(
        mut self,
        authenticator: Arc<dyn Authenticator>,
        policy: Policy,
    ) -> Self {
        self.admin = Some((authenticator, policy));
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answers `GET /metrics` (any other method: 405).
    pub(crate) async fn answer(&self, parts: &Parts, request_id: &str) -> Response<Body> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let mut refusal = routing_error(StatusCode::METHOD_NOT_ALLOWED, "", true, request_id);
            refusal
                .headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD"));
            return refusal;
        }
        let proxied = PROXY_HEADERS
            .iter()
            .any(|name| parts.headers.contains_key(*name));
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip())
            .filter(|_| !proxied);
        match self.access.decide(peer) {
            Decision::Serve => {}
            Decision::Refuse => {
                return routing_error(
                    StatusCode::FORBIDDEN,
                    "Metrics are served only to loopback clients and the networks in \
                     metrics.allowed_networks, and not through proxies.",
                    true,
                    request_id,
                )
            }
            Decision::NeedsAdminToken => {
                if let Some(refusal) = self.refuse_token(parts, request_id).await {
                    return refusal;
                }
            }
        }
        self.refresh().await;
        let mut response = Response::new(Body::from(self.metrics.encode()));
        let headers = response.headers_mut();
        headers.insert(
            "content-type",
            HeaderValue::from_static(magnum_metrics::CONTENT_TYPE),
        );
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.insert(crate::context::REQUEST_ID_HEADER, value);
        }
        response
    }

    /// Why a peer outside the open networks is not served: no token (401), a token that is
    /// not an admin's (403), or Keystone away (503).
    async fn refuse_token(&self, parts: &Parts, request_id: &str) -> Option<Response<Body>> {
        let Some((authenticator, policy)) = &self.admin else {
            return Some(routing_error(
                StatusCode::FORBIDDEN,
                "Metrics cannot check tokens here.",
                true,
                request_id,
            ));
        };
        let unauthenticated = || {
            routing_error(
                StatusCode::UNAUTHORIZED,
                "Metrics need an admin's token (X-Auth-Token) from this address.",
                true,
                request_id,
            )
        };
        if !parts.headers.contains_key("x-auth-token") {
            return Some(unauthenticated());
        }
        match authenticator.authenticate(&parts.headers).await {
            Ok(identity) if policy.is_admin(&identity) => None,
            Ok(_) => Some(routing_error(
                StatusCode::FORBIDDEN,
                "Metrics are served only to admins from this address.",
                true,
                request_id,
            )),
            Err(AuthFailure::Unauthenticated { .. }) => Some(unauthenticated()),
            Err(AuthFailure::Unavailable) => Some(routing_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The identity service is unavailable. Retry later.",
                true,
                request_id,
            )),
        }
    }

    /// Reads the pool at every scrape, the queue and clusters at most every
    /// [`REFRESH_EVERY`] (a failed read too: an outage is not hammered).
    async fn refresh(&self) {
        let pool = self.store.pool_usage();
        self.metrics.state.set_pool(pool.open, pool.idle, pool.max);
        let mut refreshed = self.refreshed.lock().await;
        if refreshed.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
            return;
        }
        let read = tokio::time::timeout(REFRESH_TIMEOUT, async {
            let queue = self.store.queue_summary().await?;
            let clusters = self.store.cluster_tallies().await?;
            Ok::<_, magnum_store::StoreError>((queue, clusters))
        })
        .await;
        match read {
            Ok(Ok((queue, clusters))) => {
                let now = magnum_domain::time::Timestamp::now().unix_seconds();
                let age = queue
                    .oldest_pending_created_at
                    .map_or(0, |created| now.saturating_sub(created));
                let state = &self.metrics.state;
                state.set_queue(queue.pending, queue.running, age);
                state.set_clusters(&self.cluster_counts(&clusters));
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "metrics: cannot read the queue and clusters");
                self.metrics.state.refresh_failed();
            }
            Err(_) => {
                tracing::warn!("metrics: reading the queue and clusters took too long");
                self.metrics.state.refresh_failed();
            }
        }
        *refreshed = Some(Instant::now());
    }

    /// Tallies as bounded labels: a driver not enabled here, a status or health the domain
    /// does not know are `other` (and added up).
    fn cluster_counts(&self, tallies: &[magnum_store::ClusterTally]) -> Vec<ClusterCount> {
        let mut counts: BTreeMap<(String, &'static str, &'static str), i64> = BTreeMap::new();
        for tally in tallies {
            let driver = tally
                .driver
                .as_deref()
                .filter(|driver| self.drivers.iter().any(|known| known == driver))
                .unwrap_or("other")
                .to_owned();
            let status = tally
                .status
                .parse::<ClusterStatus>()
                .map_or("other", ClusterStatus::as_str);
            let health = match tally.health_status.as_deref() {
                None => "none",
                Some(health) => health
                    .parse::<HealthStatus>()
                    .map_or("other", HealthStatus::as_str),
            };
            *counts.entry((driver, status, health)).or_default() += tally.count;
        }
        counts
            .into_iter()
            .map(|((driver, status, health), count)| ClusterCount {
                driver,
                status,
                health,
                count,
            })
            .collect()
    }
}

/// Records one answered request of the API (called by the router for every request).
pub(crate) fn record_request(
    endpoint: &MetricsEndpoint,
    method: &Method,
    path: &str,
    path_prefix: &str,
    status: StatusCode,
    elapsed: Duration,
) {
    endpoint.metrics.http.record(
        route_label(path, path_prefix),
        method_label(method.as_str()),
        status_label(status.as_u16()),
        elapsed,
    );
}

/// Segments of the longest route template; a path with more is `unmatched`.
const MAX_SEGMENTS: usize = 8;

/// A route template and its segments (`None`: any one segment).
type SplitTemplate = (&'static str, Vec<Option<&'static str>>);

/// The route templates, split once.
static TEMPLATES: std::sync::LazyLock<Vec<SplitTemplate>> = std::sync::LazyLock::new(|| {
    ROUTE_TEMPLATES
        .iter()
        .map(|template| {
            let parts = template
                .split('/')
                .filter(|part| !part.is_empty())
                .map(|part| (!(part.starts_with('{') && part.ends_with('}'))).then_some(part))
                .collect();
            (*template, parts)
        })
        .collect()
});

/// The route template a path is served by, as the router sees it (the configured prefix
/// stripped, empty segments dropped, `/v1` implied); [`UNMATCHED`] for any other path.
/// Allocates nothing.
pub fn route_label(path: &str, path_prefix: &str) -> &'static str {
    let mut path = path;
    if !path_prefix.is_empty() {
        if let Some(rest) = path.strip_prefix(path_prefix) {
            if rest.is_empty() || rest.starts_with('/') {
                path = rest;
            }
        }
    }
    if path == "/healthcheck" {
        return "/healthcheck";
    }
    if path == "/metrics" {
        return "/metrics";
    }
    let mut all = path.split('/').filter(|s| !s.is_empty()).peekable();
    let Some(first) = all.next() else {
        return "/";
    };
    if first == ".json" && all.peek().is_none() {
        return "/";
    }
    // Paths without the version prefix are served as if they had it.
    let mut segments = ["v1"; MAX_SEGMENTS];
    let mut count = 1;
    let rest = std::iter::once(first)
        .filter(|first| *first != "v1" && *first != "v1.json")
        .chain(all);
    for segment in rest {
        if count == MAX_SEGMENTS {
            return UNMATCHED;
        }
        segments[count] = segment;
        count += 1;
    }
    let segments = &segments[..count];
    TEMPLATES
        .iter()
        .find(|(_, parts)| {
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(segments)
                    .all(|(part, segment)| part.is_none_or(|literal| literal == *segment))
        })
        .map_or(UNMATCHED, |(template, _)| template)
}

/// A server of `GET /metrics` alone, for a process without the API (`magnumd conductor`
/// with `metrics.listen`): everything else is a 404 in Magnum's envelope.
pub fn metrics_router(endpoint: Arc<MetricsEndpoint>) -> axum::Router {
    axum::Router::new()
        .fallback(
            |axum::extract::State(endpoint): axum::extract::State<Arc<MetricsEndpoint>>,
             request: Request<Body>| async move {
                let started = Instant::now();
                let request_id = new_request_id();
                let (parts, _) = request.into_parts();
                let response = if parts.uri.path() == "/metrics" {
                    endpoint.answer(&parts, &request_id).await
                } else {
                    routing_error(StatusCode::NOT_FOUND, "", true, &request_id)
                };
                record_request(
                    &endpoint,
                    &parts.method,
                    parts.uri.path(),
                    "",
                    response.status(),
                    started.elapsed(),
                );
                response
            },
        )
        .with_state(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_and_anything_else_is_unmatched() {
        for (path, expected) in [
            ("/", "/"),
            ("/v1", "/v1"),
            ("/v1/", "/v1"),
            ("/v1.json", "/v1"),
            ("/healthcheck", "/healthcheck"),
            ("/metrics", "/metrics"),
            ("/v1/clusters", "/v1/clusters"),
            ("/clusters/", "/v1/clusters"),
            ("/v1/clusters/detail", "/v1/clusters/detail"),
            (
                "/v1/clusters/6f0a3a3e-2d43-4ae4-8b53-34b9f1b3f2e4",
                "/v1/clusters/{cluster_ident}",
            ),
            (
                "/v1/clusters/c1/actions/resize",
                "/v1/clusters/{cluster_ident}/actions/resize",
            ),
            (
                "/v1/clusters/c1/nodegroups",
                "/v1/clusters/{cluster_ident}/nodegroups",
            ),
            (
                "/v1/clusters/c1/nodegroups/ng",
                "/v1/clusters/{cluster_ident}/nodegroups/{nodegroup_ident}",
            ),
            (
                "/v1/clustertemplates/t1",
                "/v1/clustertemplates/{clustertemplate_ident}",
            ),
            ("/v1/quotas/p/Cluster", "/v1/quotas/{project_id}/{resource}"),
            ("/v1/certificates/c1", "/v1/certificates/{cluster_ident}"),
            ("/v1/credentials/c1", "/v1/credentials/{cluster_ident}"),
            ("/v1/mservices", "/v1/mservices"),
            ("/v1/stats", "/v1/stats"),
            (
                "/v1/clusters/c1/events",
                "/v1/clusters/{cluster_ident}/events",
            ),
            ("/v1/events", "/v1/events"),
            ("/v1/openapi.json", "/v1/openapi.json"),
            ("/v1/nothing", UNMATCHED),
            ("/v1/clusters/a/b/c/d/e", UNMATCHED),
            ("/v1/clusters/c1/actions/explode", UNMATCHED),
            ("/healthcheck/", UNMATCHED),
            ("/wp-login.php", UNMATCHED),
        ] {
            assert_eq!(route_label(path, ""), expected, "{path}");
        }
        assert_eq!(
            route_label("/container-infra/v1/clusters/x", "/container-infra"),
            "/v1/clusters/{cluster_ident}"
        );
        assert_eq!(
            route_label("/container-infra/metrics", "/container-infra"),
            "/metrics"
        );
    }

    #[test]
    fn every_template_labels_its_own_paths() {
        for template in ROUTE_TEMPLATES.iter() {
            let path: String = template
                .split('/')
                .map(|part| if part.starts_with('{') { "x1" } else { part })
                .collect::<Vec<_>>()
                .join("/");
            assert_eq!(route_label(&path, ""), *template, "{path}");
        }
    }

    #[test]
    fn uuids_and_random_paths_never_become_labels() {
        let mut labels = std::collections::BTreeSet::new();
        for index in 0..2000 {
            let uuid = uuid::Uuid::new_v4();
            for path in [
                format!("/v1/clusters/{uuid}"),
                format!("/{uuid}/{index}"),
                format!("/v1/clusters/{uuid}/nodegroups/{index}/x"),
                format!("/v1/{index}"),
            ] {
                let label = route_label(&path, "");
                assert!(!label.contains(&uuid.to_string()), "{label}");
                labels.insert(label);
            }
        }
        assert!(labels.len() <= 4, "{labels:?}");
        assert!(labels.len() <= ROUTE_TEMPLATES.len() + 1);
    }

    #[test]
    fn networks_parse_and_match() {
        let network = Network::parse("10.1.0.0/16").unwrap();
        assert!(network.contains("10.1.200.3".parse().unwrap()));
        assert!(!network.contains("10.2.0.1".parse().unwrap()));
        assert!(
            network.contains("::ffff:10.1.0.9".parse().unwrap()),
            "mapped IPv4"
        );
        let host = Network::parse("192.0.2.7").unwrap();
        assert!(host.contains("192.0.2.7".parse().unwrap()));
        assert!(!host.contains("192.0.2.8".parse().unwrap()));
        let everyone = Network::parse("0.0.0.0/0").unwrap();
        assert!(everyone.contains("203.0.113.1".parse().unwrap()));
        assert!(!everyone.contains("2001:db8::1".parse().unwrap()));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "10.0.0/8",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_is_open_by_default() {
        let closed = MetricsAccess::default();
        for peer in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                closed.decide(Some(peer.parse().unwrap())),
                Decision::Serve,
                "{peer}"
            );
        }
        for peer in ["10.0.0.1", "192.168.1.1", "2001:db8::1", "0.0.0.0"] {
            assert_eq!(
                closed.decide(Some(peer.parse().unwrap())),
                Decision::Refuse,
                "{peer}"
            );
        }
        assert_eq!(closed.decide(None), Decision::Refuse, "no peer known");
        let opened = MetricsAccess {
            networks: vec![Network::parse("10.0.0.0/8").unwrap()],
            admin_tokens: true,
        };
        assert_eq!(
            opened.decide(Some("10.3.4.5".parse().unwrap())),
            Decision::Serve
        );
        assert_eq!(
            opened.decide(Some("192.0.2.1".parse().unwrap())),
            Decision::NeedsAdminToken
        );
    }

    /// The endpoint over an in-memory database, admin tokens checked by noauth headers
    /// (`X-Roles`) so that every refusal can be seen without Keystone.
    async fn endpoint(access: MetricsAccess) -> MetricsEndpoint {
        let store = Store::connect("sqlite::memory:", 1).await.unwrap();
        store.migrate().await.unwrap();
        let identity = magnum_domain::Identity::new("p", "u", &["member"]);
        MetricsEndpoint::new(
            Arc::new(Metrics::new()),
            store,
            &magnum_driver::DriverRegistry::new(Vec::new()),
            access,
        )
        .with_admin_tokens(
            Arc::new(crate::auth::NoAuth::new(identity)),
            Policy::default(),
        )
    }

    fn scrape(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut request = Request::get("/metrics")
            .extension(ConnectInfo(SocketAddr::new(peer.parse().unwrap(), 40000)));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    async fn answer(endpoint: &MetricsEndpoint, parts: Parts) -> (u16, String) {
        let response = endpoint.answer(&parts, "req-1").await;
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn strangers_get_the_error_envelope_and_admins_the_metrics() {
        let closed = endpoint(MetricsAccess::default()).await;
        let (status, body) = answer(&closed, scrape("127.0.0.1", &[])).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("magnum_operations_pending 0"), "{body}");
        assert!(body.ends_with("# EOF\n"));
        let (status, body) = answer(&closed, scrape("192.0.2.1", &[])).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("metrics.allowed_networks"), "{body}");
        assert!(body.starts_with("{\"errors\": [{"), "{body}");
        // Admin tokens are not accepted unless configured, whatever is sent.
        let admin = [("x-auth-token", "t"), ("x-roles", "admin")];
        assert_eq!(answer(&closed, scrape("192.0.2.1", &admin)).await.0, 403);

        let tokens = endpoint(MetricsAccess {
            networks: vec![Network::parse("198.51.100.0/24").unwrap()],
            admin_tokens: true,
        })
        .await;
        assert_eq!(answer(&tokens, scrape("198.51.100.20", &[])).await.0, 200);
        let (status, body) = answer(&tokens, scrape("192.0.2.1", &[])).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("X-Auth-Token"), "{body}");
        let member = [("x-auth-token", "t"), ("x-roles", "member")];
        assert_eq!(answer(&tokens, scrape("192.0.2.1", &member)).await.0, 403);
        let (status, body) = answer(&tokens, scrape("192.0.2.1", &admin)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("magnum_db_pool_max_connections 1"), "{body}");
        // A request without a known peer is nobody's, nor one a proxy on loopback forwarded.
        let unknown = Request::get("/metrics").body(()).unwrap().into_parts().0;
        assert_eq!(answer(&closed, unknown).await.0, 403);
        for header in ["X-Forwarded-For", "Forwarded", "X-Real-IP"] {
            let proxied = scrape("127.0.0.1", &[(header, "for=203.0.113.9")]);
            assert_eq!(answer(&closed, proxied).await.0, 403, "{header}");
            let proxied = scrape("198.51.100.20", &[(header, "203.0.113.9")]);
            assert_eq!(answer(&tokens, proxied).await.0, 401, "{header}");
        }
        let post = Request::post("/metrics")
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let refused = closed.answer(&post, "req-2").await;
        assert_eq!(refused.status(), 405);
        assert_eq!(refused.headers()["allow"], "GET, HEAD");
    }

    /// A measurement, not a check (docs/PERFORMANCE.md): what labelling and recording one
    /// request costs.
    #[test]
    #[ignore = "a measurement: cargo test --release -p magnum-api -- --ignored --nocapture recording_cost"]
    fn recording_cost() {
        let metrics = Metrics::new();
        let paths = [
            "/v1/clusters",
            "/v1/clusters/6f0a3a3e-2d43-4ae4-8b53-34b9f1b3f2e4/nodegroups/default-worker",
            "/v1/clustertemplates/6f0a3a3e-2d43-4ae4-8b53-34b9f1b3f2e4",
            "/no/such/path",
        ];
        let rounds = 1_000_000;
        let started = Instant::now();
        for round in 0..rounds {
            metrics.http.record(
                route_label(paths[round % paths.len()], ""),
                method_label("GET"),
                status_label(200),
                Duration::from_micros(round as u64 % 5000),
            );
        }
        let per_request = started.elapsed() / rounds as u32;
        let started = Instant::now();
        let mut labelled = 0;
        for round in 0..rounds {
            labelled += route_label(paths[round % paths.len()], "").len();
        }
        let labelling = started.elapsed() / rounds as u32;
        assert!(labelled > 0);
        let started = Instant::now();
        for round in 0..rounds {
            metrics.http.record(
                "/v1/clusters",
                "GET",
                "200",
                Duration::from_micros(round as u64 % 5000),
            );
        }
        let recording = started.elapsed() / rounds as u32;
        println!("route_label alone: {labelling:?}; record alone: {recording:?}");
        let started = Instant::now();
        let text = metrics.encode();
        println!(
            "route_label + record: {per_request:?} a request; encoding {} bytes: {:?}",
            text.len(),
            started.elapsed()
        );
    }
}
