//! Claims operations and carries each one to an end.

use std::sync::Arc;
use std::time::Duration;

use magnum_domain::aggregate::{ChangeRefused, ClusterAggregate, Phase};
use magnum_domain::cluster::{Cluster, ClusterStatus, NodeGroup};
use magnum_domain::event::{Cause, ClusterEvent};
use magnum_domain::operation::{Operation, OperationKind, OperationParameters};
use magnum_domain::time::Timestamp;
use magnum_driver::{Action, ClusterSpec, Converge, Driver, DriverEvent, DriverRegistry, Progress};
use magnum_metrics::OperationOutcome;
use magnum_store::StoredCredential;
use magnum_store::{Outcome, Store, StoreError, TemplateScope};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use crate::notifications::{AuditAction, AuditEvent, AuditOutcome, Notifier};
use crate::ConductorSettings;

/// How often stranded clusters are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub(crate) struct Runner {
    store: Store,
    drivers: DriverRegistry,
    settings: ConductorSettings,
    wake: Arc<Notify>,
    notifier: Arc<dyn Notifier>,
    certificates: magnum_keystore::ClusterCertificates,
    revoker: Option<Arc<dyn magnum_driver::CredentialRevoker>>,
    /// This process's name on the leases it holds.
    owner: String,
    metrics: magnum_metrics::OperationMetrics,
}

fn audit_action(phase: Phase) -> AuditAction {
    match phase {
        Phase::Create => AuditAction::Create,
        Phase::Update | Phase::Rollback => AuditAction::Update,
    }
}

fn action_of(kind: OperationKind, nodegroups: &[NodeGroup], target: Option<Uuid>) -> Action {
    match kind {
        OperationKind::CreateCluster => Action::CreateCluster,
        OperationKind::UpdateCluster
        | OperationKind::ResizeCluster
        | OperationKind::AutoscaleCluster
        | OperationKind::ReplaceNodes => {
            let masters = target
                .and_then(|uuid| nodegroups.iter().find(|ng| ng.uuid == uuid))
                .is_some_and(NodeGroup::is_master);
            if masters {
                Action::ScaleMasters
            } else {
                Action::ScaleWorkers
            }
        }
        OperationKind::UpgradeCluster => Action::UpgradeCluster,
        OperationKind::DeleteCluster => Action::DeleteCluster,
        OperationKind::RotateCa => Action::RotateCa,
        OperationKind::RotateCredentials => Action::RotateCredentials,
        OperationKind::CreateNodegroup => Action::CreateNodegroup,
        OperationKind::UpdateNodegroup => Action::UpdateNodegroup,
        OperationKind::DeleteNodegroup => Action::DeleteNodegroup,
    }
}

/// Writes a driver's progress notes into the cluster's `status_reason`.
struct StatusReasonProgress {
    store: Store,
    cluster: Uuid,
    status: ClusterStatus,
    /// What the driver said last: a timeout names what the change was waiting for.
    last: std::sync::Mutex<Option<String>>,
    /// The operation whose events these are, and how many it recorded.
    operation: Uuid,
    events: std::sync::atomic::AtomicUsize,
}

impl StatusReasonProgress {
    fn last(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// A timeout's reason with the driver's last word, so that a failure says what was missing.
fn with_last_report(timed_out: String, last: Option<String>) -> String {
    match last.filter(|last| !last.trim().is_empty()) {
        Some(last) => format!("{timed_out} Last: {last}"),
        None => timed_out,
    }
}

#[async_trait::async_trait]
impl Progress for StatusReasonProgress {
    async fn report(&self, message: String) {
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(message.clone());
        if let Err(error) = self
            .store
            .note_cluster_progress(self.cluster, self.status, &message, Timestamp::now())
            .await
        {
            tracing::warn!(cluster.id = %self.cluster, %error, "cannot record progress");
        }
    }

    async fn event(&self, event: ClusterEvent) {
        let recorded = self
            .events
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if recorded >= magnum_driver::MAX_EVENTS_PER_OPERATION {
            if recorded == magnum_driver::MAX_EVENTS_PER_OPERATION {
                tracing::warn!(cluster.id = %self.cluster, operation.id = %self.operation, "the driver's further events of this operation are not recorded");
            }
            return;
        }
        if let Err(error) = record_event(
            &self.store,
            self.cluster,
            &Cause::operation(self.operation),
            event,
        )
        .await
        {
            tracing::warn!(cluster.id = %self.cluster, %error, "cannot record an event");
        }
    }
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

fn minutes_text(total_seconds: i64) -> String {
    let minutes = total_seconds / 60;
    if minutes == 1 {
        "1 minute".to_owned()
    } else if minutes > 0 {
        format!("{minutes} minutes")
    } else {
        format!("{total_seconds} seconds")
    }
}

impl Runner {
    pub(crate) fn new(
        store: Store,
        drivers: DriverRegistry,
        settings: ConductorSettings,
        wake: Arc<Notify>,
        notifier: Arc<dyn Notifier>,
        certificates: magnum_keystore::ClusterCertificates,
    ) -> Self {
        let owner = format!(
            "{}/{}-{}@{}",
            settings.host,
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8],
            process_scope()
        );
        Self {
            store,
            drivers,
            settings,
            wake,
            notifier,
            certificates,
            revoker: None,
            owner,
            metrics: magnum_metrics::OperationMetrics::default(),
        }
    }

    /// This conductor's name on the leases it holds.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    pub(crate) fn with_metrics(mut self, metrics: magnum_metrics::OperationMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub(crate) fn with_credential_revoker(
        mut self,
        revoker: Option<Arc<dyn magnum_driver::CredentialRevoker>>,
    ) -> Self {
        self.revoker = revoker;
        self
    }

    async fn revoke_credentials(&self, credentials: &[StoredCredential]) {
        if let Some(revoker) = &self.revoker {
            revoke_credentials(&self.store, revoker.as_ref(), credentials).await;
        }
    }

    /// After a change put the delegated credential `applied` in place, the ones recorded
    /// before it are revoked once the grace has passed (not any added since: a rotation
    /// accepted meanwhile has yet to apply it).
    async fn revoke_replaced_credentials(&self, cluster: Uuid, applied: Option<&str>) {
        let Some(applied) = applied else {
            return;
        };
        let grace = i64::try_from(self.settings.replaced_credential_grace.as_secs()).unwrap_or(0);
        let at = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + grace);
        if let Err(error) = self
            .store
            .schedule_credential_revocation(cluster, Some(applied), at)
            .await
        {
            tracing::warn!(cluster.id = %cluster, %error, "cannot schedule the revocation of replaced credentials");
        }
    }

