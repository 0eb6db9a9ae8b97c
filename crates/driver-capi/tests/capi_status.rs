//! Status, reasons and health from Cluster API objects: every stage of a cluster's life in
//! both the v1beta2 and the v1beta1 shapes of the objects.

mod fixtures;

use fixtures::condition;
use magnum_driver_capi::status::{assess, Assessment, Desired, Objects, Phase, Rollout};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    V1Beta2,
    /// v1beta1 objects of a CAPI that also reports v1beta2 conditions (v1.11+).
    V1Beta1WithV1Beta2Conditions,
    /// v1beta1 objects with only the old conditions (Ready, ControlPlaneReady, …).
    V1Beta1,
}

const SHAPES: [Shape; 3] = [
    Shape::V1Beta2,
    Shape::V1Beta1WithV1Beta2Conditions,
    Shape::V1Beta1,
];

/// The objects of a 3-master, 2-worker cluster at v1.33.5, everything ready, which each test
/// then bends into the stage it checks.
struct World {
    shape: Shape,
    cluster: Value,
    control_plane: Value,
    infrastructure: Value,
    deployments: Vec<Value>,
    machines: Vec<Value>,
    addons: Vec<Value>,
}

fn api_version(shape: Shape, group: &str) -> String {
    match shape {
        Shape::V1Beta2 => format!("{group}/v1beta2"),
        _ => format!("{group}/v1beta1"),
    }
}

/// Puts conditions where each shape keeps them; v1beta1-only objects get the old names.
fn with_conditions(shape: Shape, object: &mut Value, conditions: Vec<Value>) {
    match shape {
        Shape::V1Beta2 => object["status"]["conditions"] = json!(conditions),
        Shape::V1Beta1WithV1Beta2Conditions => {
            object["status"]["v1beta2"] = json!({"conditions": conditions})
        }
        Shape::V1Beta1 => {
            let renamed: Vec<Value> = conditions
                .into_iter()
                .map(|mut condition| {
                    let old = match condition["type"].as_str().unwrap() {
                        "Available" => "Ready",
                        "ControlPlaneAvailable" => "ControlPlaneReady",
                        other => other,
                    }
                    .to_owned();
                    condition["type"] = json!(old);
                    condition
                })
                .collect();
            object["status"]["conditions"] = json!(renamed);
        }
    }
}

fn machine(shape: Shape, name: &str, deployment: Option<&str>, address: &str) -> Value {
    let mut labels = json!({"cluster.x-k8s.io/cluster-name": "kube-5d12f6fda1964bf0"});
    match deployment {
        None => labels["cluster.x-k8s.io/control-plane"] = json!(""),
        Some(deployment) => labels["topology.cluster.x-k8s.io/deployment-name"] = json!(deployment),
    }
    let mut machine = json!({
        "apiVersion": api_version(shape, "cluster.x-k8s.io"),
        "kind": "Machine",
        "metadata": {"name": name, "labels": labels, "generation": 1},
        "status": {
            "phase": "Running",
            "nodeRef": {"name": name},
            "addresses": [{"type": "InternalIP", "address": address}],
        },
    });
    with_conditions(
        shape,
        &mut machine,
        vec![
            condition("InfrastructureReady", "True", "Ready", ""),
            condition("BootstrapConfigReady", "True", "Ready", ""),
            condition("NodeHealthy", "True", "NodeHealthy", ""),
            condition("Ready", "True", "Ready", ""),
        ],
    );
    machine
}

