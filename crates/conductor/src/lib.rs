//! The conductor: the only component that touches the world.
//!
//! The API stores what a tenant wants together with an operation row, in one transaction.
//! The conductor claims operations with a lease, runs the cluster's driver (which converges
//! the world onto the stored desired state and reports progress), and records the outcome,
//! moving cluster and nodegroup status only through `ClusterStatus::apply`. A conductor that
//! dies leaves leases that run out; another conductor, or the same one restarted, claims the
//! operation again and converges once more, which is harmless by the driver contract.
//!
//! Nothing here walks over clusters at rest: the loop looks at the operations queue (one
//! indexed query per tick) and at driver events. The one exception is for drivers that watch
//! health themselves (the local driver): their clusters' monitor leases are renewed every
//! fifth of the lease, so that one conductor at a time watches and heals each (`monitors`).

pub mod amqp;
mod monitors;
mod notifications;
mod runner;

use std::sync::Arc;
use std::time::Duration;

use magnum_domain::time::Timestamp;
use magnum_driver::DriverRegistry;
use magnum_store::Store;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use notifications::{
    AuditAction, AuditEvent, AuditOutcome, FileNotifier, Notifier, NullNotifier, QueuedNotifier,
    RabbitNotifier, NOTIFICATION_QUEUE,
};

/// The binary name upstream reports for conductors.
pub const CONDUCTOR_BINARY: &str = "magnum-conductor";

/// How the conductor paces itself.
#[derive(Debug, Clone)]
pub struct ConductorSettings {
    /// The name reported in `mservices`.
    pub host: String,
    pub heartbeat_interval: Duration,
    /// How often the queue is looked at when nobody wakes the conductor.
    pub poll_interval: Duration,
    /// How long a claim lasts without renewal; a dead conductor's work is taken over after.
    pub lease: Duration,
    pub max_concurrent_operations: usize,
    /// Claims after which an operation that keeps dying with its conductor is failed.
    pub max_attempts: i64,
    /// How long an update or delete may take before it is failed.
    pub operation_timeout: Duration,
    /// How long a replaced delegated credential stays valid after its successor is in place.
    pub replaced_credential_grace: Duration,
    /// How many cluster events are kept, and for how long.
    pub event_retention: magnum_store::EventRetention,
    /// How long a finished operation is kept (the autoscaler reads a cluster's recent ones).
    pub finished_operation_retention: Duration,
}

impl ConductorSettings {
    pub fn new(host: String) -> Self {
        Self {
            host,
            heartbeat_interval: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(10),
            max_concurrent_operations: 16,
            max_attempts: 5,
            operation_timeout: Duration::from_secs(3600),
            replaced_credential_grace: Duration::from_secs(86_400),
            event_retention: magnum_store::EventRetention {
                max_per_cluster: 1_000,
                max_age: 30 * 86_400,
                keep_after_delete: 7 * 86_400,
            },
            finished_operation_retention: Duration::from_secs(30 * 86_400),
        }
    }
}

pub struct Conductor {
    store: Store,
    drivers: DriverRegistry,
    settings: ConductorSettings,
    wake: Arc<Notify>,
    notifier: Arc<dyn Notifier>,
    certificates: magnum_keystore::ClusterCertificates,
    revoker: Option<Arc<dyn magnum_driver::CredentialRevoker>>,
    metrics: magnum_metrics::OperationMetrics,
}

impl Conductor {
    /// `wake` is notified by whoever enqueues operations in this process.
    pub fn new(
        store: Store,
        drivers: DriverRegistry,
        settings: ConductorSettings,
        wake: Arc<Notify>,
        notifier: Arc<dyn Notifier>,
        certificates: magnum_keystore::ClusterCertificates,
    ) -> Self {
        Self {
            store,
            drivers,
            settings,
            wake,
            notifier,
            certificates,
            revoker: None,
            metrics: magnum_metrics::OperationMetrics::default(),
        }
    }

