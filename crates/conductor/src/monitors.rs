//! Monitor leases: with several conductors, one at a time watches and heals a given cluster.
//! Every [`pass_period`] the conductor asks its drivers which clusters they could watch
//! (`Driver::monitorable_clusters`), renews its leases and takes those nobody holds
//! (`Store::claim_monitors`, a compare-and-set like the operations queue's), and tells each
//! driver what it now holds, valid until one second before the lease could run out
//! (`Driver::monitor_only`), so that a conductor that can no longer renew stops watching
//! before anyone else may start. A conductor that stops hands its leases back; a dead one's
//! are ended at once by a conductor of the same host and PID namespace that sees its process
//! gone, otherwise they run out after `conductor.lease`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use magnum_domain::time::Timestamp;
use magnum_driver::{Driver, DriverRegistry};
use magnum_store::Store;
use tokio::sync::watch;
use uuid::Uuid;

use crate::runner::conductor_is_dead;

/// How often leases are renewed and taken: a fifth of the lease, between 200 ms and 2 s
/// (2 s with the default 10 s lease). A cluster whose holder stopped is taken within one
/// period; one whose holder died elsewhere within the lease and one period.
pub(crate) fn pass_period(lease: Duration) -> Duration {
    (lease / 5).clamp(Duration::from_millis(200), Duration::from_secs(2))
}

/// Rows whose lease ran out this long ago are dropped (clusters nobody watches any more).
const STALE_AFTER_SECONDS: i64 = 3600;
/// Every this many passes, stale rows are looked for.
const STALE_SWEEP_PASSES: u64 = 30;
/// Every this many passes (10 s with the default lease), held clusters whose deletion is
/// recorded but that a driver still has things of are released.
const RELEASE_PASSES: u64 = 5;
/// The most such clusters released at once.
const MAX_RELEASES: usize = 4;
/// How long one release may take before it is given up (and tried again later): one stuck
/// (a hung process holding the cluster) must not stop the others.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) struct MonitorLeases {
    pub(crate) store: Store,
    pub(crate) drivers: DriverRegistry,
    /// This conductor's name on its leases (the same as on operations).
    pub(crate) owner: String,
    pub(crate) host: String,
    pub(crate) lease: Duration,
}