impl World {
    fn ready(shape: Shape) -> World {
        let mut cluster = json!({
            "apiVersion": api_version(shape, "cluster.x-k8s.io"),
            "kind": "Cluster",
            "metadata": {"name": "kube-5d12f6fda1964bf0", "generation": 3},
            "spec": {
                "controlPlaneEndpoint": {"host": "203.0.113.10", "port": 6443},
                "topology": {"version": "v1.33.5"},
            },
            "status": {"observedGeneration": 3, "phase": "Provisioned"},
        });
        with_conditions(
            shape,
            &mut cluster,
            vec![
                condition("Available", "True", "Available", ""),
                condition("InfrastructureReady", "True", "Ready", ""),
                condition("ControlPlaneAvailable", "True", "Available", ""),
                condition("WorkersAvailable", "True", "Available", ""),
                condition("RemoteConnectionProbe", "True", "ProbeSucceeded", ""),
                condition("TopologyReconciled", "True", "ReconcileSucceeded", ""),
            ],
        );
        let counts = |wanted: i64| match shape {
            Shape::V1Beta2 => json!({"replicas": wanted, "availableReplicas": wanted,
                                      "upToDateReplicas": wanted, "readyReplicas": wanted}),
            _ => json!({"replicas": wanted, "readyReplicas": wanted, "updatedReplicas": wanted}),
        };
        let mut control_plane = json!({
            "apiVersion": api_version(shape, "controlplane.cluster.x-k8s.io"),
            "kind": "KubeadmControlPlane",
            "metadata": {"name": "kube-5d12f6fda1964bf0-abcde", "generation": 2},
            "spec": {"replicas": 3, "version": "v1.33.5"},
            "status": counts(3),
        });
        control_plane["status"]["observedGeneration"] = json!(2);
        control_plane["status"]["version"] = json!("v1.33.5");
        let mut deployment = json!({
            "apiVersion": api_version(shape, "cluster.x-k8s.io"),
            "kind": "MachineDeployment",
            "metadata": {"name": "kube-5d12f6fda1964bf0-default-worker-x1", "generation": 4,
                         "labels": {"topology.cluster.x-k8s.io/deployment-name": "default-worker"}},
            "spec": {"replicas": 2},
            "status": counts(2),
        });
        deployment["status"]["observedGeneration"] = json!(4);
        deployment["status"]["phase"] = json!("Running");
        let infrastructure = json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
            "kind": "OpenStackCluster",
            "metadata": {"name": "kube-5d12f6fda1964bf0-xyz", "generation": 1},
            "status": {"ready": true, "conditions": [condition("Ready", "True", "", "")]},
        });
        let addon = |chart: &str| {
            json!({
                "apiVersion": "addons.cluster.x-k8s.io/v1alpha1",
                "kind": "HelmReleaseProxy",
                "metadata": {"name": format!("{chart}-kube-5d12f6fda1964bf0")},
                "spec": {"chartName": chart},
                "status": {"status": "deployed", "conditions": [condition("Ready", "True", "", "")]},
            })
        };
        World {
            shape,
            cluster,
            control_plane,
            infrastructure,
            deployments: vec![deployment],
            machines: vec![
                machine(shape, "cp-0", None, "10.0.0.10"),
                machine(shape, "cp-1", None, "10.0.0.11"),
                machine(shape, "cp-2", None, "10.0.0.12"),
                machine(shape, "worker-0", Some("default-worker"), "10.0.0.20"),
                machine(shape, "worker-1", Some("default-worker"), "10.0.0.21"),
            ],
            addons: vec![
                addon("tigera-operator"),
                addon("openstack-cloud-controller-manager"),
            ],
        }
    }

    fn assess(&self, workers: &[(String, Option<i64>)]) -> Assessment {
        let addons = vec![
            "tigera-operator".to_owned(),
            "openstack-cloud-controller-manager".to_owned(),
        ];
        assess(
            Objects {
                cluster: Some(&self.cluster),
                control_plane: Some(&self.control_plane),
                infrastructure: Some(&self.infrastructure),
                machine_deployments: &self.deployments,
                machines: &self.machines,
                addons: &self.addons,
            },
            Desired {
                version: "v1.33.5",
                control_plane_replicas: 3,
                workers,
                addons: &addons,
                generation: 0,
                rollout: None,
            },
        )
    }

    fn assess_default(&self) -> Assessment {
        self.assess(&[("default-worker".to_owned(), Some(2))])
    }

    fn set_condition(&mut self, target: Target, new: Value) {
        let shape = self.shape;
        let object = match target {
            Target::Cluster => &mut self.cluster,
            Target::Machine(index) => &mut self.machines[index],
        };
        let list = match shape {
            Shape::V1Beta2 | Shape::V1Beta1 => &mut object["status"]["conditions"],
            Shape::V1Beta1WithV1Beta2Conditions => &mut object["status"]["v1beta2"]["conditions"],
        };
        let mut new = new;
        if shape == Shape::V1Beta1 {
            let old = match new["type"].as_str().unwrap() {
                "Available" => "Ready",
                "ControlPlaneAvailable" => "ControlPlaneReady",
                other => other,
            }
            .to_owned();
            new["type"] = json!(old);
        }
        let conditions = list.as_array_mut().unwrap();
        conditions.retain(|condition| condition["type"] != new["type"]);
        conditions.push(new);
    }
}

