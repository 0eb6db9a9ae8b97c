//! The health monitor: health is pushed, not polled. Every running node's first process (the
//! `unshare` recorded in `node.pid`) is watched through a pidfd, which becomes readable the
//! moment that process exits (dockerd died: docker-init exits with it, and the node's PID
//! namespace with them); the monitor then looks at that cluster at once. A poll every
//! [`HEALTH_INTERVAL`] stays as the safety net (a swarm that lost a node's heartbeat, a node
//! started while nobody watched, a kernel without pidfds).
//!
//! It looks only at clusters whose monitor lease this process's conductor holds
//! ([`Shared::hold`]), so that with several conductors one at a time reports and heals a
//! cluster. Healing restarts dead nodes and proposes replacing those that stay broken; the
//! autoscaler (every `drivers.local.autoscaler.scan_interval`, HEALTHY clusters with an
//! autoscaled nodegroup) proposes scaling from the workload. Proposals go to the conductor
//! (`DriverEvent::Proposal`), where the domain decides. Bounds: one watch per node (at most
//! [`MAX_WATCHED_NODES`]), one heal under way per cluster and at most one started per
//! [`HEALTH_INTERVAL`], a burst of deaths looked at once after [`WAKE_DEBOUNCE`], one look and
//! one autoscaler look under way per cluster (its manager gets
//! [`crate::runtime::HEALTH_COMMAND_TIMEOUT`] to answer, each API read 10 s).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use magnum_domain::cluster::HealthStatus;
use magnum_driver::DriverEvent;
use tokio::sync::{broadcast, Notify};
use uuid::Uuid;

use crate::runtime::Runtime;

/// How often every held cluster is looked at even when no node died.
pub(crate) const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// How long after a death the monitor waits for others (a manager and its workers killed
/// together) before looking: one look for all of them.
pub(crate) const WAKE_DEBOUNCE: Duration = Duration::from_millis(50);
/// The most node processes watched at once; past it, the poll covers the rest.
pub(crate) const MAX_WATCHED_NODES: usize = 4096;

/// What the monitor shares with the driver and with its node watches.
#[derive(Default)]
pub(crate) struct Shared {
    held: Mutex<Held>,
    /// Clusters to look at now (a node died, the lease was just taken).
    woken: Mutex<HashSet<Uuid>>,
    wake: Notify,
    /// The PID watched per (cluster, node).
    watched: Mutex<HashMap<(Uuid, String), i32>>,
}

#[derive(Default)]
struct Held {
    clusters: HashSet<Uuid>,
    until: Option<Instant>,
}

