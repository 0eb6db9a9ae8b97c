//! The local driver on this host: real swarm-mode clusters of network namespaces, each node
//! with its own dockerd, reached with TLS from the cluster's CA.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::events::Stream;
use crate::support::{engines, Caller, TestApp, ADMIN};

const OWNER: Caller = Caller {
    project_id: "p-local",
    user_id: "u-local",
    roles: "member,reader",
};

/// Runs `program`, for at most three minutes: a docker command that waits for something that
/// never comes (a service that cannot start) fails the test instead of hanging it.
pub(crate) fn run(program: &str, arguments: &[&str], directory: &Path) -> (bool, String) {
    let output = Command::new("timeout")
        .arg("180")
        .arg(program)
        .args(arguments)
        .current_dir(directory)
        .output()
        .unwrap_or_else(|error| panic!("{program} runs: {error}"));
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// A client certificate signed through the API, written as Docker expects.
async fn client_config(app: &TestApp, cluster: &str, directory: &Path) {
    client_config_of(app, OWNER, cluster, directory).await;
}

/// `caller`'s client certificate for `cluster` (ca.pem, cert.pem, key.pem in `directory`).
pub(crate) async fn client_config_of(
    app: &TestApp,
    caller: Caller,
    cluster: &str,
    directory: &Path,
) {
    let (ok, output) = run(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "client.csr",
            "-subj",
            "/CN=admin",
        ],
        directory,
    );
    assert!(ok, "{output}");
    let csr = std::fs::read_to_string(directory.join("client.csr")).unwrap();
    let signed = app
        .send_at(
            "latest",
            "POST",
            "/v1/certificates",
            caller,
            Some(json!({"cluster_uuid": cluster, "csr": csr})),
        )
        .await;
    assert_eq!(
        signed.status,
        201,
        "{}",
        String::from_utf8_lossy(&signed.raw)
    );
    std::fs::write(
        directory.join("cert.pem"),
        signed.body["pem"].as_str().unwrap(),
    )
    .unwrap();
    let ca = app
        .send_at(
            "latest",
            "GET",
            &format!("/v1/certificates/{cluster}"),
            caller,
            None,
        )
        .await;
    std::fs::write(directory.join("ca.pem"), ca.body["pem"].as_str().unwrap()).unwrap();
}

pub(crate) fn docker(directory: &Path, address: &str, arguments: &[&str]) -> (bool, String) {
    let host = address.to_owned();
    let mut all = vec![
        "--tlsverify",
        "--tlscacert",
        "ca.pem",
        "--tlscert",
        "cert.pem",
        "--tlskey",
        "key.pem",
        "-H",
        host.as_str(),
    ];
    all.extend_from_slice(arguments);
    run("docker", &all, directory)
}

pub(crate) fn leftovers(cluster: &str) -> Vec<String> {
    HostView::read().leftovers(cluster)
}

/// What the host holds that a cluster could leave behind, read once so that many deleted
/// clusters are checked against one reading (the campaign checks every deleted cluster after
/// every trial: one reading each made that check grow with the clusters deleted).
pub(crate) struct HostView {
    links: String,
    namespaces: String,
    processes: String,
    mounts: String,
    cgroups: Vec<String>,
    tables: String,
    claims: Vec<(String, String)>,
    sockets: Vec<String>,
}

impl HostView {
    pub(crate) fn read() -> Self {
        let listing = |directory: &str| -> Vec<std::path::PathBuf> {
            std::fs::read_dir(directory)
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
                .collect()
        };
        let mut cgroups = Vec::new();
        for hierarchy in listing("/sys/fs/cgroup") {
            for entry in listing(&hierarchy.display().to_string()) {
                cgroups.push(entry.display().to_string());
            }
        }
        let mut claims = Vec::new();
        for kind in listing("/var/lib/magnum-local/claims") {
            for claim in listing(&kind.display().to_string()) {
                if let Ok(owner) = std::fs::read_link(&claim) {
                    claims.push((claim.display().to_string(), owner.display().to_string()));
                }
            }
        }
        HostView {
            links: run("ip", &["-br", "link"], Path::new("/")).1,
            namespaces: run("ip", &["netns", "list"], Path::new("/")).1,
            processes: run("ps", &["-eo", "pid=,args="], Path::new("/")).1,
            mounts: std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            cgroups,
            tables: run("nft", &["list", "tables"], Path::new("/")).1,
            claims,
            sockets: listing("/run/magnum-local")
                .iter()
                .map(|path| path.display().to_string())
                .collect(),
        }
    }

    /// Everything of `cluster` still on the host: links, namespaces, node processes, mounts,
    /// cgroups, the firewall table, host-wide claims (uid ranges, subnets, names) and the
    /// nodes' docker.sock directories.
    pub(crate) fn leftovers(&self, cluster: &str) -> Vec<String> {
        let short: String = cluster.replace('-', "")[..8].to_owned();
        let lines_with = |text: &str, needle: &str| -> Vec<String> {
            text.lines()
                .filter(|line| line.contains(needle))
                .map(str::to_owned)
                .collect()
        };
        let mut found = lines_with(&self.links, &short[..6]);
        found.extend(lines_with(&self.namespaces, &short));
        found.extend(
            lines_with(&self.processes, &short)
                .into_iter()
                .filter(|line| line.contains("dockerd")),
        );
        found.extend(lines_with(&self.mounts, cluster));
        found.extend(lines_with(&self.processes, cluster));
        let cgroup_prefix = format!("magnum-{short}-");
        found.extend(
            self.cgroups
                .iter()
                .filter(|path| {
                    Path::new(path)
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with(&cgroup_prefix))
                })
                .cloned(),
        );
        found.extend(lines_with(&self.tables, &short));
        for (claim, owner) in &self.claims {
            if owner.contains(cluster) {
                found.push(format!("claim {claim} → {owner}"));
            }
        }
        let socket_prefix = format!("{short}-");
        found.extend(
            self.sockets
                .iter()
                .filter(|path| {
                    Path::new(path)
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with(&socket_prefix))
                })
                .cloned(),
        );
        found
    }
}

