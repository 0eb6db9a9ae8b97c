//! A scripted Cluster API for tests: it plays the controllers of CAPI, CAPO and CAAPH on the
//! stand-in, the way they would answer a driver's topology, in one idempotent `step`.
//!
//! For each `Cluster` in its namespace it keeps a finalizer; makes the KubeadmControlPlane,
//! the OpenStackCluster, one MachineDeployment per topology entry and their Machines (new
//! machines on a version change, the `delete-machine`-annotated ones first when shrinking);
//! releases the chart of every HelmChartProxy that selects the cluster; writes the
//! kubeconfig secret; and reports everything observed and ready. A deleted Cluster loses its
//! objects and then its finalizer. Knobs make machines fail (CAPO's quota error) or freeze
//! the whole (a controller that never answers).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{ApiError, Controller, KubeApiServer, ResourceRef};

/// The message CAPO reports when Nova refuses a server for quota.
pub const QUOTA_MESSAGE: &str =
    "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances";

#[derive(Debug, Clone, Default)]
pub struct Knobs {
    /// New worker machines fail with CAPO's quota error and never become ready.
    pub quota_failure: bool,
    /// Nothing happens at all.
    pub frozen: bool,
    /// CAPO cannot remove the cloud resources: machines carry CAPI's finalizer, and a
    /// deleted Cluster keeps its own and its machines' for ever.
    pub stuck_deletes: bool,
}

#[derive(Clone)]
pub struct ScriptedCapi {
    controller: Controller,
    namespace: String,
    pub knobs: Arc<Mutex<Knobs>>,
}

fn capi(plural: &str) -> ResourceRef {
    ResourceRef::new("cluster.x-k8s.io", "v1beta2", plural)
}

fn kcp() -> ResourceRef {
    ResourceRef::new(
        "controlplane.cluster.x-k8s.io",
        "v1beta2",
        "kubeadmcontrolplanes",
    )
}

fn openstack_cluster() -> ResourceRef {
    ResourceRef::new(
        "infrastructure.cluster.x-k8s.io",
        "v1beta1",
        "openstackclusters",
    )
}

fn chart_proxies() -> ResourceRef {
    ResourceRef::new("addons.cluster.x-k8s.io", "v1alpha1", "helmchartproxies")
}

fn release_proxies() -> ResourceRef {
    ResourceRef::new("addons.cluster.x-k8s.io", "v1alpha1", "helmreleaseproxies")
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason,
           "message": message, "lastTransitionTime": "2026-11-26T00:00:00Z"})
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// OpenStackCluster fields CAPO's webhook keeps as they were created.
const IMMUTABLE_FIELDS: [&str; 7] = [
    "externalNetwork",
    "disableExternalNetwork",
    "network",
    "subnets",
    "managedSubnets",
    "apiServerLoadBalancer",
    "disableAPIServerFloatingIP",
];

/// What the topology controller makes of the capi driver's class variables (its patches).
fn openstack_cluster_spec(cluster: &str, topology: &Value) -> Value {
    let variable = |name: &str| {
        topology["variables"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["name"] == name)
            .map(|entry| entry["value"].clone())
            .unwrap_or(Value::Null)
    };
    let mut spec = json!({
        "identityRef": {"type": "Secret", "name": format!("{cluster}-cloud-config"), "cloudName": "openstack"},
        "apiServerLoadBalancer": {"enabled": variable("apiServerLoadBalancer").as_bool().unwrap_or(true)},
        "disableAPIServerFloatingIP": variable("disableAPIServerFloatingIP").as_bool().unwrap_or(false),
    });
    let external = variable("externalNetwork");
    if external["id"].as_str().is_some_and(|id| !id.is_empty()) {
        spec["externalNetwork"] = external;
    } else {
        spec["disableExternalNetwork"] = json!(true);
    }
    let network = variable("network");
    if network["id"].as_str().is_some_and(|id| !id.is_empty()) {
        spec["network"] = network;
    }
    for list in ["subnets", "managedSubnets", "controlPlaneAvailabilityZones"] {
        let value = variable(list);
        if value.as_array().is_some_and(|items| !items.is_empty()) {
            spec[list] = value;
        }
    }
    spec
}

/// The annotation the scripted machine bootstrap leaves on each Machine: the base64 `tls.crt`
/// of the cluster's CA secret when the machine was made, which is what kubeadm would have
/// installed on it as its trust bundle (and, first in it, its signing CA).
pub const TRUSTED_CA_ANNOTATION: &str = "scripted-capi.magnum-rs.test/trusted-ca";