impl Held {
    fn current(&self) -> Option<&HashSet<Uuid>> {
        self.until
            .is_some_and(|until| Instant::now() < until)
            .then_some(&self.clusters)
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// The clusters this process holds monitor leases of, until `until`. Clusters newly
    /// held are looked at at once (a holder that died may have left one dead).
    pub(crate) fn hold(&self, clusters: HashSet<Uuid>, until: Instant) {
        let added: Vec<Uuid> = {
            let mut held = locked(&self.held);
            let before = held.current().cloned().unwrap_or_default();
            let added = clusters.difference(&before).copied().collect();
            *held = Held {
                clusters,
                until: Some(until),
            };
            added
        };
        for cluster in added {
            self.wake_for(cluster);
        }
    }

    fn holds(&self, cluster: Uuid) -> bool {
        locked(&self.held)
            .current()
            .is_some_and(|clusters| clusters.contains(&cluster))
    }

    fn held_now(&self) -> HashSet<Uuid> {
        locked(&self.held).current().cloned().unwrap_or_default()
    }

    /// Looks at `cluster` at once (a node died; a change of it just ended).
    pub(crate) fn wake_for(&self, cluster: Uuid) {
        locked(&self.woken).insert(cluster);
        self.wake.notify_one();
    }

    fn take_woken(&self) -> Vec<Uuid> {
        locked(&self.woken).drain().collect()
    }

    /// Watches `pid`, the node's first process, unless it is watched already: its exit
    /// wakes the monitor for `cluster`. A process gone already, or a kernel without pidfds
    /// (before Linux 5.3), is left to the poll.
    /// `still_the_node` says whether `pid` is still the node's (checked once the descriptor
    /// is open).
    fn watch(
        self: &Arc<Self>,
        cluster: Uuid,
        node: &str,
        pid: i32,
        still_the_node: impl FnOnce() -> bool,
    ) {
        let key = (cluster, node.to_owned());
        let mut watched = locked(&self.watched);
        if watched.get(&key) == Some(&pid)
            || (!watched.contains_key(&key) && watched.len() >= MAX_WATCHED_NODES)
        {
            return;
        }
        let Some(process) = rustix::process::Pid::from_raw(pid) else {
            return;
        };
        let Ok(descriptor) =
            rustix::process::pidfd_open(process, rustix::process::PidfdFlags::empty())
        else {
            return;
        };
        // The PID was the node's when read; still the node's now that the descriptor is
        // open, the descriptor is the node's (a PID reused in between is never watched).
        if !still_the_node() {
            return;
        }
        let Ok(descriptor) = readable_when_exited(descriptor) else {
            return;
        };
        watched.insert(key.clone(), pid);
        let shared = self.clone();
        tokio::spawn(async move {
            // Readable once the process has exited; an error ends the watch the same way.
            let _ = descriptor.readable().await;
            {
                let mut watched = locked(&shared.watched);
                if watched.get(&key) == Some(&pid) {
                    watched.remove(&key);
                }
            }
            tracing::debug!(cluster.id = %key.0, node = %key.1, pid, "node process exited");
            shared.wake_for(key.0);
        });
    }
}

/// The pidfd registered with tokio's reactor (it is readable once the process has exited).
#[expect(
    deprecated,
    reason = "the safe constructor is deprecated for descriptors an `AsRawFd` type may swap or \
              close behind tokio's back; an `OwnedFd` owns one descriptor for its whole life, \
              and unsafe code (the replacement) is forbidden in this workspace"
)]
fn readable_when_exited(
    descriptor: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    tokio::io::unix::AsyncFd::with_interest(descriptor, tokio::io::Interest::READABLE)
}

