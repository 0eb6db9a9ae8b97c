//! What the Cluster API objects of a cluster say about it, in Magnum's terms: pure functions
//! over the objects as the management cluster returns them, v1beta2 and v1beta1 alike.
//!
//! A change is complete only when every controller has seen it (observed generations), every
//! machine runs the desired spec and every addon is deployed: a status written before the
//! change was observed says nothing about it. Failures are never hidden: the reasons and
//! messages of every condition that is not True, and of the machines that are not ready
//! (CAPO's "Quota exceeded …" is one), become `status_reason`.

use serde_json::{json, Map, Value};

use crate::names::label;

/// The longest `status_reason` the driver writes; longer texts end with "…".
pub const MAX_REASON_CHARS: usize = 2_000;
/// Machines named in a reason; the others are counted.
pub const MAX_MACHINES_NAMED: usize = 5;
/// Entries of `health_status_reason` besides `api`.
pub const MAX_HEALTH_ENTRIES: usize = 100;

/// A condition, whichever API version it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl Condition {
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn parse_conditions(list: &Value) -> Vec<Condition> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|condition| Condition {
            kind: text(&condition["type"]),
            status: text(&condition["status"]),
            reason: text(&condition["reason"]),
            message: text(&condition["message"]),
        })
        .collect()
}

/// The v1beta2 conditions of an object: `status.conditions` of a v1beta2 object,
/// `status.v1beta2.conditions` of a v1beta1 one. For v1beta1 objects without them (older
/// controllers, CAPO), their own conditions with the v1beta1 names mapped to v1beta2 ones.
pub fn conditions(object: &Value) -> Vec<Condition> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    if api_version.ends_with("/v1beta2") {
        return parse_conditions(&object["status"]["conditions"]);
    }
    let newer = &object["status"]["v1beta2"]["conditions"];
    if newer.is_array() {
        return parse_conditions(newer);
    }
    let old = parse_conditions(&object["status"]["conditions"]);
    // Only a Cluster's v1beta1 names map to v1beta2 ones: a Machine's `Ready` is still its
    // readiness, and a KubeadmControlPlane has both `Ready` and `Available`.
    if object["kind"] != "Cluster" {
        return old;
    }
    old.into_iter()
        .map(|mut condition| {
            condition.kind = match condition.kind.as_str() {
                "Ready" => "Available".to_owned(),
                "ControlPlaneReady" => "ControlPlaneAvailable".to_owned(),
                _ => condition.kind,
            };
            condition
        })
        .collect()
}

fn condition<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|condition| condition.kind == kind)
}

fn is_true(conditions: &[Condition], kind: &str) -> bool {
    condition(conditions, kind).is_some_and(Condition::is_true)
}

/// A terminal failure CAPI recorded (v1beta1 `failureReason`/`failureMessage`, kept under
/// `status.deprecated.v1beta1` in v1beta2).
fn terminal_failure(object: &Value) -> Option<String> {
    let status = &object["status"];
    for place in [status, &status["deprecated"]["v1beta1"]] {
        let message = text(&place["failureMessage"]);
        let reason = text(&place["failureReason"]);
        if !message.is_empty() || !reason.is_empty() {
            return Some(join_reason(&reason, &message));
        }
    }
    None
}

fn join_reason(reason: &str, message: &str) -> String {
    match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{reason}: {message}"),
        (false, true) => reason.to_owned(),
        (true, _) => message.to_owned(),
    }
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn integer(value: &Value) -> Option<i64> {
    value.as_i64()
}

/// Whether the controller of `object` has seen its latest spec.
fn observed(object: &Value) -> bool {
    let generation = integer(&object["metadata"]["generation"]).unwrap_or(0);
    let seen = integer(&object["status"]["observedGeneration"]).unwrap_or(0);
    seen >= generation
}

