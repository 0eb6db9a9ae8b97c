//! The driver's conversation with a management cluster, against the Kubernetes API stand-in
//! of magnum-test-support through an ordinary kubeconfig and kube-rs's own HTTP path. The
//! test plays CAPI's controllers: it creates the control plane, machines and deployments a
//! topology makes, advances their conditions, and removes finalizers on delete.

mod fixtures;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fixtures::*;
use magnum_driver::{Action, ClusterSpec, Converge, Driver, DriverError, Progress};
use magnum_driver_capi::catalog::{Catalog, CatalogFlavor, CatalogImage, CatalogNetwork};
use magnum_driver_capi::driver::{CapiDriver, CredentialIssuer};
use magnum_driver_capi::render::ApplicationCredential;
use magnum_test_support::kube_api::capi::{ScriptedCapi, TRUSTED_CA_ANNOTATION};
use magnum_test_support::kube_api::{
    Controller, KubeApiConfig, KubeApiServer, Outage, RecordedRequest, ResourceRef,
};
use serde_json::{json, Value};

const NAMESPACE: &str = "magnum-system";
const NAME: &str = "kube-5d12f6fda1964bf0";

#[derive(Default)]
struct Reports(Mutex<Vec<(Instant, String)>>);

#[async_trait::async_trait]
impl Progress for Reports {
    async fn report(&self, message: String) {
        self.0.lock().unwrap().push((Instant::now(), message));
    }
}

impl Reports {
    fn texts(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, text)| text.clone())
            .collect()
    }

    /// When a report containing `needle` first arrived.
    fn when(&self, needle: &str) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, text)| text.contains(needle))
            .map(|(at, _)| *at)
    }
}

/// Gives each cluster its delegated credential, or `credential-1`, counting what it was
/// asked (revocation is the conductor's, never the driver's).
#[derive(Default)]
struct Issuer {
    issued: Mutex<u32>,
}

#[async_trait::async_trait]
impl CredentialIssuer for Issuer {
    async fn issue(&self, spec: &ClusterSpec) -> Result<ApplicationCredential, String> {
        *self.issued.lock().unwrap() += 1;
        Ok(match &spec.credential {
            Some(credential) => ApplicationCredential {
                id: credential.id.clone(),
                secret: credential.secret.clone(),
            },
            None => ApplicationCredential {
                id: "credential-1".to_owned(),
                secret: "secret-1".to_owned(),
            },
        })
    }
}

fn catalog() -> Catalog {
    Catalog {
        images: vec![
            CatalogImage {
                id: IMAGE.to_owned(),
                name: "ubuntu-2404-kube-v1.33".to_owned(),
                os_distro: Some("ubuntu".to_owned()),
            },
            CatalogImage {
                id: NEW_IMAGE.to_owned(),
                name: "ubuntu-2404-kube-v1.34".to_owned(),
                os_distro: Some("ubuntu".to_owned()),
            },
        ],
        flavors: ["m1.medium", "m1.large"]
            .iter()
            .enumerate()
            .map(|(index, name)| CatalogFlavor {
                id: format!("f{index}"),
                name: (*name).to_owned(),
                disk_gib: 20,
            })
            .collect(),
        external_networks: vec![CatalogNetwork {
            id: EXTERNAL_NETWORK.to_owned(),
            name: "public".to_owned(),
        }],
        fixed_networks: Vec::new(),
        fixed_subnets: Vec::new(),
        keypairs: vec!["ops".to_owned()],
    }
}

fn resource(kind: &str) -> ResourceRef {
    match kind {
        "clusters" | "machines" | "machinedeployments" => {
            ResourceRef::new("cluster.x-k8s.io", "v1beta2", kind)
        }
        "kubeadmcontrolplanes" => {
            ResourceRef::new("controlplane.cluster.x-k8s.io", "v1beta2", kind)
        }
        "openstackclusters" => ResourceRef::new("infrastructure.cluster.x-k8s.io", "v1beta1", kind),
        "helmreleaseproxies" => ResourceRef::new("addons.cluster.x-k8s.io", "v1alpha1", kind),
        "secrets" | "namespaces" => ResourceRef::core(kind),
        other => panic!("{other}"),
    }
}

async fn stand_in() -> KubeApiServer {
    let config = KubeApiConfig::new()
        .capi_crds(&[
            "cluster.x-k8s.io_clusters.yaml",
            "cluster.x-k8s.io_clusterclasses.yaml",
            "cluster.x-k8s.io_machinedeployments.yaml",
            "cluster.x-k8s.io_machines.yaml",
            "cluster.x-k8s.io_machinesets.yaml",
            "infrastructure.cluster.x-k8s.io_openstackmachines.yaml",
            "controlplane.cluster.x-k8s.io_kubeadmcontrolplanes.yaml",
            "controlplane.cluster.x-k8s.io_kubeadmcontrolplanetemplates.yaml",
            "bootstrap.cluster.x-k8s.io_kubeadmconfigtemplates.yaml",
            "infrastructure.cluster.x-k8s.io_openstackclusters.yaml",
            "infrastructure.cluster.x-k8s.io_openstackclustertemplates.yaml",
            "infrastructure.cluster.x-k8s.io_openstackmachinetemplates.yaml",
            "addons.cluster.x-k8s.io_clusterresourcesets.yaml",
            "addons.cluster.x-k8s.io_helmchartproxies.yaml",
            "addons.cluster.x-k8s.io_helmreleaseproxies.yaml",
        ])
        .unwrap();
    let server = KubeApiServer::start(config).await.unwrap();
    server
        .controller("kube-system")
        .create(
            &resource("namespaces"),
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        )
        .unwrap();
    server
}

