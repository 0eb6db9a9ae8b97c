//! The metrics magnumd exports at `GET /metrics`, in Prometheus's text exposition format
//! (OpenMetrics 1.0).
//!
//! One [`Metrics`] per process (per `magnumd::start`, so that tests starting several
//! services in one process keep them apart) owns the registry; the crates that record — the
//! API, the conductor, Keystone and the local driver — are handed clones of the small handle
//! they need ([`HttpMetrics`], [`OperationMetrics`], [`KeystoneMetrics`],
//! [`DriverStepMetrics`]) when magnumd wires them. A handle's `Default` is registered
//! nowhere: a crate used without magnumd records into it and nobody reads it. Only the API
//! crate serves the registry (it fills [`StateGauges`] from the database first).
//!
//! Every label value is a `&'static str` (the clusters' driver name is picked from the
//! enabled drivers' names): no label can carry a uuid, a project, a name or a raw path, so
//! the exposition is bounded whatever clients send or the database holds.

use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What `GET /metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label set whose names and values are fixed at compile time.
pub type Labels<const N: usize> = [(&'static str, &'static str); N];

type Histograms<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// Seconds: 1 ms to 10 s (requests, Keystone round trips).
const FAST_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Seconds: 100 ms to 2 min (a node's dockerd start, a swarm init or join).
const STEP_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
/// Seconds: 1 s to 2 h (an operation, from claim to outcome).
const OPERATION_BUCKETS: [f64; 11] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

fn fast_histogram() -> Histogram {
    Histogram::new(FAST_BUCKETS)
}

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

fn operation_histogram() -> Histogram {
    Histogram::new(OPERATION_BUCKETS)
}

/// HTTP requests the API answered.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<Labels<3>, Counter>,
    duration: Histograms<2>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(fast_histogram),
        }
    }
}

impl HttpMetrics {
    /// One answered request: `route` is a route template (never a raw path).
    pub fn record(
        &self,
        route: &'static str,
        method: &'static str,
        status: &'static str,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&[("route", route), ("method", method), ("status", status)])
            .inc();
        self.duration
            .get_or_create(&[("route", route), ("method", method)])
            .observe(elapsed.as_secs_f64());
    }
}

/// How an operation a conductor ran ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationOutcome {
    Succeeded,
    Failed,
    /// Stopped without an outcome (lease lost, database away, cluster being deleted): it is
    /// run again, by this conductor or another.
    Interrupted,
}

impl OperationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationOutcome::Succeeded => "succeeded",
            OperationOutcome::Failed => "failed",
            OperationOutcome::Interrupted => "interrupted",
        }
    }
}

/// Operations this process's conductor carried to an end.
#[derive(Clone)]
pub struct OperationMetrics {
    finished: Family<Labels<2>, Counter>,
    duration: Histograms<2>,
}

impl Default for OperationMetrics {
    fn default() -> Self {
        Self {
            finished: Family::default(),
            duration: Family::new_with_constructor(operation_histogram),
        }
    }
}

impl OperationMetrics {
    /// `action` is the operation's kind (`create_cluster`, …).
    pub fn record(&self, action: &'static str, outcome: OperationOutcome, elapsed: Duration) {
        let labels = [("action", action), ("outcome", outcome.as_str())];
        self.finished.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// How long a driver's steps take (the local driver: a node's dockerd start, swarm init
/// and join).
#[derive(Clone)]
pub struct DriverStepMetrics {
    duration: Histograms<3>,
}

impl Default for DriverStepMetrics {
    fn default() -> Self {
        Self {
            duration: Family::new_with_constructor(step_histogram),
        }
    }
}

impl DriverStepMetrics {
    /// Times one step; [`StepTimer::finish`] records it.
    pub fn start(&self, driver: &'static str, step: &'static str) -> StepTimer {
        StepTimer {
            metrics: self.clone(),
            driver,
            step,
            started: Instant::now(),
        }
    }
}

/// A step being timed.
pub struct StepTimer {
    metrics: DriverStepMetrics,
    driver: &'static str,
    step: &'static str,
    started: Instant,
}

impl StepTimer {
    pub fn finish(self, succeeded: bool) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.metrics
            .duration
            .get_or_create(&[
                ("driver", self.driver),
                ("step", self.step),
                ("outcome", outcome),
            ])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// What Keystone's token validation costs.
#[derive(Clone)]
pub struct KeystoneMetrics {
    validation: Histograms<1>,
    cache: Family<Labels<1>, Counter>,
}

impl Default for KeystoneMetrics {
    fn default() -> Self {
        Self {
            validation: Family::new_with_constructor(fast_histogram),
            cache: Family::default(),
        }
    }
}

impl KeystoneMetrics {
    /// A token answered from the cache (`hit`) or asked of Keystone (`miss`).
    pub fn cache_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache.get_or_create(&[("result", result)]).inc();
    }

    /// A round trip to Keystone: `valid`, `invalid` or `unavailable`.
    pub fn validated(&self, outcome: &'static str, elapsed: Duration) {
        self.validation
            .get_or_create(&[("outcome", outcome)])
            .observe(elapsed.as_secs_f64());
    }
}

/// Clusters of one (driver, status, health) combination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCount {
    /// One of the enabled drivers' names, or `other`.
    pub driver: String,
    pub status: &'static str,
    pub health: &'static str,
    pub count: i64,
}

/// Gauges read from the database when scraped (the API crate sets them).
#[derive(Clone, Default)]
pub struct StateGauges {
    pending: Gauge,
    running: Gauge,
    oldest_pending_age: Gauge,
    clusters: Family<[(&'static str, String); 3], Gauge>,
    pool: Family<Labels<1>, Gauge>,
    pool_max: Gauge,
    refresh_failures: Counter,
}

impl StateGauges {
    /// The operations queue: pending and running operations, and how long the oldest
    /// pending one has waited (0 with none).
    pub fn set_queue(&self, pending: i64, running: i64, oldest_pending_age_seconds: i64) {
        self.pending.set(pending);
        self.running.set(running);
        self.oldest_pending_age
            .set(oldest_pending_age_seconds.max(0));
    }

    /// Replaces every cluster count (a combination no longer seen disappears).
    pub fn set_clusters(&self, counts: &[ClusterCount]) {
        self.clusters.clear();
        for count in counts {
            self.clusters
                .get_or_create(&[
                    ("driver", count.driver.clone()),
                    ("status", count.status.to_owned()),
                    ("health", count.health.to_owned()),
                ])
                .set(count.count);
        }
    }

    /// The database pool: connections open, of which idle, and the most it opens.
    pub fn set_pool(&self, open: u32, idle: usize, max: u32) {
        let open = i64::from(open);
        let idle = i64::try_from(idle).unwrap_or(i64::MAX).min(open);
        self.pool.get_or_create(&[("state", "idle")]).set(idle);
        self.pool
            .get_or_create(&[("state", "in_use")])
            .set(open - idle);
        self.pool_max.set(i64::from(max));
    }

    /// A scrape whose database read failed (the gauges keep their last values).
    pub fn refresh_failed(&self) {
        self.refresh_failures.inc();
    }
}

/// What the event streams of this process do.
#[derive(Clone, Default)]
pub struct EventStreamMetrics {
    open: Gauge,
    lagged: Counter,
    gaps: Counter,
}

impl EventStreamMetrics {
    pub fn opened(&self) {
        self.open.inc();
    }

    pub fn closed(&self) {
        self.open.dec();
    }

    /// A stream fell behind the broadcast and reads what it missed from the table.
    pub fn lagged(&self) {
        self.lagged.inc();
    }

    /// A stream was told that retention dropped events it should have sent.
    pub fn gap(&self) {
        self.gaps.inc();
    }
}

/// Every metric of one magnumd process.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub operations: OperationMetrics,
    pub driver_steps: DriverStepMetrics,
    pub keystone: KeystoneMetrics,
    pub state: StateGauges,
    pub event_streams: EventStreamMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("magnum");
        let http = HttpMetrics::default();
        let operations = OperationMetrics::default();
        let driver_steps = DriverStepMetrics::default();
        let keystone = KeystoneMetrics::default();
        let state = StateGauges::default();
        let event_streams = EventStreamMetrics::default();
        registry.register(
            "event_streams_open",
            "Event streams (?watch=true) this process serves now",
            event_streams.open.clone(),
        );
        registry.register(
            "event_stream_lags",
            "Times an event stream fell behind and read what it missed from the database",
            event_streams.lagged.clone(),
        );
        registry.register(
            "event_stream_gaps",
            "Times an event stream was told that retention dropped events it should have sent",
            event_streams.gaps.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            http.duration.clone(),
        );
        registry.register(
            "operations",
            "Operations this process's conductor ended, by action and outcome",
            operations.finished.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "Time from claiming an operation to its outcome, by action and outcome",
            operations.duration.clone(),
        );
        registry.register(
            "operations_pending",
            "Operations waiting in the queue (database-wide)",
            state.pending.clone(),
        );
        registry.register(
            "operations_running",
            "Operations a conductor holds (database-wide)",
            state.running.clone(),
        );
        registry.register(
            "operations_oldest_pending_age_seconds",
            "How long the oldest pending operation has waited since it was enqueued (0: none)",
            state.oldest_pending_age.clone(),
        );
        registry.register(
            "clusters",
            "Clusters by driver, status and health (database-wide)",
            state.clusters.clone(),
        );
        registry.register(
            "driver_step_duration_seconds",
            "Time a driver step took, by driver, step and outcome",
            driver_steps.duration.clone(),
        );
        registry.register(
            "keystone_token_validation_duration_seconds",
            "Time Keystone took to validate a token, by outcome",
            keystone.validation.clone(),
        );
        registry.register(
            "keystone_token_cache_lookups",
            "Tokens looked up in the validation cache, by result (hit, miss)",
            keystone.cache.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database connections of this process's pool, by state (idle, in_use)",
            state.pool.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "The most connections this process's pool opens",
            state.pool_max.clone(),
        );
        registry.register(
            "metrics_refresh_failures",
            "Scrapes whose database read failed (the database-wide gauges kept their values)",
            state.refresh_failures.clone(),
        );
        Self {
            registry,
            http,
            operations,
            driver_steps,
            keystone,
            state,
            event_streams,
        }
    }

    /// The whole exposition, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

macro_rules! opaque_debug {
    ($($name:ident),*) => {
        $(impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($name))
            }
        })*
    };
}

opaque_debug!(
    HttpMetrics,
    OperationMetrics,
    DriverStepMetrics,
    KeystoneMetrics,
    StateGauges,
    Metrics
);

/// A method as a label: the ones HTTP defines, anything else `other`.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

/// A status as a label: the codes magnumd answers with by name, others by class (`5xx`).
pub fn status_label(status: u16) -> &'static str {
    const KNOWN: [(u16, &str); 26] = [
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (300, "300"),
        (301, "301"),
        (302, "302"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (406, "406"),
        (408, "408"),
        (409, "409"),
        (413, "413"),
        (414, "414"),
        (415, "415"),
        (429, "429"),
        (431, "431"),
        (500, "500"),
        (501, "501"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    if let Some((_, label)) = KNOWN.iter().find(|(code, _)| *code == status) {
        return label;
    }
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_statuses_are_bounded() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PATCH"), "PATCH");
        for odd in ["get", "PROPFIND", "X".repeat(1000).as_str(), ""] {
            assert_eq!(method_label(odd), "other");
        }
        assert_eq!(status_label(404), "404");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(status_label(999), "other");
        assert_eq!(status_label(0), "other");
        let mut labels: Vec<&str> = (0..=u16::MAX).map(status_label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert!(labels.len() <= 32, "{} status labels", labels.len());
    }

    #[test]
    fn the_exposition_has_every_family_and_ends_with_eof() {
        let metrics = Metrics::new();
        metrics
            .http
            .record("/v1/clusters", "GET", "200", Duration::from_millis(3));
        metrics.operations.record(
            "create_cluster",
            OperationOutcome::Succeeded,
            Duration::from_secs(12),
        );
        metrics.keystone.cache_lookup(true);
        metrics
            .keystone
            .validated("valid", Duration::from_millis(20));
        metrics
            .driver_steps
            .start("local", "node_start")
            .finish(true);
        metrics.state.set_queue(3, 1, 42);
        metrics.event_streams.opened();
        metrics.event_streams.lagged();
        metrics.state.set_pool(4, 1, 16);
        metrics.state.set_clusters(&[ClusterCount {
            driver: "local".to_owned(),
            status: "CREATE_COMPLETE",
            health: "HEALTHY",
            count: 2,
        }]);
        let text = metrics.encode();
        for expected in [
            "magnum_http_requests_total{route=\"/v1/clusters\",method=\"GET\",status=\"200\"} 1",
            "magnum_http_request_duration_seconds_bucket{le=\"0.005\",route=\"/v1/clusters\",method=\"GET\"} 1",
            "magnum_operations_total{action=\"create_cluster\",outcome=\"succeeded\"} 1",
            "magnum_operation_duration_seconds_count{action=\"create_cluster\",outcome=\"succeeded\"} 1",
            "magnum_operations_pending 3",
            "magnum_operations_running 1",
            "magnum_operations_oldest_pending_age_seconds 42",
            "magnum_clusters{driver=\"local\",status=\"CREATE_COMPLETE\",health=\"HEALTHY\"} 2",
            "magnum_driver_step_duration_seconds_count{driver=\"local\",step=\"node_start\",outcome=\"succeeded\"} 1",
            "magnum_keystone_token_validation_duration_seconds_count{outcome=\"valid\"} 1",
            "magnum_keystone_token_cache_lookups_total{result=\"hit\"} 1",
            "magnum_db_pool_connections{state=\"idle\"} 1",
            "magnum_db_pool_connections{state=\"in_use\"} 3",
            "magnum_db_pool_max_connections 16",
            "magnum_metrics_refresh_failures_total 0",
            "magnum_event_streams_open 1",
            "magnum_event_stream_lags_total 1",
            "magnum_event_stream_gaps_total 0",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn cluster_counts_are_replaced_not_accumulated() {
        let metrics = Metrics::new();
        let count = |status: &'static str, count| ClusterCount {
            driver: "local".to_owned(),
            status,
            health: "none",
            count,
        };
        metrics
            .state
            .set_clusters(&[count("CREATE_IN_PROGRESS", 1)]);
        metrics.state.set_clusters(&[count("CREATE_COMPLETE", 1)]);
        let text = metrics.encode();
        assert!(!text.contains("CREATE_IN_PROGRESS"), "{text}");
        assert!(text.contains("status=\"CREATE_COMPLETE\""), "{text}");
    }

    #[test]
    fn handles_made_alone_record_without_a_registry() {
        let steps = DriverStepMetrics::default();
        steps.start("local", "swarm_join").finish(false);
        KeystoneMetrics::default().cache_lookup(false);
        // Another process's registry does not see them.
        assert!(!Metrics::new().encode().contains("swarm_join"));
    }
}
