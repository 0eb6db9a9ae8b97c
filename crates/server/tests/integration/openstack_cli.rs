//! The real `openstack coe` client (python-openstackclient + python-magnumclient) against
//! magnumd, unchanged: `--os-auth-type none --os-endpoint http://…/v1`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::{engines, TestApp};
use magnum_test_support::{engine_tests, Engine};

/// The client installed by `scripts/test` into the repository's ignored `.venv`, or the one
/// `MAGNUM_OPENSTACK_CLI` names.
fn openstack_binary() -> PathBuf {
    if let Ok(path) = std::env::var("MAGNUM_OPENSTACK_CLI") {
        return PathBuf::from(path);
    }
    let repository = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = repository.join(".venv/bin/openstack");
    assert!(
        path.exists(),
        "the openstack client is not installed at {}: run scripts/test, which installs it",
        path.display()
    );
    path
}

pub(crate) struct Outcome {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Outcome {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}\n{}", self.stdout, self.stderr))
    }
}

pub(crate) async fn openstack(app: &TestApp, arguments: &[&str]) -> Outcome {
    let binary = openstack_binary();
    let endpoint = format!("{}/v1", app.base_url);
    let arguments: Vec<String> = arguments
        .iter()
        .map(|argument| (*argument).to_owned())
        .collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(binary)
            .args(["--os-auth-type", "none", "--os-endpoint", &endpoint])
            .args(&arguments)
            .env_remove("OS_CLOUD")
            .output()
            .expect("the openstack client runs");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

fn table_value<'a>(table: &'a str, field: &str) -> Option<&'a str> {
    table.lines().find_map(|line| {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        (cells.len() >= 3 && cells[1] == field).then(|| cells[2])
    })
}