#[derive(Clone, Copy)]
enum Target {
    Cluster,
    Machine(usize),
}

#[test]
fn a_cluster_with_everything_observed_and_ready_is_ready_and_healthy() {
    for shape in SHAPES {
        let world = World::ready(shape);
        let assessment = world.assess_default();
        assert_eq!(
            assessment.phase,
            Phase::Ready,
            "{shape:?}: {}",
            assessment.reason
        );
        assert_eq!(assessment.reason, "");
        assert_eq!(
            assessment.api_address.as_deref(),
            Some("https://203.0.113.10:6443")
        );
        assert_eq!(assessment.coe_version.as_deref(), Some("v1.33.5"));
        assert!(assessment.control_plane.ready);
        assert_eq!(
            assessment.control_plane.addresses,
            ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
        );
        assert_eq!(assessment.workers.len(), 1);
        assert!(assessment.workers[0].ready);
        assert_eq!(assessment.workers[0].addresses, ["10.0.0.20", "10.0.0.21"]);
        assert_eq!(assessment.healthy, Some(true), "{shape:?}");
        assert_eq!(assessment.health_reason["api"], "ok");
        assert_eq!(assessment.health_reason["worker-1.Ready"], "True");
    }
}

#[test]
fn no_capi_cluster_is_absent() {
    let assessment = assess(
        Objects::default(),
        Desired {
            version: "v1.33.5",
            control_plane_replicas: 1,
            workers: &[],
            addons: &[],
            generation: 0,
            rollout: None,
        },
    );
    assert_eq!(assessment.phase, Phase::Absent);
    assert_eq!(assessment.healthy, None);
}