fn spec() -> ClusterSpec {
    let template = template();
    let cluster = cluster(&template);
    let nodegroups = default_nodegroups(&cluster);
    ClusterSpec {
        cluster,
        template,
        nodegroups,
        authority: Some(magnum_certs::generate_ca("prod", 30).unwrap()),
        credential: None,
    }
}

fn condition_list(pairs: &[(&str, &str, &str, &str)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(kind, status, reason, message)| condition(kind, status, reason, message))
            .collect(),
    )
}

/// CAPI's controllers, as far as the driver can tell.
struct Capi {
    controller: Controller,
}

impl Capi {
    fn new(server: &KubeApiServer) -> Self {
        Self {
            controller: server.controller("capi-controllers"),
        }
    }

    fn get(&self, kind: &str, name: &str) -> Option<Value> {
        self.controller
            .get(&resource(kind), Some(NAMESPACE), name)
            .ok()
    }

    async fn wait_for(&self, kind: &str, name: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            if let Some(object) = self.get(kind, name) {
                if done(&object) {
                    return object;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{kind}/{name} never got there: {:?}", self.get(kind, name));
    }

    fn labels(deployment: Option<&str>) -> Value {
        let mut labels = json!({"cluster.x-k8s.io/cluster-name": NAME});
        match deployment {
            None => labels["cluster.x-k8s.io/control-plane"] = json!(""),
            Some(name) => labels["topology.cluster.x-k8s.io/deployment-name"] = json!(name),
        }
        labels
    }

    /// The topology controller's objects for a Cluster just applied, nothing ready yet.
    fn provision(&self) {
        let c = &self.controller;
        c.apply(
            &resource("clusters"),
            Some(NAMESPACE),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                   "metadata": {"name": NAME, "finalizers": ["cluster.cluster.x-k8s.io"]}}),
        )
        .unwrap();
        c.apply(
            &resource("kubeadmcontrolplanes"),
            Some(NAMESPACE),
            json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
                   "metadata": {"name": format!("{NAME}-cp"), "labels": {"cluster.x-k8s.io/cluster-name": NAME}},
                   "spec": {"replicas": 3, "version": "v1.33.5"}}),
        )
        .unwrap();
        c.apply(
            &resource("openstackclusters"),
            Some(NAMESPACE),
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackCluster",
                   "metadata": {"name": format!("{NAME}-os"), "labels": {"cluster.x-k8s.io/cluster-name": NAME}},
                   "spec": {"identityRef": {"type": "Secret", "name": format!("{NAME}-cloud-config"), "cloudName": "openstack"}}}),
        )
        .unwrap();
        self.deployment("default-worker", 2);
    }

    fn deployment(&self, name: &str, replicas: i64) {
        let mut labels = Self::labels(Some(name));
        labels
            .as_object_mut()
            .unwrap()
            .remove("cluster.x-k8s.io/control-plane");
        self.controller
            .apply(
                &resource("machinedeployments"),
                Some(NAMESPACE),
                json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                       "metadata": {"name": format!("{NAME}-{name}"), "labels": labels},
                       "spec": {"clusterName": NAME, "replicas": replicas}}),
            )
            .unwrap();
    }

    fn machine(&self, name: &str, deployment: Option<&str>, address: &str, ready: Option<&str>) {
        let c = &self.controller;
        c.apply(
            &resource("machines"),
            Some(NAMESPACE),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                   "metadata": {"name": name, "labels": Self::labels(deployment)},
                   "spec": {"clusterName": NAME, "providerID": format!("openstack:///{name}-server")}}),
        )
        .unwrap();
        let conditions = match ready {
            None => condition_list(&[
                ("InfrastructureReady", "True", "Ready", ""),
                ("NodeHealthy", "True", "NodeHealthy", ""),
                ("Ready", "True", "Ready", ""),
            ]),
            Some(problem) => condition_list(&[
                (
                    "InfrastructureReady",
                    "False",
                    "InstanceCreateFailed",
                    problem,
                ),
                ("Ready", "False", "NotReady", ""),
            ]),
        };
        c.patch_status(
            &resource("machines"),
            Some(NAMESPACE),
            name,
            json!({"phase": if ready.is_none() { "Running" } else { "Provisioning" },
                   "nodeRef": {"name": name},
                   "addresses": [{"type": "InternalIP", "address": address}],
                   "conditions": conditions}),
        )
        .unwrap();
    }

    /// CAAPH's release of one chart into the workload cluster, in `state` ("deployed",
    /// "failed", …) with the Ready condition's reason and message.
    fn release(&self, chart: &str, state: &str, reason: &str, message: &str) {
        let name = format!("{chart}-{NAME}");
        self.controller
            .apply(
                &resource("helmreleaseproxies"),
                Some(NAMESPACE),
                json!({"apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmReleaseProxy",
                       "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": NAME}},
                       "spec": {"clusterRef": {"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": NAME},
                                "chartName": chart, "repoURL": "https://charts.test", "namespace": "kube-system",
                                "releaseName": chart}}),
            )
            .unwrap();
        let ready = if state == "deployed" { "True" } else { "False" };
        self.controller
            .patch_status(
                &resource("helmreleaseproxies"),
                Some(NAMESPACE),
                &name,
                json!({"status": state, "conditions": condition_list(&[("Ready", ready, reason, message)])}),
            )
            .unwrap();
    }

    /// Statuses saying every object is observed and ready, at `version` with `workers`.
    fn settle(&self, version: &str, workers: &[(&str, i64)]) {
        for chart in [
            "tigera-operator",
            "openstack-cloud-controller-manager",
            "openstack-cinder-csi",
        ] {
            self.release(chart, "deployed", "HelmReleaseDeployed", "");
        }
        self.settle_machines(version, workers);
    }

    /// `settle` without the addons.
    fn settle_machines(&self, version: &str, workers: &[(&str, i64)]) {
        let c = &self.controller;
        c.apply(
            &resource("clusters"),
            Some(NAMESPACE),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                   "metadata": {"name": NAME, "finalizers": ["cluster.cluster.x-k8s.io"]},
                   "spec": {"controlPlaneEndpoint": {"host": "203.0.113.10", "port": 6443}}}),
        )
        .unwrap();
        let generation = self.get("clusters", NAME).unwrap()["metadata"]["generation"].clone();
        c.patch_status(
            &resource("clusters"),
            Some(NAMESPACE),
            NAME,
            json!({"observedGeneration": generation, "conditions": condition_list(&[
                ("Available", "True", "Available", ""),
                ("InfrastructureReady", "True", "Ready", ""),
                ("ControlPlaneAvailable", "True", "Available", ""),
                ("WorkersAvailable", "True", "Available", ""),
                ("RemoteConnectionProbe", "True", "ProbeSucceeded", ""),
                ("TopologyReconciled", "True", "ReconcileSucceeded", ""),
            ])}),
        )
        .unwrap();
        let kcp = format!("{NAME}-cp");
        c.apply(
            &resource("kubeadmcontrolplanes"),
            Some(NAMESPACE),
            json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
                   "metadata": {"name": kcp, "labels": {"cluster.x-k8s.io/cluster-name": NAME}},
                   "spec": {"replicas": 3, "version": version}}),
        )
        .unwrap();
        let kcp_generation =
            self.get("kubeadmcontrolplanes", &kcp).unwrap()["metadata"]["generation"].clone();
        c.patch_status(
            &resource("kubeadmcontrolplanes"),
            Some(NAMESPACE),
            &kcp,
            json!({"observedGeneration": kcp_generation, "replicas": 3, "readyReplicas": 3,
                   "availableReplicas": 3, "upToDateReplicas": 3, "version": version}),
        )
        .unwrap();
        c.patch_status(
            &resource("openstackclusters"),
            Some(NAMESPACE),
            &format!("{NAME}-os"),
            json!({"ready": true}),
        )
        .unwrap();
        for (index, address) in ["10.0.0.10", "10.0.0.11", "10.0.0.12"].iter().enumerate() {
            self.machine(&format!("{NAME}-cp-{index}"), None, address, None);
        }
        for (deployment, replicas) in workers {
            self.deployment(deployment, *replicas);
            let name = format!("{NAME}-{deployment}");
            let generation =
                self.get("machinedeployments", &name).unwrap()["metadata"]["generation"].clone();
            c.patch_status(
                &resource("machinedeployments"),
                Some(NAMESPACE),
                &name,
                json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                       "availableReplicas": replicas, "upToDateReplicas": replicas}),
            )
            .unwrap();
            for index in 0..*replicas {
                self.machine(
                    &format!("{NAME}-{deployment}-{index}"),
                    Some(deployment),
                    &format!("10.0.1.{}", 20 + index),
                    None,
                );
            }
        }
    }
}

