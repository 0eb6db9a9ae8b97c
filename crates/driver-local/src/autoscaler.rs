//! The autoscaler's look at one swarm: what its tasks wait for and which nodes sit idle,
//! turned into proposals (`magnum_driver::Proposal`) the domain decides on. Pure: the
//! monitor reads the swarm (`/nodes`, `/services`, `/tasks` of a manager's Docker API) and
//! keeps a [`Watch`] per cluster between looks; nothing here does IO.
//!
//! * **Scale out.** A task of a replicated service that has been pending (the scheduler found
//!   "no suitable node": no room, unmet constraints, the per-node replica limit) for
//!   `scale_out_delay` counts for the first autoscaled worker nodegroup one of whose new nodes
//!   would take it: its placement constraints hold on such a node (the nodegroup's node labels,
//!   `magnum.nodegroup`, `magnum.role=worker`, role worker) and its reservations fit the node's
//!   capacity (as the swarm sees a node of the nodegroup, else any node of the cluster). The
//!   tasks are packed first-fit, largest first, onto as few new nodes as hold them (per-node
//!   replica limits kept): that many nodes are proposed, in one change, within the room left on
//!   this host. A task no new node could hold is left alone.
//! * **Scale in.** A worker of an autoscaled nodegroup that ran no task of a replicated service
//!   (global services' tasks run everywhere and do not count) for `scale_in_idle` is proposed
//!   for removal, newest first, unless a waiting task could use a node of that nodegroup. The
//!   domain keeps to `min_node_count` and never touches masters; the driver drains the node and
//!   waits for its tasks to move before removing it.
//!
//! Bounds: a [`Watch`] remembers at most [`MAX_REMEMBERED`] pending tasks and nodes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use magnum_driver::Proposal;
use serde_json::Value;
use uuid::Uuid;

/// The most pending tasks (and nodes) a cluster's watch remembers.
pub(crate) const MAX_REMEMBERED: usize = 10_000;
/// The most services named in a proposal's explanation.
const NAMED_SERVICES: usize = 3;

/// Task states of work placed on a node (it keeps the node busy).
const PLACED_STATES: [&str; 6] = [
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
];

/// A swarm node as a manager lists it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SwarmNode {
    pub id: String,
    pub manager: bool,
    pub ready: bool,
    pub active: bool,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
}

/// A service: global ones run a task on every node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SwarmService {
    pub id: String,
    pub name: String,
    pub global: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SwarmTask {
    pub id: String,
    pub service: String,
    pub node: Option<String>,
    pub desired_running: bool,
    pub state: String,
    /// The scheduler's word on a pending task ("no suitable node (…)").
    pub error: String,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub constraints: Vec<String>,
    /// At most this many tasks of its service per node (0: no limit).
    pub max_per_node: u64,
}

/// What a manager says of its swarm.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SwarmView {
    pub nodes: Vec<SwarmNode>,
    /// Sorted by id (looked up for every task).
    pub services: Vec<SwarmService>,
    pub tasks: Vec<SwarmTask>,
}

/// The most nodes, services and tasks of a swarm one look considers: the swarm is the
/// tenant's, and the planner's work grows with the product of waiting tasks and nodes.
/// Beyond these, the rest waits for a later look (the scheduler keeps what it reports
/// first stable enough for that).
pub(crate) const MAX_VIEWED_NODES: usize = 1_000;
pub(crate) const MAX_VIEWED_SERVICES: usize = 2_000;
pub(crate) const MAX_VIEWED_TASKS: usize = 5_000;

/// The first `most` entries of a JSON array (none when it is not one).
fn items(value: &Value, most: usize) -> impl Iterator<Item = &Value> {
    value
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .take(most)
}