#[test]
fn a_quota_failure_of_a_machine_reaches_the_reason_with_the_machine_named() {
    for shape in SHAPES {
        let mut world = World::ready(shape);
        let quota =
            "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances";
        world.set_condition(
            Target::Machine(4),
            condition(
                "InfrastructureReady",
                "False",
                "InstanceCreateFailed",
                quota,
            ),
        );
        world.machines[4]["status"]["phase"] = json!("Provisioning");
        world.deployments[0]["status"]["readyReplicas"] = json!(1);
        world.deployments[0]["status"]["availableReplicas"] = json!(1);
        world.set_condition(
            Target::Cluster,
            condition(
                "WorkersAvailable",
                "False",
                "NotAvailable",
                "1 of 2 available",
            ),
        );
        world.set_condition(
            Target::Cluster,
            condition("Available", "False", "NotAvailable", ""),
        );
        let assessment = world.assess_default();
        assert_eq!(assessment.phase, Phase::Progressing, "{shape:?}");
        assert!(
            assessment.reason.contains(&format!(
                "machine worker-1: InfrastructureReady: InstanceCreateFailed: {quota}"
            )),
            "{shape:?}: {}",
            assessment.reason
        );
        assert!(
            assessment.reason.contains("1 of 2 available"),
            "{}",
            assessment.reason
        );
        assert!(!assessment.workers[0].ready);
        assert!(assessment.workers[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("Quota exceeded"));
        assert_eq!(assessment.healthy, Some(false));
    }
}

#[test]
fn a_status_not_yet_observed_is_not_taken_for_the_new_spec() {
    for shape in SHAPES {
        let mut world = World::ready(shape);
        world.cluster["metadata"]["generation"] = json!(4);
        let assessment = world.assess_default();
        assert_eq!(assessment.phase, Phase::Progressing, "{shape:?}");
        assert_eq!(
            assessment.reason,
            "Cluster API has not seen the latest change yet"
        );

        let mut world = World::ready(shape);
        world.deployments[0]["metadata"]["generation"] = json!(5);
        assert_eq!(
            world.assess_default().phase,
            Phase::Progressing,
            "{shape:?}"
        );

        let mut world = World::ready(shape);
        world.control_plane["metadata"]["generation"] = json!(3);
        let assessment = world.assess_default();
        assert_eq!(assessment.phase, Phase::Progressing, "{shape:?}");
        assert!(
            !assessment.reason.is_empty(),
            "a reason is never empty while waiting"
        );
    }
}

#[test]
fn an_upgrade_is_complete_only_when_the_control_plane_runs_the_new_version() {
    for shape in SHAPES {
        let world = World::ready(shape);
        let addons = [
            "tigera-operator".to_owned(),
            "openstack-cloud-controller-manager".to_owned(),
        ];
        let workers = [("default-worker".to_owned(), Some(2))];
        let assessment = assess(
            Objects {
                cluster: Some(&world.cluster),
                control_plane: Some(&world.control_plane),
                infrastructure: Some(&world.infrastructure),
                machine_deployments: &world.deployments,
                machines: &world.machines,
                addons: &world.addons,
            },
            Desired {
                version: "v1.34.1",
                control_plane_replicas: 3,
                workers: &workers,
                addons: &addons,
                generation: 0,
                rollout: None,
            },
        );
        assert_eq!(assessment.phase, Phase::Progressing);
        assert!(
            assessment
                .reason
                .contains("at v1.33.5 (upgrading to v1.34.1)"),
            "{}",
            assessment.reason
        );
    }
}

#[test]
fn scaling_is_complete_when_the_counts_meet_the_wanted_one() {
    for shape in SHAPES {
        let world = World::ready(shape);
        let assessment = world.assess(&[("default-worker".to_owned(), Some(3))]);
        assert_eq!(assessment.phase, Phase::Progressing, "{shape:?}");
        assert!(
            assessment
                .reason
                .contains("nodegroup default-worker: 2 of 3"),
            "{}",
            assessment.reason
        );

        // The autoscaler owns the count: whatever the deployment wants, once reached.
        let assessment = world.assess(&[("default-worker".to_owned(), None)]);
        assert_eq!(
            assessment.phase,
            Phase::Ready,
            "{shape:?}: {}",
            assessment.reason
        );
    }
}

#[test]
fn a_rolling_or_remediating_cluster_is_not_ready() {
    for kind in ["RollingOut", "ScalingUp", "ScalingDown", "Remediating"] {
        let mut world = World::ready(Shape::V1Beta2);
        world.set_condition(Target::Cluster, condition(kind, "True", kind, "1 machine"));
        assert_eq!(world.assess_default().phase, Phase::Progressing, "{kind}");
    }
    let mut world = World::ready(Shape::V1Beta2);
    world.set_condition(
        Target::Cluster,
        condition(
            "TopologyReconciled",
            "False",
            "ReconcileFailed",
            "variable x: Required value",
        ),
    );
    let assessment = world.assess_default();
    assert_eq!(assessment.phase, Phase::Progressing);
    assert_eq!(
        assessment.reason,
        "Cluster topology not applied: ReconcileFailed: variable x: Required value"
    );
}

#[test]
fn terminal_failures_fail_the_cluster_with_their_message() {
    let mut world = World::ready(Shape::V1Beta1);
    world.cluster["status"]["failureReason"] = json!("InvalidConfiguration");
    world.cluster["status"]["failureMessage"] = json!("the external network does not exist");
    let assessment = world.assess_default();
    assert_eq!(assessment.phase, Phase::Failed);
    assert_eq!(
        assessment.reason,
        "Cluster: InvalidConfiguration: the external network does not exist"
    );

    let mut world = World::ready(Shape::V1Beta2);
    world.control_plane["status"]["deprecated"] = json!({"v1beta1": {"failureReason": "UpgradeFailed", "failureMessage": "etcd lost quorum"}});
    let assessment = world.assess_default();
    assert_eq!(assessment.phase, Phase::Failed);
    assert_eq!(
        assessment.reason,
        "control plane: UpgradeFailed: etcd lost quorum"
    );

    let mut world = World::ready(Shape::V1Beta2);
    world.infrastructure["status"]["failureMessage"] = json!("Unable to create router: 409 quota");
    world.infrastructure["status"]["ready"] = json!(false);
    let assessment = world.assess_default();
    assert_eq!(assessment.phase, Phase::Failed);
    assert!(assessment
        .reason
        .starts_with("OpenStackCluster: Unable to create router"));
}

#[test]
fn addons_gate_completion_and_a_failed_one_fails_the_cluster() {
    let mut world = World::ready(Shape::V1Beta2);
    world.addons.pop();
    let assessment = world.assess_default();
    assert_eq!(assessment.phase, Phase::Progressing);
    assert!(assessment
        .reason
        .contains("addon openstack-cloud-controller-manager: not installed yet"));

    let mut world = World::ready(Shape::V1Beta2);
    world.addons[0]["status"] = json!({"status": "pending-install",
        "conditions": [condition("Ready", "False", "HelmInstallOrUpgradeFailed", "")]});
    assert_eq!(world.assess_default().phase, Phase::Progressing);

    let mut world = World::ready(Shape::V1Beta2);
    world.addons[0]["status"] = json!({"status": "failed", "conditions": [
        condition("Ready", "False", "HelmInstallOrUpgradeFailed", "image pull back-off: quay.io/tigera/operator")]});
    let assessment = world.assess_default();
    assert_eq!(assessment.phase, Phase::Failed);
    assert_eq!(
        assessment.reason,
        "addon tigera-operator failed to install: HelmInstallOrUpgradeFailed: image pull back-off: quay.io/tigera/operator"
    );
}

#[test]
fn a_removed_nodegroup_is_complete_only_once_its_deployment_is_gone() {
    let mut world = World::ready(Shape::V1Beta2);
    let mut extra = world.deployments[0].clone();
    extra["metadata"]["labels"]["topology.cluster.x-k8s.io/deployment-name"] = json!("gpu");
    world.deployments.push(extra);
    let assessment = world.assess_default();
    assert_eq!(assessment.phase, Phase::Progressing);
    assert!(assessment.reason.contains("nodegroup gpu: being removed"));
    world.deployments.pop();
    assert_eq!(world.assess_default().phase, Phase::Ready);
}

#[test]
fn a_new_nodegroup_without_its_deployment_yet_is_progressing() {
    let world = World::ready(Shape::V1Beta2);
    let assessment = world.assess(&[
        ("default-worker".to_owned(), Some(2)),
        ("gpu".to_owned(), Some(1)),
    ]);
    assert_eq!(assessment.phase, Phase::Progressing);
    assert_eq!(assessment.workers.len(), 2);
    assert!(!assessment.workers[1].ready);
    assert!(assessment
        .reason
        .contains("nodegroup gpu: machine deployment not created yet"));
}

#[test]
fn a_deleting_cluster_says_what_deletion_waits_for() {
    let mut world = World::ready(Shape::V1Beta2);
    world.cluster["metadata"]["deletionTimestamp"] = json!("2026-11-26T01:00:00Z");
    world.set_condition(
        Target::Cluster,
        condition(
            "Deleting",
            "True",
            "WaitingForWorkersDeletion",
            "MachineDeployments default-worker",
        ),
    );
    let assessment = world.assess_default();
    assert_eq!(assessment.phase, Phase::Deleting);
    assert_eq!(
        assessment.reason,
        "Deleting: WaitingForWorkersDeletion: MachineDeployments default-worker"
    );
}

#[test]
fn an_unhealthy_node_makes_the_cluster_unhealthy_with_the_node_named() {
    for shape in SHAPES {
        let mut world = World::ready(shape);
        world.set_condition(
            Target::Machine(3),
            condition(
                "NodeHealthy",
                "False",
                "NodeNotReady",
                "kubelet stopped posting",
            ),
        );
        let assessment = world.assess_default();
        assert_eq!(assessment.healthy, Some(false), "{shape:?}");
        assert_eq!(assessment.health_reason["worker-0.Ready"], "False");
        assert_eq!(assessment.health_reason["worker-1.Ready"], "True");
    }
    let mut world = World::ready(Shape::V1Beta2);
    world.set_condition(
        Target::Cluster,
        condition(
            "RemoteConnectionProbe",
            "False",
            "ProbeFailed",
            "connection refused",
        ),
    );
    let assessment = world.assess_default();
    assert_eq!(assessment.healthy, Some(false));
    assert_eq!(assessment.health_reason["api"], "nok");
}

#[test]
fn reasons_stay_bounded_however_many_machines_fail() {
    let mut world = World::ready(Shape::V1Beta2);
    let template = world.machines[3].clone();
    for index in 0..500 {
        let mut machine = template.clone();
        machine["metadata"]["name"] = json!(format!("worker-extra-{index}"));
        machine["status"]["conditions"] = json!([condition(
            "InfrastructureReady",
            "False",
            "InstanceCreateFailed",
            &"Quota exceeded ".repeat(40)
        )]);
        world.machines.push(machine);
    }
    let assessment = world.assess(&[("default-worker".to_owned(), Some(502))]);
    assert_eq!(assessment.phase, Phase::Progressing);
    assert!(assessment.reason.chars().count() <= magnum_driver_capi::status::MAX_REASON_CHARS);
    assert!(assessment.health_reason.len() <= magnum_driver_capi::status::MAX_HEALTH_ENTRIES + 1);
    let named = assessment.reason.matches("machine worker-extra-").count();
    assert!(
        named <= magnum_driver_capi::status::MAX_MACHINES_NAMED,
        "{named}"
    );
}

#[test]
fn a_status_older_than_the_applied_generation_is_not_taken_for_it() {
    let world = World::ready(Shape::V1Beta2);
    let addons = [
        "tigera-operator".to_owned(),
        "openstack-cloud-controller-manager".to_owned(),
    ];
    let workers = [("default-worker".to_owned(), Some(2))];
    let objects = Objects {
        cluster: Some(&world.cluster),
        control_plane: Some(&world.control_plane),
        infrastructure: Some(&world.infrastructure),
        machine_deployments: &world.deployments,
        machines: &world.machines,
        addons: &world.addons,
    };
    let desired = |generation| Desired {
        version: "v1.33.5",
        control_plane_replicas: 3,
        workers: &workers,
        addons: &addons,
        generation,
        rollout: None,
    };
    // The cache still holds generation 3 while the apply made 4.
    assert_eq!(assess(objects, desired(4)).phase, Phase::Progressing);
    assert_eq!(assess(objects, desired(3)).phase, Phase::Ready);
    // A machine that does not run the desired spec yet holds the change.
    let mut world = World::ready(Shape::V1Beta2);
    world.set_condition(
        Target::Machine(4),
        condition("UpToDate", "False", "NotUpToDate", "image changed"),
    );
    let assessment = world.assess_default();
    assert_eq!(assessment.phase, Phase::Progressing);
    assert!(
        assessment
            .reason
            .contains("UpToDate: NotUpToDate: image changed"),
        "{}",
        assessment.reason
    );
}

#[test]
fn a_rollout_is_complete_only_when_every_machine_made_before_it_is_replaced() {
    for shape in SHAPES {
        let mut world = World::ready(shape);
        for (index, machine) in world.machines.iter_mut().enumerate() {
            // The first machine predates the rollout; one has no creation time at all.
            machine["metadata"]["creationTimestamp"] = match index {
                0 => json!("2026-11-26T10:00:00Z"),
                1 => Value::Null,
                _ => json!("2026-11-26T10:00:05Z"),
            };
        }
        let addons = [
            "tigera-operator".to_owned(),
            "openstack-cloud-controller-manager".to_owned(),
        ];
        let workers = [("default-worker".to_owned(), Some(2))];
        let assess_with = |world: &World| {
            assess(
                Objects {
                    cluster: Some(&world.cluster),
                    control_plane: Some(&world.control_plane),
                    infrastructure: Some(&world.infrastructure),
                    machine_deployments: &world.deployments,
                    machines: &world.machines,
                    addons: &world.addons,
                },
                Desired {
                    version: "v1.33.5",
                    control_plane_replicas: 3,
                    workers: &workers,
                    addons: &addons,
                    generation: 0,
                    rollout: Some(Rollout {
                        after: "2026-11-26T10:00:01Z",
                        purpose: "CA rotation step 2 of 3",
                    }),
                },
            )
        };
        let assessment = assess_with(&world);
        assert_eq!(assessment.phase, Phase::Progressing, "{shape:?}");
        assert!(
            assessment.reason.starts_with(
                "CA rotation step 2 of 3: 2 machines made before 2026-11-26T10:00:01Z still to be replaced"
            ),
            "{}",
            assessment.reason
        );
        // Made in the very second of the rollout counts as made after it, as in CAPI.
        world.machines[0]["metadata"]["creationTimestamp"] = json!("2026-11-26T10:00:01Z");
        world.machines[1]["metadata"]["creationTimestamp"] = json!("2026-11-26T10:00:02Z");
        let assessment = assess_with(&world);
        assert_eq!(assessment.phase, Phase::Ready, "{}", assessment.reason);
    }
}

/// Every Machine phase CAPI documents, crossed with the condition that explains it, in every
/// shape: what phase the cluster is in, what its reason names, and what health it reports.
#[test]
fn every_machine_phase_and_condition_maps_to_a_phase_a_reason_and_a_health() {
    struct Row {
        phase: &'static str,
        condition: Option<(&'static str, &'static str, &'static str, &'static str)>,
        failure: Option<(&'static str, &'static str)>,
        expected: Phase,
        reason: &'static str,
        healthy: Option<bool>,
    }
    let rows = [
        Row { phase: "Running", condition: None, failure: None, expected: Phase::Ready, reason: "", healthy: Some(true) },
        Row { phase: "Pending", condition: None, failure: None, expected: Phase::Progressing, reason: "machine worker-1: phase Pending", healthy: Some(true) },
        Row { phase: "Provisioning", condition: Some(("InfrastructureReady", "False", "InstanceCreateFailed", "Quota exceeded for instances")), failure: None, expected: Phase::Progressing, reason: "machine worker-1: InfrastructureReady: InstanceCreateFailed: Quota exceeded for instances", healthy: Some(true) },
        Row { phase: "Provisioning", condition: Some(("BootstrapConfigReady", "False", "WaitingForControlPlane", "")), failure: None, expected: Phase::Progressing, reason: "machine worker-1: BootstrapConfigReady: WaitingForControlPlane", healthy: Some(true) },
        Row { phase: "Provisioned", condition: Some(("NodeHealthy", "Unknown", "NodeNotFound", "")), failure: None, expected: Phase::Progressing, reason: "machine worker-1: NodeHealthy: NodeNotFound", healthy: Some(false) },
        Row { phase: "Running", condition: Some(("NodeHealthy", "False", "NodeNotReady", "kubelet stopped posting status")), failure: None, expected: Phase::Progressing, reason: "machine worker-1: NodeHealthy: NodeNotReady: kubelet stopped posting status", healthy: Some(false) },
        Row { phase: "Running", condition: Some(("Ready", "False", "NotReady", "")), failure: None, expected: Phase::Progressing, reason: "machine worker-1: Ready: NotReady", healthy: Some(true) },
        Row { phase: "Failed", condition: None, failure: Some(("CreateError", "server went into ERROR")), expected: Phase::Progressing, reason: "machine worker-1: CreateError: server went into ERROR", healthy: Some(true) },
        Row { phase: "Unknown", condition: None, failure: None, expected: Phase::Progressing, reason: "machine worker-1: phase Unknown", healthy: Some(true) },
    ];
    for shape in SHAPES {
        for row in &rows {
            let mut world = World::ready(shape);
            world.machines[4]["status"]["phase"] = json!(row.phase);
            if let Some((kind, status, reason, message)) = row.condition {
                world.set_condition(Target::Machine(4), condition(kind, status, reason, message));
            }
            if let Some((reason, message)) = row.failure {
                world.machines[4]["status"]["failureReason"] = json!(reason);
                world.machines[4]["status"]["failureMessage"] = json!(message);
            }
            let assessment = world.assess_default();
            let case = format!("{shape:?} phase {} {:?}", row.phase, row.condition);
            assert_eq!(
                assessment.phase, row.expected,
                "{case}: {}",
                assessment.reason
            );
            assert!(
                assessment.reason.contains(row.reason),
                "{case}: {}",
                assessment.reason
            );
            // Nothing but the machine's own trouble is named.
            if row.expected == Phase::Progressing {
                assert!(
                    !assessment.reason.contains("worker-0"),
                    "{case}: {}",
                    assessment.reason
                );
            }
            // Health follows node conditions (NodeHealthy in every shape), whatever the
            // provisioning stage.
            assert_eq!(
                assessment.healthy, row.healthy,
                "{case}: {:?}",
                assessment.health_reason
            );
        }
    }
}

/// The Cluster's own conditions, in every shape: each gap between it and Available is a
/// reason, and none of them is a failure.
#[test]
fn every_cluster_condition_that_is_not_true_keeps_the_cluster_progressing_with_its_reason() {
    let rows = [
        (
            "InfrastructureReady",
            "False",
            "NotReady",
            "waiting for the network",
            "waiting for the network",
        ),
        (
            "ControlPlaneAvailable",
            "False",
            "NotAvailable",
            "0 of 3 ready",
            "0 of 3 ready",
        ),
        (
            "WorkersAvailable",
            "False",
            "NotAvailable",
            "1 of 2 ready",
            "1 of 2 ready",
        ),
        (
            "RemoteConnectionProbe",
            "False",
            "ProbeFailed",
            "cannot reach the API server",
            "cannot reach the API server",
        ),
        (
            "TopologyReconciled",
            "False",
            "ClusterClassNotReconciled",
            "class is not reconciled",
            "class is not reconciled",
        ),
    ];
    for shape in SHAPES {
        for (kind, status, reason, message, expected) in rows {
            let mut world = World::ready(shape);
            world.set_condition(Target::Cluster, condition(kind, status, reason, message));
            world.set_condition(
                Target::Cluster,
                condition("Available", "False", "NotAvailable", ""),
            );
            let assessment = world.assess_default();
            let case = format!("{shape:?} {kind}");
            assert_eq!(
                assessment.phase,
                Phase::Progressing,
                "{case}: {}",
                assessment.reason
            );
            assert!(
                assessment.reason.contains(expected),
                "{case}: {}",
                assessment.reason
            );
        }
    }
}
