//! `coe` against a real magnumd: every verb, the output formats, --wait, and
//! `eval $(coe cluster config …)` followed by `docker node ls` on a real local cluster; and
//! against a stream written out, what `--watch` makes of a `gap`.

use std::process::Command;
use std::sync::Arc;

use magnum_driver::Driver;
use magnum_test_support::scripted::ScriptedDriver;
use serde_json::Value;

struct Server {
    url: String,
    running: magnumd::Running,
    _state: tempfile::TempDir,
}

async fn start(pool: &str) -> Server {
    start_with(pool, |_| {}).await
}

async fn start_with(pool: &str, adjust: impl FnOnce(&mut magnumd::Config)) -> Server {
    let state = tempfile::tempdir().unwrap();
    let mut config = magnumd::Config::default();
    config.server.listen = "127.0.0.1:0".to_owned();
    config.server.state_dir = Some(state.path().to_owned());
    config.conductor.poll_interval_ms = 100;
    config.drivers.local.network_pool = pool.to_owned();
    adjust(&mut config);
    let drivers: Vec<Arc<dyn Driver>> = vec![Arc::new(ScriptedDriver::new())];
    let running = magnumd::start_with_drivers(&config, magnumd::Role::All, &drivers)
        .await
        .unwrap();
    Server {
        url: format!("http://{}", running.address.unwrap()),
        running,
        _state: state,
    }
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn coe(server: &Server, arguments: &[&str]) -> Outcome {
    let url = server.url.clone();
    let arguments: Vec<String> = arguments
        .iter()
        .map(|argument| (*argument).to_owned())
        .collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_coe"))
            .args(&arguments)
            .env("MAGNUM_URL", url)
            .output()
            .unwrap();
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

async fn ok(server: &Server, arguments: &[&str]) -> String {
    let outcome = coe(server, arguments).await;
    assert_eq!(
        outcome.code, 0,
        "{arguments:?}: {}{}",
        outcome.stdout, outcome.stderr
    );
    outcome.stdout
}

async fn json(server: &Server, arguments: &[&str]) -> Value {
    let mut all = arguments.to_vec();
    all.extend(["-f", "json"]);
    serde_json::from_str(&ok(server, &all).await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_verb_against_a_real_server() {
    let server = start("10.97.0.0/16").await;
    for name in ["t1", "t2"] {
        ok(
            &server,
            &[
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
    let templates = json(&server, &["cluster", "template", "list"]).await;
    assert_eq!(templates.as_array().unwrap().len(), 2);
    assert_eq!(
        ok(
            &server,
            &["cluster", "template", "show", "t1", "-c", "coe", "-f", "value"]
        )
        .await,
        "swarm-mode\n"
    );

    let created = coe(
        &server,
        &[
            "cluster",
            "create",
            "c1",
            "--cluster-template",
            "t1",
            "--node-count",
            "2",
            "--wait",
        ],
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(
        created.stdout.starts_with("Request to create cluster "),
        "{}",
        created.stdout
    );
    assert!(
        created.stderr.contains("CREATE_COMPLETE"),
        "progress is shown: {}",
        created.stderr
    );
    let clusters = json(&server, &["cluster", "list"]).await;
    assert_eq!(clusters[0]["status"], "CREATE_COMPLETE");
    assert_eq!(clusters[0]["node_count"], 2);
    let table = ok(&server, &["cluster", "list"]).await;
    assert!(
        table.contains("| uuid ") && table.contains("CREATE_COMPLETE"),
        "{table}"
    );
    let yaml = ok(
        &server,
        &[
            "cluster",
            "show",
            "c1",
            "-f",
            "yaml",
            "-c",
            "status",
            "-c",
            "node_count",
        ],
    )
    .await;
    assert_eq!(yaml, "status: \"CREATE_COMPLETE\"\nnode_count: 2\n");

    ok(
        &server,
        &["cluster", "update", "c1", "--node-count", "3", "--wait"],
    )
    .await;
    assert_eq!(
        ok(
            &server,
            &["cluster", "show", "c1", "-c", "node_count", "-f", "value"]
        )
        .await,
        "3\n"
    );
    ok(&server, &["cluster", "resize", "c1", "1", "--wait"]).await;
    ok(&server, &["cluster", "upgrade", "c1", "t2", "--wait"]).await;

    ok(
        &server,
        &[
            "nodegroup",
            "create",
            "c1",
            "ng1",
            "--node-count",
            "1",
            "--max-nodes",
            "3",
            "--wait",
        ],
    )
    .await;
    let groups = json(&server, &["nodegroup", "list", "c1"]).await;
    assert_eq!(groups.as_array().unwrap().len(), 3);
    ok(
        &server,
        &["nodegroup", "update", "c1", "ng1", "--max-nodes", "5"],
    )
    .await;
    assert_eq!(
        ok(
            &server,
            &[
                "nodegroup",
                "show",
                "c1",
                "ng1",
                "-c",
                "max_node_count",
                "-f",
                "value"
            ]
        )
        .await,
        "5\n"
    );
    ok(&server, &["nodegroup", "delete", "c1", "ng1", "--wait"]).await;

    let ca = ok(&server, &["ca", "show", "c1"]).await;
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    ok(&server, &["ca", "rotate", "c1", "--wait"]).await;

    ok(
        &server,
        &[
            "quotas",
            "create",
            "--project-id",
            "p9",
            "--hard-limit",
            "5",
        ],
    )
    .await;
    let quotas = json(&server, &["quotas", "list", "--all-tenants"]).await;
    assert_eq!(quotas[0]["hard_limit"], 5);
    ok(
        &server,
        &[
            "quotas",
            "update",
            "--project-id",
            "p9",
            "--hard-limit",
            "7",
        ],
    )
    .await;
    assert_eq!(
        ok(
            &server,
            &[
                "quotas",
                "show",
                "--project-id",
                "p9",
                "-c",
                "hard_limit",
                "-f",
                "value"
            ]
        )
        .await,
        "7\n"
    );
    ok(&server, &["quotas", "delete", "--project-id", "p9"]).await;
    let stats = json(&server, &["stats", "list", "default"]).await;
    assert_eq!(stats, serde_json::json!({"clusters": 1, "nodes": 2}));
    let services = json(&server, &["service", "list"]).await;
    assert_eq!(services[0]["binary"], "magnum-conductor");

    // Errors: non-zero exit with the server's words.
    let refused = coe(&server, &["credential", "rotate", "c1"]).await;
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("Credential rotation is not supported by driver."),
        "{}",
        refused.stderr
    );
    let refused = coe(&server, &["cluster", "show", "nope"]).await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("Cluster nope could not be found."),
        "{}",
        refused.stderr
    );

    // config writes the TLS files (key private) and prints the exports.
    let directory = tempfile::tempdir().unwrap();
    let exports = ok(
        &server,
        &[
            "cluster",
            "config",
            "c1",
            "--dir",
            directory.path().to_str().unwrap(),
        ],
    )
    .await;
    assert!(exports.contains("export DOCKER_HOST=tcp://"), "{exports}");
    assert!(exports.contains("export DOCKER_TLS_VERIFY=1"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(directory.path().join("key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let again = coe(
        &server,
        &[
            "cluster",
            "config",
            "c1",
            "--dir",
            directory.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_ne!(again.code, 0, "existing files are kept without --force");
    ok(
        &server,
        &[
            "cluster",
            "config",
            "c1",
            "--dir",
            directory.path().to_str().unwrap(),
            "--force",
        ],
    )
    .await;

    // Events: listed, then followed live until the cluster goes.
    let events = json(&server, &["cluster", "events", "c1"]).await;
    let reasons: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.first(), Some(&"CreateStarted"), "{events}");
    assert!(reasons.contains(&"CreateCompleted"), "{events}");
    assert_eq!(
        events[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "created_at",
            "type",
            "reason",
            "nodegroup",
            "node",
            "message"
        ]
    );
    let table = ok(&server, &["cluster", "events", "c1"]).await;
    let header = table.lines().nth(1).unwrap_or_default();
    for column in [
        "created_at",
        "type",
        "reason",
        "nodegroup",
        "node",
        "message",
    ] {
        assert!(header.contains(column), "{table}");
    }
    assert!(table.contains("| CreateStarted"), "{table}");
    assert_eq!(
        table.lines().filter(|line| line.starts_with("| ")).count(),
        reasons.len() + 1,
        "a row per event under the header: {table}"
    );
    let yaml = ok(&server, &["cluster", "events", "c1", "-f", "yaml"]).await;
    assert!(yaml.starts_with("- created_at: "), "{yaml}");
    assert_eq!(
        yaml.matches("\n  reason: ").count(),
        reasons.len(),
        "{yaml}"
    );
    assert!(yaml.contains("\n  reason: \"CreateStarted\"\n"), "{yaml}");
    let url = server.url.clone();
    let watcher = std::process::Command::new(env!("CARGO_BIN_EXE_coe"))
        .args([
            "cluster", "events", "c1", "--watch", "-f", "value", "-c", "reason",
        ])
        .env("MAGNUM_URL", url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let deleted = ok(&server, &["cluster", "delete", "c1", "--wait"]).await;
    assert!(deleted.contains("Request to delete cluster c1 has been accepted."));
    let watched = tokio::task::spawn_blocking(move || watcher.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(watched.status.success(), "--watch ends with the cluster");
    let watched = String::from_utf8_lossy(&watched.stdout).into_owned();
    let lines: Vec<&str> = watched.lines().collect();
    assert_eq!(lines.first(), Some(&"CreateStarted"), "{watched}");
    assert_eq!(lines.last(), Some(&"Deleted"), "{watched}");
    assert!(lines.contains(&"DeleteStarted"), "{watched}");
    let missing = coe(&server, &["cluster", "events", "no-such-cluster"]).await;
    assert_ne!(missing.code, 0);
    assert!(
        missing
            .stderr
            .contains("Cluster no-such-cluster could not be found."),
        "{}",
        missing.stderr
    );
    assert_eq!(
        json(&server, &["cluster", "list"]).await,
        serde_json::json!([])
    );
    let completion = ok(&server, &["completion", "bash"]).await;
    assert!(completion.contains("_coe"));
    server.running.stop().await;
}

/// A real local cluster through `coe`: created with `--wait` (its steps shown as they happen),
/// reached with `eval $(coe cluster config …)` and `docker node ls`, scaled out, healed of a
/// killed worker, deleted; `coe cluster events --watch`, started as soon as the cluster
/// exists, shows that whole life in order and ends with the deletion, as the list read by
/// uuid afterwards does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eval_coe_cluster_config_then_docker_node_ls_on_a_real_cluster() {
    let server = Arc::new(start("10.98.0.0/16").await);
    ok(
        &server,
        &[
            "cluster",
            "template",
            "create",
            "swarm",
            "--coe",
            "swarm-mode",
            "--image",
            "local-node",
            "--external-network",
            "local",
        ],
    )
    .await;
    let creating = tokio::spawn({
        let server = server.clone();
        async move {
            coe(
                &server,
                &[
                    "cluster",
                    "create",
                    "real",
                    "--cluster-template",
                    "swarm",
                    "--node-count",
                    "2",
                    "--labels",
                    "auto_healing_enabled=true",
                    "--wait",
                ],
            )
            .await
        }
    });
    let watcher = watch_events_once_it_exists(&server, "real").await;
    let created = creating.await.unwrap();
    let uuid = ok(
        &server,
        &["cluster", "show", "real", "-c", "uuid", "-f", "value"],
    )
    .await
    .trim()
    .to_owned();
    // The steps run as a task of their own: whatever they assert, the cluster is deleted.
    let steps = tokio::spawn(real_cluster_steps(server.clone(), uuid.clone())).await;
    let deleted = coe(&server, &["cluster", "delete", "real", "--wait"]).await;
    let watched = watcher.finish(180).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    // Not a terminal: one plain line per change, each event as it happened (from the
    // stream), ending with every wanted node up.
    for step in [
        "real: Normal NodeStarted: Node n1",
        "real: Normal SwarmInitialized:",
        "real: Normal SwarmJoined: Node n2 joined the swarm as a worker.",
        "real: Normal NodeReady: Node n3 is Ready.",
        "real: Normal CreateCompleted: CREATE_COMPLETE: Cluster created.",
    ] {
        assert!(created.stderr.contains(step), "{step}: {}", created.stderr);
    }
    assert!(
        !created.stderr.contains(" —  "),
        "no empty reason: {}",
        created.stderr
    );
    let last = created.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("real: CREATE_COMPLETE"),
        "{}",
        created.stderr
    );
    assert!(
        last.contains("(nodes up 3/3: 1 masters, 2 workers wanted)"),
        "{}",
        created.stderr
    );
    if let Err(failure) = steps {
        std::panic::resume_unwind(failure.into_panic());
    }
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);

    // The watcher ended by itself with the deletion; what it showed (the list it started
    // with, then each event as it came) is what the cluster's events, read by uuid now that
    // it is gone, hold: the same events, once each, in order.
    assert_eq!(watched.code, 0, "{}{}", watched.stdout, watched.stderr);
    let shown = json_rows(&watched.stdout);
    let listed = json(
        &server,
        &[
            "cluster", "events", &uuid, "-c", "uuid", "-c", "sequence", "-c", "type", "-c",
            "reason", "-c", "node", "-c", "message",
        ],
    )
    .await;
    let listed = listed.as_array().expect("a list").clone();
    let ids = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|event| event["uuid"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(ids(&shown), ids(&listed), "{}", watched.stdout);
    assert_eq!(shown, listed);
    let sequences: Vec<i64> = listed
        .iter()
        .map(|event| event["sequence"].as_i64().unwrap_or_default())
        .collect();
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "{sequences:?}"
    );
    let reasons: Vec<&str> = listed
        .iter()
        .map(|event| event["reason"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(reasons.last(), Some(&"Deleted"), "{reasons:?}");
    // Each step of the life in order; the driver and the health monitor may tell more
    // between them.
    let not_ready = "real-n2.Ready: False";
    let life: Vec<(&str, EventTest)> = vec![
        ("CreateStarted", told("CreateStarted", None)),
        ("NodeStarted n1", told("NodeStarted", Some("n1"))),
        ("SwarmInitialized n1", told("SwarmInitialized", Some("n1"))),
        ("NodeStarted n2", told("NodeStarted", Some("n2"))),
        ("SwarmJoined n2", told("SwarmJoined", Some("n2"))),
        ("NodeStarted n3", told("NodeStarted", Some("n3"))),
        ("SwarmJoined n3", told("SwarmJoined", Some("n3"))),
        ("NodeReady", told("NodeReady", None)),
        ("CreateCompleted", told("CreateCompleted", None)),
        ("ScaledOut", told("ScaledOut", None)),
        ("UpdateStarted", told("UpdateStarted", None)),
        ("NodeStarted n4", told("NodeStarted", Some("n4"))),
        ("SwarmJoined n4", told("SwarmJoined", Some("n4"))),
        ("NodeReady n4", told("NodeReady", Some("n4"))),
        ("UpdateCompleted", told("UpdateCompleted", None)),
        (
            "HealthChanged: n2 not Ready",
            Box::new(move |event: &Value| {
                event["reason"] == "HealthChanged"
                    && event["type"] == "Warning"
                    && event["message"]
                        .as_str()
                        .is_some_and(|message| message.contains(not_ready))
            }),
        ),
        ("NodeRestarted n2", told("NodeRestarted", Some("n2"))),
        (
            "HealthChanged: HEALTHY",
            Box::new(|event: &Value| {
                event["reason"] == "HealthChanged"
                    && event["type"] == "Normal"
                    && event["message"]
                        .as_str()
                        .is_some_and(|message| message.starts_with("Health is HEALTHY"))
            }),
        ),
        ("DeleteStarted", told("DeleteStarted", None)),
        ("Deleted", told("Deleted", None)),
    ];
    let mut rest = listed.iter();
    for (step, matches) in &life {
        assert!(
            rest.any(matches),
            "{step} missing or out of order in {reasons:?}"
        );
    }
    let server = Arc::try_unwrap(server)
        .ok()
        .expect("the steps are done with the server");
    server.running.stop().await;
}

/// Whether an event is the one a step of a cluster's life tells.
type EventTest = Box<dyn Fn(&Value) -> bool>;

/// An event's test: its reason, and its node when `node` is given.
fn told(reason: &'static str, node: Option<&'static str>) -> EventTest {
    Box::new(move |event: &Value| {
        event["reason"] == reason && node.is_none_or(|node| event["node"] == node)
    })
}

/// What `coe … -f json --watch` printed: its list (a JSON array), then one object per line;
/// every row, in order.
fn json_rows(output: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    for value in serde_json::Deserializer::from_str(output).into_iter::<Value>() {
        match value.expect("JSON rows") {
            Value::Array(items) => rows.extend(items),
            row => rows.push(row),
        }
    }
    rows
}

/// A `coe cluster events --watch` running beside the test.
struct Watcher {
    child: std::process::Child,
}

impl Watcher {
    /// Waits at most `seconds` for it to end by itself (killed after that); its output.
    async fn finish(self, seconds: u64) -> Outcome {
        let pid = self.child.id();
        let waited = tokio::task::spawn_blocking(move || self.child.wait_with_output());
        let output =
            match tokio::time::timeout(std::time::Duration::from_secs(seconds), waited).await {
                Ok(output) => output.unwrap().unwrap(),
                Err(_) => {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                    panic!("coe cluster events --watch did not end within {seconds} s");
                }
            };
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Starts `coe cluster events <cluster> --watch -f json` as soon as the cluster exists (its
/// create was just asked for): what happened before is in the list it starts with.
async fn watch_events_once_it_exists(server: &Server, cluster: &str) -> Watcher {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while coe(server, &["cluster", "show", cluster, "-c", "uuid"])
        .await
        .code
        != 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{cluster} never appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_coe"))
        .args([
            "cluster", "events", cluster, "--watch", "-f", "json", "-c", "uuid", "-c", "sequence",
            "-c", "type", "-c", "reason", "-c", "node", "-c", "message",
        ])
        .env("MAGNUM_URL", &server.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    Watcher { child }
}

/// Kills the dockerd of a node of `cluster` (inside the node: its docker-init and with it the
/// node's PID namespace end), as a crash would.
fn kill_dockerd(cluster: &str, node: &str) {
    let netns = format!("mc{}-{node}", &cluster.replace('-', "")[..8]);
    let pids = Command::new("ip")
        .args(["netns", "pids", &netns])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&pids.stdout).into_owned();
    let dockerd: Vec<&str> = pids
        .split_whitespace()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim() == "dockerd")
        })
        .collect();
    assert_eq!(dockerd.len(), 1, "one dockerd in {netns}: {pids}");
    let killed = Command::new("kill")
        .args(["-KILL", dockerd[0]])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// The created cluster reached with `docker`, scaled out by one worker, and healed of a worker
/// whose dockerd is killed.
async fn real_cluster_steps(server: Arc<Server>, uuid: String) {
    let server = &*server;
    let directory = tempfile::tempdir().unwrap();
    let script = format!(
        "eval \"$({coe} cluster config real --dir {dir})\" && docker node ls --format '{{{{.Status}}}}'",
        coe = env!("CARGO_BIN_EXE_coe"),
        dir = directory.path().display()
    );
    let output = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("MAGNUM_URL", &server.url)
        .output()
        .unwrap();
    let nodes = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{nodes}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        nodes.lines().filter(|line| *line == "Ready").count(),
        3,
        "{nodes}"
    );

    ok(server, &["cluster", "resize", "real", "3", "--wait"]).await;
    let resized = json(server, &["cluster", "show", "real"]).await;
    assert_eq!(resized["node_count"], 3, "{resized}");
    assert_eq!(resized["status"], "UPDATE_COMPLETE", "{resized}");

    // Healthy with every node Ready, then a worker's dockerd dies: told, restarted, healthy.
    until_cluster(server, "real", 120, "HEALTHY after the resize", |cluster| {
        cluster["health_status"] == "HEALTHY"
            && cluster["health_status_reason"]["real-n4.Ready"] == "True"
    })
    .await;
    kill_dockerd(&uuid, "n2");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let events = json(server, &["cluster", "events", "real"]).await;
        let restarted = events
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["reason"] == "NodeRestarted" && event["node"] == "n2");
        if restarted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "n2 not restarted: {events}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    until_cluster(server, "real", 120, "HEALTHY after the heal", |cluster| {
        cluster["health_status"] == "HEALTHY"
            && cluster["health_status_reason"]["real-n2.Ready"] == "True"
    })
    .await;
}

/// Runs `docker` against a cluster's API (TLS disabled), for at most three minutes.
fn docker(address: &str, arguments: &[&str]) -> (bool, String) {
    let output = Command::new("timeout")
        .arg("180")
        .arg("docker")
        .arg("-H")
        .arg(address)
        .args(arguments)
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The service's tasks that should run, as `CurrentState` words (`Running`, `Pending`, …).
fn task_states(address: &str, service: &str) -> Vec<String> {
    let (_, listed) = docker(
        address,
        &[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.CurrentState}}",
        ],
    );
    listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Polls `coe cluster show` until `done` holds of it (at most `seconds`); returns it.
async fn until_cluster(
    server: &Server,
    cluster: &str,
    seconds: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let shown = json(server, &["cluster", "show", cluster]).await;
        if done(&shown) {
            return shown;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} not within {seconds} s: {shown}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Autoscaling on a real cluster, seen with `coe`: a service whose replicas each reserve
/// more than half a node's memory grows the default worker nodegroup (min 1, max 4) until
/// every task runs, in one change and no further; a user's `coe cluster resize` is not undone
/// within the cool-down (after it, the autoscaler takes the nodegroup back to what the tasks
/// need); once the service is gone, the idle workers go, down to the minimum.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_cluster_autoscales_from_its_workload_and_a_users_resize_wins() {
    let cool_down = 25;
    let server = start_with("10.99.0.0/16", |config| {
        let autoscaler = &mut config.drivers.local.autoscaler;
        autoscaler.scan_interval = 1;
        autoscaler.scale_out_delay = 2;
        autoscaler.scale_in_idle = 8;
        autoscaler.cool_down = cool_down;
    })
    .await;
    ok(
        &server,
        &[
            "cluster",
            "template",
            "create",
            "auto",
            "--coe",
            "swarm-mode",
            "--image",
            "local-node",
            "--external-network",
            "local",
            "--tls-disabled",
        ],
    )
    .await;
    let created = coe(
        &server,
        &[
            "cluster",
            "create",
            "auto",
            "--cluster-template",
            "auto",
            "--node-count",
            "1",
            "--labels",
            "auto_scaling_enabled=true,min_node_count=1,max_node_count=4",
            "--wait",
        ],
    )
    .await;
    // The steps run as a task of their own: whatever they assert, the cluster is deleted.
    let server = std::sync::Arc::new(server);
    let outcome = tokio::spawn(autoscaling_steps(server.clone(), cool_down)).await;
    let deleted = coe(&server, &["cluster", "delete", "auto", "--wait"]).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure.into_panic());
    }
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    let server = std::sync::Arc::try_unwrap(server)
        .ok()
        .expect("the steps are done with the server");
    server.running.stop().await;
}

async fn autoscaling_steps(server: std::sync::Arc<Server>, cool_down: u64) {
    let server = &*server;
    let cluster = json(server, &["cluster", "show", "auto"]).await;
    assert_eq!(cluster["status"], "CREATE_COMPLETE", "{cluster}");
    let address = cluster["api_address"].as_str().unwrap().to_owned();
    let worker = json(server, &["nodegroup", "show", "auto", "default-worker"]).await;
    assert_eq!(worker["min_node_count"], 1, "{worker}");

    // Each replica reserves 60 % of a node's memory (as the swarm sees it: the host's).
    let (ok_listed, ids) = docker(&address, &["node", "ls", "-q"]);
    assert!(ok_listed, "{ids}");
    let first = ids.lines().next().unwrap().to_owned();
    let (_, memory) = docker(
        &address,
        &[
            "node",
            "inspect",
            "--format",
            "{{.Description.Resources.MemoryBytes}}",
            &first,
        ],
    );
    let memory: u64 = memory.trim().parse().expect("a node's memory");
    let reserve = (memory / 10 * 6).to_string();
    let started = std::time::Instant::now();
    let (created, output) = docker(
        &address,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "big",
            "--replicas",
            "4",
            "--reserve-memory",
            &reserve,
            "--endpoint-mode",
            "dnsrr",
            "--no-resolve-image",
            "--init",
            "magnum/local-node:1",
            "sleep",
            "100000",
        ],
    );
    assert!(created, "{output}");
    // Two run (the master and the worker), two wait: the autoscaler adds two workers in one
    // change.
    let grown = until_cluster(server, "auto", 180, "grown to 3 workers", |cluster| {
        cluster["node_count"] == 3 && cluster["status"] == "UPDATE_COMPLETE"
    })
    .await;
    let reason = grown["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(
            "Autoscaled nodegroup default-worker from 1 to 3 nodes: 2 tasks of service big waiting"
        ),
        "{grown}"
    );
    assert!(
        reason.contains("no suitable node (insufficient resources"),
        "{reason}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while task_states(&address, "big") != ["Running"; 4] {
        assert!(
            std::time::Instant::now() < deadline,
            "not every task runs: {:?}",
            task_states(&address, "big")
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    println!(
        "autoscaled: every task of the service runs {} ms after it was created",
        started.elapsed().as_millis()
    );
    let worker = json(server, &["nodegroup", "show", "auto", "default-worker"]).await;
    assert_eq!(worker["node_count"], 3, "{worker}");
    assert_eq!(worker["status_reason"], reason, "{worker}");
    // And no further: every task runs, nothing waits.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let settled = json(server, &["cluster", "show", "auto"]).await;
    assert_eq!(settled["node_count"], 3, "{settled}");
    assert_eq!(settled["status_reason"], reason, "{settled}");
    let events = json(server, &["cluster", "events", "auto"]).await;
    let autoscaled: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["reason"] == "AutoscaledOut")
        .collect();
    assert_eq!(autoscaled.len(), 1, "{events}");
    assert!(
        autoscaled[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("The autoscaler adds 2 nodes to nodegroup default-worker (1 → 3): "),
        "{events}"
    );

    // A user's resize wins: one task waits again, and the nodegroup stays at 2 for the
    // cool-down.
    ok(
        server,
        &[
            "cluster",
            "resize",
            "auto",
            "2",
            "--nodegroup",
            "default-worker",
            "--wait",
        ],
    )
    .await;
    let resized_at = std::time::Instant::now();
    let resized = json(server, &["cluster", "show", "auto"]).await;
    assert_eq!(resized["node_count"], 2, "{resized}");
    let mut waited = false;
    while resized_at.elapsed() < std::time::Duration::from_secs(cool_down - 5) {
        let shown = json(server, &["cluster", "show", "auto"]).await;
        assert_eq!(
            shown["node_count"], 2,
            "undone within the cool-down: {shown}"
        );
        assert_eq!(shown["status"], "UPDATE_COMPLETE", "{shown}");
        waited |= task_states(&address, "big")
            .iter()
            .any(|state| state == "Pending");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(waited, "a task waited while the resize was respected");
    // After the cool-down, the waiting task gets its node back.
    let regrown = until_cluster(
        server,
        "auto",
        90,
        "grown back after the cool-down",
        |cluster| cluster["node_count"] == 3 && cluster["status"] == "UPDATE_COMPLETE",
    )
    .await;
    // Times are stored in whole seconds: the resize ended at most a second before --wait saw it.
    assert!(
        resized_at.elapsed() >= std::time::Duration::from_secs(cool_down - 2),
        "grown back {} s after the resize",
        resized_at.elapsed().as_secs()
    );
    assert!(
        regrown["status_reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with(
                "Autoscaled nodegroup default-worker from 2 to 3 nodes: 1 task of service big"
            ),
        "{regrown}"
    );

    // The service goes: the idle workers go, down to the minimum, the master never.
    let (removed, output) = docker(&address, &["service", "rm", "big"]);
    assert!(removed, "{output}");
    let shrunk = until_cluster(server, "auto", 120, "shrunk to 1 worker", |cluster| {
        cluster["node_count"] == 1 && cluster["status"] == "UPDATE_COMPLETE"
    })
    .await;
    let reason = shrunk["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("Autoscaled nodegroup default-worker from 3 to 1 node (removed "),
        "{shrunk}"
    );
    assert!(reason.contains("ran no task for"), "{reason}");
    assert_eq!(shrunk["master_count"], 1, "{shrunk}");
    let (_, statuses) = docker(&address, &["node", "ls", "--format", "{{.Status}}"]);
    assert_eq!(
        statuses.lines().collect::<Vec<_>>(),
        ["Ready", "Ready"],
        "the removed workers left the swarm: {statuses}"
    );
    let events = json(server, &["cluster", "events", "auto"]).await;
    let reasons: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|reason| **reason == "AutoscaledOut")
            .count(),
        2,
        "{reasons:?}"
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|reason| **reason == "AutoscaledIn")
            .count(),
        1,
        "{reasons:?}"
    );
    // At the minimum it stays.
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    assert_eq!(
        json(server, &["cluster", "show", "auto"]).await["node_count"],
        1
    );
}

/// Serves `GET …/events` as an empty list and `GET …/events?watch=true` as what `stream`
/// gives for the request's `Last-Event-ID` (then closes), for as many connections as come.
async fn scripted_events_server(stream: fn(Option<&str>) -> &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if connection.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let request_line = head.lines().next().unwrap_or_default();
                let last_event_id = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("last-event-id")
                        .then_some(value.trim())
                });
                let answer = if request_line.contains("watch=true") {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
                         connection: close\r\n\r\n{}",
                        stream(last_event_id)
                    )
                } else {
                    let body = r#"{"events": []}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = connection.write_all(answer.as_bytes()).await;
                let _ = connection.shutdown().await;
            });
        }
    });
    url
}

