//! Deleting a whole cluster, fast. Its data is thrown away, so no node gets a clean shutdown
//! and the swarm is not told: every process of every node is SIGKILLed at once (killing a
//! node's PID 1 takes its whole PID namespace with it) while one `ip -batch` drops the names
//! of the nodes' network namespaces; then the firewall table, the veths and the bridge go
//! while, at the same time, the cgroups and the nodes' directories do; the host-wide claims
//! and the cluster's directory with its records last.
//!
//! The veths go with their namespaces: once a namespace's last process is dead and its last
//! socket closed, the kernel removes all its devices (20 idle namespaces took about 0.14 s
//! here, 20 explicit `link del` about 0.6 s; 20 killed nodes about 1.3 s either way, the
//! kernel's own work on the devices Docker made inside them). The bridge stays until then:
//! the nodes' TCP connections to each other, closed by the kill, end in a FIN/RST exchange
//! over it; without it they linger, retransmitting, and hold their namespaces (and veths)
//! for seconds.
//!
//! Removing one node from a cluster that lives on (scale in, replacement) keeps its graceful
//! path (`remove_node`): the node is drained, its tasks given time to move, it leaves the
//! swarm and its managers drop it; then its dockerd gets `REMOVED_NODE_GRACE` to stop.

use std::collections::BTreeSet;

use super::*;

/// How long a delete waits for the killed nodes' processes to be gone (the kernel frees a
/// killed dockerd in well under a second). Past it the delete fails naming what is left, with
/// the cluster's records kept, so that deleting again finishes the job.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// Node directories (a node's Docker data: images, swarm state, containers) removed at once.
const PARALLEL_REMOVALS: usize = 4;
/// How long the kernel gets to remove the veths of dead namespaces before they are deleted
/// one by one (a namespace then lingers, without name or links, until its last socket goes).
const VETH_WAIT: Duration = Duration::from_secs(2);

impl Runtime {
    /// Deletes the cluster: everything it has on this host goes, its records last. Safe to run
    /// again at any point (a crash, a retry): every step finds what is left by its names, not
    /// only from the records.
    pub async fn delete(&self, cluster: Uuid, progress: &dyn Progress) -> Result<(), DriverError> {
        let _held = self.hold_cluster(cluster).await?;
        let started = Instant::now();
        let directory = self.cluster_dir(cluster);
        // First: after a crash from here on, nothing restarts the cluster's nodes (the health
        // monitor and its firewall repair read the marker), and a resumed delete starts over.
        if directory.exists() {
            write_private(&directory.join("deleting"), b"")?;
        }
        let short = short(cluster);
        let netns_prefix = format!("mc{short}-");
        let nodes = {
            let directory = directory.clone();
            let state = self.load(cluster);
            let netns_prefix = netns_prefix.clone();
            blocking(move || node_names(&directory, state.as_ref(), &netns_prefix)).await?
        };
        progress
            .report(format!("Deleting {} nodes.", nodes.len()))
            .await;
        // Every node is killed at once; while the kernel takes their processes down, the
        // namespaces' names go.
        let killing = {
            let sandboxes: Vec<NodeSandbox> = nodes
                .iter()
                .map(|node| self.sandbox(cluster, node, ""))
                .collect();
            let cgroup_prefix = format!("magnum-{short}-");
            let netns_prefix = netns_prefix.clone();
            tokio::task::spawn_blocking(move || {
                kill_cluster(&sandboxes, &cgroup_prefix, &netns_prefix)
            })
        };
        let namespaces = network_teardown(cluster, &nodes);
        if let Err(error) = run_with_input("ip", &["-force", "-batch", "-"], &namespaces).await {
            // Namespaces already gone are refused too: not a failure of the delete.
            tracing::debug!(cluster.id = %cluster, %error, "ip -batch of the cluster's namespaces");
        }
        let alive = killing
            .await
            .map_err(|error| failed(format!("cannot stop the cluster's nodes: {error}")))?;
        if !alive.is_empty() {
            return Err(failed(format!(
                "Processes {alive:?} of the cluster's nodes were still running {} s after being \
                 killed; deleting the cluster again finishes the job.",
                KILL_WAIT.as_secs()
            )));
        }
        let killed = started.elapsed();
        // While the kernel takes the dead namespaces down with their veths (about 1.3 s for
        // 20 nodes here: rtnl and RCU work, the same as deleting the veths one by one), the
        // cgroups and the nodes' directories go. The cluster's own directory, with the
        // records a resumed delete reads, stays until both are done.
        let links = async {
            let veths: Vec<String> = nodes.iter().map(|node| Self::veth(cluster, node)).collect();
            // The firewall goes only now that nothing of the cluster runs behind it.
            let table = Self::firewall_table(cluster);
            let (veths_left, ()) = tokio::join!(
                blocking(move || wait_until_gone(veths)),
                sandbox::remove_firewall(&table)
            );
            let mut batch: String = veths_left?
                .iter()
                .map(|veth| format!("link del {veth}\n"))
                .collect();
            batch.push_str(&format!("link del {}\n", Self::bridge(cluster)));
            if let Err(error) = run_with_input("ip", &["-force", "-batch", "-"], &batch).await {
                // Already gone is refused too.
                tracing::debug!(cluster.id = %cluster, %error, "ip -batch of the cluster's links");
            }
            Ok::<_, DriverError>(started.elapsed())
        };
        let files = {
            let cgroup_prefix = format!("magnum-{short}-");
            let directory = directory.clone();
            let run_prefix = format!("{short}-");
            blocking(move || {
                let left = sandbox::remove_cgroups_with_prefix(&cgroup_prefix);
                remove_node_directories(&directory, &run_prefix);
                (left, started.elapsed())
            })
        };
        let (links_gone, files) = tokio::join!(links, files);
        let links_gone = links_gone?;
        let (left, files_gone) = files?;
        if !left.is_empty() {
            tracing::warn!(cluster.id = %cluster, ?left, "cannot remove the cluster's cgroups");
        }
        // The records go last, with the claims (a claim whose owner directory is gone would be
        // stale anyway).
        let claims = self.claims.clone();
        blocking(move || {
            claims.release_within(&directory);
            remove_tree(&directory);
        })
        .await?;
        self.forget_lock(cluster);
        tracing::info!(
            cluster.id = %cluster,
            nodes = nodes.len(),
            killed_ms = killed.as_millis(),
            links_gone_ms = links_gone.as_millis(),
            files_gone_ms = files_gone.as_millis(),
            total_ms = started.elapsed().as_millis(),
            "cluster removed from this host"
        );
        Ok(())
    }
}

