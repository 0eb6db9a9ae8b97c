//! Kill the real process with SIGKILL in the middle of every lifecycle action, start it
//! again, and check that each action resumes to its end: nothing stays in progress, nothing
//! is lost.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use magnum_test_support::{engines, Engine, TestDatabase};
use serde_json::{json, Value};

struct Service {
    child: Child,
    base_url: String,
}

fn start(database_url: &str, state_dir: &std::path::Path) -> Service {
    start_with(database_url, state_dir, &[])
}

fn start_with(
    database_url: &str,
    state_dir: &std::path::Path,
    environment: &[(&str, &str)],
) -> Service {
    let mut child = Command::new(env!("CARGO_BIN_EXE_magnumd-testbed"))
        .arg("all")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("MAGNUM_DATABASE__URL", database_url)
        .env("MAGNUM_SERVER__STATE_DIR", state_dir)
        .env("MAGNUM_CONDUCTOR__LEASE", "2")
        .env("MAGNUM_CONDUCTOR__POLL_INTERVAL_MS", "100")
        .env("MAGNUM_CONDUCTOR__HEARTBEAT_INTERVAL", "1")
        .env("MAGNUM_LOG__LEVEL", "warn")
        .envs(environment.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("magnumd-testbed starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("magnumd listening on ")
        .and_then(|url| url.strip_suffix("/v1"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Service {
        child,
        base_url: address,
    }
}

impl Service {
    fn kill(mut self) {
        // SIGKILL: no handler runs, nothing is handed back.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut request = client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base_url),
            )
            .header("OpenStack-API-Version", "container-infra latest")
            .header("X-Project-Id", "p-crash")
            .header("X-User-Id", "u-crash")
            .header("X-Roles", "member,reader");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn wait_for(&self, uuid: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self
                .send("GET", &format!("/v1/clusters/{uuid}"), None)
                .await;
            if done(status, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "cluster {uuid} stuck: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn template(service: &Service, name: &str) -> String {
    let (status, body) = service
        .send(
            "POST",
            "/v1/clustertemplates",
            Some(
                json!({"name": name, "coe": "swarm-mode", "image_id": "scripted-image",
                        "flavor_id": "s.small", "master_flavor_id": "s.small",
                        "external_network_id": "public"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["uuid"].as_str().unwrap().to_owned()
}

fn status_is(wanted: &'static str) -> impl Fn(u16, &Value) -> bool {
    move |status, body| status == 200 && body["status"] == wanted
}

async fn crash_everything(engine: Engine) {
    let database = TestDatabase::create(engine).await;
    let state = tempfile::tempdir().unwrap();
    let url = database.url.clone();
    let mut service = start(&url, state.path());
    template(&service, "t1").await;
    let second = template(&service, "t2").await;
    let (status, body) = service
        .send(
            "POST",
            "/v1/clusters",
            Some(
                json!({"cluster_template_id": "t1", "name": "c", "node_count": 3,
                        "labels": {"test_step_ms": "250"}}),
            ),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let uuid = body["uuid"].as_str().unwrap().to_owned();
    let path = format!("/v1/clusters/{uuid}");

    // Create: killed while nodes start, after the CA was made.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, ca_before) = service
        .send("GET", &format!("/v1/certificates/{uuid}"), None)
        .await;
    assert_eq!(status, 200, "{ca_before}");
    service.kill();
    service = start(&url, state.path());
    let cluster = service.wait_for(&uuid, status_is("CREATE_COMPLETE")).await;
    let (_, ca_after) = service
        .send("GET", &format!("/v1/certificates/{uuid}"), None)
        .await;
    assert_eq!(
        ca_before["pem"], ca_after["pem"],
        "a resumed create keeps its CA"
    );
    assert_eq!(cluster["node_count"], 3, "{}", engine.name());
    assert_eq!(cluster["node_addresses"].as_array().unwrap().len(), 3);

    // Scale: killed right after the request was accepted.
    let (status, _) = service
        .send(
            "PATCH",
            &path,
            Some(json!([{"op": "replace", "path": "/node_count", "value": 5}])),
        )
        .await;
    assert_eq!(status, 202);
    service.kill();
    service = start(&url, state.path());
    let cluster = service.wait_for(&uuid, status_is("UPDATE_COMPLETE")).await;
    assert_eq!(cluster["node_count"], 5, "{}", engine.name());

    // Resize: killed mid-way.
    let (status, _) = service
        .send(
            "POST",
            &format!("{path}/actions/resize"),
            Some(json!({"node_count": 2})),
        )
        .await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    service.kill();
    service = start(&url, state.path());
    let cluster = service.wait_for(&uuid, status_is("UPDATE_COMPLETE")).await;
    assert_eq!(cluster["node_count"], 2, "{}", engine.name());

    // Upgrade: killed mid-way.
    let (status, _) = service
        .send(
            "POST",
            &format!("{path}/actions/upgrade"),
            Some(json!({"cluster_template": "t2"})),
        )
        .await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(200)).await;
    service.kill();
    service = start(&url, state.path());
    let cluster = service.wait_for(&uuid, status_is("UPDATE_COMPLETE")).await;
    assert_eq!(cluster["cluster_template_id"], second.as_str());

    // Delete: killed at once.
    let (status, _) = service.send("DELETE", &path, None).await;
    assert_eq!(status, 204);
    service.kill();
    service = start(&url, state.path());
    service.wait_for(&uuid, |status, _| status == 404).await;
    let (_, list) = service.send("GET", "/v1/clusters", None).await;
    assert_eq!(list["clusters"], json!([]));
    service.kill();
    database.drop_database().await;
}

#[tokio::test]
async fn sigkill_at_any_step_resumes_every_action_to_its_end() {
    for engine in engines() {
        crash_everything(engine).await;
    }
}

/// A conductor restarted on its host takes back its predecessor's work at once, not when the
/// dead process's lease runs out (here a minute).
#[tokio::test]
async fn a_restarted_magnumd_resumes_a_create_at_once() {
    let engine = engines()[0];
    let database = TestDatabase::create(engine).await;
    let state = tempfile::tempdir().unwrap();
    let url = database.url.clone();
    let long_lease = [("MAGNUM_CONDUCTOR__LEASE", "60")];
    let service = start_with(&url, state.path(), &long_lease);
    template(&service, "t1").await;
    let (status, body) = service
        .send(
            "POST",
            "/v1/clusters",
            Some(
                json!({"cluster_template_id": "t1", "name": "c", "node_count": 2,
                        "labels": {"test_step_ms": "300"}}),
            ),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let uuid = body["uuid"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(400)).await;
    service.kill();
    let restarted = Instant::now();
    let service = start_with(&url, state.path(), &long_lease);
    let cluster = service.wait_for(&uuid, status_is("CREATE_COMPLETE")).await;
    let took = restarted.elapsed();
    assert_eq!(cluster["node_count"], 2);
    // 2 s to resume, plus the create itself (three steps of 300 ms) and process start.
    assert!(
        took < Duration::from_secs(5),
        "the create resumed only after {took:?} (the lease is 60 s)"
    );
    service.kill();
}