    /// Records the operations it ends into `metrics` (magnumd's registry).
    pub fn with_metrics(mut self, metrics: magnum_metrics::OperationMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Who revokes the delegated credentials clusters no longer use (Keystone, with
    /// magnum-rs's own login); without one they are forgotten only with their cluster.
    pub fn with_credential_revoker(
        mut self,
        revoker: Arc<dyn magnum_driver::CredentialRevoker>,
    ) -> Self {
        self.revoker = Some(revoker);
        self
    }

    /// Records the first heartbeat, so that the conductor is listed as soon as it starts.
    pub async fn register(&self) -> Result<(), magnum_store::StoreError> {
        self.store
            .record_service_heartbeat(&self.settings.host, CONDUCTOR_BINARY, Timestamp::now())
            .await
    }

    /// Runs until `shutdown` turns true. Failures of the database are logged and retried:
    /// an outage stalls the conductor, it does not stop it.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let host = self.settings.host.clone();
        tracing::info!(conductor.host = %host, "conductor started");
        // Side tasks end with this future: aborted (as a killed process, in tests) it leaves
        // none of them heartbeating, recording driver events or pruning behind it.
        let heartbeat = SideTask::spawn(heartbeat_loop(
            self.store.clone(),
            self.settings.clone(),
            shutdown.clone(),
        ));
        let _listeners: Vec<SideTask> =
            runner::spawn_event_listeners(&self.store, &self.drivers, &self.wake, shutdown.clone())
                .into_iter()
                .map(SideTask::from)
                .collect();
        let sweep = self.revoker.clone().map(|revoker| {
            SideTask::spawn(runner::revocation_sweep(
                self.store.clone(),
                revoker,
                self.settings.replaced_credential_grace,
                shutdown.clone(),
            ))
        });
        let pruning = SideTask::spawn(history_pruning(
            self.store.clone(),
            self.settings.event_retention,
            self.settings.finished_operation_retention,
            shutdown.clone(),
        ));
        let runner = runner::Runner::new(
            self.store.clone(),
            self.drivers.clone(),
            self.settings.clone(),
            self.wake,
            self.notifier,
            self.certificates,
        )
        .with_credential_revoker(self.revoker)
        .with_metrics(self.metrics);
        let monitors = monitors::MonitorLeases {
            store: self.store,
            drivers: self.drivers,
            owner: runner.owner().to_owned(),
            host: host.clone(),
            lease: self.settings.lease,
        };
        // One future: a conductor stopped at once (aborted, as a killed process) leaves its
        // monitor leases to run out, and its drivers stop watching before they do.
        tokio::join!(runner.run(shutdown.clone()), monitors.run(shutdown));
        heartbeat.finish().await;
        pruning.finish().await;
        if let Some(sweep) = sweep {
            sweep.finish().await;
        }
        // The driver event listeners are aborted as they go out of scope.
        tracing::info!(conductor.host = %host, "conductor stopped");
    }
}

/// A task that lives no longer than its owner: aborted when dropped unfinished.
struct SideTask(Option<JoinHandle<()>>);

impl SideTask {
    fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(Some(tokio::spawn(task)))
    }

    /// Waits for the task to end on its own (after shutdown was signalled).
    async fn finish(mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.await;
        }
    }
}

impl From<JoinHandle<()>> for SideTask {
    fn from(handle: JoinHandle<()>) -> Self {
        Self(Some(handle))
    }
}