async fn template_lifecycle(app: TestApp) {
    let services = openstack(&app, &["coe", "service", "list", "-f", "json"]).await;
    assert_eq!(services.code, 0, "{}", services.stderr);
    let services = services.json();
    assert_eq!(services.as_array().unwrap().len(), 1);
    assert_eq!(services[0]["binary"], "magnum-conductor");
    assert_eq!(services[0]["state"], "up");
    assert_eq!(services[0]["id"], 1);
    let table = openstack(&app, &["coe", "service", "list"]).await;
    assert!(
        table.stdout.contains("| magnum-conductor | up    |"),
        "{}",
        table.stdout
    );

    let created = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "create",
            "t1",
            "--coe",
            "swarm-mode",
            "--image",
            "local-node",
            "--flavor",
            "local.small",
            "--master-flavor",
            "local.small",
            "--external-network",
            "local",
        ],
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(
        created
            .stdout
            .starts_with("Request to create cluster template t1 accepted\n"),
        "{}",
        created.stdout
    );
    assert_eq!(table_value(&created.stdout, "coe"), Some("swarm-mode"));
    assert_eq!(
        table_value(&created.stdout, "network_driver"),
        Some("docker")
    );
    assert_eq!(
        table_value(&created.stdout, "cluster_distro"),
        Some("local")
    );
    assert_eq!(table_value(&created.stdout, "driver"), Some("local"));
    assert_eq!(table_value(&created.stdout, "labels"), Some("{}"));
    assert_eq!(table_value(&created.stdout, "keypair_id"), Some("-"));
    let uuid = table_value(&created.stdout, "uuid").unwrap().to_owned();

    let listed = openstack(&app, &["coe", "cluster", "template", "list", "-f", "json"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(
        listed.json(),
        serde_json::json!([{"uuid": uuid, "name": "t1", "tags": null}])
    );
    let listed_table = openstack(&app, &["coe", "cluster", "template", "list"]).await;
    assert!(
        listed_table
            .stdout
            .contains(&format!("| {uuid} | t1   | None |")),
        "{}",
        listed_table.stdout
    );

    let shown = openstack(
        &app,
        &["coe", "cluster", "template", "show", "t1", "-f", "json"],
    )
    .await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let shown = shown.json();
    assert_eq!(shown["uuid"], uuid.as_str());
    assert_eq!(shown["image_id"], "local-node");
    assert_eq!(shown["flavor_id"], "local.small");
    assert_eq!(shown["external_network_id"], "local");
    assert_eq!(shown["public"], false);
    assert_eq!(shown["project_id"], "default", "noauth's default identity");
    assert_eq!(
        shown.as_object().unwrap().len(),
        34,
        "every key the client shows (it drops links and user_id)"
    );

    let updated = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "update",
            "t1",
            "--label",
            "foo=bar",
            "--dns-nameserver",
            "1.1.1.1",
            "--flavor",
            "local.medium",
            "-f",
            "json",
        ],
    )
    .await;
    assert_eq!(updated.code, 0, "{}", updated.stderr);
    let updated = updated.json();
    assert_eq!(updated["labels"], serde_json::json!({"foo": "bar"}));
    assert_eq!(updated["dns_nameserver"], "1.1.1.1");
    assert_eq!(updated["flavor_id"], "local.medium");
    assert_ne!(updated["updated_at"], "-");
    let columns = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "show",
            &uuid,
            "-c",
            "labels",
            "-c",
            "dns_nameserver",
            "-f",
            "value",
        ],
    )
    .await;
    assert_eq!(columns.stdout, "{'foo': 'bar'}\n1.1.1.1\n");

    let unknown_image = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "create",
            "bad",
            "--coe",
            "swarm-mode",
            "--image",
            "nope",
            "--external-network",
            "local",
        ],
    )
    .await;
    assert_eq!(unknown_image.code, 1);
    assert!(
        unknown_image
            .stderr
            .starts_with("Image nope could not be found (HTTP 400) (Request-ID: req-"),
        "{}",
        unknown_image.stderr
    );
    // The client sends `--flavor m1.small` unless told otherwise.
    let client_default_flavor = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "create",
            "bad",
            "--coe",
            "swarm-mode",
            "--image",
            "local-node",
            "--external-network",
            "local",
        ],
    )
    .await;
    assert!(
        client_default_flavor
            .stderr
            .starts_with("Unable to find flavor m1 (HTTP 400)"),
        "{}",
        client_default_flavor.stderr
    );
    let kubernetes = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "create",
            "k8s",
            "--coe",
            "kubernetes",
            "--image",
            "local-node",
            "--external-network",
            "local",
        ],
    )
    .await;
    assert_eq!(kubernetes.code, 1);
    assert!(kubernetes.stderr.starts_with("Network driver type docker is not supported") || kubernetes.stderr.starts_with("Cluster type (vm, local, kubernetes) is not supported by any loaded cluster driver (HTTP 400)"), "{}", kubernetes.stderr);
    let kubernetes_flannel = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "create",
            "k8s",
            "--coe",
            "kubernetes",
            "--image",
            "local-node",
            "--external-network",
            "local",
            "--network-driver",
            "flannel",
        ],
    )
    .await;
    assert_eq!(kubernetes_flannel.code, 1);
    assert!(kubernetes_flannel.stderr.starts_with("Cluster type (vm, local, kubernetes) is not supported by any loaded cluster driver (HTTP 400)"), "{}", kubernetes_flannel.stderr);
    let bad_label_patch = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "update",
            &uuid,
            "--no-label",
            "missing",
        ],
    )
    .await;
    assert_eq!(bad_label_patch.code, 1);
    assert!(
        bad_label_patch.stderr.starts_with(
            "Couldn't apply patch '[{'path': '/labels/missing', 'op': 'remove'}]' (HTTP 400)"
        ),
        "{}",
        bad_label_patch.stderr
    );
    let publish = openstack(
        &app,
        &[
            "coe", "cluster", "template", "update", "t1", "--public", "-f", "value", "-c", "public",
        ],
    )
    .await;
    assert_eq!(
        (publish.code, publish.stdout.as_str()),
        (0, "True\n"),
        "{}",
        publish.stderr
    );

    let duplicate = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "create",
            "t1",
            "--coe",
            "swarm-mode",
            "--image",
            "local-node",
            "--flavor",
            "local.small",
            "--external-network",
            "local",
            "-f",
            "value",
            "-c",
            "uuid",
        ],
    )
    .await;
    assert_eq!(
        duplicate.code, 0,
        "duplicate names are allowed: {}",
        duplicate.stderr
    );
    let second_uuid = duplicate.stdout.lines().last().unwrap().trim().to_owned();
    let ambiguous = openstack(&app, &["coe", "cluster", "template", "show", "t1"]).await;
    assert_eq!(ambiguous.code, 1);
    assert!(
        ambiguous.stderr.starts_with(
            "Multiple ClusterTemplates exist with same name (HTTP 409) (Request-ID: req-"
        ),
        "{}",
        ambiguous.stderr
    );

    for id in [&uuid, &second_uuid] {
        let deleted = openstack(&app, &["coe", "cluster", "template", "delete", id]).await;
        assert_eq!(deleted.code, 0, "{}", deleted.stderr);
        assert_eq!(
            deleted.stdout,
            format!("Request to delete cluster template {id} has been accepted.\n")
        );
    }
    let missing = openstack(&app, &["coe", "cluster", "template", "delete", "t1"]).await;
    assert!(missing.stdout.starts_with("Delete for cluster template t1 failed: ClusterTemplate t1 could not be found (HTTP 404)"), "{}", missing.stdout);
    let empty = openstack(&app, &["coe", "cluster", "template", "list", "-f", "json"]).await;
    assert_eq!(empty.json(), serde_json::json!([]));
    app.stop().await;
}