/// What the driver keeps of `cluster` in `state` (its records and node directories).
pub(crate) fn state_leftovers(state: &Path, cluster: &str) -> Vec<String> {
    let directory = state.join("local-driver/clusters").join(cluster);
    if directory.exists() {
        vec![directory.display().to_string()]
    } else {
        Vec::new()
    }
}

/// Runs `body`; whatever happens, the clusters it made are deleted before the test ends, so
/// that a failing test leaves nothing running on the host.
async fn guarded<F, Fut>(app: TestApp, body: F)
where
    F: FnOnce(Arc<TestApp>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let app = Arc::new(app);
    let outcome = tokio::spawn(body(app.clone())).await;
    if outcome.is_err() {
        // An API-only app (it has the key file its peers share) lost its conductors with the
        // body: one more, on the same state, does the deleting.
        let cleaner = if app.key_file().exists() {
            let scratch = app.notifications.parent().unwrap().to_owned();
            let cleaner = app
                .start_peer_conductor_with("conductor-cleanup", &[], move |config| {
                    config.server.state_dir = Some(scratch);
                    config.drivers.local.authz_binary = Some(std::path::PathBuf::from(env!(
                        "CARGO_BIN_EXE_magnum-node-authz"
                    )));
                })
                .await;
            Some(cleaner)
        } else {
            None
        };
        let listed = app
            .send_at("latest", "GET", "/v1/clusters", OWNER, None)
            .await;
        for cluster in listed.body["clusters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let uuid = cluster["uuid"].as_str().unwrap_or_default().to_owned();
            app.delete(&format!("/v1/clusters/{uuid}"), OWNER).await;
            app.wait_for_cluster(&uuid, OWNER, 120, |reply| reply.status == 404)
                .await;
        }
        if let Some(cleaner) = cleaner {
            cleaner.stop().await;
        }
    }
    let app = Arc::try_unwrap(app)
        .ok()
        .expect("the test body is done with the app");
    app.stop().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

#[tokio::test]
async fn a_real_swarm_cluster_is_built_reached_with_tls_scaled_and_deleted() {
    let engine = engines()[0];
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.drivers.local.network_pool = "10.91.0.0/16".to_owned();
    })
    .await;
    guarded(app, |app| async move { tls_cluster_life(&app).await }).await;
}