fn text(value: &Value, path: &[&str]) -> String {
    path.iter()
        .try_fold(value, |value, key| value.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn number(value: &Value, path: &[&str]) -> i64 {
    path.iter()
        .try_fold(value, |value, key| value.get(key))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

impl SwarmView {
    /// From the JSON of `/nodes`, `/services` and `/tasks`; entries it cannot read are left out.
    pub(crate) fn from_api(nodes: &Value, services: &Value, tasks: &Value) -> Self {
        let nodes = items(nodes, MAX_VIEWED_NODES)
            .map(|node| SwarmNode {
                id: text(node, &["ID"]),
                manager: text(node, &["Spec", "Role"]) == "manager",
                ready: text(node, &["Status", "State"]) == "ready",
                active: text(node, &["Spec", "Availability"]) == "active",
                memory_bytes: number(node, &["Description", "Resources", "MemoryBytes"]),
                nano_cpus: number(node, &["Description", "Resources", "NanoCPUs"]),
            })
            .filter(|node| !node.id.is_empty())
            .collect();
        let mut services: Vec<SwarmService> = items(services, MAX_VIEWED_SERVICES)
            .map(|service| {
                let mode = service.get("Spec").and_then(|spec| spec.get("Mode"));
                SwarmService {
                    id: text(service, &["ID"]),
                    name: text(service, &["Spec", "Name"]),
                    global: mode.is_some_and(|mode| {
                        mode.get("Global").is_some() || mode.get("GlobalJob").is_some()
                    }),
                }
            })
            .filter(|service| !service.id.is_empty())
            .collect();
        services.sort_by(|a, b| a.id.cmp(&b.id));
        let tasks = items(tasks, MAX_VIEWED_TASKS)
            .map(|task| {
                let node = text(task, &["NodeID"]);
                SwarmTask {
                    id: text(task, &["ID"]),
                    service: text(task, &["ServiceID"]),
                    node: (!node.is_empty()).then_some(node),
                    desired_running: text(task, &["DesiredState"]) == "running",
                    state: text(task, &["Status", "State"]),
                    error: text(task, &["Status", "Err"]),
                    memory_bytes: number(
                        task,
                        &["Spec", "Resources", "Reservations", "MemoryBytes"],
                    ),
                    nano_cpus: number(task, &["Spec", "Resources", "Reservations", "NanoCPUs"]),
                    constraints: task
                        .get("Spec")
                        .and_then(|spec| spec.get("Placement"))
                        .and_then(|placement| placement.get("Constraints"))
                        .and_then(Value::as_array)
                        .map(|constraints| {
                            constraints
                                .iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default(),
                    max_per_node: u64::try_from(number(
                        task,
                        &["Spec", "Placement", "MaxReplicas"],
                    ))
                    .unwrap_or(0),
                }
            })
            .filter(|task| !task.id.is_empty())
            .collect();
        SwarmView {
            nodes,
            services,
            tasks,
        }
    }

    fn service(&self, id: &str) -> Option<&SwarmService> {
        self.services
            .binary_search_by(|known| known.id.as_str().cmp(id))
            .ok()
            .map(|index| &self.services[index])
    }

    fn is_global(&self, service: &str) -> bool {
        self.service(service).is_some_and(|known| known.global)
    }

    fn service_name<'a>(&'a self, service: &'a str) -> &'a str {
        self.service(service)
            .map_or(service, |known| known.name.as_str())
    }
}

/// A worker nodegroup the autoscaler may grow or shrink, with its nodes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScaledGroup {
    pub uuid: Uuid,
    pub name: String,
    /// The swarm node labels a new node of the nodegroup gets.
    pub labels: BTreeMap<String, String>,
    /// Its nodes: (our name, swarm node id), oldest first.
    pub nodes: Vec<(String, String)>,
}

/// What the autoscaler remembers of one cluster between looks.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// Since when each task has been seen waiting for a node.
    pending_since: HashMap<String, Instant>,
    /// When each swarm node was last seen running work (or first seen).
    busy_at: HashMap<String, Instant>,
    /// The ready nodes of the last look: when they change, waiting starts over (the
    /// scheduler needs a moment to place tasks on nodes just added).
    ready_nodes: Vec<String>,
}

/// The timings the proposals follow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    pub scale_out_delay: Duration,
    pub scale_in_idle: Duration,
}

impl Watch {
    /// Records what `view` shows at `now`: tasks waiting, nodes working.
    fn observe(&mut self, view: &SwarmView, now: Instant) {
        let waiting: Vec<&SwarmTask> = view
            .tasks
            .iter()
            .filter(|task| is_waiting(view, task))
            .collect();
        let mut ready: Vec<String> = view
            .nodes
            .iter()
            .filter(|node| node.ready)
            .map(|node| node.id.clone())
            .collect();
        ready.sort_unstable();
        if ready != self.ready_nodes {
            self.pending_since.clear();
            self.ready_nodes = ready;
        }
        let waiting_ids: std::collections::HashSet<&str> =
            waiting.iter().map(|task| task.id.as_str()).collect();
        self.pending_since
            .retain(|id, _| waiting_ids.contains(id.as_str()));
        for task in waiting {
            if self.pending_since.len() < MAX_REMEMBERED {
                self.pending_since.entry(task.id.clone()).or_insert(now);
            }
        }
        let node_ids: std::collections::HashSet<&str> =
            view.nodes.iter().map(|node| node.id.as_str()).collect();
        self.busy_at.retain(|id, _| node_ids.contains(id.as_str()));
        for node in &view.nodes {
            let working = view.tasks.iter().any(|task| {
                task.node.as_deref() == Some(node.id.as_str())
                    && task.desired_running
                    && PLACED_STATES.contains(&task.state.as_str())
                    && !view.is_global(&task.service)
            });
            if working {
                self.busy_at.insert(node.id.clone(), now);
            } else if self.busy_at.len() < MAX_REMEMBERED {
                self.busy_at.entry(node.id.clone()).or_insert(now);
            }
        }
    }
}

/// A task of a replicated service the scheduler could not place.
fn is_waiting(view: &SwarmView, task: &SwarmTask) -> bool {
    task.desired_running
        && task.state == "pending"
        && task.node.is_none()
        && task.error.starts_with("no suitable node")
        && !view.is_global(&task.service)
}

/// Whether a swarm placement constraint holds on a new node with `labels` (role worker).
/// What a new node's own identity would be (its id, host name, address) is not known: an
/// equality on it does not hold, an inequality does. Values compare ignoring case, as in
/// swarmkit.
pub(crate) fn constraint_holds(constraint: &str, labels: &BTreeMap<String, String>) -> bool {
    let (key, expected, equal) = if let Some((key, value)) = constraint.split_once("==") {
        (key, value, true)
    } else if let Some((key, value)) = constraint.split_once("!=") {
        (key, value, false)
    } else {
        return false;
    };
    let (key, expected) = (key.trim(), expected.trim());
    let lower = key.to_ascii_lowercase();
    let actual: Option<String> = if lower == "node.role" {
        Some("worker".to_owned())
    } else if lower == "node.platform.os" {
        Some(std::env::consts::OS.to_owned())
    } else if lower == "node.platform.arch" {
        Some(std::env::consts::ARCH.to_owned())
    } else if lower.starts_with("node.labels.") {
        labels.get(&key["node.labels.".len()..]).cloned()
    } else if ["node.id", "node.hostname", "node.ip"].contains(&lower.as_str())
        || lower.starts_with("engine.labels.")
    {
        None
    } else {
        // An attribute swarm does not know: the scheduler refuses such a service anyway.
        return false;
    };
    let matches = actual.is_some_and(|actual| actual.eq_ignore_ascii_case(expected));
    matches == equal
}

/// One new node being filled while packing.
struct Bin {
    memory_bytes: i64,
    nano_cpus: i64,
    per_service: HashMap<String, u64>,
}

/// How many new nodes of `capacity` hold `tasks`: first fit, largest first, keeping each
/// service's per-node limit.
fn nodes_needed(tasks: &[&SwarmTask], capacity: (i64, i64)) -> usize {
    let mut ordered: Vec<&SwarmTask> = tasks.to_vec();
    ordered.sort_by(|a, b| {
        (b.memory_bytes, b.nano_cpus)
            .cmp(&(a.memory_bytes, a.nano_cpus))
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut bins: Vec<Bin> = Vec::new();
    for task in ordered {
        let fits = |bin: &Bin| {
            bin.memory_bytes + task.memory_bytes <= capacity.0
                && bin.nano_cpus + task.nano_cpus <= capacity.1
                && (task.max_per_node == 0
                    || bin.per_service.get(&task.service).copied().unwrap_or(0) < task.max_per_node)
        };
        let bin = match bins.iter().position(fits) {
            Some(index) => &mut bins[index],
            None => {
                bins.push(Bin {
                    memory_bytes: 0,
                    nano_cpus: 0,
                    per_service: HashMap::new(),
                });
                bins.last_mut().expect("just pushed")
            }
        };
        bin.memory_bytes += task.memory_bytes;
        bin.nano_cpus += task.nano_cpus;
        *bin.per_service.entry(task.service.clone()).or_insert(0) += 1;
    }
    bins.len()
}

/// "3 tasks of web, 1 of api": the services of `tasks`, busiest first.
fn describe_tasks(view: &SwarmView, tasks: &[&SwarmTask]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for task in tasks {
        *counts.entry(view.service_name(&task.service)).or_insert(0) += 1;
    }
    let mut ordered: Vec<(&str, usize)> = counts.into_iter().collect();
    ordered.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut parts: Vec<String> = ordered
        .iter()
        .take(NAMED_SERVICES)
        .enumerate()
        .map(|(index, (name, count))| match (index, count) {
            (0, 1) => format!("1 task of service {name}"),
            (0, count) => format!("{count} tasks of service {name}"),
            (_, count) => format!("{count} of {name}"),
        })
        .collect();
    if ordered.len() > NAMED_SERVICES {
        parts.push(format!("{} more services", ordered.len() - NAMED_SERVICES));
    }
    parts.join(", ")
}

/// The proposals one look at a cluster makes (at most one per nodegroup). `room` is how many
/// more nodes this host can run.
pub(crate) fn plan(
    view: &SwarmView,
    groups: &[ScaledGroup],
    watch: &mut Watch,
    timings: Timings,
    room: usize,
    now: Instant,
) -> Vec<Proposal> {
    watch.observe(view, now);
    let mut proposals = Vec::new();
    let waiting: Vec<&SwarmTask> = view
        .tasks
        .iter()
        .filter(|task| is_waiting(view, task))
        .collect();
    let mut taken: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut room = room;
    for group in groups {
        let own_node = view
            .nodes
            .iter()
            .find(|node| group.nodes.iter().any(|(_, id)| id == &node.id));
        let Some(model) = own_node.or_else(|| view.nodes.first()) else {
            continue;
        };
        let capacity = (model.memory_bytes, model.nano_cpus);
        let mut labels = group.labels.clone();
        labels.insert("magnum.nodegroup".to_owned(), group.name.clone());
        labels.insert("magnum.role".to_owned(), "worker".to_owned());
        // Tasks a new node of this nodegroup could take, whatever their age.
        let fitting: Vec<&SwarmTask> = waiting
            .iter()
            .copied()
            .filter(|task| !taken.contains(&task.id.as_str()))
            .filter(|task| task.memory_bytes <= capacity.0 && task.nano_cpus <= capacity.1)
            .filter(|task| {
                task.constraints
                    .iter()
                    .all(|constraint| constraint_holds(constraint, &labels))
            })
            .collect();
        let due: Vec<&SwarmTask> = fitting
            .iter()
            .copied()
            .filter(|task| {
                watch
                    .pending_since
                    .get(&task.id)
                    .is_some_and(|since| now.duration_since(*since) >= timings.scale_out_delay)
            })
            .collect();
        taken.extend(fitting.iter().map(|task| task.id.as_str()));
        if !due.is_empty() {
            let add = nodes_needed(&due, capacity).min(room);
            room -= add;
            if add > 0 {
                let longest = due
                    .iter()
                    .filter_map(|task| watch.pending_since.get(&task.id))
                    .map(|since| now.duration_since(*since).as_secs())
                    .max()
                    .unwrap_or(0);
                proposals.push(Proposal::ScaleOut {
                    nodegroup: group.uuid,
                    add: i64::try_from(add).unwrap_or(i64::MAX),
                    why: format!(
                        "{} waiting {longest} s for a node: {}",
                        describe_tasks(view, &due),
                        due[0].error
                    ),
                });
            }
            continue;
        }
        if !fitting.is_empty() {
            // Work waits that this nodegroup could take: no node of it goes now.
            continue;
        }
        let mut idle: Vec<(String, u64)> = group
            .nodes
            .iter()
            .filter_map(|(name, id)| {
                let node = view.nodes.iter().find(|node| &node.id == id)?;
                if node.manager || !node.ready || !node.active {
                    return None;
                }
                let idle_for = now.duration_since(*watch.busy_at.get(id)?);
                (idle_for >= timings.scale_in_idle).then(|| (name.clone(), idle_for.as_secs()))
            })
            .collect();
        if idle.is_empty() {
            continue;
        }
        // Newest first: the nodes list is oldest first.
        idle.reverse();
        let shortest = idle.iter().map(|(_, seconds)| *seconds).min().unwrap_or(0);
        let names: Vec<String> = idle.into_iter().map(|(name, _)| name).collect();
        let why = if names.len() == 1 {
            format!("node {} ran no task for {shortest} s", names[0])
        } else {
            format!(
                "nodes {} ran no task for {shortest} s or more",
                names.join(", ")
            )
        };
        proposals.push(Proposal::ScaleIn {
            nodegroup: group.uuid,
            nodes: names,
            why,
        });
    }
    proposals
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GIB: i64 = 1 << 30;

    fn node(id: &str, manager: bool) -> Value {
        json!({
            "ID": id,
            "Spec": {"Role": if manager { "manager" } else { "worker" }, "Availability": "active", "Labels": {}},
            "Description": {"Hostname": id, "Resources": {"NanoCPUs": 2_000_000_000i64, "MemoryBytes": 8 * GIB}},
            "Status": {"State": "ready"}
        })
    }

    fn task(id: &str, service: &str, node: &str, state: &str, memory: i64) -> Value {
        json!({
            "ID": id,
            "ServiceID": service,
            "NodeID": node,
            "DesiredState": "running",
            "Status": {"State": state, "Err": if state == "pending" { "no suitable node (insufficient resources on 2 nodes)" } else { "" }},
            "Spec": {"Resources": {"Reservations": {"MemoryBytes": memory}}, "Placement": {}}
        })
    }

    fn services() -> Value {
        json!([
            {"ID": "s-web", "Spec": {"Name": "web", "Mode": {"Replicated": {"Replicas": 5}}}},
            {"ID": "s-agent", "Spec": {"Name": "agent", "Mode": {"Global": {}}}}
        ])
    }

    fn group(nodes: &[(&str, &str)]) -> ScaledGroup {
        ScaledGroup {
            uuid: Uuid::from_u128(2),
            name: "default-worker".to_owned(),
            labels: BTreeMap::new(),
            nodes: nodes
                .iter()
                .map(|(name, id)| ((*name).to_owned(), (*id).to_owned()))
                .collect(),
        }
    }

    fn timings() -> Timings {
        Timings {
            scale_out_delay: Duration::from_secs(30),
            scale_in_idle: Duration::from_secs(600),
        }
    }

    /// A master and a worker of 8 GiB each; a service of five 5-GiB replicas: two run, three
    /// wait — three new nodes, once they have waited the delay.
    #[test]
    fn waiting_tasks_ask_for_as_many_nodes_as_hold_them_after_the_delay() {
        let view = SwarmView::from_api(
            &json!([node("m1", true), node("w2", false)]),
            &services(),
            &json!([
                task("t1", "s-web", "m1", "running", 5 * GIB),
                task("t2", "s-web", "w2", "running", 5 * GIB),
                task("t3", "s-web", "", "pending", 5 * GIB),
                task("t4", "s-web", "", "pending", 5 * GIB),
                task("t5", "s-web", "", "pending", 5 * GIB),
                task("g1", "s-agent", "w2", "running", 0),
            ]),
        );
        let groups = [group(&[("n2", "w2")])];
        let mut watch = Watch::default();
        let start = Instant::now();
        assert!(
            plan(&view, &groups, &mut watch, timings(), 40, start).is_empty(),
            "not yet: the delay"
        );
        let proposals = plan(
            &view,
            &groups,
            &mut watch,
            timings(),
            40,
            start + Duration::from_secs(31),
        );
        assert_eq!(
            proposals,
            [Proposal::ScaleOut {
                nodegroup: Uuid::from_u128(2),
                add: 3,
                why: "3 tasks of service web waiting 31 s for a node: no suitable node \
                      (insufficient resources on 2 nodes)"
                    .to_owned()
            }]
        );
        // The host's room bounds it.
        let capped = plan(
            &view,
            &groups,
            &mut watch,
            timings(),
            2,
            start + Duration::from_secs(32),
        );
        assert!(matches!(capped[0], Proposal::ScaleOut { add: 2, .. }));
        assert!(plan(
            &view,
            &groups,
            &mut watch,
            timings(),
            0,
            start + Duration::from_secs(33)
        )
        .is_empty());
    }

    #[test]
    fn small_tasks_share_new_nodes_within_capacity_and_per_node_limits() {
        let pending = |id: &str, memory: i64, max_per_node: u64| SwarmTask {
            id: id.to_owned(),
            service: "s-web".to_owned(),
            node: None,
            desired_running: true,
            state: "pending".to_owned(),
            error: "no suitable node (insufficient resources on 1 node)".to_owned(),
            memory_bytes: memory,
            nano_cpus: 0,
            constraints: Vec::new(),
            max_per_node,
        };
        let tasks: Vec<SwarmTask> = (0..5)
            .map(|index| pending(&format!("t{index}"), 3 * GIB, 0))
            .collect();
        let references: Vec<&SwarmTask> = tasks.iter().collect();
        // Two 3-GiB tasks per 8-GiB node: 5 tasks, 3 nodes.
        assert_eq!(nodes_needed(&references, (8 * GIB, 2_000_000_000)), 3);
        let limited: Vec<SwarmTask> = (0..5)
            .map(|index| pending(&format!("t{index}"), GIB, 1))
            .collect();
        let references: Vec<&SwarmTask> = limited.iter().collect();
        assert_eq!(nodes_needed(&references, (8 * GIB, 2_000_000_000)), 5);
        // Largest first: 6, 5, 3, 2 GiB into 8-GiB nodes → [6+2] [5+3].
        let mixed: Vec<SwarmTask> = [6, 3, 5, 2]
            .iter()
            .enumerate()
            .map(|(index, gib)| pending(&format!("m{index}"), gib * GIB, 0))
            .collect();
        let references: Vec<&SwarmTask> = mixed.iter().collect();
        assert_eq!(nodes_needed(&references, (8 * GIB, 2_000_000_000)), 2);
    }

    #[test]
    fn tasks_no_new_node_could_take_or_run_are_left_alone() {
        let mut too_big = task("t9", "s-web", "", "pending", 9 * GIB);
        too_big["Status"]["Err"] = json!("no suitable node (insufficient resources on 2 nodes)");
        let mut elsewhere = task("t8", "s-web", "", "pending", GIB);
        elsewhere["Spec"]["Placement"]["Constraints"] = json!(["node.role==manager"]);
        let mut other_reason = task("t7", "s-web", "", "pending", GIB);
        other_reason["Status"]["Err"] = json!("");
        let view = SwarmView::from_api(
            &json!([node("m1", true), node("w2", false)]),
            &services(),
            &json!([too_big, elsewhere, other_reason]),
        );
        let groups = [group(&[("n2", "w2")])];
        let mut watch = Watch::default();
        let start = Instant::now();
        plan(&view, &groups, &mut watch, timings(), 40, start);
        let later = plan(
            &view,
            &groups,
            &mut watch,
            timings(),
            40,
            start + Duration::from_secs(3_600),
        );
        assert!(
            !later
                .iter()
                .any(|proposal| matches!(proposal, Proposal::ScaleOut { .. })),
            "{later:?}"
        );
    }

    #[test]
    fn constraints_are_read_as_a_new_node_of_the_nodegroup_would_meet_them() {
        let labels: BTreeMap<String, String> = [
            ("gpu".to_owned(), "yes".to_owned()),
            ("magnum.nodegroup".to_owned(), "gpus".to_owned()),
        ]
        .into();
        assert!(constraint_holds("node.labels.gpu==yes", &labels));
        assert!(constraint_holds("node.labels.gpu == YES", &labels));
        assert!(!constraint_holds("node.labels.gpu==no", &labels));
        assert!(constraint_holds("node.labels.gpu!=no", &labels));
        assert!(constraint_holds(
            "node.labels.magnum.nodegroup==gpus",
            &labels
        ));
        assert!(!constraint_holds("node.labels.zone==a", &labels));
        assert!(constraint_holds("node.labels.zone!=a", &labels));
        assert!(constraint_holds("node.role==worker", &labels));
        assert!(!constraint_holds("node.role==manager", &labels));
        assert!(constraint_holds("node.role!=manager", &labels));
        assert!(constraint_holds("node.platform.os==linux", &labels));
        assert!(!constraint_holds("node.hostname==c-n2", &labels));
        assert!(constraint_holds("node.hostname!=c-n2", &labels));
        assert!(!constraint_holds("engine.labels.x==y", &labels));
        assert!(!constraint_holds("nonsense", &labels));
        assert!(!constraint_holds("node.color==blue", &labels));
    }

    /// Tasks constrained to a labelled nodegroup ask that nodegroup for nodes, not another.
    #[test]
    fn a_constrained_task_grows_the_nodegroup_whose_nodes_meet_it() {
        let mut gpu_task = task("t1", "s-web", "", "pending", GIB);
        gpu_task["Status"]["Err"] =
            json!("no suitable node (scheduling constraints not satisfied on 2 nodes)");
        gpu_task["Spec"]["Placement"]["Constraints"] = json!(["node.labels.gpu==yes"]);
        let view = SwarmView::from_api(
            &json!([node("m1", true), node("w2", false)]),
            &services(),
            &json!([gpu_task]),
        );
        let mut gpus = group(&[]);
        gpus.uuid = Uuid::from_u128(3);
        gpus.name = "gpus".to_owned();
        gpus.labels.insert("gpu".to_owned(), "yes".to_owned());
        let groups = [group(&[("n2", "w2")]), gpus];
        let mut watch = Watch::default();
        let start = Instant::now();
        let no_delay = Timings {
            scale_out_delay: Duration::ZERO,
            ..timings()
        };
        let proposals = plan(&view, &groups, &mut watch, no_delay, 40, start);
        assert_eq!(proposals.len(), 1, "{proposals:?}");
        assert!(
            matches!(&proposals[0], Proposal::ScaleOut { nodegroup, add: 1, .. } if *nodegroup == Uuid::from_u128(3)),
            "{proposals:?}"
        );
    }

    #[test]
    fn workers_idle_for_the_idle_time_are_proposed_newest_first_never_managers() {
        let view = SwarmView::from_api(
            &json!([
                node("m1", true),
                node("w2", false),
                node("w3", false),
                node("w4", false)
            ]),
            &services(),
            &json!([
                task("t1", "s-web", "w2", "running", GIB),
                task("t0", "s-web", "m1", "running", GIB),
                // A global service's task keeps no node busy; a finished task neither.
                task("g3", "s-agent", "w3", "running", 0),
                task("old", "s-web", "w4", "shutdown", GIB),
            ]),
        );
        let groups = [group(&[("n2", "w2"), ("n3", "w3"), ("n4", "w4")])];
        let mut watch = Watch::default();
        let start = Instant::now();
        assert!(plan(&view, &groups, &mut watch, timings(), 40, start).is_empty());
        let proposals = plan(
            &view,
            &groups,
            &mut watch,
            timings(),
            40,
            start + Duration::from_secs(601),
        );
        assert_eq!(
            proposals,
            [Proposal::ScaleIn {
                nodegroup: Uuid::from_u128(2),
                nodes: vec!["n4".to_owned(), "n3".to_owned()],
                why: "nodes n4, n3 ran no task for 601 s or more".to_owned()
            }]
        );
        // Work on n3 again: it is busy from now on.
        let busy = SwarmView::from_api(
            &json!([
                node("m1", true),
                node("w2", false),
                node("w3", false),
                node("w4", false)
            ]),
            &services(),
            &json!([task("t5", "s-web", "w3", "starting", GIB)]),
        );
        let proposals = plan(
            &busy,
            &groups,
            &mut watch,
            timings(),
            40,
            start + Duration::from_secs(602),
        );
        // n2 worked until the last look: only n4 is still idle long enough.
        assert_eq!(
            proposals,
            [Proposal::ScaleIn {
                nodegroup: Uuid::from_u128(2),
                nodes: vec!["n4".to_owned()],
                why: "node n4 ran no task for 602 s".to_owned()
            }]
        );
    }

    #[test]
    fn no_node_goes_while_work_waits_for_one_of_its_nodegroup() {
        let view = SwarmView::from_api(
            &json!([node("m1", true), node("w2", false)]),
            &services(),
            &json!([
                task("t1", "s-web", "", "pending", 9 * GIB),
                task("t2", "s-web", "", "pending", GIB)
            ]),
        );
        let groups = [group(&[("n2", "w2")])];
        let mut watch = Watch::default();
        let start = Instant::now();
        plan(&view, &groups, &mut watch, timings(), 40, start);
        // t2 could use a node of the nodegroup (it waits less than the delay): no scale-in.
        let proposals = plan(
            &view,
            &groups,
            &mut watch,
            Timings {
                scale_out_delay: Duration::from_secs(3_600),
                scale_in_idle: Duration::from_secs(1),
            },
            40,
            start + Duration::from_secs(10),
        );
        assert!(proposals.is_empty(), "{proposals:?}");
    }

    /// Nodes just added need a moment before the scheduler places waiting tasks on them:
    /// the waiting starts over, so that one change is not followed by a second for the same
    /// tasks.
    #[test]
    fn waiting_starts_over_when_the_nodes_change() {
        let pending = json!([task("t1", "s-web", "", "pending", 5 * GIB)]);
        let before = SwarmView::from_api(&json!([node("m1", true)]), &services(), &pending);
        let after = SwarmView::from_api(
            &json!([node("m1", true), node("w2", false)]),
            &services(),
            &pending,
        );
        let groups = [group(&[("n2", "w2")])];
        let mut watch = Watch::default();
        let start = Instant::now();
        plan(&before, &groups, &mut watch, timings(), 40, start);
        let grown = plan(
            &after,
            &groups,
            &mut watch,
            timings(),
            40,
            start + Duration::from_secs(31),
        );
        assert!(grown.is_empty(), "{grown:?}");
        let still = plan(
            &after,
            &groups,
            &mut watch,
            timings(),
            40,
            start + Duration::from_secs(62),
        );
        assert!(
            matches!(still[..], [Proposal::ScaleOut { add: 1, .. }]),
            "{still:?}"
        );
    }

    #[test]
    fn the_watch_forgets_tasks_and_nodes_that_are_gone() {
        let mut watch = Watch::default();
        let now = Instant::now();
        let waiting = SwarmView::from_api(
            &json!([node("w2", false)]),
            &services(),
            &json!([task("t1", "s-web", "", "pending", GIB)]),
        );
        watch.observe(&waiting, now);
        assert_eq!(watch.pending_since.len(), 1);
        assert_eq!(watch.busy_at.len(), 1);
        watch.observe(&SwarmView::default(), now);
        assert!(watch.pending_since.is_empty() && watch.busy_at.is_empty());
    }
}