/// Runs blocking work (files, /proc, cgroups) off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DriverError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| failed(format!("the cluster's teardown failed: {error}")))
}

/// The cluster's nodes: those recorded, those with a directory (a node whose record a crash
/// lost) and those with a network namespace.
fn node_names(
    directory: &std::path::Path,
    state: Option<&ClusterState>,
    netns_prefix: &str,
) -> Vec<String> {
    let mut names: BTreeSet<String> = state
        .map(|state| state.nodes.iter().map(|node| node.name.clone()).collect())
        .unwrap_or_default();
    let is_node = |name: &str| {
        name.strip_prefix('n')
            .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
    };
    for entry in std::fs::read_dir(directory).into_iter().flatten().flatten() {
        if let Some(name) = entry.file_name().to_str().filter(|name| is_node(name)) {
            names.insert(name.to_owned());
        }
    }
    for entry in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let file_name = entry.file_name();
        let node = file_name
            .to_str()
            .and_then(|name| name.strip_prefix(netns_prefix))
            .filter(|name| is_node(name));
        if let Some(node) = node {
            names.insert(node.to_owned());
        }
    }
    names.into_iter().collect()
}

/// SIGKILLs every process of the cluster's nodes (their PID 1 included: the kernel then kills
/// the rest of each node's PID namespace) and waits, at most `KILL_WAIT`, until none is left.
/// Returns the processes still there.
fn kill_cluster(sandboxes: &[NodeSandbox], cgroup_prefix: &str, netns_prefix: &str) -> Vec<i32> {
    let deadline = Instant::now() + KILL_WAIT;
    let mut killed = BTreeSet::new();
    let mut rounds = 0u32;
    loop {
        let mut alive: BTreeSet<i32> = sandbox::cluster_processes(cgroup_prefix, netns_prefix)
            .into_iter()
            .collect();
        // A node's first process (`unshare`) by its record too.
        alive.extend(sandboxes.iter().filter_map(NodeSandbox::pid));
        if alive.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            return alive.into_iter().collect();
        }
        // Newly seen processes are killed at once; every tenth round all of them again (a
        // reused PID is killed too: whatever is in the node's cgroups is the node's).
        let targets: Vec<i32> = alive
            .iter()
            .copied()
            .filter(|pid| rounds % 10 == 9 || !killed.contains(pid))
            .collect();
        sandbox::kill_processes(&targets);
        killed.extend(targets);
        rounds += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One `ip -batch` for the names of the nodes' network namespaces (a namespace itself, with
/// its end of the veth and the veth, goes when its last process and socket are gone).
fn network_teardown(cluster: Uuid, nodes: &[String]) -> String {
    nodes
        .iter()
        .map(|node| format!("netns del {}\n", Runtime::netns(cluster, node)))
        .collect()
}

/// Waits, at most `VETH_WAIT`, until none of `links` exists; returns those still there.
fn wait_until_gone(links: Vec<String>) -> Vec<String> {
    let deadline = Instant::now() + VETH_WAIT;
    loop {
        let left: Vec<String> = links
            .iter()
            .filter(|link| std::path::Path::new("/sys/class/net").join(link).exists())
            .cloned()
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `program` with `input` on its standard input, within the command timeout.
async fn run_with_input(
    program: &str,
    arguments: &[&str],
    input: &str,
) -> Result<String, DriverError> {
    use tokio::io::AsyncWriteExt;
    let work = async {
        let mut child = Command::new(program)
            .args(arguments)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| failed(format!("cannot run {program}: {error}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(|error| failed(format!("cannot write to {program}: {error}")))?;
        }
        child
            .wait_with_output()
            .await
            .map_err(|error| failed(format!("{program} failed: {error}")))
    };
    let output = tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .map_err(|_| {
            failed(format!(
                "{program} did not finish within {} s",
                COMMAND_TIMEOUT.as_secs()
            ))
        })??;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(failed(format!(
            "{program} {} failed: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Removes the directories of the cluster's nodes (in parallel, `PARALLEL_REMOVALS` at once: a
/// node's Docker data may hold many files) and their docker.sock directories
/// (`/run/magnum-local/<run_prefix>*`); the cluster's own directory, with its records, stays.
fn remove_node_directories(directory: &std::path::Path, run_prefix: &str) {
    let mut trees: Vec<PathBuf> = std::fs::read_dir(directory)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|entry| entry.path())
        .collect();
    trees.extend(
        std::fs::read_dir("/run/magnum-local")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| name.starts_with(run_prefix))
            })
            .map(|entry| entry.path()),
    );
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_REMOVALS.min(trees.len()) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(tree) = trees.get(index) else {
                    break;
                };
                remove_tree(tree);
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_batch_removes_every_namespace() {
        let cluster: Uuid = "1a2b3c4d-0000-4000-8000-000000000000".parse().unwrap();
        let batch = network_teardown(cluster, &["n1".to_owned(), "n12".to_owned()]);
        assert_eq!(batch, "netns del mc1a2b3c4d-n1\nnetns del mc1a2b3c4d-n12\n");
    }

    #[test]
    fn nodes_are_found_by_record_directory_and_namespace() {
        let scratch = tempfile::tempdir().unwrap();
        for name in ["n2", "n10", "tls", "nx", "n"] {
            std::fs::create_dir_all(scratch.path().join(name)).unwrap();
        }
        let state = ClusterState {
            subnet: 1,
            next_node: 4,
            nodes: vec![NodeState {
                name: "n3".to_owned(),
                nodegroup: Uuid::nil(),
                role: "worker".to_owned(),
                address: "10.0.0.13".to_owned(),
                swarm_id: None,
                uid_slot: None,
                flavor: None,
                leaving: false,
            }],
            name: "c".to_owned(),
            tls: false,
            auto_healing: false,
            groups: Vec::new(),
        };
        // No namespace on this host has this prefix.
        let names = node_names(scratch.path(), Some(&state), "mc-no-such-cluster-");
        assert_eq!(names, vec!["n10", "n2", "n3"]);
        assert_eq!(
            node_names(&scratch.path().join("gone"), None, "mc-none-"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn node_directories_go_and_the_records_stay() {
        let scratch = tempfile::tempdir().unwrap();
        let cluster = scratch.path().join("cluster");
        for node in 1..=6 {
            let data = cluster.join(format!("n{node}/data/a/b"));
            std::fs::create_dir_all(&data).unwrap();
            for file in 0..50 {
                std::fs::write(data.join(file.to_string()), b"x").unwrap();
            }
        }
        std::fs::write(cluster.join("cluster.json"), b"{}").unwrap();
        remove_node_directories(&cluster, "no-such-run-prefix-");
        let left: Vec<_> = std::fs::read_dir(&cluster)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["cluster.json"]);
    }
}