async fn tls_cluster_life(app: &TestApp) {
    app.create_template(OWNER, json!({"name": "swarm"})).await;
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            OWNER,
            Some(json!({"cluster_template_id": "swarm", "name": "real", "node_count": 2})),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    // One stream follows the whole life, from the create's first event (committed with the
    // request, before a cluster's stream can be opened: hence from sequence 0) to the
    // deletion, read on the side while the steps below go on.
    let mut stream = Stream::open(
        &app.base_url,
        &format!("/v1/clusters/{uuid}/events?watch=true"),
        OWNER,
        Some(0),
    )
    .await;
    let streamed = tokio::spawn(async move {
        stream
            .until(std::time::Duration::from_secs(1_800), |frame| {
                frame.event == "end"
            })
            .await
    });
    let cluster: Value = app
        .wait_for_cluster(&uuid, OWNER, 180, |reply| {
            reply.body["status"] == "CREATE_COMPLETE" || reply.body["status"] == "CREATE_FAILED"
        })
        .await
        .body;
    assert_eq!(cluster["status"], "CREATE_COMPLETE", "{cluster}");
    // Its steps were timed: a start per node, one swarm init, a join per other node.
    let metrics = app.send("GET", "/metrics", None, &[], None).await;
    let text = String::from_utf8_lossy(&metrics.raw);
    for (step, at_least) in [
        ("node_start", 3.0),
        ("swarm_init", 1.0),
        ("swarm_join", 2.0),
    ] {
        let series = format!(
            "magnum_driver_step_duration_seconds_count{{driver=\"local\",step=\"{step}\",outcome=\"succeeded\"}}"
        );
        let count = crate::support::sample(&text, &series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(count >= at_least, "{series} = {count}");
    }
    let address = cluster["api_address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("tcp://10.91."), "{address}");
    assert!(address.ends_with(":2376"));
    assert_eq!(cluster["master_addresses"].as_array().unwrap().len(), 1);
    assert_eq!(cluster["node_addresses"].as_array().unwrap().len(), 2);
    assert!(cluster["coe_version"].as_str().unwrap().starts_with("20."));

    let work = tempfile::tempdir().unwrap();
    client_config(app, &uuid, work.path()).await;
    let (ok, nodes) = docker(
        work.path(),
        &address,
        &["node", "ls", "--format", "{{.Status}} {{.Hostname}}"],
    );
    assert!(ok, "{nodes}");
    assert_eq!(
        nodes
            .lines()
            .filter(|line| line.starts_with("Ready"))
            .count(),
        3,
        "{nodes}"
    );
    // Without a certificate of this CA, the cluster refuses.
    let (ok, _) = run("docker", &["-H", &address, "node", "ls"], work.path());
    assert!(!ok);
    // A replicated service lands a task on every node.
    let (ok, output) = docker(
        work.path(),
        &address,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "--endpoint-mode",
            "dnsrr",
            "--no-resolve-image",
            "--init",
            "magnum/local-node:1",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ],
    );
    assert!(ok, "{output}");
    let (_, tasks) = docker(
        work.path(),
        &address,
        &[
            "service",
            "ps",
            "web",
            "--format",
            "{{.Node}} {{.CurrentState}}",
        ],
    );
    let running: Vec<&str> = tasks
        .lines()
        .filter(|line| line.contains("Running"))
        .collect();
    let mut hosts: Vec<&str> = running
        .iter()
        .map(|line| line.split(' ').next().unwrap())
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "{tasks}");
    let (ok, output) = docker(work.path(), &address, &["service", "rm", "web"]);
    assert!(ok, "{output}");

    // CA rotation: the old client certificate is refused, a new one works.
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &format!("/v1/certificates/{uuid}"),
            OWNER,
            None,
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let cluster = app
        .wait_for_cluster(&uuid, OWNER, 180, |reply| {
            reply.body["status"] != "UPDATE_IN_PROGRESS"
        })
        .await
        .body;
    assert_eq!(cluster["status"], "UPDATE_COMPLETE", "{cluster}");
    let (ok, _) = docker(work.path(), &address, &["node", "ls"]);
    assert!(!ok, "a certificate of the old CA must be refused");
    client_config(app, &uuid, work.path()).await;
    let (ok, output) = docker(work.path(), &address, &["node", "ls"]);
    assert!(ok, "{output}");

    // Scale out to 3 workers and back in to 1.
    let path = format!("/v1/clusters/{uuid}");
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &path,
            OWNER,
            Some(json!([{"op": "replace", "path": "/node_count", "value": 3}])),
        )
        .await;
    assert_eq!(reply.status, 202);
    let cluster = app
        .wait_for_cluster(&uuid, OWNER, 180, |reply| {
            reply.body["status"] != "UPDATE_IN_PROGRESS"
        })
        .await
        .body;
    assert_eq!(cluster["status"], "UPDATE_COMPLETE", "{cluster}");
    let (_, nodes) = docker(
        work.path(),
        &address,
        &["node", "ls", "--format", "{{.Status}}"],
    );
    assert_eq!(
        nodes.lines().filter(|line| *line == "Ready").count(),
        4,
        "{nodes}"
    );
    let reply = app
        .send_at(
            "latest",
            "POST",
            &format!("{path}/actions/resize"),
            OWNER,
            Some(json!({"node_count": 1})),
        )
        .await;
    assert_eq!(reply.status, 202);
    let cluster = app
        .wait_for_cluster(&uuid, OWNER, 120, |reply| {
            reply.body["status"] != "UPDATE_IN_PROGRESS"
        })
        .await
        .body;
    assert_eq!(cluster["status"], "UPDATE_COMPLETE", "{cluster}");
    assert_eq!(cluster["node_addresses"].as_array().unwrap().len(), 1);
    let (_, nodes) = docker(
        work.path(),
        &address,
        &["node", "ls", "--format", "{{.Status}}"],
    );
    assert_eq!(nodes.lines().count(), 2, "{nodes}");

    // Delete: nothing is left on the host.
    assert_eq!(app.delete(&path, OWNER).await.status, 204);
    app.wait_for_cluster(&uuid, OWNER, 180, |reply| reply.status == 404)
        .await;
    assert_eq!(leftovers(&uuid), Vec::<String>::new());

    // The cluster's life, as its events tell it (readable after the deletion).
    let events = app.get(&format!("{path}/events"), OWNER).await;
    assert_eq!(events.status, 200);
    let told: Vec<(String, String)> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["reason"].as_str().unwrap().to_owned(),
                event["node"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("CreateStarted", ""),
        ("NodeStarted", "n1"),
        ("SwarmInitialized", "n1"),
        ("NodeStarted", "n2"),
        ("SwarmJoined", "n2"),
        ("NodeStarted", "n3"),
        ("SwarmJoined", "n3"),
        ("NodeReady", "n1"),
        ("CreateCompleted", ""),
        ("UpdateStarted", ""),
        ("CARotated", ""),
        ("UpdateCompleted", ""),
        ("ScaledOut", ""),
        ("UpdateStarted", ""),
        ("NodeStarted", "n4"),
        ("SwarmJoined", "n4"),
        ("NodeReady", "n4"),
        ("UpdateCompleted", ""),
        ("ScaledIn", ""),
        ("UpdateStarted", ""),
        ("NodeRemoving", ""),
        ("UpdateCompleted", ""),
        ("DeleteStarted", ""),
        ("Deleted", ""),
    ];
    let mut rest = told.iter();
    for (reason, node) in expected {
        assert!(
            rest.any(|(told_reason, told_node)| told_reason == reason
                && (node.is_empty() || told_node == node)),
            "{reason} {node} missing or out of order in {told:?}"
        );
    }

    // The stream held through it all ended with the deletion, and showed every listed event
    // once, in order: nothing lost, nothing twice.
    assert!(events.body["next"].is_null(), "one page: {}", events.body);
    let frames = tokio::time::timeout(std::time::Duration::from_secs(60), streamed)
        .await
        .expect("the stream ends after the deletion")
        .expect("the stream is read to its end");
    let end = frames.last().expect("an end");
    assert_eq!(end.event, "end", "{end:?}");
    assert_eq!(end.data["reason"], "cluster_deleted", "{end:?}");
    let streamed_ids: Vec<i64> = frames
        .iter()
        .filter(|frame| frame.event == "cluster_event")
        .map(|frame| {
            assert_eq!(frame.id, frame.data["sequence"].as_i64(), "{frame:?}");
            frame.id.expect("an id")
        })
        .collect();
    let listed_ids: Vec<i64> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(streamed_ids, listed_ids, "{told:?}");
    assert_eq!(end.id, listed_ids.last().copied(), "{end:?}");
}

#[tokio::test]
async fn three_managers_and_a_worker_without_tls() {
    let engine = engines()[0];
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.drivers.local.network_pool = "10.92.0.0/16".to_owned();
    })
    .await;
    guarded(app, |app| async move { plain_cluster_life(&app).await }).await;
}

