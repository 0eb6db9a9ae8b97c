//! `coe` and `openstack coe` (python-magnumclient) against a recorder that answers like Magnum:
//! for the same verbs, the requests that change something must be the same (method, path,
//! microversion header, JSON body).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLUSTER: &str = "5c792adf-7b16-4e07-ad90-16d0bc060e5b";

#[derive(Debug, Clone, PartialEq)]
struct Recorded {
    method: String,
    path: String,
    version: Option<String>,
    body: Value,
}

fn canned(method: &str, path: &str) -> (u16, Value) {
    let cluster = json!({"uuid": CLUSTER, "name": "c1", "status": "CREATE_COMPLETE",
        "cluster_template_id": "80529f79-3711-49c5-9571-9f2eb8666843", "node_count": 1, "master_count": 1,
        "links": [], "stack_id": null, "api_address": null});
    match (method, path) {
        ("POST", "/v1/clusters") => (202, json!({"uuid": CLUSTER})),
        ("GET", p) if p.starts_with("/v1/clusters/") && !p.contains("/nodegroups") => {
            (200, cluster)
        }
        ("PATCH", p) if p.starts_with("/v1/clusters/") => (202, json!({"uuid": CLUSTER})),
        ("POST", p) if p.contains("/actions/") => (202, json!({"uuid": CLUSTER})),
        ("DELETE", _) => (204, Value::Null),
        ("POST", p) if p.ends_with("/nodegroups") || p.ends_with("/nodegroups/") => {
            (202, json!({"uuid": "ng", "name": "ng1"}))
        }
        ("POST", "/v1/quotas") => (
            201,
            json!({"id": 1, "project_id": "p9", "resource": "Cluster", "hard_limit": 5, "created_at": null, "updated_at": null}),
        ),
        ("PATCH", p) if p.starts_with("/v1/certificates/") => (202, json!({"uuid": CLUSTER})),
        _ => (200, json!({})),
    }
}

async fn recorder() -> (String, Arc<Mutex<Vec<Recorded>>>) {
    serve(canned).await
}

/// A server answering each request with `answer(method, path without its query)`, recording
/// every request it got.
async fn serve(
    answer: impl Fn(&str, &str) -> (u16, Value) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Recorded>>>) {
    let answer = Arc::new(answer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let writer = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                break;
            };
            let log = writer.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                loop {
                    let mut buffer = Vec::new();
                    let mut byte = [0u8; 1];
                    while !buffer.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        buffer.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&buffer).into_owned();
                    let mut lines = head.lines();
                    let request_line = lines.next().unwrap_or_default().to_owned();
                    let mut headers = BTreeMap::new();
                    for line in lines {
                        if let Some((name, value)) = line.split_once(':') {
                            headers
                                .insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                        }
                    }
                    let length: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; length];
                    if length > 0 {
                        stream.read_exact(&mut body).await.unwrap();
                    }
                    let mut parts = request_line.split(' ');
                    let method = parts.next().unwrap_or_default().to_owned();
                    let path = parts.next().unwrap_or_default().to_owned();
                    let (status, answer) =
                        answer(&method, path.split('?').next().unwrap_or_default());
                    log.lock().unwrap().push(Recorded {
                        method,
                        path,
                        version: headers.get("openstack-api-version").cloned(),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    let text = if answer.is_null() {
                        String::new()
                    } else {
                        answer.to_string()
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nOpenStack-API-Version: container-infra 1.14\r\n\r\n{text}",
                        text.len()
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, log)
}

fn openstack_binary() -> PathBuf {
    std::env::var("MAGNUM_OPENSTACK_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/openstack")
        })
}