async fn driver(
    server: &KubeApiServer,
    kubeconfig: &std::path::Path,
    issuer: Arc<Issuer>,
) -> CapiDriver {
    let _ = server;
    CapiDriver::connect(settings(), catalog(), kubeconfig, issuer, true)
        .await
        .unwrap()
}

/// A driver with `settings` other than the fixtures', watching the stand-in.
async fn driver_with(
    settings: magnum_driver_capi::settings::Settings,
    kubeconfig: &std::path::Path,
    issuer: Arc<Issuer>,
) -> Arc<CapiDriver> {
    Arc::new(
        CapiDriver::connect(settings, catalog(), kubeconfig, issuer, true)
            .await
            .unwrap(),
    )
}

/// A create converging in the background, reporting to `reports`.
fn spawn_create(
    driver: &Arc<CapiDriver>,
    spec: &Arc<ClusterSpec>,
    reports: Arc<Reports>,
) -> tokio::task::JoinHandle<Result<magnum_driver::Observed, DriverError>> {
    spawn_converge(driver, spec, Action::CreateCluster, reports)
}

/// `action` converging in the background, reporting to `reports`.
fn spawn_converge(
    driver: &Arc<CapiDriver>,
    spec: &Arc<ClusterSpec>,
    action: Action,
    reports: Arc<Reports>,
) -> tokio::task::JoinHandle<Result<magnum_driver::Observed, DriverError>> {
    let (driver, spec) = (driver.clone(), spec.clone());
    tokio::spawn(async move {
        driver
            .converge(
                Converge {
                    action,
                    spec: &spec,
                    nodes_to_remove: &[],
                    max_batch_size: None,
                },
                reports.as_ref(),
            )
            .await
    })
}