fn is_deleting(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

/// The objects of one cluster, as listed on the management cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Objects<'a> {
    /// The CAPI `Cluster`; None when it does not exist.
    pub cluster: Option<&'a Value>,
    pub control_plane: Option<&'a Value>,
    pub infrastructure: Option<&'a Value>,
    pub machine_deployments: &'a [Value],
    pub machines: &'a [Value],
    /// HelmReleaseProxies of the cluster's addons.
    pub addons: &'a [Value],
}

/// What the driver asked for, to compare the objects with.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    pub version: &'a str,
    pub control_plane_replicas: i64,
    /// Per worker nodegroup: its MachineDeployment name and wanted replicas (None when the
    /// autoscaler owns the count).
    pub workers: &'a [(String, Option<i64>)],
    /// Addons that must be deployed before the cluster is complete (chart names).
    pub addons: &'a [String],
    /// The Cluster's generation the driver's apply produced: a status of an older one says
    /// nothing about this change (0 when unknown).
    pub generation: i64,
    /// A rollout every machine created before must have been replaced in (a CA rotation
    /// step); None when there is none.
    pub rollout: Option<Rollout<'a>>,
}

/// A replacement of every machine made before `after` (RFC 3339), for `purpose` (words a
/// tenant reads, such as "CA rotation step 2 of 3").
#[derive(Debug, Clone, Copy)]
pub struct Rollout<'a> {
    pub after: &'a str,
    pub purpose: &'a str,
}

/// Where a cluster stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Still converging; the reason says on what.
    Progressing,
    /// Everything desired is there, observed and ready.
    Ready,
    /// A terminal failure CAPI will not retry, or an addon that failed to install.
    Failed,
    /// Being deleted; CAPI is tearing it down.
    Deleting,
    /// The CAPI Cluster does not exist.
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodegroupState {
    /// The MachineDeployment name (or "control-plane").
    pub name: String,
    pub ready: bool,
    pub replicas: i64,
    pub ready_replicas: i64,
    pub addresses: Vec<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub phase: Phase,
    /// For `status_reason`: empty when ready.
    pub reason: String,
    pub api_address: Option<String>,
    pub coe_version: Option<String>,
    pub control_plane: NodegroupState,
    pub workers: Vec<NodegroupState>,
    pub healthy: Option<bool>,
    pub health_reason: Map<String, Value>,
}

/// The reasons of the conditions of `object` that are not True, from `kinds`.
fn unmet(object: &Value, kinds: &[&str], what: &str, reasons: &mut Vec<String>) {
    let conditions = conditions(object);
    for kind in kinds {
        match condition(&conditions, kind) {
            Some(condition) if condition.is_true() => {}
            Some(condition) => {
                let detail = join_reason(&condition.reason, &condition.message);
                if detail.is_empty() {
                    reasons.push(format!("{what} {kind} is {}", condition.status));
                } else {
                    reasons.push(format!("{what} {kind}: {detail}"));
                }
            }
            None => reasons.push(format!("{what} {kind} not reported yet")),
        }
    }
}

/// A machine's addresses, external first: what a tenant reaches nodes at.
fn addresses(machine: &Value) -> Vec<String> {
    let mut external = Vec::new();
    let mut internal = Vec::new();
    for address in machine["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let value = text(&address["address"]);
        match address["type"].as_str() {
            Some("ExternalIP") => external.push(value),
            Some("InternalIP") => internal.push(value),
            _ => {}
        }
    }
    if external.is_empty() {
        internal
    } else {
        external
    }
}

/// Whether a machine runs, with its node up; otherwise why not.
fn machine_problem(machine: &Value) -> Option<String> {
    if let Some(failure) = terminal_failure(machine) {
        return Some(failure);
    }
    let conditions = conditions(machine);
    for kind in [
        "InfrastructureReady",
        "BootstrapConfigReady",
        // v1beta2: the machine runs the desired spec (image, flavor, version).
        "UpToDate",
        "NodeHealthy",
        "Ready",
    ] {
        if let Some(condition) = condition(&conditions, kind) {
            if !condition.is_true() {
                let detail = join_reason(&condition.reason, &condition.message);
                return Some(if detail.is_empty() {
                    format!("{kind} is {}", condition.status)
                } else {
                    format!("{kind}: {detail}")
                });
            }
        }
    }
    let phase = machine["status"]["phase"].as_str().unwrap_or("Pending");
    if phase != "Running" {
        return Some(format!("phase {phase}"));
    }
    None
}