impl Drop for SideTask {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

/// How often old cluster events and finished operations are dropped.
const HISTORY_PRUNING_INTERVAL: Duration = Duration::from_secs(60);

/// Every [`HISTORY_PRUNING_INTERVAL`]: drops cluster events past their retention and
/// operations finished longer ago than `keep_operations` (every conductor does; the deletes
/// are idempotent). Event counts are checked for the clusters that had events since the last
/// pass.
async fn history_pruning(
    store: Store,
    retention: magnum_store::EventRetention,
    keep_operations: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut checked_up_to = 0;
    loop {
        let newest = store.latest_event_sequence().await;
        match store
            .prune_events(retention, checked_up_to, Timestamp::now())
            .await
        {
            Ok(removed) => {
                if removed > 0 {
                    tracing::info!(removed, "old cluster events dropped");
                }
                if let Ok(newest) = newest {
                    checked_up_to = newest;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot drop old cluster events"),
        }
        let finished_before = Timestamp::from_unix_seconds(
            Timestamp::now()
                .unix_seconds()
                .saturating_sub(keep_operations.as_secs() as i64),
        );
        match store.prune_finished_operations(finished_before).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "old finished operations dropped"),
            Err(error) => tracing::warn!(%error, "cannot drop old finished operations"),
        }
        tokio::select! {
            _ = tokio::time::sleep(HISTORY_PRUNING_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn heartbeat_loop(
    store: Store,
    settings: ConductorSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.heartbeat_interval,
        settings.heartbeat_interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(error) = store
                    .record_service_heartbeat(&settings.host, CONDUCTOR_BINARY, Timestamp::now())
                    .await
                {
                    tracing::warn!(conductor.host = %settings.host, %error, "heartbeat failed");
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
}

/// Records for unit tests.
#[cfg(test)]
pub(crate) mod test_records {
    use magnum_domain::cluster::{Cluster, ClusterStatus, NodeGroup};
    use magnum_domain::time::Timestamp;
    use uuid::Uuid;

    pub(crate) fn cluster() -> Cluster {
        Cluster {
            id: 1,
            uuid: Uuid::new_v4(),
            name: Some("c".to_owned()),
            project_id: "p".to_owned(),
            user_id: "u".to_owned(),
            cluster_template_id: Uuid::new_v4(),
            keypair: None,
            docker_volume_size: None,
            labels: Default::default(),
            master_flavor_id: None,
            flavor_id: None,
            create_timeout: None,
            discovery_url: None,
            fixed_network: None,
            fixed_subnet: None,
            floating_ip_enabled: false,
            master_lb_enabled: false,
            status: ClusterStatus::CreateInProgress,
            status_reason: None,
            health_status: None,
            health_status_reason: Default::default(),
            stack_id: None,
            api_address: None,
            coe_version: None,
            container_version: None,
            node_count: 1,
            master_count: 1,
            node_addresses: Vec::new(),
            master_addresses: Vec::new(),
            created_at: Timestamp::now(),
            updated_at: None,
            version: 1,
        }
    }

    pub(crate) fn nodegroup(role: &str) -> NodeGroup {
        NodeGroup {
            id: 1,
            uuid: Uuid::new_v4(),
            cluster_uuid: Uuid::new_v4(),
            project_id: "p".to_owned(),
            name: role.to_owned(),
            docker_volume_size: None,
            labels: Default::default(),
            flavor_id: None,
            image_id: None,
            node_addresses: Vec::new(),
            node_count: 1,
            role: role.to_owned(),
            min_node_count: 0,
            max_node_count: None,
            is_default: true,
            stack_id: None,
            status: ClusterStatus::CreateComplete,
            status_reason: None,
            coe_version: None,
            node_labels: Default::default(),
            node_taints: Vec::new(),
            created_at: Timestamp::now(),
            updated_at: None,
            version: 1,
        }
    }
}

#[cfg(test)]
mod side_task_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::SideTask;

    /// A task counting up every 5 ms, and its counter.
    fn counting() -> (
        impl std::future::Future<Output = ()> + Send + 'static,
        Arc<AtomicUsize>,
    ) {
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let task = async move {
            loop {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        (task, count)
    }

    async fn still_counts(count: &AtomicUsize) -> bool {
        let before = count.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        count.load(Ordering::SeqCst) != before
    }

    #[tokio::test]
    async fn a_side_task_ends_when_its_owner_is_aborted() {
        let (task, count) = counting();
        let owner = tokio::spawn(async move {
            let _side = SideTask::spawn(task);
            std::future::pending::<()>().await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(still_counts(&count).await, "it runs while its owner does");
        owner.abort();
        let _ = owner.await;
        // Give an abort that did not happen every chance to show.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!still_counts(&count).await, "aborted with its owner");
    }

    #[tokio::test]
    async fn a_finished_side_task_is_waited_for() {
        let done = Arc::new(AtomicUsize::new(0));
        let flag = done.clone();
        let side = SideTask::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            flag.store(1, Ordering::SeqCst);
        });
        side.finish().await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