engine_tests!(
    openstack_coe_cluster_template_lifecycle_on_every_engine,
    multi_thread
);
async fn openstack_coe_cluster_template_lifecycle_on_every_engine(engine: Engine) {
    template_lifecycle(TestApp::spawn(engine).await).await;
}

/// The identity `--os-auth-type none` gets: the noauth defaults.
const NOAUTH_DEFAULT: crate::support::Caller = crate::support::Caller {
    project_id: "default",
    user_id: "admin",
    roles: "admin,member,reader",
};

async fn ok(app: &TestApp, arguments: &[&str]) -> String {
    let outcome = openstack(app, arguments).await;
    assert_eq!(
        outcome.code, 0,
        "{arguments:?}: {}{}",
        outcome.stdout, outcome.stderr
    );
    outcome.stdout
}

async fn cluster_uuid(app: &TestApp, name: &str) -> String {
    let shown = openstack(app, &["coe", "cluster", "show", name, "-f", "json"]).await;
    shown.json()["uuid"].as_str().unwrap().to_owned()
}

async fn cluster_lifecycle(app: TestApp) {
    for name in ["t1", "t2"] {
        ok(
            &app,
            &[
                "coe",
                "cluster",
                "template",
                "create",
                name,
                "--coe",
                "swarm-mode",
                "--image",
                "scripted-image",
                "--flavor",
                "s.small",
                "--master-flavor",
                "s.small",
                "--external-network",
                "public",
            ],
        )
        .await;
    }
    let created = ok(
        &app,
        &[
            "coe",
            "cluster",
            "create",
            "c1",
            "--cluster-template",
            "t1",
            "--node-count",
            "2",
            "--master-count",
            "1",
        ],
    )
    .await;
    assert!(
        created.starts_with("Request to create cluster "),
        "{created}"
    );
    assert!(created.trim_end().ends_with(" accepted"), "{created}");
    let uuid = cluster_uuid(&app, "c1").await;
    assert!(created.contains(&uuid));
    app.wait_for_status(&uuid, NOAUTH_DEFAULT, "CREATE_COMPLETE")
        .await;

    let listed = openstack(&app, &["coe", "cluster", "list", "-f", "json"])
        .await
        .json();
    assert_eq!(listed[0]["name"], "c1");
    assert_eq!(listed[0]["node_count"], 2);
    assert_eq!(listed[0]["status"], "CREATE_COMPLETE");
    let table = ok(&app, &["coe", "cluster", "list"]).await;
    assert!(table.contains("| uuid "), "{table}");
    let shown = openstack(&app, &["coe", "cluster", "show", "c1", "-f", "json"])
        .await
        .json();
    assert_eq!(shown["master_count"], 1);
    assert_eq!(shown["node_addresses"].as_array().unwrap().len(), 2);
    assert!(shown["cluster_id"]
        .as_str()
        .unwrap()
        .starts_with("scripted-"));

    // Scale, and the refusals of fields that cannot change.
    ok(
        &app,
        &["coe", "cluster", "update", "c1", "--node-count", "3"],
    )
    .await;
    app.wait_for_status(&uuid, NOAUTH_DEFAULT, "UPDATE_COMPLETE")
        .await;
    let refused = openstack(&app, &["coe", "cluster", "update", "c1", "--name", "other"]).await;
    assert!(
        refused
            .stderr
            .contains("cannot change cluster property(ies) name"),
        "{}",
        refused.stderr
    );
    ok(&app, &["coe", "cluster", "resize", "c1", "1"]).await;
    let resized = app
        .wait_for_status(&uuid, NOAUTH_DEFAULT, "UPDATE_COMPLETE")
        .await;
    assert_eq!(resized["node_count"], 1);
    ok(&app, &["coe", "cluster", "upgrade", "c1", "t2"]).await;
    let upgraded = app
        .wait_for_status(&uuid, NOAUTH_DEFAULT, "UPDATE_COMPLETE")
        .await;
    let second = openstack(
        &app,
        &["coe", "cluster", "template", "show", "t2", "-f", "json"],
    )
    .await
    .json();
    assert_eq!(upgraded["cluster_template_id"], second["uuid"]);

    // Nodegroups.
    ok(
        &app,
        &[
            "coe",
            "nodegroup",
            "create",
            "c1",
            "ng1",
            "--node-count",
            "1",
            "--min-nodes",
            "1",
            "--max-nodes",
            "3",
        ],
    )
    .await;
    app.wait_for_status(&uuid, NOAUTH_DEFAULT, "UPDATE_COMPLETE")
        .await;
    let groups = openstack(&app, &["coe", "nodegroup", "list", "c1", "-f", "json"])
        .await
        .json();
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default-master", "default-worker", "ng1"]);
    let group = openstack(
        &app,
        &["coe", "nodegroup", "show", "c1", "ng1", "-f", "json"],
    )
    .await
    .json();
    assert_eq!(group["status"], "CREATE_COMPLETE");
    assert_eq!(group["max_node_count"], 3);
    ok(
        &app,
        &[
            "coe",
            "nodegroup",
            "update",
            "c1",
            "ng1",
            "--max-nodes",
            "5",
        ],
    )
    .await;
    let group = openstack(
        &app,
        &["coe", "nodegroup", "show", "c1", "ng1", "-f", "json"],
    )
    .await
    .json();
    assert_eq!(group["max_node_count"], 5);
    ok(
        &app,
        &[
            "coe",
            "nodegroup",
            "update",
            "c1",
            "ng1",
            "--node-labels",
            "tier=gpu",
            "--node-taints",
            "gpu=yes:NoSchedule",
        ],
    )
    .await;
    app.wait_for_status(&uuid, NOAUTH_DEFAULT, "UPDATE_COMPLETE")
        .await;
    let group = openstack(
        &app,
        &["coe", "nodegroup", "show", "c1", "ng1", "-f", "json"],
    )
    .await
    .json();
    assert_eq!(group["node_labels"], serde_json::json!({"tier": "gpu"}));
    assert_eq!(
        group["node_taints"],
        serde_json::json!([{"effect": "NoSchedule", "key": "gpu", "value": "yes"}])
    );
    let refused = openstack(
        &app,
        &["coe", "nodegroup", "delete", "c1", "default-worker"],
    )
    .await;
    assert!(
        format!("{}{}", refused.stdout, refused.stderr)
            .contains("Deleting a default nodegroup is not supported"),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    ok(&app, &["coe", "nodegroup", "delete", "c1", "ng1"]).await;
    app.wait_for_status(&uuid, NOAUTH_DEFAULT, "UPDATE_COMPLETE")
        .await;

    // Quotas and stats.
    ok(
        &app,
        &[
            "coe",
            "quotas",
            "create",
            "--project-id",
            "p-9",
            "--resource",
            "Cluster",
            "--hard-limit",
            "5",
        ],
    )
    .await;
    let own = ok(&app, &["coe", "quotas", "list"]).await;
    assert!(!own.contains("p-9"), "{own}");
    let quotas = ok(&app, &["coe", "quotas", "list", "--all-tenants"]).await;
    assert!(quotas.contains("| p-9 "), "{quotas}");
    assert!(quotas.contains("| Cluster  | 5 "), "{quotas}");
    ok(
        &app,
        &[
            "coe",
            "quotas",
            "update",
            "--project-id",
            "p-9",
            "--resource",
            "Cluster",
            "--hard-limit",
            "7",
        ],
    )
    .await;
    let quota = ok(
        &app,
        &[
            "coe",
            "quotas",
            "show",
            "--project-id",
            "p-9",
            "--resource",
            "Cluster",
        ],
    )
    .await;
    assert_eq!(table_value(&quota, "hard_limit"), Some("7"), "{quota}");
    ok(
        &app,
        &[
            "coe",
            "quotas",
            "delete",
            "--project-id",
            "p-9",
            "--resource",
            "Cluster",
        ],
    )
    .await;
    let stats = ok(&app, &["coe", "stats", "list", "default"]).await;
    assert!(stats.contains("| clusters | 1 "), "{stats}");
    assert!(stats.contains("| nodes    | 2 "), "{stats}");

    // Refusals reach the user with the server's words.
    let refused = openstack(
        &app,
        &[
            "coe",
            "cluster",
            "create",
            "x",
            "--cluster-template",
            "nope",
        ],
    )
    .await;
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("ClusterTemplate nope could not be found"),
        "{}",
        refused.stderr
    );

    let deleted = ok(&app, &["coe", "cluster", "delete", "c1"]).await;
    assert_eq!(
        deleted.trim_end(),
        "Request to delete cluster c1 has been accepted."
    );
    app.wait_for_cluster(&uuid, NOAUTH_DEFAULT, 20, |reply| reply.status == 404)
        .await;
    let listed = openstack(&app, &["coe", "cluster", "list", "-f", "json"])
        .await
        .json();
    assert_eq!(listed, serde_json::json!([]));
    app.stop().await;
}