async fn plain_cluster_life(app: &TestApp) {
    app.create_template(
        OWNER,
        json!({"name": "plain", "tls_disabled": true, "master_lb_enabled": true}),
    )
    .await;
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            OWNER,
            Some(json!({"cluster_template_id": "plain", "master_count": 3, "node_count": 1})),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    let cluster = app
        .wait_for_cluster(&uuid, OWNER, 120, |reply| {
            reply.body["status"] != "CREATE_IN_PROGRESS"
        })
        .await
        .body;
    assert_eq!(cluster["status"], "CREATE_COMPLETE", "{cluster}");
    let address = cluster["api_address"].as_str().unwrap().to_owned();
    assert!(address.ends_with(":2375"), "{address}");
    let (ok, nodes) = run(
        "docker",
        &[
            "-H",
            &address,
            "node",
            "ls",
            "--format",
            "{{.Status}} {{.ManagerStatus}}",
        ],
        Path::new("/"),
    );
    assert!(ok, "{nodes}");
    assert_eq!(
        nodes
            .lines()
            .filter(|line| line.starts_with("Ready"))
            .count(),
        4,
        "{nodes}"
    );
    let managers = nodes
        .lines()
        .filter(|line| line.contains("Leader") || line.contains("Reachable"))
        .count();
    assert_eq!(managers, 3, "{nodes}");

    // A worker whose daemons hang (frozen, not dead: the health monitor sees a process) is
    // restarted by the next change that waits for every node, which then completes.
    let netns = format!("mc{}-n4", &uuid.replace('-', "")[..8]);
    let (ok, pids) = run("ip", &["netns", "pids", &netns], Path::new("/"));
    assert!(ok && !pids.trim().is_empty(), "{netns}: {pids}");
    for pid in pids.split_whitespace() {
        run("kill", &["-STOP", pid], Path::new("/"));
    }
    // The managers notice once its heartbeats stop.
    let mut down = false;
    for _ in 0..120 {
        let (_, statuses) = run(
            "docker",
            &["-H", &address, "node", "ls", "--format", "{{.Status}}"],
            Path::new("/"),
        );
        if statuses.lines().any(|line| line == "Down") {
            down = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(down, "the frozen worker is never seen Down");
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &format!("/v1/clusters/{uuid}"),
            OWNER,
            Some(json!([{"op": "replace", "path": "/node_count", "value": 2}])),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let cluster = app
        .wait_for_cluster(&uuid, OWNER, 180, |reply| {
            reply.body["status"] != "UPDATE_IN_PROGRESS"
        })
        .await
        .body;
    assert_eq!(cluster["status"], "UPDATE_COMPLETE", "{cluster}");
    let (_, after) = run("ip", &["netns", "pids", &netns], Path::new("/"));
    assert!(
        pids.split_whitespace()
            .all(|pid| !after.split_whitespace().any(|now| now == pid)),
        "the frozen worker's processes were replaced: before {pids}, after {after}"
    );
    let (ok, nodes) = run(
        "docker",
        &["-H", &address, "node", "ls", "--format", "{{.Status}}"],
        Path::new("/"),
    );
    assert!(ok, "{nodes}");
    assert_eq!(
        nodes.lines().filter(|line| *line == "Ready").count(),
        5,
        "{nodes}"
    );
    assert_eq!(
        app.delete(&format!("/v1/clusters/{uuid}"), OWNER)
            .await
            .status,
        204
    );
    app.wait_for_cluster(&uuid, OWNER, 180, |reply| reply.status == 404)
        .await;
    assert_eq!(leftovers(&uuid), Vec::<String>::new());
}

#[tokio::test]
async fn health_follows_the_nodes_and_auto_healing_brings_a_dead_node_back() {
    let engine = engines()[0];
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.drivers.local.network_pool = "10.93.0.0/16".to_owned();
    })
    .await;
    guarded(app, |app| async move { healing(&app).await }).await;
}

