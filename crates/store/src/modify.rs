//! The one commit path for cluster changes, and the one retry policy of the store.
//!
//! Every change to a cluster or its nodegroups, from the API or the conductor, is read →
//! decide (a pure function of the domain's aggregate) → compare-and-set, in
//! [`Store::modify_cluster`]. A write that lost a race (another writer changed the cluster
//! since it was read) or that the database broke off for a reason that a second try can fix
//! (a deadlock on MariaDB, a serialization failure on PostgreSQL, a busy SQLite) is tried
//! again on fresh data after a short random pause, at most [`MODIFY_ATTEMPTS`] times.

use std::future::Future;
use std::time::Duration;

use magnum_domain::aggregate::ClusterAggregate;
use magnum_domain::cluster::NodeGroup;
use magnum_domain::cluster_template::ClusterTemplate;
use magnum_domain::event::{describe_change, Cause};
use uuid::Uuid;

use crate::clusters::ClusterChange;
use crate::{Store, StoreError, TemplateScope};

/// Tries of one read–decide–write cycle before the store gives up with `Busy`; the pauses
/// between them add up to about 3 s.
pub const MODIFY_ATTEMPTS: u32 = 40;

/// And however few tries that is, no retry starts after this long: a lock wait can itself
/// take seconds (SQLite's busy timeout, InnoDB's lock wait timeout).
pub const MODIFY_DEADLINE: Duration = Duration::from_secs(10);

/// Whether another try may start: within both bounds.
fn may_retry(attempt: u32, started: std::time::Instant) -> bool {
    attempt < MODIFY_ATTEMPTS && started.elapsed() < MODIFY_DEADLINE
}

/// The pause before try `attempt + 1`: random in [d/2, d] with d doubling from 4 ms up to
/// 100 ms, so that writers that collided spread out instead of colliding again.
async fn pause(attempt: u32) {
    let ceiling_ms = (2u64 << attempt.min(6)).min(100);
    let random = Uuid::new_v4().as_u128() as u64;
    let wait_ms = ceiling_ms / 2 + random % (ceiling_ms / 2 + 1);
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
}

impl Store {
    /// Runs `once` again while it fails for a reason another try can fix (see
    /// [`StoreError::is_transient`]), at most [`MODIFY_ATTEMPTS`] times; then `Busy`.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut once: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let (mut attempt, started) = (0, std::time::Instant::now());
        loop {
            match once().await {
                Err(error) if error.is_transient() => {
                    attempt += 1;
                    if !may_retry(attempt, started) {
                        tracing::warn!(%error, attempts = attempt, "giving up on a busy record");
                        return Err(StoreError::Busy);
                    }
                    pause(attempt).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// The one way to change a cluster: reads it with its nodegroups, lets `decide` change
    /// them (and name an operation), and writes the difference compare-and-set with the
    /// operation and the events the change tells (caused by `cause`) in one transaction; on
    /// a lost race, again on fresh data. `decide` must be
    /// pure: it may run several times. Nothing is written when it changes nothing.
    ///
    /// Returns what `decide` returned with the aggregate as stored. `NotFound` when the
    /// cluster does not exist (or went while deciding); `Busy` after [`MODIFY_ATTEMPTS`].
    pub async fn modify_cluster<T, E, F>(
        &self,
        uuid: Uuid,
        cause: &Cause,
        mut decide: F,
    ) -> Result<(T, ClusterAggregate), E>
    where
        F: FnMut(&mut ClusterAggregate) -> Result<T, E>,
        E: From<StoreError>,
    {
        let (mut attempt, started) = (0, std::time::Instant::now());
        loop {
            let Some(cluster) = self.cluster_by_uuid(uuid).await? else {
                return Err(StoreError::NotFound.into());
            };
            let nodegroups = self.nodegroups_of_cluster(uuid).await?;
            let mut original = ClusterAggregate::new(cluster, nodegroups);
            original.unfinished_operations = self
                .unfinished_operations_of(uuid)
                .await?
                .iter()
                .map(|operation| operation.id)
                .collect();
            let mut changed = original.clone();
            let value = decide(&mut changed)?;
            if changed == original {
                return Ok((value, original));
            }
            match self.commit_aggregate(&original, &changed, cause).await {
                Ok(stored) => return Ok((value, stored)),
                Err(error) if error.is_transient() => {
                    attempt += 1;
                    if !may_retry(attempt, started) {
                        tracing::warn!(cluster.id = %uuid, %error, "giving up on a busy cluster");
                        return Err(StoreError::Busy.into());
                    }
                    pause(attempt).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The one way to change a cluster template: reads it, lets `decide` return the new
    /// version (`None`: no change) and whether the change needs the template unused, and
    /// writes it compare-and-set; on a lost race, again on fresh data. Returns the stored
    /// template. `NotFound` when it is gone, `InUse` when the change needs it unused and a
    /// cluster uses it, `Busy` after [`MODIFY_ATTEMPTS`].
    pub async fn modify_cluster_template<E, F>(
        &self,
        uuid: Uuid,
        mut decide: F,
    ) -> Result<ClusterTemplate, E>
    where
        F: FnMut(&ClusterTemplate) -> Result<Option<(ClusterTemplate, bool)>, E>,
        E: From<StoreError>,
    {
        let (mut attempt, started) = (0, std::time::Instant::now());
        loop {
            let Some(current) = self
                .cluster_template_by_uuid(uuid, TemplateScope::All)
                .await?
            else {
                return Err(StoreError::NotFound.into());
            };
            let Some((updated, only_if_unused)) = decide(&current)? else {
                return Ok(current);
            };
            match self.update_cluster_template(&updated, only_if_unused).await {
                Ok(stored) => return Ok(stored),
                Err(error) if error.is_transient() => {
                    attempt += 1;
                    if !may_retry(attempt, started) {
                        tracing::warn!(cluster_template.id = %uuid, %error, "giving up on a busy template");
                        return Err(StoreError::Busy.into());
                    }
                    pause(attempt).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Writes the difference between two states of one aggregate.
    async fn commit_aggregate(
        &self,
        original: &ClusterAggregate,
        changed: &ClusterAggregate,
        cause: &Cause,
    ) -> Result<ClusterAggregate, StoreError> {
        let events = describe_change(original, changed);
        let written: Vec<NodeGroup> = changed
            .nodegroups
            .iter()
            .filter(|nodegroup| {
                nodegroup.id == 0
                    || original
                        .nodegroups
                        .iter()
                        .find(|before| before.uuid == nodegroup.uuid)
                        .is_none_or(|before| before != *nodegroup)
            })
            .cloned()
            .collect();
        let removed: Vec<Uuid> = original
            .nodegroups
            .iter()
            .filter(|before| {
                !changed
                    .nodegroups
                    .iter()
                    .any(|nodegroup| nodegroup.uuid == before.uuid)
            })
            .map(|before| before.uuid)
            .collect();
        let (cluster, nodegroups) = self
            .commit_cluster_change(ClusterChange {
                cluster: &changed.cluster,
                nodegroups: &written,
                removed_nodegroups: &removed,
                operation: changed.operation.as_ref(),
                events: &events,
                cause,
            })
            .await?;
        Ok(ClusterAggregate {
            cluster,
            nodegroups,
            operation: changed.operation.clone(),
            unfinished_operations: changed.unfinished_operations.clone(),
            events: Vec::new(),
        })
    }
}