/// Whether a machine must be replaced by a rollout (`rollout.after` of its control plane or
/// deployment): the time has come and the machine is older, as CAPI decides.
fn rolled_out(machine: &Value, rollout: &Value) -> bool {
    let parse = |text: &str| chrono::DateTime::parse_from_rfc3339(text).ok();
    let Some(after) = rollout["after"].as_str().and_then(parse) else {
        return false;
    };
    let created = machine["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse);
    after <= chrono::Utc::now() && created.is_some_and(|created| created < after)
}

/// A short, stable tag of a version, for machine names that change on an upgrade.
fn version_tag(version: &str) -> String {
    version.replace(['.', 'v'], "")
}

impl ScriptedCapi {
    pub fn new(server: &KubeApiServer, namespace: &str) -> Self {
        Self {
            controller: server.controller("capi-controllers"),
            namespace: namespace.to_owned(),
            knobs: Arc::default(),
        }
    }

    pub fn set(&self, change: impl FnOnce(&mut Knobs)) {
        change(&mut self.knobs.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn knobs(&self) -> Knobs {
        self.knobs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Steps every `interval` until the returned task is aborted.
    pub fn spawn(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(error) = self.step() {
                    // A race with the driver's own writes (a 409) is retried at the next step.
                    eprintln!("scripted capi: {error:?}");
                }
                tokio::time::sleep(interval).await;
            }
        })
    }

    fn ns(&self) -> Option<&str> {
        Some(&self.namespace)
    }

    fn owned(&self, resource: &ResourceRef, cluster: &str) -> Result<Vec<Value>, ApiError> {
        self.controller.list_selected(
            resource,
            self.ns(),
            &format!("cluster.x-k8s.io/cluster-name={cluster}"),
        )
    }

    /// Patches `.status` only when it would change: a controller at rest writes nothing.
    fn ensure_status(
        &self,
        resource: &ResourceRef,
        name: &str,
        status: Value,
    ) -> Result<(), ApiError> {
        let current = self.controller.get(resource, self.ns(), name)?;
        let differs = status
            .as_object()
            .into_iter()
            .flatten()
            .any(|(key, value)| current["status"][key] != *value);
        if differs {
            self.controller
                .patch_status(resource, self.ns(), name, status)?;
        }
        Ok(())
    }

    fn ensure(&self, resource: &ResourceRef, object: Value) -> Result<Value, ApiError> {
        let name = name_of(&object);
        if let Ok(current) = self.controller.get(resource, self.ns(), &name) {
            let same = ["spec", "metadata"].iter().all(|part| {
                object[part]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .all(|(key, value)| key == "name" || current[part][key] == *value)
            });
            if same {
                return Ok(current);
            }
        }
        self.controller.apply(resource, self.ns(), object)
    }

    fn labels(cluster: &str, deployment: Option<&str>) -> Value {
        let mut labels = json!({"cluster.x-k8s.io/cluster-name": cluster});
        match deployment {
            None => labels["cluster.x-k8s.io/control-plane"] = json!(""),
            Some(name) => labels["topology.cluster.x-k8s.io/deployment-name"] = json!(name),
        }
        labels
    }

    fn machine(
        &self,
        cluster: &str,
        name: &str,
        deployment: Option<&str>,
        address: &str,
        failing: bool,
    ) -> Result<(), ApiError> {
        if self
            .controller
            .get(&capi("machines"), self.ns(), name)
            .is_err()
        {
            let trusted = self
                .controller
                .get(
                    &ResourceRef::core("secrets"),
                    self.ns(),
                    &format!("{cluster}-ca"),
                )
                .ok()
                .and_then(|secret| secret["data"]["tls.crt"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let mut metadata = json!({"name": name, "labels": Self::labels(cluster, deployment),
                                      "annotations": {TRUSTED_CA_ANNOTATION: trusted}});
            if self.knobs().stuck_deletes {
                metadata["finalizers"] = json!(["machine.cluster.x-k8s.io"]);
            }
            self.controller.apply(
                &capi("machines"),
                self.ns(),
                json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                       "metadata": metadata,
                       "spec": {"clusterName": cluster, "providerID": format!("openstack:///{name}")}}),
            )?;
        }
        let conditions = if failing {
            json!([
                condition(
                    "InfrastructureReady",
                    false,
                    "InstanceCreateFailed",
                    QUOTA_MESSAGE
                ),
                condition("Ready", false, "NotReady", "")
            ])
        } else {
            json!([
                condition("InfrastructureReady", true, "Ready", ""),
                condition("NodeHealthy", true, "NodeHealthy", ""),
                condition("Ready", true, "Ready", "")
            ])
        };
        self.ensure_status(
            &capi("machines"),
            name,
            json!({"phase": if failing { "Provisioning" } else { "Running" },
                   "nodeRef": {"name": name},
                   "addresses": [{"type": "InternalIP", "address": address}],
                   "conditions": conditions}),
        )
    }

    /// One reconcile of every Cluster.
    pub fn step(&self) -> Result<(), ApiError> {
        let knobs = self.knobs();
        if knobs.frozen {
            return Ok(());
        }
        for cluster in self.controller.list(&capi("clusters"), self.ns())? {
            let name = name_of(&cluster);
            if cluster["metadata"]["deletionTimestamp"].is_string() {
                if !knobs.stuck_deletes {
                    self.tear_down(&name)?;
                }
                continue;
            }
            self.reconcile(&cluster, &knobs)?;
        }
        Ok(())
    }

    fn tear_down(&self, name: &str) -> Result<(), ApiError> {
        for resource in [
            capi("machines"),
            capi("machinedeployments"),
            kcp(),
            openstack_cluster(),
            release_proxies(),
        ] {
            for object in self.owned(&resource, name)? {
                self.controller
                    .delete(&resource, self.ns(), &name_of(&object))?;
            }
        }
        let secret = format!("{name}-kubeconfig");
        if self
            .controller
            .get(&ResourceRef::core("secrets"), self.ns(), &secret)
            .is_ok()
        {
            self.controller
                .delete(&ResourceRef::core("secrets"), self.ns(), &secret)?;
        }
        self.controller
            .remove_finalizers(&capi("clusters"), self.ns(), name)?;
        Ok(())
    }

    fn reconcile(&self, cluster: &Value, knobs: &Knobs) -> Result<(), ApiError> {
        let name = name_of(cluster);
        let topology = &cluster["spec"]["topology"];
        let version = topology["version"].as_str().unwrap_or_default().to_owned();
        let tag = version_tag(&version);
        // The cluster controller: finalizer and endpoint.
        self.ensure(
            &capi("clusters"),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                   "metadata": {"name": name, "finalizers": ["cluster.cluster.x-k8s.io"]},
                   "spec": {"controlPlaneEndpoint": {"host": "203.0.113.10", "port": 6443}}}),
        )?;
        // The topology controller patches the OpenStackCluster from the class variables; CAPO's
        // webhook refuses any later change of these fields.
        let generated = openstack_cluster_spec(&name, topology);
        let infrastructure_name = format!("{name}-os");
        let mut refused = None;
        match self
            .controller
            .get(&openstack_cluster(), self.ns(), &infrastructure_name)
        {
            Err(_) => {
                self.controller.apply(
                    &openstack_cluster(),
                    self.ns(),
                    json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackCluster",
                           "metadata": {"name": infrastructure_name, "labels": {"cluster.x-k8s.io/cluster-name": name}},
                           "spec": generated}),
                )?;
            }
            Ok(live) => {
                let changed: Vec<&str> = IMMUTABLE_FIELDS
                    .into_iter()
                    .filter(|field| live["spec"][*field] != generated[*field])
                    .collect();
                if !changed.is_empty() {
                    refused = Some(format!(
                        "admission webhook \"validation.openstackcluster.infrastructure.cluster.x-k8s.io\" denied the request: spec.{}: Forbidden: cannot be modified",
                        changed.join(", spec.")
                    ));
                }
            }
        }
        self.ensure_status(
            &openstack_cluster(),
            &format!("{name}-os"),
            json!({"ready": true}),
        )?;

        // The control plane, rolled to new machines on a version change.
        let replicas = topology["controlPlane"]["replicas"].as_i64().unwrap_or(1);
        let control_plane = self.ensure(
            &kcp(),
            json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
                   "metadata": {"name": format!("{name}-cp"), "labels": {"cluster.x-k8s.io/cluster-name": name}},
                   "spec": {"replicas": replicas, "version": version}}),
        )?;
        let wanted: BTreeSet<String> = (0..replicas)
            .map(|index| format!("{name}-cp-{tag}-{index}"))
            .collect();
        for machine in self.owned(&capi("machines"), &name)? {
            let is_control_plane = machine["metadata"]["labels"]
                .get("cluster.x-k8s.io/control-plane")
                .is_some();
            let outdated = rolled_out(&machine, &topology["controlPlane"]["rollout"]);
            if is_control_plane && (outdated || !wanted.contains(&name_of(&machine))) {
                self.controller
                    .delete(&capi("machines"), self.ns(), &name_of(&machine))?;
            }
        }
        for (index, machine) in wanted.iter().enumerate() {
            self.machine(
                &name,
                machine,
                None,
                &format!("10.0.0.{}", 10 + index),
                false,
            )?;
        }
        self.ensure_status(
            &kcp(),
            &format!("{name}-cp"),
            json!({"observedGeneration": control_plane["metadata"]["generation"], "replicas": replicas,
                   "readyReplicas": replicas, "availableReplicas": replicas, "upToDateReplicas": replicas,
                   "version": version}),
        )?;

        // One MachineDeployment per topology entry; the others are removed.
        let entries: Vec<Value> = topology["workers"]["machineDeployments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut failing_any = false;
        for deployment in self.owned(&capi("machinedeployments"), &name)? {
            let entry = deployment["metadata"]["labels"]
                ["topology.cluster.x-k8s.io/deployment-name"]
                .clone();
            if !entries.iter().any(|wanted| wanted["name"] == entry) {
                for machine in self.owned(&capi("machines"), &name)? {
                    if machine["metadata"]["labels"]["topology.cluster.x-k8s.io/deployment-name"]
                        == entry
                    {
                        self.controller
                            .delete(&capi("machines"), self.ns(), &name_of(&machine))?;
                    }
                }
                self.controller.delete(
                    &capi("machinedeployments"),
                    self.ns(),
                    &name_of(&deployment),
                )?;
            }
        }
        for (group, entry) in entries.iter().enumerate() {
            let md = entry["name"].as_str().unwrap_or_default();
            let object_name = format!("{name}-{md}");
            let existing = self
                .controller
                .get(&capi("machinedeployments"), self.ns(), &object_name)
                .ok();
            // Without a count in the topology (the autoscaler's), the minimum annotation.
            let replicas = entry["replicas"].as_i64().unwrap_or_else(|| {
                existing
                    .as_ref()
                    .and_then(|d| d["spec"]["replicas"].as_i64())
                    .or_else(|| {
                        entry["metadata"]["annotations"]
                            ["cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"]
                            .as_str()
                            .and_then(|m| m.parse().ok())
                    })
                    .unwrap_or(1)
            });
            // Once made, the count of a deployment the topology leaves to the autoscaler is the
            // autoscaler's alone.
            let mut spec = json!({"clusterName": name, "replicas": replicas});
            if entry["replicas"].is_null() && existing.is_some() {
                spec = json!({"clusterName": name});
            }
            // The topology's metadata reaches the MachineDeployment (the autoscaler reads
            // its annotations there).
            let mut labels = entry["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels["cluster.x-k8s.io/cluster-name"] = json!(name);
            labels["topology.cluster.x-k8s.io/deployment-name"] = json!(md);
            let mut metadata = json!({"name": object_name, "labels": labels});
            if entry["metadata"]["annotations"].is_object() {
                metadata["annotations"] = entry["metadata"]["annotations"].clone();
            }
            let deployment = self.ensure(
                &capi("machinedeployments"),
                json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                       "metadata": metadata,
                       "spec": spec}),
            )?;
            let mut machines: Vec<Value> = self
                .owned(&capi("machines"), &name)?
                .into_iter()
                .filter(|m| {
                    m["metadata"]["labels"]["topology.cluster.x-k8s.io/deployment-name"] == md
                })
                .collect();
            // A version change replaces every machine.
            for machine in machines
                .iter()
                .filter(|m| !name_of(m).contains(&format!("-{tag}-")))
            {
                self.controller
                    .delete(&capi("machines"), self.ns(), &name_of(machine))?;
            }
            machines.retain(|m| name_of(m).contains(&format!("-{tag}-")));
            // A due rollout replaces every machine made before it.
            for machine in machines.iter().filter(|m| rolled_out(m, &entry["rollout"])) {
                self.controller
                    .delete(&capi("machines"), self.ns(), &name_of(machine))?;
            }
            machines.retain(|m| !rolled_out(m, &entry["rollout"]));
            // Shrinking removes the marked machines first, then the newest.
            machines.sort_by_key(|m| {
                let marked =
                    m["metadata"]["annotations"]["cluster.x-k8s.io/delete-machine"].is_string();
                (!marked, std::cmp::Reverse(name_of(m)))
            });
            while machines.len() as i64 > replicas {
                let machine = machines.remove(0);
                self.controller
                    .delete(&capi("machines"), self.ns(), &name_of(&machine))?;
            }
            let mut index = 0;
            while (machines.len() as i64) < replicas {
                let candidate = format!("{name}-{md}-{tag}-{index}");
                index += 1;
                if machines.iter().any(|m| name_of(m) == candidate) {
                    continue;
                }
                self.machine(
                    &name,
                    &candidate,
                    Some(md),
                    &format!("10.0.{}.{}", group + 1, 20 + index),
                    knobs.quota_failure,
                )?;
                machines.push(
                    self.controller
                        .get(&capi("machines"), self.ns(), &candidate)?,
                );
            }
            let ready = machines
                .iter()
                .filter(|m| m["status"]["phase"] == "Running")
                .count() as i64;
            failing_any |= ready < replicas;
            self.ensure_status(
                &capi("machinedeployments"),
                &object_name,
                json!({"observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
                       "readyReplicas": ready, "availableReplicas": ready, "upToDateReplicas": replicas,
                       "phase": if ready == replicas { "Running" } else { "ScalingUp" }}),
            )?;
        }

        // CAAPH: a release per chart proxy that selects the cluster.
        let labels = &cluster["metadata"]["labels"];
        for proxy in self.controller.list(&chart_proxies(), self.ns())? {
            let selected = proxy["spec"]["clusterSelector"]["matchLabels"]
                .as_object()
                .into_iter()
                .flatten()
                .all(|(key, value)| labels[key] == *value);
            if !selected {
                continue;
            }
            let release = format!("{}-{name}", name_of(&proxy));
            let chart = proxy["spec"]["chartName"].clone();
            self.ensure(
                &release_proxies(),
                json!({"apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmReleaseProxy",
                       "metadata": {"name": release, "labels": {"cluster.x-k8s.io/cluster-name": name}},
                       "spec": {"clusterRef": {"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": name},
                                "chartName": chart, "repoURL": proxy["spec"]["repoURL"], "namespace": proxy["spec"]["namespace"],
                                "releaseName": proxy["spec"]["releaseName"]}}),
            )?;
            self.ensure_status(
                &release_proxies(),
                &release,
                json!({"status": "deployed", "conditions": [condition("Ready", true, "HelmReleaseDeployed", "")]}),
            )?;
        }

        let secret = format!("{name}-kubeconfig");
        if self
            .controller
            .get(&ResourceRef::core("secrets"), self.ns(), &secret)
            .is_err()
        {
            self.controller.apply(
                &ResourceRef::core("secrets"),
                self.ns(),
                json!({"apiVersion": "v1", "kind": "Secret", "type": "cluster.x-k8s.io/secret",
                       "metadata": {"name": secret, "labels": {"cluster.x-k8s.io/cluster-name": name}},
                       "data": {"value": "YXBpVmVyc2lvbjogdjEK"}}),
            )?;
        }

        // The Cluster's own status, for the generation just seen.
        let current = self.controller.get(&capi("clusters"), self.ns(), &name)?;
        self.ensure_status(
            &capi("clusters"),
            &name,
            json!({"observedGeneration": current["metadata"]["generation"], "conditions": [
                condition("Available", !failing_any, if failing_any { "NotAvailable" } else { "Available" }, ""),
                condition("InfrastructureReady", true, "Ready", ""),
                condition("ControlPlaneAvailable", true, "Available", ""),
                condition("WorkersAvailable", !failing_any, if failing_any { "NotAvailable" } else { "Available" },
                          if failing_any { "some machines are not ready" } else { "" }),
                condition("RemoteConnectionProbe", true, "ProbeSucceeded", ""),
                match &refused {
                    None => condition("TopologyReconciled", true, "ReconcileSucceeded", ""),
                    Some(message) => condition("TopologyReconciled", false, "ReconcileFailed", message),
                },
            ]}),
        )?;
        Ok(())
    }
}
