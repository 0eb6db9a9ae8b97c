//! Converging a cluster: nodes added (joined to the swarm) and removed, every node Ready,
//! and what the driver observed (deleting a whole cluster: teardown.rs).

use super::*;

impl Runtime {
    pub(super) fn manager(state: &ClusterState) -> Option<&NodeState> {
        state
            .nodes
            .iter()
            .find(|node| node.role == "master" && node.swarm_id.is_some())
    }

    /// A manager that runs, other than `except`: the one to ask for changes of the swarm.
    pub(super) fn live_manager<'a>(
        &self,
        cluster: Uuid,
        state: &'a ClusterState,
        except: &str,
    ) -> Option<&'a NodeState> {
        state.nodes.iter().find(|node| {
            node.role == "master"
                && node.swarm_id.is_some()
                && node.name != except
                && self.node_pid(cluster, &node.name).is_some()
        })
    }

    /// The nodes a change names for removal (by name, address or swarm id) that this change
    /// may remove: workers, or masters when it changes the masters, and then only while the
    /// managers left keep the swarm's quorum (a majority of them running).
    fn named_for_removal(
        &self,
        cluster: Uuid,
        state: &ClusterState,
        request: &Converge<'_>,
    ) -> Vec<String> {
        let masters = request.action == Action::ScaleMasters;
        let named: Vec<&NodeState> = state
            .nodes
            .iter()
            .filter(|node| {
                request.nodes_to_remove.iter().any(|wanted| {
                    wanted == &node.name
                        || wanted == &node.address
                        || Some(wanted) == node.swarm_id.as_ref()
                })
            })
            .filter(|node| (node.role == "master") == masters)
            .collect();
        if masters {
            let managers = state
                .nodes
                .iter()
                .filter(|node| node.role == "master")
                .count();
            let running_others = state
                .nodes
                .iter()
                .filter(|node| {
                    node.role == "master"
                        && !named.iter().any(|gone| gone.name == node.name)
                        && self.node_pid(cluster, &node.name).is_some()
                })
                .count();
            if running_others * 2 <= managers {
                tracing::warn!(cluster.id = %cluster, managers, running_others,
                    "not removing the managers named: the others would not keep the swarm's quorum");
                return Vec::new();
            }
        }
        named.into_iter().map(|node| node.name.clone()).collect()
    }

    pub(super) async fn add_node(
        &self,
        spec: &ClusterSpec,
        state: &mut ClusterState,
        nodegroup: &magnum_domain::cluster::NodeGroup,
        progress: &dyn Progress,
    ) -> Result<(), DriverError> {
        let cluster = spec.cluster.uuid;
        if self.nodes_on_host() >= self.max_nodes {
            return Err(failed(format!(
                "This host already runs the {} nodes the local driver allows (drivers.local.max_nodes).",
                self.max_nodes
            )));
        }
        let index = state.next_node;
        state.next_node += 1;
        let role = if nodegroup.is_master() {
            "master"
        } else {
            "worker"
        };
        let node = NodeState {
            name: format!("n{index}"),
            nodegroup: nodegroup.uuid,
            role: role.to_owned(),
            address: self.address(state, index),
            swarm_id: None,
            uid_slot: None,
            flavor: nodegroup.flavor_id.clone(),
            leaving: false,
        };
        progress
            .report(format!(
                "Starting node {} ({}) of nodegroup {}.",
                node.name, node.address, nodegroup.name
            ))
            .await;
        // A claim whose node directory does not exist counts as stale: make it first.
        let directory = self.node_dir(cluster, &node.name);
        std::fs::create_dir_all(&directory)
            .map_err(|error| failed(format!("cannot create {}: {error}", directory.display())))?;
        let mut node = node;
        node.uid_slot = Some(self.claims.claim_uid_slot(&directory, None)?);
        state.nodes.push(node.clone());
        self.save(cluster, state)?;
        self.create_network(cluster, &node.name, &node.address)
            .await?;
        self.start_dockerd(spec, &node).await?;
        let rootfs = self.node_rootfs().await?;
        self.docker(
            cluster,
            &node.name,
            &[
                "import",
                "-c",
                "CMD [\"/bin/sh\"]",
                &rootfs.display().to_string(),
                NODE_IMAGE,
            ],
        )
        .await?;
        progress
            .event(
                ClusterEvent::normal(
                    "NodeStarted",
                    format!("Node {} ({}) started.", node.name, node.address),
                )
                .in_nodegroup(&nodegroup.name)
                .on_node(&node.name),
            )
            .await;
        // The manager may have died while this node started: the join needs it.
        self.revive_dead_nodes(spec, state, progress).await?;
        let first = Self::manager(state).is_none();
        let swarm_id = self.join(spec, state, &node).await?;
        let joined = if first {
            format!(
                "Node {} initialized the swarm as its first manager.",
                node.name
            )
        } else if node.role == "master" {
            format!("Node {} joined the swarm as a manager.", node.name)
        } else {
            format!("Node {} joined the swarm as a worker.", node.name)
        };
        progress
            .event(
                ClusterEvent::normal(
                    if first {
                        "SwarmInitialized"
                    } else {
                        "SwarmJoined"
                    },
                    joined,
                )
                .in_nodegroup(&nodegroup.name)
                .on_node(&node.name),
            )
            .await;
        if let Some(stored) = state
            .nodes
            .iter_mut()
            .find(|stored| stored.name == node.name)
        {
            stored.swarm_id = Some(swarm_id);
        }
        self.save(cluster, state)
    }

    /// Makes `node` the swarm's first manager (`swarm_init`) or joins it to the swarm
    /// (`swarm_join`), timed as that step.
    pub(super) async fn join(
        &self,
        spec: &ClusterSpec,
        state: &ClusterState,
        node: &NodeState,
    ) -> Result<String, DriverError> {
        let step = if Self::manager(state).is_none() {
            "swarm_init"
        } else {
            "swarm_join"
        };
        let timer = self.metrics.start(crate::DRIVER_NAME, step);
        let joined = self.join_unmeasured(spec, state, node).await;
        timer.finish(joined.is_ok());
        joined
    }

    async fn join_unmeasured(
        &self,
        spec: &ClusterSpec,
        state: &ClusterState,
        node: &NodeState,
    ) -> Result<String, DriverError> {
        let cluster = spec.cluster.uuid;
        let listen = format!("{}:{SWARM_PORT}", node.address);
        // Joined through a manager that runs (one being replaced may be down).
        let manager = Self::manager(state).map(|first| {
            self.live_manager(cluster, state, &node.name)
                .unwrap_or(first)
        });
        match manager {
            None => {
                self.docker(
                    cluster,
                    &node.name,
                    &[
                        "swarm",
                        "init",
                        "--advertise-addr",
                        &node.address,
                        "--listen-addr",
                        &listen,
                        "--dispatcher-heartbeat",
                        "1s",
                    ],
                )
                .await?;
            }
            Some(manager) => {
                let kind = if node.role == "master" {
                    "manager"
                } else {
                    "worker"
                };
                let token = self
                    .docker(cluster, &manager.name, &["swarm", "join-token", "-q", kind])
                    .await?;
                self.docker(
                    cluster,
                    &node.name,
                    &[
                        "swarm",
                        "join",
                        "--token",
                        &token,
                        "--advertise-addr",
                        &node.address,
                        "--listen-addr",
                        &listen,
                        &format!("{}:{SWARM_PORT}", manager.address),
                    ],
                )
                .await?;
            }
        }
        let id = self
            .docker(
                cluster,
                &node.name,
                &["info", "--format", "{{.Swarm.NodeID}}"],
            )
            .await?;
        let manager = manager.map_or(node.name.clone(), |manager| manager.name.clone());
        let nodegroup = spec
            .nodegroups
            .iter()
            .find(|group| group.uuid == node.nodegroup);
        let mut labels = Vec::new();
        if let Some(group) = nodegroup {
            for (key, value) in &group.node_labels {
                labels.push(format!("{key}={}", value.as_str().unwrap_or_default()));
            }
        }
        // The driver's own labels come last: a user's node label of the same name cannot
        // take their place.
        labels.push(format!(
            "magnum.nodegroup={}",
            nodegroup.map_or("", |group| group.name.as_str())
        ));
        labels.push(format!("magnum.role={}", node.role));
        let mut arguments = vec!["node".to_owned(), "update".to_owned()];
        for label in labels {
            arguments.push("--label-add".to_owned());
            arguments.push(label);
        }
        arguments.push(id.clone());
        let references: Vec<&str> = arguments.iter().map(String::as_str).collect();
        self.docker(cluster, &manager, &references).await?;
        Ok(id)
    }

    pub(super) async fn remove_node(
        &self,
        cluster: Uuid,
        state: &mut ClusterState,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<(), DriverError> {
        progress.report(format!("Removing node {name}.")).await;
        progress
            .event(
                ClusterEvent::normal("NodeRemoving", format!("Removing node {name}."))
                    .on_node(name),
            )
            .await;
        let node = state.nodes.iter().find(|node| node.name == name).cloned();
        let manager = self.live_manager(cluster, state, name).cloned();
        if let (Some(node), Some(manager)) = (&node, &manager) {
            if let Some(id) = &node.swarm_id {
                // Each step is a courtesy to the swarm: the node is torn down below whatever
                // they answer, and `node rm --force` drops a node that could not leave.
                let drained = self
                    .docker(
                        cluster,
                        &manager.name,
                        &["node", "update", "--availability", "drain", id],
                    )
                    .await;
                if drained.is_ok() {
                    self.wait_for_tasks_to_move(cluster, manager, node, progress)
                        .await;
                }
                // A node that does not run cannot leave; one that hangs gets a few seconds.
                if self.node_pid(cluster, name).is_some() {
                    let leave = self.docker(cluster, name, &["swarm", "leave", "--force"]);
                    let _ = tokio::time::timeout(LEAVE_TIMEOUT, leave).await;
                }
                if node.role == "master" {
                    let _ = self
                        .docker(cluster, &manager.name, &["node", "demote", id])
                        .await;
                }
                let _ = self
                    .docker(cluster, &manager.name, &["node", "rm", "--force", id])
                    .await;
            }
        }
        // Drained and out of the swarm, its data about to be thrown away: nothing is worth
        // a long graceful stop.
        self.teardown_node_within(cluster, name, REMOVED_NODE_GRACE)
            .await;
        state.nodes.retain(|node| node.name != name);
        self.save(cluster, state)
    }

    /// After a node was drained: waits until the swarm has stopped its tasks (they run
    /// elsewhere then), at most [`DRAIN_TIMEOUT`]; the removal goes on either way. A node that
    /// does not run has nothing to stop.
    async fn wait_for_tasks_to_move(
        &self,
        cluster: Uuid,
        manager: &NodeState,
        node: &NodeState,
        progress: &dyn Progress,
    ) {
        let Some(id) = node.swarm_id.as_deref() else {
            return;
        };
        if self.node_pid(cluster, &node.name).is_none() {
            return;
        }
        let socket = Self::run_dir(cluster, &manager.name).join("docker.sock");
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut reported = None;
        loop {
            let tasks = match docker_api::get(&socket, "/tasks").await {
                Ok(tasks) => tasks,
                Err(error) => {
                    tracing::warn!(cluster.id = %cluster, node = %node.name, %error, "cannot follow a drained node's tasks");
                    return;
                }
            };
            let still = tasks
                .as_array()
                .map(|tasks| {
                    tasks
                        .iter()
                        .filter(|task| {
                            task.get("NodeID").and_then(serde_json::Value::as_str) == Some(id)
                                && task
                                    .get("Status")
                                    .and_then(|status| status.get("State"))
                                    .and_then(serde_json::Value::as_str)
                                    .is_some_and(|state| {
                                        [
                                            "assigned",
                                            "accepted",
                                            "preparing",
                                            "ready",
                                            "starting",
                                            "running",
                                        ]
                                        .contains(&state)
                                    })
                        })
                        .count()
                })
                .unwrap_or(0);
            if still == 0 {
                return;
            }
            if Instant::now() > deadline {
                tracing::warn!(cluster.id = %cluster, node = %node.name, tasks = still,
                    "a drained node's tasks did not stop in time; removing it anyway");
                return;
            }
            if reported != Some(still) {
                progress
                    .report(format!(
                        "Draining node {}: waiting for its {still} task(s) to move.",
                        node.name
                    ))
                    .await;
                reported = Some(still);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn converge(
        &self,
        request: Converge<'_>,
        progress: &dyn Progress,
    ) -> Result<Observed, DriverError> {
        let spec = request.spec;
        let cluster = spec.cluster.uuid;
        let _held = self.hold_cluster(cluster).await?;
        let mut state = match self.load(cluster) {
            Some(state) => state,
            None => self.allocate(
                cluster,
                ClusterState {
                    subnet: 0,
                    next_node: 1,
                    nodes: Vec::new(),
                    name: spec.cluster.display_name(),
                    tls: !spec.template.tls_disabled,
                    auto_healing: false,
                    groups: Vec::new(),
                },
            )?,
        };
        state.name = spec.cluster.display_name();
        state.tls = !spec.template.tls_disabled;
        state.auto_healing = label_is_true(&spec.cluster.labels, "auto_healing_enabled");
        state.groups = spec
            .nodegroups
            .iter()
            .filter(|group| group.status != magnum_domain::cluster::ClusterStatus::DeleteInProgress)
            .map(|group| GroupState {
                uuid: group.uuid,
                name: group.name.clone(),
                master: group.is_master(),
                autoscaled: autoscaling_enabled(&spec.cluster.labels, group),
                node_labels: group
                    .node_labels
                    .iter()
                    .map(|(key, value)| {
                        (key.clone(), value.as_str().unwrap_or_default().to_owned())
                    })
                    .collect(),
            })
            .collect();
        self.save(cluster, &state)?;
        self.ensure_bridge(cluster, &state).await?;
        // Nodes named for removal leave, whatever the counts (as Heat's removal policies: with
        // the count kept, they are replaced). They stop counting now and go at the end, once
        // their nodegroup has its new nodes: a drained node's tasks then have somewhere to go.
        let named = self.named_for_removal(cluster, &state, &request);
        for node in &mut state.nodes {
            node.leaving = named.contains(&node.name);
        }
        self.save(cluster, &state)?;
        self.revive_dead_nodes(spec, &state, progress).await?;
        for node in state.nodes.clone() {
            if node.swarm_id.is_none() {
                // Interrupted while being added: start it over, without waiting for it.
                self.teardown_node_within(cluster, &node.name, Duration::ZERO)
                    .await;
                state.nodes.retain(|stored| stored.name != node.name);
                self.save(cluster, &state)?;
            }
        }
        // Nodes this change adds: their readiness is an event.
        let known: Vec<String> = state.nodes.iter().map(|node| node.name.clone()).collect();
        if request.action == Action::RotateCa {
            progress
                .report("Issuing new server certificates from the new CA.".to_owned())
                .await;
            for node in state.nodes.iter().filter(|node| node.role == "master") {
                self.stop_dockerd(cluster, &node.name).await;
                self.start_dockerd(spec, node).await?;
            }
        }
        // Masters first: workers need a manager to join.
        let mut groups: Vec<&magnum_domain::cluster::NodeGroup> = spec.nodegroups.iter().collect();
        groups.sort_by_key(|group| !group.is_master());
        for group in groups {
            let wanted = if group.status == magnum_domain::cluster::ClusterStatus::DeleteInProgress
            {
                0
            } else {
                usize::try_from(group.node_count).unwrap_or(0)
            };
            loop {
                let members: Vec<NodeState> = state
                    .nodes
                    .iter()
                    .filter(|node| node.nodegroup == group.uuid && !node.leaving)
                    .cloned()
                    .collect();
                if members.len() == wanted {
                    break;
                }
                if members.len() < wanted {
                    // A new node joins through the manager: it must be running.
                    self.revive_dead_nodes(spec, &state, progress).await?;
                    self.add_node(spec, &mut state, group, progress).await?;
                } else {
                    // The newest goes (the named ones are leaving already).
                    let victim = members
                        .last()
                        .map(|node| node.name.clone())
                        .unwrap_or_default();
                    self.remove_node(cluster, &mut state, &victim, progress)
                        .await?;
                }
            }
        }
        // The nodes named for removal, and those of nodegroups that no longer exist, go.
        let orphans: Vec<String> = state
            .nodes
            .iter()
            .filter(|node| {
                node.leaving
                    || !spec
                        .nodegroups
                        .iter()
                        .any(|group| group.uuid == node.nodegroup)
            })
            .map(|node| node.name.clone())
            .collect();
        for name in orphans {
            self.remove_node(cluster, &mut state, &name, progress)
                .await?;
        }
        let fresh: Vec<String> = state
            .nodes
            .iter()
            .filter(|node| !known.contains(&node.name))
            .map(|node| node.name.clone())
            .collect();
        self.wait_until_ready(spec, &state, &fresh, progress)
            .await?;
        self.observe(spec, &state).await
    }

    /// Starts again, on their data, the joined nodes whose dockerd died (a host restart, a
    /// kill). The health monitor's auto-healing waits while an operation holds the cluster, so
    /// the operation does it itself: a node killed in the middle of a change is the change's
    /// to bring back, not a reason to fail it.
    pub(super) async fn revive_dead_nodes(
        &self,
        spec: &ClusterSpec,
        state: &ClusterState,
        progress: &dyn Progress,
    ) -> Result<(), DriverError> {
        let cluster = spec.cluster.uuid;
        for node in &state.nodes {
            // A node leaving (being replaced, perhaps because it cannot start) stays down.
            if node.leaving {
                continue;
            }
            if node.swarm_id.is_some() && self.node_pid(cluster, &node.name).is_none() {
                progress
                    .report(format!("Restarting the dockerd of node {}.", node.name))
                    .await;
                progress
                    .event(
                        ClusterEvent::warning(
                            "NodeRestarted",
                            format!(
                                "Node {}'s dockerd was not running; the change restarts it.",
                                node.name
                            ),
                        )
                        .on_node(&node.name),
                    )
                    .await;
                self.create_network(cluster, &node.name, &node.address)
                    .await?;
                self.start_dockerd(spec, node).await?;
            }
        }
        Ok(())
    }

    /// Done means every node is Ready in the managers' view.
    pub(super) async fn wait_until_ready(
        &self,
        spec: &ClusterSpec,
        state: &ClusterState,
        fresh: &[String],
        progress: &dyn Progress,
    ) -> Result<(), DriverError> {
        let cluster = spec.cluster.uuid;
        let Some(manager) = Self::manager(state) else {
            return Ok(());
        };
        let mut announced: Vec<&str> = Vec::new();
        // Generous: on a loaded host a restarted manager (CA rotation) and its workers can
        // take a while to find each other again.
        let started = Instant::now();
        let mut deadline = started + NODES_READY_TIMEOUT;
        let mut reported_ready = None;
        let mut restarted: Vec<String> = Vec::new();
        let mut revivals = 0;
        loop {
            // A node that died while the change waits (the manager included: then nobody
            // answers `node ls`) is started again, a bounded number of times per wait.
            let dead = state.nodes.iter().any(|node| {
                node.swarm_id.is_some() && self.node_pid(cluster, &node.name).is_none()
            });
            if dead && revivals < MAX_REVIVALS_PER_WAIT {
                revivals += 1;
                self.revive_dead_nodes(spec, state, progress).await?;
                deadline = deadline.max(Instant::now() + NODE_REJOIN_NUDGE);
            }
            let listing = self
                .docker(
                    cluster,
                    &manager.name,
                    &["node", "ls", "--format", "{{.ID}} {{.Status}}"],
                )
                .await
                .unwrap_or_default();
            let not_ready: Vec<&NodeState> = state
                .nodes
                .iter()
                .filter(|node| {
                    let id = node.swarm_id.as_deref().unwrap_or("-");
                    !listing.lines().any(|line| line == format!("{id} Ready"))
                })
                .collect();
            let newly_ready: Vec<&NodeState> = state
                .nodes
                .iter()
                .filter(|node| {
                    fresh.contains(&node.name)
                        && !announced.contains(&node.name.as_str())
                        && !not_ready.iter().any(|late| late.name == node.name)
                })
                .collect();
            for node in newly_ready {
                announced.push(&node.name);
                progress
                    .event(
                        ClusterEvent::normal("NodeReady", format!("Node {} is Ready.", node.name))
                            .in_nodegroup(&group_name(spec, node.nodegroup))
                            .on_node(&node.name),
                    )
                    .await;
            }
            if not_ready.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                // Say what the manager saw of each node, and leave the node's own account in
                // the operator's log: a reason of just "not Ready" cannot be acted upon.
                let described: Vec<String> = not_ready
                    .iter()
                    .map(|node| {
                        let seen = manager_view(&listing, node);
                        let tail = self.sandbox(cluster, &node.name, "").log_tail(8);
                        tracing::warn!(
                            cluster.id = %cluster,
                            node = %node.name,
                            manager_view = seen,
                            dockerd_log_tail = %tail,
                            "node not Ready"
                        );
                        format!("{} ({seen})", node.name)
                    })
                    .collect();
                return Err(failed(format!(
                    "Nodes {} did not become Ready within {} s.",
                    described.join(", "),
                    NODES_READY_TIMEOUT.as_secs()
                )));
            }
            // A node that has not (re)joined long after its manager answers gets its dockerd
            // restarted once: it rejoins from its own swarm state. Seen under load after a
            // manager restart (CA rotation): a worker's agent that never reconnects.
            if started.elapsed() > NODE_REJOIN_NUDGE && !listing.is_empty() {
                // A node without a swarm id never joined: a restart cannot make it.
                let stuck = not_ready
                    .iter()
                    .filter(|node| node.role != "master" && node.swarm_id.is_some());
                for node in stuck {
                    if restarted.contains(&node.name) {
                        continue;
                    }
                    let seen = manager_view(&listing, node);
                    let tail = self.sandbox(cluster, &node.name, "").log_tail(8);
                    tracing::warn!(cluster.id = %cluster, node = %node.name, manager_view = seen,
                        dockerd_log_tail = %tail, "node has not rejoined; restarting its dockerd");
                    progress
                        .report(format!(
                            "Node {} did not rejoin the swarm within {} s; restarting its dockerd.",
                            node.name,
                            NODE_REJOIN_NUDGE.as_secs()
                        ))
                        .await;
                    restarted.push(node.name.clone());
                    self.stop_dockerd(cluster, &node.name).await;
                    if let Err(error) = self.start_dockerd(spec, node).await {
                        // The wait goes on: its end names the node and what was seen.
                        tracing::warn!(cluster.id = %cluster, node = %node.name, %error,
                            "cannot restart a node's dockerd");
                    }
                    // The restarted node gets its time to rejoin.
                    deadline = deadline.max(Instant::now() + NODE_REJOIN_NUDGE);
                }
            }
            // Clients following the cluster (coe --wait) show this count.
            let ready = state.nodes.len() - not_ready.len();
            if reported_ready != Some(ready) {
                progress
                    .report(format!("{ready} of {} nodes Ready.", state.nodes.len()))
                    .await;
                reported_ready = Some(ready);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub(super) async fn observe(
        &self,
        spec: &ClusterSpec,
        state: &ClusterState,
    ) -> Result<Observed, DriverError> {
        let cluster = spec.cluster.uuid;
        let manager = Self::manager(state);
        let version = match manager {
            Some(manager) => self
                .docker(
                    cluster,
                    &manager.name,
                    &["version", "--format", "{{.Server.Version}}"],
                )
                .await
                .ok(),
            None => None,
        };
        let port = if spec.template.tls_disabled {
            PLAIN_PORT
        } else {
            TLS_PORT
        };
        Ok(Observed {
            stack_id: Some(format!("local-{}", short(cluster))),
            api_address: manager.map(|manager| format!("tcp://{}:{port}", manager.address)),
            coe_version: version.clone(),
            container_version: version.clone(),
            nodegroups: spec
                .nodegroups
                .iter()
                .map(|group| ObservedNodeGroup {
                    uuid: group.uuid,
                    node_addresses: state
                        .nodes
                        .iter()
                        .filter(|node| node.nodegroup == group.uuid)
                        .map(|node| node.address.clone())
                        .collect(),
                    coe_version: version.clone(),
                })
                .collect(),
        })
    }
}

/// A node's status as a manager's `node ls --format "{{.ID}} {{.Status}}"` lists it, or
/// `absent`.
fn manager_view<'a>(listing: &'a str, node: &NodeState) -> &'a str {
    let id = node.swarm_id.as_deref().unwrap_or("-");
    listing
        .lines()
        .find_map(|line| line.strip_prefix(id)?.strip_prefix(' '))
        .unwrap_or("absent")
}

/// A nodegroup's name as the spec has it (its uuid when it is gone).
fn group_name(spec: &ClusterSpec, uuid: Uuid) -> String {
    spec.nodegroups
        .iter()
        .find(|group| group.uuid == uuid)
        .map_or_else(|| uuid.to_string(), |group| group.name.clone())
}