engine_tests!(openstack_coe_cluster_nodegroup_quota_and_stats_lifecycle_on_every_engine);
async fn openstack_coe_cluster_nodegroup_quota_and_stats_lifecycle_on_every_engine(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    cluster_lifecycle(app).await;
}

#[tokio::test]
async fn openstack_coe_ca_show_sign_and_rotate() {
    let engine = engines()[0];
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    ok(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "create",
            "t",
            "--coe",
            "swarm-mode",
            "--image",
            "scripted-image",
            "--flavor",
            "s.small",
            "--master-flavor",
            "s.small",
            "--external-network",
            "public",
        ],
    )
    .await;
    ok(
        &app,
        &["coe", "cluster", "create", "c1", "--cluster-template", "t"],
    )
    .await;
    let uuid = cluster_uuid(&app, "c1").await;
    app.wait_for_status(&uuid, NOAUTH_DEFAULT, "CREATE_COMPLETE")
        .await;
    let work = tempfile::tempdir().unwrap();
    let openssl = |arguments: &[&str]| {
        let output = Command::new("openssl")
            .args(arguments)
            .current_dir(work.path())
            .output()
            .unwrap();
        output.status.success()
    };
    assert!(openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=admin/O=system:masters",
    ]));
    let ca = ok(&app, &["coe", "ca", "show", "c1"]).await;
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    std::fs::write(work.path().join("ca.pem"), &ca).unwrap();
    let csr_path = work.path().join("client.csr");
    let signed = ok(
        &app,
        &["coe", "ca", "sign", "c1", csr_path.to_str().unwrap()],
    )
    .await;
    assert!(
        signed.starts_with("-----BEGIN CERTIFICATE-----"),
        "{signed}"
    );
    std::fs::write(work.path().join("cert.pem"), &signed).unwrap();
    assert!(openssl(&["verify", "-CAfile", "ca.pem", "cert.pem"]));

    ok(&app, &["coe", "ca", "rotate", "c1"]).await;
    app.wait_for_status(&uuid, NOAUTH_DEFAULT, "UPDATE_COMPLETE")
        .await;
    let new_ca = ok(&app, &["coe", "ca", "show", "c1"]).await;
    assert_ne!(new_ca, ca);
    std::fs::write(work.path().join("ca.pem"), &new_ca).unwrap();
    assert!(
        !openssl(&["verify", "-CAfile", "ca.pem", "cert.pem"]),
        "the old certificate no longer verifies"
    );
    let resigned = ok(
        &app,
        &["coe", "ca", "sign", "c1", csr_path.to_str().unwrap()],
    )
    .await;
    std::fs::write(work.path().join("cert.pem"), &resigned).unwrap();
    assert!(openssl(&["verify", "-CAfile", "ca.pem", "cert.pem"]));
    app.stop().await;
}