fn bounded(mut text: String) -> String {
    if text.chars().count() > MAX_REASON_CHARS {
        text = text.chars().take(MAX_REASON_CHARS - 1).collect();
        text.push('…');
    }
    text
}

/// Replicas counted the v1beta2 way, falling back to v1beta1 fields.
struct Replicas {
    wanted: i64,
    current: i64,
    ready: i64,
    up_to_date: i64,
}

fn replicas(object: &Value) -> Replicas {
    let status = &object["status"];
    let wanted = integer(&object["spec"]["replicas"]).unwrap_or(0);
    let current = integer(&status["replicas"]).unwrap_or(0);
    let ready = integer(&status["availableReplicas"])
        .or_else(|| integer(&status["readyReplicas"]))
        .unwrap_or(0);
    let up_to_date = integer(&status["upToDateReplicas"])
        .or_else(|| integer(&status["updatedReplicas"]))
        .unwrap_or(0);
    Replicas {
        wanted,
        current,
        ready,
        up_to_date,
    }
}

fn settled(counts: &Replicas, wanted: i64) -> bool {
    counts.wanted == wanted
        && counts.current == wanted
        && counts.ready == wanted
        && counts.up_to_date == wanted
}

/// Machines of the control plane, or of one MachineDeployment.
fn machines_of<'a>(machines: &'a [Value], deployment: Option<&str>) -> Vec<&'a Value> {
    machines
        .iter()
        .filter(|machine| {
            let labels = &machine["metadata"]["labels"];
            match deployment {
                None => labels.get(label::CAPI_CONTROL_PLANE).is_some(),
                Some(name) => labels[label::CAPI_DEPLOYMENT_NAME].as_str() == Some(name),
            }
        })
        .collect()
}

