//! The capi driver as an operator configures it (`[drivers.capi]`, a kubeconfig), driven by
//! the real `openstack coe` client, against the Kubernetes API stand-in with a scripted
//! Cluster API answering the topology the driver applies.

use std::time::{Duration, Instant};

use magnum_test_support::kube_api::capi::{ScriptedCapi, QUOTA_MESSAGE, TRUSTED_CA_ANNOTATION};
use magnum_test_support::kube_api::{KubeApiConfig, KubeApiServer, ResourceRef};
use magnum_test_support::Engine;
use magnumd::{Config, Role};
use serde_json::{json, Value};

use crate::openstack_cli::openstack;
use crate::support::{TestApp, ADMIN};

const NAMESPACE: &str = "magnum-system";
const IMAGE: &str = "3f0c1a52-58b9-4d1e-9d0e-0c2b6f7f1a01";
const NEW_IMAGE: &str = "9a1d6c33-7e2f-4b8a-8f6d-5c4e3b2a1f02";

async fn management_cluster() -> KubeApiServer {
    management_cluster_holding(10_000).await
}

/// A stand-in holding at most `max_objects` (a cluster makes about twenty).
async fn management_cluster_holding(max_objects: usize) -> KubeApiServer {
    let files: Vec<String> =
        std::fs::read_dir(magnum_test_support::kube_api::capi_crds_directory())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".yaml"))
            .collect();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let mut config = KubeApiConfig::new().capi_crds(&files).unwrap();
    config.max_objects = max_objects;
    let server = KubeApiServer::start(config).await.unwrap();
    server
        .controller("kube-system")
        .create(
            &ResourceRef::core("namespaces"),
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        )
        .unwrap();
    server
}

fn configure(config: &mut Config, kubeconfig: &std::path::Path) {
    config.drivers = toml::from_str(&drivers_section(kubeconfig)).unwrap();
}

/// The cloud a test's clusters reach: Keystone's URL, the credential, the region.
struct CloudAccess {
    auth_url: String,
    credential_id: String,
    credential_secret: String,
    region: String,
}

/// `[drivers]` for clusters that reach a real (test) Keystone with a real credential.
fn drivers_section_for(kubeconfig: &std::path::Path, cloud: &CloudAccess) -> String {
    drivers_section(kubeconfig)
        .replace(
            "auth_url = \"https://keystone.cloud.test:5000/v3\"",
            &format!(
                "auth_url = \"{}\"\nregion_name = \"{}\"",
                cloud.auth_url, cloud.region
            ),
        )
        .replace(
            "delete_load_balancers = false",
            "delete_load_balancers = true",
        )
        .replace(
            "application_credential_id = \"operator-credential\"",
            &format!("application_credential_id = \"{}\"", cloud.credential_id),
        )
        .replace(
            "application_credential_secret = \"s3cret\"",
            &format!(
                "application_credential_secret = \"{}\"",
                cloud.credential_secret
            ),
        )
}

/// `[drivers]` as a configuration file has it (its tables relative to `drivers`).
fn drivers_section(kubeconfig: &std::path::Path) -> String {
    format!(
        r#"
enabled = ["capi"]
[capi]
kubeconfig = "{}"
allowed_projects = ["default", "p-admin"]
auth_url = "https://keystone.cloud.test:5000/v3"
force_delete_grace = 2
delete_load_balancers = false
ca_rotation = true
[capi.credential]
application_credential_id = "operator-credential"
application_credential_secret = "s3cret"
[[capi.catalog.images]]
id = "{IMAGE}"
name = "ubuntu-2404-kube-v1.33"
os_distro = "ubuntu"
[[capi.catalog.images]]
id = "{NEW_IMAGE}"
name = "ubuntu-2404-kube-v1.34"
os_distro = "ubuntu"
[[capi.catalog.flavors]]
id = "f1"
name = "m1.medium"
disk_gib = 20
[[capi.catalog.flavors]]
id = "f2"
name = "m1.large"
disk_gib = 40
[[capi.catalog.external_networks]]
id = "6c1b6c0e-1d7a-4a3e-9c0f-7e5d4c3b2a10"
name = "public"
[[capi.catalog.external_networks]]
id = "7d2c7d1f-2e8b-4b4f-8d1a-8f6e5d4c3b21"
name = "public2"
"#,
        kubeconfig.display()
    )
}

async fn show(app: &TestApp, cluster: &str) -> Value {
    let shown = openstack(app, &["coe", "cluster", "show", cluster, "-f", "json"]).await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    shown.json()
}

/// Polls the cluster through the API (not the slow CLI) until `done`.
async fn wait(app: &TestApp, uuid: &str, seconds: u64, done: impl Fn(&Value) -> bool) -> Value {
    app.wait_for_cluster(uuid, ADMIN, seconds, |reply| done(&reply.body))
        .await
        .body
}