/// Publishes the health of the clusters this process holds whenever it changes (and once
/// when a cluster is taken), heals them when asked, and ends when nobody listens. Each look
/// runs as a task of its own (one per cluster at a time; a cluster woken meanwhile is looked
/// at again once it ends), so that a manager slow to answer delays only its own cluster.
pub(crate) async fn run(
    runtime: Runtime,
    sender: broadcast::Sender<DriverEvent>,
    shared: Arc<Shared>,
) {
    let mut last: HashMap<Uuid, (HealthStatus, serde_json::Map<String, serde_json::Value>)> =
        HashMap::new();
    let healing: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
    let pacer: Arc<Mutex<Pacer>> = Arc::default();
    let (checked, mut results) = tokio::sync::mpsc::unbounded_channel();
    let mut looks = Looks {
        in_flight: HashSet::new(),
        again: HashSet::new(),
        runtime: runtime.clone(),
        checked,
    };
    let mut firewall_repair: Option<tokio::task::JoinHandle<()>> = None;
    let mut next_tick = tokio::time::Instant::now() + HEALTH_INTERVAL;
    let heal_memory: Arc<Mutex<crate::runtime::HealMemory>> = Arc::default();
    let policy = magnum_driver::Policy {
        cool_down_seconds: i64::try_from(runtime.autoscaler.cool_down).unwrap_or(i64::MAX),
    };
    let scan_interval = Duration::from_secs(runtime.autoscaler.scan_interval.max(1));
    let mut next_scan = tokio::time::Instant::now() + scan_interval;
    let watches: Arc<Mutex<HashMap<Uuid, crate::autoscaler::Watch>>> = Arc::default();
    let scanning: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next_scan), if runtime.autoscaler.enabled => {
                next_scan = tokio::time::Instant::now() + scan_interval;
                let held = shared.held_now();
                locked(&watches).retain(|cluster, _| held.contains(cluster));
                for cluster in held {
                    // Healing comes first: a cluster not known HEALTHY is not autoscaled.
                    let healthy = last
                        .get(&cluster)
                        .is_some_and(|(status, _)| *status == HealthStatus::Healthy);
                    if !healthy
                        || !runtime.is_autoscaled(cluster)
                        || !locked(&scanning).insert(cluster)
                    {
                        continue;
                    }
                    let (runtime, sender, shared, watches, scanning) = (
                        runtime.clone(),
                        sender.clone(),
                        shared.clone(),
                        watches.clone(),
                        scanning.clone(),
                    );
                    tokio::spawn(async move {
                        let proposals = runtime.autoscale_look(cluster, &watches).await;
                        if shared.holds(cluster) {
                            for proposal in proposals {
                                tracing::debug!(cluster.id = %cluster, ?proposal,
                                    "the autoscaler proposes");
                                let _ = sender.send(DriverEvent::Proposal {
                                    cluster,
                                    proposal,
                                    policy,
                                });
                            }
                        }
                        locked(&scanning).remove(&cluster);
                    });
                }
            }
            () = tokio::time::sleep_until(next_tick) => {
                next_tick = tokio::time::Instant::now() + HEALTH_INTERVAL;
                if firewall_repair.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                    let runtime = runtime.clone();
                    firewall_repair =
                        Some(tokio::spawn(async move { runtime.restore_firewalls().await }));
                }
                let held = shared.held_now();
                // A cluster held again later is published again (and healed afresh).
                last.retain(|cluster, _| held.contains(cluster));
                locked(&heal_memory).retain(|(cluster, _), _| held.contains(cluster));
                for cluster in runtime.known_clusters() {
                    if held.contains(&cluster) {
                        looks.start(cluster);
                    }
                }
            }
            () = shared.wake.notified() => {
                tokio::time::sleep(WAKE_DEBOUNCE).await;
                for cluster in shared.take_woken() {
                    if shared.holds(cluster) {
                        looks.start(cluster);
                    }
                }
            }
            Some((cluster, report)) = results.recv() => {
                looks.in_flight.remove(&cluster);
                if looks.again.remove(&cluster) && shared.holds(cluster) {
                    looks.start(cluster);
                }
                let Some(report) = report else {
                    continue;
                };
                for (node, pid) in runtime.node_pids(cluster) {
                    shared.watch(cluster, &node, pid, || {
                        runtime.node_pid(cluster, &node) == Some(pid)
                    });
                }
                crate::runtime::settle_healing(
                    &heal_memory,
                    cluster,
                    &report,
                    &runtime.node_names(cluster),
                    Instant::now(),
                );
                let current = (report.status, report.reason.clone());
                if last.get(&cluster) != Some(&current) {
                    last.insert(cluster, current);
                    tracing::debug!(cluster.id = %cluster, status = %report.status.as_str(), "health changed");
                    // No subscriber (no conductor in this process) is fine: nobody to tell.
                    let _ = sender.send(DriverEvent::Health {
                        cluster,
                        status: report.status,
                        reason: report.reason,
                    });
                }
                // Healing comes after the report, so that the death is told at once; it runs
                // beside the monitor (a restart takes seconds), one per cluster.
                if report.needs_healing && locked(&healing).insert(cluster) {
                    let (runtime, sender, shared, healing, pacer, heal_memory) = (
                        runtime.clone(),
                        sender.clone(),
                        shared.clone(),
                        healing.clone(),
                        pacer.clone(),
                        heal_memory.clone(),
                    );
                    let (broken, quorum) = (report.broken, report.quorum);
                    tokio::spawn(async move {
                        let started = tokio::time::Instant::now();
                        if shared.holds(cluster) {
                            let healed = runtime.heal(cluster, &broken, &heal_memory).await;
                            for event in healed.events {
                                let now = tokio::time::Instant::now();
                                if let Some(event) = paced(&pacer, cluster, event, now) {
                                    let _ = sender.send(DriverEvent::Event { cluster, event });
                                }
                            }
                            // Without the quorum nothing is proposed: the report says why.
                            if quorum.holds() && shared.holds(cluster) {
                                for proposal in replacements(healed.replace, quorum) {
                                    tracing::info!(cluster.id = %cluster, ?proposal,
                                        "auto-healing asks for a replacement");
                                    let _ = sender.send(DriverEvent::Proposal {
                                        cluster,
                                        proposal,
                                        policy,
                                    });
                                }
                            }
                        }
                        // Looked at again at once: the new node is watched, its health told.
                        shared.wake_for(cluster);
                        // A node that keeps dying is restarted at most once per interval.
                        tokio::time::sleep_until(started + HEALTH_INTERVAL).await;
                        locked(&healing).remove(&cluster);
                    });
                }
            }
        }
        if sender.receiver_count() == 0 {
            break;
        }
    }
}