/// Whether `object` was created before `instant` (both RFC 3339); an object without a
/// creation time counts as created before, so that nothing unknown passes as replaced.
fn created_before(object: &Value, instant: &str) -> bool {
    let parse = |text: &str| chrono::DateTime::parse_from_rfc3339(text).ok();
    match (
        object["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(parse),
        parse(instant),
    ) {
        (Some(created), Some(instant)) => created < instant,
        _ => true,
    }
}

/// Machines not being deleted.
fn live_count(machines: &[&Value]) -> i64 {
    machines
        .iter()
        .filter(|machine| !is_deleting(machine))
        .count() as i64
}

fn describe_machines(machines: &[&Value], reasons: &mut Vec<String>) -> bool {
    let problems: Vec<String> = machines
        .iter()
        .filter(|machine| !is_deleting(machine))
        .filter_map(|machine| {
            machine_problem(machine)
                .map(|problem| format!("machine {}: {problem}", name_of(machine)))
        })
        .collect();
    let all_fine = problems.is_empty();
    let count = problems.len();
    reasons.extend(problems.into_iter().take(MAX_MACHINES_NAMED));
    if count > MAX_MACHINES_NAMED {
        reasons.push(format!(
            "and {} more machines not ready",
            count - MAX_MACHINES_NAMED
        ));
    }
    all_fine
}

/// The Kubernetes API's address, as soon as the Cluster's control plane endpoint is known.
pub fn api_address(cluster: &Value) -> Option<String> {
    let endpoint = &cluster["spec"]["controlPlaneEndpoint"];
    endpoint["host"]
        .as_str()
        .filter(|host| !host.is_empty())
        .map(|host| {
            format!(
                "https://{host}:{}",
                endpoint["port"].as_i64().unwrap_or(6443)
            )
        })
}

/// Assesses a cluster's objects against what was asked.
pub fn assess(objects: Objects<'_>, desired: Desired<'_>) -> Assessment {
    let mut reasons: Vec<String> = Vec::new();
    let Some(cluster) = objects.cluster else {
        return Assessment {
            phase: Phase::Absent,
            reason: "The Cluster API cluster does not exist.".to_owned(),
            api_address: None,
            coe_version: None,
            control_plane: NodegroupState {
                name: "control-plane".to_owned(),
                ready: false,
                replicas: 0,
                ready_replicas: 0,
                addresses: Vec::new(),
                reason: None,
            },
            workers: Vec::new(),
            healthy: None,
            health_reason: Map::new(),
        };
    };
    let api_address = api_address(cluster);

    let mut failed = terminal_failure(cluster).map(|failure| format!("Cluster: {failure}"));
    if let Some(infrastructure) = objects.infrastructure {
        if let Some(failure) = terminal_failure(infrastructure) {
            failed.get_or_insert(format!("OpenStackCluster: {failure}"));
        }
    }
    let cluster_conditions = conditions(cluster);
    // The cache may still hold the Cluster from before the apply: its own generation must
    // be the applied one or newer, and observed.
    let generation = integer(&cluster["metadata"]["generation"]).unwrap_or(0);
    let seen = integer(&cluster["status"]["observedGeneration"]).unwrap_or(0);
    let current = generation >= desired.generation && seen >= desired.generation;
    let mut complete = current && observed(cluster) && is_true(&cluster_conditions, "Available");
    if !current || !observed(cluster) {
        reasons.push("Cluster API has not seen the latest change yet".to_owned());
    }
    for kind in ["RollingOut", "ScalingUp", "ScalingDown", "Remediating"] {
        if is_true(&cluster_conditions, kind) {
            complete = false;
        }
    }
    if let Some(topology) =
        condition(&cluster_conditions, "TopologyReconciled").filter(|c| !c.is_true())
    {
        // The topology controller could not write the generated objects (a webhook's
        // refusal reads here): what the change is stuck on.
        complete = false;
        reasons.push(format!(
            "Cluster topology not applied: {}",
            join_reason(&topology.reason, &topology.message)
        ));
    }
    unmet(
        cluster,
        &[
            "InfrastructureReady",
            "ControlPlaneAvailable",
            "WorkersAvailable",
        ],
        "Cluster",
        &mut reasons,
    );
    // v1beta2 only: the management cluster cannot reach the workload cluster's API server.
    if let Some(probe) = condition(&cluster_conditions, "RemoteConnectionProbe") {
        if !probe.is_true() {
            reasons.push(format!(
                "Cluster RemoteConnectionProbe: {}",
                join_reason(&probe.reason, &probe.message)
            ));
        }
    }
    if let Some(infrastructure) = objects.infrastructure {
        let ready = infrastructure["status"]["ready"].as_bool().unwrap_or(false);
        if !ready {
            let mut infrastructure_reasons = Vec::new();
            unmet(
                infrastructure,
                &["Available"],
                "OpenStackCluster",
                &mut infrastructure_reasons,
            );
            for other in conditions(infrastructure) {
                if !other.is_true() && other.kind != "Available" {
                    infrastructure_reasons.push(format!(
                        "OpenStackCluster {}: {}",
                        other.kind,
                        join_reason(&other.reason, &other.message)
                    ));
                }
            }
            reasons.extend(infrastructure_reasons);
        }
    }

    // The control plane.
    let control_plane_machines = machines_of(objects.machines, None);
    let mut control_plane = NodegroupState {
        name: "control-plane".to_owned(),
        ready: false,
        replicas: 0,
        ready_replicas: 0,
        addresses: control_plane_machines
            .iter()
            .flat_map(|machine| addresses(machine))
            .collect(),
        reason: None,
    };
    let mut coe_version = None;
    match objects.control_plane {
        None => {
            complete = false;
            reasons.push("the control plane is not created yet".to_owned());
        }
        Some(kcp) => {
            let counts = replicas(kcp);
            control_plane.replicas = counts.current;
            control_plane.ready_replicas = counts.ready;
            let version = kcp["status"]["version"].as_str().map(str::to_owned);
            // The watches of different kinds are not ordered: the machines a status counts
            // must be in view too, or their addresses would be missed.
            let seen = live_count(&control_plane_machines);
            let mut ready = observed(kcp)
                && settled(&counts, desired.control_plane_replicas)
                && seen == desired.control_plane_replicas
                && version.as_deref() == Some(desired.version);
            if let Some(failure) = terminal_failure(kcp) {
                failed.get_or_insert(format!("control plane: {failure}"));
                ready = false;
            }
            if !ready {
                reasons.push(format!(
                    "control plane: {} of {} machines ready and up to date{}",
                    counts.ready.min(counts.up_to_date),
                    desired.control_plane_replicas,
                    version
                        .as_deref()
                        .filter(|version| *version != desired.version)
                        .map(|version| format!(", at {version} (upgrading to {})", desired.version))
                        .unwrap_or_default()
                ));
            }
            let mut machine_reasons = Vec::new();
            let machines_fine = describe_machines(&control_plane_machines, &mut machine_reasons);
            if !ready {
                control_plane.reason = machine_reasons.first().cloned();
            }
            reasons.extend(machine_reasons);
            control_plane.ready = ready && machines_fine;
            complete &= control_plane.ready;
            coe_version = version;
        }
    }

    // The workers, one MachineDeployment per nodegroup.
    let mut workers = Vec::new();
    for (name, wanted) in desired.workers {
        let deployment = objects.machine_deployments.iter().find(|deployment| {
            deployment["metadata"]["labels"][label::CAPI_DEPLOYMENT_NAME].as_str() == Some(name)
        });
        let group_machines = machines_of(objects.machines, Some(name));
        let mut state = NodegroupState {
            name: name.clone(),
            ready: false,
            replicas: 0,
            ready_replicas: 0,
            addresses: group_machines
                .iter()
                .flat_map(|machine| addresses(machine))
                .collect(),
            reason: None,
        };
        match deployment {
            None => {
                state.reason = Some("its machine deployment is not created yet".to_owned());
                reasons.push(format!(
                    "nodegroup {name}: machine deployment not created yet"
                ));
            }
            Some(deployment) => {
                let counts = replicas(deployment);
                let target = wanted.unwrap_or(counts.wanted);
                state.replicas = counts.current;
                state.ready_replicas = counts.ready;
                let ready = observed(deployment)
                    && settled(&counts, target)
                    && live_count(&group_machines) == target;
                let mut machine_reasons = Vec::new();
                let machines_fine = describe_machines(&group_machines, &mut machine_reasons);
                if !ready {
                    reasons.push(format!(
                        "nodegroup {name}: {} of {target} machines ready and up to date",
                        counts.ready.min(counts.up_to_date)
                    ));
                    state.reason = machine_reasons
                        .first()
                        .cloned()
                        .or_else(|| Some(format!("{} of {target} machines ready", counts.ready)));
                }
                reasons.extend(machine_reasons);
                state.ready = ready && machines_fine;
            }
        }
        complete &= state.ready;
        workers.push(state);
    }
    // A rollout is done only when every machine made before it has been replaced; what it
    // is for leads the reason.
    if let Some(rollout) = desired.rollout {
        let outdated = objects
            .machines
            .iter()
            .filter(|machine| created_before(machine, rollout.after))
            .count();
        if outdated > 0 {
            complete = false;
            reasons.insert(
                0,
                format!(
                    "{}: {outdated} machines made before {} still to be replaced",
                    rollout.purpose, rollout.after
                ),
            );
        }
    }
    // A MachineDeployment of a removed nodegroup is still being torn down.
    for deployment in objects.machine_deployments {
        let name = deployment["metadata"]["labels"][label::CAPI_DEPLOYMENT_NAME]
            .as_str()
            .unwrap_or_default();
        if !desired.workers.iter().any(|(wanted, _)| wanted == name) {
            complete = false;
            reasons.push(format!("nodegroup {name}: being removed"));
        }
    }

    // Addons.
    for chart in desired.addons {
        let release = objects
            .addons
            .iter()
            .find(|release| release["spec"]["chartName"].as_str() == Some(chart.as_str()));
        match release {
            None => {
                complete = false;
                reasons.push(format!("addon {chart}: not installed yet"));
            }
            Some(release) => {
                let status = release["status"]["status"].as_str().unwrap_or_default();
                let release_conditions = parse_conditions(&release["status"]["conditions"]);
                if status == "failed" {
                    let detail = release_conditions
                        .iter()
                        .find(|condition| !condition.is_true())
                        .map(|condition| join_reason(&condition.reason, &condition.message))
                        .unwrap_or_default();
                    failed.get_or_insert(format!("addon {chart} failed to install: {detail}"));
                } else if status != "deployed" || !is_true(&release_conditions, "Ready") {
                    complete = false;
                    let detail = release_conditions
                        .iter()
                        .find(|condition| !condition.is_true())
                        .map(|condition| join_reason(&condition.reason, &condition.message))
                        .unwrap_or_else(|| {
                            format!(
                                "release {}",
                                if status.is_empty() { "pending" } else { status }
                            )
                        });
                    reasons.push(format!("addon {chart}: {detail}"));
                }
            }
        }
    }

    let (healthy, health_reason) = health(cluster, objects.machines);
    let phase = if is_deleting(cluster) {
        Phase::Deleting
    } else if failed.is_some() {
        Phase::Failed
    } else if complete {
        Phase::Ready
    } else {
        Phase::Progressing
    };
    let reason = match (&phase, failed) {
        (Phase::Ready, _) => String::new(),
        (Phase::Deleting, _) => {
            let detail = condition(&cluster_conditions, "Deleting")
                .map(|condition| join_reason(&condition.reason, &condition.message))
                .filter(|detail| !detail.is_empty())
                .unwrap_or_else(|| "waiting for Cluster API to remove the machines".to_owned());
            bounded(format!("Deleting: {detail}"))
        }
        (_, Some(failure)) => bounded(failure),
        _ if reasons.is_empty() => "Waiting for Cluster API to finish the change.".to_owned(),
        _ => bounded(reasons.join("; ")),
    };
    Assessment {
        phase,
        reason,
        api_address,
        coe_version,
        control_plane,
        workers,
        healthy,
        health_reason,
    }
}

/// HEALTHY when the cluster is Available and every node is healthy; the reason maps each
/// machine to its node's readiness, as upstream's Kubernetes monitor does (`<node>.Ready`).
pub fn health(cluster: &Value, machines: &[Value]) -> (Option<bool>, Map<String, Value>) {
    let cluster_conditions = conditions(cluster);
    let Some(available) = condition(&cluster_conditions, "Available") else {
        return (None, Map::new());
    };
    let mut reason = Map::new();
    let api_ok = is_true(&cluster_conditions, "RemoteConnectionProbe")
        || (available.is_true()
            && condition(&cluster_conditions, "RemoteConnectionProbe").is_none());
    reason.insert("api".to_owned(), json!(if api_ok { "ok" } else { "nok" }));
    let mut healthy = available.is_true() && api_ok;
    for machine in machines.iter().filter(|machine| !is_deleting(machine)) {
        let node = machine["status"]["nodeRef"]["name"]
            .as_str()
            .unwrap_or_else(|| name_of(machine))
            .to_owned();
        let machine_conditions = conditions(machine);
        let node_healthy = is_true(&machine_conditions, "NodeHealthy")
            || is_true(&machine_conditions, "NodeReady");
        healthy &= node_healthy;
        if reason.len() <= MAX_HEALTH_ENTRIES {
            reason.insert(
                format!("{node}.Ready"),
                json!(if node_healthy { "True" } else { "False" }),
            );
        }
    }
    (Some(healthy), reason)
}