fn writes(requests: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    requests
        .iter()
        .filter(|request| request.method != "GET")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_created_from_applied_objects_and_its_status_follows_the_watch() {
    let server = stand_in().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let issuer = Arc::new(Issuer::default());
    let driver = Arc::new(driver(&server, kubeconfig.path(), issuer.clone()).await);
    let spec = Arc::new(spec());
    let reports = Arc::new(Reports::default());
    let converge = spawn_create(&driver, &spec, reports.clone());
    let capi = Capi::new(&server);
    let applied = capi.wait_for("clusters", NAME, |_| true).await;
    assert_eq!(
        applied["spec"]["topology"]["classRef"]["name"],
        "magnum-rs-v1"
    );
    // Everything was written before the Cluster: class, CA secrets, credentials.
    for secret in [
        "ca",
        "etcd",
        "proxy",
        "sa",
        "cloud-config",
        "cloud-provider",
    ] {
        let found = server.controller("test").get(
            &resource("secrets"),
            Some(NAMESPACE),
            &format!("{NAME}-{secret}"),
        );
        assert!(found.is_ok(), "{secret}: {found:?}");
    }
    let ca = server
        .controller("test")
        .get(&resource("secrets"), Some(NAMESPACE), &format!("{NAME}-ca"))
        .unwrap();
    assert_eq!(ca["type"], "cluster.x-k8s.io/secret");

    // CAPO cannot get a server: the quota message reaches the reason within a second.
    capi.provision();
    let failure_written = Instant::now();
    capi.machine(
        &format!("{NAME}-default-worker-0"),
        Some("default-worker"),
        "10.0.1.20",
        Some("Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"),
    );
    let mut seen = None;
    for _ in 0..100 {
        seen = reports.when("Quota exceeded for instances");
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.unwrap_or_else(|| panic!("no quota reason in {:?}", reports.texts()));
    assert!(
        seen.duration_since(failure_written) < Duration::from_secs(1),
        "{:?}",
        seen.duration_since(failure_written)
    );
    assert!(!converge.is_finished());

    capi.settle("v1.33.5", &[("default-worker", 2)]);
    let observed = tokio::time::timeout(Duration::from_secs(10), converge)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the create completes once everything is ready: {:?}",
                reports.texts()
            )
        })
        .unwrap()
        .unwrap();
    assert_eq!(observed.stack_id.as_deref(), Some(NAME));
    assert_eq!(
        observed.api_address.as_deref(),
        Some("https://203.0.113.10:6443")
    );
    assert_eq!(observed.coe_version.as_deref(), Some("v1.33.5"));
    let masters = &observed.nodegroups[0];
    assert_eq!(
        masters.node_addresses,
        ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    );
    assert_eq!(
        observed.nodegroups[1].node_addresses,
        ["10.0.1.20", "10.0.1.21"]
    );
    assert!(*issuer.issued.lock().unwrap() >= 1);
    // CAPO acts with the cluster's credential, named on its secret.
    let cloud_config = server
        .controller("t")
        .get(
            &resource("secrets"),
            Some(NAMESPACE),
            &format!("{NAME}-cloud-config"),
        )
        .unwrap();
    assert_eq!(
        cloud_config["metadata"]["annotations"]
            ["magnum-rs.openstack.org/application-credential-id"],
        "credential-1"
    );

    // Every write was a server-side apply under one manager with strict validation, or the
    // creation of a generated key that must never be replaced; no PUT, no DELETE.
    let requests = server.requests();
    for request in writes(&requests) {
        match request.method.as_str() {
            "PATCH" => {
                assert_eq!(
                    request.content_type.as_deref(),
                    Some("application/apply-patch+yaml"),
                    "{request:?}"
                );
                for parameter in [
                    "fieldManager=magnum-rs",
                    "force=true",
                    "fieldValidation=Strict",
                ] {
                    assert!(
                        request.query.contains(parameter),
                        "{parameter}: {request:?}"
                    );
                }
            }
            "POST" => assert!(request.path.ends_with("/secrets"), "{request:?}"),
            other => panic!("unexpected {other} {}", request.path),
        }
    }
    let posts = writes(&requests)
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 3, "etcd, proxy and sa keys are made once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_with_nodes_to_remove_marks_the_machines_and_delete_is_two_phase() {
    let server = stand_in().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let issuer = Arc::new(Issuer::default());
    let driver = Arc::new(driver(&server, kubeconfig.path(), issuer.clone()).await);
    let capi = Capi::new(&server);
    let mut first = spec();
    {
        let spec = first.clone();
        let driver = driver.clone();
        let create = tokio::spawn(async move {
            driver
                .converge(
                    Converge {
                        action: Action::CreateCluster,
                        spec: &spec,
                        nodes_to_remove: &[],
                        max_batch_size: None,
                    },
                    &Reports::default(),
                )
                .await
        });
        capi.wait_for("clusters", NAME, |_| true).await;
        capi.provision();
        capi.settle("v1.33.5", &[("default-worker", 2)]);
        tokio::time::timeout(Duration::from_secs(10), create)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    // Shrink the workers to one, removing the second machine by its node name.
    first.nodegroups[1].node_count = 1;
    let spec = Arc::new(first);
    let remove = vec![format!("{NAME}-default-worker-1")];
    let resize = {
        let (driver, spec) = (driver.clone(), spec.clone());
        tokio::spawn(async move {
            driver
                .converge(
                    Converge {
                        action: Action::ScaleWorkers,
                        spec: &spec,
                        nodes_to_remove: &remove,
                        max_batch_size: None,
                    },
                    &Reports::default(),
                )
                .await
        })
    };
    let cluster = capi
        .wait_for("clusters", NAME, |cluster| {
            cluster["spec"]["topology"]["workers"]["machineDeployments"][0]["replicas"] == 1
        })
        .await;
    assert_eq!(
        cluster["spec"]["topology"]["workers"]["machineDeployments"][0]["name"],
        "default-worker"
    );
    let marked = capi
        .get("machines", &format!("{NAME}-default-worker-1"))
        .unwrap();
    assert_eq!(
        marked["metadata"]["annotations"]["cluster.x-k8s.io/delete-machine"],
        "yes"
    );
    let kept = capi
        .get("machines", &format!("{NAME}-default-worker-0"))
        .unwrap();
    assert!(kept["metadata"]["annotations"]
        .get("cluster.x-k8s.io/delete-machine")
        .is_none());
    // CAPI removes the marked machine and reports one replica.
    capi.controller
        .delete(
            &resource("machines"),
            Some(NAMESPACE),
            &format!("{NAME}-default-worker-1"),
        )
        .unwrap();
    capi.settle("v1.33.5", &[("default-worker", 1)]);
    let observed = tokio::time::timeout(Duration::from_secs(10), resize)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(observed.nodegroups[1].node_addresses, ["10.0.1.20"]);

    // Delete: the Cluster goes first; secrets and the credential only once it is gone.
    let reports = Arc::new(Reports::default());
    let delete = {
        let (driver, spec, reports) = (driver.clone(), spec.clone(), reports.clone());
        tokio::spawn(async move { driver.delete(&spec, reports.as_ref()).await })
    };
    let deleting = capi
        .wait_for("clusters", NAME, |c| {
            c["metadata"]["deletionTimestamp"].is_string()
        })
        .await;
    assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!delete.is_finished(), "the delete waits for CAPI");
    assert!(
        server
            .controller("t")
            .get(
                &resource("secrets"),
                Some(NAMESPACE),
                &format!("{NAME}-cloud-config")
            )
            .is_ok(),
        "CAPO still needs the credential while it tears down"
    );
    capi.controller
        .remove_finalizers(&resource("clusters"), Some(NAMESPACE), NAME)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), delete)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    for secret in [
        "ca",
        "etcd",
        "proxy",
        "sa",
        "cloud-config",
        "cloud-provider",
    ] {
        let found = server.controller("t").get(
            &resource("secrets"),
            Some(NAMESPACE),
            &format!("{NAME}-{secret}"),
        );
        assert!(found.is_err(), "{secret} left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_cluster_away_is_reported_and_the_wait_resumes_when_it_returns() {
    let server = stand_in().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let driver = Arc::new(driver(&server, kubeconfig.path(), Arc::new(Issuer::default())).await);
    let capi = Capi::new(&server);
    let spec = Arc::new(spec());
    let reports = Arc::new(Reports::default());
    let converge = spawn_create(&driver, &spec, reports.clone());
    capi.wait_for("clusters", NAME, |_| true).await;
    capi.provision();
    server.outage(Outage::Refuse, Duration::from_secs(3));
    let mut trouble = None;
    for _ in 0..200 {
        trouble = reports.when("cannot be watched");
        if trouble.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(trouble.is_some(), "{:?}", reports.texts());
    server.end_outage();
    capi.settle("v1.33.5", &[("default-worker", 2)]);
    let result = tokio::time::timeout(Duration::from_secs(30), converge)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_failure_fails_the_converge_with_its_message() {
    let server = stand_in().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let driver = Arc::new(driver(&server, kubeconfig.path(), Arc::new(Issuer::default())).await);
    let capi = Capi::new(&server);
    let spec = Arc::new(spec());
    let converge = spawn_create(&driver, &spec, Arc::default());
    capi.wait_for("clusters", NAME, |_| true).await;
    capi.provision();
    capi.controller
        .patch_status(
            &resource("openstackclusters"),
            Some(NAMESPACE),
            &format!("{NAME}-os"),
            json!({"ready": false, "failureReason": "CreateError",
                   "failureMessage": "failed to create router: Quota exceeded for resources: ['router']"}),
        )
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), converge)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        result.unwrap_err(),
        DriverError::Failed(
            "OpenStackCluster: CreateError: failed to create router: Quota exceeded for resources: ['router']"
                .to_owned()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_the_class_would_refuse_fail_before_anything_is_written() {
    let server = stand_in().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let driver = driver(&server, kubeconfig.path(), Arc::new(Issuer::default())).await;
    let mut spec = spec();
    spec.cluster.labels.insert("kube_tag", "latest");
    server.clear_requests();
    let error = driver
        .converge(
            Converge {
                action: Action::CreateCluster,
                spec: &spec,
                nodes_to_remove: &[],
                max_batch_size: None,
            },
            &Reports::default(),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("kube_tag"), "{error}");
    let requests = server.requests();
    assert!(writes(&requests).is_empty(), "{:?}", writes(&requests));
    // CA rotation is opt-in.
    assert!(!driver.supports(Action::RotateCa));
    assert!(driver.supports(Action::RotateCredentials));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_addon_that_fails_to_install_fails_the_cluster_with_its_message() {
    let server = stand_in().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let driver = Arc::new(driver(&server, kubeconfig.path(), Arc::new(Issuer::default())).await);
    let capi = Capi::new(&server);
    let spec = Arc::new(spec());
    let converge = spawn_create(&driver, &spec, Arc::default());
    capi.wait_for("clusters", NAME, |_| true).await;
    // The proxies the releases come from were applied with the class.
    let proxies: Vec<String> = server
        .requests()
        .iter()
        .filter(|request| request.method == "PATCH" && request.path.contains("/helmchartproxies/"))
        .map(|request| request.path.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(proxies.len(), 5, "{proxies:?}");
    capi.provision();
    capi.release("tigera-operator", "deployed", "HelmReleaseDeployed", "");
    capi.release(
        "openstack-cinder-csi",
        "failed",
        "HelmInstallOrUpgradeFailed",
        "failed pre-install: timed out waiting for the condition",
    );
    capi.settle_machines("v1.33.5", &[("default-worker", 2)]);
    let result = tokio::time::timeout(Duration::from_secs(10), converge)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        result.unwrap_err(),
        DriverError::Failed(
            "addon openstack-cinder-csi failed to install: HelmInstallOrUpgradeFailed: failed pre-install: timed out waiting for the condition"
                .to_owned()
        )
    );
}

/// The certificates of a secret's or annotation's base64 bundle.
fn bundle(encoded: &Value) -> Vec<String> {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_str().unwrap_or_default())
        .unwrap();
    magnum_driver_capi::rotation::split_bundle(&String::from_utf8(text).unwrap())
}

fn ca_secret(server: &KubeApiServer) -> Value {
    server
        .controller("test")
        .get(&resource("secrets"), Some(NAMESPACE), &format!("{NAME}-ca"))
        .unwrap()
}

/// What each machine trusts, by machine name.
fn machine_trust(server: &KubeApiServer) -> Vec<(String, Vec<String>)> {
    server
        .controller("test")
        .list(&resource("machines"), Some(NAMESPACE))
        .unwrap()
        .iter()
        .map(|machine| {
            (
                machine["metadata"]["name"].as_str().unwrap().to_owned(),
                bundle(&machine["metadata"]["annotations"][TRUSTED_CA_ANNOTATION]),
            )
        })
        .collect()
}

async fn eventually(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "waited {seconds} s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_rolls_every_machine_through_three_trust_steps_and_resumes_after_a_crash() {
    let server = stand_in().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let mut rotating = settings();
    rotating.ca_rotation = true;
    let driver = driver_with(rotating, kubeconfig.path(), Arc::default()).await;
    assert!(driver.supports(Action::RotateCa));
    let controllers = ScriptedCapi::new(&server, NAMESPACE).spawn(Duration::from_millis(50));
    let mut spec = spec();
    let old = spec.authority.clone().unwrap().cert_pem.trim().to_owned();
    spawn_create(&driver, &Arc::new(spec.clone()), Arc::default())
        .await
        .unwrap()
        .unwrap();
    let created = machine_trust(&server);
    // Three control plane machines and two workers.
    assert_eq!(created.len(), 5, "{created:?}");
    assert!(
        created.iter().all(|(_, trust)| *trust == [old.clone()]),
        "{created:?}"
    );

    // The keystore rotated: the driver walks the cluster to the new CA.
    let rotated = magnum_certs::generate_ca("prod", 30).unwrap();
    let new = rotated.cert_pem.trim().to_owned();
    spec.authority = Some(rotated.clone());
    let spec = Arc::new(spec);
    let first = Arc::new(Reports::default());
    let interrupted = spawn_converge(&driver, &spec, Action::RotateCa, first.clone());
    // Step 1: every machine trusts both, still signed by the old CA.
    eventually("step 1 rolled out", 30, || {
        let trust = machine_trust(&server);
        trust.len() == 5
            && trust
                .iter()
                .all(|(_, trust)| *trust == [old.clone(), new.clone()])
    })
    .await;
    // magnumd dies once step 2 is written, before its machines are replaced.
    eventually("step 2 written", 30, || {
        bundle(&ca_secret(&server)["data"]["tls.crt"]) == [new.clone(), old.clone()]
    })
    .await;
    interrupted.abort();
    let _ = interrupted.await;
    let texts = first.texts();
    let step_one = texts
        .iter()
        .position(|text| text.starts_with("Rotating the CA, step 1 of 3"));
    let step_two = texts
        .iter()
        .position(|text| text.starts_with("Rotating the CA, step 2 of 3"));
    assert!(step_one.is_some() && step_one < step_two, "{texts:?}");

    // The next converge resumes at step 2's roll and finishes with step 3.
    let second = Arc::new(Reports::default());
    let observed = spawn_converge(&driver, &spec, Action::RotateCa, second.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(observed.nodegroups.len(), 2, "{observed:?}");
    let texts = second.texts();
    // Steps are started by a report of their own; only step 3 starts again.
    let started: Vec<&String> = texts
        .iter()
        .filter(|text| text.starts_with("Rotating the CA, step"))
        .collect();
    assert_eq!(started.len(), 1, "{texts:?}");
    assert!(started[0].contains("step 3 of 3"), "{texts:?}");
    // Until step 2's machines were all replaced, the reason said so.
    let waited = texts
        .iter()
        .position(|text| text.starts_with("CA rotation step 2 of 3: "));
    let third = texts
        .iter()
        .position(|text| text.starts_with("Rotating the CA, step 3"));
    assert!(waited.is_some() && waited < third, "{texts:?}");
    let secret = ca_secret(&server);
    assert_eq!(
        bundle(&secret["data"]["tls.crt"]),
        std::slice::from_ref(&new)
    );
    let key = {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(secret["data"]["tls.key"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(key, rotated.key_pem);
    // Every machine now trusts the new CA alone: a client certificate of the old one is
    // refused, and none of the machines of the earlier steps is left.
    let trust = machine_trust(&server);
    assert_eq!(trust.len(), 5, "{trust:?}");
    assert!(
        trust.iter().all(|(_, trust)| *trust == [new.clone()]),
        "{trust:?}"
    );
    // CAPI's kubeconfig, how its controllers reach the cluster, was rewritten at each step:
    // it trusts the new CA alone now.
    let kubeconfig = server
        .controller("test")
        .get(
            &resource("secrets"),
            Some(NAMESPACE),
            &format!("{NAME}-kubeconfig"),
        )
        .unwrap();
    let text = {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(kubeconfig["data"]["value"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let authority = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("certificate-authority-data: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(bundle(&json!(authority)), std::slice::from_ref(&new));
    assert!(
        text.contains("server: \"https://203.0.113.10:6443\""),
        "{text}"
    );
    let applied = server
        .controller("test")
        .get(&resource("clusters"), Some(NAMESPACE), NAME)
        .unwrap();
    let after =
        secret["metadata"]["annotations"]["magnum-rs.openstack.org/ca-rollout-after"].clone();
    assert_eq!(
        applied["spec"]["topology"]["controlPlane"]["rollout"]["after"],
        after
    );

    // Settled: another converge (a resize, say) rolls nothing and writes no CA.
    let before = machine_trust(&server);
    let quiet = Arc::new(Reports::default());
    spawn_converge(&driver, &spec, Action::ScaleWorkers, quiet.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(machine_trust(&server), before);
    assert!(!quiet.texts().iter().any(|text| text.contains("Rotating")));
    controllers.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_deleted_cluster_is_released_after_its_grace_and_its_secrets_go_after_it() {
    let server = stand_in().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let issuer = Arc::new(Issuer::default());
    let mut quick = settings();
    quick.force_delete_grace = Duration::from_secs(2);
    let driver = driver_with(quick, kubeconfig.path(), issuer.clone()).await;
    let capi = ScriptedCapi::new(&server, NAMESPACE);
    // CAPO cannot remove the servers: every delete would hang for ever.
    capi.set(|knobs| knobs.stuck_deletes = true);
    let controllers = capi.spawn(Duration::from_millis(50));
    let spec = Arc::new(spec());
    spawn_create(&driver, &spec, Arc::default())
        .await
        .unwrap()
        .unwrap();
    let test = server.controller("test");
    let secrets_of_cluster = || {
        test.list(&resource("secrets"), Some(NAMESPACE))
            .unwrap()
            .into_iter()
            .filter(|secret| {
                secret["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with(NAME)
            })
            .count()
    };
    assert_eq!(
        secrets_of_cluster(),
        7,
        "four CAs, clouds.yaml, the cloud provider's resource set, the kubeconfig"
    );

    let abandoned_at = Instant::now();
    driver.abandon(&spec.cluster).await.unwrap();
    // A converge still running when the records went: it writes no more, and what it wrote
    // just after the abandon (a secret of the cluster) is found and removed with the rest.
    let refused = spawn_converge(&driver, &spec, Action::ScaleWorkers, Arc::default())
        .await
        .unwrap()
        .unwrap_err();
    assert!(refused.to_string().contains("force-deleted"), "{refused}");
    test.create(
        &resource("secrets"),
        Some(NAMESPACE),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{NAME}-late"),
               "labels": {"magnum.openstack.org/cluster-uuid": spec.cluster.uuid.to_string(),
                          "cluster.x-k8s.io/cluster-name": NAME}}}),
    )
    .unwrap();
    let cluster = test
        .get(&resource("clusters"), Some(NAMESPACE), NAME)
        .unwrap();
    assert!(
        cluster["metadata"]["deletionTimestamp"].is_string(),
        "{cluster}"
    );
    assert_eq!(
        cluster["metadata"]["labels"]["magnum-rs.openstack.org/abandoned"],
        "true"
    );
    // Within the grace, Cluster API is left to do its work: nothing is released yet.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(test
        .get(&resource("clusters"), Some(NAMESPACE), NAME)
        .is_ok());
    // After it, the Cluster and its machines are released, then the secrets go (the
    // credential is the conductor's to revoke).
    eventually("the cluster released and its secrets gone", 30, || {
        test.get(&resource("clusters"), Some(NAMESPACE), NAME)
            .is_err()
            && secrets_of_cluster() <= 1
    })
    .await;
    assert!(abandoned_at.elapsed() >= Duration::from_secs(2));
    // Past the grace, what CAPI could not remove was released and deleted, as the garbage
    // collector would once the Cluster is gone.
    let machines = test.list(&resource("machines"), Some(NAMESPACE)).unwrap();
    assert!(machines.is_empty(), "{machines:?}");
    // The kubeconfig secret is CAPI's own (it goes with the Cluster by owner reference, which
    // the stand-in does not collect); ours are all gone.
    let left: Vec<String> = test
        .list(&resource("secrets"), Some(NAMESPACE))
        .unwrap()
        .iter()
        .map(|secret| secret["metadata"]["name"].as_str().unwrap().to_owned())
        .filter(|name| name.starts_with(NAME))
        .collect();
    assert_eq!(left, [format!("{NAME}-kubeconfig")]);
    controllers.abort();
}

#[test]
fn what_a_force_deleted_cluster_may_leave_is_read_from_capo_objects() {
    use magnum_driver_capi::driver::openstack_leftovers;
    use magnum_driver_capi::management::Kind;
    let infrastructure = json!({"status": {
        "apiServerLoadBalancer": {"id": "lb-1"}, "network": {"id": "net-1"},
        "router": {"id": "router-1"}, "bastion": {"id": ""}}});
    assert_eq!(
        openstack_leftovers(Kind::OpenStackCluster, &infrastructure),
        ["load balancer lb-1", "network net-1", "router router-1"]
    );
    let machine = json!({"spec": {"providerID": "openstack:///srv-9"}, "status": {}});
    assert_eq!(
        openstack_leftovers(Kind::OpenStackMachine, &machine),
        ["server srv-9"]
    );
    assert!(openstack_leftovers(Kind::Machine, &machine).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_cluster_without_the_providers_is_refused_at_connect() {
    // CAPI alone: no OpenStack provider, no Helm addon provider.
    let config = KubeApiConfig::new()
        .capi_crds(&[
            "cluster.x-k8s.io_clusters.yaml",
            "cluster.x-k8s.io_clusterclasses.yaml",
            "cluster.x-k8s.io_machinedeployments.yaml",
            "cluster.x-k8s.io_machines.yaml",
            "cluster.x-k8s.io_machinesets.yaml",
            "controlplane.cluster.x-k8s.io_kubeadmcontrolplanes.yaml",
            "controlplane.cluster.x-k8s.io_kubeadmcontrolplanetemplates.yaml",
            "bootstrap.cluster.x-k8s.io_kubeadmconfigtemplates.yaml",
            "addons.cluster.x-k8s.io_clusterresourcesets.yaml",
        ])
        .unwrap();
    let server = KubeApiServer::start(config).await.unwrap();
    let kubeconfig = server.write_kubeconfig().unwrap();
    let refused = CapiDriver::connect(
        settings(),
        catalog(),
        kubeconfig.path(),
        Arc::new(Issuer::default()),
        true,
    )
    .await
    .err()
    .expect("refused");
    let message = refused.to_string();
    for kind in [
        "OpenStackCluster (infrastructure.cluster.x-k8s.io/v1beta1)",
        "OpenStackMachine",
        "HelmChartProxy (addons.cluster.x-k8s.io/v1alpha1)",
        "HelmReleaseProxy",
    ] {
        assert!(message.contains(kind), "{message}");
    }
    assert!(!message.contains("MachineDeployment"), "{message}");
    assert!(
        message.starts_with("The management cluster cannot run the capi driver"),
        "{message}"
    );
    // Nothing was written on the way.
    assert!(writes(&server.requests()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_step_found_without_its_rollout_time_is_rolled_out_before_the_next() {
    let server = stand_in().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let mut rotating = settings();
    rotating.ca_rotation = true;
    let driver = driver_with(rotating, kubeconfig.path(), Arc::default()).await;
    let controllers = ScriptedCapi::new(&server, NAMESPACE).spawn(Duration::from_millis(50));
    let mut spec = spec();
    let old = spec.authority.clone().unwrap();
    spawn_create(&driver, &Arc::new(spec.clone()), Arc::default())
        .await
        .unwrap()
        .unwrap();
    // Step 1 written by hand (or restored from a backup): both CAs, the old one signing, and
    // no record of a rollout — no machine was ever given the new CA.
    let new = magnum_certs::generate_ca("prod", 30).unwrap();
    let bundle = format!("{}\n{}\n", old.cert_pem.trim(), new.cert_pem.trim());
    let encode = |text: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(text)
    };
    let mut secret = ca_secret(&server);
    secret["data"]["tls.crt"] = json!(encode(&bundle));
    secret["metadata"]["annotations"] = json!({});
    secret["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    server
        .controller("restore")
        .update(&resource("secrets"), Some(NAMESPACE), secret)
        .unwrap();
    spec.authority = Some(new.clone());
    let reports = Arc::new(Reports::default());
    spawn_converge(&driver, &Arc::new(spec), Action::RotateCa, reports.clone())
        .await
        .unwrap()
        .unwrap();
    let texts = reports.texts();
    // Step 1's roll happened (machines made before it were waited for) before step 2 began.
    let rolled = texts
        .iter()
        .position(|text| text.starts_with("CA rotation step 1 of 3: "));
    let second = texts
        .iter()
        .position(|text| text.starts_with("Rotating the CA, step 2"));
    assert!(rolled.is_some() && rolled < second, "{texts:?}");
    let trust = machine_trust(&server);
    assert!(
        trust
            .iter()
            .all(|(_, trust)| *trust == [new.cert_pem.trim().to_owned()]),
        "{trust:?}"
    );
    controllers.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_live_state_are_pushed_again_now_and_then_for_a_conductor_that_missed_them() {
    let server = stand_in().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let mut quick = settings();
    quick.resync_interval = Duration::from_millis(700);
    let driver = driver_with(quick, kubeconfig.path(), Arc::default()).await;
    let controllers = ScriptedCapi::new(&server, NAMESPACE).spawn(Duration::from_millis(50));
    let spec = Arc::new(spec());
    spawn_create(&driver, &spec, Arc::default())
        .await
        .unwrap()
        .unwrap();
    // A conductor that subscribes only now has seen nothing; CAPI is at rest, so nothing
    // changes — and yet both arrive.
    let mut events = driver.events().unwrap();
    let mut health = None;
    let mut live = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while health.is_none() || live.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(magnum_driver::DriverEvent::Health {
                cluster, status, ..
            })) => {
                assert_eq!(cluster, spec.cluster.uuid);
                health = Some(status);
            }
            Ok(Ok(magnum_driver::DriverEvent::Live { cluster, state })) => {
                assert_eq!(cluster, spec.cluster.uuid);
                live = Some(state);
            }
            Ok(Ok(magnum_driver::DriverEvent::Event { .. })) => {}
            Ok(Ok(other @ magnum_driver::DriverEvent::Proposal { .. })) => {
                panic!("the capi driver proposes nothing: {other:?}")
            }
            Ok(Err(error)) => panic!("{error}"),
            Err(_) => panic!("nothing pushed again within 5 s: {health:?} {live:?}"),
        }
    }
    assert_eq!(health, Some(magnum_domain::cluster::HealthStatus::Healthy));
    assert_eq!(
        live.unwrap().api_address.as_deref(),
        Some("https://203.0.113.10:6443")
    );
    controllers.abort();
}