async fn healing(app: &TestApp) {
    app.create_template(OWNER, json!({"name": "heal"})).await;
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            OWNER,
            Some(json!({"cluster_template_id": "heal", "name": "h", "node_count": 1, "labels": {"auto_healing_enabled": "true"}})),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    let cluster = app
        .wait_for_cluster(&uuid, OWNER, 180, |reply| {
            reply.body["status"] != "CREATE_IN_PROGRESS"
        })
        .await
        .body;
    assert_eq!(cluster["status"], "CREATE_COMPLETE", "{cluster}");
    let healthy = app
        .wait_for_cluster(&uuid, OWNER, 20, |reply| {
            reply.body["health_status"] == "HEALTHY"
        })
        .await
        .body;
    assert_eq!(healthy["health_status_reason"]["api"], "ok");
    assert_eq!(
        healthy["health_status_reason"]["h-n2.Ready"], "True",
        "{healthy}"
    );
    let state_dir = app
        .notifications
        .parent()
        .unwrap()
        .join("local-driver/clusters")
        .join(&uuid);
    // The worker dies: its sandbox's first process and with it every process of the node.
    let pid = std::fs::read_to_string(state_dir.join("n2/node.pid")).unwrap();
    let (ok, output) = run("kill", &["-KILL", pid.trim()], Path::new("/"));
    assert!(ok, "{output}");
    let unhealthy = app
        .wait_for_cluster(&uuid, OWNER, 20, |reply| {
            reply.body["health_status"] == "UNHEALTHY"
        })
        .await
        .body;
    assert_eq!(
        unhealthy["health_status_reason"]["h-n2.Ready"], "False",
        "{unhealthy}"
    );
    // Auto-healing restarts it and the cluster is healthy again.
    let healed = app
        .wait_for_cluster(&uuid, OWNER, 60, |reply| {
            reply.body["health_status"] == "HEALTHY"
        })
        .await
        .body;
    assert_eq!(healed["health_status_reason"]["h-n2.Ready"], "True");
    // The manager dies in the middle of changes (auto-healing waits while a change holds the
    // cluster): the change brings it back instead of failing. First while a new worker starts
    // and will need the manager to join, then while a removal waits for the rest to be Ready.
    for (workers, moment) in [(2, "n3/node.pid"), (1, "")] {
        let reply = app
            .patch(
                &format!("/v1/clusters/{uuid}"),
                OWNER,
                json!([{"op": "replace", "path": "/node_count", "value": workers}]),
            )
            .await;
        assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !moment.is_empty() && !state_dir.join(moment).exists() {
            assert!(std::time::Instant::now() < deadline, "{moment} never came");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let manager = std::fs::read_to_string(state_dir.join("n1/node.pid")).unwrap();
        let (ok, output) = run("kill", &["-KILL", manager.trim()], Path::new("/"));
        assert!(ok, "{output}");
        let changed = app
            .wait_for_cluster(&uuid, OWNER, 240, |reply| {
                reply.body["status"] != "UPDATE_IN_PROGRESS"
            })
            .await
            .body;
        assert_eq!(changed["status"], "UPDATE_COMPLETE", "{changed}");
        assert_eq!(changed["node_count"], workers, "{changed}");
        let restarted = std::fs::read_to_string(state_dir.join("n1/node.pid")).unwrap();
        assert_ne!(restarted, manager, "the change restarted the manager");
        let reported = app
            .wait_for_cluster(&uuid, OWNER, 30, |reply| {
                reply.body["health_status"] == "HEALTHY"
            })
            .await
            .body;
        assert_eq!(reported["health_status_reason"]["h-n1.Ready"], "True");
    }
    // An admin's force delete: the records go at once, and the nodes right after them.
    assert_eq!(
        app.delete(&format!("/v1/clusters/{uuid}?force=true"), ADMIN)
            .await
            .status,
        204
    );
    assert_eq!(
        app.send_at(
            "latest",
            "GET",
            &format!("/v1/clusters/{uuid}"),
            OWNER,
            None
        )
        .await
        .status,
        404
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let left = leftovers(&uuid);
        let kept = state_leftovers(app.notifications.parent().unwrap(), &uuid);
        if left.is_empty() && kept.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a force-deleted cluster left {left:?} {kept:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A forced delete whose teardown died with its API process leaves the nodes without records;
/// the conductor holding the cluster's monitor lease sees the deletion recorded (its events
/// outlive it) and releases them.
#[tokio::test]
async fn a_force_deleted_clusters_nodes_are_released_when_its_teardown_died() {
    let engine = engines()[0];
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.drivers.local.network_pool = "10.86.0.0/16".to_owned();
    })
    .await;
    guarded(app, |app| async move { orphaned(&app).await }).await;
}

async fn orphaned(app: &TestApp) {
    app.create_template(OWNER, json!({"name": "orphan"})).await;
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            OWNER,
            Some(json!({"cluster_template_id": "orphan", "name": "o", "node_count": 1})),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    let cluster = app
        .wait_for_cluster(&uuid, OWNER, 180, |reply| {
            reply.body["status"] != "CREATE_IN_PROGRESS"
        })
        .await
        .body;
    assert_eq!(cluster["status"], "CREATE_COMPLETE", "{cluster}");
    let state = app.notifications.parent().unwrap().to_owned();
    assert!(!state_leftovers(&state, &uuid).is_empty());
    assert!(!leftovers(&uuid).is_empty(), "its nodes run");
    // The records go as a forced delete takes them, and nothing else happens: the process
    // that was to tear the nodes down is gone.
    let store = magnum_store::Store::connect(&app.database_url, 1)
        .await
        .unwrap();
    let purged = store
        .purge_cluster(uuid.parse().unwrap(), &magnum_domain::event::Cause::none())
        .await
        .unwrap();
    store.close().await;
    assert!(purged);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (left, kept) = (leftovers(&uuid), state_leftovers(&state, &uuid));
        if left.is_empty() && kept.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            // Nothing else would remove them (the cluster is listed nowhere): by hand, so
            // that the host is left as found, then fail.
            scrub(&uuid, &state);
            panic!("the nodes of a cluster whose records are gone remain: {left:?} {kept:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Removes by hand what a local cluster holds on the host (processes, namespaces, links, its
/// firewall table, cgroups, claims, directories), for a test that failed to.
fn scrub(cluster: &str, state: &Path) {
    let short: String = cluster.replace('-', "")[..8].to_owned();
    // pkill on its own: a shell whose script names the cluster would kill itself.
    let _ = Command::new("pkill")
        .args(["-9", "-f", &format!("clusters/{cluster}")])
        .output();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let script = format!(
        "for ns in $(ip netns list | awk '{{print $1}}' | grep {short}) ; do ip netns del $ns ; done ; \
         for link in $(ip -o link | grep -o '[a-z]*{six}[a-z0-9]*' | sort -u) ; do ip link del $link ; done ; \
         nft delete table inet magnum_{short} ; \
         for group in /sys/fs/cgroup/*/magnum-{short}-* ; do rmdir $group/containers $group ; done ; \
         find /var/lib/magnum-local/claims -lname '*{cluster}*' -delete ; \
         rm -rf /run/magnum-local/{short}-* '{directory}'",
        six = &short[..6],
        directory = state.join("local-driver/clusters").join(cluster).display(),
    );
    let _ = Command::new("sh").arg("-c").arg(script).output();
}

/// Kills the dockerd of a node of `cluster` (the process itself, inside the node: its
/// docker-init and with it the node's PID namespace end).
fn kill_dockerd(cluster: &str, node: &str) {
    let netns = format!("mc{}-{node}", &cluster.replace('-', "")[..8]);
    let (ok, pids) = run("ip", &["netns", "pids", &netns], Path::new("/"));
    assert!(ok, "{pids}");
    let dockerd: Vec<&str> = pids
        .split_whitespace()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim() == "dockerd")
        })
        .collect();
    assert_eq!(dockerd.len(), 1, "one dockerd in {netns}: {pids}");
    let (ok, output) = run("kill", &["-KILL", dockerd[0]], Path::new("/"));
    assert!(ok, "{output}");
}

/// The cluster's events with `reason`.
async fn events_with_reason(app: &TestApp, cluster: &str, reason: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/v1/clusters/{cluster}/events?limit=1000"), OWNER)
        .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.raw));
    reply.body["events"]
        .as_array()
        .expect("an events list")
        .iter()
        .filter(|event| event["reason"] == reason)
        .cloned()
        .collect()
}