fn secrets(server: &KubeApiServer) -> Vec<String> {
    server
        .controller("test")
        .list(&ResourceRef::core("secrets"), Some(NAMESPACE))
        .unwrap()
        .iter()
        .map(|secret| secret["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openstack_client_runs_a_kubernetes_cluster_through_its_life() {
    let server = management_cluster().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let capi = ScriptedCapi::new(&server, NAMESPACE);
    let controllers = capi.clone().spawn(Duration::from_millis(50));
    let path = kubeconfig.path().to_owned();
    let app =
        TestApp::spawn_with(Engine::Sqlite, Role::All, |config| configure(config, &path)).await;

    // The next template also moves to another external network, which CAPO will not let an
    // existing cluster change: the upgrade must keep the one the cluster was built on.
    for (name, image, tag, network) in [
        ("k8s", "ubuntu-2404-kube-v1.33", "v1.33.5", "public"),
        ("k8s-next", "ubuntu-2404-kube-v1.34", "v1.34.1", "public2"),
    ] {
        let created = openstack(
            &app,
            &[
                "coe",
                "cluster",
                "template",
                "create",
                name,
                "--coe",
                "kubernetes",
                "--image",
                image,
                "--external-network",
                network,
                "--flavor",
                "m1.medium",
                "--master-flavor",
                "m1.large",
                "--network-driver",
                "calico",
                "--volume-driver",
                "cinder",
                "--labels",
                &format!("kube_tag={tag}"),
                "-f",
                "json",
            ],
        )
        .await;
        assert_eq!(created.code, 0, "{}", created.stderr);
        // The client prints "Request to create cluster template … accepted" before the JSON.
        assert!(
            created.stdout.contains("\"coe\": \"kubernetes\""),
            "{}",
            created.stdout
        );
    }
    // A template naming what the cloud does not have is refused up front.
    let refused = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "create",
            "bad",
            "--coe",
            "kubernetes",
            "--image",
            "ubuntu-2404-kube-v1.33",
            "--external-network",
            "public",
            "--flavor",
            "m9.huge",
        ],
    )
    .await;
    assert_ne!(refused.code, 0);
    // (python-magnumclient shows the message up to its first period.)
    assert!(
        refused.stderr.contains("Unable to find flavor m9"),
        "{}",
        refused.stderr
    );

    // Create.
    let started = Instant::now();
    let created = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "create",
            "prod",
            "--cluster-template",
            "k8s",
            "--master-count",
            "1",
            "--node-count",
            "2",
        ],
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let uuid = show(&app, "prod").await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let cluster = wait(&app, &uuid, 60, |c| c["status"] != "CREATE_IN_PROGRESS").await;
    assert_eq!(cluster["status"], "CREATE_COMPLETE", "{cluster}");
    println!("create: {:?}", started.elapsed());
    let shown = show(&app, "prod").await;
    assert_eq!(shown["api_address"], "https://203.0.113.10:6443");
    assert_eq!(shown["coe_version"], "v1.33.5");
    assert_eq!(shown["master_addresses"], json!(["10.0.0.10"]));
    assert_eq!(cluster["health_status"], "HEALTHY", "{cluster}");
    assert_eq!(shown["node_addresses"].as_array().unwrap().len(), 2);
    let stack_id = cluster["cluster_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{cluster}"))
        .to_owned();
    assert!(stack_id.starts_with("kube-"), "{shown}");
    let applied = server
        .controller("test")
        .get(
            &ResourceRef::new("cluster.x-k8s.io", "v1beta2", "clusters"),
            Some(NAMESPACE),
            &stack_id,
        )
        .unwrap();
    assert_eq!(
        applied["metadata"]["labels"]["magnum.openstack.org/cluster-uuid"],
        uuid
    );

    // Resize to one worker, removing a named machine.
    let machines = server
        .controller("test")
        .list(
            &ResourceRef::new("cluster.x-k8s.io", "v1beta2", "machines"),
            Some(NAMESPACE),
        )
        .unwrap();
    let victim = machines
        .iter()
        .map(|machine| machine["metadata"]["name"].as_str().unwrap().to_owned())
        .find(|name| name.contains("default-worker"))
        .unwrap();
    let resized = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "resize",
            "prod",
            "1",
            "--nodes-to-remove",
            &victim,
        ],
    )
    .await;
    assert_eq!(resized.code, 0, "{}", resized.stderr);
    let cluster = wait(&app, &uuid, 60, |c| c["status"] != "UPDATE_IN_PROGRESS").await;
    assert_eq!(cluster["status"], "UPDATE_COMPLETE", "{cluster}");
    assert_eq!(cluster["node_count"], 1);
    let left = server
        .controller("test")
        .list(
            &ResourceRef::new("cluster.x-k8s.io", "v1beta2", "machines"),
            Some(NAMESPACE),
        )
        .unwrap();
    assert!(
        left.iter()
            .all(|machine| machine["metadata"]["name"] != victim.as_str()),
        "{victim} was removed"
    );

    // Add a nodegroup, then delete it.
    let added = openstack(
        &app,
        &[
            "coe",
            "nodegroup",
            "create",
            "prod",
            "gpu",
            "--node-count",
            "1",
        ],
    )
    .await;
    assert_eq!(added.code, 0, "{}", added.stderr);
    wait(&app, &uuid, 60, |c| c["status"] != "UPDATE_IN_PROGRESS").await;
    let group = openstack(
        &app,
        &["coe", "nodegroup", "show", "prod", "gpu", "-f", "json"],
    )
    .await;
    assert_eq!(group.code, 0, "{}", group.stderr);
    let group = group.json();
    assert_eq!(group["status"], "CREATE_COMPLETE", "{group}");
    assert_eq!(
        group["node_addresses"].as_array().unwrap().len(),
        1,
        "{group}"
    );
    let removed = openstack(&app, &["coe", "nodegroup", "delete", "prod", "gpu"]).await;
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let mut gone = false;
    for _ in 0..300 {
        let listed = openstack(&app, &["coe", "nodegroup", "list", "prod", "-f", "json"]).await;
        if !listed.stdout.contains("\"gpu\"") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone, "the gpu nodegroup was deleted");

    // Upgrade to the next template: a new version and image, machines replaced.
    let upgraded = openstack(&app, &["coe", "cluster", "upgrade", "prod", "k8s-next"]).await;
    assert_eq!(upgraded.code, 0, "{}", upgraded.stderr);
    let cluster = wait(&app, &uuid, 60, |c| c["status"] != "UPDATE_IN_PROGRESS").await;
    assert_eq!(cluster["status"], "UPDATE_COMPLETE", "{cluster}");
    assert_eq!(show(&app, "prod").await["coe_version"], "v1.34.1");
    let applied = server
        .controller("test")
        .get(
            &ResourceRef::new("cluster.x-k8s.io", "v1beta2", "clusters"),
            Some(NAMESPACE),
            &stack_id,
        )
        .unwrap();
    let external = applied["spec"]["topology"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|variable| variable["name"] == "externalNetwork")
        .unwrap()["value"]
        .clone();
    assert_eq!(
        external,
        json!({"id": "6c1b6c0e-1d7a-4a3e-9c0f-7e5d4c3b2a10"})
    );

    // CA rotation: three rolls of every machine, the cluster's reason naming each step, and
    // at the end the nodes trust the new CA alone, the one the API hands out.
    let ca_before = openstack(&app, &["coe", "ca", "show", "prod"]).await;
    assert_eq!(ca_before.code, 0, "{}", ca_before.stderr);
    let rotated = openstack(&app, &["coe", "ca", "rotate", "prod"]).await;
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    let reasons = std::cell::RefCell::new(Vec::<String>::new());
    let cluster = wait(&app, &uuid, 120, |c| {
        if let Some(reason) = c["status_reason"].as_str() {
            let mut reasons = reasons.borrow_mut();
            if reasons.last().map(String::as_str) != Some(reason) {
                reasons.push(reason.to_owned());
            }
        }
        c["status"] != "UPDATE_IN_PROGRESS"
    })
    .await;
    let reasons = reasons.into_inner();
    assert_eq!(cluster["status"], "UPDATE_COMPLETE", "{cluster}");
    for step in 1..=3 {
        assert!(
            reasons
                .iter()
                .any(|reason| reason.contains(&format!("step {step} of 3"))),
            "{reasons:?}"
        );
    }
    let ca_after = openstack(&app, &["coe", "ca", "show", "prod"]).await;
    assert_eq!(ca_after.code, 0, "{}", ca_after.stderr);
    assert_ne!(ca_after.stdout, ca_before.stdout);
    let trusted = |encoded: &Value| {
        use base64::Engine;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap();
        magnum_driver_capi::rotation::split_bundle(&String::from_utf8(pem).unwrap())
    };
    let served = magnum_driver_capi::rotation::split_bundle(&ca_after.stdout);
    assert_eq!(served.len(), 1, "{}", ca_after.stdout);
    let secret = server
        .controller("test")
        .get(
            &ResourceRef::core("secrets"),
            Some(NAMESPACE),
            &format!("{stack_id}-ca"),
        )
        .unwrap();
    assert_eq!(trusted(&secret["data"]["tls.crt"]), served);
    let machines = server
        .controller("test")
        .list(
            &ResourceRef::new("cluster.x-k8s.io", "v1beta2", "machines"),
            Some(NAMESPACE),
        )
        .unwrap();
    assert!(!machines.is_empty());
    for machine in &machines {
        assert_eq!(
            trusted(&machine["metadata"]["annotations"][TRUSTED_CA_ANNOTATION]),
            served,
            "{machine}"
        );
    }

    // Delete: everything of the cluster leaves the management cluster.
    assert!(secrets(&server)
        .iter()
        .any(|name| name.starts_with(&stack_id)));
    let deleted = openstack(&app, &["coe", "cluster", "delete", "prod"]).await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    wait(&app, &uuid, 60, |c| c["errors"][0]["status"] == 404).await;
    let left: Vec<String> = secrets(&server)
        .into_iter()
        .filter(|name| name.starts_with(&stack_id))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    controllers.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_failure_reaches_the_status_reason_while_the_create_waits() {
    let server = management_cluster().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let capi = ScriptedCapi::new(&server, NAMESPACE);
    capi.set(|knobs| knobs.quota_failure = true);
    let controllers = capi.clone().spawn(Duration::from_millis(50));
    let path = kubeconfig.path().to_owned();
    let app = TestApp::spawn_with(Engine::Sqlite, Role::All, |config| {
        configure(config, &path);
        // Without a create_timeout of its own, a create ends at the operation timeout: long
        // enough for a loaded machine (the whole suite starts at once) to show the reason
        // before it.
        config.conductor.operation_timeout = 25;
    })
    .await;
    let created = app
        .create_template(
            ADMIN,
            json!({"name": "k8s", "coe": "kubernetes", "image_id": "ubuntu-2404-kube-v1.33",
                   "external_network_id": "public", "flavor_id": "m1.medium",
                   "master_flavor_id": "m1.large", "network_driver": "calico"}),
        )
        .await;
    assert!(created.is_object());
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            ADMIN,
            Some(
                json!({"name": "q", "cluster_template_id": "k8s", "node_count": 1,
                        "create_timeout": 0}),
            ),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    // The failing machine is written by the scripted CAPO at its first step after the apply.
    let machine_failed = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let machines = server
                .controller("test")
                .list(
                    &ResourceRef::new("cluster.x-k8s.io", "v1beta2", "machines"),
                    Some(NAMESPACE),
                )
                .unwrap();
            if machines.iter().any(|m| {
                m["status"]["conditions"]
                    .to_string()
                    .contains("Quota exceeded")
            }) {
                break Instant::now();
            }
            assert!(Instant::now() < deadline, "no failing machine");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // The reason and the API endpoint come from different CAPI objects, in either order.
    let cluster = wait(&app, &uuid, 20, |c| {
        c["status_reason"]
            .as_str()
            .unwrap_or_default()
            .contains(QUOTA_MESSAGE)
            && !c["api_address"].is_null()
    })
    .await;
    // Its latency is a figure (printed below; about 0.1 s on an idle machine), not a test:
    // what must hold is that the tenant sees it while the create still waits.
    let lag = machine_failed.elapsed();
    assert_eq!(cluster["status"], "CREATE_IN_PROGRESS", "{cluster}");
    // The API endpoint is shown as soon as CAPI knows it, before the cluster is complete.
    assert_eq!(
        cluster["api_address"], "https://203.0.113.10:6443",
        "{cluster}"
    );
    println!("quota reason visible {lag:?} after CAPO wrote it");
    // CAPI would retry for ever; the create fails at its deadline with the reason it waited on.
    let failed = wait(&app, &uuid, 30, |c| c["status"] != "CREATE_IN_PROGRESS").await;
    assert_eq!(failed["status"], "CREATE_FAILED", "{failed}");
    let reason = failed["status_reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "Timed out: the cluster was not created within the conductor's operation timeout. Last: "
        ),
        "{reason}"
    );
    assert!(reason.contains(QUOTA_MESSAGE), "{reason}");
    controllers.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autoscaled_nodegroup_follows_the_replicas_the_autoscaler_sets() {
    let server = management_cluster().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let controllers = ScriptedCapi::new(&server, NAMESPACE).spawn(Duration::from_millis(50));
    let path = kubeconfig.path().to_owned();
    let app =
        TestApp::spawn_with(Engine::Sqlite, Role::All, |config| configure(config, &path)).await;
    let created = app
        .create_template(
            ADMIN,
            json!({"name": "k8s", "coe": "kubernetes", "image_id": "ubuntu-2404-kube-v1.33",
                   "external_network_id": "public", "flavor_id": "m1.medium",
                   "master_flavor_id": "m1.large", "network_driver": "calico",
                   "labels": {"kube_tag": "v1.33.5", "auto_scaling_enabled": "true",
                              "min_node_count": "1", "max_node_count": "4"}}),
        )
        .await;
    assert!(created.is_object(), "{created}");
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            ADMIN,
            Some(json!({"name": "auto", "cluster_template_id": "k8s", "node_count": 1})),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    let cluster = wait(&app, &uuid, 60, |c| c["status"] != "CREATE_IN_PROGRESS").await;
    assert_eq!(cluster["status"], "CREATE_COMPLETE", "{cluster}");
    let deployments = ResourceRef::new("cluster.x-k8s.io", "v1beta2", "machinedeployments");
    let deployment = server
        .controller("test")
        .list(&deployments, Some(NAMESPACE))
        .unwrap()
        .remove(0);
    assert_eq!(
        deployment["metadata"]["annotations"]
            ["cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"],
        "4",
        "{deployment}"
    );
    // The cluster autoscaler scales the deployment out, as it does through the scale
    // subresource; the nodegroup and the cluster follow without any operation.
    let name = deployment["metadata"]["name"].as_str().unwrap().to_owned();
    server
        .controller("cluster-autoscaler")
        .apply(
            &deployments,
            Some(NAMESPACE),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                   "metadata": {"name": name}, "spec": {"replicas": 3}}),
        )
        .unwrap();
    let followed = wait(&app, &uuid, 10, |c| c["node_count"] == 3).await;
    assert_eq!(followed["status"], "CREATE_COMPLETE", "{followed}");
    let group = app
        .send_at(
            "latest",
            "GET",
            &format!("/v1/clusters/{uuid}/nodegroups/default-worker"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(group.body["node_count"], 3, "{}", group.body);
    // Beyond the nodegroup's bounds (not what the autoscaler was told): not taken.
    server
        .controller("cluster-autoscaler")
        .apply(
            &deployments,
            Some(NAMESPACE),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                   "metadata": {"name": name}, "spec": {"replicas": 9}}),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let shown = wait(&app, &uuid, 5, |_| true).await;
    assert_eq!(shown["node_count"], 3, "{shown}");
    let stack_id = magnum_driver_capi::names::cluster_name(uuid::Uuid::parse_str(&uuid).unwrap());

    // An admin's force delete: the records go at once, Cluster API is asked to tear the
    // cluster down, and the driver removes its secrets once it is gone.
    let member_tries = app
        .send_at(
            "latest",
            "DELETE",
            &format!("/v1/clusters/{uuid}?force=true"),
            crate::support::Caller {
                project_id: "p-admin",
                user_id: "u-member",
                roles: "member,reader",
            },
            None,
        )
        .await;
    // A member of the cluster's own project may delete it, not force it.
    assert_eq!(
        member_tries.status,
        403,
        "{}",
        String::from_utf8_lossy(&member_tries.raw)
    );
    let forced = app
        .send_at(
            "latest",
            "DELETE",
            &format!("/v1/clusters/{uuid}?force=true"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(
        forced.status,
        204,
        "{}",
        String::from_utf8_lossy(&forced.raw)
    );
    let gone = app
        .send_at(
            "latest",
            "GET",
            &format!("/v1/clusters/{uuid}"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(gone.status, 404);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cluster_left = server
            .controller("test")
            .get(
                &ResourceRef::new("cluster.x-k8s.io", "v1beta2", "clusters"),
                Some(NAMESPACE),
                &stack_id,
            )
            .is_ok();
        let ours: Vec<String> = secrets(&server)
            .into_iter()
            .filter(|name| name.starts_with(&stack_id))
            .collect();
        if !cluster_left && ours.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after a force delete: cluster {cluster_left}, secrets {ours:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    controllers.abort();
}

/// Keystone's admin API as the tests use it (regions, services, endpoints, credentials).
struct KeystoneAdmin {
    http: reqwest::Client,
    auth_url: String,
    token: String,
}

impl KeystoneAdmin {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.auth_url))
            .header("X-Auth-Token", token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cluster_first_removes_the_load_balancers_its_cloud_provider_made() {
    use magnum_test_support::octavia::{password_token, OctaviaStandIn};
    let fixture = magnum_test_support::keystone_fixture();
    let auth_url = fixture["auth_url"].as_str().unwrap().to_owned();
    let admin = &fixture["admin"];
    let (admin_user, admin_password, admin_project) = (
        admin["user"].as_str().unwrap(),
        admin["password"].as_str().unwrap(),
        admin["project"].as_str().unwrap(),
    );
    let http = reqwest::Client::new();
    let keystone = KeystoneAdmin {
        http: http.clone(),
        auth_url: auth_url.clone(),
        token: password_token(&http, &auth_url, admin_user, admin_password, admin_project)
            .await
            .unwrap(),
    };
    // The credential clusters act with: an application credential of the admin, whose role
    // lets it see every project's load balancers — the driver must still touch only its own
    // project's.
    let own_project = admin["project_id"].as_str().unwrap().to_owned();
    let beta_project = fixture["users"]["beta-member"]["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin_user_id = {
        let response = http
            .get(format!("{auth_url}/auth/tokens"))
            .header("X-Auth-Token", &keystone.token)
            .header("X-Subject-Token", &keystone.token)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["token"]["user"]["id"].as_str().unwrap().to_owned()
    };
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let credentials_path = format!("/users/{admin_user_id}/application_credentials");
    let owner_token = keystone.token.clone();
    let credential = keystone
        .call(
            reqwest::Method::POST,
            &credentials_path,
            &owner_token,
            Some(json!({"application_credential": {"name": format!("magnum-test-{suffix}")}})),
        )
        .await;
    let credential = &credential["application_credential"];
    // Octavia, in a region of this test's own so that parallel tests never share it.
    let octavia = OctaviaStandIn::start(
        &auth_url,
        (admin_user, admin_password, admin_project),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    // Pages of two: the cluster's load balancers are spread over several.
    octavia.set_page_size(2);
    let region = format!("test-{suffix}");
    let admin_token = keystone.token.clone();
    keystone
        .call(
            reqwest::Method::POST,
            "/regions",
            &admin_token,
            Some(json!({"region": {"id": region}})),
        )
        .await;
    let service = keystone
        .call(
            reqwest::Method::POST,
            "/services",
            &admin_token,
            Some(
                json!({"service": {"type": "load-balancer", "name": format!("octavia-{suffix}")}}),
            ),
        )
        .await;
    let service_id = service["service"]["id"].as_str().unwrap().to_owned();
    let endpoint = keystone
        .call(
            reqwest::Method::POST,
            "/endpoints",
            &admin_token,
            Some(
                json!({"endpoint": {"service_id": service_id, "interface": "public",
                                     "url": octavia.url(), "region_id": region}}),
            ),
        )
        .await;
    let endpoint_id = endpoint["endpoint"]["id"].as_str().unwrap().to_owned();

    let server = management_cluster().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let capi = ScriptedCapi::new(&server, NAMESPACE);
    let controllers = capi.clone().spawn(Duration::from_millis(50));
    let access = CloudAccess {
        auth_url: auth_url.clone(),
        credential_id: credential["id"].as_str().unwrap().to_owned(),
        credential_secret: credential["secret"].as_str().unwrap().to_owned(),
        region: region.clone(),
    };
    let section = drivers_section_for(kubeconfig.path(), &access);
    let app = TestApp::spawn_with(Engine::Sqlite, Role::All, |config| {
        config.drivers = toml::from_str(&section).unwrap();
    })
    .await;
    let created = app
        .create_template(
            ADMIN,
            json!({"name": "k8s", "coe": "kubernetes", "image_id": "ubuntu-2404-kube-v1.33",
                   "external_network_id": "public", "flavor_id": "m1.medium",
                   "master_flavor_id": "m1.large", "network_driver": "calico"}),
        )
        .await;
    assert!(created.is_object(), "{created}");
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            ADMIN,
            Some(json!({"name": "web", "cluster_template_id": "k8s", "node_count": 1})),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    let cluster = wait(&app, &uuid, 60, |c| c["status"] != "CREATE_IN_PROGRESS").await;
    assert_eq!(cluster["status"], "CREATE_COMPLETE", "{cluster}");
    let name = magnum_driver_capi::names::cluster_name(uuid::Uuid::parse_str(&uuid).unwrap());

    // What the cloud provider made for the cluster's Services, beside what it must not touch:
    // another cluster's in the same project, and one of another project under the same name
    // (visible to the admin credential).
    let foreign = octavia.add(&format!("kube_service_{name}_default_web"), &beta_project);
    let web = octavia.add(&format!("kube_service_{name}_default_web"), &own_project);
    let neighbour = octavia.add(
        "kube_service_kube-0000000000000000_default_web",
        &own_project,
    );
    let ingress = octavia.add(
        &format!("kube_service_{name}_kube-system_ingress"),
        &own_project,
    );
    let api = octavia.add(&format!("kube_service_{name}_default_api"), &own_project);

    // When CAPI is first asked to delete the Cluster.
    let clusters = ResourceRef::new("cluster.x-k8s.io", "v1beta2", "clusters");
    let watcher = {
        let controller = server.controller("test");
        let name = name.clone();
        tokio::spawn(async move {
            loop {
                match controller.get(&clusters, Some(NAMESPACE), &name) {
                    Ok(cluster) if cluster["metadata"]["deletionTimestamp"].is_string() => {
                        break Instant::now()
                    }
                    Err(_) => break Instant::now(),
                    Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        })
    };
    capi.set(|knobs| knobs.stuck_deletes = true);
    let deleted = app
        .send_at(
            "latest",
            "DELETE",
            &format!("/v1/clusters/{uuid}"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(
        deleted.status,
        204,
        "{}",
        String::from_utf8_lossy(&deleted.raw)
    );
    // CAPO takes its time over the machines; meanwhile the cloud provider, still running,
    // recreates the load balancer of a Service that still exists.
    let cluster_deleted_at = watcher.await.unwrap();
    let recreated = octavia.add(&format!("kube_service_{name}_default_web"), &own_project);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !octavia.deletions().iter().any(|d| d.id == recreated) {
        assert!(
            Instant::now() < deadline,
            "the recreated load balancer was left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    capi.set(|knobs| knobs.stuck_deletes = false);
    wait(&app, &uuid, 60, |c| c["errors"][0]["status"] == 404).await;

    let deletions: Vec<_> = octavia
        .deletions()
        .into_iter()
        .filter(|deletion| deletion.id != recreated)
        .collect();
    let mut removed: Vec<&str> = deletions.iter().map(|d| d.id.as_str()).collect();
    removed.sort_unstable();
    let mut expected = vec![web.as_str(), ingress.as_str(), api.as_str()];
    expected.sort_unstable();
    assert_eq!(removed, expected, "{deletions:?}");
    for deletion in &deletions {
        assert_eq!(deletion.project_id, own_project);
        assert!(
            deletion.at < cluster_deleted_at,
            "the load balancers went before the Cluster"
        );
    }
    // The driver waited until they were gone, not only asked (the recreated one may still be
    // going: CAPO retries the network until it is).
    let left: Vec<String> = octavia
        .load_balancers()
        .into_iter()
        .map(|lb| lb.id)
        .filter(|id| *id != recreated)
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.contains(&neighbour) && left.contains(&foreign),
        "{left:?}"
    );

    keystone
        .call(
            reqwest::Method::DELETE,
            &format!("/endpoints/{endpoint_id}"),
            &admin_token,
            None,
        )
        .await;
    keystone
        .call(
            reqwest::Method::DELETE,
            &format!("/services/{service_id}"),
            &admin_token,
            None,
        )
        .await;
    keystone
        .call(
            reqwest::Method::DELETE,
            &format!("/regions/{region}"),
            &admin_token,
            None,
        )
        .await;
    keystone
        .call(
            reqwest::Method::DELETE,
            &format!("{credentials_path}/{}", access.credential_id),
            &owner_token,
            None,
        )
        .await;
    controllers.abort();
}

/// A magnumd configuration file with the capi driver, as an operator writes it.
fn config_file(
    directory: &std::path::Path,
    kubeconfig: &std::path::Path,
    head: &str,
) -> std::path::PathBuf {
    let path = directory.join("magnumd.toml");
    std::fs::write(
        &path,
        format!(
            "{head}[log]\nlevel = \"warn\"\n[drivers]\n{}",
            drivers_section(kubeconfig).replace("[capi", "[drivers.capi")
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_interrupted_by_a_killed_magnumd_resumes_after_the_restart() {
    let server = management_cluster().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let capi = ScriptedCapi::new(&server, NAMESPACE);
    // CAPI takes its time: magnumd dies while the create waits on it.
    capi.set(|knobs| knobs.frozen = true);
    let controllers = capi.clone().spawn(Duration::from_millis(50));
    let work = tempfile::tempdir().unwrap();
    let config = config_file(work.path(), kubeconfig.path(), "");
    let state = work.path().join("state");
    let binary = env!("CARGO_BIN_EXE_magnumd");
    let magnumd = Magnumd::start(binary, &config, &state, &[]);
    let client = crate::support::test_client();
    let send = |base: String, method: reqwest::Method, path: String, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{base}{path}"))
            .header("OpenStack-API-Version", "container-infra latest");
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let template = send(
        magnumd.base.clone(),
        reqwest::Method::POST,
        "/clustertemplates".into(),
        Some(json!({
            "name": "k8s", "coe": "kubernetes", "image_id": "ubuntu-2404-kube-v1.33",
            "external_network_id": "public", "flavor_id": "m1.medium",
            "master_flavor_id": "m1.large", "network_driver": "calico"})),
    )
    .await
    .unwrap();
    assert_eq!(template.status(), 201);
    let created: Value = send(
        magnumd.base.clone(),
        reqwest::Method::POST,
        "/clusters".into(),
        Some(json!({"name": "k", "cluster_template_id": "k8s", "node_count": 2})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    let name = magnum_driver_capi::names::cluster_name(uuid::Uuid::parse_str(&uuid).unwrap());
    let clusters = ResourceRef::new("cluster.x-k8s.io", "v1beta2", "clusters");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .controller("test")
        .get(&clusters, Some(NAMESPACE), &name)
        .is_err()
    {
        assert!(Instant::now() < deadline, "the Cluster was never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let applied = server
        .controller("test")
        .get(&clusters, Some(NAMESPACE), &name)
        .unwrap();
    magnumd.kill();

    // CAPI goes on while magnumd is away; a new magnumd on the same state takes over.
    capi.set(|knobs| knobs.frozen = false);
    let restarted_at = Instant::now();
    let magnumd = Magnumd::start(binary, &config, &state, &[]);
    let done = loop {
        let shown: Value = send(
            magnumd.base.clone(),
            reqwest::Method::GET,
            format!("/clusters/{uuid}"),
            None,
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        if shown["status"] != "CREATE_IN_PROGRESS" {
            break shown;
        }
        assert!(restarted_at.elapsed() < Duration::from_secs(60), "{shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "CREATE_COMPLETE", "{done}");
    assert_eq!(done["node_count"], 2);
    assert_eq!(done["api_address"], "https://203.0.113.10:6443");
    println!(
        "capi create resumed after a SIGKILL: CREATE_COMPLETE {:?} after the restart",
        restarted_at.elapsed()
    );
    // The resumed converge re-applied the same Cluster: one object, nothing duplicated or
    // replaced, and the CA secret still holds the cluster's CA.
    let after = server
        .controller("test")
        .get(&clusters, Some(NAMESPACE), &name)
        .unwrap();
    assert_eq!(after["metadata"]["uid"], applied["metadata"]["uid"]);
    let listed = server
        .controller("test")
        .list(&clusters, Some(NAMESPACE))
        .unwrap();
    assert_eq!(listed.len(), 1);
    let ca: Value = send(
        magnumd.base.clone(),
        reqwest::Method::GET,
        format!("/certificates/{uuid}"),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let secret = server
        .controller("test")
        .get(
            &ResourceRef::core("secrets"),
            Some(NAMESPACE),
            &format!("{name}-ca"),
        )
        .unwrap();
    let bundle = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["tls.crt"].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(
        String::from_utf8(bundle).unwrap().trim(),
        ca["pem"].as_str().unwrap().trim()
    );
    drop(magnumd);
    controllers.abort();
}

/// A magnumd process (all roles) of its own, killed however the test ends.
struct Magnumd {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>/v1`.
    base: String,
}

impl Magnumd {
    fn start(
        binary: &str,
        config: &std::path::Path,
        state: &std::path::Path,
        env: &[(&str, String)],
    ) -> Self {
        let mut command = std::process::Command::new(binary);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .args(["all", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state)
            .arg("--config")
            .arg(config)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let line = lines.next().unwrap().unwrap();
        let base = line
            .strip_prefix("magnumd listening on ")
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned();
        // Nobody reads further: drained, so that magnumd never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, base }
    }

    fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Magnumd {
    fn drop(&mut self) {
        // Already gone is fine: the test only needs it not to outlive it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RSS (KiB) and CPU seconds (user + system) of a process, from /proc.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|both| both.iter().filter_map(|t| t.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    (rss, ticks / 100.0)
}

/// The benchmark of `scripts/bench-capi`: a release magnumd (its own process, SQLite) with
/// the capi driver against the stand-in and the scripted CAPI; BENCH_CAPI_CLUSTERS clusters
/// (default 1,000) are created, then machines of BENCH_CAPI_FLIPS of them turn unhealthy
/// one by one and the time until the API shows each cluster UNHEALTHY is measured. Prints
/// the create throughput, the latency percentiles, and magnumd's RSS and CPU time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench-capi"]
async fn bench_watch_events_reach_the_api() {
    let clusters: usize = std::env::var("BENCH_CAPI_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let flips: usize = std::env::var("BENCH_CAPI_FLIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let server = management_cluster_holding(clusters * 30 + 1_000).await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let capi = ScriptedCapi::new(&server, NAMESPACE);
    let controllers = capi.clone().spawn(Duration::from_millis(200));
    let work = tempfile::tempdir().unwrap();
    let config_file = config_file(
        work.path(),
        kubeconfig.path(),
        &format!(
            "[conductor]\nmax_concurrent_operations = {}\n[quotas]\nmax_clusters_per_project = {}\n",
            clusters.max(16),
            clusters
        ),
    );
    let binary =
        std::env::var("BENCH_MAGNUMD").unwrap_or_else(|_| env!("CARGO_BIN_EXE_magnumd").to_owned());
    let child = Magnumd::start(
        &binary,
        &config_file,
        &work.path().join("state"),
        &[(
            "MAGNUM_QUOTAS__MAX_CLUSTERS_PER_PROJECT",
            clusters.to_string(),
        )],
    );
    let base = child.base.clone();
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{base}{path}"))
            .header("OpenStack-API-Version", "container-infra latest");
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let template = send(
        reqwest::Method::POST,
        "/clustertemplates".into(),
        Some(json!({
        "name": "k8s", "coe": "kubernetes", "image_id": "ubuntu-2404-kube-v1.33",
        "external_network_id": "public", "flavor_id": "m1.medium", "master_flavor_id": "m1.large",
        "network_driver": "calico"})),
    )
    .await
    .unwrap();
    assert_eq!(template.status(), 201, "{}", template.text().await.unwrap());
    let idle = usage(child.id());
    let started = Instant::now();
    let mut uuids = Vec::new();
    for index in 0..clusters {
        let reply = send(
            reqwest::Method::POST,
            "/clusters".into(),
            Some(json!({
            "name": format!("c{index}"), "cluster_template_id": "k8s", "node_count": 1})),
        )
        .await
        .unwrap();
        let status = reply.status();
        let body: Value = reply.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        uuids.push(body["uuid"].as_str().unwrap().to_owned());
    }
    let accepted = started.elapsed();
    loop {
        let mut complete = 0;
        let mut marker = String::new();
        loop {
            let page: Value = send(
                reqwest::Method::GET,
                format!("/clusters?limit=1000{marker}"),
                None,
            )
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            let items = page["clusters"].as_array().cloned().unwrap_or_default();
            complete += items
                .iter()
                .filter(|c| c["status"] == "CREATE_COMPLETE")
                .count();
            match items.last() {
                Some(last) if items.len() == 1000 => {
                    marker = format!("&marker={}", last["uuid"].as_str().unwrap())
                }
                _ => break,
            }
        }
        if complete == clusters {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{complete} of {clusters} complete"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let created = started.elapsed();
    let busy = usage(child.id());
    // Let health settle, then freeze CAPI so that nothing but the test changes machines.
    tokio::time::sleep(Duration::from_secs(3)).await;
    capi.set(|knobs| knobs.frozen = true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let controller = server.controller("capi-controllers");
    let machines_resource = ResourceRef::new("cluster.x-k8s.io", "v1beta2", "machines");
    let machines = controller
        .list(&machines_resource, Some(NAMESPACE))
        .unwrap();
    let mut latencies = Vec::new();
    for flip in 0..flips.min(clusters) {
        let uuid = &uuids[flip * clusters / flips.min(clusters)];
        let shown: Value = send(reqwest::Method::GET, format!("/clusters/{uuid}"), None)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stack = shown["cluster_id"].as_str().unwrap().to_owned();
        let machine = machines
            .iter()
            .find(|m| {
                m["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"] == stack.as_str()
                    && m["metadata"]["labels"]
                        .get("topology.cluster.x-k8s.io/deployment-name")
                        .is_some()
            })
            .unwrap();
        let name = machine["metadata"]["name"].as_str().unwrap();
        let written = Instant::now();
        controller
            .patch_status(&machines_resource, Some(NAMESPACE), name, json!({"conditions": [
                {"type": "NodeHealthy", "status": "False", "reason": "NodeNotReady", "message": "kubelet stopped",
                 "lastTransitionTime": "2026-11-26T00:00:00Z"}]}))
            .unwrap();
        loop {
            let shown: Value = send(reqwest::Method::GET, format!("/clusters/{uuid}"), None)
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if shown["health_status"] == "UNHEALTHY" {
                latencies.push(written.elapsed());
                break;
            }
            assert!(written.elapsed() < Duration::from_secs(30), "{shown}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    latencies.sort();
    let percentile = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let done = usage(child.id());
    println!(
        "capi bench: {clusters} clusters accepted in {:.1} s, all CREATE_COMPLETE after {:.1} s; \
         health change to API over {} flips: p50 {:?}, p99 {:?}, max {:?}; magnumd RSS idle {} MiB, \
         with {clusters} clusters {} MiB, after flips {} MiB; CPU {:.1} s for the creates, {:.1} s for the flips",
        accepted.as_secs_f64(),
        created.as_secs_f64(),
        latencies.len(),
        percentile(0.5),
        percentile(0.99),
        latencies.last().unwrap(),
        idle.0 / 1024,
        busy.0 / 1024,
        done.0 / 1024,
        busy.1 - idle.1,
        done.1 - busy.1,
    );
    controllers.abort();
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_process_validates_with_the_catalog_and_watches_nothing() {
    let server = management_cluster().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let path = kubeconfig.path().to_owned();
    let api =
        TestApp::spawn_with(Engine::Sqlite, Role::Api, |config| configure(config, &path)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.open_watches(), 0);
    let refused = api
        .send_at(
            "latest",
            "POST",
            "/v1/clustertemplates",
            ADMIN,
            Some(
                json!({"name": "k", "coe": "kubernetes", "image_id": "ubuntu-2404-kube-v1.33",
                        "external_network_id": "nowhere", "flavor_id": "m1.medium"}),
            ),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.detail(), "Unable to find external network nowhere.");
    // A process that converges watches the six kinds, once each.
    let _conductor =
        TestApp::spawn_with(Engine::Sqlite, Role::All, |config| configure(config, &path)).await;
    let mut watching = 0;
    for _ in 0..50 {
        watching = server.open_watches();
        if watching == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(watching, 6);
}

/// The application credential in a cluster's `clouds.yaml` on the management cluster.
fn credential_in_use(server: &KubeApiServer, uuid: &str) -> (String, String) {
    use base64::Engine as _;
    let name = magnum_driver_capi::names::cluster_name(uuid::Uuid::parse_str(uuid).unwrap());
    let secret = server
        .controller("test")
        .get(
            &ResourceRef::core("secrets"),
            Some(NAMESPACE),
            &magnum_driver_capi::names::cloud_config_secret(&name),
        )
        .unwrap();
    let clouds = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["clouds.yaml"].as_str().unwrap())
        .unwrap();
    let clouds = String::from_utf8(clouds).unwrap();
    let value = |key: &str| {
        clouds
            .lines()
            .find_map(|line| line.trim().strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key} in {clouds}"))
            .trim_matches('"')
            .to_owned()
    };
    (
        value("application_credential_id"),
        value("application_credential_secret"),
    )
}

/// What Keystone says of a login with an application credential: the user and project of
/// its token, or the refusal's status.
async fn application_credential_login(
    auth_url: &str,
    (id, secret): &(String, String),
) -> Result<(String, String), u16> {
    let response = reqwest::Client::new()
        .post(format!("{auth_url}/auth/tokens"))
        .json(
            &json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": id, "secret": secret}}}}),
        )
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status != 201 {
        return Err(status);
    }
    let body: Value = response.json().await.unwrap();
    Ok((
        body["token"]["user"]["id"].as_str().unwrap().to_owned(),
        body["token"]["project"]["id"].as_str().unwrap().to_owned(),
    ))
}

/// With Keystone authenticating, every cluster acts with an application credential of its
/// own, made in its owner's name when it is created; `PATCH /v1/credentials` replaces it and
/// revokes the old one; the delete revokes it; another tenant can do none of it, and a
/// caller whose token cannot make credentials gets Keystone's refusal with nothing stored.
#[tokio::test]
async fn each_cluster_acts_with_an_application_credential_of_its_owner() {
    use crate::keystone::{call, Fixture};
    let fixture = Fixture::load();
    let auth_url = fixture.auth_url().to_owned();
    let server = management_cluster().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let capi = ScriptedCapi::new(&server, NAMESPACE);
    let controllers = capi.clone().spawn(Duration::from_millis(50));
    // No shared credential and no project list: each cluster brings its own.
    let section = drivers_section(kubeconfig.path())
        .replace("allowed_projects = [\"default\", \"p-admin\"]\n", "")
        .replace(
            "[capi.credential]\napplication_credential_id = \"operator-credential\"\napplication_credential_secret = \"s3cret\"\n",
            "",
        );
    let app = TestApp::spawn_with(Engine::Sqlite, Role::All, |config| {
        fixture.configure(config, 0);
        config.drivers = toml::from_str(&section).unwrap();
        // What read the replaced credential gets 3 s to move on.
        config.conductor.replaced_credential_grace = 3;
    })
    .await;
    let alpha = fixture.token("alpha-member").await;
    let alpha_user = fixture.user("alpha-member")["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let alpha_project = fixture.user("alpha-member")["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let beta = fixture.token("beta-member").await;
    let template = call(
        &app,
        "POST",
        "/v1/clustertemplates",
        &alpha,
        Some(
            json!({"name": "k8s", "coe": "kubernetes", "image_id": "ubuntu-2404-kube-v1.33",
                    "external_network_id": "public", "flavor_id": "m1.medium",
                    "master_flavor_id": "m1.large", "network_driver": "calico"}),
        ),
    )
    .await;
    assert_eq!(
        template.status,
        201,
        "{}",
        String::from_utf8_lossy(&template.raw)
    );
    let reply = call(
        &app,
        "POST",
        "/v1/clusters",
        &alpha,
        Some(json!({"name": "own", "cluster_template_id": "k8s", "node_count": 1})),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = call(&app, "GET", &format!("/v1/clusters/{uuid}"), &alpha, None).await;
        if shown.body["status"] != "CREATE_IN_PROGRESS" {
            assert_eq!(shown.body["status"], "CREATE_COMPLETE", "{}", shown.body);
            break;
        }
        assert!(Instant::now() < deadline, "{}", shown.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // CAPO acts as the owner, in the owner's project.
    let first = credential_in_use(&server, &uuid);
    assert_eq!(
        application_credential_login(&auth_url, &first).await,
        Ok((alpha_user.clone(), alpha_project.clone()))
    );

    // Another tenant cannot rotate it (the cluster is not theirs to see).
    let refused = call(
        &app,
        "PATCH",
        &format!("/v1/credentials/{uuid}"),
        &beta,
        None,
    )
    .await;
    assert_eq!(
        refused.status,
        404,
        "{}",
        String::from_utf8_lossy(&refused.raw)
    );
    assert_eq!(credential_in_use(&server, &uuid), first);

    // The owner rotates it: a new one in place, the old one revoked.
    let rotated = call(
        &app,
        "PATCH",
        &format!("/v1/credentials/{uuid}"),
        &alpha,
        None,
    )
    .await;
    assert_eq!(
        rotated.status,
        202,
        "{}",
        String::from_utf8_lossy(&rotated.raw)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let now = credential_in_use(&server, &uuid);
        let shown = call(&app, "GET", &format!("/v1/clusters/{uuid}"), &alpha, None).await;
        if now != first && shown.body["status"] == "UPDATE_COMPLETE" {
            break now;
        }
        assert!(Instant::now() < deadline, "{}", shown.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rotated_at = Instant::now();
    assert_eq!(
        application_credential_login(&auth_url, &second).await,
        Ok((alpha_user.clone(), alpha_project.clone()))
    );
    // The replaced one stays valid for its grace (the workload's cloud provider read it at
    // its start), then the conductor revokes it; Keystone answers a login with a credential
    // it no longer has with 404.
    assert_eq!(
        application_credential_login(&auth_url, &first).await,
        Ok((alpha_user.clone(), alpha_project.clone())),
        "the replaced credential lives through its grace"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let revoked_after = loop {
        let login = application_credential_login(&auth_url, &first).await;
        if matches!(login, Err(401 | 404)) {
            break rotated_at.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the replaced credential was never revoked: {login:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(revoked_after >= Duration::from_secs(2), "{revoked_after:?}");

    // A caller logged in with an application credential cannot make another (Keystone
    // forbids it): the create is refused with Keystone's reason, and nothing is stored.
    let (restricted, _) = crate::keystone::login(
        &auth_url,
        json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": second.0, "secret": second.1}}}}),
    )
    .await;
    let before = call(&app, "GET", "/v1/clusters", &alpha, None).await;
    let refused = call(
        &app,
        "POST",
        "/v1/clusters",
        &restricted,
        Some(json!({"name": "via-credential", "cluster_template_id": "k8s", "node_count": 1})),
    )
    .await;
    assert_eq!(
        refused.status,
        403,
        "{}",
        String::from_utf8_lossy(&refused.raw)
    );
    let message = refused.body["errors"][0]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("application credential"),
        "{}",
        refused.body
    );
    let after = call(&app, "GET", "/v1/clusters", &alpha, None).await;
    assert_eq!(before.body, after.body);

    // Deleting the cluster revokes what it acted with.
    let deleted = call(
        &app,
        "DELETE",
        &format!("/v1/clusters/{uuid}"),
        &alpha,
        None,
    )
    .await;
    assert_eq!(
        deleted.status,
        204,
        "{}",
        String::from_utf8_lossy(&deleted.raw)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while call(&app, "GET", &format!("/v1/clusters/{uuid}"), &alpha, None)
        .await
        .status
        != 404
    {
        assert!(Instant::now() < deadline, "the cluster was never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Keystone answers a login with a credential it no longer has with 404.
    let login = application_credential_login(&auth_url, &second).await;
    assert!(
        matches!(login, Err(401 | 404)),
        "the deleted cluster's credential was revoked: {login:?}"
    );
    controllers.abort();
}

/// Without a configured catalog, references are looked up in the cloud: Glance, Nova and
/// Neutron from Keystone's catalog, with the caller's token at the API (a tenant names only
/// what it can see: another project's private image is not found) and with the cluster's own
/// credential at converge time (the image uuid CAPO boots is the one that credential sees).
/// Upstream's answers hold: an ambiguous name is 409, a missing keypair 404, a flavor without
/// a root disk 400, and a cloud that is away is 503, never a stored template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_are_looked_up_in_the_cloud_as_the_caller_sees_it() {
    use crate::keystone::{call, Fixture};
    use magnum_test_support::cloud::CloudStandIn;
    let fixture = Fixture::load();
    let auth_url = fixture.auth_url().to_owned();
    let admin = &fixture.0["admin"];
    let admin_login = (
        admin["user"].as_str().unwrap(),
        admin["password"].as_str().unwrap(),
        admin["project"].as_str().unwrap(),
    );
    let cloud = CloudStandIn::start(&auth_url, admin_login).await.unwrap();
    let alpha_project = fixture.user("alpha-member")["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let alpha_user = fixture.user("alpha-member")["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let beta_project = fixture.user("beta-member")["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let private_image = cloud.add_image("ubuntu-alpha", Some("ubuntu"), Some(&alpha_project));
    cloud.add_image("shared-name", Some("ubuntu"), None);
    cloud.add_image("shared-name", Some("ubuntu"), None);
    cloud.add_image("no-distro", None, None);
    cloud.add_flavor("m1.medium", 20);
    cloud.add_flavor("m1.bfv", 0);
    cloud.add_network("public", &beta_project, true);
    cloud.add_network("alpha-net", &alpha_project, false);
    cloud.add_subnet("alpha-subnet", &alpha_project);
    cloud.add_network("dup-net", &alpha_project, false);
    cloud.add_network("dup-net", &alpha_project, false);
    cloud.add_keypair(&alpha_user, "alpha-key");

    // The stand-in in a region of this test's own, so that parallel tests never share it.
    let http = reqwest::Client::new();
    let keystone = KeystoneAdmin {
        http: http.clone(),
        auth_url: auth_url.clone(),
        token: magnum_test_support::octavia::password_token(
            &http,
            &auth_url,
            admin_login.0,
            admin_login.1,
            admin_login.2,
        )
        .await
        .unwrap(),
    };
    let admin_token = keystone.token.clone();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let region = format!("cloud-{suffix}");
    keystone
        .call(
            reqwest::Method::POST,
            "/regions",
            &admin_token,
            Some(json!({"region": {"id": region}})),
        )
        .await;
    let mut registered = Vec::new();
    for (service_type, url) in cloud.endpoints() {
        let service = keystone
            .call(
                reqwest::Method::POST,
                "/services",
                &admin_token,
                Some(json!({"service": {"type": service_type, "name": format!("{service_type}-{suffix}")}})),
            )
            .await;
        let service_id = service["service"]["id"].as_str().unwrap().to_owned();
        let endpoint = keystone
            .call(
                reqwest::Method::POST,
                "/endpoints",
                &admin_token,
                Some(
                    json!({"endpoint": {"service_id": service_id, "interface": "public",
                                         "url": url, "region_id": region}}),
                ),
            )
            .await;
        registered.push((
            service_id,
            endpoint["endpoint"]["id"].as_str().unwrap().to_owned(),
        ));
    }

    let server = management_cluster().await;
    let kubeconfig = server.write_kubeconfig().unwrap();
    let capi = ScriptedCapi::new(&server, NAMESPACE);
    let controllers = capi.clone().spawn(Duration::from_millis(50));
    // No catalog: every reference is the cloud's.
    let mut section = drivers_section(kubeconfig.path())
        .replace("allowed_projects = [\"default\", \"p-admin\"]\n", "")
        .replace(
            "auth_url = \"https://keystone.cloud.test:5000/v3\"",
            &format!("auth_url = \"{auth_url}\"\nregion_name = \"{region}\""),
        );
    section.truncate(section.find("[capi.credential]").unwrap());
    let app = TestApp::spawn_with(Engine::Sqlite, Role::All, |config| {
        fixture.configure(config, 0);
        config.drivers = toml::from_str(&section).unwrap();
    })
    .await;
    let alpha = fixture.token("alpha-member").await;
    let beta = fixture.token("beta-member").await;
    let template = |name: &str, image: &str, flavor: &str, network: &str| {
        json!({"name": name, "coe": "kubernetes", "image_id": image,
               "external_network_id": network, "flavor_id": flavor,
               "master_flavor_id": flavor, "network_driver": "calico",
               "fixed_network": "alpha-net", "fixed_subnet": "alpha-subnet"})
    };
    let create = |token: &str, body: Value| {
        let (app, token) = (&app, token.to_owned());
        async move { call(app, "POST", "/v1/clustertemplates", &token, Some(body)).await }
    };
    let detail = |reply: &crate::support::Reply| {
        reply.body["errors"][0]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // Alpha names its own private image by name, and the rest by name too.
    let made = create(
        &alpha,
        template("k8s", "ubuntu-alpha", "m1.medium", "public"),
    )
    .await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.raw));
    assert_eq!(made.body["cluster_distro"], "ubuntu");
    // Beta cannot see it, as Glance would not show it.
    let hidden = create(
        &beta,
        template("k8s", "ubuntu-alpha", "m1.medium", "public"),
    )
    .await;
    assert_eq!(
        hidden.status,
        400,
        "{}",
        String::from_utf8_lossy(&hidden.raw)
    );
    assert_eq!(detail(&hidden), "Image ubuntu-alpha could not be found.");
    let by_id = create(
        &beta,
        template("k8s", &private_image, "m1.medium", "public"),
    )
    .await;
    assert_eq!(by_id.status, 400, "{}", String::from_utf8_lossy(&by_id.raw));
    // Upstream's other answers.
    let ambiguous = create(&alpha, template("a", "shared-name", "m1.medium", "public")).await;
    assert_eq!(ambiguous.status, 409, "{}", detail(&ambiguous));
    let no_distro = create(&alpha, template("b", "no-distro", "m1.medium", "public")).await;
    assert_eq!(no_distro.status, 400);
    assert_eq!(
        detail(&no_distro),
        "Image no-distro doesn't contain os_distro field."
    );
    let no_disk = create(&alpha, template("c", "ubuntu-alpha", "m1.bfv", "public")).await;
    assert_eq!(no_disk.status, 400);
    assert!(
        detail(&no_disk).contains("zero root volume"),
        "{}",
        detail(&no_disk)
    );
    let no_network = create(
        &alpha,
        template("d", "ubuntu-alpha", "m1.medium", "nowhere"),
    )
    .await;
    assert_eq!(no_network.status, 400);
    assert_eq!(
        detail(&no_network),
        "Unable to find external network nowhere."
    );
    let mut duplicate = template("f", "ubuntu-alpha", "m1.medium", "public");
    duplicate["fixed_network"] = json!("dup-net");
    let ambiguous_network = create(&alpha, duplicate).await;
    assert_eq!(
        ambiguous_network.status,
        409,
        "{}",
        detail(&ambiguous_network)
    );
    assert_eq!(
        detail(&ambiguous_network),
        "Multiple networks exist with same name 'dup-net'. Please use the network ID instead."
    );
    // An admin's token sees every project's images (as Glance shows them): another project's
    // private image is still not the admin's to name.
    let admin_token = fixture.token("admin").await;
    let foreign = create(
        &admin_token,
        template("g", "ubuntu-alpha", "m1.medium", "public"),
    )
    .await;
    assert_eq!(
        foreign.status,
        400,
        "{}",
        String::from_utf8_lossy(&foreign.raw)
    );
    assert_eq!(detail(&foreign), "Image ubuntu-alpha could not be found.");
    // "." and ".." name nothing: never a path that climbs to a service's root.
    let climbing = create(&alpha, template("e", "ubuntu-alpha", "..", "public")).await;
    assert_eq!(climbing.status, 400);
    assert_eq!(detail(&climbing), "Unable to find flavor ...");
    let climbing_key = call(
        &app,
        "POST",
        "/v1/clusters",
        &alpha,
        Some(json!({"name": "k", "cluster_template_id": "k8s", "keypair": ".."})),
    )
    .await;
    assert_eq!(climbing_key.status, 404, "{}", detail(&climbing_key));
    assert!(
        cloud.seen().iter().all(|seen| seen.path != "/compute/v2.1"),
        "{:?}",
        cloud.seen()
    );
    // Lists are asked bounded, and external networks by their flag.
    assert!(cloud
        .seen()
        .iter()
        .filter(|seen| seen.path == "/network/v2.0/networks")
        .all(|seen| seen.query.contains("limit=1000")));
    assert!(cloud
        .seen()
        .iter()
        .any(|seen| seen.query.contains("router%3Aexternal=true")));
    // A keypair is the user's own.
    let missing_key = call(
        &app,
        "POST",
        "/v1/clusters",
        &alpha,
        Some(json!({"name": "k", "cluster_template_id": "k8s", "keypair": "beta-key"})),
    )
    .await;
    assert_eq!(missing_key.status, 404, "{}", detail(&missing_key));
    assert_eq!(detail(&missing_key), "Unable to find keypair beta-key.");

    // The cluster is built with the image uuid its own credential sees.
    let before = cloud.seen().len();
    let reply = call(
        &app,
        "POST",
        "/v1/clusters",
        &alpha,
        Some(
            json!({"name": "web", "cluster_template_id": "k8s", "keypair": "alpha-key",
                    "node_count": 1}),
        ),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = call(&app, "GET", &format!("/v1/clusters/{uuid}"), &alpha, None).await;
        if shown.body["status"] != "CREATE_IN_PROGRESS" {
            assert_eq!(shown.body["status"], "CREATE_COMPLETE", "{}", shown.body);
            break;
        }
        assert!(Instant::now() < deadline, "{}", shown.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let name = magnum_driver_capi::names::cluster_name(uuid::Uuid::parse_str(&uuid).unwrap());
    let cluster = server
        .controller("test")
        .get(
            &ResourceRef::new("cluster.x-k8s.io", "v1beta2", "clusters"),
            Some(NAMESPACE),
            &name,
        )
        .unwrap();
    assert!(
        cluster["spec"]["topology"]
            .to_string()
            .contains(&private_image),
        "{}",
        cluster["spec"]["topology"]
    );
    // Every lookup was made as alpha (the caller, then the cluster's credential).
    let lookups = &cloud.seen()[before..];
    assert!(lookups.iter().any(|seen| seen.path.starts_with("/image/")));
    assert!(
        lookups.iter().all(|seen| seen.project_id == alpha_project),
        "{lookups:?}"
    );

    // A nodegroup's flavor and a template update are looked up the same way.
    let nodegroup = call(
        &app,
        "POST",
        &format!("/v1/clusters/{uuid}/nodegroups"),
        &alpha,
        Some(json!({"name": "bfv", "flavor_id": "m1.bfv", "node_count": 1})),
    )
    .await;
    assert_eq!(
        nodegroup.status,
        400,
        "{}",
        String::from_utf8_lossy(&nodegroup.raw)
    );
    assert!(
        detail(&nodegroup).contains("zero root volume"),
        "{}",
        detail(&nodegroup)
    );
    let nodegroup = call(
        &app,
        "POST",
        &format!("/v1/clusters/{uuid}/nodegroups"),
        &alpha,
        Some(json!({"name": "more", "flavor_id": "m1.medium", "node_count": 1})),
    )
    .await;
    assert_eq!(
        nodegroup.status,
        202,
        "{}",
        String::from_utf8_lossy(&nodegroup.raw)
    );
    let free = create(
        &alpha,
        template("free", "ubuntu-alpha", "m1.medium", "public"),
    )
    .await;
    assert_eq!(free.status, 201, "{}", String::from_utf8_lossy(&free.raw));
    let patched = call(
        &app,
        "PATCH",
        "/v1/clustertemplates/free",
        &alpha,
        Some(json!([{"op": "replace", "path": "/image_id", "value": "shared-name"}])),
    )
    .await;
    assert_eq!(
        patched.status,
        409,
        "{}",
        String::from_utf8_lossy(&patched.raw)
    );
    let patched = call(
        &app,
        "PATCH",
        "/v1/clustertemplates/free",
        &beta,
        Some(json!([{"op": "replace", "path": "/flavor_id", "value": "m1.bfv"}])),
    )
    .await;
    assert_eq!(
        patched.status, 404,
        "another project's template is not found"
    );
    let patched = call(
        &app,
        "PATCH",
        "/v1/clustertemplates/free",
        &alpha,
        Some(json!([{"op": "replace", "path": "/flavor_id", "value": "m1.bfv"}])),
    )
    .await;
    assert_eq!(
        patched.status,
        400,
        "{}",
        String::from_utf8_lossy(&patched.raw)
    );
    let shown = call(&app, "GET", "/v1/clustertemplates/free", &alpha, None).await;
    assert_eq!(shown.body["flavor_id"], "m1.medium");

    // A cloud that is away: 503, and nothing stored.
    for (service_id, endpoint_id) in &registered {
        keystone
            .call(
                reqwest::Method::PATCH,
                &format!("/endpoints/{endpoint_id}"),
                &admin_token,
                Some(json!({"endpoint": {"url": "http://127.0.0.1:9/unreachable"}})),
            )
            .await;
        let _ = service_id;
    }
    let away = create(
        &alpha,
        template("later", "ubuntu-alpha", "m1.medium", "public"),
    )
    .await;
    assert_eq!(away.status, 503, "{}", String::from_utf8_lossy(&away.raw));
    let listed = call(&app, "GET", "/v1/clustertemplates", &alpha, None).await;
    assert_eq!(listed.body["clustertemplates"].as_array().unwrap().len(), 2);

    for (service_id, endpoint_id) in registered {
        keystone
            .call(
                reqwest::Method::DELETE,
                &format!("/endpoints/{endpoint_id}"),
                &admin_token,
                None,
            )
            .await;
        keystone
            .call(
                reqwest::Method::DELETE,
                &format!("/services/{service_id}"),
                &admin_token,
                None,
            )
            .await;
    }
    keystone
        .call(
            reqwest::Method::DELETE,
            &format!("/regions/{region}"),
            &admin_token,
            None,
        )
        .await;
    controllers.abort();
}