#[tokio::test]
async fn openstack_coe_builds_resizes_and_deletes_a_real_local_cluster() {
    let engine = engines()[0];
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.drivers.local.network_pool = "10.96.0.0/16".to_owned();
    })
    .await;
    ok(
        &app,
        &[
            "coe",
            "cluster",
            "template",
            "create",
            "plain",
            "--coe",
            "swarm-mode",
            "--image",
            "local-node",
            "--flavor",
            "local.small",
            "--master-flavor",
            "local.small",
            "--external-network",
            "local",
            "--tls-disabled",
        ],
    )
    .await;
    ok(
        &app,
        &[
            "coe",
            "cluster",
            "create",
            "real",
            "--cluster-template",
            "plain",
            "--node-count",
            "1",
        ],
    )
    .await;
    let uuid = cluster_uuid(&app, "real").await;
    let built = app
        .wait_for_cluster(&uuid, NOAUTH_DEFAULT, 120, |reply| {
            reply.body["status"] != "CREATE_IN_PROGRESS"
        })
        .await
        .body;
    if built["status"] != "CREATE_COMPLETE" {
        app.delete(&format!("/v1/clusters/{uuid}"), NOAUTH_DEFAULT)
            .await;
        app.wait_for_cluster(&uuid, NOAUTH_DEFAULT, 120, |reply| reply.status == 404)
            .await;
        panic!("{built}");
    }
    let address = built["api_address"].as_str().unwrap().to_owned();
    let docker = |arguments: &[&str]| {
        let output = Command::new("docker")
            .arg("-H")
            .arg(&address)
            .args(arguments)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // The flavor caps the node's containers (local.small: 1 GiB), and the whole node at
    // 512 MiB more for its own daemons; its containers may run 4096 processes.
    let short: String = uuid.replace('-', "")[..8].to_owned();
    let cgroup = |path: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{path}"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    assert_eq!(
        cgroup(&format!(
            "memory/magnum-{short}-n1/containers/memory.limit_in_bytes"
        )),
        (1024u64 * 1024 * 1024).to_string()
    );
    assert_eq!(
        cgroup(&format!("memory/magnum-{short}-n1/memory.limit_in_bytes")),
        (1536u64 * 1024 * 1024).to_string()
    );
    assert_eq!(
        cgroup(&format!("pids/magnum-{short}-n1/containers/pids.max")),
        "4096"
    );
    assert_eq!(
        cgroup(&format!(
            "cpu/magnum-{short}-n1/containers/cpu.cfs_quota_us"
        )),
        "100000"
    );

    // A nodegroup with node labels: its node joins labelled.
    ok(
        &app,
        &[
            "coe",
            "nodegroup",
            "create",
            "real",
            "extra",
            "--node-count",
            "1",
            "--node-labels",
            "tier=batch,magnum.nodegroup=hijacked",
        ],
    )
    .await;
    app.wait_for_cluster(&uuid, NOAUTH_DEFAULT, 120, |reply| {
        reply.body["status"] == "UPDATE_COMPLETE"
    })
    .await;
    let labels = docker(&[
        "node",
        "ls",
        "-q",
        "--filter",
        "node.label=magnum.nodegroup=extra",
    ]);
    assert_eq!(labels.lines().count(), 1, "{labels}");
    let tiers = docker(&["node", "ls", "-q", "--filter", "node.label=tier=batch"]);
    assert_eq!(tiers.lines().count(), 1, "{tiers}");

    ok(&app, &["coe", "cluster", "resize", "real", "2"]).await;
    let resized = app
        .wait_for_cluster(&uuid, NOAUTH_DEFAULT, 120, |reply| {
            reply.body["status"] != "UPDATE_IN_PROGRESS"
        })
        .await
        .body;
    assert_eq!(resized["status"], "UPDATE_COMPLETE", "{resized}");
    let ready = docker(&["node", "ls", "--format", "{{.Status}}"]);
    assert_eq!(
        ready.lines().filter(|line| *line == "Ready").count(),
        4,
        "{ready}"
    );

    ok(&app, &["coe", "nodegroup", "delete", "real", "extra"]).await;
    app.wait_for_cluster(&uuid, NOAUTH_DEFAULT, 120, |reply| {
        reply.body["status"] == "UPDATE_COMPLETE"
    })
    .await;
    let ready = docker(&["node", "ls", "--format", "{{.Status}}"]);
    assert_eq!(ready.lines().count(), 3, "{ready}");

    ok(&app, &["coe", "cluster", "delete", "real"]).await;
    app.wait_for_cluster(&uuid, NOAUTH_DEFAULT, 120, |reply| reply.status == 404)
        .await;
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&namespaces.stdout).contains(&short));
    app.stop().await;
}

/// openstacksdk (the library behind `openstack` and many tools) drives templates and
/// clusters through its own container-infra proxy, unchanged.
#[tokio::test]
async fn openstacksdk_creates_lists_and_deletes_templates_and_clusters() {
    let (app, _driver) = TestApp::spawn_scripted(engines()[0]).await;
    let python = openstack_binary().with_file_name("python");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openstacksdk_lifecycle.py");
    let endpoint = format!("{}/v1", app.base_url);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(endpoint)
            .env_remove("OS_CLOUD")
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("the script's JSON");
    assert_eq!(seen["template_name"], "sdk-template");
    assert_eq!(seen["templates"], serde_json::json!(["sdk-template"]));
    assert_eq!(seen["status"], "CREATE_COMPLETE");
    assert_eq!(seen["node_count"], 2);
    assert_eq!(seen["clusters"], serde_json::json!(["sdk-cluster"]));
    assert_eq!(seen["found"], seen["cluster_id"]);
    assert_eq!(seen["found_name"], "sdk-cluster");
    assert_eq!(seen["clusters_after_delete"], serde_json::json!([]));
    assert_eq!(seen["templates_after_delete"], serde_json::json!([]));
    app.stop().await;
}