/// How many HealthChanged warnings of the cluster say that `node_key` is not Ready.
async fn unhealthy_warnings(app: &TestApp, cluster: &str, node_key: &str) -> usize {
    let not_ready = format!("{node_key}: False");
    events_with_reason(app, cluster, "HealthChanged")
        .await
        .iter()
        .filter(|event| {
            event["type"] == "Warning"
                && event["message"]
                    .as_str()
                    .is_some_and(|message| message.contains(&not_ready))
        })
        .count()
}

/// Polls until the cluster reads UNHEALTHY with `node` not Ready and a HealthChanged warning
/// says so; returns how long that took from `since`.
async fn until_told_unhealthy(
    app: &TestApp,
    cluster: &str,
    node_key: &str,
    warnings_before: usize,
    since: std::time::Instant,
    within: std::time::Duration,
) -> std::time::Duration {
    loop {
        let reply = app
            .send_at(
                "latest",
                "GET",
                &format!("/v1/clusters/{cluster}"),
                OWNER,
                None,
            )
            .await;
        let unhealthy = reply.body["health_status"] == "UNHEALTHY"
            && reply.body["health_status_reason"][node_key] == "False";
        if unhealthy {
            let warnings = unhealthy_warnings(app, cluster, node_key).await;
            if warnings > warnings_before {
                return since.elapsed();
            }
        }
        assert!(
            since.elapsed() < within + std::time::Duration::from_secs(10),
            "not told UNHEALTHY in time: {}",
            reply.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads `stream` until a `HealthChanged` event says the cluster is HEALTHY again; returns
/// the cluster events read.
async fn stream_until_healthy(stream: &mut Stream) -> Vec<Value> {
    stream
        .until(std::time::Duration::from_secs(60), |frame| {
            frame.data["reason"] == "HealthChanged" && frame.data["type"] == "Normal"
        })
        .await
        .into_iter()
        .filter(|frame| frame.event == "cluster_event")
        .map(|frame| frame.data)
        .collect()
}

/// `events` tell a heal in order: a `HealthChanged` warning that `node_key` is not Ready,
/// then `NodeRestarted` of `node`, then `HealthChanged` back to HEALTHY.
fn assert_heal_told(events: &[Value], node_key: &str, node: &str) {
    let not_ready = format!("{node_key}: False");
    let told: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|event| {
            (
                event["reason"].as_str().unwrap_or_default(),
                event["type"].as_str().unwrap_or_default(),
                event["message"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let warned = events.iter().position(|event| {
        event["reason"] == "HealthChanged"
            && event["type"] == "Warning"
            && event["message"]
                .as_str()
                .is_some_and(|message| message.contains(&not_ready))
    });
    let restarted = warned.and_then(|warned| {
        events
            .iter()
            .skip(warned + 1)
            .position(|event| event["reason"] == "NodeRestarted" && event["node"] == node)
            .map(|offset| warned + 1 + offset)
    });
    let recovered = restarted.and_then(|restarted| {
        events.iter().skip(restarted + 1).position(|event| {
            event["reason"] == "HealthChanged"
                && event["type"] == "Normal"
                && event["message"]
                    .as_str()
                    .is_some_and(|message| message.starts_with("Health is HEALTHY"))
        })
    });
    assert!(
        recovered.is_some(),
        "not told in order (warning {warned:?}, restart {restarted:?}): {told:?}"
    );
}

/// Health is pushed: a node's dockerd dies and, within a second, the cluster reads UNHEALTHY
/// and a HealthChanged warning is listed. With two conductors on one database and host, the
/// one holding the cluster's monitor lease heals it, once; when that conductor dies, the
/// other takes the cluster over within the lease.
#[tokio::test]
async fn a_dead_node_is_told_within_a_second_and_one_conductor_of_two_heals_it() {
    let engine = engines()[0];
    let app = TestApp::spawn_with(engine, magnumd::Role::Api, |config| {
        config.drivers.local.network_pool = "10.97.0.0/16".to_owned();
    })
    .await;
    guarded(app, |app| async move { pushed_health(&app).await }).await;
}

async fn pushed_health(app: &TestApp) {
    let scratch = app.notifications.parent().unwrap().to_owned();
    let lease = std::time::Duration::from_secs(3);
    let peer = |host: &'static str| {
        let scratch = scratch.clone();
        app.start_peer_conductor_with(host, &[], move |config| {
            config.server.state_dir = Some(scratch);
            config.conductor.lease = lease.as_secs();
            config.drivers.local.network_pool = "10.97.0.0/16".to_owned();
            config.drivers.local.authz_binary = Some(std::path::PathBuf::from(env!(
                "CARGO_BIN_EXE_magnum-node-authz"
            )));
        })
    };
    // The first conductor builds the cluster and takes its monitor lease.
    let first = peer("conductor-first").await;
    app.create_template(OWNER, json!({"name": "push"})).await;
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            OWNER,
            Some(
                json!({"cluster_template_id": "push", "name": "p", "node_count": 1,
                "labels": {"auto_healing_enabled": "true"}}),
            ),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    let cluster = app
        .wait_for_cluster(&uuid, OWNER, 180, |reply| {
            reply.body["status"] != "CREATE_IN_PROGRESS"
        })
        .await
        .body;
    assert_eq!(cluster["status"], "CREATE_COMPLETE", "{cluster}");
    app.wait_for_cluster(&uuid, OWNER, 20, |reply| {
        reply.body["health_status"] == "HEALTHY"
    })
    .await;
    // The second conductor runs beside it, long enough to have tried to take the lease.
    let second = peer("conductor-second").await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let store = magnum_store::Store::connect(&app.database_url, 1)
        .await
        .unwrap();
    let cluster_uuid: uuid::Uuid = uuid.parse().unwrap();
    let holder = store.monitor_holder(cluster_uuid).await.unwrap();
    let holder = holder.map(|holder| holder.owner).unwrap_or_default();
    assert!(
        holder.starts_with("conductor-first/"),
        "the builder holds the lease: {holder:?}"
    );
    // Followed live from before the kill: the heal's story as a client sees it.
    let mut stream = Stream::open(
        &app.base_url,
        &format!("/v1/clusters/{uuid}/events?watch=true"),
        OWNER,
        None,
    )
    .await;

    let warnings = unhealthy_warnings(app, &uuid, "p-n2.Ready").await;
    let killed = std::time::Instant::now();
    kill_dockerd(&uuid, "n2");
    let told = until_told_unhealthy(
        app,
        &uuid,
        "p-n2.Ready",
        warnings,
        killed,
        std::time::Duration::from_secs(1),
    )
    .await;
    println!(
        "a dead node's dockerd: UNHEALTHY and its HealthChanged event {} ms after the kill",
        told.as_millis()
    );
    assert!(
        told < std::time::Duration::from_secs(1),
        "told after {told:?}"
    );
    // Healed by the lease holder only: one restart, while both conductors run.
    app.wait_for_cluster(&uuid, OWNER, 60, |reply| {
        reply.body["health_status"] == "HEALTHY"
    })
    .await;
    tokio::time::sleep(lease).await;
    let restarts = events_with_reason(app, &uuid, "NodeRestarted").await;
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert_eq!(restarts[0]["node"], "n2", "{restarts:?}");
    let healed = stream_until_healthy(&mut stream).await;
    assert_heal_told(&healed, "p-n2.Ready", "n2");
    // Still the first's: the second never held it while the first renewed.
    let holder = store.monitor_holder(cluster_uuid).await.unwrap();
    let holder = holder.map(|holder| holder.owner).unwrap_or_default();
    assert!(holder.starts_with("conductor-first/"), "{holder:?}");

    // The holder dies (aborted: it hands nothing back); the other takes the cluster over
    // once the lease has run out, and heals the node killed meanwhile.
    first.abort().await;
    let aborted = std::time::Instant::now();
    let warnings = unhealthy_warnings(app, &uuid, "p-n2.Ready").await;
    kill_dockerd(&uuid, "n2");
    let taken_over = until_told_unhealthy(app, &uuid, "p-n2.Ready", warnings, aborted, lease).await;
    println!(
        "the other conductor took the cluster over {} ms after the holder died (lease {} s)",
        taken_over.as_millis(),
        lease.as_secs()
    );
    // The lease, up to a second of rounding (leases end on whole seconds), one lease pass
    // (600 ms) and a look.
    assert!(
        taken_over < lease + std::time::Duration::from_millis(2_500),
        "taken over after {taken_over:?}"
    );
    app.wait_for_cluster(&uuid, OWNER, 60, |reply| {
        reply.body["health_status"] == "HEALTHY"
    })
    .await;
    assert_eq!(
        events_with_reason(app, &uuid, "NodeRestarted").await.len(),
        2
    );
    let healed = stream_until_healthy(&mut stream).await;
    assert_heal_told(&healed, "p-n2.Ready", "n2");
    // Handed over: the second holds the lease now, and it runs (renewed).
    let holder = store
        .monitor_holder(cluster_uuid)
        .await
        .unwrap()
        .expect("a holder");
    assert!(
        holder.owner.starts_with("conductor-second/"),
        "{}",
        holder.owner
    );
    assert!(
        holder.lease_until.unix_seconds() >= magnum_domain::time::Timestamp::now().unix_seconds(),
        "{holder:?}"
    );
    store.close().await;

    assert_eq!(
        app.delete(&format!("/v1/clusters/{uuid}"), OWNER)
            .await
            .status,
        204
    );
    app.wait_for_cluster(&uuid, OWNER, 120, |reply| reply.status == 404)
        .await;
    second.stop().await;
    assert_eq!(leftovers(&uuid), Vec::<String>::new());
}

/// Plain `docker -H address` (a cluster whose template disables TLS).
fn plain_docker(address: &str, arguments: &[&str]) -> (bool, String) {
    let mut all = vec!["-H", address];
    all.extend_from_slice(arguments);
    run("docker", &all, Path::new("/"))
}

/// Waits until every task of `service` runs, each on its own node; returns the nodes.
async fn until_spread(address: &str, service: &str, replicas: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (_, tasks) = plain_docker(
            address,
            &[
                "service",
                "ps",
                service,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Node}} {{.CurrentState}}",
            ],
        );
        let mut hosts: Vec<String> = tasks
            .lines()
            .filter(|line| line.contains(" Running "))
            .filter_map(|line| line.split(' ').next())
            .map(str::to_owned)
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        if hosts.len() == replicas {
            return hosts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{service} is not back at full strength: {tasks}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Healing by replacement: a worker whose network namespace is deleted, then one whose
/// dockerd's state is corrupted before it dies (so that a restart cannot bring it back), are
/// each replaced by a new node of their nodegroup; the old node leaves the swarm and the host,
/// the service is back at full strength and the cluster HEALTHY.
#[tokio::test]
async fn a_broken_worker_is_replaced_and_its_service_is_back_at_full_strength() {
    let engine = engines()[0];
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.drivers.local.network_pool = "10.90.0.0/16".to_owned();
    })
    .await;
    guarded(app, |app| async move { replacement(&app).await }).await;
}

async fn replacement(app: &TestApp) {
    app.create_template(OWNER, json!({"name": "mend", "tls_disabled": true}))
        .await;
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            OWNER,
            Some(
                json!({"cluster_template_id": "mend", "name": "m", "node_count": 2,
                "labels": {"auto_healing_enabled": "true"}}),
            ),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    let cluster = app
        .wait_for_cluster(&uuid, OWNER, 180, |reply| {
            reply.body["status"] != "CREATE_IN_PROGRESS"
        })
        .await
        .body;
    assert_eq!(cluster["status"], "CREATE_COMPLETE", "{cluster}");
    app.wait_for_cluster(&uuid, OWNER, 30, |reply| {
        reply.body["health_status"] == "HEALTHY"
    })
    .await;
    let address = cluster["api_address"].as_str().unwrap().to_owned();
    let (ok, output) = plain_docker(
        &address,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "--endpoint-mode",
            "dnsrr",
            "--no-resolve-image",
            "--init",
            "magnum/local-node:1",
            "sleep",
            "100000",
        ],
    );
    assert!(ok, "{output}");
    until_spread(&address, "web", 3).await;
    let short = uuid.replace('-', "")[..8].to_owned();
    let state_dir = app
        .notifications
        .parent()
        .unwrap()
        .join("local-driver/clusters")
        .join(&uuid);

    // 1. A worker's network namespace is deleted: it can neither be reached nor restarted
    // in place, so it is replaced.
    let broken = std::time::Instant::now();
    let (ok, output) = run(
        "ip",
        &["netns", "del", &format!("mc{short}-n3")],
        Path::new("/"),
    );
    assert!(ok, "{output}");
    let replaced = until_replaced(app, &uuid, "n3", "its network namespace is gone").await;
    println!(
        "a worker's network namespace deleted: replaced, Ready and the cluster HEALTHY {} ms later",
        broken.elapsed().as_millis()
    );
    assert_eq!(replaced["node_count"], 2, "{replaced}");
    assert_eq!(
        replaced["health_status_reason"]["m-n4.Ready"], "True",
        "{replaced}"
    );
    assert!(
        replaced["health_status_reason"].get("m-n3.Ready").is_none(),
        "{replaced}"
    );
    let (_, statuses) = plain_docker(&address, &["node", "ls", "--format", "{{.Status}}"]);
    assert_eq!(
        statuses.lines().collect::<Vec<_>>(),
        ["Ready"; 3],
        "the old node left the swarm: {statuses}"
    );
    until_spread(&address, "web", 3).await;
    // Nothing of the old node is left on the host.
    let host = HostView::read();
    let gone: Vec<String> = host
        .leftovers(&uuid)
        .into_iter()
        .filter(|line| {
            line.contains(&format!("{}n3", &short[..6])) || line.contains(&format!("{short}-n3"))
        })
        .collect();
    assert_eq!(gone, Vec::<String>::new());
    assert!(!state_dir.join("n3").exists());

    // 2. A worker's dockerd state is corrupted, then it dies: the restart fails, and it is
    // replaced.
    let data = state_dir.join("n2/data");
    let databases: Vec<std::path::PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|entry| entry.path().join("network/files/local-kv.db"))
        .filter(|path| path.exists())
        .collect();
    assert_eq!(
        databases.len(),
        1,
        "one network database under {}",
        data.display()
    );
    let pid = std::fs::read_to_string(state_dir.join("n2/node.pid")).unwrap();
    let (ok, output) = run("kill", &["-KILL", pid.trim()], Path::new("/"));
    assert!(ok, "{output}");
    std::fs::write(&databases[0], vec![0x5a; 64 * 1024]).unwrap();
    let replaced = until_replaced(app, &uuid, "n2", "restarting it failed").await;
    assert_eq!(replaced["node_count"], 2, "{replaced}");
    let failed = events_with_reason(app, &uuid, "NodeHealFailed").await;
    assert!(
        failed.iter().any(|event| event["node"] == "n2"),
        "{failed:?}"
    );
    until_spread(&address, "web", 3).await;
    let replacing = events_with_reason(app, &uuid, "NodeReplacing").await;
    let nodes: Vec<&str> = replacing
        .iter()
        .map(|event| event["node"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(nodes, ["n3", "n2"], "{replacing:?}");

    assert_eq!(
        app.delete(&format!("/v1/clusters/{uuid}"), OWNER)
            .await
            .status,
        204
    );
    app.wait_for_cluster(&uuid, OWNER, 120, |reply| reply.status == 404)
        .await;
    assert_eq!(leftovers(&uuid), Vec::<String>::new());
}

/// Waits until auto-healing replaced `node` (its reason names the node and `why`) and the
/// cluster is HEALTHY again; returns the cluster.
async fn until_replaced(app: &TestApp, cluster: &str, node: &str, why: &str) -> Value {
    let expected = format!("Auto-healing replaced {node} of nodegroup default-worker: {why}");
    app.wait_for_cluster(cluster, OWNER, 240, |reply| {
        reply.body["status"] == "UPDATE_COMPLETE"
            && reply.body["status_reason"]
                .as_str()
                .is_some_and(|reason| reason.starts_with(&expected))
            && reply.body["health_status"] == "HEALTHY"
    })
    .await
    .body
}

#[tokio::test]
async fn requests_past_the_hosts_capacity_are_refused_up_front() {
    let engine = engines()[0];
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.drivers.local.max_nodes = 2;
    })
    .await;
    app.create_template(OWNER, json!({"name": "small"})).await;
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            OWNER,
            Some(json!({"cluster_template_id": "small", "node_count": 2})),
        )
        .await;
    assert_eq!(
        (reply.status, reply.detail()),
        (
            400,
            "The local driver has room for 2 more nodes on this host; this request needs 3."
        )
    );
    app.stop().await;
}

#[tokio::test]
async fn only_allowed_projects_get_local_nodes() {
    let engine = engines()[0];
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.drivers.local.allowed_projects = vec!["p-trusted".to_owned()];
    })
    .await;
    app.create_template(OWNER, json!({"name": "gated"})).await;
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            OWNER,
            Some(json!({"cluster_template_id": "gated", "node_count": 1})),
        )
        .await;
    assert_eq!(
        (reply.status, reply.detail()),
        (
            403,
            "The local driver does not build clusters for project p-local (drivers.local.allowed_projects)."
        )
    );
    assert_eq!(reply.body["errors"][0]["code"], "client");
    let listed = app
        .send_at("latest", "GET", "/v1/clusters", OWNER, None)
        .await;
    assert_eq!(listed.body["clusters"], json!([]), "nothing was stored");
    app.stop().await;
}