impl MonitorLeases {
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // However this ends (stopped, or the conductor's future dropped as a killed process
        // would end), the drivers stop watching with it.
        let _stop_watching = StopWatching(self.drivers.clone());
        let period = pass_period(self.lease);
        let mut passes: u64 = 0;
        // Releases run beside the passes (a teardown takes seconds; leases must be renewed
        // meanwhile) and end with this future.
        let mut releases = tokio::task::JoinSet::new();
        loop {
            while releases.try_join_next().is_some() {}
            self.pass(passes, &mut releases).await;
            passes += 1;
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        // Handed back at once: the next holder need not wait for the lease.
        for driver in self.drivers.drivers() {
            driver.monitor_only(HashSet::new(), Instant::now());
        }
        match self.store.release_monitors(&self.owner).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "cluster monitors handed back"),
            Err(error) => tracing::warn!(%error, "cannot hand cluster monitors back"),
        }
    }

    async fn pass(&self, passes: u64, releases: &mut tokio::task::JoinSet<()>) {
        let started = Instant::now();
        let mut watching: Vec<(Arc<dyn Driver>, Vec<Uuid>)> = Vec::new();
        for driver in self.drivers.drivers() {
            if let Some(clusters) = driver.monitorable_clusters().await {
                watching.push((driver.clone(), clusters));
            }
        }
        if watching.is_empty() {
            return;
        }
        self.end_leases_of_dead_conductors().await;
        let all: Vec<Uuid> = watching
            .iter()
            .flat_map(|(_, clusters)| clusters.iter().copied())
            .collect();
        let lease_seconds = i64::try_from(self.lease.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        match self
            .store
            .claim_monitors(&self.owner, &all, Timestamp::now(), lease_seconds)
            .await
        {
            Ok(held) => {
                let held: HashSet<Uuid> = held.into_iter().collect();
                // The stored lease ends at a whole second at least `lease` after `started`
                // minus up to a second of rounding: stop watching before it may.
                let until = started + self.lease.saturating_sub(Duration::from_secs(1));
                let mut held_by_driver = Vec::new();
                for (driver, clusters) in watching {
                    let mine: HashSet<Uuid> = clusters
                        .into_iter()
                        .filter(|cluster| held.contains(cluster))
                        .collect();
                    driver.monitor_only(mine.clone(), until);
                    held_by_driver.push((driver, mine));
                }
                if passes.is_multiple_of(RELEASE_PASSES) && releases.is_empty() {
                    self.release_deleted(held_by_driver, releases).await;
                }
            }
            // What the drivers were told runs out on its own.
            Err(error) => tracing::warn!(%error, "cannot renew cluster monitor leases"),
        }
        if passes.is_multiple_of(STALE_SWEEP_PASSES) {
            let before =
                Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() - STALE_AFTER_SECONDS);
            if let Err(error) = self.store.forget_stale_monitors(before).await {
                tracing::warn!(%error, "cannot drop stale cluster monitor leases");
            }
        }
    }

    /// Asks the drivers to release what is left of held clusters whose deletion is recorded
    /// and whose records are gone (a forced delete whose teardown died with its process), at
    /// most [`MAX_RELEASES`] at a time. Clusters the database knows nothing of are left alone:
    /// they may be another database's.
    async fn release_deleted(
        &self,
        held_by_driver: Vec<(Arc<dyn Driver>, HashSet<Uuid>)>,
        releases: &mut tokio::task::JoinSet<()>,
    ) {
        let held: Vec<Uuid> = held_by_driver
            .iter()
            .flat_map(|(_, clusters)| clusters.iter().copied())
            .collect();
        if held.is_empty() {
            return;
        }
        let deleted: HashSet<Uuid> = match self.store.deleted_clusters_among(&held).await {
            Ok(deleted) => deleted.into_iter().collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot look for deleted clusters left on this host");
                return;
            }
        };
        let chosen = held_by_driver
            .into_iter()
            .flat_map(|(driver, clusters)| {
                clusters
                    .into_iter()
                    .filter(|cluster| deleted.contains(cluster))
                    .map(move |cluster| (driver.clone(), cluster))
            })
            .take(MAX_RELEASES);
        for (driver, cluster) in chosen {
            releases.spawn(async move {
                match tokio::time::timeout(RELEASE_TIMEOUT, driver.release_deleted(cluster)).await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(cluster.id = %cluster, %error, "cannot release a deleted cluster's remains");
                    }
                    Err(_) => {
                        tracing::warn!(cluster.id = %cluster, "releasing a deleted cluster's remains takes too long; tried again later");
                    }
                }
            });
        }
    }

    /// Ends at once the monitor leases of conductors of this host and PID namespace whose
    /// process is gone, as for operations.
    async fn end_leases_of_dead_conductors(&self) {
        let prefix = format!("{}/", self.host);
        let owners = match self.store.monitor_owners(&prefix).await {
            Ok(owners) => owners,
            Err(error) => {
                tracing::warn!(%error, "cannot look for cluster monitors of dead conductors");
                return;
            }
        };
        for owner in owners {
            if owner == self.owner || !conductor_is_dead(&owner, &prefix) {
                continue;
            }
            match self.store.expire_monitors(&owner).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(previous = %owner, count,
                    "taking over the cluster monitors of a conductor of this host that died"),
                Err(error) => tracing::warn!(%error, "cannot take over cluster monitors"),
            }
        }
    }
}

/// Tells the drivers to watch nothing when dropped.
struct StopWatching(DriverRegistry);

impl Drop for StopWatching {
    fn drop(&mut self) {
        for driver in self.0.drivers() {
            driver.monitor_only(HashSet::new(), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_come_five_times_a_lease_within_bounds() {
        assert_eq!(pass_period(Duration::from_secs(10)), Duration::from_secs(2));
        assert_eq!(
            pass_period(Duration::from_secs(3)),
            Duration::from_millis(600)
        );
        assert_eq!(
            pass_period(Duration::from_secs(600)),
            Duration::from_secs(2)
        );
        assert_eq!(
            pass_period(Duration::from_millis(500)),
            Duration::from_millis(200)
        );
    }
}