/// One replacement proposal per nodegroup, naming its nodes and why each goes.
fn replacements(
    nodes: Vec<(Uuid, String, String)>,
    quorum: magnum_driver::Quorum,
) -> Vec<magnum_driver::Proposal> {
    let mut by_group: Vec<(Uuid, Vec<String>, Vec<String>)> = Vec::new();
    for (group, node, why) in nodes {
        match by_group.iter_mut().find(|(known, _, _)| *known == group) {
            Some((_, names, reasons)) => {
                names.push(node.clone());
                reasons.push(format!("{node}: {why}"));
            }
            None => by_group.push((group, vec![node.clone()], vec![format!("{node}: {why}")])),
        }
    }
    by_group
        .into_iter()
        .map(
            |(nodegroup, nodes, reasons)| magnum_driver::Proposal::Replace {
                nodegroup,
                why: if nodes.len() == 1 {
                    reasons[0]
                        .split_once(": ")
                        .map_or(reasons[0].clone(), |(_, why)| why.to_owned())
                } else {
                    reasons.join("; ")
                },
                nodes,
                quorum,
            },
        )
        .collect()
}

/// The looks under way: at most one per cluster.
struct Looks {
    in_flight: HashSet<Uuid>,
    /// Clusters woken while a look was under way: looked at again when it ends.
    again: HashSet<Uuid>,
    runtime: Runtime,
    checked: tokio::sync::mpsc::UnboundedSender<(Uuid, Option<crate::runtime::HealthReport>)>,
}