#[tokio::test]
async fn watching_events_warns_of_a_gap_and_goes_on() {
    // The first stream tells the gap and closes; the client reconnects from the gap's id (a
    // stream resumed from anywhere else would be told it again) and gets the rest.
    let url = scripted_events_server(|last_event_id| match last_event_id {
        Some("2048") => concat!(
            ": stream open\n\n",
            "id: 3072\nevent: cluster_event\n",
            r#"data: {"sequence": 3072, "created_at": "2026-01-01T00:00:00+00:00", "type": "Normal", "reason": "NodeStarted", "nodegroup": null, "node": null, "message": "kept"}"#,
            "\n\n",
            "id: 3072\nevent: end\n",
            r#"data: {"reason": "cluster_deleted", "message": "The cluster was deleted.", "last_event_id": 3072}"#,
            "\n\n",
        ),
        _ => concat!(
            ": stream open\n\n",
            "id: 2048\nevent: gap\n",
            r#"data: {"reason": "events_pruned", "message": "Events up to 2048 were dropped by retention before this stream could send them; every event kept up to there was sent. Read the current state again to fill the gap; the stream goes on after 2048.", "last_event_id": 5, "pruned_through": 2048}"#,
            "\n\n",
        ),
    })
    .await;
    // A client that resumed from anywhere but the gap's id would be told it again and again:
    // bounded, so that such a client fails the test rather than hang it.
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_coe"))
            .args([
                "cluster", "events", "c1", "--watch", "-f", "value", "-c", "reason",
            ])
            .env("MAGNUM_URL", url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("coe resumes from the gap's id and ends with the cluster")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    // The rows stay events; the warning, on stderr, says what was lost.
    assert_eq!(stdout, "NodeStarted\n");
    assert_eq!(
        stderr
            .matches("WARNING: Events up to 2048 were dropped by retention")
            .count(),
        1,
        "{stderr}"
    );
}