/// The requests of one command that change something.
async fn changes(log: &Arc<Mutex<Vec<Recorded>>>, program: Vec<String>) -> Vec<Recorded> {
    log.lock().unwrap().clear();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program[0])
            .args(&program[1..])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    log.lock()
        .unwrap()
        .iter()
        .filter(|request| request.method != "GET")
        .map(|request| Recorded {
            // magnumclient addresses by uuid after resolving, coe by what it was given, and
            // nodegroup paths end with "/" there.
            path: request
                .path
                .replace(CLUSTER, "c1")
                .trim_end_matches('/')
                .to_owned(),
            ..request.clone()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coe_sends_what_openstack_coe_sends() {
    let (address, log) = recorder().await;
    let openstack = openstack_binary();
    assert!(
        openstack.exists(),
        "run scripts/test, which installs the openstack client"
    );
    let endpoint = format!("{address}/v1");
    let verbs: &[&[&str]] = &[
        &[
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
        &["cluster", "delete", "c1"],
        &["cluster", "resize", "c1", "3"],
        &["cluster", "upgrade", "c1", "t2"],
        &["nodegroup", "create", "c1", "ng1", "--node-count", "2"],
        &[
            "quotas",
            "create",
            "--project-id",
            "p9",
            "--resource",
            "Cluster",
            "--hard-limit",
            "5",
        ],
        &["ca", "rotate", "c1"],
    ];
    for verb in verbs {
        let mut theirs = vec![
            openstack.display().to_string(),
            "--os-auth-type".into(),
            "none".into(),
            "--os-endpoint".into(),
            endpoint.clone(),
            "coe".into(),
        ];
        theirs.extend(verb.iter().map(|part| (*part).to_owned()));
        let mut ours = vec![
            env!("CARGO_BIN_EXE_coe").to_owned(),
            "--endpoint".into(),
            address.clone(),
        ];
        ours.extend(verb.iter().map(|part| (*part).to_owned()));
        let expected = changes(&log, theirs).await;
        let sent = changes(&log, ours).await;
        assert!(!expected.is_empty(), "{verb:?}");
        assert_eq!(sent, expected, "{verb:?}");
    }
}

/// Runs `coe` against `address`; its exit status and standard error.
async fn coe(address: &str, verb: &[&str]) -> (bool, String) {
    let mut args = vec!["--endpoint".to_owned(), address.to_owned()];
    args.extend(verb.iter().map(|part| (*part).to_owned()));
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_coe"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What an upstream-like server has seen of the cluster: how often it was read since the last
/// change, and whether it was deleted.
#[derive(Default)]
struct Upstream {
    reads: usize,
    deleted: bool,
    fails: bool,
}

/// Upstream Magnum has no event stream: `--wait` must follow the cluster by reading it until
/// it stands somewhere final, for creates, failures and deletes alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reads_the_cluster_until_it_ends_on_a_server_without_event_streams() {
    let state = Arc::new(Mutex::new(Upstream::default()));
    let seen = state.clone();
    let (address, log) = serve(move |method, path| {
        let mut state = seen.lock().unwrap();
        let cluster = |status: &str, reason: &str| {
            json!({"uuid": CLUSTER, "name": "c1", "status": status, "status_reason": reason,
                "node_count": 1, "master_count": 1, "links": []})
        };
        match (method, path) {
            // What upstream Magnum answers for a path it does not know.
            ("GET", p) if p.ends_with("/events") => (
                404,
                json!({"errors": [{"status": 404, "code": "", "title": "Not Found",
                    "detail": "The resource could not be found.", "request_id": ""}]}),
            ),
            ("POST", "/v1/clusters") => {
                state.reads = 0;
                (202, json!({"uuid": CLUSTER}))
            }
            ("DELETE", _) => {
                state.reads = 0;
                state.deleted = true;
                (204, Value::Null)
            }
            ("GET", p) if p == format!("/v1/clusters/{CLUSTER}") || p == "/v1/clusters/c1" => {
                state.reads += 1;
                match (state.deleted, state.reads < 3) {
                    (false, true) => (200, cluster("CREATE_IN_PROGRESS", "")),
                    (false, false) if state.fails => {
                        (200, cluster("CREATE_FAILED", "no host has room"))
                    }
                    (false, false) => (200, cluster("CREATE_COMPLETE", "Stack CREATE completed")),
                    (true, true) => (200, cluster("DELETE_IN_PROGRESS", "")),
                    (true, false) => (
                        404,
                        json!({"errors": [{"status": 404, "code": "client", "title": "Not Found",
                            "detail": format!("Cluster {CLUSTER} could not be found."), "request_id": ""}]}),
                    ),
                }
            }
            _ => (200, json!({})),
        }
    })
    .await;
    let reads_of_the_cluster = |log: &Arc<Mutex<Vec<Recorded>>>| {
        let log = log.lock().unwrap();
        let reads = log
            .iter()
            .filter(|r| {
                r.method == "GET"
                    && (r.path == format!("/v1/clusters/{CLUSTER}") || r.path == "/v1/clusters/c1")
            })
            .count();
        let stream_tries = log
            .iter()
            .filter(|r| r.path.ends_with("/events?watch=true"))
            .count();
        (reads, stream_tries)
    };

    let create = [
        "cluster",
        "create",
        "c1",
        "--cluster-template",
        "t1",
        "--wait",
    ];
    let (ok, stderr) = coe(&address, &create).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("CREATE_IN_PROGRESS"), "{stderr}");
    assert!(stderr.contains("c1: CREATE_COMPLETE"), "{stderr}");
    // One try of the stream, then a read a second until the cluster is complete.
    assert_eq!(reads_of_the_cluster(&log), (3, 1));

    log.lock().unwrap().clear();
    *state.lock().unwrap() = Upstream {
        fails: true,
        ..Upstream::default()
    };
    let (ok, stderr) = coe(&address, &create).await;
    assert!(!ok, "a failed create must fail the wait: {stderr}");
    assert!(
        stderr.contains("CREATE_FAILED: no host has room"),
        "{stderr}"
    );
    assert_eq!(reads_of_the_cluster(&log).0, 3);

    log.lock().unwrap().clear();
    let (ok, stderr) = coe(&address, &["cluster", "delete", "c1", "--wait"]).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("DELETE_IN_PROGRESS"), "{stderr}");
    assert!(stderr.contains("deleted"), "{stderr}");
    assert!(
        reads_of_the_cluster(&log).0 >= 3,
        "{:?}",
        log.lock().unwrap()
    );
}