impl Looks {
    fn start(&mut self, cluster: Uuid) {
        if !self.in_flight.insert(cluster) {
            self.again.insert(cluster);
            return;
        }
        let (runtime, checked) = (self.runtime.clone(), self.checked.clone());
        tokio::spawn(async move {
            let report = runtime.check_health(cluster).await;
            let _ = checked.send((cluster, report));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_clusters_are_looked_at_when_taken_and_lapse_at_their_deadline() {
        let shared = Shared::default();
        let (kept, dropped) = (Uuid::new_v4(), Uuid::new_v4());
        let later = Instant::now() + Duration::from_secs(60);
        shared.hold(HashSet::from([kept, dropped]), later);
        assert!(shared.holds(kept) && shared.holds(dropped));
        let mut woken = shared.take_woken();
        woken.sort_unstable();
        let mut expected = vec![kept, dropped];
        expected.sort_unstable();
        assert_eq!(woken, expected, "newly held clusters are looked at at once");
        shared.hold(HashSet::from([kept]), later);
        assert!(
            shared.take_woken().is_empty(),
            "renewed: nothing new to look at"
        );
        assert!(shared.holds(kept) && !shared.holds(dropped));
        // A conductor that could not renew: nothing is held past the deadline.
        shared.hold(HashSet::from([kept]), Instant::now());
        assert!(!shared.holds(kept));
        assert!(shared.held_now().is_empty());
        // Held again after lapsing: looked at again.
        shared.hold(HashSet::from([kept]), later);
        assert_eq!(shared.take_woken(), vec![kept]);
    }

    /// The pidfd wakes the monitor when the process exits, once per watch, and a process
    /// watched already is not watched twice.
    #[tokio::test]
    async fn a_watched_process_that_exits_wakes_the_monitor_for_its_cluster() {
        let shared = Arc::new(Shared::default());
        let cluster = Uuid::new_v4();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let pid = i32::try_from(child.id()).unwrap();
        shared.watch(cluster, "n1", pid, || true);
        shared.watch(cluster, "n1", pid, || true);
        assert_eq!(locked(&shared.watched).len(), 1);
        // A PID that is no longer the node's once opened is not watched.
        shared.watch(cluster, "n2", pid, || false);
        assert_eq!(locked(&shared.watched).len(), 1);
        assert!(shared.take_woken().is_empty());
        let killed = Instant::now();
        child.kill().unwrap();
        tokio::time::timeout(Duration::from_secs(1), shared.wake.notified())
            .await
            .expect("woken within a second of the exit");
        println!("woken {} µs after the kill", killed.elapsed().as_micros());
        assert_eq!(shared.take_woken(), vec![cluster]);
        assert!(locked(&shared.watched).is_empty(), "the watch ended");
        child.wait().unwrap();
    }
}

/// A node that keeps dying is restarted every interval; its events are told at most once per
/// [`EVENT_PACE`] per node and reason (the next one says how many were left out), so that a
/// crash-looping node cannot push a cluster's history out of its bounded event log.
const EVENT_PACE: std::time::Duration = std::time::Duration::from_secs(60);
/// Nodes and reasons the pacer remembers; past it, entries older than the pace are dropped.
const PACED_ENTRIES: usize = 4_096;

type Pacer = std::collections::HashMap<(Uuid, String, String), (tokio::time::Instant, u32)>;

fn paced(
    pacer: &Mutex<Pacer>,
    cluster: Uuid,
    mut event: magnum_driver::ClusterEvent,
    now: tokio::time::Instant,
) -> Option<magnum_driver::ClusterEvent> {
    let mut pacer = locked(pacer);
    if pacer.len() >= PACED_ENTRIES {
        pacer.retain(|_, (told, _)| now.duration_since(*told) < EVENT_PACE);
    }
    let key = (
        cluster,
        event.node.clone().unwrap_or_default(),
        event.reason.clone(),
    );
    match pacer.get_mut(&key) {
        Some((told, left_out)) if now.duration_since(*told) < EVENT_PACE => {
            *left_out += 1;
            None
        }
        Some((told, left_out)) => {
            if *left_out > 0 {
                event.message = format!(
                    "{} ({} more times since the last such event.)",
                    event.message, left_out
                );
            }
            *told = now;
            *left_out = 0;
            Some(event)
        }
        None => {
            pacer.insert(key, (now, 0));
            Some(event)
        }
    }
}

#[cfg(test)]
mod pacing_tests {
    use super::*;

    #[test]
    fn a_crash_looping_node_is_told_once_a_minute_with_a_count() {
        let pacer = Mutex::new(Pacer::default());
        let cluster = Uuid::new_v4();
        let start = tokio::time::Instant::now();
        let at = |seconds: u64| start + std::time::Duration::from_secs(seconds);
        let restarted =
            || magnum_driver::ClusterEvent::warning("NodeRestarted", "restarted n2.").on_node("n2");
        assert!(paced(&pacer, cluster, restarted(), at(0)).is_some());
        for tick in 1..30 {
            assert!(paced(&pacer, cluster, restarted(), at(2 * tick)).is_none());
        }
        // Another node is not held up by this one.
        let other = magnum_driver::ClusterEvent::warning("NodeRestarted", "x").on_node("n3");
        assert!(paced(&pacer, cluster, other, at(58)).is_some());
        let told = paced(&pacer, cluster, restarted(), at(60)).expect("a minute later");
        assert_eq!(
            told.message,
            "restarted n2. (29 more times since the last such event.)"
        );
    }
}