    /// Frees at once the operations of conductors of this host that died (a SIGKILL, a
    /// crash), instead of waiting for their leases to run out: their owner names this host,
    /// this PID namespace and a process that no longer exists.
    async fn reclaim_from_dead_conductors(&self) {
        let prefix = format!("{}/", self.settings.host);
        let owners = match self.store.lease_owners(&prefix).await {
            Ok(owners) => owners,
            Err(error) => {
                tracing::warn!(%error, "cannot look for operations of dead conductors");
                return;
            }
        };
        for owner in owners {
            if owner == self.owner || !conductor_is_dead(&owner, &prefix) {
                continue;
            }
            match self.store.expire_leases(&owner).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(
                    previous = %owner,
                    count,
                    "taking over the operations of a conductor of this host that died"
                ),
                Err(error) => tracing::warn!(%error, "cannot take over operations"),
            }
        }
    }

    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        this.reclaim_from_dead_conductors().await;
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut poll = tokio::time::interval(this.settings.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while tasks.len() < this.settings.max_concurrent_operations {
                let lease = seconds(this.settings.lease).max(1);
                match this
                    .store
                    .claim_operation(&this.owner, Timestamp::now(), lease)
                    .await
                {
                    Ok(Some(operation)) => {
                        tasks.spawn(this.clone().run_operation(operation));
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(%error, "cannot claim operations");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = poll.tick() => {}
                () = this.wake.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = sweep.tick() => {
                    this.reclaim_from_dead_conductors().await;
                    this.sweep_stranded().await;
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        // Work in hand goes back to the queue at once rather than after the lease.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        match this.store.release_operations(&this.owner).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "operations handed back to the queue"),
            Err(error) => tracing::warn!(%error, "cannot hand operations back"),
        }
    }

    /// Runs one claimed operation while keeping its lease; stops when the lease is lost or
    /// a deletion makes the work pointless.
    async fn run_operation(self: Arc<Self>, operation: Operation) {
        tracing::info!(operation.id = %operation.uuid, operation.kind = %operation.kind,
            cluster.id = %operation.cluster_uuid, attempt = operation.attempts, "operation started");
        let started = std::time::Instant::now();
        let action = operation.kind.as_str();
        let interrupted = || {
            self.metrics
                .record(action, OperationOutcome::Interrupted, started.elapsed())
        };
        let outcome = tokio::select! {
            outcome = self.clone().execute(operation.clone()) => outcome,
            () = self.clone().guard(operation.clone()) => return interrupted(),
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                // The database failed us; leave the lease to run out so that the operation
                // is tried again.
                tracing::warn!(operation.id = %operation.uuid, %error, "operation interrupted");
                return interrupted();
            }
        };
        let ended = match outcome {
            Outcome::Succeeded => OperationOutcome::Succeeded,
            Outcome::Failed { .. } => OperationOutcome::Failed,
        };
        self.metrics.record(action, ended, started.elapsed());
        tracing::info!(operation.id = %operation.uuid, outcome = ?outcome, "operation finished");
        if let Err(error) = self
            .store
            .finish_operation(operation.uuid, &self.owner, outcome, Timestamp::now())
            .await
        {
            tracing::warn!(operation.id = %operation.uuid, %error, "cannot record the outcome");
        }
    }

    /// Completes when the operation must stop: its lease is no longer ours, or the cluster is
    /// being deleted (for anything but the deletion itself).
    async fn guard(self: Arc<Self>, operation: Operation) {
        let period = (self.settings.lease / 3).max(Duration::from_millis(200));
        let mut renewed_at = std::time::Instant::now();
        loop {
            tokio::time::sleep(period).await;
            // Unrenewed for a whole lease (the database away), the lease may already be
            // another conductor's: stop rather than work beside it.
            if renewed_at.elapsed() >= self.settings.lease {
                tracing::warn!(operation.id = %operation.uuid, "lease not renewed in time; stopping");
                return;
            }
            let until = Timestamp::from_unix_seconds(
                Timestamp::now().unix_seconds() + seconds(self.settings.lease).max(1),
            );
            match self
                .store
                .renew_operation_lease(operation.uuid, &self.owner, until)
                .await
            {
                Ok(true) => renewed_at = std::time::Instant::now(),
                Ok(false) => {
                    tracing::info!(operation.id = %operation.uuid, "operation lease lost; stopping");
                    return;
                }
                Err(error) => {
                    tracing::warn!(operation.id = %operation.uuid, %error, "cannot renew lease");
                    continue;
                }
            }
            if operation.kind == OperationKind::DeleteCluster {
                continue;
            }
            let superseded = match self.store.cluster_by_uuid(operation.cluster_uuid).await {
                Ok(None) => true,
                Ok(Some(cluster)) => cluster.status == ClusterStatus::DeleteInProgress,
                Err(_) => false,
            };
            if superseded {
                tracing::info!(operation.id = %operation.uuid, "cluster is being deleted; stopping");
                let _ = self
                    .store
                    .finish_operation(
                        operation.uuid,
                        &self.owner,
                        Outcome::Failed {
                            reason: "Stopped: the cluster is being deleted.".to_owned(),
                        },
                        Timestamp::now(),
                    )
                    .await;
                return;
            }
        }
    }

    async fn execute(self: Arc<Self>, operation: Operation) -> Result<Outcome, StoreError> {
        let parameters = OperationParameters::from_payload(&operation.payload);
        let Some(cluster) = self.store.cluster_by_uuid(operation.cluster_uuid).await? else {
            return Ok(Outcome::Succeeded);
        };
        if operation.kind == OperationKind::DeleteCluster {
            return self.delete_cluster(&operation, cluster, &parameters).await;
        }
        // None: nothing left to do; an earlier run finished the change before it could
        // record so, or another operation ended it.
        let Some(phase) = Phase::of(operation.kind, cluster.status) else {
            return Ok(Outcome::Succeeded);
        };
        if operation.attempts > self.settings.max_attempts {
            let reason = format!(
                "Gave up after the conductor running this change stopped {} times.",
                operation.attempts - 1
            );
            return self.fail(&operation, &parameters, phase, reason).await;
        }
        self.tell_resumed(&operation).await;
        if operation.attempts == 1 && phase != Phase::Rollback {
            self.audit(
                audit_action(phase),
                AuditOutcome::Pending,
                &cluster,
                &parameters,
            )
            .await;
        }
        let deadline = match phase {
            // A create without a timeout of its own still ends: at the operation timeout.
            Phase::Create => cluster
                .create_deadline()
                .or(Some(Timestamp::from_unix_seconds(
                    operation.created_at.unix_seconds() + seconds(self.settings.operation_timeout),
                ))),
            Phase::Update | Phase::Rollback => Some(Timestamp::from_unix_seconds(
                operation.created_at.unix_seconds() + seconds(self.settings.operation_timeout),
            )),
        };
        if phase == Phase::Create {
            // Before any node exists; a resumed create keeps the CAs it made.
            if let Err(error) = self
                .certificates
                .ensure(cluster.uuid, &cluster.display_name())
                .await
            {
                let reason =
                    format!("Cannot create the cluster's certificate authorities: {error}");
                return self.fail(&operation, &parameters, phase, reason).await;
            }
        }
        let attempt = self
            .converge_once(&operation, &parameters, &cluster, phase, deadline)
            .await?;
        match attempt {
            Ok((observed, applied)) => {
                self.revoke_replaced_credentials(cluster.uuid, applied.as_deref())
                    .await;
                self.complete(&operation, &parameters, phase, observed)
                    .await
            }
            Err(reason) if phase == Phase::Update && parameters.rollback => {
                self.roll_back(&operation, &parameters, reason, deadline)
                    .await
            }
            Err(reason) => self.fail(&operation, &parameters, phase, reason).await,
        }
    }

    /// One converge of the stored desired state, bounded by the deadline. The error is a
    /// reason for the tenant.
    async fn converge_once(
        &self,
        operation: &Operation,
        parameters: &OperationParameters,
        cluster: &Cluster,
        phase: Phase,
        deadline: Option<Timestamp>,
    ) -> Result<Result<(magnum_driver::Observed, Option<String>), String>, StoreError> {
        let (spec, driver) = match self.spec_and_driver(cluster).await? {
            Ok(found) => found,
            Err(reason) => return Ok(Err(reason)),
        };
        let action = action_of(operation.kind, &spec.nodegroups, parameters.nodegroup);
        let progress = StatusReasonProgress {
            store: self.store.clone(),
            cluster: cluster.uuid,
            status: cluster.status,
            last: Default::default(),
            operation: operation.uuid,
            events: Default::default(),
        };
        // A rollback goes back to the previous counts: the nodes the change named for
        // removal are not removed again.
        let nodes_to_remove: &[String] = if phase == Phase::Rollback {
            &[]
        } else {
            &parameters.nodes_to_remove
        };
        let request = Converge {
            action,
            spec: &spec,
            nodes_to_remove,
            max_batch_size: parameters.max_batch_size,
        };
        // The delegated credential this converge puts in place.
        let applied = spec
            .credential
            .as_ref()
            .map(|credential| credential.id.clone());
        let work = async {
            driver
                .converge(request, &progress)
                .await
                .map(|observed| (observed, applied))
        };
        Ok(match remaining(deadline) {
            None => work.await.map_err(|error| error.to_string()),
            Some(left) if left.is_zero() => Err(timed_out(phase, operation, cluster)),
            Some(left) => match tokio::time::timeout(left, work).await {
                Ok(result) => result.map_err(|error| error.to_string()),
                Err(_) => Err(with_last_report(
                    timed_out(phase, operation, cluster),
                    progress.last(),
                )),
            },
        })
    }

    async fn spec_and_driver(
        &self,
        cluster: &Cluster,
    ) -> Result<Result<(ClusterSpec, Arc<dyn Driver>), String>, StoreError> {
        let Some(template) = self
            .store
            .cluster_template_by_uuid(cluster.cluster_template_id, TemplateScope::All)
            .await?
        else {
            return Ok(Err(format!(
                "The cluster template {} no longer exists.",
                cluster.cluster_template_id
            )));
        };
        let driver_name = template.driver.clone().unwrap_or_default();
        let Some(driver) = self.drivers.by_name(&driver_name) else {
            return Ok(Err(format!(
                "The cluster driver {driver_name:?} of this cluster's template is not enabled on this conductor."
            )));
        };
        let nodegroups = self.store.nodegroups_of_cluster(cluster.uuid).await?;
        let authority = self
            .certificates
            .authority(cluster.uuid, "kubernetes")
            .await
            .ok();
        // Whatever this process's configuration says, a cluster that was given a credential
        // acts with it (the newest).
        let recorded = if driver.may_hold_credentials() {
            self.store.cluster_credentials(cluster.uuid).await?
        } else {
            Vec::new()
        };
        let credential = match recorded.into_iter().last() {
            Some(stored) => match self.certificates.unseal_credential(&stored).await {
                Ok(secret) => Some(magnum_driver::ClusterCredential {
                    id: stored.credential_id,
                    secret,
                    user_id: stored.user_id,
                }),
                // A delete does not need it: an unreadable one must not keep a cluster.
                Err(error) if cluster.status == ClusterStatus::DeleteInProgress => {
                    tracing::warn!(cluster.id = %cluster.uuid, %error, "the cluster's application credential cannot be read; deleting without it");
                    None
                }
                Err(error) => {
                    tracing::error!(cluster.id = %cluster.uuid, %error, "the cluster's application credential cannot be read");
                    return Ok(Err(
                        "The cluster's application credential cannot be read (the operator's log says why)."
                            .to_owned(),
                    ));
                }
            },
            None => None,
        };
        Ok(Ok((
            ClusterSpec {
                cluster: cluster.clone(),
                template,
                nodegroups,
                authority,
                credential,
            },
            driver,
        )))
    }

    /// Records an outcome through the store's one commit path; `outcome` decides on the
    /// cluster as read (again after a lost race). `Ok(None)` when the cluster is gone;
    /// `Ok(Some((_, Err(_))))` when its status can no longer take the outcome (a deletion
    /// started meanwhile, say): then nothing is written and the caller says so.
    async fn record<T, F>(
        &self,
        uuid: Uuid,
        cause: &Cause,
        mut outcome: F,
    ) -> Result<Option<Result<(T, Cluster), ChangeRefused>>, StoreError>
    where
        F: FnMut(&mut ClusterAggregate) -> Result<T, ChangeRefused>,
    {
        let written = self
            .store
            .modify_cluster(uuid, cause, |aggregate| -> Result<T, Refusal> {
                outcome(aggregate).map_err(Refusal::Refused)
            })
            .await;
        match written {
            Ok((value, stored)) => Ok(Some(Ok((value, stored.cluster)))),
            Err(Refusal::Refused(refused)) => Ok(Some(Err(refused))),
            Err(Refusal::Store(StoreError::NotFound)) => Ok(None),
            Err(Refusal::Store(error)) => Err(error),
        }
    }

    /// Records success: status through the transition function, what the driver observed,
    /// nodegroups settled (and those being deleted removed).
    async fn complete(
        &self,
        operation: &Operation,
        parameters: &OperationParameters,
        phase: Phase,
        observed: magnum_driver::Observed,
    ) -> Result<Outcome, StoreError> {
        let now = Timestamp::now();
        let written = self
            .record(
                operation.cluster_uuid,
                &Cause::operation(operation.uuid),
                |aggregate| {
                    let settle_status = !aggregate.has_newer_operation(operation.id);
                    aggregate.succeed(phase, settle_status, &observed, parameters, now)?;
                    match operation.kind {
                        OperationKind::RotateCa => aggregate.record(ClusterEvent::normal(
                            "CARotated",
                            "Every node trusts the cluster's new certificate authority.",
                        )),
                        OperationKind::RotateCredentials => aggregate.record(ClusterEvent::normal(
                            "CredentialsRotated",
                            "The cluster acts with its new credentials.",
                        )),
                        _ => {}
                    }
                    Ok(settle_status)
                },
            )
            .await?;
        match written {
            Some(Ok((true, cluster))) => {
                self.audit(
                    audit_action(phase),
                    AuditOutcome::Success,
                    &cluster,
                    parameters,
                )
                .await;
                Ok(Outcome::Succeeded)
            }
            Some(Err(refused)) => Ok(refused_outcome(operation, &refused)),
            _ => Ok(Outcome::Succeeded),
        }
    }

    /// Records failure with its reason; what the change asked for is put back to what it
    /// was, so that the stored cluster describes the last state that worked.
    async fn fail(
        &self,
        operation: &Operation,
        parameters: &OperationParameters,
        phase: Phase,
        reason: String,
    ) -> Result<Outcome, StoreError> {
        let now = Timestamp::now();
        let written = self
            .record(
                operation.cluster_uuid,
                &Cause::operation(operation.uuid),
                |aggregate| {
                    let settle_status = !aggregate.has_newer_operation(operation.id);
                    aggregate.fail(phase, settle_status, &reason, parameters, now)?;
                    Ok(settle_status)
                },
            )
            .await?;
        match written {
            Some(Ok((true, cluster))) => {
                self.audit(
                    audit_action(phase),
                    AuditOutcome::Failure,
                    &cluster,
                    parameters,
                )
                .await;
            }
            Some(Err(refused)) => {
                tracing::warn!(operation.id = %operation.uuid, %refused, "the failure could not be recorded");
            }
            _ => {}
        }
        tracing::warn!(operation.id = %operation.uuid, cluster.id = %operation.cluster_uuid, %reason, "operation failed");
        Ok(Outcome::Failed { reason })
    }

    /// After a failed update with `rollback`: back to the previous counts and template,
    /// converged like any change.
    async fn roll_back(
        &self,
        operation: &Operation,
        parameters: &OperationParameters,
        reason: String,
        deadline: Option<Timestamp>,
    ) -> Result<Outcome, StoreError> {
        let now = Timestamp::now();
        let started = self
            .record(
                operation.cluster_uuid,
                &Cause::operation(operation.uuid),
                |aggregate| aggregate.start_rollback(&reason, parameters, now),
            )
            .await?;
        let cluster = match started {
            Some(Ok(((), cluster))) => cluster,
            Some(Err(refused)) => {
                return Ok(Outcome::Failed {
                    reason: format!("{reason} (no rollback: {refused})"),
                })
            }
            None => return Ok(Outcome::Failed { reason }),
        };
        match self
            .converge_once(operation, parameters, &cluster, Phase::Rollback, deadline)
            .await?
        {
            Ok((observed, applied)) => {
                self.revoke_replaced_credentials(cluster.uuid, applied.as_deref())
                    .await;
                self.complete(operation, parameters, Phase::Rollback, observed)
                    .await?;
                Ok(Outcome::Failed {
                    reason: format!("{reason} (rolled back)"),
                })
            }
            Err(second) => {
                self.fail(
                    operation,
                    parameters,
                    Phase::Rollback,
                    format!("{reason}; the rollback failed too: {second}"),
                )
                .await
            }
        }
    }

    /// A run that is not an operation's first (`attempts` counts the claims) resumes what a
    /// conductor that stopped in the middle left: `ConductorLost` says so, once per run.
    async fn tell_resumed(&self, operation: &Operation) {
        if operation.attempts <= 1 {
            return;
        }
        let resumed = ClusterEvent::warning(
            "ConductorLost",
            format!(
                "The conductor running this {} stopped before it finished; another run \
                 resumes it (attempt {}).",
                operation.kind.as_str().replace('_', " "),
                operation.attempts
            ),
        );
        let cause = Cause::operation(operation.uuid);
        if let Err(error) = record_event(&self.store, operation.cluster_uuid, &cause, resumed).await
        {
            tracing::warn!(cluster.id = %operation.cluster_uuid, %error, "cannot record an event");
        }
    }

    async fn delete_cluster(
        &self,
        operation: &Operation,
        cluster: Cluster,
        parameters: &OperationParameters,
    ) -> Result<Outcome, StoreError> {
        if cluster.status != ClusterStatus::DeleteInProgress {
            return Ok(Outcome::Succeeded);
        }
        // Told like any other operation's: a user following the deletion learns that it was
        // interrupted and resumed.
        if operation.attempts <= self.settings.max_attempts {
            self.tell_resumed(operation).await;
        }
        if operation.attempts == 1 {
            self.audit(
                AuditAction::Delete,
                AuditOutcome::Pending,
                &cluster,
                parameters,
            )
            .await;
        }
        // Whatever else was under way for the cluster stops; its runners notice at their
        // next lease renewal, before the driver starts tearing down.
        let cancelled = self
            .store
            .cancel_operations(
                cluster.uuid,
                Some(operation.uuid),
                "Stopped: the cluster is being deleted.",
                Timestamp::now(),
            )
            .await?;
        if cancelled > 0 {
            tokio::time::sleep(self.settings.lease / 3 + Duration::from_millis(300)).await;
        }
        let failure = if operation.attempts > self.settings.max_attempts {
            Some(format!(
                "Gave up after the conductor deleting this cluster stopped {} times.",
                operation.attempts - 1
            ))
        } else {
            match self.spec_and_driver(&cluster).await? {
                Err(reason) => Some(reason),
                Ok((spec, driver)) => {
                    let progress = StatusReasonProgress {
                        store: self.store.clone(),
                        cluster: cluster.uuid,
                        status: ClusterStatus::DeleteInProgress,
                        last: Default::default(),
                        operation: operation.uuid,
                        events: Default::default(),
                    };
                    let deadline = Timestamp::from_unix_seconds(
                        operation.created_at.unix_seconds()
                            + seconds(self.settings.operation_timeout),
                    );
                    let left = remaining(Some(deadline)).unwrap_or_default();
                    match tokio::time::timeout(left, driver.delete(&spec, &progress)).await {
                        Ok(Ok(())) => None,
                        Ok(Err(error)) => Some(error.to_string()),
                        Err(_) => Some(with_last_report(
                            format!(
                                "Timed out: the deletion did not finish within {}.",
                                minutes_text(seconds(self.settings.operation_timeout))
                            ),
                            progress.last(),
                        )),
                    }
                }
            }
        };
        match failure {
            None => {
                // Nothing of the cluster needs its credentials any more: revoked now, and the
                // sweep retries any Keystone refused (their records outlive the cluster).
                let credentials = self.store.cluster_credentials(cluster.uuid).await?;
                self.revoke_credentials(&credentials).await;
                self.store
                    .purge_cluster(cluster.uuid, &Cause::operation(operation.uuid))
                    .await?;
                self.certificates.forget(cluster.uuid).await;
                let mut gone = cluster;
                gone.status = ClusterStatus::DeleteComplete;
                gone.status_reason = None;
                self.audit(
                    AuditAction::Delete,
                    AuditOutcome::Success,
                    &gone,
                    parameters,
                )
                .await;
                tracing::info!(cluster.id = %gone.uuid, "cluster deleted");
                Ok(Outcome::Succeeded)
            }
            Some(reason) => {
                let now = Timestamp::now();
                let written = self
                    .record(
                        cluster.uuid,
                        &Cause::operation(operation.uuid),
                        |aggregate| aggregate.delete_failed(&reason, now),
                    )
                    .await?;
                if let Some(Err(refused)) = &written {
                    tracing::warn!(cluster.id = %cluster.uuid, %refused, "the failed deletion could not be recorded");
                }
                if let Some(Ok(((), cluster))) = written {
                    self.audit(
                        AuditAction::Delete,
                        AuditOutcome::Failure,
                        &cluster,
                        parameters,
                    )
                    .await;
                }
                Ok(Outcome::Failed { reason })
            }
        }
    }

    async fn audit(
        &self,
        action: AuditAction,
        outcome: AuditOutcome,
        cluster: &Cluster,
        parameters: &OperationParameters,
    ) {
        self.notifier
            .notify(AuditEvent {
                action,
                outcome,
                cluster: cluster.clone(),
                initiator: parameters.initiator.clone(),
            })
            .await;
    }

    /// Clusters marked in progress with no operation that will end it (which only a lost
    /// write can cause) are failed with a reason, so that the tenant can retry or delete.
    async fn sweep_stranded(&self) {
        let clusters = match self.store.clusters_in_progress().await {
            Ok(clusters) => clusters,
            Err(error) => {
                tracing::warn!(%error, "cannot look for stranded clusters");
                return;
            }
        };
        for cluster in clusters {
            match self.store.unfinished_operations_of(cluster.uuid).await {
                Ok(operations) if operations.is_empty() => {}
                _ => continue,
            }
            let reason =
                "The change under way was lost before it finished; retry it or delete the cluster.";
            let now = Timestamp::now();
            let written = self
                .record(cluster.uuid, &Cause::none(), |aggregate| {
                    // Only a cluster still in progress with no operation is stranded; it may
                    // have moved on, or been given work, since it was listed.
                    if !aggregate.cluster.status.is_in_progress()
                        || !aggregate.unfinished_operations.is_empty()
                    {
                        return Ok(false);
                    }
                    aggregate.strand(reason, now)?;
                    Ok(true)
                })
                .await;
            match written {
                Ok(Some(Ok((true, _)))) => {
                    tracing::warn!(cluster.id = %cluster.uuid, "stranded cluster failed");
                }
                Ok(Some(Ok((false, _)))) => {}
                Ok(Some(Err(refused))) => {
                    tracing::warn!(cluster.id = %cluster.uuid, %refused, "cannot fail a stranded cluster");
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(cluster.id = %cluster.uuid, %error, "cannot fail a stranded cluster");
                }
            }
        }
    }
}

fn remaining(deadline: Option<Timestamp>) -> Option<Duration> {
    deadline.map(|deadline| {
        let left = deadline.unix_seconds() - Timestamp::now().unix_seconds();
        Duration::from_secs(u64::try_from(left).unwrap_or(0))
    })
}

fn timed_out(phase: Phase, operation: &Operation, cluster: &Cluster) -> String {
    match phase {
        Phase::Create if cluster.create_deadline().is_none() => {
            "Timed out: the cluster was not created within the conductor's operation timeout."
                .to_owned()
        }
        Phase::Create => format!(
            "Timed out: the cluster was not created within its create_timeout of {}.",
            minutes_text(cluster.create_timeout.unwrap_or(0).saturating_mul(60))
        ),
        Phase::Update | Phase::Rollback => format!(
            "Timed out: the {} did not finish in time (started {}).",
            operation.kind.as_str().replace('_', " "),
            operation.created_at.to_wire()
        ),
    }
}

/// What drivers push, written as it arrives: health, events, what they see between
/// operations, and the changes they propose (decided by the domain; an operation started
/// wakes the runner at once).
pub(crate) fn spawn_event_listeners(
    store: &Store,
    drivers: &DriverRegistry,
    wake: &Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut listeners = Vec::new();
    for driver in drivers.drivers() {
        let Some(mut events) = driver.events() else {
            continue;
        };
        let store = store.clone();
        let wake = wake.clone();
        let shutdown = shutdown.clone();
        listeners.push(tokio::spawn(async move {
            loop {
                if *shutdown.borrow() {
                    break;
                }
                match events.recv().await {
                    Ok(DriverEvent::Health {
                        cluster,
                        status,
                        reason,
                    }) => {
                        if let Err(error) = record_health(&store, cluster, status, reason).await {
                            tracing::warn!(cluster.id = %cluster, %error, "cannot record health");
                        }
                    }
                    Ok(DriverEvent::Event { cluster, event }) => {
                        if let Err(error) =
                            record_event(&store, cluster, &Cause::none(), event).await
                        {
                            tracing::warn!(cluster.id = %cluster, %error, "cannot record an event");
                        }
                    }
                    Ok(DriverEvent::Live { cluster, state }) => {
                        if let Err(error) = record_live(&store, cluster, &state).await {
                            tracing::warn!(cluster.id = %cluster, %error, "cannot record what the driver saw");
                        }
                    }
                    Ok(DriverEvent::Proposal {
                        cluster,
                        proposal,
                        policy,
                    }) => match record_proposal(&store, cluster, &proposal, policy).await {
                        Ok(Some(kind)) => {
                            tracing::info!(cluster.id = %cluster, operation.kind = %kind, ?proposal, "the cluster changes on its own");
                            wake.notify_one();
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(cluster.id = %cluster, %error, "cannot decide on a driver's proposal");
                        }
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "driver events were missed");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }));
    }
    listeners
}

async fn record_health(
    store: &Store,
    uuid: Uuid,
    status: magnum_domain::cluster::HealthStatus,
    reason: serde_json::Map<String, serde_json::Value>,
) -> Result<(), StoreError> {
    let now = Timestamp::now();
    match store
        .modify_cluster(
            uuid,
            &Cause::none(),
            |aggregate| -> Result<(), StoreError> {
                aggregate.set_health(Some(status), reason.clone(), now);
                Ok(())
            },
        )
        .await
    {
        Ok(_) | Err(StoreError::NotFound) => Ok(()),
        Err(error) => Err(error),
    }
}

/// A step a driver told, appended to the cluster's events (gone: nothing to record).
async fn record_event(
    store: &Store,
    uuid: Uuid,
    cause: &Cause,
    event: ClusterEvent,
) -> Result<(), StoreError> {
    match store.append_events(uuid, &[event], cause).await {
        Ok(()) | Err(StoreError::NotFound) => Ok(()),
        Err(error) => Err(error),
    }
}

async fn record_live(
    store: &Store,
    uuid: Uuid,
    state: &magnum_driver::LiveState,
) -> Result<(), StoreError> {
    let now = Timestamp::now();
    match store
        .modify_cluster(
            uuid,
            &Cause::none(),
            |aggregate| -> Result<bool, StoreError> { Ok(aggregate.follow_live(state, now)) },
        )
        .await
    {
        Ok(_) | Err(StoreError::NotFound) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Decides on a driver's proposal through the one commit path; the kind of the operation
/// started, or `None` when the domain declined it (logged) or the cluster is gone. The
/// history (the cluster's newest operations) is read just before, outside the commit's
/// transaction: a resize a user asks for after that read is still an unfinished operation
/// when the decision reads the cluster (milliseconds later; claiming and converging it take
/// longer), and the decision declines. Assumption, not enforced: no user's resize is asked
/// for, run and finished between these two reads.
async fn record_proposal(
    store: &Store,
    uuid: Uuid,
    proposal: &magnum_driver::Proposal,
    policy: magnum_driver::Policy,
) -> Result<Option<OperationKind>, StoreError> {
    use magnum_domain::automation::{
        Declined, History, HISTORY_OPERATIONS, MAX_REPLACEMENTS_READ, REPLACEMENT_WINDOW_SECONDS,
    };
    enum Decision {
        Declined(Declined),
        Store(StoreError),
    }
    impl From<StoreError> for Decision {
        fn from(error: StoreError) -> Self {
            Decision::Store(error)
        }
    }
    let now = Timestamp::now();
    let mut operations = store.recent_operations_of(uuid, HISTORY_OPERATIONS).await?;
    // The replacements of the budget's window, whatever came after them.
    let window_start =
        Timestamp::from_unix_seconds(now.unix_seconds() - REPLACEMENT_WINDOW_SECONDS);
    for replacement in store
        .operations_of_kind_since(
            uuid,
            OperationKind::ReplaceNodes,
            window_start,
            MAX_REPLACEMENTS_READ,
        )
        .await?
    {
        if !operations
            .iter()
            .any(|known| known.uuid == replacement.uuid)
        {
            operations.push(replacement);
        }
    }
    let history = History::from_operations(&operations);
    let decided = store
        .modify_cluster(uuid, &Cause::none(), |aggregate| {
            aggregate
                .decide(proposal, policy, &history, now)
                .map_err(Decision::Declined)
        })
        .await;
    match decided {
        Ok((kind, _)) => Ok(Some(kind)),
        Err(Decision::Declined(reason)) => {
            tracing::debug!(cluster.id = %uuid, %reason, ?proposal, "a driver's proposal is declined");
            Ok(None)
        }
        Err(Decision::Store(StoreError::NotFound)) => Ok(None),
        Err(Decision::Store(error)) => Err(error),
    }
}

/// Why an outcome was not written: the domain refused it, or the store failed.
enum Refusal {
    Refused(ChangeRefused),
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        Refusal::Store(error)
    }
}

/// An outcome the cluster's status can no longer take: recorded on the operation, with why.
fn refused_outcome(operation: &Operation, refused: &ChangeRefused) -> Outcome {
    tracing::warn!(operation.id = %operation.uuid, %refused, "the outcome could not be recorded on the cluster");
    Outcome::Failed {
        reason: format!("The cluster moved on before this change could be recorded: {refused}"),
    }
}

/// Where this process's PID means something: this boot of this machine (two machines may
/// share a host name, and every machine's initial PID namespace has the same inode) and this
/// PID namespace. Empty when either cannot be read.
fn process_scope() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .map(|link| link.display().to_string())
        .unwrap_or_default();
    if boot.trim().is_empty() || namespace.is_empty() {
        return String::new();
    }
    format!("{}/{namespace}", boot.trim())
}

/// Whether the conductor that named itself `owner` (`<host>/<pid>-<random>@<pid namespace>`)
/// is certainly gone: same host, same PID namespace, and no process with its PID. A PID
/// reused since is taken as alive; its leases then run out as usual.
pub(crate) fn conductor_is_dead(owner: &str, host_prefix: &str) -> bool {
    let Some(rest) = owner.strip_prefix(host_prefix) else {
        return false;
    };
    let Some((process, namespace)) = rest.split_once('@') else {
        return false;
    };
    let scope_here = process_scope();
    if scope_here.is_empty() || namespace != scope_here {
        return false;
    }
    let Some(pid) = process
        .split_once('-')
        .and_then(|(pid, _)| pid.parse::<u32>().ok())
    else {
        return false;
    };
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod dead_conductor_tests {
    use super::*;

    #[test]
    fn only_dead_conductors_of_this_host_and_namespace_are_dead() {
        let namespace = process_scope();
        assert!(!namespace.is_empty());
        let alive = format!("vm/{}-abcd1234@{namespace}", std::process::id());
        assert!(!conductor_is_dead(&alive, "vm/"));
        // PIDs above the kernel's maximum never exist.
        let dead = format!("vm/4194305-abcd1234@{namespace}");
        assert!(conductor_is_dead(&dead, "vm/"));
        assert!(!conductor_is_dead(&dead, "other/"), "another host's");
        assert!(
            !conductor_is_dead("vm/4194305-abcd1234@pid:[1]", "vm/"),
            "another namespace"
        );
        assert!(
            !conductor_is_dead("vm/4194305-abcd1234", "vm/"),
            "an older owner name"
        );
        assert!(!conductor_is_dead("vm/x-abcd1234@", "vm/"));
        let other_boot = format!(
            "vm/4194305-abcd1234@00000000-0000-0000-0000-000000000000/{}",
            namespace.rsplit('/').next().unwrap()
        );
        assert!(
            !conductor_is_dead(&other_boot, "vm/"),
            "another machine or boot"
        );
    }
}

/// How often at most the conductor looks for delegated credentials whose revocation is due
/// (twice per grace when the grace is shorter), and how many it revokes per look.
const REVOCATION_SWEEP: Duration = Duration::from_secs(60);
const REVOCATIONS_PER_SWEEP: i64 = 100;

/// Revokes `credentials` in Keystone and forgets each one revoked. One that cannot be revoked
/// now stays recorded and is tried again by the next sweep; the failure is the operator's to
/// see, not a tenant's.
pub(crate) async fn revoke_credentials(
    store: &Store,
    revoker: &dyn magnum_driver::CredentialRevoker,
    credentials: &[StoredCredential],
) {
    for credential in credentials {
        let (cluster, id) = (credential.cluster_uuid, &credential.credential_id);
        match revoker.revoke(&credential.user_id, id).await {
            Ok(()) => {
                tracing::info!(cluster.id = %cluster, credential.id = %id, "delegated application credential revoked");
                if let Err(error) = store.remove_cluster_credential(cluster, id).await {
                    tracing::warn!(cluster.id = %cluster, %error, "cannot forget a revoked credential");
                }
            }
            Err(error) => {
                tracing::error!(cluster.id = %cluster, credential.id = %id, %error,
                    "cannot revoke a delegated application credential; the next sweep tries again");
                if let Err(error) = store.record_revocation_failure(cluster, id).await {
                    tracing::warn!(cluster.id = %cluster, %error, "cannot count a failed revocation");
                }
            }
        }
    }
}

/// Every [`REVOCATION_SWEEP`] (or half the grace): revokes the delegated credentials that are
/// due (replaced and past their grace, left by a deleted cluster, or scheduled by a force
/// delete).
pub(crate) async fn revocation_sweep(
    store: Store,
    revoker: Arc<dyn magnum_driver::CredentialRevoker>,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = (grace / 2).clamp(Duration::from_secs(1), REVOCATION_SWEEP);
    loop {
        match store
            .credentials_due_for_revocation(Timestamp::now(), REVOCATIONS_PER_SWEEP)
            .await
        {
            Ok(due) => revoke_credentials(&store, revoker.as_ref(), &due).await,
            Err(error) => tracing::warn!(%error, "cannot look for credentials to revoke"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_records::nodegroup;

    #[test]
    fn each_operation_asks_the_driver_for_its_action() {
        let (master, worker) = (nodegroup("master"), nodegroup("worker"));
        let groups = [master.clone(), worker.clone()];
        let cases = [
            (OperationKind::CreateCluster, None, Action::CreateCluster),
            (
                OperationKind::UpdateCluster,
                Some(worker.uuid),
                Action::ScaleWorkers,
            ),
            (
                OperationKind::ResizeCluster,
                Some(master.uuid),
                Action::ScaleMasters,
            ),
            // A resize whose nodegroup went meanwhile scales workers: never masters by accident.
            (
                OperationKind::ResizeCluster,
                Some(Uuid::new_v4()),
                Action::ScaleWorkers,
            ),
            (OperationKind::UpgradeCluster, None, Action::UpgradeCluster),
            (OperationKind::DeleteCluster, None, Action::DeleteCluster),
            (OperationKind::RotateCa, None, Action::RotateCa),
            (
                OperationKind::RotateCredentials,
                None,
                Action::RotateCredentials,
            ),
            (
                OperationKind::CreateNodegroup,
                Some(worker.uuid),
                Action::CreateNodegroup,
            ),
            (
                OperationKind::UpdateNodegroup,
                Some(worker.uuid),
                Action::UpdateNodegroup,
            ),
            (
                OperationKind::DeleteNodegroup,
                Some(worker.uuid),
                Action::DeleteNodegroup,
            ),
        ];
        for (kind, target, action) in cases {
            assert_eq!(action_of(kind, &groups, target), action, "{kind}");
        }
    }

    #[test]
    fn a_timeout_names_what_the_change_was_waiting_for() {
        let base = "Timed out: the cluster was not created within its create_timeout of 1 minute.";
        assert_eq!(
            with_last_report(
                base.to_owned(),
                Some("machine m-1: Quota exceeded".to_owned())
            ),
            format!("{base} Last: machine m-1: Quota exceeded")
        );
        assert_eq!(with_last_report(base.to_owned(), None), base);
        assert_eq!(
            with_last_report(base.to_owned(), Some("  ".to_owned())),
            base
        );
    }

    #[test]
    fn timeouts_say_which_bound_ran_out_in_words() {
        assert_eq!(minutes_text(59), "59 seconds");
        assert_eq!(minutes_text(60), "1 minute");
        assert_eq!(minutes_text(7200), "120 minutes");
        let mut cluster = crate::test_records::cluster();
        let operation = Operation::new(
            cluster.uuid,
            OperationKind::ResizeCluster,
            String::new(),
            Timestamp::from_unix_seconds(0),
        );
        cluster.create_timeout = Some(30);
        assert_eq!(
            timed_out(Phase::Create, &operation, &cluster),
            "Timed out: the cluster was not created within its create_timeout of 30 minutes."
        );
        cluster.create_timeout = Some(0);
        assert_eq!(
            timed_out(Phase::Create, &operation, &cluster),
            "Timed out: the cluster was not created within the conductor's operation timeout."
        );
        assert_eq!(
            timed_out(Phase::Update, &operation, &cluster),
            "Timed out: the resize cluster did not finish in time (started 1970-01-01T00:00:00+00:00)."
        );
    }

    #[test]
    fn deadlines_that_passed_leave_no_time() {
        assert_eq!(remaining(None), None);
        let past = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() - 10);
        assert_eq!(remaining(Some(past)), Some(Duration::ZERO));
        let future = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 100);
        assert!(remaining(Some(future)).unwrap() > Duration::from_secs(90));
    }
}
